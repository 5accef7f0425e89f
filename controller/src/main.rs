//! The `rollgate` binary: the operator (`rollgate controller`) and the CLI.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use rollgate::cli::Exit;
use rollgate::cli::rollout::{self, KubeArgs};

#[derive(Debug, Parser)]
#[command(
    name = "rollgate",
    version,
    about = "Ship new versions safely: stepped traffic, SLO gates, automatic rollback."
)]
struct Cli {
    /// Connection flags, accepted before or after the subcommand.
    #[command(flatten)]
    kube: KubeArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the operator (leader-elected; serves /metrics, /healthz, /readyz).
    Controller(rollgate::run::ControllerArgs),
    /// Print the CustomResourceDefinitions (Rollout, ReleaseGate) as YAML, or with --reference
    /// the spec reference (Markdown) generated from them.
    Crds {
        /// Print the spec reference (docs/reference.md) instead of the YAML.
        #[arg(long)]
        reference: bool,
    },
    /// The gate without a Rollout: replay recorded counts, evaluate live series, benchmark.
    #[command(subcommand)]
    Gate(rollgate::cli::gate::GateCommand),
    /// Show a rollout: steps, weight, each check's evidence, the last decisions.
    Status(rollout::StatusArgs),
    /// Block until a verdict (or promotion, or a step), then print a summary.
    #[command(after_help = rollgate::cli::EXIT_CODES)]
    Wait(rollout::WaitArgs),
    /// List rollouts with phase, weight, verdict and age.
    Get(rollout::GetArgs),
    /// Raise the weight to the next step now (or, with --full, promote to 100 %).
    Promote(rollout::PromoteArgs),
    /// Roll the canary back now.
    Abort(rollout::NameArgs),
    /// Start a rolled-back version again from the first step.
    Retry(rollout::NameArgs),
    /// Hold at the current weight (spec.paused: true).
    Pause(rollout::NameArgs),
    /// Continue stepping (spec.paused: false).
    Resume(rollout::NameArgs),
    /// Print a shell completion script: `source <(rollgate completion bash)`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
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
    let talks_to_kubernetes = matches!(
        cli.command,
        Command::Controller(_)
            | Command::Status(_)
            | Command::Wait(_)
            | Command::Get(_)
            | Command::Promote(_)
            | Command::Abort(_)
            | Command::Retry(_)
            | Command::Pause(_)
            | Command::Resume(_)
    );
    if let Some(flag) = cli.kube.first_set().filter(|_| !talks_to_kubernetes) {
        eprintln!("rollgate: {flag}: this command does not connect to Kubernetes");
        return Exit::Usage.into();
    }
    match cli.command {
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "rollgate", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Gate(command) => rollgate::cli::gate::run(command).into(),
        Command::Status(args) => rollout::run(cli.kube, rollout::Command::Status(args)).into(),
        Command::Wait(args) => rollout::run(cli.kube, rollout::Command::Wait(args)).into(),
        Command::Get(args) => rollout::run(cli.kube, rollout::Command::Get(args)).into(),
        Command::Promote(args) => rollout::run(cli.kube, rollout::Command::Promote(args)).into(),
        Command::Abort(args) => rollout::run(cli.kube, rollout::Command::Abort(args)).into(),
        Command::Retry(args) => rollout::run(cli.kube, rollout::Command::Retry(args)).into(),
        Command::Pause(args) => rollout::run(cli.kube, rollout::Command::Pause(args)).into(),
        Command::Resume(args) => rollout::run(cli.kube, rollout::Command::Resume(args)).into(),
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
            match runtime.block_on(rollgate::run::run(args, cli.kube)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "controller failed");
                    eprintln!("rollgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Crds { reference } => match rollgate_crds::crds_yaml() {
            Ok(_) if reference => {
                print!("{}", rollgate_crds::reference::markdown());
                ExitCode::SUCCESS
            }
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
