//! Service `<name>`: the address clients call. It selects exactly the revisions that should get
//! traffic: one revision, or — while a canary runs on replica-ratio traffic — every pod of the
//! model, so the share each revision gets is the share of ready pods it has.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::deployment::SERVING_PORT_NAME;
use super::{child_meta, stamp_spec_hash};
use crate::api::ModelDeployment;
use crate::naming;

/// Port the Service listens on.
pub const SERVICE_PORT: i32 = 80;

/// Names the revision that serves (all of the traffic, or stable's share during a split), so
/// the serving revision can be recovered from the Service when status is lost.
pub const ANNOTATION_STABLE_REVISION: &str = "drover.dev/stable-revision";

/// Which pods the Service sends traffic to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection<'a> {
    /// The pods of one revision.
    Revision(&'a str),
    /// Every pod of the model: the stable revision and the canary beside it (replica-ratio
    /// traffic). Only revisions Drover keeps running have pods: a rolled-back canary is at zero
    /// replicas, and a revision kept warm is never split with.
    Split {
        /// The revision that served before the split.
        stable: &'a str,
    },
}

impl Selection<'_> {
    /// The revision named as serving.
    pub fn stable(&self) -> &str {
        match self {
            Selection::Revision(r) | Selection::Split { stable: r } => r,
        }
    }
}

/// Builds Service `<name>` sending traffic to the pods `selection` picks.
pub fn build(md: &ModelDeployment, selection: Selection<'_>) -> Service {
    build_named(md, naming::service(&md.name_any()), selection)
}

/// Builds a Service called `service` sending traffic to the pods `selection` picks (the
/// Gateway API backends `<name>-stable` and `<name>-canary`).
pub fn build_named(md: &ModelDeployment, service: String, selection: Selection<'_>) -> Service {
    let name = md.name_any();
    let selector = match selection {
        Selection::Revision(revision) => naming::revision_selector(&name, revision),
        Selection::Split { .. } => {
            BTreeMap::from([(naming::LABEL_MODEL.to_string(), name.clone())])
        }
    };
    let mut metadata = child_meta(md, service);
    metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(
            ANNOTATION_STABLE_REVISION.to_string(),
            selection.stable().to_string(),
        );
    let mut service = Service {
        metadata,
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(SERVING_PORT_NAME.into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String(SERVING_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    stamp_spec_hash(&mut service, |s| &mut s.metadata);
    service
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md() -> ModelDeployment {
        serde_saphyr::from_str(
            "apiVersion: drover.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {name: fraud, namespace: ml, uid: u-1}\nspec:\n  model: {version: '1', image: 'fraud:1'}\n",
        )
        .unwrap()
    }

    #[test]
    fn one_revision_or_every_pod_of_the_model() {
        let one = build(&md(), Selection::Revision("aaa"));
        let selector = one.spec.as_ref().unwrap().selector.clone().unwrap();
        assert_eq!(selector[naming::LABEL_REVISION], "aaa");
        assert_eq!(one.annotations()[ANNOTATION_STABLE_REVISION], "aaa");

        let split = build(&md(), Selection::Split { stable: "aaa" });
        let selector = split.spec.as_ref().unwrap().selector.clone().unwrap();
        assert!(!selector.contains_key(naming::LABEL_REVISION));
        assert_eq!(selector[naming::LABEL_MODEL], "fraud");
        assert_eq!(split.annotations()[ANNOTATION_STABLE_REVISION], "aaa");
        assert_ne!(
            split.annotations()[naming::ANNOTATION_SPEC_HASH],
            one.annotations()[naming::ANNOTATION_SPEC_HASH],
            "a change of selection is a change to apply"
        );
    }
}
