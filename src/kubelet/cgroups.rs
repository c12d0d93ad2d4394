//! Pod cgroups (the kubelet's pod container manager, cgroupfs driver): keel creates
//! `<cgroupRoot>/pod<uid>` before the sandbox and removes it once the pod terminated, and removes
//! orphans in housekeeping (kubelet-behavior.md §2.5). containerd only ever creates these parents
//! (via the sandbox `cgroup_parent`) and never removes them.
//!
//! Layout choice: keel uses the path the runtime manager puts in `cgroup_parent`
//! (`<cgroupRoot>/pod<uid>`, src/genericruntime/sandbox.rs) with no `kubepods` or QoS
//! (`burstable`/`besteffort`) levels; the kubelet nests pods under `kubepods/<qos>/`. The
//! cgroup root itself plays the role of `kubepods`.
//!
//! All host access goes through [`CgroupFs`], rooted at the cgroup mount point
//! (`/sys/fs/cgroup`), so tests can use a temporary directory as a fake mount.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::debug;

use crate::clock::Clock;
use crate::podspec::resources::{container_request_milli, parse_milli, parse_value, qos_class};

/// Where cgroup hierarchies are mounted on Linux.
pub const DEFAULT_CGROUP_MOUNT: &str = "/sys/fs/cgroup";

/// v1 controllers keel creates the pod cgroup in (the ones it sets or reads); removal covers
/// every hierarchy, since runc creates the parents in all of them.
const V1_CONTROLLERS: &[&str] = &["cpu", "cpuacct", "memory", "pids"];
/// The cgroup2 mount inside `/sys/fs/cgroup` on hybrid machines.
const HYBRID_UNIFIED: &str = "unified";
/// How often `destroy` retries a busy cgroup (a just-killed task may still hold it).
const DESTROY_ATTEMPTS: u32 = 20;
/// Virtual time between two removal attempts.
const DESTROY_RETRY: Duration = Duration::from_millis(100);

/// Errors of pod cgroup management.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("creating cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("removing cgroup {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading cgroup mount {path}: {source}")]
    ReadMount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid cgroup root {0:?}: must be an absolute path without `..`")]
    InvalidRoot(String),
}

/// The host's cgroup mount (or a fake one in tests).
#[derive(Clone, Debug)]
pub struct CgroupFs {
    mount: PathBuf,
}

impl CgroupFs {
    pub fn new(mount: impl Into<PathBuf>) -> Self {
        Self { mount: mount.into() }
    }

    /// True when `mount` is itself a cgroup2 (unified) mount.
    fn is_pure_v2(&self) -> bool {
        self.mount.join("cgroup.controllers").is_file()
    }

    /// Hierarchies the pod cgroup is created in: the v1 controllers keel uses that are mounted
    /// (symlinked co-mounts like `cpu -> cpu,cpuacct` counted once) and the unified mount.
    pub fn create_hierarchies(&self) -> Vec<PathBuf> {
        if self.is_pure_v2() {
            return vec![self.mount.clone()];
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for name in V1_CONTROLLERS.iter().chain(std::iter::once(&HYBRID_UNIFIED)) {
            let p = self.mount.join(name);
            if !p.is_dir() {
                continue;
            }
            let real = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
            if seen.insert(real.clone()) {
                out.push(real);
            }
        }
        out
    }

    /// Every mounted hierarchy (for removal and listing).
    pub fn all_hierarchies(&self) -> Result<Vec<PathBuf>, CgroupError> {
        if self.is_pure_v2() {
            return Ok(vec![self.mount.clone()]);
        }
        let entries = std::fs::read_dir(&self.mount).map_err(|source| CgroupError::ReadMount {
            path: self.mount.clone(),
            source,
        })?;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for e in entries.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            let real = std::fs::canonicalize(&p).unwrap_or(p);
            if seen.insert(real.clone()) {
                out.push(real);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The memory limit file of a hierarchy's cgroup, if this hierarchy has the memory
    /// controller (v1 `memory.limit_in_bytes`, v2 `memory.max`).
    fn memory_limit_file(&self, dir: &Path) -> Option<PathBuf> {
        ["memory.limit_in_bytes", "memory.max"]
            .into_iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
    }
}

/// Creates and removes pod cgroups under keel's cgroup root.
#[derive(Clone, Debug)]
pub struct PodCgroups {
    fs: CgroupFs,
    /// Relative path of the cgroup root inside each hierarchy (no leading `/`).
    root: PathBuf,
    /// Off for the simulated backend, which has no cgroups.
    enabled: bool,
    clock: Clock,
}

impl PodCgroups {
    /// `cgroup_root` is the `cgroupRoot` setting (`/`, `/keel`, ...).
    pub fn new(fs: CgroupFs, cgroup_root: &str, enabled: bool, clock: Clock) -> Result<Self, CgroupError> {
        if !cgroup_root.starts_with('/') || cgroup_root.split('/').any(|c| c == "..") {
            return Err(CgroupError::InvalidRoot(cgroup_root.to_string()));
        }
        Ok(Self {
            fs,
            root: PathBuf::from(cgroup_root.trim_matches('/')),
            enabled,
            clock,
        })
    }

    /// A manager that does nothing (the simulated backend).
    pub fn disabled(clock: Clock) -> Self {
        Self {
            fs: CgroupFs::new(DEFAULT_CGROUP_MOUNT),
            root: PathBuf::new(),
            enabled: false,
            clock,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The pod cgroup's directory name (`pod<uid>`), as in the sandbox's `cgroup_parent`.
    pub fn pod_dir_name(uid: &str) -> String {
        format!("pod{uid}")
    }

    fn relative(&self, uid: &str) -> Option<PathBuf> {
        // A UID from the API is opaque: never let it name another path.
        if uid.is_empty() || uid.contains('/') || uid == "." || uid == ".." {
            return None;
        }
        Some(self.root.join(Self::pod_dir_name(uid)))
    }

    /// `EnsureExists`: creates the pod cgroup in every hierarchy keel uses and applies the pod's
    /// memory limit when every container has one. No-op when disabled.
    pub fn ensure(&self, pod: &Pod) -> Result<(), CgroupError> {
        if !self.enabled {
            return Ok(());
        }
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let Some(rel) = self.relative(uid) else {
            return Err(CgroupError::InvalidRoot(format!("pod uid {uid:?}")));
        };
        let limit = pod_memory_limit(pod);
        let cpu = pod_cpu_config(pod);
        for h in self.fs.create_hierarchies() {
            let dir = h.join(&rel);
            std::fs::create_dir_all(&dir).map_err(|source| CgroupError::Create {
                path: dir.clone(),
                source,
            })?;
            if let (Some(bytes), Some(file)) = (limit, self.fs.memory_limit_file(&dir)) {
                std::fs::write(&file, bytes.to_string()).map_err(|source| CgroupError::Write { path: file, source })?;
            }
            for (file, value) in cpu_files(&dir, cpu) {
                std::fs::write(&file, value).map_err(|source| CgroupError::Write { path: file, source })?;
            }
        }
        Ok(())
    }

    /// Whether the pod cgroup exists in any hierarchy. False when disabled.
    pub fn exists(&self, uid: &str) -> bool {
        if !self.enabled {
            return false;
        }
        let Some(rel) = self.relative(uid) else {
            return false;
        };
        self.fs
            .all_hierarchies()
            .unwrap_or_default()
            .iter()
            .any(|h| h.join(&rel).is_dir())
    }

    /// UIDs of the pod cgroups present under the root in any hierarchy.
    pub fn list(&self) -> Result<Vec<String>, CgroupError> {
        if !self.enabled {
            return Ok(Vec::new());
        }
        let mut uids = HashSet::new();
        for h in self.fs.all_hierarchies()? {
            let Ok(entries) = std::fs::read_dir(h.join(&self.root)) else {
                continue;
            };
            for e in entries.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if let Some(uid) = e.file_name().to_str().and_then(|n| n.strip_prefix("pod")) {
                    if !uid.is_empty() {
                        uids.insert(uid.to_string());
                    }
                }
            }
        }
        let mut v: Vec<String> = uids.into_iter().collect();
        v.sort();
        Ok(v)
    }

    /// `Destroy`: removes the pod cgroup (and any leftover child cgroups) in every hierarchy,
    /// deepest first, retrying up to `attempts` times while a cgroup is still busy.
    pub async fn destroy(&self, uid: &str, attempts: u32) -> Result<(), CgroupError> {
        if !self.enabled {
            return Ok(());
        }
        let Some(rel) = self.relative(uid) else {
            return Ok(());
        };
        let mut dirs = Vec::new();
        for h in self.fs.all_hierarchies()? {
            collect_dirs(&h.join(&rel), &mut dirs);
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        // `tryKillingCgroupProcesses`: whatever still runs in the pod's cgroups once its
        // containers are stopped (a `runc init` of a container created but never started when
        // keel was killed, say) is SIGKILLed, so the cgroups can go.
        for d in &dirs {
            kill_cgroup_procs(d);
        }
        for d in dirs {
            let mut tries = 0;
            loop {
                tries += 1;
                match std::fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e) if tries < attempts.max(1) => {
                        debug!(cgroup = %d.display(), error = %e, "pod cgroup busy; retrying");
                        kill_cgroup_procs(&d);
                        self.clock.sleep(DESTROY_RETRY).await;
                    }
                    Err(source) => return Err(CgroupError::Remove { path: d, source }),
                }
            }
        }
        Ok(())
    }

    /// `destroy` with the default retry budget.
    pub async fn destroy_pod(&self, uid: &str) -> Result<(), CgroupError> {
        self.destroy(uid, DESTROY_ATTEMPTS).await
    }
}

/// SIGKILLs the processes listed in `dir/cgroup.procs` (never PID 1 or keel itself).
fn kill_cgroup_procs(dir: &Path) {
    let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
        return;
    };
    let me = std::process::id() as i32;
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        if pid <= 1 || pid == me {
            continue;
        }
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) => debug!(cgroup = %dir.display(), pid, "killed a process left in a pod cgroup"),
            // Gone meanwhile.
            Err(Errno::ESRCH) => {}
            Err(e) => debug!(cgroup = %dir.display(), pid, error = %e, "killing a process left in a pod cgroup failed"),
        }
    }
}

/// `dir` and every directory below it.
fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_owned());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// `MinShares` / `MaxShares` and the CFS period the kubelet uses.
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;
const CFS_PERIOD_US: i64 = 100_000;
const MIN_QUOTA_US: i64 = 1_000;

/// The pod cgroup's cpu settings (`ResourceConfigForPod`): shares from the cpu requests (the
/// minimum for BestEffort), and a CFS quota only when every container has a cpu limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodCpu {
    pub shares: u64,
    pub quota_us: Option<i64>,
}

/// `MilliCPUToShares`.
pub fn milli_cpu_to_shares(milli: i128) -> u64 {
    if milli <= 0 {
        return MIN_SHARES;
    }
    let shares = u64::try_from(milli * 1024 / 1000).unwrap_or(MAX_SHARES);
    shares.clamp(MIN_SHARES, MAX_SHARES)
}

/// `MilliCPUToQuota` for the default period.
pub fn milli_cpu_to_quota(milli: i128) -> i64 {
    let quota = i64::try_from(milli * i128::from(CFS_PERIOD_US) / 1000).unwrap_or(i64::MAX);
    quota.max(MIN_QUOTA_US)
}

/// The pod's cpu requests/limits (max of the app sum and the largest init container) and QoS
/// decide its cpu settings.
pub fn pod_cpu_config(pod: &Pod) -> PodCpu {
    let Some(spec) = pod.spec.as_ref() else {
        return PodCpu {
            shares: MIN_SHARES,
            quota_us: None,
        };
    };
    if qos_class(spec) == "BestEffort" {
        return PodCpu {
            shares: MIN_SHARES,
            quota_us: None,
        };
    }
    let inits = spec.init_containers.iter().flatten();
    let requests = spec
        .containers
        .iter()
        .map(|c| container_request_milli(c, "cpu"))
        .sum::<i128>()
        .max(
            inits
                .clone()
                .map(|c| container_request_milli(c, "cpu"))
                .max()
                .unwrap_or(0),
        );
    let limit = |c: &k8s_openapi::api::core::v1::Container| -> Option<i128> {
        let q = c.resources.as_ref()?.limits.as_ref()?.get("cpu")?;
        parse_milli(&q.0).ok()
    };
    let app: Option<i128> = spec.containers.iter().map(limit).sum();
    let init: Option<Vec<i128>> = inits.map(limit).collect();
    let limits = app.zip(init).map(|(a, i)| a.max(i.into_iter().max().unwrap_or(0)));
    PodCpu {
        shares: milli_cpu_to_shares(requests),
        quota_us: limits.filter(|l| *l > 0).map(milli_cpu_to_quota),
    }
}

/// The cpu control files of a hierarchy's cgroup and what to write (v1 `cpu.shares` and
/// `cpu.cfs_*`, v2 `cpu.weight` and `cpu.max`); none where the cpu controller is absent.
fn cpu_files(dir: &Path, cpu: PodCpu) -> Vec<(PathBuf, String)> {
    if dir.join("cpu.shares").is_file() {
        let mut out = vec![(dir.join("cpu.shares"), cpu.shares.to_string())];
        if let Some(q) = cpu.quota_us {
            out.push((dir.join("cpu.cfs_period_us"), CFS_PERIOD_US.to_string()));
            out.push((dir.join("cpu.cfs_quota_us"), q.to_string()));
        }
        return out;
    }
    if dir.join("cpu.weight").is_file() {
        // The kubelet's CpuSharesToCpuWeight.
        let weight = 1 + ((cpu.shares - MIN_SHARES) * 9999) / (MAX_SHARES - MIN_SHARES);
        let max = match cpu.quota_us {
            Some(q) => format!("{q} {CFS_PERIOD_US}"),
            None => format!("max {CFS_PERIOD_US}"),
        };
        return vec![(dir.join("cpu.weight"), weight.to_string()), (dir.join("cpu.max"), max)];
    }
    Vec::new()
}

/// The pod cgroup's memory limit in bytes (`ResourceConfigForPod`): set only when every
/// container (init and app) has a memory limit; max(sum of app limits, largest init limit)
/// plus overhead.
pub fn pod_memory_limit(pod: &Pod) -> Option<i128> {
    let spec = pod.spec.as_ref()?;
    let limit = |c: &k8s_openapi::api::core::v1::Container| -> Option<i128> {
        let q = c.resources.as_ref()?.limits.as_ref()?.get("memory")?;
        parse_value(&q.0).ok()
    };
    let mut sum: i128 = 0;
    for c in &spec.containers {
        sum += limit(c)?;
    }
    let mut init_max: i128 = 0;
    for c in spec.init_containers.iter().flatten() {
        init_max = init_max.max(limit(c)?);
    }
    let overhead = spec
        .overhead
        .as_ref()
        .and_then(|o| o.get("memory"))
        .and_then(|q| parse_value(&q.0).ok())
        .unwrap_or(0);
    let total = sum.max(init_max) + overhead;
    (total > 0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn pod(uid: &str, mem: &[Option<&str>]) -> Pod {
        let containers = mem
            .iter()
            .enumerate()
            .map(|(i, m)| Container {
                name: format!("c{i}"),
                resources: m.map(|m| ResourceRequirements {
                    limits: Some([("memory".to_string(), Quantity(m.to_string()))].into()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        Pod {
            metadata: kube::api::ObjectMeta {
                uid: Some(uid.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A fake hybrid mount: v1 `cpu,cpuacct` co-mount with symlinks, memory, pids, devices,
    /// and the unified mount.
    fn fake_mount() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for h in ["cpu,cpuacct", "memory", "pids", "devices", "unified"] {
            std::fs::create_dir(d.path().join(h)).unwrap();
        }
        std::os::unix::fs::symlink("cpu,cpuacct", d.path().join("cpu")).unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", d.path().join("cpuacct")).unwrap();
        d
    }

    fn mgr(mount: &Path, root: &str) -> PodCgroups {
        PodCgroups::new(CgroupFs::new(mount), root, true, Clock::real()).unwrap()
    }

    #[test]
    fn ensure_creates_in_used_hierarchies_once() {
        let m = fake_mount();
        let c = mgr(m.path(), "/keel/run1");
        c.ensure(&pod("u1", &[None])).unwrap();
        for h in ["cpu,cpuacct", "memory", "pids", "unified"] {
            assert!(m.path().join(h).join("keel/run1/podu1").is_dir(), "{h}");
        }
        // Not a hierarchy keel uses.
        assert!(!m.path().join("devices/keel/run1/podu1").exists());
        assert!(c.exists("u1"));
        assert!(!c.exists("u2"));
        assert_eq!(c.list().unwrap(), vec!["u1".to_string()]);
    }

    #[tokio::test(start_paused = true)]
    async fn destroy_removes_children_in_every_hierarchy() {
        let m = fake_mount();
        let c = mgr(m.path(), "/");
        c.ensure(&pod("u1", &[None])).unwrap();
        // runc's container cgroups, also in a hierarchy keel does not create in.
        std::fs::create_dir_all(m.path().join("memory/podu1/ctr-a/sub")).unwrap();
        std::fs::create_dir_all(m.path().join("devices/podu1/ctr-a")).unwrap();
        c.ensure(&pod("u2", &[None])).unwrap();
        c.destroy_pod("u1").await.unwrap();
        assert!(!c.exists("u1"));
        assert!(!m.path().join("devices/podu1").exists());
        assert!(c.exists("u2"), "other pods untouched");
        // Idempotent.
        c.destroy_pod("u1").await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn destroy_gives_up_with_an_error_when_busy() {
        let m = fake_mount();
        let c = mgr(m.path(), "/");
        c.ensure(&pod("u1", &[None])).unwrap();
        // A regular file makes rmdir fail (a stand-in for a cgroup with tasks).
        std::fs::write(m.path().join("pids/podu1/tasks"), "1").unwrap();
        let err = c.destroy("u1", 3).await.unwrap_err();
        assert!(matches!(err, CgroupError::Remove { .. }), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn destroy_kills_what_still_runs_in_the_pod_cgroup() {
        let m = fake_mount();
        let c = mgr(m.path(), "/");
        c.ensure(&pod("u1", &[None])).unwrap();
        let mut left = std::process::Command::new("sleep").arg("600").spawn().unwrap();
        let ctr = m.path().join("pids/podu1/ctr-a");
        std::fs::create_dir_all(&ctr).unwrap();
        std::fs::write(ctr.join("cgroup.procs"), format!("{}\n", left.id())).unwrap();
        // The fake cgroup stays "busy" (a file in it): the error comes, the process is gone.
        assert!(c.destroy("u1", 1).await.is_err());
        let status = left.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(Signal::SIGKILL as i32)
        );
    }

    #[test]
    fn pure_v2_mount_is_one_hierarchy() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
        let c = mgr(d.path(), "/kubepods");
        c.ensure(&pod("u1", &[None])).unwrap();
        assert!(d.path().join("kubepods/podu1").is_dir());
        assert_eq!(c.list().unwrap(), vec!["u1".to_string()]);
    }

    #[test]
    fn memory_limit_written_when_file_present() {
        let m = fake_mount();
        let c = mgr(m.path(), "/");
        // Real cgroupfs creates control files with the directory; emulate the memory one.
        std::fs::create_dir_all(m.path().join("memory/podu1")).unwrap();
        std::fs::write(m.path().join("memory/podu1/memory.limit_in_bytes"), "max").unwrap();
        c.ensure(&pod("u1", &[Some("64Mi"), Some("1Gi")])).unwrap();
        let v = std::fs::read_to_string(m.path().join("memory/podu1/memory.limit_in_bytes")).unwrap();
        assert_eq!(v, (64i128 * 1024 * 1024 + 1024 * 1024 * 1024).to_string());
    }

    fn cpu_pod(cpu: &[(Option<&str>, Option<&str>)]) -> Pod {
        let mut p = pod("u", &[]);
        p.spec.as_mut().unwrap().containers = cpu
            .iter()
            .enumerate()
            .map(|(i, (req, lim))| Container {
                name: format!("c{i}"),
                resources: Some(ResourceRequirements {
                    requests: req.map(|r| [("cpu".to_string(), Quantity(r.into()))].into()),
                    limits: lim.map(|l| [("cpu".to_string(), Quantity(l.into()))].into()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        p
    }

    /// `TestResourceConfigForPod` (cpu part) and `TestMilliCPUToQuota`/`TestMilliCPUToShares`.
    #[test]
    fn pod_cpu_by_qos_class() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(100), 102);
        assert_eq!(milli_cpu_to_shares(1000), 1024);
        assert_eq!(milli_cpu_to_shares(500_000), 262_144);
        assert_eq!(milli_cpu_to_quota(5), 1000);
        assert_eq!(milli_cpu_to_quota(250), 25_000);
        // BestEffort: minimum shares, no quota.
        assert_eq!(
            pod_cpu_config(&cpu_pod(&[(None, None)])),
            PodCpu {
                shares: 2,
                quota_us: None
            }
        );
        // Burstable without limits: shares only.
        assert_eq!(
            pod_cpu_config(&cpu_pod(&[(Some("100m"), None), (Some("200m"), None)])),
            PodCpu {
                shares: 307,
                quota_us: None
            }
        );
        // Burstable where one container has no cpu limit: no quota.
        assert_eq!(
            pod_cpu_config(&cpu_pod(&[(Some("100m"), Some("200m")), (Some("100m"), None)])).quota_us,
            None
        );
        // Guaranteed (the limit defaults the request): shares and quota.
        assert_eq!(
            pod_cpu_config(&cpu_pod(&[(None, Some("200m")), (None, Some("300m"))])),
            PodCpu {
                shares: 512,
                quota_us: Some(50_000)
            }
        );
    }

    #[test]
    fn cpu_files_for_v1_and_v2() {
        let d = tempfile::tempdir().unwrap();
        let cpu = PodCpu {
            shares: 512,
            quota_us: Some(50_000),
        };
        assert!(cpu_files(d.path(), cpu).is_empty());
        std::fs::write(d.path().join("cpu.weight"), "100").unwrap();
        let v2 = cpu_files(d.path(), cpu);
        assert_eq!(v2[0].1, "20");
        assert_eq!(v2[1].1, "50000 100000");
        std::fs::write(d.path().join("cpu.shares"), "1024").unwrap();
        let v1: Vec<String> = cpu_files(d.path(), cpu).into_iter().map(|(_, v)| v).collect();
        assert_eq!(v1, ["512", "100000", "50000"]);
    }

    #[test]
    fn memory_limit_only_when_all_containers_have_one() {
        assert_eq!(pod_memory_limit(&pod("u", &[Some("1Mi"), None])), None);
        assert_eq!(pod_memory_limit(&pod("u", &[None])), None);
        assert_eq!(pod_memory_limit(&pod("u", &[Some("1M")])), Some(1_000_000));
        let mut p = pod("u", &[Some("10Mi")]);
        p.spec.as_mut().unwrap().init_containers = Some(vec![Container {
            name: "i".into(),
            resources: Some(ResourceRequirements {
                limits: Some([("memory".to_string(), Quantity("20Mi".into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        assert_eq!(pod_memory_limit(&p), Some(20 * 1024 * 1024));
    }

    #[tokio::test]
    async fn disabled_is_a_no_op() {
        let m = fake_mount();
        let c = PodCgroups::new(CgroupFs::new(m.path()), "/", false, Clock::real()).unwrap();
        c.ensure(&pod("u1", &[None])).unwrap();
        assert!(!m.path().join("memory/podu1").exists());
        assert!(c.list().unwrap().is_empty());
        c.destroy_pod("u1").await.unwrap();
    }

    #[test]
    fn bad_roots_and_uids_are_refused() {
        let m = fake_mount();
        assert!(PodCgroups::new(CgroupFs::new(m.path()), "keel", true, Clock::real()).is_err());
        assert!(PodCgroups::new(CgroupFs::new(m.path()), "/a/../b", true, Clock::real()).is_err());
        let c = mgr(m.path(), "/");
        assert!(c.ensure(&pod("../x", &[None])).is_err());
        assert!(!c.exists("../x"));
    }
}
