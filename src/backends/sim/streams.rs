//! Exec, attach and port-forward of the simulated runtime, served in process
//! ([`LocalStreams`]): the kubelet server terminates SPDY/WebSocket and hands over channels.
//!
//! - **exec** runs the command with the container's vocabulary (see the module docs of
//!   [`super`]) on a host whose stdin is the client's stream and whose output goes to the
//!   client as it is produced (flushed whenever the command waits: for input, or in `sleep`).
//!   `cat`, `sha256sum`, `md5sum`, `wc -c` and `head -c N` work on stdin chunk by chunk as it
//!   arrives; other commands read stdin to EOF when they read it at all. A bare shell (`sh`
//!   without `-c`) without a TTY reads its script from stdin; with a TTY it is an interactive
//!   line shell ([`shell`]).
//! - **attach** streams what the container's main process writes from now on (the same bytes
//!   as its log) until it exits, and delivers the client's stdin to a container created with
//!   `stdin: true` (its script reads it: `cat` echoes it).
//! - **port-forward** connects to an echo server on every `containerPort` of the pod (from the
//!   sandbox config's port mappings); other ports are refused with containerd's message.
//!
//! State checks and messages are containerd's (CRI `Exec`/`Attach`/`PortForward`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use super::runner::RunHandle;
use super::script::{self, FileKind, FsError, Host, Interp, Mode, Node, Outcome, Stream, Trap};
use super::state::{self, Resolved, RUNNING, SANDBOX_READY};
use super::vfs::Vfs;
use super::SimRuntime;
use crate::clock::Clock;
use crate::genericruntime::seam::{cri, Code, Result as RtResult, RuntimeError};
use crate::genericruntime::streams::{BoxedIo, LocalStreams, ProcessIo, TermSize};

/// The interactive shell's prompt (busybox sh as root).
pub const PROMPT: &[u8] = b"# ";

/// How long a TTY exec waits for the client's first resize before the command starts, so
/// `stty size` sees the terminal (the client sends it right after the streams are set up).
const FIRST_RESIZE_WAIT: Duration = Duration::from_millis(200);

/// Exit code of an exec whose container stopped under it (the exec'd process is SIGKILLed).
const EXIT_KILLED: i32 = 137;

/// Bytes in flight in each direction of a forwarded connection.
const PORT_BUFFER: usize = 64 * 1024;

/// Longest line the interactive shell keeps (further input on the line is dropped).
const MAX_SHELL_LINE: usize = 64 * 1024;

/// Control bytes the line discipline knows.
const CTRL_C: u8 = 0x03;
const CTRL_D: u8 = 0x04;
const CTRL_U: u8 = 0x15;
const BACKSPACE: u8 = 0x08;
const DELETE: u8 = 0x7f;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `\n` → `\r\n`, what a terminal's output processing (ONLCR) does.
fn onlcr(data: &[u8]) -> Bytes {
    if !data.contains(&b'\n') {
        return Bytes::copy_from_slice(data);
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 16 + 1);
    for &b in data {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    Bytes::from(out)
}

/// `\r` → `\n`, what a terminal's input processing (ICRNL) does.
fn icrnl(data: Bytes) -> Bytes {
    if !data.contains(&b'\r') {
        return data;
    }
    data.iter()
        .map(|&b| if b == b'\r' { b'\n' } else { b })
        .collect::<Vec<u8>>()
        .into()
}

async fn next_resize(r: &mut Option<mpsc::Receiver<TermSize>>) -> Option<TermSize> {
    match r {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves once the client stops reading every output stream it asked for (never when it
/// asked for none: then the connection's end drops the whole exec).
async fn client_gone(stdout: &Option<mpsc::Sender<Bytes>>, stderr: &Option<mpsc::Sender<Bytes>>) {
    match (stdout, stderr) {
        (Some(o), Some(e)) => {
            tokio::join!(o.closed(), e.closed());
        }
        (Some(o), None) => o.closed().await,
        (None, Some(e)) => e.closed().await,
        (None, None) => std::future::pending().await,
    }
}

/// Resolves when the container's main process has exited (or its runner is gone).
async fn container_exit(exited: &mut watch::Receiver<bool>) {
    // An error means the runner dropped its end: it is not running either.
    let _ = exited.wait_for(|done| *done).await;
}

/// The host of a streaming exec: files and environment of the container, stdin from the
/// client, output to the client.
pub struct StreamHost {
    clock: Clock,
    base: Instant,
    started: jiff::Timestamp,
    vfs: Arc<Mutex<Vfs>>,
    stdin: Option<mpsc::Receiver<Bytes>>,
    stdout: Option<mpsc::Sender<Bytes>>,
    stderr: Option<mpsc::Sender<Bytes>>,
    resize: Option<mpsc::Receiver<TermSize>>,
    size: Option<TermSize>,
    tty: bool,
    /// Output produced since the last flush (sent at the next wait, so the interpreter's
    /// synchronous `output` never blocks and the channel still carries back-pressure).
    out: Vec<(Stream, Bytes)>,
    /// TTY input already received but not yet consumed (after a Ctrl-D or a line end).
    pending_in: Bytes,
    /// TTY: a Ctrl-D was read; the next read is EOF (once, as a terminal does).
    eof_mark: bool,
}

impl StreamHost {
    fn new(clock: Clock, vfs: Arc<Mutex<Vfs>>, io: ProcessIo, tty: bool) -> Self {
        Self {
            clock,
            base: Instant::now(),
            started: clock.now(),
            vfs,
            stdin: io.stdin,
            stdout: io.stdout,
            // With a TTY there is one output stream; stderr goes to the terminal too.
            stderr: if tty { None } else { io.stderr },
            resize: io.resize,
            size: None,
            tty,
            out: Vec::new(),
            pending_in: Bytes::new(),
            eof_mark: false,
        }
    }

    /// Sends the output produced so far, waiting for room in the channels. Output to a stream
    /// the client did not ask for, or no longer reads, is dropped (as on a closed pipe).
    async fn flush(&mut self) {
        for (stream, data) in std::mem::take(&mut self.out) {
            let tx = match stream {
                Stream::Stdout => &self.stdout,
                Stream::Stderr => &self.stderr,
            };
            if let Some(tx) = tx {
                let _ = tx.send(data).await;
            }
        }
    }

    /// Writes to the terminal as is (prompt, echo).
    fn write_raw(&mut self, data: &[u8]) {
        if !data.is_empty() {
            self.out.push((Stream::Stdout, Bytes::copy_from_slice(data)));
        }
    }

    /// Waits up to [`FIRST_RESIZE_WAIT`] for the client's first terminal size.
    async fn wait_first_resize(&mut self) {
        if let Some(r) = self.resize.as_mut() {
            if let Ok(Some(size)) = tokio::time::timeout(FIRST_RESIZE_WAIT, r.recv()).await {
                self.size = Some(size);
            }
        }
    }

    /// The next non-empty chunk from the client (`None` at EOF), taking resizes as they come.
    async fn recv_input(&mut self) -> Option<Bytes> {
        if !self.pending_in.is_empty() {
            return Some(std::mem::take(&mut self.pending_in));
        }
        loop {
            let stdin = self.stdin.as_mut()?;
            tokio::select! {
                // A resize sent before the keystrokes applies to them.
                biased;
                size = next_resize(&mut self.resize) => match size {
                    Some(s) => self.size = Some(s),
                    None => self.resize = None,
                },
                chunk = stdin.recv() => match chunk {
                    Some(c) if c.is_empty() => {}
                    Some(c) => return Some(c),
                    None => {
                        self.stdin = None;
                        return None;
                    }
                },
            }
        }
    }

    /// Raw terminal input for the interactive shell's line editor.
    async fn raw_input(&mut self) -> Option<Bytes> {
        self.flush().await;
        self.recv_input().await
    }

    /// Resolves when the client stops reading the output.
    async fn gone(&self) {
        client_gone(&self.stdout, &self.stderr).await
    }
}

#[async_trait]
impl Host for StreamHost {
    async fn wait_until(&mut self, at: Duration) {
        self.flush().await;
        tokio::time::sleep_until(self.base + self.clock.to_real(at)).await;
    }

    fn output(&mut self, _at: Duration, _seq: u64, stream: Stream, data: &[u8]) {
        if self.tty {
            self.out.push((Stream::Stdout, onlcr(data)));
        } else {
            self.out.push((stream, Bytes::copy_from_slice(data)));
        }
    }

    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, FsError> {
        lock(&self.vfs).read(path)
    }

    fn write_file(&mut self, _at: Duration, path: &str, data: &[u8], append: bool) -> Result<(), FsError> {
        lock(&self.vfs).write(path, data, append, true)
    }

    fn remove(&mut self, _at: Duration, path: &str, recursive: bool) -> Result<(), FsError> {
        lock(&self.vfs).remove(path, recursive, true)
    }

    fn make_dir(&mut self, _at: Duration, path: &str) -> Result<(), FsError> {
        lock(&self.vfs).mkdir(path, true)
    }

    fn kind(&mut self, path: &str) -> Option<FileKind> {
        lock(&self.vfs).kind(path)
    }

    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, FsError> {
        lock(&self.vfs).list(path)
    }

    fn set_trap(&mut self, _trap: Trap) {
        // A trap in an exec'd shell concerns that shell only, which ends with the exec.
    }

    fn date(&self, at: Duration) -> String {
        self.started
            .checked_add(self.clock.to_real(at))
            .unwrap_or(self.started)
            .strftime("%a %b %e %H:%M:%S UTC %Y")
            .to_string()
    }

    async fn drain(&mut self) {
        self.flush().await;
    }

    async fn read_stdin(&mut self) -> Option<Bytes> {
        self.flush().await;
        if !self.tty {
            return self.recv_input().await;
        }
        // A terminal in canonical mode: input is echoed, CR becomes NL, Ctrl-D is one EOF.
        if std::mem::take(&mut self.eof_mark) {
            return None;
        }
        let chunk = self.recv_input().await?;
        let data = match chunk.iter().position(|&b| b == CTRL_D) {
            Some(i) => {
                self.pending_in = chunk.slice(i + 1..);
                if i == 0 {
                    return None;
                }
                self.eof_mark = true;
                chunk.slice(..i)
            }
            None => chunk,
        };
        let data = icrnl(data);
        self.out.push((Stream::Stdout, onlcr(&data)));
        Some(data)
    }

    fn term_size(&self) -> Option<(u16, u16)> {
        if !self.tty {
            return None;
        }
        let s = self.size.unwrap_or_default();
        Some((s.height, s.width))
    }
}

/// What the line editor got.
enum LineRead {
    Line(String),
    /// Ctrl-C: the line is abandoned.
    Interrupt,
    /// Ctrl-D on an empty line.
    CtrlD,
    /// The client closed stdin.
    Eof,
}

/// Reads one line from the terminal, echoing as a terminal in canonical mode does.
async fn read_line(host: &mut StreamHost) -> LineRead {
    let mut line: Vec<u8> = Vec::new();
    loop {
        let Some(chunk) = host.raw_input().await else {
            return LineRead::Eof;
        };
        let mut echo: Vec<u8> = Vec::new();
        for (i, &b) in chunk.iter().enumerate() {
            match b {
                b'\r' | b'\n' => {
                    // "\r\n" from a pasted or piped line is one line end.
                    let rest = chunk.slice(i + 1..);
                    host.pending_in = if b == b'\r' && rest.first() == Some(&b'\n') {
                        rest.slice(1..)
                    } else {
                        rest
                    };
                    echo.extend_from_slice(b"\r\n");
                    host.write_raw(&echo);
                    return LineRead::Line(String::from_utf8_lossy(&line).into_owned());
                }
                CTRL_D if line.is_empty() => {
                    host.write_raw(&echo);
                    host.pending_in = chunk.slice(i + 1..);
                    return LineRead::CtrlD;
                }
                CTRL_C => {
                    echo.extend_from_slice(b"^C\r\n");
                    host.write_raw(&echo);
                    host.pending_in = chunk.slice(i + 1..);
                    return LineRead::Interrupt;
                }
                CTRL_U => {
                    for _ in 0..line.len() {
                        echo.extend_from_slice(b"\x08 \x08");
                    }
                    line.clear();
                }
                DELETE | BACKSPACE => {
                    if line.pop().is_some() {
                        echo.extend_from_slice(b"\x08 \x08");
                    }
                }
                // Ctrl-D inside a line and other control bytes do nothing here.
                b if b < 0x20 && b != b'\t' => {}
                b => {
                    if line.len() < MAX_SHELL_LINE {
                        line.push(b);
                        echo.push(b);
                    }
                }
            }
        }
        host.write_raw(&echo);
    }
}

/// Sets `LINES`/`COLUMNS` from the terminal size (what a shell does on SIGWINCH).
fn export_size(interp: &mut Interp<StreamHost>) {
    if let Some(s) = interp.host.size {
        interp.set_var("COLUMNS", s.width.to_string());
        interp.set_var("LINES", s.height.to_string());
    }
}

/// The interactive shell of a TTY exec of `sh`/`bash`/`ash`: prompt `# `, each line run with
/// the vocabulary, `exit [N]` ends with N, Ctrl-D on an empty line with 0, stdin EOF with the
/// last status. `None`: a line runs until stopped (`sleep infinity`).
async fn shell(interp: &mut Interp<StreamHost>) -> Option<i32> {
    loop {
        interp.host.write_raw(PROMPT);
        let line = match read_line(&mut interp.host).await {
            LineRead::Line(l) => l,
            LineRead::Interrupt => continue,
            LineRead::CtrlD => return Some(0),
            LineRead::Eof => return Some(interp.status()),
        };
        if line.trim().is_empty() {
            continue;
        }
        export_size(interp);
        let node = match script::parse(&line) {
            Ok(n) => n,
            Err(e) => {
                let msg = format!("sh: {e}\r\n");
                interp.host.write_raw(msg.as_bytes());
                continue;
            }
        };
        match interp.run_line(&node).await {
            None => {}
            Some(Outcome::Exit { code, .. }) => return Some(code),
            Some(Outcome::Forever) => return None,
        }
    }
}

impl SimRuntime {
    /// The handle of a running container, with containerd's errors otherwise.
    fn running(&self, op: &'static str, id: &str) -> RtResult<(RunHandle, cri::ContainerConfig)> {
        let st = self.lock();
        let full = match state::resolve(&st.containers, id) {
            Resolved::Found(full) => full,
            Resolved::NotFound => {
                return Err(RuntimeError::not_found(
                    op,
                    format!("failed to find container {id:?} in store: not found"),
                ))
            }
            Resolved::Ambiguous => {
                return Err(RuntimeError::new(
                    op,
                    Code::Unknown,
                    format!("failed to find container {id:?} in store: ambiguous ID prefix"),
                ))
            }
        };
        let Some(c) = st.containers.get(&full) else {
            return Err(RuntimeError::not_found(
                op,
                format!("failed to find container {id:?} in store: not found"),
            ));
        };
        match (&c.run, c.rec.state) {
            (Some(h), RUNNING) => Ok((h.clone(), c.rec.config.clone())),
            (_, s) => Err(RuntimeError::new(
                op,
                Code::Unknown,
                format!("container is in {} state", state::state_name(s)),
            )),
        }
    }
}

/// Runs a command to its end: its exit code, or 137 when the container stops under it.
async fn run_command(interp: &mut Interp<StreamHost>, node: &Node, exited: &mut watch::Receiver<bool>) -> i32 {
    let outcome = tokio::select! {
        o = interp.run(node) => o,
        _ = container_exit(exited) => return EXIT_KILLED,
    };
    match outcome {
        Outcome::Exit { code, .. } => code,
        Outcome::Forever => {
            // Runs until the container goes away (or the client does: then nobody hears).
            interp.host.flush().await;
            tokio::select! {
                _ = container_exit(exited) => {}
                _ = interp.host.gone() => {}
            }
            EXIT_KILLED
        }
    }
}

#[async_trait]
impl LocalStreams for SimRuntime {
    async fn exec(&self, container_id: &str, cmd: Vec<String>, tty: bool, io: ProcessIo) -> RtResult<i32> {
        const OP: &str = "Exec";
        self.available(OP)?;
        if cmd.is_empty() {
            return Err(RuntimeError::new(OP, Code::InvalidArgument, "cmd is required"));
        }
        let (handle, _) = self.running(OP, container_id)?;
        let mut exited = handle.exited.clone();
        let mut host = StreamHost::new(self.clock, handle.vfs.clone(), io, tty);
        if tty {
            host.wait_first_resize().await;
        }
        let mut interp = Interp::new(host, handle.env.iter().cloned(), Mode::Exec, Duration::ZERO, 0);
        if tty {
            // containerd gives a TTY exec `TERM=xterm` unless the command sets it.
            if !handle.env.iter().any(|(k, _)| k == "TERM") {
                interp.set_var("TERM", "xterm".to_string());
            }
            export_size(&mut interp);
        }
        let code = if script::is_bare_shell(&cmd) {
            if tty {
                let res = tokio::select! {
                    r = shell(&mut interp) => r,
                    _ = container_exit(&mut exited) => Some(EXIT_KILLED),
                };
                match res {
                    Some(code) => code,
                    None => run_command(&mut interp, &Node::ImageDefault, &mut exited).await,
                }
            } else {
                // `echo 'echo hi' | kubectl exec -i POD -- sh`: the script is stdin.
                let mut text = Vec::new();
                while let Some(chunk) = interp.host.recv_input().await {
                    text.extend_from_slice(&chunk);
                }
                let node = script::parse_or_unrecognized(&String::from_utf8_lossy(&text));
                run_command(&mut interp, &node, &mut exited).await
            }
        } else {
            run_command(&mut interp, &script::program(&cmd), &mut exited).await
        };
        interp.host.flush().await;
        Ok(code)
    }

    async fn attach(&self, container_id: &str, tty: bool, io: ProcessIo) -> RtResult<()> {
        const OP: &str = "Attach";
        self.available(OP)?;
        let (handle, config) = self.running(OP, container_id)?;
        let mut output = handle.output.subscribe();
        let mut exited = handle.exited.clone();
        let ProcessIo {
            stdin, stdout, stderr, ..
        } = io;
        let stderr = if tty { None } else { stderr };
        let feed = feed_stdin(stdin, handle.stdin.clone(), config.stdin_once);
        tokio::pin!(feed);
        let mut fed = false;
        let deliver = |stream: Stream, data: Bytes| -> Option<(mpsc::Sender<Bytes>, Bytes)> {
            // A TTY container has one stream, through the terminal's output processing.
            let (tx, data) = match (tty, stream) {
                (true, _) => (stdout.as_ref(), onlcr(&data)),
                (false, Stream::Stdout) => (stdout.as_ref(), data),
                (false, Stream::Stderr) => (stderr.as_ref(), data),
            };
            tx.map(|tx| (tx.clone(), data))
        };
        loop {
            tokio::select! {
                biased;
                msg = output.recv() => match msg {
                    Ok((stream, data)) => {
                        if let Some((tx, data)) = deliver(stream, data) {
                            let _ = tx.send(data).await;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(container = container_id, chunks = n, "sim: attach client fell behind; output dropped");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = container_exit(&mut exited) => {
                    // Everything the process wrote before exiting is already queued.
                    while let Ok((stream, data)) = output.try_recv() {
                        if let Some((tx, data)) = deliver(stream, data) {
                            let _ = tx.send(data).await;
                        }
                    }
                    break;
                }
                _ = &mut feed, if !fed => fed = true,
                _ = client_gone(&stdout, &stderr) => break,
            }
        }
        Ok(())
    }

    async fn port_forward(&self, sandbox_id: &str, port: u16) -> RtResult<BoxedIo> {
        const OP: &str = "PortForward";
        self.available(OP)?;
        let (id, listening) = {
            let st = self.lock();
            let id = match state::resolve(&st.sandboxes, sandbox_id) {
                Resolved::Found(id) => id,
                _ => {
                    return Err(RuntimeError::not_found(
                        OP,
                        format!("failed to find sandbox {sandbox_id:?} in store: not found"),
                    ))
                }
            };
            let Some(sb) = st.sandboxes.get(&id) else {
                return Err(RuntimeError::not_found(
                    OP,
                    format!("failed to find sandbox {sandbox_id:?} in store: not found"),
                ));
            };
            if sb.rec.state != SANDBOX_READY {
                return Err(RuntimeError::new(OP, Code::Unknown, "sandbox container is not running"));
            }
            let listening = sb
                .rec
                .config
                .port_mappings
                .iter()
                .any(|m| m.protocol == cri::Protocol::Tcp as i32 && i32::from(port) == m.container_port);
            (id, listening)
        };
        if !listening {
            return Err(RuntimeError::new(
                OP,
                Code::Unknown,
                format!(
                    "failed to execute portforward in network namespace {:?}: failed to connect to localhost:{port} \
                     inside namespace {id:?}, IPv4: dial tcp4 127.0.0.1:{port}: connect: connection refused IPv6 \
                     dial tcp6 [::1]:{port}: connect: connection refused ",
                    netns_path(&id)
                ),
            ));
        }
        let (client, server) = tokio::io::duplex(PORT_BUFFER);
        tokio::spawn(echo_server(server));
        Ok(Box::new(client))
    }
}

/// The network namespace path containerd would show for a sandbox (CNI names them
/// `cni-<uuid>`; the sim derives the uuid from the sandbox ID).
fn netns_path(id: &str) -> String {
    let h = |r: std::ops::Range<usize>| id.get(r).unwrap_or("0");
    format!(
        "/var/run/netns/cni-{}-{}-{}-{}-{}",
        h(0..8),
        h(8..12),
        h(12..16),
        h(16..20),
        h(20..32)
    )
}

/// What every simulated containerPort serves: the bytes back as received, then EOF after the
/// client's EOF.
async fn echo_server(io: tokio::io::DuplexStream) {
    let (mut r, mut w) = tokio::io::split(io);
    // The client going away mid-copy is the normal end of a forwarded connection.
    let _ = tokio::io::copy(&mut r, &mut w).await;
    let _ = w.shutdown().await;
}

/// Delivers an attach client's stdin to the container's stdin until the client's EOF; then a
/// `stdin_once` container's stdin is closed (what containerd does when the first attach ends).
/// A container without stdin discards the input.
async fn feed_stdin(
    client: Option<mpsc::Receiver<Bytes>>,
    slot: Option<Arc<Mutex<Option<mpsc::Sender<Bytes>>>>>,
    stdin_once: bool,
) {
    let Some(mut client) = client else {
        return std::future::pending().await;
    };
    let tx = slot.as_ref().and_then(|s| lock(s).clone());
    while let Some(chunk) = client.recv().await {
        if let Some(tx) = &tx {
            // The process stopped reading (it exited): keep draining the client.
            let _ = tx.send(chunk).await;
        }
    }
    drop(tx);
    if stdin_once {
        if let Some(s) = &slot {
            lock(s).take();
        }
    }
    // Attach goes on (output) after the client's stdin ends.
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_translations() {
        assert_eq!(onlcr(b"a\nb\n"), Bytes::from_static(b"a\r\nb\r\n"));
        assert_eq!(onlcr(b"plain"), Bytes::from_static(b"plain"));
        assert_eq!(icrnl(Bytes::from_static(b"ls\r")), Bytes::from_static(b"ls\n"));
    }

    #[test]
    fn netns_path_looks_like_cni() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            netns_path(id),
            "/var/run/netns/cni-01234567-89ab-cdef-0123-456789abcdef"
        );
        // A short ID (never from the sim, which makes 64-char IDs) still gives a path.
        assert_eq!(netns_path("ab"), "/var/run/netns/cni-0-0-0-0-0");
    }
}
