//! The status manager (`pkg/kubelet/status/status_manager.go`), §2.7: caches each pod's
//! generated status, drops illegal updates, and syncs changes to the API server with a
//! strategic-merge patch (static pods: to their mirror pod), deleting a pod once it has
//! terminated and its resources are reclaimed. Standalone, it prints each visible change.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodStatus};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::conditions::{self, is_kubelet_owned};
use super::generate::{
    normalize_status, set_start_time, set_transition_times, CONTAINER_STATUS_UNKNOWN, MSG_UNKNOWN_TERMINATED,
};
use super::patch::{merge_pod_status, pod_status_patch, PatchError};
use super::phase::restart_policy;
use crate::clock::Clock;
use crate::kubelet::sources::{CONFIG_HASH_ANNOTATION, CONFIG_MIRROR_ANNOTATION};

/// Capacity of the queue of pods with a new status (the kubelet's podStatusChannel). A full
/// queue is not an error: the batch sync picks the pod up.
pub const STATUS_QUEUE_CAPACITY: usize = 1000;
/// Period of the batch sync (virtual time).
pub const BATCH_SYNC_PERIOD: Duration = Duration::from_secs(10);

/// What the status manager asks the kubelet before it deletes a pod from the API.
pub trait PodDeletionSafety: Send + Sync {
    /// True when no container can still run and the pod's resources are reclaimed.
    fn pod_resources_are_reclaimed(&self, pod: &Pod, status: &PodStatus) -> bool;
}

/// A step of a pod's sync that failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("getting pod {namespace}/{name}")]
    GetPod {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("building the status patch of pod {namespace}/{name}")]
    BuildPatch {
        namespace: String,
        name: String,
        #[source]
        source: PatchError,
    },
    #[error("patching the status of pod {namespace}/{name}")]
    PatchStatus {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting pod {namespace}/{name}")]
    DeletePod {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl StatusError {
    /// The failure kind, for logging each kind once per pod.
    fn kind(&self) -> &'static str {
        match self {
            StatusError::GetPod { .. } => "get",
            StatusError::BuildPatch { .. } => "build-patch",
            StatusError::PatchStatus { .. } => "patch",
            StatusError::DeletePod { .. } => "delete",
        }
    }
}

/// An update the validity check refuses.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("terminated container {container} attempted illegal transition to non-terminated state")]
pub struct IllegalTransition {
    pub container: String,
}

#[derive(Clone)]
struct Versioned {
    status: PodStatus,
    version: u64,
    pod: Arc<Pod>,
}

#[derive(Default)]
struct State {
    statuses: HashMap<String, Versioned>,
    /// Last version synced to the API (or printed, standalone), by pod UID.
    synced: HashMap<String, u64>,
    /// UIDs sitting in the queue (dedup: one entry per pod however many updates).
    queued: HashSet<String>,
    /// Last failure kind logged per pod (log once per kind).
    failures: HashMap<String, &'static str>,
    /// Standalone: last line printed per pod.
    printed: HashMap<String, String>,
    /// The status the API last showed (watch), by pod UID (static pods: by static UID).
    api_seen: HashMap<String, PodStatus>,
}

/// The status manager; shared as `Arc<StatusManager>`.
pub struct StatusManager {
    client: Option<kube::Client>,
    clock: Clock,
    safety: Arc<dyn PodDeletionSafety>,
    state: Mutex<State>,
    tx: mpsc::Sender<String>,
    rx: Mutex<Option<mpsc::Receiver<String>>>,
    /// Where standalone status lines go (stdout unless replaced).
    out: Mutex<Box<dyn Write + Send>>,
}

fn uid_of(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

pub use crate::kubelet::mirror::{is_mirror_pod, is_static_pod};

/// The API pod is the mirror of this static pod (its mirror annotation carries the static
/// pod's config hash).
fn is_mirror_of(api_pod: &Pod, static_pod: &Pod) -> bool {
    match (
        annotation(api_pod, CONFIG_MIRROR_ANNOTATION),
        annotation(static_pod, CONFIG_HASH_ANNOTATION),
    ) {
        (Some(m), Some(h)) => m == h,
        (Some(m), None) => m == uid_of(static_pod),
        _ => false,
    }
}

/// An error with its sources, `outer: inner: …`, for one log line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn is_terminated(s: &ContainerStatus) -> bool {
    s.state.as_ref().is_some_and(|st| st.terminated.is_some())
}

/// `checkContainerStateTransition`: under Never (or OnFailure after exit 0) a terminated
/// container may not come back.
pub fn check_container_state_transition(
    old: &[ContainerStatus],
    new: &[ContainerStatus],
    restart_policy: &str,
) -> Result<(), IllegalTransition> {
    if restart_policy == "Always" {
        return Ok(());
    }
    for o in old {
        let Some(t) = o.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
            continue;
        };
        if t.exit_code != 0 && restart_policy == "OnFailure" {
            continue;
        }
        if let Some(n) = new.iter().find(|n| n.name == o.name && !is_terminated(n)) {
            return Err(IllegalTransition {
                container: n.name.clone(),
            });
        }
    }
    Ok(())
}

/// `isPodStatusByKubeletEqual`: equal except for conditions the kubelet does not own.
fn equal_by_kubelet(old: &PodStatus, new: &PodStatus) -> bool {
    for c in new.conditions.iter().flatten().filter(|c| is_kubelet_owned(&c.type_)) {
        let same = old
            .conditions
            .iter()
            .flatten()
            .find(|o| o.type_ == c.type_)
            .is_some_and(|o| o.status == c.status && o.reason == c.reason && o.message == c.message);
        if !same {
            return false;
        }
    }
    let mut o = old.clone();
    o.conditions = new.conditions.clone();
    &o == new
}

fn state_word(st: Option<&ContainerState>) -> String {
    let Some(st) = st else { return "unknown".into() };
    if st.running.is_some() {
        "running".into()
    } else if let Some(t) = &st.terminated {
        match t.reason.as_deref() {
            Some(r) if !r.is_empty() => format!("terminated:{r}({})", t.exit_code),
            _ => format!("terminated({})", t.exit_code),
        }
    } else if let Some(w) = &st.waiting {
        match w.reason.as_deref() {
            Some(r) if !r.is_empty() => format!("waiting:{r}"),
            _ => "waiting".into(),
        }
    } else {
        "unknown".into()
    }
}

/// The standalone line for a pod's status:
/// `<ns>/<name> phase=<phase> ready=<r>/<n> restarts=<sum> [reason=<r>] [init:<c>=<state>…] <c>=<state>…`
/// where a state is `running`, `waiting[:<reason>]` or `terminated[:<reason>](<exit code>)`.
pub fn status_line(namespace: &str, name: &str, status: &PodStatus) -> String {
    let regular = status.container_statuses.as_deref().unwrap_or_default();
    let ready = regular.iter().filter(|c| c.ready).count();
    let restarts: i64 = regular.iter().map(|c| i64::from(c.restart_count)).sum();
    let mut line = format!(
        "{namespace}/{name} phase={} ready={ready}/{} restarts={restarts}",
        status.phase.as_deref().unwrap_or("Unknown"),
        regular.len()
    );
    if let Some(r) = status.reason.as_deref().filter(|r| !r.is_empty()) {
        line.push_str(&format!(" reason={r}"));
    }
    for c in status.init_container_statuses.iter().flatten() {
        line.push_str(&format!(" init:{}={}", c.name, state_word(c.state.as_ref())));
    }
    for c in regular {
        line.push_str(&format!(" {}={}", c.name, state_word(c.state.as_ref())));
    }
    line
}

fn is_waiting(c: &ContainerStatus) -> bool {
    c.state.as_ref().is_none_or(|s| s.waiting.is_some())
}

fn has_last_termination(c: &ContainerStatus) -> bool {
    c.last_state.as_ref().is_some_and(|s| s.terminated.is_some())
}

/// `hasPodInitialized`: no init containers, any app container that ever left Waiting, or the
/// last init container completed with exit 0.
fn has_pod_initialized(pod: &Pod, status: &PodStatus) -> bool {
    if pod
        .spec
        .as_ref()
        .is_none_or(|s| s.init_containers.as_ref().is_none_or(|i| i.is_empty()))
    {
        return true;
    }
    if status
        .container_statuses
        .iter()
        .flatten()
        .any(|c| has_last_termination(c) || !is_waiting(c))
    {
        return true;
    }
    let Some(last) = status.init_container_statuses.as_ref().and_then(|l| l.last()) else {
        return false;
    };
    let exited_ok =
        |s: Option<&ContainerState>| s.and_then(|s| s.terminated.as_ref()).is_some_and(|t| t.exit_code == 0);
    exited_ok(last.state.as_ref()) || exited_ok(last.last_state.as_ref())
}

/// `initializedContainers`: how many init statuses, from the start, have tried to run (at least
/// one).
fn initialized_prefix(inits: &[ContainerStatus]) -> usize {
    for i in (0..inits.len()).rev() {
        if !is_waiting(&inits[i]) || has_last_termination(&inits[i]) {
            return i + 1;
        }
    }
    inits.len().min(1)
}

impl StatusManager {
    pub fn new(client: Option<kube::Client>, clock: Clock, safety: Arc<dyn PodDeletionSafety>) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(STATUS_QUEUE_CAPACITY);
        Arc::new(Self {
            client,
            clock,
            safety,
            state: Mutex::new(State::default()),
            tx,
            rx: Mutex::new(Some(rx)),
            out: Mutex::new(Box::new(std::io::stdout())),
        })
    }

    /// Sends standalone status lines somewhere other than stdout (tests, a log file).
    pub fn set_output(&self, out: Box<dyn Write + Send>) {
        *self.out.lock().unwrap_or_else(|p| p.into_inner()) = out;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements; a panic elsewhere must not stop
        // status reporting.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a new generated status for a pod and queues a sync if it differs from the cached
    /// one (always when the pod is being deleted).
    pub fn set_pod_status(&self, pod: &Pod, status: PodStatus) {
        let force = pod.metadata.deletion_timestamp.is_some();
        self.update_status_internal(pod, status, force);
    }

    /// The pod has terminated: every container not known terminated is reported as
    /// ContainerStatusUnknown/137, and the update is forced.
    pub fn terminate_pod(&self, pod: &Pod) {
        let mut status = {
            let st = self.lock();
            match st.statuses.get(uid_of(pod)) {
                Some(v) => v.status.clone(),
                None => pod.status.clone().unwrap_or_default(),
            }
        };
        let unknown = || ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 137,
                reason: Some(CONTAINER_STATUS_UNKNOWN.into()),
                message: Some(MSG_UNKNOWN_TERMINATED.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        // Kubernetes 1.27+ (newer than the 1.24 notes): app containers are marked only once the
        // pod has initialized, so a pod failed by its init containers keeps its app containers
        // Waiting (the init-container e2e tests expect that).
        if has_pod_initialized(pod, &status) {
            for c in status.container_statuses.iter_mut().flatten() {
                if !is_terminated(c) {
                    c.state = Some(unknown());
                }
            }
        }
        // Init containers: all but the trailing ones that never left Waiting.
        if let Some(inits) = status.init_container_statuses.as_mut() {
            let n = initialized_prefix(inits);
            for c in inits.iter_mut().take(n) {
                if !is_terminated(c) {
                    c.state = Some(unknown());
                }
            }
        }
        self.update_status_internal(pod, status, true);
    }

    fn update_status_internal(&self, pod: &Pod, status: PodStatus, force: bool) {
        let mut st = self.lock();
        self.update_locked(&mut st, pod, status, force);
    }

    /// `updateStatusInternal`, with the state lock held by the caller.
    fn update_locked(&self, st: &mut State, pod: &Pod, mut status: PodStatus, force: bool) {
        let uid = uid_of(pod).to_string();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let now = self.clock.now();
        let cached = st.statuses.get(&uid).cloned();
        let old = match &cached {
            Some(v) => v.status.clone(),
            None => pod.status.clone().unwrap_or_default(),
        };
        let policy = pod.spec.as_ref().map(restart_policy).unwrap_or("Always");
        let checks = [
            (old.container_statuses.as_deref(), status.container_statuses.as_deref()),
            (
                old.init_container_statuses.as_deref(),
                status.init_container_statuses.as_deref(),
            ),
        ];
        for (o, n) in checks {
            if let Err(e) = check_container_state_transition(o.unwrap_or_default(), n.unwrap_or_default(), policy) {
                tracing::warn!(pod = %name, uid = %uid, error = %e, "status update on pod aborted");
                return;
            }
        }
        set_transition_times(&mut status, &old, now);
        set_start_time(&mut status, &old, now);
        normalize_status(pod, &mut status);
        if let Some(c) = &cached {
            if !force && equal_by_kubelet(&c.status, &status) {
                return;
            }
        }
        let version = cached.map_or(0, |c| c.version) + 1;
        st.statuses.insert(
            uid.clone(),
            Versioned {
                status,
                version,
                pod: Arc::new(pod.clone()),
            },
        );
        if st.queued.insert(uid.clone()) {
            if let Err(mpsc::error::TrySendError::Full(uid) | mpsc::error::TrySendError::Closed(uid)) =
                self.tx.try_send(uid)
            {
                // The batch sync will pick it up.
                st.queued.remove(&uid);
            }
        }
    }

    /// The cached status (the "previous" status of generation).
    pub fn get_pod_status(&self, uid: &str) -> Option<PodStatus> {
        self.lock().statuses.get(uid).map(|v| v.status.clone())
    }

    /// Records the pod as the API shows it (the kubelet calls this for every API update of a
    /// pod, RECONCILE included). The batch sync re-sends a cached status the API copy differs
    /// from (`needsReconcile`), e.g. after someone else overwrote it. A mirror pod is recorded
    /// under its static pod's UID (the config hash, §3.4).
    pub fn observe_api_pod(&self, pod: &Pod) {
        let uid = match annotation(pod, CONFIG_MIRROR_ANNOTATION) {
            Some(static_uid) => static_uid.to_string(),
            None => uid_of(pod).to_string(),
        };
        let mut status = pod.status.clone().unwrap_or_default();
        normalize_status(pod, &mut status);
        let mut st = self.lock();
        if st.statuses.contains_key(&uid) {
            st.api_seen.insert(uid, status);
        }
    }

    /// The prober's readiness result for a container (`SetContainerReadiness`): updates the
    /// cached status and its Ready/ContainersReady conditions.
    pub fn set_container_readiness(&self, uid: &str, container_id: &str, ready: bool) {
        self.update_container(uid, container_id, |s| {
            if s.ready == ready {
                return false;
            }
            s.ready = ready;
            true
        });
    }

    /// The prober's startup result for a container (`SetContainerStartup`).
    pub fn set_container_startup(&self, uid: &str, container_id: &str, started: bool) {
        self.update_container(uid, container_id, |s| {
            if s.started == Some(started) {
                return false;
            }
            s.started = Some(started);
            true
        });
    }

    fn update_container(&self, uid: &str, container_id: &str, change: impl FnOnce(&mut ContainerStatus) -> bool) {
        // Held throughout, so a concurrent set_pod_status cannot be overwritten by an older copy.
        let mut st = self.lock();
        let Some(cached) = st.statuses.get(uid).cloned() else {
            tracing::debug!(uid = %uid, "container probe result for a pod without status");
            return;
        };
        let mut status = cached.status.clone();
        let found = status
            .container_statuses
            .iter_mut()
            .flatten()
            .chain(status.init_container_statuses.iter_mut().flatten())
            .find(|c| c.container_id.as_deref() == Some(container_id));
        let Some(c) = found else {
            tracing::debug!(uid = %uid, container_id = %container_id, "probe result for an unknown container");
            return;
        };
        if !change(c) {
            return;
        }
        let spec = cached.pod.spec.clone().unwrap_or_default();
        let phase = status.phase.clone().unwrap_or_default();
        let others: Vec<_> = status.conditions.iter().flatten().cloned().collect();
        let all: Vec<ContainerStatus> = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten())
            .cloned()
            .collect();
        let ready = conditions::pod_ready(&spec, &others, Some(&all), &phase);
        let containers_ready = conditions::containers_ready(&spec, Some(&all), &phase);
        let conds = status.conditions.get_or_insert_with(Vec::new);
        for new in [ready, containers_ready] {
            match conds.iter_mut().find(|c| c.type_ == new.type_) {
                Some(c) => *c = new,
                None => conds.push(new),
            }
        }
        self.update_locked(&mut st, &cached.pod, status, false);
    }

    /// Forgets every pod `keep` does not want (housekeeping).
    pub fn remove_orphaned_statuses(&self, keep: &dyn Fn(&str) -> bool) {
        let mut st = self.lock();
        st.statuses.retain(|uid, _| keep(uid));
        let State {
            statuses,
            synced,
            failures,
            printed,
            api_seen,
            ..
        } = &mut *st;
        api_seen.retain(|uid, _| statuses.contains_key(uid));
        synced.retain(|uid, _| statuses.contains_key(uid));
        failures.retain(|uid, _| statuses.contains_key(uid));
        printed.retain(|uid, _| statuses.contains_key(uid));
    }

    fn drop_pod(&self, uid: &str) {
        let mut st = self.lock();
        st.statuses.remove(uid);
        st.synced.remove(uid);
        st.failures.remove(uid);
        st.printed.remove(uid);
        st.api_seen.remove(uid);
    }

    /// Can the (API) pod be deleted now: deletion requested, not a mirror pod, resources gone.
    fn can_be_deleted(&self, pod: &Pod, status: &PodStatus) -> bool {
        pod.metadata.deletion_timestamp.is_some()
            && !is_mirror_pod(pod)
            && !is_static_pod(pod)
            && self.safety.pod_resources_are_reclaimed(pod, status)
    }

    /// The pod's cached entry if it needs a sync: a newer version than the API has, or a
    /// deletion that has become possible (`needsUpdate`).
    fn needs_sync(&self, uid: &str) -> Option<Versioned> {
        let v = {
            let st = self.lock();
            let v = st.statuses.get(uid)?.clone();
            if st.synced.get(uid).is_none_or(|s| *s < v.version) {
                return Some(v);
            }
            if st
                .api_seen
                .get(uid)
                .is_some_and(|api| !equal_by_kubelet(api, &v.status))
            {
                // The API copy drifted from what was synced: send it again.
                return Some(v);
            }
            v
        };
        self.can_be_deleted(&v.pod, &v.status).then_some(v)
    }

    /// Runs the sync loop: immediate syncs for queued pods and a batch every 10 s.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut rx) = rx else {
            tracing::error!("status manager is already running");
            return;
        };
        let mut batch = tokio::time::interval(self.clock.to_real(BATCH_SYNC_PERIOD));
        batch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(uid) = rx.recv() => {
                    self.lock().queued.remove(&uid);
                    self.sync_pod(&uid).await;
                }
                _ = batch.tick() => self.sync_batch().await,
            }
        }
    }

    async fn sync_batch(&self) {
        let uids: Vec<String> = self.lock().statuses.keys().cloned().collect();
        for uid in uids {
            self.sync_pod(&uid).await;
        }
    }

    async fn sync_pod(&self, uid: &str) {
        let Some(v) = self.needs_sync(uid) else { return };
        let result = match &self.client {
            None => {
                self.print_status(uid, &v);
                Ok(())
            }
            Some(client) => self.sync_to_api(client, uid, &v).await,
        };
        match result {
            Ok(()) => {
                self.lock().failures.remove(uid);
            }
            Err(e) => {
                let kind = e.kind();
                let first = self.lock().failures.insert(uid.to_string(), kind) != Some(kind);
                if first {
                    tracing::warn!(uid = %uid, error = %chain(&e), "pod status sync failed; retrying on the next batch");
                } else {
                    tracing::debug!(uid = %uid, error = %chain(&e), "pod status sync failed again");
                }
            }
        }
    }

    fn print_status(&self, uid: &str, v: &Versioned) {
        let ns = v.pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = v.pod.metadata.name.as_deref().unwrap_or_default();
        let line = status_line(ns, name, &v.status);
        let changed = {
            let mut st = self.lock();
            st.synced.insert(uid.to_string(), v.version);
            st.printed.insert(uid.to_string(), line.clone()).as_ref() != Some(&line)
        };
        if changed {
            let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
            // Output gone (closed pipe) is not worth failing the kubelet for.
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        if self.can_be_deleted(&v.pod, &v.status) {
            self.drop_pod(uid);
        }
    }

    async fn sync_to_api(&self, client: &kube::Client, uid: &str, v: &Versioned) -> Result<(), StatusError> {
        let namespace = v.pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let name = v.pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let remote = api.get_opt(&name).await.map_err(|source| StatusError::GetPod {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        })?;
        let Some(mut remote) = remote else {
            // Gone from the API: housekeeping drops the entry.
            tracing::debug!(pod = %format!("{namespace}/{name}"), "pod does not exist on the server");
            return Ok(());
        };
        let static_pod = is_static_pod(&v.pod);
        if static_pod {
            // A static pod's status goes to its mirror pod (§3.5).
            if !is_mirror_of(&remote, &v.pod) {
                tracing::debug!(pod = %format!("{namespace}/{name}"), "no mirror pod yet for static pod");
                return Ok(());
            }
        } else if uid_of(&remote) != uid {
            tracing::info!(pod = %format!("{namespace}/{name}"), "pod was deleted and recreated; dropping its status");
            self.drop_pod(uid);
            return Ok(());
        }
        let remote_uid = uid_of(&remote).to_string();
        let api_status = remote.status.clone().unwrap_or_default();
        let merged = merge_pod_status(&api_status, &v.status);
        let patch = pod_status_patch(&remote_uid, &api_status, &merged).map_err(|source| StatusError::BuildPatch {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        })?;
        if let Some(patch) = patch {
            remote = api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
                .map_err(|source| StatusError::PatchStatus {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    source,
                })?;
            tracing::debug!(pod = %format!("{namespace}/{name}"), version = v.version, "patched pod status");
        }
        {
            let mut st = self.lock();
            st.synced.insert(uid.to_string(), v.version);
            // What the API now shows. If it still differs (something the API changes on its
            // own), forget it rather than re-syncing every batch: only a new API update (the
            // watch) triggers the next reconcile.
            let mut seen = remote.status.clone().unwrap_or_default();
            normalize_status(&remote, &mut seen);
            if equal_by_kubelet(&seen, &v.status) {
                st.api_seen.insert(uid.to_string(), seen);
            } else {
                st.api_seen.remove(uid);
            }
        }

        if !static_pod && self.can_be_deleted(&remote, &v.status) {
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                // The UID precondition keeps a new pod with the same name safe.
                preconditions: Some(Preconditions {
                    uid: Some(remote_uid),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => {
                    return Err(StatusError::DeletePod {
                        namespace,
                        name,
                        source,
                    })
                }
            }
            tracing::info!(pod = %format!("{namespace}/{name}"), "pod fully terminated and removed from the API");
            self.drop_pod(uid);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
