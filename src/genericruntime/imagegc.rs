//! Image garbage collection for every backend, as the kubelet's `ImageGCManager` does it
//! (`pkg/kubelet/images/image_gc_manager.go`): when the image filesystem is above
//! `imageGCHighThresholdPercent`, remove images no container uses, least recently used first
//! (ties: first detected first), skipping pinned images and those detected less than
//! `imageMinimumGCAge` ago, until usage is back at `imageGCLowThresholdPercent`. The runtime's
//! sandbox (pause) image always counts as in use, as the kubelet's `detectImages` counts its
//! `--pod-infra-container-image`: without it no sandbox starts, and a node may not be able to
//! pull it again.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::seam::{cri, Runtime, RuntimeError};
use super::types::EventType;

/// How often images are re-detected (`lastUsed` updates) and GC considered.
pub const DETECT_PERIOD: Duration = Duration::from_secs(30);
pub const GC_PERIOD: Duration = Duration::from_secs(5 * 60);

/// The kubelet's image GC policy; its defaults are 85 / 80 / 2m.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageGcPolicy {
    pub high_threshold_percent: i32,
    pub low_threshold_percent: i32,
    pub min_age: Duration,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        Self {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(120),
        }
    }
}

/// Errors of image GC (the kubelet's wording).
#[derive(Debug, thiserror::Error)]
pub enum ImageGcError {
    #[error("invalid HighThresholdPercent {0}, must be in range [0-100]")]
    High(i32),
    #[error("invalid LowThresholdPercent {0}, must be in range [0-100]")]
    Low(i32),
    #[error("LowThresholdPercent {low} can not be higher than HighThresholdPercent {high}")]
    LowAboveHigh { low: i32, high: i32 },
    #[error("failed to get imageFs info: {0}")]
    FsInfo(String),
    #[error("invalid capacity 0 on image filesystem")]
    ZeroCapacity,
    #[error("Failed to garbage collect required amount of images. Attempted to free {wanted} bytes, but only found {freed} bytes eligible to free.")]
    NotEnough { wanted: u64, freed: u64 },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl ImageGcPolicy {
    pub fn validate(&self) -> Result<(), ImageGcError> {
        if !(0..=100).contains(&self.high_threshold_percent) {
            return Err(ImageGcError::High(self.high_threshold_percent));
        }
        if !(0..=100).contains(&self.low_threshold_percent) {
            return Err(ImageGcError::Low(self.low_threshold_percent));
        }
        if self.low_threshold_percent > self.high_threshold_percent {
            return Err(ImageGcError::LowAboveHigh {
                low: self.low_threshold_percent,
                high: self.high_threshold_percent,
            });
        }
        Ok(())
    }
}

/// What image GC needs from a runtime (a seam of its own so the policy is testable).
#[async_trait]
pub trait ImageGcSource: Send + Sync {
    async fn images(&self) -> Result<Vec<cri::Image>, RuntimeError>;
    /// Image IDs of every container, running or not (the kubelet's `GetPods(all=true)`).
    async fn images_in_use(&self) -> Result<HashSet<String>, RuntimeError>;
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// Image IDs of the sandbox (pause) image(s) the runtime starts sandboxes with, present on
    /// the node: never collected.
    async fn sandbox_images(&self) -> HashSet<String>;
    /// (capacity, available) bytes of the image filesystem.
    async fn fs_stats(&self) -> Result<(u64, u64), ImageGcError>;
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    first_detected: Instant,
    /// None: never seen in use (the kubelet's zero time).
    last_used: Option<Instant>,
    size: u64,
    pinned: bool,
}

/// Where node events go (`kind, reason, message`).
pub type NodeEventFn = Arc<dyn Fn(EventType, &str, String) + Send + Sync>;

/// One node's image GC.
pub struct ImageGcManager {
    source: Arc<dyn ImageGcSource>,
    policy: ImageGcPolicy,
    records: Mutex<HashMap<String, Record>>,
    node_event: Option<NodeEventFn>,
}

impl ImageGcManager {
    pub fn new(source: Arc<dyn ImageGcSource>, policy: ImageGcPolicy) -> Result<Self, ImageGcError> {
        policy.validate()?;
        Ok(Self {
            source,
            policy,
            records: Mutex::default(),
            node_event: None,
        })
    }

    /// Node events (`FreeDiskSpaceFailed`, `ImageGCFailed`).
    pub fn with_node_events(mut self, f: NodeEventFn) -> Self {
        self.node_event = Some(f);
        self
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `detectImages`: records new images, marks used ones used `now`, forgets removed ones.
    /// Returns the IDs in use.
    pub async fn detect(&self, now: Instant) -> Result<HashSet<String>, RuntimeError> {
        let images = self.source.images().await?;
        let mut in_use = self.source.images_in_use().await?;
        in_use.extend(self.source.sandbox_images().await);
        let mut recs = self.records();
        let present: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
        for i in &images {
            let r = recs.entry(i.id.clone()).or_insert(Record {
                first_detected: now,
                last_used: None,
                size: i.size,
                pinned: i.pinned,
            });
            if in_use.contains(&i.id) {
                r.last_used = Some(now);
            }
            r.size = i.size;
            r.pinned = i.pinned;
        }
        recs.retain(|id, _| present.contains(id.as_str()));
        Ok(in_use)
    }

    /// `freeSpace`: removes eligible images until `bytes` are freed; returns what was freed.
    pub async fn free_space(&self, bytes: u64, now: Instant) -> Result<u64, ImageGcError> {
        let in_use = self.detect(now).await?;
        let mut candidates: Vec<(String, Record)> = self
            .records()
            .iter()
            .filter(|(id, r)| !in_use.contains(*id) && !r.pinned)
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect();
        candidates.sort_by(|a, b| {
            a.1.last_used
                .cmp(&b.1.last_used)
                .then(a.1.first_detected.cmp(&b.1.first_detected))
                .then(a.0.cmp(&b.0))
        });
        let mut freed = 0u64;
        let mut last_err = None;
        for (id, r) in candidates {
            if r.last_used.is_some_and(|t| t >= now) {
                continue;
            }
            if now.saturating_duration_since(r.first_detected) < self.policy.min_age {
                tracing::debug!(image = %id, "image GC: not old enough");
                continue;
            }
            tracing::info!(image = %id, size = r.size, "removing image to free bytes");
            match self.source.remove(&id).await {
                Ok(()) => {
                    self.records().remove(&id);
                    freed += r.size;
                    if freed >= bytes {
                        break;
                    }
                }
                Err(e) => last_err = Some(e),
            }
        }
        if let Some(e) = last_err {
            if freed < bytes {
                return Err(e.into());
            }
        }
        Ok(freed)
    }

    /// `GarbageCollect`: frees space when usage is at or above the high threshold.
    pub async fn garbage_collect(&self, now: Instant) -> Result<u64, ImageGcError> {
        let (capacity, available) = self.source.fs_stats().await?;
        if capacity == 0 {
            self.event(
                EventType::Warning,
                "InvalidDiskCapacity",
                "invalid capacity 0 on image filesystem".into(),
            );
            return Err(ImageGcError::ZeroCapacity);
        }
        let available = available.min(capacity);
        let usage_percent = 100 - (available as u128 * 100 / capacity as u128) as i32;
        if usage_percent < self.policy.high_threshold_percent {
            return Ok(0);
        }
        let target = capacity as u128 * (100 - self.policy.low_threshold_percent as u128) / 100;
        let wanted = target.saturating_sub(available as u128) as u64;
        tracing::info!(
            usage_percent,
            high = self.policy.high_threshold_percent,
            wanted,
            "image filesystem over the high threshold, freeing images"
        );
        let freed = self.free_space(wanted, now).await?;
        if freed < wanted {
            let e = ImageGcError::NotEnough { wanted, freed };
            self.event(EventType::Warning, "FreeDiskSpaceFailed", e.to_string());
            return Err(e);
        }
        Ok(freed)
    }

    fn event(&self, kind: EventType, reason: &str, msg: String) {
        if let Some(f) = &self.node_event {
            f(kind, reason, msg);
        }
    }

    /// The periodic loop: detect every 30 s, collect every 5 min (the kubelet's periods).
    pub async fn run(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut detect = tokio::time::interval(DETECT_PERIOD);
        let mut gc = tokio::time::interval(GC_PERIOD);
        gc.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = detect.tick() => {
                    if let Err(e) = self.detect(Instant::now()).await {
                        tracing::debug!(error = %e, "image detection failed");
                    }
                }
                _ = gc.tick() => {
                    match self.garbage_collect(Instant::now()).await {
                        Ok(_) => {}
                        // A backend with no statfs-able image filesystem (the simulator's may
                        // not exist yet): nothing to collect against.
                        Err(e @ ImageGcError::FsInfo(_)) => tracing::debug!(error = %e, "image GC skipped"),
                        Err(e) => {
                            tracing::warn!(error = %e, "image garbage collection failed");
                            if !matches!(e, ImageGcError::NotEnough { .. } | ImageGcError::ZeroCapacity) {
                                self.event(EventType::Warning, "ImageGCFailed", e.to_string());
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The source for a real backend: CRI calls plus `statvfs` of the image filesystem's mountpoint.
pub struct RuntimeImages {
    runtime: Arc<dyn Runtime>,
    /// `--pod-infra-container-image`, when given.
    sandbox_image: Option<String>,
}

impl RuntimeImages {
    pub fn new(runtime: Arc<dyn Runtime>) -> Self {
        Self {
            runtime,
            sandbox_image: None,
        }
    }

    /// The sandbox image the kubelet was told about (`--pod-infra-container-image`), kept as
    /// well as the one the runtime reports.
    pub fn with_sandbox_image(mut self, image: Option<String>) -> Self {
        self.sandbox_image = image.filter(|i| !i.is_empty());
        self
    }

    /// The sandbox image the runtime names in its verbose status: containerd's CRI plugin
    /// config (`info["config"]`, JSON) has `sandboxImage`. Runtimes that report none (CRI-O pins
    /// its pause image instead; keel's own backends use no image for sandboxes) give None.
    async fn runtime_sandbox_image(&self) -> Option<String> {
        let status = self
            .runtime
            .status(cri::StatusRequest { verbose: true })
            .await
            .map_err(|e| tracing::debug!(error = %e, "image GC: runtime status unavailable"))
            .ok()?;
        sandbox_image_of(&status.info)
    }
}

/// `sandboxImage` of containerd's CRI config in a verbose `Status` answer's info.
pub fn sandbox_image_of(info: &HashMap<String, String>) -> Option<String> {
    let config: serde_json::Value = serde_json::from_str(info.get("config")?).ok()?;
    let image = config.get("sandboxImage")?.as_str()?;
    (!image.is_empty()).then(|| image.to_string())
}

#[async_trait]
impl ImageGcSource for RuntimeImages {
    async fn images(&self) -> Result<Vec<cri::Image>, RuntimeError> {
        Ok(self.runtime.list_images(Default::default()).await?.images)
    }

    async fn images_in_use(&self) -> Result<HashSet<String>, RuntimeError> {
        let cs = self.runtime.list_containers(Default::default()).await?.containers;
        Ok(cs
            .into_iter()
            .flat_map(|c| [c.image_ref, c.image.map(|i| i.image).unwrap_or_default()])
            .filter(|s| !s.is_empty())
            .collect())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.runtime
            .remove_image(cri::RemoveImageRequest {
                image: Some(cri::ImageSpec {
                    image: id.to_string(),
                    ..Default::default()
                }),
            })
            .await
            .map(|_| ())
    }

    async fn sandbox_images(&self) -> HashSet<String> {
        let mut names: Vec<String> = self.sandbox_image.iter().cloned().collect();
        names.extend(self.runtime_sandbox_image().await);
        let mut ids = HashSet::new();
        // The kubelet's `GetImageRef`: the image's ID if the runtime has it (an absent image
        // needs no protection).
        for name in names {
            let status = self
                .runtime
                .image_status(cri::ImageStatusRequest {
                    image: Some(cri::ImageSpec {
                        image: name.clone(),
                        ..Default::default()
                    }),
                    verbose: false,
                })
                .await;
            match status {
                Ok(s) => ids.extend(s.image.map(|i| i.id).filter(|id| !id.is_empty())),
                Err(e) => tracing::debug!(image = %name, error = %e, "image GC: sandbox image status unavailable"),
            }
        }
        ids
    }

    async fn fs_stats(&self) -> Result<(u64, u64), ImageGcError> {
        let info = self
            .runtime
            .image_fs_info(Default::default())
            .await
            .map_err(|e| ImageGcError::FsInfo(e.to_string()))?;
        let mount = info
            .image_filesystems
            .first()
            .and_then(|f| f.fs_id.as_ref())
            .map(|f| f.mountpoint.clone())
            .ok_or_else(|| ImageGcError::FsInfo("no image filesystem reported".into()))?;
        let st =
            nix::sys::statvfs::statvfs(Path::new(&mount)).map_err(|e| ImageGcError::FsInfo(format!("{mount}: {e}")))?;
        let frag = st.fragment_size() as u64;
        Ok((st.blocks() as u64 * frag, st.blocks_available() as u64 * frag))
    }
}

#[cfg(test)]
#[path = "imagegc_tests.rs"]
mod tests;
