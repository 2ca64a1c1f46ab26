//! Helpers of the kube-mode end-to-end tests (`tests/e2e_kube*.rs`, included with
//! `#[path = "common/kube.rs"] mod kube;` after `common/lab.rs` as `common`).
#![allow(dead_code)]

use std::time::Duration;

use crate::common::{self, VxlanPeer, vxlan_mac};
use weft_testkit::lab::{Lab, LabSpec};

pub const READY: Duration = Duration::from_secs(30);
pub const CONVERGE: Duration = Duration::from_secs(15);
pub const VXLAN: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
pub const P: &str = "flannel.alpha.coreos.com";

pub fn kube_lab(nodes: usize, config: &str) -> Lab {
    let mut s = LabSpec::new(nodes, common::weft_bin()).kube();
    s.backend = "vxlan".to_owned();
    s.config = Some(config.to_owned());
    Lab::build(s).expect("build a kube-mode lab")
}

pub fn annotation(lab: &mut Lab, k: usize, name: &str) -> Option<String> {
    let node = lab.kube().expect("kube").node(&Lab::node_name(k))?;
    node["metadata"]["annotations"][format!("{P}/{name}")]
        .as_str()
        .map(str::to_owned)
}

pub fn started_lab(nodes: usize) -> Lab {
    let mut lab = kube_lab(nodes, VXLAN);
    lab.start_all().expect("start agents");
    for k in 1..=nodes {
        lab.wait_subnet_env(k, READY)
            .unwrap_or_else(|e| panic!("node {k}: {e:#}; log:\n{}", lab.log_tail(k, 40)));
    }
    lab.add_pods().expect("pods");
    lab
}

pub fn peer(lab: &Lab, j: usize) -> Result<VxlanPeer, String> {
    Ok(VxlanPeer {
        subnet: lab.subnet(j).map_err(|e| e.to_string())?,
        ip: lab.node_ip(j).map_err(|e| e.to_string())?,
        mac: vxlan_mac(lab.node_ns(j).map_err(|e| e.to_string())?)?,
    })
}

pub fn route_to(lab: &Lab, k: usize, subnet: &str) -> bool {
    lab.routes_text(k)
        .map(|t| t.lines().any(|l| l.starts_with(subnet)))
        .unwrap_or(false)
}

pub fn assert_pings(lab: &Lab) {
    let matrix = lab.ping_matrix().expect("ping matrix");
    assert!(
        matrix.iter().all(|&(_, _, ok)| ok),
        "pod pairs without replies: {matrix:?}"
    );
}
