//! Raw etcd v3 operations on flannel's data layout (docs/flannel-compat.md §3): `<prefix>/config`
//! and `<prefix>/subnets/<key>` holding `LeaseAttrs` JSON.
//!
//! Every operation here is one RPC (a create is Grant + Txn). Listing is one Range: whether a key
//! is a reservation is read from the key's `lease` field (0 = no etcd lease), never with a
//! per-key LeaseTimeToLive. Writes that must not overwrite another node's key are
//! compare-and-swap transactions; a lost race is [`RegistryError::Conflict`].
//!
//! Connecting (TLS, credentials) and explaining credential errors live in `registry/connect.rs`.
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
    WatchStream,
};
use net_conf::{LeaseAttrs, SubnetKey};

pub use crate::lease::{LeaseEntry, Malformed, Snapshot};
use thiserror::Error;

mod connect;
use connect::timed;
pub use connect::{CredContext, DEFAULT_PREFIX, EtcdOptions, explain_client_error};

/// Largest gRPC message accepted: a list of 20,000 leases is about 4 MB, tonic's default limit.
const MAX_MESSAGE: usize = 256 << 20;

/// Upper bound for one unary RPC; a hung connection surfaces as an error instead of a stall.
const RPC_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Error)]
pub enum RegistryError {
    /// `<prefix>/config` does not exist (v3 API).
    #[error(
        "flannel config not found in etcd store (key {key}). Did you create your config using etcdv3 API?"
    )]
    ConfigNotFound { key: String },
    /// A compare-and-swap lost: the key was created, changed or deleted by someone else.
    #[error("subnet {key}: {what} (another writer won the race)")]
    Conflict { key: String, what: &'static str },
    /// The etcd lease does not exist (expired or revoked).
    #[error("etcd lease {id:x} not found (expired or revoked)")]
    LeaseNotFound { id: i64 },
    /// A value that is not UTF-8 where text is required.
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    /// The etcd client failed (unreachable, auth, TLS, ...). `cause` is the one-line
    /// explanation of a credential problem ([`explain_client_error`]), printed instead of the
    /// client's long text when known.
    /// (The client error is part of the message, not a `source`, so `{:#}` prints it once.)
    #[error("etcd {op}: {}", cause.as_deref().map_or_else(|| error.to_string(), str::to_owned))]
    Etcd {
        op: String,
        error: etcd_client::Error,
        cause: Option<String>,
    },
    #[error("etcd {op}: no answer within {RPC_TIMEOUT:?}")]
    Timeout { op: String },
    /// Reading a TLS file.
    #[error("reading {path}: {error}")]
    File {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl RegistryError {
    /// True for the errors a retry may cure (etcd unreachable, timeouts, leader changes).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RegistryError::Etcd { .. } | RegistryError::Timeout { .. }
        )
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// A connected etcd client bound to one prefix.
#[derive(Clone)]
pub struct Registry {
    client: Client,
    prefix: String,
    creds: std::sync::Arc<CredContext>,
    /// How the client was made, to make another ([`Registry::with_fresh_client`]).
    dial: std::sync::Arc<connect::Dial>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}
impl Registry {
    /// The underlying client (tests and tools).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>/config`.
    pub fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    /// `<prefix>/subnets` (no trailing slash, as flannel lists it).
    pub fn subnets_prefix(&self) -> String {
        format!("{}/subnets", self.prefix)
    }

    /// `<prefix>/subnets/<key>`.
    pub fn lease_key(&self, key: &SubnetKey) -> String {
        key.etcd_key(&self.prefix)
    }

    /// The network config text from `<prefix>/config`.
    pub async fn get_config(&self) -> Result<String> {
        let key = self.config_key();
        let mut kv = self.client.kv_client();
        let resp = timed(&self.creds, "get config", kv.get(key.clone(), None)).await?;
        let Some(first) = resp.kvs().first() else {
            return Err(RegistryError::ConfigNotFound { key });
        };
        String::from_utf8(first.value().to_vec()).map_err(|e| RegistryError::Invalid {
            what: format!("etcd key {key}"),
            reason: format!("value is not UTF-8: {e}"),
        })
    }

    /// Parses one key/value under `<prefix>/subnets` ([`crate::lease::parse_entry`]).
    pub fn parse_entry(
        &self,
        key: &[u8],
        value: &[u8],
        lease_id: i64,
        mod_revision: i64,
    ) -> std::result::Result<LeaseEntry, Malformed> {
        crate::lease::parse_entry(&self.prefix, key, value, lease_id, mod_revision)
    }

    pub fn parse_key(&self, full: &str) -> std::result::Result<SubnetKey, String> {
        SubnetKey::from_etcd_key(full, &self.prefix).map_err(|e| e.to_string())
    }

    /// All leases: one Range over `<prefix>/subnets`.
    pub async fn list_leases(&self) -> Result<Snapshot> {
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let mut resp = timed(
            &self.creds,
            "list subnets",
            kv.get(self.subnets_prefix(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut snap = Snapshot {
            revision,
            ..Snapshot::default()
        };
        for kv in resp.take_kvs() {
            self.add_to_snapshot(&mut snap, &kv);
        }
        Ok(snap)
    }

    /// The config and every lease in ONE Range over `<prefix>/` (what an agent needs at start,
    /// target P7): the config text (`None` when the key is missing) and the lease snapshot at
    /// that revision. Other keys under the prefix are ignored.
    pub async fn list_network(&self) -> Result<(Option<String>, Snapshot)> {
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let mut resp = timed(
            &self.creds,
            "list network",
            kv.get(
                format!("{}/", self.prefix),
                Some(GetOptions::new().with_prefix()),
            ),
        )
        .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut snap = Snapshot {
            revision,
            ..Snapshot::default()
        };
        let config_key = self.config_key();
        let subnets = self.subnets_prefix();
        let mut config = None;
        for kv in resp.take_kvs() {
            if kv.key() == config_key.as_bytes() {
                config = Some(String::from_utf8(kv.value().to_vec()).map_err(|e| {
                    RegistryError::Invalid {
                        what: config_key.clone(),
                        reason: format!("not UTF-8: {e}"),
                    }
                })?);
            } else if kv.key().starts_with(subnets.as_bytes()) {
                self.add_to_snapshot(&mut snap, &kv);
            }
        }
        Ok((config, snap))
    }

    fn add_to_snapshot(&self, snap: &mut Snapshot, kv: &etcd_client::KeyValue) {
        match self.parse_entry(kv.key(), kv.value(), kv.lease(), kv.mod_revision()) {
            Ok(e) => snap.leases.push(e),
            Err(m) => {
                tracing::warn!("skipping malformed lease {}: {}", m.key, m.reason);
                snap.malformed.push(m);
            }
        }
    }

    /// Grants an etcd lease of `ttl_secs`; returns (id, granted TTL).
    pub async fn grant(&self, ttl_secs: i64) -> Result<(i64, i64)> {
        let mut lease = self.client.lease_client();
        let resp = timed(&self.creds, "lease grant", lease.grant(ttl_secs, None)).await?;
        Ok((resp.id(), resp.ttl()))
    }

    /// Revokes an etcd lease (deleting its keys). `Ok(false)` if it did not exist.
    pub async fn revoke(&self, id: i64) -> Result<bool> {
        let mut lease = self.client.lease_client();
        match timed(&self.creds, "lease revoke", lease.revoke(id)).await {
            Ok(_) => Ok(true),
            Err(e) if is_lease_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates `<prefix>/subnets/<key>` only if it does not exist, on a fresh etcd lease of
    /// `ttl_secs`. Returns (lease id, granted TTL, mod revision). A lost race revokes the
    /// granted lease and returns `Conflict`.
    pub async fn create_lease(
        &self,
        key: &SubnetKey,
        attrs: &LeaseAttrs,
        ttl_secs: i64,
    ) -> Result<(i64, i64, i64)> {
        let (id, ttl) = self.grant(ttl_secs).await?;
        let path = self.lease_key(key);
        let txn = Txn::new()
            .when([Compare::create_revision(path.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                path,
                attrs.to_json(),
                Some(PutOptions::new().with_lease(id)),
            )]);
        let mut kv = self.client.kv_client();
        let res = timed(&self.creds, "create subnet", kv.txn(txn)).await;
        match res {
            Ok(resp) if resp.succeeded() => {
                let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
                Ok((id, ttl, rev))
            }
            other => {
                if let Err(e) = self.revoke(id).await {
                    tracing::warn!("revoking unused etcd lease {id:x}: {e}");
                }
                match other {
                    Ok(_) => Err(RegistryError::Conflict {
                        key: key.to_string(),
                        what: "subnet already exists",
                    }),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Every lease key that parses, with the revision that created it (one keys-only Range):
    /// which of two overlapping leases came first.
    pub async fn lease_create_revisions(&self) -> Result<Vec<(SubnetKey, i64)>> {
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let resp = timed(
            &self.creds,
            "list subnet keys",
            kv.get(
                self.subnets_prefix(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            ),
        )
        .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = std::str::from_utf8(kv.key()).ok()?;
                let key = SubnetKey::from_etcd_key(key, &self.prefix).ok()?;
                Some((key, kv.create_revision()))
            })
            .collect())
    }

    /// The mod revision of one lease key, or `None` when it does not exist (one Get; for a
    /// compare-and-swap on a key whose value could not be parsed).
    pub async fn lease_mod_revision(&self, key: &SubnetKey) -> Result<Option<i64>> {
        let mut kv = self.client.kv_client();
        let resp = timed(&self.creds, "get subnet", kv.get(self.lease_key(key), None)).await?;
        Ok(resp.kvs().first().map(|kv| kv.mod_revision()))
    }

    /// Rewrites a key only if its mod revision is still `seen`, attached to `lease_id`
    /// (0 = no etcd lease: a reservation stays a reservation). Returns the new mod revision.
    pub async fn update_lease(
        &self,
        key: &SubnetKey,
        attrs: &LeaseAttrs,
        seen_mod_revision: i64,
        lease_id: i64,
    ) -> Result<i64> {
        let path = self.lease_key(key);
        let put = if lease_id == 0 {
            PutOptions::new()
        } else {
            PutOptions::new().with_lease(lease_id)
        };
        let txn = Txn::new()
            .when([Compare::mod_revision(
                path.clone(),
                CompareOp::Equal,
                seen_mod_revision,
            )])
            .and_then([TxnOp::put(path, attrs.to_json(), Some(put))]);
        let mut kv = self.client.kv_client();
        let resp = timed(&self.creds, "update subnet", kv.txn(txn)).await?;
        if !resp.succeeded() {
            return Err(RegistryError::Conflict {
                key: key.to_string(),
                what: "subnet changed since it was read",
            });
        }
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Deletes a key; with `seen_mod_revision` only if it is unchanged. `Ok(false)` if the key
    /// did not exist (unconditional delete).
    pub async fn delete_lease(
        &self,
        key: &SubnetKey,
        seen_mod_revision: Option<i64>,
    ) -> Result<bool> {
        let path = self.lease_key(key);
        let mut kv = self.client.kv_client();
        match seen_mod_revision {
            Some(seen) => {
                let txn = Txn::new()
                    .when([Compare::mod_revision(path.clone(), CompareOp::Equal, seen)])
                    .and_then([TxnOp::delete(path, None::<DeleteOptions>)]);
                let resp = timed(&self.creds, "delete subnet", kv.txn(txn)).await?;
                if !resp.succeeded() {
                    return Err(RegistryError::Conflict {
                        key: key.to_string(),
                        what: "subnet changed since it was read",
                    });
                }
                Ok(true)
            }
            None => {
                let resp = timed(&self.creds, "delete subnet", kv.delete(path, None)).await?;
                Ok(resp.deleted() > 0)
            }
        }
    }

    /// One KeepAlive request for `id` (one stream, one request, one answer): the lease's TTL
    /// is back at its granted TTL. `LeaseNotFound` when the lease expired or was revoked.
    pub async fn keep_alive_once(&self, id: i64) -> Result<()> {
        let mut lease = self.client.lease_client();
        match timed(&self.creds, "lease keep-alive", lease.keep_alive(id)).await {
            Ok(_) => Ok(()),
            Err(e) if is_lease_not_found(&e) => Err(RegistryError::LeaseNotFound { id }),
            Err(e) => Err(e),
        }
    }

    /// (remaining TTL, granted TTL) of an etcd lease in seconds; None when it does not exist.
    pub async fn lease_time_to_live(&self, id: i64) -> Result<Option<(i64, i64)>> {
        let mut lease = self.client.lease_client();
        let resp = timed(
            &self.creds,
            "lease time-to-live",
            lease.time_to_live(id, None),
        )
        .await?;
        Ok((resp.ttl() >= 0).then(|| (resp.ttl(), resp.granted_ttl())))
    }

    /// Remaining TTL of an etcd lease in seconds (-1 when it does not exist).
    pub async fn lease_ttl(&self, id: i64) -> Result<i64> {
        Ok(self
            .lease_time_to_live(id)
            .await?
            .map_or(-1, |(ttl, _)| ttl))
    }

    /// The ids of all etcd leases (tests and diagnostics).
    pub async fn lease_ids(&self) -> Result<Vec<i64>> {
        let mut lease = self.client.lease_client();
        let resp = timed(&self.creds, "lease list", lease.leases()).await?;
        Ok(resp.leases().iter().map(|l| l.id()).collect())
    }

    /// Watches everything under `<prefix>/` — the leases and the config key — from
    /// `start_revision`, as one stream: a config change and the lease updates it causes arrive
    /// in etcd's order (a node switching backend sees the new config before its peers'
    /// re-published leases).
    pub async fn watch_network(&self, start_revision: i64) -> Result<WatchStream> {
        let mut w = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(start_revision);
        timed(
            &self.creds,
            "watch network",
            w.watch(format!("{}/", self.prefix), Some(opts)),
        )
        .await
    }
}

/// etcd answers a revoke or keep-alive of an unknown lease with NotFound
/// ("etcdserver: requested lease not found").
pub fn is_lease_not_found(e: &RegistryError) -> bool {
    match e {
        RegistryError::LeaseNotFound { .. } => true,
        RegistryError::Etcd {
            error: etcd_client::Error::GRpcStatus(s),
            ..
        } => s.message().contains("lease not found"),
        // etcd-client's keep_alive turns a TTL of 0 in the first answer into this.
        RegistryError::Etcd {
            error: etcd_client::Error::LeaseKeepAliveError(m),
            ..
        } => m.contains("lease not found"),
        _ => false,
    }
}
