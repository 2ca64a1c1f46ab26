//! R2: SIGTERM and kill -9 restarts lose no ping.
use super::*;

#[test]
fn r2_sigterm_and_kill9_restarts_lose_no_ping() {
    if !common::need::root("r2_sigterm_and_kill9_restarts_lose_no_ping") {
        return;
    }
    let down = Duration::from_secs(knob("WEFT_FAULTS_DOWN_SECS", 2));
    let mut lab = converged_lab(3, "host-gw");
    lab.add_pods().expect("pods");
    let subnet = lab.subnet(2).expect("subnet");
    let pings = [Pinger::start(&lab, 1, 2), Pinger::start(&lab, 2, 3)];
    let watch = RouteWatch::start(all_ns(&lab, 2), subnet.to_string());

    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        let status = lab
            .stop_node(2, signal)
            .expect("stop")
            .expect("node 2 was running");
        if signal == Signal::SIGTERM {
            assert!(status.success(), "SIGTERM must exit 0: {status}");
        }
        std::thread::sleep(down);
        let started = SystemTime::now();
        lab.start_node(2).expect("start");
        let env = lab
            .wait_subnet_env_since(2, Some(started), READY)
            .expect("subnet.env rewritten");
        let written = lab
            .subnet_env_mtime(2)
            .expect("mtime")
            .expect("subnet.env exists");
        let ready = written.duration_since(started).unwrap_or_default();
        assert_eq!(
            env.subnet,
            Some(subnet),
            "node 2 changed subnet after {signal}"
        );
        figure(
            "R2",
            &format!("{signal} restart: start → subnet.env rewritten"),
            ms(ready),
            "≤ 1 s",
        );
        for k in 1..=3 {
            wait_until(CONVERGE, || hostgw_routes_ok(&lab, k)).expect("routes after restart");
        }
    }
    // A few quick SIGTERM restarts more: each must be a clean exit (a shutdown race once made
    // it exit 101 now and then).
    for round in 0..5 {
        let started = SystemTime::now();
        let status = lab
            .stop_node(2, Signal::SIGTERM)
            .expect("stop")
            .expect("running");
        assert!(
            status.success(),
            "SIGTERM round {round}: exit {status}; log:\n{}",
            lab.log_tail(2, 30)
        );
        lab.start_node(2).expect("start");
        lab.wait_subnet_env_since(2, Some(started), READY)
            .expect("subnet.env rewritten");
    }
    let (polls, missing) = watch.stop();
    assert!(polls > 10, "the route watch barely ran ({polls} polls)");
    assert!(
        missing.is_empty(),
        "peers lost the route:\n{}",
        missing.join("\n")
    );
    for p in pings {
        let stats = p.stop();
        figure(
            "R2",
            &format!(
                "pings lost across SIGTERM + kill -9 restarts ({} sent at 10/s)",
                stats.sent
            ),
            stats.lost.len(),
            "0",
        );
        assert!(stats.lost.is_empty(), "pings lost: {stats:?}");
    }
    // A node whose lease outlived its process keeps one etcd lease (no orphans).
    assert_agents_alive(&mut lab, &[]);
    lab.teardown().expect("teardown");
}
