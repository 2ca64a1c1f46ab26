//! The deployment files in `manifests/`, checked offline:
//! - `scripts/check-manifests.sh`: yamllint, kubernetes-validate `--strict` (bundled Kubernetes
//!   schemas) and `systemd-analyze verify`, and proof that each check rejects a broken copy;
//! - their contents against weft itself: the DaemonSet's arguments and environment parse as
//!   weft's command line, the ConfigMap's net-conf.json as weft's network config, its conflist
//!   entry as weft-cni's netconf; the systemd env file as weft's environment.
//!
//! The validators come from PyPI (`pip install kubernetes-validate yamllint`, done by
//! `scripts/test.sh` and `.ci/run`). Without them the first test is skipped with a message,
//! except under CI (`CI` set), where it fails.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use weft::cli::{self, Command as CliCommand, Options};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check_script(manifests: &Path) -> Output {
    Command::new(root().join("scripts/check-manifests.sh"))
        .env("MANIFESTS", manifests)
        .env("WEFT_BIN", env!("CARGO_BIN_EXE_weft"))
        .output()
        .expect("run scripts/check-manifests.sh")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// False (and a message) when the script said a tool is missing (exit 3) outside CI.
fn tools_present(out: &Output) -> bool {
    if out.status.code() != Some(3) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "validators missing under CI: {}",
        text(out)
    );
    eprintln!(
        "SKIPPED manifests_pass_the_offline_validators: {}(pip install kubernetes-validate yamllint)",
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

/// (file, what is broken, the edit, a word the failure must mention).
type BrokenCase = (&'static str, &'static str, fn(&str) -> String, &'static str);

/// A copy of manifests/ in a temp dir, with `edit` applied to `file` (relative path).
fn broken_copy(file: &str, edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_dir(&root().join("manifests"), tmp.path());
    let path = tmp.path().join(file);
    let original = std::fs::read_to_string(&path).expect("read");
    let changed = edit(&original);
    assert_ne!(original, changed, "the edit must change {file}");
    std::fs::write(&path, changed).expect("write");
    tmp
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let dst = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &dst);
        } else {
            std::fs::copy(entry.path(), &dst).expect("copy");
        }
    }
}

#[test]
fn manifests_pass_the_offline_validators() {
    let out = check_script(&root().join("manifests"));
    if !tools_present(&out) {
        return;
    }
    assert!(out.status.success(), "{}", text(&out));

    // Each validator really rejects something: an unknown DaemonSet field (schema), a line
    // yamllint refuses, a unit key systemd does not know.
    let cases: [BrokenCase; 3] = [
        (
            "kube-weft.yml",
            "schema",
            |s| s.replacen("hostNetwork: true", "hostNetwrk: true", 1),
            "hostNetwrk",
        ),
        (
            "kube-weft.yml",
            "yamllint",
            |s| s.replacen("  name: kube-weft\n", "  name: kube-weft   \n", 1),
            "trailing-spaces",
        ),
        (
            "systemd/weft.service",
            "systemd",
            |s| s.replacen("[Service]\n", "[Service]\nRestartt=always\n", 1),
            "Restartt",
        ),
    ];
    for (file, what, edit, needle) in cases {
        let tmp = broken_copy(file, edit);
        let out = check_script(tmp.path());
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
        assert!(text(&out).contains(needle), "{what}: {}", text(&out));
    }
}

/// The documents of kube-weft.yml as JSON (PyYAML through the script).
fn kube_weft_docs() -> Option<Vec<Value>> {
    let out = Command::new(root().join("scripts/check-manifests.sh"))
        .args(["json"])
        .arg(root().join("manifests/kube-weft.yml"))
        .output()
        .expect("run check-manifests.sh json");
    if out.status.code() == Some(3) {
        assert!(std::env::var_os("CI").is_none(), "{}", text(&out));
        eprintln!("SKIPPED: no python3 with PyYAML: {}", text(&out));
        return None;
    }
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    Some(v.as_array().expect("array").clone())
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in kube-weft.yml"))
}

fn run_options(args: &[String], env: &HashMap<String, String>) -> Options {
    match cli::parse(args, &|k| env.get(k).cloned()) {
        Ok(CliCommand::Run(opts)) => opts,
        other => panic!("weft does not run with {args:?} / {env:?}: {other:?}"),
    }
}

#[test]
fn daemonset_and_configmap_are_what_weft_understands() {
    let Some(docs) = kube_weft_docs() else {
        return;
    };
    let ns = find(&docs, "Namespace");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let ns_name = ns["metadata"]["name"].as_str().expect("name");
    for kind in ["ServiceAccount", "ConfigMap", "DaemonSet"] {
        assert_eq!(
            find(&docs, kind)["metadata"]["namespace"],
            ns_name,
            "{kind}"
        );
    }
    find(&docs, "ClusterRole");
    find(&docs, "ClusterRoleBinding");

    // ConfigMap: net-conf.json is a weft network config; the conflist's first plugin is the
    // flannel plugin, as weft-cni reads it (libcni adds name and cniVersion to each plugin).
    let data = &find(&docs, "ConfigMap")["data"];
    let net = net_conf::NetConf::parse(data["net-conf.json"].as_str().expect("net-conf.json"))
        .expect("net-conf.json parses as weft's config")
        .conf;
    assert_eq!(net.network, Some("10.244.0.0/16".parse().expect("net")));
    assert_eq!(net.backend.type_name(), "vxlan");
    let conflist: Value =
        serde_json::from_str(data["cni-conf.json"].as_str().expect("cni-conf.json"))
            .expect("conflist JSON");
    assert_eq!(conflist["plugins"][0]["type"], "flannel");
    assert_eq!(conflist["plugins"][1]["type"], "portmap");
    let mut entry = conflist["plugins"][0].clone();
    entry["name"] = conflist["name"].clone();
    entry["cniVersion"] = conflist["cniVersion"].clone();
    let netconf = weft::cni::conf::parse_netconf(entry.to_string().as_bytes())
        .expect("weft-cni accepts the conflist entry");
    weft::cni::conf::check_version(&netconf).expect("supported cniVersion");

    // DaemonSet: weft's own parser accepts the container's arguments with its environment.
    let ds = find(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    let container = pod["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "kube-weft")
        .expect("kube-weft container");
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect();
    let mut env = HashMap::new();
    for e in container["env"].as_array().expect("env") {
        let name = e["name"].as_str().expect("env name").to_owned();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_owned()
        } else if let Some(key) = e["valueFrom"]["configMapKeyRef"]["key"].as_str() {
            data[key]
                .as_str()
                .unwrap_or_else(|| panic!("env {name}: ConfigMap has no key {key}"))
                .to_owned()
        } else {
            continue; // fieldRef: set by the kubelet
        };
        env.insert(name, value);
    }
    let opts = run_options(&args, &env);
    assert!(!opts.kube_subnet_mgr, "weft has no kube subnet manager yet");
    assert_eq!(opts.etcd_endpoints.len(), 3, "{:?}", opts.etcd_endpoints);
    assert!(
        opts.etcd_endpoints
            .iter()
            .all(|e| e.starts_with("https://"))
    );
    assert_eq!(opts.healthz_ip.to_string(), "0.0.0.0");
    assert_eq!(opts.healthz_port, 8081);
    assert!(opts.ip_masq);
    assert_eq!(
        opts.net_config_path.as_deref(),
        Some(Path::new("/etc/kube-flannel/net-conf.json"))
    );

    // Mounts: the config and the etcd certificates are where the flags point.
    let mounts: HashMap<&str, &str> = container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().expect("n"),
                m["mountPath"].as_str().expect("p"),
            )
        })
        .collect();
    assert_eq!(
        mounts["weft-cfg"].trim_end_matches('/'),
        "/etc/kube-flannel"
    );
    assert_eq!(mounts["run"], "/run/flannel");
    assert_eq!(mounts["xtables-lock"], "/run/xtables.lock");
    for file in [&opts.etcd_cafile, &opts.etcd_certfile, &opts.etcd_keyfile] {
        let file = file.as_deref().expect("TLS file flag");
        assert_eq!(
            file.parent(),
            Some(Path::new(mounts["etcd-tls"])),
            "{file:?}"
        );
    }
    let host_paths: Vec<&str> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    for p in [
        "/run/flannel",
        "/opt/cni/bin",
        "/etc/cni/net.d",
        "/run/xtables.lock",
    ] {
        assert!(host_paths.contains(&p), "{p} not in {host_paths:?}");
    }

    // Probes on the health port weft listens on, resources as documented.
    let port = &container["ports"][0];
    assert_eq!(port["containerPort"], 8081);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], port["name"]);
    assert_eq!(container["resources"]["requests"]["memory"], "32Mi");
    assert_eq!(container["resources"]["limits"]["memory"], "64Mi");
    let caps = &container["securityContext"]["capabilities"]["add"];
    assert_eq!(caps, &serde_json::json!(["NET_ADMIN", "NET_RAW"]));

    // Init containers install the plugin under both names and the conflist flannel's way.
    let init = serde_json::to_string(&pod["initContainers"]).expect("json");
    for needle in [
        "/opt/bin/weft-cni",
        "for name in flannel weft-cni",
        "/etc/cni/net.d/10-flannel.conflist",
        "mv -f",
    ] {
        assert!(init.contains(needle), "{needle} not in init containers");
    }
}

#[test]
fn systemd_env_file_is_weft_configuration() {
    let text =
        std::fs::read_to_string(root().join("manifests/systemd/weft.env")).expect("weft.env");
    let mut env = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not KEY=VALUE: {line}"));
        assert!(k.starts_with("FLANNELD_"), "{k}");
        env.insert(k.to_owned(), v.to_owned());
    }
    let opts = run_options(&[], &env);
    assert_eq!(opts.etcd_endpoints.len(), 3);
    assert!(opts.etcd_keyfile.is_some() && opts.etcd_certfile.is_some());
    assert!(opts.ip_masq);
    assert_eq!(opts.healthz_port, 8081);
    assert_eq!(opts.subnet_file, Path::new("/run/flannel/subnet.env"));

    let unit = std::fs::read_to_string(root().join("manifests/systemd/weft.service"))
        .expect("weft.service");
    assert!(unit.contains("EnvironmentFile=/etc/weft/weft.env"));
    assert!(unit.contains("ExecStart=/usr/local/bin/weft\n"));
}
