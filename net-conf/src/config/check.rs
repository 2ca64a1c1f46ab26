//! The network checks of flannel's `CheckNetworkConfig`: the IPv4 and IPv6 networks, their
//! subnet lengths and the SubnetMin/SubnetMax range, with the defaults derived from them.
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use super::fields::invalid;
use crate::ConfError;

pub(super) struct V4 {
    pub(super) network: Ipv4Net,
    pub(super) subnet_len: u8,
    pub(super) min: Ipv4Addr,
    pub(super) max: Ipv4Addr,
}

pub(super) fn check_v4(
    network: Option<Ipv4Net>,
    subnet_len: u64,
    min: Option<Ipv4Addr>,
    max: Option<Ipv4Addr>,
    warnings: &mut Vec<String>,
) -> Result<V4, Vec<ConfError>> {
    let given = network.unwrap_or_default();
    if given.addr().is_unspecified() && given.prefix_len() == 0 {
        return Err(vec![invalid(
            "Network",
            network.map(|n| n.to_string()).unwrap_or_default(),
            "please define a correct Network parameter in the flannel config",
        )]);
    }
    let net = given.trunc();
    if net != given {
        warnings.push(format!(
            "Network {given} has host bits set; using {net} (as flannel does)"
        ));
    }
    let prefix = u64::from(net.prefix_len());
    let len = if subnet_len > 0 {
        if subnet_len > 30 {
            return Err(vec![invalid(
                "SubnetLen",
                subnet_len.to_string(),
                "SubnetLen must be less than /31",
            )]);
        }
        if subnet_len < prefix + 2 {
            return Err(vec![invalid(
                "SubnetLen",
                subnet_len.to_string(),
                "network must be able to accommodate at least four subnets",
            )]);
        }
        subnet_len
    } else if prefix > 28 {
        return Err(vec![invalid(
            "Network",
            net.to_string(),
            "network is too small. Minimum useful network prefix is /28",
        )]);
    } else if prefix <= 22 {
        24
    } else {
        prefix + 2
    };
    // 2 <= len <= 30 here, so the shifts below are in range.
    let sub_host: u32 = (1u32 << (32 - len)) - 1;
    let net_host: u32 = u32::MAX.checked_shr(net.prefix_len().into()).unwrap_or(0);
    let base = u32::from(net.network());

    let min = match min {
        Some(m) if !m.is_unspecified() => {
            check_in_range_v4("SubnetMin", m, &net, sub_host).map(|()| m)
        }
        _ => Ok(Ipv4Addr::from(base + sub_host + 1)),
    };
    let max = match max {
        Some(m) if !m.is_unspecified() => {
            check_in_range_v4("SubnetMax", m, &net, sub_host).map(|()| m)
        }
        _ => Ok(Ipv4Addr::from((base | net_host) & !sub_host)),
    };
    let (min, max) = match (min, max) {
        (Ok(min), Ok(max)) => (min, max),
        (min, max) => return Err([min.err(), max.err()].into_iter().flatten().collect()),
    };
    if min > max {
        // Not checked by flannel (it fails later with "out of subnets"); no lease could ever
        // be valid, so weft refuses the config up front.
        return Err(vec![invalid(
            "SubnetMin",
            min.to_string(),
            format!("SubnetMin is greater than SubnetMax ({max})"),
        )]);
    }
    Ok(V4 {
        network: net,
        subnet_len: len as u8,
        min,
        max,
    })
}

fn check_in_range_v4(
    field: &str,
    addr: Ipv4Addr,
    net: &Ipv4Net,
    sub_host: u32,
) -> Result<(), ConfError> {
    if !net.contains(&addr) {
        return Err(invalid(
            field,
            addr.to_string(),
            format!("{field} is not in the range of the Network"),
        ));
    }
    if u32::from(addr) & sub_host != 0 {
        return Err(invalid(
            field,
            addr.to_string(),
            format!("{field} is not on a SubnetLen boundary: {addr}"),
        ));
    }
    Ok(())
}

pub(super) struct V6 {
    pub(super) network: Ipv6Net,
    pub(super) subnet_len: u8,
    pub(super) min: Ipv6Addr,
    pub(super) max: Ipv6Addr,
}

pub(super) fn check_v6(
    network: Option<Ipv6Net>,
    subnet_len: u64,
    min: Option<Ipv6Addr>,
    max: Option<Ipv6Addr>,
    warnings: &mut Vec<String>,
) -> Result<V6, Vec<ConfError>> {
    let given = network.unwrap_or_default();
    if given.addr().is_unspecified() && given.prefix_len() == 0 {
        return Err(vec![invalid(
            "IPv6Network",
            network.map(|n| n.to_string()).unwrap_or_default(),
            "please define a correct IPv6Network parameter in the flannel config",
        )]);
    }
    let net = given.trunc();
    if net != given {
        warnings.push(format!(
            "IPv6Network {given} has host bits set; using {net} (as flannel does)"
        ));
    }
    let prefix = u64::from(net.prefix_len());
    let len = if subnet_len > 0 {
        if subnet_len > 126 {
            return Err(vec![invalid(
                "IPv6SubnetLen",
                subnet_len.to_string(),
                "SubnetLen must be less than /127",
            )]);
        }
        if subnet_len < prefix + 2 {
            return Err(vec![invalid(
                "IPv6SubnetLen",
                subnet_len.to_string(),
                "IPv6Network must be able to accommodate at least four subnets",
            )]);
        }
        subnet_len
    } else if prefix > 124 {
        return Err(vec![invalid(
            "IPv6Network",
            net.to_string(),
            "IPv6Network is too small. Minimum useful network prefix is /124",
        )]);
    } else if prefix <= 62 {
        64
    } else {
        prefix + 2
    };
    let sub_host: u128 = (1u128 << (128 - len)) - 1;
    let net_host: u128 = u128::MAX.checked_shr(net.prefix_len().into()).unwrap_or(0);
    let base = u128::from(net.network());

    let min = match min {
        Some(m) => check_in_range_v6("IPv6SubnetMin", m, &net, sub_host).map(|()| m),
        None => Ok(Ipv6Addr::from(base + sub_host + 1)),
    };
    let max = match max {
        Some(m) => check_in_range_v6("IPv6SubnetMax", m, &net, sub_host).map(|()| m),
        None => Ok(Ipv6Addr::from((base | net_host) & !sub_host)),
    };
    let (min, max) = match (min, max) {
        (Ok(min), Ok(max)) => (min, max),
        (min, max) => return Err([min.err(), max.err()].into_iter().flatten().collect()),
    };
    if min > max {
        return Err(vec![invalid(
            "IPv6SubnetMin",
            min.to_string(),
            format!("IPv6SubnetMin is greater than IPv6SubnetMax ({max})"),
        )]);
    }
    Ok(V6 {
        network: net,
        subnet_len: len as u8,
        min,
        max,
    })
}

fn check_in_range_v6(
    field: &str,
    addr: Ipv6Addr,
    net: &Ipv6Net,
    sub_host: u128,
) -> Result<(), ConfError> {
    if !net.contains(&addr) {
        return Err(invalid(
            field,
            addr.to_string(),
            format!("{field} is not in the range of the IPv6Network"),
        ));
    }
    if u128::from(addr) & sub_host != 0 {
        return Err(invalid(
            field,
            addr.to_string(),
            format!("{field} is not on a SubnetLen boundary: {addr}"),
        ));
    }
    Ok(())
}
