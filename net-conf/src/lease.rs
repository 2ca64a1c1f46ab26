//! Lease values (`LeaseAttrs`) as flannel stores them in etcd (spec §3.2).
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::LeaseError;

/// The JSON value of a `<prefix>/subnets/<key>` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseAttrs {
    pub public_ip: Ipv4Addr,
    pub public_ipv6: Option<Ipv6Addr>,
    /// `BackendType`; empty when absent.
    pub backend_type: String,
    /// `BackendData`, kept as compact JSON text exactly as received; None when absent/null.
    pub backend_data: Option<String>,
    /// `BackendV6Data`, same rules.
    pub backend_v6_data: Option<String>,
}

/// vxlan's `BackendData`: `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanData {
    pub vni: u32,
    pub vtep_mac: [u8; 6],
}

impl LeaseAttrs {
    /// Parses a lease value leniently, as Go's encoding/json does (case-insensitive keys).
    pub fn parse(value: &[u8]) -> Result<Self, LeaseError> {
        let _ = value;
        unimplemented!("net-conf: LeaseAttrs::parse")
    }

    /// The value flannel would write, byte for byte.
    pub fn to_json(&self) -> String {
        unimplemented!("net-conf: LeaseAttrs::to_json")
    }
}
