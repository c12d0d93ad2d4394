//! CRI v1 `RuntimeService` and `ImageService` over a backend's seam: the seam already speaks
//! CRI's messages, so each call is a pass-through with the error mapped to a gRPC status. What
//! the server adds: keel's identity in Version, a verbose Status, the single-object stats calls
//! (answered from the list calls), and the streaming URLs when the backend serves its streams
//! in process.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::genericruntime::seam::{cri, Code, Runtime, RuntimeError};
use crate::streaming::criserver::{StreamRequest, UrlIssuer};

use cri::image_service_server::ImageService as GrpcImageService;
use cri::runtime_service_server::RuntimeService as GrpcRuntimeService;

/// Runtime identity reported by Version.
pub const RUNTIME_NAME: &str = "keel";
pub const RUNTIME_API_VERSION: &str = "v1";
/// The kubelet runtime API version (the only one there is).
pub const KUBE_API_VERSION: &str = "0.1.0";

/// What `crictl info` shows under `config` (the verbose Status info).
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    /// The backend (`sim`).
    pub runtime: String,
    pub root_dir: String,
    pub listen: String,
    pub streaming_address: String,
}

/// The gRPC services.
pub struct CriService {
    backend: Arc<dyn Runtime>,
    streams: UrlIssuer,
    info: ServerInfo,
}

impl CriService {
    pub fn new(backend: Arc<dyn Runtime>, streams: UrlIssuer, info: ServerInfo) -> Arc<Self> {
        Arc::new(Self { backend, streams, info })
    }

    /// A container that can take a stream: containerd's checks and messages.
    async fn running_container(&self, op: &'static str, id: &str) -> Result<String, Status> {
        let status = self
            .backend
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .await
            .map_err(status_of)?
            .status
            .ok_or_else(|| not_found(op, format!("failed to find container {id:?} in store: not found")))?;
        if status.state != cri::ContainerState::ContainerRunning as i32 {
            let state = cri::ContainerState::try_from(status.state)
                .map(|s| s.as_str_name())
                .unwrap_or("CONTAINER_UNKNOWN");
            return Err(Status::unknown(format!("container is in {state} state")));
        }
        Ok(status.id)
    }
}

fn not_found(op: &'static str, message: String) -> Status {
    status_of(RuntimeError::not_found(op, message))
}

/// A seam error as the gRPC status a CRI client sees (the message without keel's call name).
pub fn status_of(e: RuntimeError) -> Status {
    let code = match e.code {
        Code::NotFound => tonic::Code::NotFound,
        Code::AlreadyExists => tonic::Code::AlreadyExists,
        Code::InvalidArgument => tonic::Code::InvalidArgument,
        Code::FailedPrecondition => tonic::Code::FailedPrecondition,
        Code::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        Code::Unavailable => tonic::Code::Unavailable,
        Code::Unimplemented => tonic::Code::Unimplemented,
        Code::Cancelled => tonic::Code::Cancelled,
        Code::ResourceExhausted => tonic::Code::ResourceExhausted,
        Code::Internal => tonic::Code::Internal,
        Code::Unknown => tonic::Code::Unknown,
    };
    Status::new(code, e.message)
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not implemented by keel's in-process runtime"))
}

fn invalid(message: &str) -> Status {
    Status::invalid_argument(message.to_string())
}

/// The image calls' one check: the image is named.
fn require_image(spec: Option<&cri::ImageSpec>) -> Result<(), Status> {
    if spec.is_none_or(|i| i.image.is_empty()) {
        return Err(invalid("image.image: must not be empty"));
    }
    Ok(())
}

/// `Ok(Response)` from a seam result.
fn answer<T>(r: Result<T, RuntimeError>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(status_of)
}

/// Writes `impl $trait for CriService` (through `tonic::async_trait`): the handlers written out
/// after the two lists, plus for `pass_through` a handler that hands the request to the
/// backend's method of the same name (the seam speaks CRI's messages) and maps its error, and
/// for `unimplemented` one that answers UNIMPLEMENTED naming the call.
macro_rules! grpc_service {
    (
        impl $trait:ident {
            pass_through { $($pass:ident: $pass_req:ident -> $pass_resp:ident,)* }
            unimplemented { $($none:ident: $none_req:ident -> $none_resp:ident = $what:literal,)* }
            $($handlers:tt)*
        }
    ) => {
        #[tonic::async_trait]
        impl $trait for CriService {
            $($handlers)*

            $(
                async fn $pass(&self, req: Request<cri::$pass_req>) -> Result<Response<cri::$pass_resp>, Status> {
                    answer(self.backend.$pass(req.into_inner()).await)
                }
            )*

            $(
                async fn $none(&self, _: Request<cri::$none_req>) -> Result<Response<cri::$none_resp>, Status> {
                    Err(unimplemented($what))
                }
            )*
        }
    };
}

grpc_service! {
    impl GrpcRuntimeService {
        pass_through {
            stop_pod_sandbox: StopPodSandboxRequest -> StopPodSandboxResponse,
            remove_pod_sandbox: RemovePodSandboxRequest -> RemovePodSandboxResponse,
            pod_sandbox_status: PodSandboxStatusRequest -> PodSandboxStatusResponse,
            list_pod_sandbox: ListPodSandboxRequest -> ListPodSandboxResponse,
            start_container: StartContainerRequest -> StartContainerResponse,
            stop_container: StopContainerRequest -> StopContainerResponse,
            remove_container: RemoveContainerRequest -> RemoveContainerResponse,
            list_containers: ListContainersRequest -> ListContainersResponse,
            container_status: ContainerStatusRequest -> ContainerStatusResponse,
            reopen_container_log: ReopenContainerLogRequest -> ReopenContainerLogResponse,
            exec_sync: ExecSyncRequest -> ExecSyncResponse,
            list_container_stats: ListContainerStatsRequest -> ListContainerStatsResponse,
            list_pod_sandbox_stats: ListPodSandboxStatsRequest -> ListPodSandboxStatsResponse,
        }
        unimplemented {
            update_container_resources: UpdateContainerResourcesRequest -> UpdateContainerResourcesResponse
                = "UpdateContainerResources",
            update_runtime_config: UpdateRuntimeConfigRequest -> UpdateRuntimeConfigResponse = "UpdateRuntimeConfig",
            checkpoint_container: CheckpointContainerRequest -> CheckpointContainerResponse = "CheckpointContainer",
            list_metric_descriptors: ListMetricDescriptorsRequest -> ListMetricDescriptorsResponse
                = "ListMetricDescriptors",
            list_pod_sandbox_metrics: ListPodSandboxMetricsRequest -> ListPodSandboxMetricsResponse
                = "ListPodSandboxMetrics",
            runtime_config: RuntimeConfigRequest -> RuntimeConfigResponse = "RuntimeConfig",
        }

        async fn version(&self, req: Request<cri::VersionRequest>) -> Result<Response<cri::VersionResponse>, Status> {
            // Asked for the backend's health: Version fails while the backend is unavailable.
            self.backend.version(req.into_inner()).await.map_err(status_of)?;
            Ok(Response::new(cri::VersionResponse {
                version: KUBE_API_VERSION.to_string(),
                runtime_name: RUNTIME_NAME.to_string(),
                runtime_version: env!("CARGO_PKG_VERSION").to_string(),
                runtime_api_version: RUNTIME_API_VERSION.to_string(),
            }))
        }

        async fn run_pod_sandbox(
            &self,
            req: Request<cri::RunPodSandboxRequest>,
        ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
            let req = req.into_inner();
            let Some(config) = &req.config else {
                return Err(invalid("config: the sandbox config is required"));
            };
            match &config.metadata {
                None => return Err(invalid("config.metadata: the sandbox config must include metadata")),
                Some(m) if m.name.is_empty() => return Err(invalid("config.metadata.name: must not be empty")),
                Some(_) => {}
            }
            answer(self.backend.run_pod_sandbox(req).await)
        }

        async fn create_container(
            &self,
            req: Request<cri::CreateContainerRequest>,
        ) -> Result<Response<cri::CreateContainerResponse>, Status> {
            let req = req.into_inner();
            if req.pod_sandbox_id.is_empty() {
                return Err(invalid("pod_sandbox_id: must not be empty"));
            }
            let Some(config) = &req.config else {
                return Err(invalid("config: the container config is required"));
            };
            match &config.metadata {
                None => return Err(invalid("config.metadata: the container config must include metadata")),
                Some(m) if m.name.is_empty() => return Err(invalid("config.metadata.name: must not be empty")),
                Some(_) => {}
            }
            if config.image.as_ref().is_none_or(|i| i.image.is_empty()) {
                return Err(invalid("config.image.image: the container config must name an image"));
            }
            answer(self.backend.create_container(req).await)
        }

        async fn exec(&self, req: Request<cri::ExecRequest>) -> Result<Response<cri::ExecResponse>, Status> {
            let req = req.into_inner();
            if self.backend.local_streams().is_none() {
                return answer(self.backend.exec(req).await);
            }
            // The kubelet's streaming server's validation (`validateExecRequest`).
            if req.cmd.is_empty() {
                return Err(invalid("cmd: must not be empty"));
            }
            if req.tty && req.stderr {
                return Err(invalid("tty and stderr cannot both be true"));
            }
            if !(req.stdin || req.stdout || req.stderr) {
                return Err(invalid("one of stdin, stdout, or stderr must be set"));
            }
            let container_id = self.running_container("Exec", &req.container_id).await?;
            let url = self
                .streams
                .issue("Exec", StreamRequest::Exec(cri::ExecRequest { container_id, ..req }))
                .map_err(status_of)?;
            Ok(Response::new(cri::ExecResponse { url }))
        }

        async fn attach(&self, req: Request<cri::AttachRequest>) -> Result<Response<cri::AttachResponse>, Status> {
            let req = req.into_inner();
            if self.backend.local_streams().is_none() {
                return answer(self.backend.attach(req).await);
            }
            if req.tty && req.stderr {
                return Err(invalid("tty and stderr cannot both be true"));
            }
            if !(req.stdin || req.stdout || req.stderr) {
                return Err(invalid("one of stdin, stdout, and stderr must be set"));
            }
            let container_id = self.running_container("Attach", &req.container_id).await?;
            let url = self
                .streams
                .issue(
                    "Attach",
                    StreamRequest::Attach(cri::AttachRequest { container_id, ..req }),
                )
                .map_err(status_of)?;
            Ok(Response::new(cri::AttachResponse { url }))
        }

        async fn port_forward(
            &self,
            req: Request<cri::PortForwardRequest>,
        ) -> Result<Response<cri::PortForwardResponse>, Status> {
            let req = req.into_inner();
            if self.backend.local_streams().is_none() {
                return answer(self.backend.port_forward(req).await);
            }
            if let Some(p) = req.port.iter().find(|p| u16::try_from(**p).map_or(true, |p| p == 0)) {
                return Err(invalid(&format!("port: {p} is not a valid port")));
            }
            let status = self
                .backend
                .pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: req.pod_sandbox_id.clone(),
                    verbose: false,
                })
                .await
                .map_err(status_of)?
                .status
                .ok_or_else(|| {
                    not_found(
                        "PortForward",
                        format!("failed to find sandbox {:?}: not found", req.pod_sandbox_id),
                    )
                })?;
            if status.state != cri::PodSandboxState::SandboxReady as i32 {
                return Err(Status::unknown("sandbox container is not running"));
            }
            let url = self
                .streams
                .issue(
                    "PortForward",
                    StreamRequest::PortForward(cri::PortForwardRequest {
                        pod_sandbox_id: status.id,
                        port: req.port,
                    }),
                )
                .map_err(status_of)?;
            Ok(Response::new(cri::PortForwardResponse { url }))
        }

        async fn container_stats(
            &self,
            req: Request<cri::ContainerStatsRequest>,
        ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
            let id = req.into_inner().container_id;
            // Resolves a unique prefix and answers NOT_FOUND for an unknown ID.
            let status = self
                .backend
                .container_status(cri::ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: false,
                })
                .await
                .map_err(status_of)?;
            let full = status.status.map(|s| s.id).unwrap_or(id);
            let stats = self
                .backend
                .list_container_stats(cri::ListContainerStatsRequest {
                    filter: Some(cri::ContainerStatsFilter {
                        id: full.clone(),
                        ..Default::default()
                    }),
                })
                .await
                .map_err(status_of)?
                .stats
                .into_iter()
                .next()
                .ok_or_else(|| {
                    not_found(
                        "ContainerStats",
                        format!("failed to find container {full:?}: not found"),
                    )
                })?;
            Ok(Response::new(cri::ContainerStatsResponse { stats: Some(stats) }))
        }

        async fn pod_sandbox_stats(
            &self,
            req: Request<cri::PodSandboxStatsRequest>,
        ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
            let id = req.into_inner().pod_sandbox_id;
            let status = self
                .backend
                .pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: id.clone(),
                    verbose: false,
                })
                .await
                .map_err(status_of)?;
            let full = status.status.map(|s| s.id).unwrap_or(id);
            let stats = self
                .backend
                .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
                    filter: Some(cri::PodSandboxStatsFilter {
                        id: full.clone(),
                        ..Default::default()
                    }),
                })
                .await
                .map_err(status_of)?
                .stats
                .into_iter()
                .next()
                .ok_or_else(|| not_found("PodSandboxStats", format!("failed to find sandbox {full:?}: not found")))?;
            Ok(Response::new(cri::PodSandboxStatsResponse { stats: Some(stats) }))
        }

        async fn status(&self, req: Request<cri::StatusRequest>) -> Result<Response<cri::StatusResponse>, Status> {
            let req = req.into_inner();
            let verbose = req.verbose;
            let mut resp = self.backend.status(req).await.map_err(status_of)?;
            if verbose {
                // Every value is JSON (crictl info decodes each one).
                let config = serde_json::to_string(&self.info).map_err(|e| Status::internal(e.to_string()))?;
                let mut info = HashMap::from([("config".to_string(), config)]);
                info.extend(std::mem::take(&mut resp.info));
                resp.info = info;
            }
            Ok(Response::new(resp))
        }

        type GetContainerEventsStream = futures::stream::Empty<Result<cri::ContainerEventResponse, Status>>;

        async fn get_container_events(
            &self,
            _: Request<cri::GetEventsRequest>,
        ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
            Err(unimplemented("GetContainerEvents"))
        }

    }
}

grpc_service! {
    impl GrpcImageService {
        pass_through {
            list_images: ListImagesRequest -> ListImagesResponse,
            image_fs_info: ImageFsInfoRequest -> ImageFsInfoResponse,
        }
        unimplemented {
        }


        async fn image_status(
            &self,
            req: Request<cri::ImageStatusRequest>,
        ) -> Result<Response<cri::ImageStatusResponse>, Status> {
            let req = req.into_inner();
            require_image(req.image.as_ref())?;
            answer(self.backend.image_status(req).await)
        }

        async fn pull_image(
            &self,
            req: Request<cri::PullImageRequest>,
        ) -> Result<Response<cri::PullImageResponse>, Status> {
            let req = req.into_inner();
            require_image(req.image.as_ref())?;
            answer(self.backend.pull_image(req).await)
        }

        async fn remove_image(
            &self,
            req: Request<cri::RemoveImageRequest>,
        ) -> Result<Response<cri::RemoveImageResponse>, Status> {
            let req = req.into_inner();
            require_image(req.image.as_ref())?;
            answer(self.backend.remove_image(req).await)
        }

    }
}
