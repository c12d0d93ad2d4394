//! Authorization like a kubeadm cluster's defaults where keel's tests meet it: `system:masters`
//! may do everything; the apiserver's kubelet client identity (`kube-apiserver-kubelet-client`,
//! bound to `system:kubelet-api-admin` by kubeadm) may use the kubelet API of every node; nodes
//! may create TokenReviews and SubjectAccessReviews (the `system:node` rules the Node authorizer
//! applies, which is how a kubelet's webhook authn/authz works); every authenticated user may
//! create self reviews and read the discovery paths; a test can grant a user more.
//!
//! The object API (pods, nodes, configmaps ... and their status/binding/eviction/token
//! subresources) stays open to every authenticated user: the Node authorizer and the RBAC roles
//! for objects are not modelled, and the tests' users are admins and nodes. Everything else (the
//! kubelet API `nodes/proxy|stats|metrics|log|...`, `pods/exec|attach|portforward|log|proxy`,
//! `services/proxy`, reviews for others) is denied unless one of the rules above allows it.

use std::sync::Mutex;

use serde_json::{json, Value};

use super::errors::ApiError;

/// CN of the client certificate the apiserver presents to kubelets (kubeadm's name).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
const MASTERS: &str = "system:masters";
const NODES: &str = "system:nodes";
const AUTHENTICATED: &str = "system:authenticated";

/// Subresources of ordinary objects: open to every authenticated user (no object RBAC here).
const OBJECT_SUBRESOURCES: &[&str] = &[
    "",
    "status",
    "binding",
    "eviction",
    "token",
    "ephemeralcontainers",
    "finalize",
];
/// The kubelet API subresources of `system:kubelet-api-admin` (all verbs), with the 1.33
/// fine-grained ones (`pods`, `healthz`, `configz`).
const KUBELET_API_SUBRESOURCES: &[&str] = &["proxy", "metrics", "stats", "log", "pods", "healthz", "configz"];
/// Non-resource paths `system:discovery` and `system:public-info-viewer` open to all.
const DISCOVERY_PATHS: &[&str] = &["/api", "/apis", "/version", "/healthz", "/livez", "/readyz", "/openapi"];

/// What a request does, as the authorizer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attributes {
    Resource {
        verb: String,
        group: String,
        resource: String,
        subresource: String,
        namespace: String,
        name: String,
    },
    NonResource {
        verb: String,
        path: String,
    },
}

impl Attributes {
    pub fn resource(verb: &str, group: &str, resource: &str, subresource: &str, namespace: &str, name: &str) -> Self {
        Attributes::Resource {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// `spec.resourceAttributes` / `spec.nonResourceAttributes` of a (Self)SubjectAccessReview.
    pub fn from_review_spec(spec: &Value) -> Option<Attributes> {
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        match (spec.get("resourceAttributes"), spec.get("nonResourceAttributes")) {
            (Some(r), None) if r.is_object() => Some(Attributes::Resource {
                verb: s(r, "verb"),
                group: s(r, "group"),
                resource: s(r, "resource"),
                subresource: s(r, "subresource"),
                namespace: s(r, "namespace"),
                name: s(r, "name"),
            }),
            (None, Some(n)) if n.is_object() => Some(Attributes::NonResource {
                verb: s(n, "verb"),
                path: s(n, "path"),
            }),
            _ => None,
        }
    }
}

/// The authorizer's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

impl Decision {
    fn allow(reason: impl Into<String>) -> Decision {
        Decision {
            allowed: true,
            reason: reason.into(),
        }
    }

    fn deny() -> Decision {
        // RBAC denies by finding no rule: no reason is given.
        Decision {
            allowed: false,
            reason: String::new(),
        }
    }
}

/// One grant a test added: `verb` (or `*`) on `resource[/subresource]` in any namespace.
#[derive(Clone, Debug)]
struct Grant {
    user: String,
    verb: String,
    resource: String,
    subresource: String,
}

/// The grants tests added (a stand-in for their own RBAC bindings).
#[derive(Default)]
pub struct Grants {
    list: Mutex<Vec<Grant>>,
}

impl Grants {
    pub fn add(&self, user: &str, verb: &str, resource: &str, subresource: &str) {
        self.list.lock().unwrap_or_else(|p| p.into_inner()).push(Grant {
            user: user.into(),
            verb: verb.into(),
            resource: resource.into(),
            subresource: subresource.into(),
        });
    }

    fn find(&self, user: &str, verb: &str, resource: &str, subresource: &str) -> Option<Grant> {
        let list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        list.iter()
            .find(|g| {
                g.user == user
                    && (g.verb == "*" || g.verb == verb)
                    && g.resource == resource
                    && (g.subresource == "*" || g.subresource == subresource)
            })
            .cloned()
    }
}

/// Decides for user `name` in `groups`.
pub fn authorize(name: &str, groups: &[String], attrs: &Attributes, grants: &Grants) -> Decision {
    let in_group = |g: &str| groups.iter().any(|x| x == g);
    if in_group(MASTERS) {
        return Decision::allow(
            "RBAC: allowed by ClusterRoleBinding \"cluster-admin\" of ClusterRole \"cluster-admin\" to Group \"system:masters\"",
        );
    }
    match attrs {
        Attributes::NonResource { verb, path } => {
            let discovery = DISCOVERY_PATHS
                .iter()
                .any(|p| path == p || path.starts_with(&format!("{p}/")));
            if discovery && verb == "get" && in_group(AUTHENTICATED) {
                Decision::allow(
                    "RBAC: allowed by ClusterRoleBinding \"system:discovery\" of ClusterRole \"system:discovery\" to Group \"system:authenticated\"",
                )
            } else {
                Decision::deny()
            }
        }
        Attributes::Resource {
            verb,
            group,
            resource,
            subresource,
            ..
        } => {
            if name == KUBELET_CLIENT_USER && group.is_empty() && resource == "nodes" {
                let read = ["get", "list", "watch", "proxy"].contains(&verb.as_str());
                if KUBELET_API_SUBRESOURCES.contains(&subresource.as_str()) || (subresource.is_empty() && read) {
                    return Decision::allow(format!(
                        "RBAC: allowed by ClusterRoleBinding \"kubeadm:apiserver-kubelet-client\" of ClusterRole \"system:kubelet-api-admin\" to User \"{KUBELET_CLIENT_USER}\""
                    ));
                }
            }
            if let Some(g) = grants.find(name, verb, resource, subresource) {
                return Decision::allow(format!(
                    "RBAC: allowed by the test's grant of {:?} on {:?} to User {name:?}",
                    g.verb,
                    if g.subresource.is_empty() {
                        g.resource.clone()
                    } else {
                        format!("{}/{}", g.resource, g.subresource)
                    }
                ));
            }
            let review = resource.ends_with("reviews");
            if review && verb == "create" {
                let self_review = resource.starts_with("self");
                let node_review = (group == "authentication.k8s.io" && resource == "tokenreviews")
                    || (group == "authorization.k8s.io"
                        && (resource == "subjectaccessreviews" || resource == "localsubjectaccessreviews"));
                if self_review && in_group(AUTHENTICATED) {
                    return Decision::allow(
                        "RBAC: allowed by ClusterRoleBinding \"system:basic-user\" of ClusterRole \"system:basic-user\" to Group \"system:authenticated\"",
                    );
                }
                if node_review && in_group(NODES) && name.starts_with("system:node:") {
                    return Decision::allow("");
                }
                return Decision::deny();
            }
            if !review && OBJECT_SUBRESOURCES.contains(&subresource.as_str()) {
                return Decision::allow("the test apiserver does not model RBAC for API objects");
            }
            Decision::deny()
        }
    }
}

/// The 403 the apiserver answers a denied request with (`responsewriters.ForbiddenStatusError`).
pub fn forbidden(user: &str, attrs: &Attributes, reason: &str) -> ApiError {
    let (mut msg, gr, obj_name) = match attrs {
        Attributes::NonResource { verb, path } => (format!("User {user:?} cannot {verb} path {path:?}"), None, ""),
        Attributes::Resource {
            verb,
            group,
            resource,
            subresource,
            namespace,
            name,
        } => {
            let res = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {namespace:?}")
            };
            (
                format!("User {user:?} cannot {verb} resource {res:?} in API group {group:?} {scope}"),
                Some((group.as_str(), resource.as_str())),
                name.as_str(),
            )
        }
    };
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    let (message, details) = match gr {
        None => (format!("forbidden: {msg}"), json!({})),
        Some((group, resource)) => {
            let qualified = if group.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}.{group}")
            };
            let mut d = json!({"kind": resource});
            if !group.is_empty() {
                d["group"] = json!(group);
            }
            if obj_name.is_empty() {
                (format!("{qualified} is forbidden: {msg}"), d)
            } else {
                d["name"] = json!(obj_name);
                (format!("{qualified} {obj_name:?} is forbidden: {msg}"), d)
            }
        }
    };
    let mut e = ApiError::new(403, "Forbidden", message);
    e.details = Some(details);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(g: &[&str]) -> Vec<String> {
        g.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn policy_table() {
        let grants = Grants::default();
        grants.add("alice", "get", "nodes", "stats");
        grants.add("bob", "*", "pods", "exec");
        let auth = groups(&["system:authenticated"]);
        let node = groups(&["system:nodes", "system:authenticated"]);
        let admin = groups(&["system:masters", "system:authenticated"]);
        let kubelet_client = groups(&["system:authenticated"]);
        let proxy = |verb: &str| Attributes::resource(verb, "", "nodes", "proxy", "", "n1");
        let cases: Vec<(&str, &Vec<String>, Attributes, bool)> = vec![
            ("admin", &admin, proxy("create"), true),
            (
                "admin",
                &admin,
                Attributes::resource("delete", "", "secrets", "", "x", "y"),
                true,
            ),
            (KUBELET_CLIENT_USER, &kubelet_client, proxy("create"), true),
            (KUBELET_CLIENT_USER, &kubelet_client, proxy("get"), true),
            (
                KUBELET_CLIENT_USER,
                &kubelet_client,
                Attributes::resource("get", "", "nodes", "metrics", "", "n1"),
                true,
            ),
            (
                KUBELET_CLIENT_USER,
                &kubelet_client,
                Attributes::resource("create", "", "pods", "exec", "default", "p"),
                false,
            ),
            (
                "alice",
                &auth,
                Attributes::resource("get", "", "nodes", "stats", "", "n1"),
                true,
            ),
            (
                "alice",
                &auth,
                Attributes::resource("create", "", "nodes", "stats", "", "n1"),
                false,
            ),
            ("alice", &auth, proxy("get"), false),
            (
                "bob",
                &auth,
                Attributes::resource("get", "", "pods", "exec", "default", "p"),
                true,
            ),
            (
                "bob",
                &auth,
                Attributes::resource("get", "", "pods", "attach", "default", "p"),
                false,
            ),
            (
                "carol",
                &auth,
                Attributes::resource("get", "", "pods", "", "default", "p"),
                true,
            ),
            (
                "carol",
                &auth,
                Attributes::resource("update", "", "pods", "status", "default", "p"),
                true,
            ),
            (
                "carol",
                &auth,
                Attributes::resource("get", "", "pods", "log", "default", "p"),
                false,
            ),
            (
                "carol",
                &auth,
                Attributes::resource("create", "authentication.k8s.io", "tokenreviews", "", "", ""),
                false,
            ),
            (
                "carol",
                &auth,
                Attributes::resource("create", "authentication.k8s.io", "selfsubjectreviews", "", "", ""),
                true,
            ),
            (
                "system:node:n1",
                &node,
                Attributes::resource("create", "authentication.k8s.io", "tokenreviews", "", "", ""),
                true,
            ),
            (
                "system:node:n1",
                &node,
                Attributes::resource("create", "authorization.k8s.io", "subjectaccessreviews", "", "", ""),
                true,
            ),
            ("system:node:n1", &node, proxy("get"), false),
            (
                "carol",
                &auth,
                Attributes::NonResource {
                    verb: "get".into(),
                    path: "/version".into(),
                },
                true,
            ),
            (
                "carol",
                &auth,
                Attributes::NonResource {
                    verb: "get".into(),
                    path: "/metrics".into(),
                },
                false,
            ),
        ];
        for (user, g, attrs, want) in cases {
            let d = authorize(user, g, &attrs, &grants);
            assert_eq!(d.allowed, want, "{user} {attrs:?}: {d:?}");
        }
    }

    #[test]
    fn forbidden_messages_match_rbac() {
        let e = forbidden(
            "bob",
            &Attributes::resource("create", "", "pods", "exec", "default", "p"),
            "",
        );
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "pods \"p\" is forbidden: User \"bob\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"default\""
        );
        let e = forbidden(
            "bob",
            &Attributes::resource("create", "authorization.k8s.io", "subjectaccessreviews", "", "", ""),
            "",
        );
        assert_eq!(
            e.message,
            "subjectaccessreviews.authorization.k8s.io is forbidden: User \"bob\" cannot create resource \"subjectaccessreviews\" in API group \"authorization.k8s.io\" at the cluster scope"
        );
        let e = forbidden(
            "bob",
            &Attributes::NonResource {
                verb: "get".into(),
                path: "/metrics".into(),
            },
            "",
        );
        assert_eq!(e.message, "forbidden: User \"bob\" cannot get path \"/metrics\"");
    }

    #[test]
    fn review_spec_needs_exactly_one_kind_of_attributes() {
        assert!(Attributes::from_review_spec(&json!({"resourceAttributes": {"verb": "get"}})).is_some());
        assert!(Attributes::from_review_spec(&json!({})).is_none());
        assert!(
            Attributes::from_review_spec(&json!({"resourceAttributes": {}, "nonResourceAttributes": {}})).is_none()
        );
    }
}
