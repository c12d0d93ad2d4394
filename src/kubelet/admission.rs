//! Pod admission (§3.7): the checks the kubelet runs before it starts a worker for a new pod —
//! the eviction handler (node pressure) and the predicate handler (`GeneralPredicates`:
//! resources, node affinity, node name, host ports; then the OS label and OS field).
//!
//! Pure: the caller passes the pod, the active pods and the latest Node. A rejection carries the
//! kubelet's reason and message; the caller sets `{phase: Failed, reason, message: "Pod " +
//! message}` and emits a Warning event. The sysctl handler is [`crate::kubelet::sysctl`];
//! resource-manager and shutdown handlers belong to parts keel does not have.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::kubelet::sysctl::{self, Allowlist};
use crate::podspec::resources::{parse_milli, pod_request_milli, qos_class};

/// Why a pod was not admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub message: String,
}

impl Rejection {
    fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn predicate(name: &str) -> Self {
        Self::new(name, format!("Predicate {name} failed"))
    }
}

/// The OS keel runs pods for (Go's GOOS).
const NODE_OS: &str = std::env::consts::OS;
const LABEL_OS: &str = "kubernetes.io/os";
const ANNOTATION_CONFIG_SOURCE: &str = "kubernetes.io/config.source";
const ANNOTATION_MIRROR: &str = "kubernetes.io/config.mirror";
/// `scheduling.SystemCriticalPriority`.
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;
const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";

/// Runs the admit handlers in the kubelet's order; the first rejection wins. `sysctls` is the
/// node's allowlist (safe set plus `allowedUnsafeSysctls`).
pub fn admit(pod: &Pod, active: &[&Pod], node: &Node, sysctls: &Allowlist) -> Result<(), Rejection> {
    admit_eviction(pod, node)?;
    sysctls
        .admit(pod)
        .map_err(|message| Rejection::new(sysctl::FORBIDDEN_REASON, message))?;
    admit_predicates(pod, active, node)
}

fn annotations(pod: &Pod) -> Option<&BTreeMap<String, String>> {
    pod.metadata.annotations.as_ref()
}

/// Static pods (from a file or URL source) and mirror pods are critical, as are pods at or above
/// system-critical priority (`IsCriticalPod`).
pub fn is_critical_pod(pod: &Pod) -> bool {
    let ann = annotations(pod);
    let is_static = ann
        .and_then(|a| a.get(ANNOTATION_CONFIG_SOURCE))
        .is_some_and(|s| s != "api");
    let is_mirror = ann.is_some_and(|a| a.contains_key(ANNOTATION_MIRROR));
    let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
    is_static || is_mirror || priority >= SYSTEM_CRITICAL_PRIORITY
}

fn tolerates(t: &Toleration, key: &str, value: &str, effect: &str) -> bool {
    if t.effect.as_deref().is_some_and(|e| !e.is_empty() && e != effect) {
        return false;
    }
    let tkey = t.key.as_deref().unwrap_or("");
    let op = t.operator.as_deref().unwrap_or("Equal");
    if tkey.is_empty() {
        // An empty key with Exists tolerates everything.
        return op == "Exists";
    }
    if tkey != key {
        return false;
    }
    match op {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == value,
        _ => false,
    }
}

/// The eviction manager's admit handler.
fn admit_eviction(pod: &Pod, node: &Node) -> Result<(), Rejection> {
    let pressure: Vec<&str> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.status == "True" && matches!(c.type_.as_str(), "MemoryPressure" | "DiskPressure" | "PIDPressure"))
        .map(|c| c.type_.as_str())
        .collect();
    if pressure.is_empty() || is_critical_pod(pod) {
        return Ok(());
    }
    if pressure == ["MemoryPressure"] {
        let best_effort = pod.spec.as_ref().is_some_and(|s| qos_class(s) == "BestEffort");
        let tolerated = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_ref())
            .into_iter()
            .flatten()
            .any(|t| tolerates(t, TAINT_MEMORY_PRESSURE, "", "NoSchedule"));
        if !best_effort || tolerated {
            return Ok(());
        }
    }
    Err(Rejection::new(
        "Evicted",
        format!("The node had condition: [{}]. ", pressure.join(" ")),
    ))
}

/// Resources whose requests the admission compares in their own units (not extended/scalar).
const NATIVE_COMPARED: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// `IsExtendedResourceName`: a qualified name outside the kubernetes.io domain.
fn is_extended(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.")
}

fn allocatable(node: &Node) -> Option<&BTreeMap<String, Quantity>> {
    node.status.as_ref().and_then(|s| s.allocatable.as_ref())
}

/// Every resource name a pod requests or limits (containers, init containers, overhead).
fn resource_names(pod: &Pod) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Some(spec) = pod.spec.as_ref() else {
        return names;
    };
    for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        if let Some(r) = &c.resources {
            for m in [&r.requests, &r.limits].into_iter().flatten() {
                names.extend(m.keys().cloned());
            }
        }
    }
    if let Some(o) = &spec.overhead {
        names.extend(o.keys().cloned());
    }
    names
}

/// A pod's request in the units the kubelet prints: millicores for cpu, whole units otherwise.
fn request_units(pod: &Pod, name: &str) -> i128 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let milli = pod_request_milli(spec, name);
    if name == "cpu" {
        milli
    } else {
        // Quantity.Value() rounds up.
        (milli + 999).div_euclid(1000)
    }
}

fn alloc_units(node: &Node, name: &str) -> Option<i128> {
    let q = allocatable(node)?.get(name)?;
    let milli = parse_milli(&q.0).ok()?;
    Some(if name == "cpu" {
        milli
    } else {
        (milli + 999).div_euclid(1000)
    })
}

fn insufficient(name: &str, requested: i128, used: i128, capacity: i128) -> Rejection {
    Rejection::new(
        format!("OutOf{name}"),
        format!("Node didn't have enough resource: {name}, requested: {requested}, used: {used}, capacity: {capacity}"),
    )
}

/// `noderesources.Fits`: pod count, then cpu, memory, ephemeral storage, then scalar resources.
fn fits_resources(pod: &Pod, active: &[&Pod], node: &Node) -> Result<(), Rejection> {
    let allowed_pods = alloc_units(node, "pods").unwrap_or(0);
    let used_pods = active.len() as i128;
    if used_pods + 1 > allowed_pods {
        return Err(insufficient("pods", 1, used_pods, allowed_pods));
    }
    let names = resource_names(pod);
    let used = |name: &str| -> i128 { active.iter().map(|p| request_units(p, name)).sum() };
    for name in NATIVE_COMPARED {
        let req = request_units(pod, name);
        if req == 0 {
            continue;
        }
        let cap = alloc_units(node, name).unwrap_or(0);
        let u = used(name);
        if req > cap - u {
            return Err(insufficient(name, req, u, cap));
        }
    }
    for name in names
        .iter()
        .filter(|n| !NATIVE_COMPARED.contains(&n.as_str()) && n.as_str() != "pods")
    {
        let req = request_units(pod, name);
        if req == 0 {
            continue;
        }
        let cap = alloc_units(node, name);
        // Extended resources the node does not advertise are ignored
        // (`removeMissingExtendedResources`); others (hugepages-*) count as capacity 0.
        if cap.is_none() && is_extended(name) {
            continue;
        }
        let cap = cap.unwrap_or(0);
        let u = used(name);
        if req > cap - u {
            return Err(insufficient(name, req, u, cap));
        }
    }
    Ok(())
}

fn node_labels(node: &Node) -> BTreeMap<String, String> {
    node.metadata.labels.clone().unwrap_or_default()
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        op @ ("Gt" | "Lt") => {
            // Exactly one integer value; a malformed requirement matches nothing.
            let [bound] = values else { return false };
            let (Ok(bound), Some(Ok(v))) = (bound.parse::<i64>(), value.map(str::parse::<i64>)) else {
                return false;
            };
            if op == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

fn field_matches(r: &NodeSelectorRequirement, node: &Node) -> bool {
    // Only metadata.name is a supported field, and only with In/NotIn.
    if r.key != "metadata.name" || !matches!(r.operator.as_str(), "In" | "NotIn") {
        return false;
    }
    let values = r.values.as_deref().unwrap_or(&[]);
    if values.len() != 1 {
        // The API validates exactly one value for field selectors.
        return false;
    }
    requirement_matches(r, node.metadata.name.as_deref())
}

fn term_matches(t: &NodeSelectorTerm, labels: &BTreeMap<String, String>, node: &Node) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or(&[]);
    let fields = t.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        // An empty term matches no objects.
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| field_matches(r, node))
}

/// `GetRequiredNodeAffinity(pod).Match(node)`: nodeSelector and the required terms.
pub fn matches_node_affinity(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let labels = node_labels(node);
    if let Some(sel) = &spec.node_selector {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    match required {
        None => true,
        Some(sel) => sel.node_selector_terms.iter().any(|t| term_matches(t, &labels, node)),
    }
}

/// (protocol, hostIP, hostPort) of every container port with a host port.
fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let hp = p.host_port.filter(|hp| *hp > 0)?;
            let ip = p
                .host_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into());
            Some((p.protocol.clone().unwrap_or_else(|| "TCP".into()), ip, hp))
        })
        .collect()
}

/// `nodeports.Fits`: no host port of the pod is taken by an active pod (0.0.0.0 overlaps all).
fn fits_host_ports(pod: &Pod, active: &[&Pod]) -> bool {
    let wanted = host_ports(pod);
    if wanted.is_empty() {
        return true;
    }
    let used: Vec<(String, String, i32)> = active.iter().flat_map(|p| host_ports(p)).collect();
    !wanted.iter().any(|(proto, ip, port)| {
        used.iter()
            .any(|(p2, ip2, port2)| p2 == proto && port2 == port && (ip == ip2 || ip == "0.0.0.0" || ip2 == "0.0.0.0"))
    })
}

/// The predicate admit handler.
fn admit_predicates(pod: &Pod, active: &[&Pod], node: &Node) -> Result<(), Rejection> {
    fits_resources(pod, active, node)?;
    if !matches_node_affinity(pod, node) {
        return Err(Rejection::predicate("NodeAffinity"));
    }
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("");
    if !node_name.is_empty() && Some(node_name) != node.metadata.name.as_deref() {
        return Err(Rejection::predicate("NodeName"));
    }
    if !fits_host_ports(pod, active) {
        return Err(Rejection::predicate("NodePorts"));
    }
    // The node's OS label is taken as this OS whatever the Node says.
    let pod_os_label = pod.metadata.labels.as_ref().and_then(|l| l.get(LABEL_OS));
    if pod_os_label.is_some_and(|os| os != NODE_OS) {
        return Err(Rejection::new(
            "PodOSSelectorNodeLabelDoesNotMatch",
            "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label",
        ));
    }
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.os.as_ref())
        .is_some_and(|os| os.name != NODE_OS)
    {
        return Err(Rejection::new(
            "PodOSNotSupported",
            "Failed to admit pod as the OS field doesn't match node OS",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handlers with the safe sysctls only.
    fn admit(pod: &Pod, active: &[&Pod], node: &Node) -> Result<(), Rejection> {
        super::admit(pod, active, node, &Allowlist::for_node::<&str>(&[]).unwrap())
    }

    #[test]
    fn unsafe_sysctls_are_refused_before_the_predicates() {
        let mut p = pod_req(&[&[("cpu", "100")]]);
        p.spec.as_mut().unwrap().security_context = Some(k8s_openapi::api::core::v1::PodSecurityContext {
            sysctls: Some(vec![k8s_openapi::api::core::v1::Sysctl {
                name: "kernel.msgmax".into(),
                value: "1".into(),
            }]),
            ..Default::default()
        });
        let n = std_node();
        let want = reject("SysctlForbidden", "forbidden sysctl: \"kernel.msgmax\" not allowlisted");
        assert_eq!(admit(&p, &[], &n), want);
        let allowed = Allowlist::for_node(&["kernel.msg*"]).unwrap();
        // Allowed: the next handler decides (the pod asks for more cpu than the node has).
        assert_eq!(super::admit(&p, &[], &n, &allowed).unwrap_err().reason, "OutOfcpu");
    }
    use k8s_openapi::api::core::v1::{
        Affinity, Container, ContainerPort, NodeAffinity, NodeCondition, NodeSelector, NodeStatus, PodOS, PodSpec,
        ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn q(m: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        m.iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    }

    fn node(alloc: &[(&str, &str)], labels: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("machine1".into()),
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                allocatable: Some(q(alloc)),
                capacity: Some(q(alloc)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn std_node() -> Node {
        node(
            &[
                ("cpu", "10m"),
                ("memory", "20"),
                ("pods", "32"),
                ("ephemeral-storage", "20"),
                ("example.com/aaa", "5"),
            ],
            &[],
        )
    }

    fn pod_req(containers: &[&[(&str, &str)]]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: containers
                    .iter()
                    .enumerate()
                    .map(|(i, r)| Container {
                        name: format!("c{i}"),
                        resources: Some(ResourceRequirements {
                            requests: Some(q(r)),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn with_init(mut p: Pod, init: &[&[(&str, &str)]]) -> Pod {
        let spec = p.spec.as_mut().unwrap();
        spec.init_containers = Some(
            init.iter()
                .enumerate()
                .map(|(i, r)| Container {
                    name: format!("i{i}"),
                    resources: Some(ResourceRequirements {
                        requests: Some(q(r)),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
        );
        p
    }

    fn reject(reason: &str, msg: &str) -> Result<(), Rejection> {
        Err(Rejection::new(reason, msg))
    }

    /// GeneralPredicates / noderesources.Fits resource cases (scheduler `TestEnoughRequests`).
    #[test]
    fn resource_fits() {
        let n = std_node();
        let m = |r: &str, req: i128, used: i128, cap: i128| {
            reject(
                &format!("OutOf{r}"),
                &format!("Node didn't have enough resource: {r}, requested: {req}, used: {used}, capacity: {cap}"),
            )
        };
        type Case = (&'static str, Pod, Vec<Pod>, Result<(), Rejection>);
        let cases: Vec<Case> = vec![
            (
                "no resources requested always fits",
                pod_req(&[&[]]),
                vec![pod_req(&[&[("cpu", "10m"), ("memory", "20")]])],
                Ok(()),
            ),
            (
                "too many resources fails (cpu first)",
                pod_req(&[&[("cpu", "1m"), ("memory", "1")]]),
                vec![pod_req(&[&[("cpu", "10m"), ("memory", "20")]])],
                m("cpu", 1, 10, 10),
            ),
            (
                "too many resources fails due to init container cpu",
                with_init(
                    pod_req(&[&[("cpu", "1m"), ("memory", "1")]]),
                    &[&[("cpu", "3m"), ("memory", "1")]],
                ),
                vec![pod_req(&[&[("cpu", "8m"), ("memory", "19")]])],
                m("cpu", 3, 8, 10),
            ),
            (
                "init container sum below peak fits",
                with_init(
                    pod_req(&[&[("cpu", "1m"), ("memory", "1")]]),
                    &[&[("cpu", "2m"), ("memory", "1")], &[("cpu", "2m"), ("memory", "1")]],
                ),
                vec![pod_req(&[&[("cpu", "8m"), ("memory", "19")]])],
                Ok(()),
            ),
            (
                "too many resources fails due to highest init container memory",
                with_init(
                    pod_req(&[&[("cpu", "1m"), ("memory", "1")]]),
                    &[&[("cpu", "1m"), ("memory", "3")], &[("cpu", "1m"), ("memory", "2")]],
                ),
                vec![pod_req(&[&[("cpu", "9m"), ("memory", "19")]])],
                m("memory", 3, 19, 20),
            ),
            (
                "both resources fit",
                pod_req(&[&[("cpu", "1m"), ("memory", "1")]]),
                vec![pod_req(&[&[("cpu", "5m"), ("memory", "5")]])],
                Ok(()),
            ),
            (
                "one resource memory fits",
                pod_req(&[&[("cpu", "2m"), ("memory", "1")]]),
                vec![pod_req(&[&[("cpu", "9m"), ("memory", "5")]])],
                m("cpu", 2, 9, 10),
            ),
            (
                "one resource cpu fits",
                pod_req(&[&[("cpu", "1m"), ("memory", "2")]]),
                vec![pod_req(&[&[("cpu", "5m"), ("memory", "19")]])],
                m("memory", 2, 19, 20),
            ),
            (
                "equal edge case",
                pod_req(&[&[("cpu", "5m"), ("memory", "1")]]),
                vec![pod_req(&[&[("cpu", "5m"), ("memory", "19")]])],
                Ok(()),
            ),
            (
                "extended resource fits",
                pod_req(&[&[("example.com/aaa", "1")]]),
                vec![pod_req(&[&[("example.com/aaa", "4")]])],
                Ok(()),
            ),
            (
                "extended resource capacity enforced",
                pod_req(&[&[("example.com/aaa", "2")]]),
                vec![pod_req(&[&[("example.com/aaa", "4")]])],
                m("example.com/aaa", 2, 4, 5),
            ),
            (
                "extended resource missing on the node is ignored",
                pod_req(&[&[("example.com/bbb", "2")]]),
                vec![],
                Ok(()),
            ),
            (
                "hugepages not advertised count as zero",
                pod_req(&[&[("hugepages-2Mi", "2Mi")]]),
                vec![],
                m("hugepages-2Mi", 2097152, 0, 0),
            ),
            (
                "ephemeral storage",
                pod_req(&[&[("ephemeral-storage", "10")]]),
                vec![pod_req(&[&[("ephemeral-storage", "15")]])],
                m("ephemeral-storage", 10, 15, 20),
            ),
        ];
        for (name, p, others, want) in cases {
            let refs: Vec<&Pod> = others.iter().collect();
            assert_eq!(admit(&p, &refs, &n), want, "{name}");
        }
    }

    #[test]
    fn pod_count() {
        let n = node(&[("cpu", "10"), ("memory", "20Gi"), ("pods", "1")], &[]);
        let other = pod_req(&[&[]]);
        assert_eq!(
            admit(&pod_req(&[&[]]), &[&other], &n),
            reject(
                "OutOfpods",
                "Node didn't have enough resource: pods, requested: 1, used: 1, capacity: 1"
            )
        );
        assert_eq!(admit(&pod_req(&[&[]]), &[], &n), Ok(()));
        // Memory is printed in bytes.
        assert_eq!(
            admit(&pod_req(&[&[("memory", "30Gi")]]), &[], &n),
            reject(
                "OutOfmemory",
                "Node didn't have enough resource: memory, requested: 32212254720, used: 0, capacity: 21474836480"
            )
        );
    }

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: if values.is_empty() {
                None
            } else {
                Some(values.iter().map(|v| v.to_string()).collect())
            },
        }
    }

    fn with_affinity(terms: Vec<NodeSelectorTerm>) -> Pod {
        let mut p = pod_req(&[&[]]);
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: terms,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    fn exprs(rs: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: Some(rs),
            match_fields: None,
        }
    }

    #[test]
    fn node_affinity() {
        let n = node(&[("pods", "10")], &[("foo", "bar"), ("gpu", "4"), ("zone", "a")]);
        let affinity_fail = reject("NodeAffinity", "Predicate NodeAffinity failed");
        let mut sel = pod_req(&[&[]]);
        sel.spec.as_mut().unwrap().node_selector = Some([("foo".to_string(), "bar".to_string())].into());
        let mut sel_bad = sel.clone();
        sel_bad.spec.as_mut().unwrap().node_selector = Some([("foo".to_string(), "baz".to_string())].into());
        let cases: Vec<(&str, Pod, Result<(), Rejection>)> = vec![
            ("no selector", pod_req(&[&[]]), Ok(())),
            ("nodeSelector matches", sel, Ok(())),
            ("nodeSelector mismatch", sel_bad, affinity_fail.clone()),
            (
                "In matches",
                with_affinity(vec![exprs(vec![req("foo", "In", &["bar", "value2"])])]),
                Ok(()),
            ),
            (
                "In mismatch",
                with_affinity(vec![exprs(vec![req("foo", "In", &["value1"])])]),
                affinity_fail.clone(),
            ),
            (
                "NotIn matches",
                with_affinity(vec![exprs(vec![req("foo", "NotIn", &["x"])])]),
                Ok(()),
            ),
            (
                "NotIn on missing label matches",
                with_affinity(vec![exprs(vec![req("nope", "NotIn", &["x"])])]),
                Ok(()),
            ),
            (
                "NotIn mismatch",
                with_affinity(vec![exprs(vec![req("foo", "NotIn", &["bar"])])]),
                affinity_fail.clone(),
            ),
            (
                "Exists",
                with_affinity(vec![exprs(vec![req("zone", "Exists", &[])])]),
                Ok(()),
            ),
            (
                "DoesNotExist fails",
                with_affinity(vec![exprs(vec![req("zone", "DoesNotExist", &[])])]),
                affinity_fail.clone(),
            ),
            ("Gt", with_affinity(vec![exprs(vec![req("gpu", "Gt", &["3"])])]), Ok(())),
            (
                "Gt fails",
                with_affinity(vec![exprs(vec![req("gpu", "Gt", &["4"])])]),
                affinity_fail.clone(),
            ),
            ("Lt", with_affinity(vec![exprs(vec![req("gpu", "Lt", &["5"])])]), Ok(())),
            (
                "Lt on non-integer label fails",
                with_affinity(vec![exprs(vec![req("foo", "Lt", &["5"])])]),
                affinity_fail.clone(),
            ),
            (
                "terms are ORed",
                with_affinity(vec![
                    exprs(vec![req("foo", "In", &["x"])]),
                    exprs(vec![req("zone", "In", &["a"])]),
                ]),
                Ok(()),
            ),
            (
                "expressions are ANDed",
                with_affinity(vec![exprs(vec![req("foo", "In", &["bar"]), req("zone", "In", &["b"])])]),
                affinity_fail.clone(),
            ),
            (
                "empty term matches nothing",
                with_affinity(vec![NodeSelectorTerm::default()]),
                affinity_fail.clone(),
            ),
            ("no terms match nothing", with_affinity(vec![]), affinity_fail.clone()),
            (
                "matchFields metadata.name",
                with_affinity(vec![NodeSelectorTerm {
                    match_expressions: None,
                    match_fields: Some(vec![req("metadata.name", "In", &["machine1"])]),
                }]),
                Ok(()),
            ),
            (
                "matchFields other node",
                with_affinity(vec![NodeSelectorTerm {
                    match_expressions: None,
                    match_fields: Some(vec![req("metadata.name", "In", &["machine2"])]),
                }]),
                affinity_fail.clone(),
            ),
            (
                "matchFields and labels",
                with_affinity(vec![NodeSelectorTerm {
                    match_expressions: Some(vec![req("foo", "In", &["bar"])]),
                    match_fields: Some(vec![req("metadata.name", "NotIn", &["machine2"])]),
                }]),
                Ok(()),
            ),
        ];
        for (name, p, want) in cases {
            assert_eq!(admit(&p, &[], &n), want, "{name}");
        }
    }

    #[test]
    fn node_name_ports_and_os() {
        let n = node(&[("pods", "10")], &[]);
        let mut p = pod_req(&[&[]]);
        p.spec.as_mut().unwrap().node_name = Some("machine2".into());
        assert_eq!(admit(&p, &[], &n), reject("NodeName", "Predicate NodeName failed"));
        p.spec.as_mut().unwrap().node_name = Some("machine1".into());
        assert_eq!(admit(&p, &[], &n), Ok(()));

        let with_port = |ip: &str, port: i32, proto: &str| {
            let mut p = pod_req(&[&[]]);
            p.spec.as_mut().unwrap().containers[0].ports = Some(vec![ContainerPort {
                container_port: 80,
                host_port: Some(port),
                host_ip: Some(ip.into()),
                protocol: Some(proto.into()),
                ..Default::default()
            }]);
            p
        };
        let taken = with_port("127.0.0.1", 8080, "TCP");
        let ports_fail = reject("NodePorts", "Predicate NodePorts failed");
        assert_eq!(admit(&with_port("127.0.0.1", 8080, "TCP"), &[&taken], &n), ports_fail);
        assert_eq!(admit(&with_port("0.0.0.0", 8080, "TCP"), &[&taken], &n), ports_fail);
        assert_eq!(admit(&with_port("127.0.0.2", 8080, "TCP"), &[&taken], &n), Ok(()));
        assert_eq!(admit(&with_port("127.0.0.1", 8080, "UDP"), &[&taken], &n), Ok(()));
        assert_eq!(admit(&with_port("127.0.0.1", 8081, "TCP"), &[&taken], &n), Ok(()));

        let mut p = pod_req(&[&[]]);
        p.metadata.labels = Some([(LABEL_OS.to_string(), "windows".to_string())].into());
        assert_eq!(
            admit(&p, &[], &n),
            reject(
                "PodOSSelectorNodeLabelDoesNotMatch",
                "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label"
            )
        );
        p.metadata.labels = Some([(LABEL_OS.to_string(), NODE_OS.to_string())].into());
        assert_eq!(admit(&p, &[], &n), Ok(()));
        p.spec.as_mut().unwrap().os = Some(PodOS { name: "windows".into() });
        assert_eq!(
            admit(&p, &[], &n),
            reject(
                "PodOSNotSupported",
                "Failed to admit pod as the OS field doesn't match node OS"
            )
        );
    }

    fn pressured(conds: &[&str]) -> Node {
        let mut n = node(&[("pods", "10"), ("cpu", "4"), ("memory", "4Gi")], &[]);
        n.status.as_mut().unwrap().conditions = Some(
            conds
                .iter()
                .map(|c| NodeCondition {
                    type_: c.to_string(),
                    status: "True".into(),
                    ..Default::default()
                })
                .chain(std::iter::once(NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }))
                .collect(),
        );
        n
    }

    /// Eviction manager `TestAdmitUnderNodeConditions`-like cases.
    #[test]
    fn eviction_admission() {
        let best_effort = pod_req(&[&[]]);
        let burstable = pod_req(&[&[("cpu", "100m")]]);
        let mut critical = pod_req(&[&[]]);
        critical.metadata.annotations = Some([(ANNOTATION_CONFIG_SOURCE.to_string(), "file".to_string())].into());
        let mut tolerant = pod_req(&[&[]]);
        tolerant.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
            key: Some(TAINT_MEMORY_PRESSURE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }]);
        let mem = pressured(&["MemoryPressure"]);
        let disk = pressured(&["MemoryPressure", "DiskPressure"]);
        let none = pressured(&[]);
        let evicted = |c: &str| reject("Evicted", &format!("The node had condition: [{c}]. "));
        assert_eq!(admit(&best_effort, &[], &none), Ok(()));
        assert_eq!(admit(&best_effort, &[], &mem), evicted("MemoryPressure"));
        assert_eq!(admit(&burstable, &[], &mem), Ok(()));
        assert_eq!(admit(&tolerant, &[], &mem), Ok(()));
        assert_eq!(admit(&critical, &[], &mem), Ok(()));
        assert_eq!(admit(&burstable, &[], &disk), evicted("MemoryPressure DiskPressure"));
        assert_eq!(admit(&critical, &[], &disk), Ok(()));
    }
}
