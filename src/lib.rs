//! Drover: a Kubernetes operator that deploys machine-learning models by canary and keeps
//! watch over them (latency, errors, input and prediction drift, confidence).
//!
//! The core is pure: [`plan`] decides from a ModelDeployment, what exists and the time; the
//! [`build`] functions make each child object; [`controller`] only observes, applies and
//! reports; [`operator`] wires watches, leader election and the admin server.

pub mod admin;
pub mod api;
pub mod build;
pub mod cli;
pub mod collect;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod drift;
pub mod fetch;
pub mod leader;
pub mod metrics;
pub mod monitor;
pub mod naming;
pub mod notify;
pub mod operator;
pub mod plan;
pub mod profile;
pub mod profiler;
pub mod rbac;
pub mod render;
pub mod retrain;
pub mod revision;
pub mod rollout;
pub mod simulate;
pub mod stats;
pub mod validate;
pub mod watch;
