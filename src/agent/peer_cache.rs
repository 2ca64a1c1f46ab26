//! The on-disk peer cache (`--peer-cache-file`): the last config text, our own lease and every
//! peer's lease, as etcd last showed them. A node that boots while etcd is unreachable programs
//! these (target R3) instead of leaving pods cut off until etcd returns; the first successful
//! etcd list then replaces them.
//!
//! Format (JSON, written atomically): `{"version":1,"config":"<config text>","own":{"key":
//! "10.244.1.0-24","value":"<lease JSON>"},"peers":[{"key":…,"value":…},…]}`. Lease values are
//! kept in flannel's text form, so the file reads like `etcdctl get`.
use std::path::Path;

use anyhow::{Context, Result, bail};
use backends::Peer;
use net_conf::{LeaseAttrs, SubnetKey};
use serde::{Deserialize, Serialize};
use tracing::warn;

const VERSION: u32 = 1;

/// One lease as cached: its subnet key and its value, both as etcd holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLease {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCache {
    pub version: u32,
    pub config: String,
    pub own: CachedLease,
    pub peers: Vec<CachedLease>,
}

/// The file as `PeerCache`'s `Serialize` writes it (same fields, same order), one peer at a time.
fn write_json(
    path: &Path,
    config: &str,
    own: &CachedLease,
    peers: impl Iterator<Item = CachedLease>,
) -> Result<()> {
    crate::agent::subnet_file::write_atomic_with(path, |w| {
        write!(w, "{{\"version\":{VERSION},\"config\":")?;
        serde_json::to_writer(&mut *w, config)?;
        w.write_all(b",\"own\":")?;
        serde_json::to_writer(&mut *w, own)?;
        w.write_all(b",\"peers\":[")?;
        for (i, peer) in peers.enumerate() {
            if i > 0 {
                w.write_all(b",")?;
            }
            serde_json::to_writer(&mut *w, &peer)?;
        }
        w.write_all(b"]}")
    })
    .with_context(|| format!("write the peer cache {}", path.display()))
}

impl PeerCache {
    pub fn new(config: &str, own: SubnetKey, attrs: &LeaseAttrs, peers: &[Peer]) -> PeerCache {
        PeerCache {
            version: VERSION,
            config: config.to_string(),
            own: CachedLease {
                key: own.to_string(),
                value: attrs.to_json(),
            },
            peers: peers
                .iter()
                .map(|p| CachedLease {
                    key: p.key.to_string(),
                    value: p.attrs.to_json(),
                })
                .collect(),
        }
    }

    /// Reads the cache; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<PeerCache>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        let cache: PeerCache = serde_json::from_str(&text)
            .with_context(|| format!("parse the peer cache {}", path.display()))?;
        if cache.version != VERSION {
            bail!(
                "{}: unknown peer cache version {}",
                path.display(),
                cache.version
            );
        }
        Ok(Some(cache))
    }

    /// Writes the cache atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_json(path, &self.config, &self.own, self.peers.iter().cloned())
    }

    /// Writes the cache of these leases to `path` (atomically), streaming: neither the peers
    /// nor the file's text are copied whole (20,000 peers would add megabytes to the agent's
    /// peak memory, target P1).
    pub fn write<'a>(
        path: &Path,
        config: &str,
        own: SubnetKey,
        attrs: &LeaseAttrs,
        peers: impl Iterator<Item = (SubnetKey, &'a LeaseAttrs)>,
    ) -> Result<()> {
        let own = CachedLease {
            key: own.to_string(),
            value: attrs.to_json(),
        };
        let peers = peers.map(|(key, attrs)| CachedLease {
            key: key.to_string(),
            value: attrs.to_json(),
        });
        write_json(path, config, &own, peers)
    }

    /// Our own lease.
    pub fn own(&self) -> Result<(SubnetKey, LeaseAttrs)> {
        let key: SubnetKey = self.own.key.parse().context("cached own key")?;
        let attrs = LeaseAttrs::parse(self.own.value.as_bytes()).context("cached own lease")?;
        Ok((key, attrs))
    }

    /// The cached peers; a malformed entry is skipped with a warning.
    pub fn peers(&self) -> Vec<Peer> {
        self.peers
            .iter()
            .filter_map(|c| {
                let key = c.key.parse::<SubnetKey>();
                let attrs = LeaseAttrs::parse(c.value.as_bytes());
                match (key, attrs) {
                    (Ok(key), Ok(attrs)) => Some(Peer { key, attrs }),
                    (Err(e), _) => {
                        warn!("peer cache: skipping {:?}: {e}", c.key);
                        None
                    }
                    (_, Err(e)) => {
                        warn!("peer cache: skipping {}: {e}", c.key);
                        None
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn peer(key: &str, ip: [u8; 4]) -> Peer {
        Peer {
            key: key.parse().expect("key"),
            attrs: LeaseAttrs::host_gw(Ipv4Addr::from(ip)),
        }
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/peers.json");
        let own: SubnetKey = "10.244.1.0-24".parse().expect("key");
        let attrs = LeaseAttrs::host_gw(Ipv4Addr::new(198, 18, 0, 1));
        let peers = vec![
            peer("10.244.2.0-24", [198, 18, 0, 2]),
            peer("10.244.3.0-24", [198, 18, 0, 3]),
        ];
        let cache = PeerCache::new(r#"{"Network":"10.244.0.0/16"}"#, own, &attrs, &peers);
        cache.save(&path).expect("save");
        let back = PeerCache::load(&path).expect("load").expect("present");
        assert_eq!(back, cache);
        assert_eq!(back.own().expect("own"), (own, attrs.clone()));
        assert_eq!(back.peers(), peers);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.contains(r#"{"key":"10.244.2.0-24","value":"{\"PublicIP\":\"198.18.0.2\",\"PublicIPv6\":null,\"BackendType\":\"host-gw\"}"}"#),
            "{text}"
        );
        // The streaming writer the agent uses writes what serde writes for the same cache.
        assert_eq!(text, serde_json::to_string(&cache).expect("serialise"));
        let streamed = dir.path().join("streamed.json");
        PeerCache::write(
            &streamed,
            r#"{"Network":"10.244.0.0/16"}"#,
            own,
            &attrs,
            peers.iter().map(|p| (p.key, &p.attrs)),
        )
        .expect("write");
        assert_eq!(std::fs::read_to_string(&streamed).expect("read"), text);
        // No peers: still a valid file.
        PeerCache::write(&streamed, "{}", own, &attrs, std::iter::empty()).expect("write");
        let empty = PeerCache::load(&streamed).expect("load").expect("present");
        assert!(empty.peers.is_empty());
    }

    #[test]
    fn missing_file_is_none_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("peers.json");
        assert_eq!(PeerCache::load(&path).expect("load"), None);
        std::fs::write(&path, "not json").expect("write");
        let err = PeerCache::load(&path).expect_err("garbage");
        assert!(
            format!("{err:#}").contains("parse the peer cache"),
            "{err:#}"
        );
    }

    #[test]
    fn malformed_cached_peers_are_skipped() {
        let mut cache = PeerCache::new(
            "{}",
            "10.244.1.0-24".parse().expect("key"),
            &LeaseAttrs::host_gw(Ipv4Addr::new(198, 18, 0, 1)),
            &[peer("10.244.2.0-24", [198, 18, 0, 2])],
        );
        cache.peers.push(CachedLease {
            key: "garbage".into(),
            value: "{}".into(),
        });
        cache.peers.push(CachedLease {
            key: "10.244.9.0-24".into(),
            value: "not json".into(),
        });
        assert_eq!(cache.peers(), vec![peer("10.244.2.0-24", [198, 18, 0, 2])]);
    }
}
