//! Subnet allocation policy (docs/flannel-compat.md §3.4), pure.
//!
//! The caller lists the leases, asks [`choose`] what to do, does it in etcd (create by
//! compare-and-swap, renew, or delete an incompatible own lease) and, after a delete or a lost
//! race, lists again and asks again. Only IPv4 is allocated here; an IPv6 part of an existing
//! key is checked for compatibility but not chosen.
use std::net::Ipv4Addr;

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
    /// The subnet from the previous subnet.env fits and nobody holds it: create it.
    ReusePrevious(Ipv4Net),
    /// A free subnet picked from the candidates: create it.
    Allocate(Ipv4Net),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AllocError {
    /// Every subnet between SubnetMin and SubnetMax is taken.
    #[error("out of subnets")]
    OutOfSubnets,
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
/// the IPv4 part must fit; with IPv6 disabled the key must have no IPv6 part; with IPv6 enabled
/// an IPv6 part, when present, must fit (weft does not allocate IPv6 yet, so a v4-only key
/// stays usable).
pub fn is_key_compatible(conf: &NetConf, key: &SubnetKey) -> bool {
    if !is_compatible(conf, key.v4) {
        return false;
    }
    match (conf.enable_ipv6, key.v6) {
        (false, None) => true,
        (false, Some(_)) => false,
        (true, None) => true,
        (true, Some(v6)) => is_compatible_v6(conf, v6),
    }
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Up to `limit` free subnets, scanning from SubnetMin upward in SubnetLen steps while
/// ≤ SubnetMax and skipping any subnet that overlaps a taken network. Runs in
/// O(t log t + limit) for t taken networks.
pub fn free_subnets(conf: &NetConf, taken: &[Ipv4Net], limit: usize) -> Vec<Ipv4Net> {
    let mut out = Vec::new();
    if conf.network.is_none() || limit == 0 {
        return out;
    }
    // Taken address ranges [start, end], sorted by start (u64: no overflow at 255.255.255.255).
    let mut ranges: Vec<(u64, u64)> = taken
        .iter()
        .map(|n| {
            (
                u64::from(u32::from(n.network())),
                u64::from(u32::from(n.broadcast())),
            )
        })
        .collect();
    ranges.sort_unstable();

    let size = conf.subnet_size();
    let max = u64::from(u32::from(conf.subnet_max));
    let mut cur = u64::from(u32::from(conf.subnet_min));
    let mut next = 0;
    // The largest end among ranges starting at or before the candidate's last address.
    let mut covered_to: Option<u64> = None;
    while cur <= max && out.len() < limit {
        let last = cur + size - 1;
        while next < ranges.len() && ranges[next].0 <= last {
            let end = ranges[next].1;
            covered_to = Some(covered_to.map_or(end, |c: u64| c.max(end)));
            next += 1;
        }
        match covered_to {
            Some(end) if end >= cur => {
                // Jump past the taken range to the next aligned candidate.
                cur = (end / size + 1) * size;
            }
            _ => {
                // Start and length are valid by construction (aligned, SubnetLen ≤ 30).
                if let Ok(n) = Ipv4Net::new(Ipv4Addr::from(cur as u32), conf.subnet_len) {
                    out.push(n);
                }
                cur += size;
            }
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
    } else if let Some(other) = existing.iter().find(|l| overlaps(l.key.v4, prev)) {
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
/// 2. the previous subnet from subnet.env, if it fits and no lease overlaps it;
/// 3. one of up to [`MAX_CANDIDATES`] free subnets, `pick(n)` choosing the index (`< n`; a
///    larger value is reduced modulo `n`);
/// 4. none free: [`AllocError::OutOfSubnets`].
pub fn choose(
    conf: &NetConf,
    existing: &[ExistingLease],
    public_ip: Ipv4Addr,
    previous: Option<Ipv4Net>,
    pick: &mut dyn FnMut(usize) -> usize,
) -> Result<Choice, AllocError> {
    if let Some(own) = existing.iter().find(|l| l.public_ip == Some(public_ip)) {
        return Ok(if is_key_compatible(conf, &own.key) {
            Choice::ReuseOwn(own.key)
        } else {
            Choice::DeleteIncompatible(own.key)
        });
    }
    if let Some(prev) = previous {
        if is_compatible(conf, prev) && !existing.iter().any(|l| overlaps(l.key.v4, prev)) {
            return Ok(Choice::ReusePrevious(prev));
        }
    }
    let taken: Vec<Ipv4Net> = existing.iter().map(|l| l.key.v4).collect();
    let candidates = free_subnets(conf, &taken, MAX_CANDIDATES);
    if candidates.is_empty() {
        return Err(AllocError::OutOfSubnets);
    }
    let i = pick(candidates.len()) % candidates.len();
    Ok(Choice::Allocate(candidates[i]))
}
