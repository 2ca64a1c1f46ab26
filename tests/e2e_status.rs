//! End to end: `weft status` in a node of a real lab (namespaces, real etcd, the real binary)
//! reports no drift on a converged node and exactly the drift made by hand on a stopped one;
//! `/metrics` scraped from a running agent parses as the Prometheus text format.
#[path = "common/lab.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{
    WEFT_ROUTE_PROTOCOL, hostgw_routes_ok, http_get_in_netns, route_protocol_is, routes_in,
    wait_until,
};
use serde_json::Value;
use weft_testkit::lab::{Lab, LabSpec, Signal};

const READY: Duration = Duration::from_secs(30);
const CONVERGE: Duration = Duration::from_secs(15);

fn lab(nodes: usize, backend: &str) -> Lab {
    let mut spec = LabSpec::new(nodes, common::weft_bin());
    spec.backend = backend.to_owned();
    let mut lab = Lab::build(spec).expect("build lab");
    lab.start_all().expect("start agents");
    for k in 1..=nodes {
        lab.wait_subnet_env(k, READY).expect("subnet.env");
    }
    lab
}

/// `ip netns exec <node k> weft <args> --etcd-endpoints=… --subnet-file=…`.
fn weft_in_node(lab: &Lab, k: usize, args: &[&str]) -> Output {
    weft_in_node_with(lab, k, args, &lab.subnet_file(k).expect("path"))
}

/// [`weft_in_node`] with another `--subnet-file`.
fn weft_in_node_with(lab: &Lab, k: usize, args: &[&str], subnet_file: &Path) -> Output {
    let ns = lab.node_ns(k).expect("ns");
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(common::weft_bin())
        .args(args)
        .arg(format!(
            "--etcd-endpoints={}",
            lab.etcd_endpoint().expect("endpoint")
        ))
        .arg(format!("--subnet-file={}", subnet_file.display()))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("run weft")
}

/// `weft status --json` in node k: (exit code, report).
fn status(lab: &Lab, k: usize) -> (i32, Value) {
    json_report(weft_in_node(lab, k, &["status", "--json"]))
}

/// The exit code and the JSON report of a `weft status --json` run.
fn json_report(out: Output) -> (i32, Value) {
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "status output is not JSON ({e}); exit {:?}\nstdout:\n{text}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

/// The `text` of each entry of `report.drift.<which>`, sorted.
fn drift(report: &Value, which: &str) -> Vec<String> {
    let mut v: Vec<String> = report["drift"][which]
        .as_array()
        .unwrap_or_else(|| panic!("drift.{which} missing: {report}"))
        .iter()
        .map(|e| {
            let e = if which == "different" { &e["want"] } else { e };
            format!(
                "{} {}",
                e["kind"].as_str().unwrap_or("?"),
                e["text"].as_str().unwrap_or("?")
            )
        })
        .collect();
    v.sort();
    v
}

fn peer_subnets(report: &Value) -> Vec<String> {
    let mut v: Vec<String> = report["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| p["subnet"].as_str().expect("subnet").to_owned())
        .collect();
    v.sort();
    v
}

/// Checks the parts of a report that hold on every converged node k.
fn assert_converged_report(lab: &Lab, k: usize, code: i32, report: &Value, backend: &str) {
    assert_eq!(code, 0, "node {k}: exit code; report: {report:#}");
    assert_eq!(report["schema"], 1);
    assert_eq!(report["in_sync"], true, "{report:#}");
    assert_eq!(report["config"]["backend"], backend);
    assert_eq!(report["config"]["network"], "10.244.0.0/16");
    assert_eq!(report["config"]["options"]["Type"], backend);
    assert_eq!(report["node"]["interface"], "eth0");
    let ip = lab.node_ip(k).expect("ip").to_string();
    assert_eq!(report["node"]["public_ip"], ip.as_str());
    let own = &report["own_lease"];
    assert_eq!(own["subnet"], lab.subnet(k).expect("subnet").to_string());
    assert_eq!(own["public_ip"], ip.as_str());
    assert_eq!(own["backend"], backend);
    assert_eq!(own["reservation"], false);
    let ttl = own["ttl_seconds"].as_i64().expect("ttl");
    assert!((86_000..=86_400).contains(&ttl), "ttl {ttl}");
    assert!(
        own["expires_at"]
            .as_str()
            .expect("expires_at")
            .ends_with('Z')
    );
    let mut want: Vec<String> = (1..=lab.nodes())
        .filter(|&j| j != k)
        .map(|j| lab.subnet(j).expect("subnet").to_string())
        .collect();
    want.sort();
    assert_eq!(peer_subnets(report), want);
    for p in report["peers"].as_array().expect("peers") {
        assert_eq!(p["backend"], backend);
        assert!(p["expires_at_unix"].as_i64().is_some(), "{p}");
    }
    for which in ["missing", "extra", "different"] {
        assert!(drift(report, which).is_empty(), "{which}: {report:#}");
    }
}

#[test]
fn status_host_gw_no_drift_then_exactly_the_drift_made_by_hand() {
    if !common::need::root("status_host_gw_no_drift_then_exactly_the_drift_made_by_hand") {
        return;
    }
    let mut lab = lab(3, "host-gw");
    for k in 1..=3 {
        wait_until(CONVERGE, || hostgw_routes_ok(&lab, k)).expect("host-gw routes");
    }
    for k in 1..=3 {
        let (code, report) = status(&lab, k);
        assert_converged_report(&lab, k, code, &report, "host-gw");
        assert_eq!(report["required"]["routes"], 2);
        assert_eq!(report["kernel"]["routes"], 2);
        // weft writes them on nexthop objects; status reads them through the nexthops.
        assert_eq!(report["kernel"]["routes_on_nexthops"], 2);
        assert!(report["device"].is_null());
    }
    // Human output agrees.
    let human = weft_in_node(&lab, 2, &["status"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert_eq!(human.status.code(), Some(0), "{text}");
    assert!(text.contains("drift:   none"), "{text}");
    assert!(text.contains("status:  in sync"), "{text}");

    // Stop node 1 (SIGTERM leaves its state), then: delete the route to node 2, move the one
    // to node 3 to another gateway, add a stray weft route.
    let st = lab
        .stop_node(1, Signal::SIGTERM)
        .expect("stop")
        .expect("was running");
    assert!(st.success(), "{st}");
    let s2 = lab.subnet(2).expect("subnet").to_string();
    let s3 = lab.subnet(3).expect("subnet").to_string();
    lab.ip(1, &["route", "del", &s2]).expect("route del");
    lab.ip(
        1,
        &[
            "route",
            "replace",
            &s3,
            "via",
            "198.18.0.2",
            "dev",
            "eth0",
            "proto",
            "87",
        ],
    )
    .expect("route replace");
    // A stray weft route in the network, and one of another network (another daemon's: not
    // this one's drift).
    let [stray, stray2]: [String; 2] = common::free_subnets(&lab, 2)
        .try_into()
        .expect("two free /24s");
    for dst in [stray.as_str(), "10.99.0.0/24"] {
        lab.ip(
            1,
            &[
                "route",
                "add",
                dst,
                "via",
                "198.18.0.3",
                "dev",
                "eth0",
                "proto",
                "87",
            ],
        )
        .expect("route add");
    }
    // And a stray weft route on a nexthop object of weft's protocol.
    lab.ip(
        1,
        &[
            "nexthop",
            "add",
            "id",
            "900",
            "via",
            "198.18.0.3",
            "dev",
            "eth0",
            "proto",
            "87",
        ],
    )
    .expect("nexthop add");
    lab.ip(1, &["route", "add", &stray2, "nhid", "900", "proto", "87"])
        .expect("route add");
    let (code, report) = status(&lab, 1);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["in_sync"], false);
    assert_eq!(
        drift(&report, "missing"),
        [format!("route {s2} via 198.18.0.2 dev eth0")]
    );
    assert_eq!(
        drift(&report, "extra"),
        [
            format!("route {stray2} nhid 900 via 198.18.0.3 dev eth0"),
            format!("route {stray} via 198.18.0.3 dev eth0")
        ]
    );
    assert_eq!(report["drift"]["extra"][0]["nhid"], 900);
    assert_eq!(report["drift"]["extra"][0]["gateway"], "198.18.0.3");
    assert_eq!(
        drift(&report, "different"),
        [format!("route {s3} via 198.18.0.3 dev eth0")]
    );
    assert_eq!(
        report["drift"]["different"][0]["have"]["gateway"],
        "198.18.0.2"
    );
    // The leases are unchanged by all this.
    assert_eq!(peer_subnets(&report), {
        let mut v = vec![s2.clone(), s3.clone()];
        v.sort();
        v
    });
    // Status wrote nothing: the drift is still there.
    let routes = routes_in(lab.node_ns(1).expect("ns")).expect("routes");
    assert!(routes.iter().any(|r| r["dst"] == stray.as_str()));
    assert!(routes.iter().any(|r| r["dst"] == "10.99.0.0/24"));
    assert!(!routes.iter().any(|r| r["dst"] == s2.as_str()));
    lab.teardown().expect("teardown");
}

/// A node without a default route (the agent needs one only at start): status finds the node's
/// lease from the subnet file, then, without one, from the node's addresses, and says which.
#[test]
fn status_without_a_default_route_finds_the_lease_by_subnet_file_then_by_address() {
    if !common::need::root(
        "status_without_a_default_route_finds_the_lease_by_subnet_file_then_by_address",
    ) {
        return;
    }
    let lab = lab(2, "host-gw");
    for k in 1..=2 {
        wait_until(CONVERGE, || hostgw_routes_ok(&lab, k)).expect("host-gw routes");
    }
    let (code, report) = status(&lab, 1);
    assert_converged_report(&lab, 1, code, &report, "host-gw");
    assert_eq!(report["node"]["found_by"], "subnet_file", "{report:#}");

    lab.ip(1, &["route", "del", "default"])
        .expect("ip route del default");
    let routes = routes_in(lab.node_ns(1).expect("ns")).expect("routes");
    assert!(
        !routes.iter().any(|r| r["dst"] == "default"),
        "default route still there: {routes:?}"
    );

    // The subnet file names the lease; the interface is the one holding its PublicIP.
    let (code, report) = status(&lab, 1);
    assert_converged_report(&lab, 1, code, &report, "host-gw");
    assert_eq!(report["node"]["found_by"], "subnet_file", "{report:#}");
    let human = weft_in_node(&lab, 1, &["status"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert_eq!(human.status.code(), Some(0), "{text}");
    assert!(
        text.contains("found:   own lease from the subnet file (FLANNEL_SUBNET)"),
        "{text}"
    );

    // No subnet file: the lease whose PublicIP is an address of the node.
    let none = lab.subnet_file(1).expect("path").with_extension("absent");
    assert!(!none.exists());
    let (code, report) = json_report(weft_in_node_with(&lab, 1, &["status", "--json"], &none));
    assert_converged_report(&lab, 1, code, &report, "host-gw");
    assert_eq!(report["node"]["found_by"], "address", "{report:#}");

    // An interface flag still chooses as the agent does, default route or not.
    let (code, report) = json_report(weft_in_node(&lab, 1, &["status", "--json", "--iface=eth0"]));
    assert_converged_report(&lab, 1, code, &report, "host-gw");
    assert_eq!(report["node"]["found_by"], "flags", "{report:#}");
    lab.teardown().expect("teardown");
}

/// The vxlan routes of node k: one onlink route per peer via flannel.1, nothing else of weft's.
fn vxlan_routes_ok(lab: &Lab, k: usize) -> Result<(), String> {
    let routes = routes_in(lab.node_ns(k).map_err(|e| e.to_string())?)?;
    let mut ours: Vec<String> = routes
        .iter()
        .filter(|r| route_protocol_is(r, WEFT_ROUTE_PROTOCOL))
        .map(|r| {
            format!(
                "{} dev {}",
                r["dst"].as_str().unwrap_or("-"),
                r["dev"].as_str().unwrap_or("-")
            )
        })
        .collect();
    ours.sort();
    let mut want: Vec<String> = (1..=lab.nodes())
        .filter(|&j| j != k)
        .map(|j| {
            Ok(format!(
                "{} dev flannel.1",
                lab.subnet(j).map_err(|e| e.to_string())?
            ))
        })
        .collect::<Result<_, String>>()?;
    want.sort();
    if ours != want {
        return Err(format!("node {k}: weft routes {ours:?}, want {want:?}"));
    }
    Ok(())
}

#[test]
fn status_vxlan_no_drift_then_missing_neigh_fdb_and_extra_route() {
    if !common::need::root("status_vxlan_no_drift_then_missing_neigh_fdb_and_extra_route") {
        return;
    }
    let mut lab = lab(3, "vxlan");
    for k in 1..=3 {
        wait_until(CONVERGE, || vxlan_routes_ok(&lab, k)).expect("vxlan routes");
    }
    let mut macs = Vec::new();
    for k in 1..=3 {
        let (code, report) = status(&lab, k);
        assert_converged_report(&lab, k, code, &report, "vxlan");
        let dev = &report["device"];
        assert_eq!(dev["name"], "flannel.1");
        assert_eq!(dev["present"], true);
        assert_eq!(dev["up"], true);
        assert_eq!(dev["mtu"], 1450);
        assert_eq!(dev["problems"], serde_json::json!([]));
        assert_eq!(dev["mac"], report["own_lease"]["vtep_mac"], "{report:#}");
        assert_eq!(
            report["required"],
            serde_json::json!({"routes": 2, "neighs": 2, "fdb": 2})
        );
        // The same counts in the kernel, the routes on nexthop objects
        // (`<subnet> nhid N via <subnet addr> dev flannel.1 onlink`).
        assert_eq!(
            report["kernel"],
            serde_json::json!({"routes": 2, "neighs": 2, "fdb": 2, "routes_on_nexthops": 2})
        );
        macs.push(dev["mac"].as_str().expect("mac").to_owned());
    }
    // Each node's VTEP MAC as its peers see it in etcd.
    let (_, r1) = status(&lab, 1);
    for p in r1["peers"].as_array().expect("peers") {
        assert!(
            macs.contains(&p["vtep_mac"].as_str().expect("vtep_mac").to_owned()),
            "{p}"
        );
        assert_eq!(p["vni"], 1);
    }

    let st = lab
        .stop_node(1, Signal::SIGTERM)
        .expect("stop")
        .expect("was running");
    assert!(st.success(), "{st}");
    let s2 = lab.subnet(2).expect("subnet");
    let gw2 = s2.network().to_string();
    let ip3 = lab.node_ip(3).expect("ip").to_string();
    let mac3 = &macs[2];
    lab.ip(1, &["neigh", "del", &gw2, "dev", "flannel.1"])
        .expect("neigh del");
    let ns1 = lab.node_ns(1).expect("ns").to_owned();
    let out = Command::new("bridge")
        .args([
            "-n",
            &ns1,
            "fdb",
            "del",
            mac3,
            "dev",
            "flannel.1",
            "dst",
            &ip3,
            "self",
        ])
        .output()
        .expect("bridge");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stray = common::free_subnets(&lab, 1).remove(0);
    lab.ip(
        1,
        &[
            "route",
            "add",
            &stray,
            "via",
            "198.18.0.3",
            "dev",
            "eth0",
            "proto",
            "87",
        ],
    )
    .expect("route add");
    let (code, report) = status(&lab, 1);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(
        drift(&report, "missing"),
        [
            format!("fdb {mac3} dev flannel.1 dst {ip3} self permanent"),
            format!("neigh {gw2} lladdr {} dev flannel.1 PERMANENT", macs[1]),
        ]
    );
    assert_eq!(
        drift(&report, "extra"),
        [format!("route {stray} via 198.18.0.3 dev eth0")]
    );
    assert!(drift(&report, "different").is_empty(), "{report:#}");

    // The device down: a device problem (its routes are flushed by the kernel, so missing).
    lab.ip(1, &["link", "set", "flannel.1", "down"])
        .expect("link down");
    let (code, report) = status(&lab, 1);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["device"]["up"], false);
    assert_eq!(
        report["device"]["problems"],
        serde_json::json!(["link is down"])
    );
    // The device gone: every entry it carries is missing, shown on flannel.1.
    lab.ip(1, &["link", "del", "flannel.1"]).expect("link del");
    let (code, report) = status(&lab, 1);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["device"]["present"], false);
    assert_eq!(
        report["device"]["problems"],
        serde_json::json!(["flannel.1 does not exist"])
    );
    let missing = drift(&report, "missing");
    assert_eq!(missing.len(), 6, "{missing:?}");
    assert!(
        missing.iter().all(|m| m.contains("dev flannel.1")),
        "{missing:?}"
    );
    assert_eq!(
        drift(&report, "extra"),
        [format!("route {stray} via 198.18.0.3 dev eth0")]
    );
    lab.teardown().expect("teardown");
}

#[test]
fn metrics_scraped_from_a_lab_node_parse() {
    if !common::need::root("metrics_scraped_from_a_lab_node_parse") {
        return;
    }
    let lab = lab(2, "host-gw");
    for k in 1..=2 {
        wait_until(CONVERGE, || hostgw_routes_ok(&lab, k)).expect("host-gw routes");
    }
    let ns = lab.node_ns(1).expect("ns").to_owned();
    let port = lab.spec().healthz_port;
    let samples = wait_until(CONVERGE, || {
        let (code, body) = http_get_in_netns(&ns, port, "/metrics")?;
        if code != 200 {
            return Err(format!("status {code}: {body}"));
        }
        let (samples, _) = weft_testkit::prom::exposition(&body)?;
        let ready = weft_testkit::prom::value(&samples, "weft_ready", &[]);
        if ready != Some(1.0) {
            return Err(format!("weft_ready {ready:?}"));
        }
        Ok(samples)
    })
    .expect("scrape");
    let value = |name, labels: &[(&str, &str)]| weft_testkit::prom::value(&samples, name, labels);
    assert_eq!(
        value("weft_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        Some(1.0)
    );
    for name in [
        "weft_etcd_reconnects_total",
        "weft_kernel_writes_total",
        "weft_kernel_write_errors_total",
        "weft_drift_repairs_total",
        "weft_lease_expiry_timestamp_seconds",
        "weft_reconcile_duration_seconds_count",
    ] {
        assert!(value(name, &[]).is_some(), "{name} missing");
    }
    // The agent's own figures: one host-gw peer, its route written at the initial sync, the
    // lease expiring in about 24 h.
    assert_eq!(value("weft_peers", &[("backend", "host-gw")]), Some(1.0));
    assert_eq!(value("weft_peers", &[("backend", "vxlan")]), Some(0.0));
    assert_eq!(
        value("weft_reconcile_runs_total", &[("reason", "initial_sync")]),
        Some(1.0)
    );
    let writes = value("weft_kernel_writes_total", &[]).expect("writes");
    assert!(writes >= 1.0, "kernel writes {writes}");
    assert_eq!(value("weft_kernel_write_errors_total", &[]), Some(0.0));
    let runs = value("weft_reconcile_duration_seconds_count", &[]).expect("count");
    assert!(runs >= 1.0, "{runs}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let expiry = value("weft_lease_expiry_timestamp_seconds", &[]).expect("expiry");
    assert!(
        (now + 86_000.0..=now + 86_400.0).contains(&expiry),
        "expiry {expiry}, now {now}"
    );

    // Drift repair counts: delete node 1's route to node 2 and wait for the counter.
    let s2 = lab.subnet(2).expect("subnet").to_string();
    lab.ip(1, &["route", "del", &s2]).expect("route del");
    wait_until(CONVERGE, || {
        let (_, body) = http_get_in_netns(&ns, port, "/metrics")?;
        let (samples, _) = weft_testkit::prom::exposition(&body)?;
        let repairs = weft_testkit::prom::value(&samples, "weft_drift_repairs_total", &[]);
        match repairs {
            Some(n) if n >= 1.0 => Ok(()),
            other => Err(format!("weft_drift_repairs_total {other:?}")),
        }
    })
    .expect("drift repair counted");
    wait_until(CONVERGE, || hostgw_routes_ok(&lab, 1)).expect("route repaired");
    lab.teardown().expect("teardown");
}

#[test]
fn status_exit_codes_for_usage_and_unreachable_etcd() {
    // No root needed: a usage error never touches anything; an unreachable etcd fails before
    // the kernel is read.
    let out = Command::new(common::weft_bin())
        .args(["status", "--no-such-flag"])
        .output()
        .expect("run weft");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-flag"));
    // A port nothing listens on (bound then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let out = Command::new(common::weft_bin())
        .args([
            "status",
            "--json",
            &format!("--etcd-endpoints=http://127.0.0.1:{port}"),
        ])
        .output()
        .expect("run weft");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("weft status:") && err.contains("etcd"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
