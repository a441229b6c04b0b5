//! The one error type of the statistics module.

use thiserror::Error;

/// Why a statistics operation could not produce a value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StatsError {
    /// Two histograms or sketches do not share a bin layout, so their counts
    /// cannot be combined or compared.
    #[error("bin layouts differ")]
    LayoutMismatch,
    /// Two count slices that must be aligned bin by bin have different lengths.
    #[error("length mismatch: reference has {reference} bins, current has {current}")]
    LengthMismatch {
        /// Bins in the reference (or first) distribution.
        reference: usize,
        /// Bins in the current (or second) distribution.
        current: usize,
    },
    /// A distribution holds no observations, so proportions are undefined.
    #[error("the {which} distribution has no observations")]
    Empty {
        /// Which input was empty, e.g. "reference" or "canary".
        which: &'static str,
    },
    /// A cumulative counter is lower than in an earlier snapshot; the source
    /// most likely restarted and the caller should start a new baseline.
    #[error("counter `{counter}` went backwards; the source probably restarted")]
    CounterWentBackwards {
        /// The counter that decreased.
        counter: &'static str,
    },
    /// Adding two counters exceeded `u64::MAX`.
    #[error("counter `{counter}` overflowed while merging")]
    CounterOverflow {
        /// The counter that overflowed.
        counter: &'static str,
    },
    /// Numeric bin edges are not finite and strictly increasing.
    #[error("invalid bin edges: {reason}")]
    InvalidEdges {
        /// What is wrong with the edges.
        reason: &'static str,
    },
    /// A categorical layout lists the same category twice.
    #[error("category {0:?} is listed twice")]
    DuplicateCategory(String),
    /// A serialised histogram or sketch is internally inconsistent.
    #[error("inconsistent snapshot: {reason}")]
    InconsistentSnapshot {
        /// What does not add up.
        reason: &'static str,
    },
    /// The drift method needs ordered numeric bins but the layout is categorical.
    #[error("drift method `{method}` needs a numeric layout")]
    NeedsNumericLayout {
        /// The method that was asked for.
        method: &'static str,
    },
    /// An argument is outside its documented domain (NaN, out of range, ...).
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument {
        /// The parameter name.
        name: &'static str,
        /// The documented domain it violated.
        reason: &'static str,
    },
    /// A computation overflowed to a non-finite value (e.g. absurdly wide edges).
    #[error("{what} is not finite")]
    NonFinite {
        /// The quantity that overflowed.
        what: &'static str,
    },
}
