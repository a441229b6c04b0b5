//! Statistics for watching deployed models: feature histograms, latency
//! sketches, drift measures and the two-sample tests behind canary judgement.
//!
//! Everything here is plain data plus pure functions so that pods can ship
//! snapshots to the operator, which merges them (exact addition) and takes
//! deltas between scrapes (exact subtraction). Nothing panics on bad input:
//! malformed data yields a [`StatsError`].

pub mod drift;
mod error;
pub mod histogram;
mod kolmogorov;
pub mod sketch;
pub mod two_sample;

#[cfg(test)]
mod test_support;

pub use drift::{ChiSquare, DriftMethod, DriftScore, KsResult};
pub use error::StatsError;
pub use histogram::{BinLayout, FeatureHistogram};
pub use sketch::LatencySketch;
pub use two_sample::{MannWhitney, ProportionTest, RequestOutcomes};
