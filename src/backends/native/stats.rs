//! The CRI stats calls of the native backend, answered as containerd's CRI plugin answers them:
//! ListContainerStats gives each running container's CPU, memory and writable layer (its cgroup,
//! its overlay upper dir); ListPodSandboxStats gives each Ready pod's CPU, memory and process
//! count from the pod cgroup (`linux.cgroup_parent`; the sums of its containers when it has
//! none or it is gone), its network from its namespace, and its running containers. The reads
//! (cgroup files, the upper-dir walk, a thread that enters the netns) block, so they run on
//! tokio's blocking pool; the cgroup mounts are read once per call.

use std::sync::Arc;

use crate::genericruntime::seam::{cri, Code, Result as RtResult, RuntimeError};

use super::container::{self, ContainerRecord, RUNNING};
use super::sandbox::stats::{container_stats_in, network_usage, CgroupLayout};
use super::sandbox::{SandboxRecord, SandboxState};
use super::{now_ns, NativeRuntime};

fn u64v(v: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value: v })
}

/// Runs `f` on the blocking pool with the runtime and the cgroup mounts of this moment.
async fn blocking<T: Send + 'static>(
    op: &'static str,
    rt: &NativeRuntime,
    f: impl FnOnce(&NativeRuntime, &CgroupLayout) -> T + Send + 'static,
) -> RtResult<T> {
    let rt: Arc<NativeRuntime> = rt
        .me
        .upgrade()
        .ok_or_else(|| RuntimeError::new(op, Code::Unavailable, "the native runtime is shutting down"))?;
    tokio::task::spawn_blocking(move || f(&rt, &CgroupLayout::current()))
        .await
        .map_err(|e| RuntimeError::new(op, Code::Internal, e.to_string()))
}

impl NativeRuntime {
    /// A running container's figures; None when its cgroup is gone (it just exited).
    fn container_stats(&self, layout: &CgroupLayout, rec: &ContainerRecord) -> Option<cri::ContainerStats> {
        let upper = self.containers.upper_dir(&rec.id);
        let mut usage = container_stats_in(layout, &rec.cgroups_path, &upper)?;
        self.cpu.fill(&rec.id, &mut usage.cpu);
        Some(usage.into_stats(cri::ContainerAttributes {
            id: rec.id.clone(),
            metadata: rec.config.metadata.clone(),
            labels: rec.config.labels.clone(),
            annotations: rec.config.annotations.clone(),
        }))
    }

    /// A Ready sandbox's figures (`running`: its running containers).
    fn sandbox_stats(
        &self,
        layout: &CgroupLayout,
        sb: &SandboxRecord,
        running: &[ContainerRecord],
        now: i64,
    ) -> cri::PodSandboxStats {
        // Containers first: the pod cgroup, read after them, never shows less CPU than they do.
        let containers: Vec<cri::ContainerStats> =
            running.iter().filter_map(|c| self.container_stats(layout, c)).collect();
        let pod = if sb.cgroup_parent.is_empty() {
            None
        } else {
            layout.usage(&sb.cgroup_parent)
        };
        let (cpu, memory, process) = match pod {
            Some((mut cpu, memory, process)) => {
                self.cpu.fill(&sb.id, &mut cpu);
                (cpu, memory, Some(process))
            }
            None => {
                let (cpu, memory) = sum_containers(&containers, now);
                (cpu, memory, None)
            }
        };
        cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: sb.id.clone(),
                metadata: sb.config.metadata.clone(),
                labels: sb.config.labels.clone(),
                annotations: sb.config.annotations.clone(),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: Some(cpu),
                memory: Some(memory),
                network: sb.netns.as_deref().and_then(network_usage),
                process,
                containers,
            }),
            windows: None,
        }
    }
}

/// Pod CPU and memory as the sums of its containers' (no pod cgroup to read).
fn sum_containers(containers: &[cri::ContainerStats], now: i64) -> (cri::CpuUsage, cri::MemoryUsage) {
    let total = |f: &dyn Fn(&cri::ContainerStats) -> Option<&Option<cri::UInt64Value>>| {
        u64v(
            containers
                .iter()
                .filter_map(|c| f(c)?.as_ref().map(|v| v.value))
                .fold(0u64, u64::saturating_add),
        )
    };
    (
        cri::CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: total(&|c| Some(&c.cpu.as_ref()?.usage_core_nano_seconds)),
            usage_nano_cores: total(&|c| Some(&c.cpu.as_ref()?.usage_nano_cores)),
        },
        cri::MemoryUsage {
            timestamp: now,
            working_set_bytes: total(&|c| Some(&c.memory.as_ref()?.working_set_bytes)),
            available_bytes: None,
            usage_bytes: total(&|c| Some(&c.memory.as_ref()?.usage_bytes)),
            rss_bytes: total(&|c| Some(&c.memory.as_ref()?.rss_bytes)),
            page_faults: total(&|c| Some(&c.memory.as_ref()?.page_faults)),
            major_page_faults: total(&|c| Some(&c.memory.as_ref()?.major_page_faults)),
        },
    )
}

/// CRI ListContainerStats: the running containers the filter selects.
pub(super) async fn list_container_stats(
    rt: &NativeRuntime,
    req: cri::ListContainerStatsRequest,
) -> RtResult<cri::ListContainerStatsResponse> {
    let f = req.filter.unwrap_or_default();
    let filter = cri::ContainerFilter {
        id: f.id,
        pod_sandbox_id: f.pod_sandbox_id,
        label_selector: f.label_selector,
        state: Some(cri::ContainerStateValue { state: RUNNING }),
    };
    let ids: Vec<String> = container::filter(rt.containers.list(), Some(&filter), |sid| {
        rt.sandboxes.get(sid).map(|s| s.id).unwrap_or_else(|| sid.to_string())
    })
    .into_iter()
    .map(|c| c.id)
    .collect();
    let stats = blocking("ListContainerStats", rt, move |rt, layout| {
        ids.iter()
            .filter_map(|id| rt.containers.get(id))
            .filter_map(|rec| rt.container_stats(layout, &rec))
            .collect()
    })
    .await?;
    Ok(cri::ListContainerStatsResponse { stats })
}

/// CRI ListPodSandboxStats: the Ready sandboxes the filter selects.
pub(super) async fn list_pod_sandbox_stats(
    rt: &NativeRuntime,
    req: cri::ListPodSandboxStatsRequest,
) -> RtResult<cri::ListPodSandboxStatsResponse> {
    let f = req.filter.unwrap_or_default();
    let id = (!f.id.is_empty()).then(|| rt.sandboxes.get(&f.id).map(|s| s.id).unwrap_or(f.id.clone()));
    let sandboxes: Vec<SandboxRecord> = rt
        .sandboxes
        .list()
        .into_iter()
        .filter(|s| s.state == SandboxState::Ready)
        .filter(|s| id.as_ref().is_none_or(|i| *i == s.id))
        .filter(|s| f.label_selector.iter().all(|(k, v)| s.config.labels.get(k) == Some(v)))
        .collect();
    let stats = blocking("ListPodSandboxStats", rt, move |rt, layout| {
        let now = now_ns();
        let all = rt.containers.list();
        sandboxes
            .iter()
            .map(|sb| {
                let running: Vec<ContainerRecord> = all
                    .iter()
                    .filter(|c| c.sandbox_id == sb.id && c.state == RUNNING)
                    .cloned()
                    .collect();
                rt.sandbox_stats(layout, sb, &running, now)
            })
            .collect()
    })
    .await?;
    Ok(cri::ListPodSandboxStatsResponse { stats })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(cpu: (u64, Option<u64>), ws: u64, rss: Option<u64>) -> cri::ContainerStats {
        cri::ContainerStats {
            cpu: Some(cri::CpuUsage {
                timestamp: 1,
                usage_core_nano_seconds: u64v(cpu.0),
                usage_nano_cores: cpu.1.and_then(u64v),
            }),
            memory: Some(cri::MemoryUsage {
                timestamp: 1,
                working_set_bytes: u64v(ws),
                usage_bytes: u64v(ws * 2),
                rss_bytes: rss.and_then(u64v),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_without_cgroup_sums_its_containers() {
        let (cpu, mem) = sum_containers(&[stats((10, Some(3)), 100, Some(7)), stats((5, None), 50, None)], 42);
        assert_eq!(cpu.timestamp, 42);
        assert_eq!(cpu.usage_core_nano_seconds, u64v(15));
        assert_eq!(cpu.usage_nano_cores, u64v(3));
        assert_eq!(mem.working_set_bytes, u64v(150));
        assert_eq!(mem.usage_bytes, u64v(300));
        assert_eq!(mem.rss_bytes, u64v(7));
        assert_eq!(mem.available_bytes, None, "no pod limit known");
        let (cpu, mem) = sum_containers(&[], 1);
        assert_eq!((cpu.usage_core_nano_seconds, mem.working_set_bytes), (u64v(0), u64v(0)));
    }
}
