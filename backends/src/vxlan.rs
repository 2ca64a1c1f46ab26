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
//! `<own subnet network>/32`; the reconciler creates it, fixes it in place or replaces it.
//! [`Backend::prepare`] only reads: it keeps the MAC of an existing compatible device (else the
//! MAC of the previous lease, else a random one), so the VTEP MAC is stable across restarts.
//!
//! Differences from flannel, on purpose: the FDB entry of a peer's previous MAC is removed when
//! the MAC changes (it is keyed by MAC and no longer desired); a peer advertising another VNI is
//! skipped with a reason instead of programmed into a tunnel that cannot reach it; an existing
//! device with the right configuration but another MTU gets its MTU set instead of keeping it.
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use net_conf::{LeaseAttrs, VxlanConf};
use serde_json::Value;
use tracing::{info, warn};

use crate::device::{Addr, Device, DeviceKind, VxlanParams};
use crate::direct::DirectPaths;
use crate::nl::Netlink;
use crate::plan::{Fdb, Mac, Neigh, fmt_mac};
use crate::{Backend, BackendError, Desired, ExternalInterface, Peer, Route};

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
        let underlay = self.conf.mtu.unwrap_or(ext.mtu);
        let mtu = underlay
            .checked_sub(ENCAP_OVERHEAD)
            .filter(|m| *m >= 68)
            .ok_or_else(|| {
                BackendError::Unsupported(format!(
                    "MTU {underlay} of {} is too small for vxlan (needs {ENCAP_OVERHEAD} bytes of \
                 overhead and leaves less than 68)",
                    ext.name
                ))
            })?;
        Ok(Device {
            name: self.device_name(),
            index: 0,
            kind: DeviceKind::Vxlan(VxlanParams {
                vni: self.conf.vni,
                link: ext.index,
                local: ext.ext_addr,
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
        addr: Ipv4Net::new(own.network(), 32).unwrap_or(own),
    }
}

/// A random locally administered unicast MAC (what flannel does in etcd mode).
fn random_mac() -> Mac {
    let mut mac = [0u8; 6];
    for b in &mut mac {
        *b = fastrand::u8(..);
    }
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// `BackendData` as flannel writes it: `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`.
pub fn backend_data(vni: u32, mac: &Mac) -> String {
    format!("{{\"VNI\":{vni},\"VtepMAC\":\"{}\"}}", fmt_mac(mac))
}

/// Reads a peer's vxlan `BackendData` (keys case-insensitive, as Go's encoding/json accepts).
pub fn parse_backend_data(text: &str) -> Result<(u32, Mac), String> {
    // Every reconcile reads every vxlan peer's BackendData: the exact text flannel and weft
    // write is read without building a JSON tree (5,000 peers: ~4 ms less per lease change).
    if let Some(parsed) = parse_canonical(text) {
        return Ok(parsed);
    }
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("BackendData {text:?} is not JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| format!("BackendData {text:?} is not an object"))?;
    let get = |key: &str| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    };
    let vni = get("VNI")
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| format!("BackendData.VNI missing or not a number in {text}"))?;
    let mac_text = get("VtepMAC")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("BackendData.VtepMAC missing or not a string in {text}"))?;
    let mac = parse_mac(mac_text)
        .ok_or_else(|| format!("BackendData.VtepMAC {mac_text:?} is not a MAC address"))?;
    Ok((vni, mac))
}

/// `{"VNI":<n>,"VtepMAC":"<mac>"}` exactly as [`backend_data`] writes it; None for any other
/// spelling (which the JSON path then reads).
fn parse_canonical(text: &str) -> Option<(u32, Mac)> {
    let rest = text.strip_prefix("{\"VNI\":")?;
    let (vni, rest) = rest.split_once(",\"VtepMAC\":\"")?;
    let mac = rest.strip_suffix("\"}")?;
    // A JSON number without sign, fraction or leading zero.
    if vni.is_empty()
        || !vni.bytes().all(|b| b.is_ascii_digit())
        || (vni.len() > 1 && vni.starts_with('0'))
    {
        return None;
    }
    Some((vni.parse().ok()?, parse_mac(mac)?))
}

fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(mac)
}

impl Backend for Vxlan {
    fn type_name(&self) -> &'static str {
        VXLAN
    }

    fn bind(&mut self, index_of: &dyn Fn(&str) -> Option<u32>) {
        if let Some(dev) = &mut self.dev {
            if let Some(index) = index_of(&dev.name) {
                dev.index = index;
            }
        }
    }

    fn wants_previous_lease(&self) -> bool {
        true
    }

    /// Takes the VTEP MAC of our previous lease when it was a vxlan lease of the same VNI.
    fn adopt_previous(&mut self, previous: &LeaseAttrs) {
        if previous.backend_type != VXLAN {
            return;
        }
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

    /// Plans `flannel.<VNI>` (read-only): an existing device that is compatible keeps its MAC
    /// and index; an incompatible one is left to the reconciler, which replaces it. Returns the
    /// lease attributes with `{"VNI","VtepMAC"}`.
    async fn prepare(
        &mut self,
        nl: &Netlink,
        ext: &ExternalInterface,
    ) -> Result<LeaseAttrs, BackendError> {
        let mut want = self.spec(ext, None)?;
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
        let mac = mac.or(self.mac).unwrap_or_else(random_mac);
        want.mac = Some(mac);
        let attrs = LeaseAttrs {
            public_ip: ext.ext_addr,
            public_ipv6: None,
            backend_type: VXLAN.to_string(),
            backend_data: Some(backend_data(self.conf.vni, &mac)),
            backend_v6_data: None,
        };
        self.mac = Some(mac);
        self.dev = Some(want);
        Ok(attrs)
    }

    /// Takes the node's subnet (the device gets `<network>/32`: the source for host → pod
    /// traffic; /32 avoids a broadcast route) and returns the device MTU for subnet.env.
    fn configure(&mut self, _ext: &ExternalInterface, own: Ipv4Net) -> Result<u32, BackendError> {
        let dev = self.dev.as_ref().ok_or_else(|| {
            BackendError::Unsupported("vxlan: configure called before prepare".into())
        })?;
        self.own = Some(own);
        Ok(dev.mtu)
    }

    fn desired(&self, ext: &ExternalInterface, peers: &[Peer]) -> Desired {
        let mut out = Desired::default();
        let Some(dev) = &self.dev else {
            for p in peers {
                out.skipped
                    .push((p.key, "the vxlan device is not prepared yet".to_string()));
            }
            return out;
        };
        out.state.add_device(dev.clone());
        if let Some(own) = self.own {
            out.state.add_addr(own_addr(&dev.name, own));
        }
        for peer in peers {
            if let Err(reason) = self.add_peer(ext, dev, peer, &mut out) {
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
        let gw: Ipv4Addr = subnet.network();
        out.state.add_neigh(Neigh {
            ifindex: dev.index,
            ip: gw,
            mac,
        });
        out.state.add_fdb(Fdb {
            ifindex: dev.index,
            mac,
            dst: ip,
        });
        out.state.add_route(Route {
            dst: subnet.into(),
            gateway: gw.into(),
            oif: dev.index,
            onlink: true,
        });
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

#[cfg(test)]
mod tests {
    use net_conf::SubnetKey;

    use super::*;

    const MAC2: Mac = [0x02, 0, 0, 0, 0, 0x02];
    const MAC3: Mac = [0x02, 0, 0, 0, 0, 0x03];

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
            ..Vxlan::new(VxlanConf::default())
                .spec(&ext(), Some([0x02, 0, 0, 0, 0, 0x01]))
                .expect("spec")
        }
    }

    fn peer(subnet: &str, ip: &str, backend: &str, data: Option<&str>) -> Peer {
        Peer {
            key: SubnetKey {
                v4: subnet.parse().expect("subnet"),
                v6: None,
            },
            attrs: LeaseAttrs {
                public_ip: ip.parse().expect("ip"),
                public_ipv6: None,
                backend_type: backend.into(),
                backend_data: data.map(str::to_string),
                backend_v6_data: None,
            },
        }
    }

    fn vx(direct_routing: bool) -> Vxlan {
        Vxlan::new(VxlanConf {
            direct_routing,
            ..VxlanConf::default()
        })
        .with_device(dev())
    }

    #[test]
    fn backend_data_round_trip_and_go_spellings() {
        let text = backend_data(1, &MAC2);
        assert_eq!(text, r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}"#);
        assert_eq!(parse_backend_data(&text), Ok((1, MAC2)));
        assert_eq!(
            parse_backend_data(r#"{"vni":7,"vtepMAC":"02-00-00-00-00-03"}"#),
            Ok((7, MAC3))
        );
        let err = parse_backend_data(r#"{"VNI":1,"VtepMAC":"zz"}"#).expect_err("bad mac");
        assert!(err.contains("BackendData.VtepMAC \"zz\""), "{err}");
        let err = parse_backend_data(r#"{"VtepMAC":"02:00:00:00:00:02"}"#).expect_err("no vni");
        assert!(err.contains("BackendData.VNI"), "{err}");
        assert!(parse_backend_data("nope").is_err());
        // The canonical fast path agrees with the JSON path and leaves odd spellings to it.
        assert_eq!(
            parse_canonical(&backend_data(4096, &MAC2)),
            Some((4096, MAC2))
        );
        for odd in [
            r#"{"VNI":01,"VtepMAC":"02:00:00:00:00:02"}"#,
            r#"{"VNI":+1,"VtepMAC":"02:00:00:00:00:02"}"#,
            r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:02:03"}"#,
            r#"{"VNI":1,"VtepMAC":"\u00302:00:00:00:00:02"}"#,
            r#"{"VNI":1, "VtepMAC":"02:00:00:00:00:02"}"#,
        ] {
            assert_eq!(parse_canonical(odd), None, "{odd}");
        }
        assert_eq!(
            parse_backend_data(r#"{"VNI":1, "VtepMAC":"02:00:00:00:00:02"}"#),
            Ok((1, MAC2))
        );
        assert!(parse_backend_data(r#"{"VNI":01,"VtepMAC":"02:00:00:00:00:02"}"#).is_err());
        assert!(parse_backend_data(r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:02:03"}"#).is_err());
    }

    #[test]
    fn per_peer_neigh_fdb_and_onlink_route() {
        let d = vx(false).desired(
            &ext(),
            &[
                peer(
                    "10.244.2.0/24",
                    "198.18.0.2",
                    "vxlan",
                    Some(r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}"#),
                ),
                // Not adjacent: vxlan doesn't care.
                peer(
                    "10.244.3.0/24",
                    "203.0.113.3",
                    "vxlan",
                    Some(r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:03"}"#),
                ),
            ],
        );
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
        assert_eq!(d.state.devices["flannel.1"], dev());
        assert!(d.state.addrs.is_empty(), "no own subnet yet");
        let gw2 = Ipv4Addr::new(10, 244, 2, 0);
        assert_eq!(
            d.state.neighs.values().cloned().collect::<Vec<_>>(),
            vec![
                Neigh {
                    ifindex: 9,
                    ip: gw2,
                    mac: MAC2
                },
                Neigh {
                    ifindex: 9,
                    ip: Ipv4Addr::new(10, 244, 3, 0),
                    mac: MAC3
                },
            ]
        );
        assert_eq!(
            d.state.fdb.get(&(9, MAC3)),
            Some(&Fdb {
                ifindex: 9,
                mac: MAC3,
                dst: Ipv4Addr::new(203, 0, 113, 3)
            })
        );
        let r2 = &d.state.routes[&"10.244.2.0/24".parse().expect("net")];
        assert_eq!(r2.to_string(), "10.244.2.0/24 via 10.244.2.0 dev 9 onlink");
        assert_eq!(d.state.routes.len(), 2);
    }

    #[test]
    fn direct_routing_for_adjacent_peers_only() {
        let data2 = r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}"#;
        let data3 = r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:03"}"#;
        let d = vx(true).desired(
            &ext(),
            &[
                peer("10.244.2.0/24", "198.18.0.2", "vxlan", Some(data2)),
                peer("10.244.3.0/24", "203.0.113.3", "vxlan", Some(data3)),
            ],
        );
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
        let r2 = &d.state.routes[&"10.244.2.0/24".parse().expect("net")];
        assert_eq!(r2.to_string(), "10.244.2.0/24 via 198.18.0.2 dev 3");
        assert_eq!(d.state.neighs.len(), 1, "only the tunnelled peer");
        assert_eq!(d.state.fdb.len(), 1);
    }

    #[test]
    fn skips_with_reasons() {
        let good = r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}"#;
        let peers = [
            peer("10.244.2.0/24", "198.18.0.2", "host-gw", None),
            peer("10.244.3.0/24", "198.18.0.3", "vxlan", None),
            peer(
                "10.244.4.0/24",
                "198.18.0.4",
                "vxlan",
                Some(r#"{"VNI":1,"VtepMAC":"bad"}"#),
            ),
            peer(
                "10.244.5.0/24",
                "198.18.0.5",
                "vxlan",
                Some(r#"{"VNI":2,"VtepMAC":"02:00:00:00:00:05"}"#),
            ),
            peer("10.244.6.0/24", "198.18.0.1", "vxlan", Some(good)),
            peer("10.244.7.0/24", "198.18.0.7", "vxlan", Some(good)),
            peer("10.244.8.0/24", "198.18.0.8", "vxlan", Some(good)),
        ];
        let d = vx(false).desired(&ext(), &peers);
        let reasons: Vec<(String, String)> = d
            .skipped
            .iter()
            .map(|(k, r)| (k.v4.to_string(), r.clone()))
            .collect();
        let want = [
            ("10.244.2.0/24", "\"host-gw\""),
            ("10.244.3.0/24", "no BackendData"),
            ("10.244.4.0/24", "BackendData.VtepMAC \"bad\""),
            ("10.244.5.0/24", "uses VNI 2, this node uses 1"),
            ("10.244.6.0/24", "own address"),
            ("10.244.8.0/24", "already used by the peer at 198.18.0.7"),
        ];
        assert_eq!(reasons.len(), want.len(), "{reasons:?}");
        for ((subnet, reason), (want_subnet, want_part)) in reasons.iter().zip(want) {
            assert_eq!(subnet, want_subnet);
            assert!(reason.contains(want_part), "{subnet}: {reason}");
        }
        assert_eq!(d.state.routes.len(), 1);
    }

    #[test]
    fn unprepared_backend_programs_nothing() {
        let d = Vxlan::new(VxlanConf::default()).desired(
            &ext(),
            &[peer("10.244.2.0/24", "198.18.0.2", "vxlan", None)],
        );
        assert!(d.state.is_empty());
        assert_eq!(d.skipped.len(), 1);
    }

    /// The device as the kernel reports it (what weft makes, at index 9).
    fn link(kind: &str) -> Device {
        let mut d = dev();
        d.mac = Some(MAC2);
        if kind != "vxlan" {
            d.kind = DeviceKind::Other(kind.into());
        }
        d
    }

    #[test]
    fn device_compared_field_by_field() {
        let want = vx(false).spec(&ext(), Some(MAC2)).expect("spec");
        assert_eq!(want.mtu, 1450);
        assert_eq!(want.name, "flannel.1");
        assert!(want.up);
        assert!(want.differences(&link("vxlan")).is_empty());
        assert_eq!(
            want.differences(&link("veth")).fixed,
            vec!["type veth (want vxlan)"]
        );
        let mut l = link("vxlan");
        if let DeviceKind::Vxlan(v) = &mut l.kind {
            v.vni = 2;
            v.port = 4789;
            v.local = Ipv4Addr::new(198, 18, 0, 9);
            v.learning = true;
        }
        l.mtu = 1400; // fixed in place
        let d = want.differences(&l);
        assert_eq!(
            d.fixed,
            vec![
                "id 2 (want 1)",
                "local 198.18.0.9 (want 198.18.0.1)",
                "dstport 4789 (want 8472)",
                "learning true (want false)",
            ]
        );
        assert_eq!(d.settable, vec!["mtu 1400 (want 1450)"]);
        let mut small = ext();
        small.mtu = 100;
        assert!(vx(false).spec(&small, Some(MAC2)).is_err());
        let mut conf_mtu = Vxlan::new(VxlanConf {
            mtu: Some(9000),
            ..VxlanConf::default()
        });
        conf_mtu.dev = None;
        assert_eq!(conf_mtu.spec(&ext(), Some(MAC2)).expect("spec").mtu, 8950);
    }

    #[test]
    fn desired_holds_the_device_and_its_slash32() {
        let d = vx(false)
            .with_own("10.244.1.0/24".parse().expect("own"))
            .desired(&ext(), &[]);
        assert_eq!(d.state.devices.len(), 1);
        let flannel = &d.state.devices["flannel.1"];
        assert_eq!(flannel.index, 9);
        assert_eq!(flannel.mac, Some([0x02, 0, 0, 0, 0, 0x01]));
        assert_eq!(
            d.state
                .addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec!["10.244.1.0/32 dev flannel.1"]
        );
        // Bound to the index the reconciler made the device under: entries follow.
        let mut b = vx(false);
        b.bind(&|name| (name == "flannel.1").then_some(12));
        let d = b.desired(
            &ext(),
            &[peer(
                "10.244.2.0/24",
                "198.18.0.2",
                "vxlan",
                Some(r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}"#),
            )],
        );
        assert_eq!(d.state.devices["flannel.1"].index, 12);
        assert!(d.state.neighs.keys().all(|(i, _)| *i == 12));
        assert!(d.state.routes.values().all(|r| r.oif == 12));
    }

    #[test]
    fn random_macs_are_local_unicast() {
        for _ in 0..100 {
            let m = random_mac();
            assert_eq!(m[0] & 0x01, 0, "unicast");
            assert_eq!(m[0] & 0x02, 0x02, "locally administered");
        }
    }
}
