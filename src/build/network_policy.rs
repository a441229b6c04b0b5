//! NetworkPolicy `<name>`: who may reach the model's pods. The serving port (the monitor's
//! proxy) is open to clients (or to `servingFrom`), the admin port (reports, metrics, probes)
//! to the operator's pods (and `adminFrom`), and the model's own port to nobody: the monitor
//! reaches the model over the pod's loopback, which no NetworkPolicy governs, so clients cannot
//! go around the monitor.
//!
//! Numeric ports, not names: the monitor is a native sidecar (an init container), and not every
//! network plugin resolves named ports declared on init containers.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::deployment::{ADMIN_PORT, SERVING_PORT};
use super::{child_meta, stamp_spec_hash};
use crate::api::ModelDeployment;
use crate::naming;

/// Labels of the operator's pods (as `deploy/` and the Helm chart set them).
pub fn operator_pod_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "drover".to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            "operator".to_string(),
        ),
    ])
}

fn tcp(port: i32) -> Vec<NetworkPolicyPort> {
    vec![NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }]
}

/// Builds NetworkPolicy `<name>`; the operator runs in `operator_namespace`.
pub fn build(md: &ModelDeployment, operator_namespace: &str) -> NetworkPolicy {
    let name = md.name_any();
    let spec = &md.spec.network_policy;
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                operator_namespace.to_string(),
            )])),
            ..LabelSelector::default()
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(operator_pod_labels()),
            ..LabelSelector::default()
        }),
        ip_block: None,
    };
    let mut admin_from = vec![operator];
    admin_from.extend(spec.admin_from.iter().cloned());
    let serving = NetworkPolicyIngressRule {
        // No `from`: every source (the usual case: clients anywhere in the cluster).
        from: (!spec.serving_from.is_empty()).then(|| spec.serving_from.clone()),
        ports: Some(tcp(SERVING_PORT)),
    };
    let admin = NetworkPolicyIngressRule {
        from: Some(admin_from),
        ports: Some(tcp(ADMIN_PORT)),
    };
    let mut policy = NetworkPolicy {
        metadata: child_meta(md, naming::network_policy(&name)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(naming::LABEL_MODEL.to_string(), name)])),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![serving, admin]),
            egress: None,
        }),
    };
    stamp_spec_hash(&mut policy, |p| &mut p.metadata);
    policy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(extra: &str) -> ModelDeployment {
        serde_saphyr::from_str(&format!(
            "apiVersion: drover.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: fraud, namespace: ml, uid: u-1}}\nspec:\n  model: {{version: '1', image: 'fraud:1', port: 8080}}\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn clients_reach_the_monitor_the_operator_its_admin_port_nobody_the_model() {
        let p = build(&md(""), "drover-system");
        let spec = p.spec.unwrap();
        assert_eq!(
            spec.pod_selector.unwrap().match_labels.unwrap()[naming::LABEL_MODEL],
            "fraud"
        );
        assert_eq!(spec.policy_types.unwrap(), vec!["Ingress"]);
        let rules = spec.ingress.unwrap();
        let ports: Vec<i32> = rules
            .iter()
            .flat_map(|r| r.ports.clone().unwrap())
            .map(|p| match p.port {
                Some(IntOrString::Int(n)) => n,
                _ => 0,
            })
            .collect();
        assert_eq!(
            ports,
            vec![SERVING_PORT, ADMIN_PORT],
            "not 8080, the model's"
        );
        assert!(rules[0].from.is_none(), "clients from anywhere");
        let admin = rules[1].from.clone().unwrap();
        assert_eq!(admin.len(), 1);
        assert_eq!(
            admin[0]
                .namespace_selector
                .clone()
                .unwrap()
                .match_labels
                .unwrap()["kubernetes.io/metadata.name"],
            "drover-system"
        );
    }

    #[test]
    fn serving_and_admin_sources_can_be_narrowed_and_widened() {
        let p = build(
            &md(
                "  networkPolicy:\n    servingFrom: [{namespaceSelector: {matchLabels: {team: payments}}}]\n    adminFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]\n",
            ),
            "ops",
        );
        let rules = p.spec.unwrap().ingress.unwrap();
        assert_eq!(rules[0].from.as_ref().unwrap().len(), 1);
        assert_eq!(rules[1].from.as_ref().unwrap().len(), 2);
    }
}
