//! `refserver`: the reference HTTP service that rollgate deploys and rolls out.
//!
//! A small service carrying the practices of a production one: layered, validated and
//! hot-reloaded configuration (`config`, `reload`), a documented middleware onion (`middleware`),
//! the metrics contract rollgate's checks read (`metrics`), admission control (`admission`), a
//! bounded worker pool (`pool`), fault injection and a GC-equivalent pause probe
//! (`runtime_probe`), connection limits and timeouts (`connection`), and graceful shutdown
//! (`server`).

pub mod adaptive;
pub mod admission;
pub mod app;
pub mod config;
pub mod connection;
pub mod error;
pub mod handlers;
pub mod http3;
pub mod ids;
pub mod metrics;
pub mod middleware;
pub mod pool;
pub mod profiling;
pub mod reload;
pub mod route;
pub mod runtime_probe;
pub mod server;
pub mod sharded;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod trace_context;
