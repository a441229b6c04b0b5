//! Leader election with a `coordination.k8s.io/v1` Lease, and the gate every write passes.
//!
//! Only the holder of the Lease writes. The [`WriteGate`] is open only while this instance holds
//! the Lease *and* its last successful renewal is younger than the renew deadline, which is
//! shorter than the Lease duration: when renewals stop succeeding (API down, network split), the
//! gate closes by itself before another instance may take the Lease over, whatever the task
//! renewing it is doing. This is client-go's `renewDeadline` rule; kube-lease-manager keeps
//! reporting leadership while renewals fail, which is why Drover has its own small elector.
//!
//! Expiry of someone else's Lease is judged on this instance's monotonic clock (how long the
//! record has stayed unchanged), never by comparing wall clocks across nodes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::time::Instant;
use tracing::{info, warn};

/// Timing of the election (client-go's defaults).
#[derive(Clone, Copy, Debug)]
pub struct LeaseTiming {
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How long after its last successful renewal the holder stops writing.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Permission to write, shared by every writer.
#[derive(Clone, Debug)]
pub struct WriteGate {
    state: Arc<Mutex<GateState>>,
}

#[derive(Debug)]
enum GateState {
    /// No election: always open (single instance, tests, `--leader-elect=false`).
    Always,
    /// Open until the instant (last successful renewal + renew deadline), if any.
    Until(Option<Instant>),
}

impl WriteGate {
    /// A gate that is always open.
    pub fn always_open() -> Self {
        Self {
            state: Arc::new(Mutex::new(GateState::Always)),
        }
    }

    /// A gate that is closed until [`WriteGate::renewed`] opens it.
    pub fn closed() -> Self {
        Self {
            state: Arc::new(Mutex::new(GateState::Until(None))),
        }
    }

    /// True when a write may go out now.
    pub fn is_open(&self) -> bool {
        match self.state.lock() {
            Ok(state) => match &*state {
                GateState::Always => true,
                GateState::Until(until) => until.is_some_and(|t| Instant::now() < t),
            },
            Err(_) => false,
        }
    }

    /// Records a successful acquisition or renewal that started at `attempt_start`.
    pub fn renewed(&self, attempt_start: Instant, renew_deadline: Duration) {
        if let Ok(mut state) = self.state.lock()
            && let GateState::Until(until) = &mut *state
        {
            *until = Some(attempt_start + renew_deadline);
        }
    }

    /// Closes the gate at once (the Lease was lost or released).
    pub fn close(&self) {
        if let Ok(mut state) = self.state.lock()
            && let GateState::Until(until) = &mut *state
        {
            *until = None;
        }
    }
}

/// Campaigns for and holds one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
    gate: WriteGate,
    observed: Option<(LeaseRecord, Instant)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct LeaseRecord {
    holder: Option<String>,
    renew_time: Option<String>,
}

/// What one round of the election found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Round {
    /// This instance holds the Lease (acquired or renewed).
    Leading,
    /// Someone else holds a valid Lease.
    Following,
    /// The round failed (API error or a conflict); the gate closes at the renew deadline.
    Failed,
}

impl LeaderElector {
    /// An elector for Lease `name` reached through `api` (namespaced), as `identity`.
    pub fn new(
        api: Api<Lease>,
        name: impl Into<String>,
        identity: impl Into<String>,
        timing: LeaseTiming,
    ) -> Self {
        Self {
            api,
            name: name.into(),
            identity: identity.into(),
            timing,
            gate: WriteGate::closed(),
            observed: None,
        }
    }

    /// The gate this elector opens and closes.
    pub fn gate(&self) -> WriteGate {
        self.gate.clone()
    }

    /// Runs rounds forever, calling `on_change(leading)` when leadership starts or ends.
    pub async fn run(mut self, mut on_change: impl FnMut(bool)) {
        let mut leading = false;
        loop {
            let round = self.round().await;
            let now_leading = self.gate.is_open();
            if round == Round::Failed && leading {
                warn!("renewing the leader Lease failed; writes stop at the renew deadline");
            }
            if now_leading != leading {
                leading = now_leading;
                info!(leading, lease = %self.name, identity = %self.identity, "leadership changed");
                on_change(leading);
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// One attempt to acquire or renew.
    pub async fn round(&mut self) -> Round {
        let start = Instant::now();
        let current = match self.api.get_opt(&self.name).await {
            Ok(lease) => lease,
            Err(e) => {
                warn!(error = %e, "reading the leader Lease failed");
                return Round::Failed;
            }
        };
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now.clone(), Some(now), 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => self.lead(start),
                Err(e) => {
                    warn!(error = %e, "creating the leader Lease failed");
                    Round::Failed
                }
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record = LeaseRecord {
            holder: spec.holder_identity.clone(),
            renew_time: spec.renew_time.as_ref().map(|t| t.0.to_string()),
        };
        let held_by_me = record.holder.as_deref() == Some(self.identity.as_str());
        let first_seen = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => start,
        };
        self.observed = Some((record.clone(), first_seen));
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
            .unwrap_or(self.timing.lease_duration);
        let expired = record.holder.is_none() || start.duration_since(first_seen) > duration;
        if !held_by_me && !expired {
            self.gate.close();
            return Round::Following;
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!held_by_me);
        let acquire = if held_by_me {
            spec.acquire_time.clone()
        } else {
            Some(now.clone())
        };
        lease.spec = Some(self.spec(now, acquire, transitions));
        // `replace` carries the resourceVersion we read: a concurrent writer makes it fail.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => self.lead(start),
            Err(e) => {
                warn!(error = %e, "renewing the leader Lease failed");
                Round::Failed
            }
        }
    }

    fn lead(&mut self, start: Instant) -> Round {
        self.observed = None;
        self.gate.renewed(start, self.timing.renew_deadline);
        Round::Leading
    }

    fn spec(&self, now: MicroTime, acquire: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: i32::try_from(self.timing.lease_duration.as_secs()).ok(),
            acquire_time: acquire,
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Gives the Lease up (on shutdown) so a standby takes over without waiting for expiry.
    pub async fn release(&mut self) {
        self.gate.close();
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            warn!(error = %e, "releasing the leader Lease failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn gate_closes_at_the_renew_deadline_without_any_renewal() {
        let gate = WriteGate::closed();
        assert!(!gate.is_open());
        gate.renewed(Instant::now(), Duration::from_secs(10));
        assert!(gate.is_open());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(gate.is_open());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            !gate.is_open(),
            "the gate must close by itself at the deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn close_is_immediate_and_always_open_stays_open() {
        let gate = WriteGate::closed();
        gate.renewed(Instant::now(), Duration::from_secs(10));
        gate.close();
        assert!(!gate.is_open());
        let always = WriteGate::always_open();
        always.close();
        assert!(always.is_open());
    }
}
