//! The kubelet's reason cache (`pkg/kubelet/reason_cache.go`): the last StartContainer failure of
//! each container, so API status can show `waiting{reason: CrashLoopBackOff, …}` between syncs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::genericruntime::types::{PodSyncResult, SyncErrorKind};

/// How many (pod, container) entries the cache keeps (the kubelet's `maxReasonCacheEntries`).
pub const MAX_REASON_CACHE_ENTRIES: usize = 1000;

/// A cached start failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReasonInfo {
    pub reason: SyncErrorKind,
    pub message: String,
}

type Key = (String, String);

#[derive(Default)]
struct Inner {
    /// key → (last-use tick, info)
    entries: HashMap<Key, (u64, ReasonInfo)>,
    /// last-use tick → key, oldest first (the LRU order).
    order: BTreeMap<u64, Key>,
    tick: u64,
}

impl Inner {
    fn touch(&mut self, key: &Key) {
        self.tick += 1;
        let tick = self.tick;
        if let Some((old, _)) = self.entries.get(key).map(|(t, i)| (*t, i.clone())) {
            self.order.remove(&old);
            self.order.insert(tick, key.clone());
            if let Some(e) = self.entries.get_mut(key) {
                e.0 = tick;
            }
        }
    }
}

/// LRU map (pod UID, container name) → last start failure. Shared by the pod workers (writers)
/// and status generation (reader), hence the interior lock (never held across an await).
pub struct ReasonCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl Default for ReasonCache {
    fn default() -> Self {
        Self::new()
    }
}

impl ReasonCache {
    pub fn new() -> Self {
        Self::with_capacity(MAX_REASON_CACHE_ENTRIES)
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps inconsistent in a way that
        // matters for a cache, so a poisoned lock is simply reused.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a failure for a container (most recently used).
    pub fn add(&self, uid: &str, container: &str, reason: SyncErrorKind, message: String) {
        let key = (uid.to_string(), container.to_string());
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        if let Some((old, _)) = g.entries.insert(key.clone(), (tick, ReasonInfo { reason, message })) {
            g.order.remove(&old);
        }
        g.order.insert(tick, key);
        while g.entries.len() > self.capacity {
            let Some((_, oldest)) = g.order.pop_first() else { break };
            g.entries.remove(&oldest);
        }
    }

    pub fn remove(&self, uid: &str, container: &str) {
        let key = (uid.to_string(), container.to_string());
        let mut g = self.lock();
        if let Some((tick, _)) = g.entries.remove(&key) {
            g.order.remove(&tick);
        }
    }

    /// The cached failure, if any (counts as a use for the LRU order, like the kubelet's).
    pub fn get(&self, uid: &str, container: &str) -> Option<ReasonInfo> {
        let key = (uid.to_string(), container.to_string());
        let mut g = self.lock();
        let info = g.entries.get(&key).map(|(_, i)| i.clone())?;
        g.touch(&key);
        Some(info)
    }

    /// Feeds a sync result in: failed StartContainer steps are stored, successful ones cleared
    /// (`ReasonCache.Update`); other actions are ignored.
    pub fn update(&self, uid: &str, result: &PodSyncResult) {
        for r in result.start_results() {
            match &r.error {
                Some((kind, msg)) => self.add(uid, &r.target, *kind, msg.clone()),
                None => self.remove(uid, &r.target),
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genericruntime::types::{SyncAction, SyncResult};

    fn res(action: SyncAction, target: &str, err: Option<SyncErrorKind>) -> SyncResult {
        SyncResult {
            action,
            target: target.into(),
            error: err.map(|k| (k, format!("{} happened", k.as_str()))),
        }
    }

    #[test]
    fn update_adds_failed_starts_and_removes_successful_ones() {
        let c = ReasonCache::new();
        let mut r = PodSyncResult::default();
        r.push(res(
            SyncAction::StartContainer,
            "a",
            Some(SyncErrorKind::CrashLoopBackOff),
        ));
        r.push(res(SyncAction::StartContainer, "b", None));
        r.push(res(
            SyncAction::KillContainer,
            "c",
            Some(SyncErrorKind::KillContainerError),
        ));
        c.update("u1", &r);
        assert_eq!(
            c.get("u1", "a"),
            Some(ReasonInfo {
                reason: SyncErrorKind::CrashLoopBackOff,
                message: "CrashLoopBackOff happened".into()
            })
        );
        assert_eq!(c.get("u1", "b"), None);
        assert_eq!(c.get("u1", "c"), None, "only StartContainer results are cached");
        assert_eq!(c.get("u2", "a"), None);

        let mut ok = PodSyncResult::default();
        ok.push(res(SyncAction::StartContainer, "a", None));
        c.update("u1", &ok);
        assert_eq!(c.get("u1", "a"), None);
        assert!(c.is_empty());
    }

    #[test]
    fn evicts_least_recently_used() {
        let c = ReasonCache::with_capacity(2);
        c.add("u", "a", SyncErrorKind::ErrImagePull, "x".into());
        c.add("u", "b", SyncErrorKind::ErrImagePull, "x".into());
        // Using "a" makes "b" the oldest.
        assert!(c.get("u", "a").is_some());
        c.add("u", "c", SyncErrorKind::ErrImagePull, "x".into());
        assert_eq!(c.len(), 2);
        assert!(c.get("u", "a").is_some());
        assert!(c.get("u", "b").is_none());
        assert!(c.get("u", "c").is_some());
    }
}
