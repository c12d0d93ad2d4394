//! Usage figures for the CRI stats calls: CPU, memory and processes of a cgroup (v1, v2, or the hybrid
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

/// The v1 super options that name no controller (`name=…` and `release_agent=…` have a `=`).
const NOT_CONTROLLERS: [&str; 7] = [
    "rw",
    "ro",
    "none",
    "xattr",
    "noprefix",
    "clone_children",
    "cpuset_v2_mode",
];

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
                    .filter(|o| !NOT_CONTROLLERS.contains(o) && !o.contains('='))
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
    /// mount if that cgroup has the controller.
    pub fn dir(&self, controller: &str, cgroup_path: &str) -> Option<(PathBuf, bool)> {
        if let Some(m) = self
            .mounts
            .iter()
            .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
        {
            return Some((Self::join(m, cgroup_path), false));
        }
        let dir = self.v2_dir(cgroup_path)?;
        v2_has(&dir, controller).then_some((dir, true))
    }

    /// The directory of `cgroup_path` in the cgroup2 mount (controllers or none).
    fn v2_dir(&self, cgroup_path: &str) -> Option<PathBuf> {
        self.mounts.iter().find(|m| m.v2).map(|m| Self::join(m, cgroup_path))
    }

    /// Processes in the cgroup and every cgroup below it, each counted once (cadvisor's and
    /// containerd's count: `cgroup.procs` holds processes, `pids.current` counts threads). None
    /// when the cgroup is not there.
    pub fn process_count(&self, cgroup_path: &str) -> Option<u64> {
        let dir = ["pids", "cpuacct", "cpu", "memory"]
            .iter()
            .find_map(|c| self.dir(c, cgroup_path))
            .map(|(d, _)| d)
            .or_else(|| self.v2_dir(cgroup_path))?;
        count_procs(&dir)
    }

    /// CPU, memory and process count of a cgroup; None when the cgroup does not exist.
    pub fn usage(&self, cgroup_path: &str) -> Option<(cri::CpuUsage, cri::MemoryUsage, cri::ProcessUsage)> {
        let ts = now_ns();
        // cgroup2 keeps `cpu.stat` (usage_usec) in every cgroup, cpu controller or not.
        let (cpu_dir, cpu_v2) = self
            .dir("cpuacct", cgroup_path)
            .or_else(|| self.dir("cpu", cgroup_path))
            .or_else(|| Some((self.v2_dir(cgroup_path)?, true)))?;
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
            process_count: self.process_count(cgroup_path).and_then(u64v),
        };
        Some((cpu, memory, process))
    }
}

/// Whether a cgroup2 cgroup has `controller`: its own `cgroup.controllers` lists what its parent
/// enabled for it (the root's, every controller of the mount); a cgroup not made yet is judged
/// by its parent's.
fn v2_has(dir: &Path, controller: &str) -> bool {
    let listed = dir
        .ancestors()
        .take(2)
        .find_map(|d| fs::read_to_string(d.join("cgroup.controllers")).ok())
        .unwrap_or_default();
    listed.split_whitespace().any(|c| c == controller)
}

/// The distinct PIDs in `cgroup.procs` of `dir` and the cgroups below it; None when `dir` has
/// no `cgroup.procs` (not a cgroup, or gone).
fn count_procs(dir: &Path) -> Option<u64> {
    let mut pids = HashSet::new();
    let top = fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    pids.extend(top.split_whitespace().map(str::to_string));
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let sub = e.path();
            // A cgroup removed between the listing and the read counts nothing.
            if let Ok(text) = fs::read_to_string(sub.join("cgroup.procs")) {
                pids.extend(text.split_whitespace().map(str::to_string));
            }
            stack.push(sub);
        }
    }
    Some(pids.len() as u64)
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

/// [`container_stats`] with the cgroup mounts given.
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

/// A stored sample is replaced only by one at least this much newer, so calls close together
/// (keel's ListContainerStats then ListPodSandboxStats, crictl beside keel) still get a rate over
/// a useful window instead of one over microseconds.
const MIN_RATE_WINDOW_NS: i64 = 1_000_000_000;

/// Remembers each container's (and pod's) CPU sample to give `usage_nano_cores`: the rate since
/// that sample, as containerd computes it from its previous one.
#[derive(Default)]
pub struct CpuRates {
    last: Mutex<HashMap<String, (i64, u64)>>,
}

impl CpuRates {
    /// Sets `cpu.usage_nano_cores` from the stored sample of `id` (0 without one, as containerd
    /// answers the first call) and stores this one when the stored one is
    /// [`MIN_RATE_WINDOW_NS`] old or more (or none, or the counter went back).
    pub fn fill(&self, id: &str, cpu: &mut cri::CpuUsage) {
        let Some(total) = cpu.usage_core_nano_seconds.map(|v| v.value) else {
            return;
        };
        cpu.usage_nano_cores = u64v(0);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let mut store = true;
        if let Some((ts, prev)) = last.get(id).copied() {
            let dt = cpu.timestamp - ts;
            if dt > 0 && total >= prev {
                let rate = (total - prev) as u128 * 1_000_000_000 / dt as u128;
                cpu.usage_nano_cores = u64v(u64::try_from(rate).unwrap_or(u64::MAX));
                store = dt >= MIN_RATE_WINDOW_NS;
            }
        }
        if store {
            last.insert(id.to_string(), (cpu.timestamp, total));
        }
    }

    /// Drops a removed container's or pod's sample.
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
#[path = "stats_tests.rs"]
mod tests;
