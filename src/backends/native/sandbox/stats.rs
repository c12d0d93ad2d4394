//! Stats from cgroups (v1, v2, hybrid) and the network namespace.

use std::path::Path;

use crate::genericruntime::seam::cri;

/// A container's usage figures for CRI ContainerStats.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerUsage {
    pub cpu: cri::CpuUsage,
    pub memory: cri::MemoryUsage,
    pub process: cri::ProcessUsage,
    pub writable_layer: cri::FilesystemUsage,
}

/// Remembers each container's last CPU sample to compute `usage_nano_cores`.
#[derive(Default)]
pub struct CpuRates {}

pub fn container_stats(cgroup_path: &str, upper_dir: &Path) -> Option<ContainerUsage> {
    let _ = (cgroup_path, upper_dir);
    None
}

pub fn network_usage(netns: &Path) -> Option<cri::NetworkUsage> {
    let _ = netns;
    None
}
