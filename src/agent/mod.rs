//! The daemon: one control task that owns the data plane, fed by tasks beside it.
//!
//! ```text
//! start.rs    config ─► interface ─► backend.prepare ─► lease (acquire) ─► backend.configure
//!             ─► LeaseTable ─► refresh + apply (stale purge) ─► subnet.env, ready
//! control.rs  loop { lease updates | netlink notifications | audit/retry timers | config file
//!             | firewall changes | shutdown }
//! ```
//! Who owns what:
//! - [`leases::Leases`]: the peer table, the own lease, and every call to the lease source
//!   (renewal, re-acquire, write-back, re-publish), each in a task of its own;
//! - [`dataplane::DataPlane`]: the primary backend, the retiring backends of a live switch and
//!   the reconciler (plan → diff → netlink);
//! - [`config_watch`]: what a new config means (refused, firewall mode, backend switch) and the
//!   `--net-config-path` file's identity;
//! - [`cache_writer::CacheWriter`]: the peer cache, written on a thread of its own;
//! - [`http`] and [`metrics`]: `/healthz`, `/readyz`, `/metrics`;
//! - [`firewall`]: masquerade and forward rules.
//!
//! Shutdown is a `CancellationToken` passed in (SIGTERM/SIGINT in `main`, anything in tests).
//! On shutdown the lease, subnet.env and every kernel object stay in place, so a restart loses
//! no packet.
pub mod cache_writer;
pub mod config_watch;
mod control;
pub mod dataplane;
pub mod firewall;
pub mod http;
pub mod iface;
pub mod leases;
pub mod metrics;
pub mod peer_cache;
pub mod sd_notify;
mod start;
mod start_kube;
pub mod subnet_file;

use std::time::Duration;

use net_conf::NetConf;
use tokio_util::sync::CancellationToken;

use self::cache_writer::CacheWriter;
use self::config_watch::FileStamp;
use self::dataplane::DataPlane;
use self::firewall::Firewalls;
use self::http::Health;
use self::leases::Leases;
use crate::cli::Options;

/// What this daemon owns in the kernel: its network's objects, of both families for a
/// dual-stack network, of IPv6 alone for an IPv6-only one (other flannel networks on the host
/// are left alone).
pub(crate) fn ownership(conf: &NetConf) -> backends::Ownership {
    let v4 = conf.network.filter(|_| conf.enable_ipv4);
    match (v4, conf.ipv6_network.filter(|_| conf.enable_ipv6)) {
        (None, Some(v6)) => backends::Ownership::ipv6_only(v6),
        (v4, Some(v6)) => backends::Ownership::of(v4).with_ipv6_network(v6),
        (v4, None) => backends::Ownership::of(v4),
    }
}
use crate::lease::LeaseSource;

pub use start::run;

/// How often the whole owned kernel state is dumped and compared, as a backstop to netlink
/// notifications (which cover deletes within milliseconds).
const AUDIT_INTERVAL: Duration = Duration::from_secs(600);
/// How soon failed kernel writes and skipped peers (not yet adjacent, gateway unreachable) are
/// tried again.
const RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// How often the config file (`--net-config-path`) is checked for a new version: one `stat`.
const CONFIG_FILE_POLL: Duration = Duration::from_secs(2);
/// Longest delay of a peer cache write after a lease change.
const CACHE_WRITE: Duration = Duration::from_secs(5);
/// Liveness: the control loop beats at least this often even when idle.
const HEARTBEAT: Duration = Duration::from_secs(20);

/// The running agent: everything the control loop owns.
struct Agent<S: LeaseSource> {
    opts: Options,
    conf: NetConf,
    /// The config text `conf` came from (kept for the peer cache).
    config_text: String,
    leases: Leases<S>,
    dp: DataPlane,
    health: Health,
    /// The config file's identity when the config comes from `--net-config-path`.
    config_file: Option<FileStamp>,
    /// With a config file in etcd mode: the lease store's own config text as last seen
    /// (flanneld nodes follow it), to warn while the two disagree.
    store_config: Option<String>,
    cache: CacheWriter,
    /// Masquerade / forward rules (iptables or nftables), checked on nf_tables change
    /// notifications and on a slow audit timer.
    firewall: Firewalls,
    shutdown: CancellationToken,
}
