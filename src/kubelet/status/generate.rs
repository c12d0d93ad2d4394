//! API pod status generation (`generateAPIPodStatus`, `convertToAPIContainerStatuses`, the
//! prober's `UpdatePodStatus`), §2.6: pure functions from the runtime's view of a pod, the
//! previous API status and the reason cache to the `PodStatus` users see.

use std::collections::HashMap;
use std::net::IpAddr;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    HostIP, Pod, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions;
use super::phase::{self, get_phase, is_restartable_init_container, is_terminal};
use super::reasoncache::ReasonCache;
use crate::genericruntime::types::{
    ContainerState as RtState, ContainerStatus as RtContainerStatus, PodStatus as RuntimePodStatus,
};
use crate::podspec::resources;

/// Default waiting reasons.
pub const CONTAINER_CREATING: &str = "ContainerCreating";
pub const POD_INITIALIZING: &str = "PodInitializing";
/// Reason of a container whose state the runtime lost.
pub const CONTAINER_STATUS_UNKNOWN: &str = "ContainerStatusUnknown";
pub const MSG_UNKNOWN_TERMINATED: &str = "The container could not be located when the pod was terminated";
pub const MSG_UNKNOWN_DELETED: &str =
    "The container could not be located when the pod was deleted.  The container used to be Running";
/// Total bytes of termination messages in one pod status (`MaxPodTerminationMessageLogLength`).
pub const MAX_POD_TERMINATION_MESSAGE_LOG_LENGTH: usize = 1024 * 12;

/// Probe results by container ID (`<type>://<id>`). `None` means no result yet.
pub trait ProbeResults: Send + Sync {
    fn readiness(&self, container_id: &str) -> Option<bool>;
    fn startup(&self, container_id: &str) -> Option<bool>;
}

/// No probe results at all (before the prober exists, and in tests).
pub struct NoProbeResults;
impl ProbeResults for NoProbeResults {
    fn readiness(&self, _: &str) -> Option<bool> {
        None
    }
    fn startup(&self, _: &str) -> Option<bool> {
        None
    }
}

/// Everything status generation reads.
pub struct GenerateInput<'a> {
    pub pod: &'a Pod,
    /// The runtime's view of the pod.
    pub runtime: &'a RuntimePodStatus,
    /// The status manager's cached status, if any; `None` falls back to `pod.status`.
    pub previous: Option<&'a PodStatus>,
    pub reasons: &'a ReasonCache,
    pub probes: &'a dyn ProbeResults,
    /// The node's IPs, primary first (hostIP, hostIPs, hostNetwork pod IPs).
    pub node_ips: &'a [String],
    pub now: Timestamp,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

/// Second precision, as the API stores it (`Rfc3339Copy`).
pub fn truncate_to_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// `ShouldContainerBeRestarted` (pkg/kubelet/container/helpers.go).
pub fn should_container_be_restarted(name: &str, pod: &Pod, runtime: &RuntimePodStatus) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(s) = runtime.find_container_status(name) else {
        // Never started (or all instances were garbage collected).
        return true;
    };
    match s.state {
        RtState::Running => false,
        RtState::Unknown | RtState::Created => true,
        RtState::Exited => match pod.spec.as_ref().map(phase::restart_policy).unwrap_or("Always") {
            "Never" => false,
            "OnFailure" => s.exit_code != 0,
            _ => true,
        },
    }
}

/// First IP of the node's family, then the first of the other family (`sortPodIPs`).
pub fn sort_pod_ips(pod_ips: &[String], node_ips: &[String]) -> Vec<String> {
    let is_v6 = |s: &str| s.parse::<IpAddr>().ok().map(|ip| ip.is_ipv6());
    let primary_v6 = node_ips.first().and_then(|ip| is_v6(ip)).unwrap_or(false);
    let mut out = Vec::with_capacity(2);
    for family in [primary_v6, !primary_v6] {
        if let Some(ip) = pod_ips.iter().find(|ip| is_v6(ip) == Some(family)) {
            out.push(ip.clone());
        }
    }
    out
}

/// One runtime instance as an API status (`convertContainerStatus`).
fn convert_container_status(cs: &RtContainerStatus, old: Option<&ContainerStatus>) -> ContainerStatus {
    let cid = cs.container_id();
    let mut status = ContainerStatus {
        name: cs.name.clone(),
        restart_count: cs.restart_count,
        image: cs.image.clone(),
        image_id: cs.image_ref.clone(),
        container_id: Some(cid.clone()),
        ..Default::default()
    };
    let old_running = old.and_then(|o| o.state.as_ref()).is_some_and(|s| s.running.is_some());
    let state = match cs.state {
        RtState::Running => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: cs.started_at.map(time),
            }),
            ..Default::default()
        },
        // A created-but-never-started container shows as terminated with the CRI reason (§2.6,
        // Appendix A.9), as in the kubelet version keel follows.
        RtState::Exited | RtState::Created => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: cs.exit_code,
                reason: non_empty(&cs.reason),
                message: non_empty(&cs.message),
                started_at: cs.started_at.map(time),
                finished_at: cs.finished_at.map(time),
                container_id: Some(cid),
                ..Default::default()
            }),
            ..Default::default()
        },
        RtState::Unknown if old_running => {
            // It ran and is gone: "terminated", not "never ran", so run-once pods do not rerun.
            status.restart_count = old.map(|o| o.restart_count).unwrap_or(0) + 1;
            unknown_terminated(MSG_UNKNOWN_TERMINATED)
        }
        RtState::Unknown => ContainerState {
            waiting: Some(ContainerStateWaiting::default()),
            ..Default::default()
        },
    };
    status.state = Some(state);
    status
}

fn unknown_terminated(message: &str) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: 137,
            reason: Some(CONTAINER_STATUS_UNKNOWN.into()),
            message: Some(message.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: non_empty(reason),
            message: non_empty(message),
        }),
        ..Default::default()
    }
}

/// A container of any kind, as status generation needs it.
#[derive(Clone, Copy)]
pub(crate) struct SpecContainer<'a> {
    pub name: &'a str,
    pub image: &'a str,
}

/// Which list is being converted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Regular,
    Init,
    Ephemeral,
}

/// `convertToAPIContainerStatuses` for one list of containers.
pub(crate) fn convert_to_api_container_statuses(
    pod: &Pod,
    runtime: &RuntimePodStatus,
    previous: &[ContainerStatus],
    containers: &[SpecContainer<'_>],
    has_init_containers: bool,
    kind: Kind,
    reasons: &ReasonCache,
) -> Vec<ContainerStatus> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let old: HashMap<&str, &ContainerStatus> = previous.iter().map(|s| (s.name.as_str(), s)).collect();
    let default_reason = if has_init_containers {
        POD_INITIALIZING
    } else {
        CONTAINER_CREATING
    };
    let is_default_waiting = |s: &ContainerStatus| {
        s.state
            .as_ref()
            .and_then(|st| st.waiting.as_ref())
            .is_some_and(|w| w.reason.as_deref() == Some(default_reason))
    };

    // 1. Defaults: waiting, or the previous terminated status; keep restartCount and lastState.
    let mut statuses: HashMap<&str, ContainerStatus> = HashMap::new();
    for c in containers {
        let mut s = ContainerStatus {
            name: c.name.to_string(),
            image: c.image.to_string(),
            state: Some(waiting(default_reason, "")),
            ..Default::default()
        };
        if let Some(o) = old.get(c.name) {
            if o.state.as_ref().is_some_and(|st| st.terminated.is_some()) {
                s = (*o).clone();
            } else {
                s.restart_count = o.restart_count;
                s.last_state = o.last_state.clone();
            }
        }
        statuses.insert(c.name, s);
    }

    // 2. A container that was running and has vanished from the runtime did terminate.
    for c in containers {
        if runtime.find_container_status(c.name).is_some() {
            continue;
        }
        let Some(o) = old.get(c.name) else { continue };
        let o_state = o.state.clone().unwrap_or_default();
        if o_state.terminated.is_some() || o_state.running.is_none() {
            continue;
        }
        let Some(s) = statuses.get_mut(c.name) else { continue };
        if !is_default_waiting(s) || s.last_state.as_ref().is_some_and(|l| l.terminated.is_some()) {
            continue;
        }
        s.last_state = Some(unknown_terminated(MSG_UNKNOWN_DELETED));
        if pod.metadata.deletion_timestamp.is_none() {
            s.restart_count += 1;
        }
    }

    // 3. Newest instance = state, second newest = lastState.
    let mut instances: Vec<&RtContainerStatus> = runtime.container_statuses.iter().collect();
    // Stable, so equal creation times keep the runtime's (newest-first) order.
    instances.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for cs in instances {
        let Some(name) = containers.iter().map(|c| c.name).find(|n| *n == cs.name) else {
            continue;
        };
        let count = seen.entry(name).or_default();
        if *count >= 2 {
            continue;
        }
        let converted = convert_container_status(cs, old.get(name).copied());
        if *count == 0 {
            statuses.insert(name, converted);
        } else if let Some(s) = statuses.get_mut(name) {
            s.last_state = converted.state;
        }
        *count += 1;
    }

    // 4. Containers that failed to start show the cached reason as a waiting state.
    for c in containers {
        if kind == Kind::Init {
            // An init container that exited 0 is never restarted.
            if runtime
                .find_container_status(c.name)
                .is_some_and(|s| s.state == RtState::Exited && s.exit_code == 0)
            {
                continue;
            }
        }
        if !should_container_be_restarted(c.name, pod, runtime) {
            continue;
        }
        let Some(info) = reasons.get(uid, c.name) else { continue };
        let Some(s) = statuses.get_mut(c.name) else { continue };
        if s.state.as_ref().is_some_and(|st| st.terminated.is_some()) {
            s.last_state = s.state.take();
        }
        s.state = Some(waiting(info.reason.as_str(), &info.message));
    }

    // 5. Init statuses in spec order, the others by name.
    let mut out: Vec<ContainerStatus> = containers.iter().filter_map(|c| statuses.remove(c.name)).collect();
    if kind != Kind::Init {
        out.sort_by(|a, b| a.name.cmp(&b.name));
    }
    out
}

/// Sets `ready`/`started` like the prober's `UpdatePodStatus`: started = running and the
/// startup probe (if any) succeeded; ready (evaluated once started) = running and the readiness
/// probe (if any) succeeded. Regular init containers are ready once they exited 0; sidecars
/// follow the regular rules.
fn apply_probe_results(spec: &PodSpec, status: &mut PodStatus, probes: &dyn ProbeResults) {
    let probe_state = |s: &ContainerStatus, c: Option<&Container>| {
        let running = s.state.as_ref().is_some_and(|st| st.running.is_some());
        let cid = s.container_id.clone().unwrap_or_default();
        let started = running
            && match c.and_then(|c| c.startup_probe.as_ref()) {
                Some(_) => probes.startup(&cid) == Some(true),
                None => true,
            };
        let ready = started
            && match c.and_then(|c| c.readiness_probe.as_ref()) {
                Some(_) => probes.readiness(&cid) == Some(true),
                None => true,
            };
        (started, ready)
    };
    for s in status.container_statuses.iter_mut().flatten() {
        let c = spec.containers.iter().find(|c| c.name == s.name);
        let (started, ready) = probe_state(s, c);
        s.started = Some(started);
        s.ready = ready;
    }
    for s in status.init_container_statuses.iter_mut().flatten() {
        let c = spec.init_containers.iter().flatten().find(|c| c.name == s.name);
        let (started, ready) = probe_state(s, c);
        s.started = Some(started);
        s.ready = if c.is_some_and(is_restartable_init_container) {
            ready
        } else {
            s.state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0)
        };
    }
}

/// `lastTransitionTime` of each kubelet-owned condition: kept from `old` when the status did not
/// change, else `now` (`updateLastTransitionTime`).
pub fn set_transition_times(status: &mut PodStatus, old: &PodStatus, now: Timestamp) {
    for c in status.conditions.iter_mut().flatten() {
        if !conditions::is_kubelet_owned(&c.type_) {
            continue;
        }
        let prev = old.conditions.iter().flatten().find(|o| o.type_ == c.type_);
        c.last_transition_time = match prev {
            Some(p) if p.status == c.status => p.last_transition_time.clone().or_else(|| Some(time(now))),
            _ => Some(time(now)),
        };
    }
}

/// `startTime` never changes once set; it is set to `now` the first time.
pub fn set_start_time(status: &mut PodStatus, old: &PodStatus, now: Timestamp) {
    if let Some(t) = &old.start_time {
        status.start_time = Some(t.clone());
    } else if status.start_time.is_none() {
        status.start_time = Some(time(now));
    }
}

/// Truncates a string to at most `max` bytes on a char boundary (the kubelet cuts bytes; a Rust
/// string must stay valid UTF-8, so a split character is dropped whole).
fn truncate_bytes(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

/// `normalizeStatus`: second-precision timestamps, termination messages cut to their share of
/// 12 KiB, regular statuses sorted by name and init statuses in spec order, so two statuses
/// compare equal exactly when the API would store the same thing.
pub fn normalize_status(pod: &Pod, status: &mut PodStatus) {
    let spec = pod.spec.clone().unwrap_or_default();
    let n = spec.containers.len()
        + spec.init_containers.as_ref().map_or(0, Vec::len)
        + spec.ephemeral_containers.as_ref().map_or(0, Vec::len);
    let per_status = MAX_POD_TERMINATION_MESSAGE_LOG_LENGTH
        .checked_div(n)
        .unwrap_or(MAX_POD_TERMINATION_MESSAGE_LOG_LENGTH);
    let norm = |t: &mut Option<Time>| {
        if let Some(Time(ts)) = t {
            *ts = truncate_to_second(*ts);
        }
    };
    let norm_state = |st: &mut Option<ContainerState>| {
        let Some(st) = st else { return };
        if let Some(r) = &mut st.running {
            norm(&mut r.started_at);
        }
        if let Some(t) = &mut st.terminated {
            norm(&mut t.started_at);
            norm(&mut t.finished_at);
            if let Some(m) = &mut t.message {
                truncate_bytes(m, per_status);
            }
        }
    };
    norm(&mut status.start_time);
    for c in status.conditions.iter_mut().flatten() {
        norm(&mut c.last_probe_time);
        norm(&mut c.last_transition_time);
    }
    for list in [
        &mut status.container_statuses,
        &mut status.init_container_statuses,
        &mut status.ephemeral_container_statuses,
    ] {
        for s in list.iter_mut().flatten() {
            norm_state(&mut s.state);
            norm_state(&mut s.last_state);
        }
    }
    if let Some(l) = &mut status.container_statuses {
        l.sort_by(|a, b| a.name.cmp(&b.name));
    }
    if let Some(l) = &mut status.ephemeral_container_statuses {
        l.sort_by(|a, b| a.name.cmp(&b.name));
    }
    if let Some(l) = &mut status.init_container_statuses {
        let order = |name: &str| {
            spec.init_containers
                .iter()
                .flatten()
                .position(|c| c.name == name)
                .unwrap_or(usize::MAX)
        };
        l.sort_by_key(|s| order(&s.name));
    }
}

/// `generateAPIPodStatus`: the API status for a pod from its runtime state.
pub fn generate_api_pod_status(input: &GenerateInput<'_>) -> PodStatus {
    let pod = input.pod;
    let spec = pod.spec.clone().unwrap_or_default();
    let api_status = pod.status.clone().unwrap_or_default();
    let old = input.previous.cloned().unwrap_or_else(|| api_status.clone());

    let mut s = PodStatus::default();

    // Pod IPs: the node's family first.
    let ips = sort_pod_ips(&input.runtime.ips, input.node_ips);
    if !ips.is_empty() {
        s.pod_ip = ips.first().cloned();
        s.pod_ips = Some(ips.into_iter().map(|ip| PodIP { ip }).collect());
    }
    s.qos_class = Some(resources::qos_class(&spec).to_string());

    let has_init = spec.init_containers.as_ref().is_some_and(|v| !v.is_empty());
    let regular: Vec<SpecContainer<'_>> = spec
        .containers
        .iter()
        .map(|c| SpecContainer {
            name: &c.name,
            image: c.image.as_deref().unwrap_or_default(),
        })
        .collect();
    s.container_statuses = Some(convert_to_api_container_statuses(
        pod,
        input.runtime,
        old.container_statuses.as_deref().unwrap_or_default(),
        &regular,
        has_init,
        Kind::Regular,
        input.reasons,
    ));
    if has_init {
        let init: Vec<SpecContainer<'_>> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| SpecContainer {
                name: &c.name,
                image: c.image.as_deref().unwrap_or_default(),
            })
            .collect();
        s.init_container_statuses = Some(convert_to_api_container_statuses(
            pod,
            input.runtime,
            old.init_container_statuses.as_deref().unwrap_or_default(),
            &init,
            has_init,
            Kind::Init,
            input.reasons,
        ));
    }
    if let Some(eph) = spec.ephemeral_containers.as_ref().filter(|v| !v.is_empty()) {
        let eph: Vec<SpecContainer<'_>> = eph
            .iter()
            .map(|c| SpecContainer {
                name: &c.name,
                image: c.image.as_deref().unwrap_or_default(),
            })
            .collect();
        s.ephemeral_container_statuses = Some(convert_to_api_container_statuses(
            pod,
            input.runtime,
            old.ephemeral_container_statuses.as_deref().unwrap_or_default(),
            &eph,
            has_init,
            Kind::Ephemeral,
            input.reasons,
        ));
    }

    // Started/ready first: the phase reads whether sidecars have started.
    apply_probe_results(&spec, &mut s, input.probes);

    // Phase, with terminal stickiness (a terminal phase never goes back).
    let all: Vec<ContainerStatus> = s
        .container_statuses
        .iter()
        .flatten()
        .chain(s.init_container_statuses.iter().flatten())
        .cloned()
        .collect();
    let mut phase = get_phase(&spec, &all).to_string();
    if !is_terminal(Some(&phase)) {
        if is_terminal(old.phase.as_deref()) {
            phase = old.phase.clone().unwrap_or_default();
        } else if is_terminal(api_status.phase.as_deref()) {
            phase = api_status.phase.clone().unwrap_or_default();
        }
    }
    if is_terminal(api_status.phase.as_deref()) && api_status.phase.as_deref() != Some(phase.as_str()) {
        tracing::warn!(
            pod = %pod.metadata.name.as_deref().unwrap_or_default(),
            from = ?api_status.phase,
            to = %phase,
            "pod attempted illegal phase transition; keeping the API phase"
        );
        phase = api_status.phase.clone().unwrap_or_default();
    }
    if old.phase.as_deref() == Some(phase.as_str()) {
        // Reason and message belong to the phase (e.g. an admission rejection): carry them.
        s.reason = old
            .reason
            .clone()
            .filter(|r| !r.is_empty())
            .or(api_status.reason.clone());
        s.message = old
            .message
            .clone()
            .filter(|m| !m.is_empty())
            .or(api_status.message.clone());
    }
    s.phase = Some(phase.clone());

    // Conditions: everyone else's first, then the kubelet's.
    let mut conds: Vec<PodCondition> = api_status
        .conditions
        .iter()
        .flatten()
        .filter(|c| !conditions::is_kubelet_owned(&c.type_))
        .cloned()
        .collect();
    conds.push(conditions::pod_ready_to_start_containers(input.runtime));
    conds.push(conditions::pod_initialized(
        &spec,
        s.init_container_statuses.as_deref(),
        &phase,
    ));
    let ready = conditions::pod_ready(&spec, &conds, s.container_statuses.as_deref(), &phase);
    conds.push(ready);
    conds.push(conditions::containers_ready(
        &spec,
        s.container_statuses.as_deref(),
        &phase,
    ));
    conds.push(conditions::pod_scheduled());
    s.conditions = Some(conds);

    // Host IPs; hostNetwork pods inherit the node IPs.
    if let Some(primary) = input.node_ips.first() {
        s.host_ip = Some(primary.clone());
        s.host_ips = Some(
            input
                .node_ips
                .iter()
                .take(2)
                .map(|ip| HostIP { ip: ip.clone() })
                .collect(),
        );
        if spec.host_network == Some(true) {
            if s.pod_ip.is_none() {
                s.pod_ip = Some(primary.clone());
                s.pod_ips = Some(vec![PodIP { ip: primary.clone() }]);
            }
            if let (Some(second), Some(ips)) = (input.node_ips.get(1), s.pod_ips.as_mut()) {
                if ips.len() == 1 {
                    ips.push(PodIP { ip: second.clone() });
                }
            }
        }
    }

    set_transition_times(&mut s, &old, input.now);
    set_start_time(&mut s, &old, input.now);
    normalize_status(pod, &mut s);
    s
}

#[cfg(test)]
mod tests;
