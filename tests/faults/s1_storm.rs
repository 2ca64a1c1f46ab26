//! S1: a storm of malformed leases breaks nothing.
use super::*;

/// Runs `f` on a thread that entered network namespace `ns`, with a current-thread runtime.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

/// Writes `count` malformed entries under `<prefix>/subnets/` as fast as etcd takes them, and
/// deletes some again. Live nodes' keys are never touched. Returns (puts, deletes).
fn storm(endpoint: String, count: usize, live: BTreeSet<String>) -> (usize, usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut client = etcd_client::Client::connect([endpoint], None)
            .await
            .expect("connect etcd");
        let dir = format!("{PREFIX}/subnets/");
        let bad_keys = [
            "10.244.1.0-33",
            "10.244.1.5-24",
            "10.244.1.0-24&zz::-64",
            "10.244.1.0-24&fd00::-200",
            "10.244.1.0--24",
            "999.244.1.0-24",
            "10.244.1.0-24/extra",
            "-24",
            "",
            "../config",
            "\u{0}\u{ff}",
            "10.244.1.0-24 ",
        ];
        let bad_values: [&[u8]; 10] = [
            b"not json",
            b"",
            b"{}",
            b"null",
            b"[1,2,3]",
            br#"{"PublicIP":"not-an-ip","PublicIPv6":null,"BackendType":"host-gw"}"#,
            br#"{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VNI":"x","VtepMAC":"zz"}}"#,
            br#"{"PublicIP":198}"#,
            br#"{"PublicIP":"198.18.0.1","PublicIPv6":"::zz"}"#,
            b"\xff\xfe\x00",
        ];
        let mut written = Vec::new();
        let (mut puts, mut dels) = (0, 0);
        for i in 0..count {
            let key: Vec<u8> = match fastrand::u8(0..4) {
                // A well-formed subnet key nobody holds, with a bad value.
                0 => format!("{dir}10.244.{}.0-24", 150 + fastrand::u8(0..100)).into_bytes(),
                // Random bytes.
                1 => {
                    let mut k = dir.clone().into_bytes();
                    k.extend((0..fastrand::usize(1..40)).map(|_| fastrand::u8(..)));
                    k
                }
                // Almost a key.
                2 => format!("{dir}{}", bad_keys[i % bad_keys.len()]).into_bytes(),
                // A key with host bits or an odd length.
                _ => format!("{dir}10.{}.{}.{}-{}", fastrand::u8(..), fastrand::u8(..), fastrand::u8(..), fastrand::u8(0..40)).into_bytes(),
            };
            if live.contains(&String::from_utf8_lossy(&key).into_owned()) {
                continue;
            }
            let value: Vec<u8> = match fastrand::u8(0..50) {
                // Now and then a big one (etcd keeps every revision until compaction).
                0 => vec![b'x'; 100_000],
                1..=15 => (0..fastrand::usize(0..200)).map(|_| fastrand::u8(..)).collect(),
                16..=25 => vec![b'{'; fastrand::usize(1..2000)],
                _ => bad_values[i % bad_values.len()].to_vec(),
            };
            client.put(key.clone(), value, None).await.expect("put");
            puts += 1;
            written.push(key);
            if fastrand::u8(0..4) == 0 {
                let k = written.swap_remove(fastrand::usize(0..written.len()));
                client.delete(k, None).await.expect("delete");
                dels += 1;
            }
        }
        (puts, dels)
    })
}

#[test]
fn s1_malformed_lease_storm_breaks_nothing() {
    if !common::need::root("s1_malformed_lease_storm_breaks_nothing") {
        return;
    }
    let count = usize::try_from(knob("WEFT_FAULTS_STORM", 500)).expect("storm");
    let mut lab = converged_lab(3, "host-gw");
    lab.add_pods().expect("pods");
    // Plaintext etcd is warned about at start.
    for k in 1..=3 {
        let log = lab.log(k).expect("log");
        assert!(
            log.contains("connecting to etcd with http. This is insecure"),
            "node {k} did not warn about plaintext etcd; log:\n{}",
            lab.log_tail(k, 30)
        );
    }
    figure("S1", "plaintext etcd warned about at start", "yes", "yes");
    let live: BTreeSet<String> = (1..=3)
        .map(|k| lease_key(&lab.subnet(k).expect("subnet").to_string()))
        .collect();
    let watches: Vec<RouteWatch> = (1..=3)
        .map(|k| RouteWatch::start(all_ns(&lab, k), lab.subnet(k).expect("s").to_string()))
        .collect();
    let pinger = Pinger::start(&lab, 1, 3);
    let cpu = CpuWindow::start(&lab);
    let started = Instant::now();
    let endpoint = lab.etcd_endpoint().expect("endpoint");
    let (puts, dels) = in_netns(lab.underlay_ns(), move || storm(endpoint, count, live));
    let took = started.elapsed();
    // Let the agents drain the backlog, then judge.
    std::thread::sleep(Duration::from_secs(2));
    let cpu_pct = cpu.max_percent();
    assert_agents_alive(&mut lab, &[]);
    for k in 1..=3 {
        hostgw_routes_ok(&lab, k).expect("routes after the storm");
    }
    for (k, w) in watches.into_iter().enumerate() {
        let (polls, missing) = w.stop();
        assert!(polls > 3, "route watch barely ran");
        assert!(
            missing.is_empty(),
            "a healthy peer lost its route to node {} during the storm:\n{}",
            k + 1,
            missing.join("\n")
        );
    }
    let stats = pinger.stop();
    assert!(stats.lost.is_empty(), "pings lost: {stats:?}");
    figure(
        "S1",
        &format!(
            "malformed storm: {puts} puts + {dels} deletes in {:.1} s",
            took.as_secs_f64()
        ),
        "agents up, no peer removed",
        "no crash, no removal",
    );
    figure("S1", "pings lost during the storm", stats.lost.len(), "0");
    figure(
        "S1",
        "busiest agent's CPU during the storm",
        format!("{cpu_pct:.1} %"),
        "-",
    );
    let hwm = (1..=3)
        .map(|k| memory_kib(agent_pid(&lab, k)).1)
        .max()
        .unwrap_or(0);
    figure(
        "S1",
        "largest agent VmHWM after the storm",
        format!("{:.1} MiB", hwm as f64 / 1024.0),
        "-",
    );

    // Garbage over a live node's key: the peers keep the route they had; the owner writes its
    // lease back.
    let net3 = lab.subnet(3).expect("subnet").to_string();
    let key3 = lease_key(&net3);
    let own_value = lab
        .etcdctl(&["get", &key3, "--print-value-only"])
        .expect("get");
    let watch = RouteWatch::start(all_ns(&lab, 3), net3.clone());
    lab.etcdctl(&["put", &key3, "not json"])
        .expect("put garbage");
    let t = time_until(EVENTUALLY, || {
        lab.etcdctl(&["get", &key3, "--print-value-only"])
            .is_ok_and(|v| v.trim() == own_value.trim())
    });
    let (_, missing) = watch.stop();
    assert!(
        missing.is_empty(),
        "peers dropped node 3 on a garbage value: {missing:?}"
    );
    let t = t.unwrap_or_else(|| {
        panic!(
            "node 3 did not write its lease back over garbage; log:\n{}",
            lab.log_tail(3, 30)
        )
    });
    figure(
        "S1",
        "garbage over a live node's key → its lease written back",
        ms(t),
        "-",
    );
    for k in 1..=3 {
        wait_until(CONVERGE, || hostgw_routes_ok(&lab, k)).expect("routes");
    }
    assert_agents_alive(&mut lab, &[]);
    lab.teardown().expect("teardown");
}
