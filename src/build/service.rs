//! Service `<name>`: the address clients call. It selects exactly the revision that should get
//! traffic.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::deployment::SERVING_PORT_NAME;
use super::{child_meta, stamp_spec_hash};
use crate::api::ModelDeployment;
use crate::naming;

/// Port the Service listens on.
pub const SERVICE_PORT: i32 = 80;

/// Builds Service `<name>` sending traffic to the pods of `serving_revision`.
pub fn build(md: &ModelDeployment, serving_revision: &str) -> Service {
    let name = md.name_any();
    let mut service = Service {
        metadata: child_meta(md, naming::service(&name)),
        spec: Some(ServiceSpec {
            selector: Some(naming::revision_selector(&name, serving_revision)),
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
