//! Churn soak (issue 14, scenario 4): 5,000 peer leases (host-gw, network 10.0.0.0/8), then 20
//! lease changes a second (a peer's PublicIP moved, a peer deleted, a peer added back) for
//! `WEFT_FAULTS_CHURN_SECS` (60 s in CI, 30 minutes in the full run), with pods pinging at 10/s.
//! Measured on every agent after a warm-up (`WEFT_FAULTS_CHURN_WARMUP_SECS`) and at the end:
//! VmHWM, open file descriptors and threads; event → kernel on node 1 at the start and at the end
//! of the churn. Asserted: no agent exits, no fd or thread leak, no ping lost, and at the end
//! every node's kernel holds exactly the routes etcd's leases ask for.
use super::*;

const GW_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);
const GW_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 201);

/// Runs `f` on a thread inside `ns` with a current-thread runtime.
fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce(tokio::runtime::Runtime) -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        f(rt)
    })
}

/// `n` /24s of 10.0.0.0/8 for peers, none of them a node's.
fn peer_subnets(lab: &Lab, n: usize) -> Vec<String> {
    let held: BTreeSet<String> = (1..=lab.nodes())
        .map(|k| lab.subnet(k).expect("subnet").to_string())
        .collect();
    (0..u32::MAX)
        .map(|i| format!("10.{}.{}.0/24", 100 + i / 256, i % 256))
        .filter(|s| !held.contains(s))
        .take(n)
        .collect()
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// (VmHWM KiB, fds, threads) of each agent.
fn usage(lab: &Lab) -> Vec<(u64, usize, u64)> {
    (1..=lab.nodes())
        .map(|k| {
            let pid = agent_pid(lab, k);
            (memory_kib(pid).1, fds(pid), threads(pid))
        })
        .collect()
}

/// Protocol-87 routes inside 10.0.0.0/8 on node k: (dst, gateway).
fn peer_routes(lab: &Lab, k: usize) -> BTreeSet<(String, String)> {
    routes_in(lab.node_ns(k).expect("ns"))
        .expect("routes")
        .iter()
        .filter(|r| common::route_protocol_is(r, common::WEFT_ROUTE_PROTOCOL))
        .filter(|r| r["dst"].as_str().is_some_and(|d| d.starts_with("10.")))
        .map(|r| {
            (
                r["dst"].as_str().unwrap_or("").to_owned(),
                r["gateway"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Times `rounds` marker changes (put → route on node 1 → delete → route gone); sorted.
fn markers(lab: &Lab, subnet: &str, rounds: usize) -> Vec<Duration> {
    let ns1 = lab.node_ns(1).expect("ns").to_owned();
    let mut times = Vec::new();
    for _ in 0..rounds {
        let put = Instant::now();
        lab.etcdctl(&["put", &lease_key(subnet), &host_gw_value(GW_A)])
            .expect("put marker");
        time_until(EVENTUALLY, || route_to(&ns1, subnet).is_some()).expect("marker programmed");
        times.push(put.elapsed());
        lab.etcdctl(&["del", &lease_key(subnet)])
            .expect("del marker");
        time_until(EVENTUALLY, || route_to(&ns1, subnet).is_none()).expect("marker removed");
    }
    times.sort();
    times
}

#[test]
fn churn_soak_leaks_nothing_and_ends_exactly_as_etcd() {
    if !common::need::root("churn_soak_leaks_nothing_and_ends_exactly_as_etcd") {
        return;
    }
    let peers = usize::try_from(knob("WEFT_FAULTS_CHURN_PEERS", 5000)).expect("peers");
    let secs = knob("WEFT_FAULTS_CHURN_SECS", 60);
    let warmup = Duration::from_secs(knob("WEFT_FAULTS_CHURN_WARMUP_SECS", 10).min(secs / 2));
    let mut s = spec(3, "host-gw");
    s.network = "10.0.0.0/8".into();
    let mut lab = Lab::build(s).expect("build lab");
    lab.start_all().expect("start agents");
    wait_ready(&mut lab);
    let mut subnets = peer_subnets(&lab, peers + 1);
    let marker = subnets.pop().expect("marker subnet");
    let endpoint = lab.etcd_endpoint().expect("endpoint");
    // 5,000 leases, 100 per transaction.
    let keys: Vec<String> = subnets.iter().map(|s| lease_key(s)).collect();
    let fill = keys.clone();
    let ep = endpoint.clone();
    in_ns(lab.underlay_ns(), move |rt| {
        rt.block_on(async move {
            let mut c = etcd_client::Client::connect([ep], None)
                .await
                .expect("etcd");
            for chunk in fill.chunks(100) {
                let ops: Vec<etcd_client::TxnOp> = chunk
                    .iter()
                    .map(|k| etcd_client::TxnOp::put(k.as_str(), host_gw_value(GW_A), None))
                    .collect();
                c.txn(etcd_client::Txn::new().and_then(ops))
                    .await
                    .expect("txn");
            }
        });
    })
    .join()
    .expect("fill");
    for k in 1..=3 {
        time_until(Duration::from_secs(300), || {
            peer_routes(&lab, k).len() >= peers
        })
        .unwrap_or_else(|| panic!("node {k} never programmed {peers} peers"));
    }
    lab.add_pods().expect("pods");
    let pinger = Pinger::start(&lab, 1, 3);

    // The churn: 20 changes a second, on a thread in the underlay.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let churn_keys = keys.clone();
    let churn = in_ns(lab.underlay_ns(), move |rt| {
        rt.block_on(async move {
            let mut c = etcd_client::Client::connect([endpoint], None)
                .await
                .expect("etcd");
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            let mut changes = 0u64;
            while !stopping.load(std::sync::atomic::Ordering::SeqCst) {
                tick.tick().await;
                let key = &churn_keys[fastrand::usize(..churn_keys.len())];
                match fastrand::u8(0..3) {
                    0 => {
                        c.delete(key.as_str(), None).await.expect("delete");
                    }
                    1 => {
                        c.put(key.as_str(), host_gw_value(GW_B), None)
                            .await
                            .expect("put");
                    }
                    _ => {
                        c.put(key.as_str(), host_gw_value(GW_A), None)
                            .await
                            .expect("put");
                    }
                }
                changes += 1;
            }
            changes
        })
    });
    let started = Instant::now();
    let first = markers(&lab, &marker, 10);
    let wait_until_t = |t: Duration| {
        while started.elapsed() < t {
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_until_t(warmup);
    let warm = usage(&lab);
    wait_until_t(Duration::from_secs(secs).saturating_sub(Duration::from_secs(5)));
    let last = markers(&lab, &marker, 10);
    wait_until_t(Duration::from_secs(secs));
    let end = usage(&lab);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let changes = churn.join().expect("churn");
    let stats = pinger.stop();

    // The end: every node exactly as etcd says (the leases left, each via its gateway).
    let leases = lab
        .etcdctl(&["get", "--prefix", &format!("{PREFIX}/subnets/")])
        .expect("get leases");
    let mut want: BTreeSet<(String, String)> = BTreeSet::new();
    let mut lines = leases.lines();
    while let (Some(key), Some(value)) = (lines.next(), lines.next()) {
        let Some(name) = key.rsplit('/').next() else {
            continue;
        };
        let Some((net, len)) = name.split_once('-') else {
            continue;
        };
        if !net.starts_with("10.") {
            continue;
        }
        let gw = if value.contains("198.18.0.201") {
            GW_B
        } else if value.contains("198.18.0.200") {
            GW_A
        } else {
            continue; // a node's own lease
        };
        want.insert((format!("{net}/{len}"), gw.to_string()));
    }
    for k in 1..=3 {
        let own = lab.subnet(k).expect("subnet").to_string();
        let mut expected = want.clone();
        for j in (1..=3).filter(|j| *j != k) {
            let net = lab.subnet(j).expect("subnet").to_string();
            expected.insert((net, lab.node_ip(j).expect("ip").to_string()));
        }
        expected.retain(|(dst, _)| *dst != own);
        wait_until(CONVERGE, || {
            let have = peer_routes(&lab, k);
            (have == expected).then_some(()).ok_or(format!(
                "node {k}: {} routes, {} expected; missing {:?}, extra {:?}",
                have.len(),
                expected.len(),
                expected.difference(&have).take(5).collect::<Vec<_>>(),
                have.difference(&expected).take(5).collect::<Vec<_>>()
            ))
        })
        .expect("the kernel matches etcd");
    }
    assert_agents_alive(&mut lab, &[]);

    let p99 = |t: &[Duration]| t[t.len() - 1];
    figure(
        "14.4",
        &format!("lease changes made ({secs} s at 20/s)"),
        changes,
        "-",
    );
    for (k, ((hwm0, fd0, th0), (hwm1, fd1, th1))) in warm.iter().zip(&end).enumerate() {
        let node = k + 1;
        figure(
            "14.4",
            &format!("node {node}: VmHWM after the warm-up → at the end"),
            format!("{hwm0} → {hwm1} KiB (+{} KiB)", hwm1.saturating_sub(*hwm0)),
            "< +1 MiB",
        );
        figure(
            "14.4",
            &format!("node {node}: open fds, threads after the warm-up → at the end"),
            format!("{fd0} → {fd1}, {th0} → {th1}"),
            "constant",
        );
        // A leak over a soak grows without bound; a pool that settles does not.
        assert!(*fd1 <= fd0 + 4, "node {node}: fds {fd0} → {fd1}");
        assert!(*th1 <= th0 + 4, "node {node}: threads {th0} → {th1}");
    }
    figure(
        "14.4",
        "node 1 event → kernel p99 (10 markers), start → end of the churn",
        format!("{} → {}", ms(p99(&first)), ms(p99(&last))),
        "end ≤ 1.2 × start",
    );
    figure(
        "14.4",
        &format!("pings lost ({} sent)", stats.sent),
        stats.lost.len(),
        "0",
    );
    assert!(stats.lost.is_empty(), "pings lost: {stats:?}");
}
