//! The CRI ImageService of the native backend, on top of [`ImageStore`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::genericruntime::seam::{cri, Code, ImageService, PullProgress, Result, RuntimeError};

use super::hosts::HostsConfig;
use super::metadata::ImageRecord;
use super::preload::PreloadReport;
use super::pull::PullError;
use super::store::{ImageStore, StoreError};

/// Where the store lives below `--root-dir`.
pub fn store_root(root_dir: &Path) -> PathBuf {
    root_dir.join("native").join("images")
}

/// Default `--registry-config-dir`.
pub const DEFAULT_REGISTRY_CONFIG_DIR: &str = "/etc/keel/certs.d";

pub struct NativeImages {
    store: Arc<ImageStore>,
}

impl NativeImages {
    pub fn open(root_dir: &Path, registry_config_dir: Option<PathBuf>) -> std::result::Result<Self, StoreError> {
        let store = ImageStore::open(&store_root(root_dir), HostsConfig::new(registry_config_dir))?;
        Ok(Self { store: Arc::new(store) })
    }

    pub fn store(&self) -> &Arc<ImageStore> {
        &self.store
    }

    /// Imports the archives of the preload directory (`imagePreloadDir`) not yet in the store,
    /// on a blocking thread; failures are logged one line per archive.
    pub async fn preload(&self, dir: &Path) -> PreloadReport {
        let store = self.store.clone();
        let dir = dir.to_path_buf();
        match tokio::task::spawn_blocking(move || store.preload(&dir)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "image preload task failed");
                PreloadReport::default()
            }
        }
    }
}

/// containerd's `getUserFromImage`: a numeric user is a uid, anything else a name; the group
/// part is dropped; no user at all gives neither.
fn user_of(user: &str) -> (Option<cri::Int64Value>, String) {
    let u = user.split(':').next().unwrap_or("");
    if u.is_empty() {
        return (None, String::new());
    }
    match u.parse::<i64>() {
        Ok(uid) => (Some(cri::Int64Value { value: uid }), String::new()),
        Err(_) => (None, u.to_string()),
    }
}

pub fn to_cri(rec: &ImageRecord) -> cri::Image {
    let (uid, username) = user_of(&rec.config.user);
    cri::Image {
        id: rec.id.to_string(),
        repo_tags: rec.repo_tags.clone(),
        repo_digests: rec.repo_digests.clone(),
        size: rec.size,
        uid,
        username,
        spec: Some(cri::ImageSpec {
            image: rec.id.to_string(),
            ..Default::default()
        }),
        pinned: rec.pinned,
    }
}

fn image_name(spec: Option<&cri::ImageSpec>) -> String {
    spec.map(|s| s.image.clone()).unwrap_or_default()
}

fn store_err(op: &'static str, e: StoreError) -> RuntimeError {
    RuntimeError::new(op, Code::Internal, e.to_string())
}

#[async_trait]
impl ImageService for NativeImages {
    async fn list_images(&self, req: cri::ListImagesRequest) -> Result<cri::ListImagesResponse> {
        let filter = req
            .filter
            .as_ref()
            .map(|f| image_name(f.image.as_ref()))
            .unwrap_or_default();
        let images = if filter.is_empty() {
            self.store.list()
        } else {
            self.store.find(&filter).into_iter().collect()
        };
        Ok(cri::ListImagesResponse {
            images: images.iter().map(to_cri).collect(),
        })
    }

    async fn image_status(&self, req: cri::ImageStatusRequest) -> Result<cri::ImageStatusResponse> {
        let name = image_name(req.image.as_ref());
        let Some(rec) = self.store.find(&name) else {
            return Ok(cri::ImageStatusResponse::default());
        };
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            // What containerd's verbose status carries that a runtime needs: the run config.
            let v = serde_json::json!({
                "id": rec.id.to_string(),
                "chainID": rec.chain_ids().last().map(|c| c.to_string()),
                "imageSpec": {"config": rec.config},
                "lowerDirs": self.store.lower_dirs(&rec),
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(cri::ImageStatusResponse {
            image: Some(to_cri(&rec)),
            info,
        })
    }

    async fn pull_image(&self, req: cri::PullImageRequest) -> Result<cri::PullImageResponse> {
        self.pull_image_with_progress(req, Arc::default()).await
    }

    async fn pull_image_with_progress(
        &self,
        req: cri::PullImageRequest,
        progress: Arc<PullProgress>,
    ) -> Result<cri::PullImageResponse> {
        let name = image_name(req.image.as_ref());
        // The pull goes on even if the caller stops waiting: the next attempt then finds it done.
        let store = self.store.clone();
        let auth = req.auth.clone();
        let task = tokio::spawn(async move { store.pull(&name, auth.as_ref(), Some(progress)).await });
        match task.await {
            Ok(Ok(rec)) => Ok(cri::PullImageResponse {
                image_ref: rec.id.to_string(),
            }),
            Ok(Err(e)) => {
                let code = match &e {
                    PullError::Name(_) => Code::InvalidArgument,
                    e if e.is_not_found() => Code::NotFound,
                    _ => Code::Unknown,
                };
                Err(RuntimeError::new("PullImage", code, e.to_string()))
            }
            Err(e) => Err(RuntimeError::new(
                "PullImage",
                Code::Internal,
                format!("pull task failed: {e}"),
            )),
        }
    }

    async fn remove_image(&self, req: cri::RemoveImageRequest) -> Result<cri::RemoveImageResponse> {
        let name = image_name(req.image.as_ref());
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.remove(&name))
            .await
            .map_err(|e| RuntimeError::new("RemoveImage", Code::Internal, e.to_string()))?
            .map_err(|e| store_err("RemoveImage", e))?;
        Ok(cri::RemoveImageResponse {})
    }

    async fn image_fs_info(&self, _req: cri::ImageFsInfoRequest) -> Result<cri::ImageFsInfoResponse> {
        let store = self.store.clone();
        let (bytes, inodes) = tokio::task::spawn_blocking(move || store.usage())
            .await
            .map_err(|e| RuntimeError::new("ImageFsInfo", Code::Internal, e.to_string()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        Ok(cri::ImageFsInfoResponse {
            image_filesystems: vec![cri::FilesystemUsage {
                timestamp: now,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: self.store.root().to_string_lossy().into_owned(),
                }),
                used_bytes: Some(cri::UInt64Value { value: bytes }),
                inodes_used: Some(cri::UInt64Value { value: inodes }),
            }],
            container_filesystems: vec![],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_like_containerd() {
        assert_eq!(user_of(""), (None, String::new()));
        assert_eq!(user_of("1000"), (Some(cri::Int64Value { value: 1000 }), String::new()));
        assert_eq!(
            user_of("1000:50"),
            (Some(cri::Int64Value { value: 1000 }), String::new())
        );
        assert_eq!(user_of("nobody:nogroup"), (None, "nobody".to_string()));
    }
}
