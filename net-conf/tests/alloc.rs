//! The allocation policy of docs/flannel-compat.md §3.4.
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use net_conf::alloc::{MAX_CANDIDATES, choose, free_subnets, is_compatible, is_key_compatible};
use net_conf::{AllocError, Choice, ExistingLease, NetConf, SubnetKey};

fn conf(text: &str) -> NetConf {
    NetConf::parse(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .conf
}

fn default_conf() -> NetConf {
    conf(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#)
}

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test CIDR")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

fn lease(subnet: &str, public_ip: &str) -> ExistingLease {
    ExistingLease {
        key: SubnetKey::new(net(subnet)),
        public_ip: Some(ip(public_ip)),
    }
}

/// A pick function that must not be called.
fn no_pick(n: usize) -> usize {
    panic!("pick({n}) called")
}

#[test]
fn compatibility() {
    let c = default_conf();
    assert!(is_compatible(&c, net("10.244.1.0/24")));
    assert!(is_compatible(&c, net("10.244.255.0/24")));
    assert!(
        !is_compatible(&c, net("10.244.0.0/24")),
        "first subnet is below SubnetMin"
    );
    assert!(
        !is_compatible(&c, net("10.245.1.0/24")),
        "outside the network"
    );
    assert!(!is_compatible(&c, net("10.244.1.0/25")), "wrong SubnetLen");
    assert!(!is_compatible(&c, net("10.244.1.1/24")), "not aligned");

    let dual = conf(
        r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","Backend":{"Type":"host-gw"}}"#,
    );
    let v4_only: SubnetKey = "10.244.1.0-24".parse().expect("key");
    let with_v6: SubnetKey = "10.244.1.0-24&fd00:0:0:1::-64".parse().expect("key");
    let bad_v6: SubnetKey = "10.244.1.0-24&fd01:0:0:1::-64".parse().expect("key");
    assert!(is_key_compatible(&c, &v4_only));
    assert!(
        !is_key_compatible(&c, &with_v6),
        "IPv6 disabled: a v6 part is incompatible"
    );
    assert!(is_key_compatible(&dual, &with_v6));
    assert!(!is_key_compatible(&dual, &bad_v6));
    assert!(is_key_compatible(&dual, &v4_only));
}

#[test]
fn reuses_own_lease_by_public_ip() {
    let c = default_conf();
    let existing = [
        lease("10.244.7.0/24", "198.18.0.2"),
        lease("10.244.9.0/24", "198.18.0.3"),
    ];
    let got = choose(
        &c,
        &existing,
        ip("198.18.0.3"),
        Some(net("10.244.20.0/24")),
        &mut no_pick,
    );
    assert_eq!(
        got,
        Ok(Choice::ReuseOwn(SubnetKey::new(net("10.244.9.0/24"))))
    );
}

#[test]
fn deletes_incompatible_own_lease() {
    // SubnetLen changed from 24 to 26: our old /24 no longer fits.
    let c = conf(r#"{"Network":"10.244.0.0/16","SubnetLen":26,"Backend":{"Type":"host-gw"}}"#);
    let existing = [lease("10.244.9.0/24", "198.18.0.3")];
    let got = choose(&c, &existing, ip("198.18.0.3"), None, &mut no_pick);
    assert_eq!(
        got,
        Ok(Choice::DeleteIncompatible(SubnetKey::new(net(
            "10.244.9.0/24"
        ))))
    );
    // Outside a narrowed SubnetMin..SubnetMax too.
    let c = conf(
        r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.100.0","Backend":{"Type":"host-gw"}}"#,
    );
    let got = choose(&c, &existing, ip("198.18.0.3"), None, &mut no_pick);
    assert_eq!(
        got,
        Ok(Choice::DeleteIncompatible(SubnetKey::new(net(
            "10.244.9.0/24"
        ))))
    );
}

#[test]
fn reuses_previous_subnet_only_when_free_and_compatible() {
    let c = default_conf();
    let existing = [lease("10.244.7.0/24", "198.18.0.2")];
    let me = ip("198.18.0.9");

    let got = choose(&c, &existing, me, Some(net("10.244.5.0/24")), &mut no_pick);
    assert_eq!(got, Ok(Choice::ReusePrevious(net("10.244.5.0/24"))));

    // Held by someone else: allocate instead.
    let mut picks = Vec::new();
    let got = choose(&c, &existing, me, Some(net("10.244.7.0/24")), &mut |n| {
        picks.push(n);
        0
    });
    assert_eq!(got, Ok(Choice::Allocate(net("10.244.1.0/24"))));
    assert_eq!(picks, [100]);

    // Overlapped by a bigger lease (a different SubnetLen in the past).
    let big = [lease("10.244.4.0/22", "198.18.0.2")];
    let got = choose(&c, &big, me, Some(net("10.244.5.0/24")), &mut |_| 0);
    assert_eq!(got, Ok(Choice::Allocate(net("10.244.1.0/24"))));

    // Incompatible with the config: ignored.
    for prev in ["10.244.0.0/24", "10.245.5.0/24", "10.244.5.0/25"] {
        let got = choose(&c, &existing, me, Some(net(prev)), &mut |_| 0);
        assert_eq!(got, Ok(Choice::Allocate(net("10.244.1.0/24"))), "{prev}");
    }
}

#[test]
fn random_pick_uses_the_callback() {
    let c = default_conf();
    let existing = [
        lease("10.244.1.0/24", "198.18.0.2"),
        lease("10.244.3.0/24", "198.18.0.3"),
    ];
    let me = ip("198.18.0.9");
    let mut seen = None;
    let got = choose(&c, &existing, me, None, &mut |n| {
        seen = Some(n);
        2
    });
    assert_eq!(seen, Some(MAX_CANDIDATES));
    // Candidates: .2, .4, .5, … → index 2 is 10.244.5.0/24.
    assert_eq!(got, Ok(Choice::Allocate(net("10.244.5.0/24"))));
    // Out-of-range picks are reduced modulo n rather than panicking.
    let got = choose(&c, &existing, me, None, &mut |n| n + 1);
    assert_eq!(got, Ok(Choice::Allocate(net("10.244.4.0/24"))));
}

#[test]
fn fewer_candidates_than_the_limit() {
    let c = conf(r#"{"Network":"10.0.0.0/28","SubnetLen":30,"Backend":{"Type":"host-gw"}}"#);
    let existing = [lease("10.0.0.8/30", "198.18.0.2")];
    let mut seen = None;
    let got = choose(&c, &existing, ip("198.18.0.9"), None, &mut |n| {
        seen = Some(n);
        n - 1
    });
    assert_eq!(seen, Some(2));
    assert_eq!(got, Ok(Choice::Allocate(net("10.0.0.12/30"))));
}

#[test]
fn out_of_subnets_on_a_full_network() {
    // /28 with /30 subnets: SubnetMin skips the first, leaving three.
    let c = conf(r#"{"Network":"10.0.0.0/28","SubnetLen":30,"Backend":{"Type":"host-gw"}}"#);
    let existing = [
        lease("10.0.0.4/30", "198.18.0.2"),
        lease("10.0.0.8/30", "198.18.0.3"),
        lease("10.0.0.12/30", "198.18.0.4"),
    ];
    let got = choose(&c, &existing, ip("198.18.0.9"), None, &mut no_pick);
    assert_eq!(got, Err(AllocError::OutOfSubnets));
    assert_eq!(AllocError::OutOfSubnets.to_string(), "out of subnets");
    // The unused first subnet (below SubnetMin) is never handed out.
    assert!(
        free_subnets(
            &c,
            &[net("10.0.0.4/30"), net("10.0.0.8/30"), net("10.0.0.12/30")],
            10
        )
        .is_empty()
    );
}

#[test]
fn subnet_min_and_max_are_honoured() {
    let c = conf(
        r#"{"Network":"10.10.0.0/16","SubnetLen":26,"SubnetMin":"10.10.4.0","SubnetMax":"10.10.7.192","Backend":{"Type":"host-gw"}}"#,
    );
    let all = free_subnets(&c, &[], 1000);
    assert_eq!(all.len(), 16);
    assert_eq!(all.first(), Some(&net("10.10.4.0/26")));
    assert_eq!(all.last(), Some(&net("10.10.7.192/26")));
    assert!(
        all.windows(2)
            .all(|w| u32::from(w[1].addr()) - u32::from(w[0].addr()) == 64)
    );
    // The limit caps the scan.
    assert_eq!(free_subnets(&c, &[], 3).len(), 3);
    assert!(free_subnets(&c, &[], 0).is_empty());
}

#[test]
fn free_subnets_skips_any_overlap() {
    let c = default_conf();
    let taken = [
        net("10.244.2.128/25"), // inside .2
        net("10.244.4.0/22"),   // .4 – .7
        net("10.244.9.0/24"),
        net("10.244.9.0/24"), // duplicate
        net("10.0.0.0/8"),    // contains the whole /16
    ];
    assert!(free_subnets(&c, &taken, 10).is_empty());
    let taken = &taken[..4];
    let free = free_subnets(&c, taken, 6);
    let got: Vec<String> = free.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        got,
        [
            "10.244.1.0/24",
            "10.244.3.0/24",
            "10.244.8.0/24",
            "10.244.10.0/24",
            "10.244.11.0/24",
            "10.244.12.0/24"
        ]
    );
    // Single addresses at either end of a subnet block it too.
    let taken = [net("10.244.1.0/32"), net("10.244.2.255/32")];
    assert_eq!(free_subnets(&c, &taken, 1), [net("10.244.3.0/24")]);
    // Unsorted input and leases outside the network are fine.
    let taken = [
        net("10.244.3.0/24"),
        net("192.168.0.0/16"),
        net("10.244.1.0/24"),
    ];
    assert_eq!(free_subnets(&c, &taken, 1), [net("10.244.2.0/24")]);
}

#[test]
fn top_of_the_address_space() {
    let c = conf(r#"{"Network":"255.255.255.0/24","SubnetLen":26,"Backend":{"Type":"host-gw"}}"#);
    assert_eq!(
        free_subnets(&c, &[], 10),
        [
            net("255.255.255.64/26"),
            net("255.255.255.128/26"),
            net("255.255.255.192/26")
        ]
    );
    assert_eq!(
        free_subnets(&c, &[net("255.255.255.192/26")], 10),
        [net("255.255.255.64/26"), net("255.255.255.128/26")]
    );
}

#[test]
fn large_network_with_many_leases_is_fast() {
    // A /8 with 20,000 /24 leases taken, given in reverse order: the scan must not be
    // quadratic. The 20,000 lowest subnets are taken, so the first free one is far up.
    let c = conf(r#"{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}"#);
    assert_eq!(c.subnet_count(), 65535);
    let base = u32::from(ip("10.0.1.0"));
    let existing: Vec<ExistingLease> = (0..20_000u32)
        .rev()
        .map(|i| ExistingLease {
            key: SubnetKey::new(Ipv4Net::new(Ipv4Addr::from(base + (i << 8)), 24).expect("net")),
            public_ip: Some(Ipv4Addr::from(0xC612_0000 + i)),
        })
        .collect();
    let start = Instant::now();
    let mut result = None;
    for _ in 0..20 {
        result = Some(choose(
            &c,
            &existing,
            ip("198.19.255.255"),
            None,
            &mut |n| n - 1,
        ));
    }
    let elapsed = start.elapsed();
    let first_free = Ipv4Addr::from(base + (20_000 << 8));
    assert_eq!(
        free_subnets(
            &c,
            &existing.iter().map(|l| l.key.v4).collect::<Vec<_>>(),
            1
        ),
        [Ipv4Net::new(first_free, 24).expect("net")]
    );
    assert_eq!(
        result,
        Some(Ok(Choice::Allocate(
            Ipv4Net::new(Ipv4Addr::from(u32::from(first_free) + (99 << 8)), 24).expect("net")
        )))
    );
    // 20 rounds of a quadratic scan (4·10^8 overlap checks each) would take minutes even in
    // release mode; the sorted scan takes milliseconds in debug builds.
    assert!(
        elapsed < Duration::from_secs(2),
        "20 rounds took {elapsed:?}"
    );
}

#[test]
fn existing_lease_from_attrs() {
    use net_conf::LeaseAttrs;
    let key = SubnetKey::new(net("10.244.1.0/24"));
    let l = ExistingLease::from_attrs(key, &LeaseAttrs::host_gw(ip("198.18.0.2")));
    assert_eq!(l.public_ip, Some(ip("198.18.0.2")));
    let unset = LeaseAttrs::parse(b"{}").expect("valid");
    let l = ExistingLease::from_attrs(key, &unset);
    assert_eq!(l.public_ip, None);
    // So a node whose address is unknown never "reuses" such a lease.
    let got = choose(
        &default_conf(),
        &[l],
        Ipv4Addr::UNSPECIFIED,
        None,
        &mut |_| 0,
    );
    assert_eq!(got, Ok(Choice::Allocate(net("10.244.2.0/24"))));
}

#[test]
fn a_refused_previous_subnet_says_why_and_how_to_keep_it() {
    use net_conf::alloc::previous_refusal;
    let c = conf(r#"{"Network":"10.244.0.0/16"}"#);
    // kube-flannel's first node held 10.244.0.0/24, below flannel's default SubnetMin.
    let why = previous_refusal(&c, &[], Some(net("10.244.0.0/24"))).expect("refused");
    assert_eq!(
        why,
        "the previous subnet 10.244.0.0/24 (from subnet.env) is below SubnetMin 10.244.1.0 \
         (flannel's default leaves the network's first subnet free); set \"SubnetMin\": \
         \"10.244.0.0\" in the network config to keep it; this node gets a new subnet and its \
         running pods must be restarted"
    );
    let why = previous_refusal(
        &c,
        &[lease("10.244.7.0/24", "198.18.0.9")],
        Some(net("10.244.7.0/24")),
    )
    .expect("refused");
    assert!(
        why.contains("is held by the lease of 198.18.0.9 (10.244.7.0-24)"),
        "{why}"
    );
    assert!(
        previous_refusal(&c, &[], Some(net("10.245.1.0/24")))
            .expect("r")
            .contains("outside Network")
    );
    assert!(
        previous_refusal(&c, &[], Some(net("10.244.1.0/25")))
            .expect("r")
            .contains("SubnetLen")
    );
    // Fits and free, or none: nothing to say.
    assert_eq!(previous_refusal(&c, &[], Some(net("10.244.9.0/24"))), None);
    assert_eq!(previous_refusal(&c, &[], None), None);
    let keep = conf(r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.0.0"}"#);
    assert_eq!(
        previous_refusal(&keep, &[], Some(net("10.244.0.0/24"))),
        None
    );
}
