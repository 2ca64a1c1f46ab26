//! `weft-lab --kube`: the one command that shows kube mode working (the test API server, two
//! vxlan nodes with podCIDRs, pods pinging each other), run as a newcomer would run it.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::PathBuf;
use std::process::Command;

#[test]
fn weft_lab_kube_builds_a_kube_mode_cluster_whose_pods_ping() {
    if !weft_testkit::need::root("weft_lab_kube_builds_a_kube_mode_cluster_whose_pods_ping") {
        return;
    }
    let lab_bin = PathBuf::from(env!("CARGO_BIN_EXE_weft-lab"));
    // `cargo test --workspace` builds the agent beside it.
    let weft = lab_bin.with_file_name("weft");
    assert!(
        weft.is_file(),
        "{} is missing: run `cargo test --workspace` (or `cargo build -p weft`) first",
        weft.display()
    );
    let out = Command::new(&lab_bin)
        .args(["--kube", "--nodes", "2", "--backend", "vxlan", "--weft"])
        .arg(&weft)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "weft-lab --kube failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all 2 pod pairs reply"), "{stdout}");
    // The subnets are the Nodes' podCIDRs (the k-th /24).
    assert!(stdout.contains("FLANNEL_SUBNET=10.244.1.1/24"), "{stdout}");
    assert!(stdout.contains("FLANNEL_SUBNET=10.244.2.1/24"), "{stdout}");
    assert!(stderr.contains("kube mode"), "{stderr}");
}
