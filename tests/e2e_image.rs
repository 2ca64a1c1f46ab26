//! The DaemonSet's image, end to end: `scripts/image.sh` builds `localhost/weft:<version>` (the
//! base root filesystem cached between runs), podman runs it as the agent of node 1 of a 3-node
//! lab (`--network ns:/run/netns/<node>`, only NET_ADMIN and NET_RAW added, as the DaemonSet
//! grants), nodes 2 and 3 run the binary. Pods ping every pair; `podman restart` keeps node 1's
//! subnet and loses no ping; `/healthz` answers on the node; `weft install-cni` in the image fills
//! a temporary "host" directory pair as the init container would, and refuses a read-only one.
//!
//! Needs root and podman (the script installs podman, mmdebstrap and runc when missing).
#[path = "common/lab.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{http_get_in_netns, wait_until};
use weft_testkit::lab::{Lab, LabSpec};

const READY: Duration = Duration::from_secs(60);
/// Where scripts/image.sh leaves the podman configuration it builds with (runc, ulimits).
const CONTAINERS_CONF: &str = "/var/lib/weft-image/containers.conf";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .env("CONTAINERS_CONF", CONTAINERS_CONF)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("podman {}: {e}", args.join(" ")))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Builds the image (release binaries, cached base); returns its reference.
fn build_image() -> String {
    let out = Command::new(repo().join("scripts/image.sh"))
        .current_dir(repo())
        .output()
        .expect("run scripts/image.sh");
    assert!(
        out.status.success(),
        "scripts/image.sh failed:\n{}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let image = stdout.lines().last().expect("the image reference").trim();
    assert!(image.starts_with("localhost/weft:"), "{stdout}");
    image.to_owned()
}

/// The container running node 1's agent, removed on drop.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--time", "2", &self.0]);
    }
}

#[test]
fn the_image_runs_as_a_lab_node_and_installs_the_cni_files() {
    if !common::need::root("the_image_runs_as_a_lab_node_and_installs_the_cni_files") {
        return;
    }
    let image = build_image();
    let mut lab = Lab::build(LabSpec::new(3, common::weft_bin())).expect("build lab");
    let ns1 = lab.node_ns(1).expect("ns").to_owned();
    let dir = lab.dir().display().to_string();
    let name = format!("{}-agent", lab.name());
    let port = lab.spec().healthz_port;
    let out = podman(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--network",
        &format!("ns:/run/netns/{ns1}"),
        "--cap-drop",
        "all",
        "--cap-add",
        "NET_ADMIN",
        "--cap-add",
        "NET_RAW",
        "--volume",
        &format!("{dir}:{dir}"),
        "--env",
        "NO_COLOR=1",
        &image,
        &format!("--etcd-endpoints={}", lab.etcd_endpoint().expect("etcd")),
        &format!(
            "--subnet-file={}",
            lab.subnet_file(1).expect("path").display()
        ),
        &format!(
            "--peer-cache-file={}",
            lab.peer_cache_file(1).expect("path").display()
        ),
        &format!("--healthz-port={port}"),
    ]);
    assert!(out.status.success(), "podman run: {}", text(&out));
    let container = Container(name);
    let logs = || text(&podman(&["logs", &container.0]));
    for k in 2..=3 {
        lab.start_node(k).expect("start node");
    }
    // Node 1's agent is the container, not the lab's process: its subnet file is read directly.
    wait_until(READY, || lab.subnet_env(1).map_err(|e| format!("{e:#}")))
        .unwrap_or_else(|e| panic!("node 1: {e}; its container log:\n{}", logs()));
    for k in 2..=3 {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
    let subnet = lab.subnet(1).expect("subnet");
    lab.add_pods().expect("pods");
    wait_until(READY, || {
        let failed: Vec<_> = lab
            .ping_matrix()
            .map_err(|e| format!("{e:#}"))?
            .into_iter()
            .filter(|(_, _, ok)| !ok)
            .collect();
        failed
            .is_empty()
            .then_some(())
            .ok_or(format!("pairs without replies: {failed:?}"))
    })
    .unwrap_or_else(|e| panic!("{e}; node 1's container log:\n{}", logs()));
    let (code, body) = wait_until(READY, || http_get_in_netns(&ns1, port, "/healthz"))
        .expect("/healthz on node 1");
    assert_eq!(code, 200, "{body}");

    // podman restart: the agent stops (SIGTERM) and starts again with its lease; pods keep
    // talking through it all.
    let (from, to) = (
        lab.pod_ns(2).expect("pod").to_owned(),
        lab.pod_ip(1).expect("pod").to_string(),
    );
    let pinger = std::thread::spawn(move || common::ping_replies(&from, &to, 100));
    std::thread::sleep(Duration::from_millis(500));
    let out = podman(&["restart", "--time", "10", &container.0]);
    assert!(out.status.success(), "podman restart: {}", text(&out));
    let replies = pinger.join().expect("pinger");
    assert_eq!(
        replies,
        100,
        "pings lost across podman restart; log:\n{}",
        logs()
    );
    assert_eq!(
        lab.subnet(1).expect("subnet"),
        subnet,
        "node 1 kept its subnet"
    );
    let (code, _) = wait_until(READY, || http_get_in_netns(&ns1, port, "/readyz"))
        .expect("/readyz after the restart");
    assert_eq!(code, 200);

    // The init container's job: a temporary "host" /opt/cni/bin and /etc/cni/net.d.
    let host = tempfile::tempdir().expect("tempdir");
    install_cni_fills_the_host_dirs(&image, host.path());
}

fn install_cni_fills_the_host_dirs(image: &str, host: &Path) {
    let (bin, netd, conf) = (host.join("bin"), host.join("net.d"), host.join("conf"));
    for d in [&bin, &netd, &conf] {
        std::fs::create_dir(d).expect("mkdir");
    }
    let conflist = r#"{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}]}"#;
    std::fs::write(conf.join("cni-conf.json"), conflist).expect("conf");
    let mount = |from: &Path, to: &str, ro: bool| {
        format!("{}:{to}{}", from.display(), if ro { ":ro" } else { "" })
    };
    let run = |netd_ro: bool| {
        podman(&[
            "run",
            "--rm",
            "--volume",
            &mount(&bin, "/opt/cni/bin", false),
            "--volume",
            &mount(&netd, "/etc/cni/net.d", netd_ro),
            "--volume",
            &mount(&conf, "/etc/kube-flannel", true),
            image,
            "install-cni",
        ])
    };
    let out = run(false);
    assert!(out.status.success(), "install-cni: {}", text(&out));
    let plugin = std::fs::read(repo().join("target/release/weft-cni")).expect("weft-cni");
    for name in ["flannel", "weft-cni"] {
        assert!(
            std::fs::read(bin.join(name)).expect("installed plugin") == plugin,
            "{name} is not the image's weft-cni"
        );
    }
    assert_eq!(
        std::fs::read_to_string(netd.join("10-flannel.conflist")).expect("conflist"),
        conflist
    );
    // A read-only /etc/cni/net.d: one clear error, exit 1.
    std::fs::remove_file(netd.join("10-flannel.conflist")).expect("rm");
    let out = run(true);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("/etc/cni/net.d is read-only"),
        "{}",
        text(&out)
    );
}
