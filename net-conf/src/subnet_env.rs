//! subnet.env text (spec §4.1). Rendering and parsing only; the atomic write is the daemon's.
use ipnet::{Ipv4Net, Ipv6Net};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    pub network: Option<Ipv4Net>,
    /// The lease network (`10.244.1.0/24`); rendered as network+1 (`10.244.1.1/24`).
    pub subnet: Option<Ipv4Net>,
    pub ipv6_network: Option<Ipv6Net>,
    pub ipv6_subnet: Option<Ipv6Net>,
    pub mtu: u32,
    pub ipmasq: bool,
}
