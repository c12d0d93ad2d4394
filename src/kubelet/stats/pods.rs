//! Per-pod and per-container stats: the CRI figures (ListContainerStats, ListPodSandboxStats)
//! turned into Summary API entries, the pod cgroup as the fallback for pod CPU/memory/processes
//! (cgroupfs files, v1 hierarchies or the unified mount, as src/kubelet/cgroups.rs lays them
//! out), the sandbox's network namespace (`/proc/<pid>/net/dev`), log sizes, and the CPU rate
//! (`usageNanoCores`) from two cumulative samples.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::types::{ContainerStats, CpuStats, FsStats, MemoryStats, PodReference, PodStats, VolumeStats};
use crate::genericruntime::cri;
use crate::kubelet::cgroups::PodCgroups;

/// Memory limits at or above this mean "no limit" (cgroup v1 reports 2^63 rounded to pages).
const NO_LIMIT_THRESHOLD: u64 = 1 << 62;

/// A Go `metav1.Time` from CRI nanoseconds; 0 is the zero time.
pub fn time_from_ns(ns: i64) -> Option<jiff::Timestamp> {
    (ns != 0)
        .then(|| jiff::Timestamp::from_nanosecond(i128::from(ns)).ok())
        .flatten()
}

fn ns_of(t: jiff::Timestamp) -> i64 {
    i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX)
}

fn val(v: &Option<cri::UInt64Value>) -> Option<u64> {
    v.as_ref().map(|v| v.value)
}

// ----- CPU rate -----------------------------------------------------------------------------

/// One cumulative CPU sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuSample {
    pub timestamp_ns: i64,
    pub usage_core_nano_seconds: u64,
}

/// The rate between two samples in nano-cores (`getAndUpdateContainerUsageNanoCores`): `None`
/// when the counter went backwards (a new container under the same key) or time did not move.
pub fn nano_cores(prev: CpuSample, cur: CpuSample) -> Option<u64> {
    if cur.usage_core_nano_seconds < prev.usage_core_nano_seconds {
        return None;
    }
    let elapsed = cur.timestamp_ns.checked_sub(prev.timestamp_ns)?;
    if elapsed <= 0 {
        return None;
    }
    let used = (cur.usage_core_nano_seconds - prev.usage_core_nano_seconds) as f64;
    Some((used / elapsed as f64 * 1e9) as u64)
}

#[derive(Clone, Copy, Debug)]
struct CpuRecord {
    sample: CpuSample,
    nano_cores: Option<u64>,
}

/// The previous CPU sample per key (container ID, `pod/<uid>`, `node`), like the kubelet's
/// `cpuUsageCache`.
#[derive(Debug, Default)]
pub struct CpuRateCache {
    entries: Mutex<HashMap<String, CpuRecord>>,
}

impl CpuRateCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CpuRecord>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `cur` and returns the rate since the previous sample of `key`. A sample no newer
    /// than the cached one leaves the cache as it is and answers the cached rate.
    pub fn update(&self, key: &str, cur: CpuSample) -> Option<u64> {
        let mut m = self.lock();
        if let Some(prev) = m.get(key) {
            if cur.timestamp_ns == prev.sample.timestamp_ns
                && cur.usage_core_nano_seconds == prev.sample.usage_core_nano_seconds
            {
                return prev.nano_cores;
            }
        }
        let rate = m.get(key).and_then(|prev| nano_cores(prev.sample, cur));
        m.insert(
            key.to_string(),
            CpuRecord {
                sample: cur,
                nano_cores: rate,
            },
        );
        rate
    }

    /// The last computed rate of `key`, without recording anything (the CPU/memory-only
    /// summary reads the cache as the kubelet's does).
    pub fn get(&self, key: &str) -> Option<u64> {
        self.lock().get(key).and_then(|r| r.nano_cores)
    }

    /// Drops the keys not seen in the latest full listing.
    pub fn retain(&self, live: &HashSet<String>) {
        self.lock().retain(|k, _| live.contains(k));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ----- pod cgroup ---------------------------------------------------------------------------

/// What a pod cgroup says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupSample {
    pub cpu_ns: Option<u64>,
    pub memory: Option<MemoryStats>,
    pub pids: Option<u64>,
}

/// Reads cgroups below keel's cgroup root (pure v2 mount, or v1 `cpuacct`/`memory`/`pids`
/// hierarchies on hybrid and v1 machines).
#[derive(Clone, Debug)]
pub struct CgroupReader {
    mount: PathBuf,
    /// The cgroup root relative to each hierarchy (no leading `/`).
    root: PathBuf,
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A `key value` line of `memory.stat` / `cpu.stat`.
pub fn parse_flat_keyed(s: &str, key: &str) -> Option<u64> {
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Memory stats of a cgroup from its usage, `memory.stat` text and limit (`None`: unlimited).
/// `v2` picks the key names (`inactive_file`/`anon` vs v1's hierarchical `total_*`).
pub fn cgroup_memory(usage: u64, stat: &str, limit: Option<u64>, v2: bool, now: jiff::Timestamp) -> MemoryStats {
    let key = |v1: &'static str, v2key: &'static str| parse_flat_keyed(stat, if v2 { v2key } else { v1 });
    let inactive_file = key("total_inactive_file", "inactive_file").unwrap_or(0);
    let working_set = usage.saturating_sub(inactive_file);
    MemoryStats {
        time: Some(now),
        // Omitted without a limit (cAdvisor reports no availability for unlimited cgroups).
        available_bytes: limit
            .filter(|l| *l < NO_LIMIT_THRESHOLD)
            .map(|l| l.saturating_sub(working_set)),
        usage_bytes: Some(usage),
        working_set_bytes: Some(working_set),
        rss_bytes: key("total_rss", "anon"),
        page_faults: key("total_pgfault", "pgfault"),
        major_page_faults: key("total_pgmajfault", "pgmajfault"),
    }
}

impl CgroupReader {
    pub fn new(mount: impl Into<PathBuf>, cgroup_root: &str) -> Self {
        Self {
            mount: mount.into(),
            root: PathBuf::from(cgroup_root.trim_matches('/')),
        }
    }

    fn pure_v2(&self) -> bool {
        self.mount.join("cgroup.controllers").is_file()
    }

    /// The pod cgroup of `uid` (`<root>/pod<uid>`), `None` for a UID that could name another path.
    pub fn pod(&self, uid: &str, now: jiff::Timestamp) -> Option<CgroupSample> {
        if uid.is_empty() || uid.contains('/') || uid == "." || uid == ".." {
            return None;
        }
        self.read(&self.root.join(PodCgroups::pod_dir_name(uid)), now)
    }

    /// The cgroup root itself (the Summary's `pods` system container).
    pub fn root(&self, now: jiff::Timestamp) -> Option<CgroupSample> {
        self.read(&self.root, now)
    }

    /// Reads one cgroup; `None` when it exists in no hierarchy.
    pub fn read(&self, rel: &Path, now: jiff::Timestamp) -> Option<CgroupSample> {
        if self.pure_v2() {
            let dir = self.mount.join(rel);
            if !dir.is_dir() {
                return None;
            }
            let cpu_ns = std::fs::read_to_string(dir.join("cpu.stat"))
                .ok()
                .and_then(|s| parse_flat_keyed(&s, "usage_usec"))
                .map(|us| us.saturating_mul(1000));
            let memory = read_u64(&dir.join("memory.current")).map(|usage| {
                let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
                let limit = read_u64(&dir.join("memory.max"));
                cgroup_memory(usage, &stat, limit, true, now)
            });
            return Some(CgroupSample {
                cpu_ns,
                memory,
                pids: read_u64(&dir.join("pids.current")),
            });
        }
        let cpu_dir = self.mount.join("cpuacct").join(rel);
        let mem_dir = self.mount.join("memory").join(rel);
        let pids_dir = self.mount.join("pids").join(rel);
        if !cpu_dir.is_dir() && !mem_dir.is_dir() && !pids_dir.is_dir() {
            return None;
        }
        let memory = read_u64(&mem_dir.join("memory.usage_in_bytes")).map(|usage| {
            let stat = std::fs::read_to_string(mem_dir.join("memory.stat")).unwrap_or_default();
            let limit = read_u64(&mem_dir.join("memory.limit_in_bytes"));
            cgroup_memory(usage, &stat, limit, false, now)
        });
        Some(CgroupSample {
            cpu_ns: read_u64(&cpu_dir.join("cpuacct.usage")),
            memory,
            pids: read_u64(&pids_dir.join("pids.current")),
        })
    }
}

// ----- sandbox network namespace ------------------------------------------------------------

/// The sandbox's PID from a verbose PodSandboxStatus (containerd: `info["info"]` is JSON with
/// `"pid"`).
pub fn sandbox_pid(info: &HashMap<String, String>) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    let pid = v.get("pid")?.as_u64()?;
    u32::try_from(pid).ok().filter(|p| *p > 0)
}

// ----- logs ---------------------------------------------------------------------------------

/// Bytes and files under a container's log directory (`<podLogsDir>/<ns>_<name>_<uid>/<container>`,
/// rotated files included), as the kubelet's `getPodContainerLogStats` measures it.
pub fn dir_usage(dir: &Path) -> Option<(u64, u64)> {
    let entries = std::fs::read_dir(dir).ok()?;
    let (mut bytes, mut files) = (0u64, 0u64);
    for e in entries.flatten() {
        if let Ok(m) = e.metadata() {
            if m.is_file() {
                bytes = bytes.saturating_add(m.len());
                files += 1;
            }
        }
    }
    Some((bytes, files))
}

// ----- assembly -----------------------------------------------------------------------------

/// The podRef of a sandbox.
pub fn pod_ref(sandbox: &cri::PodSandbox) -> PodReference {
    let m = sandbox.metadata.clone().unwrap_or_default();
    PodReference {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
    }
}

/// `removeTerminatedPods`: per pod, every READY sandbox, or the newest one when none is ready.
pub fn live_sandboxes(mut sandboxes: Vec<cri::PodSandbox>) -> Vec<cri::PodSandbox> {
    sandboxes.sort_by_key(|s| s.created_at);
    let mut by_pod: HashMap<PodReference, Vec<cri::PodSandbox>> = HashMap::new();
    for s in sandboxes {
        by_pod.entry(pod_ref(&s)).or_default().push(s);
    }
    let ready = cri::PodSandboxState::SandboxReady as i32;
    let mut out = Vec::new();
    for (_, mut v) in by_pod {
        if v.iter().any(|s| s.state == ready) {
            out.extend(v.into_iter().filter(|s| s.state == ready));
        } else if let Some(last) = v.pop() {
            out.push(last);
        }
    }
    out
}

/// CPU stats of a container from its CRI figures (`makeContainerStats`): both fields present
/// once there is a sample, zeros when the runtime gave none. `rate` is the rate computed from
/// the cache when the runtime does not report one.
pub fn container_cpu(cpu: Option<&cri::CpuUsage>, rate: Option<u64>, now: jiff::Timestamp) -> CpuStats {
    match cpu {
        Some(c) => CpuStats {
            time: time_from_ns(c.timestamp).or(Some(now)),
            usage_nano_cores: val(&c.usage_nano_cores).or(rate),
            usage_core_nano_seconds: val(&c.usage_core_nano_seconds),
        },
        None => CpuStats {
            time: Some(now),
            usage_nano_cores: Some(0),
            usage_core_nano_seconds: Some(0),
        },
    }
}

/// Memory stats from CRI (`workingSetBytes: 0` when the runtime gave none, as the kubelet).
/// An `available_bytes` of 0 is containerd's "no limit" and is left out.
pub fn container_memory(mem: Option<&cri::MemoryUsage>, now: jiff::Timestamp) -> MemoryStats {
    match mem {
        Some(m) => MemoryStats {
            time: time_from_ns(m.timestamp).or(Some(now)),
            available_bytes: val(&m.available_bytes).filter(|v| *v > 0),
            usage_bytes: val(&m.usage_bytes),
            working_set_bytes: Some(val(&m.working_set_bytes).unwrap_or(0)),
            rss_bytes: val(&m.rss_bytes),
            page_faults: val(&m.page_faults),
            major_page_faults: val(&m.major_page_faults),
        },
        None => MemoryStats {
            time: Some(now),
            working_set_bytes: Some(0),
            ..Default::default()
        },
    }
}

/// The rate-cache key of a pod.
pub fn pod_key(uid: &str) -> String {
    format!("pod/{uid}")
}

/// The CPU rate of a CRI sample through the cache (`update` = full summary; otherwise read).
pub fn cached_rate(cache: &CpuRateCache, key: &str, cpu: &cri::CpuUsage, update: bool) -> Option<u64> {
    if let Some(v) = val(&cpu.usage_nano_cores) {
        return Some(v);
    }
    let usage = val(&cpu.usage_core_nano_seconds)?;
    if !update {
        return cache.get(key);
    }
    cache.update(
        key,
        CpuSample {
            timestamp_ns: cpu.timestamp,
            usage_core_nano_seconds: usage,
        },
    )
}

/// Pod CPU/memory as the sum of its containers (`addPodCPUMemoryStats` without a pod cgroup).
pub fn sum_containers(containers: &[ContainerStats], now: jiff::Timestamp) -> (CpuStats, MemoryStats) {
    let mut cpu = CpuStats {
        time: Some(now),
        usage_nano_cores: Some(0),
        usage_core_nano_seconds: Some(0),
    };
    let mut mem = MemoryStats {
        time: Some(now),
        working_set_bytes: Some(0),
        ..Default::default()
    };
    let add = |acc: &mut Option<u64>, v: Option<u64>| {
        if let Some(v) = v {
            *acc = Some(acc.unwrap_or(0).saturating_add(v));
        }
    };
    for c in containers {
        if let Some(c) = &c.cpu {
            add(&mut cpu.usage_nano_cores, c.usage_nano_cores);
            add(&mut cpu.usage_core_nano_seconds, c.usage_core_nano_seconds);
        }
        if let Some(m) = &c.memory {
            add(&mut mem.working_set_bytes, m.working_set_bytes);
            add(&mut mem.usage_bytes, m.usage_bytes);
            add(&mut mem.rss_bytes, m.rss_bytes);
            add(&mut mem.page_faults, m.page_faults);
            add(&mut mem.major_page_faults, m.major_page_faults);
        }
    }
    (cpu, mem)
}

/// The pod's volumes under `<root>/pods/<uid>/volumes/<plugin>/<name>` (`MetricsDu` for the
/// used bytes and inodes, statfs of the volume's filesystem for capacity and availability, as
/// the kubelet's emptyDir, configMap, secret, downwardAPI and projected plugins report them;
/// hostPath volumes live elsewhere and, as in the kubelet, have no stats). None without volumes.
pub fn volume_stats(volumes_dir: &Path, now: jiff::Timestamp) -> Option<Vec<VolumeStats>> {
    let mut out = Vec::new();
    for plugin in std::fs::read_dir(volumes_dir).ok()?.flatten() {
        let Ok(entries) = std::fs::read_dir(plugin.path()) else {
            continue;
        };
        for vol in entries.flatten() {
            let path = vol.path();
            let Ok(mut fs) = super::node::fs_stats(&path, now) else {
                continue;
            };
            let (bytes, inodes) = disk_usage(&path);
            fs.used_bytes = Some(bytes);
            fs.inodes_used = Some(inodes);
            out.push(VolumeStats {
                fs,
                name: Some(vol.file_name().to_string_lossy().into_owned()),
                pvc_ref: None,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    (!out.is_empty()).then_some(out)
}

/// `du`-style usage of a tree: allocated bytes and inodes, symlinks not followed, each inode
/// counted once (the atomic writer's files are reached through `..data`).
fn disk_usage(root: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        bytes = bytes.saturating_add(md.blocks().saturating_mul(512));
        inodes += 1;
        if md.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    (bytes, inodes)
}

/// The pod's `ephemeral-storage`: its containers' writable layers and logs.
pub fn ephemeral_storage(containers: &[ContainerStats], now: jiff::Timestamp) -> FsStats {
    let mut used = 0u64;
    let mut inodes = 0u64;
    for c in containers {
        for fs in [&c.rootfs, &c.logs].into_iter().flatten() {
            used = used.saturating_add(fs.used_bytes.unwrap_or(0));
            inodes = inodes.saturating_add(fs.inodes_used.unwrap_or(0));
        }
    }
    FsStats {
        time: Some(now),
        used_bytes: Some(used),
        inodes_used: Some(inodes),
        ..Default::default()
    }
}

/// The CPU/memory-only view of a pod (`only_cpu_and_memory=true`).
pub fn cpu_and_memory_only(p: PodStats) -> PodStats {
    PodStats {
        pod_ref: p.pod_ref,
        start_time: p.start_time,
        containers: p.containers.map(|cs| {
            cs.into_iter()
                .map(|c| ContainerStats {
                    name: c.name,
                    start_time: c.start_time,
                    cpu: c.cpu,
                    memory: c.memory,
                    ..Default::default()
                })
                .collect()
        }),
        cpu: p.cpu,
        memory: p.memory,
        ..Default::default()
    }
}

/// CPU stats from a cumulative counter read now, with the rate through the cache.
pub fn cpu_from_counter(
    cache: &CpuRateCache,
    key: &str,
    usage_ns: u64,
    now: jiff::Timestamp,
    update: bool,
) -> CpuStats {
    let rate = if update {
        cache.update(
            key,
            CpuSample {
                timestamp_ns: ns_of(now),
                usage_core_nano_seconds: usage_ns,
            },
        )
    } else {
        cache.get(key)
    };
    CpuStats {
        time: Some(now),
        usage_nano_cores: rate,
        usage_core_nano_seconds: Some(usage_ns),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ts: i64, usage: u64) -> CpuSample {
        CpuSample {
            timestamp_ns: ts,
            usage_core_nano_seconds: usage,
        }
    }

    #[test]
    fn rate_between_two_samples() {
        // 0.25 s of CPU over 1 s: a quarter core.
        assert_eq!(nano_cores(s(0, 0), s(1_000_000_000, 250_000_000)), Some(250_000_000));
        // 3 cores busy for 2 s.
        assert_eq!(
            nano_cores(s(5, 10), s(2_000_000_005, 6_000_000_010)),
            Some(3_000_000_000)
        );
        // Counter reset (a new container under the same key) and no elapsed time: unknown.
        assert_eq!(nano_cores(s(0, 100), s(1_000, 50)), None);
        assert_eq!(nano_cores(s(1_000, 1), s(1_000, 2)), None);
        assert_eq!(nano_cores(s(2_000, 1), s(1_000, 2)), None);
    }

    #[test]
    fn cache_needs_two_samples_and_forgets_the_dead() {
        let c = CpuRateCache::default();
        assert_eq!(c.update("a", s(0, 0)), None);
        assert_eq!(c.get("a"), None);
        assert_eq!(c.update("a", s(2_000_000_000, 1_000_000_000)), Some(500_000_000));
        // Reading does not move the window.
        assert_eq!(c.get("a"), Some(500_000_000));
        // The same sample again keeps the last rate.
        assert_eq!(c.update("a", s(2_000_000_000, 1_000_000_000)), Some(500_000_000));
        assert_eq!(c.update("a", s(3_000_000_000, 1_000_000_000)), Some(0));
        c.update("b", s(0, 0));
        c.retain(&["b".to_string()].into());
        assert_eq!(c.len(), 1);
        assert_eq!(c.get("a"), None);
    }

    #[test]
    fn runtime_rate_bypasses_the_cache() {
        let c = CpuRateCache::default();
        let cpu = cri::CpuUsage {
            timestamp: 1,
            usage_core_nano_seconds: Some(cri::UInt64Value { value: 10 }),
            usage_nano_cores: Some(cri::UInt64Value { value: 7 }),
        };
        assert_eq!(cached_rate(&c, "x", &cpu, true), Some(7));
        assert!(c.is_empty());
        let cpu = cri::CpuUsage {
            usage_nano_cores: None,
            ..cpu
        };
        assert_eq!(cached_rate(&c, "x", &cpu, true), None);
        let later = cri::CpuUsage {
            timestamp: 1_000_000_001,
            usage_core_nano_seconds: Some(cri::UInt64Value { value: 100_000_010 }),
            usage_nano_cores: None,
        };
        assert_eq!(cached_rate(&c, "x", &later, false), None, "read-only does not record");
        assert_eq!(cached_rate(&c, "x", &later, true), Some(100_000_000));
        assert_eq!(cached_rate(&c, "x", &later, false), Some(100_000_000));
    }

    #[test]
    fn missing_cri_figures_become_zeros_like_the_kubelet() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let cpu = container_cpu(None, None, now);
        assert_eq!((cpu.usage_nano_cores, cpu.usage_core_nano_seconds), (Some(0), Some(0)));
        let mem = container_memory(None, now);
        assert_eq!(
            serde_json::to_string(&mem).unwrap(),
            r#"{"time":"1970-01-01T00:00:00Z","workingSetBytes":0}"#
        );
        let m = cri::MemoryUsage {
            timestamp: 0,
            working_set_bytes: Some(cri::UInt64Value { value: 5 }),
            available_bytes: Some(cri::UInt64Value { value: 0 }),
            usage_bytes: Some(cri::UInt64Value { value: 9 }),
            ..Default::default()
        };
        let mem = container_memory(Some(&m), now);
        assert_eq!(mem.available_bytes, None);
        assert_eq!(mem.working_set_bytes, Some(5));
        assert_eq!(mem.usage_bytes, Some(9));
    }

    #[test]
    fn cgroup_v1_and_v2_files() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        // Hybrid: v1 controllers.
        let d = tempfile::tempdir().unwrap();
        for h in ["cpuacct", "memory", "pids"] {
            std::fs::create_dir_all(d.path().join(h).join("keel/podu1")).unwrap();
        }
        let p = d.path();
        std::fs::write(p.join("cpuacct/keel/podu1/cpuacct.usage"), "123456789\n").unwrap();
        std::fs::write(p.join("memory/keel/podu1/memory.usage_in_bytes"), "1000\n").unwrap();
        std::fs::write(
            p.join("memory/keel/podu1/memory.stat"),
            "cache 1\ntotal_inactive_file 300\ntotal_rss 600\ntotal_pgfault 7\ntotal_pgmajfault 2\n",
        )
        .unwrap();
        std::fs::write(
            p.join("memory/keel/podu1/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        std::fs::write(p.join("pids/keel/podu1/pids.current"), "4\n").unwrap();
        let r = CgroupReader::new(p, "/keel");
        let s = r.pod("u1", now).unwrap();
        assert_eq!(s.cpu_ns, Some(123_456_789));
        assert_eq!(s.pids, Some(4));
        let m = s.memory.unwrap();
        assert_eq!(m.working_set_bytes, Some(700));
        assert_eq!(m.rss_bytes, Some(600));
        assert_eq!(m.available_bytes, None, "unlimited");
        assert_eq!((m.page_faults, m.major_page_faults), (Some(7), Some(2)));
        assert!(r.pod("u2", now).is_none());
        assert!(r.pod("../x", now).is_none());

        // Pure v2.
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("cgroup.controllers"), "cpu memory pids").unwrap();
        std::fs::create_dir_all(p.join("podu1")).unwrap();
        std::fs::write(p.join("podu1/cpu.stat"), "usage_usec 2500\nuser_usec 2000\n").unwrap();
        std::fs::write(p.join("podu1/memory.current"), "5000\n").unwrap();
        std::fs::write(
            p.join("podu1/memory.stat"),
            "anon 1000\ninactive_file 1000\npgfault 3\n",
        )
        .unwrap();
        std::fs::write(p.join("podu1/memory.max"), "10000\n").unwrap();
        let s = CgroupReader::new(p, "/").pod("u1", now).unwrap();
        assert_eq!(s.cpu_ns, Some(2_500_000));
        let m = s.memory.unwrap();
        assert_eq!(m.working_set_bytes, Some(4000));
        assert_eq!(m.available_bytes, Some(6000));
        assert_eq!(m.rss_bytes, Some(1000));
        assert_eq!(s.pids, None);
    }

    #[test]
    fn sandbox_pid_from_containerd_info() {
        let info: HashMap<String, String> = [(
            "info".to_string(),
            r#"{"pid":4242,"processStatus":"running"}"#.to_string(),
        )]
        .into();
        assert_eq!(sandbox_pid(&info), Some(4242));
        assert_eq!(sandbox_pid(&HashMap::new()), None);
        let bad: HashMap<String, String> = [("info".to_string(), "not json".to_string())].into();
        assert_eq!(sandbox_pid(&bad), None);
    }

    fn sandbox(uid: &str, created: i64, ready: bool) -> cri::PodSandbox {
        cri::PodSandbox {
            id: format!("{uid}-{created}"),
            metadata: Some(cri::PodSandboxMetadata {
                name: "p".into(),
                namespace: "ns".into(),
                uid: uid.into(),
                attempt: 0,
            }),
            state: if ready {
                cri::PodSandboxState::SandboxReady as i32
            } else {
                cri::PodSandboxState::SandboxNotready as i32
            },
            created_at: created,
            ..Default::default()
        }
    }

    #[test]
    fn terminated_sandboxes_are_dropped_when_a_newer_one_lives() {
        let mut ids: Vec<String> = live_sandboxes(vec![
            sandbox("a", 1, false),
            sandbox("a", 2, true),
            sandbox("b", 1, false),
            sandbox("b", 3, false),
            sandbox("c", 1, false),
        ])
        .into_iter()
        .map(|s| s.id)
        .collect();
        ids.sort();
        assert_eq!(ids, ["a-2", "b-3", "c-1"]);
    }

    #[test]
    fn volume_stats_walk_each_volume_once() {
        let dir = tempfile::tempdir().unwrap();
        let cm = dir.path().join("kubernetes.io~configmap").join("cfg");
        let data = cm.join("..2026_11_22");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("key"), vec![b'x'; 10_000]).unwrap();
        std::os::unix::fs::symlink("..2026_11_22", cm.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/key", cm.join("key")).unwrap();
        let ed = dir.path().join("kubernetes.io~empty-dir").join("scratch");
        std::fs::create_dir_all(&ed).unwrap();
        let now = jiff::Timestamp::now();
        let v = volume_stats(dir.path(), now).unwrap();
        let names: Vec<_> = v.iter().map(|s| s.name.as_deref().unwrap()).collect();
        assert_eq!(names, ["cfg", "scratch"]);
        // cfg: its dir, the data dir, the file and two symlinks; the file's 10 kB in blocks.
        assert_eq!(v[0].fs.inodes_used, Some(5));
        assert!(v[0].fs.used_bytes.unwrap() >= 10_000, "{:?}", v[0]);
        assert_eq!(v[1].fs.inodes_used, Some(1));
        assert!(v[0].fs.capacity_bytes.unwrap() > 0);
        assert!(volume_stats(&dir.path().join("none"), now).is_none());
    }

    #[test]
    fn pod_sums_and_ephemeral_storage() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let c = |cpu: u64, ws: u64, root: u64, logs: u64| ContainerStats {
            cpu: Some(CpuStats {
                usage_core_nano_seconds: Some(cpu),
                usage_nano_cores: Some(cpu / 10),
                ..Default::default()
            }),
            memory: Some(MemoryStats {
                working_set_bytes: Some(ws),
                ..Default::default()
            }),
            rootfs: Some(FsStats {
                used_bytes: Some(root),
                inodes_used: Some(1),
                ..Default::default()
            }),
            logs: Some(FsStats {
                used_bytes: Some(logs),
                inodes_used: Some(2),
                ..Default::default()
            }),
            ..Default::default()
        };
        let cs = [c(100, 10, 1, 2), c(200, 20, 3, 4)];
        let (cpu, mem) = sum_containers(&cs, now);
        assert_eq!(cpu.usage_core_nano_seconds, Some(300));
        assert_eq!(cpu.usage_nano_cores, Some(30));
        assert_eq!(mem.working_set_bytes, Some(30));
        assert_eq!(mem.usage_bytes, None);
        let e = ephemeral_storage(&cs, now);
        assert_eq!((e.used_bytes, e.inodes_used), (Some(10), Some(6)));
        let only = cpu_and_memory_only(PodStats {
            containers: Some(cs.to_vec()),
            ephemeral_storage: Some(e),
            ..Default::default()
        });
        assert!(only.ephemeral_storage.is_none());
        assert!(only
            .containers
            .unwrap()
            .iter()
            .all(|c| c.rootfs.is_none() && c.logs.is_none()));
    }

    #[test]
    fn log_dir_usage_counts_rotated_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("0.log"), "abc").unwrap();
        std::fs::write(d.path().join("0.log.20240501-120000"), "defg").unwrap();
        assert_eq!(dir_usage(d.path()), Some((7, 2)));
        assert_eq!(dir_usage(&d.path().join("missing")), None);
    }
}
