//! `RuntimeManager`: the kubelet's `kubeGenericRuntimeManager`.

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Secret};

use super::backoff::Backoff;
use super::gc::GcPolicy;
use super::hooks::HookRunner;
use super::sandbox::DnsSettings;
use super::seam::{cri, Code, Runtime, RuntimeError};
use super::types::*;
use super::{Error, Result};
use crate::clock::Clock;

/// The CRI version keel asks for and the API version it requires.
pub const CRI_VERSION: &str = "0.1.0";
pub const CRI_API_VERSION: &str = "v1";

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
    pub(super) runtime: Arc<dyn Runtime>,
    pub(super) cfg: ManagerConfig,
    pub(super) events: Arc<dyn EventSink>,
    pub(super) options: Arc<dyn RunOptionsProvider>,
    /// Crash-loop back-off, keyed per container definition.
    pub(super) crash_backoff: Backoff,
    /// Image-pull back-off, keyed `<uid>_<image>`.
    pub(super) image_backoff: Backoff,
    /// Serializes pulls when `serialize_image_pulls` (a tokio mutex: held across the pull).
    pub(super) pull_lock: tokio::sync::Mutex<()>,
    pub(super) dns: DnsSettings,
    pub(super) gc_policy: GcPolicy,
    pub(super) hooks: Option<Arc<dyn HookRunner>>,
    /// Containers being removed right now: eager deletion, pruning and periodic GC may pick the
    /// same dead container at once; the runtime then refuses the second removal.
    pub(super) removing: std::sync::Mutex<std::collections::HashSet<String>>,
    /// `maxParallelImagePulls` and `registryPullQPS`/`registryBurst` (see images.rs).
    pub(super) pull_limits: super::images::PullLimits,
    /// `seccompDefault`: a container with no seccomp profile gets RuntimeDefault.
    pub(super) seccomp_default: bool,
}

impl RuntimeManager {
    pub fn new(
        runtime: Arc<dyn Runtime>,
        cfg: ManagerConfig,
        events: Arc<dyn EventSink>,
        options: Arc<dyn RunOptionsProvider>,
    ) -> Self {
        let clock = cfg.clock;
        Self {
            runtime,
            cfg,
            events,
            options,
            crash_backoff: Backoff::kubelet_default(clock),
            image_backoff: Backoff::kubelet_default(clock),
            pull_lock: tokio::sync::Mutex::new(()),
            dns: DnsSettings::default(),
            gc_policy: GcPolicy::default(),
            hooks: None,
            removing: Default::default(),
            pull_limits: Default::default(),
            seccomp_default: false,
        }
    }

    /// Node DNS settings (`clusterDNS`, `clusterDomain`, `resolvConf`); without clusterDNS,
    /// ClusterFirst pods get the host's resolv.conf.
    #[must_use]
    pub fn with_image_pull_limits(mut self, limits: super::images::PullLimits) -> Self {
        self.pull_limits = limits;
        self
    }

    pub fn with_dns(mut self, dns: DnsSettings) -> Self {
        self.dns = dns;
        self
    }

    /// The kubelet's `seccompDefault`: containers with no seccomp profile get RuntimeDefault.
    #[must_use]
    pub fn with_seccomp_default(mut self, on: bool) -> Self {
        self.seccomp_default = on;
        self
    }

    /// Container GC policy (defaults: the kubelet's).
    #[must_use]
    pub fn with_gc_policy(mut self, policy: GcPolicy) -> Self {
        self.gc_policy = policy;
        self
    }

    /// The lifecycle-hook runner (postStart/preStop); without one, hooks are skipped.
    #[must_use]
    pub fn with_hook_runner(mut self, hooks: Arc<dyn HookRunner>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    pub fn dns(&self) -> &DnsSettings {
        &self.dns
    }

    /// The crash-loop back-off (the pod worker may ask when to requeue).
    pub fn crash_backoff(&self) -> &Backoff {
        &self.crash_backoff
    }

    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.cfg
    }

    /// CRI Version handshake (refuses anything but v1).
    pub async fn version(&self) -> Result<cri::VersionResponse> {
        let resp = self
            .runtime
            .version(cri::VersionRequest {
                version: CRI_VERSION.into(),
            })
            .await?;
        if resp.runtime_api_version != CRI_API_VERSION {
            return Err(Error::UnsupportedApiVersion {
                got: resp.runtime_api_version,
            });
        }
        Ok(resp)
    }

    /// CRI Status: RuntimeReady / NetworkReady conditions.
    pub async fn runtime_status(&self) -> Result<cri::RuntimeStatus> {
        let resp = self.runtime.status(cri::StatusRequest { verbose: false }).await?;
        resp.status
            .ok_or_else(|| RuntimeError::new("Status", Code::Internal, "runtime returned no status").into())
    }

    /// `GetPods(all)`: sandboxes and containers grouped by pod UID.
    pub async fn get_pods(&self, all: bool) -> Result<Vec<RunningPod>> {
        self.get_pods_impl(all).await
    }

    /// `GetPodStatus` (§1.1).
    pub async fn get_pod_status(&self, uid: &str, name: &str, namespace: &str) -> Result<PodStatus> {
        self.get_pod_status_impl(uid, name, namespace).await
    }

    /// `SyncPod` (§1.7): compute actions and carry them out.
    pub async fn sync_pod(
        &self,
        pod: &Pod,
        status: &PodStatus,
        pull_secrets: &[Secret],
        probes: &ProbeFailures,
    ) -> PodSyncResult {
        self.sync_pod_impl(pod, status, pull_secrets, probes).await
    }

    /// `KillPod` (§1.10): stop running containers in parallel, then every sandbox. `pod` is None for
    /// runtime-only pods (specs restored from labels).
    pub async fn kill_pod(&self, pod: Option<&Pod>, status: &PodStatus, grace_override: Option<i64>) -> PodSyncResult {
        self.kill_pod_impl(pod, status, grace_override).await
    }

    /// Container and sandbox GC (§1.13). `removable(uid)` says whether a pod's content may go.
    pub async fn garbage_collect(
        &self,
        removable: &(dyn Fn(&str) -> bool + Send + Sync),
        all_sources_ready: bool,
    ) -> Result<()> {
        self.garbage_collect_impl(removable, all_sources_ready).await
    }

    /// Eager deletion after ContainerDied: keep the newest `keep` exited instances per name.
    pub async fn remove_exited_duplicates(&self, status: &PodStatus, keep: usize) {
        self.remove_exited_duplicates_impl(status, keep).await
    }

    /// Drop back-off entries idle for more than 10 minutes (housekeeping).
    pub fn backoff_gc(&self) {
        self.crash_backoff.gc();
        self.image_backoff.gc();
    }
}
