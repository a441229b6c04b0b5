//! The `drover.dev/v1alpha1` API: the ModelDeployment spec and status.

pub mod duration;
pub mod spec;
pub mod status;

pub use duration::GoDuration;
pub use spec::*;
pub use status::*;
