//! The generic PLEG (`pkg/kubelet/pleg/generic.go`, §2.1) and the pod status cache
//! (`pkg/kubelet/container/cache.go`, §2.2).
//!
//! Every second PLEG lists all containers and sandboxes, compares each one's state with the
//! previous relist, refreshes the cache for pods that changed and tells the sync loop about it.
//! Pod workers read the cache with `get_newer_than`, so each sync sees a status at least one
//! relist newer than its previous sync.
//!
//! Relisting is the backstop. A pod worker that started or killed containers publishes that
//! pod's status at once ([`refresh_pod`]), and runtime container events (CRI
//! `GetContainerEvents`, see [`events`]) wake a relist as soon as something happens. The cache
//! keeps the newest observation: an entry written from a look taken at T is never replaced by
//! one taken earlier (the kubelet cache's `modified` ordering), whoever finishes last.

mod events;
#[cfg(test)]
mod fresh_tests;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::seam::{cri, Code, ContainerEventStream, RuntimeError};
use super::types::{ContainerState, PodStatus, RunningPod};
use super::{Result, RuntimeManager};
use crate::clock::{go_duration, Clock};

/// Relist period (virtual), `plegRelistPeriod`.
pub const RELIST_PERIOD: Duration = Duration::from_secs(1);
/// Relist period while the runtime's event stream is up (virtual). Events wake a relist when
/// something happens, so this could be long (the kubelet's Evented PLEG: 300 s); it stays at a
/// second until every backend reports sandbox changes as events too (the simulator reports
/// container events only) and the callers that wait on relists are audited: with a minute here,
/// sandbox stops and kill-then-restart sequences were seen only at the next periodic relist.
pub const EVENTED_RELIST_PERIOD: Duration = RELIST_PERIOD;
/// PLEG is unhealthy when the last successful relist is older than this (virtual), `relistThreshold`.
pub const RELIST_THRESHOLD: Duration = Duration::from_secs(180);
/// Capacity of the PLEG event channel, `plegChannelCapacity`; events are dropped when it is full.
pub const PLEG_CHANNEL_CAPACITY: usize = 1000;

// ---------------------------------------------------------------------------------------------
// Pod cache
// ---------------------------------------------------------------------------------------------

/// A cached status: what the last inspection found, or the error it hit.
#[derive(Clone, Debug, Default)]
pub struct CachedStatus {
    pub status: Arc<PodStatus>,
    pub error: Option<String>,
}

#[derive(Debug)]
struct CacheEntry {
    status: Arc<PodStatus>,
    error: Option<String>,
    modified: Instant,
}

#[derive(Debug, Default)]
struct CacheInner {
    pods: HashMap<String, CacheEntry>,
    /// Every pod's status is at least this fresh (set after each relist).
    timestamp: Option<Instant>,
}

/// Per-pod runtime status, as PLEG last saw it.
#[derive(Debug, Default)]
pub struct PodCache {
    inner: Mutex<CacheInner>,
    /// Woken on every `set` and `update_time`; waiters re-check their condition.
    changed: Notify,
    /// Woken when a worker waits for a status newer than the cache has: PLEG relists now
    /// rather than at its period (which is long while runtime events flow).
    wanted: Notify,
}

fn empty_status(uid: &str) -> CachedStatus {
    CachedStatus {
        status: Arc::new(PodStatus {
            uid: uid.to_string(),
            ..Default::default()
        }),
        error: None,
    }
}

impl PodCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // A panic while holding this lock cannot leave the map half-updated (single inserts),
        // so a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached status; an empty status with that UID for unknown pods (`cache.Get`).
    pub fn get(&self, uid: &str) -> CachedStatus {
        match self.lock().pods.get(uid) {
            Some(e) => CachedStatus {
                status: e.status.clone(),
                error: e.error.clone(),
            },
            None => empty_status(uid),
        }
    }

    /// When the pod's entry was last set, if it has one.
    pub fn modified(&self, uid: &str) -> Option<Instant> {
        self.lock().pods.get(uid).map(|e| e.modified)
    }

    /// Stores a status (or the error that replaced it) observed at `at`, unless the entry holds
    /// an observation taken after `at` (a slow relist must not undo a newer targeted refresh or
    /// event). Returns whether it was stored.
    pub fn set(&self, uid: &str, status: Arc<PodStatus>, error: Option<String>, at: Instant) -> bool {
        {
            let mut inner = self.lock();
            if inner.pods.get(uid).is_some_and(|e| e.modified > at) {
                return false;
            }
            inner.pods.insert(
                uid.to_string(),
                CacheEntry {
                    status,
                    error,
                    modified: at,
                },
            );
        }
        self.changed.notify_waiters();
        true
    }

    /// Forgets a pod.
    pub fn delete(&self, uid: &str) {
        self.lock().pods.remove(uid);
    }

    /// Forgets a pod seen gone at `at`, unless its entry is newer than that look.
    pub fn delete_observed(&self, uid: &str, at: Instant) {
        let mut inner = self.lock();
        if inner.pods.get(uid).is_some_and(|e| e.modified <= at) {
            inner.pods.remove(uid);
        }
    }

    /// Declares every status at least as fresh as `at` (end of a relist).
    pub fn update_time(&self, at: Instant) {
        {
            let mut inner = self.lock();
            if inner.timestamp.is_none_or(|t| at > t) {
                inner.timestamp = Some(at);
            }
        }
        self.changed.notify_waiters();
    }

    /// The pod's status if it is newer than `t` (`getIfNewerThan`).
    fn get_if_newer_than(&self, uid: &str, t: Instant) -> Option<CachedStatus> {
        let inner = self.lock();
        let global_newer = inner.timestamp.is_some_and(|ts| ts > t);
        match inner.pods.get(uid) {
            None if global_newer => Some(empty_status(uid)),
            Some(e) if e.modified > t || global_newer => Some(CachedStatus {
                status: e.status.clone(),
                error: e.error.clone(),
            }),
            _ => None,
        }
    }

    /// Waits until the pod's entry was modified after `t`, or a relist finished after `t`
    /// (unknown pods then get an empty status with their UID).
    pub async fn get_newer_than(&self, uid: &str, t: Instant) -> CachedStatus {
        loop {
            // Register interest before checking, so a set/update between check and await is seen.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(s) = self.get_if_newer_than(uid, t) {
                return s;
            }
            self.wanted.notify_one();
            notified.await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Event computation
// ---------------------------------------------------------------------------------------------

/// What happened to a container (or sandbox) between two relists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PlegEventKind {
    ContainerStarted,
    ContainerDied,
    ContainerRemoved,
    /// Moved to an unknown/created state; refreshes the cache but is not sent.
    ContainerChanged,
}

/// One pod lifecycle event; `data` is the container (or sandbox) ID.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlegEvent {
    pub pod_uid: String,
    pub kind: PlegEventKind,
    pub data: String,
}

/// PLEG's coarse view of a container's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PlegState {
    Running,
    Exited,
    Unknown,
    NonExistent,
}

fn convert_state(s: ContainerState) -> PlegState {
    match s {
        ContainerState::Running => PlegState::Running,
        ContainerState::Exited => PlegState::Exited,
        // Created counts as unknown, as in the kubelet.
        ContainerState::Created | ContainerState::Unknown => PlegState::Unknown,
    }
}

fn state_in(pod: Option<&RunningPod>, id: &str) -> PlegState {
    let Some(pod) = pod else { return PlegState::NonExistent };
    pod.containers
        .iter()
        .chain(pod.sandboxes.iter())
        .find(|c| c.id == id)
        .map_or(PlegState::NonExistent, |c| convert_state(c.state))
}

fn generate_events(pod_uid: &str, id: &str, old: PlegState, new: PlegState) -> Vec<PlegEvent> {
    if old == new {
        return Vec::new();
    }
    let ev = |kind| PlegEvent {
        pod_uid: pod_uid.to_string(),
        kind,
        data: id.to_string(),
    };
    match new {
        PlegState::Running => vec![ev(PlegEventKind::ContainerStarted)],
        PlegState::Exited => vec![ev(PlegEventKind::ContainerDied)],
        PlegState::Unknown => vec![ev(PlegEventKind::ContainerChanged)],
        PlegState::NonExistent => match old {
            // Its death was reported before.
            PlegState::Exited => vec![ev(PlegEventKind::ContainerRemoved)],
            _ => vec![ev(PlegEventKind::ContainerDied), ev(PlegEventKind::ContainerRemoved)],
        },
    }
}

/// Events for one pod between its old and new listing (either may be absent), covering every
/// container and sandbox ID in either, in listing order (old first).
pub fn compute_pod_events(uid: &str, old: Option<&RunningPod>, new: Option<&RunningPod>) -> Vec<PlegEvent> {
    let mut seen = BTreeSet::new();
    let mut events = Vec::new();
    for pod in [old, new].into_iter().flatten() {
        for c in pod.containers.iter().chain(pod.sandboxes.iter()) {
            if !seen.insert(c.id.as_str()) {
                continue;
            }
            events.extend(generate_events(uid, &c.id, state_in(old, &c.id), state_in(new, &c.id)));
        }
    }
    events
}

/// Events between two whole relists, pods in UID order (includes `ContainerChanged`).
pub fn compute_events(old: &[RunningPod], new: &[RunningPod]) -> Vec<PlegEvent> {
    let old_by: HashMap<&str, &RunningPod> = old.iter().map(|p| (p.uid.as_str(), p)).collect();
    let new_by: HashMap<&str, &RunningPod> = new.iter().map(|p| (p.uid.as_str(), p)).collect();
    let uids: BTreeSet<&str> = old_by.keys().chain(new_by.keys()).copied().collect();
    uids.into_iter()
        .flat_map(|uid| compute_pod_events(uid, old_by.get(uid).copied(), new_by.get(uid).copied()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// PLEG
// ---------------------------------------------------------------------------------------------

/// What PLEG needs from the runtime manager (a seam so the relist logic is testable alone).
#[async_trait::async_trait]
pub(crate) trait RelistRuntime: Send + Sync {
    async fn get_pods(&self) -> Result<Vec<RunningPod>>;
    async fn get_pod_status(&self, uid: &str, name: &str, namespace: &str) -> Result<PodStatus>;
    /// The runtime's container events; Unimplemented when it has none.
    async fn container_events(&self) -> Result<ContainerEventStream, RuntimeError> {
        Err(RuntimeError::new(
            "GetContainerEvents",
            Code::Unimplemented,
            "no container events",
        ))
    }
}

#[async_trait::async_trait]
impl RelistRuntime for RuntimeManager {
    async fn get_pods(&self) -> Result<Vec<RunningPod>> {
        RuntimeManager::get_pods(self, true).await
    }

    async fn get_pod_status(&self, uid: &str, name: &str, namespace: &str) -> Result<PodStatus> {
        RuntimeManager::get_pod_status(self, uid, name, namespace).await
    }

    async fn container_events(&self) -> Result<ContainerEventStream, RuntimeError> {
        self.runtime.get_container_events(cri::GetEventsRequest {}).await
    }
}

/// Targeted status refresh: inspects one pod now (its sandboxes and containers, as a relist
/// would for a pod that changed) and stores the result in the cache, ordered by when the look
/// began. Returns the pod's cache entry afterwards (the newest observation, this one or later).
pub async fn refresh_pod(
    manager: &RuntimeManager,
    cache: &PodCache,
    clock: &Clock,
    uid: &str,
    name: &str,
    namespace: &str,
) -> Result<CachedStatus> {
    refresh_with(manager, cache, clock, uid, name, namespace).await
}

async fn refresh_with(
    runtime: &dyn RelistRuntime,
    cache: &PodCache,
    clock: &Clock,
    uid: &str,
    name: &str,
    namespace: &str,
) -> Result<CachedStatus> {
    let timestamp = clock.instant();
    match runtime.get_pod_status(uid, name, namespace).await {
        Ok(mut status) => {
            let previous = cache.get(uid);
            status.ips = pod_ips(&status, &previous.status);
            cache.set(uid, Arc::new(status), None, timestamp);
            Ok(cache.get(uid))
        }
        Err(e) => {
            let previous = cache.get(uid);
            cache.set(uid, previous.status, Some(e.to_string()), timestamp);
            Err(e)
        }
    }
}

/// Per-pod listing from the last relist whose events were handled (`old`) and from this one.
#[derive(Debug, Default)]
struct PodRecord {
    old: Option<RunningPod>,
    current: Option<RunningPod>,
}

#[derive(Debug, Default)]
struct RelistState {
    records: HashMap<String, PodRecord>,
    /// Pods whose inspection failed: inspected again next relist.
    reinspect: HashMap<String, Option<RunningPod>>,
    /// Whether the last `get_pods` failed (log once per failure streak).
    failing: bool,
}

/// The generic pod lifecycle event generator.
pub struct Pleg {
    runtime: Arc<dyn RelistRuntime>,
    cache: Arc<PodCache>,
    clock: Clock,
    state: tokio::sync::Mutex<RelistState>,
    last_relist: Mutex<Option<Instant>>,
    /// Wakes the relist loop early (a runtime event arrived, or the event stream went down).
    wake: Notify,
    /// Whether the runtime's event stream is up (the relist period is then long).
    events_up: std::sync::atomic::AtomicBool,
    /// Relist period with no event stream (virtual); [`RELIST_PERIOD`] but for tests.
    period: Duration,
}

impl Pleg {
    pub fn new(manager: Arc<RuntimeManager>, cache: Arc<PodCache>, clock: Clock) -> Self {
        Self::with_runtime(manager, cache, clock)
    }

    pub(crate) fn with_runtime(runtime: Arc<dyn RelistRuntime>, cache: Arc<PodCache>, clock: Clock) -> Self {
        Self {
            runtime,
            cache,
            clock,
            state: tokio::sync::Mutex::new(RelistState::default()),
            last_relist: Mutex::new(None),
            wake: Notify::new(),
            events_up: std::sync::atomic::AtomicBool::new(false),
            period: RELIST_PERIOD,
        }
    }

    /// The relist period without an event stream (tests slow relisting down to show what does
    /// not depend on it).
    pub fn with_period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    /// The period to wait after this relist.
    fn current_period(&self) -> Duration {
        if self.events_up.load(std::sync::atomic::Ordering::Relaxed) {
            EVENTED_RELIST_PERIOD.max(self.period)
        } else {
            self.period
        }
    }

    /// Asks for a relist now (coalesced with one already asked for).
    pub fn relist_soon(&self) {
        self.wake.notify_one();
    }

    fn set_events_up(&self, up: bool) {
        let was = self.events_up.swap(up, std::sync::atomic::Ordering::Relaxed);
        if was && !up {
            // Events may have been missed: look now, then every second.
            self.wake.notify_one();
        }
    }

    pub fn cache(&self) -> &Arc<PodCache> {
        &self.cache
    }

    /// Relists every second (virtual) until `shutdown`, at once when a pod worker waits for a
    /// status newer than the cache's, and at once on each runtime event while the runtime's
    /// event stream is up (then the periodic relist slows to [`EVENTED_RELIST_PERIOD`]). The
    /// period runs from the end of a relist.
    pub async fn run(self: Arc<Self>, tx: mpsc::Sender<PlegEvent>, shutdown: CancellationToken) {
        let watcher = events::watch(self.clone(), shutdown.clone());
        let relister = async {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.relist(&tx) => {}
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.clock.sleep(self.current_period()) => {}
                    _ = self.wake.notified() => {}
                    _ = self.cache.wanted.notified() => {}
                }
            }
        };
        tokio::join!(watcher, relister);
    }

    /// When the last successful relist started.
    pub fn last_relist(&self) -> Option<Instant> {
        *self.last_relist.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why PLEG is unhealthy, if it is: no successful relist yet, or none for over 3 minutes.
    pub fn health_error(&self) -> Option<String> {
        let Some(last) = self.last_relist() else {
            return Some("pleg has yet to be successful".to_string());
        };
        let elapsed = self.clock.to_virtual(Instant::now().saturating_duration_since(last));
        (elapsed > RELIST_THRESHOLD).then(|| {
            format!(
                "pleg was last seen active {} ago; threshold is {}",
                go_duration(elapsed),
                go_duration(RELIST_THRESHOLD)
            )
        })
    }

    /// `Healthy()`: a relist succeeded within the last 3 minutes (virtual).
    pub fn healthy(&self) -> bool {
        self.health_error().is_none()
    }

    /// One relist (§2.1).
    pub async fn relist(&self, tx: &mpsc::Sender<PlegEvent>) {
        let mut state = self.state.lock().await;
        let timestamp = self.clock.instant();
        let pods = match self.runtime.get_pods().await {
            Ok(pods) => pods,
            Err(e) => {
                if !state.failing {
                    error!(error = %e, "PLEG: listing pods failed; skipping relist");
                    state.failing = true;
                }
                return;
            }
        };
        state.failing = false;
        *self.last_relist.lock().unwrap_or_else(|p| p.into_inner()) = Some(timestamp);

        // setCurrent: every known pod's current listing is replaced (absent = gone).
        let mut listed: HashMap<String, RunningPod> = pods.into_iter().map(|p| (p.uid.clone(), p)).collect();
        for rec in state.records.values_mut() {
            rec.current = None;
        }
        for (uid, pod) in listed.drain() {
            state.records.entry(uid).or_default().current = Some(pod);
        }

        let mut with_events: Vec<(String, Vec<PlegEvent>)> = Vec::new();
        let mut uids: Vec<&String> = state.records.keys().collect();
        uids.sort();
        for uid in uids {
            let rec = &state.records[uid];
            let events = compute_pod_events(uid, rec.old.as_ref(), rec.current.as_ref());
            if !events.is_empty() {
                with_events.push((uid.clone(), events));
            }
        }

        let mut needs_reinspection = HashMap::new();
        for (uid, events) in with_events {
            let current = state.records.get(&uid).and_then(|r| r.current.clone());
            if let Err(e) = self.update_cache(&uid, current.as_ref(), timestamp).await {
                // Warn when a pod starts failing; repeats (every second) only at debug level.
                if state.reinspect.contains_key(&uid) {
                    debug!(pod_uid = %uid, error = %e, "PLEG: inspecting pod failed again");
                } else {
                    warn!(pod_uid = %uid, error = %e, "PLEG: inspecting pod failed; holding its events until it succeeds");
                }
                needs_reinspection.insert(uid, current);
                continue;
            }
            state.reinspect.remove(&uid);
            // update(): old := current; a pod gone from the runtime is forgotten.
            if let Some(rec) = state.records.get_mut(&uid) {
                rec.old = rec.current.take();
                if rec.old.is_none() {
                    state.records.remove(&uid);
                }
            }
            for ev in events {
                if ev.kind == PlegEventKind::ContainerChanged {
                    continue;
                }
                if let Err(mpsc::error::TrySendError::Full(ev)) = tx.try_send(ev) {
                    warn!(pod_uid = %ev.pod_uid, event = ?ev.kind, "PLEG event channel is full; event discarded");
                }
            }
        }

        // Pods whose inspection failed earlier (and had no new events) are inspected again.
        let retry: Vec<(String, Option<RunningPod>)> = state.reinspect.drain().collect();
        for (uid, pod) in retry {
            if needs_reinspection.contains_key(&uid) {
                continue;
            }
            let current = state.records.get(&uid).and_then(|r| r.current.clone()).or(pod);
            if let Err(e) = self.update_cache(&uid, current.as_ref(), timestamp).await {
                debug!(pod_uid = %uid, error = %e, "PLEG: re-inspecting pod failed");
                needs_reinspection.insert(uid, current);
            }
        }
        state.reinspect = needs_reinspection;
        // Pods absent from both listings and without pending work need no record.
        state.records.retain(|_, r| r.old.is_some() || r.current.is_some());
        self.cache.update_time(timestamp);
    }

    /// Refreshes one pod's cache entry; a pod gone from the runtime (in the listing taken at
    /// `listed_at`) is deleted from the cache. On failure the error is cached (workers see it)
    /// next to the last good status.
    async fn update_cache(&self, uid: &str, pod: Option<&RunningPod>, listed_at: Instant) -> Result<()> {
        let Some(pod) = pod else {
            self.cache.delete_observed(uid, listed_at);
            return Ok(());
        };
        refresh_with(
            self.runtime.as_ref(),
            &self.cache,
            &self.clock,
            uid,
            &pod.name,
            &pod.namespace,
        )
        .await
        .map(|_| ())
    }
}

/// Keeps the previous IPs of a pod whose sandboxes all stopped (`getPodIPs`): the status of an
/// exited pod still shows the IPs it had.
fn pod_ips(status: &PodStatus, previous: &PodStatus) -> Vec<String> {
    if !status.ips.is_empty() || previous.ips.is_empty() {
        return status.ips.clone();
    }
    let any_ready = status
        .sandbox_statuses
        .iter()
        .any(|s| s.state == cri::PodSandboxState::SandboxReady as i32);
    if any_ready {
        status.ips.clone()
    } else {
        previous.ips.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genericruntime::types::RuntimeObject;
    use crate::genericruntime::Error;

    fn obj(id: &str, state: ContainerState) -> RuntimeObject {
        RuntimeObject {
            id: id.into(),
            name: format!("name-{id}"),
            state,
            created_at: 0,
        }
    }

    fn pod(uid: &str, containers: Vec<RuntimeObject>) -> RunningPod {
        RunningPod {
            uid: uid.into(),
            name: format!("pod-{uid}"),
            namespace: "default".into(),
            containers,
            sandboxes: vec![],
        }
    }

    fn ev(uid: &str, kind: PlegEventKind, id: &str) -> PlegEvent {
        PlegEvent {
            pod_uid: uid.into(),
            kind,
            data: id.into(),
        }
    }

    fn sorted(mut v: Vec<PlegEvent>) -> Vec<PlegEvent> {
        v.sort();
        v
    }

    fn sent_only(v: Vec<PlegEvent>) -> Vec<PlegEvent> {
        sorted(
            v.into_iter()
                .filter(|e| e.kind != PlegEventKind::ContainerChanged)
                .collect(),
        )
    }

    use ContainerState::{Created, Exited, Running, Unknown};
    use PlegEventKind::{ContainerChanged, ContainerDied, ContainerRemoved, ContainerStarted};

    /// generic_test.go TestRelisting, as a pure computation.
    #[test]
    fn relisting() {
        let first = vec![
            pod("1234", vec![obj("c1", Exited), obj("c2", Running), obj("c3", Unknown)]),
            pod("4567", vec![obj("c1", Exited)]),
        ];
        // Report every running/exited container when seen for the first time.
        assert_eq!(
            sent_only(compute_events(&[], &first)),
            sorted(vec![
                ev("1234", ContainerStarted, "c2"),
                ev("4567", ContainerDied, "c1"),
                ev("1234", ContainerDied, "c1"),
            ])
        );
        // Unknown is a change, computed but not sent.
        assert!(compute_events(&[], &first).contains(&ev("1234", ContainerChanged, "c3")));
        // No change, no event.
        assert!(compute_events(&first, &first).is_empty());

        let second = vec![
            pod("1234", vec![obj("c2", Exited), obj("c3", Running)]),
            pod("4567", vec![obj("c4", Running)]),
        ];
        assert_eq!(
            sent_only(compute_events(&first, &second)),
            sorted(vec![
                ev("1234", ContainerRemoved, "c1"),
                ev("1234", ContainerDied, "c2"),
                ev("1234", ContainerStarted, "c3"),
                ev("4567", ContainerRemoved, "c1"),
                ev("4567", ContainerStarted, "c4"),
            ])
        );
    }

    /// generic_test.go TestDetectingContainerDeaths: a running container that vanishes died.
    #[test]
    fn detecting_container_deaths() {
        let first = vec![pod("1234", vec![obj("c1", Running), obj("c2", Running)])];
        let second = vec![pod("1234", vec![obj("c1", Exited)])];
        assert_eq!(
            sorted(compute_events(&first, &second)),
            sorted(vec![
                ev("1234", ContainerDied, "c1"),
                ev("1234", ContainerDied, "c2"),
                ev("1234", ContainerRemoved, "c2"),
            ])
        );
        // The whole pod vanishing: died + removed for the running one, removed for the exited one.
        let third = vec![pod("1234", vec![obj("c1", Exited), obj("c2", Running)])];
        assert_eq!(
            sorted(compute_events(&third, &[])),
            sorted(vec![
                ev("1234", ContainerRemoved, "c1"),
                ev("1234", ContainerDied, "c2"),
                ev("1234", ContainerRemoved, "c2"),
            ])
        );
    }

    #[test]
    fn created_is_unknown_and_sandboxes_count() {
        let mut p = pod("u", vec![obj("c1", Created)]);
        p.sandboxes = vec![obj("s1", Running)];
        let events = sorted(compute_events(&[], std::slice::from_ref(&p)));
        assert_eq!(
            events,
            sorted(vec![ev("u", ContainerChanged, "c1"), ev("u", ContainerStarted, "s1")])
        );
        let mut q = p.clone();
        q.sandboxes = vec![obj("s1", Exited)];
        q.containers = vec![obj("c1", Unknown)];
        // Created -> Unknown is the same PLEG state: no event for c1.
        assert_eq!(compute_events(&[p], &[q]), vec![ev("u", ContainerDied, "s1")]);
    }

    // ---- the relist loop against a scripted runtime ----

    struct FakeRuntime {
        pods: Mutex<Result<Vec<RunningPod>, String>>,
        /// Pod UIDs whose status inspection fails.
        failing_status: Mutex<BTreeSet<String>>,
        ips: Mutex<HashMap<String, Vec<String>>>,
    }

    impl Default for FakeRuntime {
        fn default() -> Self {
            Self {
                pods: Mutex::new(Ok(Vec::new())),
                failing_status: Mutex::default(),
                ips: Mutex::default(),
            }
        }
    }

    impl FakeRuntime {
        fn set_pods(&self, pods: Vec<RunningPod>) {
            *self.pods.lock().unwrap() = Ok(pods);
        }
    }

    #[async_trait::async_trait]
    impl RelistRuntime for FakeRuntime {
        async fn get_pods(&self) -> Result<Vec<RunningPod>> {
            self.pods.lock().unwrap().clone().map_err(|message| Error::Pod {
                uid: String::new(),
                message,
            })
        }

        async fn get_pod_status(&self, uid: &str, name: &str, namespace: &str) -> Result<PodStatus> {
            if self.failing_status.lock().unwrap().contains(uid) {
                return Err(Error::Pod {
                    uid: uid.into(),
                    message: "inspect failed".into(),
                });
            }
            let pods = self.pods.lock().unwrap().clone().unwrap_or_default();
            let p = pods.iter().find(|p| p.uid == uid);
            Ok(PodStatus {
                uid: uid.into(),
                name: name.into(),
                namespace: namespace.into(),
                ips: self.ips.lock().unwrap().get(uid).cloned().unwrap_or_default(),
                container_statuses: p
                    .map(|p| {
                        p.containers
                            .iter()
                            .map(|c| crate::genericruntime::ContainerStatus {
                                id: c.id.clone(),
                                runtime_type: "sim".into(),
                                name: c.name.clone(),
                                state: c.state,
                                created_at: jiff::Timestamp::UNIX_EPOCH,
                                started_at: None,
                                finished_at: None,
                                exit_code: 0,
                                image: String::new(),
                                image_ref: String::new(),
                                hash: 0,
                                restart_count: 0,
                                reason: String::new(),
                                message: String::new(),
                                sandbox_id: String::new(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                sandbox_statuses: vec![],
            })
        }
    }

    fn drain(rx: &mut mpsc::Receiver<PlegEvent>) -> Vec<PlegEvent> {
        let mut v = Vec::new();
        while let Ok(e) = rx.try_recv() {
            v.push(e);
        }
        sorted(v)
    }

    fn setup() -> (
        Arc<FakeRuntime>,
        Pleg,
        mpsc::Sender<PlegEvent>,
        mpsc::Receiver<PlegEvent>,
    ) {
        let rt = Arc::new(FakeRuntime::default());
        let pleg = Pleg::with_runtime(rt.clone(), Arc::new(PodCache::new()), Clock::real());
        let (tx, rx) = mpsc::channel(PLEG_CHANNEL_CAPACITY);
        (rt, pleg, tx, rx)
    }

    #[tokio::test(start_paused = true)]
    async fn relist_sends_events_and_fills_cache() {
        let (rt, pleg, tx, mut rx) = setup();
        assert!(!pleg.healthy(), "unhealthy before the first relist");
        rt.set_pods(vec![pod(
            "1234",
            vec![obj("c1", Exited), obj("c2", Running), obj("c3", Unknown)],
        )]);
        pleg.relist(&tx).await;
        assert_eq!(
            drain(&mut rx),
            sorted(vec![
                ev("1234", ContainerDied, "c1"),
                ev("1234", ContainerStarted, "c2")
            ])
        );
        let cached = pleg.cache().get("1234");
        assert_eq!(cached.status.container_statuses.len(), 3);
        assert!(cached.error.is_none());
        assert!(pleg.healthy());
        pleg.relist(&tx).await;
        assert!(drain(&mut rx).is_empty());
    }

    /// generic_test.go TestRelistWithCache: a failed inspection holds the events back.
    #[tokio::test(start_paused = true)]
    async fn failed_inspection_retries_and_holds_events() {
        let (rt, pleg, tx, mut rx) = setup();
        rt.set_pods(vec![pod("p", vec![obj("c1", Running)])]);
        rt.failing_status.lock().unwrap().insert("p".into());
        pleg.relist(&tx).await;
        assert!(drain(&mut rx).is_empty(), "no events while inspection fails");
        assert_eq!(pleg.cache().get("p").error.as_deref(), Some("pod p: inspect failed"));

        rt.failing_status.lock().unwrap().clear();
        pleg.relist(&tx).await;
        assert_eq!(drain(&mut rx), vec![ev("p", ContainerStarted, "c1")]);
        assert!(pleg.cache().get("p").error.is_none());
        assert_eq!(pleg.cache().get("p").status.container_statuses.len(), 1);
    }

    /// A pod whose inspection failed once is re-inspected next round even without new events.
    #[tokio::test(start_paused = true)]
    async fn reinspection_without_new_events() {
        let (rt, pleg, tx, mut rx) = setup();
        rt.set_pods(vec![pod("p", vec![obj("c1", Running)])]);
        pleg.relist(&tx).await;
        assert_eq!(drain(&mut rx).len(), 1);
        // c1 exits, inspection fails: no event, error cached.
        rt.set_pods(vec![pod("p", vec![obj("c1", Exited)])]);
        rt.failing_status.lock().unwrap().insert("p".into());
        pleg.relist(&tx).await;
        assert!(drain(&mut rx).is_empty());
        assert!(pleg.cache().get("p").error.is_some());
        // Inspection works again: the held-back event is sent and the cache refreshed.
        rt.failing_status.lock().unwrap().clear();
        pleg.relist(&tx).await;
        assert_eq!(drain(&mut rx), vec![ev("p", ContainerDied, "c1")]);
        assert!(pleg.cache().get("p").error.is_none());
    }

    /// generic_test.go TestRemoveCacheEntry: a pod gone from the runtime leaves the cache.
    #[tokio::test(start_paused = true)]
    async fn vanished_pod_is_deleted_from_cache() {
        let (rt, pleg, tx, mut rx) = setup();
        rt.set_pods(vec![pod("p", vec![obj("c1", Exited)])]);
        pleg.relist(&tx).await;
        assert!(pleg.cache().modified("p").is_some());
        rt.set_pods(vec![]);
        pleg.relist(&tx).await;
        assert_eq!(
            drain(&mut rx),
            sorted(vec![ev("p", ContainerDied, "c1"), ev("p", ContainerRemoved, "c1")])
        );
        assert!(pleg.cache().modified("p").is_none());
        // Unknown pods read as an empty status with their UID.
        assert_eq!(pleg.cache().get("p").status.uid, "p");
    }

    /// generic_test.go TestEventChannelFull: events beyond capacity are dropped, not blocked on.
    #[tokio::test(start_paused = true)]
    async fn full_channel_drops_events() {
        let rt = Arc::new(FakeRuntime::default());
        let pleg = Pleg::with_runtime(rt.clone(), Arc::new(PodCache::new()), Clock::real());
        let (tx, mut rx) = mpsc::channel(2);
        rt.set_pods(vec![pod(
            "p",
            vec![obj("c1", Running), obj("c2", Running), obj("c3", Running)],
        )]);
        pleg.relist(&tx).await;
        assert_eq!(drain(&mut rx).len(), 2);
    }

    /// generic_test.go TestHealthy, in virtual time.
    #[tokio::test(start_paused = true)]
    async fn health_follows_last_relist() {
        let rt = Arc::new(FakeRuntime::default());
        let pleg = Pleg::with_runtime(rt.clone(), Arc::new(PodCache::new()), Clock::scaled(10.0));
        let (tx, _rx) = mpsc::channel(PLEG_CHANNEL_CAPACITY);
        assert_eq!(pleg.health_error().as_deref(), Some("pleg has yet to be successful"));
        rt.set_pods(vec![]);
        pleg.relist(&tx).await;
        assert!(pleg.healthy());
        assert!(pleg.last_relist().is_some());
        // 17 s real = 170 s virtual: still healthy; 19 s real = 190 s virtual: not.
        tokio::time::advance(Duration::from_secs(17)).await;
        assert!(pleg.healthy());
        *rt.pods.lock().unwrap() = Err("runtime down".into());
        pleg.relist(&tx).await;
        tokio::time::advance(Duration::from_secs(2)).await;
        let err = pleg.health_error().unwrap();
        assert_eq!(err, "pleg was last seen active 3m10s ago; threshold is 3m0s");
        rt.set_pods(vec![]);
        pleg.relist(&tx).await;
        assert!(pleg.healthy());
    }

    /// generic_test.go TestRelistIPChange: an exited pod keeps the IPs it had.
    #[tokio::test(start_paused = true)]
    async fn exited_pod_keeps_ips() {
        let (rt, pleg, tx, _rx) = setup();
        rt.ips.lock().unwrap().insert("p".into(), vec!["10.0.0.2".into()]);
        rt.set_pods(vec![pod("p", vec![obj("c1", Running)])]);
        pleg.relist(&tx).await;
        assert_eq!(pleg.cache().get("p").status.ips, ["10.0.0.2"]);
        rt.ips.lock().unwrap().clear();
        rt.set_pods(vec![pod("p", vec![obj("c1", Exited)])]);
        pleg.relist(&tx).await;
        assert_eq!(pleg.cache().get("p").status.ips, ["10.0.0.2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn run_relists_every_virtual_second() {
        let rt = Arc::new(FakeRuntime::default());
        let pleg = Arc::new(Pleg::with_runtime(
            rt.clone(),
            Arc::new(PodCache::new()),
            Clock::scaled(4.0),
        ));
        let (tx, mut rx) = mpsc::channel(PLEG_CHANNEL_CAPACITY);
        rt.set_pods(vec![]);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(pleg.clone().run(tx, shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(pleg.healthy());
        rt.set_pods(vec![pod("p", vec![obj("c1", Running)])]);
        // 1 virtual second = 250 ms real.
        let got = tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .unwrap();
        assert_eq!(got, Some(ev("p", ContainerStarted, "c1")));
        shutdown.cancel();
        task.await.unwrap();
    }

    // ---- a real relist: the runtime manager over the simulated backend ----

    struct NoOptions;

    #[async_trait::async_trait]
    impl crate::genericruntime::RunOptionsProvider for NoOptions {
        async fn run_container_options(
            &self,
            _: &k8s_openapi::api::core::v1::Pod,
            _: &k8s_openapi::api::core::v1::Container,
            _: &[String],
        ) -> Result<crate::genericruntime::RunContainerOptions, crate::genericruntime::ConfigError> {
            Ok(Default::default())
        }
    }

    /// Waits (real time) until a relist yields events, returning them.
    async fn relist_until_events(
        pleg: &Pleg,
        tx: &mpsc::Sender<PlegEvent>,
        rx: &mut mpsc::Receiver<PlegEvent>,
    ) -> Vec<PlegEvent> {
        for _ in 0..1000 {
            pleg.relist(tx).await;
            let got = drain(rx);
            if !got.is_empty() {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no PLEG events within 10 s");
    }

    #[tokio::test]
    async fn relist_against_sim_backend() {
        use crate::backends::sim::{SimConfig, SimRuntime};
        use crate::genericruntime::{ManagerConfig, NoEvents, ProbeFailures, Runtime};

        let dir = tempfile::tempdir().unwrap();
        // 1 virtual second = 10 ms real.
        let clock = Clock::scaled(100.0);
        let sim = SimRuntime::new(SimConfig::default(), clock, dir.path().join("sim")).unwrap();
        let runtime: Arc<dyn Runtime> = sim;
        let manager = Arc::new(RuntimeManager::new(
            runtime,
            ManagerConfig {
                runtime_type: "sim".into(),
                pod_logs_dir: dir.path().join("logs"),
                root_dir: dir.path().join("root"),
                cgroup_root: "/kubepods".into(),
                serialize_image_pulls: true,
                node_name: "node-1".into(),
                clock,
            },
            Arc::new(NoEvents),
            Arc::new(NoOptions),
        ));
        let cache = Arc::new(PodCache::new());
        let pleg = Pleg::new(manager.clone(), cache.clone(), clock);
        let (tx, mut rx) = mpsc::channel(PLEG_CHANNEL_CAPACITY);

        pleg.relist(&tx).await;
        assert!(drain(&mut rx).is_empty());
        assert!(pleg.healthy());

        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pleg", "namespace": "default", "uid": "uid-pleg"},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 30, "containers": [
                {"name": "c", "image": "busybox:1.36", "command": ["sh", "-c", "sleep 30; exit 3"]}
            ]}
        }))
        .unwrap();
        let before = manager.get_pod_status("uid-pleg", "pleg", "default").await.unwrap();
        let result = manager.sync_pod(&pod, &before, &[], &ProbeFailures::default()).await;
        assert!(result.first_error().is_none(), "{result:?}");

        // Sandbox and container started: two ContainerStarted events, and the cache filled.
        let t0 = Instant::now();
        pleg.relist(&tx).await;
        let started = drain(&mut rx);
        assert_eq!(started.len(), 2, "{started:?}");
        assert!(started
            .iter()
            .all(|e| e.pod_uid == "uid-pleg" && e.kind == ContainerStarted));
        let cached = cache.get_newer_than("uid-pleg", t0 - Duration::from_millis(1)).await;
        let c = cached.status.find_container_status("c").unwrap().clone();
        assert_eq!(c.state, ContainerState::Running);
        assert!(started.iter().any(|e| e.data == c.id));
        assert!(!cached.status.ips.is_empty(), "sandbox IP in the cached status");
        let sandbox_id = started.iter().find(|e| e.data != c.id).unwrap().data.clone();

        // The script exits with 3 after 30 virtual seconds (0.3 s real): ContainerDied, exit code in the cache.
        let died = relist_until_events(&pleg, &tx, &mut rx).await;
        assert_eq!(died, vec![ev("uid-pleg", ContainerDied, &c.id)]);
        let cached = cache.get("uid-pleg");
        let exited = cached.status.find_container_status("c").unwrap();
        assert_eq!((exited.state, exited.exit_code), (ContainerState::Exited, 3));

        // Killing the pod stops the sandbox: ContainerDied for it; the IPs stay in the cache.
        let status = cached.status.as_ref().clone();
        let killed = manager.kill_pod(Some(&pod), &status, None).await;
        assert!(killed.first_error().is_none(), "{killed:?}");
        pleg.relist(&tx).await;
        assert_eq!(drain(&mut rx), vec![ev("uid-pleg", ContainerDied, &sandbox_id)]);
        assert!(
            !cache.get("uid-pleg").status.ips.is_empty(),
            "exited pods keep their IPs"
        );
    }

    // ---- cache ----

    #[tokio::test(start_paused = true)]
    async fn get_newer_than_waits_for_entry_or_global_time() {
        let cache = Arc::new(PodCache::new());
        let t0 = Instant::now();
        tokio::time::advance(Duration::from_millis(5)).await;
        let t1 = Instant::now();
        cache.set(
            "a",
            Arc::new(PodStatus {
                uid: "a".into(),
                name: "first".into(),
                ..Default::default()
            }),
            None,
            t1,
        );
        // Already newer: returns at once.
        assert_eq!(cache.get_newer_than("a", t0).await.status.name, "first");

        // Not newer yet: waits until a set after t1.
        let c = cache.clone();
        let waiter = tokio::spawn(async move { c.get_newer_than("a", t1).await });
        tokio::time::advance(Duration::from_millis(5)).await;
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        cache.set(
            "a",
            Arc::new(PodStatus {
                uid: "a".into(),
                name: "second".into(),
                ..Default::default()
            }),
            Some("boom".into()),
            Instant::now(),
        );
        let got = waiter.await.unwrap();
        assert_eq!(got.status.name, "second");
        assert_eq!(got.error.as_deref(), Some("boom"));

        // Unknown pod: waits for the global timestamp, then gets an empty status.
        let c = cache.clone();
        let t2 = Instant::now();
        let waiter = tokio::spawn(async move { c.get_newer_than("unknown", t2).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        cache.update_time(t2); // not after t2: still waiting
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        tokio::time::advance(Duration::from_millis(1)).await;
        cache.update_time(Instant::now());
        let got = waiter.await.unwrap();
        assert_eq!(got.status.uid, "unknown");
        assert!(got.status.container_statuses.is_empty());

        // Known pod, old entry: a newer global timestamp releases it with the cached value.
        let c = cache.clone();
        let t3 = Instant::now();
        let waiter = tokio::spawn(async move { c.get_newer_than("a", t3).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        tokio::time::advance(Duration::from_millis(1)).await;
        cache.update_time(Instant::now());
        assert_eq!(waiter.await.unwrap().status.name, "second");

        cache.delete("a");
        assert!(cache.modified("a").is_none());
    }
}
