//! nftables mode: weft's own table `ip flannel-ipv4` (flanneld's name), written as ONE
//! `nft -f -` transaction and read back with `nft -j list table ip flannel-ipv4`. For IPv6
//! the table is `ip6 flannel-ipv6`, with the same chains and rules matching `ip6 saddr` /
//! `ip6 daddr` (multicast `ff00::/8`); [`parse`] reads either back.
//!
//! ```text
//! add table ip flannel-ipv4 { comment "rules for flannel-ipv4" ; }
//! add chain ip flannel-ipv4 forward { type filter hook forward priority filter ; }
//! flush chain ip flannel-ipv4 forward
//! add rule ip flannel-ipv4 forward ip saddr 10.244.0.0/16 accept
//! …
//! ```
//! `add` is idempotent and `flush` empties the chain inside the same transaction, so the kernel
//! swaps the old rules for the new ones atomically. No policy is ever set on the base chains
//! (accept): a drop policy here would drop every packet weft does not know about. The read and
//! the transaction made from it happen under the lock of [`super::lock`]: other networks'
//! daemons rewrite this table too.

use anyhow::Result;
use ipnet::IpNet;
use tracing::{debug, info};

use super::exec::{self, ToolError};
use super::lock;
use super::{Family, Parts, Rule, Verdict};

pub mod parse;

pub use parse::{ObservedChain, ObservedTable, parse_list};

/// One of flanneld's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// The nftables family (`ip`, `ip6`), which is also the protocol of its address matches.
    pub family: &'static str,
    pub name: &'static str,
    /// The addresses its rules match.
    pub addrs: Family,
}

/// `ip flannel-ipv4`.
pub const TABLE_V4: Table = Table {
    family: "ip",
    name: "flannel-ipv4",
    addrs: Family::V4,
};

/// `ip6 flannel-ipv6`.
pub const TABLE_V6: Table = Table {
    family: "ip6",
    name: "flannel-ipv6",
    addrs: Family::V6,
};

/// Both tables, IPv4 first.
pub const TABLES: [Table; 2] = [TABLE_V4, TABLE_V6];

impl Table {
    /// The table of `family`'s rules.
    pub fn of(family: Family) -> Table {
        match family {
            Family::V4 => TABLE_V4,
            Family::V6 => TABLE_V6,
        }
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.family, self.name)
    }
}

/// One of our base chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainSpec {
    pub name: &'static str,
    pub kind: &'static str,
    pub hook: &'static str,
    /// The priority as written (`filter`, `srcnat`) and as `nft -j` reports it (number).
    pub priority: &'static str,
    pub prio: i64,
}

/// `chain forward { type filter hook forward priority filter; }`
pub const FORWARD_CHAIN: ChainSpec = ChainSpec {
    name: "forward",
    kind: "filter",
    hook: "forward",
    priority: "filter",
    prio: 0,
};

/// `chain postrtg { type nat hook postrouting priority srcnat; }`
pub const MASQ_CHAIN: ChainSpec = ChainSpec {
    name: "postrtg",
    kind: "nat",
    hook: "postrouting",
    priority: "srcnat",
    prio: 100,
};

/// A rule's statement: `[meta mark & 0x4000 == 0x4000] [ip saddr [!=] …] [ip daddr [!=] …]
/// accept|return|masquerade [fully-random]`, with `ip6 saddr`/`ip6 daddr` for IPv6 prefixes.
pub fn rule_text(rule: &Rule) -> String {
    let mut parts = Vec::new();
    if let Some(mark) = rule.mark {
        parts.push(format!("meta mark & {mark:#x} == {mark:#x}"));
    }
    for (field, m) in [("saddr", rule.src), ("daddr", rule.dst)] {
        if let Some(m) = m {
            let not = if m.negated { "!= " } else { "" };
            let proto = Table::of(Family::of(&m.net)).family;
            parts.push(format!("{proto} {field} {not}{}", m.net));
        }
    }
    parts.push(
        match rule.verdict {
            Verdict::Accept => "accept",
            Verdict::Return => "return",
            Verdict::Masquerade { fully_random: true } => "masquerade fully-random",
            Verdict::Masquerade {
                fully_random: false,
            } => "masquerade",
        }
        .to_owned(),
    );
    parts.join(" ")
}

fn chain_decl(t: &Table, c: &ChainSpec) -> String {
    format!(
        "add chain {t} {} {{ type {} hook {} priority {} ; }}",
        c.name, c.kind, c.hook, c.priority
    )
}

/// One chain's rules split by owner: this network's (and the ones weft would never write,
/// which a rewrite drops), and other networks' (kept; see [`super::Rule::owned_by`]).
fn split(c: &ObservedChain, owner: Option<IpNet>) -> (Vec<Option<Rule>>, Vec<Rule>) {
    let mut ours = Vec::new();
    let mut others = Vec::new();
    for r in &c.rules {
        match r {
            Some(rule) if !rule.owned_by(owner) => others.push(*rule),
            _ => ours.push(*r),
        }
    }
    (ours, others)
}

/// A rule every network's set has (no address match: the kube-proxy mark rule).
fn shared(r: &Option<Rule>) -> bool {
    r.is_some_and(|r| r.src.is_none() && r.dst.is_none())
}

/// What to write in `table`: `None` when it is as wanted, else the differences found and the
/// one `nft -f -` transaction that fixes them. `seen`: `None` when the table does not exist.
/// Only the rules of `parts.owner`'s network count; other networks' rules in the chains stay
/// (after ours on a rewrite), and so do the chains and the table while they hold any.
pub(crate) fn plan(
    table: &Table,
    parts: Parts<'_>,
    seen: Option<&ObservedTable>,
) -> Option<(Vec<String>, String)> {
    let wanted = [(MASQ_CHAIN, parts.masq), (FORWARD_CHAIN, parts.forward)];
    let mut diffs = Vec::new();
    let any_rules = wanted.iter().any(|(_, w)| matches!(w, Some(Some(_))));
    let all_absent = wanted.iter().all(|(_, w)| matches!(w, Some(None)));
    let Some(seen) = seen else {
        if !any_rules {
            return None;
        }
        diffs.push(format!("table {table} missing"));
        return Some((diffs, ensure_script(table, &wanted, None, parts.owner)));
    };
    let others_anywhere = seen
        .chains
        .values()
        .any(|c| !split(c, parts.owner).1.is_empty());
    if all_absent && !others_anywhere {
        diffs.push(format!("table {table} present but not wanted, removed"));
        return Some((diffs, format!("delete table {table}\n")));
    }
    for (spec, want) in &wanted {
        let Some(want) = want else { continue };
        let chain = seen.chains.get(spec.name);
        match (want, chain) {
            (Some(_), None) => diffs.push(format!("chain {} missing", spec.name)),
            (Some(_), Some(c)) if !c.is(spec) => diffs.push(format!(
                "chain {} is not type {} hook {} priority {} policy accept",
                spec.name, spec.kind, spec.hook, spec.priority
            )),
            (Some(rules), Some(c)) => {
                let (ours, _) = split(c, parts.owner);
                if ours.len() != rules.len()
                    || ours.iter().zip(rules.iter()).any(|(a, b)| *a != Some(*b))
                {
                    diffs.push(format!(
                        "chain {}: {} rules differ from the {} wanted",
                        spec.name,
                        ours.len(),
                        rules.len()
                    ));
                }
            }
            (None, Some(c)) => {
                let (ours, others) = split(c, parts.owner);
                if others.is_empty() {
                    diffs.push(format!(
                        "chain {} present but not wanted, removed",
                        spec.name
                    ));
                } else if !ours.iter().all(shared) {
                    diffs.push(format!(
                        "chain {}: this network's rules present but not wanted, removed",
                        spec.name
                    ));
                }
            }
            (None, None) => {}
        }
    }
    if diffs.is_empty() {
        return None;
    }
    Some((
        diffs,
        ensure_script(table, &wanted, Some(seen), parts.owner),
    ))
}

type Wanted<'a> = [(ChainSpec, Option<Option<&'a [Rule]>>); 2];

/// The transaction: the table, then per chain either (re)declare + flush + our rules + other
/// networks' rules, or remove (or, while other networks' rules are in it, keep only theirs).
fn ensure_script(
    table: &Table,
    wanted: &Wanted<'_>,
    seen: Option<&ObservedTable>,
    owner: Option<IpNet>,
) -> String {
    let mut s = vec![format!(
        "add table {table} {{ comment \"rules for {}\" ; }}",
        table.name
    )];
    for (spec, want) in wanted {
        let Some(want) = want else { continue };
        let existing = seen.and_then(|t| t.chains.get(spec.name));
        let (ours, others) = existing.map(|c| split(c, owner)).unwrap_or_default();
        let flush = format!("flush chain {table} {}", spec.name);
        let delete = format!("delete chain {table} {}", spec.name);
        let add = |r: &Rule| format!("add rule {table} {} {}", spec.name, rule_text(r));
        match want {
            Some(rules) => {
                if existing.is_some_and(|c| !c.is(spec)) {
                    // Wrong type/hook/priority/policy: `add chain` cannot change it.
                    s.push(flush.clone());
                    s.push(delete);
                }
                s.push(chain_decl(table, spec));
                s.push(flush);
                s.extend(rules.iter().chain(&others).map(add));
            }
            None if !others.is_empty() => {
                s.push(flush);
                s.extend(ours.iter().filter(|r| shared(r)).flatten().map(add));
                s.extend(others.iter().map(add));
            }
            None => {
                if existing.is_some() {
                    s.push(flush);
                    s.push(delete);
                }
            }
        }
    }
    s.join("\n") + "\n"
}

/// `nft -j list table <table>`; `None` when the table does not exist.
async fn list(table: &Table) -> Result<Option<ObservedTable>, ToolError> {
    match exec::run(
        "nft",
        &["-j", "list", "table", table.family, table.name],
        None,
    )
    .await
    {
        Ok(json) => parse_list(table, &json)
            .map(Some)
            .map_err(|e| ToolError::Io {
                cmd: format!("nft -j list table {table}"),
                reason: format!("{e:#}"),
            }),
        Err(e)
            if e.stderr()
                .is_some_and(|s| s.contains("No such file or directory")) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Reads `family`'s table and writes one transaction if it differs. Returns what differed.
pub(crate) async fn reconcile(family: Family, parts: Parts<'_>) -> Result<Vec<String>> {
    let table = Table::of(family);
    // From the read to the write: other weft processes write this table too (lock.rs).
    let _lock = lock::exclusive().await?;
    let seen = list(&table).await?;
    let Some((diffs, script)) = plan(&table, parts, seen.as_ref()) else {
        debug!("nft table {table}: in place");
        return Ok(Vec::new());
    };
    exec::run("nft", &["-f", "-"], Some(&script)).await?;
    info!("nft -f -: {}", script.trim_end().replace('\n', " | "));
    Ok(diffs)
}

/// Cleans `ip flannel-ipv4` as `v4` says and `ip6 flannel-ipv6` as `v6` says: `None` leaves
/// the table alone, `Some(None)` deletes it if it exists, `Some(Some(net))` removes `net`'s
/// rules (and the table once no other network's rules are in it). Returns every failure.
pub(crate) async fn cleanup(v4: Option<Option<IpNet>>, v6: Option<Option<IpNet>>) -> Vec<String> {
    let mut errors = Vec::new();
    let mut whole = Vec::new();
    for (table, owner) in [(TABLE_V4, v4), (TABLE_V6, v6)] {
        match owner {
            None => {}
            Some(None) => whole.push(table),
            Some(Some(net)) => match reconcile(table.addrs, Parts::absent(Some(net))).await {
                Ok(_) => {}
                Err(e)
                    if e.downcast_ref::<ToolError>()
                        .is_some_and(ToolError::is_not_found) =>
                {
                    debug!("nftables cleanup: {e}; nothing to remove");
                    return errors;
                }
                Err(e) => errors.push(format!("{e:#}")),
            },
        }
    }
    if whole.is_empty() {
        return errors;
    }
    // No daemon's rewrite between our list and our delete (it would bring the table back).
    let _lock = match lock::exclusive().await {
        Ok(l) => l,
        Err(e) => {
            errors.push(e.to_string());
            return errors;
        }
    };
    let tables = match exec::run("nft", &["-j", "list", "tables"], None).await {
        Ok(json) => json,
        Err(e) if e.is_not_found() => {
            debug!("nftables cleanup: {e}; nothing to remove");
            return errors;
        }
        Err(e) => {
            errors.push(e.to_string());
            return errors;
        }
    };
    let present = match parse::present_tables(&tables) {
        Ok(p) => p,
        Err(e) => {
            errors.push(format!("nft -j list tables: {e:#}"));
            return errors;
        }
    };
    for table in present.into_iter().filter(|t| whole.contains(t)) {
        let cmd = format!("delete table {table}\n");
        match exec::run("nft", &["-f", "-"], Some(&cmd)).await {
            Ok(_) => info!("nft {}", cmd.trim_end()),
            Err(e) => errors.push(e.to_string()),
        }
    }
    errors
}

/// Whether this nft and kernel accept `masquerade fully-random` in `family` (`nft --check`,
/// nothing is committed).
pub(crate) async fn probe_fully_random(family: Family) -> Result<bool> {
    let f = Table::of(family).family;
    let probe = format!(
        "add table {f} weft-probe\n\
         add chain {f} weft-probe p {{ type nat hook postrouting priority srcnat ; }}\n\
         add rule {f} weft-probe p masquerade fully-random\n"
    );
    match exec::run("nft", &["--check", "-f", "-"], Some(&probe)).await {
        Ok(_) => Ok(true),
        Err(e @ ToolError::Failed { .. }) => {
            debug!("fully-random probe: {e}");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::parse::tests::{LISTED, LISTED_V6};
    use super::*;
    use crate::agent::firewall::tests::{settings, settings_v6};
    use crate::agent::firewall::{Mode, RuleSet};

    /// docs/flannel-compat.md §6.2: the rules for network 10.244.0.0/16, pod subnet 10.244.1.0/24
    /// (with weft's masked mark match, see the module docs of `firewall`).
    const GOLDEN_POSTRTG: &str = "meta mark & 0x4000 == 0x4000 return
ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return
ip saddr 10.244.0.0/16 ip daddr 10.244.1.0/24 return
ip saddr != 10.244.1.0/24 ip daddr 10.244.0.0/16 return
ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random";

    const GOLDEN_FORWARD: &str = "ip saddr 10.244.0.0/16 accept
ip daddr 10.244.0.0/16 accept";

    fn text(rules: &[Rule]) -> String {
        rules.iter().map(rule_text).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn rules_are_the_spec_rules() {
        let r = RuleSet::new(Mode::Nftables, &settings());
        assert_eq!(text(r.masq.as_ref().unwrap()), GOLDEN_POSTRTG);
        assert_eq!(text(r.forward.as_ref().unwrap()), GOLDEN_FORWARD);
        let mut s = settings();
        s.fully_random = false;
        let r = RuleSet::new(Mode::Nftables, &s);
        assert_eq!(
            text(r.masq.as_ref().unwrap()),
            GOLDEN_POSTRTG.replace(" fully-random", "")
        );
    }

    #[test]
    fn missing_table_gets_one_transaction() {
        let r = RuleSet::new(Mode::Nftables, &settings());
        let (diffs, script) = plan(&TABLE_V4, r.all(), None).unwrap();
        assert_eq!(diffs, ["table ip flannel-ipv4 missing"]);
        let mut expected = vec![
            "add table ip flannel-ipv4 { comment \"rules for flannel-ipv4\" ; }".to_owned(),
            "add chain ip flannel-ipv4 postrtg { type nat hook postrouting priority srcnat ; }"
                .to_owned(),
            "flush chain ip flannel-ipv4 postrtg".to_owned(),
        ];
        expected.extend(
            GOLDEN_POSTRTG
                .lines()
                .map(|l| format!("add rule ip flannel-ipv4 postrtg {l}")),
        );
        expected.push(
            "add chain ip flannel-ipv4 forward { type filter hook forward priority filter ; }"
                .to_owned(),
        );
        expected.push("flush chain ip flannel-ipv4 forward".to_owned());
        expected.extend(
            GOLDEN_FORWARD
                .lines()
                .map(|l| format!("add rule ip flannel-ipv4 forward {l}")),
        );
        assert_eq!(script, expected.join("\n") + "\n");
        // Nothing wanted and nothing there: nothing to do.
        assert_eq!(plan(&TABLE_V4, Parts::ABSENT, None), None);
    }

    #[test]
    fn plan_repairs_only_what_differs() {
        let mut s = settings();
        s.ip_masq = false;
        let r = RuleSet::new(Mode::Nftables, &s);
        let seen = parse_list(&TABLE_V4, LISTED).unwrap();
        // The audit looks at the forward chain only: in place.
        assert_eq!(plan(&TABLE_V4, r.active_only(), Some(&seen)), None);
        // Start-up also removes the masquerade chain, which is off.
        let (diffs, script) = plan(&TABLE_V4, r.all(), Some(&seen)).unwrap();
        assert_eq!(diffs, ["chain postrtg present but not wanted, removed"]);
        assert!(script.contains(
            "flush chain ip flannel-ipv4 postrtg\ndelete chain ip flannel-ipv4 postrtg\n"
        ));
        // With masquerading on, the listed postrtg differs (4 rules, flanneld's mark).
        let r = RuleSet::new(Mode::Nftables, &settings());
        let (diffs, _) = plan(&TABLE_V4, r.all(), Some(&seen)).unwrap();
        assert_eq!(diffs, ["chain postrtg: 4 rules differ from the 6 wanted"]);
        // Cleanup deletes the whole table.
        let (_, script) = plan(&TABLE_V4, Parts::ABSENT, Some(&seen)).unwrap();
        assert_eq!(script, "delete table ip flannel-ipv4\n");
    }

    #[test]
    fn a_chain_with_the_wrong_hook_is_recreated() {
        let mut seen = parse_list(&TABLE_V4, LISTED).unwrap();
        seen.chains.get_mut("forward").unwrap().policy = Some("drop".into());
        let mut s = settings();
        s.ip_masq = false;
        let r = RuleSet::new(Mode::Nftables, &s);
        let (diffs, script) = plan(&TABLE_V4, r.active_only(), Some(&seen)).unwrap();
        assert_eq!(
            diffs,
            ["chain forward is not type filter hook forward priority filter policy accept"]
        );
        assert!(script.contains("delete chain ip flannel-ipv4 forward\nadd chain"));
    }

    /// The same rules for the IPv6 half of the network (fd00:10:244::/56, pod subnet
    /// fd00:10:244:1::/64): `ip6` matches, multicast `ff00::/8`.
    const GOLDEN_POSTRTG_V6: &str = "meta mark & 0x4000 == 0x4000 return
ip6 saddr fd00:10:244:1::/64 ip6 daddr fd00:10:244::/56 return
ip6 saddr fd00:10:244::/56 ip6 daddr fd00:10:244:1::/64 return
ip6 saddr != fd00:10:244:1::/64 ip6 daddr fd00:10:244::/56 return
ip6 saddr fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade fully-random
ip6 saddr != fd00:10:244::/56 ip6 daddr fd00:10:244::/56 masquerade fully-random";

    const GOLDEN_FORWARD_V6: &str = "ip6 saddr fd00:10:244::/56 accept
ip6 daddr fd00:10:244::/56 accept";

    #[test]
    fn v6_rules_and_transaction() {
        let r = RuleSet::new(Mode::Nftables, &settings_v6());
        assert_eq!(text(r.masq.as_ref().unwrap()), GOLDEN_POSTRTG_V6);
        assert_eq!(text(r.forward.as_ref().unwrap()), GOLDEN_FORWARD_V6);
        let (diffs, script) = plan(&TABLE_V6, r.all(), None).unwrap();
        assert_eq!(diffs, ["table ip6 flannel-ipv6 missing"]);
        let mut expected = vec![
            "add table ip6 flannel-ipv6 { comment \"rules for flannel-ipv6\" ; }".to_owned(),
            "add chain ip6 flannel-ipv6 postrtg { type nat hook postrouting priority srcnat ; }"
                .to_owned(),
            "flush chain ip6 flannel-ipv6 postrtg".to_owned(),
        ];
        expected.extend(
            GOLDEN_POSTRTG_V6
                .lines()
                .map(|l| format!("add rule ip6 flannel-ipv6 postrtg {l}")),
        );
        expected.push(
            "add chain ip6 flannel-ipv6 forward { type filter hook forward priority filter ; }"
                .to_owned(),
        );
        expected.push("flush chain ip6 flannel-ipv6 forward".to_owned());
        expected.extend(
            GOLDEN_FORWARD_V6
                .lines()
                .map(|l| format!("add rule ip6 flannel-ipv6 forward {l}")),
        );
        assert_eq!(script, expected.join("\n") + "\n");
    }

    #[test]
    fn v6_plan_repairs_and_keeps_other_networks() {
        let seen = parse_list(&TABLE_V6, LISTED_V6).unwrap();
        let r = RuleSet::new(Mode::Nftables, &settings_v6());
        // The forward chain is in place; postrtg lacks two rules and holds a foreign host rule
        // (2001:db8::1, outside the network: another network's, kept after ours).
        let (diffs, script) = plan(&TABLE_V6, r.all(), Some(&seen)).unwrap();
        assert_eq!(diffs, ["chain postrtg: 4 rules differ from the 6 wanted"]);
        assert!(
            script.ends_with(
                "ip6 saddr != fd00:10:244::/56 ip6 daddr fd00:10:244::/56 masquerade fully-random\n\
                 add rule ip6 flannel-ipv6 postrtg ip6 saddr 2001:db8::1/128 masquerade\n\
                 add chain ip6 flannel-ipv6 forward { type filter hook forward priority filter ; }\n\
                 flush chain ip6 flannel-ipv6 forward\n\
                 add rule ip6 flannel-ipv6 forward ip6 saddr fd00:10:244::/56 accept\n\
                 add rule ip6 flannel-ipv6 forward ip6 daddr fd00:10:244::/56 accept\n"
            ),
            "{script}"
        );
        assert!(!script.contains(" ip "), "{script}");
        // This network's removal keeps the table for the foreign rule (and the shared mark rule).
        let (_, script) = plan(&TABLE_V6, Parts::absent(Some(r.network)), Some(&seen)).unwrap();
        assert_eq!(
            script,
            "add table ip6 flannel-ipv6 { comment \"rules for flannel-ipv6\" ; }\n\
             flush chain ip6 flannel-ipv6 postrtg\n\
             add rule ip6 flannel-ipv6 postrtg meta mark & 0x4000 == 0x4000 return\n\
             add rule ip6 flannel-ipv6 postrtg ip6 saddr 2001:db8::1/128 masquerade\n\
             flush chain ip6 flannel-ipv6 forward\n\
             delete chain ip6 flannel-ipv6 forward\n"
        );
        // The IPv4 network owns nothing here: its removal leaves the table alone.
        let v4 = RuleSet::new(Mode::Nftables, &settings());
        assert_eq!(
            plan(&TABLE_V6, Parts::absent(Some(v4.network)), Some(&seen)),
            None
        );
        // Cleanup of every network deletes the whole table.
        let (_, script) = plan(&TABLE_V6, Parts::ABSENT, Some(&seen)).unwrap();
        assert_eq!(script, "delete table ip6 flannel-ipv6\n");
    }
}
