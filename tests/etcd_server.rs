//! The test etcd itself: starts healthy, stop/restart keeps data and port, drop cleans up.
use weft_testkit::etcd_server::{EtcdServer, EtcdServerOpts};

#[test]
fn start_stop_restart_keeps_data_and_port() {
    let mut etcd = EtcdServer::start(EtcdServerOpts::default()).expect("start etcd");
    let endpoint = etcd.endpoint();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    etcd.etcdctl(&["put", "/k", "v"]).expect("put");
    etcd.stop();
    assert!(!etcd.is_running());
    etcd.restart().expect("restart");
    assert_eq!(etcd.endpoint(), endpoint);
    let out = etcd
        .etcdctl(&["get", "/k", "--print-value-only"])
        .expect("get");
    assert_eq!(out.trim(), "v");
    let dir = etcd.data_dir();
    assert!(dir.exists());
    drop(etcd);
    assert!(!dir.exists(), "data dir {} not removed", dir.display());
}

/// Deletes a network namespace on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

#[test]
fn runs_inside_a_network_namespace() {
    let name = format!("weft-etcd-{}-{:x}", std::process::id(), fastrand::u32(..));
    let ok = std::process::Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .expect("ip netns add");
    assert!(ok.success());
    let _ns = Netns(name.clone());
    let etcd = EtcdServer::start(EtcdServerOpts {
        netns: Some(name.clone()),
        ..EtcdServerOpts::default()
    })
    .expect("start etcd in netns");
    etcd.etcdctl(&["put", "/k", "in-ns"]).expect("put in netns");
    // The root namespace's 127.0.0.1 does not reach it.
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            &format!("--endpoints={}", etcd.endpoint()),
            "--dial-timeout=300ms",
            "--command-timeout=300ms",
            "get",
            "/k",
        ])
        .output()
        .expect("etcdctl");
    assert!(
        !out.status.success(),
        "etcd in a namespace answered from the root namespace"
    );
}
