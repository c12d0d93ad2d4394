//! Small accessors over k8s-openapi `Pod`s the runtime manager uses everywhere (every field of a
//! k8s-openapi object is optional; these give the API defaults in one place).

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

/// `metadata.name` (empty when unset).
pub fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}

/// `metadata.namespace` (empty when unset).
pub fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("")
}

/// `metadata.uid` (empty when unset).
pub fn pod_uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

/// The pod's spec, or an empty one.
pub fn pod_spec(pod: &Pod) -> std::borrow::Cow<'_, PodSpec> {
    match &pod.spec {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(PodSpec::default()),
    }
}

/// Regular containers of the pod.
pub fn containers(pod: &Pod) -> &[Container] {
    pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or(&[])
}

/// Init containers of the pod.
pub fn init_containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[])
}

/// Restart policy as written; empty (never defaulted) behaves as `Always` in every kubelet check.
pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// `spec.hostNetwork`.
pub fn host_network(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false)
}

/// `<name>_<namespace>(<uid>)`, the kubelet's `format.Pod`.
pub fn format_pod(pod: &Pod) -> String {
    format!("{}_{}({})", pod_name(pod), pod_namespace(pod), pod_uid(pod))
}

/// The event field path of a container: `spec.containers{name}` / `spec.initContainers{name}`.
pub fn container_field_path(pod: &Pod, name: &str) -> String {
    let ephemeral = pod
        .spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_ref())
        .is_some_and(|e| e.iter().any(|c| c.name == name));
    if init_containers(pod).iter().any(|c| c.name == name) {
        format!("spec.initContainers{{{name}}}")
    } else if ephemeral {
        format!("spec.ephemeralContainers{{{name}}}")
    } else {
        // Regular containers, and pods restored from labels (which carry no container list).
        format!("spec.containers{{{name}}}")
    }
}

/// Finds a container spec (regular or init) by name.
pub fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    containers(pod)
        .iter()
        .chain(init_containers(pod).iter())
        .find(|c| c.name == name)
}
