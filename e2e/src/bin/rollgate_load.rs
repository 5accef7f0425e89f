//! `rollgate-load`: steady HTTP load with a one-line report per interval of which version
//! answered (`x-refserver-version`), how many answers were refserver's own errors (a faulty
//! version's) and how many requests refserver never answered (failed). On SIGTERM it prints the
//! totals and exits non-zero when any request failed. Used by `make demo`.

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
    /// Successful answers, by version.
    versions: BTreeMap<String, u64>,
    /// Error answers refserver gave itself (a faulty version's 500s), by version.
    errors: BTreeMap<String, u64>,
    /// Requests refserver never answered: a gateway error or no response at all.
    failed: u64,
}

/// Everything since the start.
#[derive(Default)]
struct Totals {
    requests: u64,
    errors: BTreeMap<String, u64>,
    failed: u64,
}

impl Totals {
    fn add(&mut self, w: &Window) {
        let errors: u64 = w.errors.values().sum();
        self.requests += w.versions.values().sum::<u64>() + errors + w.failed;
        self.failed += w.failed;
        for (v, n) in &w.errors {
            *self.errors.entry(v.clone()).or_default() += n;
        }
    }
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
                let outcome = req.send().await.ok().and_then(|r| {
                    let version = r.headers().get("x-refserver-version")?.to_str().ok()?.to_string();
                    Some((r.status().is_success(), version))
                });
                if let Ok(mut w) = window.lock() {
                    match outcome {
                        Some((true, v)) => *w.versions.entry(v).or_default() += 1,
                        Some((false, v)) => *w.errors.entry(v).or_default() += 1,
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
    let mut totals = Totals::default();
    loop {
        tokio::select! {
            _ = terminate.recv() => {
                // The totals, including the window not reported yet; failing when any failed.
                if let Ok(w) = window.lock() {
                    totals.add(&w);
                }
                let by_version: Vec<String> =
                    totals.errors.iter().map(|(v, n)| format!("{n} from {v}")).collect();
                println!(
                    "  traffic total: {} requests; error answers: {}; not answered by refserver: {}",
                    totals.requests,
                    if by_version.is_empty() { "none".to_string() } else { by_version.join(", ") },
                    totals.failed
                );
                return if totals.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE };
            }
            _ = report.tick() => {
                let w = match window.lock() {
                    Ok(mut w) => std::mem::take(&mut *w),
                    Err(_) => return ExitCode::FAILURE,
                };
                totals.add(&w);
                let ok: u64 = w.versions.values().sum();
                let shares: Vec<String> = w
                    .versions
                    .iter()
                    .map(|(v, n)| format!("{v} {:5.1}%", 100.0 * *n as f64 / ok.max(1) as f64))
                    .collect();
                let errors: u64 = w.errors.values().sum();
                println!(
                    "  traffic t={:>4}s  {:>5} req/s  {}  error answers {errors}  failed {}",
                    start.elapsed().as_secs(),
                    (ok + errors + w.failed) / cli.report_every.max(1),
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
