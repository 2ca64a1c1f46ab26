//! weft, the daemon: command line, etcd subnet manager, lease loop, kernel reconciliation,
//! health endpoints, and the local lab that the README and the end-to-end tests use.

pub mod app;
pub mod cleanup;
pub mod cli;
pub mod cni;
pub mod docker_opts;
pub mod etcd_server;
pub mod firewall;
pub mod health;
pub mod iface;
pub mod lab;
pub mod lease_table;
pub mod metrics;
pub mod peer_cache;
pub mod registry;
pub mod status;
pub mod subnet;
pub mod subnet_file;

/// The test-only Prometheus text parser, shared with the end-to-end tests.
#[cfg(test)]
#[path = "../tests/common/prom.rs"]
mod prom;
