//! An in-memory lease source: [`MemorySource`] implements `weft::lease::LeaseSource` over a
//! store shared by all its clones, so the agent's lease decisions can be tested without root,
//! a kernel or etcd, with `tokio::time::pause` for the timers.
//!
//! It follows the etcd source's contract where the agent depends on it:
//! - every write bumps one store revision; the watch delivers every change after the revision
//!   it starts from, in order, and resumes after an outage without missing one; behind a
//!   [`compact`](MemorySource::compact)ion it sends a `Resync` with the whole list and the
//!   config instead;
//! - values are kept as text, so a malformed value ([`put_raw`](MemorySource::put_raw)) is
//!   reported as `Malformed` (with its subnet when the key parses), never as a delete;
//! - acquire follows flannel's order (`net_conf::alloc::choose`: our public IP's lease, the
//!   previous subnet, the lowest free subnet) and attaches a lease id that
//!   [`expire`](MemorySource::expire) can end (the key goes with it, as with etcd);
//! - while [`set_down(true)`](MemorySource::set_down), every call fails at once and the watch
//!   reports `Disconnected` (then `Reconnected` when it is back); while
//!   [`set_writes_fail(true)`](MemorySource::set_writes_fail) only the writes fail.
//!
//! Control methods (`put_lease`, `delete_lease`, …) act as the rest of the cluster would and
//! work while the source is down.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Result, bail};
use ipnet::Ipv4Net;
use net_conf::alloc::{self, Choice, ExistingLease, Previous};
use net_conf::{LeaseAttrs, NetConf, SubnetKey};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use weft::lease::{
    LeaseEntry, LeaseSource, Malformed, OwnLease, Reacquired, RenewalEnd, Snapshot, WatchEvent,
};

/// The prefix the keys of [`MemorySource`] live under (as flannel's default).
const PREFIX: &str = "/coreos.com/network";

#[derive(Debug, Clone)]
struct Stored {
    value: String,
    lease_id: i64,
    mod_revision: i64,
}

/// One change, as the watch replays it.
#[derive(Debug, Clone)]
enum Change {
    Put {
        key: String,
        value: String,
        lease_id: i64,
    },
    Delete {
        key: String,
    },
    Config(Option<String>),
}

#[derive(Debug, Default)]
struct Store {
    revision: i64,
    /// Revisions up to this one are compacted away: a watch from at or before it resyncs.
    compacted: i64,
    config: Option<String>,
    /// Lease keys (the part after `<prefix>/subnets/`) and their values.
    leases: BTreeMap<String, Stored>,
    next_lease_id: i64,
    /// Lease ids that are alive.
    alive: std::collections::BTreeSet<i64>,
    history: Vec<(i64, Change)>,
    down: bool,
    /// Writes fail while reads and the watch work (etcd without quorum, out of space).
    writes_fail: bool,
    /// Calls made through the `LeaseSource` interface, by name.
    calls: BTreeMap<&'static str, u64>,
}

impl Store {
    fn record(&mut self, change: Change) -> i64 {
        self.revision += 1;
        self.history.push((self.revision, change));
        self.revision
    }

    fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot {
            revision: self.revision,
            ..Snapshot::default()
        };
        for (key, stored) in &self.leases {
            match entry(key, stored) {
                Ok(e) => snap.leases.push(e),
                Err(m) => snap.malformed.push(m),
            }
        }
        snap
    }

    fn put(&mut self, key: String, value: String, lease_id: i64) {
        let rev = self.record(Change::Put {
            key: key.clone(),
            value: value.clone(),
            lease_id,
        });
        self.leases.insert(
            key,
            Stored {
                value,
                lease_id,
                mod_revision: rev,
            },
        );
    }

    fn delete(&mut self, key: &str) -> bool {
        if self.leases.remove(key).is_none() {
            return false;
        }
        self.record(Change::Delete {
            key: key.to_owned(),
        });
        true
    }
}

/// Parses one stored lease as the etcd source does.
fn entry(key: &str, stored: &Stored) -> std::result::Result<LeaseEntry, Malformed> {
    let full = format!("{PREFIX}/subnets/{key}");
    weft::lease::parse_entry(
        PREFIX,
        full.as_bytes(),
        stored.value.as_bytes(),
        stored.lease_id,
        stored.mod_revision,
    )
}

/// The in-memory lease source. See the module doc.
#[derive(Clone)]
pub struct MemorySource {
    store: Arc<Mutex<Store>>,
    /// Bumped on every change of the store (revision or up/down), for watches and renewals.
    changed: Arc<watch::Sender<u64>>,
    /// This node's last acquire (for `reacquire`) and the lease id it holds.
    last: Option<(NetConf, LeaseAttrs)>,
    held: Option<i64>,
}

impl MemorySource {
    /// A store holding `config` at `<prefix>/config` (None: no config yet).
    pub fn new(config: Option<&str>) -> MemorySource {
        let mut store = Store {
            next_lease_id: 0x1000,
            ..Store::default()
        };
        if let Some(text) = config {
            store.config = Some(text.to_owned());
            store.record(Change::Config(Some(text.to_owned())));
        }
        MemorySource {
            store: Arc::new(Mutex::new(store)),
            changed: Arc::new(watch::Sender::new(0)),
            last: None,
            held: None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock is a test failure already; go on with the data.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the store and wakes watches and renewals.
    fn change<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let out = f(&mut self.lock());
        self.changed.send_modify(|n| *n += 1);
        out
    }

    /// A call through the interface: counted, and refused while down.
    fn call(&self, name: &'static str) -> Result<MutexGuard<'_, Store>> {
        let mut store = self.lock();
        *store.calls.entry(name).or_default() += 1;
        if store.down {
            bail!("memory lease source is down ({name})");
        }
        Ok(store)
    }

    // ---- the rest of the cluster ----

    /// Another node's lease (no expiry).
    pub fn put_lease(&self, key: SubnetKey, attrs: &LeaseAttrs) {
        self.change(|s| s.put(key.to_string(), attrs.to_json(), 0));
    }

    /// Any text under `<prefix>/subnets/<key>`: a malformed key or value.
    pub fn put_raw(&self, key: &str, value: &str) {
        self.change(|s| s.put(key.to_owned(), value.to_owned(), 0));
    }

    /// Deletes a lease key; false when there was none.
    pub fn delete_lease(&self, key: SubnetKey) -> bool {
        self.change(|s| s.delete(&key.to_string()))
    }

    /// Writes (`Some`) or deletes (`None`) `<prefix>/config`.
    pub fn set_config(&self, text: Option<&str>) {
        self.change(|s| {
            s.config = text.map(str::to_owned);
            s.record(Change::Config(s.config.clone()));
        });
    }

    /// Ends lease `id` as an expiry would: the id dies and the keys attached to it go.
    pub fn expire(&self, id: i64) {
        self.change(|s| {
            s.alive.remove(&id);
            let keys: Vec<String> = s
                .leases
                .iter()
                .filter(|(_, v)| v.lease_id == id)
                .map(|(k, _)| k.clone())
                .collect();
            for key in keys {
                s.delete(&key);
            }
        });
    }

    /// Cuts the source off (`true`) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.change(|s| s.down = down);
    }

    /// Forgets the history up to now: a watch that has not seen all of it resyncs.
    pub fn compact(&self) {
        self.change(|s| {
            s.compacted = s.revision;
            s.history.clear();
        });
    }

    /// The value under a lease key, as text.
    pub fn value(&self, key: SubnetKey) -> Option<String> {
        self.lock()
            .leases
            .get(&key.to_string())
            .map(|s| s.value.clone())
    }

    /// The lease id attached to a lease key.
    pub fn lease_id(&self, key: SubnetKey) -> Option<i64> {
        self.lock().leases.get(&key.to_string()).map(|s| s.lease_id)
    }

    /// How many times `name` (`acquire`, `reacquire`, `reassert`, `list`, …) was called.
    pub fn calls(&self, name: &str) -> u64 {
        self.lock().calls.get(name).copied().unwrap_or(0)
    }

    /// A write through the interface: as [`Self::call`], and refused while writes fail.
    fn write_call(&self, name: &'static str) -> Result<MutexGuard<'_, Store>> {
        let store = self.call(name)?;
        if store.writes_fail {
            bail!("memory lease source refuses writes ({name})");
        }
        Ok(store)
    }

    /// Makes writes through the interface fail (`true`) while reads and the watch work.
    pub fn set_writes_fail(&self, fail: bool) {
        self.change(|s| s.writes_fail = fail);
    }

    /// Takes a lease by `choose`'s policy, in the store's lock.
    fn take(
        store: &mut Store,
        conf: &NetConf,
        attrs: &LeaseAttrs,
        previous: Previous,
    ) -> Result<OwnLease> {
        let snap = store.snapshot();
        let existing: Vec<ExistingLease> = snap
            .leases
            .iter()
            .map(|l| ExistingLease::from_attrs(l.key, &l.attrs))
            .collect();
        let key = match alloc::choose(conf, &existing, attrs.public_ip, previous, &mut |_| 0)? {
            Choice::ReuseOwn(key) => key,
            Choice::DeleteIncompatible(key) => bail!("lease {key} does not fit the config"),
            Choice::Create(new) => new.key,
        };
        let lease_id = match store.leases.get(&key.to_string()) {
            Some(stored) if stored.lease_id != 0 && store.alive.contains(&stored.lease_id) => {
                stored.lease_id
            }
            _ => {
                store.next_lease_id += 1;
                let id = store.next_lease_id;
                store.alive.insert(id);
                id
            }
        };
        let value = attrs.to_json();
        if store
            .leases
            .get(&key.to_string())
            .map(|s| (&s.value, s.lease_id))
            != Some((&value, lease_id))
        {
            store.put(key.to_string(), value, lease_id);
        }
        Ok(OwnLease {
            key,
            lease_id,
            expires: None,
            granted_ttl: 86_400,
        })
    }
}

impl LeaseSource for MemorySource {
    fn config_location(&self) -> String {
        format!("memory store (key {PREFIX}/config)")
    }

    async fn config(&self) -> Result<Option<String>> {
        Ok(self.call("config")?.config.clone())
    }

    async fn list_network(&self) -> Result<(Option<String>, Snapshot)> {
        let store = self.call("list_network")?;
        Ok((store.config.clone(), store.snapshot()))
    }

    async fn list(&self) -> Result<Snapshot> {
        Ok(self.call("list")?.snapshot())
    }

    async fn acquire(
        &mut self,
        conf: &NetConf,
        attrs: &LeaseAttrs,
        previous: Previous,
        _listed: Option<Snapshot>,
    ) -> Result<(OwnLease, Snapshot)> {
        let (own, snap) = {
            let mut store = self.write_call("acquire")?;
            let own = Self::take(&mut store, conf, attrs, previous)?;
            (own, store.snapshot())
        };
        self.changed.send_modify(|n| *n += 1);
        self.last = Some((conf.clone(), attrs.clone()));
        self.held = Some(own.lease_id);
        Ok((own, snap))
    }

    async fn reacquire(&mut self, prefer: SubnetKey) -> Result<Reacquired> {
        let Some((conf, attrs)) = self.last.clone() else {
            bail!("reacquire before acquire");
        };
        let held = self.held.take();
        let (lease, snapshot) = {
            let mut store = self.write_call("reacquire")?;
            if let Some(id) = held {
                store.alive.remove(&id);
            }
            let own = Self::take(&mut store, &conf, &attrs, Previous::of(prefer))?;
            (own, store.snapshot())
        };
        self.changed.send_modify(|n| *n += 1);
        self.held = Some(lease.lease_id);
        Ok(Reacquired {
            subnet_changed: lease.key != prefer,
            lease,
            snapshot,
        })
    }

    async fn reassert(&self, own: &OwnLease, attrs: &LeaseAttrs) -> Result<bool> {
        let written = {
            let mut store = self.write_call("reassert")?;
            let key = own.key.to_string();
            if store.leases.contains_key(&key) {
                store.put(key, attrs.to_json(), own.lease_id);
                true
            } else {
                false
            }
        };
        self.changed.send_modify(|n| *n += 1);
        Ok(written)
    }

    fn renewal(
        &self,
        own: OwnLease,
        shutdown: CancellationToken,
    ) -> impl Future<Output = RenewalEnd> + Send + 'static {
        let store = self.store.clone();
        let mut changed = self.changed.subscribe();
        async move {
            loop {
                {
                    let s = store.lock().unwrap_or_else(|e| e.into_inner());
                    if own.lease_id != 0 && !s.alive.contains(&own.lease_id) {
                        return RenewalEnd::LeaseLost {
                            lease_id: own.lease_id,
                        };
                    }
                }
                tokio::select! {
                    () = shutdown.cancelled() => return RenewalEnd::Shutdown,
                    r = changed.changed() => if r.is_err() { return RenewalEnd::Shutdown },
                }
            }
        }
    }

    fn watch(&self, from_revision: i64, shutdown: CancellationToken) -> mpsc::Receiver<WatchEvent> {
        let (tx, rx) = mpsc::channel(1024);
        let store = self.store.clone();
        let mut changed = self.changed.subscribe();
        tokio::spawn(async move {
            let mut next = from_revision;
            let mut connected = true;
            loop {
                let events = {
                    let s = store.lock().unwrap_or_else(|e| e.into_inner());
                    pending(&s, &mut next, &mut connected)
                };
                for ev in events {
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    r = changed.changed() => if r.is_err() { return },
                }
            }
        });
        rx
    }
}

/// The events a watch at `next` has not delivered yet, advancing it.
fn pending(s: &Store, next: &mut i64, connected: &mut bool) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    if s.down {
        if *connected {
            *connected = false;
            out.push(WatchEvent::Disconnected);
        }
        return out;
    }
    if !*connected {
        *connected = true;
        out.push(WatchEvent::Reconnected);
    }
    if *next <= s.compacted && s.revision >= *next {
        out.push(WatchEvent::Resync(s.snapshot()));
        out.push(WatchEvent::Config(s.config.clone()));
        *next = s.revision + 1;
        return out;
    }
    let from = *next;
    for (rev, change) in s.history.iter().filter(|(rev, _)| *rev >= from) {
        out.push(match change {
            Change::Put {
                key,
                value,
                lease_id,
            } => {
                let stored = Stored {
                    value: value.clone(),
                    lease_id: *lease_id,
                    mod_revision: *rev,
                };
                match entry(key, &stored) {
                    Ok(e) => WatchEvent::Put(e),
                    Err(m) => WatchEvent::Malformed {
                        key: m.key,
                        reason: m.reason,
                        subnet: m.subnet,
                    },
                }
            }
            Change::Delete { key } => {
                match SubnetKey::from_etcd_key(&format!("{PREFIX}/subnets/{key}"), PREFIX) {
                    Ok(subnet) => WatchEvent::Delete(subnet),
                    Err(e) => WatchEvent::Malformed {
                        key: key.clone(),
                        reason: e.to_string(),
                        subnet: None,
                    },
                }
            }
            Change::Config(text) => WatchEvent::Config(text.clone()),
        });
        *next = rev + 1;
    }
    out
}

/// A config text of `network` with a backend of `backend_type`.
pub fn config_text(network: &str, backend_type: &str) -> String {
    format!(r#"{{"Network":"{network}","Backend":{{"Type":"{backend_type}"}}}}"#)
}

/// Parses a subnet key (`10.244.1.0/24`) for tests.
pub fn key(net: &str) -> SubnetKey {
    match net.parse::<Ipv4Net>() {
        Ok(n) => SubnetKey::new(n),
        Err(e) => panic!("bad test subnet {net}: {e}"),
    }
}
