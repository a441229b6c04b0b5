//! Two-sample tests behind the canary-versus-stable judgement.
//!
//! All p-values come from normal approximations; each test documents when
//! the approximation is trusted.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

use super::StatsError;

/// The usual rule of thumb for the normal approximation to a binomial: every
/// group needs at least this many expected errors and expected successes.
pub const MIN_EXPECTED_COUNT: f64 = 5.0;

/// Request outcomes of one deployment during a comparison window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestOutcomes {
    /// Requests that failed.
    pub errors: u64,
    /// All requests, failed or not.
    pub requests: u64,
}

/// Result of the one-sided error-rate test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProportionTest {
    /// Standardised excess of the canary's error rate over stable's plus the margin.
    pub z: f64,
    /// One-sided p-value for H0: `p_canary - p_stable <= margin`.
    pub p_value: f64,
    /// Whether the samples meet [`MIN_EXPECTED_COUNT`]; when false, `z` and
    /// `p_value` are not to be trusted and the caller should keep waiting.
    pub sufficient: bool,
}

/// Result of the one-sided Mann–Whitney U test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MannWhitney {
    /// U statistic of the canary sample (pairs where canary > stable, ties counting half).
    pub u: f64,
    /// Standardised U, after tie and continuity correction.
    pub z: f64,
    /// One-sided p-value for "canary is stochastically larger than stable".
    pub p_value: f64,
}

fn standard_normal_sf(z: f64) -> f64 {
    Normal::standard().sf(z)
}

/// Wilson score interval of a proportion `x / n` at normal quantile `z`; `(0, 1)` for `n = 0`.
pub fn wilson_interval(x: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (x, n) = (x.min(n) as f64, n as f64);
    let p = x / n;
    let z2 = z * z;
    let denominator = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denominator;
    let half = z / denominator * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// Newcombe's hybrid score interval (method 10, 1998) for the difference of two proportions
/// `p_canary - p_stable`, at normal quantile `z` on each side. Unlike the Wald interval it stays
/// sound at zero or few errors, which is the normal case for a healthy canary: with no errors
/// at all the upper bound still shrinks as requests grow, so "no worse than stable" can be
/// shown without waiting for errors to happen.
pub fn newcombe_difference(canary: RequestOutcomes, stable: RequestOutcomes, z: f64) -> (f64, f64) {
    let rate = |o: RequestOutcomes| {
        if o.requests == 0 {
            0.0
        } else {
            o.errors.min(o.requests) as f64 / o.requests as f64
        }
    };
    let (p1, p2) = (rate(canary), rate(stable));
    let (l1, u1) = wilson_interval(canary.errors, canary.requests, z);
    let (l2, u2) = wilson_interval(stable.errors, stable.requests, z);
    let d = p1 - p2;
    let lower = d - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt();
    let upper = d + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt();
    (lower, upper)
}

/// The standard normal quantile for a one-sided level `alpha` (e.g. 1.645 for 0.05).
pub fn one_sided_z(alpha: f64) -> Result<f64, StatsError> {
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(StatsError::InvalidArgument {
            name: "alpha",
            reason: "must lie in (0, 1)",
        });
    }
    Ok(Normal::standard().inverse_cdf(1.0 - alpha))
}

/// One-sided two-proportion z-test of H1: the canary's error rate exceeds
/// the stable one's by more than `margin` (H0: `p_c - p_s <= margin`).
///
/// Uses the unpooled (Wald) standard error `sqrt(p_c(1-p_c)/n_c +
/// p_s(1-p_s)/n_s)`, because with a non-zero margin H0 does not say the
/// rates are equal, so pooling them would be wrong. When that error is zero
/// (each group all-error or error-free) the pooled one is used instead, and
/// if that is zero too, `z = 0` and `p = 1` (no evidence).
///
/// `sufficient` requires, with the pooled rate `p`, `n * p >= 5` and
/// `n * (1 - p) >= 5` for both groups; a group with no requests is always
/// insufficient. `margin` must lie in `(-1, 1)`.
pub fn error_rate_exceeds(
    canary: RequestOutcomes,
    stable: RequestOutcomes,
    margin: f64,
) -> Result<ProportionTest, StatsError> {
    if !(margin > -1.0 && margin < 1.0) {
        return Err(StatsError::InvalidArgument {
            name: "margin",
            reason: "must be a number in (-1, 1)",
        });
    }
    for group in [canary, stable] {
        if group.errors > group.requests {
            return Err(StatsError::InvalidArgument {
                name: "errors",
                reason: "cannot exceed requests",
            });
        }
    }
    let no_evidence = ProportionTest {
        z: 0.0,
        p_value: 1.0,
        sufficient: false,
    };
    if canary.requests == 0 || stable.requests == 0 {
        return Ok(no_evidence);
    }
    let (n_c, n_s) = (canary.requests as f64, stable.requests as f64);
    let (p_c, p_s) = (canary.errors as f64 / n_c, stable.errors as f64 / n_s);
    let pooled = (canary.errors as f64 + stable.errors as f64) / (n_c + n_s);
    let sufficient = [n_c, n_s]
        .iter()
        .all(|&n| n * pooled >= MIN_EXPECTED_COUNT && n * (1.0 - pooled) >= MIN_EXPECTED_COUNT);
    let unpooled_se = (p_c * (1.0 - p_c) / n_c + p_s * (1.0 - p_s) / n_s).sqrt();
    let se = if unpooled_se > 0.0 {
        unpooled_se
    } else {
        (pooled * (1.0 - pooled) * (1.0 / n_c + 1.0 / n_s)).sqrt()
    };
    if se <= 0.0 || !se.is_finite() {
        return Ok(ProportionTest {
            sufficient,
            ..no_evidence
        });
    }
    let z = (p_c - p_s - margin) / se;
    Ok(ProportionTest {
        z,
        p_value: standard_normal_sf(z),
        sufficient,
    })
}

/// One-sided Mann–Whitney U test that canary values are stochastically
/// larger than stable ones (e.g. latencies), from binned samples.
///
/// `canary` and `stable` are counts over the same bins in increasing value
/// order (e.g. from [`LatencySketch::aligned_counts`](super::LatencySketch::aligned_counts)).
/// Every bin is one tie group with its mid-rank. The p-value is the normal
/// approximation with tie-corrected variance and a 0.5 continuity
/// correction, as scipy's `mannwhitneyu(alternative='greater',
/// method='asymptotic', use_continuity=True)`; it is reliable when both
/// groups have more than about 20 observations. If every observation falls
/// in one bin the variance is zero and `z = 0`, `p = 1`.
pub fn mann_whitney_greater(canary: &[u64], stable: &[u64]) -> Result<MannWhitney, StatsError> {
    if canary.len() != stable.len() {
        return Err(StatsError::LengthMismatch {
            reference: canary.len(),
            current: stable.len(),
        });
    }
    let n1 = canary.iter().map(|&c| c as f64).sum::<f64>();
    let n2 = stable.iter().map(|&c| c as f64).sum::<f64>();
    if n1 == 0.0 {
        return Err(StatsError::Empty { which: "canary" });
    }
    if n2 == 0.0 {
        return Err(StatsError::Empty { which: "stable" });
    }
    let (mut below, mut rank_sum, mut tie_term) = (0.0, 0.0, 0.0);
    for (&c, &s) in canary.iter().zip(stable) {
        let (c, tied) = (c as f64, c as f64 + s as f64);
        let mid_rank = below + (tied + 1.0) / 2.0;
        rank_sum += c * mid_rank;
        tie_term += tied * tied * tied - tied;
        below += tied;
    }
    let u = rank_sum - n1 * (n1 + 1.0) / 2.0;
    let total = n1 + n2;
    let variance = n1 * n2 / 12.0 * ((total + 1.0) - tie_term / (total * (total - 1.0)));
    if variance <= 0.0 || !variance.is_finite() {
        return Ok(MannWhitney {
            u,
            z: 0.0,
            p_value: 1.0,
        });
    }
    let z = (u - n1 * n2 / 2.0 - 0.5) / variance.sqrt();
    Ok(MannWhitney {
        u,
        z,
        p_value: standard_normal_sf(z),
    })
}

/// Bonferroni-adjusted p-values `min(1, p * m)` for `m` simultaneous tests;
/// every p-value must lie in `[0, 1]`.
pub fn bonferroni(p_values: &[f64]) -> Result<Vec<f64>, StatsError> {
    let tests = p_values.len() as f64;
    p_values
        .iter()
        .map(|&p| {
            if (0.0..=1.0).contains(&p) {
                Ok((p * tests).min(1.0))
            } else {
                Err(StatsError::InvalidArgument {
                    name: "p_values",
                    reason: "each must lie in [0, 1]",
                })
            }
        })
        .collect()
}

/// Per-test significance level `alpha / tests` that keeps the family-wise
/// error rate at `alpha`; `alpha` must lie in `(0, 1)` and `tests >= 1`.
pub fn bonferroni_alpha(alpha: f64, tests: usize) -> Result<f64, StatsError> {
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(StatsError::InvalidArgument {
            name: "alpha",
            reason: "must lie in (0, 1)",
        });
    }
    if tests == 0 {
        return Err(StatsError::InvalidArgument {
            name: "tests",
            reason: "must be at least 1",
        });
    }
    Ok(alpha / tests as f64)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::stats::test_support::assert_rel;

    const EXACT: f64 = 1e-9;

    fn outcomes(errors: u64, requests: u64) -> RequestOutcomes {
        RequestOutcomes { errors, requests }
    }

    #[test]
    fn error_rate_test_matches_scipy_normal_tail() {
        // z from the unpooled Wald formula; p = scipy.stats.norm.sf(z)
        let cases = [
            (
                30,
                1000,
                20,
                1200,
                0.005,
                1.2744214484039154,
                0.1012570474980658,
            ),
            (
                30,
                1000,
                20,
                1200,
                0.0,
                2.0390743174462647,
                0.020721305485848496,
            ),
            (
                12,
                800,
                40,
                900,
                0.01,
                -4.867953138442103,
                0.9999994361997057,
            ),
        ];
        for (ec, nc, es, ns, margin, z, p_value) in cases {
            let result = error_rate_exceeds(outcomes(ec, nc), outcomes(es, ns), margin).unwrap();
            assert!(result.sufficient);
            assert_rel(result.z, z, EXACT);
            assert_rel(result.p_value, p_value, EXACT);
        }
    }

    #[test]
    fn error_rate_test_flags_insufficient_samples() {
        // Pooled rate 6/2000: 1000 * 0.003 = 3 expected errors per group < 5.
        let few = error_rate_exceeds(outcomes(5, 1000), outcomes(1, 1000), 0.0).unwrap();
        assert!(!few.sufficient);
        assert!(few.z.is_finite() && (0.0..=1.0).contains(&few.p_value));
        // Pooled rate 10/2000 gives exactly 5 expected errors per group.
        let enough = error_rate_exceeds(outcomes(6, 1000), outcomes(4, 1000), 0.0).unwrap();
        assert!(enough.sufficient);
        // No traffic yet.
        let none = error_rate_exceeds(outcomes(0, 0), outcomes(3, 100), 0.0).unwrap();
        assert_eq!((none.z, none.p_value, none.sufficient), (0.0, 1.0, false));
        // No errors anywhere: zero standard error, no evidence.
        let clean = error_rate_exceeds(outcomes(0, 500), outcomes(0, 500), 0.0).unwrap();
        assert_eq!(
            (clean.z, clean.p_value, clean.sufficient),
            (0.0, 1.0, false)
        );
    }

    #[test]
    fn error_rate_test_falls_back_to_the_pooled_error() {
        // All canary requests fail, no stable one does: unpooled SE is 0.
        let result = error_rate_exceeds(outcomes(50, 50), outcomes(0, 50), 0.1).unwrap();
        let pooled_se = (0.5f64 * 0.5 * (1.0 / 50.0 + 1.0 / 50.0)).sqrt();
        assert!(result.sufficient);
        assert_rel(result.z, 0.9 / pooled_se, 1e-12);
        assert!(result.p_value < 1e-10);
    }

    #[test]
    fn error_rate_test_rejects_bad_arguments() {
        for margin in [f64::NAN, 1.0, -1.0, f64::INFINITY] {
            assert!(matches!(
                error_rate_exceeds(outcomes(1, 10), outcomes(1, 10), margin),
                Err(StatsError::InvalidArgument { name: "margin", .. })
            ));
        }
        assert!(matches!(
            error_rate_exceeds(outcomes(11, 10), outcomes(1, 10), 0.0),
            Err(StatsError::InvalidArgument { name: "errors", .. })
        ));
    }

    const CANARY_M: [u64; 7] = [3, 10, 25, 40, 30, 12, 5];
    const STABLE_M: [u64; 7] = [5, 18, 35, 40, 20, 6, 1];

    #[test]
    fn mann_whitney_matches_scipy() {
        // scipy.stats.mannwhitneyu(np.repeat(pos, canary), np.repeat(pos, stable),
        //     alternative='greater', method='asymptotic', use_continuity=True)
        let cases: [(&[u64], &[u64], f64, f64); 3] = [
            (&CANARY_M, &STABLE_M, 9594.5, 0.0006682794344112136),
            (&STABLE_M, &CANARY_M, 6030.5, 0.9993358928104064),
            (&[0, 7, 1], &[4, 20, 0], 122.0, 0.03923212713278383),
        ];
        for (canary, stable, u, p_value) in cases {
            let result = mann_whitney_greater(canary, stable).unwrap();
            assert_rel(result.u, u, EXACT);
            assert_rel(result.p_value, p_value, EXACT);
            assert_rel(standard_normal_sf(result.z), p_value, EXACT);
        }
    }

    #[test]
    fn mann_whitney_works_on_sketch_buckets() {
        let mut canary = crate::stats::LatencySketch::new();
        let mut stable = crate::stats::LatencySketch::new();
        for i in 0..200 {
            stable.record(0.010 + f64::from(i % 20) * 0.001);
            canary.record(0.012 + f64::from(i % 20) * 0.001);
        }
        let (c, s) = canary.aligned_counts(&stable);
        let slower = mann_whitney_greater(&c, &s).unwrap();
        assert!(slower.p_value < 0.01, "{slower:?}");
        let faster = mann_whitney_greater(&s, &c).unwrap();
        assert!(faster.p_value > 0.99, "{faster:?}");
    }

    #[test]
    fn mann_whitney_degenerate_inputs() {
        let all_tied = mann_whitney_greater(&[0, 5, 0], &[0, 9, 0]).unwrap();
        assert_eq!((all_tied.u, all_tied.z, all_tied.p_value), (22.5, 0.0, 1.0));
        assert_eq!(
            mann_whitney_greater(&[0, 0], &[1, 2]),
            Err(StatsError::Empty { which: "canary" })
        );
        assert_eq!(
            mann_whitney_greater(&[1, 2], &[]),
            Err(StatsError::LengthMismatch {
                reference: 2,
                current: 0
            })
        );
        assert_eq!(
            mann_whitney_greater(&[], &[]),
            Err(StatsError::Empty { which: "canary" })
        );
    }

    #[test]
    fn bonferroni_scales_and_caps() {
        assert_eq!(
            bonferroni(&[0.01, 0.2, 0.5, 0.0]).unwrap(),
            vec![0.04, 0.8, 1.0, 0.0]
        );
        assert_eq!(bonferroni(&[]).unwrap(), Vec::<f64>::new());
        for bad in [f64::NAN, -0.1, 1.1] {
            assert!(bonferroni(&[0.1, bad]).is_err());
        }
        assert_rel(bonferroni_alpha(0.05, 5).unwrap(), 0.01, 1e-15);
        assert!(bonferroni_alpha(0.05, 0).is_err());
        for bad in [0.0, 1.0, f64::NAN, -0.5] {
            assert!(bonferroni_alpha(bad, 3).is_err());
        }
    }

    proptest! {
        /// U always lies in [0, n1 n2] and p-values in [0, 1], for any counts.
        #[test]
        fn mann_whitney_is_well_behaved(
            pairs in prop::collection::vec((0u64..10_000, 0u64..10_000), 1..15),
        ) {
            let (c, s): (Vec<u64>, Vec<u64>) = pairs.into_iter().unzip();
            if let Ok(r) = mann_whitney_greater(&c, &s) {
                let (n1, n2) = (c.iter().sum::<u64>() as f64, s.iter().sum::<u64>() as f64);
                prop_assert!(r.u >= 0.0 && r.u <= n1 * n2);
                prop_assert!(r.z.is_finite());
                prop_assert!((0.0..=1.0).contains(&r.p_value));
            }
        }

        #[test]
        fn error_rate_test_never_yields_nan(
            ec in 0u64..2_000, nc in 0u64..2_000, es in 0u64..2_000, ns in 0u64..2_000,
            margin in -0.99..0.99f64,
        ) {
            if let Ok(r) = error_rate_exceeds(outcomes(ec, nc), outcomes(es, ns), margin) {
                prop_assert!(r.z.is_finite());
                prop_assert!((0.0..=1.0).contains(&r.p_value));
            }
        }
    }

    #[test]
    fn newcombe_matches_the_published_example() {
        // Newcombe (1998), Statistics in Medicine 17:873–890, table II example (56/70 vs 48/80):
        // 95% interval of the difference 0.0524 to 0.3339 (method 10).
        let (l, u) = newcombe_difference(
            RequestOutcomes {
                errors: 56,
                requests: 70,
            },
            RequestOutcomes {
                errors: 48,
                requests: 80,
            },
            1.959963984540054,
        );
        assert!((l - 0.0524).abs() < 5e-4, "{l}");
        assert!((u - 0.3339).abs() < 5e-4, "{u}");
        // Wilson interval of 0/10 at 95%: (0, 0.2775) (Newcombe 1998, table I).
        let (wl, wu) = wilson_interval(0, 10, 1.959963984540054);
        assert_eq!(wl, 0.0);
        assert!((wu - 0.2775).abs() < 5e-4, "{wu}");
        assert!((one_sided_z(0.05).unwrap() - 1.6448536269514722).abs() < 1e-9);
    }
}
