//! The only module that builds netlink messages (rtnetlink 0.24).
//!
//! One function per kernel operation; each doc comment gives the equivalent `ip` command. Errors
//! are [`BackendError::Netlink`] with `op` spelled like that command and the kernel's errno kept.
//! Weft's routes carry protocol [`RTPROT_WEFT`] (87), so a dump filtered on it finds exactly the
//! routes weft wrote and nobody else's.
use std::net::{IpAddr, Ipv4Addr};

use futures::{Stream, StreamExt, TryStreamExt, future};
use ipnet::Ipv4Net;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressMessage, AddressScope,
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, MulticastGroup, RouteMessageBuilder};

use crate::{BackendError, RTPROT_WEFT, Route};

const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;

/// A handle on one rtnetlink connection. Cheap to clone; all clones share the connection.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: Handle,
}

/// A network interface and its addresses (`ip -d addr show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`, the `UP` in `<BROADCAST,MULTICAST,UP,...>`).
    pub up: bool,
    pub addrs: Vec<AddrInfo>,
}

/// One address of a link, IPv4 or IPv6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrInfo {
    pub addr: IpAddr,
    pub prefix_len: u8,
    /// `IFA_F_PERMANENT`: configured, not learned with a lifetime (SLAAC/DHCP in the kernel).
    pub permanent: bool,
    /// `IFA_F_DEPRECATED`: preferred lifetime over.
    pub deprecated: bool,
    /// IPv6 privacy address (`IFA_F_TEMPORARY`, which shares its bit with IPv4's "secondary").
    pub temporary: bool,
    /// `scope global` (not link or host scope).
    pub scope_global: bool,
}

impl AddrInfo {
    /// The IPv4 prefix this address lies in (`198.18.0.1/24` → `198.18.0.0/24`).
    pub fn v4_net(&self) -> Option<Ipv4Net> {
        match self.addr {
            IpAddr::V4(a) => Ipv4Net::new(a, self.prefix_len).ok().map(|n| n.trunc()),
            IpAddr::V6(_) => None,
        }
    }
}

/// The answer of `ip route get <dst>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteGet {
    pub oif: u32,
    /// None when `dst` is directly connected.
    pub gateway: Option<Ipv4Addr>,
    pub prefsrc: Option<Ipv4Addr>,
}

/// An IPv4 route seen in a notification, with the attributes that decide whether it is weft's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEvent {
    pub route: Route,
    /// Route protocol (`proto`): 87 for weft's routes, 4 for `static`, ...
    pub protocol: u8,
    pub table: u32,
    /// Metric (`metric N`), 0 when absent.
    pub priority: u32,
}

impl RouteEvent {
    /// True when the route sits where weft's routes sit: table main, metric 0 (whatever its
    /// protocol). Such a route with weft's destination replaces weft's route.
    pub fn in_weft_slot(&self) -> bool {
        self.table == u32::from(RouteHeader::RT_TABLE_MAIN) && self.priority == 0
    }

    /// True when it is a route weft owns: [`in_weft_slot`](Self::in_weft_slot) and protocol 87.
    pub fn is_weft(&self) -> bool {
        self.in_weft_slot() && self.protocol == RTPROT_WEFT
    }
}

/// Kernel notifications (multicast groups RTNLGRP_LINK, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV4_IFADDR)
/// turned into events; see [`subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    /// RTM_NEWROUTE: an IPv4 unicast route was added or replaced (any table, any protocol).
    RouteAdded(RouteEvent),
    /// RTM_DELROUTE. The kernel sends none for IPv4 routes it flushes because their link went
    /// down or lost its addresses: watch the link and address events too.
    RouteDeleted(RouteEvent),
    /// RTM_NEWLINK: a link appeared or changed (`up` = `IFF_UP`).
    LinkChanged { index: u32, name: String, up: bool },
    /// RTM_DELLINK.
    LinkDeleted { index: u32, name: String },
    /// RTM_DELADDR of an IPv4 address: routes through `index` may have been flushed silently.
    AddressDeleted {
        index: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
    },
    /// The notification socket overflowed (ENOBUFS): events were lost, re-read the kernel.
    Overrun,
}

fn nl_err(op: impl Into<String>, e: rtnetlink::Error) -> BackendError {
    match e {
        rtnetlink::Error::NetlinkError(msg) => {
            let io = msg.to_io();
            BackendError::Netlink {
                op: op.into(),
                errno: io.raw_os_error(),
                message: io.to_string(),
            }
        }
        other => BackendError::Netlink {
            op: op.into(),
            errno: None,
            message: other.to_string(),
        },
    }
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()),
        _ => None,
    }
}

impl Netlink {
    /// Opens an rtnetlink socket in the calling thread's network namespace and spawns its
    /// connection task on the current tokio runtime. Must be called inside a runtime.
    pub fn connect() -> Result<Netlink, BackendError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| BackendError::Netlink {
            op: "open rtnetlink socket".into(),
            errno: e.raw_os_error(),
            message: e.to_string(),
        })?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// `ip -d addr show`: every link with its IPv4 and IPv6 addresses, by index.
    pub async fn links(&self) -> Result<Vec<LinkInfo>, BackendError> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("ip link show", e))?;
        let mut links: Vec<LinkInfo> = msgs.iter().map(link_info).collect();
        let addrs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("ip addr show", e))?;
        for a in &addrs {
            let link = links.iter_mut().find(|l| l.index == a.header.index);
            if let (Some(info), Some(link)) = (addr_info(a), link) {
                link.addrs.push(info);
            }
        }
        links.sort_by_key(|l| l.index);
        Ok(links)
    }

    /// `ip -d addr show dev <name>`; `None` when there is no such link.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkInfo>, BackendError> {
        let op = format!("ip link show dev {name}");
        let msg = match self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await
        {
            Ok(Some(msg)) => msg,
            Ok(None) => return Ok(None),
            Err(e) if errno_of(&e) == Some(ENODEV) => return Ok(None),
            Err(e) => return Err(nl_err(op, e)),
        };
        let mut link = link_info(&msg);
        let addrs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err(format!("ip addr show dev {name}"), e))?;
        link.addrs = addrs
            .iter()
            .filter(|a| a.header.index == link.index)
            .filter_map(addr_info)
            .collect();
        Ok(Some(link))
    }

    /// `ip route show table main default`: the output interface of the first IPv4 default route
    /// (for a multipath default, of its first next hop); `None` without a default route.
    pub async fn default_route_ifindex(&self) -> Result<Option<u32>, BackendError> {
        let routes = self
            .dump_v4_routes("ip route show table main default")
            .await?;
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
        let op = format!("ip route get {dst}");
        let mut msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, 32)
            .build();
        // A lookup, not a route: clear what the builder preset for adding routes.
        msg.header.protocol = RouteProtocol::Unspec;
        msg.header.kind = RouteType::Unspec;
        msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
        let reply = self
            .handle
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
            })?;
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

    /// `ip route show table main proto 87`: every route weft owns. A weft route without a
    /// gateway (only someone else can make one) shows with gateway `0.0.0.0` so it can be purged.
    pub async fn dump_owned_routes(&self) -> Result<Vec<Route>, BackendError> {
        let routes = self
            .dump_v4_routes(&format!("ip route show table main proto {RTPROT_WEFT}"))
            .await?;
        Ok(routes
            .iter()
            .filter_map(route_event)
            .filter(|ev| ev.table == MAIN && ev.protocol == RTPROT_WEFT)
            .map(|ev| ev.route)
            .collect())
    }

    /// `ip route replace <dst> via <gw> dev <oif> [onlink] proto 87` (table main, metric 0).
    pub async fn route_replace(&self, r: &Route) -> Result<(), BackendError> {
        self.handle
            .route()
            .add(route_msg(r))
            .replace()
            .execute()
            .await
            .map_err(|e| nl_err(format!("ip route replace {r} proto {RTPROT_WEFT}"), e))
    }

    /// `ip route del <dst> via <gw> dev <oif> proto 87`: the kernel only removes a route that
    /// matches all of these, so a route someone else put at the same destination stays.
    /// "Already gone" (ENOENT/ESRCH) is success.
    pub async fn route_del(&self, r: &Route) -> Result<(), BackendError> {
        match self.handle.route().del(route_msg(r)).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno_of(&e), Some(ENOENT | ESRCH)) => Ok(()),
            Err(e) => Err(nl_err(format!("ip route del {r} proto {RTPROT_WEFT}"), e)),
        }
    }

    /// `ip -4 route show table all`: the raw IPv4 route dump (filtered by the callers).
    async fn dump_v4_routes(&self, op: &str) -> Result<Vec<RouteMessage>, BackendError> {
        let mut msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
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
            .filter(|m| m.header.address_family == AddressFamily::Inet)
            .collect())
    }
}

const MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// The message for [`Netlink::route_replace`] / [`Netlink::route_del`].
fn route_msg(r: &Route) -> RouteMessage {
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.dst.network(), r.dst.prefix_len())
        .protocol(RouteProtocol::Other(RTPROT_WEFT));
    if !r.gateway.is_unspecified() {
        b = b.gateway(r.gateway);
    }
    if r.oif != 0 {
        b = b.output_interface(r.oif);
    }
    if r.onlink {
        b = b.onlink();
    }
    b.build()
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

/// A unicast IPv4 route message as a [`RouteEvent`]; None for other families and kinds
/// (local, broadcast, blackhole, ...) and for cloned cache entries.
fn route_event(m: &RouteMessage) -> Option<RouteEvent> {
    if m.header.address_family != AddressFamily::Inet || m.header.kind != RouteType::Unicast {
        return None;
    }
    if m.header.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gateway = Ipv4Addr::UNSPECIFIED;
    let mut oif = 0;
    let mut priority = 0;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = *g,
            RouteAttribute::Oif(i) => oif = *i,
            RouteAttribute::Priority(p) => priority = *p,
            _ => {}
        }
    }
    let dst = Ipv4Net::new(dst, m.header.destination_prefix_length).ok()?;
    Some(RouteEvent {
        route: Route {
            dst,
            gateway,
            oif,
            onlink: m.header.flags.contains(RouteFlags::Onlink),
        },
        protocol: u8::from(m.header.protocol),
        table: table_of(m),
        priority,
    })
}

fn link_name(m: &LinkMessage) -> String {
    m.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn link_info(m: &LinkMessage) -> LinkInfo {
    LinkInfo {
        index: m.header.index,
        name: link_name(m),
        mtu: m
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(v) => Some(*v),
                _ => None,
            })
            .unwrap_or(0),
        up: m.header.flags.contains(LinkFlags::Up),
        addrs: Vec::new(),
    }
}

fn addr_info(m: &AddressMessage) -> Option<AddrInfo> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point links
    // and equal to IFA_LOCAL elsewhere. IPv6 only sends IFA_ADDRESS.
    let mut local = None;
    let mut address = None;
    let mut flags = AddressFlags::from_bits_retain(u32::from(m.header.flags.bits()));
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Flags(f) => flags = *f,
            _ => {}
        }
    }
    let addr = local.or(address)?;
    Some(AddrInfo {
        addr,
        prefix_len: m.header.prefix_len,
        permanent: flags.contains(AddressFlags::Permanent),
        deprecated: flags.contains(AddressFlags::Deprecated),
        temporary: addr.is_ipv6() && flags.contains(AddressFlags::Secondary),
        scope_global: m.header.scope == AddressScope::Universe,
    })
}

/// One notification as a [`KernelEvent`]; None for what weft does not follow.
fn kernel_event(msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<KernelEvent> {
    match msg.payload {
        NetlinkPayload::InnerMessage(inner) => match inner {
            RouteNetlinkMessage::NewRoute(m) => route_event(&m).map(KernelEvent::RouteAdded),
            RouteNetlinkMessage::DelRoute(m) => route_event(&m).map(KernelEvent::RouteDeleted),
            RouteNetlinkMessage::NewLink(m) => Some(KernelEvent::LinkChanged {
                index: m.header.index,
                name: link_name(&m),
                up: m.header.flags.contains(LinkFlags::Up),
            }),
            RouteNetlinkMessage::DelLink(m) => Some(KernelEvent::LinkDeleted {
                index: m.header.index,
                name: link_name(&m),
            }),
            RouteNetlinkMessage::DelAddress(m) => match addr_info(&m)?.addr {
                IpAddr::V4(addr) => Some(KernelEvent::AddressDeleted {
                    index: m.header.index,
                    addr,
                    prefix_len: m.header.prefix_len,
                }),
                IpAddr::V6(_) => None,
            },
            _ => None,
        },
        NetlinkPayload::Overrun(_) => Some(KernelEvent::Overrun),
        _ => None,
    }
}

/// `ip monitor route link address` (IPv4): a separate multicast connection in the calling
/// thread's network namespace, spawned on the current runtime. The stream ends if the socket
/// fails; subscribe again and `refresh` then.
pub fn subscribe() -> Result<impl Stream<Item = KernelEvent> + Unpin + Send, BackendError> {
    let (conn, handle, messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv4Ifaddr,
    ])
    .map_err(|e| BackendError::Netlink {
        op: "ip monitor route link address".into(),
        errno: e.raw_os_error(),
        message: e.to_string(),
    })?;
    tokio::spawn(conn);
    Ok(messages.filter_map(move |(msg, _)| {
        // Keep the request handle alive as long as the stream, so the connection stays up.
        let _keep = &handle;
        future::ready(kernel_event(msg))
    }))
}
