//! The reconciler's side of kernel notifications: [`Reconciler::observe`] updates the cache
//! from one event and says whether the desired state needs applying again (drift), with the
//! kernel's silent flushes (link down or gone, address removed, nexthop deleted) turned into
//! "the cache may be wrong" (see the module doc of `reconcile`).
use tracing::{debug, warn};

use super::Reconciler;
use crate::Route;
use crate::nl::{KernelEvent, RouteEvent};

impl Reconciler {
    /// Updates the cache from a kernel notification. Returns true when something weft owns (or
    /// wants) changed, so the caller should [`apply`](Self::apply) the desired state again:
    ///
    /// - a weft route deleted, or replaced by a route with other attributes or protocol at its
    ///   destination (table main, metric 0), or rewritten the other way (plain / nhid);
    /// - a weft-protocol route weft did not write (the next apply deletes it unless desired);
    /// - one of weft's nexthops deleted or replaced out of band (its routes went with it:
    ///   [`needs_refresh`](Self::needs_refresh) is set), or a weft-protocol nexthop weft did not
    ///   make (the next apply deletes it unless a route uses it);
    /// - a link with weft routes went down or away, lost its carrier (with weft nexthops on it)
    ///   or an IPv4 address, or the notification socket overflowed: the cache may be wrong,
    ///   [`needs_refresh`](Self::needs_refresh) is set;
    /// - a link came up that a desired route uses but the kernel lacks (a write that failed
    ///   while the link was down can succeed now), or whose routes wait to move onto nexthops.
    ///
    /// Notifications caused by weft's own writes return false.
    pub fn observe(&mut self, ev: &KernelEvent) -> bool {
        match ev {
            KernelEvent::RouteAdded(e) | KernelEvent::RouteDeleted(e) if e.blackhole => {
                self.observe_blackhole(e, matches!(ev, KernelEvent::RouteAdded(_)))
            }
            KernelEvent::RouteAdded(e) => {
                let owned = self.owns_route(e);
                if !owned {
                    // Someone else's route on one of weft's nexthops keeps that nexthop alive.
                    if let Some(id) = e.nhid {
                        self.nh.pin(id);
                    }
                }
                if !e.in_weft_slot() {
                    return false;
                }
                let route = self.resolve(e);
                let dst = route.dst;
                let same_writing = self.nh.route_nh(&dst) == e.nhid;
                match self.cache.routes.get(&dst) {
                    Some(cached) if owned && *cached == route && same_writing => false,
                    Some(cached) => {
                        debug!(ours = %cached, now = %route, nhid = ?e.nhid, protocol = e.protocol, "weft's route was replaced");
                        if owned {
                            self.cache.routes.insert(dst, route);
                            self.nh.set_route(dst, e.nhid);
                        } else {
                            self.cache.routes.remove(&dst);
                            self.nh.set_route(dst, None);
                        }
                        self.update_misfit(dst);
                        true
                    }
                    None if owned => {
                        debug!(route = %route, nhid = ?e.nhid, "a weft-protocol route appeared");
                        self.cache.routes.insert(dst, route);
                        self.nh.set_route(dst, e.nhid);
                        self.update_misfit(dst);
                        true
                    }
                    None => false,
                }
            }
            KernelEvent::RouteDeleted(e) => {
                let dst = e.route.dst;
                let ours = self.owns_route(e)
                    && self.nh.route_nh(&dst) == e.nhid
                    && match e.nhid {
                        Some(_) => self.cache.routes.contains_key(&dst),
                        None => self.cache.routes.get(&dst) == Some(&e.route),
                    };
                if ours {
                    debug!(route = %e.route, nhid = ?e.nhid, "weft's route was deleted");
                    self.cache.routes.remove(&dst);
                    self.nh.set_route(dst, None);
                    self.misfits.remove(&dst);
                }
                ours
            }
            KernelEvent::NexthopAdded(n) => {
                if self.nh.is_ours(n.id) {
                    if n.is_weft() && n.hop().is_some() && n.hop() == self.nh.hop_of(n.id) {
                        return false; // weft's own add
                    }
                    debug!(nexthop = %n, "weft's nexthop was replaced");
                    self.nexthop_lost(n.id, true);
                    return true;
                }
                if self.nh.owns(n) {
                    debug!(nexthop = %n, "a weft-protocol nexthop appeared");
                    self.nh.added(n.id, n.hop());
                    return true;
                }
                self.nh.taken(n.id);
                for member in &n.group {
                    self.nh.pin(*member);
                }
                false
            }
            KernelEvent::NexthopDeleted(n) => {
                if self.nh.is_ours(n.id) {
                    debug!(nexthop = %n, "weft's nexthop was deleted");
                    self.nexthop_lost(n.id, false);
                    true
                } else {
                    self.nh.released(n.id);
                    false
                }
            }
            KernelEvent::LinkChanged {
                index,
                name,
                up,
                carrier,
                device,
            } => {
                self.names.insert(*index, name.clone());
                let device_changed = device.as_ref().is_some_and(|d| self.device_seen(d));
                let entries = if *up && *carrier {
                    self.links_down.remove(index);
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
                        || self
                            .misfits
                            .iter()
                            .any(|dst| c.routes.get(dst).is_some_and(|r| r.oif == *index))
                } else {
                    self.links_down.insert(*index);
                    if *up {
                        // Carrier lost: the kernel dropped the nexthops on the link and their
                        // routes; plain routes stay.
                        self.forget_nexthops_via(*index)
                    } else {
                        self.forget_routes_via(*index)
                    }
                };
                device_changed || entries
            }
            KernelEvent::LinkDeleted { index, name } => {
                self.names.remove(index);
                self.links_down.remove(index);
                let routes = self.forget_routes_via(*index);
                let ours = self
                    .cache
                    .devices
                    .get(name)
                    .is_some_and(|d| d.index == *index);
                let wanted = ours && self.last_desired.devices.contains_key(name);
                if ours {
                    self.cache.forget_device(name, *index);
                }
                if wanted {
                    warn!(
                        "{name} was deleted by someone else; re-creating it with every entry on it"
                    );
                }
                routes || wanted
            }
            KernelEvent::AddressAdded {
                index,
                addr,
                prefix_len,
            } => match self.owned_addr(*index, *addr, *prefix_len) {
                Some(a) if !self.cache.addrs.contains(&a) => {
                    let unwanted = !self.last_desired.addrs.contains(&a);
                    self.cache.add_addr(a);
                    unwanted
                }
                _ => false,
            },
            KernelEvent::AddressDeleted {
                index,
                addr,
                prefix_len,
            } => {
                let routes = self.forget_routes_via(*index);
                let wanted = match self.owned_addr(*index, *addr, *prefix_len) {
                    Some(a)
                        if self.cache.addrs.remove(&a) && self.last_desired.addrs.contains(&a) =>
                    {
                        warn!("ip addr: {a} was removed by someone else; restoring it");
                        true
                    }
                    _ => false,
                };
                routes || wanted
            }
            KernelEvent::Address6Changed {
                index,
                addr,
                prefix_len,
                added,
            } => match self.owned_addr(*index, *addr, *prefix_len) {
                Some(a) if *added => {
                    let unwanted = !self.last_desired.addrs.contains(&a);
                    self.cache.add_addr(a);
                    unwanted
                }
                Some(a) if self.cache.addrs.remove(&a) && self.last_desired.addrs.contains(&a) => {
                    warn!("ip addr: {a} was removed by someone else; restoring it");
                    true
                }
                _ => false,
            },
            KernelEvent::NeighAdded { neigh, permanent } => {
                if !self.owns_index(neigh.ifindex) {
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
                if !self.owns_index(entry.ifindex) {
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

    /// A blackhole route added (`added`) or deleted: weft's (`--ip-blackhole-route`) updates the
    /// cache; true when the kernel now differs from the desired state. Others' blackholes are not
    /// weft's business.
    fn observe_blackhole(&mut self, e: &RouteEvent, added: bool) -> bool {
        let dst = e.route.dst;
        if !e.is_weft_blackhole() || !self.owner.owns_dst(&dst) {
            return false;
        }
        let wanted = self.last_desired.blackholes.contains(&dst);
        if added {
            // An echo of weft's own write changes nothing; one weft did not write is unwanted.
            self.cache.blackholes.insert(dst) && !wanted
        } else {
            if self.cache.blackholes.remove(&dst) && wanted {
                warn!("ip route: blackhole {dst} was removed by someone else; restoring it");
                return true;
            }
            false
        }
    }

    /// The meaning of a notified route: a route on one of weft's nexthops means that
    /// nexthop's hop; others mean what the kernel reported (on someone else's nexthop, the
    /// gateway and device only in `nexthop_compat_mode`).
    fn resolve(&self, e: &RouteEvent) -> Route {
        match e.nhid.and_then(|id| self.nh.hop_of(id)) {
            Some(hop) => hop.route(e.route.dst),
            None => e.route.clone(),
        }
    }

    /// weft's nexthop `id` is gone (deleted, dropped, or replaced by someone else when
    /// `replaced`): the routes on it went with it. Forgets them and asks for a dump.
    pub(super) fn nexthop_lost(&mut self, id: u32, replaced: bool) {
        for dst in self.nh.removed(id, replaced) {
            self.cache.routes.remove(&dst);
            self.misfits.remove(&dst);
        }
        self.needs_refresh = true;
    }

    /// The kernel dropped weft's nexthops through `index` (and the routes on them) without
    /// telling. True if any were known.
    fn forget_nexthops_via(&mut self, index: u32) -> bool {
        let ids = self.nh.ids_via(index);
        for id in &ids {
            self.nexthop_lost(*id, false);
        }
        if !ids.is_empty() {
            debug!(
                index,
                nexthops = ids.len(),
                "link lost its carrier under weft's nexthops"
            );
        }
        !ids.is_empty()
    }

    /// The kernel may have flushed the routes through `index` without telling: drop them from the
    /// cache (the next apply re-adds what is desired) and ask for a dump. True if any were cached.
    fn forget_routes_via(&mut self, index: u32) -> bool {
        let nexthops = self.forget_nexthops_via(index);
        let gone: Vec<Route> = self
            .cache
            .routes
            .values()
            .filter(|r| r.oif == index)
            .cloned()
            .collect();
        for r in &gone {
            self.cache.routes.remove(&r.dst);
            self.nh.set_route(r.dst, None);
            self.misfits.remove(&r.dst);
        }
        if !gone.is_empty() {
            debug!(
                index,
                routes = gone.len(),
                "link changed under weft's routes"
            );
            self.needs_refresh = true;
        }
        nexthops || !gone.is_empty()
    }
}
