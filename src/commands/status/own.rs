//! Finding this node: its external interface and its own lease (see the module documentation
//! of `status`).

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context as _, Result};
use backends::{ExternalInterface, Netlink};

use super::FoundBy;
use crate::cli::Options;
use crate::lease::etcd::registry::{LeaseEntry, Snapshot};

/// The external interface, this node's lease (if any) and how they were found (see the module
/// documentation). Read-only.
pub(super) async fn find_node<'s>(
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
pub(super) fn find_own<'s>(
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
