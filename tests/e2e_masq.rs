//! End to end with `--ip-masq`: the real weft binary on two host-gw nodes, pods behind cni0,
//! and an "external" host on the underlay that has no route back to the pod network.
//!
//! - pod → external works only because the node masquerades it: the external host sees the
//!   node's address as the TCP peer (and has no route to the pod's address at all);
//! - pod → pod keeps the pod's source address;
//! - a rule deleted by hand is put back at once: the audit timer is pushed to an hour
//!   (`WEFT_FIREWALL_AUDIT_SECS`), so the repair can only come from the nf_tables change
//!   notification (iptables-nft and nftables alike);
//! - both modes: iptables (flanneld's chains) and nftables (`EnableNFTables`), the latter also
//!   removing iptables leftovers of an earlier run at start.
#[path = "common/lab.rs"]
mod common;

use std::io::{BufRead as _, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{hostgw_routes_ok, wait_until};
use weft_testkit::lab::{EXTERNAL_IP, Lab, LabSpec};

const READY: Duration = Duration::from_secs(30);
const CONVERGE: Duration = Duration::from_secs(15);
/// Audit period given to the agents: longer than any test, so repairs are notification-driven.
const AUDIT_SECS: &str = "3600";
/// How long a repair may take (it takes about 100 ms; the machine is shared and noisy).
const REPAIR: Duration = Duration::from_secs(5);

fn masq_lab(config: Option<String>, extra: &[&str]) -> Lab {
    let mut spec = LabSpec::new(2, common::weft_bin());
    spec.extra_flags = extra.iter().map(|s| s.to_string()).collect();
    spec.config = config;
    spec.agent_env = vec![(
        weft::agent::firewall::AUDIT_ENV.to_owned(),
        AUDIT_SECS.to_owned(),
    )];
    Lab::build(spec).expect("build lab")
}

fn start(lab: &mut Lab) {
    lab.start_all().expect("start agents");
    let masq = lab.spec().extra_flags.iter().any(|f| f == "--ip-masq");
    for k in 1..=lab.nodes() {
        let env = lab.wait_subnet_env(k, READY).expect("subnet.env");
        assert_eq!(env.ipmasq, masq, "node {k}: FLANNEL_IPMASQ");
    }
    for k in 1..=lab.nodes() {
        wait_until(CONVERGE, || hostgw_routes_ok(lab, k)).expect("host-gw routes");
    }
    lab.add_pods().expect("pods");
    lab.add_external().expect("external host");
}

/// `ip netns exec <ns> <tool> <args>`: stdout, or the failure as text.
fn run_in(ns: &str, tool: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, tool])
        .args(args)
        .output()
        .map_err(|e| format!("{tool}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip netns exec {ns} {tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A one-shot TCP server in a namespace that prints the peer address of the first
/// connection (python3); killed on drop.
struct PeerServer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl PeerServer {
    fn start(ns: &str, port: u16) -> PeerServer {
        let code = format!(
            "import socket\n\
             s = socket.socket()\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0', {port}))\n\
             s.listen(1)\n\
             s.settimeout(20)\n\
             print('ready', flush=True)\n\
             c, a = s.accept()\n\
             print(a[0], flush=True)\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", &code])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3 server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let server = PeerServer { child, lines };
        let first = server.next_line(Duration::from_secs(10));
        assert_eq!(
            first.as_deref(),
            Some("ready"),
            "server in {ns} did not start"
        );
        server
    }

    fn next_line(&self, deadline: Duration) -> Option<String> {
        self.lines.recv_timeout(deadline).ok()
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects from `client_ns` to `server_ip:port` served in `server_ns`; returns the source
/// address the server saw, or why there was none.
fn tcp_peer(client_ns: &str, server_ns: &str, server_ip: Ipv4Addr) -> Result<String, String> {
    let port = fastrand::u16(20_000..60_000);
    let server = PeerServer::start(server_ns, port);
    let connect = format!(
        "import socket; socket.create_connection(('{server_ip}', {port}), timeout=5).close()"
    );
    run_in(client_ns, "python3", &["-c", &connect])?;
    server
        .next_line(Duration::from_secs(5))
        .ok_or_else(|| "the server saw no connection".to_owned())
}

/// The data path: pod → external is masqueraded to the node address, pod → pod is not.
fn assert_masquerade_data_path(lab: &Lab) {
    let ext = lab.external_ns().expect("external");
    let pod1 = lab.pod_ns(1).expect("pod 1").to_owned();
    let pod1_ip = lab.pod_ip(1).expect("pod 1 ip");
    // The external host cannot route to a pod: only masquerading makes replies come back.
    let unreachable = run_in(ext, "ip", &["route", "get", &pod1_ip.to_string()]);
    assert!(
        unreachable.is_err(),
        "external host must have no route to pods: {unreachable:?}"
    );

    let seen = tcp_peer(&pod1, ext, EXTERNAL_IP).expect("pod 1 → external TCP");
    assert_eq!(
        seen,
        lab.node_ip(1).expect("node ip").to_string(),
        "external host must see node 1's address"
    );
    run_in(
        &pod1,
        "ping",
        &["-n", "-q", "-c", "1", "-w", "5", &EXTERNAL_IP.to_string()],
    )
    .expect("pod 1 pings the external host");

    let pod2 = lab.pod_ns(2).expect("pod 2").to_owned();
    let pod2_ip = lab.pod_ip(2).expect("pod 2 ip");
    let seen = tcp_peer(&pod1, &pod2, pod2_ip).expect("pod 1 → pod 2 TCP");
    assert_eq!(seen, pod1_ip.to_string(), "pod to pod keeps the pod source");
}

fn assert_alive(lab: &mut Lab) {
    for k in 1..=lab.nodes() {
        assert!(
            lab.node_running(k).expect("status"),
            "node {k}'s agent exited; log:\n{}",
            lab.log_tail(k, 40)
        );
    }
}

fn nat_rules(ns: &str) -> Result<Vec<String>, String> {
    Ok(run_in(ns, "iptables-save", &["-t", "nat"])?
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_owned)
        .collect())
}

fn flannel_chains(ns: &str, table: &str) -> Vec<String> {
    run_in(ns, "iptables-save", &["-t", table])
        .expect("iptables-save")
        .lines()
        .filter(|l| l.contains("FLANNEL"))
        .map(str::to_owned)
        .collect()
}

/// flanneld's golden nat text (docs/flannel-compat.md §6.1) for a node's subnet.
fn golden_nat(subnet: &str) -> Vec<String> {
    let c = r#"-m comment --comment "flanneld masq""#;
    let n = "10.244.0.0/16";
    vec![
        format!("-A POSTROUTING {c} -j FLANNEL-POSTRTG"),
        format!("-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {c} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {subnet} -d {n} {c} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {n} -d {subnet} {c} -j RETURN"),
        format!("-A FLANNEL-POSTRTG ! -s {n} -d {subnet} {c} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {n} ! -d 224.0.0.0/4 {c} -j MASQUERADE --random-fully"),
        format!("-A FLANNEL-POSTRTG ! -s {n} -d {n} {c} -j MASQUERADE --random-fully"),
    ]
}

#[test]
fn iptables_masquerade_to_the_outside_not_between_pods_and_repaired() {
    if !common::need::root("iptables_masquerade_to_the_outside_not_between_pods_and_repaired") {
        return;
    }
    let mut lab = masq_lab(None, &["--ip-masq"]);
    start(&mut lab);
    let n1 = lab.node_ns(1).expect("ns").to_owned();
    let subnet = lab.subnet(1).expect("subnet").to_string();
    assert_eq!(nat_rules(&n1).expect("nat"), golden_nat(&subnet));
    assert_eq!(
        flannel_chains(&n1, "filter"),
        [
            ":FLANNEL-FWD - [0:0]",
            r#"-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD"#,
            r#"-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT"#,
            r#"-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT"#,
        ]
    );
    assert_masquerade_data_path(&lab);

    // The masquerade rule deleted by hand, then the jump: each put back at once.
    run_in(
        &n1,
        "iptables",
        &[
            "-t",
            "nat",
            "-D",
            "FLANNEL-POSTRTG",
            "-s",
            "10.244.0.0/16",
            "!",
            "-d",
            "224.0.0.0/4",
            "-m",
            "comment",
            "--comment",
            "flanneld masq",
            "-j",
            "MASQUERADE",
            "--random-fully",
        ],
    )
    .expect("delete rule");
    assert_ne!(nat_rules(&n1).expect("nat"), golden_nat(&subnet));
    wait_until(REPAIR, || {
        let now = nat_rules(&n1)?;
        (now == golden_nat(&subnet))
            .then_some(())
            .ok_or(format!("{now:#?}"))
    })
    .expect("masquerade rule repaired");
    run_in(
        &n1,
        "iptables",
        &[
            "-t",
            "nat",
            "-D",
            "POSTROUTING",
            "-m",
            "comment",
            "--comment",
            "flanneld masq",
            "-j",
            "FLANNEL-POSTRTG",
        ],
    )
    .expect("delete jump");
    wait_until(REPAIR, || {
        let now = nat_rules(&n1)?;
        (now == golden_nat(&subnet))
            .then_some(())
            .ok_or(format!("{now:#?}"))
    })
    .expect("jump repaired");
    assert!(
        lab.log(1)
            .expect("log")
            .contains("rules were changed by someone else, re-applied"),
        "the repair is logged"
    );
    assert_masquerade_data_path(&lab);
    assert_alive(&mut lab);
    lab.teardown().expect("teardown");
}

/// `nft -j list table ip flannel-ipv4` in `ns`, parsed.
fn nft_table(ns: &str) -> Result<weft::agent::firewall::nftables::ObservedTable, String> {
    let json = run_in(ns, "nft", &["-j", "list", "table", "ip", "flannel-ipv4"])?;
    weft::agent::firewall::nftables::parse_list(&weft::agent::firewall::nftables::TABLE_V4, &json)
        .map_err(|e| format!("{e:#}"))
}

#[test]
fn nftables_masquerade_cleans_iptables_leftovers_and_is_repaired() {
    if !common::need::root("nftables_masquerade_cleans_iptables_leftovers_and_is_repaired") {
        return;
    }
    let config =
        r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"},"EnableNFTables":true}"#;
    let mut lab = masq_lab(
        Some(config.to_owned()),
        &["--ip-masq", "--ip-masq-fully-random-disable"],
    );
    // Leftovers of an earlier run in iptables mode on node 1 (FLANNEL-FWD lives in filter).
    let n1 = lab.node_ns(1).expect("ns").to_owned();
    let batch = "*nat\n:FLANNEL-POSTRTG - [0:0]\n\
                 -A FLANNEL-POSTRTG -s 10.244.0.0/16 -j MASQUERADE\n\
                 -A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\nCOMMIT\n\
                 *filter\n:FLANNEL-FWD - [0:0]\n-A FLANNEL-FWD -s 10.244.0.0/16 -j ACCEPT\n\
                 -A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD\nCOMMIT\n";
    let mut restore = Command::new("ip")
        .args(["netns", "exec", &n1, "iptables-restore", "--noflush"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("iptables-restore");
    use std::io::Write as _;
    restore
        .stdin
        .take()
        .expect("stdin")
        .write_all(batch.as_bytes())
        .expect("write batch");
    assert!(restore.wait().expect("wait").success());
    assert_eq!(flannel_chains(&n1, "filter").len(), 3);

    start(&mut lab);
    assert_eq!(flannel_chains(&n1, "nat"), Vec::<String>::new());
    assert_eq!(flannel_chains(&n1, "filter"), Vec::<String>::new());
    let table = nft_table(&n1).expect("nft table");
    let postrtg = &table.chains["postrtg"];
    assert_eq!(postrtg.rules.len(), 6, "{postrtg:?}");
    assert!(postrtg.rules.iter().all(Option::is_some), "{postrtg:?}");
    assert_eq!(table.chains["forward"].rules.len(), 2);
    let text = run_in(&n1, "nft", &["list", "table", "ip", "flannel-ipv4"]).expect("nft list");
    assert!(
        text.contains("ip daddr != 224.0.0.0/4 masquerade\n"),
        "{text}"
    );
    assert!(!text.contains("fully-random"), "disabled by flag: {text}");
    assert_masquerade_data_path(&lab);

    // A rule deleted by handle: put back at once.
    let listed = run_in(
        &n1,
        "nft",
        &["-j", "-a", "list", "chain", "ip", "flannel-ipv4", "postrtg"],
    )
    .expect("nft list chain");
    let v: serde_json::Value = serde_json::from_str(&listed).expect("json");
    let handle = v["nftables"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|i| i["rule"]["handle"].as_u64())
        .nth(4)
        .expect("5th rule")
        .to_string();
    run_in(
        &n1,
        "nft",
        &[
            "delete",
            "rule",
            "ip",
            "flannel-ipv4",
            "postrtg",
            "handle",
            &handle,
        ],
    )
    .expect("delete rule");
    assert_eq!(
        nft_table(&n1).expect("table").chains["postrtg"].rules.len(),
        5
    );
    wait_until(REPAIR, || {
        let t = nft_table(&n1)?;
        let c = &t.chains["postrtg"];
        (c.rules.len() == 6 && c.rules.iter().all(Option::is_some))
            .then_some(())
            .ok_or(format!("{c:?}"))
    })
    .expect("rule repaired");
    // The whole table deleted.
    run_in(&n1, "nft", &["delete", "table", "ip", "flannel-ipv4"]).expect("delete table");
    wait_until(REPAIR, || nft_table(&n1).map(|_| ())).expect("table repaired");
    assert_masquerade_data_path(&lab);
    assert_alive(&mut lab);
    lab.teardown().expect("teardown");
}

/// The control: without `--ip-masq` the external host cannot answer a pod (so the tests above
/// prove masquerading), while the forward rules are still installed (default on).
#[test]
fn without_ip_masq_pods_do_not_reach_the_outside_but_forward_rules_exist() {
    if !common::need::root("without_ip_masq_pods_do_not_reach_the_outside_but_forward_rules_exist")
    {
        return;
    }
    let mut lab = masq_lab(None, &[]);
    start(&mut lab);
    let n1 = lab.node_ns(1).expect("ns").to_owned();
    assert_eq!(flannel_chains(&n1, "nat"), Vec::<String>::new());
    assert_eq!(flannel_chains(&n1, "filter").len(), 4);
    let ext = lab.external_ns().expect("external").to_owned();
    let pod1 = lab.pod_ns(1).expect("pod 1").to_owned();
    let r = tcp_peer(&pod1, &ext, EXTERNAL_IP);
    assert!(r.is_err(), "unmasqueraded pod traffic got an answer: {r:?}");
    let pod2 = lab.pod_ns(2).expect("pod 2").to_owned();
    let seen = tcp_peer(&pod1, &pod2, lab.pod_ip(2).expect("ip")).expect("pod to pod");
    assert_eq!(seen, lab.pod_ip(1).expect("ip").to_string());
    assert_alive(&mut lab);
    lab.teardown().expect("teardown");
}

/// `EnableNFTables` flipped in etcd while the agents run: the rules move to the nftables table
/// (the iptables chains are removed) and masquerading keeps working; flipped back, they return.
#[test]
fn enable_nftables_switches_live() {
    if !common::need::root("enable_nftables_switches_live") {
        return;
    }
    let mut lab = masq_lab(None, &["--ip-masq"]);
    start(&mut lab);
    let nodes: Vec<String> = (1..=2)
        .map(|k| lab.node_ns(k).expect("ns").to_owned())
        .collect();
    for n in &nodes {
        assert_eq!(flannel_chains(n, "nat").len(), 8, "{n}");
        assert!(nft_table(n).is_err(), "{n}: no nftables table yet");
    }
    lab.put_config(
        r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"},"EnableNFTables":true}"#,
    )
    .expect("put config");
    for n in &nodes {
        wait_until(CONVERGE, || {
            let t = nft_table(n)?;
            let left = flannel_chains(n, "nat").len() + flannel_chains(n, "filter").len();
            (t.chains.get("postrtg").is_some_and(|c| c.rules.len() == 6) && left == 0)
                .then_some(())
                .ok_or(format!("{n}: {t:?}, {left} iptables lines left"))
        })
        .expect("rules moved to nftables");
    }
    assert_masquerade_data_path(&lab);

    lab.put_config(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#)
        .expect("put config");
    for n in &nodes {
        wait_until(CONVERGE, || {
            let gone = nft_table(n).is_err();
            let nat = flannel_chains(n, "nat").len();
            (gone && nat == 8)
                .then_some(())
                .ok_or(format!("{n}: table gone {gone}, {nat} nat lines"))
        })
        .expect("rules back in iptables");
    }
    assert_masquerade_data_path(&lab);
    assert_alive(&mut lab);
    lab.teardown().expect("teardown");
}
