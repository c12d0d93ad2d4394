//! The native backend: real containers with no container daemon. keel's own image service
//! (pull, import, unpack, store), pod sandboxes with pinned namespaces and CNI, and containers
//! run by runc under a small per-container monitor (keel's own binary re-executed), behind the
//! same CRI-shaped seam as the other backends.
//!
//! State: `<root_dir>/native/{images,sandboxes,containers}`; `<run_dir>` (a tmpfs, default
//! `/run/keel`) holds the pinned namespaces, the monitors' sockets and runc's root.

pub mod container;
pub mod exec;
pub mod images;
pub mod monitor;
pub mod rootfs;
pub mod runc;
pub mod sandbox;
pub mod seccomp;
pub mod spec;
mod stats;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;

use crate::backends::common::EventHub;
use crate::genericruntime::seam::{
    cri, Code, ContainerEventStream, ImageService, PullProgress, Result as RtResult, RuntimeError, RuntimeService,
};
use crate::genericruntime::streams::{BoxedIo, LocalStreams, ProcessIo};
use container::{ContainerRecord, Containers, CreateInput, RUNNING};
use images::NativeImages;
use sandbox::{SandboxRecord, SandboxState, Sandboxes};

/// Runtime identity reported by Version.
pub const RUNTIME_NAME: &str = "keel-native";
pub const RUNTIME_API_VERSION: &str = "v1";
const KUBE_API_VERSION: &str = "0.1.0";

/// Default `--native-run-dir` (a tmpfs: gone after a reboot, as the kubelet's pods are).
pub const DEFAULT_RUN_DIR: &str = "/run/keel";
/// Default `--cni-conf-dir` (the kubelet's).
pub const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// Default `--cni-bin-dir`s: the kubelet's, then where Debian installs the plugins.
pub const DEFAULT_CNI_BIN_DIRS: [&str; 2] = ["/opt/cni/bin", "/usr/lib/cni"];

/// How the native backend is set up (filled from keel's flags).
#[derive(Clone, Debug)]
pub struct NativeConfig {
    /// keel's `--root-dir`; state under `<root_dir>/native/…`.
    pub root_dir: PathBuf,
    /// `--native-run-dir`: pinned namespaces, monitor sockets, runc root. Keep it short (unix
    /// socket paths must stay under 108 bytes).
    pub run_dir: PathBuf,
    /// `--runc`: the runc binary.
    pub runc: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    pub registry_config_dir: Option<PathBuf>,
    /// The binary re-executed as the monitor (and pause process): `std::env::current_exe()`.
    pub keel_exe: PathBuf,
    /// Only for shareProcessNamespace pods; `None`: keel's own binary is the pause process.
    pub pause_image: Option<String>,
}

impl NativeConfig {
    /// The defaults for `root_dir`: runc from `PATH`, the kubelet's CNI dirs, this binary.
    pub fn with_defaults(root_dir: PathBuf) -> Self {
        Self {
            root_dir,
            run_dir: PathBuf::from(DEFAULT_RUN_DIR),
            runc: find_on_path("runc").unwrap_or_else(|| PathBuf::from("runc")),
            cni_conf_dir: PathBuf::from(DEFAULT_CNI_CONF_DIR),
            cni_bin_dirs: DEFAULT_CNI_BIN_DIRS.iter().map(PathBuf::from).collect(),
            registry_config_dir: None,
            keel_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("keel")),
            pause_image: None,
        }
    }
}

/// `name` in `PATH` (and the sbin dirs, which a non-login root shell may lack).
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Errors starting the native backend.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("opening the native image store: {0}")]
    Images(#[from] images::store::StoreError),
    #[error("opening the native sandboxes: {0}")]
    Sandboxes(#[from] sandbox::SandboxError),
    #[error("opening the native containers: {0}")]
    Containers(#[from] container::ContainerError),
    #[error("the runc binary {0:?} is not there (--runc)")]
    NoRunc(PathBuf),
    #[error("starting the native backend: {0}")]
    Task(String),
}

/// The native runtime: CRI RuntimeService + ImageService in process.
pub struct NativeRuntime {
    me: Weak<NativeRuntime>,
    images: NativeImages,
    sandboxes: Arc<Sandboxes>,
    containers: Arc<Containers>,
    events: Arc<EventHub>,
    /// Previous CPU samples, for `usage_nano_cores`.
    cpu: sandbox::CpuRates,
}

impl std::fmt::Debug for NativeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeRuntime").finish_non_exhaustive()
    }
}

fn sandbox_view(rec: &SandboxRecord) -> spec::SandboxView {
    spec::SandboxView {
        id: rec.id.clone(),
        config: rec.config.clone(),
        netns: rec.netns.clone(),
        ipcns: rec.ipcns.clone(),
        utsns: rec.utsns.clone(),
        pidns: rec.pidns.clone(),
        hostname_file: Some(rec.hostname_file.clone()),
        hosts_file: Some(rec.hosts_file.clone()),
        resolv_file: Some(rec.resolv_file.clone()),
        shm: Some(rec.shm.clone()),
        cgroup_parent: rec.cgroup_parent.clone(),
    }
}

fn sandbox_state(rec: &SandboxRecord) -> i32 {
    match rec.state {
        SandboxState::Ready => cri::PodSandboxState::SandboxReady as i32,
        SandboxState::NotReady => cri::PodSandboxState::SandboxNotready as i32,
    }
}

fn sandbox_not_found(op: &'static str, id: &str) -> RuntimeError {
    RuntimeError::not_found(
        op,
        format!("an error occurred when try to find sandbox {id:?}: not found"),
    )
}

fn no_streaming_url(op: &'static str) -> RuntimeError {
    RuntimeError::new(op, Code::Unimplemented, "the native runtime serves streams in process")
}

impl NativeRuntime {
    /// Opens the image store, the sandboxes and the containers under `cfg.root_dir`, adopting
    /// whatever a previous keel left running.
    pub async fn new(cfg: NativeConfig) -> Result<Arc<Self>, NativeError> {
        if !cfg.runc.is_file() {
            return Err(NativeError::NoRunc(cfg.runc.clone()));
        }
        let images = NativeImages::open(&cfg.root_dir, cfg.registry_config_dir.clone())?;
        let sb_cfg = sandbox::SandboxConfig {
            root_dir: cfg.root_dir.clone(),
            run_dir: cfg.run_dir.clone(),
            cni_conf_dir: cfg.cni_conf_dir.clone(),
            cni_bin_dirs: cfg.cni_bin_dirs.clone(),
            keel_exe: cfg.keel_exe.clone(),
            host_files: sandbox::files::HostFiles::default(),
        };
        let sandboxes = tokio::task::spawn_blocking(move || Sandboxes::open(&sb_cfg))
            .await
            .map_err(|e| NativeError::Task(e.to_string()))??;
        let host = tokio::task::spawn_blocking(spec::Host::probe)
            .await
            .map_err(|e| NativeError::Task(e.to_string()))?;
        let events = Arc::new(EventHub::default());
        let containers = Containers::open(
            &cfg.root_dir,
            &cfg.run_dir,
            cfg.keel_exe.clone(),
            runc::Runc::new(cfg.runc.clone(), cfg.run_dir.join("runc")),
            host,
            events.clone(),
        )?;
        let sandboxes = Arc::new(sandboxes);
        let sbs = sandboxes.clone();
        containers.adopt(move |id| sbs.get(id).map(|s| s.config)).await;
        Ok(Arc::new_cyclic(|me| Self {
            me: me.clone(),
            images,
            sandboxes,
            containers,
            events,
            cpu: sandbox::CpuRates::default(),
        }))
    }

    pub fn images(&self) -> &NativeImages {
        &self.images
    }

    fn sandbox(&self, op: &'static str, id: &str) -> RtResult<SandboxRecord> {
        self.sandboxes.get(id).ok_or_else(|| sandbox_not_found(op, id))
    }

    /// The containers of a sandbox.
    fn containers_of(&self, sandbox_id: &str) -> Vec<ContainerRecord> {
        self.containers
            .list()
            .into_iter()
            .filter(|c| c.sandbox_id == sandbox_id)
            .collect()
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[async_trait]
impl RuntimeService for NativeRuntime {
    async fn version(&self, _req: cri::VersionRequest) -> RtResult<cri::VersionResponse> {
        Ok(cri::VersionResponse {
            version: KUBE_API_VERSION.to_string(),
            runtime_name: RUNTIME_NAME.to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
            runtime_api_version: RUNTIME_API_VERSION.to_string(),
        })
    }

    async fn status(&self, _req: cri::StatusRequest) -> RtResult<cri::StatusResponse> {
        let sbs = self.sandboxes.clone();
        let net = tokio::task::spawn_blocking(move || sbs.network_ready())
            .await
            .map_err(|e| RuntimeError::new("Status", Code::Internal, e.to_string()))?;
        let network = match net {
            Ok(()) => cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: true,
                ..Default::default()
            },
            Err(e) => cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: false,
                reason: "NetworkPluginNotReady".into(),
                message: format!("Network plugin returns error: {e}"),
            },
        };
        Ok(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![
                    cri::RuntimeCondition {
                        r#type: "RuntimeReady".into(),
                        status: true,
                        ..Default::default()
                    },
                    network,
                ],
            }),
            ..Default::default()
        })
    }

    async fn run_pod_sandbox(&self, req: cri::RunPodSandboxRequest) -> RtResult<cri::RunPodSandboxResponse> {
        const OP: &str = "RunPodSandbox";
        let rec = self.sandboxes.run(req).await.map_err(|e| e.to_runtime(OP))?;
        Ok(cri::RunPodSandboxResponse { pod_sandbox_id: rec.id })
    }

    async fn stop_pod_sandbox(&self, req: cri::StopPodSandboxRequest) -> RtResult<cri::StopPodSandboxResponse> {
        const OP: &str = "StopPodSandbox";
        let sb = self.sandbox(OP, &req.pod_sandbox_id)?;
        // containerd stops every container with timeout 0 first.
        for c in self.containers_of(&sb.id) {
            if c.state == RUNNING {
                self.containers.stop(&c.id, Duration::ZERO).await?;
            }
        }
        self.sandboxes.stop(&sb.id).await.map_err(|e| e.to_runtime(OP))?;
        Ok(cri::StopPodSandboxResponse {})
    }

    async fn remove_pod_sandbox(&self, req: cri::RemovePodSandboxRequest) -> RtResult<cri::RemovePodSandboxResponse> {
        const OP: &str = "RemovePodSandbox";
        let Some(sb) = self.sandboxes.get(&req.pod_sandbox_id) else {
            return Ok(cri::RemovePodSandboxResponse {});
        };
        for c in self.containers_of(&sb.id) {
            self.containers.remove(&c.id).await?;
            self.cpu.forget(&c.id);
        }
        self.sandboxes.remove(&sb.id).await.map_err(|e| e.to_runtime(OP))?;
        self.cpu.forget(&sb.id);
        Ok(cri::RemovePodSandboxResponse {})
    }

    async fn pod_sandbox_status(&self, req: cri::PodSandboxStatusRequest) -> RtResult<cri::PodSandboxStatusResponse> {
        const OP: &str = "PodSandboxStatus";
        let sb = self.sandbox(OP, &req.pod_sandbox_id)?;
        let status = self
            .sandboxes
            .status(&sb.id, req.verbose)
            .map_err(|e| e.to_runtime(OP))?;
        let info = if req.verbose {
            self.sandboxes.verbose_info(&sb.id).map_err(|e| e.to_runtime(OP))?
        } else {
            HashMap::new()
        };
        let containers_statuses = self
            .containers_of(&sb.id)
            .iter()
            .map(ContainerRecord::to_status)
            .collect();
        Ok(cri::PodSandboxStatusResponse {
            status: Some(status),
            info,
            containers_statuses,
            timestamp: now_ns(),
        })
    }

    async fn list_pod_sandbox(&self, req: cri::ListPodSandboxRequest) -> RtResult<cri::ListPodSandboxResponse> {
        let f = req.filter.unwrap_or_default();
        let id = (!f.id.is_empty()).then(|| self.sandboxes.get(&f.id).map(|s| s.id).unwrap_or(f.id.clone()));
        let items = self
            .sandboxes
            .list()
            .into_iter()
            .filter(|s| id.as_ref().is_none_or(|i| *i == s.id))
            .filter(|s| f.state.as_ref().is_none_or(|st| st.state == sandbox_state(s)))
            .filter(|s| f.label_selector.iter().all(|(k, v)| s.config.labels.get(k) == Some(v)))
            .map(|s| cri::PodSandbox {
                id: s.id.clone(),
                metadata: s.config.metadata.clone(),
                state: sandbox_state(&s),
                created_at: s.created_at_ns,
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
                runtime_handler: s.runtime_handler.clone(),
            })
            .collect();
        Ok(cri::ListPodSandboxResponse { items })
    }

    async fn create_container(&self, req: cri::CreateContainerRequest) -> RtResult<cri::CreateContainerResponse> {
        const OP: &str = "CreateContainer";
        let sb = self.sandbox(OP, &req.pod_sandbox_id)?;
        let config = req
            .config
            .ok_or_else(|| RuntimeError::new(OP, Code::InvalidArgument, "container config is required"))?;
        let image_name = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        let image =
            self.images.store().find(&image_name).ok_or_else(|| {
                RuntimeError::not_found(OP, format!("failed to resolve image {image_name:?}: not found"))
            })?;
        let lowers = self.images.store().lower_dirs(&image);
        let view = sandbox_view(&sb);
        let id = self
            .containers
            .create(CreateInput {
                sandbox: &view,
                config,
                image_id: image.id.to_string(),
                status_image: image.repo_tags.first().cloned().unwrap_or_else(|| image_name.clone()),
                status_image_ref: image
                    .repo_digests
                    .first()
                    .cloned()
                    .unwrap_or_else(|| image.id.to_string()),
                image_config: &image.config,
                lowers,
            })
            .await?;
        Ok(cri::CreateContainerResponse { container_id: id })
    }

    async fn start_container(&self, req: cri::StartContainerRequest) -> RtResult<cri::StartContainerResponse> {
        const OP: &str = "StartContainer";
        let id = self.containers.resolve(OP, &req.container_id)?;
        let ready = self
            .containers
            .get(&id)
            .and_then(|c| self.sandboxes.get(&c.sandbox_id))
            .is_some_and(|s| s.state == SandboxState::Ready);
        self.containers.start(&id, ready).await?;
        Ok(cri::StartContainerResponse {})
    }

    async fn stop_container(&self, req: cri::StopContainerRequest) -> RtResult<cri::StopContainerResponse> {
        let timeout = Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0));
        self.containers.stop(&req.container_id, timeout).await?;
        Ok(cri::StopContainerResponse {})
    }

    async fn remove_container(&self, req: cri::RemoveContainerRequest) -> RtResult<cri::RemoveContainerResponse> {
        let id = self.containers.get(&req.container_id).map(|c| c.id);
        self.containers.remove(&req.container_id).await?;
        if let Some(id) = id {
            self.cpu.forget(&id);
        }
        Ok(cri::RemoveContainerResponse {})
    }

    async fn list_containers(&self, req: cri::ListContainersRequest) -> RtResult<cri::ListContainersResponse> {
        let containers = container::filter(self.containers.list(), req.filter.as_ref(), |sid| {
            self.sandboxes.get(sid).map(|s| s.id).unwrap_or_else(|| sid.to_string())
        });
        Ok(cri::ListContainersResponse { containers })
    }

    async fn container_status(&self, req: cri::ContainerStatusRequest) -> RtResult<cri::ContainerStatusResponse> {
        const OP: &str = "ContainerStatus";
        let id = self.containers.resolve(OP, &req.container_id)?;
        let rec = self
            .containers
            .get(&id)
            .ok_or_else(|| RuntimeError::not_found(OP, format!("container {id:?} not found")))?;
        let mut info = HashMap::new();
        if req.verbose {
            let v = serde_json::json!({
                "sandboxID": rec.sandbox_id,
                "pid": rec.pid,
                "cgroupsPath": rec.cgroups_path,
                "bundle": self.containers.bundle(&id),
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(cri::ContainerStatusResponse {
            status: Some(rec.to_status()),
            info,
        })
    }

    async fn exec_sync(&self, req: cri::ExecSyncRequest) -> RtResult<cri::ExecSyncResponse> {
        exec::exec_sync(&self.containers, req).await
    }

    async fn reopen_container_log(
        &self,
        req: cri::ReopenContainerLogRequest,
    ) -> RtResult<cri::ReopenContainerLogResponse> {
        const OP: &str = "ReopenContainerLog";
        let id = self.containers.resolve(OP, &req.container_id)?;
        match self.containers.get(&id) {
            Some(c) if c.state == RUNNING => {}
            _ => return Err(RuntimeError::new(OP, Code::Unknown, "container is not running")),
        }
        monitor::reopen_log(&self.containers.socket(&id))
            .await
            .map_err(|e| RuntimeError::new(OP, Code::Unknown, format!("failed to reopen container log: {e}")))?;
        Ok(cri::ReopenContainerLogResponse {})
    }

    async fn exec(&self, _: cri::ExecRequest) -> RtResult<cri::ExecResponse> {
        Err(no_streaming_url("Exec"))
    }

    async fn attach(&self, _: cri::AttachRequest) -> RtResult<cri::AttachResponse> {
        Err(no_streaming_url("Attach"))
    }

    async fn port_forward(&self, _: cri::PortForwardRequest) -> RtResult<cri::PortForwardResponse> {
        Err(no_streaming_url("PortForward"))
    }

    fn local_streams(&self) -> Option<Arc<dyn LocalStreams>> {
        self.me.upgrade().map(|rt| rt as Arc<dyn LocalStreams>)
    }

    async fn list_container_stats(
        &self,
        req: cri::ListContainerStatsRequest,
    ) -> RtResult<cri::ListContainerStatsResponse> {
        stats::list_container_stats(self, req).await
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: cri::ListPodSandboxStatsRequest,
    ) -> RtResult<cri::ListPodSandboxStatsResponse> {
        stats::list_pod_sandbox_stats(self, req).await
    }

    async fn get_container_events(&self, _req: cri::GetEventsRequest) -> RtResult<ContainerEventStream> {
        Ok(self.events.subscribe())
    }
}

#[async_trait]
impl LocalStreams for NativeRuntime {
    async fn exec(&self, container_id: &str, cmd: Vec<String>, tty: bool, io: ProcessIo) -> Result<i32, RuntimeError> {
        exec::exec_stream(&self.containers, container_id, cmd, tty, io).await
    }

    async fn attach(&self, container_id: &str, tty: bool, io: ProcessIo) -> Result<(), RuntimeError> {
        const OP: &str = "Attach";
        let id = self.containers.resolve(OP, container_id)?;
        match self.containers.get(&id) {
            Some(c) if c.state == RUNNING => {}
            Some(c) => {
                return Err(RuntimeError::new(
                    OP,
                    Code::Unknown,
                    format!("container is in {} state", container::state_name(c.state)),
                ))
            }
            None => return Err(RuntimeError::not_found(OP, format!("container {id:?} not found"))),
        }
        monitor::attach(&self.containers.socket(&id), tty, io)
            .await
            .map_err(|e| RuntimeError::new(OP, Code::Unknown, format!("failed to attach to container: {e}")))
    }

    async fn port_forward(&self, sandbox_id: &str, port: u16) -> Result<BoxedIo, RuntimeError> {
        self.sandboxes
            .port_forward(sandbox_id, port)
            .await
            .map_err(|e| e.to_runtime("PortForward"))
    }
}

#[async_trait]
impl ImageService for NativeRuntime {
    async fn list_images(&self, req: cri::ListImagesRequest) -> RtResult<cri::ListImagesResponse> {
        self.images.list_images(req).await
    }

    async fn image_status(&self, req: cri::ImageStatusRequest) -> RtResult<cri::ImageStatusResponse> {
        self.images.image_status(req).await
    }

    async fn pull_image(&self, req: cri::PullImageRequest) -> RtResult<cri::PullImageResponse> {
        self.images.pull_image(req).await
    }

    async fn pull_image_with_progress(
        &self,
        req: cri::PullImageRequest,
        progress: Arc<PullProgress>,
    ) -> RtResult<cri::PullImageResponse> {
        self.images.pull_image_with_progress(req, progress).await
    }

    async fn remove_image(&self, req: cri::RemoveImageRequest) -> RtResult<cri::RemoveImageResponse> {
        self.images.remove_image(req).await
    }

    async fn image_fs_info(&self, req: cri::ImageFsInfoRequest) -> RtResult<cri::ImageFsInfoResponse> {
        self.images.image_fs_info(req).await
    }
}

/// The root dir's native state (for tests and tools).
pub fn state_root(root_dir: &Path) -> PathBuf {
    root_dir.join("native")
}
