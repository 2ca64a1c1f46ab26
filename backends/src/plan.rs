//! The plan: the kernel objects weft owns, and the operations that turn one state into another.
//!
//! Everything here is pure. [`diff`] compares what a backend wants ([`KernelState`] from
//! [`crate::Backend::desired`]) with what the reconciler last saw in the kernel and returns the
//! writes that make the kernel match, and nothing else: equal states give zero operations.
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::RTPROT_WEFT;

/// An IPv4 route in table main with protocol [`RTPROT_WEFT`] and metric 0: the only kind of route
/// weft writes.
///
/// `gateway` is `0.0.0.0` only for a weft-protocol route found in the kernel without a gateway
/// (weft never writes one; it shows up so it can be purged). `oif` is 0 when the kernel route has
/// no output interface.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub dst: Ipv4Net,
    pub gateway: Ipv4Addr,
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

/// A MAC address.
pub type Mac = [u8; 6];

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A permanent IPv4 neighbour (ARP) entry on a weft device:
/// `10.244.2.0 lladdr 02:00:00:00:00:02 dev flannel.1 nud permanent`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Neigh {
    pub ifindex: u32,
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

impl fmt::Display for Neigh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} lladdr {} dev {}",
            self.ip,
            fmt_mac(&self.mac),
            self.ifindex
        )
    }
}

/// A permanent forwarding entry of a vxlan device, one per remote VTEP MAC:
/// `02:00:00:00:00:02 dev flannel.1 dst 198.18.0.2 self permanent`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fdb {
    pub ifindex: u32,
    pub mac: Mac,
    pub dst: Ipv4Addr,
}

impl fmt::Display for Fdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} dev {} dst {}",
            fmt_mac(&self.mac),
            self.ifindex,
            self.dst
        )
    }
}

/// The kernel objects weft owns (or wants to own), keyed so that two objects with one key cannot
/// coexist in the kernel: routes by destination (table main, metric 0), neighbours by device and
/// IP, FDB entries by device and MAC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelState {
    pub routes: BTreeMap<Ipv4Net, Route>,
    pub neighs: BTreeMap<(u32, Ipv4Addr), Neigh>,
    pub fdb: BTreeMap<(u32, Mac), Fdb>,
}

impl KernelState {
    /// A state holding these routes (a later route with the same destination wins).
    pub fn from_routes(routes: impl IntoIterator<Item = Route>) -> Self {
        KernelState {
            routes: routes.into_iter().map(|r| (r.dst, r)).collect(),
            ..KernelState::default()
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
        for (k, v) in other.routes {
            self.routes.entry(k).or_insert(v);
        }
        for (k, v) in other.neighs {
            self.neighs.entry(k).or_insert(v);
        }
        for (k, v) in other.fdb {
            self.fdb.entry(k).or_insert(v);
        }
    }

    /// Adds everything of `other`, replacing entries with the same key (unlike [`merge`](Self::merge)).
    pub fn extend(&mut self, other: KernelState) {
        self.routes.extend(other.routes);
        self.neighs.extend(other.neighs);
        self.fdb.extend(other.fdb);
    }

    /// Removes the entries at the keys of `keys` (its values are ignored).
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

    /// True when some key of this state is held by `taken` and not by `freed` (values ignored):
    /// two writers would want one kernel object.
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
        self.routes.is_empty() && self.neighs.is_empty() && self.fdb.is_empty()
    }

    /// Records the effect of a successful operation.
    pub fn record(&mut self, op: &KernelOp) {
        match op {
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
        }
    }
}

/// One kernel write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelOp {
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
}

impl KernelOp {
    /// The `ip` command equal to this operation, with device names when `name_of` knows them.
    pub fn command(&self, name_of: impl Fn(u32) -> Option<String>) -> String {
        let dev = |i: u32| name_of(i).unwrap_or_else(|| i.to_string());
        match self {
            KernelOp::RouteReplace(r) | KernelOp::RouteDel(r) => {
                let verb = if matches!(self, KernelOp::RouteDel(_)) {
                    "del"
                } else {
                    "replace"
                };
                let name = name_of(r.oif);
                format!(
                    "ip route {verb} {} proto {RTPROT_WEFT}",
                    r.display_with(name.as_deref())
                )
            }
            KernelOp::NeighReplace(n) => format!(
                "ip neigh replace {} lladdr {} dev {} nud permanent",
                n.ip,
                fmt_mac(&n.mac),
                dev(n.ifindex)
            ),
            KernelOp::NeighDel(n) => format!("ip neigh del {} dev {}", n.ip, dev(n.ifindex)),
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
        }
    }
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
///   (a replace overwrites the old object in one step, so no delete precedes it).
/// - Equal states give no operations.
///
/// Order: route deletes, then neighbour and FDB replaces, then route replaces, then FDB and
/// neighbour deletes; within each kind by key (ascending). Routes are removed before, and added
/// after, the ARP/FDB entries their onlink gateway needs, so the kernel never sends traffic to a
/// gateway it would have to resolve (flannel's per-peer order). Entries a route no longer needs
/// go last: a peer moving to another path (a vxlan peer that switched to host-gw, a new VTEP MAC)
/// gets its new route in one replace while its old ARP/FDB entries still back the old one, so no
/// packet meets a half-removed path. Deterministic, so tests and `weft status` output are
/// stable.
pub fn diff(desired: &KernelState, current: &KernelState) -> Vec<KernelOp> {
    let mut ops = Vec::new();
    ops.extend(extra(&desired.routes, &current.routes).map(KernelOp::RouteDel));
    ops.extend(changed(&desired.neighs, &current.neighs).map(KernelOp::NeighReplace));
    ops.extend(changed(&desired.fdb, &current.fdb).map(KernelOp::FdbReplace));
    ops.extend(changed(&desired.routes, &current.routes).map(KernelOp::RouteReplace));
    ops.extend(extra(&desired.fdb, &current.fdb).map(KernelOp::FdbDel));
    ops.extend(extra(&desired.neighs, &current.neighs).map(KernelOp::NeighDel));
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
mod tests {
    use super::*;

    fn route(dst: &str, gw: &str, oif: u32) -> Route {
        Route {
            dst: dst.parse().expect("dst"),
            gateway: gw.parse().expect("gw"),
            oif,
            onlink: false,
        }
    }

    fn state<const N: usize>(routes: [Route; N]) -> KernelState {
        KernelState::from_routes(routes)
    }

    #[test]
    fn diff_table() {
        let a = route("10.244.1.0/24", "198.18.0.1", 2);
        let b = route("10.244.2.0/24", "198.18.0.2", 2);
        let c = route("10.244.3.0/24", "198.18.0.3", 2);
        let b_moved = route("10.244.2.0/24", "198.18.0.22", 2);
        let b_other_dev = route("10.244.2.0/24", "198.18.0.2", 5);
        let b_onlink = Route {
            onlink: true,
            ..b.clone()
        };
        use KernelOp::{RouteDel as Del, RouteReplace as Rep};
        let cases: Vec<(&str, KernelState, KernelState, Vec<KernelOp>)> = vec![
            ("both empty", state([]), state([]), vec![]),
            (
                "equal",
                state([a.clone(), b.clone()]),
                state([b.clone(), a.clone()]),
                vec![],
            ),
            (
                "missing",
                state([a.clone(), b.clone()]),
                state([a.clone()]),
                vec![Rep(b.clone())],
            ),
            (
                "extra",
                state([a.clone()]),
                state([a.clone(), c.clone()]),
                vec![Del(c.clone())],
            ),
            (
                "everything gone",
                state([]),
                state([a.clone(), b.clone()]),
                vec![Del(a.clone()), Del(b.clone())],
            ),
            (
                "new gateway",
                state([b_moved.clone()]),
                state([b.clone()]),
                vec![Rep(b_moved.clone())],
            ),
            (
                "new device",
                state([b_other_dev.clone()]),
                state([b.clone()]),
                vec![Rep(b_other_dev.clone())],
            ),
            (
                "onlink differs",
                state([b_onlink.clone()]),
                state([b.clone()]),
                vec![Rep(b_onlink.clone())],
            ),
            (
                "deletes before replaces, each by dst",
                state([c.clone(), a.clone()]),
                state([b.clone()]),
                vec![Del(b.clone()), Rep(a.clone()), Rep(c.clone())],
            ),
        ];
        for (name, desired, current, want) in cases {
            assert_eq!(diff(&desired, &current), want, "case {name}");
        }
    }

    #[test]
    fn diff_orders_kinds_for_onlink_routes() {
        let mac = [2, 0, 0, 0, 0, 2];
        let old_mac = [2, 0, 0, 0, 0, 9];
        let n = Neigh {
            ifindex: 7,
            ip: Ipv4Addr::new(10, 244, 2, 0),
            mac,
        };
        let e = Fdb {
            ifindex: 7,
            mac,
            dst: Ipv4Addr::new(198, 18, 0, 2),
        };
        let old_e = Fdb {
            mac: old_mac,
            ..e.clone()
        };
        let rt = Route {
            onlink: true,
            ..route("10.244.2.0/24", "10.244.2.0", 7)
        };
        let gone = route("10.244.3.0/24", "10.244.3.0", 7);
        let gone_n = Neigh {
            ip: Ipv4Addr::new(10, 244, 3, 0),
            ..n.clone()
        };
        let mut desired = KernelState::from_routes([rt.clone()]);
        desired.add_neigh(n.clone());
        desired.add_fdb(e.clone());
        let mut current = KernelState::from_routes([gone.clone()]);
        current.add_neigh(gone_n.clone());
        current.add_fdb(old_e.clone());
        let ops = diff(&desired, &current);
        assert_eq!(
            ops,
            vec![
                KernelOp::RouteDel(gone),
                KernelOp::NeighReplace(n.clone()),
                KernelOp::FdbReplace(e.clone()),
                KernelOp::RouteReplace(rt),
                KernelOp::FdbDel(old_e),
                KernelOp::NeighDel(gone_n),
            ]
        );
        for op in &ops {
            current.record(op);
        }
        assert_eq!(current, desired);
        assert_eq!(
            KernelOp::NeighReplace(n).command(|_| Some("flannel.1".into())),
            "ip neigh replace 10.244.2.0 lladdr 02:00:00:00:00:02 dev flannel.1 nud permanent"
        );
        assert_eq!(
            KernelOp::FdbReplace(e).to_string(),
            "bridge fdb replace 02:00:00:00:00:02 dev 7 dst 198.18.0.2 self permanent"
        );
    }

    #[test]
    fn applying_the_diff_reaches_desired() {
        let desired = state([
            route("10.244.1.0/24", "198.18.0.1", 2),
            route("10.244.2.0/24", "198.18.0.9", 2),
        ]);
        let mut current = state([
            route("10.244.2.0/24", "198.18.0.2", 2),
            route("10.244.7.0/24", "198.18.0.7", 2),
        ]);
        for op in diff(&desired, &current) {
            current.record(&op);
        }
        assert_eq!(current, desired);
        assert!(diff(&desired, &current).is_empty());
    }

    #[test]
    fn diff_at_is_diff_restricted_to_the_touched_keys() {
        let a = route("10.244.1.0/24", "198.18.0.1", 2);
        let b = route("10.244.2.0/24", "198.18.0.2", 2);
        let b_moved = route("10.244.2.0/24", "198.18.0.22", 2);
        let c = route("10.244.3.0/24", "198.18.0.3", 2);
        let d = route("10.244.4.0/24", "198.18.0.4", 2);
        // b moved, c left, d is new; a is untouched and in sync.
        let desired = state([a.clone(), b_moved.clone(), d.clone()]);
        let current = state([a.clone(), b.clone(), c.clone()]);
        let touched = state([b_moved.clone(), c.clone(), d.clone()]);
        assert_eq!(
            diff_at(&desired, &current, &touched),
            diff(&desired, &current)
        );
        // Only the touched keys: the out-of-sync c is left to a full diff.
        let only_d = state([d.clone()]);
        assert_eq!(
            diff_at(&desired, &current, &only_d),
            vec![KernelOp::RouteReplace(d)]
        );
        assert!(diff_at(&desired, &current, &state([a])).is_empty());
    }

    #[test]
    fn remove_keys_and_collides_go_by_key() {
        let a = route("10.244.1.0/24", "198.18.0.1", 2);
        let a_other = route("10.244.1.0/24", "198.18.0.9", 2);
        let b = route("10.244.2.0/24", "198.18.0.2", 2);
        let mut s = state([a.clone(), b.clone()]);
        let want = state([a_other.clone()]);
        assert!(want.collides(&s, &KernelState::default()));
        assert!(!want.collides(&s, &state([a.clone()])), "a is being freed");
        assert!(
            !state([route("10.244.3.0/24", "198.18.0.3", 2)]).collides(&s, &KernelState::default())
        );
        s.remove_keys(&want);
        assert_eq!(s, state([b]));
    }

    /// One slot per key: absent, or one of a few values (so equal and different values occur).
    fn slots_state(
        slots: &[(Option<u8>, bool)],
        pick: impl Fn(usize) -> Option<u8>,
    ) -> KernelState {
        let mut s = KernelState::default();
        for (i, _) in slots.iter().enumerate() {
            let Some(v) = pick(i) else { continue };
            let i = u8::try_from(i).expect("few keys");
            s.add_route(route(
                &format!("10.244.{i}.0/24"),
                &format!("198.18.0.{v}"),
                2,
            ));
            s.add_neigh(Neigh {
                ifindex: 7,
                ip: Ipv4Addr::new(10, 244, i, 0),
                mac: [2, 0, 0, 0, i, v],
            });
            s.add_fdb(Fdb {
                ifindex: 7,
                mac: [2, 0, 0, 0, 0, i],
                dst: Ipv4Addr::new(198, 18, 0, v),
            });
        }
        s
    }

    proptest::proptest! {
        /// Wherever the kernel agrees with the desired state outside the touched keys, the
        /// incremental diff makes exactly the full diff's writes, in its order.
        #[test]
        fn diff_at_equals_diff_when_the_rest_agrees(
            slots in proptest::collection::vec(
                (proptest::option::of(0u8..3), proptest::bool::ANY), 0..24),
            current_at_touched in proptest::collection::vec(proptest::option::of(0u8..3), 24),
        ) {
            let desired = slots_state(&slots, |i| slots[i].0);
            let current = slots_state(&slots, |i| {
                if slots[i].1 { current_at_touched[i] } else { slots[i].0 }
            });
            let touched = slots_state(&slots, |i| slots[i].1.then_some(0));
            proptest::prop_assert_eq!(diff_at(&desired, &current, &touched), diff(&desired, &current));
        }
    }

    #[test]
    fn display_reads_like_ip() {
        let r = Route {
            onlink: true,
            ..route("10.244.2.0/24", "198.18.0.2", 3)
        };
        assert_eq!(r.to_string(), "10.244.2.0/24 via 198.18.0.2 dev 3 onlink");
        assert_eq!(
            KernelOp::RouteReplace(route("10.244.2.0/24", "198.18.0.2", 3)).to_string(),
            "ip route replace 10.244.2.0/24 via 198.18.0.2 dev 3 proto 87"
        );
        assert_eq!(
            KernelOp::RouteDel(route("10.244.2.0/24", "198.18.0.2", 3))
                .command(|i| (i == 3).then(|| "eth0".to_string())),
            "ip route del 10.244.2.0/24 via 198.18.0.2 dev eth0 proto 87"
        );
        assert_eq!(
            route("10.244.2.0/24", "0.0.0.0", 0).to_string(),
            "10.244.2.0/24"
        );
    }
}
