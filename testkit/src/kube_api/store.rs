//! The test API server's object store: Node objects as JSON, one global resourceVersion
//! counter (as etcd's revision behind the real API server), a history of changes for watches
//! and for lists at an older resourceVersion, and compaction.
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

/// The kind of a change, as a watch event's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Added,
    Modified,
    Deleted,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Added => "ADDED",
            Kind::Modified => "MODIFIED",
            Kind::Deleted => "DELETED",
        }
    }
}

/// One change: the object after it (for a delete: the last state, with the delete's
/// resourceVersion) and the object before it (to reconstruct older states).
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub kind: Kind,
    pub name: String,
    pub object: Value,
    pub before: Option<Value>,
}

/// One page of a list: see [`Store::page`].
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Each object's list-item JSON (no kind/apiVersion), by name.
    pub items: Vec<(String, Arc<str>)>,
    /// The last name of this page when more follow (the continue token's start).
    pub next: Option<String>,
    pub remaining: usize,
}

/// Why a read at a resourceVersion cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// Older than the compaction horizon: 410 Gone / Expired.
    Compacted { requested: u64, oldest: u64 },
    /// Newer than anything written: the real server waits, then 504 "Too large resource
    /// version"; we answer at once.
    TooLarge { requested: u64, current: u64 },
}

pub struct Store {
    rv: u64,
    objects: BTreeMap<String, Value>,
    /// Each current object's list-item JSON, encoded once per write (as the real server's
    /// watch cache keeps serialized objects): a list of thousands of Nodes copies text, not
    /// JSON trees.
    encoded: BTreeMap<String, Arc<str>>,
    history: VecDeque<Change>,
    /// Changes at or below this resourceVersion are gone.
    compacted: u64,
    uid_counter: u64,
    pub tx: broadcast::Sender<Change>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(65_536);
        Store {
            // The real server's first resourceVersion is well above 1; start somewhere that
            // tells a resourceVersion from a count.
            rv: 1000,
            objects: BTreeMap::new(),
            encoded: BTreeMap::new(),
            history: VecDeque::new(),
            compacted: 1000,
            uid_counter: 0,
            tx,
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn oldest(&self) -> u64 {
        self.compacted
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.objects.get(name)
    }

    pub fn next_uid(&mut self) -> String {
        self.uid_counter += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.uid_counter)
    }

    /// Stores `object` under `name` with a new resourceVersion (set in its metadata).
    pub fn put(&mut self, name: &str, mut object: Value) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        self.encoded.insert(name.to_string(), encode_item(&object));
        let before = self.objects.insert(name.to_string(), object.clone());
        let kind = if before.is_some() {
            Kind::Modified
        } else {
            Kind::Added
        };
        self.record(kind, name, object.clone(), before);
        object
    }

    pub fn delete(&mut self, name: &str) -> Option<Value> {
        let before = self.objects.remove(name)?;
        self.encoded.remove(name);
        self.rv += 1;
        let mut last = before.clone();
        last["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        self.record(Kind::Deleted, name, last.clone(), Some(before));
        Some(last)
    }

    fn record(&mut self, kind: Kind, name: &str, object: Value, before: Option<Value>) {
        let change = Change {
            rv: self.rv,
            kind,
            name: name.to_string(),
            object,
            before,
        };
        self.history.push_back(change.clone());
        // No receiver is not an error.
        let _ = self.tx.send(change);
    }

    /// Forgets every change up to the current resourceVersion, as etcd's compaction: a watch
    /// or list from an older resourceVersion gets 410 Gone.
    pub fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
    }

    /// Checks that `rv` can be served.
    pub fn check(&self, rv: u64) -> Result<(), At> {
        if rv < self.compacted {
            return Err(At::Compacted {
                requested: rv,
                oldest: self.compacted,
            });
        }
        if rv > self.rv {
            return Err(At::TooLarge {
                requested: rv,
                current: self.rv,
            });
        }
        Ok(())
    }

    /// Every object as it was at `rv` (current objects with later changes undone), by name.
    pub fn objects_at(&self, rv: u64) -> Result<BTreeMap<String, Value>, At> {
        self.check(rv)?;
        let mut objects = self.objects.clone();
        for change in self.history.iter().rev().take_while(|c| c.rv > rv) {
            match &change.before {
                Some(before) => {
                    objects.insert(change.name.clone(), before.clone());
                }
                None => {
                    objects.remove(&change.name);
                }
            }
        }
        Ok(objects)
    }

    /// One page of the objects as they were at `rv`, in name order: the objects after `after`
    /// (exclusive), at most `limit` of them (all if None), only `only` if given. Returns the
    /// page, the last name of the page when more follow, and how many follow. Clones only the
    /// page's objects (a list of thousands of Nodes must not copy them all per page).
    pub fn page(
        &self,
        rv: u64,
        after: Option<&str>,
        limit: Option<usize>,
        only: Option<&str>,
    ) -> Result<Page, At> {
        self.check(rv)?;
        // The state at `rv` = the current objects, with each name changed since then taken
        // back to its value before its first later change.
        let mut overlay: BTreeMap<&str, Option<&Value>> = BTreeMap::new();
        for change in self.history.iter().filter(|c| c.rv > rv) {
            overlay
                .entry(change.name.as_str())
                .or_insert(change.before.as_ref());
        }
        let names: std::collections::BTreeSet<&str> = self
            .objects
            .keys()
            .map(String::as_str)
            .chain(overlay.keys().copied())
            .filter(|n| after.is_none_or(|a| *n > a))
            .filter(|n| only.is_none_or(|o| *n == o))
            .collect();
        let mut page = Page::default();
        for name in names {
            let value = match overlay.get(name) {
                Some(Some(v)) => Some(encode_item(v)),
                Some(None) => None,
                None => self.encoded.get(name).cloned(),
            };
            let Some(value) = value else { continue };
            if limit.is_some_and(|l| page.items.len() >= l) {
                if page.next.is_none() {
                    page.next = page.items.last().map(|(n, _)| n.clone());
                }
                page.remaining += 1;
                continue;
            }
            page.items.push((name.to_string(), value));
        }
        Ok(page)
    }

    /// The changes after `rv`, in order (`rv` must pass [`check`](Self::check)).
    pub fn changes_after(&self, rv: u64) -> Vec<Change> {
        self.history.iter().filter(|c| c.rv > rv).cloned().collect()
    }
}

/// An object as a list item: its JSON without `kind` and `apiVersion`.
fn encode_item(object: &Value) -> Arc<str> {
    let mut v = object.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("kind");
        o.remove("apiVersion");
    }
    Arc::from(v.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_at_undoes_later_changes_and_compaction_expires_old_versions() {
        let mut s = Store::new();
        let a = s.put("a", json!({"metadata": {"name": "a"}, "v": 1}));
        let rv1: u64 = a["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        s.put("a", json!({"metadata": {"name": "a"}, "v": 2}));
        s.put("b", json!({"metadata": {"name": "b"}}));
        s.delete("a");
        let at1 = s.objects_at(rv1).unwrap();
        assert_eq!(at1.len(), 1);
        assert_eq!(at1["a"]["v"], 1);
        let page = s.page(rv1, None, Some(1), None).unwrap();
        assert_eq!(page.items.len(), 1);
        let item: Value = serde_json::from_str(&page.items[0].1).unwrap();
        assert_eq!(item["v"], 1, "the state at rv1, not now");
        assert_eq!((page.next, page.remaining), (None, 0));
        let page = s
            .page(s.resource_version(), None, Some(1), Some("b"))
            .unwrap();
        assert_eq!(page.items[0].0, "b");
        let now = s.objects_at(s.resource_version()).unwrap();
        assert_eq!(now.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(s.changes_after(rv1).len(), 3);
        s.compact();
        assert_eq!(
            s.check(rv1),
            Err(At::Compacted {
                requested: rv1,
                oldest: s.resource_version()
            })
        );
        assert!(matches!(
            s.check(s.resource_version() + 1),
            Err(At::TooLarge { .. })
        ));
    }
}
