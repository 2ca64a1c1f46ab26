//! Change notification for the rules: nf_tables' netlink multicast group (`NFNLGRP_NFTABLES`,
//! what `nft monitor` reads). Both weft's nftables table and iptables-nft's `nat`/`filter`
//! tables live in nf_tables, so a rule, chain or table deleted by anyone is announced here
//! within a millisecond, without polling: the agent then runs [`super::Firewall::check`].
//! iptables-legacy announces nothing; there the audit timer alone repairs (see
//! [`super::Firewall::audit_period`]).
//!
//! Only what can break weft's rules wakes the agent: a deleted table (`nat`, `filter`,
//! `flannel-ipv4`), a changed or deleted chain of ours, rules added or deleted in our chains,
//! and rules deleted from the chains holding our jumps (`POSTROUTING`, `FORWARD`). kube-proxy's
//! own chains never do. Our own writes wake it once, for one read that finds all in place.
//!
//! Both families are watched: `ip` (iptables-nft, `ip flannel-ipv4`) and `ip6` (ip6tables-nft's
//! `nat`/`filter`, `ip6 flannel-ipv6`); an IPv6 event is described with an `ip6 ` prefix
//! (`DELRULE ip6 nat FLANNEL-POSTRTG`). One watch serves both firewalls of a dual-stack network.

use std::io;
use std::time::Duration;

use rtnetlink::sys::{AsyncSocket as _, AsyncSocketExt as _, SocketAddr, TokioSocket, protocols};
use tokio::time::Instant;
use tracing::{debug, warn};

/// `NFNLGRP_NFTABLES` (linux/netfilter/nfnetlink.h).
const NFNLGRP_NFTABLES: u32 = 7;
/// `NFNL_SUBSYS_NFTABLES`: the high byte of an nf_tables message type.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFPROTO_IPV4`: the `ip` family (iptables-nft's tables and `ip flannel-ipv4`).
const NFPROTO_IPV4: u8 = 2;
/// `NFPROTO_IPV6`: the `ip6` family (ip6tables-nft's tables and `ip6 flannel-ipv6`).
const NFPROTO_IPV6: u8 = 10;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
/// Events closer together than this are one change (an `iptables-restore` batch, a flush).
const SETTLE: Duration = Duration::from_millis(100);
/// …but a steady stream of events is acted on after this long anyway.
const MAX_SETTLE: Duration = Duration::from_secs(1);

/// Chains whose changes matter in both families: (table, chain, holds only our jump).
const WATCHED: [(&str, &str, bool); 4] = [
    ("nat", "FLANNEL-POSTRTG", false),
    ("filter", "FLANNEL-FWD", false),
    ("nat", "POSTROUTING", true),
    ("filter", "FORWARD", true),
];

/// Our nftables table of a family (`flannel-ipv4` for `ip`, `flannel-ipv6` for `ip6`), whose
/// chains `postrtg` and `forward` are watched too.
fn our_table(family: u8) -> Option<&'static str> {
    use super::nftables::{TABLE_V4, TABLE_V6};
    match family {
        NFPROTO_IPV4 => Some(TABLE_V4.name),
        NFPROTO_IPV6 => Some(TABLE_V6.name),
        _ => None,
    }
}

/// Whether `chain` of `table` (any chain: `None`) is watched in `family`; `jump_only` chains
/// count only when `delrule`.
fn watched(family: u8, table: &str, chain: Option<&str>, delrule: bool) -> bool {
    use super::nftables::{FORWARD_CHAIN, MASQ_CHAIN};
    if our_table(family) == Some(table) {
        return chain.is_none_or(|c| c == MASQ_CHAIN.name || c == FORWARD_CHAIN.name);
    }
    WATCHED.iter().any(|&(t, c, jump_only)| {
        t == table && chain.is_none_or(|chain| c == chain && (!jump_only || delrule))
    })
}

/// A subscription to nf_tables changes. When the socket cannot be opened (no nf_tables in the
/// kernel, no permission) it stays quiet forever and the audit timer does the work.
pub struct ChangeWatch {
    sock: Option<TokioSocket>,
    /// The first relevant event not yet reported, and when it came.
    pending: Option<(String, Instant)>,
}

impl std::fmt::Debug for ChangeWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeWatch")
            .field("live", &self.is_live())
            .field("pending", &self.pending)
            .finish()
    }
}

impl ChangeWatch {
    /// Subscribes in the current network namespace (must run inside a tokio runtime).
    pub fn open() -> ChangeWatch {
        let sock = match subscribe() {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(
                    "cannot subscribe to nf_tables change notifications ({e}); rules removed by others are repaired by the periodic audit only"
                );
                None
            }
        };
        ChangeWatch {
            sock,
            pending: None,
        }
    }

    /// A watch that never fires (nothing to watch).
    pub fn disabled() -> ChangeWatch {
        ChangeWatch {
            sock: None,
            pending: None,
        }
    }

    /// True when notifications arrive (the socket is open).
    pub fn is_live(&self) -> bool {
        self.sock.is_some()
    }

    /// Resolves when something that may concern weft's rules changed, once the burst of
    /// events has settled; says what. Cancel-safe (a `select!` arm): an event already seen is
    /// kept for the next call. Pending forever when not live.
    pub async fn changed(&mut self) -> String {
        let Some(sock) = self.sock.as_ref() else {
            return std::future::pending().await;
        };
        loop {
            let settle = self
                .pending
                .as_ref()
                .map(|(_, since)| (Instant::now() + SETTLE).min(*since + MAX_SETTLE));
            let next = async {
                match settle {
                    Some(at) => tokio::time::timeout_at(at, sock.recv_from_full())
                        .await
                        .ok(),
                    None => Some(sock.recv_from_full().await),
                }
            };
            let what = match next.await {
                // Quiet for SETTLE (or MAX_SETTLE passed): report.
                None => {
                    if let Some((what, _)) = self.pending.take() {
                        return what;
                    }
                    continue;
                }
                Some(Ok((buf, _))) => relevant(&buf),
                // The receive buffer overflowed: events were lost, so assume the worst.
                Some(Err(e)) if e.raw_os_error() == Some(nix::errno::Errno::ENOBUFS as i32) => {
                    Some("notifications lost (ENOBUFS)".to_owned())
                }
                Some(Err(e)) => {
                    warn!("nf_tables notifications failed ({e}); relying on the periodic audit");
                    self.sock = None;
                    return std::future::pending().await;
                }
            };
            if let Some(what) = what {
                debug!("nf_tables change: {what}");
                if self.pending.is_none() {
                    self.pending = Some((what, Instant::now()));
                }
            }
        }
    }
}

fn subscribe() -> io::Result<TokioSocket> {
    let mut sock = TokioSocket::new(protocols::NETLINK_NETFILTER)?;
    sock.socket_mut().bind(&SocketAddr::new(0, 0))?;
    sock.socket_mut().add_membership(NFNLGRP_NFTABLES)?;
    Ok(sock)
}

/// The first event in a datagram of netlink messages that may concern weft's rules,
/// described (`DELRULE nat FLANNEL-POSTRTG`); `None` when none does.
pub fn relevant(buf: &[u8]) -> Option<String> {
    let mut off = 0;
    while let Some(hdr) = buf.get(off..off + 16) {
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let ty = u16::from_ne_bytes([hdr[4], hdr[5]]);
        if len < 16 {
            break;
        }
        let Some(body) = buf.get(off + 16..off + len) else {
            break;
        };
        if let Some(what) = relevant_message(ty, body) {
            return Some(what);
        }
        off += align4(len);
    }
    None
}

fn relevant_message(ty: u16, body: &[u8]) -> Option<String> {
    if ty >> 8 != NFNL_SUBSYS_NFTABLES {
        return None;
    }
    let kind = ty & 0xff;
    // (name, table attribute, chain attribute)
    let (name, table_attr, chain_attr) = match kind {
        NFT_MSG_DELTABLE => ("DELTABLE", 1, None),
        NFT_MSG_NEWCHAIN => ("NEWCHAIN", 1, Some(3)),
        NFT_MSG_DELCHAIN => ("DELCHAIN", 1, Some(3)),
        NFT_MSG_NEWRULE => ("NEWRULE", 1, Some(2)),
        NFT_MSG_DELRULE => ("DELRULE", 1, Some(2)),
        _ => return None,
    };
    // struct nfgenmsg { u8 family; u8 version; be16 res_id; }
    let family = *body.first()?;
    let prefix = match family {
        NFPROTO_IPV4 => "",
        NFPROTO_IPV6 => "ip6 ",
        _ => return None,
    };
    let attrs = body.get(4..)?;
    let table = string_attr(attrs, table_attr)?;
    let chain = match chain_attr {
        Some(a) => Some(string_attr(attrs, a)?),
        None => None,
    };
    let hit = watched(family, table, chain, kind == NFT_MSG_DELRULE);
    hit.then(|| match chain {
        Some(c) => format!("{name} {prefix}{table} {c}"),
        None => format!("{name} {prefix}{table}"),
    })
}

/// A NUL-terminated string attribute of type `want`.
fn string_attr(mut attrs: &[u8], want: u16) -> Option<&str> {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        // Strip NLA_F_NESTED / NLA_F_NET_BYTEORDER.
        let ty = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 {
            return None;
        }
        let value = attrs.get(4..len)?;
        if ty == want {
            let value = value.split(|b| *b == 0).next()?;
            return std::str::from_utf8(value).ok();
        }
        attrs = attrs.get(align4(len).min(attrs.len())..)?;
    }
    None
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn attr(ty: u16, s: &str) -> Vec<u8> {
        let mut v = Vec::new();
        let len = 4 + s.len() + 1;
        v.extend_from_slice(&u16::try_from(len).unwrap().to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        v.resize(align4(v.len()), 0);
        v
    }

    fn message(kind: u16, family: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        for a in attrs {
            body.extend_from_slice(a);
        }
        let mut m = Vec::new();
        m.extend_from_slice(&u32::try_from(16 + body.len()).unwrap().to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | kind).to_ne_bytes());
        m.extend_from_slice(&[0; 10]); // flags, seq, pid
        m.extend_from_slice(&body);
        m
    }

    fn rule(kind: u16, table: &str, chain: &str) -> Vec<u8> {
        message(kind, NFPROTO_IPV4, &[attr(1, table), attr(2, chain)])
    }

    #[test]
    fn only_changes_that_can_break_our_rules_count() {
        let del = |t, c| relevant(&rule(NFT_MSG_DELRULE, t, c));
        assert_eq!(
            del("nat", "FLANNEL-POSTRTG").as_deref(),
            Some("DELRULE nat FLANNEL-POSTRTG")
        );
        assert!(del("nat", "POSTROUTING").is_some());
        assert!(del("filter", "FORWARD").is_some());
        assert!(del("flannel-ipv4", "postrtg").is_some());
        assert!(del("nat", "KUBE-SERVICES").is_none());
        assert!(del("filter", "FLANNEL-POSTRTG").is_none());
        // Rules added to the jump's chain (kube-proxy, Docker) do not matter; to ours they do.
        assert!(relevant(&rule(NFT_MSG_NEWRULE, "nat", "POSTROUTING")).is_none());
        assert!(relevant(&rule(NFT_MSG_NEWRULE, "filter", "FLANNEL-FWD")).is_some());
        let table = message(NFT_MSG_DELTABLE, NFPROTO_IPV4, &[attr(1, "flannel-ipv4")]);
        assert_eq!(relevant(&table).as_deref(), Some("DELTABLE flannel-ipv4"));
        let chain = message(
            NFT_MSG_DELCHAIN,
            NFPROTO_IPV4,
            &[attr(1, "filter"), attr(2, "x"), attr(3, "FLANNEL-FWD")],
        );
        assert_eq!(
            relevant(&chain).as_deref(),
            Some("DELCHAIN filter FLANNEL-FWD")
        );
        // Other families (inet, bridge), other subsystems and truncated messages are ignored.
        let inet = message(
            NFT_MSG_DELRULE,
            1,
            &[attr(1, "nat"), attr(2, "POSTROUTING")],
        );
        assert!(relevant(&inet).is_none());
        let mut buf = rule(NFT_MSG_DELRULE, "nat", "FLANNEL-POSTRTG");
        buf[5] = 1; // subsystem 1: conntrack
        assert!(relevant(&buf).is_none());
        let full = rule(NFT_MSG_DELRULE, "nat", "FLANNEL-POSTRTG");
        assert!(relevant(&full[..full.len() - 4]).is_none());
        // The second message of a datagram is looked at too.
        let mut two = rule(NFT_MSG_DELRULE, "nat", "KUBE-SERVICES");
        two.extend(rule(NFT_MSG_DELRULE, "filter", "FLANNEL-FWD"));
        assert_eq!(
            relevant(&two).as_deref(),
            Some("DELRULE filter FLANNEL-FWD")
        );
    }

    fn rule6(kind: u16, table: &str, chain: &str) -> Vec<u8> {
        message(kind, NFPROTO_IPV6, &[attr(1, table), attr(2, chain)])
    }

    #[test]
    fn ipv6_changes_count_too() {
        let del = |t, c| relevant(&rule6(NFT_MSG_DELRULE, t, c));
        assert_eq!(
            del("nat", "FLANNEL-POSTRTG").as_deref(),
            Some("DELRULE ip6 nat FLANNEL-POSTRTG")
        );
        assert!(del("nat", "POSTROUTING").is_some());
        assert!(del("filter", "FORWARD").is_some());
        assert_eq!(
            del("flannel-ipv6", "postrtg").as_deref(),
            Some("DELRULE ip6 flannel-ipv6 postrtg")
        );
        assert!(del("flannel-ipv6", "forward").is_some());
        assert!(del("flannel-ipv6", "other").is_none());
        assert!(del("nat", "KUBE-SERVICES").is_none());
        assert!(relevant(&rule6(NFT_MSG_NEWRULE, "nat", "POSTROUTING")).is_none());
        // Each family's own table: `ip6 flannel-ipv4` and `ip flannel-ipv6` are not ours.
        assert!(del("flannel-ipv4", "postrtg").is_none());
        assert!(relevant(&rule(NFT_MSG_DELRULE, "flannel-ipv6", "postrtg")).is_none());
        let table = message(NFT_MSG_DELTABLE, NFPROTO_IPV6, &[attr(1, "flannel-ipv6")]);
        assert_eq!(
            relevant(&table).as_deref(),
            Some("DELTABLE ip6 flannel-ipv6")
        );
        let table = message(NFT_MSG_DELTABLE, NFPROTO_IPV6, &[attr(1, "nat")]);
        assert_eq!(relevant(&table).as_deref(), Some("DELTABLE ip6 nat"));
        let table = message(NFT_MSG_DELTABLE, NFPROTO_IPV6, &[attr(1, "other")]);
        assert!(relevant(&table).is_none());
    }
}
