//! Subnet keys: `10.244.1.0-24`, dual-stack `10.244.1.0-24&fd00:10:244:1::-64` (spec §3.2).
use std::fmt;
use std::str::FromStr;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::LeaseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubnetKey {
    pub v4: Ipv4Net,
    pub v6: Option<Ipv6Net>,
}

impl FromStr for SubnetKey {
    type Err = LeaseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let _ = s;
        unimplemented!("net-conf: SubnetKey::from_str")
    }
}

impl fmt::Display for SubnetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        unimplemented!("net-conf: SubnetKey::fmt")
    }
}
