//! The container log manager (`pkg/kubelet/logs/container_log_manager.go`, kubelet-behavior.md
//! §1.14): every 10 s, the log of every running container that reached `containerLogMaxSize`
//! is rotated:
//!
//! 1. leftovers of an interrupted round go (`.tmp` files, uncompressed files whose `.gz` exists);
//! 2. the oldest rotated files go until at most `containerLogMaxFiles − 2` remain (the current
//!    log and the one rotated now make the total at most `containerLogMaxFiles`);
//! 3. every rotated file not yet compressed is gzipped (`<f>.tmp`, then renamed to `<f>.gz`);
//! 4. the current log is renamed to `<log>.<YYYYMMDD-hhmmss>` (local time) and the runtime is
//!    asked to `ReopenContainerLog`; if that fails the file is renamed back.
//!
//! A log file that has vanished is recreated with `ReopenContainerLog`. The files of a removed
//! container (rotated ones included) are deleted by the runtime manager's container removal.
//!
//! keel differs on purpose in one place: if the rotated name of this second is already taken
//! (two rotations within one second, possible with `--time-scale`), the round skips the
//! container instead of overwriting the earlier rotation.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::manager::RuntimeManager;
use super::seam::{cri, RuntimeError};

/// How often logs are checked (`ContainerLogMonitorInterval`).
pub const LOG_MONITOR_PERIOD: Duration = Duration::from_secs(10);
const COMPRESS_SUFFIX: &str = ".gz";
const TMP_SUFFIX: &str = ".tmp";
/// `20060102-150405`.
const TIMESTAMP_FORMAT: &str = "%Y%m%d-%H%M%S";

/// Errors of log rotation (one container's failure never stops the round for the others).
#[derive(Debug, thiserror::Error)]
pub enum LogRotateError {
    #[error("failed to list containers: {source}")]
    ListContainers {
        #[source]
        source: RuntimeError,
    },
    #[error("failed to get container status {container_id:?}: {source}")]
    ContainerStatus {
        container_id: String,
        #[source]
        source: RuntimeError,
    },
    #[error("failed to stat container log {path:?}: {source}")]
    Stat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to list rotated logs of {path:?}: {source}")]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to remove {path:?}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to compress log {path:?}: {source}")]
    Compress {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to rotate log {path:?} to {rotated:?}: {source}")]
    Rename {
        path: PathBuf,
        rotated: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to reopen container log {container_id:?}: {source}")]
    Reopen {
        container_id: String,
        #[source]
        source: RuntimeError,
    },
    #[error("log rotation task failed: {0}")]
    Task(String),
}

/// `containerLogMaxSize` and `containerLogMaxFiles`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRotatePolicy {
    pub max_size: u64,
    pub max_files: u32,
}

/// The container log manager.
pub struct ContainerLogManager {
    manager: Arc<RuntimeManager>,
    policy: LogRotatePolicy,
}

impl ContainerLogManager {
    pub fn new(manager: Arc<RuntimeManager>, policy: LogRotatePolicy) -> Self {
        Self { manager, policy }
    }

    /// Rotates every [`LOG_MONITOR_PERIOD`] until shut down.
    pub async fn run(self, shutdown: CancellationToken) {
        let clock = self.manager.config().clock;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = clock.sleep(LOG_MONITOR_PERIOD) => {}
            }
            if let Err(e) = self.rotate_logs().await {
                tracing::warn!(error = %e, "container log rotation failed");
            }
        }
    }

    /// One round over the running containers.
    pub async fn rotate_logs(&self) -> Result<(), LogRotateError> {
        let runtime = self.manager.runtime();
        let containers = runtime
            .list_containers(cri::ListContainersRequest::default())
            .await
            .map_err(|source| LogRotateError::ListContainers { source })?
            .containers;
        for c in containers {
            // Stopped containers write nothing more: an empty newest log would be pointless.
            if c.state != cri::ContainerState::ContainerRunning as i32 {
                continue;
            }
            if let Err(e) = self.rotate_container(&c.id).await {
                tracing::warn!(container = %c.id, error = %e, "container log rotation failed");
            }
        }
        Ok(())
    }

    async fn reopen(&self, id: &str) -> Result<(), LogRotateError> {
        self.manager
            .runtime()
            .reopen_container_log(cri::ReopenContainerLogRequest {
                container_id: id.to_string(),
            })
            .await
            .map(|_| ())
            .map_err(|source| LogRotateError::Reopen {
                container_id: id.to_string(),
                source,
            })
    }

    async fn rotate_container(&self, id: &str) -> Result<(), LogRotateError> {
        let status = self
            .manager
            .runtime()
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .await
            .map_err(|source| LogRotateError::ContainerStatus {
                container_id: id.to_string(),
                source,
            })?
            .status;
        let Some(status) = status else {
            return Ok(());
        };
        if status.log_path.is_empty() {
            return Ok(());
        }
        let l = super::labels::container_info_from_labels(&status.labels);
        let path = self
            .manager
            .resolve_log_path(&status.log_path, &l.pod_namespace, &l.pod_name, &l.pod_uid);
        let stat = |p: &Path| {
            std::fs::metadata(p).map_err(|source| LogRotateError::Stat {
                path: p.to_path_buf(),
                source,
            })
        };
        let size = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A rotation that lost the log (keel stopped between rename and reopen):
                // the runtime recreates it.
                self.reopen(id).await?;
                stat(&path)?.len()
            }
            Err(source) => return Err(LogRotateError::Stat { path, source }),
        };
        if size < self.policy.max_size {
            return Ok(());
        }
        let stamp = jiff::Zoned::now().strftime(TIMESTAMP_FORMAT).to_string();
        let rotated = PathBuf::from(format!("{}.{stamp}", path.display()));
        let max_files = self.policy.max_files;
        let (p, r) = (path.clone(), rotated.clone());
        let ready = tokio::task::spawn_blocking(move || prepare_rotation(&p, &r, max_files))
            .await
            .map_err(|e| LogRotateError::Task(e.to_string()))??;
        if !ready {
            tracing::debug!(log = %path.display(), "rotated name of this second already taken; next round");
            return Ok(());
        }
        std::fs::rename(&path, &rotated).map_err(|source| LogRotateError::Rename {
            path: path.clone(),
            rotated: rotated.clone(),
            source,
        })?;
        if let Err(e) = self.reopen(id).await {
            // Put the log back so the next round can try again.
            if let Err(err) = std::fs::rename(&rotated, &path) {
                tracing::error!(rotated = %rotated.display(), log = %path.display(), error = %err,
                    "failed to rename rotated log back; the container's current log is lost");
            }
            return Err(e);
        }
        Ok(())
    }
}

/// The rotated files of `log` (`<log>.*`), sorted by name (oldest first: the timestamps sort).
fn rotated_files(log: &Path) -> Result<Vec<PathBuf>, LogRotateError> {
    let list_err = |source| LogRotateError::List {
        path: log.to_path_buf(),
        source,
    };
    let (Some(dir), Some(base)) = (log.parent(), log.file_name().and_then(|n| n.to_str())) else {
        return Ok(vec![]);
    };
    let prefix = format!("{base}.");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(list_err)? {
        let e = e.map_err(list_err)?;
        if e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

fn has_suffix(p: &Path, suffix: &str) -> bool {
    p.to_str().is_some_and(|s| s.ends_with(suffix))
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn remove(p: &Path) -> Result<(), LogRotateError> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LogRotateError::Remove {
            path: p.to_path_buf(),
            source,
        }),
    }
}

/// `isInUse`: temporary files never are; compressed ones always are; an uncompressed file is
/// unless its compressed copy exists.
fn is_in_use(l: &Path, all: &[PathBuf]) -> bool {
    if has_suffix(l, TMP_SUFFIX) {
        return false;
    }
    if has_suffix(l, COMPRESS_SUFFIX) {
        return true;
    }
    let gz = with_suffix(l, COMPRESS_SUFFIX);
    !all.contains(&gz)
}

/// Steps 1–3 (blocking file work). `false` when `rotated` (or its `.gz`) already exists.
fn prepare_rotation(log: &Path, rotated: &Path, max_files: u32) -> Result<bool, LogRotateError> {
    if rotated.exists() || with_suffix(rotated, COMPRESS_SUFFIX).exists() {
        return Ok(false);
    }
    let all = rotated_files(log)?;
    let mut logs = Vec::new();
    for l in &all {
        if is_in_use(l, &all) {
            logs.push(l.clone());
        } else {
            remove(l)?;
        }
    }
    let keep = (max_files as usize).saturating_sub(2);
    let excess = logs.len().saturating_sub(keep);
    // Oldest first, so an ongoing read of a newer file is not broken.
    for l in logs.drain(..excess) {
        remove(&l)?;
    }
    for l in logs.iter().filter(|l| !has_suffix(l, COMPRESS_SUFFIX)) {
        compress(l)?;
    }
    Ok(true)
}

/// `compressLog`: `<f>` → `<f>.tmp` (gzip) → `<f>.gz`, then `<f>` is removed.
fn compress(log: &Path) -> Result<(), LogRotateError> {
    let err = |source| LogRotateError::Compress {
        path: log.to_path_buf(),
        source,
    };
    let tmp = with_suffix(log, TMP_SUFFIX);
    let result = (|| {
        let mut r = std::fs::File::open(log)?;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut w = flate2::write::GzEncoder::new(f, flate2::Compression::default());
        std::io::copy(&mut r, &mut w)?;
        w.finish()?.flush()?;
        std::fs::rename(&tmp, with_suffix(log, COMPRESS_SUFFIX))
    })();
    if result.is_err() {
        // Best effort: a leftover .tmp is also cleaned up by the next round.
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)?;
    remove(log)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::super::logs::tests::{sim_env, start_pod};
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn in_use_rules() {
        let p = |s: &str| PathBuf::from(s);
        let all = vec![
            p("0.log.1"),
            p("0.log.1.gz"),
            p("0.log.2"),
            p("0.log.3.tmp"),
            p("0.log.4.gz"),
        ];
        let in_use: Vec<bool> = all.iter().map(|l| is_in_use(l, &all)).collect();
        assert_eq!(in_use, vec![false, true, true, false, true]);
    }

    #[test]
    fn prepare_keeps_max_files_minus_two_and_compresses() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        std::fs::write(&log, "current").unwrap();
        for (name, body) in [
            ("0.log.20240101-000001.gz", "x"),
            ("0.log.20240101-000002", "two"),
            ("0.log.20240101-000002.gz", "stale"),
            ("0.log.20240101-000003", "three"),
            ("0.log.20240101-000004", "four"),
            ("0.log.20240101-000005.tmp", "tmp"),
        ] {
            std::fs::write(dir.path().join(name), body).unwrap();
        }
        std::fs::write(dir.path().join("1.log"), "another container").unwrap();
        let rotated = dir.path().join("0.log.20240101-000009");
        assert!(prepare_rotation(&log, &rotated, 4).unwrap());
        assert_eq!(
            names(dir.path()),
            vec!["0.log", "0.log.20240101-000003.gz", "0.log.20240101-000004.gz", "1.log"]
        );
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(dir.path().join("0.log.20240101-000004.gz")).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "four");
        // A name already taken (this second's rotation happened): skip.
        std::fs::write(&rotated, "").unwrap();
        assert!(!prepare_rotation(&log, &rotated, 4).unwrap());
        // max files 2: no rotated file survives the next rotation.
        std::fs::remove_file(&rotated).unwrap();
        assert!(prepare_rotation(&log, &dir.path().join("0.log.x"), 2).unwrap());
        assert_eq!(names(dir.path()), vec!["0.log", "1.log"]);
    }

    #[tokio::test]
    async fn rotates_running_sim_containers() {
        // 1 virtual second = 10 ms: the container writes ~100 lines a second.
        let env = sim_env(100.0);
        let id = start_pod(
            &env,
            "chatty",
            "i=0; while true; do i=$((i+1)); echo line-$i-padding-padding-padding; sleep 1; done",
        )
        .await;
        let done = start_pod(&env, "done", "echo finished").await;
        let lm = ContainerLogManager::new(
            env.mgr.clone(),
            LogRotatePolicy {
                max_size: 200,
                max_files: 3,
            },
        );
        let dir = env.dir.path().join("logs/default_chatty_uid-chatty/c");
        let mut rotations = 0;
        for _ in 0..400 {
            let before = names(&dir);
            lm.rotate_logs().await.unwrap();
            if names(&dir) != before && names(&dir).len() > 1 {
                rotations += 1;
            }
            let files = names(&dir);
            assert!(files.len() <= 3, "at most containerLogMaxFiles files: {files:?}");
            assert!(files.contains(&"0.log".to_string()), "reopened: {files:?}");
            if rotations >= 3 && files.iter().any(|f| f.ends_with(".gz")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let files = names(&dir);
        assert!(files.iter().any(|f| f.ends_with(".gz")), "{files:?}");
        assert!(
            files.iter().any(|f| f.starts_with("0.log.2") && !f.ends_with(".gz")),
            "{files:?}"
        );
        // The current log keeps receiving lines in the CRI format after the reopen.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let current = std::fs::read_to_string(dir.join("0.log")).unwrap();
        assert!(
            current.lines().count() > 0 && current.contains(" stdout F line-"),
            "{current}"
        );
        // An exited container is left alone.
        let done_dir = env.dir.path().join("logs/default_done_uid-done/c");
        assert_eq!(names(&done_dir), vec!["0.log"]);
        // A vanished log is recreated by ReopenContainerLog.
        for f in names(&dir) {
            std::fs::remove_file(dir.join(f)).unwrap();
        }
        lm.rotate_container(&id).await.unwrap();
        assert!(dir.join("0.log").exists());
        assert!(!done.is_empty());
    }
}
