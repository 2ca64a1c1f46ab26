//! Dual-stack (issue 13, target V1): the same node facing N dual-stack peers (flannel's keys
//! `10.0.<i>.0-24&fd00:10:0:<i>::-64`, `PublicIPv6` set) instead of IPv4 ones. Measured: start →
//! every IPv4 and IPv6 entry in the kernel against `ip -batch` of the same entries of both
//! families in a fresh namespace of the same run, and VmHWM.
//!
//! The entries are counted by polling `ip -4/-6 route show proto 87` every 20 ms (the IPv4
//! scenarios use a netlink listener, whose parser knows IPv4 only), so "programmed" is late by at
//! most one poll, which the ratio reports against the baseline.
use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use ipnet::Ipv6Net;
use weft_testkit::etcd_server::{EtcdServer, EtcdServerOpts};

use crate::bench::{Agent, Config, Etcd, Kind, NETWORK, Netns, PREFIX, ms, peer_ip, peer_subnet};

/// The IPv6 network of the dual-stack config; peer i holds the /64 number i + 1.
const NETWORK6: &str = "fd00:10::/48";
/// This node's IPv6 underlay address; peer i is `fd00:198:18::<i + 2>` on the same /64.
const OWN_IP6: &str = "fd00:198:18::1/64";
const PROTO: &str = "87";
/// How long the agent may take to program every entry.
const DEADLINE: Duration = Duration::from_secs(300);

/// One dual-stack run.
#[derive(Debug, Clone, Default)]
pub struct DualRun {
    pub kind: Option<Kind>,
    pub peers: usize,
    /// Start → subnet.env written.
    pub ready: Duration,
    /// Start → every entry of both families in the kernel.
    pub programmed: Duration,
    /// `ip -batch` of the same entries (on nexthop objects where the kernel has them).
    pub ip_batch: Duration,
    pub vm_hwm_kib: u64,
}

impl DualRun {
    pub fn ratio(&self) -> f64 {
        self.programmed.as_secs_f64() / self.ip_batch.as_secs_f64().max(1e-9)
    }
}

fn peer_subnet6(i: usize) -> Ipv6Net {
    let base = u128::from(Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0));
    let s = u128::try_from(i + 1).unwrap_or(0) & 0xffff;
    Ipv6Net::new(Ipv6Addr::from(base | (s << 64)), 64).unwrap_or_default()
}

fn peer_ip6(i: usize) -> Ipv6Addr {
    let base = u128::from(Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 0));
    Ipv6Addr::from(base + u128::try_from(i + 2).unwrap_or(0))
}

fn config(kind: Kind) -> String {
    format!(
        r#"{{"Network":"{NETWORK}","EnableIPv6":true,"IPv6Network":"{NETWORK6}","Backend":{{"Type":"{}"}}}}"#,
        kind.name()
    )
}

/// Peer i's lease as flanneld writes a dual-stack host-gw lease.
fn lease(i: usize) -> (String, String) {
    let (s, s6) = (peer_subnet(i), peer_subnet6(i));
    (
        format!(
            "{PREFIX}/subnets/{}-{}&{}-{}",
            s.network(),
            s.prefix_len(),
            s6.network(),
            s6.prefix_len()
        ),
        format!(
            r#"{{"PublicIP":"{}","PublicIPv6":"{}","BackendType":"host-gw"}}"#,
            peer_ip(i),
            peer_ip6(i)
        ),
    )
}

/// A benchmark namespace with the IPv6 underlay address too.
fn dual_node(tag: &str) -> Result<Netns> {
    let ns = Netns::node(tag)?;
    crate::bench::run_cmd(
        "ip",
        &[
            "-n", &ns.name, "addr", "add", OWN_IP6, "dev", "eth0", "nodad",
        ],
    )?;
    Ok(ns)
}

/// weft's routes of one family (`ip -4|-6 route show proto 87`).
fn routes(ns: &Netns, family: &str) -> Result<usize> {
    Ok(crate::bench::run_cmd(
        "ip",
        &["-n", &ns.name, family, "route", "show", "proto", PROTO],
    )?
    .lines()
    .count())
}

/// `ip -batch` of the host-gw routes of both families for `n` peers, each on its own nexthop
/// object when `nexthops` (as weft writes them), in a fresh namespace.
fn ip_batch(n: usize, nexthops: bool) -> Result<Duration> {
    let ns = dual_node("e")?;
    let dir = tempfile::tempdir().context("temp dir")?;
    let file = dir.path().join("ip.batch");
    let mut cmds = String::new();
    for i in 0..n {
        for (id, dst, via, metric) in [
            (
                i + 1,
                peer_subnet(i).to_string(),
                IpAddr::V4(peer_ip(i)),
                "",
            ),
            (
                n + i + 1,
                peer_subnet6(i).to_string(),
                IpAddr::V6(peer_ip6(i)),
                " metric 1024",
            ),
        ] {
            if nexthops {
                let _ = writeln!(cmds, "nexthop add id {id} via {via} dev eth0 proto {PROTO}");
                let _ = writeln!(cmds, "route replace {dst} nhid {id} proto {PROTO}{metric}");
            } else {
                let _ = writeln!(
                    cmds,
                    "route replace {dst} via {via} dev eth0 proto {PROTO}{metric}"
                );
            }
        }
    }
    fs::write(&file, cmds).context("write ip batch")?;
    let path = file.to_string_lossy().into_owned();
    let started = Instant::now();
    crate::bench::run_cmd("ip", &["-n", &ns.name, "-batch", &path])?;
    let took = started.elapsed();
    let (v4, v6) = (routes(&ns, "-4")?, routes(&ns, "-6")?);
    if (v4, v6) != (n, n) {
        bail!("ip -batch made {v4} IPv4 and {v6} IPv6 routes, expected {n} each");
    }
    Ok(took)
}

/// Starts weft facing `n` dual-stack host-gw peers and times it against `ip -batch`.
pub fn scenario(cfg: &Config, n: usize, nexthops: bool) -> Result<DualRun> {
    let kind = Kind::HostGw;
    let ip_batch = ip_batch(n, nexthops).context("ip -batch of both families")?;
    let ns = dual_node("d")?;
    let dir = tempfile::tempdir().context("temp dir")?;
    let server = EtcdServer::start(EtcdServerOpts {
        netns: Some(ns.name.clone()),
        listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ..EtcdServerOpts::default()
    })
    .context("start etcd")?;
    let etcd = Etcd::connect(&ns.name, server.endpoint(), server.client_port())?;
    etcd.load_entries(config(kind), (0..n).map(lease).collect())?;

    let started = Instant::now();
    let mut agent = Agent::spawn_with(
        &cfg.weft_bin,
        &ns.name,
        dir.path(),
        &[format!("--etcd-endpoints={}", server.endpoint())],
        &[],
    )?;
    let subnet_env = dir.path().join("subnet.env");
    let until = started + DEADLINE;
    let mut ready = None;
    let programmed = loop {
        if ready.is_none() && subnet_env.exists() {
            ready = Some(started.elapsed());
        }
        if routes(&ns, "-4")? >= n && routes(&ns, "-6")? >= n {
            break started.elapsed();
        }
        agent.alive()?;
        if Instant::now() > until {
            bail!(
                "not every entry programmed after {DEADLINE:?}; log tail:\n{}",
                agent.log_tail(20)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let env = fs::read_to_string(&subnet_env).context("read subnet.env")?;
    if !env.contains("FLANNEL_IPV6_SUBNET=") {
        bail!("subnet.env has no IPv6 subnet:\n{env}");
    }
    Ok(DualRun {
        kind: Some(kind),
        peers: n,
        ready: ready.unwrap_or(programmed),
        programmed,
        ip_batch,
        vm_hwm_kib: agent.status("VmHWM")?,
    })
}

pub fn print(r: &DualRun) {
    println!(
        "  dual-stack: ready {} ms, every IPv4 and IPv6 entry {} ms, ip -batch {} ms \
         ({:.2}×), VmHWM {:.1} MiB",
        ms(r.ready),
        ms(r.programmed),
        ms(r.ip_batch),
        r.ratio(),
        r.vm_hwm_kib as f64 / 1024.0
    );
}

pub fn markdown(s: &mut String, runs: &[DualRun]) {
    if runs.is_empty() {
        return;
    }
    s.push_str("\n### Dual-stack (V1)\n\n");
    s.push_str(
        "| backend | peers | start → subnet.env | start → every v4 + v6 entry | ip -batch (same entries) | ratio (goal ≤ 1.5×) | VmHWM (goal ≤ 24 MiB) |\n|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} ms | {} ms | {} ms | {:.2}× | {:.1} MiB |",
            r.kind.map_or("-", Kind::name),
            r.peers,
            ms(r.ready),
            ms(r.programmed),
            ms(r.ip_batch),
            r.ratio(),
            r.vm_hwm_kib as f64 / 1024.0
        );
    }
}
