//! Drover: a Kubernetes operator that deploys machine-learning models by canary and keeps
//! watch over them (latency, errors, input and prediction drift, confidence).

pub mod api;
pub mod crd;
