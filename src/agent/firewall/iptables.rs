//! iptables mode: flanneld's chains, written with `iptables-restore --noflush --wait` and read
//! back with `iptables-save -t <table>`; for IPv6 the same with `ip6tables-restore` and
//! `ip6tables-save` (same chains, comments and jumps, IPv6 prefixes in `-s`/`-d`).
//!
//! One batch per table, applied atomically by iptables-restore:
//! ```text
//! *nat
//! :FLANNEL-POSTRTG - [0:0]        create the chain, or flush it when it exists (--noflush)
//! -A FLANNEL-POSTRTG …            every rule, in order
//! -A POSTROUTING … -j FLANNEL-POSTRTG   only when the jump is missing (appended, as flanneld)
//! COMMIT
//! ```
//! Rules are rendered exactly as `iptables-save` prints them, so the read-back is compared line
//! by line with what is wanted.
//!
//! Several flannel networks on one host share the chains (as flanneld's daemons do): only the
//! lines of this daemon's network ([`super::Rule::owned_by`]) are compared; a rewrite puts this
//! network's rules first and keeps every other network's line after them, in their order, and
//! a removal keeps the chain and its jump while other networks' rules are in it. The read and
//! the write of one chain happen under the lock of [`super::lock`], so the other networks'
//! lines written back are the ones in the chain at the write, not an older read's.

use std::net::IpAddr;

use ipnet::IpNet;
use tracing::{debug, info};

use super::exec::{self, ToolError};
use super::lock;
use super::{FORWARD_COMMENT, Family, MASQ_COMMENT, Parts, Rule, Verdict};

/// The tools of one family: (`iptables`, `iptables-save`, `iptables-restore`) or the
/// `ip6tables` ones.
pub fn tools(family: Family) -> (&'static str, &'static str, &'static str) {
    match family {
        Family::V4 => ("iptables", "iptables-save", "iptables-restore"),
        Family::V6 => ("ip6tables", "ip6tables-save", "ip6tables-restore"),
    }
}

/// One of flanneld's chains and where it hangs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    pub table: &'static str,
    pub name: &'static str,
    /// The built-in chain holding the jump.
    pub parent: &'static str,
    pub comment: &'static str,
}

/// `nat FLANNEL-POSTRTG`, jumped to from `POSTROUTING`.
pub const MASQ_CHAIN: Chain = Chain {
    table: "nat",
    name: "FLANNEL-POSTRTG",
    parent: "POSTROUTING",
    comment: MASQ_COMMENT,
};

/// `filter FLANNEL-FWD`, jumped to from `FORWARD`.
pub const FORWARD_CHAIN: Chain = Chain {
    table: "filter",
    name: "FLANNEL-FWD",
    parent: "FORWARD",
    comment: FORWARD_COMMENT,
};

/// A rule as `iptables-save` prints it: `-A <chain> [!] -s … [!] -d … [-m mark --mark m/m]
/// -m comment --comment "<comment>" -j <target> [--random-fully]`.
pub fn rule_line(chain: &Chain, rule: &Rule) -> String {
    let mut s = format!("-A {}", chain.name);
    for (flag, m) in [("-s", rule.src), ("-d", rule.dst)] {
        if let Some(m) = m {
            let not = if m.negated { "! " } else { "" };
            s.push_str(&format!(" {not}{flag} {}", m.net));
        }
    }
    if let Some(mark) = rule.mark {
        s.push_str(&format!(" -m mark --mark {mark:#x}/{mark:#x}"));
    }
    s.push_str(&format!(" -m comment --comment \"{}\"", chain.comment));
    s.push_str(match rule.verdict {
        Verdict::Accept => " -j ACCEPT",
        Verdict::Return => " -j RETURN",
        Verdict::Masquerade { fully_random: true } => " -j MASQUERADE --random-fully",
        Verdict::Masquerade {
            fully_random: false,
        } => " -j MASQUERADE",
    });
    s
}

/// The jump into our chain: `-A POSTROUTING -m comment --comment "flanneld masq" -j
/// FLANNEL-POSTRTG`.
pub fn jump_line(chain: &Chain) -> String {
    format!(
        "-A {} -m comment --comment \"{}\" -j {}",
        chain.parent, chain.comment, chain.name
    )
}

/// What `iptables-save -t <table>` shows of one of our chains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub chain_exists: bool,
    /// The chain's `-A <chain> …` lines, in order.
    pub rules: Vec<String>,
    /// Our exact jump line is in the parent chain.
    pub jump_present: bool,
    /// Every rule elsewhere that jumps or goes to our chain (our jump included).
    pub references: Vec<String>,
}

/// Reads one chain's state out of `iptables-save` output (only the chain's table counts).
pub fn observe(save: &str, chain: &Chain) -> Observed {
    let mut seen = Observed::default();
    let decl = format!(":{} ", chain.name);
    let own = format!("-A {} ", chain.name);
    let jump = jump_line(chain);
    let mut in_table = false;
    for line in save.lines().map(str::trim_end) {
        if let Some(t) = line.strip_prefix('*') {
            in_table = t == chain.table;
            continue;
        }
        if !in_table {
            continue;
        }
        if line.starts_with(&decl) {
            seen.chain_exists = true;
        } else if line.starts_with(&own) {
            seen.rules.push(line.to_owned());
        } else if line.starts_with("-A ") && targets(line, chain.name) {
            seen.jump_present |= line == jump;
            seen.references.push(line.to_owned());
        }
    }
    seen
}

/// Whether a rule line jumps (`-j`) or goes (`-g`) to `name`.
fn targets(line: &str, name: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .any(|w| (w[0] == "-j" || w[0] == "-g") && w[1] == name)
}

/// The networks a rule line matches on (`-s`/`-d`, negated or not; IPv4 or IPv6).
fn line_nets(line: &str) -> Vec<IpNet> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "-s" || w[0] == "-d")
        .filter_map(|w| {
            w[1].parse::<IpNet>()
                .ok()
                .or_else(|| w[1].parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect()
}

/// Whether a rule line is the daemon's of `owner` (see [`super::Rule::owned_by`]).
fn line_owned(line: &str, owner: Option<IpNet>) -> bool {
    super::owned_by(line_nets(line).into_iter(), owner)
}

/// What to write for one chain: `None` when it is as wanted, else the differences found and
/// the `iptables-restore --noflush` batch that fixes them. `want`: `Some(rules)` = exactly these
/// rules plus our jump; `None` = the chain and every jump to it must be gone. Only the lines
/// of `owner`'s network count (None: every line); other networks' lines are kept.
pub fn plan(
    chain: &Chain,
    want: Option<&[Rule]>,
    seen: &Observed,
    owner: Option<IpNet>,
) -> Option<(Vec<String>, String)> {
    let what = format!("{} {}", chain.table, chain.name);
    let mut diffs = Vec::new();
    let mut batch = vec![format!("*{}", chain.table)];
    let (ours, others): (Vec<&String>, Vec<&String>) =
        seen.rules.iter().partition(|l| line_owned(l, owner));
    match want {
        Some(rules) => {
            let lines: Vec<String> = rules.iter().map(|r| rule_line(chain, r)).collect();
            if !seen.chain_exists {
                diffs.push(format!("{what}: chain missing"));
            } else if ours
                .iter()
                .map(|l| l.as_str())
                .ne(lines.iter().map(String::as_str))
            {
                diffs.push(format!(
                    "{what}: {} rules differ from the {} wanted",
                    ours.len(),
                    lines.len()
                ));
            }
            if !seen.jump_present {
                diffs.push(format!("{what}: jump from {} missing", chain.parent));
            }
            if diffs.is_empty() {
                return None;
            }
            batch.push(format!(":{} - [0:0]", chain.name));
            batch.extend(lines);
            batch.extend(others.into_iter().cloned());
            if !seen.jump_present {
                batch.push(jump_line(chain));
            }
        }
        None if !others.is_empty() => {
            // Other networks' rules stay, with the rules every network shares (no address).
            let shared = |l: &&String| line_nets(l).is_empty();
            if ours.iter().all(shared) {
                return None;
            }
            diffs.push(format!(
                "{what}: this network's rules present but not wanted, removed"
            ));
            batch.push(format!(":{} - [0:0]", chain.name));
            batch.extend(ours.into_iter().filter(shared).cloned());
            batch.extend(others.into_iter().cloned());
        }
        None => {
            if !seen.chain_exists && seen.references.is_empty() {
                return None;
            }
            diffs.push(format!("{what}: present but not wanted, removed"));
            for r in &seen.references {
                batch.push(format!("-D{}", &r[2..]));
            }
            if seen.chain_exists {
                batch.push(format!(":{} - [0:0]", chain.name));
                batch.push(format!("-X {}", chain.name));
            }
        }
    }
    batch.push("COMMIT".to_owned());
    let mut text = batch.join("\n");
    text.push('\n');
    Some((diffs, text))
}

/// Reads each part's table (of `family`'s tools) and writes one batch per table that differs.
/// Returns what differed.
pub(crate) async fn reconcile(family: Family, parts: Parts<'_>) -> anyhow::Result<Vec<String>> {
    let mut diffs = Vec::new();
    for (chain, want) in [(MASQ_CHAIN, parts.masq), (FORWARD_CHAIN, parts.forward)] {
        let Some(want) = want else { continue };
        diffs.extend(sync_chain(family, &chain, want, parts.owner).await?);
    }
    Ok(diffs)
}

async fn sync_chain(
    family: Family,
    chain: &Chain,
    want: Option<&[Rule]>,
    owner: Option<IpNet>,
) -> Result<Vec<String>, ToolError> {
    let (cmd, save, restore) = tools(family);
    // From the read to the write: other weft processes write this chain too (lock.rs).
    let _lock = lock::exclusive().await?;
    let saved = exec::run(save, &["-t", chain.table], None).await?;
    let seen = observe(&saved, chain);
    let Some((diffs, batch)) = plan(chain, want, &seen, owner) else {
        debug!("{cmd} -t {} {}: in place", chain.table, chain.name);
        return Ok(Vec::new());
    };
    exec::run(restore, &["--noflush", "--wait"], Some(&batch)).await?;
    info!(
        "{restore} --noflush -t {}: {}",
        chain.table,
        batch
            .lines()
            .filter(|l| !l.starts_with('*') && *l != "COMMIT")
            .collect::<Vec<_>>()
            .join(" | ")
    );
    Ok(diffs)
}

/// Removes both chains of `family` and every jump to them (with `owner`: that network's rules,
/// and the chains once no other network's rules are left in them); returns every failure. A
/// tool that is not installed, or (IPv6) a kernel without IPv6, has nothing to remove.
pub(crate) async fn cleanup(family: Family, owner: Option<IpNet>) -> Vec<String> {
    let cmd = tools(family).0;
    let mut errors = Vec::new();
    for chain in [MASQ_CHAIN, FORWARD_CHAIN] {
        match sync_chain(family, &chain, None, owner).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() || no_family(family, &e) => {
                debug!("{cmd} cleanup: {e}; nothing to remove");
                return Vec::new();
            }
            Err(e) => errors.push(format!("{cmd} -t {} {}: {e}", chain.table, chain.name)),
        }
    }
    errors
}

/// `ip6tables-save` on a kernel without IPv6 (`ipv6.disable=1`) fails with EAFNOSUPPORT.
fn no_family(family: Family, e: &ToolError) -> bool {
    family == Family::V6
        && e.stderr()
            .is_some_and(|s| s.contains("Address family not supported"))
}

/// Whether `iptables` (`ip6tables`) on PATH is iptables-nft (`iptables v1.8.9 (nf_tables)`),
/// whose rules nf_tables announces; iptables-legacy says `(legacy)`.
pub(crate) async fn is_nf_tables_flavour(family: Family) -> anyhow::Result<bool> {
    let v = exec::run(tools(family).0, &["--version"], None).await?;
    Ok(v.contains("nf_tables"))
}

/// Whether this iptables' (ip6tables') MASQUERADE target knows `--random-fully` (≥ 1.6.2).
pub(crate) async fn probe_random_fully(family: Family) -> anyhow::Result<bool> {
    let help = exec::run(tools(family).0, &["-j", "MASQUERADE", "-h"], None).await?;
    Ok(help.contains("--random-fully"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::agent::firewall::tests::{settings, settings_v6};
    use crate::agent::firewall::{Mode, RuleSet};

    /// docs/flannel-compat.md §6.1: flanneld's e2e golden text (network 10.244.0.0/16, pod subnet
    /// 10.244.1.0/24).
    const GOLDEN_NAT: &str = r#"-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully"#;

    const GOLDEN_FILTER: &str = r#"-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT"#;

    fn lines(chain: &Chain, rules: &[Rule]) -> String {
        let mut v = vec![jump_line(chain)];
        v.extend(rules.iter().map(|r| rule_line(chain, r)));
        v.join("\n")
    }

    #[test]
    fn rules_are_flannels_golden_text() {
        let r = RuleSet::new(Mode::Iptables, &settings());
        assert_eq!(lines(&MASQ_CHAIN, r.masq.as_ref().unwrap()), GOLDEN_NAT);
        assert_eq!(
            lines(&FORWARD_CHAIN, r.forward.as_ref().unwrap()),
            GOLDEN_FILTER
        );
    }

    #[test]
    fn random_fully_disabled_is_dropped() {
        let mut s = settings();
        s.fully_random = false;
        let r = RuleSet::new(Mode::Iptables, &s);
        let text = lines(&MASQ_CHAIN, r.masq.as_ref().unwrap());
        assert_eq!(text, GOLDEN_NAT.replace(" --random-fully", ""));
    }

    /// `iptables-save -t nat` as iptables-nft 1.8.9 printed it after our batch.
    fn save_of(body: &str) -> String {
        format!(
            "# Generated by iptables-save v1.8.9 (nf_tables) on Tue Nov 24 10:43:01 2026\n*nat\n\
             :PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             :POSTROUTING ACCEPT [0:0]\n{body}\nCOMMIT\n# Completed on Tue Nov 24 10:43:01 2026\n"
        )
    }

    #[test]
    fn in_place_means_no_batch() {
        let r = RuleSet::new(Mode::Iptables, &settings());
        let want = r.masq.as_deref();
        let save = save_of(&format!(":FLANNEL-POSTRTG - [0:0]\n{GOLDEN_NAT}"));
        let seen = observe(&save, &MASQ_CHAIN);
        assert!(seen.chain_exists && seen.jump_present);
        assert_eq!(seen.rules.len(), 6);
        assert_eq!(plan(&MASQ_CHAIN, want, &seen, None), None);
        // Same text under the filter table is not ours to see.
        assert_eq!(observe(&save, &FORWARD_CHAIN), Observed::default());
    }

    #[test]
    fn empty_table_gets_chain_rules_and_jump_in_one_batch() {
        let r = RuleSet::new(Mode::Iptables, &settings());
        let seen = observe(&save_of(""), &MASQ_CHAIN);
        let (diffs, batch) = plan(&MASQ_CHAIN, r.masq.as_deref(), &seen, None).unwrap();
        assert_eq!(
            diffs,
            [
                "nat FLANNEL-POSTRTG: chain missing",
                "nat FLANNEL-POSTRTG: jump from POSTROUTING missing"
            ]
        );
        let mut expected = vec!["*nat", ":FLANNEL-POSTRTG - [0:0]"];
        expected.extend(GOLDEN_NAT.lines().skip(1));
        expected.push(GOLDEN_NAT.lines().next().unwrap());
        expected.push("COMMIT");
        assert_eq!(batch, expected.join("\n") + "\n");
    }

    #[test]
    fn a_deleted_rule_flushes_and_rewrites_without_a_second_jump() {
        let r = RuleSet::new(Mode::Iptables, &settings());
        let body: Vec<&str> = GOLDEN_NAT
            .lines()
            .filter(|l| !l.contains("RETURN"))
            .collect();
        let seen = observe(
            &save_of(&format!(":FLANNEL-POSTRTG - [0:0]\n{}", body.join("\n"))),
            &MASQ_CHAIN,
        );
        let (diffs, batch) = plan(&MASQ_CHAIN, r.masq.as_deref(), &seen, None).unwrap();
        assert_eq!(
            diffs,
            ["nat FLANNEL-POSTRTG: 2 rules differ from the 6 wanted"]
        );
        assert!(batch.contains(":FLANNEL-POSTRTG - [0:0]\n"));
        assert!(!batch.contains("-A POSTROUTING"), "{batch}");
        assert_eq!(batch.matches("-A FLANNEL-POSTRTG").count(), 6);
    }

    #[test]
    fn a_missing_jump_alone_is_appended() {
        let r = RuleSet::new(Mode::Iptables, &settings());
        let body: Vec<&str> = GOLDEN_NAT.lines().skip(1).collect();
        let seen = observe(
            &save_of(&format!(":FLANNEL-POSTRTG - [0:0]\n{}", body.join("\n"))),
            &MASQ_CHAIN,
        );
        let (diffs, batch) = plan(&MASQ_CHAIN, r.masq.as_deref(), &seen, None).unwrap();
        assert_eq!(
            diffs,
            ["nat FLANNEL-POSTRTG: jump from POSTROUTING missing"]
        );
        assert!(batch.ends_with(&format!("{}\nCOMMIT\n", jump_line(&MASQ_CHAIN))));
    }

    #[test]
    fn removal_deletes_every_reference_then_the_chain() {
        let other = "-A PREROUTING -s 10.0.0.0/8 -j FLANNEL-POSTRTG";
        let save = save_of(&format!(
            ":FLANNEL-POSTRTG - [0:0]\n{other}\n{GOLDEN_NAT}\n-A POSTROUTING -j KUBE-POSTROUTING"
        ));
        let seen = observe(&save, &MASQ_CHAIN);
        assert_eq!(seen.references.len(), 2);
        let (_, batch) = plan(&MASQ_CHAIN, None, &seen, None).unwrap();
        assert_eq!(
            batch,
            "*nat\n-D PREROUTING -s 10.0.0.0/8 -j FLANNEL-POSTRTG\n\
             -D POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n\
             :FLANNEL-POSTRTG - [0:0]\n-X FLANNEL-POSTRTG\nCOMMIT\n"
        );
        // Nothing there: nothing to do.
        assert_eq!(
            plan(&MASQ_CHAIN, None, &observe(&save_of(""), &MASQ_CHAIN), None),
            None
        );
    }

    #[test]
    fn another_networks_rules_are_kept_and_do_not_count() {
        let mine = RuleSet::new(Mode::Iptables, &settings());
        let mut theirs_settings = settings();
        theirs_settings.network = "10.245.0.0/16".parse().unwrap();
        theirs_settings.subnet = "10.245.1.0/24".parse().unwrap();
        let theirs = RuleSet::new(Mode::Iptables, &theirs_settings);
        let their_lines: Vec<String> = theirs.masq.as_ref().unwrap()[1..]
            .iter()
            .map(|r| rule_line(&MASQ_CHAIN, r))
            .collect();
        let owner = Some(mine.network);
        // Their daemon wrote its rules after ours (each set begins with the shared mark rule,
        // which the chain holds once): ours are in place, theirs do not count.
        let save = save_of(&format!(
            ":FLANNEL-POSTRTG - [0:0]\n{GOLDEN_NAT}\n{}",
            their_lines.join("\n")
        ));
        let seen = observe(&save, &MASQ_CHAIN);
        assert_eq!(seen.rules.len(), 11);
        assert_eq!(plan(&MASQ_CHAIN, mine.masq.as_deref(), &seen, owner), None);
        assert_eq!(
            plan(
                &MASQ_CHAIN,
                theirs.masq.as_deref(),
                &seen,
                Some(theirs.network)
            ),
            None,
            "their daemon sees its own rules in place too"
        );
        // One of ours deleted: the rewrite puts ours first and keeps theirs after them.
        let without: Vec<&str> = save
            .lines()
            .filter(|l| !l.starts_with("-A FLANNEL-POSTRTG -s 10.244.1.0/24"))
            .collect();
        let seen = observe(&without.join("\n"), &MASQ_CHAIN);
        let (diffs, batch) = plan(&MASQ_CHAIN, mine.masq.as_deref(), &seen, owner).unwrap();
        assert_eq!(
            diffs,
            ["nat FLANNEL-POSTRTG: 5 rules differ from the 6 wanted"]
        );
        let mut expected = vec!["*nat".to_owned(), ":FLANNEL-POSTRTG - [0:0]".to_owned()];
        expected.extend(GOLDEN_NAT.lines().skip(1).map(str::to_owned));
        expected.extend(their_lines.iter().cloned());
        expected.push("COMMIT".to_owned());
        assert_eq!(batch, expected.join("\n") + "\n");
        // Our removal keeps the chain, its jump, the shared mark rule and their rules.
        let (diffs, batch) = plan(&MASQ_CHAIN, None, &observe(&save, &MASQ_CHAIN), owner).unwrap();
        assert_eq!(
            diffs,
            ["nat FLANNEL-POSTRTG: this network's rules present but not wanted, removed"]
        );
        let mut expected = vec!["*nat".to_owned(), ":FLANNEL-POSTRTG - [0:0]".to_owned()];
        expected.push(GOLDEN_NAT.lines().nth(1).unwrap().to_owned());
        expected.extend(their_lines.iter().cloned());
        expected.push("COMMIT".to_owned());
        assert_eq!(batch, expected.join("\n") + "\n");
        // Once only theirs are left, our removal has nothing to do.
        let left = save_of(&format!(
            ":FLANNEL-POSTRTG - [0:0]\n{}\n{}\n{}",
            GOLDEN_NAT.lines().next().unwrap(),
            GOLDEN_NAT.lines().nth(1).unwrap(),
            their_lines.join("\n")
        ));
        assert_eq!(
            plan(&MASQ_CHAIN, None, &observe(&left, &MASQ_CHAIN), owner),
            None
        );
    }

    /// §6.1 for IPv6 ("identical with `ff00::/8`"): network fd00:10:244::/56, pod subnet
    /// fd00:10:244:1::/64.
    const GOLDEN_NAT_V6: &str = r#"-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s fd00:10:244:1::/64 -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s fd00:10:244::/56 -d fd00:10:244:1::/64 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s fd00:10:244::/56 -d fd00:10:244:1::/64 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s fd00:10:244::/56 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s fd00:10:244::/56 -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully"#;

    const GOLDEN_FILTER_V6: &str = r#"-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s fd00:10:244::/56 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d fd00:10:244::/56 -m comment --comment "flanneld forward" -j ACCEPT"#;

    /// `ip6tables-save -t nat` (ip6tables-nft 1.8.9) in a scratch namespace after the golden
    /// batch and two foreign rules, as written `-d 2001:db8::1` and `-d 2001:DB8:0:0::2/128`:
    /// it prints hosts as `/128`, lower case and compressed, as `Ipv6Net` displays them.
    const SAVED_V6: &str = r#"# Generated by ip6tables-save v1.8.9 (nf_tables) on Fri Dec  4 08:20:56 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:FLANNEL-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A POSTROUTING -d 2001:db8::1/128 -j ACCEPT
-A POSTROUTING -d 2001:db8::2/128 -j ACCEPT
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s fd00:10:244:1::/64 -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s fd00:10:244::/56 -d fd00:10:244:1::/64 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s fd00:10:244::/56 -d fd00:10:244:1::/64 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s fd00:10:244::/56 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s fd00:10:244::/56 -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
COMMIT
# Completed on Fri Dec  4 08:20:56 2026
"#;

    #[test]
    fn v6_rules_are_flannels_golden_text() {
        let r = RuleSet::new(Mode::Iptables, &settings_v6());
        assert_eq!(lines(&MASQ_CHAIN, r.masq.as_ref().unwrap()), GOLDEN_NAT_V6);
        assert_eq!(
            lines(&FORWARD_CHAIN, r.forward.as_ref().unwrap()),
            GOLDEN_FILTER_V6
        );
        assert_eq!(tools(Family::V6).2, "ip6tables-restore");
    }

    #[test]
    fn v6_read_back_is_in_place_and_owned() {
        let r = RuleSet::new(Mode::Iptables, &settings_v6());
        let seen = observe(SAVED_V6, &MASQ_CHAIN);
        assert!(seen.chain_exists && seen.jump_present);
        assert_eq!(seen.rules.len(), 6);
        assert_eq!(
            plan(&MASQ_CHAIN, r.masq.as_deref(), &seen, Some(r.network)),
            None
        );
        assert_eq!(
            line_nets("-A POSTROUTING -d 2001:db8::1/128 -j ACCEPT"),
            ["2001:db8::1/128".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            line_nets(&seen.rules[4]),
            ["fd00:10:244::/56", "ff00::/8"]
                .map(|n| n.parse::<IpNet>().unwrap())
                .to_vec()
        );
        // Ownership: the v6 network owns its lines; an IPv4 network, or another IPv6 network,
        // owns only the shared mark rule.
        let v6 = Some(r.network);
        let v4 = Some(RuleSet::new(Mode::Iptables, &settings()).network);
        let other = Some("fd00:10:245::/56".parse().unwrap());
        assert!(seen.rules.iter().all(|l| line_owned(l, v6)));
        for owner in [v4, other] {
            let owned: Vec<_> = seen.rules.iter().filter(|l| line_owned(l, owner)).collect();
            assert_eq!(owned, [&seen.rules[0]]);
            // Their removal has nothing to do here.
            assert_eq!(plan(&MASQ_CHAIN, None, &seen, owner), None);
        }
        // This network's removal: our chain and jump go, the foreign POSTROUTING rules stay.
        let (diffs, batch) = plan(&MASQ_CHAIN, None, &seen, v6).unwrap();
        assert_eq!(
            diffs,
            ["nat FLANNEL-POSTRTG: present but not wanted, removed"]
        );
        assert_eq!(
            batch,
            "*nat\n-D POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n\
             :FLANNEL-POSTRTG - [0:0]\n-X FLANNEL-POSTRTG\nCOMMIT\n"
        );
    }
}
