//! The runtime manager's view of pods (the kubelet's `kubecontainer` types), the results of a
//! sync, and the two narrow interfaces the manager needs from the kubelet around it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::seam::cri;

/// Internal container state (CRI CREATED/RUNNING/EXITED/UNKNOWN).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

/// One container instance as the runtime reports it, decoded from CRI labels/annotations.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerStatus {
    /// Runtime ID without the `<type>://` prefix.
    pub id: String,
    /// Runtime name used as the ID prefix in the API (`containerd://…`, `sim://…`).
    pub runtime_type: String,
    pub name: String,
    pub state: ContainerState,
    pub created_at: Timestamp,
    /// Set unless the state is Created.
    pub started_at: Option<Timestamp>,
    /// Set only when Exited.
    pub finished_at: Option<Timestamp>,
    pub exit_code: i32,
    /// The image as the spec named it (CRI `image.image`).
    pub image: String,
    /// The image reference/ID (CRI `image_ref`), shown as `imageID`.
    pub image_ref: String,
    /// Container spec hash from the annotation.
    pub hash: u64,
    pub restart_count: i32,
    /// CRI reason (Completed, Error, OOMKilled, StartError…); only when Exited.
    pub reason: String,
    /// CRI message plus the termination message (§1.15); only when Exited.
    pub message: String,
    pub sandbox_id: String,
}

impl ContainerStatus {
    /// `<runtime type>://<id>`, as the API shows it.
    pub fn container_id(&self) -> String {
        format!("{}://{}", self.runtime_type, self.id)
    }
}

/// Everything the runtime knows about one pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodStatus {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// Pod IPs from the newest READY sandbox.
    pub ips: Vec<String>,
    /// Newest first by creation time.
    pub container_statuses: Vec<ContainerStatus>,
    /// Newest first by creation time.
    pub sandbox_statuses: Vec<cri::PodSandboxStatus>,
}

impl PodStatus {
    /// The most recent instance of the named container.
    pub fn find_container_status(&self, name: &str) -> Option<&ContainerStatus> {
        self.container_statuses.iter().find(|c| c.name == name)
    }

    /// All instances of the named container, newest first.
    pub fn container_statuses_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ContainerStatus> + 'a {
        self.container_statuses.iter().filter(move |c| c.name == name)
    }

    /// True if any container runs or any sandbox is READY.
    pub fn has_running(&self) -> bool {
        self.container_statuses
            .iter()
            .any(|c| c.state == ContainerState::Running)
            || self
                .sandbox_statuses
                .iter()
                .any(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
    }
}

/// A container or sandbox as `GetPods` lists it (for PLEG and orphan cleanup).
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeObject {
    pub id: String,
    pub name: String,
    pub state: ContainerState,
    pub created_at: i64,
}

/// A pod as found in the runtime, grouped by pod UID (`GetPods`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunningPod {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub containers: Vec<RuntimeObject>,
    /// Sandboxes: READY counts as Running, NOTREADY as Exited.
    pub sandboxes: Vec<RuntimeObject>,
}

/// What a sync step did (`kubecontainer.SyncAction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncAction {
    StartContainer,
    KillContainer,
    CreatePodSandbox,
    ConfigPodSandbox,
    KillPodSandbox,
}

/// The reason a step failed, named as the kubelet names it (these become waiting reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncErrorKind {
    CrashLoopBackOff,
    ErrImagePull,
    ImagePullBackOff,
    ErrImageNeverPull,
    InvalidImageName,
    ImageInspectError,
    RegistryUnavailable,
    CreateContainerConfigError,
    CreateContainerError,
    RunContainerError,
    PreStartHookError,
    PostStartHookError,
    KillContainerError,
    CreatePodSandboxError,
    ConfigPodSandboxError,
    KillPodSandboxError,
}

impl SyncErrorKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::CrashLoopBackOff => "CrashLoopBackOff",
            Self::ErrImagePull => "ErrImagePull",
            Self::ImagePullBackOff => "ImagePullBackOff",
            Self::ErrImageNeverPull => "ErrImageNeverPull",
            Self::InvalidImageName => "InvalidImageName",
            Self::ImageInspectError => "ImageInspectError",
            Self::RegistryUnavailable => "RegistryUnavailable",
            Self::CreateContainerConfigError => "CreateContainerConfigError",
            Self::CreateContainerError => "CreateContainerError",
            Self::RunContainerError => "RunContainerError",
            Self::PreStartHookError => "PreStartHookError",
            Self::PostStartHookError => "PostStartHookError",
            Self::KillContainerError => "KillContainerError",
            Self::CreatePodSandboxError => "CreatePodSandboxError",
            Self::ConfigPodSandboxError => "ConfigPodSandboxError",
            Self::KillPodSandboxError => "KillPodSandboxError",
        }
    }

    /// Back-off waits are expected states, not failures worth a retry storm.
    pub fn is_backoff(&self) -> bool {
        matches!(self, Self::CrashLoopBackOff | Self::ImagePullBackOff)
    }
}

/// One step of a sync and how it ended.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncResult {
    pub action: SyncAction,
    /// Container name, sandbox ID or pod full name, depending on the action.
    pub target: String,
    pub error: Option<(SyncErrorKind, String)>,
}

/// Everything one SyncPod/KillPod did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodSyncResult {
    pub results: Vec<SyncResult>,
}

impl PodSyncResult {
    pub fn push(&mut self, r: SyncResult) {
        self.results.push(r);
    }

    /// The first failed step, if any.
    pub fn first_error(&self) -> Option<&SyncResult> {
        self.results.iter().find(|r| r.error.is_some())
    }

    /// StartContainer results by container name (feeds the kubelet's reason cache).
    pub fn start_results(&self) -> impl Iterator<Item = &SyncResult> {
        self.results.iter().filter(|r| r.action == SyncAction::StartContainer)
    }
}

/// Event type, as the API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(&self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Where the manager's events go (the kubelet's recorder posts them to the API).
pub trait EventSink: Send + Sync {
    /// An event about a pod; `field_path` is `spec.containers{name}` /
    /// `spec.initContainers{name}` for container events, None for pod events.
    fn pod_event(&self, pod: &Pod, field_path: Option<String>, kind: EventType, reason: &str, message: String);
}

/// An EventSink that drops everything (unit tests, standalone without a recorder).
pub struct NoEvents;
impl EventSink for NoEvents {
    fn pod_event(&self, _: &Pod, _: Option<String>, _: EventType, _: &str, _: String) {}
}

/// What the kubelet resolves for a container before it is created (`RunContainerOptions`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunContainerOptions {
    /// Final environment, in order.
    pub envs: Vec<(String, String)>,
    pub mounts: Vec<cri::Mount>,
    pub hostname: String,
}

/// A container's config could not be generated (becomes CreateContainerConfigError).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The kubelet side of container config generation: env, mounts, hostname.
#[async_trait::async_trait]
pub trait RunOptionsProvider: Send + Sync {
    async fn run_container_options(
        &self,
        pod: &Pod,
        container: &Container,
        pod_ips: &[String],
    ) -> Result<RunContainerOptions, ConfigError>;
}

/// Results of liveness/startup probes the sync must act on (container ID → failed probe).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeFailures {
    /// Container IDs whose liveness probe reports Failure.
    pub liveness: BTreeMap<String, ()>,
    /// Container IDs whose startup probe reports Failure.
    pub startup: BTreeMap<String, ()>,
    /// Container IDs whose startup probe reports Success (a sidecar with a startup probe counts
    /// as initialized only then).
    pub startup_succeeded: BTreeMap<String, ()>,
}
