//! IPv6 and dual-stack: the real tools (`ip6tables*`, `nft … ip6 flannel-ipv6`) against a fresh
//! network namespace per test, as in [`super::netns_tests`] (root only; under CI=true a missing
//! requirement fails).
#![allow(clippy::unwrap_used)]

use super::netns_tests::{chains_of, expected_lines, fired, in_netns, nft_table_of, rules_of, sh};
use super::tests::{settings, settings_v6};
use super::*;

/// Neither family's chains are left in `table` (`FLANNEL-POSTRTG`, `FLANNEL-FWD`).
fn no_chains_left(family: Family) {
    for table in ["nat", "filter"] {
        let chains = chains_of(family, table);
        assert!(
            !chains.iter().any(|c| c.starts_with("FLANNEL")),
            "{family} {table}: {chains:?}"
        );
        let rules = rules_of(family, table);
        assert!(
            !rules.iter().any(|l| l.contains("FLANNEL")),
            "{family} {table}: {rules:?}"
        );
    }
}

/// The rules `fw` wants, as its `ip(6)tables-save` shows them: (nat lines, filter lines).
fn saved_lines(fw: &Firewall) -> (Vec<String>, Vec<String>) {
    let r = fw.rules();
    (
        expected_lines(&iptables::MASQ_CHAIN, r.masq.as_ref().unwrap()),
        expected_lines(&iptables::FORWARD_CHAIN, r.forward.as_ref().unwrap()),
    )
}

/// `fw`'s nftables table holds exactly its rules.
fn assert_nft_table(fw: &Firewall) {
    let t = nft_table_of(fw.family()).expect("table exists");
    let r = fw.rules();
    let masq: Vec<_> = r.masq.clone().unwrap().into_iter().map(Some).collect();
    let fwd: Vec<_> = r.forward.clone().unwrap().into_iter().map(Some).collect();
    assert_eq!(t.chains["postrtg"].rules, masq);
    assert_eq!(t.chains["forward"].rules, fwd);
}

#[test]
fn ip6tables_rules_are_flannels_and_repaired() {
    in_netns("fw-v6-iptables", || async {
        let fw = Firewall::new(Mode::Iptables, settings_v6()).await.unwrap();
        assert_eq!(fw.family(), Family::V6);
        // ip6tables 1.8.9 supports --random-fully: the probe must keep it.
        assert_eq!(fw.rules(), &RuleSet::new(Mode::Iptables, &settings_v6()));
        let (nat, filter) = saved_lines(&fw);
        assert!(nat.iter().any(|l| l.contains("! -d ff00::/8")), "{nat:?}");

        assert!(matches!(fw.apply().await.unwrap(), Outcome::Repaired(_)));
        assert_eq!(rules_of(Family::V6, "nat"), nat);
        assert_eq!(rules_of(Family::V6, "filter"), filter);
        // Nothing of IPv4 was touched.
        assert!(rules_of(Family::V4, "nat").is_empty());
        assert!(rules_of(Family::V4, "filter").is_empty());
        // Read back identical: no write.
        assert_eq!(fw.apply().await.unwrap(), Outcome::InSync);
        assert_eq!(fw.check().await.unwrap(), Outcome::InSync);

        // A masquerade rule deleted by hand.
        sh(
            "ip6tables",
            &[
                "-t",
                "nat",
                "-D",
                "FLANNEL-POSTRTG",
                "-s",
                "fd00:10:244::/56",
                "!",
                "-d",
                "ff00::/8",
                "-m",
                "comment",
                "--comment",
                "flanneld masq",
                "-j",
                "MASQUERADE",
                "--random-fully",
            ],
        );
        assert_ne!(rules_of(Family::V6, "nat"), nat);
        assert_eq!(
            fw.check().await.unwrap(),
            Outcome::Repaired(vec![
                "nat FLANNEL-POSTRTG: 5 rules differ from the 6 wanted".into()
            ])
        );
        assert_eq!(rules_of(Family::V6, "nat"), nat);

        // The forward jump deleted.
        sh(
            "ip6tables",
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
        assert_eq!(
            fw.check().await.unwrap(),
            Outcome::Repaired(vec!["filter FLANNEL-FWD: jump from FORWARD missing".into()])
        );
        assert_eq!(rules_of(Family::V6, "filter"), filter);
        assert_eq!(fw.check().await.unwrap(), Outcome::InSync);

        // A new IPv6 subnet after a lost lease: rewritten in place.
        let mut fw = fw;
        fw.set_subnet("fd00:10:244:7::/64".parse().unwrap())
            .unwrap();
        assert!(matches!(fw.apply().await.unwrap(), Outcome::Repaired(_)));
        let now = rules_of(Family::V6, "nat");
        assert!(!now.iter().any(|l| l.contains("fd00:10:244:1::/64")));
        assert_eq!(
            now.iter()
                .filter(|l| l.contains("fd00:10:244:7::/64"))
                .count(),
            3
        );
    });
}

#[test]
fn nftables_ip6_table_is_written_once_and_repaired() {
    in_netns("fw-v6-nft", || async {
        let fw = Firewall::new(Mode::Nftables, settings_v6()).await.unwrap();
        assert_eq!(fw.rules(), &RuleSet::new(Mode::Nftables, &settings_v6()));
        assert_eq!(
            fw.apply().await.unwrap(),
            Outcome::Repaired(vec!["table ip6 flannel-ipv6 missing".into()])
        );
        assert_nft_table(&fw);
        assert!(nft_table_of(Family::V4).is_none(), "no IPv4 table");
        // The text form, as an operator reads it.
        let text = sh("nft", &["list", "table", "ip6", "flannel-ipv6"]);
        for want in [
            "comment \"rules for flannel-ipv6\"",
            "type nat hook postrouting priority srcnat; policy accept;",
            "ip6 saddr fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade fully-random",
            "ip6 saddr != fd00:10:244:1::/64 ip6 daddr fd00:10:244::/56 return",
            "ip6 daddr fd00:10:244::/56 accept",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        assert_eq!(fw.apply().await.unwrap(), Outcome::InSync);
        assert_eq!(fw.check().await.unwrap(), Outcome::InSync);

        // One rule deleted by handle.
        let json = sh(
            "nft",
            &[
                "-j",
                "-a",
                "list",
                "chain",
                "ip6",
                "flannel-ipv6",
                "postrtg",
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let handle = v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["rule"]["handle"].as_u64())
            .nth(4)
            .unwrap()
            .to_string();
        sh(
            "nft",
            &[
                "delete",
                "rule",
                "ip6",
                "flannel-ipv6",
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
        assert_nft_table(&fw);

        // The whole table deleted.
        sh("nft", &["delete", "table", "ip6", "flannel-ipv6"]);
        assert_eq!(
            fw.check().await.unwrap(),
            Outcome::Repaired(vec!["table ip6 flannel-ipv6 missing".into()])
        );
        assert_nft_table(&fw);
        assert_eq!(fw.check().await.unwrap(), Outcome::InSync);
    });
}

#[test]
fn dual_stack_firewalls_coexist_and_cleanup_removes_both() {
    in_netns("fw-dual-stack", || async {
        for mode in [Mode::Iptables, Mode::Nftables] {
            let fw4 = Firewall::new(mode, settings()).await.unwrap();
            let fw6 = Firewall::new(mode, settings_v6()).await.unwrap();
            assert!(matches!(fw4.start().await.unwrap(), Outcome::Repaired(_)));
            assert!(matches!(fw6.start().await.unwrap(), Outcome::Repaired(_)));
            // Each one's start (which cleans the other mode of its own family) and apply left
            // the other family alone.
            assert_eq!(fw4.check().await.unwrap(), Outcome::InSync, "{mode}");
            assert_eq!(fw6.check().await.unwrap(), Outcome::InSync, "{mode}");
            assert_eq!(fw4.apply().await.unwrap(), Outcome::InSync, "{mode}");
            match mode {
                Mode::Iptables => {
                    for fw in [&fw4, &fw6] {
                        let (nat, filter) = saved_lines(fw);
                        assert_eq!(rules_of(fw.family(), "nat"), nat);
                        assert_eq!(rules_of(fw.family(), "filter"), filter);
                    }
                }
                Mode::Nftables => {
                    assert_nft_table(&fw4);
                    assert_nft_table(&fw6);
                }
            }

            // `cleanup` of the IPv6 network alone: the IPv4 rules stay.
            let v6_only = Scope::Networks {
                v4: None,
                v6: Some("fd00:10:244::/56".parse().unwrap()),
            };
            cleanup(mode, v6_only).await.unwrap();
            assert_eq!(fw4.check().await.unwrap(), Outcome::InSync, "{mode}");
            assert!(matches!(fw6.check().await.unwrap(), Outcome::Repaired(_)));

            // Both networks of the dual-stack network: nothing of either family is left.
            let both = Scope::Networks {
                v4: Some("10.244.0.0/16".parse().unwrap()),
                v6: Some("fd00:10:244::/56".parse().unwrap()),
            };
            cleanup_all(both).await.unwrap();
            for family in Family::BOTH {
                no_chains_left(family);
                assert!(nft_table_of(family).is_none(), "{mode} {family}");
            }
            cleanup_all(both).await.unwrap();
        }

        // Everything of both modes and families, then `cleanup_all(All)`.
        for mode in [Mode::Iptables, Mode::Nftables] {
            for s in [settings(), settings_v6()] {
                Firewall::new(mode, s).await.unwrap().apply().await.unwrap();
            }
        }
        sh(
            "ip6tables",
            &["-A", "FORWARD", "-s", "2001:db8::/64", "-j", "DROP"],
        );
        // The other mode's cleanup at start in one family leaves the other family's rules.
        cleanup(Mode::Iptables, Scope::only(settings().network))
            .await
            .unwrap();
        no_chains_left(Family::V4);
        assert!(chains_of(Family::V6, "nat").contains(&"FLANNEL-POSTRTG".to_owned()));

        cleanup_all(Scope::All).await.unwrap();
        for family in Family::BOTH {
            no_chains_left(family);
        }
        let tables = sh("nft", &["list", "tables"]);
        assert!(!tables.contains("flannel"), "{tables}");
        assert_eq!(
            rules_of(Family::V6, "filter"),
            ["-A FORWARD -s 2001:db8::/64 -j DROP"]
        );
        cleanup_all(Scope::All).await.unwrap();
    });
}

#[test]
fn change_watch_fires_for_ip6_rules() {
    in_netns("fw-v6-watch", || async {
        let mut w = ChangeWatch::open();
        assert!(w.is_live());
        let fw = Firewall::new(Mode::Iptables, settings_v6()).await.unwrap();
        assert!(fw.in_nf_tables, "Debian's ip6tables is ip6tables-nft");
        fw.apply().await.unwrap();
        assert!(fired(&mut w, 2000).await.is_some());
        assert_eq!(fired(&mut w, 300).await, None);

        sh("ip6tables", &["-t", "nat", "-F", "FLANNEL-POSTRTG"]);
        assert_eq!(
            fired(&mut w, 2000).await.as_deref(),
            Some("DELRULE ip6 nat FLANNEL-POSTRTG")
        );
        assert!(matches!(fw.check().await.unwrap(), Outcome::Repaired(_)));
        assert!(fired(&mut w, 2000).await.is_some(), "our repair is seen");

        let fw = Firewall::new(Mode::Nftables, settings_v6()).await.unwrap();
        fw.apply().await.unwrap();
        assert!(fired(&mut w, 2000).await.is_some());
        sh("nft", &["delete", "table", "ip6", "flannel-ipv6"]);
        let what = fired(&mut w, 2000).await.unwrap();
        assert!(what.contains("ip6 flannel-ipv6"), "{what}");
        // Someone else's ip6 table: quiet.
        sh("nft", &["add", "table", "ip6", "other"]);
        sh("nft", &["delete", "table", "ip6", "other"]);
        assert_eq!(fired(&mut w, 300).await, None);
    });
}
