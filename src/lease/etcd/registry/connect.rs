//! Reaching etcd: the connection options (flanneld's `--etcd-*` flags), [`Registry::connect`]
//! with TLS and user/password, and the one-line explanation of credential failures
//! ([`explain_client_error`]) that every RPC error carries ([`timed`]).
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use super::{RPC_TIMEOUT, Registry, RegistryError, Result};

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

pub(super) async fn timed<T>(
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
        let creds = std::sync::Arc::new(CredContext::of(opts));
        let dial = std::sync::Arc::new(Dial {
            endpoints,
            options: copts,
            creds: creds.clone(),
        });
        Ok(Registry {
            client: dial.client().await?,
            prefix: opts.prefix.trim_end_matches('/').to_string(),
            creds,
            dial,
        })
    }

    /// This registry on a client of its own: new connections to every endpoint. The watch takes
    /// one after a member stopped answering without closing its connection (a silent
    /// partition): the shared client's balancer still counts that connection as up and may put
    /// the next watch on it again, while a new connection to that member cannot even open, so a
    /// new client's first request goes to a member that answers.
    pub async fn with_fresh_client(&self) -> Result<Registry> {
        Ok(Registry {
            client: self.dial.client().await?,
            ..self.clone()
        })
    }
}

/// What [`Registry::connect`] made of the options, kept to connect again.
pub(super) struct Dial {
    endpoints: Vec<String>,
    options: ConnectOptions,
    creds: std::sync::Arc<CredContext>,
}

impl Dial {
    async fn client(&self) -> Result<Client> {
        let op = || format!("connect to {}", self.endpoints.join(","));
        match tokio::time::timeout(
            RPC_TIMEOUT,
            Client::connect(&self.endpoints, Some(self.options.clone())),
        )
        .await
        {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(error)) => Err(client_error(&op(), error, &self.creds)),
            Err(_) => Err(RegistryError::Timeout { op: op() }),
        }
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
