//! The tunnel devices weft owns and their addresses, as objects of the desired state.
//!
//! A backend says which device it wants ([`Device`]: kind, the attributes the kernel fixes at
//! creation, MTU, MAC, up) and which addresses it carries ([`Addr`]); the reconciler reads the
//! devices it owns from a link dump and from link/address notifications, and [`crate::plan::diff`]
//! turns the difference into writes, like for routes. So a device that is deleted, set down,
//! given another MTU or MAC, or loses its `/32`, is repaired by the same diff as a deleted route,
//! and `weft cleanup` is a reconcile to the empty state.
//!
//! Ownership goes by name and network: a link named like a device of weft or flanneld
//! ([`is_device_name`]: `flannel.<VNI>`, `flannel-v6.<VNI>`, `flannel.ipip`) is this daemon's
//! when its backends want it or it carries an address of the daemon's network
//! ([`crate::owner`]). So a device of a previous backend or VNI (or flanneld's, of the same
//! network) that no backend wants is deleted, a link of the wrong kind under a wanted name is
//! replaced, and another network's device on the same host is left alone.
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use ipnet::IpNet;

use crate::plan::{Mac, fmt_mac};

/// Whether a link name is one of the devices weft or flanneld create: `flannel.<VNI>`,
/// `flannel-v6.<VNI>`, `flannel.ipip`.
pub fn is_device_name(name: &str) -> bool {
    let numbered = |rest: &str| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
    name == "flannel.ipip"
        || name.strip_prefix("flannel.").is_some_and(numbered)
        || name.strip_prefix("flannel-v6.").is_some_and(numbered)
}

/// The attributes of a vxlan device the kernel fixes at creation (`ip link add … type vxlan`):
/// another value of any of them means delete and create.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VxlanParams {
    pub vni: u32,
    /// `dev`: the underlay interface index (0: none).
    pub link: u32,
    /// `local`: IPv4 (IFLA_VXLAN_LOCAL) on `flannel.<VNI>`, IPv6 (IFLA_VXLAN_LOCAL6) on
    /// `flannel-v6.<VNI>` (unspecified: none).
    pub local: IpAddr,
    /// `dstport`, as the kernel reports it (8472 for the kernel's default).
    pub port: u16,
    pub learning: bool,
    pub gbp: bool,
    /// `group` (multicast) or `remote`; weft's devices have none.
    pub group: Option<Ipv4Addr>,
    pub l2miss: bool,
    pub l3miss: bool,
}

/// What kind of link a device is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    Vxlan(VxlanParams),
    /// `type ipip local <local> remote <remote or any>`.
    IpIp {
        local: Ipv4Addr,
        /// None: `remote any` (weft's).
        remote: Option<Ipv4Addr>,
    },
    /// A link with a weft device name of another kind (`veth`, ...; empty when the kernel
    /// reports no kind): found in the kernel only, never desired.
    Other(String),
}

impl DeviceKind {
    /// `vxlan`, `ipip`, or the other kind.
    pub fn name(&self) -> &str {
        match self {
            DeviceKind::Vxlan(_) => "vxlan",
            DeviceKind::IpIp { .. } => "ipip",
            DeviceKind::Other(kind) if kind.is_empty() => "unknown",
            DeviceKind::Other(kind) => kind,
        }
    }
}

/// A tunnel device: `ip -d link show <name>` reduced to what weft sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    /// The ifindex: in the kernel's state the real one; in a desired state the one the
    /// backend planned its entries on (0 when it knows none yet). The reconciler moves desired
    /// entries from the planned index to the real one; [`Device::differences`] ignores it.
    pub index: u32,
    pub kind: DeviceKind,
    pub mtu: u32,
    /// The link-layer address; a desired `None` keeps whatever the kernel chose.
    pub mac: Option<Mac>,
    /// Administratively up.
    pub up: bool,
}

/// How an existing device differs from the wanted one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceDiff {
    /// Attributes the kernel cannot change in place, each as `<field> <have> (want <want>)`:
    /// non-empty means delete and create.
    pub fixed: Vec<String>,
    /// Attributes `ip link set` changes, the same way.
    pub settable: Vec<String>,
}

impl DeviceDiff {
    pub fn is_empty(&self) -> bool {
        self.fixed.is_empty() && self.settable.is_empty()
    }

    /// Every difference, fixed ones first.
    pub fn all(&self) -> Vec<String> {
        self.fixed.iter().chain(&self.settable).cloned().collect()
    }
}

impl Device {
    /// How `have` (the kernel's) differs from `self` (the wanted device), field by field; the
    /// ifindex is not compared.
    pub fn differences(&self, have: &Device) -> DeviceDiff {
        let mut d = DeviceDiff::default();
        let mut fixed = |name: &str, have: String, want: String| {
            if have != want {
                d.fixed.push(format!("{name} {have} (want {want})"));
            }
        };
        match (&self.kind, &have.kind) {
            (DeviceKind::Vxlan(w), DeviceKind::Vxlan(h)) => {
                fixed("id", h.vni.to_string(), w.vni.to_string());
                fixed("dev", h.link.to_string(), w.link.to_string());
                fixed("local", h.local.to_string(), w.local.to_string());
                fixed("dstport", h.port.to_string(), w.port.to_string());
                fixed("learning", h.learning.to_string(), w.learning.to_string());
                fixed("gbp", h.gbp.to_string(), w.gbp.to_string());
                let show = |g: Option<Ipv4Addr>| g.map_or_else(|| "none".into(), |g| g.to_string());
                fixed("group", show(h.group), show(w.group));
                fixed("l2miss", h.l2miss.to_string(), w.l2miss.to_string());
                fixed("l3miss", h.l3miss.to_string(), w.l3miss.to_string());
            }
            (
                DeviceKind::IpIp { local, remote },
                DeviceKind::IpIp {
                    local: hl,
                    remote: hr,
                },
            ) => {
                let show = |ip: Option<Ipv4Addr>| match ip.filter(|ip| !ip.is_unspecified()) {
                    Some(ip) => ip.to_string(),
                    None => "any".to_string(),
                };
                fixed("local", show(Some(*hl)), show(Some(*local)));
                fixed("remote", show(*hr), show(*remote));
            }
            (w, h) => fixed("type", h.name().to_string(), w.name().to_string()),
        }
        if have.mtu != self.mtu {
            d.settable
                .push(format!("mtu {} (want {})", have.mtu, self.mtu));
        }
        if let Some(want) = self.mac {
            if have.mac != Some(want) {
                let h = have.mac.map_or_else(|| "none".into(), |m| fmt_mac(&m));
                d.settable
                    .push(format!("address {h} (want {})", fmt_mac(&want)));
            }
        }
        if have.up != self.up {
            let s = |up: bool| if up { "up" } else { "down" };
            d.settable
                .push(format!("state {} (want {})", s(have.up), s(self.up)));
        }
        d
    }

    /// The `ip link add` arguments that make this device (`flannel.1 type vxlan id 1 dev 2 local
    /// 198.18.0.1 dstport 8472 nolearning mtu 1450 address 02:…`), the underlay by name when
    /// `name_of` knows it.
    pub fn spec_with(&self, name_of: &dyn Fn(u32) -> Option<String>) -> String {
        let mut s = format!("{} type {}", self.name, self.kind.name());
        match &self.kind {
            DeviceKind::Vxlan(v) => {
                let dev = name_of(v.link).unwrap_or_else(|| v.link.to_string());
                s += &format!(
                    " id {} dev {dev} local {} dstport {} {}",
                    v.vni,
                    v.local,
                    v.port,
                    if v.learning { "learning" } else { "nolearning" }
                );
                if v.gbp {
                    s += " gbp";
                }
            }
            DeviceKind::IpIp { local, remote } => {
                s += &format!(" local {local} remote ");
                match remote {
                    Some(r) => s += &r.to_string(),
                    None => s += "any",
                }
            }
            DeviceKind::Other(_) => {}
        }
        s += &format!(" mtu {}", self.mtu);
        if let Some(mac) = &self.mac {
            s += &format!(" address {}", fmt_mac(mac));
        }
        s
    }
}

/// An address on a weft device (`ip addr add 10.244.1.0/32 dev flannel.1`): weft's devices
/// carry exactly one, `<own subnet network>/32` (`/128` on `flannel-v6.<VNI>`), the source of
/// host → pod traffic that adds no connected route. Keyed by device name, since an address is wanted before the device
/// has an index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    pub dev: String,
    /// The address with its prefix length (`10.244.1.0/32`, not truncated).
    pub addr: IpNet,
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dev {}", self.addr, self.dev)
    }
}

impl Device {
    /// Whether router advertisements are turned off on this device (`accept_ra = 0`, as
    /// flanneld sets it on each vxlan device it makes): `flannel.<VNI>` and
    /// `flannel-v6.<VNI>`. They are `nolearning` with no router on the overlay, so this only
    /// keeps a stray advertisement from adding addresses or a default route through them.
    pub fn wants_accept_ra_off(&self) -> bool {
        matches!(&self.kind, DeviceKind::Vxlan(_))
    }
}

/// Where the kernel's sysctls are. `/proc/sys/net` is the network namespace's of the thread
/// that opens a file there: the agent's own.
const PROC_SYS: &str = "/proc/sys";

/// `net.ipv6.conf.<dev>.accept_ra = 0`: reads `/proc/sys/net/ipv6/conf/<dev>/accept_ra` and
/// writes `0` unless it holds that already. True when it wrote.
pub fn accept_ra_off(dev: &str) -> io::Result<bool> {
    set_sysctl(
        Path::new(PROC_SYS),
        &format!("net/ipv6/conf/{dev}/accept_ra"),
        "0",
    )
}

/// The command [`accept_ra_off`] stands for, as `sysctl` takes it (a dot in the device name is
/// written `/`: `sysctl -w net.ipv6.conf.flannel-v6/1.accept_ra=0`).
pub fn accept_ra_off_command(dev: &str) -> String {
    format!(
        "sysctl -w net.ipv6.conf.{}.accept_ra=0",
        dev.replace('.', "/")
    )
}

/// Sets the sysctl file `key` under `root` to `value` unless it holds it already (whitespace
/// aside); true when it wrote.
fn set_sysctl(root: &Path, key: &str, value: &str) -> io::Result<bool> {
    let path = root.join(key);
    if std::fs::read_to_string(&path)?.trim() == value {
        return Ok(false);
    }
    std::fs::write(&path, value)?;
    Ok(true)
}

/// A vxlan device `flannel.1` as weft makes it on ifindex 2 (for tests).
#[cfg(test)]
pub(crate) fn test_vxlan(name: &str, index: u32) -> Device {
    Device {
        name: name.into(),
        index,
        kind: DeviceKind::Vxlan(VxlanParams {
            vni: 1,
            link: 2,
            local: Ipv4Addr::new(198, 18, 0, 1).into(),
            port: 8472,
            learning: false,
            gbp: false,
            group: None,
            l2miss: false,
            l3miss: false,
        }),
        mtu: 1450,
        mac: Some([2, 0, 0, 0, 0, 1]),
        up: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vxlan(name: &str, index: u32) -> Device {
        test_vxlan(name, index)
    }

    #[test]
    fn device_names() {
        for yes in ["flannel.1", "flannel.4096", "flannel-v6.1", "flannel.ipip"] {
            assert!(is_device_name(yes), "{yes}");
        }
        for no in [
            "flannel.",
            "flannel",
            "flannel.1a",
            "flannel-v6.",
            "flannel.ipip0",
            "cni0",
            "eth0",
            "xflannel.1",
            "flannel-v6.ipip",
        ] {
            assert!(!is_device_name(no), "{no}");
        }
    }

    #[test]
    fn differences_field_by_field() {
        let want = vxlan("flannel.1", 0);
        let mut have = vxlan("flannel.1", 9);
        assert!(
            want.differences(&have).is_empty(),
            "the index is not compared"
        );
        have.mtu = 1400;
        have.up = false;
        have.mac = Some([2, 0, 0, 0, 0, 9]);
        if let DeviceKind::Vxlan(v) = &mut have.kind {
            v.vni = 2;
            v.port = 4789;
            v.learning = true;
        }
        let d = want.differences(&have);
        assert_eq!(
            d.fixed,
            vec![
                "id 2 (want 1)",
                "dstport 4789 (want 8472)",
                "learning true (want false)"
            ]
        );
        assert_eq!(
            d.settable,
            vec![
                "mtu 1400 (want 1450)",
                "address 02:00:00:00:00:09 (want 02:00:00:00:00:01)",
                "state down (want up)"
            ]
        );
        let veth = Device {
            kind: DeviceKind::Other("veth".into()),
            ..vxlan("flannel.1", 9)
        };
        assert_eq!(
            want.differences(&veth).fixed,
            vec!["type veth (want vxlan)"]
        );
        // A desired device without a MAC keeps the kernel's.
        let no_mac = Device {
            mac: None,
            ..vxlan("flannel.1", 0)
        };
        assert!(no_mac.differences(&vxlan("flannel.1", 9)).is_empty());
    }

    #[test]
    fn ipip_differences_and_specs() {
        let want = Device {
            name: "flannel.ipip".into(),
            index: 0,
            kind: DeviceKind::IpIp {
                local: Ipv4Addr::new(198, 18, 0, 1),
                remote: None,
            },
            mtu: 1480,
            mac: None,
            up: true,
        };
        let have = Device {
            kind: DeviceKind::IpIp {
                local: Ipv4Addr::new(198, 18, 0, 9),
                remote: Some(Ipv4Addr::new(198, 18, 0, 2)),
            },
            ..want.clone()
        };
        assert_eq!(
            want.differences(&have).fixed,
            vec![
                "local 198.18.0.9 (want 198.18.0.1)",
                "remote 198.18.0.2 (want any)"
            ]
        );
        assert_eq!(
            want.spec_with(&|_| None),
            "flannel.ipip type ipip local 198.18.0.1 remote any mtu 1480"
        );
        assert_eq!(
            vxlan("flannel.1", 0).spec_with(&|i| (i == 2).then(|| "eth0".into())),
            "flannel.1 type vxlan id 1 dev eth0 local 198.18.0.1 dstport 8472 nolearning mtu 1450 \
             address 02:00:00:00:00:01"
        );
    }

    #[test]
    fn accept_ra_goes_to_the_vxlan_devices_only() {
        let v4 = vxlan("flannel.1", 3);
        assert!(v4.wants_accept_ra_off());
        let mut v6 = vxlan("flannel-v6.1", 4);
        if let DeviceKind::Vxlan(p) = &mut v6.kind {
            p.local = "fd00:18::1".parse().expect("ip");
        }
        assert!(v6.wants_accept_ra_off());
        let ipip = Device {
            kind: DeviceKind::IpIp {
                local: Ipv4Addr::new(198, 18, 0, 1),
                remote: None,
            },
            ..vxlan("flannel.ipip", 5)
        };
        assert!(!ipip.wants_accept_ra_off());
        assert_eq!(
            accept_ra_off_command("flannel-v6.1"),
            "sysctl -w net.ipv6.conf.flannel-v6/1.accept_ra=0"
        );
    }

    #[test]
    fn a_sysctl_is_written_once() {
        let root = std::env::temp_dir().join(format!("weft-sysctl-{}", std::process::id()));
        let dir = root.join("net/ipv6/conf/flannel-v6.1");
        std::fs::create_dir_all(&dir).expect("dir");
        let key = "net/ipv6/conf/flannel-v6.1/accept_ra";
        std::fs::write(dir.join("accept_ra"), "1\n").expect("write");
        assert!(set_sysctl(&root, key, "0").expect("set"), "1 -> 0");
        assert_eq!(
            std::fs::read_to_string(dir.join("accept_ra")).expect("read"),
            "0"
        );
        std::fs::write(dir.join("accept_ra"), "0\n").expect("write");
        assert!(!set_sysctl(&root, key, "0").expect("set"), "already 0");
        assert!(
            set_sysctl(&root, "net/ipv6/conf/gone/accept_ra", "0").is_err(),
            "no such device"
        );
        std::fs::remove_dir_all(&root).expect("clean up");
    }
}
