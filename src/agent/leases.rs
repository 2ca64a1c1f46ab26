//! The agent's lease half: the peer table, the node's own lease and every call to the lease
//! source, behind one [`Leases::next`] that the control loop awaits.
//!
//! Every remote call runs in a task of its own, never in the control task: the renewal, a
//! re-acquire after the own lease was lost, a write-back of our value over a foreign one, and
//! the re-publish of new attributes after a backend switch. The control task only receives
//! their results, so drift repair, peer changes and `/healthz` go on while the source is slow
//! or down.
//!
//! Decisions made here, from the watch stream (each unit-tested against the in-memory source
//! of `weft-testkit`, see tests/agent_leases.rs):
//! - a peer's put or delete → [`Effect::Peers`] (the data plane plans only that peer);
//! - a resync → the table is replaced ([`Effect::Full`]); a malformed value keeps its key's
//!   previous entry, so a bad write never removes a healthy peer;
//! - our key deleted, our etcd lease expired, or our key missing from a resync → re-acquire in
//!   the background (same subnet when free); the data plane keeps running meanwhile;
//! - our key overwritten with another or a malformed value → our value written back;
//! - a disconnect → nothing changes (the source resumes or resyncs by itself);
//! - the config changed → handed to the agent ([`Update::config`]).
use std::time::Duration;

use net_conf::alloc::Previous;
use net_conf::{LeaseAttrs, NetConf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::agent::metrics::{Metrics, WatchEventKind};
use crate::lease::table::{Change, LeaseTable};
use crate::lease::{Backoff, LeaseSource, OwnLease, Reacquired, RenewalEnd, Snapshot, WatchEvent};

/// Longest wait between attempts of a background call while the source does not answer: a
/// refused or timed-out RPC costs next to nothing, and the agent should carry on within about
/// a second of the source's return.
pub const RETRY_MAX: Duration = Duration::from_secs(1);
/// Attempts of a write-back of our lease value before it is left to the next event on the key.
/// The longest wait between two attempts to write our value back.
const REASSERT_RETRY_MAX: Duration = Duration::from_secs(10);
/// A burst with more peer changes than this is planned in full (one pass over the table beats
/// that many per-peer plans, and a resync-sized burst is rare).
pub const MAX_DELTA_CHANGES: usize = 64;

/// What a batch of lease events asks of the data plane.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Effect {
    #[default]
    Nothing,
    /// Plain peer changes, in order: the incremental path may serve them.
    Peers(Vec<Change>),
    /// Plan from the whole table.
    Full,
}

impl Effect {
    /// Adds `next` to this effect: peer changes accumulate, a full plan absorbs everything, and
    /// a burst of more than [`MAX_DELTA_CHANGES`] peer changes becomes a full plan.
    pub fn add(&mut self, next: Effect) {
        *self = match (std::mem::take(self), next) {
            (Effect::Full, _) | (_, Effect::Full) => Effect::Full,
            (Effect::Nothing, other) | (other, Effect::Nothing) => other,
            (Effect::Peers(mut a), Effect::Peers(b)) => {
                a.extend(b);
                if a.len() > MAX_DELTA_CHANGES {
                    Effect::Full
                } else {
                    Effect::Peers(a)
                }
            }
        };
    }
}

/// One batch of results for the control loop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// What the peers need.
    pub effect: Effect,
    /// Our lease moved to another subnet (re-acquired or re-published on a new one): the
    /// device address, firewall rules and subnet.env must follow, then a full plan.
    pub moved: bool,
    /// The source's config changed: `Some(Some(text))` written, `Some(None)` deleted.
    pub config: Option<Option<String>>,
}

impl Update {
    fn effect(effect: Effect) -> Update {
        Update {
            effect,
            ..Update::default()
        }
    }

    /// Merges a later update of the same batch into this one.
    fn add(&mut self, next: Update) {
        self.effect.add(next.effect);
        self.moved |= next.moved;
        if next.config.is_some() {
            self.config = next.config;
        }
    }
}

/// A finished background call that changes what we hold: the source value it ran on (it
/// holds the new lease) and what it got.
type Held<S> = Option<(S, Reacquired)>;
type Published<S> = Option<(S, OwnLease, LeaseAttrs)>;

/// The lease table, the own lease and the tasks that keep it. See the module doc.
pub struct Leases<S: LeaseSource> {
    source: S,
    own: OwnLease,
    /// The value we publish (after a switch: the new backend's, even while the re-publish runs).
    attrs: LeaseAttrs,
    /// The config our lease was made for (re-publish on the same subnet needs it).
    conf: NetConf,
    table: LeaseTable,
    watch: mpsc::Receiver<WatchEvent>,
    /// The renewal of `own`; none while a re-acquire runs.
    renewal: Option<JoinHandle<RenewalEnd>>,
    reacquiring: Option<JoinHandle<Held<S>>>,
    republishing: Option<JoinHandle<Published<S>>>,
    reasserting: Option<JoinHandle<()>>,
    /// A re-publish asked for while a re-acquire ran: started when it is done.
    republish_due: bool,
    metrics: Option<Metrics>,
    shutdown: CancellationToken,
}

impl<S: LeaseSource> Leases<S> {
    /// Starts keeping `own` (just acquired with `attrs` for `conf`): the table from the
    /// acquire's `snapshot`, the watch from the revision after it, and the renewal.
    pub fn start(
        source: S,
        own: OwnLease,
        attrs: LeaseAttrs,
        conf: NetConf,
        snapshot: &Snapshot,
        metrics: Option<Metrics>,
        shutdown: CancellationToken,
    ) -> Leases<S> {
        let mut table = LeaseTable::new(Some(own.key));
        table.reset(snapshot);
        let watch = source.watch(snapshot.revision + 1, shutdown.clone());
        let renewal = Some(tokio::spawn(source.renewal(own, shutdown.clone())));
        Leases {
            source,
            own,
            attrs,
            conf,
            table,
            watch,
            renewal,
            reacquiring: None,
            republishing: None,
            reasserting: None,
            republish_due: false,
            metrics,
            shutdown,
        }
    }

    pub fn own(&self) -> &OwnLease {
        &self.own
    }

    /// The lease value we publish.
    pub fn attrs(&self) -> &LeaseAttrs {
        &self.attrs
    }

    pub fn table(&self) -> &LeaseTable {
        &self.table
    }

    /// Lends the table out (the first peer-cache write streams it on a blocking thread, no
    /// copy); [`Self::restore_table`] gives it back. Only between events: while it is out the
    /// table is empty.
    pub fn take_table(&mut self) -> LeaseTable {
        std::mem::replace(&mut self.table, LeaseTable::new(Some(self.own.key)))
    }

    pub fn restore_table(&mut self, table: LeaseTable) {
        self.table = table;
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    /// True while the own lease is being re-acquired.
    pub fn reacquiring(&self) -> bool {
        self.reacquiring.is_some()
    }

    /// True while new lease attributes wait to be published.
    pub fn republishing(&self) -> bool {
        self.republishing.is_some() || self.republish_due
    }

    /// Publishes `attrs` on our subnet (after a backend switch) in the background; `conf` is
    /// the config they were made for. The result arrives through [`Self::next`].
    pub fn republish(&mut self, conf: NetConf, attrs: LeaseAttrs) {
        self.conf = conf;
        self.attrs = attrs;
        if let Some(task) = self.republishing.take() {
            task.abort();
        }
        if self.reacquiring.is_some() {
            // The re-acquire publishes the value it started with; ours follows it.
            self.republish_due = true;
            return;
        }
        self.republish_due = false;
        let mut source = self.source.clone();
        let (conf, attrs) = (self.conf.clone(), self.attrs.clone());
        let prefer = self.own.key;
        let shutdown = self.shutdown.clone();
        self.republishing = Some(tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(100), RETRY_MAX);
            loop {
                let res = tokio::select! {
                    r = source.acquire(&conf, &attrs, Previous::of(prefer), None) => r,
                    () = shutdown.cancelled() => return None,
                };
                match res {
                    Ok((own, _)) => return Some((source, own, attrs)),
                    Err(e) => failed(&mut backoff, &shutdown, "re-publishing our lease", e).await?,
                }
            }
        }));
    }

    /// The next batch of results for the data plane; `None` on shutdown. Events that arrive
    /// together (a burst of watch events) are returned as one batch.
    pub async fn next(&mut self) -> Option<Update> {
        loop {
            let update = tokio::select! {
                () = self.shutdown.cancelled() => return None,
                ev = self.watch.recv() => {
                    // The watch ends only on shutdown.
                    let ev = ev?;
                    let mut update = self.on_event(ev);
                    while let Ok(ev) = self.watch.try_recv() {
                        update.add(self.on_event(ev));
                    }
                    update
                }
                end = wait(&mut self.renewal) => self.renewal_ended(end),
                got = wait(&mut self.reacquiring) => self.reacquired(got)?,
                got = wait(&mut self.republishing) => self.republished(got)?,
                _ = wait(&mut self.reasserting) => Update::default(),
            };
            if update != Update::default() {
                return Some(update);
            }
        }
    }

    /// What one watch event changes.
    fn on_event(&mut self, ev: WatchEvent) -> Update {
        if let Some(m) = &self.metrics {
            match &ev {
                WatchEvent::Put(_) => m.watch_event(WatchEventKind::Put),
                WatchEvent::Delete(_) => m.watch_event(WatchEventKind::Delete),
                WatchEvent::Malformed { .. } => m.watch_event(WatchEventKind::Malformed),
                WatchEvent::Resync(_) => m.watch_event(WatchEventKind::Resync),
                WatchEvent::Reconnected => m.etcd_reconnected(),
                WatchEvent::Disconnected | WatchEvent::Config(_) => {}
            }
        }
        let own = self.own.key;
        match ev {
            WatchEvent::Delete(key) if key == own => {
                warn!(
                    "our lease {key} was deleted from the lease store; re-acquiring (the data plane keeps running)"
                );
                self.reacquire();
                Update::default()
            }
            WatchEvent::Put(ref entry) if entry.key == own => {
                self.table.apply(&ev);
                // During a re-acquire, someone else may have taken our old key: the
                // re-acquire's compare-and-swap decides. During a re-publish the value is
                // being replaced anyway.
                if entry.attrs != self.attrs && !self.reacquiring() && !self.republishing() {
                    warn!(
                        "our lease {} was overwritten by another writer ({}); writing ours back",
                        entry.key,
                        entry.attrs.to_json()
                    );
                    self.reassert();
                }
                Update::default()
            }
            WatchEvent::Malformed {
                subnet: Some(key),
                ref reason,
                ..
            } if key == own => {
                if !self.reacquiring() {
                    warn!(
                        "our lease {key} was overwritten with a malformed value ({reason}); writing ours back"
                    );
                    self.reassert();
                }
                Update::default()
            }
            WatchEvent::Resync(snapshot) => {
                info!(
                    "lease watch resynchronised at revision {}",
                    snapshot.revision
                );
                let changed = !self.table.reset(&snapshot).is_empty();
                let listed = snapshot.leases.iter().find(|l| l.key == own);
                let malformed = snapshot.malformed.iter().any(|m| m.subnet == Some(own));
                if listed.is_none() && !malformed {
                    warn!("our lease {own} is gone from the lease store; re-acquiring");
                    self.reacquire();
                    return Update::effect(Effect::Full);
                }
                if !self.reacquiring()
                    && !self.republishing()
                    && (malformed || listed.is_some_and(|l| l.attrs != self.attrs))
                {
                    warn!(
                        "our lease {own} holds another value in the lease store; writing ours back"
                    );
                    self.reassert();
                }
                Update::effect(if changed {
                    Effect::Full
                } else {
                    Effect::Nothing
                })
            }
            WatchEvent::Disconnected => {
                warn!("lease watch disconnected; the data plane stays as it is while reconnecting");
                Update::default()
            }
            WatchEvent::Reconnected => {
                info!("lease watch reconnected");
                Update::default()
            }
            WatchEvent::Config(text) => Update {
                config: Some(text),
                ..Update::default()
            },
            WatchEvent::Put(_) | WatchEvent::Delete(_) | WatchEvent::Malformed { .. } => {
                match self.table.apply(&ev) {
                    Some(change) => Update::effect(Effect::Peers(vec![change])),
                    None => Update::default(),
                }
            }
        }
    }

    fn renewal_ended(&mut self, end: Result<RenewalEnd, tokio::task::JoinError>) -> Update {
        match end {
            Ok(RenewalEnd::LeaseLost { lease_id }) => {
                warn!(
                    "lease {lease_id:x} of {} is gone; re-acquiring",
                    self.own.key
                );
                self.reacquire();
            }
            // Only on shutdown; `next` returns None then.
            Ok(RenewalEnd::Shutdown) => {}
            Err(e) => {
                error!("lease renewal task failed: {e}; restarting it");
                self.renewal = Some(tokio::spawn(
                    self.source.renewal(self.own, self.shutdown.clone()),
                ));
            }
        }
        Update::default()
    }

    /// Starts re-acquiring the own lease in the background (the renewal stops meanwhile). A
    /// re-acquire already running is left to finish; a re-publish in flight is redone after.
    fn reacquire(&mut self) {
        if self.reacquiring.is_some() {
            return;
        }
        if let Some(task) = self.renewal.take() {
            task.abort();
        }
        if let Some(task) = self.republishing.take() {
            task.abort();
            self.republish_due = true;
        }
        let mut source = self.source.clone();
        let prefer = self.own.key;
        let shutdown = self.shutdown.clone();
        self.reacquiring = Some(tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(100), RETRY_MAX);
            loop {
                let res = tokio::select! {
                    r = source.reacquire(prefer) => r,
                    () = shutdown.cancelled() => return None,
                };
                match res {
                    Ok(got) => return Some((source, got)),
                    Err(e) => failed(&mut backoff, &shutdown, "re-acquiring our lease", e).await?,
                }
            }
        }));
    }

    /// Takes over a finished re-acquire: its source value (holding the new lease), a new
    /// renewal, and the table from its list.
    fn reacquired(&mut self, got: Result<Held<S>, tokio::task::JoinError>) -> Option<Update> {
        let (source, got) = match got {
            Ok(Some(done)) => done,
            // Shutdown.
            Ok(None) => return None,
            Err(e) => {
                error!("the re-acquire task failed: {e}; starting it again");
                self.reacquire();
                return Some(Update::default());
            }
        };
        self.source = source;
        self.own = got.lease;
        self.renewal = Some(tokio::spawn(
            self.source.renewal(self.own, self.shutdown.clone()),
        ));
        let moved = self.table.own() != Some(self.own.key);
        self.table.set_own(Some(self.own.key));
        self.table.reset(&got.snapshot);
        if std::mem::take(&mut self.republish_due) {
            self.republish(self.conf.clone(), self.attrs.clone());
        }
        Some(Update {
            effect: Effect::Full,
            moved,
            config: None,
        })
    }

    /// Takes over a finished re-publish.
    fn republished(&mut self, got: Result<Published<S>, tokio::task::JoinError>) -> Option<Update> {
        let (source, own, attrs) = match got {
            Ok(Some(done)) => done,
            Ok(None) => return None,
            Err(e) if e.is_cancelled() => return Some(Update::default()),
            Err(e) => {
                error!("the re-publish task failed: {e}; starting it again");
                self.republish(self.conf.clone(), self.attrs.clone());
                return Some(Update::default());
            }
        };
        self.source = source;
        let moved = own.key != self.own.key;
        if moved {
            warn!(
                "re-publishing moved us from {} to {}",
                self.own.key, own.key
            );
            if let Some(task) = self.renewal.take() {
                task.abort();
            }
            self.renewal = Some(tokio::spawn(
                self.source.renewal(own, self.shutdown.clone()),
            ));
            self.table.set_own(Some(own.key));
        }
        self.own = own;
        info!("published lease {}: {}", self.own.key, attrs.to_json());
        Some(Update {
            effect: if moved { Effect::Full } else { Effect::Nothing },
            moved,
            config: None,
        })
    }

    /// Writes our value back over a foreign one on our key, in the background: a few attempts,
    /// then it is left to the next event on the key. One at a time.
    fn reassert(&mut self) {
        if self.reasserting.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let source = self.source.clone();
        let (own, attrs) = (self.own, self.attrs.clone());
        let shutdown = self.shutdown.clone();
        self.reasserting = Some(tokio::spawn(async move {
            let key = own.key;
            // Until the source takes it (or says the key is gone): giving up would leave peers
            // with another value until something else changes it.
            let mut backoff = Backoff::new(Duration::from_millis(50), REASSERT_RETRY_MAX);
            for attempt in 1u64.. {
                let res = tokio::select! {
                    r = source.reassert(&own, &attrs) => r,
                    () = shutdown.cancelled() => return,
                };
                match res {
                    Ok(true) => {
                        info!("wrote our lease {key} back: {}", attrs.to_json());
                        return;
                    }
                    Ok(false) => {
                        info!("our lease {key} is gone; the delete event re-acquires it");
                        return;
                    }
                    Err(e) => {
                        let wait = backoff.next_delay();
                        warn!(
                            "writing our lease {key} back failed (attempt {attempt}, retrying in {wait:.1?}): {e:#}"
                        );
                        if !crate::lease::sleep_or_shutdown(&shutdown, wait).await {
                            return;
                        }
                    }
                }
            }
        }));
    }

    /// Stops the background tasks (shutdown): the lease stays in the store.
    pub fn stop(&mut self) {
        for task in [self.renewal.take()].into_iter().flatten() {
            task.abort();
        }
        for task in [self.reacquiring.take()].into_iter().flatten() {
            task.abort();
        }
        for task in [self.republishing.take()].into_iter().flatten() {
            task.abort();
        }
        for task in [self.reasserting.take()].into_iter().flatten() {
            task.abort();
        }
    }
}

impl<S: LeaseSource> Drop for Leases<S> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits for `task`, if there is one (else never ready), and clears it when done.
async fn wait<T>(task: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    let Some(handle) = task.as_mut() else {
        return std::future::pending().await;
    };
    let out = handle.await;
    *task = None;
    out
}

/// Logs a failed attempt of a background call and waits for the next one (capped jittered
/// backoff, 100 ms → [`RETRY_MAX`]); `None` on shutdown.
async fn failed(
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
    what: &str,
    e: anyhow::Error,
) -> Option<()> {
    let wait = backoff.next_delay();
    warn!("{what} failed (retrying in {wait:.1?}): {e:#}");
    crate::lease::sleep_or_shutdown(shutdown, wait)
        .await
        .then_some(())
}
