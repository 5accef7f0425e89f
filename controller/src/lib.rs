//! rollgate's operator and CLI. The decision code is pure: the gate in its own crate
//! (`rollgate-gate`, no kube), `plan` here; the edges (`kube` API calls, Prometheus, HTTP)
//! implement small traits around it.

pub mod cli;
pub mod connection;
pub mod error;
pub mod metrics_provider;
pub mod notify;
pub mod observability;
pub mod owned;
pub mod plan;
pub mod reconcile;
pub mod rollout_watch;
pub mod router;
pub mod run;
pub mod scope;
pub mod shards;
pub mod status_view;
pub mod verdict_api;
pub mod watches;
pub mod workload;

#[cfg(test)]
pub mod fixtures;
