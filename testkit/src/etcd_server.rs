//! A real etcd server (Debian `etcd` 3.4) for the tests and the local lab.
//!
//! The server runs as a child process with short raft timings
//! (`--heartbeat-interval 10 --election-timeout 100`: healthy in about 0.1 s instead of 1 s), a
//! peer URL on 127.0.0.1 with a random port, and its data dir and log file in a private temp
//! directory that is removed on drop. Optionally it runs inside a network namespace (`ip netns exec
//! <ns>`) and with mutual TLS.
//!
//! The functions here block (they poll with `std::thread::sleep`); call them before starting
//! work on a runtime or from `spawn_blocking`.
use std::fs;
use std::io::{self, Read as _};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

/// How long `start` and `restart` wait for the server to report healthy.
const HEALTH_DEADLINE: Duration = Duration::from_secs(20);
/// Pause between health polls.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Attempts with fresh random ports when a port turned out to be taken.
const PORT_ATTEMPTS: u32 = 4;

/// Mutual TLS for the client URL: etcd gets `--cert-file --key-file --trusted-ca-file
/// --client-cert-auth` and `https://` URLs.
///
/// The certificate is also used as the client certificate of the health check (`etcdctl`), so
/// it needs `extendedKeyUsage = serverAuth,clientAuth`.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Where and how to run the server.
#[derive(Debug, Clone)]
pub struct EtcdServerOpts {
    /// Run via `ip netns exec <ns>` (its `lo` is brought up for the peer URL).
    pub netns: Option<String>,
    /// Address of the client URL.
    pub listen_ip: IpAddr,
    /// Client port; `None` picks a random free one.
    pub client_port: Option<u16>,
    /// Serve clients over mutual TLS.
    pub tls: Option<EtcdTls>,
}

impl Default for EtcdServerOpts {
    fn default() -> Self {
        EtcdServerOpts {
            netns: None,
            listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_port: None,
            tls: None,
        }
    }
}

/// A running etcd. Drop kills it, waits for it and removes its data dir.
#[derive(Debug)]
pub struct EtcdServer {
    opts: EtcdServerOpts,
    client_port: u16,
    peer_port: u16,
    /// Private temp directory holding `data/` and `etcd.log`.
    root: PathBuf,
    child: Option<Child>,
    /// `--name`, and `--initial-cluster` when this is a member of a cluster
    /// ([`crate::etcd_cluster`]); a lone server is `weft-test` alone.
    name: String,
    initial_cluster: Option<String>,
}

impl EtcdServer {
    /// Starts a fresh etcd and waits (up to 20 s) until `etcdctl endpoint health` succeeds.
    pub fn start(opts: EtcdServerOpts) -> Result<EtcdServer> {
        let root = make_private_dir().context("creating etcd temp dir")?;
        if let Some(ns) = &opts.netns {
            // The peer URL is on 127.0.0.1; a fresh namespace has `lo` down.
            let status = Command::new("ip")
                .args(["netns", "exec", ns, "ip", "link", "set", "lo", "up"])
                .status()
                .with_context(|| format!("running ip netns exec {ns} ip link set lo up"))?;
            if !status.success() {
                let _ = fs::remove_dir_all(&root);
                bail!("ip netns exec {ns} ip link set lo up failed: {status}");
            }
        }
        let mut server = EtcdServer {
            client_port: 0,
            peer_port: 0,
            root,
            child: None,
            opts,
            name: "weft-test".into(),
            initial_cluster: None,
        };
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            server.client_port = match server.opts.client_port {
                Some(p) => p,
                None => free_port(server.opts.listen_ip)?,
            };
            server.peer_port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
            match server.launch_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    let port_clash = server.log_text().contains("address already in use");
                    server.kill();
                    if !port_clash || server.opts.client_port.is_some() {
                        return Err(e);
                    }
                    tracing::warn!("etcd port already in use, retrying with other ports");
                    // Start over with a clean data dir (the member id depends on the peer URL).
                    let _ = fs::remove_dir_all(server.data_dir());
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("etcd did not start")))
    }

    /// The client URL, `http://ip:port` (or `https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.opts.tls.is_some() {
            "https"
        } else {
            "http"
        };
        match self.opts.listen_ip {
            IpAddr::V4(ip) => format!("{scheme}://{ip}:{}", self.client_port),
            IpAddr::V6(ip) => format!("{scheme}://[{ip}]:{}", self.client_port),
        }
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The etcd data dir (`<temp>/data`).
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The file etcd's stdout and stderr go to.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("etcd.log")
    }

    /// Whether the server process is running (started and not stopped).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server (SIGKILL; etcd's WAL is durable) and waits for it. Idempotent.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts the server again on the same data dir and ports (for outage tests) and waits
    /// until it is healthy. Stops it first if it is running.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let deadline = Instant::now() + HEALTH_DEADLINE;
        // The old listening socket is gone once the process is reaped, but be tolerant of
        // a slow kernel: retry while the log says the address is in use.
        loop {
            match self.launch_and_wait() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let clash = self.log_text().contains("address already in use");
                    self.kill();
                    if !clash || Instant::now() > deadline {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    /// Runs `etcdctl` against this server (v3 API, with its TLS files and in its namespace)
    /// and returns stdout. Fails with stderr when etcdctl exits non-zero.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String> {
        self.etcdctl_with_timeout(args, "5s")
    }

    fn etcdctl_with_timeout(&self, args: &[&str], timeout: &str) -> Result<String> {
        let mut cmd = self.command("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .arg(format!("--command-timeout={timeout}"))
            .arg(format!("--dial-timeout={timeout}"));
        if let Some(tls) = &self.opts.tls {
            cmd.arg(format!("--cacert={}", tls.ca_file.display()))
                .arg(format!("--cert={}", tls.cert_file.display()))
                .arg(format!("--key={}", tls.key_file.display()));
        }
        cmd.args(args);
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running etcdctl {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "etcdctl {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command for `program`, wrapped in `ip netns exec` when the server runs in a namespace.
    fn command(&self, program: &str) -> Command {
        match &self.opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        }
    }

    /// A member of a cluster, not started: its ports chosen, its data dir made.
    pub(crate) fn member(
        opts: EtcdServerOpts,
        name: &str,
        client_port: u16,
        peer_port: u16,
    ) -> Result<EtcdServer> {
        Ok(EtcdServer {
            client_port,
            peer_port,
            root: make_private_dir().context("creating etcd temp dir")?,
            child: None,
            opts,
            name: name.to_owned(),
            initial_cluster: None,
        })
    }

    /// `name=http://127.0.0.1:<peer port>`, this member's entry of `--initial-cluster`.
    pub(crate) fn peer_entry(&self) -> String {
        format!("{}=http://127.0.0.1:{}", self.name, self.peer_port)
    }

    pub(crate) fn set_initial_cluster(&mut self, cluster: String) {
        self.initial_cluster = Some(cluster);
    }

    fn launch_and_wait(&mut self) -> Result<()> {
        self.launch()?;
        self.wait_healthy()
    }

    /// Spawns etcd (a cluster's members are all launched before any can be healthy).
    pub(crate) fn launch(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("opening {}", self.log_path().display()))?;
        let log_err = log.try_clone().context("duplicating etcd log file")?;
        let scheme = if self.opts.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let client_url = self.endpoint();
        debug_assert!(client_url.starts_with(scheme));
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = self.command("etcd");
        let initial_cluster = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={peer_url}", self.name));
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--heartbeat-interval")
            .arg("10")
            .arg("--election-timeout")
            .arg("100");
        if let Some(tls) = &self.opts.tls {
            cmd.arg("--cert-file")
                .arg(&tls.cert_file)
                .arg("--key-file")
                .arg(&tls.key_file)
                .arg("--trusted-ca-file")
                .arg(&tls.ca_file)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .context("spawning etcd (is the Debian etcd-server package installed?)")?;
        self.child = Some(child);
        tracing::debug!(endpoint = %client_url, data_dir = %self.data_dir().display(), "etcd started");
        Ok(())
    }

    /// Waits (up to 20 s) until `etcdctl endpoint health` succeeds on this server.
    pub(crate) fn wait_healthy(&mut self) -> Result<()> {
        let client_url = self.endpoint();
        let deadline = Instant::now() + HEALTH_DEADLINE;
        loop {
            let exited = match &mut self.child {
                Some(child) => child.try_wait().context("waiting for etcd")?,
                None => None,
            };
            if let Some(status) = exited {
                self.child = None;
                bail!(
                    "etcd exited early ({status}); log {}:\n{}",
                    self.log_path().display(),
                    self.log_tail(40)
                );
            }
            if self
                .etcdctl_with_timeout(&["endpoint", "health"], "1s")
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd at {client_url} not healthy after {HEALTH_DEADLINE:?}; log {}:\n{}",
                    self.log_path().display(),
                    self.log_tail(40)
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Err(e) = child.kill() {
                tracing::warn!("killing etcd: {e}");
            }
            if let Err(e) = child.wait() {
                tracing::warn!("waiting for etcd: {e}");
            }
        }
    }

    fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(self.log_path()) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The last `n` lines of etcd's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "etcd log ({}), last lines:\n{}",
                self.log_path().display(),
                self.log_tail(30)
            );
        }
        match fs::remove_dir_all(&self.root) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::warn!("removing {}: {e}", self.root.display());
            }
            _ => {}
        }
    }
}

/// A port that was free a moment ago (bound and released). Not race-free: `start` retries
/// with other ports when etcd reports the address in use.
fn free_port(ip: IpAddr) -> Result<u16> {
    // Inside a namespace the address may not exist in ours; any port is then as good as
    // another, so fall back to the loopback address to get one from the kernel's range.
    let l = TcpListener::bind((ip, 0))
        .or_else(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .context("binding a socket to find a free port")?;
    Ok(l.local_addr().context("local_addr of probe socket")?.port())
}

/// Creates `<tmp>/weft-etcd-<pid>-<random>` with mode 0700 (etcd wants a private data dir).
fn make_private_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    let base = std::env::temp_dir();
    for _ in 0..16 {
        let dir = base.join(format!(
            "weft-etcd-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!("could not create a unique directory in {}", base.display())
}
