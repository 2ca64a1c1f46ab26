//! Nexthop objects (`ip nexthop`, Linux ≥ 5.3), which netlink-packet-route 0.34 does not know:
//! RTM_NEWNEXTHOP/DELNEXTHOP/GETNEXTHOP (104/105/106) are built and parsed here, `struct nhmsg`
//! and its `NHA_*` attributes by hand, and travel on a netlink-proto connection of their own
//! ([`RtMessage`]: netlink-packet-route's messages plus these).
//!
//! weft's nexthops carry protocol [`RTPROT_WEFT`] (87) in `nhmsg.nh_protocol`, like its routes,
//! so a dump finds exactly the nexthops weft made.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::StreamExt;
use ipnet::IpNet;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_core::{
    DecodeError, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::proto::ConnectionHandle;
use rtnetlink::sys::SocketAddr;

use super::{ENOENT, ESRCH, Netlink, nl_err};
use crate::{BackendError, RTPROT_WEFT, Route};

pub(crate) const RTM_NEWNEXTHOP: u16 = 104;
pub(crate) const RTM_DELNEXTHOP: u16 = 105;
pub(crate) const RTM_GETNEXTHOP: u16 = 106;

const NHA_ID: u16 = 1;
const NHA_GROUP: u16 = 2;
const NHA_BLACKHOLE: u16 = 4;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
const NHA_FDB: u16 = 11;

/// `onlink` in `nhmsg.nh_flags` (RTNH_F_ONLINK, shared with routes' next hops).
const RTNH_F_ONLINK: u32 = 4;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// `sizeof(struct nhmsg)`: family, scope, protocol, reserved (one byte each), flags (u32).
const NHMSG_LEN: usize = 8;
/// `sizeof(struct nexthop_grp)`: id (u32), weight, weight_high (u8 each), reserved (u16).
const NEXTHOP_GRP_LEN: usize = 8;

/// The kernel's errno for an id that is already taken (`ip nexthop add id N` twice).
pub const EEXIST: i32 = 17;

/// Where a gateway nexthop sends: `via <gateway> dev <oif> [onlink]`. A weft route's next hop
/// ([`Route`] without its destination): the key of weft's nexthop objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hop {
    /// IPv4 or IPv6: the nexthop object's family (AF_INET / AF_INET6) is the gateway's.
    pub gateway: IpAddr,
    pub oif: u32,
    pub onlink: bool,
}

impl Hop {
    /// The next hop of `route`.
    pub fn of(route: &Route) -> Hop {
        Hop {
            gateway: route.gateway,
            oif: route.oif,
            onlink: route.onlink,
        }
    }

    /// The route to `dst` through this hop.
    pub fn route(self, dst: IpNet) -> Route {
        Route {
            dst,
            gateway: self.gateway,
            oif: self.oif,
            onlink: self.onlink,
        }
    }

    /// `via 198.18.0.2 dev eth0 onlink`, the device by name when known, else by index.
    pub fn display_with<'a>(&'a self, name: Option<&'a str>) -> impl fmt::Display + 'a {
        HopDisplay { hop: self, name }
    }
}

struct HopDisplay<'a> {
    hop: &'a Hop,
    name: Option<&'a str>,
}

impl fmt::Display for HopDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "via {} dev ", self.hop.gateway)?;
        match self.name {
            Some(n) => f.write_str(n)?,
            None => write!(f, "{}", self.hop.oif)?,
        }
        if self.hop.onlink {
            f.write_str(" onlink")?;
        }
        Ok(())
    }
}

/// `via 198.18.0.2 dev 3 onlink`.
impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.display_with(None).fmt(f)
    }
}

/// A nexthop object as the kernel reports it (one line of `ip nexthop show`), any owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nexthop {
    pub id: u32,
    /// `proto`: 87 for weft's nexthops.
    pub protocol: u8,
    /// `AF_INET` (2), `AF_INET6` (10), or `AF_UNSPEC` (0) for groups and blackholes.
    pub family: u8,
    /// The gateway (`via`), IPv4 or IPv6, if it has one.
    pub gateway: Option<IpAddr>,
    /// `dev`: 0 when none (groups, blackholes).
    pub oif: u32,
    pub onlink: bool,
    pub blackhole: bool,
    /// `fdb`: a nexthop for vxlan FDB entries, not for routes.
    pub fdb: bool,
    /// The member ids of a group (`group 5/6`); empty for a single nexthop.
    pub group: Vec<u32>,
}

impl Nexthop {
    /// The next hop when this is a plain gateway nexthop (`via <gw> dev <dev> [onlink]`) whose
    /// family is its gateway's (AF_INET with an IPv4 gateway, AF_INET6 with an IPv6 one), the
    /// only kind weft makes; None for groups, blackholes, fdb or device-only nexthops.
    pub fn hop(&self) -> Option<Hop> {
        let gateway = self.gateway?;
        (self.family == family_of(&gateway)
            && self.oif != 0
            && !self.blackhole
            && !self.fdb
            && self.group.is_empty())
        .then_some(Hop {
            gateway,
            oif: self.oif,
            onlink: self.onlink,
        })
    }

    /// True when weft made it (protocol 87).
    pub fn is_weft(&self) -> bool {
        self.protocol == RTPROT_WEFT
    }
}

/// `id 5 via 198.18.0.2 dev 3 proto 87` (like `ip nexthop show`, devices by index).
impl fmt::Display for Nexthop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "id {}", self.id)?;
        if !self.group.is_empty() {
            let ids: Vec<String> = self.group.iter().map(u32::to_string).collect();
            write!(f, " group {}", ids.join("/"))?;
        }
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if self.oif != 0 {
            write!(f, " dev {}", self.oif)?;
        }
        if self.blackhole {
            f.write_str(" blackhole")?;
        }
        if self.onlink {
            f.write_str(" onlink")?;
        }
        if self.fdb {
            f.write_str(" fdb")?;
        }
        write!(f, " proto {}", self.protocol)
    }
}

// ===== the messages =====

/// One nexthop message: `struct nhmsg` and its attributes (type, raw value), in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct NexthopMessage {
    /// RTM_NEWNEXTHOP, RTM_DELNEXTHOP or RTM_GETNEXTHOP.
    pub kind: u16,
    pub family: u8,
    pub scope: u8,
    pub protocol: u8,
    pub flags: u32,
    pub attrs: Vec<(u16, Vec<u8>)>,
}

impl NexthopMessage {
    fn with_id(kind: u16, id: u32) -> Self {
        NexthopMessage {
            kind,
            attrs: vec![(NHA_ID, id.to_ne_bytes().to_vec())],
            ..Default::default()
        }
    }

    fn attrs_len(&self) -> usize {
        self.attrs.iter().map(|(_, v)| align4(4 + v.len())).sum()
    }

    fn parse(kind: u16, payload: &[u8]) -> Result<Self, DecodeError> {
        if payload.len() < NHMSG_LEN {
            return Err(DecodeError::invalid_buffer(
                "nhmsg",
                payload.len(),
                NHMSG_LEN,
            ));
        }
        let mut msg = NexthopMessage {
            kind,
            family: payload[0],
            scope: payload[1],
            protocol: payload[2],
            flags: u32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]),
            attrs: Vec::new(),
        };
        let mut rest = &payload[NHMSG_LEN..];
        while rest.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
            // The top bits of nla_type are the nested / network-byte-order flags.
            let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
            if len < 4 || len > rest.len() {
                return Err(DecodeError::from(format!(
                    "nexthop attribute {kind} of length {len} in {} bytes",
                    rest.len()
                )));
            }
            msg.attrs.push((kind, rest[4..len].to_vec()));
            rest = &rest[align4(len).min(rest.len())..];
        }
        Ok(msg)
    }

    fn u32_attr(&self, kind: u16) -> Option<u32> {
        self.attrs.iter().find_map(|(k, v)| {
            (*k == kind)
                .then(|| {
                    <[u8; 4]>::try_from(v.as_slice())
                        .ok()
                        .map(u32::from_ne_bytes)
                })
                .flatten()
        })
    }

    fn has(&self, kind: u16) -> bool {
        self.attrs.iter().any(|(k, _)| *k == kind)
    }

    /// The nexthop this RTM_NEWNEXTHOP/RTM_DELNEXTHOP describes; None without an id.
    pub fn nexthop(&self) -> Option<Nexthop> {
        let id = self.u32_attr(NHA_ID)?;
        // NHA_GATEWAY is 4 bytes (AF_INET) or 16 (AF_INET6).
        let gateway = self.attrs.iter().find_map(|(k, v)| {
            (*k == NHA_GATEWAY)
                .then(|| match v.len() {
                    4 => <[u8; 4]>::try_from(v.as_slice())
                        .ok()
                        .map(|b| IpAddr::V4(Ipv4Addr::from(b))),
                    16 => <[u8; 16]>::try_from(v.as_slice())
                        .ok()
                        .map(|b| IpAddr::V6(Ipv6Addr::from(b))),
                    _ => None,
                })
                .flatten()
        });
        let group = self
            .attrs
            .iter()
            .filter(|(k, _)| *k == NHA_GROUP)
            .flat_map(|(_, v)| {
                v.chunks_exact(NEXTHOP_GRP_LEN)
                    .map(|g| u32::from_ne_bytes([g[0], g[1], g[2], g[3]]))
            })
            .collect();
        Some(Nexthop {
            id,
            protocol: self.protocol,
            family: self.family,
            gateway,
            oif: self.u32_attr(NHA_OIF).unwrap_or(0),
            onlink: self.flags & RTNH_F_ONLINK != 0,
            blackhole: self.has(NHA_BLACKHOLE),
            fdb: self.has(NHA_FDB),
            group,
        })
    }
}

/// The nexthop family of a gateway: AF_INET or AF_INET6.
fn family_of(gateway: &IpAddr) -> u8 {
    match gateway {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

/// A gateway's bytes as NHA_GATEWAY carries them (4 or 16).
fn gateway_bytes(gateway: &IpAddr) -> Vec<u8> {
    match gateway {
        IpAddr::V4(g) => g.octets().to_vec(),
        IpAddr::V6(g) => g.octets().to_vec(),
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// An rtnetlink message on weft's own netlink-proto connections: what netlink-packet-route
/// parses, plus the nexthop messages it does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RtMessage {
    Route(RouteNetlinkMessage),
    Nexthop(NexthopMessage),
}

impl NetlinkSerializable for RtMessage {
    fn message_type(&self) -> u16 {
        match self {
            RtMessage::Route(m) => m.message_type(),
            RtMessage::Nexthop(m) => m.kind,
        }
    }

    fn buffer_len(&self) -> usize {
        match self {
            RtMessage::Route(m) => m.buffer_len(),
            RtMessage::Nexthop(m) => NHMSG_LEN + m.attrs_len(),
        }
    }

    fn serialize(&self, buffer: &mut [u8]) {
        match self {
            RtMessage::Route(m) => m.serialize(buffer),
            RtMessage::Nexthop(m) => {
                buffer.fill(0);
                buffer[0] = m.family;
                buffer[1] = m.scope;
                buffer[2] = m.protocol;
                buffer[4..8].copy_from_slice(&m.flags.to_ne_bytes());
                let mut at = NHMSG_LEN;
                for (kind, value) in &m.attrs {
                    let len = 4 + value.len();
                    // Attribute values are a few bytes: the length always fits.
                    let len16 = u16::try_from(len).unwrap_or(u16::MAX);
                    buffer[at..at + 2].copy_from_slice(&len16.to_ne_bytes());
                    buffer[at + 2..at + 4].copy_from_slice(&kind.to_ne_bytes());
                    buffer[at + 4..at + len].copy_from_slice(value);
                    at += align4(len);
                }
            }
        }
    }
}

impl NetlinkDeserializable for RtMessage {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Self::Error> {
        match header.message_type {
            RTM_NEWNEXTHOP | RTM_DELNEXTHOP | RTM_GETNEXTHOP => {
                NexthopMessage::parse(header.message_type, payload).map(RtMessage::Nexthop)
            }
            _ => RouteNetlinkMessage::deserialize(header, payload).map(RtMessage::Route),
        }
    }
}

/// The errno and text of a netlink error reply.
fn reply_error(op: &str, err: &rtnetlink::packet_core::ErrorMessage) -> BackendError {
    let io = err.to_io();
    BackendError::Netlink {
        op: op.to_string(),
        errno: Some(err.raw_code().abs()),
        message: io.to_string(),
    }
}

/// True when `e` says the kernel has no nexthop objects: a kernel before 5.3 does not know
/// RTM_GETNEXTHOP (EOPNOTSUPP), and other implementations of rtnetlink answer EINVAL, ENOENT,
/// EPROTONOSUPPORT or ENOSYS.
pub fn nexthops_unsupported(e: &BackendError) -> bool {
    const EINVAL: i32 = 22;
    const ENOSYS: i32 = 38;
    const EPROTONOSUPPORT: i32 = 93;
    matches!(
        e,
        BackendError::Netlink {
            errno: Some(ENOENT | EINVAL | ENOSYS | EPROTONOSUPPORT | super::EOPNOTSUPP),
            ..
        }
    )
}

impl Netlink {
    /// Sends one request on the nexthop connection and collects its replies (a dump's
    /// messages, or nothing for an acknowledged write); an error reply becomes the error.
    async fn nh_request(
        &self,
        op: &str,
        msg: RtMessage,
        flags: u16,
    ) -> Result<Vec<RtMessage>, BackendError> {
        let mut out = Vec::new();
        self.nh_request_each(op, msg, flags, |m| out.push(m))
            .await?;
        Ok(out)
    }

    /// [`nh_request`](Self::nh_request) handing each reply to `each` as it arrives (a dump of
    /// 20,000 nexthops is not held as raw messages).
    async fn nh_request_each(
        &self,
        op: &str,
        msg: RtMessage,
        flags: u16,
        mut each: impl FnMut(RtMessage),
    ) -> Result<(), BackendError> {
        let mut req =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(msg));
        req.header.flags = flags;
        let handle: &ConnectionHandle<RtMessage> = &self.nh;
        let mut replies =
            handle
                .request(req, SocketAddr::new(0, 0))
                .map_err(|e| BackendError::Netlink {
                    op: op.to_string(),
                    errno: None,
                    message: e.to_string(),
                })?;
        while let Some(reply) = replies.next().await {
            match reply.payload {
                NetlinkPayload::InnerMessage(m) => each(m),
                NetlinkPayload::Error(e) if e.code.is_some() => return Err(reply_error(op, &e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// `ip nexthop show`: every nexthop object (all owners, all families). Fails with the
    /// kernel's errno where there are no nexthop objects (see [`nexthops_unsupported`]). Read
    /// on a socket of its own (see [`super::dump`]).
    pub async fn dump_nexthops(&self) -> Result<Vec<Nexthop>, BackendError> {
        let msg = NexthopMessage {
            kind: RTM_GETNEXTHOP,
            family: AF_UNSPEC,
            ..Default::default()
        };
        let mut out = Vec::new();
        super::dump::dump_each("ip nexthop show", RtMessage::Nexthop(msg), |m| {
            if let RtMessage::Nexthop(m) = m {
                if m.kind == RTM_NEWNEXTHOP {
                    out.extend(m.nexthop());
                }
            }
        })
        .await?;
        out.shrink_to_fit();
        Ok(out)
    }

    /// `ip nexthop get id <id>`; None when there is no such nexthop.
    pub async fn nexthop_get(&self, id: u32) -> Result<Option<Nexthop>, BackendError> {
        let msg = NexthopMessage::with_id(RTM_GETNEXTHOP, id);
        match self
            .nh_request(
                &format!("ip nexthop get id {id}"),
                RtMessage::Nexthop(msg),
                NLM_F_REQUEST,
            )
            .await
        {
            Ok(replies) => Ok(replies.iter().find_map(|m| match m {
                RtMessage::Nexthop(m) => m.nexthop().filter(|n| n.id == id),
                RtMessage::Route(_) => None,
            })),
            Err(BackendError::Netlink {
                errno: Some(ENOENT | ESRCH),
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `ip nexthop add id <id> via <gw> dev <oif> [onlink] proto 87`. Fails with [`EEXIST`]
    /// when the id is taken (never replaces someone else's nexthop), with ENETDOWN when the
    /// device is down or has no carrier, ENETUNREACH when the gateway is not on-link.
    pub async fn nexthop_add(&self, id: u32, hop: &Hop) -> Result<(), BackendError> {
        self.nh_request(
            &format!("ip nexthop add id {id} {hop} proto {RTPROT_WEFT}"),
            RtMessage::Nexthop(nexthop_add_msg(id, hop)),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
        .map(drop)
    }

    /// `ip nexthop add id <id> via <gw> dev <oif> [onlink] proto 87` and `ip route replace <dst>
    /// nhid <id> proto 87` in one request (one round trip; the kernel handles the two messages in
    /// order). Returns the nexthop's result and the route's. When the nexthop add fails with
    /// [`EEXIST`] the route may have gone onto someone else's nexthop `id`: write it again on
    /// another nexthop at once.
    pub async fn nexthop_add_with_route(
        &self,
        id: u32,
        hop: &Hop,
        dst: IpNet,
    ) -> (Result<(), BackendError>, Result<(), BackendError>) {
        let nh_op = format!("ip nexthop add id {id} {hop} proto {RTPROT_WEFT}");
        let route_op = format!("ip route replace {dst} nhid {id} proto {RTPROT_WEFT}");
        let mut add = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(RtMessage::Nexthop(nexthop_add_msg(id, hop))),
        );
        add.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        let mut route = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(RtMessage::Route(RouteNetlinkMessage::NewRoute(
                nhid_route_msg(dst, id),
            ))),
        );
        route.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let mut replies = match self.nh.request_batch([add, route], SocketAddr::new(0, 0)) {
            Ok(r) => r,
            Err(e) => {
                let err = |op: &str| BackendError::Netlink {
                    op: op.to_string(),
                    errno: None,
                    message: e.to_string(),
                };
                return (Err(err(&nh_op)), Err(err(&route_op)));
            }
        };
        let (mut nh_result, mut route_result) = (Ok(()), Ok(()));
        while let Some(reply) = replies.next().await {
            if let NetlinkPayload::Error(e) = reply.payload {
                if e.code.is_none() {
                    continue;
                }
                // The error carries the header of the request it answers: its message type.
                let kind = e.header.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
                if kind == Some(RTM_NEWNEXTHOP) {
                    nh_result = Err(reply_error(&nh_op, &e));
                } else {
                    route_result = Err(reply_error(&route_op, &e));
                }
            }
        }
        (nh_result, route_result)
    }

    /// `ip nexthop del id <id>`; "already gone" is success. The kernel removes the routes that
    /// use it, without RTM_DELROUTE.
    pub async fn nexthop_del(&self, id: u32) -> Result<(), BackendError> {
        let msg = NexthopMessage::with_id(RTM_DELNEXTHOP, id);
        match self
            .nh_request(
                &format!("ip nexthop del id {id}"),
                RtMessage::Nexthop(msg),
                NLM_F_REQUEST | NLM_F_ACK,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(BackendError::Netlink {
                errno: Some(ENOENT | ESRCH),
                ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `ip route replace <dst> nhid <id> proto 87` (table main, metric 0).
    pub async fn route_replace_nhid(&self, dst: IpNet, id: u32) -> Result<(), BackendError> {
        self.handle
            .route()
            .add(nhid_route_msg(dst, id))
            .replace()
            .execute()
            .await
            .map_err(|e| {
                nl_err(
                    format!("ip route replace {dst} nhid {id} proto {RTPROT_WEFT}"),
                    e,
                )
            })
    }

    /// `ip route del <dst> nhid <id> proto 87`: the kernel only removes the route to `dst` that
    /// uses nexthop `id`. Ok(false) when no such route was there ("already gone"), also when
    /// nexthop `id` itself is gone (the kernel then answers EINVAL, "Nexthop id does not
    /// exist": no route can use it).
    pub async fn route_del_nhid(&self, dst: IpNet, id: u32) -> Result<bool, BackendError> {
        match self
            .handle
            .route()
            .del(nhid_route_msg(dst, id))
            .execute()
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if matches!(super::errno_of(&e), Some(ENOENT | ESRCH)) => Ok(false),
            Err(e) => {
                if let Ok(None) = self.nexthop_get(id).await {
                    return Ok(false);
                }
                Err(nl_err(
                    format!("ip route del {dst} nhid {id} proto {RTPROT_WEFT}"),
                    e,
                ))
            }
        }
    }
}

/// The message of `ip nexthop add id <id> via <gw> dev <oif> [onlink] proto 87`.
fn nexthop_add_msg(id: u32, hop: &Hop) -> NexthopMessage {
    NexthopMessage {
        kind: RTM_NEWNEXTHOP,
        family: family_of(&hop.gateway),
        scope: 0,
        protocol: RTPROT_WEFT,
        flags: if hop.onlink { RTNH_F_ONLINK } else { 0 },
        attrs: vec![
            (NHA_ID, id.to_ne_bytes().to_vec()),
            (NHA_OIF, hop.oif.to_ne_bytes().to_vec()),
            (NHA_GATEWAY, gateway_bytes(&hop.gateway)),
        ],
    }
}

/// The message for [`Netlink::route_replace_nhid`] / [`Netlink::route_del_nhid`]: table main,
/// protocol 87, at weft's metric for the family ([`crate::plan::route_metric`]).
fn nhid_route_msg(dst: IpNet, id: u32) -> RouteMessage {
    let mut msg = match dst {
        IpNet::V4(d) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(d.network(), d.prefix_len())
            .protocol(RouteProtocol::Other(RTPROT_WEFT))
            .build(),
        IpNet::V6(d) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(d.network(), d.prefix_len())
            .protocol(RouteProtocol::Other(RTPROT_WEFT))
            .priority(crate::plan::V6_METRIC)
            .build(),
    };
    msg.attributes.push(RouteAttribute::NhId(id));
    msg
}

#[cfg(test)]
#[path = "nexthop_tests.rs"]
mod tests;
