//! Unpacked layers, one directory per chain ID: `snapshots/<chain hex>/fs` is ready to be an
//! overlayfs lower directory. A layer is unpacked into `snapshots/tmp-…` and renamed to its chain
//! ID only when complete, so whatever start-up finds under a chain ID is whole; `tmp-` leftovers
//! from a crash are dropped.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::content::{sync_dir, write_atomic};
use super::digest::Digest;

const TMP_PREFIX: &str = "tmp-";

/// Errors of the snapshot store.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct SnapshotError {
    op: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

fn err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug)]
pub struct Snapshots {
    root: PathBuf,
    seq: AtomicU64,
}

impl Snapshots {
    pub fn open(root: &Path) -> Result<Self, SnapshotError> {
        fs::create_dir_all(root).map_err(err("create", root))?;
        for e in fs::read_dir(root).map_err(err("read", root))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let whole = format!("sha256:{name}").parse::<Digest>().is_ok() && e.path().join("fs").is_dir();
            if name.starts_with(TMP_PREFIX) || !whole {
                tracing::info!(dir = %e.path().display(), "dropping an incomplete unpacked layer");
                let _ = fs::remove_dir_all(e.path());
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            seq: AtomicU64::new(0),
        })
    }

    /// The directory to mount as a lower layer.
    pub fn fs_dir(&self, chain: &Digest) -> PathBuf {
        self.root.join(chain.hex()).join("fs")
    }

    pub fn has(&self, chain: &Digest) -> bool {
        self.fs_dir(chain).is_dir()
    }

    /// Bytes the unpacked layer takes (recorded when it was committed).
    pub fn size(&self, chain: &Digest) -> u64 {
        fs::read_to_string(self.root.join(chain.hex()).join("size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn list(&self) -> Vec<Digest> {
        let Ok(rd) = fs::read_dir(&self.root) else {
            return vec![];
        };
        rd.flatten()
            .filter_map(|e| format!("sha256:{}", e.file_name().to_string_lossy()).parse().ok())
            .collect()
    }

    pub fn remove(&self, chain: &Digest) -> Result<(), SnapshotError> {
        let dir = self.root.join(chain.hex());
        // Renamed away first so a crash mid-removal leaves a `tmp-` dir, not a partial layer.
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let doomed = self.root.join(format!("{TMP_PREFIX}rm-{}-{n}", std::process::id()));
        match fs::rename(&dir, &doomed) {
            Ok(()) => fs::remove_dir_all(&doomed).map_err(err("remove", &doomed)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err("rename", &dir)(e)),
        }
    }

    /// An empty directory to unpack a layer into.
    pub fn prepare(&self) -> Result<Prepared, SnapshotError> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("{TMP_PREFIX}{}-{n}", std::process::id()));
        let fs_dir = dir.join("fs");
        fs::create_dir_all(&fs_dir).map_err(err("create", &fs_dir))?;
        Ok(Prepared { dir, done: false })
    }

    /// Commits an unpacked layer under its chain ID. Someone else committing the same chain ID
    /// first is fine: the layers are identical by construction.
    pub fn commit(&self, mut p: Prepared, chain: &Digest) -> Result<(), SnapshotError> {
        let size = du(&p.fs_dir());
        write_atomic(&p.dir.join("size"), size.to_string().as_bytes()).map_err(err("write", &p.dir))?;
        sync_tree(&p.fs_dir());
        let dest = self.root.join(chain.hex());
        if dest.exists() {
            return Ok(());
        }
        match fs::rename(&p.dir, &dest) {
            Ok(()) => {
                p.done = true;
                sync_dir(&self.root);
                Ok(())
            }
            Err(_) if dest.exists() => Ok(()),
            Err(e) => Err(err("rename", &dest)(e)),
        }
    }
}

/// A layer being unpacked; dropped uncommitted, its directory goes away.
pub struct Prepared {
    dir: PathBuf,
    done: bool,
}

impl Prepared {
    pub fn fs_dir(&self) -> PathBuf {
        self.dir.join("fs")
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Disk usage of a tree (allocated blocks, each inode once).
pub fn du(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else { continue };
        if seen.insert((m.dev(), m.ino())) {
            total += m.blocks() * 512;
        }
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// Flushes an unpacked layer before it is committed (syncfs covers every file of the tree).
fn sync_tree(root: &Path) {
    if let Ok(f) = fs::File::open(root) {
        let _ = nix::unistd::syncfs(&f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_is_atomic_and_leftovers_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = Snapshots::open(dir.path()).unwrap();
        let chain = Digest::of(b"layer");
        let p = s.prepare().unwrap();
        fs::write(p.fs_dir().join("f"), vec![1u8; 5000]).unwrap();
        s.commit(p, &chain).unwrap();
        assert!(s.has(&chain));
        assert!(s.size(&chain) >= 5000);
        assert_eq!(s.list(), vec![chain.clone()]);

        // An unpack that failed midway: dropped at once.
        let p = s.prepare().unwrap();
        fs::write(p.fs_dir().join("half"), b"x").unwrap();
        drop(p);
        // One a crash left behind, and a stray dir without fs/: dropped at start-up.
        let p = s.prepare().unwrap();
        std::mem::forget(p);
        fs::create_dir(dir.path().join(Digest::of(b"x").hex())).unwrap();
        let s = Snapshots::open(dir.path()).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(chain.hex())]);
        s.remove(&chain).unwrap();
        assert!(!s.has(&chain));
        assert!(fs::read_dir(dir.path()).unwrap().next().is_none());
    }
}
