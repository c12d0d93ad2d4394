//! Node registration and status (§3.1, §3.2).
//!
//! [`NodeStatusReporter::run`] registers the Node (POST, retried 100 ms doubling to 7 s; on
//! AlreadyExists it adopts the existing Node: default labels and the attach-detach annotation
//! are reconciled), then every `nodeStatusUpdateFrequency` (±4 %) computes the status with the
//! setters and PATCHes `nodes/<name>/status` (strategic merge) only when something besides
//! heartbeat times changed or `nodeStatusReportFrequency` passed. The latest Node is published
//! on a watch channel for admission, mirror pods and the lease. API outages are logged once and
//! retried; the loop never exits before shutdown.
//!
//! The setters are pure ([`compute_status`]) so they are unit-tested without an API server.
//!
//! keel's choices: kubeletVersion is [`KUBELET_VERSION`] (`v1.33.0-keel.<crate version>`);
//! the Starting event says "Starting keel.". The pressure conditions are the eviction
//! manager's ([`crate::kubelet::eviction`]), as the kubelet's setters read them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::{go_duration, Clock};
use crate::genericruntime::{cri, EventType, Runtime};
use crate::kubelet::config::Config;
use crate::kubelet::events::Recorder;
use crate::kubelet::eviction::Pressure;
use crate::kubelet::nodeinfo::{self, HostFacts, NodeInfoError};
use crate::kubelet::RuntimeHealth;
use crate::podspec::resources::parse_milli;

/// The version keel reports as `nodeInfo.kubeletVersion` (the API level it implements, tagged
/// as keel).
pub const KUBELET_VERSION: &str = concat!("v1.33.0-keel.", env!("CARGO_PKG_VERSION"));
/// `nodeStatusUpdateRetry`.
pub const NODE_STATUS_UPDATE_RETRY: usize = 5;
/// Jitter of the status update period.
pub const STATUS_JITTER: f64 = 0.04;
/// Registration back-off.
pub const REGISTER_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
pub const REGISTER_BACKOFF_MAX: Duration = Duration::from_secs(7);
/// PLEG is unhealthy when it has not relisted for this long.
pub const PLEG_RELIST_THRESHOLD: Duration = Duration::from_secs(180);
/// The runtime is "down" when Status has not succeeded for this long.
pub const RUNTIME_SYNC_THRESHOLD: Duration = Duration::from_secs(30);
/// Most images reported in node status, and most names per image.
pub const MAX_IMAGES: usize = 50;
pub const MAX_NAMES_PER_IMAGE: usize = 5;

pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
pub const LABEL_OS: &str = "kubernetes.io/os";
pub const LABEL_ARCH: &str = "kubernetes.io/arch";
pub const LABEL_BETA_OS: &str = "beta.kubernetes.io/os";
pub const LABEL_BETA_ARCH: &str = "beta.kubernetes.io/arch";
pub const ANNOTATION_CMAD: &str = "volumes.kubernetes.io/controller-managed-attach-detach";

/// A failure while registering or updating the Node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("reading host facts: {0}")]
    HostFacts(#[from] NodeInfoError),
    #[error("registering node {node}: {source}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("getting node {node}: {source}")]
    Get {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("reconciling existing node {node}: {source}")]
    Reconcile {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("patching status of node {node}: {source}")]
    PatchStatus {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("encoding the status patch: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A node event a setter wants recorded (after the status is written).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeEvent {
    pub type_: EventType,
    pub reason: String,
    pub message: String,
}

/// Everything the setters read.
#[derive(Clone, Debug)]
pub struct StatusInputs<'a> {
    pub cfg: &'a Config,
    pub facts: &'a HostFacts,
    /// None when `--node-ip` failed validation (only the Hostname address is reported).
    pub node_ip: Option<IpAddr>,
    /// The eviction manager's pressure conditions; None keeps the conditions as they are.
    pub pressure: Option<Pressure>,
    pub health: &'a RuntimeHealth,
    /// None when ListImages failed (the previous list is kept).
    pub images: Option<&'a [cri::Image]>,
    /// Wall-clock now, for condition times.
    pub now: Timestamp,
    /// Virtual time since the runtime last answered a Status call / PLEG last relisted (None:
    /// never).
    pub since_runtime_ok: Option<Duration>,
    pub since_relist: Option<Duration>,
}

/// `resource.Quantity` text for cpu milli-units ("4", "3900m").
pub fn format_cpu(milli: i128) -> String {
    if milli % 1000 == 0 {
        format!("{}", milli / 1000)
    } else {
        format!("{milli}m")
    }
}

/// Canonical text for a byte count: a binary suffix when it is a multiple of 1024, else the
/// decimal canonical form (as the API server would rewrite it).
pub fn format_bytes(v: i128) -> String {
    if v > 0 && v % 1024 == 0 {
        let mut n = v;
        let mut i = 0;
        const SUF: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
        while n % 1024 == 0 && i < SUF.len() - 1 {
            n /= 1024;
            i += 1;
        }
        return format!("{n}{}", SUF[i]);
    }
    let mut n = v;
    let mut i = 0;
    const DEC: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    while n != 0 && n % 1000 == 0 && i < DEC.len() - 1 {
        n /= 1000;
        i += 1;
    }
    format!("{n}{}", DEC[i])
}

/// A threshold from `evictionHard` in units of the resource: a quantity, or a percentage of
/// `capacity` (truncated like `GetThresholdQuantity`).
pub fn threshold_value(spec: &str, capacity: i128) -> Option<i128> {
    match spec.strip_suffix('%') {
        Some(p) => {
            let p: f64 = p.trim().parse().ok()?;
            Some((capacity as f64 * p / 100.0) as i128)
        }
        None => parse_milli(spec).ok().map(|m| (m + 999).div_euclid(1000)),
    }
}

fn reserved_milli(cfg: &Config, name: &str) -> i128 {
    [&cfg.system_reserved, &cfg.kube_reserved]
        .iter()
        .filter_map(|m| m.get(name))
        .filter_map(|q| parse_milli(q).ok())
        .sum()
}

/// Capacity and allocatable (§3.2): allocatable = capacity − reserved − hard eviction threshold
/// (memory and ephemeral storage), floored at zero.
pub fn capacity_and_allocatable(
    cfg: &Config,
    facts: &HostFacts,
) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let cpu_milli = i128::from(facts.cpus) * 1000;
    let mem = i128::from(facts.memory_bytes);
    let storage = i128::from(facts.ephemeral_storage_bytes);
    let pods = if cfg.pods_per_core > 0 {
        (i128::from(facts.cpus) * i128::from(cfg.pods_per_core)).min(i128::from(cfg.max_pods))
    } else {
        i128::from(cfg.max_pods)
    };
    let mut cap = BTreeMap::new();
    cap.insert("cpu".to_string(), Quantity(format_cpu(cpu_milli)));
    cap.insert("memory".to_string(), Quantity(format_bytes(mem)));
    cap.insert("ephemeral-storage".to_string(), Quantity(format_bytes(storage)));
    cap.insert("pods".to_string(), Quantity(pods.to_string()));
    let mut hugepages_total: i128 = 0;
    for (size, count) in &facts.hugepages {
        let bytes = i128::from(*size) * i128::from(*count);
        hugepages_total += bytes;
        cap.insert(
            format!("hugepages-{}", format_bytes(i128::from(*size))),
            Quantity(format_bytes(bytes)),
        );
    }

    let evict = |signal: &str, capacity: i128| -> i128 {
        cfg.eviction_hard
            .get(signal)
            .and_then(|s| threshold_value(s, capacity))
            .unwrap_or(0)
    };
    let mut alloc = BTreeMap::new();
    let cpu_alloc = (cpu_milli - reserved_milli(cfg, "cpu")).max(0);
    alloc.insert("cpu".to_string(), Quantity(format_cpu(cpu_alloc)));
    // Memory preallocated as huge pages is not allocatable as ordinary memory.
    let mem_alloc =
        (mem - reserved_milli(cfg, "memory").div_euclid(1000) - evict("memory.available", mem) - hugepages_total)
            .max(0);
    alloc.insert("memory".to_string(), Quantity(format_bytes(mem_alloc)));
    let st_alloc =
        (storage - reserved_milli(cfg, "ephemeral-storage").div_euclid(1000) - evict("nodefs.available", storage))
            .max(0);
    alloc.insert("ephemeral-storage".to_string(), Quantity(format_bytes(st_alloc)));
    let pods_alloc = (pods - reserved_milli(cfg, "pods").div_euclid(1000)).max(0);
    alloc.insert("pods".to_string(), Quantity(pods_alloc.to_string()));
    for (size, count) in &facts.hugepages {
        let name = format!("hugepages-{}", format_bytes(i128::from(*size)));
        let bytes = i128::from(*size) * i128::from(*count);
        let a = (bytes - reserved_milli(cfg, &name).div_euclid(1000)).max(0);
        alloc.insert(name, Quantity(format_bytes(a)));
    }
    (cap, alloc)
}

/// The Ready condition's errors (`runtimeErrors`, `networkErrors`, missing capacity), in the
/// kubelet's order.
pub fn readiness_errors(inputs: &StatusInputs<'_>, capacity: &BTreeMap<String, Quantity>) -> Vec<String> {
    let h = inputs.health;
    let mut errs = Vec::new();
    match inputs.since_runtime_ok {
        None => errs.push("container runtime status check may not have completed yet".to_string()),
        Some(d) if d >= RUNTIME_SYNC_THRESHOLD => errs.push("container runtime is down".to_string()),
        Some(_) => {}
    }
    match inputs.since_relist {
        None => errs.push("PLEG is not healthy: pleg has yet to be successful".to_string()),
        Some(d) if d > PLEG_RELIST_THRESHOLD => errs.push(format!(
            "PLEG is not healthy: pleg was last seen active {} ago; threshold is {}",
            go_duration(d),
            go_duration(PLEG_RELIST_THRESHOLD)
        )),
        Some(_) => {}
    }
    if inputs.since_runtime_ok.is_some() && !h.runtime_ready {
        let detail = h
            .runtime_error
            .clone()
            .unwrap_or_else(|| "RuntimeReady=false reason: message:".into());
        errs.push(prefixed("container runtime not ready: ", detail));
    }
    if inputs.since_runtime_ok.is_none() {
        errs.push("network state unknown".to_string());
    } else if !h.network_ready {
        let detail = h
            .network_error
            .clone()
            .unwrap_or_else(|| "NetworkReady=false reason: message:".into());
        errs.push(prefixed("container runtime network not ready: ", detail));
    }
    let missing: Vec<&str> = ["cpu", "memory", "pods", "ephemeral-storage"]
        .into_iter()
        .filter(|r| !capacity.contains_key(*r))
        .collect();
    if !missing.is_empty() {
        errs.push(format!("missing node capacity for resources: {}", missing.join(", ")));
    }
    let mut seen = Vec::new();
    errs.retain(|e| {
        let fresh = !seen.contains(e);
        seen.push(e.clone());
        fresh
    });
    errs
}

/// The runtime side may report its error already in the kubelet's words; don't say it twice.
fn prefixed(prefix: &str, detail: String) -> String {
    if detail.starts_with(prefix.trim_end_matches(": ")) {
        detail
    } else {
        format!("{prefix}{detail}")
    }
}

/// `errors.NewAggregate(errs).Error()`.
fn aggregate(errs: &[String]) -> String {
    match errs {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

fn condition<'a>(conds: &'a mut Vec<NodeCondition>, type_: &str, now: &Time) -> (&'a mut NodeCondition, bool) {
    let idx = match conds.iter().position(|c| c.type_ == type_) {
        Some(i) => (i, false),
        None => {
            conds.push(NodeCondition {
                type_: type_.to_string(),
                status: "Unknown".into(),
                last_transition_time: Some(now.clone()),
                ..Default::default()
            });
            (conds.len() - 1, true)
        }
    };
    (&mut conds[idx.0], idx.1)
}

/// One pressure condition setter (`MemoryPressureCondition` etc.).
#[allow(clippy::too_many_arguments)]
fn set_pressure(
    conds: &mut Vec<NodeCondition>,
    events: &mut Vec<NodeEvent>,
    node_name: &str,
    type_: &str,
    pressure: Option<bool>,
    now: &Time,
    (true_reason, true_msg): (&str, &str),
    (false_reason, false_msg): (&str, &str),
    (true_event, false_event): (&str, &str),
) {
    let (c, _) = condition(conds, type_, now);
    c.last_heartbeat_time = Some(now.clone());
    let Some(pressure) = pressure else { return };
    let (status, reason, msg, event) = if pressure {
        ("True", true_reason, true_msg, true_event)
    } else {
        ("False", false_reason, false_msg, false_event)
    };
    if c.status != status {
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(msg.into());
        c.last_transition_time = Some(now.clone());
        events.push(NodeEvent {
            type_: EventType::Normal,
            reason: event.into(),
            message: format!("Node {node_name} status is now: {event}"),
        });
    }
}

/// The node status setters (§3.2) over the previous status. Returns the new status and the node
/// events to record once it is written.
pub fn compute_status(inputs: &StatusInputs<'_>, prev: Option<&NodeStatus>) -> (NodeStatus, Vec<NodeEvent>) {
    let cfg = inputs.cfg;
    let facts = inputs.facts;
    let now = Time(inputs.now);
    let mut events = Vec::new();
    let mut st = prev.cloned().unwrap_or_default();

    // Addresses.
    let mut addrs = Vec::new();
    if let Some(ip) = inputs.node_ip {
        addrs.push(NodeAddress {
            type_: "InternalIP".into(),
            address: ip.to_string(),
        });
    }
    addrs.push(NodeAddress {
        type_: "Hostname".into(),
        address: facts.hostname.clone(),
    });
    st.addresses = Some(addrs);

    // Machine info.
    let (cap, alloc) = capacity_and_allocatable(cfg, facts);
    let prev_info = prev.and_then(|p| p.node_info.clone());
    if let Some(old) = prev_info.as_ref().map(|i| i.boot_id.clone()) {
        if !old.is_empty() && !facts.boot_id.is_empty() && old != facts.boot_id {
            events.push(NodeEvent {
                type_: EventType::Warning,
                reason: "Rebooted".into(),
                message: format!("Node {} has been rebooted, boot id: {}", cfg.node_name, facts.boot_id),
            });
        }
    }
    // Keep capacities other agents (device plugins) added; ours overwrite.
    let mut capacity = st.capacity.take().unwrap_or_default();
    capacity.extend(cap);
    let mut allocatable = st.allocatable.take().unwrap_or_default();
    allocatable.extend(alloc);

    // Version info.
    let runtime_version = if !inputs.health.runtime_version.is_empty() {
        inputs.health.runtime_version.clone()
    } else {
        prev_info
            .as_ref()
            .map(|i| i.container_runtime_version.clone())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "Unknown".into())
    };
    st.node_info = Some(NodeSystemInfo {
        machine_id: facts.machine_id.clone(),
        system_uuid: facts.system_uuid.clone(),
        boot_id: facts.boot_id.clone(),
        kernel_version: facts.kernel_version.clone(),
        os_image: facts.os_image.clone(),
        container_runtime_version: runtime_version,
        kubelet_version: KUBELET_VERSION.into(),
        kube_proxy_version: KUBELET_VERSION.into(),
        operating_system: facts.operating_system.clone(),
        architecture: facts.architecture.clone(),
        ..Default::default()
    });

    // Daemon endpoints.
    st.daemon_endpoints = Some(NodeDaemonEndpoints {
        kubelet_endpoint: Some(DaemonEndpoint {
            port: i32::from(cfg.port),
        }),
    });

    // Images.
    if let Some(images) = inputs.images {
        st.images = Some(node_images(images));
    }

    // Pressure conditions, then Ready last.
    let mut conds = st.conditions.take().unwrap_or_default();
    let (mem, disk, pid) = match inputs.pressure {
        Some(p) => (Some(p.memory), Some(p.disk), Some(p.pid)),
        None => (None, None, None),
    };
    let name = cfg.node_name.as_str();
    set_pressure(
        &mut conds,
        &mut events,
        name,
        "MemoryPressure",
        mem,
        &now,
        (
            "KubeletHasInsufficientMemory",
            "kubelet has insufficient memory available",
        ),
        ("KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("NodeHasInsufficientMemory", "NodeHasSufficientMemory"),
    );
    set_pressure(
        &mut conds,
        &mut events,
        name,
        "DiskPressure",
        disk,
        &now,
        ("KubeletHasDiskPressure", "kubelet has disk pressure"),
        ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("NodeHasDiskPressure", "NodeHasNoDiskPressure"),
    );
    set_pressure(
        &mut conds,
        &mut events,
        name,
        "PIDPressure",
        pid,
        &now,
        ("KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
        ("KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("NodeHasInsufficientPID", "NodeHasSufficientPID"),
    );

    let errs = readiness_errors(inputs, &capacity);
    let (status, reason, message) = if errs.is_empty() {
        ("True", "KubeletReady", "kubelet is posting ready status".to_string())
    } else {
        ("False", "KubeletNotReady", aggregate(&errs))
    };
    let (c, created) = condition(&mut conds, "Ready", &now);
    if !created && c.status != status {
        c.last_transition_time = Some(now.clone());
        let event = if status == "True" { "NodeReady" } else { "NodeNotReady" };
        events.push(NodeEvent {
            type_: EventType::Normal,
            reason: event.into(),
            message: format!("Node {name} status is now: {event}"),
        });
    }
    c.status = status.into();
    c.reason = Some(reason.into());
    c.message = Some(message);
    c.last_heartbeat_time = Some(now.clone());

    st.conditions = Some(conds);
    st.capacity = Some(capacity);
    st.allocatable = Some(allocatable);
    (st, events)
}

/// Images for node status: largest first, at most 50, each with up to 5 names (digests first).
pub fn node_images(images: &[cri::Image]) -> Vec<ContainerImage> {
    let mut sorted: Vec<&cri::Image> = images.iter().collect();
    sorted.sort_by_key(|i| std::cmp::Reverse(i.size));
    sorted
        .into_iter()
        .take(MAX_IMAGES)
        .map(|i| {
            let names: Vec<String> = i
                .repo_digests
                .iter()
                .chain(i.repo_tags.iter())
                .take(MAX_NAMES_PER_IMAGE)
                .cloned()
                .collect();
            ContainerImage {
                names: Some(names),
                size_bytes: Some(i64::try_from(i.size).unwrap_or(i64::MAX)),
            }
        })
        .collect()
}

fn quantities_equal(a: &Option<BTreeMap<String, Quantity>>, b: &Option<BTreeMap<String, Quantity>>) -> bool {
    let norm = |m: &Option<BTreeMap<String, Quantity>>| -> BTreeMap<String, Option<i128>> {
        m.iter()
            .flatten()
            .map(|(k, v)| (k.clone(), parse_milli(&v.0).ok()))
            .collect()
    };
    norm(a) == norm(b)
}

/// A condition without its heartbeat: type, status, reason, message, transition second.
type CondKey = (String, String, Option<String>, Option<String>, Option<i64>);

/// `nodeStatusHasChanged`: anything but heartbeat times (quantities compared by value, times at
/// the API's second precision).
pub fn status_changed(old: &NodeStatus, new: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| -> (NodeStatus, Vec<CondKey>) {
        let conds = s
            .conditions
            .iter()
            .flatten()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                    c.last_transition_time.as_ref().map(|t| t.0.as_second()),
                )
            })
            .collect();
        let mut rest = s.clone();
        rest.conditions = None;
        rest.capacity = None;
        rest.allocatable = None;
        (rest, conds)
    };
    let (a, ac) = strip(old);
    let (b, bc) = strip(new);
    a != b
        || ac != bc
        || !quantities_equal(&old.capacity, &new.capacity)
        || !quantities_equal(&old.allocatable, &new.allocatable)
}

/// The labels keel maintains on its Node (`updateDefaultLabels`).
pub fn default_labels(hostname: &str, facts: &HostFacts) -> BTreeMap<String, String> {
    [
        (LABEL_HOSTNAME, hostname),
        (LABEL_OS, facts.operating_system.as_str()),
        (LABEL_ARCH, facts.architecture.as_str()),
        (LABEL_BETA_OS, facts.operating_system.as_str()),
        (LABEL_BETA_ARCH, facts.architecture.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `initialNode()`: the Node keel registers (status filled by the caller).
pub fn initial_node(cfg: &Config, facts: &HostFacts) -> Node {
    let mut labels = default_labels(&facts.hostname, facts);
    labels.extend(cfg.node_labels.clone());
    Node {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            labels: Some(labels),
            annotations: Some([(ANNOTATION_CMAD.to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!cfg.register_with_taints.is_empty()).then(|| cfg.register_with_taints.clone()),
            ..Default::default()
        }),
        status: None,
    }
}

/// What must change on an existing Node when keel adopts it (default labels, the CMAD
/// annotation), as a merge patch; None when nothing does. `--node-labels` and taints are only
/// applied at registration, like the kubelet.
pub fn reconcile_existing(desired: &Node, existing: &Node) -> Option<serde_json::Value> {
    let have_labels = existing.metadata.labels.clone().unwrap_or_default();
    let have_ann = existing.metadata.annotations.clone().unwrap_or_default();
    let want_labels = desired.metadata.labels.clone().unwrap_or_default();
    let mut labels = serde_json::Map::new();
    for key in [LABEL_HOSTNAME, LABEL_OS, LABEL_ARCH, LABEL_BETA_OS, LABEL_BETA_ARCH] {
        if let Some(v) = want_labels.get(key) {
            if have_labels.get(key) != Some(v) {
                labels.insert(key.to_string(), serde_json::Value::String(v.clone()));
            }
        }
    }
    let mut ann = serde_json::Map::new();
    if have_ann.get(ANNOTATION_CMAD).map(String::as_str) != Some("true") {
        ann.insert(ANNOTATION_CMAD.into(), serde_json::Value::String("true".into()));
    }
    if labels.is_empty() && ann.is_empty() {
        return None;
    }
    let mut meta = serde_json::Map::new();
    if !labels.is_empty() {
        meta.insert("labels".into(), labels.into());
    }
    if !ann.is_empty() {
        meta.insert("annotations".into(), ann.into());
    }
    Some(serde_json::json!({ "metadata": meta }))
}

/// The Node as keel would register it, computed locally (`getNodeAnyWay` when the API Node is
/// not available): for admission in standalone mode and before registration. It has no UID.
pub fn local_node(cfg: &Config, clock: &Clock, health: &RuntimeHealth) -> Result<Node, NodeError> {
    let facts = nodeinfo::gather(&cfg.node_name, &cfg.root_dir)?;
    let since = |t: Option<std::time::Instant>| t.map(|t| clock.to_virtual(t.elapsed()));
    let inputs = StatusInputs {
        cfg,
        facts: &facts,
        node_ip: nodeinfo::resolve_node_ip(cfg.node_ip).ok(),
        // The kubelet's eviction manager starts with no pressure.
        pressure: Some(Pressure::default()),
        health,
        images: None,
        now: clock.now(),
        since_runtime_ok: since(health.last_runtime_ok),
        since_relist: since(health.last_relist),
    };
    let mut node = initial_node(cfg, &facts);
    node.status = Some(compute_status(&inputs, None).0);
    Ok(node)
}

/// Resolves when the runtime's readiness differs from `was`. The Ready condition then follows
/// a runtime that went away or came back at once rather than at the next status update (up to
/// 10 s later; the relist updates the health every second, which alone is no reason to report).
async fn runtime_readiness_flip(health: &mut watch::Receiver<RuntimeHealth>, was: bool) {
    loop {
        if health.changed().await.is_err() {
            // The sync loop is gone (shutting down): only the timer wakes the loop.
            std::future::pending::<()>().await;
        }
        if health.borrow_and_update().runtime_ready != was {
            return;
        }
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Registers the node, keeps its status current and publishes it.
pub struct NodeStatusReporter {
    client: kube::Client,
    cfg: Arc<Config>,
    clock: Clock,
    health: watch::Receiver<RuntimeHealth>,
    runtime: Arc<dyn Runtime>,
    recorder: Arc<Recorder>,
    node_tx: watch::Sender<Option<Node>>,
    node_ip: Option<IpAddr>,
    facts: HostFacts,
    /// When status was last written (virtual time base: tokio instants).
    last_report: Option<tokio::time::Instant>,
    /// An API outage is in progress (log once).
    failing: bool,
    pressure: watch::Receiver<Pressure>,
}

impl NodeStatusReporter {
    /// Reads the pressure conditions from the eviction manager (without it: none).
    pub fn with_pressure(mut self, pressure: watch::Receiver<Pressure>) -> Self {
        self.pressure = pressure;
        self
    }

    /// Validates `--node-ip` and reads the host facts, so main can fail fast on a bad setup.
    pub fn new(
        client: kube::Client,
        cfg: Arc<Config>,
        clock: Clock,
        health: watch::Receiver<RuntimeHealth>,
        runtime: Arc<dyn Runtime>,
        recorder: Arc<Recorder>,
        node_tx: watch::Sender<Option<Node>>,
    ) -> Result<Self, NodeError> {
        let node_ip = Some(nodeinfo::resolve_node_ip(cfg.node_ip)?);
        let facts = nodeinfo::gather(&cfg.node_name, &cfg.root_dir)?;
        Ok(Self {
            pressure: watch::channel(Pressure::default()).1,
            client,
            cfg,
            clock,
            health,
            runtime,
            recorder,
            node_tx,
            node_ip,
            facts,
            last_report: None,
            failing: false,
        })
    }

    fn api(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// Registers, then updates status until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.recorder
            .node_event(EventType::Normal, "Starting", "Starting keel.");
        // Until the API Node is known, admission works against the locally computed one.
        if self.node_tx.borrow().is_none() {
            let mut node = initial_node(&self.cfg, &self.facts);
            node.status = Some(self.compute(None, None, None).0);
            self.node_tx.send_replace(Some(node));
        }
        if self.cfg.register_node {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.register() => {}
            }
        }
        loop {
            self.sync_once().await;
            let period = self.cfg.node_status_update_frequency;
            let jitter = rand::rng().random::<f64>() * STATUS_JITTER;
            let wait = period.mul_f64(1.0 + jitter);
            let runtime_ready = self.health.borrow_and_update().runtime_ready;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.clock.sleep(wait) => {}
                _ = runtime_readiness_flip(&mut self.health, runtime_ready) => {}
            }
        }
    }

    fn note_ok(&mut self) {
        if self.failing {
            tracing::info!(node = %self.cfg.node_name, "API server reachable again; node status updates resumed");
            self.failing = false;
        }
    }

    fn note_failure(&mut self, e: &NodeError) {
        if !self.failing {
            tracing::warn!(error = %e, "cannot update node; retrying until the API server answers");
            self.failing = true;
        } else {
            tracing::debug!(error = %e, "node update still failing");
        }
    }

    async fn inputs_now(&mut self) -> (Option<Pressure>, Option<Vec<cri::Image>>) {
        match nodeinfo::gather(&self.cfg.node_name, &self.cfg.root_dir) {
            Ok(f) => self.facts = f,
            Err(e) => tracing::debug!(error = %e, "re-reading host facts failed; keeping the last ones"),
        }
        let pressure = Some(*self.pressure.borrow());
        let images = self
            .runtime
            .list_images(cri::ListImagesRequest { filter: None })
            .await
            .map_err(|e| tracing::debug!(error = %e, "ListImages failed; keeping the previous image list"))
            .ok()
            .map(|r| r.images);
        (pressure, images)
    }

    fn compute(
        &self,
        pressure: Option<Pressure>,
        images: Option<&[cri::Image]>,
        prev: Option<&NodeStatus>,
    ) -> (NodeStatus, Vec<NodeEvent>) {
        let health = self.health.borrow().clone();
        let since = |t: Option<std::time::Instant>| t.map(|t| self.clock.to_virtual(t.elapsed()));
        let inputs = StatusInputs {
            cfg: &self.cfg,
            facts: &self.facts,
            node_ip: self.node_ip,
            pressure,
            health: &health,
            images,
            now: self.clock.now(),
            since_runtime_ok: since(health.last_runtime_ok),
            since_relist: since(health.last_relist),
        };
        compute_status(&inputs, prev)
    }

    fn emit(&self, events: Vec<NodeEvent>) {
        for e in events {
            self.recorder.node_event(e.type_, &e.reason, e.message);
        }
    }

    /// `registerWithAPIServer`: retries until the node exists and is adopted.
    async fn register(&mut self) {
        let mut backoff = REGISTER_BACKOFF_INITIAL;
        loop {
            match self.try_register().await {
                Ok(()) => {
                    self.note_ok();
                    tracing::info!(node = %self.cfg.node_name, "node registered");
                    return;
                }
                Err(e) => self.note_failure(&e),
            }
            self.clock.sleep(backoff).await;
            backoff = (backoff * 2).min(REGISTER_BACKOFF_MAX);
        }
    }

    async fn try_register(&mut self) -> Result<(), NodeError> {
        let (pressure, images) = self.inputs_now().await;
        let mut node = initial_node(&self.cfg, &self.facts);
        let (status, events) = self.compute(pressure, images.as_deref(), None);
        node.status = Some(status);
        let api = self.api();
        let name = self.cfg.node_name.clone();
        match api.create(&PostParams::default(), &node).await {
            Ok(created) => {
                self.emit(events);
                self.node_tx.send_replace(Some(created));
                Ok(())
            }
            Err(e) if is_status(&e, 409) => {
                let existing = api.get(&name).await.map_err(|source| NodeError::Get {
                    node: name.clone(),
                    source,
                })?;
                let adopted = match reconcile_existing(&node, &existing) {
                    Some(patch) => api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(|source| NodeError::Reconcile {
                            node: name.clone(),
                            source,
                        })?,
                    None => existing,
                };
                tracing::info!(node = %name, "node already exists; adopted it");
                self.node_tx.send_replace(Some(adopted));
                Ok(())
            }
            Err(source) => Err(NodeError::Register { node: name, source }),
        }
    }

    /// `updateNodeStatus`: up to five tries.
    async fn sync_once(&mut self) {
        let (pressure, images) = self.inputs_now().await;
        let mut last_err = None;
        for _ in 0..NODE_STATUS_UPDATE_RETRY {
            match self.try_update(pressure, images.as_deref()).await {
                Ok(()) => {
                    self.note_ok();
                    return;
                }
                Err(e) => last_err = Some(e),
            }
        }
        if let Some(e) = last_err {
            self.note_failure(&e);
        }
    }

    async fn try_update(&mut self, pressure: Option<Pressure>, images: Option<&[cri::Image]>) -> Result<(), NodeError> {
        let api = self.api();
        let name = self.cfg.node_name.clone();
        let node = api.get(&name).await.map_err(|source| NodeError::Get {
            node: name.clone(),
            source,
        })?;
        let prev = node.status.clone().unwrap_or_default();
        let (status, events) = self.compute(pressure, images, Some(&prev));
        let report_due = self
            .last_report
            .is_none_or(|t| self.clock.to_virtual(t.elapsed()) >= self.cfg.node_status_report_frequency);
        // Keep the os/arch labels right even when the node was edited.
        let want = default_labels(&self.facts.hostname, &self.facts);
        let labels_patch = {
            let have = node.metadata.labels.clone().unwrap_or_default();
            let fix: serde_json::Map<String, serde_json::Value> = [LABEL_OS, LABEL_ARCH]
                .into_iter()
                .filter(|k| have.get(*k) != want.get(*k))
                .filter_map(|k| {
                    want.get(k)
                        .map(|v| (k.to_string(), serde_json::Value::String(v.clone())))
                })
                .collect();
            (!fix.is_empty()).then(|| serde_json::json!({"metadata": {"labels": fix}}))
        };
        let mut latest = node;
        if let Some(patch) = labels_patch {
            latest = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|source| NodeError::Reconcile {
                    node: name.clone(),
                    source,
                })?;
        }
        if status_changed(&prev, &status) || report_due {
            let patch = serde_json::json!({ "status": serde_json::to_value(&status)? });
            latest = api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
                .map_err(|source| NodeError::PatchStatus {
                    node: name.clone(),
                    source,
                })?;
            self.last_report = Some(self.clock.instant());
        }
        self.emit(events);
        self.node_tx.send_replace(Some(latest));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::config::Config;

    fn cfg() -> Config {
        Config::defaults("node-1".into())
    }

    fn facts() -> HostFacts {
        HostFacts {
            hostname: "node-1".into(),
            cpus: 4,
            memory_bytes: 8 * 1024 * 1024 * 1024,
            ephemeral_storage_bytes: 100 * 1024 * 1024 * 1024,
            kernel_version: "6.1.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            operating_system: "linux".into(),
            architecture: "amd64".into(),
            machine_id: "mid".into(),
            system_uuid: "uuid".into(),
            boot_id: "boot-1".into(),
            hugepages: BTreeMap::new(),
        }
    }

    fn healthy() -> RuntimeHealth {
        RuntimeHealth {
            runtime_version: "sim://0.1.0".into(),
            runtime_ready: true,
            network_ready: true,
            ..Default::default()
        }
    }

    struct Fixture {
        cfg: Config,
        facts: HostFacts,
        health: RuntimeHealth,
        pressure: Pressure,
        images: Vec<cri::Image>,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                cfg: cfg(),
                facts: facts(),
                health: healthy(),
                pressure: Pressure::default(),
                images: vec![],
            }
        }

        fn inputs(&self, now: i64, since_ok: Option<u64>, since_relist: Option<u64>) -> StatusInputs<'_> {
            StatusInputs {
                cfg: &self.cfg,
                facts: &self.facts,
                node_ip: Some("10.0.0.5".parse().unwrap()),
                pressure: Some(self.pressure),
                health: &self.health,
                images: Some(&self.images),
                now: Timestamp::from_second(now).unwrap(),
                since_runtime_ok: since_ok.map(Duration::from_secs),
                since_relist: since_relist.map(Duration::from_secs),
            }
        }
    }

    fn cond<'a>(s: &'a NodeStatus, t: &str) -> &'a NodeCondition {
        s.conditions.as_ref().unwrap().iter().find(|c| c.type_ == t).unwrap()
    }

    fn reasons(ev: &[NodeEvent]) -> Vec<&str> {
        ev.iter().map(|e| e.reason.as_str()).collect()
    }

    #[test]
    fn first_status_is_complete() {
        let mut f = Fixture::new();
        f.cfg.system_reserved = [("cpu".to_string(), "100m".to_string())].into();
        f.cfg.kube_reserved = [("memory".to_string(), "256Mi".to_string())].into();
        let (st, ev) = compute_status(&f.inputs(1000, Some(1), Some(1)), None);
        let addrs = st.addresses.as_ref().unwrap();
        assert_eq!(addrs[0].type_, "InternalIP");
        assert_eq!(addrs[0].address, "10.0.0.5");
        assert_eq!(addrs[1].type_, "Hostname");
        assert_eq!(addrs[1].address, "node-1");
        let cap = st.capacity.as_ref().unwrap();
        assert_eq!(cap["cpu"].0, "4");
        assert_eq!(cap["memory"].0, "8Gi");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(cap["ephemeral-storage"].0, "100Gi");
        let alloc = st.allocatable.as_ref().unwrap();
        assert_eq!(alloc["cpu"].0, "3900m");
        // 8Gi - 256Mi - 100Mi.
        assert_eq!(alloc["memory"].0, format_bytes((8 << 30) - (356 << 20)));
        assert_eq!(alloc["memory"].0, "7836Mi");
        // 100Gi - 10%.
        assert_eq!(
            alloc["ephemeral-storage"].0,
            format_bytes((100i128 << 30) - (10i128 << 30))
        );
        let info = st.node_info.as_ref().unwrap();
        assert_eq!(info.container_runtime_version, "sim://0.1.0");
        assert_eq!(info.kubelet_version, KUBELET_VERSION);
        assert_eq!(info.architecture, "amd64");
        assert_eq!(info.boot_id, "boot-1");
        assert_eq!(
            st.daemon_endpoints
                .as_ref()
                .unwrap()
                .kubelet_endpoint
                .as_ref()
                .unwrap()
                .port,
            10250
        );
        let types: Vec<&str> = st
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(types, ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]);
        let mp = cond(&st, "MemoryPressure");
        assert_eq!(mp.status, "False");
        assert_eq!(mp.reason.as_deref(), Some("KubeletHasSufficientMemory"));
        assert_eq!(mp.message.as_deref(), Some("kubelet has sufficient memory available"));
        let ready = cond(&st, "Ready");
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        assert_eq!(ready.message.as_deref(), Some("kubelet is posting ready status"));
        // Unknown → False pressure transitions are recorded; a new Ready condition is not.
        assert_eq!(
            reasons(&ev),
            [
                "NodeHasSufficientMemory",
                "NodeHasNoDiskPressure",
                "NodeHasSufficientPID"
            ]
        );
        assert_eq!(ev[0].message, "Node node-1 status is now: NodeHasSufficientMemory");
    }

    #[test]
    fn transitions_and_heartbeats() {
        let mut f = Fixture::new();
        let (s1, _) = compute_status(&f.inputs(1000, Some(1), Some(1)), None);
        // Same inputs later: only heartbeats move.
        let (s2, ev2) = compute_status(&f.inputs(1010, Some(1), Some(1)), Some(&s1));
        assert!(ev2.is_empty());
        assert!(!status_changed(&s1, &s2));
        assert_eq!(
            cond(&s2, "Ready").last_heartbeat_time.as_ref().unwrap().0.as_second(),
            1010
        );
        assert_eq!(
            cond(&s2, "Ready").last_transition_time.as_ref().unwrap().0.as_second(),
            1000
        );
        // Network goes down: Ready=False with the kubelet's message, transition + event.
        f.health.network_ready = false;
        f.health.network_error =
            Some("NetworkReady=false reason:NetworkPluginNotReady message:cni plugin not initialized".into());
        let (s3, ev3) = compute_status(&f.inputs(1020, Some(1), Some(1)), Some(&s2));
        let r = cond(&s3, "Ready");
        assert_eq!(r.status, "False");
        assert_eq!(r.reason.as_deref(), Some("KubeletNotReady"));
        assert_eq!(
            r.message.as_deref(),
            Some(
                "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady \
                 message:cni plugin not initialized"
            )
        );
        assert_eq!(r.last_transition_time.as_ref().unwrap().0.as_second(), 1020);
        assert_eq!(reasons(&ev3), ["NodeNotReady"]);
        assert!(status_changed(&s2, &s3));
        // Memory pressure.
        f.health.network_ready = true;
        f.pressure.memory = true;
        let (s4, ev4) = compute_status(&f.inputs(1030, Some(1), Some(1)), Some(&s3));
        assert_eq!(cond(&s4, "MemoryPressure").status, "True");
        assert_eq!(
            cond(&s4, "MemoryPressure").reason.as_deref(),
            Some("KubeletHasInsufficientMemory")
        );
        assert_eq!(reasons(&ev4), ["NodeHasInsufficientMemory", "NodeReady"]);
        // Reboot.
        f.facts.boot_id = "boot-2".into();
        let (_, ev5) = compute_status(&f.inputs(1040, Some(1), Some(1)), Some(&s4));
        assert_eq!(ev5[0].reason, "Rebooted");
        assert_eq!(ev5[0].type_, EventType::Warning);
    }

    #[test]
    fn ready_messages() {
        let mut f = Fixture::new();
        let msg = |f: &Fixture, ok: Option<u64>, relist: Option<u64>| {
            let (s, _) = compute_status(&f.inputs(1, ok, relist), None);
            cond(&s, "Ready").message.clone().unwrap()
        };
        assert_eq!(
            msg(&f, None, Some(1)),
            "[container runtime status check may not have completed yet, network state unknown]"
        );
        assert_eq!(msg(&f, Some(31), Some(1)), "container runtime is down");
        assert_eq!(
            msg(&f, Some(1), Some(185)),
            "PLEG is not healthy: pleg was last seen active 3m5s ago; threshold is 3m0s"
        );
        assert_eq!(
            msg(&f, Some(1), None),
            "PLEG is not healthy: pleg has yet to be successful"
        );
        f.health.runtime_ready = false;
        f.health.runtime_error = Some("RuntimeReady=false reason:Down message:dead".into());
        assert_eq!(
            msg(&f, Some(1), Some(1)),
            "container runtime not ready: RuntimeReady=false reason:Down message:dead"
        );
        f.health.runtime_error = Some("container runtime not ready: already phrased".into());
        assert_eq!(
            msg(&f, Some(1), Some(1)),
            "container runtime not ready: already phrased"
        );
    }

    #[test]
    fn images_largest_first_capped() {
        let imgs: Vec<cri::Image> = (0..60u64)
            .map(|i| cri::Image {
                id: format!("sha256:{i}"),
                repo_tags: (0..4).map(|t| format!("img{i}:t{t}")).collect(),
                repo_digests: vec![format!("img{i}@sha256:{i}"), format!("mirror/img{i}@sha256:{i}")],
                size: i * 10,
                ..Default::default()
            })
            .collect();
        let out = node_images(&imgs);
        assert_eq!(out.len(), 50);
        assert_eq!(out[0].size_bytes, Some(590));
        assert_eq!(out[49].size_bytes, Some(100));
        let names = out[0].names.as_ref().unwrap();
        assert_eq!(names.len(), 5);
        assert_eq!(names[0], "img59@sha256:59");
        assert_eq!(names[2], "img59:t0");
    }

    #[test]
    fn quantity_formats_and_thresholds() {
        assert_eq!(format_cpu(4000), "4");
        assert_eq!(format_cpu(3900), "3900m");
        assert_eq!(format_bytes(16314368 * 1024), "15932Mi");
        assert_eq!(format_bytes(1025), "1025");
        assert_eq!(format_bytes(2_000_000), "2M");
        assert_eq!(format_bytes(0), "0");
        assert_eq!(threshold_value("100Mi", 0), Some(100 << 20));
        assert_eq!(threshold_value("10%", 1000), Some(100));
        assert_eq!(threshold_value("bad", 1000), None);
        let mut c = cfg();
        c.pods_per_core = 10;
        let mut f = facts();
        f.hugepages = [(2u64 << 20, 512u64), (1u64 << 30, 0)].into();
        let (cap, alloc) = capacity_and_allocatable(&c, &f);
        assert_eq!(cap["pods"].0, "40");
        assert_eq!(cap["hugepages-2Mi"].0, "1Gi");
        assert_eq!(cap["hugepages-1Gi"].0, "0");
        // 8Gi - 100Mi eviction - 1Gi of huge pages.
        assert_eq!(alloc["memory"].0, "7068Mi");
        // Quantities compare by value, not by text.
        let mut a = NodeStatus::default();
        let mut b = NodeStatus::default();
        a.capacity = Some([("memory".to_string(), Quantity("2M".into()))].into());
        b.capacity = Some([("memory".to_string(), Quantity("2000000".into()))].into());
        assert!(!status_changed(&a, &b));
    }

    #[test]
    fn registration_and_adoption() {
        let mut c = cfg();
        c.node_labels = [("role".to_string(), "edge".to_string())].into();
        c.register_with_taints = crate::kubelet::config::parse_taints("dedicated=x:NoSchedule").unwrap();
        let node = initial_node(&c, &facts());
        let labels = node.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_HOSTNAME], "node-1");
        assert_eq!(labels[LABEL_OS], "linux");
        assert_eq!(labels[LABEL_BETA_ARCH], "amd64");
        assert_eq!(labels["role"], "edge");
        assert_eq!(node.metadata.annotations.as_ref().unwrap()[ANNOTATION_CMAD], "true");
        assert_eq!(node.spec.as_ref().unwrap().taints.as_ref().unwrap()[0].key, "dedicated");

        let mut existing = Node {
            metadata: ObjectMeta {
                name: Some("node-1".into()),
                labels: Some([(LABEL_OS.to_string(), "windows".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let patch = reconcile_existing(&node, &existing).unwrap();
        assert_eq!(patch["metadata"]["labels"][LABEL_OS], "linux");
        assert_eq!(patch["metadata"]["labels"][LABEL_HOSTNAME], "node-1");
        assert!(
            patch["metadata"]["labels"].get("role").is_none(),
            "--node-labels only at registration"
        );
        assert_eq!(patch["metadata"]["annotations"][ANNOTATION_CMAD], "true");
        existing.metadata.labels = node.metadata.labels.clone();
        existing.metadata.annotations = node.metadata.annotations.clone();
        assert!(reconcile_existing(&node, &existing).is_none());
    }
}
