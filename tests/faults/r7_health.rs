//! R7: /healthz and /readyz, served on loopback only.
use super::*;

#[test]
fn r7_healthz_readyz_and_loopback_only() {
    if !common::need::root("r7_healthz_readyz_and_loopback_only") {
        return;
    }
    let port = weft_testkit::lab::DEFAULT_HEALTHZ_PORT;
    let mut lab = Lab::build(spec(2, "host-gw")).expect("build lab");
    lab.start_node(2).expect("start 2");
    lab.wait_subnet_env(2, READY).expect("node 2 ready");
    // Node 1 starts while etcd is down: alive, not ready.
    lab.etcd().expect("etcd").stop();
    lab.start_node(1).expect("start 1");
    let ns1 = lab.node_ns(1).expect("ns").to_owned();
    wait_until(READY, || {
        match http_get(&ns1, "127.0.0.1", port, "/healthz") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("/healthz: {other:?}")),
        }
    })
    .expect("/healthz answers 200 while etcd is down");
    // etcd stays down a while (the full run: longer than the health server's 60 s staleness
    // bound, as a liveness probe would see a node booting through an outage): alive all along,
    // never ready.
    let down = Duration::from_secs(knob("WEFT_FAULTS_R7_DOWN_SECS", 3));
    let until = Instant::now() + down;
    while Instant::now() < until {
        match http_get(&ns1, "127.0.0.1", port, "/healthz") {
            Ok((200, _)) => {}
            other => panic!(
                "/healthz while etcd is down at start: {other:?}; log:\n{}",
                lab.log_tail(1, 20)
            ),
        }
        match http_get(&ns1, "127.0.0.1", port, "/readyz") {
            Ok((503, _)) => {}
            other => panic!("/readyz before the lease is held: {other:?}"),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    figure(
        "R7",
        &format!(
            "etcd down {} s at start: /healthz 200 and /readyz 503 throughout",
            down.as_secs()
        ),
        "yes",
        "yes",
    );
    lab.etcd().expect("etcd").restart().expect("restart");
    let back = Instant::now();
    wait_until(READY, || {
        match http_get(&ns1, "127.0.0.1", port, "/readyz") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("/readyz: {other:?}")),
        }
    })
    .expect("/readyz 200 once ready");
    figure(
        "R7",
        "etcd back → /readyz 200 (fresh start)",
        ms(back.elapsed()),
        "-",
    );
    assert!(
        lab.subnet_file(1).expect("path").exists(),
        "ready before subnet.env"
    );
    // Bound to 127.0.0.1: the node's own address and other nodes are refused.
    let node_ip = lab.node_ip(1).expect("ip").to_string();
    for from in [1, 2] {
        let ns = lab.node_ns(from).expect("ns").to_owned();
        let got = http_get(&ns, &node_ip, port, "/healthz");
        assert!(
            got.is_err(),
            "node {from} reached {node_ip}:{port}: {got:?}"
        );
    }
    figure(
        "R7",
        "health server reachable on the node IP",
        "no (refused)",
        "no",
    );
    assert_agents_alive(&mut lab, &[]);
    lab.teardown().expect("teardown");
}
