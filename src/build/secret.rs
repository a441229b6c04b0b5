//! Secret `<name>-monitor-token`: the bearer token the monitors' report and metrics require.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::child_meta;
use super::deployment::TOKEN_KEY;
use crate::api::ModelDeployment;
use crate::naming;

/// The token Secret for `md` holding `token`.
pub fn monitor_token(md: &ModelDeployment, token: &str) -> Secret {
    Secret {
        metadata: child_meta(md, naming::monitor_token(&md.name_any())),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([(TOKEN_KEY.to_string(), token.to_string())])),
        immutable: Some(true),
        ..Secret::default()
    }
}
