//! Exec into a native container: `runc exec -p process.json` with the container's own process
//! spec (args and terminal replaced, `TERM=xterm` with a TTY, as containerd's `execInternal`).
//!
//! Without a TTY runc's stdio are pipes. With one, runc gets the slave side of a pty keel opens
//! as its controlling terminal (`setsid --ctty`): runc then makes the container's terminal,
//! copies between the two and follows keel's resizes of the master (SIGWINCH). runc exits with
//! the process's status (`128+signal` when killed); its own failures are in its JSON log.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::container::{state_name, Containers, RUNNING};
use super::runc::last_log_error;
use crate::genericruntime::seam::{cri, Code, RuntimeError};
use crate::genericruntime::streams::{ProcessIo, TermSize};

/// How long output may still arrive after the process exited (a background child holding the
/// pipes must not keep the call open forever).
const DRAIN: Duration = Duration::from_secs(1);
/// How long a TTY exec waits for the client's first terminal size before it starts.
const FIRST_RESIZE_WAIT: Duration = Duration::from_millis(200);
/// The `setsid` of util-linux: makes runc a session leader with the pty as its terminal.
const SETSID: &str = "setsid";

/// One exec's files under the container's state dir, removed on drop.
struct ExecFiles {
    process: PathBuf,
    log: PathBuf,
    pid: PathBuf,
}

impl ExecFiles {
    fn new(state_dir: &Path) -> Self {
        let tag = hex::encode(rand::random::<[u8; 6]>());
        Self {
            process: state_dir.join(format!("exec-{tag}.json")),
            log: state_dir.join(format!("exec-{tag}.log")),
            pid: state_dir.join(format!("exec-{tag}.pid")),
        }
    }
}

impl Drop for ExecFiles {
    fn drop(&mut self) {
        for p in [&self.process, &self.log, &self.pid] {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The exec's process spec from the container's `config.json`.
/// With a TTY and a known client size, `consoleSize` so the terminal has it before the
/// process runs (runc applies it when it makes the console).
pub fn exec_process(
    config_json: &[u8],
    cmd: &[String],
    tty: bool,
    size: Option<TermSize>,
) -> Result<serde_json::Value, String> {
    let spec: serde_json::Value = serde_json::from_slice(config_json).map_err(|e| e.to_string())?;
    let mut p = spec
        .get("process")
        .cloned()
        .ok_or_else(|| "the container's spec has no process".to_string())?;
    p["args"] = serde_json::json!(cmd);
    p["terminal"] = serde_json::json!(tty);
    if let (true, Some(s)) = (tty, size) {
        p["consoleSize"] = serde_json::json!({"height": s.height, "width": s.width});
    }
    if tty {
        let env = p["env"].as_array().cloned().unwrap_or_default();
        if !env.iter().any(|e| e.as_str().is_some_and(|s| s.starts_with("TERM="))) {
            let mut env = env;
            env.push(serde_json::json!("TERM=xterm"));
            p["env"] = serde_json::json!(env);
        }
    }
    Ok(p)
}

fn exec_err(op: &'static str, message: impl Into<String>) -> RuntimeError {
    RuntimeError::new(op, Code::Unknown, message)
}

/// A running container's ID and its files, or containerd's error.
fn running(containers: &Containers, op: &'static str, id: &str) -> Result<String, RuntimeError> {
    let id = containers.resolve(op, id)?;
    let rec = containers
        .get(&id)
        .ok_or_else(|| RuntimeError::not_found(op, format!("container {id:?} not found")))?;
    if rec.state != RUNNING {
        return Err(exec_err(op, format!("container is in {} state", state_name(rec.state))));
    }
    Ok(id)
}

async fn write_process(
    op: &'static str,
    containers: &Containers,
    id: &str,
    files: &ExecFiles,
    cmd: &[String],
    tty: bool,
    size: Option<TermSize>,
) -> Result<(), RuntimeError> {
    let config = containers.bundle(id).join("config.json");
    let bytes = tokio::fs::read(&config)
        .await
        .map_err(|e| exec_err(op, format!("failed to load the container's spec: {e}")))?;
    let p = exec_process(&bytes, cmd, tty, size).map_err(|e| exec_err(op, e))?;
    tokio::fs::write(&files.process, p.to_string())
        .await
        .map_err(|e| exec_err(op, format!("failed to write the exec process spec: {e}")))
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1)
}

/// runc's own failure (from its log), told apart from the process's exit status.
fn runc_failure(files: &ExecFiles) -> Option<String> {
    last_log_error(&files.log).map(|m| format!("OCI runtime exec failed: {m}: unknown"))
}

fn runc_exec(containers: &Containers, id: &str, files: &ExecFiles, tty: bool) -> tokio::process::Command {
    let mut c = if tty {
        let mut c = tokio::process::Command::new(SETSID);
        c.arg("--ctty").arg(&containers.runc.bin);
        c
    } else {
        tokio::process::Command::new(&containers.runc.bin)
    };
    c.arg("--root")
        .arg(&containers.runc.root)
        .arg("--log")
        .arg(&files.log)
        .arg("--log-format")
        .arg("json")
        .arg("exec")
        .arg("--process")
        .arg(&files.process)
        .arg("--pid-file")
        .arg(&files.pid)
        .arg(id);
    c.kill_on_drop(true);
    c
}

/// Copies a pipe to a channel until EOF or the receiver goes.
async fn pump(mut r: impl tokio::io::AsyncRead + Unpin, tx: mpsc::Sender<Bytes>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Kills the exec'd process (its host pid from runc's pid file); runc then exits with 137.
fn kill_exec(files: &ExecFiles) {
    let pid = std::fs::read_to_string(&files.pid)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|p| *p > 0);
    if let Some(pid) = pid {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// ExecSync: output collected, a timeout (seconds, 0 = none) kills the process.
pub async fn exec_sync(
    containers: &Containers,
    req: cri::ExecSyncRequest,
) -> Result<cri::ExecSyncResponse, RuntimeError> {
    const OP: &str = "ExecSync";
    if req.cmd.is_empty() {
        return Err(RuntimeError::new(OP, Code::InvalidArgument, "cmd is required"));
    }
    let id = running(containers, OP, &req.container_id)?;
    let files = ExecFiles::new(&containers.state_dir(&id));
    write_process(OP, containers, &id, &files, &req.cmd, false, None).await?;
    let mut child = runc_exec(containers, &id, &files, false)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| exec_err(OP, format!("failed to exec in container: {e}")))?;
    let (otx, mut orx) = mpsc::channel::<Bytes>(64);
    let (etx, mut erx) = mpsc::channel::<Bytes>(64);
    let out_task = child.stdout.take().map(|o| tokio::spawn(pump(o, otx)));
    let err_task = child.stderr.take().map(|e| tokio::spawn(pump(e, etx)));
    let collect = tokio::spawn(async move {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            tokio::select! {
                Some(b) = orx.recv() => out.extend_from_slice(&b),
                Some(b) = erx.recv() => err.extend_from_slice(&b),
                else => return (out, err),
            }
        }
    });
    let status = if req.timeout > 0 {
        let limit = Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0));
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(s) => s,
            Err(_) => {
                kill_exec(&files);
                let _ = tokio::time::timeout(DRAIN, child.wait()).await;
                for t in [out_task, err_task].into_iter().flatten() {
                    t.abort();
                }
                return Err(RuntimeError::new(
                    OP,
                    Code::DeadlineExceeded,
                    format!(
                        "failed to exec in container: timeout {}s exceeded: context deadline exceeded",
                        req.timeout
                    ),
                ));
            }
        }
    } else {
        child.wait().await
    }
    .map_err(|e| exec_err(OP, format!("failed to exec in container: {e}")))?;
    for t in [out_task, err_task].into_iter().flatten() {
        if tokio::time::timeout(DRAIN, t).await.is_err() {
            tracing::debug!(container = %id, "exec output still open after the process exited");
        }
    }
    let (stdout, stderr) = collect.await.unwrap_or_default();
    if let Some(msg) = runc_failure(&files) {
        return Err(exec_err(OP, format!("failed to exec in container: {msg}")));
    }
    Ok(cri::ExecSyncResponse {
        stdout,
        stderr,
        exit_code: exit_code(status),
    })
}

/// A streaming exec (kubectl exec): the process's exit code.
pub async fn exec_stream(
    containers: &Containers,
    id: &str,
    cmd: Vec<String>,
    tty: bool,
    io: ProcessIo,
) -> Result<i32, RuntimeError> {
    const OP: &str = "Exec";
    if cmd.is_empty() {
        return Err(RuntimeError::new(OP, Code::InvalidArgument, "cmd is required"));
    }
    let id = running(containers, OP, id)?;
    let files = ExecFiles::new(&containers.state_dir(&id));
    let mut io = io;
    // The first size arrives right after the streams are set up; start with it when it does.
    let first = match (tty, io.resize.as_mut()) {
        (true, Some(rx)) => tokio::time::timeout(FIRST_RESIZE_WAIT, rx.recv()).await.ok().flatten(),
        _ => None,
    };
    write_process(OP, containers, &id, &files, &cmd, tty, first).await?;
    let code = if tty {
        exec_tty(containers, &id, &files, io, first).await?
    } else {
        exec_pipes(containers, &id, &files, io).await?
    };
    if let Some(msg) = runc_failure(&files) {
        return Err(exec_err(OP, msg));
    }
    Ok(code)
}

async fn exec_pipes(containers: &Containers, id: &str, files: &ExecFiles, io: ProcessIo) -> Result<i32, RuntimeError> {
    const OP: &str = "Exec";
    let ProcessIo {
        stdin, stdout, stderr, ..
    } = io;
    let piped = |b: bool| if b { Stdio::piped() } else { Stdio::null() };
    let mut child = runc_exec(containers, id, files, false)
        .stdin(piped(stdin.is_some()))
        .stdout(piped(stdout.is_some()))
        .stderr(piped(stderr.is_some()))
        .spawn()
        .map_err(|e| exec_err(OP, format!("failed to exec in container: {e}")))?;
    let stdin_task = match (child.stdin.take(), stdin) {
        (Some(mut w), Some(mut rx)) => Some(tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if w.write_all(&b).await.is_err() {
                    return;
                }
            }
            // Dropping `w` is the process's stdin EOF.
        })),
        _ => None,
    };
    let mut outputs = Vec::new();
    if let (Some(r), Some(tx)) = (child.stdout.take(), stdout) {
        outputs.push(tokio::spawn(pump(r, tx)));
    }
    if let (Some(r), Some(tx)) = (child.stderr.take(), stderr) {
        outputs.push(tokio::spawn(pump(r, tx)));
    }
    let status = child
        .wait()
        .await
        .map_err(|e| exec_err(OP, format!("failed to exec in container: {e}")))?;
    for t in outputs {
        let _ = tokio::time::timeout(DRAIN, t).await;
    }
    if let Some(t) = stdin_task {
        t.abort();
    }
    Ok(exit_code(status))
}

fn winsize(s: TermSize) -> nix::pty::Winsize {
    nix::pty::Winsize {
        ws_row: s.height,
        ws_col: s.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

async fn exec_tty(
    containers: &Containers,
    id: &str,
    files: &ExecFiles,
    io: ProcessIo,
    first: Option<TermSize>,
) -> Result<i32, RuntimeError> {
    const OP: &str = "Exec";
    let fail = |e: String| exec_err(OP, format!("failed to exec in container: {e}"));
    let ProcessIo {
        stdin,
        stdout,
        mut resize,
        ..
    } = io;
    let ws = first.map(winsize);
    let pty = nix::pty::openpty(ws.as_ref(), None).map_err(|e| fail(format!("openpty: {e}")))?;
    let master = std::fs::File::from(pty.master);
    let slave = std::fs::File::from(pty.slave);
    // Raw: runc's own terminal in the container does the line discipline; ours must pass
    // bytes through untouched (or every newline would gain a second \r).
    {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let mut t = tcgetattr(&slave).map_err(|e| fail(format!("tcgetattr: {e}")))?;
        cfmakeraw(&mut t);
        tcsetattr(&slave, SetArg::TCSANOW, &t).map_err(|e| fail(format!("tcsetattr: {e}")))?;
    }
    let dup = |f: &std::fs::File| f.try_clone().map_err(|e| fail(format!("dup pty: {e}")));
    let mut cmd = runc_exec(containers, id, files, true);
    cmd.stdin(Stdio::from(dup(&slave)?))
        .stdout(Stdio::from(dup(&slave)?))
        .stderr(Stdio::from(slave));
    let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
    // Our copies of the slave must go, or reading the master never ends.
    drop(cmd);

    // Output: the master until EIO (every slave closed).
    let reader = {
        let mut m = dup(&master)?;
        let tx = stdout;
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match m.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if let Some(tx) = &tx {
                            if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        })
    };
    // Input and resizes.
    let input = {
        let m = dup(&master)?;
        let mut stdin = stdin;
        tokio::spawn(async move {
            let m = std::sync::Arc::new(m);
            loop {
                tokio::select! {
                    d = async { match stdin.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                        let Some(d) = d else {
                            // The client closed stdin: end of input for the terminal (Ctrl-D).
                            stdin = None;
                            let m2 = m.clone();
                            let _ = tokio::task::spawn_blocking(move || { use std::io::Write; (&*m2).write_all(&[4]) }).await;
                            continue;
                        };
                        let m2 = m.clone();
                        let ok = tokio::task::spawn_blocking(move || { use std::io::Write; (&*m2).write_all(&d) }).await;
                        if !matches!(ok, Ok(Ok(()))) { return; }
                    }
                    s = async { match resize.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                        match s {
                            Some(s) => {
                                let _ = rustix::termios::tcsetwinsize(&*m, rustix::termios::Winsize {
                                    ws_row: s.height, ws_col: s.width, ws_xpixel: 0, ws_ypixel: 0,
                                });
                            }
                            None => resize = None,
                        }
                    }
                }
            }
        })
    };
    let status = child.wait().await.map_err(|e| fail(e.to_string()))?;
    let _ = tokio::time::timeout(DRAIN, reader).await;
    input.abort();
    drop(master);
    Ok(exit_code(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_process_from_the_container_spec() {
        let config = br#"{"ociVersion":"1.0.2","process":{"terminal":false,"user":{"uid":5,"gid":6},
            "args":["sleep","9"],"env":["PATH=/bin","A=b"],"cwd":"/w"}}"#;
        let p = exec_process(config, &["ls".to_string(), "-l".to_string()], false, None).expect("process");
        assert_eq!(p["args"], serde_json::json!(["ls", "-l"]));
        assert_eq!(p["terminal"], serde_json::json!(false));
        assert_eq!(p["user"]["uid"], serde_json::json!(5));
        assert_eq!(p["cwd"], serde_json::json!("/w"));
        assert_eq!(p["env"], serde_json::json!(["PATH=/bin", "A=b"]));
        let size = TermSize { width: 80, height: 24 };
        let p = exec_process(config, &["sh".to_string()], true, Some(size)).expect("process");
        assert_eq!(p["terminal"], serde_json::json!(true));
        assert_eq!(p["consoleSize"], serde_json::json!({"height": 24, "width": 80}));
        assert_eq!(p["env"], serde_json::json!(["PATH=/bin", "A=b", "TERM=xterm"]));
        assert!(exec_process(b"{}", &["sh".to_string()], false, None).is_err());
    }
}
