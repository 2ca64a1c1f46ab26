//! Dual-stack (issue 13, target V1): the same node facing N dual-stack peers (flannel's keys
//! `10.0.<i>.0-24&fd00:10:0:<i>::-64`, `PublicIPv6` set) instead of IPv4 ones. Measured: start →
//! every IPv4 and IPv6 entry in the kernel against `ip -batch` of the same entries of both
//! families in a fresh namespace of the same run, and VmHWM.
//!
//! The entries are timed by a netlink listener on both route groups and the neighbour group
//! (the first new entry of any kind, the last protocol-87 route of either family), as the IPv4
//! scenarios time theirs; a peer's route is written after its neighbour and FDB entries, so
//! the last route is the last entry. The
//! ratio is the programming phase (first → last entry) against `ip -batch`, as for IPv4; start →
//! last entry is reported too.
use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use ipnet::Ipv6Net;
use weft_testkit::etcd_server::{EtcdServer, EtcdServerOpts};

use crate::bench::{
    Agent, Config, Etcd, Kind, NETWORK, Netns, PREFIX, fmt_mac, ms, peer_ip, peer_mac, peer_subnet,
};

/// The IPv6 network of the dual-stack config; peer i holds the /64 number i + 1.
const NETWORK6: &str = "fd00:10::/48";
/// This node's IPv6 underlay address; peer i is `fd00:198:18::<i + 2>` on the same /64.
const OWN_IP6: &str = "fd00:198:18::1/64";
const PROTO: &str = "87";
/// `NUD_PERMANENT`: weft's neighbour and FDB entries.
const NUD_PERMANENT: u16 = 0x80;
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
    /// First → last entry.
    pub program_phase: Duration,
    /// `ip -batch` of the same entries (on nexthop objects where the kernel has them).
    pub ip_batch: Duration,
    pub vm_hwm_kib: u64,
}

impl DualRun {
    /// The programming phase against `ip -batch` of the same entries.
    pub fn ratio(&self) -> f64 {
        self.program_phase.as_secs_f64() / self.ip_batch.as_secs_f64().max(1e-9)
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

/// Peer i's IPv6 VTEP MAC (another one than its IPv4 VTEP's).
fn peer_mac6(i: usize) -> [u8; 6] {
    let mut m = peer_mac(i);
    m[1] = 0x43;
    m
}

/// Peer i's lease as flanneld writes a dual-stack lease of `kind`.
fn lease(kind: Kind, i: usize) -> (String, String) {
    let (s, s6) = (peer_subnet(i), peer_subnet6(i));
    let key = format!(
        "{PREFIX}/subnets/{}-{}&{}-{}",
        s.network(),
        s.prefix_len(),
        s6.network(),
        s6.prefix_len()
    );
    let value = match kind {
        Kind::HostGw => format!(
            r#"{{"PublicIP":"{}","PublicIPv6":"{}","BackendType":"host-gw"}}"#,
            peer_ip(i),
            peer_ip6(i)
        ),
        Kind::Vxlan => format!(
            r#"{{"PublicIP":"{}","PublicIPv6":"{}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{}"}},"BackendV6Data":{{"VNI":1,"VtepMAC":"{}"}}}}"#,
            peer_ip(i),
            peer_ip6(i),
            fmt_mac(&peer_mac(i)),
            fmt_mac(&peer_mac6(i))
        ),
    };
    (key, value)
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

/// Protocol-87 routes of both families as the kernel announces them: (when, IPv6, dst); a new
/// neighbour or FDB entry comes as an empty dst.
struct RouteListener {
    rx: mpsc::Receiver<(Instant, bool, String)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RouteListener {
    fn start(ns: &str) -> Result<RouteListener> {
        use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
        use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
        use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
        let sock = {
            let ns = ns.to_owned();
            // The socket is made on a thread that entered the namespace.
            std::thread::spawn(move || crate::bench::open_listener(&ns, &[3, 7, 11]))
                .join()
                .map_err(|_| anyhow::anyhow!("listener setup thread died"))??
        };
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
            while !stop2.load(Ordering::SeqCst) {
                buf.clear();
                if sock.recv(&mut buf, 0).is_err() {
                    continue;
                }
                let now = Instant::now();
                let mut off = 0;
                while off + 16 <= buf.len() {
                    let len =
                        u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
                            as usize;
                    if len < 16 || off + len > buf.len() {
                        break;
                    }
                    let msg =
                        NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..off + len]);
                    // A new permanent neighbour or FDB entry (vxlan writes them before a peer's
                    // route) marks the start of programming: reported with an empty dst.
                    if let Ok(NetlinkMessage {
                        payload: NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)),
                        ..
                    }) = &msg
                        && u16::from(n.header.state) & NUD_PERMANENT != 0
                        && tx.send((now, false, String::new())).is_err()
                    {
                        return;
                    }
                    if let Ok(msg) = msg
                        && let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m)) =
                            msg.payload
                        && u8::from(m.header.protocol) == 87
                    {
                        let v6 = m.header.address_family == AddressFamily::Inet6;
                        let dst = m.attributes.iter().find_map(|a| match a {
                            RouteAttribute::Destination(RouteAddress::Inet(d)) => {
                                Some(d.to_string())
                            }
                            RouteAttribute::Destination(RouteAddress::Inet6(d)) => {
                                Some(d.to_string())
                            }
                            _ => None,
                        });
                        if let Some(dst) = dst
                            && tx.send((now, v6, dst)).is_err()
                        {
                            return;
                        }
                    }
                    off += (len + 3) & !3;
                }
            }
        });
        Ok(RouteListener {
            rx,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for RouteListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `ip -batch` (vxlan: and `bridge -batch`) of the entries weft writes for `n` dual-stack
/// peers of `kind`, routes each on its own nexthop object when `nexthops` (as weft writes them),
/// in a fresh namespace (vxlan devices made beforehand, not timed).
fn ip_batch(kind: Kind, n: usize, nexthops: bool) -> Result<Duration> {
    let ns = dual_node("e")?;
    let ip = |args: &[&str]| -> Result<String> {
        let mut all = vec!["-n", ns.name.as_str()];
        all.extend_from_slice(args);
        crate::bench::run_cmd("ip", &all)
    };
    if kind == Kind::Vxlan {
        for (dev, local, addr) in [
            ("flannel.1", "198.18.0.1", "10.255.255.0/32"),
            ("flannel-v6.1", "fd00:198:18::1", "fd00:10:0:ffff::/128"),
        ] {
            ip(&[
                "link",
                "add",
                dev,
                "type",
                "vxlan",
                "id",
                "1",
                "local",
                local,
                "dev",
                "eth0",
                "dstport",
                "8472",
                "nolearning",
            ])?;
            ip(&["link", "set", dev, "up"])?;
            ip(&["addr", "add", addr, "dev", dev, "nodad"])?;
        }
    }
    let dir = tempfile::tempdir().context("temp dir")?;
    let (file, fdb_file) = (dir.path().join("ip.batch"), dir.path().join("fdb.batch"));
    let (mut cmds, mut fdb) = (String::new(), String::new());
    for i in 0..n {
        let (s, s6) = (peer_subnet(i), peer_subnet6(i));
        for (id, dst, gw, metric, dev, mac, public) in [
            (
                i + 1,
                s.to_string(),
                IpAddr::V4(s.network()),
                "",
                "flannel.1",
                peer_mac(i),
                IpAddr::V4(peer_ip(i)),
            ),
            (
                n + i + 1,
                s6.to_string(),
                IpAddr::V6(s6.network()),
                " metric 1024",
                "flannel-v6.1",
                peer_mac6(i),
                IpAddr::V6(peer_ip6(i)),
            ),
        ] {
            let hop = match kind {
                Kind::HostGw => format!("via {public} dev eth0"),
                Kind::Vxlan => {
                    let mac = fmt_mac(&mac);
                    let _ = writeln!(
                        fdb,
                        "fdb replace {mac} dev {dev} dst {public} self permanent"
                    );
                    let _ = writeln!(
                        cmds,
                        "neigh replace {gw} lladdr {mac} dev {dev} nud permanent"
                    );
                    format!("via {gw} dev {dev} onlink")
                }
            };
            if nexthops {
                let _ = writeln!(cmds, "nexthop add id {id} {hop} proto {PROTO}");
                let _ = writeln!(cmds, "route replace {dst} nhid {id} proto {PROTO}{metric}");
            } else {
                let _ = writeln!(cmds, "route replace {dst} {hop} proto {PROTO}{metric}");
            }
        }
    }
    fs::write(&file, cmds).context("write ip batch")?;
    fs::write(&fdb_file, fdb).context("write bridge batch")?;
    let (path, fdb_path) = (
        file.to_string_lossy().into_owned(),
        fdb_file.to_string_lossy().into_owned(),
    );
    let started = Instant::now();
    if kind == Kind::Vxlan {
        crate::bench::run_cmd("bridge", &["-n", &ns.name, "-batch", &fdb_path])?;
    }
    crate::bench::run_cmd("ip", &["-n", &ns.name, "-batch", &path])?;
    let took = started.elapsed();
    let (v4, v6) = (routes(&ns, "-4")?, routes(&ns, "-6")?);
    if (v4, v6) != (n, n) {
        bail!("ip -batch made {v4} IPv4 and {v6} IPv6 routes, expected {n} each");
    }
    Ok(took)
}

/// Starts weft facing `n` dual-stack peers of `kind` and times it against `ip -batch`.
pub fn scenario(cfg: &Config, kind: Kind, n: usize, nexthops: bool) -> Result<DualRun> {
    let ip_batch = ip_batch(kind, n, nexthops).context("ip -batch of both families")?;
    let ns = dual_node("d")?;
    let dir = tempfile::tempdir().context("temp dir")?;
    let server = EtcdServer::start(EtcdServerOpts {
        netns: Some(ns.name.clone()),
        listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ..EtcdServerOpts::default()
    })
    .context("start etcd")?;
    let etcd = Etcd::connect(&ns.name, server.endpoint(), server.client_port())?;
    etcd.load_entries(config(kind), (0..n).map(|i| lease(kind, i)).collect())?;

    let listener = RouteListener::start(&ns.name)?;
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
    let (mut seen4, mut seen6) = (HashSet::new(), HashSet::new());
    let mut first = None;
    let last = loop {
        if ready.is_none() && subnet_env.exists() {
            ready = Some(started.elapsed());
        }
        let mut at = None;
        while let Ok((when, v6, dst)) = listener.rx.recv_timeout(Duration::from_millis(5)) {
            if ready.is_none() && subnet_env.exists() {
                ready = Some(started.elapsed());
            }
            first.get_or_insert(when);
            if dst.is_empty() {
                continue;
            }
            if v6 {
                seen6.insert(dst)
            } else {
                seen4.insert(dst)
            };
            at = Some(when);
            if seen4.len() >= n && seen6.len() >= n {
                break;
            }
        }
        if seen4.len() >= n && seen6.len() >= n {
            break at.unwrap_or_else(Instant::now);
        }
        agent.alive()?;
        if Instant::now() > until {
            bail!(
                "{} IPv4 and {} IPv6 routes after {DEADLINE:?}; log tail:\n{}",
                seen4.len(),
                seen6.len(),
                agent.log_tail(20)
            );
        }
    };
    let programmed = last.saturating_duration_since(started);
    let program_phase = last.saturating_duration_since(first.unwrap_or(started));
    // The kernel holds them all (not just announced).
    let (v4, v6) = (routes(&ns, "-4")?, routes(&ns, "-6")?);
    if (v4, v6) != (n, n) {
        bail!("the kernel holds {v4} IPv4 and {v6} IPv6 weft routes, expected {n} each");
    }
    let env = fs::read_to_string(&subnet_env).context("read subnet.env")?;
    if !env.contains("FLANNEL_IPV6_SUBNET=") {
        bail!("subnet.env has no IPv6 subnet:\n{env}");
    }
    Ok(DualRun {
        kind: Some(kind),
        peers: n,
        ready: ready.unwrap_or(programmed),
        programmed,
        program_phase,
        ip_batch,
        vm_hwm_kib: agent.status("VmHWM")?,
    })
}

pub fn print(r: &DualRun) {
    println!(
        "  dual-stack: ready {} ms, every IPv4 and IPv6 entry {} ms after start (programming \
         phase {} ms), ip -batch {} ms ({:.2}×), VmHWM {:.1} MiB",
        ms(r.ready),
        ms(r.programmed),
        ms(r.program_phase),
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
        "| backend | peers | start → subnet.env | start → every v4 + v6 entry | programming phase | ip -batch (same entries) | ratio (goal ≤ 1.5×) | VmHWM (goal ≤ 24 MiB) |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} ms | {} ms | {} ms | {} ms | {:.2}× | {:.1} MiB |",
            r.kind.map_or("-", Kind::name),
            r.peers,
            ms(r.ready),
            ms(r.programmed),
            ms(r.program_phase),
            ms(r.ip_batch),
            r.ratio(),
            r.vm_hwm_kib as f64 / 1024.0
        );
    }
}
