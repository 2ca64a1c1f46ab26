//! What the agents wrote and what the kernel holds: subnet.env (read and waited for), the
//! routing table and other `ip -j` output, and the agents' logs.
use std::fs;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, anyhow, bail};
use ipnet::Ipv4Net;

use super::sys;
use super::{Lab, POLL, SubnetEnv, check_interrupted};

impl Lab {
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
                    if env.subnet.is_some() || env.ipv6_subnet.is_some() {
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

    /// Node k's main routing table, `ip -j route show` parsed.
    pub fn routes(&self, k: usize) -> Result<serde_json::Value> {
        self.ip_json(k, &["route", "show"])
    }

    /// Node k's main routing table as `ip route` prints it.
    pub fn routes_text(&self, k: usize) -> Result<String> {
        sys::ip(Some(self.node_ns(k)?), &["route", "show"])
    }

    /// `ip -6 route show` in node k (a dual-stack lab).
    pub fn routes6_text(&self, k: usize) -> Result<String> {
        sys::ip(Some(self.node_ns(k)?), &["-6", "route", "show"])
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
}
