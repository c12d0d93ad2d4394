//! Pod phase from container statuses (`getPhase`, kubelet_pods.go), §2.6.
//!
//! keel follows the rules of the spec; restartable init containers (sidecars, `restartPolicy:
//! Always` on an init container) are handled as Kubernetes 1.29+ does: a started sidecar does
//! not hold the pod in Pending. A pod whose `Always` containers are all stopped stays `Running`
//! even when it is being deleted (Appendix A.4/A.8): there is no `podIsTerminal` input.

use k8s_openapi::api::core::v1::{Container, ContainerStatus, PodSpec};

pub const PENDING: &str = "Pending";
pub const RUNNING: &str = "Running";
pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";

/// The pod's restart policy with the API default (`Always`).
pub fn restart_policy(spec: &PodSpec) -> &str {
    spec.restart_policy.as_deref().unwrap_or("Always")
}

pub fn is_terminal(phase: Option<&str>) -> bool {
    matches!(phase, Some(SUCCEEDED) | Some(FAILED))
}

fn find<'a>(statuses: &'a [ContainerStatus], name: &str) -> Option<&'a ContainerStatus> {
    statuses.iter().find(|s| s.name == name)
}

/// An init container with `restartPolicy: Always` (a sidecar).
pub fn is_restartable_init_container(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// `HasAnyRegularContainerStarted`: some regular container is running or has terminated.
pub fn has_any_regular_container_started(spec: &PodSpec, statuses: &[ContainerStatus]) -> bool {
    statuses.iter().any(|s| {
        spec.containers.iter().any(|c| c.name == s.name)
            && s.state
                .as_ref()
                .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
    })
}

/// Computes the phase over init + regular container statuses (one list, looked up by name).
pub fn get_phase(spec: &PodSpec, info: &[ContainerStatus]) -> &'static str {
    let mut pending_init = 0;
    let mut pending_sidecars = 0;
    let mut failed_init = 0;
    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    for c in spec.init_containers.iter().flatten() {
        let found = find(info, &c.name);
        let state = found.and_then(|s| s.state.clone()).unwrap_or_default();
        let last_term = found
            .and_then(|s| s.last_state.as_ref())
            .and_then(|l| l.terminated.as_ref());
        if is_restartable_init_container(c) {
            let Some(s) = found else {
                unknown += 1;
                continue;
            };
            if state.running.is_some() {
                if s.started != Some(true) {
                    pending_sidecars += 1;
                }
                running += 1;
            } else if state.terminated.is_some() {
                // A terminated sidecar is ignored: it is restarted.
            } else if state.waiting.is_some() {
                if last_term.is_none() {
                    pending_sidecars += 1;
                }
            } else {
                pending_sidecars += 1;
                unknown += 1;
            }
            continue;
        }
        if found.is_none() {
            pending_init += 1;
            continue;
        }
        if state.running.is_some() {
            pending_init += 1;
        } else if let Some(t) = &state.terminated {
            if t.exit_code != 0 {
                failed_init += 1;
            }
        } else if state.waiting.is_some() {
            match last_term {
                Some(t) if t.exit_code != 0 => failed_init += 1,
                Some(_) => {}
                None => pending_init += 1,
            }
        } else {
            pending_init += 1;
        }
    }

    for c in &spec.containers {
        let Some(s) = find(info, &c.name) else {
            unknown += 1;
            continue;
        };
        let state = s.state.clone().unwrap_or_default();
        let has_last_term = s.last_state.as_ref().is_some_and(|l| l.terminated.is_some());
        if state.running.is_some() {
            running += 1;
        } else if let Some(t) = &state.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if state.waiting.is_some() {
            if has_last_term {
                stopped += 1;
            } else {
                waiting += 1;
            }
        } else {
            unknown += 1;
        }
    }

    let policy = restart_policy(spec);
    if failed_init > 0 && policy == "Never" {
        return FAILED;
    }
    // Sidecars restarting after the regular containers ran do not put the pod back to Pending.
    let sidecars_pending = pending_sidecars > 0 && !has_any_regular_container_started(spec, info);
    if pending_init > 0 || sidecars_pending || waiting > 0 {
        // One or more containers has not been started.
        return PENDING;
    }
    if running > 0 && unknown == 0 {
        return RUNNING;
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if policy == "Always" {
            // All containers are in the process of restarting.
            return RUNNING;
        }
        if stopped == succeeded {
            return SUCCEEDED;
        }
        if policy == "Never" {
            return FAILED;
        }
        // OnFailure with at least one failure: restarting.
        return RUNNING;
    }
    PENDING
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    };

    pub fn cs(name: &str, state: ContainerState, last: Option<ContainerState>) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(state),
            last_state: last,
            ..Default::default()
        }
    }
    fn term(code: i32) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
    fn running_state(n: &str) -> ContainerStatus {
        cs(
            n,
            ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            },
            None,
        )
    }
    fn stopped_state(n: &str) -> ContainerStatus {
        cs(n, term(0), None)
    }
    fn succeeded_state(n: &str) -> ContainerStatus {
        cs(n, term(0), None)
    }
    fn failed_state(n: &str) -> ContainerStatus {
        cs(n, term(-1), None)
    }
    fn started_state(n: &str) -> ContainerStatus {
        ContainerStatus {
            started: Some(true),
            ..running_state(n)
        }
    }
    fn waiting() -> ContainerState {
        ContainerState {
            waiting: Some(ContainerStateWaiting::default()),
            ..Default::default()
        }
    }
    fn waiting_state(n: &str) -> ContainerStatus {
        cs(n, waiting(), None)
    }
    fn waiting_state_with_last_termination(n: &str) -> ContainerStatus {
        cs(n, waiting(), Some(term(0)))
    }
    fn waiting_state_with_non_zero_termination(n: &str) -> ContainerStatus {
        cs(n, waiting(), Some(term(-1)))
    }

    fn spec(policy: &str, init: &[&str]) -> PodSpec {
        let c = |n: &&str| Container {
            name: n.to_string(),
            ..Default::default()
        };
        PodSpec {
            node_name: Some("machine".into()),
            containers: ["containerA", "containerB"].iter().map(c).collect(),
            init_containers: if init.is_empty() {
                None
            } else {
                Some(init.iter().map(c).collect())
            },
            restart_policy: Some(policy.into()),
            ..Default::default()
        }
    }

    type Case = (Vec<ContainerStatus>, &'static str, &'static str);

    fn run(spec: &PodSpec, cases: Vec<Case>) {
        for (statuses, want, name) in cases {
            assert_eq!(get_phase(spec, &statuses), want, "[test {name}]");
        }
    }

    // The podIsTerminal cases of newer kubelets are left out: in the 1.24 behaviour keel follows,
    // getPhase has no such input.
    #[test]
    fn test_pod_phase_with_restart_always() {
        run(
            &spec("Always", &[]),
            vec![
                (vec![], PENDING, "waiting"),
                (
                    vec![running_state("containerA"), running_state("containerB")],
                    RUNNING,
                    "all running",
                ),
                (
                    vec![stopped_state("containerA"), stopped_state("containerB")],
                    RUNNING,
                    "all stopped with restart always",
                ),
                (
                    vec![running_state("containerA"), stopped_state("containerB")],
                    RUNNING,
                    "mixed state #1 with restart always",
                ),
                (
                    vec![running_state("containerA")],
                    PENDING,
                    "mixed state #2 with restart always",
                ),
                (
                    vec![running_state("containerA"), waiting_state("containerB")],
                    PENDING,
                    "mixed state #3 with restart always",
                ),
                (
                    vec![
                        running_state("containerA"),
                        waiting_state_with_last_termination("containerB"),
                    ],
                    RUNNING,
                    "backoff crashloop container with restart always",
                ),
            ],
        );
    }

    fn with_init(init: Vec<ContainerStatus>, regular: Vec<ContainerStatus>) -> Vec<ContainerStatus> {
        init.into_iter().chain(regular).collect()
    }

    #[test]
    fn test_pod_phase_with_restart_always_init_containers() {
        run(
            &spec("Always", &["containerX"]),
            vec![
                (vec![], PENDING, "empty, waiting"),
                (vec![running_state("containerX")], PENDING, "init container running"),
                (
                    vec![failed_state("containerX")],
                    PENDING,
                    "init container terminated non-zero",
                ),
                (
                    vec![waiting_state_with_last_termination("containerX")],
                    PENDING,
                    "init container waiting, terminated zero",
                ),
                (
                    vec![waiting_state_with_non_zero_termination("containerX")],
                    PENDING,
                    "init container waiting, terminated non-zero",
                ),
                (
                    vec![waiting_state("containerX")],
                    PENDING,
                    "init container waiting, not terminated",
                ),
                (
                    with_init(
                        vec![succeeded_state("containerX")],
                        vec![running_state("containerA"), running_state("containerB")],
                    ),
                    RUNNING,
                    "init container succeeded",
                ),
            ],
        );
    }

    #[test]
    fn test_pod_phase_with_restart_never() {
        run(
            &spec("Never", &[]),
            vec![
                (vec![], PENDING, "waiting"),
                (
                    vec![running_state("containerA"), running_state("containerB")],
                    RUNNING,
                    "all running with restart never",
                ),
                (
                    vec![succeeded_state("containerA"), succeeded_state("containerB")],
                    SUCCEEDED,
                    "all succeeded with restart never",
                ),
                (
                    vec![failed_state("containerA"), failed_state("containerB")],
                    FAILED,
                    "all failed with restart never",
                ),
                (
                    vec![running_state("containerA"), succeeded_state("containerB")],
                    RUNNING,
                    "mixed state #1 with restart never",
                ),
                (
                    vec![running_state("containerA")],
                    PENDING,
                    "mixed state #2 with restart never",
                ),
                (
                    vec![running_state("containerA"), waiting_state("containerB")],
                    PENDING,
                    "mixed state #3 with restart never",
                ),
            ],
        );
    }

    #[test]
    fn test_pod_phase_with_restart_never_init_containers() {
        run(
            &spec("Never", &["containerX"]),
            vec![
                (vec![], PENDING, "empty, waiting"),
                (vec![running_state("containerX")], PENDING, "init container running"),
                (
                    vec![failed_state("containerX")],
                    FAILED,
                    "init container terminated non-zero",
                ),
                (
                    vec![waiting_state_with_last_termination("containerX")],
                    PENDING,
                    "init container waiting, terminated zero",
                ),
                (
                    vec![waiting_state_with_non_zero_termination("containerX")],
                    FAILED,
                    "init container waiting, terminated non-zero",
                ),
                (
                    vec![waiting_state("containerX")],
                    PENDING,
                    "init container waiting, not terminated",
                ),
                (
                    with_init(
                        vec![succeeded_state("containerX")],
                        vec![running_state("containerA"), running_state("containerB")],
                    ),
                    RUNNING,
                    "init container succeeded",
                ),
            ],
        );
    }

    #[test]
    fn test_pod_phase_with_restart_on_failure() {
        run(
            &spec("OnFailure", &[]),
            vec![
                (vec![], PENDING, "waiting"),
                (
                    vec![running_state("containerA"), running_state("containerB")],
                    RUNNING,
                    "all running with restart onfailure",
                ),
                (
                    vec![succeeded_state("containerA"), succeeded_state("containerB")],
                    SUCCEEDED,
                    "all succeeded with restart onfailure",
                ),
                (
                    vec![failed_state("containerA"), failed_state("containerB")],
                    RUNNING,
                    "all failed with restart never",
                ),
                (
                    vec![running_state("containerA"), succeeded_state("containerB")],
                    RUNNING,
                    "mixed state #1 with restart onfailure",
                ),
                (
                    vec![running_state("containerA")],
                    PENDING,
                    "mixed state #2 with restart onfailure",
                ),
                (
                    vec![running_state("containerA"), waiting_state("containerB")],
                    PENDING,
                    "mixed state #3 with restart onfailure",
                ),
                (
                    vec![
                        running_state("containerA"),
                        waiting_state_with_last_termination("containerB"),
                    ],
                    RUNNING,
                    "backoff crashloop container with restart onfailure",
                ),
            ],
        );
    }

    // The kubelet has no OnFailure init table ("no special init-specific logic, see the
    // RestartAlways case"); this one checks that claim for keel.
    #[test]
    fn on_failure_init_containers_behave_like_always() {
        run(
            &spec("OnFailure", &["containerX"]),
            vec![
                (vec![], PENDING, "empty, waiting"),
                (vec![running_state("containerX")], PENDING, "init container running"),
                (
                    vec![failed_state("containerX")],
                    PENDING,
                    "init container terminated non-zero",
                ),
                (
                    vec![waiting_state_with_last_termination("containerX")],
                    PENDING,
                    "init container waiting, terminated zero",
                ),
                (
                    vec![waiting_state_with_non_zero_termination("containerX")],
                    PENDING,
                    "init container waiting, terminated non-zero",
                ),
                (
                    vec![waiting_state("containerX")],
                    PENDING,
                    "init container waiting, not terminated",
                ),
                (
                    with_init(
                        vec![succeeded_state("containerX")],
                        vec![running_state("containerA"), running_state("containerB")],
                    ),
                    RUNNING,
                    "init container succeeded",
                ),
            ],
        );
    }

    fn sidecar_spec(init: &[(&str, bool)], containers: &[&str]) -> PodSpec {
        PodSpec {
            node_name: Some("machine".into()),
            init_containers: Some(
                init.iter()
                    .map(|(n, restartable)| Container {
                        name: n.to_string(),
                        restart_policy: restartable.then(|| "Always".to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            containers: containers
                .iter()
                .map(|n| Container {
                    name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            restart_policy: Some("Always".into()),
            ..Default::default()
        }
    }

    // The podIsTerminal cases are left out (see the module doc).
    #[test]
    fn test_pod_phase_with_restart_always_restartable_init_containers() {
        let x = "containerX";
        run(
            &sidecar_spec(&[(x, true)], &["containerA", "containerB"]),
            vec![
                (vec![], PENDING, "empty, waiting"),
                (vec![running_state(x)], PENDING, "restartable init container running"),
                (vec![stopped_state(x)], PENDING, "restartable init container stopped"),
                (
                    vec![waiting_state_with_last_termination(x)],
                    PENDING,
                    "restartable init container waiting, terminated zero",
                ),
                (
                    vec![waiting_state_with_non_zero_termination(x)],
                    PENDING,
                    "restartable init container waiting, terminated non-zero",
                ),
                (
                    vec![waiting_state(x)],
                    PENDING,
                    "restartable init container waiting, not terminated",
                ),
                (
                    with_init(vec![started_state(x)], vec![running_state("containerA")]),
                    PENDING,
                    "restartable init container started, 1/2 regular container running",
                ),
                (
                    with_init(
                        vec![started_state(x)],
                        vec![running_state("containerA"), running_state("containerB")],
                    ),
                    RUNNING,
                    "restartable init container started, all regular containers running",
                ),
                (
                    with_init(
                        vec![running_state(x)],
                        vec![running_state("containerA"), running_state("containerB")],
                    ),
                    RUNNING,
                    "restartable init container running, all regular containers running",
                ),
                (
                    with_init(
                        vec![stopped_state(x)],
                        vec![running_state("containerA"), running_state("containerB")],
                    ),
                    RUNNING,
                    "restartable init container stopped, all regular containers running",
                ),
                (
                    with_init(
                        vec![waiting_state_with_last_termination(x)],
                        vec![running_state("containerA"), running_state("containerB")],
                    ),
                    RUNNING,
                    "backoff crashloop restartable init container, all regular containers running",
                ),
            ],
        );
    }

    #[test]
    fn test_pod_phase_with_restart_always_and_pod_has_run() {
        let (x, y, a) = ("containerX", "containerY", "containerA");
        run(
            &sidecar_spec(&[(x, false), (y, true)], &[a]),
            vec![
                (
                    with_init(vec![running_state(x), running_state(y)], vec![running_state(a)]),
                    PENDING,
                    "regular init containers, restartable init container and regular container are all running",
                ),
                (
                    with_init(vec![running_state(x), running_state(y)], vec![stopped_state(a)]),
                    PENDING,
                    "regular containers is stopped, restartable init container and regular int container are both \
                     running",
                ),
                (
                    with_init(vec![succeeded_state(x), running_state(y)], vec![stopped_state(a)]),
                    RUNNING,
                    "regular init container is succeeded, restartable init container is running, regular containers \
                     is stopped",
                ),
                (
                    with_init(vec![succeeded_state(x), running_state(y)], vec![running_state(a)]),
                    RUNNING,
                    "regular init container is succeeded, restartable init container and regular containers are both \
                     running",
                ),
            ],
        );
    }

    #[test]
    fn test_pod_phase_with_restart_never_restartable_init_containers() {
        let x = "containerX";
        let mut spec = sidecar_spec(&[(x, true)], &["containerA", "containerB"]);
        spec.restart_policy = Some("Never".into());
        let both_succeeded = || vec![succeeded_state("containerA"), succeeded_state("containerB")];
        run(
            &spec,
            vec![
                (vec![], PENDING, "empty, waiting"),
                (vec![running_state(x)], PENDING, "restartable init container running"),
                (vec![stopped_state(x)], PENDING, "restartable init container stopped"),
                (
                    vec![waiting_state_with_last_termination(x)],
                    PENDING,
                    "restartable init container waiting, terminated zero",
                ),
                (
                    vec![waiting_state_with_non_zero_termination(x)],
                    PENDING,
                    "restartable init container waiting, terminated non-zero",
                ),
                (
                    vec![waiting_state(x)],
                    PENDING,
                    "restartable init container waiting, not terminated",
                ),
                (
                    with_init(vec![started_state(x)], vec![running_state("containerA")]),
                    PENDING,
                    "restartable init container started, one main container running",
                ),
                (
                    with_init(vec![started_state(x)], both_succeeded()),
                    RUNNING,
                    "restartable init container started, main containers succeeded",
                ),
                (
                    with_init(vec![running_state(x)], both_succeeded()),
                    RUNNING,
                    "restartable init container running, main containers succeeded",
                ),
                (
                    with_init(vec![succeeded_state(x)], both_succeeded()),
                    SUCCEEDED,
                    "all containers succeeded",
                ),
                (
                    with_init(vec![failed_state(x)], both_succeeded()),
                    SUCCEEDED,
                    "restartable init container terminated non-zero, main containers succeeded",
                ),
                (
                    with_init(vec![waiting_state_with_last_termination(x)], both_succeeded()),
                    SUCCEEDED,
                    "backoff crashloop restartable init container, main containers succeeded",
                ),
                (
                    with_init(vec![waiting_state_with_non_zero_termination(x)], both_succeeded()),
                    SUCCEEDED,
                    "backoff crashloop with non-zero restartable init container, main containers succeeded",
                ),
            ],
        );
    }
}
