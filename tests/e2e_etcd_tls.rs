//! End to end with etcd over mutual TLS (`--client-cert-auth`) and with user/password: the
//! real weft binary in a lab node reaches a TLS etcd in the underlay with its certificates;
//! a wrong CA, a missing client certificate and a bad password each give one line naming the
//! cause, write no subnet.env and keep the agent retrying.
#[path = "common/certs.rs"]
mod certs;
#[path = "common/lab.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::wait_until;
use weft_testkit::etcd_server::{EtcdServer, EtcdServerOpts, EtcdTls};
use weft_testkit::lab::{Lab, LabSpec, Signal};

const READY: Duration = Duration::from_secs(30);
/// How long a bad credential may take to show in the log (the first contact is bounded by
/// 3 s, then attempts are retried with a backoff starting at 100 ms).
const CAUSE: Duration = Duration::from_secs(15);
const UNDERLAY_GATEWAY: &str = "198.18.0.254";
const CONFIG: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#;

/// A weft agent run by hand in a node namespace; killed on drop.
struct Agent {
    child: Child,
    log: PathBuf,
    subnet_file: PathBuf,
}

impl Agent {
    fn start(ns: &str, dir: &Path, name: &str, flags: &[String]) -> Agent {
        let log = dir.join(format!("{name}.log"));
        let subnet_file = dir.join(format!("{name}.env"));
        let out = std::fs::File::create(&log).expect("create log");
        let err = out.try_clone().expect("dup log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(common::weft_bin())
            .arg(format!("--subnet-file={}", subnet_file.display()))
            .arg(format!(
                "--peer-cache-file={}",
                dir.join(format!("{name}.peers")).display()
            ))
            .args(flags)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start weft");
        Agent {
            child,
            log,
            subnet_file,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `cause` on at least two attempts (the agent retries), then
    /// checks the agent still runs and wrote no subnet.env. Returns the first two such lines.
    fn expect_cause(&mut self, cause: &str) -> String {
        let res = wait_until(CAUSE, || {
            let log = self.log();
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(cause)).collect();
            if lines.len() >= 2 {
                Ok(format!("{}\n  {}", lines[0], lines[1]))
            } else {
                Err(format!("{} lines with the cause", lines.len()))
            }
        });
        let line = res.unwrap_or_else(|e| panic!("{cause:?}: {e}; log:\n{}", self.log()));
        assert!(
            self.child.try_wait().expect("status").is_none(),
            "agent exited; log:\n{}",
            self.log()
        );
        assert!(
            !self.subnet_file.exists(),
            "subnet.env written; log:\n{}",
            self.log()
        );
        line
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

#[test]
fn mutual_tls_works_and_each_bad_credential_names_its_cause() {
    if !common::need::root("mutual_tls_works_and_each_bad_credential_names_its_cause") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    certs::make_certs(d, &[UNDERLAY_GATEWAY, "127.0.0.1"]);
    let other = d.join("other");
    std::fs::create_dir(&other).expect("mkdir");
    certs::make_certs(&other, &[UNDERLAY_GATEWAY, "127.0.0.1"]);
    let endpoint_flag = |port: u16| format!("--etcd-endpoints=https://{UNDERLAY_GATEWAY}:{port}");
    let file_flag = |flag: &str, p: &Path| format!("--etcd-{flag}={}", p.display());

    // The agents get the TLS etcd's endpoint after the lab's own --etcd-endpoints (a later
    // flag wins). The port is chosen before the lab exists; a clash with the lab's etcd is
    // retried with another.
    let (mut lab, port) = loop {
        let port = free_port();
        let mut spec = LabSpec::new(1, common::weft_bin());
        spec.extra_flags = vec![
            endpoint_flag(port),
            file_flag("cafile", &d.join("ca.crt")),
            file_flag("certfile", &d.join("client.crt")),
            file_flag("keyfile", &d.join("client.key")),
        ];
        let lab = Lab::build(spec).expect("build lab");
        if !lab
            .etcd_endpoint()
            .expect("endpoint")
            .ends_with(&format!(":{port}"))
        {
            break (lab, port);
        }
    };
    let tls_etcd = EtcdServer::start(EtcdServerOpts {
        netns: Some(lab.underlay_ns().to_owned()),
        listen_ip: UNDERLAY_GATEWAY.parse().expect("ip"),
        client_port: Some(port),
        tls: Some(EtcdTls {
            ca_file: d.join("ca.crt"),
            cert_file: d.join("server.crt"),
            key_file: d.join("server.key"),
        }),
    })
    .expect("start TLS etcd");
    assert_eq!(
        tls_etcd.endpoint(),
        format!("https://{UNDERLAY_GATEWAY}:{port}")
    );
    tls_etcd
        .etcdctl(&["put", "/coreos.com/network/config", CONFIG])
        .expect("put config over TLS");

    // Good certificates: subnet.env, and the lease is in the TLS etcd (not the lab's).
    lab.start_node(1).expect("start node 1");
    if let Err(e) = lab.wait_subnet_env(1, READY) {
        panic!(
            "no subnet.env over mTLS: {e:#}; log:\n{}",
            lab.log_tail(1, 40)
        );
    }
    let subnet = lab.subnet(1).expect("subnet");
    let keys = tls_etcd
        .etcdctl(&[
            "get",
            "--prefix",
            "--keys-only",
            "/coreos.com/network/subnets",
        ])
        .expect("list leases");
    let want = format!(
        "/coreos.com/network/subnets/{}-{}",
        subnet.network(),
        subnet.prefix_len()
    );
    assert!(keys.lines().any(|l| l == want), "{want} not in {keys:?}");
    let lab_keys = lab
        .etcdctl(&[
            "get",
            "--prefix",
            "--keys-only",
            "/coreos.com/network/subnets",
        ])
        .expect("list lab leases");
    assert!(
        lab_keys.trim().is_empty(),
        "lease in the lab's etcd: {lab_keys}"
    );
    lab.stop_node(1, Signal::SIGTERM).expect("stop node 1");

    let ns = lab.node_ns(1).expect("ns").to_owned();
    let healthz = "--healthz-port=0".to_owned();

    // A wrong CA: the server certificate is not signed by it.
    let wrong_ca = other.join("ca.crt");
    let mut agent = Agent::start(
        &ns,
        d,
        "wrong-ca",
        &[
            endpoint_flag(port),
            file_flag("cafile", &wrong_ca),
            file_flag("certfile", &d.join("client.crt")),
            file_flag("keyfile", &d.join("client.key")),
            healthz.clone(),
        ],
    );
    let line = agent.expect_cause(&format!(
        "TLS: etcd's server certificate is not signed by the CA in --etcd-cafile ({})",
        wrong_ca.display()
    ));
    eprintln!("wrong CA: {line}");
    drop(agent);

    // No client certificate: an https endpoint with only the CA.
    let mut agent = Agent::start(
        &ns,
        d,
        "no-cert",
        &[
            endpoint_flag(port),
            file_flag("cafile", &d.join("ca.crt")),
            healthz.clone(),
        ],
    );
    let line = agent
        .expect_cause("etcd requires a client certificate: set --etcd-certfile and --etcd-keyfile");
    eprintln!("no client certificate: {line}");
    drop(agent);

    // A bad password: the lab's plain etcd with auth enabled.
    lab.etcdctl(&[
        "user",
        "add",
        "root",
        "--new-user-password=s3cret",
        "--interactive=false",
    ])
    .expect("user add");
    lab.etcdctl(&["auth", "enable"]).expect("auth enable");
    let mut agent = Agent::start(
        &ns,
        d,
        "bad-password",
        &[
            format!(
                "--etcd-endpoints={}",
                lab.etcd_endpoint().expect("endpoint")
            ),
            "--etcd-username=root".to_owned(),
            "--etcd-password=wrong".to_owned(),
            healthz,
        ],
    );
    let line = agent.expect_cause(
        "etcd authentication failed for user root: invalid user name or password \
         (--etcd-username/--etcd-password)",
    );
    eprintln!("bad password: {line}");
    drop(agent);

    drop(tls_etcd);
    lab.teardown().expect("teardown");
}
