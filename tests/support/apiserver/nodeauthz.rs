//! The Node authorizer and the NodeRestriction admission plugin of a v1.24 server
//! (`--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction`), for
//! identities `system:node:<name>` in group `system:nodes`:
//!
//! - Secrets and ConfigMaps: get/list/watch of one named object (a list or watch names it with a
//!   `metadata.name` field selector) referenced by a pod bound to the node; PVCs: get (and status
//!   update) of those a bound pod uses; service-account tokens: create for the account of a bound
//!   pod; Leases: only `kube-node-lease/<node>`;
//! - everything else by the static `system:node` rules: nodes (create/get/list/watch/update/
//!   patch, status), core/v1 events (create/update/patch; events.k8s.io is not there), pods
//!   (read, create/delete, status, eviction), services and endpoints (read), CSRs, reviews,
//!   runtimeclasses, CSI objects;
//! - NodeRestriction then limits writes to the node's own Node object, pods bound to it (status,
//!   eviction, delete) and mirror pods of its own static pods.

use serde_json::Value;

use super::authz::{Attributes, Decision};
use super::errors::ApiError;
use super::store::Inner;

const NODE_USER_PREFIX: &str = "system:node:";
const NODES_GROUP: &str = "system:nodes";
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node name of a node identity (`NodeIdentity`).
pub fn node_identity<'a>(user: &'a str, groups: &[String]) -> Option<&'a str> {
    let name = user.strip_prefix(NODE_USER_PREFIX)?;
    groups.iter().any(|g| g == NODES_GROUP).then_some(name)
}

/// `(group, resource[/subresource], verbs)` of the static node rules (`NodeRules`, v1.24).
const NODE_RULES: &[(&str, &str, &[&str])] = &[
    ("authentication.k8s.io", "tokenreviews", &["create"]),
    ("authorization.k8s.io", "subjectaccessreviews", &["create"]),
    ("authorization.k8s.io", "localsubjectaccessreviews", &["create"]),
    // system:basic-user, bound to every authenticated user.
    ("authorization.k8s.io", "selfsubjectaccessreviews", &["create"]),
    ("authorization.k8s.io", "selfsubjectrulesreviews", &["create"]),
    ("authentication.k8s.io", "selfsubjectreviews", &["create"]),
    ("", "services", &["get", "list", "watch"]),
    ("", "nodes", &["create", "get", "list", "watch", "update", "patch"]),
    ("", "nodes/status", &["update", "patch"]),
    ("", "events", &["create", "update", "patch"]),
    ("", "pods", &["get", "list", "watch", "create", "delete"]),
    ("", "pods/status", &["update", "patch"]),
    ("", "pods/eviction", &["create"]),
    ("", "endpoints", &["get"]),
    (
        "certificates.k8s.io",
        "certificatesigningrequests",
        &["create", "get", "list", "watch"],
    ),
    ("storage.k8s.io", "volumeattachments", &["get"]),
    (
        "storage.k8s.io",
        "csinodes",
        &["get", "watch", "list", "create", "update", "patch", "delete"],
    ),
    ("storage.k8s.io", "csidrivers", &["get", "watch", "list"]),
    ("node.k8s.io", "runtimeclasses", &["get", "list", "watch"]),
];

fn pods_on<'a>(store: &'a Inner, node: &str) -> impl Iterator<Item = &'a Value> + 'a {
    let node = node.to_string();
    store
        .list("pods", None)
        .into_iter()
        .filter(move |p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node.as_str()))
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// Names of objects of `kind` ("secret", "configmap", "pvc", "serviceaccount") a pod refers to
/// (the edges of the Node authorizer's graph).
pub fn pod_references(pod: &Value, kind: &str) -> Vec<String> {
    let mut out = Vec::new();
    let spec = &pod["spec"];
    let mut push = |s: Option<&str>| {
        if let Some(s) = s.filter(|s| !s.is_empty()) {
            out.push(s.to_string());
        }
    };
    if kind == "serviceaccount" {
        push(str_at(spec, "/serviceAccountName"));
        return out;
    }
    if kind == "secret" {
        for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
            push(str_at(s, "/name"));
        }
    }
    let containers = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|l| spec[*l].as_array().cloned().unwrap_or_default());
    for c in containers {
        for e in c["env"].as_array().into_iter().flatten() {
            match kind {
                "secret" => push(str_at(e, "/valueFrom/secretKeyRef/name")),
                "configmap" => push(str_at(e, "/valueFrom/configMapKeyRef/name")),
                _ => {}
            }
        }
        for e in c["envFrom"].as_array().into_iter().flatten() {
            match kind {
                "secret" => push(str_at(e, "/secretRef/name")),
                "configmap" => push(str_at(e, "/configMapRef/name")),
                _ => {}
            }
        }
    }
    let pod_name = str_at(pod, "/metadata/name").unwrap_or_default();
    for v in spec["volumes"].as_array().into_iter().flatten() {
        match kind {
            "secret" => {
                push(str_at(v, "/secret/secretName"));
                for p in [
                    "/cephfs/secretRef/name",
                    "/rbd/secretRef/name",
                    "/iscsi/secretRef/name",
                    "/csi/nodePublishSecretRef/name",
                    "/flexVolume/secretRef/name",
                    "/azureFile/secretName",
                    "/scaleIO/secretRef/name",
                    "/storageos/secretRef/name",
                ] {
                    push(str_at(v, p));
                }
            }
            "configmap" => push(str_at(v, "/configMap/name")),
            "pvc" => {
                push(str_at(v, "/persistentVolumeClaim/claimName"));
                if v.get("ephemeral").is_some() {
                    let name = format!("{pod_name}-{}", str_at(v, "/name").unwrap_or_default());
                    push(Some(&name));
                }
            }
            _ => {}
        }
        for src in v
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match kind {
                "secret" => push(str_at(src, "/secret/name")),
                "configmap" => push(str_at(src, "/configMap/name")),
                _ => {}
            }
        }
    }
    out
}

/// Whether a pod bound to `node` in `ns` refers to `kind` `name` (`hasPathFrom`).
fn related(store: &Inner, node: &str, kind: &str, ns: &str, name: &str) -> bool {
    pods_on(store, node)
        .filter(|p| str_at(p, "/metadata/namespace") == Some(ns))
        .any(|p| pod_references(p, kind).iter().any(|n| n == name))
}

fn no_relationship(node: &str) -> Decision {
    Decision {
        allowed: false,
        reason: format!("no relationship found between node '{node}' and this object"),
    }
}

fn static_rules(attrs: &Attributes) -> Decision {
    let Attributes::Resource {
        verb,
        group,
        resource,
        subresource,
        ..
    } = attrs
    else {
        return Decision {
            allowed: false,
            reason: String::new(),
        };
    };
    let full = if subresource.is_empty() {
        resource.clone()
    } else {
        format!("{resource}/{subresource}")
    };
    let allowed = NODE_RULES
        .iter()
        .any(|(g, r, verbs)| g == group && *r == full && verbs.contains(&verb.as_str()));
    Decision {
        allowed,
        reason: String::new(),
    }
}

/// The Node authorizer's decision (falling through to the static rules, as RBAC's `system:node`
/// role would grant nothing more: v1.24 binds it to no one).
pub fn authorize(node: &str, attrs: &Attributes, store: &Inner) -> Decision {
    let Attributes::Resource {
        verb,
        group,
        resource,
        subresource,
        namespace,
        name,
    } = attrs
    else {
        return static_rules(attrs);
    };
    let deny = |reason: &str| Decision {
        allowed: false,
        reason: reason.to_string(),
    };
    match (group.as_str(), resource.as_str()) {
        ("", "secrets") | ("", "configmaps") => {
            if !["get", "list", "watch"].contains(&verb.as_str()) {
                return deny("can only read resources of this type");
            }
            if !subresource.is_empty() {
                return deny("cannot read subresource");
            }
            if namespace.is_empty() {
                return deny("can only read namespaced object of this type");
            }
            if name.is_empty() {
                return deny("No Object name found");
            }
            let kind = if resource == "secrets" { "secret" } else { "configmap" };
            if related(store, node, kind, namespace, name) {
                Decision {
                    allowed: true,
                    reason: String::new(),
                }
            } else {
                no_relationship(node)
            }
        }
        ("", "persistentvolumeclaims") => {
            let ok_verb = if subresource == "status" {
                verb == "update" || verb == "patch"
            } else {
                verb == "get" && subresource.is_empty()
            };
            if !ok_verb {
                return deny("can only get individual resources of this type");
            }
            if related(store, node, "pvc", namespace, name) {
                Decision {
                    allowed: true,
                    reason: String::new(),
                }
            } else {
                no_relationship(node)
            }
        }
        ("", "serviceaccounts") => {
            if verb != "create" || subresource != "token" {
                return deny("can only create tokens for individual service accounts");
            }
            if related(store, node, "serviceaccount", namespace, name) {
                Decision {
                    allowed: true,
                    reason: String::new(),
                }
            } else {
                no_relationship(node)
            }
        }
        ("coordination.k8s.io", "leases") => {
            if !["get", "create", "update", "patch", "delete"].contains(&verb.as_str()) {
                return deny("can only get, create, update, patch, or delete a node lease");
            }
            if namespace != LEASE_NAMESPACE {
                return deny(&format!(
                    "can only access leases in the {LEASE_NAMESPACE} system namespace"
                ));
            }
            // The name of a create is checked by NodeRestriction.
            if verb != "create" && name != node {
                return deny("can only access node lease with the same name as the requesting node");
            }
            Decision {
                allowed: true,
                reason: String::new(),
            }
        }
        _ => static_rules(attrs),
    }
}

fn forbidden(resource: &str, name: &str, why: String) -> ApiError {
    let mut e = ApiError::new(403, "Forbidden", format!("{resource} \"{name}\" is forbidden: {why}"));
    e.details = Some(serde_json::json!({"name": name, "kind": resource}));
    e
}

/// NodeRestriction for a write `verb` by `node` on `resource[/subresource]` `ns/name`; `body`
/// is the request's object (create/update) where there is one.
pub fn admit(node: &str, verb: &str, attrs: &Attributes, body: Option<&Value>, store: &Inner) -> Result<(), ApiError> {
    let Attributes::Resource {
        group,
        resource,
        subresource,
        namespace,
        name,
        ..
    } = attrs
    else {
        return Ok(());
    };
    if !["create", "update", "patch", "delete"].contains(&verb) {
        return Ok(());
    }
    let body_name = body.and_then(|b| str_at(b, "/metadata/name")).unwrap_or_default();
    let name = if name.is_empty() { body_name } else { name.as_str() };
    match (group.as_str(), resource.as_str(), subresource.as_str()) {
        ("", "nodes", _) if name != node => {
            return Err(forbidden(
                "nodes",
                name,
                format!("node \"{node}\" is not allowed to modify node \"{name}\""),
            ));
        }
        ("coordination.k8s.io", "leases", "") if verb == "create" && name != node => {
            return Err(forbidden(
                "leases",
                name,
                "can only access node lease with the same name as the requesting node".into(),
            ));
        }
        ("", "pods", "") if verb == "create" => {
            let Some(pod) = body else { return Ok(()) };
            let mirror = pod
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(MIRROR_ANNOTATION))
                .is_some();
            if !mirror {
                return Err(forbidden(
                    "pods",
                    name,
                    format!("pod does not have \"{MIRROR_ANNOTATION}\" annotation, node \"{node}\" can only create mirror pods"),
                ));
            }
            if str_at(pod, "/spec/nodeName") != Some(node) {
                return Err(forbidden(
                    "pods",
                    name,
                    format!("node \"{node}\" can only create pods with spec.nodeName set to itself"),
                ));
            }
            for (kind, what) in [
                ("secret", "secrets"),
                ("configmap", "configmaps"),
                ("pvc", "persistentvolumeclaims"),
            ] {
                if !pod_references(pod, kind).is_empty() {
                    return Err(forbidden(
                        "pods",
                        name,
                        format!("node \"{node}\" can not create pods that reference {what}"),
                    ));
                }
            }
            if let Some(sa) = str_at(pod, "/spec/serviceAccountName").filter(|s| !s.is_empty()) {
                return Err(forbidden(
                    "pods",
                    name,
                    format!("node \"{node}\" can not create pods that use service accounts (\"{sa}\")"),
                ));
            }
        }
        ("", "pods", sub) if sub.is_empty() || sub == "status" || sub == "eviction" => {
            // Delete, status and eviction: only pods bound to this node (a missing pod is the
            // handler's 404).
            let Some(existing) = store.get("pods", namespace, name) else {
                return Ok(());
            };
            if str_at(existing, "/spec/nodeName") != Some(node) {
                let what = match sub {
                    "status" => "update pod status for",
                    "eviction" => "evict",
                    _ => "delete",
                };
                return Err(forbidden(
                    "pods",
                    name,
                    format!("node \"{node}\" can only {what} pods with spec.nodeName set to itself"),
                ));
            }
        }
        ("", "serviceaccounts", "token") => {
            let bound = body.and_then(|b| b.pointer("/spec/boundObjectRef"));
            let Some(bound) = bound.filter(|b| str_at(b, "/kind") == Some("Pod")) else {
                return Err(forbidden(
                    "serviceaccounts",
                    name,
                    "node requested token not bound to a pod".into(),
                ));
            };
            let pod_name = str_at(bound, "/name").unwrap_or_default();
            let on_node = store
                .get("pods", namespace, pod_name)
                .is_some_and(|p| str_at(p, "/spec/nodeName") == Some(node));
            if !on_node {
                return Err(forbidden(
                    "serviceaccounts",
                    name,
                    "node requested token bound to a pod scheduled on a different node".into(),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_references_follow_the_graph_edges() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "serviceAccountName": "sa",
            "imagePullSecrets": [{"name": "pull"}],
            "containers": [{"name": "c",
                "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-s", "key": "k"}}},
                        {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-c", "key": "k"}}}],
                "envFrom": [{"secretRef": {"name": "from-s"}}, {"configMapRef": {"name": "from-c"}}]}],
            "volumes": [
                {"name": "s", "secret": {"secretName": "vol-s"}},
                {"name": "c", "configMap": {"name": "vol-c"}},
                {"name": "d", "persistentVolumeClaim": {"claimName": "claim"}},
                {"name": "e", "ephemeral": {"volumeClaimTemplate": {}}},
                {"name": "p", "projected": {"sources": [{"secret": {"name": "proj-s"}}, {"configMap": {"name": "proj-c"}}]}}]}});
        assert_eq!(
            pod_references(&pod, "secret"),
            ["pull", "env-s", "from-s", "vol-s", "proj-s"]
        );
        assert_eq!(
            pod_references(&pod, "configmap"),
            ["env-c", "from-c", "vol-c", "proj-c"]
        );
        assert_eq!(pod_references(&pod, "pvc"), ["claim", "p-e"]);
        assert_eq!(pod_references(&pod, "serviceaccount"), ["sa"]);
    }

    #[test]
    fn static_rules_allow_core_events_only() {
        let a = |verb: &str, group: &str, res: &str, sub: &str| {
            static_rules(&Attributes::resource(verb, group, res, sub, "default", "x")).allowed
        };
        assert!(a("create", "", "events", ""));
        assert!(a("patch", "", "events", ""));
        assert!(!a("create", "events.k8s.io", "events", ""));
        assert!(!a("delete", "", "events", ""));
        assert!(a("patch", "", "nodes", "status"));
        assert!(a("patch", "", "pods", "status"));
        assert!(!a("update", "", "pods", ""));
        assert!(!a("create", "", "namespaces", ""));
        assert!(!a("list", "", "secrets", ""));
        assert!(node_identity("system:node:n1", &["system:nodes".into()]) == Some("n1"));
        assert!(node_identity("system:node:n1", &[]).is_none());
        assert!(node_identity("admin", &["system:nodes".into()]).is_none());
    }
}
