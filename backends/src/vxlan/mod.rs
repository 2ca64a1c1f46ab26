//! vxlan (docs/flannel-compat.md §5.1): device `flannel.<VNI>`; per peer a permanent ARP entry, a
//! `self permanent` FDB entry and an onlink route, planned by [`Vxlan::desired`] and applied by the
//! same reconciler as host-gw.
//!
//! Per peer with lease `{"PublicIP": P, "BackendData": {"VNI": v, "VtepMAC": M}}` and subnet S:
//! ```text
//! ip neigh replace <S.network> lladdr M dev flannel.v nud permanent
//! bridge fdb replace M dev flannel.v dst P self permanent
//! ip route replace S via <S.network> dev flannel.v onlink proto 87
//! ```
//! With `DirectRouting`, a peer whose PublicIP the kernel reaches without a gateway (`ip route
//! get`, as flannel decides: [`crate::direct`]) gets `ip route replace S via P dev <dev>` instead.
//!
//! The device is part of the desired state too ([`crate::device`]): `flannel.<VNI>` with the
//! attributes flannel gives it (`id <VNI> dev <ext> local <public ip> dstport <Port or 8472>
//! nolearning [gbp] mtu <ext mtu − 50> address <VTEP MAC>`, up) and the address
//! `<own subnet network>/32`; the reconciler creates it, fixes it in place or replaces it, and
//! sets its `accept_ra` to 0 as flanneld does.
//! [`Backend::prepare`] only reads: it keeps the MAC of an existing compatible device (else the
//! MAC of the previous lease, else a random one), so the VTEP MAC is stable across restarts.
//!
//! A dual-stack node also has `flannel-v6.<VNI>` ([`v6`]); an IPv6-only node (kube mode) has only
//! that device, no `BackendData`, and its pod MTU is the IPv6 device's. DirectRouting decides
//! each family on its own: a peer's IPv6 subnet goes `via <PublicIPv6> dev <ext>` when `ip -6
//! route get` reaches it without a gateway.
//!
//! Differences from flannel, on purpose: the FDB entry of a peer's previous MAC is removed when
//! the MAC changes (it is keyed by MAC and no longer desired); a peer advertising another VNI is
//! skipped with a reason instead of programmed into a tunnel that cannot reach it; an existing
//! device with the right configuration but another MTU gets its MTU set instead of keeping it.
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use net_conf::{LeaseAttrs, SubnetKey, VxlanConf};
use tracing::{info, warn};

use crate::device::{Addr, Device, DeviceKind, VxlanParams};
use crate::direct::DirectPaths;
use crate::nl::Netlink;
use crate::plan::{Fdb, Mac, Neigh, fmt_mac};
use crate::{Backend, BackendError, Desired, ExternalInterface, Peer, Route};

mod data;
mod v6;

use data::random_mac;
pub use data::{backend_data, parse_backend_data};
pub use v6::{ENCAP_OVERHEAD_V6, V6_PLANNED_INDEX};

/// The lease `BackendType` of vxlan.
pub const VXLAN: &str = "vxlan";
/// Bytes a VXLAN header adds over IPv4 (outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const ENCAP_OVERHEAD: u32 = 50;
/// The kernel's default VXLAN UDP port (used when `Port` is 0).
pub const DEFAULT_PORT: u16 = 8472;

/// The vxlan backend.
#[derive(Debug, Clone)]
pub struct Vxlan {
    conf: VxlanConf,
    /// The device this node wants, once [`Backend::prepare`] has planned it.
    dev: Option<Device>,
    /// The MAC the device gets: the one of our previous lease (stable across reboots, so peers
    /// keep valid ARP/FDB entries) or of an existing compatible device; random when neither
    /// exists.
    mac: Option<Mac>,
    /// The node's own subnet: the device carries `<network>/32`.
    own: Option<Ipv4Net>,
    /// DirectRouting: how the kernel reaches each peer ([`crate::direct`]).
    paths: DirectPaths,
    /// The IPv6 side on a dual-stack node (`flannel-v6.<VNI>`: [`v6`]).
    v6: v6::V6Side,
}

impl Vxlan {
    /// With DirectRouting on, the answers it decides by, for the agent to fill.
    pub fn direct_paths_mut(&mut self) -> Option<&mut DirectPaths> {
        self.conf.direct_routing.then_some(&mut self.paths)
    }

    pub fn new(conf: VxlanConf) -> Self {
        Vxlan {
            conf,
            dev: None,
            mac: None,
            own: None,
            paths: DirectPaths::default(),
            v6: v6::V6Side::default(),
        }
    }

    /// `flannel.<VNI>`.
    pub fn device_name(&self) -> String {
        format!("flannel.{}", self.conf.vni)
    }

    /// The wanted device, after a successful [`Backend::prepare`].
    pub fn device(&self) -> Option<&Device> {
        self.dev.as_ref()
    }

    /// The device this node wants for `ext`, with `mac` (index 0: not known yet).
    pub fn spec(&self, ext: &ExternalInterface, mac: Option<Mac>) -> Result<Device, BackendError> {
        self.vxlan_device(
            self.device_name(),
            ext,
            ext.ext_addr.into(),
            ENCAP_OVERHEAD,
            68,
            mac,
        )
    }

    /// A vxlan device of this backend's configuration named `name` on `ext` with local address
    /// `local`, its MTU the underlay's minus `overhead` (at least `min_mtu`).
    fn vxlan_device(
        &self,
        name: String,
        ext: &ExternalInterface,
        local: IpAddr,
        overhead: u32,
        min_mtu: u32,
        mac: Option<Mac>,
    ) -> Result<Device, BackendError> {
        let underlay = self.conf.mtu.unwrap_or(ext.mtu);
        let mtu = underlay
            .checked_sub(overhead)
            .filter(|m| *m >= min_mtu)
            .ok_or_else(|| {
                BackendError::Unsupported(format!(
                    "MTU {underlay} of {} is too small for {name} (needs {overhead} bytes of \
                 overhead and leaves less than {min_mtu})",
                    ext.name
                ))
            })?;
        Ok(Device {
            name,
            index: 0,
            kind: DeviceKind::Vxlan(VxlanParams {
                vni: self.conf.vni,
                link: ext.index,
                local,
                port: if self.conf.port == 0 {
                    DEFAULT_PORT
                } else {
                    self.conf.port
                },
                learning: self.conf.learning,
                gbp: self.conf.gbp,
                group: None,
                l2miss: false,
                l3miss: false,
            }),
            mtu,
            mac,
            up: true,
        })
    }
}

/// `<network of own>/32` on `dev`: the address of a tunnel device.
pub(crate) fn own_addr(dev: &str, own: Ipv4Net) -> Addr {
    Addr {
        dev: dev.to_string(),
        addr: IpNet::V4(Ipv4Net::new(own.network(), 32).unwrap_or(own)),
    }
}

impl Backend for Vxlan {
    fn type_name(&self) -> &'static str {
        VXLAN
    }

    fn bind(&mut self, index_of: &dyn Fn(&str) -> Option<u32>) {
        for dev in [&mut self.dev, &mut self.v6.dev].into_iter().flatten() {
            if let Some(index) = index_of(&dev.name) {
                dev.index = index;
            }
        }
    }

    fn wants_previous_lease(&self) -> bool {
        true
    }

    /// Takes the VTEP MACs of our previous lease (`BackendData`, and `BackendV6Data` for
    /// `flannel-v6.<VNI>`) when it was a vxlan lease of the same VNI.
    fn adopt_previous(&mut self, previous: &LeaseAttrs) {
        if previous.backend_type != VXLAN {
            return;
        }
        self.v6.adopt_previous(self.conf.vni, previous);
        let Some(data) = previous.backend_data.as_deref() else {
            return;
        };
        match parse_backend_data(data) {
            Ok((vni, mac)) if vni == self.conf.vni => {
                info!("reusing VTEP MAC {} of our previous lease", fmt_mac(&mac));
                self.mac = Some(mac);
            }
            Ok(_) => {}
            Err(e) => warn!("previous lease has unusable vxlan BackendData: {e}"),
        }
    }

    /// Plans `flannel.<VNI>` and, on a dual-stack interface, `flannel-v6.<VNI>` (read-only): an
    /// existing device that is compatible keeps its MAC and index; an incompatible one is left
    /// to the reconciler, which replaces it. Returns the lease attributes with `{"VNI","VtepMAC"}`
    /// (and `PublicIPv6` with the IPv6 device's `BackendV6Data`).
    async fn prepare(
        &mut self,
        nl: &Netlink,
        ext: &ExternalInterface,
    ) -> Result<LeaseAttrs, BackendError> {
        if !ext.has_v4() && ext.v6.is_none() {
            return Err(BackendError::Unsupported(format!(
                "vxlan: interface {} has neither an IPv4 nor an IPv6 side",
                ext.name
            )));
        }
        let mut attrs = LeaseAttrs {
            public_ip: ext.ext_addr,
            public_ipv6: None,
            backend_type: VXLAN.to_string(),
            backend_data: None,
            backend_v6_data: None,
        };
        // An IPv6-only network has no `flannel.<VNI>` (and no BackendData, as flannel).
        let want = match ext.has_v4() {
            true => {
                let want = self.spec(ext, None)?;
                let want = plan_device(nl, want, self.mac).await?;
                let mac = want.mac.unwrap_or_else(random_mac);
                attrs.backend_data = Some(backend_data(self.conf.vni, &mac));
                self.mac = Some(mac);
                Some(want)
            }
            false => None,
        };
        let want6 = match &ext.v6 {
            Some(v6) => {
                let want6 = self.spec_v6(ext, v6, None)?;
                let want6 = plan_device(nl, want6, self.v6.mac).await?;
                let mac6 = want6.mac.unwrap_or_else(random_mac);
                attrs.public_ipv6 = Some(v6.ext_addr);
                attrs.backend_v6_data = Some(backend_data(self.conf.vni, &mac6));
                Some(want6)
            }
            None => None,
        };
        self.dev = want;
        self.v6.set_device(want6);
        self.paths.set_v6(self.v6.dev.is_some());
        Ok(attrs)
    }

    /// Takes the node's subnets (the device gets `<network>/32`, `flannel-v6.<VNI>` gets
    /// `<IPv6 network>/128`: the source for host → pod traffic; a single address avoids a
    /// broadcast or connected route) and returns the IPv4 device's MTU for subnet.env (the
    /// IPv6 device's on an IPv6-only network).
    fn configure(
        &mut self,
        _ext: &ExternalInterface,
        own: &SubnetKey,
    ) -> Result<u32, BackendError> {
        let dev = self.dev.as_ref().or(self.v6.dev.as_ref()).ok_or_else(|| {
            BackendError::Unsupported("vxlan: configure called before prepare".into())
        })?;
        let mtu = dev.mtu;
        self.own = own.v4;
        self.v6.own = own.v6;
        Ok(mtu)
    }

    fn desired(&self, ext: &ExternalInterface, peers: &[Peer]) -> Desired {
        let mut out = Desired::default();
        if self.dev.is_none() && self.v6.dev.is_none() {
            for p in peers {
                out.skipped
                    .push((p.key, "the vxlan device is not prepared yet".to_string()));
            }
            return out;
        }
        if let Some(dev) = &self.dev {
            out.state.add_device(dev.clone());
            if let Some(own) = self.own {
                out.state.add_addr(own_addr(&dev.name, own));
            }
        }
        self.v6.add_device(&mut out);
        for peer in peers {
            // The IPv4 entries' checks come first: a peer failing them gets no IPv6 entries
            // either. An IPv6-only node checks the backend type only.
            let v4 = match &self.dev {
                Some(dev) => self.add_peer(ext, dev, peer, &mut out),
                None => crate::same_backend(peer, VXLAN),
            };
            if let Err(reason) = v4 {
                out.skipped.push((peer.key, reason));
                continue;
            }
            if let Err(reason) = self.add_peer_v6(ext, peer, &mut out) {
                out.skipped.push((peer.key, reason));
            }
        }
        out
    }
}

impl Vxlan {
    fn add_peer(
        &self,
        ext: &ExternalInterface,
        dev: &Device,
        peer: &Peer,
        out: &mut Desired,
    ) -> Result<(), String> {
        let (subnet, ip) = crate::usable_peer(ext, peer, VXLAN)?;
        if self.conf.direct_routing {
            if let Some(route) = crate::direct::direct_route(ext, &self.paths, subnet, ip) {
                out.state.add_route(route);
                return Ok(());
            }
        }
        let data = peer
            .attrs
            .backend_data
            .as_deref()
            .ok_or_else(|| format!("peer {subnet} ({ip}) has no BackendData"))?;
        let (vni, mac) =
            parse_backend_data(data).map_err(|e| format!("peer {subnet} ({ip}): {e}"))?;
        if vni != self.conf.vni {
            return Err(format!(
                "peer {subnet} ({ip}) uses VNI {vni}, this node uses {}",
                self.conf.vni
            ));
        }
        if let Some(other) = out.state.fdb.get(&(dev.index, mac)) {
            return Err(format!(
                "peer {subnet} ({ip}) advertises VtepMAC {}, already used by the peer at {}",
                fmt_mac(&mac),
                other.dst
            ));
        }
        add_tunnel_entries(
            &mut out.state,
            dev.index,
            mac,
            subnet.into(),
            IpAddr::V4(subnet.network()),
            ip.into(),
        );
        Ok(())
    }

    /// Test and tooling hook: use an already known device (as [`Backend::prepare`] would set it).
    pub fn with_device(mut self, dev: Device) -> Self {
        self.mac = dev.mac;
        self.dev = Some(dev);
        self
    }

    /// Test and tooling hook: the node's subnet, as [`Backend::configure`] would set it.
    pub fn with_own(mut self, own: Ipv4Net) -> Self {
        self.own = Some(own);
        self
    }
}

/// `want` planned against the kernel (read-only): an existing compatible device lends its index
/// and MAC; else the MAC is `fallback` (the previous lease's) or none yet (the caller picks a
/// random one). An incompatible device is left to the reconciler, which replaces it.
async fn plan_device(
    nl: &Netlink,
    mut want: Device,
    fallback: Option<Mac>,
) -> Result<Device, BackendError> {
    let mut mac = None;
    if let Some(have) = nl.device_by_name(&want.name).await? {
        let d = want.differences(&have);
        if d.fixed.is_empty() && have.mac.is_some() {
            want.index = have.index;
            mac = have.mac;
        } else {
            warn!(
                "{:?} already exists with incompatible configuration: {}; recreating device",
                want.name,
                d.fixed.join(", ")
            );
        }
    }
    want.mac = Some(mac.or(fallback).unwrap_or_else(random_mac));
    Ok(want)
}

/// One peer's entries on a vxlan device of either family: the permanent neighbour of `gw`
/// (the peer subnet's network address) at `mac`, the FDB entry `mac dst <public>`, and the
/// route `<dst> via <gw> dev <ifindex> onlink`.
pub(crate) fn add_tunnel_entries(
    state: &mut crate::KernelState,
    ifindex: u32,
    mac: Mac,
    dst: IpNet,
    gw: IpAddr,
    public: IpAddr,
) {
    state.add_neigh(Neigh {
        ifindex,
        ip: gw,
        mac,
    });
    state.add_fdb(Fdb {
        ifindex,
        mac,
        dst: public,
    });
    state.add_route(Route {
        dst,
        gateway: gw,
        oif: ifindex,
        onlink: true,
    });
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_v6;
