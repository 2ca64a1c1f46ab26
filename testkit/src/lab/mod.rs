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
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, anyhow, bail};
use ipnet::Ipv4Net;
pub use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::etcd_server::{EtcdServer, EtcdServerOpts};

mod cli;
mod sys;

pub use cli::run_cli;
pub use net_conf::SubnetEnv;

/// The underlay bridge's address (`br0` in the underlay namespace); etcd listens here and it
/// is every node's default gateway.
pub const UNDERLAY_GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
/// Prefix length of the underlay network 198.18.0.0/24.
pub const UNDERLAY_PREFIX_LEN: u8 = 24;
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
        }
    }

    /// The config JSON that goes to `<prefix>/config`:
    /// `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}` unless `config` overrides it.
    pub fn config_json(&self) -> String {
        if let Some(raw) = &self.config {
            return raw.clone();
        }
        serde_json::json!({"Network": self.network, "Backend": {"Type": self.backend}}).to_string()
    }

    fn validate(&self) -> Result<()> {
        if !(1..=MAX_NODES).contains(&self.nodes) {
            bail!("nodes={} is out of range 1..={MAX_NODES}", self.nodes);
        }
        self.network
            .parse::<Ipv4Net>()
            .with_context(|| format!("network={:?} is not an IPv4 CIDR", self.network))?;
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
    ip: Ipv4Addr,
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
    nodes: Vec<Node>,
    keep: bool,
    torn_down: bool,
}

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

    // ===== accessors =====

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
        Ok(self.pod(k)?.ip)
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
            .ok_or_else(|| anyhow!("etcd is not running"))
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

    /// Writes `<prefix>/config`.
    pub fn put_config(&self, json: &str) -> Result<()> {
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

    // ===== agents =====

    /// The agent's command line for node k: `ip netns exec <nk> <weft> --etcd-endpoints=…
    /// --subnet-file=… --peer-cache-file=… [--etcd-prefix=…] [--healthz-port=…] <extra flags>`.
    fn agent_command(&self, k: usize) -> Result<std::process::Command> {
        let node = self.node(k)?;
        let bin = self.spec.weft_bin.to_string_lossy().into_owned();
        let mut cmd = sys::netns_exec(&node.ns, &bin, &[]);
        cmd.arg(format!("--etcd-endpoints={}", self.etcd_endpoint()?));
        cmd.arg(format!("--subnet-file={}", self.subnet_file(k)?.display()));
        // Each node its own peer cache (they share one filesystem).
        cmd.arg(format!(
            "--peer-cache-file={}",
            self.peer_cache_file(k)?.display()
        ));
        if self.spec.etcd_prefix != DEFAULT_ETCD_PREFIX {
            cmd.arg(format!("--etcd-prefix={}", self.spec.etcd_prefix));
        }
        if self.spec.healthz_port != 0 {
            cmd.arg(format!("--healthz-port={}", self.spec.healthz_port));
        }
        cmd.args(&self.spec.extra_flags);
        cmd.envs(self.spec.agent_env.iter().map(|(k, v)| (k, v)));
        let log_path = self.log_path(k)?;
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        use std::io::Write as _;
        writeln!(log, "=== lab: {}", sys::show(&cmd))
            .with_context(|| format!("writing {}", log_path.display()))?;
        let log_err = log.try_clone().context("duplicating the log file")?;
        // Plain text in the log file (tracing-subscriber colours by default).
        cmd.env("NO_COLOR", "1");
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        // Own process group: a Ctrl-C in `weft-lab`'s terminal reaches the lab, which then
        // stops the agents in order, instead of killing them behind its back.
        cmd.process_group(0);
        Ok(cmd)
    }

    /// Starts node k's agent. Fails if it is already running.
    pub fn start_node(&mut self, k: usize) -> Result<()> {
        if self.node_running(k)? {
            bail!("node {k}'s agent is already running");
        }
        let mut cmd = self.agent_command(k)?;
        let child = cmd
            .spawn()
            .with_context(|| format!("starting `{}`", sys::show(&cmd)))?;
        tracing::info!(node = k, pid = child.id(), "started {}", sys::show(&cmd));
        self.node_mut(k)?.agent = Some(child);
        Ok(())
    }

    /// Starts every node's agent at the same moment (the spawns wait on one barrier), as
    /// when a cluster boots.
    pub fn start_all(&mut self) -> Result<()> {
        for k in 1..=self.nodes.len() {
            if self.node_running(k)? {
                bail!("node {k}'s agent is already running");
            }
        }
        let mut cmds = (1..=self.nodes.len())
            .map(|k| self.agent_command(k))
            .collect::<Result<Vec<_>>>()?;
        let barrier = Barrier::new(cmds.len());
        let spawned: Vec<std::io::Result<Child>> = std::thread::scope(|s| {
            let handles: Vec<_> = cmds
                .iter_mut()
                .map(|cmd| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        cmd.spawn()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("spawn thread panicked")))
                })
                .collect()
        });
        let mut first_err = None;
        for (i, res) in spawned.into_iter().enumerate() {
            match res {
                Ok(child) => {
                    tracing::info!(node = i + 1, pid = child.id(), "started weft");
                    self.nodes[i].agent = Some(child);
                }
                Err(e) => {
                    let e = anyhow!(e).context(format!("starting `{}`", sys::show(&cmds[i])));
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Whether node k's agent is running (started and not exited).
    pub fn node_running(&mut self, k: usize) -> Result<bool> {
        let node = self.node_mut(k)?;
        match &mut node.agent {
            None => Ok(false),
            Some(child) => Ok(child
                .try_wait()
                .with_context(|| format!("checking node {k}'s agent"))?
                .is_none()),
        }
    }

    /// How node k's agent exited, if it did; `None` while it runs. The exit is remembered
    /// until the node is started again.
    pub fn node_exit_status(&mut self, k: usize) -> Result<Option<ExitStatus>> {
        let node = self.node_mut(k)?;
        match &mut node.agent {
            None => bail!("node {k}'s agent was never started"),
            Some(child) => child
                .try_wait()
                .with_context(|| format!("checking node {k}'s agent")),
        }
    }

    /// Waits until node k's agent exits on its own, up to `deadline`.
    pub fn wait_node_exit(&mut self, k: usize, deadline: Duration) -> Result<ExitStatus> {
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = self.node_exit_status(k)? {
                return Ok(status);
            }
            if Instant::now() > until {
                bail!(
                    "node {k}'s agent still runs after {deadline:?}; log:\n{}",
                    self.log_tail(k, 30)
                );
            }
            check_interrupted()?;
            std::thread::sleep(POLL);
        }
    }

    /// Sends `signal` to node k's agent and waits for it to exit (SIGKILL after 10 s, which
    /// is then an error). Returns how it exited; `Ok(None)` if it was never started.
    pub fn stop_node(&mut self, k: usize, signal: Signal) -> Result<Option<ExitStatus>> {
        self.signal_node(k, signal)?;
        self.reap_node(k, signal, Instant::now() + STOP_GRACE)
    }

    /// Sends `signal` to node k's agent if it is running.
    fn signal_node(&mut self, k: usize, signal: Signal) -> Result<()> {
        let node = self.node_mut(k)?;
        let Some(child) = node.agent.as_mut() else {
            return Ok(());
        };
        if child.try_wait().context("checking agent")?.is_some() {
            return Ok(());
        }
        let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
        match nix::sys::signal::kill(pid, signal) {
            // ESRCH: it exited between try_wait and kill; reaping collects it.
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => bail!("kill -{signal} {pid} (node {k}): {e}"),
        }
    }

    /// Waits until node k's agent has exited after `signal`; past `until` it is killed and
    /// that is an error.
    fn reap_node(
        &mut self,
        k: usize,
        signal: Signal,
        until: Instant,
    ) -> Result<Option<ExitStatus>> {
        let node = self.node_mut(k)?;
        let Some(child) = node.agent.as_mut() else {
            return Ok(None);
        };
        loop {
            if let Some(status) = child.try_wait().context("waiting for agent")? {
                tracing::info!(node = k, %status, "weft stopped after {signal}");
                return Ok(Some(status));
            }
            if Instant::now() > until {
                // Best effort: the error below is what matters.
                let _ = child.kill();
                let _ = child.wait();
                bail!("node {k}'s agent ignored {signal} for {STOP_GRACE:?} and was killed");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs node k's agent (a crash) and reaps it.
    pub fn kill_node(&mut self, k: usize) -> Result<Option<ExitStatus>> {
        self.stop_node(k, Signal::SIGKILL)
    }

    /// SIGTERM, wait for the exit, start again.
    pub fn restart_node(&mut self, k: usize) -> Result<()> {
        self.stop_node(k, Signal::SIGTERM)?;
        self.start_node(k)
    }

    // ===== subnet.env =====

    /// Node k's subnet.env as written (text).
    pub fn subnet_env_text(&self, k: usize) -> Result<String> {
        let path = self.subnet_file(k)?;
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// Node k's subnet.env, parsed (as the flannel CNI plugin reads it).
    pub fn subnet_env(&self, k: usize) -> Result<SubnetEnv> {
        let text = self.subnet_env_text(k)?;
        SubnetEnv::parse(&text).with_context(|| {
            format!(
                "parsing {}",
                self.subnet_file(k).unwrap_or_default().display()
            )
        })
    }

    /// Node k's leased IPv4 subnet (`10.244.5.0/24`) from its subnet.env.
    pub fn subnet(&self, k: usize) -> Result<Ipv4Net> {
        self.subnet_env(k)?
            .subnet
            .ok_or_else(|| anyhow!("node {k}'s subnet.env has no FLANNEL_SUBNET"))
    }

    /// Waits up to `deadline` for node k's subnet.env (with a parseable FLANNEL_SUBNET). Fails
    /// early, with the agent's log, when the agent exits.
    pub fn wait_subnet_env(&mut self, k: usize, deadline: Duration) -> Result<SubnetEnv> {
        self.wait_subnet_env_since(k, None, deadline)
    }

    /// Like [`Lab::wait_subnet_env`], but only accepts a file modified after `since` (to see
    /// a restarted agent write it again).
    pub fn wait_subnet_env_since(
        &mut self,
        k: usize,
        since: Option<SystemTime>,
        deadline: Duration,
    ) -> Result<SubnetEnv> {
        let path = self.subnet_file(k)?;
        let until = Instant::now() + deadline;
        loop {
            let fresh = match (fs::metadata(&path), since) {
                (Ok(_), None) => true,
                (Ok(m), Some(t)) => m.modified().is_ok_and(|m| m > t),
                (Err(_), _) => false,
            };
            if fresh {
                if let Ok(env) = self.subnet_env(k) {
                    if env.subnet.is_some() {
                        return Ok(env);
                    }
                }
            }
            if let Some(status) = self.node_exit_status(k)? {
                bail!(
                    "node {k}'s agent exited ({status}) before writing {}; log:\n{}",
                    path.display(),
                    self.log_tail(k, 40)
                );
            }
            if Instant::now() > until {
                bail!(
                    "node {k}: no subnet.env at {} after {deadline:?}; log:\n{}",
                    path.display(),
                    self.log_tail(k, 40)
                );
            }
            check_interrupted()?;
            std::thread::sleep(POLL);
        }
    }

    /// Modification time of node k's subnet.env, if it exists.
    pub fn subnet_env_mtime(&self, k: usize) -> Result<Option<SystemTime>> {
        match fs::metadata(self.subnet_file(k)?) {
            Ok(m) => Ok(Some(m.modified().context("subnet.env mtime")?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).context("subnet.env metadata"),
        }
    }

    // ===== pods =====

    /// Adds node k's pod from its subnet.env: bridge `cni0` in the node with the subnet's .1,
    /// namespace `<name>-p<k>` with `eth0` (veth into `cni0`) on .2 and a default route via
    /// .1; MTU from FLANNEL_MTU. This is what the bridge CNI plugin would build.
    pub fn add_pod(&mut self, k: usize) -> Result<Ipv4Addr> {
        if self.node(k)?.pod.is_some() {
            bail!("node {k} already has a pod");
        }
        let env = self.subnet_env(k)?;
        let subnet = env
            .subnet
            .ok_or_else(|| anyhow!("node {k}'s subnet.env has no FLANNEL_SUBNET"))?;
        let (gw, pod) = pod_addresses(subnet)?;
        let mtu = env.mtu.to_string();
        let n = self.node(k)?.ns.clone();
        let p = format!("{}-p{k}", self.name);
        if !sys::netns_add(&p)? {
            bail!("namespace {p} already exists");
        }
        // Registered before configuring, so a failure below still gets it deleted.
        self.node_mut(k)?.pod = Some(Pod {
            ns: p.clone(),
            ip: pod.addr(),
        });
        let gw_s = gw.to_string();
        let pod_s = pod.to_string();
        let gw_ip = gw.addr().to_string();
        let has_cni0 = sys::output(&mut sys::ip_cmd(Some(&n), &["link", "show", "cni0"]))?
            .status
            .success();
        if !has_cni0 {
            sys::ip(Some(&n), &["link", "add", "cni0", "type", "bridge"])?;
        }
        sys::ip(Some(&n), &["addr", "replace", &gw_s, "dev", "cni0"])?;
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
        sys::ip(Some(&p), &["addr", "add", &pod_s, "dev", "eth0"])?;
        sys::ip(Some(&p), &["link", "set", "eth0", "up"])?;
        sys::ip(
            Some(&p),
            &["route", "add", "default", "via", &gw_ip, "dev", "eth0"],
        )?;
        tracing::info!(node = k, pod = %pod, "pod added in {p}");
        Ok(pod.addr())
    }

    /// Adds a pod to every node (each needs its subnet.env).
    pub fn add_pods(&mut self) -> Result<()> {
        for k in 1..=self.nodes.len() {
            self.add_pod(k)?;
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

    // ===== observing =====

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

    /// One ping (5 s budget) for every ordered pair of pods, run in parallel:
    /// `(from, to, replied)`, sorted.
    pub fn ping_matrix(&self) -> Result<Vec<(usize, usize, bool)>> {
        let pairs: Vec<(usize, usize)> = (1..=self.nodes.len())
            .flat_map(|i| (1..=self.nodes.len()).map(move |j| (i, j)))
            .filter(|(i, j)| i != j)
            .collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = pairs
                .iter()
                .map(|&(i, j)| s.spawn(move || self.ping(i, j, 1, Duration::from_secs(5))))
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

    /// Node k's main routing table, `ip -j route show` parsed.
    pub fn routes(&self, k: usize) -> Result<serde_json::Value> {
        self.ip_json(k, &["route", "show"])
    }

    /// Node k's main routing table as `ip route` prints it.
    pub fn routes_text(&self, k: usize) -> Result<String> {
        sys::ip(Some(self.node_ns(k)?), &["route", "show"])
    }

    /// `ip <args>` in node k; returns stdout.
    pub fn ip(&self, k: usize, args: &[&str]) -> Result<String> {
        sys::ip(Some(self.node_ns(k)?), args)
    }

    /// `ip -j <args>` in node k, parsed.
    pub fn ip_json(&self, k: usize, args: &[&str]) -> Result<serde_json::Value> {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let text = sys::ip(Some(self.node_ns(k)?), &full)?;
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Array(Vec::new()));
        }
        serde_json::from_str(&text).with_context(|| format!("parsing `ip {}`", full.join(" ")))
    }

    /// The last `n` lines of node k's log.
    pub fn log_tail(&self, k: usize, n: usize) -> String {
        match self.log(k) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(n)..].join("\n")
            }
            Err(e) => format!("(no log: {e:#})"),
        }
    }

    /// Prints every node's log, subnet.env and routes to stderr (for failing tests).
    pub fn dump_logs(&self) {
        eprintln!("===== lab {} ({}) =====", self.name, self.dir.display());
        for k in 1..=self.nodes.len() {
            eprintln!("----- node {k}: weft.log -----");
            eprintln!("{}", self.log_tail(k, 200));
            match self.subnet_env_text(k) {
                Ok(env) => eprintln!("----- node {k}: subnet.env -----\n{env}"),
                Err(e) => eprintln!("----- node {k}: subnet.env: {e:#}"),
            }
            match self.routes_text(k) {
                Ok(r) => eprintln!("----- node {k}: ip route -----\n{r}"),
                Err(e) => eprintln!("----- node {k}: ip route: {e:#}"),
            }
        }
        // On a panic EtcdServer's own Drop prints its log tail.
        if let Some(etcd) = self.etcd.as_ref().filter(|_| !std::thread::panicking()) {
            eprintln!(
                "----- etcd log ({}) -----\n{}",
                etcd.log_path().display(),
                etcd.log_tail(30)
            );
        }
    }

    // ===== teardown =====

    /// Leaves everything running when the lab is dropped (`weft-lab --keep`).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Tears everything down now and returns every failure in one error.
    pub fn teardown(mut self) -> Result<()> {
        let errors = self.teardown_inner();
        if errors.is_empty() {
            return Ok(());
        }
        bail!("lab teardown failed:\n- {}", errors.join("\n- "))
    }

    /// Stops agents (SIGTERM, SIGKILL after the grace), stops etcd, deletes every namespace
    /// (killing what still runs in it) and the lab directory. Keeps going after a failure
    /// and returns all of them.
    fn teardown_inner(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        if std::mem::replace(&mut self.torn_down, true) {
            return errors;
        }
        // SIGTERM to all first so they shut down in parallel, then collect.
        let until = Instant::now() + STOP_GRACE;
        for k in 1..=self.nodes.len() {
            if let Err(e) = self.signal_node(k, Signal::SIGTERM) {
                errors.push(format!("{e:#}"));
            }
        }
        for k in 1..=self.nodes.len() {
            if let Err(e) = self.reap_node(k, Signal::SIGTERM, until) {
                errors.push(format!("{e:#}"));
            }
        }
        // EtcdServer's Drop kills etcd and removes its files.
        self.etcd = None;
        for node in &self.nodes {
            if let Some(pod) = &node.pod {
                if let Err(e) = sys::netns_purge(&pod.ns) {
                    errors.push(format!("{e:#}"));
                }
            }
            if let Err(e) = sys::netns_purge(&node.ns) {
                errors.push(format!("{e:#}"));
            }
        }
        if let Some(ext) = self.external.take() {
            if let Err(e) = sys::netns_purge(&ext) {
                errors.push(format!("{e:#}"));
            }
        }
        if let Err(e) = sys::netns_purge(&self.underlay) {
            errors.push(format!("{e:#}"));
        }
        self.nodes.clear();
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                errors.push(format!("removing {}: {e}", self.dir.display()));
            }
            _ => {}
        }
        errors
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.keep {
            // The etcd child must outlive us: forgetting it skips its Drop (kill + rm).
            if let Some(etcd) = self.etcd.take() {
                std::mem::forget(etcd);
            }
            return;
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
        for e in self.teardown_inner() {
            eprintln!("lab {} teardown: {e}", self.name);
        }
    }
}

/// Removes a kept lab by name: kills what runs in its namespaces, deletes them and its files.
/// Returns the namespaces it removed.
pub fn cleanup(name: &str) -> Result<Vec<String>> {
    if name.is_empty() || name.contains('/') {
        bail!("lab name {name:?} is not valid");
    }
    let prefix = format!("{name}-");
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    let mut list = sys::netns_list()?;
    // Pods and nodes before the underlay, as the lab itself does.
    list.sort_by_key(|ns| ns.ends_with("-u"));
    for ns in list.into_iter().filter(|ns| ns.starts_with(&prefix)) {
        match sys::netns_purge(&ns) {
            Ok(()) => removed.push(ns),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let dir = std::env::temp_dir().join(format!("weft-lab-{name}"));
    if let Ok(etcd_dir) = fs::read_to_string(dir.join("etcd-dir")) {
        let etcd_dir = PathBuf::from(etcd_dir.trim());
        if etcd_dir.starts_with(std::env::temp_dir()) {
            if let Err(e) = fs::remove_dir_all(&etcd_dir) {
                errors.push(format!("removing {}: {e}", etcd_dir.display()));
            }
        }
    }
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            errors.push(format!("removing {}: {e}", dir.display()));
        }
        _ => {}
    }
    if !errors.is_empty() {
        bail!("cleanup of lab {name} failed:\n- {}", errors.join("\n- "));
    }
    Ok(removed)
}

/// Picks a name no other lab uses and creates its underlay namespace (creating the
/// namespace is what claims the name, so two processes cannot both get it).
fn claim_name() -> Result<(String, String)> {
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

fn lab_name(pid: u32, n: usize) -> String {
    format!("wl{pid}x{n}")
}

/// 198.18.0.k.
fn node_ip(k: usize) -> Result<Ipv4Addr> {
    match u8::try_from(k) {
        Ok(b) if (1..=MAX_NODES).contains(&k) => Ok(Ipv4Addr::new(198, 18, 0, b)),
        _ => bail!("node {k} is out of range 1..={MAX_NODES}"),
    }
}

/// The addresses of a pod behind `cni0` in `subnet`: (`cni0` = .1, pod = .2), both with the
/// subnet's prefix length, as the bridge CNI plugin with host-local IPAM hands them out.
fn pod_addresses(subnet: Ipv4Net) -> Result<(Ipv4Net, Ipv4Net)> {
    let net = subnet.trunc();
    let first = u32::from(net.network());
    if net.prefix_len() > 29 {
        bail!("subnet {net} is too small for a bridge and a pod address");
    }
    let mk = |n: u32| Ipv4Net::new(Ipv4Addr::from(first + n), net.prefix_len());
    Ok((mk(1)?, mk(2)?))
}

/// `sysctl net.ipv4.ip_forward=1` inside `ns` (procfs shows the writer's namespace).
fn set_ip_forward(ns: &str) -> Result<()> {
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
    fn pod_addresses_are_dot1_and_dot2() {
        let (gw, pod) = pod_addresses("10.244.5.0/24".parse().unwrap()).unwrap();
        assert_eq!(gw.to_string(), "10.244.5.1/24");
        assert_eq!(pod.to_string(), "10.244.5.2/24");
        let (gw, _) = pod_addresses("10.244.5.1/24".parse().unwrap()).unwrap();
        assert_eq!(gw.to_string(), "10.244.5.1/24");
        assert!(pod_addresses("10.244.5.0/30".parse().unwrap()).is_err());
    }

    #[test]
    fn node_addresses() {
        assert_eq!(node_ip(1).unwrap(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(node_ip(253).unwrap(), Ipv4Addr::new(198, 18, 0, 253));
        assert!(node_ip(0).is_err());
        assert!(node_ip(254).is_err());
    }

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
