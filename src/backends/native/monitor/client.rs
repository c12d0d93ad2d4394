//! keel's side of the monitor: starting one, and talking to it over its socket (async, tokio).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::exitfile::{read_exit, write_atomic};
use super::protocol::Frame;
use super::{Created, ExitRecord, MonitorError, MonitorSpec};
use crate::genericruntime::streams::ProcessIo;

/// The spec's file name in the state dir.
pub const SPEC_FILE: &str = "monitor.json";
/// The monitor's own diagnostics, in the state dir.
pub const MONITOR_LOG: &str = "monitor.log";
/// How long `runc create` may take before [`spawn`] gives up (CRI-O's default
/// `ContainerCreateTimeout` is 240 s; runc takes ~40 ms here).
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(120);

/// One line of the monitor's spawn report (see the module docs of [`super`]).
#[derive(Deserialize, Debug, Default)]
struct Report {
    monitor: Option<i32>,
    pid: Option<i32>,
    error: Option<String>,
    /// The error is runc's own (else the monitor's set-up failed).
    #[serde(default)]
    runc: bool,
}

/// Spawns the monitor (`keel_exe monitor --spec <state_dir>/monitor.json`, detached: it forks
/// and `setsid`s so it outlives keel), which runs `runc create` with the container's stdio.
/// Returns once the container is "created"; `Err(Runc)` carries runc's own message.
pub async fn spawn(keel_exe: &Path, spec: &MonitorSpec) -> Result<Created, MonitorError> {
    let spec_path = spec.state_dir.join(SPEC_FILE);
    let bytes = serde_json::to_vec_pretty(spec).map_err(|e| MonitorError::Spawn(e.to_string()))?;
    let path = spec_path.clone();
    tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
        .await
        .map_err(|e| MonitorError::Spawn(e.to_string()))?
        .map_err(|e| MonitorError::io(format!("writing {}", spec_path.display()), e))?;
    let mut child = tokio::process::Command::new(keel_exe)
        .arg("monitor")
        .arg("--spec")
        .arg(&spec_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| MonitorError::io(format!("running {} monitor", keel_exe.display()), e))?;
    let Some(out) = child.stdout.take() else {
        return Err(MonitorError::Spawn("no report pipe".into()));
    };
    let mut monitor_pid = None;
    let read = async {
        let mut lines = BufReader::new(out).lines();
        while let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| MonitorError::io("reading the monitor's report", e))?
        {
            let r: Report =
                serde_json::from_str(&line).map_err(|e| MonitorError::Spawn(format!("bad report {line:?}: {e}")))?;
            if let Some(m) = r.monitor {
                monitor_pid = Some(m);
            }
            if let Some(pid) = r.pid {
                return Ok(Created {
                    pid,
                    monitor_pid: monitor_pid.unwrap_or_default(),
                });
            }
            if let Some(msg) = r.error {
                return Err(if r.runc {
                    MonitorError::Runc(msg)
                } else {
                    MonitorError::Spawn(msg)
                });
            }
        }
        Err(MonitorError::Spawn(format!(
            "the monitor exited without a report{}",
            log_tail(&spec.state_dir.join(MONITOR_LOG))
        )))
    };
    let res = match tokio::time::timeout(SPAWN_TIMEOUT, read).await {
        Ok(res) => res,
        Err(_) => {
            if let Some(pid) = monitor_pid {
                // Its runc child is left to the caller's rollback (`runc delete -f`).
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            Err(MonitorError::Spawn(format!(
                "runc create did not finish within {}s",
                SPAWN_TIMEOUT.as_secs()
            )))
        }
    };
    // The first process exits as soon as it has forked the monitor.
    if let Err(e) = child.wait().await {
        tracing::warn!(error = %e, "waiting for the monitor's first process");
    }
    res
}

/// The last line of the monitor's diagnostics, for an error message.
fn log_tail(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| format!(": {}", l.trim()))
        })
        .unwrap_or_default()
}

async fn connect(socket: &Path) -> Result<UnixStream, MonitorError> {
    UnixStream::connect(socket)
        .await
        .map_err(|source| MonitorError::NotRunning {
            socket: socket.to_path_buf(),
            source,
        })
}

async fn send(w: &mut (impl AsyncWriteExt + Unpin), frame: &Frame) -> Result<(), MonitorError> {
    w.write_all(&frame.to_bytes())
        .await
        .map_err(|e| MonitorError::io("writing to the container monitor", e))
}

/// Reads frames from a stream; cancel-safe (what was read stays in the buffer).
struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    fn new() -> Self {
        Self {
            buf: BytesMut::with_capacity(16 * 1024),
        }
    }

    /// The next frame, `None` at EOF.
    async fn next(&mut self, r: &mut (impl AsyncReadExt + Unpin)) -> Result<Option<Frame>, MonitorError> {
        loop {
            if let Some((frame, n)) = Frame::decode(&self.buf)? {
                self.buf.advance(n);
                return Ok(Some(frame));
            }
            let n = r
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| MonitorError::io("reading from the container monitor", e))?;
            if n == 0 {
                return Ok(None);
            }
        }
    }
}

/// Resolves when the container's process has exited: the monitor tells its waiters at once;
/// when the monitor is gone, the record it left (`exit.json`) answers.
pub async fn wait_exit(state_dir: &Path, socket: &Path) -> Result<ExitRecord, MonitorError> {
    let gone = |socket: &Path| {
        read_exit(state_dir).ok_or_else(|| MonitorError::Gone {
            socket: socket.to_path_buf(),
        })
    };
    let Ok(mut conn) = UnixStream::connect(socket).await else {
        return gone(socket);
    };
    if send(&mut conn, &Frame::Wait).await.is_err() {
        return gone(socket);
    }
    let mut reader = FrameReader::new();
    loop {
        match reader.next(&mut conn).await {
            Ok(Some(Frame::Exit(rec))) => return Ok(rec),
            Ok(Some(_)) => {}
            // The monitor went away mid-wait (it exits right after telling its waiters).
            Ok(None) | Err(MonitorError::Io { .. }) => return gone(socket),
            Err(e) => return Err(e),
        }
    }
}

/// Whether a monitor answers on `socket` (adoption after keel restarts).
pub fn alive(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// Attach: the client's streams bound to the main process's stdio until it exits or the client
/// leaves. With a TTY there is one output stream (stdout) and resizes reach the terminal.
pub async fn attach(socket: &Path, tty: bool, io: ProcessIo) -> Result<(), MonitorError> {
    let conn = connect(socket).await?;
    let (mut rd, mut wr) = conn.into_split();
    let ProcessIo {
        stdin,
        stdout,
        stderr,
        resize,
    } = io;
    let stderr = if tty { None } else { stderr };
    send(
        &mut wr,
        &Frame::Attach {
            stdin: stdin.is_some(),
            stdout: stdout.is_some(),
            stderr: stderr.is_some(),
        },
    )
    .await?;
    // Input and output flow independently: a container that stops reading its stdin must not
    // stop its output from reaching the client.
    let writer = feed(wr, stdin, if tty { resize } else { None });
    let reader = async {
        let mut frames = FrameReader::new();
        loop {
            let frame = tokio::select! {
                f = frames.next(&mut rd) => f?,
                _ = client_gone(&stdout, &stderr) => return Ok(()),
            };
            let (tx, data) = match frame {
                None | Some(Frame::Exit(_)) => return Ok(()),
                Some(Frame::Error(msg)) => return Err(MonitorError::Refused(msg)),
                Some(Frame::Stdout(d)) => (&stdout, d),
                Some(Frame::Stderr(d)) => (&stderr, d),
                Some(other) => {
                    return Err(MonitorError::Protocol(super::protocol::ProtocolError::Unexpected(
                        other.kind(),
                    )))
                }
            };
            if let Some(tx) = tx {
                if tx.send(data).await.is_err() {
                    return Ok(());
                }
            }
        }
    };
    tokio::select! {
        r = reader => r,
        never = writer => match never {},
    }
}

/// Sends the client's stdin and resizes to the monitor. Never returns: dropping the write half
/// would shut the socket's write side down, which the monitor takes for the client leaving.
async fn feed(
    mut wr: tokio::net::unix::OwnedWriteHalf,
    mut stdin: Option<mpsc::Receiver<bytes::Bytes>>,
    mut resize: Option<mpsc::Receiver<crate::genericruntime::streams::TermSize>>,
) -> std::convert::Infallible {
    loop {
        let frame = tokio::select! {
            d = recv(&mut stdin) => match d {
                Some(d) => Frame::Stdin(d),
                None => {
                    stdin = None;
                    Frame::StdinClose
                }
            },
            s = recv(&mut resize) => match s {
                Some(s) => Frame::Resize { width: s.width, height: s.height },
                None => {
                    resize = None;
                    continue;
                }
            },
        };
        if send(&mut wr, &frame).await.is_err() {
            // The monitor is gone; the reader sees it too.
            return std::future::pending().await;
        }
    }
}

/// The next item of an optional channel; pending forever when there is none.
async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when every output the client asked for has been dropped by it.
async fn client_gone(stdout: &Option<mpsc::Sender<bytes::Bytes>>, stderr: &Option<mpsc::Sender<bytes::Bytes>>) {
    match (stdout, stderr) {
        (Some(o), Some(e)) => {
            tokio::join!(o.closed(), e.closed());
        }
        (Some(o), None) => o.closed().await,
        (None, Some(e)) => e.closed().await,
        (None, None) => std::future::pending().await,
    }
}

/// CRI ReopenContainerLog: the monitor reopens the log file (after the kubelet renamed it).
pub async fn reopen_log(socket: &Path) -> Result<(), MonitorError> {
    let mut conn = connect(socket).await?;
    send(&mut conn, &Frame::ReopenLog).await?;
    match FrameReader::new().next(&mut conn).await? {
        Some(Frame::Ok) => Ok(()),
        Some(Frame::Error(msg)) => Err(MonitorError::Refused(msg)),
        // The container exited as the request arrived.
        Some(Frame::Exit(_)) => Err(MonitorError::Refused("container is not running".into())),
        Some(other) => Err(MonitorError::Protocol(super::protocol::ProtocolError::Unexpected(
            other.kind(),
        ))),
        None => Err(MonitorError::Gone {
            socket: PathBuf::from(socket),
        }),
    }
}
