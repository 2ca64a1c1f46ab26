//! [`KubeSource`]: the [`LeaseSource`] of kube mode. The node's lease is its own Node (subnet
//! = podCIDR, attributes = flannel's annotations, which it writes); there is no TTL, so renewal
//! only waits for shutdown; "re-acquiring" after the Node was deleted waits for it to be
//! registered again.
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Result, anyhow};
use ipnet::Ipv4Net;
use kube::api::{GetParams, ListParams, Patch, PatchParams};
use kube::core::Request;
use net_conf::alloc::Previous;
use net_conf::{LeaseAttrs, NetConf, SubnetKey};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::node::{Annotations, Families, NodeLease, NodeLite, network_available_patch};
use super::{Fatal, api_error, status_code};
use crate::lease::{LeaseSource, OwnLease, Reacquired, RenewalEnd, Snapshot, WatchEvent};

/// Nodes per page of a list (client-go's informers use 500).
const PAGE: u32 = 500;

#[derive(Clone)]
pub struct KubeSource {
    client: kube::Client,
    node: Arc<str>,
    ann: Arc<Annotations>,
    config_path: PathBuf,
    /// The network and attributes of the last acquire (for re-acquiring).
    held: Arc<Mutex<Option<Held>>>,
    /// A list of every Node started early (at start-up, while the backend is prepared), taken
    /// by the first acquire.
    prefetched: Arc<Mutex<Option<tokio::task::JoinHandle<Result<RawList>>>>>,
}

/// The network and attributes of the last acquire.
type Held = (Networks, LeaseAttrs);

/// The config's networks a node's pod CIDRs must lie in (`IPv6Network` only when IPv6 is on).
#[derive(Debug, Clone, Copy)]
struct Networks {
    v4: Option<Ipv4Net>,
    v6: Option<ipnet::Ipv6Net>,
}

/// Every Node of a list, as read, at the list's resourceVersion.
#[derive(Default)]
struct RawList {
    revision: i64,
    nodes: Vec<NodeLite>,
}

#[derive(Deserialize)]
struct NodeList {
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<NodeLite>,
}

#[derive(Deserialize)]
struct ListMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: String,
    #[serde(default, rename = "continue")]
    continue_: Option<String>,
}

impl KubeSource {
    pub fn new(
        client: kube::Client,
        node: &str,
        annotation_prefix: &str,
        config_path: PathBuf,
    ) -> Self {
        KubeSource {
            client,
            node: node.into(),
            ann: Arc::new(Annotations::new(annotation_prefix)),
            config_path,
            held: Arc::new(Mutex::new(None)),
            prefetched: Arc::new(Mutex::new(None)),
        }
    }

    pub fn annotations(&self) -> &Annotations {
        &self.ann
    }

    /// The families of the network this source leases for (known once acquired; an IPv4
    /// network until then).
    fn families(&self) -> Families {
        lock(&self.held)
            .as_ref()
            .map_or(Families::V4, |(networks, _)| Families {
                v4: networks.v4.is_some(),
                v6: networks.v6.is_some(),
            })
    }

    /// A Node as a lease, its key of the network's families: a Node's IPv6 podCIDR (and IPv6
    /// annotations) count only on a network with IPv6, its IPv4 ones only on a network with
    /// IPv4, so on a single-family network of a dual-stack cluster the Nodes have the same keys
    /// as the node's own claim.
    pub fn lease_of(&self, node: &NodeLite) -> NodeLease {
        self.ann.as_lease(node, self.families())
    }

    /// The key a Node's podCIDRs stand for (as [`lease_of`](Self::lease_of) keys it), if it
    /// has the one of the network's first family: what its removal deletes.
    pub fn key_of(&self, node: &NodeLite) -> Option<SubnetKey> {
        self.families().key(node.pod_cidrs().ok()?)
    }

    pub fn node_name(&self) -> &str {
        &self.node
    }

    fn api() -> Request {
        Request::new("/api/v1/nodes")
    }

    /// GET the node `name`.
    pub async fn get_node(&self, name: &str) -> Result<NodeLite, kube::Error> {
        let req = Self::api()
            .get(name, &GetParams::default())
            .map_err(kube::Error::BuildRequest)?;
        self.client.request::<NodeLite>(req).await
    }

    /// A strategic merge patch of our Node's `nodes/status`; a refusal is one line naming the
    /// verb and resource (`patch nodes/status "<node>": 403 Forbidden: …`).
    async fn patch_status(&self, patch: serde_json::Value) -> Result<()> {
        let what = format!("patch nodes/status {:?}", &*self.node);
        let req = Self::api()
            .patch_subresource(
                "status",
                &self.node,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .map_err(|e| anyhow!("{what}: {e}"))?;
        self.client
            .request::<serde_json::Value>(req)
            .await
            .map(|_| ())
            .map_err(|e| anyhow!(api_error(&what, &e)))
    }

    /// Every Node as a lease of this network (see [`list_raw`](Self::list_raw)).
    pub async fn list_nodes(&self) -> Result<Snapshot> {
        Ok(self.snapshot_of(self.list_raw().await?))
    }

    /// Every Node as a lease of a network of `families`, for a reader that acquires nothing
    /// (`weft status`).
    pub async fn list_nodes_as(&self, families: Families) -> Result<Snapshot> {
        Ok(self.snapshot_as(self.list_raw().await?, families))
    }

    /// Every Node, paged, at one resourceVersion; a page whose continue token expired restarts
    /// the list.
    async fn list_raw(&self) -> Result<RawList> {
        'list: loop {
            let mut raw = RawList::default();
            let mut cont: Option<String> = None;
            loop {
                let mut lp = ListParams::default().limit(PAGE);
                if let Some(c) = &cont {
                    lp = lp.continue_token(c);
                }
                let req = Self::api().list(&lp).map_err(kube::Error::BuildRequest)?;
                let page: NodeList = match self.client.request(req).await {
                    Ok(p) => p,
                    Err(e) if cont.is_some() && status_code(&e) == Some(410) => {
                        info!("listing nodes: the continue token expired; listing again");
                        continue 'list;
                    }
                    Err(e) => return Err(anyhow!(api_error("list nodes", &e))),
                };
                if cont.is_none() {
                    raw.revision = page.metadata.resource_version.parse().unwrap_or(0);
                }
                raw.nodes.extend(page.items);
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(c) => cont = Some(c),
                    None => return Ok(raw),
                }
            }
        }
    }

    /// The Nodes of a list as leases of this network; malformed ones are logged and kept
    /// aside (never removed as peers).
    fn snapshot_of(&self, raw: RawList) -> Snapshot {
        self.snapshot_as(raw, self.families())
    }

    fn snapshot_as(&self, raw: RawList, families: Families) -> Snapshot {
        let mut snapshot = Snapshot {
            revision: raw.revision,
            ..Snapshot::default()
        };
        for node in &raw.nodes {
            match self.ann.as_lease(node, families) {
                NodeLease::Lease(l) => snapshot.leases.push(l),
                NodeLease::Malformed(m) => {
                    warn!("skipping {}: {}", m.key, m.reason);
                    snapshot.malformed.push(m);
                }
                NodeLease::NotALease => {}
            }
        }
        snapshot
    }

    /// Starts listing every Node in the background, for the first acquire: at 5,000 Nodes the
    /// list (about 20 MB of JSON) is most of kube mode's start, and it need not wait for the
    /// backend's device. The list may predate our own annotations; the watch from it brings
    /// them. The Nodes are kept as read and made leases at the acquire, once the network's
    /// families are known.
    pub fn prefetch_list(&self) {
        let me = self.clone();
        *lock(&self.prefetched) = Some(tokio::spawn(async move { me.list_raw().await }));
    }

    /// The prefetched list if there is one and it worked, else a new list.
    async fn list_for_acquire(&self) -> Result<Snapshot> {
        let pending = lock(&self.prefetched).take();
        if let Some(mut task) = pending {
            // Bounded: a list stuck on a server that accepted and never answered is dropped.
            match tokio::time::timeout(std::time::Duration::from_secs(30), &mut task).await {
                Ok(Ok(Ok(raw))) => return Ok(self.snapshot_of(raw)),
                Ok(Ok(Err(e))) => {
                    warn!("the early list of the Nodes failed ({e:#}); listing again")
                }
                Ok(Err(e)) => {
                    warn!("the early list of the Nodes did not finish ({e}); listing again")
                }
                Err(_) => {
                    task.abort();
                    warn!("the early list of the Nodes took over 30 s; listing again");
                }
            }
        }
        self.list_nodes().await
    }

    /// Reads our Node, checks its podCIDR against `network` and publishes `attrs` on it.
    async fn claim(&self, networks: Networks, attrs: &LeaseAttrs) -> Result<SubnetKey> {
        let node = self
            .get_node(&self.node)
            .await
            .map_err(|e| anyhow!(api_error(&format!("get node {:?}", &*self.node), &e)))?;
        // The IPv4 podCIDR, on a network with IPv4 (IPv6-only: none).
        let v4 = match networks.v4 {
            None => None,
            Some(net) => {
                let cidr = match node.pod_cidr_v4() {
                    Ok(Some(c)) => c,
                    Ok(None) => {
                        return Err(anyhow!(
                            "node \"{}\" pod cidr not assigned (waiting for the controller \
                             manager to assign spec.podCIDR)",
                            &*self.node
                        ));
                    }
                    Err(e) => return Err(Fatal(format!("node \"{}\": {e}", &*self.node)).into()),
                };
                if !net.contains(&cidr) {
                    return Err(Fatal(format!(
                        "subnet \"{net}\" specified in the flannel net config doesn't contain \
                         \"{cidr}\" PodCIDR of the \"{}\" node",
                        &*self.node
                    ))
                    .into());
                }
                Some(cidr)
            }
        };
        let v6 = match networks.v6 {
            None => None,
            Some(net6) => {
                let cidr6 = match node.pod_cidr_v6() {
                    Ok(Some(c)) => c,
                    Ok(None) => {
                        return Err(anyhow!(
                            "node \"{}\" has no IPv6 pod cidr (waiting for the controller manager \
                             to assign an IPv6 entry of spec.podCIDRs: the network has IPv6)",
                            &*self.node
                        ));
                    }
                    Err(e) => return Err(Fatal(format!("node \"{}\": {e}", &*self.node)).into()),
                };
                if !net6.contains(&cidr6) {
                    return Err(Fatal(format!(
                        "subnet \"{net6}\" specified in the flannel net config doesn't contain \
                         \"{cidr6}\" PodCIDR of the \"{}\" node",
                        &*self.node
                    ))
                    .into());
                }
                Some(cidr6)
            }
        };
        let key = SubnetKey { v4, v6 };
        if !self.ann.carries(&node, attrs) {
            self.patch_status(self.ann.patch(attrs)).await?;
            let public = match (v4, attrs.public_ipv6) {
                (None, Some(ip6)) => ip6.to_string(),
                _ => attrs.public_ip.to_string(),
            };
            info!(
                "published {key} on node {} (backend {}, public IP {public})",
                &*self.node, attrs.backend_type
            );
        }
        Ok(key)
    }

    fn own(key: SubnetKey) -> OwnLease {
        OwnLease {
            key,
            lease_id: 0,
            expires: None,
            granted_ttl: 0,
        }
    }

    /// Sets the Node's `NetworkUnavailable` condition to False (`FlannelIsUp`).
    pub async fn set_network_available(&self) -> Result<()> {
        let now = jiff_now();
        self.patch_status(network_available_patch(&now)).await?;
        info!(
            "node {}: set condition NetworkUnavailable=False (FlannelIsUp)",
            &*self.node
        );
        Ok(())
    }
}

/// The current time as RFC 3339 in UTC, seconds precision (the API's `Time`).
fn jiff_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LeaseSource for KubeSource {
    fn config_location(&self) -> String {
        format!("file {}", self.config_path.display())
    }

    async fn config(&self) -> Result<Option<String>> {
        match tokio::fs::read_to_string(&self.config_path).await {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow!("read {}: {e}", self.config_path.display())),
        }
    }

    async fn list_network(&self) -> Result<(Option<String>, Snapshot)> {
        let config = self.config().await?;
        Ok((config, self.list_nodes().await?))
    }

    async fn list(&self) -> Result<Snapshot> {
        self.list_nodes().await
    }

    async fn acquire(
        &mut self,
        conf: &NetConf,
        attrs: &LeaseAttrs,
        _previous: Previous,
        _listed: Option<Snapshot>,
    ) -> Result<(OwnLease, Snapshot)> {
        let networks = Networks {
            v4: conf.network.filter(|_| conf.enable_ipv4),
            v6: conf.ipv6_network.filter(|_| conf.enable_ipv6),
        };
        let key = self.claim(networks, attrs).await?;
        *lock(&self.held) = Some((networks, attrs.clone()));
        let snapshot = self.list_for_acquire().await?;
        Ok((Self::own(key), snapshot))
    }

    async fn reacquire(&mut self, prefer: SubnetKey) -> Result<Reacquired> {
        let (networks, attrs) = lock(&self.held)
            .clone()
            .ok_or_else(|| anyhow!("re-acquire before acquire"))?;
        let key = self.claim(networks, &attrs).await?;
        let snapshot = self.list_nodes().await?;
        if key != prefer {
            warn!("node {}: podCIDR is now {key} (was {prefer})", &*self.node);
        }
        Ok(Reacquired {
            lease: Self::own(key),
            snapshot,
            subnet_changed: key != prefer,
        })
    }

    async fn reassert(&self, own: &OwnLease, attrs: &LeaseAttrs) -> Result<bool> {
        let node = match self.get_node(&self.node).await {
            Ok(n) => n,
            Err(e) if status_code(&e) == Some(404) => return Ok(false),
            Err(e) => return Err(anyhow!(api_error("get own node", &e))),
        };
        if self.key_of(&node) != Some(own.key) {
            return Ok(false);
        }
        if !self.ann.carries(&node, attrs) {
            self.patch_status(self.ann.patch(attrs)).await?;
        }
        Ok(true)
    }

    // A Node has no TTL: nothing to renew. (Not an `async fn`: the future must not borrow
    // `self`, it outlives the call.)
    #[allow(clippy::manual_async_fn)]
    fn renewal(
        &self,
        _own: OwnLease,
        shutdown: CancellationToken,
    ) -> impl Future<Output = RenewalEnd> + Send + 'static {
        async move {
            shutdown.cancelled().await;
            RenewalEnd::Shutdown
        }
    }

    fn watch(&self, from_revision: i64, shutdown: CancellationToken) -> mpsc::Receiver<WatchEvent> {
        super::watch::spawn(self.clone(), from_revision - 1, shutdown)
    }

    async fn started(&self) -> Result<()> {
        self.set_network_available().await
    }
}

impl KubeSource {
    pub(super) fn client(&self) -> &kube::Client {
        &self.client
    }
}
