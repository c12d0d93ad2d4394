//! Pod sources: the API server watch and static pod files. Each source sends full snapshots of
//! its pods; the kubelet diffs them into ADD / UPDATE / DELETE / REMOVE / RECONCILE.

use k8s_openapi::api::core::v1::Pod;

pub mod api;
pub mod file;

/// Annotation naming a pod's source (`api`, `file`).
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// Annotation with the static pod's hash (also its UID).
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
/// Annotation with the first time keel saw the pod.
pub const CONFIG_SEEN_ANNOTATION: &str = "kubernetes.io/config.seen";
/// Annotation marking a mirror pod; its value is the static pod's config hash.
pub const CONFIG_MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Which source a snapshot comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Api,
    File,
}

impl Source {
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::File => "file",
        }
    }
}

/// Everything one source currently says should be on this node.
#[derive(Clone, Debug)]
pub struct SourceUpdate {
    pub source: Source,
    /// Full snapshot of the source's pods (mirror pods included for the API source).
    pub pods: Vec<Pod>,
}
