//! The subnet manager: the policy around the registry (docs/flannel-compat.md §3.4–3.6).
//!
//! - [`SubnetManager::acquire`]: one Range, then reuse the lease that carries our public IP,
//!   reuse the previous subnet from subnet.env, or allocate a random free one, each written by
//!   compare-and-swap; a lost race re-lists and retries with jittered backoff.
//! - [`SubnetManager::renewal`]: keeps the own etcd lease alive with one KeepAlive when
//!   `expires - renew_margin` is reached; never grants another lease.
//! - [`SubnetManager::reacquire`]: after the own key was deleted, the same subnet if still free.
//! - [`SubnetManager::watch`]: every lease change as [`WatchEvent`]s, resuming after a
//!   disconnect from the last seen revision and re-listing after a compaction. No RPC per event.
//!
//! The renewal loop lives in `renew.rs`, the watch loop in `watch.rs`; this file
//! holds the acquire/re-acquire policy.
use std::future::Future;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use net_conf::alloc::{self, Choice, ExistingLease, NewLease, Previous};
use net_conf::{LeaseAttrs, NetConf, SubnetKey};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::lease::etcd::registry::{Registry, RegistryError};
use crate::lease::etcd::renew::{expiry, renew_loop};
use crate::lease::etcd::watch::watch_loop;
pub use crate::lease::{
    Backoff, LeaseEntry, OwnLease, Reacquired, RenewalEnd, Snapshot, WatchEvent, retry_until,
    sleep_or_shutdown,
};

/// flannel's lease TTL (24 h).
pub const DEFAULT_TTL: Duration = Duration::from_secs(86_400);
/// flanneld's `--subnet-lease-renew-margin` default (60 min).
pub const DEFAULT_RENEW_MARGIN: Duration = Duration::from_secs(60 * 60);
/// Retry period of a failed renewal (flannel: 1 min).
pub const DEFAULT_RENEW_RETRY: Duration = Duration::from_secs(60);

/// Attempts of one acquire when other nodes keep winning the races.
const ACQUIRE_ATTEMPTS: u32 = 40;

/// Lease timing; the defaults are flannel's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// TTL of the etcd lease granted for a new key (whole seconds, ≥ 1 s).
    pub ttl: Duration,
    /// Renew when this much of the lease is left.
    pub renew_margin: Duration,
    /// Wait between failed renewals.
    pub renew_retry: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            ttl: DEFAULT_TTL,
            renew_margin: DEFAULT_RENEW_MARGIN,
            renew_retry: DEFAULT_RENEW_RETRY,
        }
    }
}

fn fmt_attrs(a: &LeaseAttrs) -> String {
    match a.public_ipv6 {
        Some(v6) => format!("ip: {} ipv6: {v6}", a.public_ip),
        None => format!("ip: {}", a.public_ip),
    }
}

/// What the manager remembers of the lease it holds.
#[derive(Debug, Clone)]
struct Held {
    lease_id: i64,
}

/// The own lease's life cycle and the watch of all leases, over one [`Registry`]. A clone
/// shares the etcd connection and starts with the same own-lease state (the agent re-acquires on
/// a clone in the background and takes it back when done).
#[derive(Debug, Clone)]
pub struct SubnetManager {
    reg: Registry,
    timing: LeaseTiming,
    held: Option<Held>,
    /// The config and attrs of the last acquire, for `reacquire`.
    last: Option<(NetConf, LeaseAttrs)>,
    /// Where the renewal loop reports the own lease's expiry (`/metrics`).
    metrics: Option<crate::agent::metrics::Metrics>,
}

impl SubnetManager {
    pub fn new(reg: Registry, timing: LeaseTiming) -> Self {
        SubnetManager {
            reg,
            timing,
            held: None,
            last: None,
            metrics: None,
        }
    }

    /// Reports the own lease's expiry to `metrics` from now on (each renewal loop sets
    /// `weft_lease_expiry_timestamp_seconds` when it starts and after each renewal).
    pub fn set_metrics(&mut self, metrics: crate::agent::metrics::Metrics) {
        self.metrics = Some(metrics);
    }

    pub fn registry(&self) -> &Registry {
        &self.reg
    }

    pub fn timing(&self) -> LeaseTiming {
        self.timing
    }

    fn ttl_secs(&self) -> i64 {
        i64::try_from(self.timing.ttl.as_secs().max(1)).unwrap_or(i64::MAX)
    }

    /// Gets a lease for this node (docs/flannel-compat.md §3.4): reuse the lease carrying
    /// `attrs.public_ip` (deleting it if it does not fit `conf`), else `previous` (from subnet.env)
    /// if free, else a random free subnet. Returns the lease and the list it was decided on (the
    /// initial snapshot for [`Self::watch`]; resume at `snapshot.revision + 1`).
    ///
    /// Errors from etcd are returned (wrap in [`retry_until`]); lost races are retried here.
    pub async fn acquire(
        &mut self,
        conf: &NetConf,
        attrs: &LeaseAttrs,
        previous: Previous,
    ) -> Result<(OwnLease, Snapshot)> {
        self.acquire_from(conf, attrs, previous, None).await
    }

    /// [`Self::acquire`] that decides first on `listed`, a list of the leases the caller has just
    /// made (vxlan's previous-lease lookup), instead of listing again: one Range less at start
    /// (target P7). A lease created since then only makes the compare-and-swap fail and the next
    /// attempt list afresh.
    pub async fn acquire_from(
        &mut self,
        conf: &NetConf,
        attrs: &LeaseAttrs,
        previous: Previous,
        mut listed: Option<Snapshot>,
    ) -> Result<(OwnLease, Snapshot)> {
        self.last = Some((conf.clone(), attrs.clone()));
        let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
        let mut last_conflict = None;
        for attempt in 1..=ACQUIRE_ATTEMPTS {
            let snapshot = match listed.take() {
                Some(snapshot) => snapshot,
                None => self.reg.list_leases().await.context("listing leases")?,
            };
            match self.try_acquire(conf, attrs, previous, &snapshot).await {
                Ok(Some(lease)) => {
                    self.held = Some(Held {
                        lease_id: lease.lease_id,
                    });
                    return Ok((lease, snapshot));
                }
                Ok(None) => continue, // deleted an incompatible lease: list again at once
                Err(e) if is_race(&e) => {
                    let d = backoff.next_delay();
                    tracing::info!(
                        "lost a race for a subnet (attempt {attempt}/{ACQUIRE_ATTEMPTS}), \
                         retrying in {d:.1?}: {e:#}"
                    );
                    last_conflict = Some(e);
                    tokio::time::sleep(d).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(anyhow!(
            "max retries reached trying to acquire a subnet ({ACQUIRE_ATTEMPTS} attempts); last: {}",
            last_conflict.map_or_else(|| "none".to_string(), |e| format!("{e:#}"))
        ))
    }

    /// [`Self::acquire`], retried while etcd is unreachable (capped jittered backoff
    /// 100 ms → 10 s, one log line per attempt). `None` on shutdown; a non-transient error
    /// (out of subnets, ...) is returned at once.
    pub async fn acquire_retrying(
        &mut self,
        conf: &NetConf,
        attrs: &LeaseAttrs,
        previous: Previous,
        shutdown: &CancellationToken,
    ) -> Option<Result<(OwnLease, Snapshot)>> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut attempt: u32 = 1;
        loop {
            let res = tokio::select! {
                _ = shutdown.cancelled() => return None,
                r = self.acquire(conf, attrs, previous) => r,
            };
            match res {
                Err(e) if is_transient(&e) => {
                    let d = backoff.next_delay();
                    tracing::warn!(
                        "acquiring a subnet lease failed (attempt {attempt}, retrying in \
                         {d:.1?}): {e:#}"
                    );
                    if !sleep_or_shutdown(shutdown, d).await {
                        return None;
                    }
                    attempt += 1;
                }
                other => return Some(other),
            }
        }
    }

    /// One decision on one list. `Ok(None)`: list again.
    async fn try_acquire(
        &self,
        conf: &NetConf,
        attrs: &LeaseAttrs,
        previous: Previous,
        snapshot: &Snapshot,
    ) -> Result<Option<OwnLease>> {
        let mut existing: Vec<ExistingLease> = snapshot
            .leases
            .iter()
            .map(|l| ExistingLease::from_attrs(l.key, &l.attrs))
            .collect();
        // A key with a bad value still holds its subnet.
        existing.extend(snapshot.malformed.iter().filter_map(|m| {
            m.subnet.map(|key| ExistingLease {
                key,
                public_ip: None,
            })
        }));
        let mut pick = |n: usize| fastrand::usize(..n.max(1));
        let choice = alloc::choose(conf, &existing, attrs.public_ip, previous, &mut pick)
            .map_err(|e| anyhow!("failed to acquire lease: {e}"))?;
        if let Choice::Create(new) = &choice {
            if !new.previous_v4
                && let Some(why) = alloc::previous_refusal(conf, &existing, previous.v4)
            {
                tracing::warn!("{why}");
            }
            if let (Some(prev), Some(got)) = (previous.v6, new.key.v6)
                && !new.previous_v6
            {
                tracing::warn!(
                    "the previous IPv6 subnet {prev} (from subnet.env) does not fit the \
                     config or is held by another lease; this node gets {got}"
                );
            }
        }
        match choice {
            Choice::ReuseOwn(key) => {
                let Some(entry) = snapshot.leases.iter().find(|l| l.key == key) else {
                    bail!("internal: chosen lease {key} is not in the list");
                };
                self.reuse(entry, attrs).await.map(Some)
            }
            Choice::DeleteIncompatible(key) => {
                tracing::info!(
                    "Found lease ({key}) for current IP ({}) but not compatible with current \
                     config, deleting",
                    attrs.public_ip
                );
                let seen = snapshot
                    .leases
                    .iter()
                    .find(|l| l.key == key)
                    .map(|l| (l.mod_revision, l.lease_id));
                match seen {
                    Some((rev, lease_id)) => {
                        self.reg
                            .delete_lease(&key, Some(rev))
                            .await
                            .with_context(|| format!("deleting incompatible lease {key}"))?;
                        if lease_id != 0 {
                            self.reg.revoke(lease_id).await.with_context(|| {
                                format!("revoking the etcd lease of deleted lease {key}")
                            })?;
                        }
                    }
                    None => {
                        self.reg
                            .delete_lease(&key, None)
                            .await
                            .with_context(|| format!("deleting incompatible lease {key}"))?;
                    }
                }
                Ok(None)
            }
            Choice::Create(NewLease {
                key,
                previous_v4,
                previous_v6,
            }) => {
                let (lease, created_at) = self.create_at(&key, attrs).await?;
                if key.v6.is_some() {
                    self.yield_if_overlapped(&lease, created_at).await?;
                }
                if previous_v4 && (previous_v6 || key.v6.is_none()) {
                    tracing::info!("Found previously leased subnet ({key}), reusing");
                } else {
                    tracing::info!(
                        "Allocated lease ({key}) to current node ({})",
                        fmt_attrs(attrs)
                    );
                }
                Ok(Some(lease))
            }
        }
    }

    /// Creates `key` (compare-and-swap on the key); returns the lease and the revision that
    /// created it.
    async fn create_at(&self, key: &SubnetKey, attrs: &LeaseAttrs) -> Result<(OwnLease, i64)> {
        let (lease_id, ttl, rev) = self
            .reg
            .create_lease(key, attrs, self.ttl_secs())
            .await
            .with_context(|| format!("creating lease {key}"))?;
        Ok((
            OwnLease {
                key: *key,
                lease_id,
                expires: Some(expiry(ttl)),
                granted_ttl: ttl,
            },
            rev,
        ))
    }

    /// A dual-stack key's compare-and-swap guards only that exact key: another node that
    /// listed at the same moment can create a key with the same IPv4 and another IPv6 subnet
    /// (or the other way round). So after creating one, list the keys again; if a lease created
    /// earlier overlaps either part, ours is deleted and the caller lists and picks again (the
    /// later creator always sees the earlier one, so exactly one of two yields).
    async fn yield_if_overlapped(&self, own: &OwnLease, created_at: i64) -> Result<()> {
        let keys = self
            .reg
            .lease_create_revisions()
            .await
            .context("listing subnet keys after creating a dual-stack lease")?;
        let overlaps = |a: &SubnetKey, b: &SubnetKey| {
            let v4 = match (a.v4, b.v4) {
                (Some(x), Some(y)) => x.contains(&y.network()) || y.contains(&x.network()),
                _ => false,
            };
            let v6 = match (a.v6, b.v6) {
                (Some(x), Some(y)) => x.contains(&y.network()) || y.contains(&x.network()),
                _ => false,
            };
            v4 || v6
        };
        let Some((first, _)) = keys
            .iter()
            .filter(|(k, rev)| *k != own.key && *rev < created_at && overlaps(k, &own.key))
            .min_by_key(|(_, rev)| *rev)
        else {
            return Ok(());
        };
        tracing::info!(
            "lease {} overlaps {first}, created just before it by another node: giving it up",
            own.key
        );
        self.reg
            .delete_lease(&own.key, None)
            .await
            .with_context(|| format!("deleting overlapping lease {}", own.key))?;
        if let Err(e) = self.reg.revoke(own.lease_id).await {
            tracing::warn!("revoking the etcd lease of {}: {e}", own.key);
        }
        Err(RegistryError::Conflict {
            key: own.key.to_string(),
            what: "overlaps a lease created just before it",
        })
        .context("creating a dual-stack lease")
    }

    /// Keeps a lease that carries our public IP: a reservation stays one; a leased key keeps
    /// its etcd lease (one KeepAlive tells its expiry), so renewal needs no new lease.
    async fn reuse(&self, entry: &LeaseEntry, attrs: &LeaseAttrs) -> Result<OwnLease> {
        let key = entry.key;
        tracing::info!(
            "Found lease ({key}) for current IP ({}), reusing",
            attrs.public_ip
        );
        if entry.is_reservation() {
            if entry.attrs != *attrs {
                self.reg
                    .update_lease(&key, attrs, entry.mod_revision, 0)
                    .await
                    .with_context(|| format!("updating reserved lease {key}"))?;
            }
            tracing::info!("Lease {key} is a reservation (no etcd lease): kept without a TTL");
            return Ok(OwnLease {
                key,
                lease_id: 0,
                expires: None,
                granted_ttl: 0,
            });
        }
        // One TimeToLive tells when the existing etcd lease runs out (no new lease).
        let ttl = self
            .reg
            .lease_time_to_live(entry.lease_id)
            .await
            .with_context(|| format!("reading etcd lease {:x} of {key}", entry.lease_id))?;
        let Some((remaining, granted)) = ttl else {
            // It expired between the list and now: list again.
            return Err(anyhow::Error::new(RegistryError::Conflict {
                key: key.to_string(),
                what: "its etcd lease just expired",
            }));
        };
        if entry.attrs != *attrs {
            self.reg
                .update_lease(&key, attrs, entry.mod_revision, entry.lease_id)
                .await
                .with_context(|| format!("updating lease {key}"))?;
        }
        Ok(OwnLease {
            key,
            lease_id: entry.lease_id,
            expires: Some(expiry(remaining)),
            granted_ttl: granted,
        })
    }

    /// Gets a lease again after the own key was deleted: `prefer` (the old subnet) if it is
    /// still free, else another one. The old etcd lease is revoked first (not-found ignored).
    /// Requires a previous [`Self::acquire`].
    pub async fn reacquire(&mut self, prefer: SubnetKey) -> Result<Reacquired> {
        let Some((conf, attrs)) = self.last.clone() else {
            bail!("reacquire before acquire");
        };
        if let Some(held) = self.held.take().filter(|h| h.lease_id != 0) {
            match self.reg.revoke(held.lease_id).await {
                Ok(true) => tracing::info!("revoked old etcd lease {:x}", held.lease_id),
                Ok(false) => {}
                Err(e) => {
                    self.held = Some(held);
                    return Err(e).context("revoking the old etcd lease");
                }
            }
        }
        let (lease, snapshot) = self.acquire(&conf, &attrs, Previous::of(prefer)).await?;
        let subnet_changed = lease.key != prefer;
        if subnet_changed {
            tracing::warn!(
                "subnet {prefer} is taken by another node; this node now has {}",
                lease.key
            );
        } else {
            tracing::info!("re-acquired subnet {}", lease.key);
        }
        Ok(Reacquired {
            lease,
            snapshot,
            subnet_changed,
        })
    }

    /// A future that keeps `own`'s etcd lease alive: one KeepAlive when `expires -
    /// renew_margin` is reached, retried every `renew_retry` on failure. Ends on shutdown or
    /// when etcd reports the lease gone. A reservation needs nothing: it waits for shutdown.
    pub fn renewal(
        &self,
        own: OwnLease,
        shutdown: CancellationToken,
    ) -> impl Future<Output = RenewalEnd> + Send + 'static {
        renew_loop(
            self.reg.clone(),
            own,
            self.timing,
            shutdown,
            self.metrics.clone(),
        )
    }

    /// Watches `<prefix>/subnets` from `from_revision` (usually `snapshot.revision + 1`) in a
    /// spawned task that stops on `shutdown` or when the receiver is dropped.
    pub fn watch(
        &self,
        from_revision: i64,
        shutdown: CancellationToken,
    ) -> mpsc::Receiver<WatchEvent> {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(watch_loop(self.reg.clone(), from_revision, tx, shutdown));
        rx
    }
}

/// Errors a retry may cure (etcd unreachable, timeouts).
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<RegistryError>()
            .is_some_and(RegistryError::is_transient)
    })
}

/// Lost races (retry after re-listing) vs real errors.
fn is_race(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<RegistryError>(),
            Some(RegistryError::Conflict { .. })
        )
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn backoff_is_jittered_capped_and_resettable() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut cap = Duration::from_millis(100);
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(
                d >= cap / 2 && d <= cap,
                "{d:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
            cap = (cap * 2).min(Duration::from_secs(5));
        }
        assert!(b.next_delay() >= Duration::from_millis(2500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn retry_until_retries_then_returns_and_stops_on_shutdown() {
        let stop = CancellationToken::new();
        let calls = AtomicU32::new(0);
        let got = retry_until(&stop, "test op", || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n < 2 {
                Err(format!("failure {n}"))
            } else {
                Ok(n)
            }
        })
        .await;
        assert_eq!(got, Some(2));
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        stop.cancel();
        let got: Option<()> = retry_until(&stop, "never", || async { Err::<(), _>("down") }).await;
        assert_eq!(got, None);
    }
}
