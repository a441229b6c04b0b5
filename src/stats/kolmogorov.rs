//! The limiting Kolmogorov distribution (scipy's `kstwobign`).
//!
//! statrs implements it only privately inside its sample-based KS test, and
//! its alternating series converges poorly for small arguments, so the two
//! standard series are written out here.

use std::f64::consts::PI;

/// Below this argument the theta-function series converges faster and the
/// alternating series would need many terms.
const SERIES_SWITCH: f64 = 1.18;

/// Survival function `P(K > x)` of the Kolmogorov distribution, i.e. the
/// asymptotic KS p-value for `x = sqrt(n_eff) * D`.
pub(crate) fn kolmogorov_sf(x: f64) -> f64 {
    if x.is_nan() {
        return 1.0;
    }
    if x <= 0.0 {
        return 1.0;
    }
    if x < SERIES_SWITCH {
        // P(K <= x) = sqrt(2 pi) / x * sum_k exp(-(2k-1)^2 pi^2 / (8 x^2))
        let scale = -PI * PI / (8.0 * x * x);
        let mut cdf = 0.0;
        for k in 1..=50u32 {
            let odd = f64::from(2 * k - 1);
            let term = (scale * odd * odd).exp();
            cdf += term;
            if term <= cdf * 1e-17 {
                break;
            }
        }
        (1.0 - (2.0 * PI).sqrt() / x * cdf).clamp(0.0, 1.0)
    } else {
        // P(K > x) = 2 sum_k (-1)^(k-1) exp(-2 k^2 x^2)
        let mut sf = 0.0;
        let mut sign = 1.0;
        for k in 1..=50u32 {
            let kf = f64::from(k);
            let term = (-2.0 * kf * kf * x * x).exp();
            sf += sign * term;
            if term <= sf.abs() * 1e-17 {
                break;
            }
            sign = -sign;
        }
        (2.0 * sf).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::kolmogorov_sf;

    fn assert_rel(actual: f64, expected: f64, tol: f64) {
        let err = (actual - expected).abs() / expected.abs().max(f64::MIN_POSITIVE);
        assert!(
            err <= tol,
            "actual {actual}, expected {expected}, rel err {err}"
        );
    }

    #[test]
    fn matches_scipy_kstwobign() {
        // scipy.stats.kstwobign.sf(x)
        let cases = [
            (0.05, 1.0),
            (0.3, 0.9999906941986655),
            (0.8, 0.5441424115741981),
            (1.0, 0.26999967167735456),
            (1.17, 0.12939004218561884),
            (1.19, 0.11774229287977166),
            (1.5, 0.022217962616525127),
            (2.5, 7.453306344157342e-06),
            (4.0, 2.532833109818835e-14),
            (6.0, 1.0760372320042276e-31),
        ];
        for (x, expected) in cases {
            assert_rel(kolmogorov_sf(x), expected, 1e-12);
        }
    }

    #[test]
    fn degenerate_arguments() {
        assert_eq!(kolmogorov_sf(0.0), 1.0);
        assert_eq!(kolmogorov_sf(-3.0), 1.0);
        assert_eq!(kolmogorov_sf(f64::NAN), 1.0);
        assert_eq!(kolmogorov_sf(f64::INFINITY), 0.0);
        assert_eq!(kolmogorov_sf(1e-300), 1.0);
    }
}
