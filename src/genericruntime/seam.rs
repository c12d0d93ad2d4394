//! The seam every backend implements, modeled on CRI v1 `RuntimeService` + `ImageService`.
//!
//! The methods take and return CRI's own generated messages, so the remote backend is a thin
//! pass-through and the in-process backends speak exactly what containerd speaks. The streaming
//! calls (Exec, Attach, PortForward) return a URL of the runtime's own streaming server, which the
//! kubelet server proxies to; a backend that runs processes in this process offers
//! [`RuntimeService::local_streams`] instead and the kubelet server speaks the protocols itself.

use std::sync::Arc;

use async_trait::async_trait;
pub use k8s_cri::v1 as cri;

use super::streams::LocalStreams;

/// gRPC-style status code of a failed runtime call (the subset keel distinguishes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    NotFound,
    AlreadyExists,
    InvalidArgument,
    FailedPrecondition,
    DeadlineExceeded,
    Unavailable,
    Unimplemented,
    Cancelled,
    ResourceExhausted,
    Internal,
    Unknown,
}

impl From<tonic::Code> for Code {
    fn from(c: tonic::Code) -> Self {
        match c {
            tonic::Code::NotFound => Code::NotFound,
            tonic::Code::AlreadyExists => Code::AlreadyExists,
            tonic::Code::InvalidArgument => Code::InvalidArgument,
            tonic::Code::FailedPrecondition => Code::FailedPrecondition,
            tonic::Code::DeadlineExceeded => Code::DeadlineExceeded,
            tonic::Code::Unavailable => Code::Unavailable,
            tonic::Code::Unimplemented => Code::Unimplemented,
            tonic::Code::Cancelled => Code::Cancelled,
            tonic::Code::ResourceExhausted => Code::ResourceExhausted,
            tonic::Code::Internal => Code::Internal,
            _ => Code::Unknown,
        }
    }
}

/// A runtime call that failed: which call, the status code, and the runtime's message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{op} failed: {code:?}: {message}")]
pub struct RuntimeError {
    pub op: &'static str,
    pub code: Code,
    pub message: String,
}

impl RuntimeError {
    pub fn new(op: &'static str, code: Code, message: impl Into<String>) -> Self {
        Self {
            op,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(op: &'static str, message: impl Into<String>) -> Self {
        Self::new(op, Code::NotFound, message)
    }

    pub fn is_not_found(&self) -> bool {
        self.code == Code::NotFound
    }

    pub fn from_status(op: &'static str, status: &tonic::Status) -> Self {
        Self::new(op, status.code().into(), status.message())
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// The runtime's container events (CRI `GetContainerEvents`): created, started, stopped, deleted.
pub type ContainerEventStream = futures::stream::BoxStream<'static, Result<cri::ContainerEventResponse>>;

/// CRI v1 RuntimeService (the calls the node agent drives).
#[async_trait]
pub trait RuntimeService: Send + Sync {
    async fn version(&self, req: cri::VersionRequest) -> Result<cri::VersionResponse>;
    async fn status(&self, req: cri::StatusRequest) -> Result<cri::StatusResponse>;

    async fn run_pod_sandbox(&self, req: cri::RunPodSandboxRequest) -> Result<cri::RunPodSandboxResponse>;
    async fn stop_pod_sandbox(&self, req: cri::StopPodSandboxRequest) -> Result<cri::StopPodSandboxResponse>;
    async fn remove_pod_sandbox(&self, req: cri::RemovePodSandboxRequest) -> Result<cri::RemovePodSandboxResponse>;
    async fn pod_sandbox_status(&self, req: cri::PodSandboxStatusRequest) -> Result<cri::PodSandboxStatusResponse>;
    async fn list_pod_sandbox(&self, req: cri::ListPodSandboxRequest) -> Result<cri::ListPodSandboxResponse>;

    async fn create_container(&self, req: cri::CreateContainerRequest) -> Result<cri::CreateContainerResponse>;
    async fn start_container(&self, req: cri::StartContainerRequest) -> Result<cri::StartContainerResponse>;
    async fn stop_container(&self, req: cri::StopContainerRequest) -> Result<cri::StopContainerResponse>;
    async fn remove_container(&self, req: cri::RemoveContainerRequest) -> Result<cri::RemoveContainerResponse>;
    async fn list_containers(&self, req: cri::ListContainersRequest) -> Result<cri::ListContainersResponse>;
    async fn container_status(&self, req: cri::ContainerStatusRequest) -> Result<cri::ContainerStatusResponse>;
    async fn exec_sync(&self, req: cri::ExecSyncRequest) -> Result<cri::ExecSyncResponse>;
    async fn reopen_container_log(
        &self,
        req: cri::ReopenContainerLogRequest,
    ) -> Result<cri::ReopenContainerLogResponse>;

    /// A one-shot URL on the runtime's streaming server (containerd: `http://127.0.0.1:PORT/exec/TOKEN`).
    async fn exec(&self, req: cri::ExecRequest) -> Result<cri::ExecResponse>;
    async fn attach(&self, req: cri::AttachRequest) -> Result<cri::AttachResponse>;
    async fn port_forward(&self, req: cri::PortForwardRequest) -> Result<cri::PortForwardResponse>;

    async fn list_container_stats(
        &self,
        req: cri::ListContainerStatsRequest,
    ) -> Result<cri::ListContainerStatsResponse>;
    async fn list_pod_sandbox_stats(
        &self,
        req: cri::ListPodSandboxStatsRequest,
    ) -> Result<cri::ListPodSandboxStatsResponse>;

    /// CRI `GetContainerEvents`: a stream of container lifecycle events. Runtimes without it
    /// (containerd 1.6) answer Unimplemented and keel relies on relisting alone.
    async fn get_container_events(&self, _req: cri::GetEventsRequest) -> Result<ContainerEventStream> {
        Err(RuntimeError::new(
            "GetContainerEvents",
            Code::Unimplemented,
            "the runtime offers no container events",
        ))
    }

    /// Streams served in this process (no streaming URL). `None`: use [`RuntimeService::exec`] and
    /// friends and proxy to the URL.
    fn local_streams(&self) -> Option<Arc<dyn LocalStreams>> {
        None
    }
}

/// Bytes of a running pull, written by the backend and read by whoever reports progress (the
/// manager's pull events, `keel images pull`'s bar). `total` may grow as layers become known.
#[derive(Debug, Default)]
pub struct PullProgress {
    pub done: std::sync::atomic::AtomicU64,
    pub total: std::sync::atomic::AtomicU64,
}

/// CRI v1 ImageService.
#[async_trait]
pub trait ImageService: Send + Sync {
    async fn list_images(&self, req: cri::ListImagesRequest) -> Result<cri::ListImagesResponse>;
    async fn image_status(&self, req: cri::ImageStatusRequest) -> Result<cri::ImageStatusResponse>;
    async fn pull_image(&self, req: cri::PullImageRequest) -> Result<cri::PullImageResponse>;
    async fn remove_image(&self, req: cri::RemoveImageRequest) -> Result<cri::RemoveImageResponse>;
    async fn image_fs_info(&self, req: cri::ImageFsInfoRequest) -> Result<cri::ImageFsInfoResponse>;

    /// PullImage that also reports bytes as they arrive. Backends that cannot tell (CRI has no
    /// progress) keep this default and `progress` stays at zero.
    async fn pull_image_with_progress(
        &self,
        req: cri::PullImageRequest,
        progress: Arc<PullProgress>,
    ) -> Result<cri::PullImageResponse> {
        let _ = progress;
        self.pull_image(req).await
    }
}

/// A backend: both services. `--image-service-endpoint` may later split them; the manager only
/// needs one object that answers both.
pub trait Runtime: RuntimeService + ImageService {}
impl<T: RuntimeService + ImageService> Runtime for T {}
