//! `rollgate-load`: steady HTTP load with a one-line report per interval of which version
//! answered (`x-refserver-version`) and how many requests failed. Used by `make demo`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "rollgate-load", about = "Steady HTTP load with a per-interval version report.")]
struct Cli {
    #[arg(long)]
    url: String,
    /// Host header (the HTTPRoute's hostname).
    #[arg(long)]
    host: Option<String>,
    #[arg(long, default_value_t = 100)]
    rps: u32,
    #[arg(long, default_value_t = 8)]
    workers: u32,
    /// Seconds between report lines.
    #[arg(long, default_value_t = 5)]
    report_every: u64,
}

#[derive(Default)]
struct Window {
    versions: BTreeMap<String, u64>,
    failed: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.rps == 0 || cli.workers == 0 {
        eprintln!("rollgate-load: --rps and --workers must be positive");
        return ExitCode::from(2);
    }
    let window = Arc::new(Mutex::new(Window::default()));
    let period = Duration::from_secs_f64(f64::from(cli.workers) / f64::from(cli.rps));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..cli.workers {
        let Ok(client) = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build() else {
            eprintln!("rollgate-load: cannot build an HTTP client");
            return ExitCode::FAILURE;
        };
        let (url, host, window) = (cli.url.clone(), cli.host.clone(), window.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let mut req = client.get(&url);
                if let Some(h) = &host {
                    req = req.header("host", h);
                }
                let outcome = req.send().await.ok().filter(|r| r.status().is_success()).map(|r| {
                    r.headers()
                        .get("x-refserver-version")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("?")
                        .to_string()
                });
                if let Ok(mut w) = window.lock() {
                    match outcome {
                        Some(v) => *w.versions.entry(v).or_default() += 1,
                        None => w.failed += 1,
                    }
                }
            }
        });
    }
    let start = Instant::now();
    let mut report = tokio::time::interval(Duration::from_secs(cli.report_every.max(1)));
    report.tick().await;
    let Ok(mut terminate) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        eprintln!("rollgate-load: cannot listen for SIGTERM");
        return ExitCode::FAILURE;
    };
    let (mut total, mut failed) = (0u64, 0u64);
    loop {
        tokio::select! {
            _ = terminate.recv() => {
                // The totals, including the window not reported yet; failing when any failed.
                if let Ok(w) = window.lock() {
                    total += w.versions.values().sum::<u64>() + w.failed;
                    failed += w.failed;
                }
                println!("  traffic total: {total} requests, {failed} failed");
                return if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE };
            }
            _ = report.tick() => {
                let w = match window.lock() {
                    Ok(mut w) => std::mem::take(&mut *w),
                    Err(_) => return ExitCode::FAILURE,
                };
                total += w.versions.values().sum::<u64>() + w.failed;
                failed += w.failed;
                let ok: u64 = w.versions.values().sum();
                let shares: Vec<String> = w
                    .versions
                    .iter()
                    .map(|(v, n)| format!("{v} {:5.1}%", 100.0 * *n as f64 / ok.max(1) as f64))
                    .collect();
                println!(
                    "  traffic t={:>4}s  {:>5} req/s  {}  failed {}",
                    start.elapsed().as_secs(),
                    (ok + w.failed) / cli.report_every.max(1),
                    shares.join("  "),
                    w.failed
                );
            }
            Some(joined) = tasks.join_next() => {
                // Workers loop forever; one that ends has panicked.
                eprintln!("rollgate-load: a worker stopped: {:?}", joined.err());
                return ExitCode::FAILURE;
            }
        }
    }
}
