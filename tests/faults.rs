//! Fault scenarios (targets R1–R7, S1) against real weft nodes: `weft_testkit::lab` clusters of
//! network namespaces, the real binary, a real etcd, pods pinging each other at 10/s.
//!
//! Every scenario asserts behaviour only (no lost ping, same subnet, stale state removed only
//! after etcd answered, ...) and reports its timings as figures: they are printed as
//! `FIGURE|<target>|<what>|<value>|<goal>` lines and, when `WEFT_FAULTS_REPORT` names a file,
//! appended there (`scripts/faults.sh` turns them into a table). Time limits in assertions are
//! generous "it happened at all" bounds, so a slow machine never fails a run.
//!
//! Durations: CI-sized by default (etcd outage 10 s); `WEFT_FAULTS_OUTAGE_SECS`,
//! `WEFT_FAULTS_DOWN_SECS`, `WEFT_FAULTS_STORM` and `WEFT_FAULTS_NODES` scale them up
//! (`scripts/faults.sh` without `--quick` runs the full sizes).
#[path = "common/lab.rs"]
mod common;

use std::collections::BTreeSet;
use std::fmt::Display;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{RouteWatch, hostgw_routes_ok, routes_in, wait_until};
use weft_testkit::lab::{Lab, LabSpec, Signal};

/// Agents are debug builds on a shared 2-core machine: generous, still bounded.
const READY: Duration = Duration::from_secs(60);
const CONVERGE: Duration = Duration::from_secs(30);
/// How long "eventually" may take in an assertion (figures are what gets compared to goals).
const EVENTUALLY: Duration = Duration::from_secs(30);
const PREFIX: &str = "/coreos.com/network";

// ===== knobs and figures =====

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Prints one figure and appends it to `$WEFT_FAULTS_REPORT` when set.
fn figure(target: &str, what: &str, value: impl Display, goal: &str) {
    let line = format!("FIGURE|{target}|{what}|{value}|{goal}");
    println!("{line}");
    if let Some(path) = std::env::var_os("WEFT_FAULTS_REPORT").filter(|p| !p.is_empty()) {
        let res = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = res {
            eprintln!("writing {}: {e}", PathBuf::from(path).display());
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

// ===== lab helpers =====

fn spec(nodes: usize, backend: &str) -> LabSpec {
    let mut s = LabSpec::new(nodes, common::weft_bin());
    s.backend = backend.to_owned();
    s
}

/// Builds a lab, starts every agent at once, waits until all wrote subnet.env and (host-gw)
/// programmed every peer, or (vxlan) every peer's route exists.
fn converged_lab(nodes: usize, backend: &str) -> Lab {
    let mut lab = Lab::build(spec(nodes, backend)).expect("build lab");
    lab.start_all().expect("start agents");
    wait_ready(&mut lab);
    lab
}

fn wait_ready(lab: &mut Lab) {
    for k in 1..=lab.nodes() {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
    for k in 1..=lab.nodes() {
        wait_until(CONVERGE, || peers_programmed(lab, k))
            .unwrap_or_else(|e| panic!("node {k} not converged: {e}"));
    }
}

/// Node k has a weft route to every other node's subnet through the right next hop: host-gw
/// `via <peer ip> dev eth0`, vxlan `via <subnet>.0 dev flannel.1 onlink`.
fn peers_programmed(lab: &Lab, k: usize) -> Result<(), String> {
    if lab.spec().backend == "host-gw" {
        return hostgw_routes_ok(lab, k);
    }
    let ns = lab.node_ns(k).map_err(|e| e.to_string())?;
    let routes = routes_in(ns)?;
    for j in (1..=lab.nodes()).filter(|&j| j != k) {
        let net = lab.subnet(j).map_err(|e| format!("{e:#}"))?;
        let ok = routes.iter().any(|r| {
            r["dst"] == net.to_string().as_str()
                && r["dev"] == "flannel.1"
                && r["gateway"] == net.network().to_string().as_str()
        });
        if !ok {
            return Err(format!("node {k}: no vxlan route to {net}: {routes:?}"));
        }
    }
    Ok(())
}

fn assert_agents_alive(lab: &mut Lab, down: &[usize]) {
    for k in (1..=lab.nodes()).filter(|k| !down.contains(k)) {
        assert!(
            lab.node_running(k).expect("status"),
            "node {k}'s agent exited ({:?}); log:\n{}",
            lab.node_exit_status(k),
            lab.log_tail(k, 60)
        );
    }
}

fn all_ns(lab: &Lab, except: usize) -> Vec<String> {
    (1..=lab.nodes())
        .filter(|&k| k != except)
        .map(|k| lab.node_ns(k).expect("ns").to_owned())
        .collect()
}

/// `ip -n <ns> <args>`; stdout, or the error text.
fn ip(ns: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .arg("-n")
        .arg(ns)
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip -n {ns} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip_json(ns: &str, args: &[&str]) -> Result<Vec<serde_json::Value>, String> {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let text = ip(ns, &full)?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("ip {full:?}: bad JSON: {e}"))?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

fn sh(cmd: &str) -> Result<String, String> {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The route to exactly `dst` in `ns`, if any.
fn route_to(ns: &str, dst: &str) -> Option<serde_json::Value> {
    routes_in(ns).ok()?.into_iter().find(|r| r["dst"] == dst)
}

/// Polls `check` every 5 ms until it holds; the time it took, or None after `deadline`.
fn time_until(deadline: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The etcd key of a lease.
fn lease_key(net: &str) -> String {
    format!("{PREFIX}/subnets/{}", net.replace('/', "-"))
}

fn host_gw_value(ip: Ipv4Addr) -> String {
    format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"host-gw"}}"#)
}

/// The current etcd revision (from a Range's header).
fn etcd_revision(lab: &Lab) -> i64 {
    let out = lab
        .etcdctl(&[
            "get",
            "/",
            "--prefix",
            "--keys-only",
            "--limit=1",
            "-w",
            "json",
        ])
        .expect("etcdctl get");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("etcdctl JSON");
    v["header"]["revision"].as_i64().expect("revision")
}

// ===== agent processes =====

/// The pid of node k's agent: the `weft` process in its namespace.
fn agent_pid(lab: &Lab, k: usize) -> u32 {
    let ns = lab.node_ns(k).expect("ns");
    let out = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .expect("ip netns pids");
    let pids: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "weft")
        })
        .collect();
    assert_eq!(pids.len(), 1, "node {k}: weft pids {pids:?}");
    pids[0]
}

fn clock_ticks() -> f64 {
    sh("getconf CLK_TCK")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    ticks as f64 / clock_ticks()
}

/// `(VmRSS, VmHWM)` of a process in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds of every agent, to diff over a window.
struct CpuWindow {
    pids: Vec<u32>,
    start: Vec<f64>,
    at: Instant,
}

impl CpuWindow {
    fn start(lab: &Lab) -> CpuWindow {
        let pids: Vec<u32> = (1..=lab.nodes()).map(|k| agent_pid(lab, k)).collect();
        let start = pids.iter().map(|&p| cpu_secs(p)).collect();
        CpuWindow {
            pids,
            start,
            at: Instant::now(),
        }
    }

    /// The busiest agent's CPU share over the window, in percent of one core.
    fn max_percent(&self) -> f64 {
        let wall = self.at.elapsed().as_secs_f64();
        self.pids
            .iter()
            .zip(&self.start)
            .map(|(&p, &s)| (cpu_secs(p) - s) / wall * 100.0)
            .fold(0.0, f64::max)
    }
}

// ===== ping at 10/s =====

/// `ping -i 0.1` from one pod to another for the length of a scenario.
struct Pinger {
    child: Child,
    out: PathBuf,
    what: String,
}

#[derive(Debug)]
struct PingStats {
    sent: u64,
    replied: u64,
    /// Sequence numbers that never got a reply (the last one in flight at the stop excluded).
    lost: Vec<u64>,
}

impl Pinger {
    fn start(lab: &Lab, from: usize, to: usize) -> Pinger {
        let ns = lab.pod_ns(from).expect("pod ns").to_owned();
        let dst = lab.pod_ip(to).expect("pod ip").to_string();
        let out = lab.dir().join(format!("ping-{from}-{to}.txt"));
        let file = std::fs::File::create(&out).expect("ping output file");
        let child = Command::new("ip")
            .args([
                "netns", "exec", &ns, "ping", "-n", "-D", "-O", "-i", "0.1", "-W", "1",
            ])
            .arg(&dst)
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("start ping");
        // Wait for the first reply, so a lost packet later is the fault's doing.
        wait_until(Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if text.contains("bytes from") {
                Ok(())
            } else {
                Err(format!("no ping reply from {dst} yet: {text}"))
            }
        })
        .expect("ping works before the fault");
        Pinger {
            child,
            out,
            what: format!("pod {from} → pod {to}"),
        }
    }

    fn stop(mut self) -> PingStats {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, Signal::SIGINT);
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.out).expect("ping output");
        let stats = parse_ping(&text);
        eprintln!(
            "ping {}: {} sent, {} replies, lost {:?}",
            self.what, stats.sent, stats.replied, stats.lost
        );
        stats
    }
}

fn seq_of(line: &str) -> Option<u64> {
    let rest = &line[line.find("icmp_seq=")? + "icmp_seq=".len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn parse_ping(text: &str) -> PingStats {
    let mut replied = BTreeSet::new();
    let mut max_seq = 0;
    let mut sent = 0;
    for line in text.lines() {
        if let Some(seq) = seq_of(line) {
            max_seq = max_seq.max(seq);
            if line.contains("bytes from") {
                replied.insert(seq);
            }
        }
        if let Some(i) = line.find(" packets transmitted") {
            sent = line[..i].trim().parse().unwrap_or(0);
        }
    }
    let sent = sent.max(max_seq);
    // The last packet may still have been in flight when ping was stopped.
    let lost = (1..sent).filter(|s| !replied.contains(s)).collect();
    PingStats {
        sent,
        replied: replied.len() as u64,
        lost,
    }
}

// ===== underlay firewall (cut the agents off from a running etcd) =====

/// An nftables table in the underlay namespace that answers the nodes' connections to etcd
/// with a TCP reset (as if etcd were down) while etcd keeps serving local clients.
struct Cut {
    ns: String,
    table: String,
}

impl Cut {
    fn start(lab: &Lab) -> Cut {
        let ns = lab.underlay_ns().to_owned();
        let port = lab.etcd_endpoint().expect("endpoint");
        let port = port.rsplit(':').next().expect("port").to_owned();
        let table = format!("weftcut{}", std::process::id());
        let rules = format!(
            "table inet {table} {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  \
             iifname \"br0\" tcp dport {port} reject with tcp reset\n }}\n}}\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(rules.as_bytes())
            .expect("write rules");
        assert!(child.wait().expect("nft").success(), "nft -f failed");
        Cut { ns, table }
    }

    fn end(self) {
        // Drop removes the table.
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        let st = Command::new("ip")
            .args(["netns", "exec", &self.ns, "nft", "delete", "table", "inet"])
            .arg(&self.table)
            .status();
        if !st.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("removing nft table {} in {}: {st:?}", self.table, self.ns);
        }
    }
}

// ===== health endpoint from inside a namespace =====

/// `GET <path>` on `addr:port` from inside `ns`: Ok((status, body)) or Err(connection error).
fn http_get(ns: &str, addr: &str, port: u16, path: &str) -> Result<(u16, String), String> {
    let script = format!(
        "exec 3<>/dev/tcp/{addr}/{port} || exit 7; printf 'GET {path} HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n' >&3; cat <&3"
    );
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "5", "bash", "-c", &script])
        .output()
        .map_err(|e| format!("bash: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {text:?}"))?;
    Ok((status, text))
}

// ===== R1: etcd outage =====

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

// ===== R2: restarts =====

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

// ===== R3: boot without etcd, from the peer cache =====

#[test]
fn r3_boot_with_etcd_down_programs_cached_peers() {
    if !common::need::root("r3_boot_with_etcd_down_programs_cached_peers") {
        return;
    }
    let mut lab = Lab::build(spec(3, "host-gw")).expect("build lab");
    lab.start_all().expect("start");
    wait_ready(&mut lab);
    lab.add_pods().expect("pods");
    let subnet3 = lab.subnet(3).expect("subnet");
    // Node 3's cache holds both peers (written a few seconds after a change at most).
    let cache = lab.peer_cache_file(3).expect("cache path");
    let peers: Vec<String> = (1..=2)
        .map(|k| lab.subnet(k).expect("subnet").to_string().replace('/', "-"))
        .collect();
    wait_until(CONVERGE, || {
        let text = std::fs::read_to_string(&cache).map_err(|e| e.to_string())?;
        if peers.iter().all(|p| text.contains(p.as_str())) {
            Ok(())
        } else {
            Err(format!("peer cache lacks a peer: {text}"))
        }
    })
    .expect("peer cache written");

    // Node 3 goes down and "reboots": its kernel routes and /run (subnet.env) are gone, the
    // peer cache on disk stays. etcd is down when it comes back.
    lab.stop_node(3, Signal::SIGTERM).expect("stop");
    let ns3 = lab.node_ns(3).expect("ns").to_owned();
    // weft's nexthops first (their routes go with them: `ip route flush` of routes on nexthops
    // fails with EINVAL in nexthop_compat_mode, iproute2 6.1), then any plain weft route.
    ip(&ns3, &["nexthop", "flush", "proto", "87"]).expect("flush weft nexthops");
    ip(&ns3, &["route", "flush", "proto", "87"]).expect("flush weft routes");
    assert!(
        route_to(&ns3, &lab.subnet(1).expect("subnet").to_string()).is_none(),
        "node 3's routes are gone before its restart"
    );
    std::fs::remove_file(lab.subnet_file(3).expect("path")).expect("rm subnet.env");
    lab.etcd().expect("etcd").stop();
    let started = Instant::now();
    lab.start_node(3).expect("start");
    let env = lab
        .wait_subnet_env(3, READY)
        .expect("subnet.env from the cache while etcd is down");
    let ready = started.elapsed();
    assert_eq!(env.subnet, Some(subnet3), "cached subnet");
    wait_until(CONVERGE, || hostgw_routes_ok(&lab, 3)).expect("cached peers programmed");
    let programmed = started.elapsed();
    figure(
        "R3",
        "boot with etcd down: start → subnet.env from the cache",
        ms(ready),
        "-",
    );
    figure(
        "R3",
        "boot with etcd down: start → cached peers programmed",
        ms(programmed),
        "-",
    );
    assert!(
        lab.ping(3, 1, 1, Duration::from_secs(5)).expect("ping"),
        "pod 3 cannot reach pod 1 on cached routes"
    );
    // Serving from the cache is not ready: the lease is not confirmed yet.
    let port = weft_testkit::lab::DEFAULT_HEALTHZ_PORT;
    match http_get(&ns3, "127.0.0.1", port, "/readyz") {
        Ok((503, _)) => {}
        other => panic!("/readyz while booted from the cache with etcd down: {other:?}"),
    }

    // etcd returns; a peer left meanwhile: node 3 gets ready and drops that peer's route.
    lab.etcd().expect("etcd").restart().expect("restart");
    let back = Instant::now();
    let gone = lab.subnet(1).expect("subnet").to_string();
    lab.stop_node(1, Signal::SIGTERM).expect("stop 1");
    lab.etcdctl(&["del", &lease_key(&gone)]).expect("del");
    let t = time_until(EVENTUALLY, || route_to(&ns3, &gone).is_none());
    assert!(
        t.is_some(),
        "node 3 did not reconcile with etcd: {:?}; log:\n{}",
        routes_in(&ns3),
        lab.log_tail(3, 30)
    );
    wait_until(READY, || {
        match http_get(&ns3, "127.0.0.1", port, "/readyz") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("/readyz: {other:?}")),
        }
    })
    .expect("ready once etcd is back");
    figure(
        "R3",
        "etcd back → reconciled (a peer deleted meanwhile is gone) and /readyz 200",
        ms(back.elapsed()),
        "-",
    );
    assert!(route_to(&ns3, &lab.subnet(2).expect("s").to_string()).is_some());
    assert_agents_alive(&mut lab, &[1]);
    lab.teardown().expect("teardown");
}

/// Polls, on its own thread, that every namespace in `ns` routes `dst` via `gateway`; `stop()`
/// returns (polls, moments the route was missing or pointed elsewhere).
struct GatewayWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl GatewayWatch {
    fn start(ns: Vec<String>, dst: String, gateway: String) -> GatewayWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let (mut polls, mut bad) = (0, Vec::new());
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                for n in &ns {
                    match route_to(n, &dst) {
                        Some(r) if r["gateway"] == gateway.as_str() => {}
                        other => bad.push(format!(
                            "{:?}: {n}: route to {dst} is {other:?}",
                            started.elapsed()
                        )),
                    }
                }
                polls += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (polls, bad)
        });
        GatewayWatch { stop, handle }
    }

    fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.handle
            .join()
            .unwrap_or_else(|_| (0, vec!["gateway watch thread panicked".to_owned()]))
    }
}

// ===== R4: 50 nodes at once; foreign writes to a node's key =====

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

// ===== R5: drift repair =====

#[test]
fn r5_out_of_band_deletes_are_repaired() {
    if !common::need::root("r5_out_of_band_deletes_are_repaired") {
        return;
    }
    // host-gw: a peer's route.
    {
        let lab = converged_lab(2, "host-gw");
        let ns = lab.node_ns(1).expect("ns").to_owned();
        let net = lab.subnet(2).expect("subnet").to_string();
        let mut worst = Duration::ZERO;
        for _ in 0..5 {
            ip(&ns, &["route", "del", &net]).expect("route del");
            let t = time_until(EVENTUALLY, || route_to(&ns, &net).is_some())
                .expect("host-gw route not repaired");
            worst = worst.max(t);
        }
        figure(
            "R5",
            "host-gw route deleted → back (worst of 5)",
            ms(worst),
            "≤ 1 s",
        );
        // The route's nexthop object deleted: the kernel drops the route with it and says only
        // RTM_DELNEXTHOP.
        let nhid = route_to(&ns, &net)
            .and_then(|r| r["nhid"].as_u64())
            .expect("host-gw route on a nexthop");
        ip(&ns, &["nexthop", "del", "id", &nhid.to_string()]).expect("nexthop del");
        let t = time_until(EVENTUALLY, || route_to(&ns, &net).is_some())
            .expect("route not repaired after its nexthop was deleted");
        figure(
            "R5",
            "host-gw route's nexthop deleted → route back",
            ms(t),
            "≤ 1 s",
        );
        lab.teardown().expect("teardown");
    }
    // vxlan: route, neighbour, FDB entry, the device.
    let mut lab = converged_lab(3, "vxlan");
    lab.add_pods().expect("pods");
    let ns = lab.node_ns(1).expect("ns").to_owned();
    let net = lab.subnet(2).expect("subnet");
    let gw = net.network().to_string();
    let peer_ip = lab.node_ip(2).expect("ip").to_string();
    let neigh_ok = |ns: &str| {
        ip_json(ns, &["neigh", "show", "dev", "flannel.1"]).is_ok_and(|v| {
            v.iter()
                .any(|n| n["dst"] == gw.as_str() && n["lladdr"].is_string())
        })
    };
    let fdb_of = |ns: &str| -> Option<String> {
        let out = Command::new("bridge")
            .args(["-n", ns, "-j", "fdb", "show", "dev", "flannel.1"])
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?
            .iter()
            .find(|e| e["dst"] == peer_ip.as_str())
            .and_then(|e| e["mac"].as_str().map(str::to_owned))
    };
    wait_until(CONVERGE, || {
        if neigh_ok(&ns) && fdb_of(&ns).is_some() {
            Ok(())
        } else {
            Err("vxlan neighbour/FDB of node 2 missing on node 1".to_owned())
        }
    })
    .expect("vxlan entries");
    let mac = fdb_of(&ns).expect("fdb");
    let net_s = net.to_string();

    // `ip route del <dst>`: with `dev flannel.1` added the kernel would not match a route on a
    // nexthop object (the device is the nexthop's, not the route's).
    ip(&ns, &["route", "del", &net_s]).expect("route del");
    let t = time_until(EVENTUALLY, || route_to(&ns, &net_s).is_some()).expect("vxlan route");
    figure("R5", "vxlan route deleted → back", ms(t), "≤ 1 s");

    let nhid = route_to(&ns, &net_s)
        .and_then(|r| r["nhid"].as_u64())
        .expect("vxlan route on a nexthop");
    ip(&ns, &["nexthop", "del", "id", &nhid.to_string()]).expect("nexthop del");
    let t = time_until(EVENTUALLY, || route_to(&ns, &net_s).is_some())
        .expect("vxlan route not repaired after its nexthop was deleted");
    figure(
        "R5",
        "vxlan route's nexthop deleted → route back",
        ms(t),
        "≤ 1 s",
    );

    ip(&ns, &["neigh", "del", &gw, "dev", "flannel.1"]).expect("neigh del");
    let t = time_until(EVENTUALLY, || neigh_ok(&ns)).expect("neighbour not repaired");
    figure("R5", "vxlan neighbour (ARP) deleted → back", ms(t), "≤ 1 s");

    sh(&format!(
        "bridge -n {ns} fdb del {mac} dev flannel.1 dst {peer_ip} self"
    ))
    .expect("fdb del");
    let t = time_until(EVENTUALLY, || fdb_of(&ns).is_some()).expect("FDB entry not repaired");
    figure("R5", "vxlan FDB entry deleted → back", ms(t), "≤ 1 s");

    ip(&ns, &["link", "del", "flannel.1"]).expect("link del");
    let t = time_until(EVENTUALLY, || {
        peers_programmed(&lab, 1).is_ok() && neigh_ok(&ns) && fdb_of(&ns).is_some()
    })
    .unwrap_or_else(|| {
        panic!(
            "device not re-created with its peers; log:\n{}",
            lab.log_tail(1, 30)
        )
    });
    figure(
        "R5",
        "vxlan device deleted → re-created with every peer entry",
        ms(t),
        "≤ 1 s",
    );
    let matrix = lab.ping_matrix().expect("ping");
    assert!(
        matrix.iter().all(|m| m.2),
        "pods cannot reach each other: {matrix:?}"
    );
    assert_agents_alive(&mut lab, &[]);
    lab.teardown().expect("teardown");
}

// ===== R6: stale state at start, removed only after a successful list =====

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

// ===== R7: health endpoints =====

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

// ===== S1: malformed-lease storm =====

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

#[test]
fn ping_output_is_parsed() {
    let text = "PING 10.244.2.2 (10.244.2.2) 56(84) bytes of data.\n\
        [1.0] 64 bytes from 10.244.2.2: icmp_seq=1 ttl=62 time=0.1 ms\n\
        [1.1] no answer yet for icmp_seq=2\n\
        [1.2] 64 bytes from 10.244.2.2: icmp_seq=3 ttl=62 time=0.1 ms\n\
        [1.3] 64 bytes from 10.244.2.2: icmp_seq=4 ttl=62 time=0.1 ms\n\n\
        --- 10.244.2.2 ping statistics ---\n\
        5 packets transmitted, 3 received, 40% packet loss, time 400ms\n";
    let s = parse_ping(text);
    assert_eq!(s.sent, 5);
    assert_eq!(s.replied, 3);
    // seq 5 was in flight at the stop; seq 2 is lost.
    assert_eq!(s.lost, vec![2]);
}
