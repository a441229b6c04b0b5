//! A mergeable latency sketch with bounded relative error (DDSketch layout).
//!
//! Buckets are fixed logarithmic ranges shared by every pod, so merging is
//! exact addition and a window is the exact difference of two cumulative
//! snapshots; storage is sparse because latencies cluster in few buckets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::StatsError;

/// Relative accuracy `a`: every quantile is within `a` of a true sample value.
pub const RELATIVE_ACCURACY: f64 = 0.01;

/// Bucket growth factor `gamma = (1 + a) / (1 - a)`.
pub const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);

/// `ln(GAMMA)`, spelled out because `ln` is not a `const fn`; a test pins it.
const LN_GAMMA: f64 = 0.020_000_666_706_669_435;

/// `ln(2 / (GAMMA + 1))` = `ln(1 - a)`, the offset from a bucket's upper
/// bound to its representative value, pinned by a test.
const LN_REPRESENTATIVE_OFFSET: f64 = -0.010_050_335_853_501_45;

/// Values at or below this many seconds (1 ns) share the zero bucket, whose
/// representative is 0: relative error there is unbounded but absolute error
/// is at most 1 ns.
pub const MIN_INDEXABLE_SECONDS: f64 = 1e-9;

/// Bucket index for a value above [`MIN_INDEXABLE_SECONDS`]: bucket `i`
/// covers `(gamma^(i-1), gamma^i]`.
fn bucket_index(seconds: f64) -> i32 {
    // Finite positive input keeps this within about -1037..=35489, so the
    // saturating float-to-int cast never actually saturates.
    (seconds.ln() / LN_GAMMA).ceil() as i32
}

/// Cumulative latency distribution of one target, in seconds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "SketchSnapshot")]
pub struct LatencySketch {
    zero_count: u64,
    buckets: BTreeMap<i32, u64>,
    count: u64,
    invalid: u64,
    sum: f64,
}

/// The serialised form, checked before it becomes a [`LatencySketch`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SketchSnapshot {
    zero_count: u64,
    buckets: BTreeMap<i32, u64>,
    count: u64,
    invalid: u64,
    sum: f64,
}

impl TryFrom<SketchSnapshot> for LatencySketch {
    type Error = StatsError;

    fn try_from(s: SketchSnapshot) -> Result<Self, StatsError> {
        let lowest = bucket_index(MIN_INDEXABLE_SECONDS);
        let highest = bucket_index(f64::MAX);
        if s.buckets.keys().any(|&i| i < lowest || i > highest) {
            return Err(StatsError::InconsistentSnapshot {
                reason: "bucket index outside the representable range",
            });
        }
        let total = s
            .buckets
            .values()
            .try_fold(s.zero_count, |acc, &c| acc.checked_add(c));
        if total != Some(s.count) {
            return Err(StatsError::InconsistentSnapshot {
                reason: "count is not the sum of the bucket counts",
            });
        }
        // Empty buckets are never stored, so equal sketches compare equal.
        let buckets = s.buckets.into_iter().filter(|&(_, c)| c > 0).collect();
        Ok(LatencySketch {
            zero_count: s.zero_count,
            buckets,
            count: s.count,
            invalid: s.invalid,
            sum: s.sum,
        })
    }
}

impl LatencySketch {
    /// An empty sketch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one latency in seconds. NaN, infinite and negative values are
    /// counted in [`invalid`](Self::invalid) and otherwise ignored.
    pub fn record(&mut self, seconds: f64) {
        if !seconds.is_finite() || seconds < 0.0 {
            self.invalid = self.invalid.saturating_add(1);
            return;
        }
        if seconds <= MIN_INDEXABLE_SECONDS {
            self.zero_count = self.zero_count.saturating_add(1);
        } else {
            let slot = self.buckets.entry(bucket_index(seconds)).or_insert(0);
            *slot = slot.saturating_add(1);
        }
        self.count = self.count.saturating_add(1);
        self.sum += seconds;
    }

    /// Records `times` latencies of the same value (the simulator's aggregated traffic).
    pub fn record_many(&mut self, seconds: f64, times: u64) {
        if times == 0 {
            return;
        }
        if !seconds.is_finite() || seconds < 0.0 {
            self.invalid = self.invalid.saturating_add(times);
            return;
        }
        if seconds <= MIN_INDEXABLE_SECONDS {
            self.zero_count = self.zero_count.saturating_add(times);
        } else {
            let slot = self.buckets.entry(bucket_index(seconds)).or_insert(0);
            *slot = slot.saturating_add(times);
        }
        self.count = self.count.saturating_add(times);
        self.sum += seconds * times as f64;
    }

    /// Number of recorded (valid) latencies.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Number of rejected values (NaN, infinite or negative).
    pub fn invalid(&self) -> u64 {
        self.invalid
    }

    /// Sum of recorded latencies in seconds.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Mean latency, `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// Latencies at or below [`MIN_INDEXABLE_SECONDS`].
    pub fn zero_count(&self) -> u64 {
        self.zero_count
    }

    /// Non-empty buckets as `(index, count)`, in increasing latency order.
    pub fn buckets(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        self.buckets.iter().map(|(&i, &c)| (i, c))
    }

    /// Representative value of bucket `index`: `2 * gamma^index / (gamma + 1)`,
    /// within [`RELATIVE_ACCURACY`] of every value in the bucket.
    pub fn bucket_value(index: i32) -> f64 {
        // Computed in log space so the topmost bucket does not overflow.
        (f64::from(index) * LN_GAMMA + LN_REPRESENTATIVE_OFFSET).exp()
    }

    /// The `q`-quantile: the representative value of the bucket holding the
    /// sample element of 0-based rank `floor(q * (count - 1))` in sorted
    /// order (the lower empirical quantile). `None` when empty or when `q`
    /// is not in `[0, 1]`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        // The float-to-int cast saturates; q <= 1 keeps it below count anyway.
        let rank = (q * (self.count - 1) as f64).floor() as u64;
        if rank < self.zero_count {
            return Some(0.0);
        }
        let mut seen = self.zero_count;
        let mut last = None;
        for (&index, &c) in &self.buckets {
            seen = seen.saturating_add(c);
            last = Some(index);
            if seen > rank {
                break;
            }
        }
        // `last` is the bucket holding the rank (counts are validated to add
        // up, so the loop only runs out on the final bucket).
        Some(last.map_or(0.0, Self::bucket_value))
    }

    /// Exact sum of two sketches (e.g. two pods).
    pub fn merge(&self, other: &Self) -> Result<Self, StatsError> {
        let add = |a: u64, b: u64, counter: &'static str| {
            a.checked_add(b)
                .ok_or(StatsError::CounterOverflow { counter })
        };
        let mut buckets = self.buckets.clone();
        for (&index, &c) in &other.buckets {
            let slot = buckets.entry(index).or_insert(0);
            *slot = add(*slot, c, "buckets")?;
        }
        Ok(LatencySketch {
            zero_count: add(self.zero_count, other.zero_count, "zeroCount")?,
            buckets,
            count: add(self.count, other.count, "count")?,
            invalid: add(self.invalid, other.invalid, "invalid")?,
            sum: self.sum + other.sum,
        })
    }

    /// What was recorded since `earlier`, a previous snapshot of this same
    /// cumulative sketch. Fails with [`StatsError::CounterWentBackwards`] if
    /// any bucket or counter decreased, which means the source restarted.
    pub fn delta(&self, earlier: &Self) -> Result<Self, StatsError> {
        let sub = |later: u64, before: u64, counter: &'static str| {
            later
                .checked_sub(before)
                .ok_or(StatsError::CounterWentBackwards { counter })
        };
        let mut buckets = self.buckets.clone();
        for (&index, &before) in &earlier.buckets {
            let later = buckets.get(&index).copied().unwrap_or(0);
            let remaining = sub(later, before, "buckets")?;
            if remaining == 0 {
                buckets.remove(&index);
            } else {
                buckets.insert(index, remaining);
            }
        }
        let count = sub(self.count, earlier.count, "count")?;
        Ok(LatencySketch {
            zero_count: sub(self.zero_count, earlier.zero_count, "zeroCount")?,
            buckets,
            count,
            invalid: sub(self.invalid, earlier.invalid, "invalid")?,
            // An empty window has exactly zero sum, not rounding residue.
            sum: if count == 0 {
                0.0
            } else {
                self.sum - earlier.sum
            },
        })
    }

    /// Counts of `self` and `other` over the union of their buckets, in
    /// increasing latency order with the zero bucket first, ready for
    /// [`mann_whitney_greater`](super::two_sample::mann_whitney_greater).
    pub fn aligned_counts(&self, other: &Self) -> (Vec<u64>, Vec<u64>) {
        let mut mine = vec![self.zero_count];
        let mut theirs = vec![other.zero_count];
        let mut left = self.buckets.iter().peekable();
        let mut right = other.buckets.iter().peekable();
        loop {
            let (a, b) = match (left.peek(), right.peek()) {
                (None, None) => break,
                (Some(&(_, &a)), None) => {
                    left.next();
                    (a, 0)
                }
                (None, Some(&(_, &b))) => {
                    right.next();
                    (0, b)
                }
                (Some(&(&i, &a)), Some(&(&j, &b))) => match i.cmp(&j) {
                    std::cmp::Ordering::Less => {
                        left.next();
                        (a, 0)
                    }
                    std::cmp::Ordering::Greater => {
                        right.next();
                        (0, b)
                    }
                    std::cmp::Ordering::Equal => {
                        left.next();
                        right.next();
                        (a, b)
                    }
                },
            };
            mine.push(a);
            theirs.push(b);
        }
        (mine, theirs)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::stats::test_support::{SplitMix64, assert_rel};

    /// Allowed relative error: the design bound plus float rounding at bucket
    /// boundaries.
    const TOLERANCE: f64 = RELATIVE_ACCURACY + 1e-12;

    fn sketch_of(values: &[f64]) -> LatencySketch {
        let mut s = LatencySketch::new();
        values.iter().for_each(|&v| s.record(v));
        s
    }

    #[test]
    fn pinned_constants_match_their_definitions() {
        assert_rel(LN_GAMMA, GAMMA.ln(), 1e-15);
        assert_rel(
            LN_REPRESENTATIVE_OFFSET,
            (1.0 - RELATIVE_ACCURACY).ln(),
            1e-15,
        );
        // Same quantity; `2 / (gamma + 1)` itself carries a rounding error.
        assert_rel(LN_REPRESENTATIVE_OFFSET, (2.0 / (GAMMA + 1.0)).ln(), 1e-13);
    }

    #[test]
    fn bucket_value_is_the_documented_representative() {
        for index in [-1036, -500, -1, 0, 1, 7, 345, 20_000] {
            // powf, not powi: repeated multiplication drifts for large indices.
            let expected = 2.0 * GAMMA.powf(f64::from(index)) / (GAMMA + 1.0);
            assert_rel(LatencySketch::bucket_value(index), expected, 1e-12);
        }
        // The topmost bucket (holding f64::MAX) stays finite.
        let top = bucket_index(f64::MAX);
        assert!(LatencySketch::bucket_value(top).is_finite());
        assert_rel(LatencySketch::bucket_value(top), f64::MAX, TOLERANCE);
    }

    #[test]
    fn every_value_is_within_the_relative_accuracy_of_its_bucket() {
        let mut rng = SplitMix64(7);
        for _ in 0..100_000 {
            // Log-uniform over 1 ns .. 1e6 s, plus exact bucket boundaries.
            let x = (rng.next_open01() * 34.5 - 20.7).exp();
            let i = bucket_index(x);
            assert_rel(LatencySketch::bucket_value(i), x, TOLERANCE);
            let boundary = GAMMA.powi(i);
            assert_rel(
                LatencySketch::bucket_value(bucket_index(boundary)),
                boundary,
                TOLERANCE,
            );
        }
    }

    /// Checks every percentile and a few tail quantiles against the exact
    /// lower empirical quantile `sorted[floor(q * (n - 1))]`.
    fn check_quantiles(name: &str, mut values: Vec<f64>) {
        let sketch = sketch_of(&values);
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let qs = (0..=100)
            .map(|p| f64::from(p) / 100.0)
            .chain([0.001, 0.995, 0.999, 0.9999]);
        for q in qs {
            let exact = values[(q * (n - 1) as f64).floor() as usize];
            let estimate = sketch.quantile(q).unwrap();
            let err = (estimate - exact).abs() / exact;
            assert!(
                err <= TOLERANCE,
                "{name}: q={q} exact={exact} estimate={estimate} err={err}"
            );
        }
    }

    #[test]
    fn quantiles_are_within_one_percent_for_several_distributions() {
        let mut rng = SplitMix64(42);
        let n = 20_000;
        let mut draw = |f: &dyn Fn(&mut SplitMix64) -> f64| -> Vec<f64> {
            (0..n).map(|_| f(&mut rng)).collect()
        };
        let uniform = draw(&|r| 0.001 + r.next_open01() * 2.0);
        let exponential = draw(&|r| -0.05 * r.next_open01().ln());
        let lognormal = draw(&|r| (-3.0 + 1.5 * r.next_normal()).exp());
        let pareto = draw(&|r| 0.01 * r.next_open01().powf(-1.0 / 1.2));
        let bimodal = draw(&|r| {
            if r.next_u64() % 10 == 0 {
                2.0 + r.next_normal().abs()
            } else {
                0.02 + 0.002 * r.next_normal().abs()
            }
        });
        let discrete = draw(&|r| [0.001, 0.01, 0.1, 1.0][(r.next_u64() % 4) as usize]);
        for (name, values) in [
            ("uniform", uniform),
            ("exponential", exponential),
            ("lognormal", lognormal),
            ("pareto", pareto),
            ("bimodal", bimodal),
            ("discrete", discrete),
        ] {
            check_quantiles(name, values);
        }
    }

    #[test]
    fn zero_bucket_invalid_values_and_empty_sketches() {
        let mut s = LatencySketch::new();
        assert_eq!(s.quantile(0.5), None);
        assert_eq!(s.mean(), None);
        for v in [f64::NAN, f64::INFINITY, -0.001, f64::NEG_INFINITY] {
            s.record(v);
        }
        assert_eq!((s.count(), s.invalid()), (0, 4));
        s.record(0.0);
        s.record(MIN_INDEXABLE_SECONDS);
        s.record(2.0);
        assert_eq!((s.count(), s.zero_count()), (3, 2));
        assert_eq!(s.quantile(0.0), Some(0.0));
        assert_eq!(s.quantile(0.5), Some(0.0));
        assert_rel(s.quantile(1.0).unwrap(), 2.0, TOLERANCE);
        for q in [f64::NAN, -0.1, 1.5, f64::INFINITY] {
            assert_eq!(s.quantile(q), None);
        }
        assert_rel(
            s.mean().unwrap(),
            (2.0 + MIN_INDEXABLE_SECONDS) / 3.0,
            1e-12,
        );
        let single = sketch_of(&[f64::MAX]);
        assert!(single.quantile(0.5).unwrap().is_finite());
    }

    #[test]
    fn merge_delta_and_restart_detection() {
        let a = sketch_of(&[0.001, 0.002, 0.5, 0.0]);
        let b = sketch_of(&[0.002, 3.0, f64::NAN]);
        let merged = a.merge(&b).unwrap();
        assert_eq!(
            merged,
            sketch_of(&[0.001, 0.002, 0.5, 0.0, 0.002, 3.0, f64::NAN])
        );
        assert_eq!(merged.delta(&a).unwrap(), b);
        assert_eq!(merged.delta(&merged).unwrap(), LatencySketch::new());
        assert_eq!(
            b.delta(&a),
            Err(StatsError::CounterWentBackwards { counter: "buckets" })
        );
        assert!(matches!(
            LatencySketch::new().delta(&sketch_of(&[0.0])),
            Err(StatsError::CounterWentBackwards { .. })
        ));
    }

    #[test]
    fn aligned_counts_cover_the_union_of_buckets() {
        let a = sketch_of(&[0.0, 0.001, 0.001, 1.0]);
        let b = sketch_of(&[0.01, 1.0, 1.0, 5.0]);
        let (left, right) = a.aligned_counts(&b);
        assert_eq!(left, vec![1, 2, 0, 1, 0]);
        assert_eq!(right, vec![0, 0, 1, 2, 1]);
        let (left, right) = LatencySketch::new().aligned_counts(&LatencySketch::new());
        assert_eq!((left, right), (vec![0], vec![0]));
    }

    #[test]
    fn serialises_sparsely_and_round_trips() {
        let s = sketch_of(&[0.0, 1.0, 1.0]);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"zeroCount":1,"buckets":{"0":2},"count":3,"invalid":0,"sum":2.0}"#
        );
        assert_eq!(serde_json::from_str::<LatencySketch>(&json).unwrap(), s);
        assert_eq!(s.buckets().collect::<Vec<_>>(), vec![(0, 2)]);
        assert_eq!(s.sum(), 2.0);
        let parse = |json: &str| serde_json::from_str::<LatencySketch>(json);
        // Zero-count buckets are dropped so equal sketches compare equal.
        let with_empty =
            parse(r#"{"zeroCount":1,"buckets":{"0":2,"5":0},"count":3,"invalid":0,"sum":2.0}"#);
        assert_eq!(with_empty.unwrap(), s);
        for bad in [
            r#"{"zeroCount":1,"buckets":{"0":2},"count":4,"invalid":0,"sum":2.0}"#,
            r#"{"zeroCount":0,"buckets":{"99999":1},"count":1,"invalid":0,"sum":2.0}"#,
            r#"{"zeroCount":0,"buckets":{"-2000":1},"count":1,"invalid":0,"sum":2.0}"#,
            r#"{"zeroCount":18446744073709551615,"buckets":{"1":1},"count":0,"invalid":0,"sum":0}"#,
            r#"{"zeroCount":0,"buckets":{"x":1},"count":1,"invalid":0,"sum":0}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn merge_reports_overflow() {
        let full = serde_json::from_str::<LatencySketch>(
            r#"{"zeroCount":0,"buckets":{"0":18446744073709551615},"count":18446744073709551615,"invalid":0,"sum":0}"#,
        )
        .unwrap();
        assert!(matches!(
            full.merge(&sketch_of(&[1.0])),
            Err(StatsError::CounterOverflow { .. })
        ));
    }

    fn latency() -> impl Strategy<Value = f64> {
        prop_oneof![
            8 => 1e-6..100.0f64,
            1 => Just(0.0),
            1 => Just(f64::NAN),
        ]
    }

    /// Buckets and counters exactly; the float sum up to rounding.
    fn assert_same(a: &LatencySketch, b: &LatencySketch) {
        assert_eq!(
            (&a.buckets, a.zero_count, a.count, a.invalid),
            (&b.buckets, b.zero_count, b.count, b.invalid)
        );
        assert!((a.sum - b.sum).abs() <= 1e-9 * (1.0 + a.sum.abs()));
    }

    proptest! {
        #[test]
        fn merge_is_commutative_and_associative(
            a in prop::collection::vec(latency(), 0..80),
            b in prop::collection::vec(latency(), 0..80),
            c in prop::collection::vec(latency(), 0..80),
        ) {
            let (a, b, c) = (sketch_of(&a), sketch_of(&b), sketch_of(&c));
            assert_same(&a.merge(&b).unwrap(), &b.merge(&a).unwrap());
            assert_same(
                &a.merge(&b).unwrap().merge(&c).unwrap(),
                &a.merge(&b.merge(&c).unwrap()).unwrap(),
            );
        }

        #[test]
        fn delta_undoes_merge(
            a in prop::collection::vec(latency(), 0..80),
            b in prop::collection::vec(latency(), 0..80),
        ) {
            let (a, b) = (sketch_of(&a), sketch_of(&b));
            assert_same(&a.merge(&b).unwrap().delta(&a).unwrap(), &b);
        }

        #[test]
        fn quantiles_of_any_sample_are_within_bound(
            values in prop::collection::vec(1e-8..1e4f64, 1..200),
            q in 0.0..=1.0f64,
        ) {
            let sketch = sketch_of(&values);
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let exact = sorted[(q * (sorted.len() - 1) as f64).floor() as usize];
            let estimate = sketch.quantile(q).unwrap();
            prop_assert!((estimate - exact).abs() <= TOLERANCE * exact);
        }
    }
}
