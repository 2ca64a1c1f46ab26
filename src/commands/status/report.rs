//! The report of `weft status`: its types (the `--json` schema of the module documentation)
//! and the text it prints.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backends::plan::{KernelState, fmt_mac};
use backends::vxlan::parse_backend_data;
use serde::Serialize;
use serde_json::Value;

use super::{Drift, EXIT_DRIFT, EXIT_IN_SYNC};
use crate::lease::etcd::registry::LeaseEntry;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: u32,
    pub in_sync: bool,
    pub node: NodeInfo,
    pub config: ConfigInfo,
    pub own_lease: Option<LeaseInfo>,
    pub peers: Vec<LeaseInfo>,
    pub malformed: Vec<MalformedInfo>,
    pub skipped: Vec<SkippedInfo>,
    pub device: Option<DeviceInfo>,
    pub required: Counts,
    pub kernel: Counts,
    pub drift: Drift,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    pub interface: String,
    pub ifindex: u32,
    pub iface_addr: Ipv4Addr,
    pub public_ip: Ipv4Addr,
    pub mtu: u32,
    /// The interface's IPv6 address and PublicIPv6 (a network with IPv6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iface_addr6: Option<std::net::Ipv6Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_ipv6: Option<std::net::Ipv6Addr>,
    /// How the interface and the own lease were found.
    pub found_by: FoundBy,
}

/// How `weft status` found this node's external interface and own lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FoundBy {
    /// An interface flag chose the interface, as in the agent; the own lease carries its address.
    Flags,
    /// The subnet file's `FLANNEL_SUBNET` is a lease whose PublicIP is an address of this node.
    SubnetFile,
    /// A lease's PublicIP is an address of this node (no usable subnet file).
    Address,
    /// No lease is this node's: the default route's interface, as the agent picks it.
    DefaultRoute,
}

impl FoundBy {
    /// The report's `found:` line.
    fn describe(self) -> &'static str {
        match self {
            FoundBy::Flags => "interface from the interface flags, as the agent chooses it",
            FoundBy::SubnetFile => {
                "own lease from the subnet file (FLANNEL_SUBNET); the interface holds its PublicIP"
            }
            FoundBy::Address => {
                "own lease by its PublicIP, an address of this node; the interface holds it"
            }
            FoundBy::DefaultRoute => {
                "interface of the default route (no lease has an address of this node)"
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigInfo {
    pub source: String,
    pub network: Option<String>,
    /// The IPv6Network of a network with IPv6.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_network: Option<String>,
    pub backend: String,
    pub options: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseInfo {
    /// The IPv4 subnet (an IPv6-only lease's: its IPv6 subnet).
    pub subnet: String,
    /// The IPv6 subnet of a dual-stack lease.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    pub key: String,
    pub public_ip: Ipv4Addr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_ipv6: Option<std::net::Ipv6Addr>,
    pub backend: String,
    pub vni: Option<u32>,
    pub vtep_mac: Option<String>,
    pub lease_id: Option<String>,
    pub reservation: bool,
    pub ttl_seconds: Option<i64>,
    pub expires_at: Option<String>,
    pub expires_at_unix: Option<i64>,
    /// A Node of kube mode (no etcd lease, never expires).
    pub node: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct MalformedInfo {
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SkippedInfo {
    pub subnet: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    pub name: String,
    pub present: bool,
    pub ifindex: Option<u32>,
    pub up: bool,
    pub mtu: Option<u32>,
    pub mac: Option<String>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub routes: usize,
    pub neighs: usize,
    pub fdb: usize,
    /// Kernel side only: how many of weft's routes are on nexthop objects (`nhid N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes_on_nexthops: Option<usize>,
}

impl Counts {
    pub(super) fn of(s: &KernelState) -> Counts {
        Counts {
            routes: s.routes.len(),
            neighs: s.neighs.len(),
            fdb: s.fdb.len(),
            routes_on_nexthops: None,
        }
    }
}

/// The lease as the report shows it. `ttl` is the remaining TTL of its etcd lease (None when
/// unknown or a reservation); `now` anchors the expiry.
pub fn lease_info(e: &LeaseEntry, prefix: &str, ttl: Option<i64>, now: SystemTime) -> LeaseInfo {
    let (vni, vtep_mac) = match e.attrs.backend_data.as_deref().map(parse_backend_data) {
        Some(Ok((vni, mac))) => (Some(vni), Some(fmt_mac(&mac))),
        _ => (None, None),
    };
    let reservation = e.is_reservation();
    let ttl = if reservation { None } else { ttl };
    let now_unix = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let expires_unix = ttl.map(|t| now_unix.saturating_add(t));
    LeaseInfo {
        subnet: e.key.first().to_string(),
        subnet6: e
            .key
            .v6
            .filter(|_| e.key.v4.is_some())
            .map(|s| s.to_string()),
        key: e.key.etcd_key(prefix),
        public_ip: e.attrs.public_ip,
        public_ipv6: e.attrs.public_ipv6,
        backend: e.attrs.backend_type.clone(),
        vni,
        vtep_mac,
        lease_id: (!reservation).then(|| format!("{:x}", e.lease_id)),
        reservation,
        ttl_seconds: ttl,
        expires_at: expires_unix.map(rfc3339),
        expires_at_unix: expires_unix,
        node: false,
    }
}

impl LeaseInfo {
    /// The subnet, and the IPv6 one of a dual-stack lease after it.
    fn subnets(&self) -> String {
        match &self.subnet6 {
            Some(v6) => format!("{} {v6}", self.subnet),
            None => self.subnet.clone(),
        }
    }

    /// The public IP, and the PublicIPv6 after it.
    fn public_ips(&self) -> String {
        match self.public_ipv6 {
            Some(v6) => format!("{} {v6}", self.public_ip),
            None => self.public_ip.to_string(),
        }
    }
}

/// A kube-mode lease (a Node: no etcd key, no TTL).
pub fn node_lease_info(e: &LeaseEntry) -> LeaseInfo {
    let mut info = lease_info(e, "", None, UNIX_EPOCH);
    info.key = format!("Node with podCIDR {}", e.key.first());
    info.reservation = false;
    info.lease_id = None;
    info.node = true;
    info
}

/// `2026-11-25T10:41:34Z` for Unix seconds (proleptic Gregorian, UTC).
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// `23h59m`, `5m3s`, `12s`.
pub(super) fn human_duration(secs: i64) -> String {
    let d = Duration::from_secs(u64::try_from(secs.max(0)).unwrap_or(0));
    let (h, m, s) = (
        d.as_secs() / 3600,
        d.as_secs() % 3600 / 60,
        d.as_secs() % 60,
    );
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m"),
    }
}

impl Report {
    pub fn exit_code(&self) -> u8 {
        if self.in_sync {
            EXIT_IN_SYNC
        } else {
            EXIT_DRIFT
        }
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let c = &self.config;
        let v6_net = c
            .ipv6_network
            .as_deref()
            .map(|n| format!(" and {n}"))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "config:  network {}{v6_net}, backend {} {} ({})",
            c.network.as_deref().unwrap_or("-"),
            c.backend,
            c.options,
            c.source
        );
        let n = &self.node;
        let v6_addrs = match (n.iface_addr6, n.public_ipv6) {
            (Some(a), Some(p)) => format!(", IPv6 address {a}, public IPv6 {p}"),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "node:    {} (index {}, mtu {}) address {}, public IP {}{v6_addrs}",
            n.interface, n.ifindex, n.mtu, n.iface_addr, n.public_ip
        );
        let _ = writeln!(o, "found:   {}", n.found_by.describe());
        let expiry = |l: &LeaseInfo| match (&l.expires_at, l.ttl_seconds) {
            _ if l.reservation => "reservation".to_string(),
            _ if l.node => "never (a Node)".to_string(),
            (Some(at), Some(ttl)) => format!("{at} (in {})", human_duration(ttl)),
            _ => "unknown (etcd lease gone)".to_string(),
        };
        match &self.own_lease {
            Some(l) => {
                let _ = writeln!(
                    o,
                    "lease:   {} public IP {} backend {} VTEP MAC {} expires {}",
                    l.subnets(),
                    l.public_ips(),
                    l.backend,
                    l.vtep_mac.as_deref().unwrap_or("-"),
                    expiry(l)
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "lease:   none (no lease in etcd has PublicIP {})",
                    n.public_ip
                );
            }
        }
        let _ = writeln!(o, "peers:   {}", self.peers.len());
        if !self.peers.is_empty() {
            let rows: Vec<[String; 5]> = self
                .peers
                .iter()
                .map(|l| {
                    [
                        l.subnets(),
                        l.public_ips(),
                        l.backend.clone(),
                        l.vtep_mac.clone().unwrap_or_else(|| "-".into()),
                        expiry(l),
                    ]
                })
                .collect();
            let header =
                ["SUBNET", "PUBLIC IP", "BACKEND", "VTEP MAC", "EXPIRES"].map(String::from);
            let mut widths = header.clone().map(|h| h.len());
            for r in &rows {
                for (w, cell) in widths.iter_mut().zip(r) {
                    *w = (*w).max(cell.len());
                }
            }
            for r in std::iter::once(&header).chain(&rows) {
                let mut line = String::from("  ");
                for (i, (cell, w)) in r.iter().zip(widths).enumerate() {
                    if i + 1 == r.len() {
                        line.push_str(cell);
                    } else {
                        let _ = write!(line, "{cell:<w$}  ");
                    }
                }
                let _ = writeln!(o, "{line}");
            }
        }
        for m in &self.malformed {
            let _ = writeln!(o, "malformed lease {}: {}", m.key, m.reason);
        }
        for s in &self.skipped {
            let _ = writeln!(o, "not programmed {}: {}", s.subnet, s.reason);
        }
        if let Some(d) = &self.device {
            if d.present {
                let _ = writeln!(
                    o,
                    "device:  {} (index {}) {} mtu {} mac {}",
                    d.name,
                    d.ifindex.unwrap_or(0),
                    if d.up { "up" } else { "DOWN" },
                    d.mtu.unwrap_or(0),
                    d.mac.as_deref().unwrap_or("-")
                );
            } else {
                let _ = writeln!(o, "device:  {} MISSING", d.name);
            }
            for p in &d.problems {
                let _ = writeln!(o, "  problem: {p}");
            }
        }
        let r = &self.required;
        let k = &self.kernel;
        let on_nexthops = match k.routes_on_nexthops {
            Some(n) if n > 0 => format!(" ({n} on nexthop objects)"),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "kernel:  required {} routes, {} neigh, {} fdb; weft holds {} routes{on_nexthops}, {} neigh, {} fdb",
            r.routes, r.neighs, r.fdb, k.routes, k.neighs, k.fdb
        );
        if self.drift.is_empty() {
            let _ = writeln!(o, "drift:   none");
        } else {
            let d = &self.drift;
            let _ = writeln!(
                o,
                "drift:   {} missing, {} extra, {} different",
                d.missing.len(),
                d.extra.len(),
                d.different.len()
            );
            for e in &d.missing {
                let _ = writeln!(o, "  missing   {:<5} {}", e.kind, e.text);
            }
            for e in &d.extra {
                let _ = writeln!(o, "  extra     {:<5} {}", e.kind, e.text);
            }
            for c in &d.different {
                let _ = writeln!(
                    o,
                    "  different {:<5} {} (kernel: {})",
                    c.want.kind, c.want.text, c.have.text
                );
            }
        }
        let _ = writeln!(
            o,
            "status:  {}",
            if self.in_sync {
                "in sync"
            } else {
                "OUT OF SYNC"
            }
        );
        o
    }
}
