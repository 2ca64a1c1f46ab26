//! The data plane: the primary backend (the config's), the retiring backends of a live switch
//! and the reconciler.
//!
//! The desired state is a pure function of the peer table: each peer is programmed by the
//! active backend of the type its lease advertises (normally only the primary; during a switch
//! also a retiring one), so one plan covers normal running, a switch rolling through the
//! cluster and mixed clusters. A retiring backend goes away, devices and all, once no peer has
//! needed it for [`LEGACY_GRACE`].
//!
//! The backends' devices and their addresses are part of that desired state: the reconciler
//! makes them, deletes those no backend wants (a retired backend's, a previous backend's left at
//! start), and repairs them after a kernel event like any route. The control loop reconciles
//! when the reconciler says an event touched what weft owns, and retries failed writes on a
//! timer; there is no device repair of its own.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Result;
use backends::nl::{KernelEvent, Netlink};
use backends::reconcile::{ApplyReport, Reconciler};
use backends::{AnyBackend, Backend, ExternalInterface, KernelState, Ownership, Peer};
use net_conf::{BackendConf, LeaseAttrs, SubnetKey};
use tracing::{debug, info, warn};

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
    /// The last pass left failed writes (devices included) or a skipped peer of our own type:
    /// the retry timer reconciles again.
    pending_retry: bool,
    /// `--ip-blackhole-route`: `blackhole <own subnet>` is part of the desired state.
    blackhole_route: bool,
    /// The node's own subnets (the blackholes' destinations).
    own: Option<SubnetKey>,
}

impl DataPlane {
    pub fn new(
        nl: Netlink,
        ext: ExternalInterface,
        primary: AnyBackend,
        route_nexthops: bool,
        owner: Ownership,
    ) -> DataPlane {
        let reconciler = Reconciler::new(nl.clone())
            .with_route_nexthops(route_nexthops)
            .with_ownership(owner);
        DataPlane {
            nl,
            ext,
            primary,
            legacy: Vec::new(),
            legacy_due: None,
            reconciler,
            skipped: BTreeMap::new(),
            pending_retry: false,
            blackhole_route: false,
            own: None,
        }
    }

    /// With `on` (`--ip-blackhole-route`), the desired state holds `blackhole <own>` (weft's
    /// metric: `backends::plan::BLACKHOLE_METRIC`), which follows the subnet when it moves;
    /// without, a blackhole an earlier run left is removed.
    pub fn with_blackhole_route(mut self, own: SubnetKey, on: bool) -> Self {
        self.blackhole_route = on;
        self.own = Some(own);
        self
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
        // with a route to its subnet; a dual-stack peer of a dual-stack node with a route to
        // each of its subnets).
        let mut skipped = BTreeMap::new();
        for peer in &peers {
            let v6_served = match (peer.key.v6, &self.ext.v6) {
                (Some(v6), Some(_)) => state.routes.contains_key(&ipnet::IpNet::V6(v6.trunc())),
                _ => true,
            };
            let v4_served = match (peer.key.v4, self.ext.has_v4()) {
                (Some(v4), true) => state.routes.contains_key(&ipnet::IpNet::V4(v4)),
                _ => true,
            };
            if v4_served && v6_served {
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
        if self.blackhole_route {
            state
                .blackholes
                .extend(self.own.iter().flat_map(SubnetKey::nets));
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
        // DirectRouting is re-decided for each changed peer (as flanneld does per event); a
        // new answer changes more than the peer's own keys: plan everything.
        let changed_peers = changes.iter().filter_map(|c| match c {
            Change::Added(p) | Change::Updated { new: p, .. } => Some(&p.attrs),
            Change::Removed(_) => None,
        });
        let path_changed = match self.primary.direct_paths_mut() {
            Some(paths) => {
                // Each changed peer's PublicIP, and its PublicIPv6 where IPv6 is decided too.
                let ips: Vec<std::net::IpAddr> =
                    changed_peers.flat_map(|a| paths.peer_ips(a)).collect();
                let known = ips.iter().any(|ip| paths.contains(*ip));
                backends::direct::look_up(&self.nl, paths, ips).await && known
            }
            None => false,
        };
        let planned_changes = if path_changed {
            None
        } else {
            self.plan_changes(changes)
        };
        let Some((removed, added)) = planned_changes else {
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
        self.look_up_paths(table, why == ReconcileReason::Audit)
            .await;
        let mut plan = self.plan(table);
        if self.retire_unused(&plan.used) {
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
    fn retire_unused(&mut self, used: &BTreeSet<&'static str>) -> bool {
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
            // Its devices leave the desired state: the next apply deletes them.
            info!(
                "no peer uses {} any more: removing it",
                legacy.backend.type_name()
            );
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
        self.bind_backends();
        let own_type = self.primary.type_name();
        // Failed writes are retried; so are peers of our own type that were skipped (an address
        // may be added to the interface). Peers of another backend type wait for a new lease.
        self.pending_retry = !report.failures.is_empty()
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
        own: SubnetKey,
    ) -> Result<(LeaseAttrs, u32), String> {
        let from = self.primary.type_name();
        let to = new.type_name();
        // Switching back to a backend we still hold: take it as it is.
        let mut next = match self.legacy.iter().position(|l| l.conf == *new) {
            Some(i) => self.legacy.remove(i).backend,
            None => {
                // A held backend of the same type would share the device name: retire it (its
                // device leaves the desired state, or is replaced by the new one's).
                drop(self.take_legacy_of_type(to));
                AnyBackend::from_conf(new).map_err(|e| format!("refusing the new backend: {e}"))?
            }
        };
        next.adopt_previous(attrs);
        let attrs = next
            .prepare(&self.nl, &self.ext)
            .await
            .map_err(|e| format!("cannot bring up the {to} backend: {e}; staying on {from}"))?;
        let mtu = next
            .configure(&self.ext, &own)
            .map_err(|e| format!("cannot configure the {to} backend: {e}; staying on {from}"))?;
        let old = std::mem::replace(&mut self.primary, next);
        if old.type_name() == to {
            // Same type, other options: the old backend's device leaves the desired state (or
            // is replaced by the new one of the same name) with the next reconcile.
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

    /// DirectRouting: `ip route get` (and `ip -6 route get` for PublicIPv6 where the backend
    /// decides IPv6 too) for the peers of the primary's type not looked up yet (every one on an
    /// audit), and forgets the answers for peers that left.
    async fn look_up_paths(&mut self, table: &LeaseTable, all: bool) {
        let own_type = self.primary.type_name();
        let Some(paths) = self.primary.direct_paths_mut() else {
            return;
        };
        let peers: BTreeSet<std::net::IpAddr> = table
            .peers()
            .iter()
            .filter(|p| p.attrs.backend_type == own_type)
            .flat_map(|p| paths.peer_ips(&p.attrs))
            .collect();
        paths.retain(|ip| peers.contains(ip));
        let todo: Vec<std::net::IpAddr> = peers
            .into_iter()
            .filter(|ip| all || !paths.contains(*ip))
            .collect();
        if backends::direct::look_up(&self.nl, paths, todo).await {
            debug!(
                addresses = paths.len(),
                "DirectRouting: looked up the paths to the peers"
            );
        }
    }

    /// After our lease moved to another subnet: the primary's device address follows it (with
    /// the next reconcile). Returns the MTU for subnet.env.
    pub fn move_to(&mut self, own: SubnetKey) -> Result<u32, backends::BackendError> {
        self.own = Some(own);
        self.primary.configure(&self.ext, &own)
    }

    /// Gives the backends the ifindexes of their devices as the reconciler knows them (a device
    /// made anew has a new one), so their next plans use them.
    fn bind_backends(&mut self) {
        let rec = &self.reconciler;
        let index_of = |name: &str| rec.device_index(name);
        self.primary.bind(&index_of);
        for legacy in &mut self.legacy {
            legacy.backend.bind(&index_of);
        }
    }

    /// Feeds one netlink notification to the reconciler; true when something weft owns (or
    /// wants: a device, its address, a route, an ARP/FDB entry) changed.
    pub fn on_kernel_event(&mut self, ev: &KernelEvent) -> bool {
        if matches!(ev, KernelEvent::Overrun) {
            warn!(
                "netlink notifications were lost (socket overrun); re-reading the devices and weft's entries"
            );
        }
        self.reconciler.observe(ev)
    }

    /// Before a retry pass: the external interface's addresses are read again (a peer may have
    /// become adjacent).
    pub async fn before_retry(&mut self) {
        match self.nl.link_by_name(&self.ext.name).await {
            Ok(Some(link)) => {
                self.ext.prefixes = link.addrs.iter().filter_map(|a| a.v4_net()).collect();
                self.ext.mtu = link.mtu;
            }
            Ok(None) => warn!("external interface {} is gone", self.ext.name),
            Err(e) => warn!("re-reading {}: {e}", self.ext.name),
        }
    }
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
