//! rollgate's operator and CLI. The decision code (`gate`, `plan`) is pure; the edges
//! (`kube` API calls, Prometheus, HTTP) implement small traits around it.

pub mod gate;
pub mod plan;

#[cfg(test)]
pub mod fixtures;
