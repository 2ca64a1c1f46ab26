//! Assembling the report from what was read (pure).

use std::collections::BTreeMap;

use backends::plan::KernelState;
use backends::{Desired, ExternalInterface};
use net_conf::NetConf;
use serde_json::Value;

use super::{
    ConfigInfo, Counts, DeviceInfo, FoundBy, LeaseInfo, MalformedInfo, NodeInfo, Report, SCHEMA,
    SkippedInfo, classify,
};
use crate::lease::etcd::registry::Snapshot;

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
