//! The Summary API (`/stats/summary`): node stats from the host, pod and container stats from
//! the runtime (CRI ListContainerStats / ListPodSandboxStats) with the pod cgroup, the sandbox's
//! network namespace and the log files filling in what the runtime does not report.
//!
//! Assembly follows the kubelet's CRI stats provider (`pkg/kubelet/stats/cri_stats_provider.go`):
//! a pod is listed when it has a running container; its newest sandbox (every READY one) gives
//! podRef and startTime; a container's startTime is its creation time. Differences on purpose:
//! the kubelet takes container CPU/memory from cAdvisor, keel from the runtime (containerd
//! reads the same cgroup files); pod volumes are measured under the pod's volume directory.

pub mod node;
pub mod pods;
pub mod restclient;
pub mod types;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::genericruntime::{cri, Code, Runtime, RuntimeError};
use crate::kubelet::cgroups::DEFAULT_CGROUP_MOUNT;
use crate::kubelet::syncloop::Core;
use node::HostPaths;
use pods::{CgroupReader, CpuRateCache};
pub use types::Summary;
use types::{ContainerStats, FsStats, NodeStats, PodStats, RuntimeStats};

/// The rate-cache key of the node.
const NODE_KEY: &str = "node";
/// The rate-cache key of the `pods` system container (the cgroup root).
const PODS_CGROUP_KEY: &str = "system/pods";

/// Building the summary failed.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("{step}: {source}")]
    Runtime {
        step: &'static str,
        #[source]
        source: RuntimeError,
    },
    #[error("reading {path}: {source}")]
    ReadHost {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("statvfs of {path}: {source}")]
    Statvfs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// Where the provider looks.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub node_name: String,
    /// The kubelet root dir: its filesystem is the node's `fs` (nodefs).
    pub root_dir: PathBuf,
    /// `<podLogsDir>/<ns>_<name>_<uid>/<container>/` holds a container's logs.
    pub pod_logs_dir: PathBuf,
    /// Pod cgroups to read (CRI backends); `None` on the simulated runtime.
    pub cgroups: Option<CgroupReader>,
    pub host: HostPaths,
}

/// Builds summaries; keeps the previous CPU samples for `usageNanoCores`.
pub struct StatsProvider {
    runtime: Arc<dyn Runtime>,
    cfg: ProviderConfig,
    cpu: CpuRateCache,
    /// Set once ListPodSandboxStats answered Unimplemented: not asked again.
    no_sandbox_stats: AtomicBool,
}

impl std::fmt::Debug for StatsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsProvider").field("cfg", &self.cfg).finish()
    }
}

fn rt(step: &'static str) -> impl FnOnce(RuntimeError) -> StatsError {
    move |source| StatsError::Runtime { step, source }
}

/// One provider per kubelet core, shared by `/stats/summary` and `/metrics/resource` so both
/// read one CPU-rate cache. Keyed by the core (tests run several in one process).
static PROVIDERS: Mutex<Vec<(Weak<Core>, Arc<StatsProvider>)>> = Mutex::new(Vec::new());

impl StatsProvider {
    pub fn new(runtime: Arc<dyn Runtime>, cfg: ProviderConfig) -> Self {
        Self {
            runtime,
            cfg,
            cpu: CpuRateCache::default(),
            no_sandbox_stats: AtomicBool::new(false),
        }
    }

    /// The provider of a kubelet core (created on first use).
    pub fn for_core(core: &Arc<Core>) -> Arc<StatsProvider> {
        let mut all = PROVIDERS.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|(c, _)| c.strong_count() > 0);
        if let Some((_, p)) = all.iter().find(|(c, _)| std::ptr::eq(c.as_ptr(), Arc::as_ptr(core))) {
            return p.clone();
        }
        let cgroups = core
            .cgroups
            .enabled()
            .then(|| CgroupReader::new(DEFAULT_CGROUP_MOUNT, &core.cfg.cgroup_root));
        let p = Arc::new(StatsProvider::new(
            core.manager.runtime().clone(),
            ProviderConfig {
                node_name: core.cfg.node_name.clone(),
                root_dir: core.cfg.root_dir.clone(),
                pod_logs_dir: core.cfg.pod_logs_dir.clone(),
                cgroups,
                host: HostPaths::default(),
            },
        ));
        all.push((Arc::downgrade(core), p.clone()));
        p
    }

    /// The summary. `only_cpu_and_memory` gives the reduced one (and reads the CPU-rate cache
    /// without recording, as the kubelet's does).
    pub async fn summary(&self, only_cpu_and_memory: bool) -> Result<Summary, StatsError> {
        let update = !only_cpu_and_memory;
        let now = jiff::Timestamp::now();
        let host = self.cfg.host.sample(now, !only_cpu_and_memory)?;
        let mut node = NodeStats {
            node_name: self.cfg.node_name.clone(),
            start_time: host.boot_time,
            cpu: host
                .cpu_ns
                .map(|ns| pods::cpu_from_counter(&self.cpu, NODE_KEY, ns, now, update)),
            memory: host.memory.clone(),
            ..Default::default()
        };
        if let Some(reader) = &self.cfg.cgroups {
            if let Some(sample) = reader.root(now) {
                node.system_containers = Some(vec![ContainerStats {
                    name: "pods".into(),
                    start_time: host.boot_time,
                    cpu: sample
                        .cpu_ns
                        .map(|ns| pods::cpu_from_counter(&self.cpu, PODS_CGROUP_KEY, ns, now, update)),
                    memory: sample.memory,
                    ..Default::default()
                }]);
            }
        }
        let mut live_keys: HashSet<String> = [NODE_KEY.to_string(), PODS_CGROUP_KEY.to_string()].into();
        let mut pods = self.pods(now, update, !only_cpu_and_memory, &mut live_keys).await?;
        if update {
            self.cpu.retain(&live_keys);
        }
        if only_cpu_and_memory {
            pods = pods.into_iter().map(pods::cpu_and_memory_only).collect();
        } else {
            node.network = Some(node::network_stats(host.interfaces, now));
            node.fs = Some(node::fs_stats(&self.cfg.root_dir, now)?);
            node.runtime = Some(RuntimeStats {
                image_fs: self.image_fs(now).await?,
                container_fs: None,
            });
            node.rlimit = host.rlimit;
        }
        Ok(Summary {
            node,
            pods: (!pods.is_empty()).then_some(pods),
        })
    }

    /// `runtime.imageFs`: the runtime's usage with the capacity of the filesystem it is on.
    async fn image_fs(&self, now: jiff::Timestamp) -> Result<Option<FsStats>, StatsError> {
        let resp = self
            .runtime
            .image_fs_info(Default::default())
            .await
            .map_err(rt("ImageFsInfo"))?;
        let Some(u) = resp.image_filesystems.into_iter().next() else {
            return Ok(None);
        };
        let mut fs = u
            .fs_id
            .as_ref()
            .and_then(|id| node::fs_stats(std::path::Path::new(&id.mountpoint), now).ok())
            .unwrap_or_default();
        fs.time = pods::time_from_ns(u.timestamp).or(Some(now));
        fs.used_bytes = u.used_bytes.map(|v| v.value);
        fs.inodes_used = u.inodes_used.map(|v| v.value);
        Ok(Some(fs))
    }

    /// The runtime's pod-level stats by sandbox ID; empty when it has none (pod figures then
    /// come from the pod cgroup or the containers' sums).
    async fn sandbox_stats(&self) -> HashMap<String, cri::PodSandboxStats> {
        if self.no_sandbox_stats.load(Ordering::Relaxed) {
            return HashMap::new();
        }
        match self.runtime.list_pod_sandbox_stats(Default::default()).await {
            Ok(r) => r
                .stats
                .into_iter()
                .filter_map(|s| Some((s.attributes.as_ref()?.id.clone(), s)))
                .collect(),
            Err(e) if e.code == Code::Unimplemented => {
                tracing::debug!(error = %e, "runtime has no ListPodSandboxStats; reading pod cgroups");
                self.no_sandbox_stats.store(true, Ordering::Relaxed);
                HashMap::new()
            }
            // containerd fails the whole call when one sandbox's metrics cannot be read (one
            // being torn down): this summary falls back for every pod instead of failing.
            Err(e) => {
                tracing::debug!(error = %e, "ListPodSandboxStats failed; reading pod cgroups");
                HashMap::new()
            }
        }
    }

    async fn pods(
        &self,
        now: jiff::Timestamp,
        update: bool,
        full: bool,
        live_keys: &mut HashSet<String>,
    ) -> Result<Vec<PodStats>, StatsError> {
        let sandboxes = self
            .runtime
            .list_pod_sandbox(Default::default())
            .await
            .map_err(rt("ListPodSandbox"))?
            .items;
        let sandboxes: HashMap<String, cri::PodSandbox> = pods::live_sandboxes(sandboxes)
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        let running = cri::ContainerState::ContainerRunning as i32;
        let containers: HashMap<String, cri::Container> = self
            .runtime
            .list_containers(Default::default())
            .await
            .map_err(rt("ListContainers"))?
            .containers
            .into_iter()
            .filter(|c| c.state == running)
            .map(|c| (c.id.clone(), c))
            .collect();
        let stats = self
            .runtime
            .list_container_stats(Default::default())
            .await
            .map_err(rt("ListContainerStats"))?
            .stats;
        let sandbox_stats = self.sandbox_stats().await;
        // statvfs per writable-layer filesystem, once per summary.
        let mut fs_cache: HashMap<String, Option<FsStats>> = HashMap::new();
        let logs_fs = if full {
            node::fs_stats(&self.cfg.pod_logs_dir, now).ok()
        } else {
            None
        };

        let mut by_sandbox: HashMap<String, Vec<ContainerStats>> = HashMap::new();
        for st in &stats {
            let Some(attr) = &st.attributes else { continue };
            let Some(c) = containers.get(&attr.id) else { continue };
            let Some(sb) = sandboxes.get(&c.pod_sandbox_id) else {
                continue;
            };
            let name = c.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
            live_keys.insert(attr.id.clone());
            let rate = st
                .cpu
                .as_ref()
                .and_then(|cpu| pods::cached_rate(&self.cpu, &attr.id, cpu, update));
            let mut cs = ContainerStats {
                name: name.clone(),
                start_time: pods::time_from_ns(c.created_at),
                cpu: Some(pods::container_cpu(st.cpu.as_ref(), rate, now)),
                memory: Some(pods::container_memory(st.memory.as_ref(), now)),
                ..Default::default()
            };
            if full {
                cs.rootfs = Some(self.rootfs(st.writable_layer.as_ref(), &mut fs_cache, now));
                let pr = pods::pod_ref(sb);
                let dir = self
                    .cfg
                    .pod_logs_dir
                    .join(format!("{}_{}_{}", pr.namespace, pr.name, pr.uid))
                    .join(&name);
                let mut logs = logs_fs.clone().unwrap_or_default();
                logs.time = Some(now);
                let (bytes, files) = pods::dir_usage(&dir).unwrap_or((0, 0));
                logs.used_bytes = Some(bytes);
                logs.inodes_used = Some(files);
                cs.logs = Some(logs);
            }
            by_sandbox.entry(c.pod_sandbox_id.clone()).or_default().push(cs);
        }

        let mut out = Vec::with_capacity(by_sandbox.len());
        for (sandbox_id, mut containers) in by_sandbox {
            let Some(sb) = sandboxes.get(&sandbox_id) else { continue };
            containers.sort_by(|a, b| a.name.cmp(&b.name));
            let pr = pods::pod_ref(sb);
            let pod_key = pods::pod_key(&pr.uid);
            live_keys.insert(pod_key.clone());
            let linux = sandbox_stats.get(&sandbox_id).and_then(|s| s.linux.as_ref());
            let cgroup = match (&self.cfg.cgroups, linux.and_then(|l| l.cpu.as_ref())) {
                (Some(reader), None) => reader.pod(&pr.uid, now),
                _ => None,
            };
            let (sum_cpu, sum_mem) = pods::sum_containers(&containers, now);
            let cpu = match (
                linux.and_then(|l| l.cpu.as_ref()),
                cgroup.as_ref().and_then(|c| c.cpu_ns),
            ) {
                (Some(cpu), _) => {
                    let rate = pods::cached_rate(&self.cpu, &pod_key, cpu, update);
                    pods::container_cpu(Some(cpu), rate, now)
                }
                (None, Some(ns)) => pods::cpu_from_counter(&self.cpu, &pod_key, ns, now, update),
                (None, None) => sum_cpu,
            };
            let memory = match (
                linux.and_then(|l| l.memory.as_ref()),
                cgroup.as_ref().and_then(|c| c.memory.clone()),
            ) {
                (Some(m), _) => pods::container_memory(Some(m), now),
                (None, Some(m)) => m,
                (None, None) => sum_mem,
            };
            let mut ps = PodStats {
                pod_ref: pr,
                start_time: pods::time_from_ns(sb.created_at),
                cpu: Some(cpu),
                memory: Some(memory),
                ..Default::default()
            };
            if full {
                ps.network = self.pod_network(&sandbox_id, linux, now).await;
                ps.ephemeral_storage = Some(pods::ephemeral_storage(&containers, now));
                ps.volume = pods::volume_stats(
                    &self.cfg.root_dir.join("pods").join(&ps.pod_ref.uid).join("volumes"),
                    now,
                );
                let procs = linux
                    .and_then(|l| l.process.as_ref())
                    .and_then(|p| p.process_count.as_ref())
                    .map(|v| v.value)
                    .or_else(|| cgroup.as_ref().and_then(|c| c.pids));
                ps.process_stats = procs.map(|n| types::ProcessStats { process_count: Some(n) });
            }
            ps.containers = Some(containers);
            out.push(ps);
        }
        out.sort_by(|a, b| a.pod_ref.cmp(&b.pod_ref));
        Ok(out)
    }

    /// A container's `rootfs`: the writable layer's usage on its filesystem's capacity.
    fn rootfs(
        &self,
        layer: Option<&cri::FilesystemUsage>,
        fs_cache: &mut HashMap<String, Option<FsStats>>,
        now: jiff::Timestamp,
    ) -> FsStats {
        let Some(layer) = layer else {
            return FsStats {
                time: Some(now),
                ..Default::default()
            };
        };
        let mut fs = layer
            .fs_id
            .as_ref()
            .and_then(|id| {
                fs_cache
                    .entry(id.mountpoint.clone())
                    .or_insert_with(|| node::fs_stats(std::path::Path::new(&id.mountpoint), now).ok())
                    .clone()
            })
            .map(|f| FsStats {
                used_bytes: None,
                inodes_used: None,
                ..f
            })
            .unwrap_or_default();
        fs.time = pods::time_from_ns(layer.timestamp).or(Some(now));
        fs.used_bytes = layer.used_bytes.as_ref().map(|v| v.value);
        fs.inodes_used = layer.inodes_used.as_ref().map(|v| v.value);
        fs
    }

    /// Pod network: the runtime's figures, else the sandbox's netns (`/proc/<pid>/net/dev`,
    /// pid from the verbose sandbox status) on runtimes with real processes.
    async fn pod_network(
        &self,
        sandbox_id: &str,
        linux: Option<&cri::LinuxPodSandboxStats>,
        now: jiff::Timestamp,
    ) -> Option<types::NetworkStats> {
        if let Some(n) = linux.and_then(|l| l.network.as_ref()) {
            let conv = |i: &cri::NetworkInterfaceUsage| types::InterfaceStats {
                name: i.name.clone(),
                rx_bytes: i.rx_bytes.as_ref().map(|v| v.value),
                rx_errors: i.rx_errors.as_ref().map(|v| v.value),
                tx_bytes: i.tx_bytes.as_ref().map(|v| v.value),
                tx_errors: i.tx_errors.as_ref().map(|v| v.value),
            };
            let mut ifs: Vec<types::InterfaceStats> = n.interfaces.iter().map(conv).collect();
            if let Some(d) = &n.default_interface {
                if !ifs.iter().any(|i| i.name == d.name) {
                    ifs.insert(0, conv(d));
                }
            }
            let mut net = node::network_stats(ifs, pods::time_from_ns(n.timestamp).unwrap_or(now));
            if let Some(d) = &n.default_interface {
                net.default = conv(d);
            }
            return Some(net);
        }
        // Only runtimes with real processes have a netns to read (the sim has no cgroups either).
        self.cfg.cgroups.as_ref()?;
        let resp = self
            .runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                verbose: true,
            })
            .await
            .ok()?;
        let pid = pods::sandbox_pid(&resp.info)?;
        let text = std::fs::read_to_string(self.cfg.host.proc_dir.join(pid.to_string()).join("net/dev")).ok()?;
        Some(node::network_stats(node::parse_net_dev(&text), now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::sim::{SimConfig, SimRuntime};
    use crate::clock::Clock;
    use crate::genericruntime::RuntimeService;

    const IMAGE: &str = "busybox:1.36";

    async fn provider() -> (Arc<SimRuntime>, StatsProvider, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let sim = SimRuntime::new(
            SimConfig {
                images: vec![IMAGE.into()],
                ..Default::default()
            },
            Clock::real(),
            dir.path().join("sim"),
        )
        .unwrap();
        let p = StatsProvider::new(
            sim.clone(),
            ProviderConfig {
                node_name: "node-a".into(),
                root_dir: dir.path().join("root"),
                pod_logs_dir: dir.path().join("pods"),
                cgroups: None,
                host: HostPaths::default(),
            },
        );
        (sim, p, dir)
    }

    /// A pod with the named containers, each `(name, millicores, memory)`; returns the sandbox ID.
    async fn pod(sim: &SimRuntime, dir: &std::path::Path, name: &str, containers: &[(&str, &str, &str)]) -> String {
        let uid = format!("uid-{name}");
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: "default".into(),
                attempt: 0,
            }),
            log_directory: dir
                .join(format!("pods/default_{name}_{uid}"))
                .to_string_lossy()
                .into_owned(),
            ..Default::default()
        };
        let sb = sim
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .pod_sandbox_id;
        for (c, cpu, mem) in containers {
            let id = sim
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: sb.clone(),
                    config: Some(cri::ContainerConfig {
                        metadata: Some(cri::ContainerMetadata {
                            name: c.to_string(),
                            attempt: 0,
                        }),
                        image: Some(cri::ImageSpec {
                            image: IMAGE.into(),
                            ..Default::default()
                        }),
                        command: vec!["sh".into(), "-c".into(), "echo hello; sleep infinity".into()],
                        log_path: format!("{c}/0.log"),
                        envs: vec![
                            cri::KeyValue {
                                key: "SIM_CPU_MILLICORES".into(),
                                value: cpu.to_string(),
                            },
                            cri::KeyValue {
                                key: "SIM_MEMORY".into(),
                                value: mem.to_string(),
                            },
                        ],
                        ..Default::default()
                    }),
                    sandbox_config: Some(config.clone()),
                })
                .await
                .unwrap()
                .container_id;
            sim.start_container(cri::StartContainerRequest { container_id: id })
                .await
                .unwrap();
        }
        sb
    }

    #[tokio::test]
    async fn no_pods_is_null_and_the_node_is_filled_in() {
        let (_sim, p, _dir) = provider().await;
        let s = p.summary(false).await.unwrap();
        assert!(s.pods.is_none());
        let json = serde_json::to_value(&s).unwrap();
        assert!(json["pods"].is_null());
        assert_eq!(json["node"]["nodeName"], "node-a");
        let n = &s.node;
        assert!(n.start_time.is_some(), "boot time");
        assert!(n.cpu.as_ref().unwrap().usage_core_nano_seconds.unwrap() > 0);
        assert!(n.memory.as_ref().unwrap().working_set_bytes.unwrap() > 0);
        assert!(n.fs.as_ref().unwrap().capacity_bytes.unwrap() > 0);
        let image_fs = n.runtime.as_ref().unwrap().image_fs.as_ref().unwrap();
        assert_eq!(image_fs.inodes_used, Some(1), "one configured image");
        assert!(image_fs.capacity_bytes.unwrap() > 0);
        assert!(n.rlimit.as_ref().unwrap().maxpid.unwrap() > 0);
        assert!(n.system_containers.is_none(), "no cgroups on the sim");
        // The second full summary has a CPU rate for the node.
        let s = p.summary(false).await.unwrap();
        assert!(s.node.cpu.unwrap().usage_nano_cores.is_some());
    }

    #[tokio::test]
    async fn pods_from_the_sim_have_the_predicted_figures() {
        let (sim, p, dir) = provider().await;
        pod(
            &sim,
            dir.path(),
            "web",
            &[("nginx", "250", "64Mi"), ("side", "10", "1Mi")],
        )
        .await;
        let sb_b = pod(&sim, dir.path(), "batch", &[("work", "1000", "128Mi")]).await;
        // Wait for the log line so the log size is known.
        let log = dir.path().join("pods/default_web_uid-web/nginx/0.log");
        for _ in 0..200 {
            if std::fs::metadata(&log).map(|m| m.len() > 0).unwrap_or(false) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let s = p.summary(false).await.unwrap();
        let pods = s.pods.unwrap();
        let names: Vec<&str> = pods.iter().map(|p| p.pod_ref.name.as_str()).collect();
        assert_eq!(names, ["batch", "web"], "sorted by namespace/name");
        let web = &pods[1];
        assert_eq!(web.pod_ref.uid, "uid-web");
        assert!(web.start_time.is_some());
        let cs = web.containers.as_ref().unwrap();
        assert_eq!(
            cs.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["nginx", "side"]
        );
        let nginx = &cs[0];
        assert_eq!(nginx.cpu.as_ref().unwrap().usage_nano_cores, Some(250_000_000));
        assert_eq!(nginx.memory.as_ref().unwrap().working_set_bytes, Some(64 << 20));
        let logs = nginx.logs.as_ref().unwrap();
        assert_eq!(logs.used_bytes, Some(std::fs::metadata(&log).unwrap().len()));
        assert!(logs.used_bytes.unwrap() > 0);
        assert!(logs.capacity_bytes.is_some());
        assert_eq!(nginx.rootfs.as_ref().unwrap().used_bytes, Some(0));
        // Pod figures come from ListPodSandboxStats: the sums of the containers.
        assert_eq!(web.cpu.as_ref().unwrap().usage_nano_cores, Some(260_000_000));
        assert_eq!(web.memory.as_ref().unwrap().working_set_bytes, Some(65 << 20));
        assert_eq!(web.process_stats.as_ref().unwrap().process_count, Some(3));
        assert_eq!(web.network.as_ref().unwrap().default.name, "eth0");
        let eph = web.ephemeral_storage.as_ref().unwrap();
        assert!(eph.used_bytes.unwrap() >= logs.used_bytes.unwrap());

        // CPU/memory only: the reduced shape.
        let only = p.summary(true).await.unwrap();
        let json = serde_json::to_value(&only).unwrap();
        let node = json["node"].as_object().unwrap();
        let mut keys: Vec<&str> = node.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["cpu", "memory", "nodeName", "startTime"]);
        let pod0 = json["pods"][0].as_object().unwrap();
        let mut keys: Vec<&str> = pod0.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["containers", "cpu", "memory", "podRef", "startTime"]);
        let c0 = json["pods"][0]["containers"][0].as_object().unwrap();
        let mut keys: Vec<&str> = c0.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["cpu", "memory", "name", "startTime"]);

        // A pod without running containers drops out.
        sim.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sb_b })
            .await
            .unwrap();
        let pods = p.summary(false).await.unwrap().pods.unwrap();
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].pod_ref.name, "web");
    }

    #[tokio::test]
    async fn a_runtime_error_is_reported() {
        let (sim, p, _dir) = provider().await;
        sim.set_config(SimConfig {
            unavailable: true,
            ..Default::default()
        });
        let e = p.summary(false).await.unwrap_err();
        assert!(e.to_string().contains("ListPodSandbox"), "{e}");
    }
}
