//! Connecting to etcd: config key, mutual TLS with openssl-made certificates, user/password.
mod common;

use common::certs::make_certs;
use common::*;
use net_conf::alloc::Previous;
use weft::lease::etcd::registry::{EtcdOptions, Registry, RegistryError};
use weft_testkit::etcd_server::{EtcdServer, EtcdServerOpts, EtcdTls};

#[tokio::test]
async fn missing_config_gives_flannels_hint_and_present_config_is_read() {
    let etcd = start_etcd();
    let reg = registry(&etcd.endpoint()).await;
    let err = reg.get_config().await.expect_err("no config yet");
    assert!(matches!(err, RegistryError::ConfigNotFound { .. }));
    assert_eq!(
        err.to_string(),
        "flannel config not found in etcd store (key /coreos.com/network/config). \
         Did you create your config using etcdv3 API?"
    );
    let text = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
    etcd.etcdctl(&["put", "/coreos.com/network/config", text])
        .expect("put");
    assert_eq!(reg.get_config().await.expect("config"), text);

    // Another prefix has its own config key.
    let mut opts = EtcdOptions::new(vec![etcd.endpoint()]);
    opts.prefix = "/weft/other/".into();
    let other = Registry::connect(&opts).await.expect("connect");
    let err = other.get_config().await.expect_err("no config");
    assert!(
        err.to_string().contains("(key /weft/other/config)"),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_etcd_is_a_transient_error() {
    init_tracing();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let reg = registry(&format!("http://127.0.0.1:{port}")).await;
    let err = reg.list_leases().await.expect_err("nothing listens");
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn mutual_tls_connects_with_a_client_certificate_and_not_without() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    make_certs(d, &["127.0.0.1"]);
    let etcd = EtcdServer::start(EtcdServerOpts {
        tls: Some(EtcdTls {
            ca_file: d.join("ca.crt"),
            cert_file: d.join("server.crt"),
            key_file: d.join("server.key"),
        }),
        ..EtcdServerOpts::default()
    })
    .expect("start TLS etcd");
    assert!(etcd.endpoint().starts_with("https://127.0.0.1:"));
    etcd.etcdctl(&[
        "put",
        "/coreos.com/network/config",
        r#"{"Network":"10.244.0.0/16"}"#,
    ])
    .expect("put over TLS");

    let mut opts = EtcdOptions::new(vec![etcd.endpoint()]);
    opts.cafile = Some(d.join("ca.crt"));
    opts.certfile = Some(d.join("client.crt"));
    opts.keyfile = Some(d.join("client.key"));
    let reg = Registry::connect(&opts).await.expect("connect");
    assert_eq!(
        reg.get_config().await.expect("config over mTLS"),
        r#"{"Network":"10.244.0.0/16"}"#
    );
    // An http:// endpoint with TLS files is upgraded to https (flannel dials TLS then too).
    let mut http = opts.clone();
    http.endpoints = vec![etcd.endpoint().replace("https://", "http://")];
    let reg = Registry::connect(&http).await.expect("connect");
    reg.list_leases().await.expect("list over mTLS");

    // A CA alone does not turn TLS on (flannel's rule): the server's certificate cannot be
    // verified then.
    let mut ca_only = EtcdOptions::new(vec![etcd.endpoint()]);
    ca_only.cafile = Some(d.join("ca.crt"));
    let reg = Registry::connect(&ca_only).await.expect("connect is lazy");
    let err = reg.list_leases().await.expect_err("server not verified");
    assert!(
        err.to_string()
            .contains("etcd requires a client certificate: set --etcd-certfile and --etcd-keyfile"),
        "{err}"
    );
    // A client that verifies the server but has no certificate is refused by etcd.
    let ca = std::fs::read(d.join("ca.crt")).expect("read ca");
    let tls = etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(ca));
    let mut client = etcd_client::Client::connect(
        [etcd.endpoint()],
        Some(etcd_client::ConnectOptions::new().with_tls(tls)),
    )
    .await
    .expect("connect is lazy");
    assert!(
        client.get("/x", None).await.is_err(),
        "client without certificate accepted"
    );
    // Missing file: a clear error naming it.
    let mut missing = opts.clone();
    missing.certfile = Some(d.join("nope.crt"));
    let err = Registry::connect(&missing).await.expect_err("missing file");
    assert!(err.to_string().contains("nope.crt"), "{err}");
}

#[tokio::test]
async fn username_and_password_authenticate() {
    let etcd = start_etcd();
    etcd.etcdctl(&[
        "user",
        "add",
        "root",
        "--new-user-password=s3cret",
        "--interactive=false",
    ])
    .expect("user add");
    etcd.etcdctl(&["auth", "enable"]).expect("auth enable");
    etcd.etcdctl(&[
        "--user=root:s3cret",
        "put",
        "/coreos.com/network/config",
        r#"{"Network":"10.244.0.0/16"}"#,
    ])
    .expect("put as root");

    let mut opts = EtcdOptions::new(vec![etcd.endpoint()]);
    opts.username = Some("root".into());
    opts.password = Some("s3cret".into());
    let reg = Registry::connect(&opts)
        .await
        .expect("connect with password");
    assert_eq!(
        reg.get_config().await.expect("config"),
        r#"{"Network":"10.244.0.0/16"}"#
    );
    let mut m = weft::lease::etcd::manager::SubnetManager::new(reg, Default::default());
    m.acquire(&host_gw_conf(), &attrs(node_ip(1)), Previous::none())
        .await
        .expect("acquire with auth");

    opts.password = Some("wrong".into());
    let err = Registry::connect(&opts).await.expect_err("wrong password");
    assert!(
        err.to_string().ends_with(
            "etcd authentication failed for user root: invalid user name or password \
             (--etcd-username/--etcd-password)"
        ),
        "{err}"
    );

    let anon = registry(&etcd.endpoint()).await;
    let err = anon.get_config().await.expect_err("anonymous");
    assert_eq!(
        err.to_string(),
        "etcd get config: etcd requires authentication: set --etcd-username and --etcd-password"
    );
}
