//! A three-member etcd (issue 14, scenario 1): three etcd processes in the underlay, each on its
//! own address, every agent given all three endpoints, pods pinging both ways at 10/s. The member
//! node 1's watch is on is killed, a lease is written at once through the others and must reach
//! every node's kernel, and the member comes back; then the same with the leader. Nothing may be
//! lost: no ping, no agent's subnet, no re-acquire; node 1 logs the member its watch moved to.
//!
//! Members are restarted one after the other, not both at the end: with three members, two down
//! at once is no quorum, and no lease could be written.
//!
//! Scenario 2, the silent partition: every packet between node 1 and the member its watch is on
//! is dropped (nftables in the underlay, no reset), the other members stay reachable. Node 1 must
//! notice within 10 s (its watch asks a quiet member for a progress report every 3 s and gives up
//! on one that does not answer: `src/lease/etcd/watch.rs`), move to a healthy member and miss no
//! change made meanwhile.
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

/// A 3-node host-gw lab whose agents use a three-member etcd in the underlay, converged.
fn cluster_lab() -> (Lab, EtcdCluster) {
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
    (lab, cluster)
}

#[test]
fn etcd_members_killed_one_at_a_time_lose_nothing() {
    if !common::need::root("etcd_members_killed_one_at_a_time_lose_nothing") {
        return;
    }
    let (mut lab, mut cluster) = cluster_lab();
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

/// Drops every packet between `node` and `member` (both directions) in the underlay namespace;
/// the table goes on drop.
struct Partition {
    ns: String,
    table: String,
}

impl Partition {
    fn start(ns: &str, node: Ipv4Addr, member: Ipv4Addr) -> Partition {
        let table = format!("weftdrop{}", std::process::id());
        let rules = format!(
            "table inet {table} {{\n chain input {{\n  type filter hook input priority -10; policy accept;\n  \
             ip saddr {node} ip daddr {member} drop\n }}\n chain output {{\n  type filter hook output priority -10; policy accept;\n  \
             ip saddr {member} ip daddr {node} drop\n }}\n}}\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(rules.as_bytes())
            .expect("write rules");
        assert!(child.wait().expect("nft").success(), "nft -f failed");
        Partition {
            ns: ns.to_owned(),
            table,
        }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.ns, "nft", "delete", "table", "inet"])
            .arg(&self.table)
            .status();
    }
}

#[test]
fn etcd_member_silently_partitioned_is_left_within_10s_and_nothing_missed() {
    if !common::need::root("etcd_member_silently_partitioned_is_left_within_10s_and_nothing_missed")
    {
        return;
    }
    let (mut lab, mut cluster) = cluster_lab();
    lab.add_pods().expect("pods");
    let pinger = Pinger::start(&lab, 1, 3);
    let ids = cluster.member_ids().expect("member ids");
    let member = wait_until(CONVERGE, || {
        watch_member(&lab, 1).ok_or("node 1 did not log its watch's member".to_string())
    })
    .expect("node 1's member");
    let index = ids.iter().position(|id| *id == member).expect("a member");
    let phantom = free_subnets(&lab, 1).remove(0);
    let underlay = lab.underlay_ns().to_owned();
    let cut = Partition::start(&underlay, Ipv4Addr::new(198, 18, 0, 1), MEMBERS[index]);
    let cut_at = Instant::now();
    // A change made while node 1 hears nothing from its member.
    cluster
        .etcdctl(&[
            "put",
            &lease_key(&phantom),
            &host_gw_value(Ipv4Addr::new(198, 18, 0, 200)),
        ])
        .expect("put lease");
    let ns1 = lab.node_ns(1).expect("ns").to_owned();
    time_until(EVENTUALLY, || {
        watch_member(&lab, 1).is_some_and(|m| m != member)
    })
    .unwrap_or_else(|| {
        panic!(
            "node 1 never left its member; log:\n{}",
            lab.log_tail(1, 30)
        )
    });
    let noticed = cut_at.elapsed();
    // The probe noticed it (not a timeout of some RPC), and the watch went on new connections.
    let log = lab.log(1).expect("log");
    assert!(
        log.contains(&format!("no answer from etcd member {member:016x}"))
            && log.contains("on new connections"),
        "node 1 did not leave its member through the progress probe; log:\n{}",
        lab.log_tail(1, 30)
    );
    time_until(EVENTUALLY, || route_to(&ns1, &phantom).is_some())
        .unwrap_or_else(|| panic!("node 1 missed the change; log:\n{}", lab.log_tail(1, 30)));
    let programmed = cut_at.elapsed();
    figure(
        "14.2",
        "silent partition → node 1's watch on another member",
        ms(noticed),
        "≤ 10 s",
    );
    figure(
        "14.2",
        "silent partition → the change made meanwhile in node 1's kernel",
        ms(programmed),
        "-",
    );
    drop(cut);
    let stats = pinger.stop();
    figure(
        "14.2",
        &format!("pings lost during the partition ({} sent)", stats.sent),
        stats.lost.len(),
        "0",
    );
    assert!(stats.lost.is_empty(), "pings lost: {stats:?}");
    for k in 2..=3 {
        let ns = lab.node_ns(k).expect("ns").to_owned();
        time_until(EVENTUALLY, || route_to(&ns, &phantom).is_some())
            .unwrap_or_else(|| panic!("node {k} missed the change"));
    }
    assert!(
        !lab.log(1).expect("log").contains("re-acquired subnet"),
        "node 1 re-acquired its subnet"
    );
    assert_agents_alive(&mut lab, &[]);
}
