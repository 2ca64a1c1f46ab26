//! subnet.env text (docs/flannel-compat.md §4.1). Rendering and parsing only; the atomic write is
//! the daemon's.
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    pub network: Option<Ipv4Net>,
    /// The lease network (`10.244.1.0/24`); rendered as network+1 (`10.244.1.1/24`).
    pub subnet: Option<Ipv4Net>,
    pub ipv6_network: Option<Ipv6Net>,
    pub ipv6_subnet: Option<Ipv6Net>,
    /// Further networks of a `FLANNEL_NETWORK` that lists several, comma-separated (flannel's
    /// CNI plugin routes each of them); weft writes one.
    pub more_networks: Vec<Ipv4Net>,
    /// The same for `FLANNEL_IPV6_NETWORK`.
    pub more_ipv6_networks: Vec<Ipv6Net>,
    pub mtu: u32,
    pub ipmasq: bool,
}

/// A subnet.env text that readers (the flannel CNI plugin, weft itself) cannot use.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SubnetEnvError {
    /// Required keys are absent; the text is the CNI plugin's `<file> is missing <keys>`.
    #[error("subnet.env is missing {}", .keys.join(", "))]
    Missing { keys: Vec<String> },
    /// A key has a value that does not parse.
    #[error("subnet.env line {line}: {key}={value:?}: {reason}")]
    Value {
        line: usize,
        key: String,
        value: String,
        reason: String,
    },
}

impl SubnetEnv {
    /// The file text, in flannel's key order:
    /// `FLANNEL_NETWORK`, `FLANNEL_SUBNET`, `FLANNEL_IPV6_NETWORK`, `FLANNEL_IPV6_SUBNET`,
    /// `FLANNEL_MTU`, `FLANNEL_IPMASQ`; each address line only when it is set. The subnets are
    /// written as the lease's network address + 1 with the lease's prefix length.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(200);
        // Writing to a String cannot fail.
        if let Some(n) = self.network {
            let _ = writeln!(out, "FLANNEL_NETWORK={n}");
        }
        if let Some(s) = self.subnet {
            let first = Ipv4Addr::from(u32::from(s.network()).wrapping_add(1));
            let _ = writeln!(out, "FLANNEL_SUBNET={first}/{}", s.prefix_len());
        }
        if let Some(n) = self.ipv6_network {
            let _ = writeln!(out, "FLANNEL_IPV6_NETWORK={n}");
        }
        if let Some(s) = self.ipv6_subnet {
            let first = Ipv6Addr::from(u128::from(s.network()).wrapping_add(1));
            let _ = writeln!(out, "FLANNEL_IPV6_SUBNET={first}/{}", s.prefix_len());
        }
        let _ = writeln!(out, "FLANNEL_MTU={}", self.mtu);
        let _ = writeln!(out, "FLANNEL_IPMASQ={}", self.ipmasq);
        out
    }

    /// Parses a subnet.env text as the flannel CNI plugin does: `KEY=VALUE` lines split on the
    /// first `=`, blank lines and `#` comments ignored, unknown keys ignored. Required: a network
    /// (`FLANNEL_NETWORK` or `FLANNEL_IPV6_NETWORK`), a subnet (`FLANNEL_SUBNET` or
    /// `FLANNEL_IPV6_SUBNET`), `FLANNEL_MTU`, `FLANNEL_IPMASQ`. Subnets are stored as their
    /// network (`10.244.1.1/24` → `10.244.1.0/24`).
    pub fn parse(text: &str) -> Result<SubnetEnv, SubnetEnvError> {
        let mut env = SubnetEnv {
            network: None,
            subnet: None,
            ipv6_network: None,
            ipv6_subnet: None,
            more_networks: Vec::new(),
            more_ipv6_networks: Vec::new(),
            mtu: 0,
            ipmasq: false,
        };
        let mut have_mtu = false;
        let mut have_ipmasq = false;
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let Some((key, value)) = split_line(line) else {
                continue;
            };
            let bad = |reason: &str| SubnetEnvError::Value {
                line: line_no,
                key: key.to_string(),
                value: value.to_string(),
                reason: reason.to_string(),
            };
            match key {
                // Several networks, comma-separated, as flannel's CNI plugin reads them.
                "FLANNEL_NETWORK" => {
                    let mut nets = split_list(value).map(|v| {
                        v.parse::<Ipv4Net>()
                            .map_err(|_| bad(&list_reason(value, v, "not an IPv4 CIDR")))
                    });
                    env.network = nets.next().transpose()?;
                    env.more_networks = nets.collect::<Result<_, _>>()?;
                }
                "FLANNEL_SUBNET" => {
                    let n: Ipv4Net = value.parse().map_err(|_| bad("not an IPv4 CIDR"))?;
                    env.subnet = Some(n.trunc());
                }
                "FLANNEL_IPV6_NETWORK" => {
                    let mut nets = split_list(value).map(|v| {
                        v.parse::<Ipv6Net>()
                            .map_err(|_| bad(&list_reason(value, v, "not an IPv6 CIDR")))
                    });
                    env.ipv6_network = nets.next().transpose()?;
                    env.more_ipv6_networks = nets.collect::<Result<_, _>>()?;
                }
                "FLANNEL_IPV6_SUBNET" => {
                    let n: Ipv6Net = value.parse().map_err(|_| bad("not an IPv6 CIDR"))?;
                    env.ipv6_subnet = Some(n.trunc());
                }
                "FLANNEL_MTU" => {
                    env.mtu = value.parse().map_err(|_| bad("not an MTU"))?;
                    have_mtu = true;
                }
                "FLANNEL_IPMASQ" => {
                    env.ipmasq = parse_go_bool(value).ok_or_else(|| bad("not a boolean"))?;
                    have_ipmasq = true;
                }
                _ => {}
            }
        }
        let mut missing = Vec::new();
        if env.network.is_none() && env.ipv6_network.is_none() {
            missing.push("FLANNEL_NETWORK or FLANNEL_IPV6_NETWORK".to_string());
        }
        if env.subnet.is_none() && env.ipv6_subnet.is_none() {
            missing.push("FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET".to_string());
        }
        if !have_mtu {
            missing.push("FLANNEL_MTU".to_string());
        }
        if !have_ipmasq {
            missing.push("FLANNEL_IPMASQ".to_string());
        }
        if missing.is_empty() {
            Ok(env)
        } else {
            Err(SubnetEnvError::Missing { keys: missing })
        }
    }
}

/// `reason`, naming the bad item when the value is a list.
fn list_reason(value: &str, item: &str, reason: &str) -> String {
    if value.contains(',') {
        format!("{item:?} is {reason}")
    } else {
        reason.to_string()
    }
}

/// The items of a comma-separated value, trimmed, empty ones dropped.
fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|v| !v.is_empty())
}

/// `KEY=VALUE` → (key, value), both trimmed; None for blank lines, comments and lines without
/// `=`.
fn split_line(line: &str) -> Option<(&str, &str)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (key, value) = line.split_once('=')?;
    Some((key.trim(), value.trim()))
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// The last value of `key` in a subnet.env text, as flanneld reads its previous file at start
/// (godotenv: an optional `export ` prefix and surrounding quotes are tolerated). A
/// comma-separated list with more than one entry counts as no value.
fn single_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let mut found = None;
    for line in text.lines() {
        let Some((k, v)) = split_line(line) else {
            continue;
        };
        let k = k.strip_prefix("export ").map(str::trim).unwrap_or(k);
        if k == key {
            found = Some(v);
        }
    }
    let v = found?;
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(v);
    let mut entries = v.split(',').map(str::trim).filter(|e| !e.is_empty());
    let first = entries.next()?;
    if entries.next().is_some() {
        return None;
    }
    Some(first)
}

/// The subnet this node held before (`FLANNEL_SUBNET=10.244.1.1/24` → `10.244.1.0/24`), for
/// lease reuse at start. A list of several subnets, or anything unparsable, gives None.
pub fn previous_subnet(text: &str) -> Option<Ipv4Net> {
    single_value(text, "FLANNEL_SUBNET")?
        .parse::<Ipv4Net>()
        .ok()
        .map(|n| n.trunc())
}

/// The IPv6 subnet this node held before (`FLANNEL_IPV6_SUBNET`), same rules.
pub fn previous_ipv6_subnet(text: &str) -> Option<Ipv6Net> {
    single_value(text, "FLANNEL_IPV6_SUBNET")?
        .parse::<Ipv6Net>()
        .ok()
        .map(|n| n.trunc())
}

/// The cluster network of the previous run (`FLANNEL_NETWORK`), same rules.
pub fn previous_network(text: &str) -> Option<Ipv4Net> {
    single_value(text, "FLANNEL_NETWORK")?
        .parse::<Ipv4Net>()
        .ok()
        .map(|n| n.trunc())
}
