//! The CLI verbs against a mocked Kubernetes API (tower-test): what is read, what is patched
//! (method, path, content type, field manager, body), and what the user reads back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover::api::{ModelDeployment, ModelDeploymentStatus, Phase, RolloutPhase, RolloutState};
use drover::cli::{self, CliError, Control, ControlArgs, Session, ShowArgs, Target, Verb};
use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

/// One request the mock API saw.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

/// How the mock answers.
#[derive(Clone, Copy, Default)]
enum Server {
    /// The object exists; a PATCH sets its annotations.
    #[default]
    Serving,
    /// Like `Serving`, and the operator applies every control token it sees.
    Applying,
    /// The CRD exists, the object does not.
    NoObject,
    /// The API server does not know the resource.
    NoCrd,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn mock(md: &ModelDeployment, server: Server) -> (Session, Log) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log: Log = Arc::default();
    let seen = log.clone();
    let mut object = serde_json::to_value(md).expect("fixture serialises");
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = http_body_util::BodyExt::collect(body)
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let entry = Seen {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or_default().to_string(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                body: body.clone(),
            };
            seen.lock().expect("log").push(entry.clone());
            let (status, answer) = match server {
                Server::NoCrd => (StatusCode::NOT_FOUND, "404 page not found\n".to_string()),
                Server::NoObject => (
                    StatusCode::NOT_FOUND,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "modeldeployments.drover.dev \"fraud\" not found", "reason": "NotFound",
                        "details": {"name": "fraud", "group": "drover.dev", "kind": "modeldeployments"}, "code": 404})
                    .to_string(),
                ),
                Server::Serving | Server::Applying => {
                    if entry.method == "PATCH"
                        && let Some(annotations) = body["metadata"]["annotations"].as_object()
                    {
                        for (key, token) in annotations {
                            object["metadata"]["annotations"][key] = token.clone();
                            if matches!(server, Server::Applying)
                                && let Some(control) = key.strip_prefix("drover.dev/")
                            {
                                object["status"]["rollout"]["controls"][control] = token.clone();
                                if control == "promote" {
                                    object["status"]["rollout"]["phase"] = json!("Baking");
                                    object["status"]["rollout"]["actualWeight"] = json!(100);
                                    object["status"]["rollout"]["reason"] =
                                        json!("promoted by the drover.dev/promote control");
                                }
                            }
                        }
                    }
                    (StatusCode::OK, object.to_string())
                }
            };
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(answer.into_bytes()))
                    .expect("response"),
            );
        }
    });
    (Session::new(Client::new(service, "default"), "ml"), log)
}

fn model(phase: RolloutPhase) -> ModelDeployment {
    let yaml = "apiVersion: drover.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {name: fraud, namespace: ml, generation: 3, resourceVersion: '7'}\nspec:\n  model: {version: '2.0.0', image: 'registry.example.com/fraud:2.0.0'}\n";
    let mut md: ModelDeployment = serde_saphyr::from_str(yaml).expect("fixture parses");
    md.status = Some(ModelDeploymentStatus {
        observed_generation: Some(3),
        phase: Some(match phase {
            RolloutPhase::Complete => Phase::Healthy,
            RolloutPhase::RolledBack => Phase::RolledBack,
            _ => Phase::Progressing,
        }),
        message: Some("canary 2.0.0 at 25%".into()),
        rollout: Some(RolloutState {
            revision: "5c4b3a2918".into(),
            version: "2.0.0".into(),
            phase,
            step: 1,
            requested_weight: 25,
            actual_weight: 25,
            reason: "judged Pass at step 0".into(),
            ..RolloutState::default()
        }),
        ..ModelDeploymentStatus::default()
    });
    md
}

fn control_args(wait: bool, force: bool, timeout: Duration) -> ControlArgs {
    ControlArgs {
        name: "fraud".into(),
        target: Target::default(),
        force,
        wait,
        timeout,
    }
}

async fn run(session: &Session, verb: Verb) -> (Result<(), CliError>, String) {
    let mut out = Vec::new();
    let result = cli::execute(session, &verb, &mut out, Duration::from_millis(5)).await;
    (result, String::from_utf8_lossy(&out).into_owned())
}

fn patches(log: &Log) -> Vec<Seen> {
    log.lock()
        .expect("log")
        .iter()
        .filter(|s| s.method == "PATCH")
        .cloned()
        .collect()
}

const PATH: &str = "/apis/drover.dev/v1alpha1/namespaces/ml/modeldeployments/fraud";

#[tokio::test]
async fn promote_sends_a_merge_patch_of_one_annotation_with_a_fresh_token() {
    let (session, log) = mock(&model(RolloutPhase::Progressing), Server::Serving);
    let (result, out) = run(
        &session,
        Verb::Promote(control_args(false, false, Duration::from_secs(60))),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");

    let seen = log.lock().expect("log").clone();
    assert_eq!(seen.len(), 2, "one read, one patch: {seen:#?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", PATH)
    );
    let patch = &seen[1];
    assert_eq!(patch.method, "PATCH");
    assert_eq!(patch.path, PATH);
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert!(
        patch
            .query
            .split('&')
            .any(|kv| kv == "fieldManager=drover-cli"),
        "{}",
        patch.query
    );
    let token = patch.body["metadata"]["annotations"]["drover.dev/promote"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        patch.body,
        json!({"metadata": {"annotations": {"drover.dev/promote": token}}})
    );
    let shape = regex_lite::Regex::new(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$").expect("regex");
    assert!(shape.is_match(&token), "{token}");

    assert!(
        out.contains(&format!(
            "promote requested for modeldeployment ml/fraud (drover.dev/promote={token})"
        )),
        "{out}"
    );
    assert!(out.contains("`drover status fraud -n ml`"), "{out}");

    // A second promote carries another token, so the operator applies it again.
    let (result, _) = run(
        &session,
        Verb::Promote(control_args(false, false, Duration::from_secs(60))),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    let all = patches(&log);
    assert_eq!(all.len(), 2);
    assert_ne!(
        all[0].body["metadata"]["annotations"]["drover.dev/promote"],
        all[1].body["metadata"]["annotations"]["drover.dev/promote"]
    );
}

#[tokio::test]
async fn every_control_patches_its_own_annotation() {
    let cases = [
        (Control::Abort, RolloutPhase::Progressing),
        (Control::Retry, RolloutPhase::RolledBack),
        (Control::Pause, RolloutPhase::Progressing),
        (Control::Resume, RolloutPhase::Paused),
    ];
    for (control, phase) in cases {
        let (session, log) = mock(&model(phase), Server::Serving);
        let args = control_args(false, false, Duration::from_secs(60));
        let verb = match control {
            Control::Promote => Verb::Promote(args),
            Control::Abort => Verb::Abort(args),
            Control::Retry => Verb::Retry(args),
            Control::Pause => Verb::Pause(args),
            Control::Resume => Verb::Resume(args),
        };
        let (result, _) = run(&session, verb).await;
        assert!(result.is_ok(), "{control}: {result:?}");
        let sent = patches(&log);
        assert_eq!(sent.len(), 1, "{control}");
        let annotations = sent[0].body["metadata"]["annotations"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            [&format!("drover.dev/{control}")]
        );
    }
}

#[tokio::test]
async fn wait_polls_until_the_operator_applied_the_token_and_prints_the_outcome() {
    let (session, log) = mock(&model(RolloutPhase::Progressing), Server::Applying);
    let (result, out) = run(
        &session,
        Verb::Promote(control_args(true, false, Duration::from_secs(5))),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    let methods: Vec<String> = log
        .lock()
        .expect("log")
        .iter()
        .map(|s| s.method.clone())
        .collect();
    assert_eq!(methods, ["GET", "PATCH", "GET"]);
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "promote applied: rollout of revision 5c4b3a2918 (version 2.0.0) is Baking"
        ),
        "{out}"
    );
    assert!(last.contains("canary 100%"), "{out}");
    assert!(!out.contains("follow it with"), "{out}");
}

#[tokio::test]
async fn wait_gives_up_after_the_timeout_with_the_token_in_the_message() {
    let (session, log) = mock(&model(RolloutPhase::Progressing), Server::Serving);
    let (result, out) = run(
        &session,
        Verb::Pause(control_args(true, false, Duration::from_millis(40))),
    )
    .await;
    let Err(e @ CliError::Timeout { .. }) = result else {
        panic!("expected a timeout, got {result:?}")
    };
    let token = patches(&log)[0].body["metadata"]["annotations"]["drover.dev/pause"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let message = e.to_string();
    assert!(
        message.starts_with(&format!("pause was sent (token {token})")),
        "{message}"
    );
    assert!(
        message.contains("is the drover operator running?"),
        "{message}"
    );
    assert!(out.contains("pause requested"), "{out}");
    let gets = log
        .lock()
        .expect("log")
        .iter()
        .filter(|s| s.method == "GET")
        .count();
    assert!(gets >= 3, "polled {gets} times");
}

#[tokio::test]
async fn a_missing_object_names_the_name_and_namespace_and_sends_nothing() {
    let (session, log) = mock(&model(RolloutPhase::Progressing), Server::NoObject);
    let (result, _) = run(
        &session,
        Verb::Abort(control_args(false, false, Duration::from_secs(60))),
    )
    .await;
    let Err(e) = result else {
        panic!("expected not found")
    };
    assert!(matches!(e, CliError::NotFound { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        r#"modeldeployment "fraud" not found in namespace "ml""#
    );
    assert!(patches(&log).is_empty());
}

#[tokio::test]
async fn a_missing_crd_says_the_crd_is_not_installed() {
    let (session, _) = mock(&model(RolloutPhase::Progressing), Server::NoCrd);
    let (result, _) = run(
        &session,
        Verb::Status(ShowArgs {
            name: "fraud".into(),
            target: Target::default(),
            output: None,
        }),
    )
    .await;
    let Err(e) = result else {
        panic!("expected an error")
    };
    assert!(matches!(e, CliError::CrdMissing), "{e:?}");
    assert!(e.to_string().contains("CRD"), "{e}");
    assert!(
        e.to_string()
            .contains("drover crd | kubectl apply --server-side -f -"),
        "{e}"
    );
}

#[tokio::test]
async fn a_control_that_makes_no_sense_now_is_refused_without_a_patch() {
    for (verb, phase, named) in [
        (
            Verb::Promote(control_args(false, false, Duration::from_secs(60))),
            RolloutPhase::Complete,
            "Complete",
        ),
        (
            Verb::Retry(control_args(false, false, Duration::from_secs(60))),
            RolloutPhase::Progressing,
            "Progressing",
        ),
        (
            Verb::Resume(control_args(true, false, Duration::from_secs(60))),
            RolloutPhase::Progressing,
            "Progressing",
        ),
    ] {
        let (session, log) = mock(&model(phase), Server::Serving);
        let (result, out) = run(&session, verb).await;
        let Err(e @ CliError::Refused(_)) = result else {
            panic!("expected a refusal, got {result:?}")
        };
        let message = e.to_string();
        assert!(message.contains(&format!("is {named}")), "{message}");
        assert!(
            message.ends_with("pass --force to send it anyway"),
            "{message}"
        );
        assert!(out.is_empty(), "{out}");
        assert!(patches(&log).is_empty(), "no PATCH when refused");
    }
}

#[tokio::test]
async fn force_sends_it_anyway_with_a_warning() {
    let (session, log) = mock(&model(RolloutPhase::Complete), Server::Serving);
    let (result, out) = run(
        &session,
        Verb::Promote(control_args(false, true, Duration::from_secs(60))),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    assert!(
        out.starts_with("warning: promote makes sense only while"),
        "{out}"
    );
    assert!(out.contains("sending it anyway (--force)"), "{out}");
    assert_eq!(patches(&log).len(), 1);
}

#[tokio::test]
async fn status_prints_the_tables_and_o_json_prints_the_raw_status() {
    let (session, log) = mock(&model(RolloutPhase::Progressing), Server::Serving);
    let show = |output| {
        Verb::Status(ShowArgs {
            name: "fraud".into(),
            target: Target::default(),
            output,
        })
    };
    let (result, out) = run(&session, show(None)).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(out.lines().any(|l| l == "Name:       fraud"), "{out}");
    assert!(out.lines().any(|l| l == "Namespace:  ml"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("Rollout:") && l.contains("Progressing, revision 5c4b3a2918")),
        "{out}"
    );

    let (result, out) = run(&session, show(Some(cli::Output::Json))).await;
    assert!(result.is_ok(), "{result:?}");
    let printed: Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(printed["rollout"]["revision"], json!("5c4b3a2918"));
    assert_eq!(printed["phase"], json!("Progressing"));

    let (result, out) = run(&session, show(Some(cli::Output::Yaml))).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(out.lines().any(|l| l == "phase: Progressing"), "{out}");

    assert!(patches(&log).is_empty(), "status never writes");
}

#[tokio::test]
async fn history_prints_the_records() {
    let mut md = model(RolloutPhase::Complete);
    if let Some(s) = md.status.as_mut() {
        s.history.push(drover::api::RolloutRecord {
            revision: "5c4b3a2918".into(),
            version: "2.0.0".into(),
            outcome: "Promoted".into(),
            reason: "every step passed".into(),
            at: "2025-06-14T10:20:00Z".into(),
        });
    }
    let (session, _) = mock(&md, Server::Serving);
    let (result, out) = run(
        &session,
        Verb::History(ShowArgs {
            name: "fraud".into(),
            target: Target::default(),
            output: None,
        }),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec!["AT", "REVISION", "VERSION", "OUTCOME", "REASON"],
            vec![
                "2025-06-14T10:20:00Z",
                "5c4b3a2918",
                "2.0.0",
                "Promoted",
                "every",
                "step",
                "passed"
            ],
        ]
    );
}

#[test]
fn invoked_as_kubectl_drover_the_same_verbs_parse_and_help_names_kubectl_drover() {
    assert!(cli::invoked_as_plugin(Some(std::ffi::OsStr::new(
        "/home/me/.krew/bin/kubectl-drover"
    ))));
    let parsed = cli::parse_plugin([
        "kubectl-drover",
        "status",
        "fraud",
        "-n",
        "ml",
        "-o",
        "yaml",
    ]);
    let Ok(cli::PluginCli {
        verb: Verb::Status(args),
    }) = parsed
    else {
        panic!("status parses: {parsed:?}")
    };
    assert_eq!(args.name, "fraud");
    assert_eq!(args.target.namespace.as_deref(), Some("ml"));
    assert_eq!(args.output, Some(cli::Output::Yaml));

    let parsed = cli::parse_plugin([
        "/usr/local/bin/kubectl-drover",
        "--context",
        "prod",
        "--kubeconfig",
        "/tmp/kc",
        "abort",
        "fraud",
    ]);
    let Ok(cli::PluginCli {
        verb: Verb::Abort(args),
    }) = parsed
    else {
        panic!("abort parses: {parsed:?}")
    };
    assert_eq!(args.target.context.as_deref(), Some("prod"));
    assert_eq!(
        args.target.kubeconfig.as_deref(),
        Some(std::path::Path::new("/tmp/kc"))
    );

    let help = match cli::parse_plugin(["kubectl-drover", "--help"]) {
        Ok(_) => panic!("--help is not a command"),
        Err(e) => e.to_string(),
    };
    assert!(help.contains("Usage: kubectl drover <COMMAND>"), "{help}");
    for verb in [
        "status", "promote", "abort", "retry", "pause", "resume", "history",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(verb)),
            "{verb} in {help}"
        );
    }
    assert!(!help.contains("operator"), "only the plugin verbs: {help}");

    let sub_help = match cli::parse_plugin(["kubectl-drover", "promote", "--help"]) {
        Ok(_) => panic!("--help is not a command"),
        Err(e) => e.to_string(),
    };
    assert!(
        sub_help.contains("Usage: kubectl drover promote [OPTIONS] <NAME>"),
        "{sub_help}"
    );
}
