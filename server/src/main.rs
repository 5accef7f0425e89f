//! The `refserver` binary: parse flags, load the configuration (exit 2 when it is invalid), set
//! up telemetry, serve until SIGTERM or SIGINT, exit 0 after a clean drain.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use refserver::config::{SETTINGS, Sources, env_name};
use refserver::metrics::Metrics;
use refserver::state::AppState;
use refserver::telemetry::Telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "refserver",
    version,
    about = "The reference HTTP service rollgate rolls out.",
    after_help = settings_help()
)]
struct Cli {
    /// YAML (.yaml/.yml) or TOML (.toml) configuration file; watched and hot-reloaded.
    #[arg(long, env = "REFSERVER_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Address to listen on (the `listen` setting).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Any setting, as dotted-name=value (e.g. `--set fault.error_ratio=0.1`); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    set: Vec<(String, String)>,
    /// Print the effective configuration as YAML and exit.
    #[arg(long)]
    print_config: bool,
}

/// jemalloc: the allocator that can sample live allocations for `/debug/pprof/heap`, and whose
/// statistics `/metrics` reports.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once as it starts: heap profiling compiled in but inactive (no
/// sampling cost) until `debug.heap_profiling` activates it; a sample every 2^19 bytes.
///
/// `unsafe` because the symbol is read by C code (jemalloc looks it up by name); it is a
/// NUL-terminated constant, which is all jemalloc requires of it.
#[cfg(not(target_env = "musl"))]
#[allow(unsafe_code, non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"prof:true,prof_active:false,lg_prof_sample:19\0";
// No heap profiling in the static (musl) build: jemalloc's sampler unwinds the stack, and musl's
// libc has no unwind tables (the process crashed under load with it on); `/debug/pprof/heap`
// answers 501 there.

fn parse_set(raw: &str) -> Result<(String, String), String> {
    let (k, v) = raw.split_once('=').ok_or_else(|| format!("{raw:?}: expected KEY=VALUE"))?;
    Ok((k.trim().to_string(), v.to_string()))
}

fn settings_help() -> String {
    let mut s = String::from(
        "Settings (file key = env variable; flags --set KEY=VALUE win over env, env over file):\n",
    );
    for setting in SETTINGS {
        s.push_str(&format!("  {setting:<32} {}\n", env_name(setting)));
    }
    s.push_str("\nExit codes: 0 clean shutdown, 1 runtime failure, 2 invalid configuration or usage.");
    s
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut flags = Vec::new();
    if let Some(listen) = cli.listen {
        flags.push(("listen".to_string(), listen));
    }
    flags.extend(cli.set);
    let sources = match Sources::from_env(std::env::vars(), cli.config, flags) {
        Ok(s) => s,
        Err(e) => return config_error(&e),
    };
    let config = match sources.load() {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    if cli.print_config {
        return match serde_yaml::to_string(&config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("refserver: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("refserver: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let telemetry = match Telemetry::init(&config) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("refserver: invalid configuration: {e}");
                return ExitCode::from(2);
            }
        };
        let metrics = Metrics::new(&config.version);
        let state = match AppState::new(config, metrics) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "starting the worker pool");
                telemetry.shutdown();
                return ExitCode::FAILURE;
            }
        };
        let result = refserver::server::run(state, sources, std::future::pending()).await;
        let code = match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.is_config() => {
                tracing::error!(error = %e, "invalid configuration");
                eprintln!("refserver: invalid configuration: {e}");
                ExitCode::from(2)
            }
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                ExitCode::FAILURE
            }
        };
        telemetry.shutdown();
        code
    })
}

fn config_error(e: &refserver::config::ConfigError) -> ExitCode {
    eprintln!("refserver: invalid configuration: {e}");
    ExitCode::from(2)
}
