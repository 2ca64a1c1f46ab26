//! `weft cleanup [--release-lease] [--remove-subnet-env] [flanneld flags…]`: removes the kernel
//! state weft (or flanneld) made on this node, for uninstalling or migrating away. Stop the
//! agent first: a running agent re-creates what this removes.
//!
//! What goes, in this order, each logged like the `ip` command:
//! 1. the devices `flannel.<VNI>`, `flannel-v6.<VNI>` and `flannel.ipip` (`ip link del`); the
//!    routes, ARP and FDB entries on them go with them;
//! 2. every route with weft's protocol 87 in table main (`ip route del … proto 87`, or
//!    `ip route del … nhid N proto 87` for a route on a nexthop object), e.g. host-gw routes via
//!    the external interface; then weft's nexthop objects (`ip nexthop del id N`, protocol 87),
//!    except one someone else's route or nexthop group still uses (reported as a failure);
//! 3. masquerade and forward rules of both modes (iptables chains `FLANNEL-POSTRTG` and
//!    `FLANNEL-FWD` with the jumps to them; nftables tables `flannel-ipv4`/`flannel-ipv6`),
//!    logged by the firewall module;
//! 4. with `--release-lease`: this node's lease in etcd (the key whose PublicIP is this node's,
//!    found by `--public-ip` or by interface selection as the agent does), deleted by
//!    compare-and-swap on the mod revision read, then its etcd lease revoked;
//! 5. with `--remove-subnet-env`: the subnet file (`--subnet-file`).
//!
//! Idempotent: a second run finds nothing and says so. It keeps going after a failure and
//! reports every one; the exit code is 0 when nothing failed, 1 otherwise, 2 on usage errors.
use std::path::Path;

use anyhow::{Context as _, Result};
use backends::{Netlink, RTPROT_WEFT};

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
    fn done(&mut self, what: String) {
        tracing::info!("{what}");
        self.removed.push(what);
    }

    fn failed(&mut self, what: String) {
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
    let outcome = rt.block_on(run(&opts, release_lease, remove_subnet_env));
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

/// Whether a link name is one of the devices weft or flanneld create: `flannel.<VNI>`,
/// `flannel-v6.<VNI>`, `flannel.ipip`.
pub fn is_flannel_device(name: &str) -> bool {
    let numbered = |rest: &str| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
    name == "flannel.ipip"
        || name.strip_prefix("flannel.").is_some_and(numbered)
        || name.strip_prefix("flannel-v6.").is_some_and(numbered)
}

/// Runs every step; never stops early.
pub async fn run(opts: &Options, release_lease: bool, remove_subnet_env: bool) -> Outcome {
    let mut out = Outcome::default();
    let nl = match Netlink::connect() {
        Ok(nl) => Some(nl),
        Err(e) => {
            out.failed(format!("open a netlink socket: {e}"));
            None
        }
    };
    if let Some(nl) = &nl {
        kernel_cleanup(nl, &mut out).await;
    }
    firewall_cleanup(&mut out).await;
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

/// Steps 1 and 2: the devices, then weft's routes that are left, then weft's nexthops.
async fn kernel_cleanup(nl: &Netlink, out: &mut Outcome) {
    match nl.links().await {
        Ok(links) => {
            for l in links.iter().filter(|l| is_flannel_device(&l.name)) {
                match nl.link_del(l.index).await {
                    Ok(()) => out.done(format!("ip link del {}", l.name)),
                    Err(e) => out.failed(format!("ip link del {}: {e}", l.name)),
                }
            }
        }
        Err(e) => out.failed(format!("list interfaces: {e}")),
    }
    let names: std::collections::HashMap<u32, String> = match nl.links().await {
        Ok(links) => links.into_iter().map(|l| (l.index, l.name)).collect(),
        Err(_) => Default::default(),
    };
    // Read before the routes go: a route on a nexthop object is logged with the nexthop's hop.
    let nexthops = match nl.dump_nexthops().await {
        Ok(n) => n,
        // A kernel without nexthop objects: nothing of that kind to remove.
        Err(e) if backends::nl::nexthops_unsupported(&e) => Vec::new(),
        Err(e) => {
            out.failed(format!("ip nexthop show: {e}"));
            Vec::new()
        }
    };
    let hop_of = |id: u32| -> String {
        match nexthops.iter().find(|n| n.id == id).and_then(|n| n.hop()) {
            Some(hop) => format!(
                "  # {}",
                hop.display_with(names.get(&hop.oif).map(String::as_str))
            ),
            None => String::new(),
        }
    };
    match nl.dump_owned_routes().await {
        Ok(routes) => {
            for ev in routes {
                let r = &ev.route;
                let (cmd, result) = match ev.nhid {
                    Some(id) => (
                        format!(
                            "ip route del {} nhid {id} proto {RTPROT_WEFT}{}",
                            r.dst,
                            hop_of(id)
                        ),
                        nl.route_del_nhid(r.dst, id).await.map(drop),
                    ),
                    None => {
                        let name = names.get(&r.oif).map(String::as_str);
                        (
                            format!("ip route del {} proto {RTPROT_WEFT}", r.display_with(name)),
                            nl.route_del(r).await,
                        )
                    }
                };
                match result {
                    Ok(()) => out.done(cmd),
                    Err(e) => out.failed(format!("{cmd}: {e}")),
                }
            }
        }
        Err(e) => out.failed(format!("ip route show table main proto {RTPROT_WEFT}: {e}")),
    }
    nexthop_cleanup(nl, &nexthops, &hop_of, out).await;
}

/// Step 2, last: weft's nexthop objects (protocol 87), once weft's routes are gone. One that
/// someone else's route or nexthop group still uses is kept (deleting it would delete their
/// route), and reported.
async fn nexthop_cleanup(
    nl: &Netlink,
    nexthops: &[backends::nl::Nexthop],
    hop_of: &dyn Fn(u32) -> String,
    out: &mut Outcome,
) {
    if !nexthops.iter().any(|n| n.is_weft()) {
        return;
    }
    let mut used: std::collections::HashSet<u32> = nexthops
        .iter()
        .filter(|n| !n.is_weft())
        .flat_map(|n| n.group.iter().copied())
        .collect();
    match nl.dump_routes().await {
        Ok(routes) => used.extend(routes.iter().filter_map(|r| r.nhid)),
        Err(e) => {
            out.failed(format!(
                "ip -4 route show table all (to see who uses weft's nexthops): {e}"
            ));
            return;
        }
    }
    for n in nexthops.iter().filter(|n| n.is_weft()) {
        let cmd = format!("ip nexthop del id {}{}", n.id, hop_of(n.id));
        if used.contains(&n.id) {
            out.failed(format!(
                "{cmd}: kept, someone else's route or nexthop group uses it"
            ));
            continue;
        }
        match nl.nexthop_del(n.id).await {
            Ok(()) => out.done(cmd),
            Err(e) => out.failed(format!("{cmd}: {e}")),
        }
    }
}

/// Step 3: masquerade and forward rules of both modes ([`crate::agent::firewall::cleanup_all`]:
/// iptables chains `FLANNEL-POSTRTG`/`FLANNEL-FWD` and the jumps to them, nftables tables
/// `flannel-ipv4`/`flannel-ipv6`). The firewall module logs each removal itself; they are not
/// counted in the summary. A missing tool means nothing of that mode to remove.
async fn firewall_cleanup(out: &mut Outcome) {
    if let Err(e) = crate::agent::firewall::cleanup_all().await {
        out.failed(format!("{e:#}"));
    }
}

/// Step 4: delete this node's lease key (compare-and-swap on the mod revision read) and revoke
/// its etcd lease.
async fn release_own_lease(nl: Option<&Netlink>, opts: &Options, out: &mut Outcome) -> Result<()> {
    let public_ip = match opts.public_ip {
        Some(ip) => ip,
        None => {
            let nl = nl.context("no netlink socket to find the external interface")?;
            crate::agent::iface::select_interface(nl, opts)
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

/// Step 5: `rm <path>`; a missing file is nothing to do.
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
    fn flannel_device_names() {
        for yes in ["flannel.1", "flannel.4096", "flannel-v6.1", "flannel.ipip"] {
            assert!(is_flannel_device(yes), "{yes}");
        }
        for no in [
            "flannel.",
            "flannel",
            "flannel.1a",
            "flannel-v6.",
            "flannel.ipip0",
            "cni0",
            "eth0",
            "xflannel.1",
            "flannel-v6.ipip",
        ] {
            assert!(!is_flannel_device(no), "{no}");
        }
    }

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
