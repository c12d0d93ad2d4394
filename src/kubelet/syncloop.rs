//! The kubelet loop (`kubelet.go`): sources → pod manager → admission → pod workers; PLEG
//! events → syncs; housekeeping; runtime health; container GC. It also implements the three
//! sync functions the pod workers call.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Node, Pod, PodStatus as ApiPodStatus, Secret};
use kube::api::Api;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::admission;
use super::cgroups::PodCgroups;
use super::config::Config;
use super::events::Recorder;
use super::mirror::pod_full_name;
use super::mirror::{self, MirrorClient};
use super::podmanager::{PodManager, PodOp};
use super::prober::probe::Prober;
use super::prober::results::{ProbeResult, ProbeType, Update as ProbeUpdate};
use super::prober::ProberManager;
use super::sources::{Source, SourceUpdate};
use super::status::generate::{generate_api_pod_status, GenerateInput};
use super::status::manager::{PodDeletionSafety, StatusManager};
use super::status::reasoncache::ReasonCache;
use super::volumes::VolumeManager;
use super::workers::{PodSyncer, PodWorkers, SyncError, SyncOutcome, UpdatePodOptions, UpdateType};
use super::RuntimeHealth;
use crate::clock::Clock;
use crate::genericruntime::relist::{refresh_pod, PlegEvent, PlegEventKind, PodCache};
use crate::genericruntime::{EventSink, EventType, PodStatus, RunningPod, RuntimeManager};

/// Housekeeping period (`housekeepingPeriod`).
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(2);
/// Runtime status poll (`updateRuntimeUp`).
const RUNTIME_STATUS_PERIOD: Duration = Duration::from_secs(5);
/// Runtime considered down after this long without a good answer (`maxWaitForContainerRuntime`).
const RUNTIME_DOWN_AFTER: Duration = Duration::from_secs(30);
/// Container GC period (`ContainerGCPeriod`).
const CONTAINER_GC_PERIOD: Duration = Duration::from_secs(60);
/// Resync while an image-pull back-off window is open. The kubelet re-syncs every 10–15 s during
/// back-off and so restarts up to 15 s late (kubelet-behavior.md §1.11 quirk); keel deliberately
/// requeues exactly when a crash-loop back-off ends, and checks image back-off every second.
const BACKOFF_RESYNC: Duration = Duration::from_secs(1);
/// Grace period for pods only the runtime knows about (`HandlePodCleanups`).
const ORPHAN_GRACE_SECONDS: i64 = 1;

/// Everything the sync functions and the loop share.
pub struct Core {
    pub cfg: Arc<Config>,
    pub clock: Clock,
    pub client: Option<kube::Client>,
    pub manager: Arc<RuntimeManager>,
    pub cache: Arc<PodCache>,
    pub status: Arc<StatusManager>,
    pub recorder: Arc<Recorder>,
    pub node_rx: watch::Receiver<Option<Node>>,
    pub node_ips: Vec<String>,
    pub health_rx: watch::Receiver<RuntimeHealth>,
    /// Pod cgroups (a no-op manager on the simulated backend).
    pub cgroups: PodCgroups,
    /// Pod volumes: set up before containers start, torn down after the pod terminated.
    pub volumes: Arc<VolumeManager>,
    /// When keel started: a pod's first sync waits for a relist newer than this, so a
    /// restarted keel sees what already runs before it decides anything.
    pub started: Instant,
    /// Readiness, liveness and startup probes.
    pub prober: Arc<ProberManager>,
    /// When the sync loop last went round (`syncLoopMonitor`; `/healthz/syncloop` reads it).
    last_sync_loop: Mutex<Option<Instant>>,
    pods: Mutex<PodManager>,
    /// Pods being killed with a status of their own (eviction): UID → (reason, message).
    kill_status: Mutex<HashMap<String, (String, String)>>,
    reasons: ReasonCache,
    mirror: Option<MirrorClient>,
    workers: OnceLock<PodWorkers>,
}

/// Inputs to `Kubelet::new`.
pub struct KubeletParts {
    pub cfg: Arc<Config>,
    pub clock: Clock,
    pub client: Option<kube::Client>,
    pub manager: Arc<RuntimeManager>,
    pub cache: Arc<PodCache>,
    pub status: Arc<StatusManager>,
    pub recorder: Arc<Recorder>,
    pub node_rx: watch::Receiver<Option<Node>>,
    pub node_ips: Vec<String>,
    pub health_rx: watch::Receiver<RuntimeHealth>,
    pub cgroups: PodCgroups,
    pub volumes: Arc<VolumeManager>,
    pub started: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere mid-update; the data is still the best we have.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn phase_of(status: &ApiPodStatus) -> &str {
    status.phase.as_deref().unwrap_or("Pending")
}

fn is_terminal(phase: &str) -> bool {
    phase == "Succeeded" || phase == "Failed"
}

impl Core {
    pub fn new(parts: KubeletParts) -> Arc<Self> {
        let mirror = parts.client.clone().map(MirrorClient::new);
        let runtime: Arc<dyn crate::genericruntime::RuntimeService> = parts.manager.runtime().clone();
        let prober = Arc::new(ProberManager::new(
            Arc::new(Prober::new(runtime, parts.clock)),
            parts.status.clone(),
            parts.recorder.clone(),
            parts.clock,
            parts.started,
        ));
        Arc::new(Self {
            cfg: parts.cfg,
            clock: parts.clock,
            client: parts.client,
            manager: parts.manager,
            cache: parts.cache,
            status: parts.status,
            recorder: parts.recorder,
            node_rx: parts.node_rx,
            node_ips: parts.node_ips,
            health_rx: parts.health_rx,
            cgroups: parts.cgroups,
            volumes: parts.volumes,
            started: parts.started,
            prober,
            last_sync_loop: Mutex::new(None),
            pods: Mutex::new(PodManager::new()),
            kill_status: Mutex::default(),
            reasons: ReasonCache::new(),
            mirror,
            workers: OnceLock::new(),
        })
    }

    /// The pod workers, once the kubelet loop created them (for `/metrics`).
    pub fn workers(&self) -> Option<&PodWorkers> {
        self.workers.get()
    }

    /// When the sync loop last went round; None before it started.
    pub fn last_sync_loop(&self) -> Option<Instant> {
        *lock(&self.last_sync_loop)
    }

    fn mark_sync_loop(&self) {
        *lock(&self.last_sync_loop) = Some(Instant::now());
    }

    /// The pods this kubelet manages (for `/pods` and tests).
    pub fn pods(&self) -> Vec<Pod> {
        lock(&self.pods).pods().cloned().collect()
    }

    fn generate(&self, pod: &Pod, runtime: &PodStatus) -> ApiPodStatus {
        let uid = uid_of(pod);
        let previous = self.status.get_pod_status(&uid).or_else(|| pod.status.clone());
        let status = generate_api_pod_status(&GenerateInput {
            pod,
            runtime,
            previous: previous.as_ref(),
            reasons: &self.reasons,
            probes: self.prober.as_ref(),
            node_ips: &self.node_ips,
            now: self.clock.now(),
        });
        self.apply_kill_status(&uid, status)
    }

    /// The status function of a kill (`killPodNow`'s): Failed with the eviction's reason and
    /// message, and the `DisruptionTarget` condition the kubelet adds.
    fn apply_kill_status(&self, uid: &str, mut status: ApiPodStatus) -> ApiPodStatus {
        let Some((reason, message)) = lock(&self.kill_status).get(uid).cloned() else {
            return status;
        };
        status.phase = Some("Failed".into());
        status.reason = Some(reason);
        status.message = Some(message.clone());
        let conds = status.conditions.get_or_insert_with(Vec::new);
        if !conds.iter().any(|c| c.type_ == "DisruptionTarget") {
            conds.insert(
                0,
                k8s_openapi::api::core::v1::PodCondition {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                    reason: Some("TerminationByKubelet".into()),
                    message: Some(message),
                    last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(self.clock.now())),
                    ..Default::default()
                },
            );
        }
        status
    }

    /// Kills a pod with a status override (eviction): it goes Failed with `reason`/`message`
    /// and its worker terminates it within `grace` seconds.
    pub fn kill_pod_with_status(&self, pod: &Pod, grace: i64, reason: &str, message: &str) {
        let uid = uid_of(pod);
        {
            let mut ks = lock(&self.kill_status);
            let known = lock(&self.pods);
            ks.retain(|u, _| known.contains(u));
            ks.insert(uid, (reason.to_string(), message.to_string()));
        }
        if let Some(w) = self.workers.get() {
            w.update_pod(
                UpdatePodOptions {
                    update_type: UpdateType::Kill,
                    pod: Some(pod.clone()),
                    mirror_pod: None,
                    running_pod: None,
                    kill_grace: Some(grace),
                },
                false,
            );
        }
    }

    /// Admitted pods that are not known terminated and not in a terminal phase
    /// (`GetActivePods`), static pods included.
    pub fn active_pods(&self) -> Vec<Pod> {
        let Some(workers) = self.workers.get() else {
            return Vec::new();
        };
        let pods = lock(&self.pods);
        pods.pods()
            .filter(|p| {
                let u = uid_of(p);
                !pods.is_rejected(&u)
                    && workers.state(&u).is_some()
                    && !workers.is_pod_known_terminated(&u)
                    && !p.status.as_ref().is_some_and(|s| is_terminal(phase_of(s)))
            })
            .cloned()
            .collect()
    }

    /// Whether a pod's worker is done with it (terminated, or forgotten).
    pub fn pod_terminated(&self, uid: &str) -> bool {
        self.workers
            .get()
            .is_none_or(|w| w.state(uid).is_none() || w.is_pod_known_terminated(uid))
    }

    /// Container GC now (`DeleteAllUnusedContainers`): dead containers of pods whose content
    /// may go, and the extra dead instances of the rest.
    pub async fn collect_containers(self: &Arc<Self>, all_sources_ready: bool) -> crate::genericruntime::Result<()> {
        let core = self.clone();
        let removable = move |uid: &str| {
            core.workers.get().is_some_and(|w| w.should_pod_content_be_removed(uid)) && !lock(&core.pods).contains(uid)
        };
        self.manager.garbage_collect(&removable, all_sources_ready).await
    }

    /// Hands a generated status to the status manager, then wakes the readiness probes of
    /// containers that started but are not ready: they read the status just published, so a
    /// new container is probed at once rather than a period later.
    fn publish(&self, pod: &Pod, api: ApiPodStatus) {
        let uid = uid_of(pod);
        self.status.set_pod_status(pod, api);
        if let Some(published) = self.status.get_pod_status(&uid) {
            self.prober.trigger_unready(&uid, &published);
        }
    }

    /// Targeted status refresh after this worker started or killed something: the pod's runtime
    /// status is read now and published to the cache (ordered against relists), rather than
    /// waiting for the next relist. On failure the given status stands; relist catches up.
    async fn refresh(&self, pod: &Pod, fallback: Arc<PodStatus>) -> Arc<PodStatus> {
        let uid = uid_of(pod);
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        match refresh_pod(&self.manager, &self.cache, &self.clock, &uid, name, ns).await {
            Ok(cached) if cached.error.is_none() => cached.status,
            Ok(_) => fallback,
            Err(e) => {
                debug!(pod_uid = %uid, error = %e, "targeted status refresh failed; relist will catch up");
                fallback
            }
        }
    }

    /// The cached runtime status newer than `since` (or than keel's start for a first sync).
    async fn runtime_status(&self, uid: &str, since: Option<Instant>) -> Result<Arc<PodStatus>, SyncError> {
        let cached = self.cache.get_newer_than(uid, since.unwrap_or(self.started)).await;
        match cached.error {
            Some(e) => Err(SyncError(format!("inspecting pod {uid} in the runtime: {e}"))),
            None => Ok(cached.status),
        }
    }

    /// `activeDeadlineSeconds`: how long until the deadline, or None once it passed / if unset.
    fn active_deadline(&self, pod: &Pod, status: &ApiPodStatus) -> Option<Result<Duration, ()>> {
        let secs = pod.spec.as_ref()?.active_deadline_seconds?;
        let start = status.start_time.as_ref()?.0;
        let elapsed = self.clock.virtual_between(start, self.clock.now());
        let limit = Duration::from_secs(secs.max(0) as u64);
        Some(if elapsed >= limit { Err(()) } else { Ok(limit - elapsed) })
    }

    async fn pull_secrets(&self, pod: &Pod) -> Vec<Secret> {
        let (Some(client), Some(spec)) = (&self.client, pod.spec.as_ref()) else {
            return Vec::new();
        };
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let mut out = Vec::new();
        for r in spec.image_pull_secrets.iter().flatten() {
            // Missing secrets are skipped, as the kubelet does (anonymous pull then).
            match api.get_opt(&r.name).await {
                Ok(Some(s)) => out.push(s),
                Ok(None) => debug!(secret = %r.name, "image pull secret not found; skipped"),
                Err(e) => warn!(secret = %r.name, error = %e, "could not read image pull secret"),
            }
        }
        out
    }

    /// Creates or replaces the mirror pod of a static pod (§3.5).
    async fn ensure_mirror_pod(&self, pod: &Pod) {
        let Some(mc) = &self.mirror else { return };
        let node = self.node_rx.borrow().clone();
        // Mirror pods point at the registered Node: wait until it has a UID.
        let Some(node) = node.filter(|n| n.metadata.uid.is_some()) else {
            return;
        };
        let full = pod_full_name(pod);
        let existing = lock(&self.pods).mirror_of(&full).cloned();
        let want = mirror::static_pod_hash(pod);
        if let Some(m) = &existing {
            let stale = m.metadata.deletion_timestamp.is_some() || mirror::mirror_pod_hash(m) != want;
            if !stale {
                return;
            }
            let ns = m.metadata.namespace.as_deref().unwrap_or("default");
            let name = m.metadata.name.as_deref().unwrap_or_default();
            if let Err(e) = mc.delete_mirror_pod(ns, name, m.metadata.uid.as_deref()).await {
                warn!(pod = %full, error = %e, "deleting stale mirror pod failed");
                return;
            }
        }
        if node.metadata.deletion_timestamp.is_some() {
            return;
        }
        let node_name = node.metadata.name.as_deref().unwrap_or_default();
        let node_uid = node.metadata.uid.as_deref().unwrap_or_default();
        if let Err(e) = mc.create_mirror_pod(pod, node_name, node_uid).await {
            warn!(pod = %full, error = %e, "creating mirror pod failed");
        }
    }

    fn pod_dirs(&self, uid: &str) -> PathBuf {
        self.cfg.root_dir.join("pods").join(uid)
    }
}

#[async_trait]
impl PodSyncer for Core {
    async fn sync_pod(
        &self,
        _update_type: UpdateType,
        pod: &Pod,
        _mirror: Option<&Pod>,
        since: Option<Instant>,
        _cancel: &CancellationToken,
    ) -> Result<SyncOutcome, SyncError> {
        let uid = uid_of(pod);
        let runtime = self.runtime_status(&uid, since).await?;
        let mut api = self.generate(pod, &runtime);
        let mut retry: Option<Duration> = None;
        match self.active_deadline(pod, &api) {
            Some(Err(())) => {
                api.phase = Some("Failed".into());
                api.reason = Some("DeadlineExceeded".into());
                api.message = Some("Pod was active on the node longer than the specified deadline".into());
                self.recorder.pod_event(
                    pod,
                    None,
                    EventType::Normal,
                    "DeadlineExceeded",
                    api.message.clone().unwrap_or_default(),
                );
            }
            Some(Ok(left)) => retry = Some(left),
            None => {}
        }
        let phase = phase_of(&api).to_string();
        self.publish(pod, api);
        if is_terminal(&phase) {
            return Ok(SyncOutcome::Terminal);
        }
        let health = self.health_rx.borrow().clone();
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
        if !health.network_ready && !host_network && health.last_runtime_ok.is_some() {
            let msg = health
                .network_error
                .clone()
                .unwrap_or_else(|| "network is not ready".into());
            self.recorder.pod_event(
                pod,
                None,
                EventType::Warning,
                "NetworkNotReady",
                format!("network is not ready: {msg}"),
            );
            return Ok(SyncOutcome::RetryAfter(Duration::from_secs(1)));
        }
        // Pod cgroup ensure (§2.5 step 5): before the sandbox, whose cgroup_parent names it.
        // Only syncing (not terminating) pods reach this point.
        if let Err(e) = self.cgroups.ensure(pod) {
            return Err(SyncError(format!(
                "failed to ensure that the pod: {uid} cgroups exist and are correctly applied: {e}"
            )));
        }
        if mirror::is_static_pod(pod) {
            self.ensure_mirror_pod(pod).await;
        }
        let dir = self.pod_dirs(&uid);
        for sub in ["volumes", "plugins", "containers"] {
            if let Err(e) = tokio::fs::create_dir_all(dir.join(sub)).await {
                return Err(SyncError(format!("creating pod directory {}: {e}", dir.display())));
            }
        }
        // Volumes before containers (`WaitForAttachAndMount`); every sync sets them up again, which
        // refreshes configMap/secret/downwardAPI/projected contents of running pods.
        if let Err(failures) = self.volumes.setup_pod(pod).await {
            for msg in failures.event_messages() {
                self.recorder
                    .pod_event(pod, None, EventType::Warning, "FailedMount", msg);
            }
            return Err(SyncError(format!(
                "unable to attach or mount volumes for pod {}: {failures}",
                pod_full_name(pod)
            )));
        }
        // Ensure the pod is being probed (idempotent; refreshes the pod the workers see).
        self.prober.add_pod(pod);
        let secrets = self.pull_secrets(pod).await;
        let probes = self.prober.probe_failures(&runtime);
        let result = self.manager.sync_pod(pod, &runtime, &secrets, &probes).await;
        self.reasons.update(&uid, &result);
        // Something was started, killed or created (not only a back-off wait): publish the
        // pod's new runtime state now, so Running/Ready goes out without waiting for a relist.
        let acted = result
            .results
            .iter()
            .any(|r| !r.error.as_ref().is_some_and(|(kind, _)| kind.is_backoff()));
        let runtime = if acted {
            self.refresh(pod, runtime).await
        } else {
            runtime
        };
        if acted || result.start_results().next().is_some() {
            // Show the new state, or a new waiting reason (or its end), now.
            let api = self.generate(pod, &runtime);
            self.publish(pod, api);
        }
        match result.first_error() {
            None => Ok(retry.map(SyncOutcome::RetryAfter).unwrap_or(SyncOutcome::Done)),
            Some(r) => match &r.error {
                Some((kind, _)) if kind.is_backoff() => {
                    // Requeue when the crash-loop window closes (image back-off: poll each second).
                    let left = self
                        .manager
                        .crash_loop_remaining(pod, &runtime)
                        .unwrap_or(BACKOFF_RESYNC);
                    Ok(SyncOutcome::RetryAfter(
                        left.clamp(Duration::from_millis(100), BACKOFF_RESYNC.max(left)),
                    ))
                }
                Some((kind, msg)) => Err(SyncError(format!(
                    "{} {}: {}: {msg}",
                    kind.as_str(),
                    r.target,
                    pod_full_name(pod)
                ))),
                None => Ok(SyncOutcome::Done),
            },
        }
    }

    async fn sync_terminating_pod(&self, pod: &Pod, grace: i64, since: Option<Instant>) -> Result<(), SyncError> {
        let uid = uid_of(pod);
        // A terminating pod's containers are not restarted by their probes any more.
        self.prober.stop_liveness_and_startup(&uid);
        let runtime = self.runtime_status(&uid, since).await?;
        let api = self.generate(pod, &runtime);
        self.publish(pod, api);
        let result = self.manager.kill_pod(Some(pod), &runtime, Some(grace)).await;
        self.reasons.update(&uid, &result);
        if let Some(r) = result.first_error() {
            let msg = r.error.as_ref().map(|(_, m)| m.clone()).unwrap_or_default();
            return Err(SyncError(format!("killing pod {}: {msg}", pod_full_name(pod))));
        }
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        // Published to the cache too (targeted refresh), so the next sync sees the kill.
        let after = refresh_pod(&self.manager, &self.cache, &self.clock, &uid, name, ns)
            .await
            .map_err(|e| SyncError(format!("reading status of {}: {e}", pod_full_name(pod))))?
            .status;
        if after
            .container_statuses
            .iter()
            .any(|c| c.state == crate::genericruntime::ContainerState::Running)
        {
            return Err(SyncError(format!(
                "pod {} still has running containers",
                pod_full_name(pod)
            )));
        }
        let api = self.generate(pod, &after);
        self.publish(pod, api);
        Ok(())
    }

    async fn sync_terminating_runtime_pod(&self, running: &RunningPod, grace: i64) -> Result<(), SyncError> {
        let status = self
            .manager
            .get_pod_status(&running.uid, &running.name, &running.namespace)
            .await
            .map_err(|e| SyncError(format!("reading status of orphaned pod {}: {e}", running.uid)))?;
        info!(pod_uid = %running.uid, pod = %running.name, "killing pod that no source knows about");
        let result = self.manager.kill_pod(None, &status, Some(grace)).await;
        match result.first_error() {
            Some(r) => Err(SyncError(format!(
                "killing orphaned pod {}: {:?}",
                running.uid, r.error
            ))),
            None => Ok(()),
        }
    }

    async fn sync_terminated_pod(&self, pod: &Pod) -> Result<(), SyncError> {
        let uid = uid_of(pod);
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let runtime = self
            .manager
            .get_pod_status(&uid, name, ns)
            .await
            .map_err(|e| SyncError(format!("reading status of {}: {e}", pod_full_name(pod))))?;
        self.prober.remove_pod(&uid);
        let api = self.generate(pod, &runtime);
        self.publish(pod, api);
        // Unmount and remove the volumes (`podVolumesExist` must be false before the API object
        // can go); a failure retries the whole step.
        if let Err(e) = self.volumes.teardown_pod(&uid).await {
            return Err(SyncError(format!(
                "tearing down volumes of {}: {e}",
                pod_full_name(pod)
            )));
        }
        // Destroy the pod cgroup; a failure (still busy) retries the whole step.
        if let Err(e) = self.cgroups.destroy_pod(&uid).await {
            return Err(SyncError(format!("destroying cgroup of {}: {e}", pod_full_name(pod))));
        }
        self.status.terminate_pod(pod);
        Ok(())
    }
}

impl PodDeletionSafety for Core {
    fn pod_resources_are_reclaimed(&self, pod: &Pod, status: &ApiPodStatus) -> bool {
        let uid = uid_of(pod);
        if self.workers().is_none_or(|w| w.could_have_running_containers(&uid)) {
            return false;
        }
        if self.cgroups.exists(&uid) {
            return false;
        }
        if self.volumes.pod_volumes_dir(&uid).exists() {
            return false;
        }
        let running = status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten())
            .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
        !running
    }
}

/// A `PodDeletionSafety` that forwards to the core once it exists (the status manager is made
/// before the core it asks).
#[derive(Default)]
pub struct DeferredSafety(OnceLock<Arc<Core>>);

impl DeferredSafety {
    pub fn set(&self, core: Arc<Core>) {
        let _ = self.0.set(core);
    }
}

impl PodDeletionSafety for DeferredSafety {
    fn pod_resources_are_reclaimed(&self, pod: &Pod, status: &ApiPodStatus) -> bool {
        self.0.get().is_some_and(|c| c.pod_resources_are_reclaimed(pod, status))
    }
}

/// The running kubelet.
pub struct Kubelet {
    core: Arc<Core>,
    workers_sources: Vec<Source>,
}

impl Kubelet {
    pub fn new(core: Arc<Core>, shutdown: CancellationToken) -> Self {
        let syncer: Arc<dyn PodSyncer> = core.clone();
        let workers = PodWorkers::new(syncer, core.clock, core.cfg.sync_frequency, shutdown);
        let _ = core.workers.set(workers);
        let mut sources = Vec::new();
        if !core.cfg.standalone {
            sources.push(Source::Api);
        }
        if core.cfg.static_pod_path.is_some() {
            sources.push(Source::File);
        }
        Self {
            core,
            workers_sources: sources,
        }
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The sync loop (`syncLoopIteration`). Returns when `shutdown` fires.
    pub async fn run(
        self,
        mut sources: mpsc::Receiver<SourceUpdate>,
        mut pleg: mpsc::Receiver<PlegEvent>,
        health_tx: watch::Sender<RuntimeHealth>,
        pleg_last_relist: impl Fn() -> Option<std::time::Instant> + Send + 'static,
        shutdown: CancellationToken,
    ) {
        let clock = self.core.clock;
        let mut probe_updates = self.core.prober.take_updates();
        let mut housekeeping = tokio::time::interval(clock.to_real(HOUSEKEEPING_PERIOD));
        let mut runtime_tick = tokio::time::interval(clock.to_real(RUNTIME_STATUS_PERIOD));
        let mut gc_tick = tokio::time::interval(clock.to_real(CONTAINER_GC_PERIOD));
        for t in [&mut housekeeping, &mut runtime_tick, &mut gc_tick] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        // Static pods may start before the Node is registered; their mirror pods wait for the
        // Node's UID, so they are synced again the moment it appears, not a resync period later.
        let mut node_rx = self.core.node_rx.clone();
        let mut node_known = node_rx
            .borrow_and_update()
            .as_ref()
            .is_some_and(|n| n.metadata.uid.is_some());
        loop {
            self.core.mark_sync_loop();
            tokio::select! {
                Some(update) = sources.recv() => self.handle_source(update),
                Some(ev) = pleg.recv() => self.handle_pleg(ev),
                Some(u) = recv_probe_update(&mut probe_updates) => self.handle_probe_update(u),
                _ = housekeeping.tick() => self.housekeeping().await,
                _ = runtime_tick.tick() => self.update_runtime_up(&health_tx, pleg_last_relist()).await,
                _ = gc_tick.tick() => self.spawn_gc(),
                Ok(()) = node_rx.changed(), if !node_known => {
                    node_known = node_rx.borrow_and_update().as_ref().is_some_and(|n| n.metadata.uid.is_some());
                    if node_known {
                        self.sync_static_pods();
                    }
                }
                _ = shutdown.cancelled() => break,
            }
        }
        info!("kubelet loop stopped");
    }

    /// A changed probe result (`syncLoopIteration`'s three prober cases): readiness and startup
    /// go into the cached status at once; the pod is re-synced (liveness: only on failure).
    fn handle_probe_update(&self, u: ProbeUpdate) {
        match u.probe {
            ProbeType::Liveness if u.result != ProbeResult::Failure => return,
            ProbeType::Liveness => {}
            ProbeType::Readiness => {
                self.core
                    .status
                    .set_container_readiness(&u.pod_uid, &u.container_id, u.result == ProbeResult::Success)
            }
            ProbeType::Startup => {
                self.core
                    .status
                    .set_container_startup(&u.pod_uid, &u.container_id, u.result == ProbeResult::Success)
            }
        }
        let pod = lock(&self.core.pods).get(&u.pod_uid).cloned();
        if let Some(pod) = pod {
            debug!(pod = %pod_full_name(&pod), probe = ?u.probe, result = ?u.result, "probe result changed; syncing");
            self.dispatch(pod, UpdateType::Sync);
        }
    }

    /// Syncs every static pod (their mirror pods need the registered Node).
    fn sync_static_pods(&self) {
        let pods: Vec<Pod> = lock(&self.core.pods)
            .pods()
            .filter(|p| mirror::is_static_pod(p))
            .cloned()
            .collect();
        for pod in pods {
            self.dispatch(pod, UpdateType::Sync);
        }
    }

    fn workers(&self) -> &PodWorkers {
        // Set in `new`, before the loop can run.
        self.core
            .workers
            .get()
            .expect("pod workers are created in Kubelet::new")
    }

    fn sources_ready(&self) -> bool {
        lock(&self.core.pods).sources_ready(&self.workers_sources)
    }

    fn handle_source(&self, update: SourceUpdate) {
        // The status manager re-sends a status whose API copy differs (someone overwrote it, or
        // a mirror pod was recreated empty).
        match &update {
            SourceUpdate::Snapshot {
                source: Source::Api,
                pods,
            } => pods.iter().for_each(|p| self.core.status.observe_api_pod(p)),
            SourceUpdate::Upsert {
                source: Source::Api,
                pod,
            } => self.core.status.observe_api_pod(pod),
            _ => {}
        }
        let ops = lock(&self.core.pods).apply(update);
        let mut adds: Vec<Pod> = Vec::new();
        for op in ops {
            match op {
                PodOp::Add(pod) => adds.push(pod),
                PodOp::Update(pod) | PodOp::Delete(pod) => self.dispatch(pod, UpdateType::Update),
                PodOp::Reconcile(pod) => {
                    // Readiness gates are other writers' conditions: re-evaluate Ready.
                    let gated = pod
                        .spec
                        .as_ref()
                        .is_some_and(|s| s.readiness_gates.as_ref().is_some_and(|g| !g.is_empty()));
                    if gated {
                        self.dispatch(pod, UpdateType::Sync);
                    }
                }
                PodOp::Remove(pod) => {
                    let uid = uid_of(&pod);
                    if lock(&self.core.pods).is_rejected(&uid) {
                        continue;
                    }
                    self.workers().update_pod(
                        UpdatePodOptions {
                            update_type: UpdateType::Kill,
                            pod: Some(pod),
                            mirror_pod: None,
                            running_pod: None,
                            kill_grace: None,
                        },
                        false,
                    );
                }
                PodOp::MirrorChanged(full_name) => {
                    let uids = lock(&self.core.pods).static_uids(&full_name);
                    for uid in uids {
                        let pod = lock(&self.core.pods).get(&uid).cloned();
                        if let Some(pod) = pod {
                            self.dispatch(pod, UpdateType::Sync);
                        }
                    }
                }
            }
        }
        // HandlePodAdditions: oldest first, each admitted against those admitted before it.
        adds.sort_by(|a, b| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp));
        for pod in adds {
            self.handle_add(pod);
        }
    }

    fn handle_add(&self, pod: Pod) {
        let uid = uid_of(&pod);
        let terminal = pod.status.as_ref().is_some_and(|s| is_terminal(phase_of(s)));
        let deleting = pod.metadata.deletion_timestamp.is_some();
        if !terminal && !deleting {
            if let Err(rejection) = self.admit(&pod) {
                lock(&self.core.pods).reject(&uid);
                self.core.recorder.pod_event(
                    &pod,
                    None,
                    EventType::Warning,
                    &rejection.reason,
                    rejection.message.clone(),
                );
                let mut status = pod.status.clone().unwrap_or_default();
                status.phase = Some("Failed".into());
                status.reason = Some(rejection.reason.clone());
                status.message = Some(format!("Pod {}", rejection.message));
                info!(pod = %pod_full_name(&pod), reason = %rejection.reason, "pod rejected by admission");
                self.core.status.set_pod_status(&pod, status);
                return;
            }
        }
        // After a restart, a terminal pod with nothing running is done: run nothing (rule 1).
        let finished = terminal && !self.core.cache.get(&uid).status.has_running();
        self.workers().update_pod(
            UpdatePodOptions {
                update_type: UpdateType::Create,
                pod: Some(pod),
                mirror_pod: None,
                running_pod: None,
                kill_grace: None,
            },
            finished,
        );
    }

    /// Runs admission against the active pods (`canAdmitPod`).
    fn admit(&self, pod: &Pod) -> Result<(), admission::Rejection> {
        let node = self.core.node_rx.borrow().clone();
        let Some(node) = node else { return Ok(()) };
        let uid = uid_of(pod);
        let pods = lock(&self.core.pods);
        let workers = self.workers();
        let active: Vec<&Pod> = pods
            .pods()
            .filter(|p| {
                let u = uid_of(p);
                u != uid
                    && !pods.is_rejected(&u)
                    && !workers.is_pod_known_terminated(&u)
                    && workers.state(&u).is_some()
                    && !p
                        .status
                        .as_ref()
                        .is_some_and(|s| is_terminal(phase_of(s)) && p.metadata.deletion_timestamp.is_none())
            })
            .collect();
        // Validated when the configuration was read; the safe set depends only on the kernel.
        let sysctls =
            crate::kubelet::sysctl::Allowlist::for_node(&self.core.cfg.allowed_unsafe_sysctls).unwrap_or_default();
        admission::admit(pod, &active, &node, &sysctls)
    }

    fn dispatch(&self, pod: Pod, update_type: UpdateType) {
        let uid = uid_of(&pod);
        if lock(&self.core.pods).is_rejected(&uid) {
            return;
        }
        self.workers().update_pod(
            UpdatePodOptions {
                update_type,
                pod: Some(pod),
                mirror_pod: None,
                running_pod: None,
                kill_grace: None,
            },
            false,
        );
    }

    fn handle_pleg(&self, ev: PlegEvent) {
        if ev.kind == PlegEventKind::ContainerRemoved {
            return;
        }
        let pod = lock(&self.core.pods).get(&ev.pod_uid).cloned();
        if let Some(pod) = pod {
            self.dispatch(pod, UpdateType::Sync);
        }
        if ev.kind == PlegEventKind::ContainerDied {
            // Eager deletion: keep the newest dead instance per container (none once removable).
            let core = self.core.clone();
            let keep = if self.workers().should_pod_content_be_removed(&ev.pod_uid)
                && !lock(&core.pods).contains(&ev.pod_uid)
            {
                0
            } else {
                1
            };
            tokio::spawn(async move {
                let cached = core.cache.get(&ev.pod_uid);
                if cached.error.is_none() {
                    core.manager.remove_exited_duplicates(&cached.status, keep).await;
                }
            });
        }
    }

    async fn housekeeping(&self) {
        if !self.sources_ready() {
            return;
        }
        let desired = lock(&self.core.pods).uids();
        let known = self.workers().sync_known_pods(&desired);
        // Pods gone for good: the event correlator's entries about them go too.
        self.core.recorder.forget_objects(known.forgotten);
        for uid in known.restart {
            // The UID was reused after it finished terminating: start it again.
            let pod = lock(&self.core.pods).get(&uid).cloned();
            if let Some(pod) = pod {
                if !pod.status.as_ref().is_some_and(|s| is_terminal(phase_of(s))) {
                    self.dispatch(pod, UpdateType::Create);
                }
            }
        }
        // Pods only the runtime knows: kill them.
        match self.core.manager.get_pods(false).await {
            Ok(running) => {
                for rp in running {
                    if desired.contains(&rp.uid) || self.workers().state(&rp.uid).is_some() {
                        continue;
                    }
                    self.workers().update_pod(
                        UpdatePodOptions {
                            update_type: UpdateType::Kill,
                            pod: None,
                            mirror_pod: None,
                            running_pod: Some(rp),
                            kill_grace: Some(ORPHAN_GRACE_SECONDS),
                        },
                        false,
                    );
                }
            }
            Err(e) => debug!(error = %e, "listing runtime pods for housekeeping failed"),
        }
        let known: HashSet<String> = desired;
        self.core.prober.cleanup_pods(&known);
        self.core
            .status
            .remove_orphaned_statuses(&|uid: &str| known.contains(uid));
        // Orphaned mirror pods, unless their static pod is still terminating.
        if let Some(mc) = &self.core.mirror {
            let orphans = lock(&self.core.pods).orphaned_mirrors();
            let terminating = if orphans.is_empty() {
                HashSet::new()
            } else {
                self.workers().terminating_full_names()
            };
            for m in orphans {
                let full = pod_full_name(&m);
                if terminating.contains(&full) {
                    continue;
                }
                let ns = m.metadata.namespace.as_deref().unwrap_or("default");
                let name = m.metadata.name.as_deref().unwrap_or_default();
                if let Err(e) = mc.delete_mirror_pod(ns, name, m.metadata.uid.as_deref()).await {
                    debug!(pod = %full, error = %e, "deleting orphaned mirror pod failed");
                }
            }
        }
        self.remove_orphaned_pod_cgroups(&known).await;
        // Volumes of pods neither a source nor a pod worker knows (e.g. deleted while keel was
        // down); a pod with a worker tears its own down when it terminates.
        let is_active = |uid: &str| known.contains(uid) || self.workers().state(uid).is_some();
        self.core.volumes.cleanup_orphans(&is_active).await;
        self.core.manager.backoff_gc();
    }

    /// `cleanupOrphanedPodCgroups`: pod cgroups of pods no source knows and whose worker (if
    /// any) cannot have running containers. One attempt each: busy ones are retried at the next
    /// housekeeping rather than stalling this one.
    async fn remove_orphaned_pod_cgroups(&self, desired: &HashSet<String>) {
        let uids = match self.core.cgroups.list() {
            Ok(u) => u,
            Err(e) => {
                debug!(error = %e, "listing pod cgroups failed");
                return;
            }
        };
        for uid in uids {
            if desired.contains(&uid)
                || self
                    .workers()
                    .state(&uid)
                    .is_some_and(|_| self.workers().could_have_running_containers(&uid))
            {
                continue;
            }
            if let Err(e) = self.core.cgroups.destroy(&uid, 1).await {
                debug!(pod_uid = %uid, error = %e, "removing orphaned pod cgroup failed; will retry");
            }
        }
    }

    async fn update_runtime_up(
        &self,
        health_tx: &watch::Sender<RuntimeHealth>,
        last_relist: Option<std::time::Instant>,
    ) {
        let mut h = health_tx.borrow().clone();
        h.last_relist = last_relist;
        match self.core.manager.runtime_status().await {
            Ok(st) => {
                h.last_runtime_ok = Some(std::time::Instant::now());
                let cond = |t: &str| st.conditions.iter().find(|c| c.r#type == t).cloned();
                match cond("RuntimeReady") {
                    Some(c) if c.status => {
                        h.runtime_ready = true;
                        h.runtime_error = None;
                    }
                    Some(c) => {
                        h.runtime_ready = false;
                        h.runtime_error = Some(format!("RuntimeReady=false reason:{} message:{}", c.reason, c.message));
                    }
                    None => {
                        h.runtime_ready = false;
                        h.runtime_error = Some("runtime status has no RuntimeReady condition".into());
                    }
                }
                match cond("NetworkReady") {
                    Some(c) if c.status => {
                        h.network_ready = true;
                        h.network_error = None;
                    }
                    Some(c) => {
                        h.network_ready = false;
                        h.network_error = Some(format!("NetworkReady=false reason:{} message:{}", c.reason, c.message));
                    }
                    None => {
                        h.network_ready = false;
                        h.network_error = Some("runtime status has no NetworkReady condition".into());
                    }
                }
            }
            Err(e) => {
                let down_for = h.last_runtime_ok.map(|t| t.elapsed());
                let down = down_for.is_none_or(|d| self.core.clock.to_virtual(d) >= RUNTIME_DOWN_AFTER);
                if down {
                    h.runtime_ready = false;
                    h.runtime_error = Some(format!("container runtime is down: {e}"));
                }
                debug!(error = %e, "runtime status call failed");
            }
        }
        if h.runtime_version.is_empty() {
            if let Ok(v) = self.core.manager.version().await {
                h.runtime_version = format!("{}://{}", v.runtime_name, v.runtime_version);
            }
        }
        health_tx.send_if_modified(|cur| {
            if *cur != h {
                *cur = h;
                true
            } else {
                false
            }
        });
    }

    fn spawn_gc(&self) {
        let ready = self.sources_ready();
        let core = self.core.clone();
        tokio::spawn(async move {
            if let Err(e) = core.collect_containers(ready).await {
                warn!(error = %e, "container garbage collection failed");
            }
        });
    }
}

/// The next probe update, or never when there is no receiver.
async fn recv_probe_update(rx: &mut Option<mpsc::Receiver<ProbeUpdate>>) -> Option<ProbeUpdate> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
