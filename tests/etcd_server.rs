//! The test etcd itself: starts healthy, stop/restart keeps data and port, drop cleans up.
use weft::etcd_server::{EtcdServer, EtcdServerOpts};

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
