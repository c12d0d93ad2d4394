//! `RuntimeManager`: the kubelet's `kubeGenericRuntimeManager`.

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Secret};

use super::seam::{cri, Runtime};
use super::types::*;
use super::Result;
use crate::clock::Clock;

/// Settings of the manager.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// `<name>` in `<name>://<id>` container IDs; taken from the runtime's Version.
    pub runtime_type: String,
    /// Root of pod log directories (`/var/log/pods`).
    pub pod_logs_dir: PathBuf,
    /// keel's root dir (`<root>/pods/<uid>/...`).
    pub root_dir: PathBuf,
    /// Pod cgroups live under this parent (cgroupfs driver), e.g. `/kubepods`.
    pub cgroup_root: String,
    pub serialize_image_pulls: bool,
    pub node_name: String,
    pub clock: Clock,
}

/// The generic runtime manager.
pub struct RuntimeManager {
    runtime: Arc<dyn Runtime>,
    cfg: ManagerConfig,
    events: Arc<dyn EventSink>,
    options: Arc<dyn RunOptionsProvider>,
}

impl RuntimeManager {
    pub fn new(
        runtime: Arc<dyn Runtime>,
        cfg: ManagerConfig,
        events: Arc<dyn EventSink>,
        options: Arc<dyn RunOptionsProvider>,
    ) -> Self {
        Self {
            runtime,
            cfg,
            events,
            options,
        }
    }

    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.cfg
    }

    /// CRI Version handshake (refuses anything but v1).
    pub async fn version(&self) -> Result<cri::VersionResponse> {
        todo!("H3")
    }

    /// CRI Status: RuntimeReady / NetworkReady conditions.
    pub async fn runtime_status(&self) -> Result<cri::RuntimeStatus> {
        todo!("H3")
    }

    /// `GetPods(all)`: sandboxes and containers grouped by pod UID.
    pub async fn get_pods(&self, all: bool) -> Result<Vec<RunningPod>> {
        todo!("H3")
    }

    /// `GetPodStatus` (§1.1).
    pub async fn get_pod_status(&self, uid: &str, name: &str, namespace: &str) -> Result<PodStatus> {
        todo!("H3")
    }

    /// `SyncPod` (§1.7): compute actions and carry them out.
    pub async fn sync_pod(
        &self,
        pod: &Pod,
        status: &PodStatus,
        pull_secrets: &[Secret],
        probes: &ProbeFailures,
    ) -> PodSyncResult {
        todo!("H3")
    }

    /// `KillPod` (§1.10): stop running containers in parallel, then every sandbox. `pod` is None for
    /// runtime-only pods (specs restored from labels).
    pub async fn kill_pod(&self, pod: Option<&Pod>, status: &PodStatus, grace_override: Option<i64>) -> PodSyncResult {
        todo!("H3")
    }

    /// Container and sandbox GC (§1.13). `removable(uid)` says whether a pod's content may go.
    pub async fn garbage_collect(
        &self,
        removable: &(dyn Fn(&str) -> bool + Send + Sync),
        all_sources_ready: bool,
    ) -> Result<()> {
        todo!("H3")
    }

    /// Eager deletion after ContainerDied: keep the newest `keep` exited instances per name.
    pub async fn remove_exited_duplicates(&self, status: &PodStatus, keep: usize) {
        todo!("H3")
    }

    /// Drop back-off entries idle for more than 10 minutes (housekeeping).
    pub fn backoff_gc(&self) {
        todo!("H3")
    }
}
