//! Reading `subnet.env` the way its consumers (the CNI plugin, mk-docker-opts.sh) do: plain
//! `KEY=VALUE` lines.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::{Context as _, Result, anyhow, bail};
use ipnet::Ipv4Net;

/// The variables of one `subnet.env` file, in key order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubnetEnv {
    pub vars: BTreeMap<String, String>,
}

impl SubnetEnv {
    /// Parses `KEY=VALUE` lines; blank lines and `#` comments are skipped, anything else
    /// without `=` is an error naming the line.
    pub fn parse(text: &str) -> Result<SubnetEnv> {
        let mut vars = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| anyhow!("line {}: {line:?} is not KEY=VALUE", n + 1))?;
            vars.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        Ok(SubnetEnv { vars })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    fn require(&self, key: &str) -> Result<&str> {
        self.get(key).ok_or_else(|| anyhow!("{key} is missing"))
    }

    /// `FLANNEL_SUBNET` as written: the node's first address with the lease's prefix length
    /// (`10.244.5.1/24`).
    pub fn subnet(&self) -> Result<Ipv4Net> {
        let v = self.require("FLANNEL_SUBNET")?;
        v.parse()
            .with_context(|| format!("FLANNEL_SUBNET={v} is not an IPv4 CIDR"))
    }

    /// The leased network itself (`10.244.5.0/24`), as it appears in routes and etcd keys.
    pub fn lease_network(&self) -> Result<Ipv4Net> {
        Ok(self.subnet()?.trunc())
    }

    /// `FLANNEL_NETWORK`.
    pub fn network(&self) -> Result<Ipv4Net> {
        let v = self.require("FLANNEL_NETWORK")?;
        v.parse()
            .with_context(|| format!("FLANNEL_NETWORK={v} is not an IPv4 CIDR"))
    }

    /// `FLANNEL_MTU`.
    pub fn mtu(&self) -> Result<u32> {
        let v = self.require("FLANNEL_MTU")?;
        let mtu: u32 = v
            .parse()
            .with_context(|| format!("FLANNEL_MTU={v} is not a number"))?;
        if mtu < 576 {
            bail!("FLANNEL_MTU={v} is too small for IPv4");
        }
        Ok(mtu)
    }

    /// The addresses a pod behind `cni0` gets: (`cni0` = subnet .1, pod = subnet .2), both
    /// with the lease's prefix length.
    pub fn pod_addresses(&self) -> Result<(Ipv4Net, Ipv4Net)> {
        let net = self.lease_network()?;
        let mut hosts = net.hosts();
        let (Some(gw), Some(pod)) = (hosts.next(), hosts.next()) else {
            bail!("FLANNEL_SUBNET {net} has no room for a bridge and a pod address");
        };
        let mk = |a: Ipv4Addr| Ipv4Net::new(a, net.prefix_len());
        Ok((mk(gw)?, mk(pod)?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SAMPLE: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\n\
                          FLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n";

    #[test]
    fn parses_flannel_format() {
        let env = SubnetEnv::parse(SAMPLE).unwrap();
        assert_eq!(env.get("FLANNEL_IPMASQ"), Some("false"));
        assert_eq!(env.subnet().unwrap().to_string(), "10.244.5.1/24");
        assert_eq!(env.lease_network().unwrap().to_string(), "10.244.5.0/24");
        assert_eq!(env.network().unwrap().to_string(), "10.244.0.0/16");
        assert_eq!(env.mtu().unwrap(), 1500);
        let (gw, pod) = env.pod_addresses().unwrap();
        assert_eq!(gw.to_string(), "10.244.5.1/24");
        assert_eq!(pod.to_string(), "10.244.5.2/24");
    }

    #[test]
    fn rejects_garbage_with_the_line() {
        let err = SubnetEnv::parse("FLANNEL_MTU=1450\nnonsense\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn names_missing_and_bad_values() {
        let env = SubnetEnv::parse("FLANNEL_SUBNET=10.244.5.1\nFLANNEL_MTU=abc").unwrap();
        assert!(
            env.subnet()
                .unwrap_err()
                .to_string()
                .contains("FLANNEL_SUBNET=10.244.5.1")
        );
        assert!(
            env.mtu()
                .unwrap_err()
                .to_string()
                .contains("FLANNEL_MTU=abc")
        );
        assert!(
            env.network()
                .unwrap_err()
                .to_string()
                .contains("FLANNEL_NETWORK is missing")
        );
    }

    #[test]
    fn tiny_subnet_has_no_pod_room() {
        let env = SubnetEnv::parse("FLANNEL_SUBNET=10.244.5.1/32").unwrap();
        assert!(env.pod_addresses().is_err());
    }
}
