//! The etcd lease source: [`LeaseSource`] over the [`SubnetManager`] and its [`Registry`]
//! (flannel's `<prefix>/config` and `<prefix>/subnets/<key>` with `LeaseAttrs` JSON values).
use std::future::Future;

use anyhow::{Context as _, Result};
use net_conf::alloc::Previous;
use net_conf::{LeaseAttrs, NetConf, SubnetKey};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::manager::SubnetManager;
use super::registry::RegistryError;
use crate::lease::{LeaseSource, OwnLease, Reacquired, RenewalEnd, Snapshot, WatchEvent};

impl LeaseSource for SubnetManager {
    fn config_location(&self) -> String {
        format!("etcd store (key {})", self.registry().config_key())
    }

    async fn config(&self) -> Result<Option<String>> {
        match self.registry().get_config().await {
            Ok(text) => Ok(Some(text)),
            Err(RegistryError::ConfigNotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn list_network(&self) -> Result<(Option<String>, Snapshot)> {
        Ok(self.registry().list_network().await?)
    }

    async fn list(&self) -> Result<Snapshot> {
        Ok(self.registry().list_leases().await?)
    }

    async fn acquire(
        &mut self,
        conf: &NetConf,
        attrs: &LeaseAttrs,
        previous: Previous,
        listed: Option<Snapshot>,
    ) -> Result<(OwnLease, Snapshot)> {
        self.acquire_from(conf, attrs, previous, listed).await
    }

    async fn reacquire(&mut self, prefer: SubnetKey) -> Result<Reacquired> {
        SubnetManager::reacquire(self, prefer).await
    }

    /// One compare-and-swap on the key's current revision, attached to our etcd lease.
    async fn reassert(&self, own: &OwnLease, attrs: &LeaseAttrs) -> Result<bool> {
        let reg = self.registry();
        let Some(rev) = reg.lease_mod_revision(&own.key).await? else {
            return Ok(false);
        };
        reg.update_lease(&own.key, attrs, rev, own.lease_id)
            .await
            .with_context(|| format!("writing our lease {} back", own.key))?;
        Ok(true)
    }

    fn renewal(
        &self,
        own: OwnLease,
        shutdown: CancellationToken,
    ) -> impl Future<Output = RenewalEnd> + Send + 'static {
        SubnetManager::renewal(self, own, shutdown)
    }

    fn watch(&self, from_revision: i64, shutdown: CancellationToken) -> mpsc::Receiver<WatchEvent> {
        SubnetManager::watch(self, from_revision, shutdown)
    }
}
