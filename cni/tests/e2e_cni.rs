//! End to end for the CNI plugin: two weft nodes (vxlan) with a real etcd; in each node
//! namespace the built `weft-cni` is called as a runtime would call flannel's plugin, with
//! Debian's `bridge` and `host-local` plugins as delegates. Pods get addresses from their
//! node's subnet, ping each other across the overlay, CHECK passes (and fails on a wrong
//! prevResult), DEL removes the interface and the saved config.
//!
//! The error-path tests run the binary without namespaces and need no root.
#[path = "../../tests/common/lab.rs"]
mod common;

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{routes_in, wait_until};
use ipnet::Ipv4Net;
use serde_json::{Value, json};
use weft_testkit::lab::{Lab, LabSpec};

const READY: Duration = Duration::from_secs(30);
const CONVERGE: Duration = Duration::from_secs(15);
/// Debian's containernetworking-plugins.
const CNI_PATH: &str = "/usr/lib/cni";
/// The newest version Debian's plugins (1.1.1) speak; CHECK needs ≥ 0.4.0.
const CNI_VERSION: &str = "1.0.0";

fn cni_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weft-cni"))
}

/// What one plugin call returned.
#[derive(Debug)]
struct Reply {
    code: Option<i32>,
    stdout: String,
    /// Shown when an assertion prints the reply.
    #[allow(dead_code)]
    stderr: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    fn assert_ok(&self, what: &str) {
        assert_eq!(self.code, Some(0), "{what} failed: {self:?}");
    }
}

/// Environment of one call; `netns` is a path, `node_ns` the namespace the plugin runs in.
struct Call<'a> {
    node_ns: Option<&'a str>,
    command: &'a str,
    container_id: &'a str,
    netns: &'a str,
    path: &'a str,
    /// More variables for the plugin (and so for its delegate).
    extra: &'a [(&'a str, &'a str)],
}

impl Call<'_> {
    fn run(&self, netconf: &str) -> Reply {
        let mut cmd = match self.node_ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(cni_bin());
                c
            }
            None => Command::new(cni_bin()),
        };
        // Only what a runtime passes: no stray CNI_* from the test's own environment.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CNI_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("CNI_COMMAND", self.command)
            .env("CNI_CONTAINERID", self.container_id)
            .env("CNI_NETNS", self.netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", self.path)
            .envs(self.extra.iter().copied())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawn weft-cni");
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().expect("stdin");
            // The plugin does not read stdin for VERSION or after an environment error; a
            // runtime ignores that broken pipe too (Go's os/exec does).
            match stdin.write_all(netconf.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    panic!("write netconf: {e}")
                }
                _ => {}
            }
        }
        let out = child.wait_with_output().expect("wait weft-cni");
        Reply {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A network namespace for a pod, deleted on drop.
struct PodNs(String);

impl PodNs {
    fn add(name: String) -> PodNs {
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("ip netns add");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PodNs(name)
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }

    fn has_link(&self, name: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.0, "link", "show", name])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn ping(&self, dst: Ipv4Addr) -> Result<(), String> {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.0, "ping", "-n", "-q", "-c", "1", "-w", "2",
            ])
            .arg(dst.to_string())
            .output()
            .map_err(|e| format!("ping: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} → {dst}: {}",
                self.0,
                String::from_utf8_lossy(&out.stdout)
            ))
        }
    }
}

impl Drop for PodNs {
    fn drop(&mut self) {
        let out = Command::new("ip").args(["netns", "del", &self.0]).output();
        if let Ok(o) = out {
            if !o.status.success() {
                eprintln!(
                    "ip netns del {}: {}",
                    self.0,
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
    }
}

/// The conflist entry of kube-flannel.yml, pointed at the lab's subnet.env and temp dirs.
fn netconf(subnet_file: &Path, data_dir: &Path, ipam_dir: &Path) -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": "cbr0",
        "type": "flannel",
        "subnetFile": subnet_file,
        "dataDir": data_dir,
        "delegate": {"hairpinMode": true, "isDefaultGateway": true},
        "ipam": {"dataDir": ipam_dir},
    })
}

/// The IPv4 address (without prefix) of a CNI 1.0.0 result's first IP.
fn result_ip(result: &Value) -> Ipv4Net {
    let addr = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no ips[0].address in {result}"));
    addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"))
}

#[test]
fn pods_added_by_weft_cni_ping_across_vxlan_then_check_and_del() {
    if !common::need::root("pods_added_by_weft_cni_ping_across_vxlan_then_check_and_del") {
        return;
    }
    let mut spec = LabSpec::new(2, common::weft_bin());
    spec.backend = "vxlan".to_owned();
    let mut lab = Lab::build(spec).expect("build lab");
    lab.start_all().expect("start agents");
    for k in 1..=2 {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
    for (k, peer) in [(1, 2), (2, 1)] {
        let ns = lab.node_ns(k).expect("ns").to_owned();
        let dst = lab.subnet(peer).expect("subnet").to_string();
        wait_until(CONVERGE, || {
            let routes = routes_in(&ns)?;
            if routes.iter().any(|r| r["dst"] == dst.as_str()) {
                Ok(())
            } else {
                Err(format!("{ns} has no route to {dst}: {routes:?}"))
            }
        })
        .expect("vxlan route to the peer");
    }

    let tmp = tempfile::tempdir().expect("tempdir");
    let mut pods = Vec::new();
    let mut confs = Vec::new();
    let mut results = Vec::new();
    for k in 1..=2 {
        let pod = PodNs::add(format!("{}-c{k}", lab.name()));
        let data_dir = tmp.path().join(format!("flannel-{k}"));
        let ipam_dir = tmp.path().join(format!("ipam-{k}"));
        let conf = netconf(&lab.subnet_file(k).expect("path"), &data_dir, &ipam_dir);
        let node_ns = lab.node_ns(k).expect("ns").to_owned();
        let netns = pod.path();
        let cid = format!("pod{k}");
        let reply = Call {
            node_ns: Some(&node_ns),
            command: "ADD",
            container_id: &cid,
            netns: &netns,
            path: CNI_PATH,
            extra: &[],
        }
        .run(&conf.to_string());
        reply.assert_ok("ADD");
        let result = reply.json();
        assert_eq!(result["cniVersion"], CNI_VERSION, "{result}");

        // The pod's address comes from its node's subnet (host-local's first free: .2).
        let subnet = lab.subnet(k).expect("subnet");
        let ip = result_ip(&result);
        assert_eq!(ip.prefix_len(), 24, "{result}");
        assert!(subnet.contains(&ip.addr()), "{ip} outside {subnet}");
        assert_eq!(
            ip.addr(),
            Ipv4Addr::from(u32::from(subnet.network()) + 2),
            "{result}"
        );

        // The delegate config was saved (0600) and is flannel's rendering.
        let saved_path = data_dir.join(&cid);
        let meta = std::fs::metadata(&saved_path).expect("saved delegate config");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let saved: Value =
            serde_json::from_slice(&std::fs::read(&saved_path).expect("read")).expect("JSON");
        let env = lab.subnet_env(k).expect("subnet.env");
        assert_eq!(saved["type"], "bridge", "{saved}");
        assert_eq!(saved["name"], "cbr0", "{saved}");
        assert_eq!(saved["cniVersion"], CNI_VERSION, "{saved}");
        assert_eq!(saved["mtu"], env.mtu, "{saved}");
        assert_eq!(saved["ipMasq"], !env.ipmasq, "{saved}");
        assert_eq!(saved["isGateway"], true, "{saved}");
        assert_eq!(
            saved["ipam"],
            json!({
                "dataDir": ipam_dir,
                "ranges": [[{"subnet": subnet.to_string()}]],
                "routes": [{"dst": "10.244.0.0/16"}],
                "type": "host-local"
            })
        );

        // The pod's eth0 has the overlay's MTU (vxlan: 1450).
        let links: Value = serde_json::from_slice(
            &Command::new("ip")
                .args(["-n", &pod.0, "-j", "link", "show", "eth0"])
                .output()
                .expect("ip link")
                .stdout,
        )
        .expect("ip -j link");
        assert_eq!(links[0]["mtu"], env.mtu, "{links}");
        assert_eq!(env.mtu, 1450, "vxlan MTU");

        pods.push(pod);
        confs.push((conf, node_ns, cid));
        results.push(result);
    }

    // Pod to pod across the vxlan overlay, both ways.
    let ip1 = result_ip(&results[0]).addr();
    let ip2 = result_ip(&results[1]).addr();
    wait_until(CONVERGE, || pods[0].ping(ip2)).expect("pod 1 → pod 2");
    wait_until(CONVERGE, || pods[1].ping(ip1)).expect("pod 2 → pod 1");

    // CHECK with the runtime's prevResult passes; with a wrong one the delegate objects (so
    // CHECK really reached the bridge plugin).
    for (i, (conf, node_ns, cid)) in confs.iter().enumerate() {
        let netns = pods[i].path();
        let call = Call {
            node_ns: Some(node_ns),
            command: "CHECK",
            container_id: cid,
            netns: &netns,
            path: CNI_PATH,
            extra: &[],
        };
        let mut with_prev = conf.clone();
        with_prev["prevResult"] = results[i].clone();
        let reply = call.run(&with_prev.to_string());
        let known_plugin_bug = reply.code != Some(0)
            && reply.json()["msg"]
                .as_str()
                .is_some_and(|m| m.contains("GW:<nil>} not found in routing table"));
        if known_plugin_bug {
            // containernetworking/plugins < 1.3.0 (Debian 12 ships 1.1.1) cannot CHECK a
            // route without a gateway (plugins#886, fixed by #887), and flannel's routes
            // have none. Give the route the gateway the kernel has (the bridge's address),
            // as plugins ≥ 1.3.0 would accept.
            let gw = results[i]["ips"][0]["gateway"].clone();
            let mut fixed = results[i].clone();
            for r in fixed["routes"].as_array_mut().expect("routes") {
                if r.get("gw").is_none() {
                    r["gw"] = gw.clone();
                }
            }
            with_prev["prevResult"] = fixed;
            call.run(&with_prev.to_string())
                .assert_ok("CHECK (gateways filled in)");
        } else {
            reply.assert_ok("CHECK");
        }

        let mut wrong = results[i].clone();
        wrong["ips"][0]["address"] = json!("10.244.255.77/24");
        with_prev["prevResult"] = wrong;
        let reply = call.run(&with_prev.to_string());
        assert_ne!(
            reply.code,
            Some(0),
            "CHECK with a wrong prevResult: {reply:?}"
        );
        assert!(reply.json()["msg"].is_string(), "{reply:?}");
    }

    // DEL removes the pod's interface, host-local's reservation and the saved config; a
    // second DEL is still a success.
    for (i, (conf, node_ns, cid)) in confs.iter().enumerate() {
        let netns = pods[i].path();
        let call = Call {
            node_ns: Some(node_ns),
            command: "DEL",
            container_id: cid,
            netns: &netns,
            path: CNI_PATH,
            extra: &[],
        };
        call.run(&conf.to_string()).assert_ok("DEL");
        assert!(!pods[i].has_link("eth0"), "pod {i}'s eth0 still exists");
        let saved = tmp.path().join(format!("flannel-{}", i + 1)).join(cid);
        assert!(!saved.exists(), "{} still exists", saved.display());
        let ip = result_ip(&results[i]).addr().to_string();
        let reservation = tmp
            .path()
            .join(format!("ipam-{}", i + 1))
            .join("cbr0")
            .join(&ip);
        assert!(
            !reservation.exists(),
            "host-local still holds {}",
            reservation.display()
        );
        call.run(&conf.to_string()).assert_ok("second DEL");
    }

    drop(pods);
    lab.teardown().expect("teardown");
}

fn plain_call<'a>(command: &'a str, path: &'a str) -> Call<'a> {
    Call {
        node_ns: None,
        command,
        container_id: "c1",
        netns: "/var/run/netns/none",
        path,
        extra: &[],
    }
}

#[test]
fn missing_subnet_env_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let subnet_file = tmp.path().join("subnet.env");
    let data_dir = tmp.path().join("data");
    let conf = netconf(&subnet_file, &data_dir, &tmp.path().join("ipam"));
    let reply = plain_call("ADD", CNI_PATH).run(&conf.to_string());
    assert_eq!(reply.code, Some(1), "{reply:?}");
    let err = reply.json();
    assert_eq!(err["cniVersion"], CNI_VERSION, "{err}");
    assert!(err["code"].as_u64().is_some_and(|c| c > 0), "{err}");
    assert_eq!(
        err["msg"],
        format!(
            "failed to load flannel 'subnet.env' file: open {}: no such file or directory. \
             Check the flannel pod log for this node.",
            subnet_file.display()
        )
    );
    assert!(!data_dir.join("c1").exists(), "nothing is saved on failure");

    // An incomplete file names the file and the keys.
    std::fs::write(
        &subnet_file,
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_MTU=1450\n",
    )
    .expect("write");
    let reply = plain_call("ADD", CNI_PATH).run(&conf.to_string());
    assert_eq!(reply.code, Some(1), "{reply:?}");
    assert_eq!(
        reply.json()["msg"],
        format!(
            "failed to load flannel 'subnet.env' file: {} is missing FLANNEL_SUBNET or \
             FLANNEL_IPV6_SUBNET, FLANNEL_IPMASQ. Check the flannel pod log for this node.",
            subnet_file.display()
        )
    );
}

#[test]
fn version_del_without_state_and_bad_input() {
    // VERSION needs nothing else.
    let reply = plain_call("VERSION", "").run("");
    reply.assert_ok("VERSION");
    let v = reply.json();
    let versions: Vec<&str> = v["supportedVersions"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        versions.contains(&"0.3.1") && versions.contains(&"1.0.0"),
        "{v}"
    );

    // DEL of a container that was never added succeeds (nothing saved, no delegate run).
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf = netconf(
        &tmp.path().join("none.env"),
        &tmp.path().join("data"),
        &tmp.path().join("ipam"),
    );
    plain_call("DEL", "/nonexistent")
        .run(&conf.to_string())
        .assert_ok("DEL without saved state");
    // CHECK likewise (flannel's CHECK is a no-op).
    plain_call("CHECK", "/nonexistent")
        .run(&conf.to_string())
        .assert_ok("CHECK without saved state");

    // Missing CNI_PATH: code 4 naming the variable.
    let reply = plain_call("ADD", "").run(&conf.to_string());
    assert_eq!(reply.code, Some(1));
    assert_eq!(reply.json()["code"], 4, "{reply:?}");
    assert!(reply.stdout.contains("CNI_PATH"), "{reply:?}");

    // A container ID that is not a plain file name is refused.
    let mut call = plain_call("DEL", CNI_PATH);
    call.container_id = "../../etc/passwd";
    let reply = call.run(&conf.to_string());
    assert_eq!(reply.json()["code"], 4, "{reply:?}");

    // A delegate with a name of its own is refused, naming the field.
    let bad = json!({"cniVersion": "1.0.0", "name": "n", "delegate": {"name": "x"}});
    let reply = plain_call("ADD", CNI_PATH).run(&bad.to_string());
    assert!(
        reply.json()["msg"]
            .as_str()
            .is_some_and(|m| m.contains("'name'")),
        "{reply:?}"
    );

    // CHECK below 0.4.0 is refused as libcni does.
    let mut old = conf.clone();
    old["cniVersion"] = json!("0.3.1");
    let reply = plain_call("CHECK", CNI_PATH).run(&old.to_string());
    assert_eq!(reply.json()["code"], 1, "{reply:?}");
}

/// The exec plumbing with a recording delegate (a shell script in a temp CNI_PATH): the
/// delegate gets the saved config on stdin, CNI_COMMAND and the other CNI_* variables, and
/// its stdout and exit status become the plugin's; DEL keeps the saved config when the
/// delegate fails and removes it when it succeeds.
#[test]
fn delegate_gets_the_config_and_env_and_its_output_passes_through() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let record = tmp.path().join("record");
    let script = bin.join("recorder");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat > {rec}.$CNI_COMMAND.stdin\n\
             echo \"$CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME $CNI_NETNS\" > {rec}.$CNI_COMMAND.env\n\
             echo '{{\"cniVersion\":\"1.0.0\",\"from\":\"recorder\"}}'\n\
             exit ${{RECORDER_EXIT:-0}}\n",
            rec = record.display()
        ),
    )
    .expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let subnet_file = tmp.path().join("subnet.env");
    std::fs::write(
        &subnet_file,
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.9.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
    )
    .expect("write subnet.env");
    let data_dir = tmp.path().join("data");
    let conf = json!({
        "cniVersion": "1.0.0", "name": "net", "type": "flannel",
        "subnetFile": subnet_file, "dataDir": data_dir,
        "delegate": {"type": "recorder"},
    });
    let path = bin.display().to_string();

    let reply = plain_call("ADD", &path).run(&conf.to_string());
    reply.assert_ok("ADD");
    assert_eq!(
        reply.stdout.trim(),
        r#"{"cniVersion":"1.0.0","from":"recorder"}"#
    );
    let sent = std::fs::read_to_string(format!("{}.ADD.stdin", record.display())).expect("stdin");
    let saved = std::fs::read_to_string(data_dir.join("c1")).expect("saved");
    assert_eq!(sent, saved, "the delegate gets exactly the saved config");
    let sent: Value = serde_json::from_str(&sent).expect("JSON");
    assert_eq!(sent["type"], "recorder");
    assert_eq!(sent["ipMasq"], false);
    assert_eq!(
        sent["ipam"]["ranges"],
        json!([[{"subnet": "10.244.9.0/24"}]])
    );
    assert!(
        sent.get("isGateway").is_none(),
        "only bridge gets isGateway"
    );
    assert_eq!(
        std::fs::read_to_string(format!("{}.ADD.env", record.display()))
            .expect("env")
            .trim(),
        "ADD c1 eth0 /var/run/netns/none"
    );

    // A failing delegate DEL: its output and status pass through, the saved config stays.
    let mut call = plain_call("DEL", &path);
    call.extra = &[("RECORDER_EXIT", "3")];
    let failing = call.run(&conf.to_string());
    assert_eq!(failing.code, Some(3), "{failing:?}");
    assert_eq!(
        failing.stdout.trim(),
        r#"{"cniVersion":"1.0.0","from":"recorder"}"#
    );
    assert!(data_dir.join("c1").exists(), "kept for a retry");

    plain_call("DEL", &path)
        .run(&conf.to_string())
        .assert_ok("DEL");
    assert!(
        !data_dir.join("c1").exists(),
        "removed after a successful DEL"
    );
    let del_in =
        std::fs::read_to_string(format!("{}.DEL.stdin", record.display())).expect("DEL stdin");
    assert_eq!(del_in, saved, "DEL replays the saved config");

    // A delegate that is not in CNI_PATH is named in the error.
    let mut other = conf.clone();
    other["delegate"]["type"] = json!("nosuchplugin");
    let reply = plain_call("ADD", &path).run(&other.to_string());
    assert_eq!(reply.code, Some(1));
    assert!(
        reply.json()["msg"]
            .as_str()
            .is_some_and(|m| m.contains("\"nosuchplugin\"") && m.contains(&path)),
        "{reply:?}"
    );
}
