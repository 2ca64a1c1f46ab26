//! Wiring: the agent's lifecycle and its one control loop.
//!
//! ```text
//! config ─► interface ─► backend.prepare ─► lease (CAS) ─► backend.configure
//!        ─► LeaseTable (from the acquire list) ─► refresh + apply (stale purge) ─► subnet.env, ready
//!        ─► loop { etcd watch | netlink notifications | audit/retry timers | shutdown }
//! ```
//! One task owns the lease table, the backend and the reconciler; the etcd watch, the lease
//! renewal, the netlink notifications and the health server feed it or run beside it. Shutdown is
//! a `CancellationToken` passed in (SIGTERM/SIGINT in `main`, anything in tests). On shutdown the
//! lease, subnet.env and every kernel object stay in place, so a restart loses no packet.

pub mod firewall;
pub mod http;
pub mod iface;
pub mod metrics;
pub mod peer_cache;
pub mod subnet_file;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use backends::nl::{KernelEvent, Netlink};
use backends::reconcile::Reconciler;
use backends::{AnyBackend, Backend, ExternalInterface, KernelState, Peer};
use futures::{FutureExt, StreamExt};
use net_conf::{BackendConf, LeaseAttrs, NetConf, SubnetEnv, SubnetKey};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use self::firewall::Firewall;
use self::http::Health;
use self::metrics::{ReconcileReason, WatchEventKind};
use self::peer_cache::PeerCache;
use crate::cli::Options;
use crate::lease::etcd::manager::{
    Backoff, LeaseTiming, OwnLease, Reacquired, RenewalEnd, SubnetManager, WatchEvent, retry_until,
    sleep_or_shutdown,
};
use crate::lease::etcd::registry::{EtcdOptions, Registry, Snapshot};
use crate::lease::table::{Change, LeaseTable};

/// How often the whole owned kernel state is dumped and compared, as a backstop to netlink
/// notifications (which cover deletes within milliseconds).
const AUDIT_INTERVAL: Duration = Duration::from_secs(600);
/// How soon failed kernel writes and skipped peers (not yet adjacent, gateway unreachable) are
/// tried again.
const RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// How often the config file (`--net-config-path`) is checked for a new version: one `stat`.
const CONFIG_FILE_POLL: Duration = Duration::from_secs(2);
/// How long a backend from before a switch stays after the last peer stopped advertising it:
/// peers that already published their new lease may not have programmed ours yet.
const LEGACY_GRACE: Duration = Duration::from_secs(3);
/// Longest delay of a peer cache write after a lease change.
const CACHE_WRITE: Duration = Duration::from_secs(5);
/// Longest wait between attempts while etcd does not answer (config fetch, acquire, re-acquire,
/// re-publish at start or on a lost lease): a refused or timed-out RPC costs next to nothing,
/// and the agent should carry on within about a second of etcd's return (targets R1, R3), as
/// its lease watch does.
const ETCD_RETRY_MAX: Duration = Duration::from_secs(1);
/// Liveness: the control loop beats at least this often even when idle.
const HEARTBEAT: Duration = Duration::from_secs(20);

/// Runs the agent until `shutdown` is cancelled. `Ok(())` on a clean shutdown; an error ends
/// the process with exit code 1 (bad config, no usable interface, backend precondition).
pub async fn run(opts: Options, shutdown: CancellationToken) -> Result<()> {
    if opts.kube_subnet_mgr {
        return Err(anyhow!(
            "--kube-subnet-mgr: the Kubernetes subnet manager is not supported by weft yet; lease from etcd (--etcd-endpoints)"
        ));
    }
    let health = Health::new(crate::agent::http::DEFAULT_STALE_AFTER);
    if let Some(addr) = opts.healthz_addr() {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen for health checks on {addr}"))?;
        info!("serving /healthz and /readyz on http://{addr}");
        tokio::spawn(crate::agent::http::serve(
            listener,
            health.clone(),
            shutdown.clone(),
        ));
    }

    let nl = Netlink::connect().context("open a netlink socket")?;
    // With user/password the client authenticates at once, so an unreachable etcd shows here.
    let etcd = opts.etcd_options();
    // First contact, bounded: a node with a peer cache programs the cached peers rather than
    // wait for an etcd that does not answer.
    let first = tokio::time::timeout(FIRST_CONTACT, first_contact(&etcd)).await;
    // The first contact's list of the leases, kept for the first acquire (target P7: start =
    // one Range, a Grant and a Txn).
    let (registry, etcd_text, listed) = match first {
        Ok(Ok((registry, Some(text), snapshot))) => (registry, Some(text), Some(snapshot)),
        // No config in etcd yet: it is fetched below, and the list would be stale by then.
        Ok(Ok((registry, None, _))) => (registry, None, None),
        failed => {
            match failed {
                Ok(Err(e)) => warn!("etcd is unreachable at start: {e:#}"),
                _ => warn!("etcd did not answer within {FIRST_CONTACT:?} at start"),
            }
            if let Some(path) = opts.peer_cache_file.as_deref() {
                match PeerCache::load(path) {
                    Ok(Some(cache)) => {
                        if let Err(e) = boot_from_cache(&nl, &opts, &cache, path).await {
                            warn!("programming the cached peers failed: {e:#}");
                        }
                    }
                    Ok(None) => info!("no peer cache at {} to boot from", path.display()),
                    Err(e) => warn!("the peer cache is unusable: {e:#}"),
                }
            }
            // Each attempt is a liveness beat, as in fetch_config: waiting for etcd at start is
            // not a stuck agent (with user/password, connecting is an RPC that fails while
            // etcd is down).
            let Some(registry) = retry_until(&shutdown, "connecting to etcd", || {
                health.beat();
                Registry::connect(&etcd)
            })
            .await
            else {
                return Ok(());
            };
            (registry, None, None)
        }
    };
    // `--net-config-path` given: the file is the config (etcd still holds the leases).
    let text = match (opts.net_config_path.as_deref(), etcd_text) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("read network config {}", path.display()))?,
        (None, Some(text)) => text,
        (None, None) => tokio::select! {
            text = fetch_config(&registry, &health) => text,
            () = shutdown.cancelled() => return Ok(()),
        },
    };
    let conf = parse_config(&text)?;
    info!(
        "Found network config - Backend type: {}, Network: {}",
        conf.backend.type_name(),
        conf.network.map(|n| n.to_string()).unwrap_or_default()
    );
    let backend = AnyBackend::from_conf(&conf.backend)?;
    match &conf.backend {
        BackendConf::Vxlan(vxlan) => info!("VXLAN config: {vxlan}"),
        BackendConf::IpIp(ipip) => info!("IPIP config: DirectRouting={}", ipip.direct_routing),
        BackendConf::HostGw => {}
    }
    let ext = iface::select_interface(&nl, &opts).await?;
    Agent::start(
        opts, conf, text, registry, listed, nl, ext, backend, health, shutdown,
    )
    .await
}

/// How long the first contact with etcd may take before a node with a peer cache programs the
/// cached peers instead of waiting.
const FIRST_CONTACT: Duration = Duration::from_secs(3);

/// Connects and reads `<prefix>/config` and the leases in one Range: config `None` when etcd
/// answers that it has none (flannel's agents often start before the config is written).
async fn first_contact(etcd: &EtcdOptions) -> Result<(Registry, Option<String>, Snapshot)> {
    let registry = Registry::connect(etcd).await?;
    let (config, snapshot) = registry.list_network().await?;
    Ok((registry, config, snapshot))
}

/// Boot without etcd (target R3): the cached config, own subnet and peers are programmed and
/// subnet.env is written, so pods start and reach the last known peers. Nothing is deleted:
/// only a real etcd list may say a peer is gone. Readiness waits for etcd.
async fn boot_from_cache(
    nl: &Netlink,
    opts: &Options,
    cache: &PeerCache,
    path: &std::path::Path,
) -> Result<()> {
    let conf = parse_config(&cache.config)?;
    let (own, own_attrs) = cache.own()?;
    let ext = iface::select_interface(nl, opts).await?;
    let mut backend = AnyBackend::from_conf(&conf.backend)?;
    backend.adopt_previous(&own_attrs);
    backend.prepare(nl, &ext).await?;
    let mtu = backend.configure(nl, &ext, own.v4).await?;
    let mut reconciler = Reconciler::new(nl.clone()).with_route_nexthops(opts.route_nexthops);
    for index in backend.devices() {
        reconciler.own_device(index);
    }
    reconciler.refresh().await?;
    let peers: Vec<Peer> = cache
        .peers()
        .into_iter()
        .filter(|p| p.attrs.backend_type == backend.type_name() && p.key != own)
        .collect();
    let mut state = backend.desired(&ext, &peers).state;
    state.merge(reconciler.current().clone());
    let report = reconciler.apply(&state).await;
    start_firewall(opts, &conf, own.v4).await?;
    write_subnet_env(opts, &conf, own.v4, mtu)?;
    warn!(
        "etcd is unreachable: programmed {} cached peers from {} ({} writes, {} failures) and wrote {}; waiting for etcd",
        peers.len(),
        path.display(),
        report.writes,
        report.failures.len(),
        opts.subnet_file.display()
    );
    Ok(())
}

/// Parses and checks a config text; warnings (unknown keys, defaulted backend) are logged.
fn parse_config(text: &str) -> Result<NetConf> {
    let parsed = NetConf::parse(text).map_err(|e| anyhow!("network config: {e}"))?;
    for w in &parsed.warnings {
        warn!("network config: {w}");
    }
    let conf = parsed.conf;
    if !conf.enable_ipv4 || conf.enable_ipv6 {
        return Err(anyhow!(
            "network config: weft supports IPv4 networks only for now (EnableIPv4 must be true, EnableIPv6 false)"
        ));
    }
    Ok(conf)
}

/// Installs the masquerade (`--ip-masq`) and forward (`--iptables-forward-rules`) rules in the
/// mode the config selects (`EnableNFTables`), after removing the other mode's. A failure is
/// fatal with `--ip-masq` (pods would reach the outside unmasqueraded); the forward rules alone
/// are logged and retried by the audit.
async fn start_firewall(
    opts: &Options,
    conf: &NetConf,
    subnet: ipnet::Ipv4Net,
) -> Result<Firewall> {
    let network = conf
        .network
        .ok_or_else(|| anyhow!("network config: no Network to build the masquerade rules from"))?;
    let mode = firewall::Mode::from_config(conf.enable_nftables);
    let fw = Firewall::new(
        mode,
        firewall::Settings {
            network,
            subnet,
            ip_masq: opts.ip_masq,
            forward: opts.iptables_forward_rules,
            fully_random: !opts.ip_masq_fully_random_disable,
        },
    )
    .await;
    match fw.start().await {
        Ok(_) => {}
        Err(e) if opts.ip_masq => {
            return Err(e.context(format!("--ip-masq: installing the {mode} masquerade rules")));
        }
        Err(e) => error!("installing the {mode} forward rules: {e:#}; retrying at the next audit"),
    }
    Ok(fw)
}

/// Writes subnet.env (atomically) for `subnet` of `conf`'s network.
fn write_subnet_env(
    opts: &Options,
    conf: &NetConf,
    subnet: ipnet::Ipv4Net,
    mtu: u32,
) -> Result<()> {
    let env = SubnetEnv {
        network: conf.network,
        subnet: Some(subnet),
        ipv6_network: None,
        ipv6_subnet: None,
        mtu,
        ipmasq: opts.ip_masq,
    };
    subnet_file::write_atomic(&opts.subnet_file, &env.render())
        .with_context(|| format!("write {}", opts.subnet_file.display()))
}

/// The config text from etcd `<prefix>/config`, retried with capped, jittered backoff while etcd
/// is unreachable or the key is missing (flannel retries too: the key is often written after the
/// agents start). Each attempt counts as a liveness beat: waiting for etcd at start is not a
/// stuck agent.
async fn fetch_config(registry: &Registry, health: &Health) -> String {
    let mut backoff = Backoff::new(Duration::from_millis(200), ETCD_RETRY_MAX);
    loop {
        health.beat();
        match registry.get_config().await {
            Ok(text) => return text,
            Err(e) => {
                let wait = backoff.next_delay();
                warn!("Couldn't fetch network config: {e:#}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The running agent: everything the control loop owns.
struct Agent {
    opts: Options,
    conf: NetConf,
    /// The config text `conf` came from (kept for the peer cache).
    config_text: String,
    nl: Netlink,
    ext: ExternalInterface,
    /// The backend the config asks for: it serves peers of its type and makes our lease.
    primary: AnyBackend,
    /// Backends of an earlier config, kept while some peer still advertises them (a backend
    /// switch rolls through the cluster node by node), with the config each came from.
    legacy: Vec<Legacy>,
    /// When the next unused legacy backend is due for removal.
    legacy_due: Option<tokio::time::Instant>,
    mgr: SubnetManager,
    own: OwnLease,
    /// The lease attributes we publish.
    attrs: LeaseAttrs,
    table: LeaseTable,
    reconciler: Reconciler,
    health: Health,
    /// Peers left out by the last plan, with the reason: logged when it changes, not per pass.
    skipped: BTreeMap<SubnetKey, String>,
    /// True while a failed write, a lost device or a peer of our own type waits for a retry.
    pending_retry: bool,
    /// A backend device was deleted out of band and is not re-created yet.
    device_lost: bool,
    /// A backend device was set down or lost its address out of band.
    device_changed: bool,
    /// Notifications were lost (socket overrun): a device change may have gone unseen.
    devices_in_doubt: bool,
    /// The config file's identity when the config comes from `--net-config-path`.
    config_file: Option<FileStamp>,
    /// The peer cache is behind the lease table.
    cache_dirty: bool,
    /// The peer-cache write running beside the control loop, if any.
    cache_writer: Option<std::thread::JoinHandle<()>>,
    /// Masquerade / forward rules (iptables or nftables), checked on nf_tables change
    /// notifications and on a slow audit timer.
    firewall: Firewall,
    /// Cancelled on SIGTERM/SIGINT: etcd retry loops inside the control loop give up on it.
    shutdown: CancellationToken,
}

/// A backend of an earlier config, still serving peers that advertise it.
struct Legacy {
    conf: BackendConf,
    backend: AnyBackend,
    /// Since when no peer needs it.
    unused_since: Option<tokio::time::Instant>,
}

/// Waits until `due`, or forever when there is nothing due.
async fn sleep_until_or_never(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Writes the peer cache (streaming) and logs how long it took; a failure is a warning (the
/// cache is a hint for the next boot).
fn write_peer_cache<'a>(
    path: &std::path::Path,
    config: &str,
    own: SubnetKey,
    attrs: &LeaseAttrs,
    peers: impl Iterator<Item = (SubnetKey, &'a LeaseAttrs)>,
    count: usize,
) {
    let started = std::time::Instant::now();
    match PeerCache::write(path, config, own, attrs, peers) {
        Ok(()) => debug!(
            "wrote the peer cache {} ({count} peers) in {:?}",
            path.display(),
            started.elapsed()
        ),
        Err(e) => warn!("{e:#}"),
    }
}

/// What a backend device looks like in a link dump.
#[derive(Debug, PartialEq, Eq)]
enum DeviceHealth {
    Ok,
    Missing,
    Down(String),
    /// Without the `<own subnet network>/32` address that vxlan and ipip devices carry.
    NoAddress(String),
}

fn device_health(
    links: &[backends::nl::LinkInfo],
    index: u32,
    own: ipnet::Ipv4Net,
) -> DeviceHealth {
    let addr = std::net::IpAddr::V4(own.network());
    match links.iter().find(|l| l.index == index) {
        None => DeviceHealth::Missing,
        Some(link) if !link.up => DeviceHealth::Down(link.name.clone()),
        Some(link)
            if !link
                .addrs
                .iter()
                .any(|a| a.addr == addr && a.prefix_len == 32) =>
        {
            DeviceHealth::NoAddress(link.name.clone())
        }
        Some(_) => DeviceHealth::Ok,
    }
}

/// The background tasks of the own lease: its renewal, and a re-acquire while one runs (the
/// renewal is stopped meanwhile).
struct LeaseTasks {
    renewal: JoinHandle<RenewalEnd>,
    reacquiring: Option<JoinHandle<Option<(Reacquired, SubnetManager)>>>,
}

/// Waits for the re-acquire task, if one runs (else never ready); clears it when done.
async fn wait_reacquired(
    task: &mut Option<JoinHandle<Option<(Reacquired, SubnetManager)>>>,
) -> Result<Option<(Reacquired, SubnetManager)>, tokio::task::JoinError> {
    let Some(handle) = task.as_mut() else {
        return std::future::pending().await;
    };
    let out = handle.await;
    *task = None;
    out
}

/// What a burst of watch events asks of the reconcile.
enum Effect {
    Nothing,
    /// Plain peer changes, in order: the incremental path may serve them.
    Peers(Vec<Change>),
    /// Plan from the whole table.
    Full,
}

impl Effect {
    fn add(&mut self, next: Effect) {
        *self = match (std::mem::replace(self, Effect::Nothing), next) {
            (Effect::Full, _) | (_, Effect::Full) => Effect::Full,
            (Effect::Nothing, other) | (other, Effect::Nothing) => other,
            (Effect::Peers(mut a), Effect::Peers(b)) => {
                a.extend(b);
                Effect::Peers(a)
            }
        };
    }
}

/// A watch event that needs a full plan.
struct Full;

/// A burst with more peer changes than this is planned in full (one pass over the table beats
/// that many per-peer plans, and a resync-sized burst is rare).
const MAX_DELTA_CHANGES: usize = 64;

/// What identifies a version of the config file: Kubernetes updates a mounted ConfigMap by
/// swapping a symlink, which changes the inode the path resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    dev: u64,
    len: u64,
    mtime: Option<std::time::SystemTime>,
}

impl FileStamp {
    fn of(path: &std::path::Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            ino: md.ino(),
            dev: md.dev(),
            len: md.len(),
            mtime: md.modified().ok(),
        })
    }
}

impl Agent {
    #[allow(clippy::too_many_arguments)]
    async fn start(
        opts: Options,
        conf: NetConf,
        config_text: String,
        registry: Registry,
        mut listed: Option<Snapshot>,
        nl: Netlink,
        ext: ExternalInterface,
        mut primary: AnyBackend,
        health: Health,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let config_file = opts.net_config_path.as_deref().and_then(FileStamp::of);
        if primary.wants_previous_lease() {
            // A rebooted node keeps what its peers know (vxlan: the VTEP MAC of its lease). The
            // first contact's list serves when there is one; else one list before the device
            // exists. Best effort: without etcd, start fresh.
            if listed.is_none() {
                let got = tokio::select! {
                    r = registry.list_leases() => r,
                    () = shutdown.cancelled() => return Ok(()),
                };
                match got {
                    Ok(snapshot) => listed = Some(snapshot),
                    Err(e) => warn!("could not look up our previous lease: {e:#}"),
                }
            }
            if let Some(prev) = listed.as_ref().and_then(|snapshot| {
                snapshot
                    .leases
                    .iter()
                    .find(|l| l.attrs.public_ip == ext.ext_addr)
            }) {
                primary.adopt_previous(&prev.attrs);
            }
        }
        let attrs = primary.prepare(&nl, &ext).await?;
        let previous = subnet_file::read_previous(&opts.subnet_file)
            .as_deref()
            .and_then(net_conf::subnet_env::previous_subnet);
        let timing = LeaseTiming {
            renew_margin: Duration::from_secs(u64::from(opts.subnet_lease_renew_margin) * 60),
            ..LeaseTiming::default()
        };
        let mut mgr = SubnetManager::new(registry, timing);
        mgr.set_metrics(health.metrics().clone());
        let mut backoff = Backoff::new(Duration::from_millis(100), ETCD_RETRY_MAX);
        let (own, snapshot) = loop {
            health.beat();
            let res = tokio::select! {
                r = mgr.acquire_from(&conf, &attrs, previous, listed.take()) => r,
                () = shutdown.cancelled() => return Ok(()),
            };
            match res {
                Ok(acquired) => break acquired,
                Err(e) => {
                    let wait = backoff.next_delay();
                    warn!("acquiring a subnet lease failed (retrying in {wait:.1?}): {e:#}");
                    if !sleep_or_shutdown(&shutdown, wait).await {
                        return Ok(());
                    }
                }
            }
        };
        let mtu = primary.configure(&nl, &ext, own.key.v4).await?;
        remove_other_devices(&nl, &primary.devices()).await;
        let firewall = start_firewall(&opts, &conf, own.key.v4).await?;

        let mut table = LeaseTable::new(Some(own.key));
        table.reset(&snapshot);
        // The table holds the leases now; don't keep a second copy through the start.
        let revision = snapshot.revision;
        drop(snapshot);
        let mut reconciler = Reconciler::new(nl.clone()).with_route_nexthops(opts.route_nexthops);
        for index in primary.devices() {
            reconciler.own_device(index);
        }
        let mut agent = Agent {
            opts,
            conf,
            config_text,
            nl,
            ext,
            primary,
            legacy: Vec::new(),
            legacy_due: None,
            mgr,
            own,
            attrs,
            table,
            reconciler,
            health,
            skipped: BTreeMap::new(),
            pending_retry: false,
            device_lost: false,
            device_changed: false,
            devices_in_doubt: false,
            config_file,
            cache_dirty: true,
            cache_writer: None,
            firewall,
            shutdown: shutdown.clone(),
        };
        // Start: dump what weft owns, then one diff that programs every peer and purges what no
        // lease explains (stale routes of peers that left while weft was down). Only after the
        // successful list above, so an etcd failure never empties the kernel.
        agent
            .reconciler
            .refresh()
            .await
            .context("read weft's routes from the kernel")?;
        agent.reconcile(ReconcileReason::InitialSync).await;
        agent.write_subnet_env(mtu)?;
        agent.save_cache_now();
        agent.health.set_ready(true);
        info!(
            "weft is ready: subnet {} with {} peers",
            agent.own.key,
            agent.table.len()
        );

        // Subscribe only after the initial sync: its own writes (one notification per entry)
        // would pile up unread in memory meanwhile (20,000 vxlan peers: 60,000 messages, most of
        // the peak RSS). Subscribe, then dump and diff again, so no out-of-band change made
        // before the subscription is missed.
        let kernel = backends::nl::subscribe().context("subscribe to netlink notifications")?;
        agent.audit("audit after subscribing").await;

        agent.run(revision + 1, kernel).await
    }

    fn write_subnet_env(&self, mtu: u32) -> Result<()> {
        write_subnet_env(&self.opts, &self.conf, self.own.key.v4, mtu)?;
        info!("Wrote subnet file to {}", self.opts.subnet_file.display());
        Ok(())
    }

    /// Writes the peer cache now, in the control loop, streaming from the lease table (no copy
    /// of the peers): at start, before the agent is ready, when memory peaks (target P1).
    fn save_cache_now(&mut self) {
        self.cache_dirty = false;
        let Some(path) = self.opts.peer_cache_file.clone() else {
            return;
        };
        write_peer_cache(
            &path,
            &self.config_text,
            self.own.key,
            &self.attrs,
            self.table.peer_entries(),
            self.table.len(),
        );
    }

    /// Writes the peer cache on a thread of its own from a copy of the leases (at most every
    /// [`CACHE_WRITE`]: a burst of lease events costs one write). The write ends with two
    /// fsyncs, 7–8 ms at 5,000 peers on a busy disk and more when it stalls: in the control
    /// loop that time would be added to the next lease change (target P3). One write at a time:
    /// while one runs, the cache stays dirty and the next tick tries again.
    fn save_cache_beside(&mut self) {
        if self.cache_writer.as_ref().is_some_and(|w| !w.is_finished()) {
            return;
        }
        if let Some(done) = self.cache_writer.take() {
            if done.join().is_err() {
                warn!("the previous peer-cache write panicked");
            }
        }
        self.cache_dirty = false;
        let Some(path) = self.opts.peer_cache_file.clone() else {
            return;
        };
        let config = self.config_text.clone();
        let own = self.own.key;
        let attrs = self.attrs.clone();
        let peers: Vec<(SubnetKey, LeaseAttrs)> = self
            .table
            .peer_entries()
            .map(|(key, attrs)| (key, attrs.clone()))
            .collect();
        let spawned = std::thread::Builder::new()
            .name("peer-cache".into())
            .spawn(move || {
                let entries = peers.iter().map(|(key, attrs)| (*key, attrs));
                write_peer_cache(&path, &config, own, &attrs, entries, peers.len());
            });
        match spawned {
            Ok(handle) => self.cache_writer = Some(handle),
            Err(e) => {
                warn!("cannot start the peer-cache writer ({e}); writing it in the loop");
                self.save_cache_now();
            }
        }
    }

    /// The desired kernel state: each peer programmed by the active backend of the type its
    /// lease advertises (normally only the primary; during a backend switch also a legacy one).
    fn plan(&self) -> (KernelState, BTreeMap<SubnetKey, String>, Vec<bool>) {
        let peers = self.table.peers();
        let mut state = KernelState::default();
        let mut reasons: BTreeMap<SubnetKey, String> = BTreeMap::new();
        let active = std::iter::once(&self.primary).chain(self.legacy.iter().map(|l| &l.backend));
        let mut used = Vec::new();
        for backend in active {
            // One backend and every peer of its type (the usual case): no second copy.
            let filtered: Vec<Peer>;
            let mine: &[Peer] = if self.legacy.is_empty()
                && peers
                    .iter()
                    .all(|p| p.attrs.backend_type == backend.type_name())
            {
                &peers
            } else {
                filtered = peers
                    .iter()
                    .filter(|p| p.attrs.backend_type == backend.type_name())
                    .cloned()
                    .collect();
                &filtered
            };
            let desired = backend.desired(&self.ext, mine);
            used.push(mine.len() > desired.skipped.len());
            state.merge(desired.state);
            for (key, reason) in desired.skipped {
                reasons.entry(key).or_insert(reason);
            }
        }
        // A peer counts as skipped only when no active backend serves it (each serves a peer
        // with a route to its subnet).
        let mut skipped = BTreeMap::new();
        for peer in &peers {
            if state.routes.contains_key(&peer.key.v4) {
                continue;
            }
            let reason = reasons.remove(&peer.key).unwrap_or_else(|| {
                format!(
                    "its lease advertises backend {:?}, this node runs {}",
                    peer.attrs.backend_type,
                    self.primary.type_name()
                )
            });
            skipped.insert(peer.key, reason);
        }
        (state, skipped, used)
    }

    /// The incremental path for plain peer changes (target P3): plans the changed peers only
    /// and applies the difference at their keys ([`Reconciler::apply_delta`]). Falls back to
    /// [`reconcile`](Self::reconcile) whenever the result could differ from a full plan: during a
    /// backend switch, while some peer is skipped or a retry is pending, when a changed peer is
    /// not of the primary's type or is skipped itself, or when its entries collide with another
    /// peer's (two leases with one VTEP MAC: the full plan decides which one is programmed).
    async fn reconcile_changes(&mut self, changes: &[Change]) {
        let started = std::time::Instant::now();
        let Some((removed, added)) = self.plan_changes(changes) else {
            self.reconcile(ReconcileReason::LeaseChange).await;
            return;
        };
        let planned = started.elapsed();
        let report = self.reconciler.apply_delta(&removed, added).await;
        self.finish_reconcile(
            ReconcileReason::LeaseChange,
            ReconcileReason::LeaseChange.as_str(),
            started,
            planned,
            &report,
            BTreeMap::new(),
            Some(changes.len()),
        );
    }

    /// The entries to remove and to add for `changes`, or None when only a full plan is exact.
    fn plan_changes(&self, changes: &[Change]) -> Option<(KernelState, KernelState)> {
        if changes.len() > MAX_DELTA_CHANGES
            || !self.legacy.is_empty()
            || !self.skipped.is_empty()
            || self.pending_retry
        {
            return None;
        }
        let own_type = self.primary.type_name();
        let entries = |peer: &Peer| {
            if peer.attrs.backend_type != own_type {
                return None;
            }
            let d = self.primary.desired(&self.ext, std::slice::from_ref(peer));
            d.skipped.is_empty().then_some(d.state)
        };
        let mut removed = KernelState::default();
        let mut added = KernelState::default();
        for change in changes {
            let (old, new) = match change {
                Change::Added(p) => (None, Some(p)),
                Change::Updated { old, new } => (Some(old), Some(new)),
                Change::Removed(p) => (Some(p), None),
            };
            if let Some(old) = old {
                let gone = entries(old)?;
                added.remove_keys(&gone);
                removed.extend(gone);
            }
            if let Some(new) = new {
                let want = entries(new)?;
                // Another peer's key (in the applied state and not being removed, or added by
                // an earlier change of this burst): only the full plan knows who wins.
                if want.collides(self.reconciler.desired(), &removed)
                    || want.collides(&added, &KernelState::default())
                {
                    return None;
                }
                added.extend(want);
            }
        }
        Some((removed, added))
    }

    /// Computes the desired state from the lease table and applies the difference.
    async fn reconcile(&mut self, why: ReconcileReason) {
        self.reconcile_as(why, why.as_str()).await;
    }

    /// [`reconcile`](Self::reconcile), its log line saying `said` (e.g. `audit (SIGHUP)`).
    async fn reconcile_as(&mut self, why: ReconcileReason, said: &str) {
        let started = std::time::Instant::now();
        let (mut state, mut skipped, used) = self.plan();
        // Legacy backends no peer has needed for LEGACY_GRACE go away, devices and all. The
        // grace covers peers that published their new lease but have not yet programmed ours:
        // until they do, they still send to us over the old path.
        let now = tokio::time::Instant::now();
        let mut retired = false;
        let mut keep = Vec::new();
        for (mut legacy, used) in self.legacy.drain(..).zip(used.into_iter().skip(1)) {
            if used {
                legacy.unused_since = None;
                keep.push(legacy);
                continue;
            }
            let since = *legacy.unused_since.get_or_insert(now);
            if now.duration_since(since) < LEGACY_GRACE {
                keep.push(legacy);
                continue;
            }
            let mut backend = legacy.backend;
            info!("no peer uses {} any more: removing it", backend.type_name());
            for index in backend.devices() {
                self.reconciler.disown_device(index);
            }
            if let Err(e) = backend.teardown(&self.nl).await {
                warn!("removing the {} backend: {e}", backend.type_name());
            }
            retired = true;
        }
        self.legacy = keep;
        self.legacy_due = self
            .legacy
            .iter()
            .filter_map(|l| l.unused_since)
            .min()
            .map(|since| since + LEGACY_GRACE);
        if retired {
            (state, skipped, _) = self.plan();
        }
        for (key, reason) in &skipped {
            if self.skipped.get(key) != Some(reason) {
                warn!("peer {key} not programmed: {reason}");
            }
        }
        for key in self.skipped.keys() {
            if !skipped.contains_key(key) && self.table.get(key).is_some() {
                info!("peer {key} is programmed now");
            }
        }
        let planned = started.elapsed();
        // The reconciler logs each failed write; they are retried on the next pass.
        let report = self.reconciler.apply_owned(state).await;
        self.finish_reconcile(why, said, started, planned, &report, skipped, None);
    }

    /// Book-keeping after an apply: retry scheduling, the skipped peers, metrics, the log line.
    #[allow(clippy::too_many_arguments)]
    fn finish_reconcile(
        &mut self,
        why: ReconcileReason,
        said: &str,
        started: std::time::Instant,
        planned: Duration,
        report: &backends::reconcile::ApplyReport,
        skipped: BTreeMap<SubnetKey, String>,
        incremental: Option<usize>,
    ) {
        let own_type = self.primary.type_name();
        // Failed writes are retried; so are peers of our own type that were skipped (an address
        // may be added to the interface). Peers of another backend type wait for a new lease.
        self.pending_retry = self.device_lost
            || !report.failures.is_empty()
            || !report.nexthop_failures.is_empty()
            || skipped.keys().any(|key| {
                self.table
                    .get(key)
                    .is_some_and(|attrs| attrs.backend_type == own_type)
            });
        self.skipped = skipped;
        let metrics = self.health.metrics();
        metrics.reconcile_run(
            why,
            started.elapsed(),
            u64::try_from(report.writes).unwrap_or(u64::MAX),
            u64::try_from(report.failures.len()).unwrap_or(u64::MAX),
        );
        metrics.set_peers(self.table.peer_attrs().map(|a| a.backend_type.as_str()));
        let plan = match incremental {
            Some(n) => format!("plan {planned:?}, incremental: {n} changed peers"),
            None => format!("plan {planned:?}"),
        };
        debug!(
            "reconcile ({said}): {} peers, {} writes, {} nexthop writes, {} failures in {:?} ({plan})",
            self.table.len(),
            report.writes,
            report.nexthop_writes,
            report.failures.len() + report.nexthop_failures.len(),
            started.elapsed(),
        );
    }

    async fn run(
        mut self,
        revision: i64,
        mut kernel: impl futures::Stream<Item = KernelEvent> + Unpin,
    ) -> Result<()> {
        let shutdown = self.shutdown.clone();
        let mut watch = self.mgr.watch(revision, shutdown.clone());
        let mut lease = LeaseTasks {
            renewal: tokio::spawn(self.mgr.renewal(self.own, shutdown.clone())),
            reacquiring: None,
        };

        let mut audit = tokio::time::interval(AUDIT_INTERVAL);
        audit.reset();
        let mut retry = tokio::time::interval(RETRY_INTERVAL);
        retry.reset();
        let mut beat = tokio::time::interval(HEARTBEAT);
        let mut fw_watch = if self.firewall.is_active() {
            firewall::ChangeWatch::open()
        } else {
            firewall::ChangeWatch::disabled()
        };
        let mut fw_audit = tokio::time::interval(
            self.firewall
                .audit_period(self.opts.iptables_resync, &fw_watch)?,
        );
        fw_audit.reset();
        let mut config_poll = tokio::time::interval(CONFIG_FILE_POLL);
        config_poll.reset();
        let mut cache_write = tokio::time::interval(CACHE_WRITE);
        cache_write.reset();
        let watch_file = self.opts.net_config_path.is_some();
        let mut kernel_open = true;
        // SIGHUP: dump and diff now instead of at the next audit tick (operators, benchmarks).
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                warn!("cannot install the SIGHUP handler (audit on demand): {e}");
                None
            }
        };

        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                ev = watch.recv() => {
                    let Some(ev) = ev else {
                        // The watch task only ends on shutdown.
                        break;
                    };
                    // Coalesce a burst of events into one reconcile: incremental while every
                    // event is a plain peer change, else one full plan.
                    let mut effect = Effect::Nothing;
                    effect.add(self.on_watch_event(ev, &mut lease).await);
                    while let Ok(ev) = watch.try_recv() {
                        effect.add(self.on_watch_event(ev, &mut lease).await);
                    }
                    match effect {
                        Effect::Nothing => {}
                        Effect::Peers(changes) => {
                            self.cache_dirty = true;
                            self.reconcile_changes(&changes).await;
                        }
                        Effect::Full => {
                            self.cache_dirty = true;
                            self.reconcile(ReconcileReason::LeaseChange).await;
                        }
                    }
                }
                end = &mut lease.renewal, if lease.reacquiring.is_none() => {
                    match end {
                        Ok(RenewalEnd::LeaseLost { lease_id }) => {
                            warn!("etcd lease {lease_id:x} of {} is gone; re-acquiring", self.own.key);
                            self.reacquire(&mut lease);
                        }
                        // Only on shutdown; the finished handle must not be polled again
                        // (select! picks among ready branches at random).
                        Ok(RenewalEnd::Shutdown) => break,
                        Err(e) => {
                            error!("lease renewal task failed: {e}; restarting it");
                            lease.renewal = tokio::spawn(self.mgr.renewal(self.own, shutdown.clone()));
                        }
                    }
                }
                got = wait_reacquired(&mut lease.reacquiring) => {
                    match got {
                        Ok(Some((got, mgr))) => {
                            self.reacquired(got, mgr, &mut lease).await;
                            self.reconcile(ReconcileReason::Reacquire).await;
                        }
                        // Shutdown.
                        Ok(None) => break,
                        Err(e) => {
                            error!("the re-acquire task failed: {e}; starting it again");
                            self.reacquire(&mut lease);
                        }
                    }
                }
                ev = kernel.next(), if kernel_open => {
                    let Some(ev) = ev else {
                        // Not expected (the socket lives as long as the process); the audit
                        // timer still catches drift, just slower.
                        error!("netlink notification stream ended; drift is now caught by the audit only");
                        kernel_open = false;
                        continue;
                    };
                    let mut dirty = self.on_kernel_event(&ev);
                    while let Some(Some(ev)) = kernel.next().now_or_never() {
                        dirty |= self.on_kernel_event(&ev);
                    }
                    if std::mem::take(&mut self.devices_in_doubt) {
                        self.check_devices("netlink notifications lost").await;
                        dirty = true;
                    }
                    if self.device_lost {
                        self.recreate_devices().await;
                        dirty = true;
                    } else if self.device_changed {
                        self.reconfigure_devices().await;
                        dirty = true;
                    }
                    if dirty {
                        if self.reconciler.needs_refresh() {
                            if let Err(e) = self.reconciler.refresh().await {
                                warn!("re-reading weft's kernel state failed: {e}");
                            }
                        }
                        self.reconcile(ReconcileReason::DriftRepair).await;
                    }
                }
                _ = audit.tick() => self.audit("audit").await,
                Some(()) = recv_or_pending(hangup.as_mut()) => {
                    info!("received SIGHUP: auditing weft's kernel state now");
                    self.audit("audit (SIGHUP)").await;
                }
                _ = retry.tick(), if self.pending_retry => {
                    if self.device_lost {
                        self.recreate_devices().await;
                    }
                    self.refresh_interface().await;
                    self.reconcile(ReconcileReason::Retry).await;
                }
                _ = config_poll.tick(), if watch_file => self.poll_config_file().await,
                _ = sleep_until_or_never(self.legacy_due) => self.reconcile(ReconcileReason::LegacyUnused).await,
                _ = cache_write.tick(), if self.cache_dirty => self.save_cache_beside(),
                what = fw_watch.changed(), if self.firewall.is_active() => {
                    debug!("nf_tables changed ({what}); checking our rules");
                    if let Err(e) = self.firewall.check().await {
                        warn!("{} rules check: {e:#}", self.firewall.mode());
                    }
                }
                _ = fw_audit.tick(), if self.firewall.is_active() => {
                    if let Err(e) = self.firewall.check().await {
                        warn!("{} rules audit: {e:#}", self.firewall.mode());
                    }
                }
                _ = beat.tick() => {}
            }
            self.health.beat();
        }
        lease.renewal.abort();
        if let Some(task) = lease.reacquiring.take() {
            task.abort();
        }
        // A peer-cache write in flight finishes (no temporary file left behind).
        if let Some(writer) = self.cache_writer.take() {
            let _ = writer.join();
        }
        info!("Exiting cleanly...");
        Ok(())
    }

    /// Re-reads weft's kernel objects (a dump) and applies the difference: the backstop to
    /// netlink notifications. A no-change audit makes zero writes (target P6).
    async fn audit(&mut self, why: &str) {
        let started = std::time::Instant::now();
        self.check_devices(why).await;
        match self.reconciler.refresh().await {
            Ok(()) => {
                self.reconcile_as(ReconcileReason::Audit, why).await;
                debug!("{why}: dump and diff in {:?}", started.elapsed());
            }
            Err(e) => warn!("{why}: re-reading weft's kernel state failed: {e}"),
        }
    }

    /// Reads the primary backend's devices (one link dump, no writes) and repairs what
    /// notifications would have reported: a device gone, down, or without its `<subnet>.0/32`
    /// address. The backstop for changes made while no notification could arrive (between the
    /// initial sync and the subscription) or that were lost.
    async fn check_devices(&mut self, why: &str) {
        let devices = self.primary.devices();
        if devices.is_empty() {
            return;
        }
        let links = match self.nl.links().await {
            Ok(links) => links,
            Err(e) => {
                warn!("{why}: reading the links failed: {e}");
                return;
            }
        };
        for index in devices {
            match device_health(&links, index, self.own.key.v4) {
                DeviceHealth::Missing => {
                    warn!(
                        "{why}: our device (index {index}) is gone; re-creating it with every peer entry"
                    );
                    self.reconciler.disown_device(index);
                    self.device_lost = true;
                }
                DeviceHealth::Down(name) => {
                    warn!("{why}: {name} is down; setting it up again");
                    self.device_changed = true;
                }
                DeviceHealth::NoAddress(name) => {
                    warn!(
                        "{why}: {name} lacks its address {}/32; restoring it",
                        self.own.key.v4.network()
                    );
                    self.device_changed = true;
                }
                DeviceHealth::Ok => {}
            }
        }
        if self.device_lost {
            self.recreate_devices().await;
        } else if self.device_changed {
            self.reconfigure_devices().await;
        }
    }

    /// Feeds one netlink notification to the reconciler; true when something weft owns changed.
    fn on_kernel_event(&mut self, ev: &KernelEvent) -> bool {
        let ours = |index: &u32| self.primary.devices().contains(index);
        match ev {
            KernelEvent::LinkDeleted { index, name } if ours(index) => {
                warn!("{name} was deleted by someone else; re-creating it with every peer entry");
                self.reconciler.disown_device(*index);
                self.device_lost = true;
            }
            KernelEvent::LinkChanged {
                index,
                name,
                up: false,
                ..
            } if ours(index) => {
                warn!("{name} was set down by someone else; setting it up again");
                self.device_changed = true;
            }
            KernelEvent::AddressDeleted {
                index,
                addr,
                prefix_len,
            } if ours(index) => {
                warn!(
                    "{addr}/{prefix_len} was removed from our device by someone else; restoring it"
                );
                self.device_changed = true;
            }
            KernelEvent::Overrun => {
                warn!(
                    "netlink notifications were lost (socket overrun); re-reading the devices and weft's entries"
                );
                self.devices_in_doubt = true;
            }
            _ => {}
        }
        self.reconciler.observe(ev)
    }

    /// Re-applies the primary backend's device configuration (address, up, MAC check) after an
    /// out-of-band change; a device that can't be configured as it is gets re-created.
    async fn reconfigure_devices(&mut self) {
        self.device_changed = false;
        match self
            .primary
            .configure(&self.nl, &self.ext, self.own.key.v4)
            .await
        {
            Ok(_) => {}
            Err(e) => {
                warn!("the device no longer matches our lease ({e}); re-creating it");
                for index in self.primary.devices() {
                    self.reconciler.disown_device(index);
                }
                self.device_lost = true;
                self.recreate_devices().await;
            }
        }
    }

    /// Re-creates the primary backend's devices (same MAC, same address) after an out-of-band
    /// delete; the next reconcile re-adds every peer's entries on the new device.
    async fn recreate_devices(&mut self) {
        let attrs = match self.primary.prepare(&self.nl, &self.ext).await {
            Ok(attrs) => attrs,
            Err(e) => {
                error!(
                    "re-creating the backend device failed: {e}; retrying in {RETRY_INTERVAL:?}"
                );
                self.pending_retry = true;
                return;
            }
        };
        if let Err(e) = self
            .primary
            .configure(&self.nl, &self.ext, self.own.key.v4)
            .await
        {
            error!("configuring the re-created device failed: {e}; retrying in {RETRY_INTERVAL:?}");
            self.pending_retry = true;
            return;
        }
        for index in self.primary.devices() {
            self.reconciler.own_device(index);
        }
        self.device_lost = false;
        if attrs != self.attrs {
            // Not expected: the device keeps its MAC. Peers need the new lease value.
            warn!("the re-created device changed our lease attributes; re-publishing");
            self.republish(attrs).await;
        }
    }

    /// Applies one watch event and says what it changed.
    async fn on_watch_event(&mut self, ev: WatchEvent, lease: &mut LeaseTasks) -> Effect {
        match self.table_event(ev, lease).await {
            Ok(Some(change)) => Effect::Peers(vec![change]),
            Ok(None) => Effect::Nothing,
            Err(Full) => Effect::Full,
        }
    }

    /// [`on_watch_event`](Self::on_watch_event)'s work: `Ok(change)` for a plain peer change (or
    /// none), `Err(Full)` when the desired state must be planned from the whole table (a resync,
    /// the own lease re-acquired, a new config).
    async fn table_event(
        &mut self,
        ev: WatchEvent,
        lease: &mut LeaseTasks,
    ) -> Result<Option<Change>, Full> {
        let full = |changed: bool| if changed { Err(Full) } else { Ok(None) };
        let metrics = self.health.metrics();
        match &ev {
            WatchEvent::Put(_) => metrics.watch_event(WatchEventKind::Put),
            WatchEvent::Delete(_) => metrics.watch_event(WatchEventKind::Delete),
            WatchEvent::Malformed { .. } => metrics.watch_event(WatchEventKind::Malformed),
            WatchEvent::Resync(_) => metrics.watch_event(WatchEventKind::Resync),
            WatchEvent::Reconnected => metrics.etcd_reconnected(),
            WatchEvent::Disconnected | WatchEvent::Config(_) => {}
        }
        match &ev {
            WatchEvent::Delete(key) if *key == self.own.key => {
                warn!(
                    "our lease {key} was deleted from etcd; re-acquiring (the data plane keeps running)"
                );
                self.reacquire(lease);
                Ok(None)
            }
            WatchEvent::Put(entry) if entry.key == self.own.key && lease.reacquiring.is_some() => {
                // Someone else took our old key while we re-acquire: the re-acquire's
                // compare-and-swap decides (it finds the key taken and picks another subnet).
                self.table.apply(&ev);
                Ok(None)
            }
            WatchEvent::Put(entry) if entry.key == self.own.key && entry.attrs != self.attrs => {
                warn!(
                    "our lease {} was overwritten by another writer ({}); writing ours back",
                    entry.key,
                    entry.attrs.to_json()
                );
                self.table.apply(&ev);
                self.reassert().await;
                Ok(None)
            }
            WatchEvent::Malformed {
                subnet: Some(key),
                reason,
                ..
            } if *key == self.own.key && lease.reacquiring.is_none() => {
                warn!(
                    "our lease {key} was overwritten with a malformed value ({reason}); writing ours back"
                );
                self.reassert().await;
                Ok(None)
            }
            WatchEvent::Resync(snapshot) => {
                info!(
                    "lease watch resynchronised at revision {}",
                    snapshot.revision
                );
                let changed = !self.table.reset(snapshot).is_empty();
                let own = snapshot.leases.iter().find(|l| l.key == self.own.key);
                let own_malformed = snapshot
                    .malformed
                    .iter()
                    .any(|m| m.subnet == Some(self.own.key));
                if own.is_none() && !own_malformed {
                    warn!("our lease {} is gone from etcd; re-acquiring", self.own.key);
                    self.reacquire(lease);
                    return Err(Full);
                }
                if lease.reacquiring.is_none()
                    && (own_malformed || own.is_some_and(|l| l.attrs != self.attrs))
                {
                    warn!(
                        "our lease {} holds another value in etcd; writing ours back",
                        self.own.key
                    );
                    self.reassert().await;
                }
                full(changed)
            }
            WatchEvent::Disconnected => {
                warn!("lease watch disconnected; the data plane stays as it is while reconnecting");
                Ok(None)
            }
            WatchEvent::Reconnected => {
                info!("lease watch reconnected");
                Ok(None)
            }
            WatchEvent::Config(text) => {
                if self.opts.net_config_path.is_some() {
                    // The file is the source of truth; etcd's copy is not ours to follow.
                    return Ok(None);
                }
                match text {
                    Some(text) => full(self.on_config(text).await),
                    None => {
                        warn!(
                            "{} was deleted; keeping the running config and data plane",
                            self.mgr.registry().config_key()
                        );
                        Ok(None)
                    }
                }
            }
            _ => Ok(self.table.apply(&ev)),
        }
    }

    /// Re-reads the config file when the path resolves to a new file (an edit, or the symlink
    /// swap of a Kubernetes ConfigMap update).
    async fn poll_config_file(&mut self) {
        let Some(path) = self.opts.net_config_path.clone() else {
            return;
        };
        let stamp = FileStamp::of(&path);
        if stamp.is_none() || stamp == self.config_file {
            return;
        }
        self.config_file = stamp;
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                info!("{} changed", path.display());
                if self.on_config(&text).await {
                    self.reconcile(ReconcileReason::ConfigChange).await;
                }
            }
            Err(e) => warn!(
                "reading {}: {e}; keeping the running config",
                path.display()
            ),
        }
    }

    /// A new config text: applies what can change live (the backend), refuses the rest with a
    /// clear log line and leaves the running data plane as it is. True when peers need a new
    /// reconcile.
    async fn on_config(&mut self, text: &str) -> bool {
        let new = match parse_config(text) {
            Ok(conf) => conf,
            Err(e) => {
                warn!("ignoring the new network config: {e:#}; the data plane stays as it is");
                return false;
            }
        };
        if new == self.conf {
            debug!("network config unchanged");
            return false;
        }
        let fixed = |c: &NetConf| {
            (
                c.network,
                c.subnet_len,
                c.subnet_min,
                c.subnet_max,
                c.enable_ipv4,
                c.enable_ipv6,
            )
        };
        if fixed(&new) != fixed(&self.conf) {
            warn!(
                "refusing the new network config: Network, SubnetLen, SubnetMin/Max and the IP families cannot change while nodes hold leases ({} /{} → {} /{}); the data plane stays as it is",
                self.conf.network.map(|n| n.to_string()).unwrap_or_default(),
                self.conf.subnet_len,
                new.network.map(|n| n.to_string()).unwrap_or_default(),
                new.subnet_len
            );
            return false;
        }
        self.config_text = text.to_string();
        self.cache_dirty = true;
        if new.enable_nftables != self.conf.enable_nftables {
            match start_firewall(&self.opts, &new, self.own.key.v4).await {
                Ok(fw) => self.firewall = fw,
                Err(e) => error!(
                    "switching the masquerade rules to EnableNFTables={}: {e:#}",
                    new.enable_nftables
                ),
            }
        }
        if new.backend == self.conf.backend {
            info!("network config changed (backend unchanged)");
            self.conf = new;
            return false;
        }
        self.switch_backend(new).await
    }

    /// Brings up the backend of `new`, re-publishes our lease with it on the same subnet, and
    /// keeps the old backend for peers that still advertise it; the old one is removed by
    /// [`Self::reconcile`] once no peer uses it.
    async fn switch_backend(&mut self, new: NetConf) -> bool {
        let from = self.conf.backend.type_name();
        let to = new.backend.type_name();
        info!(
            "backend changes from {from} to {to}: switching live on subnet {}",
            self.own.key
        );
        // Switching back to a backend we still hold: take it as it is.
        let mut next = match self.legacy.iter().position(|l| l.conf == new.backend) {
            Some(i) => self.legacy.remove(i).backend,
            None => {
                // A held backend of the same type would share the device name: retire it.
                let mut i = 0;
                while i < self.legacy.len() {
                    if self.legacy[i].backend.type_name() == to {
                        let mut old = self.legacy.remove(i).backend;
                        for index in old.devices() {
                            self.reconciler.disown_device(index);
                        }
                        if let Err(e) = old.teardown(&self.nl).await {
                            warn!("removing the old {to} backend: {e}");
                        }
                    } else {
                        i += 1;
                    }
                }
                match AnyBackend::from_conf(&new.backend) {
                    Ok(b) => b,
                    Err(e) => {
                        warn!("refusing the new backend: {e}; the data plane stays as it is");
                        return false;
                    }
                }
            }
        };
        next.adopt_previous(&self.attrs);
        let attrs = match next.prepare(&self.nl, &self.ext).await {
            Ok(attrs) => attrs,
            Err(e) => {
                warn!("cannot bring up the {to} backend: {e}; staying on {from}");
                return false;
            }
        };
        let mtu = match next.configure(&self.nl, &self.ext, self.own.key.v4).await {
            Ok(mtu) => mtu,
            Err(e) => {
                warn!("cannot configure the {to} backend: {e}; staying on {from}");
                if let Err(e) = next.teardown(&self.nl).await {
                    warn!("removing the half-made {to} backend: {e}");
                }
                return false;
            }
        };
        for index in next.devices() {
            self.reconciler.own_device(index);
        }
        let old = std::mem::replace(&mut self.primary, next);
        let old_conf = std::mem::replace(&mut self.conf, new).backend;
        if old.type_name() == to {
            // Same type, other options: the device was reused or re-created by `prepare`.
            for index in old.devices() {
                if !self.primary.devices().contains(&index) {
                    self.reconciler.disown_device(index);
                }
            }
        } else {
            self.legacy.push(Legacy {
                conf: old_conf,
                backend: old,
                unused_since: None,
            });
        }
        self.republish(attrs).await;
        if let Err(e) = self.write_subnet_env(mtu) {
            error!("{e:#}");
        }
        true
    }

    /// Starts re-acquiring the own lease in the background (after the own key was deleted or
    /// its etcd lease expired): the control loop keeps serving peer changes, drift repair and
    /// health while etcd is slow or down. A re-acquire already running is left to finish.
    fn reacquire(&mut self, lease: &mut LeaseTasks) {
        if lease.reacquiring.is_some() {
            return;
        }
        lease.renewal.abort();
        let mut mgr = self.mgr.clone();
        let prefer = self.own.key.v4;
        let shutdown = self.shutdown.clone();
        lease.reacquiring = Some(tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(100), ETCD_RETRY_MAX);
            loop {
                let res = tokio::select! {
                    r = mgr.reacquire(prefer) => r,
                    () = shutdown.cancelled() => return None,
                };
                match res {
                    Ok(got) => return Some((got, mgr)),
                    Err(e) => {
                        let wait = backoff.next_delay();
                        warn!("re-acquiring our lease failed (retrying in {wait:.1?}): {e:#}");
                        if !sleep_or_shutdown(&shutdown, wait).await {
                            return None;
                        }
                    }
                }
            }
        }));
    }

    /// Takes over a finished re-acquire: its subnet manager (holding the new etcd lease), a
    /// new renewal, and for a new subnet the firewall, device address and subnet.env.
    async fn reacquired(&mut self, got: Reacquired, mgr: SubnetManager, lease: &mut LeaseTasks) {
        self.mgr = mgr;
        self.own = got.lease;
        lease.renewal = tokio::spawn(self.mgr.renewal(self.own, self.shutdown.clone()));
        if got.subnet_changed {
            self.take_new_subnet().await;
        }
        self.table.reset(&got.snapshot);
        self.cache_dirty = true;
    }

    /// After the own lease moved to another subnet: the lease table's own key, the firewall
    /// rules, the device address and subnet.env follow it.
    async fn take_new_subnet(&mut self) {
        self.table.set_own(Some(self.own.key));
        self.firewall.set_subnet(self.own.key.v4);
        if let Err(e) = self.firewall.apply().await {
            error!("{} rules for {}: {e:#}", self.firewall.mode(), self.own.key);
        }
        match self
            .primary
            .configure(&self.nl, &self.ext, self.own.key.v4)
            .await
        {
            Ok(mtu) => {
                if let Err(e) = self.write_subnet_env(mtu) {
                    error!("{e:#}");
                }
            }
            Err(e) => error!("reconfiguring for {}: {e}", self.own.key),
        }
        self.cache_dirty = true;
    }

    /// Writes our lease value back over a foreign one on our key (compare-and-swap on the
    /// key's current revision, attached to our etcd lease). A key deleted meanwhile is left to
    /// the delete event (re-acquire); other errors are retried a few times, then left to the
    /// next event on the key.
    async fn reassert(&mut self) {
        let reg = self.mgr.registry().clone();
        let key = self.own.key;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        for attempt in 1..=5 {
            let res = match reg.lease_mod_revision(&key).await {
                Ok(None) => {
                    info!("our lease {key} is gone; the delete event re-acquires it");
                    return;
                }
                Ok(Some(rev)) => reg
                    .update_lease(&key, &self.attrs, rev, self.own.lease_id)
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            match res {
                Ok(()) => {
                    info!("wrote our lease {key} back: {}", self.attrs.to_json());
                    return;
                }
                Err(e) => {
                    let wait = backoff.next_delay();
                    warn!(
                        "writing our lease {key} back failed (attempt {attempt}/5, retrying in {wait:.1?}): {e}"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
        error!(
            "could not write our lease {key} back; peers may see another value until it changes again"
        );
    }

    /// Publishes new lease attributes on our subnet (compare-and-swap on our own key).
    async fn republish(&mut self, attrs: LeaseAttrs) {
        let mut backoff = Backoff::new(Duration::from_millis(100), ETCD_RETRY_MAX);
        loop {
            self.health.beat();
            let res = tokio::select! {
                r = self.mgr.acquire(&self.conf, &attrs, Some(self.own.key.v4)) => r,
                () = self.shutdown.cancelled() => return,
            };
            match res {
                Ok((own, _)) => {
                    let moved = own.key != self.own.key;
                    if moved {
                        warn!(
                            "re-publishing moved us from {} to {}",
                            self.own.key, own.key
                        );
                    }
                    self.own = own;
                    self.attrs = attrs;
                    info!("published lease {}: {}", self.own.key, self.attrs.to_json());
                    if moved {
                        self.take_new_subnet().await;
                    }
                    return;
                }
                Err(e) => {
                    let wait = backoff.next_delay();
                    warn!("re-publishing our lease failed (retrying in {wait:.1?}): {e:#}");
                    if !sleep_or_shutdown(&self.shutdown, wait).await {
                        return;
                    }
                }
            }
        }
    }

    /// Re-reads the external interface's addresses (a peer may have become adjacent).
    async fn refresh_interface(&mut self) {
        match self.nl.link_by_name(&self.ext.name).await {
            Ok(Some(link)) => {
                self.ext.prefixes = link.addrs.iter().filter_map(|a| a.v4_net()).collect();
                self.ext.mtu = link.mtu;
            }
            Ok(None) => warn!("external interface {} is gone", self.ext.name),
            Err(e) => warn!("re-reading {}: {e}", self.ext.name),
        }
    }
}

/// The next signal of `sig`, or never when there is no handler.
async fn recv_or_pending(sig: Option<&mut tokio::signal::unix::Signal>) -> Option<()> {
    match sig {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Devices weft's backends make (`flannel.<VNI>`, `flannel-v6.<VNI>`, `flannel.ipip`).
fn is_backend_device(name: &str) -> bool {
    name.starts_with("flannel.") || name.starts_with("flannel-v6.")
}

/// Removes the devices a previous backend left (the config changed while weft was down), with
/// their routes, ARP and FDB entries; `keep` are the current backend's.
async fn remove_other_devices(nl: &Netlink, keep: &[u32]) {
    let links = match nl.links().await {
        Ok(links) => links,
        Err(e) => {
            warn!("listing devices to remove a previous backend's: {e}");
            return;
        }
    };
    for link in links {
        if is_backend_device(&link.name) && !keep.contains(&link.index) {
            match nl.link_del(link.index).await {
                Ok(()) => info!("ip link del {} (left by a previous backend)", link.name),
                Err(e) => warn!("removing {} left by a previous backend: {e}", link.name),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use backends::nl::{AddrInfo, LinkInfo};

    use super::*;

    fn link(index: u32, up: bool, addrs: &[(&str, u8)]) -> LinkInfo {
        LinkInfo {
            index,
            name: format!("flannel.{index}"),
            mtu: 1450,
            up,
            carrier: up,
            addrs: addrs
                .iter()
                .map(|(a, p)| AddrInfo {
                    addr: a.parse().expect("addr"),
                    prefix_len: *p,
                    permanent: true,
                    deprecated: false,
                    temporary: false,
                    scope_global: true,
                })
                .collect(),
        }
    }

    #[test]
    fn device_health_reads_the_link_dump() {
        let own: ipnet::Ipv4Net = "10.244.7.0/24".parse().expect("net");
        let links = [
            link(1, true, &[("127.0.0.1", 8)]),
            link(5, true, &[("10.244.7.0", 32)]),
            link(6, false, &[("10.244.7.0", 32)]),
            link(7, true, &[("10.244.7.0", 24)]),
            link(8, true, &[]),
        ];
        assert_eq!(device_health(&links, 5, own), DeviceHealth::Ok);
        assert_eq!(device_health(&links, 9, own), DeviceHealth::Missing);
        assert_eq!(
            device_health(&links, 6, own),
            DeviceHealth::Down("flannel.6".into())
        );
        assert_eq!(
            device_health(&links, 7, own),
            DeviceHealth::NoAddress("flannel.7".into())
        );
        assert_eq!(
            device_health(&links, 8, own),
            DeviceHealth::NoAddress("flannel.8".into())
        );
    }

    #[test]
    fn a_burst_is_incremental_only_while_every_event_is_a_peer_change() {
        let peer = |net: &str| Peer {
            key: SubnetKey {
                v4: net.parse().expect("net"),
                v6: None,
            },
            attrs: LeaseAttrs {
                public_ip: std::net::Ipv4Addr::new(198, 18, 0, 2),
                public_ipv6: None,
                backend_type: "host-gw".into(),
                backend_data: None,
                backend_v6_data: None,
            },
        };
        let a = Change::Added(peer("10.244.1.0/24"));
        let b = Change::Removed(peer("10.244.2.0/24"));
        let mut e = Effect::Nothing;
        e.add(Effect::Nothing);
        assert!(matches!(e, Effect::Nothing));
        e.add(Effect::Peers(vec![a.clone()]));
        e.add(Effect::Nothing);
        e.add(Effect::Peers(vec![b.clone()]));
        match &e {
            Effect::Peers(changes) => assert_eq!(changes, &vec![a.clone(), b.clone()]),
            _ => panic!("expected peer changes"),
        }
        e.add(Effect::Full);
        e.add(Effect::Peers(vec![a]));
        assert!(matches!(e, Effect::Full));
    }
}
