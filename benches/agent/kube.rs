//! Kube mode beside etcd mode (issue 12): the same node facing N Node objects in the test API
//! server (`weft_testkit::kube_api`, in the scenario's namespace on 127.0.0.1) instead of N
//! leases in etcd. The Nodes are the leases of the etcd scenario as flanneld's annotations,
//! each a full kubelet-like Node (about 4 KiB of JSON). Measured as in etcd mode: start →
//! subnet.env, start → every kernel entry (netlink listener), VmHWM, and event → kernel for
//! Nodes added and deleted one at a time.
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::bench::{
    Agent, ColdStart, Config, Detail, EVENT_DEADLINE, Kind, Listener, Netns, Seen, config_json,
    fmt_mac, met, ms, peer_ip, peer_mac, peer_subnet, percentile, secs, wait_programmed,
};
use weft_testkit::kube_api::{FLANNEL_GRANTS, KubeApi, NodeSpec, Options};

const P: &str = "flannel.alpha.coreos.com";
/// The benchmarked node's podCIDR: outside every peer's (10.0.<1..>.0/24).
const OWN_POD_CIDR: &str = "10.255.255.0/24";

/// One kube-mode run and the etcd-mode figures of the same size and backend.
#[derive(Debug, Clone, Default)]
pub struct KubeRun {
    pub kind: Option<Kind>,
    pub nodes: usize,
    pub ready: Duration,
    pub programmed: Duration,
    pub vm_hwm_kib: u64,
    pub add_latency: Vec<Duration>,
    pub del_latency: Vec<Duration>,
    /// The same run's etcd-mode figures (programmed, VmHWM, add p99), for the ratios.
    pub etcd_programmed: Duration,
    pub etcd_vm_hwm_kib: u64,
    pub etcd_add_p99: Option<Duration>,
}

fn node_spec(kind: Kind, i: usize) -> NodeSpec {
    let data = match kind {
        Kind::HostGw => "null".to_string(),
        Kind::Vxlan => format!(r#"{{"VNI":1,"VtepMAC":"{}"}}"#, fmt_mac(&peer_mac(i))),
    };
    NodeSpec::new(&format!("peer{i}"))
        .pod_cidr(&peer_subnet(i).to_string())
        .internal_ip(peer_ip(i))
        .annotation(&format!("{P}/backend-data"), &data)
        .annotation(&format!("{P}/backend-type"), kind.name())
        .annotation(&format!("{P}/kube-subnet-manager"), "true")
        .annotation(&format!("{P}/public-ip"), &peer_ip(i).to_string())
}

fn spawn_agent(bin: &Path, ns: &str, dir: &Path) -> Result<Agent> {
    Agent::spawn_with(
        bin,
        ns,
        dir,
        &[
            "--kube-subnet-mgr".to_string(),
            format!("--kubeconfig-file={}", dir.join("kubeconfig").display()),
            format!("--net-config-path={}", dir.join("net-conf.json").display()),
        ],
        &[("NODE_NAME", "bench")],
    )
}

/// Runs kube mode with `n` Nodes of `kind`; `etcd` is the etcd-mode cold start of the same
/// run, `etcd_detail` its event figures if measured.
pub fn scenario(
    cfg: &Config,
    kind: Kind,
    n: usize,
    etcd: &ColdStart,
    etcd_detail: Option<&Detail>,
) -> Result<KubeRun> {
    let ns = Netns::node("k")?;
    let dir = tempfile::tempdir().context("temp dir")?;
    let api = KubeApi::start(Options {
        netns: Some(ns.name.clone()),
        ..Options::default()
    })
    .context("start the test API server")?;
    let token = api.add_token("system:serviceaccount:kube-flannel:flannel", FLANNEL_GRANTS);
    fs::write(dir.path().join("kubeconfig"), api.kubeconfig(&token)).context("kubeconfig")?;
    fs::write(dir.path().join("net-conf.json"), config_json(kind)).context("net-conf.json")?;
    let loaded = Instant::now();
    api.create_node(&NodeSpec::new("bench").pod_cidr(OWN_POD_CIDR))?;
    for i in 0..n {
        api.create_node(&node_spec(kind, i))?;
    }
    println!(
        "  loaded {n} Nodes into the test API server in {} ms",
        ms(loaded.elapsed())
    );

    let listener = Listener::start(&ns.name)?;
    let mut seen = Seen::default();
    let started = Instant::now();
    let mut agent = spawn_agent(&cfg.weft_bin, &ns.name, dir.path())?;
    let ready = wait_programmed(
        &ns,
        kind,
        n,
        dir.path(),
        &listener,
        &mut seen,
        &mut agent,
        started,
    )
    .context("kube mode")?;
    let programmed = seen
        .last
        .unwrap_or(started)
        .saturating_duration_since(started);
    let mut run = KubeRun {
        kind: Some(kind),
        nodes: n,
        ready,
        programmed,
        vm_hwm_kib: agent.status("VmHWM")?,
        etcd_programmed: etcd.programmed,
        etcd_vm_hwm_kib: etcd.vm_hwm_kib,
        etcd_add_p99: etcd_detail
            .filter(|d| !d.add_latency.is_empty())
            .map(|d| percentile(&d.add_latency, 99.0)),
        ..KubeRun::default()
    };

    // Nodes added, then deleted, one at a time, each after the previous one landed.
    let fresh: Vec<usize> = (n..n + cfg.events).collect();
    for &i in &fresh {
        let t0 = Instant::now();
        api.create_node(&node_spec(kind, i))?;
        let at = wait_for(&mut seen, &listener, &mut agent, t0, |s| {
            s.peer_present(kind, i)
        })
        .with_context(|| format!("Node peer{i} added"))?;
        run.add_latency.push(at.saturating_duration_since(t0));
        std::thread::sleep(Duration::from_millis(10));
    }
    for &i in &fresh {
        let t0 = Instant::now();
        api.delete_node(&format!("peer{i}"))?;
        let at = wait_for(&mut seen, &listener, &mut agent, t0, |s| {
            s.peer_gone(kind, i)
        })
        .with_context(|| format!("Node peer{i} deleted"))?;
        run.del_latency.push(at.saturating_duration_since(t0));
        std::thread::sleep(Duration::from_millis(10));
    }
    run.add_latency.sort();
    run.del_latency.sort();
    run.vm_hwm_kib = agent.status("VmHWM")?;
    agent.alive()?;
    Ok(run)
}

fn wait_for(
    seen: &mut Seen,
    listener: &Listener,
    agent: &mut Agent,
    t0: Instant,
    done: impl Fn(&Seen) -> Option<Instant>,
) -> Result<Instant> {
    let until = t0 + EVENT_DEADLINE;
    loop {
        if let Some(at) = done(seen) {
            return Ok(at);
        }
        agent.alive()?;
        if Instant::now() > until {
            bail!(
                "not in the kernel {EVENT_DEADLINE:?} after the API write; log tail:\n{}",
                agent.log_tail(20)
            );
        }
        seen.drain(listener, Duration::from_millis(5));
    }
}

pub fn print(r: &KubeRun) {
    println!(
        "  kube mode: ready {} ms, programmed {} ms (etcd mode {} ms: {:.2}×), VmHWM {} KiB (etcd mode {} KiB)",
        ms(r.ready),
        ms(r.programmed),
        ms(r.etcd_programmed),
        secs(r.programmed) / secs(r.etcd_programmed).max(1e-9),
        r.vm_hwm_kib,
        r.etcd_vm_hwm_kib
    );
    if !r.add_latency.is_empty() {
        println!(
            "  kube mode event → kernel: add p50 {} p99 {}, delete p50 {} p99 {}",
            ms(percentile(&r.add_latency, 50.0)),
            ms(percentile(&r.add_latency, 99.0)),
            ms(percentile(&r.del_latency, 50.0)),
            ms(percentile(&r.del_latency, 99.0)),
        );
    }
}

/// The kube-mode table of BENCHMARKS.md.
pub fn markdown(s: &mut String, runs: &[KubeRun]) {
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n### Kube mode beside etcd mode (same run)\n\n| backend | Nodes | start → all entries kube / etcd (ratio, goal ≤ 1.2) | VmHWM kube / etcd MiB (goal ≤ 24) | event → kernel p99 add kube / etcd | delete p99 kube |\n|---|---:|---:|---:|---:|---:|"
    );
    for r in runs {
        let ratio = secs(r.programmed) / secs(r.etcd_programmed).max(1e-9);
        let hwm = r.vm_hwm_kib as f64 / 1024.0;
        let p99 = |v: &[Duration]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                ms(percentile(v, 99.0))
            }
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} / {} ms ({ratio:.2} {}) | {hwm:.1} / {:.1} {} | {} / {} ms | {} ms |",
            r.kind.map(Kind::name).unwrap_or("-"),
            r.nodes,
            ms(r.programmed),
            ms(r.etcd_programmed),
            met(ratio <= 1.2),
            r.etcd_vm_hwm_kib as f64 / 1024.0,
            met(hwm <= 24.0),
            p99(&r.add_latency),
            r.etcd_add_p99.map(ms).unwrap_or_else(|| "-".to_string()),
            p99(&r.del_latency),
        );
    }
}
