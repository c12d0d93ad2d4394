//! One probe worker per (pod, container, probe type) (`prober/worker.go`, §2.8): probes on each
//! `periodSeconds` tick or manual trigger, applies initialDelaySeconds, startup gating and the
//! success/failure thresholds, and publishes results to the cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodStatus as ApiPodStatus, Probe};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::probe::{ProbeRunner, Verdict};
use super::results::{ProbeResult, ProbeType, ResultsManager};
use crate::clock::Clock;
use crate::genericruntime::util::container_field_path;
use crate::genericruntime::{EventSink, EventType};

/// Tries per probe run while the handler returns an *error* (`maxProbeRetries`).
pub const MAX_PROBE_RETRIES: usize = 3;
/// API defaults (`SetDefaults_Probe`), used when a source skipped defaulting.
pub const DEFAULT_PERIOD_SECONDS: i32 = 10;
pub const DEFAULT_SUCCESS_THRESHOLD: i32 = 1;
pub const DEFAULT_FAILURE_THRESHOLD: i32 = 3;

/// Where workers read the pod's current API status (the status manager's cache).
pub trait PodStatusSource: Send + Sync {
    fn pod_status(&self, uid: &str) -> Option<ApiPodStatus>;
}

impl PodStatusSource for crate::kubelet::status::manager::StatusManager {
    fn pod_status(&self, uid: &str) -> Option<ApiPodStatus> {
        self.get_pod_status(uid)
    }
}

/// Identifies a worker.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerKey {
    pub pod_uid: String,
    pub container: String,
    pub probe_type: ProbeType,
}

/// The manager's handle on a running worker.
pub(super) struct WorkerHandle {
    id: u64,
    pub stop: CancellationToken,
    pub trigger: Arc<Notify>,
    /// The latest pod object (deletion timestamp, restart policy).
    pub pod: Arc<Mutex<Pod>>,
}

/// What the manager and its workers share.
pub(super) struct Shared {
    pub runner: Arc<dyn ProbeRunner>,
    pub results: ResultsManager,
    pub statuses: Arc<dyn PodStatusSource>,
    pub events: Arc<dyn EventSink>,
    pub clock: Clock,
    /// When keel started: probes of the first period are spread out.
    pub started: Instant,
    pub workers: Mutex<HashMap<WorkerKey, WorkerHandle>>,
    next_id: AtomicU64,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere mid-update; the data is still the best we have.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn new(
        runner: Arc<dyn ProbeRunner>,
        results: ResultsManager,
        statuses: Arc<dyn PodStatusSource>,
        events: Arc<dyn EventSink>,
        clock: Clock,
        started: Instant,
    ) -> Self {
        Self {
            runner,
            results,
            statuses,
            events,
            clock,
            started,
            workers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Starts a worker for `key` unless one runs; `pod` is shared with the existing one otherwise.
    pub fn ensure_worker(self: &Arc<Self>, key: WorkerKey, pod: &Pod, container: &Container, probe: &Probe) {
        let mut workers = lock(&self.workers);
        if let Some(h) = workers.get(&key) {
            *lock(&h.pod) = pod.clone();
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let handle = WorkerHandle {
            id,
            stop: CancellationToken::new(),
            trigger: Arc::new(Notify::new()),
            pod: Arc::new(Mutex::new(pod.clone())),
        };
        let worker = Worker {
            id,
            key: key.clone(),
            shared: self.clone(),
            pod: handle.pod.clone(),
            stop: handle.stop.clone(),
            trigger: handle.trigger.clone(),
            container: container.clone(),
            probe: probe.clone(),
            container_id: None,
            last_result: ProbeResult::Unknown,
            result_run: 0,
            on_hold: false,
            delay_left: None,
        };
        workers.insert(key, handle);
        tokio::spawn(worker.run());
    }

    /// Forgets a worker that ended, unless a newer one took its key.
    fn remove_worker(&self, key: &WorkerKey, id: u64) {
        let mut workers = lock(&self.workers);
        if workers.get(key).is_some_and(|h| h.id == id) {
            workers.remove(key);
        }
    }
}

/// Probe settings with the API defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub initial_delay: u64,
    pub period: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Settings {
    pub fn of(probe: &Probe) -> Self {
        let positive = |v: Option<i32>, d: i32| u32::try_from(v.filter(|v| *v > 0).unwrap_or(d)).unwrap_or(1);
        Self {
            initial_delay: u64::try_from(probe.initial_delay_seconds.unwrap_or(0)).unwrap_or(0),
            period: Duration::from_secs(u64::from(positive(probe.period_seconds, DEFAULT_PERIOD_SECONDS))),
            success_threshold: positive(probe.success_threshold, DEFAULT_SUCCESS_THRESHOLD),
            failure_threshold: positive(probe.failure_threshold, DEFAULT_FAILURE_THRESHOLD),
        }
    }
}

/// The container's status in the pod status: regular containers, then (sidecar) init ones.
fn find_status<'a>(status: &'a ApiPodStatus, name: &str) -> Option<&'a ContainerStatus> {
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
}

/// One worker.
pub(super) struct Worker {
    id: u64,
    key: WorkerKey,
    shared: Arc<Shared>,
    pod: Arc<Mutex<Pod>>,
    stop: CancellationToken,
    trigger: Arc<Notify>,
    container: Container,
    probe: Probe,
    /// The container instance being probed (`<type>://<id>`).
    container_id: Option<String>,
    last_result: ProbeResult,
    result_run: u32,
    /// After a published liveness/startup failure: idle until a new container instance.
    on_hold: bool,
    /// Inside initialDelaySeconds: how long until it ends (real time), so the first probe runs
    /// then rather than at the next period tick.
    delay_left: Option<Duration>,
}

impl Worker {
    fn probe_type(&self) -> ProbeType {
        self.key.probe_type
    }

    async fn run(mut self) {
        let settings = Settings::of(&self.probe);
        let period = self.shared.clock.to_real(settings.period);
        // Right after keel starts, spread the first probes over one period.
        if self.shared.started.elapsed() < period {
            let wait = period.mul_f64(rand::random::<f64>());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.cancelled() => return self.finish(),
            }
        }
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        while self.do_probe(&settings).await {
            let delay_left = self.delay_left.take();
            let delay_end = async {
                match delay_left {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = ticker.tick() => {}
                _ = self.trigger.notified() => {}
                _ = delay_end => {}
            }
        }
        self.finish();
    }

    fn finish(self) {
        if let Some(id) = &self.container_id {
            self.shared.results.remove(self.probe_type(), id);
        }
        self.shared.remove_worker(&self.key, self.id);
    }

    /// One tick (`doProbe`); false stops the worker.
    async fn do_probe(&mut self, settings: &Settings) -> bool {
        let uid = self.key.pod_uid.clone();
        let Some(status) = self.shared.statuses.pod_status(&uid) else {
            // No status yet: the pod has not been synced.
            return true;
        };
        if matches!(status.phase.as_deref(), Some("Succeeded") | Some("Failed")) {
            return false;
        }
        let Some(c) = find_status(&status, &self.container.name) else {
            return true;
        };
        let Some(cid) = c.container_id.clone().filter(|id| !id.is_empty()) else {
            return true;
        };
        let probe_type = self.probe_type();
        if self.container_id.as_deref() != Some(cid.as_str()) {
            if let Some(old) = &self.container_id {
                self.shared.results.remove(probe_type, old);
            }
            self.shared
                .results
                .set(probe_type, &cid, probe_type.initial_result(), &uid)
                .await;
            self.container_id = Some(cid.clone());
            self.on_hold = false;
        }
        if self.on_hold {
            return true;
        }
        let (deleting, restart_never) = {
            let pod = lock(&self.pod);
            (
                pod.metadata.deletion_timestamp.is_some(),
                pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("Never"),
            )
        };
        let state = c.state.clone().unwrap_or_default();
        let Some(running) = state.running else {
            self.shared
                .results
                .set(probe_type, &cid, ProbeResult::Failure, &uid)
                .await;
            return state.terminated.is_none() || !restart_never;
        };
        if deleting && matches!(probe_type, ProbeType::Liveness | ProbeType::Startup) {
            // A terminating pod is not restarted by its probes.
            self.shared
                .results
                .set(probe_type, &cid, ProbeResult::Success, &uid)
                .await;
            return false;
        }
        if let Some(started_at) = running.started_at {
            let since = self.shared.clock.virtual_between(started_at.0, self.shared.clock.now());
            let delay = Duration::from_secs(settings.initial_delay);
            if since < delay {
                self.delay_left = Some(self.shared.clock.to_real(delay - since));
                return true;
            }
        }
        let started = c.started == Some(true);
        match (probe_type, started) {
            // Startup probing ends once started; the others wait for it.
            (ProbeType::Startup, true) => return true,
            (ProbeType::Liveness | ProbeType::Readiness, false) => return true,
            _ => {}
        }
        let Some(result) = self.run_probe(&status, &cid).await else {
            // A probe error: no state change.
            return true;
        };
        if self.last_result == result {
            self.result_run += 1;
        } else {
            self.last_result = result;
            self.result_run = 1;
        }
        if (result == ProbeResult::Failure && self.result_run < settings.failure_threshold)
            || (result == ProbeResult::Success && self.result_run < settings.success_threshold)
        {
            return true;
        }
        self.shared.results.set(probe_type, &cid, result, &uid).await;
        if matches!(probe_type, ProbeType::Liveness | ProbeType::Startup) && result == ProbeResult::Failure {
            // The container will be restarted: wait for the new instance.
            self.on_hold = true;
            self.result_run = 0;
        }
        true
    }

    /// Runs the probe with retries on error and records its events (`prober.probe`). None: the
    /// probe errored every time.
    async fn run_probe(&self, status: &ApiPodStatus, cid: &str) -> Option<ProbeResult> {
        let pod = lock(&self.pod).clone();
        let kind = self.probe_type().as_str();
        let mut last_err = None;
        for _ in 0..MAX_PROBE_RETRIES {
            match self
                .shared
                .runner
                .run(self.probe_type(), &self.probe, &pod, status, &self.container, cid)
                .await
            {
                Ok((verdict, output)) => {
                    let (result, event) = match verdict {
                        Verdict::Success => (ProbeResult::Success, None),
                        Verdict::Warning => (
                            ProbeResult::Success,
                            Some(("ProbeWarning", format!("{kind} probe warning: {output}"))),
                        ),
                        Verdict::Failure => (
                            ProbeResult::Failure,
                            Some(("Unhealthy", format!("{kind} probe failed: {output}"))),
                        ),
                    };
                    if let Some((reason, message)) = event {
                        tracing::debug!(pod_uid = %self.key.pod_uid, container = %self.container.name, %message, "probe result");
                        self.event(&pod, reason, message);
                    }
                    return Some(result);
                }
                Err(e) => last_err = Some(e),
            }
        }
        if let Some(e) = last_err {
            tracing::debug!(pod_uid = %self.key.pod_uid, container = %self.container.name, error = %e, "probe errored");
            self.event(&pod, "Unhealthy", format!("{kind} probe errored: {e}"));
        }
        None
    }

    fn event(&self, pod: &Pod, reason: &str, message: String) {
        self.shared.events.pod_event(
            pod,
            Some(container_field_path(pod, &self.container.name)),
            EventType::Warning,
            reason,
            message,
        );
    }
}

#[cfg(test)]
mod tests;
