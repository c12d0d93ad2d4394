//! The remote CRI backend: a CRI v1 gRPC client over a unix socket (containerd, CRI-O...).
//!
//! Every seam call passes the CRI message through unchanged, under the kubelet's per-call
//! deadline (see [`calls`]). The channel connects lazily and reconnects on the next call after a
//! failure, so a restarted runtime is picked up without restarting keel: the manager sees
//! `Unavailable` while it is gone, exactly as the kubelet's remote runtime does.

pub mod calls;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tonic::transport::{Channel, Endpoint};

use crate::clock::Clock;
use crate::genericruntime::seam::{
    cri, Code, ContainerEventStream, ImageService, Result, RuntimeError, RuntimeService,
};
use calls::{with_deadline, Timeouts};
use cri::image_service_client::ImageServiceClient;
use cri::runtime_service_client::RuntimeServiceClient;

/// The CRI version string the kubelet sends and expects back (`kubeRuntimeAPIVersion`).
pub const KUBE_RUNTIME_API_VERSION: &str = "0.1.0";
/// The only `runtime_api_version` keel speaks.
pub const CRI_API_VERSION: &str = "v1";
/// The kubelet's gRPC message size limit (`maxMsgSize`, 16 MiB): list calls on a busy node
/// exceed tonic's 4 MiB default.
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Failures setting up or checking the connection (per-call failures are [`RuntimeError`]s).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("CRI socket path {path} is not valid UTF-8")]
    SocketPathNotUtf8 { path: PathBuf },
    #[error("invalid CRI endpoint for socket {path}")]
    Endpoint {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the CRI client must be created inside a tokio runtime")]
    NoTokioRuntime,
    #[error("no CRI runtime listening at {path}: {source}")]
    NotListening {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the runtime at {path} does not speak CRI v1 (it may only support v1alpha2)")]
    NotCriV1 {
        path: PathBuf,
        #[source]
        source: RuntimeError,
    },
    #[error("the runtime at {path} speaks CRI API {version:?}, keel needs {CRI_API_VERSION:?}")]
    UnsupportedApiVersion { path: PathBuf, version: String },
    #[error("the runtime at {path} answered Version with version {version:?}, expected {KUBE_RUNTIME_API_VERSION:?}")]
    UnexpectedVersion { path: PathBuf, version: String },
    #[error("CRI version handshake with {path} failed")]
    Handshake {
        path: PathBuf,
        #[source]
        source: RuntimeError,
    },
}

/// A CRI v1 runtime (and image service) reached over unix sockets.
pub struct CriRuntime {
    runtime_socket: PathBuf,
    image_socket: PathBuf,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    timeouts: Timeouts,
}

impl std::fmt::Debug for CriRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriRuntime")
            .field("runtime_socket", &self.runtime_socket)
            .field("image_socket", &self.image_socket)
            .finish_non_exhaustive()
    }
}

/// A lazily connecting channel to a unix socket.
fn lazy_channel(path: &Path) -> Result<Channel, Error> {
    let text = path
        .to_str()
        .ok_or_else(|| Error::SocketPathNotUtf8 { path: path.to_owned() })?;
    let endpoint = Endpoint::from_shared(format!("unix://{text}")).map_err(|source| Error::Endpoint {
        path: path.to_owned(),
        source,
    })?;
    // Creating a channel spawns its worker task: without a runtime tokio would panic.
    tokio::runtime::Handle::try_current().map_err(|_| Error::NoTokioRuntime)?;
    Ok(endpoint.connect_lazy())
}

impl CriRuntime {
    /// A client for the runtime at `runtime` (and the image service at `image`, default: the
    /// same socket). Nothing is dialled yet: call [`CriRuntime::handshake`] to check the runtime.
    /// Must be called inside a tokio runtime.
    pub fn connect(runtime: &Path, image: Option<&Path>, clock: Clock) -> Result<Arc<CriRuntime>, Error> {
        let image_path = image.unwrap_or(runtime);
        let runtime_channel = lazy_channel(runtime)?;
        let image_channel = if image_path == runtime {
            runtime_channel.clone()
        } else {
            lazy_channel(image_path)?
        };
        Ok(Arc::new(CriRuntime {
            runtime_socket: runtime.to_owned(),
            image_socket: image_path.to_owned(),
            runtime: RuntimeServiceClient::new(runtime_channel)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            images: ImageServiceClient::new(image_channel)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            timeouts: Timeouts::new(clock),
        }))
    }

    pub fn runtime_socket(&self) -> &Path {
        &self.runtime_socket
    }

    pub fn image_socket(&self) -> &Path {
        &self.image_socket
    }

    /// Checks that a CRI v1 runtime answers on the socket (the kubelet's start-up `Version`
    /// check): returns its Version answer (runtime name and version for the node status).
    pub async fn handshake(&self) -> Result<cri::VersionResponse, Error> {
        let path = &self.runtime_socket;
        // Dial once by hand: a missing socket or refused connection then reads as what it is,
        // with the io error, instead of a gRPC status.
        match tokio::net::UnixStream::connect(path).await {
            Ok(stream) => drop(stream),
            Err(source) => {
                return Err(Error::NotListening {
                    path: path.clone(),
                    source,
                })
            }
        }
        let answer = RuntimeService::version(
            self,
            cri::VersionRequest {
                version: KUBE_RUNTIME_API_VERSION.to_owned(),
            },
        )
        .await
        .map_err(|source| match source.code {
            // A v1alpha2-only runtime has no `runtime.v1.RuntimeService` at all.
            Code::Unimplemented => Error::NotCriV1 {
                path: path.clone(),
                source,
            },
            _ => Error::Handshake {
                path: path.clone(),
                source,
            },
        })?;
        check_version(path, answer)
    }

    fn rt(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    fn img(&self) -> ImageServiceClient<Channel> {
        self.images.clone()
    }
}

/// The kubelet's checks on a Version answer: CRI `v1`, and the version it asked for echoed back.
fn check_version(path: &Path, answer: cri::VersionResponse) -> Result<cri::VersionResponse, Error> {
    if answer.runtime_api_version != CRI_API_VERSION {
        return Err(Error::UnsupportedApiVersion {
            path: path.to_owned(),
            version: answer.runtime_api_version,
        });
    }
    if answer.version != KUBE_RUNTIME_API_VERSION {
        return Err(Error::UnexpectedVersion {
            path: path.to_owned(),
            version: answer.version,
        });
    }
    Ok(answer)
}

/// A request carrying `deadline` as its gRPC timeout too, so the runtime can give up on its side.
fn request<T>(message: T, deadline: Option<Duration>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Some(limit) = deadline {
        req.set_timeout(limit);
    }
    req
}

/// One unary call: `call!(client, socket, method, "Op", deadline, message)`.
macro_rules! call {
    ($client:expr, $socket:expr, $method:ident, $op:literal, $deadline:expr, $msg:expr) => {{
        let deadline: Option<Duration> = $deadline;
        let mut client = $client;
        with_deadline($op, $socket, deadline, async move {
            client
                .$method(request($msg, deadline))
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }};
}

macro_rules! rt_call {
    ($self:ident, $method:ident, $op:literal, $deadline:expr, $msg:expr) => {
        call!($self.rt(), &$self.runtime_socket, $method, $op, $deadline, $msg)
    };
}

macro_rules! img_call {
    ($self:ident, $method:ident, $op:literal, $deadline:expr, $msg:expr) => {
        call!($self.img(), &$self.image_socket, $method, $op, $deadline, $msg)
    };
}

#[async_trait]
impl RuntimeService for CriRuntime {
    async fn get_container_events(&self, req: cri::GetEventsRequest) -> Result<ContainerEventStream> {
        use futures::StreamExt;
        // No deadline: the stream lives as long as the runtime keeps it open. A Go gRPC server
        // sends its headers with the first event, so this may wait until something happens.
        let mut client = self.rt();
        let stream = with_deadline("GetContainerEvents", &self.runtime_socket, None, async move {
            client
                .get_container_events(request(req, None))
                .await
                .map(tonic::Response::into_inner)
        })
        .await?;
        Ok(stream
            .map(|r| r.map_err(|s| RuntimeError::from_status("GetContainerEvents", &s)))
            .boxed())
    }

    async fn version(&self, req: cri::VersionRequest) -> Result<cri::VersionResponse> {
        rt_call!(self, version, "Version", Some(self.timeouts.default_call()), req)
    }

    async fn status(&self, req: cri::StatusRequest) -> Result<cri::StatusResponse> {
        rt_call!(self, status, "Status", Some(self.timeouts.default_call()), req)
    }

    async fn run_pod_sandbox(&self, req: cri::RunPodSandboxRequest) -> Result<cri::RunPodSandboxResponse> {
        rt_call!(
            self,
            run_pod_sandbox,
            "RunPodSandbox",
            Some(self.timeouts.sandbox()),
            req
        )
    }

    async fn stop_pod_sandbox(&self, req: cri::StopPodSandboxRequest) -> Result<cri::StopPodSandboxResponse> {
        rt_call!(
            self,
            stop_pod_sandbox,
            "StopPodSandbox",
            Some(self.timeouts.sandbox()),
            req
        )
    }

    async fn remove_pod_sandbox(&self, req: cri::RemovePodSandboxRequest) -> Result<cri::RemovePodSandboxResponse> {
        rt_call!(
            self,
            remove_pod_sandbox,
            "RemovePodSandbox",
            Some(self.timeouts.sandbox()),
            req
        )
    }

    async fn pod_sandbox_status(&self, req: cri::PodSandboxStatusRequest) -> Result<cri::PodSandboxStatusResponse> {
        rt_call!(
            self,
            pod_sandbox_status,
            "PodSandboxStatus",
            Some(self.timeouts.default_call()),
            req
        )
    }

    async fn list_pod_sandbox(&self, req: cri::ListPodSandboxRequest) -> Result<cri::ListPodSandboxResponse> {
        rt_call!(
            self,
            list_pod_sandbox,
            "ListPodSandbox",
            Some(self.timeouts.default_call()),
            req
        )
    }

    async fn create_container(&self, req: cri::CreateContainerRequest) -> Result<cri::CreateContainerResponse> {
        rt_call!(
            self,
            create_container,
            "CreateContainer",
            Some(self.timeouts.default_call()),
            req
        )
    }

    async fn start_container(&self, req: cri::StartContainerRequest) -> Result<cri::StartContainerResponse> {
        rt_call!(
            self,
            start_container,
            "StartContainer",
            Some(self.timeouts.default_call()),
            req
        )
    }

    async fn stop_container(&self, req: cri::StopContainerRequest) -> Result<cri::StopContainerResponse> {
        let deadline = Some(self.timeouts.stop_container(req.timeout));
        rt_call!(self, stop_container, "StopContainer", deadline, req)
    }

    async fn remove_container(&self, req: cri::RemoveContainerRequest) -> Result<cri::RemoveContainerResponse> {
        rt_call!(
            self,
            remove_container,
            "RemoveContainer",
            Some(self.timeouts.default_call()),
            req
        )
    }

    async fn list_containers(&self, req: cri::ListContainersRequest) -> Result<cri::ListContainersResponse> {
        rt_call!(
            self,
            list_containers,
            "ListContainers",
            Some(self.timeouts.default_call()),
            req
        )
    }

    async fn container_status(&self, req: cri::ContainerStatusRequest) -> Result<cri::ContainerStatusResponse> {
        rt_call!(
            self,
            container_status,
            "ContainerStatus",
            Some(self.timeouts.default_call()),
            req
        )
    }

    async fn exec_sync(&self, req: cri::ExecSyncRequest) -> Result<cri::ExecSyncResponse> {
        let deadline = self.timeouts.exec_sync(req.timeout);
        rt_call!(self, exec_sync, "ExecSync", deadline, req)
    }

    async fn reopen_container_log(
        &self,
        req: cri::ReopenContainerLogRequest,
    ) -> Result<cri::ReopenContainerLogResponse> {
        rt_call!(
            self,
            reopen_container_log,
            "ReopenContainerLog",
            Some(self.timeouts.default_call()),
            req
        )
    }

    async fn exec(&self, req: cri::ExecRequest) -> Result<cri::ExecResponse> {
        rt_call!(self, exec, "Exec", Some(self.timeouts.default_call()), req)
    }

    async fn attach(&self, req: cri::AttachRequest) -> Result<cri::AttachResponse> {
        rt_call!(self, attach, "Attach", Some(self.timeouts.default_call()), req)
    }

    async fn port_forward(&self, req: cri::PortForwardRequest) -> Result<cri::PortForwardResponse> {
        rt_call!(
            self,
            port_forward,
            "PortForward",
            Some(self.timeouts.default_call()),
            req
        )
    }

    async fn list_container_stats(
        &self,
        req: cri::ListContainerStatsRequest,
    ) -> Result<cri::ListContainerStatsResponse> {
        rt_call!(
            self,
            list_container_stats,
            "ListContainerStats",
            Some(self.timeouts.default_call()),
            req
        )
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: cri::ListPodSandboxStatsRequest,
    ) -> Result<cri::ListPodSandboxStatsResponse> {
        rt_call!(
            self,
            list_pod_sandbox_stats,
            "ListPodSandboxStats",
            Some(self.timeouts.default_call()),
            req
        )
    }
}

#[async_trait]
impl ImageService for CriRuntime {
    async fn list_images(&self, req: cri::ListImagesRequest) -> Result<cri::ListImagesResponse> {
        img_call!(self, list_images, "ListImages", Some(self.timeouts.default_call()), req)
    }

    async fn image_status(&self, req: cri::ImageStatusRequest) -> Result<cri::ImageStatusResponse> {
        img_call!(
            self,
            image_status,
            "ImageStatus",
            Some(self.timeouts.default_call()),
            req
        )
    }

    async fn pull_image(&self, req: cri::PullImageRequest) -> Result<cri::PullImageResponse> {
        img_call!(self, pull_image, "PullImage", Some(self.timeouts.pull()), req)
    }

    async fn remove_image(&self, req: cri::RemoveImageRequest) -> Result<cri::RemoveImageResponse> {
        img_call!(
            self,
            remove_image,
            "RemoveImage",
            Some(self.timeouts.default_call()),
            req
        )
    }

    async fn image_fs_info(&self, req: cri::ImageFsInfoRequest) -> Result<cri::ImageFsInfoResponse> {
        img_call!(
            self,
            image_fs_info,
            "ImageFsInfo",
            Some(self.timeouts.default_call()),
            req
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_is_lazy_and_calls_fail_unavailable_naming_the_socket() {
        // A path nobody listens on (never created): no host state involved.
        let path = PathBuf::from(format!("/nonexistent-keel-test-{}/cri.sock", std::process::id()));
        let rt = CriRuntime::connect(&path, None, Clock::real()).unwrap();
        assert_eq!(rt.image_socket(), path.as_path());
        let err = rt
            .list_containers(cri::ListContainersRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::Unavailable, "{err}");
        assert_eq!(err.op, "ListContainers");
        assert!(err.message.contains(&path.display().to_string()), "{err}");
        let err = rt.image_status(cri::ImageStatusRequest::default()).await.unwrap_err();
        assert_eq!(err.code, Code::Unavailable, "{err}");

        let err = rt.handshake().await.unwrap_err();
        assert!(matches!(err, Error::NotListening { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("no CRI runtime listening at {}: ", path.display())),
            "{text}"
        );
    }

    #[test]
    fn version_answer_checks() {
        let path = Path::new("/run/cri.sock");
        let good = cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "containerd".into(),
            runtime_version: "1.6.20".into(),
            runtime_api_version: "v1".into(),
        };
        assert_eq!(check_version(path, good.clone()).unwrap(), good);

        let old = cri::VersionResponse {
            runtime_api_version: "v1alpha2".into(),
            ..good.clone()
        };
        let err = check_version(path, old).unwrap_err();
        assert!(matches!(&err, Error::UnsupportedApiVersion { version, .. } if version == "v1alpha2"));
        assert_eq!(
            err.to_string(),
            "the runtime at /run/cri.sock speaks CRI API \"v1alpha2\", keel needs \"v1\""
        );

        let odd = cri::VersionResponse {
            version: "0.2.0".into(),
            ..good
        };
        let err = check_version(path, odd).unwrap_err();
        assert!(matches!(&err, Error::UnexpectedVersion { version, .. } if version == "0.2.0"));
    }

    #[test]
    fn connect_outside_tokio_is_an_error_not_a_panic() {
        let err = CriRuntime::connect(Path::new("/run/x.sock"), None, Clock::real()).unwrap_err();
        assert!(matches!(err, Error::NoTokioRuntime), "{err:?}");
    }

    #[tokio::test]
    async fn non_utf8_socket_path_is_rejected() {
        use std::os::unix::ffi::OsStrExt;
        let path = Path::new(std::ffi::OsStr::from_bytes(b"/run/\xff.sock"));
        let err = CriRuntime::connect(path, None, Clock::real()).unwrap_err();
        assert!(matches!(err, Error::SocketPathNotUtf8 { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn separate_image_socket_is_used_for_images() {
        let rt = CriRuntime::connect(
            Path::new("/nonexistent-keel/runtime.sock"),
            Some(Path::new("/nonexistent-keel/image.sock")),
            Clock::real(),
        )
        .unwrap();
        let err = rt.list_images(cri::ListImagesRequest::default()).await.unwrap_err();
        assert!(err.message.contains("/nonexistent-keel/image.sock"), "{err}");
        let err = rt.status(cri::StatusRequest::default()).await.unwrap_err();
        assert!(err.message.contains("/nonexistent-keel/runtime.sock"), "{err}");
    }
}
