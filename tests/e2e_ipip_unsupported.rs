//! ipip where it cannot run, with the real weft binary, a real etcd and a node namespace:
//! - on a kernel without ipip (no CONFIG_NET_IPIP, no module: the development and CI kernel)
//!   weft must exit 1 at start with one clear line naming the missing kernel support, and leave
//!   nothing behind: no `flannel.ipip`, no lease in etcd, no subnet.env;
//! - a `flannel.ipip` of another type is refused with flannel's message and left alone (any
//!   kernel).
//!
//! Runs in plain `cargo test`. `scripts/vm-test.sh` runs this target in the VM too (its name
//! starts with `e2e_ipip`), where the kernel has ipip on purpose: there the first test says it
//! does not apply and returns. On the host a kernel with ipip is a missing requirement like root
//! (`weft_testkit::need`): a failure under `CI=true`, since nothing would check this path.
#[path = "common/lab.rs"]
mod common;

use std::process::Command;
use std::time::Duration;

use weft_testkit::lab::{Lab, LabSpec};

/// A debug build on a shared machine: generous, still bounded.
const EXIT: Duration = Duration::from_secs(30);

/// The line weft must print (backends::ipip::NO_KERNEL_SUPPORT, spelled out so a change of
/// the message is a visible test change).
const MESSAGE: &str =
    "this kernel has no ipip support (CONFIG_NET_IPIP): use Backend.Type vxlan or host-gw";

/// A network namespace deleted on drop, also when the test panics.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Whether this kernel can make an ipip device (tried in a scratch namespace). With a `local`
/// address: a tunnel with local and remote "any" would clash with the namespace's fallback
/// `tunl0` (EEXIST) on a kernel that has ipip.
fn kernel_has_ipip() -> bool {
    let ns = Netns(format!(
        "ipipprobe-{}-{:04x}",
        std::process::id(),
        fastrand::u16(..)
    ));
    let added = Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .expect("ip netns add");
    assert!(added.success(), "ip netns add {} failed", ns.0);
    let args = [
        "-n",
        &ns.0,
        "link",
        "add",
        "t0",
        "type",
        "ipip",
        "local",
        "198.18.0.1",
    ];
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip link add t0 type ipip");
    if out.status.success() {
        return true;
    }
    let err = String::from_utf8_lossy(&out.stderr);
    // iproute2's words for EOPNOTSUPP on an unknown link kind.
    assert!(
        err.contains("Unknown device type") || err.contains("not supported"),
        "ip {args:?} failed for another reason than missing ipip: {err}"
    );
    false
}

#[test]
fn ipip_on_a_kernel_without_ipip_exits_1_with_one_clear_line_and_leaves_nothing() {
    const TEST: &str = "ipip_on_a_kernel_without_ipip_exits_1";
    if !common::need::root(TEST) {
        return;
    }
    if kernel_has_ipip() {
        if std::env::var("WEFT_IN_VM").as_deref() == Ok("1") {
            // Not a missing requirement: the VM boots a kernel with ipip on purpose (for
            // tests/e2e_ipip.rs) and runs this whole target; the host run checks this test.
            common::need::not_applicable(
                TEST,
                "the VM's kernel has ipip; the host run checks this test",
            );
            return;
        }
        common::need::missing(
            TEST,
            "a kernel without ipip (this one has CONFIG_NET_IPIP)",
            "run it on a kernel without ipip (the project's development and CI kernel), or on a \
             modular kernel unload and block the module: `modprobe -r ipip` and \
             `echo 'install ipip /bin/false' > /etc/modprobe.d/no-ipip.conf`",
        );
        return;
    }
    let mut spec = LabSpec::new(1, common::weft_bin());
    spec.backend = "ipip".to_owned();
    let mut lab = Lab::build(spec).expect("build lab");
    lab.start_node(1).expect("start");
    let status = lab
        .wait_node_exit(1, EXIT)
        .expect("weft must exit on a kernel without ipip");
    let log = lab.log(1).expect("log");
    assert_eq!(status.code(), Some(1), "exit status {status}; log:\n{log}");

    // One line says it, at error level, and names the kernel option and the alternatives.
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("ipip support")).collect();
    assert_eq!(
        lines.len(),
        1,
        "want one line about ipip support; log:\n{log}"
    );
    eprintln!("weft said: {}", lines[0]);
    assert!(lines[0].contains(MESSAGE), "line: {}", lines[0]);
    assert!(
        lines[0].contains("ERROR"),
        "not an error line: {}",
        lines[0]
    );
    // Nothing else went wrong first (no other error line).
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors, lines, "log:\n{log}");

    // No device in the node (nothing named flannel.ipip, whatever its type).
    let links = lab.ip_json(1, &["link", "show"]).expect("ip -j link");
    let names: Vec<&str> = links
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|l| l["ifname"].as_str())
        .collect();
    assert!(
        !names.contains(&"flannel.ipip"),
        "flannel.ipip left behind: {names:?}"
    );
    assert!(names.contains(&"eth0"), "ip link lists the node: {names:?}");

    // No lease taken: nothing under <prefix>/subnets/, while the config is there.
    let keys = lab
        .etcdctl(&[
            "get",
            "/coreos.com/network/subnets/",
            "--prefix",
            "--keys-only",
        ])
        .expect("etcdctl get subnets");
    assert!(keys.trim().is_empty(), "leases in etcd: {keys:?}");
    let config = lab
        .etcdctl(&["get", "/coreos.com/network/config", "--print-value-only"])
        .expect("etcdctl get config");
    assert!(config.contains("\"ipip\""), "config: {config:?}");

    assert!(
        !lab.subnet_file(1).expect("path").exists(),
        "no subnet.env without a lease"
    );
    lab.teardown().expect("teardown");
}

#[test]
fn an_existing_flannel_ipip_of_another_type_is_refused_and_left_alone() {
    if !common::need::root("an_existing_flannel_ipip_of_another_type_is_refused") {
        return;
    }
    let mut spec = LabSpec::new(1, common::weft_bin());
    spec.backend = "ipip".to_owned();
    let mut lab = Lab::build(spec).expect("build lab");
    lab.ip(1, &["link", "add", "flannel.ipip", "type", "bridge"])
        .expect("someone else's flannel.ipip");
    lab.start_node(1).expect("start");
    let status = lab
        .wait_node_exit(1, EXIT)
        .expect("weft must exit when flannel.ipip is not an ipip device");
    let log = lab.log(1).expect("log");
    assert_eq!(status.code(), Some(1), "exit status {status}; log:\n{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one error line; log:\n{log}");
    assert!(
        errors[0]
            .contains("flannel.ipip isn't an ipip mode device, please remove device and try again"),
        "line: {}",
        errors[0]
    );
    // Not deleted: it is not weft's.
    let link = lab
        .ip_json(1, &["-d", "link", "show", "flannel.ipip"])
        .expect("flannel.ipip is still there");
    assert_eq!(link[0]["linkinfo"]["info_kind"], "bridge", "{link}");
    let keys = lab
        .etcdctl(&[
            "get",
            "/coreos.com/network/subnets/",
            "--prefix",
            "--keys-only",
        ])
        .expect("etcdctl get subnets");
    assert!(keys.trim().is_empty(), "leases in etcd: {keys:?}");
    lab.teardown().expect("teardown");
}
