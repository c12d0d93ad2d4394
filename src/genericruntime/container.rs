//! `startContainer` and `generateContainerConfig` (§1.8, §1.9): image, restart count, config
//! (env, mounts, `$(VAR)` expansion, termination-log file, log path, labels, resources, security
//! context), CreateContainer, StartContainer, events, and the postStart hook seam.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::{Container, Pod, Secret};

use super::actions::KillReason;
use super::expand::{env_mapping, expand};
use super::labels::{new_container_annotations, new_container_labels, Labels, DEFAULT_TERMINATION_MESSAGE_PATH};
use super::manager::RuntimeManager;
use super::sandbox::create_dir_0755;
use super::seam::cri;
use super::types::{EventType, PodStatus, RunContainerOptions, SyncErrorKind};
use super::util::{container_field_path, pod_name, pod_namespace, pod_uid};
use crate::podspec::resources::{container_request_milli, milli_of, qos_class};

/// Errors preparing a container's files (become CreateContainerConfigError).
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("failed to create container log directory {path}: {source}")]
    CreateLogDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to create termination log file {path}: {source}")]
    CreateTerminationLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

const MIN_SHARES: i64 = 2;
const MAX_SHARES: i64 = 262_144;
const QUOTA_PERIOD: i64 = 100_000;
const MIN_QUOTA: i64 = 1000;
const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;

/// The runtime's default masked and read-only /proc paths (unless privileged).
const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];
const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// `calcRestartCountByLogDir`: max over `N.log[.suffix]` files of N+1, or 0.
pub fn restart_count_from_log_dir(dir: &Path) -> i32 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut count = 0;
    for e in entries.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(true) {
            continue;
        }
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let digits: String = name.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() || !name[digits.len()..].starts_with(".log") {
            continue;
        }
        if let Ok(n) = digits.parse::<i32>() {
            count = count.max(n.saturating_add(1));
        }
    }
    count
}

/// `verifyRunAsNonRoot`: with an effective `runAsNonRoot: true`, the container must not run as
/// root — by its `runAsUser`, else by the image's user (uid, or a name that cannot be verified).
pub fn verify_run_as_non_root(
    pod: &Pod,
    container: &Container,
    image_uid: Option<i64>,
    image_user: &str,
) -> Result<(), String> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = container.security_context.as_ref();
    let non_root = csc
        .and_then(|c| c.run_as_non_root)
        .or(psc.and_then(|p| p.run_as_non_root));
    if non_root != Some(true) {
        return Ok(());
    }
    let pod_s = super::util::format_pod(pod);
    let name = &container.name;
    if let Some(u) = csc.and_then(|c| c.run_as_user).or(psc.and_then(|p| p.run_as_user)) {
        if u == 0 {
            return Err(format!(
                "container's runAsUser breaks non-root policy (pod: {pod_s:?}, container: {name})"
            ));
        }
        return Ok(());
    }
    match image_uid {
        Some(0) => Err(format!("container has runAsNonRoot and image will run as root (pod: {pod_s:?}, container: {name})")),
        None if !image_user.is_empty() => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({image_user}), cannot verify user is non-root (pod: {pod_s:?}, container: {name})"
        )),
        _ => Ok(()),
    }
}

/// ext4's file name limit; the legacy symlink name is cut to fit it with its `.log` suffix.
const MAX_FILE_NAME_LEN: usize = 255;

/// `/var/log/containers/<pod>_<ns>_<container>-<id>.log` (the name cut to 251 characters).
pub fn legacy_log_symlink(dir: &Path, pod_name: &str, namespace: &str, container: &str, id: &str) -> PathBuf {
    let mut name = format!("{pod_name}_{namespace}_{container}-{id}");
    let max = MAX_FILE_NAME_LEN - ".log".len();
    if name.len() > max {
        let mut cut = max;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    dir.join(format!("{name}.log"))
}

/// Memory capacity of the node (MemTotal), for the Burstable OOM score.
fn node_memory_bytes() -> Option<i128> {
    static CAP: OnceLock<Option<i128>> = OnceLock::new();
    *CAP.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kb: i128 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    })
}

/// `GetContainerOOMScoreAdjust`.
pub fn oom_score_adj(pod: &Pod, container: &Container, memory_capacity: Option<i128>) -> i64 {
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.priority_class_name.as_deref() == Some("system-node-critical") {
        return GUARANTEED_OOM_SCORE_ADJ;
    }
    match qos_class(&spec) {
        "Guaranteed" => GUARANTEED_OOM_SCORE_ADJ,
        "BestEffort" => BEST_EFFORT_OOM_SCORE_ADJ,
        _ => {
            let Some(cap) = memory_capacity.filter(|c| *c > 0) else {
                return BEST_EFFORT_OOM_SCORE_ADJ - 1;
            };
            let req = container_request_milli(container, "memory") / 1000;
            let adj = (1000 - (1000 * req) / cap) as i64;
            if adj < 1000 + GUARANTEED_OOM_SCORE_ADJ {
                1000 + GUARANTEED_OOM_SCORE_ADJ
            } else if adj == BEST_EFFORT_OOM_SCORE_ADJ {
                adj - 1
            } else {
                adj
            }
        }
    }
}

/// Linux resources (§1.9): cpu shares/quota/period, memory limit, OOM score.
pub fn linux_resources(
    pod: &Pod,
    container: &Container,
    memory_capacity: Option<i128>,
) -> cri::LinuxContainerResources {
    let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
    let cpu_request = container_request_milli(container, "cpu") as i64;
    let cpu_limit = milli_of(limits, "cpu") as i64;
    let shares = if cpu_request == 0 {
        MIN_SHARES
    } else {
        (cpu_request * 1024 / 1000).clamp(MIN_SHARES, MAX_SHARES)
    };
    let quota = if cpu_limit == 0 {
        0
    } else {
        (cpu_limit * QUOTA_PERIOD / 1000).max(MIN_QUOTA)
    };
    cri::LinuxContainerResources {
        cpu_period: QUOTA_PERIOD,
        cpu_quota: quota,
        cpu_shares: shares,
        memory_limit_in_bytes: (milli_of(limits, "memory") / 1000) as i64,
        oom_score_adj: oom_score_adj(pod, container, memory_capacity),
        ..Default::default()
    }
}

/// The effective security context (container over pod) in CRI form; `seccomp_default` is the
/// kubelet's `seccompDefault` (RuntimeDefault for a container that names no profile).
pub fn linux_security_context(
    pod: &Pod,
    container: &Container,
    seccomp_default: bool,
) -> cri::LinuxContainerSecurityContext {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = container.security_context.as_ref();
    let privileged = csc.and_then(|c| c.privileged).unwrap_or(false);
    let run_as_user = csc.and_then(|c| c.run_as_user).or(psc.and_then(|p| p.run_as_user));
    let run_as_group = csc.and_then(|c| c.run_as_group).or(psc.and_then(|p| p.run_as_group));
    let selinux = csc
        .and_then(|c| c.se_linux_options.as_ref())
        .or(psc.and_then(|p| p.se_linux_options.as_ref()));
    let seccomp = csc
        .and_then(|c| c.seccomp_profile.as_ref())
        .or(psc.and_then(|p| p.seccomp_profile.as_ref()));
    let (profile_type, localhost_ref) = match seccomp.map(|s| (s.type_.as_str(), s.localhost_profile.clone())) {
        Some(("RuntimeDefault", _)) => (cri::security_profile::ProfileType::RuntimeDefault, String::new()),
        Some(("Localhost", p)) => (cri::security_profile::ProfileType::Localhost, p.unwrap_or_default()),
        None if seccomp_default => (cri::security_profile::ProfileType::RuntimeDefault, String::new()),
        _ => (cri::security_profile::ProfileType::Unconfined, String::new()),
    };
    let mut groups: Vec<i64> = Vec::new();
    if let Some(g) = psc.and_then(|p| p.fs_group) {
        groups.push(g);
    }
    groups.extend(psc.and_then(|p| p.supplemental_groups.clone()).unwrap_or_default());
    let unmasked = csc.and_then(|c| c.proc_mount.as_deref()) == Some("Unmasked");
    let (masked, readonly) = if privileged || unmasked {
        (vec![], vec![])
    } else {
        (
            DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect(),
            DEFAULT_READONLY_PATHS.iter().map(|s| s.to_string()).collect(),
        )
    };
    cri::LinuxContainerSecurityContext {
        capabilities: csc.and_then(|c| c.capabilities.as_ref()).map(|caps| cri::Capability {
            add_capabilities: caps.add.clone().unwrap_or_default(),
            drop_capabilities: caps.drop.clone().unwrap_or_default(),
            add_ambient_capabilities: vec![],
        }),
        privileged,
        namespace_options: Some(cri::NamespaceOption {
            network: super::actions::network_namespace_for_pod(pod),
            ipc: if pod.spec.as_ref().and_then(|s| s.host_ipc).unwrap_or(false) {
                cri::NamespaceMode::Node as i32
            } else {
                cri::NamespaceMode::Pod as i32
            },
            pid: if pod.spec.as_ref().and_then(|s| s.host_pid).unwrap_or(false) {
                cri::NamespaceMode::Node as i32
            } else if pod
                .spec
                .as_ref()
                .and_then(|s| s.share_process_namespace)
                .unwrap_or(false)
            {
                cri::NamespaceMode::Pod as i32
            } else {
                cri::NamespaceMode::Container as i32
            },
            ..Default::default()
        }),
        selinux_options: selinux.map(|o| cri::SeLinuxOption {
            user: o.user.clone().unwrap_or_default(),
            role: o.role.clone().unwrap_or_default(),
            r#type: o.type_.clone().unwrap_or_default(),
            level: o.level.clone().unwrap_or_default(),
        }),
        run_as_user: run_as_user.map(|v| cri::Int64Value { value: v }),
        run_as_group: run_as_group.map(|v| cri::Int64Value { value: v }),
        readonly_rootfs: csc.and_then(|c| c.read_only_root_filesystem).unwrap_or(false),
        supplemental_groups: groups,
        no_new_privs: csc.and_then(|c| c.allow_privilege_escalation) == Some(false),
        masked_paths: masked,
        readonly_paths: readonly,
        seccomp: Some(cri::SecurityProfile {
            profile_type: profile_type as i32,
            localhost_ref,
        }),
        ..Default::default()
    }
}

/// A start step that failed: reason and message.
pub type StartError = (SyncErrorKind, String);

impl RuntimeManager {
    /// `<root_dir>/pods/<uid>/containers/<name>`.
    pub fn pod_container_dir(&self, uid: &str, name: &str) -> PathBuf {
        self.cfg.root_dir.join("pods").join(uid).join("containers").join(name)
    }

    /// The legacy container log directory (`/var/log/containers`, next to `/var/log/pods`).
    pub fn legacy_log_dir(&self) -> PathBuf {
        match self.cfg.pod_logs_dir.parent() {
            Some(p) => p.join("containers"),
            None => PathBuf::from("/var/log/containers"),
        }
    }

    /// Links the legacy log name to the container log, if the log file exists.
    fn create_legacy_log_symlink(&self, pod: &Pod, container: &Container, id: &str, log: &Path) {
        if !log.exists() {
            return;
        }
        let dir = self.legacy_log_dir();
        let link = legacy_log_symlink(&dir, pod_name(pod), pod_namespace(pod), &container.name, id);
        let made = create_dir_0755(&dir).and_then(|_| std::os::unix::fs::symlink(log, &link));
        if let Err(e) = made {
            tracing::warn!(link = %link.display(), error = %e, "failed to create legacy container log symlink");
        }
    }

    /// Creates the per-instance termination-log file (0666) the container's
    /// terminationMessagePath is bind-mounted from.
    fn make_termination_log(&self, pod: &Pod, container: &Container) -> Result<PathBuf, ContainerError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let dir = self.pod_container_dir(pod_uid(pod), &container.name);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&dir)
            .map_err(|source| ContainerError::CreateTerminationLog {
                path: dir.clone(),
                source,
            })?;
        let path = dir.join(format!("{:08x}", rand::random::<u32>()));
        let err = |source| ContainerError::CreateTerminationLog {
            path: path.clone(),
            source,
        };
        std::fs::File::create(&path).map_err(err)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
        Ok(path)
    }

    /// `generateContainerConfig`.
    pub fn generate_container_config(
        &self,
        pod: &Pod,
        container: &Container,
        restart_count: i32,
        image_ref: &str,
        opts: RunContainerOptions,
    ) -> Result<cri::ContainerConfig, ContainerError> {
        let log_dir = self
            .pod_log_dir(pod_namespace(pod), pod_name(pod), pod_uid(pod))
            .join(&container.name);
        create_dir_0755(&log_dir).map_err(|source| ContainerError::CreateLogDir {
            path: log_dir.clone(),
            source,
        })?;
        let mapping = env_mapping(&opts.envs);
        let command = container
            .command
            .iter()
            .flatten()
            .map(|c| expand(c, &mapping))
            .collect();
        let args = container.args.iter().flatten().map(|c| expand(c, &mapping)).collect();
        let mut mounts = opts.mounts.clone();
        let tmp = container
            .termination_message_path
            .clone()
            .unwrap_or_else(|| DEFAULT_TERMINATION_MESSAGE_PATH.into());
        if !tmp.is_empty() && !mounts.iter().any(|m| m.container_path == tmp) {
            let host = self.make_termination_log(pod, container)?;
            mounts.push(cri::Mount {
                container_path: tmp,
                host_path: host.display().to_string(),
                ..Default::default()
            });
        }
        Ok(cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: container.name.clone(),
                attempt: u32::try_from(restart_count).unwrap_or(0),
            }),
            image: Some(cri::ImageSpec {
                image: image_ref.to_string(),
                user_specified_image: container.image.clone().unwrap_or_default(),
                ..Default::default()
            }),
            command,
            args,
            working_dir: container.working_dir.clone().unwrap_or_default(),
            envs: opts
                .envs
                .iter()
                .map(|(k, v)| cri::KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            mounts,
            labels: new_container_labels(container, pod),
            annotations: new_container_annotations(container, pod, restart_count, &Labels::new()),
            log_path: format!("{}/{}.log", container.name, restart_count),
            stdin: container.stdin.unwrap_or(false),
            stdin_once: container.stdin_once.unwrap_or(false),
            tty: container.tty.unwrap_or(false),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(linux_resources(pod, container, node_memory_bytes())),
                security_context: Some(linux_security_context(pod, container, self.seccomp_default)),
            }),
            ..Default::default()
        })
    }

    fn container_event(&self, pod: &Pod, container: &Container, kind: EventType, reason: &str, msg: String) {
        self.events
            .pod_event(pod, Some(container_field_path(pod, &container.name)), kind, reason, msg);
    }

    /// `getImageUser`: the image's uid, else its user name; neither means root (uid 0).
    async fn image_user(&self, image_ref: &str) -> (Option<i64>, String) {
        let status = self
            .runtime
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: image_ref.to_string(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await;
        match status.map(|r| r.image) {
            Ok(Some(img)) if img.uid.is_some() => (img.uid.map(|u| u.value), String::new()),
            Ok(Some(img)) if !img.username.is_empty() => (None, img.username),
            Ok(_) => (Some(0), String::new()),
            Err(e) => {
                // The kubelet fails config generation here; keel treats an unreadable image user
                // as root, which only matters (and then fails safe) under runAsNonRoot.
                tracing::warn!(image = image_ref, error = %e, "cannot read the image user, assuming root");
                (Some(0), String::new())
            }
        }
    }

    /// `startContainer` (§1.8).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn start_container(
        &self,
        sandbox_id: &str,
        sandbox_config: &cri::PodSandboxConfig,
        container: &Container,
        pod: &Pod,
        status: &PodStatus,
        pull_secrets: &[Secret],
        pod_ips: &[String],
    ) -> Result<(), StartError> {
        let image_ref = match self
            .ensure_image_exists(pod, container, pull_secrets, Some(sandbox_config))
            .await
        {
            Ok(r) => r,
            Err((kind, msg)) => {
                self.container_event(
                    pod,
                    container,
                    EventType::Warning,
                    "Failed",
                    format!("Error: {}", kind.as_str()),
                );
                return Err((kind, msg));
            }
        };
        let restart_count = match status.find_container_status(&container.name) {
            Some(s) => s.restart_count + 1,
            None => restart_count_from_log_dir(
                &self
                    .pod_log_dir(pod_namespace(pod), pod_name(pod), pod_uid(pod))
                    .join(&container.name),
            ),
        };
        let config_failed = |msg: String| {
            self.container_event(pod, container, EventType::Warning, "Failed", format!("Error: {msg}"));
            Err((SyncErrorKind::CreateContainerConfigError, msg))
        };
        let (uid, user) = self.image_user(&image_ref).await;
        if let Err(msg) = verify_run_as_non_root(pod, container, uid, &user) {
            return config_failed(msg);
        }
        let opts = match self.options.run_container_options(pod, container, pod_ips).await {
            Ok(o) => o,
            Err(e) => return config_failed(e.0),
        };
        let config = match self.generate_container_config(pod, container, restart_count, &image_ref, opts) {
            Ok(c) => c,
            Err(e) => return config_failed(e.to_string()),
        };
        let log_file = Path::new(&sandbox_config.log_directory).join(&config.log_path);
        let id = match self
            .runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                config: Some(config),
                sandbox_config: Some(sandbox_config.clone()),
            })
            .await
        {
            Ok(r) => r.container_id,
            Err(e) => {
                self.container_event(
                    pod,
                    container,
                    EventType::Warning,
                    "Failed",
                    format!("Error: {}", e.message),
                );
                return Err((SyncErrorKind::CreateContainerError, e.message));
            }
        };
        self.container_event(
            pod,
            container,
            EventType::Normal,
            "Created",
            format!("Created container {}", container.name),
        );
        if let Err(e) = self
            .runtime
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
        {
            // Events name the container, never its ID.
            let msg = if id.is_empty() {
                e.message
            } else {
                e.message.replace(&id, &container.name)
            };
            self.container_event(pod, container, EventType::Warning, "Failed", format!("Error: {msg}"));
            return Err((SyncErrorKind::RunContainerError, msg));
        }
        self.container_event(
            pod,
            container,
            EventType::Normal,
            "Started",
            format!("Started container {}", container.name),
        );
        self.create_legacy_log_symlink(pod, container, &id, &log_file);
        // postStart hook (§2.9) through the hook seam.
        if let (Some(runner), Some(handler)) = (
            self.hooks.as_ref(),
            container.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()),
        ) {
            if let Err(msg) = runner.run(pod, container, &id, handler).await {
                self.container_event(pod, container, EventType::Warning, "FailedPostStartHook", msg.clone());
                if let Err((_, kill_err)) = self
                    .kill_container(
                        Some(pod),
                        &id,
                        &container.name,
                        "FailedPostStartHook",
                        KillReason::FailedPostStartHook,
                        None,
                    )
                    .await
                {
                    tracing::warn!(container = %container.name, error = %kill_err, "failed to kill container after postStart hook failure");
                }
                return Err((SyncErrorKind::PostStartHookError, msg));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // kuberuntime_container_test.go TestRestartCountByLogDir.
    #[test]
    fn restart_count_by_log_dir() {
        let cases: &[(&[&str], i32)] = &[
            (&["0.log.rotated-log"], 1),
            (&["0.log"], 1),
            (&["0.log", "1.log", "2.log"], 3),
            (&["0.log.rotated", "1.log", "2.log"], 3),
            (&["5.log.rotated", "6.log.rotated"], 7),
            (&["5.log.rotated", "6.log", "7.log"], 8),
            (&[], 0),
            (&["abc.log", "log"], 0),
        ];
        for (files, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            for f in *files {
                std::fs::write(dir.path().join(f), "").unwrap();
            }
            assert_eq!(restart_count_from_log_dir(dir.path()), *want, "{files:?}");
        }
        assert_eq!(restart_count_from_log_dir(Path::new("/nonexistent/keel/test")), 0);
    }

    fn pod_with(resources: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]}
        }))
        .unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, c)
    }

    #[test]
    fn resources_follow_the_kubelet_rules() {
        let (p, c) = pod_with(serde_json::json!({"requests": {"cpu": "250m", "memory": "64Mi"},
                                                  "limits": {"cpu": "500m", "memory": "128Mi"}}));
        let r = linux_resources(&p, &c, Some(1 << 30));
        assert_eq!(r.cpu_shares, 256);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.memory_limit_in_bytes, 128 * 1024 * 1024);
        // Burstable: 1000 - 1000*64Mi/1Gi = 938.
        assert_eq!(r.oom_score_adj, 938);

        let (p, c) = pod_with(serde_json::json!({}));
        let r = linux_resources(&p, &c, Some(1 << 30));
        assert_eq!((r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes), (2, 0, 0));
        assert_eq!(r.oom_score_adj, 1000);

        let (p, c) = pod_with(serde_json::json!({"requests": {"cpu": "1m", "memory": "1Gi"},
                                                  "limits": {"cpu": "1m", "memory": "1Gi"}}));
        let r = linux_resources(&p, &c, Some(1 << 30));
        // Guaranteed; a tiny quota is raised to the minimum.
        assert_eq!((r.cpu_shares, r.cpu_quota), (2, 1000));
        assert_eq!(r.oom_score_adj, -997);

        let (p, c) = pod_with(serde_json::json!({"requests": {"memory": "1Gi"}}));
        assert_eq!(oom_score_adj(&p, &c, Some(1 << 30)), 3);
        let (p, c) = pod_with(serde_json::json!({"requests": {"cpu": "100m"}}));
        assert_eq!(oom_score_adj(&p, &c, Some(1 << 30)), 999);
    }

    #[test]
    fn run_as_non_root_checks() {
        let mk = |pod_sc: serde_json::Value, c_sc: serde_json::Value| -> (Pod, Container) {
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
                "spec": {"securityContext": pod_sc, "containers": [{"name": "c", "securityContext": c_sc}]}
            }))
            .unwrap();
            let c = pod.spec.as_ref().unwrap().containers[0].clone();
            (pod, c)
        };
        let (p, c) = mk(serde_json::json!({}), serde_json::json!({}));
        assert!(verify_run_as_non_root(&p, &c, Some(0), "").is_ok());
        let (p, c) = mk(
            serde_json::json!({"runAsNonRoot": true}),
            serde_json::json!({"runAsUser": 0}),
        );
        assert_eq!(
            verify_run_as_non_root(&p, &c, Some(1000), "").unwrap_err(),
            "container's runAsUser breaks non-root policy (pod: \"p_ns(u)\", container: c)"
        );
        let (p, c) = mk(serde_json::json!({"runAsNonRoot": true}), serde_json::json!({}));
        assert_eq!(
            verify_run_as_non_root(&p, &c, Some(0), "").unwrap_err(),
            "container has runAsNonRoot and image will run as root (pod: \"p_ns(u)\", container: c)"
        );
        assert!(verify_run_as_non_root(&p, &c, None, "nobody")
            .unwrap_err()
            .starts_with("container has runAsNonRoot and image has non-numeric user (nobody)"));
        assert!(verify_run_as_non_root(&p, &c, Some(65534), "").is_ok());
        let (p, c) = mk(
            serde_json::json!({"runAsNonRoot": true}),
            serde_json::json!({"runAsNonRoot": false}),
        );
        assert!(verify_run_as_non_root(&p, &c, Some(0), "").is_ok());
    }

    #[test]
    fn security_context_merges_container_over_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [{"name": "c", "securityContext": {"runAsUser": 5,
                         "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                         "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}}]}
        }))
        .unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        let sc = linux_security_context(&pod, &c, false);
        assert_eq!(sc.run_as_user.unwrap().value, 5);
        assert_eq!(sc.run_as_group.unwrap().value, 3000);
        assert_eq!(sc.supplemental_groups, vec![2000]);
        assert!(sc.no_new_privs && sc.readonly_rootfs && !sc.privileged);
        assert_eq!(sc.capabilities.unwrap().add_capabilities, vec!["NET_ADMIN"]);
        assert_eq!(
            sc.seccomp.unwrap().profile_type,
            cri::security_profile::ProfileType::RuntimeDefault as i32
        );
        assert!(!sc.masked_paths.is_empty());
    }

    #[test]
    fn seccomp_default_applies_only_without_a_profile() {
        use cri::security_profile::ProfileType;
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "none"},
                {"name": "open", "securityContext": {"seccompProfile": {"type": "Unconfined"}}},
                {"name": "local", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "x.json"}}},
            ]}
        }))
        .unwrap();
        let cs = pod.spec.as_ref().unwrap().containers.clone();
        let kind = |c: &Container, on: bool| linux_security_context(&pod, c, on).seccomp.unwrap().profile_type;
        assert_eq!(kind(&cs[0], false), ProfileType::Unconfined as i32);
        assert_eq!(kind(&cs[0], true), ProfileType::RuntimeDefault as i32);
        assert_eq!(kind(&cs[1], true), ProfileType::Unconfined as i32);
        assert_eq!(kind(&cs[2], true), ProfileType::Localhost as i32);
    }
}
