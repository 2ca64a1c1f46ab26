//! R3: a boot with etcd down programs the peers from the peer cache.
use super::*;

#[test]
fn r3_boot_with_etcd_down_programs_cached_peers() {
    if !common::need::root("r3_boot_with_etcd_down_programs_cached_peers") {
        return;
    }
    let mut lab = Lab::build(spec(3, "host-gw")).expect("build lab");
    lab.start_all().expect("start");
    wait_ready(&mut lab);
    lab.add_pods().expect("pods");
    let subnet3 = lab.subnet(3).expect("subnet");
    // Node 3's cache holds both peers (written a few seconds after a change at most).
    let cache = lab.peer_cache_file(3).expect("cache path");
    let peers: Vec<String> = (1..=2)
        .map(|k| lab.subnet(k).expect("subnet").to_string().replace('/', "-"))
        .collect();
    wait_until(CONVERGE, || {
        let text = std::fs::read_to_string(&cache).map_err(|e| e.to_string())?;
        if peers.iter().all(|p| text.contains(p.as_str())) {
            Ok(())
        } else {
            Err(format!("peer cache lacks a peer: {text}"))
        }
    })
    .expect("peer cache written");

    // Node 3 goes down and "reboots": its kernel routes and /run (subnet.env) are gone, the
    // peer cache on disk stays. etcd is down when it comes back.
    lab.stop_node(3, Signal::SIGTERM).expect("stop");
    let ns3 = lab.node_ns(3).expect("ns").to_owned();
    // weft's nexthops first (their routes go with them: `ip route flush` of routes on nexthops
    // fails with EINVAL in nexthop_compat_mode, iproute2 6.1), then any plain weft route.
    ip(&ns3, &["nexthop", "flush", "proto", "87"]).expect("flush weft nexthops");
    ip(&ns3, &["route", "flush", "proto", "87"]).expect("flush weft routes");
    assert!(
        route_to(&ns3, &lab.subnet(1).expect("subnet").to_string()).is_none(),
        "node 3's routes are gone before its restart"
    );
    std::fs::remove_file(lab.subnet_file(3).expect("path")).expect("rm subnet.env");
    lab.etcd().expect("etcd").stop();
    let started = Instant::now();
    lab.start_node(3).expect("start");
    let env = lab
        .wait_subnet_env(3, READY)
        .expect("subnet.env from the cache while etcd is down");
    let ready = started.elapsed();
    assert_eq!(env.subnet, Some(subnet3), "cached subnet");
    wait_until(CONVERGE, || hostgw_routes_ok(&lab, 3)).expect("cached peers programmed");
    let programmed = started.elapsed();
    figure(
        "R3",
        "boot with etcd down: start → subnet.env from the cache",
        ms(ready),
        "-",
    );
    figure(
        "R3",
        "boot with etcd down: start → cached peers programmed",
        ms(programmed),
        "-",
    );
    assert!(
        lab.ping(3, 1, 1, Duration::from_secs(5)).expect("ping"),
        "pod 3 cannot reach pod 1 on cached routes"
    );
    // Serving from the cache is not ready: the lease is not confirmed yet.
    let port = weft_testkit::lab::DEFAULT_HEALTHZ_PORT;
    match http_get(&ns3, "127.0.0.1", port, "/readyz") {
        Ok((503, _)) => {}
        other => panic!("/readyz while booted from the cache with etcd down: {other:?}"),
    }

    // etcd returns; a peer left meanwhile: node 3 gets ready and drops that peer's route.
    lab.etcd().expect("etcd").restart().expect("restart");
    let back = Instant::now();
    let gone = lab.subnet(1).expect("subnet").to_string();
    lab.stop_node(1, Signal::SIGTERM).expect("stop 1");
    lab.etcdctl(&["del", &lease_key(&gone)]).expect("del");
    let t = time_until(EVENTUALLY, || route_to(&ns3, &gone).is_none());
    assert!(
        t.is_some(),
        "node 3 did not reconcile with etcd: {:?}; log:\n{}",
        routes_in(&ns3),
        lab.log_tail(3, 30)
    );
    wait_until(READY, || {
        match http_get(&ns3, "127.0.0.1", port, "/readyz") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("/readyz: {other:?}")),
        }
    })
    .expect("ready once etcd is back");
    figure(
        "R3",
        "etcd back → reconciled (a peer deleted meanwhile is gone) and /readyz 200",
        ms(back.elapsed()),
        "-",
    );
    assert!(route_to(&ns3, &lab.subnet(2).expect("s").to_string()).is_some());
    assert_agents_alive(&mut lab, &[1]);
    lab.teardown().expect("teardown");
}
