//! Conditions as Kubernetes API conventions describe them: a map keyed by `type`, whose
//! `lastTransitionTime` moves only when `status` changes.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{Condition, ConditionStatus};

/// The model serves traffic from an available stable revision.
pub const READY: &str = "Ready";
/// A revision is being rolled out.
pub const PROGRESSING: &str = "Progressing";
/// Something needs attention (reason and message say what).
pub const DEGRADED: &str = "Degraded";
/// kstatus: the controller is still working towards the spec.
pub const RECONCILING: &str = "Reconciling";
/// kstatus: the controller cannot make progress until something changes.
pub const STALLED: &str = "Stalled";
/// `spec.rollout.strategy` asked for a canary, which this version rolls out immediately.
pub const IMMEDIATE_FALLBACK: &str = "ImmediateFallback";
/// The serving model's inputs (or predictions, or confidence) drifted from its reference
/// profile for `consecutiveWindows` windows.
pub const DRIFT_DETECTED: &str = "DriftDetected";
/// Webhook notifications reach their receiver (only with `spec.notifications`).
pub const NOTIFICATIONS_DELIVERED: &str = "NotificationsDelivered";
/// A retraining run is in progress (`False`: why not, or how the last one ended).
pub const RETRAINING: &str = "Retraining";
/// Whether the MLflow registry resolved a `models:/` `spec.model.uri` (only with one).
pub const MODEL_RESOLVED: &str = "ModelResolved";
/// Whether the monitors' reports reach the operator while a rollout judges them.
pub const REPORTS_AVAILABLE: &str = "ReportsAvailable";

/// Sets condition `type_` in `conditions`, keeping `lastTransitionTime` when the status is
/// unchanged, so rewriting the same facts is not a transition.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = Time(now);
            }
            existing.status = status;
            existing.reason = reason.to_string();
            existing.message = message;
            existing.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            last_transition_time: Time(now),
            observed_generation: generation,
        }),
    }
}

/// Removes condition `type_`.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// The condition of `type_`, if present.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when condition `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut c = Vec::new();
        set(
            &mut c,
            READY,
            ConditionStatus::False,
            "Waiting",
            "a",
            Some(1),
            at(10),
        );
        set(
            &mut c,
            READY,
            ConditionStatus::False,
            "StillWaiting",
            "b",
            Some(2),
            at(20),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, Time(at(10)));
        assert_eq!(c[0].reason, "StillWaiting");
        assert_eq!(c[0].observed_generation, Some(2));
        set(
            &mut c,
            READY,
            ConditionStatus::True,
            "Available",
            "c",
            Some(2),
            at(30),
        );
        assert_eq!(c[0].last_transition_time, Time(at(30)));
        assert!(is_true(&c, READY));
        remove(&mut c, READY);
        assert!(get(&c, READY).is_none());
    }
}
