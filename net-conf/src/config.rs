//! net-conf.json / etcd `<prefix>/config`, parsed and validated as flannel does (spec §2).
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::ConfError;

/// A validated network configuration with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    pub enable_ipv4: bool,
    pub enable_ipv6: bool,
    pub enable_nftables: bool,
    /// The cluster network, host bits masked (flannel parses with ParseCIDR).
    pub network: Option<Ipv4Net>,
    pub subnet_len: u8,
    pub subnet_min: Ipv4Addr,
    pub subnet_max: Ipv4Addr,
    pub ipv6_network: Option<Ipv6Net>,
    pub ipv6_subnet_len: u8,
    pub ipv6_subnet_min: Option<Ipv6Addr>,
    pub ipv6_subnet_max: Option<Ipv6Addr>,
    pub backend: BackendConf,
}

/// `Backend` of the config: the type and its own options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConf {
    Vxlan(VxlanConf),
    IpIp(IpIpConf),
    HostGw,
}

impl BackendConf {
    /// The `Backend.Type` string as flannel writes it into leases (`vxlan`, `ipip`, `host-gw`).
    pub fn type_name(&self) -> &'static str {
        match self {
            BackendConf::Vxlan(_) => "vxlan",
            BackendConf::IpIp(_) => "ipip",
            BackendConf::HostGw => "host-gw",
        }
    }
}

/// vxlan options (spec §2.1); keys case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConf {
    /// `VNI`, default 1.
    pub vni: u32,
    /// `Port`, 0 = kernel default (8472).
    pub port: u16,
    pub gbp: bool,
    pub learning: bool,
    /// `MTU`: the underlay MTU to assume; None = the external interface's.
    pub mtu: Option<u32>,
    pub direct_routing: bool,
}

impl Default for VxlanConf {
    fn default() -> Self {
        VxlanConf { vni: 1, port: 0, gbp: false, learning: false, mtu: None, direct_routing: false }
    }
}

/// ipip options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpIpConf {
    pub direct_routing: bool,
}

/// The result of parsing: the config and the warnings (unknown keys, defaulted backend) to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub conf: NetConf,
    pub warnings: Vec<String>,
}

impl NetConf {
    /// Parses and validates a config text exactly as flannel accepts it.
    pub fn parse(text: &str) -> Result<Parsed, ConfError> {
        let _ = text;
        unimplemented!("net-conf: NetConf::parse")
    }
}
