//! Pod workers (`pod_workers.go`): one task per pod UID that drives the pod through
//! syncing → terminating → terminated → finished, running at most one sync at a time and
//! coalescing updates that arrive meanwhile (only the latest is kept).
//!
//! The worker owns *when* to sync; *what* a sync does is the `PodSyncer`'s business (the
//! kubelet), which keeps this state machine testable on its own.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::clock::Clock;
use crate::genericruntime::RunningPod;

/// Why a pod is being updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateType {
    /// First sighting from a source.
    Create,
    /// The pod object changed (spec, labels, annotations, deletion).
    Update,
    /// Periodic or event-driven resync.
    Sync,
    /// Stop the pod (removed from config, evicted, runtime-only orphan).
    Kill,
}

/// One request to the workers.
#[derive(Clone, Debug)]
pub struct UpdatePodOptions {
    pub update_type: UpdateType,
    /// The pod; None for runtime-only (orphaned) pods, which come with `running_pod`.
    pub pod: Option<Pod>,
    pub mirror_pod: Option<Pod>,
    pub running_pod: Option<RunningPod>,
    /// Grace period override for kills (seconds).
    pub kill_grace: Option<i64>,
}

/// What a successful `sync_pod` asks of the worker next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Resync at the normal interval.
    Done,
    /// The pod reached a terminal phase: terminate it now.
    Terminal,
    /// Sync again soon (a back-off window is open); the duration is virtual.
    RetryAfter(Duration),
}

/// A sync step that failed; the worker retries it after the error back-off.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SyncError(pub String);

/// The kubelet's three sync functions, as the workers call them.
#[async_trait]
pub trait PodSyncer: Send + Sync + 'static {
    /// `syncPod`: bring a running pod to its desired state. `since` is the time of the previous
    /// sync of this pod (the syncer waits for a runtime status newer than that).
    async fn sync_pod(
        &self,
        update_type: UpdateType,
        pod: &Pod,
        mirror: Option<&Pod>,
        since: Option<Instant>,
        cancel: &CancellationToken,
    ) -> Result<SyncOutcome, SyncError>;
    /// `syncTerminatingPod`: stop every container within `grace` seconds.
    async fn sync_terminating_pod(&self, pod: &Pod, grace: i64, since: Option<Instant>) -> Result<(), SyncError>;
    /// Kill a pod that only the runtime knows about.
    async fn sync_terminating_runtime_pod(&self, running: &RunningPod, grace: i64) -> Result<(), SyncError>;
    /// `syncTerminatedPod`: final status, clean-up after every container stopped.
    async fn sync_terminated_pod(&self, pod: &Pod) -> Result<(), SyncError>;
}

/// The worker-visible lifecycle of a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodWorkerState {
    Syncing,
    Terminating,
    Terminated,
    Finished,
}

/// Retry period after a failed sync (`backOffPeriod`), jittered ×[1, 1.5).
const ERROR_BACKOFF: Duration = Duration::from_secs(10);

struct Record {
    state: PodWorkerState,
    /// Latest pod object (None for runtime-only pods).
    pod: Option<Pod>,
    mirror: Option<Pod>,
    running_pod: Option<RunningPod>,
    /// Latest undelivered update.
    pending: Option<UpdateType>,
    /// The grace period the termination uses (only decreases).
    grace: Option<i64>,
    deleted: bool,
    runtime_only: bool,
    restart_requested: bool,
    /// Cancels the sync in flight (a termination request pre-empts a running sync).
    cancel: CancellationToken,
    notify: Arc<Notify>,
    started: bool,
}

impl Record {
    fn new(pod: Option<Pod>, runtime_only: bool) -> Self {
        Self {
            state: PodWorkerState::Syncing,
            pod,
            mirror: None,
            running_pod: None,
            pending: None,
            grace: None,
            deleted: false,
            runtime_only,
            restart_requested: false,
            cancel: CancellationToken::new(),
            notify: Arc::new(Notify::new()),
            started: false,
        }
    }
}

/// All pod workers.
pub struct PodWorkers {
    inner: Arc<Inner>,
}

struct Inner {
    records: Mutex<HashMap<String, Record>>,
    /// `podsSynced`: the first `SyncKnownPods` ran, so the workers know every desired pod and an
    /// unknown UID is really gone (before it, a pod may just not have arrived yet).
    pods_synced: AtomicBool,
    syncer: Arc<dyn PodSyncer>,
    clock: Clock,
    resync: Duration,
    shutdown: CancellationToken,
}

impl Inner {
    fn records(&self) -> MutexGuard<'_, HashMap<String, Record>> {
        // A poisoned lock means a worker panicked mid-update; the map itself stays consistent.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn pod_uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn is_terminal_phase(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// `calculateEffectiveGracePeriod`: the smallest of what is stored, the deletion grace and the
/// override; else the spec's; at least 1 s. [quirk kept] a deletion grace of 0 counts as unset.
fn effective_grace(stored: Option<i64>, pod: Option<&Pod>, override_grace: Option<i64>) -> i64 {
    let mut grace = stored.unwrap_or(0);
    if let Some(d) = pod.and_then(|p| p.metadata.deletion_grace_period_seconds) {
        if grace == 0 || d < grace {
            grace = d;
        }
    }
    if let Some(o) = override_grace {
        if grace == 0 || o < grace {
            grace = o;
        }
    }
    if grace == 0 {
        grace = pod
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
    }
    grace.max(1)
}

impl PodWorkers {
    pub fn new(syncer: Arc<dyn PodSyncer>, clock: Clock, resync: Duration, shutdown: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                records: Mutex::new(HashMap::new()),
                pods_synced: AtomicBool::new(false),
                syncer,
                clock,
                resync,
                shutdown,
            }),
        }
    }

    /// `UpdatePod`: record the update and wake (or start) the pod's worker.
    /// `first_sight_finished` tells, for an unknown pod, that it is terminal and nothing of it runs
    /// (the kubelet-restart case): the record is then created finished and nothing is run.
    pub fn update_pod(&self, opts: UpdatePodOptions, first_sight_finished: bool) {
        let uid = match (&opts.pod, &opts.running_pod) {
            (Some(p), _) => pod_uid(p),
            (None, Some(r)) => r.uid.clone(),
            (None, None) => return,
        };
        if uid.is_empty() {
            return;
        }
        let mut records = self.inner.records();
        let is_new = !records.contains_key(&uid);
        let rec = records
            .entry(uid.clone())
            .or_insert_with(|| Record::new(opts.pod.clone(), opts.pod.is_none()));
        if is_new && first_sight_finished {
            rec.state = PodWorkerState::Finished;
            return;
        }
        if rec.state == PodWorkerState::Finished {
            if opts.update_type == UpdateType::Create {
                rec.restart_requested = true;
            }
            return;
        }
        if rec.state != PodWorkerState::Syncing && opts.update_type == UpdateType::Create {
            // A pod with this UID is already going away; it may start again once finished.
            rec.restart_requested = true;
            return;
        }
        if let Some(p) = &opts.pod {
            rec.pod = Some(p.clone());
        }
        if opts.mirror_pod.is_some() {
            rec.mirror = opts.mirror_pod.clone();
        }
        if opts.running_pod.is_some() {
            rec.running_pod = opts.running_pod.clone();
        }
        let deleting = rec
            .pod
            .as_ref()
            .is_some_and(|p| p.metadata.deletion_timestamp.is_some());
        let become_terminating = rec.runtime_only
            || deleting
            || rec.pod.as_ref().is_some_and(is_terminal_phase)
            || opts.update_type == UpdateType::Kill;
        if become_terminating {
            if deleting || rec.runtime_only {
                rec.deleted = true;
            }
            let grace = effective_grace(rec.grace, rec.pod.as_ref(), opts.kill_grace);
            let shortened = rec.grace.is_some_and(|g| grace < g);
            if rec.state == PodWorkerState::Syncing {
                rec.state = PodWorkerState::Terminating;
                rec.cancel.cancel();
            } else if shortened && rec.state == PodWorkerState::Terminating {
                // A shorter grace restarts the kill with the new deadline.
                rec.cancel.cancel();
            }
            rec.grace = Some(grace);
        }
        rec.pending = Some(opts.update_type);
        let notify = rec.notify.clone();
        let start = !rec.started;
        rec.started = true;
        drop(records);
        if start {
            let inner = self.inner.clone();
            tokio::spawn(async move { run_worker(inner, uid).await });
        }
        notify.notify_one();
    }

    /// The worker state of a pod, if it has a worker.
    pub fn state(&self, uid: &str) -> Option<PodWorkerState> {
        self.inner.records().get(uid).map(|r| r.state)
    }

    /// `IsPodTerminationRequested`.
    pub fn is_pod_termination_requested(&self, uid: &str) -> bool {
        self.state(uid).is_some_and(|s| s != PodWorkerState::Syncing)
    }

    /// `CouldHaveRunningContainers`: unknown pods may (until proven otherwise by the runtime).
    pub fn could_have_running_containers(&self, uid: &str) -> bool {
        match self.state(uid) {
            Some(PodWorkerState::Syncing) | Some(PodWorkerState::Terminating) => true,
            Some(PodWorkerState::Terminated) | Some(PodWorkerState::Finished) => false,
            None => true,
        }
    }

    /// `IsPodKnownTerminated`.
    pub fn is_pod_known_terminated(&self, uid: &str) -> bool {
        matches!(
            self.state(uid),
            Some(PodWorkerState::Terminated) | Some(PodWorkerState::Finished)
        )
    }

    /// `ShouldPodContentBeRemoved`: deleted and terminated, or unknown once the workers are
    /// synced. Right after a restart the pods have not arrived yet: the dead containers (and
    /// their logs) of a pod that exited while keel was down must stay.
    pub fn should_pod_content_be_removed(&self, uid: &str) -> bool {
        let records = self.inner.records();
        match records.get(uid) {
            Some(r) => r.deleted && matches!(r.state, PodWorkerState::Terminated | PodWorkerState::Finished),
            None => self.inner.pods_synced.load(Ordering::Acquire),
        }
    }

    /// `SyncKnownPods`: forget finished workers whose pod is no longer desired (or that asked to
    /// restart).
    pub fn sync_known_pods(&self, desired: &HashSet<String>) -> KnownPods {
        let mut known = KnownPods::default();
        let mut records = self.inner.records();
        self.inner.pods_synced.store(true, Ordering::Release);
        records.retain(|uid, r| {
            if r.state != PodWorkerState::Finished {
                return true;
            }
            let keep = desired.contains(uid);
            if r.restart_requested {
                if keep {
                    known.restart.push(uid.clone());
                } else {
                    known.forgotten.push(uid.clone());
                }
                return false;
            }
            if !keep {
                known.forgotten.push(uid.clone());
            }
            keep
        });
        known
    }

    /// Full names (`<name>_<namespace>`) of pods whose containers are still being stopped: their
    /// mirror pods stay until they are done (§3.5).
    pub fn terminating_full_names(&self) -> HashSet<String> {
        self.inner
            .records()
            .values()
            .filter(|r| r.state == PodWorkerState::Terminating)
            .filter_map(|r| r.pod.as_ref().map(crate::kubelet::mirror::pod_full_name))
            .collect()
    }

    /// UIDs of every pod with a worker record.
    pub fn known_uids(&self) -> Vec<String> {
        self.inner.records().keys().cloned().collect()
    }

    /// How many workers are in each state (for metrics and logs).
    pub fn counts(&self) -> HashMap<PodWorkerState, usize> {
        let mut m = HashMap::new();
        for r in self.inner.records().values() {
            *m.entry(r.state).or_insert(0) += 1;
        }
        m
    }
}

/// What [`PodWorkers::sync_known_pods`] did.
#[derive(Debug, Default, PartialEq)]
pub struct KnownPods {
    /// Finished pods whose UID is desired again: start them anew.
    pub restart: Vec<String>,
    /// Finished pods no source wants: gone from the node for good.
    pub forgotten: Vec<String>,
}

impl std::hash::Hash for PodWorkerState {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (*self as u8).hash(state)
    }
}

/// What the worker loop takes out of the record for one round.
struct Work {
    state: PodWorkerState,
    update_type: UpdateType,
    pod: Option<Pod>,
    mirror: Option<Pod>,
    running: Option<RunningPod>,
    grace: i64,
    cancel: CancellationToken,
}

fn jitter(d: Duration) -> Duration {
    d.mul_f64(1.0 + rand::random::<f64>() * 0.5)
}

async fn run_worker(inner: Arc<Inner>, uid: String) {
    let mut last_sync: Option<Instant> = None;
    let mut next_resync: Option<Instant> = None;
    loop {
        let notify = match inner.records().get(&uid) {
            Some(r) => r.notify.clone(),
            None => return,
        };
        // Wait for an update, the resync deadline, or shutdown.
        let has_pending = inner.records().get(&uid).is_some_and(|r| r.pending.is_some());
        if !has_pending {
            let resync = async {
                match next_resync {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = notify.notified() => {}
                _ = resync => {}
                _ = inner.shutdown.cancelled() => return,
            }
            // A wake-up left over from an update already handled: nothing to do yet.
            let due = next_resync.is_some_and(|t| Instant::now() >= t);
            let has_pending = inner.records().get(&uid).is_some_and(|r| r.pending.is_some());
            if !due && !has_pending {
                continue;
            }
        }
        let work = {
            let mut records = inner.records();
            let Some(r) = records.get_mut(&uid) else { return };
            if r.state == PodWorkerState::Finished {
                return;
            }
            let update_type = r.pending.take().unwrap_or(UpdateType::Sync);
            if r.cancel.is_cancelled() {
                r.cancel = CancellationToken::new();
            }
            Work {
                state: r.state,
                update_type,
                pod: r.pod.clone(),
                mirror: r.mirror.clone(),
                running: r.running_pod.clone(),
                grace: r.grace.unwrap_or(1),
                cancel: r.cancel.clone(),
            }
        };
        let outcome: Result<Next, SyncError> = match work.state {
            PodWorkerState::Syncing => {
                let Some(pod) = work.pod.as_ref() else { return };
                let fut = inner
                    .syncer
                    .sync_pod(work.update_type, pod, work.mirror.as_ref(), last_sync, &work.cancel);
                let fut = timed_sync(work.update_type, fut);
                tokio::select! {
                    r = fut => r.map(|o| match o {
                        SyncOutcome::Done => Next::Resync(jitter(inner.resync)),
                        SyncOutcome::RetryAfter(d) => Next::Resync(d),
                        SyncOutcome::Terminal => Next::Terminate,
                    }),
                    // Pre-empted by a termination request: go round again at once.
                    _ = work.cancel.cancelled() => Ok(Next::Now),
                }
            }
            PodWorkerState::Terminating => {
                let fut = async {
                    match (&work.pod, &work.running) {
                        (Some(pod), _) if !is_runtime_only(&inner, &uid) => {
                            inner.syncer.sync_terminating_pod(pod, work.grace, last_sync).await
                        }
                        (_, Some(running)) => inner.syncer.sync_terminating_runtime_pod(running, work.grace).await,
                        (Some(pod), None) => inner.syncer.sync_terminating_pod(pod, work.grace, last_sync).await,
                        (None, None) => Ok(()),
                    }
                };
                tokio::select! {
                    r = fut => r.map(|_| Next::Terminated),
                    _ = work.cancel.cancelled() => Ok(Next::Now),
                }
            }
            PodWorkerState::Terminated => match &work.pod {
                Some(pod) if !is_runtime_only(&inner, &uid) => {
                    inner.syncer.sync_terminated_pod(pod).await.map(|_| Next::Finished)
                }
                _ => Ok(Next::Finished),
            },
            PodWorkerState::Finished => return,
        };
        // When the sync ENDED, as the kubelet's `lastSyncTime = p.clock.Now()` after syncPodFn: the
        // next sync must see a relist that ran after this one's runtime calls. A relist made
        // mid-sync (say between CreateContainer and StartContainer) shows a Created container,
        // which the API shows as terminated, and under `Never` made the pod Succeeded for good.
        last_sync = Some(Instant::now());
        let mut records = inner.records();
        let Some(r) = records.get_mut(&uid) else { return };
        match outcome {
            Ok(Next::Now) => next_resync = None,
            Ok(Next::Resync(d)) => next_resync = Some(inner.clock.deadline(d)),
            Ok(Next::Terminate) => {
                if r.state == PodWorkerState::Syncing {
                    r.state = PodWorkerState::Terminating;
                    r.grace = Some(effective_grace(r.grace, r.pod.as_ref(), None));
                }
                r.pending.get_or_insert(UpdateType::Sync);
            }
            Ok(Next::Terminated) => {
                if r.runtime_only {
                    r.state = PodWorkerState::Finished;
                    debug!(pod_uid = %uid, "runtime-only pod terminated");
                    return;
                }
                r.state = PodWorkerState::Terminated;
                r.pending.get_or_insert(UpdateType::Sync);
            }
            Ok(Next::Finished) => {
                r.state = PodWorkerState::Finished;
                return;
            }
            Err(e) => {
                let name = r.pod.as_ref().and_then(|p| p.metadata.name.clone()).unwrap_or_default();
                // The same failure every retry is logged once, then counted.
                match crate::repeats::global().note("pod sync failed", &format!("{uid}: {e}")) {
                    crate::repeats::Verdict::Log { count } => {
                        warn!(pod = %name, pod_uid = %uid, state = ?work.state, error = %e, count, "pod sync failed; will retry")
                    }
                    crate::repeats::Verdict::Repeat { count } => {
                        debug!(pod = %name, pod_uid = %uid, error = %e, count, "pod sync failed again; will retry")
                    }
                }
                next_resync = Some(inner.clock.deadline(jitter(ERROR_BACKOFF)));
            }
        }
        drop(records);
    }
}

/// Runs one `sync_pod` and records its duration (`kubelet_pod_worker_duration_seconds`).
async fn timed_sync<T>(update_type: UpdateType, fut: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let out = fut.await;
    let op = match update_type {
        UpdateType::Create => "create",
        UpdateType::Update => "update",
        UpdateType::Sync => "sync",
        UpdateType::Kill => "kill",
    };
    crate::metrics::global().pod_worker_sync(op, started.elapsed());
    out
}

fn is_runtime_only(inner: &Inner, uid: &str) -> bool {
    inner.records().get(uid).is_some_and(|r| r.runtime_only)
}

enum Next {
    Now,
    Resync(Duration),
    Terminate,
    Terminated,
    Finished,
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
        terminal_after: Option<usize>,
        /// (since, entered, returned) of every sync_pod call.
        syncs: Mutex<Vec<(Option<Instant>, Instant, Instant)>>,
    }

    #[async_trait]
    impl PodSyncer for Recorder {
        async fn sync_pod(
            &self,
            t: UpdateType,
            pod: &Pod,
            _: Option<&Pod>,
            since: Option<Instant>,
            _: &CancellationToken,
        ) -> Result<SyncOutcome, SyncError> {
            let entered = Instant::now();
            let n = {
                let mut c = self.calls.lock().unwrap();
                c.push(format!(
                    "sync:{:?}:{}",
                    t,
                    pod.metadata.name.clone().unwrap_or_default()
                ));
                c.iter().filter(|s| s.starts_with("sync")).count()
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.syncs.lock().unwrap().push((since, entered, Instant::now()));
            if self.terminal_after.is_some_and(|k| n >= k) {
                return Ok(SyncOutcome::Terminal);
            }
            Ok(SyncOutcome::Done)
        }
        async fn sync_terminating_pod(&self, _: &Pod, grace: i64, _: Option<Instant>) -> Result<(), SyncError> {
            self.calls.lock().unwrap().push(format!("terminating:{grace}"));
            Ok(())
        }
        async fn sync_terminating_runtime_pod(&self, r: &RunningPod, grace: i64) -> Result<(), SyncError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("runtime-kill:{}:{grace}", r.uid));
            Ok(())
        }
        async fn sync_terminated_pod(&self, _: &Pod) -> Result<(), SyncError> {
            self.calls.lock().unwrap().push("terminated".into());
            Ok(())
        }
    }

    fn pod(uid: &str, name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                termination_grace_period_seconds: Some(30),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn workers(syncer: Arc<dyn PodSyncer>) -> PodWorkers {
        PodWorkers::new(syncer, Clock::real(), Duration::from_secs(60), CancellationToken::new())
    }

    fn opts(t: UpdateType, p: Pod) -> UpdatePodOptions {
        UpdatePodOptions {
            update_type: t,
            pod: Some(p),
            mirror_pod: None,
            running_pod: None,
            kill_grace: None,
        }
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn updates_coalesce_while_a_sync_runs() {
        let rec = Arc::new(Recorder::default());
        let w = workers(rec.clone());
        w.update_pod(opts(UpdateType::Create, pod("u1", "a")), false);
        tokio::time::sleep(Duration::from_millis(10)).await;
        for n in ["b", "c", "d"] {
            w.update_pod(opts(UpdateType::Update, pod("u1", n)), false);
        }
        settle().await;
        let calls = rec.calls.lock().unwrap().clone();
        // The first sync, then one sync with the latest object only.
        assert_eq!(calls, vec!["sync:Create:a", "sync:Update:d"]);
    }

    #[tokio::test(start_paused = true)]
    async fn next_sync_waits_for_a_status_newer_than_the_end_of_the_previous_one() {
        let rec = Arc::new(Recorder::default());
        let w = workers(rec.clone());
        w.update_pod(opts(UpdateType::Create, pod("u1", "a")), false);
        settle().await;
        w.update_pod(opts(UpdateType::Update, pod("u1", "b")), false);
        settle().await;
        let syncs = rec.syncs.lock().unwrap().clone();
        assert_eq!(syncs.len(), 2);
        assert_eq!(syncs[0].0, None, "the first sync has no previous one");
        // A relist made during the first sync (mid CreateContainer/StartContainer) is too old.
        let since = syncs[1].0.unwrap();
        assert!(
            since >= syncs[0].2,
            "since {since:?} before the first sync returned {:?}",
            syncs[0].2
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deletion_terminates_with_the_deletion_grace() {
        let rec = Arc::new(Recorder::default());
        let w = workers(rec.clone());
        w.update_pod(opts(UpdateType::Create, pod("u1", "a")), false);
        settle().await;
        let mut deleted = pod("u1", "a");
        deleted.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        deleted.metadata.deletion_grace_period_seconds = Some(5);
        w.update_pod(opts(UpdateType::Update, deleted), false);
        settle().await;
        let calls = rec.calls.lock().unwrap().clone();
        assert_eq!(calls, vec!["sync:Create:a", "terminating:5", "terminated"]);
        assert_eq!(w.state("u1"), Some(PodWorkerState::Finished));
        assert!(w.should_pod_content_be_removed("u1"));
        assert!(!w.could_have_running_containers("u1"));
        // Forgotten once no longer desired.
        let known = w.sync_known_pods(&HashSet::new());
        assert_eq!(known.forgotten, vec!["u1".to_string()]);
        assert!(known.restart.is_empty());
        assert_eq!(w.state("u1"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn terminal_pods_terminate_without_deletion() {
        let rec = Arc::new(Recorder {
            terminal_after: Some(1),
            ..Default::default()
        });
        let w = workers(rec.clone());
        w.update_pod(opts(UpdateType::Create, pod("u1", "a")), false);
        settle().await;
        let calls = rec.calls.lock().unwrap().clone();
        assert_eq!(calls, vec!["sync:Create:a", "terminating:30", "terminated"]);
        assert!(!w.should_pod_content_be_removed("u1"), "not deleted: content stays");
        // Re-creating the same UID after it finished only marks a restart request.
        w.update_pod(opts(UpdateType::Create, pod("u1", "a")), false);
        let desired: HashSet<String> = ["u1".to_string()].into();
        let known = w.sync_known_pods(&desired);
        assert_eq!(known.restart, vec!["u1".to_string()]);
        assert!(known.forgotten.is_empty(), "the UID is wanted again");
    }

    #[tokio::test(start_paused = true)]
    async fn runtime_only_pods_are_killed_with_their_grace() {
        let rec = Arc::new(Recorder::default());
        let w = workers(rec.clone());
        let running = RunningPod {
            uid: "orphan".into(),
            ..Default::default()
        };
        w.update_pod(
            UpdatePodOptions {
                update_type: UpdateType::Kill,
                pod: None,
                mirror_pod: None,
                running_pod: Some(running),
                kill_grace: Some(1),
            },
            false,
        );
        settle().await;
        assert_eq!(rec.calls.lock().unwrap().clone(), vec!["runtime-kill:orphan:1"]);
        assert_eq!(w.state("orphan"), Some(PodWorkerState::Finished));
    }

    #[tokio::test(start_paused = true)]
    async fn first_sight_of_a_finished_pod_runs_nothing() {
        let rec = Arc::new(Recorder::default());
        let w = workers(rec.clone());
        w.update_pod(opts(UpdateType::Create, pod("u1", "a")), true);
        settle().await;
        assert!(rec.calls.lock().unwrap().is_empty());
        assert!(w.is_pod_known_terminated("u1"));
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_pods_content_stays_until_the_first_sync_of_known_pods() {
        let w = workers(Arc::new(Recorder::default()));
        // Just after a restart no pod has arrived yet: a UID the workers do not know may be a
        // pod still on its way, so its dead containers and logs stay.
        assert!(!w.should_pod_content_be_removed("gone"));
        w.update_pod(opts(UpdateType::Create, pod("u1", "a")), true);
        assert!(!w.should_pod_content_be_removed("u1"), "terminal but not deleted");
        let desired: HashSet<String> = ["u1".to_string()].into();
        w.sync_known_pods(&desired);
        assert!(w.should_pod_content_be_removed("gone"));
        assert!(!w.should_pod_content_be_removed("u1"));
    }

    #[tokio::test(start_paused = true)]
    async fn resync_happens_at_the_interval() {
        let rec = Arc::new(Recorder::default());
        let w = workers(rec.clone());
        w.update_pod(opts(UpdateType::Create, pod("u1", "a")), false);
        tokio::time::sleep(Duration::from_secs(100)).await;
        let n = rec.calls.lock().unwrap().len();
        // 60–90 s jittered resync: exactly one more sync within 100 s.
        assert_eq!(n, 2);
    }

    struct SlowKill;

    #[async_trait]
    impl PodSyncer for SlowKill {
        async fn sync_pod(
            &self,
            _: UpdateType,
            _: &Pod,
            _: Option<&Pod>,
            _: Option<Instant>,
            _: &CancellationToken,
        ) -> Result<SyncOutcome, SyncError> {
            Ok(SyncOutcome::Done)
        }
        async fn sync_terminating_pod(&self, _: &Pod, grace: i64, _: Option<Instant>) -> Result<(), SyncError> {
            tokio::time::sleep(Duration::from_secs(grace as u64)).await;
            Ok(())
        }
        async fn sync_terminating_runtime_pod(&self, _: &RunningPod, _: i64) -> Result<(), SyncError> {
            Ok(())
        }
        async fn sync_terminated_pod(&self, _: &Pod) -> Result<(), SyncError> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn terminating_pods_are_named_until_their_kill_is_done() {
        let w = workers(Arc::new(SlowKill));
        let mut p = pod("u1", "static-web-node");
        p.metadata.namespace = Some("default".into());
        w.update_pod(opts(UpdateType::Create, p.clone()), false);
        settle().await;
        assert!(w.terminating_full_names().is_empty());
        w.update_pod(
            UpdatePodOptions {
                kill_grace: Some(5),
                ..opts(UpdateType::Kill, p)
            },
            false,
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            w.terminating_full_names(),
            HashSet::from(["static-web-node_default".to_string()])
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(w.terminating_full_names().is_empty());
        assert!(w.is_pod_known_terminated("u1"));
    }

    #[test]
    fn grace_only_decreases_and_has_a_floor() {
        let mut p = pod("u", "a");
        assert_eq!(effective_grace(None, Some(&p), None), 30);
        p.metadata.deletion_grace_period_seconds = Some(10);
        assert_eq!(effective_grace(None, Some(&p), None), 10);
        assert_eq!(effective_grace(Some(5), Some(&p), None), 5);
        assert_eq!(effective_grace(Some(5), Some(&p), Some(2)), 2);
        p.metadata.deletion_grace_period_seconds = Some(0);
        assert_eq!(effective_grace(None, Some(&p), None), 30, "[quirk] 0 counts as unset");
        assert_eq!(effective_grace(None, Some(&p), Some(-3)), 1);
    }
}
