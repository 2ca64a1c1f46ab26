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

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use backends::nl::{KernelEvent, Netlink};
use backends::reconcile::Reconciler;
use backends::{Backend, ExternalInterface};
use futures::{FutureExt, StreamExt};
use net_conf::{BackendConf, LeaseAttrs, NetConf, SubnetEnv, SubnetKey};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::cli::Options;
use crate::health::Health;
use crate::iface;
use crate::lease_table::LeaseTable;
use crate::registry::{EtcdOptions, Registry};
use crate::subnet::{
    Backoff, LeaseTiming, OwnLease, RenewalEnd, SubnetManager, WatchEvent, sleep_or_shutdown,
};
use crate::subnet_file;

/// How often the whole owned kernel state is dumped and compared, as a backstop to netlink
/// notifications (which cover deletes within milliseconds).
const AUDIT_INTERVAL: Duration = Duration::from_secs(600);
/// How soon failed kernel writes and skipped peers (not yet adjacent, gateway unreachable) are
/// tried again.
const RETRY_INTERVAL: Duration = Duration::from_secs(10);
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
    let health = Health::new(crate::health::DEFAULT_STALE_AFTER);
    if let Some(addr) = opts.healthz_addr() {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen for health checks on {addr}"))?;
        info!("serving /healthz and /readyz on http://{addr}");
        tokio::spawn(crate::health::serve(
            listener,
            health.clone(),
            shutdown.clone(),
        ));
    }

    let nl = Netlink::connect().context("open a netlink socket")?;
    let registry = Registry::connect(&etcd_options(&opts))
        .await
        .context("etcd client")?;

    let text = tokio::select! {
        r = fetch_config(&registry, &opts) => r?,
        () = shutdown.cancelled() => return Ok(()),
    };
    let parsed = NetConf::parse(&text).map_err(|e| anyhow!("network config: {e}"))?;
    for w in &parsed.warnings {
        warn!("network config: {w}");
    }
    let conf = parsed.conf;
    info!(
        "Found network config - Backend type: {}, Network: {}",
        conf.backend.type_name(),
        conf.network.map(|n| n.to_string()).unwrap_or_default()
    );
    if !conf.enable_ipv4 || conf.enable_ipv6 {
        return Err(anyhow!(
            "network config: weft supports IPv4 networks only for now (EnableIPv4 must be true, EnableIPv6 false)"
        ));
    }

    let ext = select_interface(&nl, &opts).await?;

    match &conf.backend {
        BackendConf::HostGw => {
            let backend = backends::hostgw::HostGw::new();
            Agent::start(opts, conf, registry, nl, ext, backend, health, shutdown).await
        }
        BackendConf::Vxlan(vxlan) => {
            info!("VXLAN config: {vxlan}");
            let backend = backends::vxlan::Vxlan::new(vxlan.clone());
            Agent::start(opts, conf, registry, nl, ext, backend, health, shutdown).await
        }
        BackendConf::IpIp(ipip) => {
            info!("IPIP config: DirectRouting={}", ipip.direct_routing);
            let backend = backends::ipip::IpIp::new(ipip.clone());
            Agent::start(opts, conf, registry, nl, ext, backend, health, shutdown).await
        }
    }
}

fn etcd_options(opts: &Options) -> EtcdOptions {
    EtcdOptions {
        endpoints: opts.etcd_endpoints.clone(),
        prefix: opts.etcd_prefix.clone(),
        cafile: opts.etcd_cafile.clone(),
        certfile: opts.etcd_certfile.clone(),
        keyfile: opts.etcd_keyfile.clone(),
        username: opts.etcd_username.clone(),
        password: opts.etcd_password.as_ref().map(|p| p.expose().to_string()),
    }
}

/// The config text: from `--net-config-path` when given explicitly, else from etcd
/// `<prefix>/config`, retried with capped, jittered backoff while etcd is unreachable or the key
/// is missing (flannel retries too: the key is often written after the agents start).
async fn fetch_config(registry: &Registry, opts: &Options) -> Result<String> {
    if let Some(path) = opts.net_config_path.as_deref() {
        return std::fs::read_to_string(path)
            .with_context(|| format!("read network config {}", path.display()));
    }
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match registry.get_config().await {
            Ok(text) => return Ok(text),
            Err(e) => {
                let wait = backoff.next_delay();
                warn!("Couldn't fetch network config: {e:#}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Picks the external interface as flanneld does (spec §1.1).
async fn select_interface(nl: &Netlink, opts: &Options) -> Result<ExternalInterface> {
    let links = nl.links().await.context("list interfaces")?;
    let cands: Vec<iface::IfaceCandidate> = links
        .iter()
        .map(|l| iface::IfaceCandidate {
            index: l.index,
            name: l.name.clone(),
            mtu: l.mtu,
            up: l.up,
            addrs: l
                .addrs
                .iter()
                .filter_map(|a| match a.addr {
                    std::net::IpAddr::V4(v4) => Some(iface::CandidateAddr {
                        addr: v4,
                        prefix_len: a.prefix_len,
                        permanent: a.permanent,
                        deprecated: a.deprecated,
                        scope_global: a.scope_global,
                    }),
                    std::net::IpAddr::V6(_) => None,
                })
                .collect(),
        })
        .collect();
    let can_reach = match opts.iface_can_reach {
        Some(ip) => {
            let r = nl
                .route_get(ip)
                .await
                .with_context(|| format!("ip route get {ip}"))?;
            Some((r.oif, r.prefsrc))
        }
        None => None,
    };
    let default_route_ifindex = nl
        .default_route_ifindex()
        .await
        .context("read the default route")?;
    let sel = iface::select(
        &cands,
        &iface::IfaceRequest {
            iface: &opts.iface,
            iface_regex: &opts.iface_regex,
            can_reach,
            public_ip: opts.public_ip,
            default_route_ifindex,
        },
    )?;
    Ok(sel.into())
}

/// The running agent: everything the control loop owns.
struct Agent<B: Backend> {
    opts: Options,
    conf: NetConf,
    nl: Netlink,
    ext: ExternalInterface,
    backend: B,
    mgr: SubnetManager,
    own: OwnLease,
    table: LeaseTable,
    reconciler: Reconciler,
    health: Health,
    /// Peers left out by the last plan, with the reason: logged when it changes, not per pass.
    skipped: BTreeMap<SubnetKey, String>,
    /// True while a failed write or a peer of our own type waits for a retry.
    pending_retry: bool,
    /// The lease attributes we publish.
    attrs: LeaseAttrs,
    /// A backend device was deleted out of band and is not re-created yet.
    device_lost: bool,
}

impl<B: Backend> Agent<B> {
    #[allow(clippy::too_many_arguments)]
    async fn start(
        opts: Options,
        conf: NetConf,
        registry: Registry,
        nl: Netlink,
        ext: ExternalInterface,
        mut backend: B,
        health: Health,
        shutdown: CancellationToken,
    ) -> Result<()> {
        if backend.wants_previous_lease() {
            // One list before the device exists, so a rebooted node keeps what its peers know
            // (vxlan: the VTEP MAC of its lease). Best effort: without etcd, start fresh.
            let listed = tokio::select! {
                r = registry.list_leases() => r,
                () = shutdown.cancelled() => return Ok(()),
            };
            match listed {
                Ok(snapshot) => {
                    if let Some(prev) = snapshot
                        .leases
                        .iter()
                        .find(|l| l.attrs.public_ip == ext.ext_addr)
                    {
                        backend.adopt_previous(&prev.attrs);
                    }
                }
                Err(e) => warn!("could not look up our previous lease: {e:#}"),
            }
        }
        let attrs = backend.prepare(&nl, &ext).await?;
        let previous = subnet_file::read_previous(&opts.subnet_file)
            .as_deref()
            .and_then(net_conf::subnet_env::previous_subnet);
        let timing = LeaseTiming {
            renew_margin: Duration::from_secs(u64::from(opts.subnet_lease_renew_margin) * 60),
            ..LeaseTiming::default()
        };
        let mut mgr = SubnetManager::new(registry, timing);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let (own, snapshot) = loop {
            let res = tokio::select! {
                r = mgr.acquire(&conf, &attrs, previous) => r,
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
        let mtu = backend.configure(&nl, &ext, own.key.v4).await?;

        // Subscribe before the first dump, so no out-of-band change falls between the two.
        let kernel = backends::nl::subscribe().context("subscribe to netlink notifications")?;
        let mut table = LeaseTable::new(Some(own.key));
        table.reset(&snapshot);
        let mut reconciler = Reconciler::new(nl.clone());
        for index in backend.devices() {
            reconciler.own_device(index);
        }
        let mut agent = Agent {
            reconciler,
            opts,
            conf,
            nl,
            ext,
            backend,
            mgr,
            own,
            table,
            health,
            skipped: BTreeMap::new(),
            pending_retry: false,
            attrs,
            device_lost: false,
        };
        // Start: dump what weft owns, then one diff that programs every peer and purges what no
        // lease explains (stale routes of peers that left while weft was down). Only after the
        // successful list above, so an etcd failure never empties the kernel.
        agent
            .reconciler
            .refresh()
            .await
            .context("read weft's routes from the kernel")?;
        agent.reconcile("initial sync").await;
        agent.write_subnet_env(mtu)?;
        agent.health.set_ready(true);
        info!(
            "weft is ready: subnet {} with {} peers",
            agent.own.key,
            agent.table.len()
        );

        agent.run(snapshot.revision + 1, kernel, shutdown).await
    }

    fn write_subnet_env(&self, mtu: u32) -> Result<()> {
        let env = SubnetEnv {
            network: self.conf.network,
            subnet: Some(self.own.key.v4),
            ipv6_network: None,
            ipv6_subnet: None,
            mtu,
            ipmasq: self.opts.ip_masq,
        };
        subnet_file::write_atomic(&self.opts.subnet_file, &env.render())
            .with_context(|| format!("write {}", self.opts.subnet_file.display()))?;
        info!("Wrote subnet file to {}", self.opts.subnet_file.display());
        Ok(())
    }

    /// Computes the desired state from the lease table and applies the difference.
    async fn reconcile(&mut self, why: &str) {
        let peers = self.table.peers();
        let desired = self.backend.desired(&self.ext, &peers);
        let skipped: BTreeMap<SubnetKey, String> = desired.skipped.into_iter().collect();
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
        let started = std::time::Instant::now();
        let report = self.reconciler.apply(&desired.state).await;
        for (op, err) in &report.failures {
            warn!("{op} failed: {err}; retrying in {RETRY_INTERVAL:?}");
        }
        let own_type = self.backend.type_name();
        // Failed writes are retried; so are peers of our own type that were skipped (an address
        // may be added to the interface). Peers of another backend type wait for a new lease.
        self.pending_retry = !report.failures.is_empty()
            || skipped.keys().any(|key| {
                self.table
                    .get(key)
                    .is_some_and(|attrs| attrs.backend_type == own_type)
            });
        self.skipped = skipped;
        debug!(
            "reconcile ({why}): {} peers, {} writes, {} failures in {:?}",
            peers.len(),
            report.writes,
            report.failures.len(),
            started.elapsed()
        );
    }

    async fn run(
        mut self,
        revision: i64,
        mut kernel: impl futures::Stream<Item = KernelEvent> + Unpin,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let mut watch = self.mgr.watch(revision, shutdown.clone());
        let mut renewal = tokio::spawn(self.mgr.renewal(self.own, shutdown.clone()));

        let mut audit = tokio::time::interval(AUDIT_INTERVAL);
        audit.reset();
        let mut retry = tokio::time::interval(RETRY_INTERVAL);
        retry.reset();
        let mut beat = tokio::time::interval(HEARTBEAT);
        let mut kernel_open = true;

        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                ev = watch.recv() => {
                    let Some(ev) = ev else {
                        // The watch task only ends on shutdown.
                        break;
                    };
                    let mut changed = self.on_watch_event(ev, &mut renewal, &shutdown).await;
                    // Coalesce a burst of events into one reconcile.
                    while let Ok(ev) = watch.try_recv() {
                        changed |= self.on_watch_event(ev, &mut renewal, &shutdown).await;
                    }
                    if changed {
                        self.reconcile("lease change").await;
                    }
                }
                end = &mut renewal => {
                    match end {
                        Ok(RenewalEnd::LeaseLost { lease_id }) => {
                            warn!("etcd lease {lease_id:x} of {} is gone; re-acquiring", self.own.key);
                            self.reacquire(&mut renewal, &shutdown).await;
                        }
                        Ok(RenewalEnd::Shutdown) => {}
                        Err(e) => {
                            error!("lease renewal task failed: {e}; restarting it");
                            renewal = tokio::spawn(self.mgr.renewal(self.own, shutdown.clone()));
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
                    if self.device_lost {
                        self.recreate_devices().await;
                        dirty = true;
                    }
                    if dirty {
                        if self.reconciler.needs_refresh() {
                            if let Err(e) = self.reconciler.refresh().await {
                                warn!("re-reading weft's kernel state failed: {e}");
                            }
                        }
                        self.reconcile("drift repair").await;
                    }
                }
                _ = audit.tick() => {
                    match self.reconciler.refresh().await {
                        Ok(()) => self.reconcile("audit").await,
                        Err(e) => warn!("audit: re-reading weft's kernel state failed: {e}"),
                    }
                }
                _ = retry.tick(), if self.pending_retry => {
                    if self.device_lost {
                        self.recreate_devices().await;
                    }
                    self.refresh_interface().await;
                    self.reconcile("retry").await;
                }
                _ = beat.tick() => {}
            }
            self.health.beat();
        }
        renewal.abort();
        info!("Exiting cleanly...");
        Ok(())
    }

    /// Feeds one netlink notification to the reconciler; true when something weft owns changed.
    fn on_kernel_event(&mut self, ev: &KernelEvent) -> bool {
        if let KernelEvent::LinkDeleted { index, name } = ev {
            if self.backend.devices().contains(index) {
                warn!("{name} was deleted by someone else; re-creating it with every peer entry");
                self.reconciler.disown_device(*index);
                self.device_lost = true;
            }
        }
        self.reconciler.observe(ev)
    }

    /// Re-creates the backend's devices (same MAC, same address) after an out-of-band delete;
    /// the next reconcile re-adds every peer's entries on the new device.
    async fn recreate_devices(&mut self) {
        let attrs = match self.backend.prepare(&self.nl, &self.ext).await {
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
            .backend
            .configure(&self.nl, &self.ext, self.own.key.v4)
            .await
        {
            error!("configuring the re-created device failed: {e}; retrying in {RETRY_INTERVAL:?}");
            self.pending_retry = true;
            return;
        }
        if attrs != self.attrs {
            // Not expected: the device keeps its MAC. Peers would need the new lease value.
            warn!("the re-created device changed our lease attributes; re-publishing");
            self.republish(attrs).await;
        }
        for index in self.backend.devices() {
            self.reconciler.own_device(index);
        }
        self.device_lost = false;
    }

    /// Applies one watch event; true when the peers changed.
    async fn on_watch_event(
        &mut self,
        ev: WatchEvent,
        renewal: &mut JoinHandle<RenewalEnd>,
        shutdown: &CancellationToken,
    ) -> bool {
        match &ev {
            WatchEvent::Delete(key) if *key == self.own.key => {
                warn!(
                    "our lease {key} was deleted from etcd; re-acquiring (the data plane keeps running)"
                );
                self.reacquire(renewal, shutdown).await;
                false
            }
            WatchEvent::Resync(snapshot) => {
                info!(
                    "lease watch resynchronised at revision {}",
                    snapshot.revision
                );
                let changed = !self.table.reset(snapshot).is_empty();
                if !snapshot.leases.iter().any(|l| l.key == self.own.key) {
                    warn!("our lease {} is gone from etcd; re-acquiring", self.own.key);
                    self.reacquire(renewal, shutdown).await;
                }
                changed
            }
            WatchEvent::Disconnected => {
                warn!("lease watch disconnected; the data plane stays as it is while reconnecting");
                false
            }
            WatchEvent::Reconnected => {
                info!("lease watch reconnected");
                false
            }
            _ => self.table.apply(&ev).is_some(),
        }
    }

    /// Our key vanished (deleted by an operator, or expired): take the same subnet again when it
    /// is still free. Nothing in the kernel is torn down meanwhile.
    async fn reacquire(
        &mut self,
        renewal: &mut JoinHandle<RenewalEnd>,
        shutdown: &CancellationToken,
    ) {
        renewal.abort();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let got = loop {
            let res = tokio::select! {
                r = self.mgr.reacquire(self.own.key.v4) => r,
                () = shutdown.cancelled() => return,
            };
            match res {
                Ok(got) => break got,
                Err(e) => {
                    let wait = backoff.next_delay();
                    warn!("re-acquiring our lease failed (retrying in {wait:.1?}): {e:#}");
                    if !sleep_or_shutdown(shutdown, wait).await {
                        return;
                    }
                }
            }
        };
        self.own = got.lease;
        *renewal = tokio::spawn(self.mgr.renewal(self.own, shutdown.clone()));
        if got.subnet_changed {
            self.table.set_own(Some(self.own.key));
            match self
                .backend
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
        }
        self.table.reset(&got.snapshot);
    }

    /// Publishes new lease attributes on our subnet (compare-and-swap on our own key).
    async fn republish(&mut self, attrs: LeaseAttrs) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            match self
                .mgr
                .acquire(&self.conf, &attrs, Some(self.own.key.v4))
                .await
            {
                Ok((own, _)) => {
                    if own.key != self.own.key {
                        warn!(
                            "re-publishing moved us from {} to {}",
                            self.own.key, own.key
                        );
                    }
                    self.own = own;
                    self.attrs = attrs;
                    info!("published lease {}: {}", self.own.key, self.attrs.to_json());
                    return;
                }
                Err(e) => {
                    let wait = backoff.next_delay();
                    warn!("re-publishing our lease failed (retrying in {wait:.1?}): {e:#}");
                    tokio::time::sleep(wait).await;
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
