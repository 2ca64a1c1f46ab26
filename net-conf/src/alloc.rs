//! Subnet allocation policy (docs/flannel-compat.md §3.4), pure.
//!
//! The caller lists the leases, asks [`choose`] what to do, does it in etcd (create by
//! compare-and-swap, renew, or delete an incompatible own lease) and, after a delete or a lost
//! race, lists again and asks again. With `EnableIPv6` the IPv6 subnet is chosen the same way and
//! independently (the previous one from subnet.env if it fits and is free, else a random free
//! one), and the key becomes dual-stack, `10.244.1.0-24&fd00:10:244:1::-64`. etcd keys always
//! have an IPv4 part, so an IPv6-only config cannot be allocated here (as in flannel's etcd mode).
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use thiserror::Error;

use crate::{LeaseAttrs, NetConf, SubnetKey};

/// How many free subnets flannel collects before picking one at random.
pub const MAX_CANDIDATES: usize = 100;

/// A lease already in etcd, as far as allocation cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingLease {
    pub key: SubnetKey,
    /// The lease's `PublicIP`; None when it is unset (`0.0.0.0`) or the value was unreadable.
    pub public_ip: Option<Ipv4Addr>,
}

impl ExistingLease {
    /// From a listed lease: a `PublicIP` of `0.0.0.0` (unset) never matches a node.
    pub fn from_attrs(key: SubnetKey, attrs: &LeaseAttrs) -> Self {
        ExistingLease {
            key,
            public_ip: Some(attrs.public_ip).filter(|ip| !ip.is_unspecified()),
        }
    }
}

/// What the caller should do to get a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// A lease with our public IP exists and fits the config: renew it with our attrs.
    ReuseOwn(SubnetKey),
    /// A lease with our public IP exists but no longer fits the config: delete it, then list
    /// and call [`choose`] again.
    DeleteIncompatible(SubnetKey),
    /// No lease of ours: create `key`, made of the previous subnets where they fit and are free,
    /// else of subnets picked from the free candidates.
    Create(NewLease),
}

/// The key of a lease to create, and where each part came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewLease {
    pub key: SubnetKey,
    /// The IPv4 part is the previous subnet from subnet.env (else it was picked).
    pub previous_v4: bool,
    /// The IPv6 part (if any) is the previous one from subnet.env.
    pub previous_v6: bool,
}

/// The subnets this node held before, from its subnet.env (`FLANNEL_SUBNET`,
/// `FLANNEL_IPV6_SUBNET`), or the subnets a re-acquire prefers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Previous {
    pub v4: Option<Ipv4Net>,
    pub v6: Option<Ipv6Net>,
}

impl Previous {
    /// Nothing held before.
    pub fn none() -> Self {
        Previous::default()
    }

    /// The parts of `key`.
    pub fn of(key: SubnetKey) -> Self {
        Previous {
            v4: key.v4,
            v6: key.v6,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AllocError {
    /// Every subnet between SubnetMin and SubnetMax is taken.
    #[error("out of subnets")]
    OutOfSubnets,
    /// Every IPv6 subnet between IPv6SubnetMin and IPv6SubnetMax is taken.
    #[error("out of IPv6 subnets")]
    OutOfIpv6Subnets,
    /// etcd keys need an IPv4 part (`EnableIPv4` false).
    #[error(
        "an IPv6-only network (EnableIPv4 false) cannot be leased in etcd: flannel's lease keys \
         always hold an IPv4 subnet; use --kube-subnet-mgr or enable IPv4"
    )]
    NoIpv4,
}

/// Whether an IPv4 subnet fits the config: the configured SubnetLen, aligned, and within
/// SubnetMin..=SubnetMax. Always false when IPv4 is disabled.
pub fn is_compatible(conf: &NetConf, subnet: Ipv4Net) -> bool {
    conf.network.is_some()
        && subnet.prefix_len() == conf.subnet_len
        && subnet.trunc() == subnet
        && subnet.addr() >= conf.subnet_min
        && subnet.addr() <= conf.subnet_max
}

/// Whether an IPv6 subnet fits the config (IPv6SubnetLen, IPv6SubnetMin..=IPv6SubnetMax).
pub fn is_compatible_v6(conf: &NetConf, subnet: Ipv6Net) -> bool {
    match (
        conf.ipv6_network,
        conf.ipv6_subnet_min,
        conf.ipv6_subnet_max,
    ) {
        (Some(_), Some(min), Some(max)) => {
            subnet.prefix_len() == conf.ipv6_subnet_len
                && subnet.trunc() == subnet
                && subnet.addr() >= min
                && subnet.addr() <= max
        }
        _ => false,
    }
}

/// Whether an existing lease key fits the config, as flannel decides for reuse by public IP:
/// the IPv4 part must fit; with IPv6 disabled the key must have no IPv6 part, with IPv6 enabled
/// it must have one that fits. A v4-only lease of a node whose network became dual-stack is
/// therefore deleted and made again, keeping its IPv4 subnet through subnet.env.
pub fn is_key_compatible(conf: &NetConf, key: &SubnetKey) -> bool {
    if !key.v4.is_some_and(|v4| is_compatible(conf, v4)) {
        return false;
    }
    match (conf.enable_ipv6, key.v6) {
        (false, None) => true,
        (false, Some(_)) | (true, None) => false,
        (true, Some(v6)) => is_compatible_v6(conf, v6),
    }
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Whether lease key `key` has an IPv4 part overlapping `b`.
fn key_overlaps(key: &SubnetKey, b: Ipv4Net) -> bool {
    key.v4.is_some_and(|a| overlaps(a, b))
}

fn overlaps_v6(a: Ipv6Net, b: Ipv6Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Up to `limit` free subnets, scanning from SubnetMin upward in SubnetLen steps while
/// ≤ SubnetMax and skipping any subnet that overlaps a taken network. Runs in
/// O(t log t + limit) for t taken networks.
pub fn free_subnets(conf: &NetConf, taken: &[Ipv4Net], limit: usize) -> Vec<Ipv4Net> {
    if conf.network.is_none() {
        return Vec::new();
    }
    let taken = taken
        .iter()
        .map(|n| {
            (
                u128::from(u32::from(n.network())),
                u128::from(u32::from(n.broadcast())),
            )
        })
        .collect();
    free_starts(
        u128::from(u32::from(conf.subnet_min)),
        u128::from(u32::from(conf.subnet_max)),
        u128::from(conf.subnet_size()),
        taken,
        limit,
    )
    .into_iter()
    // Start and length are valid by construction (aligned, SubnetLen ≤ 30).
    .filter_map(|start| u32::try_from(start).ok())
    .filter_map(|start| Ipv4Net::new(Ipv4Addr::from(start), conf.subnet_len).ok())
    .collect()
}

/// [`free_subnets`] for IPv6: IPv6SubnetMin..=IPv6SubnetMax in IPv6SubnetLen steps.
pub fn free_subnets_v6(conf: &NetConf, taken: &[Ipv6Net], limit: usize) -> Vec<Ipv6Net> {
    let (Some(_), Some(min), Some(max)) = (
        conf.ipv6_network,
        conf.ipv6_subnet_min,
        conf.ipv6_subnet_max,
    ) else {
        return Vec::new();
    };
    let Some(size) = 1u128.checked_shl(128 - u32::from(conf.ipv6_subnet_len)) else {
        return Vec::new();
    };
    let taken = taken
        .iter()
        .map(|n| (u128::from(n.network()), u128::from(n.broadcast())))
        .collect();
    free_starts(u128::from(min), u128::from(max), size, taken, limit)
        .into_iter()
        .filter_map(|start| Ipv6Net::new(Ipv6Addr::from(start), conf.ipv6_subnet_len).ok())
        .collect()
}

/// The first addresses of up to `limit` blocks of `size` addresses, aligned to `size`, from
/// `min` while ≤ `max`, that overlap none of the `taken` ranges (`[first, last]`), for both
/// families (u128 holds either; arithmetic saturates at the top of the IPv6 space).
fn free_starts(
    min: u128,
    max: u128,
    size: u128,
    mut taken: Vec<(u128, u128)>,
    limit: usize,
) -> Vec<u128> {
    let mut out = Vec::new();
    if size == 0 || limit == 0 {
        return out;
    }
    taken.sort_unstable();
    let mut cur = min;
    let mut next = 0;
    // The largest end among ranges starting at or before the candidate's last address.
    let mut covered_to: Option<u128> = None;
    while cur <= max && out.len() < limit {
        let last = cur.saturating_add(size - 1);
        while next < taken.len() && taken[next].0 <= last {
            let end = taken[next].1;
            covered_to = Some(covered_to.map_or(end, |c| c.max(end)));
            next += 1;
        }
        let step_from = match covered_to {
            // Jump past the taken range to the next aligned candidate.
            Some(end) if end >= cur => (end / size).checked_add(1),
            _ => {
                out.push(cur);
                (cur / size).checked_add(1)
            }
        };
        match step_from.and_then(|n| n.checked_mul(size)) {
            Some(c) => cur = c,
            None => break,
        }
    }
    out
}

/// Why the previous subnet (from subnet.env) cannot be reused, in one sentence with how to
/// keep it where a config change can: None when it can be (or there is none). A node that
/// loses its subnet this way renumbers its running pods, so the agent logs this (a node moved
/// from kube-flannel, whose first node held `10.244.0.0/24`, below the default SubnetMin).
pub fn previous_refusal(
    conf: &NetConf,
    existing: &[ExistingLease],
    previous: Option<Ipv4Net>,
) -> Option<String> {
    let prev = previous?;
    let Some(network) = conf.network else {
        return Some(format!(
            "the previous subnet {prev} cannot be used: no IPv4 Network"
        ));
    };
    let why = if !network.contains(&prev) {
        format!("is outside Network {network}")
    } else if prev.prefix_len() != conf.subnet_len {
        format!(
            "is a /{} while SubnetLen is {}; set \"SubnetLen\": {} to keep it",
            prev.prefix_len(),
            conf.subnet_len,
            prev.prefix_len()
        )
    } else if prev.addr() < conf.subnet_min {
        format!(
            "is below SubnetMin {} (flannel's default leaves the network's first subnet free); \
             set \"SubnetMin\": \"{}\" in the network config to keep it",
            conf.subnet_min,
            prev.addr()
        )
    } else if prev.addr() > conf.subnet_max {
        format!(
            "is above SubnetMax {}; set \"SubnetMax\": \"{}\" to keep it",
            conf.subnet_max,
            prev.addr()
        )
    } else if let Some(other) = existing.iter().find(|l| key_overlaps(&l.key, prev)) {
        match other.public_ip {
            Some(ip) => format!("is held by the lease of {ip} ({})", other.key),
            None => format!("is held by another lease ({})", other.key),
        }
    } else {
        return None;
    };
    Some(format!(
        "the previous subnet {prev} (from subnet.env) {why}; this node gets a new subnet and its \
         running pods must be restarted"
    ))
}

/// Decides how this node gets its lease (flannel's order):
/// 1. a lease with our public IP: reuse it if it fits the config, else delete it;
/// 2. for each family enabled, the previous subnet from subnet.env if it fits and no lease
///    overlaps it, else one of up to [`MAX_CANDIDATES`] free subnets, `pick(n)` choosing the
///    index (`< n`; a larger value is reduced modulo `n`; IPv4 is picked first, then IPv6);
/// 3. none free: [`AllocError::OutOfSubnets`] (or [`AllocError::OutOfIpv6Subnets`]).
pub fn choose(
    conf: &NetConf,
    existing: &[ExistingLease],
    public_ip: Ipv4Addr,
    previous: Previous,
    pick: &mut dyn FnMut(usize) -> usize,
) -> Result<Choice, AllocError> {
    if let Some(own) = existing.iter().find(|l| l.public_ip == Some(public_ip)) {
        return Ok(if is_key_compatible(conf, &own.key) {
            Choice::ReuseOwn(own.key)
        } else {
            Choice::DeleteIncompatible(own.key)
        });
    }
    if conf.network.is_none() {
        return Err(AllocError::NoIpv4);
    }
    let (v4, previous_v4) = match previous.v4 {
        Some(prev)
            if is_compatible(conf, prev)
                && !existing.iter().any(|l| key_overlaps(&l.key, prev)) =>
        {
            (prev, true)
        }
        _ => {
            let taken: Vec<Ipv4Net> = existing.iter().filter_map(|l| l.key.v4).collect();
            let candidates = free_subnets(conf, &taken, MAX_CANDIDATES);
            if candidates.is_empty() {
                return Err(AllocError::OutOfSubnets);
            }
            (candidates[pick(candidates.len()) % candidates.len()], false)
        }
    };
    let (v6, previous_v6) = if !conf.enable_ipv6 {
        (None, false)
    } else {
        let taken_v6: Vec<Ipv6Net> = existing.iter().filter_map(|l| l.key.v6).collect();
        match previous.v6 {
            Some(prev)
                if is_compatible_v6(conf, prev)
                    && !taken_v6.iter().any(|t| overlaps_v6(*t, prev)) =>
            {
                (Some(prev), true)
            }
            _ => {
                let candidates = free_subnets_v6(conf, &taken_v6, MAX_CANDIDATES);
                if candidates.is_empty() {
                    return Err(AllocError::OutOfIpv6Subnets);
                }
                (
                    Some(candidates[pick(candidates.len()) % candidates.len()]),
                    false,
                )
            }
        }
    };
    Ok(Choice::Create(NewLease {
        key: SubnetKey { v4: Some(v4), v6 },
        previous_v4,
        previous_v6,
    }))
}
