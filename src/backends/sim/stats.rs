//! ListContainerStats and ListPodSandboxStats of the simulated runtime: deterministic figures a
//! test can predict from the manifest (documented in the module doc of `sim`).
//!
//! * CPU: a running container burns `SIM_CPU_MILLICORES` (its environment; default
//!   [`DEFAULT_MILLICORES`]) per *virtual* second: `usageCoreNanoSeconds = millicores × 10⁶ ×
//!   virtual seconds run` (up to its exit for an exited one), `usageNanoCores = millicores × 10⁶`
//!   while it runs.
//! * Memory: a running container uses `SIM_MEMORY` (a quantity, e.g. `64Mi`; default
//!   [`DEFAULT_MEMORY`]) as working set, usage and RSS; `availableBytes = limit − workingSet`
//!   when the container has a memory limit. Page faults are 0.
//! * Writable layer: the bytes and files the container's scripts wrote to private (unmounted)
//!   paths.
//! * Sandbox: CPU is the sum over all its containers (exited ones included, as a pod cgroup
//!   keeps their time), memory the sum over the running ones, processes = running containers + 1
//!   (the pause process) while READY, network one `eth0` with zero counters (no traffic is
//!   simulated) unless hostNetwork.

use std::time::Duration;

use super::state::{Container, ContainerRecord, Sandbox, State, RUNNING, SANDBOX_READY};
use crate::clock::Clock;
use crate::genericruntime::seam::cri;
use crate::podspec::resources::parse_value;

/// CPU a container burns when its environment does not say (millicores).
pub const DEFAULT_MILLICORES: u64 = 1;
/// Memory a container uses when its environment does not say (bytes).
pub const DEFAULT_MEMORY: u64 = 1024 * 1024;
/// Environment variable setting a container's CPU rate in millicores.
pub const CPU_ENV: &str = "SIM_CPU_MILLICORES";
/// Environment variable setting a container's memory (a Kubernetes quantity).
pub const MEMORY_ENV: &str = "SIM_MEMORY";
/// The filesystem the simulated writable layers are reported on.
pub const LAYER_MOUNT_DIR: &str = "containers";

fn env<'a>(rec: &'a ContainerRecord, key: &str) -> Option<&'a str> {
    rec.config
        .envs
        .iter()
        .rev()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_str())
}

/// The container's CPU rate in millicores (an unparseable value falls back to the default).
pub fn millicores(rec: &ContainerRecord) -> u64 {
    env(rec, CPU_ENV)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MILLICORES)
}

/// The container's memory in bytes.
pub fn memory_bytes(rec: &ContainerRecord) -> u64 {
    env(rec, MEMORY_ENV)
        .and_then(|v| parse_value(v.trim()).ok())
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(DEFAULT_MEMORY)
}

fn ts(ns: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_nanosecond(i128::from(ns)).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// Virtual time the container has run (to its exit, or to `now`).
fn virtual_run(rec: &ContainerRecord, clock: &Clock, now_ns: i64) -> Duration {
    if rec.started_at == 0 {
        return Duration::ZERO;
    }
    let end = if rec.state == RUNNING || rec.finished_at == 0 {
        now_ns
    } else {
        rec.finished_at
    };
    clock.virtual_between(ts(rec.started_at), ts(end))
}

/// Cumulative CPU nanoseconds: millicores × 10⁶ ns per virtual second.
pub fn cpu_usage_ns(rec: &ContainerRecord, clock: &Clock, now_ns: i64) -> u64 {
    let ran = virtual_run(rec, clock, now_ns).as_nanos();
    let used = ran.saturating_mul(u128::from(millicores(rec))) / 1000;
    u64::try_from(used).unwrap_or(u64::MAX)
}

fn u64v(value: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value })
}

fn memory_limit(rec: &ContainerRecord) -> Option<u64> {
    rec.config
        .linux
        .as_ref()
        .and_then(|l| l.resources.as_ref())
        .map(|r| r.memory_limit_in_bytes)
        .filter(|l| *l > 0)
        .and_then(|l| u64::try_from(l).ok())
}

fn container_stats(c: &Container, clock: &Clock, now_ns: i64, layer_mount: &str) -> cri::ContainerStats {
    let rec = &c.rec;
    let running = rec.state == RUNNING;
    let cpu = cri::CpuUsage {
        timestamp: now_ns,
        usage_core_nano_seconds: u64v(cpu_usage_ns(rec, clock, now_ns)),
        usage_nano_cores: running.then(|| cri::UInt64Value {
            value: millicores(rec).saturating_mul(1_000_000),
        }),
    };
    let memory = running.then(|| {
        let ws = memory_bytes(rec);
        cri::MemoryUsage {
            timestamp: now_ns,
            working_set_bytes: u64v(ws),
            available_bytes: memory_limit(rec).map(|l| cri::UInt64Value {
                value: l.saturating_sub(ws),
            }),
            usage_bytes: u64v(ws),
            rss_bytes: u64v(ws),
            page_faults: u64v(0),
            major_page_faults: u64v(0),
        }
    });
    let (bytes, files) = c
        .run
        .as_ref()
        .map(|h| h.vfs.lock().unwrap_or_else(|p| p.into_inner()).private_usage())
        .unwrap_or((0, 0));
    cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: rec.id.clone(),
            metadata: rec.config.metadata.clone(),
            labels: rec.config.labels.clone(),
            annotations: rec.config.annotations.clone(),
        }),
        cpu: Some(cpu),
        memory,
        writable_layer: Some(cri::FilesystemUsage {
            timestamp: now_ns,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: layer_mount.to_string(),
            }),
            used_bytes: u64v(bytes),
            inodes_used: u64v(files),
        }),
        swap: None,
    }
}

/// The full ID of an exact ID or unique prefix (unresolvable ones stay as given: they match nothing).
fn resolve_id<V>(m: &std::collections::BTreeMap<String, V>, id: &str) -> String {
    match super::state::resolve(m, id) {
        super::state::Resolved::Found(id) => id,
        _ => id.to_string(),
    }
}

fn labels_match(
    labels: &std::collections::HashMap<String, String>,
    sel: &std::collections::HashMap<String, String>,
) -> bool {
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// ListContainerStats: every container matching the filter (ID and sandbox ID as exact IDs or
/// unique prefixes, labels all equal).
pub fn list_container_stats(
    st: &State,
    filter: Option<&cri::ContainerStatsFilter>,
    clock: &Clock,
    now_ns: i64,
    layer_mount: &str,
) -> Vec<cri::ContainerStats> {
    let (id, sandbox) = match filter {
        Some(f) => (
            (!f.id.is_empty()).then(|| resolve_id(&st.containers, &f.id)),
            (!f.pod_sandbox_id.is_empty()).then(|| resolve_id(&st.sandboxes, &f.pod_sandbox_id)),
        ),
        None => (None, None),
    };
    st.containers
        .values()
        .filter(|c| id.as_ref().is_none_or(|id| &c.rec.id == id))
        .filter(|c| sandbox.as_ref().is_none_or(|s| &c.rec.sandbox_id == s))
        .filter(|c| filter.is_none_or(|f| labels_match(&c.rec.config.labels, &f.label_selector)))
        .map(|c| container_stats(c, clock, now_ns, layer_mount))
        .collect()
}

fn sandbox_stats(sb: &Sandbox, st: &State, clock: &Clock, now_ns: i64, layer_mount: &str) -> cri::PodSandboxStats {
    let containers: Vec<&Container> = sb.containers.iter().filter_map(|id| st.containers.get(id)).collect();
    let running: Vec<&&Container> = containers.iter().filter(|c| c.rec.state == RUNNING).collect();
    let cpu_ns = containers
        .iter()
        .fold(0u64, |acc, c| acc.saturating_add(cpu_usage_ns(&c.rec, clock, now_ns)));
    let rate = running.iter().fold(0u64, |acc, c| {
        acc.saturating_add(millicores(&c.rec).saturating_mul(1_000_000))
    });
    let mem = running
        .iter()
        .fold(0u64, |acc, c| acc.saturating_add(memory_bytes(&c.rec)));
    let ready = sb.rec.state == SANDBOX_READY;
    let network = (ready && !sb.rec.host_network()).then(|| {
        let eth0 = cri::NetworkInterfaceUsage {
            name: "eth0".into(),
            rx_bytes: u64v(0),
            rx_errors: u64v(0),
            tx_bytes: u64v(0),
            tx_errors: u64v(0),
        };
        cri::NetworkUsage {
            timestamp: now_ns,
            default_interface: Some(eth0.clone()),
            interfaces: vec![eth0],
        }
    });
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: sb.rec.id.clone(),
            metadata: sb.rec.config.metadata.clone(),
            labels: sb.rec.config.labels.clone(),
            annotations: sb.rec.config.annotations.clone(),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: Some(cri::CpuUsage {
                timestamp: now_ns,
                usage_core_nano_seconds: u64v(cpu_ns),
                usage_nano_cores: u64v(rate),
            }),
            memory: Some(cri::MemoryUsage {
                timestamp: now_ns,
                working_set_bytes: u64v(mem),
                available_bytes: None,
                usage_bytes: u64v(mem),
                rss_bytes: u64v(mem),
                page_faults: u64v(0),
                major_page_faults: u64v(0),
            }),
            network,
            process: Some(cri::ProcessUsage {
                timestamp: now_ns,
                process_count: u64v(if ready { running.len() as u64 + 1 } else { 0 }),
            }),
            containers: running
                .iter()
                .map(|c| container_stats(c, clock, now_ns, layer_mount))
                .collect(),
        }),
        windows: None,
    }
}

/// ListPodSandboxStats: every sandbox matching the filter.
pub fn list_pod_sandbox_stats(
    st: &State,
    filter: Option<&cri::PodSandboxStatsFilter>,
    clock: &Clock,
    now_ns: i64,
    layer_mount: &str,
) -> Vec<cri::PodSandboxStats> {
    let id = filter
        .filter(|f| !f.id.is_empty())
        .map(|f| resolve_id(&st.sandboxes, &f.id));
    st.sandboxes
        .values()
        .filter(|s| id.as_ref().is_none_or(|id| &s.rec.id == id))
        .filter(|s| filter.is_none_or(|f| labels_match(&s.rec.config.labels, &f.label_selector)))
        .map(|s| sandbox_stats(s, st, clock, now_ns, layer_mount))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backends::sim::{SimConfig, SimRuntime};
    use crate::genericruntime::seam::{ImageService, RuntimeService};

    const IMAGE: &str = "busybox:1.36";

    async fn sim(clock: Clock) -> (Arc<SimRuntime>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SimConfig {
            images: vec![IMAGE.to_string()],
            ..SimConfig::default()
        };
        let rt = SimRuntime::new(cfg, clock, dir.path().join("sim")).unwrap();
        (rt, dir)
    }

    async fn sandbox(rt: &SimRuntime, name: &str) -> (String, cri::PodSandboxConfig) {
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            labels: [("io.kubernetes.pod.uid".to_string(), format!("uid-{name}"))].into(),
            ..Default::default()
        };
        let id = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .pod_sandbox_id;
        (id, config)
    }

    async fn container(
        rt: &SimRuntime,
        sb: &(String, cri::PodSandboxConfig),
        name: &str,
        script: &str,
        env: &[(&str, &str)],
        limit: i64,
    ) -> String {
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            command: vec!["sh".into(), "-c".into(), script.into()],
            labels: [("io.kubernetes.container.name".to_string(), name.to_string())].into(),
            envs: env
                .iter()
                .map(|(k, v)| cri::KeyValue {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            linux: (limit > 0).then(|| cri::LinuxContainerConfig {
                resources: Some(cri::LinuxContainerResources {
                    memory_limit_in_bytes: limit,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sb.0.clone(),
                config: Some(config),
                sandbox_config: Some(sb.1.clone()),
            })
            .await
            .unwrap()
            .container_id;
        rt.start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
        id
    }

    async fn started_at(rt: &SimRuntime, id: &str) -> (i64, i64) {
        let s = rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .unwrap()
            .status
            .unwrap();
        (s.started_at, s.finished_at)
    }

    fn one(stats: &[cri::ContainerStats], id: &str) -> cri::ContainerStats {
        stats
            .iter()
            .find(|s| s.attributes.as_ref().unwrap().id == id)
            .cloned()
            .unwrap()
    }

    #[tokio::test]
    async fn container_figures_follow_the_environment_and_virtual_time() {
        // Ten virtual seconds per real one: CPU time grows ten times faster than wall time.
        let clock = Clock::scaled(10.0);
        let (rt, _dir) = sim(clock).await;
        let sb = sandbox(&rt, "web").await;
        let busy = container(
            &rt,
            &sb,
            "busy",
            "echo data > /tmp/f; sleep infinity",
            &[(CPU_ENV, "250"), (MEMORY_ENV, "64Mi")],
            100 << 20,
        )
        .await;
        let idle = container(&rt, &sb, "idle", "sleep infinity", &[], 0).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stats = rt.list_container_stats(Default::default()).await.unwrap().stats;
        assert_eq!(stats.len(), 2);

        let s = one(&stats, &busy);
        let cpu = s.cpu.unwrap();
        let (started, _) = started_at(&rt, &busy).await;
        let virtual_ns = clock.virtual_between(ts(started), ts(cpu.timestamp)).as_nanos() as u64;
        assert_eq!(cpu.usage_core_nano_seconds.unwrap().value, virtual_ns * 250 / 1000);
        assert!(virtual_ns >= 500_000_000, "50 ms real is 0.5 s virtual: {virtual_ns}");
        assert_eq!(cpu.usage_nano_cores.unwrap().value, 250_000_000);
        let mem = s.memory.unwrap();
        assert_eq!(mem.working_set_bytes.unwrap().value, 64 << 20);
        assert_eq!(mem.usage_bytes.unwrap().value, 64 << 20);
        assert_eq!(mem.available_bytes.unwrap().value, 36 << 20);
        let layer = s.writable_layer.unwrap();
        assert_eq!(layer.used_bytes.unwrap().value, 5, "`data\\n` in /tmp/f");
        assert_eq!(layer.inodes_used.unwrap().value, 1);
        assert_eq!(s.attributes.unwrap().metadata.unwrap().name, "busy");

        let s = one(&stats, &idle);
        assert_eq!(
            s.cpu.unwrap().usage_nano_cores.unwrap().value,
            DEFAULT_MILLICORES * 1_000_000
        );
        let mem = s.memory.unwrap();
        assert_eq!(mem.working_set_bytes.unwrap().value, DEFAULT_MEMORY);
        assert!(mem.available_bytes.is_none(), "no limit");

        // Filters: by ID prefix, by sandbox, by label.
        let f = |id: &str, sb: &str, label: Option<&str>| cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                id: id.into(),
                pod_sandbox_id: sb.into(),
                label_selector: label
                    .map(|l| [("io.kubernetes.container.name".to_string(), l.to_string())].into())
                    .unwrap_or_default(),
            }),
        };
        let by_id = rt.list_container_stats(f(&busy[..12], "", None)).await.unwrap().stats;
        assert_eq!(by_id.len(), 1);
        assert_eq!(
            rt.list_container_stats(f("", &sb.0, None)).await.unwrap().stats.len(),
            2
        );
        assert_eq!(
            rt.list_container_stats(f("", "nope", None)).await.unwrap().stats.len(),
            0
        );
        let by_label = rt.list_container_stats(f("", "", Some("idle"))).await.unwrap().stats;
        assert_eq!(by_label[0].attributes.as_ref().unwrap().id, idle);
    }

    #[tokio::test]
    async fn exited_containers_keep_their_cpu_and_sandboxes_sum_them() {
        let clock = Clock::scaled(100.0);
        let (rt, _dir) = sim(clock).await;
        let sb = sandbox(&rt, "job").await;
        // 1 virtual second at 500 millicores, then exit: 0.5 s of CPU for good.
        let done = container(&rt, &sb, "once", "sleep 1", &[(CPU_ENV, "500")], 0).await;
        let live = container(&rt, &sb, "live", "sleep infinity", &[(MEMORY_ENV, "10M")], 0).await;
        tokio::time::timeout(Duration::from_secs(10), async {
            while started_at(&rt, &done).await.1 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        let (s, f) = started_at(&rt, &done).await;
        let stats = rt.list_container_stats(Default::default()).await.unwrap().stats;
        let exited = one(&stats, &done);
        let cpu = exited.cpu.unwrap();
        let want = clock.virtual_between(ts(s), ts(f)).as_nanos() as u64 * 500 / 1000;
        assert_eq!(cpu.usage_core_nano_seconds.unwrap().value, want);
        assert!(cpu.usage_nano_cores.is_none());
        assert!(exited.memory.is_none());

        let pods = rt.list_pod_sandbox_stats(Default::default()).await.unwrap().stats;
        assert_eq!(pods.len(), 1);
        let linux = pods[0].linux.clone().unwrap();
        let live_stats = one(&rt.list_container_stats(Default::default()).await.unwrap().stats, &live);
        let live_cpu_then = live_stats.cpu.unwrap().usage_core_nano_seconds.unwrap().value;
        let pod_cpu = linux.cpu.as_ref().unwrap().usage_core_nano_seconds.unwrap().value;
        // The pod includes the exited container's time and the live one's (sampled earlier).
        assert!(pod_cpu >= want, "{pod_cpu} >= {want}");
        assert!(pod_cpu <= want + live_cpu_then, "pod sampled before the live container");
        assert_eq!(
            linux.cpu.unwrap().usage_nano_cores.unwrap().value,
            DEFAULT_MILLICORES * 1_000_000
        );
        assert_eq!(linux.memory.unwrap().working_set_bytes.unwrap().value, 10_000_000);
        assert_eq!(linux.process.unwrap().process_count.unwrap().value, 2);
        assert_eq!(linux.containers.len(), 1, "running containers only");
        let net = linux.network.unwrap();
        assert_eq!(net.default_interface.unwrap().name, "eth0");
        assert_eq!(
            pods[0].attributes.as_ref().unwrap().metadata.as_ref().unwrap().name,
            "job"
        );

        let filtered = rt
            .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
                filter: Some(cri::PodSandboxStatsFilter {
                    id: "nope".into(),
                    label_selector: Default::default(),
                }),
            })
            .await
            .unwrap()
            .stats;
        assert!(filtered.is_empty());
        // The image filesystem is still answered next to the stats.
        assert!(!rt
            .image_fs_info(Default::default())
            .await
            .unwrap()
            .image_filesystems
            .is_empty());
    }

    #[tokio::test]
    async fn unavailable_runtime_refuses_stats() {
        let (rt, _dir) = sim(Clock::real()).await;
        rt.set_config(SimConfig {
            unavailable: true,
            ..SimConfig::default()
        });
        let e = rt.list_container_stats(Default::default()).await.unwrap_err();
        assert_eq!(e.code, crate::genericruntime::Code::Unavailable);
        assert!(rt.list_pod_sandbox_stats(Default::default()).await.is_err());
    }
}
