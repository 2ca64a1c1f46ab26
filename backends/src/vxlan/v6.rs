//! vxlan's IPv6 side on a dual-stack node (docs/flannel-compat.md §5.1, "IPv6: identical with
//! `flannel-v6.<VNI>`"): a second vxlan device whose underlay is IPv6, and per dual-stack peer
//! the same three entries as for IPv4, in IPv6. On an IPv6-only node it is the only device.
//!
//! Device: `flannel-v6.<VNI> type vxlan id <VNI> dev <ext> local <PublicIPv6> dstport <port>
//! nolearning [gbp] mtu <ext mtu − 70>`, up, with its own VTEP MAC (kept like the IPv4 device's:
//! an existing compatible device's, else the previous lease's `BackendV6Data`, else random) and
//! the address `<own IPv6 subnet network>/128`. The lease gets `PublicIPv6` and
//! `BackendV6Data = {"VNI":<VNI>,"VtepMAC":"<MAC of flannel-v6.<VNI>>"}`.
//!
//! Per peer with an IPv6 subnet S6, a `PublicIPv6` P6 and `BackendV6Data` `{"VNI": v, "VtepMAC":
//! M6}` (a peer without them gets its IPv4 entries only):
//! ```text
//! ip -6 neigh replace <S6.network> lladdr M6 dev flannel-v6.v nud permanent
//! bridge fdb replace M6 dev flannel-v6.v dst P6 self permanent
//! ip -6 route replace S6 via <S6.network> dev flannel-v6.v onlink proto 87 metric 1024
//! ```
//! With `DirectRouting`, a peer whose PublicIPv6 the kernel reaches without a gateway (`ip -6
//! route get`, as for IPv4 and as flanneld decides each family: [`crate::direct`]) gets `ip -6
//! route replace S6 via P6 dev <ext> proto 87 metric 1024` instead; its IPv4 side is decided on
//! its own. The device gets `accept_ra = 0` as flanneld sets it (the reconciler, when it makes or
//! finds the device: [`crate::device::Device::wants_accept_ra_off`]).
//!
//! Differences from flannel, on purpose: the MTU is the underlay's minus 70, not 50 (flannel
//! subtracts its IPv4 overhead for both devices, so full-size pod packets over IPv6 exceed the
//! underlay MTU: the outer IPv6 header is 40 bytes, not 20); `FLANNEL_MTU` stays the IPv4
//! device's (a pod's interface serves both families, so the IPv6 path can fragment at the pod
//! for the last 20 bytes, which IPv6 pods do by PMTU discovery).
use std::net::IpAddr;

use ipnet::{IpNet, Ipv6Net};
use net_conf::LeaseAttrs;
use tracing::{info, warn};

use super::{VXLAN, Vxlan, parse_backend_data};
use crate::device::{Addr, Device};
use crate::plan::{Mac, fmt_mac};
use crate::{BackendError, Desired, ExternalInterface, ExternalV6, Peer};

/// Bytes a VXLAN header adds over IPv6 (outer IPv6 40 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const ENCAP_OVERHEAD_V6: u32 = 70;

/// The ifindex `flannel-v6.<VNI>` is planned on before it exists, distinct from the IPv4
/// device's planned 0 so the reconciler can move each device's entries to its real index (the
/// kernel never hands out this index).
pub const V6_PLANNED_INDEX: u32 = u32::MAX;

/// IPv6 needs an MTU of at least 1280 on a link.
const MIN_MTU_V6: u32 = 1280;

/// The IPv6 half of [`Vxlan`]'s state.
#[derive(Debug, Clone, Default)]
pub(super) struct V6Side {
    /// `flannel-v6.<VNI>` once [`crate::Backend::prepare`] has planned it (dual-stack only).
    pub(super) dev: Option<Device>,
    /// The VTEP MAC of the device (the previous lease's, until prepare).
    pub(super) mac: Option<Mac>,
    /// The node's IPv6 subnet: the device carries `<network>/128`.
    pub(super) own: Option<Ipv6Net>,
}

impl V6Side {
    /// Takes the MAC of a previous vxlan lease's `BackendV6Data` of VNI `vni`.
    pub(super) fn adopt_previous(&mut self, vni: u32, previous: &LeaseAttrs) {
        let Some(data) = previous.backend_v6_data.as_deref() else {
            return;
        };
        match parse_backend_data(data) {
            Ok((v, mac)) if v == vni => {
                info!(
                    "reusing IPv6 VTEP MAC {} of our previous lease",
                    fmt_mac(&mac)
                );
                self.mac = Some(mac);
            }
            Ok(_) => {}
            Err(e) => warn!("previous lease has unusable vxlan BackendV6Data: {e}"),
        }
    }

    /// The planned device (None: not a dual-stack node).
    pub(super) fn set_device(&mut self, dev: Option<Device>) {
        if let Some(d) = &dev {
            self.mac = d.mac;
        }
        self.dev = dev;
    }

    /// Adds the device and its `/128` to the desired state.
    pub(super) fn add_device(&self, out: &mut Desired) {
        let Some(dev) = &self.dev else { return };
        out.state.add_device(dev.clone());
        if let Some(own) = self.own {
            out.state.add_addr(Addr {
                dev: dev.name.clone(),
                addr: IpNet::V6(Ipv6Net::new(own.network(), 128).unwrap_or(own)),
            });
        }
    }
}

impl Vxlan {
    /// `flannel-v6.<VNI>`.
    pub fn device_name_v6(&self) -> String {
        format!("flannel-v6.{}", self.conf.vni)
    }

    /// The wanted IPv6 device, after a successful [`crate::Backend::prepare`] on a dual-stack
    /// interface.
    pub fn device_v6(&self) -> Option<&Device> {
        self.v6.dev.as_ref()
    }

    /// The IPv6 device this node wants on `ext` (whose IPv6 side is `v6`), with `mac`, planned
    /// on [`V6_PLANNED_INDEX`].
    pub fn spec_v6(
        &self,
        ext: &ExternalInterface,
        v6: &ExternalV6,
        mac: Option<Mac>,
    ) -> Result<Device, BackendError> {
        let dev = self.vxlan_device(
            self.device_name_v6(),
            ext,
            IpAddr::V6(v6.ext_addr),
            ENCAP_OVERHEAD_V6,
            MIN_MTU_V6,
            mac,
        )?;
        Ok(Device {
            index: V6_PLANNED_INDEX,
            ..dev
        })
    }

    /// The IPv6 entries of a peer whose IPv4 entries were planned (on an IPv6-only node: whose
    /// backend type was checked): nothing for a peer without
    /// an IPv6 subnet or on an IPv4-only node, else its neighbour, FDB entry and route on
    /// `flannel-v6.<VNI>`, or why not.
    pub(super) fn add_peer_v6(
        &self,
        ext: &ExternalInterface,
        peer: &Peer,
        out: &mut Desired,
    ) -> Result<(), String> {
        let (Some(dev), Some(v6), Some(subnet)) = (&self.v6.dev, &ext.v6, peer.key.v6) else {
            return Ok(());
        };
        let subnet = subnet.trunc();
        let ip = peer
            .attrs
            .public_ipv6
            .ok_or_else(|| format!("peer {subnet} has an IPv6 subnet but no PublicIPv6"))?;
        if ip.is_unspecified() {
            return Err(format!("peer {subnet} has no PublicIPv6 (::)"));
        }
        if ip == v6.ext_addr || ip == v6.iface_addr {
            return Err(format!(
                "peer {subnet} has this node's own address {ip} as PublicIPv6"
            ));
        }
        if self.conf.direct_routing {
            if let Some(route) = crate::direct::direct_route6(ext, v6, &self.paths, subnet, ip) {
                out.state.add_route(route);
                return Ok(());
            }
        }
        let data = peer
            .attrs
            .backend_v6_data
            .as_deref()
            .ok_or_else(|| format!("peer {subnet} ({ip}) has no BackendV6Data"))?;
        let (vni, mac) = parse_backend_data(data)
            .map_err(|e| format!("peer {subnet} ({ip}): BackendV6Data: {e}"))?;
        if vni != self.conf.vni {
            return Err(format!(
                "peer {subnet} ({ip}) uses VNI {vni} for IPv6, this node uses {}",
                self.conf.vni
            ));
        }
        if let Some(other) = out.state.fdb.get(&(dev.index, mac)) {
            return Err(format!(
                "peer {subnet} ({ip}) advertises IPv6 VtepMAC {}, already used by the peer at {}",
                fmt_mac(&mac),
                other.dst
            ));
        }
        debug_assert_eq!(peer.attrs.backend_type, VXLAN);
        super::add_tunnel_entries(
            &mut out.state,
            dev.index,
            mac,
            subnet.into(),
            IpAddr::V6(subnet.network()),
            ip.into(),
        );
        Ok(())
    }

    /// Test and tooling hook: use an already known IPv6 device (as
    /// [`crate::Backend::prepare`] would set it on a dual-stack interface).
    pub fn with_device_v6(mut self, dev: Device) -> Self {
        self.v6.set_device(Some(dev));
        self.paths.set_v6(true);
        self
    }

    /// Test and tooling hook: the node's IPv6 subnet, as [`crate::Backend::configure`] would
    /// set it.
    pub fn with_own_v6(mut self, own: Ipv6Net) -> Self {
        self.v6.own = Some(own);
        self
    }
}
