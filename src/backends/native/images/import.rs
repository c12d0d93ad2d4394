//! `keel images import`: an OCI image layout tarball (`skopeo copy … oci-archive:`, `ctr export`)
//! or a `docker save` archive, into the store without a registry. Blobs are checked against
//! their digests and layers against the config's diff IDs exactly as for a pull.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::content::ContentError;
use super::digest::{Digest, DigestError, HashingReader};
use super::manifest::{self, Descriptor, ManifestError};
use super::metadata::ImageRecord;
use super::reference::{NameError, Named};
use super::snapshots::SnapshotError;
use super::store::{ImageStore, StoreError};
use super::unpack::{unpack_layer, Compression, UnpackError};

const CONTAINERD_NAME: &str = "io.containerd.image.name";
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading archive {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}: neither an OCI image layout (oci-layout, index.json) nor a docker save archive (manifest.json)")]
    Format(PathBuf),
    #[error("archive entry {0:?} is missing")]
    Missing(String),
    #[error("invalid docker save manifest.json: {0}")]
    DockerManifest(#[source] serde_json::Error),
    #[error("failed to extract layer {diff_id}: {source}")]
    Unpack { diff_id: Digest, source: UnpackError },
    #[error("layer {0}: not referenced by a digest")]
    LayerPath(String),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("mismatched image rootfs and manifest layers")]
    LayerCount,
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> ImportError + '_ {
    move |source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// One image of a docker save archive.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// A scratch directory inside the store (same filesystem), removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl ImageStore {
    /// Imports every image of the archive at `path`. `base_name` names OCI images whose
    /// `ref.name` is only a tag (`base_name:tag`); images with no name at all are kept by ID.
    pub fn import(&self, path: &Path, base_name: Option<&str>) -> Result<Vec<ImageRecord>, ImportError> {
        let scratch = Scratch(
            self.root()
                .join(format!("import-tmp-{}-{}", std::process::id(), nonce())),
        );
        fs::create_dir_all(&scratch.0).map_err(read_err(&scratch.0))?;
        let f = fs::File::open(path).map_err(read_err(path))?;
        let mut buf = io::BufReader::new(f);
        let kind = Compression::detect(io::BufRead::fill_buf(&mut buf).map_err(read_err(path))?);
        let r: Box<dyn Read> = match kind {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buf).map_err(read_err(path))?),
            Compression::None => Box::new(buf),
        };
        // The tar crate's own unpack refuses names escaping the destination.
        tar::Archive::new(r).unpack(&scratch.0).map_err(read_err(path))?;
        let dir = scratch.0.clone();
        if dir.join("index.json").is_file() {
            self.import_oci(&dir, base_name)
        } else if dir.join("manifest.json").is_file() {
            self.import_docker(&dir)
        } else {
            Err(ImportError::Format(path.to_path_buf()))
        }
    }

    fn import_oci(&self, dir: &Path, base_name: Option<&str>) -> Result<Vec<ImageRecord>, ImportError> {
        let blob = |d: &Digest| dir.join("blobs/sha256").join(d.hex());
        let read_blob = |d: &Digest| -> Result<Vec<u8>, ImportError> {
            let b = fs::read(blob(d)).map_err(|_| ImportError::Missing(format!("blobs/sha256/{}", d.hex())))?;
            let actual = Digest::of(&b);
            if actual != *d {
                return Err(DigestError::Mismatch {
                    expected: d.clone(),
                    actual,
                }
                .into());
            }
            Ok(b)
        };
        let index = manifest::parse_index(&fs::read(dir.join("index.json")).map_err(read_err(dir))?)?;
        let mut out = vec![];
        for top in &index.manifests {
            let name = top.annotations.get(CONTAINERD_NAME).cloned().or_else(|| {
                let r = top.annotations.get(OCI_REF_NAME)?;
                if r.contains('/') || r.contains('@') {
                    Some(r.clone())
                } else {
                    base_name.map(|b| format!("{b}:{r}"))
                }
            });
            let named = name.as_deref().map(Named::parse).transpose()?;
            let top_bytes = read_blob(&top.digest)?;
            let mut lease = self.lease();
            let mut blobs = vec![];
            let (mbytes, mdigest) = if manifest::is_index(&top.media_type, &top_bytes) {
                self.content.ingest(&top.digest, None, &top_bytes[..])?;
                lease.add(&top.digest);
                blobs.push(top.digest.clone());
                let idx = manifest::parse_index(&top_bytes)?;
                let d = manifest::select_platform(&idx, &manifest::host_platform())?
                    .digest
                    .clone();
                (read_blob(&d)?, d)
            } else {
                (top_bytes, top.digest.clone())
            };
            let m = manifest::parse_manifest(&mbytes)?;
            let config = read_blob(&m.config.digest)?;
            let layers: Vec<(Descriptor, PathBuf)> = m.layers.iter().map(|l| (l.clone(), blob(&l.digest))).collect();
            let rec = self.import_image(
                &mbytes, &mdigest, &config, &m.config, &layers, blobs, &mut lease, named, top,
            )?;
            out.push(rec);
        }
        Ok(out)
    }

    fn import_docker(&self, dir: &Path) -> Result<Vec<ImageRecord>, ImportError> {
        let entries: Vec<DockerSaveEntry> =
            serde_json::from_slice(&fs::read(dir.join("manifest.json")).map_err(read_err(dir))?)
                .map_err(ImportError::DockerManifest)?;
        let mut out = vec![];
        for e in entries {
            let config = fs::read(dir.join(&e.config)).map_err(|_| ImportError::Missing(e.config.clone()))?;
            let config_desc = Descriptor {
                media_type: "application/vnd.docker.container.image.v1+json".into(),
                digest: Digest::of(&config),
                size: config.len() as u64,
                platform: None,
                annotations: Default::default(),
            };
            // Layers carry no digest in the archive: hash each file (a plain tar's digest is its
            // diff ID, so the config check below still verifies it).
            let mut layers = vec![];
            for l in &e.layers {
                let p = dir.join(l);
                let f = fs::File::open(&p).map_err(|_| ImportError::Missing(l.clone()))?;
                let size = f.metadata().map_err(read_err(&p))?.len();
                let (digest, _) = HashingReader::new(io::BufReader::new(f))
                    .finish()
                    .map_err(read_err(&p))?;
                let mut head = [0u8; 4];
                let n = fs::File::open(&p).and_then(|mut f| f.read(&mut head)).unwrap_or(0);
                let media_type = match Compression::detect(&head[..n]) {
                    Compression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
                    Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
                };
                layers.push((
                    Descriptor {
                        media_type: media_type.into(),
                        digest,
                        size,
                        platform: None,
                        annotations: Default::default(),
                    },
                    p,
                ));
            }
            // containerd's import writes a Docker v2 manifest for such images; so does keel, so
            // every image in the store has one.
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": manifest::DOCKER_MANIFEST,
                "config": config_desc,
                "layers": layers.iter().map(|(d, _)| d).collect::<Vec<_>>(),
            });
            let mbytes = serde_json::to_vec(&manifest).unwrap_or_default();
            let mdigest = Digest::of(&mbytes);
            let tags = e.repo_tags.clone().unwrap_or_default();
            let mut first = true;
            let mut rec = None;
            let mut lease = self.lease();
            for t in tags.iter().map(Some).chain(tags.is_empty().then_some(None)) {
                let named = t.map(|t| Named::parse(t)).transpose()?;
                let top = Descriptor {
                    media_type: manifest::DOCKER_MANIFEST.into(),
                    digest: mdigest.clone(),
                    size: mbytes.len() as u64,
                    platform: None,
                    annotations: Default::default(),
                };
                let layers_now = if first { layers.clone() } else { vec![] };
                let r = if first {
                    self.import_image(
                        &mbytes,
                        &mdigest,
                        &config,
                        &config_desc,
                        &layers_now,
                        vec![],
                        &mut lease,
                        named,
                        &top,
                    )?
                } else {
                    // Further tags of the same image: only the name is new.
                    let mut r: ImageRecord = rec.clone().ok_or(ImportError::LayerCount)?;
                    r.repo_tags = named.and_then(|n| n.repo_tag()).into_iter().collect();
                    r.repo_digests = vec![];
                    self.meta().put(r.clone()).map_err(StoreError::from)?;
                    r
                };
                first = false;
                rec = Some(r);
            }
            if let Some(r) = rec.and_then(|r| self.get(&r.id)) {
                out.push(r);
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn import_image(
        &self,
        mbytes: &[u8],
        mdigest: &Digest,
        config: &[u8],
        config_desc: &Descriptor,
        layers: &[(Descriptor, PathBuf)],
        mut blobs: Vec<Digest>,
        lease: &mut super::store::Lease<'_>,
        named: Option<Named>,
        top: &Descriptor,
    ) -> Result<ImageRecord, ImportError> {
        self.content.ingest(mdigest, Some(mbytes.len() as u64), mbytes)?;
        lease.add(mdigest);
        blobs.push(mdigest.clone());
        self.content
            .ingest(&config_desc.digest, Some(config.len() as u64), config)?;
        lease.add(&config_desc.digest);
        blobs.push(config_desc.digest.clone());
        let cfg = manifest::parse_config(config)?;
        if cfg.rootfs.diff_ids.len() != layers.len() {
            return Err(ImportError::LayerCount);
        }
        let chains = Digest::chain_ids(&cfg.rootfs.diff_ids);
        for ((desc, path), (diff_id, chain)) in layers.iter().zip(cfg.rootfs.diff_ids.iter().zip(&chains)) {
            lease.add(chain);
            if self.snapshots.has(chain) {
                continue;
            }
            let f = fs::File::open(path).map_err(|_| ImportError::Missing(path.display().to_string()))?;
            let prepared = self.snapshots.prepare()?;
            let mut hashing = HashingReader::new(io::BufReader::new(f));
            unpack_layer(&mut hashing, &prepared.fs_dir(), Some(diff_id)).map_err(|source| ImportError::Unpack {
                diff_id: diff_id.clone(),
                source,
            })?;
            let (actual, len) = hashing.finish().map_err(read_err(path))?;
            if actual != desc.digest {
                return Err(DigestError::Mismatch {
                    expected: desc.digest.clone(),
                    actual,
                }
                .into());
            }
            if len != desc.size {
                return Err(DigestError::SizeMismatch {
                    expected: desc.size,
                    actual: len,
                }
                .into());
            }
            self.snapshots.commit(prepared, chain)?;
        }
        let rec = ImageRecord {
            id: config_desc.digest.clone(),
            repo_tags: named.as_ref().and_then(|n| n.repo_tag()).into_iter().collect(),
            repo_digests: named.as_ref().map(|n| n.repo_digest(&top.digest)).into_iter().collect(),
            manifest: mdigest.clone(),
            blobs,
            diff_ids: cfg.rootfs.diff_ids.clone(),
            layers: layers.iter().map(|(d, _)| d.digest.clone()).collect(),
            size: mbytes.len() as u64 + config.len() as u64 + layers.iter().map(|(d, _)| d.size).sum::<u64>(),
            config: cfg.config.unwrap_or_default(),
            pinned: false,
        };
        self.meta().put(rec.clone()).map_err(StoreError::from)?;
        Ok(self.get(&rec.id).unwrap_or(rec))
    }
}

fn nonce() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}
