//! The deployment files in `manifests/`, checked offline:
//! - `scripts/check-manifests.sh`: yamllint, kubernetes-validate `--strict` (bundled Kubernetes
//!   schemas) and `systemd-analyze verify`, and proof that each check rejects a broken copy;
//! - their contents against weft itself: the DaemonSet's arguments and environment parse as
//!   weft's command line, the ConfigMap's net-conf.json as weft's network config, its conflist
//!   entry as weft-cni's netconf; the systemd env file as weft's environment;
//! - docs/deploy.md's binary deployment run for real in namespaces (root): openssl PKI, a
//!   3-member etcd cluster with TLS, weft configured by the shipped env file, `weft docker-opts`.
//!
//! The validators come from PyPI (`pip install kubernetes-validate yamllint`, done by
//! `scripts/test.sh` and `.ci/run`). Without them the tests that use them fail under CI and are
//! skipped with a message elsewhere (`weft_testkit::need`).
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use weft::cli::{self, Command as CliCommand, Options};
use weft_testkit::need;

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

/// False when the script said a tool is missing (exit 3): fails under CI, `SKIPPED` elsewhere.
fn tools_present(out: &Output) -> bool {
    if out.status.code() != Some(3) {
        return true;
    }
    need::missing(
        "manifests_pass_the_offline_validators",
        &format!(
            "a validator ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        "`scripts/test.sh` installs them (or `python3 -m pip install kubernetes-validate yamllint`)",
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

/// The documents of `manifests/<file>` as JSON (PyYAML through the script), for `test`.
fn manifest_docs(test: &str, file: &str) -> Option<Vec<Value>> {
    let out = Command::new(root().join("scripts/check-manifests.sh"))
        .args(["json"])
        .arg(root().join("manifests").join(file))
        .output()
        .expect("run check-manifests.sh json");
    if out.status.code() == Some(3) {
        need::missing(
            test,
            &format!(
                "python3 with PyYAML ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            "`scripts/test.sh` installs it (Debian: `apt-get install python3-yaml`)",
        );
        return None;
    }
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    Some(v.as_array().expect("array").clone())
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the manifest"))
}

fn run_options(args: &[String], env: &HashMap<String, String>) -> Options {
    match cli::parse(args, &|k| env.get(k).cloned()) {
        Ok(CliCommand::Run(opts)) => opts,
        other => panic!("weft does not run with {args:?} / {env:?}: {other:?}"),
    }
}

#[test]
fn kube_mode_daemonset_runs_the_kube_subnet_manager_with_kube_flannels_rbac() {
    let test = "kube_mode_daemonset_runs_the_kube_subnet_manager_with_kube_flannels_rbac";
    let Some(docs) = manifest_docs(test, "kube-weft.yml") else {
        return;
    };
    let (opts, mounts, env) = daemonset_checks(&docs);
    assert!(opts.kube_subnet_mgr, "kube-weft.yml runs --kube-subnet-mgr");
    // The config is the ConfigMap's file at flannel's default path.
    assert_eq!(opts.net_config_path, None);
    assert_eq!(
        opts.net_config_path_or_default(),
        Path::new("/etc/kube-flannel/net-conf.json")
    );
    assert!(mounts.keys().all(|m| m != "etcd-tls"), "{mounts:?}");
    // The node is found by NODE_NAME or through the pod, both from the downward API.
    for name in ["NODE_NAME", "POD_NAME", "POD_NAMESPACE"] {
        assert!(env.contains(&name.to_string()), "{name} not in {env:?}");
    }
    // RBAC: exactly what kube-flannel's ClusterRole grants, which is all kube mode calls.
    let rules = &find(&docs, "ClusterRole")["rules"];
    let mut grants: Vec<(String, String)> = Vec::new();
    for r in rules.as_array().expect("rules") {
        assert_eq!(r["apiGroups"], serde_json::json!([""]), "{r}");
        for res in r["resources"].as_array().expect("resources") {
            for verb in r["verbs"].as_array().expect("verbs") {
                grants.push((
                    verb.as_str().expect("verb").to_owned(),
                    res.as_str().expect("resource").to_owned(),
                ));
            }
        }
    }
    grants.sort();
    let mut want: Vec<(String, String)> = weft_testkit::kube_api::FLANNEL_GRANTS
        .iter()
        .map(|(v, r)| (v.to_string(), r.to_string()))
        .collect();
    want.sort();
    assert_eq!(grants, want);
}

#[test]
fn etcd_mode_daemonset_and_configmap_are_what_weft_understands() {
    let test = "etcd_mode_daemonset_and_configmap_are_what_weft_understands";
    let Some(docs) = manifest_docs(test, "kube-weft-etcd.yml") else {
        return;
    };
    let (opts, mounts, _) = daemonset_checks(&docs);
    assert!(!opts.kube_subnet_mgr, "kube-weft-etcd.yml is etcd mode");
    assert_eq!(opts.etcd_endpoints.len(), 3, "{:?}", opts.etcd_endpoints);
    assert!(
        opts.etcd_endpoints
            .iter()
            .all(|e| e.starts_with("https://"))
    );
    assert_eq!(
        opts.net_config_path.as_deref(),
        Some(Path::new("/etc/kube-flannel/net-conf.json"))
    );
    // The etcd certificates are where the flags point.
    for file in [&opts.etcd_cafile, &opts.etcd_certfile, &opts.etcd_keyfile] {
        let file = file.as_deref().expect("TLS file flag");
        assert_eq!(
            file.parent(),
            Some(Path::new(mounts["etcd-tls"].as_str())),
            "{file:?}"
        );
    }
}

/// What both DaemonSets share: namespace, ConfigMap, pod settings, the container's arguments
/// as weft parses them (returned with the container's mounts and env names), host paths,
/// probes, resources and init containers.
fn daemonset_checks(docs: &[Value]) -> (Options, HashMap<String, String>, Vec<String>) {
    let docs = docs.to_vec();
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
    let netconf = weft_cni::conf::parse_netconf(entry.to_string().as_bytes())
        .expect("weft-cni accepts the conflist entry");
    weft_cni::conf::check_version(&netconf).expect("supported cniVersion");

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
    let env_names: Vec<String> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| e["name"].as_str().expect("env name").to_owned())
        .collect();
    let opts = run_options(&args, &env);
    assert_eq!(opts.healthz_ip.to_string(), "0.0.0.0");
    assert_eq!(opts.healthz_port, 8081);
    assert!(opts.ip_masq);

    // Mounts: the config where --net-config-path points.
    let mounts: HashMap<String, String> = container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().expect("n").to_owned(),
                m["mountPath"].as_str().expect("p").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        mounts["weft-cfg"].trim_end_matches('/'),
        "/etc/kube-flannel"
    );
    assert_eq!(mounts["run"], "/run/flannel");
    assert_eq!(mounts["xtables-lock"], "/run/xtables.lock");
    // The peer cache survives the pod (a boot without etcd or API server uses it).
    let cache = opts.peer_cache_file.as_deref().expect("peer cache file");
    assert_eq!(
        cache.parent(),
        Some(Path::new(mounts["peer-cache"].as_str())),
        "{cache:?} is not on the peer-cache mount: {mounts:?}"
    );
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
        "/var/lib/weft",
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

    // One init container, `weft install-cni` of the same image, with its default paths
    // mounted: the host's plugin and config directories and the ConfigMap.
    let init = pod["initContainers"].as_array().expect("initContainers");
    assert_eq!(init.len(), 1, "{init:?}");
    assert_eq!(
        init[0]["command"],
        serde_json::json!(["/opt/bin/weft", "install-cni"])
    );
    assert_eq!(init[0]["image"], container["image"]);
    let defaults = match weft::cli::parse(&["install-cni".to_owned()], &|_| None) {
        Ok(weft::cli::Command::InstallCni(a)) => a,
        other => panic!("{other:?}"),
    };
    let init_mounts: Vec<&str> = init[0]["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .map(|p| p.trim_end_matches('/'))
        .collect();
    for dir in [
        defaults.bin_dir.as_path(),
        defaults.conf_dir.as_path(),
        defaults.conf.parent().expect("dir"),
    ] {
        assert!(
            init_mounts.contains(&dir.to_str().expect("utf-8")),
            "{} is not mounted in the init container: {init_mounts:?}",
            dir.display()
        );
    }
    assert_eq!(defaults.conf_name, "10-flannel.conflist");
    // The image scripts/image.sh builds.
    assert_eq!(
        container["image"],
        format!("localhost/weft:{}", env!("CARGO_PKG_VERSION"))
    );
    (opts, mounts, env_names)
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
    // weft sends READY=1 (tests/e2e_sd_notify.rs), as flanneld does for its Type=notify units.
    assert!(unit.contains("\nType=notify\n"), "{unit}");
    assert!(unit.contains("\nWatchdogSec="), "{unit}");
}

// ===== the binary-deployment walk-through of docs/deploy.md, run for real =====

/// Runs a command, panics with its output unless it succeeds; returns stdout.
fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(ns: &str, args: &[&str]) -> String {
    sh(Command::new("ip").arg("-n").arg(ns).args(args))
}

fn in_ns(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c
}

/// Namespaces deleted on drop (after the processes in them were stopped).
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: String) -> String {
        sh(Command::new("ip").args(["netns", "add", &name]));
        self.0.push(name.clone());
        ip(&name, &["link", "set", "lo", "up"]);
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.0.iter().rev() {
            if let Ok(o) = Command::new("ip").args(["netns", "del", ns]).output() {
                if !o.status.success() {
                    eprintln!("ip netns del {ns}: {}", String::from_utf8_lossy(&o.stderr));
                }
            }
        }
    }
}

/// Child processes, SIGTERMed and reaped on drop.
struct Procs(Vec<(String, std::process::Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (name, child) in &mut self.0 {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    _ => {
                        eprintln!("{name} did not stop on SIGTERM: killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

fn poll<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The openssl commands of docs/deploy.md §1 for members at `ips` (one cert each) and a client.
fn make_pki(dir: &Path, ips: &[&str]) {
    let openssl = |args: &[&str]| sh(Command::new("openssl").current_dir(dir).args(args));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "3650",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=weft-etcd-ca",
    ]);
    let mut certs = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let n = format!("etcd{}", i + 1);
        std::fs::write(
            dir.join(format!("{n}.cnf")),
            format!(
                "basicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\n\
                 extendedKeyUsage = serverAuth, clientAuth\n\
                 subjectAltName = IP:{ip}, IP:127.0.0.1, DNS:{n}, DNS:localhost\n"
            ),
        )
        .expect("write cnf");
        certs.push(n);
    }
    std::fs::write(
        dir.join("client.cnf"),
        "basicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\n\
         extendedKeyUsage = clientAuth\n",
    )
    .expect("write cnf");
    certs.push("client".to_owned());
    for n in &certs {
        let cn = if n == "client" {
            "/CN=weft".to_owned()
        } else {
            format!("/CN={n}")
        };
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{n}-key.pem"),
            "-out",
            &format!("{n}.csr"),
            "-subj",
            &cn,
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{n}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "1825",
            "-extfile",
            &format!("{n}.cnf"),
            "-out",
            &format!("{n}.pem"),
        ]);
    }
    let mut verify = vec!["verify", "-CAfile", "ca.pem"];
    let pems: Vec<String> = certs.iter().map(|n| format!("{n}.pem")).collect();
    verify.extend(pems.iter().map(String::as_str));
    openssl(&verify);
}

/// docs/deploy.md's binary deployment in namespaces: three etcd members with TLS (client and
/// peer), the config written with etcdctl over TLS, two nodes running weft configured only by
/// manifests/systemd/weft.env (addresses and paths swapped for the lab's), vxlan routes between
/// them, and `weft docker-opts` on each node.
#[test]
fn binary_deployment_walkthrough_with_a_tls_etcd_cluster() {
    if !need::root("binary_deployment_walkthrough_with_a_tls_etcd_cluster") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = tmp.path().join("pki");
    std::fs::create_dir(&pki).expect("mkdir");
    let members = ["198.18.0.11", "198.18.0.12", "198.18.0.13"];
    make_pki(&pki, &members);

    let tag = format!("wd{}x{}", std::process::id() % 10000, fastrand::u16(..1000));
    let mut nss = Namespaces(Vec::new());
    let mut procs = Procs(Vec::new());
    // Underlay: br0 with the gateway; every member and node is a namespace on it (etcd checks
    // a peer's certificate against the address it connects from, so members need their own).
    let u = nss.add(format!("{tag}-u"));
    ip(&u, &["link", "add", "br0", "type", "bridge"]);
    ip(&u, &["addr", "add", "198.18.0.254/24", "dev", "br0"]);
    ip(&u, &["link", "set", "br0", "up"]);
    let host = |nss: &mut Namespaces, name: &str, addr: &str| -> String {
        let ns = nss.add(format!("{tag}-{name}"));
        ip(
            &ns,
            &[
                "link", "add", "eth0", "type", "veth", "peer", "name", name, "netns", &u,
            ],
        );
        ip(&u, &["link", "set", name, "master", "br0", "up"]);
        ip(&ns, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ip(&ns, &["link", "set", "eth0", "up"]);
        ip(
            &ns,
            &[
                "route",
                "add",
                "default",
                "via",
                "198.18.0.254",
                "dev",
                "eth0",
            ],
        );
        ns
    };

    let cluster: Vec<String> = members
        .iter()
        .enumerate()
        .map(|(i, m)| format!("etcd{}=https://{m}:2380", i + 1))
        .collect();
    let cluster = cluster.join(",");
    for (i, m) in members.iter().enumerate() {
        let n = format!("etcd{}", i + 1);
        let pem = |f: &str| pki.join(f).display().to_string();
        let member_ns = host(&mut nss, &format!("e{}", i + 1), m);
        let log = std::fs::File::create(tmp.path().join(format!("{n}.log"))).expect("log");
        let child = in_ns(&member_ns, "etcd")
            .args(["--name", &n, "--data-dir"])
            .arg(tmp.path().join(format!("{n}.data")))
            .args(["--listen-client-urls", &format!("https://{m}:2379")])
            .args(["--advertise-client-urls", &format!("https://{m}:2379")])
            .args(["--listen-peer-urls", &format!("https://{m}:2380")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("https://{m}:2380"),
            ])
            .args([
                "--initial-cluster",
                &cluster,
                "--initial-cluster-token",
                "weft-etcd",
            ])
            .args(["--initial-cluster-state", "new"])
            .args(["--cert-file", &pem(&format!("{n}.pem"))])
            .args(["--key-file", &pem(&format!("{n}-key.pem"))])
            .args(["--trusted-ca-file", &pem("ca.pem"), "--client-cert-auth"])
            .args(["--peer-cert-file", &pem(&format!("{n}.pem"))])
            .args(["--peer-key-file", &pem(&format!("{n}-key.pem"))])
            .args([
                "--peer-trusted-ca-file",
                &pem("ca.pem"),
                "--peer-client-cert-auth",
            ])
            // Fast elections on a busy machine; not part of the walk-through.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        procs.0.push((n, child));
    }
    let endpoints: Vec<String> = members
        .iter()
        .map(|m| format!("https://{m}:2379"))
        .collect();
    let endpoints = endpoints.join(",");
    let etcdctl = |args: &[&str]| {
        let mut c = in_ns(&u, "etcdctl");
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .arg(format!("--cacert={}", pki.join("ca.pem").display()))
            .arg(format!("--cert={}", pki.join("client.pem").display()))
            .arg(format!("--key={}", pki.join("client-key.pem").display()))
            .args(args);
        c.output().expect("etcdctl")
    };
    let logs = |prefix: &str| -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(tmp.path()).expect("read_dir").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) && name.ends_with(".log") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                all.push_str(&format!("--- {name} ---\n"));
                for l in tail.iter().rev() {
                    all.push_str(l);
                    all.push('\n');
                }
            }
        }
        all
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = etcdctl(&["endpoint", "health"]);
        if out.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "etcd cluster not healthy after 30 s: {}\n{}",
            text(&out),
            logs("etcd")
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let put = etcdctl(&[
        "put",
        "/coreos.com/network/config",
        r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#,
    ]);
    assert!(put.status.success(), "{}", text(&put));

    // Two nodes, each configured by the shipped env file with the lab's values swapped in.
    let shipped =
        std::fs::read_to_string(root().join("manifests/systemd/weft.env")).expect("weft.env");
    let mut subnet_files = Vec::new();
    for k in 1..=2 {
        let n = host(&mut nss, &format!("n{k}"), &format!("198.18.0.{}", 20 + k));
        let subnet_file = tmp.path().join(format!("n{k}/subnet.env"));
        let env_text = shipped
            .replace("https://192.0.2.11:2379", "https://198.18.0.11:2379")
            .replace("https://192.0.2.12:2379", "https://198.18.0.12:2379")
            .replace("https://192.0.2.13:2379", "https://198.18.0.13:2379")
            .replace("/etc/weft/pki", &pki.display().to_string())
            .replace(
                "/run/flannel/subnet.env",
                &subnet_file.display().to_string(),
            );
        assert!(
            !env_text.contains("192.0.2."),
            "every documented address was swapped"
        );
        let mut cmd = in_ns(&n, "env");
        cmd.arg("-i");
        for line in env_text.lines().map(str::trim) {
            if !line.is_empty() && !line.starts_with('#') {
                cmd.arg(line);
            }
        }
        // Each node its own peer cache (the nodes share this machine's /var/lib/weft).
        cmd.arg(format!(
            "FLANNELD_PEER_CACHE_FILE={}",
            tmp.path().join(format!("n{k}/peers.json")).display()
        ));
        let log = std::fs::File::create(tmp.path().join(format!("weft-n{k}.log"))).expect("log");
        let child = cmd
            .arg("NO_COLOR=1")
            .arg(env!("CARGO_BIN_EXE_weft"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start weft");
        procs.0.push((format!("weft on node {k}"), child));
        subnet_files.push((n, subnet_file));
    }

    let mut subnets = Vec::new();
    for (k, (_, file)) in subnet_files.iter().enumerate() {
        let env = poll(60, "subnet.env", || {
            let text = std::fs::read_to_string(file).ok()?;
            net_conf::SubnetEnv::parse(&text).ok()
        });
        assert_eq!(env.mtu, 1450, "vxlan");
        assert!(env.ipmasq, "FLANNELD_IP_MASQ=true");
        subnets.push(env.subnet.expect("FLANNEL_SUBNET"));
        let log = std::fs::read_to_string(tmp.path().join(format!("weft-n{}.log", k + 1)))
            .unwrap_or_default();
        assert!(!log.contains("insecure"), "weft must use TLS: {log}");
    }
    assert_ne!(subnets[0], subnets[1]);
    // Leases in etcd, written over TLS.
    let leases = etcdctl(&[
        "get",
        "--prefix",
        "--keys-only",
        "/coreos.com/network/subnets",
    ]);
    let keys = String::from_utf8_lossy(&leases.stdout);
    for s in &subnets {
        let key = format!(
            "/coreos.com/network/subnets/{}-{}",
            s.addr(),
            s.prefix_len()
        );
        assert!(keys.contains(&key), "{key} not in {keys}");
    }
    // Each node routes the other's subnet over flannel.1.
    for (i, (ns, _)) in subnet_files.iter().enumerate() {
        let other = subnets[1 - i].to_string();
        poll(30, "the vxlan route to the other node", || {
            let routes = ip(ns, &["route", "show", &other]);
            routes.contains("flannel.1").then_some(())
        });
    }

    // Docker options from each node's subnet.env.
    for (i, (_, file)) in subnet_files.iter().enumerate() {
        let out = tmp.path().join(format!("docker_opts-{i}.env"));
        sh(Command::new(env!("CARGO_BIN_EXE_weft"))
            .arg("docker-opts")
            .arg("-f")
            .arg(file)
            .arg("-d")
            .arg(&out));
        let first = std::net::Ipv4Addr::from(u32::from(subnets[i].network()) + 1);
        assert_eq!(
            std::fs::read_to_string(&out).expect("docker opts"),
            format!(
                "DOCKER_OPT_BIP=\"--bip={first}/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=false\"\n\
                 DOCKER_OPT_MTU=\"--mtu=1450\"\n\
                 DOCKER_OPTS=\" --bip={first}/24 --ip-masq=false --mtu=1450\"\n"
            )
        );
    }
    drop(procs);
    drop(nss);
}

/// `weft docker-opts` through the real binary: the file mk-docker-opts.sh would write, and a
/// missing subnet.env is an error naming it (exit 1), a bad option a usage error (exit 2).
#[test]
fn docker_opts_subcommand_of_the_binary() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let env = tmp.path().join("subnet.env");
    let out = tmp.path().join("docker");
    let weft = |args: &[&std::ffi::OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_weft"))
            .arg("docker-opts")
            .args(args)
            .env_remove("DOCKER_NETWORK_OPTIONS")
            .output()
            .expect("run weft docker-opts")
    };
    let missing = weft(&[
        "-f".as_ref(),
        env.as_os_str(),
        "-d".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(
        text(&missing).contains(&env.display().to_string()),
        "{}",
        text(&missing)
    );
    assert!(!out.exists());

    std::fs::write(
        &env,
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n",
    )
    .expect("write");
    let ok = weft(&[
        "-k".as_ref(),
        "DOCKER_NETWORK_OPTIONS".as_ref(),
        "-f".as_ref(),
        env.as_os_str(),
        "-d".as_ref(),
        out.as_os_str(),
    ]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert_eq!(
        std::fs::read_to_string(&out).expect("written"),
        "DOCKER_OPT_BIP=\"--bip=10.244.7.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\n\
         DOCKER_OPT_MTU=\"--mtu=1500\"\n\
         DOCKER_NETWORK_OPTIONS=\" --bip=10.244.7.1/24 --ip-masq=true --mtu=1500\"\n"
    );
    let usage = weft(&["-z".as_ref()]);
    assert_eq!(usage.status.code(), Some(2), "{}", text(&usage));
    assert!(
        text(&usage).contains("illegal option -z"),
        "{}",
        text(&usage)
    );
}
