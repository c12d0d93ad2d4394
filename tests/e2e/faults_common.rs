//! What the fault and churn tests (`faults_*.rs`) share: the seeded fault schedule
//! (`KEEL_FAULT_SEED`), the long mode (`KEEL_LONG=1`), and an account of what a pod leaves on the
//! host: CRI sandboxes and containers, mounts, cgroups, network namespaces, veths, and keel's
//! own file descriptors and RSS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use keel::backends::cri::CriRuntime;
use keel::clock::Clock;
use keel::genericruntime::seam::{cri, RuntimeService as _};

use crate::support::envtest::loud;

/// `KEEL_LONG=1`: the long variants (minutes-long outages, thousands of pods), run by hand.
pub fn long_mode() -> bool {
    std::env::var("KEEL_LONG").is_ok_and(|v| v == "1")
}

/// The seed of a test's fault schedule: `KEEL_FAULT_SEED` when set (to replay a failure), else
/// a fresh one. Printed past libtest's capture so a failing run names it.
pub fn fault_seed(test: &str) -> u64 {
    let seed = std::env::var("KEEL_FAULT_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    loud(&format!(
        "{test}: fault schedule seed {seed} (replay: KEEL_FAULT_SEED={seed})"
    ));
    seed
}

/// The containerd of scripts/containerd-env.sh, through keel's own CRI client.
pub fn cri_runtime() -> Result<std::sync::Arc<CriRuntime>> {
    let socket = crate::support::util::cri_socket()?;
    CriRuntime::connect(Path::new(&socket), None, Clock::real()).context("connecting to containerd")
}

/// One pod's objects in the runtime.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodObjects {
    pub sandboxes: usize,
    pub ready_sandboxes: usize,
    pub containers: usize,
    /// The running containers: ID and the restart count keel created them with (the
    /// `io.kubernetes.container.restartCount` annotation, as the kubelet sets it).
    pub running: Vec<(String, i64)>,
}

/// The runtime's sandboxes and containers grouped by the pod name label, for the pods whose
/// name starts with `prefix`.
pub async fn cri_objects(rt: &CriRuntime, prefix: &str) -> Result<BTreeMap<String, PodObjects>> {
    const NAME: &str = "io.kubernetes.pod.name";
    let mut by_pod: BTreeMap<String, PodObjects> = BTreeMap::new();
    let sandboxes = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .context("ListPodSandbox")?;
    for s in sandboxes.items {
        let Some(name) = s.labels.get(NAME).filter(|n| n.starts_with(prefix)) else {
            continue;
        };
        let e = by_pod.entry(name.clone()).or_default();
        e.sandboxes += 1;
        if s.state == cri::PodSandboxState::SandboxReady as i32 {
            e.ready_sandboxes += 1;
        }
    }
    let containers = rt
        .list_containers(cri::ListContainersRequest { filter: None })
        .await
        .context("ListContainers")?;
    for c in containers.containers {
        let Some(name) = c.labels.get(NAME).filter(|n| n.starts_with(prefix)) else {
            continue;
        };
        let e = by_pod.entry(name.clone()).or_default();
        e.containers += 1;
        if c.state == cri::ContainerState::ContainerRunning as i32 {
            let restarts = c
                .annotations
                .get("io.kubernetes.container.restartCount")
                .and_then(|r| r.parse().ok())
                .unwrap_or(-1);
            e.running.push((c.id.clone(), restarts));
        }
    }
    Ok(by_pod)
}

/// Mount points (from /proc/self/mountinfo) whose path contains `needle`.
pub fn mounts_containing(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.contains(needle))
        .map(String::from)
        .collect()
}

/// The node's cgroup root (`$KEEL_TEST_CGROUP_ROOT/<node>`, as `Node::start_on` configures it),
/// relative to each hierarchy.
fn node_cgroup_relative(node: &str) -> PathBuf {
    let root = std::env::var("KEEL_TEST_CGROUP_ROOT")
        .ok()
        .filter(|r| r.starts_with('/'))
        .unwrap_or_else(|| "/keel-test".to_string());
    Path::new(root.trim_start_matches('/')).join(node)
}

/// Pod cgroups (`pod<uid>` directories) under the node's cgroup root, in every hierarchy.
pub fn pod_cgroups(node: &str) -> Vec<PathBuf> {
    let rel = node_cgroup_relative(node);
    let mut tops = vec![Path::new("/sys/fs/cgroup").join(&rel)];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        tops.extend(entries.flatten().map(|e| e.path().join(&rel)));
    }
    let mut out = Vec::new();
    for top in tops {
        for e in std::fs::read_dir(&top).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with("pod") && e.path().is_dir() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Network namespaces containerd has pinned (`netns_mounts_under_state_dir`).
pub fn pinned_netns() -> usize {
    let Ok(dir) = std::env::var("KEEL_CONTAINERD_DIR") else {
        return 0;
    };
    std::fs::read_dir(Path::new(&dir).join("state/netns"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Interfaces (the pods' veths) enslaved to the test bridge.
pub fn bridge_ports() -> usize {
    let Ok(bridge) = std::env::var("KEEL_CNI_BRIDGE") else {
        return 0;
    };
    std::fs::read_dir(Path::new("/sys/class/net").join(bridge).join("brif"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Open fds of a process other than sockets: files, pipes, eventfds, namespaces. Pod leaks show
/// here; sockets also count the API client's pool of idle connections, which grows with bursts
/// of requests (up to one per concurrent request) and shrinks after 90 s idle.
pub fn non_socket_fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .map(|t| !t.to_string_lossy().starts_with("socket:"))
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

/// Resident set size of a process in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Threads (tasks) of a process.
pub fn task_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}
