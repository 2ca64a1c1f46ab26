//! The link-layer entries weft writes on its vxlan devices: permanent neighbours (ARP for IPv4,
//! NDP for IPv6) and FDB entries pointing a VTEP MAC at its underlay address.
use std::fmt;
use std::net::IpAddr;

/// A MAC address.
pub type Mac = [u8; 6];

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A permanent neighbour entry on a weft device, IPv4 (ARP) or IPv6 (NDP):
/// `10.244.2.0 lladdr 02:00:00:00:00:02 dev flannel.1 nud permanent`,
/// `fd00:244:0:2:: lladdr 02:00:00:00:00:12 dev flannel-v6.1 nud permanent`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Neigh {
    pub ifindex: u32,
    pub ip: IpAddr,
    pub mac: Mac,
}

impl fmt::Display for Neigh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} lladdr {} dev {}",
            self.ip,
            fmt_mac(&self.mac),
            self.ifindex
        )
    }
}

/// A permanent forwarding entry of a vxlan device, one per remote VTEP MAC, to the VTEP's IPv4
/// or (on `flannel-v6.<VNI>`) IPv6 address:
/// `02:00:00:00:00:02 dev flannel.1 dst 198.18.0.2 self permanent`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fdb {
    pub ifindex: u32,
    pub mac: Mac,
    pub dst: IpAddr,
}

impl fmt::Display for Fdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} dev {} dst {}",
            fmt_mac(&self.mac),
            self.ifindex,
            self.dst
        )
    }
}
