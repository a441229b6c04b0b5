//! Drover: a Kubernetes operator that deploys machine-learning models by canary and keeps
//! watch over them (latency, errors, input and prediction drift, confidence).
//!
//! The core is pure: [`plan`] decides from a ModelDeployment, what exists and the time; the
//! [`build`] functions make each child object; [`controller`] only observes, applies and
//! reports.

pub mod api;
pub mod build;
pub mod conditions;
pub mod crd;
pub mod naming;
pub mod plan;
pub mod revision;
pub mod validate;
