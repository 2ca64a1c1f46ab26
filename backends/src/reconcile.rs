//! The reconciler: the only stateful writer of kernel objects.
//!
//! It keeps a cache of the kernel objects weft owns (routes with protocol 87 in table main),
//! diffs the desired state against that cache ([`plan::diff`]) and executes only the difference.
//! The cache is filled by [`Reconciler::refresh`] (a dump), updated by every successful write,
//! and corrected by kernel notifications through [`Reconciler::observe`].
//!
//! Usage by the daemon's control task:
//! ```text
//! rec.refresh().await?;                          // at start: stale weft routes enter the cache
//! rec.apply(&desired).await;                     // after each change of the desired state
//! if rec.observe(&event) { rec.apply(&desired).await; }   // drift repair
//! ```
//!
//! Kernel quirk: IPv4 routes flushed because their link went down or away, or lost its last
//! address, produce no RTM_DELROUTE. `observe` therefore treats link-down, link deletion, IPv4
//! address deletion and a notification overrun as "the cache may be wrong": it drops the cached
//! routes through that link at once (so the next apply re-adds them even without a dump) and
//! sets [`Reconciler::needs_refresh`]; the next [`Reconciler::apply`] then dumps the kernel
//! before diffing. Callers may also call [`Reconciler::refresh`] themselves.
use std::collections::{BTreeSet, HashMap};

use tracing::{debug, info, warn};

use crate::nl::{KernelEvent, Netlink};
use crate::plan::{self, KernelOp, KernelState};
use crate::{BackendError, Route};

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
    /// weft's devices (`flannel.<VNI>`): their permanent ARP and FDB entries are weft's.
    devices: BTreeSet<u32>,
}

/// What one [`Reconciler::apply`] did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Successful kernel writes (0 when the kernel already matched).
    pub writes: usize,
    /// Operations the kernel refused; they are not recorded as done, so the next apply retries.
    pub failures: Vec<(KernelOp, BackendError)>,
    /// The dump that should have preceded the diff failed (the diff used the cached state).
    pub refresh_error: Option<BackendError>,
}

impl ApplyReport {
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty() && self.refresh_error.is_none()
    }
}

impl Reconciler {
    /// A reconciler with an empty cache that [`needs_refresh`](Self::needs_refresh): the first
    /// apply dumps the kernel first, so weft routes left over from an earlier run get purged.
    pub fn new(nl: Netlink) -> Self {
        Reconciler {
            nl,
            cache: KernelState::default(),
            last_desired: KernelState::default(),
            needs_refresh: true,
            names: HashMap::new(),
            devices: BTreeSet::new(),
        }
    }

    /// Declares `ifindex` a weft device (vxlan's `flannel.<VNI>`): its permanent IPv4 neighbours
    /// and its `self permanent` FDB entries with a `dst` become weft's, so stale ones are purged.
    /// Devices used by a desired ARP/FDB entry are adopted by [`apply`](Self::apply) anyway; call
    /// this at start so a purge happens even when no peer is known yet. Sets
    /// [`needs_refresh`](Self::needs_refresh).
    pub fn own_device(&mut self, ifindex: u32) {
        if self.devices.insert(ifindex) {
            self.needs_refresh = true;
        }
    }

    /// Stops treating `ifindex` as a weft device (it was deleted or recreated under a new index):
    /// its entries leave the cache without kernel writes.
    pub fn disown_device(&mut self, ifindex: u32) {
        self.devices.remove(&ifindex);
        self.cache.neighs.retain(|(i, _), _| *i != ifindex);
        self.cache.fdb.retain(|(i, _), _| *i != ifindex);
    }

    /// Re-reads the objects weft owns from the kernel into the cache (`ip route show table main
    /// proto 87`). Use at start, on an audit timer, and after link events.
    pub async fn refresh(&mut self) -> Result<(), BackendError> {
        let routes = self.nl.dump_owned_routes().await?;
        let mut state = KernelState::default();
        for r in routes {
            if let Some(first) = state.routes.get(&r.dst) {
                // Only someone else can make a second weft-protocol route to one destination in
                // table main (with another metric); keep the first, the next refresh sees the
                // other once the first is gone.
                warn!(route = %r, kept = %first, "second route with weft's protocol to one destination");
                continue;
            }
            state.routes.insert(r.dst, r);
        }
        for &dev in &self.devices {
            for n in self.nl.dump_permanent_neighs(dev).await? {
                state.add_neigh(n);
            }
            for e in self.nl.dump_fdb(dev).await? {
                state.add_fdb(e);
            }
        }
        match self.nl.links().await {
            Ok(links) => self.names = links.into_iter().map(|l| (l.index, l.name)).collect(),
            Err(e) => debug!(error = %e, "could not read link names for logging"),
        }
        debug!(
            routes = state.routes.len(),
            "read weft's routes from the kernel"
        );
        self.cache = state;
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
        let used = desired.neighs.keys().map(|(i, _)| *i);
        let used: BTreeSet<u32> = used.chain(desired.fdb.keys().map(|(i, _)| *i)).collect();
        for dev in used {
            self.own_device(dev);
        }
        if self.needs_refresh {
            if let Err(e) = self.refresh().await {
                warn!(error = %e, "could not re-read weft's routes; diffing against the cached state");
                report.refresh_error = Some(e);
            }
        }
        let ops = plan::diff(&desired, &self.cache);
        self.last_desired = desired;
        self.run_ops(ops, &mut report).await;
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
    /// ([`needs_refresh`](Self::needs_refresh)) this falls back to a full apply of the updated
    /// desired state, dump first.
    pub async fn apply_delta(&mut self, removed: &KernelState, added: KernelState) -> ApplyReport {
        let mut desired = std::mem::take(&mut self.last_desired);
        desired.remove_keys(removed);
        let mut touched = removed.clone();
        let devices = added.neighs.keys().map(|(i, _)| *i);
        let devices: BTreeSet<u32> = devices.chain(added.fdb.keys().map(|(i, _)| *i)).collect();
        for dev in devices {
            // A device not yet weft's needs a dump first (its stale entries): a full apply below.
            self.own_device(dev);
        }
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
        if self.needs_refresh {
            return self.apply_owned(desired).await;
        }
        let ops = plan::diff_at(&desired, &self.cache, &touched);
        self.last_desired = desired;
        let mut report = ApplyReport::default();
        self.run_ops(ops, &mut report).await;
        report
    }

    /// The desired state of the last apply.
    pub fn desired(&self) -> &KernelState {
        &self.last_desired
    }

    /// Executes `ops` in order, logging each like the `ip` command and recording each success in
    /// the cache; a failure is reported and does not stop the rest.
    async fn run_ops(&mut self, ops: Vec<KernelOp>, report: &mut ApplyReport) {
        for op in ops {
            let cmd = op.command(|i| self.names.get(&i).cloned());
            let result = match &op {
                KernelOp::RouteReplace(r) => self.nl.route_replace(r).await,
                KernelOp::RouteDel(r) => self.nl.route_del(r).await,
                KernelOp::NeighReplace(n) => self.nl.neigh_replace(n).await,
                KernelOp::NeighDel(n) => self.nl.neigh_del(n).await,
                KernelOp::FdbReplace(e) => self.nl.fdb_replace(e).await,
                KernelOp::FdbDel(e) => self.nl.fdb_del(e).await,
            };
            match result {
                Ok(()) => {
                    info!("{cmd}");
                    report.writes += 1;
                    self.cache.record(&op);
                }
                Err(e) => {
                    warn!(error = %e, "{cmd} failed; will retry");
                    report.failures.push((op, e));
                }
            }
        }
    }

    /// Updates the cache from a kernel notification. Returns true when something weft owns (or
    /// wants) changed, so the caller should [`apply`](Self::apply) the desired state again:
    ///
    /// - a weft route deleted, or replaced by a route with other attributes or protocol at its
    ///   destination (table main, metric 0);
    /// - a weft-protocol route weft did not write (the next apply deletes it unless desired);
    /// - a link with weft routes went down or away, or lost an IPv4 address, or the notification
    ///   socket overflowed: the cache may be wrong, [`needs_refresh`](Self::needs_refresh) is set;
    /// - a link came up that a desired route uses but the kernel lacks (a write that failed
    ///   while the link was down can succeed now).
    ///
    /// Notifications caused by weft's own writes return false.
    pub fn observe(&mut self, ev: &KernelEvent) -> bool {
        match ev {
            KernelEvent::RouteAdded(e) => {
                if !e.in_weft_slot() {
                    return false;
                }
                let dst = e.route.dst;
                match self.cache.routes.get(&dst) {
                    Some(cached) if e.is_weft() && *cached == e.route => false,
                    Some(cached) => {
                        debug!(ours = %cached, now = %e.route, protocol = e.protocol, "weft's route was replaced");
                        if e.is_weft() {
                            self.cache.routes.insert(dst, e.route.clone());
                        } else {
                            self.cache.routes.remove(&dst);
                        }
                        true
                    }
                    None if e.is_weft() => {
                        debug!(route = %e.route, "a weft-protocol route appeared");
                        self.cache.routes.insert(dst, e.route.clone());
                        true
                    }
                    None => false,
                }
            }
            KernelEvent::RouteDeleted(e) => {
                if e.is_weft() && self.cache.routes.get(&e.route.dst) == Some(&e.route) {
                    debug!(route = %e.route, "weft's route was deleted");
                    self.cache.routes.remove(&e.route.dst);
                    true
                } else {
                    false
                }
            }
            KernelEvent::LinkChanged { index, name, up } => {
                self.names.insert(*index, name.clone());
                if *up {
                    let d = &self.last_desired;
                    let c = &self.cache;
                    d.routes
                        .values()
                        .any(|r| r.oif == *index && c.routes.get(&r.dst) != Some(r))
                        || d.neighs
                            .iter()
                            .any(|(k, n)| k.0 == *index && c.neighs.get(k) != Some(n))
                        || d.fdb
                            .iter()
                            .any(|(k, e)| k.0 == *index && c.fdb.get(k) != Some(e))
                } else {
                    self.forget_routes_via(*index)
                }
            }
            KernelEvent::LinkDeleted { index, .. } => {
                self.names.remove(index);
                self.forget_routes_via(*index)
            }
            KernelEvent::AddressDeleted { index, .. } => self.forget_routes_via(*index),
            KernelEvent::NeighAdded { neigh, permanent } => {
                if !self.devices.contains(&neigh.ifindex) {
                    return false;
                }
                let key = (neigh.ifindex, neigh.ip);
                match self.cache.neighs.get(&key) {
                    Some(cached) if *permanent && cached == neigh => false,
                    Some(_) | None if *permanent => {
                        // Changed under us, or a permanent entry weft did not write.
                        self.cache.add_neigh(neigh.clone());
                        true
                    }
                    Some(_) => {
                        // No longer permanent: not weft's entry any more.
                        self.cache.neighs.remove(&key);
                        true
                    }
                    None => false,
                }
            }
            KernelEvent::NeighDeleted(neigh) => {
                let key = (neigh.ifindex, neigh.ip);
                if self.cache.neighs.contains_key(&key) {
                    self.cache.neighs.remove(&key);
                    true
                } else {
                    false
                }
            }
            KernelEvent::FdbAdded { entry, owned_kind } => {
                if !self.devices.contains(&entry.ifindex) {
                    return false;
                }
                let key = (entry.ifindex, entry.mac);
                match self.cache.fdb.get(&key) {
                    Some(cached) if *owned_kind && cached == entry => false,
                    Some(_) | None if *owned_kind => {
                        self.cache.add_fdb(entry.clone());
                        true
                    }
                    Some(_) => {
                        self.cache.fdb.remove(&key);
                        true
                    }
                    None => false,
                }
            }
            KernelEvent::FdbDeleted(entry) => {
                let key = (entry.ifindex, entry.mac);
                if self.cache.fdb.get(&key) == Some(entry) {
                    self.cache.fdb.remove(&key);
                    true
                } else {
                    false
                }
            }
            KernelEvent::Overrun => {
                self.needs_refresh = true;
                true
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

    /// The kernel may have flushed the routes through `index` without telling: drop them from the
    /// cache (the next apply re-adds what is desired) and ask for a dump. True if any were cached.
    fn forget_routes_via(&mut self, index: u32) -> bool {
        let gone: Vec<Route> = self
            .cache
            .routes
            .values()
            .filter(|r| r.oif == index)
            .cloned()
            .collect();
        for r in &gone {
            self.cache.routes.remove(&r.dst);
        }
        if !gone.is_empty() {
            debug!(
                index,
                routes = gone.len(),
                "link changed under weft's routes"
            );
            self.needs_refresh = true;
        }
        !gone.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::RTPROT_WEFT;
    use crate::nl::RouteEvent;

    fn route(dst: &str, gw: [u8; 4], oif: u32) -> Route {
        Route {
            dst: dst.parse().expect("dst"),
            gateway: Ipv4Addr::from(gw),
            oif,
            onlink: false,
        }
    }

    fn ev(route: Route, protocol: u8, table: u32, priority: u32) -> RouteEvent {
        RouteEvent {
            route,
            protocol,
            table,
            priority,
        }
    }

    /// A reconciler whose cache holds `routes` (observe never touches the socket; creating an
    /// rtnetlink socket needs no privilege).
    fn with_cache(routes: &[Route]) -> (tokio::runtime::Runtime, Reconciler) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let nl = rt.block_on(async { Netlink::connect() }).expect("netlink");
        let mut rec = Reconciler::new(nl);
        rec.cache = KernelState::from_routes(routes.iter().cloned());
        rec.last_desired = rec.cache.clone();
        rec.needs_refresh = false;
        (rt, rec)
    }

    #[test]
    fn observe_route_events() {
        let a = route("10.244.2.0/24", [198, 18, 0, 2], 3);
        let (_rt, mut rec) = with_cache(std::slice::from_ref(&a));
        let main = 254;

        // Echo of weft's own write, and routes elsewhere: nothing to do.
        assert!(!rec.observe(&KernelEvent::RouteAdded(ev(
            a.clone(),
            RTPROT_WEFT,
            main,
            0
        ))));
        let other_table = ev(route("10.244.2.0/24", [198, 18, 0, 9], 3), 4, 100, 0);
        assert!(!rec.observe(&KernelEvent::RouteAdded(other_table)));
        let other_metric = ev(route("10.244.2.0/24", [198, 18, 0, 9], 3), 4, main, 10);
        assert!(!rec.observe(&KernelEvent::RouteAdded(other_metric)));
        let unrelated = ev(route("10.1.0.0/16", [198, 18, 0, 1], 3), 4, main, 0);
        assert!(!rec.observe(&KernelEvent::RouteAdded(unrelated.clone())));
        assert!(!rec.observe(&KernelEvent::RouteDeleted(unrelated)));
        // A delete of a route that differs from weft's (someone else's at that dst) is not ours.
        let not_ours = ev(
            route("10.244.2.0/24", [198, 18, 0, 9], 3),
            RTPROT_WEFT,
            main,
            0,
        );
        assert!(!rec.observe(&KernelEvent::RouteDeleted(not_ours)));
        assert_eq!(rec.current().routes.len(), 1);

        // `ip route replace` by someone else: weft's route is gone.
        let foreign = ev(route("10.244.2.0/24", [198, 18, 0, 33], 3), 3, main, 0);
        assert!(rec.observe(&KernelEvent::RouteAdded(foreign)));
        assert!(rec.current().is_empty());

        // A weft-protocol route weft did not write enters the cache (to be deleted if unwanted).
        let stray = route("10.244.9.0/24", [198, 18, 0, 9], 3);
        assert!(rec.observe(&KernelEvent::RouteAdded(ev(
            stray.clone(),
            RTPROT_WEFT,
            main,
            0
        ))));
        assert_eq!(rec.current().routes.get(&stray.dst), Some(&stray));

        // Deleted out of band.
        assert!(rec.observe(&KernelEvent::RouteDeleted(ev(stray, RTPROT_WEFT, main, 0))));
        assert!(rec.current().is_empty());
        assert!(!rec.needs_refresh());
    }

    #[test]
    fn observe_link_events() {
        let a = route("10.244.2.0/24", [198, 18, 0, 2], 3);
        let b = route("10.244.3.0/24", [198, 18, 1, 3], 4);
        let (_rt, mut rec) = with_cache(&[a.clone(), b.clone()]);

        // A link without weft routes: nothing.
        let down = |index| KernelEvent::LinkChanged {
            index,
            name: format!("if{index}"),
            up: false,
        };
        let up = |index| KernelEvent::LinkChanged {
            index,
            name: format!("if{index}"),
            up: true,
        };
        assert!(!rec.observe(&down(7)));
        assert!(
            !rec.observe(&up(3)),
            "link up with every desired route present"
        );
        assert!(!rec.needs_refresh());

        // Link 3 down: its routes were flushed silently.
        assert!(rec.observe(&down(3)));
        assert!(rec.needs_refresh());
        assert_eq!(rec.current(), &KernelState::from_routes([b.clone()]));
        // Coming back up: a desired route on it is missing, so re-apply.
        assert!(rec.observe(&up(3)));

        // Link 4 deleted, then an address deletion and an overrun.
        assert!(rec.observe(&KernelEvent::LinkDeleted {
            index: 4,
            name: "if4".into()
        }));
        assert!(rec.current().is_empty());
        rec.cache = KernelState::from_routes([a.clone()]);
        assert!(rec.observe(&KernelEvent::AddressDeleted {
            index: 3,
            addr: Ipv4Addr::new(198, 18, 0, 1),
            prefix_len: 24
        }));
        assert!(rec.current().is_empty());
        rec.needs_refresh = false;
        assert!(rec.observe(&KernelEvent::Overrun));
        assert!(rec.needs_refresh());
    }
}
