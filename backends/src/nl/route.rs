//! Routes: `ip route` replace, delete, dump and get, and weft's blackhole route, built with
//! rtnetlink's route messages. Split from `nl` by concern; the nexthop side of routes
//! (`nhid`) is in [`super::nexthop`].
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use super::nexthop::RtMessage;
use super::{ENOENT, ESRCH, Netlink, dump, errno_of, nl_err};
use crate::{BackendError, KernelOp, RTPROT_WEFT, Route};

/// The answer of `ip route get <dst>` (`ip -6 route get <dst>`: `RouteGet<Ipv6Addr>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteGet<A = Ipv4Addr> {
    pub oif: u32,
    /// None when `dst` is directly connected.
    pub gateway: Option<A>,
    pub prefsrc: Option<A>,
}

/// An IPv4 or IPv6 route seen in a notification or a dump, with the attributes that decide
/// whether it is weft's.
///
/// For a route on a nexthop object (`nhid N`), `route` has the gateway and device only where the
/// kernel adds them (`net.ipv4.nexthop_compat_mode=1`, the default); else they are `0.0.0.0` and
/// 0. The meaning is the nexthop's: resolve `nhid` through [`Netlink::dump_nexthops`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEvent {
    pub route: Route,
    /// `nhid`: the nexthop object the route uses (RTA_NH_ID), None for a plain route.
    pub nhid: Option<u32>,
    /// Route protocol (`proto`): 87 for weft's routes, 4 for `static`, ...
    pub protocol: u8,
    pub table: u32,
    /// Metric (`metric N`), 0 when absent.
    pub priority: u32,
    /// A `blackhole` route (no gateway, no device), not a unicast one.
    pub blackhole: bool,
}

impl RouteEvent {
    /// True when the route sits where weft's routes sit: table main, weft's metric for the
    /// family (0 for IPv4, 1024 for IPv6: [`crate::plan::route_metric`]), whatever its
    /// protocol. Such a route with weft's destination replaces weft's route.
    pub fn in_weft_slot(&self) -> bool {
        self.table == u32::from(RouteHeader::RT_TABLE_MAIN)
            && self.priority == crate::plan::route_metric(&self.route.dst)
    }

    /// True when it is weft's blackhole route (`--ip-blackhole-route`): `blackhole <dst> proto 87
    /// metric` [`crate::plan::BLACKHOLE_METRIC`] in table main.
    pub fn is_weft_blackhole(&self) -> bool {
        self.blackhole
            && self.table == u32::from(RouteHeader::RT_TABLE_MAIN)
            && self.priority == crate::plan::BLACKHOLE_METRIC
            && self.protocol == RTPROT_WEFT
    }

    /// True when it is a route weft owns: [`in_weft_slot`](Self::in_weft_slot) and protocol 87.
    pub fn is_weft(&self) -> bool {
        self.in_weft_slot() && self.protocol == RTPROT_WEFT
    }
}

impl Netlink {
    /// `ip route show table main default`: the output interface of the first IPv4 default route
    /// (for a multipath default, of its first next hop); `None` without a default route.
    pub async fn default_route_ifindex(&self) -> Result<Option<u32>, BackendError> {
        self.default_route_ifindex_of(AddressFamily::Inet, "ip route show table main default")
            .await
    }

    /// [`default_route_ifindex`](Self::default_route_ifindex) of the IPv6 default route (`::/0`,
    /// `ip -6 route show table main default`).
    pub async fn default_route6_ifindex(&self) -> Result<Option<u32>, BackendError> {
        self.default_route_ifindex_of(AddressFamily::Inet6, "ip -6 route show table main default")
            .await
    }

    async fn default_route_ifindex_of(
        &self,
        family: AddressFamily,
        op: &str,
    ) -> Result<Option<u32>, BackendError> {
        let routes = self.dump_family_routes(family, op).await?;
        Ok(routes
            .iter()
            .filter(|m| m.header.destination_prefix_length == 0 && table_of(m) == MAIN)
            .filter(|m| m.header.kind == RouteType::Unicast)
            .find_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    RouteAttribute::MultiPath(hops) => hops.first().map(|h| h.interface_index),
                    _ => None,
                })
            }))
    }

    /// `ip route get <dst>`: how the kernel would send a packet to `dst`.
    pub async fn route_get(&self, dst: Ipv4Addr) -> Result<RouteGet, BackendError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, 32)
            .build();
        let reply = self
            .route_lookup(msg, format!("ip route get {dst}"))
            .await?;
        let mut out = RouteGet {
            oif: 0,
            gateway: None,
            prefsrc: None,
        };
        for a in &reply.attributes {
            match a {
                RouteAttribute::Oif(i) => out.oif = *i,
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => out.gateway = Some(*g),
                RouteAttribute::PrefSource(RouteAddress::Inet(s)) => out.prefsrc = Some(*s),
                _ => {}
            }
        }
        Ok(out)
    }

    /// `ip -6 route get <dst>`: the output interface, gateway and preferred source address
    /// (`--iface-can-reach` with an IPv6 address, DirectRouting to a peer's PublicIPv6).
    pub async fn route_get6(&self, dst: Ipv6Addr) -> Result<RouteGet<Ipv6Addr>, BackendError> {
        let msg = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(dst, 128)
            .build();
        let reply = self
            .route_lookup(msg, format!("ip -6 route get {dst}"))
            .await?;
        let mut out = RouteGet {
            oif: 0,
            gateway: None,
            prefsrc: None,
        };
        for a in &reply.attributes {
            match a {
                RouteAttribute::Oif(i) => out.oif = *i,
                RouteAttribute::Gateway(RouteAddress::Inet6(g)) => out.gateway = Some(*g),
                RouteAttribute::PrefSource(RouteAddress::Inet6(s)) => out.prefsrc = Some(*s),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Sends one RTM_GETROUTE lookup and returns the kernel's answer.
    async fn route_lookup(
        &self,
        mut msg: RouteMessage,
        op: String,
    ) -> Result<RouteMessage, BackendError> {
        // A lookup, not a route: clear what the builder preset for adding routes.
        msg.header.protocol = RouteProtocol::Unspec;
        msg.header.kind = RouteType::Unspec;
        msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
        self.handle
            .route()
            .get(msg)
            .execute()
            .try_next()
            .await
            .map_err(|e| nl_err(op.clone(), e))?
            .ok_or_else(|| BackendError::Netlink {
                op,
                errno: None,
                message: "kernel sent no route".into(),
            })
    }

    /// `ip -4 route show table all` and `ip -6 route show table all`: every IPv4 and IPv6
    /// unicast and blackhole route, any table, any protocol.
    pub async fn dump_routes(&self) -> Result<Vec<RouteEvent>, BackendError> {
        self.dump_routes_where("ip route show table all", |_| true)
            .await
    }

    /// `ip route show table main proto 87` (IPv4 and IPv6): every route weft owns, as written
    /// (plain, or on a nexthop object: see [`RouteEvent`]). A weft route without a gateway (only
    /// someone else can make one) shows with gateway `0.0.0.0` (`::`) so it can be purged.
    pub async fn dump_owned_routes(&self) -> Result<Vec<RouteEvent>, BackendError> {
        self.dump_routes_where(
            &format!("ip route show table main proto {RTPROT_WEFT}"),
            |ev| ev.table == MAIN && ev.protocol == RTPROT_WEFT,
        )
        .await
    }

    /// The IPv4 and IPv6 unicast and blackhole routes (`ip -4 route show table all`, then
    /// `ip -6 route show table all`: one dump per family, so no other family's tables come
    /// along) that `keep` wants, each turned into a [`RouteEvent`] as it arrives (a dump of
    /// 20,000 routes is not held as messages). `op` names the dump in errors.
    pub async fn dump_routes_where(
        &self,
        op: &str,
        mut keep: impl FnMut(&RouteEvent) -> bool,
    ) -> Result<Vec<RouteEvent>, BackendError> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
            msg.header.address_family = family;
            msg.header.protocol = RouteProtocol::Unspec;
            msg.header.kind = RouteType::Unspec;
            msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
            dump::dump_each(
                op,
                RtMessage::Route(RouteNetlinkMessage::GetRoute(msg)),
                |m| {
                    if let RtMessage::Route(RouteNetlinkMessage::NewRoute(m)) = m {
                        if let Some(ev) = route_event(&m).filter(|ev| keep(ev)) {
                            out.push(ev);
                        }
                    }
                },
            )
            .await?;
        }
        out.shrink_to_fit();
        Ok(out)
    }

    /// `ip route replace <dst> via <gw> dev <oif> [onlink] proto 87` (table main, metric 0), or
    /// for IPv6 `ip -6 route replace ... proto 87 metric 1024` ([`crate::plan::V6_METRIC`]).
    pub async fn route_replace(&self, r: &Route) -> Result<(), BackendError> {
        let mut msg = route_msg(r);
        if let IpNet::V6(_) = r.dst {
            msg.attributes
                .push(RouteAttribute::Priority(crate::plan::V6_METRIC));
        }
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|e| nl_err(KernelOp::RouteReplace(r.clone()).to_string(), e))
    }

    /// `ip route replace blackhole <dst> proto 87 metric 4096` (table main).
    pub async fn blackhole_replace(&self, dst: IpNet) -> Result<(), BackendError> {
        self.handle
            .route()
            .add(blackhole_msg(dst))
            .replace()
            .execute()
            .await
            .map_err(|e| nl_err(KernelOp::BlackholeReplace(dst).to_string(), e))
    }

    /// `ip route del blackhole <dst> proto 87 metric 4096`; "already gone" is success.
    pub async fn blackhole_del(&self, dst: IpNet) -> Result<(), BackendError> {
        match self.handle.route().del(blackhole_msg(dst)).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno_of(&e), Some(ENOENT | ESRCH)) => Ok(()),
            Err(e) => Err(nl_err(KernelOp::BlackholeDel(dst).to_string(), e)),
        }
    }

    /// `ip route del <dst> via <gw> dev <oif> proto <protocol>` for a route weft did not write
    /// (flanneld's, `proto boot`: see `weft cleanup`). "Already gone" is success.
    pub async fn route_del_with_protocol(
        &self,
        r: &Route,
        protocol: u8,
    ) -> Result<(), BackendError> {
        match self
            .handle
            .route()
            .del(route_msg_proto(r, protocol))
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno_of(&e), Some(ENOENT | ESRCH)) => Ok(()),
            Err(e) => Err(nl_err(format!("ip route del {r} proto {protocol}"), e)),
        }
    }

    /// `ip route del <dst> proto 87` (table main), whatever its next hop (a route on a nexthop
    /// object too); "already gone" is success.
    pub async fn route_del_dst(&self, dst: IpNet) -> Result<(), BackendError> {
        match self
            .handle
            .route()
            .del(dst_msg(dst, RTPROT_WEFT))
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno_of(&e), Some(ENOENT | ESRCH)) => Ok(()),
            Err(e) => Err(nl_err(format!("ip route del {dst} proto {RTPROT_WEFT}"), e)),
        }
    }

    /// `ip route del <dst> via <gw> dev <oif> proto 87`: the kernel only removes a route that
    /// matches all of these, so a route someone else put at the same destination stays.
    /// "Already gone" (ENOENT/ESRCH) is success. No metric is sent, for IPv6 either: the kernel
    /// then matches a route at any metric (a stale protocol-87 route written at another metric
    /// is purged too).
    pub async fn route_del(&self, r: &Route) -> Result<(), BackendError> {
        match self.handle.route().del(route_msg(r)).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno_of(&e), Some(ENOENT | ESRCH)) => Ok(()),
            Err(e) => Err(nl_err(KernelOp::RouteDel(r.clone()).to_string(), e)),
        }
    }

    /// `ip -4 route show table all` (or `-6`): the raw route dump of one family (filtered by
    /// the callers).
    async fn dump_family_routes(
        &self,
        family: AddressFamily,
        op: &str,
    ) -> Result<Vec<RouteMessage>, BackendError> {
        let mut msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
        msg.header.address_family = family;
        msg.header.protocol = RouteProtocol::Unspec;
        msg.header.kind = RouteType::Unspec;
        msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(msg)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err(op, e))?;
        Ok(routes
            .into_iter()
            .filter(|m| m.header.address_family == family)
            .collect())
    }
}

const MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// The message for [`Netlink::route_replace`] / [`Netlink::route_del`].
fn route_msg(r: &Route) -> RouteMessage {
    route_msg_proto(r, RTPROT_WEFT)
}

/// A route message to `dst` in table main with `protocol` (no metric: see the callers), of the
/// family of `dst`.
fn dst_msg(dst: IpNet, protocol: u8) -> RouteMessage {
    let protocol = RouteProtocol::from(protocol);
    match dst {
        IpNet::V4(d) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(d.network(), d.prefix_len())
            .protocol(protocol)
            .build(),
        IpNet::V6(d) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(d.network(), d.prefix_len())
            .protocol(protocol)
            .build(),
    }
}

fn route_msg_proto(r: &Route, protocol: u8) -> RouteMessage {
    let mut m = dst_msg(r.dst, protocol);
    if !r.gateway.is_unspecified() {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(r.gateway)));
    }
    if r.oif != 0 {
        m.attributes.push(RouteAttribute::Oif(r.oif));
    }
    if r.onlink {
        m.header.flags |= RouteFlags::Onlink;
    }
    m
}

fn blackhole_msg(dst: IpNet) -> RouteMessage {
    let mut m = dst_msg(dst, RTPROT_WEFT);
    m.attributes
        .push(RouteAttribute::Priority(crate::plan::BLACKHOLE_METRIC));
    m.header.kind = RouteType::BlackHole;
    m.header.scope = RouteScope::Universe;
    m
}

fn table_of(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

/// A unicast or blackhole IPv4 or IPv6 route message as a [`RouteEvent`]; None for other
/// families and kinds (local, broadcast, multicast, ...) and for cloned cache entries.
pub(super) fn route_event(m: &RouteMessage) -> Option<RouteEvent> {
    let blackhole = match m.header.kind {
        RouteType::Unicast => false,
        RouteType::BlackHole => true,
        _ => return None,
    };
    let v6 = match m.header.address_family {
        AddressFamily::Inet => false,
        AddressFamily::Inet6 => true,
        _ => return None,
    };
    if m.header.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    let mut dst: Option<IpAddr> = None;
    let mut gateway: Option<IpAddr> = None;
    let mut oif = 0;
    let mut priority = 0;
    let mut nhid = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = Some((*d).into()),
            RouteAttribute::Destination(RouteAddress::Inet6(d)) => dst = Some((*d).into()),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some((*g).into()),
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) => gateway = Some((*g).into()),
            RouteAttribute::Oif(i) => oif = *i,
            RouteAttribute::Priority(p) => priority = *p,
            RouteAttribute::NhId(id) => nhid = Some(*id),
            _ => {}
        }
    }
    let len = m.header.destination_prefix_length;
    let dst = match (v6, dst) {
        (false, None) => IpNet::V4(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, len).ok()?),
        (true, None) => IpNet::V6(Ipv6Net::new(Ipv6Addr::UNSPECIFIED, len).ok()?),
        (false, Some(IpAddr::V4(d))) => IpNet::V4(Ipv4Net::new(d, len).ok()?),
        (true, Some(IpAddr::V6(d))) => IpNet::V6(Ipv6Net::new(d, len).ok()?),
        _ => return None,
    };
    let gateway = gateway.unwrap_or_else(|| crate::plan::unspecified_for(&dst));
    Some(RouteEvent {
        route: Route {
            dst,
            gateway,
            oif,
            onlink: m.header.flags.contains(RouteFlags::Onlink),
        },
        nhid,
        protocol: u8::from(m.header.protocol),
        table: table_of(m),
        priority,
        blackhole,
    })
}
