//! The prober manager (`pkg/kubelet/prober/prober_manager.go`, §2.8): one worker per container
//! and probe type, the readiness/liveness/startup result caches, and what the rest of the kubelet
//! reads from them: `ready`/`started` for status generation, liveness/startup failures for
//! `computePodActions`, and the update channel that re-syncs a pod when a result changes.

pub mod probe;
pub mod results;
pub mod worker;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Pod, PodStatus as ApiPodStatus};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::genericruntime::types::{ContainerState, PodStatus as RuntimePodStatus, ProbeFailures};
use crate::genericruntime::EventSink;
use crate::kubelet::status::generate::ProbeResults;
use crate::kubelet::status::phase::is_restartable_init_container;

use probe::ProbeRunner;
use results::{ProbeResult, ProbeType, ResultsManager, Update};
use worker::{lock, PodStatusSource, Shared, WorkerKey};

/// The prober manager.
pub struct ProberManager {
    shared: Arc<Shared>,
    updates: Mutex<Option<mpsc::Receiver<Update>>>,
}

impl ProberManager {
    /// `started` is keel's start (the first probes after it are spread over one period).
    pub fn new(
        runner: Arc<dyn ProbeRunner>,
        statuses: Arc<dyn PodStatusSource>,
        events: Arc<dyn EventSink>,
        clock: Clock,
        started: Instant,
    ) -> Self {
        let (results, rx) = ResultsManager::new();
        Self {
            shared: Arc::new(Shared::new(runner, results, statuses, events, clock, started)),
            updates: Mutex::new(Some(rx)),
        }
    }

    /// The result updates (once: the sync loop owns them).
    pub fn take_updates(&self) -> Option<mpsc::Receiver<Update>> {
        lock(&self.updates).take()
    }

    /// Starts the workers a pod needs (`AddPod`); idempotent, and refreshes the pod the
    /// running workers see. Regular containers and sidecars (restartable init containers).
    pub fn add_pod(&self, pod: &Pod) {
        let Some(spec) = pod.spec.as_ref() else { return };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        // A container that terminated for good (restartPolicy Never) has nothing left to probe:
        // its worker stopped after publishing Failure. Starting another would publish its
        // initial result again and re-sync the pod, whose sync starts another: a busy loop.
        let never = spec.restart_policy.as_deref() == Some("Never");
        let has_probes = |c: &k8s_openapi::api::core::v1::Container| {
            c.readiness_probe.is_some() || c.liveness_probe.is_some() || c.startup_probe.is_some()
        };
        // Read (clone) the cached status only when it can matter.
        let status = if never && spec.containers.iter().any(has_probes) {
            self.shared.statuses.pod_status(&uid)
        } else {
            None
        };
        let finished = |name: &str| {
            never
                && status.as_ref().is_some_and(|s| {
                    s.container_statuses
                        .iter()
                        .flatten()
                        .find(|c| c.name == name)
                        .is_some_and(|c| c.state.as_ref().is_some_and(|st| st.terminated.is_some()))
                })
        };
        let containers = spec.containers.iter().chain(
            spec.init_containers
                .iter()
                .flatten()
                .filter(|c| is_restartable_init_container(c)),
        );
        for c in containers.filter(|c| !finished(&c.name)) {
            for (probe_type, probe) in [
                (ProbeType::Readiness, &c.readiness_probe),
                (ProbeType::Liveness, &c.liveness_probe),
                (ProbeType::Startup, &c.startup_probe),
            ] {
                let Some(probe) = probe else { continue };
                let key = WorkerKey {
                    pod_uid: uid.clone(),
                    container: c.name.clone(),
                    probe_type,
                };
                self.shared.ensure_worker(key, pod, c, probe);
            }
        }
    }

    fn stop_where(&self, pred: impl Fn(&WorkerKey) -> bool) {
        let workers = lock(&self.shared.workers);
        for (key, h) in workers.iter() {
            if pred(key) {
                h.stop.cancel();
            }
        }
    }

    /// A terminating pod is no longer restarted by its probes (`StopLivenessAndStartup`).
    pub fn stop_liveness_and_startup(&self, uid: &str) {
        self.stop_where(|k| k.pod_uid == uid && matches!(k.probe_type, ProbeType::Liveness | ProbeType::Startup));
    }

    /// Stops every worker of a pod (`RemovePod`).
    pub fn remove_pod(&self, uid: &str) {
        self.stop_where(|k| k.pod_uid == uid);
    }

    /// Stops the workers of pods not in `desired` (`CleanupPods`).
    pub fn cleanup_pods(&self, desired: &HashSet<String>) {
        self.stop_where(|k| !desired.contains(&k.pod_uid));
    }

    /// Workers running now (for tests and debugging).
    pub fn worker_keys(&self) -> Vec<WorkerKey> {
        let mut keys: Vec<WorkerKey> = lock(&self.shared.workers).keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Liveness/startup failures of the pod's running containers, for `computePodActions`.
    pub fn probe_failures(&self, runtime: &RuntimePodStatus) -> ProbeFailures {
        let mut f = ProbeFailures::default();
        for c in runtime
            .container_statuses
            .iter()
            .filter(|c| c.state == ContainerState::Running)
        {
            let cid = c.container_id();
            if self.shared.results.get(ProbeType::Liveness, &cid) == Some(ProbeResult::Failure) {
                f.liveness.insert(cid.clone(), ());
            }
            match self.shared.results.get(ProbeType::Startup, &cid) {
                Some(ProbeResult::Failure) => {
                    f.startup.insert(cid, ());
                }
                Some(ProbeResult::Success) => {
                    f.startup_succeeded.insert(cid, ());
                }
                _ => {}
            }
        }
        f
    }

    /// Probes readiness right away for containers that have started but are not ready (the
    /// kubelet's `UpdatePodStatus` does this on each status generation), so a container is
    /// ready soon after its startup probe succeeds rather than a readiness period later.
    pub fn trigger_unready(&self, uid: &str, status: &ApiPodStatus) {
        let workers = lock(&self.shared.workers);
        let all = status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten());
        for c in all.filter(|c| c.started == Some(true) && !c.ready) {
            let key = WorkerKey {
                pod_uid: uid.to_string(),
                container: c.name.clone(),
                probe_type: ProbeType::Readiness,
            };
            if let Some(h) = workers.get(&key) {
                h.trigger.notify_one();
            }
        }
    }

    /// The cached result of one probe type for a container.
    pub fn result(&self, probe_type: ProbeType, container_id: &str) -> Option<ProbeResult> {
        self.shared.results.get(probe_type, container_id)
    }
}

impl ProbeResults for ProberManager {
    fn readiness(&self, container_id: &str) -> Option<bool> {
        self.result(ProbeType::Readiness, container_id)
            .map(|r| r == ProbeResult::Success)
    }

    fn startup(&self, container_id: &str) -> Option<bool> {
        self.result(ProbeType::Startup, container_id)
            .map(|r| r == ProbeResult::Success)
    }
}
