//! The real tools against a fresh network namespace per test (root only: `weft_testkit::need`).
//! iptables and nft act on the namespace of the thread that forks them, so each test runs on
//! its own thread that unshares first and then builds a current-thread runtime.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::process::Command;

use super::tests::settings;
use super::*;

pub(super) fn in_netns<F, Fut>(name: &str, f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    if !weft_testkit::need::root(name) {
        return;
    }
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f());
        })
        .expect("spawn test thread");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// `<tool> <args>` in the current thread's namespace; stdout, or panic with stderr.
pub(super) fn sh(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().expect("run tool");
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `-A` lines of `iptables-save -t <table>`.
fn rules_in(table: &str) -> Vec<String> {
    rules_of(Family::V4, table)
}

fn chains_in(table: &str) -> Vec<String> {
    chains_of(Family::V4, table)
}

/// The `-A` lines of `iptables-save -t <table>` (`ip6tables-save` for IPv6).
pub(super) fn rules_of(family: Family, table: &str) -> Vec<String> {
    sh(iptables::tools(family).1, &["-t", table])
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_owned)
        .collect()
}

/// The chains `iptables-save -t <table>` (`ip6tables-save`) declares.
pub(super) fn chains_of(family: Family, table: &str) -> Vec<String> {
    sh(iptables::tools(family).1, &["-t", table])
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// What iptables mode must leave: flanneld's golden lines, nothing else of ours.
pub(super) fn expected_lines(chain: &iptables::Chain, rules: &[Rule]) -> Vec<String> {
    let mut v = vec![iptables::jump_line(chain)];
    v.extend(rules.iter().map(|r| iptables::rule_line(chain, r)));
    v
}

fn nft_table() -> Option<nftables::ObservedTable> {
    nft_table_of(Family::V4)
}

/// `nft -j list table` of `family`'s table, parsed; `None` when it does not exist.
pub(super) fn nft_table_of(family: Family) -> Option<nftables::ObservedTable> {
    let t = nftables::Table::of(family);
    let out = Command::new("nft")
        .args(["-j", "list", "table", t.family, t.name])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| nftables::parse_list(&t, &String::from_utf8_lossy(&out.stdout)).unwrap())
}

#[test]
fn iptables_rules_are_flannels_and_repaired_after_out_of_band_deletes() {
    in_netns("fw-iptables", || async {
        let fw = Firewall::new(Mode::Iptables, settings()).await.unwrap();
        // iptables 1.8.9 supports --random-fully: the probe must keep it.
        assert_eq!(fw.rules(), &RuleSet::new(Mode::Iptables, &settings()));
        let rules = fw.rules().clone();
        let nat = expected_lines(&iptables::MASQ_CHAIN, rules.masq.as_ref().unwrap());
        let filter = expected_lines(&iptables::FORWARD_CHAIN, rules.forward.as_ref().unwrap());

        assert!(matches!(fw.apply().await.unwrap(), Outcome::Repaired(_)));
        assert_eq!(rules_in("nat"), nat);
        assert_eq!(rules_in("filter"), filter);
        // Read back identical: no write, twice.
        assert_eq!(fw.apply().await.unwrap(), Outcome::InSync);
        assert_eq!(fw.check().await.unwrap(), Outcome::InSync);

        // A masquerade rule deleted by hand.
        sh(
            "iptables",
            &[
                "-t",
                "nat",
                "-D",
                "FLANNEL-POSTRTG",
                "-s",
                "10.244.0.0/16",
                "!",
                "-d",
                "224.0.0.0/4",
                "-m",
                "comment",
                "--comment",
                "flanneld masq",
                "-j",
                "MASQUERADE",
                "--random-fully",
            ],
        );
        assert_ne!(rules_in("nat"), nat);
        assert_eq!(
            fw.check().await.unwrap(),
            Outcome::Repaired(vec![
                "nat FLANNEL-POSTRTG: 5 rules differ from the 6 wanted".into()
            ])
        );
        assert_eq!(rules_in("nat"), nat);

        // The forward jump deleted, and a foreign rule appended after it in FORWARD.
        sh(
            "iptables",
            &[
                "-D",
                "FORWARD",
                "-m",
                "comment",
                "--comment",
                "flanneld forward",
                "-j",
                "FLANNEL-FWD",
            ],
        );
        sh(
            "iptables",
            &["-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "DROP"],
        );
        assert!(matches!(fw.check().await.unwrap(), Outcome::Repaired(_)));
        let now = rules_in("filter");
        assert_eq!(
            now.iter()
                .filter(|l| **l == iptables::jump_line(&iptables::FORWARD_CHAIN))
                .count(),
            1,
            "{now:?}"
        );
        assert!(now.contains(&"-A FORWARD -s 192.0.2.0/24 -j DROP".to_owned()));

        // The whole chain flushed.
        sh("iptables", &["-t", "nat", "-F", "FLANNEL-POSTRTG"]);
        assert!(matches!(fw.check().await.unwrap(), Outcome::Repaired(_)));
        assert_eq!(rules_in("nat"), nat);
        assert_eq!(fw.check().await.unwrap(), Outcome::InSync);
    });
}

#[test]
fn iptables_parts_switched_off_are_removed_and_others_kept() {
    in_netns("fw-iptables-off", || async {
        let fw = Firewall::new(Mode::Iptables, settings()).await.unwrap();
        fw.apply().await.unwrap();
        sh(
            "iptables",
            &[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-d",
                "192.0.2.1",
                "-j",
                "ACCEPT",
            ],
        );

        // Restart without --ip-masq, with random-fully disabled: masquerading goes away.
        let mut s = settings();
        s.ip_masq = false;
        s.fully_random = false;
        let fw = Firewall::new(Mode::Iptables, s).await.unwrap();
        assert_eq!(
            fw.apply().await.unwrap(),
            Outcome::Repaired(vec![
                "nat FLANNEL-POSTRTG: present but not wanted, removed".into()
            ])
        );
        assert_eq!(
            rules_in("nat"),
            ["-A POSTROUTING -d 192.0.2.1/32 -j ACCEPT"]
        );
        assert!(!chains_in("nat").contains(&"FLANNEL-POSTRTG".to_owned()));
        assert!(chains_in("filter").contains(&"FLANNEL-FWD".to_owned()));
        assert_eq!(fw.check().await.unwrap(), Outcome::InSync);

        // --ip-masq with --ip-masq-fully-random-disable: no --random-fully anywhere.
        let mut s = settings();
        s.fully_random = false;
        let fw = Firewall::new(Mode::Iptables, s).await.unwrap();
        fw.apply().await.unwrap();
        let nat = rules_in("nat");
        assert_eq!(
            nat.iter().filter(|l| l.contains("-j MASQUERADE")).count(),
            2
        );
        assert!(!nat.iter().any(|l| l.contains("random-fully")), "{nat:?}");

        // A new subnet after a lost lease: the chain is rewritten, the jump stays single.
        let mut fw = fw;
        fw.set_subnet("10.244.7.0/24".parse().unwrap()).unwrap();
        assert!(matches!(fw.apply().await.unwrap(), Outcome::Repaired(_)));
        let nat = rules_in("nat");
        assert!(!nat.iter().any(|l| l.contains("10.244.1.0/24")), "{nat:?}");
        assert_eq!(
            nat.iter().filter(|l| l.contains("10.244.7.0/24")).count(),
            3
        );
        assert_eq!(
            nat.iter()
                .filter(|l| l.starts_with("-A POSTROUTING"))
                .count(),
            2
        );
    });
}

#[test]
fn nftables_table_is_one_transaction_and_repaired() {
    in_netns("fw-nft", || async {
        let fw = Firewall::new(Mode::Nftables, settings()).await.unwrap();
        assert_eq!(fw.rules(), &RuleSet::new(Mode::Nftables, &settings()));
        assert!(matches!(fw.apply().await.unwrap(), Outcome::Repaired(_)));
        let want = fw.rules().clone();
        let check_table = || {
            let t = nft_table().expect("table ip flannel-ipv4 exists");
            let post = &t.chains["postrtg"];
            assert_eq!(
                (post.kind.as_deref(), post.hook.as_deref(), post.prio),
                (Some("nat"), Some("postrouting"), Some(100))
            );
            let masq: Vec<_> = want.masq.clone().unwrap().into_iter().map(Some).collect();
            assert_eq!(post.rules, masq);
            let fwd = &t.chains["forward"];
            assert_eq!(
                (fwd.kind.as_deref(), fwd.hook.as_deref(), fwd.prio),
                (Some("filter"), Some("forward"), Some(0))
            );
            let f: Vec<_> = want
                .forward
                .clone()
                .unwrap()
                .into_iter()
                .map(Some)
                .collect();
            assert_eq!(fwd.rules, f);
        };
        check_table();
        // The text form, as an operator reads it.
        let text = sh("nft", &["list", "table", "ip", "flannel-ipv4"]);
        assert!(
            text.contains("ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random"),
            "{text}"
        );
        assert_eq!(fw.apply().await.unwrap(), Outcome::InSync);
        assert_eq!(fw.check().await.unwrap(), Outcome::InSync);

        // One rule deleted by handle.
        let json = sh(
            "nft",
            &["-j", "-a", "list", "chain", "ip", "flannel-ipv4", "postrtg"],
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let handle = v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["rule"]["handle"].as_u64())
            .nth(2)
            .unwrap()
            .to_string();
        sh(
            "nft",
            &[
                "delete",
                "rule",
                "ip",
                "flannel-ipv4",
                "postrtg",
                "handle",
                &handle,
            ],
        );
        assert_eq!(
            fw.check().await.unwrap(),
            Outcome::Repaired(vec![
                "chain postrtg: 5 rules differ from the 6 wanted".into()
            ])
        );
        check_table();

        // A chain deleted, then the whole table.
        sh("nft", &["flush", "chain", "ip", "flannel-ipv4", "forward"]);
        sh("nft", &["delete", "chain", "ip", "flannel-ipv4", "forward"]);
        assert_eq!(
            fw.check().await.unwrap(),
            Outcome::Repaired(vec!["chain forward missing".into()])
        );
        check_table();
        sh("nft", &["delete", "table", "ip", "flannel-ipv4"]);
        assert_eq!(
            fw.check().await.unwrap(),
            Outcome::Repaired(vec!["table ip flannel-ipv4 missing".into()])
        );
        check_table();
        assert_eq!(fw.check().await.unwrap(), Outcome::InSync);

        // Masquerading switched off at the next start: only the forward chain stays.
        let mut s = settings();
        s.ip_masq = false;
        let fw = Firewall::new(Mode::Nftables, s).await.unwrap();
        fw.apply().await.unwrap();
        let t = nft_table().unwrap();
        assert_eq!(t.chains.keys().collect::<Vec<_>>(), ["forward"]);
    });
}

#[test]
fn cleanup_removes_both_modes_and_is_idempotent() {
    in_netns("fw-cleanup", || async {
        Firewall::new(Mode::Iptables, settings())
            .await
            .unwrap()
            .apply()
            .await
            .unwrap();
        Firewall::new(Mode::Nftables, settings())
            .await
            .unwrap()
            .apply()
            .await
            .unwrap();
        sh("nft", &["add", "table", "ip6", "flannel-ipv6"]);
        sh(
            "iptables",
            &["-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "DROP"],
        );

        // Start in nftables mode: the iptables mode is cleaned, FLANNEL-FWD in filter too.
        cleanup(Mode::Iptables, Scope::All).await.unwrap();
        assert!(!chains_in("nat").contains(&"FLANNEL-POSTRTG".to_owned()));
        assert!(!chains_in("filter").contains(&"FLANNEL-FWD".to_owned()));
        assert_eq!(rules_in("filter"), ["-A FORWARD -s 192.0.2.0/24 -j DROP"]);
        assert!(rules_in("nat").is_empty());
        assert!(nft_table().is_some(), "the nftables mode is not touched");

        cleanup_all(Scope::All).await.unwrap();
        assert!(nft_table().is_none());
        let tables = sh("nft", &["list", "tables"]);
        assert!(!tables.contains("flannel"), "{tables}");
        assert_eq!(rules_in("filter"), ["-A FORWARD -s 192.0.2.0/24 -j DROP"]);
        // Again, with nothing left.
        cleanup_all(Scope::All).await.unwrap();
    });
}

#[test]
fn two_networks_share_the_chains_without_a_fight() {
    in_netns("fw-two-networks", || async {
        let mut b = settings();
        b.network = "10.245.0.0/16".parse().unwrap();
        b.subnet = "10.245.1.0/24".parse().unwrap();
        for mode in [Mode::Iptables, Mode::Nftables] {
            let fw_a = Firewall::new(mode, settings()).await.unwrap();
            let fw_b = Firewall::new(mode, b).await.unwrap();
            assert!(matches!(fw_a.start().await.unwrap(), Outcome::Repaired(_)));
            assert!(matches!(fw_b.start().await.unwrap(), Outcome::Repaired(_)));
            // Each sees its own rules in place: no repair loop between the two daemons.
            assert_eq!(fw_a.check().await.unwrap(), Outcome::InSync, "{mode}");
            assert_eq!(fw_b.check().await.unwrap(), Outcome::InSync, "{mode}");
            // `weft cleanup --network` of B: A's rules stay as they are.
            cleanup(mode, Scope::only(b.network)).await.unwrap();
            assert_eq!(fw_a.check().await.unwrap(), Outcome::InSync, "{mode}");
            assert!(matches!(fw_b.check().await.unwrap(), Outcome::Repaired(_)));
            cleanup_all(Scope::All).await.unwrap();
        }
        // Mixed modes: B in nftables mode starts after A in iptables mode; B's start removes
        // only B's own iptables rules (none), not A's.
        let fw_a = Firewall::new(Mode::Iptables, settings()).await.unwrap();
        fw_a.start().await.unwrap();
        Firewall::new(Mode::Nftables, b)
            .await
            .unwrap()
            .start()
            .await
            .unwrap();
        assert_eq!(fw_a.check().await.unwrap(), Outcome::InSync);
        assert!(chains_in("nat").contains(&"FLANNEL-POSTRTG".to_owned()));
        cleanup_all(Scope::All).await.unwrap();
    });
}

/// Two writers of the shared chains at the same moment, as two daemons starting together or a
/// daemon's repair beside `weft cleanup --network` (concurrent tasks here, separate processes
/// on a host; the lock is a file lock either way): each reads before the other writes, so
/// without the lock (lock.rs) the second batch, made from its stale read, undoes the first.
#[test]
fn concurrent_writers_of_two_networks_keep_each_others_rules() {
    in_netns("fw-race", || async {
        let mut b = settings();
        b.network = "10.245.0.0/16".parse().unwrap();
        b.subnet = "10.245.1.0/24".parse().unwrap();
        let fwd = |n: &str| {
            let (s, d) = (format!("-s {n} "), format!("-d {n} "));
            rules_in("filter")
                .iter()
                .filter(|l| l.starts_with("-A FLANNEL-FWD") && (l.contains(&s) || l.contains(&d)))
                .count()
        };
        // nftables: the rules with an address inside network `n` (not the shared mark rule).
        let nft_rules = |n: &str| {
            let net = n.parse().unwrap();
            nft_table().map_or(0, |t| {
                t.chains
                    .values()
                    .flat_map(|c| &c.rules)
                    .flatten()
                    .filter(|r| (r.src.is_some() || r.dst.is_some()) && r.owned_by(Some(net)))
                    .count()
            })
        };
        let (net_a, net_b) = ("10.244.0.0/16", "10.245.0.0/16");
        for mode in [Mode::Iptables, Mode::Nftables] {
            let fw_a = Firewall::new(mode, settings()).await.unwrap();
            let fw_b = Firewall::new(mode, b).await.unwrap();
            // The rules of a network in this mode: iptables' forward chain, or nft's table.
            let count = |n: &str| match mode {
                Mode::Iptables => fwd(n),
                Mode::Nftables => nft_rules(n),
            };
            let (full_a, full_b) = match mode {
                Mode::Iptables => (2, 2),
                Mode::Nftables => {
                    let n = |fw: &Firewall| {
                        let r = fw.rules();
                        r.masq
                            .iter()
                            .chain(&r.forward)
                            .flatten()
                            .filter(|r| r.src.is_some() || r.dst.is_some())
                            .count()
                    };
                    (n(&fw_a), n(&fw_b))
                }
            };
            for round in 0..5 {
                // Both daemons start at once on an empty host.
                let (ra, rb) = tokio::join!(fw_a.apply(), fw_b.apply());
                ra.unwrap();
                rb.unwrap();
                assert_eq!(
                    (count(net_a), count(net_b)),
                    (full_a, full_b),
                    "{mode} round {round}: both started"
                );
                if mode == Mode::Iptables {
                    let jumps = rules_in("filter")
                        .iter()
                        .filter(|l| l.starts_with("-A FORWARD") && l.ends_with("FLANNEL-FWD"))
                        .count();
                    assert_eq!(jumps, 1, "{mode} round {round}: one jump");
                }
                // A's repair (one of its rules deleted by someone) beside B's cleanup.
                match mode {
                    Mode::Iptables => sh(
                        "iptables",
                        &[
                            "-D",
                            "FLANNEL-FWD",
                            "-s",
                            net_a,
                            "-m",
                            "comment",
                            "--comment",
                            "flanneld forward",
                            "-j",
                            "ACCEPT",
                        ],
                    ),
                    Mode::Nftables => {
                        let listed = sh(
                            "nft",
                            &["-a", "list", "chain", "ip", "flannel-ipv4", "forward"],
                        );
                        let handle = listed
                            .lines()
                            .find(|l| l.contains(&format!("ip saddr {net_a} accept")))
                            .and_then(|l| l.rsplit("# handle ").next())
                            .unwrap()
                            .trim()
                            .to_owned();
                        sh(
                            "nft",
                            &[
                                "delete",
                                "rule",
                                "ip",
                                "flannel-ipv4",
                                "forward",
                                "handle",
                                &handle,
                            ],
                        )
                    }
                };
                let (ra, rb) = tokio::join!(fw_a.check(), cleanup(mode, Scope::only(b.network)));
                ra.unwrap();
                rb.unwrap();
                assert_eq!(
                    (count(net_a), count(net_b)),
                    (full_a, 0),
                    "{mode} round {round}: A repaired, B cleaned up"
                );
                cleanup_all(Scope::All).await.unwrap();
            }
        }
    });
}

/// Waits up to `secs` for the watch to fire.
pub(super) async fn fired(w: &mut ChangeWatch, ms: u64) -> Option<String> {
    tokio::time::timeout(std::time::Duration::from_millis(ms), w.changed())
        .await
        .ok()
}

#[test]
fn change_watch_fires_for_our_rules_only() {
    in_netns("fw-watch", || async {
        let mut w = ChangeWatch::open();
        assert!(w.is_live());
        let fw = Firewall::new(Mode::Iptables, settings()).await.unwrap();
        assert!(fw.in_nf_tables, "Debian's iptables is iptables-nft");
        fw.apply().await.unwrap();
        // Our own batch is seen (one read follows in the agent), then all is quiet.
        assert!(fired(&mut w, 2000).await.is_some());
        assert_eq!(fired(&mut w, 300).await, None);

        // Other people's chains: not our business.
        sh("iptables", &["-t", "nat", "-N", "KUBE-POSTROUTING"]);
        sh(
            "iptables",
            &["-t", "nat", "-A", "KUBE-POSTROUTING", "-j", "RETURN"],
        );
        sh(
            "iptables",
            &["-t", "nat", "-A", "POSTROUTING", "-j", "KUBE-POSTROUTING"],
        );
        assert_eq!(fired(&mut w, 300).await, None);

        sh("iptables", &["-t", "nat", "-F", "FLANNEL-POSTRTG"]);
        assert_eq!(
            fired(&mut w, 2000).await.as_deref(),
            Some("DELRULE nat FLANNEL-POSTRTG")
        );
        assert!(matches!(fw.check().await.unwrap(), Outcome::Repaired(_)));
        assert!(fired(&mut w, 2000).await.is_some(), "our repair is seen");
        assert_eq!(fw.check().await.unwrap(), Outcome::InSync);

        let fw = Firewall::new(Mode::Nftables, settings()).await.unwrap();
        fw.apply().await.unwrap();
        assert!(fired(&mut w, 2000).await.is_some());
        sh("nft", &["delete", "table", "ip", "flannel-ipv4"]);
        let what = fired(&mut w, 2000).await.unwrap();
        assert!(what.contains("flannel-ipv4"), "{what}");
        // A table of someone else's: quiet.
        assert_eq!(fired(&mut w, 300).await, None);
        sh("nft", &["add", "table", "ip", "other"]);
        sh("nft", &["delete", "table", "ip", "other"]);
        assert_eq!(fired(&mut w, 300).await, None);
    });
}
