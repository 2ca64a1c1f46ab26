//! The lease watch behind [`SubnetManager::watch`]: every change under `<prefix>/subnets` (and
//! the config key) as [`WatchEvent`]s, resuming after a disconnect from the last seen revision
//! and re-listing after a compaction. No RPC per event.
//!
//! [`SubnetManager::watch`]: super::manager::SubnetManager::watch
use std::time::Duration;

use etcd_client::EventType;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::lease::etcd::registry::Registry;
use crate::lease::{Backoff, WatchEvent, sleep_or_shutdown};

/// Watch reconnect backoff. flannel caps at 5 s; weft caps at 1 s so a watch resumes within
/// about a second of etcd's return (docs/targets.md R1). A refused connection costs next to
/// nothing.
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(100);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A watch that heard nothing from its member for this long asks it for a progress report
/// (etcd ≥ 3.4 answers at once), and a member that answers nothing within another period is
/// taken as gone: a connection whose packets are dropped (a silent partition) is noticed within
/// two periods of the last message, where HTTP/2 keepalive (30 s + 10 s) takes 40 s. Pinging
/// faster is not the answer: etcd closes connections that ping more often than every 5 s
/// (`--grpc-keepalive-min-time`), and a ping is answered by the member's HTTP/2 layer even when
/// the member itself is stuck, where a progress report has to come from its watch machinery. A
/// quiet healthy watch costs one small request and answer per period.
const PROGRESS_PROBE: Duration = Duration::from_secs(3);

/// Turns one etcd watch event into a [`WatchEvent`].
fn convert_event(reg: &Registry, ev: &etcd_client::Event) -> Option<WatchEvent> {
    let kv = ev.kv()?;
    let key_text = String::from_utf8_lossy(kv.key()).into_owned();
    if key_text == reg.config_key() {
        return Some(WatchEvent::Config(match ev.event_type() {
            EventType::Put => Some(String::from_utf8_lossy(kv.value()).into_owned()),
            EventType::Delete => None,
        }));
    }
    if !key_text.starts_with(&reg.subnets_prefix()) {
        // Something else under the prefix (another tool's key): not ours to judge.
        tracing::debug!("ignoring {key_text}: neither the config nor a lease");
        return None;
    }
    match ev.event_type() {
        EventType::Put => {
            match reg.parse_entry(kv.key(), kv.value(), kv.lease(), kv.mod_revision()) {
                Ok(entry) => Some(WatchEvent::Put(entry)),
                Err(m) => {
                    tracing::warn!("ignoring malformed lease {}: {}", m.key, m.reason);
                    Some(WatchEvent::Malformed {
                        key: m.key,
                        reason: m.reason,
                        subnet: m.subnet,
                    })
                }
            }
        }
        EventType::Delete => match reg.parse_key(&key_text) {
            Ok(key) => Some(WatchEvent::Delete(key)),
            Err(reason) => {
                let key_text = net_conf::excerpt(&key_text, 400);
                tracing::warn!("ignoring delete of malformed key {key_text}: {reason}");
                Some(WatchEvent::Malformed {
                    key: key_text,
                    reason,
                    subnet: None,
                })
            }
        },
    }
}

/// Why a watch stream ended.
enum StreamEnd {
    Shutdown,
    /// The receiver is gone.
    Closed,
    /// Broken: reconnect from `next_rev`.
    Broken(String),
    /// The member stopped answering without closing the connection: reconnect from `next_rev`
    /// on a new client ([`Registry::with_fresh_client`]).
    Silent(String),
    /// Fell behind a compaction: re-list.
    Compacted(i64),
}

pub(super) async fn watch_loop(
    mut reg: Registry,
    from_revision: i64,
    tx: mpsc::Sender<WatchEvent>,
    shutdown: CancellationToken,
) {
    let mut next_rev = from_revision;
    let mut backoff = Backoff::new(WATCH_BACKOFF_MIN, WATCH_BACKOFF_MAX);
    let mut link = Link {
        connected: true,
        member: None,
    };
    let mut need_resync = false;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        if need_resync {
            match reg.list_leases().await {
                Ok(snapshot) => {
                    tracing::info!(
                        "re-listed {} leases at revision {}",
                        snapshot.leases.len(),
                        snapshot.revision
                    );
                    next_rev = snapshot.revision + 1;
                    need_resync = false;
                    if tx.send(WatchEvent::Resync(snapshot)).await.is_err() {
                        return;
                    }
                    // Changes of the config during the gap are folded into the current value.
                    match reg.get_config().await {
                        Ok(text) => {
                            if tx.send(WatchEvent::Config(Some(text))).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!("re-reading the config after a resync: {e}"),
                    }
                }
                Err(e) => {
                    if link.connected {
                        link.connected = false;
                        if tx.send(WatchEvent::Disconnected).await.is_err() {
                            return;
                        }
                    }
                    let d = backoff.next_delay();
                    tracing::warn!("re-listing leases failed (retrying in {d:.1?}): {e}");
                    if !sleep_or_shutdown(&shutdown, d).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let end = match reg.watch_network(next_rev).await {
            Ok(stream) => {
                run_stream(
                    &reg,
                    stream,
                    &mut next_rev,
                    &tx,
                    &shutdown,
                    &mut link,
                    &mut backoff,
                )
                .await
            }
            Err(e) => StreamEnd::Broken(e.to_string()),
        };
        match end {
            StreamEnd::Shutdown | StreamEnd::Closed => return,
            StreamEnd::Compacted(compact_rev) => {
                tracing::warn!(
                    "watch from revision {next_rev} fell behind compaction \
                     (compacted at {compact_rev}): re-listing"
                );
                need_resync = true;
            }
            StreamEnd::Silent(reason) => {
                if link.connected {
                    link.connected = false;
                    if tx.send(WatchEvent::Disconnected).await.is_err() {
                        return;
                    }
                }
                tracing::warn!(
                    "etcd watch lost ({reason}); reconnecting from revision {next_rev} \
                     on new connections"
                );
                match reg.with_fresh_client().await {
                    Ok(fresh) => reg = fresh,
                    Err(e) => {
                        let d = backoff.next_delay();
                        tracing::warn!("new etcd client for the watch (retrying in {d:.1?}): {e}");
                        if !sleep_or_shutdown(&shutdown, d).await {
                            return;
                        }
                    }
                }
            }
            StreamEnd::Broken(reason) => {
                if link.connected {
                    link.connected = false;
                    if tx.send(WatchEvent::Disconnected).await.is_err() {
                        return;
                    }
                }
                let d = backoff.next_delay();
                tracing::warn!(
                    "etcd watch lost ({reason}); reconnecting from revision {next_rev} in {d:.1?}"
                );
                if !sleep_or_shutdown(&shutdown, d).await {
                    return;
                }
            }
        }
    }
}

/// The watch's connection as the loop knows it: up or not, and the etcd member serving it.
struct Link {
    connected: bool,
    /// `member_id` of the response headers of the current stream.
    member: Option<u64>,
}

async fn run_stream(
    reg: &Registry,
    mut stream: etcd_client::WatchStream,
    next_rev: &mut i64,
    tx: &mpsc::Sender<WatchEvent>,
    shutdown: &CancellationToken,
    link: &mut Link,
    backoff: &mut Backoff,
) -> StreamEnd {
    // Quiet until `deadline`: then ask for a progress report, or give up if one is out.
    let mut deadline = tokio::time::Instant::now() + PROGRESS_PROBE;
    let mut asked = false;
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return StreamEnd::Shutdown,
            m = stream.message() => m,
            _ = tokio::time::sleep_until(deadline) => {
                if asked {
                    return StreamEnd::Silent(format!(
                        "no answer from etcd member {} for {PROGRESS_PROBE:?}",
                        link.member.map_or_else(|| "?".into(), |m| format!("{m:016x}"))
                    ));
                }
                if let Err(e) = stream.request_progress().await {
                    return StreamEnd::Broken(format!("watch progress request: {e}"));
                }
                asked = true;
                deadline = tokio::time::Instant::now() + PROGRESS_PROBE;
                continue;
            }
        };
        // Anything at all (events, the creation, a progress report) shows the member is there.
        asked = false;
        deadline = tokio::time::Instant::now() + PROGRESS_PROBE;
        let resp = match msg {
            Ok(Some(resp)) => resp,
            Ok(None) => return StreamEnd::Broken("stream closed by etcd".into()),
            Err(e) => return StreamEnd::Broken(e.to_string()),
        };
        if resp.compact_revision() != 0 {
            return StreamEnd::Compacted(resp.compact_revision());
        }
        if resp.canceled() {
            let reason = resp.cancel_reason();
            if reason.contains("compacted") {
                return StreamEnd::Compacted(0);
            }
            return StreamEnd::Broken(format!("watch canceled by etcd: {reason}"));
        }
        if resp.created() {
            backoff.reset();
            // Which member serves the watch: with several endpoints, a reconnect may move it.
            let member = resp.header().map(|h| h.member_id());
            if member != link.member {
                match (link.member, member) {
                    (Some(old), Some(new)) => tracing::info!(
                        "etcd watch moved from member {old:016x} to member {new:016x}"
                    ),
                    (None, Some(new)) => tracing::info!("etcd watch on member {new:016x}"),
                    _ => {}
                }
                link.member = member;
            }
            if !link.connected {
                link.connected = true;
                tracing::info!("etcd watch re-established at revision {next_rev}");
                if tx.send(WatchEvent::Reconnected).await.is_err() {
                    return StreamEnd::Closed;
                }
            }
        }
        for ev in resp.events() {
            if let Some(kv) = ev.kv() {
                *next_rev = (*next_rev).max(kv.mod_revision() + 1);
            }
            let Some(we) = convert_event(reg, ev) else {
                continue;
            };
            if tx.send(we).await.is_err() {
                return StreamEnd::Closed;
            }
        }
    }
}
