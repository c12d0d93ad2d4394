//! The volume manager (`pkg/kubelet/volumemanager` with the in-tree plugins, kubelet-behavior.md
//! §4.1–4.8 and §4.11): before a pod's containers start, every volume of the pod is set up under
//! `<root>/pods/<uid>/volumes/<plugin>/<name>` (emptyDir on disk or tmpfs, hostPath checks,
//! configMap, secret, downwardAPI and projected contents through the atomic writer, fsGroup
//! ownership); each sync sets them up again, which is how ConfigMap, Secret, label and token
//! changes reach running pods. Container mounts (subPath, subPathExpr, readOnly, propagation)
//! are computed for the runtime; after the pod terminated its volumes are unmounted and removed.
//!
//! Differences from the kubelet, on purpose: ConfigMaps and Secrets are read with a GET on each
//! sync instead of through a watch-based cache; no attach/detach or CSI/PVC (such volumes fail
//! with an "unsupported" error); hugepages media are not supported; subPath mounts pass the
//! resolved, checked path to the runtime instead of bind-mounting an open file descriptor.
//! The `kube-api-access-*` volume is added by the API server's ServiceAccount admission (as in
//! Kubernetes); keel only sets up the projected volume it finds.

pub mod atomic;
pub mod host;
pub mod hostpath;
pub mod payload;
pub mod token;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Node, Pod, Secret, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::Api;
use tokio::sync::watch;
use tracing::{debug, warn};

use self::atomic::{AtomicError, Payload};
use self::host::HostError;
use self::hostpath::HostPathError;
use self::payload::PayloadError;
use self::token::{TokenError, TokenManager};
use crate::genericruntime::cri;
use crate::genericruntime::expand::expand;
use crate::kubelet::checkpoint::offline::{api_unreachable, OfflineStore};
use crate::kubelet::sources::defaults::DEFAULT_VOLUME_FILE_MODE;
use crate::podspec::resources::parse_value;

/// Plugin directory names (`kubernetes.io/<plugin>` with `/` escaped as `~`).
pub const EMPTY_DIR_PLUGIN: &str = "kubernetes.io~empty-dir";
pub const CONFIGMAP_PLUGIN: &str = "kubernetes.io~configmap";
pub const SECRET_PLUGIN: &str = "kubernetes.io~secret";
pub const DOWNWARD_API_PLUGIN: &str = "kubernetes.io~downward-api";
pub const PROJECTED_PLUGIN: &str = "kubernetes.io~projected";
/// Mode of an emptyDir's root.
const EMPTY_DIR_MODE: u32 = 0o777;
/// Mode of the directories that hold atomic-writer payloads before the payload lands.
const PAYLOAD_DIR_MODE: u32 = 0o777;
/// Mode of a projected service-account token when the pod has an fsGroup (SetVolumeOwnership
/// then makes it 0640).
const TOKEN_MODE_WITH_FS_GROUP: u32 = 0o600;

/// Errors of one volume, or of a container's mounts. The texts follow the kubelet's.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("cannot setup {kind} volume {volume}: kube client is not configured")]
    NoClient { kind: &'static str, volume: String },
    #[error("configmap \"{name}\" not found")]
    ConfigMapNotFound { name: String },
    #[error("secret \"{name}\" not found")]
    SecretNotFound { name: String },
    #[error("failed to get {kind} {namespace}/{name}: {source}")]
    Fetch {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("{}", aggregate(.0))]
    Aggregate(Vec<VolumeError>),
    #[error("writing volume contents: {0}")]
    Write(#[from] AtomicError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    HostPath(#[from] HostPathError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("creating volume directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("volume {volume:?}: {what} volumes are not supported by keel")]
    Unsupported { volume: String, what: String },
    #[error("emptyDir medium {medium:?} is not supported")]
    UnsupportedMedium { medium: String },
    #[error("cannot find volume {volume:?} to mount into container {container:?}")]
    NoVolume { volume: String, container: String },
    #[error("missing value for {names}")]
    SubPathExpr { names: String },
    #[error("invalid MountPropagation mode: {mode:?}")]
    Propagation { mode: String },
    #[error("pod has no UID")]
    NoUid,
    #[error("removing {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is still mounted")]
    StillMounted { path: PathBuf },
}

/// Go's `utilerrors.NewAggregate` text: one error alone, else `[a, b]`.
fn aggregate(errs: &[VolumeError]) -> String {
    match errs {
        [one] => one.to_string(),
        many => format!(
            "[{}]",
            many.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The volumes of a pod that could not be set up, with why (one FailedMount event each).
#[derive(Debug, thiserror::Error)]
#[error("unmounted volumes=[{}]: {}", self.names().join(" "), self.failures.first().map(|(_, e)| e.to_string()).unwrap_or_default())]
pub struct MountFailures {
    pub failures: Vec<(String, VolumeError)>,
}

impl MountFailures {
    pub fn names(&self) -> Vec<&str> {
        self.failures.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The per-volume event messages (`MountVolume.SetUp failed for volume "x" : ...`).
    pub fn event_messages(&self) -> Vec<String> {
        self.failures
            .iter()
            .map(|(n, e)| format!("MountVolume.SetUp failed for volume {n:?} : {e}"))
            .collect()
    }
}

/// Sets up, mounts and tears down pod volumes.
pub struct VolumeManager {
    root_dir: PathBuf,
    client: Option<kube::Client>,
    node_rx: Option<watch::Receiver<Option<Node>>>,
    tokens: TokenManager,
    /// Mount a tmpfs for memory-backed volumes. Off for the simulated backend (on purpose: its
    /// containers are not real, the files are what matters, and a test run leaves no mounts).
    tmpfs: bool,
    /// `checkpointSecrets`: copies of what was fetched, used while the API server is unreachable.
    offline: Option<Arc<OfflineStore>>,
}

/// The volume sources keel handles.
enum Source<'a> {
    EmptyDir {
        medium: &'a str,
        size_limit: Option<&'a Quantity>,
    },
    HostPath {
        path: &'a str,
        kind: Option<&'a str>,
    },
    ConfigMap,
    Secret,
    DownwardApi,
    Projected,
}

fn source_of(v: &Volume) -> Result<Source<'_>, VolumeError> {
    if let Some(e) = &v.empty_dir {
        return Ok(Source::EmptyDir {
            medium: e.medium.as_deref().unwrap_or(""),
            size_limit: e.size_limit.as_ref(),
        });
    }
    if let Some(h) = &v.host_path {
        return Ok(Source::HostPath {
            path: &h.path,
            kind: h.type_.as_deref(),
        });
    }
    if v.config_map.is_some() {
        return Ok(Source::ConfigMap);
    }
    if v.secret.is_some() {
        return Ok(Source::Secret);
    }
    if v.downward_api.is_some() {
        return Ok(Source::DownwardApi);
    }
    if v.projected.is_some() {
        return Ok(Source::Projected);
    }
    let what = serde_json::to_value(v)
        .ok()
        .and_then(|j| j.as_object().and_then(|o| o.keys().find(|k| *k != "name").cloned()))
        .unwrap_or_else(|| "volumes without a source".into());
    Err(VolumeError::Unsupported {
        volume: v.name.clone(),
        what,
    })
}

impl Source<'_> {
    fn plugin(&self) -> Option<&'static str> {
        match self {
            Source::EmptyDir { .. } => Some(EMPTY_DIR_PLUGIN),
            Source::HostPath { .. } => None,
            Source::ConfigMap => Some(CONFIGMAP_PLUGIN),
            Source::Secret => Some(SECRET_PLUGIN),
            Source::DownwardApi => Some(DOWNWARD_API_PLUGIN),
            Source::Projected => Some(PROJECTED_PLUGIN),
        }
    }

    /// The mounter's ReadOnly attribute: the file volumes are always mounted read-only.
    fn read_only(&self) -> bool {
        matches!(
            self,
            Source::ConfigMap | Source::Secret | Source::DownwardApi | Source::Projected
        )
    }

    /// Backed by a tmpfs (secret, downwardAPI and projected wrap a Memory emptyDir).
    fn memory_backed(&self) -> bool {
        match self {
            Source::EmptyDir { medium, .. } => *medium == "Memory",
            Source::Secret | Source::DownwardApi | Source::Projected => true,
            Source::HostPath { .. } | Source::ConfigMap => false,
        }
    }
}

fn pod_uid(pod: &Pod) -> Result<&str, VolumeError> {
    pod.metadata
        .uid
        .as_deref()
        .filter(|u| !u.is_empty())
        .ok_or(VolumeError::NoUid)
}

fn default_mode(m: Option<i32>) -> i32 {
    m.unwrap_or(DEFAULT_VOLUME_FILE_MODE)
}

impl VolumeManager {
    pub fn new(
        root_dir: PathBuf,
        client: Option<kube::Client>,
        node_rx: Option<watch::Receiver<Option<Node>>>,
    ) -> Self {
        let tokens = TokenManager::new(client.clone());
        Self {
            root_dir,
            client,
            node_rx,
            tokens,
            tmpfs: true,
            offline: None,
        }
    }

    /// Records fetched ConfigMaps, Secrets and tokens in `offline` and falls back to them when
    /// the API server cannot be reached (offline restart from the pod checkpoint).
    #[must_use]
    pub fn with_offline_store(mut self, offline: Arc<OfflineStore>) -> Self {
        self.offline = Some(offline);
        self
    }

    /// Whether memory-backed volumes get a tmpfs (default) or stay plain directories.
    #[must_use]
    pub fn with_tmpfs(mut self, tmpfs: bool) -> Self {
        self.tmpfs = tmpfs;
        self
    }

    /// `<root>/pods/<uid>/volumes`.
    pub fn pod_volumes_dir(&self, uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(uid).join("volumes")
    }

    /// Where a volume lives on the host: its plugin directory, or the host path itself.
    fn volume_path(&self, uid: &str, v: &Volume, src: &Source<'_>) -> PathBuf {
        match (src, src.plugin()) {
            (Source::HostPath { path, .. }, _) => PathBuf::from(path),
            (_, Some(plugin)) => self.pod_volumes_dir(uid).join(plugin).join(&v.name),
            (_, None) => PathBuf::new(),
        }
    }

    fn allocatable(&self) -> BTreeMap<String, Quantity> {
        self.node_rx
            .as_ref()
            .and_then(|rx| {
                rx.borrow()
                    .as_ref()
                    .and_then(|n| n.status.as_ref()?.allocatable.clone())
            })
            .unwrap_or_default()
    }

    /// Sets up (or refreshes) every volume of the pod. All volumes are tried; the failures are
    /// returned together.
    pub async fn setup_pod(&self, pod: &Pod) -> Result<(), MountFailures> {
        let mut failures = Vec::new();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if let Err(e) = self.setup_volume(pod, v).await {
                failures.push((v.name.clone(), e));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(MountFailures { failures })
        }
    }

    async fn setup_volume(&self, pod: &Pod, v: &Volume) -> Result<(), VolumeError> {
        let uid = pod_uid(pod)?;
        let src = source_of(v)?;
        if let Source::HostPath { path, kind } = src {
            return hostpath::check_type(path, kind).map_err(Into::into);
        }
        let dir = self.volume_path(uid, v, &src);
        // Build the contents first: a missing object must not leave an empty mount behind.
        let payload = match &src {
            Source::EmptyDir { medium, .. } if !medium.is_empty() && *medium != "Memory" => {
                return Err(VolumeError::UnsupportedMedium {
                    medium: medium.to_string(),
                })
            }
            Source::EmptyDir { .. } | Source::HostPath { .. } => None,
            Source::ConfigMap => Some(self.configmap_volume(pod, v).await?),
            Source::Secret => Some(self.secret_volume(pod, v).await?),
            Source::DownwardApi => {
                let d = v.downward_api.as_ref();
                let items = d.and_then(|d| d.items.as_deref()).unwrap_or_default();
                let mode = default_mode(d.and_then(|d| d.default_mode));
                Some(
                    payload::downward_payload(items, pod, &self.allocatable(), mode)
                        .map_err(|es| VolumeError::Aggregate(es.into_iter().map(Into::into).collect()))?,
                )
            }
            Source::Projected => Some(self.projected_volume(pod, v).await?),
        };
        std::fs::create_dir_all(&dir).map_err(|source| VolumeError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        if self.tmpfs && src.memory_backed() && !host::is_mount_point(&dir)? {
            let limit = match &src {
                Source::EmptyDir { size_limit, .. } => *size_limit,
                _ => None,
            };
            host::mount_tmpfs(&dir, memory_volume_size(pod, &self.allocatable(), limit)).await?;
        }
        match payload {
            None => host::ensure_dir_mode(&dir, EMPTY_DIR_MODE)?,
            Some(p) => {
                host::ensure_dir_mode(&dir, PAYLOAD_DIR_MODE)?;
                if atomic::write(&dir, &p)? {
                    debug!(volume = %v.name, pod_uid = %uid, "volume contents updated");
                }
            }
        }
        if let Some(group) = fs_group(pod) {
            let on_mismatch = pod
                .spec
                .as_ref()
                .and_then(|s| s.security_context.as_ref())
                .and_then(|sc| sc.fs_group_change_policy.as_deref())
                == Some("OnRootMismatch");
            host::set_ownership(&dir, group, src.read_only(), on_mismatch)?;
        }
        Ok(())
    }

    async fn get_config_map(&self, volume: &str, ns: &str, name: &str) -> Result<Option<ConfigMap>, VolumeError> {
        let Some(client) = &self.client else {
            return Err(VolumeError::NoClient {
                kind: "configMap",
                volume: volume.into(),
            });
        };
        match Api::<ConfigMap>::namespaced(client.clone(), ns).get_opt(name).await {
            Ok(cm) => {
                if let (Some(o), Some(cm)) = (&self.offline, &cm) {
                    o.record_config_map(cm);
                }
                Ok(cm)
            }
            Err(source) => match self
                .offline
                .as_ref()
                .filter(|_| api_unreachable(&source))
                .and_then(|o| o.config_map(ns, name))
            {
                Some(cm) => {
                    debug!(configmap = %format!("{ns}/{name}"), error = %source, "API unreachable; using the checkpointed copy");
                    Ok(Some(cm))
                }
                None => Err(VolumeError::Fetch {
                    kind: "configmap",
                    namespace: ns.into(),
                    name: name.into(),
                    source: Box::new(source),
                }),
            },
        }
    }

    async fn get_secret(&self, volume: &str, ns: &str, name: &str) -> Result<Option<Secret>, VolumeError> {
        let Some(client) = &self.client else {
            return Err(VolumeError::NoClient {
                kind: "secret",
                volume: volume.into(),
            });
        };
        match Api::<Secret>::namespaced(client.clone(), ns).get_opt(name).await {
            Ok(s) => {
                if let (Some(o), Some(s)) = (&self.offline, &s) {
                    o.record_secret(s);
                }
                Ok(s)
            }
            Err(source) => match self
                .offline
                .as_ref()
                .filter(|_| api_unreachable(&source))
                .and_then(|o| o.secret(ns, name))
            {
                Some(s) => {
                    debug!(secret = %format!("{ns}/{name}"), error = %source, "API unreachable; using the checkpointed copy");
                    Ok(Some(s))
                }
                None => Err(VolumeError::Fetch {
                    kind: "secret",
                    namespace: ns.into(),
                    name: name.into(),
                    source: Box::new(source),
                }),
            },
        }
    }

    async fn configmap_volume(&self, pod: &Pod, v: &Volume) -> Result<Payload, VolumeError> {
        let Some(s) = &v.config_map else {
            return Ok(Payload::new());
        };
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let optional = s.optional.unwrap_or(false);
        let cm = match self.get_config_map(&v.name, ns, &s.name).await? {
            Some(cm) => cm,
            None if optional => ConfigMap::default(),
            None => return Err(VolumeError::ConfigMapNotFound { name: s.name.clone() }),
        };
        Ok(payload::configmap_payload(
            s.items.as_deref(),
            &cm,
            default_mode(s.default_mode),
            optional,
        )?)
    }

    async fn secret_volume(&self, pod: &Pod, v: &Volume) -> Result<Payload, VolumeError> {
        let Some(s) = &v.secret else { return Ok(Payload::new()) };
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = s.secret_name.clone().unwrap_or_default();
        let optional = s.optional.unwrap_or(false);
        let secret = match self.get_secret(&v.name, ns, &name).await? {
            Some(x) => x,
            None if optional => Secret::default(),
            None => return Err(VolumeError::SecretNotFound { name }),
        };
        Ok(payload::secret_payload(
            s.items.as_deref(),
            &secret,
            default_mode(s.default_mode),
            optional,
        )?)
    }

    /// `projectedVolumeMounter.collectData`: the sources merged in order (later paths win), every
    /// source's error collected.
    async fn projected_volume(&self, pod: &Pod, v: &Volume) -> Result<Payload, VolumeError> {
        let Some(p) = &v.projected else {
            return Ok(Payload::new());
        };
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mode = default_mode(p.default_mode);
        let mut out = Payload::new();
        let mut errors: Vec<VolumeError> = Vec::new();
        for src in p.sources.iter().flatten() {
            let part: Result<Payload, VolumeError> = if let Some(s) = &src.secret {
                let optional = s.optional.unwrap_or(false);
                match self.get_secret(&v.name, ns, &s.name).await {
                    Ok(Some(x)) => payload::secret_payload(s.items.as_deref(), &x, mode, optional).map_err(Into::into),
                    Ok(None) if optional => Ok(Payload::new()),
                    Ok(None) => Err(VolumeError::SecretNotFound { name: s.name.clone() }),
                    Err(e) => Err(e),
                }
            } else if let Some(c) = &src.config_map {
                let optional = c.optional.unwrap_or(false);
                match self.get_config_map(&v.name, ns, &c.name).await {
                    Ok(Some(x)) => {
                        payload::configmap_payload(c.items.as_deref(), &x, mode, optional).map_err(Into::into)
                    }
                    Ok(None) if optional => Ok(Payload::new()),
                    Ok(None) => Err(VolumeError::ConfigMapNotFound { name: c.name.clone() }),
                    Err(e) => Err(e),
                }
            } else if let Some(d) = &src.downward_api {
                payload::downward_payload(d.items.as_deref().unwrap_or_default(), pod, &self.allocatable(), mode)
                    .map_err(|es| VolumeError::Aggregate(es.into_iter().map(Into::into).collect()))
            } else if let Some(t) = &src.service_account_token {
                self.token_file(pod, t, mode).await
            } else {
                // clusterTrustBundle / podCertificate sources: not supported; say so.
                Err(VolumeError::Unsupported {
                    volume: v.name.clone(),
                    what: "this projected source".into(),
                })
            };
            match part {
                Ok(files) => out.extend(files),
                Err(e) => errors.push(e),
            }
        }
        match errors.len() {
            0 => Ok(out),
            1 => Err(errors.remove(0)),
            _ => Err(VolumeError::Aggregate(errors)),
        }
    }

    async fn token_file(
        &self,
        pod: &Pod,
        t: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection,
        default_mode: i32,
    ) -> Result<Payload, VolumeError> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let spec = pod.spec.as_ref();
        let sa = spec
            .and_then(|s| s.service_account_name.as_deref())
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        let uid = pod_uid(pod)?;
        let audience = t.audience.as_deref().unwrap_or_default();
        let fetched = self
            .tokens
            .token(
                ns,
                sa,
                t.audience.as_deref(),
                t.expiration_seconds,
                pod.metadata.name.as_deref().unwrap_or_default(),
                uid,
            )
            .await;
        let token = match (fetched, &self.offline) {
            (Ok(token), Some(o)) => {
                o.record_token(uid, sa, audience, &token);
                token
            }
            (Ok(token), None) => token,
            // The token the pod last had: it cannot reach the API server either, and the next
            // sync after the API returns requests a fresh one.
            (Err(e), Some(o)) => match matches!(&e, TokenError::Request { source } if api_unreachable(source))
                .then(|| o.token(uid, sa, audience))
                .flatten()
            {
                Some(token) => {
                    debug!(pod_uid = %uid, error = %e, "token request failed; using the checkpointed token");
                    token
                }
                None => return Err(e.into()),
            },
            (Err(e), None) => return Err(e.into()),
        };
        let fs_user = fs_user(pod);
        let mode = if fs_group(pod).is_some() || fs_user.is_some() {
            TOKEN_MODE_WITH_FS_GROUP
        } else {
            (default_mode as u32) & 0o777
        };
        Ok(Payload::from([(
            t.path.clone(),
            atomic::FileProjection {
                data: token.into_bytes(),
                mode,
                fs_user,
            },
        )]))
    }

    /// The container's mounts (`makeMounts`): each volumeMount with its subPath resolved under
    /// the volume; `envs` (the container's final environment) expands `subPathExpr`.
    pub fn container_mounts(
        &self,
        pod: &Pod,
        container: &Container,
        envs: &[(String, String)],
    ) -> Result<Vec<cri::Mount>, VolumeError> {
        let uid = pod_uid(pod)?;
        let volumes: BTreeMap<&str, &Volume> = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .map(|v| (v.name.as_str(), v))
            .collect();
        let mut out = Vec::new();
        for m in container.volume_mounts.iter().flatten() {
            let Some(v) = volumes.get(m.name.as_str()) else {
                return Err(VolumeError::NoVolume {
                    volume: m.name.clone(),
                    container: container.name.clone(),
                });
            };
            let src = source_of(v)?;
            let mut host_path = self.volume_path(uid, v, &src);
            let sub_path = sub_path_of(m, envs)?;
            if !sub_path.is_empty() {
                host_path = host::resolve_sub_path(&host_path, &sub_path, &m.name, &container.name)?;
            }
            let container_path = if m.mount_path.starts_with('/') {
                m.mount_path.clone()
            } else {
                format!("/{}", m.mount_path)
            };
            out.push(cri::Mount {
                container_path,
                host_path: host_path.to_string_lossy().into_owned(),
                readonly: m.read_only.unwrap_or(false) || src.read_only(),
                selinux_relabel: !matches!(src, Source::HostPath { .. }),
                propagation: propagation(m.mount_propagation.as_deref())? as i32,
                ..Default::default()
            });
        }
        Ok(out)
    }

    /// Unmounts and removes the pod's volumes (after it terminated). Host paths are never
    /// touched: a directory is only removed once nothing under the pod's directory is mounted.
    pub async fn teardown_pod(&self, uid: &str) -> Result<(), VolumeError> {
        self.tokens.forget_pod(uid);
        let dir = self.pod_volumes_dir(uid);
        if !dir.exists() {
            return Ok(());
        }
        let pod_dir = self.root_dir.join("pods").join(uid);
        for m in host::mounts_under(&pod_dir)? {
            host::unmount(&m).await?;
        }
        if let Some(m) = host::mounts_under(&pod_dir)?.into_iter().next() {
            return Err(VolumeError::StillMounted { path: m });
        }
        std::fs::remove_dir_all(&dir).map_err(|source| VolumeError::Remove { path: dir, source })
    }

    /// Removes what pods keel no longer knows left under `<root>/pods` (housekeeping,
    /// `cleanupOrphanedPodDirs`): for every pod directory whose UID `is_active` does not claim,
    /// the volumes are torn down, then the directory itself (etc-hosts, termination-log files,
    /// plugins) is removed once nothing under it is mounted.
    pub async fn cleanup_orphans(&self, is_active: &(dyn Fn(&str) -> bool + Sync)) {
        self.tokens.cleanup();
        let pods = self.root_dir.join("pods");
        let Ok(rd) = std::fs::read_dir(&pods) else { return };
        for e in rd.flatten() {
            let uid = e.file_name().to_string_lossy().into_owned();
            if is_active(&uid) {
                continue;
            }
            if self.pod_volumes_dir(&uid).exists() {
                if let Err(err) = self.teardown_pod(&uid).await {
                    warn!(pod_uid = %uid, error = %err, "removing volumes of an orphaned pod failed");
                    continue;
                }
            }
            if let Err(err) = remove_pod_dir(&e.path()) {
                warn!(pod_uid = %uid, error = %err, "removing the directory of an orphaned pod failed");
            }
        }
    }
}

/// Removes a pod's directory unless something under it is still mounted (removing through a
/// mount would delete what it shows).
fn remove_pod_dir(dir: &Path) -> Result<(), VolumeError> {
    if let Some(m) = host::mounts_under(dir)?.into_iter().next() {
        return Err(VolumeError::StillMounted { path: m });
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(VolumeError::Remove {
            path: dir.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// The mount's subPath, `subPathExpr` expanded against the container's environment: every
/// referenced variable must be set and non-empty (`ExpandContainerVolumeMounts`).
fn sub_path_of(m: &VolumeMount, envs: &[(String, String)]) -> Result<String, VolumeError> {
    let Some(expr) = m.sub_path_expr.as_deref().filter(|e| !e.is_empty()) else {
        return Ok(m.sub_path.clone().unwrap_or_default());
    };
    let map: BTreeMap<&str, &str> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let missing = std::cell::RefCell::new(BTreeSet::new());
    let out = expand(expr, &|name: &str| {
        let v = map.get(name).copied().unwrap_or_default();
        if v.is_empty() {
            missing.borrow_mut().insert(name.to_string());
        }
        Some(v.to_string())
    });
    let missing = missing.into_inner();
    if !missing.is_empty() {
        return Err(VolumeError::SubPathExpr {
            names: missing.into_iter().collect::<Vec<_>>().join(", "),
        });
    }
    Ok(out)
}

fn propagation(mode: Option<&str>) -> Result<cri::MountPropagation, VolumeError> {
    Ok(match mode {
        None | Some("None") => cri::MountPropagation::PropagationPrivate,
        Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer,
        Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional,
        Some(other) => return Err(VolumeError::Propagation { mode: other.into() }),
    })
}

fn fs_group(pod: &Pod) -> Option<u32> {
    let g = pod.spec.as_ref()?.security_context.as_ref()?.fs_group?;
    u32::try_from(g).ok()
}

/// `FsUserFrom`: the user every container runs as, when they all agree.
fn fs_user(pod: &Pod) -> Option<u32> {
    let spec = pod.spec.as_ref()?;
    let pod_user = spec.security_context.as_ref().and_then(|s| s.run_as_user);
    let mut user: Option<i64> = None;
    for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        let u = c.security_context.as_ref().and_then(|s| s.run_as_user).or(pod_user)?;
        match user {
            None => user = Some(u),
            Some(x) if x != u => return None,
            Some(_) => {}
        }
    }
    user.and_then(|u| u32::try_from(u).ok())
}

/// `calculateEmptyDirMemorySize`: node allocatable memory, lowered to the pod's memory limit
/// (when every container has one) and to the volume's sizeLimit, whichever is smaller.
pub fn memory_volume_size(
    pod: &Pod,
    allocatable: &BTreeMap<String, Quantity>,
    size_limit: Option<&Quantity>,
) -> Option<i128> {
    let mut size = allocatable.get("memory").and_then(|q| parse_value(&q.0).ok());
    let lower = |size: Option<i128>, v: i128| match size {
        _ if v <= 0 => size,
        Some(s) if v > s => size,
        _ => Some(v),
    };
    if let Some(limit) = pod_memory_limit(pod) {
        size = lower(size, limit);
    }
    if let Some(v) = size_limit.and_then(|q| parse_value(&q.0).ok()) {
        size = lower(size, v);
    }
    size
}

/// The pod's memory limit as the pod cgroup gets it: sum over containers, at least the largest
/// init container's, only when every container has a limit.
fn pod_memory_limit(pod: &Pod) -> Option<i128> {
    let spec = pod.spec.as_ref()?;
    let limit = |c: &Container| -> Option<i128> {
        let q = c.resources.as_ref()?.limits.as_ref()?.get("memory")?;
        parse_value(&q.0).ok()
    };
    let mut sum: i128 = 0;
    for c in &spec.containers {
        sum += limit(c)?;
    }
    let mut max_init: i128 = 0;
    for c in spec.init_containers.iter().flatten() {
        let l = limit(c)?;
        if c.restart_policy.as_deref() == Some("Always") {
            // Sidecars run alongside the main containers.
            sum += l;
        } else {
            max_init = max_init.max(l);
        }
    }
    Some(sum.max(max_init))
}

#[cfg(test)]
mod tests;
