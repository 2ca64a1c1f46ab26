//! A Kubernetes API server for tests: the part of the real API that a subnet manager uses
//! (Nodes: list, watch, get, patch of `nodes` and `nodes/status`, create, delete; Pods: get),
//! written from the API conventions, with HTTPS and bearer tokens. No kube-apiserver can be
//! installed on the machines this project is tested on, so weft's kube mode is tested against
//! this server; docs/kube-test-server.md says exactly what it serves and how strictly.
//!
//! It runs on a runtime of its own (one worker thread), so synchronous tests and the lab can
//! use it; [`KubeApi::stop`] and [`KubeApi::restart`] take it away and bring it back on the
//! same address, with its objects, as an API server restart does.
pub mod api;
mod node;
pub mod patch;
pub mod store;
mod tls;
pub mod validate;
mod watch;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use api::Grants;
use api::{Shared, lock};
pub use node::NodeSpec;

/// What kube-flannel's ClusterRole grants (`nodes`: get, list, watch; `nodes/status`: patch;
/// `pods`: get), as `(verb, resource)`.
pub const FLANNEL_GRANTS: &[(&str, &str)] = &[
    ("get", "nodes"),
    ("list", "nodes"),
    ("watch", "nodes"),
    ("patch", "nodes/status"),
    ("get", "pods"),
];

/// The user of [`KubeApi::admin_token`].
pub const ADMIN_USER: &str = "kubernetes-admin";

/// How to start the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// The network namespace to listen in (`ip netns` name); `None`: this process's.
    pub netns: Option<String>,
    pub listen_ip: IpAddr,
    /// 0: a random port.
    pub port: u16,
    /// How often a watch with `allowWatchBookmarks=true` gets a bookmark (the real server: about
    /// once a minute).
    pub bookmark_interval: Duration,
    /// How long a watch without `timeoutSeconds` lasts.
    pub default_watch_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            netns: None,
            listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            bookmark_interval: Duration::from_secs(60),
            default_watch_timeout: Duration::from_secs(1800),
        }
    }
}

/// A running (or stopped) test API server.
pub struct KubeApi {
    /// Taken on drop (shut down in the background: a test may drop it inside its own runtime).
    rt: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    opts: Options,
    addr: SocketAddr,
    tls: tls::Tls,
    admin_token: String,
    running: Option<CancellationToken>,
}

impl KubeApi {
    pub fn start(mut opts: Options) -> Result<KubeApi> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kube-api")
            .enable_all()
            .build()
            .context("runtime of the test API server")?;
        let tls = tls::make(opts.listen_ip)?;
        let admin_token = random_token();
        let mut tokens = HashMap::new();
        tokens.insert(
            admin_token.clone(),
            Grants {
                user: ADMIN_USER.to_string(),
                allowed: vec![("*".into(), "*".into())],
            },
        );
        let shared = Arc::new(Shared {
            store: Mutex::new(store::Store::new()),
            pods: Mutex::new(HashMap::new()),
            tokens: Mutex::new(tokens),
            requests: Mutex::new(Vec::new()),
            bookmark_interval: opts.bookmark_interval,
            default_watch_timeout: opts.default_watch_timeout,
            stopped: Mutex::new(CancellationToken::new()),
        });
        let listener = bind(&opts)?;
        let addr = listener.local_addr().context("local address")?;
        opts.port = addr.port();
        let mut api = KubeApi {
            rt: Some(rt),
            shared,
            opts,
            addr,
            tls,
            admin_token,
            running: None,
        };
        api.serve(listener)?;
        Ok(api)
    }

    fn serve(&mut self, listener: std::net::TcpListener) -> Result<()> {
        let stop = CancellationToken::new();
        *lock(&self.shared.stopped) = stop.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&self.tls.server));
        let router = axum::Router::new()
            .fallback(api::handle)
            .with_state(Arc::clone(&self.shared));
        let rt = self.rt.as_ref().context("the server's runtime is gone")?;
        let _guard = rt.enter();
        let listener = tokio::net::TcpListener::from_std(listener).context("listener")?;
        let token = stop.clone();
        rt.spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok(c) => c,
                        Err(_) => continue,
                    },
                };
                // Watch events are small writes: no Nagle delay on them (the real server's
                // Go net package sets TCP_NODELAY too).
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let router = router.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = TowerToHyperService::new(router);
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(tls), service);
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
        });
        self.running = Some(stop);
        Ok(())
    }

    /// `https://<ip>:<port>`.
    pub fn url(&self) -> String {
        match self.addr.ip() {
            IpAddr::V6(ip) => format!("https://[{ip}]:{}", self.addr.port()),
            IpAddr::V4(ip) => format!("https://{ip}:{}", self.addr.port()),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate that signed the server's, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.tls.ca_pem
    }

    pub fn ca_der(&self) -> rustls::pki_types::CertificateDer<'static> {
        self.tls.ca_der.clone()
    }

    /// A token that may do everything (the tests' own client).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Adds a token for `user` with `grants` (`(verb, resource)`); returns it.
    pub fn add_token(&self, user: &str, grants: &[(&str, &str)]) -> String {
        let token = random_token();
        lock(&self.shared.tokens).insert(
            token.clone(),
            Grants {
                user: user.to_string(),
                allowed: grants
                    .iter()
                    .map(|(v, r)| (v.to_string(), r.to_string()))
                    .collect(),
            },
        );
        token
    }

    /// Replaces the grants of `token`.
    pub fn set_grants(&self, token: &str, grants: &[(&str, &str)]) {
        if let Some(g) = lock(&self.shared.tokens).get_mut(token) {
            g.allowed = grants
                .iter()
                .map(|(v, r)| (v.to_string(), r.to_string()))
                .collect();
        }
    }

    /// Revokes `token`: its requests get 401 from now on.
    pub fn remove_token(&self, token: &str) {
        lock(&self.shared.tokens).remove(token);
    }

    /// A kubeconfig for `token`, as `kubectl config view --raw` prints one.
    pub fn kubeconfig(&self, token: &str) -> String {
        use base64::Engine as _;
        let ca = base64::engine::general_purpose::STANDARD.encode(self.tls.ca_pem.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {}\n  name: test\ncontexts:\n- context:\n    cluster: test\n    user: weft\n  name: test\ncurrent-context: test\nusers:\n- name: weft\n  user:\n    token: {token}\n",
            self.url()
        )
    }

    /// A kubeconfig whose user reads its token from `path` (`tokenFile`, as a projected
    /// service-account token is read, and re-read when it rotates).
    pub fn kubeconfig_token_file(&self, path: &std::path::Path) -> String {
        self.kubeconfig("PLACEHOLDER").replace(
            "    token: PLACEHOLDER",
            &format!("    tokenFile: {}", path.display()),
        )
    }

    /// Creates a Node as the kubelet and the controller manager would leave it.
    pub fn create_node(&self, spec: &NodeSpec) -> Result<Value> {
        let obj = node::node_json(spec);
        validate::create(&obj).map_err(|r| anyhow!("{}", r.message))?;
        let mut store = lock(&self.shared.store);
        if store.get(&spec.name).is_some() {
            bail!("node {} exists", spec.name);
        }
        let mut obj = obj;
        obj["metadata"]["uid"] = json!(store.next_uid());
        Ok(store.put(&spec.name, obj))
    }

    /// Changes a Node directly in the store (as another client's write would), bypassing
    /// validation: for tests that need a malformed object.
    pub fn modify_node(&self, name: &str, f: impl FnOnce(&mut Value)) -> Result<Value> {
        let mut store = lock(&self.shared.store);
        let mut obj = store
            .get(name)
            .cloned()
            .ok_or_else(|| anyhow!("no node {name}"))?;
        f(&mut obj);
        Ok(store.put(name, obj))
    }

    pub fn delete_node(&self, name: &str) -> Result<()> {
        lock(&self.shared.store)
            .delete(name)
            .map(|_| ())
            .ok_or_else(|| anyhow!("no node {name}"))
    }

    pub fn node(&self, name: &str) -> Option<Value> {
        lock(&self.shared.store).get(name).cloned()
    }

    /// A Pod `namespace/name` scheduled on `node_name` (for `POD_NAME`/`POD_NAMESPACE`).
    pub fn create_pod(&self, namespace: &str, name: &str, node_name: &str) {
        let pod = json!({"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"nodeName": node_name, "containers": [{"name": "weft", "image": "weft"}]}});
        lock(&self.shared.pods).insert((namespace.into(), name.into()), pod);
    }

    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).resource_version()
    }

    /// Compacts the history: watches and lists from an older resourceVersion get 410 Gone.
    pub fn compact(&self) {
        lock(&self.shared.store).compact();
    }

    /// Every request so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.requests).clone()
    }

    /// Stops listening and closes every connection (open watches end); the objects stay.
    pub fn stop(&mut self) {
        if let Some(token) = self.running.take() {
            token.cancel();
        }
    }

    /// Listens again on the same address.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let mut opts = self.opts.clone();
        opts.port = self.addr.port();
        let listener = bind(&opts)?;
        self.serve(listener)
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.stop();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn random_token() -> String {
    (0..32)
        .map(|_| fastrand::alphanumeric())
        .collect::<String>()
}

/// A listening socket on `opts.listen_ip:opts.port` in `opts.netns` (bound from a thread that
/// entered the namespace; the socket stays in it).
fn bind(opts: &Options) -> Result<std::net::TcpListener> {
    let addr = SocketAddr::new(opts.listen_ip, opts.port);
    let ns = opts.netns.clone();
    let listener = std::thread::spawn(move || -> Result<std::net::TcpListener> {
        if let Some(ns) = ns {
            let file = std::fs::File::open(format!("/run/netns/{ns}"))
                .with_context(|| format!("network namespace {ns}"))?;
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering network namespace {ns}"))?;
        }
        // std sets SO_REUSEADDR on Unix, so a restart can bind the same port at once.
        let std_socket =
            std::net::TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
        std_socket.set_nonblocking(true).context("nonblocking")?;
        Ok(std_socket)
    })
    .join()
    .map_err(|_| anyhow!("bind thread panicked"))??;
    Ok(listener)
}
