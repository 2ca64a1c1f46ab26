//! CI smoke of the benchmark (`scripts/bench.sh`): the same code with 50 peers, short windows and
//! a 1 s iperf3, against the debug agent. It checks that every measurement runs and reads
//! sensible values; it never judges speed (BENCHMARKS.md does, from a release build).
#[path = "../benches/agent/bench.rs"]
#[allow(dead_code)]
mod bench;
#[path = "../benches/agent/dual.rs"]
mod dual;
#[path = "../benches/agent/kube.rs"]
mod kube;

use std::path::PathBuf;
use std::time::Duration;

use bench::{Config, Kind};
use weft_testkit::need;

#[test]
fn bench_runs_every_measurement_with_50_peers() {
    if !need::root("bench_runs_every_measurement_with_50_peers") {
        return;
    }
    let cfg = Config {
        weft_bin: match std::env::var_os("WEFT_TEST_BIN") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(env!("CARGO_BIN_EXE_weft")),
        },
        backends: vec![Kind::HostGw, Kind::Vxlan],
        sizes: vec![50],
        detail_at: 50,
        events: 5,
        idle: Duration::from_secs(2),
        iperf_secs: 1,
        iperf_rounds: 1,
        underlay_gro: true,
        kube: true,
        dual: true,
    };
    let report = bench::run(&cfg).expect("benchmark run");
    println!("{}", bench::markdown(&cfg, &report));

    assert_eq!(report.cold.len(), 2);
    for c in &report.cold {
        let kind = c.kind.expect("kind");
        assert_eq!(c.entries, 50 * kind.entries_per_peer());
        assert!(
            c.ready > Duration::ZERO && c.programmed > Duration::ZERO,
            "{c:?}"
        );
        assert!(c.ip_batch > Duration::ZERO, "{c:?}");
        assert!(c.vm_hwm_kib > 0, "{c:?}");
        // The agent's start reads etcd: at least the lease list.
        assert!(
            c.start_rpcs.get("Range").copied().unwrap_or(0) >= 1,
            "{c:?}"
        );
    }
    // Dual-stack at the detail size: every IPv4 and IPv6 route, against ip -batch of both.
    assert_eq!(report.dual.len(), 2);
    for r in &report.dual {
        assert_eq!(r.peers, 50);
        assert!(
            r.programmed >= r.ready && r.ip_batch > Duration::ZERO,
            "{r:?}"
        );
        assert!(r.vm_hwm_kib > 0, "{r:?}");
    }
    assert_eq!(report.detail.len(), 2);
    for d in &report.detail {
        assert_eq!(d.add_latency.len(), 5, "{d:?}");
        assert_eq!(d.etcd_latency.len(), 10, "{d:?}");
        assert_eq!(d.del_latency.len(), 5, "{d:?}");
        assert_eq!(
            d.reconcile_latency.len(),
            10,
            "one reconcile per lease change: {d:?}"
        );
        // A no-change resync is read from the agent's log and writes nothing.
        assert_eq!(d.resync_writes, Some(0), "{d:?}");
        assert!(d.resync_total.is_some(), "{d:?}");
        assert!(d.idle_secs >= 2.0, "{d:?}");
        assert_eq!(d.idle_children_seen, 0, "the agent forks nothing: {d:?}");
    }
    // Kube mode beside etcd mode at the detail size, for both backends.
    assert_eq!(report.kube.len(), 2);
    for k in &report.kube {
        assert_eq!(k.nodes, 50, "{k:?}");
        assert!(k.programmed > Duration::ZERO && k.vm_hwm_kib > 0, "{k:?}");
        assert_eq!((k.add_latency.len(), k.del_latency.len()), (5, 5), "{k:?}");
        assert!(
            k.etcd_programmed > Duration::ZERO && k.etcd_add_p99.is_some(),
            "{k:?}"
        );
    }
    let t = report.throughput.expect("iperf3 figures");
    assert_eq!(t.vxlan_mtu + 50, t.hostgw_mtu, "{t:?}");
    // One set with the veths as created, one with GRO on them; one run per path in each.
    assert_eq!(t.sets.len(), 2, "{t:?}");
    assert!(!t.sets[0].gro && t.sets[1].gro, "{t:?}");
    for set in &t.sets {
        assert_eq!((set.hostgw.len(), set.vxlan.len()), (1, 1), "{t:?}");
        for run in set.hostgw.iter().chain(&set.vxlan) {
            assert!(run.bps > 0.0, "{t:?}");
            assert!(run.cpu_ms_per_gb > 0.0, "{t:?}");
            // Node 1 sent the data over its eth0: whole packets of at least one MTU-sized
            // segment on average (more when GSO packets cross the veth whole).
            assert!(run.underlay_packet_bytes >= 1000.0, "{t:?}");
        }
    }
    // ethtool's view of node 1's devices in both labs, the vxlan device among them.
    assert!(
        t.offloads.iter().any(|l| l.contains("flannel.1 (vxlan")),
        "{:?}",
        t.offloads
    );
    assert!(
        t.offloads.iter().all(|l| !l.contains(" ?")),
        "every offload state read: {:?}",
        t.offloads
    );
}

#[test]
fn parses_etcd_metrics_and_agent_log_lines() {
    let metrics = "\
# TYPE grpc_server_started_total counter
grpc_server_started_total{grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 3
grpc_server_started_total{grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"} 1
grpc_server_msg_received_total{grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"} 2
grpc_server_msg_received_total{grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 3
";
    let m = bench::parse_rpcs(metrics);
    assert_eq!(m.get("Range"), Some(&3));
    assert_eq!(m.get("Watch"), Some(&1));
    assert_eq!(m.get("Watch msgs"), Some(&2));
    assert_eq!(m.len(), 3, "{m:?}");

    let log = "\
2026-11-24T11:05:00.8Z DEBUG weft::app: reconcile (lease change): 5009 peers, 3 writes, 0 failures in 8.513065ms (plan 5.832824ms)
2026-11-24T11:05:01.0Z DEBUG weft::app: reconcile (audit (SIGHUP)): 5000 peers, 0 writes, 0 failures in 912.5µs (plan 700µs)
2026-11-24T11:05:01.0Z DEBUG weft::app: audit (SIGHUP): dump and diff in 6.3ms
2026-11-29T16:05:01.2Z DEBUG weft::app: reconcile (lease change): 5010 peers, 3 writes, 0 failures in 1.2ms (plan 30µs, incremental: 1 changed peers)
";
    let (writes, reconcile, total) = bench::parse_audit(log);
    assert_eq!(writes, Some(0));
    // Plan writes and nexthop writes both count.
    let with_nexthops = "2026-11-24T11:05:01.0Z DEBUG weft::app: reconcile (audit (SIGHUP)): 5000 peers, 2 writes, 3 nexthop writes, 0 failures in 912.5µs (plan 700µs)";
    assert_eq!(bench::parse_audit(with_nexthops).0, Some(5));
    assert_eq!(reconcile, Some(Duration::from_nanos(912_500)));
    assert_eq!(total, Some(Duration::from_micros(6300)));
    let changes = bench::lease_change_reconciles(log);
    assert_eq!(
        changes,
        vec![
            (
                Duration::from_nanos(8_513_065),
                Duration::from_nanos(5_832_824)
            ),
            (Duration::from_micros(1200), Duration::from_micros(30))
        ]
    );
    assert_eq!(
        bench::parse_debug_duration("1.5s"),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(
        bench::percentile(&[Duration::from_millis(1), Duration::from_millis(9)], 50.0),
        Duration::from_millis(1)
    );
}
