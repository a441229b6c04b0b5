//! Cluster end-to-end tests against a real API server.
//!
//! They run only when `DROVER_E2E_KUBECONFIG` names a kubeconfig file; otherwise each test prints
//! one "skipped" line and returns (and so counts as passed). Each test works in its own fresh
//! namespace (Pod Security `restricted` enforced), deleted at the end even when the test fails.
//! Nothing sleeps to wait: every wait is a bounded poll.
//!
//! Needs: the API server; kube-controller-manager for Deployment status, garbage collection and
//! (retraining tests) the Job controller (the lifecycle, canary and retraining tests fail with a
//! clear message without it); Linux (stand-ins bind 127.0.x.y addresses). No node is needed: the
//! lifecycle tests never need a pod Ready (a revision with `replicas: 0` is complete as soon as
//! the Deployment controller has seen it), the canary and steady-state tests stand in for
//! kubelets themselves (see `FakeKubelets`), and a training pod is either never scheduled (its
//! Job stays active) or finished by the test playing its kubelet (see `finish_training_pod`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use drover::api::{ConditionStatus, ModelDeployment, Phase};
use drover::conditions::DRIFT_DETECTED;
use drover::naming::{LABEL_MODEL, LABEL_REVISION};
use drover::revision::revision_of;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{GroupVersionKind, Status};
use kube::{Client, Config, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Path of the kubeconfig of the cluster under test.
const ENV: &str = "DROVER_E2E_KUBECONFIG";
/// Field manager of every write the tests make.
const MANAGER: &str = "drover-e2e";
/// Interval of every poll.
const POLL: Duration = Duration::from_millis(250);
/// Images of the test models: `pause` runs as a non-root numeric user, so it passes Pod Security
/// `restricted`; it never answers the readiness probe, so its pods never become Ready.
const IMAGE_1: &str = "registry.k8s.io/pause:3.10";
const IMAGE_2: &str = "registry.k8s.io/pause:3.9";

// ---------------------------------------------------------------------------------------------
// Set-up: client, namespace, CRDs, operator.
// ---------------------------------------------------------------------------------------------

/// The kubeconfig path, or `None` (after saying so) when the cluster tests are not wanted.
fn kubeconfig_path() -> Option<PathBuf> {
    match std::env::var_os(ENV) {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => {
            eprintln!("skipped: {ENV} not set");
            None
        }
    }
}

/// A client built from exactly that kubeconfig (never the ambient configuration).
async fn client_from(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("cannot read the kubeconfig {}: {e}", path.display()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cannot use the kubeconfig {}: {e}", path.display()));
    Client::try_from(config).expect("a client from the kubeconfig")
}

/// Operator logs go to the test output (shown for failing tests); `RUST_LOG` overrides.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("drover=info,warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A random lowercase hex suffix (no RNG dependency: `RandomState` is randomly keyed).
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    format!("{:08x}", hasher.finish() as u32)
}

/// The test's namespace; dropping it deletes it (best effort, also while a failing test unwinds).
struct TestNamespace {
    name: String,
    kubeconfig: PathBuf,
}

impl TestNamespace {
    async fn create(client: &Client, kubeconfig: &Path, test: &str) -> Self {
        let name = format!("drover-e2e-{test}-{}", random_suffix());
        let namespace: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                    "app.kubernetes.io/created-by": MANAGER,
                },
            },
        }))
        .expect("a valid Namespace");
        let guard = Self {
            name: name.clone(),
            kubeconfig: kubeconfig.to_path_buf(),
        };
        Api::<Namespace>::all(client.clone())
            .create(&post_params(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("cannot create namespace {name}: {e}"));
        eprintln!("namespace {name}");
        guard
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // The test's runtime may be shutting down or unwinding: delete from a thread of its own,
        // with its own runtime and client, and wait for that one request (bounded).
        let name = self.name.clone();
        let kubeconfig = self.kubeconfig.clone();
        let deleter = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return eprintln!("cannot delete namespace {name}: {e}"),
            };
            runtime.block_on(async {
                let delete = async {
                    let client = client_from(&kubeconfig).await;
                    Api::<Namespace>::all(client)
                        .delete(&name, &DeleteParams::background())
                        .await
                };
                match tokio::time::timeout(Duration::from_secs(20), delete).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => eprintln!("cannot delete namespace {name}: {e}"),
                    Err(_) => eprintln!("deleting namespace {name} timed out"),
                }
            });
        });
        if deleter.join().is_err() {
            eprintln!("deleting namespace {} panicked", self.name);
        }
    }
}

/// What every cluster test starts with: a client, a namespace of its own (deleted when the
/// test ends, however it ends) and Drover's CRDs installed.
struct Cluster {
    client: Client,
    namespace: TestNamespace,
}

impl Cluster {
    /// `None` when the cluster tests are not wanted (no `DROVER_E2E_KUBECONFIG`, said once by
    /// [`kubeconfig_path`]): the test then returns at once.
    async fn set_up(test: &str) -> Option<Self> {
        let kubeconfig = kubeconfig_path()?;
        init_logging();
        let client = client_from(&kubeconfig).await;
        let namespace = TestNamespace::create(&client, &kubeconfig, test).await;
        install_crds(&client, &namespace.name).await;
        Some(Self { client, namespace })
    }
}

fn post_params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(MANAGER.into()),
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    }
}

/// Server-side applies every CRD Drover owns and waits until each is Established and
/// ModelDeployments are served in `namespace`.
async fn install_crds(client: &Client, namespace: &str) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let api = &api;
    for crd in drover::crd::all() {
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("server-side apply of CRD {name} was refused: {e}"));
        let name = name.as_str();
        eventually(
            &format!("CRD {name} has condition Established=True"),
            Duration::from_secs(60),
            || async move {
                let crd = api.get(name).await.ok()?;
                let conditions = crd.status?.conditions?;
                conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
    }
    let models: Api<ModelDeployment> = Api::namespaced(client.clone(), namespace);
    let models = &models;
    eventually(
        "ModelDeployments are served (discovery caught up with the CRD)",
        Duration::from_secs(30),
        || async move {
            models
                .list_metadata(&ListParams::default().limit(1))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
}

/// `drover operator` flags, parsed the way the binary parses them.
#[derive(clap::Parser)]
struct Wrap {
    #[command(flatten)]
    op: drover::operator::OperatorArgs,
}

/// An operator running in-process.
struct Operator {
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
    admin: SocketAddr,
}

/// A port nobody listens on right now (the operator binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

impl Operator {
    /// Starts the operator on `namespace` without leader election; its admin server listens on a
    /// free local port (a fixed one, so the test can read /readyz and /metrics; `127.0.0.1:0`
    /// would work too, but the port could not be known).
    fn start(client: &Client, namespace: &str) -> Self {
        let admin: SocketAddr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin_flag = admin.to_string();
        let wrap = Wrap::try_parse_from([
            "drover-operator",
            "--namespace",
            namespace,
            "--metrics-addr",
            admin_flag.as_str(),
            "--leader-elect=false",
        ])
        .unwrap_or_else(|e| panic!("operator flags refused: {e}"));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(drover::operator::run_with_client(
            client.clone(),
            wrap.op,
            stop_rx,
        ));
        Self { stop, task, admin }
    }

    /// Waits until /readyz answers 200 (every watch synced); fails if the operator exits first.
    async fn wait_ready(&mut self) {
        let admin = self.admin;
        let task = &self.task;
        let ready = eventually(
            "the operator's /readyz answers 200",
            Duration::from_secs(60),
            || async move {
                if task.is_finished() {
                    return Some(false);
                }
                http_get(admin, "/readyz")
                    .await
                    .filter(|r| r.starts_with("HTTP/1.1 200"))
                    .map(|_| true)
            },
        )
        .await;
        if !ready {
            let result = (&mut self.task).await;
            panic!("the operator exited before it was ready: {result:?}");
        }
    }

    /// Stops the operator and waits (bounded) for it to return.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let result = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the operator stops within 30s of being told to")
            .expect("the operator task does not panic");
        if let Err(e) = result {
            panic!("the operator returned an error when stopped: {e:#}");
        }
    }
}

/// One HTTP/1.1 GET (status line, headers and body), or `None` if it cannot be done in 2s.
async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let request = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .ok()?;
        let mut out = String::new();
        stream.read_to_string(&mut out).await.ok()?;
        Some(out)
    };
    tokio::time::timeout(Duration::from_secs(2), request)
        .await
        .ok()
        .flatten()
}

/// Value of an unlabelled sample (e.g. `drover_reconciles_total`) in a /metrics answer.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

// ---------------------------------------------------------------------------------------------
// Polling.
// ---------------------------------------------------------------------------------------------

/// Polls `f` every 250ms until it gives `Some`, for at most `timeout`; `None` on timeout.
async fn poll_until<F, Fut, T>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        // One attempt may not outlive the deadline (a hung request counts as "not yet").
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        if let Ok(Some(value)) = tokio::time::timeout(left, f()).await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `f` every 250ms until it gives `Some`; panics naming `what` after `timeout`.
async fn eventually<F, Fut, T>(what: &str, timeout: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll_until(timeout, f).await {
        Some(value) => value,
        None => panic!("timed out after {timeout:?} waiting until {what}"),
    }
}

/// Polls `f` every 250ms for `period`; panics naming `what` the first time it fails.
async fn holds<F, Fut>(what: &str, period: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + period;
    loop {
        if let Err(why) = f().await {
            panic!("{what} stopped holding: {why}");
        }
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Objects and assertions.
// ---------------------------------------------------------------------------------------------

fn model_deployment(name: &str, spec: Value) -> ModelDeployment {
    serde_json::from_value(json!({
        "apiVersion": "drover.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a valid ModelDeployment")
}

/// The serving spec the lifecycle tests use: the immediate strategy (canary rollouts with
/// monitors standing in for pods are tests/e2e_rollout.rs).
fn pause_model(replicas: i32) -> Value {
    json!({
        "model": {"version": "1.0.0", "image": IMAGE_1, "healthPath": "/", "port": 8080},
        "replicas": replicas,
        "rollout": {"strategy": "Immediate"},
    })
}

/// The child is controlled by the ModelDeployment with `uid`, and blocks its deletion.
fn assert_controlled_by<K: Resource>(child: &K, what: &str, uid: &str) {
    let refs = child.meta().owner_references.clone().unwrap_or_default();
    let owner = refs
        .iter()
        .find(|o| o.controller == Some(true))
        .unwrap_or_else(|| panic!("{what} has no controller ownerReference: {refs:?}"));
    assert_eq!(
        owner.uid, uid,
        "{what}: controller is not the ModelDeployment"
    );
    assert_eq!(owner.kind, "ModelDeployment", "{what}: {owner:?}");
    assert_eq!(
        owner.api_version, "drover.dev/v1alpha1",
        "{what}: {owner:?}"
    );
    assert_eq!(
        owner.block_owner_deletion,
        Some(true),
        "{what}: the ownerReference must set blockOwnerDeletion: {owner:?}"
    );
}

/// The revision a Service selects.
fn selected_revision(service: &Service) -> Option<String> {
    service
        .spec
        .as_ref()?
        .selector
        .as_ref()?
        .get(LABEL_REVISION)
        .cloned()
}

/// The API server refused `result` (with `code`, if given) in a message naming `field`.
fn assert_refused<T: Debug>(
    result: Result<T, kube::Error>,
    code: Option<u16>,
    field: &str,
    what: &str,
) -> Status {
    match result {
        Ok(accepted) => panic!("{what}: the API server accepted it: {accepted:?}"),
        Err(kube::Error::Api(status)) => {
            if let Some(code) = code {
                assert_eq!(status.code, code, "{what}: {status:?}");
            }
            assert!(
                status.message.contains(field),
                "{what}: the refusal does not name {field:?}: {}",
                status.message
            );
            *status
        }
        Err(e) => panic!("{what}: expected a refusal from the API server, got: {e}"),
    }
}

/// Every YAML document of `path`, as JSON values.
fn documents(path: &Path) -> (String, Vec<Value>) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    (text, docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The `*.yaml` files directly in `dir`, sorted; none if `dir` does not exist.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// A ModelDeployment document as a dynamic object in `namespace`, with the API it goes to
/// (taken from the document's own apiVersion, so the server judges exactly what the file says).
fn as_model_deployment(
    client: &Client,
    namespace: &str,
    doc: &Value,
) -> Option<(Api<DynamicObject>, DynamicObject)> {
    if doc.get("kind").and_then(Value::as_str) != Some("ModelDeployment") {
        return None;
    }
    let mut object: DynamicObject =
        serde_json::from_value(doc.clone()).expect("a Kubernetes object");
    object.metadata.namespace = Some(namespace.to_string());
    let types = object.types.clone().expect("apiVersion and kind");
    let gvk = GroupVersionKind::try_from(&types).expect("a valid apiVersion");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "modeldeployments");
    Some((
        Api::namespaced_with(client.clone(), namespace, &resource),
        object,
    ))
}

/// `kubectl create --dry-run=server` (strict field validation, like kubectl's default).
async fn create_dry_run(
    client: &Client,
    api: &Api<DynamicObject>,
    object: &DynamicObject,
) -> Result<DynamicObject, kube::Error> {
    let params = PostParams {
        dry_run: true,
        field_manager: Some(MANAGER.into()),
    };
    let body = serde_json::to_vec(object).map_err(kube::Error::SerdeError)?;
    let request = kube::core::Request::new(api.resource_url())
        .create(&params, body)
        .map_err(kube::Error::BuildRequest)?;
    let (mut parts, body) = request.into_parts();
    let uri = parts.uri.to_string();
    let separator = if uri.contains('?') { '&' } else { '?' };
    parts.uri = format!("{uri}{separator}fieldValidation=Strict")
        .parse()
        .expect("a valid request URI");
    client
        .request::<DynamicObject>(http::Request::from_parts(parts, body))
        .await
}

/// Resource versions of the ModelDeployment and of every child labelled with its name.
async fn resource_versions(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<BTreeMap<String, String>, kube::Error> {
    fn add<K: Resource>(out: &mut BTreeMap<String, String>, kind: &str, items: Vec<K>) {
        for item in items {
            out.insert(
                format!("{kind}/{}", item.name_any()),
                item.resource_version().unwrap_or_default(),
            );
        }
    }
    let selector = ListParams::default().labels(&format!("{LABEL_MODEL}={name}"));
    let mut out = BTreeMap::new();
    let md = Api::<ModelDeployment>::namespaced(client.clone(), namespace)
        .get(name)
        .await?;
    add(&mut out, "ModelDeployment", vec![md]);
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace)
        .list(&selector)
        .await?;
    add(&mut out, "Deployment", deployments.items);
    let services = Api::<Service>::namespaced(client.clone(), namespace)
        .list(&selector)
        .await?;
    add(&mut out, "Service", services.items);
    let autoscalers = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace)
        .list(&selector)
        .await?;
    add(&mut out, "HorizontalPodAutoscaler", autoscalers.items);
    Ok(out)
}

/// With kube-controller-manager, the pods of `revision` pass Pod Security `restricted`: a Pod is
/// created and no ReplicaSet reports a `FailedCreate` that "violates PodSecurity". Without a
/// ReplicaSet within 20s (no kube-controller-manager) the check is skipped with a note.
async fn assert_admitted_under_restricted(client: &Client, namespace: &str, revision: &str) {
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = ListParams::default().labels(&format!("{LABEL_REVISION}={revision}"));
    let (replica_sets, pods, selector) = (&replica_sets, &pods, &selector);
    let found = poll_until(Duration::from_secs(20), || async move {
        let list = replica_sets.list(selector).await.ok()?;
        (!list.items.is_empty()).then_some(())
    })
    .await;
    if found.is_none() {
        eprintln!(
            "note: no ReplicaSet of revision {revision} within 20s (no kube-controller-manager?): \
             Pod Security admission of its pods not checked"
        );
        return;
    }
    eventually(
        &format!(
            "a Pod of revision {revision} is admitted in a namespace enforcing Pod Security restricted"
        ),
        Duration::from_secs(60),
        || async move {
            for rs in replica_sets.list(selector).await.ok()?.items {
                let conditions = rs.status.and_then(|s| s.conditions).unwrap_or_default();
                for c in conditions {
                    let message = c.message.unwrap_or_default();
                    if c.type_ == "ReplicaFailure"
                        && c.reason.as_deref() == Some("FailedCreate")
                        && message.contains("violates PodSecurity")
                    {
                        panic!(
                            "pods of revision {revision} are refused by Pod Security restricted: {message}"
                        );
                    }
                }
            }
            let list = pods.list(selector).await.ok()?;
            (!list.items.is_empty()).then_some(())
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------------

/// The CRDs are accepted and become Established; every example applies (server-side, dry run,
/// strict); every example under `examples/invalid/` is refused naming what its `# expect:` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_are_accepted_and_examples_apply() {
    let Some(cluster) = Cluster::set_up("crds").await else {
        return;
    };
    let (client, ns) = (cluster.client.clone(), cluster.namespace.name.as_str());

    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut applied = 0;
    for file in yaml_files(&examples) {
        let (_, docs) = documents(&file);
        for doc in &docs {
            let Some((api, object)) = as_model_deployment(&client, ns, doc) else {
                eprintln!(
                    "note: {}: {} documents are not checked",
                    file.display(),
                    doc.get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or("kind-less")
                );
                continue;
            };
            let name = object.name_any();
            api.patch(
                &name,
                &PatchParams::apply(MANAGER).dry_run().validation_strict(),
                &Patch::Apply(&object),
            )
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{}: ModelDeployment {name} was refused by the API server: {e}",
                    file.display()
                )
            });
            applied += 1;
        }
    }
    assert!(
        applied > 0,
        "no ModelDeployment found in {}/*.yaml",
        examples.display()
    );

    let invalid = yaml_files(&examples.join("invalid"));
    if invalid.is_empty() {
        eprintln!("note: no examples/invalid/*.yaml yet: nothing to refuse");
    }
    let mut refused = 0;
    for file in &invalid {
        let (text, docs) = documents(file);
        let first = text.lines().next().unwrap_or_default();
        let expect = first
            .strip_prefix("# expect: ")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                panic!(
                    "{}: the first line must be `# expect: <substring of the refusal>`, found {first:?}",
                    file.display()
                )
            });
        let models: Vec<_> = docs
            .iter()
            .filter_map(|d| as_model_deployment(&client, ns, d))
            .collect();
        assert!(
            !models.is_empty(),
            "{}: no ModelDeployment in it",
            file.display()
        );
        for (api, object) in &models {
            let result = create_dry_run(&client, api, object).await;
            assert_refused(
                result,
                None,
                expect,
                &format!("{}: ModelDeployment {}", file.display(), object.name_any()),
            );
        }
        refused += 1;
    }
    assert_eq!(refused, invalid.len());
}

/// The operator creates a revision Deployment and the Service (controlled by the
/// ModelDeployment), reports status, and keeps serving the old revision while a new one is not
/// complete; once it is, the Service moves and the old Deployment goes; deleting the
/// ModelDeployment garbage-collects every child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_creates_children_then_replaces_a_revision_and_gc_removes_everything() {
    let Some(cluster) = Cluster::set_up("rollout").await else {
        return;
    };
    let (client, ns) = (cluster.client.clone(), cluster.namespace.name.as_str());
    let mut operator = Operator::start(&client, ns);
    operator.wait_ready().await;

    let name = "fraud";
    let models: Api<ModelDeployment> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let (models, deployments, services) = (&models, &deployments, &services);

    let created = models
        .create(&post_params(), &model_deployment(name, pause_model(1)))
        .await
        .expect("the ModelDeployment is created");
    let uid = created.uid().expect("a created object has a uid");
    let rev1 = revision_of(&created.spec);
    let dep1 = format!("{name}-{rev1}");
    let dep1 = dep1.as_str();

    // Children, controlled by the ModelDeployment.
    let deployment = eventually(
        &format!("Deployment {dep1} exists"),
        Duration::from_secs(60),
        || async move { deployments.get_opt(dep1).await.ok().flatten() },
    )
    .await;
    assert_controlled_by(&deployment, &format!("Deployment {dep1}"), &uid);
    let service = eventually(
        &format!("Service {name} exists"),
        Duration::from_secs(60),
        || async move { services.get_opt(name).await.ok().flatten() },
    )
    .await;
    assert_controlled_by(&service, &format!("Service {name}"), &uid);

    // Status: this generation observed, a phase; the Service's revision counts as stable (the
    // new-revision step below relies on the operator having seen the Service).
    let rev = rev1.as_str();
    eventually(
        &format!(
            "status.observedGeneration == metadata.generation, status.phase set and status.stable.hash == {rev}"
        ),
        Duration::from_secs(60),
        || async move {
            let md = models.get(name).await.ok()?;
            let status = md.status?;
            (status.observed_generation == md.metadata.generation
                && status.phase.is_some()
                && status.stable.is_some_and(|s| s.hash == rev))
            .then_some(())
        },
    )
    .await;

    assert_admitted_under_restricted(&client, ns, &rev1).await;

    // A new version: a second Deployment; the old one keeps serving while the new one is not
    // complete (pause never becomes Ready).
    let patched = models
        .patch(
            name,
            &patch_params(),
            &Patch::Merge(json!({"spec": {"model": {"version": "1.1.0", "image": IMAGE_2}}})),
        )
        .await
        .expect("the version change is accepted");
    let rev2 = revision_of(&patched.spec);
    assert_ne!(rev1, rev2, "a version change makes a new revision");
    let dep2 = format!("{name}-{rev2}");
    let dep2 = dep2.as_str();
    let deployment = eventually(
        &format!("Deployment {dep2} of the new revision exists"),
        Duration::from_secs(60),
        || async move { deployments.get_opt(dep2).await.ok().flatten() },
    )
    .await;
    assert_controlled_by(&deployment, &format!("Deployment {dep2}"), &uid);
    let (old, new) = (rev1.as_str(), rev2.as_str());
    let md = eventually(
        &format!("status shows {new} rolling out next to stable {old} for the new generation"),
        Duration::from_secs(60),
        || async move {
            let md = models.get(name).await.ok()?;
            let status = md.status.as_ref()?;
            (status.observed_generation == md.metadata.generation
                && status.canary.as_ref().is_some_and(|c| c.hash == new)
                && status.stable.as_ref().is_some_and(|s| s.hash == old))
            .then_some(md)
        },
    )
    .await;
    let status = md.status.expect("status");
    assert_eq!(status.phase, Some(Phase::Progressing), "{status:?}");
    assert!(
        deployments
            .get_opt(dep1)
            .await
            .expect("get the old Deployment")
            .is_some(),
        "the old revision must keep serving until the new one is complete"
    );
    let service = services.get(name).await.expect("get the Service");
    assert_eq!(
        selected_revision(&service).as_deref(),
        Some(old),
        "the Service must not move to a revision that is not complete"
    );

    // Completion without nodes: with `replicas: 0` the new Deployment is complete as soon as the
    // Deployment controller has observed it. Then the Service moves and the old revision goes.
    let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map(|l| l.items.len())
        .unwrap_or(0);
    eprintln!("note: the cluster has {nodes} node(s) listed; the takeover below needs none");
    models
        .patch(
            name,
            &patch_params(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .expect("replicas: 0 is accepted");
    eventually(
        &format!(
            "revision {new} takes over: Service selects it, Deployment {dep1} is deleted, status.stable is {new} \
             (a Deployment's status is written by kube-controller-manager: is it running?)"
        ),
        Duration::from_secs(90),
        || async move {
            let service = services.get(name).await.ok()?;
            let old_gone = deployments.get_opt(dep1).await.ok()?.is_none();
            let md = models.get(name).await.ok()?;
            let status = md.status?;
            (selected_revision(&service).as_deref() == Some(new)
                && old_gone
                && status.observed_generation == md.metadata.generation
                && status.stable.is_some_and(|s| s.hash == new)
                && status.canary.is_none()
                && status.phase == Some(Phase::Healthy))
            .then_some(())
        },
    )
    .await;

    // Deleting the ModelDeployment (foreground) garbage-collects every child.
    models
        .delete(name, &DeleteParams::foreground())
        .await
        .expect("the ModelDeployment is deleted");
    let children = ListParams::default().labels(&format!("{LABEL_MODEL}={name}"));
    let children = &children;
    eventually(
        &format!(
            "garbage collection removes every Deployment and the Service of {name} within 60s \
             (it is done by kube-controller-manager: is it running?)"
        ),
        Duration::from_secs(60),
        || async move {
            let left = deployments.list_metadata(children).await.ok()?.items.len();
            let service = services.get_opt(name).await.ok()?;
            (left == 0 && service.is_none()).then_some(())
        },
    )
    .await;
    eventually(
        &format!("ModelDeployment {name} is gone after its dependents"),
        Duration::from_secs(30),
        || async move { models.get_opt(name).await.ok()?.is_none().then_some(()) },
    )
    .await;

    operator.stop().await;
}

/// A settled ModelDeployment survives an operator restart untouched: not one resourceVersion of
/// it or its children changes, and the new operator writes no child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_operator_changes_no_resource_version() {
    let Some(cluster) = Cluster::set_up("restart").await else {
        return;
    };
    let (client, ns) = (cluster.client.clone(), cluster.namespace.name.as_str());
    let mut operator = Operator::start(&client, ns);
    operator.wait_ready().await;

    let name = "iris";
    let models: Api<ModelDeployment> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let models = &models;
    let deployments = &deployments;
    let created = models
        .create(&post_params(), &model_deployment(name, pause_model(0)))
        .await
        .expect("the ModelDeployment is created");
    let dep = format!("{name}-{}", revision_of(&created.spec));
    let dep = dep.as_str();

    // Settled: the Deployment controller is done with the Deployment, and the operator reported
    // Healthy for this generation.
    eventually(
        &format!(
            "Deployment {dep} is complete and {name} is Healthy \
             (a Deployment's status is written by kube-controller-manager: is it running?)"
        ),
        Duration::from_secs(90),
        || async move {
            let d = deployments.get_opt(dep).await.ok()??;
            let status = d.status?;
            let conditions = status.conditions.unwrap_or_default();
            let complete = status.observed_generation == d.metadata.generation
                && conditions
                    .iter()
                    .any(|c| c.type_ == "Available" && c.status == "True")
                && conditions.iter().any(|c| {
                    c.type_ == "Progressing"
                        && c.reason.as_deref() == Some("NewReplicaSetAvailable")
                });
            let md = models.get(name).await.ok()?;
            let md_status = md.status?;
            (complete
                && md_status.observed_generation == md.metadata.generation
                && md_status.phase == Some(Phase::Healthy))
            .then_some(())
        },
    )
    .await;
    let before = resource_versions(&client, ns, name)
        .await
        .expect("read resource versions");
    assert!(
        before.keys().any(|k| k.starts_with("Deployment/"))
            && before.keys().any(|k| k.starts_with("Service/")),
        "children missing: {before:?}"
    );
    let (client_ref, before_ref) = (&client, &before);
    let unchanged = || async move {
        let now = resource_versions(client_ref, ns, name)
            .await
            .map_err(|e| e.to_string())?;
        if &now == before_ref {
            Ok(())
        } else {
            Err(format!("before {before_ref:?}, now {now:?}"))
        }
    };
    // Quiet before the restart, so that a change afterwards is the new operator's doing.
    holds(
        "resource versions unchanged while the first operator runs",
        Duration::from_secs(3),
        unchanged,
    )
    .await;

    operator.stop().await;
    let mut operator = Operator::start(&client, ns);
    operator.wait_ready().await;
    let admin = operator.admin;
    let page = eventually(
        "the new operator has reconciled the ModelDeployment (drover_reconciles_total >= 1)",
        Duration::from_secs(60),
        || async move {
            let page = http_get(admin, "/metrics").await?;
            (metric(&page, "drover_reconciles_total")? >= 1.0).then_some(page)
        },
    )
    .await;
    holds(
        "resource versions unchanged after the operator restarted",
        Duration::from_secs(5),
        unchanged,
    )
    .await;
    let after = resource_versions(&client, ns, name)
        .await
        .expect("read resource versions");
    assert_eq!(
        before, after,
        "the restart wrote to the ModelDeployment or a child"
    );
    assert!(
        !page
            .lines()
            .any(|l| l.starts_with("drover_child_writes_total{")),
        "the new operator wrote children of a settled ModelDeployment:\n{page}"
    );

    operator.stop().await;
}

/// The API server refuses bad specs, naming the field: decreasing rollout steps, autoscaling
/// bounds the wrong way round, and an image change without a version change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_spec_is_refused_with_the_field_named() {
    let Some(cluster) = Cluster::set_up("refuse").await else {
        return;
    };
    let (client, ns) = (cluster.client.clone(), cluster.namespace.name.as_str());
    let models: Api<ModelDeployment> = Api::namespaced(client.clone(), ns);
    let resource = ApiResource::erase::<ModelDeployment>(&());
    let dynamic: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    let object = |name: &str, spec: Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "drover.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("a Kubernetes object")
    };

    let steps = object(
        "steps",
        json!({"model": {"version": "1.0.0", "image": IMAGE_1}, "rollout": {"steps": [50, 10]}}),
    );
    assert_refused(
        dynamic.create(&post_params(), &steps).await,
        Some(422),
        "spec.rollout.steps",
        "rollout.steps [50, 10]",
    );

    let bounds = object(
        "bounds",
        json!({
            "model": {"version": "1.0.0", "image": IMAGE_1},
            "autoscaling": {"minReplicas": 5, "maxReplicas": 2},
        }),
    );
    assert_refused(
        dynamic.create(&post_params(), &bounds).await,
        Some(422),
        "spec.autoscaling.minReplicas",
        "autoscaling minReplicas 5 > maxReplicas 2",
    );

    models
        .create(&post_params(), &model_deployment("image", pause_model(0)))
        .await
        .expect("a valid ModelDeployment is created");
    assert_refused(
        models
            .patch(
                "image",
                &patch_params(),
                &Patch::Merge(json!({"spec": {"model": {"image": IMAGE_2}}})),
            )
            .await,
        Some(422),
        "spec.model.version",
        "an image change without a version change",
    );
    // The same change with a new version is fine.
    models
        .patch(
            "image",
            &patch_params(),
            &Patch::Merge(json!({"spec": {"model": {"image": IMAGE_2, "version": "1.1.0"}}})),
        )
        .await
        .expect("an image change with a version change is accepted");
}

// ---------------------------------------------------------------------------------------------
// Canary rollouts with real monitors standing in for pods.
// ---------------------------------------------------------------------------------------------

/// A model server on loopback: `/predict` answers 200, or 500 when `failing`.
async fn model_server(failing: bool) -> SocketAddr {
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/predict",
            post(move || async move {
                if failing {
                    (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "{\"detail\":\"boom\"}",
                    )
                } else {
                    (
                        axum::http::StatusCode::OK,
                        "{\"prediction\":0,\"probability\":0.9}",
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port for the model");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A loopback address no other stand-in of this test process has had: tests run in parallel,
/// each with its own `FakeKubelets`, and a monitor must never answer for another test's pod.
fn next_stand_in_ip() -> std::net::IpAddr {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    // 127.0.1.1 to 127.0.250.250 (62,500 addresses, never .0 or .255).
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % (250 * 250);
    let (high, low) = (n / 250 + 1, n % 250 + 1);
    std::net::IpAddr::from([127, 0, high as u8, low as u8])
}

/// A `drover monitor` process standing in for one pod.
struct StandIn {
    child: std::process::Child,
    ip: std::net::IpAddr,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stands in for the kubelets of a cluster without (usable) nodes: every pod of `model` that
/// has no IP gets a loopback address 127.0.x.y, a real `drover monitor` on it (with the token
/// from Secret `<model>-monitor-token`, in front of the good model, or the failing one for
/// revisions in `failing`), and a Ready status — so the ReplicaSet and Deployment controllers
/// count it, and the operator's collector scrapes it. Pods that go away lose their monitor.
/// With a reference profile (`start_with_profile`), every monitor bins features on it, as a
/// monitor does with the profile the operator mounts into the pod.
struct FakeKubelets {
    task: JoinHandle<()>,
    failing: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    pods: std::sync::Arc<std::sync::Mutex<BTreeMap<String, StandIn>>>,
}

impl FakeKubelets {
    async fn start(client: &Client, namespace: &str, model: &str) -> Self {
        Self::start_with(client, namespace, model, None, false).await
    }

    /// As [`start`](Self::start), each monitor with `--profile <profile>` when given.
    async fn start_with_profile(
        client: &Client,
        namespace: &str,
        model: &str,
        profile: Option<PathBuf>,
    ) -> Self {
        Self::start_with(client, namespace, model, profile, false).await
    }

    /// As [`start`](Self::start), each monitor with `--feedback --revision <the pod's
    /// drover.dev/revision label>`, as the operator runs it with `spec.monitoring.performance`.
    async fn start_with_feedback(client: &Client, namespace: &str, model: &str) -> Self {
        Self::start_with(client, namespace, model, None, true).await
    }

    /// The stand-ins' monitors: with `profile`, `--profile <profile>`; with `feedback`,
    /// `--feedback --revision <revision label>`.
    async fn start_with(
        client: &Client,
        namespace: &str,
        model: &str,
        profile: Option<PathBuf>,
        feedback: bool,
    ) -> Self {
        let good = model_server(false).await;
        let bad = model_server(true).await;
        let failing = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        let pods = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<String, StandIn>::new()));
        let dir = std::env::temp_dir().join(format!("drover-e2e-{}", random_suffix()));
        let _ = std::fs::create_dir_all(&dir);
        let (client, namespace, model) = (client.clone(), namespace.to_string(), model.to_string());
        let (failing2, pods2) = (failing.clone(), pods.clone());
        let task = tokio::spawn(async move {
            let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            let secrets: Api<k8s_openapi::api::core::v1::Secret> =
                Api::namespaced(client.clone(), &namespace);
            let selector = ListParams::default().labels(&format!("{LABEL_MODEL}={model}"));
            loop {
                tokio::time::sleep(POLL).await;
                let Ok(list) = api.list(&selector).await else {
                    continue;
                };
                let names: Vec<String> = list.items.iter().map(|p| p.name_any()).collect();
                if let Ok(mut running) = pods2.lock() {
                    running.retain(|name, _| names.contains(name));
                }
                for pod in list.items {
                    let name = pod.name_any();
                    let known = pods2.lock().map(|p| p.contains_key(&name)).unwrap_or(true);
                    if known || pod.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let Ok(Some(secret)) = secrets.get_opt(&format!("{model}-monitor-token")).await
                    else {
                        continue;
                    };
                    let Some(token) = secret.data.and_then(|d| d.get("token").cloned()) else {
                        continue;
                    };
                    let token_file = dir.join(format!("{name}.token"));
                    if std::fs::write(&token_file, &token.0).is_err() {
                        continue;
                    }
                    let revision = pod
                        .labels()
                        .get(LABEL_REVISION)
                        .cloned()
                        .unwrap_or_default();
                    let upstream = if failing2
                        .lock()
                        .map(|f| f.contains(&revision))
                        .unwrap_or(false)
                    {
                        bad
                    } else {
                        good
                    };
                    let ip = next_stand_in_ip();
                    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_drover"));
                    command.args([
                        "monitor",
                        "--listen",
                        &SocketAddr::new(ip, 8000).to_string(),
                        "--admin-listen",
                        &SocketAddr::new(ip, 9090).to_string(),
                        "--upstream",
                        &upstream.to_string(),
                        "--report-token-file",
                        &token_file.display().to_string(),
                        "--threads",
                        "1",
                    ]);
                    if let Some(profile) = &profile {
                        command.arg("--profile").arg(profile);
                    }
                    if feedback {
                        command.args(["--feedback", "--revision", revision.as_str()]);
                    }
                    let child = command
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn();
                    let Ok(child) = child else { continue };
                    let mut stand_in = StandIn { child, ip };
                    let up = poll_until(Duration::from_secs(10), || async move {
                        http_get(SocketAddr::new(ip, 9090), "/healthz")
                            .await
                            .map(|_| ())
                    })
                    .await;
                    // Someone else answering on the address (the monitor could not bind) is not
                    // this stand-in: never mark a pod Ready with an address that is not its own.
                    if up.is_none() || !matches!(stand_in.child.try_wait(), Ok(None)) {
                        continue;
                    }
                    let now = jiff::Timestamp::now().to_string();
                    let status = json!({"status": {
                        "phase": "Running",
                        "podIP": ip.to_string(),
                        "podIPs": [{"ip": ip.to_string()}],
                        "conditions": [
                            {"type": "Ready", "status": "True", "lastTransitionTime": now},
                            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                        ],
                    }});
                    if api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                        .await
                        .is_ok()
                        && let Ok(mut running) = pods2.lock()
                    {
                        running.insert(name, stand_in);
                    }
                }
            }
        });
        Self {
            task,
            failing,
            pods,
        }
    }

    /// Pods of `revision` (created from now on) answer 5xx.
    fn fail(&self, revision: &str) {
        if let Ok(mut f) = self.failing.lock() {
            f.insert(revision.to_string());
        }
    }

    /// The addresses of the stand-ins serving now (each a pod that is Ready), by pod name.
    fn addresses(&self) -> Vec<std::net::IpAddr> {
        self.pods
            .lock()
            .map(|p| p.values().map(|s| s.ip).collect())
            .unwrap_or_default()
    }

    /// Sends `n` predictions through every stand-in's monitor.
    async fn traffic(&self, n: usize) {
        send_predictions(&self.pods, n, "{\"amount\": 12.5}").await;
    }

    /// Keeps sending `n` predictions with `body` through every stand-in's monitor (those that
    /// come later too) every `every`, until the returned guard is dropped: traffic that goes on
    /// while the test waits for windows to close.
    fn keep_sending(&self, body: &str, n: usize, every: Duration) -> Traffic {
        let pods = self.pods.clone();
        let body = body.to_string();
        Traffic(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                send_predictions(&pods, n, &body).await;
            }
        }))
    }
}

/// Sends `n` predictions with `body` through the monitor of every stand-in in `pods`.
async fn send_predictions(
    pods: &std::sync::Mutex<BTreeMap<String, StandIn>>,
    n: usize,
    body: &str,
) {
    let ips: Vec<std::net::IpAddr> = pods
        .lock()
        .map(|p| p.values().map(|s| s.ip).collect())
        .unwrap_or_default();
    for ip in ips {
        for _ in 0..n {
            let _ = http_post(SocketAddr::new(ip, 8000), "/predict", body).await;
        }
    }
}

/// Traffic sent in the background (see [`FakeKubelets::keep_sending`]); stops when dropped.
struct Traffic(JoinHandle<()>);

impl Drop for Traffic {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for FakeKubelets {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One HTTP/1.1 POST of a JSON body; the status line, or `None` within 2s.
async fn http_post(addr: SocketAddr, path: &str, body: &str) -> Option<String> {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .map(str::to_string)
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// The serving spec of the canary test: pods pinned to a node that does not exist (stand-ins
/// serve for them), a short step, one failed check rolls back, reports every 5s.
fn canary_model() -> Value {
    json!({
        "model": {"version": "1.0.0", "image": IMAGE_1, "healthPath": "/", "port": 8080},
        "replicas": 2,
        "pod": {"nodeSelector": {"drover.dev/e2e": "stand-ins-serve-these-pods"}},
        "rollout": {
            "steps": [50], "interval": "10s", "maxFailedChecks": 1, "bakeTime": "0s",
            "progressDeadline": "5m", "analysis": {"minRequests": 50},
        },
        "monitoring": {"scrapeInterval": "5s"},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_across_an_operator_restart_and_a_good_one_promoted() {
    let Some(cluster) = Cluster::set_up("canary").await else {
        return;
    };
    let (client, ns) = (cluster.client.clone(), cluster.namespace.name.as_str());
    let mut operator = Operator::start(&client, ns);
    operator.wait_ready().await;
    let name = "fraud";
    let kubelets = FakeKubelets::start(&client, ns, name).await;
    let models: Api<ModelDeployment> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let (models, deployments, services) = (&models, &deployments, &services);

    let created = models
        .create(&post_params(), &model_deployment(name, canary_model()))
        .await
        .expect("the ModelDeployment is created");
    let rev1 = revision_of(&created.spec);
    let r1 = rev1.as_str();
    eventually(
        &format!(
            "revision {r1} serves (pods made Ready by the stand-ins; needs kube-controller-manager)"
        ),
        Duration::from_secs(120),
        || async move {
            let status = models.get(name).await.ok()?.status?;
            (status.stable.is_some_and(|s| s.hash == r1) && status.phase == Some(Phase::Healthy))
                .then_some(())
        },
    )
    .await;

    // Version 2 misbehaves: its pods' model answers 500.
    let v2 = {
        let mut spec = created.spec.clone();
        spec.model.version = "2.0.0".into();
        spec.model.image = IMAGE_2.into();
        revision_of(&spec)
    };
    kubelets.fail(&v2);
    models
        .patch(
            name,
            &patch_params(),
            &Patch::Merge(json!({"spec": {"model": {"version": "2.0.0", "image": IMAGE_2}}})),
        )
        .await
        .expect("version 2 is accepted");
    let r2 = v2.as_str();
    eventually(
        &format!("the canary {r2} runs its first step (its pods Ready)"),
        Duration::from_secs(120),
        || async move {
            let rollout = models.get(name).await.ok()?.status?.rollout?;
            (rollout.revision == r2 && rollout.step_started_at.is_some()).then_some(())
        },
    )
    .await;
    let service = services.get(name).await.expect("the Service");
    assert_eq!(
        selected_revision(&service),
        None,
        "during the canary the Service selects every pod of the model"
    );

    // The operator dies mid-step and comes back; the rollout resumes from status.
    operator.stop().await;
    let mut operator = Operator::start(&client, ns);
    operator.wait_ready().await;

    // Traffic shows the breach; the rollback follows at the next scrape.
    let breach = Instant::now();
    let kubelets = &kubelets;
    let rolled_back = eventually(
        "the failing canary is rolled back",
        Duration::from_secs(120),
        || async move {
            kubelets.traffic(10).await;
            let md = models.get(name).await.ok()?;
            let status = md.status?;
            (status.rollout.as_ref()?.phase == drover::api::RolloutPhase::RolledBack)
                .then_some(status)
        },
    )
    .await;
    eprintln!(
        "breach traffic started → rollback observed: {:.1}s (scrape interval 5s)",
        breach.elapsed().as_secs_f64()
    );
    assert_eq!(rolled_back.phase, Some(Phase::RolledBack));
    assert_eq!(
        rolled_back.stable.as_ref().map(|s| s.hash.as_str()),
        Some(r1)
    );
    assert_eq!(
        rolled_back.history.first().map(|h| h.outcome.as_str()),
        Some("RolledBack")
    );
    let reason = &rolled_back.rollout.as_ref().expect("rollout").reason;
    assert!(reason.contains("errorRate"), "{reason}");
    let service = services.get(name).await.expect("the Service");
    assert_eq!(
        selected_revision(&service).as_deref(),
        Some(r1),
        "traffic back on stable"
    );
    let canary = deployments
        .get(&format!("{name}-{r2}"))
        .await
        .expect("the rolled-back Deployment is kept");
    assert_eq!(canary.spec.and_then(|s| s.replicas), Some(0));
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let events = &events;
    eventually(
        "a Warning Event CanaryRolledBack on the ModelDeployment",
        Duration::from_secs(30),
        || async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("CanaryRolledBack"))
                .then_some(())
        },
    )
    .await;

    // `kubectl drover status` against it (the binary as the plugin would run).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["status", name, "-n", ns, "--kubeconfig"])
        .arg(&cluster.namespace.kubeconfig)
        .output()
        .expect("drover status runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("RolledBack") && text.contains("errorRate"),
        "{text}"
    );

    // Version 3 is healthy: promoted, and version 1 removed once it serves at full size.
    models
        .patch(
            name,
            &patch_params(),
            &Patch::Merge(json!({"spec": {"model": {"version": "3.0.0", "image": IMAGE_1}}})),
        )
        .await
        .expect("version 3 is accepted");
    let md = models.get(name).await.expect("the ModelDeployment");
    let rev3 = revision_of(&md.spec);
    let r3 = rev3.as_str();
    eventually(
        &format!("the healthy canary {r3} is promoted and serves alone"),
        Duration::from_secs(180),
        || async move {
            kubelets.traffic(10).await;
            let status = models.get(name).await.ok()?.status?;
            let service = services.get(name).await.ok()?;
            (status.stable.as_ref().is_some_and(|s| s.hash == r3)
                && status.phase == Some(Phase::Healthy)
                && selected_revision(&service).as_deref() == Some(r3)
                && status
                    .history
                    .first()
                    .is_some_and(|h| h.outcome == "Promoted"))
            .then_some(())
        },
    )
    .await;
    eventually(
        &format!("revision {r1} is removed after the promotion"),
        Duration::from_secs(60),
        || async move {
            deployments
                .get_opt(&format!("{name}-{r1}"))
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    operator.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The steady-state watch and retraining (docs/retraining.md).
// ---------------------------------------------------------------------------------------------

type Event = k8s_openapi::api::events::v1::Event;

/// The reference ConfigMap of the watch tests.
const REFERENCE: &str = "fraud-reference";
/// Its key.
const PROFILE_KEY: &str = "profile.json";
/// A request whose `amount` lies far above every bin of [`amount_profile`].
const DRIFTED: &str = "{\"amount\": 5000}";
/// The label the Job controller puts on every pod of a Job (Kubernetes 1.27+).
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// A node selector no node matches: pods pinned by it are never scheduled. The model's pods
/// are served by stand-ins; a training pod stays Pending, so its Job stays active, until a
/// test plays its kubelet ([`finish_training_pod`]).
fn pinned() -> Value {
    json!({"drover.dev/e2e": "stand-ins-serve-these-pods"})
}

/// A reference profile of model version 1.0.0 with one numeric feature, `amount`, mostly
/// between 10 and 1000 (as `drover profile` writes one; checked here as the operator reads it).
fn amount_profile() -> String {
    let text = json!({
        "version": 1,
        "modelVersion": "1.0.0",
        "features": [{
            "name": "amount",
            "kind": "numeric",
            "edges": [10.0, 100.0, 1000.0],
            "counts": [100, 400, 400, 100],
            "count": 1000,
            "mean": 300.0,
            "std": 250.0,
        }],
    })
    .to_string();
    drover::profile::ReferenceProfile::from_json(text.as_bytes())
        .expect("the test's profile is valid");
    text
}

/// A file in the temporary directory, removed when dropped.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn write(name: &str, contents: &str) -> Self {
        let path = std::env::temp_dir().join(format!("drover-e2e-{}-{name}", random_suffix()));
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        Self { path }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Creates ConfigMap `name` holding `profile` under [`PROFILE_KEY`].
async fn create_reference(client: &Client, namespace: &str, name: &str, profile: &str) {
    let config_map: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {PROFILE_KEY: profile},
    }))
    .expect("a valid ConfigMap");
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .create(&post_params(), &config_map)
        .await
        .unwrap_or_else(|e| panic!("ConfigMap {name} was refused: {e}"));
}

/// The spec of the retraining tests: one replica pinned to no node (a stand-in serves it),
/// the reference profile in [`REFERENCE`], windows of 10s scraped every 5s, drift declared after
/// two drifted windows of at least 20 requests, and on drift a retraining run from
/// `retraining` with a pinned `pause` Job template added.
fn watched_model(mut retraining: Value) -> Value {
    retraining["jobTemplate"] = json!({"spec": {"template": {"spec": {
        "nodeSelector": pinned(),
        "containers": [{"name": "train", "image": IMAGE_1}],
    }}}});
    json!({
        "model": {"version": "1.0.0", "image": IMAGE_1, "healthPath": "/", "port": 8080},
        "replicas": 1,
        "pod": {"nodeSelector": pinned()},
        "rollout": {"strategy": "Immediate"},
        "monitoring": {
            "scrapeInterval": "5s",
            "window": "10s",
            "reference": {"configMapRef": {"name": REFERENCE, "key": PROFILE_KEY}},
            "drift": {"method": "psi", "threshold": 0.2, "minSamples": 20, "consecutiveWindows": 2},
        },
        "remediation": {"onDrift": "Retrain", "retraining": retraining},
    })
}

/// Condition `type_` of a ModelDeployment.
fn condition<'a>(md: &'a ModelDeployment, type_: &str) -> Option<&'a drover::api::Condition> {
    md.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Condition `type_` has `status` (and `reason`, when given).
fn condition_is(
    md: &ModelDeployment,
    type_: &str,
    status: ConditionStatus,
    reason: Option<&str>,
) -> bool {
    condition(md, type_).is_some_and(|c| c.status == status && reason.is_none_or(|r| c.reason == r))
}

/// The Events with `reason` about ModelDeployment `name`.
async fn events_about(events: &Api<Event>, name: &str, reason: &str) -> Option<Vec<Event>> {
    let list = events.list(&ListParams::default()).await.ok()?;
    Some(
        list.items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.kind.as_deref())
                        == Some("ModelDeployment")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            })
            .collect(),
    )
}

/// Waits (bounded) for an Event with `reason` about `name`; returns them all.
async fn expect_event(events: &Api<Event>, name: &str, reason: &str) -> Vec<Event> {
    eventually(
        &format!("an Event {reason} about ModelDeployment {name}"),
        Duration::from_secs(30),
        || async move {
            events_about(events, name, reason)
                .await
                .filter(|found| !found.is_empty())
        },
    )
    .await
}

/// The Jobs labelled as retraining runs of model `name` (and not being deleted).
async fn retraining_jobs(jobs: &Api<Job>, name: &str) -> Result<Vec<Job>, kube::Error> {
    let selector = ListParams::default().labels(&format!(
        "{LABEL_MODEL}={name},{}",
        drover::naming::LABEL_RETRAINING
    ));
    Ok(jobs
        .list(&selector)
        .await?
        .items
        .into_iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .collect())
}

/// Whether a Job has condition `type_` True (`Complete`, `Failed`).
fn job_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Value of the sample of `name` whose labels include every one of `labels` (`key="value"`).
fn labelled_metric(page: &str, name: &str, labels: &[&str]) -> Option<f64> {
    page.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (set, value) = rest.split_once("} ")?;
        let pairs: Vec<&str> = set.split(',').collect();
        labels
            .iter()
            .all(|l| pairs.contains(l))
            .then(|| value.split_whitespace().next()?.parse().ok())?
    })
}

/// Now, as Kubernetes writes times (RFC 3339, whole seconds, UTC).
fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A Pod made from `job`'s pod template is admitted (server-side dry run) in `namespace`,
/// which enforces Pod Security `restricted`: Drover's restricted defaults are enough.
async fn assert_template_admitted(client: &Client, namespace: &str, job: &Job) {
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .expect("a Job has a pod template");
    let pod = Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(format!("{}-admission", job.name_any())),
            labels: template.metadata.and_then(|m| m.labels),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    };
    let params = PostParams {
        dry_run: true,
        field_manager: Some(MANAGER.into()),
    };
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&params, &pod)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "a Pod from the pod template of Job {} is refused in a namespace enforcing Pod Security restricted: {e}",
                job.name_any()
            )
        });
}

/// Plays the kubelet for the pod of Job `job`: waits for the pod the Job controller made (it
/// is pinned to no node, so it is never scheduled), then reports its first container exited 0
/// leaving termination `message` (phase `Succeeded`), as the kubelet does after a run. The Job
/// controller counts the pod and completes the Job itself. Returns the pod's name.
async fn finish_training_pod(pods: &Api<Pod>, job: &str, message: &str) -> String {
    let selector = ListParams::default().labels(&format!("{JOB_NAME_LABEL}={job}"));
    let selector = &selector;
    let pod = eventually(
        &format!(
            "the Job controller creates the pod of Job {job} (kube-controller-manager: is it running?)"
        ),
        Duration::from_secs(60),
        || async move {
            pods.list(selector)
                .await
                .ok()?
                .items
                .into_iter()
                .find(|p| p.metadata.deletion_timestamp.is_none())
        },
    )
    .await;
    let name = pod.name_any();
    let (container, image) = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .expect("the training pod has a container");
    let finished = now_rfc3339();
    let started = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| finished.clone());
    let status = json!({"status": {
        "phase": "Succeeded",
        "containerStatuses": [{
            "name": container,
            "image": image,
            "imageID": "",
            "ready": false,
            "started": false,
            "restartCount": 0,
            "state": {"terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "message": message,
                "startedAt": started,
                "finishedAt": finished,
            }},
        }],
    }});
    pods.patch_status(&name, &patch_params(), &Patch::Merge(status))
        .await
        .unwrap_or_else(|e| panic!("the status of training pod {name} was refused: {e}"));
    name
}

/// Waits (bounded) until the Job controller marks Job `job` Complete.
async fn expect_complete(jobs: &Api<Job>, job: &str) {
    eventually(
        &format!(
            "the Job controller marks Job {job} Complete after its pod succeeded (kube-controller-manager: is it running?)"
        ),
        Duration::from_secs(90),
        || async move {
            let found = jobs.get_opt(job).await.ok()??;
            job_condition(&found, "Complete").then_some(())
        },
    )
    .await;
}

/// Drift held for minutes, over many windows and past the cooldown, starts exactly one Job: the
/// run started on the declaration is still active (its pod is never scheduled), so no second one
/// starts. The Job is Drover's: owned by the ModelDeployment, told why it runs, bounded by a
/// deadline, and its pods pass Pod Security `restricted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_held_for_many_windows_starts_exactly_one_retraining_job() {
    let Some(cluster) = Cluster::set_up("drift").await else {
        return;
    };
    let (client, ns) = (cluster.client.clone(), cluster.namespace.name.as_str());
    let profile_text = amount_profile();
    let profile = TempFile::write("profile.json", &profile_text);
    create_reference(&client, ns, REFERENCE, &profile_text).await;
    let mut operator = Operator::start(&client, ns);
    operator.wait_ready().await;
    let name = "fraud";
    let kubelets =
        FakeKubelets::start_with_profile(&client, ns, name, Some(profile.path.clone())).await;
    // About 10 requests a second, all far outside the profile: every 10s window drifts.
    let _traffic = kubelets.keep_sending(DRIFTED, 10, Duration::from_secs(1));
    let models: Api<ModelDeployment> = Api::namespaced(client.clone(), ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let (models, jobs, pods, events) = (&models, &jobs, &pods, &events);

    let created = models
        .create(
            &post_params(),
            &model_deployment(
                name,
                watched_model(json!({
                    "cooldown": "1m",
                    "maxRunsPerDay": 2,
                    "historyLimit": 1,
                    "timeout": "1h",
                })),
            ),
        )
        .await
        .expect("the ModelDeployment is created");
    let uid = created.uid().expect("a created object has a uid");
    let rev = revision_of(&created.spec);
    let r = rev.as_str();
    eventually(
        &format!(
            "revision {r} serves (its pod made Ready by a stand-in; needs kube-controller-manager) \
             and the steady-state watch reports condition DriftDetected"
        ),
        Duration::from_secs(120),
        || async move {
            let md = models.get(name).await.ok()?;
            let status = md.status.as_ref()?;
            (status.stable.as_ref().is_some_and(|s| s.hash == r)
                && status.phase == Some(Phase::Healthy)
                && condition(&md, DRIFT_DETECTED).is_some())
            .then_some(())
        },
    )
    .await;

    // Two drifted windows of 10s declare drift, on `amount`.
    let watch_started = Instant::now();
    let md = eventually(
        "condition DriftDetected=True (two drifted 10s windows of >= 20 requests)",
        Duration::from_secs(180),
        || async move {
            let md = models.get(name).await.ok()?;
            condition_is(&md, DRIFT_DETECTED, ConditionStatus::True, None).then_some(md)
        },
    )
    .await;
    eprintln!(
        "drifted traffic on a serving revision → DriftDetected: {:.1}s (windows of 10s)",
        watch_started.elapsed().as_secs_f64()
    );
    let drift = condition(&md, DRIFT_DETECTED)
        .expect("DriftDetected")
        .clone();
    assert_eq!(drift.reason, "DriftDetected", "{drift:?}");
    assert!(drift.message.contains("amount"), "{}", drift.message);
    let state = md
        .status
        .as_ref()
        .and_then(|s| s.drift.clone())
        .expect("status.drift");
    assert!(state.detected, "{state:?}");
    assert_eq!(state.revision, rev, "{state:?}");
    assert!(
        state
            .features
            .iter()
            .any(|f| f.name == "amount" && f.drifted),
        "{state:?}"
    );

    // One Job, Drover's, started on the declaration.
    let drift_selector = ListParams::default().labels(&format!(
        "{LABEL_MODEL}={name},{}=drift",
        drover::naming::LABEL_RETRAINING
    ));
    let drift_selector = &drift_selector;
    let job = eventually(
        "a retraining Job labelled drover.dev/retraining=drift",
        Duration::from_secs(60),
        || async move {
            jobs.list(drift_selector)
                .await
                .ok()?
                .items
                .into_iter()
                .next()
        },
    )
    .await;
    let job_name = job.name_any();
    let started = Instant::now();
    assert!(
        job_name.starts_with(&format!("{name}-retrain-")),
        "Job name {job_name}: expected <model>-retrain-<minutes since the epoch>"
    );
    assert_controlled_by(&job, &format!("Job {job_name}"), &uid);
    assert_eq!(
        job.labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("drover"),
        "{:?}",
        job.labels()
    );
    let spec = job.spec.clone().expect("a Job has a spec");
    assert_eq!(
        spec.active_deadline_seconds,
        Some(3600),
        "retraining.timeout 1h becomes activeDeadlineSeconds"
    );
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    assert_eq!(
        pod_labels
            .get(drover::naming::LABEL_RETRAINING_OF)
            .map(String::as_str),
        Some(name),
        "{pod_labels:?}"
    );
    assert!(
        !pod_labels.contains_key(LABEL_MODEL),
        "a training pod must not carry {LABEL_MODEL} (the model's Service would select it): {pod_labels:?}"
    );
    let pod_spec = spec.template.spec.clone().expect("a pod template spec");
    let train = pod_spec
        .containers
        .iter()
        .find(|c| c.name == "train")
        .expect("the template's container");
    let env: BTreeMap<String, String> = train
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect();
    assert_eq!(
        env.get("DROVER_TRIGGER_REASON").map(String::as_str),
        Some("Drift"),
        "{env:?}"
    );
    assert_eq!(
        env.get("DROVER_MODEL_VERSION").map(String::as_str),
        Some("1.0.0")
    );
    assert_eq!(env.get("DROVER_JOB_NAME"), Some(&job_name));
    let report: Value = serde_json::from_str(
        env.get("DROVER_TRIGGER_REPORT")
            .expect("DROVER_TRIGGER_REPORT is set"),
    )
    .expect("DROVER_TRIGGER_REPORT is JSON");
    assert!(
        report["features"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["name"] == "amount")),
        "the trigger report names the drifted feature: {report}"
    );
    assert_eq!(pod_spec.restart_policy.as_deref(), Some("Never"));

    // Its pods pass Pod Security restricted: a dry run of its template, and (with the Job
    // controller) the pod itself exists. It is never scheduled, so the Job stays active.
    assert_template_admitted(&client, ns, &job).await;
    let pod_selector = ListParams::default().labels(&format!("{JOB_NAME_LABEL}={job_name}"));
    let pod_selector = &pod_selector;
    eventually(
        &format!(
            "the Job controller creates the pod of Job {job_name} in a namespace enforcing \
             Pod Security restricted (kube-controller-manager: is it running?)"
        ),
        Duration::from_secs(60),
        || async move {
            let list = pods.list(pod_selector).await.ok()?;
            (!list.items.is_empty()).then_some(())
        },
    )
    .await;

    let j = job_name.as_str();
    let md = eventually(
        &format!("status.retraining.active names Job {j} and condition Retraining=True"),
        Duration::from_secs(30),
        || async move {
            let md = models.get(name).await.ok()?;
            let active = md.status.as_ref()?.retraining.as_ref()?.active.as_ref()?;
            (active.job == j
                && condition_is(
                    &md,
                    drover::conditions::RETRAINING,
                    ConditionStatus::True,
                    Some("RetrainingRunning"),
                ))
            .then_some(md)
        },
    )
    .await;
    let retraining = md
        .status
        .as_ref()
        .and_then(|s| s.retraining.clone())
        .expect("status.retraining");
    let active = retraining.active.clone().expect("an active run");
    assert_eq!(active.reason, "Drift", "{active:?}");
    assert_eq!(active.result, "Running", "{active:?}");
    assert_eq!(retraining.starts.len(), 1, "{retraining:?}");
    expect_event(events, name, "DriftDetected").await;
    expect_event(events, name, "RetrainingStarted").await;

    // Drift stays declared for minutes — many windows, past the 1m cooldown — and the run is
    // still going: never a second Job.
    let checked = std::sync::atomic::AtomicUsize::new(0);
    let checked = &checked;
    let hold = Duration::from_secs(150);
    holds(
        &format!(
            "exactly one retraining Job ({j}), still active, named by status.retraining.active"
        ),
        hold,
        || async move {
            let (found, md) = match (retraining_jobs(jobs, name).await, models.get(name).await) {
                (Ok(found), Ok(md)) => (found, md),
                (Err(e), _) | (_, Err(e)) => {
                    // One failed request tells nothing either way.
                    eprintln!("note: a check was skipped: {e}");
                    return Ok(());
                }
            };
            let names: Vec<String> = found.iter().map(|j| j.name_any()).collect();
            if names != [j] {
                return Err(format!("retraining Jobs {names:?}, expected only {j}"));
            }
            if found
                .iter()
                .any(|job| job_condition(job, "Complete") || job_condition(job, "Failed"))
            {
                return Err(format!("Job {j} finished: {:?}", found[0].status));
            }
            let retraining = md.status.as_ref().and_then(|s| s.retraining.as_ref());
            let active = retraining
                .and_then(|r| r.active.as_ref())
                .map(|a| a.job.as_str());
            if active != Some(j) {
                return Err(format!("status.retraining.active is {active:?}"));
            }
            let starts = retraining.map(|r| r.starts.len()).unwrap_or(0);
            if starts != 1 {
                return Err(format!(
                    "{starts} starts recorded in status.retraining.starts"
                ));
            }
            checked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        },
    )
    .await;
    let checks = checked.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        checks >= 30,
        "only {checks} checks got answers from the API server while drift was held"
    );
    assert!(
        started.elapsed() > Duration::from_secs(60),
        "the hold must outlast the cooldown"
    );

    // Still drifted, still running, and the operator's metrics agree.
    let md = models.get(name).await.expect("the ModelDeployment");
    assert!(
        condition_is(
            &md,
            DRIFT_DETECTED,
            ConditionStatus::True,
            Some("DriftDetected")
        ),
        "{:?}",
        md.status
    );
    assert!(
        condition_is(
            &md,
            drover::conditions::RETRAINING,
            ConditionStatus::True,
            Some("RetrainingRunning")
        ),
        "{:?}",
        md.status
    );
    let page = http_get(operator.admin, "/metrics")
        .await
        .expect("the operator's /metrics answers");
    let ns_label = format!("namespace=\"{ns}\"");
    let model_label = format!("name=\"{name}\"");
    assert_eq!(
        labelled_metric(&page, "drover_drift_detected", &[&ns_label, &model_label]),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        labelled_metric(
            &page,
            "drover_retraining_runs_total",
            &[&ns_label, &model_label, "reason=\"drift\""]
        ),
        Some(1.0),
        "{page}"
    );
    operator.stop().await;
}

/// A retraining run that reports a model below the acceptance gate: the candidate is recorded
/// as rejected (with the failing rule), announced, and — although `autoDeploy` is on — never
/// deployed. The Job is Drover's own, started on drift; the test plays the kubelet of its pod
/// (phase Succeeded, the report as termination message) and kube-controller-manager's Job
/// controller completes it. The next run (after the cooldown) leaves a message that is not
/// JSON: no candidate, a `RetrainingReportInvalid` Event, and the older finished Job goes
/// (`historyLimit: 1`) while the newer one stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_below_the_acceptance_gate_is_never_deployed() {
    let Some(cluster) = Cluster::set_up("gate").await else {
        return;
    };
    let (client, ns) = (cluster.client.clone(), cluster.namespace.name.as_str());
    let profile_text = amount_profile();
    let profile = TempFile::write("profile.json", &profile_text);
    create_reference(&client, ns, REFERENCE, &profile_text).await;
    let mut operator = Operator::start(&client, ns);
    operator.wait_ready().await;
    let name = "fraud";
    let kubelets =
        FakeKubelets::start_with_profile(&client, ns, name, Some(profile.path.clone())).await;
    let _traffic = kubelets.keep_sending(DRIFTED, 10, Duration::from_secs(1));
    let models: Api<ModelDeployment> = Api::namespaced(client.clone(), ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let (models, jobs, pods, events) = (&models, &jobs, &pods, &events);

    let created = models
        .create(
            &post_params(),
            &model_deployment(
                name,
                watched_model(json!({
                    "cooldown": "1m",
                    "maxRunsPerDay": 2,
                    "historyLimit": 1,
                    "timeout": "1h",
                    "acceptance": {"metrics": [{"name": "accuracy", "min": 0.9}]},
                    "autoDeploy": true,
                })),
            ),
        )
        .await
        .expect("the ModelDeployment is created");
    let generation = created.metadata.generation;

    // Drift declared; the first run starts.
    let first = eventually(
        "the serving revision drifts and a retraining Job starts (stand-ins serve the model; \
         needs kube-controller-manager)",
        Duration::from_secs(300),
        || async move { retraining_jobs(jobs, name).await.ok()?.into_iter().next() },
    )
    .await;
    let first = first.name_any();
    let j1 = first.as_str();

    // The run reports a model below the gate (accuracy 0.5 < 0.9).
    let report = json!({
        "model": {"version": "1.1.0", "image": "registry.example.com/fraud:1.1.0"},
        "metrics": {"accuracy": 0.5},
    })
    .to_string();
    finish_training_pod(pods, j1, &report).await;
    expect_complete(jobs, j1).await;
    let md = eventually(
        &format!("the run of Job {j1} is recorded with its candidate"),
        Duration::from_secs(60),
        || async move {
            let md = models.get(name).await.ok()?;
            let retraining = md.status.as_ref()?.retraining.as_ref()?;
            (retraining.last.as_ref()?.job == j1
                && retraining.candidates.first().is_some_and(|c| c.job == j1))
            .then_some(md)
        },
    )
    .await;
    let retraining = md
        .status
        .as_ref()
        .and_then(|s| s.retraining.clone())
        .expect("status.retraining");
    let candidate = retraining.candidates.first().expect("a candidate");
    assert_eq!(candidate.verdict, "Rejected", "{candidate:?}");
    assert!(candidate.reason.contains("accuracy"), "{candidate:?}");
    assert_eq!(candidate.version, "1.1.0", "{candidate:?}");
    assert_eq!(
        candidate.image.as_deref(),
        Some("registry.example.com/fraud:1.1.0"),
        "{candidate:?}"
    );
    assert_eq!(
        candidate.metrics.get("accuracy"),
        Some(&0.5),
        "{candidate:?}"
    );
    assert!(!candidate.deployed, "{candidate:?}");
    assert_eq!(retraining.candidates.len(), 1, "{retraining:?}");
    let last = retraining.last.clone().expect("status.retraining.last");
    assert_eq!(last.result, "Succeeded", "{last:?}");
    assert!(last.message.contains("1.1.0"), "{last:?}");
    if retraining.active.is_none() {
        // Drift is still declared: the next run waits for the cooldown.
        let held = retraining.held.clone().unwrap_or_default();
        assert!(held.contains("cooldown"), "{retraining:?}");
        assert!(
            condition_is(
                &md,
                drover::conditions::RETRAINING,
                ConditionStatus::False,
                Some("RetrainingHeld")
            ),
            "{:?}",
            md.status
        );
    }
    let rejected = expect_event(events, name, "CandidateRejected").await;
    assert!(
        rejected
            .iter()
            .any(|e| e.note.as_deref().is_some_and(|n| n.contains("accuracy"))),
        "{rejected:?}"
    );
    expect_event(events, name, "RetrainingSucceeded").await;

    // Never deployed, and the finished Job is kept (historyLimit 1).
    holds(
        &format!("spec.model stays at version 1.0.0 and Job {j1} is kept"),
        Duration::from_secs(15),
        || async move {
            let Ok(md) = models.get(name).await else {
                return Ok(());
            };
            if md.spec.model.version != "1.0.0" || md.spec.model.image != IMAGE_1 {
                return Err(format!("spec.model is now {:?}", md.spec.model));
            }
            if md.metadata.generation != generation {
                return Err(format!(
                    "the spec changed: generation {:?}, was {generation:?}",
                    md.metadata.generation
                ));
            }
            match jobs.get_opt(j1).await {
                Ok(None) => Err(format!("Job {j1} was deleted")),
                _ => Ok(()),
            }
        },
    )
    .await;
    for reason in ["CandidateAccepted", "CandidateDeployed"] {
        let found = events_about(events, name, reason).await.unwrap_or_default();
        assert!(found.is_empty(), "unexpected Events {reason}: {found:?}");
    }
    let page = http_get(operator.admin, "/metrics")
        .await
        .expect("the operator's /metrics answers");
    let ns_label = format!("namespace=\"{ns}\"");
    let model_label = format!("name=\"{name}\"");
    // docs/retraining.md documents reason="rejected"; compared without case.
    let rejected_count = page.lines().find_map(|line| {
        let lower = line.to_ascii_lowercase();
        (lower.starts_with("drover_retraining_candidates_total{")
            && lower.contains("reason=\"rejected\"")
            && line.contains(&ns_label)
            && line.contains(&model_label))
        .then(|| line.rsplit(' ').next()?.parse::<f64>().ok())?
    });
    assert_eq!(rejected_count, Some(1.0), "{page}");

    // The next run, after the 1m cooldown (drift is still declared), writes no report.
    let second = eventually(
        "a second retraining Job once the cooldown since the first is over",
        Duration::from_secs(150),
        || async move {
            retraining_jobs(jobs, name)
                .await
                .ok()?
                .into_iter()
                .find(|j| j.name_any() != j1)
        },
    )
    .await;
    let second = second.name_any();
    let j2 = second.as_str();
    finish_training_pod(pods, j2, "epoch 12 done, accuracy 0.50 (forgot the report)").await;
    expect_complete(jobs, j2).await;
    let md = eventually(
        &format!("the run of Job {j2} is recorded"),
        Duration::from_secs(60),
        || async move {
            let md = models.get(name).await.ok()?;
            let last = md.status.as_ref()?.retraining.as_ref()?.last.as_ref()?;
            (last.job == j2).then_some(md)
        },
    )
    .await;
    let retraining = md
        .status
        .as_ref()
        .and_then(|s| s.retraining.clone())
        .expect("status.retraining");
    let last = retraining.last.clone().expect("status.retraining.last");
    assert_eq!(last.result, "Succeeded", "{last:?}");
    assert!(
        last.message.contains("not JSON"),
        "the run's message says why there is no candidate: {last:?}"
    );
    assert_eq!(
        retraining
            .candidates
            .iter()
            .map(|c| c.job.as_str())
            .collect::<Vec<_>>(),
        [j1],
        "no candidate from a report that is not JSON: {retraining:?}"
    );
    assert_eq!(retraining.starts.len(), 2, "{retraining:?}");
    let invalid = expect_event(events, name, "RetrainingReportInvalid").await;
    assert!(
        invalid
            .iter()
            .any(|e| e.note.as_deref().is_some_and(|n| n.contains(j2))),
        "{invalid:?}"
    );

    // History: two finished runs, historyLimit 1 — the older goes, the newer stays.
    eventually(
        &format!("Job {j1} (the older finished run) is deleted: historyLimit 1"),
        Duration::from_secs(60),
        || async move { jobs.get_opt(j1).await.ok()?.is_none().then_some(()) },
    )
    .await;
    holds(
        &format!("Job {j2} is kept and spec.model stays at 1.0.0"),
        Duration::from_secs(5),
        || async move {
            if let Ok(None) = jobs.get_opt(j2).await {
                return Err(format!("Job {j2} was deleted"));
            }
            match models.get(name).await {
                Ok(md) if md.spec.model.version != "1.0.0" => {
                    Err(format!("spec.model is now {:?}", md.spec.model))
                }
                _ => Ok(()),
            }
        },
    )
    .await;
    operator.stop().await;
}

/// `drover profile` turns a held-out CSV into a ConfigMap the API server accepts (strict field
/// validation), and the operator reads the profile in it: a ModelDeployment of the profiled
/// version is watched (`DriftDetected=False`, `NoDrift`), one of another version is not
/// (`Unknown`, `ProfileVersionMismatch`: the version came out of the ConfigMap). No pod needed
/// (`replicas: 0`), but kube-controller-manager must report the Deployments complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_out_csv_profiles_correctly() {
    let Some(cluster) = Cluster::set_up("profile").await else {
        return;
    };
    let (client, ns) = (cluster.client.clone(), cluster.namespace.name.as_str());

    // Held-out data: a numeric feature, a categorical one, and the label (left out).
    let rows = 300;
    let mut csv = String::from("amount,channel,label\n");
    for i in 0..rows {
        let amount = f64::from((i * 37) % 1000) + 0.25;
        let channel = ["online", "pos", "atm"][(i % 3) as usize];
        csv.push_str(&format!("{amount},{channel},{}\n", i % 2));
    }
    let input = TempFile::write("held-out.csv", &csv);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["profile", "--input"])
        .arg(&input.path)
        .args([
            "--target",
            "label",
            "--model-version",
            "1.0.0",
            "--configmap",
            REFERENCE,
        ])
        .output()
        .expect("drover profile runs");
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "drover profile failed: {printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config_map: Value = serde_saphyr::from_str(&printed)
        .unwrap_or_else(|e| panic!("drover profile printed no YAML ({e}):\n{printed}"));
    assert_eq!(config_map["apiVersion"], "v1", "{printed}");
    assert_eq!(config_map["kind"], "ConfigMap", "{printed}");
    assert_eq!(config_map["metadata"]["name"], REFERENCE, "{printed}");

    // The API server takes it as printed (server-side apply, unknown fields refused).
    let applied = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .patch(
            REFERENCE,
            &PatchParams::apply(MANAGER).validation_strict(),
            &Patch::Apply(&config_map),
        )
        .await
        .unwrap_or_else(|e| panic!("the printed ConfigMap was refused: {e}\n{printed}"));
    let text = applied
        .data
        .as_ref()
        .and_then(|d| d.get(PROFILE_KEY))
        .unwrap_or_else(|| panic!("the ConfigMap has no key {PROFILE_KEY}: {printed}"));
    let profile = drover::profile::ReferenceProfile::from_json(text.as_bytes())
        .unwrap_or_else(|e| panic!("the stored profile does not read back: {e}\n{text}"));
    assert_eq!(profile.model_version.as_deref(), Some("1.0.0"));
    let names: Vec<&str> = profile.features.iter().map(|f| f.name.as_str()).collect();
    assert!(
        names.contains(&"amount") && names.contains(&"channel") && !names.contains(&"label"),
        "profiled features {names:?}: the target is left out"
    );
    for feature in &profile.features {
        assert_eq!(feature.count, rows as u64, "{feature:?}");
    }
    let amount = profile.feature("amount").expect("amount");
    assert!(
        matches!(&amount.layout, drover::stats::BinLayout::Numeric { edges } if !edges.is_empty()),
        "{amount:?}"
    );
    assert!(amount.mean.is_some() && amount.std.is_some(), "{amount:?}");
    let channel = profile.feature("channel").expect("channel");
    assert!(
        matches!(&channel.layout, drover::stats::BinLayout::Categorical { categories }
            if ["online", "pos", "atm"].iter().all(|c| categories.iter().any(|k| k == c))),
        "{channel:?}"
    );

    let mut operator = Operator::start(&client, ns);
    operator.wait_ready().await;
    let models: Api<ModelDeployment> = Api::namespaced(client.clone(), ns);
    let models = &models;
    let referencing = |version: &str| {
        let mut spec = pause_model(0);
        spec["model"]["version"] = json!(version);
        spec["monitoring"] =
            json!({"reference": {"configMapRef": {"name": REFERENCE, "key": PROFILE_KEY}}});
        spec
    };
    for (name, version) in [("fraud", "1.0.0"), ("fraud-next", "2.0.0")] {
        models
            .create(
                &post_params(),
                &model_deployment(name, referencing(version)),
            )
            .await
            .unwrap_or_else(|e| panic!("ModelDeployment {name} was refused: {e}"));
    }

    // The profiled version is watched against it.
    let md = eventually(
        "fraud (version 1.0.0) serves (its Deployment of 0 replicas is complete once \
         kube-controller-manager has seen it) and has DriftDetected=False with reason NoDrift: \
         its profile is found and valid",
        Duration::from_secs(60),
        || async move {
            let md = models.get("fraud").await.ok()?;
            condition_is(&md, DRIFT_DETECTED, ConditionStatus::False, Some("NoDrift")).then_some(md)
        },
    )
    .await;
    assert!(
        !condition_is(&md, "Stalled", ConditionStatus::True, None),
        "the reference is found and valid: {:?}",
        md.status
    );
    // Another version is not compared against it.
    let md = eventually(
        "fraud-next (version 2.0.0) has DriftDetected=Unknown with reason ProfileVersionMismatch",
        Duration::from_secs(60),
        || async move {
            let md = models.get("fraud-next").await.ok()?;
            condition_is(
                &md,
                DRIFT_DETECTED,
                ConditionStatus::Unknown,
                Some("ProfileVersionMismatch"),
            )
            .then_some(md)
        },
    )
    .await;
    let mismatch = condition(&md, DRIFT_DETECTED).expect("DriftDetected");
    assert!(
        mismatch.message.contains("1.0.0") && mismatch.message.contains("2.0.0"),
        "{}",
        mismatch.message
    );
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    expect_event(&events, "fraud-next", "ProfileVersionMismatch").await;
    operator.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Notifications, batch scoring and performance from labels (issue 7).
// ---------------------------------------------------------------------------------------------

type Secret = k8s_openapi::api::core::v1::Secret;

/// The Secret holding the webhook URL, and its key.
const WEBHOOK_SECRET: &str = "drover-webhook";
const WEBHOOK_KEY: &str = "url";

/// A webhook receiver on loopback: every body posted to `/hook` is kept, in arrival order, and
/// answered 200.
struct WebhookReceiver {
    addr: SocketAddr,
    received: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    task: JoinHandle<()>,
}

impl WebhookReceiver {
    async fn start() -> Self {
        use axum::routing::post;
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
        let keep = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(move |body: axum::body::Bytes| {
                let keep = keep.clone();
                async move {
                    let value = serde_json::from_slice::<Value>(&body).unwrap_or_else(
                        |_| json!({"unparsable": String::from_utf8_lossy(&body).to_string()}),
                    );
                    if let Ok(mut kept) = keep.lock() {
                        kept.push(value);
                    }
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the webhook receiver");
        let addr = listener.local_addr().expect("its address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            received,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Everything received so far, in arrival order.
    fn received(&self) -> Vec<Value> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Creates (or replaces the URL of) the webhook Secret.
async fn set_webhook_url(secrets: &Api<Secret>, url: &str) {
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": WEBHOOK_SECRET},
        "type": "Opaque",
        "stringData": {WEBHOOK_KEY: url},
    });
    secrets
        .patch(
            WEBHOOK_SECRET,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap_or_else(|e| panic!("Secret {WEBHOOK_SECRET} was refused: {e}"));
}

/// Index of the first notification of `event` for model `name` at `version`.
fn position(received: &[Value], event: &str, name: &str, version: &str) -> Option<usize> {
    received.iter().position(|n| {
        n["event"] == event && n["model"]["name"] == name && n["model"]["version"] == version
    })
}

/// Notifications reach a local receiver (the operator runs in-process, so loopback works): a
/// canary rollout to version 2.0.0 posts RolloutStarted, then Promoted, with the model's
/// namespace, name and version, and condition NotificationsDelivered is True. Once the Secret
/// names a port nobody listens on (and the URL cache of 60s has expired), the next rollout's
/// notifications fail: NotificationsDelivered=False with reason WebhookDeliveryFailed, nothing
/// of version 3.0.0 reaches the old receiver, and reconciles go on (observedGeneration follows
/// a spec change promptly while deliveries are being retried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_a_local_webhook_in_order_and_a_dead_one_is_a_condition() {
    use drover::conditions::NOTIFICATIONS_DELIVERED;
    let Some(cluster) = Cluster::set_up("notify").await else {
        return;
    };
    let (client, ns) = (cluster.client.clone(), cluster.namespace.name.as_str());
    let receiver = WebhookReceiver::start().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    set_webhook_url(&secrets, &receiver.url()).await;
    let mut operator = Operator::start(&client, ns);
    operator.wait_ready().await;
    let name = "fraud";
    let kubelets = FakeKubelets::start(&client, ns, name).await;
    let models: Api<ModelDeployment> = Api::namespaced(client.clone(), ns);
    let (models, kubelets, receiver) = (&models, &kubelets, &receiver);

    let mut spec = canary_model();
    spec["notifications"] = json!({
        "webhook": {"urlSecretRef": {"name": WEBHOOK_SECRET, "key": WEBHOOK_KEY}},
    });
    let created = models
        .create(&post_params(), &model_deployment(name, spec))
        .await
        .expect("the ModelDeployment is created");
    let rev1 = revision_of(&created.spec);
    let r1 = rev1.as_str();
    eventually(
        &format!(
            "revision {r1} serves (pods made Ready by the stand-ins; needs kube-controller-manager)"
        ),
        Duration::from_secs(120),
        || async move {
            let status = models.get(name).await.ok()?.status?;
            (status.stable.is_some_and(|s| s.hash == r1) && status.phase == Some(Phase::Healthy))
                .then_some(())
        },
    )
    .await;

    // A canary rollout to version 2.0.0, promoted.
    models
        .patch(
            name,
            &patch_params(),
            &Patch::Merge(json!({"spec": {"model": {"version": "2.0.0", "image": IMAGE_2}}})),
        )
        .await
        .expect("version 2 is accepted");
    let rev2 = revision_of(&models.get(name).await.expect("the ModelDeployment").spec);
    let r2 = rev2.as_str();
    eventually(
        &format!("the canary {r2} is promoted"),
        Duration::from_secs(180),
        || async move {
            kubelets.traffic(10).await;
            let status = models.get(name).await.ok()?.status?;
            (status.stable.as_ref().is_some_and(|s| s.hash == r2)
                && status.phase == Some(Phase::Healthy)
                && status
                    .history
                    .first()
                    .is_some_and(|h| h.outcome == "Promoted"))
            .then_some(())
        },
    )
    .await;
    let received = eventually(
        "the receiver gets RolloutStarted and Promoted of version 2.0.0",
        Duration::from_secs(30),
        || async move {
            let received = receiver.received();
            (position(&received, "Promoted", name, "2.0.0").is_some()
                && position(&received, "RolloutStarted", name, "2.0.0").is_some())
            .then_some(received)
        },
    )
    .await;
    let started = position(&received, "RolloutStarted", name, "2.0.0").expect("RolloutStarted");
    let promoted = position(&received, "Promoted", name, "2.0.0").expect("Promoted");
    assert!(
        started < promoted,
        "RolloutStarted must arrive before Promoted: {received:#?}"
    );
    for n in [&received[started], &received[promoted]] {
        assert_eq!(n["version"], 1, "{n}");
        assert_eq!(n["model"]["namespace"], ns, "{n}");
        assert_eq!(n["model"]["name"], name, "{n}");
        assert_eq!(n["model"]["version"], "2.0.0", "{n}");
        assert!(
            n["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "the Event reason is given: {n}"
        );
        assert!(
            n["message"].as_str().is_some_and(|m| !m.is_empty()),
            "the Event's text is given: {n}"
        );
        assert_eq!(n["severity"], "info", "{n}");
    }
    eventually(
        "condition NotificationsDelivered=True with reason Delivered",
        Duration::from_secs(60),
        || async move {
            let md = models.get(name).await.ok()?;
            condition_is(
                &md,
                NOTIFICATIONS_DELIVERED,
                ConditionStatus::True,
                Some("Delivered"),
            )
            .then_some(())
        },
    )
    .await;

    // The Secret now names a port nobody listens on. The operator reads the URL at most once a
    // minute: while the last read may still be fresh, nothing happens and nothing fails.
    let dead = format!("http://127.0.0.1:{}/hook", free_port());
    set_webhook_url(&secrets, &dead).await;
    holds(
        &format!(
            "revision {r2} serves, Healthy, and NotificationsDelivered is not False (nothing to \
             send) while the cached URL expires"
        ),
        Duration::from_secs(62),
        || async move {
            let Ok(md) = models.get(name).await else {
                return Ok(());
            };
            let status = md.status.clone().unwrap_or_default();
            let serves = status.stable.as_ref().is_some_and(|s| s.hash == r2)
                && status.phase == Some(Phase::Healthy);
            if !serves {
                return Err(format!(
                    "stable {:?}, phase {:?}",
                    status.stable, status.phase
                ));
            }
            if condition_is(&md, NOTIFICATIONS_DELIVERED, ConditionStatus::False, None) {
                return Err(format!("{:?}", condition(&md, NOTIFICATIONS_DELIVERED)));
            }
            Ok(())
        },
    )
    .await;

    // The next rollout's notifications go to the dead port and fail (5 attempts, ~15s).
    models
        .patch(
            name,
            &patch_params(),
            &Patch::Merge(json!({"spec": {"model": {"version": "3.0.0", "image": IMAGE_1}}})),
        )
        .await
        .expect("version 3 is accepted");
    let md = eventually(
        "condition NotificationsDelivered=False with reason WebhookDeliveryFailed (the URL cache \
         expired, the receiver is gone, retries are exhausted)",
        Duration::from_secs(180),
        || async move {
            kubelets.traffic(10).await;
            let md = models.get(name).await.ok()?;
            condition_is(
                &md,
                NOTIFICATIONS_DELIVERED,
                ConditionStatus::False,
                Some("WebhookDeliveryFailed"),
            )
            .then_some(md)
        },
    )
    .await;
    let failed = condition(&md, NOTIFICATIONS_DELIVERED).expect("NotificationsDelivered");
    assert!(
        failed.message.contains("not delivered"),
        "the condition says how many failed and why: {failed:?}"
    );
    let late: Vec<Value> = receiver
        .received()
        .into_iter()
        .filter(|n| n["model"]["version"] == "3.0.0")
        .collect();
    assert!(
        late.is_empty(),
        "notifications of version 3.0.0 reached the receiver the Secret no longer names: {late:?}"
    );

    // Reconciles go on: a spec change is observed promptly.
    let changed = models
        .patch(
            name,
            &patch_params(),
            &Patch::Merge(json!({"spec": {"notifications": {
                "events": ["RolloutStarted", "Promoted", "RolledBack"],
            }}})),
        )
        .await
        .expect("the notifications change is accepted");
    let generation = changed.metadata.generation.expect("a generation");
    assert!(
        generation > created.metadata.generation.unwrap_or(0),
        "the change bumps the generation"
    );
    let observed_at = Instant::now();
    eventually(
        &format!("status.observedGeneration reaches {generation} while deliveries fail"),
        Duration::from_secs(20),
        || async move {
            let status = models.get(name).await.ok()?.status?;
            (status.observed_generation >= Some(generation)).then_some(())
        },
    )
    .await;
    eprintln!(
        "spec change → observedGeneration with a dead receiver: {:.1}s",
        observed_at.elapsed().as_secs_f64()
    );
    operator.stop().await;
}

/// The cron schedule of the batch test: 03:17 on 29 February, so the CronJob controller does
/// not start a run of its own while the test runs.
const BATCH_SCHEDULE: &str = "17 3 29 2 *";

/// `spec.batch` makes CronJob `<name>-batch`, controlled by the ModelDeployment, on the given
/// schedule, whose pods pass Pod Security `restricted` (server-side dry run) and are not
/// selected by the model's Service. A run made from it by hand (as `kubectl create job
/// --from=cronjob/...` does), completed by the test playing its pod's kubelet and the Job
/// controller, is recorded (`status.batch.last.result: Succeeded`) and announced
/// (`BatchRunSucceeded`). Removing `spec.batch` deletes the CronJob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_scoring_cron_job_is_created_restricted_and_removed_with_the_spec() {
    let Some(cluster) = Cluster::set_up("batch").await else {
        return;
    };
    let (client, ns) = (cluster.client.clone(), cluster.namespace.name.as_str());
    let mut operator = Operator::start(&client, ns);
    operator.wait_ready().await;
    let name = "fraud";
    let cron_name = format!("{name}-batch");
    let cron_name = cron_name.as_str();
    let models: Api<ModelDeployment> = Api::namespaced(client.clone(), ns);
    let cron_jobs: Api<k8s_openapi::api::batch::v1::CronJob> = Api::namespaced(client.clone(), ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let (models, cron_jobs, jobs, pods, events) = (&models, &cron_jobs, &jobs, &pods, &events);

    let mut spec = pause_model(0);
    spec["pod"] = json!({"nodeSelector": pinned()});
    spec["batch"] = json!({
        "schedule": BATCH_SCHEDULE,
        "input": "s3://fraud/transactions/",
        "output": "s3://fraud/scores/",
    });
    let created = models
        .create(&post_params(), &model_deployment(name, spec))
        .await
        .expect("the ModelDeployment is created");
    let uid = created.uid().expect("a created object has a uid");

    let cron = eventually(
        &format!("CronJob {cron_name} exists"),
        Duration::from_secs(60),
        || async move { cron_jobs.get_opt(cron_name).await.ok()? },
    )
    .await;
    assert_controlled_by(&cron, &format!("CronJob {cron_name}"), &uid);
    let cron_spec = cron.spec.clone().expect("a CronJob has a spec");
    assert_eq!(cron_spec.schedule, BATCH_SCHEDULE);
    let template = cron_spec.job_template.clone();
    let job_labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    assert_eq!(
        job_labels.get(LABEL_MODEL).map(String::as_str),
        Some(name),
        "{job_labels:?}"
    );
    assert!(
        job_labels.contains_key(drover::naming::LABEL_BATCH),
        "{job_labels:?}"
    );
    let job_spec = template.spec.clone().expect("a job template spec");
    let pod_labels = job_spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    assert!(
        !pod_labels.contains_key(LABEL_MODEL),
        "a batch pod must not carry {LABEL_MODEL} (the model's Service would select it): {pod_labels:?}"
    );
    assert_eq!(
        pod_labels
            .get(drover::naming::LABEL_BATCH_OF)
            .map(String::as_str),
        Some(name),
        "{pod_labels:?}"
    );

    // A run from the CronJob, as `kubectl create job --from=cronjob/fraud-batch` makes one.
    let job_name = format!("{name}-batch-by-hand");
    let j = job_name.as_str();
    let cron_uid = cron.uid().expect("a stored CronJob has a uid");
    let job = Job {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(job_name.clone()),
            labels: Some(job_labels.clone()),
            annotations: Some(BTreeMap::from([(
                "cronjob.kubernetes.io/instantiate".to_string(),
                "manual".to_string(),
            )])),
            owner_references: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "batch/v1".into(),
                    kind: "CronJob".into(),
                    name: cron_name.into(),
                    uid: cron_uid,
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                },
            ]),
            ..Default::default()
        },
        spec: Some(job_spec),
        status: None,
    };
    assert_template_admitted(&client, ns, &job).await;
    jobs.create(&post_params(), &job)
        .await
        .unwrap_or_else(|e| panic!("Job {j} from the CronJob's template was refused: {e}"));
    finish_training_pod(pods, j, "").await;
    expect_complete(jobs, j).await;
    let md = eventually(
        &format!("status.batch.last records the run of Job {j}"),
        Duration::from_secs(60),
        || async move {
            let md = models.get(name).await.ok()?;
            let last = md.status.as_ref()?.batch.as_ref()?.last.as_ref()?;
            (last.job == j).then_some(md)
        },
    )
    .await;
    let batch = md
        .status
        .as_ref()
        .and_then(|s| s.batch.clone())
        .expect("status.batch");
    let last = batch.last.clone().expect("status.batch.last");
    assert_eq!(last.result, "Succeeded", "{batch:?}");
    assert!(batch.last_success.is_some(), "{batch:?}");
    assert_eq!(batch.active, None, "{batch:?}");
    let succeeded = expect_event(events, name, "BatchRunSucceeded").await;
    assert!(
        succeeded
            .iter()
            .any(|e| e.note.as_deref().is_some_and(|n| n.contains(j))),
        "{succeeded:?}"
    );

    // Without spec.batch, no CronJob.
    models
        .patch(
            name,
            &patch_params(),
            &Patch::Merge(json!({"spec": {"batch": null}})),
        )
        .await
        .expect("removing spec.batch is accepted");
    eventually(
        &format!("CronJob {cron_name} is deleted once spec.batch is removed"),
        Duration::from_secs(60),
        || async move {
            cron_jobs
                .get_opt(cron_name)
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    operator.stop().await;
}

/// One HTTP/1.1 POST of a JSON body: the status code and the whole answer (headers and body),
/// or `None` within 2s.
async fn http_post_answer(addr: SocketAddr, path: &str, body: &str) -> Option<(u16, String)> {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        let text = String::from_utf8_lossy(&answer).to_string();
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, text))
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// Value of header `name` (any case) in an HTTP/1.1 answer.
fn header_value(answer: &str, name: &str) -> Option<String> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_string())
    })
}

/// One prediction through the monitor at `ip`: its prediction token, if it gave one.
async fn predict_for_token(ip: std::net::IpAddr) -> Option<String> {
    let (code, answer) =
        http_post_answer(SocketAddr::new(ip, 8000), "/predict", "{\"amount\": 12.5}").await?;
    (code == 200)
        .then(|| header_value(&answer, drover::monitor::feedback::TOKEN_HEADER))
        .flatten()
}

/// Posts `label` for `token` to the feedback endpoint of the monitor at `ip`: the status code.
async fn post_feedback(ip: std::net::IpAddr, token: &str, label: Value) -> Option<u16> {
    let body = json!({"token": token, "label": label}).to_string();
    http_post_answer(
        SocketAddr::new(ip, 8000),
        drover::monitor::proxy::FEEDBACK_PATH,
        &body,
    )
    .await
    .map(|(code, _)| code)
}

/// Labels fed back to another pod of the revision than the one that predicted (the key is
/// derived from the shared monitor token, so any pod verifies) are counted: 202. A forged
/// token is refused (401), and the same token twice is refused the second time (409). Labels
/// that mostly disagree with the predictions (accuracy 0.1 < minAccuracy 0.9, at least
/// minLabels 20 per 10s window) make the steady-state watch declare the drop: Degraded=True
/// with reason PerformanceDropped and an Event PerformanceDropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_fed_back_to_another_pod_degrade_the_model_and_feedback_is_refused_when_forged() {
    let Some(cluster) = Cluster::set_up("labels").await else {
        return;
    };
    let (client, ns) = (cluster.client.clone(), cluster.namespace.name.as_str());
    let mut operator = Operator::start(&client, ns);
    operator.wait_ready().await;
    let name = "fraud";
    let kubelets = FakeKubelets::start_with_feedback(&client, ns, name).await;
    let models: Api<ModelDeployment> = Api::namespaced(client.clone(), ns);
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let (models, events, kubelets) = (&models, &events, &kubelets);

    let spec = json!({
        "model": {"version": "1.0.0", "image": IMAGE_1, "healthPath": "/", "port": 8080},
        "replicas": 2,
        "pod": {"nodeSelector": pinned()},
        "rollout": {"strategy": "Immediate"},
        "monitoring": {
            "scrapeInterval": "5s",
            "window": "10s",
            "performance": {"minLabels": 20, "minAccuracy": 0.9},
        },
    });
    let created = models
        .create(&post_params(), &model_deployment(name, spec))
        .await
        .expect("the ModelDeployment is created");
    let rev = revision_of(&created.spec);
    let r = rev.as_str();
    let ips = eventually(
        &format!(
            "revision {r} serves on two pods made Ready by stand-ins with feedback on (needs \
             kube-controller-manager)"
        ),
        Duration::from_secs(120),
        || async move {
            let status = models.get(name).await.ok()?.status?;
            let ips = kubelets.addresses();
            (status.stable.is_some_and(|s| s.hash == r)
                && status.phase == Some(Phase::Healthy)
                && ips.len() == 2)
                .then_some(ips)
        },
    )
    .await;
    let (a, b) = (ips[0], ips[1]);

    // A prediction through pod A carries a token; its label, posted to pod B, is counted once.
    let token = eventually(
        &format!("a prediction through the monitor at {a} carries a prediction token"),
        Duration::from_secs(20),
        || async move { predict_for_token(a).await },
    )
    .await;
    assert_eq!(
        post_feedback(b, &token, json!(1)).await,
        Some(202),
        "a label for pod A's prediction, posted to pod B, is counted"
    );
    assert_eq!(
        post_feedback(b, &token, json!(1)).await,
        Some(409),
        "the same prediction's label a second time is refused"
    );
    // A forged token: pod A's claims under another signature.
    let (claims, _) = token
        .split_once('.')
        .expect("a token is <claims>.<signature>");
    let forged = format!("{claims}.{}", "A".repeat(43));
    assert_eq!(
        post_feedback(b, &forged, json!(1)).await,
        Some(401),
        "a forged token is refused"
    );
    assert_eq!(
        post_feedback(a, "not-a-token", json!(1)).await,
        Some(401),
        "garbage is refused as forged"
    );

    // Labels that disagree with 9 of 10 predictions (the model always predicts 0), about 10 a
    // second, every one posted to the pod that did not predict.
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let refused = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u16>::new()));
    let feeding = {
        let (accepted, refused) = (accepted.clone(), refused.clone());
        Traffic(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            loop {
                ticker.tick().await;
                for (from, to) in [(a, b), (b, a)] {
                    for _ in 0..5 {
                        let Some(token) = predict_for_token(from).await else {
                            continue;
                        };
                        n += 1;
                        let label = if n.is_multiple_of(10) { 0 } else { 1 };
                        match post_feedback(to, &token, json!(label)).await {
                            Some(202) => {
                                accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            // No answer within 2s tells nothing about the label.
                            None => {}
                            Some(code) => {
                                if let Ok(mut r) = refused.lock() {
                                    r.push(code);
                                }
                            }
                        }
                    }
                }
            }
        }))
    };
    let fed_at = Instant::now();
    let md = eventually(
        "condition Degraded=True with reason PerformanceDropped (accuracy about 0.1 over >= 20 \
         labels in a 10s window)",
        Duration::from_secs(120),
        || async move {
            let md = models.get(name).await.ok()?;
            condition_is(
                &md,
                drover::conditions::DEGRADED,
                ConditionStatus::True,
                Some("PerformanceDropped"),
            )
            .then_some(md)
        },
    )
    .await;
    eprintln!(
        "disagreeing labels → PerformanceDropped: {:.1}s (windows of 10s)",
        fed_at.elapsed().as_secs_f64()
    );
    drop(feeding);
    let degraded = condition(&md, drover::conditions::DEGRADED).expect("Degraded");
    assert!(
        degraded.message.contains("accuracy"),
        "the condition names the metric: {degraded:?}"
    );
    assert_eq!(
        md.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Degraded),
        "{:?}",
        md.status
    );
    let counted = accepted.load(std::sync::atomic::Ordering::Relaxed);
    assert!(counted >= 20, "only {counted} labels were counted");
    let refused = refused.lock().map(|r| r.clone()).unwrap_or_default();
    assert!(
        refused.is_empty(),
        "labels for genuine tokens of this revision were refused: {refused:?}"
    );
    let dropped = expect_event(events, name, "PerformanceDropped").await;
    assert!(
        dropped
            .iter()
            .any(|e| e.note.as_deref().is_some_and(|n| n.contains("accuracy"))),
        "{dropped:?}"
    );
    operator.stop().await;
}
