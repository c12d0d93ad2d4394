//! Container lifecycle of the native backend, with containerd's states, reasons and messages.
//!
//! CreateContainer mounts the overlay rootfs and writes the OCI bundle; StartContainer has the
//! monitor run `runc create` and then runs `runc start` itself (containerd also creates the
//! runc container only at start, so a bad command fails the start with 128/`StartError`, as
//! the kubelet expects). A task waits on the monitor for the exit and records it at once.
//! Records are JSON written atomically (`<root>/native/containers/<id>/record.json`); on
//! start-up keel adopts them: a live monitor is waited on again, a gone one's `exit.json` gives
//! the exit, and with neither (a reboot) the container is exited `255/Unknown` like containerd.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::images::manifest::RunConfig;
use super::monitor::{self, ExitRecord, MonitorSpec};
use super::rootfs::{self, Layout};
use super::runc::Runc;
use super::spec::{self, EtcFiles, Host, SandboxView};
use crate::backends::common::{self, resolve, EventHub, Resolved};
use crate::genericruntime::seam::{cri, Code, RuntimeError};

pub const CREATED: i32 = cri::ContainerState::ContainerCreated as i32;
pub const RUNNING: i32 = cri::ContainerState::ContainerRunning as i32;
pub const EXITED: i32 = cri::ContainerState::ContainerExited as i32;

/// containerd's exit code and reason for a container that could not start.
const START_ERROR_CODE: i32 = 128;
const START_ERROR_REASON: &str = "StartError";
/// containerd's exit code and reason for a container whose task vanished (keel restarted
/// after a reboot, or the monitor was killed with no exit record).
const UNKNOWN_EXIT_CODE: i32 = 255;
const UNKNOWN_EXIT_REASON: &str = "Unknown";
/// How long to wait for an exit after SIGKILL before StopContainer gives up.
const KILL_WAIT: Duration = Duration::from_secs(10);

const RECORD: &str = "record.json";

/// Errors of the container part.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// A container as persisted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub config: cri::ContainerConfig,
    /// The image ID (`sha256:…`).
    pub image_id: String,
    /// ContainerStatus `image.image`: the image's first repo tag (containerd), else the ID.
    pub status_image: String,
    /// ContainerStatus `image_ref`: the repo digest (containerd), else the ID.
    pub status_image_ref: String,
    /// `<sandbox log_directory>/<log_path>`, empty when either is empty.
    pub log_path: String,
    /// The OCI `cgroupsPath`.
    pub cgroups_path: String,
    /// The image's `StopSignal` (empty: SIGTERM).
    pub stop_signal: String,
    pub state: i32,
    pub pid: i32,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
}

impl ContainerRecord {
    pub fn name(&self) -> &str {
        self.config.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("")
    }

    pub fn to_cri(&self) -> cri::Container {
        cri::Container {
            id: self.id.clone(),
            pod_sandbox_id: self.sandbox_id.clone(),
            metadata: self.config.metadata.clone(),
            image: self.config.image.clone(),
            image_ref: self.image_id.clone(),
            state: self.state,
            created_at: self.created_at,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            image_id: self.image_id.clone(),
        }
    }

    pub fn to_status(&self) -> cri::ContainerStatus {
        let mut image = self.config.image.clone().unwrap_or_default();
        image.image = self.status_image.clone();
        cri::ContainerStatus {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            state: self.state,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            image: Some(image),
            image_ref: self.status_image_ref.clone(),
            reason: self.reason.clone(),
            message: self.message.clone(),
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            mounts: self.config.mounts.clone(),
            log_path: self.log_path.clone(),
            resources: self
                .config
                .linux
                .as_ref()
                .and_then(|l| l.resources.clone())
                .map(|r| cri::ContainerResources {
                    linux: Some(r),
                    windows: None,
                }),
            image_id: self.image_id.clone(),
            user: None,
        }
    }
}

/// containerd's reserved container name: `name_sandboxname_namespace_uid_attempt`.
pub fn container_name(sandbox: &cri::PodSandboxConfig, config: &cri::ContainerConfig) -> String {
    let s = sandbox.metadata.clone().unwrap_or_default();
    let (name, attempt) = config
        .metadata
        .as_ref()
        .map(|m| (m.name.as_str(), m.attempt))
        .unwrap_or(("", 0));
    format!("{name}_{}_{}_{}_{attempt}", s.name, s.namespace, s.uid)
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

struct Entry {
    rec: ContainerRecord,
    /// The reserved name (released on remove).
    name: String,
    /// Flips to true once the exit is recorded.
    exited: tokio::sync::watch::Sender<bool>,
    /// Serialises lifecycle calls on this container.
    op: Arc<tokio::sync::Mutex<()>>,
}

/// The node's containers.
pub struct Containers {
    me: Weak<Containers>,
    dir: PathBuf,
    mon_dir: PathBuf,
    keel_exe: PathBuf,
    pub runc: Runc,
    pub host: Host,
    map: Mutex<BTreeMap<String, Entry>>,
    names: Mutex<HashMap<String, String>>,
    pub events: Arc<EventHub>,
}

/// Everything CreateContainer needs besides the request.
pub struct CreateInput<'a> {
    pub sandbox: &'a SandboxView,
    pub config: cri::ContainerConfig,
    pub image_id: String,
    pub status_image: String,
    pub status_image_ref: String,
    pub image_config: &'a RunConfig,
    pub lowers: Vec<PathBuf>,
}

fn err(op: &'static str, code: Code, message: impl Into<String>) -> RuntimeError {
    RuntimeError::new(op, code, message)
}

fn not_found(op: &'static str, id: &str) -> RuntimeError {
    RuntimeError::not_found(
        op,
        format!("an error occurred when try to find container {id:?}: not found"),
    )
}

/// Reads a file of the image's root (`etc/passwd`) without following links out of it.
fn read_in_root(root: &Path, rel: &str) -> Option<String> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    use std::io::Read;
    let dir = std::fs::File::open(root).ok()?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(&dir, rel, how).ok()?;
    let mut s = String::new();
    std::fs::File::from(fd).read_to_string(&mut s).ok()?;
    Some(s)
}

fn write_record(dir: &Path, rec: &ContainerRecord) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?;
    crate::backends::native::images::content::write_atomic(&dir.join(RECORD), &bytes)
}

impl Containers {
    /// Opens the container store (`<root_dir>/native/containers`) and adopts what it holds.
    pub fn open(
        root_dir: &Path,
        run_dir: &Path,
        keel_exe: PathBuf,
        runc: Runc,
        host: Host,
        events: Arc<EventHub>,
    ) -> Result<Arc<Self>, ContainerError> {
        let dir = root_dir.join("native").join("containers");
        let mon_dir = run_dir.join("mon");
        for d in [&dir, &mon_dir, &runc.root] {
            std::fs::create_dir_all(d).map_err(|source| ContainerError::Io {
                what: format!("creating {}", d.display()),
                source,
            })?;
        }
        Ok(Arc::new_cyclic(|me| Self {
            me: me.clone(),
            dir,
            mon_dir,
            keel_exe,
            runc,
            host,
            map: Mutex::default(),
            names: Mutex::default(),
            events,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn names(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    pub fn socket(&self, id: &str) -> PathBuf {
        self.mon_dir.join(format!("{id}.sock"))
    }

    pub fn bundle(&self, id: &str) -> PathBuf {
        self.state_dir(id).join("bundle")
    }

    pub fn upper_dir(&self, id: &str) -> PathBuf {
        Layout::new(&self.state_dir(id)).upper
    }

    /// The full ID of an ID or unique prefix.
    pub fn resolve(&self, op: &'static str, id: &str) -> Result<String, RuntimeError> {
        match resolve(&self.lock(), id) {
            Resolved::Found(id) => Ok(id),
            Resolved::NotFound => Err(not_found(op, id)),
            Resolved::Ambiguous => Err(err(
                op,
                Code::Unknown,
                format!("an error occurred when try to find container {id:?}: ambiguous ID prefix"),
            )),
        }
    }

    pub fn get(&self, id: &str) -> Option<ContainerRecord> {
        let full = match resolve(&self.lock(), id) {
            Resolved::Found(id) => id,
            _ => return None,
        };
        self.lock().get(&full).map(|e| e.rec.clone())
    }

    pub fn list(&self) -> Vec<ContainerRecord> {
        self.lock().values().map(|e| e.rec.clone()).collect()
    }

    fn op_lock(&self, id: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
        self.lock().get(id).map(|e| e.op.clone())
    }

    /// Saves and publishes a record change.
    fn update(&self, rec: &ContainerRecord) -> std::io::Result<()> {
        write_record(&self.state_dir(&rec.id), rec)?;
        if let Some(e) = self.lock().get_mut(&rec.id) {
            e.rec = rec.clone();
        }
        Ok(())
    }

    fn insert(&self, rec: ContainerRecord, name: String) {
        self.names().insert(name.clone(), rec.id.clone());
        let exited = rec.state == EXITED;
        self.lock().insert(
            rec.id.clone(),
            Entry {
                rec,
                name,
                exited: tokio::sync::watch::channel(exited).0,
                op: Arc::default(),
            },
        );
    }

    /// CreateContainer: the rootfs, the bundle, the record. Undone entirely on failure.
    pub async fn create(&self, input: CreateInput<'_>) -> Result<String, RuntimeError> {
        const OP: &str = "CreateContainer";
        let sandbox = input.sandbox;
        let config = input.config.clone();
        if config.metadata.is_none() {
            return Err(err(OP, Code::InvalidArgument, "container config must include metadata"));
        }
        let name = container_name(&sandbox.config, &config);
        let mut id = common::new_id();
        {
            let mut names = self.names();
            if let Some(owner) = names.get(&name) {
                return Err(err(
                    OP,
                    Code::AlreadyExists,
                    format!("failed to reserve container name {name:?}: name {name:?} is reserved for {owner:?}"),
                ));
            }
            while self.lock().contains_key(&id) {
                id = common::new_id();
            }
            names.insert(name.clone(), id.clone());
        }
        let state_dir = self.state_dir(&id);
        let res = self.prepare(&id, &state_dir, sandbox, &config, &input).await;
        let rec = match res {
            Ok(cgroups_path) => {
                let log_path = match (&sandbox.config.log_directory, &config.log_path) {
                    (d, p) if !d.is_empty() && !p.is_empty() => Path::new(d).join(p).to_string_lossy().into_owned(),
                    _ => String::new(),
                };
                let rec = ContainerRecord {
                    id: id.clone(),
                    sandbox_id: sandbox.id.clone(),
                    image_id: input.image_id.clone(),
                    status_image: input.status_image.clone(),
                    status_image_ref: input.status_image_ref.clone(),
                    log_path,
                    cgroups_path,
                    stop_signal: input.image_config.stop_signal.clone(),
                    state: CREATED,
                    pid: 0,
                    created_at: now_ns(),
                    started_at: 0,
                    finished_at: 0,
                    exit_code: 0,
                    reason: String::new(),
                    message: String::new(),
                    config,
                };
                match write_record(&state_dir, &rec) {
                    Ok(()) => Ok(rec),
                    Err(e) => Err(err(OP, Code::Internal, format!("failed to checkpoint container: {e}"))),
                }
            }
            Err(e) => Err(e),
        };
        match rec {
            Ok(rec) => {
                let at = rec.created_at;
                self.names().remove(&name);
                self.insert(rec, name);
                self.events
                    .emit(&id, cri::ContainerEventType::ContainerCreatedEvent, at);
                Ok(id)
            }
            Err(e) => {
                self.names().remove(&name);
                self.cleanup(&id).await;
                Err(e)
            }
        }
    }

    /// Mounts the rootfs and writes `bundle/config.json`; the OCI `cgroupsPath`.
    async fn prepare(
        &self,
        id: &str,
        state_dir: &Path,
        sandbox: &SandboxView,
        config: &cri::ContainerConfig,
        input: &CreateInput<'_>,
    ) -> Result<String, RuntimeError> {
        const OP: &str = "CreateContainer";
        let layout = Layout::new(state_dir);
        let lowers = input.lowers.clone();
        let l2 = layout.clone();
        blocking(move || rootfs::mount(&l2, &lowers))
            .await?
            .map_err(|e| err(OP, Code::Unknown, format!("failed to create containerd container: {e}")))?;
        let root = layout.rootfs.clone();
        let etc = blocking(move || EtcFiles {
            passwd: read_in_root(&root, "etc/passwd"),
            group: read_in_root(&root, "etc/group"),
        })
        .await?;
        let sc = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default();
        let extra = spec::sandbox_mounts(config, sandbox);
        let merged = spec::merge_mounts(&config.mounts, &extra);
        let mounts = blocking(move || spec::prepare_mounts(&merged))
            .await?
            .map_err(|e| spec_err(OP, e))?;
        let mut devices = Vec::new();
        for d in &config.devices {
            devices.push(
                spec::host_device(Path::new(&d.host_path), &d.container_path, &d.permissions)
                    .map_err(|e| spec_err(OP, e))?,
            );
        }
        if sc.privileged {
            devices.extend(blocking(spec::all_host_devices).await?);
        }
        let target_pidns = match sc.namespace_options.as_ref() {
            Some(ns) if ns.pid == cri::NamespaceMode::Target as i32 => {
                let t = self
                    .get(&ns.target_id)
                    .filter(|t| t.state == RUNNING && t.pid > 0)
                    .ok_or_else(|| {
                        err(
                            OP,
                            Code::NotFound,
                            format!(
                                "failed to get target container {:?}: not found or not running",
                                ns.target_id
                            ),
                        )
                    })?;
                Some(PathBuf::from(format!("/proc/{}/ns/pid", t.pid)))
            }
            _ => None,
        };
        let seccomp = super::seccomp::resolve(&sc).map_err(|e| spec_err(OP, e.into()))?;
        let image_name = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        let oci = spec::build(&spec::Input {
            id,
            config,
            sandbox,
            image: input.image_config,
            image_name: &image_name,
            etc: &etc,
            host: &self.host,
            mounts: &mounts,
            devices: &devices,
            target_pidns,
            seccomp,
        })
        .map_err(|e| spec_err(OP, e))?;
        let cgroups_path = oci
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = serde_json::to_vec_pretty(&oci).map_err(|e| err(OP, Code::Internal, e.to_string()))?;
        let path = layout.rootfs.with_file_name("config.json");
        blocking(move || crate::backends::native::images::content::write_atomic(&path, &bytes))
            .await?
            .map_err(|e| err(OP, Code::Internal, format!("failed to write the OCI spec: {e}")))?;
        Ok(cgroups_path)
    }

    /// Removes what a container left: runc state, the rootfs mount, its directories.
    async fn cleanup(&self, id: &str) {
        if let Err(e) = self.runc.delete(id, true).await {
            tracing::warn!(container = id, error = %e, "runc delete failed");
        }
        let dir = self.state_dir(id);
        let socket = self.socket(id);
        let res = blocking(move || {
            rootfs::unmount(&Layout::new(&dir))?;
            let _ = std::fs::remove_file(&socket);
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(rootfs::RootfsError::Io {
                    op: "remove",
                    path: dir,
                    source: e,
                }),
                _ => Ok(()),
            }
        })
        .await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(container = id, error = %e, "cleaning up the container failed"),
            Err(e) => tracing::warn!(container = id, error = %e, "cleaning up the container failed"),
        }
    }

    fn monitor_spec(&self, rec: &ContainerRecord) -> MonitorSpec {
        let cgroup_memory_dir = (!rec.cgroups_path.contains(':') && !rec.cgroups_path.is_empty()).then(|| {
            let rel = rec.cgroups_path.trim_start_matches('/');
            if self.host.cgroup2 {
                Path::new("/sys/fs/cgroup").join(rel)
            } else {
                Path::new("/sys/fs/cgroup/memory").join(rel)
            }
        });
        MonitorSpec {
            id: rec.id.clone(),
            bundle: self.bundle(&rec.id),
            runc: self.runc.bin.clone(),
            runc_root: self.runc.root.clone(),
            state_dir: self.state_dir(&rec.id),
            socket: self.socket(&rec.id),
            log_path: (!rec.log_path.is_empty()).then(|| PathBuf::from(&rec.log_path)),
            tty: rec.config.tty,
            stdin: rec.config.stdin,
            stdin_once: rec.config.stdin_once,
            cgroup_memory_dir,
        }
    }

    /// StartContainer: the monitor runs `runc create`, keel `runc start`; the exit is waited
    /// for at once. A failure leaves the container exited with 128/StartError.
    pub async fn start(&self, id: &str, sandbox_ready: bool) -> Result<(), RuntimeError> {
        const OP: &str = "StartContainer";
        let id = self.resolve(OP, id)?;
        let op = self.op_lock(&id).ok_or_else(|| not_found(OP, &id))?;
        let _guard = op.lock().await;
        let mut rec = self.get(&id).ok_or_else(|| not_found(OP, &id))?;
        if rec.state != CREATED {
            return Err(err(
                OP,
                Code::Unknown,
                format!(
                    "failed to set starting state for container {id:?}: container is in {} state",
                    state_name(rec.state)
                ),
            ));
        }
        let result = if !sandbox_ready {
            Err(format!("sandbox container {:?} is not running", rec.sandbox_id))
        } else {
            self.run(&rec).await
        };
        match result {
            Ok((pid, started_at)) => {
                rec.state = RUNNING;
                rec.pid = pid;
                rec.started_at = started_at;
                if let Err(e) = self.update(&rec) {
                    tracing::warn!(container = %id, error = %e, "saving the container record failed");
                }
                self.events
                    .emit(&id, cri::ContainerEventType::ContainerStartedEvent, rec.started_at);
                self.watch_exit(&id);
                Ok(())
            }
            Err(message) => {
                if let Err(e) = self.runc.delete(&id, true).await {
                    tracing::warn!(container = %id, error = %e, "runc delete after a failed start failed");
                }
                rec.state = EXITED;
                rec.pid = 0;
                rec.finished_at = now_ns();
                rec.exit_code = START_ERROR_CODE;
                rec.reason = START_ERROR_REASON.to_string();
                rec.message = message.clone();
                if let Err(e) = self.update(&rec) {
                    tracing::warn!(container = %id, error = %e, "saving the container record failed");
                }
                self.mark_exited(&id);
                self.events
                    .emit(&id, cri::ContainerEventType::ContainerStoppedEvent, rec.finished_at);
                Err(err(OP, Code::Unknown, message))
            }
        }
    }

    /// `runc create` through the monitor, then `runc start`; the init's pid and when it was
    /// started (taken before `runc start`, so a quick exit never precedes it), or the error text.
    async fn run(&self, rec: &ContainerRecord) -> Result<(i32, i64), String> {
        let spec = self.monitor_spec(rec);
        if let Some(log) = &spec.log_path {
            // containerd opens the log at start, so it exists before any output.
            if let Some(dir) = log.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
        }
        let created = monitor::spawn(&self.keel_exe, &spec).await.map_err(|e| match e {
            monitor::MonitorError::Runc(m) => format!(
                "failed to create containerd task: failed to create shim task: OCI runtime create failed: {m}: unknown"
            ),
            e => format!("failed to create containerd task: {e}"),
        })?;
        let started_at = now_ns();
        self.runc
            .start(&rec.id)
            .await
            .map_err(|e| format!("failed to start containerd task {:?}: {}: unknown", rec.id, e.message()))?;
        Ok((created.pid, started_at))
    }

    fn mark_exited(&self, id: &str) {
        if let Some(e) = self.lock().get(id) {
            e.exited.send_replace(true);
        }
    }

    /// Waits on the monitor in a task and records the exit the moment it comes.
    fn watch_exit(&self, id: &str) {
        let Some(me) = self.me.upgrade() else { return };
        let id = id.to_string();
        tokio::spawn(async move {
            let res = monitor::wait_exit(&me.state_dir(&id), &me.socket(&id)).await;
            let exit = match res {
                Ok(exit) => Some(exit),
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "lost the container's monitor");
                    None
                }
            };
            me.record_exit(&id, exit).await;
        });
    }

    /// Records an exit (None: unknown) and frees runc's state and cgroups, as containerd
    /// deletes the task when it exits.
    async fn record_exit(&self, id: &str, exit: Option<ExitRecord>) {
        let Some(mut rec) = self.get(id) else { return };
        if rec.state != RUNNING {
            return;
        }
        rec.state = EXITED;
        rec.pid = 0;
        match exit {
            Some(x) => {
                rec.exit_code = x.exit_code;
                rec.finished_at = x.finished_at_ns.max(rec.started_at);
                rec.reason = if x.oom_killed {
                    "OOMKilled"
                } else if x.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .to_string();
            }
            None => {
                rec.exit_code = UNKNOWN_EXIT_CODE;
                rec.finished_at = now_ns();
                rec.reason = UNKNOWN_EXIT_REASON.to_string();
            }
        }
        if let Err(e) = self.update(&rec) {
            // The exit is still the truth for status; the record on disk catches up at the next
            // change, and adoption reads the monitor's exit.json anyway.
            tracing::warn!(container = id, error = %e, "saving the container exit failed");
            if let Some(e) = self.lock().get_mut(id) {
                e.rec = rec.clone();
            }
        }
        self.mark_exited(id);
        self.events
            .emit(id, cri::ContainerEventType::ContainerStoppedEvent, rec.finished_at);
        if let Err(e) = self.runc.delete(id, true).await {
            tracing::warn!(container = id, error = %e, "runc delete after the exit failed");
        }
    }

    /// Waits until the exit is recorded, at most `limit`; whether it was.
    async fn wait_recorded(&self, id: &str, limit: Duration) -> bool {
        let rx = self.lock().get(id).map(|e| e.exited.subscribe());
        let Some(mut rx) = rx else { return true };
        let recorded = tokio::time::timeout(limit, rx.wait_for(|d| *d)).await.is_ok();
        recorded
    }

    /// StopContainer: the image's stop signal (SIGTERM), SIGKILL after `timeout`; returns once
    /// the exit is recorded. Not running: nothing to do.
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        const OP: &str = "StopContainer";
        let id = self.resolve(OP, id)?;
        let Some(rec) = self.get(&id) else { return Ok(()) };
        if rec.state != RUNNING {
            return Ok(());
        }
        if !timeout.is_zero() {
            let sig = if rec.stop_signal.is_empty() {
                "SIGTERM".to_string()
            } else {
                rec.stop_signal.clone()
            };
            match self.runc.kill(&id, &sig, false).await {
                Ok(()) => {}
                Err(e) if e.is_stopped() || e.is_not_exist() => {}
                Err(e) => {
                    return Err(err(
                        OP,
                        Code::Unknown,
                        format!("failed to stop container {id:?}: {}", e.message()),
                    ))
                }
            }
            if self.wait_recorded(&id, timeout).await {
                return Ok(());
            }
        }
        match self.runc.kill(&id, "SIGKILL", false).await {
            Ok(()) => {}
            Err(e) if e.is_stopped() || e.is_not_exist() => {}
            Err(e) => {
                return Err(err(
                    OP,
                    Code::Unknown,
                    format!("failed to kill container {id:?}: {}", e.message()),
                ))
            }
        }
        if self.wait_recorded(&id, KILL_WAIT).await {
            Ok(())
        } else {
            Err(err(
                OP,
                Code::DeadlineExceeded,
                format!("failed to stop container {id:?}: wait container: context deadline exceeded"),
            ))
        }
    }

    /// RemoveContainer: SIGKILL if running, then runc state, rootfs and records go. Unknown
    /// IDs are fine.
    pub async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let id = match resolve(&self.lock(), id) {
            Resolved::Found(id) => id,
            _ => return Ok(()),
        };
        self.stop(&id, Duration::ZERO).await?;
        let Some(op) = self.op_lock(&id) else { return Ok(()) };
        let _guard = op.lock().await;
        self.cleanup(&id).await;
        let entry = self.lock().remove(&id);
        if let Some(e) = entry {
            let mut names = self.names();
            if names.get(&e.name) == Some(&id) {
                names.remove(&e.name);
            }
            drop(names);
            self.events
                .emit(&id, cri::ContainerEventType::ContainerDeletedEvent, now_ns());
        }
        Ok(())
    }

    /// Loads the records and adopts what runs; directories without a record (a create cut
    /// short) are cleaned. `sandbox_config` names the sandboxes' configs for the name index.
    pub async fn adopt(&self, sandbox_config: impl Fn(&str) -> Option<cri::PodSandboxConfig>) {
        let dirs: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        for dir in dirs {
            let Some(id) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            let rec: Option<ContainerRecord> = std::fs::read(dir.join(RECORD))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let Some(rec) = rec else {
                tracing::info!(container = %id, "removing a container whose creation did not finish");
                self.cleanup(&id).await;
                continue;
            };
            let name = sandbox_config(&rec.sandbox_id)
                .map(|sb| container_name(&sb, &rec.config))
                .unwrap_or_else(|| format!("{id}-orphan"));
            let running = rec.state == RUNNING;
            self.insert(rec, name);
            if !running {
                continue;
            }
            let socket = self.socket(&id);
            if monitor::alive(&socket) {
                self.watch_exit(&id);
            } else {
                let state_dir = self.state_dir(&id);
                let exit = blocking(move || monitor::read_exit(&state_dir)).await.ok().flatten();
                if exit.is_none() {
                    tracing::warn!(container = %id, "container's monitor is gone and left no exit record");
                }
                self.record_exit(&id, exit).await;
            }
        }
    }
}

/// containerd's names for container states in error messages.
pub fn state_name(state: i32) -> &'static str {
    cri::ContainerState::try_from(state)
        .map(|s| s.as_str_name())
        .unwrap_or("CONTAINER_UNKNOWN")
}

fn spec_err(op: &'static str, e: spec::SpecError) -> RuntimeError {
    let code = if e.is_bad_request() {
        Code::InvalidArgument
    } else {
        Code::Unknown
    };
    RuntimeError::new(op, code, format!("failed to generate container spec: {e}"))
}

/// Runs blocking file-system work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, RuntimeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RuntimeError::new("native", Code::Internal, format!("blocking task failed: {e}")))
}

/// ListContainers' filter: ID (or prefix), sandbox ID (or prefix), state, labels.
pub fn filter(
    records: Vec<ContainerRecord>,
    f: Option<&cri::ContainerFilter>,
    sandbox_full_id: impl Fn(&str) -> String,
) -> Vec<cri::Container> {
    let Some(f) = f else {
        return records.iter().map(ContainerRecord::to_cri).collect();
    };
    let by_id: BTreeMap<String, ()> = records.iter().map(|r| (r.id.clone(), ())).collect();
    let id = (!f.id.is_empty()).then(|| match resolve(&by_id, &f.id) {
        Resolved::Found(id) => id,
        _ => f.id.clone(),
    });
    let sandbox = (!f.pod_sandbox_id.is_empty()).then(|| sandbox_full_id(&f.pod_sandbox_id));
    records
        .iter()
        .filter(|r| id.as_ref().is_none_or(|i| *i == r.id))
        .filter(|r| sandbox.as_ref().is_none_or(|s| *s == r.sandbox_id))
        .filter(|r| f.state.as_ref().is_none_or(|s| s.state == r.state))
        .filter(|r| f.label_selector.iter().all(|(k, v)| r.config.labels.get(k) == Some(v)))
        .map(ContainerRecord::to_cri)
        .collect()
}
