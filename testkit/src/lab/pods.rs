//! Pods and pings: one pod per node behind `cni0` (as the bridge CNI plugin builds it), the
//! "external" host on the underlay, and pings between pods.
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use ipnet::{Ipv4Net, Ipv6Net};

use super::sys;
use super::{EXTERNAL_IP, Lab, Pod, UNDERLAY_PREFIX_LEN};

impl Lab {
    /// Adds node k's pod from its subnet.env: bridge `cni0` in the node with the subnet's .1,
    /// namespace `<name>-p<k>` with `eth0` (veth into `cni0`) on .2 and a default route via
    /// .1; MTU from FLANNEL_MTU. This is what the bridge CNI plugin would build.
    pub fn add_pod(&mut self, k: usize) -> Result<Ipv4Addr> {
        self.add_pod_any(k)?
            .ok_or_else(|| anyhow!("node {k}'s pod has no IPv4 address (IPv6-only lab)"))
    }

    /// [`Lab::add_pod`] for any lab: the pod's IPv4 address, None in an IPv6-only lab (whose
    /// subnet.env has no FLANNEL_SUBNET: the pod gets its IPv6 address only).
    fn add_pod_any(&mut self, k: usize) -> Result<Option<Ipv4Addr>> {
        if self.node(k)?.pod.is_some() {
            bail!("node {k} already has a pod");
        }
        let env = self.subnet_env(k)?;
        let v4 = match env.subnet {
            Some(subnet) => Some(pod_addresses(subnet)?),
            None if env.ipv6_subnet.is_some() => None,
            None => bail!("node {k}'s subnet.env has no FLANNEL_SUBNET"),
        };
        let mtu = env.mtu.to_string();
        let n = self.node(k)?.ns.clone();
        let p = format!("{}-p{k}", self.name);
        if !sys::netns_add(&p)? {
            bail!("namespace {p} already exists");
        }
        let v6 = match env.ipv6_subnet {
            Some(s6) => Some(pod_addresses6(s6)?),
            None => None,
        };
        // Registered before configuring, so a failure below still gets it deleted.
        self.node_mut(k)?.pod = Some(Pod {
            ns: p.clone(),
            ip: v4.map(|(_, pod)| pod.addr()),
            ip6: v6.map(|(_, pod6)| pod6.addr()),
        });
        let has_cni0 = sys::output(&mut sys::ip_cmd(Some(&n), &["link", "show", "cni0"]))?
            .status
            .success();
        if !has_cni0 {
            sys::ip(Some(&n), &["link", "add", "cni0", "type", "bridge"])?;
        }
        sys::ip(Some(&n), &["link", "set", "cni0", "mtu", &mtu, "up"])?;
        sys::ip(Some(&p), &["link", "set", "lo", "up"])?;
        sys::ip(
            Some(&p),
            &[
                "link", "add", "eth0", "mtu", &mtu, "type", "veth", "peer", "name", "vpod",
                "netns", &n,
            ],
        )?;
        sys::ip(Some(&n), &["link", "set", "vpod", "master", "cni0", "up"])?;
        sys::ip(Some(&p), &["link", "set", "eth0", "up"])?;
        if let Some((gw, pod)) = v4 {
            let (gw_s, pod_s, gw_ip) = (gw.to_string(), pod.to_string(), gw.addr().to_string());
            sys::ip(Some(&n), &["addr", "replace", &gw_s, "dev", "cni0"])?;
            sys::ip(Some(&p), &["addr", "add", &pod_s, "dev", "eth0"])?;
            sys::ip(
                Some(&p),
                &["route", "add", "default", "via", &gw_ip, "dev", "eth0"],
            )?;
        }
        if let Some((gw6, pod6)) = v6 {
            let (gw6_s, pod6_s, gw6_ip) =
                (gw6.to_string(), pod6.to_string(), gw6.addr().to_string());
            sys::ip(
                Some(&n),
                &["addr", "replace", &gw6_s, "dev", "cni0", "nodad"],
            )?;
            sys::ip(Some(&p), &["addr", "add", &pod6_s, "dev", "eth0", "nodad"])?;
            sys::ip(
                Some(&p),
                &[
                    "-6", "route", "add", "default", "via", &gw6_ip, "dev", "eth0",
                ],
            )?;
        }
        tracing::info!(node = k, pod = ?v4.map(|(_, p)| p), pod6 = ?v6.map(|(_, p)| p), "pod added in {p}");
        Ok(v4.map(|(_, pod)| pod.addr()))
    }

    /// Adds a pod to every node (each needs its subnet.env).
    pub fn add_pods(&mut self) -> Result<()> {
        for k in 1..=self.nodes.len() {
            self.add_pod_any(k)?;
        }
        Ok(())
    }

    /// Adds an "external" host outside the cluster: namespace `<name>-x` with `eth0`
    /// [`EXTERNAL_IP`]/24 on the underlay bridge and no other route, so it can answer the nodes
    /// (198.18.0.0/24) but not pods: pod traffic reaches it only masqueraded to a node address.
    /// Returns its namespace.
    pub fn add_external(&mut self) -> Result<String> {
        if let Some(ns) = &self.external {
            return Ok(ns.clone());
        }
        let x = format!("{}-x", self.name);
        if !sys::netns_add(&x)? {
            bail!("namespace {x} already exists");
        }
        // Registered first, so teardown deletes it even if a step below fails.
        self.external = Some(x.clone());
        let u = self.underlay.clone();
        let addr = format!("{EXTERNAL_IP}/{UNDERLAY_PREFIX_LEN}");
        sys::ip(Some(&x), &["link", "set", "lo", "up"])?;
        sys::ip(
            Some(&x),
            &[
                "link", "add", "eth0", "type", "veth", "peer", "name", "ext", "netns", &u,
            ],
        )?;
        sys::ip(Some(&u), &["link", "set", "ext", "master", "br0", "up"])?;
        sys::ip(Some(&x), &["addr", "add", &addr, "dev", "eth0"])?;
        sys::ip(Some(&x), &["link", "set", "eth0", "up"])?;
        tracing::info!("external host {EXTERNAL_IP} added in {x}");
        Ok(x)
    }

    /// The external host's namespace, once [`Lab::add_external`] made it.
    pub fn external_ns(&self) -> Result<&str> {
        self.external
            .as_deref()
            .ok_or_else(|| anyhow!("the lab has no external host (call add_external first)"))
    }

    /// `ping -c <count> -w <timeout>` from pod `from` to pod `to`: true if `count` replies
    /// came back within `timeout` (whole seconds, at least 1).
    pub fn ping(&self, from: usize, to: usize, count: u32, timeout: Duration) -> Result<bool> {
        let src = self.pod_ns(from)?;
        let dst = self.pod_ip(to)?.to_string();
        let count = count.max(1).to_string();
        let secs = timeout.as_secs_f64().ceil().max(1.0).to_string();
        let out = sys::output(&mut sys::netns_exec(
            src,
            "ping",
            &["-n", "-q", "-i", "0.2", "-c", &count, "-w", &secs, &dst],
        ))?;
        Ok(out.status.success())
    }

    /// [`Lab::ping`] over IPv6, to pod `to`'s IPv6 address.
    pub fn ping6(&self, from: usize, to: usize, count: u32, timeout: Duration) -> Result<bool> {
        let src = self.pod_ns(from)?;
        let dst = self.pod_ip6(to)?.to_string();
        let count = count.max(1).to_string();
        let secs = timeout.as_secs_f64().ceil().max(1.0).to_string();
        let out = sys::output(&mut sys::netns_exec(
            src,
            "ping",
            &[
                "-6", "-n", "-q", "-i", "0.2", "-c", &count, "-w", &secs, &dst,
            ],
        ))?;
        Ok(out.status.success())
    }

    /// One ping (5 s budget) for every ordered pair of pods, run in parallel:
    /// `(from, to, replied)`, sorted.
    pub fn ping_matrix(&self) -> Result<Vec<(usize, usize, bool)>> {
        self.ping_matrix_of(false)
    }

    /// [`Lab::ping_matrix`] over IPv6 (a dual-stack lab).
    pub fn ping6_matrix(&self) -> Result<Vec<(usize, usize, bool)>> {
        self.ping_matrix_of(true)
    }

    fn ping_matrix_of(&self, v6: bool) -> Result<Vec<(usize, usize, bool)>> {
        let pairs: Vec<(usize, usize)> = (1..=self.nodes.len())
            .flat_map(|i| (1..=self.nodes.len()).map(move |j| (i, j)))
            .filter(|(i, j)| i != j)
            .collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = pairs
                .iter()
                .map(|&(i, j)| {
                    s.spawn(move || {
                        if v6 {
                            self.ping6(i, j, 1, Duration::from_secs(5))
                        } else {
                            self.ping(i, j, 1, Duration::from_secs(5))
                        }
                    })
                })
                .collect();
            pairs
                .iter()
                .zip(handles)
                .map(|(&(i, j), h)| {
                    let ok = h.join().map_err(|_| anyhow!("ping thread panicked"))??;
                    Ok((i, j, ok))
                })
                .collect()
        })
    }
}

/// The addresses of a pod behind `cni0` in `subnet`: (`cni0` = .1, pod = .2), both with the
/// subnet's prefix length, as the bridge CNI plugin with host-local IPAM hands them out.
pub(super) fn pod_addresses(subnet: Ipv4Net) -> Result<(Ipv4Net, Ipv4Net)> {
    let net = subnet.trunc();
    let first = u32::from(net.network());
    if net.prefix_len() > 29 {
        bail!("subnet {net} is too small for a bridge and a pod address");
    }
    let mk = |n: u32| Ipv4Net::new(Ipv4Addr::from(first + n), net.prefix_len());
    Ok((mk(1)?, mk(2)?))
}

/// [`pod_addresses`] for IPv6: (`cni0` = `::1`, pod = `::2`).
pub(super) fn pod_addresses6(subnet: Ipv6Net) -> Result<(Ipv6Net, Ipv6Net)> {
    let net = subnet.trunc();
    let first = u128::from(net.network());
    if net.prefix_len() > 125 {
        bail!("subnet {net} is too small for a bridge and a pod address");
    }
    let mk = |n: u128| Ipv6Net::new(Ipv6Addr::from(first + n), net.prefix_len());
    Ok((mk(1)?, mk(2)?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pod_addresses_are_dot1_and_dot2() {
        let (gw, pod) = pod_addresses("10.244.5.0/24".parse().unwrap()).unwrap();
        assert_eq!(gw.to_string(), "10.244.5.1/24");
        assert_eq!(pod.to_string(), "10.244.5.2/24");
        let (gw, _) = pod_addresses("10.244.5.1/24".parse().unwrap()).unwrap();
        assert_eq!(gw.to_string(), "10.244.5.1/24");
        assert!(pod_addresses("10.244.5.0/30".parse().unwrap()).is_err());
        let (gw, pod) = pod_addresses6("fd00:10:244:5::/64".parse().unwrap()).unwrap();
        assert_eq!(gw.to_string(), "fd00:10:244:5::1/64");
        assert_eq!(pod.to_string(), "fd00:10:244:5::2/64");
    }
}
