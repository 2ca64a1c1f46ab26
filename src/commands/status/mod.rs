//! `weft status [--json] [flanneld flags…]`: what this node's lease and the kernel say, and how
//! the kernel differs from what the leases require. Needs no running agent; reads etcd and the
//! kernel and never writes to either.
//!
//! It takes the agent's flags (and `FLANNELD_*` variables) to find etcd, the config and the
//! external interface, then computes the required kernel state with the agent's own code: interface
//! selection ([`crate::agent::iface::select_interface`]), the peer set
//! ([`crate::lease::table::LeaseTable`]), the backend's [`Backend::desired`], the reconciler's
//! read-only dump ([`Reconciler::refresh`]) and [`plan::diff`](backends::plan::diff). The backend's
//! device (`flannel.<VNI>`, `flannel.ipip`) is planned as the agent plans it, with the VTEP MAC of
//! the node's lease and on the ifindex of the kernel's device of that name, but without
//! [`Backend::prepare`] (which may write); the device's problems are the device operations of the
//! same diff, described by [`Device::differences`]. When the device is missing, every ARP/FDB/route
//! entry on it is reported missing (shown on the device's name, ifindex 0).
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
use std::time::SystemTime;

use anyhow::{Context as _, Result, anyhow};
use backends::ipip::IpIp;
use backends::plan::{Device, KernelState};
use backends::reconcile::Reconciler;
use backends::vxlan::{Vxlan, parse_backend_data};
use backends::{AnyBackend, Backend, ExternalInterface, HostGw, Netlink};
use net_conf::{BackendConf, NetConf};
use serde_json::Value;

use crate::cli::{Options, StatusArgs};
use crate::lease::etcd::registry::LeaseEntry;
use crate::lease::table::LeaseTable;

mod build;
mod drift;
mod leases;
mod own;
mod report;
#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests;

pub use build::{BuildInput, build};
use drift::missing_device;
pub use drift::{Changed, Drift, Entry, classify, device_info};
use own::find_node;
pub use own::own_lease_without_flags;
pub use report::{
    ConfigInfo, Counts, DeviceInfo, FoundBy, LeaseInfo, MalformedInfo, NodeInfo, Report,
    SkippedInfo, lease_info, node_lease_info, rfc3339,
};

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

// ===== gathering (read-only I/O) =====

/// Reads etcd and the kernel and builds the report. Never writes.
pub async fn gather(opts: &Options) -> Result<Report> {
    let now = SystemTime::now();
    let nl = Netlink::connect().context("open a netlink socket")?;
    let leases::Read {
        source,
        text,
        snapshot,
        ttls,
        prefix,
    } = leases::read(opts).await?;
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
