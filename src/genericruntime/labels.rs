//! Labels and annotations keel writes on CRI sandboxes and containers (§1.2), exactly the keys
//! the kubelet writes so `crictl` users see what they know, and their parsing back.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, ContainerPort, Lifecycle, LifecycleHandler, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::hash::{hash_container, hash_hex, parse_hash_hex};
use super::util::{pod_name, pod_namespace, pod_uid};

pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";

pub const CONTAINER_HASH_ANNOTATION: &str = "io.kubernetes.container.hash";
pub const CONTAINER_RESTART_COUNT_ANNOTATION: &str = "io.kubernetes.container.restartCount";
pub const CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION: &str = "io.kubernetes.container.terminationMessagePath";
pub const CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION: &str = "io.kubernetes.container.terminationMessagePolicy";
pub const POD_DELETION_GRACE_PERIOD_ANNOTATION: &str = "io.kubernetes.pod.deletionGracePeriod";
pub const POD_TERMINATION_GRACE_PERIOD_ANNOTATION: &str = "io.kubernetes.pod.terminationGracePeriod";
pub const CONTAINER_PRESTOP_HANDLER_ANNOTATION: &str = "io.kubernetes.container.preStopHandler";
pub const CONTAINER_PORTS_ANNOTATION: &str = "io.kubernetes.container.ports";

/// The API default of `terminationMessagePath`.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

pub type Labels = HashMap<String, String>;

/// Sandbox labels: the pod's labels plus the kubelet's three (which win over user labels).
pub fn new_pod_labels(pod: &Pod) -> Labels {
    let mut labels: Labels = pod
        .metadata
        .labels
        .as_ref()
        .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), pod_name(pod).into());
    labels.insert(POD_NAMESPACE_LABEL.into(), pod_namespace(pod).into());
    labels.insert(POD_UID_LABEL.into(), pod_uid(pod).into());
    labels
}

/// Sandbox annotations: the pod's annotations verbatim.
pub fn new_pod_annotations(pod: &Pod) -> Labels {
    pod.metadata
        .annotations
        .as_ref()
        .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// Container labels: exactly the four kubelet keys.
pub fn new_container_labels(container: &Container, pod: &Pod) -> Labels {
    let mut labels = Labels::new();
    labels.insert(POD_NAME_LABEL.into(), pod_name(pod).into());
    labels.insert(POD_NAMESPACE_LABEL.into(), pod_namespace(pod).into());
    labels.insert(POD_UID_LABEL.into(), pod_uid(pod).into());
    labels.insert(CONTAINER_NAME_LABEL.into(), container.name.clone());
    labels
}

/// Container annotations (§1.2): `extra` (device plugins and the like) first, kubelet keys win.
pub fn new_container_annotations(container: &Container, pod: &Pod, restart_count: i32, extra: &Labels) -> Labels {
    let mut a = extra.clone();
    a.insert(CONTAINER_HASH_ANNOTATION.into(), hash_hex(hash_container(container)));
    a.insert(CONTAINER_RESTART_COUNT_ANNOTATION.into(), restart_count.to_string());
    a.insert(
        CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION.into(),
        container
            .termination_message_path
            .clone()
            .unwrap_or_else(|| DEFAULT_TERMINATION_MESSAGE_PATH.into()),
    );
    a.insert(
        CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION.into(),
        container
            .termination_message_policy
            .clone()
            .unwrap_or_else(|| "File".into()),
    );
    if let Some(d) = pod.metadata.deletion_grace_period_seconds {
        a.insert(POD_DELETION_GRACE_PERIOD_ANNOTATION.into(), d.to_string());
    }
    if let Some(t) = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds) {
        a.insert(POD_TERMINATION_GRACE_PERIOD_ANNOTATION.into(), t.to_string());
    }
    if let Some(pre_stop) = container.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
        match serde_json::to_string(pre_stop) {
            Ok(j) => {
                a.insert(CONTAINER_PRESTOP_HANDLER_ANNOTATION.into(), j);
            }
            Err(e) => {
                tracing::warn!(container = %container.name, error = %e, "cannot encode preStop handler annotation")
            }
        }
    }
    if let Some(ports) = container.ports.as_ref().filter(|p| !p.is_empty()) {
        match serde_json::to_string(ports) {
            Ok(j) => {
                a.insert(CONTAINER_PORTS_ANNOTATION.into(), j);
            }
            Err(e) => tracing::warn!(container = %container.name, error = %e, "cannot encode ports annotation"),
        }
    }
    a
}

/// What the sandbox labels say about its pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SandboxLabelInfo {
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    /// The user's pod labels (the kubelet keys removed).
    pub labels: Labels,
}

/// Reads a sandbox's labels back.
pub fn sandbox_info_from_labels(labels: &Labels) -> SandboxLabelInfo {
    let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
    let user = labels
        .iter()
        .filter(|(k, _)| ![POD_NAME_LABEL, POD_NAMESPACE_LABEL, POD_UID_LABEL].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    SandboxLabelInfo {
        pod_name: get(POD_NAME_LABEL),
        pod_namespace: get(POD_NAMESPACE_LABEL),
        pod_uid: get(POD_UID_LABEL),
        labels: user,
    }
}

/// What the container labels say (missing keys → empty strings).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerLabelInfo {
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    pub container_name: String,
}

pub fn container_info_from_labels(labels: &Labels) -> ContainerLabelInfo {
    let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
    ContainerLabelInfo {
        pod_name: get(POD_NAME_LABEL),
        pod_namespace: get(POD_NAMESPACE_LABEL),
        pod_uid: get(POD_UID_LABEL),
        container_name: get(CONTAINER_NAME_LABEL),
    }
}

/// What the container annotations say (missing → defaults, malformed → 0/None and a log line).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerAnnotationInfo {
    pub hash: u64,
    pub restart_count: i32,
    pub pod_deletion_grace_period: Option<i64>,
    pub pod_termination_grace_period: Option<i64>,
    pub termination_message_path: String,
    pub termination_message_policy: String,
    pub pre_stop_handler: Option<LifecycleHandler>,
    pub container_ports: Vec<ContainerPort>,
}

pub fn container_info_from_annotations(annotations: &Labels) -> ContainerAnnotationInfo {
    let mut info = ContainerAnnotationInfo {
        termination_message_path: annotations
            .get(CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION)
            .cloned()
            .unwrap_or_default(),
        termination_message_policy: annotations
            .get(CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION)
            .cloned()
            .unwrap_or_default(),
        ..Default::default()
    };
    if let Some(h) = annotations.get(CONTAINER_HASH_ANNOTATION) {
        match parse_hash_hex(h) {
            Some(v) => info.hash = v,
            None => tracing::warn!(value = %h, "malformed container hash annotation, using 0"),
        }
    }
    if let Some(r) = annotations.get(CONTAINER_RESTART_COUNT_ANNOTATION) {
        match r.parse::<i32>() {
            Ok(v) => info.restart_count = v,
            Err(e) => tracing::warn!(value = %r, error = %e, "malformed restartCount annotation, using 0"),
        }
    }
    let grace = |key: &str| -> Option<i64> {
        let v = annotations.get(key)?;
        match v.parse::<i64>() {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(annotation = key, value = %v, error = %e, "malformed grace period annotation, using 0");
                Some(0)
            }
        }
    };
    info.pod_deletion_grace_period = grace(POD_DELETION_GRACE_PERIOD_ANNOTATION);
    info.pod_termination_grace_period = grace(POD_TERMINATION_GRACE_PERIOD_ANNOTATION);
    if let Some(j) = annotations.get(CONTAINER_PRESTOP_HANDLER_ANNOTATION) {
        match serde_json::from_str::<LifecycleHandler>(j) {
            Ok(h) => info.pre_stop_handler = Some(h),
            Err(e) => tracing::warn!(error = %e, "malformed preStop handler annotation, ignored"),
        }
    }
    if let Some(j) = annotations.get(CONTAINER_PORTS_ANNOTATION) {
        match serde_json::from_str::<Vec<ContainerPort>>(j) {
            Ok(p) => info.container_ports = p,
            Err(e) => tracing::warn!(error = %e, "malformed ports annotation, ignored"),
        }
    }
    info
}

/// Rebuilds a minimal pod and container from a container's labels and annotations, for pods the
/// kubelet no longer knows (`restoreSpecsFromContainerLabels`): enough for a graceful kill with
/// preStop.
pub fn restore_specs_from_labels(labels: &Labels, annotations: &Labels) -> (Pod, Container) {
    let l = container_info_from_labels(labels);
    let a = container_info_from_annotations(annotations);
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(l.pod_name),
            namespace: Some(l.pod_namespace),
            uid: Some(l.pod_uid),
            deletion_grace_period_seconds: a.pod_deletion_grace_period,
            ..Default::default()
        },
        spec: Some(PodSpec {
            termination_grace_period_seconds: a.pod_termination_grace_period,
            ..Default::default()
        }),
        status: None,
    };
    let container = Container {
        name: l.container_name,
        ports: (!a.container_ports.is_empty()).then_some(a.container_ports),
        termination_message_path: Some(a.termination_message_path),
        lifecycle: a.pre_stop_handler.map(|h| Lifecycle {
            pre_stop: Some(h),
            ..Default::default()
        }),
        ..Default::default()
    };
    (pod, container)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns1", "uid": "u-1", "deletionGracePeriodSeconds": 7,
                         "labels": {"app": "x", "io.kubernetes.pod.name": "spoofed"},
                         "annotations": {"kubernetes.io/config.seen": "now"}},
            "spec": {"terminationGracePeriodSeconds": 45, "containers": [{
                "name": "c1", "image": "busybox",
                "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}],
                "terminationMessagePath": "/tmp/msg",
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "sleep 1"]}}}
            }]}
        }))
        .unwrap()
    }

    #[test]
    fn sandbox_labels_override_user_keys() {
        let p = pod();
        let l = new_pod_labels(&p);
        assert_eq!(l[POD_NAME_LABEL], "web");
        assert_eq!(l[POD_NAMESPACE_LABEL], "ns1");
        assert_eq!(l[POD_UID_LABEL], "u-1");
        assert_eq!(l["app"], "x");
        let back = sandbox_info_from_labels(&l);
        assert_eq!(back.pod_name, "web");
        assert_eq!(back.labels.len(), 1);
        assert_eq!(new_pod_annotations(&p)["kubernetes.io/config.seen"], "now");
    }

    #[test]
    fn container_labels_and_annotations_round_trip() {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let labels = new_container_labels(c, &p);
        assert_eq!(labels.len(), 4);
        let ann = new_container_annotations(c, &p, 3, &Labels::new());
        assert_eq!(ann[CONTAINER_HASH_ANNOTATION], hash_hex(hash_container(c)));
        assert_eq!(ann[CONTAINER_RESTART_COUNT_ANNOTATION], "3");
        assert_eq!(ann[POD_DELETION_GRACE_PERIOD_ANNOTATION], "7");
        assert_eq!(ann[POD_TERMINATION_GRACE_PERIOD_ANNOTATION], "45");
        let li = container_info_from_labels(&labels);
        assert_eq!(
            li,
            ContainerLabelInfo {
                pod_name: "web".into(),
                pod_namespace: "ns1".into(),
                pod_uid: "u-1".into(),
                container_name: "c1".into()
            }
        );
        let ai = container_info_from_annotations(&ann);
        assert_eq!(ai.hash, hash_container(c));
        assert_eq!(ai.restart_count, 3);
        assert_eq!(ai.pod_deletion_grace_period, Some(7));
        assert_eq!(ai.pod_termination_grace_period, Some(45));
        assert_eq!(ai.termination_message_path, "/tmp/msg");
        assert_eq!(ai.termination_message_policy, "FallbackToLogsOnError");
        assert_eq!(ai.pre_stop_handler, c.lifecycle.as_ref().unwrap().pre_stop.clone());
        assert_eq!(ai.container_ports, c.ports.clone().unwrap());
    }

    #[test]
    fn missing_and_malformed_values_default() {
        let mut ann = Labels::new();
        assert_eq!(
            container_info_from_annotations(&ann),
            ContainerAnnotationInfo::default()
        );
        ann.insert(CONTAINER_HASH_ANNOTATION.into(), "zz-not-hex".into());
        ann.insert(CONTAINER_RESTART_COUNT_ANNOTATION.into(), "x".into());
        ann.insert(POD_TERMINATION_GRACE_PERIOD_ANNOTATION.into(), "abc".into());
        ann.insert(CONTAINER_PORTS_ANNOTATION.into(), "{".into());
        let ai = container_info_from_annotations(&ann);
        assert_eq!(ai.hash, 0);
        assert_eq!(ai.restart_count, 0);
        assert_eq!(ai.pod_termination_grace_period, Some(0));
        assert!(ai.container_ports.is_empty());
        assert_eq!(
            container_info_from_labels(&Labels::new()),
            ContainerLabelInfo::default()
        );
    }

    #[test]
    fn restore_specs_for_runtime_only_pods() {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let (rp, rc) = restore_specs_from_labels(
            &new_container_labels(c, &p),
            &new_container_annotations(c, &p, 0, &Labels::new()),
        );
        assert_eq!(rp.metadata.name.as_deref(), Some("web"));
        assert_eq!(rp.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(rp.metadata.deletion_grace_period_seconds, Some(7));
        assert_eq!(rp.spec.unwrap().termination_grace_period_seconds, Some(45));
        assert_eq!(rc.name, "c1");
        assert_eq!(rc.ports, c.ports);
        assert_eq!(rc.termination_message_path.as_deref(), Some("/tmp/msg"));
        assert_eq!(rc.lifecycle.unwrap().pre_stop, c.lifecycle.as_ref().unwrap().pre_stop);
    }
}
