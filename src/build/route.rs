//! Gateway API traffic: HTTPRoute `<name>` with weighted backends `<name>-stable` and
//! `<name>-canary`, attached to the Gateways the spec names. Drover creates and owns this
//! route; it never edits a route it does not own.
//!
//! The HTTPRoute type is written here with the fields Drover sets: the Gateway API types are
//! not part of k8s-openapi, and Drover needs a small, stable subset of `gateway.networking.k8s.io/v1`.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::service::SERVICE_PORT;
use super::{child_meta, stamp_spec_hash};
use crate::api::{GatewayApiTraffic, ModelDeployment};
use crate::naming;

/// API group of the Gateway API.
pub const GROUP: &str = "gateway.networking.k8s.io";
/// Version Drover writes (GA since Gateway API v1.0).
pub const VERSION: &str = "v1";

/// `gateway.networking.k8s.io/v1` HTTPRoute (the fields Drover writes and reads).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    /// Always `gateway.networking.k8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// Always `HTTPRoute`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// What Drover sets.
    #[serde(default)]
    pub spec: HttpRouteSpec,
    /// Written by the Gateway controllers: whether each parent accepted the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

/// HTTPRoute spec.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// Gateways (listeners) the route attaches to.
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// Host names matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// One rule: every request to the weighted backends.
    #[serde(default)]
    pub rules: Vec<HttpRouteRule>,
}

/// A parent Gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// Gateway name.
    pub name: String,
    /// Gateway namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// A rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    /// Weighted Services.
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
}

/// A weighted Service backend.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// Service name.
    pub name: String,
    /// Service port.
    pub port: i32,
    /// Relative weight.
    pub weight: i32,
}

impl Resource for HttpRoute {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("HTTPRoute")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(GROUP)
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(VERSION)
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("httproutes")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Stable and canary weights (percent; they add up to 100).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weights {
    /// `<name>-stable`.
    pub stable: i32,
    /// `<name>-canary`.
    pub canary: i32,
}

/// Builds HTTPRoute `<name>` from `spec.rollout.traffic.gatewayAPI` with `weights`.
pub fn build(md: &ModelDeployment, gateway: &GatewayApiTraffic, weights: Weights) -> HttpRoute {
    let name = md.name_any();
    let backend = |service: String, weight: i32| BackendRef {
        name: service,
        port: SERVICE_PORT,
        weight: weight.clamp(0, 100),
    };
    let mut route = HttpRoute {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: "HTTPRoute".into(),
        metadata: child_meta(md, naming::route(&name)),
        spec: HttpRouteSpec {
            parent_refs: gateway
                .parent_refs
                .iter()
                .map(|p| ParentReference {
                    name: p.name.clone(),
                    namespace: p.namespace.clone(),
                    section_name: p.section_name.clone(),
                })
                .collect(),
            hostnames: gateway.hostnames.clone(),
            rules: vec![HttpRouteRule {
                backend_refs: vec![
                    backend(naming::stable_service(&name), weights.stable),
                    backend(naming::canary_service(&name), weights.canary),
                ],
            }],
        },
        status: None,
    };
    stamp_spec_hash(&mut route, |r| &mut r.metadata);
    route
}

/// Whether each parent accepted the route, from its status (`None`: no parent has said yet).
/// The first parent that did not accept it, with its reason and message.
pub fn not_accepted(route: &HttpRoute) -> Option<(String, String)> {
    let parents = route.status.as_ref()?.get("parents")?.as_array()?;
    parents.iter().find_map(|p| {
        let accepted = p
            .get("conditions")?
            .as_array()?
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some("Accepted"))?;
        if accepted.get("status").and_then(Value::as_str) == Some("True") {
            return None;
        }
        let gateway = p
            .get("parentRef")
            .and_then(|r| r.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        Some((
            accepted
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("NotAccepted")
                .to_string(),
            format!(
                "Gateway {gateway:?} did not accept HTTPRoute {}: {}",
                route.name_any(),
                accepted
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            ),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn md() -> ModelDeployment {
        serde_saphyr::from_str(
            "apiVersion: drover.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {name: fraud, namespace: ml, uid: u-1}\nspec:\n  model: {version: '1', image: 'fraud:1'}\n  rollout:\n    traffic:\n      mode: GatewayAPI\n      gatewayAPI:\n        parentRefs: [{name: public, namespace: gateways, sectionName: https}]\n        hostnames: [fraud.example.com]\n",
        )
        .unwrap()
    }

    #[test]
    fn weighted_backends_on_the_gateways_of_the_spec() {
        let m = md();
        let gw = m.spec.rollout.traffic.gateway_api.clone().unwrap();
        let r = build(
            &m,
            &gw,
            Weights {
                stable: 90,
                canary: 10,
            },
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(v["kind"], "HTTPRoute");
        assert_eq!(v["metadata"]["name"], "fraud");
        assert_eq!(
            v["spec"]["parentRefs"],
            json!([{"name": "public", "namespace": "gateways", "sectionName": "https"}])
        );
        assert_eq!(v["spec"]["hostnames"], json!(["fraud.example.com"]));
        assert_eq!(
            v["spec"]["rules"][0]["backendRefs"],
            json!([
                {"name": "fraud-stable", "port": 80, "weight": 90},
                {"name": "fraud-canary", "port": 80, "weight": 10}
            ])
        );
        assert_eq!(
            v["metadata"]["ownerReferences"][0]["controller"],
            json!(true)
        );
        assert!(v.get("status").is_none());
        assert_eq!(
            HttpRoute::url_path(&(), Some("ml")),
            "/apis/gateway.networking.k8s.io/v1/namespaces/ml/httproutes"
        );
    }

    #[test]
    fn a_parent_that_refuses_the_route_is_named() {
        let mut r = build(
            &md(),
            &md().spec.rollout.traffic.gateway_api.unwrap(),
            Weights {
                stable: 100,
                canary: 0,
            },
        );
        assert_eq!(not_accepted(&r), None);
        r.status = Some(json!({"parents": [{
            "parentRef": {"name": "public"},
            "controllerName": "example.com/gw",
            "conditions": [{"type": "Accepted", "status": "False", "reason": "NoMatchingParent", "message": "no such listener"}]
        }]}));
        let (reason, message) = not_accepted(&r).unwrap();
        assert_eq!(reason, "NoMatchingParent");
        assert!(
            message.contains("\"public\"") && message.contains("no such listener"),
            "{message}"
        );
    }
}
