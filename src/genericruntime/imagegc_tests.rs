//! Cases of the kubelet's `image_gc_manager_test.go`, against a fake runtime.

use super::*;

#[derive(Default)]
struct Fake {
    images: Mutex<Vec<cri::Image>>,
    in_use: Mutex<HashSet<String>>,
    fs: Mutex<Option<(u64, u64)>>,
    removed: Mutex<Vec<String>>,
    sandbox: Mutex<HashSet<String>>,
}

impl Fake {
    fn with(images: &[(&str, u64)]) -> Arc<Self> {
        let f = Fake::default();
        *f.images.lock().unwrap() = images
            .iter()
            .map(|(id, size)| cri::Image {
                id: id.to_string(),
                size: *size,
                ..Default::default()
            })
            .collect();
        Arc::new(f)
    }
    fn use_only(&self, ids: &[&str]) {
        *self.in_use.lock().unwrap() = ids.iter().map(|s| s.to_string()).collect();
    }
    fn pin(&self, id: &str) {
        for i in self.images.lock().unwrap().iter_mut() {
            if i.id == id {
                i.pinned = true;
            }
        }
    }
    fn left(&self) -> Vec<String> {
        self.images.lock().unwrap().iter().map(|i| i.id.clone()).collect()
    }
}

#[async_trait]
impl ImageGcSource for Fake {
    async fn images(&self) -> Result<Vec<cri::Image>, RuntimeError> {
        Ok(self.images.lock().unwrap().clone())
    }
    async fn images_in_use(&self) -> Result<HashSet<String>, RuntimeError> {
        Ok(self.in_use.lock().unwrap().clone())
    }
    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.images.lock().unwrap().retain(|i| i.id != id);
        self.removed.lock().unwrap().push(id.to_string());
        Ok(())
    }
    async fn sandbox_images(&self) -> HashSet<String> {
        self.sandbox.lock().unwrap().clone()
    }
    async fn fs_stats(&self) -> Result<(u64, u64), ImageGcError> {
        self.fs
            .lock()
            .unwrap()
            .ok_or_else(|| ImageGcError::FsInfo("cadvisor failure".into()))
    }
}

fn manager(f: &Arc<Fake>, min_age: Duration) -> ImageGcManager {
    ImageGcManager::new(
        f.clone(),
        ImageGcPolicy {
            high_threshold_percent: 90,
            low_threshold_percent: 80,
            min_age,
        },
    )
    .unwrap()
}

#[tokio::test]
async fn detect_images_initial_detect() {
    let f = Fake::with(&[("image-0", 1024), ("image-1", 2048), ("image-2", 2048)]);
    f.use_only(&["image-1"]);
    let m = manager(&f, Duration::ZERO);
    let start = Instant::now();
    m.detect(start).await.unwrap();
    let r = m.records();
    assert_eq!(r.len(), 3);
    assert_eq!(r["image-1"].last_used, Some(start));
    assert_eq!(r["image-0"].last_used, None);
    assert_eq!(r["image-0"].first_detected, start);
    assert_eq!(r["image-2"].size, 2048);
}

#[tokio::test]
async fn detect_images_forgets_removed_ones() {
    let f = Fake::with(&[("image-0", 1024), ("image-1", 2048)]);
    let m = manager(&f, Duration::ZERO);
    let t = Instant::now();
    m.detect(t).await.unwrap();
    f.images.lock().unwrap().remove(0);
    m.detect(t + Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        m.records().keys().cloned().collect::<Vec<_>>(),
        vec!["image-1".to_string()]
    );
}

#[tokio::test]
async fn free_space_images_in_use_are_ignored() {
    let f = Fake::with(&[("image-0", 1024), ("image-1", 2048)]);
    f.use_only(&["image-1"]);
    let m = manager(&f, Duration::ZERO);
    let freed = m.free_space(2048, Instant::now()).await.unwrap();
    assert_eq!(freed, 1024);
    assert_eq!(f.left(), vec!["image-1"]);
}

#[tokio::test]
async fn delete_unused_images_remove_all_unused() {
    let f = Fake::with(&[("image-0", 1024), ("image-1", 2048), ("image-2", 2048)]);
    f.use_only(&["image-2"]);
    let m = manager(&f, Duration::ZERO);
    let freed = m.free_space(u64::MAX, Instant::now()).await.unwrap();
    assert_eq!(freed, 3072);
    assert_eq!(f.left(), vec!["image-2"]);
}

#[tokio::test]
async fn free_space_remove_by_least_recently_used() {
    let f = Fake::with(&[("image-0", 1024), ("image-1", 2048)]);
    let m = manager(&f, Duration::ZERO);
    let t0 = Instant::now();
    // Both in use at first, then only image-1: image-0 was used less recently.
    f.use_only(&["image-0", "image-1"]);
    m.detect(t0).await.unwrap();
    f.use_only(&["image-1"]);
    m.detect(t0 + Duration::from_secs(1)).await.unwrap();
    f.use_only(&[]);
    let freed = m.free_space(1024, t0 + Duration::from_secs(2)).await.unwrap();
    assert_eq!(freed, 1024);
    assert_eq!(f.left(), vec!["image-1"]);
}

#[tokio::test]
async fn free_space_ties_broken_by_detected_time() {
    let f = Fake::with(&[("image-0", 1024)]);
    let m = manager(&f, Duration::ZERO);
    let t0 = Instant::now();
    f.use_only(&["image-0"]);
    m.detect(t0).await.unwrap();
    // image-1 appears later, in use at the same instant as image-0 was.
    f.images.lock().unwrap().push(cri::Image {
        id: "image-1".into(),
        size: 2048,
        ..Default::default()
    });
    f.use_only(&["image-1"]);
    m.detect(t0 + Duration::from_secs(1)).await.unwrap();
    m.records().get_mut("image-1").unwrap().last_used = Some(t0);
    f.use_only(&[]);
    let freed = m.free_space(1024, t0 + Duration::from_secs(2)).await.unwrap();
    assert_eq!(freed, 1024);
    assert_eq!(f.left(), vec!["image-1"]);
}

#[tokio::test]
async fn pinned_images_are_kept() {
    let f = Fake::with(&[("pause", 1024), ("image-1", 2048)]);
    f.pin("pause");
    let m = manager(&f, Duration::ZERO);
    let freed = m.free_space(u64::MAX, Instant::now()).await.unwrap();
    assert_eq!(freed, 2048);
    assert_eq!(f.left(), vec!["pause"]);
}

/// The runtime's sandbox image is in use even with no container on it (the kubelet's
/// `detectImages` adds its `--pod-infra-container-image`): first in LRU order, old enough,
/// unpinned, and still kept when that leaves GC short of its target.
#[tokio::test]
async fn the_sandbox_image_is_never_collected() {
    let f = Fake::with(&[("sha256:pause", 300), ("image-1", 50)]);
    f.sandbox.lock().unwrap().insert("sha256:pause".into());
    *f.fs.lock().unwrap() = Some((1000, 50)); // 95% used: 150 bytes wanted
    let m = manager(&f, Duration::ZERO);
    let t0 = Instant::now();
    m.detect(t0).await.unwrap();
    f.use_only(&["image-1"]);
    m.detect(t0 + Duration::from_secs(1)).await.unwrap();
    f.use_only(&[]);
    let err = m.garbage_collect(t0 + Duration::from_secs(2)).await.unwrap_err();
    assert!(
        matches!(err, ImageGcError::NotEnough { wanted: 150, freed: 50 }),
        "{err}"
    );
    assert_eq!(f.left(), vec!["sha256:pause"]);
    assert_eq!(*f.removed.lock().unwrap(), vec!["image-1"]);
    assert_eq!(m.free_space(u64::MAX, t0 + Duration::from_secs(3)).await.unwrap(), 0);
    assert_eq!(f.left(), vec!["sha256:pause"]);
    // Recorded as used at every detection, as the kubelet's.
    assert_eq!(m.records()["sha256:pause"].last_used, Some(t0 + Duration::from_secs(3)));
}

/// containerd 1.6's verbose `Status` info names its sandbox image in the CRI plugin config
/// (`crictl info`, trimmed, from the containerd the tests run).
#[test]
fn sandbox_image_from_containerd_status_info() {
    let config = r#"{"containerd":{"snapshotter":"overlayfs","defaultRuntimeName":"runc"},"cni":{"binDir":"/usr/lib/cni","confDir":"/etc/cni/net.d"},"enableSelinux":false,"sandboxImage":"localhost/pause:1","statsCollectPeriod":10,"maxContainerLogSize":16384}"#;
    let info: HashMap<String, String> = [
        ("config".to_string(), config.to_string()),
        ("golang".to_string(), "\"go1.19.8\"".to_string()),
    ]
    .into();
    assert_eq!(sandbox_image_of(&info).as_deref(), Some("localhost/pause:1"));
    // Not verbose, another runtime, or an empty setting: none.
    assert_eq!(sandbox_image_of(&HashMap::new()), None);
    let empty: HashMap<String, String> = [("config".to_string(), r#"{"sandboxImage":""}"#.to_string())].into();
    assert_eq!(sandbox_image_of(&empty), None);
}

#[tokio::test]
async fn garbage_collect_below_high_threshold_does_nothing() {
    let f = Fake::with(&[("image-0", 450)]);
    *f.fs.lock().unwrap() = Some((1000, 600)); // 40% used
    let m = manager(&f, Duration::ZERO);
    assert_eq!(m.garbage_collect(Instant::now()).await.unwrap(), 0);
    assert_eq!(f.left(), vec!["image-0"]);
}

#[tokio::test]
async fn garbage_collect_fs_stats_failure() {
    let f = Fake::with(&[]);
    let m = manager(&f, Duration::ZERO);
    assert!(matches!(
        m.garbage_collect(Instant::now()).await,
        Err(ImageGcError::FsInfo(_))
    ));
}

#[tokio::test]
async fn garbage_collect_frees_down_to_low_threshold() {
    let f = Fake::with(&[("image-0", 50), ("image-1", 60), ("image-2", 500)]);
    *f.fs.lock().unwrap() = Some((1000, 50)); // 95% used: free 200-50 = 150
    let m = manager(&f, Duration::ZERO);
    let t0 = Instant::now();
    f.use_only(&["image-2"]);
    m.detect(t0).await.unwrap();
    f.use_only(&[]);
    // image-2 was used at t0 and is last in line; image-0 and -1 (50+60) are not enough,
    // so image-2 goes too.
    let freed = m.garbage_collect(t0 + Duration::from_secs(1)).await.unwrap();
    assert_eq!(freed, 610);
    assert!(f.left().is_empty());
}

#[tokio::test]
async fn garbage_collect_not_enough_freed_is_an_error_and_an_event() {
    let f = Fake::with(&[("image-0", 50), ("image-1", 500)]);
    f.use_only(&["image-1"]);
    *f.fs.lock().unwrap() = Some((1000, 50));
    let events = Arc::new(Mutex::new(vec![]));
    let ev = events.clone();
    let m = manager(&f, Duration::ZERO).with_node_events(Arc::new(move |_k, reason: &str, msg| {
        ev.lock().unwrap().push((reason.to_string(), msg));
    }));
    let err = m.garbage_collect(Instant::now()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Failed to garbage collect required amount of images. Attempted to free 150 bytes, but only found 50 bytes eligible to free."
    );
    assert_eq!(events.lock().unwrap()[0].0, "FreeDiskSpaceFailed");
    assert_eq!(f.left(), vec!["image-1"]);
}

#[tokio::test]
async fn garbage_collect_image_not_old_enough() {
    let f = Fake::with(&[("image-0", 1024), ("image-1", 2048)]);
    f.use_only(&["image-1"]);
    *f.fs.lock().unwrap() = Some((1000, 50));
    let m = manager(&f, Duration::from_secs(300));
    let t0 = Instant::now();
    m.detect(t0).await.unwrap();
    assert!(m.garbage_collect(t0 + Duration::from_secs(60)).await.is_err());
    assert_eq!(f.left().len(), 2);
    m.garbage_collect(t0 + Duration::from_secs(301)).await.unwrap();
    assert_eq!(f.left(), vec!["image-1"]);
}

#[test]
fn validate_image_gc_policy() {
    let p = |h, l| ImageGcPolicy {
        high_threshold_percent: h,
        low_threshold_percent: l,
        min_age: Duration::ZERO,
    };
    assert!(p(85, 80).validate().is_ok());
    assert!(p(100, 80).validate().is_ok());
    assert_eq!(
        p(101, 80).validate().unwrap_err().to_string(),
        "invalid HighThresholdPercent 101, must be in range [0-100]"
    );
    assert_eq!(
        p(80, -1).validate().unwrap_err().to_string(),
        "invalid LowThresholdPercent -1, must be in range [0-100]"
    );
    assert_eq!(
        p(80, 85).validate().unwrap_err().to_string(),
        "LowThresholdPercent 85 can not be higher than HighThresholdPercent 80"
    );
}
