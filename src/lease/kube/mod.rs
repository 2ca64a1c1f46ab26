//! The Kubernetes lease source (`--kube-subnet-mgr`): each node's subnet is its
//! `spec.podCIDR(s)`, assigned by the controller manager; each node publishes its public IP and
//! backend data in flannel's annotations (patched through `nodes/status`, as kube-flannel's RBAC
//! grants), and every node's lease is read from a list and watch of the Nodes.
//!
//! The client is kube-rs (`kube::Client`: kubeconfig, in-cluster config with token rotation,
//! TLS). The requests are built with `kube::core::Request` and decoded into [`node::NodeLite`],
//! which keeps a handful of fields of a Node, not the whole object; the list + watch loop is in
//! [`watch`] because the agent needs its events as the lease stream of [`crate::lease`]
//! (resync on 410, disconnect/reconnect), which kube-runtime's watcher does not give.
pub mod node;
mod source;
mod watch;

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};

pub use source::KubeSource;

/// An error the agent must not retry: it exits 1 with this one line (a kubeconfig that does
/// not parse, a podCIDR outside the network).
#[derive(Debug)]
pub struct Fatal(pub String);

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fatal {}

/// What kube mode is told on the command line.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    pub kubeconfig: Option<PathBuf>,
    pub api_url: Option<String>,
}

/// A client from `--kubeconfig-file`, else the in-cluster config (service-account token, CA,
/// `KUBERNETES_SERVICE_HOST/PORT`; kube-rs re-reads a rotated token); `--kube-api-url`
/// replaces the server of either, or alone is used without credentials, as client-go does.
pub async fn client(opts: &KubeOptions) -> Result<kube::Client> {
    let mut config =
        match &opts.kubeconfig {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Fatal(format!(
                        "--kubeconfig-file {}: cannot read it: {e}",
                        path.display()
                    ))
                })?;
                let kc = Kubeconfig::from_yaml(&text)
                    .map_err(|e| Fatal(format!("--kubeconfig-file {}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| Fatal(format!("--kubeconfig-file {}: {e}", path.display())))?
            }
            None => match kube::Config::incluster() {
                Ok(c) => c,
                Err(e) => match &opts.api_url {
                    Some(url) => kube::Config::new(url.parse().map_err(|err| {
                        Fatal(format!("--kube-api-url {url:?}: not a URL: {err}"))
                    })?),
                    None => {
                        return Err(Fatal(format!(
                        "no --kubeconfig-file and not in a cluster ({e}); set --kubeconfig-file \
                         or run as a pod with a service account"
                    ))
                    .into());
                    }
                },
            },
        };
    if let Some(url) = &opts.api_url {
        config.cluster_url = url
            .parse()
            .map_err(|err| Fatal(format!("--kube-api-url {url:?}: not a URL: {err}")))?;
    }
    // A watch is a long request; the client's read timeout must not cut it.
    config.read_timeout = None;
    kube::Client::try_from(config).context("build the Kubernetes client")
}

/// One line for a failed API call: what was refused and why (401: the token; 403: the verb
/// and resource RBAC refused, from the server's message), or that the server is unreachable.
pub fn api_error(what: &str, e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 401 => format!(
            "{what}: 401 Unauthorized: the API server refused the credentials (a bad or expired \
             token?)"
        ),
        kube::Error::Api(s) if s.code == 403 => {
            format!(
                "{what}: 403 Forbidden: {} (check weft's ClusterRole)",
                s.message
            )
        }
        kube::Error::Api(s) => format!("{what}: {} {}: {}", s.code, s.reason, s.message),
        other => format!("{what}: the API server is unreachable: {other}"),
    }
}

/// The HTTP status of an API error, if the server answered.
pub fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}
