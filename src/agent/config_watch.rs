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
/// An IPv6-only config (`EnableIPv4: false`) passes here; etcd mode refuses it
/// ([`refuse_ipv6_only_in_etcd`]).
pub fn parse_config(text: &str) -> Result<NetConf> {
    let parsed = NetConf::parse(text).map_err(|e| anyhow!("network config: {e}"))?;
    for w in &parsed.warnings {
        warn!("network config: {w}");
    }
    let conf = parsed.conf;
    if conf.enable_ipv6 {
        match &conf.backend {
            net_conf::BackendConf::HostGw | net_conf::BackendConf::Vxlan(_) => {}
            net_conf::BackendConf::IpIp(_) => {
                return Err(anyhow!(
                    "network config: Backend.Type \"ipip\" is IPv4-only (as in flannel) but \
                     EnableIPv6 is true: use host-gw or vxlan for a network with IPv6, or set \
                     EnableIPv6 to false"
                ));
            }
        }
    }
    Ok(conf)
}

/// etcd mode cannot lease an IPv6-only network: flannel's etcd keys always hold an IPv4 subnet
/// (flanneld's etcd mode does not support it either). kube mode can.
pub fn refuse_ipv6_only_in_etcd(conf: &NetConf) -> Result<()> {
    if conf.enable_ipv4 {
        return Ok(());
    }
    Err(anyhow!(
        "network config: EnableIPv4 false: an IPv6-only network needs --kube-subnet-mgr \
         (flannel's etcd lease keys always hold an IPv4 subnet); enable IPv4 for etcd mode"
    ))
}

/// A field of a config as text, to compare and to show.
type Shown = fn(&NetConf) -> String;

/// The fields on which the `--net-config-path` file and the lease store's own config (etcd's
/// `<prefix>/config`, which flanneld nodes read and weft, given a file, does not) disagree, as
/// `Field (file X, store Y)`. Pure. In a mixed cluster each disagreement splits the overlay:
/// flanneld nodes and weft nodes would program different networks or backends.
pub fn disagreements(file: &NetConf, store: &NetConf) -> Vec<String> {
    let fields: [(&str, Shown); 7] = [
        ("Network", |c| {
            c.network
                .map_or_else(|| "none".to_string(), |n| n.to_string())
        }),
        ("EnableIPv6", |c| c.enable_ipv6.to_string()),
        ("IPv6Network", |c| {
            c.ipv6_network
                .map_or_else(|| "none".to_string(), |n| n.to_string())
        }),
        ("SubnetLen", |c| c.subnet_len.to_string()),
        ("SubnetMin", |c| c.subnet_min.to_string()),
        ("SubnetMax", |c| c.subnet_max.to_string()),
        ("Backend", |c| backend_text(&c.backend)),
    ];
    fields
        .iter()
        .filter_map(|(name, text)| {
            let (a, b) = (text(file), text(store));
            (a != b).then(|| format!("{name} (file {a}, store {b})"))
        })
        .collect()
}

fn backend_text(b: &net_conf::BackendConf) -> String {
    match b {
        net_conf::BackendConf::Vxlan(v) => format!("vxlan {v}"),
        net_conf::BackendConf::IpIp(i) => format!("ipip DirectRouting={}", i.direct_routing),
        net_conf::BackendConf::HostGw => "host-gw".to_string(),
    }
}

/// The loud warning for a file and a store config that disagree (None when they agree or the
/// store has none). A store config that does not parse is reported too: flanneld nodes fail on
/// it while weft runs on the file.
pub fn disagreement_warning(
    file: &NetConf,
    file_path: &std::path::Path,
    store_location: &str,
    store_text: Option<&str>,
) -> Option<String> {
    let store_text = store_text?;
    let store = match NetConf::parse(store_text) {
        Ok(p) => p.conf,
        Err(e) => {
            return Some(format!(
                "the network config in {store_location} does not parse ({e}) while weft runs on                  {}: flanneld nodes reading {store_location} cannot join this overlay",
                file_path.display()
            ));
        }
    };
    let diff = disagreements(file, &store);
    (!diff.is_empty()).then(|| {
        format!(
            "CONFIG MISMATCH: {} and {store_location} disagree on {}; weft follows the file,              flanneld reads {store_location}: in a mixed cluster the overlay splits until they              agree",
            file_path.display(),
            diff.join(", ")
        )
    })
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
            (c.network, c.subnet_len, c.subnet_min, c.subnet_max),
            (c.enable_ipv4, c.enable_ipv6),
            (
                c.ipv6_network,
                c.ipv6_subnet_len,
                c.ipv6_subnet_min,
                c.ipv6_subnet_max,
            ),
        )
    };
    if fixed(&new) != fixed(running) {
        return ConfigChange::Refused(format!(
            "Network, SubnetLen, SubnetMin/Max, the IP families and their IPv6 counterparts cannot change while nodes hold leases ({} /{} → {} /{})",
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
    fn file_and_store_disagreements_name_each_field_with_both_values() {
        let store = parse_config(
            r#"{"Network":"10.245.0.0/16","SubnetLen":25,"Backend":{"Type":"host-gw"}}"#,
        )
        .expect("store");
        let diff = disagreements(&running(), &store);
        assert_eq!(diff.len(), 5, "{diff:?}");
        assert_eq!(diff[0], "Network (file 10.244.0.0/16, store 10.245.0.0/16)");
        assert_eq!(diff[1], "SubnetLen (file 24, store 25)");
        assert_eq!(diff[2], "SubnetMin (file 10.244.1.0, store 10.245.0.128)");
        assert_eq!(
            diff[3],
            "SubnetMax (file 10.244.255.0, store 10.245.255.128)"
        );
        assert!(diff[4].starts_with("Backend (file vxlan VNI=1"), "{diff:?}");
        assert!(diff[4].ends_with("store host-gw)"), "{diff:?}");
        // The same config in other words: no warning; no store config: none either.
        let same = r#"{"network":"10.244.0.0/16","backend":{"type":"vxlan","vni":1}}"#;
        let path = std::path::Path::new("/etc/kube-flannel/net-conf.json");
        assert_eq!(
            disagreement_warning(&running(), path, "etcd", Some(same)),
            None
        );
        assert_eq!(disagreement_warning(&running(), path, "etcd", None), None);
        let w = disagreement_warning(&running(), path, "etcd /x/config", Some("{bad"))
            .expect("a warning");
        assert!(w.contains("does not parse"), "{w}");
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

    #[test]
    fn dual_stack_is_accepted_with_host_gw_and_vxlan_only() {
        let with = |ty: &str| {
            format!(
                r#"{{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{{"Type":"{ty}"}}}}"#
            )
        };
        for ty in ["host-gw", "vxlan"] {
            let conf = parse_config(&with(ty)).expect(ty);
            assert!(conf.enable_ipv6 && conf.ipv6_network.is_some(), "{ty}");
        }
        let e = parse_config(&with("ipip")).expect_err("ipip").to_string();
        assert!(
            e.contains("IPv4-only") && e.contains("EnableIPv6"),
            "ipip: {e}"
        );
        // IPv6-only: parsed (kube mode runs it), refused for etcd mode with a reason.
        let v6_only = r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/56","Backend":{"Type":"host-gw"}}"#;
        let conf = parse_config(v6_only).expect("v6-only");
        assert!(!conf.enable_ipv4 && conf.network.is_none());
        assert_eq!(conf.ipv6_network, Some("fd00::/56".parse().expect("net")));
        let e = refuse_ipv6_only_in_etcd(&conf)
            .expect_err("etcd")
            .to_string();
        assert!(
            e.contains("EnableIPv4 false") && e.contains("--kube-subnet-mgr"),
            "{e}"
        );
        refuse_ipv6_only_in_etcd(&parse_config(&with("vxlan")).expect("dual")).expect("dual");
        let e = parse_config(&v6_only.replace("host-gw", "ipip"))
            .expect_err("ipip v6-only")
            .to_string();
        assert!(e.contains("IPv4-only"), "{e}");
        // A v4-only node's config becoming dual-stack is refused while it runs.
        assert!(matches!(
            classify(&running(), &with("host-gw")),
            ConfigChange::Refused(_)
        ));
    }
}
