//! The reconciler's book of nexthop objects (pure, no I/O): weft's nexthops by id and by hop,
//! which cached route is written on which nexthop, which ids the kernel holds (whoever made
//! them), and which of weft's nexthops no route uses any more.
//!
//! A route's meaning stays [`crate::Route`] (destination, gateway, device, onlink); this table
//! records how it is written: `ip route replace <dst> nhid <id>`, where nexthop `<id>` is
//! `via <gateway> dev <device> [onlink] proto 87`, one nexthop per distinct hop, shared by the
//! routes with that hop.
//!
//! B-tree maps, not hash maps: at 20,000 peers they hold the same in less memory, and grow
//! without the doubling reallocation of a hash table (the agent's peak RSS is a target).
use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use crate::nl::{Hop, Nexthop};
use crate::owner::Ownership;

/// See the module doc.
#[derive(Debug, Default)]
pub(crate) struct NexthopTable {
    /// weft's nexthops (protocol 87) by id.
    ours: BTreeMap<u32, Owned>,
    /// The nexthop reused for each hop (the lowest id when a dump shows two).
    by_hop: BTreeMap<Hop, u32>,
    /// Ids of other owners' nexthops the kernel holds: never allocated.
    theirs: BTreeSet<u32>,
    /// Which nexthop each cached route written on one uses (weft's or someone else's).
    route_nh: BTreeMap<IpNet, u32>,
    /// weft's nexthops that someone else's route or group uses: never deleted (until a dump
    /// shows them free).
    pinned: BTreeSet<u32>,
    /// weft's nexthops no cached route uses: to delete after the routes of an apply.
    unused: BTreeSet<u32>,
    /// Unused nexthops the kernel may have dropped already (a route delete found its route
    /// gone): checked before deleting, as the id may be someone else's by now.
    doubtful: BTreeSet<u32>,
    /// Where the search for a free id starts: ids are not reused at once, so a late
    /// notification about a deleted nexthop cannot be mistaken for its successor.
    next: u32,
    /// Which protocol-87 nexthops are weft's (this network's id range, or all).
    owner: Ownership,
    /// Protocol-87 nexthops outside this network's id range (an older weft's, or another
    /// network's): someone else's unless only our routes use them ([`adopt`](Self::adopt)).
    adoptable: BTreeMap<u32, Option<Hop>>,
}

#[derive(Debug, Clone, Copy)]
struct Owned {
    /// None for a weft-protocol nexthop that is not a plain gateway hop (weft makes none; such
    /// a nexthop is never reused, and deleted once unused).
    hop: Option<Hop>,
    /// Cached routes written on it.
    users: u32,
}

/// A nexthop of weft's to delete: its id and, for logs and checks, its hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unused {
    pub id: u32,
    pub hop: Option<Hop>,
    /// The kernel may have dropped it already: check it is still weft's before deleting.
    pub doubtful: bool,
}

impl NexthopTable {
    /// Starts over from a dump of every nexthop (`ip nexthop show`). Route uses are counted
    /// again through [`set_route`](Self::set_route); until then every nexthop of weft's is unused.
    pub fn reset(&mut self, dump: &[Nexthop]) {
        let (next, owner) = (self.next, self.owner);
        *self = NexthopTable {
            next,
            owner,
            ..NexthopTable::default()
        };
        for nh in dump {
            if nh.is_weft() && !owner.owns_nexthop_id(nh.id) {
                self.theirs.insert(nh.id);
                self.adoptable.insert(nh.id, nh.hop());
            } else if nh.is_weft() {
                let hop = nh.hop();
                self.ours.insert(nh.id, Owned { hop, users: 0 });
                self.unused.insert(nh.id);
                if let Some(hop) = hop {
                    let id = self.by_hop.entry(hop).or_insert(nh.id);
                    *id = (*id).min(nh.id);
                }
            } else {
                self.theirs.insert(nh.id);
            }
        }
        // A group of someone else's holding one of weft's nexthops.
        for nh in dump.iter().filter(|nh| !nh.is_weft()) {
            for member in &nh.group {
                self.pin(*member);
            }
        }
    }

    /// A table that owns the protocol-87 nexthops `owner` says.
    pub fn with_owner(owner: Ownership) -> Self {
        NexthopTable {
            owner,
            ..NexthopTable::default()
        }
    }

    /// Whether a nexthop seen in a notification is weft's by its protocol and id.
    pub fn owns(&self, nh: &Nexthop) -> bool {
        nh.is_weft() && self.owner.owns_nexthop_id(nh.id)
    }

    /// True when `id` is a protocol-87 nexthop outside this network's range (see
    /// [`adopt`](Self::adopt)).
    pub fn is_adoptable(&self, id: u32) -> bool {
        self.adoptable.contains_key(&id)
    }

    /// Takes the protocol-87 nexthop `id` from outside this network's range as weft's: the
    /// caller found that only this network's routes use it (made by an older weft, which
    /// allocated ids from 1).
    pub fn adopt(&mut self, id: u32) {
        if let Some(hop) = self.adoptable.remove(&id) {
            self.added(id, hop);
            if let Some(hop) = hop {
                let first = self.by_hop.entry(hop).or_insert(id);
                *first = (*first).min(id);
            }
        }
    }

    /// True when `id` is one of weft's nexthops.
    pub fn is_ours(&self, id: u32) -> bool {
        self.ours.contains_key(&id)
    }

    /// The hop of weft's nexthop `id`.
    pub fn hop_of(&self, id: u32) -> Option<Hop> {
        self.ours.get(&id).and_then(|o| o.hop)
    }

    /// weft's nexthop for `hop`, if there is one.
    pub fn id_for(&self, hop: &Hop) -> Option<u32> {
        self.by_hop.get(hop).copied()
    }

    /// The nexthop the cached route to `dst` is written on; None for a plain route.
    pub fn route_nh(&self, dst: &IpNet) -> Option<u32> {
        self.route_nh.get(dst).copied()
    }

    /// True when the cached route to `dst` is not written the way weft writes routes now: in
    /// nexthop mode on a nexthop of weft's (with a hop), else plain.
    pub fn misfit(&self, dst: &IpNet, nexthop_mode: bool) -> bool {
        match self.route_nh.get(dst) {
            Some(id) => !nexthop_mode || self.hop_of(*id).is_none(),
            None => nexthop_mode,
        }
    }

    /// weft's nexthops through device `oif`.
    pub fn ids_via(&self, oif: u32) -> Vec<u32> {
        self.ours
            .iter()
            .filter(|(_, o)| o.hop.is_some_and(|h| h.oif == oif))
            .map(|(id, _)| *id)
            .collect()
    }

    /// A free id: neither weft's nor anyone else's as far as this table knows. The kernel
    /// still has the last word: a nexthop add with it fails with EEXIST if it is taken (then
    /// [`taken`](Self::taken) and allocate again).
    pub fn allocate(&mut self) -> u32 {
        let range = match self.owner.nexthop_ids() {
            Some(r) => r.start..=r.end - 1,
            None => 1..=u32::MAX,
        };
        loop {
            let id = if range.contains(&self.next) {
                self.next
            } else {
                *range.start()
            };
            self.next = id.wrapping_add(1);
            if !self.ours.contains_key(&id) && !self.theirs.contains(&id) {
                return id;
            }
        }
    }

    /// `id` belongs to someone else (an add failed with EEXIST, a notification showed it).
    pub fn taken(&mut self, id: u32) {
        if !self.ours.contains_key(&id) {
            self.theirs.insert(id);
        }
    }

    /// Someone else's nexthop `id` is gone: its id is free again.
    pub fn released(&mut self, id: u32) {
        self.theirs.remove(&id);
        self.adoptable.remove(&id);
    }

    /// weft added nexthop `id` for `hop` (or found one of weft's it did not know). It is
    /// unused until a route is written on it.
    pub fn added(&mut self, id: u32, hop: Option<Hop>) {
        self.theirs.remove(&id);
        self.ours.insert(id, Owned { hop, users: 0 });
        self.unused.insert(id);
        if let Some(hop) = hop {
            self.by_hop.entry(hop).or_insert(id);
        }
    }

    /// Records how the cached route to `dst` is written now: on nexthop `nh`, or plain (None).
    pub fn set_route(&mut self, dst: IpNet, nh: Option<u32>) {
        let old = match nh {
            Some(id) => self.route_nh.insert(dst, id),
            None => self.route_nh.remove(&dst),
        };
        if old == nh {
            return;
        }
        if let Some(old) = old {
            if let Some(o) = self.ours.get_mut(&old) {
                o.users = o.users.saturating_sub(1);
                if o.users == 0 {
                    self.unused.insert(old);
                }
            }
        }
        if let Some(id) = nh {
            if let Some(o) = self.ours.get_mut(&id) {
                o.users += 1;
                self.unused.remove(&id);
                self.doubtful.remove(&id);
            }
        }
    }

    /// Someone else's route or group uses weft's nexthop `id`: it must not be deleted.
    pub fn pin(&mut self, id: u32) {
        if self.ours.contains_key(&id) {
            self.pinned.insert(id);
        }
    }

    /// The route using `id` was already gone when weft deleted it: the kernel may have dropped
    /// the nexthop too, and someone else may hold the id by now.
    pub fn doubt(&mut self, id: u32) {
        if self.ours.contains_key(&id) {
            self.doubtful.insert(id);
        }
    }

    /// weft's nexthops that no cached route and no one else uses, to delete.
    pub fn unused(&self) -> Vec<Unused> {
        self.unused
            .iter()
            .filter(|id| !self.pinned.contains(id))
            .filter_map(|id| {
                let o = self.ours.get(id)?;
                Some(Unused {
                    id: *id,
                    hop: o.hop,
                    doubtful: self.doubtful.contains(id),
                })
            })
            .collect()
    }

    /// weft's nexthop `id` is gone from the kernel (deleted, or dropped with its device): forgets
    /// it and returns the destinations of the cached routes that used it (the kernel removed
    /// them too). `still_taken`: the id now holds someone else's nexthop (replaced under us).
    pub fn removed(&mut self, id: u32, still_taken: bool) -> Vec<IpNet> {
        let Some(owned) = self.ours.remove(&id) else {
            if !still_taken {
                self.theirs.remove(&id);
                self.adoptable.remove(&id);
            }
            return Vec::new();
        };
        if let Some(hop) = owned.hop {
            if self.by_hop.get(&hop) == Some(&id) {
                self.by_hop.remove(&hop);
                // Another nexthop of weft's with the same hop (two in one dump) takes over.
                if let Some((other, _)) = self
                    .ours
                    .iter()
                    .filter(|(_, o)| o.hop == Some(hop))
                    .min_by_key(|(other, _)| **other)
                {
                    self.by_hop.insert(hop, *other);
                }
            }
        }
        self.unused.remove(&id);
        self.doubtful.remove(&id);
        self.pinned.remove(&id);
        if still_taken {
            self.theirs.insert(id);
        }
        if owned.users == 0 {
            return Vec::new();
        }
        let gone: Vec<IpNet> = self
            .route_nh
            .iter()
            .filter(|(_, nh)| **nh == id)
            .map(|(dst, _)| *dst)
            .collect();
        for dst in &gone {
            self.route_nh.remove(dst);
        }
        gone
    }

    /// Number of weft's nexthops.
    pub fn len(&self) -> usize {
        self.ours.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::RTPROT_WEFT;

    fn hop(last: u8, oif: u32) -> Hop {
        Hop {
            gateway: Ipv4Addr::new(198, 18, 0, last).into(),
            oif,
            onlink: false,
        }
    }

    fn nh(id: u32, protocol: u8, hop: Option<Hop>) -> Nexthop {
        Nexthop {
            id,
            protocol,
            family: 2,
            gateway: hop.map(|h| h.gateway),
            oif: hop.map_or(0, |h| h.oif),
            onlink: false,
            blackhole: false,
            fdb: false,
            group: Vec::new(),
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn reset_adopts_weft_nexthops_and_avoids_other_ids() {
        let mut t = NexthopTable::default();
        let mut group = nh(4, 11, None);
        group.group = vec![2, 3];
        t.reset(&[
            nh(1, 11, Some(hop(9, 2))),
            nh(2, RTPROT_WEFT, Some(hop(2, 2))),
            nh(3, RTPROT_WEFT, Some(hop(3, 2))),
            group,
            nh(6, RTPROT_WEFT, Some(hop(2, 2))),
            nh(7, RTPROT_WEFT, None),
        ]);
        assert_eq!(t.len(), 4);
        assert!(t.is_ours(2) && !t.is_ours(1) && !t.is_ours(4));
        assert_eq!(
            t.id_for(&hop(2, 2)),
            Some(2),
            "the lowest id of two with one hop"
        );
        assert_eq!(
            t.id_for(&hop(9, 2)),
            None,
            "someone else's nexthop is not reused"
        );
        // Ids 1..=7 are all taken.
        assert_eq!(t.allocate(), 5);
        assert_eq!(t.allocate(), 8);
        // 2 and 3 are in someone's group: never deleted. 6 and 7 are unused.
        let unused: Vec<u32> = t.unused().iter().map(|u| u.id).collect();
        assert_eq!(unused, vec![6, 7]);
        // The cursor survives a reset: ids are not reused at once.
        t.reset(&[]);
        assert_eq!(t.allocate(), 9);
    }

    #[test]
    fn routes_count_users_and_free_nexthops() {
        let mut t = NexthopTable::default();
        let a = hop(2, 2);
        let id = t.allocate();
        t.added(id, Some(a));
        assert_eq!(t.unused().len(), 1, "unused until a route uses it");
        t.set_route(net("10.244.2.0/24"), Some(id));
        t.set_route(net("10.244.3.0/24"), Some(id));
        assert!(t.unused().is_empty());
        assert!(!t.misfit(&net("10.244.2.0/24"), true));
        assert!(t.misfit(&net("10.244.2.0/24"), false));
        assert!(t.misfit(&net("10.244.9.0/24"), true), "a plain route");
        assert!(!t.misfit(&net("10.244.9.0/24"), false));

        // Rewriting a route on the same nexthop changes nothing; moving one keeps the other.
        t.set_route(net("10.244.2.0/24"), Some(id));
        t.set_route(net("10.244.2.0/24"), None);
        assert!(t.unused().is_empty());
        t.set_route(net("10.244.3.0/24"), None);
        assert_eq!(
            t.unused(),
            vec![Unused {
                id,
                hop: Some(a),
                doubtful: false
            }]
        );
        t.doubt(id);
        assert!(t.unused()[0].doubtful);
        assert_eq!(t.removed(id, false), Vec::<IpNet>::new());
        assert!(t.unused().is_empty() && t.id_for(&a).is_none() && t.len() == 0);
    }

    #[test]
    fn removal_returns_the_routes_that_went_with_it() {
        let mut t = NexthopTable::default();
        t.reset(&[
            nh(5, RTPROT_WEFT, Some(hop(2, 2))),
            nh(8, RTPROT_WEFT, Some(hop(2, 2))),
            nh(6, RTPROT_WEFT, Some(hop(3, 3))),
        ]);
        t.set_route(net("10.244.2.0/24"), Some(5));
        t.set_route(net("10.244.4.0/24"), Some(5));
        t.set_route(net("10.244.3.0/24"), Some(6));
        let mut gone = t.removed(5, false);
        gone.sort();
        assert_eq!(gone, vec![net("10.244.2.0/24"), net("10.244.4.0/24")]);
        assert_eq!(t.route_nh(&net("10.244.2.0/24")), None);
        assert_eq!(
            t.id_for(&hop(2, 2)),
            Some(8),
            "the other nexthop with that hop"
        );
        assert_eq!(t.ids_via(3), vec![6]);
        // Replaced by someone else: not ours, and its id stays taken.
        assert_eq!(t.removed(6, true), vec![net("10.244.3.0/24")]);
        assert!(!t.is_ours(6));
        t.next = 6;
        assert_eq!(t.allocate(), 7);
        // Foreign ids: taken, then released.
        t.taken(9);
        assert_eq!(t.allocate(), 10);
        t.released(9);
        t.next = 9;
        assert_eq!(t.allocate(), 9);
    }

    #[test]
    fn pinned_nexthops_are_kept() {
        let mut t = NexthopTable::default();
        t.reset(&[nh(5, RTPROT_WEFT, Some(hop(2, 2)))]);
        t.pin(5);
        t.pin(77); // not ours: ignored
        assert!(t.unused().is_empty());
        t.reset(&[nh(5, RTPROT_WEFT, Some(hop(2, 2)))]);
        assert_eq!(t.unused().len(), 1, "a new dump decides again");
    }

    #[test]
    fn allocation_wraps_and_skips_zero() {
        let mut t = NexthopTable {
            next: u32::MAX,
            ..NexthopTable::default()
        };
        assert_eq!(t.allocate(), u32::MAX);
        assert_eq!(t.allocate(), 1);
    }

    #[test]
    fn a_network_allocates_in_its_range_and_adopts_only_what_the_caller_says() {
        let owner = Ownership::network("10.244.0.0/16".parse().expect("net"));
        let range = owner.nexthop_ids().expect("range");
        let mut t = NexthopTable::with_owner(owner);
        let other = range.end + 7;
        t.reset(&[
            nh(range.start, RTPROT_WEFT, Some(hop(2, 2))),
            nh(5, RTPROT_WEFT, Some(hop(5, 2))),
            nh(other, RTPROT_WEFT, Some(hop(6, 2))),
        ]);
        assert!(t.is_ours(range.start));
        assert!(!t.is_ours(5) && t.is_adoptable(5), "an older weft's id");
        assert!(
            !t.is_ours(other) && t.is_adoptable(other),
            "another network's"
        );
        assert_eq!(
            t.id_for(&hop(6, 2)),
            None,
            "another network's nexthop is not reused"
        );
        t.adopt(5);
        assert!(t.is_ours(5) && !t.is_adoptable(5));
        assert_eq!(t.id_for(&hop(5, 2)), Some(5));
        assert_eq!(t.unused().len(), 2, "unused until a route is written on it");
        assert_eq!(
            t.allocate(),
            range.start + 1,
            "in range, past the one taken"
        );
        t.next = range.end - 1;
        assert_eq!(t.allocate(), range.end - 1);
        assert_eq!(t.allocate(), range.start + 1, "wraps inside the range");
        assert!(t.owns(&nh(range.start + 9, RTPROT_WEFT, None)));
        assert!(!t.owns(&nh(other, RTPROT_WEFT, None)));
    }
}
