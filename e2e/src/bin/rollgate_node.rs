//! `rollgate-node`: the process-based node agent of the local control plane.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rollgate_e2e::node::{Agent, Config};

#[derive(Debug, Parser)]
#[command(name = "rollgate-node", about = "Runs the Pods bound to one Node as local processes.")]
struct Cli {
    #[arg(long, default_value = "rollgate-node")]
    node_name: String,
    /// The host's address on the pod bridge.
    #[arg(long, default_value = "10.200.0.1")]
    node_ip: Ipv4Addr,
    #[arg(long, default_value = "rg0")]
    bridge: String,
    #[arg(long, default_value = "10.200.1.2")]
    first_pod_ip: Ipv4Addr,
    #[arg(long, default_value_t = 16)]
    prefix_len: u8,
    /// Image name → binary, e.g. `refserver=/path/to/refserver`; repeatable.
    #[arg(long = "image", value_parser = parse_image)]
    images: Vec<(String, PathBuf)>,
    #[arg(long)]
    log_dir: PathBuf,
    /// Prefix of network namespace and veth names (short: interface names are ≤ 15 bytes).
    #[arg(long, default_value = "rgp")]
    net_prefix: String,
}

fn parse_image(s: &str) -> Result<(String, PathBuf), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected name=/path/to/binary"))?;
    Ok((k.to_string(), PathBuf::from(v)))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rollgate-node: connecting to Kubernetes: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&cli.log_dir) {
        eprintln!("rollgate-node: {}: {e}", cli.log_dir.display());
        return ExitCode::FAILURE;
    }
    let config = Config {
        node_name: cli.node_name,
        node_ip: cli.node_ip,
        bridge: cli.bridge,
        first_pod_ip: cli.first_pod_ip,
        prefix_len: cli.prefix_len,
        images: cli.images.into_iter().collect::<HashMap<_, _>>(),
        log_dir: cli.log_dir,
        net_prefix: cli.net_prefix,
    };
    let agent = Agent::new(client, config);
    let stop = async {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut t), Ok(mut i)) => {
                tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
            }
            _ => std::future::pending().await,
        }
    };
    match agent.run(stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rollgate-node: {e}");
            ExitCode::FAILURE
        }
    }
}
