//! The per-container monitor of the native backend, and keel's client for it.
//!
//! One monitor runs per container: keel's own binary re-executed as `keel monitor --spec FILE`
//! (dispatched in `main` before any async runtime exists). It is small and single-threaded: one
//! `poll(2)` loop, no async runtime. Like conmon (CRI-O) and containerd's shim it:
//!
//! * detaches (fork, the parent exits; `setsid`), so it outlives keel, and becomes a child
//!   subreaper, so the container's init (a child of `runc create`, native-runtime.md §3.2) is
//!   re-parented to it and `waitpid` gives the real exit status;
//! * runs `runc --root R --log <state>/runc.log --log-format json create --bundle B
//!   --pid-file <state>/pid [--console-socket S] ID` with the container's stdio as runc's fds 0–2
//!   (pipes; with a TTY runc sends the pty master over the console socket with `SCM_RIGHTS`), and
//!   reports the init pid, or runc's own error from its JSON log, back to the spawner;
//! * writes the CRI log format the kubelet reads (see [`logwriter`]), reopening the file on
//!   request (rotation);
//! * serves a unix socket ([`MonitorSpec::socket`]) for attach, TTY resize, log reopen and exit
//!   waiters ([`protocol`]);
//! * waits for the init pid, notes the cgroup's OOM events (v1 `memory.oom_control` eventfd, v2
//!   `memory.events`), drains the output, writes `exit.json` atomically ([`exitfile`]), tells
//!   the waiters and exits.
//!
//! keel runs `runc start` itself after [`spawn`] returned; the monitor needs no word of it.
//!
//! # Spawn report
//! The monitor's stdout is a pipe to [`spawn`]. The detached monitor writes JSON lines to it:
//! `{"monitor":<its pid>}` first, then `{"pid":<init pid>}` once the container is created, or
//! `{"error":"<message>","runc":<whether it is runc's own>}`; then it closes the pipe. Diagnostics go to
//! `<state_dir>/monitor.log`.
//!
//! # Socket protocol
//! Frames in both directions: `kind: u8`, `len: u32` big-endian, then `len` bytes (at most
//! [`protocol::MAX_PAYLOAD`]). A connection starts with one request frame from the client:
//!
//! | kind | client → monitor | payload |
//! |---|---|---|
//! | `0x01` | ATTACH | 1 byte: bit 0 stdin, bit 1 stdout, bit 2 stderr |
//! | `0x02` | WAIT | empty |
//! | `0x03` | REOPEN_LOG | empty |
//! | `0x04` | STDIN (after ATTACH) | bytes for the container's stdin |
//! | `0x05` | STDIN_CLOSE (after ATTACH) | empty: the client's stdin ended |
//! | `0x06` | RESIZE (after ATTACH) | width `u16` BE, height `u16` BE |
//!
//! | kind | monitor → client | payload |
//! |---|---|---|
//! | `0x81` | STDOUT | output bytes (the terminal's output with a TTY) |
//! | `0x82` | STDERR | output bytes |
//! | `0x83` | EXIT | exit code `i32` BE, finished at (ns since the epoch) `i64` BE, OOM killed `u8` |
//! | `0x84` | OK | empty (REOPEN_LOG done) |
//! | `0x85` | ERROR | UTF-8 message |
//!
//! ATTACH streams what the container writes from then on, until it exits (EXIT, then the
//! monitor closes the connection). When an attached client's stdin ends, a `stdin_once`
//! container without a TTY gets its stdin closed (containerd's rule; the attach goes on until
//! the exit); otherwise the monitor ends that attach (containerd removes its outputs). WAIT gets
//! EXIT the moment the process has exited. REOPEN_LOG gets OK or ERROR. A slow attached client
//! slows the container's output (back-pressure, as containerd's broadcaster).

pub mod client;
pub mod exitfile;
pub mod logwriter;
pub mod oom;
pub mod protocol;
pub mod server;
mod sys;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use client::{alive, attach, reopen_log, spawn, wait_exit};
pub use exitfile::read_exit;
pub use server::main;

/// What a monitor is told to run and where to keep its state (written to
/// `<state_dir>/monitor.json` and passed as `--spec`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MonitorSpec {
    /// Container id (runc id).
    pub id: String,
    /// Has `config.json` and the rootfs.
    pub bundle: PathBuf,
    pub runc: PathBuf,
    pub runc_root: PathBuf,
    /// Where `exit.json`, `runc.log`, `pid`, `monitor.json` and `monitor.log` live.
    pub state_dir: PathBuf,
    /// The monitor's socket (`<run_dir>/mon/<id>.sock`; under 108 bytes).
    pub socket: PathBuf,
    /// CRI log file; `None`: output is discarded (still streamed to attached clients).
    pub log_path: Option<PathBuf>,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
    /// The container's memory cgroup directory, for OOM events (v1 `memory.oom_control`, v2
    /// `memory.events`); `None`: OOM is not watched.
    pub cgroup_memory_dir: Option<PathBuf>,
}

/// A container created by its monitor (runc state "created").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Created {
    /// The container init's host pid.
    pub pid: i32,
    /// The monitor's pid (to kill a monitor that no longer answers on its socket).
    pub monitor_pid: i32,
}

/// How the container's main process ended (`exit.json`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitRecord {
    /// The exit status, `128 + signal` when killed by a signal.
    pub exit_code: i32,
    /// When the monitor reaped the process, nanoseconds since the Unix epoch.
    pub finished_at_ns: i64,
    /// The container's cgroup saw an OOM kill while it ran (even if the exit code is 0: the
    /// killer may pick a child, native-runtime.md §6 item 8).
    pub oom_killed: bool,
}

/// Errors of the monitor client.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// runc refused to create the container; its own message (from its JSON log).
    #[error("{0}")]
    Runc(String),
    /// The monitor could not be started or did not report.
    #[error("starting the container monitor: {0}")]
    Spawn(String),
    /// No monitor answers on the socket and it left no exit record.
    #[error("container monitor {socket:?} is gone and left no exit record")]
    Gone { socket: PathBuf },
    /// No monitor answers on the socket (the container is not running).
    #[error("container monitor {socket:?} is not running: {source}")]
    NotRunning {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The monitor answered with an error.
    #[error("container monitor: {0}")]
    Refused(String),
    #[error("container monitor protocol: {0}")]
    Protocol(#[from] protocol::ProtocolError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl MonitorError {
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
