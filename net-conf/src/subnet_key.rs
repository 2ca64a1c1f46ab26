//! Subnet keys: `10.244.1.0-24`, dual-stack `10.244.1.0-24&fd00:10:244:1::-64`
//! (docs/flannel-compat.md §3.2), and IPv6-only `fd00:10:244:1::-64`.
//!
//! An IPv6-only key exists only in kube mode (a Node whose one podCIDR is IPv6): flannel keeps
//! no such key in etcd, and [`SubnetKey::from_etcd_key`] refuses one. Its text is the IPv6 part
//! alone (flanneld would print an empty `0.0.0.0-0&` before it, which nothing reads).
//!
//! Parsing is strict (the whole segment must be a key; flannel's own regex is anchored only at
//! the end): bad prefix lengths, non-numbers, trailing junk and host bits are refused, so a
//! listing can skip such keys with a warning.
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::LeaseError;

/// Characters of a bad key shown in an error (keys can be very long).
const MAX_SHOWN: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubnetKey {
    /// `None` only in an IPv6-only key (then `v6` is set): at least one part is always there.
    pub v4: Option<Ipv4Net>,
    pub v6: Option<Ipv6Net>,
}

impl SubnetKey {
    /// An IPv4-only key.
    pub fn new(v4: Ipv4Net) -> Self {
        SubnetKey {
            v4: Some(v4),
            v6: None,
        }
    }

    /// A dual-stack key.
    pub fn dual(v4: Ipv4Net, v6: Ipv6Net) -> Self {
        SubnetKey {
            v4: Some(v4),
            v6: Some(v6),
        }
    }

    /// An IPv6-only key (kube mode only).
    pub fn v6_only(v6: Ipv6Net) -> Self {
        SubnetKey {
            v4: None,
            v6: Some(v6),
        }
    }

    /// The key's subnets: the IPv4 one if any, then the IPv6 one if any.
    pub fn nets(&self) -> impl Iterator<Item = ipnet::IpNet> + use<> {
        self.v4
            .map(ipnet::IpNet::V4)
            .into_iter()
            .chain(self.v6.map(ipnet::IpNet::V6))
    }

    /// The subnet that names the key in logs and orders peers: the IPv4 one, else the IPv6 one.
    pub fn first(&self) -> ipnet::IpNet {
        self.nets()
            .next()
            .unwrap_or(ipnet::IpNet::V4(Ipv4Net::default()))
    }

    /// Parses a full etcd key `<prefix>/subnets/<key>`; `prefix` is the etcd prefix
    /// (`/coreos.com/network`, a trailing `/` is allowed).
    pub fn from_etcd_key(key: &str, prefix: &str) -> Result<SubnetKey, LeaseError> {
        let dir = Self::etcd_dir(prefix);
        match key.strip_prefix(&dir) {
            Some(segment) => match segment.parse::<SubnetKey>() {
                Ok(k) if k.v4.is_none() => Err(key_error(
                    key,
                    "an IPv6-only key: flannel's etcd keys always start with the IPv4 subnet",
                )),
                Ok(k) => Ok(k),
                Err(LeaseError::Key { reason, .. }) => Err(LeaseError::Key {
                    key: crate::excerpt(key, MAX_SHOWN),
                    reason,
                }),
                Err(other) => Err(other),
            },
            None => Err(LeaseError::Key {
                key: crate::excerpt(key, MAX_SHOWN),
                reason: format!("not under {dir}"),
            }),
        }
    }

    /// The directory of all lease keys, `<prefix>/subnets/` (with the trailing `/`, so a list
    /// or watch with it as prefix cannot pick up a sibling such as `<prefix>/subnets-old`).
    pub fn etcd_dir(prefix: &str) -> String {
        format!("{}/subnets/", prefix.trim_end_matches('/'))
    }

    /// The full etcd key `<prefix>/subnets/<key>`.
    pub fn etcd_key(&self, prefix: &str) -> String {
        format!("{}{self}", Self::etcd_dir(prefix))
    }
}

impl From<Ipv4Net> for SubnetKey {
    fn from(v4: Ipv4Net) -> Self {
        SubnetKey::new(v4)
    }
}

fn key_error(key: &str, reason: impl Into<String>) -> LeaseError {
    LeaseError::Key {
        key: crate::excerpt(key, MAX_SHOWN),
        reason: crate::excerpt(&reason.into(), MAX_SHOWN),
    }
}

/// Splits `addr-len` at the last `-` and parses the decimal length (digits only, ≤ `max`).
fn split_len<'a>(key: &str, part: &'a str, max: u8) -> Result<(&'a str, u8), LeaseError> {
    let (addr, len) = part
        .rsplit_once('-')
        .ok_or_else(|| key_error(key, format!("{part:?} has no -<prefix length>")))?;
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(key_error(
            key,
            format!("prefix length {len:?} is not a number"),
        ));
    }
    let n: u16 = len
        .parse()
        .map_err(|_| key_error(key, format!("prefix length {len:?} is not a number")))?;
    if n > u16::from(max) {
        return Err(key_error(
            key,
            format!("prefix length {n} is greater than {max}"),
        ));
    }
    Ok((addr, n as u8))
}

impl FromStr for SubnetKey {
    type Err = LeaseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (v4_part, v6_part) = match s.split_once('&') {
            Some((a, b)) => (Some(a), Some(b)),
            // A single part with a colon is an IPv6-only key.
            None if s.contains(':') => (None, Some(s)),
            None => (Some(s), None),
        };
        let v4 = v4_part.map(|part| parse_v4(s, part)).transpose()?;
        let v6 = match v6_part {
            None => None,
            Some(part) => {
                let (addr, len) = split_len(s, part, 128)?;
                // flannel writes (and its parser accepts) only lower-case hex and colons.
                if addr.is_empty()
                    || !addr
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b':')
                {
                    return Err(key_error(
                        s,
                        format!("{addr:?} is not a lower-case IPv6 address"),
                    ));
                }
                let addr: Ipv6Addr = addr
                    .parse()
                    .map_err(|_| key_error(s, format!("{addr:?} is not an IPv6 address")))?;
                let v6 = Ipv6Net::new(addr, len).map_err(|e| key_error(s, e.to_string()))?;
                if v6.trunc() != v6 {
                    return Err(key_error(
                        s,
                        format!("{v6} has host bits set (the subnet is {})", v6.trunc()),
                    ));
                }
                Some(v6)
            }
        };
        Ok(SubnetKey { v4, v6 })
    }
}

/// The IPv4 part of key `s`: `10.244.1.0-24`.
fn parse_v4(s: &str, part: &str) -> Result<Ipv4Net, LeaseError> {
    let (addr, len) = split_len(s, part, 32)?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| key_error(s, format!("{addr:?} is not an IPv4 address")))?;
    let v4 = Ipv4Net::new(addr, len).map_err(|e| key_error(s, e.to_string()))?;
    if v4.trunc() != v4 {
        return Err(key_error(
            s,
            format!("{v4} has host bits set (the subnet is {})", v4.trunc()),
        ));
    }
    Ok(v4)
}

impl fmt::Display for SubnetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(v4) = self.v4 {
            write!(f, "{}-{}", v4.addr(), v4.prefix_len())?;
        }
        if let Some(v6) = self.v6 {
            let sep = if self.v4.is_some() { "&" } else { "" };
            // Rust prints IPv6 in RFC 5952 form (compressed, lower case), as Go does.
            write!(f, "{sep}{}-{}", v6.addr(), v6.prefix_len())?;
        }
        Ok(())
    }
}
