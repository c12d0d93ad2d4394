//! Pod phase from container statuses (`getPhase`, kubelet_pods.go), §2.6.
//!
//! keel follows the 1.24 rules of the spec: restartable init containers (sidecars) are counted
//! like other init containers, and a pod whose `Always` containers are all stopped stays
//! `Running` even when it is being deleted (Appendix A.4/A.8).

use k8s_openapi::api::core::v1::{ContainerStatus, PodSpec};

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

/// Computes the phase over init + regular container statuses (one list, looked up by name).
pub fn get_phase(spec: &PodSpec, info: &[ContainerStatus]) -> &'static str {
    let mut pending_init = 0;
    let mut failed_init = 0;
    for c in spec.init_containers.iter().flatten() {
        let Some(s) = find(info, &c.name) else {
            pending_init += 1;
            continue;
        };
        let state = s.state.clone().unwrap_or_default();
        let last_term = s.last_state.as_ref().and_then(|l| l.terminated.as_ref());
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

    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
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
    if pending_init > 0 || waiting > 0 {
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

    #[test]
    fn test_pod_phase_with_restart_on_failure_init_containers() {
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
}
