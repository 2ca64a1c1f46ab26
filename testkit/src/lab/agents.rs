//! The agents: each node's `weft` command line, starting, signalling, stopping, killing and
//! restarting it, and waiting for it to exit.
use std::fs;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::sys;
use super::{DEFAULT_ETCD_PREFIX, Lab, POLL, STOP_GRACE, check_interrupted};

impl Lab {
    /// The agent's command line for node k: `ip netns exec <nk> [<agent_prefix>…] <weft> --etcd-endpoints=…
    /// --subnet-file=… --peer-cache-file=… [--etcd-prefix=…] [--healthz-port=…] <extra flags>`.
    fn agent_command(&self, k: usize) -> Result<std::process::Command> {
        let node = self.node(k)?;
        let bin = self.spec.weft_bin.to_string_lossy().into_owned();
        let mut cmd = match self.spec.agent_prefix.split_first() {
            Some((program, args)) => {
                let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
                args.push(&bin);
                sys::netns_exec(&node.ns, program, &args)
            }
            None => sys::netns_exec(&node.ns, &bin, &[]),
        };
        if self.spec.kube {
            cmd.arg("--kube-subnet-mgr");
            cmd.arg(format!(
                "--kubeconfig-file={}",
                self.kubeconfig_path().display()
            ));
            cmd.arg(format!(
                "--net-config-path={}",
                self.net_conf_path().display()
            ));
            cmd.env("NODE_NAME", Self::node_name(k));
        } else {
            cmd.arg(format!("--etcd-endpoints={}", self.etcd_endpoint()?));
        }
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

    /// Sends `signal` to node k's agent if it is running (SIGHUP: an audit at once).
    pub fn signal_node(&mut self, k: usize, signal: Signal) -> Result<()> {
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
    pub(super) fn reap_node(
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
}
