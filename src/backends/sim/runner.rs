//! A running container: one tokio task (no thread) that walks the container's script in
//! virtual time and handles SIGTERM/SIGKILL from StopContainer.
//!
//! The script's effects are a pure function of its virtual offsets, so a runner resumed after
//! a restart replays the script instantly up to the time already elapsed (writing only the log
//! lines the file does not have yet) and then continues in real time.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use jiff::Timestamp;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use super::logs;
use super::script::{self, FileKind, FsError, Host, Interp, Mode, Node, Outcome, Stream, Trap};
use super::vfs::Vfs;
use crate::clock::Clock;
use crate::repeats::{self, Verdict};

/// Pending signals per container; StopContainer waits for the exit anyway, so a few suffice.
pub const SIGNAL_BUFFER: usize = 4;

/// Output chunks buffered for attached clients; a client further behind loses the oldest
/// (attach never slows the container down).
pub const ATTACH_BUFFER: usize = 1024;

/// Chunks in flight towards a container's stdin (as a pipe's buffer).
pub const STDIN_BUFFER: usize = 16;

/// Exit codes of signal deaths.
pub const EXIT_SIGKILL: i32 = 137;
pub const EXIT_SIGTERM: i32 = 143;

/// Output sequence numbers (nanoseconds added to a line's timestamp) of trap handlers: their
/// offset is "now", already past the main script's lines, and they are never replayed.
const HANDLER_SEQ_BASE: u64 = 0;

/// What StopContainer sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM, then SIGKILL after `grace` (virtual) if the container is still running.
    Term {
        grace: Duration,
    },
    Kill,
}

/// How the container ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    /// CRI reason: `Completed`, `Error` or `OOMKilled`.
    pub reason: &'static str,
    pub finished_at: Timestamp,
}

impl Exit {
    fn new(code: i32, oom: bool, finished_at: Timestamp) -> Exit {
        let reason = if oom {
            "OOMKilled"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        };
        Exit {
            code,
            reason,
            finished_at,
        }
    }
}

/// The handle the runtime keeps for a running container.
#[derive(Debug, Clone)]
pub struct RunHandle {
    pub signals: mpsc::Sender<Signal>,
    /// Turns true once the exit is recorded.
    pub exited: watch::Receiver<bool>,
    pub vfs: Arc<Mutex<Vfs>>,
    pub env: Arc<Vec<(String, String)>>,
    /// What the main process writes from now on, for attach.
    pub output: broadcast::Sender<(Stream, Bytes)>,
    /// The writing end of the main process's stdin (containers with `stdin: true`); taken
    /// (closing stdin) when a `stdin_once` container's first attach ends its input.
    pub stdin: Option<Arc<Mutex<Option<mpsc::Sender<Bytes>>>>>,
}

/// Everything a runner needs, gathered under the runtime lock.
pub struct Launch {
    pub program: Arc<Node>,
    pub env: Arc<Vec<(String, String)>>,
    /// Wall time the process started (what ContainerStatus shows).
    pub started: Timestamp,
    /// Virtual time already elapsed since `started` (0 for a fresh start).
    pub elapsed: Duration,
    pub log_path: Option<PathBuf>,
    /// Newest timestamp already in the log file (lines at or before it are not rewritten).
    pub last_logged: Option<Timestamp>,
    /// Last moment the previous keel process was known alive: file writes the script made
    /// before it already happened and are not redone (None: unknown, redo them).
    pub alive_until: Option<Timestamp>,
    pub vfs: Arc<Mutex<Vfs>>,
    pub clock: Clock,
    /// The container has an stdin (`stdin: true`): the main process reads what attach delivers.
    pub stdin: bool,
}

fn add(ts: Timestamp, d: Duration) -> Timestamp {
    ts.checked_add(d).unwrap_or(ts)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock does not make the data unusable here.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The host of a container's main process (and of its trap handlers).
struct RunHost {
    clock: Clock,
    started: Timestamp,
    /// Real instant at which virtual offset `elapsed` was reached.
    base: Instant,
    elapsed: Duration,
    log_path: Option<PathBuf>,
    last_logged: Option<Timestamp>,
    alive_until: Option<Timestamp>,
    vfs: Arc<Mutex<Vfs>>,
    trap: Arc<Mutex<Trap>>,
    attach: broadcast::Sender<(Stream, Bytes)>,
    stdin: Option<mpsc::Receiver<Bytes>>,
    /// The last write to the log failed (its warning is rate-limited until one succeeds).
    log_failing: bool,
}

/// The rate-limited warning of a log write that failed (once per output line otherwise).
const LOG_WRITE_FAILED: &str = "sim: writing container log failed";

impl RunHost {
    /// Wall time of virtual offset `at`.
    fn wall(&self, at: Duration) -> Timestamp {
        add(self.started, self.clock.to_real(at))
    }

    /// Whether a file effect at `at` already happened in the previous keel process (it ran
    /// before this runner's start and while that process was alive).
    fn replaying(&self, at: Duration) -> bool {
        at < self.elapsed && self.alive_until.is_some_and(|alive| self.wall(at) <= alive)
    }
}

#[async_trait]
impl Host for RunHost {
    async fn wait_until(&mut self, at: Duration) {
        if at <= self.elapsed {
            return;
        }
        tokio::time::sleep_until(self.base + self.clock.to_real(at - self.elapsed)).await;
    }

    fn output(&mut self, at: Duration, seq: u64, stream: Stream, data: &[u8]) {
        // Offsets map to wall time deterministically; `seq` nanoseconds keep lines ordered.
        let ts = add(self.wall(at), Duration::from_nanos(seq));
        if self.last_logged.is_some_and(|last| ts <= last) {
            return;
        }
        if self.attach.receiver_count() > 0 {
            // No receiver left is not an error: attach is optional.
            let _ = self.attach.send((stream, Bytes::copy_from_slice(data)));
        }
        let Some(path) = &self.log_path else { return };
        match logs::append(path, &logs::format_lines(ts, stream, data)) {
            Ok(()) => {
                if std::mem::take(&mut self.log_failing) {
                    // Fixed: the next failure is news again.
                    repeats::global().forget(LOG_WRITE_FAILED, &path.to_string_lossy());
                }
            }
            Err(e) => {
                self.log_failing = true;
                match repeats::global().note(LOG_WRITE_FAILED, &path.to_string_lossy()) {
                    Verdict::Log { count } => {
                        tracing::warn!(path = %path.display(), error = %e, count, "{LOG_WRITE_FAILED}; lines are dropped")
                    }
                    Verdict::Repeat { count } => {
                        tracing::debug!(path = %path.display(), error = %e, count, "{LOG_WRITE_FAILED} again")
                    }
                }
            }
        }
    }

    async fn read_stdin(&mut self) -> Option<Bytes> {
        self.stdin.as_mut()?.recv().await
    }

    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, FsError> {
        lock(&self.vfs).read(path)
    }

    fn write_file(&mut self, at: Duration, path: &str, data: &[u8], append: bool) -> Result<(), FsError> {
        let live = !self.replaying(at);
        lock(&self.vfs).write(path, data, append, live)
    }

    fn remove(&mut self, at: Duration, path: &str, recursive: bool) -> Result<(), FsError> {
        let live = !self.replaying(at);
        lock(&self.vfs).remove(path, recursive, live)
    }

    fn make_dir(&mut self, at: Duration, path: &str) -> Result<(), FsError> {
        let live = !self.replaying(at);
        lock(&self.vfs).mkdir(path, live)
    }

    fn kind(&mut self, path: &str) -> Option<FileKind> {
        lock(&self.vfs).kind(path)
    }

    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, FsError> {
        lock(&self.vfs).list(path)
    }

    fn set_trap(&mut self, trap: Trap) {
        *lock(&self.trap) = trap;
    }

    fn date(&self, at: Duration) -> String {
        self.wall(at).strftime("%a %b %e %H:%M:%S UTC %Y").to_string()
    }
}

type ExitFuture = Pin<Box<dyn std::future::Future<Output = Exit> + Send>>;

/// A prepared runner: call [`Runner::start`] after publishing the handle.
pub struct Runner {
    fut: ExitFuture,
    exited: watch::Sender<bool>,
}

/// Builds the runner of a container and its handle.
pub fn prepare(l: Launch) -> (RunHandle, Runner) {
    let (sig_tx, sig_rx) = mpsc::channel(SIGNAL_BUFFER);
    let (exit_tx, exit_rx) = watch::channel(false);
    let (output, _) = broadcast::channel(ATTACH_BUFFER);
    let (stdin_tx, stdin_rx) = if l.stdin {
        let (tx, rx) = mpsc::channel(STDIN_BUFFER);
        (Some(Arc::new(Mutex::new(Some(tx)))), Some(rx))
    } else {
        (None, None)
    };
    let handle = RunHandle {
        signals: sig_tx,
        exited: exit_rx,
        vfs: l.vfs.clone(),
        env: l.env.clone(),
        output: output.clone(),
        stdin: stdin_tx,
    };
    let fut = Box::pin(run(l, sig_rx, output, stdin_rx));
    (handle, Runner { fut, exited: exit_tx })
}

impl Runner {
    /// Runs the container: the script is polled once right here, so whatever it does without
    /// waiting (and everything a resumed container did while keel was down) has happened when
    /// this returns; the rest continues on a tokio task. `on_exit` records the exit (without
    /// the caller holding the runtime lock); waiters are woken after it.
    pub fn start(self, on_exit: impl FnOnce(Exit) + Send + 'static) {
        let Runner { mut fut, exited } = self;
        let mut cx = Context::from_waker(Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(exit) => {
                on_exit(exit);
                exited.send_replace(true);
            }
            Poll::Pending => {
                tokio::spawn(async move {
                    let exit = fut.await;
                    on_exit(exit);
                    exited.send_replace(true);
                });
            }
        }
    }
}

async fn run(
    l: Launch,
    mut signals: mpsc::Receiver<Signal>,
    output: broadcast::Sender<(Stream, Bytes)>,
    stdin: Option<mpsc::Receiver<Bytes>>,
) -> Exit {
    let base = Instant::now();
    let trap = Arc::new(Mutex::new(Trap::Default));
    // Trap handlers get no stdin: only the main process reads the container's.
    let make_host = |last_logged, stdin| RunHost {
        clock: l.clock,
        started: l.started,
        base,
        elapsed: l.elapsed,
        log_path: l.log_path.clone(),
        last_logged,
        alive_until: l.alive_until,
        vfs: l.vfs.clone(),
        trap: trap.clone(),
        attach: output.clone(),
        stdin,
        log_failing: false,
    };
    let mut interp = Interp::new(
        make_host(l.last_logged, stdin),
        l.env.iter().cloned(),
        Mode::Container,
        Duration::ZERO,
        0,
    );
    let program = l.program.clone();
    let mut main = Box::pin(async move {
        let outcome = interp.run(&program).await;
        (outcome, interp.now())
    });
    let clock = l.clock;
    // The virtual offset "now", for trap handlers and kill deadlines.
    let offset_now = || l.elapsed + clock.to_virtual(Instant::now().saturating_duration_since(base));
    let killed = || Exit::new(EXIT_SIGKILL, false, clock.now());
    let mut forever = false;
    let mut kill_at: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            (outcome, at) = &mut main, if !forever => match outcome {
                Outcome::Exit { code, oom } => return Exit::new(code, oom, add(l.started, clock.to_real(at))),
                Outcome::Forever => forever = true,
            },
            sig = signals.recv() => match sig {
                // Every handle is gone: the runtime was dropped (in a real process, killed).
                // Stop here so an abandoned runtime's containers write nothing more.
                None => return killed(),
                Some(Signal::Kill) => return killed(),
                Some(Signal::Term { grace }) => {
                    let deadline = clock.deadline(grace);
                    kill_at = Some(kill_at.map_or(deadline, |k| k.min(deadline)));
                    let current = lock(&trap).clone();
                    match current {
                        Trap::Default => return Exit::new(EXIT_SIGTERM, false, clock.now()),
                        Trap::Ignore => {}
                        Trap::Handler(handler) => {
                            let at = offset_now();
                            let mut h = Interp::new(make_host(None, None), l.env.iter().cloned(), Mode::Container, at, HANDLER_SEQ_BASE);
                            let kill = kill_at.unwrap_or(deadline);
                            let handled = h.run(&handler);
                            tokio::pin!(handled);
                            loop {
                                tokio::select! {
                                    o = &mut handled => {
                                        if let Outcome::Exit { code, oom } = o {
                                            return Exit::new(code, oom, clock.now());
                                        }
                                        break;
                                    }
                                    _ = tokio::time::sleep_until(kill) => return killed(),
                                    // A SIGKILL (or the runtime going away) still ends it at once;
                                    // another SIGTERM changes nothing while the handler runs.
                                    sig = signals.recv() => if matches!(sig, Some(Signal::Kill) | None) {
                                        return killed();
                                    },
                                }
                            }
                        }
                    }
                }
            },
            _ = tokio::time::sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() => return killed(),
        }
    }
}

/// The host of an ExecSync: output is collected, files are the container's.
pub struct ExecHost {
    clock: Clock,
    base: Instant,
    started: Timestamp,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    vfs: Arc<Mutex<Vfs>>,
}

impl ExecHost {
    pub fn new(clock: Clock, vfs: Arc<Mutex<Vfs>>) -> Self {
        Self {
            clock,
            base: Instant::now(),
            started: clock.now(),
            stdout: Vec::new(),
            stderr: Vec::new(),
            vfs,
        }
    }
}

#[async_trait]
impl Host for ExecHost {
    async fn wait_until(&mut self, at: Duration) {
        tokio::time::sleep_until(self.base + self.clock.to_real(at)).await;
    }
    fn output(&mut self, _at: Duration, _seq: u64, stream: Stream, data: &[u8]) {
        match stream {
            Stream::Stdout => self.stdout.extend_from_slice(data),
            Stream::Stderr => self.stderr.extend_from_slice(data),
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
        add(self.started, self.clock.to_real(at))
            .strftime("%a %b %e %H:%M:%S UTC %Y")
            .to_string()
    }
}

/// Runs an exec's command to its end: `(exit code, stdout, stderr)`, or `None` when it runs
/// forever (the caller bounds that by the exec timeout or the container's exit).
pub async fn exec(node: &Node, env: &[(String, String)], host: ExecHost) -> (Option<i32>, Vec<u8>, Vec<u8>) {
    let mut interp = Interp::new(host, env.iter().cloned(), Mode::Exec, Duration::ZERO, 0);
    let outcome = interp.run(node).await;
    let code = match outcome {
        Outcome::Exit { code, .. } => Some(code),
        Outcome::Forever => None,
    };
    let host = interp.host;
    (code, host.stdout, host.stderr)
}

/// Re-exported for the runtime: the program of an argv.
pub fn program(argv: &[String]) -> Node {
    script::program(argv)
}
