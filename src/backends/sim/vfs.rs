//! A container's file system as its scripts see it: mounted paths are the real host files
//! (so termination-message files, emptyDir and configMap volumes behave), everything else is
//! an in-memory overlay private to the container.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::script::{FileKind, FsError};
use crate::genericruntime::seam::cri;

#[derive(Clone, Debug)]
struct MountPoint {
    container: String,
    host: PathBuf,
    readonly: bool,
}

/// In-memory files plus the container's mounts.
#[derive(Debug, Default)]
pub struct Vfs {
    files: BTreeMap<String, Vec<u8>>,
    dirs: BTreeSet<String>,
    mounts: Vec<MountPoint>,
}

/// Makes `p` absolute and resolves `.`/`..` (the working directory is `/`).
pub fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn io_err(e: std::io::Error) -> FsError {
    match e.kind() {
        std::io::ErrorKind::NotFound => FsError::NotFound,
        std::io::ErrorKind::IsADirectory => FsError::IsDir,
        std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied => FsError::ReadOnly,
        _ => FsError::Io,
    }
}

impl Vfs {
    /// Bytes and files written to private (unmounted) paths: the container's writable layer.
    pub fn private_usage(&self) -> (u64, u64) {
        let bytes = self.files.values().map(|f| f.len() as u64).sum();
        (bytes, self.files.len() as u64)
    }

    pub fn new(mounts: &[cri::Mount]) -> Self {
        let mut mounts: Vec<MountPoint> = mounts
            .iter()
            .filter(|m| !m.container_path.is_empty() && !m.host_path.is_empty())
            .map(|m| MountPoint {
                container: clean(&m.container_path),
                host: PathBuf::from(&m.host_path),
                readonly: m.readonly,
            })
            .collect();
        // Longest container path first: the most specific mount wins.
        mounts.sort_by_key(|m| std::cmp::Reverse(m.container.len()));
        Self {
            mounts,
            ..Default::default()
        }
    }

    /// The host path behind a container path, if a mount covers it.
    fn host(&self, path: &str) -> Option<(PathBuf, bool)> {
        self.mounts.iter().find_map(|m| {
            if path == m.container {
                Some((m.host.clone(), m.readonly))
            } else if m.container == "/" {
                Some((m.host.join(path.trim_start_matches('/')), m.readonly))
            } else {
                path.strip_prefix(&m.container)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .map(|rest| (m.host.join(rest), m.readonly))
            }
        })
    }

    pub fn read(&self, path: &str) -> Result<Vec<u8>, FsError> {
        let path = clean(path);
        if let Some((host, _)) = self.host(&path) {
            return std::fs::read(host).map_err(io_err);
        }
        match self.files.get(&path) {
            Some(f) => Ok(f.clone()),
            None if self.is_dir(&path) => Err(FsError::IsDir),
            None => Err(FsError::NotFound),
        }
    }

    /// Writes (or appends to) a file. `host_effects` false skips mounted (host) files: used when
    /// replaying what already happened before a restart.
    pub fn write(&mut self, path: &str, data: &[u8], append: bool, host_effects: bool) -> Result<(), FsError> {
        let path = clean(path);
        if let Some((host, readonly)) = self.host(&path) {
            if readonly {
                return Err(FsError::ReadOnly);
            }
            if !host_effects {
                return Ok(());
            }
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(append)
                .truncate(!append)
                .open(host)
                .map_err(io_err)?;
            return f.write_all(data).map_err(io_err);
        }
        if self.is_dir(&path) {
            return Err(FsError::IsDir);
        }
        let f = self.files.entry(path).or_default();
        if !append {
            f.clear();
        }
        f.extend_from_slice(data);
        Ok(())
    }

    pub fn remove(&mut self, path: &str, recursive: bool, host_effects: bool) -> Result<(), FsError> {
        let path = clean(path);
        if let Some((host, readonly)) = self.host(&path) {
            if readonly {
                return Err(FsError::ReadOnly);
            }
            let meta = std::fs::symlink_metadata(&host).map_err(io_err)?;
            if !host_effects {
                return Ok(());
            }
            return if meta.is_dir() {
                if !recursive {
                    return Err(FsError::IsDir);
                }
                std::fs::remove_dir_all(&host).map_err(io_err)
            } else {
                std::fs::remove_file(&host).map_err(io_err)
            };
        }
        if self.files.remove(&path).is_some() {
            return Ok(());
        }
        if self.is_dir(&path) {
            if !recursive {
                return Err(FsError::IsDir);
            }
            let prefix = format!("{path}/");
            self.files.retain(|k, _| !k.starts_with(&prefix));
            self.dirs.retain(|k| k != &path && !k.starts_with(&prefix));
            return Ok(());
        }
        Err(FsError::NotFound)
    }

    pub fn mkdir(&mut self, path: &str, host_effects: bool) -> Result<(), FsError> {
        let path = clean(path);
        if let Some((host, readonly)) = self.host(&path) {
            if readonly {
                return Err(FsError::ReadOnly);
            }
            if host_effects {
                std::fs::create_dir_all(host).map_err(io_err)?;
            }
            return Ok(());
        }
        self.dirs.insert(path);
        Ok(())
    }

    /// Sorted entry names of a directory: host entries for a mounted path, plus in-memory
    /// files and directories and mount points directly below it.
    pub fn list(&self, path: &str) -> Result<Vec<String>, FsError> {
        let path = clean(path);
        let mut names = BTreeSet::new();
        if let Some((host, _)) = self.host(&path) {
            for entry in std::fs::read_dir(host).map_err(io_err)? {
                let entry = entry.map_err(io_err)?;
                names.insert(entry.file_name().to_string_lossy().into_owned());
            }
        } else if !self.is_dir(&path) {
            return Err(FsError::NotFound);
        }
        let prefix = if path == "/" {
            "/".to_string()
        } else {
            format!("{path}/")
        };
        let below = self
            .files
            .keys()
            .chain(self.dirs.iter())
            .chain(self.mounts.iter().map(|m| &m.container));
        for p in below {
            if let Some(rest) = p.strip_prefix(&prefix) {
                if let Some(first) = rest.split('/').next().filter(|f| !f.is_empty()) {
                    names.insert(first.to_string());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    fn is_dir(&self, path: &str) -> bool {
        if path == "/" || self.dirs.contains(path) {
            return true;
        }
        let prefix = format!("{path}/");
        self.files
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
            || self.mounts.iter().any(|m| m.container.starts_with(&prefix))
    }

    pub fn kind(&self, path: &str) -> Option<FileKind> {
        let path = clean(path);
        if let Some((host, _)) = self.host(&path) {
            let meta = std::fs::metadata(host).ok()?;
            return Some(if meta.is_dir() {
                FileKind::Dir
            } else {
                FileKind::File { empty: meta.len() == 0 }
            });
        }
        match self.files.get(&path) {
            Some(f) => Some(FileKind::File { empty: f.is_empty() }),
            None if self.is_dir(&path) => Some(FileKind::Dir),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean("tmp/x"), "/tmp/x");
        assert_eq!(clean("/a/./b/../c/"), "/a/c");
        assert_eq!(clean("/.."), "/");
    }

    #[test]
    fn memory_and_mounted_files() {
        let dir = tempfile::tempdir().unwrap();
        let term = dir.path().join("termination-log");
        std::fs::write(&term, b"").unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        std::fs::write(vol.join("key"), b"value").unwrap();
        let mounts = vec![
            cri::Mount {
                container_path: "/dev/termination-log".into(),
                host_path: term.to_string_lossy().into(),
                ..Default::default()
            },
            cri::Mount {
                container_path: "/etc/config".into(),
                host_path: vol.to_string_lossy().into(),
                readonly: true,
                ..Default::default()
            },
        ];
        let mut fs = Vfs::new(&mounts);
        fs.write("/dev/termination-log", b"DONE", false, true).unwrap();
        assert_eq!(std::fs::read(&term).unwrap(), b"DONE");
        assert_eq!(fs.read("/etc/config/key").unwrap(), b"value");
        assert_eq!(fs.write("/etc/config/key", b"x", false, true), Err(FsError::ReadOnly));
        assert_eq!(fs.kind("/etc/config"), Some(FileKind::Dir));
        assert_eq!(fs.list("/etc/config").unwrap(), vec!["key"]);
        assert_eq!(fs.list("/etc").unwrap(), vec!["config"]);
        assert_eq!(fs.kind("/etc"), Some(FileKind::Dir));

        fs.write("/tmp/healthy", b"", true, true).unwrap();
        assert_eq!(fs.kind("/tmp/healthy"), Some(FileKind::File { empty: true }));
        assert_eq!(fs.kind("/tmp"), Some(FileKind::Dir));
        assert_eq!(fs.remove("/tmp", false, true), Err(FsError::IsDir));
        fs.remove("/tmp", true, true).unwrap();
        assert_eq!(fs.read("/tmp/healthy"), Err(FsError::NotFound));
        // Replay mode leaves host files alone.
        fs.write("/dev/termination-log", b"AGAIN", false, false).unwrap();
        assert_eq!(std::fs::read(&term).unwrap(), b"DONE");
    }
}
