//! The `rollgate` binary: the operator (`rollgate controller`) and the CLI.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rollgate::cli::Exit;

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
