//! Repeated warnings, logged once and then counted: the same warning about the same object on
//! every sync (a pod whose sync keeps failing the same way, the same event in standalone mode)
//! would otherwise fill the log. The first occurrence is logged at its level; repeats go to
//! debug with their count, and every power of two is logged again at the original level so a
//! long-standing problem stays visible. Events already aggregate in the API (`count`).
//!
//! Top-level because both sides log such warnings: the kubelet (sync failures, events, eviction)
//! and the backends (a container log or a state file that cannot be written, once per line or
//! per tick), and a backend never imports the kubelet.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// Distinct keys remembered before the table starts afresh (bounded memory: keys name objects,
/// which come and go).
const MAX_KEYS: usize = 4096;

/// Occurrence counts by (kind, object, message).
#[derive(Debug, Default)]
pub struct Repeats {
    seen: Mutex<HashMap<(String, String), u64>>,
}

/// What to do with one occurrence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it at its own level; `count` is how often it happened so far (1 the first time).
    Log { count: u64 },
    /// A repeat: debug level at most.
    Repeat { count: u64 },
}

impl Repeats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one occurrence of `kind` about `object` and says whether to log it.
    pub fn note(&self, kind: &str, object: &str) -> Verdict {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_KEYS && !seen.contains_key(&(kind.to_string(), object.to_string())) {
            seen.clear();
        }
        let n = seen.entry((kind.to_string(), object.to_string())).or_insert(0);
        *n += 1;
        if n.is_power_of_two() {
            Verdict::Log { count: *n }
        } else {
            Verdict::Repeat { count: *n }
        }
    }

    /// Forgets one kind of problem with an object (it went away: the write succeeded again), so
    /// its next occurrence is logged at once.
    pub fn forget(&self, kind: &str, object: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(kind.to_string(), object.to_string()));
    }

    /// Forgets an object (say a pod that is gone), so a new problem with it logs again.
    pub fn forget_object(&self, object: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(_, o), _| o != object);
    }
}

/// The process-wide table for log lines that have no owner to hold one.
pub fn global() -> &'static Repeats {
    static GLOBAL: LazyLock<Repeats> = LazyLock::new(Repeats::new);
    &GLOBAL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_is_logged_then_counted_with_powers_of_two_logged_again() {
        let r = Repeats::new();
        let verdicts: Vec<Verdict> = (0..9).map(|_| r.note("MissingClusterDNS", "default/a")).collect();
        let logged: Vec<u64> = verdicts
            .iter()
            .filter_map(|v| match v {
                Verdict::Log { count } => Some(*count),
                Verdict::Repeat { .. } => None,
            })
            .collect();
        assert_eq!(logged, [1, 2, 4, 8]);
        assert_eq!(verdicts[8], Verdict::Repeat { count: 9 });
        // Another object, or another kind, is a first occurrence of its own.
        assert_eq!(r.note("MissingClusterDNS", "default/b"), Verdict::Log { count: 1 });
        assert_eq!(r.note("FailedSync", "default/a"), Verdict::Log { count: 1 });
        // A forgotten object starts over.
        r.forget_object("default/a");
        assert_eq!(r.note("MissingClusterDNS", "default/a"), Verdict::Log { count: 1 });
    }

    #[test]
    fn the_table_is_bounded() {
        let r = Repeats::new();
        for i in 0..MAX_KEYS + 10 {
            r.note("k", &i.to_string());
        }
        assert!(r.seen.lock().unwrap().len() <= MAX_KEYS);
    }
}
