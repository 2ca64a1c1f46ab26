//! Subnet keys `10.244.1.0-24`, `10.244.1.0-24&fd00:10:244:1::-64` and (kube mode)
//! IPv6-only `fd00:10:244:1::-64`.
use ipnet::{Ipv4Net, Ipv6Net};
use net_conf::{LeaseError, SubnetKey};

fn key(s: &str) -> SubnetKey {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn v4(s: &str) -> Ipv4Net {
    s.parse().expect("test CIDR")
}

fn v6(s: &str) -> Ipv6Net {
    s.parse().expect("test CIDR")
}

#[test]
fn v4_key_round_trips() {
    let k = key("10.244.1.0-24");
    assert_eq!(k, SubnetKey::new(v4("10.244.1.0/24")));
    assert_eq!(k.to_string(), "10.244.1.0-24");
    assert_eq!(SubnetKey::from(v4("10.0.0.0/8")).to_string(), "10.0.0.0-8");
    assert_eq!(key("0.0.0.0-0").to_string(), "0.0.0.0-0");
    assert_eq!(key("10.244.1.7-32").to_string(), "10.244.1.7-32");
}

#[test]
fn dual_stack_key_round_trips() {
    let k = key("10.244.1.0-24&fd00:10:244:1::-64");
    assert_eq!(k.v4, Some(v4("10.244.1.0/24")));
    assert_eq!(k.v6, Some(v6("fd00:10:244:1::/64")));
    assert_eq!(k.to_string(), "10.244.1.0-24&fd00:10:244:1::-64");
    assert_eq!(
        k,
        SubnetKey::dual(v4("10.244.1.0/24"), v6("fd00:10:244:1::/64"))
    );
}

#[test]
fn ipv6_only_key_round_trips() {
    let k = key("fd00:10:244:1::-64");
    assert_eq!(k, SubnetKey::v6_only(v6("fd00:10:244:1::/64")));
    assert_eq!(k.v4, None);
    assert_eq!(k.to_string(), "fd00:10:244:1::-64");
    assert_eq!(
        k.nets().map(|n| n.to_string()).collect::<Vec<_>>(),
        ["fd00:10:244:1::/64"]
    );
    assert_eq!(k.first().to_string(), "fd00:10:244:1::/64");
    let dual = key("10.244.1.0-24&fd00:10:244:1::-64");
    assert_eq!(dual.first().to_string(), "10.244.1.0/24");
    // Strict as the IPv6 part of a dual-stack key.
    for (s, reason) in [
        (
            "fd00::1-64",
            "fd00::1/64 has host bits set (the subnet is fd00::/64)",
        ),
        ("FD00::-64", "\"FD00::\" is not a lower-case IPv6 address"),
        ("fd00::", "\"fd00::\" has no -<prefix length>"),
        ("&fd00::-64", "\"\" has no -<prefix length>"),
    ] {
        assert_eq!(
            s.parse::<SubnetKey>(),
            Err(LeaseError::Key {
                key: s.to_string(),
                reason: reason.to_string()
            }),
            "{s}"
        );
    }
}

#[test]
fn ipv6_written_in_canonical_form() {
    // A non-compressed spelling parses and is written back compressed, as Go writes it.
    let k = key("10.244.1.0-24&fd00:0010:0244:0001:0000:0000:0000:0000-64");
    assert_eq!(k.to_string(), "10.244.1.0-24&fd00:10:244:1::-64");
    let k = SubnetKey::dual(v4("10.42.0.0/24"), v6("2001:cafe:42::/64"));
    assert_eq!(k.to_string(), "10.42.0.0-24&2001:cafe:42::-64");
    // A single zero group is not compressed (RFC 5952, as Go).
    let k = SubnetKey::dual(v4("10.42.0.0/24"), v6("2001:db8:0:1:1:1:1:0/127"));
    assert_eq!(k.to_string(), "10.42.0.0-24&2001:db8:0:1:1:1:1:0-127");
}

#[test]
fn bad_keys_are_refused_naming_the_key() {
    let cases: &[(&str, &str)] = &[
        ("10.244.1.0-33", "prefix length 33 is greater than 32"),
        ("10.244.1.0-999", "prefix length 999 is greater than 32"),
        ("10.244.1.0-", "prefix length \"\" is not a number"),
        ("10.244.1.0-+4", "prefix length \"+4\" is not a number"),
        ("10.244.1.0-24x", "prefix length \"24x\" is not a number"),
        ("10.244.1.0-24 ", "prefix length \"24 \" is not a number"),
        ("10.244.1.0-0024", "prefix length \"0024\" is not a number"),
        ("10.244.1.0", "\"10.244.1.0\" has no -<prefix length>"),
        ("10.244.1-24", "\"10.244.1\" is not an IPv4 address"),
        ("x10.244.1.0-24", "\"x10.244.1.0\" is not an IPv4 address"),
        ("10.244.1.256-24", "\"10.244.1.256\" is not an IPv4 address"),
        (
            "10.244.1.0-24-24",
            "\"10.244.1.0-24\" is not an IPv4 address",
        ),
        (
            "10.244.1.1-24",
            "10.244.1.1/24 has host bits set (the subnet is 10.244.1.0/24)",
        ),
        ("10.244.1.0-24&", "\"\" has no -<prefix length>"),
        (
            "10.244.1.0-24&fd00::-129",
            "prefix length 129 is greater than 128",
        ),
        (
            "10.244.1.0-24&fd00::-64x",
            "prefix length \"64x\" is not a number",
        ),
        (
            "10.244.1.0-24&FD00::-64",
            "\"FD00::\" is not a lower-case IPv6 address",
        ),
        (
            "10.244.1.0-24&fd00::g-64",
            "\"fd00::g\" is not a lower-case IPv6 address",
        ),
        (
            "10.244.1.0-24&fd00:::-64",
            "\"fd00:::\" is not an IPv6 address",
        ),
        (
            "10.244.1.0-24&fd00::1-64",
            "fd00::1/64 has host bits set (the subnet is fd00::/64)",
        ),
        (
            "10.244.1.0-24&fd00::-64&fd01::-64",
            "\"fd00::-64&fd01::\" is not a lower-case IPv6 address",
        ),
        ("", "\"\" has no -<prefix length>"),
        ("010.244.1.0-24", "\"010.244.1.0\" is not an IPv4 address"),
    ];
    for (s, reason) in cases {
        assert_eq!(
            s.parse::<SubnetKey>(),
            Err(LeaseError::Key {
                key: s.to_string(),
                reason: reason.to_string()
            }),
            "{s}"
        );
    }
    let err = "10.244.1.1-24".parse::<SubnetKey>().expect_err("host bits");
    assert_eq!(
        err.to_string(),
        "malformed subnet key \"10.244.1.1-24\": 10.244.1.1/24 has host bits set (the subnet is 10.244.1.0/24)"
    );
}

#[test]
fn from_etcd_key_checks_the_prefix() {
    let k = SubnetKey::from_etcd_key(
        "/coreos.com/network/subnets/10.244.1.0-24",
        "/coreos.com/network",
    )
    .expect("valid key");
    assert_eq!(k, key("10.244.1.0-24"));
    let k =
        SubnetKey::from_etcd_key("/weft/subnets/10.244.1.0-24&fd00::-64", "/weft/").expect("valid");
    assert_eq!(k.v6, Some(v6("fd00::/64")));
    assert_eq!(k.etcd_key("/weft"), "/weft/subnets/10.244.1.0-24&fd00::-64");
    assert_eq!(
        k.etcd_key("/weft/"),
        "/weft/subnets/10.244.1.0-24&fd00::-64"
    );

    for (full, reason) in [
        (
            "/other/subnets/10.244.1.0-24",
            "not under /coreos.com/network/subnets/",
        ),
        (
            "/coreos.com/network/config",
            "not under /coreos.com/network/subnets/",
        ),
        (
            "/coreos.com/network/subnets10.244.1.0-24",
            "not under /coreos.com/network/subnets/",
        ),
        (
            "/coreos.com/network/subnets/x/10.244.1.0-24",
            "\"x/10.244.1.0\" is not an IPv4 address",
        ),
        (
            "/coreos.com/network/subnets/10.244.1.0-40",
            "prefix length 40 is greater than 32",
        ),
        (
            "/coreos.com/network/subnets/fd00::-64",
            "an IPv6-only key: flannel's etcd keys always start with the IPv4 subnet",
        ),
    ] {
        assert_eq!(
            SubnetKey::from_etcd_key(full, "/coreos.com/network"),
            Err(LeaseError::Key {
                key: full.to_string(),
                reason: reason.to_string()
            }),
            "{full}"
        );
    }
}

#[test]
fn keys_order_by_subnet() {
    let mut keys = [
        key("10.244.2.0-24"),
        key("10.244.1.0-24"),
        key("10.244.10.0-24"),
    ];
    keys.sort();
    let s: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    assert_eq!(s, ["10.244.1.0-24", "10.244.2.0-24", "10.244.10.0-24"]);
}
