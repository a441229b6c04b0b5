//! What can go wrong for a `drover`/`kubectl drover` verb, each with the words a person needs.

use std::time::Duration;

/// An error of a CLI verb; its text is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No kubeconfig anywhere and not inside a cluster.
    #[error("no kubeconfig found {0}; set KUBECONFIG, pass --kubeconfig, or create ~/.kube/config")]
    NoKubeconfig(String),
    /// The kubeconfig exists but cannot be used (bad context, cluster, certificate …).
    #[error("cannot use the kubeconfig: {0}")]
    Kubeconfig(String),
    /// The ModelDeployment does not exist.
    #[error("modeldeployment {name:?} not found in namespace {namespace:?}")]
    NotFound {
        /// Name asked for.
        name: String,
        /// Namespace looked in.
        namespace: String,
    },
    /// The API server does not know the resource type at all.
    #[error(
        "the ModelDeployment CRD (modeldeployments.drover.dev, v1alpha1) is not installed on this cluster; install it with `drover crd | kubectl apply --server-side -f -`"
    )]
    CrdMissing,
    /// The control makes no sense in the rollout's current phase.
    #[error("refusing: {0}; pass --force to send it anyway")]
    Refused(String),
    /// `--wait` ran out of time.
    #[error(
        "{control} was sent (token {token}) but the operator had not applied it after {}s; is the drover operator running? Follow it with `{follow}`",
        .waited.as_secs()
    )]
    Timeout {
        /// The control sent.
        control: String,
        /// Its token.
        token: String,
        /// How long was waited.
        waited: Duration,
        /// The command that shows the rollout.
        follow: String,
    },
    /// No answer from the API server at all.
    #[error("cannot reach the Kubernetes API server{server}: {reason}")]
    Unreachable {
        /// ` at <url>`, when known.
        server: String,
        /// The error and its causes.
        reason: String,
    },
    /// The object came back in a shape this CLI cannot read.
    #[error(
        "cannot read modeldeployment {namespace}/{name}: {reason} (is this CLI older than the operator?)"
    )]
    Decode {
        /// Name.
        name: String,
        /// Namespace.
        namespace: String,
        /// What did not fit.
        reason: String,
    },
    /// Any other answer of the API server (forbidden, conflict, unavailable …).
    #[error("Kubernetes API: {0}")]
    Api(String),
    /// Printing failed (closed pipe …).
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// Classifies an error of a request for `namespace/name`: the object missing and the
    /// resource type missing are both 404, told apart by the body. A missing object gets a
    /// `Status` with reason `NotFound`; an unknown path gets the API server's plain-text
    /// "404 page not found", which kube turns into a `Status` without that reason.
    pub fn from_kube(error: kube::Error, namespace: &str, name: &str) -> Self {
        match error {
            kube::Error::Api(status) if status.code == 404 => {
                if status.reason == "NotFound" {
                    CliError::NotFound {
                        name: name.to_string(),
                        namespace: namespace.to_string(),
                    }
                } else {
                    CliError::CrdMissing
                }
            }
            kube::Error::Api(status) => {
                let reason = if status.reason.is_empty() {
                    status.code.to_string()
                } else {
                    status.reason.clone()
                };
                CliError::Api(format!("{reason}: {}", status.message))
            }
            e @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => CliError::Unreachable {
                server: String::new(),
                reason: with_causes(&e),
            },
            e @ kube::Error::Auth(_) => CliError::Kubeconfig(with_causes(&e)),
            other => CliError::Api(with_causes(&other)),
        }
    }
}

/// An error and every cause under it, since the top line alone ("client error (Connect)")
/// rarely says what to fix.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(&format!(": {line}"));
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(status: Status) -> kube::Error {
        kube::Error::Api(status.boxed())
    }

    #[test]
    fn a_404_is_the_object_or_the_crd_missing_and_other_answers_keep_their_reason() {
        let gone = api(Status::failure(
            "modeldeployments.drover.dev \"fraud\" not found",
            "NotFound",
        )
        .with_code(404));
        assert_eq!(
            CliError::from_kube(gone, "ml", "fraud").to_string(),
            r#"modeldeployment "fraud" not found in namespace "ml""#
        );
        let no_path =
            api(Status::failure("404 page not found", "Failed to parse error data").with_code(404));
        assert!(matches!(
            CliError::from_kube(no_path, "ml", "fraud"),
            CliError::CrdMissing
        ));
        let forbidden =
            api(Status::failure("user \"me\" cannot patch", "Forbidden").with_code(403));
        assert_eq!(
            CliError::from_kube(forbidden, "ml", "fraud").to_string(),
            "Kubernetes API: Forbidden: user \"me\" cannot patch"
        );
    }
}
