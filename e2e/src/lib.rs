//! The end-to-end side of rollgate: `node`, the process-based node agent that stands in for the
//! kubelet on the local control plane (see `e2e/scripts/cluster.sh`).

pub mod node;
