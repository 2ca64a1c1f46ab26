//! The rule model: flanneld's masquerade and forward rules of one network and family as data
//! ([`RuleSet::new`], the one pure function that builds them), which [`super::iptables`] and
//! [`super::nftables`] render into their tool's language. IPv6 rules are IPv4's with IPv6
//! prefixes and `ff00::/8` instead of `224.0.0.0/4` (docs/flannel-compat.md §6.1).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::Mode;

/// Comment on every masquerade rule (iptables mode), as flanneld writes it.
pub const MASQ_COMMENT: &str = "flanneld masq";
/// Comment on every forward rule (iptables mode), as flanneld writes it.
pub const FORWARD_COMMENT: &str = "flanneld forward";
/// kube-proxy's masquerade mark: packets carrying it are left to kube-proxy's own SNAT.
pub const KUBE_PROXY_MARK: u32 = 0x4000;
/// IPv4 multicast is never masqueraded.
const MULTICAST_V4: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(224, 0, 0, 0), 4) {
    Ok(n) => n,
    Err(_) => panic!("224.0.0.0/4 is a valid prefix"),
};
/// IPv6 multicast is never masqueraded.
const MULTICAST_V6: Ipv6Net = match Ipv6Net::new(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8) {
    Ok(n) => n,
    Err(_) => panic!("ff00::/8 is a valid prefix"),
};

/// The address family of one set of rules: a dual-stack network has one [`super::Firewall`] per
/// family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `iptables*`, nftables table `ip flannel-ipv4`.
    V4,
    /// `ip6tables*`, nftables table `ip6 flannel-ipv6`.
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    /// The family of `net`.
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    /// The multicast range, which is never masqueraded.
    pub fn multicast(self) -> IpNet {
        match self {
            Family::V4 => IpNet::V4(MULTICAST_V4),
            Family::V6 => IpNet::V6(MULTICAST_V6),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// What the rules are built from. `network` and `subnet` are of one family, which is the
/// [`super::Firewall`]'s ([`super::Firewall::new`] refuses a mix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The cluster network (`Network`, or `IPv6Network`, of the config).
    pub network: IpNet,
    /// This node's leased pod subnet of that family.
    pub subnet: IpNet,
    /// `--ip-masq`: masquerade traffic leaving the cluster network.
    pub ip_masq: bool,
    /// `--iptables-forward-rules`: accept forwarding to and from the cluster network.
    pub forward: bool,
    /// Masquerade with `--random-fully` / `fully-random` (not
    /// `--ip-masq-fully-random-disable`); dropped anyway when the tool lacks it.
    pub fully_random: bool,
}

/// An address match: `[!] -s/-d <net>` or `ip saddr/daddr [!=] <net>` (`ip6 …` for IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrMatch {
    pub negated: bool,
    pub net: IpNet,
}

impl AddrMatch {
    pub fn is(net: IpNet) -> AddrMatch {
        AddrMatch {
            negated: false,
            net,
        }
    }

    pub fn not(net: IpNet) -> AddrMatch {
        AddrMatch { negated: true, net }
    }
}

/// What a matching packet gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Return,
    Masquerade { fully_random: bool },
}

/// One rule of weft's model: optional mark / source / destination matches and a verdict. Both
/// modes render it; the nftables read-back parses into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Masked mark match: `mark & m == m`.
    pub mark: Option<u32>,
    pub src: Option<AddrMatch>,
    pub dst: Option<AddrMatch>,
    pub verdict: Verdict,
}

impl Rule {
    /// Whether this rule is the one of the daemon of `network` (None: every rule is): one of
    /// its address matches lies inside the network, or it has none (the kube-proxy mark rule,
    /// which every network's set begins with). Several flannel networks on one host share the
    /// chains (as flanneld's daemons do); each daemon writes and removes only its own rules.
    pub fn owned_by(&self, network: Option<IpNet>) -> bool {
        owned_by(
            [self.src, self.dst].into_iter().flatten().map(|m| m.net),
            network,
        )
    }

    fn new(src: Option<AddrMatch>, dst: Option<AddrMatch>, verdict: Verdict) -> Rule {
        Rule {
            mark: None,
            src,
            dst,
            verdict,
        }
    }
}

/// A rule with these address matches is the daemon's of `network` (see [`Rule::owned_by`]).
pub(crate) fn owned_by(nets: impl Iterator<Item = IpNet>, network: Option<IpNet>) -> bool {
    let Some(network) = network else {
        return true;
    };
    let mut any = false;
    for n in nets {
        if network.contains(&n) {
            return true;
        }
        any = true;
    }
    !any
}

/// The rules one mode wants: `None` for a part that is switched off (and must be absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    pub masq: Option<Vec<Rule>>,
    pub forward: Option<Vec<Rule>>,
    /// The network whose rules these are: other networks' rules in the same chains stay.
    pub network: IpNet,
}

impl RuleSet {
    /// flanneld's rules (docs/flannel-compat.md §6.1 for iptables, §6.2 for nftables, which differ
    /// in the fourth masquerade rule), for the family of `s.network` (IPv6: multicast is
    /// `ff00::/8`). `s.subnet` must be of the same family.
    pub fn new(mode: Mode, s: &Settings) -> RuleSet {
        let net = s.network.trunc();
        let pod = s.subnet.trunc();
        let masq = s.ip_masq.then(|| {
            let m = Verdict::Masquerade {
                fully_random: s.fully_random,
            };
            let fourth = match mode {
                // Traffic from outside the cluster to this node's pods.
                Mode::Iptables => Rule::new(
                    Some(AddrMatch::not(net)),
                    Some(AddrMatch::is(pod)),
                    Verdict::Return,
                ),
                // flanneld's nftables rule: anything but our pods to the cluster network.
                Mode::Nftables => Rule::new(
                    Some(AddrMatch::not(pod)),
                    Some(AddrMatch::is(net)),
                    Verdict::Return,
                ),
            };
            vec![
                Rule {
                    mark: Some(KUBE_PROXY_MARK),
                    ..Rule::new(None, None, Verdict::Return)
                },
                Rule::new(
                    Some(AddrMatch::is(pod)),
                    Some(AddrMatch::is(net)),
                    Verdict::Return,
                ),
                Rule::new(
                    Some(AddrMatch::is(net)),
                    Some(AddrMatch::is(pod)),
                    Verdict::Return,
                ),
                fourth,
                Rule::new(
                    Some(AddrMatch::is(net)),
                    Some(AddrMatch::not(Family::of(&net).multicast())),
                    m,
                ),
                Rule::new(Some(AddrMatch::not(net)), Some(AddrMatch::is(net)), m),
            ]
        });
        let forward = s.forward.then(|| {
            vec![
                Rule::new(Some(AddrMatch::is(net)), None, Verdict::Accept),
                Rule::new(None, Some(AddrMatch::is(net)), Verdict::Accept),
            ]
        });
        RuleSet {
            masq,
            forward,
            network: net,
        }
    }

    /// True when some part is switched on (there is something to keep in place).
    pub fn is_active(&self) -> bool {
        self.masq.is_some() || self.forward.is_some()
    }

    /// The same rule set with only the parts that are switched on: what an audit checks.
    pub(crate) fn active_only(&self) -> Parts<'_> {
        Parts {
            masq: self.masq.as_deref().map(Some),
            forward: self.forward.as_deref().map(Some),
            owner: Some(self.network),
        }
    }

    /// Every part, switched-off ones as "must be absent": what start-up enforces.
    pub(crate) fn all(&self) -> Parts<'_> {
        Parts {
            masq: Some(self.masq.as_deref()),
            forward: Some(self.forward.as_deref()),
            owner: Some(self.network),
        }
    }
}

/// Which parts one pass looks at: `None` = leave alone, `Some(None)` = must be absent,
/// `Some(Some(rules))` = must be exactly these rules. Only the rules of `owner`'s network count
/// ([`Rule::owned_by`]; None: every rule): others' rules in the chains are kept as they are.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parts<'a> {
    pub masq: Option<Option<&'a [Rule]>>,
    pub forward: Option<Option<&'a [Rule]>>,
    pub owner: Option<IpNet>,
}

impl Parts<'_> {
    /// Both parts must be absent: every rule (`owner` None), or `owner`'s network's.
    pub(crate) fn absent(owner: Option<IpNet>) -> Parts<'static> {
        Parts {
            masq: Some(None),
            forward: Some(None),
            owner,
        }
    }
}

#[cfg(test)]
impl Parts<'_> {
    /// Both parts must be absent, whoever's rules they are.
    pub(crate) const ABSENT: Parts<'static> = Parts {
        masq: Some(None),
        forward: Some(None),
        owner: None,
    };
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::agent::firewall::tests::{settings, settings_v6};

    #[test]
    fn parts_follow_the_flags() {
        let mut s = settings();
        let r = RuleSet::new(Mode::Iptables, &s);
        assert_eq!(r.masq.as_ref().map(Vec::len), Some(6));
        assert_eq!(r.forward.as_ref().map(Vec::len), Some(2));
        s.ip_masq = false;
        let r = RuleSet::new(Mode::Iptables, &s);
        assert!(r.masq.is_none() && r.forward.is_some() && r.is_active());
        s.forward = false;
        assert!(!RuleSet::new(Mode::Nftables, &s).is_active());
    }

    #[test]
    fn subnet_host_bits_are_dropped() {
        let mut s = settings();
        s.subnet = "10.244.1.1/24".parse().unwrap();
        assert_eq!(
            RuleSet::new(Mode::Iptables, &s),
            RuleSet::new(Mode::Iptables, &settings())
        );
    }

    #[test]
    fn fully_random_off_reaches_every_masquerade_rule() {
        let mut s = settings();
        s.fully_random = false;
        let r = RuleSet::new(Mode::Nftables, &s);
        let masq: Vec<_> = r
            .masq
            .unwrap()
            .into_iter()
            .filter(|r| matches!(r.verdict, Verdict::Masquerade { .. }))
            .collect();
        assert_eq!(masq.len(), 2);
        assert!(masq.iter().all(|r| r.verdict
            == Verdict::Masquerade {
                fully_random: false
            }));
    }

    #[test]
    fn v6_rules_exclude_ipv6_multicast() {
        let r = RuleSet::new(Mode::Iptables, &settings_v6());
        assert_eq!(r.network, "fd00:10:244::/56".parse::<IpNet>().unwrap());
        let masq = r.masq.unwrap();
        assert_eq!(
            masq[4].dst,
            Some(AddrMatch::not("ff00::/8".parse().unwrap()))
        );
        assert_eq!(Family::V4.multicast(), "224.0.0.0/4".parse().unwrap());
        assert!(masq.iter().all(|r| r.owned_by(Some(settings_v6().network))));
        // The IPv4 network owns only the shared mark rule of the IPv6 set.
        let v4_owned = masq.iter().filter(|r| r.owned_by(Some(settings().network)));
        assert_eq!(v4_owned.count(), 1);
    }
}
