//! `computePodActions` (§1.5) and the init-container decisions (§1.6): from the pod spec and what
//! the runtime reports, decide what SyncPod must kill, create and start. Pure logic.
//!
//! Pods with sidecars (init containers with `restartPolicy: Always`) take the Kubernetes 1.29+
//! path (`computeInitContainerActions`): several init containers may be started in one sync (a
//! sidecar counts as initialized once running, or once its startup probe succeeded), sidecars are
//! restarted whenever they exit, and main containers start only after all of them. Pods without
//! sidecars keep the §1.6 path (`findNextInitContainerToRun`), which gives the same decisions there.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::hash::hash_container;
use super::seam::cri;
use super::types::{ContainerState, ContainerStatus, PodStatus, ProbeFailures};
use super::util::{containers, host_network, init_containers, restart_policy};

/// Why a container is killed (the kubelet's `containerKillReason`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KillReason {
    #[default]
    None,
    StartupProbe,
    LivenessProbe,
    FailedPostStartHook,
    Unknown,
}

impl KillReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            KillReason::None => "",
            KillReason::StartupProbe => "StartupProbe",
            KillReason::LivenessProbe => "LivenessProbe",
            KillReason::FailedPostStartHook => "FailedPostStartHook",
            KillReason::Unknown => "Unknown",
        }
    }
}

/// One container SyncPod must kill.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerToKill {
    pub name: String,
    pub container: Container,
    pub message: String,
    pub reason: KillReason,
}

/// The plan of one SyncPod (`podActions`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodActions {
    /// Stop every container and sandbox of the pod.
    pub kill_pod: bool,
    /// Create a new sandbox (after the kill).
    pub create_sandbox: bool,
    /// The current sandbox (or the one being replaced).
    pub sandbox_id: String,
    /// Attempt number of the sandbox to create.
    pub attempt: u32,
    /// Indexes into `spec.initContainers` to start, in spec order (at most one without sidecars).
    pub init_containers_to_start: Vec<usize>,
    /// Indexes into `spec.containers`.
    pub containers_to_start: Vec<usize>,
    /// Container ID → what to kill.
    pub containers_to_kill: BTreeMap<String, ContainerToKill>,
    /// Indexes into `spec.ephemeralContainers`.
    pub ephemeral_containers_to_start: Vec<usize>,
}

fn should_restart_on_failure(pod: &Pod) -> bool {
    restart_policy(pod) != "Never"
}

fn sandbox_ready(s: &cri::PodSandboxStatus) -> bool {
    s.state == cri::PodSandboxState::SandboxReady as i32
}

/// The network namespace mode a pod wants.
pub fn network_namespace_for_pod(pod: &Pod) -> i32 {
    if host_network(pod) {
        cri::NamespaceMode::Node as i32
    } else {
        cri::NamespaceMode::Pod as i32
    }
}

/// `PodSandboxChanged`: (create a new sandbox?, its attempt, the sandbox ID to report).
pub fn pod_sandbox_changed(pod: &Pod, status: &PodStatus) -> (bool, u32, String) {
    let Some(newest) = status.sandbox_statuses.first() else {
        return (true, 0, String::new());
    };
    let attempt = newest.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
    let ready = status.sandbox_statuses.iter().filter(|s| sandbox_ready(s)).count();
    if ready > 1 || !sandbox_ready(newest) {
        return (true, attempt + 1, newest.id.clone());
    }
    let net_mode = newest
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .map(|o| o.network)
        .unwrap_or(cri::NamespaceMode::Pod as i32);
    if net_mode != network_namespace_for_pod(pod) {
        return (true, attempt + 1, String::new());
    }
    if !host_network(pod) && newest.network.as_ref().is_some_and(|n| n.ip.is_empty()) {
        return (true, attempt + 1, newest.id.clone());
    }
    (false, attempt, newest.id.clone())
}

/// `isInitContainerFailed`: OOMKilled, exited non-zero, or Unknown.
pub fn is_init_container_failed(s: &ContainerStatus) -> bool {
    s.reason == "OOMKilled"
        || (s.state == ContainerState::Exited && s.exit_code != 0)
        || s.state == ContainerState::Unknown
}

/// `findNextInitContainerToRun`: (last failed status, next init container index, done).
pub fn find_next_init_container_to_run<'a>(
    pod: &Pod,
    status: &'a PodStatus,
) -> (Option<&'a ContainerStatus>, Option<usize>, bool) {
    let inits = init_containers(pod);
    if inits.is_empty() {
        return (None, None, true);
    }
    // A running regular container means initialization finished at some point (its init
    // containers may have been garbage-collected since).
    if containers(pod).iter().any(|c| {
        status
            .find_container_status(&c.name)
            .is_some_and(|s| s.state == ContainerState::Running)
    }) {
        return (None, None, true);
    }
    for (i, c) in inits.iter().enumerate().rev() {
        if let Some(s) = status.find_container_status(&c.name) {
            if is_init_container_failed(s) {
                return (Some(s), Some(i), false);
            }
        }
    }
    for (i, c) in inits.iter().enumerate().rev() {
        let Some(s) = status.find_container_status(&c.name) else {
            continue;
        };
        match s.state {
            ContainerState::Running => return (None, None, false),
            ContainerState::Exited => {
                if i == inits.len() - 1 {
                    return (None, None, true);
                }
                return (None, Some(i + 1), false);
            }
            _ => {}
        }
    }
    (None, Some(0), false)
}

/// `ShouldContainerBeRestarted`.
pub fn should_container_be_restarted(container: &Container, pod: &Pod, status: &PodStatus) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(s) = status.find_container_status(&container.name) else {
        return true;
    };
    match s.state {
        ContainerState::Running => false,
        ContainerState::Unknown | ContainerState::Created => true,
        ContainerState::Exited => match restart_policy(pod) {
            "Never" => false,
            "OnFailure" => s.exit_code != 0,
            _ => true,
        },
    }
}

/// Probe results may be keyed by the bare runtime ID or by `<type>://<id>`.
fn probe_failed(failures: &BTreeMap<String, ()>, s: &ContainerStatus) -> bool {
    failures.contains_key(&s.id) || failures.contains_key(&s.container_id())
}

fn container_succeeded(c: &Container, status: &PodStatus) -> bool {
    status
        .find_container_status(&c.name)
        .is_some_and(|s| s.state == ContainerState::Exited && s.exit_code == 0)
}

/// `computePodActions` (§1.5).
pub fn compute_pod_actions(pod: &Pod, status: &PodStatus, probes: &ProbeFailures) -> PodActions {
    let (create_sandbox, attempt, sandbox_id) = pod_sandbox_changed(pod, status);
    let mut changes = PodActions {
        kill_pod: create_sandbox,
        create_sandbox,
        sandbox_id,
        attempt,
        ..Default::default()
    };

    if create_sandbox {
        if !should_restart_on_failure(pod) && attempt != 0 && !status.container_statuses.is_empty() {
            // The pod is done: do not create a sandbox only to tear it down again.
            changes.create_sandbox = false;
            return changes;
        }
        let on_failure = restart_policy(pod) == "OnFailure";
        let to_start: Vec<usize> = containers(pod)
            .iter()
            .enumerate()
            .filter(|(_, c)| !(on_failure && container_succeeded(c, status)))
            .map(|(i, _)| i)
            .collect();
        let initialized = || {
            if has_restartable_init_container(pod) {
                // Any regular container created at some point means initialization finished.
                containers(pod).iter().any(|c| {
                    status.find_container_status(&c.name).is_some_and(|s| {
                        matches!(
                            s.state,
                            ContainerState::Created | ContainerState::Running | ContainerState::Exited
                        )
                    })
                })
            } else {
                find_next_init_container_to_run(pod, status).2
            }
        };
        if to_start.is_empty() && initialized() {
            changes.create_sandbox = false;
            return changes;
        }
        if !init_containers(pod).is_empty() {
            // A new sandbox runs every init container again from the first.
            changes.init_containers_to_start = vec![0];
            return changes;
        }
        changes.containers_to_start = to_start;
        return changes;
    }

    // Ephemeral containers start even while initializing, and are never restarted.
    if let Some(eph) = pod.spec.as_ref().and_then(|s| s.ephemeral_containers.as_ref()) {
        for (i, c) in eph.iter().enumerate() {
            if status.find_container_status(&c.name).is_none() {
                changes.ephemeral_containers_to_start.push(i);
            }
        }
    }

    if has_restartable_init_container(pod) {
        let initialized = compute_init_container_actions(pod, status, probes, &mut changes);
        if changes.kill_pod || !initialized {
            // Initialization failed or is in progress: regular containers are not inspected.
            return changes;
        }
    } else if legacy_init_actions(pod, status, &mut changes) {
        return changes;
    }

    let mut keep_count = 0;
    for (idx, container) in containers(pod).iter().enumerate() {
        let cs = status.find_container_status(&container.name);
        if cs.is_none_or(|s| s.state != ContainerState::Running) {
            if should_container_be_restarted(container, pod, status) {
                changes.containers_to_start.push(idx);
                if let Some(s) = cs.filter(|s| s.state == ContainerState::Unknown) {
                    changes.containers_to_kill.insert(
                        s.id.clone(),
                        ContainerToKill {
                            name: s.name.clone(),
                            container: container.clone(),
                            message: "Container is in \"unknown\" state, try killing it before restart".into(),
                            reason: KillReason::Unknown,
                        },
                    );
                }
            }
            continue;
        }
        let Some(s) = cs else { continue };
        let mut restart = should_restart_on_failure(pod);
        let (mut message, reason) = if hash_container(container) != s.hash {
            // A changed definition restarts regardless of the restart policy.
            restart = true;
            (
                format!("Container {} definition changed", container.name),
                KillReason::None,
            )
        } else if probe_failed(&probes.liveness, s) {
            (
                format!("Container {} failed liveness probe", container.name),
                KillReason::LivenessProbe,
            )
        } else if probe_failed(&probes.startup, s) {
            (
                format!("Container {} failed startup probe", container.name),
                KillReason::StartupProbe,
            )
        } else {
            keep_count += 1;
            continue;
        };
        if restart {
            message.push_str(", will be restarted");
            changes.containers_to_start.push(idx);
        }
        changes.containers_to_kill.insert(
            s.id.clone(),
            ContainerToKill {
                name: s.name.clone(),
                container: container.clone(),
                message,
                reason,
            },
        );
    }

    if keep_count == 0 && changes.containers_to_start.is_empty() {
        changes.kill_pod = true;
        // Sidecars alone must not keep a finished pod alive.
        changes.init_containers_to_start.clear();
    }
    changes
}

/// Step C.2 for pods without sidecars (§1.6): true while initializing (regular containers are
/// then not inspected).
fn legacy_init_actions(pod: &Pod, status: &PodStatus, changes: &mut PodActions) -> bool {
    let (init_last, next, done) = find_next_init_container_to_run(pod, status);
    if done {
        return false;
    }
    if let Some(next) = next {
        let init_failed = init_last.is_some_and(is_init_container_failed);
        if init_failed && !should_restart_on_failure(pod) {
            changes.kill_pod = true;
        } else {
            if let Some(last) = init_last.filter(|s| s.state == ContainerState::Unknown) {
                let spec = &init_containers(pod)[next];
                changes.containers_to_kill.insert(
                    last.id.clone(),
                    ContainerToKill {
                        name: spec.name.clone(),
                        container: spec.clone(),
                        message: "Init container is in \"unknown\" state, try killing it before restart".into(),
                        reason: KillReason::Unknown,
                    },
                );
            }
            changes.init_containers_to_start = vec![next];
        }
    }
    true
}

/// A sidecar: an init container with `restartPolicy: Always` (`IsRestartableInitContainer`).
pub fn is_restartable_init_container(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Whether the pod has at least one sidecar (`HasRestartableInitContainer`).
pub fn has_restartable_init_container(pod: &Pod) -> bool {
    init_containers(pod).iter().any(is_restartable_init_container)
}

fn kill_info(c: &Container, message: String, reason: KillReason) -> ContainerToKill {
    ContainerToKill {
        name: c.name.clone(),
        container: c.clone(),
        message,
        reason,
    }
}

/// `computeInitContainerActions` (Kubernetes 1.29+, sidecar-aware): fills
/// `init_containers_to_start` (spec order), `containers_to_kill` and `kill_pod`; returns whether
/// the pod has initialized (regular containers may run).
pub fn compute_init_container_actions(
    pod: &Pod,
    status: &PodStatus,
    probes: &ProbeFailures,
    changes: &mut PodActions,
) -> bool {
    let inits = init_containers(pod);
    if inits.is_empty() {
        return true;
    }
    // A created or running regular container means initialization finished at some point
    // (exited ones may belong to a previous sandbox, so they do not count).
    let mut pod_has_initialized = containers(pod).iter().any(|c| {
        status
            .find_container_status(&c.name)
            .is_some_and(|s| matches!(s.state, ContainerState::Created | ContainerState::Running))
    });
    let mut previously_initialized = pod_has_initialized;
    let restart_on_failure = should_restart_on_failure(pod);
    let mut to_start: Vec<usize> = Vec::new();

    // From last to first: completed init containers may have been removed, so the last one
    // with a status tells how far initialization got.
    for (i, c) in inits.iter().enumerate().rev() {
        let sidecar = is_restartable_init_container(c);
        let Some(s) = status.find_container_status(&c.name) else {
            if previously_initialized && sidecar {
                to_start.push(i);
            }
            continue;
        };
        if previously_initialized && !sidecar {
            // After initialization only sidecars are kept running.
            continue;
        }
        match s.state {
            // Created but never started: the runtime likely failed to start it; start anew.
            ContainerState::Created => to_start.push(i),
            ContainerState::Running => 'running: {
                if !sidecar {
                    // A regular init container: wait for it to finish.
                    break 'running;
                }
                if c.startup_probe.is_some() {
                    if probe_failed(&probes.startup, s) {
                        changes.containers_to_kill.insert(
                            s.id.clone(),
                            kill_info(
                                c,
                                format!("Init container {} failed startup probe", c.name),
                                KillReason::StartupProbe,
                            ),
                        );
                        to_start.push(i);
                        break 'running;
                    }
                    if !probe_failed(&probes.startup_succeeded, s) {
                        // Not started yet as far as its startup probe knows: wait.
                        break 'running;
                    }
                }
                if i == inits.len() - 1 {
                    pod_has_initialized = true;
                } else if !previously_initialized {
                    // Initialized for the first time: start the next one.
                    to_start.push(i + 1);
                }
                if hash_container(c) != s.hash {
                    changes.containers_to_kill.insert(
                        s.id.clone(),
                        kill_info(
                            c,
                            format!("Init container {} definition changed", c.name),
                            KillReason::None,
                        ),
                    );
                    to_start.push(i);
                    break 'running;
                }
                // Liveness does not gate the next init container, but a failure restarts it.
                if c.liveness_probe.is_some() && probe_failed(&probes.liveness, s) {
                    changes.containers_to_kill.insert(
                        s.id.clone(),
                        kill_info(
                            c,
                            format!("Init container {} failed liveness probe", c.name),
                            KillReason::LivenessProbe,
                        ),
                    );
                    to_start.push(i);
                }
            }
            ContainerState::Exited => {
                if sidecar {
                    to_start.push(i);
                } else if is_init_container_failed(s) {
                    if !restart_on_failure {
                        changes.kill_pod = true;
                        changes.init_containers_to_start.clear();
                        return false;
                    }
                    to_start.push(i);
                } else if i == inits.len() - 1 {
                    pod_has_initialized = true;
                } else {
                    to_start.push(i + 1);
                }
            }
            ContainerState::Unknown => {
                if !sidecar && !restart_on_failure {
                    changes.kill_pod = true;
                    changes.init_containers_to_start.clear();
                    return false;
                }
                changes.containers_to_kill.insert(
                    s.id.clone(),
                    kill_info(
                        c,
                        "Init container is in \"unknown\" state, try killing it before restart".into(),
                        KillReason::Unknown,
                    ),
                );
                to_start.push(i);
            }
        }
        // Everything before this init container has been initialized.
        previously_initialized = true;
    }
    if !previously_initialized {
        // No init container has started yet: start the first.
        to_start.push(0);
    }
    to_start.reverse();
    changes.init_containers_to_start = to_start;
    pod_has_initialized
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jiff::Timestamp;

    pub(crate) fn cs(id: &str, name: &str, state: ContainerState, hash: u64) -> ContainerStatus {
        ContainerStatus {
            id: id.into(),
            runtime_type: "sim".into(),
            name: name.into(),
            state,
            created_at: Timestamp::UNIX_EPOCH,
            started_at: None,
            finished_at: None,
            exit_code: 0,
            image: "busybox".into(),
            image_ref: String::new(),
            hash,
            restart_count: 0,
            reason: String::new(),
            message: String::new(),
            sandbox_id: "sandboxID".into(),
        }
    }

    fn container(name: &str, image: &str) -> Container {
        Container {
            name: name.into(),
            image: Some(image.into()),
            ..Default::default()
        }
    }

    /// `makeBasePodAndStatus`: three running containers in a ready sandbox with an IP.
    pub(crate) fn base_pod_and_status() -> (Pod, PodStatus) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"uid": "12345678", "name": "foo", "namespace": "foo-ns"},
            "spec": {"containers": [
                {"name": "foo1", "image": "busybox"},
                {"name": "foo2", "image": "busybox"},
                {"name": "foo3", "image": "busybox"}]}
        }))
        .unwrap();
        let cs_list = containers(&pod)
            .iter()
            .enumerate()
            .map(|(i, c)| {
                cs(
                    &format!("id{}", i + 1),
                    &c.name,
                    ContainerState::Running,
                    hash_container(c),
                )
            })
            .collect();
        let status = PodStatus {
            uid: "12345678".into(),
            name: "foo".into(),
            namespace: "foo-ns".into(),
            ips: vec![],
            container_statuses: cs_list,
            sandbox_statuses: vec![cri::PodSandboxStatus {
                id: "sandboxID".into(),
                state: cri::PodSandboxState::SandboxReady as i32,
                metadata: Some(cri::PodSandboxMetadata {
                    name: "foo".into(),
                    namespace: "foo-ns".into(),
                    uid: "sandboxuid".into(),
                    attempt: 0,
                }),
                network: Some(cri::PodSandboxNetworkStatus {
                    ip: "10.0.0.1".into(),
                    additional_ips: vec![],
                }),
                ..Default::default()
            }],
        };
        (pod, status)
    }

    fn set_policy(pod: &mut Pod, p: &str) {
        pod.spec.as_mut().unwrap().restart_policy = Some(p.into());
    }

    fn not_ready(status: &mut PodStatus) {
        status.sandbox_statuses[0].state = cri::PodSandboxState::SandboxNotready as i32;
    }

    fn kill_map(pod: &Pod, status: &PodStatus, idx: &[usize], init: bool) -> BTreeMap<String, (String, Container)> {
        idx.iter()
            .map(|&i| {
                let c = if init {
                    &init_containers(pod)[i]
                } else {
                    &containers(pod)[i]
                };
                (status.container_statuses[i].id.clone(), (c.name.clone(), c.clone()))
            })
            .collect()
    }

    /// kill_pod, create_sandbox, sandbox_id, attempt, next init, to start, kills (id → name, spec).
    type Stripped = (
        bool,
        bool,
        String,
        u32,
        Option<usize>,
        Vec<usize>,
        BTreeMap<String, (String, Container)>,
    );

    /// The Go test clears message and reason before comparing; so do we.
    fn strip(a: &PodActions) -> Stripped {
        (
            a.kill_pod,
            a.create_sandbox,
            a.sandbox_id.clone(),
            a.attempt,
            a.init_containers_to_start.first().copied(),
            a.containers_to_start.clone(),
            a.containers_to_kill
                .iter()
                .map(|(k, v)| (k.clone(), (v.name.clone(), v.container.clone())))
                .collect(),
        )
    }

    type Mutator = fn(&mut Pod, &mut PodStatus, &mut ProbeFailures);
    struct Case {
        desc: &'static str,
        mutate: Mutator,
        // kill_pod, create_sandbox, sandbox_id, attempt, next_init, to_start, kill indexes
        expect: (
            bool,
            bool,
            &'static str,
            u32,
            Option<usize>,
            &'static [usize],
            &'static [usize],
        ),
    }

    fn run(cases: &[Case], base: fn() -> (Pod, PodStatus), init_kills: bool) {
        for c in cases {
            let (mut pod, mut status) = base();
            let mut probes = ProbeFailures::default();
            (c.mutate)(&mut pod, &mut status, &mut probes);
            let got = compute_pod_actions(&pod, &status, &probes);
            let (base_pod, base_status) = base();
            let e = c.expect;
            let want = (
                e.0,
                e.1,
                e.2.to_string(),
                e.3,
                e.4,
                e.5.to_vec(),
                kill_map(&base_pod, &base_status, e.6, init_kills),
            );
            assert_eq!(strip(&got), want, "{}", c.desc);
        }
    }

    #[test]
    fn compute_pod_actions_table() {
        let cases = [
            Case { desc: "everying is good; do nothing", mutate: |_, _, _| {}, expect: (false, false, "sandboxID", 0, None, &[], &[]) },
            Case {
                desc: "start pod sandbox and all containers for a new pod",
                mutate: |_, s, _| {
                    s.sandbox_statuses.clear();
                    s.container_statuses.clear();
                },
                expect: (true, true, "", 0, None, &[0, 1, 2], &[]),
            },
            Case {
                desc: "restart exited containers if RestartPolicy == Always",
                mutate: |p, s, _| {
                    set_policy(p, "Always");
                    s.container_statuses[0].state = ContainerState::Exited;
                    s.container_statuses[0].exit_code = 0;
                    s.container_statuses[1].state = ContainerState::Exited;
                    s.container_statuses[1].exit_code = 111;
                },
                expect: (false, false, "sandboxID", 0, None, &[0, 1], &[]),
            },
            Case {
                desc: "restart failed containers if RestartPolicy == OnFailure",
                mutate: |p, s, _| {
                    set_policy(p, "OnFailure");
                    s.container_statuses[0].state = ContainerState::Exited;
                    s.container_statuses[0].exit_code = 0;
                    s.container_statuses[1].state = ContainerState::Exited;
                    s.container_statuses[1].exit_code = 111;
                },
                expect: (false, false, "sandboxID", 0, None, &[1], &[]),
            },
            Case {
                desc: "don't restart containers if RestartPolicy == Never",
                mutate: |p, s, _| {
                    set_policy(p, "Never");
                    s.container_statuses[0].state = ContainerState::Exited;
                    s.container_statuses[0].exit_code = 0;
                    s.container_statuses[1].state = ContainerState::Exited;
                    s.container_statuses[1].exit_code = 111;
                },
                expect: (false, false, "sandboxID", 0, None, &[], &[]),
            },
            Case {
                desc: "Kill pod and recreate everything if the pod sandbox is dead, and RestartPolicy == Always",
                mutate: |p, s, _| {
                    set_policy(p, "Always");
                    not_ready(s);
                },
                expect: (true, true, "sandboxID", 1, None, &[0, 1, 2], &[]),
            },
            Case {
                desc: "Kill pod and recreate all containers (except for the succeeded one) if the pod sandbox is dead, and RestartPolicy == OnFailure",
                mutate: |p, s, _| {
                    set_policy(p, "OnFailure");
                    not_ready(s);
                    s.container_statuses[1].state = ContainerState::Exited;
                    s.container_statuses[1].exit_code = 0;
                },
                expect: (true, true, "sandboxID", 1, None, &[0, 2], &[]),
            },
            Case {
                desc: "Kill pod and recreate all containers if the PodSandbox does not have an IP",
                mutate: |_, s, _| {
                    s.sandbox_statuses[0].network.as_mut().unwrap().ip.clear();
                },
                expect: (true, true, "sandboxID", 1, None, &[0, 1, 2], &[]),
            },
            Case {
                desc: "Kill and recreate the container if the container's spec changed",
                mutate: |p, s, _| {
                    set_policy(p, "Always");
                    s.container_statuses[1].hash = 432423432;
                },
                expect: (false, false, "sandboxID", 0, None, &[1], &[1]),
            },
            Case {
                desc: "Kill and recreate the container if the liveness check has failed",
                mutate: |p, s, probes| {
                    set_policy(p, "Always");
                    probes.liveness.insert(s.container_statuses[1].id.clone(), ());
                },
                expect: (false, false, "sandboxID", 0, None, &[1], &[1]),
            },
            Case {
                desc: "Kill and recreate the container if the startup check has failed",
                mutate: |p, s, probes| {
                    set_policy(p, "Always");
                    probes.startup.insert(s.container_statuses[1].id.clone(), ());
                },
                expect: (false, false, "sandboxID", 0, None, &[1], &[1]),
            },
            Case {
                desc: "Verify we do not create a pod sandbox if no ready sandbox for pod with RestartPolicy=Never and all containers exited",
                mutate: |p, s, _| {
                    set_policy(p, "Never");
                    not_ready(s);
                    s.sandbox_statuses[0].metadata.as_mut().unwrap().attempt = 1;
                    for c in &mut s.container_statuses {
                        c.state = ContainerState::Exited;
                        c.exit_code = 0;
                    }
                },
                expect: (true, false, "sandboxID", 2, None, &[], &[]),
            },
            Case {
                desc: "Verify we do not create a pod sandbox if no ready sandbox for pod with RestartPolicy=OnFailure and all containers succeeded",
                mutate: |p, s, _| {
                    set_policy(p, "OnFailure");
                    not_ready(s);
                    s.sandbox_statuses[0].metadata.as_mut().unwrap().attempt = 1;
                    for c in &mut s.container_statuses {
                        c.state = ContainerState::Exited;
                        c.exit_code = 0;
                    }
                },
                expect: (true, false, "sandboxID", 2, None, &[], &[]),
            },
            Case {
                desc: "Verify we create a pod sandbox if no ready sandbox for pod with RestartPolicy=Never and no containers have ever been created",
                mutate: |p, s, _| {
                    set_policy(p, "Never");
                    not_ready(s);
                    s.sandbox_statuses[0].metadata.as_mut().unwrap().attempt = 2;
                    s.container_statuses.clear();
                },
                expect: (true, true, "sandboxID", 3, None, &[0, 1, 2], &[]),
            },
            Case {
                desc: "Kill and recreate the container if the container is in unknown state",
                mutate: |p, s, _| {
                    set_policy(p, "Never");
                    s.container_statuses[1].state = ContainerState::Unknown;
                },
                expect: (false, false, "sandboxID", 0, None, &[1], &[1]),
            },
        ];
        assert_eq!(cases.len(), 15, "the 14 named kubelet cases plus the base case");
        run(&cases, base_pod_and_status, false);
    }

    #[test]
    fn kill_messages_and_reasons() {
        let (mut pod, mut status) = base_pod_and_status();
        set_policy(&mut pod, "Never");
        let mut probes = ProbeFailures::default();
        probes.liveness.insert("id1".into(), ());
        status.container_statuses[1].hash = 1;
        status.container_statuses[2].state = ContainerState::Unknown;
        let a = compute_pod_actions(&pod, &status, &probes);
        assert_eq!(
            a.containers_to_kill["id1"].message,
            "Container foo1 failed liveness probe"
        );
        assert_eq!(a.containers_to_kill["id1"].reason, KillReason::LivenessProbe);
        assert_eq!(
            a.containers_to_kill["id2"].message,
            "Container foo2 definition changed, will be restarted"
        );
        assert_eq!(a.containers_to_kill["id3"].reason, KillReason::Unknown);
        assert_eq!(a.containers_to_start, vec![1, 2]);
    }

    /// `makeBasePodAndStatusWithInitContainers`.
    fn base_with_init() -> (Pod, PodStatus) {
        let (mut pod, mut status) = base_pod_and_status();
        pod.spec.as_mut().unwrap().init_containers = Some(vec![
            container("init1", "bar-image"),
            container("init2", "bar-image"),
            container("init3", "bar-image"),
        ]);
        let h = hash_container(&init_containers(&pod)[0]);
        status.container_statuses = vec![
            cs("initid1", "init1", ContainerState::Exited, h),
            cs("initid2", "init2", ContainerState::Exited, h),
            cs("initid3", "init3", ContainerState::Exited, h),
        ];
        (pod, status)
    }

    /// `makeBasePodAndStatusWithRestartableInitContainers`: three sidecars with startup probes
    /// (all running, started) and three running regular containers.
    fn base_with_sidecars() -> (Pod, PodStatus, ProbeFailures) {
        let (mut pod, mut status) = base_pod_and_status();
        let probe: k8s_openapi::api::core::v1::Probe = serde_json::from_value(serde_json::json!({
            "exec": {"command": ["true"]}
        }))
        .unwrap();
        let sidecar = |name: &str| Container {
            restart_policy: Some("Always".into()),
            startup_probe: Some(probe.clone()),
            ..container(name, "bar-image")
        };
        pod.spec.as_mut().unwrap().init_containers = Some(vec![
            sidecar("restartable-init-1"),
            sidecar("restartable-init-2"),
            sidecar("restartable-init-3"),
        ]);
        let mut probes = ProbeFailures::default();
        let mut inits: Vec<ContainerStatus> = init_containers(&pod)
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let id = format!("initid{}", i + 1);
                probes.startup_succeeded.insert(id.clone(), ());
                cs(&id, &c.name, ContainerState::Running, hash_container(c))
            })
            .collect();
        inits.append(&mut status.container_statuses);
        status.container_statuses = inits;
        (pod, status, probes)
    }

    /// Port of `TestComputePodActionsWithRestartableInitContainers`.
    #[test]
    fn compute_pod_actions_with_sidecars_table() {
        type Mutate = fn(&mut Pod, &mut PodStatus, &mut ProbeFailures);
        /// (desc, mutate, kill_pod, create_sandbox, init to start, containers to start, killed IDs)
        type Row = (
            &'static str,
            Mutate,
            bool,
            bool,
            &'static [usize],
            &'static [usize],
            &'static [&'static str],
        );
        fn drop_status(s: &mut PodStatus, name: &str) {
            s.container_statuses.retain(|c| c.name != name);
        }
        fn state(s: &mut PodStatus, name: &str, st: ContainerState) {
            for c in s.container_statuses.iter_mut().filter(|c| c.name == name) {
                c.state = st;
            }
        }
        fn no_mains(s: &mut PodStatus) {
            for n in ["foo1", "foo2", "foo3"] {
                drop_status(s, n);
            }
        }
        let rows: &[Row] = &[
            (
                "initialization completed; start all containers",
                |_, s, _| no_mains(s),
                false,
                false,
                &[],
                &[0, 1, 2],
                &[],
            ),
            (
                "no init containers have been started; start the first one",
                |_, s, _| s.container_statuses.clear(),
                false,
                false,
                &[0],
                &[],
                &[],
            ),
            (
                "an init container is in the created state; start it",
                |_, s, _| {
                    s.container_statuses.retain(|c| c.name == "restartable-init-1");
                    state(s, "restartable-init-1", ContainerState::Created);
                },
                false,
                false,
                &[0],
                &[],
                &[],
            ),
            (
                "restartable init container has started; start the next",
                |_, s, _| {
                    s.container_statuses.retain(|c| c.name == "restartable-init-1");
                },
                false,
                false,
                &[1],
                &[],
                &[],
            ),
            (
                "startupProbe has not been run; do nothing",
                |_, s, p| {
                    s.container_statuses.retain(|c| c.name == "restartable-init-1");
                    p.startup_succeeded.clear();
                },
                false,
                false,
                &[],
                &[],
                &[],
            ),
            (
                "startupProbe failed; restart it",
                |_, s, p| {
                    s.container_statuses.retain(|c| c.name == "restartable-init-1");
                    p.startup_succeeded.clear();
                    p.startup.insert("initid1".into(), ());
                },
                false,
                false,
                &[0],
                &[],
                &["initid1"],
            ),
            (
                "livenessProbe failed; restart it and start the next",
                |pod, s, p| {
                    s.container_statuses.retain(|c| c.name == "restartable-init-1");
                    let probe = pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0]
                        .startup_probe
                        .clone();
                    pod.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[0].liveness_probe = probe;
                    // The hash covers the spec: keep it current so only the probe decides.
                    s.container_statuses[0].hash = hash_container(&init_containers(pod)[0]);
                    p.liveness.insert("initid1".into(), ());
                },
                false,
                false,
                &[0, 1],
                &[],
                &["initid1"],
            ),
            (
                "restartable init container has exited; restart it",
                |_, s, _| {
                    s.container_statuses.retain(|c| c.name == "restartable-init-1");
                    state(s, "restartable-init-1", ContainerState::Exited);
                },
                false,
                false,
                &[0],
                &[],
                &[],
            ),
            (
                "a sidecar exited after initialization; restart it, keep the others",
                |_, s, _| {
                    state(s, "restartable-init-2", ContainerState::Exited);
                },
                false,
                false,
                &[1],
                &[],
                &[],
            ),
            (
                "restart a sidecar even when the pod's restartPolicy is Never",
                |p, s, _| {
                    set_policy(p, "Never");
                    state(s, "restartable-init-3", ContainerState::Exited);
                },
                false,
                false,
                &[2],
                &[],
                &[],
            ),
            (
                "some init statuses are missing but the last one is running; restart them and the mains",
                |_, s, _| {
                    drop_status(s, "restartable-init-1");
                    drop_status(s, "restartable-init-2");
                    no_mains(s);
                },
                false,
                false,
                &[0, 1],
                &[0, 1, 2],
                &[],
            ),
            (
                "restartable init container in unknown state; kill and restart it",
                |_, s, _| {
                    state(s, "restartable-init-2", ContainerState::Unknown);
                },
                false,
                false,
                &[1],
                &[],
                &["initid2"],
            ),
            (
                "sidecar definition changed; kill and restart it",
                |_, s, _| {
                    s.container_statuses[0].hash = 1;
                },
                false,
                false,
                &[0],
                &[],
                &["initid1"],
            ),
            (
                "all regular containers finished under Never; kill the pod, sidecars are not restarted",
                |p, s, _| {
                    set_policy(p, "Never");
                    for n in ["foo1", "foo2", "foo3"] {
                        state(s, n, ContainerState::Exited);
                    }
                    state(s, "restartable-init-1", ContainerState::Exited);
                },
                true,
                false,
                &[],
                &[],
                &[],
            ),
            (
                "sandbox not ready; kill the pod and start the first init container",
                |_, s, _| not_ready(s),
                true,
                true,
                &[0],
                &[],
                &[],
            ),
            (
                "sandbox not ready, Never, init statuses present; do not recreate",
                |p, s, _| {
                    set_policy(p, "Never");
                    not_ready(s);
                },
                true,
                false,
                &[],
                &[],
                &[],
            ),
        ];
        for (desc, mutate, kill_pod, create_sandbox, init, start, killed) in rows {
            let (mut pod, mut status, mut probes) = base_with_sidecars();
            mutate(&mut pod, &mut status, &mut probes);
            let a = compute_pod_actions(&pod, &status, &probes);
            assert_eq!(a.kill_pod, *kill_pod, "{desc}: kill_pod");
            assert_eq!(a.create_sandbox, *create_sandbox, "{desc}: create_sandbox");
            assert_eq!(a.init_containers_to_start, *init, "{desc}: init to start");
            assert_eq!(a.containers_to_start, *start, "{desc}: containers to start");
            let ids: Vec<&str> = a.containers_to_kill.keys().map(String::as_str).collect();
            assert_eq!(ids, *killed, "{desc}: killed");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn termination_ordering_stops_sidecars_after_mains_in_reverse() {
        let (pod, _, _) = base_with_sidecars();
        let running: [&'static str; 6] = [
            "foo1",
            "foo2",
            "foo3",
            "restartable-init-1",
            "restartable-init-2",
            "restartable-init-3",
        ];
        let o = std::sync::Arc::new(super::super::kill::TerminationOrdering::new(&pod, &running));
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, &name) in running.iter().enumerate().rev() {
            let (o, order) = (o.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                o.wait_for_turn(name, std::time::Duration::from_secs(30)).await;
                // Mains take a while to stop, in different times.
                tokio::time::sleep(std::time::Duration::from_millis(10 * (i as u64 + 1))).await;
                order.lock().unwrap().push(name.to_string());
                o.container_terminated(name);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(
            order,
            [
                "foo1",
                "foo2",
                "foo3",
                "restartable-init-3",
                "restartable-init-2",
                "restartable-init-1"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn termination_ordering_gives_up_after_the_limit() {
        let (pod, _, _) = base_with_sidecars();
        let o = super::super::kill::TerminationOrdering::new(&pod, &["foo1", "restartable-init-1"]);
        let start = tokio::time::Instant::now();
        // foo1 never terminates: the sidecar waits exactly its remaining grace.
        o.wait_for_turn("restartable-init-1", std::time::Duration::from_secs(5))
            .await;
        assert_eq!(start.elapsed(), std::time::Duration::from_secs(5));
        // A main container never waits.
        o.wait_for_turn("foo1", std::time::Duration::from_secs(5)).await;
        assert_eq!(start.elapsed(), std::time::Duration::from_secs(5));
    }

    #[test]
    fn compute_pod_actions_with_init_containers_table() {
        let cases = [
            Case {
                desc: "initialization completed; start all containers",
                mutate: |_, _, _| {},
                expect: (false, false, "sandboxID", 0, None, &[0, 1, 2], &[]),
            },
            Case {
                desc: "initialization in progress; do nothing",
                mutate: |p, s, _| {
                    set_policy(p, "Always");
                    s.container_statuses[2].state = ContainerState::Running;
                },
                expect: (false, false, "sandboxID", 0, None, &[], &[]),
            },
            Case {
                desc: "Kill pod and restart the first init container if the pod sandbox is dead",
                mutate: |p, s, _| {
                    set_policy(p, "Always");
                    not_ready(s);
                },
                expect: (true, true, "sandboxID", 1, Some(0), &[], &[]),
            },
            Case {
                desc: "initialization failed; restart the last init container if RestartPolicy == Always",
                mutate: |p, s, _| {
                    set_policy(p, "Always");
                    s.container_statuses[2].exit_code = 137;
                },
                expect: (false, false, "sandboxID", 0, Some(2), &[], &[]),
            },
            Case {
                desc: "initialization failed; restart the last init container if RestartPolicy == OnFailure",
                mutate: |p, s, _| {
                    set_policy(p, "OnFailure");
                    s.container_statuses[2].exit_code = 137;
                },
                expect: (false, false, "sandboxID", 0, Some(2), &[], &[]),
            },
            Case {
                desc: "initialization failed; kill pod if RestartPolicy == Never",
                mutate: |p, s, _| {
                    set_policy(p, "Never");
                    s.container_statuses[2].exit_code = 137;
                },
                expect: (true, false, "sandboxID", 0, None, &[], &[]),
            },
            Case {
                desc: "init container state unknown; kill and recreate the last init container if RestartPolicy == Always",
                mutate: |p, s, _| {
                    set_policy(p, "Always");
                    s.container_statuses[2].state = ContainerState::Unknown;
                },
                expect: (false, false, "sandboxID", 0, Some(2), &[], &[2]),
            },
            Case {
                desc: "init container state unknown; kill and recreate the last init container if RestartPolicy == OnFailure",
                mutate: |p, s, _| {
                    set_policy(p, "OnFailure");
                    s.container_statuses[2].state = ContainerState::Unknown;
                },
                expect: (false, false, "sandboxID", 0, Some(2), &[], &[2]),
            },
            Case {
                desc: "init container state unknown; kill pod if RestartPolicy == Never",
                mutate: |p, s, _| {
                    set_policy(p, "Never");
                    s.container_statuses[2].state = ContainerState::Unknown;
                },
                expect: (true, false, "sandboxID", 0, None, &[], &[]),
            },
            Case {
                desc: "Pod sandbox not ready, init container failed, but RestartPolicy == Never; kill pod only",
                mutate: |p, s, _| {
                    set_policy(p, "Never");
                    not_ready(s);
                },
                expect: (true, false, "sandboxID", 1, None, &[], &[]),
            },
            Case {
                desc: "Pod sandbox not ready, and RestartPolicy == Never, but no visible init containers;  create a new pod sandbox",
                mutate: |p, s, _| {
                    set_policy(p, "Never");
                    not_ready(s);
                    s.container_statuses.clear();
                },
                expect: (true, true, "sandboxID", 1, Some(0), &[], &[]),
            },
            Case {
                desc: "Pod sandbox not ready, init container failed, and RestartPolicy == OnFailure; create a new pod sandbox",
                mutate: |p, s, _| {
                    set_policy(p, "OnFailure");
                    not_ready(s);
                    s.container_statuses[2].exit_code = 137;
                },
                expect: (true, true, "sandboxID", 1, Some(0), &[], &[]),
            },
        ];
        assert_eq!(cases.len(), 12);
        run(&cases, base_with_init, true);
    }

    #[test]
    fn init_container_failed_table() {
        let mk = |state, exit_code, reason: &str| {
            let mut s = cs("x", "c", state, 0);
            s.exit_code = exit_code;
            s.reason = reason.into();
            s
        };
        let cases = [
            (mk(ContainerState::Exited, 1, ""), true),
            (mk(ContainerState::Unknown, 0, ""), true),
            (mk(ContainerState::Exited, 0, "OOMKilled"), true),
            (mk(ContainerState::Running, 0, "OOMKilled"), true),
            (mk(ContainerState::Exited, 0, ""), false),
            (mk(ContainerState::Running, 0, ""), false),
            (mk(ContainerState::Created, 0, ""), false),
        ];
        for (s, want) in cases {
            assert_eq!(is_init_container_failed(&s), want, "{s:?}");
        }
    }

    #[test]
    fn should_container_be_restarted_table() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"uid": "12345678", "name": "foo", "namespace": "new"},
            "spec": {"containers": [{"name": "no-history"}, {"name": "alive"}, {"name": "succeed"},
                                    {"name": "failed"}, {"name": "unknown"}, {"name": "created"}]}
        }))
        .unwrap();
        let mut status = PodStatus::default();
        let mut push = |name: &str, state, exit| {
            let mut s = cs(name, name, state, 0);
            s.exit_code = exit;
            status.container_statuses.push(s);
        };
        push("alive", ContainerState::Running, 0);
        push("succeed", ContainerState::Exited, 0);
        push("failed", ContainerState::Exited, 1);
        push("alive", ContainerState::Exited, 2);
        push("unknown", ContainerState::Unknown, 0);
        push("failed", ContainerState::Exited, 3);
        push("created", ContainerState::Created, 0);
        let expected: &[(&str, [bool; 3])] = &[
            ("no-history", [true, true, true]),
            ("alive", [false, false, false]),
            ("succeed", [false, false, true]),
            ("failed", [false, true, true]),
            ("unknown", [true, true, true]),
            ("created", [true, true, true]),
        ];
        for (i, policy) in ["Never", "OnFailure", "Always"].iter().enumerate() {
            set_policy(&mut pod, policy);
            for (name, want) in expected {
                let c = containers(&pod).iter().find(|c| c.name == *name).unwrap().clone();
                assert_eq!(
                    should_container_be_restarted(&c, &pod, &status),
                    want[i],
                    "{name} {policy}"
                );
            }
        }
        // A pod being deleted restarts nothing.
        pod.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()));
        for (name, _) in expected {
            let c = containers(&pod).iter().find(|c| c.name == *name).unwrap().clone();
            assert!(!should_container_be_restarted(&c, &pod, &status), "{name} deleted");
        }
    }

    /// `makeBasePodAndStatusWithInitAndEphemeralContainers`.
    fn base_with_init_and_ephemeral() -> (Pod, PodStatus) {
        let (mut pod, mut status) = base_pod_and_status();
        let spec = pod.spec.as_mut().unwrap();
        spec.init_containers = Some(vec![container("init1", "bar-image")]);
        spec.ephemeral_containers = Some(vec![serde_json::from_value(serde_json::json!({
            "name": "debug", "image": "busybox"}))
        .unwrap()]);
        let h = hash_container(&init_containers(&pod)[0]);
        status
            .container_statuses
            .push(cs("initid1", "init1", ContainerState::Exited, h));
        status
            .container_statuses
            .push(cs("debug1", "debug", ContainerState::Running, 0));
        (pod, status)
    }

    // TestComputePodActionsWithInitAndEphemeralContainers.
    #[test]
    fn compute_pod_actions_with_ephemeral_containers_table() {
        type M = fn(&mut Pod, &mut PodStatus);
        /// (desc, mutate, kill_pod, create_sandbox, attempt, next_init, ephemeral to start)
        type EphCase = (&'static str, M, bool, bool, u32, Option<usize>, &'static [usize]);
        let cases: &[EphCase] = &[
            ("steady state; do nothing; ignore ephemeral container", |_, _| {}, false, false, 0, None, &[]),
            (
                "No ephemeral containers running; start one",
                |_, s| s.container_statuses.truncate(4),
                false,
                false,
                0,
                None,
                &[0],
            ),
            (
                "Start second ephemeral container",
                |p, _| {
                    p.spec.as_mut().unwrap().ephemeral_containers.as_mut().unwrap().push(
                        serde_json::from_value(serde_json::json!({"name": "debug2", "image": "busybox"})).unwrap(),
                    )
                },
                false,
                false,
                0,
                None,
                &[1],
            ),
            (
                "Ephemeral container exited; do not restart",
                |p, s| {
                    set_policy(p, "Always");
                    s.container_statuses[4].state = ContainerState::Exited;
                },
                false,
                false,
                0,
                None,
                &[],
            ),
            (
                "initialization in progress; start ephemeral container",
                |_, s| {
                    s.container_statuses[3].state = ContainerState::Running;
                    s.container_statuses.truncate(4);
                },
                false,
                false,
                0,
                None,
                &[0],
            ),
            (
                "Create a new pod sandbox if the pod sandbox is dead, init container failed and RestartPolicy == OnFailure",
                |p, s| {
                    set_policy(p, "OnFailure");
                    not_ready(s);
                    s.container_statuses.drain(..3);
                    s.container_statuses[0].exit_code = 137;
                },
                true,
                true,
                1,
                Some(0),
                &[],
            ),
            (
                "Kill pod and do not restart ephemeral container if the pod sandbox is dead",
                |p, s| {
                    set_policy(p, "Always");
                    not_ready(s);
                },
                true,
                true,
                1,
                Some(0),
                &[],
            ),
            (
                "Kill pod if all containers exited except ephemeral container",
                |p, s| {
                    set_policy(p, "Never");
                    for c in &mut s.container_statuses[..3] {
                        c.state = ContainerState::Exited;
                        c.exit_code = 0;
                    }
                },
                true,
                false,
                0,
                None,
                &[],
            ),
            (
                "Ephemeral container is in unknown state; leave it alone",
                |p, s| {
                    set_policy(p, "Never");
                    s.container_statuses[4].state = ContainerState::Unknown;
                },
                false,
                false,
                0,
                None,
                &[],
            ),
        ];
        for (desc, mutate, kill, create, attempt, next, eph) in cases {
            let (mut pod, mut status) = base_with_init_and_ephemeral();
            mutate(&mut pod, &mut status);
            let a = compute_pod_actions(&pod, &status, &ProbeFailures::default());
            assert_eq!(
                (
                    a.kill_pod,
                    a.create_sandbox,
                    a.attempt,
                    a.init_containers_to_start.first().copied()
                ),
                (*kill, *create, *attempt, *next),
                "{desc}"
            );
            assert_eq!(a.sandbox_id, "sandboxID", "{desc}");
            assert!(a.containers_to_start.is_empty(), "{desc}: {:?}", a.containers_to_start);
            assert!(a.containers_to_kill.is_empty(), "{desc}");
            assert_eq!(a.ephemeral_containers_to_start, eph.to_vec(), "{desc}");
        }
    }

    #[test]
    fn host_network_toggle_recreates_sandbox_without_id() {
        let (mut pod, status) = base_pod_and_status();
        pod.spec.as_mut().unwrap().host_network = Some(true);
        assert_eq!(pod_sandbox_changed(&pod, &status), (true, 1, String::new()));
        let mut status2 = status.clone();
        status2.sandbox_statuses.push(status.sandbox_statuses[0].clone());
        pod.spec.as_mut().unwrap().host_network = None;
        assert_eq!(pod_sandbox_changed(&pod, &status2), (true, 1, "sandboxID".into()));
    }
}
