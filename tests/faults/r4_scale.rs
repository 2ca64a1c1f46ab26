//! R4: 50 nodes join at once, and foreign writes to a node's key are defended.
use super::*;

#[test]
fn r4_fifty_nodes_join_at_once_and_keys_are_defended() {
    if !common::need::root("r4_fifty_nodes_join_at_once_and_keys_are_defended") {
        return;
    }
    let n = usize::try_from(knob("WEFT_FAULTS_NODES", 50)).expect("nodes");
    let mut lab = Lab::build(spec(n, "host-gw")).expect("build lab");
    let started = Instant::now();
    lab.start_all().expect("start");
    for k in 1..=n {
        lab.wait_subnet_env(k, READY * 2).expect("subnet.env");
    }
    let all_ready = started.elapsed();
    for k in 1..=n {
        wait_until(CONVERGE * 2, || hostgw_routes_ok(&lab, k)).expect("routes");
    }
    let converged = started.elapsed();
    let subnets: BTreeSet<_> = (1..=n).map(|k| lab.subnet(k).expect("subnet")).collect();
    assert_eq!(subnets.len(), n, "{n} nodes must get {n} distinct subnets");
    figure(
        "R4",
        &format!("{n} nodes started at once: distinct subnets"),
        subnets.len(),
        &n.to_string(),
    );
    figure(
        "R4",
        &format!("{n} nodes: start → all subnet.env written"),
        ms(all_ready),
        "-",
    );
    figure(
        "R4",
        &format!("{n} nodes: start → every node has all {} routes", n - 1),
        ms(converged),
        "-",
    );
    let mems: Vec<(u64, u64)> = (1..=n).map(|k| memory_kib(agent_pid(&lab, k))).collect();
    let max_hwm = mems.iter().map(|m| m.1).max().unwrap_or(0);
    let sum_rss: u64 = mems.iter().map(|m| m.0).sum();
    figure(
        "R4",
        &format!("{n} nodes: largest agent VmHWM"),
        format!("{:.1} MiB", max_hwm as f64 / 1024.0),
        "-",
    );
    figure(
        "R4",
        &format!("{n} nodes: all agents' VmRSS together"),
        format!("{:.1} MiB", sum_rss as f64 / 1024.0),
        "-",
    );

    // Someone overwrites node 2's key with another value: node 2 writes its own back, and
    // the peers end on the right route.
    let victim = 2;
    let net = lab.subnet(victim).expect("subnet").to_string();
    let key = lease_key(&net);
    let peers_of = |victim: usize| -> Vec<String> {
        (1..=n.min(5))
            .filter(|&k| k != victim)
            .take(3)
            .map(|k| lab.node_ns(k).expect("ns").to_owned())
            .collect()
    };
    let watch = GatewayWatch::start(peers_of(victim), net.clone(), format!("198.18.0.{victim}"));
    let own_value = lab
        .etcdctl(&["get", &key, "--print-value-only"])
        .expect("get");
    let own_value = own_value.trim().to_owned();
    lab.etcdctl(&["put", &key, &host_gw_value(Ipv4Addr::new(198, 18, 0, 99))])
        .expect("overwrite");
    let t = time_until(EVENTUALLY, || {
        lab.etcdctl(&["get", &key, "--print-value-only"])
            .is_ok_and(|v| v.trim() == own_value)
    });
    let t = t.unwrap_or_else(|| {
        panic!(
            "node {victim} did not write its lease back after an overwrite; log:\n{}",
            lab.log_tail(victim, 30)
        )
    });
    figure(
        "R4",
        "foreign overwrite of a node's key → the node's value back",
        ms(t),
        "-",
    );
    for k in 1..=n {
        wait_until(CONVERGE, || hostgw_routes_ok(&lab, k)).expect("routes after overwrite");
    }
    // The key is attached to an etcd lease again (not left as a reservation).
    let lease = key_lease(&lab, &key);
    assert_ne!(lease, 0, "node {victim}'s key lost its etcd lease");

    let (polls, wrong) = watch.stop();
    figure(
        "R4",
        "overwrite: 10 ms polls where a peer's route to the node was missing or wrong",
        format!("{} of {polls}", wrong.len()),
        "0",
    );
    eprintln!("overwrite: {wrong:?}");

    // Someone deletes node 3's key: node 3 takes the same subnet again.
    let victim = 3;
    let net = lab.subnet(victim).expect("subnet").to_string();
    let key = lease_key(&net);
    let watch = GatewayWatch::start(peers_of(victim), net.clone(), format!("198.18.0.{victim}"));
    lab.etcdctl(&["del", &key]).expect("delete");
    let t = time_until(EVENTUALLY, || {
        lab.etcdctl(&["get", &key, "--print-value-only"])
            .is_ok_and(|v| v.contains(&format!("\"198.18.0.{victim}\"")))
    })
    .unwrap_or_else(|| {
        panic!(
            "node {victim} did not re-acquire; log:\n{}",
            lab.log_tail(victim, 30)
        )
    });
    figure(
        "R4",
        "delete of a node's key → same subnet re-acquired",
        ms(t),
        "-",
    );
    assert_eq!(lab.subnet(victim).expect("subnet").to_string(), net);
    for k in 1..=n {
        wait_until(CONVERGE, || hostgw_routes_ok(&lab, k)).expect("routes after delete");
    }
    let (polls, wrong) = watch.stop();
    figure(
        "R4",
        "delete: 10 ms polls where a peer's route to the node was missing or wrong",
        format!("{} of {polls}", wrong.len()),
        "0",
    );
    eprintln!("delete: {wrong:?}");
    let subnets: BTreeSet<_> = (1..=n).map(|k| lab.subnet(k).expect("subnet")).collect();
    assert_eq!(subnets.len(), n);
    assert_agents_alive(&mut lab, &[]);
    lab.teardown().expect("teardown");
}

/// The etcd lease id attached to a key (0 = none).
fn key_lease(lab: &Lab, key: &str) -> i64 {
    let out = lab.etcdctl(&["get", key, "-w", "json"]).expect("get");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    v["kvs"][0]["lease"].as_i64().unwrap_or(0)
}
