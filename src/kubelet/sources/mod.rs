//! Pod sources: the API server watch and static pod files. Each source sends full snapshots of
//! its pods; the kubelet diffs them into ADD / UPDATE / DELETE / REMOVE / RECONCILE.

use k8s_openapi::api::core::v1::Pod;

pub mod api;
pub mod defaults;
pub mod file;
pub mod ready;

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

/// What a source tells the kubelet. A source first sends a `Snapshot` (on start, and again after
/// every relist, e.g. when a watch expired with 410 Gone), then incremental `Upsert`/`Remove`
/// changes. Incremental updates keep a 1,000-pod node from re-sending every pod on each change.
#[derive(Clone, Debug)]
pub enum SourceUpdate {
    /// Everything this source currently says should be on the node (replaces what it said before).
    Snapshot { source: Source, pods: Vec<Pod> },
    /// A pod added or changed.
    Upsert { source: Source, pod: Box<Pod> },
    /// A pod that is gone from the source (the object no longer exists).
    Remove { source: Source, pod: Box<Pod> },
}

impl SourceUpdate {
    pub fn source(&self) -> Source {
        match self {
            SourceUpdate::Snapshot { source, .. }
            | SourceUpdate::Upsert { source, .. }
            | SourceUpdate::Remove { source, .. } => *source,
        }
    }
}

/// Capacity of the channel from sources to the kubelet loop.
pub const SOURCE_CHANNEL_CAPACITY: usize = 1024;
