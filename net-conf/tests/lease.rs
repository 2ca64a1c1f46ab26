//! Lease values: byte-for-byte flannel JSON, lenient Go-style reading, vxlan BackendData.
use std::net::{Ipv4Addr, Ipv6Addr};

use net_conf::{LeaseAttrs, LeaseError, VxlanData};

const HOST_GW: &str = r#"{"PublicIP":"10.0.0.5","PublicIPv6":null,"BackendType":"host-gw"}"#;
const VXLAN: &str = r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#;

fn parse(text: &str) -> LeaseAttrs {
    LeaseAttrs::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn value_error(text: &str) -> String {
    match LeaseAttrs::parse(text.as_bytes()) {
        Err(LeaseError::Value { reason }) => reason,
        other => panic!("{text}: expected a value error, got {other:?}"),
    }
}

#[test]
fn spec_examples_round_trip_byte_for_byte() {
    for text in [HOST_GW, VXLAN] {
        assert_eq!(parse(text).to_json(), text);
    }
}

#[test]
fn host_gw_constructor_matches_flannel() {
    let attrs = LeaseAttrs::host_gw(Ipv4Addr::new(10, 0, 0, 5));
    assert_eq!(attrs.to_json(), HOST_GW);
    assert_eq!(parse(HOST_GW), attrs);
}

#[test]
fn ipip_constructor_has_no_backend_data() {
    let attrs = LeaseAttrs::ipip(Ipv4Addr::new(198, 18, 0, 2));
    assert_eq!(
        attrs.to_json(),
        r#"{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"ipip"}"#
    );
}

#[test]
fn vxlan_constructor_matches_flannel() {
    let data = VxlanData {
        vni: 1,
        vtep_mac: [0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44],
    };
    let attrs = LeaseAttrs::vxlan(Ipv4Addr::new(192, 168, 64, 3), data);
    assert_eq!(attrs.to_json(), VXLAN);
    assert_eq!(attrs.vxlan_data(), Ok(Some(data)));
    assert_eq!(parse(VXLAN), attrs);
    assert_eq!(parse(VXLAN).vxlan_data(), Ok(Some(data)));
}

#[test]
fn vxlan_data_json() {
    let data = VxlanData {
        vni: 1,
        vtep_mac: [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff],
    };
    assert_eq!(data.to_json(), r#"{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}"#);
    assert_eq!(data.vtep_mac_string(), "aa:bb:cc:dd:ee:ff");
    assert_eq!(
        VxlanData::parse(r#"{"vni":1,"vtepmac":"AA:BB:CC:DD:EE:FF"}"#, "BackendData"),
        Ok(data)
    );
    assert_eq!(
        r#"{"VNI":1,"VtepMAC":"aa-bb-cc-dd-ee-ff","Extra":[1]}"#.parse::<VxlanData>(),
        Ok(data)
    );
}

#[test]
fn unset_public_ip_is_zero() {
    let attrs = parse(r#"{"BackendType":"host-gw"}"#);
    assert_eq!(attrs.public_ip, Ipv4Addr::UNSPECIFIED);
    assert_eq!(
        attrs.to_json(),
        r#"{"PublicIP":"0.0.0.0","PublicIPv6":null,"BackendType":"host-gw"}"#
    );
    // Nothing but the IPs: BackendType/BackendData are omitted when empty.
    assert_eq!(
        parse("{}").to_json(),
        r#"{"PublicIP":"0.0.0.0","PublicIPv6":null}"#
    );
}

#[test]
fn lenient_reading_like_go() {
    let attrs = parse(
        r#"{ "publicip" : "10.0.0.7", "PUBLICIPV6": "FD00::1", "backendtype": "vxlan",
             "backenddata": { "VNI" : 7 , "VtepMAC" : "C6:D2:32:6F:8F:44" },
             "Whatever": {"nested": [1, 2]} }"#,
    );
    assert_eq!(attrs.public_ip, Ipv4Addr::new(10, 0, 0, 7));
    assert_eq!(
        attrs.public_ipv6,
        Some("fd00::1".parse::<Ipv6Addr>().expect("v6"))
    );
    assert_eq!(attrs.backend_type, "vxlan");
    // Kept as compact text, key order and spelling as received.
    assert_eq!(
        attrs.backend_data.as_deref(),
        Some(r#"{"VNI":7,"VtepMAC":"C6:D2:32:6F:8F:44"}"#)
    );
    assert_eq!(
        attrs.vxlan_data(),
        Ok(Some(VxlanData {
            vni: 7,
            vtep_mac: [0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44]
        }))
    );
    assert_eq!(
        attrs.to_json(),
        r#"{"PublicIP":"10.0.0.7","PublicIPv6":"fd00::1","BackendType":"vxlan","BackendData":{"VNI":7,"VtepMAC":"C6:D2:32:6F:8F:44"}}"#
    );
}

#[test]
fn dual_stack_lease_round_trips() {
    let text = r#"{"PublicIP":"198.18.0.2","PublicIPv6":"2001:db8::2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}}"#;
    let attrs = parse(text);
    assert_eq!(attrs.to_json(), text);
    assert_eq!(
        attrs.vxlan_v6_data().map(|d| d.map(|d| d.vtep_mac)),
        Ok(Some([2, 0, 0, 0, 0, 2]))
    );
}

#[test]
fn null_and_absent_optional_fields() {
    let attrs =
        parse(r#"{"PublicIP":"10.0.0.5","PublicIPv6":null,"BackendType":null,"BackendData":null}"#);
    assert_eq!(attrs.public_ipv6, None);
    assert_eq!(attrs.backend_type, "");
    assert_eq!(attrs.backend_data, None);
    assert_eq!(attrs.vxlan_data(), Ok(None));
    assert_eq!(parse(HOST_GW).vxlan_data(), Ok(None));
}

#[test]
fn backend_data_of_any_json_kept() {
    let attrs =
        parse(r#"{"PublicIP":"10.0.0.5","BackendType":"x","BackendData":[1, "a <b>",{"k":null}]}"#);
    assert_eq!(
        attrs.backend_data.as_deref(),
        Some(r#"[1,"a \u003cb\u003e",{"k":null}]"#)
    );
    assert_eq!(
        attrs.to_json(),
        r#"{"PublicIP":"10.0.0.5","PublicIPv6":null,"BackendType":"x","BackendData":[1,"a \u003cb\u003e",{"k":null}]}"#
    );
    let attrs = parse(r#"{"PublicIP":"10.0.0.5","BackendData":"str"}"#);
    assert_eq!(attrs.backend_data.as_deref(), Some(r#""str""#));
    assert!(attrs.vxlan_data().is_err());
}

#[test]
fn duplicate_keys_last_wins() {
    let attrs = parse(r#"{"PublicIP":"10.0.0.5","publicIP":"10.0.0.6"}"#);
    assert_eq!(attrs.public_ip, Ipv4Addr::new(10, 0, 0, 6));
}

#[test]
fn malformed_values_name_field_and_value() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"PublicIP":"10.0.0.300"}"#,
            r#"PublicIP "10.0.0.300" is not an IPv4 address"#,
        ),
        (
            r#"{"PublicIP":"fd00::1"}"#,
            r#"PublicIP "fd00::1" is not an IPv4 address"#,
        ),
        (
            r#"{"PublicIP":null}"#,
            "PublicIP must be an IPv4 address string, found null",
        ),
        (
            r#"{"PublicIP":10}"#,
            "PublicIP must be an IPv4 address string, found number 10",
        ),
        (
            r#"{"PublicIP":"10.0.0.1","PublicIPv6":"10.0.0.1"}"#,
            r#"PublicIPv6 "10.0.0.1" is not an IPv6 address"#,
        ),
        (
            r#"{"PublicIP":"10.0.0.1","PublicIPv6":false}"#,
            "PublicIPv6 must be an IPv6 address string or null, found boolean false",
        ),
        (
            r#"{"PublicIP":"10.0.0.1","BackendType":["vxlan"]}"#,
            "BackendType must be a string, found an array",
        ),
    ];
    for (text, reason) in cases {
        assert_eq!(value_error(text), *reason, "{text}");
    }
    for text in [
        "",
        "not json",
        "[1]",
        "\"10.0.0.1\"",
        "{\"PublicIP\":\"10.0.0.1\"",
        "{} {}",
    ] {
        let reason = value_error(text);
        assert!(reason.starts_with("not a JSON object"), "{text}: {reason}");
        assert!(reason.contains(&format!("{text:?}")), "{text}: {reason}");
    }
    let err = LeaseAttrs::parse(b"\xff\xfe").expect_err("not utf-8");
    assert!(matches!(err, LeaseError::Value { .. }), "{err:?}");
}

#[test]
fn malformed_vxlan_data() {
    let with = |data: &str| LeaseAttrs {
        backend_data: Some(data.to_string()),
        ..LeaseAttrs::host_gw(Ipv4Addr::new(10, 0, 0, 5))
    };
    let cases: &[(&str, &str)] = &[
        (
            r#"{"VNI":1}"#,
            r#"BackendData.VtepMAC is missing in {"VNI":1}"#,
        ),
        (
            r#"{"VNI":1,"VtepMAC":"zz:bb:cc:dd:ee:ff"}"#,
            r#"BackendData.VtepMAC "zz:bb:cc:dd:ee:ff" is not a MAC address"#,
        ),
        (
            r#"{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee"}"#,
            r#"BackendData.VtepMAC "aa:bb:cc:dd:ee" is not a MAC address"#,
        ),
        (
            r#"{"VNI":1,"VtepMAC":7}"#,
            "BackendData.VtepMAC must be a string, found number 7",
        ),
        (
            r#"{"VNI":-1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}"#,
            "BackendData.VNI -1 is not a valid VNI",
        ),
        (
            r#"{"VNI":"1","VtepMAC":"aa:bb:cc:dd:ee:ff"}"#,
            r#"BackendData.VNI must be a number, found string "1""#,
        ),
    ];
    for (data, reason) in cases {
        assert_eq!(
            with(data).vxlan_data(),
            Err(LeaseError::Value {
                reason: reason.to_string()
            }),
            "{data}"
        );
    }
    // Go leaves a missing VNI at 0.
    assert_eq!(
        with(r#"{"VtepMAC":"aa:bb:cc:dd:ee:ff"}"#)
            .vxlan_data()
            .map(|d| d.map(|d| d.vni)),
        Ok(Some(0))
    );
}

#[test]
fn backend_type_written_with_go_escaping() {
    let attrs = LeaseAttrs {
        backend_type: "a\"<b>".into(),
        ..LeaseAttrs::host_gw(Ipv4Addr::new(10, 0, 0, 5))
    };
    assert_eq!(
        attrs.to_json(),
        r#"{"PublicIP":"10.0.0.5","PublicIPv6":null,"BackendType":"a\"\u003cb\u003e"}"#
    );
    assert_eq!(parse(&attrs.to_json()), attrs);
}
