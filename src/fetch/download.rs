//! Downloading a model's files into a local folder: one object, or every object under a prefix,
//! from an object store (through object_store's clients), a plain URL, or the MLflow tracking
//! server's artifact proxy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;

use super::FetchError;
use super::archive::safe_relative;
use super::mlflow::Registry;
use super::transport::{self, Client, Connector};
use super::uri::ModelUri;

/// Settings of S3-compatible stores that are not secrets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreSettings {
    /// Endpoint of an S3-compatible store (MinIO, Ceph, moto, …).
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
}

/// What a download wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
}

impl Written {
    fn add(&mut self, other: Written) {
        self.files += other.files;
        self.bytes += other.bytes;
    }
}

/// The object store and key of an `s3://`, `gs://` or `az://` URI. Credentials come from the
/// environment (the Secret named in the spec): `AWS_*`, `GOOGLE_*`, `AZURE_*`.
pub fn object_store_for(
    uri: &ModelUri,
    settings: &StoreSettings,
    client: &Client,
) -> Result<(Arc<dyn ObjectStore>, String), FetchError> {
    let retry = object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(60),
        ..object_store::RetryConfig::default()
    };
    let connector = Connector::new(client.clone());
    let built: object_store::Result<Arc<dyn ObjectStore>> = match uri {
        ModelUri::S3 { bucket, .. } => {
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry)
                .with_http_connector(connector);
            if let Some(endpoint) = &settings.endpoint {
                b = b
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"));
            }
            if let Some(region) = &settings.region {
                b = b.with_region(region);
            }
            b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        ModelUri::Gcs { bucket, .. } => object_store::gcp::GoogleCloudStorageBuilder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry)
            .with_http_connector(connector)
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
        ModelUri::Azure { container, .. } => object_store::azure::MicrosoftAzureBuilder::from_env()
            .with_container_name(container)
            .with_retry(retry)
            .with_http_connector(connector)
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
        other => {
            return Err(FetchError::Config(format!(
                "{other:?} is not an object store URI"
            )));
        }
    };
    let store = built.map_err(|e| {
        FetchError::Config(format!(
            "cannot set up the object store client (check the credentials Secret): {}",
            error_text(&e)
        ))
    })?;
    let key = match uri {
        ModelUri::S3 { key, .. } | ModelUri::Gcs { key, .. } | ModelUri::Azure { key, .. } => {
            key.clone()
        }
        _ => String::new(),
    };
    Ok((store, key))
}

/// The whole error chain, for one clear line.
pub fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text = format!("{text}: {next}");
        }
        source = s.source();
    }
    text
}

fn store_error(uri: &str, e: object_store::Error) -> FetchError {
    match e {
        object_store::Error::NotFound { .. } => {
            FetchError::NotFound(format!("{uri}: no such object or prefix"))
        }
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => FetchError::Denied(format!(
            "{uri}: access denied: check the credentials Secret ({})",
            error_text(&e)
        )),
        other => {
            let text = error_text(&other);
            // S3 answers a bad key id or signature with 403 inside a generic error.
            if text.contains("403")
                || text.contains("InvalidAccessKeyId")
                || text.contains("SignatureDoesNotMatch")
                || text.contains("AccessDenied")
            {
                FetchError::Denied(format!(
                    "{uri}: access denied: check the credentials Secret ({text})"
                ))
            } else {
                FetchError::Transfer(format!("{uri}: {text}"))
            }
        }
    }
}

/// Downloads the object `key`, or every object under it as a prefix, into `dest`: one object
/// becomes `dest/<name>`, a prefix's objects `dest/<name>/<rest of key>` (`name` is `None`
/// for a prefix whose objects go straight into `dest`).
pub async fn from_object_store(
    uri: &str,
    store: &dyn ObjectStore,
    key: &str,
    dest: &Path,
    name: Option<&str>,
) -> Result<Written, FetchError> {
    let is_prefix = key.is_empty() || key.ends_with('/');
    if !is_prefix {
        let location = StorePath::parse(key)
            .map_err(|e| FetchError::Config(format!("{uri}: not a valid object key: {e}")))?;
        match store.head(&location).await {
            Ok(_) => {
                let target = dest.join(name.unwrap_or("model"));
                let bytes = object_to_file(uri, store, &location, &target).await?;
                return Ok(Written { files: 1, bytes });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store_error(uri, e)),
        }
    }
    let prefix = key.trim_end_matches('/');
    let prefix_path = (!prefix.is_empty())
        .then(|| StorePath::parse(prefix))
        .transpose()
        .map_err(|e| FetchError::Config(format!("{uri}: not a valid prefix: {e}")))?;
    let objects: Vec<object_store::ObjectMeta> = store
        .list(prefix_path.as_ref())
        .try_collect()
        .await
        .map_err(|e| store_error(uri, e))?;
    if objects.is_empty() {
        return Err(FetchError::NotFound(format!(
            "{uri}: no such object, and no objects under it as a prefix"
        )));
    }
    let root = match name {
        Some(n) if !is_prefix => dest.join(n),
        _ => dest.to_path_buf(),
    };
    let mut written = Written::default();
    for meta in objects {
        let full = meta.location.as_ref();
        let rel = full
            .strip_prefix(prefix)
            .unwrap_or(full)
            .trim_start_matches('/');
        let rel = safe_relative(rel).map_err(|e| FetchError::Unsafe(e.to_string()))?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let bytes = object_to_file(uri, store, &meta.location, &root.join(rel)).await?;
        written.add(Written { files: 1, bytes });
    }
    Ok(written)
}

async fn object_to_file(
    uri: &str,
    store: &dyn ObjectStore,
    location: &StorePath,
    target: &Path,
) -> Result<u64, FetchError> {
    let result = store.get(location).await.map_err(|e| store_error(uri, e))?;
    let mut stream = result.into_stream();
    let mut file = create(target).await?;
    let mut bytes = 0u64;
    while let Some(chunk) = idle_bounded(stream.next(), uri).await? {
        let chunk = chunk.map_err(|e| store_error(uri, e))?;
        bytes += chunk.len() as u64;
        file.write_all(&chunk)
            .await
            .map_err(|e| FetchError::Io(format!("writing {}: {e}", target.display())))?;
    }
    finish(file, target).await?;
    Ok(bytes)
}

/// How long a download may go without receiving a byte: a server that stalls mid-body fails
/// the fetch (and the init container is retried) instead of holding the pod in Init forever.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

async fn idle_bounded<T>(
    next: impl std::future::Future<Output = T>,
    what: &str,
) -> Result<T, FetchError> {
    tokio::time::timeout(IDLE_TIMEOUT, next).await.map_err(|_| {
        FetchError::Transfer(format!("{what}: no data for {}s", IDLE_TIMEOUT.as_secs()))
    })
}

async fn create(target: &Path) -> Result<tokio::fs::File, FetchError> {
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| FetchError::Io(format!("creating {}: {e}", parent.display())))?;
    }
    tokio::fs::File::create(target)
        .await
        .map_err(|e| FetchError::Io(format!("creating {}: {e}", target.display())))
}

async fn finish(mut file: tokio::fs::File, target: &Path) -> Result<(), FetchError> {
    file.flush()
        .await
        .map_err(|e| FetchError::Io(format!("writing {}: {e}", target.display())))?;
    file.sync_all()
        .await
        .map_err(|e| FetchError::Io(format!("writing {}: {e}", target.display())))
}

/// Downloads one file from a URL with a GET (a bearer token from `HTTP_BEARER_TOKEN`, if set).
pub async fn from_url(
    client: &Client,
    url: &str,
    token: Option<&str>,
    target: &Path,
) -> Result<Written, FetchError> {
    // Only the part before the query is shown: a pre-signed URL's query is a credential.
    let shown = url.split('?').next().unwrap_or(url);
    let mut request = http::Request::get(url);
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(object_store::client::HttpRequestBody::empty())
        .map_err(|e| FetchError::Config(format!("{shown}: {e}")))?;
    let response = transport::send(client, request)
        .await
        .map_err(|e| FetchError::Transfer(format!("{shown}: {}", error_text(&e))))?;
    let status = response.status();
    match status.as_u16() {
        200..=299 => {}
        404 | 410 => return Err(FetchError::NotFound(format!("{shown}: HTTP {status}"))),
        401 | 403 => {
            return Err(FetchError::Denied(format!(
                "{shown}: HTTP {status}: check the credentials Secret"
            )));
        }
        _ => return Err(FetchError::Transfer(format!("{shown}: HTTP {status}"))),
    }
    let bytes = body_to_file(response, target, shown).await?;
    Ok(Written { files: 1, bytes })
}

async fn body_to_file(
    response: http::Response<hyper::body::Incoming>,
    target: &Path,
    shown: &str,
) -> Result<u64, FetchError> {
    use http_body_util::BodyExt;
    let mut body = response.into_body();
    let mut file = create(target).await?;
    let mut bytes = 0u64;
    while let Some(frame) = idle_bounded(body.frame(), shown).await? {
        let frame = frame.map_err(|e| FetchError::Transfer(format!("{shown}: {e}")))?;
        if let Ok(data) = frame.into_data() {
            bytes += data.len() as u64;
            file.write_all(&data)
                .await
                .map_err(|e| FetchError::Io(format!("writing {}: {e}", target.display())))?;
        }
    }
    finish(file, target).await?;
    Ok(bytes)
}

/// Downloads an artifact folder the tracking server proxies (`mlflow-artifacts:/PATH`), every
/// file below it, into `dest`.
pub async fn from_mlflow_artifacts(
    registry: &Registry,
    path: &str,
    dest: &Path,
) -> Result<Written, FetchError> {
    let mut written = Written::default();
    // Depth-first over folders; bounded by what the server lists.
    let mut pending: Vec<(String, PathBuf)> = vec![(path.to_string(), dest.to_path_buf())];
    while let Some((folder, local)) = pending.pop() {
        let entries = registry.list_artifacts(&folder).await?;
        if entries.is_empty() && folder == path {
            return Err(FetchError::NotFound(format!(
                "mlflow-artifacts:/{path}: the tracking server {} has no artifacts there",
                registry.url()
            )));
        }
        for entry in entries {
            let name = entry
                .path
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let rel = safe_relative(&name).map_err(|e| FetchError::Unsafe(e.to_string()))?;
            if rel.as_os_str().is_empty() || rel.components().count() != 1 {
                return Err(FetchError::Unsafe(format!(
                    "the tracking server listed {:?} in {folder}",
                    entry.path
                )));
            }
            let remote = format!("{folder}/{name}");
            if entry.is_dir {
                pending.push((remote, local.join(rel)));
                continue;
            }
            let target = local.join(rel);
            let response = registry.artifact(&remote).await?;
            let bytes =
                body_to_file(response, &target, &format!("mlflow-artifacts:/{remote}")).await?;
            written.add(Written { files: 1, bytes });
        }
    }
    Ok(written)
}
