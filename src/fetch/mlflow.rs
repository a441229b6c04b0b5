//! The MLflow REST API, as far as serving a registered model needs it: an alias to a version,
//! a version to where its files are, and (when the tracking server proxies artifacts) the
//! files themselves.
//!
//! In MLflow 3 a model version's `source` is a logged model (`models:/m-…`), not a storage
//! path, so the files are always located through `model-versions/get-download-uri`.

use std::time::Duration;

use bytes::Bytes;
use object_store::client::{HttpErrorKind, HttpRequestBody};
use serde::Deserialize;

use super::transport::{self, Client};
use super::uri::{RegistryRef, Selector};

/// Attempts of one registry call when the server is unreachable or answers 5xx/429.
pub const ATTEMPTS: u32 = 3;
/// Pause before the second attempt (doubled before each further one).
pub const FIRST_RETRY: Duration = Duration::from_millis(500);

/// Why the registry could not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Down, unreachable, or failing (after [`ATTEMPTS`] tries).
    #[error("MLflow registry {url} is unavailable: {why}")]
    Unavailable {
        /// Tracking URI.
        url: String,
        /// What happened on the last attempt.
        why: String,
    },
    /// The model, version, alias or artifact does not exist.
    #[error("MLflow registry {url}: {what} not found: {message}")]
    NotFound {
        /// Tracking URI.
        url: String,
        /// What was looked for.
        what: String,
        /// The server's message.
        message: String,
    },
    /// The token was refused (401/403).
    #[error("MLflow registry {url} refused the request ({status}): check the token Secret")]
    Denied {
        /// Tracking URI.
        url: String,
        /// HTTP status.
        status: u16,
    },
    /// The server answered something that is not the MLflow API.
    #[error("MLflow registry {url}: unexpected answer: {why}")]
    Invalid {
        /// Tracking URI.
        url: String,
        /// What was wrong.
        why: String,
    },
}

impl RegistryError {
    /// Whether trying again later may succeed (the operator keeps the last resolution then).
    pub fn is_transient(&self) -> bool {
        matches!(self, RegistryError::Unavailable { .. })
    }
}

/// A registered model version and where its files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Version number.
    pub version: String,
    /// Where its files are (`s3://…`, `mlflow-artifacts:/…`, …).
    pub location: String,
}

/// One entry of an artifact folder listing.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ArtifactFile {
    /// Base name.
    pub path: String,
    /// A folder.
    #[serde(default)]
    pub is_dir: bool,
    /// Size in bytes (files only).
    #[serde(default)]
    pub file_size: Option<u64>,
}

/// A client of one tracking server.
#[derive(Clone)]
pub struct Registry {
    base: url::Url,
    token: Option<String>,
    client: Client,
}

impl std::fmt::Debug for Registry {
    // The token is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Registry {
    /// A client of the tracking server at `tracking_uri` (`http(s)://host[:port][/prefix]`).
    pub fn new(tracking_uri: &str, token: Option<String>, client: Client) -> Result<Self, String> {
        let mut base = url::Url::parse(tracking_uri)
            .map_err(|e| format!("registry trackingUri {tracking_uri:?} is not a URL: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(format!(
                "registry trackingUri {tracking_uri:?} must be http:// or https:// with a host"
            ));
        }
        // A trailing slash makes `join` keep a path prefix (`https://host/mlflow/`).
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Self {
            base,
            token: token.filter(|t| !t.trim().is_empty()),
            client,
        })
    }

    /// The tracking URI as given (for messages).
    pub fn url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    fn endpoint(&self, path: &str, query: &[(&str, &str)]) -> Result<url::Url, RegistryError> {
        let mut url = self.base.join(path).map_err(|e| RegistryError::Invalid {
            url: self.url().to_string(),
            why: e.to_string(),
        })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// GET with bounded retries of what may pass (unreachable, 5xx, 429).
    async fn get(
        &self,
        url: &url::Url,
    ) -> Result<http::Response<hyper::body::Incoming>, RegistryError> {
        let mut delay = FIRST_RETRY;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            let mut request = http::Request::get(url.as_str());
            if let Some(token) = &self.token {
                request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let request =
                request
                    .body(HttpRequestBody::empty())
                    .map_err(|e| RegistryError::Invalid {
                        url: self.url().to_string(),
                        why: e.to_string(),
                    })?;
            match transport::send(&self.client, request).await {
                Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                    last = format!("HTTP {}", r.status());
                }
                Ok(r) => return Ok(r),
                Err(e) => {
                    last = match e.kind() {
                        HttpErrorKind::Connect => format!("cannot connect: {}", source_text(&e)),
                        HttpErrorKind::Timeout => "timed out".to_string(),
                        _ => source_text(&e),
                    }
                }
            }
        }
        Err(RegistryError::Unavailable {
            url: self.url().to_string(),
            why: format!("{last} (after {ATTEMPTS} attempts)"),
        })
    }

    /// GET a JSON endpoint; 4xx answers become [`RegistryError`]s naming `what`.
    async fn get_json(&self, url: &url::Url, what: &str) -> Result<Bytes, RegistryError> {
        let response = self.get(url).await?;
        let status = response.status().as_u16();
        let body =
            transport::body_bytes(response)
                .await
                .map_err(|why| RegistryError::Unavailable {
                    url: self.url().to_string(),
                    why,
                })?;
        self.check(status, &body, what)?;
        Ok(body)
    }

    fn check(&self, status: u16, body: &[u8], what: &str) -> Result<(), RegistryError> {
        if (200..300).contains(&status) {
            return Ok(());
        }
        let url = self.url().to_string();
        let (code, message) = parse_error(body);
        Err(match status {
            401 | 403 => RegistryError::Denied { url, status },
            404 => RegistryError::NotFound {
                url,
                what: what.to_string(),
                message,
            },
            // MLflow answers a missing alias with 400 INVALID_PARAMETER_VALUE.
            400 if code == "RESOURCE_DOES_NOT_EXIST" || message.contains("not found") => {
                RegistryError::NotFound {
                    url,
                    what: what.to_string(),
                    message,
                }
            }
            _ => RegistryError::Invalid {
                url,
                why: format!("HTTP {status} for {what}: {code} {message}"),
            },
        })
    }

    /// The version an alias names now.
    pub async fn alias_version(&self, name: &str, alias: &str) -> Result<String, RegistryError> {
        let url = self.endpoint(
            "api/2.0/mlflow/registered-models/alias",
            &[("name", name), ("alias", alias)],
        )?;
        let body = self
            .get_json(&url, &format!("alias {alias:?} of model {name:?}"))
            .await?;
        parse_alias(&body).map_err(|why| RegistryError::Invalid {
            url: self.url().to_string(),
            why,
        })
    }

    /// Where the files of a version are.
    pub async fn download_uri(&self, name: &str, version: &str) -> Result<String, RegistryError> {
        let url = self.endpoint(
            "api/2.0/mlflow/model-versions/get-download-uri",
            &[("name", name), ("version", version)],
        )?;
        let body = self
            .get_json(&url, &format!("version {version} of model {name:?}"))
            .await?;
        parse_download_uri(&body).map_err(|why| RegistryError::Invalid {
            url: self.url().to_string(),
            why,
        })
    }

    /// Resolves a reference to a version and its files' location. `pinned` is a version the
    /// operator resolved already: it is used instead of asking for the alias again, so the
    /// pod fetches what its revision names even if the alias has moved since.
    pub async fn resolve(
        &self,
        reference: &RegistryRef,
        pinned: Option<&str>,
    ) -> Result<Resolved, RegistryError> {
        let version = match (&reference.selector, pinned) {
            (_, Some(v)) => v.to_string(),
            (Selector::Version(v), None) => v.clone(),
            (Selector::Alias(a), None) => self.alias_version(&reference.name, a).await?,
        };
        let location = self.download_uri(&reference.name, &version).await?;
        Ok(Resolved { version, location })
    }

    /// The entries of an artifact folder the tracking server proxies.
    pub async fn list_artifacts(&self, path: &str) -> Result<Vec<ArtifactFile>, RegistryError> {
        let url = self.endpoint("api/2.0/mlflow-artifacts/artifacts", &[("path", path)])?;
        let body = self
            .get_json(&url, &format!("artifact folder {path:?}"))
            .await?;
        parse_artifact_list(&body).map_err(|why| RegistryError::Invalid {
            url: self.url().to_string(),
            why,
        })
    }

    /// Starts downloading one proxied artifact file.
    pub async fn artifact(
        &self,
        path: &str,
    ) -> Result<http::Response<hyper::body::Incoming>, RegistryError> {
        let mut url = self.endpoint("api/2.0/mlflow-artifacts/artifacts/", &[])?;
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| RegistryError::Invalid {
                    url: self.url().to_string(),
                    why: "tracking URI cannot have a path".into(),
                })?;
            segments.pop_if_empty();
            for part in path.split('/').filter(|p| !p.is_empty()) {
                segments.push(part);
            }
        }
        let response = self.get(&url).await?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let body = transport::body_bytes(response).await.unwrap_or_default();
        // `check` refuses every status outside 2xx.
        Err(self
            .check(status, &body, &format!("artifact {path:?}"))
            .err()
            .unwrap_or_else(|| RegistryError::Invalid {
                url: self.url().to_string(),
                why: format!("HTTP {status}"),
            }))
    }
}

fn source_text(e: &object_store::client::HttpError) -> String {
    super::download::error_text(e)
}

/// `registered-models/alias` → the version.
pub fn parse_alias(body: &[u8]) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Answer {
        model_version: Version,
    }
    #[derive(Deserialize)]
    struct Version {
        version: String,
    }
    serde_json::from_slice::<Answer>(body)
        .map(|a| a.model_version.version)
        .map_err(|e| format!("not a registered-models/alias answer: {e}"))
}

/// `model-versions/get-download-uri` → the location.
pub fn parse_download_uri(body: &[u8]) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Answer {
        artifact_uri: String,
    }
    let uri = serde_json::from_slice::<Answer>(body)
        .map(|a| a.artifact_uri)
        .map_err(|e| format!("not a get-download-uri answer: {e}"))?;
    if uri.is_empty() {
        return Err("get-download-uri answered an empty artifact_uri".into());
    }
    Ok(uri)
}

/// `mlflow-artifacts/artifacts?path=` → the entries (an empty or missing folder answers `{}`).
pub fn parse_artifact_list(body: &[u8]) -> Result<Vec<ArtifactFile>, String> {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(default)]
        files: Vec<ArtifactFile>,
    }
    serde_json::from_slice::<Answer>(body)
        .map(|a| a.files)
        .map_err(|e| format!("not an artifact listing: {e}"))
}

/// An MLflow error body → (error_code, message); anything else → ("", the body's start).
pub fn parse_error(body: &[u8]) -> (String, String) {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(default)]
        error_code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Answer>(body) {
        Ok(a) => (a.error_code, a.message),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            (String::new(), text.chars().take(200).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alias_answer_names_the_version() {
        let body = br#"{"model_version": {"name": "fraud", "version": "1", "source": "models:/m-efcc", "status": "READY", "aliases": ["champion"]}}"#;
        assert_eq!(parse_alias(body).unwrap(), "1");
        assert!(parse_alias(b"{}").is_err());
        assert!(parse_alias(b"<html>").is_err());
    }

    #[test]
    fn a_download_uri_answer_names_the_location() {
        let body =
            br#"{"artifact_uri": "mlflow-artifacts:/1/models/m-efcc6e54c8114a00b7f17b352c8d2471/artifacts"}"#;
        assert_eq!(
            parse_download_uri(body).unwrap(),
            "mlflow-artifacts:/1/models/m-efcc6e54c8114a00b7f17b352c8d2471/artifacts"
        );
        assert!(parse_download_uri(br#"{"artifact_uri": ""}"#).is_err());
    }

    #[test]
    fn artifact_listings_parse_also_when_empty() {
        let body = br#"{"files": [{"path": "MLmodel", "is_dir": false, "file_size": 1069}, {"path": "sub", "is_dir": true}]}"#;
        assert_eq!(
            parse_artifact_list(body).unwrap(),
            vec![
                ArtifactFile {
                    path: "MLmodel".into(),
                    is_dir: false,
                    file_size: Some(1069)
                },
                ArtifactFile {
                    path: "sub".into(),
                    is_dir: true,
                    file_size: None
                }
            ]
        );
        assert!(parse_artifact_list(b"{}").unwrap().is_empty());
    }

    #[test]
    fn errors_keep_the_servers_message() {
        let body = br#"{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Model Version (name=fraud, version=9) not found"}"#;
        assert_eq!(
            parse_error(body),
            (
                "RESOURCE_DOES_NOT_EXIST".to_string(),
                "Model Version (name=fraud, version=9) not found".to_string()
            )
        );
        assert_eq!(parse_error(b"Bad Gateway").1, "Bad Gateway");
    }

    #[tokio::test]
    async fn a_prefix_in_the_tracking_uri_is_kept_and_the_token_not_printed() {
        let client = transport::client().unwrap();
        let r = Registry::new(
            "https://ml.example.com/mlflow",
            Some("s3cr3t".into()),
            client,
        )
        .unwrap();
        let url = r
            .endpoint(
                "api/2.0/mlflow/registered-models/alias",
                &[("name", "a b"), ("alias", "x&y")],
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "https://ml.example.com/mlflow/api/2.0/mlflow/registered-models/alias?name=a+b&alias=x%26y"
        );
        assert!(!format!("{r:?}").contains("s3cr3t"));
        assert!(Registry::new("ftp://x", None, transport::client().unwrap()).is_err());
    }

    #[tokio::test]
    async fn a_registry_that_is_down_is_unavailable_after_bounded_retries() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let r = Registry::new(
            &format!("http://127.0.0.1:{port}"),
            None,
            transport::client().unwrap(),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let e = r.alias_version("fraud", "champion").await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(e.to_string().contains("after 3 attempts"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
