//! The `drover` binary: operator, offline tools, and (later) the monitor sidecar and the
//! kubectl plugin verbs. `main` only parses arguments, sets up logging and dispatches.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "drover",
    version,
    about = "Deploys ML models by canary and keeps watch over them"
)]
struct Cli {
    /// Log format.
    #[arg(long, env = "DROVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax, e.g. `info` or `drover=debug,kube=info`).
    #[arg(long, env = "DROVER_LOG_LEVEL", default_value = "info", global = true)]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller manager against the current kubeconfig or in-cluster config.
    Operator(drover::operator::OperatorArgs),
    /// Run the sidecar: a recording reverse proxy in front of the model container.
    Monitor(Box<drover::monitor::MonitorArgs>),
    /// Fetch a model's files (the storage initializer the serving pods run as an init container).
    FetchModel(Box<drover::fetch::FetchArgs>),
    /// Replay the rollout policy of a ModelDeployment against a scenario, offline.
    Simulate {
        /// The ModelDeployment (YAML).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// The scenario (YAML, see docs/rollouts.md).
        #[arg(long)]
        scenario: PathBuf,
        /// Draw weight and each judged signal against its threshold into this SVG.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Print the whole timeline as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Drift of a monitor report (or of the window between two) against a reference profile.
    Drift {
        /// The reference profile JSON.
        #[arg(long)]
        profile: PathBuf,
        /// A `/drover/report` JSON.
        #[arg(long)]
        report: PathBuf,
        /// An earlier report of the same monitor: measure only what came after it.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// psi, ks, jensen-shannon, wasserstein or chi-square.
        #[arg(long, default_value = "psi")]
        method: String,
        /// Score above which a feature counts as drifted.
        #[arg(long, default_value_t = 0.2)]
        threshold: f64,
        /// Values a feature needs in the window for a verdict.
        #[arg(long, default_value_t = 100)]
        min_samples: u64,
    },
    /// Replay the steady-state watch of a ModelDeployment over a monitor's reports, offline:
    /// each consecutive pair of reports is one window, judged as the operator judges it.
    Steady {
        /// The ModelDeployment (YAML).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// The reference profile JSON (as the spec's ConfigMap would hold it).
        #[arg(long)]
        profile: PathBuf,
        /// `/drover/report` JSONs of one monitor, oldest first (at least two).
        #[arg(long = "report", num_args = 1.., required = true)]
        reports: Vec<PathBuf>,
        /// Print the windows as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Build a reference profile from training (or held-out) data: CSV with a header, or JSON lines.
    Profile {
        /// The data file (`.csv`, or `.jsonl`/`.ndjson`/`.json` for JSON lines).
        #[arg(long)]
        input: std::path::PathBuf,
        /// The label column, left out of the profile.
        #[arg(long)]
        target: Option<String>,
        /// The model's prediction column: profiled as the prediction distribution.
        #[arg(long)]
        prediction: Option<String>,
        /// Bins per numeric column.
        #[arg(long, default_value_t = 10)]
        bins: usize,
        /// The model version the data belongs to (checked against spec.model.version).
        #[arg(long)]
        model_version: Option<String>,
        /// Print a ConfigMap of this name holding the profile instead of the JSON.
        #[arg(long)]
        configmap: Option<String>,
        /// Key of the profile in the ConfigMap.
        #[arg(long, default_value = "profile.json")]
        key: String,
    },
    /// Print the CustomResourceDefinitions.
    Crd {
        /// Print the Markdown field reference instead.
        #[arg(long)]
        reference: bool,
    },
    /// Print the child objects of the ModelDeployments in a file, offline.
    Render {
        /// A YAML file with one or more ModelDeployments (`-` for stdin).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Print the operator's RBAC objects, generated from the rules the code needs.
    Rbac {
        /// Name of the operator's ServiceAccount and roles.
        #[arg(long, default_value = "drover")]
        name: String,
        /// Namespace the operator runs in.
        #[arg(long = "operator-namespace", default_value = "drover-system")]
        operator_namespace: String,
        /// Namespaces it watches (none: all, through a ClusterRole).
        #[arg(long = "watch-namespace", value_delimiter = ',')]
        watched: Vec<String>,
        /// Print the Helm chart's rule lists (charts/drover/templates/_rbac_rules.tpl) instead.
        #[arg(long, conflicts_with_all = ["name", "operator_namespace", "watched"])]
        helm: bool,
    },
    // Rollout verbs against a cluster (also the kubectl plugin `kubectl drover`).
    #[command(flatten)]
    Rollout(drover::cli::Verb),
}

fn init_logging(format: LogFormat, level: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| format!("invalid --log-level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn read_input(file: &PathBuf) -> Result<String, String> {
    if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("cannot read stdin: {e}"))
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Simulate {
            file,
            scenario,
            plot,
            json,
        } => {
            let text = read_input(&file)?;
            let models =
                drover::render::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            let md = models
                .first()
                .ok_or_else(|| format!("{}: no ModelDeployment found", file.display()))?;
            let scenario_text = read_input(&scenario)?;
            let parsed = drover::simulate::scenario::Scenario::from_yaml(&scenario_text)
                .map_err(|e| format!("{}: {e}", scenario.display()))?;
            let sim = drover::simulate::simulate(md, &parsed)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&sim).map_err(|e| e.to_string())?
                );
            } else {
                print!("{}", drover::simulate::timeline(&sim));
            }
            if let Some(path) = plot {
                drover::simulate::plot::draw(&sim, &path)?;
                eprintln!("plot written to {}", path.display());
            }
            Ok(())
        }
        Command::Steady {
            file,
            profile,
            reports,
            json,
        } => {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            };
            let md: drover::api::ModelDeployment = serde_saphyr::from_str(&read_input(&file)?)
                .map_err(|e| format!("{}: not a ModelDeployment: {e}", file.display()))?;
            let profile = drover::profile::ReferenceProfile::from_json(&read(&profile)?)
                .map_err(|e| format!("{}: {e}", profile.display()))?;
            let reports = reports
                .iter()
                .map(|p| {
                    serde_json::from_slice(&read(p)?)
                        .map_err(|e| format!("{}: not a monitor report: {e}", p.display()))
                })
                .collect::<Result<Vec<drover::monitor::report::Report>, String>>()?;
            let rows = drover::simulate::steady::replay(&md, profile, &reports)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?
                );
            } else {
                print!("{}", drover::simulate::steady::table(&rows));
            }
            Ok(())
        }
        Command::Drift {
            profile,
            report,
            baseline,
            method,
            threshold,
            min_samples,
        } => {
            let method = match method.as_str() {
                "psi" => drover::stats::DriftMethod::Psi,
                "ks" => drover::stats::DriftMethod::Ks,
                "jensen-shannon" | "js" => drover::stats::DriftMethod::JensenShannon,
                "wasserstein" => drover::stats::DriftMethod::Wasserstein,
                "chi-square" => drover::stats::DriftMethod::ChiSquare,
                other => return Err(format!("unknown --method {other:?}")),
            };
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            };
            let profile = drover::profile::ReferenceProfile::from_json(&read(&profile)?)
                .map_err(|e| e.to_string())?;
            let parse = |p: &PathBuf| -> Result<drover::monitor::report::Report, String> {
                serde_json::from_slice(&read(p)?)
                    .map_err(|e| format!("{}: not a monitor report: {e}", p.display()))
            };
            let mut window = parse(&report)?;
            if let Some(b) = baseline {
                window = window.delta(&parse(&b)?).map_err(|e| e.to_string())?;
            }
            let assessment =
                drover::drift::assess(&profile, &window, method, threshold, min_samples);
            println!(
                "{}",
                serde_json::to_string_pretty(&assessment).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        Command::Profile {
            input,
            target,
            prediction,
            bins,
            model_version,
            configmap,
            key,
        } => {
            let text = std::fs::read_to_string(&input)
                .map_err(|e| format!("cannot read {}: {e}", input.display()))?;
            let json_lines = input
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| ["jsonl", "ndjson", "json"].contains(&e));
            let table = if json_lines {
                drover::profiler::read_json_lines(&text)
            } else {
                drover::profiler::read_csv(&text)
            }
            .map_err(|e| format!("{}: {e}", input.display()))?;
            let options = drover::profiler::ProfileOptions {
                target,
                prediction,
                bins,
                model_version,
            };
            let profile = drover::profiler::build(&table, &options)
                .map_err(|e| format!("{}: {e}", input.display()))?;
            let json = serde_json::to_string_pretty(&profile).map_err(|e| e.to_string())?;
            match configmap {
                None => println!("{json}"),
                Some(name) => {
                    let cm = k8s_openapi::api::core::v1::ConfigMap {
                        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                            name: Some(name),
                            ..Default::default()
                        },
                        data: Some([(key, json)].into()),
                        ..Default::default()
                    };
                    print!(
                        "{}",
                        serde_saphyr::to_string(&cm).map_err(|e| e.to_string())?
                    );
                }
            }
            Ok(())
        }
        Command::Crd { reference: false } => {
            print!("{}", drover::crd::to_yaml().map_err(|e| e.to_string())?);
            Ok(())
        }
        Command::Crd { reference: true } => {
            print!("{}", drover::crd::reference_markdown());
            Ok(())
        }
        Command::Rbac { helm: true, .. } => {
            print!("{}", drover::rbac::helm_rules());
            Ok(())
        }
        Command::Rbac {
            name,
            operator_namespace,
            watched,
            helm: false,
        } => {
            print!(
                "{}",
                drover::rbac::to_yaml(&name, &operator_namespace, &watched)
                    .map_err(|e| e.to_string())?
            );
            Ok(())
        }
        Command::Render { file } => {
            let text = read_input(&file)?;
            let models =
                drover::render::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            if models.is_empty() {
                return Err(format!("{}: no ModelDeployment found", file.display()));
            }
            for md in &models {
                print!("{}", drover::render::render(md).map_err(|e| e.to_string())?);
            }
            Ok(())
        }
        Command::Monitor(args) => {
            init_logging(cli.log_format, &cli.log_level)?;
            let threads = if args.threads == 0 {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            } else {
                args.threads
            };
            // One thread: the current-thread scheduler, which runs the accept loop, the
            // connections and the admin port on this thread without the work-stealing
            // scheduler's cross-thread bookkeeping (about a quarter less CPU per proxied
            // request in benches/proxy).
            let mut builder = if threads == 1 {
                tokio::runtime::Builder::new_current_thread()
            } else {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(threads);
                builder
            };
            let runtime = builder
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start runtime: {e}"))?;
            runtime
                .block_on(async move {
                    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                    tokio::spawn(async move {
                        drover::operator::wait_for_signal().await;
                        let _ = stop_tx.send(true);
                    });
                    drover::monitor::run(*args, stop_rx).await
                })
                .map_err(|e| format!("{e:#}"))
        }
        Command::FetchModel(args) => {
            init_logging(cli.log_format, &cli.log_level)?;
            drover::fetch::main(&args)
        }
        Command::Rollout(verb) => drover::cli::run(verb, "drover"),
        Command::Operator(args) => {
            init_logging(cli.log_format, &cli.log_level)?;
            let runtime = drover::operator::runtime(args.threads)
                .map_err(|e| format!("cannot start runtime: {e}"))?;
            runtime
                .block_on(drover::operator::run(args))
                .map_err(|e| e.to_string())
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if drover::cli::invoked_as_plugin(argv.first().map(|a| a.as_os_str())) {
        return drover::cli::plugin_main(argv);
    }
    match run(Cli::parse_from(argv)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("drover: {message}");
            ExitCode::FAILURE
        }
    }
}
