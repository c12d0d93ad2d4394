//! Host operations of the volume manager: tmpfs mounts (through the `mount`/`umount` binaries,
//! as the kubelet's mount-utils does), the mount table, fsGroup ownership
//! (`SetVolumeOwnership`, kubelet-behavior.md §4.8) and safe subPath resolution (§4.11).

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where the kernel lists this process's mounts.
const MOUNTINFO: &str = "/proc/self/mountinfo";
/// Group read/write bits fsGroup adds (read-only volumes: read only).
const RW_MASK: u32 = 0o660;
const RO_MASK: u32 = 0o440;
/// Directories additionally get setgid and execute for user and group.
const DIR_EXTRA: u32 = 0o2000 | 0o110;

/// Errors of host operations.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("running {cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{cmd} failed: {output}")]
    Command { cmd: String, output: String },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("changing ownership of {path}: {source}")]
    Ownership {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("error SubPath `{sub_path}` must not be an absolute path")]
    SubPathAbsolute { sub_path: String },
    #[error("unable to provision SubPath `{sub_path}`: must not contain '..'")]
    SubPathBacksteps { sub_path: String },
    #[error("subpath {sub_path:?} not within volume path {volume}")]
    SubPathEscapes { sub_path: String, volume: String },
    #[error("failed to create subPath directory for volumeMount {mount:?} of container {container:?}")]
    SubPathCreate {
        mount: String,
        container: String,
        #[source]
        source: std::io::Error,
    },
}

async fn run(cmd: &str, args: &[&OsStr]) -> Result<(), HostError> {
    let shown = format!(
        "{cmd} {}",
        args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    );
    let out = tokio::process::Command::new(cmd)
        .args(args)
        .output()
        .await
        .map_err(|source| HostError::Spawn {
            cmd: shown.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        let mut output = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if output.is_empty() {
            output = out.status.to_string();
        }
        Err(HostError::Command { cmd: shown, output })
    }
}

/// Mounts a tmpfs on `dir`, `size` bytes large when given (else the kernel's default).
pub async fn mount_tmpfs(dir: &Path, size: Option<i128>) -> Result<(), HostError> {
    let opts = match size {
        Some(s) if s > 0 => format!("size={s}"),
        _ => "defaults".into(),
    };
    run(
        "mount",
        &[
            OsStr::new("-t"),
            OsStr::new("tmpfs"),
            OsStr::new("-o"),
            OsStr::new(&opts),
            OsStr::new("tmpfs"),
            dir.as_os_str(),
        ],
    )
    .await
}

/// Unmounts `dir`.
pub async fn unmount(dir: &Path) -> Result<(), HostError> {
    run("umount", &[dir.as_os_str()]).await
}

/// The mount points at or under `prefix`, deepest first (the order to unmount them in).
pub fn mounts_under(prefix: &Path) -> Result<Vec<PathBuf>, HostError> {
    let text = std::fs::read_to_string(MOUNTINFO).map_err(|source| HostError::Read {
        path: MOUNTINFO.into(),
        source,
    })?;
    let mut out: Vec<PathBuf> = parse_mountinfo(&text)
        .into_iter()
        .filter(|m| m.starts_with(prefix))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    Ok(out)
}

/// Whether `dir` itself is a mount point.
pub fn is_mount_point(dir: &Path) -> Result<bool, HostError> {
    Ok(mounts_under(dir)?.iter().any(|m| m == dir))
}

/// Mount points (field 5) of a mountinfo text, octal escapes (`\040`) decoded.
fn parse_mountinfo(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_octal(p)))
        .collect()
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sets a directory's permission bits to `mode` unless they already are (sticky and setgid bits
/// kept, as `setupDir` does: a tmpfs root stays 1777).
pub fn ensure_dir_mode(dir: &Path, mode: u32) -> Result<(), HostError> {
    let meta = std::fs::metadata(dir).map_err(|source| HostError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let cur = meta.permissions().mode();
    if cur & 0o777 != mode {
        let new = (cur & 0o7000) | mode;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(new)).map_err(|source| HostError::Ownership {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// `SetVolumeOwnership`: group `fs_group` on everything under `dir` (symlinks not followed),
/// group read(/write) bits added, directories setgid and group-executable. With
/// `only_on_root_mismatch` (fsGroupChangePolicy OnRootMismatch) nothing is done when the root
/// already has the group and bits.
pub fn set_ownership(dir: &Path, fs_group: u32, read_only: bool, only_on_root_mismatch: bool) -> Result<(), HostError> {
    let mask = if read_only { RO_MASK } else { RW_MASK };
    if only_on_root_mismatch {
        if let Ok(m) = std::fs::metadata(dir) {
            let want = mask | DIR_EXTRA;
            if m.gid() == fs_group && m.mode() & want == want {
                return Ok(());
            }
        }
    }
    walk_chown(dir, fs_group, mask)
}

fn walk_chown(path: &Path, gid: u32, mask: u32) -> Result<(), HostError> {
    let err = |source| HostError::Ownership {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::symlink_metadata(path).map_err(err)?;
    std::os::unix::fs::lchown(path, None, Some(gid)).map_err(err)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mut mode = meta.mode() & 0o7777 | mask;
    if meta.is_dir() {
        mode |= DIR_EXTRA;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    if meta.is_dir() {
        let rd = std::fs::read_dir(path).map_err(err)?;
        for e in rd {
            let e = e.map_err(err)?;
            walk_chown(&e.path(), gid, mask)?;
        }
    }
    Ok(())
}

/// Validates a subPath (relative, no `..` element).
pub fn validate_sub_path(sub_path: &str) -> Result<(), HostError> {
    if sub_path.starts_with('/') {
        return Err(HostError::SubPathAbsolute {
            sub_path: sub_path.into(),
        });
    }
    if sub_path.split('/').any(|s| s == "..") {
        return Err(HostError::SubPathBacksteps {
            sub_path: sub_path.into(),
        });
    }
    Ok(())
}

/// The host path a subPath mount binds: `<volume>/<sub_path>` with symlinks resolved, refused
/// when it resolves outside the volume (a symlink planted by a container must not expose the
/// host). A missing subPath is created as a directory with the volume root's mode first.
///
/// keel passes the resolved path to the runtime; the kubelet instead bind-mounts an open file
/// descriptor, which also closes the window between this check and the runtime's mount.
pub fn resolve_sub_path(volume: &Path, sub_path: &str, mount: &str, container: &str) -> Result<PathBuf, HostError> {
    validate_sub_path(sub_path)?;
    let root = std::fs::canonicalize(volume).map_err(|source| HostError::Read {
        path: volume.to_path_buf(),
        source,
    })?;
    let joined = root.join(sub_path);
    if std::fs::symlink_metadata(&joined).is_err() {
        let mode = std::fs::metadata(&root).map(|m| m.mode() & 0o7777).unwrap_or(0o755);
        make_dirs_within(&root, sub_path, mode).map_err(|source| HostError::SubPathCreate {
            mount: mount.into(),
            container: container.into(),
            source,
        })?;
    }
    let resolved = match std::fs::canonicalize(&joined) {
        Ok(p) => p,
        // A dangling symlink: report it as escaping rather than letting the runtime follow it.
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(HostError::SubPathEscapes {
                sub_path: sub_path.into(),
                volume: volume.display().to_string(),
            })
        }
        Err(source) => return Err(HostError::Read { path: joined, source }),
    };
    if !resolved.starts_with(&root) {
        return Err(HostError::SubPathEscapes {
            sub_path: sub_path.into(),
            volume: volume.display().to_string(),
        });
    }
    Ok(resolved)
}

/// `SafeMakeDir`: creates the missing parts of `sub_path` under `root`, never through a symlink
/// that leaves `root`.
fn make_dirs_within(root: &Path, sub_path: &str, mode: u32) -> std::io::Result<()> {
    let mut cur = root.to_path_buf();
    for seg in sub_path.split('/').filter(|s| !s.is_empty() && *s != ".") {
        cur.push(seg);
        match std::fs::symlink_metadata(&cur) {
            Ok(_) => {
                let real = std::fs::canonicalize(&cur)?;
                if !real.starts_with(root) {
                    return Err(std::io::Error::new(
                        ErrorKind::PermissionDenied,
                        format!("{} is outside {}", real.display(), root.display()),
                    ));
                }
                cur = real;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                std::fs::create_dir(&cur)?;
                std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(mode))?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_fields() {
        let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    30 22 0:40 / /var/lib/keel/pods/u/volumes/kubernetes.io~empty-dir/my\\040vol rw - tmpfs tmpfs rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m[0], PathBuf::from("/"));
        assert_eq!(
            m[1],
            PathBuf::from("/var/lib/keel/pods/u/volumes/kubernetes.io~empty-dir/my vol")
        );
    }

    #[test]
    fn sub_path_checks() {
        assert!(validate_sub_path("a/b").is_ok());
        assert!(validate_sub_path("a..b").is_ok());
        assert_eq!(
            validate_sub_path("/abs").unwrap_err().to_string(),
            "error SubPath `/abs` must not be an absolute path"
        );
        assert_eq!(
            validate_sub_path("a/../../etc").unwrap_err().to_string(),
            "unable to provision SubPath `a/../../etc`: must not contain '..'"
        );
    }

    #[test]
    fn sub_path_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o777)).unwrap();
        // Missing: created with the root's mode.
        let p = resolve_sub_path(&vol, "new/dir", "m", "c").unwrap();
        assert!(p.is_dir());
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o777);
        // A symlink inside the volume is fine.
        std::fs::write(vol.join("real"), "x").unwrap();
        std::os::unix::fs::symlink("real", vol.join("link")).unwrap();
        assert_eq!(
            resolve_sub_path(&vol, "link", "m", "c").unwrap(),
            std::fs::canonicalize(vol.join("real")).unwrap()
        );
        // One that leaves it is refused, also as a parent of a path to create.
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, vol.join("escape")).unwrap();
        assert!(matches!(
            resolve_sub_path(&vol, "escape", "m", "c"),
            Err(HostError::SubPathEscapes { .. })
        ));
        assert!(resolve_sub_path(&vol, "escape/x", "m", "c").is_err());
        assert!(!outside.join("x").exists());
        std::os::unix::fs::symlink("/nonexistent-keel", vol.join("dangling")).unwrap();
        assert!(resolve_sub_path(&vol, "dangling", "m", "c").is_err());
    }

    #[test]
    fn ownership_bits() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(vol.join("f"), "x").unwrap();
        std::fs::set_permissions(vol.join("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
        // Our own group: no privilege needed.
        let gid = std::fs::metadata(&vol).unwrap().gid();
        set_ownership(&vol, gid, false, false).unwrap();
        assert_eq!(std::fs::metadata(vol.join("f")).unwrap().mode() & 0o7777, 0o660);
        assert_eq!(std::fs::metadata(&vol).unwrap().mode() & 0o7777, 0o2775);
        std::fs::set_permissions(vol.join("f"), std::fs::Permissions::from_mode(0o400)).unwrap();
        set_ownership(&vol, gid, true, false).unwrap();
        assert_eq!(std::fs::metadata(vol.join("f")).unwrap().mode() & 0o7777, 0o440);
        // OnRootMismatch: root already right, children left alone.
        std::fs::set_permissions(vol.join("f"), std::fs::Permissions::from_mode(0o400)).unwrap();
        set_ownership(&vol, gid, true, true).unwrap();
        assert_eq!(std::fs::metadata(vol.join("f")).unwrap().mode() & 0o7777, 0o400);
    }

    #[test]
    fn dir_mode_keeps_sticky() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        ensure_dir_mode(&d, 0o777).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o7777, 0o1777);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
        ensure_dir_mode(&d, 0o777).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o7777, 0o777);
    }
}
