//! The own lease's renewal loop behind [`SubnetManager::renewal`]: one KeepAlive when
//! `expires - renew_margin` is reached, retried every `renew_retry`; never grants another lease.
//!
//! [`SubnetManager::renewal`]: super::manager::SubnetManager::renewal
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::lease::etcd::manager::LeaseTiming;
use crate::lease::etcd::registry::{Registry, is_lease_not_found};
use crate::lease::{OwnLease, RenewalEnd, sleep_or_shutdown};

/// When a lease granted or renewed now with `ttl_secs` runs out.
pub(super) fn expiry(ttl_secs: i64) -> SystemTime {
    SystemTime::now() + Duration::from_secs(u64::try_from(ttl_secs.max(0)).unwrap_or(0))
}

fn fmt_time(t: SystemTime) -> String {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => format!("{}s since the epoch", d.as_secs()),
        Err(_) => "before the epoch".into(),
    }
}

pub(super) async fn renew_loop(
    reg: Registry,
    own: OwnLease,
    timing: LeaseTiming,
    shutdown: CancellationToken,
    metrics: Option<crate::agent::metrics::Metrics>,
) -> RenewalEnd {
    let report = |at: Option<SystemTime>| {
        if let Some(m) = &metrics {
            m.set_lease_expiry(at);
        }
    };
    let Some(mut expires) = own.expires.filter(|_| own.lease_id != 0) else {
        report(None);
        tracing::info!("lease {} is a reservation: nothing to renew", own.key);
        shutdown.cancelled().await;
        return RenewalEnd::Shutdown;
    };
    // What a KeepAlive restores; the configured TTL if etcd did not say.
    let ttl = if own.granted_ttl > 0 {
        own.granted_ttl
    } else {
        i64::try_from(timing.ttl.as_secs()).unwrap_or(i64::MAX)
    };
    let mut renewed = false;
    report(Some(expires));
    loop {
        let due = expires
            .checked_sub(timing.renew_margin)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut wait = due
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        if renewed {
            // A margin as long as the TTL must not turn into a KeepAlive loop.
            wait = wait.max(Duration::from_secs(1));
        }
        tracing::info!("Waiting for {wait:.1?} to renew lease {}", own.key);
        if !sleep_or_shutdown(&shutdown, wait).await {
            return RenewalEnd::Shutdown;
        }
        loop {
            let res = tokio::select! {
                _ = shutdown.cancelled() => return RenewalEnd::Shutdown,
                r = reg.keep_alive_once(own.lease_id) => r,
            };
            match res {
                Ok(()) => {
                    expires = expiry(ttl);
                    report(Some(expires));
                    renewed = true;
                    tracing::info!(
                        "Lease renewed, new expiration: {} (TTL {ttl}s, lease {})",
                        fmt_time(expires),
                        own.key
                    );
                    break;
                }
                Err(e) if is_lease_not_found(&e) => {
                    tracing::warn!(
                        "etcd lease {:x} of {} is gone (expired or revoked): {e}",
                        own.lease_id,
                        own.key
                    );
                    return RenewalEnd::LeaseLost {
                        lease_id: own.lease_id,
                    };
                }
                Err(e) => {
                    tracing::warn!(
                        "Error renewing lease (trying again in {:.0?}): {e}",
                        timing.renew_retry
                    );
                    if !sleep_or_shutdown(&shutdown, timing.renew_retry).await {
                        return RenewalEnd::Shutdown;
                    }
                }
            }
        }
    }
}
