//! Content store: blobs (manifests, configs, compressed layers) under `blobs/sha256/<hex>`,
//! written to `ingest/` first and renamed into place only after the digest and size check out
//! and the data is on disk, so a crash or a failed pull never leaves a half-written blob behind.
//!
//! The one exception is a layer download's partial blob, `ingest/<hex>.partial`: the bytes of
//! an interrupted download, kept so the next pull resumes with a Range request (containerd keeps
//! its ingests the same way). It is never read as content: the resumed pull hashes it again
//! with the rest, and one older than [`PARTIAL_MAX_AGE`] is dropped at start-up.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::digest::{Digest, DigestError, Hasher};

/// Errors of the content store.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("content digest {0}: not found")]
    NotFound(Digest),
}

impl ContentError {
    pub(super) fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ContentError + 'a {
        move |source| ContentError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Disk full is worth telling apart (the pod message says so).
    pub fn is_no_space(&self) -> bool {
        matches!(self, ContentError::Io { source, .. } if source.raw_os_error() == Some(28))
    }
}

/// A partial download not resumed for this long is dropped at start-up.
pub const PARTIAL_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

const PARTIAL_SUFFIX: &str = ".partial";

/// The blob store of one node.
#[derive(Debug)]
pub struct ContentStore {
    root: PathBuf,
    seq: AtomicU64,
}

impl ContentStore {
    /// Opens (creating) the store; whatever is left in `ingest/` is from a write that never
    /// finished and is dropped, except recent partial layer downloads (resumed by the next pull).
    pub fn open(root: &Path) -> Result<Self, ContentError> {
        let blobs = root.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(ContentError::io("create", &blobs))?;
        let ingest = root.join("ingest");
        fs::create_dir_all(&ingest).map_err(ContentError::io("create", &ingest))?;
        let rd = fs::read_dir(&ingest).map_err(ContentError::io("read", &ingest))?;
        let mut dropped = 0;
        for e in rd.flatten() {
            let keep = e.file_name().to_string_lossy().ends_with(PARTIAL_SUFFIX)
                && e.metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age < PARTIAL_MAX_AGE);
            if !keep {
                dropped += 1;
                let p = e.path();
                let res = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                res.map_err(ContentError::io("remove", &p))?;
            }
        }
        if dropped > 0 {
            tracing::info!(count = dropped, "dropping incomplete downloads from the content store");
        }
        Ok(Self {
            root: root.to_path_buf(),
            seq: AtomicU64::new(0),
        })
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// Size of a committed blob.
    pub fn size(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.path(d)).ok().map(|m| m.len())
    }

    pub fn has(&self, d: &Digest) -> bool {
        self.size(d).is_some()
    }

    pub fn read(&self, d: &Digest) -> Result<Vec<u8>, ContentError> {
        let p = self.path(d);
        match fs::read(&p) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ContentError::NotFound(d.clone())),
            Err(e) => Err(ContentError::io("read", &p)(e)),
        }
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File, ContentError> {
        let p = self.path(d);
        File::open(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ContentError::NotFound(d.clone()),
            _ => ContentError::io("open", &p)(e),
        })
    }

    pub fn delete(&self, d: &Digest) -> Result<(), ContentError> {
        let p = self.path(d);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ContentError::io("remove", &p)(e)),
            _ => Ok(()),
        }
    }

    /// Every committed blob.
    pub fn list(&self) -> Vec<Digest> {
        let dir = self.root.join("blobs/sha256");
        let Ok(rd) = fs::read_dir(&dir) else { return vec![] };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| format!("sha256:{}", e.file_name().to_string_lossy()).parse().ok())
            .collect()
    }

    /// Total bytes of committed blobs.
    pub fn usage(&self) -> u64 {
        self.list().iter().filter_map(|d| self.size(d)).sum()
    }

    /// Where an interrupted download of `d` keeps its bytes.
    pub fn partial_path(&self, d: &Digest) -> PathBuf {
        self.root.join("ingest").join(format!("{}{PARTIAL_SUFFIX}", d.hex()))
    }

    /// A writer for a blob that must hash to `expected` (and be `size` bytes when known).
    pub fn writer(&self, expected: &Digest, size: Option<u64>) -> Result<Writer, ContentError> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join("ingest")
            .join(format!("{}-{}-{n}", expected.hex(), std::process::id()));
        let file = File::create(&tmp).map_err(ContentError::io("create", &tmp))?;
        Ok(Writer {
            file: Some(file),
            tmp,
            dest: self.path(expected),
            expected: expected.clone(),
            size,
            hasher: Some(Hasher::new()),
        })
    }

    /// Writes a blob from a reader (import, tests), verifying it.
    pub fn ingest(&self, expected: &Digest, size: Option<u64>, mut r: impl Read) -> Result<(), ContentError> {
        if self.has(expected) {
            return Ok(());
        }
        let mut w = self.writer(expected, size)?;
        let mut buf = vec![0u8; 128 * 1024];
        loop {
            let n = r
                .read(&mut buf)
                .map_err(ContentError::io("read", Path::new("<input>")))?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n])?;
        }
        w.commit()
    }
}

/// A blob being written. Dropped without [`Writer::commit`]: the temp file goes away.
pub struct Writer {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
    expected: Digest,
    size: Option<u64>,
    hasher: Option<Hasher>,
}

impl Writer {
    pub fn written(&self) -> u64 {
        self.hasher.as_ref().map(|h| h.len()).unwrap_or(0)
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ContentError> {
        let (Some(f), Some(h)) = (self.file.as_mut(), self.hasher.as_mut()) else {
            return Ok(());
        };
        h.update(bytes);
        if let Some(size) = self.size {
            // Refuse a blob that runs past its descriptor's size before it fills the disk.
            if h.len() > size {
                return Err(DigestError::SizeMismatch {
                    expected: size,
                    actual: h.len(),
                }
                .into());
            }
        }
        f.write_all(bytes).map_err(ContentError::io("write", &self.tmp))
    }

    /// Checks size and digest, fsyncs, renames into place and fsyncs the directory.
    pub fn commit(mut self) -> Result<(), ContentError> {
        let (Some(file), Some(hasher)) = (self.file.take(), self.hasher.take()) else {
            return Ok(());
        };
        let len = hasher.len();
        if let Some(size) = self.size {
            if size != len {
                return Err(DigestError::SizeMismatch {
                    expected: size,
                    actual: len,
                }
                .into());
            }
        }
        let actual = hasher.finish();
        if actual != self.expected {
            return Err(DigestError::Mismatch {
                expected: self.expected.clone(),
                actual,
            }
            .into());
        }
        file.sync_all().map_err(ContentError::io("fsync", &self.tmp))?;
        drop(file);
        fs::rename(&self.tmp, &self.dest).map_err(ContentError::io("rename", &self.dest))?;
        if let Some(dir) = self.dest.parent() {
            sync_dir(dir);
        }
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Committed: the temp path was renamed away and this is a no-op.
        let _ = fs::remove_file(&self.tmp);
    }
}

/// fsync a directory so a rename in it survives a crash (best effort: some filesystems refuse).
pub(super) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes a small file atomically: temp file, fsync, rename, fsync the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per writer: two writers of one file (two runtimes over one root in tests, two
    // tasks) must not rename each other's temp file away.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{seq}", std::process::id()));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res?;
    sync_dir(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_atomic_writes_of_one_file_all_land() {
        // Two writers in one process (an exit recorded while a stop saves the same record)
        // must not rename each other's temp file away.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        let writers: Vec<_> = (0..4u8)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        write_atomic(&path, &[w; 64]).expect("every write lands");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let last = fs::read(&path).unwrap();
        assert_eq!(last.len(), 64);
        assert!(last.iter().all(|b| *b == last[0]), "one writer's bytes, whole");
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("record.json")],
            "no temp files left"
        );
    }

    #[test]
    fn verified_blob_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of(b"layer bytes");
        s.ingest(&d, Some(11), &b"layer bytes"[..]).unwrap();
        assert!(s.has(&d));
        assert_eq!(s.read(&d).unwrap(), b"layer bytes");
        assert_eq!(s.list(), vec![d.clone()]);
        assert_eq!(s.usage(), 11);
        assert!(fs::read_dir(dir.path().join("ingest")).unwrap().next().is_none());
    }

    #[test]
    fn corrupt_blob_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of(b"the real thing");
        let err = s.ingest(&d, None, &b"tampered bytes"[..]).unwrap_err();
        assert!(
            matches!(err, ContentError::Digest(DigestError::Mismatch { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("unexpected commit digest"));
        assert!(!s.has(&d));
        assert!(fs::read_dir(dir.path().join("ingest")).unwrap().next().is_none());
        // too long for its descriptor: refused while streaming
        let err = s.ingest(&d, Some(3), &b"the real thing"[..]).unwrap_err();
        assert!(
            matches!(err, ContentError::Digest(DigestError::SizeMismatch { .. })),
            "{err}"
        );
        // too short
        let err = s.ingest(&d, Some(100), &b"the real thing"[..]).unwrap_err();
        assert!(
            matches!(err, ContentError::Digest(DigestError::SizeMismatch { .. })),
            "{err}"
        );
        assert!(!s.has(&d));
    }

    #[test]
    fn recent_partial_download_survives_start_up_old_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let fresh = s.partial_path(&Digest::of(b"fresh"));
        let old = s.partial_path(&Digest::of(b"old"));
        fs::write(&fresh, b"half").unwrap();
        fs::write(&old, b"half").unwrap();
        let long_ago = std::time::SystemTime::now() - PARTIAL_MAX_AGE - Duration::from_secs(60);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let _s = ContentStore::open(dir.path()).unwrap();
        assert!(fresh.exists());
        assert!(!old.exists());
    }

    #[test]
    fn interrupted_write_is_dropped_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of(b"abc");
        let mut w = s.writer(&d, None).unwrap();
        w.write(b"a").unwrap();
        // a crash: the writer is never dropped
        std::mem::forget(w);
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 1);
        let s = ContentStore::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
        assert!(!s.has(&d));
    }
}
