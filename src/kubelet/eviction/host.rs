//! The eviction manager wired to keel: the summary from the stats provider, active pods and
//! kills through the kubelet core, node-level reclaim through container and image GC.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;

use super::manager::EvictionHost;
use super::EvictionError;
use crate::genericruntime::imagegc::ImageGcManager;
use crate::genericruntime::{EventSink, EventType};
use crate::kubelet::stats::types::Summary;
use crate::kubelet::stats::StatsProvider;
use crate::kubelet::syncloop::Core;

/// [`EvictionHost`] over a kubelet core.
pub struct CoreHost {
    core: Arc<Core>,
    image_gc: Option<Arc<ImageGcManager>>,
}

impl CoreHost {
    pub fn new(core: Arc<Core>, image_gc: Option<Arc<ImageGcManager>>) -> Arc<Self> {
        Arc::new(Self { core, image_gc })
    }
}

/// The device of `path` or of its nearest existing ancestor.
fn device(path: &Path) -> Option<u64> {
    path.ancestors()
        .find_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.dev())
}

#[async_trait]
impl EvictionHost for CoreHost {
    async fn summary(&self) -> Result<Summary, EvictionError> {
        StatsProvider::for_core(&self.core)
            .summary(false)
            .await
            .map_err(|e| EvictionError::Stats(e.to_string()))
    }

    fn active_pods(&self) -> Vec<Pod> {
        self.core.active_pods()
    }

    async fn dedicated_image_fs(&self) -> Option<bool> {
        let info = self
            .core
            .manager
            .runtime()
            .image_fs_info(Default::default())
            .await
            .map_err(|e| tracing::debug!(error = %e, "eviction manager: ImageFsInfo failed"))
            .ok()?;
        let Some(mount) = info
            .image_filesystems
            .first()
            .and_then(|u| u.fs_id.as_ref())
            .map(|id| id.mountpoint.clone())
        else {
            return Some(false);
        };
        Some(device(Path::new(&mount)) != device(&self.core.cfg.root_dir))
    }

    async fn delete_unused_containers(&self) -> Result<(), String> {
        self.core.collect_containers(false).await.map_err(|e| e.to_string())
    }

    async fn delete_unused_images(&self) -> Result<(), String> {
        match &self.image_gc {
            Some(gc) => gc
                .free_space(u64::MAX, std::time::Instant::now())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    fn kill_pod(&self, pod: &Pod, grace: i64, reason: &str, message: &str) {
        self.core.kill_pod_with_status(pod, grace, reason, message);
    }

    fn pod_event(&self, pod: &Pod, reason: &str, message: &str) {
        self.core
            .recorder
            .pod_event(pod, None, EventType::Warning, reason, message.to_string());
    }

    fn node_event(&self, reason: &str, message: &str) {
        self.core.recorder.node_event(EventType::Warning, reason, message);
    }

    fn pod_cleaned_up(&self, uid: &str) -> bool {
        self.core.pod_terminated(uid)
    }
}
