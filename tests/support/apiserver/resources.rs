//! The resources the test server serves, with the facts discovery and the handlers need.

/// One served resource of one group/version.
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// Subresources as (name, kind, verbs).
    pub subresources: &'static [(&'static str, &'static str, &'static [&'static str])],
    /// Storage bucket: events of core/v1 and events.k8s.io/v1 are the same objects.
    pub store: &'static str,
    pub categories: &'static [&'static str],
}

const ALL: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const NO_COLLECTION: &[&str] = &["create", "delete", "get", "list", "patch", "update", "watch"];
const STATUS: &[&str] = &["get", "patch", "update"];
const PROXY: &[&str] = &["create", "delete", "get", "patch", "update"];
const CONNECT: &[&str] = &["create", "get"];

pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        verbs: NO_COLLECTION,
        subresources: &[("finalize", "Namespace", &["update"]), ("status", "Namespace", STATUS)],
        store: "namespaces",
        categories: &[],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        verbs: ALL,
        subresources: &[
            ("attach", "PodAttachOptions", CONNECT),
            ("binding", "Binding", &["create"]),
            ("ephemeralcontainers", "Pod", STATUS),
            ("eviction", "Eviction", &["create"]),
            ("exec", "PodExecOptions", CONNECT),
            ("log", "Pod", &["get"]),
            ("portforward", "PodPortForwardOptions", CONNECT),
            ("proxy", "PodProxyOptions", PROXY),
            ("status", "Pod", STATUS),
        ],
        store: "pods",
        categories: &["all"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "bindings",
        singular: "binding",
        kind: "Binding",
        namespaced: true,
        short_names: &[],
        verbs: &["create"],
        subresources: &[],
        store: "bindings",
        categories: &[],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        verbs: ALL,
        subresources: &[("proxy", "NodeProxyOptions", PROXY), ("status", "Node", STATUS)],
        store: "nodes",
        categories: &[],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        verbs: ALL,
        subresources: &[],
        store: "configmaps",
        categories: &[],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        verbs: ALL,
        subresources: &[],
        store: "secrets",
        categories: &[],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        verbs: ALL,
        subresources: &[("token", "TokenRequest", &["create"])],
        store: "serviceaccounts",
        categories: &[],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        verbs: ALL,
        subresources: &[("proxy", "ServiceProxyOptions", PROXY), ("status", "Service", STATUS)],
        store: "services",
        categories: &["all"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        verbs: ALL,
        subresources: &[],
        store: "events",
        categories: &[],
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        verbs: ALL,
        subresources: &[],
        store: "leases",
        categories: &[],
    },
    Resource {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        verbs: ALL,
        subresources: &[],
        store: "events",
        categories: &[],
    },
    Resource {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "selfsubjectreviews",
        singular: "selfsubjectreview",
        kind: "SelfSubjectReview",
        namespaced: false,
        short_names: &[],
        verbs: &["create"],
        subresources: &[],
        store: "selfsubjectreviews",
        categories: &[],
    },
    Resource {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "tokenreviews",
        singular: "tokenreview",
        kind: "TokenReview",
        namespaced: false,
        short_names: &[],
        verbs: &["create"],
        subresources: &[],
        store: "tokenreviews",
        categories: &[],
    },
    Resource {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
        short_names: &[],
        verbs: &["create"],
        subresources: &[],
        store: "selfsubjectaccessreviews",
        categories: &[],
    },
    Resource {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "subjectaccessreviews",
        singular: "subjectaccessreview",
        kind: "SubjectAccessReview",
        namespaced: false,
        short_names: &[],
        verbs: &["create"],
        subresources: &[],
        store: "subjectaccessreviews",
        categories: &[],
    },
];

/// The API groups in discovery order (the legacy core group is served at `/api`).
pub const GROUPS: &[&str] = &[
    "coordination.k8s.io",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
];

/// Review kinds are answered, never stored.
pub fn is_review(res: &Resource) -> bool {
    res.plural.ends_with("reviews")
}

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

pub fn in_group_version<'a>(group: &'a str, version: &'a str) -> impl Iterator<Item = &'static Resource> + 'a {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

pub fn api_version(res: &Resource) -> String {
    if res.group.is_empty() {
        res.version.to_string()
    } else {
        format!("{}/{}", res.group, res.version)
    }
}
