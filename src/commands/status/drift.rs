//! How the kernel differs from what the leases require: missing, extra and different
//! objects ([`classify`]) and the backend device's problems ([`device_info`]). Pure.

use backends::Route;
use backends::plan::{self, Device, Fdb, KernelOp, KernelState, Neigh, fmt_mac};
use serde::Serialize;

use super::DeviceInfo;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub missing: Vec<Entry>,
    pub extra: Vec<Entry>,
    pub different: Vec<Changed>,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.different.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub want: Entry,
    pub have: Entry,
}

/// One kernel object, with the fields of its kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub kind: &'static str,
    pub dev: String,
    /// The object as `ip route` / `ip neigh` / `bridge fdb` print it.
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<std::net::IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onlink: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lladdr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The nexthop object a kernel route is written on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nhid: Option<u32>,
}

impl Entry {
    fn bare(kind: &'static str, dev: String, text: String) -> Entry {
        Entry {
            kind,
            dev,
            text,
            dst: None,
            gateway: None,
            onlink: None,
            ip: None,
            lladdr: None,
            mac: None,
            nhid: None,
        }
    }

    /// weft's blackhole route (`--ip-blackhole-route`), as `ip route` shows it.
    fn blackhole(dst: ipnet::IpNet) -> Entry {
        let text = format!(
            "blackhole {dst} proto {} metric {}",
            backends::RTPROT_WEFT,
            backends::plan::BLACKHOLE_METRIC
        );
        Entry {
            dst: Some(dst.to_string()),
            ..Entry::bare("blackhole", String::new(), text)
        }
    }

    /// A route; `nhid` for a kernel route on a nexthop object, shown as `ip route` shows it
    /// (`10.244.2.0/24 nhid 5 via 198.18.0.2 dev eth0`).
    fn route(r: &Route, nhid: Option<u32>, names: &dyn Fn(u32) -> String) -> Entry {
        let dev = names(r.oif);
        let text = match nhid {
            Some(id) => {
                let line = r.display_with(Some(&dev)).to_string();
                let rest = line.strip_prefix(&r.dst.to_string()).unwrap_or(&line);
                format!("{} nhid {id}{rest}", r.dst)
            }
            None => r.display_with(Some(&dev)).to_string(),
        };
        Entry {
            dst: Some(r.dst.to_string()),
            gateway: Some(r.gateway),
            onlink: Some(r.onlink),
            nhid,
            ..Entry::bare("route", dev, text)
        }
    }

    /// A device with a weft name that no backend uses (`flannel.ipip type ipip local …`).
    fn device(dev: &Device, names: &dyn Fn(u32) -> String) -> Entry {
        Entry::bare(
            "device",
            dev.name.clone(),
            dev.spec_with(&|i| Some(names(i))),
        )
    }

    fn neigh(n: &Neigh, names: &dyn Fn(u32) -> String) -> Entry {
        let dev = names(n.ifindex);
        let text = format!("{} lladdr {} dev {dev} PERMANENT", n.ip, fmt_mac(&n.mac));
        Entry {
            ip: Some(n.ip),
            lladdr: Some(fmt_mac(&n.mac)),
            ..Entry::bare("neigh", dev, text)
        }
    }

    fn fdb(e: &Fdb, names: &dyn Fn(u32) -> String) -> Entry {
        let dev = names(e.ifindex);
        let text = format!("{} dev {dev} dst {} self permanent", fmt_mac(&e.mac), e.dst);
        Entry {
            mac: Some(fmt_mac(&e.mac)),
            dst: Some(e.dst.to_string()),
            ..Entry::bare("fdb", dev, text)
        }
    }
}

/// Sorts the difference between `required` and `current` into missing / extra / different,
/// using the reconciler's own [`plan::diff`] (a delete is extra; a replace is different when
/// the kernel has an object with that key, else missing). `nhid` tells which kernel routes are
/// on nexthop objects. Pure.
pub fn classify(
    required: &KernelState,
    current: &KernelState,
    nhid: &dyn Fn(&ipnet::IpNet) -> Option<u32>,
    names: &dyn Fn(u32) -> String,
) -> Drift {
    let mut d = Drift::default();
    for op in plan::diff(required, current) {
        match op {
            // The backend's device: its problems are reported with the device (`device_info`).
            KernelOp::LinkAdd(_)
            | KernelOp::LinkSet(_)
            | KernelOp::AddrAdd(_)
            | KernelOp::AddrDel(_) => {}
            KernelOp::LinkDel(dev) if required.devices.contains_key(&dev.name) => {}
            KernelOp::LinkDel(dev) => d.extra.push(Entry::device(&dev, names)),
            KernelOp::RouteDel(r) => d.extra.push(Entry::route(&r, nhid(&r.dst), names)),
            KernelOp::NeighDel(n) => d.extra.push(Entry::neigh(&n, names)),
            KernelOp::FdbDel(e) => d.extra.push(Entry::fdb(&e, names)),
            KernelOp::BlackholeDel(dst) => d.extra.push(Entry::blackhole(dst)),
            KernelOp::BlackholeReplace(dst) => d.missing.push(Entry::blackhole(dst)),
            KernelOp::RouteReplace(r) => match current.routes.get(&r.dst) {
                Some(have) => d.different.push(Changed {
                    want: Entry::route(&r, None, names),
                    have: Entry::route(have, nhid(&have.dst), names),
                }),
                None => d.missing.push(Entry::route(&r, None, names)),
            },
            KernelOp::NeighReplace(n) => match current.neighs.get(&(n.ifindex, n.ip)) {
                Some(have) => d.different.push(Changed {
                    want: Entry::neigh(&n, names),
                    have: Entry::neigh(have, names),
                }),
                None => d.missing.push(Entry::neigh(&n, names)),
            },
            KernelOp::FdbReplace(e) => match current.fdb.get(&(e.ifindex, e.mac)) {
                Some(have) => d.different.push(Changed {
                    want: Entry::fdb(&e, names),
                    have: Entry::fdb(have, names),
                }),
                None => d.missing.push(Entry::fdb(&e, names)),
            },
        }
    }
    d
}

/// A device that should exist and does not.
pub(super) fn missing_device(name: &str) -> DeviceInfo {
    DeviceInfo {
        name: name.to_string(),
        present: false,
        ifindex: None,
        up: false,
        mtu: None,
        mac: None,
        problems: vec![format!("{name} does not exist")],
    }
}

/// The wanted device as the kernel has it, with its problems: the device operations of
/// [`plan::diff`] (made anew, replaced, changed in place, addresses added or removed), each
/// described by [`Device::differences`]. Pure.
pub fn device_info(want: &Device, desired: &KernelState, current: &KernelState) -> DeviceInfo {
    let Some(have) = current.devices.get(&want.name) else {
        return missing_device(&want.name);
    };
    let ops = plan::diff_devices(desired, current);
    let mut problems = Vec::new();
    let touches = |op: &KernelOp| match op {
        KernelOp::LinkAdd(d) | KernelOp::LinkSet(d) | KernelOp::LinkDel(d) => d.name == want.name,
        _ => false,
    };
    if ops.iter().any(touches) {
        let d = want.differences(have);
        problems.extend(d.all().into_iter().map(|p| {
            if p.starts_with("state down") {
                "link is down".to_string()
            } else {
                p
            }
        }));
    }
    let addr_op = |op: &KernelOp| matches!(op, KernelOp::AddrAdd(a) | KernelOp::AddrDel(a) if a.dev == want.name);
    if ops.iter().any(addr_op) {
        let list = |s: &KernelState| -> Vec<String> {
            s.addrs
                .iter()
                .filter(|a| a.dev == want.name)
                .map(|a| a.addr.to_string())
                .collect()
        };
        problems.push(format!(
            "addresses [{}] (want exactly {})",
            list(current).join(", "),
            list(desired).join(", ")
        ));
    }
    DeviceInfo {
        name: want.name.clone(),
        present: true,
        ifindex: Some(have.index),
        up: have.up,
        mtu: Some(have.mtu),
        mac: have.mac.map(|m| fmt_mac(&m)),
        problems,
    }
}
