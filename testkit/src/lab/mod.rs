//! The local lab: a small weft cluster made of network namespaces on one machine.
//!
//! ```text
//!   <name>-u  (underlay)  br0 198.18.0.254/24, etcd on 198.18.0.254:<port>
//!     ├─ veth n1 ── eth0 198.18.0.1/24  <name>-n1  weft  cni0 <subnet>.1 ── eth0 <subnet>.2  <name>-p1
//!     ├─ veth n2 ── eth0 198.18.0.2/24  <name>-n2  weft  cni0 … ── <name>-p2
//!     └─ …
//! ```
//!
//! Every node namespace has a default route via 198.18.0.254 (so weft picks `eth0` as the
//! default-route interface, as flanneld would) and `net.ipv4.ip_forward=1` (which the bridge
//! CNI plugin would set on a real node). Each agent is the real `weft` binary started with
//! `ip netns exec` and flanneld's flags; its output goes to `<lab dir>/n<k>/weft.log`.
//!
//! `weft-lab` ([`run_cli`]) and the end-to-end tests (`tests/e2e_*.rs`) both use this module.
//! It is synchronous test tooling that drives `ip`, `ping` and `etcdctl` as child processes;
//! call it from a plain thread, not from inside an async runtime.
//!
//! Names are unique per lab (`wl<pid % 10000>x<counter>`), so several labs and tests can run at
//! once. Dropping a [`Lab`] tears everything down (agents, namespaces, etcd, files) and reports
//! every failure on stderr; [`Lab::keep`] leaves it running instead.
use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use ipnet::Ipv4Net;
pub use nix::sys::signal::Signal;

use crate::etcd_server::EtcdServer;

mod agents;
mod cli;
mod kube;
mod pods;
mod query;
mod sys;
mod teardown;
mod topology;

pub use cli::run_cli;
pub use kube::{FLANNEL_USER, KUBE_API_PORT, KubeLab, pod_cidr};
pub use net_conf::SubnetEnv;
pub use teardown::cleanup;

/// The underlay bridge's address (`br0` in the underlay namespace); etcd listens here and it
/// is every node's default gateway.
pub const UNDERLAY_GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
/// Prefix length of the underlay network 198.18.0.0/24.
pub const UNDERLAY_PREFIX_LEN: u8 = 24;
/// The underlay bridge's IPv6 address in a dual-stack lab (node k is `fd00:198:18::k/64`).
pub const UNDERLAY_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 0xfe);
/// Prefix length of the dual-stack underlay's IPv6 network fd00:198:18::/64.
pub const UNDERLAY_PREFIX_LEN6: u8 = 64;
/// The pod network the lab configures unless told otherwise.
pub const DEFAULT_NETWORK: &str = "10.244.0.0/16";
/// flanneld's default `--etcd-prefix`.
pub const DEFAULT_ETCD_PREFIX: &str = "/coreos.com/network";
/// The `--healthz-port` every agent gets (each node has its own network stack).
pub const DEFAULT_HEALTHZ_PORT: u16 = 10280;
/// Most nodes a lab can have: node k is 198.18.0.k and .254 is the gateway.
pub const MAX_NODES: usize = 253;
/// The "external" host's address on the underlay (see [`Lab::add_external`]).
pub const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 250);

/// How long a stopped agent may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// Set by `weft-lab`'s SIGINT/SIGTERM handler; the lab's waits stop early when it is set.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Labs made by this process so far (part of the namespace names).
static LAB_COUNTER: AtomicUsize = AtomicUsize::new(0);

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Number of nodes (1..=253).
    pub nodes: usize,
    /// `Backend.Type` of the config written to etcd (`host-gw`, `vxlan`, `ipip`).
    pub backend: String,
    /// `Network` of the config written to etcd.
    pub network: String,
    /// The `weft` binary the nodes run.
    pub weft_bin: PathBuf,
    /// Extra flags for every agent (after the lab's own flags).
    pub extra_flags: Vec<String>,
    /// `--etcd-prefix` (flag passed only when it is not flanneld's default).
    pub etcd_prefix: String,
    /// Config JSON written to `<prefix>/config` instead of the one made from `network` and
    /// `backend`; `Some("")` writes no config at all.
    pub config: Option<String>,
    /// `--healthz-port` for every agent; 0 passes no flag.
    pub healthz_port: u16,
    /// Extra environment variables for every agent (e.g. `WEFT_FIREWALL_AUDIT_SECS`).
    pub agent_env: Vec<(String, String)>,
    /// Kube mode: the test API server instead of etcd, agents with `--kube-subnet-mgr`, the
    /// config in net-conf.json (see `kube.rs`).
    pub kube: bool,
    /// A command every agent runs under, inside its namespace (`setpriv --bounding-set=… --`):
    /// `ip netns exec <node> <prefix…> <weft> <flags>`. Empty: the agent runs directly.
    pub agent_prefix: Vec<String>,
    /// Dual-stack: the config's `IPv6Network` (with `EnableIPv6`); the underlay and every node
    /// get IPv6 too (`br0` [`UNDERLAY_GATEWAY6`], node k `fd00:198:18::k`, an IPv6 default
    /// route, forwarding), and pods an IPv6 address from `FLANNEL_IPV6_SUBNET`.
    pub ipv6_network: Option<String>,
    /// IPv6-only (kube mode, with `ipv6_network`): the config has `EnableIPv4: false`, Nodes
    /// get their IPv6 podCIDR only and pods an IPv6 address only. The underlay keeps IPv4 too.
    pub ipv6_only: bool,
}

impl LabSpec {
    /// A host-gw lab of `nodes` nodes on 10.244.0.0/16 running `weft_bin`.
    pub fn new(nodes: usize, weft_bin: impl Into<PathBuf>) -> LabSpec {
        LabSpec {
            nodes,
            backend: "host-gw".to_owned(),
            network: DEFAULT_NETWORK.to_owned(),
            weft_bin: weft_bin.into(),
            extra_flags: Vec::new(),
            etcd_prefix: DEFAULT_ETCD_PREFIX.to_owned(),
            config: None,
            healthz_port: DEFAULT_HEALTHZ_PORT,
            agent_env: Vec::new(),
            kube: false,
            agent_prefix: Vec::new(),
            ipv6_network: None,
            ipv6_only: false,
        }
    }

    /// The config JSON that goes to `<prefix>/config`:
    /// `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}` unless `config` overrides it.
    pub fn config_json(&self) -> String {
        if let Some(raw) = &self.config {
            return raw.clone();
        }
        match &self.ipv6_network {
            Some(v6) if self.ipv6_only => serde_json::json!({"EnableIPv4": false,
                "EnableIPv6": true, "IPv6Network": v6, "Backend": {"Type": self.backend}}),
            None => {
                serde_json::json!({"Network": self.network, "Backend": {"Type": self.backend}})
            }
            Some(v6) => serde_json::json!({"Network": self.network, "EnableIPv6": true,
                "IPv6Network": v6, "Backend": {"Type": self.backend}}),
        }
        .to_string()
    }

    fn validate(&self) -> Result<()> {
        if !(1..=MAX_NODES).contains(&self.nodes) {
            bail!("nodes={} is out of range 1..={MAX_NODES}", self.nodes);
        }
        self.network
            .parse::<Ipv4Net>()
            .with_context(|| format!("network={:?} is not an IPv4 CIDR", self.network))?;
        if let Some(v6) = &self.ipv6_network {
            v6.parse::<ipnet::Ipv6Net>()
                .with_context(|| format!("ipv6_network={v6:?} is not an IPv6 CIDR"))?;
        }
        if self.ipv6_only && !(self.kube && self.ipv6_network.is_some()) {
            bail!("ipv6_only needs kube mode and an ipv6_network (etcd mode leases IPv4 keys)");
        }
        if !self.weft_bin.is_file() {
            bail!(
                "weft binary {} does not exist (build it with `cargo build --release`)",
                self.weft_bin.display()
            );
        }
        Ok(())
    }
}

/// One node: its namespace, its agent and (once added) its pod.
#[derive(Debug)]
struct Node {
    ns: String,
    ip: Ipv4Addr,
    dir: PathBuf,
    agent: Option<Child>,
    pod: Option<Pod>,
}

#[derive(Debug, Clone)]
struct Pod {
    ns: String,
    /// None in an IPv6-only lab.
    ip: Option<Ipv4Addr>,
    /// The pod's IPv6 address in a dual-stack lab.
    ip6: Option<Ipv6Addr>,
}

/// A running lab. Nodes are numbered from 1 (`node k` = namespace `<name>-n<k>` with
/// `eth0` 198.18.0.k).
#[derive(Debug)]
pub struct Lab {
    spec: LabSpec,
    name: String,
    dir: PathBuf,
    underlay: String,
    /// The "external" host's namespace, once [`Lab::add_external`] made it.
    external: Option<String>,
    etcd: Option<EtcdServer>,
    kube: Option<KubeLab>,
    nodes: Vec<Node>,
    keep: bool,
    torn_down: bool,
}

impl Lab {
    /// The lab's name, the prefix of all its namespaces (`wl1234x0`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lab's directory (per-node `n<k>/subnet.env` and `n<k>/weft.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn spec(&self) -> &LabSpec {
        &self.spec
    }

    /// Changes the flags given to agents started from now on (`extra_flags`), e.g. to restart
    /// a node with another setting.
    pub fn set_extra_flags(&mut self, flags: Vec<String>) {
        self.spec.extra_flags = flags;
    }

    /// Changes the environment given to agents started from now on (`agent_env`), e.g. a
    /// `NOTIFY_SOCKET` inside the lab's directory.
    pub fn set_agent_env(&mut self, env: Vec<(String, String)>) {
        self.spec.agent_env = env;
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// The underlay namespace (bridge `br0`, etcd).
    pub fn underlay_ns(&self) -> &str {
        &self.underlay
    }

    /// Node k's namespace.
    pub fn node_ns(&self, k: usize) -> Result<&str> {
        Ok(&self.node(k)?.ns)
    }

    /// Node k's `eth0` address, 198.18.0.k (its PublicIP).
    pub fn node_ip(&self, k: usize) -> Result<Ipv4Addr> {
        Ok(self.node(k)?.ip)
    }

    /// Node k's pod namespace, once [`Lab::add_pod`] made it.
    pub fn pod_ns(&self, k: usize) -> Result<&str> {
        Ok(&self.pod(k)?.ns)
    }

    /// Node k's pod address (its subnet's .2), once [`Lab::add_pod`] made it.
    pub fn pod_ip(&self, k: usize) -> Result<Ipv4Addr> {
        self.pod(k)?
            .ip
            .ok_or_else(|| anyhow::anyhow!("node {k}'s pod has no IPv4 address (IPv6-only lab)"))
    }

    /// Node k's pod's IPv6 address (a dual-stack lab).
    pub fn pod_ip6(&self, k: usize) -> Result<Ipv6Addr> {
        self.pod(k)?
            .ip6
            .ok_or_else(|| anyhow::anyhow!("node {k}'s pod has no IPv6 address"))
    }

    /// Node k's underlay IPv6 address in a dual-stack lab, `fd00:198:18::k` (its PublicIPv6).
    pub fn node_ip6(&self, k: usize) -> Result<Ipv6Addr> {
        self.node(k)?;
        topology::node_ip6(k)
    }

    /// The path given to node k's agent as `--peer-cache-file`.
    pub fn peer_cache_file(&self, k: usize) -> Result<PathBuf> {
        Ok(self.subnet_file(k)?.with_file_name("peers.json"))
    }

    /// The path given to node k's agent as `--subnet-file`.
    pub fn subnet_file(&self, k: usize) -> Result<PathBuf> {
        Ok(self.node(k)?.dir.join("subnet.env"))
    }

    /// Node k's agent log (stdout and stderr of every run, appended).
    pub fn log_path(&self, k: usize) -> Result<PathBuf> {
        Ok(self.node(k)?.dir.join("weft.log"))
    }

    /// Node k's agent log as text (empty if none yet).
    pub fn log(&self, k: usize) -> Result<String> {
        let path = self.log_path(k)?;
        match fs::read(&path) {
            Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The etcd server (for outage tests: `stop`, `restart`).
    pub fn etcd(&mut self) -> Result<&mut EtcdServer> {
        self.etcd
            .as_mut()
            .ok_or_else(|| anyhow!("etcd is not running (a kube-mode lab has none)"))
    }

    /// etcd's client URL, reachable from the node namespaces.
    pub fn etcd_endpoint(&self) -> Result<String> {
        Ok(self.etcd_ref()?.endpoint())
    }

    fn etcd_ref(&self) -> Result<&EtcdServer> {
        self.etcd
            .as_ref()
            .ok_or_else(|| anyhow!("etcd is not running"))
    }

    /// `etcdctl <args>` (v3 API) against the lab's etcd; returns stdout.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String> {
        self.etcd_ref()?.etcdctl(args)
    }

    /// Writes `<prefix>/config` (kube mode: net-conf.json).
    pub fn put_config(&self, json: &str) -> Result<()> {
        if self.spec.kube {
            return self.write_net_conf(json);
        }
        let key = format!("{}/config", self.spec.etcd_prefix);
        self.etcdctl(&["put", &key, json])
            .with_context(|| format!("writing {key}"))?;
        Ok(())
    }

    fn node(&self, k: usize) -> Result<&Node> {
        k.checked_sub(1)
            .and_then(|i| self.nodes.get(i))
            .ok_or_else(|| anyhow!("node {k} does not exist (lab has {})", self.nodes.len()))
    }

    fn node_mut(&mut self, k: usize) -> Result<&mut Node> {
        let n = self.nodes.len();
        k.checked_sub(1)
            .and_then(|i| self.nodes.get_mut(i))
            .ok_or_else(|| anyhow!("node {k} does not exist (lab has {n})"))
    }

    fn pod(&self, k: usize) -> Result<&Pod> {
        self.node(k)?
            .pod
            .as_ref()
            .ok_or_else(|| anyhow!("node {k} has no pod (call add_pod first)"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_flannels_shape() {
        let spec = LabSpec::new(3, "/bin/true");
        let v: serde_json::Value = serde_json::from_str(&spec.config_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}})
        );
        let raw = LabSpec {
            config: Some("{}".into()),
            ..spec
        };
        assert_eq!(raw.config_json(), "{}");
    }

    #[test]
    fn spec_validation_names_the_field() {
        let mut spec = LabSpec::new(0, "/bin/true");
        assert!(spec.validate().unwrap_err().to_string().contains("nodes=0"));
        spec.nodes = 2;
        spec.network = "10.244.0.0".into();
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("network=")
        );
        spec.network = DEFAULT_NETWORK.into();
        spec.weft_bin = "/nonexistent/weft".into();
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/weft")
        );
    }
}
