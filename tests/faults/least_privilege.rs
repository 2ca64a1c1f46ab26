//! Least privilege (issue 14, scenario 5): every agent runs under `setpriv` with only
//! CAP_NET_ADMIN and CAP_NET_RAW in its bounding, permitted, effective and inheritable sets (what
//! the DaemonSet grants a uid-0 container that is not privileged, and what the systemd unit's
//! CapabilityBoundingSet leaves) and still does everything: devices, routes, nexthops,
//! masquerade and forward rules (iptables mode with vxlan, nftables mode with host-gw), the
//! health port, subnet.env and the peer cache, with pods pinging at 10/s.
use super::*;

/// CAP_NET_ADMIN (12) and CAP_NET_RAW (13).
const NET_ADMIN_RAW: u64 = (1 << 12) | (1 << 13);

fn setpriv() -> Vec<String> {
    let caps = "-all,+net_admin,+net_raw";
    vec![
        "setpriv".into(),
        format!("--bounding-set={caps}"),
        format!("--inh-caps={caps}"),
        "--".into(),
    ]
}

/// A capability set of `/proc/<pid>/status` (`CapBnd`, `CapEff`, ...), as a bit mask.
fn cap_set(pid: u32, which: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{which}:\t")))
        .unwrap_or_else(|| panic!("{which} in /proc/{pid}/status"));
    u64::from_str_radix(hex.trim(), 16).expect("hex")
}

#[test]
fn least_privilege_agents_with_only_net_admin_and_net_raw_do_everything() {
    if !common::need::root("least_privilege_agents_with_only_net_admin_and_net_raw_do_everything") {
        return;
    }
    let port = weft_testkit::lab::DEFAULT_HEALTHZ_PORT;
    for (backend, nftables) in [("vxlan", false), ("host-gw", true)] {
        let mut s = spec(3, backend);
        s.config = Some(format!(
            r#"{{"Network":"10.244.0.0/16","EnableNFTables":{nftables},"Backend":{{"Type":"{backend}"}}}}"#
        ));
        s.extra_flags = vec!["--ip-masq".into()];
        s.agent_prefix = setpriv();
        let mut lab = Lab::build(s).expect("build lab");
        lab.start_all().expect("start agents");
        wait_ready(&mut lab);
        let mode = if nftables { "nftables" } else { "iptables" };
        for k in 1..=3 {
            let pid = agent_pid(&lab, k);
            for set in ["CapBnd", "CapPrm", "CapEff"] {
                assert_eq!(
                    cap_set(pid, set),
                    NET_ADMIN_RAW,
                    "node {k}: {set} of weft ({backend}, {mode})"
                );
            }
            let ns = lab.node_ns(k).expect("ns").to_owned();
            // Nexthop objects, the device (vxlan), the rules of the mode, health, files.
            let nexthops = ip(&ns, &["nexthop", "show", "proto", "87"]).expect("nexthops");
            assert_eq!(nexthops.lines().count(), 2, "node {k}: {nexthops}");
            if backend == "vxlan" {
                ip(&ns, &["link", "show", "flannel.1"]).expect("flannel.1");
            }
            let rules = if nftables {
                sh(&format!(
                    "ip netns exec {ns} nft list table ip flannel-ipv4"
                ))
            } else {
                sh(&format!("ip netns exec {ns} iptables-save"))
            }
            .expect("rules");
            assert!(
                rules.contains("10.244.0.0/16") && rules.to_lowercase().contains("masquerade"),
                "node {k}: {mode} rules: {rules}"
            );
            match http_get(&ns, "127.0.0.1", port, "/readyz") {
                Ok((200, _)) => {}
                other => panic!("node {k}: /readyz {other:?}"),
            }
            wait_until(CONVERGE, || {
                let p = lab.peer_cache_file(k).map_err(|e| format!("{e:#}"))?;
                p.exists()
                    .then_some(())
                    .ok_or(format!("{} missing", p.display()))
            })
            .expect("peer cache written");
        }
        lab.add_pods().expect("pods");
        let pinger = Pinger::start(&lab, 1, 3);
        // A peer restarting under the same restrictions: its routes are kept and rewritten.
        lab.restart_node(2).expect("restart node 2");
        lab.wait_subnet_env(2, READY).expect("node 2 back");
        wait_until(CONVERGE, || peers_programmed(&lab, 2)).expect("node 2 converged");
        let stats = pinger.stop();
        assert!(
            stats.lost.is_empty(),
            "{backend}: pings lost {:?}",
            stats.lost
        );
        figure(
            "P14.5",
            &format!("{backend}/{mode}: capabilities of weft"),
            format!("{:#x}", cap_set(agent_pid(&lab, 2), "CapEff")),
            "0x3000 (net_admin, net_raw)",
        );
        assert_agents_alive(&mut lab, &[]);
    }
}
