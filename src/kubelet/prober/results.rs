//! The prober's results cache (`pkg/kubelet/prober/results`): the latest published result per
//! container ID, one cache per probe type, and the update channel that makes the sync loop
//! re-sync a pod when a result changes.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::mpsc;

/// Capacity of the update channel shared by the three result caches (the kubelet buffers 20 per
/// cache; one channel carries all three here).
pub const UPDATE_CHANNEL_CAPACITY: usize = 64;

/// A probe result (`results.Result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    Unknown,
    Success,
    Failure,
}

/// The three probe types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeType {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeType {
    /// As event messages name it (`Liveness probe failed: …`).
    pub fn as_str(&self) -> &'static str {
        match self {
            ProbeType::Liveness => "Liveness",
            ProbeType::Readiness => "Readiness",
            ProbeType::Startup => "Startup",
        }
    }

    /// The value a new container starts with: not ready until proven, alive and unknown-started
    /// until proven otherwise.
    pub fn initial_result(&self) -> ProbeResult {
        match self {
            ProbeType::Readiness => ProbeResult::Failure,
            ProbeType::Liveness => ProbeResult::Success,
            ProbeType::Startup => ProbeResult::Unknown,
        }
    }
}

/// A changed result, sent to the sync loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub probe: ProbeType,
    /// `<runtime>://<id>`.
    pub container_id: String,
    pub result: ProbeResult,
    pub pod_uid: String,
}

/// One result cache per probe type, all sending on one channel.
pub struct ResultsManager {
    caches: Mutex<HashMap<(ProbeType, String), ProbeResult>>,
    tx: mpsc::Sender<Update>,
}

impl ResultsManager {
    /// A cache and the receiving end of its updates.
    pub fn new() -> (Self, mpsc::Receiver<Update>) {
        let (tx, rx) = mpsc::channel(UPDATE_CHANNEL_CAPACITY);
        (
            Self {
                caches: Mutex::new(HashMap::new()),
                tx,
            },
            rx,
        )
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(ProbeType, String), ProbeResult>> {
        // A poisoned lock means a panic elsewhere mid-update; the map itself is still valid.
        self.caches.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, probe: ProbeType, container_id: &str) -> Option<ProbeResult> {
        self.lock().get(&(probe, container_id.to_string())).copied()
    }

    /// Stores `result`; a change is sent to the sync loop (waiting while the channel is full, as
    /// the kubelet's workers block on theirs).
    pub async fn set(&self, probe: ProbeType, container_id: &str, result: ProbeResult, pod_uid: &str) {
        let changed = {
            let mut m = self.lock();
            m.insert((probe, container_id.to_string()), result) != Some(result)
        };
        if changed {
            let update = Update {
                probe,
                container_id: container_id.to_string(),
                result,
                pod_uid: pod_uid.to_string(),
            };
            // The receiver only goes away when keel shuts down.
            let _ = self.tx.send(update).await;
        }
    }

    pub fn remove(&self, probe: ProbeType, container_id: &str) {
        self.lock().remove(&(probe, container_id.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_changes_are_sent() {
        let (m, mut rx) = ResultsManager::new();
        assert_eq!(m.get(ProbeType::Readiness, "sim://a"), None);
        m.set(ProbeType::Readiness, "sim://a", ProbeResult::Failure, "u").await;
        m.set(ProbeType::Readiness, "sim://a", ProbeResult::Failure, "u").await;
        m.set(ProbeType::Readiness, "sim://a", ProbeResult::Success, "u").await;
        assert_eq!(m.get(ProbeType::Readiness, "sim://a"), Some(ProbeResult::Success));
        // Another type's cache is separate.
        assert_eq!(m.get(ProbeType::Liveness, "sim://a"), None);
        let first = rx.try_recv().unwrap();
        assert_eq!(first.result, ProbeResult::Failure);
        assert_eq!(first.pod_uid, "u");
        assert_eq!(rx.try_recv().unwrap().result, ProbeResult::Success);
        assert!(rx.try_recv().is_err());
        m.remove(ProbeType::Readiness, "sim://a");
        assert_eq!(m.get(ProbeType::Readiness, "sim://a"), None);
    }

    #[test]
    fn initial_results() {
        assert_eq!(ProbeType::Readiness.initial_result(), ProbeResult::Failure);
        assert_eq!(ProbeType::Liveness.initial_result(), ProbeResult::Success);
        assert_eq!(ProbeType::Startup.initial_result(), ProbeResult::Unknown);
    }
}
