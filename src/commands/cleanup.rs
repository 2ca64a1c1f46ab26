//! `weft cleanup [--release-lease] [--remove-subnet-env] [--network CIDR] [--ipv6-network CIDR]
//! [flanneld flags…]`:
//! removes the kernel state weft (or flanneld) made on this node, for uninstalling or migrating
//! away. Stop the agent first: a running agent re-creates what this removes.
//!
//! With `--network`, only that flannel network's objects go (a host running several networks,
//! one daemon each): routes to destinations inside it, the devices that are its (wanted by
//! none now, so those carrying an address inside it), its nexthops, and its masquerade and
//! forward rules; other networks' objects, chains and tables stay (`backends::owner`). A
//! dual-stack network's IPv6 objects go with `--ipv6-network` too. `--ipv6-network` alone
//! scopes to an IPv6-only network (its IPv6 objects; no IPv4 route is touched).
//!
//! What goes, in this order, each logged like the `ip` command:
//! 1. weft's kernel state, by the agent's own reconciler applying the empty desired state
//!    ([`Reconciler::apply`]): every route with weft's protocol 87 in table main that is not on a
//!    weft device (`ip route del … proto 87`, or `ip route del … nhid N proto 87` for a route on
//!    a nexthop object), e.g. host-gw routes via the external interface; then the devices
//!    `flannel.<VNI>`, `flannel-v6.<VNI>` and `flannel.ipip`, flanneld's included (`ip link
//!    del`), with the addresses, routes, ARP and FDB entries on them; then weft's nexthop objects
//!    (`ip nexthop del id N`, protocol 87), except one someone else's route or nexthop group
//!    still uses (kept, and reported as a failure);
//!    Then flanneld's own peer routes, which carry no protocol of weft's: routes via a gateway
//!    to a subnet of the network config (`cleanup_flanneld.rs` says exactly which); an
//!    operator's routes outside the network, or of another protocol, stay;
//! 2. masquerade and forward rules of both modes and both families (iptables and ip6tables
//!    chains `FLANNEL-POSTRTG` and `FLANNEL-FWD` with the jumps to them; nftables tables
//!    `ip flannel-ipv4`/`ip6 flannel-ipv6`), logged by the firewall module; with `--network`
//!    only that network's IPv4 rules (and with `--ipv6-network` its IPv6 rules; with
//!    `--ipv6-network` alone, only those);
//! 3. with `--release-lease`: this node's lease in etcd (the key whose PublicIP is this node's,
//!    found by `--public-ip` or by interface selection as the agent does), deleted by
//!    compare-and-swap on the mod revision read, then its etcd lease revoked;
//! 4. with `--remove-subnet-env`: the subnet file (`--subnet-file`).
//!
//! Idempotent: a second run finds nothing and says so. It keeps going after a failure and
//! reports every one; the exit code is 0 when nothing failed, 1 otherwise, 2 on usage errors.
use std::path::Path;

use anyhow::{Context as _, Result};
use backends::nl::Nexthop;
use backends::plan::{self, KernelOp, KernelState};
use backends::reconcile::Reconciler;
use backends::{Netlink, Ownership, RTPROT_WEFT};
use ipnet::Ipv4Net;

use crate::cli::{CleanupArgs, Options};
use crate::lease::etcd::registry::Registry;

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// What a cleanup did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Each removal, as the command that equals it (`ip link del flannel.1`).
    pub removed: Vec<String>,
    /// Each failure, with what was tried.
    pub failures: Vec<String>,
}

impl Outcome {
    pub(super) fn done(&mut self, what: String) {
        tracing::info!("{what}");
        self.removed.push(what);
    }

    pub(super) fn failed(&mut self, what: String) {
        tracing::error!("{what}");
        self.failures.push(what);
    }

    pub fn exit_code(&self) -> u8 {
        if self.failures.is_empty() {
            EXIT_OK
        } else {
            EXIT_FAILED
        }
    }
}

/// `weft cleanup` with its parsed flags: cleans up, returns the exit code.
pub fn run_command(args: CleanupArgs) -> u8 {
    let CleanupArgs {
        release_lease,
        remove_subnet_env,
        network,
        ipv6_network,
        opts,
    } = args;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft cleanup: cannot start the async runtime: {e}");
            return EXIT_FAILED;
        }
    };
    let outcome = rt.block_on(run(
        &opts,
        network,
        ipv6_network,
        release_lease,
        remove_subnet_env,
    ));
    if outcome.removed.is_empty() && outcome.failures.is_empty() {
        println!("weft cleanup: nothing to do");
    } else {
        println!(
            "weft cleanup: removed {} object(s), {} failure(s)",
            outcome.removed.len(),
            outcome.failures.len()
        );
    }
    for f in &outcome.failures {
        eprintln!("weft cleanup: failed: {f}");
    }
    outcome.exit_code()
}

/// Runs every step; never stops early. `network`: only that network's objects (with
/// `ipv6_network`, its IPv6 objects too).
pub async fn run(
    opts: &Options,
    network: Option<Ipv4Net>,
    ipv6_network: Option<ipnet::Ipv6Net>,
    release_lease: bool,
    remove_subnet_env: bool,
) -> Outcome {
    let owner = match (network, ipv6_network) {
        (Some(_), Some(v6)) => Ownership::of(network).with_ipv6_network(v6),
        (None, Some(v6)) => Ownership::ipv6_only(v6),
        _ => Ownership::of(network),
    };
    let mut out = Outcome::default();
    let nl = match Netlink::connect() {
        Ok(nl) => Some(nl),
        Err(e) => {
            out.failed(format!("open a netlink socket: {e}"));
            None
        }
    };
    if let Some(nl) = &nl {
        kernel_cleanup(nl, owner, &mut out).await;
        // flanneld's own peer routes are IPv4 ones (no protocol to tell its IPv6 ones by); an
        // IPv6-only network's cleanup has none to look for.
        if network.is_some() || ipv6_network.is_none() {
            super::cleanup_flanneld::remove(nl, opts, network, &mut out).await;
        }
    }
    firewall_cleanup(network, ipv6_network, &mut out).await;
    if release_lease {
        match release_own_lease(nl.as_ref(), opts, &mut out).await {
            // A node without a lease must not boot into its old peers from the cache.
            Ok(()) => {
                if let Some(cache) = &opts.peer_cache_file {
                    remove_file(cache, &mut out);
                }
            }
            Err(e) => out.failed(format!("release the lease: {e:#}")),
        }
    }
    if remove_subnet_env {
        remove_file(&opts.subnet_file, &mut out);
    }
    out
}

/// Step 1: a reconcile to the empty desired state, then a look at the weft nexthops left.
async fn kernel_cleanup(nl: &Netlink, owner: Ownership, out: &mut Outcome) {
    let mut rec = Reconciler::new(nl.clone()).with_ownership(owner);
    if let Err(e) = rec.refresh().await {
        out.failed(format!("read weft's kernel state: {e}"));
        return;
    }
    // The nexthops this cleanup owns: in its range, or under one of its routes.
    let on_routes: std::collections::BTreeSet<u32> = rec
        .current()
        .routes
        .keys()
        .filter_map(|dst| rec.route_nexthop(dst))
        .collect();
    let mine = |n: &Nexthop| owner.owns_nexthop_id(n.id) || on_routes.contains(&n.id);
    let names: std::collections::HashMap<u32, String> = match nl.links().await {
        Ok(links) => links.into_iter().map(|l| (l.index, l.name)).collect(),
        Err(_) => Default::default(),
    };
    // Read before anything goes: removed nexthops are reported with their hop.
    let mut before = weft_nexthops(nl, out).await;
    before.retain(mine);
    let hop_of = |id: u32| -> String {
        match before.iter().find(|n| n.id == id).and_then(|n| n.hop()) {
            Some(hop) => format!(
                "  # {}",
                hop.display_with(names.get(&hop.oif).map(String::as_str))
            ),
            None => String::new(),
        }
    };
    let empty = KernelState::default();
    // The commands of the plan, as the reconciler logs them (a route by its nexthop).
    let planned: Vec<(KernelOp, String)> = plan::diff(&empty, rec.current())
        .into_iter()
        .map(|op| {
            let cmd = match &op {
                KernelOp::RouteDel(r) => match rec.route_nexthop(&r.dst) {
                    Some(id) => format!(
                        "ip route del {} nhid {id} proto {RTPROT_WEFT}{}",
                        r.dst,
                        hop_of(id)
                    ),
                    None => op.command(|i| names.get(&i).cloned()),
                },
                _ => op.command(|i| names.get(&i).cloned()),
            };
            (op, cmd)
        })
        .collect();
    let deleted_devices: Vec<u32> = planned
        .iter()
        .filter_map(|(op, _)| match op {
            KernelOp::LinkDel(d) => Some(d.index),
            _ => None,
        })
        .collect();
    let report = rec.apply(&empty).await;
    for (op, cmd) in planned {
        if !report.failures.iter().any(|(failed, _)| *failed == op) {
            out.removed.push(cmd);
        }
    }
    for (op, e) in &report.failures {
        out.failed(format!("{}: {e}", op.command(|i| names.get(&i).cloned())));
    }
    if let Some(e) = &report.refresh_error {
        out.failed(format!("re-read weft's kernel state: {e}"));
    }
    // Nexthops: those through a deleted device went with it (not counted); the others the
    // reconciler deleted, or kept because someone else's route or group uses them.
    let mut after = weft_nexthops(nl, out).await;
    after.retain(|n| before.iter().any(|b| b.id == n.id));
    for n in &before {
        if deleted_devices.contains(&n.oif) || after.iter().any(|a| a.id == n.id) {
            continue;
        }
        out.removed
            .push(format!("ip nexthop del id {}{}", n.id, hop_of(n.id)));
    }
    for n in &after {
        let cmd = format!("ip nexthop del id {}{}", n.id, hop_of(n.id));
        match report.nexthop_failures.iter().find(|(id, _)| *id == n.id) {
            Some((_, e)) => out.failed(format!("{cmd}: {e}")),
            None => out.failed(format!(
                "{cmd}: kept, someone else's route or nexthop group uses it"
            )),
        }
    }
}

/// weft's nexthop objects (protocol 87); none on a kernel without nexthop objects.
async fn weft_nexthops(nl: &Netlink, out: &mut Outcome) -> Vec<Nexthop> {
    match nl.dump_nexthops().await {
        Ok(n) => n.into_iter().filter(Nexthop::is_weft).collect(),
        Err(e) if backends::nl::nexthops_unsupported(&e) => Vec::new(),
        Err(e) => {
            out.failed(format!("ip nexthop show: {e}"));
            Vec::new()
        }
    }
}

/// Step 2: masquerade and forward rules of both modes ([`crate::agent::firewall::cleanup_all`]:
/// iptables and ip6tables chains `FLANNEL-POSTRTG`/`FLANNEL-FWD` and the jumps to them,
/// nftables tables `flannel-ipv4`/`flannel-ipv6`). The firewall module logs each removal
/// itself; they are not counted in the summary. A missing tool means nothing of that mode to
/// remove.
async fn firewall_cleanup(
    network: Option<Ipv4Net>,
    ipv6_network: Option<ipnet::Ipv6Net>,
    out: &mut Outcome,
) {
    use crate::agent::firewall::{Scope, cleanup_all};
    // With `--network`, that network's IPv4 rules, and its IPv6 rules with `--ipv6-network`
    // (alone: an IPv6-only network's).
    let scope = match (network, ipv6_network) {
        (None, None) => Scope::All,
        (v4, v6) => Scope::Networks { v4, v6 },
    };
    if let Err(e) = cleanup_all(scope).await {
        out.failed(format!("{e:#}"));
    }
}

/// Step 3: delete this node's lease key (compare-and-swap on the mod revision read) and revoke
/// its etcd lease.
async fn release_own_lease(nl: Option<&Netlink>, opts: &Options, out: &mut Outcome) -> Result<()> {
    if opts.kube_subnet_mgr {
        anyhow::bail!(
            "--kube-subnet-mgr: the subnet is the Node's spec.podCIDR, which weft does not own; \
             `kubectl delete node <name>` releases it"
        );
    }
    let public_ip = match opts.public_ip {
        Some(ip) => ip,
        None => {
            let nl = nl.context("no netlink socket to find the external interface")?;
            crate::agent::iface::select_interface(nl, opts, crate::agent::iface::Stack::V4)
                .await
                .context("find this node's public IP (or pass --public-ip)")?
                .ext_addr
        }
    };
    let registry = Registry::connect(&opts.etcd_options())
        .await
        .context("etcd client")?;
    let snapshot = registry.list_leases().await.context("list the leases")?;
    for e in snapshot
        .leases
        .iter()
        .filter(|e| e.attrs.public_ip == public_ip)
    {
        let key = registry.lease_key(&e.key);
        match registry.delete_lease(&e.key, Some(e.mod_revision)).await {
            Ok(_) => out.done(format!("etcdctl del {key}")),
            Err(err) => {
                out.failed(format!("etcdctl del {key}: {err}"));
                continue;
            }
        }
        if e.lease_id != 0 {
            match registry.revoke(e.lease_id).await {
                Ok(true) => out.done(format!("etcdctl lease revoke {:x}", e.lease_id)),
                Ok(false) => {}
                Err(err) => out.failed(format!("etcdctl lease revoke {:x}: {err}", e.lease_id)),
            }
        }
    }
    Ok(())
}

/// Step 4: `rm <path>`; a missing file is nothing to do.
fn remove_file(path: &Path, out: &mut Outcome) {
    match std::fs::remove_file(path) {
        Ok(()) => out.done(format!("rm {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => out.failed(format!("rm {}: {e}", path.display())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;

    #[test]
    fn remove_file_is_idempotent_and_reports_failures() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subnet.env");
        std::fs::write(&path, "FLANNEL_SUBNET=10.244.1.1/24\n").unwrap();
        let mut out = Outcome::default();
        remove_file(&path, &mut out);
        assert_eq!(out.removed, [format!("rm {}", path.display())]);
        remove_file(&path, &mut out);
        assert_eq!(out.removed.len(), 1, "second run: nothing to do");
        // A directory cannot be removed as a file: a reported failure, exit 1.
        remove_file(dir.path(), &mut out);
        assert_eq!(out.failures.len(), 1);
        assert_eq!(out.exit_code(), EXIT_FAILED);
    }
}
