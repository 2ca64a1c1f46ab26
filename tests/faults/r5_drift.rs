//! R5: out-of-band deletes of routes and devices are repaired.
use super::*;

#[test]
fn r5_out_of_band_deletes_are_repaired() {
    if !common::need::root("r5_out_of_band_deletes_are_repaired") {
        return;
    }
    // host-gw: a peer's route.
    {
        let lab = converged_lab(2, "host-gw");
        let ns = lab.node_ns(1).expect("ns").to_owned();
        let net = lab.subnet(2).expect("subnet").to_string();
        let mut worst = Duration::ZERO;
        for _ in 0..5 {
            ip(&ns, &["route", "del", &net]).expect("route del");
            let t = time_until(EVENTUALLY, || route_to(&ns, &net).is_some())
                .expect("host-gw route not repaired");
            worst = worst.max(t);
        }
        figure(
            "R5",
            "host-gw route deleted → back (worst of 5)",
            ms(worst),
            "≤ 1 s",
        );
        // The route's nexthop object deleted: the kernel drops the route with it and says only
        // RTM_DELNEXTHOP.
        let nhid = route_to(&ns, &net)
            .and_then(|r| r["nhid"].as_u64())
            .expect("host-gw route on a nexthop");
        ip(&ns, &["nexthop", "del", "id", &nhid.to_string()]).expect("nexthop del");
        let t = time_until(EVENTUALLY, || route_to(&ns, &net).is_some())
            .expect("route not repaired after its nexthop was deleted");
        figure(
            "R5",
            "host-gw route's nexthop deleted → route back",
            ms(t),
            "≤ 1 s",
        );
        lab.teardown().expect("teardown");
    }
    // vxlan: route, neighbour, FDB entry, the device.
    let mut lab = converged_lab(3, "vxlan");
    lab.add_pods().expect("pods");
    let ns = lab.node_ns(1).expect("ns").to_owned();
    let net = lab.subnet(2).expect("subnet");
    let gw = net.network().to_string();
    let peer_ip = lab.node_ip(2).expect("ip").to_string();
    let neigh_ok = |ns: &str| {
        ip_json(ns, &["neigh", "show", "dev", "flannel.1"]).is_ok_and(|v| {
            v.iter()
                .any(|n| n["dst"] == gw.as_str() && n["lladdr"].is_string())
        })
    };
    let fdb_of = |ns: &str| -> Option<String> {
        let out = Command::new("bridge")
            .args(["-n", ns, "-j", "fdb", "show", "dev", "flannel.1"])
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?
            .iter()
            .find(|e| e["dst"] == peer_ip.as_str())
            .and_then(|e| e["mac"].as_str().map(str::to_owned))
    };
    wait_until(CONVERGE, || {
        if neigh_ok(&ns) && fdb_of(&ns).is_some() {
            Ok(())
        } else {
            Err("vxlan neighbour/FDB of node 2 missing on node 1".to_owned())
        }
    })
    .expect("vxlan entries");
    let mac = fdb_of(&ns).expect("fdb");
    let net_s = net.to_string();

    // `ip route del <dst>`: with `dev flannel.1` added the kernel would not match a route on a
    // nexthop object (the device is the nexthop's, not the route's).
    ip(&ns, &["route", "del", &net_s]).expect("route del");
    let t = time_until(EVENTUALLY, || route_to(&ns, &net_s).is_some()).expect("vxlan route");
    figure("R5", "vxlan route deleted → back", ms(t), "≤ 1 s");

    let nhid = route_to(&ns, &net_s)
        .and_then(|r| r["nhid"].as_u64())
        .expect("vxlan route on a nexthop");
    ip(&ns, &["nexthop", "del", "id", &nhid.to_string()]).expect("nexthop del");
    let t = time_until(EVENTUALLY, || route_to(&ns, &net_s).is_some())
        .expect("vxlan route not repaired after its nexthop was deleted");
    figure(
        "R5",
        "vxlan route's nexthop deleted → route back",
        ms(t),
        "≤ 1 s",
    );

    ip(&ns, &["neigh", "del", &gw, "dev", "flannel.1"]).expect("neigh del");
    let t = time_until(EVENTUALLY, || neigh_ok(&ns)).expect("neighbour not repaired");
    figure("R5", "vxlan neighbour (ARP) deleted → back", ms(t), "≤ 1 s");

    sh(&format!(
        "bridge -n {ns} fdb del {mac} dev flannel.1 dst {peer_ip} self"
    ))
    .expect("fdb del");
    let t = time_until(EVENTUALLY, || fdb_of(&ns).is_some()).expect("FDB entry not repaired");
    figure("R5", "vxlan FDB entry deleted → back", ms(t), "≤ 1 s");

    ip(&ns, &["link", "del", "flannel.1"]).expect("link del");
    let t = time_until(EVENTUALLY, || {
        peers_programmed(&lab, 1).is_ok() && neigh_ok(&ns) && fdb_of(&ns).is_some()
    })
    .unwrap_or_else(|| {
        panic!(
            "device not re-created with its peers; log:\n{}",
            lab.log_tail(1, 30)
        )
    });
    figure(
        "R5",
        "vxlan device deleted → re-created with every peer entry",
        ms(t),
        "≤ 1 s",
    );
    let matrix = lab.ping_matrix().expect("ping");
    assert!(
        matrix.iter().all(|m| m.2),
        "pods cannot reach each other: {matrix:?}"
    );
    assert_agents_alive(&mut lab, &[]);
    lab.teardown().expect("teardown");
}
