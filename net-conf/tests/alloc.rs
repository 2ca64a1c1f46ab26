//! The allocation policy of docs/flannel-compat.md §3.4.
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::{Ipv4Net, Ipv6Net};
use net_conf::alloc::{
    MAX_CANDIDATES, NewLease, Previous, choose, free_subnets, free_subnets_v6, is_compatible,
    is_key_compatible,
};
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

/// What `choose` says for a v4-only lease made of `subnet`, picked (`previous` false) or taken
/// from subnet.env.
fn create(subnet: Ipv4Net, previous: bool) -> Choice {
    Choice::Create(NewLease {
        key: SubnetKey::new(subnet),
        previous_v4: previous,
        previous_v6: false,
    })
}

fn allocated(subnet: Ipv4Net) -> Choice {
    create(subnet, false)
}

fn prev4(subnet: &str) -> Previous {
    Previous {
        v4: Some(net(subnet)),
        v6: None,
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
    assert!(
        !is_key_compatible(&dual, &v4_only),
        "IPv6 enabled: a key without a v6 part is made again (flannel)"
    );
}

fn dual_conf() -> NetConf {
    conf(
        r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}"#,
    )
}

fn net6(s: &str) -> Ipv6Net {
    s.parse().expect("test IPv6 CIDR")
}

fn dual_lease(key: &str, public_ip: &str) -> ExistingLease {
    ExistingLease {
        key: key.parse().expect("test key"),
        public_ip: Some(ip(public_ip)),
    }
}

#[test]
fn dual_stack_picks_both_families_independently() {
    let c = dual_conf();
    // flannel's defaults: /64 subnets, the first one skipped.
    assert_eq!(c.ipv6_subnet_len, 64);
    let existing = [
        dual_lease("10.244.1.0-24&fd00:10:244:1::-64", "198.18.0.2"),
        dual_lease("10.244.2.0-24&fd00:10:244:3::-64", "198.18.0.3"),
    ];
    let mut picks = Vec::new();
    let got = choose(
        &c,
        &existing,
        ip("198.18.0.9"),
        Previous::none(),
        &mut |n| {
            picks.push(n);
            0
        },
    );
    assert_eq!(
        got,
        Ok(Choice::Create(NewLease {
            key: "10.244.3.0-24&fd00:10:244:2::-64".parse().expect("key"),
            previous_v4: false,
            previous_v6: false,
        }))
    );
    // 100 candidates of each family: IPv4 picked first, then IPv6.
    assert_eq!(picks, [MAX_CANDIDATES, MAX_CANDIDATES]);

    // Both previous subnets free and fitting: both kept, nothing picked.
    let prev = Previous {
        v4: Some(net("10.244.9.0/24")),
        v6: Some(net6("fd00:10:244:9::/64")),
    };
    let got = choose(&c, &existing, ip("198.18.0.9"), prev, &mut no_pick);
    assert_eq!(
        got,
        Ok(Choice::Create(NewLease {
            key: "10.244.9.0-24&fd00:10:244:9::-64".parse().expect("key"),
            previous_v4: true,
            previous_v6: true,
        }))
    );

    // The previous IPv6 subnet is held by another node (or does not fit): only it is picked.
    for v6 in [
        "fd00:10:244:3::/64",
        "fd00:10:244::/64",
        "fd00:10:245:9::/64",
    ] {
        let prev = Previous {
            v4: Some(net("10.244.9.0/24")),
            v6: Some(net6(v6)),
        };
        let mut picks = 0;
        let got = choose(&c, &existing, ip("198.18.0.9"), prev, &mut |_| {
            picks += 1;
            1
        });
        assert_eq!(picks, 1, "{v6}");
        assert_eq!(
            got,
            Ok(Choice::Create(NewLease {
                key: "10.244.9.0-24&fd00:10:244:4::-64".parse().expect("key"),
                previous_v4: true,
                previous_v6: false,
            })),
            "{v6}"
        );
    }
}

#[test]
fn dual_stack_reuse_by_public_ip_needs_a_fitting_v6_part() {
    let c = dual_conf();
    let mine = dual_lease("10.244.7.0-24&fd00:10:244:7::-64", "198.18.0.9");
    let got = choose(
        &c,
        std::slice::from_ref(&mine),
        ip("198.18.0.9"),
        Previous::none(),
        &mut no_pick,
    );
    assert_eq!(got, Ok(Choice::ReuseOwn(mine.key)));
    // A v4-only lease from before the network became dual-stack is made again.
    let old = lease("10.244.7.0/24", "198.18.0.9");
    let got = choose(
        &c,
        std::slice::from_ref(&old),
        ip("198.18.0.9"),
        Previous::none(),
        &mut no_pick,
    );
    assert_eq!(got, Ok(Choice::DeleteIncompatible(old.key)));
}

#[test]
fn out_of_ipv6_subnets_and_ipv6_only() {
    // fd00::/124 with /126 subnets: the first is skipped, three are left.
    let c = conf(
        r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/124","IPv6SubnetLen":126}"#,
    );
    let existing = [
        dual_lease("10.244.1.0-24&fd00::4-126", "198.18.0.2"),
        dual_lease("10.244.2.0-24&fd00::8-126", "198.18.0.3"),
        dual_lease("10.244.3.0-24&fd00::c-126", "198.18.0.4"),
    ];
    let got = choose(
        &c,
        &existing,
        ip("198.18.0.9"),
        Previous::none(),
        &mut |_| 0,
    );
    assert_eq!(got, Err(AllocError::OutOfIpv6Subnets));
    assert_eq!(
        AllocError::OutOfIpv6Subnets.to_string(),
        "out of IPv6 subnets"
    );

    let v6_only = conf(
        r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/56","Backend":{"Type":"host-gw"}}"#,
    );
    let got = choose(
        &v6_only,
        &[],
        ip("198.18.0.9"),
        Previous::none(),
        &mut |_| 0,
    );
    assert_eq!(got, Err(AllocError::NoIpv4));
    assert!(
        AllocError::NoIpv4.to_string().contains("--kube-subnet-mgr"),
        "the error says what to do"
    );
}

#[test]
fn free_ipv6_subnets_at_the_top_of_the_space_and_at_scale() {
    // A network at the very top of the IPv6 space: the scan must stop, not wrap around.
    let c = conf(
        r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124"}"#,
    );
    let free = free_subnets_v6(&c, &[], 100);
    assert_eq!(
        free,
        [
            net6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff4/126"),
            net6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff8/126"),
            net6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126"),
        ]
    );
    // 20,000 taken /64s in a /48: the first free one follows them; a taken /60 is jumped over.
    let c = conf(r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:1::/48"}"#);
    let base = u128::from("fd00:1:0:1::".parse::<std::net::Ipv6Addr>().expect("addr"));
    let mut taken: Vec<Ipv6Net> = (0..20_000u128)
        .map(|i| Ipv6Net::new((base + (i << 64)).into(), 64).expect("net"))
        .collect();
    taken.push(net6("fd00:1:0:4e30::/60"));
    let free = free_subnets_v6(&c, &taken, 2);
    // 20,001st /64 is fd00:1:0:4e21::; 4e21..4e2f are free, then the /60 at 4e30.
    assert_eq!(
        free,
        [net6("fd00:1:0:4e21::/64"), net6("fd00:1:0:4e22::/64")]
    );
    let free = free_subnets_v6(&c, &taken, 20);
    assert_eq!(free[14], net6("fd00:1:0:4e2f::/64"));
    assert_eq!(free[15], net6("fd00:1:0:4e40::/64"));
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
        prev4("10.244.20.0/24"),
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
    let got = choose(
        &c,
        &existing,
        ip("198.18.0.3"),
        Previous::none(),
        &mut no_pick,
    );
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
    let got = choose(
        &c,
        &existing,
        ip("198.18.0.3"),
        Previous::none(),
        &mut no_pick,
    );
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

    let got = choose(&c, &existing, me, prev4("10.244.5.0/24"), &mut no_pick);
    assert_eq!(got, Ok(create(net("10.244.5.0/24"), true)));

    // Held by someone else: allocate instead.
    let mut picks = Vec::new();
    let got = choose(&c, &existing, me, prev4("10.244.7.0/24"), &mut |n| {
        picks.push(n);
        0
    });
    assert_eq!(got, Ok(allocated(net("10.244.1.0/24"))));
    assert_eq!(picks, [100]);

    // Overlapped by a bigger lease (a different SubnetLen in the past).
    let big = [lease("10.244.4.0/22", "198.18.0.2")];
    let got = choose(&c, &big, me, prev4("10.244.5.0/24"), &mut |_| 0);
    assert_eq!(got, Ok(allocated(net("10.244.1.0/24"))));

    // Incompatible with the config: ignored.
    for prev in ["10.244.0.0/24", "10.245.5.0/24", "10.244.5.0/25"] {
        let got = choose(&c, &existing, me, prev4(prev), &mut |_| 0);
        assert_eq!(got, Ok(allocated(net("10.244.1.0/24"))), "{prev}");
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
    let got = choose(&c, &existing, me, Previous::none(), &mut |n| {
        seen = Some(n);
        2
    });
    assert_eq!(seen, Some(MAX_CANDIDATES));
    // Candidates: .2, .4, .5, … → index 2 is 10.244.5.0/24.
    assert_eq!(got, Ok(allocated(net("10.244.5.0/24"))));
    // Out-of-range picks are reduced modulo n rather than panicking.
    let got = choose(&c, &existing, me, Previous::none(), &mut |n| n + 1);
    assert_eq!(got, Ok(allocated(net("10.244.4.0/24"))));
}

#[test]
fn fewer_candidates_than_the_limit() {
    let c = conf(r#"{"Network":"10.0.0.0/28","SubnetLen":30,"Backend":{"Type":"host-gw"}}"#);
    let existing = [lease("10.0.0.8/30", "198.18.0.2")];
    let mut seen = None;
    let got = choose(
        &c,
        &existing,
        ip("198.18.0.9"),
        Previous::none(),
        &mut |n| {
            seen = Some(n);
            n - 1
        },
    );
    assert_eq!(seen, Some(2));
    assert_eq!(got, Ok(allocated(net("10.0.0.12/30"))));
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
    let got = choose(
        &c,
        &existing,
        ip("198.18.0.9"),
        Previous::none(),
        &mut no_pick,
    );
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
            Previous::none(),
            &mut |n| n - 1,
        ));
    }
    let elapsed = start.elapsed();
    let first_free = Ipv4Addr::from(base + (20_000 << 8));
    assert_eq!(
        free_subnets(
            &c,
            &existing.iter().filter_map(|l| l.key.v4).collect::<Vec<_>>(),
            1
        ),
        [Ipv4Net::new(first_free, 24).expect("net")]
    );
    assert_eq!(
        result,
        Some(Ok(allocated(
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
        Previous::none(),
        &mut |_| 0,
    );
    assert_eq!(got, Ok(allocated(net("10.244.2.0/24"))));
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
