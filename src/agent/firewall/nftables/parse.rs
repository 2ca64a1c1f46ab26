//! Reading nft's JSON back into weft's model: `nft -j list table ip flannel-ipv4` (or `ip6
//! flannel-ipv6`, whose rules match `ip6 saddr`/`ip6 daddr` on IPv6 prefixes) and `nft -j list
//! tables`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Context as _, Result, anyhow};
use ipnet::IpNet;
use serde_json::Value;

use super::{ChainSpec, TABLES, Table};
use crate::agent::firewall::{AddrMatch, Family, Rule, Verdict};

/// What `nft -j list table <family> <name>` shows of one chain.
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
    pub(super) fn is(&self, spec: &ChainSpec) -> bool {
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

/// Parses `nft -j list table <table>`: only `table`'s chains and rules count, and only its
/// family's address matches (`ip` or `ip6`) are weft's.
pub fn parse_list(table: &Table, json: &str) -> Result<ObservedTable> {
    let ours = |o: &Value| o["family"] == table.family && o["table"] == table.name;
    let mut seen = ObservedTable::default();
    for item in items(json)? {
        if let Some(c) = item.get("chain").filter(|c| ours(c)) {
            let name = c["name"].as_str().unwrap_or_default().to_owned();
            let entry = seen.chains.entry(name).or_default();
            entry.kind = c["type"].as_str().map(str::to_owned);
            entry.hook = c["hook"].as_str().map(str::to_owned);
            entry.prio = c["prio"].as_i64();
            entry.policy = c["policy"].as_str().map(str::to_owned);
        } else if let Some(r) = item.get("rule").filter(|r| ours(r)) {
            let name = r["chain"].as_str().unwrap_or_default().to_owned();
            let rule = r["expr"].as_array().and_then(|e| parse_rule(table, e));
            seen.chains.entry(name).or_default().rules.push(rule);
        }
    }
    Ok(seen)
}

/// The `nftables` array of nft's JSON output.
fn items(json: &str) -> Result<Vec<Value>> {
    let mut v: Value = serde_json::from_str(json).context("nft -j output is not JSON")?;
    match v["nftables"].take() {
        Value::Array(items) => Ok(items),
        _ => Err(anyhow!("nft -j output has no \"nftables\" array")),
    }
}

/// One rule's `expr` array back into weft's model; `None` for anything weft does not write in
/// `table`.
pub(super) fn parse_rule(table: &Table, expr: &[Value]) -> Option<Rule> {
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
                    // `ip saddr` in `ip flannel-ipv4`, `ip6 saddr` in `ip6 flannel-ipv6`.
                    if p["protocol"] != table.family {
                        return None;
                    }
                    let net = parse_net(right)?;
                    if Family::of(&net) != table.addrs {
                        return None;
                    }
                    let m = Some(AddrMatch { negated, net });
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

/// `"10.0.0.1"` / `"2001:db8::1"` (a host) or `{"prefix": {"addr": "10.0.0.0", "len": 8}}`.
fn parse_net(v: &Value) -> Option<IpNet> {
    if let Some(s) = v.as_str() {
        return Some(IpNet::from(s.parse::<IpAddr>().ok()?));
    }
    let p = v.get("prefix")?;
    let addr: IpAddr = p["addr"].as_str()?.parse().ok()?;
    let len = u8::try_from(p["len"].as_u64()?).ok()?;
    IpNet::new(addr, len).ok()
}

/// Which of flanneld's tables (`ip flannel-ipv4`, `ip6 flannel-ipv6`) `nft -j list tables`
/// shows.
pub(super) fn present_tables(json: &str) -> Result<Vec<Table>> {
    let items = items(json)?;
    Ok(TABLES
        .into_iter()
        .filter(|t| {
            items
                .iter()
                .any(|i| i["table"]["family"] == t.family && i["table"]["name"] == t.name)
        })
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::super::{FORWARD_CHAIN, MASQ_CHAIN, TABLE_V4, TABLE_V6};
    use super::*;
    use crate::agent::firewall::tests::{settings, settings_v6};
    use crate::agent::firewall::{Mode, RuleSet};

    /// `nft -j list table ip flannel-ipv4` as nft 1.0.6 printed it after our transaction
    /// (abridged to the shapes weft writes).
    pub(crate) const LISTED: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
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

    /// `nft -j list table ip6 flannel-ipv6` as nft 1.0.6 printed it in a scratch namespace
    /// (network fd00:10:244::/56, pod subnet fd00:10:244:1::/64; three of the six masquerade
    /// rules and a foreign host rule), one item a line.
    pub(crate) const LISTED_V6: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
{"table": {"family": "ip6", "name": "flannel-ipv6", "handle": 2}},
{"chain": {"family": "ip6", "table": "flannel-ipv6", "name": "postrtg", "handle": 1, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
{"chain": {"family": "ip6", "table": "flannel-ipv6", "name": "forward", "handle": 7, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
{"rule": {"family": "ip6", "table": "flannel-ipv6", "chain": "postrtg", "handle": 2, "expr": [{"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 16384]}, "right": 16384}}, {"return": null}]}},
{"rule": {"family": "ip6", "table": "flannel-ipv6", "chain": "postrtg", "handle": 3, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": {"prefix": {"addr": "fd00:10:244:1::", "len": 64}}}}, {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": {"prefix": {"addr": "fd00:10:244::", "len": 56}}}}, {"return": null}]}},
{"rule": {"family": "ip6", "table": "flannel-ipv6", "chain": "postrtg", "handle": 4, "expr": [{"match": {"op": "!=", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": {"prefix": {"addr": "fd00:10:244:1::", "len": 64}}}}, {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": {"prefix": {"addr": "fd00:10:244::", "len": 56}}}}, {"return": null}]}},
{"rule": {"family": "ip6", "table": "flannel-ipv6", "chain": "postrtg", "handle": 5, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": {"prefix": {"addr": "fd00:10:244::", "len": 56}}}}, {"match": {"op": "!=", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": {"prefix": {"addr": "ff00::", "len": 8}}}}, {"masquerade": {"flags": "fully-random"}}]}},
{"rule": {"family": "ip6", "table": "flannel-ipv6", "chain": "postrtg", "handle": 6, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": "2001:db8::1"}}, {"masquerade": null}]}},
{"rule": {"family": "ip6", "table": "flannel-ipv6", "chain": "forward", "handle": 8, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": {"prefix": {"addr": "fd00:10:244::", "len": 56}}}}, {"accept": null}]}},
{"rule": {"family": "ip6", "table": "flannel-ipv6", "chain": "forward", "handle": 9, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": {"prefix": {"addr": "fd00:10:244::", "len": 56}}}}, {"accept": null}]}}
]}"#;

    #[test]
    fn listing_parses_into_the_model() {
        let t = parse_list(&TABLE_V4, LISTED).unwrap();
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
        // The other family's table is not ours to see.
        assert_eq!(
            parse_list(&TABLE_V6, LISTED).unwrap(),
            ObservedTable::default()
        );
    }

    #[test]
    fn v6_listing_parses_into_the_model() {
        let t = parse_list(&TABLE_V6, LISTED_V6).unwrap();
        assert_eq!(t.chains.len(), 2);
        let r = RuleSet::new(Mode::Nftables, &settings_v6());
        let fwd = &t.chains["forward"];
        assert!(fwd.is(&FORWARD_CHAIN));
        let want_fwd: Vec<_> = r.forward.unwrap().into_iter().map(Some).collect();
        assert_eq!(fwd.rules, want_fwd);
        let post = &t.chains["postrtg"];
        assert!(post.is(&MASQ_CHAIN));
        let masq = r.masq.unwrap();
        assert_eq!(
            post.rules[..4],
            [Some(masq[0]), Some(masq[1]), Some(masq[3]), Some(masq[4])]
        );
        // A host address comes back as a /128.
        assert_eq!(
            post.rules[4],
            Some(Rule {
                mark: None,
                src: Some(AddrMatch::is("2001:db8::1/128".parse().unwrap())),
                dst: None,
                verdict: Verdict::Masquerade {
                    fully_random: false
                },
            })
        );
        assert_eq!(
            parse_list(&TABLE_V4, LISTED_V6).unwrap(),
            ObservedTable::default()
        );
    }

    fn parse(table: &Table, s: &str) -> Option<Rule> {
        parse_rule(
            table,
            serde_json::from_str::<Value>(s)
                .unwrap()
                .as_array()
                .unwrap(),
        )
    }

    #[test]
    fn foreign_rule_shapes_are_not_ours() {
        let parse = |s: &str| parse(&TABLE_V4, s);
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
    fn address_matches_must_be_of_the_tables_family() {
        let ip6 = r#"[{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": {"prefix": {"addr": "fd00::", "len": 8}}}}, {"accept": null}]"#;
        assert_eq!(
            parse(&TABLE_V6, ip6),
            Some(Rule {
                mark: None,
                src: None,
                dst: Some(AddrMatch::is("fd00::/8".parse().unwrap())),
                verdict: Verdict::Accept,
            })
        );
        assert_eq!(parse(&TABLE_V4, ip6), None);
        // An `ip` match in an inet-style table, or an IPv4 address under `ip6`: not weft's.
        let ip = r#"[{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "10.0.0.1"}}, {"accept": null}]"#;
        assert_eq!(parse(&TABLE_V6, ip), None);
        let mixed = r#"[{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": "10.0.0.1"}}, {"accept": null}]"#;
        assert_eq!(parse(&TABLE_V6, mixed), None);
    }

    #[test]
    fn present_tables_are_found() {
        let j = r#"{"nftables": [{"metainfo": {}}, {"table": {"family": "ip", "name": "nat", "handle": 1}}, {"table": {"family": "ip6", "name": "flannel-ipv6", "handle": 2}}, {"table": {"family": "ip", "name": "flannel-ipv6", "handle": 3}}]}"#;
        assert_eq!(present_tables(j).unwrap(), [TABLE_V6]);
    }
}
