//! Model URIs: what `spec.model.uri` may name, parsed once, and where its files land in the pod.
//!
//! Pure: the builder uses it to decide the init container, volume and `MODEL_PATH`; the
//! storage initializer uses it to pick a client. Nothing here touches the network.

use std::fmt;

/// Where the model's files are put in the serving pod (and where a `pvc://` claim is mounted).
pub const MODEL_ROOT: &str = "/mnt/models";

/// A parsed `spec.model.uri`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelUri {
    /// `s3://BUCKET/KEY` (AWS or any S3-compatible endpoint).
    S3 {
        /// Bucket.
        bucket: String,
        /// Object key or prefix (may be empty: the whole bucket).
        key: String,
    },
    /// `gs://BUCKET/KEY`.
    Gcs {
        /// Bucket.
        bucket: String,
        /// Object name or prefix.
        key: String,
    },
    /// `azure://CONTAINER/BLOB` or `az://CONTAINER/BLOB` (the account comes from the
    /// credentials: `AZURE_STORAGE_ACCOUNT_NAME`).
    Azure {
        /// Container.
        container: String,
        /// Blob name or prefix.
        key: String,
    },
    /// `http://…` or `https://…`: one file, fetched with a GET (query strings kept, so
    /// pre-signed URLs work).
    Http {
        /// The whole URL.
        url: String,
    },
    /// `pvc://CLAIM/PATH`: the claim is mounted read-only, nothing is copied.
    Pvc {
        /// PersistentVolumeClaim name.
        claim: String,
        /// Path inside the claim (empty: the whole volume).
        path: String,
    },
    /// `models:/NAME/VERSION` or `models:/NAME@ALIAS`: a model in the MLflow registry.
    Registry(RegistryRef),
    /// `mlflow-artifacts:/PATH`: artifacts the MLflow tracking server proxies (what
    /// `get-download-uri` answers when the server runs with `--serve-artifacts`).
    MlflowArtifacts {
        /// Path below the server's artifact root.
        path: String,
    },
}

/// A registered model and which of its versions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RegistryRef {
    /// Registered model name.
    pub name: String,
    /// A version number, or an alias that names one.
    pub selector: Selector,
}

/// Which version of a registered model.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Selector {
    /// A fixed version (`models:/NAME/3`).
    Version(String),
    /// An alias (`models:/NAME@champion`), resolved to a version by the operator.
    Alias(String),
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            Selector::Version(v) => write!(f, "models:/{}/{v}", self.name),
            Selector::Alias(a) => write!(f, "models:/{}@{a}", self.name),
        }
    }
}

/// Why a URI cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("model uri {uri:?}: {why}")]
pub struct UriError {
    /// The URI as given.
    pub uri: String,
    /// What is wrong with it.
    pub why: String,
}

impl ModelUri {
    /// Parses a model URI; every scheme Drover fetches (or mounts) is accepted, nothing else.
    pub fn parse(uri: &str) -> Result<Self, UriError> {
        let fail = |why: &str| UriError {
            uri: uri.to_string(),
            why: why.to_string(),
        };
        let trimmed = uri.trim();
        if trimmed != uri || uri.is_empty() {
            return Err(fail("must not be empty or have surrounding spaces"));
        }
        if uri.chars().any(char::is_control) {
            return Err(fail("must not contain control characters"));
        }
        let Some((scheme, rest)) = uri.split_once(':') else {
            return Err(fail(
                "has no scheme: use s3://, gs://, azure://, az://, http(s)://, pvc:// or models:/",
            ));
        };
        let bucket_and_key = |rest: &str, what: &str| -> Result<(String, String), UriError> {
            let rest = rest
                .strip_prefix("//")
                .ok_or_else(|| fail(&format!("must look like {scheme}://{what}/KEY")))?;
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(fail(&format!("has no {what}")));
            }
            check_key(key).map_err(|why| fail(&why))?;
            Ok((bucket.to_string(), key.to_string()))
        };
        match scheme.to_ascii_lowercase().as_str() {
            "s3" => {
                let (bucket, key) = bucket_and_key(rest, "BUCKET")?;
                Ok(ModelUri::S3 { bucket, key })
            }
            "gs" => {
                let (bucket, key) = bucket_and_key(rest, "BUCKET")?;
                Ok(ModelUri::Gcs { bucket, key })
            }
            "azure" | "az" => {
                let (container, key) = bucket_and_key(rest, "CONTAINER")?;
                Ok(ModelUri::Azure { container, key })
            }
            "http" | "https" => {
                let parsed: http::Uri = uri.parse().map_err(|e| fail(&format!("{e}")))?;
                if parsed.host().is_none_or(str::is_empty) {
                    return Err(fail("has no host"));
                }
                Ok(ModelUri::Http {
                    url: uri.to_string(),
                })
            }
            "pvc" => {
                let (claim, path) = bucket_and_key(rest, "CLAIM")?;
                if !is_dns_subdomain(&claim) {
                    return Err(fail(
                        "the claim name must be a DNS subdomain (lower-case letters, digits, '-', '.')",
                    ));
                }
                Ok(ModelUri::Pvc {
                    claim,
                    path: path.trim_end_matches('/').to_string(),
                })
            }
            "models" => parse_registry(rest)
                .map(ModelUri::Registry)
                .map_err(|w| fail(&w)),
            "mlflow-artifacts" => {
                // `mlflow-artifacts:/PATH`, or `mlflow-artifacts://HOST/PATH` where HOST is the
                // tracking server itself: either way the path is all that is needed.
                let path = match rest.strip_prefix("//") {
                    Some(with_host) => with_host.split_once('/').map_or("", |(_, p)| p),
                    None => rest.trim_start_matches('/'),
                };
                check_key(path).map_err(|why| fail(&why))?;
                Ok(ModelUri::MlflowArtifacts {
                    path: path.trim_end_matches('/').to_string(),
                })
            }
            other => Err(fail(&format!(
                "scheme {other:?} is not supported: use s3://, gs://, azure://, az://, http(s)://, pvc:// or models:/"
            ))),
        }
    }

    /// True when the init container has something to download (everything but `pvc://`).
    pub fn is_fetched(&self) -> bool {
        !matches!(self, ModelUri::Pvc { .. })
    }

    /// The name the file (or folder) gets under [`MODEL_ROOT`], or `None` when the files go
    /// straight into the root: a prefix ending in `/`, a registry model (a folder with
    /// `MLmodel`), a claim (mounted there), or an archive that is unpacked.
    pub fn local_name(&self, unpack: bool) -> Option<String> {
        if unpack {
            return None;
        }
        let key = match self {
            ModelUri::S3 { key, .. } | ModelUri::Gcs { key, .. } | ModelUri::Azure { key, .. } => {
                key.as_str()
            }
            ModelUri::Http { url } => {
                let path = url.split(['?', '#']).next().unwrap_or_default();
                let after_host = path.splitn(4, '/').nth(3).unwrap_or_default();
                return Some(last_segment(after_host).unwrap_or_else(|| "model".to_string()));
            }
            ModelUri::Pvc { .. } | ModelUri::Registry(_) | ModelUri::MlflowArtifacts { .. } => {
                return None;
            }
        };
        if key.is_empty() || key.ends_with('/') {
            return None;
        }
        last_segment(key)
    }

    /// The path the model container is given as `MODEL_PATH`: the file, or the folder.
    pub fn model_path(&self, unpack: bool) -> String {
        match self.local_name(unpack) {
            Some(name) => format!("{MODEL_ROOT}/{name}"),
            None => MODEL_ROOT.to_string(),
        }
    }
}

fn last_segment(path: &str) -> Option<String> {
    path.rsplit('/')
        .next()
        .filter(|s| !s.is_empty() && *s != "." && *s != "..")
        .map(str::to_string)
}

/// Keys may be anything an object store allows, except segments that would climb out of the
/// download folder once the key becomes a local path.
fn check_key(key: &str) -> Result<(), String> {
    if key.split('/').any(|s| s == "..") {
        return Err("must not contain '..' segments".into());
    }
    Ok(())
}

fn parse_registry(rest: &str) -> Result<RegistryRef, String> {
    let body = rest
        .strip_prefix('/')
        .filter(|b| !b.starts_with('/'))
        .ok_or("must look like models:/NAME/VERSION or models:/NAME@ALIAS")?;
    let (name, selector) = if let Some((name, alias)) = body.rsplit_once('@') {
        if alias.is_empty() || alias.contains('/') {
            return Err("the alias after '@' must be a non-empty name".into());
        }
        (name, Selector::Alias(alias.to_string()))
    } else if let Some((name, version)) = body.rsplit_once('/') {
        if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{version:?} is not a version number: use models:/NAME/VERSION (digits) or models:/NAME@ALIAS (stages and 'latest' are not supported: a revision must name one version)"
            ));
        }
        (name, Selector::Version(version.to_string()))
    } else {
        return Err("names no version: use models:/NAME/VERSION or models:/NAME@ALIAS".into());
    };
    if name.is_empty() {
        return Err("has no model name".into());
    }
    Ok(RegistryRef {
        name: name.to_string(),
        selector,
    })
}

/// A Kubernetes DNS-1123 subdomain (what a PersistentVolumeClaim name must be).
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(uri: &str) -> ModelUri {
        ModelUri::parse(uri).unwrap_or_else(|e| panic!("{uri}: {e}"))
    }

    #[test]
    fn object_store_uris() {
        assert_eq!(
            ok("s3://models/fraud/1.4.0/model.skops"),
            ModelUri::S3 {
                bucket: "models".into(),
                key: "fraud/1.4.0/model.skops".into()
            }
        );
        assert_eq!(
            ok("gs://b/dir/"),
            ModelUri::Gcs {
                bucket: "b".into(),
                key: "dir/".into()
            }
        );
        for scheme in ["azure", "az"] {
            assert_eq!(
                ok(&format!("{scheme}://c/m.onnx")),
                ModelUri::Azure {
                    container: "c".into(),
                    key: "m.onnx".into()
                }
            );
        }
        assert_eq!(
            ok("s3://bucket"),
            ModelUri::S3 {
                bucket: "bucket".into(),
                key: String::new()
            }
        );
    }

    #[test]
    fn registry_uris() {
        assert_eq!(
            ok("models:/fraud/3"),
            ModelUri::Registry(RegistryRef {
                name: "fraud".into(),
                selector: Selector::Version("3".into())
            })
        );
        assert_eq!(
            ok("models:/fraud@champion"),
            ModelUri::Registry(RegistryRef {
                name: "fraud".into(),
                selector: Selector::Alias("champion".into())
            })
        );
        // Unity Catalog style names keep their dots.
        assert_eq!(
            ok("models:/main.ml.fraud@prod").to_string_ref(),
            "models:/main.ml.fraud@prod"
        );
        for bad in [
            "models:/fraud/latest",
            "models:/fraud/Production",
            "models:/fraud",
            "models:/@x",
            "models:/fraud@",
            "models://fraud/1",
            "models:fraud/1",
        ] {
            assert!(ModelUri::parse(bad).is_err(), "{bad}");
        }
    }

    impl ModelUri {
        fn to_string_ref(&self) -> String {
            match self {
                ModelUri::Registry(r) => r.to_string(),
                _ => String::new(),
            }
        }
    }

    #[test]
    fn other_schemes() {
        assert_eq!(
            ok("https://example.com/m/model.bin?X-Amz-Signature=abc"),
            ModelUri::Http {
                url: "https://example.com/m/model.bin?X-Amz-Signature=abc".into()
            }
        );
        assert_eq!(
            ok("pvc://models-claim/fraud/v1/"),
            ModelUri::Pvc {
                claim: "models-claim".into(),
                path: "fraud/v1".into()
            }
        );
        assert_eq!(
            ok("mlflow-artifacts:/1/models/m-abc/artifacts"),
            ModelUri::MlflowArtifacts {
                path: "1/models/m-abc/artifacts".into()
            }
        );
        assert_eq!(
            ok("mlflow-artifacts://mlflow:5000/1/abc/"),
            ModelUri::MlflowArtifacts {
                path: "1/abc".into()
            }
        );
    }

    #[test]
    fn refused_uris_say_why() {
        for (bad, why) in [
            ("", "empty"),
            (" s3://b/k", "spaces"),
            ("ftp://x/y", "not supported"),
            ("/data/model", "no scheme"),
            ("s3://", "no BUCKET"),
            ("s3:/b/k", "s3://BUCKET/KEY"),
            ("s3://b/../etc/passwd", "'..'"),
            ("pvc://Bad_Claim/x", "DNS subdomain"),
            ("http:///nohost", "host"),
            ("s3://b/k\n", "spaces"),
        ] {
            let e = ModelUri::parse(bad).unwrap_err();
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn where_the_files_land() {
        let path = |uri: &str, unpack: bool| ok(uri).model_path(unpack);
        assert_eq!(
            path("s3://b/fraud/model.skops", false),
            "/mnt/models/model.skops"
        );
        assert_eq!(path("s3://b/fraud/", false), "/mnt/models");
        assert_eq!(path("s3://b/fraud/v1", false), "/mnt/models/v1");
        assert_eq!(path("s3://b/fraud/model.tar.gz", true), "/mnt/models");
        assert_eq!(
            path("https://h/a/model.joblib?sig=1", false),
            "/mnt/models/model.joblib"
        );
        assert_eq!(path("https://h", false), "/mnt/models/model");
        assert_eq!(path("models:/fraud@prod", false), "/mnt/models");
        assert_eq!(path("pvc://claim/m.bin", false), "/mnt/models");
        assert!(!ok("pvc://claim/x").is_fetched());
        assert!(ok("gs://b/x").is_fetched());
    }
}
