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

/// The kernel objects weft owns (or wants to own), keyed so that two objects with one key cannot
/// coexist in the kernel: routes by destination (table main, metric 0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelState {
    pub routes: BTreeMap<Ipv4Net, Route>,
}

impl KernelState {
    /// A state holding these routes (a later route with the same destination wins).
    pub fn from_routes(routes: impl IntoIterator<Item = Route>) -> Self {
        KernelState {
            routes: routes.into_iter().map(|r| (r.dst, r)).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
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
}

impl KernelOp {
    /// The `ip` command equal to this operation, with device names when `name_of` knows them.
    pub fn command(&self, name_of: impl Fn(u32) -> Option<String>) -> String {
        let (verb, r) = match self {
            KernelOp::RouteReplace(r) => ("replace", r),
            KernelOp::RouteDel(r) => ("del", r),
        };
        let name = name_of(r.oif);
        format!(
            "ip route {verb} {} proto {RTPROT_WEFT}",
            r.display_with(name.as_deref())
        )
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
///   (a replace overwrites the old route in one step, so no delete precedes it).
/// - Equal states give no operations.
///
/// Order: all deletes first, then all replaces; within each group by destination (ascending).
/// Deletes first so that stale state is gone before new state is added and the log reads
/// naturally; the order is deterministic so tests and `weft status` output are stable.
pub fn diff(desired: &KernelState, current: &KernelState) -> Vec<KernelOp> {
    let deletes = current
        .routes
        .iter()
        .filter(|(dst, _)| !desired.routes.contains_key(dst))
        .map(|(_, r)| KernelOp::RouteDel(r.clone()));
    let replaces = desired
        .routes
        .iter()
        .filter(|(dst, r)| current.routes.get(dst) != Some(r))
        .map(|(_, r)| KernelOp::RouteReplace(r.clone()));
    deletes.chain(replaces).collect()
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
            match op {
                KernelOp::RouteReplace(r) => {
                    current.routes.insert(r.dst, r);
                }
                KernelOp::RouteDel(r) => {
                    current.routes.remove(&r.dst);
                }
            }
        }
        assert_eq!(current, desired);
        assert!(diff(&desired, &current).is_empty());
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
