//! host-gw (docs/flannel-compat.md §5.3): no device; one route per peer, `<peer subnet> via <peer
//! PublicIP> dev <ext iface>`, which only works when every node is on one L2 segment.
//!
//! Unlike flannel, a peer whose PublicIP is not on a directly connected subnet of the external
//! interface is skipped up front with a reason, instead of failing in the kernel ("network is
//! unreachable") and being retried forever. IPv4 only for now (no PublicIPv6 routes).
use ipnet::Ipv4Net;
use net_conf::LeaseAttrs;

use crate::nl::Netlink;
use crate::{Backend, BackendError, Desired, ExternalInterface, Peer, Route};

/// The lease `BackendType` of host-gw.
pub const HOST_GW: &str = "host-gw";

/// The host-gw backend. Stateless: everything it needs comes with each call.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostGw;

impl HostGw {
    pub fn new() -> Self {
        HostGw
    }
}

impl Backend for HostGw {
    fn type_name(&self) -> &'static str {
        HOST_GW
    }

    /// Refuses NAT (the published address must be the interface's own) and returns the lease
    /// attributes `{"PublicIP": <ext_addr>, "BackendType": "host-gw"}`.
    async fn prepare(
        &mut self,
        _nl: &Netlink,
        ext: &ExternalInterface,
    ) -> Result<LeaseAttrs, BackendError> {
        if ext.ext_addr != ext.iface_addr {
            return Err(BackendError::Unsupported(
                "your PublicIP differs from interface IP, meaning that probably you're on a NAT, \
                 which is not supported by host-gw backend"
                    .to_string(),
            ));
        }
        Ok(LeaseAttrs {
            public_ip: ext.ext_addr,
            public_ipv6: None,
            backend_type: HOST_GW.to_string(),
            backend_data: None,
            backend_v6_data: None,
        })
    }

    /// No device to configure; the pod MTU is the external interface's.
    fn configure(&mut self, ext: &ExternalInterface, _own: Ipv4Net) -> Result<u32, BackendError> {
        Ok(ext.mtu)
    }

    fn desired(&self, ext: &ExternalInterface, peers: &[Peer]) -> Desired {
        let mut out = Desired::default();
        for peer in peers {
            match route_for(ext, peer) {
                Ok(route) => {
                    out.state.routes.insert(route.dst, route);
                }
                Err(reason) => out.skipped.push((peer.key, reason)),
            }
        }
        out
    }
}

/// The route to one peer, or why there is none.
fn route_for(ext: &ExternalInterface, peer: &Peer) -> Result<Route, String> {
    let (subnet, ip) = crate::usable_peer(ext, peer, HOST_GW)?;
    crate::direct_route(ext, subnet, ip).ok_or_else(|| {
        let prefixes = ext
            .prefixes
            .iter()
            .map(|p| p.trunc().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "peer {subnet} via {ip}: {ip} is not on a directly connected subnet of {} ({prefixes}): \
             host-gw needs the nodes on one L2 segment",
            ext.name
        )
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use net_conf::SubnetKey;

    use super::*;

    fn ext() -> ExternalInterface {
        ExternalInterface {
            name: "eth0".into(),
            index: 3,
            iface_addr: Ipv4Addr::new(198, 18, 0, 1),
            ext_addr: Ipv4Addr::new(198, 18, 0, 1),
            mtu: 1500,
            prefixes: vec!["198.18.0.1/24".parse().expect("prefix")],
        }
    }

    fn peer(subnet: &str, ip: &str, backend: &str) -> Peer {
        Peer {
            key: SubnetKey {
                v4: subnet.parse().expect("subnet"),
                v6: None,
            },
            attrs: LeaseAttrs {
                public_ip: ip.parse().expect("ip"),
                public_ipv6: None,
                backend_type: backend.into(),
                backend_data: None,
                backend_v6_data: None,
            },
        }
    }

    fn route(dst: &str, gw: &str) -> Route {
        Route {
            dst: dst.parse().expect("dst"),
            gateway: gw.parse().expect("gw"),
            oif: 3,
            onlink: false,
        }
    }

    #[test]
    fn routes_adjacent_peers() {
        let d = HostGw::new().desired(
            &ext(),
            &[
                peer("10.244.2.0/24", "198.18.0.2", "host-gw"),
                peer("10.244.3.0/24", "198.18.0.3", "host-gw"),
            ],
        );
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
        let routes: Vec<_> = d.state.routes.values().cloned().collect();
        assert_eq!(
            routes,
            vec![
                route("10.244.2.0/24", "198.18.0.2"),
                route("10.244.3.0/24", "198.18.0.3")
            ]
        );
        assert_eq!(routes[0].to_string(), "10.244.2.0/24 via 198.18.0.2 dev 3");
    }

    #[test]
    fn skips_with_reasons() {
        let peers = [
            peer("10.244.2.0/24", "198.18.5.2", "host-gw"),
            peer("10.244.3.0/24", "198.18.0.3", "vxlan"),
            peer("10.244.4.0/24", "0.0.0.0", "host-gw"),
            peer("10.244.5.0/24", "198.18.0.1", "host-gw"),
            peer("10.244.6.0/24", "198.18.0.6", ""),
            peer("10.244.7.0/24", "198.18.0.7", "host-gw"),
        ];
        let d = HostGw::new().desired(&ext(), &peers);
        assert_eq!(
            d.state.routes.values().cloned().collect::<Vec<_>>(),
            vec![route("10.244.7.0/24", "198.18.0.7")]
        );
        let reasons: Vec<(String, &str)> = d
            .skipped
            .iter()
            .map(|(k, r)| (k.v4.to_string(), r.as_str()))
            .collect();
        assert_eq!(reasons.len(), 5, "{reasons:?}");
        assert_eq!(reasons[0].0, "10.244.2.0/24");
        assert_eq!(
            reasons[0].1,
            "peer 10.244.2.0/24 via 198.18.5.2: 198.18.5.2 is not on a directly connected subnet \
             of eth0 (198.18.0.0/24): host-gw needs the nodes on one L2 segment"
        );
        assert_eq!(reasons[1].0, "10.244.3.0/24");
        assert!(reasons[1].1.contains("\"vxlan\""), "{}", reasons[1].1);
        assert_eq!(reasons[2].0, "10.244.4.0/24");
        assert!(reasons[2].1.contains("no PublicIP"), "{}", reasons[2].1);
        assert_eq!(reasons[3].0, "10.244.5.0/24");
        assert!(reasons[3].1.contains("own address"), "{}", reasons[3].1);
        assert_eq!(reasons[4].0, "10.244.6.0/24");
        assert!(reasons[4].1.contains("\"\""), "{}", reasons[4].1);
    }

    #[test]
    fn second_prefix_counts_as_adjacent() {
        let mut e = ext();
        e.prefixes.push("198.19.0.1/16".parse().expect("prefix"));
        let d = HostGw::new().desired(&e, &[peer("10.244.2.0/24", "198.19.4.2", "host-gw")]);
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
        assert_eq!(d.state.routes.len(), 1);
    }

    #[test]
    fn no_peers_no_routes() {
        let d = HostGw::new().desired(&ext(), &[]);
        assert_eq!(d, Desired::default());
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn prepare_refuses_nat_and_publishes_host_gw() {
        block_on(async {
            // An rtnetlink socket needs no privilege; prepare doesn't use it anyway.
            let nl = Netlink::connect().expect("netlink socket");
            let mut nat = ext();
            nat.ext_addr = Ipv4Addr::new(203, 0, 113, 7);
            let err = HostGw::new()
                .prepare(&nl, &nat)
                .await
                .expect_err("NAT must be refused");
            assert!(matches!(err, BackendError::Unsupported(_)), "{err:?}");
            assert_eq!(
                err.to_string(),
                "your PublicIP differs from interface IP, meaning that probably you're on a NAT, \
                 which is not supported by host-gw backend"
            );
            let attrs = HostGw::new().prepare(&nl, &ext()).await.expect("prepare");
            assert_eq!(attrs.public_ip, Ipv4Addr::new(198, 18, 0, 1));
            assert_eq!(attrs.public_ipv6, None);
            assert_eq!(attrs.backend_type, "host-gw");
            assert_eq!(attrs.backend_data, None);
            let mtu = HostGw::new()
                .configure(&ext(), "10.244.1.0/24".parse().expect("own"))
                .expect("configure");
            assert_eq!(mtu, 1500);
        });
    }
}
