//! Choosing the external interface (flannel's `--iface`, `--iface-regex`, `--iface-can-reach`,
//! `--public-ip` rules), as a pure function over a snapshot of the host's interfaces so every
//! rule is unit-tested. The caller gathers the snapshot (links + IPv4 addresses), the default
//! route's interface and, for `--iface-can-reach`, the result of `ip route get <ip>`.
//!
//! Order, as flannel's: each `--iface` value in turn (an IP selects the interface holding it,
//! with that IP as address; otherwise a name), then each `--iface-regex` in turn (matched
//! against every interface's addresses first, then against names), then `--iface-can-reach`;
//! the first match wins and a non-match of all of them is an error. With none of these flags:
//! `--public-ip` selects the interface holding it, else the default-route interface is used.
//!
//! A dual-stack network adds the IPv6 side of the chosen interface (`v6.rs`); an IPv6-only
//! network chooses by IPv6 alone (`v6_only.rs`).

mod v6;
mod v6_only;

pub use v6::{CandidateAddr6, Request6, Selection6, select_v6};
pub use v6_only::{Iface6, Request6Only, select_v6_only};

use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use regex::Regex;

/// One interface of the host, as seen in a netlink dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceCandidate {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// Administratively and operationally up (informational: flannel does not skip down links,
    /// but weft warns about choosing one).
    pub up: bool,
    /// IPv4 addresses in the kernel's order.
    pub addrs: Vec<CandidateAddr>,
}

/// One IPv4 address of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CandidateAddr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    /// `IFA_F_PERMANENT` (static), as opposed to dynamic (DHCP, with a lifetime).
    pub permanent: bool,
    /// `IFA_F_DEPRECATED`: never chosen.
    pub deprecated: bool,
    /// Scope global (as opposed to link or host scope).
    pub scope_global: bool,
}

/// The chosen external interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub index: u32,
    pub name: String,
    /// The interface's address used for the overlay (flannel's `IfaceAddr`).
    pub iface_addr: Ipv4Addr,
    /// The address other nodes reach this one at (flannel's `ExtAddr`, the lease's PublicIP):
    /// `--public-ip` if given, else `iface_addr`.
    pub ext_addr: Ipv4Addr,
    pub mtu: u32,
    /// The interface's IPv4 networks (each address masked to its prefix), in kernel order,
    /// without duplicates.
    pub prefixes: Vec<Ipv4Net>,
    /// The IPv6 side, for a dual-stack network ([`select_v6`]).
    pub v6: Option<Selection6>,
}

impl From<Selection> for backends::ExternalInterface {
    fn from(s: Selection) -> Self {
        backends::ExternalInterface {
            name: s.name,
            index: s.index,
            iface_addr: s.iface_addr,
            ext_addr: s.ext_addr,
            mtu: s.mtu,
            prefixes: s.prefixes,
            v6: s.v6.map(|v6| backends::ExternalV6 {
                iface_addr: v6.iface_addr,
                ext_addr: v6.ext_addr,
                prefixes: v6.prefixes,
            }),
        }
    }
}

/// What the flags ask for.
#[derive(Debug, Clone, Copy)]
pub struct IfaceRequest<'a> {
    /// `--iface` values, in order.
    pub iface: &'a [String],
    /// `--iface-regex` values, in order.
    pub iface_regex: &'a [Regex],
    /// `--iface-can-reach`, resolved by the caller: the route's output interface index and its
    /// preferred source address. `None` when the flag is not given (a failed route lookup is
    /// the caller's error to report).
    pub can_reach: Option<(u32 /*oif*/, Option<Ipv4Addr> /*prefsrc*/)>,
    /// `--public-ip`.
    pub public_ip: Option<Ipv4Addr>,
    /// Output interface of the IPv4 default route of the main table, if there is one.
    pub default_route_ifindex: Option<u32>,
}

/// Why no interface could be chosen. Every message is one line and lists what was seen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IfaceError {
    /// flannel's fatal message, plus why each flag value failed and the interfaces seen.
    #[error(
        "Failed to find interface to use that matches the interfaces and/or regexes provided (tried: {tried}; interfaces seen: {seen})"
    )]
    NoMatch { tried: String, seen: String },
    #[error(
        "no IPv4 default route found: use --iface, --iface-regex or --iface-can-reach to choose the external interface (interfaces seen: {seen})"
    )]
    NoDefaultRoute { seen: String },
    #[error(
        "the IPv4 default route uses interface index {index}, which is not among the interfaces seen ({seen}); use --iface to choose the external interface"
    )]
    DefaultRouteIfaceMissing { index: u32, seen: String },
    #[error(
        "no interface holds --public-ip {ip}: use --iface to choose the external interface (interfaces seen: {seen})"
    )]
    PublicIpNotLocal { ip: Ipv4Addr, seen: String },
    #[error("interface {name} has no usable IPv4 address (deprecated addresses are not used)")]
    NoAddress { name: String },
    #[error("interface {name} has MTU 0")]
    ZeroMtu { name: String },
    #[error(
        "no IPv6 default route found for the dual-stack network (interface {name} was chosen by \
         the IPv4 default route): add one, or use --iface to choose the external interface"
    )]
    NoDefaultRoute6 { name: String },
    /// flannel's text.
    #[error(
        "v6 default route interface {v6} must be the same with v4 default route interface {v4}"
    )]
    DefaultRoutesDiffer { v6: String, v4: String },
    #[error(
        "interface {name} has no usable IPv6 address (link-local, temporary and deprecated \
         addresses are not used)"
    )]
    NoAddress6 { name: String },
    #[error(
        "no IPv6 default route found for the IPv6-only network: use --iface, --iface-regex or --iface-can-reach to choose the external interface (interfaces seen: {seen})"
    )]
    NoDefaultRoute6Only { seen: String },
    #[error(
        "no interface holds --public-ipv6 {ip}: use --iface to choose the external interface (interfaces seen: {seen})"
    )]
    PublicIpv6NotLocal {
        ip: std::net::Ipv6Addr,
        seen: String,
    },
}

/// The address families of the network, which decide how the interface is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    V4,
    Dual,
    V6,
}

impl Stack {
    /// The stack of a config (`EnableIPv4`, `EnableIPv6`).
    pub fn of(conf: &net_conf::NetConf) -> Stack {
        match (conf.enable_ipv4, conf.enable_ipv6) {
            (true, true) => Stack::Dual,
            (false, true) => Stack::V6,
            _ => Stack::V4,
        }
    }
}

/// Choose the external interface; see the module documentation for the rules. Logs flannel's
/// `Using interface with name … and address …` and, when `--public-ip` is not given,
/// `Defaulting external address to interface address (…)`.
pub fn select(cands: &[IfaceCandidate], req: &IfaceRequest<'_>) -> Result<Selection, IfaceError> {
    let explicit = !req.iface.is_empty() || !req.iface_regex.is_empty() || req.can_reach.is_some();
    let (cand, iface_addr) = if explicit {
        select_explicit(cands, req)?
    } else if let Some(ip) = req.public_ip {
        let cand = holder_of(cands, ip).ok_or_else(|| IfaceError::PublicIpNotLocal {
            ip,
            seen: Seen(cands).to_string(),
        })?;
        (cand, ip)
    } else {
        let index = req
            .default_route_ifindex
            .ok_or_else(|| IfaceError::NoDefaultRoute {
                seen: Seen(cands).to_string(),
            })?;
        let cand = cands.iter().find(|c| c.index == index).ok_or_else(|| {
            IfaceError::DefaultRouteIfaceMissing {
                index,
                seen: Seen(cands).to_string(),
            }
        })?;
        (cand, usable(cand)?)
    };
    if cand.mtu == 0 {
        return Err(IfaceError::ZeroMtu {
            name: cand.name.clone(),
        });
    }
    if !cand.up {
        tracing::warn!(interface = %cand.name, "the chosen external interface is down");
    }
    tracing::info!(
        "Using interface with name {} and address {}",
        cand.name,
        iface_addr
    );
    let ext_addr = match req.public_ip {
        Some(ip) => ip,
        None => {
            tracing::info!("Defaulting external address to interface address ({iface_addr})");
            iface_addr
        }
    };
    Ok(Selection {
        index: cand.index,
        name: cand.name.clone(),
        iface_addr,
        ext_addr,
        mtu: cand.mtu,
        prefixes: prefixes(cand),
        v6: None,
    })
}

/// `--iface`, then `--iface-regex`, then `--iface-can-reach`; first match wins.
fn select_explicit<'c>(
    cands: &'c [IfaceCandidate],
    req: &IfaceRequest<'_>,
) -> Result<(&'c IfaceCandidate, Ipv4Addr), IfaceError> {
    let mut tried: Vec<String> = Vec::new();
    let mut note = |what: String, why: &dyn fmt::Display| {
        tracing::info!("Could not find valid interface matching {what}: {why}");
        tried.push(format!("{what}: {why}"));
    };

    for value in req.iface {
        let what = format!("--iface {value}");
        if let Ok(ip) = value.parse::<Ipv4Addr>() {
            match holder_of(cands, ip) {
                Some(c) if c.mtu == 0 => note(what, &format!("interface {} has MTU 0", c.name)),
                Some(c) => return Ok((c, ip)),
                None => note(what, &"no interface holds this address"),
            }
            continue;
        }
        match cands.iter().find(|c| c.name == *value) {
            None => note(what, &"no such interface"),
            Some(c) if c.mtu == 0 => note(what, &format!("interface {} has MTU 0", c.name)),
            Some(c) => match usable(c) {
                Ok(addr) => return Ok((c, addr)),
                Err(e) => note(what, &e),
            },
        }
    }

    for re in req.iface_regex {
        let what = format!("--iface-regex {}", re.as_str());
        // Addresses first, over all interfaces...
        let by_addr = cands.iter().filter(|c| c.mtu != 0).find_map(|c| {
            usable_addrs(c)
                .into_iter()
                .find(|a| re.is_match(&a.to_string()))
                .map(|a| (c, a))
        });
        if let Some(found) = by_addr {
            return Ok(found);
        }
        // ...then names.
        let mut name_err = None;
        for c in cands.iter().filter(|c| re.is_match(&c.name)) {
            if c.mtu == 0 {
                name_err = Some(format!("interface {} has MTU 0", c.name));
                continue;
            }
            match usable(c) {
                Ok(addr) => return Ok((c, addr)),
                Err(e) => name_err = Some(e.to_string()),
            }
        }
        let why = name_err.unwrap_or_else(|| "matches no address and no name".to_string());
        note(what, &why);
    }

    if let Some((oif, prefsrc)) = req.can_reach {
        let what = "--iface-can-reach".to_string();
        match cands.iter().find(|c| c.index == oif) {
            None => note(
                what,
                &format!("its route uses interface index {oif}, which was not seen"),
            ),
            Some(c) if c.mtu == 0 => note(what, &format!("interface {} has MTU 0", c.name)),
            Some(c) => match prefsrc.map_or_else(|| usable(c), Ok) {
                Ok(addr) => return Ok((c, addr)),
                Err(e) => note(what, &e),
            },
        }
    }

    Err(IfaceError::NoMatch {
        tried: tried.join("; "),
        seen: Seen(cands).to_string(),
    })
}

/// The interface holding `ip` (any of its addresses, deprecated or not).
fn holder_of(cands: &[IfaceCandidate], ip: Ipv4Addr) -> Option<&IfaceCandidate> {
    cands.iter().find(|c| c.addrs.iter().any(|a| a.addr == ip))
}

/// An interface's usable addresses, best first: non-deprecated only; global before
/// link-local (169.254/16 or a non-global scope), permanent before dynamic; otherwise kernel
/// order.
fn usable_addrs(c: &IfaceCandidate) -> Vec<Ipv4Addr> {
    let mut v: Vec<&CandidateAddr> = c.addrs.iter().filter(|a| !a.deprecated).collect();
    v.sort_by_key(|a| (!a.scope_global || a.addr.is_link_local(), !a.permanent));
    v.into_iter().map(|a| a.addr).collect()
}

/// The first usable address of an interface.
fn usable(c: &IfaceCandidate) -> Result<Ipv4Addr, IfaceError> {
    usable_addrs(c)
        .into_iter()
        .next()
        .ok_or_else(|| IfaceError::NoAddress {
            name: c.name.clone(),
        })
}

fn prefixes(c: &IfaceCandidate) -> Vec<Ipv4Net> {
    let mut out: Vec<Ipv4Net> = Vec::new();
    for a in &c.addrs {
        // A prefix length over 32 cannot come from the kernel; skip rather than fail.
        if let Ok(net) = Ipv4Net::new(a.addr, a.prefix_len) {
            let net = net.trunc();
            if !out.contains(&net) {
                out.push(net);
            }
        }
    }
    out
}

/// The interfaces seen, on one line, for error messages.
struct Seen<'a>(&'a [IfaceCandidate]);

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
                if a.deprecated {
                    addrs.push_str("(deprecated)");
                }
            }
            if addrs.is_empty() {
                addrs.push_str("no IPv4 address");
            }
            write!(
                f,
                "{} (index {}, {}, mtu {}, {})",
                c.name,
                c.index,
                if c.up { "up" } else { "down" },
                c.mtu,
                addrs
            )?;
        }
        Ok(())
    }
}

/// Picks the external interface as flanneld does (docs/flannel-compat.md §1.1): gathers the
/// snapshot (links and their addresses, the default routes, `ip route get` for
/// `--iface-can-reach`) over netlink and applies [`select`], and for a dual-stack network
/// [`select_v6`] on the chosen interface; an IPv6-only network uses [`select_v6_only`].
/// Read-only; shared by the agent, `weft status` and `weft cleanup`.
pub async fn select_interface(
    nl: &backends::Netlink,
    opts: &crate::cli::Options,
    stack: Stack,
) -> anyhow::Result<backends::ExternalInterface> {
    use anyhow::Context as _;
    use std::net::IpAddr;
    let links = nl.links().await.context("list interfaces")?;
    if stack == Stack::V6 {
        return select_interface_v6_only(nl, opts, &links).await;
    }
    let ipv6 = stack == Stack::Dual;
    let cands: Vec<IfaceCandidate> = links
        .iter()
        .map(|l| IfaceCandidate {
            index: l.index,
            name: l.name.clone(),
            mtu: l.mtu,
            up: l.up,
            addrs: l
                .addrs
                .iter()
                .filter_map(|a| match a.addr {
                    IpAddr::V4(v4) => Some(CandidateAddr {
                        addr: v4,
                        prefix_len: a.prefix_len,
                        permanent: a.permanent,
                        deprecated: a.deprecated,
                        scope_global: a.scope_global,
                    }),
                    IpAddr::V6(_) => None,
                })
                .collect(),
        })
        .collect();
    // `--iface-can-reach` with an IPv6 address chooses the interface by the IPv6 route; its
    // source address is then the IPv6 side's.
    let (can_reach, prefsrc6) = match opts.iface_can_reach {
        Some(IpAddr::V4(ip)) => {
            let r = nl
                .route_get(ip)
                .await
                .with_context(|| format!("ip route get {ip}"))?;
            (Some((r.oif, r.prefsrc)), None)
        }
        Some(IpAddr::V6(ip)) => {
            let r = nl
                .route_get6(ip)
                .await
                .with_context(|| format!("ip -6 route get {ip}"))?;
            (Some((r.oif, None)), r.prefsrc)
        }
        None => (None, None),
    };
    let default_route_ifindex = nl
        .default_route_ifindex()
        .await
        .context("read the default route")?;
    let mut sel = select(
        &cands,
        &IfaceRequest {
            iface: &opts.iface,
            iface_regex: &opts.iface_regex,
            can_reach,
            public_ip: opts.public_ip,
            default_route_ifindex,
        },
    )?;
    if ipv6 {
        let addrs: Vec<CandidateAddr6> = links
            .iter()
            .filter(|l| l.index == sel.index)
            .flat_map(candidate_addrs6)
            .collect();
        let default_route6_ifindex = nl
            .default_route6_ifindex()
            .await
            .context("read the IPv6 default route")?;
        let name_of = |i: u32| -> Option<String> {
            links.iter().find(|l| l.index == i).map(|l| l.name.clone())
        };
        let by_default_route = opts.iface.is_empty()
            && opts.iface_regex.is_empty()
            && opts.iface_can_reach.is_none()
            && opts.public_ip.is_none();
        sel.v6 = Some(select_v6(
            sel.index,
            &sel.name,
            &addrs,
            &Request6 {
                by_default_route,
                default_route6_ifindex,
                public_ipv6: opts.public_ipv6,
                prefer: prefsrc6,
            },
            &name_of,
        )?);
    }
    Ok(sel.into())
}

/// A link's IPv6 addresses as the IPv6 rules see them.
fn candidate_addrs6(l: &backends::nl::LinkInfo) -> Vec<CandidateAddr6> {
    l.addrs
        .iter()
        .filter_map(|a| match a.addr {
            std::net::IpAddr::V6(v6) => Some(CandidateAddr6 {
                addr: v6,
                prefix_len: a.prefix_len,
                permanent: a.permanent,
                deprecated: a.deprecated,
                temporary: a.temporary,
            }),
            std::net::IpAddr::V4(_) => None,
        })
        .collect()
}

/// [`select_interface`] for an IPv6-only network.
async fn select_interface_v6_only(
    nl: &backends::Netlink,
    opts: &crate::cli::Options,
    links: &[backends::nl::LinkInfo],
) -> anyhow::Result<backends::ExternalInterface> {
    use anyhow::Context as _;
    use std::net::IpAddr;
    let cands: Vec<Iface6> = links
        .iter()
        .map(|l| Iface6 {
            index: l.index,
            name: l.name.clone(),
            mtu: l.mtu,
            up: l.up,
            addrs: candidate_addrs6(l),
        })
        .collect();
    let can_reach = match opts.iface_can_reach {
        Some(IpAddr::V6(ip)) => {
            let r = nl
                .route_get6(ip)
                .await
                .with_context(|| format!("ip -6 route get {ip}"))?;
            Some((r.oif, r.prefsrc))
        }
        Some(IpAddr::V4(ip)) => anyhow::bail!(
            "--iface-can-reach {ip}: an IPv6-only network needs an IPv6 address to reach"
        ),
        None => None,
    };
    if let Some(ip) = opts.public_ip {
        tracing::warn!("--public-ip {ip} is not used: the network is IPv6-only");
    }
    let default_route6_ifindex = nl
        .default_route6_ifindex()
        .await
        .context("read the IPv6 default route")?;
    let sel = select_v6_only(
        &cands,
        &Request6Only {
            iface: &opts.iface,
            iface_regex: &opts.iface_regex,
            can_reach,
            public_ipv6: opts.public_ipv6,
            default_route6_ifindex,
        },
    )?;
    Ok(sel.into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;

    fn addr(s: &str) -> CandidateAddr {
        let net: Ipv4Net = s.parse().unwrap();
        CandidateAddr {
            addr: net.addr(),
            prefix_len: net.prefix_len(),
            permanent: true,
            deprecated: false,
            scope_global: !net.addr().is_loopback() && !net.addr().is_link_local(),
        }
    }

    fn cand(index: u32, name: &str, addrs: &[&str]) -> IfaceCandidate {
        IfaceCandidate {
            index,
            name: name.to_string(),
            mtu: 1500,
            up: true,
            addrs: addrs.iter().map(|a| addr(a)).collect(),
        }
    }

    /// lo, eth0 (default route), eth1, ens5 with two addresses.
    fn host() -> Vec<IfaceCandidate> {
        vec![
            IfaceCandidate {
                mtu: 65536,
                ..cand(1, "lo", &["127.0.0.1/8"])
            },
            cand(2, "eth0", &["198.18.0.10/24"]),
            cand(3, "eth1", &["198.18.1.10/24"]),
            cand(4, "ens5", &["198.19.5.10/16", "198.19.6.10/16"]),
        ]
    }

    fn req<'a>(iface: &'a [String], re: &'a [Regex]) -> IfaceRequest<'a> {
        IfaceRequest {
            iface,
            iface_regex: re,
            can_reach: None,
            public_ip: None,
            default_route_ifindex: Some(2),
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn res(v: &[&str]) -> Vec<Regex> {
        v.iter().map(|x| Regex::new(x).unwrap()).collect()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn default_route_interface_when_no_flags() {
        let sel = select(&host(), &req(&[], &[])).unwrap();
        assert_eq!(sel.name, "eth0");
        assert_eq!(sel.index, 2);
        assert_eq!(sel.iface_addr, ip("198.18.0.10"));
        assert_eq!(sel.ext_addr, ip("198.18.0.10"));
        assert_eq!(sel.mtu, 1500);
        assert_eq!(
            sel.prefixes,
            vec!["198.18.0.0/24".parse::<Ipv4Net>().unwrap()]
        );
    }

    #[test]
    fn no_default_route_is_a_clear_error() {
        let r = IfaceRequest {
            default_route_ifindex: None,
            ..req(&[], &[])
        };
        let e = select(&host(), &r).unwrap_err();
        assert!(matches!(e, IfaceError::NoDefaultRoute { .. }));
        let msg = e.to_string();
        assert!(msg.contains("use --iface"), "{msg}");
        assert!(
            msg.contains("eth0 (index 2, up, mtu 1500, 198.18.0.10/24)"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));

        let r = IfaceRequest {
            default_route_ifindex: Some(99),
            ..req(&[], &[])
        };
        assert!(matches!(
            select(&host(), &r),
            Err(IfaceError::DefaultRouteIfaceMissing { index: 99, .. })
        ));
    }

    #[test]
    fn public_ip_finds_its_interface_and_is_ext_addr() {
        let r = IfaceRequest {
            public_ip: Some(ip("198.19.6.10")),
            ..req(&[], &[])
        };
        let sel = select(&host(), &r).unwrap();
        assert_eq!(sel.name, "ens5");
        assert_eq!(sel.iface_addr, ip("198.19.6.10"));
        assert_eq!(sel.ext_addr, ip("198.19.6.10"));
        // Both addresses are in the same /16: one prefix.
        assert_eq!(
            sel.prefixes,
            vec!["198.19.0.0/16".parse::<Ipv4Net>().unwrap()]
        );
    }

    #[test]
    fn public_ip_not_local_without_iface_flags_is_an_error() {
        let r = IfaceRequest {
            public_ip: Some(ip("203.0.113.7")),
            ..req(&[], &[])
        };
        let e = select(&host(), &r).unwrap_err();
        assert!(e.to_string().contains("203.0.113.7"), "{e}");
        assert!(e.to_string().contains("use --iface"), "{e}");
    }

    #[test]
    fn public_ip_with_iface_is_ext_addr_only() {
        let iface = s(&["eth1"]);
        let r = IfaceRequest {
            public_ip: Some(ip("203.0.113.7")),
            ..req(&iface, &[])
        };
        let sel = select(&host(), &r).unwrap();
        assert_eq!(sel.name, "eth1");
        assert_eq!(sel.iface_addr, ip("198.18.1.10"));
        assert_eq!(sel.ext_addr, ip("203.0.113.7"));
    }

    #[test]
    fn iface_by_name_and_by_ip_in_order() {
        let sel = select(&host(), &req(&s(&["eth1", "eth0"]), &[])).unwrap();
        assert_eq!(sel.name, "eth1");
        // An IP selects its holder and is the address, even if not the first one.
        let sel = select(&host(), &req(&s(&["198.19.6.10"]), &[])).unwrap();
        assert_eq!(sel.name, "ens5");
        assert_eq!(sel.iface_addr, ip("198.19.6.10"));
        // Non-matching values are skipped, first match wins.
        let sel = select(
            &host(),
            &req(&s(&["nope0", "203.0.113.1", "ens5", "eth0"]), &[]),
        )
        .unwrap();
        assert_eq!(sel.name, "ens5");
        assert_eq!(sel.iface_addr, ip("198.19.5.10"));
    }

    #[test]
    fn iface_before_regex() {
        let sel = select(&host(), &req(&s(&["eth1"]), &res(&["^eth0$"]))).unwrap();
        assert_eq!(sel.name, "eth1");
        // A non-matching --iface falls through to the regexes.
        let sel = select(&host(), &req(&s(&["nope0"]), &res(&["^eth0$"]))).unwrap();
        assert_eq!(sel.name, "eth0");
    }

    #[test]
    fn regex_matches_addresses_before_names() {
        // "^198\.19\.6\." matches ens5's second address: that address is used.
        let sel = select(&host(), &req(&[], &res(&[r"^198\.19\.6\."]))).unwrap();
        assert_eq!(sel.name, "ens5");
        assert_eq!(sel.iface_addr, ip("198.19.6.10"));
        // "1" matches eth1's name, but lo's address 127.0.0.1 matches first (addresses first).
        let sel = select(&host(), &req(&[], &res(&["1"]))).unwrap();
        assert_eq!(sel.name, "lo");
        // A pure name match.
        let sel = select(&host(), &req(&[], &res(&["^ens"]))).unwrap();
        assert_eq!(sel.name, "ens5");
        assert_eq!(sel.iface_addr, ip("198.19.5.10"));
        // Regexes are tried in order.
        let sel = select(&host(), &req(&[], &res(&["^wlan", "^eth1$", "^eth0$"]))).unwrap();
        assert_eq!(sel.name, "eth1");
    }

    #[test]
    fn can_reach_uses_route_interface_and_prefsrc() {
        let r = IfaceRequest {
            can_reach: Some((4, Some(ip("198.19.6.10")))),
            ..req(&[], &[])
        };
        let sel = select(&host(), &r).unwrap();
        assert_eq!(sel.name, "ens5");
        assert_eq!(sel.iface_addr, ip("198.19.6.10"));
        // Without prefsrc, the interface's best address.
        let r = IfaceRequest {
            can_reach: Some((4, None)),
            ..req(&[], &[])
        };
        assert_eq!(select(&host(), &r).unwrap().iface_addr, ip("198.19.5.10"));
        // Tried after --iface.
        let iface = s(&["eth1"]);
        let r = IfaceRequest {
            can_reach: Some((4, None)),
            ..req(&iface, &[])
        };
        assert_eq!(select(&host(), &r).unwrap().name, "eth1");
    }

    #[test]
    fn nothing_matches_lists_attempts_and_interfaces() {
        let iface = s(&["nope0", "203.0.113.1"]);
        let re = res(&["^wlan"]);
        let r = IfaceRequest {
            can_reach: Some((42, None)),
            ..req(&iface, &re)
        };
        let e = select(&host(), &r).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with(
            "Failed to find interface to use that matches the interfaces and/or regexes provided"
        ));
        for part in [
            "--iface nope0: no such interface",
            "--iface 203.0.113.1: no interface holds this address",
            "--iface-regex ^wlan: matches no address and no name",
            "--iface-can-reach: its route uses interface index 42",
            "lo (index 1, up, mtu 65536, 127.0.0.1/8)",
            "ens5 (index 4, up, mtu 1500, 198.19.5.10/16 198.19.6.10/16)",
        ] {
            assert!(msg.contains(part), "missing {part:?} in {msg}");
        }
        assert!(!msg.contains('\n'));
        // Explicit flags never fall back to the default route.
        assert!(matches!(e, IfaceError::NoMatch { .. }));
    }

    #[test]
    fn address_preference() {
        let mut c = cand(2, "eth0", &[]);
        c.addrs = vec![
            CandidateAddr {
                deprecated: true,
                ..addr("198.18.0.1/24")
            },
            addr("169.254.1.1/16"),
            CandidateAddr {
                permanent: false,
                ..addr("198.18.0.2/24")
            },
            addr("198.18.0.3/24"),
            addr("198.18.0.4/24"),
        ];
        // Global + permanent first, kernel order among equals; deprecated never.
        assert_eq!(
            usable_addrs(&c),
            vec![
                ip("198.18.0.3"),
                ip("198.18.0.4"),
                ip("198.18.0.2"),
                ip("169.254.1.1")
            ]
        );
        let sel = select(&[c.clone()], &req(&[], &[])).unwrap();
        assert_eq!(sel.iface_addr, ip("198.18.0.3"));
        // Link-local only is still usable.
        let ll = cand(2, "eth0", &["169.254.7.7/16"]);
        assert_eq!(
            select(&[ll], &req(&[], &[])).unwrap().iface_addr,
            ip("169.254.7.7")
        );
        // A regex never matches a deprecated address.
        let e = select(&[c], &req(&[], &res(&[r"^198\.18\.0\.1$"]))).unwrap_err();
        assert!(matches!(e, IfaceError::NoMatch { .. }));
    }

    #[test]
    fn no_usable_address() {
        let mut c = cand(2, "eth0", &["198.18.0.1/24"]);
        c.addrs[0].deprecated = true;
        let e = select(&[c.clone()], &req(&[], &[])).unwrap_err();
        assert_eq!(
            e,
            IfaceError::NoAddress {
                name: "eth0".to_string()
            }
        );
        let e = select(&[c], &req(&s(&["eth0"]), &[])).unwrap_err();
        assert!(
            e.to_string()
                .contains("--iface eth0: interface eth0 has no usable IPv4 address")
        );
    }

    #[test]
    fn zero_mtu_is_an_error_or_skipped() {
        let mut hosts = host();
        hosts[1].mtu = 0; // eth0
        assert_eq!(
            select(&hosts, &req(&[], &[])).unwrap_err(),
            IfaceError::ZeroMtu {
                name: "eth0".to_string()
            }
        );
        // With explicit flags, a zero-MTU match is skipped and the next value tried.
        let sel = select(&hosts, &req(&s(&["eth0", "eth1"]), &[])).unwrap();
        assert_eq!(sel.name, "eth1");
        let e = select(&hosts, &req(&s(&["eth0"]), &[])).unwrap_err();
        assert!(
            e.to_string()
                .contains("--iface eth0: interface eth0 has MTU 0"),
            "{e}"
        );
    }

    #[test]
    fn down_interface_is_still_chosen() {
        let mut hosts = host();
        hosts[1].up = false;
        assert_eq!(select(&hosts, &req(&[], &[])).unwrap().name, "eth0");
    }

    #[test]
    fn prefixes_are_masked_and_deduplicated() {
        let c = cand(
            2,
            "eth0",
            &[
                "198.18.0.10/24",
                "198.18.0.11/24",
                "198.18.7.1/30",
                "198.18.9.9/32",
            ],
        );
        let sel = select(&[c], &req(&[], &[])).unwrap();
        let want: Vec<Ipv4Net> = ["198.18.0.0/24", "198.18.7.0/30", "198.18.9.9/32"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(sel.prefixes, want);
    }

    #[test]
    fn converts_to_backend_external_interface() {
        let r = IfaceRequest {
            public_ip: Some(ip("198.18.1.10")),
            ..req(&[], &[])
        };
        let ext: backends::ExternalInterface = select(&host(), &r).unwrap().into();
        assert_eq!(ext.name, "eth1");
        assert_eq!(ext.index, 3);
        assert_eq!(ext.iface_addr, ip("198.18.1.10"));
        assert_eq!(ext.ext_addr, ip("198.18.1.10"));
        assert_eq!(ext.mtu, 1500);
        assert_eq!(
            ext.prefixes,
            vec!["198.18.1.0/24".parse::<Ipv4Net>().unwrap()]
        );
    }

    #[test]
    fn empty_snapshot() {
        let e = select(&[], &req(&[], &[])).unwrap_err();
        assert!(e.to_string().contains("(none)"), "{e}");
        let r = IfaceRequest {
            default_route_ifindex: None,
            ..req(&[], &[])
        };
        let e = select(&[], &r).unwrap_err();
        assert!(e.to_string().contains("interfaces seen: none"), "{e}");
    }
}
