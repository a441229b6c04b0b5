//! Windows over the monitors' cumulative reports: per revision, what its pods saw since a
//! window opened. Pure: scrapes come in as reports, windows go out as merged deltas.
//!
//! Each pod's monitor reports cumulative counters since it started. A window keeps, per pod,
//! the report at the moment the window opened (its baseline); the window's content is the sum
//! over pods of `latest − baseline`. A monitor that restarts (new instance id, or a counter
//! that went backwards) or a pod that goes away does not lose what it contributed: that part
//! is kept aside ("retired") and the new instance counts from zero.

use std::collections::BTreeMap;

use crate::monitor::report::Report;

/// What happened to one scrape of one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// A newer report of the same monitor.
    Updated,
    /// The first report of this pod.
    New,
    /// The monitor restarted since its last report: counted from zero again.
    Restarted,
    /// The report could not be combined with the window (another histogram layout).
    Rejected(String),
}

/// A report kept as its JSON (a few KB; the parsed form, with its histograms and sketch, is
/// several times larger) and the counters that tell a restart.
#[derive(Clone, Debug)]
struct Stored {
    body: Box<[u8]>,
    instance: String,
    requests: u64,
    rows: u64,
}

impl Stored {
    fn of(report: &Report) -> Self {
        Self {
            body: serde_json::to_vec(report)
                .unwrap_or_default()
                .into_boxed_slice(),
            instance: report.instance.clone(),
            requests: report.requests.total(),
            rows: report.rows,
        }
    }

    fn parse(&self) -> Option<Report> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Whether `next` continues this report (same monitor process, counters not backwards).
    fn continued_by(&self, next: &Report) -> bool {
        next.instance == self.instance
            && next.requests.total() >= self.requests
            && next.rows >= self.rows
    }
}

/// One pod's reports.
#[derive(Clone, Debug)]
struct PodReports {
    latest: Stored,
    /// The report when the window opened; `None`: the pod's monitor started within the window,
    /// so everything it reports belongs to the window.
    baseline: Option<Stored>,
}

impl PodReports {
    fn contribution(&self) -> Option<Report> {
        let latest = self.latest.parse()?;
        match &self.baseline {
            // A baseline that cannot be subtracted leaves the pod out: counting its whole
            // history would put traffic from before the window into it.
            Some(b) => latest.delta(&b.parse()?).ok(),
            None => Some(latest),
        }
    }
}

/// The pods of one revision and the window over them.
#[derive(Clone, Debug, Default)]
pub struct RevisionWindow {
    pods: BTreeMap<String, PodReports>,
    /// What the window opened on (the rollout step or bake start it belongs to).
    key: Option<String>,
    /// Contributions of monitors that restarted or pods that left, within the window.
    retired: Option<Report>,
    /// Pods that answered the last scrape, and those that did not.
    answered: usize,
    unanswered: usize,
}

impl RevisionWindow {
    /// Records the report `pod` answered.
    pub fn record(&mut self, pod: &str, report: Report) -> Recorded {
        let stored = Stored::of(&report);
        let Some(known) = self.pods.get_mut(pod) else {
            // A pod first seen after the window opened: its monitor may have served before
            // (the operator restarted, the pod just became ready); only what follows counts.
            self.pods.insert(
                pod.to_string(),
                PodReports {
                    latest: stored.clone(),
                    baseline: Some(stored),
                },
            );
            return Recorded::New;
        };
        if known.latest.continued_by(&report) {
            known.latest = stored;
            return Recorded::Updated;
        }
        // A restarted monitor: keep what the old instance contributed, count the new one from
        // zero (it has seen nothing before it started).
        let gone = known.contribution();
        known.latest = stored;
        known.baseline = None;
        match gone.map(|g| self.retire(g)) {
            Some(Ok(())) | None => Recorded::Restarted,
            Some(Err(e)) => Recorded::Rejected(e),
        }
    }

    /// Ends a scrape round: `present` are the pods still there (others have left; what they
    /// contributed stays in the window), `answered`/`unanswered` how the round went.
    pub fn end_round(&mut self, present: &[&str], answered: usize, unanswered: usize) {
        let gone: Vec<String> = self
            .pods
            .keys()
            .filter(|p| !present.contains(&p.as_str()))
            .cloned()
            .collect();
        for pod in gone {
            if let Some(c) = self.pods.remove(&pod).and_then(|p| p.contribution()) {
                let _ = self.retire(c);
            }
        }
        self.answered = answered;
        self.unanswered = unanswered;
    }

    fn retire(&mut self, contribution: Report) -> Result<(), String> {
        self.retired = Some(match self.retired.take() {
            None => contribution,
            Some(r) => r.merge(&contribution).map_err(|e| e.to_string())?,
        });
        Ok(())
    }

    /// The window opened at `key`, merged over pods. A different key than the last one opens a
    /// new window at the latest reports. `None` when no pod answered the last scrape round:
    /// missing reports freeze a judgement, they never count as good or bad.
    pub fn window(&mut self, key: &str) -> Option<Report> {
        if self.key.as_deref() != Some(key) {
            self.open(key);
        }
        if self.answered == 0 {
            return None;
        }
        self.content()
    }

    /// Moves the window to `key` and hands back the one it closes: its key and what it held
    /// (`None` inside when no pod contributed). `None` when the window already is at `key`, or
    /// none was open. The new window opens at the latest reports, so consecutive windows
    /// neither overlap nor leave a gap.
    pub fn advance(&mut self, key: &str) -> Option<(String, Option<Report>)> {
        if self.key.as_deref() == Some(key) {
            return None;
        }
        let closed = self.key.clone().map(|k| (k, self.content()));
        self.open(key);
        closed
    }

    fn open(&mut self, key: &str) {
        self.key = Some(key.to_string());
        self.retired = None;
        for p in self.pods.values_mut() {
            p.baseline = Some(p.latest.clone());
        }
    }

    /// What the open window holds, merged over pods (and pods that left or restarted).
    fn content(&self) -> Option<Report> {
        let mut parts = self.pods.values().filter_map(PodReports::contribution);
        let first = self.retired.clone().or_else(|| parts.next())?;
        parts.try_fold(first, |acc, p| acc.merge(&p).ok())
    }

    /// Pods that answered the last round.
    pub fn answered(&self) -> usize {
        self.answered
    }

    /// Ready pods that did not answer the last round.
    pub fn unanswered(&self) -> usize {
        self.unanswered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::fixtures::report;

    /// A report `r` renamed to another monitor instance.
    fn instance(mut r: Report, id: &str) -> Report {
        r.instance = id.into();
        r
    }

    #[test]
    fn a_window_counts_what_happened_since_it_opened_over_every_pod() {
        let mut w = RevisionWindow::default();
        w.record("a", report(100, 0, 20.0));
        w.record("b", report(50, 0, 20.0));
        w.end_round(&["a", "b"], 2, 0);
        let opened = w.window("step-0").unwrap();
        assert_eq!(opened.requests.total(), 0, "opens empty");

        w.record("a", report(130, 2, 20.0));
        w.record("b", report(60, 0, 20.0));
        w.end_round(&["a", "b"], 2, 0);
        let win = w.window("step-0").unwrap();
        assert_eq!(win.requests.total(), 32 + 10);
        assert_eq!(win.requests.server_error, 2);

        // A new key opens a new window.
        assert_eq!(w.window("step-1").unwrap().requests.total(), 0);
    }

    #[test]
    fn a_restarted_monitor_keeps_what_it_counted_and_starts_from_zero() {
        let mut w = RevisionWindow::default();
        w.record("a", report(100, 0, 20.0));
        w.end_round(&["a"], 1, 0);
        w.window("s");
        w.record("a", report(150, 0, 20.0));
        // The pod's monitor restarted and served 20 more.
        assert_eq!(
            w.record("a", instance(report(20, 1, 20.0), "other")),
            Recorded::Restarted
        );
        w.end_round(&["a"], 1, 0);
        let win = w.window("s").unwrap();
        assert_eq!(win.requests.total(), 50 + 21);
        assert_eq!(win.requests.server_error, 1);
    }

    #[test]
    fn a_pod_that_leaves_keeps_its_contribution_and_no_answer_freezes() {
        let mut w = RevisionWindow::default();
        w.record("a", report(10, 0, 20.0));
        w.record("b", report(10, 0, 20.0));
        w.end_round(&["a", "b"], 2, 0);
        w.window("s");
        w.record("a", report(40, 0, 20.0));
        w.record("b", report(20, 0, 20.0));
        w.end_round(&["a", "b"], 2, 0);
        w.end_round(&["a"], 1, 0);
        assert_eq!(w.window("s").unwrap().requests.total(), 30 + 10);
        // Nobody answered the last round: frozen, not zero.
        w.end_round(&["a"], 0, 1);
        assert!(w.window("s").is_none());
        assert_eq!(w.unanswered(), 1);
    }

    #[test]
    fn advancing_hands_back_the_closed_window_once_and_loses_nothing_between_windows() {
        let mut w = RevisionWindow::default();
        w.record("a", report(100, 0, 20.0));
        w.end_round(&["a"], 1, 0);
        assert_eq!(w.advance("watch 1"), None, "nothing was open");
        w.record("a", report(160, 3, 20.0));
        w.end_round(&["a"], 1, 0);
        assert_eq!(w.advance("watch 1"), None, "same window");
        let (key, closed) = w.advance("watch 2").unwrap();
        assert_eq!(key, "watch 1");
        let closed = closed.unwrap();
        assert_eq!(closed.requests.total(), 63);
        assert_eq!(closed.requests.server_error, 3);
        // The next window starts where the closed one ended.
        w.record("a", report(200, 3, 20.0));
        w.end_round(&["a"], 1, 0);
        let (_, next) = w.advance("watch 3").unwrap();
        assert_eq!(next.unwrap().requests.total(), 40);
        // A window no pod contributed to closes empty.
        let mut empty = RevisionWindow::default();
        empty.advance("watch 1");
        assert_eq!(
            empty.advance("watch 2"),
            Some(("watch 1".to_string(), None))
        );
    }

    #[test]
    fn a_pod_first_seen_inside_a_window_counts_only_what_follows() {
        let mut w = RevisionWindow::default();
        w.end_round(&[], 0, 0);
        w.window("s");
        assert_eq!(w.record("late", report(500, 0, 20.0)), Recorded::New);
        w.record("late", report(520, 0, 20.0));
        w.end_round(&["late"], 1, 0);
        assert_eq!(w.window("s").unwrap().requests.total(), 20);
    }
}
