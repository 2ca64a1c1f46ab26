//! Masquerade and forward rules, as flanneld installs them (docs/flannel-compat.md §6), in one of
//! two modes:
//!
//! - **iptables** (default): chains `FLANNEL-POSTRTG` (table `nat`, jumped to from
//!   `POSTROUTING`) and `FLANNEL-FWD` (table `filter`, jumped to from `FORWARD`), with flannel's
//!   comments `flanneld masq` / `flanneld forward`, so tooling that greps these names keeps
//!   working. Written with ONE `iptables-restore --noflush --wait` batch per table.
//! - **nftables** (`EnableNFTables: true`): weft's own table `ip flannel-ipv4` with chains
//!   `forward` and `postrtg`, written with ONE `nft -f -` transaction.
//!
//! IPv6 (dual-stack networks): a [`Firewall`] serves one [`Family`], the family of its
//! `Settings.network`; the agent makes one per family. The IPv6 rules are the IPv4 ones with
//! the IPv6 network and subnet, and `ff00::/8` instead of `224.0.0.0/4` as the multicast range
//! that is never masqueraded. In iptables mode they go through `ip6tables-save` /
//! `ip6tables-restore` into the same chain names, comments and jumps of the IPv6 `nat` and
//! `filter` tables; in nftables mode into the table `ip6 flannel-ipv6` (comment "rules for
//! flannel-ipv6"), same chains, rules matching `ip6 saddr`/`ip6 daddr`. The two families never
//! touch each other's rules: each firewall reads and writes only its own family's tools or
//! table. [`cleanup`] and [`cleanup_all`] take a [`Scope`]: everything of both families, or
//! the given IPv4 and/or IPv6 network's rules (a family without a network is left alone).
//!
//! Layout: `rules.rs` holds the rule model and the one pure function that builds the rule set
//! ([`RuleSet::new`]); [`iptables`] and [`nftables`] render it into their tool's batch language,
//! parse the read-back (`iptables-save -t <table>`, `nft -j list table`) and decide what
//! differs (all pure, unit-tested against the spec's golden text); this file's [`Firewall`] and
//! [`cleanup`] are the only code that runs the tools (through [`exec`]).
//!
//! Several weft processes on one host write the same chains and tables: one daemon per flannel
//! network (each keeps the other networks' rules, [`Rule::owned_by`]) and `weft cleanup
//! --network`. Every read-modify-write (read back, plan, write one batch) holds the host-wide
//! lock of [`lock`] (`/run/flannel/weft-firewall.lock`) from the read to the write: a batch
//! re-declares (flushes) the chain and writes the other networks' lines back as read, so two
//! writers whose reads came before either write would undo each other (seen: two daemons
//! starting together, the second batch dropped the first one's forward rules).
//!
//! Drift repair: [`Firewall::check`] reads the rules back once (one exec per table in iptables
//! mode, one in nftables mode) and re-applies only what differs. The agent calls it when
//! nf_tables announces a change to our tables or chains ([`ChangeWatch`], which covers
//! nftables mode and iptables-nft, both families: repair within ~100 ms, no polling) and on a slow timer
//! ([`audit_period`]) as a backstop; flanneld instead runs `iptables -C` for every rule every
//! 5 s.
//!
//! Deliberate differences from flanneld:
//! - nftables mode skips the kube-proxy mark with a masked match (`meta mark & 0x4000 ==
//!   0x4000`, as iptables mode's `--mark 0x4000/0x4000`); flanneld matches the mark exactly,
//!   which misses packets that carry other mark bits too.
//! - A part that is switched off (`--ip-masq` absent, `--iptables-forward-rules=false`) is
//!   removed at start if an earlier run left it behind; flanneld leaves it in place.
//! - Cleaning the other mode at start removes `FLANNEL-FWD` from `filter`, where it lives
//!   (flanneld looks for it in `nat`).

use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tracing::{debug, info, warn};

pub mod exec;
mod families;
pub mod iptables;
mod lock;
pub mod nftables;
mod rules;
pub mod watch;

pub use families::{Firewalls, Flags};
pub use rules::{
    AddrMatch, FORWARD_COMMENT, Family, KUBE_PROXY_MARK, MASQ_COMMENT, Rule, RuleSet, Settings,
    Verdict,
};
pub(crate) use rules::{Parts, owned_by};
pub use watch::ChangeWatch;

/// The shortest audit period the agent uses, whatever `--iptables-resync` says, when no change
/// notification covers the rules (iptables-legacy).
pub const MIN_AUDIT_PERIOD: Duration = Duration::from_secs(60);
/// The audit period when nf_tables change notifications cover the rules: a backstop only.
pub const BACKSTOP_AUDIT_PERIOD: Duration = Duration::from_secs(600);
/// Environment variable that overrides the audit period (seconds, at least 1); for tests.
pub const AUDIT_ENV: &str = "WEFT_FIREWALL_AUDIT_SECS";

/// Where the rules live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// iptables chains `FLANNEL-POSTRTG` / `FLANNEL-FWD` (flanneld's default).
    Iptables,
    /// nftables table `ip flannel-ipv4` / `ip6 flannel-ipv6` (`EnableNFTables: true`).
    Nftables,
}

impl Mode {
    /// The mode the network config selects (`EnableNFTables`).
    pub fn from_config(enable_nftables: bool) -> Mode {
        if enable_nftables {
            Mode::Nftables
        } else {
            Mode::Iptables
        }
    }

    /// The mode that is not this one (cleaned up at start).
    pub fn other(self) -> Mode {
        match self {
            Mode::Iptables => Mode::Nftables,
            Mode::Nftables => Mode::Iptables,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Iptables => "iptables",
            Mode::Nftables => "nftables",
        })
    }
}
/// Whose rules a cleanup removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every rule of both families, whoever's (`weft cleanup` without `--network`).
    All,
    /// Only these networks' rules ([`Rule::owned_by`]): the chains, jumps and tables stay while
    /// other networks' rules are in them. A family without a network here is left alone.
    Networks {
        v4: Option<Ipv4Net>,
        v6: Option<Ipv6Net>,
    },
}

impl Scope {
    /// Only `network`'s rules, in its family; the other family is left alone.
    pub fn only(network: IpNet) -> Scope {
        match network {
            IpNet::V4(n) => Scope::Networks {
                v4: Some(n),
                v6: None,
            },
            IpNet::V6(n) => Scope::Networks {
                v4: None,
                v6: Some(n),
            },
        }
    }

    /// What a cleanup does in `family`: `None` = nothing, `Some(None)` = removes every rule,
    /// `Some(Some(net))` = removes `net`'s rules.
    fn owner(self, family: Family) -> Option<Option<IpNet>> {
        match (self, family) {
            (Scope::All, _) => Some(None),
            (Scope::Networks { v4, .. }, Family::V4) => v4.map(|n| Some(IpNet::V4(n))),
            (Scope::Networks { v6, .. }, Family::V6) => v6.map(|n| Some(IpNet::V6(n))),
        }
    }
}

/// What a pass found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything was as wanted; nothing was written.
    InSync,
    /// These differences were found and repaired.
    Repaired(Vec<String>),
}

/// The masquerade / forward rules of one node in one family (the family of
/// `Settings.network`), kept in place. A dual-stack network has two, one per family; each
/// leaves the other's rules alone.
#[derive(Debug, Clone)]
pub struct Firewall {
    mode: Mode,
    family: Family,
    /// The rules live in nf_tables (nftables mode, or iptables-nft), so [`ChangeWatch`] sees
    /// every change to them.
    in_nf_tables: bool,
    /// As given, except `fully_random` cleared when the tool lacks it.
    settings: Settings,
    rules: RuleSet,
}

impl Firewall {
    /// Builds the rule set for the family of `settings.network` (an error when
    /// `settings.subnet` is of the other family). With masquerading on and fully-random
    /// wanted, asks the tool once whether it supports it (`iptables -j MASQUERADE -h` /
    /// `ip6tables …`, or `nft --check` of a test rule) and drops it with a warning if not.
    /// Nothing is written yet: see [`Firewall::apply`].
    pub async fn new(mode: Mode, mut settings: Settings) -> Result<Firewall> {
        let family = Family::of(&settings.network);
        if Family::of(&settings.subnet) != family {
            bail!(
                "firewall: subnet {} is not of the family of network {}",
                settings.subnet,
                settings.network
            );
        }
        let label = label(mode, family);
        if settings.ip_masq && settings.fully_random {
            let supported = match mode {
                Mode::Iptables => iptables::probe_random_fully(family).await,
                Mode::Nftables => nftables::probe_fully_random(family).await,
            };
            match supported {
                Ok(true) => {}
                Ok(false) => {
                    warn!(
                        "{label}: masquerade fully-random is not supported; masquerading without it"
                    );
                    settings.fully_random = false;
                }
                Err(e) => {
                    warn!(
                        "{label}: could not tell whether masquerade fully-random is supported ({e:#}); masquerading without it"
                    );
                    settings.fully_random = false;
                }
            }
        }
        let in_nf_tables = match mode {
            Mode::Nftables => true,
            Mode::Iptables if settings.ip_masq || settings.forward => {
                match iptables::is_nf_tables_flavour(family).await {
                    Ok(nft) => nft,
                    Err(e) => {
                        warn!("{label} --version: {e:#}");
                        false
                    }
                }
            }
            Mode::Iptables => false,
        };
        Ok(Firewall {
            mode,
            family,
            in_nf_tables,
            settings,
            rules: RuleSet::new(mode, &settings),
        })
    }

    /// The node's subnet changed (lease lost and re-acquired elsewhere): rebuilds the rules;
    /// [`Firewall::apply`] then writes them. An error (rules unchanged) when `subnet` is not
    /// of this firewall's family.
    pub fn set_subnet(&mut self, subnet: IpNet) -> Result<()> {
        if Family::of(&subnet) != self.family {
            bail!(
                "firewall: subnet {subnet} is not of the family of network {}",
                self.settings.network
            );
        }
        self.settings.subnet = subnet;
        self.rules = RuleSet::new(self.mode, &self.settings);
        Ok(())
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// How logs name this firewall: `iptables`, `ip6tables`, `nftables`, `nftables ip6`.
    pub fn label(&self) -> &'static str {
        label(self.mode, self.family)
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// How often the agent should audit: a backstop period when `watch` is live and sees this
    /// mode's rules (nftables, iptables-nft), else `max(--iptables-resync, 60 s)` (see the free
    /// function [`audit_period`]).
    pub fn audit_period(&self, iptables_resync_secs: u32, watch: &ChangeWatch) -> Result<Duration> {
        audit_period(iptables_resync_secs, self.in_nf_tables && watch.is_live())
    }

    /// True when some part is switched on, i.e. [`Firewall::check`] has something to audit.
    pub fn is_active(&self) -> bool {
        self.rules.is_active()
    }

    /// Agent start: removes what the other mode left (flanneld does the same; a failure there
    /// is only logged), then [`Firewall::apply`].
    pub async fn start(&self) -> Result<Outcome> {
        let other = self.mode.other();
        if let Err(e) = cleanup(other, Scope::only(self.rules.network)).await {
            warn!(
                "removing {} rules of an earlier run: {e:#}",
                label(other, self.family)
            );
        }
        self.apply().await
    }

    /// Start-up: reads this mode's rules back and writes what differs: parts that are on get
    /// exactly their rules, parts that are off are removed. No write when all is in place.
    pub async fn apply(&self) -> Result<Outcome> {
        let outcome = self.reconcile(self.rules.all()).await?;
        if let Outcome::Repaired(diffs) = &outcome {
            info!("{}: rules written ({})", self.label(), diffs.join("; "));
        }
        Ok(outcome)
    }

    /// Audit: reads the active parts back (one exec per iptables table, or one `nft -j list
    /// table`) and re-applies only when something differs.
    pub async fn check(&self) -> Result<Outcome> {
        if !self.is_active() {
            return Ok(Outcome::InSync);
        }
        let outcome = self.reconcile(self.rules.active_only()).await?;
        if let Outcome::Repaired(diffs) = &outcome {
            warn!(
                "{}: rules were changed by someone else, re-applied ({})",
                self.label(),
                diffs.join("; ")
            );
        }
        Ok(outcome)
    }

    async fn reconcile(&self, parts: Parts<'_>) -> Result<Outcome> {
        let diffs = match self.mode {
            Mode::Iptables => iptables::reconcile(self.family, parts).await?,
            Mode::Nftables => nftables::reconcile(self.family, parts).await?,
        };
        if diffs.is_empty() {
            debug!("{}: rules in place", self.label());
            Ok(Outcome::InSync)
        } else {
            Ok(Outcome::Repaired(diffs))
        }
    }
}

/// How logs name `mode`'s rules of `family` (IPv4: the mode's name, as before IPv6).
fn label(mode: Mode, family: Family) -> &'static str {
    match (mode, family) {
        (Mode::Iptables, Family::V4) => "iptables",
        (Mode::Iptables, Family::V6) => "ip6tables",
        (Mode::Nftables, Family::V4) => "nftables",
        (Mode::Nftables, Family::V6) => "nftables ip6",
    }
}

/// Removes the rules `mode` may have left in `scope`: iptables, the jumps and both chains of
/// `iptables` and `ip6tables`; nftables, the tables `ip flannel-ipv4` and `ip6 flannel-ipv6`.
/// With a network in the scope, only that network's rules go (the chains, jumps and table stay
/// while other networks' rules are in them). Idempotent; a tool that is not installed means
/// there is nothing of that mode and family to remove. Keeps going after a failure and reports
/// every one.
pub async fn cleanup(mode: Mode, scope: Scope) -> Result<()> {
    let errors = cleanup_mode(mode, scope).await;
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{mode} cleanup failed:\n- {}", errors.join("\n- "))
    }
}

/// Removes both modes' rules of both families in `scope` (`weft cleanup [--network]`);
/// reports every failure.
pub async fn cleanup_all(scope: Scope) -> Result<()> {
    let mut errors = cleanup_mode(Mode::Iptables, scope).await;
    errors.extend(cleanup_mode(Mode::Nftables, scope).await);
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("firewall cleanup failed:\n- {}", errors.join("\n- "))
    }
}

async fn cleanup_mode(mode: Mode, scope: Scope) -> Vec<String> {
    match mode {
        Mode::Iptables => {
            let mut errors = Vec::new();
            for family in Family::BOTH {
                if let Some(owner) = scope.owner(family) {
                    errors.extend(iptables::cleanup(family, owner).await);
                }
            }
            errors
        }
        Mode::Nftables => nftables::cleanup(scope.owner(Family::V4), scope.owner(Family::V6)).await,
    }
}

/// How often the agent audits the rules, unless `WEFT_FIREWALL_AUDIT_SECS` is set (tests):
/// - `notified` (a live [`ChangeWatch`] sees the rules): every 10 min, a backstop only;
/// - else `max(--iptables-resync, 60 s)`.
///
/// Why not flanneld's 5 s: every audit forks and execs the tools (one `iptables-save` per
/// table, or one `nft -j list table`), and weft's idle target is no fork/exec at all. With
/// notifications a removal is repaired at once anyway; without them (iptables-legacy), rules
/// removed out of band are rare (an operator, a firewall reload) and a minute to repair them
/// is the trade.
pub fn audit_period(iptables_resync_secs: u32, notified: bool) -> Result<Duration> {
    if let Ok(v) = std::env::var(AUDIT_ENV) {
        return parse_audit_env(&v);
    }
    if notified {
        return Ok(BACKSTOP_AUDIT_PERIOD);
    }
    Ok(Duration::from_secs(u64::from(iptables_resync_secs)).max(MIN_AUDIT_PERIOD))
}

fn parse_audit_env(v: &str) -> Result<Duration> {
    let secs: u64 = v
        .trim()
        .parse()
        .with_context(|| format!("{AUDIT_ENV}={v:?} is not a number of seconds"))?;
    if secs == 0 {
        bail!("{AUDIT_ENV}={v:?}: must be at least 1 second");
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn settings() -> Settings {
        Settings {
            network: "10.244.0.0/16".parse().unwrap(),
            subnet: "10.244.1.0/24".parse().unwrap(),
            ip_masq: true,
            forward: true,
            fully_random: true,
        }
    }

    /// The IPv6 half of a dual-stack network beside [`settings`].
    pub(crate) fn settings_v6() -> Settings {
        Settings {
            network: "fd00:10:244::/56".parse().unwrap(),
            subnet: "fd00:10:244:1::/64".parse().unwrap(),
            ..settings()
        }
    }

    #[tokio::test]
    async fn a_mixed_family_is_refused() {
        let mut s = settings();
        s.subnet = settings_v6().subnet;
        let e = Firewall::new(Mode::Iptables, s).await.unwrap_err();
        assert!(e.to_string().contains("not of the family"), "{e}");
        // Without masquerading and forwarding, no tool is asked: builds anywhere.
        let mut s = settings_v6();
        s.ip_masq = false;
        s.forward = false;
        let mut fw = Firewall::new(Mode::Iptables, s).await.unwrap();
        assert_eq!((fw.family(), fw.label()), (Family::V6, "ip6tables"));
        assert!(fw.set_subnet(settings().subnet).is_err());
        assert_eq!(fw.settings.subnet, settings_v6().subnet);
        fw.set_subnet("fd00:10:244:7::/64".parse().unwrap())
            .unwrap();
        assert_eq!(fw.rules().network, settings_v6().network);
    }

    #[test]
    fn scope_per_family() {
        let v4: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        let v6: Ipv6Net = "fd00:10:244::/56".parse().unwrap();
        assert_eq!(Scope::All.owner(Family::V6), Some(None));
        let only = Scope::only(IpNet::V4(v4));
        assert_eq!(only.owner(Family::V4), Some(Some(IpNet::V4(v4))));
        assert_eq!(only.owner(Family::V6), None);
        let both = Scope::Networks {
            v4: Some(v4),
            v6: Some(v6),
        };
        assert_eq!(both.owner(Family::V6), Some(Some(IpNet::V6(v6))));
    }

    #[test]
    fn audit_period_env() {
        assert_eq!(parse_audit_env("2").unwrap(), Duration::from_secs(2));
        assert!(
            parse_audit_env("0")
                .unwrap_err()
                .to_string()
                .contains(AUDIT_ENV)
        );
        assert!(
            parse_audit_env("x")
                .unwrap_err()
                .to_string()
                .contains("\"x\"")
        );
    }

    #[test]
    fn modes() {
        assert_eq!(Mode::from_config(true), Mode::Nftables);
        assert_eq!(Mode::from_config(false).other(), Mode::Nftables);
        assert_eq!(Mode::Nftables.other().to_string(), "iptables");
    }
}

#[cfg(test)]
mod netns_tests;
#[cfg(test)]
mod netns_v6_tests;
