//! The plan: the kernel objects weft owns, and the operations that turn one state into another.
//!
//! Everything here is pure. [`diff`] compares what a backend wants ([`KernelState`] from
//! [`crate::Backend::desired`]) with what the reconciler last saw in the kernel and returns the
//! writes that make the kernel match, and nothing else: equal states give zero operations.
//! The state holds weft's devices and their addresses ([`crate::device`]) as well as the routes,
//! neighbours and FDB entries on them, so one diff creates, fixes or removes a device in the
//! right order around the entries that need it.
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use crate::RTPROT_WEFT;
pub use crate::device::{Addr, Device, DeviceDiff, DeviceKind, VxlanParams};
pub use neigh::{Fdb, Mac, Neigh, fmt_mac};

mod neigh;

/// An IPv4 or IPv6 route in table main with protocol [`RTPROT_WEFT`] at weft's metric
/// ([`route_metric`]: 0 for IPv4, [`V6_METRIC`] for IPv6): the only kind of route weft writes.
/// `gateway` is of the family of `dst`.
///
/// `gateway` is unspecified (`0.0.0.0`, `::`) only for a weft-protocol route found in the kernel
/// without a gateway (weft never writes one; it shows up so it can be purged). `oif` is 0 when
/// the kernel route has no output interface.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub dst: IpNet,
    pub gateway: IpAddr,
    pub oif: u32,
    pub onlink: bool,
}

impl Route {
    /// Formats the route like `ip route` does, with the device named when `name` is known
    /// (`10.244.2.0/24 via 198.18.0.2 dev eth0`), else by index (`dev 3`).
    pub fn display_with<'a>(&'a self, name: Option<&'a str>) -> impl fmt::Display + 'a {
        RouteDisplay { route: self, name }
    }
}

struct RouteDisplay<'a> {
    route: &'a Route,
    name: Option<&'a str>,
}

impl fmt::Display for RouteDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.route;
        write!(f, "{}", r.dst)?;
        if !r.gateway.is_unspecified() {
            write!(f, " via {}", r.gateway)?;
        }
        match self.name {
            Some(name) => write!(f, " dev {name}")?,
            None if r.oif != 0 => write!(f, " dev {}", r.oif)?,
            None => {}
        }
        if r.onlink {
            f.write_str(" onlink")?;
        }
        Ok(())
    }
}

/// `10.244.2.0/24 via 198.18.0.2 dev 3 onlink` (the device by index; see [`Route::display_with`]).
impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.display_with(None).fmt(f)
    }
}

/// The metric of weft's IPv6 routes: what the kernel gives an IPv6 route written without one
/// (`ip -6 route add` shows `metric 1024`; IPv6 has no metric 0, the kernel turns 0 into 1024).
/// weft writes it explicitly and finds its IPv6 routes at it, so a dump compares equal to what
/// weft wrote. IPv4 routes stay at metric 0, as flanneld writes them.
pub const V6_METRIC: u32 = 1024;

/// The metric weft writes a route to `dst` with: 0 for IPv4, [`V6_METRIC`] for IPv6.
pub fn route_metric(dst: &IpNet) -> u32 {
    match dst {
        IpNet::V4(_) => 0,
        IpNet::V6(_) => V6_METRIC,
    }
}

/// The unspecified address of `dst`'s family (`0.0.0.0` or `::`): the gateway of a route that
/// has none.
pub fn unspecified_for(dst: &IpNet) -> IpAddr {
    match dst {
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpNet::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

/// The metric of weft's blackhole route (`--ip-blackhole-route`): `blackhole <own subnet> proto
/// 87 metric 4096` in table main. Not flanneld's metric 0: the bridge's connected route to the
/// same subnet (`10.244.1.0/24 dev cni0 proto kernel`) holds metric 0, and a blackhole there would
/// be refused (or, written with replace, would replace it and cut the node's own pods off). At
/// a higher metric it sits behind that route and catches the subnet's traffic only when no
/// device serves it (cni0 missing or flushed, or with Canal's per-pod /32 routes the addresses
/// no pod holds), so that traffic is dropped instead of following the default route.
pub const BLACKHOLE_METRIC: u32 = 4096;

/// The kernel objects weft owns (or wants to own), keyed so that two objects with one key cannot
/// coexist in the kernel: devices by name, their addresses by device name and address, routes by
/// destination (table main, at weft's metric for the family: [`route_metric`]), neighbours by device and IP, FDB entries by device and
/// MAC.
///
/// Devices and addresses belong to the backends, not to peers: the per-peer operations
/// ([`remove_keys`](Self::remove_keys), [`collides`](Self::collides), [`diff_at`]) leave them
/// alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelState {
    pub devices: BTreeMap<String, Device>,
    pub addrs: BTreeSet<Addr>,
    pub routes: BTreeMap<IpNet, Route>,
    pub neighs: BTreeMap<(u32, IpAddr), Neigh>,
    pub fdb: BTreeMap<(u32, Mac), Fdb>,
    /// `blackhole <dst> proto 87 metric` [`BLACKHOLE_METRIC`] routes in table main (the node's
    /// own subnet with `--ip-blackhole-route`).
    pub blackholes: BTreeSet<IpNet>,
}

impl KernelState {
    /// A state holding these routes (a later route with the same destination wins).
    pub fn from_routes(routes: impl IntoIterator<Item = Route>) -> Self {
        KernelState {
            routes: routes.into_iter().map(|r| (r.dst, r)).collect(),
            ..KernelState::default()
        }
    }

    pub fn add_device(&mut self, d: Device) {
        self.devices.insert(d.name.clone(), d);
    }

    pub fn add_addr(&mut self, a: Addr) {
        self.addrs.insert(a);
    }

    /// The device with ifindex `index`, if this state holds it.
    pub fn device_at(&self, index: u32) -> Option<&Device> {
        self.devices.values().find(|d| d.index == index)
    }

    /// Forgets everything on the device `name` with ifindex `index` and the device itself (what
    /// the kernel removes with a link): its addresses, neighbours, FDB entries and the routes
    /// through it.
    pub fn forget_device(&mut self, name: &str, index: u32) {
        if self.devices.get(name).is_some_and(|d| d.index == index) {
            self.devices.remove(name);
        }
        self.addrs.retain(|a| a.dev != name);
        self.forget_entries_on(index);
    }

    /// Forgets the neighbours, FDB entries and routes on ifindex `index`.
    pub fn forget_entries_on(&mut self, index: u32) {
        self.neighs.retain(|(i, _), _| *i != index);
        self.fdb.retain(|(i, _), _| *i != index);
        self.routes.retain(|_, r| r.oif != index);
    }

    /// Moves every entry planned on ifindex `from` to `to` (a device the backend planned on
    /// index `from` exists at `to`): routes through it, neighbours and FDB entries.
    pub fn move_entries(&mut self, from: u32, to: u32) {
        for r in self.routes.values_mut() {
            if r.oif == from {
                r.oif = to;
            }
        }
        let keys: Vec<(u32, IpAddr)> = self
            .neighs
            .keys()
            .filter(|k| k.0 == from)
            .copied()
            .collect();
        for k in keys {
            if let Some(n) = self.neighs.remove(&k) {
                self.add_neigh(Neigh { ifindex: to, ..n });
            }
        }
        let keys: Vec<(u32, Mac)> = self.fdb.keys().filter(|k| k.0 == from).copied().collect();
        for k in keys {
            if let Some(e) = self.fdb.remove(&k) {
                self.add_fdb(Fdb { ifindex: to, ..e });
            }
        }
    }

    pub fn add_route(&mut self, r: Route) {
        self.routes.insert(r.dst, r);
    }

    pub fn add_neigh(&mut self, n: Neigh) {
        self.neighs.insert((n.ifindex, n.ip), n);
    }

    pub fn add_fdb(&mut self, e: Fdb) {
        self.fdb.insert((e.ifindex, e.mac), e);
    }

    /// Adds everything of `other` that this state does not hold yet (entries already here win),
    /// e.g. the states of two backends serving different peers during a backend switch.
    pub fn merge(&mut self, other: KernelState) {
        if self.is_empty() {
            // The usual case (one backend): take the maps as they are.
            *self = other;
            return;
        }
        for (k, v) in other.devices {
            self.devices.entry(k).or_insert(v);
        }
        self.addrs.extend(other.addrs);
        for (k, v) in other.routes {
            self.routes.entry(k).or_insert(v);
        }
        for (k, v) in other.neighs {
            self.neighs.entry(k).or_insert(v);
        }
        for (k, v) in other.fdb {
            self.fdb.entry(k).or_insert(v);
        }
        self.blackholes.extend(other.blackholes);
    }

    /// Adds everything of `other`, replacing entries with the same key (unlike [`merge`](Self::merge)).
    pub fn extend(&mut self, other: KernelState) {
        self.devices.extend(other.devices);
        self.addrs.extend(other.addrs);
        self.routes.extend(other.routes);
        self.neighs.extend(other.neighs);
        self.fdb.extend(other.fdb);
        self.blackholes.extend(other.blackholes);
    }

    /// Removes the entries at the keys of `keys` (its values are ignored); devices and addresses
    /// stay.
    pub fn remove_keys(&mut self, keys: &KernelState) {
        for dst in keys.routes.keys() {
            self.routes.remove(dst);
        }
        for key in keys.neighs.keys() {
            self.neighs.remove(key);
        }
        for key in keys.fdb.keys() {
            self.fdb.remove(key);
        }
    }

    /// True when some entry key of this state is held by `taken` and not by `freed` (values
    /// ignored): two writers would want one kernel object. Devices and addresses are not
    /// compared (backends share them by design).
    pub fn collides(&self, taken: &KernelState, freed: &KernelState) -> bool {
        fn any<K: Ord, V>(
            mine: &BTreeMap<K, V>,
            taken: &BTreeMap<K, V>,
            freed: &BTreeMap<K, V>,
        ) -> bool {
            mine.keys()
                .any(|k| taken.contains_key(k) && !freed.contains_key(k))
        }
        any(&self.routes, &taken.routes, &freed.routes)
            || any(&self.neighs, &taken.neighs, &freed.neighs)
            || any(&self.fdb, &taken.fdb, &freed.fdb)
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
            && self.addrs.is_empty()
            && self.routes.is_empty()
            && self.neighs.is_empty()
            && self.fdb.is_empty()
            && self.blackholes.is_empty()
    }

    /// The same state without devices, addresses and blackholes (what peers need).
    pub fn entries_only(mut self) -> KernelState {
        self.devices.clear();
        self.addrs.clear();
        self.blackholes.clear();
        self
    }

    /// Records the effect of a successful operation.
    pub fn record(&mut self, op: &KernelOp) {
        match op {
            KernelOp::LinkAdd(d) => self.add_device(d.clone()),
            KernelOp::LinkSet(d) => {
                if let Some(have) = self.devices.get_mut(&d.name) {
                    have.mtu = d.mtu;
                    if d.mac.is_some() {
                        have.mac = d.mac;
                    }
                    have.up = d.up;
                }
            }
            KernelOp::LinkDel(d) => self.forget_device(&d.name, d.index),
            KernelOp::AddrAdd(a) => self.add_addr(a.clone()),
            KernelOp::AddrDel(a) => {
                self.addrs.remove(a);
            }
            KernelOp::RouteReplace(r) => self.add_route(r.clone()),
            KernelOp::RouteDel(r) => {
                self.routes.remove(&r.dst);
            }
            KernelOp::NeighReplace(n) => self.add_neigh(n.clone()),
            KernelOp::NeighDel(n) => {
                self.neighs.remove(&(n.ifindex, n.ip));
            }
            KernelOp::FdbReplace(e) => self.add_fdb(e.clone()),
            KernelOp::FdbDel(e) => {
                self.fdb.remove(&(e.ifindex, e.mac));
            }
            KernelOp::BlackholeReplace(dst) => {
                self.blackholes.insert(*dst);
            }
            KernelOp::BlackholeDel(dst) => {
                self.blackholes.remove(dst);
            }
        }
    }
}

/// One kernel write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelOp {
    /// `ip link add <device>`, then `ip link set <name> up` when it is wanted up (one message).
    /// The device's `index` is the planned one; the kernel picks the real one.
    LinkAdd(Device),
    /// `ip link set <name> mtu <mtu> [address <mac>] up|down` on the existing device at `index`.
    LinkSet(Device),
    /// `ip link del <name>` (the device at `index`): its addresses, neighbours, FDB entries and
    /// routes go with it. "Already gone" is success.
    LinkDel(Device),
    /// `ip addr add <addr> dev <dev>`.
    AddrAdd(Addr),
    /// `ip addr del <addr> dev <dev>` ("already gone" is success).
    AddrDel(Addr),
    /// `ip route replace <route> proto 87`: creates the route or replaces the one with its
    /// destination (idempotent).
    RouteReplace(Route),
    /// `ip route del <route> proto 87`: only a route with exactly these attributes and weft's
    /// protocol is removed; "already gone" counts as success.
    RouteDel(Route),
    /// `ip neigh replace <ip> lladdr <mac> dev <dev> nud permanent`.
    NeighReplace(Neigh),
    /// `ip neigh del <ip> dev <dev>` ("already gone" is success).
    NeighDel(Neigh),
    /// `bridge fdb replace <mac> dev <dev> dst <ip> self permanent`.
    FdbReplace(Fdb),
    /// `bridge fdb del <mac> dev <dev> dst <ip> self` ("already gone" is success).
    FdbDel(Fdb),
    /// `ip route replace blackhole <dst> proto 87 metric 4096` ([`BLACKHOLE_METRIC`]).
    BlackholeReplace(IpNet),
    /// `ip route del blackhole <dst> proto 87 metric 4096` ("already gone" is success).
    BlackholeDel(IpNet),
}

impl KernelOp {
    /// The `ip` command equal to this operation, with device names when `name_of` knows them.
    pub fn command(&self, name_of: impl Fn(u32) -> Option<String>) -> String {
        let dev = |i: u32| name_of(i).unwrap_or_else(|| i.to_string());
        match self {
            KernelOp::LinkAdd(d) => {
                let spec = d.spec_with(&|i| name_of(i));
                if d.up {
                    format!("ip link add {spec} && ip link set {} up", d.name)
                } else {
                    format!("ip link add {spec}")
                }
            }
            KernelOp::LinkSet(d) => {
                let mut s = format!("ip link set {} mtu {}", d.name, d.mtu);
                if let Some(mac) = &d.mac {
                    s += &format!(" address {}", fmt_mac(mac));
                }
                s + if d.up { " up" } else { " down" }
            }
            KernelOp::LinkDel(d) => format!("ip link del {}", d.name),
            KernelOp::AddrAdd(a) => format!("ip addr add {a}"),
            KernelOp::AddrDel(a) => format!("ip addr del {a}"),
            KernelOp::RouteReplace(r) | KernelOp::RouteDel(r) => {
                let verb = if matches!(self, KernelOp::RouteDel(_)) {
                    "del"
                } else {
                    "replace"
                };
                let name = name_of(r.oif);
                match r.dst {
                    IpNet::V4(_) => format!(
                        "ip route {verb} {} proto {RTPROT_WEFT}",
                        r.display_with(name.as_deref())
                    ),
                    IpNet::V6(_) => format!(
                        "ip -6 route {verb} {} proto {RTPROT_WEFT} metric {V6_METRIC}",
                        r.display_with(name.as_deref())
                    ),
                }
            }
            KernelOp::NeighReplace(n) => format!(
                "ip {}neigh replace {} lladdr {} dev {} nud permanent",
                family_flag(&n.ip),
                n.ip,
                fmt_mac(&n.mac),
                dev(n.ifindex)
            ),
            KernelOp::NeighDel(n) => format!(
                "ip {}neigh del {} dev {}",
                family_flag(&n.ip),
                n.ip,
                dev(n.ifindex)
            ),
            KernelOp::FdbReplace(e) => format!(
                "bridge fdb replace {} dev {} dst {} self permanent",
                fmt_mac(&e.mac),
                dev(e.ifindex),
                e.dst
            ),
            KernelOp::FdbDel(e) => format!(
                "bridge fdb del {} dev {} dst {} self",
                fmt_mac(&e.mac),
                dev(e.ifindex),
                e.dst
            ),
            KernelOp::BlackholeReplace(dst) => format!(
                "ip route replace blackhole {dst} proto {RTPROT_WEFT} metric {BLACKHOLE_METRIC}"
            ),
            KernelOp::BlackholeDel(dst) => format!(
                "ip route del blackhole {dst} proto {RTPROT_WEFT} metric {BLACKHOLE_METRIC}"
            ),
        }
    }
}

/// `-6 ` for an IPv6 address (`ip -6 neigh …`), nothing for IPv4.
fn family_flag(ip: &IpAddr) -> &'static str {
    if ip.is_ipv6() { "-6 " } else { "" }
}

/// `ip route replace 10.244.2.0/24 via 198.18.0.2 dev 3 proto 87`.
impl fmt::Display for KernelOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.command(|_| None))
    }
}

/// The operations that turn `current` into `desired`.
///
/// - An object in `current` that `desired` does not have is deleted.
/// - An object in `desired` that `current` lacks, or has with other attributes, is replaced
///   (a replace overwrites the old object in one step, so no delete precedes it). A device is
///   created when missing, changed in place (`ip link set`) when only its MTU, MAC or state
///   differ, and deleted and created again when an attribute fixed at creation differs
///   ([`Device::differences`]).
/// - Equal states give no operations.
///
/// Order: first the devices ([`diff_devices`]: replacements, creations, in-place changes, then
/// address deletes and adds), so every entry finds its device; then the entries
/// ([`diff_entries`]): route deletes, neighbour and FDB replaces, route replaces, FDB and
/// neighbour deletes, blackhole deletes and replaces; last the deletes of devices no one wants. Routes are removed before, and
/// added after, the ARP/FDB entries their onlink gateway needs, so the kernel never sends traffic
/// to a gateway it would have to resolve (flannel's per-peer order). Entries a route no longer
/// needs go late: a peer moving to another path (a vxlan peer that switched to host-gw, a new
/// VTEP MAC) gets its new route in one replace while its old ARP/FDB entries still back the old
/// one, so no packet meets a half-removed path. Entries on a device that is deleted (unwanted or
/// replaced) are not deleted one by one: the kernel removes them with the device, after the
/// entries elsewhere have moved. Within each kind by key (ascending). Deterministic, so tests and
/// `weft status` output are stable.
///
/// Entries on a device being created carry the index the backend planned (see
/// [`Device::index`]); the reconciler moves them to the real index before writing them.
pub fn diff(desired: &KernelState, current: &KernelState) -> Vec<KernelOp> {
    let mut ops = diff_devices(desired, current);
    ops.extend(diff_entries(desired, current));
    ops
}

/// The device part of [`diff`], which runs before any entry: for each wanted device (by name) a
/// replacement (`LinkDel` + `LinkAdd`), a creation or an in-place change, then the address
/// deletes and adds of the wanted devices.
pub fn diff_devices(desired: &KernelState, current: &KernelState) -> Vec<KernelOp> {
    let mut ops = Vec::new();
    // Devices made anew (missing or replaced): none of their addresses exist then.
    let mut fresh: BTreeSet<&str> = BTreeSet::new();
    for (name, want) in &desired.devices {
        match current.devices.get(name) {
            None => {
                ops.push(KernelOp::LinkAdd(want.clone()));
                fresh.insert(name);
            }
            Some(have) => {
                let d = want.differences(have);
                if !d.fixed.is_empty() {
                    ops.push(KernelOp::LinkDel(have.clone()));
                    ops.push(KernelOp::LinkAdd(want.clone()));
                    fresh.insert(name);
                } else if !d.settable.is_empty() {
                    ops.push(KernelOp::LinkSet(Device {
                        index: have.index,
                        ..want.clone()
                    }));
                }
            }
        }
    }
    let kept = |dev: &str| desired.devices.contains_key(dev) && !fresh.contains(dev);
    ops.extend(
        current
            .addrs
            .iter()
            .filter(|a| kept(&a.dev) && !desired.addrs.contains(*a))
            .cloned()
            .map(KernelOp::AddrDel),
    );
    ops.extend(
        desired
            .addrs
            .iter()
            .filter(|a| fresh.contains(a.dev.as_str()) || !current.addrs.contains(*a))
            .cloned()
            .map(KernelOp::AddrAdd),
    );
    ops
}

/// The entry part of [`diff`], after the devices: the route, neighbour and FDB operations in
/// their order, then `LinkDel` for each device of `current` no one wants. Entries of `current`
/// on a device that goes (unwanted, or replaced by [`diff_devices`]) are left to the kernel,
/// which removes them with it.
pub fn diff_entries(desired: &KernelState, current: &KernelState) -> Vec<KernelOp> {
    let mut gone: BTreeSet<u32> = BTreeSet::new();
    let mut unwanted = Vec::new();
    for (name, have) in &current.devices {
        match desired.devices.get(name) {
            None => {
                gone.insert(have.index);
                unwanted.push(have.clone());
            }
            Some(want) if !want.differences(have).fixed.is_empty() => {
                gone.insert(have.index);
            }
            Some(_) => {}
        }
    }
    let current = if gone.is_empty() {
        Cow::Borrowed(current)
    } else {
        let mut after = current.clone();
        for index in &gone {
            after.forget_entries_on(*index);
        }
        Cow::Owned(after)
    };
    let current = current.as_ref();
    let mut ops = Vec::new();
    ops.extend(extra(&desired.routes, &current.routes).map(KernelOp::RouteDel));
    ops.extend(changed(&desired.neighs, &current.neighs).map(KernelOp::NeighReplace));
    ops.extend(changed(&desired.fdb, &current.fdb).map(KernelOp::FdbReplace));
    ops.extend(changed(&desired.routes, &current.routes).map(KernelOp::RouteReplace));
    ops.extend(extra(&desired.fdb, &current.fdb).map(KernelOp::FdbDel));
    ops.extend(extra(&desired.neighs, &current.neighs).map(KernelOp::NeighDel));
    ops.extend(
        current
            .blackholes
            .difference(&desired.blackholes)
            .copied()
            .map(KernelOp::BlackholeDel),
    );
    ops.extend(
        desired
            .blackholes
            .difference(&current.blackholes)
            .copied()
            .map(KernelOp::BlackholeReplace),
    );
    ops.extend(unwanted.into_iter().map(KernelOp::LinkDel));
    ops
}

/// [`diff`] restricted to the keys of `touched` (its values are ignored): the operations for those
/// keys only, in `diff`'s order. When `desired` and `current` agree on every other key, this is
/// exactly `diff(desired, current)`, at the cost of the touched keys instead of every peer's
/// entries: the incremental path for a lease change.
pub fn diff_at(
    desired: &KernelState,
    current: &KernelState,
    touched: &KernelState,
) -> Vec<KernelOp> {
    let routes = at(&desired.routes, &current.routes, &touched.routes);
    let neighs = at(&desired.neighs, &current.neighs, &touched.neighs);
    let fdb = at(&desired.fdb, &current.fdb, &touched.fdb);
    let mut ops = Vec::new();
    ops.extend(routes.del.into_iter().map(KernelOp::RouteDel));
    ops.extend(neighs.replace.into_iter().map(KernelOp::NeighReplace));
    ops.extend(fdb.replace.into_iter().map(KernelOp::FdbReplace));
    ops.extend(routes.replace.into_iter().map(KernelOp::RouteReplace));
    ops.extend(fdb.del.into_iter().map(KernelOp::FdbDel));
    ops.extend(neighs.del.into_iter().map(KernelOp::NeighDel));
    ops
}

/// What one kind of object needs at some keys: replaces and deletes, each in key order.
struct AtKeys<V> {
    replace: Vec<V>,
    del: Vec<V>,
}

fn at<K: Ord, V: Clone + PartialEq>(
    desired: &BTreeMap<K, V>,
    current: &BTreeMap<K, V>,
    touched: &BTreeMap<K, V>,
) -> AtKeys<V> {
    let mut out = AtKeys {
        replace: Vec::new(),
        del: Vec::new(),
    };
    for k in touched.keys() {
        match (desired.get(k), current.get(k)) {
            (Some(want), have) if have != Some(want) => out.replace.push(want.clone()),
            (None, Some(have)) => out.del.push(have.clone()),
            _ => {}
        }
    }
    out
}

/// Objects of `current` whose key `desired` lacks. Both maps are walked once in key order
/// (a merge, no lookups): a diff runs on every lease change, over every peer's entries.
fn extra<'a, K: Ord, V: Clone>(
    desired: &'a BTreeMap<K, V>,
    current: &'a BTreeMap<K, V>,
) -> impl Iterator<Item = V> + 'a {
    let mut want = desired.keys().peekable();
    current
        .iter()
        .filter(move |(k, _)| {
            while want.next_if(|w| *w < *k).is_some() {}
            want.peek() != Some(k)
        })
        .map(|(_, v)| v.clone())
}

/// Objects of `desired` that `current` lacks or has with other attributes (a merge, as in
/// [`extra`]).
fn changed<'a, K: Ord, V: Clone + PartialEq>(
    desired: &'a BTreeMap<K, V>,
    current: &'a BTreeMap<K, V>,
) -> impl Iterator<Item = V> + 'a {
    let mut have = current.iter().peekable();
    desired
        .iter()
        .filter(move |(k, v)| {
            while have.next_if(|(h, _)| *h < *k).is_some() {}
            !matches!(have.peek(), Some((h, hv)) if h == k && hv == v)
        })
        .map(|(_, v)| v.clone())
}

#[cfg(test)]
mod tests;
