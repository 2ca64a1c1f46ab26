//! Where `weft status` reads the config and the leases: etcd (the config from
//! `<prefix>/config` or `--net-config-path`, the leases and their etcd lease TTLs) or, with
//! `--kube-subnet-mgr`, the Kubernetes API (the Nodes as leases, the config from the
//! `--net-config-path` file).
use std::collections::BTreeMap;

use anyhow::{Context as _, Result, anyhow};

use crate::cli::Options;
use crate::lease::Snapshot;
use crate::lease::etcd::registry::Registry;
use crate::lease::kube::node::Families;
use crate::lease::kube::{KubeSource, client};

/// What status reads from the lease source.
pub struct Read {
    /// Where the config came from (`etcd <key>`, `file <path>`).
    pub source: String,
    pub text: String,
    pub snapshot: Snapshot,
    /// Remaining TTL by etcd lease id (None: the etcd lease is gone).
    pub ttls: BTreeMap<i64, Option<i64>>,
    /// The etcd prefix, for lease keys; None in kube mode (leases are Nodes).
    pub prefix: Option<String>,
}

pub async fn read(opts: &Options) -> Result<Read> {
    if opts.kube_subnet_mgr {
        read_kube(opts).await
    } else {
        read_etcd(opts).await
    }
}

async fn read_etcd(opts: &Options) -> Result<Read> {
    let registry = Registry::connect(&opts.etcd_options())
        .await
        .context("etcd client")?;
    let (source, text) = match opts.net_config_path.as_deref() {
        Some(path) => (
            format!("file {}", path.display()),
            std::fs::read_to_string(path)
                .with_context(|| format!("read network config {}", path.display()))?,
        ),
        None => (
            format!("etcd {}", registry.config_key()),
            registry
                .get_config()
                .await
                .context("read the network config")?,
        ),
    };
    let snapshot = registry.list_leases().await.context("list the leases")?;
    let mut ttls: BTreeMap<i64, Option<i64>> = BTreeMap::new();
    for e in &snapshot.leases {
        if e.lease_id != 0 && !ttls.contains_key(&e.lease_id) {
            let ttl = registry
                .lease_time_to_live(e.lease_id)
                .await
                .with_context(|| format!("etcd lease {:x} of {}", e.lease_id, e.key))?;
            ttls.insert(e.lease_id, ttl.map(|(remaining, _)| remaining));
        }
    }
    Ok(Read {
        source,
        text,
        snapshot,
        ttls,
        prefix: Some(registry.prefix().to_string()),
    })
}

async fn read_kube(opts: &Options) -> Result<Read> {
    let path = opts.net_config_path_or_default();
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("read network config {}", path.display()))?;
    let client = client(&opts.kube_options())
        .await
        .map_err(|e| anyhow!("{e:#}"))?;
    // The node's name is not needed: its lease is found by address, as in etcd mode.
    let source = KubeSource::new(client, "", &opts.kube_annotation_prefix, path.clone());
    // The Nodes read as the agent reads them: the network's families decide which podCIDRs
    // and annotations count.
    let families = match net_conf::NetConf::parse(&text) {
        Ok(p) => Families {
            v4: p.conf.enable_ipv4,
            v6: p.conf.enable_ipv6,
        },
        Err(_) => Families::V4,
    };
    let snapshot = source
        .list_nodes_as(families)
        .await
        .context("list the nodes")?;
    Ok(Read {
        source: format!("file {} (kube subnet manager)", path.display()),
        text,
        snapshot,
        ttls: BTreeMap::new(),
        prefix: None,
    })
}
