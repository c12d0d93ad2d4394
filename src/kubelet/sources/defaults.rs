//! The API server's pod defaulting and basic validation, for pods that never pass through the
//! API server: static pods read from files (§3.4). Pure functions over k8s-openapi types.
//!
//! Only the defaults a pod needs to run like an API pod are applied (the `SetDefaults_*`
//! functions of `pkg/apis/core/v1/defaults.go` that touch pods); admission plugins (priority,
//! service accounts) are not run, as the Go kubelet does not run them for static pods either.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, PodSpec, Probe, Volume};

/// `terminationGracePeriodSeconds` when the pod does not set one.
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
/// `schedulerName` when the pod does not set one.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";
/// `terminationMessagePath` when a container does not set one.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// Mode of projected files (configMap, secret, downwardAPI, projected) when not set: 0644.
pub const DEFAULT_VOLUME_FILE_MODE: i32 = 0o644;

/// Why a pod failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("metadata.name is required")]
    MissingName,
    #[error("metadata.name {name:?} is not a valid DNS subdomain name")]
    InvalidName { name: String },
    #[error("metadata.namespace {namespace:?} is not a valid DNS label")]
    InvalidNamespace { namespace: String },
    #[error("spec is required")]
    MissingSpec,
    #[error("spec.containers: at least one container is required")]
    NoContainers,
    #[error("{field}: name is required")]
    MissingContainerName { field: String },
    #[error("{field}: name {name:?} is not a valid DNS label")]
    InvalidContainerName { field: String, name: String },
    #[error("{field}: image is required")]
    MissingImage { field: String },
    #[error("{field}: duplicate container name {name:?}")]
    DuplicateContainerName { field: String, name: String },
    #[error("spec.volumes[{index}]: duplicate volume name {name:?}")]
    DuplicateVolumeName { index: usize, name: String },
    #[error("spec.restartPolicy {policy:?} is not one of Always, OnFailure, Never")]
    InvalidRestartPolicy { policy: String },
}

/// `imagePullPolicy` the API server picks for an image: `Always` for `:latest` or an untagged,
/// undigested image, `IfNotPresent` otherwise (`SetDefaults_Container`).
pub fn default_image_pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    // A tag can only follow the last path component: `host:5000/app` has a port, not a tag.
    let last = name.rsplit('/').next().unwrap_or(name);
    let tag = last.split_once(':').map(|(_, tag)| tag);
    match (tag, digest) {
        (Some("latest"), _) => "Always",
        (Some(_), _) => "IfNotPresent",
        // Digest only: ParseImageName yields no tag, which is not "latest".
        (None, Some(_)) => "IfNotPresent",
        // No tag, no digest: the reference means `:latest`.
        (None, None) => "Always",
    }
}

/// Applies the API server's defaults to a pod, in place. Values already set are kept.
pub fn apply_api_defaults(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    default_pod_spec(spec);
}

fn default_pod_spec(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert_with(|| "Always".to_string());
    spec.termination_grace_period_seconds
        .get_or_insert(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS);
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".to_string());
    spec.enable_service_links.get_or_insert(true);
    spec.scheduler_name
        .get_or_insert_with(|| DEFAULT_SCHEDULER_NAME.to_string());
    spec.security_context.get_or_insert_with(PodSecurityContext::default);
    let host_network = spec.host_network.unwrap_or(false);
    for c in spec.containers.iter_mut() {
        default_container(c, host_network);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        default_container(c, host_network);
    }
    for v in spec.volumes.iter_mut().flatten() {
        default_volume(v);
    }
}

fn default_container(c: &mut Container, host_network: bool) {
    if c.image_pull_policy.as_deref().unwrap_or("").is_empty() {
        let policy = default_image_pull_policy(c.image.as_deref().unwrap_or(""));
        c.image_pull_policy = Some(policy.to_string());
    }
    c.termination_message_path
        .get_or_insert_with(|| DEFAULT_TERMINATION_MESSAGE_PATH.to_string());
    c.termination_message_policy.get_or_insert_with(|| "File".to_string());
    for port in c.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".to_string());
        // With host networking the container port is the host port (defaultHostNetworkPorts).
        if host_network && port.host_port.is_none() {
            port.host_port = Some(port.container_port);
        }
    }
    // Requests default to limits (SetDefaults_Pod), key by key.
    if let Some(res) = c.resources.as_mut() {
        if let Some(limits) = res.limits.as_ref() {
            let requests = res.requests.get_or_insert_with(Default::default);
            for (k, v) in limits {
                requests.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    for probe in [&mut c.liveness_probe, &mut c.readiness_probe, &mut c.startup_probe]
        .into_iter()
        .flatten()
    {
        default_probe(probe);
    }
    for env in c.env.iter_mut().flatten() {
        if let Some(field_ref) = env.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            field_ref.api_version.get_or_insert_with(|| "v1".to_string());
        }
    }
}

fn default_probe(p: &mut Probe) {
    p.timeout_seconds.get_or_insert(1);
    p.period_seconds.get_or_insert(10);
    p.success_threshold.get_or_insert(1);
    p.failure_threshold.get_or_insert(3);
    if let Some(http) = p.http_get.as_mut() {
        http.path.get_or_insert_with(|| "/".to_string());
        http.scheme.get_or_insert_with(|| "HTTP".to_string());
    }
}

fn default_volume(v: &mut Volume) {
    if let Some(s) = v.config_map.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_FILE_MODE);
    }
    if let Some(s) = v.secret.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_FILE_MODE);
    }
    if let Some(s) = v.downward_api.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_FILE_MODE);
    }
    if let Some(s) = v.projected.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_FILE_MODE);
    }
    if let Some(s) = v.host_path.as_mut() {
        s.type_.get_or_insert_with(String::new);
    }
}

/// True if `s` is an RFC 1123 DNS label (≤ 63 chars, `[a-z0-9]([-a-z0-9]*[a-z0-9])?`).
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// True if `s` is an RFC 1123 DNS subdomain (≤ 253 chars, dot-separated labels).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// Basic validation of a (defaulted) pod: names, containers with name and image, unique
/// container and volume names, a known restart policy. Not the API server's full validation.
pub fn validate_pod(pod: &Pod) -> Result<(), ValidationError> {
    let name = pod.metadata.name.as_deref().unwrap_or("");
    if name.is_empty() {
        return Err(ValidationError::MissingName);
    }
    if !is_dns1123_subdomain(name) {
        return Err(ValidationError::InvalidName { name: name.to_string() });
    }
    if let Some(ns) = pod.metadata.namespace.as_deref() {
        if !ns.is_empty() && !is_dns1123_label(ns) {
            return Err(ValidationError::InvalidNamespace {
                namespace: ns.to_string(),
            });
        }
    }
    let spec = pod.spec.as_ref().ok_or(ValidationError::MissingSpec)?;
    if spec.containers.is_empty() {
        return Err(ValidationError::NoContainers);
    }
    if let Some(policy) = spec.restart_policy.as_deref() {
        if !matches!(policy, "Always" | "OnFailure" | "Never") {
            return Err(ValidationError::InvalidRestartPolicy {
                policy: policy.to_string(),
            });
        }
    }
    // Init and regular containers share one name space.
    let mut names = BTreeSet::new();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (format!("spec.initContainers[{i}]"), c));
    let regular = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("spec.containers[{i}]"), c));
    for (field, c) in init.chain(regular) {
        if c.name.is_empty() {
            return Err(ValidationError::MissingContainerName { field });
        }
        if !is_dns1123_label(&c.name) {
            return Err(ValidationError::InvalidContainerName {
                field,
                name: c.name.clone(),
            });
        }
        if c.image.as_deref().unwrap_or("").trim().is_empty() {
            return Err(ValidationError::MissingImage { field });
        }
        if !names.insert(c.name.as_str()) {
            return Err(ValidationError::DuplicateContainerName {
                field,
                name: c.name.clone(),
            });
        }
    }
    let mut volumes = BTreeSet::new();
    for (index, v) in spec.volumes.iter().flatten().enumerate() {
        if !volumes.insert(v.name.as_str()) {
            return Err(ValidationError::DuplicateVolumeName {
                index,
                name: v.name.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction, ResourceRequirements, SecretVolumeSource};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn container(name: &str, image: &str) -> Container {
        Container {
            name: name.into(),
            image: Some(image.into()),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("web".into());
        p.spec = Some(PodSpec {
            containers,
            ..Default::default()
        });
        p
    }

    #[test]
    fn pull_policy_by_tag() {
        let cases = [
            ("busybox", "Always"),
            ("busybox:latest", "Always"),
            ("busybox:1.36", "IfNotPresent"),
            ("registry.local:5000/app", "Always"),
            ("registry.local:5000/app:v2", "IfNotPresent"),
            ("registry.local:5000/app:latest", "Always"),
            ("busybox@sha256:abcd", "IfNotPresent"),
            ("busybox:latest@sha256:abcd", "Always"),
            ("docker.io/library/nginx:1.25", "IfNotPresent"),
        ];
        for (image, want) in cases {
            assert_eq!(default_image_pull_policy(image), want, "{image}");
        }
    }

    #[test]
    fn pod_spec_defaults() {
        let mut p = pod(vec![container("c", "busybox")]);
        apply_api_defaults(&mut p);
        let s = p.spec.unwrap();
        assert_eq!(s.restart_policy.as_deref(), Some("Always"));
        assert_eq!(s.termination_grace_period_seconds, Some(30));
        assert_eq!(s.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(s.enable_service_links, Some(true));
        assert_eq!(s.scheduler_name.as_deref(), Some("default-scheduler"));
        assert!(s.security_context.is_some());
        let c = &s.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(c.termination_message_path.as_deref(), Some("/dev/termination-log"));
        assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
    }

    #[test]
    fn set_values_are_kept() {
        let mut c = container("c", "busybox:1");
        c.image_pull_policy = Some("Never".into());
        c.termination_message_policy = Some("FallbackToLogsOnError".into());
        let mut p = pod(vec![c]);
        let spec = p.spec.as_mut().unwrap();
        spec.restart_policy = Some("Never".into());
        spec.termination_grace_period_seconds = Some(5);
        spec.enable_service_links = Some(false);
        apply_api_defaults(&mut p);
        let s = p.spec.unwrap();
        assert_eq!(s.restart_policy.as_deref(), Some("Never"));
        assert_eq!(s.termination_grace_period_seconds, Some(5));
        assert_eq!(s.enable_service_links, Some(false));
        assert_eq!(s.containers[0].image_pull_policy.as_deref(), Some("Never"));
        assert_eq!(
            s.containers[0].termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
    }

    #[test]
    fn requests_default_to_limits_per_key() {
        let mut c = container("c", "busybox:1");
        c.resources = Some(ResourceRequirements {
            limits: Some(
                [
                    ("cpu".to_string(), Quantity("500m".into())),
                    ("memory".to_string(), Quantity("64Mi".into())),
                ]
                .into(),
            ),
            requests: Some([("cpu".to_string(), Quantity("100m".into()))].into()),
            ..Default::default()
        });
        let mut init = container("i", "busybox:1");
        init.resources = Some(ResourceRequirements {
            limits: Some([("cpu".to_string(), Quantity("1".into()))].into()),
            ..Default::default()
        });
        let mut p = pod(vec![c]);
        p.spec.as_mut().unwrap().init_containers = Some(vec![init]);
        apply_api_defaults(&mut p);
        let s = p.spec.unwrap();
        let req = s.containers[0].resources.as_ref().unwrap().requests.as_ref().unwrap();
        assert_eq!(req["cpu"], Quantity("100m".into()));
        assert_eq!(req["memory"], Quantity("64Mi".into()));
        let init_req = s.init_containers.unwrap()[0]
            .resources
            .clone()
            .unwrap()
            .requests
            .unwrap();
        assert_eq!(init_req["cpu"], Quantity("1".into()));
    }

    #[test]
    fn ports_probes_and_volumes() {
        let mut c = container("c", "nginx:1");
        c.ports = Some(vec![ContainerPort {
            container_port: 80,
            ..Default::default()
        }]);
        c.liveness_probe = Some(Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::Int(80),
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut p = pod(vec![c]);
        let spec = p.spec.as_mut().unwrap();
        spec.host_network = Some(true);
        spec.volumes = Some(vec![Volume {
            name: "s".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some("x".into()),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        apply_api_defaults(&mut p);
        let s = p.spec.unwrap();
        let port = &s.containers[0].ports.as_ref().unwrap()[0];
        assert_eq!(port.protocol.as_deref(), Some("TCP"));
        assert_eq!(port.host_port, Some(80));
        let probe = s.containers[0].liveness_probe.as_ref().unwrap();
        assert_eq!(
            (
                probe.timeout_seconds,
                probe.period_seconds,
                probe.success_threshold,
                probe.failure_threshold
            ),
            (Some(1), Some(10), Some(1), Some(3))
        );
        let http = probe.http_get.as_ref().unwrap();
        assert_eq!(
            (http.path.as_deref(), http.scheme.as_deref()),
            (Some("/"), Some("HTTP"))
        );
        assert_eq!(s.volumes.unwrap()[0].secret.as_ref().unwrap().default_mode, Some(0o644));
    }

    #[test]
    fn validation_table() {
        let ok = pod(vec![container("a", "busybox"), container("b", "busybox")]);
        assert_eq!(validate_pod(&ok), Ok(()));

        let mut no_name = ok.clone();
        no_name.metadata.name = None;
        assert_eq!(validate_pod(&no_name), Err(ValidationError::MissingName));

        let mut bad_name = ok.clone();
        bad_name.metadata.name = Some("Web_1".into());
        assert!(matches!(
            validate_pod(&bad_name),
            Err(ValidationError::InvalidName { .. })
        ));

        let mut no_spec = ok.clone();
        no_spec.spec = None;
        assert_eq!(validate_pod(&no_spec), Err(ValidationError::MissingSpec));

        assert_eq!(validate_pod(&pod(vec![])), Err(ValidationError::NoContainers));

        let r = validate_pod(&pod(vec![container("", "busybox")]));
        assert!(matches!(r, Err(ValidationError::MissingContainerName { .. })), "{r:?}");

        let r = validate_pod(&pod(vec![container("a", " ")]));
        assert_eq!(
            r,
            Err(ValidationError::MissingImage {
                field: "spec.containers[0]".into()
            })
        );

        let r = validate_pod(&pod(vec![container("a", "x"), container("a", "y")]));
        assert_eq!(
            r,
            Err(ValidationError::DuplicateContainerName {
                field: "spec.containers[1]".into(),
                name: "a".into()
            })
        );

        let mut dup_init = pod(vec![container("a", "x")]);
        dup_init.spec.as_mut().unwrap().init_containers = Some(vec![container("a", "y")]);
        assert!(matches!(
            validate_pod(&dup_init),
            Err(ValidationError::DuplicateContainerName { .. })
        ));

        let mut bad_policy = ok.clone();
        bad_policy.spec.as_mut().unwrap().restart_policy = Some("Sometimes".into());
        assert!(matches!(
            validate_pod(&bad_policy),
            Err(ValidationError::InvalidRestartPolicy { .. })
        ));
    }

    #[test]
    fn dns_names() {
        assert!(is_dns1123_label("a-1"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("web-node1.example"));
        assert!(!is_dns1123_subdomain("web..x"));
        assert!(!is_dns1123_subdomain("Web"));
    }
}
