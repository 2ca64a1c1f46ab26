//! Lease sources: where the node's own subnet lease and every peer's lease come from (flannel
//! calls this the subnet manager), and the [`table::LeaseTable`] the agent keeps of the peers.
//!
//! [`LeaseSource`] is the one interface the agent uses. Implementations: [`etcd`] (flannel's
//! keys and values in etcd v3), [`kube`] (Kubernetes Nodes: podCIDRs and flannel's annotations) and, for tests of the agent's decision logic without root or
//! etcd, an in-memory one in the `weft-testkit` crate. A source is cheap to clone (clones share
//! the connection); the agent runs every call of it in a task of its own, never in its control
//! task.
pub mod etcd;
pub mod kube;
pub mod table;

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use net_conf::alloc::Previous;
use net_conf::{LeaseAttrs, NetConf, SubnetKey};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A source of subnet leases: the network config, the node's own lease (acquire, renew,
/// re-acquire, write back, release) and a stream of every lease's changes.
///
/// Every method may fail because the source is unreachable; none of them retries for long (the
/// caller decides, in a task of its own). The stream of [`watch`](Self::watch) never ends
/// before shutdown: it reports disconnects, resumes after them without missing a change, and
/// replaces the whole table with a [`WatchEvent::Resync`] when it cannot resume.
pub trait LeaseSource: Clone + Send + Sync + 'static {
    /// Where the config lives, for log lines (e.g. `etcd store (key /coreos.com/network/config)`).
    fn config_location(&self) -> String;

    /// The network config text; `None` when the source has none (yet).
    fn config(&self) -> impl Future<Output = Result<Option<String>>> + Send;

    /// The config text (if any) and every lease, read together.
    fn list_network(&self) -> impl Future<Output = Result<(Option<String>, Snapshot)>> + Send;

    /// Every lease at one revision.
    fn list(&self) -> impl Future<Output = Result<Snapshot>> + Send;

    /// Gets (or re-publishes with new `attrs`) the node's lease: the lease carrying our public
    /// IP, else `previous` (the subnets in subnet.env) if free, else free subnets of `conf`.
    /// `listed` is a list to decide on (saves a read); the list returned is the one the
    /// decision was made on, to start the peer table and [`watch`](Self::watch) from.
    fn acquire(
        &mut self,
        conf: &NetConf,
        attrs: &LeaseAttrs,
        previous: Previous,
        listed: Option<Snapshot>,
    ) -> impl Future<Output = Result<(OwnLease, Snapshot)>> + Send;

    /// Gets the lease again after it was lost (deleted, expired): `prefer`'s subnets if still
    /// free, else others. Requires an earlier [`acquire`](Self::acquire) on this value.
    fn reacquire(&mut self, prefer: SubnetKey) -> impl Future<Output = Result<Reacquired>> + Send;

    /// Writes `attrs` back over another value on our key, keeping the key's lease. `Ok(false)`
    /// when the key is gone (the delete event leads to a re-acquire).
    fn reassert(
        &self,
        own: &OwnLease,
        attrs: &LeaseAttrs,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Keeps `own` alive until shutdown or until the source says it is gone.
    fn renewal(
        &self,
        own: OwnLease,
        shutdown: CancellationToken,
    ) -> impl Future<Output = RenewalEnd> + Send + 'static;

    /// Every lease change from `from_revision` (usually a list's `revision + 1`), in order,
    /// from a task of the source's own that stops on `shutdown` or when the receiver is
    /// dropped.
    fn watch(&self, from_revision: i64, shutdown: CancellationToken) -> mpsc::Receiver<WatchEvent>;

    /// Called once the node is ready (subnet.env written, first sync done): kube mode sets the
    /// Node's `NetworkUnavailable` condition to False here. Nothing by default.
    fn started(&self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
}

/// Parses one key and value under `<prefix>/subnets/` as flannel stores them (every source
/// keeps the etcd layout's text): a key that is not a subnet, or a value that is not a lease,
/// is [`Malformed`] (with its subnet when only the value was bad), never an error that stops a
/// list or a watch. A bad key can be huge: the report shows an excerpt.
pub fn parse_entry(
    prefix: &str,
    key: &[u8],
    value: &[u8],
    lease_id: i64,
    mod_revision: i64,
) -> std::result::Result<LeaseEntry, Malformed> {
    let key_full = String::from_utf8_lossy(key);
    let key_text = net_conf::excerpt(&key_full, 400);
    let subnet = SubnetKey::from_etcd_key(&key_full, prefix).map_err(|e| Malformed {
        key: key_text.clone(),
        reason: e.to_string(),
        subnet: None,
    })?;
    let attrs = LeaseAttrs::parse(value).map_err(|e| Malformed {
        key: key_text.clone(),
        reason: e.to_string(),
        subnet: Some(subnet),
    })?;
    Ok(LeaseEntry {
        key: subnet,
        attrs,
        lease_id,
        mod_revision,
    })
}

/// One well-formed lease under `<prefix>/subnets/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseEntry {
    pub key: SubnetKey,
    pub attrs: LeaseAttrs,
    /// The etcd lease attached to the key; 0 = none (a reservation).
    pub lease_id: i64,
    pub mod_revision: i64,
}

impl LeaseEntry {
    pub fn is_reservation(&self) -> bool {
        self.lease_id == 0
    }
}

/// The whole `<prefix>/subnets` range at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The store revision of the Range; a watch resumes at `revision + 1`.
    pub revision: i64,
    pub leases: Vec<LeaseEntry>,
    /// Keys under the range that are not a lease (skipped with a warning).
    pub malformed: Vec<Malformed>,
}

/// A key under `<prefix>/subnets` that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub key: String,
    pub reason: String,
    /// The subnet key when the key itself parsed (only the value was bad).
    pub subnet: Option<SubnetKey>,
}

/// The lease this node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnLease {
    pub key: SubnetKey,
    /// The etcd lease attached to the key; 0 = a reservation (no TTL, nothing to renew).
    pub lease_id: i64,
    /// When the etcd lease runs out unless renewed; None for a reservation.
    pub expires: Option<SystemTime>,
    /// The etcd lease's granted TTL in seconds (what a KeepAlive restores); 0 for a
    /// reservation.
    pub granted_ttl: i64,
}

/// What [`SubnetManager::reacquire`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reacquired {
    pub lease: OwnLease,
    pub snapshot: Snapshot,
    /// True when a subnet differs from the preferred ones: the caller must reconfigure
    /// (device address, subnet.env, routes).
    pub subnet_changed: bool,
}

/// A change under `<prefix>/subnets`, in etcd order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(LeaseEntry),
    Delete(SubnetKey),
    /// A key or value that is not a lease; never a removal. `subnet` is set when only the
    /// value was bad.
    Malformed {
        key: String,
        reason: String,
        subnet: Option<SubnetKey>,
    },
    /// The watch fell behind a compaction: this full list replaces the table.
    Resync(Snapshot),
    /// The watch stream broke; the manager is reconnecting.
    Disconnected,
    /// The watch is established again (resumed at the next unseen revision).
    Reconnected,
    /// `<prefix>/config` was written (`Some(text)`) or deleted (`None`); also sent after a
    /// resync with the config read then.
    Config(Option<String>),
}

/// How a renewal loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewalEnd {
    /// Shutdown was requested.
    Shutdown,
    /// etcd says the lease no longer exists (expired or revoked): re-acquire.
    LeaseLost { lease_id: i64 },
}

/// Capped exponential backoff with jitter: each delay is drawn from `[d/2, d]` and `d`
/// doubles up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    cur: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max, cur: min }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.cur;
        self.cur = (self.cur * 2).min(self.max);
        let half = d / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub fn reset(&mut self) {
        self.cur = self.min;
    }
}

/// Sleeps for `d` unless shutdown comes first; returns false on shutdown.
pub async fn sleep_or_shutdown(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Runs `f` until it succeeds, logging each failure and waiting with capped jittered
/// backoff (100 ms → 10 s) in between. `None` when shutdown was requested first.
pub async fn retry_until<T, E, F, Fut>(
    shutdown: &CancellationToken,
    what: &str,
    mut f: F,
) -> Option<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let mut attempt: u32 = 1;
    loop {
        let res = tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = f() => r,
        };
        match res {
            Ok(v) => {
                if attempt > 1 {
                    tracing::info!("{what}: succeeded after {attempt} attempts");
                }
                return Some(v);
            }
            Err(e) => {
                let d = backoff.next_delay();
                tracing::warn!("{what} failed (attempt {attempt}, retrying in {d:.1?}): {e:#}");
                if !sleep_or_shutdown(shutdown, d).await {
                    return None;
                }
                attempt += 1;
            }
        }
    }
}
