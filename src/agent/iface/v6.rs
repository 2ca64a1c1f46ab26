//! The IPv6 side of the external interface for a dual-stack (or IPv6) network, pure like the
//! IPv4 rules in the parent module (docs/flannel-compat.md §1.1):
//!
//! - the interface is the one the IPv4 rules chose: flannel runs both families over one
//!   interface; with no interface flags and no `--public-ip`, the IPv6 default route must use
//!   the same interface as the IPv4 one (flannel's error text when it does not);
//! - its address is `--public-ipv6` when the interface holds it, else the source address of
//!   the route to an IPv6 `--iface-can-reach` when it holds that, else its best usable IPv6
//!   address: not deprecated, not a privacy (temporary) address, not link-local (a link-local
//!   address cannot be a route's gateway for other nodes without naming their interface),
//!   permanent before dynamic, kernel order otherwise;
//! - the address published in the lease (`PublicIPv6`) is `--public-ipv6` if given, else that
//!   interface address.
use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use super::IfaceError;

/// One IPv6 address of the chosen interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CandidateAddr6 {
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
    /// `IFA_F_PERMANENT`.
    pub permanent: bool,
    /// `IFA_F_DEPRECATED`: never chosen.
    pub deprecated: bool,
    /// `IFA_F_TEMPORARY` (a privacy address): never chosen, it changes.
    pub temporary: bool,
}

/// What the IPv6 rules need besides the chosen interface.
#[derive(Debug, Clone, Copy)]
pub struct Request6 {
    /// No `--iface`, `--iface-regex`, `--iface-can-reach` nor `--public-ip`: the interface came
    /// from the IPv4 default route, so the IPv6 default route must agree.
    pub by_default_route: bool,
    /// Output interface of the IPv6 default route (`::/0`) of the main table, if any.
    pub default_route6_ifindex: Option<u32>,
    /// `--public-ipv6`.
    pub public_ipv6: Option<Ipv6Addr>,
    /// The source address of the route `--iface-can-reach` named (an IPv6 address): the
    /// interface address when the interface holds it and `--public-ipv6` is not one it holds.
    pub prefer: Option<Ipv6Addr>,
}

/// The IPv6 side of the chosen interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection6 {
    /// The interface's IPv6 address used for the overlay.
    pub iface_addr: Ipv6Addr,
    /// `--public-ipv6`, else `iface_addr`: the lease's `PublicIPv6`.
    pub ext_addr: Ipv6Addr,
    /// The interface's IPv6 networks (each address masked to its prefix), link-local excluded.
    pub prefixes: Vec<Ipv6Net>,
}

/// The IPv6 side of interface `name` (index `index`), whose IPv6 addresses are `addrs`; the name
/// of the IPv6 default route's interface is looked up in `name_of` for the error.
pub fn select_v6(
    index: u32,
    name: &str,
    addrs: &[CandidateAddr6],
    req: &Request6,
    name_of: &dyn Fn(u32) -> Option<String>,
) -> Result<Selection6, IfaceError> {
    if req.by_default_route {
        match req.default_route6_ifindex {
            None => {
                return Err(IfaceError::NoDefaultRoute6 {
                    name: name.to_owned(),
                });
            }
            Some(i) if i != index => {
                return Err(IfaceError::DefaultRoutesDiffer {
                    v6: name_of(i).unwrap_or_else(|| format!("index {i}")),
                    v4: name.to_owned(),
                });
            }
            Some(_) => {}
        }
    }
    let held = |ip: Ipv6Addr| addrs.iter().any(|a| a.addr == ip);
    let iface_addr = match (req.public_ipv6, req.prefer) {
        (Some(ip), _) if held(ip) => ip,
        (_, Some(ip)) if held(ip) => ip,
        _ => usable_v6(addrs).ok_or_else(|| IfaceError::NoAddress6 {
            name: name.to_owned(),
        })?,
    };
    let ext_addr = match req.public_ipv6 {
        Some(ip) => ip,
        None => {
            tracing::info!("Defaulting external v6 address to interface address ({iface_addr})");
            iface_addr
        }
    };
    let mut prefixes: Vec<Ipv6Net> = Vec::new();
    for a in addrs.iter().filter(|a| !is_link_local(a.addr)) {
        if let Ok(net) = Ipv6Net::new(a.addr, a.prefix_len) {
            let net = net.trunc();
            if !prefixes.contains(&net) {
                prefixes.push(net);
            }
        }
    }
    Ok(Selection6 {
        iface_addr,
        ext_addr,
        prefixes,
    })
}

/// fe80::/10.
fn is_link_local(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// The best usable IPv6 address (module doc).
fn usable_v6(addrs: &[CandidateAddr6]) -> Option<Ipv6Addr> {
    let mut v: Vec<&CandidateAddr6> = addrs
        .iter()
        .filter(|a| !a.deprecated && !a.temporary && !is_link_local(a.addr))
        .filter(|a| !a.addr.is_loopback() && !a.addr.is_unspecified() && !a.addr.is_multicast())
        .collect();
    v.sort_by_key(|a| !a.permanent);
    v.first().map(|a| a.addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> CandidateAddr6 {
        let (ip, len) = s.split_once('/').expect("addr/len");
        CandidateAddr6 {
            addr: ip.parse().expect("ip"),
            prefix_len: len.parse().expect("len"),
            permanent: true,
            deprecated: false,
            temporary: false,
        }
    }

    fn req(route: Option<u32>) -> Request6 {
        Request6 {
            by_default_route: true,
            default_route6_ifindex: route,
            public_ipv6: None,
            prefer: None,
        }
    }

    fn names(i: u32) -> Option<String> {
        (i == 3).then(|| "eth1".to_owned())
    }

    #[test]
    fn the_default_route_interfaces_must_agree() {
        let addrs = [a("fe80::1/64"), a("fd00:198:18::1/64")];
        let got = select_v6(2, "eth0", &addrs, &req(Some(2)), &names).expect("same interface");
        assert_eq!(
            got.iface_addr,
            "fd00:198:18::1".parse::<Ipv6Addr>().expect("ip")
        );
        assert_eq!(got.ext_addr, got.iface_addr);
        assert_eq!(
            got.prefixes,
            ["fd00:198:18::/64".parse::<Ipv6Net>().expect("net")]
        );
        let err = select_v6(2, "eth0", &addrs, &req(Some(3)), &names).expect_err("differ");
        assert_eq!(
            err.to_string(),
            "v6 default route interface eth1 must be the same with v4 default route interface eth0"
        );
        let err = select_v6(2, "eth0", &addrs, &req(None), &names).expect_err("no v6 route");
        assert!(err.to_string().contains("no IPv6 default route"), "{err}");
        // With an interface flag the default route does not matter.
        let flags = Request6 {
            by_default_route: false,
            ..req(None)
        };
        assert!(select_v6(2, "eth0", &addrs, &flags, &names).is_ok());
    }

    #[test]
    fn address_choice_and_public_ipv6() {
        let mut temp = a("2001:db8::aaaa/64");
        temp.temporary = true;
        let mut dynamic = a("2001:db8::d/64");
        dynamic.permanent = false;
        let mut old = a("2001:db8::0/64");
        old.deprecated = true;
        let addrs = [a("fe80::1/64"), temp, old, dynamic, a("fd00::5/64")];
        let got = select_v6(2, "eth0", &addrs, &req(Some(2)), &names).expect("chosen");
        assert_eq!(got.iface_addr, "fd00::5".parse::<Ipv6Addr>().expect("ip"));
        // --public-ipv6 held by the interface is its address too; one it does not hold is only
        // published.
        let public = |ip: &str| Request6 {
            public_ipv6: Some(ip.parse().expect("ip")),
            ..req(Some(2))
        };
        let got = select_v6(2, "eth0", &addrs, &public("2001:db8::d"), &names).expect("held");
        assert_eq!(got.iface_addr, got.ext_addr);
        let got = select_v6(2, "eth0", &addrs, &public("2001:db8:9::9"), &names).expect("nat");
        assert_eq!(got.iface_addr, "fd00::5".parse::<Ipv6Addr>().expect("ip"));
        assert_eq!(
            got.ext_addr,
            "2001:db8:9::9".parse::<Ipv6Addr>().expect("ip")
        );
        // Only link-local, temporary or deprecated addresses: nothing to use.
        let err = select_v6(
            2,
            "eth0",
            &[a("fe80::1/64"), temp, old],
            &req(Some(2)),
            &names,
        )
        .expect_err("none");
        assert_eq!(
            err.to_string(),
            "interface eth0 has no usable IPv6 address (link-local, temporary and deprecated \
             addresses are not used)"
        );
    }
}
