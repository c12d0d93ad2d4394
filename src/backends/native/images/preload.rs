//! The preload directory (`imagePreloadDir`, `--image-preload-dir`): image archives (OCI layout
//! tarballs, `docker save` archives) an air-gapped node imports when it starts. Each archive
//! imported is remembered in `preloaded.json` by path, size and mtime with the image IDs it
//! gave, so a restart skips it with one `stat` while those images are still in the store; an
//! archive that changed, or whose images were removed, is imported again.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::content::write_atomic;
use super::store::ImageStore;

const RECORD: &str = "preloaded.json";

/// What one preload pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PreloadReport {
    /// Archives imported now.
    pub imported: Vec<PathBuf>,
    /// Archives already in the store, not read.
    pub skipped: usize,
    /// Archives that failed (each logged once).
    pub failed: Vec<PathBuf>,
    /// Images the imported archives held.
    pub images: usize,
}

/// One imported archive as it was when imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    size: u64,
    mtime_ns: u128,
    ids: Vec<String>,
}

fn stamp(path: &Path) -> Option<(u64, u128)> {
    let m = fs::metadata(path).ok()?;
    let mtime = m.modified().ok()?.duration_since(UNIX_EPOCH).ok()?.as_nanos();
    Some((m.len(), mtime))
}

impl ImageStore {
    /// Imports every archive in `dir` not yet in the store. Blocking (it unpacks layers): call
    /// it from a blocking task. A missing directory is nothing to do; a bad archive is logged
    /// and the others still go in.
    pub fn preload(&self, dir: &Path) -> PreloadReport {
        let mut report = PreloadReport::default();
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return report,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "image preload directory unreadable");
                return report;
            }
        };
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
        files.sort();
        let record_path = self.root().join(RECORD);
        let mut seen: BTreeMap<String, Seen> = fs::read(&record_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let before = seen.clone();
        for f in files {
            let key = f.to_string_lossy().into_owned();
            let Some((size, mtime_ns)) = stamp(&f) else { continue };
            let known = seen.get(&key).is_some_and(|s| {
                s.size == size
                    && s.mtime_ns == mtime_ns
                    && !s.ids.is_empty()
                    && s.ids.iter().all(|id| self.find(id).is_some())
            });
            if known {
                report.skipped += 1;
                continue;
            }
            match self.import(&f, None) {
                Ok(imgs) => {
                    tracing::info!(file = %f.display(), images = imgs.len(), "preloaded images");
                    report.images += imgs.len();
                    report.imported.push(f.clone());
                    let ids = imgs.iter().map(|i| i.id.to_string()).collect();
                    seen.insert(key, Seen { size, mtime_ns, ids });
                }
                Err(e) => {
                    tracing::warn!(file = %f.display(), error = %e, "image preload failed");
                    report.failed.push(f.clone());
                }
            }
        }
        // Archives no longer in the directory are forgotten.
        seen.retain(|k, _| Path::new(k).is_file());
        if seen != before {
            let res = serde_json::to_vec_pretty(&seen)
                .map_err(std::io::Error::other)
                .and_then(|b| write_atomic(&record_path, &b));
            if let Err(e) = res {
                tracing::warn!(path = %record_path.display(), error = %e, "cannot record preloaded archives (they are imported again next time)");
            }
        }
        report
    }
}
