//! Resolving a `models:/` uri through the MLflow registry: the I/O half of it, done in the
//! observe step so the planner stays pure. Answers are cached per (namespace, registry, uri)
//! for [`RESOLVED_TTL`] (failures for [`FAILED_TTL`]), each lookup is bounded (the client's
//! retries, and [`LOOKUP_TIMEOUT`] over all of them), and a failure is handed to the planner
//! as [`RegistryState::Unresolved`] rather than failing the reconcile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::api::ModelDeployment;
use crate::fetch::mlflow::{Registry, RegistryError};
use crate::fetch::transport;
use crate::fetch::uri::ModelUri;
use crate::plan::RegistryState;

/// How long a resolution is used before the registry is asked again.
pub const RESOLVED_TTL: Duration = Duration::from_secs(60);
/// How long a failure is remembered (so a down registry is not hammered by every reconcile).
pub const FAILED_TTL: Duration = Duration::from_secs(15);
/// The longest one lookup may hold a reconcile, retries included.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(20);

type Key = (String, String, String);

/// The registry answers this operator remembers.
#[derive(Default)]
pub struct RegistryCache {
    answers: Mutex<HashMap<Key, (RegistryState, Instant)>>,
    client: Mutex<Option<transport::Client>>,
}

impl RegistryCache {
    fn client(&self) -> Result<transport::Client, String> {
        let mut slot = self
            .client
            .lock()
            .map_err(|_| "registry client unavailable".to_string())?;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = transport::client()?;
        *slot = Some(c.clone());
        Ok(c)
    }
}

/// What the registry says about `md`'s uri (`NotUsed` when it names no registry model).
pub async fn observe(
    md: &ModelDeployment,
    client: &Client,
    cache: &RegistryCache,
) -> RegistryState {
    let model = &md.spec.model;
    let Some(Ok(ModelUri::Registry(reference))) = model.uri.as_deref().map(ModelUri::parse) else {
        return RegistryState::NotUsed;
    };
    let Some(registry) = &model.registry else {
        return RegistryState::Unresolved {
            transient: false,
            message: "spec.model.registry is required for a models:/ uri".into(),
        };
    };
    let namespace = md.namespace().unwrap_or_default();
    let key = (
        namespace.clone(),
        registry.tracking_uri.clone(),
        reference.to_string(),
    );
    let cached = cache.answers.lock().ok().and_then(|a| a.get(&key).cloned());
    if let Some((state, at)) = cached {
        let ttl = match state {
            RegistryState::Resolved { .. } => RESOLVED_TTL,
            _ => FAILED_TTL,
        };
        if at.elapsed() < ttl {
            return state;
        }
    }
    let state = lookup(md, &namespace, client, cache, &reference).await;
    if let Ok(mut a) = cache.answers.lock() {
        a.insert(key, (state.clone(), Instant::now()));
    }
    state
}

async fn lookup(
    md: &ModelDeployment,
    namespace: &str,
    client: &Client,
    cache: &RegistryCache,
    reference: &crate::fetch::uri::RegistryRef,
) -> RegistryState {
    let Some(spec) = &md.spec.model.registry else {
        return RegistryState::NotUsed;
    };
    let token = match &spec.token_secret_ref {
        None => None,
        Some(r) => {
            let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
            match api.get_opt(&r.name).await {
                Ok(Some(secret)) => {
                    let value = secret
                        .data
                        .as_ref()
                        .and_then(|d| d.get(&r.key))
                        .and_then(|b| String::from_utf8(b.0.clone()).ok())
                        .map(|t| t.trim().to_string());
                    match value {
                        Some(t) if !t.is_empty() => Some(t),
                        _ => {
                            return RegistryState::Unresolved {
                                transient: false,
                                message: format!(
                                    "Secret {} has no key {} with a token (spec.model.registry.tokenSecretRef)",
                                    r.name, r.key
                                ),
                            };
                        }
                    }
                }
                Ok(None) => {
                    return RegistryState::Unresolved {
                        transient: false,
                        message: format!(
                            "Secret {} named in spec.model.registry.tokenSecretRef does not exist",
                            r.name
                        ),
                    };
                }
                Err(e) => {
                    return RegistryState::Unresolved {
                        transient: true,
                        message: format!("cannot read Secret {}: {e}", r.name),
                    };
                }
            }
        }
    };
    let http = match cache.client() {
        Ok(c) => c,
        Err(why) => {
            return RegistryState::Unresolved {
                transient: true,
                message: why,
            };
        }
    };
    let registry = match Registry::new(&spec.tracking_uri, token, http) {
        Ok(r) => r,
        Err(why) => {
            return RegistryState::Unresolved {
                transient: false,
                message: why,
            };
        }
    };
    let resolved = tokio::time::timeout(LOOKUP_TIMEOUT, registry.resolve(reference, None)).await;
    match resolved {
        Ok(Ok(r)) => {
            // A location the initializer could not fetch is as good as none.
            match ModelUri::parse(&r.location) {
                Ok(ModelUri::Registry(_) | ModelUri::Pvc { .. }) | Err(_) => {
                    RegistryState::Unresolved {
                        transient: false,
                        message: format!(
                            "version {} is stored at {:?}, which Drover cannot fetch",
                            r.version, r.location
                        ),
                    }
                }
                Ok(_) => RegistryState::Resolved {
                    version: r.version,
                    location: r.location,
                },
            }
        }
        Ok(Err(e)) => RegistryState::Unresolved {
            transient: e.is_transient(),
            message: e.to_string(),
        },
        Err(_) => RegistryState::Unresolved {
            transient: true,
            message: RegistryError::Unavailable {
                url: registry.url().to_string(),
                why: format!("no answer within {}s", LOOKUP_TIMEOUT.as_secs()),
            }
            .to_string(),
        },
    }
}
