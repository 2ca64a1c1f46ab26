//! Property tests (targets S1): lease values, subnet keys, configs and subnet.env text, fed
//! with generated input. Nothing here may panic; what weft writes must read back as itself.
//!
//! Cases per property: proptest's default (256) or `PROPTEST_CASES` (`scripts/faults.sh`
//! runs 10,000 in its full run).
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use net_conf::alloc::{Previous, choose, is_key_compatible};
use net_conf::{
    BackendConf, Choice, ExistingLease, LeaseAttrs, NetConf, SubnetEnv, SubnetKey, VxlanData,
};
use proptest::prelude::*;

// ===== generators =====

fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}

fn mac() -> impl Strategy<Value = [u8; 6]> {
    any::<[u8; 6]>()
}

/// Leases as weft (or flanneld) writes them: host-gw, ipip, or vxlan with BackendData, with or
/// without a PublicIPv6.
fn lease_attrs() -> impl Strategy<Value = LeaseAttrs> {
    let base = prop_oneof![
        ipv4().prop_map(LeaseAttrs::host_gw),
        ipv4().prop_map(LeaseAttrs::ipip),
        (ipv4(), 1u32..(1 << 24), mac())
            .prop_map(|(ip, vni, mac)| { LeaseAttrs::vxlan(ip, VxlanData { vni, vtep_mac: mac }) }),
    ];
    (base, proptest::option::of((ipv6(), 1u32..(1 << 24), mac()))).prop_map(|(mut attrs, v6)| {
        if let Some((ip, vni, mac)) = v6 {
            attrs.public_ipv6 = Some(ip);
            // A dual-stack vxlan lease carries the v6 device's VNI and MAC in BackendV6Data.
            if attrs.backend_type == "vxlan" {
                attrs.backend_v6_data = Some(VxlanData { vni, vtep_mac: mac }.to_json());
            }
        }
        attrs
    })
}

/// A v4 network in canonical form (host bits clear), any prefix length.
fn v4_net() -> impl Strategy<Value = Ipv4Net> {
    (ipv4(), 0u8..=32).prop_map(|(ip, len)| Ipv4Net::new(ip, len).unwrap().trunc())
}

fn v6_net() -> impl Strategy<Value = Ipv6Net> {
    (ipv6(), 0u8..=128).prop_map(|(ip, len)| Ipv6Net::new(ip, len).unwrap().trunc())
}

/// An etcd key: IPv4, or dual-stack.
fn subnet_key() -> impl Strategy<Value = SubnetKey> {
    (v4_net(), proptest::option::of(v6_net())).prop_map(|(v4, v6)| SubnetKey { v4: Some(v4), v6 })
}

/// Text that looks like JSON: the tokens a lease or config is made of, in random order, so
/// the parser's deeper paths are reached far more often than with random bytes.
fn jsonish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(":".to_owned()),
        Just(",".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("\"PublicIP\"".to_owned()),
        Just("\"publicip\"".to_owned()),
        Just("\"PublicIPv6\"".to_owned()),
        Just("\"BackendType\"".to_owned()),
        Just("\"BackendData\"".to_owned()),
        Just("\"BackendV6Data\"".to_owned()),
        Just("\"VNI\"".to_owned()),
        Just("\"VtepMAC\"".to_owned()),
        Just("\"Network\"".to_owned()),
        Just("\"SubnetLen\"".to_owned()),
        Just("\"SubnetMin\"".to_owned()),
        Just("\"SubnetMax\"".to_owned()),
        Just("\"Backend\"".to_owned()),
        Just("\"Type\"".to_owned()),
        Just("\"vxlan\"".to_owned()),
        Just("\"host-gw\"".to_owned()),
        Just("\"10.244.0.0/16\"".to_owned()),
        Just("\"198.18.0.1\"".to_owned()),
        Just("\"\\u0000\"".to_owned()),
        Just("\"\\ud800\"".to_owned()),
        "-?[0-9]{1,25}(\\.[0-9]{1,5})?(e[+-]?[0-9]{1,4})?",
        "\"[ -~]{0,20}\"",
    ];
    proptest::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

/// A config flanneld accepts: Network /8../24, SubnetLen from the network's prefix + 2 to 30
/// (or left to the default), optional SubnetMin/Max inside the network, a backend with
/// options in range.
fn valid_config() -> impl Strategy<Value = (String, Ipv4Net, u8, &'static str)> {
    (ipv4(), 8u8..=24)
        .prop_flat_map(|(ip, prefix)| {
            let net = Ipv4Net::new(ip, prefix).unwrap().trunc();
            let len = prop_oneof![Just(0u8), (prefix + 2)..=30u8];
            let backend = prop_oneof![
                Just(("host-gw", String::new())),
                (1u32..(1 << 24), 0u16..=65535, 0u32..2).prop_map(|(vni, port, gbp)| {
                    (
                        "vxlan",
                        format!(r#","VNI":{vni},"Port":{port},"GBP":{}"#, gbp == 1),
                    )
                }),
                any::<bool>().prop_map(|dr| ("ipip", format!(r#","DirectRouting":{dr}"#))),
            ];
            (Just(net), len, backend, any::<bool>())
        })
        .prop_map(|(net, len, (ty, opts), limits)| {
            let effective = if len > 0 {
                len
            } else if net.prefix_len() <= 22 {
                24
            } else {
                net.prefix_len() + 2
            };
            let mut text = format!(r#"{{"Network":"{net}""#);
            if len > 0 {
                text.push_str(&format!(r#","SubnetLen":{len}"#));
            }
            if limits {
                // The second and the last subnet of the network.
                let size = 1u32 << (32 - effective);
                let base = u32::from(net.network());
                let last = u32::from(net.broadcast()) & !(size - 1);
                text.push_str(&format!(
                    r#","SubnetMin":"{}","SubnetMax":"{}""#,
                    Ipv4Addr::from(base + size),
                    Ipv4Addr::from(last)
                ));
            }
            text.push_str(&format!(r#","Backend":{{"Type":"{ty}"{opts}}}}}"#));
            (text, net, effective, ty)
        })
}

// ===== lease values =====

proptest! {
    #[test]
    fn lease_parse_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = LeaseAttrs::parse(&bytes);
    }

    #[test]
    fn lease_parse_never_panics_on_jsonish_text(text in jsonish()) {
        if let Ok(attrs) = LeaseAttrs::parse(text.as_bytes()) {
            // Whatever parses is written back in flannel's form and reads back as itself.
            let again = LeaseAttrs::parse(attrs.to_json().as_bytes());
            prop_assert_eq!(again.as_ref().ok(), Some(&attrs), "{}", attrs.to_json());
        }
    }

    #[test]
    fn lease_round_trips_through_flannels_json(attrs in lease_attrs()) {
        let json = attrs.to_json();
        let back = LeaseAttrs::parse(json.as_bytes());
        prop_assert_eq!(back.as_ref().ok(), Some(&attrs), "{}", json);
        // Stable: writing what was read gives the same bytes.
        prop_assert_eq!(back.unwrap().to_json(), json);
    }

    #[test]
    fn lease_keys_are_case_insensitive(attrs in lease_attrs(), flips in any::<u64>()) {
        // Go's encoding/json matches keys case-insensitively: change the case of key letters.
        let json = attrs.to_json();
        let mut out = String::new();
        let mut in_key = false;
        let mut after_colon = true;
        let mut i = 0u32;
        for c in json.chars() {
            match c {
                '"' if after_colon => { in_key = !in_key; if !in_key { after_colon = false; } out.push(c); continue; }
                ':' => after_colon = false,
                ',' | '{' => after_colon = true,
                _ => {}
            }
            if in_key && c.is_ascii_alphabetic() && (flips >> (i % 64)) & 1 == 1 {
                out.push(if c.is_ascii_uppercase() { c.to_ascii_lowercase() } else { c.to_ascii_uppercase() });
            } else {
                out.push(c);
            }
            i += 1;
        }
        let back = LeaseAttrs::parse(out.as_bytes());
        prop_assert!(back.is_ok(), "{}: {:?}", out, back.err());
        let back = back.unwrap();
        // BackendData is kept as received (raw text), so compare what it means.
        prop_assert_eq!(back.public_ip, attrs.public_ip, "{}", out);
        prop_assert_eq!(back.public_ipv6, attrs.public_ipv6, "{}", out);
        prop_assert_eq!(&back.backend_type, &attrs.backend_type, "{}", out);
        prop_assert_eq!(back.vxlan_data().ok(), attrs.vxlan_data().ok(), "{}", out);
    }

    #[test]
    fn vxlan_data_round_trips(vni in 1u32..(1 << 24), mac in mac()) {
        let data = VxlanData { vni, vtep_mac: mac };
        let attrs = LeaseAttrs::vxlan(Ipv4Addr::new(198, 18, 0, 1), data);
        prop_assert_eq!(attrs.vxlan_data().ok().flatten(), Some(data));
    }
}

// ===== subnet keys =====

proptest! {
    #[test]
    fn subnet_key_display_parse_round_trip(key in subnet_key()) {
        let text = key.to_string();
        let back: Result<SubnetKey, _> = text.parse();
        prop_assert_eq!(back.as_ref().ok(), Some(&key), "{}", text);
        // The full etcd key too.
        let full = key.etcd_key("/coreos.com/network");
        prop_assert_eq!(SubnetKey::from_etcd_key(&full, "/coreos.com/network").ok(), Some(key));
    }

    /// A kube-mode IPv6-only key round-trips too, and is never taken for an etcd key.
    #[test]
    fn ipv6_only_key_round_trips_and_is_no_etcd_key(v6 in v6_net()) {
        let key = SubnetKey::v6_only(v6);
        let text = key.to_string();
        prop_assert_eq!(text.parse::<SubnetKey>().ok(), Some(key), "{}", text);
        let full = key.etcd_key("/coreos.com/network");
        prop_assert!(SubnetKey::from_etcd_key(&full, "/coreos.com/network").is_err(), "{}", full);
    }

    /// A dual-stack key with its IPv6 part in upper case is not flannel's (its parser takes
    /// lower-case hex only, and Go writes lower case): refused, never read as another subnet.
    #[test]
    fn dual_stack_keys_with_upper_case_hex_are_refused(v4 in v4_net(), v6 in v6_net()) {
        let key = SubnetKey::dual(v4, v6);
        let text = key.to_string();
        let upper = text.to_uppercase();
        prop_assume!(upper != text);
        prop_assert!(upper.parse::<SubnetKey>().is_err(), "{} was accepted", upper);
    }

    #[test]
    fn subnet_key_parse_never_panics_and_is_canonical(text in "[0-9a-f.:&/-]{0,60}") {
        if let Ok(key) = text.parse::<SubnetKey>() {
            // Anything accepted is exactly the canonical spelling (so one subnet has one key).
            prop_assert_eq!(key.to_string(), text);
        }
    }

    #[test]
    fn subnet_key_parse_never_panics_on_any_text(text in "\\PC{0,80}") {
        let _ = text.parse::<SubnetKey>();
        let _ = SubnetKey::from_etcd_key(&text, "/coreos.com/network");
    }
}

// ===== configs =====

proptest! {
    #[test]
    fn config_parse_never_panics_on_any_text(text in "\\PC{0,200}") {
        let _ = NetConf::parse(&text);
        let _ = NetConf::parse_all(&text);
    }

    #[test]
    fn config_parse_never_panics_on_jsonish_text(text in jsonish()) {
        let _ = NetConf::parse(&text);
        let _ = NetConf::parse_all(&text);
    }

    #[test]
    fn valid_configs_validate((text, net, len, ty) in valid_config()) {
        let parsed = NetConf::parse(&text);
        prop_assert!(parsed.is_ok(), "{} rejected: {:?}", text, parsed.err());
        let conf = parsed.unwrap().conf;
        prop_assert_eq!(conf.network, Some(net), "{}", text);
        prop_assert_eq!(conf.subnet_len, len, "{}", text);
        prop_assert_eq!(conf.backend.type_name(), ty, "{}", text);
        prop_assert!(conf.subnet_min <= conf.subnet_max, "{}", text);
        prop_assert!(net.contains(&conf.subnet_min) && net.contains(&conf.subnet_max), "{}", text);
        prop_assert!(conf.subnet_count() >= 1, "{}", text);
        if let BackendConf::Vxlan(v) = &conf.backend {
            prop_assert!(v.vni >= 1 && v.vni < (1 << 24));
        }
    }

    #[test]
    fn out_of_range_subnet_len_is_refused_naming_the_field(
        (text, _, _, _) in valid_config(),
        bad in 31u64..1000,
    ) {
        // Replace or add SubnetLen with a value flanneld refuses.
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut obj = v.as_object().unwrap().clone();
        obj.insert("SubnetLen".into(), bad.into());
        let text = serde_json::Value::Object(obj).to_string();
        let err = NetConf::parse(&text).err().map(|e| e.to_string()).unwrap_or_default();
        prop_assert!(err.contains("SubnetLen") && err.contains(&bad.to_string()), "{}: {:?}", text, err);
    }
}

// ===== subnet.env =====

proptest! {
    #[test]
    fn subnet_env_round_trips(net in v4_net(), sub in v4_net(), mtu in 68u32..65536, masq in any::<bool>()) {
        let env = SubnetEnv {
            network: Some(net),
            subnet: Some(sub),
            ipv6_network: None,
            ipv6_subnet: None,
            more_networks: Vec::new(),
            more_ipv6_networks: Vec::new(),
            mtu,
            ipmasq: masq,
        };
        let text = env.render();
        let back = SubnetEnv::parse(&text);
        prop_assert!(back.is_ok(), "{}: {:?}", text, back.err());
        let back = back.unwrap();
        prop_assert_eq!(back.mtu, mtu);
        prop_assert_eq!(back.ipmasq, masq);
        prop_assert_eq!(back.network, Some(net));
    }

    #[test]
    fn dual_stack_subnet_env_round_trips(
        net in v4_net(), sub in v4_net(), net6 in v6_net(), sub6 in v6_net(), mtu in 68u32..65536,
    ) {
        let env = SubnetEnv {
            network: Some(net),
            subnet: Some(sub),
            ipv6_network: Some(net6),
            ipv6_subnet: Some(sub6),
            more_networks: Vec::new(),
            more_ipv6_networks: Vec::new(),
            mtu,
            ipmasq: true,
        };
        let text = env.render();
        let back = SubnetEnv::parse(&text);
        prop_assert!(back.is_ok(), "{}: {:?}", text, back.err());
        let back = back.unwrap();
        prop_assert_eq!(back.ipv6_network, Some(net6));
        // FLANNEL_IPV6_SUBNET is the first address with the prefix length; read back as the
        // subnet (a /128 has no room for it and is written as the address itself).
        if sub6.prefix_len() < 128 {
            prop_assert_eq!(net_conf::subnet_env::previous_ipv6_subnet(&text), Some(sub6));
        }
    }

    #[test]
    fn subnet_env_parse_never_panics(text in "\\PC{0,200}") {
        let _ = SubnetEnv::parse(&text);
        let _ = net_conf::previous_subnet(&text);
    }
}

/// Random dual-stack leases already in etcd (some overlapping each other, some outside the
/// ranges), never enough to fill either network: 40 at most, each covering at most one /24 of
/// the 63 and four /64s of the 255 free.
fn dual_leases() -> impl Strategy<Value = Vec<ExistingLease>> {
    proptest::collection::vec((0u32..64, 24u8..=26, 0u128..260, 62u8..=66, ipv4()), 0..40).prop_map(
        |items| {
            items
                .into_iter()
                .map(|(i, len, j, len6, ip)| {
                    let v4 = Ipv4Net::new(Ipv4Addr::from(0x0af4_0000 + (i << 8)), len)
                        .unwrap()
                        .trunc();
                    let base6 = u128::from("fd00:10:244::".parse::<Ipv6Addr>().unwrap());
                    let v6 = Ipv6Net::new(Ipv6Addr::from(base6 + (j << 64)), len6)
                        .unwrap()
                        .trunc();
                    ExistingLease {
                        key: SubnetKey::dual(v4, v6),
                        public_ip: Some(ip),
                    }
                })
                .collect()
        },
    )
}

proptest! {
    /// Whatever is in etcd, a new dual-stack lease fits the config in both families and
    /// overlaps no existing lease in either.
    #[test]
    fn dual_stack_allocation_fits_and_never_overlaps(
        existing in dual_leases(), p4 in any::<usize>(), p6 in any::<usize>(),
    ) {
        let conf = NetConf::parse(
            r#"{"Network":"10.244.0.0/18","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}"#,
        ).unwrap().conf;
        let mut picks = [p4, p6].into_iter();
        let me = Ipv4Addr::new(203, 0, 113, 1);
        let got = choose(&conf, &existing, me, Previous::none(), &mut |_| picks.next().unwrap_or(0));
        match got {
            Ok(Choice::Create(new)) => {
                let v6 = new.key.v6.expect("a v6 part");
                prop_assert!(is_key_compatible(&conf, &new.key), "{}", new.key);
                for l in &existing {
                    let (a, b) = (l.key.v4.unwrap(), new.key.v4.unwrap());
                    prop_assert!(!(a.contains(&b.network()) || b.contains(&a.network())), "{} overlaps {}", new.key, l.key);
                    let o = l.key.v6.unwrap();
                    prop_assert!(!(o.contains(&v6.network()) || v6.contains(&o.network())), "{} overlaps {}", new.key, l.key);
                }
            }
            Err(e) => prop_assert!(false, "{e} with {} leases", existing.len()),
            Ok(other) => prop_assert!(false, "{other:?}"),
        }
    }
}
