//! The only module that builds netlink messages (rtnetlink 0.24).
//!
//! One function per kernel operation; each doc comment gives the equivalent `ip` command. Errors
//! are [`BackendError::Netlink`] with `op` spelled like that command and the kernel's errno kept.
//! Weft's routes carry protocol [`RTPROT_WEFT`](crate::RTPROT_WEFT) (87), so a dump filtered on it finds exactly the
//! routes weft wrote and nobody else's; so do its nexthop objects ([`nexthop`]: messages that
//! rtnetlink 0.24 does not know, built and parsed there). Route messages are in `route`.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::{Stream, StreamExt, TryStreamExt, future};
use ipnet::Ipv4Net;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressMessage, AddressScope,
};
use rtnetlink::packet_route::link::{
    InfoData, InfoIpTunnel, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo as LinkInfoAttr,
    LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::RouteType;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{AddressMessageBuilder, Handle, LinkIpIp, LinkUnspec, LinkVxlan, MulticastGroup};

use crate::device::{Device, DeviceKind, VxlanParams, is_device_name};
use crate::plan::{Fdb, Mac, Neigh};
use crate::{BackendError, KernelOp};

mod dump;
mod nexthop;
mod route;

use nexthop::RtMessage;
pub use nexthop::{EEXIST, Hop, Nexthop, nexthops_unsupported};
use route::route_event;
pub use route::{RouteEvent, RouteGet};

const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;
const EADDRNOTAVAIL: i32 = 99;

/// A handle on weft's rtnetlink connections: rtnetlink's, and one for the nexthop messages
/// rtnetlink does not know. Cheap to clone; all clones share the connections.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: Handle,
    nh: rtnetlink::proto::ConnectionHandle<RtMessage>,
}

/// A network interface and its addresses (`ip -d addr show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`, the `UP` in `<BROADCAST,MULTICAST,UP,...>`).
    pub up: bool,
    /// Has a carrier (`IFF_LOWER_UP` or `IFF_RUNNING`; `NO-CARRIER` in `ip link` when not).
    pub carrier: bool,
    pub addrs: Vec<AddrInfo>,
    /// The link read as a weft device, when it has a weft device name ([`is_device_name`]).
    pub device: Option<Device>,
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

/// Kernel notifications (multicast groups RTNLGRP_LINK, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE,
/// RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR, RTNLGRP_NEIGH, RTNLGRP_NEXTHOP) turned into events; see [`subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    /// RTM_NEWROUTE: an IPv4 or IPv6 unicast (or blackhole) route was added or replaced (any
    /// table, any protocol).
    RouteAdded(RouteEvent),
    /// RTM_DELROUTE. The kernel sends none for IPv4 routes it flushes because their link went
    /// down or lost its addresses: watch the link and address events too.
    RouteDeleted(RouteEvent),
    /// RTM_NEWLINK: a link appeared or changed (`up` = `IFF_UP`; `carrier` = `IFF_LOWER_UP` or
    /// `IFF_RUNNING`). Losing the carrier makes the kernel drop the nexthop objects on the
    /// link (and their routes) without a notification; plain routes stay (`linkdown`).
    LinkChanged {
        index: u32,
        name: String,
        up: bool,
        carrier: bool,
        /// The link read as a weft device, when it has a weft device name.
        device: Option<Device>,
    },
    /// RTM_DELLINK.
    LinkDeleted { index: u32, name: String },
    /// RTM_NEWADDR of an IPv4 address.
    AddressAdded {
        index: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
    },
    /// RTM_DELADDR of an IPv4 address: routes through `index` may have been flushed silently.
    AddressDeleted {
        index: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
    },
    /// RTM_NEWADDR / RTM_DELADDR (`added`) of a global IPv6 address (weft's `flannel-v6.<VNI>`
    /// carries one). Link-local addresses are not reported; IPv6 routes are not flushed with an
    /// address, so this says nothing about routes.
    Address6Changed {
        index: u32,
        addr: Ipv6Addr,
        prefix_len: u8,
        added: bool,
    },
    /// RTM_NEWNEIGH of an IPv4 or IPv6 neighbour (`permanent` = NUD_PERMANENT).
    NeighAdded { neigh: Neigh, permanent: bool },
    /// RTM_DELNEIGH of an IPv4 or IPv6 neighbour.
    NeighDeleted(Neigh),
    /// RTM_NEWNEIGH of an FDB entry with a `dst` (`owned_kind` = `self permanent`).
    FdbAdded { entry: Fdb, owned_kind: bool },
    /// RTM_DELNEIGH of an FDB entry with a `dst`.
    FdbDeleted(Fdb),
    /// RTM_NEWNEXTHOP: a nexthop object was added or replaced (any owner).
    NexthopAdded(Nexthop),
    /// RTM_DELNEXTHOP: a nexthop object was deleted (`ip nexthop del`). The kernel removed the
    /// routes using it without RTM_DELROUTE. Nexthops dropped because their link went down,
    /// lost its carrier or was deleted come without this event: watch the link events.
    NexthopDeleted(Nexthop),
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
        let (conn, nh, _) =
            rtnetlink::proto::new_connection::<RtMessage>(rtnetlink::sys::protocols::NETLINK_ROUTE)
                .map_err(|e| BackendError::Netlink {
                    op: "open rtnetlink socket (nexthops)".into(),
                    errno: e.raw_os_error(),
                    message: e.to_string(),
                })?;
        tokio::spawn(conn);
        Ok(Netlink { handle, nh })
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

/// The kernel's test before it drops a link's nexthop objects (`IFF_RUNNING | IFF_LOWER_UP`).
fn has_carrier(m: &LinkMessage) -> bool {
    m.header
        .flags
        .intersects(LinkFlags::LowerUp | LinkFlags::Running)
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
        carrier: has_carrier(m),
        addrs: Vec::new(),
        device: device_of(m),
    }
}

/// A link with a weft device name read as a [`Device`] (vxlan and ipip attributes; another
/// kind as [`DeviceKind::Other`]); None for other names.
fn device_of(m: &LinkMessage) -> Option<Device> {
    let name = link_name(m);
    if !is_device_name(&name) {
        return None;
    }
    let mut mac = None;
    let mut mtu = 0;
    let mut kind = DeviceKind::Other(String::new());
    for a in &m.attributes {
        match a {
            LinkAttribute::Address(raw) => mac = Mac::try_from(raw.as_slice()).ok(),
            LinkAttribute::Mtu(v) => mtu = *v,
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfoAttr::Kind(k) => {
                            let k = k.to_string();
                            kind = match k.as_str() {
                                "vxlan" => DeviceKind::Vxlan(VxlanParams {
                                    vni: 0,
                                    link: 0,
                                    local: Ipv4Addr::UNSPECIFIED.into(),
                                    port: 0,
                                    learning: true,
                                    gbp: false,
                                    group: None,
                                    l2miss: false,
                                    l3miss: false,
                                }),
                                "ipip" => DeviceKind::IpIp {
                                    local: Ipv4Addr::UNSPECIFIED,
                                    remote: None,
                                },
                                _ => DeviceKind::Other(k),
                            };
                        }
                        LinkInfoAttr::Data(InfoData::Vxlan(attrs)) => {
                            if let DeviceKind::Vxlan(v) = &mut kind {
                                read_vxlan(attrs, v);
                            }
                        }
                        LinkInfoAttr::Data(InfoData::IpTunnel(attrs)) => {
                            if let DeviceKind::IpIp { local, remote } = &mut kind {
                                for t in attrs {
                                    match t {
                                        InfoIpTunnel::Local(IpAddr::V4(ip)) => *local = *ip,
                                        InfoIpTunnel::Remote(IpAddr::V4(ip)) => {
                                            *remote = Some(*ip).filter(|r| !r.is_unspecified());
                                        }
                                        _ => {}
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if !matches!(kind, DeviceKind::Vxlan(_)) {
        // ipip reports its local address as the link-layer address; only vxlan has a MAC.
        mac = None;
    }
    Some(Device {
        name,
        index: m.header.index,
        kind,
        mtu,
        mac,
        up: m.header.flags.contains(LinkFlags::Up),
    })
}

/// The vxlan attributes weft compares (the kernel reports each of them).
fn read_vxlan(attrs: &[InfoVxlan], v: &mut VxlanParams) {
    for a in attrs {
        match a {
            InfoVxlan::Id(id) => v.vni = *id,
            InfoVxlan::Link(l) => v.link = *l,
            InfoVxlan::Local(ip) => v.local = (*ip).into(),
            InfoVxlan::Local6(ip) => v.local = (*ip).into(),
            InfoVxlan::Group(ip) => v.group = Some(*ip).filter(|g| !g.is_unspecified()),
            InfoVxlan::Port(p) => v.port = *p,
            InfoVxlan::Learning(b) => v.learning = *b,
            InfoVxlan::Gbp => v.gbp = true,
            InfoVxlan::L2Miss(b) => v.l2miss = *b,
            InfoVxlan::L3Miss(b) => v.l3miss = *b,
            _ => {}
        }
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
fn kernel_event(msg: NetlinkMessage<RtMessage>) -> Option<KernelEvent> {
    match msg.payload {
        NetlinkPayload::InnerMessage(RtMessage::Nexthop(m)) => {
            let nh = m.nexthop()?;
            match m.kind {
                nexthop::RTM_NEWNEXTHOP => Some(KernelEvent::NexthopAdded(nh)),
                nexthop::RTM_DELNEXTHOP => Some(KernelEvent::NexthopDeleted(nh)),
                _ => None,
            }
        }
        NetlinkPayload::InnerMessage(RtMessage::Route(inner)) => match inner {
            RouteNetlinkMessage::NewRoute(m) => route_event(&m).map(KernelEvent::RouteAdded),
            RouteNetlinkMessage::DelRoute(m) => route_event(&m).map(KernelEvent::RouteDeleted),
            RouteNetlinkMessage::NewLink(m) => Some(KernelEvent::LinkChanged {
                index: m.header.index,
                name: link_name(&m),
                up: m.header.flags.contains(LinkFlags::Up),
                carrier: has_carrier(&m),
                device: device_of(&m),
            }),
            RouteNetlinkMessage::DelLink(m) => Some(KernelEvent::LinkDeleted {
                index: m.header.index,
                name: link_name(&m),
            }),
            RouteNetlinkMessage::NewNeighbour(m) => neigh_event(&m, true),
            RouteNetlinkMessage::DelNeighbour(m) => neigh_event(&m, false),
            RouteNetlinkMessage::NewAddress(m) => match addr_info(&m)? {
                AddrInfo {
                    addr: IpAddr::V4(addr),
                    ..
                } => Some(KernelEvent::AddressAdded {
                    index: m.header.index,
                    addr,
                    prefix_len: m.header.prefix_len,
                }),
                a => address6_event(&m, &a, true),
            },
            RouteNetlinkMessage::DelAddress(m) => match addr_info(&m)? {
                AddrInfo {
                    addr: IpAddr::V4(addr),
                    ..
                } => Some(KernelEvent::AddressDeleted {
                    index: m.header.index,
                    addr,
                    prefix_len: m.header.prefix_len,
                }),
                a => address6_event(&m, &a, false),
            },
            _ => None,
        },
        NetlinkPayload::Overrun(_) => Some(KernelEvent::Overrun),
        _ => None,
    }
}

/// A global IPv6 address added or deleted; None for link-local and host-scope ones.
fn address6_event(m: &AddressMessage, a: &AddrInfo, added: bool) -> Option<KernelEvent> {
    match a.addr {
        IpAddr::V6(addr) if a.scope_global => Some(KernelEvent::Address6Changed {
            index: m.header.index,
            addr,
            prefix_len: m.header.prefix_len,
            added,
        }),
        _ => None,
    }
}

/// The `RTM_GETNEIGH` dump request of `ip neigh show` (Inet) / `bridge fdb show` (Bridge).
fn neigh_dump_msg(family: AddressFamily) -> RtMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = family;
    RtMessage::Route(RouteNetlinkMessage::GetNeighbour(msg))
}

/// NUD_PERMANENT is a bit: `bridge fdb ... permanent` reports PERMANENT|NOARP (0xc0), which the
/// packet crate can only show as `Other(192)`.
fn is_permanent(state: NeighbourState) -> bool {
    u16::from(state) & NUD_PERMANENT != 0
}

const NUD_PERMANENT: u16 = 0x80;

/// NDA_DST, IPv4 or IPv6. In AF_BRIDGE messages the packet crate cannot tell the address family
/// from the header and yields the raw bytes (`Other`): 4 raw bytes are IPv4, 16 are IPv6 (the
/// `dst` of an FDB entry of `flannel-v6.<VNI>`).
fn neigh_dst(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Other(raw)) => {
            if let Ok(b) = <[u8; 4]>::try_from(raw.as_slice()) {
                Some(IpAddr::V4(Ipv4Addr::from(b)))
            } else {
                <[u8; 16]>::try_from(raw.as_slice())
                    .ok()
                    .map(|b| IpAddr::V6(Ipv6Addr::from(b)))
            }
        }
        _ => None,
    })
}

/// NDA_DST of a request: the address as its family's.
fn neigh_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

/// The neighbour family of `ip` (AF_INET or AF_INET6).
fn inet_family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn neigh_mac(m: &NeighbourMessage) -> Option<Mac> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(l) => Mac::try_from(l.as_slice()).ok(),
        _ => None,
    })
}

fn neigh_event(m: &NeighbourMessage, added: bool) -> Option<KernelEvent> {
    let ifindex = m.header.ifindex;
    let ip = neigh_dst(m)?;
    let mac = neigh_mac(m);
    let permanent = is_permanent(m.header.state);
    match m.header.family {
        AddressFamily::Inet | AddressFamily::Inet6
            if ip.is_ipv4() == (m.header.family == AddressFamily::Inet) =>
        {
            // A deleted or unresolved entry may come without a link-layer address.
            let neigh = Neigh {
                ifindex,
                ip,
                mac: mac.unwrap_or_default(),
            };
            Some(if added {
                KernelEvent::NeighAdded { neigh, permanent }
            } else {
                KernelEvent::NeighDeleted(neigh)
            })
        }
        AddressFamily::Bridge => {
            let entry = Fdb {
                ifindex,
                mac: mac?,
                dst: ip,
            };
            Some(if added {
                KernelEvent::FdbAdded {
                    entry,
                    owned_kind: permanent && m.header.flags.contains(NeighbourFlags::Own),
                }
            } else {
                KernelEvent::FdbDeleted(entry)
            })
        }
        _ => None,
    }
}

/// `ip monitor route link address neigh nexthop` (routes, addresses and neighbours of both
/// families): a separate multicast connection in the
/// calling thread's network namespace, spawned on the current runtime. The stream ends if the
/// socket fails; subscribe again and `refresh` then. On a kernel without nexthop objects the
/// nexthop group cannot be joined; the other events still come.
pub fn subscribe() -> Result<impl Stream<Item = KernelEvent> + Unpin + Send, BackendError> {
    use rtnetlink::sys::AsyncSocket as _;
    let op = "ip monitor route link address neigh nexthop";
    let io_err = |e: std::io::Error| BackendError::Netlink {
        op: op.into(),
        errno: e.raw_os_error(),
        message: e.to_string(),
    };
    let (mut conn, handle, messages) =
        rtnetlink::proto::new_connection::<RtMessage>(rtnetlink::sys::protocols::NETLINK_ROUTE)
            .map_err(io_err)?;
    // Groups 1..=31 through the bind bitmask, RTNLGRP_NEXTHOP (32) only through
    // NETLINK_ADD_MEMBERSHIP.
    let groups = [
        MulticastGroup::Link,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Neigh,
    ]
    .iter()
    .fold(0u32, |mask, g| mask | 1 << (*g as u32 - 1));
    let sock = conn.socket_mut().socket_mut();
    sock.bind(&rtnetlink::sys::SocketAddr::new(0, groups))
        .map_err(io_err)?;
    if let Err(e) = sock.add_membership(MulticastGroup::Nexthop as u32) {
        tracing::debug!(error = %e, "no nexthop notifications (kernel without nexthop objects?)");
    }
    tokio::spawn(conn);
    Ok(messages.filter_map(move |(msg, _)| {
        // Keep the request handle alive as long as the stream, so the connection stays up.
        let _keep = &handle;
        future::ready(kernel_event(msg))
    }))
}

// ===== neighbours, FDB, vxlan devices, addresses =====

impl Netlink {
    /// `ip [-6] neigh replace <ip> lladdr <mac> dev <dev> nud permanent`.
    pub async fn neigh_replace(&self, n: &Neigh) -> Result<(), BackendError> {
        self.handle
            .neighbours()
            .add(n.ifindex, n.ip)
            .link_layer_address(&n.mac)
            .state(NeighbourState::Permanent)
            .kind(RouteType::Unicast)
            .replace()
            .execute()
            .await
            .map_err(|e| nl_err(KernelOp::NeighReplace(n.clone()).to_string(), e))
    }

    /// `ip [-6] neigh del <ip> dev <dev>`; "already gone" is success.
    pub async fn neigh_del(&self, n: &Neigh) -> Result<(), BackendError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = inet_family(n.ip);
        msg.header.ifindex = n.ifindex;
        msg.attributes
            .push(NeighbourAttribute::Destination(neigh_address(n.ip)));
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno_of(&e), Some(ENOENT | ESRCH | ENODEV)) => Ok(()),
            Err(e) => Err(nl_err(KernelOp::NeighDel(n.clone()).to_string(), e)),
        }
    }

    /// `ip neigh show dev <dev> nud permanent` and `ip -6 neigh show …`: the ARP and NDP entries
    /// weft owns on its device.
    pub async fn dump_permanent_neighs(&self, ifindex: u32) -> Result<Vec<Neigh>, BackendError> {
        let mut out = Vec::new();
        for (flag, family) in [("", AddressFamily::Inet), ("-6 ", AddressFamily::Inet6)] {
            dump::dump_each(
                &format!("ip {flag}neigh show dev {ifindex} nud permanent"),
                neigh_dump_msg(family),
                |m| {
                    if let RtMessage::Route(RouteNetlinkMessage::NewNeighbour(m)) = m {
                        if m.header.ifindex == ifindex && is_permanent(m.header.state) {
                            if let (Some(ip), Some(mac)) = (neigh_dst(&m), neigh_mac(&m)) {
                                out.push(Neigh { ifindex, ip, mac });
                            }
                        }
                    }
                },
            )
            .await?;
        }
        Ok(out)
    }

    /// `bridge fdb replace <mac> dev <dev> dst <ip> self permanent`.
    pub async fn fdb_replace(&self, e: &Fdb) -> Result<(), BackendError> {
        self.handle
            .neighbours()
            .add_bridge(e.ifindex, &e.mac)
            .destination(e.dst)
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|err| nl_err(KernelOp::FdbReplace(e.clone()).to_string(), err))
    }

    /// `bridge fdb del <mac> dev <dev> dst <ip> self`: only the entry to that `dst` goes;
    /// "already gone" is success.
    pub async fn fdb_del(&self, e: &Fdb) -> Result<(), BackendError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = e.ifindex;
        msg.header.flags = NeighbourFlags::Own;
        msg.header.state = NeighbourState::Permanent;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(e.mac.to_vec()));
        msg.attributes
            .push(NeighbourAttribute::Destination(neigh_address(e.dst)));
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(err) if matches!(errno_of(&err), Some(ENOENT | ESRCH | ENODEV)) => Ok(()),
            Err(err) => Err(nl_err(KernelOp::FdbDel(e.clone()).to_string(), err)),
        }
    }

    /// `bridge fdb show dev <dev>`, keeping the `self permanent` entries with a `dst` (the
    /// per-VTEP entries weft writes; the device's own multicast/unicast addresses have no dst).
    pub async fn dump_fdb(&self, ifindex: u32) -> Result<Vec<Fdb>, BackendError> {
        let mut out = Vec::new();
        dump::dump_each(
            &format!("bridge fdb show dev {ifindex}"),
            neigh_dump_msg(AddressFamily::Bridge),
            |m| {
                if let RtMessage::Route(RouteNetlinkMessage::NewNeighbour(m)) = m {
                    let ours = m.header.ifindex == ifindex
                        && is_permanent(m.header.state)
                        && m.header.flags.contains(NeighbourFlags::Own);
                    if ours {
                        if let (Some(dst), Some(mac)) = (neigh_dst(&m), neigh_mac(&m)) {
                            out.push(Fdb { ifindex, mac, dst });
                        }
                    }
                }
            },
        )
        .await?;
        Ok(out)
    }

    /// `ip -d link show <name>`: the raw link message; `None` when there is no such link.
    async fn link_message(&self, name: &str) -> Result<Option<LinkMessage>, BackendError> {
        match self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await
        {
            Ok(msg) => Ok(msg),
            Err(e) if errno_of(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(nl_err(format!("ip -d link show {name}"), e)),
        }
    }

    /// `ip -d link show <name>` read as a weft device ([`Device`]); `None` when there is no
    /// such link or the name is not a weft device name.
    pub async fn device_by_name(&self, name: &str) -> Result<Option<Device>, BackendError> {
        Ok(self.link_message(name).await?.as_ref().and_then(device_of))
    }

    /// `ip link add <device>` (vxlan or ipip; up in the same message when `dev.up`). EEXIST when
    /// the name is taken; EOPNOTSUPP when the kernel lacks the kind.
    pub async fn device_add(&self, dev: &Device) -> Result<(), BackendError> {
        let op = || format!("ip link add {}", dev.spec_with(&|_| None));
        let msg = match &dev.kind {
            DeviceKind::Vxlan(v) => {
                let mut b = LinkVxlan::new(&dev.name, v.vni).dev(v.link);
                b = match v.local {
                    IpAddr::V4(ip) => b.local(ip),
                    IpAddr::V6(ip) => b.local6(ip),
                };
                let mut b = b.learning(v.learning).port(v.port).mtu(dev.mtu);
                if let Some(mac) = dev.mac {
                    b = b.address(mac.to_vec());
                }
                if v.gbp {
                    b = b.gbp();
                }
                if dev.up {
                    b = b.up();
                }
                b.build()
            }
            DeviceKind::IpIp { local, .. } => {
                let mut b = LinkIpIp::new(&dev.name).local(*local).mtu(dev.mtu);
                if dev.up {
                    b = b.up();
                }
                b.build()
            }
            DeviceKind::Other(kind) => {
                return Err(BackendError::Unsupported(format!(
                    "{}: weft does not make {kind} devices",
                    op()
                )));
            }
        };
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| nl_err(op(), e))
    }

    /// `ip link set <index> mtu <mtu> [address <mac>] up|down`: the attributes of `dev` that
    /// can change in place, on the link at `dev.index`.
    pub async fn device_set(&self, dev: &Device) -> Result<(), BackendError> {
        let mut b = LinkUnspec::new_with_index(dev.index).mtu(dev.mtu);
        if let Some(mac) = dev.mac {
            b = b.address(mac.to_vec());
        }
        b = if dev.up { b.up() } else { b.down() };
        self.handle
            .link()
            .change(b.build())
            .execute()
            .await
            .map_err(|e| nl_err(KernelOp::LinkSet(dev.clone()).to_string(), e))
    }

    /// `ip link del <index>`; "already gone" is success.
    pub async fn link_del(&self, index: u32) -> Result<(), BackendError> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(ENODEV) => Ok(()),
            Err(e) => Err(nl_err(format!("ip link del {index}"), e)),
        }
    }

    /// `ip addr replace <ip>/<prefix_len> dev <index>`.
    pub async fn addr_replace(
        &self,
        index: u32,
        ip: IpAddr,
        prefix_len: u8,
    ) -> Result<(), BackendError> {
        self.handle
            .address()
            .add(index, ip, prefix_len)
            .replace()
            .execute()
            .await
            .map_err(|e| nl_err(format!("ip addr replace {ip}/{prefix_len} dev {index}"), e))
    }

    /// `ip addr del <ip>/<prefix_len> dev <index>`; "already gone" is success.
    pub async fn addr_del(
        &self,
        index: u32,
        ip: IpAddr,
        prefix_len: u8,
    ) -> Result<(), BackendError> {
        let msg = match ip {
            IpAddr::V4(ip) => AddressMessageBuilder::<Ipv4Addr>::new()
                .index(index)
                .address(ip, prefix_len)
                .build(),
            IpAddr::V6(ip) => AddressMessageBuilder::<Ipv6Addr>::new()
                .index(index)
                .address(ip, prefix_len)
                .build(),
        };
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno_of(&e), Some(EADDRNOTAVAIL | ENODEV)) => Ok(()),
            Err(e) => Err(nl_err(
                format!("ip addr del {ip}/{prefix_len} dev {index}"),
                e,
            )),
        }
    }
}

// ===== link kinds =====

/// The kernel's errno when it does not know a link kind (`ip link add t0 type ipip` on a kernel
/// without CONFIG_NET_IPIP and no module to load: iproute2 prints "Unknown device type").
pub const EOPNOTSUPP: i32 = 95;
/// EINVAL: the kernel refuses the request's values.
pub const EINVAL: i32 = 22;
