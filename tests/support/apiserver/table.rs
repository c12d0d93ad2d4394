//! Server-side printing: `meta.k8s.io/v1 Table` answers for `kubectl get`, with the real
//! printers' columns and cell logic (`pkg/printers/internalversion/printers.go`) for pods, nodes,
//! events, namespaces, configmaps, secrets, serviceaccounts and leases, and the default
//! (Name, Created At) table for the rest.

use serde_json::{json, Value};

use super::objects::{age_seconds, meta, meta_str, path, path_str};

/// What each row carries as `object` (`includeObject` query parameter).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> IncludeObject {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// `duration.HumanDuration`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{}h", hours / 24, h)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{}d", hours / 24 / 365, dy)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// `translateTimestampSince`.
fn since(ts: &str) -> String {
    match age_seconds(ts) {
        Some(s) if !ts.is_empty() => human_duration(s),
        _ => "<unknown>".into(),
    }
}

fn col(name: &str, ty: &str, format: &str, priority: i64, description: &str) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

fn none_if_empty(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_string()
    }
}

fn columns(kind: &str) -> Vec<Value> {
    let name = col("Name", "string", "name", 0, "Name must be unique within a namespace.");
    let age = col(
        "Age",
        "string",
        "",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );
    match kind {
        "Pod" => vec![
            name,
            col("Ready", "string", "", 0, "The aggregate readiness state of this pod for accepting traffic."),
            col("Status", "string", "", 0, "The aggregate status of the containers in this pod."),
            col("Restarts", "string", "", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            age,
            col("IP", "string", "", 1, "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
            col("Node", "string", "", 1, "NodeName is a request to schedule this pod onto a specific node."),
            col("Nominated Node", "string", "", 1, "nominatedNodeName is set only when this pod preempts other pods on the node."),
            col("Readiness Gates", "string", "", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
        ],
        "Node" => vec![
            name,
            col("Status", "string", "", 0, "The status of the node"),
            col("Roles", "string", "", 0, "The roles of the node"),
            age,
            col("Version", "string", "", 0, "Kubelet Version reported by the node."),
            col("Internal-IP", "string", "", 1, "List of addresses reachable to the node. Queried from cloud provider, if available."),
            col("External-IP", "string", "", 1, "List of addresses reachable to the node. Queried from cloud provider, if available."),
            col("OS-Image", "string", "", 1, "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
            col("Kernel-Version", "string", "", 1, "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
            col("Container-Runtime", "string", "", 1, "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
        ],
        "Event" => vec![
            col("Last Seen", "string", "", 0, "Last time the event occurred"),
            col("Type", "string", "", 0, "Type of this event (Normal, Warning), new types could be added in the future."),
            col("Reason", "string", "", 0, "The reason for the transition into the object's current status."),
            col("Object", "string", "", 0, "The object that this event is about."),
            col("Subobject", "string", "", 1, "The subobject that this event is about."),
            col("Source", "string", "", 1, "The component reporting this event. Should be a short machine understandable string."),
            col("Message", "string", "", 0, "A human-readable description of the status of this operation."),
            col("First Seen", "string", "", 1, "The first time the event occurred"),
            col("Count", "string", "", 1, "The number of times this event has occurred."),
            col("Name", "string", "name", 1, "Name must be unique within a namespace."),
        ],
        "Namespace" => vec![name, col("Status", "string", "", 0, "The status of the namespace"), age],
        "ConfigMap" => vec![name, col("Data", "string", "", 0, "Data contains the configuration data."), age],
        "Secret" => vec![
            name,
            col("Type", "string", "", 0, "The type of the secret"),
            col("Data", "string", "", 0, "The number of entries in the secret"),
            age,
        ],
        "ServiceAccount" => vec![name, col("Secrets", "string", "", 0, "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."), age],
        "Lease" => vec![name, col("Holder", "string", "", 0, "The holder of the lease."), age],
        _ => vec![
            name,
            col("Created At", "date", "", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
        ],
    }
}

fn count_entries(obj: &Value, fields: &[&str]) -> i64 {
    fields
        .iter()
        .filter_map(|f| obj.get(*f).and_then(Value::as_object))
        .map(|m| m.len() as i64)
        .sum()
}

fn cells(kind: &str, obj: &Value) -> (Vec<Value>, Vec<Value>) {
    let name = meta_str(obj, "name").to_string();
    let age = since(meta_str(obj, "creationTimestamp"));
    match kind {
        "Pod" => pod_cells(obj, name, age),
        "Node" => (node_cells(obj, name, age), Vec::new()),
        "Event" => (event_cells(obj, name), Vec::new()),
        "Namespace" => (
            vec![json!(name), json!(path_str(obj, "status.phase")), json!(age)],
            Vec::new(),
        ),
        "ConfigMap" => (
            vec![
                json!(name),
                json!(count_entries(obj, &["data", "binaryData"])),
                json!(age),
            ],
            Vec::new(),
        ),
        "Secret" => (
            vec![
                json!(name),
                json!(path_str(obj, "type")),
                json!(count_entries(obj, &["data"])),
                json!(age),
            ],
            Vec::new(),
        ),
        "ServiceAccount" => {
            let n = obj.get("secrets").and_then(Value::as_array).map_or(0, Vec::len);
            (vec![json!(name), json!(n), json!(age)], Vec::new())
        }
        "Lease" => (
            vec![json!(name), json!(path_str(obj, "spec.holderIdentity")), json!(age)],
            Vec::new(),
        ),
        _ => (vec![json!(name), json!(meta_str(obj, "creationTimestamp"))], Vec::new()),
    }
}

fn state<'a>(c: &'a Value, st: &str, field: &str) -> Option<&'a Value> {
    c.get("state").and_then(|s| s.get(st)).and_then(|s| s.get(field))
}

fn has_state(c: &Value, st: &str) -> bool {
    c.get("state").and_then(|s| s.get(st)).is_some_and(|v| !v.is_null())
}

fn condition_true(obj: &Value, ty: &str) -> bool {
    path(obj, "status.conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == ty && c["status"] == "True"))
}

/// `printPod`.
fn pod_cells(pod: &Value, name: String, age: String) -> (Vec<Value>, Vec<Value>) {
    let spec_containers = path(pod, "spec.containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let init_specs = path(pod, "spec.initContainers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let is_restartable_init = |n: &str| {
        init_specs
            .iter()
            .any(|c| c["name"] == n && c["restartPolicy"].as_str() == Some("Always"))
    };
    let restartable_count = init_specs
        .iter()
        .filter(|c| c["restartPolicy"].as_str() == Some("Always"))
        .count();
    let total = spec_containers.len() + restartable_count;
    let mut restarts: i64 = 0;
    let mut restartable_restarts: i64 = 0;
    let mut ready = 0usize;
    let mut last_restart: Option<jiff::Timestamp> = None;
    let mut last_restartable_restart: Option<jiff::Timestamp> = None;
    let phase = path_str(pod, "status.phase");
    let mut reason = phase.to_string();
    let status_reason = path_str(pod, "status.reason");
    if !status_reason.is_empty() {
        reason = status_reason.to_string();
    }
    if let Some(cs) = path(pod, "status.conditions").and_then(Value::as_array) {
        if cs
            .iter()
            .any(|c| c["type"] == "PodScheduled" && c["reason"] == "SchedulingGated")
        {
            reason = "SchedulingGated".into();
        }
    }
    let finished_at = |c: &Value| -> Option<jiff::Timestamp> {
        c.pointer("/lastState/terminated/finishedAt")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
    };
    let later = |a: Option<jiff::Timestamp>, b: Option<jiff::Timestamp>| match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
    let mut initializing = false;
    let init_statuses = path(pod, "status.initContainerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, c) in init_statuses.iter().enumerate() {
        let rc = c["restartCount"].as_i64().unwrap_or(0);
        restarts += rc;
        let fin = finished_at(c);
        last_restart = later(last_restart, fin);
        let cname = c["name"].as_str().unwrap_or("");
        let restartable = is_restartable_init(cname);
        if restartable {
            restartable_restarts += rc;
            last_restartable_restart = later(last_restartable_restart, fin);
        }
        let exit = state(c, "terminated", "exitCode").and_then(Value::as_i64);
        if has_state(c, "terminated") && exit == Some(0) {
            continue;
        }
        if restartable && c["started"].as_bool() == Some(true) {
            if c["ready"].as_bool() == Some(true) {
                ready += 1;
            }
            continue;
        }
        if has_state(c, "terminated") {
            let r = state(c, "terminated", "reason").and_then(Value::as_str).unwrap_or("");
            reason = if r.is_empty() {
                let sig = state(c, "terminated", "signal").and_then(Value::as_i64).unwrap_or(0);
                if sig != 0 {
                    format!("Init:Signal:{sig}")
                } else {
                    format!("Init:ExitCode:{}", exit.unwrap_or(0))
                }
            } else {
                format!("Init:{r}")
            };
        } else {
            let w = state(c, "waiting", "reason").and_then(Value::as_str).unwrap_or("");
            reason = if !w.is_empty() && w != "PodInitializing" {
                format!("Init:{w}")
            } else {
                format!("Init:{}/{}", i, init_specs.len())
            };
        }
        initializing = true;
        break;
    }
    if !initializing || condition_true(pod, "Initialized") {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        let statuses = path(pod, "status.containerStatuses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for c in statuses.iter().rev() {
            restarts += c["restartCount"].as_i64().unwrap_or(0);
            last_restart = later(last_restart, finished_at(c));
            let waiting = state(c, "waiting", "reason").and_then(Value::as_str).unwrap_or("");
            let term_reason = state(c, "terminated", "reason").and_then(Value::as_str).unwrap_or("");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if has_state(c, "terminated") && !term_reason.is_empty() {
                reason = term_reason.to_string();
            } else if has_state(c, "terminated") {
                let sig = state(c, "terminated", "signal").and_then(Value::as_i64).unwrap_or(0);
                let exit = state(c, "terminated", "exitCode").and_then(Value::as_i64).unwrap_or(0);
                reason = if sig != 0 {
                    format!("Signal:{sig}")
                } else {
                    format!("ExitCode:{exit}")
                };
            } else if c["ready"].as_bool() == Some(true) && has_state(c, "running") {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let has_ready_condition = path(pod, "status.conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            reason = if has_ready_condition {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    let deleting = meta(pod)
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some_and(|v| !v.is_null());
    if deleting && status_reason == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }
    let mut restarts_str = restarts.to_string();
    if restarts != 0 {
        if let Some(t) = last_restart {
            restarts_str = format!(
                "{restarts} ({} ago)",
                human_duration(jiff::Timestamp::now().as_second() - t.as_second())
            );
        }
    }
    let gates = path(pod, "spec.readinessGates").and_then(Value::as_array).map(|gs| {
        let conds = path(pod, "status.conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ok = gs
            .iter()
            .filter(|g| {
                conds
                    .iter()
                    .any(|c| c["type"] == g["conditionType"] && c["status"] == "True")
            })
            .count();
        format!("{ok}/{}", gs.len())
    });
    let row_conditions = if phase == "Succeeded" || phase == "Failed" {
        vec![
            json!({"type": "Completed", "status": "True", "reason": phase, "message": "The pod has completed successfully."}),
        ]
    } else {
        Vec::new()
    };
    (
        vec![
            json!(name),
            json!(format!("{ready}/{total}")),
            json!(reason),
            json!(restarts_str),
            json!(age),
            json!(none_if_empty(path_str(pod, "status.podIP"))),
            json!(none_if_empty(path_str(pod, "spec.nodeName"))),
            json!(none_if_empty(path_str(pod, "status.nominatedNodeName"))),
            json!(gates.unwrap_or_else(|| "<none>".into())),
        ],
        row_conditions,
    )
}

/// `printNode`.
fn node_cells(node: &Value, name: String, age: String) -> Vec<Value> {
    let mut status: Vec<String> = Vec::new();
    if let Some(c) = path(node, "status.conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
    {
        status.push(if c["status"] == "True" {
            "Ready".into()
        } else {
            "NotReady".into()
        });
    }
    if status.is_empty() {
        status.push("Unknown".into());
    }
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = meta(node).and_then(|m| m.get("labels")).and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_string());
                }
            } else if k == "kubernetes.io/role" {
                if let Some(v) = v.as_str().filter(|v| !v.is_empty()) {
                    roles.push(v.to_string());
                }
            }
        }
    }
    roles.sort();
    let address = |ty: &str| {
        path(node, "status.addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|x| x["type"] == ty))
            .and_then(|x| x["address"].as_str())
            .unwrap_or("")
            .to_string()
    };
    vec![
        json!(name),
        json!(status.join(",")),
        json!(if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        }),
        json!(age),
        json!(path_str(node, "status.nodeInfo.kubeletVersion")),
        json!(none_if_empty(&address("InternalIP"))),
        json!(none_if_empty(&address("ExternalIP"))),
        json!(path_str(node, "status.nodeInfo.osImage")),
        json!(path_str(node, "status.nodeInfo.kernelVersion")),
        json!(path_str(node, "status.nodeInfo.containerRuntimeVersion")),
    ]
}

/// `printEvent` (on the core/v1 form).
fn event_cells(ev: &Value, name: String) -> Vec<Value> {
    let first_ts = path_str(ev, "firstTimestamp");
    let first = if first_ts.is_empty() {
        since(path_str(ev, "eventTime"))
    } else {
        since(first_ts)
    };
    let last_ts = path_str(ev, "lastTimestamp");
    let mut last = if last_ts.is_empty() {
        first.clone()
    } else {
        since(last_ts)
    };
    let mut count = ev.get("count").and_then(Value::as_i64).unwrap_or(0);
    if ev.get("series").is_some_and(|s| !s.is_null()) {
        last = since(path_str(ev, "series.lastObservedTime"));
        count = ev.pointer("/series/count").and_then(Value::as_i64).unwrap_or(0);
    } else if count == 0 {
        count = 1;
    }
    let kind = path_str(ev, "involvedObject.kind").to_lowercase();
    let obj_name = path_str(ev, "involvedObject.name");
    let target = if obj_name.is_empty() {
        kind
    } else {
        format!("{kind}/{obj_name}")
    };
    let first_non_empty = |a: &str, b: &str| if a.is_empty() { b.to_string() } else { a.to_string() };
    let component = first_non_empty(path_str(ev, "source.component"), path_str(ev, "reportingComponent"));
    let instance = first_non_empty(path_str(ev, "source.host"), path_str(ev, "reportingInstance"));
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(path_str(ev, "type")),
        json!(path_str(ev, "reason")),
        json!(target),
        json!(path_str(ev, "involvedObject.fieldPath")),
        json!(source),
        json!(path_str(ev, "message").trim()),
        json!(first),
        json!(count),
        json!(name),
    ]
}

fn row(kind: &str, obj: &Value, include: IncludeObject) -> Value {
    let (cells, conditions) = cells(kind, obj);
    let mut r = json!({"cells": cells});
    if !conditions.is_empty() {
        r["conditions"] = json!(conditions);
    }
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            let metadata = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
            r["object"] =
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata});
        }
        IncludeObject::Object => r["object"] = obj.clone(),
    }
    r
}

/// A Table of `objs` (of `kind`); `list_meta` is the list's metadata (resourceVersion, …).
pub fn table(kind: &str, objs: &[Value], list_meta: Value, include: IncludeObject) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns(kind),
        "rows": objs.iter().map(|o| row(kind, o, include)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        for (s, want) in [
            (0, "0s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (50 * 3600, "2d2h"),
            (-5, "<invalid>"),
        ] {
            assert_eq!(human_duration(s), want);
        }
    }

    fn status_of(pod: Value) -> String {
        pod_cells(&pod, "p".into(), "1s".into()).0[2]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn pod_status_column() {
        let base = |status: Value| json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}], "initContainers": [{"name": "i1"}, {"name": "i2"}]}, "status": status});
        assert_eq!(status_of(base(json!({"phase": "Pending"}))), "Pending");
        assert_eq!(
            status_of(base(json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "state": {"terminated": {"exitCode": 0}}},
                {"name": "i2", "state": {"running": {}}}]}))),
            "Init:1/2"
        );
        assert_eq!(
            status_of(base(json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "state": {"terminated": {"exitCode": 3}}}]}))),
            "Init:ExitCode:3"
        );
        assert_eq!(
            status_of(base(json!({"phase": "Running", "containerStatuses": [
                {"name": "a", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}))),
            "CrashLoopBackOff"
        );
        assert_eq!(
            status_of(base(json!({"phase": "Succeeded", "containerStatuses": [
                {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}))),
            "Completed"
        );
        let mut deleting = base(json!({"phase": "Running"}));
        deleting["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        assert_eq!(status_of(deleting), "Terminating");
    }

    #[test]
    fn node_status_and_roles() {
        let node = json!({"metadata": {"name": "n", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true}, "status": {"conditions": [{"type": "Ready", "status": "False"}], "nodeInfo": {"kubeletVersion": "v1.33.0"}}});
        let c = node_cells(&node, "n".into(), "1s".into());
        assert_eq!(c[1], "NotReady,SchedulingDisabled");
        assert_eq!(c[2], "control-plane");
        assert_eq!(c[4], "v1.33.0");
    }
}
