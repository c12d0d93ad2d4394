//! The kubelet-owned pod conditions (`pkg/kubelet/status/generate.go`), §2.6: Initialized,
//! ContainersReady, Ready (with readiness gates), PodReadyToStartContainers, PodScheduled.

use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec};

use super::phase::{has_any_regular_container_started, is_restartable_init_container, SUCCEEDED};
use crate::genericruntime::cri;
use crate::genericruntime::types::PodStatus as RuntimePodStatus;

pub const POD_SCHEDULED: &str = "PodScheduled";
pub const POD_READY: &str = "Ready";
pub const POD_INITIALIZED: &str = "Initialized";
pub const CONTAINERS_READY: &str = "ContainersReady";
pub const POD_READY_TO_START_CONTAINERS: &str = "PodReadyToStartContainers";

pub const UNKNOWN_CONTAINER_STATUSES: &str = "UnknownContainerStatuses";
pub const POD_COMPLETED: &str = "PodCompleted";
pub const CONTAINERS_NOT_READY: &str = "ContainersNotReady";
pub const CONTAINERS_NOT_INITIALIZED: &str = "ContainersNotInitialized";
pub const READINESS_GATES_NOT_READY: &str = "ReadinessGatesNotReady";

/// Conditions the kubelet owns (`PodConditionByKubelet`); every other condition in the API object
/// belongs to someone else and is preserved.
pub fn is_kubelet_owned(condition_type: &str) -> bool {
    matches!(
        condition_type,
        POD_SCHEDULED | POD_READY | POD_INITIALIZED | CONTAINERS_READY | POD_READY_TO_START_CONTAINERS
    )
}

pub fn condition(type_: &str, status: bool, reason: &str, message: String) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: (!reason.is_empty()).then(|| reason.to_string()),
        message: (!message.is_empty()).then_some(message),
        ..Default::default()
    }
}

/// Go's `fmt.Sprintf("%s", []string{"a","b"})` is `[a b]`; the messages use that form.
fn go_list(names: &[String]) -> String {
    format!("[{}]", names.join(" "))
}

fn find<'a>(statuses: &'a [ContainerStatus], name: &str) -> Option<&'a ContainerStatus> {
    statuses.iter().find(|s| s.name == name)
}

/// `GenerateContainersReadyCondition` over all container statuses (init and regular; sidecars
/// count like regular containers). `statuses` is None when the status has no list at all.
pub fn containers_ready(spec: &PodSpec, statuses: Option<&[ContainerStatus]>, phase: &str) -> PodCondition {
    let Some(statuses) = statuses else {
        return condition(CONTAINERS_READY, false, UNKNOWN_CONTAINER_STATUSES, String::new());
    };
    let mut unknown = Vec::new();
    let mut unready = Vec::new();
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| is_restartable_init_container(c));
    for c in sidecars.chain(&spec.containers) {
        match find(statuses, &c.name) {
            Some(s) if !s.ready => unready.push(c.name.clone()),
            Some(_) => {}
            None => unknown.push(c.name.clone()),
        }
    }
    if phase == SUCCEEDED && unknown.is_empty() {
        return condition(CONTAINERS_READY, false, POD_COMPLETED, String::new());
    }
    let mut msgs = Vec::new();
    if !unknown.is_empty() {
        msgs.push(format!("containers with unknown status: {}", go_list(&unknown)));
    }
    if !unready.is_empty() {
        msgs.push(format!("containers with unready status: {}", go_list(&unready)));
    }
    if !msgs.is_empty() {
        return condition(CONTAINERS_READY, false, CONTAINERS_NOT_READY, msgs.join(", "));
    }
    condition(CONTAINERS_READY, true, "", String::new())
}

/// `GeneratePodReadyCondition`: ContainersReady plus the readiness gates, looked up in
/// `conditions` (the non-kubelet conditions kept from the API object).
pub fn pod_ready(
    spec: &PodSpec,
    conditions: &[PodCondition],
    statuses: Option<&[ContainerStatus]>,
    phase: &str,
) -> PodCondition {
    let cr = containers_ready(spec, statuses, phase);
    if cr.status != "True" {
        return PodCondition {
            type_: POD_READY.into(),
            ..cr
        };
    }
    let mut msgs = Vec::new();
    for gate in spec.readiness_gates.iter().flatten() {
        let t = &gate.condition_type;
        match conditions.iter().find(|c| &c.type_ == t) {
            None => msgs.push(format!(
                "corresponding condition of pod readiness gate {t:?} does not exist."
            )),
            Some(c) if c.status != "True" => msgs.push(format!(
                "the status of pod readiness gate {t:?} is not \"True\", but {}",
                c.status
            )),
            Some(_) => {}
        }
    }
    if !msgs.is_empty() {
        return condition(POD_READY, false, READINESS_GATES_NOT_READY, msgs.join(", "));
    }
    condition(POD_READY, true, "", String::new())
}

/// `GeneratePodInitializedCondition` over all container statuses: regular init containers must
/// be ready (exited 0), sidecars started; once a regular container has started the pod stays
/// initialized (sidecars may restart).
pub fn pod_initialized(spec: &PodSpec, all_statuses: Option<&[ContainerStatus]>, phase: &str) -> PodCondition {
    let init = spec.init_containers.as_deref().unwrap_or_default();
    let statuses = match all_statuses {
        None if !init.is_empty() => {
            return condition(POD_INITIALIZED, false, UNKNOWN_CONTAINER_STATUSES, String::new());
        }
        None => &[][..],
        Some(s) => s,
    };
    let mut unknown = Vec::new();
    let mut unready = Vec::new();
    for c in init {
        match find(statuses, &c.name) {
            Some(s) if is_restartable_init_container(c) => {
                if s.started != Some(true) {
                    unready.push(c.name.clone());
                }
            }
            Some(s) if !s.ready => unready.push(c.name.clone()),
            Some(_) => {}
            None => unknown.push(c.name.clone()),
        }
    }
    if phase == SUCCEEDED && unknown.is_empty() {
        return condition(POD_INITIALIZED, true, POD_COMPLETED, String::new());
    }
    if has_any_regular_container_started(spec, statuses) {
        return condition(POD_INITIALIZED, true, "", String::new());
    }
    let mut msgs = Vec::new();
    if !unknown.is_empty() {
        msgs.push(format!("containers with unknown status: {}", go_list(&unknown)));
    }
    if !unready.is_empty() {
        msgs.push(format!("containers with incomplete status: {}", go_list(&unready)));
    }
    if !msgs.is_empty() {
        return condition(POD_INITIALIZED, false, CONTAINERS_NOT_INITIALIZED, msgs.join(", "));
    }
    condition(POD_INITIALIZED, true, "", String::new())
}

/// `GeneratePodReadyToStartContainersCondition` (1.29+): True once the newest sandbox is READY
/// (no new sandbox would be needed), False otherwise.
pub fn pod_ready_to_start_containers(runtime: &RuntimePodStatus) -> PodCondition {
    let ready = |s: &cri::PodSandboxStatus| s.state == cri::PodSandboxState::SandboxReady as i32;
    let ready_count = runtime.sandbox_statuses.iter().filter(|s| ready(s)).count();
    // More than one ready sandbox means the kubelet would recreate it (PodSandboxChanged).
    let ok = runtime.sandbox_statuses.first().is_some_and(ready) && ready_count == 1;
    condition(POD_READY_TO_START_CONTAINERS, ok, "", String::new())
}

pub fn pod_scheduled() -> PodCondition {
    condition(POD_SCHEDULED, true, "", String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodReadinessGate};

    fn spec(containers: &[&str], init: &[&str], gates: &[&str]) -> PodSpec {
        let c = |n: &&str| Container {
            name: n.to_string(),
            ..Default::default()
        };
        PodSpec {
            containers: containers.iter().map(c).collect(),
            init_containers: (!init.is_empty()).then(|| init.iter().map(c).collect()),
            readiness_gates: (!gates.is_empty()).then(|| {
                gates
                    .iter()
                    .map(|g| PodReadinessGate {
                        condition_type: g.to_string(),
                    })
                    .collect()
            }),
            ..Default::default()
        }
    }
    fn st(name: &str, ready: bool) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            ready,
            ..Default::default()
        }
    }
    fn cond(t: &str, status: &str) -> PodCondition {
        PodCondition {
            type_: t.into(),
            status: status.into(),
            ..Default::default()
        }
    }
    fn expect(c: &PodCondition, status: &str, reason: &str, message: &str) {
        assert_eq!(
            (
                c.status.as_str(),
                c.reason.as_deref().unwrap_or(""),
                c.message.as_deref().unwrap_or("")
            ),
            (status, reason, message),
            "{}",
            c.type_
        );
    }

    type Want<'a> = (&'a str, &'a str, &'a str);
    type Case<'a> = (PodSpec, Option<Vec<ContainerStatus>>, &'a str, Want<'a>);
    type ReadyCase<'a> = (
        PodSpec,
        Vec<PodCondition>,
        Option<Vec<ContainerStatus>>,
        &'a str,
        Want<'a>,
    );

    #[test]
    fn test_generate_containers_ready_condition() {
        let cases: Vec<Case> = vec![
            (
                spec(&[], &[], &[]),
                None,
                "Running",
                ("False", UNKNOWN_CONTAINER_STATUSES, ""),
            ),
            (spec(&[], &[], &[]), Some(vec![]), "Running", ("True", "", "")),
            (
                spec(&["1234"], &[], &[]),
                Some(vec![]),
                "Running",
                ("False", CONTAINERS_NOT_READY, "containers with unknown status: [1234]"),
            ),
            (
                spec(&["1234", "5678"], &[], &[]),
                Some(vec![st("1234", true), st("5678", true)]),
                "Running",
                ("True", "", ""),
            ),
            (
                spec(&["1234", "5678"], &[], &[]),
                Some(vec![st("1234", true)]),
                "Running",
                ("False", CONTAINERS_NOT_READY, "containers with unknown status: [5678]"),
            ),
            (
                spec(&["1234", "5678"], &[], &[]),
                Some(vec![st("1234", true), st("5678", false)]),
                "Running",
                ("False", CONTAINERS_NOT_READY, "containers with unready status: [5678]"),
            ),
            (
                spec(&["1234", "5678", "9"], &[], &[]),
                Some(vec![st("1234", false), st("5678", false)]),
                "Running",
                (
                    "False",
                    CONTAINERS_NOT_READY,
                    "containers with unknown status: [9], containers with unready status: [1234 5678]",
                ),
            ),
            (
                spec(&["1234"], &[], &[]),
                Some(vec![st("1234", false)]),
                "Succeeded",
                ("False", POD_COMPLETED, ""),
            ),
        ];
        for (i, (spec, statuses, phase, (s, r, m))) in cases.into_iter().enumerate() {
            let c = containers_ready(&spec, statuses.as_deref(), phase);
            assert_eq!(c.type_, CONTAINERS_READY, "case {i}");
            expect(&c, s, r, m);
        }
    }

    #[test]
    fn test_generate_pod_ready_condition() {
        let cases: Vec<ReadyCase> = vec![
            (
                spec(&[], &[], &[]),
                vec![],
                None,
                "Running",
                ("False", UNKNOWN_CONTAINER_STATUSES, ""),
            ),
            (spec(&[], &[], &[]), vec![], Some(vec![]), "Running", ("True", "", "")),
            (
                spec(&["1234"], &[], &[]),
                vec![],
                Some(vec![]),
                "Running",
                ("False", CONTAINERS_NOT_READY, "containers with unknown status: [1234]"),
            ),
            (
                spec(&["1234", "5678"], &[], &[]),
                vec![],
                Some(vec![st("1234", true), st("5678", false)]),
                "Running",
                ("False", CONTAINERS_NOT_READY, "containers with unready status: [5678]"),
            ),
            (
                spec(&["1234"], &[], &[]),
                vec![],
                Some(vec![st("1234", false)]),
                "Succeeded",
                ("False", POD_COMPLETED, ""),
            ),
            (
                spec(&[], &[], &["gate1"]),
                vec![],
                Some(vec![]),
                "Running",
                (
                    "False",
                    READINESS_GATES_NOT_READY,
                    "corresponding condition of pod readiness gate \"gate1\" does not exist.",
                ),
            ),
            (
                spec(&[], &[], &["gate1"]),
                vec![cond("gate1", "False")],
                Some(vec![]),
                "Running",
                (
                    "False",
                    READINESS_GATES_NOT_READY,
                    "the status of pod readiness gate \"gate1\" is not \"True\", but False",
                ),
            ),
            (
                spec(&[], &[], &["gate1"]),
                vec![cond("gate1", "True")],
                Some(vec![]),
                "Running",
                ("True", "", ""),
            ),
            (
                spec(&[], &[], &["gate1", "gate2"]),
                vec![cond("gate1", "True")],
                Some(vec![]),
                "Running",
                (
                    "False",
                    READINESS_GATES_NOT_READY,
                    "corresponding condition of pod readiness gate \"gate2\" does not exist.",
                ),
            ),
            (
                spec(&[], &[], &["gate1", "gate2"]),
                vec![cond("gate1", "True"), cond("gate2", "False")],
                Some(vec![]),
                "Running",
                (
                    "False",
                    READINESS_GATES_NOT_READY,
                    "the status of pod readiness gate \"gate2\" is not \"True\", but False",
                ),
            ),
            (
                spec(&[], &[], &["gate1", "gate2"]),
                vec![cond("gate2", "Unknown")],
                Some(vec![]),
                "Running",
                (
                    "False",
                    READINESS_GATES_NOT_READY,
                    "corresponding condition of pod readiness gate \"gate1\" does not exist., the status of pod \
                     readiness gate \"gate2\" is not \"True\", but Unknown",
                ),
            ),
            (
                spec(&["1234"], &[], &["gate1"]),
                vec![cond("gate1", "True")],
                Some(vec![st("1234", true)]),
                "Running",
                ("True", "", ""),
            ),
            (
                spec(&["1234"], &[], &["gate1"]),
                vec![cond("gate1", "True")],
                Some(vec![st("1234", false)]),
                "Running",
                ("False", CONTAINERS_NOT_READY, "containers with unready status: [1234]"),
            ),
        ];
        for (i, (spec, conds, statuses, phase, (s, r, m))) in cases.into_iter().enumerate() {
            let c = pod_ready(&spec, &conds, statuses.as_deref(), phase);
            assert_eq!(c.type_, POD_READY, "case {i}");
            expect(&c, s, r, m);
        }
    }

    #[test]
    fn test_generate_pod_initialized_condition() {
        let cases: Vec<Case> = vec![
            (spec(&["a"], &[], &[]), None, "Running", ("True", "", "")),
            (
                spec(&["a"], &["1234"], &[]),
                None,
                "Running",
                ("False", UNKNOWN_CONTAINER_STATUSES, ""),
            ),
            (
                spec(&["a"], &["1234", "5678"], &[]),
                Some(vec![st("1234", true), st("5678", true)]),
                "Running",
                ("True", "", ""),
            ),
            (
                spec(&["a"], &["1234", "5678"], &[]),
                Some(vec![st("1234", true)]),
                "Pending",
                (
                    "False",
                    CONTAINERS_NOT_INITIALIZED,
                    "containers with unknown status: [5678]",
                ),
            ),
            (
                spec(&["a"], &["1234", "5678"], &[]),
                Some(vec![st("1234", true), st("5678", false)]),
                "Pending",
                (
                    "False",
                    CONTAINERS_NOT_INITIALIZED,
                    "containers with incomplete status: [5678]",
                ),
            ),
            (
                spec(&["a"], &["1234"], &[]),
                Some(vec![st("1234", false)]),
                "Succeeded",
                ("True", POD_COMPLETED, ""),
            ),
        ];
        for (i, (spec, statuses, phase, (s, r, m))) in cases.into_iter().enumerate() {
            let c = pod_initialized(&spec, statuses.as_deref(), phase);
            assert_eq!(c.type_, POD_INITIALIZED, "case {i}");
            expect(&c, s, r, m);
        }
    }

    #[test]
    fn ready_to_start_containers_follows_the_newest_sandbox() {
        let sb = |id: &str, ready: bool| cri::PodSandboxStatus {
            id: id.into(),
            state: if ready {
                cri::PodSandboxState::SandboxReady as i32
            } else {
                cri::PodSandboxState::SandboxNotready as i32
            },
            ..Default::default()
        };
        let mut rt = RuntimePodStatus::default();
        assert_eq!(pod_ready_to_start_containers(&rt).status, "False");
        rt.sandbox_statuses = vec![sb("new", true), sb("old", false)];
        assert_eq!(pod_ready_to_start_containers(&rt).status, "True");
        rt.sandbox_statuses = vec![sb("new", false), sb("old", true)];
        assert_eq!(pod_ready_to_start_containers(&rt).status, "False");
        assert!(is_kubelet_owned(POD_READY_TO_START_CONTAINERS));
        assert!(!is_kubelet_owned("DisruptionTarget"));
    }

    #[test]
    fn sidecars_count_for_readiness_and_initialization() {
        let mut spec = spec(&["web"], &["setup", "proxy"], &[]);
        if let Some(init) = spec.init_containers.as_mut() {
            init[1].restart_policy = Some("Always".into());
        }
        let mut setup = st("setup", true);
        setup.started = Some(false);
        let mut proxy = st("proxy", false);
        proxy.started = Some(true);
        let web = st("web", true);
        let all = vec![setup.clone(), proxy.clone(), web.clone()];
        expect(&pod_initialized(&spec, Some(&all), "Running"), "True", "", "");
        expect(
            &containers_ready(&spec, Some(&all), "Running"),
            "False",
            CONTAINERS_NOT_READY,
            "containers with unready status: [proxy]",
        );
        // A sidecar that has not started holds initialization until a regular container runs.
        proxy.started = Some(false);
        let all = vec![setup, proxy, web];
        expect(
            &pod_initialized(&spec, Some(&all), "Pending"),
            "False",
            CONTAINERS_NOT_INITIALIZED,
            "containers with incomplete status: [proxy]",
        );
    }
}
