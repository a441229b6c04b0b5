//! Helpers shared by the unit tests of this module.

/// Asserts `actual` is within relative tolerance `tol` of `expected`.
#[track_caller]
pub(crate) fn assert_rel(actual: f64, expected: f64, tol: f64) {
    let err = (actual - expected).abs() / expected.abs().max(f64::MIN_POSITIVE);
    assert!(
        err <= tol,
        "actual {actual:e}, expected {expected:e}, relative error {err:e} > {tol:e}"
    );
}

/// SplitMix64: a tiny deterministic generator so randomized tests need no
/// extra dependency and fail reproducibly.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in the open interval (0, 1).
    pub(crate) fn next_open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal via Box–Muller.
    pub(crate) fn next_normal(&mut self) -> f64 {
        let (u, v) = (self.next_open01(), self.next_open01());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}
