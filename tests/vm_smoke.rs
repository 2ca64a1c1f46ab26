//! Smoke test of the VM test convention (see `scripts/vm-test.sh`): a `vm_*` test target needs
//! the full guest kernel, so its kernel-dependent tests are `#[ignore]`d on the host and the VM
//! harness runs them with `--include-ignored`.
//!
//! Run: `scripts/vm-test.sh` (all full-kernel tests) or
//! `scripts/vm-test.sh -- target/debug/deps/vm_smoke-<hash> --include-ignored`.

use std::process::{Command, Output};

const IP: &str = "/usr/sbin/ip";

fn ip(args: &[&str]) -> Output {
    Command::new(IP)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {IP} {args:?}: {e}"))
}

fn ip_ok(args: &[&str]) -> String {
    let out = ip(args);
    assert!(
        out.status.success(),
        "{IP} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace deleted on drop, also when the test panics.
struct Netns(String);

impl Netns {
    fn new(prefix: &str) -> Self {
        let name = format!("{prefix}-{}-{:04x}", std::process::id(), fastrand::u16(..));
        ip_ok(&["netns", "add", &name]);
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = ip(&["netns", "del", &self.0]);
        if !out.status.success() {
            eprintln!(
                "cleanup: ip netns del {}: {}",
                self.0,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
#[ignore = "needs the VM kernel (ipip): run scripts/vm-test.sh"]
fn guest_kernel_creates_flannel_style_ipip_device() {
    assert_eq!(
        std::env::var("WEFT_IN_VM").as_deref(),
        Ok("1"),
        "this test needs the VM kernel; run it through scripts/vm-test.sh"
    );
    let ns = Netns::new("vmsmoke");
    ip_ok(&[
        "-n",
        &ns.0,
        "link",
        "add",
        "flannel.ipip",
        "type",
        "ipip",
        "local",
        "198.18.0.1",
    ]);
    ip_ok(&["-n", &ns.0, "link", "set", "flannel.ipip", "up"]);
    let json = ip_ok(&["-n", &ns.0, "-j", "-d", "link", "show", "flannel.ipip"]);
    let links: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("ip -j output {json:?}: {e}"));
    let link = &links[0];
    assert_eq!(link["linkinfo"]["info_kind"], "ipip", "link: {link}");
    assert_eq!(
        link["linkinfo"]["info_data"]["local"], "198.18.0.1",
        "link: {link}"
    );
    assert_eq!(
        link["linkinfo"]["info_data"]["remote"], "any",
        "link: {link}"
    );
    // ipip header overhead: the tunnel MTU is the underlying default (1500) minus 20.
    assert_eq!(link["mtu"], 1480, "link: {link}");
}
