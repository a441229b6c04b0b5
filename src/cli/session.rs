//! The thin I/O part of the CLI: load the kubeconfig, read the ModelDeployment, send a control
//! as a merge patch of one annotation, poll until the operator has applied it.

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};
use serde_json::Value;

use super::Target;
use super::control::{self, Control};
use super::error::CliError;
use crate::api::ModelDeployment;

/// Field manager of the CLI's patches, so `managedFields` tell a person's controls apart.
pub const FIELD_MANAGER: &str = "drover-cli";

/// A client and the namespace the verbs act in.
pub struct Session {
    client: Client,
    namespace: String,
    program: String,
    server: Option<String>,
}

/// A ModelDeployment as read: the typed object and its status exactly as the server sent it.
pub struct Fetched {
    /// The typed object.
    pub model: ModelDeployment,
    /// `status` as the server sent it (`null` when there is none yet).
    pub raw_status: Value,
}

impl Session {
    /// A session on an existing client (tests hand in a mocked one).
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            program: "drover".into(),
            server: None,
        }
    }

    /// How the program was invoked (`drover` or `kubectl drover`), for hints in the output.
    pub fn with_program(mut self, program: impl Into<String>) -> Self {
        self.program = program.into();
        self
    }

    /// Connects like kubectl: `--kubeconfig`, else `KUBECONFIG`, else `~/.kube/config`, else
    /// the in-cluster service account; the namespace is `-n`, else the context's namespace.
    pub async fn connect(target: &Target) -> Result<Self, CliError> {
        let options = KubeConfigOptions {
            context: target.context.clone(),
            cluster: target.cluster.clone(),
            user: target.user.clone(),
        };
        let loaded = match &target.kubeconfig {
            Some(path) => match Kubeconfig::read_from(path) {
                Ok(kubeconfig) => Config::from_custom_kubeconfig(kubeconfig, &options).await,
                Err(e) => Err(e),
            },
            None => Config::from_kubeconfig(&options).await,
        };
        let config = match loaded {
            Ok(config) => config,
            Err(e) if let Some(where_) = missing(&e) => {
                let explicit = target.kubeconfig.is_some() || target.context.is_some();
                if explicit || std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
                    return Err(CliError::NoKubeconfig(where_));
                }
                Config::incluster().map_err(|e| CliError::Kubeconfig(e.to_string()))?
            }
            Err(e) => return Err(CliError::Kubeconfig(e.to_string())),
        };
        let namespace = target
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| CliError::Kubeconfig(e.to_string()))?;
        let mut session = Self::new(client, namespace);
        session.server = Some(server);
        Ok(session)
    }

    /// The namespace the verbs act in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// How the program was invoked.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The command that shows the rollout of `name`.
    pub fn follow(&self, name: &str) -> String {
        format!("{} status {name} -n {}", self.program, self.namespace)
    }

    fn error(&self, error: kube::Error, name: &str) -> CliError {
        match CliError::from_kube(error, &self.namespace, name) {
            CliError::Unreachable { reason, .. } => CliError::Unreachable {
                server: self
                    .server
                    .as_ref()
                    .map(|s| format!(" at {s}"))
                    .unwrap_or_default(),
                reason,
            },
            other => other,
        }
    }

    // Untyped so that `-o json` prints the status exactly as stored, fields this build does
    // not know included.
    fn api(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &ApiResource::erase::<ModelDeployment>(&()),
        )
    }

    /// Reads the ModelDeployment `name`.
    pub async fn fetch(&self, name: &str) -> Result<Fetched, CliError> {
        let object = self
            .api()
            .get(name)
            .await
            .map_err(|e| self.error(e, name))?;
        let raw_status = object.data.get("status").cloned().unwrap_or(Value::Null);
        let decode = |reason: String| CliError::Decode {
            name: name.to_string(),
            namespace: self.namespace.clone(),
            reason,
        };
        let value = serde_json::to_value(&object).map_err(|e| decode(e.to_string()))?;
        let model = serde_json::from_value(value).map_err(|e| decode(e.to_string()))?;
        Ok(Fetched { model, raw_status })
    }

    /// Sets the control's annotation to `token` (JSON merge patch: nothing else changes).
    pub async fn send(&self, name: &str, control: Control, token: &str) -> Result<(), CliError> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        self.api()
            .patch(name, &params, &Patch::Merge(control::patch(control, token)))
            .await
            .map_err(|e| self.error(e, name))?;
        Ok(())
    }

    /// Polls every `every` until the operator records `token` as applied, for at most
    /// `timeout`; returns the object as it then is.
    pub async fn wait_applied(
        &self,
        name: &str,
        control: Control,
        token: &str,
        timeout: Duration,
        every: Duration,
    ) -> Result<ModelDeployment, CliError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let fetched = self.fetch(name).await?;
            if control::applied(control, fetched.model.status.as_ref(), token) {
                return Ok(fetched.model);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(CliError::Timeout {
                    control: control.to_string(),
                    token: token.to_string(),
                    waited: timeout,
                    follow: self.follow(name),
                });
            }
            tokio::time::sleep(every.min(deadline - now)).await;
        }
    }
}

/// A token nobody has sent before: now, and 32 random bits.
pub fn fresh_token() -> String {
    control::token(jiff::Timestamp::now(), fastrand::u32(..))
}

/// Where no kubeconfig was found, when that is the error.
fn missing(e: &KubeconfigError) -> Option<String> {
    match e {
        KubeconfigError::FindPath => Some("(no home directory to look in)".into()),
        KubeconfigError::ReadConfig(io, path) if io.kind() == std::io::ErrorKind::NotFound => {
            Some(format!("at {}", path.display()))
        }
        _ => None,
    }
}
