//! Image records (`images.json`): which names point at which image, what it is made of, and
//! when it was last used. Rewritten atomically on every change.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::content::write_atomic;
use super::digest::Digest;
use super::manifest::RunConfig;

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image metadata {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// One image, keyed by its ID (the config digest).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    pub id: Digest,
    /// Normalised `domain/path:tag` names.
    #[serde(default)]
    pub repo_tags: Vec<String>,
    /// `domain/path@digest` of what was resolved (index or manifest).
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// The platform manifest.
    pub manifest: Digest,
    /// Every blob the image holds on to (index, manifest, config, layers).
    pub blobs: Vec<Digest>,
    pub diff_ids: Vec<Digest>,
    /// Compressed layers, in order.
    pub layers: Vec<Digest>,
    /// Manifest + config + compressed layers, as containerd's CRI reports it.
    pub size: u64,
    #[serde(default)]
    pub config: RunConfig,
    #[serde(default)]
    pub pinned: bool,
}

impl ImageRecord {
    pub fn chain_ids(&self) -> Vec<Digest> {
        Digest::chain_ids(&self.diff_ids)
    }
}

/// The records of one node.
#[derive(Debug)]
pub struct Metadata {
    path: PathBuf,
    images: BTreeMap<Digest, ImageRecord>,
}

impl Metadata {
    pub fn open(path: &Path) -> Result<Self, MetadataError> {
        let images: Vec<ImageRecord> = match fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| MetadataError::Corrupt {
                path: path.to_path_buf(),
                source,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => vec![],
            Err(source) => {
                return Err(MetadataError::Io {
                    op: "read",
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            images: images.into_iter().map(|i| (i.id.clone(), i)).collect(),
        })
    }

    fn save(&self) -> Result<(), MetadataError> {
        let v: Vec<&ImageRecord> = self.images.values().collect();
        let bytes = serde_json::to_vec_pretty(&v).unwrap_or_default();
        write_atomic(&self.path, &bytes).map_err(|source| MetadataError::Io {
            op: "write",
            path: self.path.clone(),
            source,
        })
    }

    pub fn list(&self) -> impl Iterator<Item = &ImageRecord> {
        self.images.values()
    }

    pub fn get(&self, id: &Digest) -> Option<&ImageRecord> {
        self.images.get(id)
    }

    /// Finds an image by ID (`sha256:…`, or the bare hex / a unique hex prefix of at least 12
    /// characters, as crictl users type it), by repo tag or by repo digest (names already
    /// normalised by the caller).
    pub fn find(&self, key: &str) -> Option<&ImageRecord> {
        if let Ok(d) = key.parse::<Digest>() {
            if let Some(i) = self.images.get(&d) {
                return Some(i);
            }
        }
        if let Some(i) = self
            .images
            .values()
            .find(|i| i.repo_tags.iter().any(|t| t == key) || i.repo_digests.iter().any(|t| t == key))
        {
            return Some(i);
        }
        let hex = key.strip_prefix("sha256:").unwrap_or(key);
        if hex.len() >= 12 && hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            let mut m = self.images.values().filter(|i| i.id.hex().starts_with(hex));
            if let (Some(one), None) = (m.next(), m.next()) {
                return Some(one);
            }
        }
        None
    }

    /// Adds or updates an image; its tags move off any other image (a tag names one image),
    /// and an image left with no name at all keeps its ID only (containerd's behaviour).
    pub fn put(&mut self, mut rec: ImageRecord) -> Result<(), MetadataError> {
        for other in self.images.values_mut() {
            if other.id != rec.id {
                other.repo_tags.retain(|t| !rec.repo_tags.contains(t));
            }
        }
        if let Some(old) = self.images.get(&rec.id) {
            for t in &old.repo_tags {
                if !rec.repo_tags.contains(t) {
                    rec.repo_tags.push(t.clone());
                }
            }
            for d in &old.repo_digests {
                if !rec.repo_digests.contains(d) {
                    rec.repo_digests.push(d.clone());
                }
            }
            rec.pinned |= old.pinned;
        }
        rec.repo_tags.sort();
        rec.repo_digests.sort();
        self.images.insert(rec.id.clone(), rec);
        self.save()
    }

    pub fn remove(&mut self, id: &Digest) -> Result<Option<ImageRecord>, MetadataError> {
        let r = self.images.remove(id);
        if r.is_some() {
            self.save()?;
        }
        Ok(r)
    }

    /// Drops records whose parts are gone (a crash between steps, a hand-edited store).
    pub fn retain(&mut self, keep: impl Fn(&ImageRecord) -> bool) -> Result<Vec<ImageRecord>, MetadataError> {
        let (kept, dropped): (BTreeMap<_, _>, BTreeMap<_, _>) =
            std::mem::take(&mut self.images).into_iter().partition(|(_, i)| keep(i));
        self.images = kept;
        if !dropped.is_empty() {
            self.save()?;
        }
        Ok(dropped.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u8, tags: &[&str]) -> ImageRecord {
        ImageRecord {
            id: Digest::of(&[n]),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: vec![],
            manifest: Digest::of(&[n, 1]),
            blobs: vec![],
            diff_ids: vec![],
            layers: vec![],
            size: 1,
            config: Default::default(),
            pinned: false,
        }
    }

    #[test]
    fn tags_move_and_records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("images.json");
        let mut m = Metadata::open(&p).unwrap();
        m.put(rec(1, &["docker.io/library/busybox:latest"])).unwrap();
        m.put(rec(
            2,
            &["docker.io/library/busybox:latest", "docker.io/library/busybox:1"],
        ))
        .unwrap();
        let m = Metadata::open(&p).unwrap();
        assert!(m.get(&Digest::of(&[1])).unwrap().repo_tags.is_empty());
        let two = Digest::of(&[2]);
        assert_eq!(m.find("docker.io/library/busybox:latest").unwrap().id, two);
        assert_eq!(m.find(&two.to_string()).unwrap().id, two);
        assert_eq!(m.find(&two.hex()[..12]).unwrap().id, two);
        assert!(m.find("docker.io/library/other:latest").is_none());
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("images.json");
        fs::write(&p, b"{not json").unwrap();
        assert!(matches!(Metadata::open(&p), Err(MetadataError::Corrupt { .. })));
    }
}
