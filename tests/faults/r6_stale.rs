//! R6: stale state at start is removed only after etcd answered a list.
use super::*;

#[test]
fn r6_stale_state_is_removed_only_after_etcd_answers() {
    if !common::need::root("r6_stale_state_is_removed_only_after_etcd_answers") {
        return;
    }
    // Longer than the agent's first-contact timeout (3 s), after which it boots from its peer
    // cache: that must add the cached peers and remove nothing.
    let wait_down = Duration::from_secs(knob("WEFT_FAULTS_DOWN_SECS", 2) + 3);
    let mut lab = converged_lab(2, "vxlan");
    let cache = lab.peer_cache_file(1).expect("cache path");
    wait_until(CONVERGE, || {
        let text = std::fs::read_to_string(&cache).map_err(|e| e.to_string())?;
        let peer = lab
            .subnet(2)
            .map_err(|e| e.to_string())?
            .to_string()
            .replace('/', "-");
        if text.contains(&peer) {
            Ok(())
        } else {
            Err(format!("no peer in the cache: {text}"))
        }
    })
    .expect("node 1's peer cache");
    lab.stop_node(1, Signal::SIGTERM).expect("stop");
    let ns = lab.node_ns(1).expect("ns").to_owned();
    // What a peer that left while weft was down leaves behind, and what is not weft's.
    let stale_mac = "0e:00:00:00:00:fa";
    for args in [
        &[
            "route",
            "replace",
            "10.244.250.0/24",
            "via",
            "10.244.250.0",
            "dev",
            "flannel.1",
            "onlink",
            "proto",
            "87",
        ][..],
        &[
            "neigh",
            "replace",
            "10.244.250.0",
            "lladdr",
            stale_mac,
            "dev",
            "flannel.1",
            "nud",
            "permanent",
        ],
        &[
            "route",
            "replace",
            "10.244.251.0/24",
            "via",
            "198.18.0.251",
            "dev",
            "eth0",
            "proto",
            "87",
        ],
        &[
            "route",
            "replace",
            "10.244.252.0/24",
            "via",
            "198.18.0.252",
            "dev",
            "eth0",
            "proto",
            "static",
        ],
    ] {
        ip(&ns, args).expect("add stale entry");
    }
    sh(&format!(
        "bridge -n {ns} fdb append {stale_mac} dev flannel.1 dst 198.18.0.250 self permanent"
    ))
    .expect("fdb append");
    let stale_present = |ns: &str| -> Vec<&'static str> {
        let mut have = Vec::new();
        if route_to(ns, "10.244.250.0/24").is_some() {
            have.push("vxlan route");
        }
        if route_to(ns, "10.244.251.0/24").is_some() {
            have.push("host-gw route");
        }
        if ip_json(ns, &["neigh", "show", "dev", "flannel.1"])
            .is_ok_and(|v| v.iter().any(|n| n["dst"] == "10.244.250.0"))
        {
            have.push("neighbour");
        }
        if sh(&format!("bridge -n {ns} fdb show dev flannel.1"))
            .is_ok_and(|t| t.contains(stale_mac))
        {
            have.push("fdb");
        }
        have
    };
    assert_eq!(stale_present(&ns).len(), 4);

    lab.etcd().expect("etcd").stop();
    lab.start_node(1).expect("start");
    let until = Instant::now() + wait_down;
    while Instant::now() < until {
        let have = stale_present(&ns);
        assert_eq!(
            have.len(),
            4,
            "removed while etcd was down (only {have:?} left); log:\n{}",
            lab.log_tail(1, 30)
        );
        assert!(
            lab.node_running(1).expect("status"),
            "agent exited: {}",
            lab.log_tail(1, 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = lab.log(1).expect("log");
    assert!(
        log.contains("cached peers from"),
        "node 1 did not boot from its peer cache while etcd was down; log:\n{}",
        lab.log_tail(1, 30)
    );
    lab.etcd().expect("etcd").restart().expect("restart");
    let back = Instant::now();
    let t = time_until(EVENTUALLY, || stale_present(&ns).is_empty()).unwrap_or_else(|| {
        panic!(
            "stale entries {:?} not removed after etcd returned; log:\n{}",
            stale_present(&ns),
            lab.log_tail(1, 40)
        )
    });
    figure(
        "R6",
        "etcd back → stale routes/ARP/FDB removed",
        ms(back.elapsed().max(t)),
        "-",
    );
    assert!(
        route_to(&ns, "10.244.252.0/24").is_some(),
        "a route that is not weft's was removed"
    );
    wait_until(CONVERGE, || peers_programmed(&lab, 1)).expect("live peer programmed");
    assert_agents_alive(&mut lab, &[]);
    lab.teardown().expect("teardown");
}
