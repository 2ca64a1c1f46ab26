//! R1: an etcd outage keeps the data plane and resumes; re-acquiring with etcd down keeps
//! repairing; a compaction while cut off re-lists and misses nothing.
use super::*;

#[test]
fn r1_etcd_outage_keeps_the_data_plane_and_resumes() {
    if !common::need::root("r1_etcd_outage_keeps_the_data_plane_and_resumes") {
        return;
    }
    let outage = Duration::from_secs(knob("WEFT_FAULTS_OUTAGE_SECS", 10));
    let mut lab = converged_lab(3, "host-gw");
    lab.add_pods().expect("pods");
    let pings = [Pinger::start(&lab, 1, 2), Pinger::start(&lab, 3, 1)];
    let routes_before: Vec<String> = (1..=3)
        .map(|k| lab.routes_text(k).expect("routes"))
        .collect();

    let cpu = CpuWindow::start(&lab);
    lab.etcd().expect("etcd").stop();
    let outage_start = Instant::now();
    // Drift repair needs no etcd: an out-of-band route delete during the outage is repaired.
    std::thread::sleep(Duration::from_secs(1).min(outage / 2));
    let n2 = lab.subnet(2).expect("subnet").to_string();
    let ns1 = lab.node_ns(1).expect("ns").to_owned();
    ip(&ns1, &["route", "del", &n2]).expect("ip route del");
    let repaired = time_until(EVENTUALLY, || route_to(&ns1, &n2).is_some())
        .expect("route deleted during the etcd outage was not repaired");
    figure(
        "R1/R5",
        "route repair while etcd is down",
        ms(repaired),
        "≤ 1 s",
    );
    while outage_start.elapsed() < outage {
        assert_agents_alive(&mut lab, &[]);
        for k in 1..=3 {
            if let Err(e) = hostgw_routes_ok(&lab, k) {
                panic!("during the etcd outage: {e}");
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let cpu_pct = cpu.max_percent();
    figure(
        "R1",
        &format!(
            "agent CPU during a {}s etcd outage (busiest agent)",
            outage.as_secs()
        ),
        format!("{cpu_pct:.2} %"),
        "≤ 1 %",
    );

    // etcd returns; a lease written right after must reach every node's kernel.
    let restarting = Instant::now();
    lab.etcd().expect("etcd").restart().expect("etcd restart");
    let back = Instant::now();
    let phantom = "10.244.200.0/24";
    lab.etcdctl(&[
        "put",
        &lease_key(phantom),
        &host_gw_value(Ipv4Addr::new(198, 18, 0, 200)),
    ])
    .expect("put lease");
    for k in 1..=3 {
        let ns = lab.node_ns(k).expect("ns").to_owned();
        if time_until(EVENTUALLY, || route_to(&ns, phantom).is_some()).is_none() {
            panic!(
                "node {k} never programmed a lease written after etcd's return; log:\n{}",
                lab.log_tail(k, 40)
            );
        }
    }
    // Nodes are polled one after the other: this is when the last one had it.
    let resume = back.elapsed();
    figure(
        "R1",
        "etcd process started → healthy (etcd's own start, for scale)",
        ms(back - restarting),
        "-",
    );
    figure(
        "R1",
        "etcd back → first new lease programmed on every node",
        ms(resume),
        "≤ 1 s",
    );
    for (k, before) in (1..=3).zip(&routes_before) {
        // Same routes as before the outage, plus the new one.
        let now = lab.routes_text(k).expect("routes");
        for line in before.lines() {
            assert!(now.contains(line), "node {k} lost `{line}`; now:\n{now}");
        }
    }
    for p in pings {
        let stats = p.stop();
        figure(
            "R1",
            &format!("pings lost during the outage ({} sent at 10/s)", stats.sent),
            stats.lost.len(),
            "0",
        );
        assert!(stats.replied > 0, "{stats:?}");
        assert!(stats.lost.is_empty(), "pings lost: {stats:?}");
    }
    for k in 1..=3 {
        let log = lab.log(k).expect("log");
        assert!(
            log.contains("lease watch disconnected") && log.contains("lease watch reconnected"),
            "node {k} did not report the outage; log:\n{}",
            lab.log_tail(k, 40)
        );
        // etcd kept its data: the watch resumes from the next revision, no re-list.
        assert!(
            log.contains("etcd watch re-established at revision") && !log.contains("re-listed"),
            "node {k} did not resume the watch from its revision; log:\n{}",
            lab.log_tail(k, 40)
        );
    }
    // A busy loop would show here whatever the machine's speed.
    assert!(
        cpu_pct < 25.0,
        "an agent used {cpu_pct:.1}% CPU while etcd was down"
    );
    assert_agents_alive(&mut lab, &[]);
    lab.teardown().expect("teardown");
}

/// Bytes waiting in node `k`'s receive queues of TCP connections to etcd (`ss` in its
/// namespace): the etcd events the agent has not read yet.
fn etcd_recv_queue(lab: &Lab, k: usize) -> u64 {
    let endpoint = lab.etcd_endpoint().expect("endpoint");
    let host = endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .split(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let ns = lab.node_ns(k).expect("ns");
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-tnH", "dst", &host])
        .output()
        .expect("ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// The own key deleted and etcd gone before the agent could take its subnet again: the agent
/// re-acquires in the background, and meanwhile keeps repairing drift and answering /healthz;
/// when etcd returns it holds the same subnet again.
#[test]
fn r1_reacquiring_with_etcd_down_keeps_repairing() {
    if !common::need::root("r1_reacquiring_with_etcd_down_keeps_repairing") {
        return;
    }
    let mut lab = converged_lab(2, "host-gw");
    let n1 = lab.subnet(1).expect("subnet").to_string();
    let n2 = lab.subnet(2).expect("subnet").to_string();
    let ns1 = lab.node_ns(1).expect("ns").to_owned();
    let key = lease_key(&n1);
    let value = lab
        .etcdctl(&["get", &key, "--print-value-only"])
        .expect("get");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(agent_pid(&lab, 1)).expect("pid"));

    // Node 1's agent is frozen while its key is deleted, until the delete event sits in its
    // socket; then etcd stops, and the agent wakes up to a deletion it cannot repair yet.
    nix::sys::signal::kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
    let resumed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lab.etcdctl(&["del", &key]).expect("del");
        wait_until(Duration::from_secs(10), || {
            if etcd_recv_queue(&lab, 1) > 0 {
                Ok(())
            } else {
                Err("the delete event has not reached node 1's socket".to_owned())
            }
        })
        .expect("delete event delivered");
        lab.etcd().expect("etcd").stop();
    }));
    nix::sys::signal::kill(pid, Signal::SIGCONT).expect("SIGCONT");
    if let Err(panic) = resumed {
        std::panic::resume_unwind(panic);
    }
    wait_until(EVENTUALLY, || {
        let log = lab.log_tail(1, 50);
        if log.contains("re-acquiring our lease failed") {
            Ok(())
        } else {
            Err("node 1 is not retrying its lease yet".to_owned())
        }
    })
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", lab.log_tail(1, 40)));

    // While the re-acquire waits for etcd, drift repair and health keep running.
    ip(&ns1, &["route", "del", &n2]).expect("ip route del");
    let repaired = time_until(EVENTUALLY, || route_to(&ns1, &n2).is_some()).unwrap_or_else(|| {
        panic!(
            "route deleted while re-acquiring with etcd down was not repaired; log:\n{}",
            lab.log_tail(1, 40)
        )
    });
    figure(
        "R1/R5",
        "route repair while re-acquiring the own lease with etcd down",
        ms(repaired),
        "≤ 1 s",
    );
    match http_get(
        &ns1,
        "127.0.0.1",
        weft_testkit::lab::DEFAULT_HEALTHZ_PORT,
        "/healthz",
    ) {
        Ok((200, _)) => {}
        other => panic!("/healthz while re-acquiring: {other:?}"),
    }
    assert!(
        hostgw_routes_ok(&lab, 1).is_ok(),
        "{:?}",
        hostgw_routes_ok(&lab, 1)
    );

    // etcd returns: the same subnet, the same value, and the peer still programmed.
    lab.etcd().expect("etcd").restart().expect("etcd restart");
    let back = Instant::now();
    wait_until(EVENTUALLY, || {
        match lab.etcdctl(&["get", &key, "--print-value-only"]) {
            Ok(v) if v == value => Ok(()),
            other => Err(format!("{key}: {other:?}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", lab.log_tail(1, 40)));
    figure(
        "R1",
        "etcd back → own lease re-acquired (same subnet)",
        ms(back.elapsed()),
        "-",
    );
    assert!(
        lab.log(1)
            .expect("log")
            .contains(&format!("re-acquired subnet {}", n1.replace('/', "-")))
    );
    assert_eq!(lab.subnet(1).expect("subnet").to_string(), n1);
    // Node 2 dropped its route when the key was deleted; its watch resumes after etcd's
    // return (reconnect backoff up to 1 s) and brings the re-acquired lease back.
    wait_until(EVENTUALLY, || hostgw_routes_ok(&lab, 2))
        .unwrap_or_else(|e| panic!("{e}; node 2 log:\n{}", lab.log_tail(2, 40)));
    assert_agents_alive(&mut lab, &[]);
    lab.teardown().expect("teardown");
}

#[test]
fn r1_compaction_while_cut_off_relists_and_misses_nothing() {
    if !common::need::root("r1_compaction_while_cut_off_relists_and_misses_nothing") {
        return;
    }
    let mut lab = converged_lab(3, "host-gw");
    let (a, b, c) = ("10.244.203.0/24", "10.244.201.0/24", "10.244.202.0/24");
    let ip_of = |last: u8| Ipv4Addr::new(198, 18, 0, last);
    lab.etcdctl(&["put", &lease_key(b), &host_gw_value(ip_of(201))])
        .expect("put");
    lab.etcdctl(&["put", &lease_key(c), &host_gw_value(ip_of(202))])
        .expect("put");
    let nss = all_ns(&lab, 0);
    for ns in &nss {
        wait_until(CONVERGE, || {
            route_to(ns, b)
                .and(route_to(ns, c))
                .map(|_| ())
                .ok_or_else(|| format!("{ns}: no routes to {b} and {c} yet"))
        })
        .expect("phantom leases programmed");
    }

    // Cut the nodes off (resets, as if etcd were down) and restart etcd, which drops every
    // established connection: the agents now retry against the firewall.
    let cut = Cut::start(&lab);
    lab.etcd().expect("etcd").restart().expect("restart etcd");
    // While cut off: a lease appears, one goes, one moves; then compaction.
    lab.etcdctl(&["put", &lease_key(a), &host_gw_value(ip_of(203))])
        .expect("put a");
    lab.etcdctl(&["del", &lease_key(b)]).expect("del b");
    lab.etcdctl(&["put", &lease_key(c), &host_gw_value(ip_of(212))])
        .expect("put c");
    for i in 0..5 {
        lab.etcdctl(&["put", "/weft-faults/filler", &i.to_string()])
            .expect("filler");
    }
    let rev = etcd_revision(&lab);
    lab.etcdctl(&["compact", &rev.to_string()])
        .expect("compact");
    // The agents saw none of it (they are cut off).
    std::thread::sleep(Duration::from_secs(2));
    for ns in &nss {
        assert!(route_to(ns, a).is_none(), "{ns} saw {a} through the cut");
        assert!(route_to(ns, b).is_some(), "{ns} lost {b} through the cut");
    }
    assert_agents_alive(&mut lab, &[]);

    cut.end();
    let reconnect = Instant::now();
    for ns in &nss {
        let t = time_until(EVENTUALLY, || {
            route_to(ns, a).is_some()
                && route_to(ns, b).is_none()
                && route_to(ns, c).is_some_and(|r| r["gateway"] == "198.18.0.212")
        });
        assert!(
            t.is_some(),
            "{ns} did not converge after the compaction: {:?}",
            routes_in(ns)
        );
    }
    figure(
        "R1",
        "reconnect after compaction → re-list converged (3 changes, all nodes)",
        ms(reconnect.elapsed()),
        "≤ 1 s",
    );
    for k in 1..=3 {
        let log = lab.log(k).expect("log");
        assert!(
            log.contains("compaction") && log.contains("re-listed"),
            "node {k} did not re-list after the compaction; log:\n{}",
            lab.log_tail(k, 40)
        );
        hostgw_routes_ok_plus(&lab, k, &[a, c]).expect("routes after re-list");
    }
    assert_agents_alive(&mut lab, &[]);
    lab.teardown().expect("teardown");
}

/// The node's weft routes are the other nodes' plus the given extra destinations.
fn hostgw_routes_ok_plus(lab: &Lab, k: usize, extra: &[&str]) -> Result<(), String> {
    let ns = lab.node_ns(k).map_err(|e| e.to_string())?;
    let mut want: BTreeSet<String> = (1..=lab.nodes())
        .filter(|&j| j != k)
        .map(|j| lab.subnet(j).expect("subnet").to_string())
        .collect();
    want.extend(extra.iter().map(|s| s.to_string()));
    let have: BTreeSet<String> = routes_in(ns)?
        .iter()
        .filter(|r| common::route_protocol_is(r, common::WEFT_ROUTE_PROTOCOL))
        .filter_map(|r| r["dst"].as_str().map(str::to_owned))
        .collect();
    if have != want {
        return Err(format!("node {k}: weft routes {have:?}, expected {want:?}"));
    }
    Ok(())
}
