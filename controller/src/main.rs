//! The `rollgate` binary: the operator (`rollgate controller`) and the CLI.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rollgate::cli::Exit;
use rollgate::cli::rollout::{self, KubeArgs};

#[derive(Debug, Parser)]
#[command(
    name = "rollgate",
    version,
    about = "Ship new versions safely: stepped traffic, SLO gates, automatic rollback."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the operator (leader-elected; serves /metrics, /healthz, /readyz).
    Controller(rollgate::run::ControllerArgs),
    /// Print the CustomResourceDefinitions (Rollout, ReleaseGate) as YAML.
    Crds,
    /// The gate without a Rollout: replay recorded counts, evaluate live series, benchmark.
    #[command(subcommand)]
    Gate(rollgate::cli::gate::GateCommand),
    /// Show a rollout: steps, weight, each check's evidence, the last decisions.
    Status {
        #[command(flatten)]
        kube: KubeArgs,
        #[command(flatten)]
        args: rollout::StatusArgs,
    },
    /// Block until a verdict (or promotion, or a step), then print a summary.
    #[command(after_help = rollgate::cli::EXIT_CODES)]
    Wait {
        #[command(flatten)]
        kube: KubeArgs,
        #[command(flatten)]
        args: rollout::WaitArgs,
    },
    /// List rollouts with phase, weight, verdict and age.
    Get {
        #[command(flatten)]
        kube: KubeArgs,
        #[command(flatten)]
        args: rollout::GetArgs,
    },
    /// Raise the weight to the next step now (or, with --full, promote to 100 %).
    Promote {
        #[command(flatten)]
        kube: KubeArgs,
        #[command(flatten)]
        args: rollout::PromoteArgs,
    },
    /// Roll the canary back now.
    Abort {
        #[command(flatten)]
        kube: KubeArgs,
        #[command(flatten)]
        args: rollout::NameArgs,
    },
    /// Start a rolled-back version again from the first step.
    Retry {
        #[command(flatten)]
        kube: KubeArgs,
        #[command(flatten)]
        args: rollout::NameArgs,
    },
    /// Hold at the current weight (spec.paused: true).
    Pause {
        #[command(flatten)]
        kube: KubeArgs,
        #[command(flatten)]
        args: rollout::NameArgs,
    },
    /// Continue stepping (spec.paused: false).
    Resume {
        #[command(flatten)]
        kube: KubeArgs,
        #[command(flatten)]
        args: rollout::NameArgs,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; usage errors exit 4 (2 means a timeout).
            let _ = e.print();
            return if e.use_stderr() { Exit::Usage.into() } else { ExitCode::SUCCESS };
        }
    };
    match cli.command {
        Command::Gate(command) => rollgate::cli::gate::run(command).into(),
        Command::Status { kube, args } => rollout::run(kube, rollout::Command::Status(args)).into(),
        Command::Wait { kube, args } => rollout::run(kube, rollout::Command::Wait(args)).into(),
        Command::Get { kube, args } => rollout::run(kube, rollout::Command::Get(args)).into(),
        Command::Promote { kube, args } => rollout::run(kube, rollout::Command::Promote(args)).into(),
        Command::Abort { kube, args } => rollout::run(kube, rollout::Command::Abort(args)).into(),
        Command::Retry { kube, args } => rollout::run(kube, rollout::Command::Retry(args)).into(),
        Command::Pause { kube, args } => rollout::run(kube, rollout::Command::Pause(args)).into(),
        Command::Resume { kube, args } => rollout::run(kube, rollout::Command::Resume(args)).into(),
        Command::Controller(args) => {
            let _telemetry = match rollgate::observability::init_telemetry(
                args.log_format == "json",
                args.otlp_endpoint.as_deref(),
            ) {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("rollgate: {e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("rollgate: starting the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(rollgate::run::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "controller failed");
                    eprintln!("rollgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Crds => match rollgate_crds::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rollgate: rendering the CRDs: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
