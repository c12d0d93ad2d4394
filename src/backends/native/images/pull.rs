//! Pulling an image: resolve the name on the configured endpoints (mirrors first), pick the
//! platform from an index, fetch manifest and config into the content store, and stream every
//! layer straight into its unpacked directory while checking its digest, size and diff ID.
//! A layer is committed only when all three match; a failed pull leaves only whole layers,
//! which the retry reuses.

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use crate::genericruntime::seam::{cri, PullProgress};

use super::content::ContentError;
use super::digest::{Digest, DigestError, Hasher};
use super::hosts::HostsError;
use super::manifest::{self, Descriptor, ManifestError};
use super::metadata::ImageRecord;
use super::reference::{NameError, Named};
use super::registry::{credentials, BlobStream, RegistryError, Remote};
use super::snapshots::SnapshotError;
use super::store::{ImageStore, StoreError};
use super::unpack::{unpack_layer, UnpackError};

/// Layers fetched at once per pull (containerd's default `max_concurrent_downloads`).
const CONCURRENT_LAYERS: usize = 3;

/// Why a pull failed; `Display` reads like containerd's messages (the kubelet shows them on the
/// pod as the `ErrImagePull` message).
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("failed to pull and unpack image {image:?}: {source}")]
    Image { image: String, source: Box<PullStepError> },
}

impl PullError {
    /// CRI status code for the failure.
    pub fn is_not_found(&self) -> bool {
        matches!(self, PullError::Image { source, .. } if matches!(**source, PullStepError::Resolve { ref source, .. } if matches!(source, RegistryError::NotFound)))
    }
}

/// The step of a pull that failed.
#[derive(Debug, thiserror::Error)]
pub enum PullStepError {
    #[error("failed to resolve reference {reference:?}: {}", resolve_msg(.reference, .source))]
    Resolve { reference: String, source: RegistryError },
    #[error("failed to resolve reference {reference:?}: {source}")]
    Hosts { reference: String, source: HostsError },
    #[error("failed to copy: httpReadSeeker: failed open: could not fetch content descriptor {digest} ({media_type}) from remote: {source}")]
    Fetch {
        digest: Digest,
        media_type: String,
        source: RegistryError,
    },
    #[error("failed to copy: {0}")]
    Copy(String),
    #[error("failed to extract layer {diff_id}: {source}")]
    Unpack { diff_id: Digest, source: UnpackError },
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
    #[error("{0}")]
    Credentials(RegistryError),
}

fn resolve_msg(reference: &str, e: &RegistryError) -> String {
    match e {
        RegistryError::NotFound => format!("{reference}: not found"),
        other => other.to_string(),
    }
}

/// Turns a stream of chunks into a `Read` for the blocking unpacker, appending each chunk to
/// the partial blob as it arrives.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Result<bytes::Bytes, String>>,
    cur: bytes::Bytes,
    sink: Option<std::fs::File>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.recv() {
                Ok(Ok(b)) => {
                    if let Some(f) = self.sink.as_mut() {
                        f.write_all(&b)?;
                    }
                    self.cur = b
                }
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Err(_) => return Ok(0),
            }
        }
        let n = self.cur.len().min(buf.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// Hashes the compressed bytes and refuses more than the descriptor's size.
struct Verifying<R> {
    inner: R,
    hasher: Hasher,
    limit: u64,
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        if self.hasher.len() > self.limit {
            return Err(std::io::Error::other(format!(
                "unexpected commit size {}, expected {}: failed precondition",
                self.hasher.len(),
                self.limit
            )));
        }
        Ok(n)
    }
}

impl ImageStore {
    /// Pulls `image` (any name form) with the given pull-secret credentials.
    pub async fn pull(
        &self,
        image: &str,
        auth: Option<&cri::AuthConfig>,
        progress: Option<Arc<PullProgress>>,
    ) -> Result<ImageRecord, PullError> {
        let named = Named::parse(image)?;
        let display = named.to_string();
        self.pull_named(&named, auth, progress.unwrap_or_default())
            .await
            .map_err(|source| PullError::Image {
                image: display,
                source: Box::new(source),
            })
    }

    async fn pull_named(
        &self,
        named: &Named,
        auth: Option<&cri::AuthConfig>,
        progress: Arc<PullProgress>,
    ) -> Result<ImageRecord, PullStepError> {
        let reference = named.to_string();
        // Two pulls of one image: the second waits and then finds the layers there.
        let _image_guard = self.image_locks.lock(&reference).await;
        let endpoints = self
            .hosts
            .endpoints(&named.domain)
            .map_err(|source| PullStepError::Hosts {
                reference: reference.clone(),
                source,
            })?;
        let creds = credentials(auth, &named.domain).map_err(PullStepError::Credentials)?;
        let remotes: Vec<Remote> = endpoints
            .into_iter()
            .map(|e| Remote::new(e, &named.path, creds.clone()))
            .collect();
        let mut lease = self.lease();

        // Resolve: hosts with `resolve` (any host with `pull` for a digest reference).
        let by_digest = named.digest.is_some();
        let mut last = None;
        let mut resolved = None;
        for (i, r) in remotes.iter().enumerate() {
            let caps = r.endpoint.capabilities;
            if !(caps.resolve || (by_digest && caps.pull)) {
                continue;
            }
            match r.manifest(&named.object()).await {
                Ok(m) => {
                    resolved = Some((i, m));
                    break;
                }
                Err(e) => {
                    tracing::debug!(host = %r.endpoint.host, error = %e, "resolving on this host failed, trying the next");
                    last = Some(e);
                }
            }
        }
        let Some((first, (bytes, digest))) = resolved else {
            return Err(PullStepError::Resolve {
                reference,
                source: last.unwrap_or(RegistryError::NotFound),
            });
        };
        if let Some(want) = &named.digest {
            if *want != digest {
                return Err(DigestError::Mismatch {
                    expected: want.clone(),
                    actual: digest,
                }
                .into());
            }
        }
        // Fetching continues on the host that resolved, then the other pull hosts.
        let order: Vec<&Remote> = std::iter::once(&remotes[first])
            .chain(
                remotes
                    .iter()
                    .enumerate()
                    .filter(|(i, r)| *i != first && r.endpoint.capabilities.pull)
                    .map(|(_, r)| r),
            )
            .collect();

        let mut blobs = vec![];
        let (manifest_bytes, manifest_digest) = if manifest::is_index("", &bytes) {
            self.content.ingest(&digest, Some(bytes.len() as u64), &bytes[..])?;
            lease.add(&digest);
            blobs.push(digest.clone());
            let index = manifest::parse_index(&bytes)?;
            let desc = manifest::select_platform(&index, &manifest::host_platform())?.clone();
            let m = self.fetch_small(&order, &desc).await?;
            (m, desc.digest)
        } else {
            (bytes, digest.clone())
        };
        self.content
            .ingest(&manifest_digest, Some(manifest_bytes.len() as u64), &manifest_bytes[..])?;
        lease.add(&manifest_digest);
        blobs.push(manifest_digest.clone());
        let m = manifest::parse_manifest(&manifest_bytes)?;
        let config_bytes = if self.content.has(&m.config.digest) {
            self.content.read(&m.config.digest)?
        } else {
            let b = self.fetch_small(&order, &m.config).await?;
            self.content.ingest(&m.config.digest, Some(m.config.size), &b[..])?;
            b
        };
        lease.add(&m.config.digest);
        blobs.push(m.config.digest.clone());
        let config = manifest::parse_config(&config_bytes)?;
        if config.rootfs.diff_ids.len() != m.layers.len() {
            return Err(PullStepError::LayerCount);
        }
        let chains = Digest::chain_ids(&config.rootfs.diff_ids);
        for c in &chains {
            lease.add(c);
        }
        let todo: u64 = m
            .layers
            .iter()
            .zip(&chains)
            .filter(|(_, c)| !self.snapshots.has(c))
            .map(|(l, _)| l.size)
            .sum();
        progress.total.store(todo, Ordering::Relaxed);

        // Collected first: a lazy `map` here makes the future's Send bound unprovable.
        let mut jobs = Vec::with_capacity(m.layers.len());
        for ((layer, diff_id), chain) in m.layers.iter().zip(&config.rootfs.diff_ids).zip(&chains) {
            jobs.push(self.fetch_layer(&order, layer, diff_id, chain, &progress));
        }
        futures::stream::iter(jobs)
            .buffer_unordered(CONCURRENT_LAYERS)
            .try_collect::<Vec<()>>()
            .await?;

        let size = manifest_bytes.len() as u64 + m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>();
        let rec = ImageRecord {
            id: m.config.digest.clone(),
            repo_tags: named.repo_tag().into_iter().collect(),
            repo_digests: vec![named.repo_digest(&digest)],
            manifest: manifest_digest,
            blobs,
            diff_ids: config.rootfs.diff_ids.clone(),
            layers: m.layers.iter().map(|l| l.digest.clone()).collect(),
            size,
            config: config.config.unwrap_or_default(),
            pinned: false,
        };
        self.meta().put(rec.clone()).map_err(StoreError::from)?;
        Ok(self.get(&rec.id).unwrap_or(rec))
    }

    /// A manifest or config: small, read into memory, verified.
    async fn fetch_small(&self, order: &[&Remote], desc: &Descriptor) -> Result<Vec<u8>, PullStepError> {
        if desc.size > manifest::MAX_MANIFEST_SIZE {
            return Err(RegistryError::TooLarge(desc.digest.to_string()).into_fetch(desc));
        }
        let mut last = None;
        for r in order {
            let res = match desc.media_type.as_str() {
                manifest::OCI_MANIFEST | manifest::DOCKER_MANIFEST => {
                    r.manifest(&desc.digest.to_string()).await.map(|(b, _)| b)
                }
                _ => match r.blob(&desc.digest).await {
                    Ok(s) => collect(s).await,
                    Err(e) => Err(e),
                },
            };
            match res {
                Ok(b) => {
                    let actual = Digest::of(&b);
                    if actual != desc.digest {
                        return Err(DigestError::Mismatch {
                            expected: desc.digest.clone(),
                            actual,
                        }
                        .into());
                    }
                    return Ok(b);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(RegistryError::NotFound).into_fetch(desc))
    }

    /// One layer: download and unpack in one pass unless it is already unpacked. The bytes also
    /// go to the layer's partial blob, so a download cut short resumes where it stopped: a
    /// Range request for the rest when the registry honours it, the whole blob again when not,
    /// and the digest checked over all of it either way.
    async fn fetch_layer(
        &self,
        order: &[&Remote],
        layer: &Descriptor,
        diff_id: &Digest,
        chain: &Digest,
        progress: &Arc<PullProgress>,
    ) -> Result<(), PullStepError> {
        let _guard = self.layer_locks.lock(chain.hex()).await;
        if self.snapshots.has(chain) {
            return Ok(());
        }
        // Two chains may share a blob: one writer of its partial at a time.
        let _blob = self.layer_locks.lock(&format!("blob-{}", layer.digest.hex())).await;
        let mut partial = Partial::open(self.content.partial_path(&layer.digest), layer.size);
        let mut last = None;
        for r in order {
            // A resumed download that does not verify is dropped and fetched whole, once.
            for attempt in 0..2 {
                let offset = partial.len();
                let got = if offset >= layer.size && offset > 0 {
                    Ok((None, true))
                } else if offset > 0 {
                    r.blob_from(&layer.digest, offset)
                        .await
                        .map(|(s, resumed)| (Some(s), resumed))
                } else {
                    r.blob(&layer.digest).await.map(|s| (Some(s), false))
                };
                let (stream, resumed) = match got {
                    Ok(x) => x,
                    Err(e) => {
                        last = Some(e);
                        break;
                    }
                };
                if offset > 0 {
                    if resumed {
                        tracing::info!(layer = %layer.digest, offset, "resuming an interrupted layer download");
                    } else {
                        tracing::info!(layer = %layer.digest, "registry ignored the Range request; downloading the layer again");
                        partial.reset();
                    }
                }
                match self
                    .unpack_stream(stream, &mut partial, layer, diff_id, chain, progress)
                    .await
                {
                    Err(LayerFailure::Bad(e)) if resumed && attempt == 0 => {
                        tracing::warn!(layer = %layer.digest, error = %e, "resumed layer download unusable, downloading it again");
                    }
                    Err(LayerFailure::Bad(e) | LayerFailure::Interrupted(e)) => return Err(e),
                    Ok(()) => {
                        partial.remove();
                        return Ok(());
                    }
                }
            }
        }
        Err(last.unwrap_or(RegistryError::NotFound).into_fetch(layer))
    }

    /// Feeds the partial blob's bytes, then the stream's (appending them to the partial), to
    /// the unpacker. A verification or unpack failure empties the partial (`Bad`); a broken
    /// connection keeps it (`Interrupted`).
    async fn unpack_stream(
        &self,
        blob: Option<BlobStream>,
        partial: &mut Partial,
        layer: &Descriptor,
        diff_id: &Digest,
        chain: &Digest,
        progress: &Arc<PullProgress>,
    ) -> Result<(), LayerFailure> {
        let prepared = self.snapshots.prepare().map_err(|e| LayerFailure::Bad(e.into()))?;
        let dir = prepared.fs_dir();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<bytes::Bytes, String>>(16);
        let expected = layer.clone();
        let want_diff = diff_id.clone();
        let (prefix, sink) = partial.reader_and_sink();
        progress.done.fetch_add(partial.len(), Ordering::Relaxed);
        let worker = tokio::task::spawn_blocking(move || -> Result<(), PullStepError> {
            let mut v = Verifying {
                inner: prefix.chain(ChannelReader {
                    rx,
                    cur: bytes::Bytes::new(),
                    sink,
                }),
                hasher: Hasher::new(),
                limit: expected.size,
            };
            let res = unpack_layer(&mut v, &dir, Some(&want_diff));
            // Drain what the decompressor did not need (padding) so the digest covers it all.
            let drained = std::io::copy(&mut v, &mut std::io::sink());
            res.map_err(|source| PullStepError::Unpack {
                diff_id: want_diff.clone(),
                source,
            })?;
            drained.map_err(|e| PullStepError::Copy(e.to_string()))?;
            let len = v.hasher.len();
            if len != expected.size {
                return Err(DigestError::SizeMismatch {
                    expected: expected.size,
                    actual: len,
                }
                .into());
            }
            let actual = v.hasher.finish();
            if actual != expected.digest {
                return Err(DigestError::Mismatch {
                    expected: expected.digest.clone(),
                    actual,
                }
                .into());
            }
            Ok(())
        });
        let mut failed = None;
        let mut received = partial.len();
        if let Some(mut blob) = blob {
            while let Some(chunk) = blob.stream.next().await {
                match chunk {
                    Ok(b) => {
                        received += b.len() as u64;
                        progress.done.fetch_add(b.len() as u64, Ordering::Relaxed);
                        if tx.send(Ok(b)).is_err() {
                            break; // the unpacker gave up; its error says why
                        }
                    }
                    Err(e) => {
                        let msg = format!("failed to copy: httpReadSeeker: failed read: {e}");
                        failed = Some(msg.clone());
                        let _ = tx.send(Err(msg));
                        break;
                    }
                }
            }
        }
        drop(tx);
        let res = worker
            .await
            .map_err(|e| LayerFailure::Bad(PullStepError::Copy(format!("unpacking task failed: {e}"))))?;
        if let Some(msg) = failed {
            // The unpacker saw a read error; the network's message is the useful one.
            let e = PullStepError::Copy(msg.trim_start_matches("failed to copy: ").to_string());
            // An error after the last byte is the client's own digest check, not a cut.
            if received < layer.size {
                return Err(LayerFailure::Interrupted(e));
            }
            partial.reset();
            return Err(LayerFailure::Bad(e));
        }
        if let Err(e) = res {
            partial.reset();
            return Err(LayerFailure::Bad(e));
        }
        self.snapshots
            .commit(prepared, chain)
            .map_err(|e| LayerFailure::Bad(e.into()))?;
        tracing::debug!(layer = %layer.digest, chain = %chain, "layer unpacked");
        Ok(())
    }
}

/// How a layer download failed: cut short (the partial blob is kept for a resume) or with
/// bytes that did not verify or unpack (the partial blob is emptied).
enum LayerFailure {
    Interrupted(PullStepError),
    Bad(PullStepError),
}

/// The partial blob of one layer download (`ingest/<hex>.partial`), held under an exclusive
/// `flock` so the node and `keel images` sharing the store never append to it at once; the
/// one that finds it locked downloads without keeping a partial.
struct Partial {
    file: Option<nix::fcntl::Flock<std::fs::File>>,
    path: std::path::PathBuf,
}

impl Partial {
    fn open(path: std::path::PathBuf, size: u64) -> Self {
        let file = std::fs::File::options()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
                    .map_err(|(_, errno)| errno.to_string())
            });
        let file = match file {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "layer download will not be resumable");
                None
            }
        };
        let mut p = Self { file, path };
        if p.len() > size {
            p.reset();
        }
        p
    }

    fn len(&self) -> u64 {
        self.file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Drops the bytes kept so far (the next download starts from zero).
    fn reset(&mut self) {
        if let Some(f) = &self.file {
            if let Err(e) = f.set_len(0) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot empty a partial layer download");
                self.file = None;
            }
        }
    }

    /// The kept bytes to read first, and a handle to append new ones to.
    fn reader_and_sink(&self) -> (Box<dyn Read + Send>, Option<std::fs::File>) {
        let len = self.len();
        let prefix: Box<dyn Read + Send> = match std::fs::File::open(&self.path) {
            Ok(f) if len > 0 => Box::new(f.take(len)),
            _ => Box::new(std::io::empty()),
        };
        let sink = self.file.as_ref().and_then(|f| f.try_clone().ok());
        (prefix, sink)
    }

    /// The layer is unpacked: the bytes are not needed any more.
    fn remove(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        // Nothing kept: no point leaving an empty file behind.
        if self.file.is_some() && self.len() == 0 {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn collect(mut s: BlobStream) -> Result<Vec<u8>, RegistryError> {
    let mut out = Vec::with_capacity(s.length.unwrap_or(0).min(manifest::MAX_MANIFEST_SIZE) as usize);
    while let Some(c) = s.stream.next().await {
        let c = c.map_err(|e| RegistryError::Transport(e.to_string()))?;
        out.extend_from_slice(&c);
        if out.len() as u64 > manifest::MAX_MANIFEST_SIZE {
            return Err(RegistryError::TooLarge("blob".into()));
        }
    }
    Ok(out)
}

impl RegistryError {
    fn into_fetch(self, desc: &Descriptor) -> PullStepError {
        PullStepError::Fetch {
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
            source: self,
        }
    }
}
