//! The Node watch as a lease stream: watch from the last resourceVersion seen (events and
//! bookmarks move it), re-watch when the server ends a watch, re-list and resync on 410 Gone,
//! report a broken connection and its return. Each event is decoded into a
//! [`NodeLite`](super::node::NodeLite) and turned into a lease event at once.
use std::time::Duration;

use futures::StreamExt as _;
use kube::api::WatchParams;
use kube::core::{Request, WatchEvent as KubeEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::node::{NodeLease, NodeLite};
use super::source::KubeSource;
use super::{api_error, status_code};
use crate::lease::{Backoff, WatchEvent, sleep_or_shutdown};

/// How long one watch request lasts before the server ends it (client-go picks 5–10 min).
const WATCH_TIMEOUT_SECS: u32 = 290;

pub(super) fn spawn(
    source: KubeSource,
    resource_version: i64,
    shutdown: CancellationToken,
) -> mpsc::Receiver<WatchEvent> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        tokio::select! {
            () = run(source, resource_version.to_string(), &tx, &shutdown) => {}
            () = shutdown.cancelled() => {}
            () = tx.closed() => {}
        }
    });
    rx
}

/// How one watch request ended.
enum End {
    /// The server closed it (timeout): watch again from where it stopped.
    Closed,
    /// 410 Gone: the resourceVersion is compacted away.
    Expired,
    /// The connection failed or the server refused.
    Failed(String),
}

async fn run(
    source: KubeSource,
    mut rv: String,
    tx: &mpsc::Sender<WatchEvent>,
    shutdown: &CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut disconnected = false;
    loop {
        let end = watch_once(&source, &mut rv, tx, &mut disconnected).await;
        match end {
            End::Closed => {
                backoff.reset();
                continue;
            }
            End::Expired => {
                info!(
                    "the node watch fell behind a compaction (410 Gone at resourceVersion {rv}); listing again"
                );
                loop {
                    match source.list_nodes().await {
                        Ok(snapshot) => {
                            rv = snapshot.revision.to_string();
                            if tx.send(WatchEvent::Resync(snapshot)).await.is_err() {
                                return;
                            }
                            if disconnected {
                                disconnected = false;
                                let _ = tx.send(WatchEvent::Reconnected).await;
                            }
                            backoff.reset();
                            break;
                        }
                        Err(e) => {
                            if !disconnected {
                                disconnected = true;
                                let _ = tx.send(WatchEvent::Disconnected).await;
                            }
                            let wait = backoff.next_delay();
                            warn!("{e:#}; retrying in {wait:.1?}");
                            if !sleep_or_shutdown(shutdown, wait).await {
                                return;
                            }
                        }
                    }
                }
            }
            End::Failed(why) => {
                if !disconnected {
                    disconnected = true;
                    if tx.send(WatchEvent::Disconnected).await.is_err() {
                        return;
                    }
                }
                let wait = backoff.next_delay();
                warn!("{why}; watching again in {wait:.1?}");
                if !sleep_or_shutdown(shutdown, wait).await {
                    return;
                }
            }
        }
    }
}

async fn watch_once(
    source: &KubeSource,
    rv: &mut String,
    tx: &mpsc::Sender<WatchEvent>,
    disconnected: &mut bool,
) -> End {
    let wp = WatchParams::default().timeout(WATCH_TIMEOUT_SECS);
    let req = match Request::new("/api/v1/nodes").watch(&wp, rv) {
        Ok(r) => r,
        Err(e) => return End::Failed(format!("build the watch request: {e}")),
    };
    let stream = match source.client().request_events::<NodeLite>(req).await {
        Ok(s) => s,
        Err(e) if status_code(&e) == Some(410) => return End::Expired,
        Err(e) => return End::Failed(api_error("watch nodes", &e)),
    };
    if *disconnected {
        *disconnected = false;
        info!("node watch re-established at resourceVersion {rv}");
        if tx.send(WatchEvent::Reconnected).await.is_err() {
            return End::Closed;
        }
    }
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(e) => e,
            Err(e) => return End::Failed(api_error("node watch stream", &e)),
        };
        let lease_event = match event {
            KubeEvent::Added(n) | KubeEvent::Modified(n) => {
                *rv = n.metadata.resource_version.clone();
                put(source, &n)
            }
            KubeEvent::Deleted(n) => {
                *rv = n.metadata.resource_version.clone();
                debug!("node {} deleted", n.metadata.name);
                delete_of(source, &n)
            }
            KubeEvent::Bookmark(b) => {
                *rv = b.metadata.resource_version;
                None
            }
            KubeEvent::Error(status) if status.code == 410 => return End::Expired,
            KubeEvent::Error(status) => {
                return End::Failed(format!(
                    "node watch: {} {}: {}",
                    status.code, status.reason, status.message
                ));
            }
        };
        if let Some(ev) = lease_event
            && tx.send(ev).await.is_err()
        {
            return End::Closed;
        }
    }
    End::Closed
}

/// A Node added or changed, as a lease event. A node that is (no longer) a flannel node but
/// has a podCIDR is a delete of that subnet (a no-op for the agent when it held no lease
/// there); a malformed one is reported and never removes anything.
fn put(source: &KubeSource, node: &NodeLite) -> Option<WatchEvent> {
    match source.lease_of(node) {
        NodeLease::Lease(l) => Some(WatchEvent::Put(l)),
        NodeLease::Malformed(m) => {
            warn!(
                "ignoring {}: {} (its last good lease, if any, stays)",
                m.key, m.reason
            );
            Some(WatchEvent::Malformed {
                key: m.key,
                reason: m.reason,
                subnet: m.subnet,
            })
        }
        NodeLease::NotALease => delete_of(source, node),
    }
}

/// The delete of the subnet a Node held (its podCIDRs), if it had one.
fn delete_of(source: &KubeSource, node: &NodeLite) -> Option<WatchEvent> {
    source.key_of(node).map(WatchEvent::Delete)
}
