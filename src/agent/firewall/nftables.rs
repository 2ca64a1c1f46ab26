//! nftables mode: weft's own table `ip flannel-ipv4` (flanneld's name), written as ONE
//! `nft -f -` transaction and read back with `nft -j list table ip flannel-ipv4`.
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
//! (accept): a drop policy here would drop every packet weft does not know about.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::{Context as _, Result, anyhow};
use ipnet::Ipv4Net;
use serde_json::Value;
use tracing::{debug, info};

use super::exec::{self, ToolError};
use super::{AddrMatch, Parts, Rule, Verdict};

pub const FAMILY: &str = "ip";
pub const TABLE: &str = "flannel-ipv4";
/// flanneld's IPv6 table; weft does not create it but removes it on cleanup.
pub const TABLE_V6: &str = "flannel-ipv6";

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
/// accept|return|masquerade [fully-random]`.
pub fn rule_text(rule: &Rule) -> String {
    let mut parts = Vec::new();
    if let Some(mark) = rule.mark {
        parts.push(format!("meta mark & {mark:#x} == {mark:#x}"));
    }
    for (field, m) in [("saddr", rule.src), ("daddr", rule.dst)] {
        if let Some(m) = m {
            let not = if m.negated { "!= " } else { "" };
            parts.push(format!("ip {field} {not}{}", m.net));
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

fn chain_decl(c: &ChainSpec) -> String {
    format!(
        "add chain {FAMILY} {TABLE} {} {{ type {} hook {} priority {} ; }}",
        c.name, c.kind, c.hook, c.priority
    )
}

/// What `nft -j list table ip flannel-ipv4` shows of one chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedChain {
    pub kind: Option<String>,
    pub hook: Option<String>,
    pub prio: Option<i64>,
    pub policy: Option<String>,
    /// Each rule in order; `None` for a rule weft would never write.
    pub rules: Vec<Option<Rule>>,
}

impl ObservedChain {
    fn is(&self, spec: &ChainSpec) -> bool {
        self.kind.as_deref() == Some(spec.kind)
            && self.hook.as_deref() == Some(spec.hook)
            && self.prio == Some(spec.prio)
            && self.policy.as_deref().is_none_or(|p| p == "accept")
    }
}

/// Our table's chains by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedTable {
    pub chains: BTreeMap<String, ObservedChain>,
}

/// Parses `nft -j list table ip flannel-ipv4`.
pub fn parse_list(json: &str) -> Result<ObservedTable> {
    let v: Value = serde_json::from_str(json).context("nft -j output is not JSON")?;
    let items = v["nftables"]
        .as_array()
        .ok_or_else(|| anyhow!("nft -j output has no \"nftables\" array"))?;
    let ours = |o: &Value| o["family"] == FAMILY && o["table"] == TABLE;
    let mut table = ObservedTable::default();
    for item in items {
        if let Some(c) = item.get("chain").filter(|c| ours(c)) {
            let name = c["name"].as_str().unwrap_or_default().to_owned();
            let entry = table.chains.entry(name).or_default();
            entry.kind = c["type"].as_str().map(str::to_owned);
            entry.hook = c["hook"].as_str().map(str::to_owned);
            entry.prio = c["prio"].as_i64();
            entry.policy = c["policy"].as_str().map(str::to_owned);
        } else if let Some(r) = item.get("rule").filter(|r| ours(r)) {
            let name = r["chain"].as_str().unwrap_or_default().to_owned();
            let rule = r["expr"].as_array().and_then(|e| parse_rule(e));
            table.chains.entry(name).or_default().rules.push(rule);
        }
    }
    Ok(table)
}

/// One rule's `expr` array back into weft's model; `None` for anything weft does not write.
fn parse_rule(expr: &[Value]) -> Option<Rule> {
    let mut rule = Rule {
        mark: None,
        src: None,
        dst: None,
        verdict: Verdict::Accept,
    };
    let mut verdict = None;
    for e in expr {
        let obj = e.as_object().filter(|o| o.len() == 1)?;
        let (key, v) = obj.iter().next()?;
        if verdict.is_some() {
            // Nothing follows the verdict in weft's rules.
            return None;
        }
        match key.as_str() {
            "match" => {
                let negated = match v["op"].as_str()? {
                    "==" => false,
                    "!=" => true,
                    _ => return None,
                };
                let (left, right) = (&v["left"], &v["right"]);
                if let Some(p) = left.get("payload") {
                    if p["protocol"] != "ip" {
                        return None;
                    }
                    let m = Some(AddrMatch {
                        negated,
                        net: parse_net(right)?,
                    });
                    let slot = match p["field"].as_str()? {
                        "saddr" => &mut rule.src,
                        "daddr" => &mut rule.dst,
                        _ => return None,
                    };
                    if slot.is_some() {
                        return None;
                    }
                    *slot = m;
                } else if let Some(and) = left.get("&").and_then(Value::as_array) {
                    // meta mark & M == M
                    let [meta, mask] = and.as_slice() else {
                        return None;
                    };
                    let mask = u32::try_from(mask.as_u64()?).ok()?;
                    if negated
                        || meta["meta"]["key"] != "mark"
                        || right.as_u64() != Some(u64::from(mask))
                        || rule.mark.is_some()
                    {
                        return None;
                    }
                    rule.mark = Some(mask);
                } else {
                    return None;
                }
            }
            "accept" if v.is_null() => verdict = Some(Verdict::Accept),
            "return" if v.is_null() => verdict = Some(Verdict::Return),
            "masquerade" => {
                let fully_random = match v {
                    Value::Null => false,
                    Value::Object(o) if o.len() == 1 => match &o["flags"] {
                        Value::String(f) if f == "fully-random" => true,
                        Value::Array(a) if a.len() == 1 && a[0] == "fully-random" => true,
                        _ => return None,
                    },
                    _ => return None,
                };
                verdict = Some(Verdict::Masquerade { fully_random });
            }
            _ => return None,
        }
    }
    rule.verdict = verdict?;
    Some(rule)
}

/// `"10.0.0.1"` or `{"prefix": {"addr": "10.0.0.0", "len": 8}}`.
fn parse_net(v: &Value) -> Option<Ipv4Net> {
    if let Some(s) = v.as_str() {
        return Ipv4Net::new(s.parse::<Ipv4Addr>().ok()?, 32).ok();
    }
    let p = v.get("prefix")?;
    let addr: Ipv4Addr = p["addr"].as_str()?.parse().ok()?;
    let len = u8::try_from(p["len"].as_u64()?).ok()?;
    Ipv4Net::new(addr, len).ok()
}

/// One chain's rules split by owner: this network's (and the ones weft would never write,
/// which a rewrite drops), and other networks' (kept; see [`super::Rule::owned_by`]).
fn split(c: &ObservedChain, owner: Option<Ipv4Net>) -> (Vec<Option<Rule>>, Vec<Rule>) {
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

/// What to write: `None` when the table is as wanted, else the differences found and the one
/// `nft -f -` transaction that fixes them. `seen`: `None` when the table does not exist. Only
/// the rules of `parts.owner`'s network count; other networks' rules in the chains stay (after
/// ours on a rewrite), and so do the chains and the table while they hold any.
pub(crate) fn plan(
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
        diffs.push(format!("table {FAMILY} {TABLE} missing"));
        return Some((diffs, ensure_script(&wanted, None, parts.owner)));
    };
    let others_anywhere = seen
        .chains
        .values()
        .any(|c| !split(c, parts.owner).1.is_empty());
    if all_absent && !others_anywhere {
        diffs.push(format!(
            "table {FAMILY} {TABLE} present but not wanted, removed"
        ));
        return Some((diffs, format!("delete table {FAMILY} {TABLE}\n")));
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
    Some((diffs, ensure_script(&wanted, Some(seen), parts.owner)))
}

type Wanted<'a> = [(ChainSpec, Option<Option<&'a [Rule]>>); 2];

/// The transaction: the table, then per chain either (re)declare + flush + our rules + other
/// networks' rules, or remove (or, while other networks' rules are in it, keep only theirs).
fn ensure_script(
    wanted: &Wanted<'_>,
    seen: Option<&ObservedTable>,
    owner: Option<Ipv4Net>,
) -> String {
    let mut s = vec![format!(
        "add table {FAMILY} {TABLE} {{ comment \"rules for {TABLE}\" ; }}"
    )];
    for (spec, want) in wanted {
        let Some(want) = want else { continue };
        let existing = seen.and_then(|t| t.chains.get(spec.name));
        let (ours, others) = existing.map(|c| split(c, owner)).unwrap_or_default();
        let flush = format!("flush chain {FAMILY} {TABLE} {}", spec.name);
        let delete = format!("delete chain {FAMILY} {TABLE} {}", spec.name);
        let add = |r: &Rule| format!("add rule {FAMILY} {TABLE} {} {}", spec.name, rule_text(r));
        match want {
            Some(rules) => {
                if existing.is_some_and(|c| !c.is(spec)) {
                    // Wrong type/hook/priority/policy: `add chain` cannot change it.
                    s.push(flush.clone());
                    s.push(delete);
                }
                s.push(chain_decl(spec));
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

/// `nft -j list table ip flannel-ipv4`; `None` when the table does not exist.
async fn list() -> Result<Option<ObservedTable>, ToolError> {
    match exec::run("nft", &["-j", "list", "table", FAMILY, TABLE], None).await {
        Ok(json) => parse_list(&json).map(Some).map_err(|e| ToolError::Io {
            cmd: format!("nft -j list table {FAMILY} {TABLE}"),
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

/// Reads the table and writes one transaction if it differs. Returns what differed.
pub(crate) async fn reconcile(parts: Parts<'_>) -> Result<Vec<String>> {
    let seen = list().await?;
    let Some((diffs, script)) = plan(parts, seen.as_ref()) else {
        debug!("nft table {FAMILY} {TABLE}: in place");
        return Ok(Vec::new());
    };
    exec::run("nft", &["-f", "-"], Some(&script)).await?;
    info!("nft -f -: {}", script.trim_end().replace('\n', " | "));
    Ok(diffs)
}

/// Deletes `ip flannel-ipv4` and `ip6 flannel-ipv6` if they exist (with `owner`: that
/// network's rules of `ip flannel-ipv4`, and the table once no other network's rules are in
/// it); returns every failure.
pub(crate) async fn cleanup(owner: Option<Ipv4Net>) -> Vec<String> {
    if owner.is_some() {
        return match reconcile(Parts::absent(owner)).await {
            Ok(_) => Vec::new(),
            Err(e)
                if e.downcast_ref::<ToolError>()
                    .is_some_and(ToolError::is_not_found) =>
            {
                debug!("nftables cleanup: {e}; nothing to remove");
                Vec::new()
            }
            Err(e) => vec![format!("{e:#}")],
        };
    }
    let tables = match exec::run("nft", &["-j", "list", "tables"], None).await {
        Ok(json) => json,
        Err(e) if e.is_not_found() => {
            debug!("nftables cleanup: {e}; nothing to remove");
            return Vec::new();
        }
        Err(e) => return vec![e.to_string()],
    };
    let present = match present_tables(&tables) {
        Ok(p) => p,
        Err(e) => return vec![format!("nft -j list tables: {e:#}")],
    };
    let mut errors = Vec::new();
    for (family, name) in present {
        let cmd = format!("delete table {family} {name}\n");
        match exec::run("nft", &["-f", "-"], Some(&cmd)).await {
            Ok(_) => info!("nft {}", cmd.trim_end()),
            Err(e) => errors.push(e.to_string()),
        }
    }
    errors
}

/// Which of flanneld's tables `nft -j list tables` shows.
fn present_tables(json: &str) -> Result<Vec<(&'static str, &'static str)>> {
    let v: Value = serde_json::from_str(json).context("nft -j output is not JSON")?;
    let items = v["nftables"]
        .as_array()
        .ok_or_else(|| anyhow!("nft -j output has no \"nftables\" array"))?;
    Ok([("ip", TABLE), ("ip6", TABLE_V6)]
        .into_iter()
        .filter(|(family, name)| {
            items
                .iter()
                .any(|i| i["table"]["family"] == *family && i["table"]["name"] == *name)
        })
        .collect())
}

/// Whether this nft and kernel accept `masquerade fully-random` (`nft --check`, nothing is
/// committed).
pub(crate) async fn probe_fully_random() -> Result<bool> {
    let probe = "add table ip weft-probe\n\
                 add chain ip weft-probe p { type nat hook postrouting priority srcnat ; }\n\
                 add rule ip weft-probe p masquerade fully-random\n";
    match exec::run("nft", &["--check", "-f", "-"], Some(probe)).await {
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
    use super::*;
    use crate::agent::firewall::tests::settings;
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
        let (diffs, script) = plan(r.all(), None).unwrap();
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
        assert_eq!(plan(Parts::ABSENT, None), None);
    }

    /// `nft -j list table ip flannel-ipv4` as nft 1.0.6 printed it after our transaction
    /// (abridged to the shapes weft writes).
    const LISTED: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
{"table": {"family": "ip", "name": "flannel-ipv4", "handle": 1}},
{"chain": {"family": "ip", "table": "flannel-ipv4", "name": "forward", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
{"chain": {"family": "ip", "table": "flannel-ipv4", "name": "postrtg", "handle": 4, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
{"rule": {"family": "ip", "table": "flannel-ipv4", "chain": "forward", "handle": 2, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.244.0.0", "len": 16}}}}, {"accept": null}]}},
{"rule": {"family": "ip", "table": "flannel-ipv4", "chain": "forward", "handle": 3, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "10.244.0.0", "len": 16}}}}, {"accept": null}]}},
{"rule": {"family": "ip", "table": "flannel-ipv4", "chain": "postrtg", "handle": 5, "expr": [{"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 16384]}, "right": 16384}}, {"return": null}]}},
{"rule": {"family": "ip", "table": "flannel-ipv4", "chain": "postrtg", "handle": 7, "expr": [{"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.244.1.0", "len": 24}}}}, {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "10.244.0.0", "len": 16}}}}, {"return": null}]}},
{"rule": {"family": "ip", "table": "flannel-ipv4", "chain": "postrtg", "handle": 8, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.244.0.0", "len": 16}}}}, {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "224.0.0.0", "len": 4}}}}, {"masquerade": {"flags": "fully-random"}}]}},
{"rule": {"family": "ip", "table": "flannel-ipv4", "chain": "postrtg", "handle": 9, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 16384}}, {"masquerade": null}]}}
]}"#;

    #[test]
    fn listing_parses_into_the_model() {
        let t = parse_list(LISTED).unwrap();
        assert_eq!(t.chains.len(), 2);
        let fwd = &t.chains["forward"];
        assert!(fwd.is(&FORWARD_CHAIN) && !fwd.is(&MASQ_CHAIN));
        let r = RuleSet::new(Mode::Nftables, &settings());
        let want_fwd: Vec<_> = r.forward.unwrap().into_iter().map(Some).collect();
        assert_eq!(fwd.rules, want_fwd);
        let post = &t.chains["postrtg"];
        assert!(post.is(&MASQ_CHAIN));
        let masq = r.masq.unwrap();
        assert_eq!(post.rules[0], Some(masq[0]));
        assert_eq!(post.rules[1], Some(masq[3]));
        assert_eq!(post.rules[2], Some(masq[4]));
        // flanneld's exact mark match is not weft's rule: it gets rewritten.
        assert_eq!(post.rules[3], None);
    }

    #[test]
    fn plan_repairs_only_what_differs() {
        let mut s = settings();
        s.ip_masq = false;
        let r = RuleSet::new(Mode::Nftables, &s);
        let seen = parse_list(LISTED).unwrap();
        // The audit looks at the forward chain only: in place.
        assert_eq!(plan(r.active_only(), Some(&seen)), None);
        // Start-up also removes the masquerade chain, which is off.
        let (diffs, script) = plan(r.all(), Some(&seen)).unwrap();
        assert_eq!(diffs, ["chain postrtg present but not wanted, removed"]);
        assert!(script.contains(
            "flush chain ip flannel-ipv4 postrtg\ndelete chain ip flannel-ipv4 postrtg\n"
        ));
        // With masquerading on, the listed postrtg differs (4 rules, flanneld's mark).
        let r = RuleSet::new(Mode::Nftables, &settings());
        let (diffs, _) = plan(r.all(), Some(&seen)).unwrap();
        assert_eq!(diffs, ["chain postrtg: 4 rules differ from the 6 wanted"]);
        // Cleanup deletes the whole table.
        let (_, script) = plan(Parts::ABSENT, Some(&seen)).unwrap();
        assert_eq!(script, "delete table ip flannel-ipv4\n");
    }

    #[test]
    fn a_chain_with_the_wrong_hook_is_recreated() {
        let mut seen = parse_list(LISTED).unwrap();
        seen.chains.get_mut("forward").unwrap().policy = Some("drop".into());
        let mut s = settings();
        s.ip_masq = false;
        let r = RuleSet::new(Mode::Nftables, &s);
        let (diffs, script) = plan(r.active_only(), Some(&seen)).unwrap();
        assert_eq!(
            diffs,
            ["chain forward is not type filter hook forward priority filter policy accept"]
        );
        assert!(script.contains("delete chain ip flannel-ipv4 forward\nadd chain"));
    }

    #[test]
    fn foreign_rule_shapes_are_not_ours() {
        let parse = |s: &str| {
            parse_rule(
                serde_json::from_str::<Value>(s)
                    .unwrap()
                    .as_array()
                    .unwrap(),
            )
        };
        assert_eq!(
            parse(r#"[{"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]"#),
            None
        );
        assert_eq!(parse(r#"[{"accept": null}, {"accept": null}]"#), None);
        assert_eq!(parse(r#"[]"#), None);
        assert_eq!(
            parse(
                r#"[{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.0.0.1"}}, {"masquerade": {"flags": ["fully-random"]}}]"#
            ),
            Some(Rule {
                mark: None,
                src: Some(AddrMatch::is("10.0.0.1/32".parse().unwrap())),
                dst: None,
                verdict: Verdict::Masquerade { fully_random: true },
            })
        );
    }

    #[test]
    fn present_tables_are_found() {
        let j = r#"{"nftables": [{"metainfo": {}}, {"table": {"family": "ip", "name": "nat", "handle": 1}}, {"table": {"family": "ip6", "name": "flannel-ipv6", "handle": 2}}]}"#;
        assert_eq!(present_tables(j).unwrap(), [("ip6", "flannel-ipv6")]);
    }
}
