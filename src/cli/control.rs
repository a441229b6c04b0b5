//! The rollout controls a person sends (`drover.dev/promote` …): which phases each one makes
//! sense in, the merge patch that sends one, and whether the operator has acted on it. Pure.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::api::{AppliedControls, ModelDeploymentStatus, RolloutPhase, RolloutState};
use crate::rollout::machine::CONTROL_PREFIX;

/// One of the annotations the rollout machine acts on exactly once per token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Control {
    /// Promote now, skipping the remaining steps.
    Promote,
    /// Roll back now.
    Abort,
    /// Run a rolled-back revision's canary again.
    Retry,
    /// Hold the rollout where it is.
    Pause,
    /// Continue a paused rollout.
    Resume,
}

impl Control {
    /// Every control.
    pub const ALL: [Control; 5] = [
        Control::Promote,
        Control::Abort,
        Control::Retry,
        Control::Pause,
        Control::Resume,
    ];

    /// The verb, as typed on the command line and used in the annotation key.
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Promote => "promote",
            Control::Abort => "abort",
            Control::Retry => "retry",
            Control::Pause => "pause",
            Control::Resume => "resume",
        }
    }

    /// The annotation that carries the control's token, e.g. `drover.dev/promote`.
    pub fn annotation(self) -> String {
        format!("{CONTROL_PREFIX}{}", self.as_str())
    }

    /// Rollout phases in which the operator acts on the control (mirrors `rollout::machine`).
    pub fn sensible_in(self) -> &'static [RolloutPhase] {
        match self {
            Control::Promote => &[RolloutPhase::Progressing, RolloutPhase::Paused],
            Control::Abort => &[
                RolloutPhase::Progressing,
                RolloutPhase::Paused,
                RolloutPhase::Baking,
            ],
            Control::Retry => &[RolloutPhase::RolledBack],
            Control::Pause => &[RolloutPhase::Progressing],
            Control::Resume => &[RolloutPhase::Paused],
        }
    }

    /// The token the operator last applied for this control.
    pub fn applied_token(self, applied: &AppliedControls) -> Option<&str> {
        match self {
            Control::Promote => applied.promote.as_deref(),
            Control::Abort => applied.abort.as_deref(),
            Control::Retry => applied.retry.as_deref(),
            Control::Pause => applied.pause.as_deref(),
            Control::Resume => applied.resume.as_deref(),
        }
    }
}

impl std::fmt::Display for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token the operator has never seen: the time (so a person can tell when it was sent) and a
/// random suffix (so two sends in the same second still differ). At most 25 characters, well
/// under the 128 the operator accepts.
pub fn token(now: Timestamp, random: u32) -> String {
    format!("{}-{random:08x}", now.strftime("%Y%m%dT%H%M%SZ"))
}

/// The JSON merge patch that sends `control` with `token`: only that one annotation changes.
pub fn patch(control: Control, token: &str) -> Value {
    json!({"metadata": {"annotations": {control.annotation(): token}}})
}

/// Why sending `control` now makes no sense, or `None` when the operator would act on it.
///
/// `generation` is the object's `metadata.generation`: a status older than the spec is named,
/// since the operator decides on the spec it has not reported on yet.
pub fn refusal(
    control: Control,
    status: Option<&ModelDeploymentStatus>,
    generation: Option<i64>,
) -> Option<String> {
    let rollout = status.and_then(|s| s.rollout.as_ref());
    if let Some(r) = rollout
        && control.sensible_in().contains(&r.phase)
    {
        return None;
    }
    let summary = status
        .and_then(|s| s.phase)
        .map(|p| p.as_str())
        .unwrap_or("not reported");
    let state = match rollout {
        None => format!("no rollout has been recorded (phase {summary})"),
        Some(r) => format!(
            "the rollout of revision {} is {:?} (phase {summary})",
            r.revision, r.phase
        ),
    };
    let stale = match (status.and_then(|s| s.observed_generation), generation) {
        (Some(seen), Some(now)) if seen < now => format!(
            "; the status describes generation {seen} but the spec is at {now}, so the operator has not caught up yet"
        ),
        _ => String::new(),
    };
    let phases = phases(control.sensible_in());
    let while_ = match control {
        Control::Promote => format!("a rollout is in flight ({phases})"),
        Control::Abort => format!("a rollout is in flight or baking ({phases})"),
        Control::Retry | Control::Pause | Control::Resume => format!("the rollout is {phases}"),
    };
    Some(format!(
        "{control} makes sense only while {while_}, but {state}{stale}"
    ))
}

fn phases(list: &[RolloutPhase]) -> String {
    let names: Vec<String> = list.iter().map(|p| format!("{p:?}")).collect();
    match names.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Whether the operator has acted on `token` (it records the last token of each control).
pub fn applied(control: Control, status: Option<&ModelDeploymentStatus>, token: &str) -> bool {
    status
        .and_then(|s| s.rollout.as_ref())
        .and_then(|r| control.applied_token(&r.controls))
        == Some(token)
}

/// The line printed once a control was sent.
pub fn requested(control: Control, namespace: &str, name: &str, token: &str) -> String {
    format!(
        "{control} requested for modeldeployment {namespace}/{name} ({}={token})",
        control.annotation()
    )
}

/// What the rollout looks like after the operator applied a control.
pub fn outcome(control: Control, status: &ModelDeploymentStatus) -> String {
    let mut line = format!("{control} applied");
    if let Some(r) = &status.rollout {
        line.push_str(&format!(": {}", rollout_summary(r)));
    }
    if let Some(phase) = status.phase {
        line.push_str(&format!("; phase {}", phase.as_str()));
    }
    if let Some(message) = status.message.as_deref().filter(|m| !m.is_empty()) {
        line.push_str(&format!(" ({message})"));
    }
    line
}

fn rollout_summary(r: &RolloutState) -> String {
    let mut s = format!("rollout of revision {}", r.revision);
    if !r.version.is_empty() {
        s.push_str(&format!(" (version {})", r.version));
    }
    s.push_str(&format!(
        " is {:?} at step {}, canary {}%",
        r.phase, r.step, r.actual_weight
    ));
    if !r.reason.is_empty() {
        s.push_str(&format!(", {}", r.reason));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Phase;
    use crate::rollout::machine::Controls;

    fn status(phase: RolloutPhase) -> ModelDeploymentStatus {
        ModelDeploymentStatus {
            observed_generation: Some(3),
            phase: Some(Phase::Progressing),
            rollout: Some(RolloutState {
                revision: "5c4b3a2918".into(),
                version: "2.0.0".into(),
                phase,
                step: 1,
                requested_weight: 25,
                actual_weight: 25,
                ..RolloutState::default()
            }),
            ..ModelDeploymentStatus::default()
        }
    }

    #[test]
    fn the_patch_sets_exactly_one_annotation_to_the_token() {
        assert_eq!(
            patch(Control::Promote, "t-1"),
            json!({"metadata": {"annotations": {"drover.dev/promote": "t-1"}}})
        );
        assert_eq!(
            patch(Control::Resume, "t-2").to_string(),
            r#"{"metadata":{"annotations":{"drover.dev/resume":"t-2"}}}"#
        );
    }

    #[test]
    fn every_patch_is_read_back_by_the_operator_as_that_control() {
        for control in Control::ALL {
            let p = patch(control, "20250614T101500Z-0000002a");
            let annotations = serde_json::from_value(p["metadata"]["annotations"].clone())
                .expect("annotations are a string map");
            let read = Controls::from_annotations(&annotations);
            let got = match control {
                Control::Promote => read.promote,
                Control::Abort => read.abort,
                Control::Retry => read.retry,
                Control::Pause => read.pause,
                Control::Resume => read.resume,
            };
            assert_eq!(
                got.as_deref(),
                Some("20250614T101500Z-0000002a"),
                "{control}"
            );
        }
    }

    #[test]
    fn a_token_carries_the_time_and_a_random_suffix() {
        let now: Timestamp = "2025-06-14T10:15:00Z".parse().expect("timestamp");
        assert_eq!(token(now, 42), "20250614T101500Z-0000002a");
        assert_ne!(token(now, 1), token(now, 2));
        assert!(token(now, u32::MAX).len() <= 128);
    }

    #[test]
    fn each_control_is_refused_outside_its_phases_and_the_message_names_the_phase() {
        let cases = [
            (Control::Promote, RolloutPhase::Complete, "Complete"),
            (Control::Promote, RolloutPhase::Baking, "Baking"),
            (Control::Retry, RolloutPhase::Progressing, "Progressing"),
            (Control::Resume, RolloutPhase::Progressing, "Progressing"),
            (Control::Pause, RolloutPhase::Paused, "Paused"),
            (Control::Abort, RolloutPhase::RolledBack, "RolledBack"),
        ];
        for (control, phase, name) in cases {
            let why = refusal(control, Some(&status(phase)), Some(3))
                .unwrap_or_else(|| panic!("{control} in {phase:?} should be refused"));
            assert!(why.contains(&format!("is {name}")), "{why}");
            assert!(why.starts_with(control.as_str()), "{why}");
        }
        let why = refusal(
            Control::Resume,
            Some(&status(RolloutPhase::Progressing)),
            None,
        )
        .unwrap_or_default();
        assert!(why.contains("only while the rollout is Paused, but the rollout of revision 5c4b3a2918 is Progressing (phase Progressing)"), "{why}");
        let why = refusal(Control::Abort, Some(&status(RolloutPhase::Complete)), None)
            .unwrap_or_default();
        assert!(
            why.contains("in flight or baking (Progressing, Paused or Baking)"),
            "lists every phase it works in: {why}"
        );
    }

    #[test]
    fn each_control_is_allowed_in_its_phases() {
        for control in Control::ALL {
            for phase in control.sensible_in() {
                assert_eq!(refusal(control, Some(&status(*phase)), Some(3)), None);
            }
        }
    }

    #[test]
    fn no_rollout_or_no_status_is_refused_with_the_summary_phase() {
        let healthy = ModelDeploymentStatus {
            phase: Some(Phase::Healthy),
            ..ModelDeploymentStatus::default()
        };
        let why = refusal(Control::Promote, Some(&healthy), None).unwrap_or_default();
        assert!(
            why.contains("no rollout has been recorded (phase Healthy)"),
            "{why}"
        );
        let why = refusal(Control::Abort, None, None).unwrap_or_default();
        assert!(why.contains("phase not reported"), "{why}");
    }

    #[test]
    fn a_stale_status_is_pointed_out() {
        let why = refusal(
            Control::Promote,
            Some(&status(RolloutPhase::Complete)),
            Some(4),
        )
        .unwrap_or_default();
        assert!(why.contains("generation 3 but the spec is at 4"), "{why}");
        let why = refusal(
            Control::Promote,
            Some(&status(RolloutPhase::Complete)),
            Some(3),
        )
        .unwrap_or_default();
        assert!(!why.contains("generation"), "{why}");
    }

    #[test]
    fn applied_compares_the_recorded_token_of_that_control_only() {
        let mut s = status(RolloutPhase::Baking);
        assert!(!applied(Control::Promote, Some(&s), "t"));
        if let Some(r) = s.rollout.as_mut() {
            r.controls.promote = Some("t".into());
            r.controls.abort = Some("u".into());
        }
        assert!(applied(Control::Promote, Some(&s), "t"));
        assert!(!applied(Control::Promote, Some(&s), "u"));
        assert!(!applied(Control::Abort, Some(&s), "t"));
        assert!(!applied(Control::Promote, None, "t"));
    }

    #[test]
    fn requested_and_outcome_say_what_happened() {
        assert_eq!(
            requested(Control::Abort, "ml", "fraud", "tok"),
            "abort requested for modeldeployment ml/fraud (drover.dev/abort=tok)"
        );
        let mut s = status(RolloutPhase::Baking);
        s.message = Some("revision 5c4b3a2918 promoted".into());
        if let Some(r) = s.rollout.as_mut() {
            r.reason = "promoted by the drover.dev/promote control".into();
            r.actual_weight = 100;
        }
        let line = outcome(Control::Promote, &s);
        assert!(line.starts_with("promote applied: rollout of revision 5c4b3a2918 (version 2.0.0) is Baking at step 1, canary 100%"), "{line}");
        assert!(
            line.contains("promoted by the drover.dev/promote control"),
            "{line}"
        );
        assert!(
            line.ends_with("; phase Progressing (revision 5c4b3a2918 promoted)"),
            "{line}"
        );
    }
}
