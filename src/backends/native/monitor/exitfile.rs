//! `exit.json` in the container's state dir: how its main process ended, written atomically by
//! the monitor (a reader sees the whole record or none, also after a crash or power loss).

use std::io::Write;
use std::path::Path;

use super::ExitRecord;

/// The exit record's file name in the state dir.
pub const EXIT_FILE: &str = "exit.json";

/// Writes `bytes` to `path` atomically: a temp file beside it, fsync, rename, fsync of the dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // The rename is durable once the directory is synced.
    std::fs::File::open(dir)?.sync_all()
}

/// Writes the exit record atomically into `state_dir`.
pub fn write_exit(state_dir: &Path, rec: &ExitRecord) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
    write_atomic(&state_dir.join(EXIT_FILE), &bytes)
}

/// The exit record the monitor left in `state_dir`, if it wrote one.
pub fn read_exit(state_dir: &Path) -> Option<ExitRecord> {
    let bytes = std::fs::read(state_dir.join(EXIT_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_record_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_exit(dir.path()), None);
        let rec = ExitRecord {
            exit_code: 137,
            finished_at_ns: 1_700_000_000_123_456_789,
            oom_killed: true,
        };
        write_exit(dir.path(), &rec).unwrap();
        assert_eq!(read_exit(dir.path()), Some(rec));
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![EXIT_FILE.to_string()]);
        let text = std::fs::read_to_string(dir.path().join(EXIT_FILE)).unwrap();
        assert_eq!(
            text,
            r#"{"exit_code":137,"finished_at_ns":1700000000123456789,"oom_killed":true}"#
        );
    }

    #[test]
    fn rewrite_replaces_whole_record() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(EXIT_FILE);
        std::fs::write(
            &p,
            b"{\"exit_code\":1,\"finished_at_ns\":5,\"oom_killed\":false} and junk",
        )
        .unwrap();
        assert_eq!(read_exit(dir.path()), None, "a torn or foreign file is no record");
        let rec = ExitRecord {
            exit_code: 0,
            finished_at_ns: 9,
            oom_killed: false,
        };
        write_exit(dir.path(), &rec).unwrap();
        assert_eq!(read_exit(dir.path()), Some(rec));
    }

    #[test]
    fn write_into_missing_dir_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(write_exit(
            &missing,
            &ExitRecord {
                exit_code: 0,
                finished_at_ns: 0,
                oom_killed: false
            }
        )
        .is_err());
        assert!(!missing.exists());
    }
}
