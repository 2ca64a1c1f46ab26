//! The control loop: one task that owns the data plane and reacts to lease updates, netlink
//! notifications, timers, the config file and firewall changes. It makes no remote call: lease
//! work runs in [`Leases`](super::leases::Leases)' tasks, file writes with fsyncs on blocking
//! threads. It beats `/healthz` after every event and at least every [`HEARTBEAT`], so a stalled
//! loop shows as a failing `/healthz` whatever it is stuck on.
use anyhow::Result;
use backends::nl::KernelEvent;
use futures::{FutureExt, StreamExt};
use tracing::{debug, error, info, warn};

use super::config_watch::{ConfigChange, FileStamp, classify};
use super::leases::{Effect, Update};
use super::metrics::ReconcileReason;
use super::start::{start_firewall, write_subnet_env};
use super::{
    AUDIT_INTERVAL, Agent, CACHE_WRITE, CONFIG_FILE_POLL, HEARTBEAT, RETRY_INTERVAL, firewall,
};
use crate::lease::LeaseSource;

impl<S: LeaseSource> Agent<S> {
    pub(super) async fn run(
        mut self,
        mut kernel: impl futures::Stream<Item = KernelEvent> + Unpin,
    ) -> Result<()> {
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
        // The start-up write came before this subscription: a change made in between (another
        // tool, or another network's daemon starting at the same moment) was announced to
        // no one and would wait for the backstop audit. One read now; later changes are seen.
        if fw_watch.is_live()
            && let Err(e) = self.firewall.check().await
        {
            warn!("{} rules check: {e:#}", self.firewall.label());
        }
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
                () = self.shutdown.cancelled() => break,
                update = self.leases.next() => {
                    let Some(update) = update else { break };
                    self.on_lease_update(update).await;
                }
                ev = kernel.next(), if kernel_open => {
                    let Some(ev) = ev else {
                        // Not expected (the socket lives as long as the process); the audit
                        // timer still catches drift, just slower.
                        error!("netlink notification stream ended; drift is now caught by the audit only");
                        kernel_open = false;
                        continue;
                    };
                    let mut dirty = self.dp.on_kernel_event(&ev);
                    while let Some(Some(ev)) = kernel.next().now_or_never() {
                        dirty |= self.dp.on_kernel_event(&ev);
                    }
                    if dirty {
                        self.reconcile(ReconcileReason::DriftRepair).await;
                    }
                }
                _ = audit.tick() => self.audit("audit").await,
                Some(()) = recv_or_pending(hangup.as_mut()) => {
                    info!("received SIGHUP: auditing weft's kernel state now");
                    self.audit("audit (SIGHUP)").await;
                }
                _ = retry.tick(), if self.dp.pending_retry() => {
                    self.dp.before_retry().await;
                    self.reconcile(ReconcileReason::Retry).await;
                }
                _ = config_poll.tick(), if watch_file => self.poll_config_file().await,
                _ = sleep_until_or_never(self.dp.legacy_due()) => self.reconcile(ReconcileReason::LegacyUnused).await,
                _ = cache_write.tick(), if self.cache.is_dirty() => self.save_cache(),
                what = fw_watch.changed(), if self.firewall.is_active() => {
                    debug!("nf_tables changed ({what}); checking our rules");
                    if let Err(e) = self.firewall.check().await {
                        warn!("{} rules check: {e:#}", self.firewall.label());
                    }
                }
                _ = fw_audit.tick(), if self.firewall.is_active() => {
                    if let Err(e) = self.firewall.check().await {
                        warn!("{} rules audit: {e:#}", self.firewall.label());
                    }
                }
                _ = beat.tick() => {}
            }
            self.health.beat();
        }
        self.leases.stop();
        self.cache.finish();
        info!("Exiting cleanly...");
        Ok(())
    }

    /// Applies a batch of lease results: a moved lease first (device address, firewall,
    /// subnet.env), then a new config, then the peers.
    async fn on_lease_update(&mut self, update: Update) {
        let Update {
            mut effect,
            moved,
            config,
        } = update;
        if moved {
            self.take_new_subnet().await;
            effect = Effect::Full;
        }
        if let Some(text) = config {
            if self.on_source_config(text).await {
                effect = Effect::Full;
            }
        }
        match effect {
            Effect::Nothing => {}
            Effect::Peers(changes) => {
                self.cache.mark_dirty();
                let metrics = self.health.metrics().clone();
                self.dp
                    .reconcile_changes(self.leases.table(), &changes, &metrics)
                    .await;
            }
            Effect::Full => {
                self.cache.mark_dirty();
                self.reconcile(ReconcileReason::LeaseChange).await;
            }
        }
    }

    /// The source's config changed. True when peers need a full plan.
    async fn on_source_config(&mut self, text: Option<String>) -> bool {
        if self.opts.net_config_path.is_some() {
            // The file is the source of truth; the source's copy is not ours to follow, but
            // flanneld nodes follow it: say so while the two disagree.
            self.store_config = text;
            self.warn_if_store_config_disagrees();
            return false;
        }
        match text {
            Some(text) => self.on_config(&text).await,
            None => {
                warn!(
                    "the config in {} was deleted; keeping the running config and data plane",
                    self.leases.source().config_location()
                );
                false
            }
        }
    }

    /// Warns (loudly, at every change of either) while the config file and the lease store's
    /// own config disagree on what every node must share.
    pub(super) fn warn_if_store_config_disagrees(&self) {
        let Some(path) = self.opts.net_config_path.as_deref() else {
            return;
        };
        let location = self.leases.source().config_location();
        if let Some(w) = super::config_watch::disagreement_warning(
            &self.conf,
            path,
            &location,
            self.store_config.as_deref(),
        ) {
            warn!("{w}");
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
                self.warn_if_store_config_disagrees();
            }
            Err(e) => warn!(
                "reading {}: {e}; keeping the running config",
                path.display()
            ),
        }
    }

    /// A new config text: applies what can change live (the backend, the firewall mode),
    /// refuses the rest with a clear log line and leaves the running data plane as it is. True
    /// when peers need a new reconcile.
    async fn on_config(&mut self, text: &str) -> bool {
        let (new, firewall, backend) = match classify(&self.conf, text) {
            ConfigChange::Unchanged => {
                debug!("network config unchanged");
                return false;
            }
            ConfigChange::Refused(why) => {
                warn!("refusing the new network config: {why}; the data plane stays as it is");
                return false;
            }
            ConfigChange::Apply {
                conf,
                firewall,
                backend,
            } => (*conf, firewall, backend),
        };
        self.config_text = text.to_string();
        self.cache.mark_dirty();
        if firewall {
            match start_firewall(&self.opts, &new, self.leases.own().key).await {
                Ok(fw) => self.firewall = fw,
                Err(e) => error!(
                    "switching the masquerade rules to EnableNFTables={}: {e:#}",
                    new.enable_nftables
                ),
            }
        }
        if !backend {
            info!("network config changed (backend unchanged)");
            self.conf = new;
            return false;
        }
        info!(
            "backend changes from {} to {}: switching live on subnet {}",
            self.conf.backend.type_name(),
            new.backend.type_name(),
            self.leases.own().key
        );
        let own = self.leases.own().key;
        let running = self.conf.backend.clone();
        match self
            .dp
            .switch(&new.backend, running, self.leases.attrs(), own)
            .await
        {
            Ok((attrs, mtu)) => {
                self.conf = new;
                // Published in the background; peers switch to our new value when it lands.
                self.leases.republish(self.conf.clone(), attrs);
                self.write_subnet_env(mtu)
                    .await
                    .unwrap_or_else(|e| error!("{e:#}"));
                true
            }
            Err(why) => {
                warn!("{why}; the data plane stays as it is");
                false
            }
        }
    }

    /// After the own lease moved to another subnet: the firewall rules, the device address and
    /// subnet.env follow it.
    async fn take_new_subnet(&mut self) {
        let own = self.leases.own().key;
        if let Err(e) = self.firewall.set_subnet(own) {
            error!("{} rules for {own}: {e:#}", self.firewall.label());
        } else if let Err(e) = self.firewall.apply().await {
            error!("{} rules for {own}: {e:#}", self.firewall.label());
        }
        match self.dp.move_to(own) {
            Ok(mtu) => self
                .write_subnet_env(mtu)
                .await
                .unwrap_or_else(|e| error!("{e:#}")),
            Err(e) => error!("reconfiguring for {own}: {e}"),
        }
        self.cache.mark_dirty();
    }

    /// Re-reads weft's kernel objects (a dump) and applies the difference: the backstop to
    /// netlink notifications. A no-change audit makes zero writes (target P6).
    pub(super) async fn audit(&mut self, why: &str) {
        let started = std::time::Instant::now();
        match self.dp.refresh().await {
            Ok(()) => {
                self.reconcile_as(ReconcileReason::Audit, why).await;
                debug!("{why}: dump and diff in {:?}", started.elapsed());
            }
            Err(e) => warn!("{why}: re-reading weft's kernel state failed: {e}"),
        }
    }

    /// Plans the whole table and applies the difference.
    pub(super) async fn reconcile(&mut self, why: ReconcileReason) {
        self.reconcile_as(why, why.as_str()).await;
    }

    /// [`reconcile`](Self::reconcile), the log line saying `said` (e.g. `audit (SIGHUP)`).
    pub(super) async fn reconcile_as(&mut self, why: ReconcileReason, said: &str) {
        let metrics = self.health.metrics().clone();
        self.dp
            .reconcile(self.leases.table(), why, said, &metrics)
            .await;
    }

    pub(super) async fn write_subnet_env(&self, mtu: u32) -> Result<()> {
        write_subnet_env(&self.opts, &self.conf, self.leases.own().key, mtu).await?;
        info!("Wrote subnet file to {}", self.opts.subnet_file.display());
        Ok(())
    }

    /// Starts a peer-cache write beside the loop.
    pub(super) fn save_cache(&mut self) {
        let own = self.leases.own().key;
        self.cache.write(
            &self.config_text,
            own,
            self.leases.attrs(),
            self.leases.table(),
        );
    }
}

/// Waits until `due`, or forever when there is nothing due.
async fn sleep_until_or_never(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// The next signal of `sig`, or never when there is no handler.
async fn recv_or_pending(sig: Option<&mut tokio::signal::unix::Signal>) -> Option<()> {
    match sig {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}
