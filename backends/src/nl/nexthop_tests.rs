//! Tests of the nexthop messages (`nexthop.rs`), in a file of their own for length.
use super::*;

fn roundtrip(msg: &NexthopMessage) -> NexthopMessage {
    let m = RtMessage::Nexthop(msg.clone());
    let mut buf = vec![0xaa; m.buffer_len()];
    m.serialize(&mut buf);
    let mut header = NetlinkHeader::default();
    header.message_type = msg.kind;
    match RtMessage::deserialize(&header, &buf).expect("parse") {
        RtMessage::Nexthop(n) => n,
        RtMessage::Route(r) => panic!("parsed as a route: {r:?}"),
    }
}

#[test]
fn nexthop_message_round_trip() {
    let hop = Hop {
        gateway: Ipv4Addr::new(10, 244, 2, 0).into(),
        oif: 7,
        onlink: true,
    };
    let msg = NexthopMessage {
        kind: RTM_NEWNEXTHOP,
        family: AF_INET,
        scope: 0,
        protocol: RTPROT_WEFT,
        flags: RTNH_F_ONLINK,
        attrs: vec![
            (NHA_ID, 5u32.to_ne_bytes().to_vec()),
            (NHA_OIF, 7u32.to_ne_bytes().to_vec()),
            (NHA_GATEWAY, gateway_bytes(&hop.gateway)),
        ],
    };
    // 8 (nhmsg) + 3 attributes of 8 bytes.
    assert_eq!(RtMessage::Nexthop(msg.clone()).buffer_len(), 32);
    let back = roundtrip(&msg);
    assert_eq!(back, msg);
    let nh = back.nexthop().expect("nexthop");
    assert_eq!(nh.hop(), Some(hop));
    assert!(nh.is_weft());
    assert_eq!(nh.to_string(), "id 5 via 10.244.2.0 dev 7 onlink proto 87");
    assert_eq!(hop.to_string(), "via 10.244.2.0 dev 7 onlink");
    assert_eq!(
        hop.display_with(Some("flannel.1")).to_string(),
        "via 10.244.2.0 dev flannel.1 onlink"
    );
}

#[test]
fn ipv6_nexthop_round_trip() {
    let hop = Hop {
        gateway: "fd00:18::2".parse().expect("gw"),
        oif: 3,
        onlink: false,
    };
    let msg = nexthop_add_msg(9, &hop);
    assert_eq!(msg.family, AF_INET6);
    // 8 (nhmsg) + id and oif (8 each) + a 16-byte gateway (20).
    assert_eq!(RtMessage::Nexthop(msg.clone()).buffer_len(), 44);
    let nh = roundtrip(&msg).nexthop().expect("nexthop");
    assert_eq!(nh.hop(), Some(hop));
    assert_eq!(nh.to_string(), "id 9 via fd00:18::2 dev 3 proto 87");
    // A family that is not the gateway's is no hop of weft's.
    let odd = Nexthop {
        family: AF_INET,
        ..nh.clone()
    };
    assert_eq!(odd.hop(), None);
    let route = nhid_route_msg("fd00:244:2::/64".parse().expect("dst"), 9);
    assert!(route.attributes.contains(&RouteAttribute::NhId(9)));
    assert!(
        route
            .attributes
            .contains(&RouteAttribute::Priority(crate::plan::V6_METRIC))
    );
}

#[test]
fn groups_blackholes_and_padding() {
    // A group of 5 and 6 (two struct nexthop_grp), then a flag attribute (no value) and an
    // attribute whose value needs padding.
    let mut group = Vec::new();
    for id in [5u32, 6] {
        group.extend_from_slice(&id.to_ne_bytes());
        group.extend_from_slice(&[1, 0, 0, 0]);
    }
    let msg = NexthopMessage {
        kind: RTM_NEWNEXTHOP,
        family: AF_UNSPEC,
        protocol: 4,
        attrs: vec![
            (NHA_ID, 9u32.to_ne_bytes().to_vec()),
            (NHA_GROUP, group),
            (3, vec![0, 0]),
        ],
        ..Default::default()
    };
    let back = roundtrip(&msg);
    assert_eq!(back, msg);
    let nh = back.nexthop().expect("nexthop");
    assert_eq!(nh.group, vec![5, 6]);
    assert_eq!(nh.hop(), None);
    assert!(!nh.is_weft());
    assert_eq!(nh.to_string(), "id 9 group 5/6 proto 4");

    let blackhole = NexthopMessage {
        kind: RTM_NEWNEXTHOP,
        attrs: vec![
            (NHA_ID, 3u32.to_ne_bytes().to_vec()),
            (NHA_BLACKHOLE, vec![]),
        ],
        ..Default::default()
    };
    let nh = roundtrip(&blackhole).nexthop().expect("nexthop");
    assert!(nh.blackhole);
    assert_eq!(nh.hop(), None);

    // No id: not a nexthop weft can name.
    let anon = NexthopMessage {
        kind: RTM_NEWNEXTHOP,
        ..Default::default()
    };
    assert_eq!(roundtrip(&anon).nexthop(), None);
}

#[test]
fn malformed_messages_are_errors() {
    let mut header = NetlinkHeader::default();
    header.message_type = RTM_NEWNEXTHOP;
    assert!(RtMessage::deserialize(&header, &[2, 0, 87]).is_err());
    // nhmsg, then an attribute claiming 12 bytes in 6.
    let mut bad = vec![2, 0, 87, 0, 0, 0, 0, 0];
    bad.extend_from_slice(&12u16.to_ne_bytes());
    bad.extend_from_slice(&NHA_ID.to_ne_bytes());
    bad.extend_from_slice(&[1, 0]);
    assert!(RtMessage::deserialize(&header, &bad).is_err());
}

#[test]
fn unsupported_errnos() {
    let e = |errno| BackendError::Netlink {
        op: "ip nexthop show".into(),
        errno,
        message: String::new(),
    };
    for errno in [95, 22, 2, 93, 38] {
        assert!(nexthops_unsupported(&e(Some(errno))), "{errno}");
    }
    for errno in [Some(1), Some(105), None] {
        assert!(!nexthops_unsupported(&e(errno)), "{errno:?}");
    }
}
