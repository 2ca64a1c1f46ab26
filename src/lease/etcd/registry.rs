//! Raw etcd v3 operations on flannel's data layout (docs/flannel-compat.md §3): `<prefix>/config`
//! and `<prefix>/subnets/<key>` holding `LeaseAttrs` JSON.
//!
//! Every operation here is one RPC (a create is Grant + Txn). Listing is one Range: whether a key
//! is a reservation is read from the key's `lease` field (0 = no etcd lease), never with a
//! per-key LeaseTimeToLive. Writes that must not overwrite another node's key are
//! compare-and-swap transactions; a lost race is [`RegistryError::Conflict`].
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use net_conf::{LeaseAttrs, SubnetKey};

pub use crate::lease::{LeaseEntry, Malformed, Snapshot};
use thiserror::Error;

/// Largest gRPC message accepted: a list of 20,000 leases is about 4 MB, tonic's default limit.
const MAX_MESSAGE: usize = 256 << 20;

/// Upper bound for one unary RPC; a hung connection surfaces as an error instead of a stall.
const RPC_TIMEOUT: Duration = Duration::from_secs(15);

/// How to reach etcd (flanneld's `--etcd-*` flags).
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    /// `--etcd-prefix`, default `/coreos.com/network` (no trailing slash).
    pub prefix: String,
    pub cafile: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl EtcdOptions {
    /// Plain options for `endpoints` with flannel's default prefix.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdOptions {
            endpoints,
            prefix: DEFAULT_PREFIX.to_string(),
            cafile: None,
            certfile: None,
            keyfile: None,
            username: None,
            password: None,
        }
    }
}

/// flanneld's default `--etcd-prefix`.
pub const DEFAULT_PREFIX: &str = "/coreos.com/network";

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
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What the credential settings were, to explain a failure ([`explain_client_error`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredContext {
    /// TLS is on (certificate and key given).
    pub tls: bool,
    pub cafile: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    /// An `https://` endpoint was given without certificate and key.
    pub https_without_identity: bool,
    pub username: Option<String>,
}

impl CredContext {
    pub fn of(opts: &EtcdOptions) -> CredContext {
        let tls = opts.certfile.is_some() && opts.keyfile.is_some();
        CredContext {
            tls,
            cafile: opts.cafile.clone(),
            certfile: opts.certfile.clone(),
            https_without_identity: !tls
                && opts.endpoints.iter().any(|e| e.starts_with("https://")),
            username: opts.username.clone(),
        }
    }
}

/// One line naming the cause of an etcd client error when it is a credential problem (TLS
/// trust, client certificate, user/password), from the client's error text; `None` otherwise.
pub fn explain_client_error(text: &str, ctx: &CredContext) -> Option<String> {
    let path = |p: &Option<PathBuf>| {
        p.as_ref()
            .map_or_else(|| "none given".to_owned(), |p| p.display().to_string())
    };
    if text.contains("authentication failed") {
        let user = ctx.username.as_deref().unwrap_or("");
        return Some(format!(
            "etcd authentication failed for user {user}: invalid user name or password \
             (--etcd-username/--etcd-password)"
        ));
    }
    if text.contains("user name is empty") {
        return Some(
            "etcd requires authentication: set --etcd-username and --etcd-password".to_owned(),
        );
    }
    if ctx.https_without_identity
        && (text.contains("invalid peer certificate") || text.contains("connection closed"))
    {
        return Some(
            "TLS: etcd requires a client certificate: set --etcd-certfile and --etcd-keyfile \
             (the endpoint is https:// but without both weft, like flannel, also ignores \
             --etcd-cafile)"
                .to_owned(),
        );
    }
    if let Some(at) = text.find("invalid peer certificate: ") {
        let rest = &text[at + "invalid peer certificate: ".len()..];
        let reason: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        return Some(
            if matches!(reason.as_str(), "UnknownIssuer" | "BadSignature") {
                format!(
                    "TLS: etcd's server certificate is not signed by the CA in --etcd-cafile ({}) \
                 (invalid peer certificate: {reason})",
                    path(&ctx.cafile)
                )
            } else {
                format!(
                    "TLS: etcd's server certificate is rejected (invalid peer certificate: {reason})"
                )
            },
        );
    }
    if ctx.tls && text.contains("tls handshake eof") {
        return Some(
            "TLS: etcd ended the TLS handshake at once: is the endpoint serving plain http?"
                .to_owned(),
        );
    }
    if ctx.tls && text.contains("connection closed") {
        return Some(format!(
            "TLS: etcd closed the connection; if this repeats, etcd does not accept the client \
             certificate in --etcd-certfile ({}) (not signed by its --trusted-ca-file)",
            path(&ctx.certfile)
        ));
    }
    None
}

fn client_error(op: &str, error: etcd_client::Error, ctx: &CredContext) -> RegistryError {
    let cause = explain_client_error(&error.to_string(), ctx);
    RegistryError::Etcd {
        op: op.to_string(),
        error,
        cause,
    }
}

async fn timed<T>(
    ctx: &CredContext,
    op: &str,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(RPC_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(error)) => Err(client_error(op, error, ctx)),
        Err(_) => Err(RegistryError::Timeout { op: op.to_string() }),
    }
}

fn read_file(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| RegistryError::File {
        path: path.clone(),
        error,
    })
}

impl Registry {
    /// Builds the client. TLS is used only when both a certificate and a key are given (as
    /// flanneld does), with the CA from `cafile`; otherwise a warning says plaintext is insecure.
    /// With a username the client authenticates at once, so bad credentials or an unreachable
    /// etcd show here; without, the first RPC shows them.
    pub async fn connect(opts: &EtcdOptions) -> Result<Registry> {
        let mut copts = ConnectOptions::new()
            .with_require_leader(true)
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(30), Duration::from_secs(10));
        let mut endpoints = opts.endpoints.clone();
        match (&opts.certfile, &opts.keyfile) {
            (Some(cert), Some(key)) => {
                let mut tls = TlsOptions::new()
                    .identity(Identity::from_pem(read_file(cert)?, read_file(key)?));
                match &opts.cafile {
                    Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(read_file(ca)?)),
                    None => tracing::warn!(
                        "no etcd CA file given: the etcd server certificate cannot be verified \
                         (no system roots are loaded); pass --etcd-cafile"
                    ),
                }
                copts = copts.with_tls(tls);
                for e in &mut endpoints {
                    if let Some(rest) = e.strip_prefix("http://") {
                        tracing::warn!(
                            "etcd endpoint {e} uses http:// with TLS files; using https"
                        );
                        *e = format!("https://{rest}");
                    } else if !e.starts_with("https://") {
                        *e = format!("https://{e}");
                    }
                }
            }
            _ => {
                if opts.certfile.is_some() || opts.keyfile.is_some() || opts.cafile.is_some() {
                    tracing::warn!(
                        "etcd TLS needs both a certificate file and a key file; \
                         ignoring the TLS files given"
                    );
                }
                tracing::warn!(
                    "no certificate provided: connecting to etcd with http. This is insecure"
                );
            }
        }
        if let Some(user) = &opts.username {
            copts = copts.with_user(user.clone(), opts.password.clone().unwrap_or_default());
            copts = copts.with_auto_token_refresh(true);
        }
        let client =
            match tokio::time::timeout(RPC_TIMEOUT, Client::connect(&endpoints, Some(copts))).await
            {
                Ok(Ok(c)) => c,
                Ok(Err(error)) => {
                    let op = format!("connect to {}", endpoints.join(","));
                    return Err(client_error(&op, error, &CredContext::of(opts)));
                }
                Err(_) => {
                    return Err(RegistryError::Timeout {
                        op: format!("connect to {}", endpoints.join(",")),
                    });
                }
            };
        Ok(Registry {
            client,
            prefix: opts.prefix.trim_end_matches('/').to_string(),
            creds: std::sync::Arc::new(CredContext::of(opts)),
        })
    }

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

    /// Parses one key/value under `<prefix>/subnets`.
    pub fn parse_entry(
        &self,
        key: &[u8],
        value: &[u8],
        lease_id: i64,
        mod_revision: i64,
    ) -> std::result::Result<LeaseEntry, Malformed> {
        // A bad key or value can be huge: errors and logs show an excerpt.
        let key_full = String::from_utf8_lossy(key);
        let key_text = net_conf::excerpt(&key_full, 400);
        let subnet = self.parse_key(&key_full).map_err(|reason| Malformed {
            key: key_text.clone(),
            reason,
            subnet: None,
        })?;
        let attrs = LeaseAttrs::parse(value).map_err(|e| Malformed {
            key: key_text.clone(),
            reason: e.to_string(),
            subnet: Some(subnet),
        })?;
        Ok(LeaseEntry {
            key: subnet,
            attrs,
            lease_id,
            mod_revision,
        })
    }

    /// The subnet key of a full etcd key `<prefix>/subnets/<key>`.
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

#[cfg(test)]
mod tests {
    use super::*;

    // Error texts observed from etcd-client 0.21 against etcd 3.4 (tests/e2e_etcd_tls.rs cases).
    const BAD_SIGNATURE: &str = "grpc request error: code: 'The service is currently unavailable', message: \"invalid peer certificate: BadSignature\", source: tonic::transport::Error(Transport, ConnectError(Custom { kind: InvalidData, error: InvalidCertificate(BadSignature) }))";
    const UNKNOWN_ISSUER: &str = "grpc request error: code: 'The service is currently unavailable', message: \"invalid peer certificate: UnknownIssuer\", source: tonic::transport::Error(Transport, ConnectError(Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }))";
    const CLOSED: &str = "grpc request error: code: 'The operation was cancelled', message: \"operation was canceled\", source: tonic::transport::Error(Transport, hyper::Error(Canceled, \"connection closed\"))";
    const BAD_PASSWORD: &str = "grpc request error: code: 'Client specified an invalid argument', message: \"etcdserver: authentication failed, invalid user ID or password\"";
    const NO_USER: &str = "grpc request error: code: 'Client specified an invalid argument', message: \"etcdserver: user name is empty\"";
    const HANDSHAKE_EOF: &str = "grpc request error: code: 'The service is currently unavailable', message: \"tls handshake eof\", source: tonic::transport::Error(Transport, ConnectError(Custom { kind: UnexpectedEof, error: \"tls handshake eof\" }))";
    const REFUSED: &str = "grpc request error: code: 'The service is currently unavailable', message: \"tcp connect error\", source: tonic::transport::Error(Transport, ConnectError(ConnectError(\"tcp connect error\", 127.0.0.1:1, Os { code: 111, kind: ConnectionRefused, message: \"Connection refused\" })))";

    fn mtls() -> CredContext {
        CredContext::of(&EtcdOptions {
            cafile: Some("/etc/weft/ca.crt".into()),
            certfile: Some("/etc/weft/client.crt".into()),
            keyfile: Some("/etc/weft/client.key".into()),
            ..EtcdOptions::new(vec!["https://198.18.0.254:2379".into()])
        })
    }

    #[test]
    fn wrong_ca_names_the_ca_file() {
        for (text, reason) in [
            (BAD_SIGNATURE, "BadSignature"),
            (UNKNOWN_ISSUER, "UnknownIssuer"),
        ] {
            assert_eq!(
                explain_client_error(text, &mtls()).as_deref(),
                Some(
                    format!(
                        "TLS: etcd's server certificate is not signed by the CA in \
                         --etcd-cafile (/etc/weft/ca.crt) (invalid peer certificate: {reason})"
                    )
                    .as_str()
                )
            );
        }
    }

    #[test]
    fn https_without_client_certificate_says_so() {
        let mut opts = EtcdOptions::new(vec!["https://198.18.0.254:2379".into()]);
        opts.cafile = Some("/etc/weft/ca.crt".into());
        let ctx = CredContext::of(&opts);
        assert!(ctx.https_without_identity && !ctx.tls);
        let line = explain_client_error(UNKNOWN_ISSUER, &ctx).expect("explained");
        assert!(
            line.starts_with(
                "TLS: etcd requires a client certificate: set --etcd-certfile and --etcd-keyfile"
            ) && line.contains("https://"),
            "{line}"
        );
        // The same text over http with TLS files is a CA problem, not this one.
        assert!(
            !CredContext::of(&EtcdOptions::new(vec!["http://a:1".into()])).https_without_identity
        );
    }

    #[test]
    fn rejected_client_certificate_and_plain_http_port() {
        assert_eq!(
            explain_client_error(CLOSED, &mtls()).as_deref(),
            Some(
                "TLS: etcd closed the connection; if this repeats, etcd does not accept the \
                 client certificate in --etcd-certfile (/etc/weft/client.crt) (not signed by \
                 its --trusted-ca-file)"
            )
        );
        assert_eq!(
            explain_client_error(HANDSHAKE_EOF, &mtls()).as_deref(),
            Some("TLS: etcd ended the TLS handshake at once: is the endpoint serving plain http?")
        );
        // Without TLS a closed connection is not a certificate matter.
        assert_eq!(explain_client_error(CLOSED, &CredContext::default()), None);
    }

    #[test]
    fn bad_password_and_missing_user() {
        let mut opts = EtcdOptions::new(vec!["http://198.18.0.254:2379".into()]);
        opts.username = Some("root".into());
        opts.password = Some("wrong".into());
        assert_eq!(
            explain_client_error(BAD_PASSWORD, &CredContext::of(&opts)).as_deref(),
            Some(
                "etcd authentication failed for user root: invalid user name or password \
                 (--etcd-username/--etcd-password)"
            )
        );
        assert_eq!(
            explain_client_error(NO_USER, &CredContext::default()).as_deref(),
            Some("etcd requires authentication: set --etcd-username and --etcd-password")
        );
    }

    #[test]
    fn other_errors_are_not_explained() {
        assert_eq!(explain_client_error(REFUSED, &mtls()), None);
        assert_eq!(explain_client_error(REFUSED, &CredContext::default()), None);
    }
}
