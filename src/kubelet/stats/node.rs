//! Node-level stats from the host: CPU (`/proc/stat`), memory (`/proc/meminfo`, `/proc/vmstat`),
//! network (`/proc/net/dev`), the root dir's filesystem (statvfs) and process limits
//! (`/proc/sys/kernel/pid_max`, the task count in `/proc/loadavg`).
//!
//! The kubelet reads the node through cAdvisor's root container; these files give the same
//! figures without cAdvisor: CPU time is the non-idle time of all CPUs (what the root cgroup's
//! `cpuacct.usage` counts), memory usage is `MemTotal - MemFree` and the working set is usage
//! minus `Inactive(file)` (cAdvisor's definition), available = `MemTotal - workingSet` (what
//! eviction uses). The parsers are pure functions over file contents.

use std::path::{Path, PathBuf};

use super::types::{FsStats, InterfaceStats, MemoryStats, NetworkStats, RlimitStats};
use super::StatsError;
use crate::kubelet::nodeinfo::{parse_loadavg_tasks, parse_meminfo};

/// The interface the Summary API inlines as the default one (`network.DefaultInterfaceName`).
pub const DEFAULT_INTERFACE: &str = "eth0";

/// Kernel clock ticks per second for `/proc/stat` (USER_HZ is 100 on every Linux ABI keel runs
/// on; `sysconf(_SC_CLK_TCK)` reports the same constant).
const USER_HZ: u64 = 100;
const NANOS_PER_TICK: u64 = 1_000_000_000 / USER_HZ;

/// Interface name prefixes cAdvisor leaves out of network stats (`isIgnoredDevice`).
const IGNORED_INTERFACE_PREFIXES: &[&str] = &["lo", "veth", "docker", "nerdctl"];

/// Where the host's `/proc` is (a fake tree in tests).
#[derive(Clone, Debug)]
pub struct HostPaths {
    pub proc_dir: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        Self {
            proc_dir: PathBuf::from("/proc"),
        }
    }
}

impl HostPaths {
    fn read(&self, rel: &str) -> Result<String, StatsError> {
        let path = self.proc_dir.join(rel);
        std::fs::read_to_string(&path).map_err(|source| StatsError::ReadHost { path, source })
    }
}

/// Total non-idle CPU time of the machine in nanoseconds from `/proc/stat`'s `cpu` line
/// (user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
/// inside user/nice).
pub fn parse_proc_stat_cpu(s: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<Vec<u64>>>()?;
    if f.len() < 4 {
        return None;
    }
    let field = |i: usize| f.get(i).copied().unwrap_or(0);
    // user + nice + system + irq + softirq + steal (idle = 3, iowait = 4 are not busy time).
    let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    busy.checked_mul(NANOS_PER_TICK)
}

/// Boot time (unix seconds) from `/proc/stat`'s `btime` line.
pub fn parse_btime(s: &str) -> Option<i64> {
    s.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// A counter from `/proc/vmstat` (`pgfault 123`).
pub fn parse_vmstat(s: &str, key: &str) -> Option<u64> {
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Node memory from `/proc/meminfo` (+ page faults from `/proc/vmstat` when given).
pub fn memory_from_meminfo(meminfo: &str, vmstat: Option<&str>, time: jiff::Timestamp) -> Option<MemoryStats> {
    let total = parse_meminfo(meminfo, "MemTotal")?;
    let free = parse_meminfo(meminfo, "MemFree")?;
    let inactive_file = parse_meminfo(meminfo, "Inactive(file)").unwrap_or(0);
    let usage = total.saturating_sub(free);
    let working_set = usage.saturating_sub(inactive_file);
    Some(MemoryStats {
        time: Some(time),
        available_bytes: Some(total.saturating_sub(working_set)),
        usage_bytes: Some(usage),
        working_set_bytes: Some(working_set),
        rss_bytes: parse_meminfo(meminfo, "AnonPages"),
        page_faults: vmstat.and_then(|v| parse_vmstat(v, "pgfault")),
        major_page_faults: vmstat.and_then(|v| parse_vmstat(v, "pgmajfault")),
    })
}

/// Interfaces of a `/proc/<pid>/net/dev` file, in file order, without the ones cAdvisor ignores.
pub fn parse_net_dev(s: &str) -> Vec<InterfaceStats> {
    s.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if IGNORED_INTERFACE_PREFIXES.iter().any(|p| name.starts_with(p)) {
                return None;
            }
            let v: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit.
            if v.len() < 16 {
                return None;
            }
            Some(InterfaceStats {
                name: name.to_string(),
                rx_bytes: Some(v[0]),
                rx_errors: Some(v[2]),
                tx_bytes: Some(v[8]),
                tx_errors: Some(v[10]),
            })
        })
        .collect()
}

/// The Summary's network block: `eth0` inlined (an empty name when there is none, as the
/// kubelet), all interfaces listed.
pub fn network_stats(interfaces: Vec<InterfaceStats>, time: jiff::Timestamp) -> NetworkStats {
    let default = interfaces
        .iter()
        .find(|i| i.name == DEFAULT_INTERFACE)
        .cloned()
        .unwrap_or_default();
    NetworkStats {
        time: Some(time),
        default,
        interfaces: (!interfaces.is_empty()).then_some(interfaces),
    }
}

/// statvfs of `path` (or its nearest existing ancestor: the directory may not exist yet) as
/// FsStats with capacity, availability and inodes.
#[allow(clippy::unnecessary_cast)] // statvfs field types differ between platforms
pub fn fs_stats(path: &Path, time: jiff::Timestamp) -> Result<FsStats, StatsError> {
    let mut p = path;
    while !p.exists() {
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    let st = nix::sys::statvfs::statvfs(p).map_err(|source| StatsError::Statvfs {
        path: p.to_path_buf(),
        source,
    })?;
    let frag = st.fragment_size() as u64;
    let blocks = st.blocks() as u64;
    let free = st.blocks_free() as u64;
    let inodes = st.files() as u64;
    let inodes_free = st.files_free() as u64;
    Ok(FsStats {
        time: Some(time),
        available_bytes: Some((st.blocks_available() as u64).saturating_mul(frag)),
        capacity_bytes: Some(blocks.saturating_mul(frag)),
        used_bytes: Some(blocks.saturating_sub(free).saturating_mul(frag)),
        inodes_free: Some(inodes_free),
        inodes: Some(inodes),
        inodes_used: Some(inodes.saturating_sub(inodes_free)),
    })
}

/// What the node block is built from, read in one go.
#[derive(Clone, Debug, Default)]
pub struct HostSample {
    /// Non-idle CPU nanoseconds since boot.
    pub cpu_ns: Option<u64>,
    pub boot_time: Option<jiff::Timestamp>,
    pub memory: Option<MemoryStats>,
    pub interfaces: Vec<InterfaceStats>,
    pub rlimit: Option<RlimitStats>,
}

impl HostPaths {
    /// Reads the host files. `/proc/stat` and `/proc/meminfo` are required; the rest is
    /// best-effort (missing figures are left out, as cAdvisor does). `full: false` reads only
    /// what the CPU/memory-only summary shows.
    pub fn sample(&self, now: jiff::Timestamp, full: bool) -> Result<HostSample, StatsError> {
        let stat = self.read("stat")?;
        let meminfo = self.read("meminfo")?;
        let vmstat = full.then(|| self.read("vmstat").ok()).flatten();
        let cpu_ns = parse_proc_stat_cpu(&stat);
        let boot_time = parse_btime(&stat).and_then(|s| jiff::Timestamp::from_second(s).ok());
        let memory = memory_from_meminfo(&meminfo, vmstat.as_deref(), now);
        if !full {
            return Ok(HostSample {
                cpu_ns,
                boot_time,
                memory,
                ..Default::default()
            });
        }
        // The host's network namespace: keel's own (it runs in the host netns like the kubelet).
        let interfaces = self.read("net/dev").map(|s| parse_net_dev(&s)).unwrap_or_default();
        let maxpid = self.read("sys/kernel/pid_max").ok().and_then(|s| s.trim().parse().ok());
        let curproc = self
            .read("loadavg")
            .ok()
            .and_then(|s| parse_loadavg_tasks(&s))
            .and_then(|n| i64::try_from(n).ok());
        let rlimit = Some(RlimitStats {
            time: Some(now),
            maxpid,
            curproc,
        });
        Ok(HostSample {
            cpu_ns,
            boot_time,
            memory,
            interfaces,
            rlimit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\nintr 1\nbtime 1714550400\n";
    const MEMINFO: &str =
        "MemTotal: 1000 kB\nMemFree: 200 kB\nMemAvailable: 500 kB\nInactive(file): 100 kB\nAnonPages: 300 kB\n";
    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 500 5 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n  eth0: 1000 10 1 0 0 0 0 0 2000 20 2 0 0 0 0 0\nveth12: 7 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0\n  eth1: 3 1 0 0 0 0 0 0 4 1 0 0 0 0 0 0\n";

    #[test]
    fn proc_stat_busy_time_and_boot() {
        // (100+5+50+3+2+1) ticks of 10 ms.
        assert_eq!(parse_proc_stat_cpu(STAT), Some(161 * 10_000_000));
        assert_eq!(parse_btime(STAT), Some(1_714_550_400));
        assert_eq!(parse_proc_stat_cpu("cpu  1 2\n"), None);
        assert_eq!(parse_proc_stat_cpu("cpu  a b c d\n"), None);
        assert_eq!(parse_btime("nothing"), None);
    }

    #[test]
    fn memory_follows_cadvisor_definitions() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let m = memory_from_meminfo(MEMINFO, Some("pgfault 42\npgmajfault 3\n"), now).unwrap();
        assert_eq!(m.usage_bytes, Some(800 * 1024));
        assert_eq!(m.working_set_bytes, Some(700 * 1024));
        assert_eq!(m.available_bytes, Some(300 * 1024));
        assert_eq!(m.rss_bytes, Some(300 * 1024));
        assert_eq!(m.page_faults, Some(42));
        assert_eq!(m.major_page_faults, Some(3));
        assert!(memory_from_meminfo("MemTotal: 1 kB\n", None, now).is_none());
    }

    #[test]
    fn net_dev_skips_ignored_interfaces_and_inlines_eth0() {
        let ifs = parse_net_dev(NET_DEV);
        let names: Vec<&str> = ifs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0", "eth1"]);
        assert_eq!(ifs[0].rx_bytes, Some(1000));
        assert_eq!(ifs[0].rx_errors, Some(1));
        assert_eq!(ifs[0].tx_bytes, Some(2000));
        assert_eq!(ifs[0].tx_errors, Some(2));
        let n = network_stats(ifs, jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(n.default.name, "eth0");
        assert_eq!(n.interfaces.as_ref().map(Vec::len), Some(2));
        // No eth0: the inline part is empty, as the kubelet's.
        let n = network_stats(
            parse_net_dev(&NET_DEV.replace("eth0", "ens3")),
            jiff::Timestamp::UNIX_EPOCH,
        );
        assert_eq!(n.default, InterfaceStats::default());
        let json = serde_json::to_string(&n).unwrap();
        assert!(
            json.starts_with(r#"{"time":"1970-01-01T00:00:00Z","name":"","interfaces":[{"name":"ens3""#),
            "{json}"
        );
    }

    #[test]
    fn host_sample_from_a_fake_proc() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("stat"), STAT).unwrap();
        std::fs::write(d.path().join("meminfo"), MEMINFO).unwrap();
        std::fs::write(d.path().join("loadavg"), "0.1 0.2 0.3 2/345 999\n").unwrap();
        std::fs::create_dir_all(d.path().join("sys/kernel")).unwrap();
        std::fs::write(d.path().join("sys/kernel/pid_max"), "4194304\n").unwrap();
        std::fs::create_dir_all(d.path().join("net")).unwrap();
        std::fs::write(d.path().join("net/dev"), NET_DEV).unwrap();
        let host = HostPaths {
            proc_dir: d.path().to_path_buf(),
        };
        let s = host.sample(jiff::Timestamp::UNIX_EPOCH, true).unwrap();
        let small = host.sample(jiff::Timestamp::UNIX_EPOCH, false).unwrap();
        assert_eq!(small.cpu_ns, s.cpu_ns);
        assert!(small.interfaces.is_empty() && small.rlimit.is_none());
        assert_eq!(s.cpu_ns, Some(1_610_000_000));
        assert_eq!(s.boot_time.unwrap().as_second(), 1_714_550_400);
        let r = s.rlimit.unwrap();
        assert_eq!((r.maxpid, r.curproc), (Some(4_194_304), Some(345)));
        assert_eq!(s.interfaces.len(), 2);
        // A missing required file is an error naming it.
        std::fs::remove_file(d.path().join("meminfo")).unwrap();
        let e = host.sample(jiff::Timestamp::UNIX_EPOCH, true).unwrap_err();
        assert!(e.to_string().contains("meminfo"), "{e}");
    }

    #[test]
    fn statvfs_of_a_missing_dir_uses_its_parent() {
        let d = tempfile::tempdir().unwrap();
        let fs = fs_stats(&d.path().join("not/yet"), jiff::Timestamp::UNIX_EPOCH).unwrap();
        assert!(fs.capacity_bytes.unwrap() > 0);
        assert!(fs.capacity_bytes >= fs.available_bytes);
        assert_eq!(fs.inodes.unwrap() - fs.inodes_free.unwrap(), fs.inodes_used.unwrap());
    }
}
