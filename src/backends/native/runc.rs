//! keel's side of the runc CLI (`start`, `kill`, `delete`, `state`, `exec`); `create` is run by
//! the monitor, which holds the container's stdio. runc prints its fatal error on stderr (and
//! in `--log` as JSON), exit status 1; a non-detached `exec` exits with the process's status.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;

/// Errors of runc invocations.
#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    #[error("running {bin:?}: {source}")]
    Spawn {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// runc ran and failed; `message` is its own.
    #[error("runc {cmd} failed: {message}")]
    Failed { cmd: &'static str, message: String },
    #[error("runc state: {0}")]
    BadState(String),
}

impl RuncError {
    /// runc's wording for an unknown container ID.
    pub fn is_not_exist(&self) -> bool {
        matches!(self, Self::Failed { message, .. } if message.contains("does not exist"))
    }

    /// The container already stopped (kill/start on a stopped container).
    pub fn is_stopped(&self) -> bool {
        matches!(self, Self::Failed { message, .. }
            if message.contains("container not running") || message.contains("process already finished")
                || message.contains("has stopped"))
    }

    /// The text to show a CRI client: runc's own message.
    pub fn message(&self) -> String {
        match self {
            Self::Failed { message, .. } => message.clone(),
            e => e.to_string(),
        }
    }
}

/// What `runc state` reports.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct State {
    pub id: String,
    pub pid: i32,
    pub status: String,
}

/// runc with keel's state root.
#[derive(Debug, Clone)]
pub struct Runc {
    pub bin: PathBuf,
    pub root: PathBuf,
}

/// The last error runc wrote to its JSON log (`{"level":"error","msg":…}`), if any.
pub fn last_log_error(log: &Path) -> Option<String> {
    #[derive(Deserialize)]
    struct Line {
        level: String,
        msg: String,
    }
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .filter(|l| l.level == "error" || l.level == "fatal")
        .map(|l| l.msg)
        .next_back()
}

impl Runc {
    pub fn new(bin: PathBuf, root: PathBuf) -> Self {
        Self { bin, root }
    }

    /// A command with the global flags; more arguments follow.
    pub fn command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.bin);
        c.arg("--root").arg(&self.root);
        c.kill_on_drop(true);
        c
    }

    async fn run(&self, cmd: &'static str, args: &[&str]) -> Result<Vec<u8>, RuncError> {
        let out = self
            .command()
            .arg(cmd)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|source| RuncError::Spawn {
                bin: self.bin.clone(),
                source,
            })?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let message = stderr
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string();
        let message = if message.is_empty() {
            format!("exit status {}", out.status.code().unwrap_or(-1))
        } else {
            message
        };
        Err(RuncError::Failed { cmd, message })
    }

    /// `runc start`: the created container's init execs the user process.
    pub async fn start(&self, id: &str) -> Result<(), RuncError> {
        self.run("start", &[id]).await.map(drop)
    }

    /// `runc kill [--all] <id> <signal>`.
    pub async fn kill(&self, id: &str, signal: &str, all: bool) -> Result<(), RuncError> {
        if all {
            self.run("kill", &["--all", id, signal]).await.map(drop)
        } else {
            self.run("kill", &[id, signal]).await.map(drop)
        }
    }

    /// `runc delete [-f] <id>`; an unknown ID is not an error (already deleted).
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), RuncError> {
        let res = if force {
            self.run("delete", &["--force", id]).await
        } else {
            self.run("delete", &[id]).await
        };
        match res {
            Err(e) if e.is_not_exist() => Ok(()),
            r => r.map(drop),
        }
    }

    /// `runc state <id>`.
    pub async fn state(&self, id: &str) -> Result<State, RuncError> {
        let out = self.run("state", &[id]).await?;
        serde_json::from_slice(&out).map_err(|e| RuncError::BadState(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_errors_are_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("runc.log");
        std::fs::write(
            &log,
            "{\"level\":\"warning\",\"msg\":\"unknown capability\",\"time\":\"t\"}\n\
             not json\n\
             {\"level\":\"error\",\"msg\":\"exec failed: unable to start container process: exec: \\\"nope\\\": executable file not found in $PATH\",\"time\":\"t\"}\n",
        )
        .expect("write");
        assert_eq!(
            last_log_error(&log).as_deref(),
            Some("exec failed: unable to start container process: exec: \"nope\": executable file not found in $PATH")
        );
        assert_eq!(last_log_error(&dir.path().join("none")), None);
    }

    #[test]
    fn error_kinds() {
        let e = RuncError::Failed {
            cmd: "kill",
            message: "container \"x\" does not exist".into(),
        };
        assert!(e.is_not_exist() && !e.is_stopped());
        let e = RuncError::Failed {
            cmd: "kill",
            message: "container not running".into(),
        };
        assert!(e.is_stopped());
    }

    /// Against the real runc, when installed: an unknown ID is "does not exist", and deleting
    /// it is fine.
    #[tokio::test]
    async fn real_runc_unknown_id() {
        let bin = which_runc().expect("runc is installed (scripts/test.sh installs it)");
        let dir = tempfile::tempdir().expect("tempdir");
        let runc = Runc::new(bin, dir.path().join("root"));
        let err = runc.state("keel-no-such-container").await.expect_err("unknown id");
        assert!(err.is_not_exist(), "{err}");
        runc.delete("keel-no-such-container", true)
            .await
            .expect("delete unknown");
        assert!(runc.kill("keel-no-such-container", "KILL", false).await.is_err());
    }

    fn which_runc() -> Result<PathBuf, ()> {
        for d in [
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
            "/usr/local/sbin",
            "/usr/local/bin",
        ] {
            let p = Path::new(d).join("runc");
            if p.exists() {
                return Ok(p);
            }
        }
        Err(())
    }
}
