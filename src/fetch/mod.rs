//! The storage initializer, `drover fetch-model`: puts `spec.model.uri` into the folder the
//! model container reads (`/mnt/models`) before the model starts, and fails loudly otherwise.
//!
//! It runs as a regular init container of every serving pod whose model has a fetchable uri.
//! Files are downloaded into a staging folder, checked (`sha256`), unpacked (when asked), and
//! only then moved into place, so the model never sees half a model. Credentials come from
//! the environment the pod gives it (the spec's Secret) and are never printed.

pub mod archive;
pub mod checksum;
pub mod download;
pub mod mlflow;
pub mod transport;
pub mod uri;

use std::path::{Path, PathBuf};

use serde::Serialize;

use download::{StoreSettings, Written};
use uri::{ModelUri, Selector};

/// Environment variable holding the MLflow token (from the registry's token Secret).
pub const ENV_REGISTRY_TOKEN: &str = "MLFLOW_TRACKING_TOKEN";
/// Environment variable holding a bearer token for `http(s)://` downloads.
pub const ENV_HTTP_TOKEN: &str = "HTTP_BEARER_TOKEN";
/// Name of the record `fetch-model` leaves next to the model.
pub const RECORD_FILE: &str = ".drover-model.json";
const STAGING: &str = ".drover-staging";
const ARCHIVE_STAGING: &str = ".drover-archive";

/// Arguments of `drover fetch-model`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct FetchArgs {
    /// What to fetch: s3://, gs://, azure:// (az://), http(s)://, or models:/NAME/VERSION and
    /// models:/NAME@ALIAS with --registry.
    #[arg(long, env = "MODEL_URI")]
    pub uri: String,
    /// The folder to fill (created if missing).
    #[arg(long, default_value = uri::MODEL_ROOT)]
    pub dest: PathBuf,
    /// Expected SHA-256 of the file (or archive, or folder manifest: see docs/models.md).
    #[arg(long)]
    pub sha256: Option<String>,
    /// Unpack the fetched .tar.gz / .tgz / .tar / .zip into --dest.
    #[arg(long)]
    pub unpack: bool,
    /// MLflow tracking URI for models:/ URIs (token from MLFLOW_TRACKING_TOKEN).
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    pub registry: Option<String>,
    /// The registry version to fetch, as the operator resolved it: an alias is not resolved
    /// again, so the pod gets the version its revision names.
    #[arg(long)]
    pub registry_version: Option<String>,
    /// Endpoint of an S3-compatible store (also AWS_ENDPOINT).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Region of the S3 bucket (also AWS_REGION).
    #[arg(long)]
    pub region: Option<String>,
}

/// Why fetching failed; each message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URI cannot be fetched.
    #[error(transparent)]
    Uri(#[from] uri::UriError),
    /// The arguments or environment are incomplete.
    #[error("{0}")]
    Config(String),
    /// Nothing at the location.
    #[error("not found: {0}")]
    NotFound(String),
    /// The credentials were refused.
    #[error("{0}")]
    Denied(String),
    /// The registry could not resolve the model.
    #[error(transparent)]
    Registry(#[from] mlflow::RegistryError),
    /// The download does not have the expected checksum.
    #[error(
        "checksum mismatch for {what}: expected sha256 {expected}, got {actual}; the model was not installed"
    )]
    Checksum {
        /// What was checked.
        what: String,
        /// The spec's value.
        expected: String,
        /// What was downloaded.
        actual: String,
    },
    /// The archive could not be unpacked.
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    /// A remote name that would land outside the model folder.
    #[error("refused: {0}")]
    Unsafe(String),
    /// The transfer failed.
    #[error("download failed: {0}")]
    Transfer(String),
    /// The local file system failed.
    #[error("{0}")]
    Io(String),
}

/// What was fetched, printed as one JSON line and kept next to the model.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Fetched {
    /// The URI asked for.
    pub uri: String,
    /// Where the files came from (the registry's download location, else the URI).
    pub location: String,
    /// The registry version, for models:/ URIs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The path the model is at (`MODEL_PATH`).
    pub path: String,
    /// Files installed.
    pub files: usize,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Checksum of what was downloaded (file, archive or folder manifest).
    pub sha256: String,
}

/// Fetches the model as `args` say.
pub async fn run(args: &FetchArgs) -> Result<Fetched, FetchError> {
    let parsed = ModelUri::parse(&args.uri)?;
    let expected = args
        .sha256
        .as_deref()
        .map(checksum::parse_expected)
        .transpose()
        .map_err(FetchError::Config)?;
    if let ModelUri::Pvc { .. } = parsed {
        return Err(FetchError::Config(format!(
            "{} is a claim: it is mounted at {}, not fetched",
            args.uri,
            uri::MODEL_ROOT
        )));
    }
    let client = transport::client().map_err(FetchError::Config)?;
    let registry = match &args.registry {
        Some(url) => Some(
            mlflow::Registry::new(url, std::env::var(ENV_REGISTRY_TOKEN).ok(), client.clone())
                .map_err(FetchError::Config)?,
        ),
        None => None,
    };

    // A registry reference becomes the location of one version's folder.
    let (source, version) = match &parsed {
        ModelUri::Registry(reference) => {
            let registry = registry.as_ref().ok_or_else(|| {
                FetchError::Config(format!(
                    "{} needs the MLflow tracking URI (--registry or MLFLOW_TRACKING_URI)",
                    args.uri
                ))
            })?;
            if let (Selector::Version(v), Some(pinned)) =
                (&reference.selector, &args.registry_version)
                && v != pinned
            {
                return Err(FetchError::Config(format!(
                    "--registry-version {pinned} contradicts {}",
                    args.uri
                )));
            }
            let resolved = registry
                .resolve(reference, args.registry_version.as_deref())
                .await?;
            tracing::info!(uri = %args.uri, version = %resolved.version, location = %resolved.location, "resolved");
            let source = ModelUri::parse(&resolved.location).map_err(|e| {
                FetchError::Config(format!(
                    "version {} of {} is stored at {:?}, which Drover cannot fetch: {}",
                    resolved.version, reference.name, resolved.location, e.why
                ))
            })?;
            if matches!(source, ModelUri::Registry(_) | ModelUri::Pvc { .. }) {
                return Err(FetchError::Config(format!(
                    "version {} of {} points at {}, which is not a storage location",
                    resolved.version, reference.name, resolved.location
                )));
            }
            (source, Some(resolved.version))
        }
        _ => (parsed.clone(), None),
    };
    let location = match (&parsed, &source) {
        (ModelUri::Registry(_), _) => source_string(&source),
        _ => args.uri.clone(),
    };

    std::fs::create_dir_all(&args.dest)
        .map_err(|e| FetchError::Io(format!("cannot create {}: {e}", args.dest.display())))?;
    let staging = args.dest.join(STAGING);
    let archives = args.dest.join(ARCHIVE_STAGING);
    // Leftovers of an attempt that died (the init container restarts in the same volume).
    for dir in [&staging, &archives] {
        remove(dir)?;
    }
    make_dir(&staging)?;

    // A registry folder goes straight into the root; a file or prefix keeps its name.
    let name = if matches!(parsed, ModelUri::Registry(_)) {
        None
    } else {
        parsed.local_name(false)
    };
    let landing = if args.unpack {
        make_dir(&archives)?;
        &archives
    } else {
        &staging
    };
    let settings = StoreSettings {
        endpoint: args.endpoint.clone(),
        region: args.region.clone(),
    };
    let written = fetch_into(
        &source,
        &location,
        registry.as_ref(),
        &client,
        &settings,
        landing,
        name.as_deref(),
    )
    .await?;

    // What the checksum covers: the one file or archive, else the folder's manifest.
    let checked = single_entry(landing)?.unwrap_or_else(|| landing.to_path_buf());
    let actual = checksum::of_path(&checked)
        .map_err(|e| FetchError::Io(format!("cannot read {}: {e}", checked.display())))?;
    if let Some(expected) = &expected
        && *expected != actual
    {
        remove(&staging)?;
        remove(&archives)?;
        return Err(FetchError::Checksum {
            what: args.uri.clone(),
            expected: expected.clone(),
            actual,
        });
    }
    let mut files = written.files;
    if args.unpack {
        if !checked.is_file() {
            return Err(FetchError::Config(format!(
                "--unpack needs one archive file, but {} is a folder of {} files",
                args.uri, written.files
            )));
        }
        files = archive::unpack(&checked, &staging)?;
        remove(&archives)?;
    }
    install(&staging, &args.dest)?;
    let fetched = Fetched {
        uri: args.uri.clone(),
        location,
        version,
        path: match (&parsed, args.unpack) {
            (ModelUri::Registry(_), _) | (_, true) => args.dest.display().to_string(),
            _ => match &name {
                Some(n) => args.dest.join(n).display().to_string(),
                None => args.dest.display().to_string(),
            },
        },
        files,
        bytes: written.bytes,
        sha256: actual,
    };
    let record = serde_json::to_vec_pretty(&fetched)
        .map_err(|e| FetchError::Io(format!("cannot record the fetch: {e}")))?;
    std::fs::write(args.dest.join(RECORD_FILE), record)
        .map_err(|e| FetchError::Io(format!("cannot record the fetch: {e}")))?;
    Ok(fetched)
}

async fn fetch_into(
    source: &ModelUri,
    shown: &str,
    registry: Option<&mlflow::Registry>,
    client: &transport::Client,
    settings: &StoreSettings,
    dest: &Path,
    name: Option<&str>,
) -> Result<Written, FetchError> {
    match source {
        ModelUri::S3 { .. } | ModelUri::Gcs { .. } | ModelUri::Azure { .. } => {
            let (store, key) = download::object_store_for(source, settings, client)?;
            download::from_object_store(shown, store.as_ref(), &key, dest, name).await
        }
        ModelUri::Http { url } => {
            let token = std::env::var(ENV_HTTP_TOKEN).ok().filter(|t| !t.is_empty());
            let target = dest.join(name.unwrap_or("model"));
            download::from_url(client, url, token.as_deref(), &target).await
        }
        ModelUri::MlflowArtifacts { path } => {
            let registry = registry.ok_or_else(|| {
                FetchError::Config(format!(
                    "{shown} is served by an MLflow tracking server: give it with --registry"
                ))
            })?;
            download::from_mlflow_artifacts(registry, path, dest).await
        }
        ModelUri::Pvc { .. } | ModelUri::Registry(_) => {
            Err(FetchError::Config(format!("{shown} cannot be downloaded")))
        }
    }
}

fn source_string(source: &ModelUri) -> String {
    match source {
        ModelUri::S3 { bucket, key } => format!("s3://{bucket}/{key}"),
        ModelUri::Gcs { bucket, key } => format!("gs://{bucket}/{key}"),
        ModelUri::Azure { container, key } => format!("azure://{container}/{key}"),
        ModelUri::Http { url } => url.split('?').next().unwrap_or(url).to_string(),
        ModelUri::MlflowArtifacts { path } => format!("mlflow-artifacts:/{path}"),
        ModelUri::Pvc { claim, path } => format!("pvc://{claim}/{path}"),
        ModelUri::Registry(r) => r.to_string(),
    }
}

/// The only entry of `dir` when it is one file.
fn single_entry(dir: &Path) -> Result<Option<PathBuf>, FetchError> {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| FetchError::Io(format!("cannot read {}: {e}", dir.display())))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    Ok(match entries.as_slice() {
        [one] if one.is_file() => Some(one.clone()),
        _ => None,
    })
}

fn make_dir(dir: &Path) -> Result<(), FetchError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| FetchError::Io(format!("cannot create {}: {e}", dir.display())))
}

fn remove(path: &Path) -> Result<(), FetchError> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else if path.exists() {
        std::fs::remove_file(path)
    } else {
        Ok(())
    };
    result.map_err(|e| FetchError::Io(format!("cannot remove {}: {e}", path.display())))
}

/// Moves everything staged into `dest` (replacing what an earlier attempt left).
fn install(staging: &Path, dest: &Path) -> Result<(), FetchError> {
    let entries = std::fs::read_dir(staging)
        .map_err(|e| FetchError::Io(format!("cannot read {}: {e}", staging.display())))?;
    for entry in entries {
        let entry = entry.map_err(|e| FetchError::Io(e.to_string()))?;
        let target = dest.join(entry.file_name());
        remove(&target)?;
        std::fs::rename(entry.path(), &target)
            .map_err(|e| FetchError::Io(format!("cannot move into {}: {e}", target.display())))?;
    }
    remove(staging)
}

/// Runs `drover fetch-model`: prints what was fetched as one JSON line.
pub fn main(args: &FetchArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    let fetched = runtime
        .block_on(run(args))
        .map_err(|e| format!("fetch-model: {e}"))?;
    let line = serde_json::to_string(&fetched).map_err(|e| e.to_string())?;
    println!("{line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(uri: &str, dest: &Path) -> FetchArgs {
        FetchArgs {
            uri: uri.into(),
            dest: dest.to_path_buf(),
            ..FetchArgs::default()
        }
    }

    /// A one-shot HTTP server on loopback answering every request with `body`.
    async fn serve(status: u16, body: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_url_is_fetched_and_checked() {
        let base = serve(200, b"weights".to_vec()).await;
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(&format!("{base}/m/model.bin?sig=secret"), dir.path());
        a.sha256 = Some(checksum::hex(&sha2::Sha256::digest(b"weights")));
        let fetched = run(&a).await.unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("model.bin")).unwrap(),
            b"weights"
        );
        assert_eq!(
            fetched.path,
            dir.path().join("model.bin").display().to_string()
        );
        assert!(dir.path().join(RECORD_FILE).exists());
        assert!(!dir.path().join(STAGING).exists());
    }

    use sha2::Digest;

    #[tokio::test]
    async fn a_wrong_checksum_installs_nothing() {
        let base = serve(200, b"tampered".to_vec()).await;
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(&format!("{base}/model.bin"), dir.path());
        a.sha256 = Some("0".repeat(64));
        let e = run(&a).await.unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
        assert!(!dir.path().join("model.bin").exists());
    }

    #[tokio::test]
    async fn an_archive_is_unpacked_after_its_checksum() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "model/w.bin", &b"abc"[..])
            .unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar.into_inner().unwrap()).unwrap();
        let bytes = gz.finish().unwrap();
        let sum = checksum::hex(&sha2::Sha256::digest(&bytes));
        let base = serve(200, bytes).await;
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(&format!("{base}/model.tar.gz"), dir.path());
        a.unpack = true;
        a.sha256 = Some(sum);
        let fetched = run(&a).await.unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("model/w.bin")).unwrap(),
            b"abc"
        );
        assert!(!dir.path().join("model.tar.gz").exists());
        assert_eq!(fetched.files, 1);
    }

    #[tokio::test]
    async fn failures_say_what_to_check() {
        let dir = tempfile::tempdir().unwrap();
        let base = serve(404, Vec::new()).await;
        let e = run(&args(&format!("{base}/missing.bin"), dir.path()))
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::NotFound(_)), "{e}");
        let base = serve(403, Vec::new()).await;
        let e = run(&args(
            &format!("{base}/m.bin?X-Amz-Signature=s3cr3t"),
            dir.path(),
        ))
        .await
        .unwrap_err();
        assert!(e.to_string().contains("credentials"), "{e}");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        let e = run(&args("models:/fraud@champion", dir.path()))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("MLFLOW_TRACKING_URI"), "{e}");
        let e = run(&args("pvc://claim/x", dir.path())).await.unwrap_err();
        assert!(e.to_string().contains("mounted"), "{e}");
    }
}
