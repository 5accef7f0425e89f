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
    /// Print the CustomResourceDefinitions (Rollout, ReleaseGate) as YAML.
    Crds,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
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
