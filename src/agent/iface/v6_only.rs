//! The external interface of an IPv6-only network (`EnableIPv4: false`, kube mode), pure like
//! the IPv4 rules in the parent module, whose order it follows (docs/flannel-compat.md §1.1):
//! each `--iface` value (an IPv6 address selects the interface holding it, else a name), each
//! `--iface-regex` (matched against every interface's usable IPv6 addresses first, then against
//! names), then an IPv6 `--iface-can-reach`; the first match wins. With none of these flags:
//! `--public-ipv6` selects the interface holding it, else the interface of the IPv6 default
//! route. Its address is then chosen by [`select_v6`] (never link-local, temporary or
//! deprecated). `--public-ip` plays no part: there is no IPv4 side.
use std::fmt::{self, Write as _};
use std::net::Ipv6Addr;

use regex::Regex;

use super::{IfaceError, Request6, Selection, select_v6, v6::CandidateAddr6};

/// One interface with its IPv6 addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface6 {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    pub addrs: Vec<CandidateAddr6>,
}

/// What the choice needs besides the interfaces.
#[derive(Debug, Clone, Copy)]
pub struct Request6Only<'a> {
    pub iface: &'a [String],
    pub iface_regex: &'a [Regex],
    /// The output interface and source address of the route to an IPv6 `--iface-can-reach`.
    pub can_reach: Option<(u32, Option<Ipv6Addr>)>,
    pub public_ipv6: Option<Ipv6Addr>,
    /// Output interface of the IPv6 default route (`::/0`) of the main table, if any.
    pub default_route6_ifindex: Option<u32>,
}

/// Chooses the interface and its IPv6 side; the IPv4 fields of the result are empty
/// (`0.0.0.0`, no prefixes): [`backends::ExternalInterface::has_v4`] is false.
pub fn select_v6_only(cands: &[Iface6], req: &Request6Only<'_>) -> Result<Selection, IfaceError> {
    let explicit = !req.iface.is_empty() || !req.iface_regex.is_empty() || req.can_reach.is_some();
    let (cand, prefer) = if explicit {
        select_explicit(cands, req)?
    } else if let Some(ip) = req.public_ipv6 {
        let cand = holder_of(cands, ip).ok_or_else(|| IfaceError::PublicIpv6NotLocal {
            ip,
            seen: Seen(cands).to_string(),
        })?;
        (cand, Some(ip))
    } else {
        let index = req
            .default_route6_ifindex
            .ok_or_else(|| IfaceError::NoDefaultRoute6Only {
                seen: Seen(cands).to_string(),
            })?;
        let cand = cands.iter().find(|c| c.index == index).ok_or_else(|| {
            IfaceError::DefaultRouteIfaceMissing {
                index,
                seen: Seen(cands).to_string(),
            }
        })?;
        (cand, None)
    };
    if cand.mtu == 0 {
        return Err(IfaceError::ZeroMtu {
            name: cand.name.clone(),
        });
    }
    if !cand.up {
        tracing::warn!(interface = %cand.name, "the chosen external interface is down");
    }
    let v6 = select_v6(
        cand.index,
        &cand.name,
        &cand.addrs,
        &Request6 {
            by_default_route: false,
            default_route6_ifindex: req.default_route6_ifindex,
            public_ipv6: req.public_ipv6,
            prefer,
        },
        &|_| None,
    )?;
    tracing::info!(
        "Using interface with name {} and address {}",
        cand.name,
        v6.iface_addr
    );
    Ok(Selection {
        index: cand.index,
        name: cand.name.clone(),
        iface_addr: std::net::Ipv4Addr::UNSPECIFIED,
        ext_addr: std::net::Ipv4Addr::UNSPECIFIED,
        mtu: cand.mtu,
        prefixes: Vec::new(),
        v6: Some(v6),
    })
}

/// `--iface`, then `--iface-regex`, then `--iface-can-reach`: the interface and the address it
/// was found by (if any).
fn select_explicit<'c>(
    cands: &'c [Iface6],
    req: &Request6Only<'_>,
) -> Result<(&'c Iface6, Option<Ipv6Addr>), IfaceError> {
    let mut tried: Vec<String> = Vec::new();
    let mut note = |what: String, why: &dyn fmt::Display| {
        tracing::info!("Could not find valid interface matching {what}: {why}");
        tried.push(format!("{what}: {why}"));
    };
    for value in req.iface {
        let what = format!("--iface {value}");
        let found = match value.parse::<Ipv6Addr>() {
            Ok(ip) => holder_of(cands, ip).map(|c| (c, Some(ip))),
            Err(_) => cands.iter().find(|c| c.name == *value).map(|c| (c, None)),
        };
        match found {
            None => note(what, &"no interface holds this address or has this name"),
            Some((c, _)) if c.mtu == 0 => note(what, &format!("interface {} has MTU 0", c.name)),
            Some(found) => return Ok(found),
        }
    }
    for re in req.iface_regex {
        let what = format!("--iface-regex {}", re.as_str());
        let by_addr = cands.iter().filter(|c| c.mtu != 0).find_map(|c| {
            c.addrs
                .iter()
                .filter(|a| !a.deprecated && !a.temporary)
                .find(|a| re.is_match(&a.addr.to_string()))
                .map(|a| (c, Some(a.addr)))
        });
        if let Some(found) = by_addr {
            return Ok(found);
        }
        match cands.iter().find(|c| c.mtu != 0 && re.is_match(&c.name)) {
            Some(c) => return Ok((c, None)),
            None => note(what, &"matches no IPv6 address and no name"),
        }
    }
    if let Some((oif, src)) = req.can_reach {
        match cands.iter().find(|c| c.index == oif) {
            Some(c) if c.mtu != 0 => return Ok((c, src)),
            Some(c) => note(
                "--iface-can-reach".into(),
                &format!("interface {} has MTU 0", c.name),
            ),
            None => note(
                "--iface-can-reach".into(),
                &format!("its route uses interface index {oif}, which was not seen"),
            ),
        }
    }
    Err(IfaceError::NoMatch {
        tried: tried.join("; "),
        seen: Seen(cands).to_string(),
    })
}

fn holder_of(cands: &[Iface6], ip: Ipv6Addr) -> Option<&Iface6> {
    cands.iter().find(|c| c.addrs.iter().any(|a| a.addr == ip))
}

/// The interfaces seen, on one line, for error messages.
struct Seen<'a>(&'a [Iface6]);

impl fmt::Display for Seen<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let mut addrs = String::new();
            for a in &c.addrs {
                if !addrs.is_empty() {
                    addrs.push(' ');
                }
                let _ = write!(addrs, "{}/{}", a.addr, a.prefix_len);
            }
            if addrs.is_empty() {
                addrs.push_str("no IPv6 address");
            }
            write!(f, "{} (index {}, mtu {}, {addrs})", c.name, c.index, c.mtu)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;

    fn a(s: &str) -> CandidateAddr6 {
        let (ip, len) = s.split_once('/').unwrap();
        CandidateAddr6 {
            addr: ip.parse().unwrap(),
            prefix_len: len.parse().unwrap(),
            permanent: true,
            deprecated: false,
            temporary: false,
        }
    }

    fn host() -> Vec<Iface6> {
        let c = |index, name: &str, addrs: &[&str]| Iface6 {
            index,
            name: name.into(),
            mtu: 1500,
            up: true,
            addrs: addrs.iter().map(|s| a(s)).collect(),
        };
        vec![
            c(1, "lo", &["::1/128"]),
            c(2, "eth0", &["fe80::2/64", "fd00:18::2/64"]),
            c(
                3,
                "eth1",
                &["fe80::3/64", "fd00:19::3/64", "fd00:19::33/64"],
            ),
        ]
    }

    fn req<'a>(iface: &'a [String], re: &'a [Regex]) -> Request6Only<'a> {
        Request6Only {
            iface,
            iface_regex: re,
            can_reach: None,
            public_ipv6: None,
            default_route6_ifindex: Some(2),
        }
    }

    fn ip(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn the_ipv6_default_route_chooses_without_flags() {
        let got = select_v6_only(&host(), &req(&[], &[])).unwrap();
        assert_eq!((got.index, got.name.as_str()), (2, "eth0"));
        assert!(got.iface_addr.is_unspecified() && got.ext_addr.is_unspecified());
        assert!(got.prefixes.is_empty());
        let v6 = got.v6.unwrap();
        assert_eq!(v6.iface_addr, ip("fd00:18::2"));
        assert_eq!(v6.ext_addr, ip("fd00:18::2"));
        assert_eq!(v6.prefixes, ["fd00:18::/64".parse().unwrap()]);
        let ext: backends::ExternalInterface =
            select_v6_only(&host(), &req(&[], &[])).unwrap().into();
        assert!(!ext.has_v4());
        // No IPv6 default route and no flag: an error that says what to do.
        let none = Request6Only {
            default_route6_ifindex: None,
            ..req(&[], &[])
        };
        let e = select_v6_only(&host(), &none).unwrap_err().to_string();
        assert!(
            e.contains("no IPv6 default route") && e.contains("--iface"),
            "{e}"
        );
    }

    #[test]
    fn flags_choose_in_flannels_order() {
        let names = ["eth1".to_string()];
        let got = select_v6_only(&host(), &req(&names, &[])).unwrap();
        assert_eq!(got.name, "eth1");
        assert_eq!(got.v6.unwrap().iface_addr, ip("fd00:19::3"));
        // An address picks its holder and is the address used.
        let by_ip = ["fd00:19::33".to_string()];
        let got = select_v6_only(&host(), &req(&by_ip, &[])).unwrap();
        assert_eq!(got.v6.unwrap().iface_addr, ip("fd00:19::33"));
        // A regex over addresses first, then names.
        let re = [Regex::new("^fd00:19::33$").unwrap()];
        let got = select_v6_only(&host(), &req(&[], &re)).unwrap();
        assert_eq!(got.v6.unwrap().iface_addr, ip("fd00:19::33"));
        let re = [Regex::new("^eth0$").unwrap()];
        assert_eq!(
            select_v6_only(&host(), &req(&[], &re)).unwrap().name,
            "eth0"
        );
        // --iface-can-reach: the route's interface and source.
        let reach = Request6Only {
            can_reach: Some((3, Some(ip("fd00:19::33")))),
            default_route6_ifindex: None,
            ..req(&[], &[])
        };
        let got = select_v6_only(&host(), &reach).unwrap();
        assert_eq!(got.v6.unwrap().iface_addr, ip("fd00:19::33"));
        // Nothing matches: flannel's error, with what was tried and seen.
        let bad = ["eth9".to_string()];
        let e = select_v6_only(&host(), &req(&bad, &[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("Failed to find interface to use that matches")
                && e.contains("--iface eth9")
                && e.contains("eth1 (index 3"),
            "{e}"
        );
    }

    #[test]
    fn public_ipv6_picks_its_holder_or_is_refused() {
        let public = Request6Only {
            public_ipv6: Some(ip("fd00:19::3")),
            ..req(&[], &[])
        };
        let got = select_v6_only(&host(), &public).unwrap();
        assert_eq!(got.name, "eth1");
        let v6 = got.v6.unwrap();
        assert_eq!(
            (v6.iface_addr, v6.ext_addr),
            (ip("fd00:19::3"), ip("fd00:19::3"))
        );
        let elsewhere = Request6Only {
            public_ipv6: Some(ip("2001:db8::9")),
            ..req(&[], &[])
        };
        let e = select_v6_only(&host(), &elsewhere).unwrap_err().to_string();
        assert!(e.contains("--public-ipv6 2001:db8::9"), "{e}");
        // With an interface flag, --public-ipv6 is only published (NAT).
        let names = ["eth0".to_string()];
        let nat = Request6Only {
            public_ipv6: Some(ip("2001:db8::9")),
            ..req(&names, &[])
        };
        let v6 = select_v6_only(&host(), &nat).unwrap().v6.unwrap();
        assert_eq!(
            (v6.iface_addr, v6.ext_addr),
            (ip("fd00:18::2"), ip("2001:db8::9"))
        );
    }
}
