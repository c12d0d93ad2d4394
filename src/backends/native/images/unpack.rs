//! Layer unpacking: one layer tar (gzip, zstd or plain) into an empty directory that becomes an
//! overlayfs lower directory, the way containerd's overlay applier does it
//! (`archive/tar.go` + `tar_opts_linux.go OverlayConvertWhiteout`):
//! `.wh.<name>` becomes a 0:0 character device, `.wh..wh..opq` the `trusted.overlay.opaque=y`
//! xattr on its directory; every path is resolved inside the layer root (symlinks followed but
//! clamped to the root, `..` stopping at the root), so nothing is ever written outside it.
//! The diff ID (digest of the uncompressed tar) is computed on the way through.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::digest::{Digest, HashingReader};

const WHITEOUT_PREFIX: &str = ".wh.";
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
/// Symlinks followed while resolving one path (Linux gives up at 40; containerd at 255).
const MAX_SYMLINKS: usize = 255;

/// Errors unpacking a layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading layer archive: {0}")]
    Archive(#[source] io::Error),
    #[error("too many levels of symbolic links resolving {0:?}")]
    SymlinkLoop(String),
    #[error("{0:?}: not a directory")]
    NotDirectory(String),
    #[error("hard link {name:?} to {target:?}: target not found in layer")]
    LinkTarget { name: String, target: String },
    #[error("unsupported tar entry type {kind} for {name:?}")]
    Unsupported { kind: u8, name: String },
    #[error("wrong diff id calculated on extraction {actual}, expected {expected}")]
    DiffId { expected: Digest, actual: Digest },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> UnpackError + 'a {
    move |source| UnpackError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn nix_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> UnpackError + 'a {
    move |e| UnpackError::Io {
        op,
        path: path.to_path_buf(),
        source: io::Error::from(e),
    }
}

/// Layer compression, told by the stream's first bytes (docker-save archives and some registries
/// label layers loosely; the bytes don't lie).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn detect(head: &[u8]) -> Self {
        match head {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            _ => Compression::None,
        }
    }
}

/// What unpacking produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar.
    pub tar_size: u64,
}

/// Unpacks one (possibly compressed) layer into `root` (which should be empty) and returns its
/// diff ID; when `expected` is given a different diff ID is an error.
pub fn unpack_layer(blob: impl Read, root: &Path, expected: Option<&Digest>) -> Result<Unpacked, UnpackError> {
    let mut buf = BufReader::with_capacity(256 * 1024, blob);
    let kind = Compression::detect(buf.fill_buf().map_err(UnpackError::Archive)?);
    let plain: Box<dyn Read> = match kind {
        Compression::None => Box::new(buf),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buf).map_err(UnpackError::Archive)?),
    };
    let mut hashing = HashingReader::new(plain);
    apply_tar(&mut hashing, root)?;
    let (diff_id, tar_size) = hashing.finish().map_err(UnpackError::Archive)?;
    if let Some(e) = expected {
        if *e != diff_id {
            return Err(UnpackError::DiffId {
                expected: e.clone(),
                actual: diff_id,
            });
        }
    }
    Ok(Unpacked { diff_id, tar_size })
}

/// Cleans a tar path into components below the root: `/`, `.` and empty parts dropped, `..`
/// stops at the root (what `filepath.Clean("/" + name)` gives containerd).
fn clean(name: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for part in name.split(|&c| c == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            p => out.push(p.to_vec()),
        }
    }
    out
}

fn join(root: &Path, parts: &[Vec<u8>]) -> PathBuf {
    let mut p = root.to_path_buf();
    for c in parts {
        p.push(OsStr::from_bytes(c));
    }
    p
}

/// Resolves `parts` inside `root`, following symlinks as if `root` were `/` (continuity's
/// `fs.RootPath`). Returns the components of the resolved path below the root. Missing
/// components are kept as they are.
fn resolve_in_root(root: &Path, parts: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, UnpackError> {
    let mut todo: Vec<Vec<u8>> = parts.iter().rev().cloned().collect();
    let mut done: Vec<Vec<u8>> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        match c.as_slice() {
            b"" | b"." => continue,
            b".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        done.push(c);
        let p = join(root, &done);
        let Ok(meta) = fs::symlink_metadata(&p) else { continue };
        if !meta.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(UnpackError::SymlinkLoop(
                String::from_utf8_lossy(&parts.join(&b'/')).into(),
            ));
        }
        let target = fs::read_link(&p).map_err(io_err("readlink", &p))?;
        done.pop();
        let t = target.as_os_str().as_bytes();
        if t.starts_with(b"/") {
            done.clear();
        }
        for part in t.split(|&b| b == b'/').rev() {
            todo.push(part.to_vec());
        }
    }
    Ok(done)
}

/// Makes sure the directory `parts` exists (creating missing ones 0755 like containerd) and
/// returns its resolved path.
fn ensure_dir(root: &Path, parts: &[Vec<u8>]) -> Result<PathBuf, UnpackError> {
    let resolved = resolve_in_root(root, parts)?;
    let p = join(root, &resolved);
    match fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() => Ok(p),
        Ok(_) => Err(UnpackError::NotDirectory(
            String::from_utf8_lossy(&parts.join(&b'/')).into(),
        )),
        Err(_) => {
            // Create one level at a time so a component that is a file is reported, not clobbered.
            let mut cur = root.to_path_buf();
            for c in &resolved {
                cur.push(OsStr::from_bytes(c));
                match fs::symlink_metadata(&cur) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        return Err(UnpackError::NotDirectory(cur.display().to_string()));
                    }
                    Err(_) => {
                        fs::create_dir(&cur).map_err(io_err("mkdir", &cur))?;
                        fs::set_permissions(&cur, fs::Permissions::from_mode(0o755)).map_err(io_err("chmod", &cur))?;
                    }
                }
            }
            Ok(p)
        }
    }
}

/// Removes whatever is at `p` (a directory with its contents).
fn remove_any(p: &Path) -> Result<(), UnpackError> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).map_err(io_err("remove", p)),
        Ok(_) => fs::remove_file(p).map_err(io_err("remove", p)),
        Err(_) => Ok(()),
    }
}

fn am_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Applies a plain tar stream to `root`.
pub fn apply_tar(r: impl Read, root: &Path) -> Result<(), UnpackError> {
    let mut archive = tar::Archive::new(r);
    // Directory times are set last: writing into a directory changes its mtime.
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    let root_owner = am_root();
    for entry in archive.entries().map_err(UnpackError::Archive)? {
        let mut entry = entry.map_err(UnpackError::Archive)?;
        let name = entry.path_bytes().into_owned();
        let parts = clean(&name);
        let header = entry.header().clone();
        let kind = header.entry_type();
        let display = String::from_utf8_lossy(&name).into_owned();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() || kind.is_gnu_longname() {
            continue;
        }
        let Some((base, parent)) = parts.split_last() else {
            // The root itself ("./"): only its attributes.
            if kind.is_dir() {
                set_attrs(root, &header, &[], root_owner)?;
                dir_times.push((root.to_path_buf(), header.mtime().unwrap_or(0)));
            }
            continue;
        };
        let base_s = base.as_slice();
        if base_s.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            let dir = ensure_dir(root, parent)?;
            if base_s == WHITEOUT_OPAQUE.as_bytes() {
                xattr::set(&dir, "trusted.overlay.opaque", b"y").map_err(io_err("setxattr", &dir))?;
            } else if !base_s.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
                let hidden = dir.join(OsStr::from_bytes(&base_s[WHITEOUT_PREFIX.len()..]));
                // A whiteout never hides a file of its own layer.
                if fs::symlink_metadata(&hidden).is_err() {
                    mknod(&hidden, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(nix_err("mknod", &hidden))?;
                    chown(&hidden, &header, root_owner)?;
                }
            }
            continue;
        }
        let dir = ensure_dir(root, parent)?;
        let path = dir.join(OsStr::from_bytes(base_s));
        let existing = fs::symlink_metadata(&path).ok();
        if let Some(m) = &existing {
            if !(m.is_dir() && kind.is_dir()) {
                remove_any(&path)?;
            }
        }
        let xattrs = pax_xattrs(&mut entry)?;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mut f = fs::File::create(&path).map_err(io_err("create", &path))?;
                io::copy(&mut entry, &mut f).map_err(UnpackError::Archive)?;
                set_attrs(&path, &header, &xattrs, root_owner)?;
                set_mtime(&path, header.mtime().unwrap_or(0));
            }
            tar::EntryType::Directory => {
                if existing.is_none() || !existing.as_ref().is_some_and(|m| m.is_dir()) {
                    fs::create_dir(&path).map_err(io_err("mkdir", &path))?;
                }
                set_attrs(&path, &header, &xattrs, root_owner)?;
                dir_times.push((path, header.mtime().unwrap_or(0)));
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().map(|b| b.into_owned()).unwrap_or_default();
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path).map_err(io_err("symlink", &path))?;
                chown(&path, &header, root_owner)?;
                for (k, v) in &xattrs {
                    set_xattr(&path, k, v)?;
                }
                set_mtime(&path, header.mtime().unwrap_or(0));
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().map(|b| b.into_owned()).unwrap_or_default();
                let resolved = resolve_in_root(root, &clean(&target))?;
                let src = join(root, &resolved);
                if resolved.is_empty() || fs::symlink_metadata(&src).is_err() {
                    return Err(UnpackError::LinkTarget {
                        name: display,
                        target: String::from_utf8_lossy(&target).into(),
                    });
                }
                fs::hard_link(&src, &path).map_err(io_err("link", &path))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let mode = Mode::from_bits_truncate((header.mode().unwrap_or(0o644) & 0o7777) as _);
                mknod(&path, sflag, mode, makedev(major as u64, minor as u64)).map_err(nix_err("mknod", &path))?;
                set_attrs(&path, &header, &xattrs, root_owner)?;
                set_mtime(&path, header.mtime().unwrap_or(0));
            }
            other => {
                return Err(UnpackError::Unsupported {
                    kind: other.as_byte(),
                    name: display,
                })
            }
        }
    }
    // Deepest first so setting a parent's time is not undone by a child.
    dir_times.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (p, t) in dir_times {
        set_mtime(&p, t);
    }
    Ok(())
}

/// `SCHILY.xattr.<name>` PAX records (what Go's archive/tar and GNU tar write).
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<R>) -> Result<Vec<(String, Vec<u8>)>, UnpackError> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions().map_err(UnpackError::Archive)? {
        for ext in exts {
            let ext = ext.map_err(UnpackError::Archive)?;
            if let Ok(k) = ext.key() {
                if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(out)
}

fn set_xattr(path: &Path, key: &str, value: &[u8]) -> Result<(), UnpackError> {
    match xattr::set(path, key, value) {
        Ok(()) => Ok(()),
        // containerd skips xattrs the filesystem cannot hold (ENOTSUP) and, unprivileged, the
        // namespaces it may not write.
        Err(e) if e.raw_os_error() == Some(libc_enotsup()) || e.kind() == io::ErrorKind::PermissionDenied => {
            tracing::debug!(path = %path.display(), key, error = %e, "xattr not kept");
            Ok(())
        }
        Err(e) => Err(io_err("setxattr", path)(e)),
    }
}

fn libc_enotsup() -> i32 {
    nix::errno::Errno::ENOTSUP as i32
}

fn chown(path: &Path, h: &tar::Header, root_owner: bool) -> Result<(), UnpackError> {
    let uid = h.uid().unwrap_or(0) as u32;
    let gid = h.gid().unwrap_or(0) as u32;
    match lchown(path, Some(uid), Some(gid)) {
        Ok(()) => Ok(()),
        // Unprivileged (tests, `keel images` as a user): files stay the caller's.
        Err(e) if !root_owner && e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(io_err("lchown", path)(e)),
    }
}

fn set_attrs(path: &Path, h: &tar::Header, xattrs: &[(String, Vec<u8>)], root_owner: bool) -> Result<(), UnpackError> {
    chown(path, h, root_owner)?;
    // After chown, which clears set-id bits.
    let mode = h.mode().unwrap_or(0o644) & 0o7777;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))?;
    for (k, v) in xattrs {
        set_xattr(path, k, v)?;
    }
    Ok(())
}

fn set_mtime(path: &Path, secs: u64) {
    let t = TimeSpec::new(secs as i64, 0);
    let _ = utimensat(nix::fcntl::AT_FDCWD, path, &t, &t, UtimensatFlags::NoFollowSymlink);
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
