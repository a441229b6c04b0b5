//! `drover monitor`: the sidecar in every serving pod. A reverse proxy on the serving port in
//! front of the model container on loopback, recording latency, status codes, input features,
//! predictions and confidence; an admin port serving the cumulative report
//! (`/drover/report`), Prometheus metrics (`/metrics`), `/healthz` and `/readyz`.

pub mod admin;
pub mod feedback;
pub mod payload;
pub mod proxy;
pub mod recorder;
pub mod report;
pub mod sampling;
pub mod server;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::profile::ReferenceProfile;
use proxy::{BelowFloor, Proxy, ProxySettings};
use recorder::Recorder;
use sampling::ExchangeLog;

/// How feedback labels are compared with predictions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FeedbackTask {
    /// Classes: accuracy, precision, recall, F1.
    Classification,
    /// Numbers: MAE, RMSE.
    Regression,
}

/// What to do below the confidence floor.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum BelowFloorAction {
    /// Answer 422.
    Reject,
    /// Answer with `--fallback-response`.
    Fallback,
}

/// Settings of `drover monitor` (the operator sets them from the ModelDeployment).
#[derive(clap::Args, Debug, Clone)]
pub struct MonitorArgs {
    /// Serving address (what the Service targets).
    #[arg(long, env = "DROVER_MONITOR_LISTEN", default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,
    /// Admin address: report, metrics, probes.
    #[arg(
        long,
        env = "DROVER_MONITOR_ADMIN_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub admin_listen: SocketAddr,
    /// The model container's address on loopback.
    #[arg(
        long,
        env = "DROVER_MONITOR_UPSTREAM",
        default_value = "127.0.0.1:8080"
    )]
    pub upstream: String,
    /// The model's health path (readiness of the monitor follows it).
    #[arg(
        long,
        env = "DROVER_MONITOR_MODEL_HEALTH_PATH",
        default_value = "/health"
    )]
    pub model_health_path: String,
    /// Reference profile JSON (bins for features and predictions).
    #[arg(long, env = "DROVER_MONITOR_PROFILE")]
    pub profile: Option<PathBuf>,
    /// Model version reported.
    #[arg(long, env = "MODEL_VERSION", default_value = "")]
    pub model_version: String,
    /// File holding the bearer token that `/drover/report` and `/metrics` require.
    #[arg(long, env = "DROVER_MONITOR_REPORT_TOKEN_FILE")]
    pub report_token_file: Option<PathBuf>,
    /// File holding the API key every serving request must carry (Bearer or X-API-Key).
    #[arg(long, env = "DROVER_MONITOR_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Largest request body (413 beyond).
    #[arg(long, env = "DROVER_MONITOR_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest response body read for predictions (larger ones stream through unread).
    #[arg(long, env = "DROVER_MONITOR_MAX_PARSED_RESPONSE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_parsed_response_bytes: u64,
    /// How long the model may take, e.g. `30s` (504 beyond).
    #[arg(long, env = "DROVER_MONITOR_UPSTREAM_TIMEOUT", default_value = "30s")]
    pub upstream_timeout: String,
    /// Sign every prediction with a token (`X-Drover-Prediction-Token`) and accept
    /// `POST /drover/feedback` with the true label (docs/monitor.md#feedback). The key is
    /// derived from the report token file.
    #[arg(long, env = "DROVER_MONITOR_FEEDBACK")]
    pub feedback: bool,
    /// The revision this pod serves (checked against feedback tokens).
    #[arg(long, env = "DROVER_MONITOR_REVISION", default_value = "")]
    pub revision: String,
    /// `classification` or `regression`: how labels are compared with predictions.
    #[arg(long, env = "DROVER_MONITOR_FEEDBACK_TASK", value_enum, default_value_t = FeedbackTask::Classification)]
    pub feedback_task: FeedbackTask,
    /// Oldest prediction feedback is accepted for, in seconds.
    #[arg(long, env = "DROVER_MONITOR_FEEDBACK_MAX_AGE", default_value_t = 7 * 24 * 3600)]
    pub feedback_max_age_seconds: i64,
    /// Confidence below which the response is rejected or replaced.
    #[arg(long, env = "DROVER_MONITOR_CONFIDENCE_FLOOR")]
    pub confidence_floor: Option<f64>,
    /// What to do below the floor.
    #[arg(long, env = "DROVER_MONITOR_BELOW_FLOOR", value_enum, default_value_t = BelowFloorAction::Reject)]
    pub below_floor: BelowFloorAction,
    /// JSON body answered below the floor with `--below-floor fallback`.
    #[arg(long, env = "DROVER_MONITOR_FALLBACK_RESPONSE")]
    pub fallback_response: Option<String>,
    /// Share of exchanges logged as JSON lines on stdout, in [0, 1].
    #[arg(long, env = "DROVER_MONITOR_LOG_SAMPLE_RATE", default_value_t = 0.0)]
    pub log_sample_rate: f64,
    /// Most bytes of each logged body.
    #[arg(long, env = "DROVER_MONITOR_LOG_MAX_BYTES", default_value_t = 4096)]
    pub log_max_bytes: usize,
    /// Field names redacted in logged bodies (comma-separated).
    #[arg(long, env = "DROVER_MONITOR_LOG_REDACT", value_delimiter = ',')]
    pub log_redact: Vec<String>,
    /// PEM certificate chain: serve TLS on the serving port.
    #[arg(long, env = "DROVER_MONITOR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "DROVER_MONITOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Worker threads (0: one per core).
    #[arg(long, env = "DROVER_MONITOR_THREADS", default_value_t = 0)]
    pub threads: usize,
}

/// How long slow clients may take to send request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight requests get after SIGTERM.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

fn read_secret(path: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read {what} from {}", path.display()))?;
    let trimmed = bytes.trim_ascii().to_vec();
    anyhow::ensure!(!trimmed.is_empty(), "{what} in {} is empty", path.display());
    Ok(trimmed)
}

/// Everything `run` needs, checked before any socket opens.
pub struct Prepared {
    /// Serving side.
    pub proxy: Arc<Proxy>,
    /// Report and metrics token.
    pub report_token: Option<Vec<u8>>,
    /// TLS for the serving port.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Checks the arguments and loads the files they name.
pub fn prepare(args: &MonitorArgs) -> anyhow::Result<Prepared> {
    let profile = match &args.profile {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read the profile {}", path.display()))?;
            let profile = ReferenceProfile::from_json(&bytes)
                .with_context(|| format!("profile {}", path.display()))?;
            if let Some(v) = &profile.model_version
                && !args.model_version.is_empty()
                && *v != args.model_version
            {
                warn!(profile = %v, model = %args.model_version, "the reference profile belongs to another model version");
            }
            Some(profile)
        }
        None => None,
    };
    let upstream_timeout: Duration = crate::api::GoDuration::new(args.upstream_timeout.clone())
        .parse()
        .map_err(|e| anyhow::anyhow!("--upstream-timeout: {e}"))?;
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.log_sample_rate),
        "--log-sample-rate must be within [0, 1]"
    );
    let confidence_floor = match args.confidence_floor {
        None => None,
        Some(floor) => {
            anyhow::ensure!(
                (0.0..=1.0).contains(&floor),
                "--confidence-floor must be within [0, 1]"
            );
            let action = match args.below_floor {
                BelowFloorAction::Reject => BelowFloor::Reject,
                BelowFloorAction::Fallback => {
                    let body = args
                        .fallback_response
                        .clone()
                        .context("--below-floor fallback needs --fallback-response")?;
                    serde_json::from_str::<serde_json::Value>(&body)
                        .context("--fallback-response must be JSON")?;
                    BelowFloor::Fallback(Bytes::from(body))
                }
            };
            Some((floor, action))
        }
    };
    let upstream = format!("http://{}", args.upstream)
        .parse()
        .with_context(|| format!("--upstream {:?} is not host:port", args.upstream))?;
    let settings = ProxySettings {
        upstream,
        max_body_bytes: args.max_body_bytes,
        max_parsed_response_bytes: args.max_parsed_response_bytes,
        upstream_timeout,
        api_key: args
            .api_key_file
            .as_ref()
            .map(|p| read_secret(p, "the API key"))
            .transpose()?,
        confidence_floor,
        feedback: if args.feedback {
            let token_file = args.report_token_file.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "--feedback needs --report-token-file (the feedback key is derived from it)"
                )
            })?;
            let token = read_secret(token_file, "the report token")?;
            Some(proxy::FeedbackSettings {
                key: feedback::key_from_monitor_token(&String::from_utf8_lossy(&token)),
                revision: args.revision.clone(),
                task: match args.feedback_task {
                    FeedbackTask::Classification => feedback::Task::Classification,
                    FeedbackTask::Regression => feedback::Task::Regression,
                },
                max_age_seconds: args.feedback_max_age_seconds.max(1),
                seen: Arc::new(std::sync::Mutex::new(feedback::SeenTokens::new(100_000))),
            })
        } else {
            None
        },
    };
    let instance = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let recorder = Arc::new(Recorder::new(
        profile.as_ref(),
        &args.model_version,
        instance,
        jiff::Timestamp::now().to_string(),
    ));
    let upstream = Arc::new(upstream::Upstream::new(&settings.upstream)?);
    let proxy = Arc::new(Proxy {
        settings,
        recorder,
        upstream,
        log: ExchangeLog {
            rate: args.log_sample_rate,
            max_bytes: args.log_max_bytes,
            redact: args.log_redact.clone(),
        },
        terminating: Arc::new(AtomicBool::new(false)),
    });
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    Ok(Prepared {
        proxy,
        report_token: args
            .report_token_file
            .as_ref()
            .map(|p| read_secret(p, "the report token"))
            .transpose()?,
        tls,
    })
}

fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{} is not a PEM private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Runs the monitor until `stop` turns true (SIGTERM in the binary).
pub async fn run(args: MonitorArgs, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let prepared = prepare(&args)?;
    let serving = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let admin_listener = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.admin_listen))?;
    info!(serving = %args.listen, admin = %args.admin_listen, upstream = %args.upstream, "monitor listening");
    let admin_state = admin::AdminState::new(
        prepared.proxy.recorder.clone(),
        prepared.report_token.clone(),
        format!("http://{}{}", args.upstream, args.model_health_path),
    )
    .with_terminating(prepared.proxy.terminating.clone());
    let admin_state = match &args.report_token_file {
        Some(path) => admin_state.with_token_file(path.clone()),
        None => admin_state,
    };
    let admin_stop = stop.clone();
    let admin_task = tokio::spawn(async move {
        let mut stop = admin_stop;
        axum::serve(admin_listener, admin::router(admin_state))
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    });
    serve(serving, prepared.proxy.clone(), prepared.tls, &mut stop).await;
    let _ = admin_task.await;
    Ok(())
}

/// Accepts connections on `listener` until `stop`, then drains in-flight requests.
///
/// Plaintext connections start on the HTTP/1.1 fast path ([`server`]), which hands anything
/// unusual (h2c included) to hyper; TLS connections go to hyper.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: &mut watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let serving = Arc::new(server::Serving {
        proxy: proxy.clone(),
        hyper: builder,
    });
    // Every connection holds a receiver until it ends: the drain is over when none is left.
    let (drain_tx, drain_rx) = watch::channel(false);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let serving = serving.clone();
                let draining = drain_rx.clone();
                match &tls {
                    None => {
                        tokio::spawn(server::connection(serving, stream, draining));
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            let mut draining = draining;
                            // TLS handshakes are bounded too: a slow client cannot hold a task.
                            let Ok(Ok(stream)) = tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await else { return };
                            let proxy = serving.proxy.clone();
                            let service = service_fn(move |req| proxy.clone().handle(req));
                            let conn = serving.hyper.serve_connection(TokioIo::new(stream), service);
                            let mut conn = std::pin::pin!(conn);
                            tokio::select! {
                                _ = conn.as_mut() => return,
                                _ = draining.wait_for(|d| *d) => {}
                            }
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        });
                    }
                }
            }
            _ = stop.wait_for(|s| *s) => {
                proxy.terminating.store(true, Ordering::Relaxed);
                break;
            }
        }
    }
    drop(listener);
    drop(drain_rx);
    let _ = drain_tx.send(true);
    if tokio::time::timeout(DRAIN_TIMEOUT, drain_tx.closed())
        .await
        .is_err()
    {
        warn!("in-flight requests did not finish within the drain timeout");
    }
}
