//! Every node's lease, keyed by subnet, as the agent knows it (pure; no I/O).
//!
//! Built from a list ([`LeaseTable::reset`]) and kept current by watch events
//! ([`LeaseTable::apply`]). A malformed key or value never removes an entry: the previous entry
//! of that subnet stays in place. The own subnet is kept in the table but never reported as a
//! peer, so a change of the own subnet (re-acquire) is a filter change, not lost data.
use std::collections::{BTreeMap, BTreeSet};

use backends::Peer;
use net_conf::{LeaseAttrs, SubnetKey};

use crate::lease::etcd::manager::WatchEvent;
use crate::lease::etcd::registry::Snapshot;

/// A change of the peer set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added(Peer),
    Updated { old: Peer, new: Peer },
    Removed(Peer),
}

impl Change {
    /// The subnet the change is about.
    pub fn key(&self) -> SubnetKey {
        match self {
            Change::Added(p) | Change::Removed(p) => p.key,
            Change::Updated { new, .. } => new.key,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct LeaseTable {
    own: Option<SubnetKey>,
    entries: BTreeMap<SubnetKey, LeaseAttrs>,
}

fn peer(key: SubnetKey, attrs: &LeaseAttrs) -> Peer {
    Peer {
        key,
        attrs: attrs.clone(),
    }
}

impl LeaseTable {
    /// An empty table; `own` (the node's subnet) is excluded from [`Self::peers`] and changes.
    pub fn new(own: Option<SubnetKey>) -> Self {
        LeaseTable {
            own,
            entries: BTreeMap::new(),
        }
    }

    pub fn own(&self) -> Option<SubnetKey> {
        self.own
    }

    /// Changes the own subnet (after a re-acquire). The new own subnet stops being a peer
    /// (`Removed` if it was one); the old one becomes a peer if someone else holds it now.
    pub fn set_own(&mut self, own: Option<SubnetKey>) -> Vec<Change> {
        let old = std::mem::replace(&mut self.own, own);
        let mut changes = Vec::new();
        if old == own {
            return changes;
        }
        if let Some((k, attrs)) = own.and_then(|k| self.entries.get_key_value(&k)) {
            changes.push(Change::Removed(peer(*k, attrs)));
        }
        if let Some((k, attrs)) = old.and_then(|k| self.entries.get_key_value(&k)) {
            changes.push(Change::Added(peer(*k, attrs)));
        }
        changes
    }

    /// Replaces the table with a list. Keys malformed in the snapshot keep their previous entry
    /// (never a removal). Returns the peer changes (own subnet excluded), sorted by subnet.
    pub fn reset(&mut self, snapshot: &Snapshot) -> Vec<Change> {
        let malformed: BTreeSet<SubnetKey> =
            snapshot.malformed.iter().filter_map(|m| m.subnet).collect();
        let mut next: BTreeMap<SubnetKey, LeaseAttrs> = snapshot
            .leases
            .iter()
            .map(|l| (l.key, l.attrs.clone()))
            .collect();
        for key in &malformed {
            if next.contains_key(key) {
                continue;
            }
            if let Some(old) = self.entries.get(key) {
                next.insert(*key, old.clone());
            }
        }
        let mut changes = Vec::new();
        for (key, attrs) in &next {
            if Some(*key) == self.own {
                continue;
            }
            match self.entries.get(key) {
                None => changes.push(Change::Added(peer(*key, attrs))),
                Some(old) if old != attrs => changes.push(Change::Updated {
                    old: peer(*key, old),
                    new: peer(*key, attrs),
                }),
                Some(_) => {}
            }
        }
        for (key, attrs) in &self.entries {
            if Some(*key) != self.own && !next.contains_key(key) {
                changes.push(Change::Removed(peer(*key, attrs)));
            }
        }
        changes.sort_by_key(Change::key);
        self.entries = next;
        changes
    }

    /// Applies one watch event. `Put` → Added/Updated (None if identical), `Delete` → Removed,
    /// `Malformed` → None (the previous entry stays). `Resync`, `Disconnected` and `Reconnected`
    /// give None here: use [`Self::handle`] (or `reset`) for a resync.
    pub fn apply(&mut self, event: &WatchEvent) -> Option<Change> {
        match event {
            WatchEvent::Put(entry) => {
                let old = self.entries.insert(entry.key, entry.attrs.clone());
                if Some(entry.key) == self.own {
                    return None;
                }
                match old {
                    None => Some(Change::Added(peer(entry.key, &entry.attrs))),
                    Some(old) if old != entry.attrs => Some(Change::Updated {
                        old: peer(entry.key, &old),
                        new: peer(entry.key, &entry.attrs),
                    }),
                    Some(_) => None,
                }
            }
            WatchEvent::Delete(key) => {
                let old = self.entries.remove(key)?;
                if Some(*key) == self.own {
                    return None;
                }
                Some(Change::Removed(peer(*key, &old)))
            }
            WatchEvent::Malformed { .. }
            | WatchEvent::Resync(_)
            | WatchEvent::Disconnected
            | WatchEvent::Reconnected
            | WatchEvent::Config(_) => None,
        }
    }

    /// Applies any watch event, a resync included.
    pub fn handle(&mut self, event: &WatchEvent) -> Vec<Change> {
        match event {
            WatchEvent::Resync(snapshot) => self.reset(snapshot),
            other => self.apply(other).into_iter().collect(),
        }
    }

    /// All peers (own subnet excluded), sorted by subnet.
    pub fn peers(&self) -> Vec<Peer> {
        self.entries
            .iter()
            .filter(|(k, _)| Some(**k) != self.own)
            .map(|(k, a)| peer(*k, a))
            .collect()
    }

    /// Every peer's subnet and lease (own subnet excluded), by subnet, without copying them.
    pub fn peer_entries(&self) -> impl Iterator<Item = (SubnetKey, &LeaseAttrs)> + '_ {
        self.entries
            .iter()
            .filter(|(k, _)| Some(**k) != self.own)
            .map(|(k, a)| (*k, a))
    }

    /// Every peer's lease attributes (own subnet excluded), by subnet, without copying them.
    pub fn peer_attrs(&self) -> impl Iterator<Item = &LeaseAttrs> + '_ {
        self.entries
            .iter()
            .filter(|(k, _)| Some(**k) != self.own)
            .map(|(_, a)| a)
    }

    /// The lease of a subnet (the own subnet included).
    pub fn get(&self, key: &SubnetKey) -> Option<&LeaseAttrs> {
        self.entries.get(key)
    }

    /// Number of peers (own subnet excluded).
    pub fn len(&self) -> usize {
        self.entries.len() - usize::from(self.own.is_some_and(|o| self.entries.contains_key(&o)))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use ipnet::Ipv4Net;

    use super::*;
    use crate::lease::etcd::registry::{LeaseEntry, Malformed};

    fn key(third: u8) -> SubnetKey {
        SubnetKey::new(Ipv4Net::new(Ipv4Addr::new(10, 244, third, 0), 24).expect("valid net"))
    }

    fn attrs(last: u8) -> LeaseAttrs {
        LeaseAttrs {
            public_ip: Ipv4Addr::new(198, 18, 0, last),
            public_ipv6: None,
            backend_type: "host-gw".into(),
            backend_data: None,
            backend_v6_data: None,
        }
    }

    fn entry(third: u8, last: u8) -> LeaseEntry {
        LeaseEntry {
            key: key(third),
            attrs: attrs(last),
            lease_id: 7,
            mod_revision: 1,
        }
    }

    fn bad(third: u8) -> Malformed {
        Malformed {
            key: format!("/coreos.com/network/subnets/10.244.{third}.0-24"),
            reason: "bad json".into(),
            subnet: Some(key(third)),
        }
    }

    fn snap(leases: Vec<LeaseEntry>, malformed: Vec<Malformed>) -> Snapshot {
        Snapshot {
            revision: 10,
            leases,
            malformed,
        }
    }

    #[test]
    fn reset_diffs_added_updated_removed_and_skips_own() {
        let mut t = LeaseTable::new(Some(key(1)));
        let c = t.reset(&snap(vec![entry(1, 1), entry(2, 2), entry(3, 3)], vec![]));
        assert_eq!(
            c,
            vec![
                Change::Added(peer(key(2), &attrs(2))),
                Change::Added(peer(key(3), &attrs(3)))
            ]
        );
        assert_eq!(t.len(), 2);
        let c = t.reset(&snap(vec![entry(1, 1), entry(2, 9), entry(4, 4)], vec![]));
        assert_eq!(
            c,
            vec![
                Change::Updated {
                    old: peer(key(2), &attrs(2)),
                    new: peer(key(2), &attrs(9))
                },
                Change::Removed(peer(key(3), &attrs(3))),
                Change::Added(peer(key(4), &attrs(4))),
            ]
        );
        // The same list again changes nothing.
        assert!(
            t.reset(&snap(vec![entry(1, 1), entry(2, 9), entry(4, 4)], vec![]))
                .is_empty()
        );
        assert_eq!(
            t.peers().iter().map(|p| p.key).collect::<Vec<_>>(),
            vec![key(2), key(4)]
        );
        assert_eq!(
            t.peer_attrs().cloned().collect::<Vec<_>>(),
            vec![attrs(9), attrs(4)]
        );
    }

    #[test]
    fn reset_keeps_entry_of_a_key_malformed_in_the_snapshot() {
        let mut t = LeaseTable::new(None);
        t.reset(&snap(vec![entry(2, 2), entry(3, 3)], vec![]));
        let c = t.reset(&snap(vec![entry(3, 3)], vec![bad(2)]));
        assert!(
            c.is_empty(),
            "malformed value must not remove the peer: {c:?}"
        );
        assert_eq!(t.get(&key(2)), Some(&attrs(2)));
        // An unknown malformed key adds nothing.
        let c = t.reset(&snap(vec![entry(3, 3)], vec![bad(2), bad(5)]));
        assert!(c.is_empty());
        assert_eq!(t.len(), 2);
        // A malformed key without a parsable subnet does not protect anything else.
        let c = t.reset(&snap(
            vec![entry(3, 3)],
            vec![Malformed {
                key: "/coreos.com/network/subnets/garbage".into(),
                reason: "bad key".into(),
                subnet: None,
            }],
        ));
        assert_eq!(c, vec![Change::Removed(peer(key(2), &attrs(2)))]);
    }

    #[test]
    fn empty_snapshot_with_only_malformed_entries_keeps_them() {
        let mut t = LeaseTable::new(None);
        t.reset(&snap(vec![entry(2, 2)], vec![]));
        assert!(t.reset(&snap(vec![], vec![bad(2)])).is_empty());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn apply_put_delete_malformed() {
        let mut t = LeaseTable::new(Some(key(1)));
        assert_eq!(
            t.apply(&WatchEvent::Put(entry(2, 2))),
            Some(Change::Added(peer(key(2), &attrs(2))))
        );
        // A renewal with identical attrs is no change.
        let mut renewed = entry(2, 2);
        renewed.mod_revision = 99;
        assert_eq!(t.apply(&WatchEvent::Put(renewed)), None);
        assert_eq!(
            t.apply(&WatchEvent::Put(entry(2, 5))),
            Some(Change::Updated {
                old: peer(key(2), &attrs(2)),
                new: peer(key(2), &attrs(5))
            })
        );
        let m = bad(2);
        assert_eq!(
            t.apply(&WatchEvent::Malformed {
                key: m.key,
                reason: m.reason,
                subnet: m.subnet
            }),
            None
        );
        assert_eq!(t.get(&key(2)), Some(&attrs(5)));
        assert_eq!(
            t.apply(&WatchEvent::Delete(key(2))),
            Some(Change::Removed(peer(key(2), &attrs(5))))
        );
        assert_eq!(t.apply(&WatchEvent::Delete(key(2))), None);
        assert!(t.is_empty());
        // Own subnet: stored, never a change.
        assert_eq!(t.apply(&WatchEvent::Put(entry(1, 1))), None);
        assert_eq!(t.apply(&WatchEvent::Delete(key(1))), None);
        assert_eq!(t.apply(&WatchEvent::Disconnected), None);
    }

    #[test]
    fn set_own_moves_the_filter() {
        let mut t = LeaseTable::new(Some(key(1)));
        t.reset(&snap(vec![entry(1, 1), entry(2, 2)], vec![]));
        // Another node took our old subnet while we re-acquired 10.244.2.0/24... (contrived:
        // the point is that both directions are reported).
        let c = t.set_own(Some(key(2)));
        assert_eq!(
            c,
            vec![
                Change::Removed(peer(key(2), &attrs(2))),
                Change::Added(peer(key(1), &attrs(1)))
            ]
        );
        assert_eq!(t.peers(), vec![peer(key(1), &attrs(1))]);
        assert!(t.set_own(Some(key(2))).is_empty());
    }

    #[test]
    fn handle_resync_resets() {
        let mut t = LeaseTable::new(None);
        t.apply(&WatchEvent::Put(entry(2, 2)));
        let c = t.handle(&WatchEvent::Resync(snap(vec![entry(3, 3)], vec![])));
        assert_eq!(
            c,
            vec![
                Change::Removed(peer(key(2), &attrs(2))),
                Change::Added(peer(key(3), &attrs(3)))
            ]
        );
    }
}
