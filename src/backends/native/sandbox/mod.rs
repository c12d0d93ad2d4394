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

impl From<cni::CniError> for SandboxError {
    fn from(e: cni::CniError) -> Self {
        SandboxError::Failed(e.to_string())
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

    fn save_only(&self, rec: &SandboxRecord) -> Result<(), SandboxError> {
        record::save(&self.dir(&rec.id), rec).map_err(|e| SandboxError::io(format!("saving sandbox {}", rec.id), e))
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
        let config = req
            .config
            .ok_or_else(|| SandboxError::InvalidArgument("sandbox config is required".into()))?;
        if !matches!(req.runtime_handler.as_str(), "" | "runc" | "native") {
            return Err(SandboxError::Failed(format!(
                "failed to get sandbox runtime: no runtime for {:?} is configured",
                req.runtime_handler
            )));
        }
        let id = record::new_id();
        let dir = self.dir(&id);
        std::fs::create_dir_all(&dir).map_err(|e| SandboxError::io(format!("create {}", dir.display()), e))?;
        let host_ipc = record::namespace_mode(&config, |o| o.ipc) == cri::NamespaceMode::Node;
        let mut rec = SandboxRecord {
            id: id.clone(),
            cgroup_parent: config
                .linux
                .as_ref()
                .map(|l| l.cgroup_parent.clone())
                .unwrap_or_default(),
            config,
            runtime_handler: req.runtime_handler,
            created_at_ns: now_ns(),
            state: SandboxState::NotReady,
            netns: None,
            ipcns: None,
            utsns: None,
            pidns: None,
            pause_pid: None,
            pause_start_ticks: None,
            ip: None,
            additional_ips: Vec::new(),
            hostname_file: dir.join("hostname"),
            hosts_file: dir.join("hosts"),
            resolv_file: dir.join("resolv.conf"),
            shm: if host_ipc {
                PathBuf::from("/dev/shm")
            } else {
                self.cfg.run_dir.join("shm").join(&id)
            },
        };
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        // On disk before anything is made, so a crash mid-run is cleaned up by `open`; listed
        // only once Ready (as containerd, a relist never sees a half-made sandbox).
        self.save_only(&rec)?;
        match self.setup(&mut rec).await {
            Ok(()) => {
                rec.state = SandboxState::Ready;
                if let Err(e) = self.put(&rec) {
                    rec.state = SandboxState::NotReady;
                    self.rollback(&rec).await;
                    return Err(e);
                }
                Ok(rec)
            }
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "RunPodSandbox failed; rolling back");
                self.rollback(&rec).await;
                Err(e)
            }
        }
    }

    /// The steps of `run` after the record exists; each one recorded as it is made.
    async fn setup(&self, rec: &mut SandboxRecord) -> Result<(), SandboxError> {
        let dir = self.dir(&rec.id);
        let host_network = rec.host_network();
        let host_ipc = rec.host_ipc();
        let node_hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        files::write_sandbox_files(&dir, &rec.config, &self.cfg.host_files, &node_hostname)
            .map_err(|e| SandboxError::io("failed to setup sandbox files", e))?;
        if host_ipc {
            if !rec.shm.exists() {
                return Err(SandboxError::Failed(format!(
                    "host {:?} is not available for host ipc",
                    rec.shm.display().to_string()
                )));
            }
        } else {
            files::mount_shm(&rec.shm)
                .map_err(|e| SandboxError::io(format!("failed to mount sandbox shm {}", rec.shm.display()), e))?;
        }

        let mut kinds = Vec::new();
        if !host_network {
            kinds.push(namespaces::Kind::Net);
        }
        if !host_ipc {
            kinds.push(namespaces::Kind::Ipc);
        }
        if !host_network {
            kinds.push(namespaces::Kind::Uts);
        }
        let mut sysctls: Vec<(String, String)> = rec
            .config
            .linux
            .as_ref()
            .map(|l| {
                l.sysctls
                    .iter()
                    .map(|(k, v)| (k.replace('/', "."), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        sysctls.sort();
        if !kinds.is_empty() || !sysctls.is_empty() {
            let ns_req = namespaces::Request {
                kinds: kinds.clone(),
                hostname: (!host_network && !rec.config.hostname.is_empty()).then(|| rec.config.hostname.clone()),
                sysctls,
            };
            // Recorded first: a crash between the pin and the save still gets them unpinned.
            for k in &kinds {
                let p = namespaces::pin_path(&self.cfg.run_dir, *k, &rec.id);
                match k {
                    namespaces::Kind::Net => rec.netns = Some(p),
                    namespaces::Kind::Ipc => rec.ipcns = Some(p),
                    namespaces::Kind::Uts => rec.utsns = Some(p),
                }
            }
            self.save_only(rec)?;
            let run_dir = self.cfg.run_dir.clone();
            let id = rec.id.clone();
            tokio::task::spawn_blocking(move || namespaces::create(&run_dir, &id, ns_req))
                .await
                .map_err(|e| SandboxError::Failed(format!("namespace task: {e}")))?
                .map_err(|e| match e.kind() {
                    io::ErrorKind::InvalidInput => SandboxError::InvalidArgument(e.to_string()),
                    _ => SandboxError::io("failed to create sandbox namespaces", e),
                })?;
        }

        if record::namespace_mode(&rec.config, |o| o.pid) == cri::NamespaceMode::Pod {
            let (exe, net, ipc, uts) = (
                self.cfg.keel_exe.clone(),
                rec.netns.clone(),
                rec.ipcns.clone(),
                rec.utsns.clone(),
            );
            let p =
                tokio::task::spawn_blocking(move || pause::spawn(&exe, net.as_deref(), ipc.as_deref(), uts.as_deref()))
                    .await
                    .map_err(|e| SandboxError::Failed(format!("pause task: {e}")))?
                    .map_err(|e| SandboxError::io("failed to start the pause process", e))?;
            rec.pidns = Some(p.pidns());
            rec.pause_pid = Some(p.pid);
            rec.pause_start_ticks = Some(p.start_ticks);
            self.save_only(rec)?;
        }

        if let Some(netns) = rec.netns.clone() {
            let net = cni::NetworkConfig::load(&self.cfg.cni_conf_dir, &self.cfg.cni_bin_dirs).map_err(|e| {
                SandboxError::NetworkSetup {
                    id: rec.id.clone(),
                    message: format!("cni plugin not initialized: {e}"),
                }
            })?;
            let (name, namespace, uid) = rec.pod_name();
            let base = cni::RuntimeConf {
                container_id: rec.id.clone(),
                netns: netns.display().to_string(),
                ifname: String::new(),
                args: cni::pod_args(namespace, name, &rec.id, uid),
                capability_args: Default::default(),
            };
            let nets = vec![
                (
                    cni::NetworkConfig::loopback(),
                    cni::RuntimeConf {
                        ifname: "lo".into(),
                        ..base.clone()
                    },
                ),
                (
                    net,
                    cni::RuntimeConf {
                        ifname: stats::DEFAULT_IFNAME.into(),
                        capability_args: cni::capability_args(&rec.config),
                        ..base
                    },
                ),
            ];
            let (dir, bins) = (dir.clone(), self.cfg.cni_bin_dirs.clone());
            let result = tokio::task::spawn_blocking(move || cni::setup(&dir, &nets, &bins))
                .await
                .map_err(|e| SandboxError::Failed(format!("cni task: {e}")))?
                .map_err(|e| SandboxError::NetworkSetup {
                    id: rec.id.clone(),
                    message: e.to_string(),
                })?;
            let (ip, additional) =
                cni::pod_ips(&result, stats::DEFAULT_IFNAME).ok_or_else(|| SandboxError::NetworkSetup {
                    id: rec.id.clone(),
                    message: format!("failed to find network info for sandbox {:?}", rec.id),
                })?;
            rec.ip = Some(ip);
            rec.additional_ips = additional;
        }
        Ok(())
    }

    async fn rollback(&self, rec: &SandboxRecord) {
        let (cfg, dir, r) = (self.cfg.clone(), self.dir(&rec.id), rec.clone());
        let res = tokio::task::spawn_blocking(move || {
            release(&cfg, &dir, &r)?;
            remove_state(&dir)
        })
        .await;
        match res {
            Ok(Ok(())) => {
                self.forget(&rec.id);
            }
            Ok(Err(e)) => {
                // Listed NotReady: the kubelet's stop/remove (or the next start) retries.
                tracing::warn!(sandbox = %rec.id, error = %e, "rolling back a failed sandbox left something behind");
                self.records
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(rec.id.clone(), rec.clone());
            }
            Err(e) => tracing::warn!(sandbox = %rec.id, error = %e, "rollback task failed"),
        }
    }

    fn forget(&self, id: &str) {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// StopPodSandbox: unmount shm, kill the pause process, CNI DEL, unpin the namespaces.
    /// Idempotent; N2 stops the containers first.
    pub async fn stop(&self, id: &str) -> Result<(), SandboxError> {
        let full = self.resolve(id).ok_or_else(|| SandboxError::NotFound(id.to_string()))?;
        let lock = self.lock_for(&full);
        let _guard = lock.lock().await;
        let Some(mut rec) = self.get(&full) else {
            return Err(SandboxError::NotFound(id.to_string()));
        };
        let (cfg, dir, r) = (self.cfg.clone(), self.dir(&full), rec.clone());
        tokio::task::spawn_blocking(move || release(&cfg, &dir, &r))
            .await
            .map_err(|e| SandboxError::Failed(format!("stop task: {e}")))??;
        if rec.state != SandboxState::NotReady {
            rec.state = SandboxState::NotReady;
            self.put(&rec)?;
        }
        Ok(())
    }

    /// RemovePodSandbox: releases what is left (as stop) and deletes its state. Idempotent:
    /// an unknown ID is fine.
    pub async fn remove(&self, id: &str) -> Result<(), SandboxError> {
        let Some(full) = self.resolve(id) else { return Ok(()) };
        let lock = self.lock_for(&full);
        let _guard = lock.lock().await;
        let Some(rec) = self.get(&full) else { return Ok(()) };
        let (cfg, dir, r) = (self.cfg.clone(), self.dir(&full), rec.clone());
        tokio::task::spawn_blocking(move || {
            release(&cfg, &dir, &r)?;
            remove_state(&dir)
        })
        .await
        .map_err(|e| SandboxError::Failed(format!("remove task: {e}")))??;
        self.forget(&full);
        Ok(())
    }

    /// CNI CHECK of the sandbox's attachments.
    pub async fn check_network(&self, id: &str) -> Result<(), SandboxError> {
        let rec = self.get(id).ok_or_else(|| SandboxError::NotFound(id.to_string()))?;
        let (dir, bins) = (self.dir(&rec.id), self.cfg.cni_bin_dirs.clone());
        tokio::task::spawn_blocking(move || cni::check_all(&dir, &bins))
            .await
            .map_err(|e| SandboxError::Failed(format!("cni task: {e}")))?
            .map_err(|e| SandboxError::Failed(format!("failed to check network for sandbox {:?}: {e}", rec.id)))
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
        // containerd's keys where they apply (`sandbox_status.go toCRISandboxInfo`).
        let cni_result = cni::Cache::load(&self.dir(&rec.id))
            .ok()
            .flatten()
            .and_then(|c| c.attachments.last().and_then(|a| a.result.clone()));
        let info = serde_json::json!({
            "pid": rec.pause_pid.unwrap_or(0),
            "processStatus": match rec.state { SandboxState::Ready => "running", SandboxState::NotReady => "stopped" },
            "netNamespaceClosed": rec.netns.as_deref().is_some_and(|p| !namespaces::is_pinned(p)),
            "runtimeHandler": rec.runtime_handler,
            "config": rec.config,
            "cniResult": cni_result,
            "record": rec,
        });
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
        cni::NetworkConfig::load(&self.cfg.cni_conf_dir, &self.cfg.cni_bin_dirs)
            .map(|_| ())
            .map_err(|e| SandboxError::NetworkNotReady(e.to_string()))
    }

    /// Start-up: a Ready sandbox whose pins (and shm, and pause process) are all there is
    /// adopted as it is; otherwise (a reboot emptied the run dir, or keel died mid-run) it is
    /// marked NotReady and everything left of it is released, CNI DEL included (from the cache).
    fn adopt_all(&self) {
        let Ok(entries) = std::fs::read_dir(&self.state_dir) else {
            return;
        };
        for e in entries.flatten() {
            let dir = e.path();
            let Some(id) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            let mut rec = match record::load(&dir) {
                Ok(r) if r.id == id => r,
                Ok(_) | Err(_) => {
                    tracing::warn!(dir = %dir.display(), "sandbox directory without a valid record; removing it");
                    if let Err(e) = remove_state(&dir) {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove sandbox directory");
                    }
                    continue;
                }
            };
            if rec.state == SandboxState::Ready && intact(&rec) {
                tracing::debug!(sandbox = %id, "adopted sandbox");
            } else {
                if rec.state == SandboxState::Ready {
                    tracing::info!(sandbox = %id, "sandbox lost its namespaces (node reboot?); marking it NotReady");
                }
                rec.state = SandboxState::NotReady;
                if let Err(e) = release(&self.cfg, &dir, &rec) {
                    tracing::warn!(sandbox = %id, error = %e, "cleaning up a stale sandbox failed; stop/remove retries");
                }
                if let Err(e) = record::save(&dir, &rec) {
                    tracing::warn!(sandbox = %id, error = %e, "cannot save sandbox record");
                }
            }
            self.records.lock().unwrap_or_else(|p| p.into_inner()).insert(id, rec);
        }
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(1)
}

fn pause_of(rec: &SandboxRecord) -> Option<pause::Pause> {
    Some(pause::Pause {
        pid: rec.pause_pid?,
        start_ticks: rec.pause_start_ticks?,
    })
}

/// Whether everything a Ready sandbox holds is still there.
fn intact(rec: &SandboxRecord) -> bool {
    let pins = [&rec.netns, &rec.ipcns, &rec.utsns]
        .into_iter()
        .flatten()
        .all(|p| namespaces::is_pinned(p));
    let shm = rec.host_ipc() || files::is_tmpfs(&rec.shm);
    let pause = rec.pause_pid.is_none() || pause_of(rec).is_some_and(|p| p.alive());
    pins && shm && pause
}

/// Releases what a sandbox holds at run time, in containerd's stop order: shm, the pause
/// process, the network (CNI DEL from the cache), the namespaces. Idempotent. A failed DEL
/// keeps the netns pinned so a retry can DEL with it.
fn release(cfg: &SandboxConfig, dir: &Path, rec: &SandboxRecord) -> Result<(), SandboxError> {
    if !rec.host_ipc() {
        files::unmount_shm(&rec.shm).map_err(|e| SandboxError::io(format!("unmount {}", rec.shm.display()), e))?;
    }
    if let Some(p) = pause_of(rec) {
        p.kill();
    }
    cni::teardown(dir, &cfg.cni_bin_dirs).map_err(|e| SandboxError::NetworkTeardown {
        id: rec.id.clone(),
        message: e.to_string(),
    })?;
    for p in [&rec.netns, &rec.ipcns, &rec.utsns].into_iter().flatten() {
        namespaces::unpin(p).map_err(|e| SandboxError::io("failed to remove sandbox namespace", e))?;
    }
    Ok(())
}

fn remove_state(dir: &Path) -> Result<(), SandboxError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SandboxError::io(format!("remove {}", dir.display()), e)),
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
