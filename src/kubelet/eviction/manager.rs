//! One synchronize round and the monitoring loop (`eviction_manager.go`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::rank::{self, stats_by_uid};
use super::thresholds::{self as th, NodeCondition, Observations, Signal, Threshold};
use super::EvictionError;
use crate::clock::Clock;
use crate::kubelet::admission::is_critical_pod;
use crate::kubelet::stats::types::Summary;

/// The kubelet's monitoring interval (`evictionMonitoringPeriod`).
pub const MONITORING_INTERVAL: Duration = Duration::from_secs(10);
/// How long to wait for an evicted pod's clean-up before the next round (`podCleanupTimeout`).
const POD_CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);
const POD_CLEANUP_POLL: Duration = Duration::from_secs(1);
/// Grace for pods evicted by a hard threshold (`immediateEvictionGracePeriodSeconds`).
const IMMEDIATE_GRACE_SECONDS: i64 = 1;
/// The status reason and event reason of an eviction.
pub const REASON: &str = "Evicted";

/// A warning that repeats every round under lasting pressure: logged once, then counted.
fn warn_repeated(kind: &str, object: &str) {
    use crate::repeats::{global, Verdict};
    match global().note(kind, object) {
        Verdict::Log { count } => warn!(count, "eviction manager: {kind}: {object}"),
        Verdict::Repeat { count } => debug!(count, "eviction manager: {kind}: {object}"),
    }
}

/// The settings a manager runs with.
#[derive(Clone, Debug)]
pub struct EvictionConfig {
    pub thresholds: Vec<Threshold>,
    /// `evictionMaxPodGracePeriod` (seconds), for soft evictions.
    pub max_pod_grace_period: i64,
    /// `evictionPressureTransitionPeriod`.
    pub pressure_transition_period: Duration,
}

/// The pressure conditions the manager reports, for node status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

impl Pressure {
    fn of(conds: &BTreeSet<NodeCondition>) -> Self {
        Self {
            memory: conds.contains(&NodeCondition::MemoryPressure),
            disk: conds.contains(&NodeCondition::DiskPressure),
            pid: conds.contains(&NodeCondition::PidPressure),
        }
    }
}

/// What the manager needs from the rest of keel.
#[async_trait]
pub trait EvictionHost: Send + Sync {
    /// The full summary (`summaryProvider.Get(updateStats=true)`).
    async fn summary(&self) -> Result<Summary, EvictionError>;
    /// Pods admitted and not known terminated (`GetActivePods`).
    fn active_pods(&self) -> Vec<Pod>;
    /// Whether the image filesystem is another device than the root dir's.
    async fn dedicated_image_fs(&self) -> Option<bool>;
    /// Removes dead containers (`DeleteAllUnusedContainers`).
    async fn delete_unused_containers(&self) -> Result<(), String>;
    /// Removes unused images (`DeleteUnusedImages`).
    async fn delete_unused_images(&self) -> Result<(), String>;
    /// Kills `pod` within `grace` seconds with status Failed/`reason`/`message`.
    fn kill_pod(&self, pod: &Pod, grace: i64, reason: &str, message: &str);
    /// A Warning event about the pod.
    fn pod_event(&self, pod: &Pod, reason: &str, message: &str);
    /// A Warning event about the node.
    fn node_event(&self, reason: &str, message: &str);
    /// The evicted pod's containers are gone and its worker is done.
    fn pod_cleaned_up(&self, uid: &str) -> bool;
}

#[derive(Default)]
struct State {
    /// Met thresholds and when each was first seen (virtual time since start).
    first_observed: Vec<(Threshold, Duration)>,
    conditions_last_observed: BTreeMap<NodeCondition, Duration>,
    /// Thresholds met past their grace period and not yet resolved past min reclaim.
    thresholds_met: Vec<Threshold>,
    last_observations: Observations,
    dedicated_image_fs: Option<bool>,
}

/// The eviction manager.
pub struct Manager {
    cfg: EvictionConfig,
    state: Mutex<State>,
    pressure: watch::Sender<Pressure>,
}

impl Manager {
    pub fn new(cfg: EvictionConfig) -> Self {
        Self {
            cfg,
            state: Mutex::default(),
            pressure: watch::channel(Pressure::default()).0,
        }
    }

    /// The pressure conditions as they change (node status reads them).
    pub fn pressure(&self) -> watch::Receiver<Pressure> {
        self.pressure.subscribe()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One round (`synchronize`) at virtual time `now`; returns the pod evicted, if any.
    pub async fn synchronize(&self, host: &dyn EvictionHost, now: Duration) -> Option<Pod> {
        if self.cfg.thresholds.is_empty() {
            return None;
        }
        let known = self.state().dedicated_image_fs;
        let dedicated = match known {
            Some(d) => d,
            None => {
                let d = host.dedicated_image_fs().await?;
                self.state().dedicated_image_fs = Some(d);
                d
            }
        };
        let active = host.active_pods();
        let summary = match host.summary().await {
            Ok(s) => s,
            Err(e) => {
                warn_repeated("failed to get summary stats", &e.to_string());
                return None;
            }
        };
        let obs = th::observations(&summary);
        let mut met = th::thresholds_met(&self.cfg.thresholds, &obs, false);
        let (thresholds, conditions) = {
            let mut st = self.state();
            if !st.thresholds_met.is_empty() {
                let unresolved = th::thresholds_met(&st.thresholds_met, &obs, true);
                met = th::merge(met, unresolved);
            }
            let first = th::first_observed_at(&met, &st.first_observed, now);
            let observed = th::node_conditions(&met);
            let last_seen = th::conditions_last_observed_at(&observed, &st.conditions_last_observed, now);
            let conditions = th::conditions_observed_since(&last_seen, self.cfg.pressure_transition_period, now);
            let ready = th::met_grace_period(&first, now);
            st.first_observed = first;
            st.conditions_last_observed = last_seen;
            st.thresholds_met = ready.clone();
            let updated = th::updated_stats(ready, &obs, &st.last_observations);
            st.last_observations = obs.clone();
            (updated, conditions)
        };
        self.pressure.send_if_modified(|p| {
            let new = Pressure::of(&conditions);
            let changed = *p != new;
            *p = new;
            changed
        });
        if thresholds.is_empty() {
            return None;
        }
        let mut thresholds = thresholds;
        th::sort_by_eviction_priority(&mut thresholds);
        let to_reclaim = thresholds[0].clone();
        let resource = to_reclaim.signal.resource();
        warn_repeated(
            "attempting to reclaim",
            &format!("{resource} ({})", th::describe(&to_reclaim)),
        );
        host.node_event("EvictionThresholdMet", &format!("Attempting to reclaim {resource}"));
        if self.reclaim_node_level(host, to_reclaim.signal, dedicated).await {
            info!(
                resource,
                "eviction manager: able to reduce pressure without evicting pods"
            );
            return None;
        }
        if active.is_empty() {
            warn_repeated("thresholds met, but no pods are active to evict", resource);
            return None;
        }
        let pods = summary.pods.unwrap_or_default();
        let stats = stats_by_uid(&pods);
        let mut ranked = active;
        rank::rank(to_reclaim.signal, &mut ranked, &stats, dedicated);
        debug!(
            pods = ?ranked.iter().filter_map(|p| p.metadata.name.as_deref()).collect::<Vec<_>>(),
            "eviction manager: pods ranked for eviction"
        );
        for pod in ranked {
            let grace = if to_reclaim.is_hard() {
                IMMEDIATE_GRACE_SECONDS
            } else {
                let spec = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30);
                self.cfg.max_pod_grace_period.min(spec)
            };
            let (message, _offending) = rank::message(resource, &pod, &stats, &thresholds, &obs);
            if is_critical_pod(&pod) {
                warn_repeated(
                    "cannot evict a critical pod",
                    pod.metadata.name.as_deref().unwrap_or_default(),
                );
                continue;
            }
            host.pod_event(&pod, REASON, &message);
            info!(pod = ?pod.metadata.name, namespace = ?pod.metadata.namespace, %message, "eviction manager: evicting pod");
            host.kill_pod(&pod, grace, REASON, &message);
            return Some(pod);
        }
        info!("eviction manager: unable to evict any pods from the node");
        None
    }

    /// `reclaimNodeLevelResources`: for disk signals, dead containers then unused images; true
    /// when afterwards no threshold is met (with its minimum reclaim).
    async fn reclaim_node_level(&self, host: &dyn EvictionHost, signal: Signal, dedicated: bool) -> bool {
        let disk = !matches!(signal, Signal::MemoryAvailable | Signal::PidAvailable);
        let nodefs = matches!(signal, Signal::NodeFsAvailable | Signal::NodeFsInodesFree);
        if !disk || (dedicated && nodefs) {
            return false;
        }
        if let Err(e) = host.delete_unused_containers().await {
            warn!(error = %e, "eviction manager: removing dead containers failed");
        }
        if let Err(e) = host.delete_unused_images().await {
            warn!(error = %e, "eviction manager: removing unused images failed");
        }
        match host.summary().await {
            Ok(s) => th::thresholds_met(&self.cfg.thresholds, &th::observations(&s), true).is_empty(),
            Err(_) => false,
        }
    }

    /// The monitoring loop: a round every 10 s (virtual), or after an eviction once the pod is
    /// cleaned up (at most 30 s).
    pub async fn run(
        self: std::sync::Arc<Self>,
        host: std::sync::Arc<dyn EvictionHost>,
        clock: Clock,
        shutdown: CancellationToken,
    ) {
        let start = clock.instant();
        for t in &self.cfg.thresholds {
            debug!(threshold = %th::describe(t), "eviction threshold");
        }
        loop {
            let now = clock.to_virtual(start.elapsed());
            let evicted = self.synchronize(host.as_ref(), now).await;
            match evicted {
                Some(pod) => {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    let deadline = clock.deadline(POD_CLEANUP_TIMEOUT);
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = clock.sleep(POD_CLEANUP_POLL) => {}
                        }
                        if host.pod_cleaned_up(&uid) {
                            break;
                        }
                        if tokio::time::Instant::now() >= deadline {
                            warn!(pod = ?pod.metadata.name, "eviction manager: timed out waiting for the evicted pod to be cleaned up");
                            break;
                        }
                    }
                }
                None => tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = clock.sleep(MONITORING_INTERVAL) => {}
                },
            }
        }
    }
}
