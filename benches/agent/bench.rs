//! The agent benchmark (issue 7): the real `weft` binary in a network namespace against a real
//! etcd holding N synthetic leases, observed from outside through a netlink notification
//! listener, `/proc/<pid>` and etcd's own `/metrics`, next to `ip -batch` programming the same
//! entries. Used by `benches/agent/main.rs` (`scripts/bench.sh`) and `tests/bench_smoke.rs`.
//!
//! ```text
//!   wb<id>n  (one namespace per scenario)
//!     eth0 198.18.0.1/16 ── ueth0 (veth peer, so eth0 has carrier)
//!     lo   etcd on 127.0.0.1:<port>, <N> leases 10.0.<s>.0/24 → PublicIP 198.18.0.<s+1>…
//!     weft --iface=eth0            (process under test)
//!     bench listener thread        (RTNLGRP_IPV4_ROUTE + RTNLGRP_NEIGH, 64 MiB buffer)
//! ```
//! Peers need not exist: host-gw gateways only have to lie on eth0's connected /16, vxlan entries
//! only name them. The pod network is 10.0.0.0/8 (not 10.244.0.0/16): 20,000 /24 leases need it;
//! nothing is routed outside the namespace.
#![allow(clippy::print_stdout)]

use crate::kube;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use etcd_client::{Client, Compare, PutOptions, Txn, TxnOp};
use ipnet::Ipv4Net;
use weft_testkit::etcd_server::{EtcdServer, EtcdServerOpts};

pub const PREFIX: &str = "/coreos.com/network";
pub const NETWORK: &str = "10.0.0.0/8";
const OWN_IP: &str = "198.18.0.1/16";
const RTPROT_WEFT: u8 = 87;
const NUD_PERMANENT: u16 = 0x80;
/// Kernel clock ticks per second of `/proc/<pid>/stat` (USER_HZ; 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;
/// etcd's default `--max-txn-ops`.
const TXN_OPS: usize = 128;
/// How long one cold start may take before the run counts as failed.
pub(crate) const PROGRAM_DEADLINE: Duration = Duration::from_secs(300);
pub(crate) const EVENT_DEADLINE: Duration = Duration::from_secs(10);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The backends the benchmark programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    HostGw,
    Vxlan,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::HostGw => "host-gw",
            Kind::Vxlan => "vxlan",
        }
    }

    /// Kernel entries per peer: a route (host-gw); route, ARP and FDB entry (vxlan).
    pub fn entries_per_peer(self) -> usize {
        match self {
            Kind::HostGw => 1,
            Kind::Vxlan => 3,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub weft_bin: PathBuf,
    pub backends: Vec<Kind>,
    /// Peer counts of the cold-start runs.
    pub sizes: Vec<usize>,
    /// The peer count at which resync, idle and event latency are measured (must be in `sizes`).
    pub detail_at: usize,
    /// Single lease changes timed (as many adds, then as many deletes).
    pub events: usize,
    /// Idle window for CPU and wakeups.
    pub idle: Duration,
    /// `iperf3 -t` seconds for the pod-to-pod throughput; 0 skips it.
    pub iperf_secs: u32,
    /// Rounds of the pair (host-gw then vxlan), interleaved.
    pub iperf_rounds: usize,
    /// Also measure every round with GRO and UDP GRO forwarding on the underlay veths (both
    /// paths), as a NIC would have them.
    pub underlay_gro: bool,
    /// Also run kube mode at the detail size (`--kube`).
    pub kube: bool,
    /// Run the dual-stack scenario at the detail size.
    pub dual: bool,
}

// ===== results =====

#[derive(Debug, Clone, Default)]
pub struct ColdStart {
    pub kind: Option<Kind>,
    pub peers: usize,
    /// Process start → subnet.env written.
    pub ready: Duration,
    /// Process start → the last kernel entry of the last peer seen.
    pub programmed: Duration,
    /// First → last kernel entry (the programming phase compared with `ip -batch`).
    pub program_phase: Duration,
    /// `ip -batch` (and `bridge -batch`) programming the same entries in a fresh namespace,
    /// written as weft writes them (on nexthop objects where the kernel has them).
    pub ip_batch: Duration,
    /// The same with plain routes (`route replace … via …`), for the record.
    pub ip_batch_plain: Duration,
    pub vm_hwm_kib: u64,
    pub vm_rss_kib: u64,
    /// etcd RPCs started by the agent's start (method → count).
    pub start_rpcs: BTreeMap<String, u64>,
    /// The bench's listener overflowed (timings then come from polling).
    pub overrun: bool,
    pub entries: usize,
}

impl ColdStart {
    pub fn ratio(&self) -> f64 {
        secs(self.program_phase) / secs(self.ip_batch).max(1e-6)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Detail {
    pub kind: Option<Kind>,
    pub peers: usize,
    /// Event → last kernel entry of that peer, adds and deletes (sorted).
    pub add_latency: Vec<Duration>,
    pub del_latency: Vec<Duration>,
    /// The bench's own etcd Put / DeleteRange RPC of each event, start to reply (sorted): the
    /// part of the event → kernel time spent in etcd's commit, before the watch can deliver.
    pub etcd_latency: Vec<Duration>,
    /// The agent's own `reconcile (lease change)` durations (plan + diff + writes), and the plan
    /// part alone (sorted).
    pub reconcile_latency: Vec<Duration>,
    pub plan_latency: Vec<Duration>,
    /// etcd RPCs by the agent per event (excluding the bench's own Put/DeleteRange).
    pub rpcs_per_event: f64,
    pub event_rpcs: BTreeMap<String, u64>,
    /// The agent's own log of the SIGHUP audit: writes and dump+diff duration.
    pub resync_writes: Option<u64>,
    pub resync_reconcile: Option<Duration>,
    pub resync_total: Option<Duration>,
    /// Kernel notifications of weft's entries during the resync (independent write count).
    pub resync_notifications: usize,
    pub idle_secs: f64,
    pub idle_cpu_percent: f64,
    pub idle_wakeups_per_s: f64,
    pub idle_children_seen: usize,
    pub idle_child_cpu_ticks: u64,
    pub idle_notifications: usize,
    pub idle_rpcs: BTreeMap<String, u64>,
    pub vm_hwm_kib: u64,
    pub threads: usize,
}

/// One `iperf3 -c` run.
#[derive(Debug, Clone, Default)]
pub struct IperfRun {
    /// `end.sum_received.bits_per_second`.
    pub bps: f64,
    pub retransmits: u64,
    /// Node 1's `eth0` transmit bytes / packets during the run: the size of what crosses the
    /// underlay (about 64 KiB when GSO packets stay whole through the veths, ≤ 1514 if segmented).
    pub underlay_packet_bytes: f64,
    /// 1-minute load average just before the run.
    pub load1: f64,
    /// CPU time of the iperf3 client and server processes (user + system, iperf3's own
    /// `cpu_utilization_percent`) per GB received, in ms. The kernel here has no IRQ time
    /// accounting, so the softirq work done in their context counts: a veth delivers in the
    /// sender's softirq, which carries the packet through both nodes up to the receiving socket.
    pub cpu_ms_per_gb: f64,
}

/// The runs of both paths with one underlay setting, one of each per round.
#[derive(Debug, Clone, Default)]
pub struct UnderlaySet {
    /// GRO and UDP GRO forwarding on the underlay veths (the default veth has both off).
    pub gro: bool,
    pub hostgw: Vec<IperfRun>,
    pub vxlan: Vec<IperfRun>,
}

impl UnderlaySet {
    pub fn label(&self) -> &'static str {
        if self.gro {
            "underlay veths gro on, rx-udp-gro-forwarding on"
        } else {
            "underlay veths as created (gro off)"
        }
    }

    /// Mean vxlan throughput / mean host-gw throughput: the D1 figure.
    pub fn ratio(&self) -> f64 {
        mean(self.vxlan.iter().map(|r| r.bps)) / mean(self.hostgw.iter().map(|r| r.bps)).max(1.0)
    }

    /// vxlan / host-gw of each round's pair.
    pub fn round_ratios(&self) -> Vec<f64> {
        self.hostgw
            .iter()
            .zip(&self.vxlan)
            .map(|(h, v)| v.bps / h.bps.max(1.0))
            .collect()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Throughput {
    pub vxlan_mtu: u32,
    pub hostgw_mtu: u32,
    /// `ethtool -k` states of node 1's devices in each lab, one line per device.
    pub offloads: Vec<String>,
    /// The default underlay first; with `--underlay-gro` also the GRO one.
    pub sets: Vec<UnderlaySet>,
}

pub fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    sum / n.max(1) as f64
}

fn min_max(v: impl Iterator<Item = f64>) -> (f64, f64) {
    v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    })
}

#[derive(Debug, Default)]
pub struct Report {
    pub cold: Vec<ColdStart>,
    pub detail: Vec<Detail>,
    /// Kube mode beside etcd mode, at the detail size.
    pub kube: Vec<kube::KubeRun>,
    /// Dual-stack, at the detail size.
    pub dual: Vec<crate::dual::DualRun>,
    pub throughput: Option<Throughput>,
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ===== the run =====

pub fn run(cfg: &Config) -> Result<Report> {
    if !cfg.weft_bin.is_file() {
        bail!(
            "{} does not exist (cargo build --release)",
            cfg.weft_bin.display()
        );
    }
    let mut report = Report::default();
    for &kind in &cfg.backends {
        for &n in &cfg.sizes {
            println!("## {} with {n} peers", kind.name());
            let nexthops = kernel_has_nexthops()?;
            let batch =
                ip_batch(kind, n, nexthops).with_context(|| format!("ip -batch, {n} peers"))?;
            let plain = if nexthops {
                ip_batch(kind, n, false)
                    .with_context(|| format!("ip -batch (plain routes), {n} peers"))?
            } else {
                batch
            };
            println!(
                "  ip -batch programming: {} ms ({}), plain routes {} ms",
                ms(batch),
                if nexthops {
                    "routes on nexthop objects, as weft writes them"
                } else {
                    "plain routes: the kernel has no nexthop objects"
                },
                ms(plain)
            );
            let (mut cold, detail) = scenario(cfg, kind, n, n == cfg.detail_at)
                .with_context(|| format!("{} with {n} peers", kind.name()))?;
            cold.ip_batch = batch;
            cold.ip_batch_plain = plain;
            print_cold(&cold);
            if let Some(d) = &detail {
                print_detail(d);
            }
            if cfg.kube && n == cfg.detail_at {
                println!("## {} with {n} Nodes in kube mode", kind.name());
                let run = kube::scenario(cfg, kind, n, &cold, detail.as_ref())
                    .with_context(|| format!("kube mode, {} with {n} Nodes", kind.name()))?;
                kube::print(&run);
                report.kube.push(run);
            }
            if cfg.dual && n == cfg.detail_at {
                println!("## {} with {n} dual-stack peers", kind.name());
                let run = crate::dual::scenario(cfg, kind, n, nexthops)
                    .with_context(|| format!("dual-stack, {} with {n} peers", kind.name()))?;
                crate::dual::print(&run);
                report.dual.push(run);
            }
            report.cold.push(cold);
            if let Some(d) = detail {
                report.detail.push(d);
            }
        }
    }
    if cfg.iperf_secs > 0 {
        let t = throughput(cfg).context("pod-to-pod iperf3")?;
        print_throughput(&t);
        report.throughput = Some(t);
    }
    Ok(report)
}

fn print_cold(c: &ColdStart) {
    println!(
        "  weft: ready {} ms, all {} entries {} ms after start (programming phase {} ms = {:.2}× ip -batch), VmHWM {:.1} MiB (VmRSS {:.1}){}",
        ms(c.ready),
        c.entries,
        ms(c.programmed),
        ms(c.program_phase),
        c.ratio(),
        c.vm_hwm_kib as f64 / 1024.0,
        c.vm_rss_kib as f64 / 1024.0,
        if c.overrun {
            " (listener overrun: timed by polling)"
        } else {
            ""
        }
    );
    println!("  etcd RPCs at start: {}", fmt_rpcs(&c.start_rpcs));
}

fn print_detail(d: &Detail) {
    println!("  at {} peers:", d.peers);
    println!(
        "  event → kernel: add p50 {} ms p99 {} ms, delete p50 {} ms p99 {} ms ({} each); etcd RPCs per event {:.2} ({})",
        ms(percentile(&d.add_latency, 50.0)),
        ms(percentile(&d.add_latency, 99.0)),
        ms(percentile(&d.del_latency, 50.0)),
        ms(percentile(&d.del_latency, 99.0)),
        d.add_latency.len(),
        d.rpcs_per_event,
        fmt_rpcs(&d.event_rpcs)
    );
    println!(
        "  of which etcd's own Put/DeleteRange reply (the bench's RPC): p50 {} ms p99 {} ms max {} ms",
        ms(percentile(&d.etcd_latency, 50.0)),
        ms(percentile(&d.etcd_latency, 99.0)),
        ms(d.etcd_latency.last().copied().unwrap_or_default()),
    );
    println!(
        "  agent-internal reconcile per lease change: p50 {} ms p99 {} ms (plan p50 {} ms) over {} reconciles",
        ms(percentile(&d.reconcile_latency, 50.0)),
        ms(percentile(&d.reconcile_latency, 99.0)),
        ms(percentile(&d.plan_latency, 50.0)),
        d.reconcile_latency.len()
    );
    println!(
        "  resync (SIGHUP audit): {} writes (agent log), {} kernel notifications, dump+diff {} ms (diff+apply {} ms)",
        d.resync_writes.map_or("?".into(), |w| w.to_string()),
        d.resync_notifications,
        d.resync_total.map_or("?".into(), ms),
        d.resync_reconcile.map_or("?".into(), ms)
    );
    println!(
        "  idle {:.0} s: CPU {:.3} %, {:.2} wakeups/s, {} children seen (child CPU ticks {}), {} kernel notifications, etcd RPCs {}; {} threads; VmHWM {:.1} MiB",
        d.idle_secs,
        d.idle_cpu_percent,
        d.idle_wakeups_per_s,
        d.idle_children_seen,
        d.idle_child_cpu_ticks,
        d.idle_notifications,
        fmt_rpcs(&d.idle_rpcs),
        d.threads,
        d.vm_hwm_kib as f64 / 1024.0
    );
}

fn print_throughput(t: &Throughput) {
    for set in &t.sets {
        let ratios: Vec<String> = set
            .round_ratios()
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect();
        println!(
            "## pod-to-pod iperf3, {}: host-gw {:.2} Gbit/s (MTU {}), vxlan {:.2} Gbit/s (MTU {}): vxlan/host-gw = {:.3} (rounds {}); iperf3 CPU host-gw {:.0}, vxlan {:.0} ms/GB",
            set.label(),
            mean(set.hostgw.iter().map(|r| r.bps)) / 1e9,
            t.hostgw_mtu,
            mean(set.vxlan.iter().map(|r| r.bps)) / 1e9,
            t.vxlan_mtu,
            set.ratio(),
            ratios.join(", "),
            mean(set.hostgw.iter().map(|r| r.cpu_ms_per_gb)),
            mean(set.vxlan.iter().map(|r| r.cpu_ms_per_gb))
        );
    }
}

pub fn fmt_rpcs(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ===== peers =====

pub(crate) fn peer_subnet(i: usize) -> Ipv4Net {
    let s = u32::try_from(i + 1).unwrap_or(u32::MAX) & 0xffff;
    Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | (s << 8)), 24).unwrap_or_default()
}

pub(crate) fn peer_ip(i: usize) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    Ipv4Addr::from(base + u32::try_from(i + 2).unwrap_or(0))
}

pub(crate) fn peer_mac(i: usize) -> [u8; 6] {
    let b = u32::try_from(i + 1).unwrap_or(0).to_be_bytes();
    [0x02, 0x42, b[0], b[1], b[2], b[3]]
}

pub(crate) fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn lease_key(i: usize) -> String {
    let s = peer_subnet(i);
    format!("{PREFIX}/subnets/{}-{}", s.network(), s.prefix_len())
}

fn lease_value(kind: Kind, i: usize) -> String {
    match kind {
        Kind::HostGw => format!(
            r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"host-gw","BackendData":null}}"#,
            peer_ip(i)
        ),
        Kind::Vxlan => format!(
            r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{}"}}}}"#,
            peer_ip(i),
            fmt_mac(&peer_mac(i))
        ),
    }
}

pub(crate) fn config_json(kind: Kind) -> String {
    format!(
        r#"{{"Network":"{NETWORK}","Backend":{{"Type":"{}"}}}}"#,
        kind.name()
    )
}

// ===== namespaces and commands =====

pub(crate) fn run_cmd(prog: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {prog} {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{prog} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A namespace with `eth0` 198.18.0.1/16 (veth, the peer end `ueth0` up beside it so eth0 has
/// carrier). Deleted on drop.
pub(crate) struct Netns {
    pub(crate) name: String,
}

impl Netns {
    pub(crate) fn node(tag: &str) -> Result<Netns> {
        let name = format!(
            "wb{}{tag}{}",
            std::process::id() % 10000,
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        run_cmd("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        let n = ns.name.as_str();
        run_cmd("ip", &["-n", n, "link", "set", "lo", "up"])?;
        run_cmd(
            "ip",
            &[
                "-n", n, "link", "add", "eth0", "type", "veth", "peer", "name", "ueth0",
            ],
        )?;
        run_cmd("ip", &["-n", n, "addr", "add", OWN_IP, "dev", "eth0"])?;
        run_cmd("ip", &["-n", n, "link", "set", "ueth0", "up"])?;
        run_cmd("ip", &["-n", n, "link", "set", "eth0", "up"])?;
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run_cmd("ip", &all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run_cmd("ip", &["netns", "del", &self.name]) {
            eprintln!("bench: removing namespace {}: {e:#}", self.name);
        }
    }
}

/// Moves the calling thread into namespace `ns`.
fn enter(ns: &str) -> Result<()> {
    let path = format!("/var/run/netns/{ns}");
    let f = File::open(&path).with_context(|| format!("open {path}"))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("setns {path}"))?;
    Ok(())
}

// ===== ip -batch =====

/// Whether this kernel has nexthop objects (`ip nexthop show` works in a fresh namespace): then
/// weft writes its routes on them, and so does the `ip -batch` baseline.
fn kernel_has_nexthops() -> Result<bool> {
    let ns = Netns::node("c")?;
    Ok(ns.ip(&["nexthop", "show"]).is_ok())
}

/// `ip -batch` (vxlan: and `bridge -batch`) programming the entries weft would write for `n`
/// peers in a fresh namespace (vxlan device made beforehand, not timed). `nexthops`: each route
/// on its own nexthop object, as weft writes them (`nexthop add id K via <gw> dev <dev> [onlink]
/// proto 87`, `route replace <dst> nhid K proto 87`); else plain routes.
fn ip_batch(kind: Kind, n: usize, nexthops: bool) -> Result<Duration> {
    let ns = Netns::node("b")?;
    let dir = tempfile::tempdir().context("temp dir")?;
    let ip_file = dir.path().join("ip.batch");
    let fdb_file = dir.path().join("fdb.batch");
    let mut ip_cmds = String::new();
    let mut fdb_cmds = String::new();
    if kind == Kind::Vxlan {
        ns.ip(&[
            "link",
            "add",
            "flannel.1",
            "type",
            "vxlan",
            "id",
            "1",
            "local",
            "198.18.0.1",
            "dev",
            "eth0",
            "dstport",
            "8472",
            "nolearning",
        ])?;
        ns.ip(&["addr", "add", "10.255.255.0/32", "dev", "flannel.1"])?;
        ns.ip(&["link", "set", "flannel.1", "up"])?;
    }
    // The nexthop (or the plain route's next hop) of peer i, and its route.
    let route = |ip_cmds: &mut String, i: usize, s: Ipv4Net, hop: String| {
        if nexthops {
            let _ = writeln!(
                ip_cmds,
                "nexthop add id {} {hop} proto {RTPROT_WEFT}",
                i + 1
            );
            let _ = writeln!(
                ip_cmds,
                "route replace {s} nhid {} proto {RTPROT_WEFT}",
                i + 1
            );
        } else {
            let _ = writeln!(ip_cmds, "route replace {s} {hop} proto {RTPROT_WEFT}");
        }
    };
    for i in 0..n {
        let s = peer_subnet(i);
        match kind {
            Kind::HostGw => route(&mut ip_cmds, i, s, format!("via {} dev eth0", peer_ip(i))),
            Kind::Vxlan => {
                let mac = fmt_mac(&peer_mac(i));
                let _ = writeln!(
                    fdb_cmds,
                    "fdb replace {mac} dev flannel.1 dst {} self permanent",
                    peer_ip(i)
                );
                let _ = writeln!(
                    ip_cmds,
                    "neigh replace {} lladdr {mac} dev flannel.1 nud permanent",
                    s.network()
                );
                route(
                    &mut ip_cmds,
                    i,
                    s,
                    format!("via {} dev flannel.1 onlink", s.network()),
                );
            }
        }
    }
    fs::write(&ip_file, ip_cmds).context("write ip batch")?;
    fs::write(&fdb_file, fdb_cmds).context("write bridge batch")?;
    let ip_path = ip_file.to_string_lossy().into_owned();
    let fdb_path = fdb_file.to_string_lossy().into_owned();
    let started = Instant::now();
    if kind == Kind::Vxlan {
        run_cmd("bridge", &["-n", &ns.name, "-batch", &fdb_path])?;
    }
    run_cmd("ip", &["-n", &ns.name, "-batch", &ip_path])?;
    let took = started.elapsed();
    let routes = ns
        .ip(&["-4", "route", "show", "proto", "87"])?
        .lines()
        .count();
    if routes != n {
        bail!("ip -batch made {routes} routes, expected {n}");
    }
    Ok(took)
}

// ===== etcd client on a thread inside the namespace =====

type Job = Box<dyn FnOnce(&tokio::runtime::Runtime, &mut Client) + Send>;

pub(crate) struct Etcd {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    port: u16,
}

impl Etcd {
    pub(crate) fn connect(ns: &str, endpoint: String, port: u16) -> Result<Etcd> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let ns = ns.to_owned();
        let thread = std::thread::spawn(move || {
            let setup = (|| -> Result<(tokio::runtime::Runtime, Client)> {
                enter(&ns)?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("runtime")?;
                let client = rt
                    .block_on(Client::connect([endpoint.as_str()], None))
                    .context("connect to etcd")?;
                Ok((rt, client))
            })();
            let (rt, mut client) = match setup {
                Ok(v) => {
                    let _ = ready_tx.send(Ok(()));
                    v
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            while let Ok(job) = rx.recv() {
                job(&rt, &mut client);
            }
        });
        ready_rx
            .recv()
            .map_err(|_| anyhow!("etcd client thread died"))??;
        Ok(Etcd {
            tx: Some(tx),
            thread: Some(thread),
            port,
        })
    }

    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&tokio::runtime::Runtime, &mut Client) -> T + Send + 'static,
    ) -> Result<T> {
        let (rtx, rrx) = mpsc::channel();
        self.tx
            .as_ref()
            .ok_or_else(|| anyhow!("etcd client closed"))?
            .send(Box::new(move |rt, c| {
                let _ = rtx.send(f(rt, c));
            }))
            .map_err(|_| anyhow!("etcd client thread died"))?;
        rrx.recv().map_err(|_| anyhow!("etcd client thread died"))
    }

    /// Writes the config and leases `0..n` in transactions of 128 puts, all on one etcd lease.
    fn load(&self, kind: Kind, n: usize) -> Result<()> {
        let entries = (0..n)
            .map(|i| (lease_key(i), lease_value(kind, i)))
            .collect();
        self.load_entries(config_json(kind), entries)
    }

    /// Writes `config` and the `(key, value)` leases in transactions of 128 puts, all on one
    /// etcd lease.
    pub(crate) fn load_entries(
        &self,
        config: String,
        entries: Vec<(String, String)>,
    ) -> Result<()> {
        self.call(move |rt, c| {
            rt.block_on(async {
                c.put(format!("{PREFIX}/config"), config, None)
                    .await
                    .context("put config")?;
                let lease = c
                    .lease_grant(86_400, None)
                    .await
                    .context("lease grant")?
                    .id();
                for chunk in entries.chunks(TXN_OPS) {
                    let ops: Vec<TxnOp> = chunk
                        .iter()
                        .map(|(key, value)| {
                            TxnOp::put(
                                key.as_str(),
                                value.as_str(),
                                Some(PutOptions::new().with_lease(lease)),
                            )
                        })
                        .collect();
                    c.txn(Txn::new().when(Vec::<Compare>::new()).and_then(ops))
                        .await
                        .context("txn of lease puts")?;
                }
                Ok::<_, anyhow::Error>(())
            })
        })?
    }

    /// Puts one lease; returns the instant just before the RPC and the RPC's duration.
    fn put(&self, kind: Kind, i: usize) -> Result<(Instant, Duration)> {
        self.call(move |rt, c| {
            let t0 = Instant::now();
            rt.block_on(c.put(lease_key(i), lease_value(kind, i), None))
                .context("put lease")?;
            Ok::<_, anyhow::Error>((t0, t0.elapsed()))
        })?
    }

    fn delete(&self, i: usize) -> Result<(Instant, Duration)> {
        self.call(move |rt, c| {
            let t0 = Instant::now();
            rt.block_on(c.delete(lease_key(i), None))
                .context("delete lease")?;
            Ok::<_, anyhow::Error>((t0, t0.elapsed()))
        })?
    }

    /// etcd's `grpc_server_started_total` by method (unary calls and stream openings) plus
    /// `<method> msgs` from `grpc_server_msg_received_total` for the streams.
    fn rpcs(&self) -> Result<BTreeMap<String, u64>> {
        let port = self.port;
        let text = self.call(move |_, _| -> Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", port)).context("connect /metrics")?;
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .context("request /metrics")?;
            let mut body = String::new();
            s.read_to_string(&mut body).context("read /metrics")?;
            Ok(body)
        })??;
        Ok(parse_rpcs(&text))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn parse_rpcs(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let (metric, suffix) = if line.starts_with("grpc_server_started_total{") {
            ("started", "")
        } else if line.starts_with("grpc_server_msg_received_total{") {
            ("msgs", " msgs")
        } else {
            continue;
        };
        let Some(method) = line
            .split("grpc_method=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        let stream = line.contains("grpc_type=\"bidi_stream\"");
        if metric == "msgs" && !stream {
            continue;
        }
        let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        *out.entry(format!("{method}{suffix}")).or_insert(0) += v as u64;
    }
    out
}

fn rpc_delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(*before.get(k).unwrap_or(&0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

// ===== netlink listener on a thread inside the namespace =====

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Obs {
    Route { add: bool, dst: Ipv4Net },
    Neigh { add: bool, ip: Ipv4Addr },
    Fdb { add: bool, mac: [u8; 6] },
    Overrun,
}

pub(crate) struct Listener {
    rx: mpsc::Receiver<(Instant, Obs)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    pub(crate) fn start(ns: &str) -> Result<Listener> {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let ns = ns.to_owned();
        let thread = std::thread::spawn(move || {
            let sock = match open_listener(&ns, &[3, 7]) {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
            while !stop2.load(Ordering::SeqCst) {
                buf.clear();
                match sock.recv(&mut buf, 0) {
                    Ok(_) => {
                        let now = Instant::now();
                        for obs in parse_notifications(&buf) {
                            if tx.send((now, obs)).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(105) => {
                        let _ = tx.send((Instant::now(), Obs::Overrun));
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => {
                        eprintln!("bench: netlink listener: {e}");
                        return;
                    }
                }
            }
        });
        ready_rx
            .recv()
            .map_err(|_| anyhow!("listener thread died"))??;
        Ok(Listener {
            rx,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A netlink socket in `ns` joined to `groups` (RTNLGRP_NEIGH = 3, RTNLGRP_IPV4_ROUTE = 7,
/// RTNLGRP_IPV6_ROUTE = 11), with a large buffer and a 100 ms receive timeout.
pub(crate) fn open_listener(ns: &str, groups: &[u32]) -> Result<rtnetlink::sys::Socket> {
    use nix::sys::socket::{setsockopt, sockopt};
    use rtnetlink::sys::{Socket, protocols::NETLINK_ROUTE};
    enter(ns)?;
    let mut sock = Socket::new(NETLINK_ROUTE).context("netlink socket")?;
    sock.bind_auto().context("bind netlink socket")?;
    // 64 MiB past rmem_max (root): 20,000 routes' notifications must fit while we lag.
    setsockopt(&sock, sockopt::RcvBufForce, &(64 << 20)).context("SO_RCVBUFFORCE")?;
    setsockopt(
        &sock,
        sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(0, 100_000),
    )
    .context("SO_RCVTIMEO")?;
    for &g in groups {
        sock.add_membership(g)
            .with_context(|| format!("join netlink group {g}"))?;
    }
    Ok(sock)
}

fn parse_notifications(buf: &[u8]) -> Vec<Obs> {
    use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
    use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
    use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < 16 || off + len > buf.len() {
            break;
        }
        if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..off + len]) {
            if let NetlinkPayload::InnerMessage(inner) = msg.payload {
                match inner {
                    RouteNetlinkMessage::NewRoute(m) | RouteNetlinkMessage::DelRoute(m)
                        if m.header.address_family == AddressFamily::Inet
                            && u8::from(m.header.protocol) == RTPROT_WEFT =>
                    {
                        let add = msg.header.message_type == 24; // RTM_NEWROUTE
                        let dst = m.attributes.iter().find_map(|a| match a {
                            RouteAttribute::Destination(RouteAddress::Inet(d)) => Some(*d),
                            _ => None,
                        });
                        if let Some(Ok(dst)) =
                            dst.map(|d| Ipv4Net::new(d, m.header.destination_prefix_length))
                        {
                            out.push(Obs::Route { add, dst });
                        }
                    }
                    RouteNetlinkMessage::NewNeighbour(m) | RouteNetlinkMessage::DelNeighbour(m) => {
                        let add = msg.header.message_type == 28; // RTM_NEWNEIGH
                        let permanent = u16::from(m.header.state) & NUD_PERMANENT != 0;
                        if add && !permanent {
                            off += (len + 3) & !3;
                            continue;
                        }
                        let dst = m.attributes.iter().find_map(|a| match a {
                            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                                Some(*ip)
                            }
                            NeighbourAttribute::Destination(NeighbourAddress::Other(raw)) => {
                                <[u8; 4]>::try_from(raw.as_slice()).ok().map(Ipv4Addr::from)
                            }
                            _ => None,
                        });
                        let mac = m.attributes.iter().find_map(|a| match a {
                            NeighbourAttribute::LinkLayerAddress(l) => {
                                <[u8; 6]>::try_from(l.as_slice()).ok()
                            }
                            _ => None,
                        });
                        match (m.header.family, dst, mac) {
                            (AddressFamily::Inet, Some(ip), _) => out.push(Obs::Neigh { add, ip }),
                            (AddressFamily::Bridge, Some(_), Some(mac)) => {
                                out.push(Obs::Fdb { add, mac });
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
        }
        off += (len + 3) & !3;
    }
    out
}

/// The kernel entries of weft seen so far (from notifications), with their last change time.
#[derive(Default)]
pub(crate) struct Seen {
    routes: HashMap<Ipv4Net, Instant>,
    neighs: HashMap<Ipv4Addr, Instant>,
    fdb: HashMap<[u8; 6], Instant>,
    /// Removals of the last drain, by key, for delete latencies.
    gone_routes: HashMap<Ipv4Net, Instant>,
    gone_neighs: HashMap<Ipv4Addr, Instant>,
    gone_fdb: HashMap<[u8; 6], Instant>,
    first: Option<Instant>,
    pub(crate) last: Option<Instant>,
    notifications: usize,
    pub(crate) overrun: bool,
}

impl Seen {
    fn observe(&mut self, at: Instant, obs: Obs) {
        if obs == Obs::Overrun {
            self.overrun = true;
            return;
        }
        self.notifications += 1;
        self.first.get_or_insert(at);
        self.last = Some(at);
        match obs {
            Obs::Route { add: true, dst } => {
                self.routes.insert(dst, at);
            }
            Obs::Route { add: false, dst } => {
                self.routes.remove(&dst);
                self.gone_routes.insert(dst, at);
            }
            Obs::Neigh { add: true, ip } => {
                self.neighs.insert(ip, at);
            }
            Obs::Neigh { add: false, ip } => {
                self.neighs.remove(&ip);
                self.gone_neighs.insert(ip, at);
            }
            Obs::Fdb { add: true, mac } => {
                self.fdb.insert(mac, at);
            }
            Obs::Fdb { add: false, mac } => {
                self.fdb.remove(&mac);
                self.gone_fdb.insert(mac, at);
            }
            Obs::Overrun => {}
        }
    }

    /// Drains what the listener has, waiting up to `wait` for the first item.
    pub(crate) fn drain(&mut self, l: &Listener, wait: Duration) {
        if let Ok((at, obs)) = l.rx.recv_timeout(wait) {
            self.observe(at, obs);
            while let Ok((at, obs)) = l.rx.try_recv() {
                self.observe(at, obs);
            }
        }
    }

    pub(crate) fn entries(&self) -> usize {
        self.routes.len() + self.neighs.len() + self.fdb.len()
    }

    /// When every entry of peer `i` is present: the latest of their times.
    pub(crate) fn peer_present(&self, kind: Kind, i: usize) -> Option<Instant> {
        let s = peer_subnet(i);
        let r = *self.routes.get(&s)?;
        if kind == Kind::HostGw {
            return Some(r);
        }
        let n = *self.neighs.get(&s.network())?;
        let f = *self.fdb.get(&peer_mac(i))?;
        Some(r.max(n).max(f))
    }

    /// When every entry of peer `i` is gone: the latest removal time.
    pub(crate) fn peer_gone(&self, kind: Kind, i: usize) -> Option<Instant> {
        let s = peer_subnet(i);
        if self.routes.contains_key(&s) {
            return None;
        }
        let r = *self.gone_routes.get(&s)?;
        if kind == Kind::HostGw {
            return Some(r);
        }
        if self.neighs.contains_key(&s.network()) || self.fdb.contains_key(&peer_mac(i)) {
            return None;
        }
        let n = *self.gone_neighs.get(&s.network())?;
        let f = *self.gone_fdb.get(&peer_mac(i))?;
        Some(r.max(n).max(f))
    }
}

// ===== the agent process =====

pub(crate) struct Agent {
    pub(crate) child: Child,
    pub(crate) pid: i32,
    pub(crate) log: PathBuf,
}

impl Agent {
    fn spawn(bin: &Path, ns: &str, endpoint: &str, dir: &Path) -> Result<Agent> {
        Agent::spawn_with(bin, ns, dir, &[format!("--etcd-endpoints={endpoint}")], &[])
    }

    /// `ip netns exec <ns> <bin> <mode_args> --iface=eth0 --subnet-file=<dir>/subnet.env
    /// --peer-cache-file=<dir>/peers.json` with `env`, logging to `<dir>/weft.log` at debug
    /// (the bench reads the agent's reconcile lines).
    pub(crate) fn spawn_with(
        bin: &Path,
        ns: &str,
        dir: &Path,
        mode_args: &[String],
        env: &[(&str, &str)],
    ) -> Result<Agent> {
        let log = dir.join("weft.log");
        let out = File::create(&log).context("create weft.log")?;
        let err = out.try_clone().context("dup log")?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(bin)
            .args(mode_args)
            .arg("--iface=eth0")
            .arg(format!(
                "--subnet-file={}",
                dir.join("subnet.env").display()
            ))
            // Not the machine's /var/lib/weft: each run starts without a cache of its own.
            .arg(format!(
                "--peer-cache-file={}",
                dir.join("peers.json").display()
            ))
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info,weft=debug,backends=debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("start weft")?;
        let pid = i32::try_from(child.id()).context("pid")?;
        Ok(Agent { child, pid, log })
    }

    pub(crate) fn alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("wait weft")? {
            bail!("weft exited ({status}); log tail:\n{}", self.log_tail(30));
        }
        Ok(())
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), sig)
            .with_context(|| format!("kill -{sig} {}", self.pid))
    }

    pub(crate) fn status(&self, field: &str) -> Result<u64> {
        proc_status(&format!("/proc/{}/status", self.pid), field)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.signal(nix::sys::signal::Signal::SIGTERM);
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn proc_status(path: &str, field: &str) -> Result<u64> {
    let text = fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .ok_or_else(|| anyhow!("{field} not in {path}"))
}

/// (utime+stime, cutime+cstime) of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let after = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed {path}"))?;
    // Fields after the comm: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
    let f: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| -> Result<u64> {
        f.get(i - 3)
            .and_then(|v| v.parse::<i64>().ok())
            .map(|v| v.max(0) as u64)
            .ok_or_else(|| anyhow!("field {i} of {path}"))
    };
    Ok((num(14)? + num(15)?, num(16)? + num(17)?))
}

/// Voluntary + involuntary context switches of every thread, by thread id.
fn context_switches(pid: i32) -> Result<HashMap<u32, u64>> {
    let mut out = HashMap::new();
    for entry in fs::read_dir(format!("/proc/{pid}/task")).context("read task dir")? {
        let entry = entry.context("task entry")?;
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let status = entry.path().join("status");
        let status = status.to_string_lossy();
        let n = proc_status(&status, "voluntary_ctxt_switches").unwrap_or(0)
            + proc_status(&status, "nonvoluntary_ctxt_switches").unwrap_or(0);
        out.insert(tid, n);
    }
    Ok(out)
}

/// Context switches between two samples: per thread, so a thread that ends in between (a
/// blocking-pool thread after its keep-alive, a peer-cache writer) does not make the sum go
/// down; its switches after the first sample are lost, an undercount of at most a few.
fn switches_between(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> u64 {
    after
        .iter()
        .map(|(tid, n)| n.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum()
}

fn children(pid: i32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) {
        for e in rd.flatten() {
            if let Ok(text) = fs::read_to_string(e.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}

// ===== one scenario =====

fn scenario(
    cfg: &Config,
    kind: Kind,
    n: usize,
    detail: bool,
) -> Result<(ColdStart, Option<Detail>)> {
    let ns = Netns::node("n")?;
    let dir = tempfile::tempdir().context("temp dir")?;
    let server = EtcdServer::start(EtcdServerOpts {
        netns: Some(ns.name.clone()),
        listen_ip: std::net::IpAddr::V4(Ipv4Addr::LOCALHOST),
        ..EtcdServerOpts::default()
    })
    .context("start etcd")?;
    let etcd = Etcd::connect(&ns.name, server.endpoint(), server.client_port())?;
    let loaded = Instant::now();
    etcd.load(kind, n)?;
    println!(
        "  loaded {n} leases into etcd in {} ms",
        ms(loaded.elapsed())
    );
    let listener = Listener::start(&ns.name)?;
    let before = etcd.rpcs()?;

    let mut seen = Seen::default();
    let started = Instant::now();
    let mut agent = Agent::spawn(&cfg.weft_bin, &ns.name, &server.endpoint(), dir.path())?;
    let ready = wait_programmed(
        &ns,
        kind,
        n,
        dir.path(),
        &listener,
        &mut seen,
        &mut agent,
        started,
    )?;
    let subnet_env = dir.path().join("subnet.env");
    let want = n * kind.entries_per_peer();
    let last = seen.last.unwrap_or(started);
    let first = seen.first.unwrap_or(started);
    // Let the start settle (watch, keep-alive) before reading the RPC counters.
    std::thread::sleep(Duration::from_millis(300));
    seen.drain(&listener, Duration::from_millis(1));
    let after = etcd.rpcs()?;
    let cold = ColdStart {
        kind: Some(kind),
        peers: n,
        ready,
        programmed: last.saturating_duration_since(started),
        program_phase: last.saturating_duration_since(first),
        ip_batch: Duration::ZERO,
        ip_batch_plain: Duration::ZERO,
        vm_hwm_kib: agent.status("VmHWM")?,
        vm_rss_kib: agent.status("VmRSS")?,
        start_rpcs: rpc_delta(&before, &after),
        overrun: seen.overrun,
        entries: want,
    };
    if !detail {
        return Ok((cold, None));
    }

    let mut d = Detail {
        kind: Some(kind),
        peers: n,
        ..Detail::default()
    };

    // --- no-change resync: SIGHUP makes the agent dump and diff now.
    seen.drain(&listener, Duration::from_millis(50));
    let notes = seen.notifications;
    let audits = agent
        .log_text()
        .matches("audit (SIGHUP): dump and diff in")
        .count();
    agent.signal(nix::sys::signal::Signal::SIGHUP)?;
    let until = Instant::now() + Duration::from_secs(30);
    let log = loop {
        let text = agent.log_text();
        if text.matches("audit (SIGHUP): dump and diff in").count() > audits {
            break text;
        }
        agent.alive()?;
        if Instant::now() > until {
            bail!(
                "no audit log line after SIGHUP; log tail:\n{}",
                agent.log_tail(20)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    seen.drain(&listener, Duration::from_millis(100));
    d.resync_notifications = seen.notifications - notes;
    (d.resync_writes, d.resync_reconcile, d.resync_total) = parse_audit(&log);

    // --- single lease changes: adds, then deletes, each after the previous one landed. New
    // peers take the subnets after the loaded ones, except the agent's own.
    let own = own_subnet(&subnet_env)?;
    let fresh: Vec<usize> = (n..)
        .filter(|&i| peer_subnet(i) != own)
        .take(cfg.events)
        .collect();
    let rpcs_before = etcd.rpcs()?;
    for &i in &fresh {
        let (t0, rpc) = etcd.put(kind, i)?;
        d.etcd_latency.push(rpc);
        let until = t0 + EVENT_DEADLINE;
        let at = loop {
            if let Some(at) = seen.peer_present(kind, i) {
                break at;
            }
            if Instant::now() > until {
                bail!(
                    "peer {i} not programmed {EVENT_DEADLINE:?} after its put; log tail:\n{}",
                    agent.log_tail(20)
                );
            }
            seen.drain(&listener, Duration::from_millis(5));
        };
        d.add_latency.push(at.saturating_duration_since(t0));
        std::thread::sleep(Duration::from_millis(10));
    }
    for &i in &fresh {
        let (t0, rpc) = etcd.delete(i)?;
        d.etcd_latency.push(rpc);
        let until = t0 + EVENT_DEADLINE;
        let at = loop {
            if let Some(at) = seen.peer_gone(kind, i) {
                break at;
            }
            if Instant::now() > until {
                bail!(
                    "peer {i} not removed {EVENT_DEADLINE:?} after its delete; log tail:\n{}",
                    agent.log_tail(20)
                );
            }
            seen.drain(&listener, Duration::from_millis(5));
        };
        d.del_latency.push(at.saturating_duration_since(t0));
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut inner = lease_change_reconciles(&agent.log_text());
    let mut plans: Vec<Duration> = inner.iter().map(|(_, p)| *p).collect();
    inner.sort();
    plans.sort();
    d.reconcile_latency = inner.into_iter().map(|(t, _)| t).collect();
    d.reconcile_latency.sort();
    d.plan_latency = plans;
    let mut event_rpcs = rpc_delta(&rpcs_before, &etcd.rpcs()?);
    // Leave out the bench's own writes.
    let events = cfg.events as u64;
    for (method, own) in [("Put", events), ("DeleteRange", events)] {
        if let Some(v) = event_rpcs.get_mut(method) {
            *v = v.saturating_sub(own);
        }
    }
    event_rpcs.retain(|_, v| *v > 0);
    let unary: u64 = event_rpcs
        .iter()
        .filter(|(k, _)| !k.ends_with(" msgs"))
        .map(|(_, v)| v)
        .sum();
    d.rpcs_per_event = unary as f64 / (2 * cfg.events).max(1) as f64;
    d.event_rpcs = event_rpcs;
    d.add_latency.sort();
    d.etcd_latency.sort();
    d.del_latency.sort();

    // --- idle.
    std::thread::sleep(Duration::from_secs(1));
    seen.drain(&listener, Duration::from_millis(1));
    let notes = seen.notifications;
    let rpcs0 = etcd.rpcs()?;
    let (cpu0, child0) = cpu_ticks(agent.pid)?;
    let ctx0 = context_switches(agent.pid)?;
    let t0 = Instant::now();
    let mut kids: HashSet<u32> = HashSet::new();
    while t0.elapsed() < cfg.idle {
        kids.extend(children(agent.pid));
        seen.drain(&listener, Duration::from_millis(250));
    }
    let (cpu1, child1) = cpu_ticks(agent.pid)?;
    let ctx1 = context_switches(agent.pid)?;
    let threads = ctx1.len();
    let window = secs(t0.elapsed());
    seen.drain(&listener, Duration::from_millis(1));
    d.idle_rpcs = rpc_delta(&rpcs0, &etcd.rpcs()?);
    d.idle_secs = window;
    d.idle_cpu_percent = (cpu1 - cpu0) as f64 / USER_HZ / window * 100.0;
    d.idle_wakeups_per_s = switches_between(&ctx0, &ctx1) as f64 / window;
    d.idle_children_seen = kids.len();
    d.idle_child_cpu_ticks = child1 - child0;
    d.idle_notifications = seen.notifications - notes;
    d.threads = threads;
    d.vm_hwm_kib = agent.status("VmHWM")?;
    agent.alive()?;
    Ok((cold, Some(d)))
}

/// Polls until `<dir>/subnet.env` exists and the kernel holds every entry of `peers` peers
/// (counted from the listener's notifications, or by dumps after an overrun); returns start →
/// subnet.env. Both modes' cold starts (etcd, kube) wait with it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn wait_programmed(
    ns: &Netns,
    kind: Kind,
    peers: usize,
    dir: &Path,
    listener: &Listener,
    seen: &mut Seen,
    agent: &mut Agent,
    started: Instant,
) -> Result<Duration> {
    let subnet_env = dir.join("subnet.env");
    let want = peers * kind.entries_per_peer();
    let mut ready = None;
    let mut last_poll = Instant::now();
    loop {
        seen.drain(listener, Duration::from_millis(2));
        if ready.is_none() && subnet_env.exists() {
            ready = Some(started.elapsed());
        }
        if seen.overrun && last_poll.elapsed() > Duration::from_millis(100) {
            // Notifications were lost: count the kernel's entries instead (coarser timing).
            last_poll = Instant::now();
            if count_entries(ns, kind)? >= want {
                seen.last = Some(Instant::now());
                break;
            }
        }
        if ready.is_some() && seen.entries() >= want {
            break;
        }
        agent.alive()?;
        if started.elapsed() > PROGRAM_DEADLINE {
            bail!(
                "not programmed after {PROGRAM_DEADLINE:?}: {} of {want} entries, ready: {ready:?}; log tail:\n{}",
                seen.entries(),
                agent.log_tail(20)
            );
        }
    }
    // The agent may still be writing subnet.env after its last kernel write.
    loop {
        if let Some(r) = ready {
            return Ok(r);
        }
        if subnet_env.exists() {
            ready = Some(started.elapsed());
        }
        agent.alive()?;
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `FLANNEL_SUBNET` of subnet.env as the /24 network (`10.0.7.1/24` → `10.0.7.0/24`).
fn own_subnet(path: &Path) -> Result<Ipv4Net> {
    let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))
        .and_then(|v| v.parse::<Ipv4Net>().ok())
        .map(|n| n.trunc())
        .ok_or_else(|| anyhow!("no FLANNEL_SUBNET in {}", path.display()))
}

/// weft's own entries in the namespace, counted by dumps (the fallback after an overrun).
pub(crate) fn count_entries(ns: &Netns, kind: Kind) -> Result<usize> {
    let routes = ns
        .ip(&["-4", "route", "show", "proto", "87"])?
        .lines()
        .count();
    if kind == Kind::HostGw {
        return Ok(routes);
    }
    let neighs = ns
        .ip(&[
            "-4",
            "neigh",
            "show",
            "dev",
            "flannel.1",
            "nud",
            "permanent",
        ])?
        .lines()
        .count();
    let fdb = run_cmd(
        "bridge",
        &["-n", &ns.name, "fdb", "show", "dev", "flannel.1"],
    )?
    .lines()
    .filter(|l| l.contains(" dst "))
    .count();
    Ok(routes + neighs + fdb)
}

/// From the agent log: the last `reconcile (audit (SIGHUP)): … N writes, M nexthop writes … in
/// D` (writes: N + M, every kernel write) and `audit (SIGHUP): dump and diff in D` lines.
pub fn parse_audit(log: &str) -> (Option<u64>, Option<Duration>, Option<Duration>) {
    let mut writes = None;
    let mut reconcile = None;
    let mut total = None;
    for line in log.lines() {
        if let Some(rest) = line.split("reconcile (audit (SIGHUP)): ").nth(1) {
            let counts: Vec<u64> = rest
                .split(", ")
                .filter_map(|p| {
                    let n = p.strip_suffix(" writes")?;
                    n.strip_suffix(" nexthop").unwrap_or(n).parse().ok()
                })
                .collect();
            writes = (!counts.is_empty()).then(|| counts.iter().sum());
            reconcile = reconcile_duration(rest);
        }
        if let Some(rest) = line.split("audit (SIGHUP): dump and diff in ").nth(1) {
            total = parse_debug_duration(rest);
        }
    }
    (writes, reconcile, total)
}

/// The total of `… failures in <D> (plan <P>)`: `<D>`.
fn reconcile_duration(rest: &str) -> Option<Duration> {
    let after = rest.split(" failures in ").nth(1)?;
    parse_debug_duration(after.split_whitespace().next()?)
}

/// Every `reconcile (lease change): …` of the log: (total, plan) durations.
pub fn lease_change_reconciles(log: &str) -> Vec<(Duration, Duration)> {
    log.lines()
        .filter_map(|line| {
            let rest = line.split("reconcile (lease change): ").nth(1)?;
            let total = reconcile_duration(rest)?;
            let plan = rest
                .split("(plan ")
                .nth(1)
                .and_then(|p| parse_debug_duration(p.split([',', ')']).next().unwrap_or(p)))
                .unwrap_or_default();
            Some((total, plan))
        })
        .collect()
}

/// Parses Rust's `{:?}` of a Duration: `12.3ms`, `450µs`, `1.2s`, `800ns`.
pub fn parse_debug_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| s.split_at(i))?;
    let v: f64 = num.parse().ok()?;
    let scale = match unit {
        "s" => 1.0,
        "ms" => 1e-3,
        "µs" | "us" => 1e-6,
        "ns" => 1e-9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(v * scale))
}

// ===== pod-to-pod throughput =====

/// The offload features shown next to the D1 figures (`ethtool -k` names).
const OFFLOADS: [&str; 5] = [
    "tcp-segmentation-offload",
    "generic-segmentation-offload",
    "generic-receive-offload",
    "tx-udp_tnl-segmentation",
    "rx-udp-gro-forwarding",
];

/// Both labs (host-gw, vxlan) are built once and measured in turns: each round runs host-gw
/// then vxlan for every underlay setting, so the pair of a round shares the machine's load.
fn throughput(cfg: &Config) -> Result<Throughput> {
    let hostgw = PodLab::start(cfg, Kind::HostGw).context("host-gw lab")?;
    let vxlan = match PodLab::start(cfg, Kind::Vxlan).context("vxlan lab") {
        Ok(lab) => lab,
        Err(e) => {
            if let Err(e2) = hostgw.stop() {
                eprintln!("tearing down the host-gw lab: {e2:#}");
            }
            return Err(e);
        }
    };
    let mut labs = [hostgw, vxlan];
    let result = measure_rounds(cfg, &mut labs);
    let mut failures = Vec::new();
    for lab in labs {
        if let Err(e) = lab.stop() {
            failures.push(format!("{e:#}"));
        }
    }
    let t = result?;
    if !failures.is_empty() {
        bail!("tearing down the iperf3 labs: {}", failures.join("; "));
    }
    Ok(t)
}

fn measure_rounds(cfg: &Config, labs: &mut [PodLab; 2]) -> Result<Throughput> {
    let mut t = Throughput {
        hostgw_mtu: labs[0].mtu,
        vxlan_mtu: labs[1].mtu,
        ..Throughput::default()
    };
    for lab in labs.iter() {
        for line in lab.offloads()? {
            println!("  {line}");
            t.offloads.push(line);
        }
    }
    let settings: &[bool] = if cfg.underlay_gro {
        &[false, true]
    } else {
        &[false]
    };
    for &gro in settings {
        t.sets.push(UnderlaySet {
            gro,
            ..UnderlaySet::default()
        });
    }
    for round in 0..cfg.iperf_rounds {
        for (set, &gro) in t.sets.iter_mut().zip(settings) {
            for lab in labs.iter() {
                lab.set_underlay_gro(gro)?;
            }
            for lab in labs.iter() {
                let run = lab
                    .iperf(cfg.iperf_secs)
                    .with_context(|| format!("{} round {}", lab.kind.name(), round + 1))?;
                println!(
                    "  iperf3 {} round {}, {}: {:.2} Gbit/s (MTU {}), iperf3 CPU {:.0} ms/GB, {:.0} B per underlay packet, {} retransmits, load {:.2}",
                    lab.kind.name(),
                    round + 1,
                    set.label(),
                    run.bps / 1e9,
                    lab.mtu,
                    run.cpu_ms_per_gb,
                    run.underlay_packet_bytes,
                    run.retransmits,
                    run.load1
                );
                match lab.kind {
                    Kind::HostGw => set.hostgw.push(run),
                    Kind::Vxlan => set.vxlan.push(run),
                }
            }
        }
    }
    Ok(t)
}

/// A two-node lab with a pod per node and `iperf3 -s` running in pod 2.
struct PodLab {
    kind: Kind,
    lab: weft_testkit::lab::Lab,
    mtu: u32,
    server: Child,
    server_ip: String,
    client_ns: String,
}

impl PodLab {
    fn start(cfg: &Config, kind: Kind) -> Result<PodLab> {
        use weft_testkit::lab::{Lab, LabSpec};
        let mut spec = LabSpec::new(2, &cfg.weft_bin);
        spec.backend = kind.name().to_owned();
        spec.healthz_port = 0;
        let mut lab = Lab::build(spec)?;
        lab.start_all()?;
        let mut mtu = 0;
        for k in 1..=2 {
            mtu = lab.wait_subnet_env(k, Duration::from_secs(30))?.mtu;
        }
        lab.add_pods()?;
        let until = Instant::now() + Duration::from_secs(20);
        while !(lab.ping(1, 2, 1, Duration::from_secs(1))?
            && lab.ping(2, 1, 1, Duration::from_secs(1))?)
        {
            if Instant::now() > until {
                bail!("pods do not reach each other");
            }
        }
        let server = Command::new("ip")
            .args(["netns", "exec", lab.pod_ns(2)?, "iperf3", "-s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start iperf3 -s")?;
        Ok(PodLab {
            kind,
            mtu,
            server,
            server_ip: lab.pod_ip(2)?.to_string(),
            client_ns: lab.pod_ns(1)?.to_owned(),
            lab,
        })
    }

    /// `iperf3 -c` from pod 1 for `secs`; retried until the server accepts (and once more if
    /// a run reports an error).
    fn iperf(&self, secs: u32) -> Result<IperfRun> {
        let load1 = load_average()?;
        let before = self.eth0_tx()?;
        let secs = secs.to_string();
        let until = Instant::now() + Duration::from_secs(15);
        let json = loop {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.client_ns,
                    "iperf3",
                    "-c",
                    &self.server_ip,
                    "-t",
                    &secs,
                    "-J",
                ])
                .stdin(Stdio::null())
                .output()
                .context("run iperf3 -c")?;
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if json["end"]["sum_received"]["bits_per_second"].is_f64() {
                break json;
            }
            if Instant::now() > until {
                bail!(
                    "iperf3 -c {} failed ({}): {}",
                    self.server_ip,
                    out.status,
                    json["error"]
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let after = self.eth0_tx()?;
        let packets = after.0.saturating_sub(before.0);
        let bytes = after.1.saturating_sub(before.1);
        let received = &json["end"]["sum_received"];
        let cpu = &json["end"]["cpu_utilization_percent"];
        let cpu_secs = (cpu["host_total"].as_f64().unwrap_or_default()
            + cpu["remote_total"].as_f64().unwrap_or_default())
            / 100.0
            * received["seconds"].as_f64().unwrap_or_default();
        let gb = received["bytes"].as_f64().unwrap_or_default() / 1e9;
        Ok(IperfRun {
            bps: received["bits_per_second"].as_f64().unwrap_or_default(),
            cpu_ms_per_gb: cpu_secs * 1e3 / gb.max(1e-9),
            retransmits: json["end"]["sum_sent"]["retransmits"]
                .as_u64()
                .unwrap_or_default(),
            underlay_packet_bytes: bytes as f64 / packets.max(1) as f64,
            load1,
        })
    }

    /// Node 1's `eth0` transmit counters (packets, bytes): what node 1 puts on the underlay.
    fn eth0_tx(&self) -> Result<(u64, u64)> {
        let v = self.lab.ip_json(1, &["-s", "link", "show", "eth0"])?;
        let tx = &v[0]["stats64"]["tx"];
        match (tx["packets"].as_u64(), tx["bytes"].as_u64()) {
            (Some(p), Some(b)) => Ok((p, b)),
            _ => bail!("no stats64 in `ip -j -s link show eth0`: {v}"),
        }
    }

    /// The underlay veths: `eth0` of both nodes and their peers on the underlay bridge.
    fn underlay_veths(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for k in 1..=2 {
            out.push((self.lab.node_ns(k)?.to_owned(), "eth0".to_owned()));
        }
        let u = self.lab.underlay_ns().to_owned();
        let text =
            run_ok(Command::new("ip").args(["-n", &u, "-j", "link", "show", "master", "br0"]))?;
        let ports: serde_json::Value =
            serde_json::from_str(&text).context("ip -j link show master br0")?;
        for p in ports.as_array().into_iter().flatten() {
            if let Some(name) = p["ifname"].as_str() {
                out.push((u.clone(), name.to_owned()));
            }
        }
        Ok(out)
    }

    /// `ethtool -K <veth> gro on|off rx-udp-gro-forwarding on|off` on every underlay veth.
    fn set_underlay_gro(&self, on: bool) -> Result<()> {
        let v = if on { "on" } else { "off" };
        for (ns, dev) in self.underlay_veths()? {
            run_ok(Command::new("ip").args([
                "netns",
                "exec",
                &ns,
                "ethtool",
                "-K",
                &dev,
                "gro",
                v,
                "rx-udp-gro-forwarding",
                v,
            ]))?;
        }
        Ok(())
    }

    /// One line per device of node 1 (and its underlay port) with the [`OFFLOADS`] states; the
    /// vxlan device also shows its outer UDP checksum setting.
    fn offloads(&self) -> Result<Vec<String>> {
        let n1 = self.lab.node_ns(1)?.to_owned();
        let links = self.lab.ip_json(1, &["-d", "link", "show"])?;
        let mut devs: Vec<(String, String, String)> = Vec::new();
        for l in links.as_array().into_iter().flatten() {
            let Some(name) = l["ifname"].as_str() else {
                continue;
            };
            if name == "lo" {
                continue;
            }
            let mut note = String::new();
            let info = &l["linkinfo"];
            if let Some(kind) = info["info_kind"].as_str() {
                note = kind.to_owned();
            }
            if let Some(csum) = info["info_data"]["udp_csum"].as_bool() {
                note.push_str(if csum { ", udpcsum" } else { ", noudpcsum" });
            }
            devs.push((n1.clone(), name.to_owned(), note));
        }
        if let Some((u, port)) = self.underlay_veths()?.into_iter().nth(2) {
            devs.push((u, port, "veth, underlay port of a node".to_owned()));
        }
        let mut out = Vec::new();
        for (ns, dev, note) in devs {
            let text =
                run_ok(Command::new("ip").args(["netns", "exec", &ns, "ethtool", "-k", &dev]))?;
            let states: Vec<String> = OFFLOADS
                .iter()
                .map(|f| {
                    let state = text
                        .lines()
                        .find_map(|l| l.trim().strip_prefix(&format!("{f}: ")))
                        .map_or("?", |v| v.split_whitespace().next().unwrap_or("?"));
                    format!("{} {state}", offload_abbrev(f))
                })
                .collect();
            out.push(format!(
                "offloads ({} lab, node 1) {dev} ({note}): {}",
                self.kind.name(),
                states.join(", ")
            ));
        }
        Ok(out)
    }

    fn stop(mut self) -> Result<()> {
        let _ = self.server.kill();
        let _ = self.server.wait();
        self.lab.teardown()
    }
}

fn offload_abbrev(feature: &str) -> &str {
    match feature {
        "tcp-segmentation-offload" => "tso",
        "generic-segmentation-offload" => "gso",
        "generic-receive-offload" => "gro",
        other => other,
    }
}

/// Runs a command; its stdout, or an error naming it with its stderr.
fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The 1-minute load average (`/proc/loadavg`).
fn load_average() -> Result<f64> {
    let text = fs::read_to_string("/proc/loadavg").context("reading /proc/loadavg")?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("parsing /proc/loadavg: {text:?}"))
}

// ===== the markdown summary =====

/// The results as Markdown tables with each figure next to its target.
pub fn markdown(cfg: &Config, r: &Report) -> String {
    let mut s = String::new();
    if !r.cold.is_empty() {
        cold_tables(&mut s, cfg, r);
    }
    kube::markdown(&mut s, &r.kube);
    crate::dual::markdown(&mut s, &r.dual);
    if let Some(t) = &r.throughput {
        let _ = writeln!(
            s,
            "\n### Pod-to-pod iperf3 (D1)\n\n| underlay | host-gw Gbit/s (MTU {}) mean (min–max) | vxlan Gbit/s (MTU {}) mean (min–max) | vxlan / host-gw (D1 ≥ 0.9) | per round | iperf3 CPU ms/GB host-gw / vxlan | bytes per underlay packet host-gw / vxlan |\n|---|---:|---:|---:|---|---:|---:|",
            t.hostgw_mtu, t.vxlan_mtu,
        );
        for set in &t.sets {
            let gbit = |v: &[IperfRun]| {
                let (lo, hi) = min_max(v.iter().map(|r| r.bps / 1e9));
                format!(
                    "{:.2} ({lo:.2}–{hi:.2})",
                    mean(v.iter().map(|r| r.bps / 1e9))
                )
            };
            let ratios: Vec<String> = set
                .round_ratios()
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.3} {} | {} | {:.0} / {:.0} | {:.0} / {:.0} |",
                set.label(),
                gbit(&set.hostgw),
                gbit(&set.vxlan),
                set.ratio(),
                met(set.ratio() >= 0.9),
                ratios.join(", "),
                mean(set.hostgw.iter().map(|r| r.cpu_ms_per_gb)),
                mean(set.vxlan.iter().map(|r| r.cpu_ms_per_gb)),
                mean(set.hostgw.iter().map(|r| r.underlay_packet_bytes)),
                mean(set.vxlan.iter().map(|r| r.underlay_packet_bytes)),
            );
        }
        let (lo, hi) = min_max(
            t.sets
                .iter()
                .flat_map(|set| set.hostgw.iter().chain(&set.vxlan))
                .map(|r| r.load1),
        );
        let _ = writeln!(
            s,
            "\n{} rounds of `iperf3 -t {}`, host-gw then vxlan in each; 1-minute load average before the runs {lo:.2}–{hi:.2}.\n",
            cfg.iperf_rounds, cfg.iperf_secs
        );
        for line in &t.offloads {
            let _ = writeln!(s, "- {line}");
        }
    }
    s
}

/// The cold-start and the detail tables (P1–P7).
fn cold_tables(s: &mut String, cfg: &Config, r: &Report) {
    let _ = writeln!(s, "### Cold start and programming (P1, P4, P5, P7)\n");
    let _ = writeln!(
        s,
        "| backend | peers | kernel entries | ready (subnet.env) ms | all programmed ms | programming phase ms | ip -batch ms | weft / ip -batch (P5 ≤ 1.5) | ip -batch, plain routes ms | VmHWM MiB | etcd RPCs at start (P7) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for c in &r.cold {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {:.2} {} | {} | {:.1} | {} |",
            c.kind.map_or("?", Kind::name),
            c.peers,
            c.entries,
            ms(c.ready),
            ms(c.programmed),
            ms(c.program_phase),
            ms(c.ip_batch),
            c.ratio(),
            met(c.ratio() <= 1.5),
            ms(c.ip_batch_plain),
            c.vm_hwm_kib as f64 / 1024.0,
            fmt_rpcs(&c.start_rpcs)
        );
    }
    let _ = writeln!(s, "\n### At {} peers (P2, P3, P6, P7)\n", cfg.detail_at);
    let _ = writeln!(
        s,
        "| backend | add p50 / p99 ms (P3 p99 ≤ 5) | delete p50 / p99 ms | agent reconcile p50 / p99 ms (plan p50) | etcd RPCs per event | resync writes | resync dump+diff ms | idle CPU % | wakeups/s | children | VmHWM MiB |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|");
    for d in &r.detail {
        let _ = writeln!(
            s,
            "| {} | {} / {} {} | {} / {} | {} / {} ({}) | {:.2} | {} | {} | {:.3} | {:.2} | {} | {:.1} |",
            d.kind.map_or("?", Kind::name),
            ms(percentile(&d.add_latency, 50.0)),
            ms(percentile(&d.add_latency, 99.0)),
            met(percentile(&d.add_latency, 99.0) <= Duration::from_millis(5)),
            ms(percentile(&d.del_latency, 50.0)),
            ms(percentile(&d.del_latency, 99.0)),
            ms(percentile(&d.reconcile_latency, 50.0)),
            ms(percentile(&d.reconcile_latency, 99.0)),
            ms(percentile(&d.plan_latency, 50.0)),
            d.rpcs_per_event,
            d.resync_writes.map_or("?".into(), |w| w.to_string()),
            d.resync_total.map_or("?".into(), ms),
            d.idle_cpu_percent,
            d.idle_wakeups_per_s,
            d.idle_children_seen,
            d.vm_hwm_kib as f64 / 1024.0
        );
    }
}

pub(crate) fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "missed" }
}
