//! The etcd v3 lease source: flannel's keys and values under `--etcd-prefix`.
//!
//! - [`registry`]: raw etcd operations (one RPC each) on flannel's data layout;
//! - [`manager`]: the node's lease life cycle (acquire, renew, re-acquire) and the peer watch,
//!   with the renewal loop in `renew` and the watch loop in `watch`.
pub mod manager;
pub mod registry;
mod renew;
pub mod source;
mod watch;
