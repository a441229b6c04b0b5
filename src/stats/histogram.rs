//! Per-feature histograms over a fixed bin layout.
//!
//! A layout is fixed when a model is deployed (from the reference profile, or
//! learned from the first rows), so histograms from different pods and
//! different scrapes line up bin for bin: merging is exact addition and a
//! window is the difference of two cumulative snapshots.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::StatsError;

/// Upper bound on the bins [`BinLayout::learn_numeric`] will produce, so a
/// careless argument cannot allocate without bound.
pub const MAX_LEARNED_BINS: usize = 1_000;

/// Above this many categories a hash map beats a linear scan of the names.
const CATEGORY_SCAN_LIMIT: usize = 16;

/// How observations are assigned to bins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum BinLayout {
    /// Numeric bins `(-inf, e0], (e0, e1], ..., (e_last, +inf)`: `edges.len() + 1` bins.
    Numeric {
        /// Finite, strictly increasing interior cut points.
        edges: Vec<f64>,
    },
    /// One bin per category, in the listed order, plus a final "other" bin.
    Categorical {
        /// Distinct category names.
        categories: Vec<String>,
    },
}

impl BinLayout {
    /// A numeric layout, checking that the edges are finite and strictly increasing.
    pub fn numeric(edges: Vec<f64>) -> Result<Self, StatsError> {
        let layout = BinLayout::Numeric { edges };
        layout.validate()?;
        Ok(layout)
    }

    /// A categorical layout, checking that no category is listed twice.
    pub fn categorical(categories: Vec<String>) -> Result<Self, StatsError> {
        let layout = BinLayout::Categorical { categories };
        layout.validate()?;
        Ok(layout)
    }

    /// Checks the invariants the constructors enforce; the variants are public
    /// (and deserialisable), so histograms re-check before trusting a layout.
    pub fn validate(&self) -> Result<(), StatsError> {
        match self {
            BinLayout::Numeric { edges } => {
                if edges.iter().any(|e| !e.is_finite()) {
                    return Err(StatsError::InvalidEdges {
                        reason: "edges must be finite",
                    });
                }
                if edges.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(StatsError::InvalidEdges {
                        reason: "edges must be strictly increasing",
                    });
                }
                Ok(())
            }
            BinLayout::Categorical { categories } => {
                let mut seen = std::collections::HashSet::with_capacity(categories.len());
                for name in categories {
                    if !seen.insert(name.as_str()) {
                        return Err(StatsError::DuplicateCategory(name.clone()));
                    }
                }
                Ok(())
            }
        }
    }

    /// Number of bins, including the open-ended or "other" bins.
    pub fn bin_count(&self) -> usize {
        match self {
            BinLayout::Numeric { edges } => edges.len() + 1,
            BinLayout::Categorical { categories } => categories.len() + 1,
        }
    }

    /// Whether this is a numeric layout.
    pub fn is_numeric(&self) -> bool {
        matches!(self, BinLayout::Numeric { .. })
    }

    /// Learns numeric edges at the `k / bins` quantiles (k = 1..bins) of the
    /// finite values in `values`, used when no reference profile exists.
    ///
    /// Quantiles use linear interpolation between order statistics (numpy's
    /// default `np.quantile`). Equal edges are collapsed, so heavily repeated
    /// values yield fewer bins. A constant sample `c` yields the single edge
    /// `[c]` (bins `(-inf, c]` and `(c, +inf)`); an empty sample (or one with
    /// no finite values) or `bins < 2` yields no edges, i.e. one bin that
    /// every value falls in, against which drift is always zero. `bins` is
    /// capped at [`MAX_LEARNED_BINS`]; NaN and infinities are ignored.
    pub fn learn_numeric(values: &[f64], bins: usize) -> Self {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let bins = bins.min(MAX_LEARNED_BINS);
        let mut edges: Vec<f64> = Vec::with_capacity(bins.saturating_sub(1));
        if !sorted.is_empty() {
            for k in 1..bins {
                let edge = interpolated_quantile(&sorted, k as f64 / bins as f64);
                // `-0.0 > 0.0` is false, so a signed zero would survive as a
                // "duplicate" edge that serialises differently; normalise it.
                let edge = if edge == 0.0 { 0.0 } else { edge };
                if edges.last().is_none_or(|&last| edge > last) {
                    edges.push(edge);
                }
            }
        }
        BinLayout::Numeric { edges }
    }
}

/// Quantile of a sorted, non-empty, finite sample by linear interpolation
/// between the order statistics at `(n - 1) * q` (Hyndman & Fan type 7).
fn interpolated_quantile(sorted: &[f64], q: f64) -> f64 {
    let position = sorted.len().saturating_sub(1) as f64 * q;
    let lower = position.floor() as usize;
    let fraction = position - lower as f64;
    match (sorted.get(lower), sorted.get(lower + 1)) {
        (Some(&a), Some(&b)) => a + (b - a) * fraction,
        (Some(&a), None) => a,
        // Unreachable for a non-empty slice and q in [0, 1]; fall back to the max.
        _ => sorted.last().copied().unwrap_or(0.0),
    }
}

/// Finds a category's bin without allocating: a scan for short lists, a
/// prebuilt map for long ones.
#[derive(Debug, Clone, PartialEq, Default)]
enum CategoryIndex {
    #[default]
    Scan,
    Map(HashMap<String, usize>),
}

impl CategoryIndex {
    fn build(layout: &BinLayout) -> Self {
        match layout {
            BinLayout::Categorical { categories } if categories.len() > CATEGORY_SCAN_LIMIT => {
                CategoryIndex::Map(
                    categories
                        .iter()
                        .enumerate()
                        .map(|(i, name)| (name.clone(), i))
                        .collect(),
                )
            }
            _ => CategoryIndex::Scan,
        }
    }
}

/// Cumulative counts of one feature's values over a [`BinLayout`], plus the
/// moments and data-quality counters reported next to drift scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "HistogramSnapshot")]
pub struct FeatureHistogram {
    layout: BinLayout,
    counts: Vec<u64>,
    count: u64,
    sum: f64,
    sum_sq: f64,
    missing: u64,
    non_finite: u64,
    type_mismatch: u64,
    #[serde(skip)]
    category_index: CategoryIndex,
}

/// The serialised form, checked before it becomes a [`FeatureHistogram`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistogramSnapshot {
    layout: BinLayout,
    counts: Vec<u64>,
    count: u64,
    sum: f64,
    sum_sq: f64,
    missing: u64,
    non_finite: u64,
    type_mismatch: u64,
}

impl TryFrom<HistogramSnapshot> for FeatureHistogram {
    type Error = StatsError;

    fn try_from(s: HistogramSnapshot) -> Result<Self, StatsError> {
        s.layout.validate()?;
        if s.counts.len() != s.layout.bin_count() {
            return Err(StatsError::InconsistentSnapshot {
                reason: "counts do not match the layout's bin count",
            });
        }
        if total(&s.counts) != Some(s.count) {
            return Err(StatsError::InconsistentSnapshot {
                reason: "count is not the sum of the bin counts",
            });
        }
        let category_index = CategoryIndex::build(&s.layout);
        Ok(FeatureHistogram {
            layout: s.layout,
            counts: s.counts,
            count: s.count,
            sum: s.sum,
            sum_sq: s.sum_sq,
            missing: s.missing,
            non_finite: s.non_finite,
            type_mismatch: s.type_mismatch,
            category_index,
        })
    }
}

fn total(counts: &[u64]) -> Option<u64> {
    counts.iter().try_fold(0u64, |acc, &c| acc.checked_add(c))
}

impl FeatureHistogram {
    /// An empty histogram over `layout` (validated first).
    pub fn new(layout: BinLayout) -> Result<Self, StatsError> {
        layout.validate()?;
        Ok(FeatureHistogram {
            counts: vec![0; layout.bin_count()],
            category_index: CategoryIndex::build(&layout),
            layout,
            count: 0,
            sum: 0.0,
            sum_sq: 0.0,
            missing: 0,
            non_finite: 0,
            type_mismatch: 0,
        })
    }

    /// A histogram from counts summarised elsewhere (a reference profile): `sum` and `sum_sq`
    /// are rebuilt from the mean and population standard deviation when given.
    pub fn from_counts(
        layout: BinLayout,
        counts: Vec<u64>,
        mean: Option<f64>,
        std_dev: Option<f64>,
    ) -> Result<Self, StatsError> {
        let count = total(&counts).ok_or(StatsError::InconsistentSnapshot {
            reason: "bin counts overflow",
        })?;
        let n = count as f64;
        let (sum, sum_sq) = match (mean, std_dev) {
            (Some(m), Some(s)) if m.is_finite() && s.is_finite() => (m * n, (s * s + m * m) * n),
            (Some(m), None) if m.is_finite() => (m * n, m * m * n),
            _ => (0.0, 0.0),
        };
        FeatureHistogram::try_from(HistogramSnapshot {
            layout,
            counts,
            count,
            sum,
            sum_sq,
            missing: 0,
            non_finite: 0,
            type_mismatch: 0,
        })
    }

    /// Records a numeric value: NaN and infinities go to `non_finite`, and a
    /// number seen by a categorical layout goes to `type_mismatch` (callers
    /// with numeric category codes should format them and use
    /// [`observe_category`](Self::observe_category)).
    #[inline]
    pub fn observe_number(&mut self, value: f64) {
        match &self.layout {
            BinLayout::Numeric { edges } => {
                if !value.is_finite() {
                    self.non_finite = self.non_finite.saturating_add(1);
                    return;
                }
                // First edge >= value is the bin whose upper bound is inclusive.
                let bin = edges.partition_point(|&edge| edge < value);
                if let Some(slot) = self.counts.get_mut(bin) {
                    *slot = slot.saturating_add(1);
                    self.count = self.count.saturating_add(1);
                    self.sum += value;
                    self.sum_sq += value * value;
                }
            }
            BinLayout::Categorical { .. } => {
                self.type_mismatch = self.type_mismatch.saturating_add(1);
            }
        }
    }

    /// Records a categorical value; unknown categories go to the "other" bin,
    /// and a string seen by a numeric layout goes to `type_mismatch`.
    #[inline]
    pub fn observe_category(&mut self, value: &str) {
        let BinLayout::Categorical { categories } = &self.layout else {
            self.type_mismatch = self.type_mismatch.saturating_add(1);
            return;
        };
        let found = match &self.category_index {
            CategoryIndex::Scan => categories.iter().position(|name| name == value),
            CategoryIndex::Map(map) => map.get(value).copied(),
        };
        let bin = found.unwrap_or(categories.len());
        if let Some(slot) = self.counts.get_mut(bin) {
            *slot = slot.saturating_add(1);
            self.count = self.count.saturating_add(1);
        }
    }

    /// Records a null or absent value.
    #[inline]
    pub fn observe_missing(&mut self) {
        self.missing = self.missing.saturating_add(1);
    }

    /// The bin layout.
    pub fn layout(&self) -> &BinLayout {
        &self.layout
    }

    /// Per-bin counts, aligned with the layout's bins.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Number of binned observations (finite numbers or categories).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the finite numeric values.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Sum of squares of the finite numeric values.
    pub fn sum_sq(&self) -> f64 {
        self.sum_sq
    }

    /// Null or absent values.
    pub fn missing(&self) -> u64 {
        self.missing
    }

    /// NaN or infinite numeric values.
    pub fn non_finite(&self) -> u64 {
        self.non_finite
    }

    /// Values of the wrong kind for the layout (a string for a numeric
    /// feature or a number for a categorical one).
    pub fn type_mismatch(&self) -> u64 {
        self.type_mismatch
    }

    /// Mean of the finite numeric values; `None` for categorical layouts, no
    /// values, or a sum that overflowed.
    pub fn mean(&self) -> Option<f64> {
        if !self.layout.is_numeric() || self.count == 0 {
            return None;
        }
        let mean = self.sum / self.count as f64;
        mean.is_finite().then_some(mean)
    }

    /// Population standard deviation (divides by n, like `numpy.std`) of the
    /// finite numeric values; `None` where [`mean`](Self::mean) is.
    ///
    /// Computed from `sum` and `sum_sq` so that it survives merge and delta.
    /// The subtraction cancels: the absolute error is roughly 1e-8 * |mean|
    /// (more for long streams), so a spread smaller than that, e.g. of a
    /// constant feature, reads as noise of that size. A slightly negative
    /// variance from rounding is reported as 0.
    pub fn std_dev(&self) -> Option<f64> {
        let mean = self.mean()?;
        let variance = (self.sum_sq / self.count as f64 - mean * mean).max(0.0);
        let std_dev = variance.sqrt();
        std_dev.is_finite().then_some(std_dev)
    }

    /// Exact sum of two histograms over the same layout (e.g. two pods).
    pub fn merge(&self, other: &Self) -> Result<Self, StatsError> {
        if self.layout != other.layout || self.counts.len() != other.counts.len() {
            return Err(StatsError::LayoutMismatch);
        }
        let add = |a: u64, b: u64, counter: &'static str| {
            a.checked_add(b)
                .ok_or(StatsError::CounterOverflow { counter })
        };
        let counts = self
            .counts
            .iter()
            .zip(&other.counts)
            .map(|(&a, &b)| add(a, b, "counts"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FeatureHistogram {
            layout: self.layout.clone(),
            counts,
            count: add(self.count, other.count, "count")?,
            sum: self.sum + other.sum,
            sum_sq: self.sum_sq + other.sum_sq,
            missing: add(self.missing, other.missing, "missing")?,
            non_finite: add(self.non_finite, other.non_finite, "nonFinite")?,
            type_mismatch: add(self.type_mismatch, other.type_mismatch, "typeMismatch")?,
            category_index: self.category_index.clone(),
        })
    }

    /// What was observed since `earlier`, a previous snapshot of this same
    /// cumulative histogram. Fails with [`StatsError::CounterWentBackwards`]
    /// if any counter decreased, which means the source restarted.
    pub fn delta(&self, earlier: &Self) -> Result<Self, StatsError> {
        if self.layout != earlier.layout || self.counts.len() != earlier.counts.len() {
            return Err(StatsError::LayoutMismatch);
        }
        let sub = |later: u64, earlier: u64, counter: &'static str| {
            later
                .checked_sub(earlier)
                .ok_or(StatsError::CounterWentBackwards { counter })
        };
        let counts = self
            .counts
            .iter()
            .zip(&earlier.counts)
            .map(|(&later, &before)| sub(later, before, "counts"))
            .collect::<Result<Vec<_>, _>>()?;
        let count = sub(self.count, earlier.count, "count")?;
        // Floating-point subtraction leaves residue; an empty window has
        // exactly zero moments, and a sum of squares is never negative.
        let (sum, sum_sq) = if count == 0 {
            (0.0, 0.0)
        } else {
            (
                self.sum - earlier.sum,
                (self.sum_sq - earlier.sum_sq).max(0.0),
            )
        };
        Ok(FeatureHistogram {
            layout: self.layout.clone(),
            counts,
            count,
            sum,
            sum_sq,
            missing: sub(self.missing, earlier.missing, "missing")?,
            non_finite: sub(self.non_finite, earlier.non_finite, "nonFinite")?,
            type_mismatch: sub(self.type_mismatch, earlier.type_mismatch, "typeMismatch")?,
            category_index: self.category_index.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::stats::test_support::assert_rel;

    fn numeric(edges: &[f64]) -> FeatureHistogram {
        FeatureHistogram::new(BinLayout::Numeric {
            edges: edges.to_vec(),
        })
        .unwrap()
    }

    fn categorical(names: &[&str]) -> FeatureHistogram {
        let categories = names.iter().map(|s| s.to_string()).collect();
        FeatureHistogram::new(BinLayout::categorical(categories).unwrap()).unwrap()
    }

    #[test]
    fn numeric_bins_are_closed_on_the_right() {
        let mut h = numeric(&[0.0, 1.0, 2.5]);
        for v in [-5.0, 0.0, 1e-12, 1.0, 2.5, 2.5000001, 1e300] {
            h.observe_number(v);
        }
        assert_eq!(h.counts(), &[2, 2, 1, 2]);
        assert_eq!(h.count(), 7);
    }

    #[test]
    fn non_finite_missing_and_mismatched_values_are_counted_apart() {
        let mut h = numeric(&[0.0]);
        h.observe_number(f64::NAN);
        h.observe_number(f64::INFINITY);
        h.observe_number(f64::NEG_INFINITY);
        h.observe_missing();
        h.observe_category("a string");
        assert_eq!(h.counts(), &[0, 0]);
        assert_eq!(
            (h.count(), h.non_finite(), h.missing(), h.type_mismatch()),
            (0, 3, 1, 1)
        );
        assert_eq!((h.sum(), h.sum_sq()), (0.0, 0.0));
        assert_eq!(h.mean(), None);
        assert_eq!(h.std_dev(), None);
    }

    #[test]
    fn categories_and_other_bin() {
        let mut h = categorical(&["cat", "dog"]);
        for v in ["dog", "cat", "dog", "emu", ""] {
            h.observe_category(v);
        }
        h.observe_number(1.0);
        assert_eq!(h.counts(), &[1, 2, 2]);
        assert_eq!((h.count(), h.type_mismatch()), (5, 1));
        assert_eq!(h.mean(), None, "categorical features have no mean");
    }

    #[test]
    fn many_categories_use_the_map_and_agree_with_a_scan() {
        let names: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut h = categorical(&refs);
        assert!(matches!(h.category_index, CategoryIndex::Map(_)));
        for name in ["c0", "c39", "c17", "c17", "zzz"] {
            h.observe_category(name);
        }
        let mut expected = vec![0u64; 41];
        expected[0] = 1;
        expected[39] = 1;
        expected[17] = 2;
        expected[40] = 1;
        assert_eq!(h.counts(), expected.as_slice());
    }

    #[test]
    fn layouts_are_validated() {
        assert!(matches!(
            BinLayout::numeric(vec![0.0, 0.0]),
            Err(StatsError::InvalidEdges { .. })
        ));
        assert!(matches!(
            BinLayout::numeric(vec![1.0, 0.0]),
            Err(StatsError::InvalidEdges { .. })
        ));
        assert!(matches!(
            BinLayout::numeric(vec![0.0, f64::NAN]),
            Err(StatsError::InvalidEdges { .. })
        ));
        assert!(matches!(
            BinLayout::numeric(vec![f64::NEG_INFINITY]),
            Err(StatsError::InvalidEdges { .. })
        ));
        assert_eq!(
            BinLayout::categorical(vec!["a".into(), "b".into(), "a".into()]),
            Err(StatsError::DuplicateCategory("a".into()))
        );
        // Public variants can bypass the constructor; the histogram re-checks.
        let bad = BinLayout::Numeric {
            edges: vec![2.0, 1.0],
        };
        assert!(FeatureHistogram::new(bad).is_err());
        assert_eq!(BinLayout::numeric(vec![]).unwrap().bin_count(), 1);
        assert_eq!(
            BinLayout::categorical(vec!["x".into()])
                .unwrap()
                .bin_count(),
            2
        );
    }

    const SAMPLE: [f64; 12] = [
        3.1, -2.0, 0.5, 7.25, 4.0, 4.0, 1.5, 9.0, -0.75, 2.2, 6.6, 5.1,
    ];

    #[test]
    fn learned_edges_match_numpy_quantiles() {
        let layout = BinLayout::learn_numeric(&SAMPLE, 4);
        let BinLayout::Numeric { edges } = layout else {
            panic!("numeric layout expected");
        };
        // numpy.quantile(SAMPLE, [0.25, 0.5, 0.75]) (linear interpolation)
        let expected = [1.25, 3.55, 5.475];
        assert_eq!(edges.len(), 3);
        for (e, x) in edges.iter().zip(expected) {
            assert_rel(*e, x, 1e-12);
        }
    }

    #[test]
    fn learned_edges_for_degenerate_samples() {
        let edges_of = |values: &[f64], bins| match BinLayout::learn_numeric(values, bins) {
            BinLayout::Numeric { edges } => edges,
            BinLayout::Categorical { .. } => panic!("numeric layout expected"),
        };
        assert_eq!(edges_of(&[], 10), Vec::<f64>::new());
        assert_eq!(edges_of(&[f64::NAN, f64::INFINITY], 10), Vec::<f64>::new());
        assert_eq!(edges_of(&[7.0; 50], 10), vec![7.0]);
        assert_eq!(edges_of(&SAMPLE, 0), Vec::<f64>::new());
        assert_eq!(edges_of(&SAMPLE, 1), Vec::<f64>::new());
        // Repeated values collapse equal quantiles into one edge.
        assert_eq!(edges_of(&[1.0, 1.0, 1.0, 1.0, 1.0, 2.0], 4), vec![1.0]);
        // A negative zero edge is normalised so it serialises as 0.
        let edges = edges_of(&[-0.0], 4);
        assert_eq!(edges, vec![0.0]);
        assert!(edges[0].is_sign_positive());
        // A silly bin count is capped rather than allocating without bound.
        let many: Vec<f64> = (0..5_000).map(f64::from).collect();
        assert_eq!(edges_of(&many, usize::MAX).len(), MAX_LEARNED_BINS - 1);
        // Whatever the input, the learned layout is valid.
        assert!(
            BinLayout::learn_numeric(&[3.0, 1.0, f64::NAN, 2.0], 7)
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn mean_and_std_match_numpy() {
        let mut h = numeric(&[0.0, 5.0]);
        SAMPLE.iter().for_each(|&v| h.observe_number(v));
        assert_rel(h.mean().unwrap(), 3.375, 1e-12); // numpy.mean(SAMPLE)
        assert_rel(h.std_dev().unwrap(), 3.161717623908456, 1e-12); // numpy.std(SAMPLE)
    }

    #[test]
    fn std_of_a_constant_is_zero_not_nan() {
        let mut h = numeric(&[]);
        (0..10).for_each(|_| h.observe_number(0.1));
        // Cancellation noise stays at the documented ~1e-8 * |mean| level.
        let std_dev = h.std_dev().unwrap();
        assert!(std_dev <= 1e-7 * 0.1, "{std_dev}");
        let mut exact = numeric(&[]);
        (0..10).for_each(|_| exact.observe_number(0.5));
        assert_eq!(exact.std_dev(), Some(0.0));
    }

    #[test]
    fn overflowing_moments_give_none() {
        let mut h = numeric(&[]);
        h.observe_number(f64::MAX);
        h.observe_number(f64::MAX);
        assert_eq!(h.count(), 2);
        assert_eq!(h.mean(), None);
        assert_eq!(h.std_dev(), None);
    }

    #[test]
    fn merge_adds_and_rejects_other_layouts() {
        let mut a = numeric(&[1.0]);
        let mut b = numeric(&[1.0]);
        a.observe_number(0.5);
        a.observe_missing();
        b.observe_number(2.0);
        b.observe_number(f64::NAN);
        let m = a.merge(&b).unwrap();
        assert_eq!(m.counts(), &[1, 1]);
        assert_eq!((m.count(), m.missing(), m.non_finite()), (2, 1, 1));
        assert_eq!((m.sum(), m.sum_sq()), (2.5, 4.25));
        assert_eq!(a.merge(&numeric(&[2.0])), Err(StatsError::LayoutMismatch));
        assert_eq!(a.merge(&categorical(&[])), Err(StatsError::LayoutMismatch));
    }

    #[test]
    fn merge_reports_overflow() {
        let json = r#"{"layout":{"kind":"numeric","edges":[]},"counts":[18446744073709551615],
            "count":18446744073709551615,"sum":0,"sumSq":0,"missing":0,"nonFinite":0,"typeMismatch":0}"#;
        let full: FeatureHistogram = serde_json::from_str(json).unwrap();
        let mut one = numeric(&[]);
        one.observe_number(1.0);
        assert_eq!(
            full.merge(&one),
            Err(StatsError::CounterOverflow { counter: "counts" })
        );
        // Per-value updates saturate instead of panicking.
        let mut full = full;
        full.observe_number(1.0);
        assert_eq!(full.count(), u64::MAX);
    }

    #[test]
    fn delta_is_the_window_and_detects_restarts() {
        let mut h = numeric(&[1.0]);
        h.observe_number(0.25);
        let earlier = h.clone();
        h.observe_number(3.0);
        h.observe_missing();
        let window = h.delta(&earlier).unwrap();
        assert_eq!(window.counts(), &[0, 1]);
        assert_eq!((window.count(), window.missing()), (1, 1));
        assert_eq!(window.mean(), Some(3.0));

        let restarted = numeric(&[1.0]);
        assert_eq!(
            restarted.delta(&earlier),
            Err(StatsError::CounterWentBackwards { counter: "counts" })
        );
        assert_eq!(h.delta(&numeric(&[2.0])), Err(StatsError::LayoutMismatch));
    }

    #[test]
    fn empty_window_has_exactly_zero_moments() {
        let mut h = numeric(&[]);
        h.observe_number(0.1);
        h.observe_number(0.2);
        let window = h.delta(&h).unwrap();
        assert_eq!(
            (window.count(), window.sum(), window.sum_sq()),
            (0, 0.0, 0.0)
        );
        assert_eq!(window.mean(), None);
    }

    #[test]
    fn serialises_as_camel_case_and_round_trips() {
        let mut h = categorical(&["a", "b"]);
        h.observe_category("b");
        h.observe_missing();
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "layout": {"kind": "categorical", "categories": ["a", "b"]},
                "counts": [0, 1, 0],
                "count": 1,
                "sum": 0.0,
                "sumSq": 0.0,
                "missing": 1,
                "nonFinite": 0,
                "typeMismatch": 0
            })
        );
        let back: FeatureHistogram = serde_json::from_value(json).unwrap();
        assert_eq!(back, h);

        let names: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
        let mut big = FeatureHistogram::new(BinLayout::categorical(names).unwrap()).unwrap();
        big.observe_category("k3");
        let mut back: FeatureHistogram =
            serde_json::from_str(&serde_json::to_string(&big).unwrap()).unwrap();
        assert_eq!(back, big, "the lookup map is rebuilt on deserialisation");
        back.observe_category("k19");
        assert_eq!(back.counts()[19], 1);
    }

    #[test]
    fn inconsistent_snapshots_are_rejected() {
        let parse = |json: &str| serde_json::from_str::<FeatureHistogram>(json);
        let tail = r#""sum":0,"sumSq":0,"missing":0,"nonFinite":0,"typeMismatch":0"#;
        let wrong_len = format!(
            r#"{{"layout":{{"kind":"numeric","edges":[1.0]}},"counts":[1],"count":1,{tail}}}"#
        );
        let wrong_count = format!(
            r#"{{"layout":{{"kind":"numeric","edges":[1.0]}},"counts":[1,1],"count":3,{tail}}}"#
        );
        let bad_edges = format!(
            r#"{{"layout":{{"kind":"numeric","edges":[2.0,1.0]}},"counts":[0,0,0],"count":0,{tail}}}"#
        );
        let dup = format!(
            r#"{{"layout":{{"kind":"categorical","categories":["a","a"]}},"counts":[0,0,0],"count":0,{tail}}}"#
        );
        for json in [wrong_len, wrong_count, bad_edges, dup] {
            assert!(parse(&json).is_err(), "{json}");
        }
        assert!(parse("{}").is_err());
    }

    /// Observations drawn from the interesting classes of input.
    fn observation() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![
            8 => (-1e3..1e3f64).prop_map(Some),
            1 => Just(Some(f64::NAN)),
            1 => Just(Some(f64::INFINITY)),
            1 => Just(None),
        ]
    }

    fn histogram_of(values: &[Option<f64>]) -> FeatureHistogram {
        let mut h = numeric(&[-100.0, 0.0, 10.0, 500.0]);
        for v in values {
            match v {
                Some(x) => h.observe_number(*x),
                None => h.observe_missing(),
            }
        }
        h
    }

    /// Counters must match exactly; float sums only up to rounding.
    fn assert_same(a: &FeatureHistogram, b: &FeatureHistogram) {
        assert_eq!(a.counts(), b.counts());
        assert_eq!(
            (a.count(), a.missing(), a.non_finite(), a.type_mismatch()),
            (b.count(), b.missing(), b.non_finite(), b.type_mismatch())
        );
        let scale = 1.0 + a.sum_sq().abs() + b.sum_sq().abs();
        assert!((a.sum() - b.sum()).abs() <= 1e-9 * scale);
        assert!((a.sum_sq() - b.sum_sq()).abs() <= 1e-9 * scale);
    }

    proptest! {
        #[test]
        fn merge_is_commutative_and_associative(
            a in prop::collection::vec(observation(), 0..60),
            b in prop::collection::vec(observation(), 0..60),
            c in prop::collection::vec(observation(), 0..60),
        ) {
            let (a, b, c) = (histogram_of(&a), histogram_of(&b), histogram_of(&c));
            assert_same(&a.merge(&b).unwrap(), &b.merge(&a).unwrap());
            assert_same(
                &a.merge(&b).unwrap().merge(&c).unwrap(),
                &a.merge(&b.merge(&c).unwrap()).unwrap(),
            );
        }

        #[test]
        fn delta_undoes_merge(
            a in prop::collection::vec(observation(), 0..60),
            b in prop::collection::vec(observation(), 0..60),
        ) {
            let (a, b) = (histogram_of(&a), histogram_of(&b));
            assert_same(&a.merge(&b).unwrap().delta(&a).unwrap(), &b);
        }

        #[test]
        fn merging_equals_observing_everything(
            a in prop::collection::vec(observation(), 0..60),
            b in prop::collection::vec(observation(), 0..60),
        ) {
            let all: Vec<_> = a.iter().chain(&b).copied().collect();
            assert_same(&histogram_of(&a).merge(&histogram_of(&b)).unwrap(), &histogram_of(&all));
        }
    }

    /// Rough cost of the per-value update; run with
    /// `cargo test --release -- --ignored --nocapture observe_cost`.
    #[test]
    #[ignore = "timing, not a correctness check"]
    fn observe_cost() {
        use std::hint::black_box;
        use std::time::Instant;
        let edges: Vec<f64> = (0..20).map(|i| f64::from(i) * 5.0).collect();
        let mut h = numeric(&edges);
        let values: Vec<f64> = (0..1024).map(|i| f64::from(i % 113) * 0.9).collect();
        let rounds = 10_000;
        let start = Instant::now();
        for _ in 0..rounds {
            for &v in &values {
                h.observe_number(black_box(v));
            }
        }
        let per_number = start.elapsed().as_nanos() as f64 / (rounds * values.len()) as f64;
        let names: Vec<String> = (0..10).map(|i| format!("category-{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let many: Vec<String> = (0..200).map(|i| format!("category-{i}")).collect();
        let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let mut per_category = Vec::new();
        for layout in [&refs, &many_refs] {
            let mut c = categorical(layout);
            let start = Instant::now();
            for _ in 0..rounds {
                for name in &refs {
                    c.observe_category(black_box(name));
                }
            }
            per_category.push(start.elapsed().as_nanos() as f64 / (rounds * refs.len()) as f64);
        }
        println!(
            "observe_number: {per_number:.1} ns, observe_category (10 / 200 categories): {per_category:.1?} ns"
        );
        black_box((h, per_category));
    }
}
