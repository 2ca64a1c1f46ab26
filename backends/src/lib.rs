//! weft's data path: the `Backend` trait, the backends (host-gw, vxlan, ipip), the pure plan of kernel
//! operations, the reconciler that applies it, and `nl`, the one module that builds netlink
//! messages.
//!
//! Flow: leases → [`Backend::desired`] (pure: devices, addresses, routes, ARP/FDB entries) → [`plan::diff`] against the last known kernel state
//! (pure) → [`reconcile::Reconciler`] applies the operations through [`nl`].

pub mod any;
pub mod device;
pub mod direct;
pub mod error;
pub mod hostgw;
pub mod ipip;
mod nhtable;
pub mod nl;
pub mod owner;
pub mod plan;
pub mod reconcile;
pub mod vxlan;

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use net_conf::{LeaseAttrs, SubnetKey};

pub use any::AnyBackend;
pub use error::BackendError;
pub use hostgw::HostGw;
pub use nl::{KernelEvent, Netlink};
pub use owner::Ownership;
pub use plan::{KernelOp, KernelState, Route};
pub use reconcile::{ApplyReport, Reconciler};

/// Route protocol number that marks weft's routes (`ip route … proto 87`), so weft can find its
/// own routes, purge stale ones at start, and never touch anyone else's.
pub const RTPROT_WEFT: u8 = 87;

/// The interface that carries the overlay, as chosen at start (docs/flannel-compat.md §1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalInterface {
    pub name: String,
    pub index: u32,
    /// The interface's own IPv4 address; `0.0.0.0` on an IPv6-only network, which has no IPv4
    /// side ([`ExternalInterface::has_v4`]).
    pub iface_addr: Ipv4Addr,
    /// The address published in the lease (`--public-ip` or `iface_addr`); `0.0.0.0` on an
    /// IPv6-only network, as flannel's lease `PublicIP` is then.
    pub ext_addr: Ipv4Addr,
    pub mtu: u32,
    /// The IPv4 prefixes configured on the interface (its directly connected subnets); empty on
    /// an IPv6-only network.
    pub prefixes: Vec<Ipv4Net>,
    /// The interface's IPv6 side on a dual-stack or IPv6-only node (flannel requires both
    /// families on one interface); None on an IPv4-only node. host-gw routes over it; vxlan
    /// makes `flannel-v6.<VNI>` on it.
    pub v6: Option<ExternalV6>,
}

impl ExternalInterface {
    /// Whether this node runs IPv4 on the interface (false on an IPv6-only network): the IPv4
    /// device, address and peer entries exist only then.
    pub fn has_v4(&self) -> bool {
        !self.ext_addr.is_unspecified()
    }
}

/// The IPv6 side of the [`ExternalInterface`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalV6 {
    /// The interface's own IPv6 address.
    pub iface_addr: Ipv6Addr,
    /// The address published in the lease as `PublicIPv6` (`--public-ipv6` or `iface_addr`).
    pub ext_addr: Ipv6Addr,
    /// The IPv6 prefixes configured on the interface (its directly connected subnets).
    pub prefixes: Vec<Ipv6Net>,
}

/// One other node's lease, as the backends see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub key: SubnetKey,
    pub attrs: LeaseAttrs,
}

/// What a backend wants in the kernel for a set of peers, plus the peers it could not serve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub state: KernelState,
    /// Peers left out, with the reason (wrong backend type, not directly connected, ...).
    pub skipped: Vec<(SubnetKey, String)>,
}

/// The check every backend makes first: the peer's lease is of `backend_type`.
pub(crate) fn same_backend(peer: &Peer, backend_type: &str) -> Result<(), String> {
    if peer.attrs.backend_type == backend_type {
        return Ok(());
    }
    Err(format!(
        "peer {} uses backend type {:?}, not \"{backend_type}\": mixed-backend peers are not \
         routed",
        peer.key, peer.attrs.backend_type
    ))
}

/// The checks every backend makes before programming a peer over IPv4: its lease is of
/// `backend_type`, it has an IPv4 subnet and a PublicIP, and that address is not this node's
/// own. Returns the peer's subnet and PublicIP, or why the peer is skipped.
pub(crate) fn usable_peer(
    ext: &ExternalInterface,
    peer: &Peer,
    backend_type: &str,
) -> Result<(Ipv4Net, Ipv4Addr), String> {
    same_backend(peer, backend_type)?;
    let Some(subnet) = peer.key.v4.map(|n| n.trunc()) else {
        return Err(format!("peer {} has no IPv4 subnet", peer.key));
    };
    let ip = peer.attrs.public_ip;
    if ip.is_unspecified() {
        return Err(format!("peer {subnet} has no PublicIP (0.0.0.0)"));
    }
    if ip == ext.ext_addr || ip == ext.iface_addr {
        return Err(format!(
            "peer {subnet} has this node's own address {ip} as PublicIP"
        ));
    }
    Ok((subnet, ip))
}

/// `<subnet> via <ip> dev <ext>` when `ip` is on a directly connected subnet of the external
/// interface: host-gw's route, and DirectRouting's stand-in for a peer not looked up yet
/// ([`crate::direct`]).
pub(crate) fn direct_route(
    ext: &ExternalInterface,
    subnet: Ipv4Net,
    ip: Ipv4Addr,
) -> Option<Route> {
    ext.prefixes
        .iter()
        .any(|p| p.contains(&ip))
        .then_some(Route {
            dst: subnet.into(),
            gateway: ip.into(),
            oif: ext.index,
            onlink: false,
        })
}

/// A data-path backend. Static dispatch: the daemon matches `Backend.Type` once.
pub trait Backend {
    /// `host-gw`, `vxlan`, `ipip`: the lease's `BackendType`.
    fn type_name(&self) -> &'static str;

    /// Checks the backend's preconditions and plans its devices (reading what must survive, such
    /// as the MAC of an existing vxlan device); returns the lease attributes to publish. Runs
    /// before the lease is acquired. The devices are made by the reconciler, from
    /// [`Backend::desired`] (ipip makes a missing device here, as the probe of kernel support).
    fn prepare(
        &mut self,
        nl: &nl::Netlink,
        ext: &ExternalInterface,
    ) -> impl Future<Output = Result<LeaseAttrs, BackendError>>;

    /// Takes the node's own subnets (the addresses of the devices in [`Backend::desired`]: the
    /// IPv4 subnet's, and the IPv6 subnet's on vxlan's `flannel-v6.<VNI>`); returns the MTU for
    /// subnet.env. Pure.
    fn configure(&mut self, ext: &ExternalInterface, own: &SubnetKey) -> Result<u32, BackendError>;

    /// Takes the ifindexes of the backend's devices as the reconciler knows them
    /// ([`Reconciler::device_index`]), so the next [`Backend::desired`] plans its entries on them.
    /// Call after each apply (a device made anew has a new index).
    fn bind(&mut self, index_of: &dyn Fn(&str) -> Option<u32>) {
        let _ = index_of;
    }

    /// Whether [`Backend::adopt_previous`] wants the node's previous lease before `prepare`.
    fn wants_previous_lease(&self) -> bool {
        false
    }

    /// Hands over this node's previous lease (found in etcd by public IP) before `prepare`, so
    /// a backend can keep what peers already know (vxlan: the VTEP MAC across reboots).
    fn adopt_previous(&mut self, previous: &LeaseAttrs) {
        let _ = previous;
    }

    /// Pure: the kernel objects these peers require, with the backend's devices and their
    /// addresses.
    fn desired(&self, ext: &ExternalInterface, peers: &[Peer]) -> Desired;
}
