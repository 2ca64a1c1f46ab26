//! Config changes: the `--net-config-path` file's identity, and what a new config text means
//! for the running agent ([`classify`], pure).
//!
//! Only the backend and the firewall mode can change live. Network, SubnetLen, SubnetMin/Max
//! and the IP families are fixed while nodes hold leases: a config that changes them is refused
//! with one log line and the running data plane stays as it is, as does a config that does not
//! parse.
use anyhow::{Result, anyhow};
use net_conf::NetConf;
use tracing::warn;

/// Parses and checks a config text; warnings (unknown keys, defaulted backend) are logged.
pub fn parse_config(text: &str) -> Result<NetConf> {
    let parsed = NetConf::parse(text).map_err(|e| anyhow!("network config: {e}"))?;
    for w in &parsed.warnings {
        warn!("network config: {w}");
    }
    let conf = parsed.conf;
    if !conf.enable_ipv4 || conf.enable_ipv6 {
        return Err(anyhow!(
            "network config: weft supports IPv4 networks only for now (EnableIPv4 must be true, EnableIPv6 false)"
        ));
    }
    Ok(conf)
}

/// What a new config text asks of the running agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// The same config (maybe other text).
    Unchanged,
    /// Not taken: the reason, for the log. The data plane stays as it is.
    Refused(String),
    /// Taken: the new config; `firewall` when `EnableNFTables` changed, `backend` when the
    /// backend (type or options) changed.
    Apply {
        conf: Box<NetConf>,
        firewall: bool,
        backend: bool,
    },
}

/// Compares the running config with a new text.
pub fn classify(running: &NetConf, text: &str) -> ConfigChange {
    let new = match parse_config(text) {
        Ok(conf) => conf,
        Err(e) => return ConfigChange::Refused(format!("{e:#}")),
    };
    if new == *running {
        return ConfigChange::Unchanged;
    }
    let fixed = |c: &NetConf| {
        (
            c.network,
            c.subnet_len,
            c.subnet_min,
            c.subnet_max,
            c.enable_ipv4,
            c.enable_ipv6,
        )
    };
    if fixed(&new) != fixed(running) {
        return ConfigChange::Refused(format!(
            "Network, SubnetLen, SubnetMin/Max and the IP families cannot change while nodes hold leases ({} /{} → {} /{})",
            running.network.map(|n| n.to_string()).unwrap_or_default(),
            running.subnet_len,
            new.network.map(|n| n.to_string()).unwrap_or_default(),
            new.subnet_len
        ));
    }
    ConfigChange::Apply {
        firewall: new.enable_nftables != running.enable_nftables,
        backend: new.backend != running.backend,
        conf: Box::new(new),
    }
}

/// What identifies a version of the config file: Kubernetes updates a mounted ConfigMap by
/// swapping a symlink, which changes the inode the path resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    ino: u64,
    dev: u64,
    len: u64,
    mtime: Option<std::time::SystemTime>,
}

impl FileStamp {
    pub fn of(path: &std::path::Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            ino: md.ino(),
            dev: md.dev(),
            len: md.len(),
            mtime: md.modified().ok(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VXLAN: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;

    fn running() -> NetConf {
        parse_config(VXLAN).expect("config")
    }

    #[test]
    fn same_config_in_other_words_is_unchanged() {
        let text = r#"{"network":"10.244.0.0/16","backend":{"type":"vxlan"}}"#;
        assert_eq!(classify(&running(), text), ConfigChange::Unchanged);
    }

    #[test]
    fn a_new_backend_is_a_switch() {
        let text = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#;
        match classify(&running(), text) {
            ConfigChange::Apply {
                conf,
                firewall,
                backend,
            } => {
                assert!(backend);
                assert!(!firewall);
                assert_eq!(conf.backend.type_name(), "host-gw");
            }
            other => panic!("expected a switch, got {other:?}"),
        }
        let vni = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":7}}"#;
        assert!(matches!(
            classify(&running(), vni),
            ConfigChange::Apply { backend: true, .. }
        ));
    }

    #[test]
    fn nftables_alone_changes_the_firewall_only() {
        let text =
            r#"{"Network":"10.244.0.0/16","EnableNFTables":true,"Backend":{"Type":"vxlan"}}"#;
        assert!(matches!(
            classify(&running(), text),
            ConfigChange::Apply {
                firewall: true,
                backend: false,
                ..
            }
        ));
    }

    #[test]
    fn a_new_network_or_a_bad_text_is_refused() {
        let text = r#"{"Network":"10.245.0.0/16","Backend":{"Type":"vxlan"}}"#;
        match classify(&running(), text) {
            ConfigChange::Refused(why) => {
                assert!(
                    why.contains("10.244.0.0/16 /24 → 10.245.0.0/16 /24"),
                    "{why}"
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let sublen = r#"{"Network":"10.244.0.0/16","SubnetLen":25,"Backend":{"Type":"vxlan"}}"#;
        assert!(matches!(
            classify(&running(), sublen),
            ConfigChange::Refused(_)
        ));
        match classify(&running(), "{not json") {
            ConfigChange::Refused(why) => assert!(why.starts_with("network config:"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        let v6 = r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","Backend":{"Type":"vxlan"}}"#;
        assert!(matches!(classify(&running(), v6), ConfigChange::Refused(_)));
    }
}
