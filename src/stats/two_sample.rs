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
    let sufficient = [n_c, n_s].iter().all(|&n| {
        n * pooled >= MIN_EXPECTED_COUNT && n * (1.0 - pooled) >= MIN_EXPECTED_COUNT
    });
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
