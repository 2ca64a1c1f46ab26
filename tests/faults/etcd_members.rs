//! A three-member etcd (issue 14, scenario 1): three etcd processes in the underlay, each on its
//! own address, every agent given all three endpoints, pods pinging both ways at 10/s. The member
//! node 1's watch is on is killed, a lease is written at once through the others and must reach
//! every node's kernel, and the member comes back; then the same with the leader. Nothing may be
//! lost: no ping, no agent's subnet, no re-acquire; node 1 logs the member its watch moved to.
//!
//! Members are restarted one after the other, not both at the end: with three members, two down
//! at once is no quorum, and no lease could be written.
use super::*;
use weft_testkit::etcd_cluster::EtcdCluster;

const MEMBERS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 18, 0, 251),
    Ipv4Addr::new(198, 18, 0, 252),
    Ipv4Addr::new(198, 18, 0, 253),
];

/// The member node `k`'s watch is on now, by its log (`etcd watch on member <id>` or `… moved
/// from member <a> to member <b>`).
fn watch_member(lab: &Lab, k: usize) -> Option<u64> {
    let log = lab.log(k).ok()?;
    log.lines().rev().find_map(|l| {
        let tail = l.split("etcd watch on member ").nth(1).or_else(|| {
            l.contains("etcd watch moved from member")
                .then(|| l.rsplit(" to member ").next())
                .flatten()
        })?;
        u64::from_str_radix(tail.trim(), 16).ok()
    })
}

#[test]
fn etcd_members_killed_one_at_a_time_lose_nothing() {
    if !common::need::root("etcd_members_killed_one_at_a_time_lose_nothing") {
        return;
    }
    let mut lab = Lab::build(spec(3, "host-gw")).expect("build lab");
    let underlay = lab.underlay_ns().to_owned();
    for ip in MEMBERS {
        ip_in(
            &underlay,
            &["addr", "add", &format!("{ip}/24"), "dev", "br0"],
        );
    }
    let ips: Vec<std::net::IpAddr> = MEMBERS.iter().map(|ip| (*ip).into()).collect();
    let mut cluster = EtcdCluster::start(Some(&underlay), &ips).expect("three-member etcd");
    cluster
        .etcdctl(&[
            "put",
            &format!("{PREFIX}/config"),
            &lab.spec().config_json(),
        ])
        .expect("config");
    lab.set_extra_flags(vec![format!(
        "--etcd-endpoints={}",
        cluster.endpoints().join(",")
    )]);
    lab.start_all().expect("start agents");
    wait_ready(&mut lab);
    let subnets: Vec<_> = (1..=3).map(|k| lab.subnet(k).expect("subnet")).collect();
    lab.add_pods().expect("pods");
    let pings = [Pinger::start(&lab, 1, 3), Pinger::start(&lab, 3, 1)];
    let ids = cluster.member_ids().expect("member ids");
    let phantoms = free_subnets(&lab, 2);

    let first = wait_until(CONVERGE, || {
        watch_member(&lab, 1).ok_or("node 1 did not log its watch's member".to_string())
    })
    .expect("node 1's member");
    let by_watch = ids
        .iter()
        .position(|id| *id == first)
        .expect("a member of the cluster");
    let leader = |c: &mut EtcdCluster| c.leader().expect("leader");
    for (what, phantom) in [
        ("node 1's watch member", &phantoms[0]),
        ("leader", &phantoms[1]),
    ] {
        let victim = if what == "leader" {
            leader(&mut cluster)
        } else {
            by_watch
        };
        cluster.member(victim).expect("member").stop();
        let killed = Instant::now();
        cluster
            .etcdctl(&[
                "put",
                &lease_key(phantom),
                &host_gw_value(Ipv4Addr::new(198, 18, 0, 200)),
            ])
            .expect("a lease written with one member down");
        // The put returns once a quorum committed it (after a new election when the leader
        // went): the agents' part starts here.
        let committed = Instant::now();
        figure(
            "14.1",
            &format!("{what} killed → the put committed (etcd's own part)"),
            ms(committed - killed),
            "-",
        );
        for k in 1..=3 {
            let ns = lab.node_ns(k).expect("ns").to_owned();
            time_until(EVENTUALLY, || route_to(&ns, phantom).is_some()).unwrap_or_else(|| {
                panic!(
                    "node {k} never programmed {phantom}; log:\n{}",
                    lab.log_tail(k, 30)
                )
            });
        }
        figure(
            "14.1",
            &format!("{what} killed: the lease committed → in every node's kernel"),
            ms(committed.elapsed()),
            "≤ 2 s",
        );
        cluster
            .member(victim)
            .expect("member")
            .restart()
            .expect("member back");
    }
    let moved = watch_member(&lab, 1).expect("node 1's member");
    figure(
        "14.1",
        "node 1's watch: member before → after",
        format!("{first:016x} → {moved:016x}"),
        "another member",
    );
    assert!(
        lab.log(1)
            .expect("log")
            .contains("etcd watch moved from member"),
        "node 1 did not log where its watch moved; log:\n{}",
        lab.log_tail(1, 40)
    );
    for p in pings {
        let stats = p.stop();
        figure(
            "14.1",
            &format!("pings lost across two member kills ({} sent)", stats.sent),
            stats.lost.len(),
            "0",
        );
        assert!(stats.lost.is_empty(), "pings lost: {stats:?}");
    }
    for k in 1..=3 {
        assert_eq!(
            lab.subnet(k).expect("subnet"),
            subnets[k - 1],
            "node {k}'s subnet"
        );
        assert!(
            !lab.log(k).expect("log").contains("re-acquired subnet"),
            "node {k} re-acquired its subnet; log:\n{}",
            lab.log_tail(k, 40)
        );
    }
    assert_agents_alive(&mut lab, &[]);
}

fn ip_in(ns: &str, args: &[&str]) {
    ip(ns, args).unwrap_or_else(|e| panic!("ip -n {ns} {}: {e}", args.join(" ")));
}
