//! The reconciler: the only stateful writer of kernel objects.
//!
//! It keeps a cache of the kernel objects weft owns (its devices — links with a weft device
//! name, [`crate::device::is_device_name`], that are its network's — with their IPv4 addresses
//! and permanent ARP/FDB entries, the routes with protocol 87 in table main to destinations
//! inside its network, and its nexthops: [`crate::owner`]), diffs the desired state against that
//! cache ([`plan::diff`]) and executes only the difference. The cache is filled by
//! [`Reconciler::refresh`] (a dump), updated by every successful write, and corrected by kernel
//! notifications through [`Reconciler::observe`]: a device deleted, set down, changed or
//! stripped of its address out of band is repaired by the next apply like a deleted route.
//!
//! **Devices first.** An apply runs the device part of the diff ([`plan::diff_devices`]) first.
//! A device made anew gets an ifindex the backend could not know when it planned: the entries
//! planned on the device's [`Device::index`](crate::device::Device::index) are moved to the real
//! index before the entry part runs ([`Reconciler::device_index`] tells the planner, for its next
//! plan). Entries on a wanted device that could not be made are not tried; they are reported as
//! failed, so the caller's retry comes back to them.
//!
//! Usage by the daemon's control task:
//! ```text
//! rec.refresh().await?;                          // at start: stale weft routes enter the cache
//! rec.apply(&desired).await;                     // after each change of the desired state
//! if rec.observe(&event) { rec.apply(&desired).await; }   // drift repair
//! ```
//!
//! **How routes are written.** The cache holds what a route means ([`Route`]: destination,
//! gateway, device, onlink); how it is written is the reconciler's business. Where the kernel
//! has nexthop objects (Linux ≥ 5.3) and [`Reconciler::with_route_nexthops`] did not turn them
//! off, a route is `ip route replace <dst> nhid <N> proto 87` on weft's nexthop
//! `ip nexthop add id <N> via <gw> dev <dev> [onlink] proto 87`, one per distinct hop: IPv4
//! routes with distinct gateways are slow to insert (they share one fib_info hash bucket), routes
//! on nexthop objects are not. Elsewhere routes are plain (`ip route replace <dst> via <gw> dev
//! <dev> [onlink] proto 87`), as flanneld writes them. The nexthop table ([`crate::nhtable`])
//! maps each hop to its id and counts the cached routes on each; a nexthop no route uses is
//! deleted after the routes of an apply. Ids are weft's nexthops' (protocol 87) found in a dump,
//! or ids no one holds. A weft route written the other way (plain routes after an upgrade, nhid
//! routes after `--route-nexthops=false`) is rewritten in place by the next apply, one replace
//! per route. Callers that execute operations themselves go through [`Reconciler::execute`]
//! and end with [`Reconciler::drop_unused_nexthops`].
//!
//! **Device sysctls.** A wanted device that asks for it ([`Device::wants_accept_ra_off`](
//! crate::device::Device::wants_accept_ra_off): the vxlan devices) gets `accept_ra = 0`, as
//! flanneld sets it, once it is in the kernel, whether the apply made it or found it (adopted
//! at start, or made again after a delete: a new ifindex is tuned again). Read first, written
//! only when not 0, logged like the `sysctl` command; a failure is a warning only.
//!
//! **IPv6.** Routes of both families go through the same cache, diff and nexthop table (an IPv6
//! gateway gets an AF_INET6 nexthop). IPv6 routes are written, dumped and compared at metric
//! 1024 ([`plan::V6_METRIC`]), not 0: the kernel turns an IPv6 metric 0 into 1024 anyway.
//!
//! Kernel quirks: IPv4 routes flushed because their link went down or away, or lost its last
//! address, produce no RTM_DELROUTE; nexthops dropped with their link (down, deleted, or without
//! carrier) produce no RTM_DELNEXTHOP, and the routes on them go silently; `ip nexthop del`
//! sends RTM_DELNEXTHOP but no RTM_DELROUTE for the routes that went with it. `observe`
//! therefore treats link-down, carrier loss (on links with weft nexthops), link deletion, IPv4
//! address deletion, the deletion of one of weft's nexthops and a notification overrun as "the
//! cache may be wrong": it drops the cached routes concerned at once (so the next apply re-adds
//! them even without a dump) and sets [`Reconciler::needs_refresh`]; the next
//! [`Reconciler::apply`] then dumps the kernel before diffing. Callers may also call
//! [`Reconciler::refresh`] themselves. The kernel refuses new nexthops on a link without
//! carrier but keeps plain routes there (`linkdown`): a route for such a link is written plain
//! and moved onto a nexthop once the carrier is back.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tracing::{debug, info, warn};

use crate::nhtable::NexthopTable;
use crate::nl::{self, Hop, Netlink, Nexthop, RouteEvent};
use crate::owner::Ownership;
use crate::plan::{self, Addr, KernelOp, KernelState};
use crate::{BackendError, RTPROT_WEFT, Route};

mod devices;
mod observe;

const ENETDOWN: i32 = 100;
/// Attempts at a free nexthop id when others take them meanwhile (EEXIST).
const ID_ATTEMPTS: usize = 16;

/// Holds the kernel connection and the last known state of weft's kernel objects.
#[derive(Debug)]
pub struct Reconciler {
    nl: Netlink,
    cache: KernelState,
    /// The desired state of the last apply, to decide whether a link coming up matters.
    last_desired: KernelState,
    needs_refresh: bool,
    /// Interface names by index, for log lines that read like `ip` commands.
    names: HashMap<u32, String>,
    /// weft devices a notification showed other than cached: re-read before the next diff.
    stale_devices: BTreeSet<String>,
    /// The device names the last dump took as wanted (a link with such a name is this daemon's
    /// whatever its addresses: [`crate::owner`]). A wanted name outside it, not cached, may be a
    /// link of ours the dump left out: the next apply dumps again.
    wanted_at_refresh: BTreeSet<String>,
    /// Write routes on nexthop objects where the kernel has them (`--route-nexthops`).
    want_nexthops: bool,
    /// Whether the kernel has nexthop objects: None until the first dump.
    nexthops_supported: Option<bool>,
    /// weft's nexthops and which cached route uses which.
    nh: NexthopTable,
    /// Cached routes written the other way than weft writes routes now (plain in nexthop mode,
    /// or the reverse): rewritten by the next apply when they are desired as they are.
    misfits: BTreeSet<ipnet::IpNet>,
    /// Links down or without carrier as far as weft knows: the kernel refuses nexthops there.
    links_down: BTreeSet<u32>,
    /// Which routes, devices and nexthops are this daemon's ([`crate::owner`]).
    owner: Ownership,
    /// The ifindexes of wanted devices whose `accept_ra` was seen to be 0 (or could not be
    /// set: tried once per device, as flanneld tries once): [`Reconciler::tune_devices`].
    ra_off: BTreeSet<u32>,
}

/// What one [`Reconciler::apply`] did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Successful operations of the plan (each a kernel write; 0 when the kernel already
    /// matched). Nexthop objects made or removed along the way count in `nexthop_writes`.
    pub writes: usize,
    /// Operations the kernel refused; they are not recorded as done, so the next apply retries.
    pub failures: Vec<(KernelOp, BackendError)>,
    /// Nexthop objects added and deleted.
    pub nexthop_writes: usize,
    /// Unused nexthops weft could not delete (by id); the next apply tries again.
    pub nexthop_failures: Vec<(u32, BackendError)>,
    /// The dump that should have preceded the diff failed (the diff used the cached state).
    pub refresh_error: Option<BackendError>,
}

impl ApplyReport {
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty() && self.nexthop_failures.is_empty() && self.refresh_error.is_none()
    }
}

fn errno(e: &BackendError) -> Option<i32> {
    match e {
        BackendError::Netlink { errno, .. } => *errno,
        BackendError::Unsupported(_) => None,
    }
}

impl Reconciler {
    /// A reconciler with an empty cache that [`needs_refresh`](Self::needs_refresh): the first
    /// apply dumps the kernel first, so weft routes left over from an earlier run get purged.
    /// Routes go on nexthop objects where the kernel has them (see
    /// [`with_route_nexthops`](Self::with_route_nexthops)).
    pub fn new(nl: Netlink) -> Self {
        Reconciler {
            nl,
            cache: KernelState::default(),
            last_desired: KernelState::default(),
            needs_refresh: true,
            names: HashMap::new(),
            stale_devices: BTreeSet::new(),
            wanted_at_refresh: BTreeSet::new(),
            want_nexthops: true,
            nexthops_supported: None,
            nh: NexthopTable::default(),
            misfits: BTreeSet::new(),
            links_down: BTreeSet::new(),
            owner: Ownership::everything(),
            ra_off: BTreeSet::new(),
        }
    }

    /// Owns only what `owner` says (the agent: its own network's routes, devices and nexthops,
    /// so daemons of other flannel networks on this host keep theirs). Without this call the
    /// reconciler owns every object of weft's protocol and device names.
    pub fn with_ownership(mut self, owner: Ownership) -> Self {
        if !owner.is_everything() {
            debug!(network = ?owner.scope(), ipv6_network = ?owner.scope_v6(), nexthop_ids = ?owner.nexthop_ids(), "owning the kernel objects of one network");
        }
        self.owner = owner;
        self.nh = NexthopTable::with_owner(owner);
        self.needs_refresh = true;
        self
    }

    /// A route of weft's protocol in table main to a destination this daemon owns.
    fn owns_route(&self, e: &RouteEvent) -> bool {
        e.is_weft() && self.owner.owns_dst(&e.route.dst)
    }

    /// `false`: write plain routes even where the kernel has nexthop objects
    /// (`--route-nexthops=false`); weft's routes on nexthops are rewritten plain, and its
    /// nexthops removed, by the next apply.
    pub fn with_route_nexthops(mut self, on: bool) -> Self {
        if !on {
            info!("writing plain routes (--route-nexthops=false)");
        }
        self.want_nexthops = on;
        self.needs_refresh = true;
        self
    }

    /// True when routes are written on nexthop objects: wanted, and the last dump showed the
    /// kernel has them.
    pub fn uses_nexthops(&self) -> bool {
        self.want_nexthops && self.nexthops_supported == Some(true)
    }

    /// Re-reads the objects weft owns from the kernel into the cache (`ip -d addr show` for
    /// weft's devices and their IPv4 addresses, `ip nexthop show`, `ip route show table main
    /// proto 87`, and for weft's devices `ip neigh`/`bridge fdb`). Use at start, on an audit
    /// timer, and after link events. A route on a nexthop is read through the nexthop dump (not
    /// through `net.ipv4.nexthop_compat_mode`).
    pub async fn refresh(&mut self) -> Result<(), BackendError> {
        let links = self.nl.links().await?;
        let nexthops = match self.nl.dump_nexthops().await {
            Ok(n) => {
                self.nexthops_supported = Some(true);
                n
            }
            Err(e) if nl::nexthops_unsupported(&e) => {
                if self.nexthops_supported != Some(false) && self.want_nexthops {
                    info!(
                        "the kernel has no nexthop objects ({e}): writing plain routes (`ip route replace <dst> via <gw> dev <dev> proto 87`)"
                    );
                }
                self.nexthops_supported = Some(false);
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let mut nexthops = nexthops;
        nexthops.sort_unstable_by_key(|n| n.id);
        let mut table = std::mem::take(&mut self.nh);
        table.reset(&nexthops);
        // weft's routes, and others' routes on nexthops (which may be weft's: those stay).
        let routes = self
            .nl
            .dump_routes_where(
                &format!("ip route show table main proto {RTPROT_WEFT}"),
                |ev| {
                    ev.is_weft_blackhole()
                        || is_weft_route(ev)
                        || ev
                            .nhid
                            .is_some_and(|id| table.is_ours(id) || table.is_adoptable(id))
                },
            )
            .await?;
        let owner = self.owner;
        let ours =
            |ev: &RouteEvent| !ev.blackhole && is_weft_route(ev) && owner.owns_dst(&ev.route.dst);
        // Protocol-87 nexthops outside this network's id range that only its routes use: an
        // older weft's (ids from 1), adopted.
        let mut only_ours: BTreeMap<u32, bool> = BTreeMap::new();
        for ev in &routes {
            if let Some(id) = ev.nhid.filter(|id| table.is_adoptable(*id)) {
                *only_ours.entry(id).or_insert(true) &= ours(ev);
            }
        }
        for (id, _) in only_ours.into_iter().filter(|(_, only)| *only) {
            table.adopt(id);
        }
        let mut state = KernelState::default();
        for ev in routes {
            if ev.blackhole {
                if ev.is_weft_blackhole() && owner.owns_dst(&ev.route.dst) {
                    state.blackholes.insert(ev.route.dst);
                }
                continue;
            }
            if !ours(&ev) {
                // Someone else's route on one of weft's nexthops keeps that nexthop alive.
                if let Some(id) = ev.nhid.filter(|id| table.is_ours(*id)) {
                    if is_weft_route(&ev) {
                        warn!(
                            "route {} of another network uses nexthop {id} of this network's id range: another weft on this host shares the range; run one of them with --route-nexthops=false",
                            ev.route.dst
                        );
                    }
                    table.pin(id);
                }
                continue;
            }
            let route = resolve_dumped(&ev, &nexthops);
            if let Some(first) = state.routes.get(&route.dst) {
                // Only someone else can make a second weft-protocol route to one destination in
                // table main (with another metric); keep the first, the next refresh sees the
                // other once the first is gone.
                warn!(route = %route, kept = %first, "second route with weft's protocol to one destination");
                if let Some(id) = ev.nhid {
                    table.pin(id);
                }
                continue;
            }
            table.set_route(route.dst, ev.nhid);
            state.routes.insert(route.dst, route);
        }
        for link in &links {
            let Some(dev) = &link.device else { continue };
            let wanted = self.last_desired.devices.contains_key(&dev.name);
            if !self
                .owner
                .owns_device(wanted, link.addrs.iter().map(|a| &a.addr))
            {
                debug!(device = %dev.name, "a weft-named device of another network; left alone");
                continue;
            }
            // IPv4 addresses, and global IPv6 ones (`flannel-v6.<VNI>`'s /128): the kernel's
            // link-local fe80:: addresses are not weft's.
            for a in &link.addrs {
                if a.addr.is_ipv4() || a.scope_global {
                    if let Ok(addr) = ipnet::IpNet::new(a.addr, a.prefix_len) {
                        state.add_addr(Addr {
                            dev: dev.name.clone(),
                            addr,
                        });
                    }
                }
            }
            for n in self.nl.dump_permanent_neighs(dev.index).await? {
                state.add_neigh(n);
            }
            for e in self.nl.dump_fdb(dev.index).await? {
                state.add_fdb(e);
            }
            state.add_device(dev.clone());
        }
        self.links_down = links
            .iter()
            .filter(|l| !(l.up && l.carrier))
            .map(|l| l.index)
            .collect();
        self.names = links.into_iter().map(|l| (l.index, l.name)).collect();
        debug!(
            devices = state.devices.len(),
            routes = state.routes.len(),
            nexthops = table.len(),
            "read weft's routes from the kernel"
        );
        self.nh = table;
        self.ra_off
            .retain(|i| state.devices.values().any(|d| d.index == *i));
        self.cache = state;
        self.stale_devices.clear();
        self.wanted_at_refresh = self.last_desired.devices.keys().cloned().collect();
        self.recompute_misfits();
        self.needs_refresh = false;
        Ok(())
    }

    /// Makes the kernel match `desired`: refreshes first if [`needs_refresh`](Self::needs_refresh),
    /// diffs against the cache, executes the operations in [`plan::diff`]'s order, and records
    /// each successful one in the cache. Each operation is logged at info like the `ip` command.
    /// A failed operation does not stop the others; it is reported and left out of the cache.
    pub async fn apply(&mut self, desired: &KernelState) -> ApplyReport {
        self.apply_owned(desired.clone()).await
    }

    /// [`apply`](Self::apply) taking the desired state by value, which it keeps (no copy of
    /// every peer's entries per lease change).
    pub async fn apply_owned(&mut self, desired: KernelState) -> ApplyReport {
        let mut report = ApplyReport::default();
        self.last_desired = desired;
        // A device wanted now that the last dump neither found nor took as wanted (a dump before
        // the first apply, or before a backend switch) may exist without an address of our
        // network: dump again, so it is adopted instead of made a second time (EEXIST).
        if !self.owner.is_everything()
            && self.last_desired.devices.keys().any(|name| {
                !self.wanted_at_refresh.contains(name) && !self.cache.devices.contains_key(name)
            })
        {
            self.needs_refresh = true;
        }
        // A second pass only when a write found the cache wrong (a nexthop the kernel dropped
        // without telling): dump, and diff again.
        for _ in 0..2 {
            if self.needs_refresh {
                if let Err(e) = self.refresh().await {
                    warn!(error = %e, "could not re-read weft's kernel state; diffing against the cached state");
                    report.refresh_error = Some(e);
                }
            } else if !self.stale_devices.is_empty() {
                if let Err(e) = self.reread_devices().await {
                    warn!(error = %e, "could not re-read weft's devices; diffing against the cached state");
                    report.refresh_error = Some(e);
                }
            }
            for op in plan::diff_devices(&self.last_desired, &self.cache) {
                self.execute(op, &mut report).await;
            }
            self.bind_devices();
            self.tune_devices();
            let missing = self.missing_devices();
            let mut ops = plan::diff_entries(&self.last_desired, &self.cache);
            ops.extend(self.conversions());
            let mut waiting: BTreeMap<u32, usize> = BTreeMap::new();
            for op in ops {
                match op_index(&op).filter(|i| missing.contains_key(i)) {
                    Some(index) => {
                        *waiting.entry(index).or_default() += 1;
                        let name = &missing[&index];
                        let e = BackendError::Unsupported(format!("{name} does not exist"));
                        report.failures.push((op, e));
                    }
                    None => self.execute(op, &mut report).await,
                }
            }
            for (index, n) in waiting {
                warn!(
                    "{n} writes wait for the device {}; will retry",
                    missing[&index]
                );
            }
            if !self.needs_refresh {
                break;
            }
        }
        self.drop_unused_nexthops(&mut report).await;
        report
    }

    /// The incremental [`apply`](Self::apply) for a lease change: the desired state becomes the
    /// last applied one without the keys of `removed` and with the entries of `added` (a peer's
    /// old and new entries; `removed` first, so an updated peer's entries are replaced), and only
    /// those keys are diffed against the cache ([`plan::diff_at`]) and written. Costs the changed
    /// peers' entries, not every peer's.
    ///
    /// The caller guarantees that no other peer wants the keys of `removed` or `added` (else it
    /// uses `apply` with a full plan). When the cache may be wrong
    /// ([`needs_refresh`](Self::needs_refresh)), before or after the writes, this falls back to
    /// a full apply of the updated desired state, dump first.
    pub async fn apply_delta(&mut self, removed: &KernelState, added: KernelState) -> ApplyReport {
        // A device not as wanted (or not yet re-read) needs the full apply, devices first.
        let full = self.needs_refresh || !self.stale_devices.is_empty() || !self.devices_in_sync();
        let mut desired = std::mem::take(&mut self.last_desired);
        desired.remove_keys(removed);
        let mut touched = removed.clone();
        for (dst, r) in &added.routes {
            desired.routes.insert(*dst, r.clone());
            touched.routes.insert(*dst, r.clone());
        }
        for (key, n) in added.neighs {
            desired.neighs.insert(key, n.clone());
            touched.neighs.insert(key, n);
        }
        for (key, e) in added.fdb {
            desired.fdb.insert(key, e.clone());
            touched.fdb.insert(key, e);
        }
        if full {
            return self.apply_owned(desired).await;
        }
        let ops = plan::diff_at(&desired, &self.cache, &touched);
        self.last_desired = desired;
        let mut report = ApplyReport::default();
        for op in ops {
            self.execute(op, &mut report).await;
        }
        if self.needs_refresh {
            // A write found the cache wrong (a nexthop the kernel dropped without telling).
            let desired = std::mem::take(&mut self.last_desired);
            let full = self.apply_owned(desired).await;
            report.writes += full.writes;
            report.nexthop_writes += full.nexthop_writes;
            report.failures.extend(full.failures);
            report.nexthop_failures.extend(full.nexthop_failures);
            report.refresh_error = full.refresh_error;
            return report;
        }
        self.drop_unused_nexthops(&mut report).await;
        report
    }

    /// The desired state of the last apply.
    pub fn desired(&self) -> &KernelState {
        &self.last_desired
    }

    /// Route replaces that rewrite desired routes written the other way (see the module doc),
    /// except on links that refuse nexthops now.
    fn conversions(&self) -> Vec<KernelOp> {
        self.misfits
            .iter()
            .filter_map(|dst| {
                let want = self.last_desired.routes.get(dst)?;
                let convert = self.cache.routes.get(dst) == Some(want)
                    && !(self.uses_nexthops() && self.links_down.contains(&want.oif));
                convert.then(|| KernelOp::RouteReplace(want.clone()))
            })
            .collect()
    }

    /// Executes one operation (a route replace in nexthop mode also makes its nexthop when
    /// there is none for its hop yet), logs it like the `ip` command, records it in the cache
    /// when it succeeded and in `report` either way. Nexthops it leaves unused are deleted by
    /// [`drop_unused_nexthops`](Self::drop_unused_nexthops), to be called after the routes.
    pub async fn execute(&mut self, op: KernelOp, report: &mut ApplyReport) {
        let result = match &op {
            KernelOp::LinkAdd(d) => self.add_device(d).await,
            KernelOp::LinkSet(d) => self.nl.device_set(d).await,
            KernelOp::LinkDel(d) => {
                let done = self.nl.link_del(d.index).await;
                if done.is_ok() {
                    self.forget_link(d.index);
                }
                done
            }
            KernelOp::AddrAdd(a) | KernelOp::AddrDel(a) => match self.device_index(&a.dev) {
                None => Err(BackendError::Unsupported(format!(
                    "{} does not exist",
                    a.dev
                ))),
                Some(index) if matches!(op, KernelOp::AddrAdd(_)) => {
                    self.nl
                        .addr_replace(index, a.addr.addr(), a.addr.prefix_len())
                        .await
                }
                Some(index) => {
                    self.nl
                        .addr_del(index, a.addr.addr(), a.addr.prefix_len())
                        .await
                }
            },
            KernelOp::RouteReplace(r) => self.replace_route(r, report).await,
            KernelOp::RouteDel(r) => self.delete_route(r).await,
            KernelOp::NeighReplace(n) => self.nl.neigh_replace(n).await,
            KernelOp::NeighDel(n) => self.nl.neigh_del(n).await,
            KernelOp::FdbReplace(e) => self.nl.fdb_replace(e).await,
            KernelOp::FdbDel(e) => self.nl.fdb_del(e).await,
            KernelOp::BlackholeReplace(dst) => self.nl.blackhole_replace(*dst).await,
            KernelOp::BlackholeDel(dst) => self.nl.blackhole_del(*dst).await,
        };
        match result {
            Ok(()) => {
                if !matches!(op, KernelOp::RouteReplace(_) | KernelOp::RouteDel(_)) {
                    info!("{}", op.command(|i| self.names.get(&i).cloned()));
                }
                report.writes += 1;
                if !matches!(op, KernelOp::LinkAdd(_)) {
                    // A new device is recorded as the kernel made it (by `add_device`).
                    self.cache.record(&op);
                }
                if let KernelOp::RouteReplace(r) | KernelOp::RouteDel(r) = &op {
                    self.update_misfit(r.dst);
                }
            }
            Err(e) => {
                let cmd = op.command(|i| self.names.get(&i).cloned());
                warn!(error = %e, "{cmd} failed; will retry");
                report.failures.push((op, e));
            }
        }
    }

    fn name(&self, index: u32) -> Option<&str> {
        self.names.get(&index).map(String::as_str)
    }

    /// `ip route replace <dst> nhid <id> proto 87` on the nexthop for the route's hop (made
    /// first if there is none), or `ip route replace <dst> via <gw> dev <dev> proto 87` in plain
    /// mode and on links that refuse nexthops.
    async fn replace_route(
        &mut self,
        r: &Route,
        report: &mut ApplyReport,
    ) -> Result<(), BackendError> {
        match self.replace_route_once(r, report).await {
            // The kernel checks an IPv6 onlink gateway against its routes: when the route being
            // replaced goes through another device and covers the gateway (host-gw's route to
            // a peer's subnet while switching to vxlan, whose gateway is in that subnet), the
            // new route or nexthop is refused ("Nexthop has invalid gateway or device
            // mismatch"). The old route goes first, then ours is written: a gap of one request.
            Err(e) if errno(&e) == Some(nl::EINVAL) && r.onlink && r.dst.addr().is_ipv6() => {
                let Some(old) = self.cache.routes.get(&r.dst).filter(|o| o.oif != r.oif) else {
                    return Err(e);
                };
                let old = old.display_with(self.name(old.oif)).to_string();
                self.nl.route_del_dst(r.dst).await?;
                info!("ip -6 route del {old} proto {RTPROT_WEFT}  # in the way of {r}");
                self.nh.set_route(r.dst, None);
                self.replace_route_once(r, report).await
            }
            other => other,
        }
    }

    async fn replace_route_once(
        &mut self,
        r: &Route,
        report: &mut ApplyReport,
    ) -> Result<(), BackendError> {
        if self.uses_nexthops() && !self.links_down.contains(&r.oif) {
            match self.replace_on_nexthop(r, report).await {
                Ok(()) => return Ok(()),
                // No carrier (or down): the kernel takes no nexthop there, but keeps a plain
                // route (`linkdown`), which moves onto a nexthop when the carrier is back.
                Err(e) if errno(&e) == Some(ENETDOWN) => {
                    debug!(error = %e, "no nexthops on this link for now; writing the route plain");
                    self.links_down.insert(r.oif);
                }
                Err(e) if errno(&e) == Some(nl::EOPNOTSUPP) => {
                    info!("the kernel refuses nexthop objects ({e}): writing plain routes");
                    self.nexthops_supported = Some(false);
                    self.recompute_misfits();
                }
                Err(e) => return Err(e),
            }
        }
        self.nl.route_replace(r).await?;
        info!(
            "ip route replace {} proto {RTPROT_WEFT}",
            r.display_with(self.name(r.oif))
        );
        self.nh.set_route(r.dst, None);
        Ok(())
    }

    async fn replace_on_nexthop(
        &mut self,
        r: &Route,
        report: &mut ApplyReport,
    ) -> Result<(), BackendError> {
        let hop = Hop::of(r);
        let Some(id) = self.nh.id_for(&hop) else {
            let id = self.add_nexthop_with_route(hop, r.dst, report).await?;
            self.log_route_replace(r.dst, id, &hop);
            self.nh.set_route(r.dst, Some(id));
            return Ok(());
        };
        let id = match self.nl.route_replace_nhid(r.dst, id).await {
            Ok(()) => id,
            Err(e) => {
                // The table may be behind: the kernel drops nexthops without telling (their
                // link lost its carrier or went down a moment ago).
                match self.nl.nexthop_get(id).await {
                    Ok(Some(n)) if n.is_weft() && n.hop() == Some(hop) => return Err(e),
                    Ok(found) => {
                        debug!(id, now = ?found, "weft's nexthop is gone; making a new one");
                        self.nexthop_lost(id, found.is_some());
                        let id = self.add_nexthop(hop, report).await?;
                        self.nl.route_replace_nhid(r.dst, id).await?;
                        id
                    }
                    Err(_) => return Err(e),
                }
            }
        };
        self.log_route_replace(r.dst, id, &hop);
        self.nh.set_route(r.dst, Some(id));
        Ok(())
    }

    fn log_route_replace(&self, dst: ipnet::IpNet, id: u32, hop: &Hop) {
        info!(
            "ip route replace {dst} nhid {id} proto {RTPROT_WEFT}  # {}",
            hop.display_with(self.name(hop.oif))
        );
    }

    /// A new nexthop for `hop` with a free id and the route to `dst` on it, sent together (one
    /// round trip): `ip nexthop add id <N> via <gw> dev <dev> [onlink] proto 87` + `ip route
    /// replace <dst> nhid <N> proto 87`. An id someone took meanwhile (EEXIST: the route may
    /// have landed on their nexthop) is given up and the pair sent again with another.
    async fn add_nexthop_with_route(
        &mut self,
        hop: Hop,
        dst: ipnet::IpNet,
        report: &mut ApplyReport,
    ) -> Result<u32, BackendError> {
        let mut last = None;
        for _ in 0..ID_ATTEMPTS {
            let id = self.nh.allocate();
            let (added, routed) = self.nl.nexthop_add_with_route(id, &hop, dst).await;
            match added {
                Ok(()) => {
                    self.log_nexthop_add(id, &hop);
                    report.nexthop_writes += 1;
                    self.nh.added(id, Some(hop));
                    // A failed route leaves the nexthop unused: deleted after the routes.
                    routed?;
                    return Ok(id);
                }
                Err(e) if errno(&e) == Some(nl::EEXIST) => {
                    debug!(id, "nexthop id taken meanwhile; trying another");
                    self.nh.taken(id);
                    last = Some(e);
                }
                Err(e) => {
                    if routed.is_ok() {
                        // Only possible onto a nexthop someone else holds with that id (the
                        // kernel checks the request before the id): the next write of this
                        // route moves it off.
                        self.nh.taken(id);
                    }
                    return Err(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| BackendError::Unsupported("no free nexthop id".into())))
    }

    fn log_nexthop_add(&self, id: u32, hop: &Hop) {
        info!(
            "ip nexthop add id {id} {} proto {RTPROT_WEFT}",
            hop.display_with(self.name(hop.oif))
        );
    }

    /// `ip nexthop add id <N> via <gw> dev <dev> [onlink] proto 87` with a free id.
    async fn add_nexthop(
        &mut self,
        hop: Hop,
        report: &mut ApplyReport,
    ) -> Result<u32, BackendError> {
        let mut last = None;
        for _ in 0..ID_ATTEMPTS {
            let id = self.nh.allocate();
            match self.nl.nexthop_add(id, &hop).await {
                Ok(()) => {
                    self.log_nexthop_add(id, &hop);
                    report.nexthop_writes += 1;
                    self.nh.added(id, Some(hop));
                    return Ok(id);
                }
                Err(e) if errno(&e) == Some(nl::EEXIST) => {
                    debug!(id, "nexthop id taken meanwhile; trying another");
                    self.nh.taken(id);
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| BackendError::Unsupported("no free nexthop id".into())))
    }

    /// `ip route del <dst> nhid <id> proto 87`, or `ip route del <dst> via <gw> dev <dev> proto
    /// 87` for a plain route: as the route is written.
    async fn delete_route(&mut self, r: &Route) -> Result<(), BackendError> {
        match self.nh.route_nh(&r.dst) {
            Some(id) => {
                if !self.nl.route_del_nhid(r.dst, id).await? {
                    self.nh.doubt(id);
                }
                match self.nh.hop_of(id) {
                    Some(hop) => info!(
                        "ip route del {} nhid {id} proto {RTPROT_WEFT}  # {}",
                        r.dst,
                        hop.display_with(self.name(hop.oif))
                    ),
                    None => info!("ip route del {} nhid {id} proto {RTPROT_WEFT}", r.dst),
                }
            }
            None => {
                self.nl.route_del(r).await?;
                info!(
                    "ip route del {} proto {RTPROT_WEFT}",
                    r.display_with(self.name(r.oif))
                );
            }
        }
        self.nh.set_route(r.dst, None);
        Ok(())
    }

    /// `ip nexthop del id <N>` for each of weft's nexthops that no route uses any more (after a
    /// route moved to another hop or went away, or stale ones from a dump). A nexthop the kernel
    /// may have dropped already is checked first, so an id someone else took is left alone.
    pub async fn drop_unused_nexthops(&mut self, report: &mut ApplyReport) {
        for u in self.nh.unused() {
            if u.doubtful {
                match self.nl.nexthop_get(u.id).await {
                    Ok(Some(n)) if n.is_weft() && n.hop() == u.hop => {}
                    Ok(found) => {
                        self.nh.removed(u.id, found.is_some());
                        continue;
                    }
                    Err(e) => {
                        report.nexthop_failures.push((u.id, e));
                        continue;
                    }
                }
            }
            match self.nl.nexthop_del(u.id).await {
                Ok(()) => {
                    match u.hop {
                        Some(hop) => info!(
                            "ip nexthop del id {}  # {}",
                            u.id,
                            hop.display_with(self.name(hop.oif))
                        ),
                        None => info!("ip nexthop del id {}", u.id),
                    }
                    report.nexthop_writes += 1;
                    self.nh.removed(u.id, false);
                }
                Err(e) => {
                    warn!(error = %e, "ip nexthop del id {} failed; will retry", u.id);
                    report.nexthop_failures.push((u.id, e));
                }
            }
        }
    }

    /// True when the cache may differ from the kernel (at start, after link/address events and
    /// overruns); the next [`apply`](Self::apply) refreshes first.
    pub fn needs_refresh(&self) -> bool {
        self.needs_refresh
    }

    /// The last known state of weft's kernel objects.
    pub fn current(&self) -> &KernelState {
        &self.cache
    }

    /// The nexthop the cached route to `dst` is written on (`nhid`), None for a plain route.
    pub fn route_nexthop(&self, dst: &ipnet::IpNet) -> Option<u32> {
        self.nh.route_nh(dst)
    }

    fn update_misfit(&mut self, dst: ipnet::IpNet) {
        if self.cache.routes.contains_key(&dst) && self.nh.misfit(&dst, self.uses_nexthops()) {
            self.misfits.insert(dst);
        } else {
            self.misfits.remove(&dst);
        }
    }

    fn recompute_misfits(&mut self) {
        let mode = self.uses_nexthops();
        self.misfits = self
            .cache
            .routes
            .keys()
            .filter(|dst| self.nh.misfit(dst, mode))
            .copied()
            .collect();
    }
}

const MAIN: u8 = 254;

/// The device an entry operation writes on (a route's output interface).
fn op_index(op: &KernelOp) -> Option<u32> {
    match op {
        KernelOp::RouteReplace(r) | KernelOp::RouteDel(r) => Some(r.oif),
        KernelOp::NeighReplace(n) | KernelOp::NeighDel(n) => Some(n.ifindex),
        KernelOp::FdbReplace(e) | KernelOp::FdbDel(e) => Some(e.ifindex),
        _ => None,
    }
}

/// A route with weft's protocol in table main.
fn is_weft_route(ev: &RouteEvent) -> bool {
    ev.table == u32::from(MAIN) && ev.protocol == RTPROT_WEFT
}

/// The meaning of a dumped weft route: through the nexthop dump (sorted by id) for a route on a
/// nexthop (a nexthop that is not a plain gateway hop, or missing, gives gateway `0.0.0.0`,
/// which no desired route has), else as the kernel reported it.
fn resolve_dumped(ev: &RouteEvent, nexthops: &[Nexthop]) -> Route {
    let Some(id) = ev.nhid else {
        return ev.route.clone();
    };
    match nexthops
        .binary_search_by_key(&id, |n| n.id)
        .ok()
        .map(|i| &nexthops[i])
    {
        Some(n) => match n.hop() {
            Some(hop) => hop.route(ev.route.dst),
            None => Route {
                dst: ev.route.dst,
                gateway: plan::unspecified_for(&ev.route.dst),
                oif: n.oif,
                onlink: false,
            },
        },
        None => Route {
            dst: ev.route.dst,
            gateway: plan::unspecified_for(&ev.route.dst),
            oif: 0,
            onlink: false,
        },
    }
}

#[cfg(test)]
mod tests;
