//! The stock kubelet v1.24 as a child process of a test or bench: on any CRI runtime (`keel cri`,
//! or the real containerd of scripts/containerd-env.sh), in a private directory, with a cgroup
//! root of its own, stopped by PID when dropped and its pods' cgroups, log directories and mounts
//! removed then.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use super::keel::unmount_under;
use super::util::{cgroup_dirs, node_cgroup_root, remove_cgroup_tree_now};

/// The stock kubelet: `$KUBEBUILDER_ASSETS/kubelet`, else the shared envtest directory.
pub fn kubelet_binary() -> Option<PathBuf> {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/envtest/kubelet");
    std::env::var_os("KUBEBUILDER_ASSETS")
        .map(|d| PathBuf::from(d).join("kubelet"))
        .filter(|p| p.is_file())
        .or_else(|| Some(shared).filter(|p| p.is_file()))
}

/// The KubeletConfiguration lines every run shares: cgroupfs (no systemd here), no
/// swap check, and eviction thresholds low enough for the shared disks.
pub const BASE_CONFIG: &str = r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
readOnlyPort: 0
cgroupDriver: cgroupfs
failSwapOn: false
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
"#;

/// A pod the kubelet ran, for the clean-up of what it leaves on the host.
struct PodRef {
    namespace: String,
    name: String,
    uid: String,
}

/// The stock kubelet, stopped by PID when dropped; then its pods' cgroups, log directories and
/// mounts are removed.
pub struct StockKubelet {
    child: std::process::Child,
    /// The private directory (the kubelet's root dir is under it).
    dir: PathBuf,
    log: PathBuf,
    /// Its cgroup root: `$KEEL_TEST_CGROUP_ROOT/<node>` (support::util::node_cgroup_root), its
    /// own so that two node agents on the host never take each other's pod cgroups for orphans
    /// (a kubelet kills a pod whose cgroup went missing). The kubelet wants it to exist already.
    cgroup: String,
    pods: Vec<PodRef>,
}

impl StockKubelet {
    /// Starts `binary` as node `node` on the CRI socket `runtime` with KubeletConfiguration
    /// `config`, its files under `dir`, registered with the API server of `kubeconfig` if one is
    /// given.
    pub fn spawn(
        binary: &Path,
        runtime: &Path,
        dir: &Path,
        node: &str,
        config: &str,
        kubeconfig: Option<&Path>,
    ) -> Result<Self> {
        let cgroup = node_cgroup_root(node);
        create_cgroup(&cgroup)?;
        let config_file = dir.join("kubelet.yaml");
        std::fs::write(&config_file, format!("{config}cgroupRoot: {cgroup}\n")).context("writing kubelet.yaml")?;
        let log = dir.join("kubelet.log");
        let mut cmd = std::process::Command::new(binary);
        cmd.args(["--hostname-override", node, "--container-runtime", "remote"])
            .arg(format!("--container-runtime-endpoint=unix://{}", runtime.display()))
            .arg(format!("--config={}", config_file.display()))
            .arg(format!("--root-dir={}", dir.join("kubelet").display()))
            .arg(format!("--cert-dir={}", dir.join("kubelet/pki").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).context("creating kubelet.log")?);
        if let Some(k) = kubeconfig {
            cmd.arg(format!("--kubeconfig={}", k.display()));
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                remove_cgroup(&cgroup);
                return Err(e).context("spawning the kubelet");
            }
        };
        Ok(StockKubelet {
            child,
            dir: dir.to_path_buf(),
            log,
            cgroup,
            pods: Vec::new(),
        })
    }

    /// The kubelet's process ID.
    #[allow(dead_code)] // not every user reads it
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Records a pod for the clean-up.
    pub fn ran(&mut self, pod: &Value) {
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        if uid.is_empty() || self.pods.iter().any(|p| p.uid == uid) {
            return;
        }
        self.pods.push(PodRef {
            namespace: pod["metadata"]["namespace"].as_str().unwrap_or("default").to_string(),
            name: pod["metadata"]["name"].as_str().unwrap_or_default().to_string(),
            uid: uid.to_string(),
        });
    }

    /// SIGTERM, then SIGKILL after 20 s; reaped.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        for _ in 0..200 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for StockKubelet {
    fn drop(&mut self) {
        self.stop();
        remove_cgroup(&self.cgroup);
        for p in &self.pods {
            // The kubelet's log directory and /var/log/containers links (its root is fixed).
            let _ = std::fs::remove_dir_all(format!("/var/log/pods/{}_{}_{}", p.namespace, p.name, p.uid));
            let prefix = format!("{}_{}_", p.name, p.namespace);
            for e in std::fs::read_dir("/var/log/containers").into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        // The kubelet bind-mounts its root directory onto itself (rshared) and mounts volumes.
        unmount_under(&self.dir);
    }
}

fn create_cgroup(cgroup: &str) -> Result<()> {
    for d in cgroup_dirs(cgroup) {
        // Only in mounted hierarchies (not the tmpfs that holds the v1 mounts).
        let mount = d
            .ancestors()
            .nth(Path::new(cgroup.trim_start_matches('/')).components().count());
        if mount.is_some_and(|m| m.join("cgroup.procs").exists()) {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
    }
    cgroup_dirs(cgroup)
        .iter()
        .any(|d| d.is_dir())
        .then_some(())
        .with_context(|| format!("could not create cgroup {cgroup}"))
}

/// Removes `cgroup` and everything under it, deepest first (their processes must be gone: the
/// pods deleted, or a runtime that runs none).
pub fn remove_cgroup(cgroup: &str) {
    remove_cgroup_tree_now(cgroup);
}
