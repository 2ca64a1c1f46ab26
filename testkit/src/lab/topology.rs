//! Building a lab: the underlay namespace with its bridge and etcd, then one namespace per
//! node (veth to the bridge, default route, forwarding on); and claiming a unique lab name.
use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use super::sys;
use super::{
    LAB_COUNTER, Lab, LabSpec, MAX_NODES, Node, UNDERLAY_GATEWAY, UNDERLAY_GATEWAY6,
    UNDERLAY_PREFIX_LEN, UNDERLAY_PREFIX_LEN6,
};
use crate::etcd_server::{EtcdServer, EtcdServerOpts};

impl Lab {
    /// Builds the underlay, etcd (with the config written) and every node namespace. No agent
    /// runs yet: see [`Lab::start_all`] and [`Lab::start_node`]. On error, whatever was built
    /// is torn down again.
    pub fn build(spec: LabSpec) -> Result<Lab> {
        spec.validate()?;
        let (name, underlay) = claim_name()?;
        let dir = std::env::temp_dir().join(format!("weft-lab-{name}"));
        let mut lab = Lab {
            spec,
            name,
            dir,
            underlay,
            external: None,
            etcd: None,
            kube: None,
            nodes: Vec::new(),
            keep: false,
            torn_down: false,
        };
        // From here on, Drop cleans up whatever exists if a step fails.
        lab.build_rest()?;
        Ok(lab)
    }

    fn build_rest(&mut self) -> Result<()> {
        let started = Instant::now();
        if self.dir.exists() {
            // Left over by an earlier process with the same pid that died uncleanly.
            fs::remove_dir_all(&self.dir)
                .with_context(|| format!("removing stale {}", self.dir.display()))?;
        }
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;

        let u = self.underlay.clone();
        let gw = format!("{UNDERLAY_GATEWAY}/{UNDERLAY_PREFIX_LEN}");
        sys::ip(Some(&u), &["link", "set", "lo", "up"])?;
        sys::ip(Some(&u), &["link", "add", "br0", "type", "bridge"])?;
        sys::ip(Some(&u), &["addr", "add", &gw, "dev", "br0"])?;
        sys::ip(Some(&u), &["link", "set", "br0", "up"])?;
        if self.spec.ipv6_network.is_some() {
            let gw6 = format!("{UNDERLAY_GATEWAY6}/{UNDERLAY_PREFIX_LEN6}");
            sys::ip(Some(&u), &["addr", "add", &gw6, "dev", "br0", "nodad"])?;
        }

        if self.spec.kube {
            self.start_kube()?;
        } else {
            self.start_etcd()?;
        }

        for k in 1..=self.spec.nodes {
            let node = self.build_node(k)?;
            self.nodes.push(node);
        }
        tracing::info!(
            lab = %self.name,
            nodes = self.spec.nodes,
            elapsed = ?started.elapsed(),
            "lab built"
        );
        Ok(())
    }

    fn start_etcd(&mut self) -> Result<()> {
        let u = self.underlay.clone();
        let etcd = EtcdServer::start(EtcdServerOpts {
            netns: Some(u.clone()),
            listen_ip: UNDERLAY_GATEWAY.into(),
            client_port: None,
            tls: None,
        })
        .context("starting etcd in the underlay namespace")?;
        // Recorded so that `weft-lab --cleanup` can remove a kept lab's etcd files too.
        if let Some(etcd_root) = etcd.data_dir().parent() {
            fs::write(
                self.dir.join("etcd-dir"),
                etcd_root.as_os_str().as_encoded_bytes(),
            )
            .context("writing etcd-dir")?;
        }
        self.etcd = Some(etcd);

        let config = self.spec.config_json();
        if !config.is_empty() {
            self.put_config(&config)?;
        }
        Ok(())
    }

    fn build_node(&self, k: usize) -> Result<Node> {
        let ns = format!("{}-n{k}", self.name);
        let ip = node_ip(k)?;
        let dir = self.dir.join(format!("n{k}"));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if !sys::netns_add(&ns)? {
            bail!("namespace {ns} already exists");
        }
        let node = Node {
            ns,
            ip,
            dir,
            agent: None,
            pod: None,
        };
        let n = node.ns.as_str();
        let u = self.underlay.as_str();
        let port = format!("n{k}");
        let addr = format!("{ip}/{UNDERLAY_PREFIX_LEN}");
        let gw = UNDERLAY_GATEWAY.to_string();
        let step = || -> Result<()> {
            sys::ip(Some(n), &["link", "set", "lo", "up"])?;
            sys::ip(
                Some(n),
                &[
                    "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", u,
                ],
            )?;
            sys::ip(Some(u), &["link", "set", &port, "master", "br0", "up"])?;
            sys::ip(Some(n), &["addr", "add", &addr, "dev", "eth0"])?;
            sys::ip(Some(n), &["link", "set", "eth0", "up"])?;
            sys::ip(
                Some(n),
                &["route", "add", "default", "via", &gw, "dev", "eth0"],
            )?;
            if self.spec.ipv6_network.is_some() {
                let addr6 = format!("{}/{UNDERLAY_PREFIX_LEN6}", node_ip6(k)?);
                let gw6 = UNDERLAY_GATEWAY6.to_string();
                sys::ip(Some(n), &["addr", "add", &addr6, "dev", "eth0", "nodad"])?;
                sys::ip(
                    Some(n),
                    &["-6", "route", "add", "default", "via", &gw6, "dev", "eth0"],
                )?;
                set_ip6_forward(n)?;
            }
            set_ip_forward(n)
        };
        if let Err(e) = step() {
            if let Err(e2) = sys::netns_purge(n) {
                tracing::warn!("removing half-built {n}: {e2:#}");
            }
            return Err(e.context(format!("building node {k} ({n})")));
        }
        Ok(node)
    }
}

/// Picks a name no other lab uses and creates its underlay namespace (creating the
/// namespace is what claims the name, so two processes cannot both get it).
pub(super) fn claim_name() -> Result<(String, String)> {
    let pid = std::process::id() % 10_000;
    for _ in 0..1000 {
        let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = lab_name(pid, n);
        let underlay = format!("{name}-u");
        if sys::netns_add(&underlay)? {
            return Ok((name, underlay));
        }
        tracing::debug!("namespace {underlay} exists, trying another name");
    }
    bail!("no free lab name (namespaces wl{pid}x* all taken?)")
}

pub(super) fn lab_name(pid: u32, n: usize) -> String {
    format!("wl{pid}x{n}")
}

/// 198.18.0.k.
pub(super) fn node_ip(k: usize) -> Result<Ipv4Addr> {
    match u8::try_from(k) {
        Ok(b) if (1..=MAX_NODES).contains(&k) => Ok(Ipv4Addr::new(198, 18, 0, b)),
        _ => bail!("node {k} is out of range 1..={MAX_NODES}"),
    }
}

/// fd00:198:18::k, node k's underlay IPv6 address in a dual-stack lab.
pub(super) fn node_ip6(k: usize) -> Result<Ipv6Addr> {
    let b = u16::from(node_ip(k)?.octets()[3]);
    Ok(Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, b))
}

/// `net.ipv6.conf.all.forwarding=1` inside `ns`.
pub(super) fn set_ip6_forward(ns: &str) -> Result<()> {
    sys::run(&mut sys::netns_exec(
        ns,
        "sh",
        &["-c", "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding"],
    ))?;
    Ok(())
}

/// `sysctl net.ipv4.ip_forward=1` inside `ns` (procfs shows the writer's namespace).
pub(super) fn set_ip_forward(ns: &str) -> Result<()> {
    sys::run(&mut sys::netns_exec(
        ns,
        "sh",
        &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
    ))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_in_namespace_and_are_distinct() {
        assert_eq!(lab_name(1234, 0), "wl1234x0");
        assert_ne!(lab_name(1234, 1), lab_name(123, 41));
        // Longest pod namespace name stays short enough for any tool.
        assert!(format!("{}-p253", lab_name(9999, 99_999)).len() <= 20);
    }

    #[test]
    fn node_addresses() {
        assert_eq!(node_ip(1).unwrap(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(node_ip(253).unwrap(), Ipv4Addr::new(198, 18, 0, 253));
        assert!(node_ip(0).is_err());
        assert!(node_ip(254).is_err());
        assert_eq!(node_ip6(7).unwrap().to_string(), "fd00:198:18::7");
        assert!(node_ip6(254).is_err());
    }
}
