//! The lab in kube mode ([`LabSpec::kube`]): the test API server ([`crate::kube_api`]) in the
//! underlay namespace at 198.18.0.254:6443 instead of etcd, one Node per lab node
//! (`node<k>`, podCIDR the k-th /24 of the network, InternalIP 198.18.0.k), a kubeconfig with
//! a token that has kube-flannel's RBAC grants, and net-conf.json as the ConfigMap's file.
use std::fs;
use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow};
use ipnet::{Ipv4Net, Ipv6Net};

use super::{Lab, LabSpec, UNDERLAY_GATEWAY};
use crate::kube_api::{FLANNEL_GRANTS, KubeApi, NodeSpec, Options};

/// The API server's port in the underlay namespace.
pub const KUBE_API_PORT: u16 = 6443;
/// The service account the agents' token stands for.
pub const FLANNEL_USER: &str = "system:serviceaccount:kube-flannel:flannel";

/// The API server of a kube-mode lab and the agents' token.
pub struct KubeLab {
    pub api: KubeApi,
    pub token: String,
}

impl std::fmt::Debug for KubeLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KubeLab({})", self.api.url())
    }
}

/// Node k's podCIDR: the k-th /24 of `network` (10.244.0.0/16 → 10.244.k.0/24).
pub fn pod_cidr(network: &str, k: usize) -> Result<Ipv4Net> {
    let net: Ipv4Net = network
        .parse()
        .with_context(|| format!("network {network:?}"))?;
    net.subnets(24)
        .with_context(|| format!("network {network} is smaller than a /24"))?
        .nth(k)
        .ok_or_else(|| anyhow!("network {network} has no {k}-th /24"))
}

/// Node k's IPv6 podCIDR in a dual-stack lab: the k-th /64 of `network`.
pub fn pod_cidr6(network: &str, k: usize) -> Result<Ipv6Net> {
    let net: Ipv6Net = network
        .parse()
        .with_context(|| format!("IPv6 network {network:?}"))?;
    net.subnets(64)
        .with_context(|| format!("IPv6 network {network} is smaller than a /64"))?
        .nth(k)
        .ok_or_else(|| anyhow!("IPv6 network {network} has no {k}-th /64"))
}

impl Lab {
    /// Starts the API server in the underlay namespace and registers every node.
    pub(super) fn start_kube(&mut self) -> Result<()> {
        let api = KubeApi::start(Options {
            netns: Some(self.underlay.clone()),
            listen_ip: UNDERLAY_GATEWAY.into(),
            port: KUBE_API_PORT,
            ..Options::default()
        })
        .context("starting the test API server in the underlay namespace")?;
        let token = api.add_token(FLANNEL_USER, FLANNEL_GRANTS);
        fs::write(self.kubeconfig_path(), api.kubeconfig(&token))
            .with_context(|| format!("writing {}", self.kubeconfig_path().display()))?;
        // For curl and friends (weft-lab --kube --keep prints how).
        fs::write(self.dir.join("ca.pem"), api.ca_pem()).context("writing ca.pem")?;
        fs::write(self.dir.join("token"), &token).context("writing token")?;
        self.kube = Some(KubeLab { api, token });
        self.write_net_conf(&self.spec.config_json())?;
        for k in 1..=self.spec.nodes {
            self.register_node(k)?;
        }
        Ok(())
    }

    /// Creates Node `node<k>` with its podCIDR (and, dual-stack, its IPv6 podCIDR second, as
    /// the controller manager lists them; IPv6-only, that one alone), as kubelet and the
    /// controller manager would.
    pub fn register_node(&self, k: usize) -> Result<()> {
        let ip = super::topology::node_ip(k)?;
        let mut node = NodeSpec::new(&Self::node_name(k)).internal_ip(ip);
        if !self.spec.ipv6_only {
            node = node.pod_cidr(&pod_cidr(&self.spec.network, k)?.to_string());
        }
        if let Some(v6) = &self.spec.ipv6_network {
            node = node.pod_cidr(&pod_cidr6(v6, k)?.to_string());
        }
        self.kube_ref()?.api.create_node(&node).map(|_| ())
    }

    /// The Node name of lab node k (`NODE_NAME` of its agent).
    pub fn node_name(k: usize) -> String {
        format!("node{k}")
    }

    /// The test API server of a kube-mode lab.
    pub fn kube(&mut self) -> Result<&mut KubeApi> {
        self.kube
            .as_mut()
            .map(|k| &mut k.api)
            .ok_or_else(|| anyhow!("this lab runs in etcd mode (LabSpec::kube is false)"))
    }

    /// The agents' token (kube-flannel's grants).
    pub fn kube_token(&self) -> Result<String> {
        Ok(self.kube_ref()?.token.clone())
    }

    fn kube_ref(&self) -> Result<&KubeLab> {
        self.kube
            .as_ref()
            .ok_or_else(|| anyhow!("this lab runs in etcd mode (LabSpec::kube is false)"))
    }

    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The ConfigMap's net-conf.json that every agent reads (`--net-config-path`).
    pub fn net_conf_path(&self) -> PathBuf {
        self.dir.join("net-conf.json")
    }

    /// Replaces net-conf.json atomically (as a ConfigMap update swaps the file).
    pub fn write_net_conf(&self, json: &str) -> Result<()> {
        let path = self.net_conf_path();
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
    }
}

impl LabSpec {
    /// This spec in kube mode.
    pub fn kube(mut self) -> Self {
        self.kube = true;
        self
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pod_cidrs_are_the_kth_slash_24() {
        assert_eq!(
            pod_cidr("10.244.0.0/16", 3).unwrap().to_string(),
            "10.244.3.0/24"
        );
        assert!(pod_cidr("10.244.0.0/25", 1).is_err());
        assert_eq!(
            pod_cidr6("fd00:10:244::/56", 3).unwrap().to_string(),
            "fd00:10:244:3::/64"
        );
        assert!(pod_cidr6("fd00::/65", 1).is_err());
    }
}
