//! Nodes as leases: the few fields of a Node that a subnet manager reads (decoded straight
//! from the JSON; the rest of a multi-KiB Node is skipped by the decoder, never kept), flannel's
//! annotations, and the patches weft writes. Pure: no I/O.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use net_conf::{LeaseAttrs, SubnetKey};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::lease::{LeaseEntry, Malformed};

/// The fields of a Node that are read; everything else is skipped while decoding.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeLite {
    pub metadata: Meta,
    #[serde(default)]
    pub spec: Spec,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Meta {
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "resourceVersion")]
    pub resource_version: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Spec {
    #[serde(default, rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    #[serde(default, rename = "podCIDRs")]
    pub pod_cidrs: Vec<String>,
}

impl NodeLite {
    /// The node's IPv4 pod CIDR: the IPv4 entry of `spec.podCIDRs`, else `spec.podCIDR`.
    /// `Ok(None)` when none is assigned; an error names a value that is not a CIDR.
    pub fn pod_cidr_v4(&self) -> Result<Option<Ipv4Net>, String> {
        self.pod_cidrs().map(|(v4, _)| v4)
    }

    /// The node's IPv6 pod CIDR (the IPv6 entry of `spec.podCIDRs`, else `spec.podCIDR`), as
    /// [`pod_cidr_v4`](Self::pod_cidr_v4).
    pub fn pod_cidr_v6(&self) -> Result<Option<Ipv6Net>, String> {
        self.pod_cidrs().map(|(_, v6)| v6)
    }

    /// The first IPv4 and the first IPv6 entry of the pod CIDRs.
    pub fn pod_cidrs(&self) -> Result<(Option<Ipv4Net>, Option<Ipv6Net>), String> {
        let mut all: Vec<&str> = self.spec.pod_cidrs.iter().map(String::as_str).collect();
        if all.is_empty()
            && let Some(single) = self.spec.pod_cidr.as_deref().filter(|s| !s.is_empty())
        {
            all.push(single);
        }
        let (mut v4, mut v6) = (None, None);
        for text in all {
            match text.parse::<IpNet>() {
                Ok(IpNet::V4(net)) => {
                    v4.get_or_insert(net.trunc());
                }
                Ok(IpNet::V6(net)) => {
                    v6.get_or_insert(net.trunc());
                }
                Err(_) => return Err(format!("podCIDR {text:?} is not a CIDR")),
            }
        }
        Ok((v4, v6))
    }

    pub fn resource_version(&self) -> i64 {
        self.metadata.resource_version.parse().unwrap_or(0)
    }
}

/// flannel's annotation names under a prefix (`--kube-annotation-prefix`, default
/// `flannel.alpha.coreos.com`).
#[derive(Debug, Clone)]
pub struct Annotations {
    pub backend_type: String,
    pub backend_data: String,
    pub backend_v6_data: String,
    pub public_ip: String,
    pub public_ipv6: String,
    pub subnet_manager: String,
    pub public_ip_overwrite: String,
    pub node_public_ip: String,
}

impl Annotations {
    pub fn new(prefix: &str) -> Self {
        let p = prefix.trim_end_matches('/');
        let k = |name: &str| format!("{p}/{name}");
        Annotations {
            backend_type: k("backend-type"),
            backend_data: k("backend-data"),
            backend_v6_data: k("backend-v6-data"),
            public_ip: k("public-ip"),
            public_ipv6: k("public-ipv6"),
            subnet_manager: k("kube-subnet-manager"),
            public_ip_overwrite: k("public-ip-overwrite"),
            node_public_ip: k("node-public-ip"),
        }
    }

    /// What a Node says as a lease on a network of `families`, read as flanneld reads it: the
    /// IPv4 podCIDR, `public-ip` and `backend-data` only when IPv4 is on; the IPv6 podCIDR,
    /// `public-ipv6` and `backend-v6-data` only when IPv6 is on (and the Node has an IPv6
    /// podCIDR). A Node without the podCIDR of the network's first family (IPv4, else IPv6)
    /// has none assigned yet: not a lease.
    pub fn as_lease(&self, node: &NodeLite, families: Families) -> NodeLease {
        let a = &node.metadata.annotations;
        if a.get(&self.subnet_manager).map(String::as_str) != Some("true") {
            return NodeLease::NotALease;
        }
        let malformed = |reason: String, subnet: Option<SubnetKey>| {
            NodeLease::Malformed(Malformed {
                key: format!("node {}", node.metadata.name),
                reason,
                subnet,
            })
        };
        let subnet = match node.pod_cidrs() {
            Ok(cidrs) => match families.key(cidrs) {
                Some(key) => key,
                None => return NodeLease::NotALease,
            },
            Err(e) => return malformed(e, None),
        };
        let (public_ip, data) = match subnet.v4 {
            Some(_) => match self.v4_side(a) {
                Ok(side) => side,
                Err(reason) => return malformed(reason, Some(subnet)),
            },
            // An IPv6-only lease: flannel's `PublicIP` is then 0.0.0.0 and it has no BackendData.
            None => (Ipv4Addr::UNSPECIFIED, "null"),
        };
        // The IPv6 side, for a node with an IPv6 pod CIDR: `public-ipv6` and `backend-v6-data`.
        let mut v6_fields = String::new();
        if subnet.v6.is_some() {
            if let Some(text) = a.get(&self.public_ipv6).filter(|s| !s.is_empty()) {
                if text.parse::<Ipv6Addr>().is_err() {
                    return malformed(
                        format!(
                            "annotation {} {text:?} is not an IPv6 address",
                            self.public_ipv6
                        ),
                        Some(subnet),
                    );
                }
                v6_fields = format!(",\"PublicIPv6\":{}", json!(text));
            }
            if let Some(data6) = a.get(&self.backend_v6_data) {
                if serde_json::from_str::<Value>(data6).is_err() {
                    return malformed(
                        format!(
                            "annotation {} {:?} is not JSON",
                            self.backend_v6_data,
                            net_conf::excerpt(data6, 200)
                        ),
                        Some(subnet),
                    );
                }
                v6_fields.push_str(&format!(",\"BackendV6Data\":{data6}"));
            }
        }
        let backend_type = a.get(&self.backend_type).cloned().unwrap_or_default();
        let value = format!(
            "{{\"PublicIP\":{},\"BackendType\":{},\"BackendData\":{data}{v6_fields}}}",
            json!(public_ip.to_string()),
            json!(backend_type),
        );
        match LeaseAttrs::parse(value.as_bytes()) {
            Ok(attrs) => NodeLease::Lease(LeaseEntry {
                key: subnet,
                attrs,
                lease_id: 0,
                mod_revision: node.resource_version(),
            }),
            Err(e) => malformed(e.to_string(), Some(subnet)),
        }
    }

    /// A Node's IPv4 side: its public IP (`public-ip-overwrite` if an admin set it, else
    /// `public-ip`) and its `backend-data` (`null` when absent), or why it cannot be read.
    fn v4_side<'a>(&self, a: &'a BTreeMap<String, String>) -> Result<(Ipv4Addr, &'a str), String> {
        // An admin-set overwrite replaces the advertised address (NAT).
        let (ip_key, ip_text) = match a.get(&self.public_ip_overwrite).filter(|s| !s.is_empty()) {
            Some(v) => (&self.public_ip_overwrite, Some(v)),
            None => (&self.public_ip, a.get(&self.public_ip)),
        };
        let ip_text = ip_text.ok_or_else(|| format!("annotation {ip_key} is missing"))?;
        let public_ip: Ipv4Addr = ip_text
            .parse()
            .map_err(|_| format!("annotation {ip_key} {ip_text:?} is not an IPv4 address"))?;
        // Through the lease value's own parser later, so the same rules hold as for etcd
        // leases; here only whether it is JSON at all.
        let data = a
            .get(&self.backend_data)
            .map(String::as_str)
            .unwrap_or("null");
        if serde_json::from_str::<Value>(data).is_err() {
            return Err(format!(
                "annotation {} {:?} is not JSON",
                self.backend_data,
                net_conf::excerpt(data, 200)
            ));
        }
        Ok((public_ip, data))
    }

    /// The annotations this node publishes for `attrs`, as flanneld writes them
    /// (`backend-data` is `null` when the backend has none); a dual-stack node adds
    /// `backend-v6-data` (`null` likewise) and `public-ipv6`. An IPv6-only node (`PublicIP`
    /// 0.0.0.0 with a `PublicIPv6`) publishes no `backend-data` and no `public-ip`, which no
    /// reader of an IPv6-only network looks at (flanneld's vxlan writes none either).
    pub fn own(&self, attrs: &LeaseAttrs) -> Vec<(String, String)> {
        let v6_only = attrs.public_ip.is_unspecified() && attrs.public_ipv6.is_some();
        let mut out = vec![
            (self.backend_type.clone(), attrs.backend_type.clone()),
            (self.subnet_manager.clone(), "true".to_string()),
        ];
        if !v6_only {
            out.insert(
                0,
                (
                    self.backend_data.clone(),
                    attrs
                        .backend_data
                        .clone()
                        .unwrap_or_else(|| "null".to_string()),
                ),
            );
            out.push((self.public_ip.clone(), attrs.public_ip.to_string()));
        }
        if let Some(v6) = attrs.public_ipv6 {
            out.push((
                self.backend_v6_data.clone(),
                attrs
                    .backend_v6_data
                    .clone()
                    .unwrap_or_else(|| "null".to_string()),
            ));
            out.push((self.public_ipv6.clone(), v6.to_string()));
        }
        out
    }

    /// Whether `node` already carries [`own`](Self::own)`(attrs)`.
    pub fn carries(&self, node: &NodeLite, attrs: &LeaseAttrs) -> bool {
        self.own(attrs)
            .iter()
            .all(|(k, v)| node.metadata.annotations.get(k) == Some(v))
    }

    /// The strategic merge patch (on `nodes/status`) that sets [`own`](Self::own)`(attrs)`.
    pub fn patch(&self, attrs: &LeaseAttrs) -> Value {
        let map: serde_json::Map<String, Value> = self
            .own(attrs)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        json!({"metadata": {"annotations": map}})
    }

    /// `node-public-ip`, set by an admin to choose this node's public IP (as `--public-ip`).
    pub fn node_public_ip(&self, node: &NodeLite) -> Result<Option<Ipv4Addr>, String> {
        match node.metadata.annotations.get(&self.node_public_ip) {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| {
                format!(
                    "annotation {} {s:?} is not an IPv4 address",
                    self.node_public_ip
                )
            }),
        }
    }
}

/// The condition patch after start: `NetworkUnavailable=False`, reason `FlannelIsUp`.
pub fn network_available_patch(now: &str) -> Value {
    json!({"status": {"conditions": [{
        "type": "NetworkUnavailable",
        "status": "False",
        "reason": "FlannelIsUp",
        "message": "Flannel is running on this node",
        "lastTransitionTime": now,
        "lastHeartbeatTime": now
    }]}})
}

/// The address families of the network Nodes are read for (`EnableIPv4`, `EnableIPv6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

impl Families {
    /// An IPv4 network (the default before the config is known).
    pub const V4: Families = Families {
        v4: true,
        v6: false,
    };

    /// The families of what a Node has: every podCIDR it carries counts (its own Node read at
    /// start, before the config is).
    pub fn of_cidrs(cidrs: (Option<Ipv4Net>, Option<Ipv6Net>)) -> Families {
        Families {
            v4: cidrs.0.is_some(),
            v6: cidrs.1.is_some(),
        }
    }

    /// The key of podCIDRs `(v4, v6)` on this network: only its families' parts; None while
    /// the part of its first family (IPv4, else IPv6) is not assigned.
    pub fn key(self, (v4, v6): (Option<Ipv4Net>, Option<Ipv6Net>)) -> Option<SubnetKey> {
        let key = SubnetKey {
            v4: v4.filter(|_| self.v4),
            v6: v6.filter(|_| self.v6),
        };
        match (self.v4, key.v4, key.v6) {
            (true, None, _) | (false, _, None) => None,
            _ => Some(key),
        }
    }
}

/// What one Node is as a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeLease {
    Lease(LeaseEntry),
    /// Not a flannel node (no `kube-subnet-manager: "true"`) or no podCIDR yet: ignored.
    NotALease,
    /// A flannel node whose annotations or podCIDR cannot be read: skipped with a warning.
    Malformed(Malformed),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;
    use net_conf::VxlanData;

    fn node(annotations: &[(&str, &str)], cidrs: &[&str]) -> NodeLite {
        let v = json!({
            "kind": "Node",
            "metadata": {"name": "n2", "resourceVersion": "42",
                         "annotations": annotations.iter().map(|(k, v)| (k.to_string(), json!(v)))
                             .collect::<serde_json::Map<_, _>>(),
                         "managedFields": [{"manager": "kubelet"}]},
            "spec": {"podCIDR": cidrs.first(), "podCIDRs": cidrs},
            "status": {"images": [{"names": ["x"], "sizeBytes": 1}]}
        });
        serde_json::from_value(v).unwrap()
    }

    const P: &str = "flannel.alpha.coreos.com";
    const DUAL: Families = Families { v4: true, v6: true };
    const V6: Families = Families {
        v4: false,
        v6: true,
    };

    fn flannel_node(extra: &[(&str, &str)]) -> NodeLite {
        let mut a = vec![
            (
                "flannel.alpha.coreos.com/backend-data",
                r#"{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e3"}"#,
            ),
            ("flannel.alpha.coreos.com/backend-type", "vxlan"),
            ("flannel.alpha.coreos.com/kube-subnet-manager", "true"),
            ("flannel.alpha.coreos.com/public-ip", "198.18.0.2"),
        ];
        a.extend_from_slice(extra);
        node(&a, &["10.244.2.0/24"])
    }

    #[test]
    fn a_flannel_node_is_a_lease_with_its_pod_cidr_and_annotations() {
        let ann = Annotations::new(P);
        let NodeLease::Lease(l) = ann.as_lease(&flannel_node(&[]), Families::V4) else {
            panic!("not a lease")
        };
        assert_eq!(l.key.to_string(), "10.244.2.0-24");
        assert_eq!(l.attrs.public_ip.to_string(), "198.18.0.2");
        assert_eq!(l.attrs.backend_type, "vxlan");
        assert_eq!(
            l.attrs.vxlan_data().unwrap().unwrap().vtep_mac_string(),
            "12:c6:65:89:b4:e3"
        );
        assert_eq!(l.mod_revision, 42);
        // The admin's overwrite wins.
        let NodeLease::Lease(l) = ann.as_lease(
            &flannel_node(&[(
                "flannel.alpha.coreos.com/public-ip-overwrite",
                "203.0.113.9",
            )]),
            Families::V4,
        ) else {
            panic!("not a lease")
        };
        assert_eq!(l.attrs.public_ip.to_string(), "203.0.113.9");
    }

    #[test]
    fn nodes_without_the_marker_or_a_pod_cidr_are_ignored_and_bad_ones_malformed() {
        let ann = Annotations::new(P);
        assert_eq!(
            ann.as_lease(&node(&[], &["10.244.2.0/24"]), Families::V4),
            NodeLease::NotALease
        );
        let mut n = flannel_node(&[]);
        n.spec = Spec::default();
        assert_eq!(ann.as_lease(&n, Families::V4), NodeLease::NotALease);
        for (k, v) in [
            ("flannel.alpha.coreos.com/public-ip", "not-an-ip"),
            ("flannel.alpha.coreos.com/backend-data", "{broken"),
        ] {
            let mut n = flannel_node(&[]);
            n.metadata.annotations.insert(k.to_string(), v.to_string());
            let NodeLease::Malformed(m) = ann.as_lease(&n, Families::V4) else {
                panic!("{k}={v} is not malformed")
            };
            assert_eq!(m.subnet.unwrap().to_string(), "10.244.2.0-24");
            assert!(m.key.contains("n2") && m.reason.contains(k), "{m:?}");
        }
        let mut n = flannel_node(&[]);
        n.metadata
            .annotations
            .remove("flannel.alpha.coreos.com/public-ip");
        assert!(
            matches!(ann.as_lease(&n, Families::V4), NodeLease::Malformed(m) if m.reason.contains("missing"))
        );
        let mut n = flannel_node(&[]);
        n.spec.pod_cidrs = vec!["nonsense".into()];
        assert!(
            matches!(ann.as_lease(&n, Families::V4), NodeLease::Malformed(m) if m.subnet.is_none())
        );
    }

    #[test]
    fn own_annotations_are_flannels_and_dual_stack_pod_cidrs_pick_ipv4() {
        let ann = Annotations::new(P);
        let mac = [0x12, 0xc6, 0x65, 0x89, 0xb4, 0xe3];
        let attrs = LeaseAttrs::vxlan(
            "198.18.0.1".parse().unwrap(),
            VxlanData {
                vni: 1,
                vtep_mac: mac,
            },
        );
        assert_eq!(
            ann.patch(&attrs),
            json!({"metadata": {"annotations": {
                "flannel.alpha.coreos.com/backend-data": "{\"VNI\":1,\"VtepMAC\":\"12:c6:65:89:b4:e3\"}",
                "flannel.alpha.coreos.com/backend-type": "vxlan",
                "flannel.alpha.coreos.com/kube-subnet-manager": "true",
                "flannel.alpha.coreos.com/public-ip": "198.18.0.1"
            }}})
        );
        let hostgw = LeaseAttrs::host_gw("198.18.0.1".parse().unwrap());
        assert_eq!(ann.own(&hostgw)[0].1, "null");
        let n = node(&[], &["fd00:10:244:2::/64", "10.244.2.0/24"]);
        assert_eq!(
            n.pod_cidr_v4().unwrap().unwrap().to_string(),
            "10.244.2.0/24"
        );
        assert!(!ann.carries(&n, &hostgw));
    }

    #[test]
    fn a_dual_stack_node_is_a_dual_stack_lease() {
        let ann = Annotations::new(P);
        let mut n = flannel_node(&[
            ("flannel.alpha.coreos.com/public-ipv6", "fd00:198:18::2"),
            (
                "flannel.alpha.coreos.com/backend-v6-data",
                r#"{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e4"}"#,
            ),
        ]);
        n.spec.pod_cidrs = vec!["10.244.2.0/24".into(), "fd00:10:244:2::/64".into()];
        let NodeLease::Lease(l) = ann.as_lease(&n, DUAL) else {
            panic!("not a lease")
        };
        assert_eq!(l.key.to_string(), "10.244.2.0-24&fd00:10:244:2::-64");
        assert_eq!(l.attrs.public_ipv6, Some("fd00:198:18::2".parse().unwrap()));
        assert_eq!(
            l.attrs.backend_v6_data.as_deref(),
            Some(r#"{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e4"}"#)
        );
        // A bad public-ipv6 is malformed (the peer is skipped, not removed).
        n.metadata.annotations.insert(
            "flannel.alpha.coreos.com/public-ipv6".into(),
            "10.0.0.1".into(),
        );
        let NodeLease::Malformed(m) = ann.as_lease(&n, DUAL) else {
            panic!("not malformed")
        };
        assert!(
            m.reason.contains("public-ipv6") && m.subnet.is_some(),
            "{m:?}"
        );
        // A v4-only node's v6 annotations are not read.
        let v4_only = flannel_node(&[("flannel.alpha.coreos.com/public-ipv6", "junk")]);
        let NodeLease::Lease(l) = ann.as_lease(&v4_only, DUAL) else {
            panic!("not a lease")
        };
        assert_eq!(l.key.v6, None);
        assert_eq!(l.attrs.public_ipv6, None);
    }

    #[test]
    fn an_ipv6_only_network_reads_and_writes_the_ipv6_side_only() {
        let ann = Annotations::new(P);
        // flanneld's vxlan on an IPv6-only network writes no backend-data and no public-ip.
        let n = node(
            &[
                ("flannel.alpha.coreos.com/backend-type", "vxlan"),
                ("flannel.alpha.coreos.com/kube-subnet-manager", "true"),
                ("flannel.alpha.coreos.com/public-ipv6", "fd00:198:18::2"),
                (
                    "flannel.alpha.coreos.com/backend-v6-data",
                    r#"{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e4"}"#,
                ),
            ],
            &["10.244.2.0/24", "fd00:10:244:2::/64"],
        );
        let NodeLease::Lease(l) = ann.as_lease(&n, V6) else {
            panic!("not a lease")
        };
        assert_eq!(
            l.key,
            SubnetKey::v6_only("fd00:10:244:2::/64".parse().unwrap())
        );
        assert!(l.attrs.public_ip.is_unspecified());
        assert_eq!(l.attrs.backend_data, None);
        assert_eq!(l.attrs.public_ipv6, Some("fd00:198:18::2".parse().unwrap()));
        assert_eq!(
            l.attrs.vxlan_v6_data().unwrap().unwrap().vtep_mac_string(),
            "12:c6:65:89:b4:e4"
        );
        // The same Node on an IPv4 network needs its public-ip: malformed there, not here.
        assert!(matches!(
            ann.as_lease(&n, Families::V4),
            NodeLease::Malformed(m) if m.reason.contains("public-ip")
        ));
        // A bad IPv4 annotation does not matter to an IPv6-only network.
        let mut junk = n.clone();
        junk.metadata
            .annotations
            .insert("flannel.alpha.coreos.com/public-ip".into(), "junk".into());
        assert!(matches!(ann.as_lease(&junk, V6), NodeLease::Lease(_)));
        // No IPv6 podCIDR yet: not a lease (and no key to delete).
        let v4_only = node(&n_annotations(&n), &["10.244.2.0/24"]);
        assert_eq!(ann.as_lease(&v4_only, V6), NodeLease::NotALease);
        assert_eq!(V6.key(v4_only.pod_cidrs().unwrap()), None);

        // What an IPv6-only node publishes: its IPv6 side only.
        let attrs = LeaseAttrs {
            public_ipv6: Some("fd00:198:18::1".parse().unwrap()),
            backend_v6_data: Some(r#"{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e5"}"#.into()),
            ..LeaseAttrs::vxlan(
                std::net::Ipv4Addr::UNSPECIFIED,
                VxlanData {
                    vni: 1,
                    vtep_mac: [0; 6],
                },
            )
        };
        let attrs = LeaseAttrs {
            backend_data: None,
            ..attrs
        };
        assert_eq!(
            ann.patch(&attrs),
            json!({"metadata": {"annotations": {
                "flannel.alpha.coreos.com/backend-type": "vxlan",
                "flannel.alpha.coreos.com/kube-subnet-manager": "true",
                "flannel.alpha.coreos.com/backend-v6-data": r#"{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e5"}"#,
                "flannel.alpha.coreos.com/public-ipv6": "fd00:198:18::1"
            }}})
        );
    }

    fn n_annotations(n: &NodeLite) -> Vec<(&str, &str)> {
        n.metadata
            .annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn a_dual_stack_node_publishes_its_ipv6_side() {
        let ann = Annotations::new(P);
        let attrs = LeaseAttrs {
            public_ipv6: Some("fd00:198:18::1".parse().unwrap()),
            ..LeaseAttrs::host_gw("198.18.0.1".parse().unwrap())
        };
        assert_eq!(
            ann.patch(&attrs),
            json!({"metadata": {"annotations": {
                "flannel.alpha.coreos.com/backend-data": "null",
                "flannel.alpha.coreos.com/backend-type": "host-gw",
                "flannel.alpha.coreos.com/kube-subnet-manager": "true",
                "flannel.alpha.coreos.com/public-ip": "198.18.0.1",
                "flannel.alpha.coreos.com/backend-v6-data": "null",
                "flannel.alpha.coreos.com/public-ipv6": "fd00:198:18::1"
            }}})
        );
        let n = node(&[], &["fd00:10:244:2::/64", "10.244.2.0/24"]);
        assert_eq!(
            n.pod_cidr_v6().unwrap().unwrap().to_string(),
            "fd00:10:244:2::/64"
        );
    }
}
