//! Drift measures between a reference and a current binned distribution.
//!
//! Inputs are bin counts over one shared layout (see
//! [`FeatureHistogram`]). Every function rejects
//! empty or misaligned inputs with an error, so no NaN reaches a report.

use std::fmt;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF};

use super::StatsError;
use super::histogram::{BinLayout, FeatureHistogram};
use super::kolmogorov::kolmogorov_sf;

/// PSI smoothing: a bin proportion of exactly zero is replaced by this value
/// (the other proportions are left as they are), so an empty bin on either
/// side contributes a large but finite term instead of infinity.
pub const PSI_EPSILON: f64 = 1e-4;

/// A drift measure that [`score`] can compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DriftMethod {
    /// Population stability index, see [`psi`].
    Psi,
    /// Kolmogorov–Smirnov statistic with asymptotic p-value, see [`ks`].
    Ks,
    /// Jensen–Shannon distance (base 2), see [`jensen_shannon`].
    JensenShannon,
    /// Normalised earth mover's distance, see [`wasserstein`].
    Wasserstein,
    /// Chi-square test of homogeneity, see [`chi_square`].
    ChiSquare,
}

impl DriftMethod {
    /// The camelCase name used in reports and configuration.
    pub fn name(self) -> &'static str {
        match self {
            DriftMethod::Psi => "psi",
            DriftMethod::Ks => "ks",
            DriftMethod::JensenShannon => "jensenShannon",
            DriftMethod::Wasserstein => "wasserstein",
            DriftMethod::ChiSquare => "chiSquare",
        }
    }

    /// Whether the method relies on bin order, which categories lack.
    pub fn needs_numeric_layout(self) -> bool {
        matches!(self, DriftMethod::Ks | DriftMethod::Wasserstein)
    }
}

impl fmt::Display for DriftMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One drift measurement as it appears in a report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftScore {
    /// The measure used.
    pub method: DriftMethod,
    /// The measure's value (for tests, the statistic); always finite.
    pub value: f64,
    /// p-value, for methods that are hypothesis tests (KS, chi-square).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
}

/// Kolmogorov–Smirnov statistic and p-value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KsResult {
    /// Largest absolute difference between the binned CDFs.
    pub statistic: f64,
    /// Asymptotic two-sided p-value.
    pub p_value: f64,
}

/// Chi-square test of homogeneity result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChiSquare {
    /// Pearson's statistic.
    pub statistic: f64,
    /// Degrees of freedom: bins non-empty in either sample, minus one.
    pub dof: u64,
    /// Upper-tail probability of the statistic under chi-square(dof).
    pub p_value: f64,
}

/// Checks alignment and returns the totals as floats (exact below 2^53).
fn totals(reference: &[u64], current: &[u64]) -> Result<(f64, f64), StatsError> {
    if reference.len() != current.len() {
        return Err(StatsError::LengthMismatch {
            reference: reference.len(),
            current: current.len(),
        });
    }
    let sum = |counts: &[u64]| counts.iter().map(|&c| c as f64).sum::<f64>();
    let (n, m) = (sum(reference), sum(current));
    if n == 0.0 {
        return Err(StatsError::Empty { which: "reference" });
    }
    if m == 0.0 {
        return Err(StatsError::Empty { which: "current" });
    }
    Ok((n, m))
}

/// Population stability index `sum((c_i - r_i) * ln(c_i / r_i))` over bin
/// proportions, with zero proportions replaced by [`PSI_EPSILON`].
pub fn psi(reference: &[u64], current: &[u64]) -> Result<f64, StatsError> {
    let (n, m) = totals(reference, current)?;
    let smooth = |p: f64| if p == 0.0 { PSI_EPSILON } else { p };
    Ok(reference
        .iter()
        .zip(current)
        .map(|(&r, &c)| {
            let (r, c) = (smooth(r as f64 / n), smooth(c as f64 / m));
            (c - r) * (c / r).ln()
        })
        .sum())
}

/// Kolmogorov–Smirnov statistic between the binned CDFs, with the
/// asymptotic p-value `Q_KS(sqrt(n m / (n + m)) * D)` (scipy's
/// `kstwobign.sf`).
///
/// Binning makes this approximate: the CDFs are only compared at bin
/// boundaries, so the statistic is a lower bound of the raw-sample one, and
/// the p-value (derived for continuous, tie-free data) is conservative for
/// coarse bins. It is the limiting distribution, not scipy `ks_2samp`'s
/// finite-n `kstwo`, so the two agree only for large samples.
pub fn ks(reference: &[u64], current: &[u64]) -> Result<KsResult, StatsError> {
    let (n, m) = totals(reference, current)?;
    let (mut cum_r, mut cum_c, mut statistic) = (0.0, 0.0, 0.0f64);
    for (&r, &c) in reference.iter().zip(current) {
        cum_r += r as f64;
        cum_c += c as f64;
        statistic = statistic.max((cum_r / n - cum_c / m).abs());
    }
    let effective_n = n * m / (n + m);
    Ok(KsResult {
        statistic,
        p_value: kolmogorov_sf(effective_n.sqrt() * statistic),
    })
}

/// Jensen–Shannon distance with base-2 logarithms: the square root of the
/// divergence, in `[0, 1]` (scipy's `jensenshannon(p, q, base=2)`).
pub fn jensen_shannon(reference: &[u64], current: &[u64]) -> Result<f64, StatsError> {
    let (n, m) = totals(reference, current)?;
    // x ln(x / y), with the 0 ln 0 = 0 convention.
    let rel_entr = |x: f64, y: f64| if x > 0.0 { x * (x / y).ln() } else { 0.0 };
    let divergence = reference
        .iter()
        .zip(current)
        .map(|(&r, &c)| {
            let (p, q) = (r as f64 / n, c as f64 / m);
            let mid = (p + q) / 2.0;
            rel_entr(p, mid) + rel_entr(q, mid)
        })
        .sum::<f64>()
        / (2.0 * std::f64::consts::LN_2);
    // Rounding can push an identical pair a hair below zero.
    Ok(divergence.max(0.0).sqrt().min(1.0))
}

/// Representative positions of a numeric layout's bins, used by
/// [`wasserstein`]: interior bins at their midpoints, and each unbounded
/// outer bin one neighbouring-bin width beyond the outermost edge
/// (`e0 - (e1 - e0)` and `e_last + (e_last - e_prev)`). With a single edge
/// there is no neighbouring width and the outer bins sit at `e0 -/+ 1`; with
/// no edges the single bin sits at 0.
pub fn bin_positions(edges: &[f64]) -> Result<Vec<f64>, StatsError> {
    BinLayout::numeric(edges.to_vec())?;
    let (Some(&first), Some(&last)) = (edges.first(), edges.last()) else {
        return Ok(vec![0.0]);
    };
    let width = |pair: Option<&[f64]>| pair.map_or(1.0, |w| w[1] - w[0]);
    let mut positions = Vec::with_capacity(edges.len() + 1);
    positions.push(first - width(edges.windows(2).next()));
    positions.extend(edges.windows(2).map(|w| f64::midpoint(w[0], w[1])));
    positions.push(last + width(edges.windows(2).last()));
    if positions.iter().any(|p| !p.is_finite()) {
        return Err(StatsError::NonFinite {
            what: "bin position",
        });
    }
    Ok(positions)
}

/// Wasserstein-1 (earth mover's) distance between the binned distributions
/// placed at [`bin_positions`]`(edges)`, divided by the reference's standard
/// deviation over those positions so it reads in "reference sigmas".
///
/// When the reference sits in a single bin (zero spread), it is divided by
/// the edge span `e_last - e0` instead, or by the position span (2) when
/// there is only one edge; with no edges the distance is 0.
pub fn wasserstein(reference: &[u64], current: &[u64], edges: &[f64]) -> Result<f64, StatsError> {
    let (n, m) = totals(reference, current)?;
    let positions = bin_positions(edges)?;
    if positions.len() != reference.len() {
        return Err(StatsError::InvalidArgument {
            name: "edges",
            reason: "must have one element fewer than the bin counts",
        });
    }
    // W1 = integral |F_r - F_c| dx; both CDFs are steps at the positions.
    let (mut cum_r, mut cum_c, mut distance) = (0.0, 0.0, 0.0);
    for ((&r, &c), gap) in reference
        .iter()
        .zip(current)
        .zip(positions.windows(2).map(|w| w[1] - w[0]))
    {
        cum_r += r as f64;
        cum_c += c as f64;
        distance += (cum_r / n - cum_c / m).abs() * gap;
    }
    let occupied = reference.iter().filter(|&&r| r > 0).count();
    // Test occupancy rather than std == 0: a single occupied bin can still
    // leave rounding residue in the variance and blow the ratio up.
    let scale = if occupied > 1 {
        let mean = reference
            .iter()
            .zip(&positions)
            .map(|(&r, &x)| r as f64 * x)
            .sum::<f64>()
            / n;
        let variance = reference
            .iter()
            .zip(&positions)
            .map(|(&r, &x)| r as f64 * (x - mean) * (x - mean))
            .sum::<f64>()
            / n;
        variance.sqrt()
    } else {
        match edges {
            [] => 1.0,
            [_] => 2.0,
            [first, .., last] => last - first,
        }
    };
    let normalised = distance / scale;
    if normalised.is_finite() {
        Ok(normalised)
    } else {
        Err(StatsError::NonFinite {
            what: "wasserstein distance",
        })
    }
}

/// Pearson's chi-square test of homogeneity on the 2 x k table of reference
/// and current counts (scipy's `chi2_contingency(correction=False)`).
///
/// Both samples are treated as samples (the reference profile is one too),
/// so a category absent from the reference gives a finite statistic rather
/// than the infinite one of a goodness-of-fit test. Bins empty in both
/// samples have no expected count and are dropped, reducing the degrees of
/// freedom; with fewer than two non-empty bins the statistic is 0 and the
/// p-value 1.
pub fn chi_square(reference: &[u64], current: &[u64]) -> Result<ChiSquare, StatsError> {
    let (n, m) = totals(reference, current)?;
    let grand = n + m;
    let mut statistic = 0.0;
    let mut occupied = 0u64;
    for (&r, &c) in reference.iter().zip(current) {
        let column = r as f64 + c as f64;
        if column == 0.0 {
            continue;
        }
        occupied += 1;
        let expected_r = n * column / grand;
        let expected_c = m * column / grand;
        statistic += (r as f64 - expected_r).powi(2) / expected_r
            + (c as f64 - expected_c).powi(2) / expected_c;
    }
    let dof = occupied.saturating_sub(1);
    if dof == 0 {
        return Ok(ChiSquare {
            statistic: 0.0,
            dof,
            p_value: 1.0,
        });
    }
    let distribution = ChiSquared::new(dof as f64).map_err(|_| StatsError::InvalidArgument {
        name: "dof",
        reason: "must be positive",
    })?;
    Ok(ChiSquare {
        statistic,
        dof,
        p_value: distribution.sf(statistic),
    })
}

/// Scores drift of `current` against `reference` with `method`. Both
/// histograms must share a layout; only binned counts are compared (missing,
/// non-finite and mismatched values are reported separately). KS and
/// Wasserstein need a numeric layout, since categories have no order.
pub fn score(
    method: DriftMethod,
    reference: &FeatureHistogram,
    current: &FeatureHistogram,
) -> Result<DriftScore, StatsError> {
    if reference.layout() != current.layout() {
        return Err(StatsError::LayoutMismatch);
    }
    let (r, c) = (reference.counts(), current.counts());
    let edges = match reference.layout() {
        BinLayout::Numeric { edges } => Some(edges.as_slice()),
        BinLayout::Categorical { .. } => None,
    };
    let needs_numeric = || StatsError::NeedsNumericLayout {
        method: method.name(),
    };
    let (value, p_value) = match method {
        DriftMethod::Psi => (psi(r, c)?, None),
        DriftMethod::JensenShannon => (jensen_shannon(r, c)?, None),
        DriftMethod::Ks => {
            edges.ok_or_else(needs_numeric)?;
            let result = ks(r, c)?;
            (result.statistic, Some(result.p_value))
        }
        DriftMethod::Wasserstein => (wasserstein(r, c, edges.ok_or_else(needs_numeric)?)?, None),
        DriftMethod::ChiSquare => {
            let result = chi_square(r, c)?;
            (result.statistic, Some(result.p_value))
        }
    };
    if !value.is_finite() || p_value.is_some_and(|p| !p.is_finite()) {
        return Err(StatsError::NonFinite {
            what: "drift score",
        });
    }
    Ok(DriftScore {
        method,
        value,
        p_value,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::stats::test_support::assert_rel;

    // Fixed cases shared with tests/scipy/stats_reference.py; expected values
    // are that script's output.
    const EDGES_A: [f64; 5] = [0.0, 1.0, 2.5, 4.0, 7.0];
    const REF_A: [u64; 6] = [5, 30, 80, 120, 50, 15];
    const CUR_A: [u64; 6] = [0, 22, 60, 140, 90, 38];
    const REF_C: [u64; 5] = [400, 300, 200, 100, 0];
    const CUR_C: [u64; 5] = [350, 280, 260, 80, 30];
    const REF_D: [u64; 4] = [10, 0, 20, 5];
    const CUR_D: [u64; 4] = [12, 0, 15, 9];
    const REF_E: [u64; 3] = [5000, 3000, 2000];
    const CUR_E: [u64; 3] = [3000, 3000, 4000];

    /// Deterministic formulas must agree with scipy to this relative error.
    const EXACT: f64 = 1e-9;

    #[test]
    fn psi_matches_scipy_rel_entr() {
        // sum(scipy.special.rel_entr(q, p) + rel_entr(p, q)) with zero
        // proportions replaced by 1e-4
        assert_rel(psi(&REF_A, &CUR_A).unwrap(), 0.22872909931791535, EXACT);
        assert_rel(psi(&REF_C, &CUR_C).unwrap(), 0.19880424994751922, EXACT);
    }

    #[test]
    fn psi_smoothing_is_the_documented_floor() {
        // One empty bin on each side: (0.5 - 1e-4) ln(0.5 / 1e-4) twice.
        let expected = 2.0 * (0.5 - PSI_EPSILON) * (0.5 / PSI_EPSILON).ln();
        assert_rel(psi(&[1, 1, 0], &[0, 1, 1]).unwrap(), expected, 1e-12);
    }

    #[test]
    fn ks_matches_scipy() {
        let result = ks(&REF_A, &CUR_A).unwrap();
        // scipy.stats.ks_2samp(np.repeat(pos, ref), np.repeat(pos, cur)).statistic
        assert_rel(result.statistic, 0.14904761904761904, EXACT);
        // scipy.stats.kstwobign.sf(sqrt(n*m/(n+m)) * statistic)
        assert_rel(result.p_value, 0.0015275823800164725, EXACT);
        let result = ks(&REF_E, &CUR_E).unwrap();
        assert_rel(result.statistic, 0.2, EXACT);
        assert_rel(result.p_value, 3.8303391934277937e-174, EXACT);
    }

    #[test]
    fn jensen_shannon_matches_scipy() {
        // scipy.spatial.distance.jensenshannon(ref, cur, base=2)
        assert_rel(
            jensen_shannon(&REF_A, &CUR_A).unwrap(),
            0.1842669127483246,
            EXACT,
        );
        assert_rel(
            jensen_shannon(&REF_C, &CUR_C).unwrap(),
            0.14172439951454352,
            EXACT,
        );
        assert_rel(
            jensen_shannon(&REF_D, &CUR_D).unwrap(),
            0.14413566826780855,
            EXACT,
        );
        // Disjoint supports are the maximum distance.
        assert_rel(jensen_shannon(&[5, 0], &[0, 3]).unwrap(), 1.0, 1e-12);
    }

    #[test]
    fn bin_positions_follow_the_documented_rule() {
        assert_eq!(
            bin_positions(&EDGES_A).unwrap(),
            vec![-1.0, 0.5, 1.75, 3.25, 5.5, 10.0]
        );
        assert_eq!(bin_positions(&[3.0]).unwrap(), vec![2.0, 4.0]);
        assert_eq!(bin_positions(&[]).unwrap(), vec![0.0]);
        assert!(matches!(
            bin_positions(&[1.0, 0.0]),
            Err(StatsError::InvalidEdges { .. })
        ));
        assert_eq!(
            bin_positions(&[-1e308, 1e308]),
            Err(StatsError::NonFinite {
                what: "bin position"
            })
        );
    }

    #[test]
    fn wasserstein_matches_scipy() {
        // scipy.stats.wasserstein_distance(pos, pos, ref, cur) / weighted
        // population std of pos under ref
        assert_rel(
            wasserstein(&REF_A, &CUR_A, &EDGES_A).unwrap(),
            0.41848748285577475,
            EXACT,
        );
        // Reference in one bin: divided by the edge span (7) instead.
        assert_rel(
            wasserstein(&[0, 0, 10, 0, 0, 0], &CUR_A, &EDGES_A).unwrap(),
            0.36265306122448976,
            EXACT,
        );
        // Single edge, degenerate reference: divided by the position span (2).
        assert_rel(
            wasserstein(&[10, 0], &[7, 3], &[3.0]).unwrap(),
            0.30000000000000004,
            EXACT,
        );
        assert_eq!(wasserstein(&[4], &[9], &[]).unwrap(), 0.0);
        assert!(matches!(
            wasserstein(&REF_A, &CUR_A, &[0.0, 1.0]),
            Err(StatsError::InvalidArgument { name: "edges", .. })
        ));
    }

    #[test]
    fn chi_square_matches_scipy_chi2_contingency() {
        // scipy.stats.chi2_contingency([ref, cur], correction=False) on the
        // bins that are non-empty in either sample
        // (reference, current, statistic, dof, p-value)
        type Case<'a> = (&'a [u64], &'a [u64], f64, u64, f64);
        let cases: [Case; 4] = [
            (
                &REF_A,
                &CUR_A,
                28.357720446669234,
                5,
                3.0982330138321055e-05,
            ),
            (&REF_C, &CUR_C, 44.071297684491086, 4, 6.200686181487926e-09),
            (&REF_D, &CUR_D, 2.0252782931354356, 2, 0.36325901959641044),
            (
                &REF_E,
                &CUR_E,
                1166.6666666666665,
                2,
                4.587248032856554e-254,
            ),
        ];
        for (r, c, statistic, dof, p_value) in cases {
            let result = chi_square(r, c).unwrap();
            assert_rel(result.statistic, statistic, EXACT);
            assert_eq!(result.dof, dof);
            assert_rel(result.p_value, p_value, EXACT);
        }
    }

    #[test]
    fn chi_square_with_a_single_occupied_bin_is_no_evidence() {
        let result = chi_square(&[0, 7, 0], &[0, 3, 0]).unwrap();
        assert_eq!(
            (result.statistic, result.dof, result.p_value),
            (0.0, 0, 1.0)
        );
    }

    #[test]
    fn identical_distributions_score_zero() {
        let same = [3u64, 0, 9, 4];
        assert_eq!(psi(&same, &same).unwrap(), 0.0);
        assert_eq!(ks(&same, &same).unwrap().statistic, 0.0);
        assert_eq!(ks(&same, &same).unwrap().p_value, 1.0);
        assert_eq!(jensen_shannon(&same, &same).unwrap(), 0.0);
        assert_eq!(wasserstein(&same, &same, &[0.0, 1.0, 2.0]).unwrap(), 0.0);
        let chi = chi_square(&same, &same).unwrap();
        assert_eq!(chi.statistic, 0.0);
        assert_rel(chi.p_value, 1.0, 1e-12);
        // Proportions matter, not totals.
        assert_eq!(psi(&[1, 2], &[100, 200]).unwrap(), 0.0);
    }

    #[test]
    fn empty_and_misaligned_inputs_are_errors() {
        type Measure = fn(&[u64], &[u64]) -> Result<f64, StatsError>;
        let measures: [Measure; 5] = [
            psi,
            |r, c| ks(r, c).map(|k| k.statistic),
            jensen_shannon,
            |r, c| chi_square(r, c).map(|k| k.statistic),
            |r, c| {
                let edges: Vec<f64> = (0..r.len().saturating_sub(1)).map(|i| i as f64).collect();
                wasserstein(r, c, &edges)
            },
        ];
        for measure in measures {
            assert_eq!(
                measure(&[], &[]),
                Err(StatsError::Empty { which: "reference" })
            );
            assert_eq!(
                measure(&[0, 0], &[1, 1]),
                Err(StatsError::Empty { which: "reference" })
            );
            assert_eq!(
                measure(&[1, 1], &[0, 0]),
                Err(StatsError::Empty { which: "current" })
            );
            assert_eq!(
                measure(&[1, 2], &[1, 2, 3]),
                Err(StatsError::LengthMismatch {
                    reference: 2,
                    current: 3
                })
            );
        }
    }

    fn histogram(layout: &BinLayout, counts: &[u64]) -> FeatureHistogram {
        let mut h = FeatureHistogram::new(layout.clone()).unwrap();
        // Observe each bin's representative value `count` times.
        let values: Vec<f64> = match layout {
            BinLayout::Numeric { edges } => bin_positions(edges).unwrap(),
            BinLayout::Categorical { .. } => Vec::new(),
        };
        for (bin, &count) in counts.iter().enumerate() {
            for _ in 0..count {
                match layout {
                    BinLayout::Numeric { .. } => h.observe_number(values[bin]),
                    BinLayout::Categorical { categories } => match categories.get(bin) {
                        Some(name) => h.observe_category(name),
                        None => h.observe_category("unlisted"),
                    },
                }
            }
        }
        assert_eq!(h.counts(), counts);
        h
    }

    #[test]
    fn score_dispatches_to_each_measure() {
        let layout = BinLayout::numeric(EDGES_A.to_vec()).unwrap();
        let (r, c) = (histogram(&layout, &REF_A), histogram(&layout, &CUR_A));
        let check = |method, value: f64, p_value: Option<f64>| {
            let s = score(method, &r, &c).unwrap();
            assert_eq!(s.method, method);
            assert_rel(s.value, value, EXACT);
            assert_eq!(s.p_value.is_some(), p_value.is_some());
            if let (Some(actual), Some(expected)) = (s.p_value, p_value) {
                assert_rel(actual, expected, EXACT);
            }
        };
        check(DriftMethod::Psi, 0.22872909931791535, None);
        check(
            DriftMethod::Ks,
            0.14904761904761904,
            Some(0.0015275823800164725),
        );
        check(DriftMethod::JensenShannon, 0.1842669127483246, None);
        check(DriftMethod::Wasserstein, 0.41848748285577475, None);
        check(
            DriftMethod::ChiSquare,
            28.357720446669234,
            Some(3.0982330138321055e-05),
        );
    }

    #[test]
    fn score_refuses_ordered_methods_on_categories_and_mixed_layouts() {
        let names = ["a", "b", "c", "d"].map(String::from).to_vec();
        let layout = BinLayout::categorical(names).unwrap();
        let (r, c) = (histogram(&layout, &REF_C), histogram(&layout, &CUR_C));
        assert_rel(
            score(DriftMethod::Psi, &r, &c).unwrap().value,
            0.19880424994751922,
            EXACT,
        );
        assert_rel(
            score(DriftMethod::ChiSquare, &r, &c)
                .unwrap()
                .p_value
                .unwrap(),
            6.200686181487926e-09,
            EXACT,
        );
        for method in [DriftMethod::Ks, DriftMethod::Wasserstein] {
            assert!(method.needs_numeric_layout());
            assert_eq!(
                score(method, &r, &c),
                Err(StatsError::NeedsNumericLayout {
                    method: method.name()
                })
            );
        }
        let numeric = histogram(&BinLayout::numeric(vec![0.0]).unwrap(), &[1, 1]);
        assert_eq!(
            score(DriftMethod::Psi, &r, &numeric),
            Err(StatsError::LayoutMismatch)
        );
        let empty = FeatureHistogram::new(layout).unwrap();
        assert_eq!(
            score(DriftMethod::JensenShannon, &r, &empty),
            Err(StatsError::Empty { which: "current" })
        );
    }

    #[test]
    fn scores_serialise_for_reports() {
        let with_p = DriftScore {
            method: DriftMethod::ChiSquare,
            value: 1.5,
            p_value: Some(0.25),
        };
        assert_eq!(
            serde_json::to_string(&with_p).unwrap(),
            r#"{"method":"chiSquare","value":1.5,"pValue":0.25}"#
        );
        let without = DriftScore {
            method: DriftMethod::JensenShannon,
            value: 0.5,
            p_value: None,
        };
        let json = serde_json::to_string(&without).unwrap();
        assert_eq!(json, r#"{"method":"jensenShannon","value":0.5}"#);
        assert_eq!(serde_json::from_str::<DriftScore>(&json).unwrap(), without);
        for method in [
            DriftMethod::Psi,
            DriftMethod::Ks,
            DriftMethod::JensenShannon,
            DriftMethod::Wasserstein,
            DriftMethod::ChiSquare,
        ] {
            let json = serde_json::to_string(&method).unwrap();
            assert_eq!(json, format!("\"{method}\""));
        }
    }

    proptest! {
        /// Whatever the counts, every measure is a finite number or an error.
        #[test]
        fn measures_are_finite_or_errors(
            pairs in prop::collection::vec((0u64..1_000_000, 0u64..1_000_000), 0..12),
            sparse in any::<bool>(),
        ) {
            let (mut r, mut c): (Vec<u64>, Vec<u64>) = pairs.into_iter().unzip();
            if sparse {
                // Zero out most bins to exercise empty-bin handling.
                r.iter_mut().step_by(2).for_each(|x| *x = 0);
                c.iter_mut().skip(1).step_by(2).for_each(|x| *x = 0);
            }
            let edges: Vec<f64> = (0..r.len().saturating_sub(1)).map(|i| (i * i) as f64).collect();
            if let Ok(v) = psi(&r, &c) { prop_assert!(v.is_finite() && v >= 0.0); }
            if let Ok(k) = ks(&r, &c) {
                prop_assert!((0.0..=1.0).contains(&k.statistic));
                prop_assert!((0.0..=1.0).contains(&k.p_value));
            }
            if let Ok(v) = jensen_shannon(&r, &c) { prop_assert!((0.0..=1.0).contains(&v)); }
            if let Ok(v) = wasserstein(&r, &c, &edges) { prop_assert!(v.is_finite() && v >= 0.0); }
            if let Ok(x) = chi_square(&r, &c) {
                prop_assert!(x.statistic.is_finite() && x.statistic >= 0.0);
                prop_assert!((0.0..=1.0).contains(&x.p_value));
            }
        }
    }
}
