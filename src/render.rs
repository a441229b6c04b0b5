//! `drover render`: the child objects of a ModelDeployment, offline, with the same builders and
//! planner the operator uses (as if nothing existed in the cluster yet).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::api::ModelDeployment;
use crate::build::Child;
use crate::plan::{self, Action, Observed};

/// Why a file could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The YAML is not a ModelDeployment.
    #[error("{0}")]
    Parse(String),
    /// The spec is refused.
    #[error("invalid ModelDeployment {name}: {problems}")]
    Invalid {
        /// Object name.
        name: String,
        /// What is wrong.
        problems: String,
    },
    /// Output could not be serialised.
    #[error("cannot write YAML: {0}")]
    Yaml(String),
}

/// Parses every ModelDeployment in a YAML stream.
pub fn parse(text: &str) -> Result<Vec<ModelDeployment>, RenderError> {
    serde_saphyr::from_multiple::<ModelDeployment>(text)
        .map_err(|e| RenderError::Parse(e.to_string()))
}

/// The children the operator would create first for `md`, as a YAML stream.
pub fn render(md: &ModelDeployment) -> Result<String, RenderError> {
    let mut md = md.clone();
    // Offline there is no uid: use a recognisable placeholder so owner references are visible.
    md.metadata
        .uid
        .get_or_insert_with(|| "00000000-0000-0000-0000-000000000000".into());
    md.metadata
        .namespace
        .get_or_insert_with(|| "default".into());
    if let Err(problems) = crate::validate::validate(&md.spec) {
        return Err(RenderError::Invalid {
            name: md.metadata.name.clone().unwrap_or_default(),
            problems: problems.join("; "),
        });
    }
    // A first apply: nothing exists yet (an HTTPRoute neither).
    let observed = Observed {
        route: plan::RouteState::Absent,
        ..Observed::default()
    };
    let plan = plan::plan(
        &md,
        &observed,
        &plan::Settings::default(),
        Timestamp::UNIX_EPOCH,
    );
    let mut out = String::new();
    for action in plan.actions {
        if let Action::Apply(child) = action {
            out.push_str("---\n");
            let yaml = match child {
                Child::Deployment(d) => serde_saphyr::to_string(&d),
                Child::Service(s) => serde_saphyr::to_string(&s),
                Child::Autoscaler(h) => serde_saphyr::to_string(&h),
                Child::NetworkPolicy(p) => serde_saphyr::to_string(&p),
                Child::Route(r) => serde_saphyr::to_string(&r),
                Child::CronJob(c) => serde_saphyr::to_string(&c),
            };
            out.push_str(&yaml.map_err(|e| RenderError::Yaml(e.to_string()))?);
        }
    }
    Ok(out)
}

/// The owner reference a rendered child carries (for tests).
pub fn placeholder_owner(md: &ModelDeployment) -> Option<OwnerReference> {
    let mut md = md.clone();
    md.metadata
        .uid
        .get_or_insert_with(|| "00000000-0000-0000-0000-000000000000".into());
    crate::build::owner_reference(&md)
}
