//! The node's rules for each IP family of its network: one [`Firewall`] for IPv4 and, for a
//! dual-stack network, one for IPv6 (ip6tables chains or the `ip6 flannel-ipv6` table), kept in
//! step: built, checked, applied and moved to a new subnet together. An IPv6-only network has
//! the IPv6 one only.
use anyhow::{Result, bail};
use net_conf::{NetConf, SubnetKey};

use super::{ChangeWatch, Firewall, Mode, Settings};

/// See the module doc.
#[derive(Debug, Clone)]
pub struct Firewalls {
    v4: Option<Firewall>,
    v6: Option<Firewall>,
}

/// The flags the rules follow (`--ip-masq`, `--iptables-forward-rules`,
/// `--ip-masq-fully-random-disable`).
#[derive(Debug, Clone, Copy)]
pub struct Flags {
    pub ip_masq: bool,
    pub forward: bool,
    pub fully_random: bool,
}

impl Firewalls {
    /// The firewalls of `conf`'s networks for this node's subnets `own`, in the mode the config
    /// selects (`EnableNFTables`). Nothing is written yet: see [`Firewalls::start`].
    pub async fn new(conf: &NetConf, own: SubnetKey, flags: Flags) -> Result<Firewalls> {
        let mode = Mode::from_config(conf.enable_nftables);
        let settings = |network: ipnet::IpNet, subnet: ipnet::IpNet| Settings {
            network,
            subnet,
            ip_masq: flags.ip_masq,
            forward: flags.forward,
            fully_random: flags.fully_random,
        };
        let v4 = match (conf.enable_ipv4, conf.network, own.v4) {
            (false, _, _) => None,
            (true, Some(net), Some(sub)) => {
                Some(Firewall::new(mode, settings(net.into(), sub.into())).await?)
            }
            (true, net, sub) => bail!(
                "masquerade rules need the Network and this node's IPv4 subnet (Network {net:?}, \
                 subnet {sub:?})"
            ),
        };
        let v6 = match (conf.enable_ipv6, conf.ipv6_network, own.v6) {
            (false, _, _) => None,
            (true, Some(net6), Some(sub6)) => {
                Some(Firewall::new(mode, settings(net6.into(), sub6.into())).await?)
            }
            (true, net6, sub6) => bail!(
                "IPv6 masquerade rules need the IPv6Network and this node's IPv6 subnet \
                 (IPv6Network {net6:?}, subnet {sub6:?})"
            ),
        };
        if v4.is_none() && v6.is_none() {
            bail!("network config: neither IPv4 nor IPv6 is enabled");
        }
        Ok(Firewalls { v4, v6 })
    }

    fn each(&self) -> impl Iterator<Item = &Firewall> {
        self.v4.iter().chain(&self.v6)
    }

    /// The first family's firewall (IPv4, else IPv6): [`Firewalls::new`] makes at least one.
    fn first(&self) -> &Firewall {
        match (&self.v4, &self.v6) {
            (Some(fw), _) | (None, Some(fw)) => fw,
            (None, None) => unreachable!("Firewalls::new refuses a network without a family"),
        }
    }

    /// The mode both firewalls are in.
    pub fn mode(&self) -> Mode {
        self.first().mode()
    }

    /// `iptables`, or `iptables and ip6tables` for a dual-stack network (for log lines).
    pub fn label(&self) -> String {
        self.each()
            .map(Firewall::label)
            .collect::<Vec<_>>()
            .join(" and ")
    }

    /// Whether any rule is wanted (both families follow the same flags).
    pub fn is_active(&self) -> bool {
        self.first().is_active()
    }

    /// The audit period (the same for both families: one [`ChangeWatch`] covers both).
    pub fn audit_period(
        &self,
        iptables_resync_secs: u32,
        watch: &ChangeWatch,
    ) -> Result<std::time::Duration> {
        self.first().audit_period(iptables_resync_secs, watch)
    }

    /// Removes the other mode's rules of each family and writes ours.
    pub async fn start(&self) -> Result<()> {
        self.all(|fw| Box::pin(async move { fw.start().await.map(|_| ()) }))
            .await
    }

    /// Reads the rules back and repairs what differs, in each family.
    pub async fn check(&self) -> Result<()> {
        self.all(|fw| Box::pin(async move { fw.check().await.map(|_| ()) }))
            .await
    }

    /// Writes the rules of each family.
    pub async fn apply(&self) -> Result<()> {
        self.all(|fw| Box::pin(async move { fw.apply().await.map(|_| ()) }))
            .await
    }

    /// Runs `op` on each firewall, all of them even when one fails; the errors together.
    async fn all<'a>(
        &'a self,
        op: impl Fn(
            &'a Firewall,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>>,
    ) -> Result<()> {
        let mut errors = Vec::new();
        for fw in self.each() {
            if let Err(e) = op(fw).await {
                errors.push(format!("{}: {e:#}", fw.label()));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("{}", errors.join("; "))
        }
    }

    /// This node's subnets moved to `own`: each family's rules follow (written by the next
    /// [`apply`](Self::apply)).
    pub fn set_subnet(&mut self, own: SubnetKey) -> Result<()> {
        match (&mut self.v4, own.v4) {
            (Some(fw), Some(sub)) => fw.set_subnet(sub.into())?,
            (Some(_), None) => bail!("the lease {own} has no IPv4 subnet"),
            (None, _) => {}
        }
        match (&mut self.v6, own.v6) {
            (Some(fw), Some(sub6)) => fw.set_subnet(sub6.into()),
            (Some(_), None) => bail!("the lease {own} has no IPv6 subnet"),
            (None, _) => Ok(()),
        }
    }
}
