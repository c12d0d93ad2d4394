//! Offline autonomy (`checkpointPods`): a local checkpoint of the API pods bound to this node,
//! so that after a reboot with the API server unreachable keel starts them again.
//!
//! The kubelet had a "bootstrap checkpoint" for this (removed in 1.19); keel keeps every API pod
//! of the node instead of only annotated ones. The checkpoint is one JSON file under the root
//! dir (`checkpoint/pods.json`, 0600, written atomically: temp file, fsync, rename, fsync of the
//! directory), refreshed whenever the pods or their locally computed status change. With
//! `checkpointSecrets` it also holds the ConfigMaps, Secrets and service-account tokens the pods'
//! volumes and env use, and the Services their environment variables come from; without it
//! nothing secret ever reaches the file.
//!
//! [`gate`] sits between the API pod source and the kubelet loop: it forwards every update,
//! keeps the checkpoint current, and when the API source has not delivered its first list within
//! [`RESTORE_AFTER`] it hands the kubelet the checkpointed pods as the API's snapshot. The API's
//! first real list replaces that snapshot, so the API's view wins: pods deleted meanwhile are
//! removed (stopped), the others' status is patched by the status manager.

pub mod gate;
pub mod offline;

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodSpec, Secret, Service};
use serde::{Deserialize, Serialize};

pub use self::gate::{spawn_gate, GateOptions, RESTORE_AFTER};
pub use self::offline::OfflineStore;

/// Format version of the checkpoint file.
pub const CHECKPOINT_VERSION: u32 = 1;
/// The checkpoint's directory under the root dir.
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// The checkpoint's file name.
pub const CHECKPOINT_FILE: &str = "pods.json";

/// Errors reading or writing the checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint {path} is not valid: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("checkpoint {path} has format version {got}, keel reads version {CHECKPOINT_VERSION}")]
    Version { path: PathBuf, got: u32 },
    #[error("encoding the checkpoint: {0}")]
    Encode(#[source] serde_json::Error),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CheckpointError + 'a {
    move |source| CheckpointError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A service-account token a projected volume was given, kept for an offline restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenEntry {
    pub pod_uid: String,
    pub service_account: String,
    pub audience: String,
    pub token: String,
}

/// What the checkpoint file holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub version: u32,
    pub node_name: String,
    /// The API pods bound to the node, each with the status keel last computed for it.
    pub pods: Vec<Pod>,
    /// Only with `checkpointSecrets`: the objects the pods' volumes and env read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_maps: Vec<ConfigMap>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Secret>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenEntry>,
    /// Only with `checkpointSecrets`: the Services behind the pods' service environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<Service>>,
}

/// Where the checkpoint of a root dir lives.
pub fn checkpoint_path(root_dir: &Path) -> PathBuf {
    root_dir.join(CHECKPOINT_DIR).join(CHECKPOINT_FILE)
}

/// Writes `data` to `path` so that a crash at any moment leaves either the old or the new file:
/// a 0600 temp file next to it, written and fsynced, renamed over it, and the directory fsynced
/// so the rename itself survives a power cut. The directory is created 0700 when missing.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), CheckpointError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("creating", dir))?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("creating", &tmp))?;
        // A temp file left by an older keel may have other bits: the mode only applies on create.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io("setting the mode of", &tmp))?;
        f.write_all(data).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("syncing", &tmp))?;
        std::fs::rename(&tmp, path).map_err(io("renaming to", path))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing", dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes the checkpoint atomically (see [`write_atomic`]).
pub fn save(path: &Path, cp: &Checkpoint) -> Result<(), CheckpointError> {
    let data = serde_json::to_vec(cp).map_err(CheckpointError::Encode)?;
    write_atomic(path, &data)
}

/// Reads the checkpoint; `None` when there is none.
pub fn load(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("reading", path)(e)),
    };
    let cp: Checkpoint = serde_json::from_slice(&data).map_err(|source| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    if cp.version != CHECKPOINT_VERSION {
        return Err(CheckpointError::Version {
            path: path.to_path_buf(),
            got: cp.version,
        });
    }
    Ok(Some(cp))
}

/// `keel pods`: one standalone status line per checkpointed pod, by namespace and name.
pub fn status_lines(cp: &Checkpoint) -> Vec<String> {
    let mut pods: Vec<&Pod> = cp.pods.iter().collect();
    pods.sort_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
    pods.iter()
        .map(|p| {
            crate::kubelet::status::manager::status_line(
                p.metadata.namespace.as_deref().unwrap_or("default"),
                p.metadata.name.as_deref().unwrap_or_default(),
                &p.status.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// The ConfigMaps and Secrets (namespace, name) a pod's volumes and environment read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct References {
    pub config_maps: BTreeSet<(String, String)>,
    pub secrets: BTreeSet<(String, String)>,
}

impl References {
    /// Adds what `pod` references: configMap/secret volumes, projected sources, env valueFrom
    /// and envFrom of init, regular and ephemeral containers.
    pub fn add_pod(&mut self, pod: &Pod) {
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let Some(spec) = &pod.spec else { return };
        let mut cm = |n: &str| {
            self.config_maps.insert((ns.clone(), n.to_string()));
        };
        for v in spec.volumes.iter().flatten() {
            if let Some(c) = &v.config_map {
                cm(&c.name);
            }
            for s in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
                if let Some(c) = &s.config_map {
                    cm(&c.name);
                }
            }
        }
        for_each_env_source(spec, |is_secret, name| {
            if !is_secret {
                cm(name);
            }
        });
        let mut sec = |n: &str| {
            self.secrets.insert((ns.clone(), n.to_string()));
        };
        for v in spec.volumes.iter().flatten() {
            if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
                sec(name);
            }
            for s in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
                if let Some(c) = &s.secret {
                    sec(&c.name);
                }
            }
        }
        for_each_env_source(spec, |is_secret, name| {
            if is_secret {
                sec(name);
            }
        });
    }
}

/// Calls `f(is_secret, name)` for every ConfigMap or Secret a container's env or envFrom names.
fn for_each_env_source(spec: &PodSpec, mut f: impl FnMut(bool, &str)) {
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .map(|c| (c.env.as_deref(), c.env_from.as_deref()))
        .chain(
            spec.ephemeral_containers
                .iter()
                .flatten()
                .map(|c| (c.env.as_deref(), c.env_from.as_deref())),
        );
    for (env, env_from) in containers {
        for e in env.into_iter().flatten() {
            let Some(from) = &e.value_from else { continue };
            if let Some(r) = &from.config_map_key_ref {
                f(false, &r.name);
            }
            if let Some(r) = &from.secret_key_ref {
                f(true, &r.name);
            }
        }
        for e in env_from.into_iter().flatten() {
            if let Some(r) = &e.config_map_ref {
                f(false, &r.name);
            }
            if let Some(r) = &e.secret_ref {
                f(true, &r.name);
            }
        }
    }
}

#[cfg(test)]
mod tests;
