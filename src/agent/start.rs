//! Start-up: health server, first contact with etcd (or a boot from the peer cache), the
//! config, the interface, the backend, the lease, the initial sync, subnet.env and readiness.
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use backends::nl::Netlink;
use backends::reconcile::Reconciler;
use backends::{AnyBackend, Backend, ExternalInterface, Peer};
use net_conf::{BackendConf, NetConf, SubnetEnv, SubnetKey};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::cache_writer::CacheWriter;
use super::config_watch::{FileStamp, parse_config};
use super::dataplane::DataPlane;
use super::firewall::{self, Firewalls};
use super::http::Health;
use super::leases::{Leases, RETRY_MAX};
use super::metrics::ReconcileReason;
use super::peer_cache::PeerCache;
use super::sd_notify::Notifier;
use super::{Agent, iface, subnet_file};
use crate::cli::Options;
use crate::lease::etcd::manager::{LeaseTiming, SubnetManager};
use crate::lease::etcd::registry::{EtcdOptions, Registry};
use crate::lease::kube::Fatal;
use crate::lease::{Backoff, LeaseSource, Snapshot, retry_until, sleep_or_shutdown};

/// How long the first contact with etcd may take before a node with a peer cache programs the
/// cached peers instead of waiting.
pub(super) const FIRST_CONTACT: Duration = Duration::from_secs(3);

/// Runs the agent until `shutdown` is cancelled. `Ok(())` on a clean shutdown; an error ends
/// the process with exit code 1 (bad config, no usable interface, backend precondition).
pub async fn run(opts: Options, shutdown: CancellationToken) -> Result<()> {
    let health = Health::new(super::http::DEFAULT_STALE_AFTER);
    if let Some(addr) = opts.healthz_addr() {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen for health checks on {addr}"))?;
        info!("serving /healthz and /readyz on http://{addr}");
        tokio::spawn(super::http::serve(
            listener,
            health.clone(),
            shutdown.clone(),
        ));
    }
    let notifier = Notifier::from_env();
    spawn_sd_notify(&notifier, &health, &shutdown);
    if opts.kube_subnet_mgr {
        return super::start_kube::run(opts, health, notifier, shutdown).await;
    }

    let nl = Netlink::connect().context("open a netlink socket")?;
    // With user/password the client authenticates at once, so an unreachable etcd shows here.
    let etcd = opts.etcd_options();
    // First contact, bounded: a node with a peer cache programs the cached peers rather than
    // wait for an etcd that does not answer.
    let first = tokio::time::timeout(FIRST_CONTACT, first_contact(&etcd)).await;
    // The first contact's list of the leases, kept for the first acquire (target P7: start =
    // one Range, a Grant and a Txn).
    let (registry, source_text, listed) = match first {
        Ok(Ok((registry, Some(text), snapshot))) => (registry, Some(text), Some(snapshot)),
        // No config in etcd yet: it is fetched below, and the list would be stale by then.
        Ok(Ok((registry, None, _))) => (registry, None, None),
        failed => {
            match failed {
                Ok(Err(e)) => warn!("etcd is unreachable at start: {e:#}"),
                _ => warn!("etcd did not answer within {FIRST_CONTACT:?} at start"),
            }
            boot_from_cache_if_any(&nl, &opts).await;
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
    let timing = LeaseTiming {
        renew_margin: Duration::from_secs(u64::from(opts.subnet_lease_renew_margin) * 60),
        ..LeaseTiming::default()
    };
    let mut source = SubnetManager::new(registry, timing);
    source.set_metrics(health.metrics().clone());
    // `--net-config-path` given: the file is the config (etcd still holds the leases); etcd's
    // own config is kept to warn while the two disagree.
    let mut store_config = None;
    let text = match (opts.net_config_path.as_deref(), source_text) {
        (Some(path), store) => {
            store_config = store;
            std::fs::read_to_string(path)
                .with_context(|| format!("read network config {}", path.display()))?
        }
        (None, Some(text)) => text,
        (None, None) => tokio::select! {
            text = fetch_config(&source, &health) => text,
            () = shutdown.cancelled() => return Ok(()),
        },
    };
    let start = Start::settle(opts, text, nl, health, notifier, store_config, shutdown).await?;
    start.run(source, listed).await
}

/// systemd: `STOPPING=1` when shutdown begins, and `WATCHDOG=1` every half `WATCHDOG_USEC`
/// while the control loop beats (a stuck loop stops the pings, and systemd restarts weft).
fn spawn_sd_notify(notifier: &Notifier, health: &Health, shutdown: &CancellationToken) {
    if !notifier.enabled() {
        return;
    }
    let (n, s) = (notifier.clone(), shutdown.clone());
    tokio::spawn(async move {
        s.cancelled().await;
        n.stopping();
    });
    if let Some(every) = notifier.watchdog_every() {
        info!("systemd watchdog: WATCHDOG=1 every {every:?} while the control loop runs");
        let (n, h, s) = (notifier.clone(), health.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = s.cancelled() => return,
                    _ = tick.tick() => {
                        if h.is_alive(std::time::Instant::now()) {
                            n.watchdog();
                        }
                    }
                }
            }
        });
    }
}

/// Connects and reads `<prefix>/config` and the leases in one Range: config `None` when etcd
/// answers that it has none (flannel's agents often start before the config is written).
async fn first_contact(etcd: &EtcdOptions) -> Result<(Registry, Option<String>, Snapshot)> {
    let registry = Registry::connect(etcd).await?;
    let (config, snapshot) = registry.list_network().await?;
    Ok((registry, config, snapshot))
}

/// The lease source does not answer at start: program the peers of the cache, if there is a
/// usable one (logged either way).
pub(super) async fn boot_from_cache_if_any(nl: &Netlink, opts: &Options) {
    let Some(path) = opts.peer_cache_file.as_deref() else {
        return;
    };
    match PeerCache::load(path) {
        Ok(Some(cache)) => {
            if let Err(e) = boot_from_cache(nl, opts, &cache, path).await {
                warn!("programming the cached peers failed: {e:#}");
            }
        }
        Ok(None) => info!("no peer cache at {} to boot from", path.display()),
        Err(e) => warn!("the peer cache is unusable: {e:#}"),
    }
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
    let ext = iface::select_interface(nl, opts, iface::Stack::of(&conf)).await?;
    let mut backend = AnyBackend::from_conf(&conf.backend)?;
    backend.adopt_previous(&own_attrs);
    backend.prepare(nl, &ext).await?;
    let mtu = backend.configure(&ext, &own)?;
    let mut reconciler = Reconciler::new(nl.clone())
        .with_route_nexthops(opts.route_nexthops)
        .with_ownership(super::ownership(&conf));
    reconciler.refresh().await?;
    let peers: Vec<Peer> = cache
        .peers()
        .into_iter()
        .filter(|p| p.attrs.backend_type == backend.type_name() && p.key != own)
        .collect();
    let mut state = backend.desired(&ext, &peers).state;
    if opts.ip_blackhole_route {
        state.blackholes.extend(own.nets());
    }
    state.merge(reconciler.current().clone());
    let report = reconciler.apply(&state).await;
    start_firewall(opts, &conf, own).await?;
    write_subnet_env(opts, &conf, own, mtu).await?;
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

/// Installs the masquerade (`--ip-masq`) and forward (`--iptables-forward-rules`) rules in the
/// mode the config selects (`EnableNFTables`), for each IP family of the network, after removing
/// the other mode's. A failure is fatal with `--ip-masq` (pods would reach the outside
/// unmasqueraded); the forward rules alone are logged and retried by the audit.
pub(super) async fn start_firewall(
    opts: &Options,
    conf: &NetConf,
    own: SubnetKey,
) -> Result<Firewalls> {
    let fw = Firewalls::new(
        conf,
        own,
        firewall::Flags {
            ip_masq: opts.ip_masq,
            forward: opts.iptables_forward_rules,
            fully_random: !opts.ip_masq_fully_random_disable,
        },
    )
    .await?;
    match fw.start().await {
        Ok(()) => {}
        Err(e) if opts.ip_masq => {
            return Err(e.context(format!(
                "--ip-masq: installing the {} masquerade rules",
                fw.label()
            )));
        }
        Err(e) => error!(
            "installing the {} forward rules: {e:#}; retrying at the next audit",
            fw.label()
        ),
    }
    Ok(fw)
}

/// Writes subnet.env (atomically, with its fsyncs) for the subnets of `own` in `conf`'s
/// networks, on a blocking thread: never on the runtime's. The IPv4 lines are written when the
/// network has IPv4, the IPv6 lines when it has IPv6, as flanneld writes them.
pub(super) async fn write_subnet_env(
    opts: &Options,
    conf: &NetConf,
    own: SubnetKey,
    mtu: u32,
) -> Result<()> {
    let (v4, v6) = (conf.enable_ipv4, conf.enable_ipv6);
    let env = SubnetEnv {
        network: conf.network.filter(|_| v4),
        subnet: own.v4.filter(|_| v4),
        ipv6_network: conf.ipv6_network.filter(|_| v6),
        ipv6_subnet: own.v6.filter(|_| v6),
        more_networks: Vec::new(),
        more_ipv6_networks: Vec::new(),
        mtu,
        ipmasq: opts.ip_masq,
    };
    let path = opts.subnet_file.clone();
    let text = env.render();
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || subnet_file::write_atomic(&path, &text))
        .await
        .with_context(|| format!("write {shown}"))?
        .with_context(|| format!("write {shown}"))
}

/// The config text from the source, retried with capped, jittered backoff while the source is
/// unreachable or has none (flannel retries too: the key is often written after the agents
/// start). Each attempt counts as a liveness beat: waiting for etcd at start is not a stuck
/// agent.
async fn fetch_config<S: LeaseSource>(source: &S, health: &Health) -> String {
    let mut backoff = Backoff::new(Duration::from_millis(200), RETRY_MAX);
    loop {
        health.beat();
        let why = match source.config().await {
            Ok(Some(text)) => return text,
            Ok(None) => format!(
                "flannel config not found in {}. Did you create your config using etcdv3 API?",
                source.config_location()
            ),
            Err(e) => format!("{e:#}"),
        };
        let wait = backoff.next_delay();
        warn!("Couldn't fetch network config: {why}; retrying in {wait:?}");
        tokio::time::sleep(wait).await;
    }
}

/// The sysctl that exists only while bridged traffic passes iptables (`br_netfilter`).
const BRIDGE_NF_CALL_IPTABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// As flanneld: in iptables mode, refuse to start without `br_netfilter` (kube-proxy's rules
/// would not see pod traffic that crosses the bridge), with flanneld's message. nftables mode
/// does not need it.
fn check_br_netfilter(enable_nftables: bool, sysctl: &Path) -> Result<()> {
    if enable_nftables {
        return Ok(());
    }
    std::fs::metadata(sysctl).map(|_| ()).map_err(|e| {
        let reason = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
            _ => e.to_string(),
        };
        anyhow!(
            "Failed to check br_netfilter: stat {}: {reason} (load the module: modprobe br_netfilter)",
            sysctl.display()
        )
    })
}

/// What start-up has settled before the lease: config, interface and backend.
pub(super) struct Start {
    pub opts: Options,
    pub conf: NetConf,
    pub config_text: String,
    pub nl: Netlink,
    pub ext: ExternalInterface,
    pub primary: AnyBackend,
    pub health: Health,
    pub notifier: Notifier,
    /// The lease store's own config when the config comes from a file (etcd mode).
    pub store_config: Option<String>,
    pub shutdown: CancellationToken,
}

impl Start {
    /// The config text parsed and checked (logged as flanneld logs it), the backend made from
    /// it, the external interface chosen: everything before the lease, in either mode.
    pub(super) async fn settle(
        opts: Options,
        text: String,
        nl: Netlink,
        health: Health,
        notifier: Notifier,
        store_config: Option<String>,
        shutdown: CancellationToken,
    ) -> Result<Start> {
        let conf = parse_config(&text)?;
        if !opts.kube_subnet_mgr {
            super::config_watch::refuse_ipv6_only_in_etcd(&conf)?;
        }
        info!(
            "Found network config - Backend type: {}, Network: {}",
            conf.backend.type_name(),
            conf.network.map(|n| n.to_string()).unwrap_or_default()
        );
        let primary = AnyBackend::from_conf(&conf.backend)?;
        match &conf.backend {
            BackendConf::Vxlan(vxlan) => info!("VXLAN config: {vxlan}"),
            BackendConf::IpIp(ipip) => {
                info!("IPIP config: DirectRouting={}", ipip.direct_routing)
            }
            BackendConf::HostGw => {}
        }
        let ext = iface::select_interface(&nl, &opts, iface::Stack::of(&conf)).await?;
        Ok(Start {
            opts,
            conf,
            config_text: text,
            nl,
            ext,
            primary,
            health,
            notifier,
            store_config,
            shutdown,
        })
    }

    /// The lease, the initial sync, subnet.env and readiness; then the control loop.
    pub(super) async fn run<S: LeaseSource>(
        self,
        mut source: S,
        mut listed: Option<Snapshot>,
    ) -> Result<()> {
        let Start {
            opts,
            conf,
            config_text,
            nl,
            ext,
            mut primary,
            health,
            notifier,
            store_config,
            shutdown,
        } = self;
        check_br_netfilter(conf.enable_nftables, Path::new(BRIDGE_NF_CALL_IPTABLES))?;
        let config_file = opts.net_config_path.as_deref().and_then(FileStamp::of);
        if primary.wants_previous_lease() {
            // A rebooted node keeps what its peers know (vxlan: the VTEP MAC of its lease). The
            // first contact's list serves when there is one; else one list before the device
            // exists. Best effort: without etcd, start fresh.
            if listed.is_none() {
                let got = tokio::select! {
                    r = source.list() => r,
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
        let previous = subnet_file::read_previous(&opts.subnet_file).map_or_else(
            net_conf::alloc::Previous::none,
            |text| net_conf::alloc::Previous {
                v4: net_conf::subnet_env::previous_subnet(&text),
                v6: net_conf::subnet_env::previous_ipv6_subnet(&text),
            },
        );
        let mut backoff = Backoff::new(Duration::from_millis(100), RETRY_MAX);
        let (own, snapshot) = loop {
            health.beat();
            let res = tokio::select! {
                r = source.acquire(&conf, &attrs, previous, listed.take()) => r,
                () = shutdown.cancelled() => return Ok(()),
            };
            match res {
                Ok(acquired) => break acquired,
                // A podCIDR outside the network, say: waiting cannot fix it.
                Err(e) if e.downcast_ref::<Fatal>().is_some() => return Err(e),
                Err(e) => {
                    let wait = backoff.next_delay();
                    warn!("acquiring a subnet lease failed (retrying in {wait:.1?}): {e:#}");
                    if !sleep_or_shutdown(&shutdown, wait).await {
                        return Ok(());
                    }
                }
            }
        };
        // The device and its address come with the initial sync (as does the removal of devices
        // a previous backend left, which no backend wants now).
        let mtu = primary.configure(&ext, &own.key)?;
        let firewall = start_firewall(&opts, &conf, own.key).await?;

        let starter =
            (opts.kube_subnet_mgr && opts.set_node_network_unavailable).then(|| source.clone());
        let leases = Leases::start(
            source,
            own,
            attrs,
            conf.clone(),
            &snapshot,
            Some(health.metrics().clone()),
            shutdown.clone(),
        );
        // The table holds the leases now; don't keep a second copy through the start.
        drop(snapshot);
        let dp = DataPlane::new(
            nl,
            ext,
            primary,
            opts.route_nexthops,
            super::ownership(&conf),
        )
        .with_blackhole_route(own.key, opts.ip_blackhole_route);
        let mut agent = Agent {
            cache: CacheWriter::new(opts.peer_cache_file.clone()),
            opts,
            conf,
            config_text,
            leases,
            dp,
            health,
            config_file,
            store_config,
            firewall,
            shutdown,
        };
        agent.warn_if_store_config_disagrees();
        // Start: dump what weft owns, then one diff that programs every peer and purges what no
        // lease explains (stale routes of peers that left while weft was down). Only after the
        // successful list above, so an etcd failure never empties the kernel.
        agent
            .dp
            .refresh()
            .await
            .context("read weft's routes from the kernel")?;
        agent.reconcile(ReconcileReason::InitialSync).await;
        agent.write_subnet_env(mtu).await?;
        let attrs = agent.leases.attrs().clone();
        let table = agent.leases.take_table();
        let table = agent
            .cache
            .write_now(&agent.config_text, own.key, &attrs, table)
            .await;
        agent.leases.restore_table(table);
        agent.health.set_ready(true);
        notifier.ready();
        if let Some(source) = starter {
            let shutdown = agent.shutdown.clone();
            tokio::spawn(async move {
                retry_until(
                    &shutdown,
                    "setting the node's NetworkUnavailable condition",
                    || source.started(),
                )
                .await
            });
        }
        info!(
            "weft is ready: subnet {} with {} peers",
            agent.leases.own().key,
            agent.leases.table().len()
        );

        // Subscribe only after the initial sync: its own writes (one notification per entry)
        // would pile up unread in memory meanwhile (20,000 vxlan peers: 60,000 messages, most of
        // the peak RSS). Subscribe, then dump and diff again, so no out-of-band change made
        // before the subscription is missed.
        let kernel = backends::nl::subscribe().context("subscribe to netlink notifications")?;
        agent.audit("audit after subscribing").await;

        agent.run(kernel).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;

    #[test]
    fn br_netfilter_is_required_in_iptables_mode_only_with_flanneld_s_message() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("bridge-nf-call-iptables");
        let err = check_br_netfilter(false, &missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "Failed to check br_netfilter: stat {}: no such file or directory",
                missing.display()
            )),
            "{err}"
        );
        check_br_netfilter(true, &missing).unwrap();
        std::fs::write(&missing, "1\n").unwrap();
        check_br_netfilter(false, &missing).unwrap();
    }
}
