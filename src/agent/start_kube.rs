//! Start-up in kube mode (`--kube-subnet-mgr`): the client, the node's name, the config file
//! (`--net-config-path`, default `/etc/kube-flannel/net-conf.json`, watched for ConfigMap
//! updates), a bounded first contact (a node whose API server does not answer boots from its
//! peer cache), then the same start as etcd mode with the Kubernetes lease source.
use anyhow::{Context as _, Result, anyhow};
use backends::nl::Netlink;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::http::Health;
use super::sd_notify::Notifier;
use super::start::{FIRST_CONTACT, Start, boot_from_cache_if_any};
use crate::cli::Options;
use crate::lease::Snapshot;
use crate::lease::kube::node::{Families, NodeLease, NodeLite};
use crate::lease::kube::{Fatal, KubeSource, api_error, client};
use crate::lease::retry_until;

pub(super) async fn run(
    mut opts: Options,
    health: Health,
    notifier: Notifier,
    shutdown: CancellationToken,
) -> Result<()> {
    let config_path = opts.net_config_path_or_default();
    // The file is the config in kube mode, and it is watched (a ConfigMap update).
    opts.net_config_path = Some(config_path.clone());
    let client = client(&opts.kube_options()).await?;
    let Some(node_name) = node_name(&client, &shutdown).await? else {
        return Ok(());
    };
    info!(
        "kube subnet manager: node {node_name}, config {}",
        config_path.display()
    );
    let source = KubeSource::new(
        client,
        &node_name,
        &opts.kube_annotation_prefix,
        config_path.clone(),
    );
    let nl = Netlink::connect().context("open a netlink socket")?;
    // The list of every Node runs while the rest of the start does (taken by the acquire).
    source.prefetch_list();

    // First contact, bounded: a node with a peer cache programs the cached peers rather than
    // wait for an API server that does not answer.
    let first = tokio::time::timeout(FIRST_CONTACT, source.get_node(&node_name)).await;
    let node = match first {
        Ok(Ok(node)) => node,
        failed => {
            match failed {
                Ok(Err(e)) => warn!("{}", api_error("at start", &e)),
                _ => warn!("the API server did not answer within {FIRST_CONTACT:?} at start"),
            }
            boot_from_cache_if_any(&nl, &opts).await;
            let got = retry_until(&shutdown, "reading this node from the API server", || {
                health.beat();
                let source = source.clone();
                let name = node_name.clone();
                async move {
                    source
                        .get_node(&name)
                        .await
                        .map_err(|e| anyhow!(api_error(&format!("get node {name:?}"), &e)))
                }
            })
            .await;
            let Some(node) = got else { return Ok(()) };
            node
        }
    };
    apply_node_public_ip(&mut opts, &source, &node)?;
    // Our previous lease (vxlan: the VTEP MAC to keep) is on our own Node: no list of every
    // Node for it.
    let own_only = Snapshot {
        revision: node.resource_version(),
        leases: match source.annotations().as_lease(
            &node,
            Families::of_cidrs(node.pod_cidrs().unwrap_or_default()),
        ) {
            NodeLease::Lease(l) => vec![l],
            _ => Vec::new(),
        },
        malformed: Vec::new(),
    };
    drop(node);

    let text = std::fs::read_to_string(&config_path).map_err(|e| {
        Fatal(format!(
            "read network config {}: {e}",
            config_path.display()
        ))
    })?;
    // The file is the only config in kube mode: no store config to compare it with.
    let start = Start::settle(opts, text, nl, health, notifier, None, shutdown).await?;
    start.run(source, Some(own_only)).await
}

/// `node-public-ip` on the Node, set by an admin, chooses the public IP as `--public-ip`
/// would (the command line wins).
fn apply_node_public_ip(opts: &mut Options, source: &KubeSource, node: &NodeLite) -> Result<()> {
    match source.annotations().node_public_ip(node) {
        Ok(Some(ip)) if opts.public_ip.is_none() => {
            info!(
                "using public IP {ip} from the node's annotation {}",
                source.annotations().node_public_ip
            );
            opts.public_ip = Some(ip);
        }
        Ok(_) => {}
        Err(e) => warn!("ignoring it: {e}"),
    }
    Ok(())
}

/// `NODE_NAME`, else the node of the pod `POD_NAMESPACE/POD_NAME` (as flanneld finds it).
/// `None` on shutdown while the API server does not answer.
async fn node_name(client: &kube::Client, shutdown: &CancellationToken) -> Result<Option<String>> {
    if let Some(name) = std::env::var("NODE_NAME").ok().filter(|s| !s.is_empty()) {
        return Ok(Some(name));
    }
    let (Some(pod), Some(ns)) = (
        std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()),
        std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|s| !s.is_empty()),
    ) else {
        return Err(Fatal(
            "env variables POD_NAME and POD_NAMESPACE must be set (or NODE_NAME)".to_string(),
        )
        .into());
    };
    let path = format!("/api/v1/namespaces/{ns}/pods/{pod}");
    let got = retry_until(
        shutdown,
        "reading this pod's node from the API server",
        || {
            let client = client.clone();
            let path = path.clone();
            let (ns, pod) = (ns.clone(), pod.clone());
            async move {
                let req = http::Request::get(&path)
                    .body(Vec::new())
                    .map_err(|e| anyhow!("build request {path}: {e}"))?;
                let pod: serde_json::Value = client
                    .request(req)
                    .await
                    .map_err(|e| anyhow!(api_error(&format!("get pod {ns}/{pod}"), &e)))?;
                pod["spec"]["nodeName"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("pod {ns}/{pod} has no spec.nodeName yet"))
            }
        },
    )
    .await;
    Ok(got)
}
