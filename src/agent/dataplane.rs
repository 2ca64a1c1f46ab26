//! The data plane: the primary backend (the config's), the retiring backends of a live switch
//! and the reconciler.
//!
//! The desired state is a pure function of the peer table: each peer is programmed by the
//! active backend of the type its lease advertises (normally only the primary; during a switch
//! also a retiring one), so one plan covers normal running, a switch rolling through the
//! cluster and mixed clusters. A retiring backend goes away, devices and all, once no peer has
//! needed it for [`LEGACY_GRACE`].
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Result;
use backends::nl::{KernelEvent, Netlink};
use backends::reconcile::{ApplyReport, Reconciler};
use backends::{AnyBackend, Backend, ExternalInterface, KernelState, Peer};
use ipnet::Ipv4Net;
use net_conf::{BackendConf, LeaseAttrs, SubnetKey};
use tracing::{debug, error, info, warn};

use super::metrics::{Metrics, ReconcileReason};
use crate::lease::table::{Change, LeaseTable};

/// How long a backend from before a switch stays after the last peer stopped advertising it:
/// peers that already published their new lease may not have programmed ours yet.
pub const LEGACY_GRACE: Duration = Duration::from_secs(3);

/// A backend of an earlier config, still serving peers that advertise it.
struct Legacy {
    conf: BackendConf,
    backend: AnyBackend,
    /// Since when no peer needs it.
    unused_since: Option<tokio::time::Instant>,
}

/// What a plan of the whole table gives.
struct Plan {
    state: KernelState,
    /// Peers no active backend serves, with the reason.
    skipped: BTreeMap<SubnetKey, String>,
    /// The type names of the active backends that serve at least one peer (active backends
    /// have distinct types: a switch retires a held backend of the new one's type).
    used: BTreeSet<&'static str>,
}

/// The backends and the reconciler. See the module doc.
pub struct DataPlane {
    nl: Netlink,
    ext: ExternalInterface,
    /// The backend the config asks for: it serves peers of its type and makes our lease.
    primary: AnyBackend,
    /// Backends of an earlier config, kept while some peer still advertises them (a backend
    /// switch rolls through the cluster node by node), with the config each came from.
    legacy: Vec<Legacy>,
    /// When the next unused legacy backend is due for removal.
    legacy_due: Option<tokio::time::Instant>,
    reconciler: Reconciler,
    /// Peers left out by the last plan, with the reason: logged when it changes, not per pass.
    skipped: BTreeMap<SubnetKey, String>,
    /// True while a failed write, a lost device or a peer of our own type waits for a retry.
    pending_retry: bool,
    /// A backend device was deleted out of band and is not re-created yet.
    device_lost: bool,
    /// A backend device was set down or lost its address out of band.
    device_changed: bool,
    /// Notifications were lost (socket overrun): a device change may have gone unseen.
    devices_in_doubt: bool,
}

impl DataPlane {
    pub fn new(
        nl: Netlink,
        ext: ExternalInterface,
        primary: AnyBackend,
        route_nexthops: bool,
    ) -> DataPlane {
        let mut reconciler = Reconciler::new(nl.clone()).with_route_nexthops(route_nexthops);
        for index in primary.devices() {
            reconciler.own_device(index);
        }
        DataPlane {
            nl,
            ext,
            primary,
            legacy: Vec::new(),
            legacy_due: None,
            reconciler,
            skipped: BTreeMap::new(),
            pending_retry: false,
            device_lost: false,
            device_changed: false,
            devices_in_doubt: false,
        }
    }

    /// Re-reads weft's kernel objects (a dump).
    pub async fn refresh(&mut self) -> Result<(), backends::BackendError> {
        self.reconciler.refresh().await
    }

    pub fn primary_type(&self) -> &'static str {
        self.primary.type_name()
    }

    /// When the next unused retiring backend is due for removal.
    pub fn legacy_due(&self) -> Option<tokio::time::Instant> {
        self.legacy_due
    }

    pub fn pending_retry(&self) -> bool {
        self.pending_retry
    }

    /// The desired kernel state of the whole table.
    fn plan(&self, table: &LeaseTable) -> Plan {
        let peers = table.peers();
        let mut state = KernelState::default();
        let mut reasons: BTreeMap<SubnetKey, String> = BTreeMap::new();
        let mut used = BTreeSet::new();
        let active = std::iter::once(&self.primary).chain(self.legacy.iter().map(|l| &l.backend));
        for backend in active {
            // One backend and every peer of its type (the usual case): no second copy.
            let filtered: Vec<Peer>;
            let mine: &[Peer] = if self.legacy.is_empty()
                && peers
                    .iter()
                    .all(|p| p.attrs.backend_type == backend.type_name())
            {
                &peers
            } else {
                filtered = peers
                    .iter()
                    .filter(|p| p.attrs.backend_type == backend.type_name())
                    .cloned()
                    .collect();
                &filtered
            };
            let desired = backend.desired(&self.ext, mine);
            if mine.len() > desired.skipped.len() {
                used.insert(backend.type_name());
            }
            state.merge(desired.state);
            for (key, reason) in desired.skipped {
                reasons.entry(key).or_insert(reason);
            }
        }
        // A peer counts as skipped only when no active backend serves it (each serves a peer
        // with a route to its subnet).
        let mut skipped = BTreeMap::new();
        for peer in &peers {
            if state.routes.contains_key(&peer.key.v4) {
                continue;
            }
            let reason = reasons.remove(&peer.key).unwrap_or_else(|| {
                format!(
                    "its lease advertises backend {:?}, this node runs {}",
                    peer.attrs.backend_type,
                    self.primary.type_name()
                )
            });
            skipped.insert(peer.key, reason);
        }
        Plan {
            state,
            skipped,
            used,
        }
    }

    /// Plans `changes` alone (the peers they name, by the primary backend) and applies the
    /// difference at their keys ([`Reconciler::apply_delta`]). Falls back to
    /// [`reconcile`](Self::reconcile) whenever the result could differ from a full plan: during a
    /// backend switch, while some peer is skipped or a retry is pending, when a changed peer is
    /// not of the primary's type or is skipped itself, or when its entries collide with another
    /// peer's (two leases with one VTEP MAC: the full plan decides which one is programmed).
    pub async fn reconcile_changes(
        &mut self,
        table: &LeaseTable,
        changes: &[Change],
        metrics: &Metrics,
    ) {
        let started = std::time::Instant::now();
        let Some((removed, added)) = self.plan_changes(changes) else {
            let why = ReconcileReason::LeaseChange;
            self.reconcile(table, why, why.as_str(), metrics).await;
            return;
        };
        let planned = started.elapsed();
        let report = self.reconciler.apply_delta(&removed, added).await;
        let pass = Pass {
            why: ReconcileReason::LeaseChange,
            said: ReconcileReason::LeaseChange.as_str(),
            started,
            planned,
            incremental: Some(changes.len()),
        };
        self.finish(table, pass, &report, BTreeMap::new(), metrics);
    }

    /// The entries to remove and to add for `changes`, or None when only a full plan is exact.
    fn plan_changes(&self, changes: &[Change]) -> Option<(KernelState, KernelState)> {
        if !self.legacy.is_empty() || !self.skipped.is_empty() || self.pending_retry {
            return None;
        }
        let own_type = self.primary.type_name();
        let entries = |peer: &Peer| {
            if peer.attrs.backend_type != own_type {
                return None;
            }
            let d = self.primary.desired(&self.ext, std::slice::from_ref(peer));
            d.skipped.is_empty().then_some(d.state)
        };
        let mut removed = KernelState::default();
        let mut added = KernelState::default();
        for change in changes {
            let (old, new) = match change {
                Change::Added(p) => (None, Some(p)),
                Change::Updated { old, new } => (Some(old), Some(new)),
                Change::Removed(p) => (Some(p), None),
            };
            if let Some(old) = old {
                let gone = entries(old)?;
                added.remove_keys(&gone);
                removed.extend(gone);
            }
            if let Some(new) = new {
                let want = entries(new)?;
                // Another peer's key (in the applied state and not being removed, or added by
                // an earlier change of this burst): only the full plan knows who wins.
                if want.collides(self.reconciler.desired(), &removed)
                    || want.collides(&added, &KernelState::default())
                {
                    return None;
                }
                added.extend(want);
            }
        }
        Some((removed, added))
    }

    /// Computes the desired state from the lease table and applies the difference; `said` is
    /// the reason as the log line words it (`audit (SIGHUP)`; see [`ReconcileReason::as_str`]).
    pub async fn reconcile(
        &mut self,
        table: &LeaseTable,
        why: ReconcileReason,
        said: &str,
        metrics: &Metrics,
    ) {
        let started = std::time::Instant::now();
        let mut plan = self.plan(table);
        if self.retire_unused(&plan.used).await {
            plan = self.plan(table);
        }
        for (key, reason) in &plan.skipped {
            if self.skipped.get(key) != Some(reason) {
                warn!("peer {key} not programmed: {reason}");
            }
        }
        for key in self.skipped.keys() {
            if !plan.skipped.contains_key(key) && table.get(key).is_some() {
                info!("peer {key} is programmed now");
            }
        }
        let planned = started.elapsed();
        // The reconciler logs each failed write; they are retried on the next pass.
        let report = self.reconciler.apply_owned(plan.state).await;
        let pass = Pass {
            why,
            said,
            started,
            planned,
            incremental: None,
        };
        self.finish(table, pass, &report, plan.skipped, metrics);
    }

    /// Removes the retiring backends no peer has needed for [`LEGACY_GRACE`], devices and all.
    /// The grace covers peers that published their new lease but have not yet programmed ours:
    /// until they do, they still send to us over the old path. True when one was removed.
    async fn retire_unused(&mut self, used: &BTreeSet<&'static str>) -> bool {
        let now = tokio::time::Instant::now();
        let mut retired = false;
        let mut keep = Vec::new();
        for mut legacy in std::mem::take(&mut self.legacy) {
            if used.contains(legacy.backend.type_name()) {
                legacy.unused_since = None;
                keep.push(legacy);
                continue;
            }
            let since = *legacy.unused_since.get_or_insert(now);
            if now.duration_since(since) < LEGACY_GRACE {
                keep.push(legacy);
                continue;
            }
            let mut backend = legacy.backend;
            info!("no peer uses {} any more: removing it", backend.type_name());
            for index in backend.devices() {
                self.reconciler.disown_device(index);
            }
            if let Err(e) = backend.teardown(&self.nl).await {
                warn!("removing the {} backend: {e}", backend.type_name());
            }
            retired = true;
        }
        self.legacy = keep;
        self.legacy_due = self
            .legacy
            .iter()
            .filter_map(|l| l.unused_since)
            .min()
            .map(|since| since + LEGACY_GRACE);
        retired
    }

    /// Book-keeping after an apply: retry scheduling, the skipped peers, metrics, the log line.
    fn finish(
        &mut self,
        table: &LeaseTable,
        pass: Pass<'_>,
        report: &ApplyReport,
        skipped: BTreeMap<SubnetKey, String>,
        metrics: &Metrics,
    ) {
        let own_type = self.primary.type_name();
        // Failed writes are retried; so are peers of our own type that were skipped (an address
        // may be added to the interface). Peers of another backend type wait for a new lease.
        self.pending_retry = self.device_lost
            || !report.failures.is_empty()
            || !report.nexthop_failures.is_empty()
            || skipped.keys().any(|key| {
                table
                    .get(key)
                    .is_some_and(|attrs| attrs.backend_type == own_type)
            });
        self.skipped = skipped;
        metrics.reconcile_run(
            pass.why,
            pass.started.elapsed(),
            u64::try_from(report.writes).unwrap_or(u64::MAX),
            u64::try_from(report.failures.len()).unwrap_or(u64::MAX),
        );
        metrics.set_peers(table.peer_attrs().map(|a| a.backend_type.as_str()));
        let plan = match pass.incremental {
            Some(n) => format!("plan {:?}, incremental: {n} changed peers", pass.planned),
            None => format!("plan {:?}", pass.planned),
        };
        debug!(
            "reconcile ({}): {} peers, {} writes, {} nexthop writes, {} failures in {:?} ({plan})",
            pass.said,
            table.len(),
            report.writes,
            report.nexthop_writes,
            report.failures.len() + report.nexthop_failures.len(),
            pass.started.elapsed(),
        );
    }

    /// Brings up the backend of `new` next to the running one and makes it the primary; the
    /// old one keeps serving the peers that still advertise it. Returns our lease attributes
    /// for the new backend and its MTU, or why the switch is refused (the data plane stays as
    /// it is then).
    pub async fn switch(
        &mut self,
        new: &BackendConf,
        running: BackendConf,
        attrs: &LeaseAttrs,
        own: Ipv4Net,
    ) -> Result<(LeaseAttrs, u32), String> {
        let from = self.primary.type_name();
        let to = new.type_name();
        // Switching back to a backend we still hold: take it as it is.
        let mut next = match self.legacy.iter().position(|l| l.conf == *new) {
            Some(i) => self.legacy.remove(i).backend,
            None => {
                // A held backend of the same type would share the device name: retire it.
                for mut old in self.take_legacy_of_type(to) {
                    for index in old.devices() {
                        self.reconciler.disown_device(index);
                    }
                    if let Err(e) = old.teardown(&self.nl).await {
                        warn!("removing the old {to} backend: {e}");
                    }
                }
                AnyBackend::from_conf(new).map_err(|e| format!("refusing the new backend: {e}"))?
            }
        };
        next.adopt_previous(attrs);
        let attrs = next
            .prepare(&self.nl, &self.ext)
            .await
            .map_err(|e| format!("cannot bring up the {to} backend: {e}; staying on {from}"))?;
        let mtu = match next.configure(&self.nl, &self.ext, own).await {
            Ok(mtu) => mtu,
            Err(e) => {
                if let Err(e) = next.teardown(&self.nl).await {
                    warn!("removing the half-made {to} backend: {e}");
                }
                return Err(format!(
                    "cannot configure the {to} backend: {e}; staying on {from}"
                ));
            }
        };
        for index in next.devices() {
            self.reconciler.own_device(index);
        }
        let old = std::mem::replace(&mut self.primary, next);
        if old.type_name() == to {
            // Same type, other options: the device was reused or re-created by `prepare`.
            for index in old.devices() {
                if !self.primary.devices().contains(&index) {
                    self.reconciler.disown_device(index);
                }
            }
        } else {
            self.legacy.push(Legacy {
                conf: running,
                backend: old,
                unused_since: None,
            });
        }
        Ok((attrs, mtu))
    }

    fn take_legacy_of_type(&mut self, type_name: &str) -> Vec<AnyBackend> {
        let (same, other): (Vec<Legacy>, Vec<Legacy>) = std::mem::take(&mut self.legacy)
            .into_iter()
            .partition(|l| l.backend.type_name() == type_name);
        self.legacy = other;
        same.into_iter().map(|l| l.backend).collect()
    }

    /// After our lease moved to another subnet: the primary's device address follows it.
    /// Returns the MTU for subnet.env.
    pub async fn move_to(&mut self, own: Ipv4Net) -> Result<u32, backends::BackendError> {
        self.primary.configure(&self.nl, &self.ext, own).await
    }

    /// Feeds one netlink notification to the reconciler; true when something weft owns changed.
    pub fn on_kernel_event(&mut self, ev: &KernelEvent) -> bool {
        let ours = |index: &u32| self.primary.devices().contains(index);
        match ev {
            KernelEvent::LinkDeleted { index, name } if ours(index) => {
                warn!("{name} was deleted by someone else; re-creating it with every peer entry");
                self.reconciler.disown_device(*index);
                self.device_lost = true;
            }
            KernelEvent::LinkChanged {
                index,
                name,
                up: false,
                ..
            } if ours(index) => {
                warn!("{name} was set down by someone else; setting it up again");
                self.device_changed = true;
            }
            KernelEvent::AddressDeleted {
                index,
                addr,
                prefix_len,
            } if ours(index) => {
                warn!(
                    "{addr}/{prefix_len} was removed from our device by someone else; restoring it"
                );
                self.device_changed = true;
            }
            KernelEvent::Overrun => {
                warn!(
                    "netlink notifications were lost (socket overrun); re-reading the devices and weft's entries"
                );
                self.devices_in_doubt = true;
            }
            _ => {}
        }
        self.reconciler.observe(ev)
    }

    /// After a batch of notifications: repairs what they showed of our devices and re-reads
    /// the kernel state when the reconciler lost track.
    pub async fn after_kernel_events(&mut self, own: Ipv4Net) -> DeviceRepair {
        let mut repair = DeviceRepair::default();
        if std::mem::take(&mut self.devices_in_doubt) {
            repair.repaired = true;
            repair.new_attrs = self.check_devices("netlink notifications lost", own).await;
        }
        if self.device_lost {
            repair.repaired = true;
            repair.new_attrs = self.recreate_devices(own).await.or(repair.new_attrs);
        } else if self.device_changed {
            repair.repaired = true;
            repair.new_attrs = self.reconfigure_devices(own).await.or(repair.new_attrs);
        }
        if self.reconciler.needs_refresh()
            && let Err(e) = self.reconciler.refresh().await
        {
            warn!("re-reading weft's kernel state failed: {e}");
        }
        repair
    }

    /// Checks the primary's devices in a link dump (audits, lost notifications) and repairs
    /// them. Returns lease attributes to publish, as [`Self::after_kernel_events`].
    pub async fn check_devices(&mut self, why: &str, own: Ipv4Net) -> Option<LeaseAttrs> {
        let devices = self.primary.devices();
        if devices.is_empty() {
            return None;
        }
        let links = match self.nl.links().await {
            Ok(links) => links,
            Err(e) => {
                warn!("{why}: reading the links failed: {e}");
                return None;
            }
        };
        for index in devices {
            match device_health(&links, index, own) {
                DeviceHealth::Missing => {
                    warn!(
                        "{why}: our device (index {index}) is gone; re-creating it with every peer entry"
                    );
                    self.reconciler.disown_device(index);
                    self.device_lost = true;
                }
                DeviceHealth::Down(name) => {
                    warn!("{why}: {name} is down; setting it up again");
                    self.device_changed = true;
                }
                DeviceHealth::NoAddress(name) => {
                    warn!(
                        "{why}: {name} lacks its address {}/32; restoring it",
                        own.network()
                    );
                    self.device_changed = true;
                }
                DeviceHealth::Ok => {}
            }
        }
        if self.device_lost {
            self.recreate_devices(own).await
        } else if self.device_changed {
            self.reconfigure_devices(own).await
        } else {
            None
        }
    }

    /// Re-applies the primary backend's device configuration (address, up, MAC check) after an
    /// out-of-band change; a device that can't be configured as it is gets re-created.
    async fn reconfigure_devices(&mut self, own: Ipv4Net) -> Option<LeaseAttrs> {
        self.device_changed = false;
        if let Err(e) = self.primary.configure(&self.nl, &self.ext, own).await {
            warn!("the device no longer matches our lease ({e}); re-creating it");
            for index in self.primary.devices() {
                self.reconciler.disown_device(index);
            }
            self.device_lost = true;
            return self.recreate_devices(own).await;
        }
        None
    }

    /// Re-creates the primary backend's devices (same MAC, same address) after an out-of-band
    /// delete; the next reconcile re-adds every peer's entries on the new device.
    async fn recreate_devices(&mut self, own: Ipv4Net) -> Option<LeaseAttrs> {
        let attrs = match self.primary.prepare(&self.nl, &self.ext).await {
            Ok(attrs) => attrs,
            Err(e) => {
                error!(
                    "re-creating the backend device failed: {e}; retrying in {:?}",
                    super::RETRY_INTERVAL
                );
                self.pending_retry = true;
                return None;
            }
        };
        if let Err(e) = self.primary.configure(&self.nl, &self.ext, own).await {
            error!(
                "configuring the re-created device failed: {e}; retrying in {:?}",
                super::RETRY_INTERVAL
            );
            self.pending_retry = true;
            return None;
        }
        for index in self.primary.devices() {
            self.reconciler.own_device(index);
        }
        self.device_lost = false;
        Some(attrs)
    }

    /// Before a retry pass: a lost device is re-created, and the external interface's
    /// addresses are read again (a peer may have become adjacent).
    pub async fn before_retry(&mut self, own: Ipv4Net) -> Option<LeaseAttrs> {
        let republish = if self.device_lost {
            self.recreate_devices(own).await
        } else {
            None
        };
        match self.nl.link_by_name(&self.ext.name).await {
            Ok(Some(link)) => {
                self.ext.prefixes = link.addrs.iter().filter_map(|a| a.v4_net()).collect();
                self.ext.mtu = link.mtu;
            }
            Ok(None) => warn!("external interface {} is gone", self.ext.name),
            Err(e) => warn!("re-reading {}: {e}", self.ext.name),
        }
        republish
    }
}

/// What [`DataPlane::after_kernel_events`] did to our devices.
#[derive(Debug, Default)]
pub struct DeviceRepair {
    /// A device was re-created or reconfigured: its entries need a reconcile.
    pub repaired: bool,
    /// Lease attributes of a re-created device, to publish when they changed (not expected:
    /// the device keeps its MAC).
    pub new_attrs: Option<LeaseAttrs>,
}

/// One reconcile pass, for the book-keeping after it.
struct Pass<'a> {
    why: ReconcileReason,
    /// The log line's wording of `why`.
    said: &'a str,
    started: std::time::Instant,
    planned: Duration,
    incremental: Option<usize>,
}

/// What a backend device looks like in a link dump.
#[derive(Debug, PartialEq, Eq)]
enum DeviceHealth {
    Ok,
    Missing,
    Down(String),
    /// Without the `<own subnet network>/32` address that vxlan and ipip devices carry.
    NoAddress(String),
}

fn device_health(links: &[backends::nl::LinkInfo], index: u32, own: Ipv4Net) -> DeviceHealth {
    let addr = std::net::IpAddr::V4(own.network());
    match links.iter().find(|l| l.index == index) {
        None => DeviceHealth::Missing,
        Some(link) if !link.up => DeviceHealth::Down(link.name.clone()),
        Some(link)
            if !link
                .addrs
                .iter()
                .any(|a| a.addr == addr && a.prefix_len == 32) =>
        {
            DeviceHealth::NoAddress(link.name.clone())
        }
        Some(_) => DeviceHealth::Ok,
    }
}

/// Devices weft's backends make (`flannel.<VNI>`, `flannel-v6.<VNI>`, `flannel.ipip`).
fn is_backend_device(name: &str) -> bool {
    name.starts_with("flannel.") || name.starts_with("flannel-v6.")
}

/// Removes the devices a previous backend left (the config changed while weft was down), with
/// their routes, ARP and FDB entries; `keep` are the current backend's.
pub async fn remove_other_devices(nl: &Netlink, keep: &[u32]) {
    let links = match nl.links().await {
        Ok(links) => links,
        Err(e) => {
            warn!("listing devices to remove a previous backend's: {e}");
            return;
        }
    };
    for link in links {
        if is_backend_device(&link.name) && !keep.contains(&link.index) {
            match nl.link_del(link.index).await {
                Ok(()) => info!("ip link del {} (left by a previous backend)", link.name),
                Err(e) => warn!("removing {} left by a previous backend: {e}", link.name),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use backends::nl::{AddrInfo, LinkInfo};

    use super::*;

    fn link(index: u32, up: bool, addrs: &[(&str, u8)]) -> LinkInfo {
        LinkInfo {
            index,
            name: format!("flannel.{index}"),
            mtu: 1450,
            up,
            carrier: up,
            addrs: addrs
                .iter()
                .map(|(a, p)| AddrInfo {
                    addr: a.parse().expect("addr"),
                    prefix_len: *p,
                    permanent: true,
                    deprecated: false,
                    temporary: false,
                    scope_global: true,
                })
                .collect(),
        }
    }

    #[test]
    fn device_health_reads_the_link_dump() {
        let own: Ipv4Net = "10.244.7.0/24".parse().expect("net");
        let links = [
            link(1, true, &[("127.0.0.1", 8)]),
            link(5, true, &[("10.244.7.0", 32)]),
            link(6, false, &[("10.244.7.0", 32)]),
            link(7, true, &[("10.244.7.0", 24)]),
            link(8, true, &[]),
        ];
        assert_eq!(device_health(&links, 5, own), DeviceHealth::Ok);
        assert_eq!(device_health(&links, 9, own), DeviceHealth::Missing);
        assert_eq!(
            device_health(&links, 6, own),
            DeviceHealth::Down("flannel.6".into())
        );
        assert_eq!(
            device_health(&links, 7, own),
            DeviceHealth::NoAddress("flannel.7".into())
        );
        assert_eq!(
            device_health(&links, 8, own),
            DeviceHealth::NoAddress("flannel.8".into())
        );
    }
}
