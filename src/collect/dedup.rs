//! Feedback idempotent per token across the pods of a ModelDeployment.
//!
//! A pod counts a label once per token ([`SeenTokens`](crate::monitor::feedback::SeenTokens)),
//! but a client that retries against another pod (the Service picks one at random) gets
//! counted there too: neither pod can know. Each monitor logs every label it counts
//! ([`FeedbackLog`](crate::monitor::feedback::log::FeedbackLog)), and the operator reads the log with every scrape (`feedbackSince`): a
//! token id already counted — by another pod, or by the same one earlier — is taken out of the
//! counting pod's performance ([`Performance::unrecord`]) and counted as a duplicate.
//!
//! The cumulative report of a pod becomes `counted − taken out so far` before it reaches its
//! window, so windows, deltas and merges stay as they are. Per pod, the operator keeps its
//! monitor's instance, the next sequence number to check, and the sum of what was taken out;
//! per ModelDeployment the token ids counted, bounded by count ([`MAX_REMEMBERED`]) and by
//! age (`maxLabelAge` plus [`AGE_SLACK_SECONDS`]: older tokens are refused by every pod).
//!
//! - The first scrape of a pod (operator start, a new or returning pod) reads its whole log
//!   to remember its ids without taking anything out: its labels so far are in the window's
//!   baseline, not in the window.
//! - A monitor that restarted (new instance) is checked from its first record: the window
//!   counts it from zero.
//! - Records that left a monitor's ring between two scrapes cannot be checked: they stay
//!   counted, as `unverified`.
//!
//! Pure: time comes in as an argument.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;

use crate::monitor::feedback::Performance;
use crate::monitor::report::Report;

/// Token ids remembered per ModelDeployment (about 4.5 MiB when full): three pods' whole
/// feedback logs.
pub const MAX_REMEMBERED: usize = 200_000;
/// How much older than `maxLabelAge` a remembered token may get before it is forgotten:
/// covers the time between a pod counting a label and the operator reading it, and clocks
/// that disagree a little.
pub const AGE_SLACK_SECONDS: i64 = 600;
/// Least time between two sweeps for old ids (each is a pass over all of them).
const SWEEP_EVERY_SECONDS: i64 = 60;

/// How a ModelDeployment's feedback is checked now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedbackCheck {
    /// `spec.monitoring.performance.maxLabelAge` in seconds: older tokens are refused.
    pub max_label_age_seconds: i64,
    /// Now (Unix seconds).
    pub now: i64,
}

/// What to ask a pod's monitor for: the log after `since` of monitor process `instance`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedbackCursor {
    /// `feedbackSince`: the last sequence number checked (0: everything).
    pub since: u64,
    /// `feedbackInstance`: the monitor process `since` belongs to (`None`: not known yet).
    pub instance: Option<String>,
}

/// What checking one report found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// Labels taken out: their token had been counted already.
    pub duplicates: u64,
    /// Labels that could not be checked (gone from the monitor's ring, or not in its
    /// counters): they stay counted.
    pub unverified: u64,
}

/// One pod's monitor, as far as it was checked.
#[derive(Debug)]
struct PodFeedback {
    revision: String,
    instance: String,
    /// The first sequence number not checked yet.
    next_seq: u64,
    /// Everything taken out of this monitor's counters so far.
    taken_out: Performance,
    duplicates: u64,
    unverified: u64,
}

impl PodFeedback {
    fn new(revision: &str, instance: &str, next_seq: u64) -> Self {
        Self {
            revision: revision.to_string(),
            instance: instance.to_string(),
            next_seq,
            taken_out: Performance::default(),
            duplicates: 0,
            unverified: 0,
        }
    }
}

/// The token ids counted, with their prediction times.
#[derive(Debug)]
struct SeenIds {
    ids: HashMap<u64, i64>,
    capacity: usize,
    swept_at: i64,
}

impl SeenIds {
    fn new(capacity: usize) -> Self {
        Self {
            ids: HashMap::new(),
            capacity: capacity.max(10),
            swept_at: i64::MIN,
        }
    }

    /// Remembers `id`; `false` when it was counted already.
    fn first_time(&mut self, id: u64, time: i64) -> bool {
        match self.ids.entry(id) {
            MapEntry::Occupied(_) => false,
            MapEntry::Vacant(v) => {
                v.insert(time);
                true
            }
        }
    }

    /// Forgets ids older than every pod accepts, and the oldest beyond the capacity.
    fn forget_old(&mut self, check: FeedbackCheck) {
        let full = self.ids.len() > self.capacity;
        if full || check.now.saturating_sub(self.swept_at) >= SWEEP_EVERY_SECONDS {
            let cutoff = check
                .now
                .saturating_sub(check.max_label_age_seconds)
                .saturating_sub(AGE_SLACK_SECONDS);
            self.ids.retain(|_, t| *t >= cutoff);
            self.swept_at = check.now;
        }
        if self.ids.len() > self.capacity {
            // Down to nine tenths at once, so the sort is not paid on every new id.
            let excess = self.ids.len() - self.capacity * 9 / 10;
            let mut times: Vec<i64> = self.ids.values().copied().collect();
            let (_, &mut cutoff, _) = times.select_nth_unstable(excess - 1);
            let mut ties = excess - times.iter().filter(|t| **t < cutoff).count();
            self.ids.retain(|_, t| {
                if *t < cutoff {
                    false
                } else if *t == cutoff && ties > 0 {
                    ties -= 1;
                    false
                } else {
                    true
                }
            });
        }
        if self.ids.capacity() > 4 * self.ids.len().max(1024) {
            self.ids.shrink_to_fit();
        }
    }
}

/// Cross-pod feedback state of one ModelDeployment (only kept while it has
/// `monitoring.performance`).
#[derive(Debug)]
pub struct FeedbackDedup {
    pods: HashMap<String, PodFeedback>,
    seen: SeenIds,
}

impl Default for FeedbackDedup {
    fn default() -> Self {
        Self::with_capacity(MAX_REMEMBERED)
    }
}

impl FeedbackDedup {
    /// Remembers at most `capacity` token ids.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            pods: HashMap::new(),
            seen: SeenIds::new(capacity),
        }
    }

    /// What to ask `pod`'s monitor for.
    pub fn cursor(&self, pod: &str) -> FeedbackCursor {
        match self.pods.get(pod) {
            Some(p) => FeedbackCursor {
                since: p.next_seq.saturating_sub(1),
                instance: Some(p.instance.clone()),
            },
            None => FeedbackCursor::default(),
        }
    }

    /// Token ids remembered.
    pub fn remembered(&self) -> usize {
        self.seen.ids.len()
    }

    /// Checks the feedback log `report` of `pod` (of `revision`) carries, takes it out of the
    /// report, and leaves in the report's performance what this pod counted minus every
    /// duplicate found so far (with `duplicates` and `unverified` set).
    pub fn check(
        &mut self,
        revision: &str,
        pod: &str,
        report: &mut Report,
        check: FeedbackCheck,
    ) -> Checked {
        let log = report.feedback_log.take();
        let mut found = Checked::default();
        let restarted = match self.pods.get(pod) {
            None => {
                // First look: remember, take nothing out (these labels are in the baseline).
                // Without a log there is nothing to start from: the next one is a first look.
                if let Some(log) = &log {
                    for r in &log.records {
                        self.seen.first_time(r.id, r.time);
                    }
                    self.pods.insert(
                        pod.to_string(),
                        PodFeedback::new(revision, &report.instance, log.next_seq),
                    );
                }
                self.seen.forget_old(check);
                return found;
            }
            Some(known) => known.instance != report.instance,
        };
        if restarted {
            // A new monitor process: the window counts it from zero, so all of it is checked.
            self.pods.insert(
                pod.to_string(),
                PodFeedback::new(revision, &report.instance, 1),
            );
        }
        let Some(state) = self.pods.get_mut(pod) else {
            return found;
        };
        let mut net = report.performance.take().map(|counted| {
            // Cannot fail: every part of `taken_out` was taken out of these counters before,
            // and counters only grow. Should it, the counters stay as the pod has them.
            counted.delta(&state.taken_out).unwrap_or(counted)
        });
        if let Some(log) = &log {
            let start = log.start_seq();
            if start > state.next_seq {
                // Left the ring before this scrape: counted, unchecked.
                found.unverified += start - state.next_seq;
            }
            for (seq, record) in (start..).zip(&log.records) {
                if seq < state.next_seq || self.seen.first_time(record.id, record.time) {
                    continue;
                }
                let taken_out = match (log.contribution(record), net.as_mut()) {
                    (Some(c), Some(n)) => n.unrecord(&c).is_ok().then_some(c),
                    _ => None,
                };
                match taken_out {
                    Some(c) => {
                        state.taken_out.add(&c);
                        found.duplicates += 1;
                    }
                    // A record the counters do not hold cannot be taken out of them.
                    None => found.unverified += 1,
                }
            }
            state.next_seq = state.next_seq.max(log.next_seq);
        }
        state.duplicates += found.duplicates;
        state.unverified += found.unverified;
        if let Some(n) = net.as_mut() {
            n.duplicates += state.duplicates;
            n.unverified += state.unverified;
        }
        report.performance = net;
        self.seen.forget_old(check);
        found
    }

    /// Ends a scrape round of `revision`: pods not `present` are forgotten (as their windows
    /// forget them; a pod that comes back is a first look again).
    pub fn end_round(&mut self, revision: &str, present: &[&str]) {
        self.pods
            .retain(|pod, p| p.revision != revision || present.contains(&pod.as_str()));
    }

    /// Forgets the pods of revisions not in `keep` (their windows are gone).
    pub fn keep_revisions(&mut self, keep: &[&str]) {
        self.pods.retain(|_, p| keep.contains(&p.revision.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::window::RevisionWindow;
    use crate::monitor::feedback::{self, Claims, Labelled, Task};
    use crate::monitor::recorder::Recorder;
    use serde_json::{Value, json};

    const NOW: i64 = 1_800_000_000;
    const CHECK: FeedbackCheck = FeedbackCheck {
        max_label_age_seconds: 3600,
        now: NOW,
    };

    /// A pod's monitor: its recorder (the real one) and the key every pod shares.
    struct Monitor {
        recorder: Recorder,
        key: [u8; 32],
    }

    fn monitor(instance: &str) -> Monitor {
        Monitor {
            recorder: Recorder::new(None, "1", instance.into(), "t".into()),
            key: feedback::key_from_monitor_token("k"),
        }
    }

    /// A token for `prediction` made at `time`.
    fn token(m: &Monitor, nonce: u64, prediction: Value, time: i64) -> (String, Claims) {
        let claims = Claims {
            revision: "r".into(),
            prediction,
            time,
            nonce,
        };
        (feedback::sign(&m.key, &claims), claims)
    }

    /// `m` counts `label` for the token.
    fn label(m: &Monitor, token: &(String, Claims), label: Value) {
        m.recorder
            .feedback(Ok(Labelled {
                task: Task::Classification,
                id: feedback::token_id(&token.0).unwrap(),
                claims: &token.1,
                label: &label,
            }))
            .unwrap();
    }

    /// What a scrape with `dedup`'s cursor gets from `m`.
    fn scrape(dedup: &FeedbackDedup, pod: &str, m: &Monitor) -> Report {
        let cursor = dedup.cursor(pod);
        m.recorder
            .report_with_feedback(cursor.since, cursor.instance.as_deref())
    }

    /// Scrapes every pod into `window`, checking feedback on the way; what was found.
    fn round(
        dedup: &mut FeedbackDedup,
        window: &mut RevisionWindow,
        pods: &[(&str, &Monitor)],
    ) -> Checked {
        let mut total = Checked::default();
        for (pod, m) in pods {
            let mut report = scrape(dedup, pod, m);
            let found = dedup.check("r", pod, &mut report, CHECK);
            assert!(
                report.feedback_log.is_none(),
                "the log never reaches a window"
            );
            total.duplicates += found.duplicates;
            total.unverified += found.unverified;
            window.record(pod, report);
        }
        let names: Vec<&str> = pods.iter().map(|(p, _)| *p).collect();
        window.end_round(&names, pods.len(), 0);
        dedup.end_round("r", &names);
        total
    }

    fn performance(window: &mut RevisionWindow) -> Performance {
        window
            .window("w")
            .and_then(|r| r.performance)
            .unwrap_or_default()
    }

    #[test]
    fn a_token_counted_by_two_pods_is_counted_once() {
        let (a, b) = (monitor("a-1"), monitor("b-1"));
        let mut dedup = FeedbackDedup::default();
        let mut window = RevisionWindow::default();
        round(&mut dedup, &mut window, &[("a", &a), ("b", &b)]);
        window.window("w");

        // Token 1 is right, labelled on both pods (a client retry); token 2 is wrong, on B.
        let t1 = token(&a, 1, json!(1), NOW - 10);
        let t2 = token(&a, 2, json!(1), NOW - 5);
        label(&a, &t1, json!(1));
        label(&b, &t1, json!(1));
        label(&b, &t2, json!(0));
        let found = round(&mut dedup, &mut window, &[("a", &a), ("b", &b)]);
        assert_eq!(
            found,
            Checked {
                duplicates: 1,
                unverified: 0
            }
        );
        let p = performance(&mut window);
        assert_eq!((p.labelled, p.correct, p.duplicates), (2, 1, 1));
        assert_eq!(p.classes["1"].actual, 1);
        assert_eq!(p.classes["0"].actual, 1);

        // The same token once more on A, much later (its own seen set forgot it): taken out.
        label(&a, &t1, json!(1));
        let t3 = token(&a, 3, json!(0), NOW);
        label(&a, &t3, json!(0));
        let found = round(&mut dedup, &mut window, &[("a", &a), ("b", &b)]);
        assert_eq!(found.duplicates, 1);
        let p = performance(&mut window);
        assert_eq!((p.labelled, p.correct, p.duplicates), (3, 2, 2));
        // Pods' own counters are untouched: A counted 3, B 2.
        assert_eq!(a.recorder.report().performance.unwrap().labelled, 3);
        assert_eq!(b.recorder.report().performance.unwrap().labelled, 2);
    }

    #[test]
    fn a_first_scrape_remembers_the_log_without_taking_anything_out() {
        let (a, b) = (monitor("a-1"), monitor("b-1"));
        // Before the operator looked: both pods counted token 1.
        let t1 = token(&a, 1, json!(1), NOW - 100);
        label(&a, &t1, json!(1));
        label(&b, &t1, json!(1));
        let mut dedup = FeedbackDedup::default();
        let mut window = RevisionWindow::default();
        let found = round(&mut dedup, &mut window, &[("a", &a), ("b", &b)]);
        assert_eq!(found, Checked::default(), "history is not judged");
        assert_eq!(dedup.remembered(), 1);
        window.window("w");
        assert_eq!(
            dedup.cursor("a"),
            FeedbackCursor {
                since: 1,
                instance: Some("a-1".into())
            }
        );
        // A retry of that token after the operator started is caught.
        let c = monitor("c-1");
        round(&mut dedup, &mut window, &[("a", &a), ("b", &b), ("c", &c)]);
        label(&c, &t1, json!(1));
        let found = round(&mut dedup, &mut window, &[("a", &a), ("b", &b), ("c", &c)]);
        assert_eq!(found.duplicates, 1);
        let p = performance(&mut window);
        assert_eq!((p.labelled, p.duplicates), (0, 1));
    }

    #[test]
    fn a_ring_that_overflowed_between_scrapes_leaves_labels_unverified() {
        let a = Monitor {
            recorder: Recorder::new(None, "1", "a-1".into(), "t".into()),
            key: feedback::key_from_monitor_token("k"),
        };
        let b = monitor("b-1");
        let mut dedup = FeedbackDedup::default();
        let mut window = RevisionWindow::default();
        round(&mut dedup, &mut window, &[("a", &a), ("b", &b)]);
        window.window("w");
        // More labels than the ring holds between two scrapes; the first is also on B.
        let first = token(&a, 0, json!(1), NOW);
        label(&b, &first, json!(1));
        label(&a, &first, json!(1));
        let n = feedback::log::LOG_CAPACITY as u64 + 10;
        for nonce in 1..n {
            label(&a, &token(&a, nonce, json!(1), NOW), json!(1));
        }
        let found = round(&mut dedup, &mut window, &[("b", &b), ("a", &a)]);
        assert_eq!(
            found,
            Checked {
                duplicates: 0,
                unverified: 10
            },
            "the 10 oldest left A's ring unchecked (one of them a duplicate)"
        );
        let p = performance(&mut window);
        assert_eq!(p.labelled, n + 1);
        assert_eq!((p.duplicates, p.unverified), (0, 10));
    }

    #[test]
    fn a_restarted_monitor_is_checked_from_its_first_record() {
        let a = monitor("a-1");
        let mut dedup = FeedbackDedup::default();
        let mut window = RevisionWindow::default();
        let t1 = token(&a, 1, json!(1), NOW);
        label(&a, &t1, json!(0));
        round(&mut dedup, &mut window, &[("a", &a)]);
        window.window("w");
        assert_eq!(dedup.cursor("a").since, 1);
        // The pod's monitor restarts and counts the same token again, and a new one.
        let a2 = monitor("a-2");
        label(&a2, &t1, json!(0));
        label(&a2, &token(&a2, 2, json!(1), NOW), json!(1));
        // The cursor names the old instance: the new one answers with its whole log.
        let found = round(&mut dedup, &mut window, &[("a", &a2)]);
        assert_eq!(found.duplicates, 1);
        let p = performance(&mut window);
        assert_eq!((p.labelled, p.correct, p.duplicates), (1, 1, 1));
    }

    #[test]
    fn a_pod_that_left_is_a_first_look_when_it_comes_back() {
        let (a, b) = (monitor("a-1"), monitor("b-1"));
        let mut dedup = FeedbackDedup::default();
        let mut window = RevisionWindow::default();
        round(&mut dedup, &mut window, &[("a", &a), ("b", &b)]);
        round(&mut dedup, &mut window, &[("a", &a)]);
        assert_eq!(dedup.cursor("b"), FeedbackCursor::default());
        dedup.keep_revisions(&[]);
        assert_eq!(dedup.cursor("a"), FeedbackCursor::default());
    }

    #[test]
    fn remembered_ids_are_bounded_by_age_and_by_count() {
        let mut seen = SeenIds::new(100);
        for id in 0..50u64 {
            assert!(seen.first_time(id, NOW - 10_000 + id as i64));
        }
        assert!(!seen.first_time(3, NOW));
        // max age 1h + slack: everything older than NOW - 4200 goes.
        seen.forget_old(CHECK);
        assert_eq!(seen.ids.len(), 0);
        for id in 0..150u64 {
            seen.first_time(id, NOW - 150 + id as i64);
        }
        seen.forget_old(FeedbackCheck {
            now: NOW + 1,
            ..CHECK
        });
        assert_eq!(seen.ids.len(), 90, "down to nine tenths of the capacity");
        assert!(
            (60..150).all(|id| seen.ids.contains_key(&id)),
            "the oldest predictions are forgotten first"
        );
        // Equal times are cut exactly.
        let mut same = SeenIds::new(10);
        for id in 0..20u64 {
            same.first_time(id, NOW);
        }
        same.forget_old(CHECK);
        assert_eq!(same.ids.len(), 9);
    }

    #[test]
    fn a_full_log_fits_a_report() {
        let mut ring = feedback::log::FeedbackRing::default();
        // Longest ids and errors, and prediction times for the next century.
        for i in 0..feedback::log::LOG_CAPACITY as u64 {
            ring.push(
                u64::MAX - i,
                4_000_000_000 - i as i64,
                &feedback::Contribution::Error(-0.1 - 1e-17 * i as f64),
            );
        }
        let bytes = serde_json::to_vec(&ring.since(0)).unwrap().len();
        // The rest of a report (its histograms, 64 class names) is well within the other quarter.
        assert!(
            bytes < crate::collect::scrape::MAX_REPORT_BYTES * 3 / 4,
            "{bytes} bytes"
        );
    }
}
