//! The static pod source (§3.4): one Pod per file in a directory, defaulted like the API server
//! would, with the kubelet's static-pod defaults (`pkg/kubelet/config/common.go applyDefaults`).
//!
//! The directory is polled every real second for changed entries (name, size, mtime: keel's
//! stand-in for inotify) and fully re-listed every 20 virtual seconds (`FileCheckFrequency`).
//! A `Snapshot` is sent at start (even for a missing or empty directory) and whenever the set of
//! pods or any pod's content changed.
//!
//! Deliberate difference: the UID is the md5 of keel's JSON encoding of the decoded, defaulted pod
//! followed by `host:<node>` and `file:<path>`. The Go kubelet hashes its own deep-printed Go
//! struct instead, so keel's static pod UIDs are stable but not bit-compatible with the kubelet's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Pod, PodStatus, Toleration};
use md5::{Digest, Md5};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::defaults::{apply_api_defaults, validate_pod, ValidationError};
use super::{Source, SourceUpdate, CONFIG_HASH_ANNOTATION, CONFIG_SEEN_ANNOTATION, CONFIG_SOURCE_ANNOTATION};
use crate::clock::Clock;

/// Full re-list period of the directory (virtual time), `FileCheckFrequency`.
pub const FILE_CHECK_FREQUENCY: Duration = Duration::from_secs(20);
/// How often the directory's entries are checked for changes (real time: this replaces inotify,
/// which reacts in real time whatever keel's time scale).
pub const DIR_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Manifests larger than this are skipped (`maxConfigLength`).
pub const MAX_MANIFEST_SIZE: u64 = 10 * 1024 * 1024;

/// Why a manifest (or the directory) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    #[error("reading directory {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: stat: {source}")]
    Stat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: file is {size} bytes, more than the {MAX_MANIFEST_SIZE}-byte limit")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path}: read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    ParseJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: invalid YAML: {source}")]
    ParseYaml {
        path: PathBuf,
        // Boxed: serde-saphyr's error carries its source location and snippet (136 bytes).
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error("{path}: not a v1 Pod (apiVersion {api_version:?}, kind {kind:?})")]
    NotAPod {
        path: PathBuf,
        api_version: String,
        kind: String,
    },
    #[error("{path}: decoding the pod: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: invalid pod: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: ValidationError,
    },
    #[error("{path}: pod {full_name} is already defined by {first}")]
    Duplicate {
        path: PathBuf,
        full_name: String,
        first: PathBuf,
    },
}

/// Starts the static pod source for `dir`. It runs until `shutdown` or until the receiver is gone.
pub fn spawn_file_source(
    dir: PathBuf,
    node_name: String,
    clock: Clock,
    tx: mpsc::Sender<SourceUpdate>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let source = FileSource::new(dir, node_name);
    tokio::spawn(source.run(clock, tx, shutdown))
}

/// Decodes one manifest (JSON or YAML) into a Pod, checking `apiVersion: v1` and `kind: Pod`.
pub fn decode_manifest(path: &Path, data: &[u8]) -> Result<Pod, FileSourceError> {
    let text = String::from_utf8_lossy(data);
    let value: serde_json::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(&text).map_err(|source| FileSourceError::ParseJson {
            path: path.to_path_buf(),
            source,
        })?
    } else {
        serde_saphyr::from_str(&text).map_err(|source| FileSourceError::ParseYaml {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?
    };
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version != "v1" || kind != "Pod" {
        return Err(FileSourceError::NotAPod {
            path: path.to_path_buf(),
            api_version,
            kind,
        });
    }
    serde_json::from_value(value).map_err(|source| FileSourceError::Decode {
        path: path.to_path_buf(),
        source,
    })
}

/// Turns a decoded pod into the static pod the kubelet runs: API defaults, UID from the hash,
/// `<name>-<node>` name, default namespace, node name, config.hash/config.source annotations, a
/// NoExecute toleration and phase Pending; then validates it. `config.seen` is left to the caller.
pub fn make_static_pod(mut pod: Pod, path: &Path, node_name: &str) -> Result<Pod, FileSourceError> {
    apply_api_defaults(&mut pod);
    if pod.metadata.uid.as_deref().unwrap_or("").is_empty() {
        pod.metadata.uid = Some(static_pod_uid(&pod, path, node_name));
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if let Some(name) = pod.metadata.name.as_deref() {
        pod.metadata.name = Some(format!("{name}-{}", node_name.to_lowercase()));
    }
    if pod.metadata.namespace.as_deref().unwrap_or("").is_empty() {
        pod.metadata.namespace = Some("default".to_string());
    }
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(CONFIG_HASH_ANNOTATION.to_string(), uid);
    annotations.insert(CONFIG_SOURCE_ANNOTATION.to_string(), Source::File.as_str().to_string());
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(node_name.to_string());
        spec.tolerations.get_or_insert_with(Vec::new).push(Toleration {
            operator: Some("Exists".to_string()),
            effect: Some("NoExecute".to_string()),
            ..Default::default()
        });
    }
    pod.status = Some(PodStatus {
        phase: Some("Pending".to_string()),
        ..Default::default()
    });
    validate_pod(&pod).map_err(|source| FileSourceError::Invalid {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(pod)
}

/// md5 hex of the pod's JSON encoding, `host:<node>` and `file:<path>` (see the module docs).
pub fn static_pod_uid(pod: &Pod, path: &Path, node_name: &str) -> String {
    let mut hasher = Md5::new();
    // Serializing a k8s-openapi Pod cannot fail (no non-string map keys); an empty encoding would
    // still give a per-file UID through the path.
    hasher.update(serde_json::to_vec(pod).unwrap_or_default());
    hasher.update(format!("host:{node_name}"));
    hasher.update(format!("file:{}", path.display()));
    hex::encode(hasher.finalize())
}

/// What one pass over the directory found.
#[derive(Debug, Default)]
pub struct DirListing {
    /// Valid static pods in file-name order, without `config.seen`.
    pub pods: Vec<Pod>,
    /// Files that were skipped, and why.
    pub errors: Vec<FileSourceError>,
}

/// The manifest paths of `dir`: entries not starting with `.`, sorted. Like the kubelet's
/// `staticPodPath`, the path may also name a single manifest file.
fn manifest_paths(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    if std::fs::metadata(dir)?.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        paths.push(entry.path());
    }
    paths.sort();
    Ok(paths)
}

/// Reads every manifest in `dir` (blocking I/O). A missing directory is an error; bad files are
/// collected in `errors` and the rest still load.
pub fn list_dir(dir: &Path, node_name: &str) -> Result<DirListing, FileSourceError> {
    let paths = manifest_paths(dir).map_err(|source| FileSourceError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut listing = DirListing::default();
    let mut by_full_name: HashMap<String, PathBuf> = HashMap::new();
    for path in paths {
        // Follows symlinks, as the kubelet's os.Stat does.
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(source) => {
                listing.errors.push(FileSourceError::Stat { path, source });
                continue;
            }
        };
        if meta.is_dir() {
            // No recursion (the kubelet logs this at a verbose level only).
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        match load_file(&path, node_name) {
            Ok(pod) => {
                let full_name = format!(
                    "{}_{}",
                    pod.metadata.name.as_deref().unwrap_or(""),
                    pod.metadata.namespace.as_deref().unwrap_or("")
                );
                if let Some(first) = by_full_name.get(&full_name) {
                    listing.errors.push(FileSourceError::Duplicate {
                        path,
                        full_name,
                        first: first.clone(),
                    });
                    continue;
                }
                by_full_name.insert(full_name, path);
                listing.pods.push(pod);
            }
            Err(e) => listing.errors.push(e),
        }
    }
    Ok(listing)
}

fn load_file(path: &Path, node_name: &str) -> Result<Pod, FileSourceError> {
    let file = std::fs::File::open(path).map_err(|source| FileSourceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut data = Vec::new();
    // Read one byte past the limit to tell "exactly at the limit" from "over it".
    file.take(MAX_MANIFEST_SIZE + 1)
        .read_to_end(&mut data)
        .map_err(|source| FileSourceError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if data.len() as u64 > MAX_MANIFEST_SIZE {
        return Err(FileSourceError::TooLarge {
            path: path.to_path_buf(),
            size: data.len() as u64,
        });
    }
    let pod = decode_manifest(path, &data)?;
    make_static_pod(pod, path, node_name)
}

/// Cheap change detector: (name, size, mtime) of every entry; None if the directory is unreadable.
type Fingerprint = Option<Vec<(PathBuf, u64, Option<SystemTime>)>>;

fn fingerprint(dir: &Path) -> Fingerprint {
    let paths = manifest_paths(dir).ok()?;
    Some(
        paths
            .into_iter()
            .map(|p| {
                let meta = std::fs::metadata(&p).ok();
                let size = meta.as_ref().map(|m| m.len()).unwrap_or(0);
                let mtime = meta.and_then(|m| m.modified().ok());
                (p, size, mtime)
            })
            .collect(),
    )
}

/// The source's state between passes.
struct FileSource {
    dir: PathBuf,
    node_name: String,
    /// First-seen time per UID, so `config.seen` is stable across re-lists.
    seen: HashMap<String, String>,
    /// What was last sent; None before the first snapshot.
    last_sent: Option<Vec<Pod>>,
    /// Per-file error last logged, so each problem is logged once, not every re-list.
    logged_errors: HashMap<PathBuf, String>,
    /// The directory error last logged (missing, unreadable).
    logged_dir_error: Option<String>,
    last_fingerprint: Fingerprint,
}

impl FileSource {
    fn new(dir: PathBuf, node_name: String) -> Self {
        Self {
            dir,
            node_name,
            seen: HashMap::new(),
            last_sent: None,
            logged_errors: HashMap::new(),
            logged_dir_error: None,
            last_fingerprint: None,
        }
    }

    async fn run(mut self, clock: Clock, tx: mpsc::Sender<SourceUpdate>, shutdown: CancellationToken) {
        let mut poll = tokio::time::interval(DIR_POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_full = clock.deadline(FILE_CHECK_FREQUENCY);
        // The first tick of an interval fires at once: that is the initial list.
        loop {
            let full = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = poll.tick() => false,
                _ = tokio::time::sleep_until(next_full) => true,
            };
            if full {
                next_full = clock.deadline(FILE_CHECK_FREQUENCY);
            }
            let dir = self.dir.clone();
            let fp = match tokio::task::spawn_blocking(move || fingerprint(&dir)).await {
                Ok(fp) => fp,
                Err(e) => {
                    error!(error = %e, "static pod directory check task failed");
                    continue;
                }
            };
            if !full && self.last_sent.is_some() && fp == self.last_fingerprint {
                continue;
            }
            self.last_fingerprint = fp;
            let Some(update) = self.relist().await else { continue };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                sent = tx.send(update) => if sent.is_err() { return },
            }
        }
    }

    /// Lists the directory; returns a snapshot if anything changed (always on the first call).
    async fn relist(&mut self) -> Option<SourceUpdate> {
        let (dir, node) = (self.dir.clone(), self.node_name.clone());
        let listed = match tokio::task::spawn_blocking(move || list_dir(&dir, &node)).await {
            Ok(listed) => listed,
            Err(e) => {
                error!(error = %e, "static pod directory listing task failed");
                return None;
            }
        };
        let listing = match listed {
            Ok(listing) => {
                if self.logged_dir_error.take().is_some() {
                    info!(dir = %self.dir.display(), "static pod directory is readable again");
                }
                listing
            }
            Err(e) => {
                let msg = e.to_string();
                if self.logged_dir_error.as_deref() != Some(msg.as_str()) {
                    warn!(error = %msg, "static pod directory unavailable; no static pods from it");
                    self.logged_dir_error = Some(msg);
                }
                DirListing::default()
            }
        };
        self.apply_listing(listing)
    }

    /// Logs new file errors, stamps `config.seen`, and returns a snapshot if the pods changed.
    fn apply_listing(&mut self, listing: DirListing) -> Option<SourceUpdate> {
        let mut still_failing = HashSet::new();
        for e in &listing.errors {
            let path = error_path(e).to_path_buf();
            let msg = e.to_string();
            if self.logged_errors.get(&path) != Some(&msg) {
                error!(file = %path.display(), error = %msg, "skipping invalid static pod file");
                self.logged_errors.insert(path.clone(), msg);
            }
            still_failing.insert(path);
        }
        self.logged_errors.retain(|p, _| still_failing.contains(p));

        let now = jiff::Timestamp::now().to_string();
        let mut uids = HashSet::new();
        let mut pods = listing.pods;
        for pod in pods.iter_mut() {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let seen = self.seen.entry(uid.clone()).or_insert_with(|| now.clone()).clone();
            pod.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(CONFIG_SEEN_ANNOTATION.to_string(), seen);
            uids.insert(uid);
        }
        self.seen.retain(|uid, _| uids.contains(uid));
        if self.last_sent.as_ref() == Some(&pods) {
            return None;
        }
        self.last_sent = Some(pods.clone());
        Some(SourceUpdate::Snapshot {
            source: Source::File,
            pods,
        })
    }
}

fn error_path(e: &FileSourceError) -> &Path {
    match e {
        FileSourceError::ReadDir { dir, .. } => dir,
        FileSourceError::Stat { path, .. }
        | FileSourceError::TooLarge { path, .. }
        | FileSourceError::Read { path, .. }
        | FileSourceError::ParseJson { path, .. }
        | FileSourceError::ParseYaml { path, .. }
        | FileSourceError::NotAPod { path, .. }
        | FileSourceError::Decode { path, .. }
        | FileSourceError::Invalid { path, .. }
        | FileSourceError::Duplicate { path, .. } => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const YAML_POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: nginx
    image: nginx:1.25
    ports:
    - containerPort: 80
    resources:
      limits:
        cpu: 1
        memory: 64Mi
";

    const JSON_POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"db","namespace":"kube-system"},
        "spec":{"containers":[{"name":"pg","image":"postgres"}]}}"#;

    fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
        pod.metadata.annotations.as_ref()?.get(key).map(String::as_str)
    }

    #[test]
    fn static_pod_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yaml");
        fs::write(&path, YAML_POD).unwrap();
        let listing = list_dir(dir.path(), "Node-A").unwrap();
        assert!(listing.errors.is_empty(), "{:?}", listing.errors);
        let pod = &listing.pods[0];
        assert_eq!(pod.metadata.name.as_deref(), Some("web-node-a"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let uid = pod.metadata.uid.as_deref().unwrap();
        assert_eq!(uid.len(), 32);
        assert!(uid.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(annotation(pod, CONFIG_HASH_ANNOTATION), Some(uid));
        assert_eq!(annotation(pod, CONFIG_SOURCE_ANNOTATION), Some("file"));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("Node-A"));
        let tol = spec.tolerations.as_ref().unwrap();
        assert_eq!(tol.len(), 1);
        assert_eq!(tol[0].operator.as_deref(), Some("Exists"));
        assert_eq!(tol[0].effect.as_deref(), Some("NoExecute"));
        assert_eq!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Pending"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        let c = &spec.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(c.ports.as_ref().unwrap()[0].protocol.as_deref(), Some("TCP"));
        let req = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
        assert_eq!(req["cpu"].0, "1");
        assert_eq!(req["memory"].0, "64Mi");
        assert_eq!(pod.metadata.labels.as_ref().unwrap()["app"], "web");
    }

    #[test]
    fn uid_depends_on_content_node_and_path_and_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.yaml"), YAML_POD).unwrap();
        let uid = |node: &str| {
            list_dir(dir.path(), node).unwrap().pods[0]
                .metadata
                .uid
                .clone()
                .unwrap()
        };
        let first = uid("n1");
        assert_eq!(first, uid("n1"), "same file, same UID");
        assert_ne!(first, uid("n2"), "node is part of the hash");
        fs::rename(dir.path().join("a.yaml"), dir.path().join("b.yaml")).unwrap();
        assert_ne!(first, uid("n1"), "path is part of the hash");
        fs::write(dir.path().join("b.yaml"), YAML_POD.replace("nginx:1.25", "nginx:1.26")).unwrap();
        let changed = uid("n1");
        fs::write(dir.path().join("b.yaml"), YAML_POD).unwrap();
        assert_ne!(changed, uid("n1"), "content is part of the hash");
    }

    #[test]
    fn uid_in_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = YAML_POD.replace("  name: web\n", "  name: web\n  uid: fixed-uid\n");
        fs::write(dir.path().join("a.yaml"), yaml).unwrap();
        let pod = &list_dir(dir.path(), "n").unwrap().pods[0];
        assert_eq!(pod.metadata.uid.as_deref(), Some("fixed-uid"));
        assert_eq!(annotation(pod, CONFIG_HASH_ANNOTATION), Some("fixed-uid"));
    }

    #[test]
    fn listing_rules_and_invalid_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("b.json"), JSON_POD).unwrap();
        fs::write(d.join("a.yaml"), YAML_POD).unwrap();
        fs::write(d.join(".hidden.yaml"), YAML_POD.replace("web", "hidden")).unwrap();
        fs::create_dir(d.join("sub")).unwrap();
        fs::write(d.join("sub/x.yaml"), YAML_POD.replace("web", "nested")).unwrap();
        fs::write(d.join("c-bad.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: [oops\n").unwrap();
        fs::write(
            d.join("d-svc.yaml"),
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n",
        )
        .unwrap();
        fs::write(
            d.join("e-noimage.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: e\nspec:\n  containers:\n  - name: c\n",
        )
        .unwrap();
        fs::write(d.join("f-dup.yaml"), YAML_POD).unwrap();
        let listing = list_dir(d, "n").unwrap();
        let names: Vec<_> = listing.pods.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
        assert_eq!(
            names,
            ["web-n", "db-n"],
            "sorted by file name, hidden and nested skipped"
        );
        assert_eq!(listing.pods[1].metadata.namespace.as_deref(), Some("kube-system"));
        let errors: Vec<_> = listing.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(
            matches!(listing.errors[0], FileSourceError::ParseYaml { .. }),
            "{errors:?}"
        );
        assert!(
            matches!(listing.errors[1], FileSourceError::NotAPod { .. }),
            "{errors:?}"
        );
        assert!(errors[2].contains("e-noimage.yaml") && errors[2].contains("image is required"));
        assert!(
            matches!(listing.errors[3], FileSourceError::Duplicate { .. }),
            "{errors:?}"
        );
    }

    #[test]
    fn decode_forms() {
        let p = Path::new("/m/x");
        let with_marker = format!("---\n{YAML_POD}");
        assert_eq!(
            decode_manifest(p, with_marker.as_bytes())
                .unwrap()
                .metadata
                .name
                .as_deref(),
            Some("web")
        );
        let json = format!("\n  {JSON_POD}");
        assert_eq!(
            decode_manifest(p, json.as_bytes()).unwrap().metadata.name.as_deref(),
            Some("db")
        );
        let r = decode_manifest(p, b"apiVersion: apps/v1\nkind: Pod\n");
        assert!(matches!(r, Err(FileSourceError::NotAPod { .. })), "{r:?}");
        let r = decode_manifest(p, b"{\"apiVersion\": \"v1\", \"kind\": \"Pod\",");
        assert!(matches!(r, Err(FileSourceError::ParseJson { .. })), "{r:?}");
        let r = decode_manifest(p, b"apiVersion: v1\nkind: Pod\nspec:\n  containers: 3\n");
        assert!(matches!(r, Err(FileSourceError::Decode { .. })), "{r:?}");
        let r = decode_manifest(p, b"");
        assert!(r.is_err(), "an empty file is not a pod: {r:?}");
    }

    #[test]
    fn listing_changes_and_error_dedup() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.yaml"), YAML_POD).unwrap();
        fs::write(dir.path().join("b.yaml"), "kind: Pod\n").unwrap();
        let mut src = FileSource::new(dir.path().to_path_buf(), "n".into());
        let first = src.apply_listing(list_dir(dir.path(), "n").unwrap());
        assert_eq!(snapshot_pods(first.unwrap()).len(), 1);
        assert_eq!(
            src.logged_errors.len(),
            1,
            "the bad file's error is remembered (logged once)"
        );
        assert!(
            src.apply_listing(list_dir(dir.path(), "n").unwrap()).is_none(),
            "unchanged: no snapshot"
        );
        fs::remove_file(dir.path().join("b.yaml")).unwrap();
        assert!(
            src.apply_listing(list_dir(dir.path(), "n").unwrap()).is_none(),
            "errors do not change the pods"
        );
        assert!(
            src.logged_errors.is_empty(),
            "a fixed file is forgotten, so a new problem logs again"
        );
        fs::write(dir.path().join("a.yaml"), YAML_POD.replace("web", "web2")).unwrap();
        let pods = snapshot_pods(src.apply_listing(list_dir(dir.path(), "n").unwrap()).unwrap());
        assert_eq!(pods[0].metadata.name.as_deref(), Some("web2-n"));
        assert_eq!(src.seen.len(), 1, "first-seen times of vanished pods are dropped");
    }

    #[test]
    fn oversized_file_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut big = YAML_POD.to_string();
        big.push_str(&format!("# {}\n", "x".repeat(MAX_MANIFEST_SIZE as usize)));
        fs::write(dir.path().join("big.yaml"), big).unwrap();
        let listing = list_dir(dir.path(), "n").unwrap();
        assert!(listing.pods.is_empty());
        assert!(matches!(listing.errors[0], FileSourceError::TooLarge { .. }));
    }

    #[test]
    fn path_may_be_a_single_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("only.yaml");
        fs::write(&path, YAML_POD).unwrap();
        let listing = list_dir(&path, "n").unwrap();
        assert_eq!(listing.pods.len(), 1);
        assert!(fingerprint(&path).is_some());
    }

    #[test]
    fn missing_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let r = list_dir(&dir.path().join("nope"), "n");
        assert!(matches!(r, Err(FileSourceError::ReadDir { .. })));
    }

    fn snapshot_pods(u: SourceUpdate) -> Vec<Pod> {
        match u {
            SourceUpdate::Snapshot {
                source: Source::File,
                pods,
            } => pods,
            other => panic!("expected a file snapshot, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn source_sends_snapshots_on_change_only() {
        let dir = tempfile::tempdir().unwrap();
        let manifests = dir.path().join("manifests");
        let (tx, mut rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        // Scaled clock: the 20 s full re-list runs every 100 ms real, so "no change" is exercised too.
        let handle = spawn_file_source(
            manifests.clone(),
            "n".into(),
            Clock::scaled(200.0),
            tx,
            shutdown.clone(),
        );
        let wait = Duration::from_secs(10);

        // Missing directory: one empty snapshot.
        let first = tokio::time::timeout(wait, rx.recv()).await.unwrap().unwrap();
        assert!(snapshot_pods(first).is_empty());

        fs::create_dir(&manifests).unwrap();
        fs::write(manifests.join("web.yaml"), YAML_POD).unwrap();
        let pods = snapshot_pods(tokio::time::timeout(wait, rx.recv()).await.unwrap().unwrap());
        assert_eq!(pods.len(), 1);
        let seen = annotation(&pods[0], CONFIG_SEEN_ANNOTATION).unwrap().to_string();
        assert!(seen.parse::<jiff::Timestamp>().is_ok(), "{seen}");

        // Several full re-lists pass without a change: nothing is sent.
        let nothing = tokio::time::timeout(Duration::from_millis(400), rx.recv()).await;
        assert!(nothing.is_err(), "unexpected update {nothing:?}");

        // A second file: a snapshot with both, the first keeping its seen time.
        fs::write(manifests.join("x.json"), JSON_POD).unwrap();
        let pods = snapshot_pods(tokio::time::timeout(wait, rx.recv()).await.unwrap().unwrap());
        assert_eq!(pods.len(), 2);
        assert_eq!(annotation(&pods[0], CONFIG_SEEN_ANNOTATION), Some(seen.as_str()));

        fs::remove_file(manifests.join("web.yaml")).unwrap();
        let pods = snapshot_pods(tokio::time::timeout(wait, rx.recv()).await.unwrap().unwrap());
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].metadata.name.as_deref(), Some("db-n"));

        shutdown.cancel();
        tokio::time::timeout(wait, handle).await.unwrap().unwrap();
    }
}
