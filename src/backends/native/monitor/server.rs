//! The monitor process itself (`keel monitor --spec FILE`): detaches, runs `runc create` with
//! the container's stdio, reports, then serves one `poll(2)` loop until the container's init has
//! exited and been recorded. Single-threaded; no async runtime.

use std::ffi::OsString;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::client::MONITOR_LOG;
use super::exitfile::{write_exit, EXIT_FILE};
use super::logwriter::{LogWriter, Stream};
use super::oom::OomWatch;
use super::protocol::{self, Frame};
use super::{sys, ExitRecord, MonitorSpec};
use crate::repeats::{self, Verdict};

/// runc's pid file in the state dir.
pub const PID_FILE: &str = "pid";
/// runc's JSON log in the state dir.
pub const RUNC_LOG: &str = "runc.log";
/// The rate-limited warning of a log write that failed (once per output chunk otherwise).
const LOG_WRITE_FAILED: &str = "writing the container log failed";
/// Bytes read from the container's output at once.
const READ_CHUNK: usize = 32 * 1024;
/// An attached client with this much output queued holds the container's output back.
const CLIENT_HIGH_WATER: usize = 1 << 20;
/// Stdin queued for the container beyond which clients' input is not read.
const STDIN_HIGH_WATER: usize = 1 << 20;
/// After the init exited, how long output still held open by other processes is read.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the last frames to clients may take when the monitor finishes.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long runc's container may take to send the terminal after `runc create` returned.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);

/// `keel monitor --spec FILE`: the process's exit code.
pub fn main(args: impl Iterator<Item = OsString>) -> i32 {
    let args: Vec<OsString> = args.collect();
    let spec_path = match args.as_slice() {
        [flag, path] if flag == "--spec" => PathBuf::from(path),
        _ => {
            eprintln!("usage: keel monitor --spec FILE (started by keel's native runtime)");
            return 2;
        }
    };
    let spec: MonitorSpec = match std::fs::read(&spec_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            report_line(&serde_json::json!({ "error": format!("reading {}: {e}", spec_path.display()) }));
            return 1;
        }
    };
    // Detach: the first process exits at once (its parent, keel, reaps it); the child is an
    // orphan in a session of its own, so neither keel's death nor its process group's signals
    // reach it.
    match sys::fork_child() {
        Ok(true) => {}
        Ok(false) => return 0,
        Err(e) => {
            report_line(&serde_json::json!({ "error": format!("forking the container monitor: {e}") }));
            return 1;
        }
    }
    let _ = nix::unistd::setsid();
    // Nothing keeps keel's working directory busy (or mounted) for the container's life.
    let _ = std::env::set_current_dir("/");
    report_line(&serde_json::json!({ "monitor": std::process::id() }));
    redirect_stderr(&spec.state_dir.join(MONITOR_LOG));
    init_tracing();
    match Monitor::create(&spec) {
        Ok(mut mon) => {
            report_line(&serde_json::json!({ "pid": mon.init_pid }));
            close_report();
            mon.run();
            0
        }
        Err(failure) => {
            let (msg, runc) = match failure {
                CreateFailure::Setup(m) => (m, false),
                CreateFailure::Runc(m) => (m, true),
            };
            tracing::warn!(container = %spec.id, error = %msg, "container create failed");
            report_line(&serde_json::json!({ "error": msg, "runc": runc }));
            close_report();
            1
        }
    }
}

/// Writes one line to the spawner's report pipe (stdout).
fn report_line(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// Closes the report pipe (stdout becomes /dev/null): the spawner sees EOF.
fn close_report() {
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
}

fn redirect_stderr(path: &Path) {
    if let Ok(f) = File::options().create(true).append(true).open(path) {
        let _ = nix::unistd::dup2_stderr(&f);
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
}

fn set_nonblocking(fd: impl AsFd) -> std::io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
    fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// runc's own error: the last `error`/`fatal` line of its JSON log.
pub fn runc_error(log: &str) -> Option<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| matches!(v.get("level").and_then(|l| l.as_str()), Some("error" | "fatal")))
        .filter_map(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_string))
        .next_back()
}

/// One output stream of the container (a pipe, or the pty master as stdout).
struct Output {
    file: File,
    stream: Stream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Connected; its request frame has not arrived.
    New,
    Attach {
        stdin: bool,
        stdout: bool,
        stderr: bool,
        stdin_done: bool,
    },
    Wait,
}

struct Client {
    sock: UnixStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    role: Role,
    /// Close once `wbuf` is written.
    closing: bool,
    dead: bool,
}

impl Client {
    fn send(&mut self, frame: &Frame) {
        frame.encode(&mut self.wbuf);
    }

    /// Writes what it can without blocking.
    fn flush(&mut self) {
        while !self.wbuf.is_empty() && !self.dead {
            match self.sock.write(&self.wbuf) {
                Ok(0) => self.dead = true,
                Ok(n) => {
                    self.wbuf.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.dead = true,
            }
        }
        if self.wbuf.is_empty() && self.closing {
            self.dead = true;
        }
    }
}

/// The state of a monitor whose container was created.
struct Monitor {
    spec: MonitorSpec,
    init_pid: i32,
    sigfd: SignalFd,
    listener: UnixListener,
    outputs: Vec<Output>,
    /// The terminal's master (kept for resizes even when its output is closed).
    master: Option<OwnedFd>,
    stdin: Option<File>,
    stdin_buf: Vec<u8>,
    /// Close the container's stdin once `stdin_buf` is written.
    stdin_closing: bool,
    log: LogWriter,
    oom: Option<OomWatch>,
    clients: Vec<Client>,
    exit: Option<ExitRecord>,
    /// The last write to the log failed (its warning is rate-limited until one succeeds).
    log_failing: bool,
}

#[derive(Clone, Copy)]
enum Slot {
    Signal,
    Listener,
    Output(usize),
    Stdin,
    Oom,
    Client(usize),
}

/// Why the container could not be created.
enum CreateFailure {
    /// The monitor's own set-up failed (socket, pipes, log file).
    Setup(String),
    /// runc refused; its own message.
    Runc(String),
}

impl From<String> for CreateFailure {
    fn from(m: String) -> Self {
        CreateFailure::Setup(m)
    }
}

fn io_err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

impl Monitor {
    /// Runs `runc create`; the container is "created" when this returns Ok. Err is the message
    /// for keel (runc's own when it has one).
    fn create(spec: &MonitorSpec) -> Result<Monitor, CreateFailure> {
        nix::sys::prctl::set_child_subreaper(true).map_err(|e| io_err("becoming a child subreaper", e))?;
        // SIGCHLD is read from a signalfd; std's Command clears the mask in runc's process.
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block().map_err(|e| io_err("blocking SIGCHLD", e))?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| io_err("signalfd", e))?;
        let state = &spec.state_dir;
        for stale in [EXIT_FILE, PID_FILE] {
            let _ = std::fs::remove_file(state.join(stale));
        }
        if let Some(dir) = spec.socket.parent() {
            // Whoever can connect can attach to the container: root only.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io_err(&format!("creating {}", dir.display()), e))?;
        }
        let _ = std::fs::remove_file(&spec.socket);
        let listener = UnixListener::bind(&spec.socket)
            .map_err(|e| io_err(&format!("listening on {}", spec.socket.display()), e))?;
        std::fs::set_permissions(&spec.socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io_err(&format!("chmod {}", spec.socket.display()), e))?;
        listener.set_nonblocking(true).map_err(|e| io_err("socket", e))?;
        let cleanup_socket = |e: String| {
            let _ = std::fs::remove_file(&spec.socket);
            e
        };
        let log = LogWriter::open(spec.log_path.clone())
            .map_err(|e| {
                io_err(
                    &format!(
                        "failed to create and open log file {}",
                        spec.log_path.as_deref().unwrap_or(Path::new("")).display()
                    ),
                    e,
                )
            })
            .map_err(cleanup_socket)?;
        let mut io = Stdio3::new(spec).map_err(cleanup_socket)?;
        let status = {
            let mut cmd = Command::new(&spec.runc);
            cmd.arg("--root")
                .arg(&spec.runc_root)
                .arg("--log")
                .arg(state.join(RUNC_LOG))
                .arg("--log-format")
                .arg("json")
                .arg("create")
                .arg("--bundle")
                .arg(&spec.bundle)
                .arg("--pid-file")
                .arg(state.join(PID_FILE));
            if let Some(console) = &io.console_path {
                cmd.arg("--console-socket").arg(console);
            }
            cmd.arg(&spec.id)
                .stdin(io.child_stdin.take().map_or_else(Stdio::null, Stdio::from))
                .stdout(io.child_stdout.take().map_or_else(Stdio::null, Stdio::from))
                .stderr(io.child_stderr.take().map_or_else(Stdio::null, Stdio::from));
            // The command (and with it the container's ends of the pipes) is dropped after this
            // block, so the monitor sees EOF when the container closes them.
            cmd.status()
        };
        let status = status
            .map_err(|e| io_err(&format!("running {}", spec.runc.display()), e))
            .map_err(&cleanup_socket)?;
        if !status.success() {
            let _ = io.remove_console();
            let log = std::fs::read_to_string(state.join(RUNC_LOG)).unwrap_or_default();
            return Err(CreateFailure::Runc(cleanup_socket(
                runc_error(&log).unwrap_or_else(|| format!("runc create failed: {status}")),
            )));
        }
        let pid_text = std::fs::read_to_string(state.join(PID_FILE))
            .map_err(|e| io_err("reading runc's pid file", e))
            .map_err(&cleanup_socket)?;
        let init_pid: i32 = pid_text
            .trim()
            .parse()
            .map_err(|e| io_err(&format!("runc's pid file {pid_text:?}"), e))
            .map_err(&cleanup_socket)?;
        let mut outputs = Vec::new();
        let mut master = None;
        if io.console.is_some() {
            let m = io.receive_console().map_err(&cleanup_socket)?;
            set_nonblocking(&m).map_err(|e| cleanup_socket(io_err("pty master", e)))?;
            let out = m.try_clone().map_err(|e| cleanup_socket(io_err("pty master", e)))?;
            outputs.push(Output {
                file: File::from(out),
                stream: Stream::Stdout,
            });
            master = Some(m);
        }
        for (fd, stream) in [(io.stdout.take(), Stream::Stdout), (io.stderr.take(), Stream::Stderr)] {
            if let Some(fd) = fd {
                set_nonblocking(&fd).map_err(|e| cleanup_socket(io_err("output pipe", e)))?;
                outputs.push(Output {
                    file: File::from(fd),
                    stream,
                });
            }
        }
        let stdin = match io.stdin.take() {
            Some(fd) => {
                set_nonblocking(&fd).map_err(|e| cleanup_socket(io_err("stdin pipe", e)))?;
                Some(File::from(fd))
            }
            // With a TTY the client's input goes to the terminal.
            None if spec.stdin => master.as_ref().and_then(|m| m.try_clone().ok()).map(File::from),
            None => None,
        };
        let oom = spec.cgroup_memory_dir.as_deref().and_then(|dir| match OomWatch::new(dir) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(container = %spec.id, cgroup = %dir.display(), error = %e, "OOM events are not watched");
                None
            }
        });
        Ok(Monitor {
            spec: spec.clone(),
            init_pid,
            sigfd,
            listener,
            outputs,
            master,
            stdin,
            stdin_buf: Vec::new(),
            stdin_closing: false,
            log,
            oom,
            clients: Vec::new(),
            exit: None,
            log_failing: false,
        })
    }

    /// Serves until the init has exited and everyone has been told.
    fn run(&mut self) {
        let mut drain_deadline: Option<Instant> = None;
        loop {
            if self.exit.is_some() {
                let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_TIMEOUT);
                if self.outputs.is_empty() || Instant::now() >= deadline {
                    break;
                }
            }
            let paused = self.clients.iter().any(|c| c.wbuf.len() > CLIENT_HIGH_WATER);
            let stdin_full = self.stdin_buf.len() > STDIN_HIGH_WATER;
            let mut slots = Vec::new();
            let mut fds = Vec::new();
            fds.push(PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN));
            slots.push(Slot::Signal);
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            slots.push(Slot::Listener);
            if !paused {
                for (i, o) in self.outputs.iter().enumerate() {
                    fds.push(PollFd::new(o.file.as_fd(), PollFlags::POLLIN));
                    slots.push(Slot::Output(i));
                }
            }
            if let (Some(stdin), false) = (&self.stdin, self.stdin_buf.is_empty()) {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLOUT));
                slots.push(Slot::Stdin);
            }
            if let Some(oom) = &self.oom {
                fds.push(PollFd::new(oom.fd(), PollFlags::POLLIN));
                slots.push(Slot::Oom);
            }
            for (i, c) in self.clients.iter().enumerate() {
                let mut ev = PollFlags::empty();
                if !stdin_full {
                    ev |= PollFlags::POLLIN;
                }
                if !c.wbuf.is_empty() {
                    ev |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(c.sock.as_fd(), ev));
                slots.push(Slot::Client(i));
            }
            let timeout = match drain_deadline {
                Some(d) => {
                    PollTimeout::try_from(d.saturating_duration_since(Instant::now())).unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "poll failed; the monitor stops");
                    break;
                }
            }
            let ready: Vec<(Slot, PollFlags)> = slots
                .into_iter()
                .zip(fds.iter().map(|f| f.revents().unwrap_or(PollFlags::empty())))
                .filter(|(_, r)| !r.is_empty())
                .collect();
            drop(fds);
            let mut closed_outputs = Vec::new();
            for (slot, _) in ready {
                match slot {
                    Slot::Signal => self.reap(),
                    Slot::Listener => self.accept(),
                    Slot::Output(i) => {
                        if !self.read_output(i) {
                            closed_outputs.push(i);
                        }
                    }
                    Slot::Stdin => self.write_stdin(),
                    Slot::Oom => {
                        if let Some(o) = &mut self.oom {
                            o.on_event();
                        }
                    }
                    Slot::Client(i) => self.read_client(i),
                }
            }
            for i in closed_outputs.into_iter().rev() {
                let o = self.outputs.remove(i);
                if let Err(e) = self.log.finish(o.stream, Timestamp::now()) {
                    self.log_failed(e);
                }
            }
            for c in &mut self.clients {
                c.flush();
            }
            self.clients.retain(|c| !c.dead);
        }
        self.finish();
    }

    /// Reaps every exited child; the init's status is the container's exit.
    fn reap(&mut self) {
        while let Ok(Some(_)) = self.sigfd.read_signal() {}
        loop {
            let (pid, code) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            if pid.as_raw() == self.init_pid && self.exit.is_none() {
                let finished_at_ns = i64::try_from(Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX);
                self.exit = Some(ExitRecord {
                    exit_code: code,
                    finished_at_ns,
                    oom_killed: false,
                });
                // Nobody reads the container's stdin any more.
                self.stdin = None;
                self.stdin_buf.clear();
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((sock, _)) => {
                    if sock.set_nonblocking(true).is_err() {
                        continue;
                    }
                    self.clients.push(Client {
                        sock,
                        rbuf: Vec::new(),
                        wbuf: Vec::new(),
                        role: Role::New,
                        closing: false,
                        dead: false,
                    });
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn log_failed(&mut self, e: std::io::Error) {
        // Rate-limited: a full disk would otherwise log every line.
        self.log_failing = true;
        match repeats::global().note(LOG_WRITE_FAILED, &self.spec.id) {
            Verdict::Log { count } => {
                tracing::warn!(container = %self.spec.id, error = %e, count, "{LOG_WRITE_FAILED}; lines are dropped")
            }
            Verdict::Repeat { count } => {
                tracing::debug!(container = %self.spec.id, error = %e, count, "{LOG_WRITE_FAILED} again")
            }
        }
    }

    /// A write or reopen of the log succeeded: the next failure is news again.
    fn log_recovered(&mut self) {
        if std::mem::take(&mut self.log_failing) {
            repeats::global().forget(LOG_WRITE_FAILED, &self.spec.id);
        }
    }

    /// Reads output; false at its end.
    fn read_output(&mut self, i: usize) -> bool {
        let mut buf = [0u8; READ_CHUNK];
        let n = match self.outputs[i].file.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => return true,
            // A pty master reads EIO once no process has the terminal open.
            Err(_) => return false,
        };
        let data = &buf[..n];
        let stream = self.outputs[i].stream;
        match self.log.write(stream, data, Timestamp::now()) {
            Ok(()) => self.log_recovered(),
            Err(e) => self.log_failed(e),
        }
        let kind = match stream {
            Stream::Stdout => protocol::STDOUT,
            Stream::Stderr => protocol::STDERR,
        };
        for c in &mut self.clients {
            if let Role::Attach { stdout, stderr, .. } = c.role {
                if (stream == Stream::Stdout && stdout) || (stream == Stream::Stderr && stderr) {
                    protocol::put_data(&mut c.wbuf, kind, data);
                }
            }
        }
        true
    }

    fn write_stdin(&mut self) {
        let Some(stdin) = &mut self.stdin else {
            self.stdin_buf.clear();
            return;
        };
        while !self.stdin_buf.is_empty() {
            match stdin.write(&self.stdin_buf) {
                Ok(n) => {
                    self.stdin_buf.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // EPIPE: the container closed its stdin.
                Err(_) => {
                    self.stdin = None;
                    self.stdin_buf.clear();
                    return;
                }
            }
        }
        if self.stdin_closing {
            self.stdin = None;
        }
    }

    fn read_client(&mut self, i: usize) {
        let mut buf = [0u8; 16 * 1024];
        let eof = match self.clients[i].sock.read(&mut buf) {
            Ok(0) => true,
            Ok(n) => {
                self.clients[i].rbuf.extend_from_slice(&buf[..n]);
                false
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => false,
            Err(_) => true,
        };
        loop {
            let decoded = Frame::decode(&self.clients[i].rbuf);
            match decoded {
                Ok(Some((frame, n))) => {
                    self.clients[i].rbuf.drain(..n);
                    self.on_frame(i, frame);
                }
                Ok(None) => break,
                Err(e) => {
                    let c = &mut self.clients[i];
                    c.rbuf.clear();
                    c.send(&Frame::Error(e.to_string()));
                    c.closing = true;
                    break;
                }
            }
        }
        if eof {
            // The client left: its stdin ended with it.
            self.stdin_ended(i);
            self.clients[i].dead = true;
        }
    }

    fn on_frame(&mut self, i: usize, frame: Frame) {
        let role = self.clients[i].role;
        match (role, frame) {
            (Role::New, Frame::Attach { stdin, stdout, stderr }) => {
                // A container without stdin ignores the client's (its end does not end the
                // attach either: containerd starts no stdin copy then).
                let stdin = stdin && self.spec.stdin;
                self.clients[i].role = Role::Attach {
                    stdin,
                    stdout,
                    // A terminal has one output stream.
                    stderr: stderr && !self.spec.tty,
                    stdin_done: !stdin,
                };
            }
            (Role::New, Frame::Wait) => self.clients[i].role = Role::Wait,
            (Role::New, Frame::ReopenLog) => {
                let reply = match self.log.reopen() {
                    Ok(()) => {
                        self.log_recovered();
                        Frame::Ok
                    }
                    Err(e) => Frame::Error(format!("failed to reopen container log: {e}")),
                };
                let c = &mut self.clients[i];
                c.send(&reply);
                c.closing = true;
            }
            (
                Role::Attach {
                    stdin: true,
                    stdin_done: false,
                    ..
                },
                Frame::Stdin(data),
            ) => {
                if self.stdin.is_some() && !self.stdin_closing {
                    self.stdin_buf.extend_from_slice(&data);
                    self.write_stdin();
                }
            }
            (Role::Attach { .. }, Frame::StdinClose) => self.stdin_ended(i),
            (Role::Attach { .. }, Frame::Resize { width, height }) => {
                if let Some(m) = &self.master {
                    if let Err(e) = sys::set_winsize(m, width, height) {
                        tracing::debug!(error = %e, "terminal resize");
                    }
                }
            }
            // Input after the client's own EOF, or stdin it did not ask for: dropped.
            (Role::Attach { .. }, Frame::Stdin(_)) => {}
            (_, other) => {
                let c = &mut self.clients[i];
                c.send(&Frame::Error(format!("unexpected frame {:#04x}", other.kind())));
                c.closing = true;
            }
        }
    }

    /// An attached client's stdin ended: a `stdin_once` container without a TTY gets its stdin
    /// closed; otherwise that attach ends (containerd's `Attach`).
    fn stdin_ended(&mut self, i: usize) {
        let Role::Attach {
            stdin: true,
            stdin_done: false,
            stdout,
            stderr,
            ..
        } = self.clients[i].role
        else {
            return;
        };
        self.clients[i].role = Role::Attach {
            stdin: true,
            stdin_done: true,
            stdout,
            stderr,
        };
        if self.spec.stdin_once && !self.spec.tty {
            self.stdin_closing = true;
            if self.stdin_buf.is_empty() {
                self.stdin = None;
            }
        } else {
            self.clients[i].closing = true;
        }
    }

    /// Records the exit and tells everyone.
    fn finish(&mut self) {
        let now = Timestamp::now();
        for o in std::mem::take(&mut self.outputs) {
            if let Err(e) = self.log.finish(o.stream, now) {
                self.log_failed(e);
            }
        }
        let mut rec = self.exit.unwrap_or(ExitRecord {
            // The loop stopped without an exit (poll failed): what the kubelet shows for an
            // unknown end.
            exit_code: 255,
            finished_at_ns: i64::try_from(now.as_nanosecond()).unwrap_or(i64::MAX),
            oom_killed: false,
        });
        if let Some(o) = &mut self.oom {
            rec.oom_killed = o.check();
        }
        if let Err(e) = write_exit(&self.spec.state_dir, &rec) {
            tracing::error!(container = %self.spec.id, error = %e, "writing the exit record failed");
        }
        tracing::info!(container = %self.spec.id, exit_code = rec.exit_code, oom_killed = rec.oom_killed, "container exited");
        // New connections that raced the exit get the record too.
        self.accept();
        let _ = std::fs::remove_file(&self.spec.socket);
        for c in &mut self.clients {
            // A connection whose request has not been read yet may be a waiter: it gets the
            // record too (any other request takes EXIT for "not running").
            c.send(&Frame::Exit(rec));
            c.closing = true;
        }
        let deadline = Instant::now() + FINAL_FLUSH_TIMEOUT;
        while Instant::now() < deadline {
            for c in &mut self.clients {
                c.flush();
            }
            self.clients.retain(|c| !c.dead);
            if self.clients.is_empty() {
                break;
            }
            let mut fds: Vec<PollFd> = self
                .clients
                .iter()
                .map(|c| PollFd::new(c.sock.as_fd(), PollFlags::POLLOUT))
                .collect();
            let left =
                PollTimeout::try_from(deadline.saturating_duration_since(Instant::now())).unwrap_or(PollTimeout::MAX);
            if poll(&mut fds, left).is_err() {
                break;
            }
        }
    }
}

/// The container's stdio while it is being created: the monitor's ends and runc's ends.
struct Stdio3 {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    child_stdin: Option<OwnedFd>,
    child_stdout: Option<OwnedFd>,
    child_stderr: Option<OwnedFd>,
    console: Option<UnixListener>,
    console_path: Option<PathBuf>,
}

impl Stdio3 {
    fn new(spec: &MonitorSpec) -> Result<Self, String> {
        let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| io_err("pipe", e));
        let mut s = Stdio3 {
            stdin: None,
            stdout: None,
            stderr: None,
            child_stdin: None,
            child_stdout: None,
            child_stderr: None,
            console: None,
            console_path: None,
        };
        if spec.tty {
            // runc connects here and the container sends the pty master (SCM_RIGHTS).
            let path = spec.socket.with_extension("console");
            let _ = std::fs::remove_file(&path);
            let l = UnixListener::bind(&path).map_err(|e| io_err(&format!("console socket {}", path.display()), e))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| io_err(&format!("chmod {}", path.display()), e))?;
            s.console = Some(l);
            s.console_path = Some(path);
            return Ok(s);
        }
        if spec.stdin {
            let (r, w) = pipe()?;
            s.child_stdin = Some(r);
            s.stdin = Some(w);
        }
        let (r, w) = pipe()?;
        s.stdout = Some(r);
        s.child_stdout = Some(w);
        let (r, w) = pipe()?;
        s.stderr = Some(r);
        s.child_stderr = Some(w);
        Ok(s)
    }

    fn remove_console(&mut self) -> Option<()> {
        self.console = None;
        std::fs::remove_file(self.console_path.take()?).ok()
    }

    /// Accepts runc's connection and receives the terminal's master.
    fn receive_console(&mut self) -> Result<OwnedFd, String> {
        let res = (|| {
            let Some(l) = &self.console else {
                return Err("no console socket".to_string());
            };
            l.set_nonblocking(true).map_err(|e| io_err("console socket", e))?;
            let deadline = Instant::now() + CONSOLE_TIMEOUT;
            let conn = loop {
                match l.accept() {
                    Ok((c, _)) => break c,
                    Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                        let mut fds = [PollFd::new(l.as_fd(), PollFlags::POLLIN)];
                        let _ = poll(&mut fds, PollTimeout::from(100u16));
                    }
                    Err(e) => return Err(io_err("waiting for the container's terminal", e)),
                }
            };
            conn.set_nonblocking(false)
                .map_err(|e| io_err("console connection", e))?;
            conn.set_read_timeout(Some(CONSOLE_TIMEOUT))
                .map_err(|e| io_err("console connection", e))?;
            sys::recv_fd(&conn).map_err(|e| io_err("receiving the container's terminal", e))
        })();
        let _ = self.remove_console();
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_error_is_the_last_error_line() {
        let log = concat!(
            r#"{"level":"warning","msg":"a warning","time":"2026-12-07T10:00:00Z"}"#,
            "\n",
            r#"{"level":"error","msg":"runc create failed: unable to start container process: exec: \"/nope\": stat /nope: no such file or directory","time":"2026-12-07T10:00:01Z"}"#,
            "\nnot json\n"
        );
        assert_eq!(
            runc_error(log).as_deref(),
            Some(
                "runc create failed: unable to start container process: exec: \"/nope\": stat /nope: no such file or directory"
            )
        );
        assert_eq!(runc_error(r#"{"level":"info","msg":"x"}"#), None);
    }
}
