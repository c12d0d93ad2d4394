//! The node's image store: content blobs, unpacked layers and image records under one root
//! (`<root-dir>/native/images`), shared by the node agent and `keel images`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::content::{ContentError, ContentStore};
use super::digest::Digest;
use super::hosts::HostsConfig;
use super::metadata::{ImageRecord, Metadata, MetadataError};
use super::snapshots::{SnapshotError, Snapshots};

/// Errors of the store itself (pull and import have their own).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("image {0:?}: not found")]
    NotFound(String),
}

/// Per-key async locks: one pull of an image, one download of a layer at a time; whoever waits
/// finds the work done.
#[derive(Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    pub async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let m = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.to_string()).or_default().clone()
        };
        let guard = m.clone().lock_owned().await;
        KeyGuard {
            owner: self,
            key: key.to_string(),
            _guard: guard,
        }
    }
}

pub struct KeyGuard<'a> {
    owner: &'a KeyedLocks,
    key: String,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.owner.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Only this guard and the map hold it: nobody waits, forget the key.
        if map.get(&self.key).is_some_and(|m| Arc::strong_count(m) <= 2) {
            map.remove(&self.key);
        }
    }
}

pub struct ImageStore {
    root: PathBuf,
    pub(super) content: ContentStore,
    pub(super) snapshots: Snapshots,
    pub(super) meta: Mutex<Metadata>,
    pub(super) hosts: HostsConfig,
    pub(super) image_locks: KeyedLocks,
    pub(super) layer_locks: KeyedLocks,
    /// Blobs and layers a running pull or import has made but not recorded yet: GC keeps them.
    leases: Mutex<HashMap<Digest, usize>>,
}

/// Keeps digests safe from GC until dropped.
pub struct Lease<'a> {
    store: &'a ImageStore,
    digests: Vec<Digest>,
}

impl Lease<'_> {
    pub fn add(&mut self, d: &Digest) {
        let mut l = self.store.leases.lock().unwrap_or_else(|p| p.into_inner());
        *l.entry(d.clone()).or_default() += 1;
        self.digests.push(d.clone());
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut l = self.store.leases.lock().unwrap_or_else(|p| p.into_inner());
        for d in &self.digests {
            if let Some(n) = l.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    l.remove(d);
                }
            }
        }
    }
}

impl ImageStore {
    /// Opens the store under `root`, dropping what a crash left half-made and image records
    /// whose parts are gone.
    pub fn open(root: &Path, hosts: HostsConfig) -> Result<Self, StoreError> {
        let content = ContentStore::open(&root.join("content"))?;
        let snapshots = Snapshots::open(&root.join("snapshots"))?;
        let mut meta = Metadata::open(&root.join("images.json"))?;
        let dropped = meta.retain(|i| {
            content.has(&i.manifest) && content.has(&i.id) && i.chain_ids().iter().all(|c| snapshots.has(c))
        })?;
        for i in dropped {
            tracing::warn!(image = %i.id, tags = ?i.repo_tags, "image incomplete in the store, dropped (pull it again)");
        }
        Ok(Self {
            root: root.to_path_buf(),
            content,
            snapshots,
            meta: Mutex::new(meta),
            hosts,
            image_locks: KeyedLocks::default(),
            layer_locks: KeyedLocks::default(),
            leases: Mutex::default(),
        })
    }

    pub fn lease(&self) -> Lease<'_> {
        Lease {
            store: self,
            digests: vec![],
        }
    }

    fn is_leased(&self, d: &Digest) -> bool {
        self.leases.lock().unwrap_or_else(|p| p.into_inner()).contains_key(d)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(super) fn meta(&self) -> std::sync::MutexGuard<'_, Metadata> {
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        self.meta().list().cloned().collect()
    }

    /// By ID, ID prefix, or name (normalised here: `busybox` finds `docker.io/library/busybox:latest`).
    pub fn find(&self, key: &str) -> Option<ImageRecord> {
        let meta = self.meta();
        if let Some(i) = meta.find(key) {
            return Some(i.clone());
        }
        let named = super::reference::Named::parse(key).ok()?;
        let full = named.to_string();
        if let Some(i) = meta.find(&full) {
            return Some(i.clone());
        }
        // `name:tag@digest` is found by its digest.
        named
            .digest
            .as_ref()
            .and_then(|d| meta.find(&named.repo_digest(d)))
            .cloned()
    }

    /// Directories to mount as overlay lower dirs, top layer first.
    pub fn lower_dirs(&self, image: &ImageRecord) -> Vec<PathBuf> {
        image
            .chain_ids()
            .iter()
            .rev()
            .map(|c| self.snapshots.fs_dir(c))
            .collect()
    }

    pub fn set_pinned(&self, id: &Digest, pinned: bool) -> Result<(), StoreError> {
        let mut meta = self.meta();
        let mut rec = meta
            .get(id)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        rec.pinned = pinned;
        meta.remove(id)?;
        meta.put(rec)?;
        Ok(())
    }

    /// Removes an image (by any name of it) and whatever no other image uses. Not there: Ok,
    /// as CRI's RemoveImage wants.
    pub fn remove(&self, key: &str) -> Result<Option<ImageRecord>, StoreError> {
        let Some(rec) = self.find(key) else { return Ok(None) };
        self.meta().remove(&rec.id)?;
        self.collect_garbage()?;
        Ok(Some(rec))
    }

    /// Deletes blobs and unpacked layers no image refers to (containerd's content/snapshot GC).
    /// Layers being pulled right now are in `tmp-` dirs or not yet recorded: the image lock of
    /// a running pull is not held here, so only what is committed and unreferenced goes.
    pub fn collect_garbage(&self) -> Result<u64, StoreError> {
        let meta = self.meta();
        let mut blobs: HashSet<Digest> = HashSet::new();
        let mut chains: HashSet<Digest> = HashSet::new();
        for i in meta.list() {
            blobs.extend(i.blobs.iter().cloned());
            chains.extend(i.chain_ids());
        }
        let mut freed = 0;
        for b in self.content.list() {
            if !blobs.contains(&b) && !self.is_leased(&b) {
                freed += self.content.size(&b).unwrap_or(0);
                self.content.delete(&b)?;
            }
        }
        for c in self.snapshots.list() {
            if !chains.contains(&c) && !self.is_leased(&c) {
                freed += self.snapshots.size(&c);
                self.snapshots.remove(&c)?;
            }
        }
        Ok(freed)
    }

    /// Bytes and inodes the store takes.
    pub fn usage(&self) -> (u64, u64) {
        let blobs = self.content.list();
        let bytes = self.content.usage()
            + self
                .snapshots
                .list()
                .iter()
                .map(|c| self.snapshots.size(c))
                .sum::<u64>();
        (bytes, blobs.len() as u64 + self.snapshots.list().len() as u64)
    }

    /// The image's run configuration etc. for the runtime (part 2).
    pub fn get(&self, id: &Digest) -> Option<ImageRecord> {
        self.meta().get(id).cloned()
    }
}
