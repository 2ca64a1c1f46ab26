//! ipip (docs/flannel-compat.md §5.2): device `flannel.ipip` (IPv4 in IPv4, 20 bytes of overhead);
//! per peer one onlink route through the tunnel, planned by [`IpIp::desired`] and applied by the
//! same reconciler as host-gw and vxlan.
//!
//! The device, as flannel makes it:
//! ```text
//! ip link add flannel.ipip type ipip local <iface addr> remote any mtu <ext mtu - 20>
//! ip addr replace <own subnet network>/32 dev flannel.ipip
//! ip link set flannel.ipip up
//! ```
//! `local` is the external interface's own address (not `--public-ip`): the kernel's per-netns
//! fallback device `tunl0` (local any, remote any) also receives ipip, and a tunnel with a
//! specific `local` matches incoming packets first. Both devices existing is expected.
//!
//! Per peer with lease `{"PublicIP": P, "BackendType": "ipip"}` and subnet S:
//! ```text
//! ip route replace S via P dev flannel.ipip onlink proto 87
//! ```
//! With `DirectRouting`, a peer whose PublicIP the kernel reaches without a gateway (`ip route
//! get`, as flannel decides: [`crate::direct`]) gets `ip route replace S via P dev <dev>` instead,
//! as host-gw would.
//!
//! The device and its address are part of the desired state ([`crate::device`]): the reconciler
//! creates, fixes or replaces them. A kernel without ipip (no CONFIG_NET_IPIP, no module) refuses
//! the device with EOPNOTSUPP: [`Backend::prepare`] makes the device when it is missing, as the
//! probe of that support, and turns a refusal into one clear error before any lease is taken.
//!
//! Differences from flannel, on purpose: an existing device with the right `local`/`remote` but
//! another MTU gets its MTU set to `ext − 20` (flannel only lowers a larger one); a directly
//! routed peer's route has no `onlink` (the gateway is on a connected subnet, as with host-gw);
//! a peer of another backend type is skipped with a reason.

use ipnet::Ipv4Net;
use net_conf::{IpIpConf, LeaseAttrs, SubnetKey};
use tracing::{info, warn};

use crate::device::{Device, DeviceKind};
use crate::direct::DirectPaths;
use crate::nl::{EOPNOTSUPP, Netlink};
use crate::{Backend, BackendError, Desired, ExternalInterface, Peer, Route};

/// The lease `BackendType` of ipip.
pub const IPIP: &str = "ipip";
/// The tunnel device's name (flannel's).
pub const DEVICE_NAME: &str = "flannel.ipip";
/// Bytes the outer IPv4 header adds.
pub const ENCAP_OVERHEAD: u32 = 20;
/// The smallest MTU IPv4 allows on a link.
const MIN_MTU: u32 = 68;

/// The error when the kernel cannot make an ipip device at all.
pub const NO_KERNEL_SUPPORT: &str =
    "this kernel has no ipip support (CONFIG_NET_IPIP): use Backend.Type vxlan or host-gw";

/// The ipip backend.
#[derive(Debug, Clone)]
pub struct IpIp {
    conf: IpIpConf,
    /// The device this node wants, once [`Backend::prepare`] has planned it.
    dev: Option<Device>,
    /// The node's own subnet: the device carries `<network>/32`.
    own: Option<Ipv4Net>,
    /// DirectRouting: how the kernel reaches each peer ([`crate::direct`]).
    paths: DirectPaths,
}

impl IpIp {
    /// With DirectRouting on, the answers it decides by, for the agent to fill.
    pub fn direct_paths_mut(&mut self) -> Option<&mut DirectPaths> {
        self.conf.direct_routing.then_some(&mut self.paths)
    }

    pub fn new(conf: IpIpConf) -> Self {
        IpIp {
            conf,
            dev: None,
            own: None,
            paths: DirectPaths::default(),
        }
    }

    /// The wanted device, after a successful [`Backend::prepare`].
    pub fn device(&self) -> Option<&Device> {
        self.dev.as_ref()
    }

    /// The device this node wants for `ext`: `local` = the interface's own address, `remote
    /// any`, MTU = the interface's − 20, up (index 0: not known yet).
    pub fn spec(ext: &ExternalInterface) -> Result<Device, BackendError> {
        let mtu = ext
            .mtu
            .checked_sub(ENCAP_OVERHEAD)
            .filter(|m| *m >= MIN_MTU)
            .ok_or_else(|| {
                BackendError::Unsupported(format!(
                    "MTU {} of {} is too small for ipip mode to work (needs {ENCAP_OVERHEAD} \
                     bytes of overhead and leaves less than {MIN_MTU})",
                    ext.mtu, ext.name
                ))
            })?;
        Ok(Device {
            name: DEVICE_NAME.to_string(),
            index: 0,
            kind: DeviceKind::IpIp {
                local: ext.iface_addr,
                remote: None,
            },
            mtu,
            mac: None,
            up: true,
        })
    }

    /// Test and tooling hook: use an already known device (as [`Backend::prepare`] would set it).
    pub fn with_device(mut self, dev: Device) -> Self {
        self.dev = Some(dev);
        self
    }

    /// Test and tooling hook: the node's subnet, as [`Backend::configure`] would set it.
    pub fn with_own(mut self, own: Ipv4Net) -> Self {
        self.own = Some(own);
        self
    }
}

/// The error of a failed `ip link add … type ipip`: EOPNOTSUPP means the kernel has no ipip at
/// all, which gets [`NO_KERNEL_SUPPORT`] (with the failed command after it); anything else is
/// passed on as it is.
pub fn explain_add_error(err: BackendError) -> BackendError {
    match err {
        BackendError::Netlink {
            op,
            errno: Some(EOPNOTSUPP),
            message,
        } => BackendError::Unsupported(format!("{NO_KERNEL_SUPPORT} ({op}: {message})")),
        other => other,
    }
}

impl Backend for IpIp {
    fn type_name(&self) -> &'static str {
        IPIP
    }

    fn bind(&mut self, index_of: &dyn Fn(&str) -> Option<u32>) {
        if let Some(dev) = &mut self.dev {
            if let Some(index) = index_of(&dev.name) {
                dev.index = index;
            }
        }
    }

    /// Plans `flannel.ipip` and returns the lease attributes `{"PublicIP": <ext_addr>,
    /// "BackendType": "ipip"}`. A link of another type under that name is an error (flannel's
    /// rule: weft does not delete someone else's link); an ipip device with other endpoints is
    /// left to the reconciler, which replaces it. When the device is missing it is made here,
    /// up, as the probe of the kernel's ipip support: a kernel without it fails here, before a
    /// lease is taken, with [`NO_KERNEL_SUPPORT`].
    async fn prepare(
        &mut self,
        nl: &Netlink,
        ext: &ExternalInterface,
    ) -> Result<LeaseAttrs, BackendError> {
        let mut want = Self::spec(ext)?;
        match nl.device_by_name(&want.name).await? {
            None => {
                nl.device_add(&want).await.map_err(explain_add_error)?;
                info!("ip link add {}", want.spec_with(&|_| None));
                let made = nl.device_by_name(&want.name).await?.ok_or_else(|| {
                    BackendError::Unsupported(format!(
                        "{} vanished right after creation",
                        want.name
                    ))
                })?;
                want.index = made.index;
            }
            Some(have) if matches!(have.kind, DeviceKind::Other(_)) => {
                return Err(BackendError::Unsupported(format!(
                    "{} isn't an ipip mode device, please remove device and try again",
                    want.name
                )));
            }
            Some(have) => {
                let d = want.differences(&have);
                if d.fixed.is_empty() {
                    want.index = have.index;
                } else {
                    warn!(
                        "{:?} already exists with incompatible configuration: {}; recreating device",
                        want.name,
                        d.fixed.join(", ")
                    );
                }
            }
        }
        self.dev = Some(want);
        Ok(LeaseAttrs::ipip(ext.ext_addr))
    }

    /// Takes the node's subnet (the device gets `<network>/32`: the source for host → pod
    /// traffic; /32 adds no connected route) and returns the device MTU for subnet.env.
    fn configure(
        &mut self,
        _ext: &ExternalInterface,
        own: &SubnetKey,
    ) -> Result<u32, BackendError> {
        let dev = self.dev.as_ref().ok_or_else(|| {
            BackendError::Unsupported("ipip: configure called before prepare".into())
        })?;
        self.own = own.v4;
        Ok(dev.mtu)
    }

    fn desired(&self, ext: &ExternalInterface, peers: &[Peer]) -> Desired {
        let mut out = Desired::default();
        let Some(dev) = &self.dev else {
            for p in peers {
                out.skipped
                    .push((p.key, "the ipip device is not prepared yet".to_string()));
            }
            return out;
        };
        out.state.add_device(dev.clone());
        if let Some(own) = self.own {
            out.state.add_addr(crate::vxlan::own_addr(&dev.name, own));
        }
        for peer in peers {
            match self.route_for(ext, dev, peer) {
                Ok(route) => out.state.add_route(route),
                Err(reason) => out.skipped.push((peer.key, reason)),
            }
        }
        out
    }
}

impl IpIp {
    /// The route to one peer, or why there is none.
    fn route_for(
        &self,
        ext: &ExternalInterface,
        dev: &Device,
        peer: &Peer,
    ) -> Result<Route, String> {
        let (subnet, ip) = crate::usable_peer(ext, peer, IPIP)?;
        if self.conf.direct_routing {
            if let Some(route) = crate::direct::direct_route(ext, &self.paths, subnet, ip) {
                return Ok(route);
            }
        }
        Ok(Route {
            dst: subnet.into(),
            gateway: ip.into(),
            oif: dev.index,
            onlink: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use net_conf::SubnetKey;

    use std::net::Ipv4Addr;

    use super::*;

    fn ext() -> ExternalInterface {
        ExternalInterface {
            name: "eth0".into(),
            index: 3,
            iface_addr: Ipv4Addr::new(198, 18, 0, 1),
            ext_addr: Ipv4Addr::new(198, 18, 0, 1),
            mtu: 1500,
            prefixes: vec!["198.18.0.0/24".parse().expect("prefix")],
            v6: None,
        }
    }

    fn dev() -> Device {
        Device {
            index: 9,
            ..IpIp::spec(&ext()).expect("spec")
        }
    }

    fn peer(subnet: &str, ip: &str, backend: &str) -> Peer {
        Peer {
            key: SubnetKey::new(subnet.parse().expect("subnet")),
            attrs: LeaseAttrs {
                public_ip: ip.parse().expect("ip"),
                public_ipv6: None,
                backend_type: backend.into(),
                backend_data: None,
                backend_v6_data: None,
            },
        }
    }

    fn ipip(direct_routing: bool) -> IpIp {
        IpIp::new(IpIpConf { direct_routing }).with_device(dev())
    }

    fn routes(d: &Desired) -> Vec<String> {
        d.state.routes.values().map(|r| r.to_string()).collect()
    }

    #[test]
    fn per_peer_onlink_route_via_public_ip_through_the_tunnel() {
        let d = ipip(false).desired(
            &ext(),
            &[
                peer("10.244.2.0/24", "198.18.0.2", "ipip"),
                // Not adjacent: the tunnel doesn't care.
                peer("10.244.3.0/24", "203.0.113.3", "ipip"),
            ],
        );
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
        assert_eq!(
            routes(&d),
            vec![
                "10.244.2.0/24 via 198.18.0.2 dev 9 onlink",
                "10.244.3.0/24 via 203.0.113.3 dev 9 onlink",
            ]
        );
        assert!(d.state.neighs.is_empty() && d.state.fdb.is_empty());
    }

    #[test]
    fn direct_routing_for_adjacent_peers_only() {
        let d = ipip(true).desired(
            &ext(),
            &[
                peer("10.244.2.0/24", "198.18.0.2", "ipip"),
                peer("10.244.3.0/24", "203.0.113.3", "ipip"),
            ],
        );
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
        assert_eq!(
            routes(&d),
            vec![
                "10.244.2.0/24 via 198.18.0.2 dev 3",
                "10.244.3.0/24 via 203.0.113.3 dev 9 onlink",
            ]
        );
    }

    #[test]
    fn skips_with_reasons() {
        let peers = [
            peer("10.244.2.0/24", "198.18.0.2", "host-gw"),
            peer("10.244.3.0/24", "198.18.0.3", "vxlan"),
            peer("10.244.4.0/24", "0.0.0.0", "ipip"),
            peer("10.244.5.0/24", "198.18.0.1", "ipip"),
            peer("10.244.6.0/24", "198.18.0.6", ""),
            peer("10.244.7.1/24", "198.18.0.7", "ipip"),
        ];
        let d = ipip(false).desired(&ext(), &peers);
        assert_eq!(
            routes(&d),
            vec!["10.244.7.0/24 via 198.18.0.7 dev 9 onlink"]
        );
        let reasons: Vec<(String, String)> = d
            .skipped
            .iter()
            .map(|(k, r)| (k.first().to_string(), r.clone()))
            .collect();
        let want = [
            ("10.244.2.0/24", "\"host-gw\", not \"ipip\""),
            ("10.244.3.0/24", "\"vxlan\""),
            ("10.244.4.0/24", "no PublicIP"),
            ("10.244.5.0/24", "own address 198.18.0.1"),
            ("10.244.6.0/24", "\"\""),
        ];
        assert_eq!(reasons.len(), want.len(), "{reasons:?}");
        for ((subnet, reason), (want_subnet, want_part)) in reasons.iter().zip(want) {
            assert_eq!(subnet, want_subnet);
            assert!(reason.contains(want_part), "{subnet}: {reason}");
        }
    }

    #[test]
    fn unprepared_backend_programs_nothing() {
        let d = IpIp::new(IpIpConf::default())
            .desired(&ext(), &[peer("10.244.2.0/24", "198.18.0.2", "ipip")]);
        assert!(d.state.is_empty());
        assert_eq!(d.skipped.len(), 1);
        assert!(d.skipped[0].1.contains("not prepared"), "{:?}", d.skipped);
    }

    #[test]
    fn spec_uses_the_interface_address_and_mtu_minus_20() {
        let mut e = ext();
        e.ext_addr = Ipv4Addr::new(203, 0, 113, 1); // --public-ip: not the tunnel's local
        let spec = IpIp::spec(&e).expect("spec");
        assert_eq!(
            spec,
            Device {
                name: "flannel.ipip".into(),
                index: 0,
                kind: DeviceKind::IpIp {
                    local: Ipv4Addr::new(198, 18, 0, 1),
                    remote: None,
                },
                mtu: 1480,
                mac: None,
                up: true,
            }
        );
        assert_eq!(
            spec.spec_with(&|_| None),
            "flannel.ipip type ipip local 198.18.0.1 remote any mtu 1480"
        );
        let d = ipip(false)
            .with_own("10.244.1.0/24".parse().expect("own"))
            .desired(&e, &[]);
        assert_eq!(d.state.devices["flannel.ipip"], dev());
        assert_eq!(
            d.state
                .addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec!["10.244.1.0/32 dev flannel.ipip"]
        );
        e.mtu = 80;
        let err = IpIp::spec(&e).expect_err("too small");
        assert!(
            err.to_string()
                .contains("MTU 80 of eth0 is too small for ipip mode"),
            "{err}"
        );
    }

    /// The device as the kernel reports it.
    fn link(kind: &str) -> Device {
        let mut d = dev();
        if kind != "ipip" {
            d.kind = DeviceKind::Other(kind.into());
        }
        d
    }

    fn set_endpoints(d: &mut Device, l: Ipv4Addr, r: Option<Ipv4Addr>) {
        d.kind = DeviceKind::IpIp {
            local: l,
            remote: r,
        };
    }

    #[test]
    fn existing_device_assessed_like_flannel() {
        let want = IpIp::spec(&ext()).expect("spec");
        assert!(want.differences(&link("ipip")).is_empty());
        let mut mtu = link("ipip");
        mtu.mtu = 1400;
        let d = want.differences(&mtu);
        assert!(d.fixed.is_empty(), "an MTU is set in place");
        assert_eq!(d.settable, vec!["mtu 1400 (want 1480)"]);
        assert_eq!(
            want.differences(&link("veth")).fixed,
            vec!["type veth (want ipip)"]
        );
        assert_eq!(
            want.differences(&link("")).fixed,
            vec!["type unknown (want ipip)"]
        );
        let mut moved = link("ipip");
        set_endpoints(
            &mut moved,
            Ipv4Addr::new(198, 18, 0, 9),
            Some(Ipv4Addr::new(198, 18, 0, 2)),
        );
        assert_eq!(
            want.differences(&moved).fixed,
            vec![
                "local 198.18.0.9 (want 198.18.0.1)",
                "remote 198.18.0.2 (want any)",
            ]
        );
        let mut any_local = link("ipip");
        set_endpoints(&mut any_local, Ipv4Addr::UNSPECIFIED, None);
        assert_eq!(
            want.differences(&any_local).fixed,
            vec!["local any (want 198.18.0.1)"]
        );
    }

    #[test]
    fn eopnotsupp_becomes_the_missing_kernel_support_message() {
        let op = "ip link add flannel.ipip type ipip local 198.18.0.1 remote any mtu 1480";
        let err = explain_add_error(BackendError::Netlink {
            op: op.into(),
            errno: Some(95),
            message: "Operation not supported (os error 95)".into(),
        });
        assert!(matches!(err, BackendError::Unsupported(_)), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with(NO_KERNEL_SUPPORT), "{text}");
        assert!(text.contains(op), "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
        // Other failures keep their own text.
        let exists = explain_add_error(BackendError::Netlink {
            op: op.into(),
            errno: Some(17),
            message: "File exists (os error 17)".into(),
        });
        assert_eq!(
            exists.to_string(),
            format!("{op}: File exists (os error 17)")
        );
    }

    #[test]
    fn lease_attrs_are_flannels() {
        let attrs = LeaseAttrs::ipip(Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(
            attrs.to_json(),
            r#"{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"ipip"}"#
        );
    }
}
