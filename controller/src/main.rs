//! The `rollgate` binary: the operator (`rollgate controller`) and the CLI.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
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
