//! Usage figures for the CRI stats calls: CPU, memory and pids of a cgroup (v1, v2, or the hybrid
//! layout of these machines, where every controller is a v1 hierarchy and the cgroup2 mount at
//! /sys/fs/cgroup/unified has none), the writable layer from the overlay upper dir, and a pod's
//! network from its namespace. Figures as containerd reports them: working set = usage −
//! `total_inactive_file` (v1) / `inactive_file` (v2), rss = `total_rss` / `anon`.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::genericruntime::seam::cri;

use super::namespaces::in_netns;

/// The interface CNI attaches the pod to.
pub const DEFAULT_IFNAME: &str = "eth0";

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(1)
}

fn u64v(v: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value: v })
}

/// One cgroup mount: where it is, which part of the hierarchy it shows, and its controllers
/// (empty for cgroup2: it holds whatever `cgroup.controllers` lists).
#[derive(Clone, Debug, PartialEq)]
pub struct CgroupMount {
    pub mountpoint: PathBuf,
    pub root: String,
    pub v2: bool,
    pub controllers: Vec<String>,
}

/// The cgroup mounts of this process (from `/proc/self/mountinfo`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupLayout {
    pub mounts: Vec<CgroupMount>,
}

fn unescape_mount(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl CgroupLayout {
    pub fn parse_mountinfo(text: &str) -> Self {
        let mut mounts = Vec::new();
        for line in text.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            if pre.len() < 5 || post.len() < 3 {
                continue;
            }
            let fstype = post[0];
            if fstype != "cgroup" && fstype != "cgroup2" {
                continue;
            }
            let controllers = if fstype == "cgroup" {
                post[2]
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                    .map(str::to_string)
                    .collect()
            } else {
                Vec::new()
            };
            mounts.push(CgroupMount {
                mountpoint: PathBuf::from(unescape_mount(pre[4])),
                root: unescape_mount(pre[3]),
                v2: fstype == "cgroup2",
                controllers,
            });
        }
        Self { mounts }
    }

    pub fn current() -> Self {
        fs::read_to_string("/proc/self/mountinfo")
            .map(|t| Self::parse_mountinfo(&t))
            .unwrap_or_default()
    }

    fn join(m: &CgroupMount, cgroup_path: &str) -> PathBuf {
        let p = cgroup_path.trim_start_matches('/');
        let root = m.root.trim_start_matches('/');
        let rel = if !root.is_empty() {
            p.strip_prefix(root).map(|r| r.trim_start_matches('/')).unwrap_or(p)
        } else {
            p
        };
        m.mountpoint.join(rel)
    }

    /// The directory of `cgroup_path` in the v1 hierarchy with `controller`, else in the cgroup2
    /// mount if that cgroup enables it.
    pub fn dir(&self, controller: &str, cgroup_path: &str) -> Option<(PathBuf, bool)> {
        if let Some(m) = self
            .mounts
            .iter()
            .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
        {
            return Some((Self::join(m, cgroup_path), false));
        }
        let m = self.mounts.iter().find(|m| m.v2)?;
        let dir = Self::join(m, cgroup_path);
        // A v2 controller shows in the parent's cgroup.controllers (the root lists them all).
        let listed = dir
            .parent()
            .map(|p| p.join("cgroup.controllers"))
            .and_then(|f| fs::read_to_string(f).ok())
            .or_else(|| fs::read_to_string(m.mountpoint.join("cgroup.controllers")).ok())
            .unwrap_or_default();
        listed
            .split_whitespace()
            .any(|c| c == controller)
            .then_some((dir, true))
    }

    /// CPU, memory and pids of a cgroup; None when the cgroup does not exist.
    pub fn usage(&self, cgroup_path: &str) -> Option<(cri::CpuUsage, cri::MemoryUsage, cri::ProcessUsage)> {
        let ts = now_ns();
        let (cpu_dir, cpu_v2) = self
            .dir("cpuacct", cgroup_path)
            .or_else(|| self.dir("cpu", cgroup_path))?;
        let cpu_ns = if cpu_v2 {
            let stat = fs::read_to_string(cpu_dir.join("cpu.stat")).ok()?;
            flat_keyed(&stat).get("usage_usec").copied()? * 1000
        } else {
            read_u64(&cpu_dir.join("cpuacct.usage"))?
        };
        let cpu = cri::CpuUsage {
            timestamp: ts,
            usage_core_nano_seconds: u64v(cpu_ns),
            usage_nano_cores: None,
        };
        let memory = match self.dir("memory", cgroup_path) {
            Some((dir, v2)) => memory_usage(&dir, v2, ts).unwrap_or_default(),
            None => cri::MemoryUsage::default(),
        };
        let process = cri::ProcessUsage {
            timestamp: ts,
            process_count: self
                .dir("pids", cgroup_path)
                .and_then(|(d, _)| read_u64(&d.join("pids.current")))
                .and_then(u64v),
        };
        Some((cpu, memory, process))
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat).
pub fn flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k, v.trim().parse().ok()?))
        })
        .collect()
}

/// v1 reports "no limit" as a page-aligned i64::MAX.
const V1_UNLIMITED: u64 = 0x7FFF_FFFF_FFFF_F000;

fn memory_usage(dir: &Path, v2: bool, ts: i64) -> Option<cri::MemoryUsage> {
    let stat_text = fs::read_to_string(dir.join("memory.stat")).ok()?;
    let stat = flat_keyed(&stat_text);
    let (usage, inactive, rss, faults, major, limit) = if v2 {
        let limit = fs::read_to_string(dir.join("memory.max"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        (
            read_u64(&dir.join("memory.current"))?,
            stat.get("inactive_file").copied().unwrap_or(0),
            stat.get("anon").copied(),
            stat.get("pgfault").copied(),
            stat.get("pgmajfault").copied(),
            limit,
        )
    } else {
        let limit = read_u64(&dir.join("memory.limit_in_bytes")).filter(|l| *l < V1_UNLIMITED);
        (
            read_u64(&dir.join("memory.usage_in_bytes"))?,
            stat.get("total_inactive_file").copied().unwrap_or(0),
            stat.get("total_rss").copied(),
            stat.get("total_pgfault").copied(),
            stat.get("total_pgmajfault").copied(),
            limit,
        )
    };
    let working_set = usage.saturating_sub(inactive);
    Some(cri::MemoryUsage {
        timestamp: ts,
        working_set_bytes: u64v(working_set),
        available_bytes: limit.and_then(|l| u64v(l.saturating_sub(working_set))),
        usage_bytes: u64v(usage),
        rss_bytes: rss.and_then(u64v),
        page_faults: faults.and_then(u64v),
        major_page_faults: major.and_then(u64v),
    })
}

/// Bytes (allocated blocks) and inodes under `dir`, hard links counted once, not crossing
/// mounts: a container's writable layer.
pub fn disk_usage(dir: &Path) -> Option<(u64, u64)> {
    let root = fs::symlink_metadata(dir).ok()?;
    let dev = root.dev();
    let mut seen = HashSet::new();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    seen.insert(root.ino());
    bytes += root.blocks() * 512;
    inodes += 1;
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.dev() != dev || !seen.insert(md.ino()) {
                continue;
            }
            bytes += md.blocks() * 512;
            inodes += 1;
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Some((bytes, inodes))
}

/// A container's usage figures for CRI ContainerStats (attributes are the caller's).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerUsage {
    pub cpu: cri::CpuUsage,
    pub memory: cri::MemoryUsage,
    pub process: cri::ProcessUsage,
    pub writable_layer: cri::FilesystemUsage,
}

impl ContainerUsage {
    /// The CRI message, with the caller's attributes.
    pub fn into_stats(self, attributes: cri::ContainerAttributes) -> cri::ContainerStats {
        cri::ContainerStats {
            attributes: Some(attributes),
            cpu: Some(self.cpu),
            memory: Some(self.memory),
            writable_layer: Some(self.writable_layer),
            swap: None,
        }
    }
}

/// Usage of the container whose OCI `cgroupsPath` is `cgroup_path` (cgroupfs style) and whose
/// overlay upper dir is `upper_dir`; None when its cgroup is gone (container not running).
pub fn container_stats(cgroup_path: &str, upper_dir: &Path) -> Option<ContainerUsage> {
    container_stats_in(&CgroupLayout::current(), cgroup_path, upper_dir)
}

pub fn container_stats_in(layout: &CgroupLayout, cgroup_path: &str, upper_dir: &Path) -> Option<ContainerUsage> {
    let (cpu, memory, process) = layout.usage(cgroup_path)?;
    let (bytes, inodes) = disk_usage(upper_dir).unwrap_or((0, 0));
    Some(ContainerUsage {
        writable_layer: cri::FilesystemUsage {
            timestamp: cpu.timestamp,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: upper_dir.display().to_string(),
            }),
            used_bytes: u64v(bytes),
            inodes_used: u64v(inodes),
        },
        cpu,
        memory,
        process,
    })
}

/// Remembers each container's last CPU sample to give `usage_nano_cores` (the rate since the
/// previous call, as containerd computes it from its previous sample).
#[derive(Default)]
pub struct CpuRates {
    last: Mutex<HashMap<String, (i64, u64)>>,
}

impl CpuRates {
    /// Sets `cpu.usage_nano_cores` from the previous sample of `id` (None on the first) and
    /// remembers this one.
    pub fn fill(&self, id: &str, cpu: &mut cri::CpuUsage) {
        let Some(total) = cpu.usage_core_nano_seconds.map(|v| v.value) else {
            return;
        };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((ts, prev)) = last.get(id).copied() {
            let dt = cpu.timestamp - ts;
            if dt > 0 && total >= prev {
                let rate = (total - prev) as u128 * 1_000_000_000 / dt as u128;
                cpu.usage_nano_cores = u64v(rate as u64);
            }
        }
        last.insert(id.to_string(), (cpu.timestamp, total));
    }

    /// Drops a removed container's sample.
    pub fn forget(&self, id: &str) {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// `/proc/net/dev` lines: name → (rx bytes, rx errors, tx bytes, tx errors).
pub fn parse_net_dev(text: &str) -> Vec<(String, [u64; 4])> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            if f.len() < 11 {
                return None;
            }
            Some((name.trim().to_string(), [f[0], f[2], f[8], f[10]]))
        })
        .collect()
}

/// Network usage in the namespace pinned at `netns`: eth0 as the default interface, the others
/// but loopback in `interfaces`.
pub fn network_usage(netns: &Path) -> Option<cri::NetworkUsage> {
    let text = in_netns(netns, || fs::read_to_string("/proc/thread-self/net/dev")).ok()?;
    Some(network_usage_from(&text, now_ns()))
}

pub fn network_usage_from(text: &str, ts: i64) -> cri::NetworkUsage {
    let mut usage = cri::NetworkUsage {
        timestamp: ts,
        ..Default::default()
    };
    for (name, [rx, rxe, tx, txe]) in parse_net_dev(text) {
        if name == "lo" {
            continue;
        }
        let iface = cri::NetworkInterfaceUsage {
            name: name.clone(),
            rx_bytes: u64v(rx),
            rx_errors: u64v(rxe),
            tx_bytes: u64v(tx),
            tx_errors: u64v(txe),
        };
        if name == DEFAULT_IFNAME {
            usage.default_interface = Some(iface);
        } else {
            usage.interfaces.push(iface);
        }
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's hybrid layout (v1 controllers, cgroup2 with no controllers).
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / MNT/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / MNT/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / MNT/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / MNT/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / MNT/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / MNT/unified rw,relatime - cgroup2 cgroup2 rw
";

    fn write(p: &Path, text: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn mountinfo_finds_v1_controllers_and_cgroup2() {
        let l = CgroupLayout::parse_mountinfo(&HYBRID.replace("MNT", "/sys/fs/cgroup"));
        assert_eq!(l.mounts.len(), 6);
        assert_eq!(l.mounts[0].controllers, ["cpu"]);
        assert!(l.mounts[4].controllers.is_empty(), "name=systemd is no controller");
        assert!(l.mounts[5].v2);
        assert_eq!(
            l.dir("memory", "/kubepods/pod1/c1"),
            Some((PathBuf::from("/sys/fs/cgroup/memory/kubepods/pod1/c1"), false))
        );
        // A combined cpu,cpuacct hierarchy, and a mount whose root is not /.
        let l = CgroupLayout::parse_mountinfo(
            "1 0 0:1 /docker/x /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n",
        );
        assert_eq!(l.mounts[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(
            l.dir("cpuacct", "/docker/x/kubepods/c"),
            Some((PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/kubepods/c"), false))
        );
    }

    #[test]
    fn v1_usage_from_fixture_files() {
        let t = tempfile::tempdir().unwrap();
        let mnt = t.path().display().to_string();
        let l = CgroupLayout::parse_mountinfo(&HYBRID.replace("MNT", &mnt));
        let cg = "/kubepods/podA/c1";
        write(&t.path().join("cpuacct/kubepods/podA/c1/cpuacct.usage"), "123456789\n");
        write(
            &t.path().join("memory/kubepods/podA/c1/memory.usage_in_bytes"),
            "10485760\n",
        );
        write(
            &t.path().join("memory/kubepods/podA/c1/memory.limit_in_bytes"),
            "9223372036854771712\n",
        );
        write(
            &t.path().join("memory/kubepods/podA/c1/memory.stat"),
            "cache 4096\nrss 1000\ninactive_file 1\ntotal_rss 2097152\ntotal_inactive_file 3145728\n\
             total_pgfault 77\ntotal_pgmajfault 3\n",
        );
        write(&t.path().join("pids/kubepods/podA/c1/pids.current"), "4\n");
        let upper = t.path().join("upper");
        write(&upper.join("etc/motd"), &"x".repeat(10_000));
        write(&upper.join("tmp/a"), "a");
        let u = container_stats_in(&l, cg, &upper).unwrap();
        assert_eq!(u.cpu.usage_core_nano_seconds, u64v(123456789));
        assert_eq!(u.memory.usage_bytes, u64v(10485760));
        assert_eq!(u.memory.working_set_bytes, u64v(10485760 - 3145728));
        assert_eq!(u.memory.rss_bytes, u64v(2097152));
        assert_eq!(u.memory.page_faults, u64v(77));
        assert_eq!(u.memory.major_page_faults, u64v(3));
        assert_eq!(u.memory.available_bytes, None, "unlimited");
        assert_eq!(u.process.process_count, u64v(4));
        // upper, etc, etc/motd, tmp, tmp/a
        assert_eq!(u.writable_layer.inodes_used, u64v(5));
        assert!(u.writable_layer.used_bytes.unwrap().value >= 10_000);
        // With a limit, available = limit - working set.
        write(
            &t.path().join("memory/kubepods/podA/c1/memory.limit_in_bytes"),
            "20971520\n",
        );
        let u = container_stats_in(&l, cg, &upper).unwrap();
        assert_eq!(u.memory.available_bytes, u64v(20971520 - (10485760 - 3145728)));
        // A gone cgroup: no stats.
        assert_eq!(container_stats_in(&l, "/kubepods/podA/gone", &upper), None);
    }

    #[test]
    fn v2_usage_from_fixture_files() {
        let t = tempfile::tempdir().unwrap();
        let l = CgroupLayout::parse_mountinfo(&format!(
            "30 23 0:26 / {} rw - cgroup2 cgroup2 rw,nsdelegate\n",
            t.path().display()
        ));
        write(&t.path().join("cgroup.controllers"), "cpuset cpu io memory pids\n");
        write(&t.path().join("kubepods/cgroup.controllers"), "cpu memory pids\n");
        let d = t.path().join("kubepods/c2");
        write(
            &d.join("cpu.stat"),
            "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
        );
        write(&d.join("memory.current"), "8388608\n");
        write(&d.join("memory.max"), "max\n");
        write(
            &d.join("memory.stat"),
            "anon 1048576\nfile 4194304\ninactive_file 2097152\npgfault 9\npgmajfault 1\n",
        );
        write(&d.join("pids.current"), "2\n");
        let u = container_stats_in(&l, "/kubepods/c2", t.path()).unwrap();
        assert_eq!(u.cpu.usage_core_nano_seconds, u64v(2_500_000));
        assert_eq!(u.memory.working_set_bytes, u64v(8388608 - 2097152));
        assert_eq!(u.memory.rss_bytes, u64v(1048576));
        assert_eq!(u.memory.available_bytes, None);
        assert_eq!(u.process.process_count, u64v(2));
        write(&d.join("memory.max"), "16777216\n");
        let u = container_stats_in(&l, "/kubepods/c2", t.path()).unwrap();
        assert_eq!(u.memory.available_bytes, u64v(16777216 - (8388608 - 2097152)));
        // Inactive file above usage (racy reads) never underflows.
        write(&d.join("memory.current"), "1\n");
        let u = container_stats_in(&l, "/kubepods/c2", t.path()).unwrap();
        assert_eq!(u.memory.working_set_bytes, u64v(0));
    }

    #[test]
    fn cpu_rate_from_consecutive_samples() {
        let rates = CpuRates::default();
        let mut a = cri::CpuUsage {
            timestamp: 1_000_000_000,
            usage_core_nano_seconds: u64v(5_000_000_000),
            usage_nano_cores: None,
        };
        rates.fill("c", &mut a);
        assert_eq!(a.usage_nano_cores, None);
        let mut b = cri::CpuUsage {
            timestamp: 3_000_000_000,
            usage_core_nano_seconds: u64v(5_500_000_000),
            usage_nano_cores: None,
        };
        rates.fill("c", &mut b);
        assert_eq!(b.usage_nano_cores, u64v(250_000_000));
        rates.forget("c");
        let mut c = b;
        c.usage_nano_cores = None;
        rates.fill("c", &mut c);
        assert_eq!(c.usage_nano_cores, None);
    }

    #[test]
    fn net_dev_parses_eth0_as_default() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0
  eth0:    5432      40    1    0    0     0          0         0     2100      20    2    0    0     0       0          0
  net1:      10       1    0    0    0     0          0         0       20       2    0    0    0     0       0          0
";
        let u = network_usage_from(text, 7);
        let eth0 = u.default_interface.unwrap();
        assert_eq!(
            (
                eth0.name.as_str(),
                eth0.rx_bytes,
                eth0.rx_errors,
                eth0.tx_bytes,
                eth0.tx_errors
            ),
            ("eth0", u64v(5432), u64v(1), u64v(2100), u64v(2))
        );
        assert_eq!(u.interfaces.len(), 1);
        assert_eq!(u.interfaces[0].name, "net1");
        assert_eq!(u.timestamp, 7);
    }
}
