//! The atomic writer (`pkg/volume/util/atomic_writer.go`, kubelet-behavior.md §4.7): a payload
//! of files is written into a fresh hidden timestamped directory, `..data` is swapped to it with
//! one rename, and each top-level user path is a symlink through `..data`. A reader therefore
//! sees either the whole old payload or the whole new one, never a mix.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rand::Rng;

/// The symlink naming the current payload directory.
pub const DATA_DIR_NAME: &str = "..data";
/// The symlink created next to `..data` and renamed over it.
const DATA_DIR_TMP_NAME: &str = "..data_tmp";
/// Longest file name / path in a payload (the writer's limits).
const MAX_FILE_NAME_LEN: usize = 255;
const MAX_PATH_LEN: usize = 4096;
/// Mode of the timestamped directory and of subdirectories inside it.
const DIR_MODE: u32 = 0o755;

/// One file of a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    /// Exact permission bits the file gets.
    pub mode: u32,
    /// Owner the file gets (projected service-account tokens with fsGroup), None = unchanged.
    pub fs_user: Option<u32>,
}

/// Relative path → file.
pub type Payload = BTreeMap<String, FileProjection>;

/// Errors of the atomic writer.
#[derive(Debug, thiserror::Error)]
pub enum AtomicError {
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("creating {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("swapping {path}: {source}")]
    Swap {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("removing {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Checks one payload path (`validatePath`): relative, no `..` element, not starting with `..`,
/// within the length limits.
pub fn validate_path(p: &str) -> Result<(), AtomicError> {
    let bad = |reason| {
        Err(AtomicError::InvalidPath {
            path: p.to_string(),
            reason,
        })
    };
    if p.is_empty() {
        return bad("must not be empty");
    }
    if p.len() > MAX_PATH_LEN {
        return bad("longer than 4096 characters");
    }
    if p.starts_with('/') {
        return bad("must be relative");
    }
    if p.starts_with("..") {
        return bad("must not start with '..'");
    }
    for seg in p.split('/') {
        if seg == ".." {
            return bad("must not contain '..'");
        }
        if seg.len() > MAX_FILE_NAME_LEN {
            return bad("has an element longer than 255 characters");
        }
    }
    Ok(())
}

/// A payload path cleaned as Go's `path.Clean` does for relative paths (`a//b/./c` → `a/b/c`).
pub fn clean_path(p: &str) -> String {
    let parts: Vec<&str> = Path::new(p)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    parts.join("/")
}

/// Writes `payload` into `target` atomically. Returns whether anything changed (an unchanged
/// payload is not rewritten).
pub fn write(target: &Path, payload: &Payload) -> Result<bool, AtomicError> {
    let cleaned: Payload = payload
        .iter()
        .map(|(p, f)| {
            validate_path(p)?;
            Ok((clean_path(p), f.clone()))
        })
        .collect::<Result<_, AtomicError>>()?;
    std::fs::create_dir_all(target).map_err(|source| AtomicError::Create {
        path: target.to_path_buf(),
        source,
    })?;
    let data_link = target.join(DATA_DIR_NAME);
    let old_dir = match std::fs::read_link(&data_link) {
        Ok(p) => Some(p),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(source) => {
            return Err(AtomicError::Read {
                path: data_link,
                source,
            })
        }
    };
    let new_paths: BTreeSet<String> = cleaned.keys().map(|p| top_level(p).to_string()).collect();
    let old_paths = match &old_dir {
        Some(d) => {
            let dir = target.join(d);
            if payload_matches(&dir, &cleaned)? {
                // A writer killed after the swap (or between making a payload directory and
                // swapping it in) left the rest undone: finish it now. The kubelet's writer
                // likewise makes the user-visible symlinks on every write, changed or not.
                let repaired = create_user_visible(target, &new_paths)?;
                let swept = remove_stray_payload_dirs(target, d)?;
                return Ok(repaired || swept);
            }
            user_visible_paths(&dir)?
        }
        None => BTreeSet::new(),
    };
    let ts_name = timestamped_dir_name();
    let ts_dir = target.join(&ts_name);
    create_dir_mode(&ts_dir)?;
    if let Err(e) = write_payload(&ts_dir, &cleaned) {
        let _ = std::fs::remove_dir_all(&ts_dir);
        return Err(e);
    }
    let tmp_link = target.join(DATA_DIR_TMP_NAME);
    match std::fs::remove_file(&tmp_link) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(source) => return Err(AtomicError::Remove { path: tmp_link, source }),
    }
    symlink(&ts_name, &tmp_link).map_err(|source| AtomicError::Create {
        path: tmp_link.clone(),
        source,
    })?;
    // The user-visible symlinks go through `..data`, so they may exist before the swap (as some
    // kubelet versions make them): a writer killed right after the swap leaves nothing missing.
    create_user_visible(target, &new_paths)?;
    std::fs::rename(&tmp_link, &data_link).map_err(|source| AtomicError::Swap {
        path: data_link.clone(),
        source,
    })?;
    for p in old_paths.difference(&new_paths) {
        let link = target.join(p);
        match std::fs::remove_file(&link) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => return Err(AtomicError::Remove { path: link, source }),
        }
    }
    if let Some(old) = old_dir {
        let old = target.join(old);
        // Only ever our own timestamped directories (a foreign `..data` target is left alone).
        if old.parent() == Some(target) && old.file_name().is_some_and(|n| n.to_string_lossy().starts_with("..")) {
            std::fs::remove_dir_all(&old).map_err(|source| AtomicError::Remove { path: old, source })?;
        }
    }
    remove_stray_payload_dirs(target, Path::new(&ts_name))?;
    Ok(true)
}

/// Makes the missing top-level symlinks `<path> -> ..data/<path>`. Returns whether it made any.
fn create_user_visible(target: &Path, paths: &BTreeSet<String>) -> Result<bool, AtomicError> {
    let mut made = false;
    for p in paths {
        let link = target.join(p);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_DIR_NAME).join(p), &link).map_err(|source| AtomicError::Create {
                path: link.clone(),
                source,
            })?;
            made = true;
        }
    }
    Ok(made)
}

/// Removes the timestamped payload directories other than `current` (the one `..data` names):
/// a writer killed before its swap leaves one behind, unseen by the pod but filling its tmpfs.
/// One writer per target, as the kubelet's writer assumes. Returns whether it removed any.
fn remove_stray_payload_dirs(target: &Path, current: &Path) -> Result<bool, AtomicError> {
    let rd = std::fs::read_dir(target).map_err(|source| AtomicError::Read {
        path: target.to_path_buf(),
        source,
    })?;
    let mut removed = false;
    for e in rd.flatten() {
        let name = e.file_name();
        let is_payload_dir = name.to_str().is_some_and(is_timestamped_dir_name);
        if !is_payload_dir || Path::new(&name) == current || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = e.path();
        std::fs::remove_dir_all(&path).map_err(|source| AtomicError::Remove { path, source })?;
        removed = true;
    }
    Ok(removed)
}

/// `..YYYY_MM_DD_HH_MM_SS.<n>`, as [`timestamped_dir_name`] makes them (and the kubelet's
/// `..YYYY_MM_DD_HH_MM_SS.<n>` names).
fn is_timestamped_dir_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("..") else {
        return false;
    };
    let Some((stamp, n)) = rest.split_once('.') else {
        return false;
    };
    stamp.len() == 19
        && stamp.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 | 10 | 13 | 16 => b == b'_',
            _ => b.is_ascii_digit(),
        })
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
}

fn top_level(p: &str) -> &str {
    p.split('/').next().unwrap_or(p)
}

/// `..YYYY_MM_DD_HH_MM_SS.<random>` as `os.MkdirTemp(dir, time.Now().UTC().Format(...))` names it.
fn timestamped_dir_name() -> String {
    let now = jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S");
    let n: u32 = rand::rng().random();
    format!("..{now}.{n}")
}

fn create_dir_mode(dir: &Path) -> Result<(), AtomicError> {
    let err = |source| AtomicError::Create {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir(dir).map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE)).map_err(err)
}

fn write_payload(dir: &Path, payload: &Payload) -> Result<(), AtomicError> {
    for (p, f) in payload {
        let path = dir.join(p);
        // Intermediate directories get the writer's directory mode, not the umask's.
        let mut cur = dir.to_path_buf();
        for c in Path::new(p).parent().into_iter().flat_map(|pp| pp.components()) {
            cur.push(c);
            if !cur.exists() {
                create_dir_mode(&cur)?;
            }
        }
        let err = |source| AtomicError::Write {
            path: path.clone(),
            source,
        };
        std::fs::write(&path, &f.data).map_err(err)?;
        // Exact mode regardless of the umask.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode)).map_err(err)?;
        if let Some(uid) = f.fs_user {
            std::os::unix::fs::chown(&path, Some(uid), None).map_err(err)?;
        }
    }
    Ok(())
}

/// Whether the directory already holds exactly this payload (content and modes).
fn payload_matches(dir: &Path, payload: &Payload) -> Result<bool, AtomicError> {
    let mut existing = BTreeSet::new();
    collect_files(dir, dir, &mut existing)?;
    if existing.len() != payload.len() || !payload.keys().all(|k| existing.contains(k)) {
        return Ok(false);
    }
    for (p, f) in payload {
        let path = dir.join(p);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(_) => return Ok(false),
        };
        if meta.permissions().mode() & 0o7777 != f.mode {
            return Ok(false);
        }
        let data = std::fs::read(&path).map_err(|source| AtomicError::Read {
            path: path.clone(),
            source,
        })?;
        if data != f.data {
            return Ok(false);
        }
    }
    Ok(true)
}

fn collect_files(root: &Path, dir: &Path, out: &mut BTreeSet<String>) -> Result<(), AtomicError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        // A dangling `..data` (directory removed by hand) just means "rewrite".
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(AtomicError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    for entry in rd {
        let entry = entry.map_err(|source| AtomicError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let ft = entry.file_type().map_err(|source| AtomicError::Read {
            path: path.clone(),
            source,
        })?;
        if ft.is_dir() {
            collect_files(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// The top-level names of the payload currently in `dir`.
fn user_visible_paths(dir: &Path) -> Result<BTreeSet<String>, AtomicError> {
    let mut out = BTreeSet::new();
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd.flatten() {
                out.insert(e.file_name().to_string_lossy().into_owned());
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(source) => {
            return Err(AtomicError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
            fs_user: None,
        }
    }

    fn payload(items: &[(&str, &str, u32)]) -> Payload {
        items.iter().map(|(p, d, m)| (p.to_string(), file(d, *m))).collect()
    }

    #[test]
    fn validate_path_table() {
        // From atomic_writer_test.go TestValidatePath.
        let ok = [
            "i/am/well/behaved.txt",
            "/dev/null".trim_start_matches('/'),
            "a..b",
            "a/..b",
        ];
        for p in ok {
            assert!(validate_path(p).is_ok(), "{p}");
        }
        let long_name = "a".repeat(256);
        let bad = ["/absolute", "..", "../a", "a/../b", "..dotfile", "", long_name.as_str()];
        for p in bad {
            assert!(validate_path(p).is_err(), "{p:?}");
        }
        assert!(validate_path(&"a/".repeat(2049)).is_err());
    }

    #[test]
    fn layout_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("vol");
        let p = payload(&[("foo", "foo-data", 0o644), ("sub/bar", "bar-data", 0o400)]);
        assert!(write(&t, &p).unwrap());
        let data = std::fs::read_link(t.join("..data")).unwrap();
        let name = data.to_string_lossy().into_owned();
        assert!(name.starts_with("..20"), "{name}");
        assert_eq!(std::fs::read_link(t.join("foo")).unwrap(), Path::new("..data/foo"));
        assert_eq!(std::fs::read_link(t.join("sub")).unwrap(), Path::new("..data/sub"));
        assert_eq!(std::fs::read_to_string(t.join("sub/bar")).unwrap(), "bar-data");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&t.join("foo")), 0o644);
        assert_eq!(mode(&t.join("sub/bar")), 0o400);
        assert_eq!(mode(&t.join(&name)), 0o755);
        // Same payload again: nothing rewritten.
        assert!(!write(&t, &p).unwrap());
        assert_eq!(std::fs::read_link(t.join("..data")).unwrap(), data);
    }

    #[test]
    fn update_swaps_and_removes_old_paths() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("vol");
        write(&t, &payload(&[("a", "1", 0o644), ("b", "2", 0o644)])).unwrap();
        let first = std::fs::read_link(t.join("..data")).unwrap();
        assert!(write(&t, &payload(&[("a", "changed", 0o644), ("c", "3", 0o600)])).unwrap());
        let second = std::fs::read_link(t.join("..data")).unwrap();
        assert_ne!(first, second);
        assert!(!t.join(&first).exists(), "old timestamped dir removed");
        assert!(std::fs::symlink_metadata(t.join("b")).is_err(), "b removed");
        assert_eq!(std::fs::read_to_string(t.join("a")).unwrap(), "changed");
        assert_eq!(std::fs::read_to_string(t.join("c")).unwrap(), "3");
        assert!(!t.join("..data_tmp").exists());
        // A mode change alone is a change.
        assert!(write(&t, &payload(&[("a", "changed", 0o600), ("c", "3", 0o600)])).unwrap());
        // Only one timestamped dir is left.
        let hidden = std::fs::read_dir(&t)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("..20"))
            .count();
        assert_eq!(hidden, 1);
    }

    #[test]
    fn a_write_cut_short_is_finished_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("vol");
        let p = payload(&[("a", "1", 0o644), ("sub/b", "2", 0o644)]);
        assert!(write(&t, &p).unwrap());
        let data = std::fs::read_link(t.join("..data")).unwrap();
        // Killed after the swap, before the symlinks; and killed earlier, between making a
        // payload directory and swapping it in.
        std::fs::remove_file(t.join("sub")).unwrap();
        let stray = t.join("..2026_12_07_21_30_00.12345");
        std::fs::create_dir(&stray).unwrap();
        std::fs::write(stray.join("a"), "half").unwrap();
        // A directory of the user's own naming is never touched.
        std::fs::create_dir(t.join("..keep")).unwrap();
        assert!(write(&t, &p).unwrap(), "the repair is a change");
        assert_eq!(std::fs::read_link(t.join("sub")).unwrap(), Path::new("..data/sub"));
        assert_eq!(std::fs::read_to_string(t.join("sub/b")).unwrap(), "2");
        assert!(!stray.exists(), "stray payload directory left");
        assert!(t.join("..keep").is_dir());
        assert_eq!(std::fs::read_link(t.join("..data")).unwrap(), data);
        assert!(!write(&t, &p).unwrap(), "nothing left to do");
        // An update sweeps strays too.
        std::fs::create_dir(&stray).unwrap();
        assert!(write(&t, &payload(&[("a", "3", 0o644)])).unwrap());
        assert!(!stray.exists());
        assert!(std::fs::symlink_metadata(t.join("sub")).is_err());
    }

    #[test]
    fn timestamped_names() {
        assert!(is_timestamped_dir_name(&timestamped_dir_name()));
        assert!(is_timestamped_dir_name("..2016_02_01_23_59_59.1234567"));
        for n in [
            "..data",
            "..data_tmp",
            "..2016_02_01",
            "..2016_02_01_23_59_59.",
            "..2016_02_01_23_59_59.x",
            "a",
        ] {
            assert!(!is_timestamped_dir_name(n), "{n}");
        }
    }

    #[test]
    fn empty_payload_and_bad_paths() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("vol");
        assert!(write(&t, &Payload::new()).unwrap());
        assert!(t.join("..data").exists());
        assert!(write(&t, &payload(&[("../escape", "x", 0o644)])).is_err());
        assert!(!dir.path().join("escape").exists());
    }

    #[test]
    fn clean_path_like_go() {
        assert_eq!(clean_path("a//b/./c"), "a/b/c");
        assert_eq!(clean_path("./a/"), "a");
    }
}
