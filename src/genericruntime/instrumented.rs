//! A [`Runtime`] that delegates every call to another and records its latency and failure in
//! keel's `/metrics` series, as the kubelet's `instrumentedRuntimeService`
//! (`kubelet_runtime_operations_duration_seconds`, `kubelet_runtime_operations_errors_total`,
//! `operation_type` in the kubelet's names: `run_podsandbox`, `list_podsandbox_stats`, ...).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::seam::{cri, ContainerEventStream, ImageService, Result, Runtime, RuntimeService};
use super::streams::LocalStreams;
use crate::metrics;

/// The wrapper installed around the backend in main.rs.
pub struct InstrumentedRuntime {
    inner: Arc<dyn Runtime>,
}

impl InstrumentedRuntime {
    pub fn new(inner: Arc<dyn Runtime>) -> Arc<Self> {
        Arc::new(Self { inner })
    }
}

fn record(op: &str, started: Instant, failed: bool) {
    metrics::global().runtime_operation(op, started.elapsed(), failed);
}

#[async_trait]
impl RuntimeService for InstrumentedRuntime {
    async fn version(&self, req: cri::VersionRequest) -> Result<cri::VersionResponse> {
        let started = Instant::now();
        let r = self.inner.version(req).await;
        record("version", started, r.is_err());
        r
    }

    async fn status(&self, req: cri::StatusRequest) -> Result<cri::StatusResponse> {
        let started = Instant::now();
        let r = self.inner.status(req).await;
        record("status", started, r.is_err());
        r
    }

    async fn run_pod_sandbox(&self, req: cri::RunPodSandboxRequest) -> Result<cri::RunPodSandboxResponse> {
        let started = Instant::now();
        let r = self.inner.run_pod_sandbox(req).await;
        record("run_podsandbox", started, r.is_err());
        r
    }

    async fn stop_pod_sandbox(&self, req: cri::StopPodSandboxRequest) -> Result<cri::StopPodSandboxResponse> {
        let started = Instant::now();
        let r = self.inner.stop_pod_sandbox(req).await;
        record("stop_podsandbox", started, r.is_err());
        r
    }

    async fn remove_pod_sandbox(&self, req: cri::RemovePodSandboxRequest) -> Result<cri::RemovePodSandboxResponse> {
        let started = Instant::now();
        let r = self.inner.remove_pod_sandbox(req).await;
        record("remove_podsandbox", started, r.is_err());
        r
    }

    async fn pod_sandbox_status(&self, req: cri::PodSandboxStatusRequest) -> Result<cri::PodSandboxStatusResponse> {
        let started = Instant::now();
        let r = self.inner.pod_sandbox_status(req).await;
        record("podsandbox_status", started, r.is_err());
        r
    }

    async fn list_pod_sandbox(&self, req: cri::ListPodSandboxRequest) -> Result<cri::ListPodSandboxResponse> {
        let started = Instant::now();
        let r = self.inner.list_pod_sandbox(req).await;
        record("list_podsandbox", started, r.is_err());
        r
    }

    async fn create_container(&self, req: cri::CreateContainerRequest) -> Result<cri::CreateContainerResponse> {
        let started = Instant::now();
        let r = self.inner.create_container(req).await;
        record("create_container", started, r.is_err());
        r
    }

    async fn start_container(&self, req: cri::StartContainerRequest) -> Result<cri::StartContainerResponse> {
        let started = Instant::now();
        let r = self.inner.start_container(req).await;
        record("start_container", started, r.is_err());
        r
    }

    async fn stop_container(&self, req: cri::StopContainerRequest) -> Result<cri::StopContainerResponse> {
        let started = Instant::now();
        let r = self.inner.stop_container(req).await;
        record("stop_container", started, r.is_err());
        r
    }

    async fn remove_container(&self, req: cri::RemoveContainerRequest) -> Result<cri::RemoveContainerResponse> {
        let started = Instant::now();
        let r = self.inner.remove_container(req).await;
        record("remove_container", started, r.is_err());
        r
    }

    async fn list_containers(&self, req: cri::ListContainersRequest) -> Result<cri::ListContainersResponse> {
        let started = Instant::now();
        let r = self.inner.list_containers(req).await;
        record("list_containers", started, r.is_err());
        r
    }

    async fn container_status(&self, req: cri::ContainerStatusRequest) -> Result<cri::ContainerStatusResponse> {
        let started = Instant::now();
        let r = self.inner.container_status(req).await;
        record("container_status", started, r.is_err());
        r
    }

    async fn exec_sync(&self, req: cri::ExecSyncRequest) -> Result<cri::ExecSyncResponse> {
        let started = Instant::now();
        let r = self.inner.exec_sync(req).await;
        record("exec_sync", started, r.is_err());
        r
    }

    async fn reopen_container_log(
        &self,
        req: cri::ReopenContainerLogRequest,
    ) -> Result<cri::ReopenContainerLogResponse> {
        let started = Instant::now();
        let r = self.inner.reopen_container_log(req).await;
        record("reopen_container_log", started, r.is_err());
        r
    }

    async fn exec(&self, req: cri::ExecRequest) -> Result<cri::ExecResponse> {
        let started = Instant::now();
        let r = self.inner.exec(req).await;
        record("exec", started, r.is_err());
        r
    }

    async fn attach(&self, req: cri::AttachRequest) -> Result<cri::AttachResponse> {
        let started = Instant::now();
        let r = self.inner.attach(req).await;
        record("attach", started, r.is_err());
        r
    }

    async fn port_forward(&self, req: cri::PortForwardRequest) -> Result<cri::PortForwardResponse> {
        let started = Instant::now();
        let r = self.inner.port_forward(req).await;
        record("port_forward", started, r.is_err());
        r
    }

    async fn list_container_stats(
        &self,
        req: cri::ListContainerStatsRequest,
    ) -> Result<cri::ListContainerStatsResponse> {
        let started = Instant::now();
        let r = self.inner.list_container_stats(req).await;
        record("list_container_stats", started, r.is_err());
        r
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: cri::ListPodSandboxStatsRequest,
    ) -> Result<cri::ListPodSandboxStatsResponse> {
        let started = Instant::now();
        let r = self.inner.list_pod_sandbox_stats(req).await;
        record("list_podsandbox_stats", started, r.is_err());
        r
    }

    async fn get_container_events(&self, req: cri::GetEventsRequest) -> Result<ContainerEventStream> {
        let started = Instant::now();
        let r = self.inner.get_container_events(req).await;
        record("get_container_events", started, r.is_err());
        r
    }

    fn local_streams(&self) -> Option<Arc<dyn LocalStreams>> {
        self.inner.local_streams()
    }
}

#[async_trait]
impl ImageService for InstrumentedRuntime {
    async fn list_images(&self, req: cri::ListImagesRequest) -> Result<cri::ListImagesResponse> {
        let started = Instant::now();
        let r = self.inner.list_images(req).await;
        record("list_images", started, r.is_err());
        r
    }

    async fn image_status(&self, req: cri::ImageStatusRequest) -> Result<cri::ImageStatusResponse> {
        let started = Instant::now();
        let r = self.inner.image_status(req).await;
        record("image_status", started, r.is_err());
        r
    }

    async fn pull_image(&self, req: cri::PullImageRequest) -> Result<cri::PullImageResponse> {
        let started = Instant::now();
        let r = self.inner.pull_image(req).await;
        record("pull_image", started, r.is_err());
        r
    }

    async fn pull_image_with_progress(
        &self,
        req: cri::PullImageRequest,
        progress: std::sync::Arc<super::seam::PullProgress>,
    ) -> Result<cri::PullImageResponse> {
        let started = Instant::now();
        let r = self.inner.pull_image_with_progress(req, progress).await;
        record("pull_image", started, r.is_err());
        r
    }

    async fn remove_image(&self, req: cri::RemoveImageRequest) -> Result<cri::RemoveImageResponse> {
        let started = Instant::now();
        let r = self.inner.remove_image(req).await;
        record("remove_image", started, r.is_err());
        r
    }

    async fn image_fs_info(&self, req: cri::ImageFsInfoRequest) -> Result<cri::ImageFsInfoResponse> {
        let started = Instant::now();
        let r = self.inner.image_fs_info(req).await;
        record("image_fs_info", started, r.is_err());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::sim::{SimConfig, SimRuntime};
    use crate::clock::Clock;

    #[tokio::test]
    async fn calls_pass_through_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let sim = SimRuntime::new(SimConfig::default(), Clock::real(), dir.path().join("sim")).unwrap();
        let rt = InstrumentedRuntime::new(sim.clone());
        let labels = metrics::OperationLabels {
            operation_type: "container_status".into(),
        };
        let errors = || metrics::global().runtime_operations_errors.get_or_create(&labels).get();
        let before = errors();
        let v = rt.version(Default::default()).await.unwrap();
        assert_eq!(v.runtime_name, "sim");
        // A failing call is an error to the caller and in the series.
        let e = rt
            .container_status(cri::ContainerStatusRequest {
                container_id: "missing".into(),
                verbose: false,
            })
            .await
            .unwrap_err();
        assert!(e.is_not_found());
        assert!(errors() > before);
        let text = metrics::global().encode().unwrap();
        assert!(text.contains("operation_type=\"version\""), "{text}");
        assert_eq!(rt.local_streams().is_some(), sim.local_streams().is_some());
    }
}
