//! The sandbox record: what keel remembers of a pod sandbox across restarts, written atomically as
//! `<root_dir>/native/sandboxes/<id>/record.json`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::genericruntime::seam::cri;

/// CRI sandbox state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxState {
    Ready,
    NotReady,
}

/// One pod sandbox: its config as given, and where its namespaces and files are.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct SandboxRecord {
    pub id: String,
    /// The CRI config as the kubelet sent it (stored as JSON).
    pub config: cri::PodSandboxConfig,
    #[serde(default)]
    pub runtime_handler: String,
    pub created_at_ns: i64,
    pub state: SandboxState,
    /// Pinned network namespace; None with hostNetwork.
    pub netns: Option<PathBuf>,
    /// Pinned IPC namespace; None with hostIPC.
    pub ipcns: Option<PathBuf>,
    /// Pinned UTS namespace; None with hostNetwork (a host-network pod keeps the node's name).
    pub utsns: Option<PathBuf>,
    /// `/proc/<pause pid>/ns/pid`: Some only with shareProcessNamespace (CRI pid POD).
    pub pidns: Option<PathBuf>,
    /// The pause process (PID 1 of the pod's PID namespace) and its start time in clock ticks
    /// since boot (`/proc/<pid>/stat` field 22), which tells it from a later process with the
    /// same pid.
    #[serde(default)]
    pub pause_pid: Option<i32>,
    #[serde(default)]
    pub pause_start_ticks: Option<u64>,
    /// Pod IP from the CNI result (first IPv4 of eth0, else its first IP); None with hostNetwork.
    pub ip: Option<String>,
    pub additional_ips: Vec<String>,
    pub hostname_file: PathBuf,
    pub hosts_file: PathBuf,
    pub resolv_file: PathBuf,
    /// The sandbox's /dev/shm: a 64 MiB tmpfs, or the host's /dev/shm with hostIPC.
    pub shm: PathBuf,
    /// `linux.cgroup_parent` of the config ("" when none).
    pub cgroup_parent: String,
}

impl SandboxRecord {
    pub fn host_network(&self) -> bool {
        namespace_mode(&self.config, |o| o.network) == cri::NamespaceMode::Node
    }

    pub fn host_ipc(&self) -> bool {
        namespace_mode(&self.config, |o| o.ipc) == cri::NamespaceMode::Node
    }

    /// `metadata.name`, `metadata.namespace`, `metadata.uid` ("" when absent).
    pub fn pod_name(&self) -> (&str, &str, &str) {
        match &self.config.metadata {
            Some(m) => (&m.name, &m.namespace, &m.uid),
            None => ("", "", ""),
        }
    }
}

/// A namespace mode of the config's `linux.security_context.namespace_options` (POD when unset,
/// as CRI defines; the kubelet always sets pid explicitly).
pub fn namespace_mode(
    config: &cri::PodSandboxConfig,
    field: impl Fn(&cri::NamespaceOption) -> i32,
) -> cri::NamespaceMode {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .map(|o| cri::NamespaceMode::try_from(field(o)).unwrap_or(cri::NamespaceMode::Pod))
        .unwrap_or(cri::NamespaceMode::Pod)
}

/// Writes `bytes` to `path` atomically: a temp file beside it, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

pub fn save(dir: &Path, record: &SandboxRecord) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    write_atomic(&dir.join("record.json"), &bytes)
}

pub fn load(dir: &Path) -> io::Result<SandboxRecord> {
    let bytes = fs::read(dir.join("record.json"))?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A new sandbox ID: 64 lowercase hex digits, as containerd's.
pub fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = cri::PodSandboxConfig {
            hostname: "web-0".into(),
            ..Default::default()
        };
        config.labels.insert("app".into(), "web".into());
        let rec = SandboxRecord {
            id: new_id(),
            config,
            runtime_handler: String::new(),
            created_at_ns: 42,
            state: SandboxState::Ready,
            netns: Some("/run/keel/ns/net/x".into()),
            ipcns: None,
            utsns: None,
            pidns: None,
            pause_pid: None,
            pause_start_ticks: None,
            ip: Some("10.1.0.2".into()),
            additional_ips: vec!["fd00::2".into()],
            hostname_file: "/h".into(),
            hosts_file: "/hh".into(),
            resolv_file: "/r".into(),
            shm: "/s".into(),
            cgroup_parent: "/kubepods/pod1".into(),
        };
        save(dir.path(), &rec).unwrap();
        let back = load(dir.path()).unwrap();
        assert_eq!(back.id, rec.id);
        assert_eq!(back.config, rec.config);
        assert_eq!(back.ip.as_deref(), Some("10.1.0.2"));
        assert_eq!(back.state, SandboxState::Ready);
        assert_eq!(rec.id.len(), 64);
        assert!(rec.id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn namespace_modes_default_to_pod() {
        let mut config = cri::PodSandboxConfig::default();
        assert_eq!(namespace_mode(&config, |o| o.network), cri::NamespaceMode::Pod);
        config.linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(namespace_mode(&config, |o| o.network), cri::NamespaceMode::Node);
        assert_eq!(namespace_mode(&config, |o| o.pid), cri::NamespaceMode::Container);
        assert_eq!(namespace_mode(&config, |o| o.ipc), cri::NamespaceMode::Pod);
    }
}
