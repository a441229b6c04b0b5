//! The `drover` verbs a person runs against a cluster (`status`, `promote`, `abort`, `retry`,
//! `pause`, `resume`, `history`), also installed as the kubectl plugin `kubectl drover`.
//!
//! [`control`] and [`format`] are pure (what to send, what to print); [`session`] does the
//! requests.

pub mod control;
pub mod error;
pub mod format;
pub mod session;

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use control::Control;
pub use error::CliError;
pub use session::{FIELD_MANAGER, Session};

/// File name under which kubectl finds the plugin on `PATH`.
pub const PLUGIN_BINARY: &str = "kubectl-drover";

/// How often `--wait` reads the object.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// Which cluster, user and namespace, with kubectl's flags.
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
#[command(next_help_heading = "Cluster")]
pub struct Target {
    /// Namespace of the ModelDeployment (default: the namespace of the kubeconfig context).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Kubeconfig context to use (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Kubeconfig cluster to use (default: the context's).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Kubeconfig user to use (default: the context's).
    #[arg(long)]
    pub user: Option<String>,
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// Format of `-o`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// The raw status as JSON.
    Json,
    /// The raw status as YAML.
    Yaml,
}

/// Arguments of `status` and `history`.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct ShowArgs {
    /// Name of the ModelDeployment.
    pub name: String,
    /// Print the raw `status` (or `status.history`) instead of the tables.
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<Output>,
    // Last: its help heading applies to every argument declared after it.
    #[command(flatten)]
    pub target: Target,
}

/// Arguments of the controls.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct ControlArgs {
    /// Name of the ModelDeployment.
    pub name: String,
    /// Send the control even though it makes no sense in the current phase.
    #[arg(long)]
    pub force: bool,
    /// Wait until the operator has applied the control, then print the outcome.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (e.g. 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    // Last: its help heading applies to every argument declared after it.
    #[command(flatten)]
    pub target: Target,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::api::GoDuration::new(text).parse()
}

/// The verbs, shared by `drover <verb>` and `kubectl drover <verb>`.
#[derive(Subcommand, Clone, Debug, PartialEq)]
pub enum Verb {
    /// Show a ModelDeployment's rollout: revisions, weights, last judgement, conditions.
    Status(ShowArgs),
    /// Promote the canary now, skipping the remaining steps (drover.dev/promote).
    Promote(ControlArgs),
    /// Roll the canary back now (drover.dev/abort).
    Abort(ControlArgs),
    /// Run a rolled-back revision's canary again (drover.dev/retry).
    Retry(ControlArgs),
    /// Hold the rollout where it is (drover.dev/pause).
    Pause(ControlArgs),
    /// Continue a paused rollout (drover.dev/resume).
    Resume(ControlArgs),
    /// Show how the last rollouts ended.
    History(ShowArgs),
}

impl Verb {
    /// The kubeconfig/namespace flags of the verb.
    pub fn target(&self) -> &Target {
        match self {
            Verb::Status(a) | Verb::History(a) => &a.target,
            Verb::Promote(a)
            | Verb::Abort(a)
            | Verb::Retry(a)
            | Verb::Pause(a)
            | Verb::Resume(a) => &a.target,
        }
    }
}

/// The command tree when run as `kubectl drover`: the same verbs, named as kubectl shows them.
#[derive(Parser, Debug, PartialEq)]
#[command(
    name = "kubectl drover",
    bin_name = "kubectl drover",
    version,
    about = "Watch and steer Drover's canary rollouts of ModelDeployments"
)]
pub struct PluginCli {
    #[command(subcommand)]
    pub verb: Verb,
}

/// Whether argv[0] names the kubectl plugin (`kubectl-drover`, any directory, `.exe` or not).
pub fn invoked_as_plugin(argv0: Option<&OsStr>) -> bool {
    argv0
        .and_then(|a| Path::new(a).file_stem())
        .is_some_and(|stem| stem == PLUGIN_BINARY)
}

/// Parses a plugin command line. kubectl's own habit of flags before the verb
/// (`kubectl drover -n ml status fraud`) is accepted by moving them after it.
pub fn parse_plugin<I, T>(argv: I) -> Result<PluginCli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    PluginCli::try_parse_from(hoist_target_flags(
        argv.into_iter().map(Into::into).collect(),
    ))
}

/// Moves the [`Target`] flags that come before the verb to just after it.
fn hoist_target_flags(argv: Vec<OsString>) -> Vec<OsString> {
    const WITH_VALUE: [&str; 6] = [
        "-n",
        "--namespace",
        "--context",
        "--cluster",
        "--user",
        "--kubeconfig",
    ];
    let mut hoisted = Vec::new();
    let mut i = 1;
    while let Some(arg) = argv.get(i).and_then(|a| a.to_str()) {
        if WITH_VALUE.contains(&arg) {
            hoisted.extend(argv.get(i..i + 2).unwrap_or_default().iter().cloned());
            i += 2;
        } else if WITH_VALUE
            .iter()
            .any(|f| arg.starts_with(&format!("{f}=")) || (*f == "-n" && arg.starts_with("-n")))
        {
            hoisted.push(OsString::from(arg));
            i += 1;
        } else {
            break;
        }
    }
    let verb_at = i;
    if hoisted.is_empty() || argv.get(verb_at).is_none() {
        return argv;
    }
    let mut out: Vec<OsString> = argv.iter().take(1).cloned().collect();
    out.extend(argv.get(verb_at).cloned());
    out.extend(hoisted);
    out.extend(argv.iter().skip(verb_at + 1).cloned());
    out
}

/// Entry point of `kubectl-drover`: parse, run, print errors the kubectl way.
pub fn plugin_main(argv: Vec<OsString>) -> ExitCode {
    let cli = match parse_plugin(argv) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli.verb, "kubectl drover") {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a verb against the cluster the kubeconfig names, printing to stdout.
pub fn run(verb: Verb, program: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    runtime
        .block_on(async {
            let session = Session::connect(verb.target()).await?.with_program(program);
            let mut stdout = std::io::stdout().lock();
            execute(&session, &verb, &mut stdout, POLL_EVERY).await
        })
        .map_err(|e| e.to_string())
}

/// Runs a verb in a session; `every` is how often `--wait` reads the object.
pub async fn execute(
    session: &Session,
    verb: &Verb,
    out: &mut dyn Write,
    every: Duration,
) -> Result<(), CliError> {
    match verb {
        Verb::Status(args) => {
            let fetched = session.fetch(&args.name).await?;
            match args.output {
                None => out.write_all(format::status(&fetched.model).as_bytes())?,
                Some(o) => print_raw(out, o, &fetched.raw_status)?,
            }
        }
        Verb::History(args) => {
            let fetched = session.fetch(&args.name).await?;
            match args.output {
                None => out.write_all(format::history(&fetched.model).as_bytes())?,
                Some(o) => {
                    let history = fetched
                        .raw_status
                        .get("history")
                        .cloned()
                        .unwrap_or_else(|| serde_json::json!([]));
                    print_raw(out, o, &history)?
                }
            }
        }
        Verb::Promote(args) => send(session, Control::Promote, args, out, every).await?,
        Verb::Abort(args) => send(session, Control::Abort, args, out, every).await?,
        Verb::Retry(args) => send(session, Control::Retry, args, out, every).await?,
        Verb::Pause(args) => send(session, Control::Pause, args, out, every).await?,
        Verb::Resume(args) => send(session, Control::Resume, args, out, every).await?,
    }
    Ok(())
}

fn print_raw(
    out: &mut dyn Write,
    output: Output,
    value: &serde_json::Value,
) -> Result<(), CliError> {
    let text = match output {
        Output::Json => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string()),
        Output::Yaml => serde_saphyr::to_string(value).map_err(|e| e.to_string()),
    }
    .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
    out.write_all(text.as_bytes())?;
    Ok(())
}

async fn send(
    session: &Session,
    control: Control,
    args: &ControlArgs,
    out: &mut dyn Write,
    every: Duration,
) -> Result<(), CliError> {
    let fetched = session.fetch(&args.name).await?;
    let status = fetched.model.status.as_ref();
    if let Some(why) = control::refusal(control, status, fetched.model.metadata.generation) {
        if !args.force {
            return Err(CliError::Refused(why));
        }
        writeln!(
            out,
            "warning: {why}; sending it anyway (--force), the operator may ignore it"
        )?;
    }
    let token = session::fresh_token();
    session.send(&args.name, control, &token).await?;
    writeln!(
        out,
        "{}",
        control::requested(control, session.namespace(), &args.name, &token)
    )?;
    if !args.wait {
        writeln!(
            out,
            "The operator applies it on its next reconcile; follow it with `{}`.",
            session.follow(&args.name)
        )?;
        return Ok(());
    }
    let model = session
        .wait_applied(&args.name, control, &token, args.timeout, every)
        .await?;
    let status = model.status.unwrap_or_default();
    writeln!(out, "{}", control::outcome(control, &status))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn argv0_decides_whether_this_is_the_plugin() {
        assert!(invoked_as_plugin(Some(OsStr::new("kubectl-drover"))));
        assert!(invoked_as_plugin(Some(OsStr::new(
            "/usr/local/bin/kubectl-drover"
        ))));
        assert!(invoked_as_plugin(Some(OsStr::new(
            "C:/bin/kubectl-drover.exe"
        ))));
        assert!(!invoked_as_plugin(Some(OsStr::new("/usr/bin/drover"))));
        assert!(!invoked_as_plugin(None));
    }

    #[test]
    fn flags_before_the_verb_move_after_it() {
        assert_eq!(
            hoist_target_flags(os(&["k", "-n", "ml", "--context=prod", "status", "fraud"])),
            os(&["k", "status", "-n", "ml", "--context=prod", "fraud"])
        );
        assert_eq!(
            hoist_target_flags(os(&["k", "-nml", "promote", "fraud", "--wait"])),
            os(&["k", "promote", "-nml", "fraud", "--wait"])
        );
        let untouched = os(&["k", "status", "fraud", "-n", "ml"]);
        assert_eq!(hoist_target_flags(untouched.clone()), untouched);
        let help = os(&["k", "--help"]);
        assert_eq!(hoist_target_flags(help.clone()), help);
        let dangling = os(&["k", "-n"]);
        assert_eq!(hoist_target_flags(dangling.clone()), dangling);
    }

    #[test]
    fn the_plugin_parses_flags_on_either_side_of_the_verb() {
        let a = parse_plugin(["kubectl-drover", "-n", "ml", "promote", "fraud", "--wait"]);
        let b = parse_plugin(["kubectl-drover", "promote", "fraud", "--wait", "-n", "ml"]);
        let (Ok(a), Ok(b)) = (a, b) else {
            panic!("both parse")
        };
        assert_eq!(a, b);
        let Verb::Promote(args) = a.verb else {
            panic!("promote")
        };
        assert_eq!(args.target.namespace.as_deref(), Some("ml"));
        assert!(args.wait && !args.force);
        assert_eq!(args.timeout, Duration::from_secs(60));
    }

    #[test]
    fn timeout_takes_go_durations() {
        let parsed = parse_plugin(["kubectl-drover", "resume", "fraud", "--timeout", "2m30s"]);
        let Ok(PluginCli {
            verb: Verb::Resume(args),
        }) = parsed
        else {
            panic!("resume parses")
        };
        assert_eq!(args.timeout, Duration::from_secs(150));
        assert!(parse_plugin(["kubectl-drover", "resume", "fraud", "--timeout", "soon"]).is_err());
    }

    #[test]
    fn the_command_tree_is_consistent() {
        use clap::CommandFactory;
        PluginCli::command().debug_assert();
    }
}
