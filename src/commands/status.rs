//! `weft status [--json] [flanneld flags…]`: what this node's lease and the kernel say, and how
//! the kernel differs from what the leases require. Needs no running agent; reads etcd and the
//! kernel and never writes to either.
//!
//! It takes the agent's flags (and `FLANNELD_*` variables) to find etcd, the config and the
//! external interface, then computes the required kernel state with the agent's own code:
//! interface selection ([`crate::agent::iface::select_interface`]), the peer set
//! ([`crate::lease::table::LeaseTable`]), the backend's [`Backend::desired`], the reconciler's
//! read-only dump ([`Reconciler::refresh`]) and [`plan::diff`]. The backend's device
//! (`flannel.<VNI>`, `flannel.ipip`) is planned as the agent plans it, with the VTEP MAC of the
//! node's lease and on the ifindex of the kernel's device of that name, but without
//! [`Backend::prepare`] (which may write); the device's problems are the device operations of
//! the same diff, described by [`Device::differences`]. When the device is missing, every
//! ARP/FDB/route entry on it is reported missing (shown on the device's name, ifindex 0).
//!
//! Expiry of each lease comes from one `LeaseTimeToLive` per distinct etcd lease.
//!
//! Finding this node ([`FoundBy`]): with an interface flag (`--iface`, `--iface-regex`,
//! `--iface-can-reach`, `--public-ip`) the interface is chosen as the agent chooses it and the own
//! lease is the one carrying its address. Without one, status looks for the node's lease first
//! ([`own_lease_without_flags`]): the subnet file's `FLANNEL_SUBNET`, else a lease whose PublicIP
//! is an address of this node; the interface is the one holding that PublicIP. So a node without
//! a default route (which the agent only needs at start) still gets its report. Only when no
//! lease is this node's does status fall back to the default route, as the agent would.
//!
//! Exit codes: 0 the kernel holds exactly what the leases require (and the vxlan device is as
//! the agent would leave it); 1 it differs; 2 usage error; 3 etcd, the config or the kernel
//! could not be read.
//!
//! # JSON (`--json`), schema 1
//! One object; fields are only ever added, never renamed, within a schema number.
//! ```text
//! {
//!   "schema": 1,
//!   "in_sync": bool,                       // exit code 0 iff true
//!   "node": {"interface": "eth0", "ifindex": 2, "iface_addr": "198.18.0.1",
//!            "public_ip": "198.18.0.1", "mtu": 1500,
//!            "iface_addr6": "fd00::1", "public_ipv6": "fd00::1",  // only with IPv6
//!            "found_by": "flags" | "subnet_file" | "address" | "default_route"},
//!   "config": {"source": "etcd /coreos.com/network/config" | "file <path>",
//!              "network": "10.244.0.0/16" | null, "backend": "vxlan",
//!              "ipv6_network": "fd00:10:244::/56",  // only with IPv6
//!              "options": {...the config's Backend object as written...}},
//!   "own_lease": null | Lease,             // the lease whose PublicIP is this node's
//!   "peers": [Lease],                      // every other well-formed lease, by subnet
//!   "malformed": [{"key": "...", "reason": "..."}],   // keys skipped as the agent skips them
//!   "skipped": [{"subnet": "10.244.3.0/24", "reason": "..."}],  // peers the backend won't program
//!   "device": null | {"name": "flannel.1" | "flannel.ipip", "present": bool, "ifindex": 7 | null,
//!                     "up": bool, "mtu": 1450 | null, "mac": "aa:..." | null,
//!                     "problems": ["..."]},    // vxlan, ipip; problems make in_sync false
//!   "required": {"routes": n, "neighs": n, "fdb": n},  // counts of what the leases require
//!   "kernel": {"routes": n, "neighs": n, "fdb": n,     // counts of what weft owns in the kernel
//!              "routes_on_nexthops": n},            // of its routes, those on nexthop objects
//!   "drift": {"missing": [Entry], "extra": [Entry],
//!             "different": [{"want": Entry, "have": Entry}]}
//! }
//! Lease = {"subnet": "10.244.2.0/24", "key": "<prefix>/subnets/10.244.2.0-24",
//!          "public_ip": "198.18.0.2", "backend": "vxlan", "vni": 1 | null,
//!          "vtep_mac": "aa:..." | null, "lease_id": "694d7d…" (hex) | null,
//!          "reservation": bool, "ttl_seconds": n | null,
//!          "expires_at": "2026-11-25T10:41:34Z" | null, "expires_at_unix": n | null,
//!          "node": bool}   // kube mode: the lease is a Node ("key": "Node with podCIDR …")
//! Entry = {"kind": "route" | "neigh" | "fdb" | "blackhole", "dev": "flannel.1", "text": "<ip-style line>",
//!          route: "dst", "gateway", "onlink", and "nhid" for a kernel route on a nexthop object
//!          (its gateway, device and onlink are the nexthop's); neigh: "ip", "lladdr";
//!          fdb: "mac", "dst"}
//! ```
//! "missing": required but absent; "extra": weft's (route protocol 87 in table main; permanent
//! ARP/FDB entries on weft's device; a device with a weft name, kind "device", that the backend
//! does not use, such as a previous backend's) but not required; "different": the same key
//! (route destination, neighbour IP, FDB MAC) with other attributes.
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow};
use backends::ipip::IpIp;
use backends::plan::{self, Device, Fdb, KernelOp, KernelState, Neigh, fmt_mac};
use backends::reconcile::Reconciler;
use backends::vxlan::{Vxlan, parse_backend_data};
use backends::{AnyBackend, Backend, Desired, ExternalInterface, HostGw, Netlink, Route};
use net_conf::{BackendConf, NetConf};
use serde::Serialize;
use serde_json::Value;

use crate::cli::{Options, StatusArgs};
use crate::lease::etcd::registry::{LeaseEntry, Snapshot};
use crate::lease::table::LeaseTable;

/// Version of the `--json` schema (see the module documentation).
pub const SCHEMA: u32 = 1;

/// Exit codes of `weft status`.
pub const EXIT_IN_SYNC: u8 = 0;
pub const EXIT_DRIFT: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREADABLE: u8 = 3;

/// `weft status` with its parsed flags: prints the report, returns the exit code.
pub fn run_command(args: StatusArgs) -> u8 {
    let StatusArgs { json, opts } = args;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft status: cannot start the async runtime: {e}");
            return EXIT_UNREADABLE;
        }
    };
    match rt.block_on(gather(&opts)) {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => write_stdout(&format!("{text}\n")),
                    Err(e) => {
                        eprintln!("weft status: cannot encode the report: {e}");
                        return EXIT_UNREADABLE;
                    }
                }
            } else {
                write_stdout(&report.render());
            }
            report.exit_code()
        }
        Err(e) => {
            eprintln!("weft status: {e:#}");
            EXIT_UNREADABLE
        }
    }
}

/// Prints to stdout; a closed pipe (`weft status | head`) is not an error worth a panic.
fn write_stdout(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

// ===== the report =====

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
    fn of(s: &KernelState) -> Counts {
        Counts {
            routes: s.routes.len(),
            neighs: s.neighs.len(),
            fdb: s.fdb.len(),
            routes_on_nexthops: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub missing: Vec<Entry>,
    pub extra: Vec<Entry>,
    pub different: Vec<Changed>,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.different.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub want: Entry,
    pub have: Entry,
}

/// One kernel object, with the fields of its kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub kind: &'static str,
    pub dev: String,
    /// The object as `ip route` / `ip neigh` / `bridge fdb` print it.
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<std::net::IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onlink: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lladdr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The nexthop object a kernel route is written on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nhid: Option<u32>,
}

impl Entry {
    fn bare(kind: &'static str, dev: String, text: String) -> Entry {
        Entry {
            kind,
            dev,
            text,
            dst: None,
            gateway: None,
            onlink: None,
            ip: None,
            lladdr: None,
            mac: None,
            nhid: None,
        }
    }

    /// weft's blackhole route (`--ip-blackhole-route`), as `ip route` shows it.
    fn blackhole(dst: ipnet::IpNet) -> Entry {
        let text = format!(
            "blackhole {dst} proto {} metric {}",
            backends::RTPROT_WEFT,
            backends::plan::BLACKHOLE_METRIC
        );
        Entry {
            dst: Some(dst.to_string()),
            ..Entry::bare("blackhole", String::new(), text)
        }
    }

    /// A route; `nhid` for a kernel route on a nexthop object, shown as `ip route` shows it
    /// (`10.244.2.0/24 nhid 5 via 198.18.0.2 dev eth0`).
    fn route(r: &Route, nhid: Option<u32>, names: &dyn Fn(u32) -> String) -> Entry {
        let dev = names(r.oif);
        let text = match nhid {
            Some(id) => {
                let line = r.display_with(Some(&dev)).to_string();
                let rest = line.strip_prefix(&r.dst.to_string()).unwrap_or(&line);
                format!("{} nhid {id}{rest}", r.dst)
            }
            None => r.display_with(Some(&dev)).to_string(),
        };
        Entry {
            dst: Some(r.dst.to_string()),
            gateway: Some(r.gateway),
            onlink: Some(r.onlink),
            nhid,
            ..Entry::bare("route", dev, text)
        }
    }

    /// A device with a weft name that no backend uses (`flannel.ipip type ipip local …`).
    fn device(dev: &Device, names: &dyn Fn(u32) -> String) -> Entry {
        Entry::bare(
            "device",
            dev.name.clone(),
            dev.spec_with(&|i| Some(names(i))),
        )
    }

    fn neigh(n: &Neigh, names: &dyn Fn(u32) -> String) -> Entry {
        let dev = names(n.ifindex);
        let text = format!("{} lladdr {} dev {dev} PERMANENT", n.ip, fmt_mac(&n.mac));
        Entry {
            ip: Some(n.ip),
            lladdr: Some(fmt_mac(&n.mac)),
            ..Entry::bare("neigh", dev, text)
        }
    }

    fn fdb(e: &Fdb, names: &dyn Fn(u32) -> String) -> Entry {
        let dev = names(e.ifindex);
        let text = format!("{} dev {dev} dst {} self permanent", fmt_mac(&e.mac), e.dst);
        Entry {
            mac: Some(fmt_mac(&e.mac)),
            dst: Some(e.dst.to_string()),
            ..Entry::bare("fdb", dev, text)
        }
    }
}

/// Sorts the difference between `required` and `current` into missing / extra / different,
/// using the reconciler's own [`plan::diff`] (a delete is extra; a replace is different when
/// the kernel has an object with that key, else missing). `nhid` tells which kernel routes are
/// on nexthop objects. Pure.
pub fn classify(
    required: &KernelState,
    current: &KernelState,
    nhid: &dyn Fn(&ipnet::IpNet) -> Option<u32>,
    names: &dyn Fn(u32) -> String,
) -> Drift {
    let mut d = Drift::default();
    for op in plan::diff(required, current) {
        match op {
            // The backend's device: its problems are reported with the device (`device_info`).
            KernelOp::LinkAdd(_)
            | KernelOp::LinkSet(_)
            | KernelOp::AddrAdd(_)
            | KernelOp::AddrDel(_) => {}
            KernelOp::LinkDel(dev) if required.devices.contains_key(&dev.name) => {}
            KernelOp::LinkDel(dev) => d.extra.push(Entry::device(&dev, names)),
            KernelOp::RouteDel(r) => d.extra.push(Entry::route(&r, nhid(&r.dst), names)),
            KernelOp::NeighDel(n) => d.extra.push(Entry::neigh(&n, names)),
            KernelOp::FdbDel(e) => d.extra.push(Entry::fdb(&e, names)),
            KernelOp::BlackholeDel(dst) => d.extra.push(Entry::blackhole(dst)),
            KernelOp::BlackholeReplace(dst) => d.missing.push(Entry::blackhole(dst)),
            KernelOp::RouteReplace(r) => match current.routes.get(&r.dst) {
                Some(have) => d.different.push(Changed {
                    want: Entry::route(&r, None, names),
                    have: Entry::route(have, nhid(&have.dst), names),
                }),
                None => d.missing.push(Entry::route(&r, None, names)),
            },
            KernelOp::NeighReplace(n) => match current.neighs.get(&(n.ifindex, n.ip)) {
                Some(have) => d.different.push(Changed {
                    want: Entry::neigh(&n, names),
                    have: Entry::neigh(have, names),
                }),
                None => d.missing.push(Entry::neigh(&n, names)),
            },
            KernelOp::FdbReplace(e) => match current.fdb.get(&(e.ifindex, e.mac)) {
                Some(have) => d.different.push(Changed {
                    want: Entry::fdb(&e, names),
                    have: Entry::fdb(have, names),
                }),
                None => d.missing.push(Entry::fdb(&e, names)),
            },
        }
    }
    d
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
fn human_duration(secs: i64) -> String {
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

// ===== gathering (read-only I/O) =====

/// Reads etcd and the kernel and builds the report. Never writes.
pub async fn gather(opts: &Options) -> Result<Report> {
    let now = SystemTime::now();
    let nl = Netlink::connect().context("open a netlink socket")?;
    let super::status_leases::Read {
        source,
        text,
        snapshot,
        ttls,
        prefix,
    } = super::status_leases::read(opts).await?;
    let conf = NetConf::parse(&text)
        .map_err(|e| anyhow!("network config: {e}"))?
        .conf;
    let options = backend_options(&text);
    let previous = crate::agent::subnet_file::read_previous(&opts.subnet_file)
        .as_deref()
        .and_then(net_conf::subnet_env::previous_subnet);
    let (ext, own, found_by) = find_node(
        &nl,
        opts,
        &snapshot,
        previous,
        crate::agent::iface::Stack::of(&conf),
    )
    .await?;
    let own = own.cloned();

    let mut names: HashMap<u32, String> = nl
        .links()
        .await
        .context("list interfaces")?
        .into_iter()
        .map(|l| (l.index, l.name))
        .collect();
    let mut table = LeaseTable::new(own.as_ref().map(|o| o.key));
    table.reset(&snapshot);
    let peers = table.peers();
    // Only this network's objects: other flannel networks on the host are not drift.
    let mut reconciler = Reconciler::new(nl.clone()).with_ownership(crate::agent::ownership(&conf));
    reconciler
        .refresh()
        .await
        .context("read weft's devices, routes, neighbours and FDB entries from the kernel")?;
    let current = reconciler.current().clone();
    let (mut backend, spec_problem) = planned_backend(&conf, &ext, &current, own.as_ref());
    // DirectRouting decided as the agent decides it: by the kernel's route to each peer.
    if let Some(paths) = backend.direct_paths_mut() {
        let ips: Vec<std::net::IpAddr> = peers
            .iter()
            .flat_map(|p| paths.peer_ips(&p.attrs))
            .collect();
        backends::direct::look_up(&nl, paths, ips).await;
    }
    let mut desired = backend.desired(&ext, &peers);
    if opts.ip_blackhole_route {
        desired
            .state
            .blackholes
            .extend(own.iter().flat_map(|o| o.key.nets()));
    }
    let device = match desired.state.devices.values().next() {
        Some(want) => {
            if !current.devices.contains_key(&want.name) {
                // Plan on a placeholder (ifindex 0) so every entry it needs shows as missing,
                // named after the device.
                names.insert(want.index, want.name.clone());
            }
            Some(device_info(want, &desired.state, &current))
        }
        None => spec_problem.map(|(name, problem)| DeviceInfo {
            problems: vec![problem],
            ..missing_device(&name)
        }),
    };
    let route_nexthops: BTreeMap<ipnet::IpNet, u32> = current
        .routes
        .keys()
        .filter_map(|dst| Some((*dst, reconciler.route_nexthop(dst)?)))
        .collect();
    let ttl_of = |e: &LeaseEntry| ttls.get(&e.lease_id).copied().flatten();
    let info = |e: &LeaseEntry| match &prefix {
        Some(prefix) => lease_info(e, prefix, ttl_of(e), now),
        None => node_lease_info(e),
    };
    let own_info = own.as_ref().map(info);
    let mut peer_entries: Vec<&LeaseEntry> = snapshot
        .leases
        .iter()
        .filter(|e| Some(e.key) != own.as_ref().map(|o| o.key))
        .collect();
    // By subnet (etcd lists keys in byte order: 10.244.100.0 before 10.244.20.0).
    peer_entries.sort_by_key(|e| e.key);
    let peer_infos = peer_entries.into_iter().map(info).collect();
    Ok(build(
        BuildInput {
            ext: &ext,
            found_by,
            source,
            conf: &conf,
            options,
            own: own_info,
            peers: peer_infos,
            snapshot: &snapshot,
            desired: &desired,
            current: &current,
            route_nexthops: &route_nexthops,
            device,
        },
        &|i| names.get(&i).cloned().unwrap_or_else(|| i.to_string()),
    ))
}

/// A device that should exist and does not.
fn missing_device(name: &str) -> DeviceInfo {
    DeviceInfo {
        name: name.to_string(),
        present: false,
        ifindex: None,
        up: false,
        mtu: None,
        mac: None,
        problems: vec![format!("{name} does not exist")],
    }
}

/// The backend as the agent would plan it, without writing: its device from the config and the
/// interface, on the ifindex of the kernel's device of that name, with the VTEP MAC of the
/// node's lease (vxlan), carrying the lease's subnet. A device that cannot be planned (an MTU too
/// small) comes back as (name, problem), with a backend that programs no peer.
fn planned_backend(
    conf: &NetConf,
    ext: &ExternalInterface,
    current: &KernelState,
    own: Option<&LeaseEntry>,
) -> (AnyBackend, Option<(String, String)>) {
    let bound = |mut dev: Device| {
        dev.index = current.devices.get(&dev.name).map_or(0, |d| d.index);
        dev
    };
    match &conf.backend {
        BackendConf::HostGw => (AnyBackend::HostGw(HostGw::new()), None),
        BackendConf::Vxlan(vx) => {
            let backend = Vxlan::new(vx.clone());
            let name = backend.device_name();
            let lease_mac = own
                .and_then(|o| o.attrs.backend_data.as_deref())
                .and_then(|data| parse_backend_data(data).ok())
                .filter(|(vni, _)| *vni == vx.vni)
                .map(|(_, mac)| mac);
            let mac = lease_mac.or_else(|| current.devices.get(&name).and_then(|d| d.mac));
            match backend.spec(ext, mac) {
                Ok(dev) => {
                    let mut b = backend.with_device(bound(dev));
                    if let Some(v4) = own.and_then(|o| o.key.v4) {
                        b = b.with_own(v4);
                    }
                    (AnyBackend::Vxlan(b), None)
                }
                Err(e) => (AnyBackend::Vxlan(backend), Some((name, e.to_string()))),
            }
        }
        BackendConf::IpIp(c) => match IpIp::spec(ext) {
            Ok(dev) => {
                let mut b = IpIp::new(c.clone()).with_device(bound(dev));
                if let Some(v4) = own.and_then(|o| o.key.v4) {
                    b = b.with_own(v4);
                }
                (AnyBackend::IpIp(b), None)
            }
            Err(e) => (
                AnyBackend::IpIp(IpIp::new(c.clone())),
                Some((backends::ipip::DEVICE_NAME.to_string(), e.to_string())),
            ),
        },
    }
}

/// The wanted device as the kernel has it, with its problems: the device operations of
/// [`plan::diff`] (made anew, replaced, changed in place, addresses added or removed), each
/// described by [`Device::differences`]. Pure.
pub fn device_info(want: &Device, desired: &KernelState, current: &KernelState) -> DeviceInfo {
    let Some(have) = current.devices.get(&want.name) else {
        return missing_device(&want.name);
    };
    let ops = plan::diff_devices(desired, current);
    let mut problems = Vec::new();
    let touches = |op: &KernelOp| match op {
        KernelOp::LinkAdd(d) | KernelOp::LinkSet(d) | KernelOp::LinkDel(d) => d.name == want.name,
        _ => false,
    };
    if ops.iter().any(touches) {
        let d = want.differences(have);
        problems.extend(d.all().into_iter().map(|p| {
            if p.starts_with("state down") {
                "link is down".to_string()
            } else {
                p
            }
        }));
    }
    let addr_op = |op: &KernelOp| matches!(op, KernelOp::AddrAdd(a) | KernelOp::AddrDel(a) if a.dev == want.name);
    if ops.iter().any(addr_op) {
        let list = |s: &KernelState| -> Vec<String> {
            s.addrs
                .iter()
                .filter(|a| a.dev == want.name)
                .map(|a| a.addr.to_string())
                .collect()
        };
        problems.push(format!(
            "addresses [{}] (want exactly {})",
            list(current).join(", "),
            list(desired).join(", ")
        ));
    }
    DeviceInfo {
        name: want.name.clone(),
        present: true,
        ifindex: Some(have.index),
        up: have.up,
        mtu: Some(have.mtu),
        mac: have.mac.map(|m| fmt_mac(&m)),
        problems,
    }
}

/// Everything [`build`] needs.
pub struct BuildInput<'a> {
    pub ext: &'a ExternalInterface,
    pub found_by: FoundBy,
    pub source: String,
    pub conf: &'a NetConf,
    pub options: Value,
    pub own: Option<LeaseInfo>,
    pub peers: Vec<LeaseInfo>,
    pub snapshot: &'a Snapshot,
    pub desired: &'a Desired,
    pub current: &'a KernelState,
    /// The nexthop object each kernel route on one uses (`nhid`).
    pub route_nexthops: &'a BTreeMap<ipnet::IpNet, u32>,
    pub device: Option<DeviceInfo>,
}

/// Assembles the report (pure).
pub fn build(i: BuildInput<'_>, names: &dyn Fn(u32) -> String) -> Report {
    let nhid = |dst: &ipnet::IpNet| i.route_nexthops.get(dst).copied();
    let drift = classify(&i.desired.state, i.current, &nhid, names);
    let device_ok = i.device.as_ref().is_none_or(|d| d.problems.is_empty());
    Report {
        schema: SCHEMA,
        in_sync: drift.is_empty() && device_ok,
        node: NodeInfo {
            interface: i.ext.name.clone(),
            ifindex: i.ext.index,
            iface_addr: i.ext.iface_addr,
            public_ip: i.ext.ext_addr,
            mtu: i.ext.mtu,
            iface_addr6: i.ext.v6.as_ref().map(|v6| v6.iface_addr),
            public_ipv6: i.ext.v6.as_ref().map(|v6| v6.ext_addr),
            found_by: i.found_by,
        },
        config: ConfigInfo {
            source: i.source,
            network: i.conf.network.map(|n| n.to_string()),
            ipv6_network: i
                .conf
                .ipv6_network
                .filter(|_| i.conf.enable_ipv6)
                .map(|n| n.to_string()),
            backend: i.conf.backend.type_name().to_string(),
            options: i.options,
        },
        own_lease: i.own,
        peers: i.peers,
        malformed: i
            .snapshot
            .malformed
            .iter()
            .map(|m| MalformedInfo {
                key: m.key.clone(),
                reason: m.reason.clone(),
            })
            .collect(),
        skipped: i
            .desired
            .skipped
            .iter()
            .map(|(k, r)| SkippedInfo {
                subnet: k
                    .nets()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
                reason: r.clone(),
            })
            .collect(),
        device: i.device,
        required: Counts::of(&i.desired.state),
        kernel: Counts {
            routes_on_nexthops: Some(i.route_nexthops.len()),
            ..Counts::of(i.current)
        },
        drift,
    }
}

/// The external interface, this node's lease (if any) and how they were found (see the module
/// documentation). Read-only.
async fn find_node<'s>(
    nl: &Netlink,
    opts: &Options,
    snapshot: &'s Snapshot,
    previous: Option<ipnet::Ipv4Net>,
    stack: crate::agent::iface::Stack,
) -> Result<(ExternalInterface, Option<&'s LeaseEntry>, FoundBy)> {
    let flags = !opts.iface.is_empty()
        || !opts.iface_regex.is_empty()
        || opts.iface_can_reach.is_some()
        || opts.public_ip.is_some();
    if flags {
        let ext = crate::agent::iface::select_interface(nl, opts, stack).await?;
        let own = find_own(snapshot, &ext, previous);
        return Ok((ext, own, FoundBy::Flags));
    }
    let addrs: Vec<Ipv4Addr> = nl
        .links()
        .await
        .context("list interfaces")?
        .iter()
        .flat_map(|l| &l.addrs)
        .filter_map(|a| match a.addr {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .collect();
    if let Some((lease, found_by)) = own_lease_without_flags(&snapshot.leases, &addrs, previous) {
        // The interface holding the lease's PublicIP, as `--public-ip` would pick it.
        let by_ip = Options {
            public_ip: Some(lease.attrs.public_ip),
            ..opts.clone()
        };
        let ext = crate::agent::iface::select_interface(nl, &by_ip, stack)
            .await
            .with_context(|| {
                format!(
                    "the interface holding {}, the PublicIP of this node's lease {}",
                    lease.attrs.public_ip, lease.key
                )
            })?;
        return Ok((ext, Some(lease), found_by));
    }
    let ext = crate::agent::iface::select_interface(nl, opts, stack)
        .await
        .context(
            "no lease in etcd matches the subnet file or an address of this node, \
         and the agent's default choice failed",
        )?;
    let own = find_own(snapshot, &ext, previous);
    Ok((ext, own, FoundBy::DefaultRoute))
}

/// With no interface flag: this node's lease, found without the default route. The lease of
/// the subnet file's subnet (`previous`) when its PublicIP is one of `addrs` (this node's
/// addresses; a lease with another PublicIP is someone else's now), else the first lease whose
/// PublicIP is one of `addrs`. None when no lease is this node's. Pure.
pub fn own_lease_without_flags<'s>(
    leases: &'s [LeaseEntry],
    addrs: &[Ipv4Addr],
    previous: Option<ipnet::Ipv4Net>,
) -> Option<(&'s LeaseEntry, FoundBy)> {
    let local = |e: &&LeaseEntry| addrs.contains(&e.attrs.public_ip);
    if let Some(prev) = previous {
        if let Some(e) = leases
            .iter()
            .filter(local)
            .find(|e| e.key.v4.map(|n| n.trunc()) == Some(prev.trunc()))
        {
            return Some((e, FoundBy::SubnetFile));
        }
    }
    leases.iter().find(local).map(|e| (e, FoundBy::Address))
}

/// The lease this node holds: the one whose PublicIP (IPv6-only: PublicIPv6) is ours; among
/// several, the one of the subnet in subnet.env, else the first.
fn find_own<'s>(
    snapshot: &'s Snapshot,
    ext: &ExternalInterface,
    previous: Option<ipnet::Ipv4Net>,
) -> Option<&'s LeaseEntry> {
    // An IPv6-only network's leases all have PublicIP 0.0.0.0: ours is the one of our
    // PublicIPv6.
    let ours = |e: &&LeaseEntry| match (ext.has_v4(), &ext.v6) {
        (true, _) => e.attrs.public_ip == ext.ext_addr,
        (false, Some(v6)) => e.attrs.public_ipv6 == Some(v6.ext_addr),
        (false, None) => false,
    };
    let mine: Vec<&LeaseEntry> = snapshot.leases.iter().filter(ours).collect();
    mine.iter()
        .find(|e| e.key.v4.map(|n| n.trunc()) == previous)
        .or(mine.first())
        .copied()
}

/// The config's `Backend` object as written (keys case-insensitive, as flannel reads them).
fn backend_options(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("Backend"))
            .map(|(_, v)| v)
            .unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;

    fn route(dst: &str, gw: &str, oif: u32, onlink: bool) -> Route {
        Route {
            dst: dst.parse().unwrap(),
            gateway: gw.parse().unwrap(),
            oif,
            onlink,
        }
    }

    const M2: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const M3: [u8; 6] = [2, 0, 0, 0, 0, 3];

    fn names(i: u32) -> String {
        match i {
            2 => "eth0".into(),
            7 => "flannel.1".into(),
            other => other.to_string(),
        }
    }

    #[test]
    fn classify_sorts_missing_extra_different() {
        let mut want = KernelState::default();
        want.add_route(route("10.244.2.0/24", "10.244.2.0", 7, true));
        want.add_route(route("10.244.3.0/24", "10.244.3.0", 7, true));
        want.add_neigh(Neigh {
            ifindex: 7,
            ip: "10.244.2.0".parse().unwrap(),
            mac: M2,
        });
        want.add_fdb(Fdb {
            ifindex: 7,
            mac: M2,
            dst: "198.18.0.2".parse().unwrap(),
        });
        let mut have = want.clone();
        // Missing: the route to .3; extra: a stray proto-87 route; different: FDB dst.
        have.routes.remove(&"10.244.3.0/24".parse().unwrap());
        have.add_route(route("10.99.0.0/24", "198.18.0.9", 2, false));
        have.add_fdb(Fdb {
            ifindex: 7,
            mac: M2,
            dst: "198.18.0.22".parse().unwrap(),
        });
        have.add_neigh(Neigh {
            ifindex: 7,
            ip: "10.244.9.0".parse().unwrap(),
            mac: M3,
        });
        let d = classify(&want, &have, &|_| None, &names);
        let texts = |v: &[Entry]| v.iter().map(|e| e.text.clone()).collect::<Vec<_>>();
        assert_eq!(
            texts(&d.missing),
            ["10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink"]
        );
        assert_eq!(
            texts(&d.extra),
            [
                "10.99.0.0/24 via 198.18.0.9 dev eth0",
                "10.244.9.0 lladdr 02:00:00:00:00:03 dev flannel.1 PERMANENT"
            ]
        );
        assert_eq!(d.different.len(), 1);
        assert_eq!(
            d.different[0].want.text,
            "02:00:00:00:00:02 dev flannel.1 dst 198.18.0.2 self permanent"
        );
        assert_eq!(d.different[0].have.dst.as_deref(), Some("198.18.0.22"));
        assert_eq!(d.missing[0].dst.as_deref(), Some("10.244.3.0/24"));
        assert_eq!(d.missing[0].onlink, Some(true));
        assert!(classify(&want, &want, &|_| None, &names).is_empty());

        // Kernel routes on nexthop objects read like `ip route` shows them; the required
        // route (always plain in meaning) does not.
        have.routes.remove(&"10.244.2.0/24".parse().unwrap());
        have.add_route(route("10.244.2.0/24", "10.244.2.9", 7, true));
        let on_nh = |dst: &ipnet::IpNet| (dst.to_string() != "10.244.3.0/24").then_some(5);
        let d = classify(&want, &have, &on_nh, &names);
        assert_eq!(
            texts(&d.extra)[0],
            "10.99.0.0/24 nhid 5 via 198.18.0.9 dev eth0"
        );
        assert_eq!(d.extra[0].nhid, Some(5));
        let routes: Vec<&Changed> = d
            .different
            .iter()
            .filter(|c| c.want.kind == "route")
            .collect();
        assert_eq!(
            routes[0].have.text,
            "10.244.2.0/24 nhid 5 via 10.244.2.9 dev flannel.1 onlink"
        );
        assert_eq!(
            routes[0].want.text,
            "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"
        );
        assert_eq!(routes[0].want.nhid, None);
    }

    fn vxlan_device(index: u32) -> Device {
        let ext = ExternalInterface {
            name: "eth0".into(),
            index: 2,
            iface_addr: Ipv4Addr::new(198, 18, 0, 1),
            ext_addr: Ipv4Addr::new(198, 18, 0, 1),
            mtu: 1500,
            prefixes: vec![],
            v6: None,
        };
        Device {
            index,
            ..Vxlan::new(net_conf::VxlanConf::default())
                .spec(&ext, Some([2, 0, 0, 0, 0, 1]))
                .expect("spec")
        }
    }

    #[test]
    fn device_problems_come_from_the_diff() {
        let want = vxlan_device(7);
        let addr = backends::plan::Addr {
            dev: "flannel.1".into(),
            addr: "10.244.1.0/32".parse().expect("addr"),
        };
        let mut desired = KernelState::default();
        desired.add_device(want.clone());
        desired.add_addr(addr.clone());
        let info = |current: &KernelState| device_info(&want, &desired, current);
        assert!(info(&desired).problems.is_empty());
        assert_eq!(
            info(&KernelState::default()).problems,
            vec!["flannel.1 does not exist"]
        );
        let mut sick = desired.clone();
        let dev = sick.devices.get_mut("flannel.1").expect("dev");
        dev.up = false;
        dev.mtu = 1400;
        sick.addrs.clear();
        sick.add_addr(backends::plan::Addr {
            dev: "flannel.1".into(),
            addr: "10.244.9.0/24".parse().expect("addr"),
        });
        let i = info(&sick);
        assert!(i.present && !i.up);
        assert_eq!(
            i.problems,
            vec![
                "mtu 1400 (want 1450)",
                "link is down",
                "addresses [10.244.9.0/24] (want exactly 10.244.1.0/32)"
            ]
        );
        // A device of another backend is extra drift; the wanted one's changes are not.
        let ipip = Device {
            name: "flannel.ipip".into(),
            index: 8,
            kind: backends::plan::DeviceKind::IpIp {
                local: Ipv4Addr::new(198, 18, 0, 1),
                remote: None,
            },
            mtu: 1480,
            mac: None,
            up: true,
        };
        sick.add_device(ipip);
        let d = classify(&desired, &sick, &|_| None, &names);
        assert!(d.missing.is_empty() && d.different.is_empty(), "{d:?}");
        assert_eq!(
            d.extra
                .iter()
                .map(|e| (e.kind, e.text.as_str()))
                .collect::<Vec<_>>(),
            vec![(
                "device",
                "flannel.ipip type ipip local 198.18.0.1 remote any mtu 1480"
            )]
        );
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_517_294), "2026-11-24T10:48:14Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(human_duration(86_399), "23h59m");
        assert_eq!(human_duration(303), "5m3s");
        assert_eq!(human_duration(12), "12s");
    }

    fn entry(subnet: &str, ip: &str, lease_id: i64, data: Option<&str>) -> LeaseEntry {
        LeaseEntry {
            key: net_conf::SubnetKey::from(subnet.parse::<ipnet::Ipv4Net>().unwrap()),
            attrs: net_conf::LeaseAttrs {
                public_ip: ip.parse().unwrap(),
                public_ipv6: None,
                backend_type: "vxlan".into(),
                backend_data: data.map(String::from),
                backend_v6_data: None,
            },
            lease_id,
            mod_revision: 5,
        }
    }

    #[test]
    fn lease_info_fields() {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_517_294);
        let e = entry(
            "10.244.2.0/24",
            "198.18.0.2",
            0x694d,
            Some(r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}"#),
        );
        let l = lease_info(&e, "/coreos.com/network", Some(100), now);
        assert_eq!(l.subnet, "10.244.2.0/24");
        assert_eq!(l.key, "/coreos.com/network/subnets/10.244.2.0-24");
        assert_eq!(l.vni, Some(1));
        assert_eq!(l.vtep_mac.as_deref(), Some("02:00:00:00:00:02"));
        assert_eq!(l.lease_id.as_deref(), Some("694d"));
        assert!(!l.reservation);
        assert_eq!(l.expires_at_unix, Some(1_795_517_394));
        assert_eq!(l.expires_at.as_deref(), Some("2026-11-24T10:49:54Z"));
        let r = lease_info(
            &entry("10.244.3.0/24", "198.18.0.3", 0, None),
            "/p",
            Some(5),
            now,
        );
        assert!(r.reservation);
        assert_eq!(
            (r.lease_id.clone(), r.ttl_seconds, r.expires_at.clone()),
            (None, None, None)
        );
        let v = serde_json::to_value(&r).unwrap();
        for field in [
            "subnet",
            "key",
            "public_ip",
            "backend",
            "vni",
            "vtep_mac",
            "lease_id",
            "reservation",
            "ttl_seconds",
            "expires_at",
            "expires_at_unix",
        ] {
            assert!(v.get(field).is_some(), "{field} missing in {v}");
        }
    }

    #[test]
    fn own_lease_by_public_ip_prefers_subnet_env() {
        let snap = Snapshot {
            revision: 9,
            leases: vec![
                entry("10.244.2.0/24", "198.18.0.1", 1, None),
                entry("10.244.3.0/24", "198.18.0.2", 2, None),
                entry("10.244.4.0/24", "198.18.0.1", 3, None),
            ],
            malformed: vec![],
        };
        let me = ext_at("198.18.0.1");
        assert_eq!(find_own(&snap, &me, None).unwrap().lease_id, 1);
        let prev = Some("10.244.4.0/24".parse().unwrap());
        assert_eq!(find_own(&snap, &me, prev).unwrap().lease_id, 3);
        assert!(find_own(&snap, &ext_at("198.18.0.9"), None).is_none());
    }

    fn ext_at(ip: &str) -> ExternalInterface {
        ExternalInterface {
            name: "eth0".into(),
            index: 2,
            iface_addr: ip.parse().unwrap(),
            ext_addr: ip.parse().unwrap(),
            mtu: 1500,
            prefixes: vec![],
            v6: None,
        }
    }

    #[test]
    fn an_ipv6_only_nodes_own_lease_is_found_by_its_public_ipv6() {
        let v6_only = |subnet: &str, ip6: &str, id: i64| {
            let mut e = entry("10.0.0.0/8", "0.0.0.0", id, None);
            e.key = net_conf::SubnetKey::v6_only(subnet.parse().unwrap());
            e.attrs.public_ipv6 = Some(ip6.parse().unwrap());
            e
        };
        let snap = Snapshot {
            revision: 9,
            leases: vec![
                v6_only("fd00:244:0:2::/64", "fd00:18::2", 1),
                v6_only("fd00:244:0:1::/64", "fd00:18::1", 2),
            ],
            malformed: vec![],
        };
        let mut me = ext_at("0.0.0.0");
        me.v6 = Some(backends::ExternalV6 {
            iface_addr: "fd00:18::1".parse().unwrap(),
            ext_addr: "fd00:18::1".parse().unwrap(),
            prefixes: vec![],
        });
        assert!(!me.has_v4());
        assert_eq!(find_own(&snap, &me, None).unwrap().lease_id, 2);
        let info = node_lease_info(&snap.leases[1]);
        assert_eq!(info.subnet, "fd00:244:0:1::/64");
        assert_eq!(info.subnet6, None);
        assert_eq!(info.key, "Node with podCIDR fd00:244:0:1::/64");
    }

    #[test]
    fn own_lease_without_flags_from_the_subnet_file_then_the_addresses() {
        let leases = vec![
            entry("10.244.2.0/24", "198.18.0.1", 1, None),
            entry("10.244.3.0/24", "198.18.0.2", 2, None),
            entry("10.244.4.0/24", "198.18.0.1", 3, None),
        ];
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let net = |s: &str| Some(s.parse::<ipnet::Ipv4Net>().unwrap());
        let mine = [ip("127.0.0.1"), ip("198.18.0.1")];
        let chosen =
            |prev| own_lease_without_flags(&leases, &mine, prev).map(|(e, by)| (e.lease_id, by));
        // The subnet file names one of this node's leases: that one.
        assert_eq!(chosen(net("10.244.4.0/24")), Some((3, FoundBy::SubnetFile)));
        // subnet.env holds x.y.z.1/24: the subnet x.y.z.0/24.
        assert_eq!(chosen(net("10.244.4.1/24")), Some((3, FoundBy::SubnetFile)));
        // No subnet file: the first lease whose PublicIP is an address of this node.
        assert_eq!(chosen(None), Some((1, FoundBy::Address)));
        // The file's subnet is leased to another node now: not ours, so by address.
        assert_eq!(chosen(net("10.244.3.0/24")), Some((1, FoundBy::Address)));
        // A subnet no lease holds: by address.
        assert_eq!(chosen(net("10.244.9.0/24")), Some((1, FoundBy::Address)));
        // No lease carries an address of this node: none, whatever the file says.
        let other = [ip("198.18.0.9")];
        assert!(own_lease_without_flags(&leases, &other, net("10.244.2.0/24")).is_none());
        assert!(own_lease_without_flags(&[], &mine, None).is_none());
    }

    #[test]
    fn build_reports_in_sync_only_without_drift_and_device_problems() {
        let ext = ExternalInterface {
            name: "eth0".into(),
            index: 2,
            iface_addr: "198.18.0.1".parse().unwrap(),
            ext_addr: "198.18.0.1".parse().unwrap(),
            mtu: 1500,
            prefixes: vec!["198.18.0.0/24".parse().unwrap()],
            v6: None,
        };
        let conf = NetConf::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#)
            .unwrap()
            .conf;
        let peers = [backends::Peer {
            key: net_conf::SubnetKey::from("10.244.2.0/24".parse::<ipnet::Ipv4Net>().unwrap()),
            attrs: net_conf::LeaseAttrs::host_gw("198.18.0.2".parse().unwrap()),
        }];
        let desired = backends::HostGw::new().desired(&ext, &peers);
        let snapshot = Snapshot::default();
        let on_nexthops = BTreeMap::from([("10.244.2.0/24".parse().unwrap(), 3)]);
        let input = |current: &KernelState, device: Option<DeviceInfo>| {
            build(
                BuildInput {
                    ext: &ext,
                    found_by: FoundBy::SubnetFile,
                    source: "etcd /coreos.com/network/config".into(),
                    conf: &conf,
                    options: serde_json::json!({"Type": "host-gw"}),
                    own: None,
                    peers: vec![],
                    snapshot: &snapshot,
                    desired: &desired,
                    current,
                    route_nexthops: &on_nexthops,
                    device,
                },
                &names,
            )
        };
        let r = input(&desired.state, None);
        assert!(r.in_sync);
        assert_eq!(r.exit_code(), EXIT_IN_SYNC);
        assert_eq!(
            r.required,
            Counts {
                routes: 1,
                neighs: 0,
                fdb: 0,
                routes_on_nexthops: None,
            }
        );
        assert_eq!(r.kernel.routes_on_nexthops, Some(1));
        assert!(r.render().contains("status:  in sync"));
        assert!(
            r.render()
                .contains("found:   own lease from the subnet file (FLANNEL_SUBNET)"),
            "{}",
            r.render()
        );
        assert_eq!(
            serde_json::to_value(&r).unwrap()["node"]["found_by"],
            "subnet_file"
        );
        assert!(
            r.render()
                .contains("weft holds 1 routes (1 on nexthop objects), 0 neigh, 0 fdb"),
            "{}",
            r.render()
        );
        let r = input(&KernelState::default(), None);
        assert!(!r.in_sync);
        assert_eq!(r.exit_code(), EXIT_DRIFT);
        let text = r.render();
        assert!(
            text.contains("  missing   route 10.244.2.0/24 via 198.18.0.2 dev eth0\n"),
            "{text}"
        );
        let sick = DeviceInfo {
            name: "flannel.1".into(),
            present: true,
            ifindex: Some(7),
            up: false,
            mtu: Some(1450),
            mac: None,
            problems: vec!["link is down".into()],
        };
        let r = input(&desired.state, Some(sick));
        assert!(!r.in_sync, "a device problem is drift too");
        assert!(r.render().contains("problem: link is down"));
        let json = serde_json::to_value(&r).unwrap();
        for field in [
            "schema",
            "in_sync",
            "node",
            "config",
            "own_lease",
            "peers",
            "malformed",
            "skipped",
            "device",
            "required",
            "kernel",
            "drift",
        ] {
            assert!(json.get(field).is_some(), "{field} missing");
        }
    }

    #[test]
    fn backend_options_are_the_backend_object() {
        assert_eq!(
            backend_options(r#"{"Network":"10.244.0.0/16","backend":{"Type":"vxlan","VNI":4}}"#),
            serde_json::json!({"Type":"vxlan","VNI":4})
        );
        assert_eq!(backend_options("not json"), Value::Null);
    }
}
