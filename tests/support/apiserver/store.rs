//! The in-memory object store: one global resourceVersion counter (like etcd's revision), the
//! objects, and the change history that watches replay from.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::objects::{meta_mut, name};

/// Changes kept for watches to resume from; older ones are compacted away (→ 410 Gone).
const HISTORY_LIMIT: usize = 10_000;
/// Live changes buffered per watcher; a watcher that lags further has its watch ended.
const BROADCAST_CAPACITY: usize = 4096;

/// (storage bucket, namespace or "", name).
pub type Key = (String, String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One committed change. `old` is the previous state (selectors decide ADDED/DELETED from it).
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub bucket: String,
    pub namespace: String,
    pub ty: ChangeType,
    pub old: Option<Value>,
    pub obj: Value,
}

pub struct Store {
    inner: Mutex<Inner>,
}

pub struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Change>>,
    /// History is complete for every resourceVersion >= this one.
    compacted: u64,
    tx: broadcast::Sender<Arc<Change>>,
}

impl Store {
    pub fn new() -> Store {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                compacted: 1,
                tx,
            }),
        }
    }

    /// Locks the store; callers never hold the guard across an await.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Forgets all history: watches from any earlier resourceVersion get 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }

    /// Changes after `rv`, or None when they were compacted away.
    pub fn history_since(&self, rv: u64) -> Option<Vec<Arc<Change>>> {
        if rv < self.compacted {
            return None;
        }
        Some(self.history.iter().filter(|c| c.rv > rv).cloned().collect())
    }

    pub fn get(&self, bucket: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&(bucket.to_string(), ns.to_string(), name.to_string()))
    }

    /// Objects of a bucket, in one namespace or all, ordered by namespace then name.
    pub fn list(&self, bucket: &str, ns: Option<&str>) -> Vec<&Value> {
        let lo = (bucket.to_string(), ns.unwrap_or("").to_string(), String::new());
        self.objects
            .range(lo..)
            .take_while(|((b, n, _), _)| b == bucket && ns.is_none_or(|ns| n == ns))
            .map(|(_, v)| v)
            .collect()
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        self.history.push_back(change.clone());
        if self.history.len() > HISTORY_LIMIT {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        // No receivers is fine: nobody watches.
        let _ = self.tx.send(change);
    }

    /// Stores a new object, stamping its resourceVersion; returns the stored object.
    pub fn create(&mut self, bucket: &str, ns: &str, mut obj: Value) -> Value {
        let rv = self.next_rv();
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        let key = (bucket.to_string(), ns.to_string(), name(&obj).to_string());
        self.objects.insert(key, obj.clone());
        self.record(Change {
            rv,
            bucket: bucket.to_string(),
            namespace: ns.to_string(),
            ty: ChangeType::Added,
            old: None,
            obj: obj.clone(),
        });
        obj
    }

    /// Replaces an existing object; a change-free update keeps the resourceVersion and sends no
    /// event, as the real server does.
    pub fn update(&mut self, bucket: &str, ns: &str, mut obj: Value) -> Value {
        let key = (bucket.to_string(), ns.to_string(), name(&obj).to_string());
        let old = self.objects.get(&key).cloned();
        if let Some(old) = &old {
            let mut cmp = obj.clone();
            if let Some(rv) = old.get("metadata").and_then(|m| m.get("resourceVersion")) {
                meta_mut(&mut cmp).insert("resourceVersion".into(), rv.clone());
            }
            if &cmp == old {
                return old.clone();
            }
        }
        let rv = self.next_rv();
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        self.objects.insert(key, obj.clone());
        self.record(Change {
            rv,
            bucket: bucket.to_string(),
            namespace: ns.to_string(),
            ty: ChangeType::Modified,
            old,
            obj: obj.clone(),
        });
        obj
    }

    /// Removes an object; the returned (and watched) object carries the deletion's resourceVersion.
    pub fn delete(&mut self, bucket: &str, ns: &str, name: &str) -> Option<Value> {
        let key = (bucket.to_string(), ns.to_string(), name.to_string());
        let mut obj = self.objects.remove(&key)?;
        let rv = self.next_rv();
        let old = obj.clone();
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        self.record(Change {
            rv,
            bucket: bucket.to_string(),
            namespace: ns.to_string(),
            ty: ChangeType::Deleted,
            old: Some(old),
            obj: obj.clone(),
        });
        Some(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rv_increases_and_history_replays() {
        let store = Store::new();
        let mut s = store.lock();
        let start = s.rv();
        let a = s.create("pods", "default", json!({"metadata": {"name": "a"}}));
        let rv_a: u64 = a["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
        assert!(rv_a > start);
        let same = s.update("pods", "default", a.clone());
        assert_eq!(same, a, "no-op update keeps the object");
        s.delete("pods", "default", "a").unwrap();
        let since = s.history_since(start).unwrap();
        assert_eq!(
            since.iter().map(|c| c.ty).collect::<Vec<_>>(),
            vec![ChangeType::Added, ChangeType::Deleted]
        );
        s.compact();
        assert!(s.history_since(start).is_none());
        assert!(s.history_since(s.rv()).unwrap().is_empty());
    }

    #[test]
    fn list_is_scoped_by_namespace() {
        let store = Store::new();
        let mut s = store.lock();
        s.create("pods", "a", json!({"metadata": {"name": "x"}}));
        s.create("pods", "b", json!({"metadata": {"name": "y"}}));
        s.create("configmaps", "a", json!({"metadata": {"name": "z"}}));
        assert_eq!(s.list("pods", Some("a")).len(), 1);
        assert_eq!(s.list("pods", None).len(), 2);
    }
}
