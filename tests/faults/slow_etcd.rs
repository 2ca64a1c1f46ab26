//! Slow etcd (issue 14, scenario 3): the agents reach etcd through a proxy that delays each
//! direction by 100 ms, 200 ms more per round trip (`weft_testkit::delay_proxy`; these kernels
//! have no netem). Under 10/s pod pings the watch must stay up (no timeout that drops it in a
//! loop) and a lease change must reach the kernel later by about the one-way latency only,
//! compared with the same measurement against etcd directly in the same run.
use super::*;
use weft_testkit::delay_proxy::DelayProxy;

/// One-way delay the proxy adds.
const DELAY: Duration = Duration::from_millis(100);

/// Writes a lease for each of `subnets` (a node that does not exist, on the underlay) and times
/// put → route on every node, then deletes it again (and waits for the route to go). Sorted.
fn event_to_kernel(lab: &Lab, subnets: &[String]) -> Vec<Duration> {
    let mut times = Vec::new();
    for net in subnets {
        let put = Instant::now();
        lab.etcdctl(&[
            "put",
            &lease_key(net),
            &host_gw_value(Ipv4Addr::new(198, 18, 0, 200)),
        ])
        .expect("put lease");
        for k in 1..=lab.nodes() {
            let ns = lab.node_ns(k).expect("ns").to_owned();
            time_until(EVENTUALLY, || route_to(&ns, net).is_some())
                .unwrap_or_else(|| panic!("node {k} never programmed {net}"));
        }
        times.push(put.elapsed());
        lab.etcdctl(&["del", &lease_key(net)]).expect("del lease");
        for k in 1..=lab.nodes() {
            let ns = lab.node_ns(k).expect("ns").to_owned();
            time_until(EVENTUALLY, || route_to(&ns, net).is_none())
                .unwrap_or_else(|| panic!("node {k} kept {net}"));
        }
    }
    times.sort();
    times
}

#[test]
fn slow_etcd_keeps_the_watch_and_adds_only_the_latency() {
    if !common::need::root("slow_etcd_keeps_the_watch_and_adds_only_the_latency") {
        return;
    }
    let mut lab = converged_lab(3, "host-gw");
    let phantoms = free_subnets(&lab, 10);
    let direct = event_to_kernel(&lab, &phantoms);

    // The same nodes restarted against the proxy.
    let upstream: std::net::SocketAddr = lab
        .etcd_endpoint()
        .expect("endpoint")
        .trim_start_matches("http://")
        .parse()
        .expect("etcd address");
    let proxy = DelayProxy::start(Some(lab.underlay_ns()), upstream.ip(), upstream, DELAY)
        .expect("delay proxy");
    for k in 1..=3 {
        lab.stop_node(k, Signal::SIGTERM)
            .expect("stop")
            .expect("was running");
    }
    lab.set_extra_flags(vec![format!("--etcd-endpoints=http://{}", proxy.addr())]);
    lab.start_all().expect("start agents behind the proxy");
    wait_ready(&mut lab);
    lab.add_pods().expect("pods");
    let pinger = Pinger::start(&lab, 1, 3);
    let started = Instant::now();
    let slow = event_to_kernel(&lab, &phantoms);
    // Stay behind the slow link a while: keepalives and lease renewals must not time out.
    let hold = Duration::from_secs(knob("WEFT_FAULTS_SLOW_SECS", 5));
    while started.elapsed() < hold {
        assert_agents_alive(&mut lab, &[]);
        std::thread::sleep(Duration::from_millis(200));
    }
    let stats = pinger.stop();

    let p50 = |t: &[Duration]| t[t.len() / 2];
    let grew = p50(&slow).saturating_sub(p50(&direct));
    figure(
        "14.3",
        "event → kernel p50, etcd direct",
        ms(p50(&direct)),
        "-",
    );
    figure(
        "14.3",
        "event → kernel p50, +100 ms each way",
        ms(p50(&slow)),
        "direct + about 100 ms",
    );
    figure("14.3", "growth of the p50", ms(grew), "≈ 100 ms (one way)");
    figure(
        "14.3",
        &format!("pings lost ({} sent)", stats.sent),
        stats.lost.len(),
        "0",
    );
    assert!(stats.lost.is_empty(), "pings lost: {stats:?}");
    for k in 1..=3 {
        let log = lab.log(k).expect("log");
        let behind = log
            .rsplit("--etcd-endpoints=http://")
            .next()
            .unwrap_or_default()
            .to_owned();
        assert!(
            !behind.contains("lease watch disconnected") && !behind.contains("timed out"),
            "node {k}: the watch dropped behind the slow link; log:\n{}",
            lab.log_tail(k, 40)
        );
    }
    // "It happened at all" bound: a watch that dropped and came back would take seconds.
    assert!(
        grew < Duration::from_secs(1),
        "event → kernel grew by {grew:?}"
    );
    drop(proxy);
}
