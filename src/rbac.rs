//! The one list of what Drover's code does to the API, and the RBAC objects generated from it.
//!
//! Every API call the operator makes is covered by exactly one rule here; `deploy/` and the
//! Helm chart are generated from this list, and a test fails when they differ from it or when
//! anything is granted beyond need (no wildcards, no cluster-wide Secret reads).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

/// Where a rule applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace Drover watches (a ClusterRole, or a Role per watched namespace).
    Watched,
    /// Only the operator's own namespace (the leader Lease).
    Operator,
}

/// One permission and why the code needs it.
#[derive(Clone, Debug)]
pub struct Rule {
    /// API group (`""` for core).
    pub api_group: &'static str,
    /// Resources (with subresources as `x/y`).
    pub resources: &'static [&'static str],
    /// Verbs.
    pub verbs: &'static [&'static str],
    /// Where it applies.
    pub scope: Scope,
    /// The code that needs it.
    pub why: &'static str,
}

/// Everything the operator does to the API.
pub const RULES: &[Rule] = &[
    Rule {
        api_group: "drover.dev",
        resources: &["modeldeployments"],
        verbs: &["get", "list", "watch"],
        scope: Scope::Watched,
        why: "watch ModelDeployments (controller), check the CRD at start",
    },
    Rule {
        api_group: "drover.dev",
        resources: &["modeldeployments/status"],
        verbs: &["get", "patch", "update"],
        scope: Scope::Watched,
        why: "apply the whole status under one field manager",
    },
    Rule {
        api_group: "drover.dev",
        resources: &["modeldeployments/finalizers"],
        verbs: &["update"],
        scope: Scope::Watched,
        why: "owner references with blockOwnerDeletion on every child",
    },
    Rule {
        api_group: "apps",
        resources: &["deployments"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        scope: Scope::Watched,
        why: "a Deployment per revision: server-side apply, scale handover, orphan deletion",
    },
    Rule {
        api_group: "",
        resources: &["services"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        scope: Scope::Watched,
        why: "Service <name> in front of the serving revision",
    },
    Rule {
        api_group: "autoscaling",
        resources: &["horizontalpodautoscalers"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        scope: Scope::Watched,
        why: "the HPA of the serving revision, removed when autoscaling is unset",
    },
    Rule {
        api_group: "",
        resources: &["pods"],
        verbs: &["list", "watch"],
        scope: Scope::Watched,
        why: "the ready pods of each revision and their IPs: where to scrape the monitors' reports; a finished retraining Job's pods, for the model it reported (termination message)",
    },
    Rule {
        api_group: "networking.k8s.io",
        resources: &["networkpolicies"],
        verbs: &["get", "create", "patch", "delete"],
        scope: Scope::Watched,
        why: "NetworkPolicy <name>: clients to the monitor, the operator to its admin port, nobody to the model port (read back once per resync, not watched)",
    },
    Rule {
        api_group: "gateway.networking.k8s.io",
        resources: &["httproutes"],
        verbs: &["get", "create", "patch", "delete"],
        scope: Scope::Watched,
        why: "HTTPRoute <name> weighting <name>-stable and <name>-canary in GatewayAPI traffic mode (read to check ownership and acceptance)",
    },
    Rule {
        api_group: "batch",
        resources: &["jobs"],
        verbs: &["list", "watch", "create", "delete"],
        scope: Scope::Watched,
        why: "retraining Jobs: watched for their outcome, created when drift is declared, deleted beyond historyLimit",
    },
    Rule {
        api_group: "batch",
        resources: &["cronjobs"],
        verbs: &["get", "create", "patch", "delete"],
        scope: Scope::Watched,
        why: "CronJob <name>-cron of scheduled retraining: server-side apply, removed with the schedule (read back once per resync)",
    },
    Rule {
        api_group: "drover.dev",
        resources: &["modeldeployments"],
        verbs: &["patch"],
        scope: Scope::Watched,
        why: "autoDeploy only: set spec.model to an accepted retraining candidate (JSON merge patch, field manager drover-retraining)",
    },
    Rule {
        api_group: "",
        resources: &["configmaps"],
        verbs: &["get"],
        scope: Scope::Watched,
        why: "check that the reference profile named in spec.monitoring.reference exists",
    },
    Rule {
        api_group: "",
        resources: &["secrets"],
        verbs: &["get", "create"],
        scope: Scope::Watched,
        why: "the per-ModelDeployment monitor token: created once, read to scrape reports; and the Secrets a spec names (webhook URL, MLflow registry token), read by name (no list, no watch)",
    },
    Rule {
        api_group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
        scope: Scope::Watched,
        why: "Events on ModelDeployments (kube Recorder creates, then patches series)",
    },
    Rule {
        api_group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["get", "create", "update"],
        scope: Scope::Operator,
        why: "leader election",
    },
];

fn policy_rules(scope: Scope) -> Vec<PolicyRule> {
    RULES
        .iter()
        .filter(|r| r.scope == scope)
        .map(|r| PolicyRule {
            api_groups: Some(vec![r.api_group.to_string()]),
            resources: Some(r.resources.iter().map(|s| s.to_string()).collect()),
            verbs: r.verbs.iter().map(|s| s.to_string()).collect(),
            ..PolicyRule::default()
        })
        .collect()
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "drover".to_string()),
            (
                "app.kubernetes.io/component".to_string(),
                "operator".to_string(),
            ),
        ])),
        ..ObjectMeta::default()
    }
}

/// One generated RBAC object.
#[derive(Serialize)]
#[serde(untagged)]
pub enum RbacObject {
    /// The operator's ServiceAccount.
    ServiceAccount(ServiceAccount),
    /// Cluster-wide rules (watching every namespace).
    ClusterRole(ClusterRole),
    /// Its binding.
    ClusterRoleBinding(ClusterRoleBinding),
    /// Namespaced rules.
    Role(Role),
    /// Their binding.
    RoleBinding(RoleBinding),
}

/// The RBAC objects for an operator named `name` in `namespace` watching `watched`
/// namespaces (empty: all, through a ClusterRole).
pub fn objects(name: &str, namespace: &str, watched: &[String]) -> Vec<RbacObject> {
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: name.into(),
        namespace: Some(namespace.into()),
        ..Subject::default()
    };
    let mut out = vec![RbacObject::ServiceAccount(ServiceAccount {
        metadata: meta(name, Some(namespace)),
        automount_service_account_token: Some(true),
        ..ServiceAccount::default()
    })];
    if watched.is_empty() {
        out.push(RbacObject::ClusterRole(ClusterRole {
            metadata: meta(name, None),
            rules: Some(policy_rules(Scope::Watched)),
            ..ClusterRole::default()
        }));
        out.push(RbacObject::ClusterRoleBinding(ClusterRoleBinding {
            metadata: meta(name, None),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: name.into(),
            },
            subjects: Some(vec![subject.clone()]),
        }));
    } else {
        for ns in watched {
            out.push(RbacObject::Role(Role {
                metadata: meta(name, Some(ns)),
                rules: Some(policy_rules(Scope::Watched)),
            }));
            out.push(RbacObject::RoleBinding(role_binding(
                name, ns, &subject, name,
            )));
        }
    }
    let leader = format!("{name}-leader-election");
    out.push(RbacObject::Role(Role {
        metadata: meta(&leader, Some(namespace)),
        rules: Some(policy_rules(Scope::Operator)),
    }));
    out.push(RbacObject::RoleBinding(role_binding(
        &leader, namespace, &subject, &leader,
    )));
    out
}

fn role_binding(name: &str, namespace: &str, subject: &Subject, role: &str) -> RoleBinding {
    RoleBinding {
        metadata: meta(name, Some(namespace)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: role.into(),
        },
        subjects: Some(vec![subject.clone()]),
    }
}

/// The RBAC objects as a YAML stream.
pub fn to_yaml(
    name: &str,
    namespace: &str,
    watched: &[String],
) -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for object in objects(name, namespace, watched) {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&object)?);
    }
    Ok(out)
}

/// Where the Helm chart keeps the rules, as generated by [`helm_rules`] (`drover rbac --helm`).
pub const HELM_RULES_PATH: &str = "charts/drover/templates/_rbac_rules.tpl";

/// Names of the Helm templates [`helm_rules`] defines, per scope.
pub fn helm_template_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Watched => "drover.rbac.watchedRules",
        Scope::Operator => "drover.rbac.operatorRules",
    }
}

/// The chart's `templates/_rbac_rules.tpl`: the rules of each scope as a named Helm template
/// (a YAML list with each rule's reason as a comment), so the chart renders exactly [`RULES`].
pub fn helm_rules() -> String {
    let quoted = |items: &[&str]| {
        items
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::from(
        "{{/* Generated by `drover rbac --helm` from RULES in src/rbac.rs: do not edit. */}}\n",
    );
    for scope in [Scope::Watched, Scope::Operator] {
        out.push_str(&format!(
            "{{{{- define \"{}\" -}}}}\n",
            helm_template_name(scope)
        ));
        for rule in RULES.iter().filter(|r| r.scope == scope) {
            out.push_str(&format!("# {}\n", rule.why.replace('\n', " ")));
            out.push_str(&format!("- apiGroups: [{:?}]\n", rule.api_group));
            out.push_str(&format!("  resources: [{}]\n", quoted(rule.resources)));
            out.push_str(&format!("  verbs: [{}]\n", quoted(rule.verbs)));
        }
        out.push_str("{{- end }}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_beyond_need() {
        for rule in RULES {
            assert!(!rule.verbs.contains(&"*"), "wildcard verb in {rule:?}");
            assert!(
                !rule.resources.contains(&"*"),
                "wildcard resource in {rule:?}"
            );
            if rule.resources.contains(&"secrets") {
                // Only the monitor tokens: read one by name, create it; never list or watch.
                assert_eq!(rule.verbs, &["get", "create"], "{rule:?}");
            }
            assert!(!rule.why.is_empty());
        }
    }

    #[test]
    fn namespaced_install_has_no_cluster_role() {
        let yaml = to_yaml("drover", "drover-system", &["ml".into()]).unwrap();
        assert!(!yaml.contains("kind: ClusterRole"), "{yaml}");
        assert!(yaml.contains("namespace: ml"));
        let all = to_yaml("drover", "drover-system", &[]).unwrap();
        assert!(all.contains("kind: ClusterRole\n"));
    }

    fn chart_file(path: &str) -> String {
        let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
    }

    #[test]
    fn chart_rules_are_generated_from_rules() {
        assert_eq!(
            chart_file(HELM_RULES_PATH),
            helm_rules(),
            "{HELM_RULES_PATH} is stale: run `cargo run -- rbac --helm > {HELM_RULES_PATH}`"
        );
    }

    #[test]
    fn chart_grants_only_the_generated_rules() {
        // Every `rules:` of a Role or ClusterRole in the chart's templates is exactly one of the
        // generated lists, and no template writes a rule of its own.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/drover/templates");
        let mut roles = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            let grants = lines
                .iter()
                .any(|l| l.trim() == "kind: Role" || l.trim() == "kind: ClusterRole");
            for (i, line) in lines.iter().enumerate() {
                if grants && line.trim_start().starts_with("rules:") {
                    roles += 1;
                    let next = lines.get(i + 1).copied().unwrap_or("");
                    assert!(
                        line.trim() == "rules:"
                            && [Scope::Watched, Scope::Operator].iter().any(|s| next
                                .contains(&format!("include \"{}\"", helm_template_name(*s)))),
                        "{}:{}: rules must be `rules:` followed by an include of a generated list, found {line:?} / {next:?}",
                        path.display(),
                        i + 1
                    );
                }
                assert!(
                    !line.contains("verbs:") && !line.contains("apiGroups:"),
                    "{}:{}: hand-written rule: {line}",
                    path.display(),
                    i + 1
                );
            }
        }
        assert!(roles >= 2, "no Role found in {}", dir.display());
        let generated = chart_file(HELM_RULES_PATH);
        for line in generated.lines().filter(|l| !l.starts_with('#')) {
            assert!(!line.contains("\"*\""), "wildcard in the chart: {line}");
        }
        let secrets: Vec<&str> = generated
            .lines()
            .filter(|l| l.contains("resources:") && l.contains("secrets"))
            .collect();
        assert_eq!(secrets.len(), 1, "{generated}");
    }
}
