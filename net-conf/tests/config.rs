//! net-conf.json parsing: fixtures (flannel's documented examples and real-world spellings),
//! defaults, every validation error with flannel's exact text, and JSON type errors.
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::{Ipv4Net, Ipv6Net};
use net_conf::{BackendConf, ConfError, IpIpConf, NetConf, Parsed, VxlanConf};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn parse_fixture(name: &str) -> Parsed {
    NetConf::parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn parse(text: &str) -> Parsed {
    NetConf::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn net4(s: &str) -> Ipv4Net {
    s.parse().expect("test CIDR")
}

fn ip4(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().expect("test address")
}

/// The IPv4 part of a parsed config: (network, subnet_len, min, max).
fn v4(conf: &NetConf) -> (Ipv4Net, u8, Ipv4Addr, Ipv4Addr) {
    (
        conf.network.expect("IPv4 network"),
        conf.subnet_len,
        conf.subnet_min,
        conf.subnet_max,
    )
}

const FIXTURES_TESTED: &[&str] = &[
    "flannel-doc-vxlan.json",
    "kube-flannel.json",
    "upstream-lowercase-network.json",
    "host-gw.json",
    "ipip-directrouting.json",
    "vxlan-Directrouting.json",
    "vxlan-odd-spellings.json",
    "custom-subnets.json",
    "doc-subnetlen-20.json",
    "doc-udp.json",
    "dual-stack.json",
    "ipv6-only.json",
    "unknown-keys.json",
    "host-bits.json",
    "small-network.json",
];

#[test]
fn every_fixture_has_a_test() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    let mut tested: Vec<String> = FIXTURES_TESTED.iter().map(|s| s.to_string()).collect();
    tested.sort();
    assert_eq!(names, tested);
}

#[test]
fn flannel_documented_vxlan_example() {
    let p = parse_fixture("flannel-doc-vxlan.json");
    assert_eq!(
        p.conf,
        NetConf {
            enable_ipv4: true,
            enable_ipv6: false,
            enable_nftables: false,
            network: Some(net4("10.244.0.0/16")),
            subnet_len: 24,
            subnet_min: ip4("10.244.1.0"),
            subnet_max: ip4("10.244.255.0"),
            ipv6_network: None,
            ipv6_subnet_len: 0,
            ipv6_subnet_min: None,
            ipv6_subnet_max: None,
            backend: BackendConf::Vxlan(VxlanConf::default()),
        }
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(p.conf.backend.type_name(), "vxlan");
    assert_eq!(
        VxlanConf::default().to_string(),
        "VNI=1 Port=0 GBP=false Learning=false DirectRouting=false"
    );
    assert_eq!(p.conf.subnet_count(), 255);
    assert_eq!(p.conf.subnet_size(), 256);
}

#[test]
fn kube_flannel_manifest_config() {
    let p = parse_fixture("kube-flannel.json");
    assert_eq!(p.conf, parse_fixture("flannel-doc-vxlan.json").conf);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn upstream_lowercase_network_defaults() {
    // flannel's config_test.go: {"network":"10.3.0.0/16"} → SubnetLen 24, Min 10.3.1.0,
    // Max 10.3.255.0. Without Backend flanneld would pick udp; weft picks vxlan and says so.
    let p = parse_fixture("upstream-lowercase-network.json");
    assert_eq!(
        v4(&p.conf),
        (net4("10.3.0.0/16"), 24, ip4("10.3.1.0"), ip4("10.3.255.0"))
    );
    assert_eq!(p.conf.backend, BackendConf::Vxlan(VxlanConf::default()));
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    let w = &p.warnings[0];
    assert!(w.contains("no Backend"), "{w}");
    assert!(
        w.contains("flanneld would silently use the udp backend"),
        "{w}"
    );
    assert!(w.contains("weft uses vxlan"), "{w}");
}

#[test]
fn host_gw_has_no_options() {
    let p = parse_fixture("host-gw.json");
    assert_eq!(p.conf.backend, BackendConf::HostGw);
    assert_eq!(p.conf.backend.type_name(), "host-gw");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn ipip_with_direct_routing() {
    let p = parse_fixture("ipip-directrouting.json");
    assert_eq!(
        p.conf.backend,
        BackendConf::IpIp(IpIpConf {
            direct_routing: true
        })
    );
    assert_eq!(p.conf.backend.type_name(), "ipip");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn vxlan_directrouting_spelling() {
    let p = parse_fixture("vxlan-Directrouting.json");
    assert_eq!(
        p.conf.backend,
        BackendConf::Vxlan(VxlanConf {
            vni: 42,
            direct_routing: true,
            ..VxlanConf::default()
        })
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn vxlan_odd_spellings_everywhere() {
    let p = parse_fixture("vxlan-odd-spellings.json");
    assert!(p.conf.enable_nftables);
    assert_eq!(p.conf.network, Some(net4("10.244.0.0/16")));
    assert_eq!(
        p.conf.backend,
        BackendConf::Vxlan(VxlanConf {
            vni: 4096,
            port: 4789,
            gbp: true,
            learning: true,
            mtu: Some(9000),
            direct_routing: true,
        })
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn key_case_variants_all_match() {
    for key in ["network", "Network", "NETWORK", "nEtWoRk"] {
        let p = parse(&format!(
            r#"{{"{key}":"10.1.0.0/16","Backend":{{"Type":"host-gw"}}}}"#
        ));
        assert_eq!(p.conf.network, Some(net4("10.1.0.0/16")), "{key}");
    }
    for key in [
        "DirectRouting",
        "Directrouting",
        "directRouting",
        "directrouting",
    ] {
        let p = parse(&format!(
            r#"{{"Network":"10.1.0.0/16","Backend":{{"Type":"vxlan","{key}":true}}}}"#
        ));
        let BackendConf::Vxlan(v) = p.conf.backend else {
            panic!("not vxlan")
        };
        assert!(v.direct_routing, "{key}");
    }
    for key in ["VNI", "vni", "Vni"] {
        let p = parse(&format!(
            r#"{{"Network":"10.1.0.0/16","Backend":{{"Type":"vxlan","{key}":7}}}}"#
        ));
        let BackendConf::Vxlan(v) = p.conf.backend else {
            panic!("not vxlan")
        };
        assert_eq!(v.vni, 7, "{key}");
    }
    // Go folds the Kelvin sign and the long s too.
    let p = parse(
        "{\"Network\":\"10.1.0.0/16\",\"Bac\u{212A}end\":{\"\u{017F}ubnet\":1,\"Type\":\"ipip\"}}",
    );
    assert_eq!(p.conf.backend, BackendConf::IpIp(IpIpConf::default()));
}

#[test]
fn duplicate_spellings_last_wins_with_warning() {
    let p =
        parse(r#"{"Network":"10.1.0.0/16","network":"10.2.0.0/16","Backend":{"Type":"host-gw"}}"#);
    assert_eq!(p.conf.network, Some(net4("10.2.0.0/16")));
    assert_eq!(
        p.warnings,
        vec![r#"config sets Network more than once ("Network", "network"); the last one wins"#]
    );
}

#[test]
fn custom_subnet_len_min_max() {
    let p = parse_fixture("custom-subnets.json");
    assert_eq!(
        v4(&p.conf),
        (
            net4("10.10.0.0/16"),
            26,
            ip4("10.10.4.0"),
            ip4("10.10.7.192")
        )
    );
    assert_eq!(p.conf.subnet_count(), 16);
    assert_eq!(p.conf.subnet_size(), 64);
}

#[test]
fn documented_subnetlen_20_example() {
    // Documentation/configuration.md's example, with vxlan in place of udp.
    let p = parse_fixture("doc-subnetlen-20.json");
    assert_eq!(
        v4(&p.conf),
        (net4("10.0.0.0/8"), 20, ip4("10.10.0.0"), ip4("10.99.0.0"))
    );
    assert_eq!(
        p.conf.backend,
        BackendConf::Vxlan(VxlanConf {
            port: 7890,
            ..VxlanConf::default()
        })
    );
}

#[test]
fn documented_udp_example_is_unsupported() {
    let err = NetConf::parse(&fixture("doc-udp.json")).expect_err("udp is not implemented");
    assert_eq!(
        err,
        ConfError::Invalid {
            field: "Backend.Type".into(),
            value: "udp".into(),
            message: "unsupported backend type: udp (weft supports vxlan, host-gw, ipip)".into(),
        }
    );
}

#[test]
fn dual_stack_defaults() {
    let p = parse_fixture("dual-stack.json");
    assert!(p.conf.enable_ipv4 && p.conf.enable_ipv6);
    assert_eq!(
        p.conf.ipv6_network,
        Some("2001:cafe:42::/56".parse::<Ipv6Net>().expect("cidr"))
    );
    assert_eq!(p.conf.ipv6_subnet_len, 64);
    assert_eq!(p.conf.ipv6_subnet_min, Some(ip6("2001:cafe:42:1::")));
    assert_eq!(p.conf.ipv6_subnet_max, Some(ip6("2001:cafe:42:ff::")));
    assert_eq!(p.conf.network, Some(net4("10.42.0.0/16")));
}

#[test]
fn ipv6_only_documented_range() {
    // docs/flannel-compat.md §2: fc00::/48 → fc00:0:0:1:: … fc00:0:0:ffff::
    let p = parse_fixture("ipv6-only.json");
    assert!(!p.conf.enable_ipv4);
    assert_eq!(p.conf.network, None);
    assert_eq!(p.conf.subnet_count(), 0);
    assert_eq!(p.conf.ipv6_subnet_len, 64);
    assert_eq!(p.conf.ipv6_subnet_min, Some(ip6("fc00:0:0:1::")));
    assert_eq!(p.conf.ipv6_subnet_max, Some(ip6("fc00:0:0:ffff::")));
}

#[test]
fn ipv6_subnet_len_defaults_and_custom() {
    let p = parse(
        r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/120","Backend":{"Type":"host-gw"}}"#,
    );
    assert_eq!(p.conf.ipv6_subnet_len, 122);
    assert_eq!(p.conf.ipv6_subnet_min, Some(ip6("fd00::40")));
    assert_eq!(p.conf.ipv6_subnet_max, Some(ip6("fd00::c0")));
    let p = parse(
        r#"{"Network":"10.0.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetLen":80,
            "IPv6SubnetMin":"fd00:0:0:1::","IPv6SubnetMax":null,"Backend":{"Type":"host-gw"}}"#,
    );
    assert_eq!(p.conf.ipv6_subnet_len, 80);
    assert_eq!(p.conf.ipv6_subnet_min, Some(ip6("fd00:0:0:1::")));
    assert_eq!(p.conf.ipv6_subnet_max, Some(ip6("fd00:0:0:ffff:ffff::")));
}

#[test]
fn ipv6_settings_ignored_when_disabled() {
    let p = parse(
        r#"{"Network":"10.0.0.0/16","IPv6Network":"fd00::/48","IPv6SubnetLen":200,"Backend":{"Type":"host-gw"}}"#,
    );
    assert_eq!(p.conf.ipv6_network, None);
    assert_eq!(p.conf.ipv6_subnet_len, 0);
    // …but, as in Go, they must still decode.
    let err = NetConf::parse(r#"{"Network":"10.0.0.0/16","IPv6Network":"nope"}"#)
        .expect_err("bad IPv6Network");
    assert!(
        matches!(&err, ConfError::Invalid { field, .. } if field == "IPv6Network"),
        "{err:?}"
    );
}

#[test]
fn unknown_keys_are_warned_with_their_path() {
    let p = parse_fixture("unknown-keys.json");
    assert_eq!(p.conf.backend, BackendConf::HostGw);
    assert_eq!(
        p.warnings,
        vec![
            r#"unknown key "Foo" in config ignored"#,
            r#"unknown key "BackendType" in config ignored"#,
            r#"unknown key "DirectRouting" in Backend ignored"#,
        ]
    );
}

#[test]
fn network_host_bits_are_masked() {
    let p = parse_fixture("host-bits.json");
    assert_eq!(
        v4(&p.conf),
        (
            net4("10.244.0.0/16"),
            24,
            ip4("10.244.1.0"),
            ip4("10.244.255.0")
        )
    );
    assert_eq!(
        p.warnings,
        vec!["Network 10.244.7.9/16 has host bits set; using 10.244.0.0/16 (as flannel does)"]
    );
}

#[test]
fn subnet_len_defaults_by_prefix() {
    // ≤ /22 → 24; else prefix + 2 (up to /28).
    let p = parse_fixture("small-network.json");
    assert_eq!(
        v4(&p.conf),
        (net4("10.0.0.0/26"), 28, ip4("10.0.0.16"), ip4("10.0.0.48"))
    );
    for (net, len) in [
        ("10.0.0.0/8", 24),
        ("10.0.0.0/22", 24),
        ("10.0.0.0/23", 25),
        ("10.0.0.0/28", 30),
        ("0.0.0.0/1", 24),
    ] {
        let p = parse(&format!(
            r#"{{"Network":"{net}","Backend":{{"Type":"host-gw"}}}}"#
        ));
        assert_eq!(p.conf.subnet_len, len, "{net}");
    }
    // A /0 network is "not defined" for flannel, but every other prefix works, even /1.
    let p = parse(r#"{"Network":"128.0.0.0/1","Backend":{"Type":"host-gw"}}"#);
    assert_eq!(p.conf.subnet_min, ip4("128.0.1.0"));
    assert_eq!(p.conf.subnet_max, ip4("255.255.255.0"));
}

#[test]
fn explicit_zero_and_null_mean_default() {
    let p = parse(
        r#"{"Network":"10.3.0.0/16","SubnetLen":0,"SubnetMin":"0.0.0.0","EnableIPv4":null,
            "Backend":{"Type":"vxlan","VNI":null,"MTU":0}}"#,
    );
    assert_eq!(
        v4(&p.conf),
        (net4("10.3.0.0/16"), 24, ip4("10.3.1.0"), ip4("10.3.255.0"))
    );
    assert!(p.conf.enable_ipv4);
    assert_eq!(p.conf.backend, BackendConf::Vxlan(VxlanConf::default()));
}

#[test]
fn explicit_first_subnet_is_allowed() {
    let p = parse(r#"{"Network":"10.3.0.0/16","SubnetMin":"10.3.0.0","Backend":{"Type":"vxlan"}}"#);
    assert_eq!(p.conf.subnet_min, ip4("10.3.0.0"));
    assert_eq!(p.conf.subnet_count(), 256);
}

#[test]
fn backend_type_is_case_insensitive() {
    for t in ["VXLAN", "Vxlan", "vxlan"] {
        let p = parse(&format!(
            r#"{{"Network":"10.1.0.0/16","Backend":{{"Type":"{t}"}}}}"#
        ));
        assert_eq!(
            p.conf.backend,
            BackendConf::Vxlan(VxlanConf::default()),
            "{t}"
        );
    }
    let p = parse(r#"{"Network":"10.1.0.0/16","Backend":{"type":"Host-GW"}}"#);
    assert_eq!(p.conf.backend, BackendConf::HostGw);
}

fn invalid(text: &str) -> (String, String, String) {
    match NetConf::parse(text) {
        Ok(p) => panic!("{text}: accepted as {:?}", p.conf),
        Err(ConfError::Invalid {
            field,
            value,
            message,
        }) => (field, value, message),
        Err(e) => panic!("{text}: expected Invalid, got {e:?}"),
    }
}

/// Every validation error of docs/flannel-compat.md §2 (and weft's backend checks): (config, field,
/// value, message).
const INVALID: &[(&str, &str, &str, &str)] = &[
    // CheckNetworkConfig, IPv4.
    (
        r#"{}"#,
        "Network",
        "",
        "please define a correct Network parameter in the flannel config",
    ),
    (
        r#"{"Network":"0.0.0.0/0"}"#,
        "Network",
        "0.0.0.0/0",
        "please define a correct Network parameter in the flannel config",
    ),
    (
        r#"{"Network":"10.0.0.0/16","SubnetLen":31}"#,
        "SubnetLen",
        "31",
        "SubnetLen must be less than /31",
    ),
    (
        r#"{"Network":"10.0.0.0/16","SubnetLen":300}"#,
        "SubnetLen",
        "300",
        "SubnetLen must be less than /31",
    ),
    (
        r#"{"Network":"10.0.0.0/16","SubnetLen":17}"#,
        "SubnetLen",
        "17",
        "network must be able to accommodate at least four subnets",
    ),
    (
        r#"{"Network":"10.0.0.0/16","SubnetLen":8}"#,
        "SubnetLen",
        "8",
        "network must be able to accommodate at least four subnets",
    ),
    (
        r#"{"Network":"10.0.0.0/29"}"#,
        "Network",
        "10.0.0.0/29",
        "network is too small. Minimum useful network prefix is /28",
    ),
    (
        r#"{"Network":"10.0.0.0/32"}"#,
        "Network",
        "10.0.0.0/32",
        "network is too small. Minimum useful network prefix is /28",
    ),
    (
        r#"{"Network":"10.3.0.0/16","SubnetMin":"10.4.0.0"}"#,
        "SubnetMin",
        "10.4.0.0",
        "SubnetMin is not in the range of the Network",
    ),
    (
        r#"{"Network":"10.3.0.0/16","SubnetMax":"10.2.255.0"}"#,
        "SubnetMax",
        "10.2.255.0",
        "SubnetMax is not in the range of the Network",
    ),
    (
        r#"{"Network":"10.3.0.0/16","SubnetMin":"10.3.1.5"}"#,
        "SubnetMin",
        "10.3.1.5",
        "SubnetMin is not on a SubnetLen boundary: 10.3.1.5",
    ),
    (
        r#"{"Network":"10.3.0.0/16","SubnetLen":26,"SubnetMax":"10.3.7.32"}"#,
        "SubnetMax",
        "10.3.7.32",
        "SubnetMax is not on a SubnetLen boundary: 10.3.7.32",
    ),
    (
        r#"{"Network":"10.3.0.0/16","SubnetMin":"10.3.9.0","SubnetMax":"10.3.8.0"}"#,
        "SubnetMin",
        "10.3.9.0",
        "SubnetMin is greater than SubnetMax (10.3.8.0)",
    ),
    // Values that do not parse.
    (
        r#"{"Network":"foo"}"#,
        "Network",
        "foo",
        "invalid CIDR address: foo",
    ),
    (
        r#"{"Network":"10.0.0.0"}"#,
        "Network",
        "10.0.0.0",
        "invalid CIDR address: 10.0.0.0",
    ),
    (
        r#"{"Network":"10.0.0.0/33"}"#,
        "Network",
        "10.0.0.0/33",
        "invalid CIDR address: 10.0.0.0/33",
    ),
    (
        r#"{"Network":"fd00::/64"}"#,
        "Network",
        "fd00::/64",
        "Network must be an IPv4 CIDR: fd00::/64",
    ),
    (
        r#"{"Network":"10.3.0.0/16","SubnetMin":"10.3.1"}"#,
        "SubnetMin",
        "10.3.1",
        "invalid IPv4 address: 10.3.1",
    ),
    // CheckNetworkConfig, IPv6.
    (
        r#"{"Network":"10.3.0.0/16","EnableIPv6":true}"#,
        "IPv6Network",
        "",
        "please define a correct IPv6Network parameter in the flannel config",
    ),
    (
        r#"{"Network":"10.3.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetLen":127}"#,
        "IPv6SubnetLen",
        "127",
        "SubnetLen must be less than /127",
    ),
    (
        r#"{"Network":"10.3.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetLen":49}"#,
        "IPv6SubnetLen",
        "49",
        "IPv6Network must be able to accommodate at least four subnets",
    ),
    (
        r#"{"Network":"10.3.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/125"}"#,
        "IPv6Network",
        "fd00::/125",
        "IPv6Network is too small. Minimum useful network prefix is /124",
    ),
    (
        r#"{"Network":"10.3.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMin":"fd01::"}"#,
        "IPv6SubnetMin",
        "fd01::",
        "IPv6SubnetMin is not in the range of the IPv6Network",
    ),
    (
        r#"{"Network":"10.3.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMax":"fd01::"}"#,
        "IPv6SubnetMax",
        "fd01::",
        "IPv6SubnetMax is not in the range of the IPv6Network",
    ),
    (
        r#"{"Network":"10.3.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMin":"fd00:0:0:1::1"}"#,
        "IPv6SubnetMin",
        "fd00:0:0:1::1",
        "IPv6SubnetMin is not on a SubnetLen boundary: fd00:0:0:1::1",
    ),
    (
        r#"{"Network":"10.3.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMax":"fd00:0:0:2:8000::"}"#,
        "IPv6SubnetMax",
        "fd00:0:0:2:8000::",
        "IPv6SubnetMax is not on a SubnetLen boundary: fd00:0:0:2:8000::",
    ),
    (
        r#"{"EnableIPv4":false}"#,
        "EnableIPv4",
        "false",
        "at least one of EnableIPv4 and EnableIPv6 must be true",
    ),
    // Backend type.
    (
        r#"{"Network":"10.3.0.0/16","Backend":{}}"#,
        "Backend.Type",
        "",
        "Backend.Type is missing (weft supports vxlan, host-gw, ipip)",
    ),
    (
        r#"{"Network":"10.3.0.0/16","Backend":{"VNI":1}}"#,
        "Backend.Type",
        "",
        "Backend.Type is missing (weft supports vxlan, host-gw, ipip)",
    ),
    (
        r#"{"Network":"10.3.0.0/16","Backend":{"Type":""}}"#,
        "Backend.Type",
        "",
        "Backend.Type is missing (weft supports vxlan, host-gw, ipip)",
    ),
    (
        r#"{"Network":"10.3.0.0/16","Backend":null}"#,
        "Backend.Type",
        "",
        "Backend.Type is missing (weft supports vxlan, host-gw, ipip)",
    ),
    (
        r#"{"Network":"10.3.0.0/16","Backend":{"Type":"udp"}}"#,
        "Backend.Type",
        "udp",
        "unsupported backend type: udp (weft supports vxlan, host-gw, ipip)",
    ),
    (
        r#"{"Network":"10.3.0.0/16","Backend":{"Type":"WireGuard"}}"#,
        "Backend.Type",
        "WireGuard",
        "unsupported backend type: wireguard (weft supports vxlan, host-gw, ipip)",
    ),
    (
        r#"{"Network":"10.3.0.0/16","Backend":{"Type":"ipsec"}}"#,
        "Backend.Type",
        "ipsec",
        "unsupported backend type: ipsec (weft supports vxlan, host-gw, ipip)",
    ),
    (
        r#"{"Network":"10.3.0.0/16","Backend":{"Type":"alloc"}}"#,
        "Backend.Type",
        "alloc",
        "unsupported backend type: alloc (weft supports vxlan, host-gw, ipip)",
    ),
    (
        r#"{"Network":"10.3.0.0/16","Backend":{"Type":"extension"}}"#,
        "Backend.Type",
        "extension",
        "unsupported backend type: extension (weft supports vxlan, host-gw, ipip)",
    ),
    (
        r#"{"Network":"10.3.0.0/16","Backend":{"Type":"tencent-vpc"}}"#,
        "Backend.Type",
        "tencent-vpc",
        "unsupported backend type: tencent-vpc (weft supports vxlan, host-gw, ipip)",
    ),
    (
        r#"{"Network":"10.3.0.0/16","Backend":{"Type":"aws-vpc"}}"#,
        "Backend.Type",
        "aws-vpc",
        "unknown backend type: aws-vpc",
    ),
    (
        r#"{"Network":"10.3.0.0/16","Backend":{"Type":"hostgw"}}"#,
        "Backend.Type",
        "hostgw",
        "unknown backend type: hostgw",
    ),
    // Backend options.
    (
        r#"{"Network":"10.3.0.0/16","Backend":{"Type":"vxlan","VNI":0}}"#,
        "Backend.VNI",
        "0",
        "VNI must be between 1 and 16777215",
    ),
    (
        r#"{"Network":"10.3.0.0/16","Backend":{"Type":"vxlan","vni":16777216}}"#,
        "Backend.VNI",
        "16777216",
        "VNI must be between 1 and 16777215",
    ),
    (
        r#"{"Network":"10.3.0.0/16","Backend":{"Type":"vxlan","VNI":-1}}"#,
        "Backend.VNI",
        "-1",
        "VNI must be between 1 and 16777215",
    ),
    (
        r#"{"Network":"10.3.0.0/16","Backend":{"Type":"vxlan","Port":65536}}"#,
        "Backend.Port",
        "65536",
        "Port must be between 0 and 65535 (0 = the kernel default, 8472)",
    ),
    (
        r#"{"Network":"10.3.0.0/16","Backend":{"Type":"vxlan","port":-1}}"#,
        "Backend.Port",
        "-1",
        "Port must be between 0 and 65535 (0 = the kernel default, 8472)",
    ),
    (
        r#"{"Network":"10.3.0.0/16","Backend":{"Type":"vxlan","MTU":67}}"#,
        "Backend.MTU",
        "67",
        "MTU must be between 68 and 65535 (or 0 for the interface's MTU)",
    ),
    (
        r#"{"Network":"10.3.0.0/16","Backend":{"Type":"vxlan","mtu":65536}}"#,
        "Backend.MTU",
        "65536",
        "MTU must be between 68 and 65535 (or 0 for the interface's MTU)",
    ),
];

#[test]
fn every_validation_error_with_flannels_text() {
    for (text, field, value, message) in INVALID {
        let got = invalid(text);
        assert_eq!(
            got,
            (field.to_string(), value.to_string(), message.to_string()),
            "{text}"
        );
    }
}

#[test]
fn edge_values_accepted() {
    let p = parse(
        r#"{"Network":"10.3.0.0/16","Backend":{"Type":"vxlan","VNI":16777215,"Port":65535,"MTU":68}}"#,
    );
    assert_eq!(
        p.conf.backend,
        BackendConf::Vxlan(VxlanConf {
            vni: 16_777_215,
            port: 65535,
            mtu: Some(68),
            ..VxlanConf::default()
        })
    );
    // /28 with SubnetLen 30: exactly four subnets.
    let p = parse(r#"{"Network":"10.0.0.0/28","SubnetLen":30,"Backend":{"Type":"host-gw"}}"#);
    assert_eq!(p.conf.subnet_count(), 3);
    assert_eq!(p.conf.subnet_max, ip4("10.0.0.12"));
}

fn syntax(text: &str) -> (String, String) {
    match NetConf::parse(text) {
        Ok(p) => panic!("{text}: accepted as {:?}", p.conf),
        Err(ConfError::Syntax { field, reason }) => (field, reason),
        Err(e) => panic!("{text}: expected Syntax, got {e:?}"),
    }
}

#[test]
fn wrong_json_types_name_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"{"Network":"10.3.0.0/16","Backend":{"Type":"vxlan","VNI":"1"}}"#,
            "Backend.VNI",
            r#"expected an integer, found string "1""#,
        ),
        (
            r#"{"Network":"10.3.0.0/16","Backend":{"Type":"vxlan","vni":1.5}}"#,
            "Backend.VNI",
            "expected an integer, found number 1.5",
        ),
        (
            r#"{"Network":"10.3.0.0/16","Backend":{"Type":"vxlan","Port":true}}"#,
            "Backend.Port",
            "expected an integer, found boolean true",
        ),
        (
            r#"{"Network":"10.3.0.0/16","Backend":{"Type":"vxlan","directrouting":"true"}}"#,
            "Backend.DirectRouting",
            r#"expected true or false, found string "true""#,
        ),
        (
            r#"{"Network":"10.3.0.0/16","Backend":{"Type":"ipip","DirectRouting":1}}"#,
            "Backend.DirectRouting",
            "expected true or false, found number 1",
        ),
        (
            r#"{"Network":"10.3.0.0/16","Backend":{"Type":"vxlan","MTU":[1]}}"#,
            "Backend.MTU",
            "expected an integer, found an array",
        ),
        (
            r#"{"Network":"10.3.0.0/16","SubnetLen":"24"}"#,
            "SubnetLen",
            r#"expected a non-negative integer, found string "24""#,
        ),
        (
            r#"{"Network":"10.3.0.0/16","SubnetLen":-1}"#,
            "SubnetLen",
            "expected a non-negative integer, found number -1",
        ),
        (
            r#"{"Network":"10.3.0.0/16","EnableIPv6":"true"}"#,
            "EnableIPv6",
            r#"expected true or false, found string "true""#,
        ),
        (
            r#"{"Network":10}"#,
            "Network",
            "expected a string, found number 10",
        ),
        (
            r#"{"Network":null}"#,
            "Network",
            "expected a string, found null",
        ),
        (
            r#"{"Network":"10.3.0.0/16","SubnetMin":{}}"#,
            "SubnetMin",
            "expected a string, found an object",
        ),
        (
            r#"{"Network":"10.3.0.0/16","Backend":"vxlan"}"#,
            "Backend",
            r#"error decoding Backend property of config: expected a JSON object, found string "vxlan""#,
        ),
        (
            r#"{"Network":"10.3.0.0/16","Backend":{"Type":1}}"#,
            "Backend.Type",
            "error decoding Backend property of config: expected a string, found number 1",
        ),
        ("[]", "config", "expected a JSON object, found an array"),
    ];
    for (text, field, reason) in cases {
        assert_eq!(
            syntax(text),
            (field.to_string(), reason.to_string()),
            "{text}"
        );
    }
    // Not JSON at all, or JSON followed by junk: the parser's message with its position.
    for text in [
        "",
        "{",
        "{\"Network\":\"10.3.0.0/16\",}",
        "{} x",
        "Network: 10.3.0.0/16",
    ] {
        let (field, reason) = syntax(text);
        assert_eq!(field, "config", "{text}");
        assert!(reason.contains("line 1"), "{text}: {reason}");
    }
}

#[test]
fn error_display_names_field_and_value() {
    let err =
        NetConf::parse(r#"{"Network":"10.3.0.0/16","SubnetMin":"10.3.1.5"}"#).expect_err("invalid");
    assert_eq!(
        err.to_string(),
        r#"SubnetMin is not on a SubnetLen boundary: 10.3.1.5 (field SubnetMin, value "10.3.1.5")"#
    );
    let err = NetConf::parse(r#"{"Network":"10.3.0.0/16","Backend":{"Type":"vxlan","VNI":"x"}}"#)
        .expect_err("syntax");
    assert_eq!(
        err.to_string(),
        r#"invalid network config: Backend.VNI: expected an integer, found string "x""#
    );
}

#[test]
fn syntax_errors_come_before_network_checks() {
    // Go's Unmarshal fails before CheckNetworkConfig runs.
    let (field, _) = syntax(r#"{"SubnetLen":"x"}"#);
    assert_eq!(field, "SubnetLen");
    // The backend type is checked before the network, its options after.
    let (field, _, _) = invalid(r#"{"Backend":{"Type":"udp"}}"#);
    assert_eq!(field, "Backend.Type");
    let (field, _, _) = invalid(r#"{"Backend":{"Type":"vxlan","VNI":0}}"#);
    assert_eq!(field, "Network");
}

#[test]
fn parse_all_reports_every_independent_error() {
    let text = r#"{"Network":"10.3.0.0/16","SubnetMin":"10.3.1.5","SubnetMax":"10.9.0.0",
        "EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetLen":127,
        "Backend":{"Type":"vxlan","VNI":0,"Port":"x","MTU":20}}"#;
    let errors = NetConf::parse_all(text).expect_err("invalid");
    let got: Vec<(String, String)> = errors
        .iter()
        .map(|e| match e {
            ConfError::Syntax { field, reason } => (field.clone(), reason.clone()),
            ConfError::Invalid { field, message, .. } => (field.clone(), message.clone()),
        })
        .collect();
    let expected = [
        (
            "SubnetMin",
            "SubnetMin is not on a SubnetLen boundary: 10.3.1.5",
        ),
        ("SubnetMax", "SubnetMax is not in the range of the Network"),
        ("IPv6SubnetLen", "SubnetLen must be less than /127"),
        ("Backend.Port", r#"expected an integer, found string "x""#),
        ("Backend.VNI", "VNI must be between 1 and 16777215"),
        (
            "Backend.MTU",
            "MTU must be between 68 and 65535 (or 0 for the interface's MTU)",
        ),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(f, m)| (f.to_string(), m.to_string()))
        .collect();
    assert_eq!(got, expected);
    // parse() gives the first of them.
    assert_eq!(NetConf::parse(text), Err(errors[0].clone()));
}

#[test]
fn parse_all_does_not_cascade() {
    // A Network that does not decode is one error, not also "please define a correct Network".
    let errors = NetConf::parse_all(r#"{"Network":5,"SubnetMin":"10.0.0.0"}"#).expect_err("bad");
    assert_eq!(errors.len(), 1, "{errors:?}");
    // Several type errors are all reported.
    let errors =
        NetConf::parse_all(r#"{"Network":5,"SubnetLen":"x","EnableIPv6":1}"#).expect_err("bad");
    let fields: Vec<&str> = errors
        .iter()
        .map(|e| match e {
            ConfError::Syntax { field, .. } | ConfError::Invalid { field, .. } => field.as_str(),
        })
        .collect();
    assert_eq!(fields, ["EnableIPv6", "Network", "SubnetLen"]);
    // A valid config parses the same either way.
    let text = fixture("dual-stack.json");
    assert_eq!(
        NetConf::parse_all(&text),
        NetConf::parse(&text).map_err(|e| vec![e])
    );
}
