//! The simulated runtime: CRI `RuntimeService` + `ImageService` in process, with containerd's
//! semantics, for node end-to-end harnesses and scale tests (thousands of pods, one process,
//! deterministic).
//!
//! # Objects
//! Sandboxes go READY → NOTREADY (StopPodSandbox) → removed; containers CREATED → RUNNING →
//! EXITED (UNKNOWN only for names listed in `unknown_containers`). IDs are 64 lowercase hex
//! characters; calls accept a unique ID prefix like containerd. Sandboxes get an address from
//! 10.88.0.0/16 (a string only: no traffic ever goes there); hostNetwork sandboxes get none.
//! Log lines go to `<sandbox log_directory>/<log_path>` in the CRI format. State is journaled
//! under the state directory and reloaded by [`SimRuntime::new`]: running containers continue
//! where their script is after the time keel was down.
//!
//! # What a container does: its command
//! `command` + `args` joined. `sh -c SCRIPT` (also `/bin/sh`, `bash`, `ash`, flags like `-ec`)
//! interprets SCRIPT; anything else is a single command. Steps are separated by `;`, newlines or
//! `&` (no background: in sequence), `&&` (a failing step ends the chain with its status) and
//! `||`. The exit code at the end of the script is the last step's status, as in sh.
//!
//! | command | behaviour |
//! |---|---|
//! | empty (image default), `pause`, `sleep infinity` | runs until stopped |
//! | unrecognized command | logs one `sim: … treating it as long-running` line to stderr, runs until stopped (in ExecSync: exits 0; inside `$(…)`: outputs nothing) |
//! | `sleep N` | waits N *virtual* seconds (fractions and `s`/`m`/`h`/`d` suffixes allowed) |
//! | `exit N`, `true`, `false`, `:` | exit N / status 0 / status 1 / status 0 |
//! | `echo [-n] [-e] TEXT…`, `printf FMT ARGS…` | writes to stdout (`>&2`: stderr; `> FILE`, `>> FILE`: a file) |
//! | `trap '' TERM` | ignore SIGTERM: StopContainer waits the full timeout, then SIGKILL (137, `Error`) |
//! | `trap 'exit N' TERM` (any commands) | on SIGTERM run them at once; exit N if they exit |
//! | (no trap) | SIGTERM ends the container at once: 143 (128+15), reason `Error` |
//! | `oom` | exits 137, reason `OOMKilled` |
//! | `fail-after N` | `sleep N; exit 1` |
//! | `a \| b` pipelines with `cat`, `grep [-ivqc] TEXT` (plain text, not regex), `head`/`tail -n N`, `wc [-lwc]`, `tee [-a]` | stages run one after another (stdout feeds the next stdin) |
//! | `cat`, `ls`, `touch`, `rm [-rf]`, `mkdir`, `test`/`[ ]` (-e -f -d -s -n -z = != -eq …) | on the container's files: mounted paths are the real host files (termination-message file, volumes), others are private in-memory files |
//! | `env`, `printenv [VAR]`, `hostname`, `date`, `export`, `VAR=value`, `$VAR`, `${VAR}`, `$?`, `$((i+1))`, `$(CMDS)` | environment from the container config, plus `HOSTNAME` and `PATH` |
//! | `while`/`until COND; do …; done`, `for V in …; do …; done`, `if …; then …; else …; fi`, `{ …; }` | control flow; a loop that never sleeps is treated as long-running after 100 rounds |
//! | `exec CMD`, nested `sh -c '…'` | run CMD |
//!
//! Subshells `( … )` and backquotes are not simulated (the script counts as an
//! unrecognized command). Exit reasons: 0 → `Completed`, otherwise `Error`, `oom` →
//! `OOMKilled`; a container that cannot start (its sandbox is stopped, or argv[0] matches
//! `start_failures`) is EXITED with 128 and `StartError`. StopContainer with timeout 0 is an
//! immediate SIGKILL (137). ExecSync runs the same vocabulary against the container's files and
//! environment; a script taking longer than the timeout ends in `DeadlineExceeded`.
//!
//! Differences from a real shell on purpose: SIGTERM interrupts `sleep` at once (sh would run
//! the trap after the sleep), and PID 1 without a trap dies on SIGTERM (a real PID 1 ignores
//! it); both make stop behaviour predictable from the manifest. Pipeline stages run one
//! after another, so a stage that never ends never feeds the next one.
//!
//! The same vocabulary also has `sha256sum`/`md5sum` (coreutils format `HEX  -`), `head -c N`
//! and `stty size`; commands that read stdin (`cat`, `grep`, `wc`…) read the process's own
//! stdin when they are not in a pipeline: nothing for an ExecSync or a container without
//! `stdin: true`.
//!
//! # Streams (exec, attach, port-forward: [`streams`])
//! [`SimRuntime::local_streams`] serves them in process; state checks and messages are
//! containerd's (`failed to find container "ID" in store: not found`, `container is in
//! CONTAINER_EXITED state`).
//! - **exec** runs the command with the vocabulary above, stdin from the client, output sent as
//!   produced (whenever the command waits for input or sleeps). `cat`, `sha256sum`, `md5sum`,
//!   `wc -c` and `head -c N` process stdin chunk by chunk as it arrives; other commands read it
//!   to EOF when they read it. A command running until stopped ends with 137 when the
//!   container stops. `sh` without `-c` (no TTY) runs stdin as its script.
//! - **exec with a TTY** of `sh`/`bash`/`ash`/`dash` (no `-c`) is an interactive line shell:
//!   prompt `# `, typed input echoed (CR → `\r\n`; backspace, Ctrl-U, Ctrl-C edit or drop the
//!   line), each line run with the vocabulary (variables persist between lines), `exit [N]`
//!   ends with N, Ctrl-D on an empty line with 0, the client closing stdin with the last status.
//!   Other TTY commands run as without one, with output through the terminal (`\n` → `\r\n`,
//!   stderr merged into stdout) and input echoed, CR read as NL, Ctrl-D as EOF. The terminal
//!   size from resize events is `stty size` (`ROWS COLS`) and `$COLUMNS`/`$LINES` (set before
//!   each line; for a command, from the first resize, awaited up to 200 ms); `TERM=xterm`.
//! - **attach** streams what the main process writes from now on (stdout/stderr apart; one
//!   stream through the terminal for a TTY container) until the container exits. A client
//!   that falls more than 1024 chunks behind loses the oldest (the container never waits for
//!   it). With `stdin: true` the client's stdin is the main process's stdin (a container
//!   command `cat` echoes it to its log and to attached clients); with `stdin_once` the first
//!   attach closing its stdin closes the container's (cat then exits 0). Difference on
//!   purpose: a TTY container's input is not echoed.
//! - **port-forward** connects to an in-process echo server (bytes back as received, EOF after
//!   the client's EOF) on every TCP `containerPort` of the pod (the sandbox config's port
//!   mappings) while the sandbox is ready; any other port fails like containerd:
//!   `failed to execute portforward in network namespace "/var/run/netns/cni-…": failed to
//!   connect to localhost:PORT inside namespace "ID", IPv4: dial tcp4 127.0.0.1:PORT: connect:
//!   connection refused IPv6 dial tcp6 [::1]:PORT: connect: connection refused `.
//!
//! # Stats (ListContainerStats, ListPodSandboxStats; see [`stats`])
//! A running container burns `SIM_CPU_MILLICORES` (from its environment, default 1) per virtual
//! second and holds `SIM_MEMORY` (a quantity like `64Mi`, default 1Mi) as working set, usage and
//! RSS: `usageCoreNanoSeconds = millicores × 10⁶ × virtual seconds run`, `usageNanoCores =
//! millicores × 10⁶`. Its writable layer is what its scripts wrote to unmounted paths. A sandbox
//! sums its containers (CPU of exited ones too), counts running containers + 1 processes and has
//! one `eth0` with zero traffic (none with hostNetwork).
//!
//! # Files
//! `<state_dir>/journal.jsonl` (one JSON line per mutation, compacted on open and when it grows
//! past four times the live objects) and `<state_dir>/alive` (the wall time, rewritten every
//! second, so a restarted runtime knows which file writes of a script already happened). The
//! config file (`SimRuntime::with_config_file`) is described in [`config`].

pub mod config;
pub mod images;
pub mod journal;
pub mod logs;
pub mod runner;
pub mod script;
pub mod state;
pub mod stats;
pub mod streams;
pub mod vfs;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

pub use config::SimConfig;

use crate::clock::Clock;
use crate::genericruntime::seam::{
    cri, Code, ContainerEventStream, ImageService, PullProgress, Result as RtResult, RuntimeError, RuntimeService,
};
use crate::genericruntime::streams::LocalStreams;
use images::ImageRecord;
use journal::{Journal, Record};
use runner::{Exit, Launch, RunHandle, Signal};
use state::{
    ContainerRecord, Resolved, SandboxRecord, State, CREATED, EXITED, RUNNING, SANDBOX_NOTREADY, SANDBOX_READY, UNKNOWN,
};

/// Runtime identity reported by Version.
pub const RUNTIME_NAME: &str = "sim";
pub const RUNTIME_API_VERSION: &str = "v1";
/// The only kubelet runtime API version (the kubelet refuses others).
pub const KUBE_API_VERSION: &str = "0.1.0";

/// How often the config file's mtime is checked (real time).
const CONFIG_POLL: Duration = Duration::from_secs(1);

/// The runtime writes the wall time to `<state_dir>/alive` this often (real time), so that
/// after a SIGKILL the next process knows until when the old one ran.
const HEARTBEAT: Duration = Duration::from_secs(1);
const HEARTBEAT_FILE: &str = "alive";

/// The image filesystem's mountpoint under the state directory (ImageFsInfo).
const IMAGES_MOUNT_DIR: &str = "images";

/// Exit code and reason of a container that failed to start (containerd's constants).
const START_ERROR_CODE: i32 = 128;
const START_ERROR_REASON: &str = "StartError";

/// The image environment every simulated image has (what busybox's config carries).
const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors creating the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening the sim journal")]
    Journal(#[from] journal::Error),
    #[error("loading the sim config")]
    Config(#[from] config::Error),
    #[error("configured image")]
    Image(#[from] images::Error),
    #[error("the sim runtime needs a tokio runtime ({what})")]
    NoTokioRuntime { what: &'static str },
}

fn no_streaming_url(op: &'static str) -> RuntimeError {
    RuntimeError::new(
        op,
        Code::Unimplemented,
        "the simulated runtime serves streams in process",
    )
}

/// The simulated runtime.
pub struct SimRuntime {
    me: Weak<SimRuntime>,
    clock: Clock,
    state_dir: PathBuf,
    /// When the previous process was last known alive (from its heartbeat file).
    alive_until: Option<jiff::Timestamp>,
    config: RwLock<Arc<SimConfig>>,
    state: Mutex<State>,
    /// Container lifecycle events for `GetContainerEvents` subscribers (sent as they happen).
    events: crate::backends::common::EventHub,
}

impl std::fmt::Debug for SimRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRuntime")
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

fn now_ns(clock: &Clock) -> i64 {
    i64::try_from(clock.now().as_nanosecond()).unwrap_or(i64::MAX)
}

fn ts_from_ns(ns: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_nanosecond(i128::from(ns)).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

use crate::backends::common::new_id;

fn journal_failed(op: &'static str, e: journal::Error) -> RuntimeError {
    RuntimeError::new(op, Code::Internal, format!("{e}: {}", source_text(&e)))
}

fn source_text(e: &dyn std::error::Error) -> String {
    e.source().map(|s| s.to_string()).unwrap_or_default()
}

impl SimRuntime {
    /// Opens (or creates) the runtime state under `state_dir` and resumes what was running.
    pub fn new(cfg: SimConfig, clock: Clock, state_dir: PathBuf) -> Result<Arc<SimRuntime>, Error> {
        let (journal, loaded) = Journal::open(&state_dir)?;
        // ImageFsInfo and the container stats name these as mountpoints; a CRI client (the
        // kubelet's image GC and eviction) stats them, so they must exist.
        for dir in [IMAGES_MOUNT_DIR, stats::LAYER_MOUNT_DIR] {
            if let Err(e) = std::fs::create_dir_all(state_dir.join(dir)) {
                tracing::warn!(error = %e, dir, "sim: cannot create a filesystem mountpoint");
            }
        }
        let alive_until = std::fs::read_to_string(state_dir.join(HEARTBEAT_FILE))
            .ok()
            .and_then(|t| t.trim().parse().ok());
        if loaded.skipped > 0 {
            tracing::warn!(skipped = loaded.skipped, "sim: skipped undecodable journal lines");
        }
        let mut st = State::new(journal);
        st.removed_images = loaded.removed_images.clone();
        for name in &cfg.images {
            let rec = ImageRecord::of(&images::normalize(name)?);
            if !loaded.removed_images.contains(&rec.id) {
                st.images.insert(rec);
            }
        }
        for rec in loaded.images.into_values() {
            st.images.insert(rec);
        }
        for rec in loaded.sandboxes.into_values() {
            st.insert_sandbox(rec);
        }
        let mut running = Vec::new();
        for rec in loaded.containers.into_values() {
            if rec.state == RUNNING {
                running.push(rec.id.clone());
            }
            st.insert_container(rec);
        }
        if !running.is_empty() && tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoTokioRuntime {
                what: "resuming running containers",
            });
        }
        let rt = Arc::new_cyclic(|me| SimRuntime {
            me: me.clone(),
            clock,
            state_dir,
            alive_until,
            config: RwLock::new(Arc::new(cfg)),
            state: Mutex::new(st),
            events: Default::default(),
        });
        for id in running {
            rt.resume(&id);
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(heartbeat(Arc::downgrade(&rt)));
        }
        Ok(rt)
    }

    /// Like [`SimRuntime::new`] with the config read from `path`, re-read whenever its mtime
    /// changes (checked once per real second) so tests can break and heal the runtime.
    pub fn with_config_file(path: &Path, clock: Clock, state_dir: PathBuf) -> Result<Arc<SimRuntime>, Error> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| Error::NoTokioRuntime {
            what: "watching the config file",
        })?;
        let cfg = SimConfig::load(path)?;
        let mtime = mtime(path);
        let rt = Self::new(cfg, clock, state_dir)?;
        handle.spawn(watch_config(Arc::downgrade(&rt), path.to_path_buf(), mtime));
        Ok(rt)
    }

    /// The config in force.
    pub fn config(&self) -> Arc<SimConfig> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the config (what a config-file change does): health flags take effect at once,
    /// newly listed images become present.
    pub fn set_config(&self, cfg: SimConfig) {
        {
            let mut st = self.lock();
            for name in &cfg.images {
                match images::normalize(name) {
                    Ok(r) => {
                        if st.images.lookup(&r.name()).is_none() {
                            st.images.insert(ImageRecord::of(&r));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "sim: ignoring configured image"),
                }
            }
        }
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(cfg);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The config, or Unavailable when the config says the runtime is gone.
    fn available(&self, op: &'static str) -> RtResult<Arc<SimConfig>> {
        let cfg = self.config();
        if cfg.unavailable {
            return Err(RuntimeError::new(
                op,
                Code::Unavailable,
                "connection error: desc = \"transport: Error while dialing: dial unix sim.sock: connect: connection refused\"",
            ));
        }
        Ok(cfg)
    }

    /// The state a container is reported in.
    fn shown_state(cfg: &SimConfig, rec: &ContainerRecord) -> i32 {
        if rec.state == RUNNING && cfg.unknown_containers.iter().any(|p| config::glob_match(p, rec.name())) {
            UNKNOWN
        } else {
            rec.state
        }
    }

    fn container_id(st: &State, op: &'static str, id: &str) -> RtResult<String> {
        match state::resolve(&st.containers, id) {
            Resolved::Found(id) => Ok(id),
            Resolved::NotFound => Err(RuntimeError::not_found(
                op,
                format!("an error occurred when try to find container {id:?}: not found"),
            )),
            Resolved::Ambiguous => Err(RuntimeError::new(
                op,
                Code::Unknown,
                format!("an error occurred when try to find container {id:?}: ambiguous ID prefix"),
            )),
        }
    }

    fn sandbox_id(st: &State, op: &'static str, id: &str) -> RtResult<String> {
        match state::resolve(&st.sandboxes, id) {
            Resolved::Found(id) => Ok(id),
            Resolved::NotFound => Err(RuntimeError::not_found(
                op,
                format!("an error occurred when try to find sandbox {id:?}: not found"),
            )),
            Resolved::Ambiguous => Err(RuntimeError::new(
                op,
                Code::Unknown,
                format!("an error occurred when try to find sandbox {id:?}: ambiguous ID prefix"),
            )),
        }
    }

    /// The environment a container's process sees.
    fn environment(rec: &ContainerRecord) -> Vec<(String, String)> {
        let hostname = if rec.hostname.is_empty() {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default()
        } else {
            rec.hostname.clone()
        };
        let mut env = vec![
            ("PATH".to_string(), IMAGE_PATH.to_string()),
            ("HOSTNAME".to_string(), hostname),
        ];
        env.extend(rec.config.envs.iter().map(|kv| (kv.key.clone(), kv.value.clone())));
        env
    }

    fn launch(&self, rec: &ContainerRecord, elapsed: Duration, last_logged: Option<jiff::Timestamp>) -> Launch {
        Launch {
            program: Arc::new(runner::program(&rec.argv())),
            env: Arc::new(Self::environment(rec)),
            started: ts_from_ns(rec.started_at),
            elapsed,
            log_path: (!rec.log_path.is_empty()).then(|| PathBuf::from(&rec.log_path)),
            last_logged,
            alive_until: self.alive_until,
            vfs: Arc::new(Mutex::new(vfs::Vfs::new(&rec.config.mounts))),
            clock: self.clock,
            stdin: rec.config.stdin,
        }
    }

    /// Starts a prepared runner (its handle already published, so StopContainer can always
    /// reach a RUNNING container); the exit is recorded when it comes.
    fn run(&self, id: &str, runner: runner::Runner) {
        let me = self.me.clone();
        let id = id.to_string();
        runner.start(move |exit| {
            if let Some(rt) = me.upgrade() {
                rt.record_exit(&id, exit);
            }
        });
    }

    /// Continues a container that was RUNNING when the journal was written.
    fn resume(&self, id: &str) {
        let rec = match self.lock().containers.get(id) {
            Some(c) => c.rec.clone(),
            None => return,
        };
        let elapsed = self.clock.virtual_between(ts_from_ns(rec.started_at), self.clock.now());
        let last_logged = (!rec.log_path.is_empty())
            .then(|| logs::last_timestamp(Path::new(&rec.log_path)))
            .flatten();
        let (handle, runner) = runner::prepare(self.launch(&rec, elapsed, last_logged));
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.run = Some(handle);
        }
        self.run(id, runner);
    }

    /// Tells `GetContainerEvents` subscribers (none: nothing to do) what happened to a container.
    fn emit(&self, id: &str, kind: cri::ContainerEventType) {
        self.events.emit(id, kind, now_ns(&self.clock));
    }

    fn record_exit(&self, id: &str, exit: Exit) {
        let mut st = self.lock();
        let Some(c) = st.containers.get_mut(id) else { return };
        if c.rec.state != RUNNING {
            return;
        }
        c.rec.state = EXITED;
        c.rec.exit_code = exit.code;
        c.rec.reason = exit.reason.to_string();
        c.rec.finished_at = i64::try_from(exit.finished_at.as_nanosecond()).unwrap_or(i64::MAX);
        let rec = Record::Container(Box::new(c.rec.clone()));
        if let Err(e) = st.record(&rec) {
            tracing::warn!(container = id, error = %e, "sim: journaling a container exit failed");
        }
        drop(st);
        self.emit(id, cri::ContainerEventType::ContainerStoppedEvent);
    }

    /// Signals a running container and waits until its exit is recorded.
    async fn stop(&self, id: &str, grace: Option<Duration>) {
        let handle = {
            let st = self.lock();
            match st.containers.get(id) {
                Some(c) if c.rec.state == RUNNING => c.run.clone(),
                _ => None,
            }
        };
        let Some(mut handle) = handle else { return };
        let sig = match grace {
            Some(g) if !g.is_zero() => Signal::Term { grace: g },
            _ => Signal::Kill,
        };
        // A closed channel means the runner already finished.
        let _ = handle.signals.send(sig).await;
        let _ = handle.exited.wait_for(|done| *done).await;
    }

    fn stop_sandbox_state(&self, op: &'static str, id: &str) -> RtResult<Vec<String>> {
        let mut st = self.lock();
        let sb = st.sandboxes.get_mut(id).ok_or_else(|| {
            RuntimeError::not_found(
                op,
                format!("an error occurred when try to find sandbox {id:?}: not found"),
            )
        })?;
        let containers: Vec<String> = sb.containers.iter().cloned().collect();
        if sb.rec.state == SANDBOX_READY {
            let mut rec = sb.rec.clone();
            let ip = std::mem::take(&mut rec.ip);
            rec.state = SANDBOX_NOTREADY;
            st.record(&Record::Sandbox(Box::new(rec.clone())))
                .map_err(|e| journal_failed(op, e))?;
            if !ip.is_empty() {
                st.ips.release(&ip);
            }
            if let Some(sb) = st.sandboxes.get_mut(id) {
                sb.rec = rec;
            }
        }
        Ok(containers)
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

async fn heartbeat(rt: Weak<SimRuntime>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    const FAILED: &str = "sim: writing the heartbeat failed";
    let mut failing = false;
    loop {
        tick.tick().await;
        let Some(rt) = rt.upgrade() else { return };
        // Write-then-rename: a kill mid-write must not leave a torn timestamp.
        let tmp = rt.state_dir.join(format!("{HEARTBEAT_FILE}.tmp"));
        let res = std::fs::write(&tmp, rt.clock.now().to_string())
            .and_then(|()| std::fs::rename(&tmp, rt.state_dir.join(HEARTBEAT_FILE)));
        let dir = rt.state_dir.to_string_lossy();
        match res {
            Ok(()) => {
                if std::mem::take(&mut failing) {
                    crate::repeats::global().forget(FAILED, &dir);
                }
            }
            Err(e) => {
                failing = true;
                match crate::repeats::global().note(FAILED, &dir) {
                    crate::repeats::Verdict::Log { count } => tracing::warn!(%dir, error = %e, count, "{FAILED}"),
                    crate::repeats::Verdict::Repeat { count } => tracing::debug!(%dir, error = %e, count, "{FAILED}"),
                }
            }
        }
    }
}

async fn watch_config(rt: Weak<SimRuntime>, path: PathBuf, mut seen: Option<SystemTime>) {
    let mut tick = tokio::time::interval(CONFIG_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(rt) = rt.upgrade() else { return };
        let now = mtime(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match SimConfig::load(&path) {
            Ok(cfg) => {
                tracing::info!(path = %path.display(), "sim: config reloaded");
                rt.set_config(cfg);
            }
            Err(e) => tracing::warn!(error = %e, cause = %source_text(&e), "sim: keeping the previous config"),
        }
    }
}

#[async_trait]
impl RuntimeService for SimRuntime {
    /// Container events as they happen (see [`crate::backends::common::EventHub`]).
    async fn get_container_events(&self, _req: cri::GetEventsRequest) -> RtResult<ContainerEventStream> {
        Ok(self.events.subscribe())
    }

    async fn version(&self, _req: cri::VersionRequest) -> RtResult<cri::VersionResponse> {
        self.available("Version")?;
        Ok(cri::VersionResponse {
            version: KUBE_API_VERSION.to_string(),
            runtime_name: RUNTIME_NAME.to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
            runtime_api_version: RUNTIME_API_VERSION.to_string(),
        })
    }

    async fn status(&self, _req: cri::StatusRequest) -> RtResult<cri::StatusResponse> {
        let cfg = self.available("Status")?;
        let cond = |t: &str, ok: bool, reason: &str, message: &str| cri::RuntimeCondition {
            r#type: t.to_string(),
            status: ok,
            reason: if ok { String::new() } else { reason.to_string() },
            message: if ok { String::new() } else { message.to_string() },
        };
        let rt_reason = if cfg.runtime_ready_reason.is_empty() {
            "RuntimeNotReady"
        } else {
            &cfg.runtime_ready_reason
        };
        let net_reason = if cfg.network_ready_reason.is_empty() {
            "NetworkPluginNotReady"
        } else {
            &cfg.network_ready_reason
        };
        let net_message = if cfg.network_ready_message.is_empty() {
            "Network plugin returns error: cni plugin not initialized"
        } else {
            &cfg.network_ready_message
        };
        Ok(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![
                    cond("RuntimeReady", cfg.runtime_ready, rt_reason, &cfg.runtime_ready_message),
                    cond("NetworkReady", cfg.network_ready, net_reason, net_message),
                ],
            }),
            ..Default::default()
        })
    }

    async fn run_pod_sandbox(&self, req: cri::RunPodSandboxRequest) -> RtResult<cri::RunPodSandboxResponse> {
        const OP: &str = "RunPodSandbox";
        let cfg = self.available(OP)?;
        let config = req
            .config
            .ok_or_else(|| RuntimeError::new(OP, Code::InvalidArgument, "sandbox config is required"))?;
        if config.metadata.is_none() {
            return Err(RuntimeError::new(
                OP,
                Code::InvalidArgument,
                "sandbox config must include metadata",
            ));
        }
        let mut st = self.lock();
        let mut id = new_id();
        while st.sandboxes.contains_key(&id) {
            id = new_id();
        }
        let mut rec = SandboxRecord {
            id: id.clone(),
            config,
            runtime_handler: req.runtime_handler,
            state: SANDBOX_READY,
            created_at: now_ns(&self.clock),
            ip: String::new(),
        };
        let name = rec.name();
        if let Some(owner) = st.sandbox_name_owner(&name) {
            return Err(RuntimeError::new(
                OP,
                Code::AlreadyExists,
                format!("failed to reserve sandbox name {name:?}: name {name:?} is reserved for {owner:?}"),
            ));
        }
        if !rec.host_network() {
            if !cfg.network_ready {
                return Err(RuntimeError::new(
                    OP,
                    Code::Unknown,
                    format!("failed to setup network for sandbox {id:?}: cni plugin not initialized"),
                ));
            }
            rec.ip = st.ips.allocate().ok_or_else(|| {
                RuntimeError::new(
                    OP,
                    Code::ResourceExhausted,
                    format!(
                        "failed to setup network for sandbox {id:?}: plugin type=\"bridge\" failed (add): failed to \
                         allocate for range 0: no IP addresses available in range set: 10.88.0.1-10.88.255.254"
                    ),
                )
            })?;
        }
        if let Err(e) = st.record(&Record::Sandbox(Box::new(rec.clone()))) {
            let ip = rec.ip.clone();
            st.ips.release(&ip);
            return Err(journal_failed(OP, e));
        }
        st.insert_sandbox(rec);
        drop(st);
        // As containerd 1.7+: the sandbox is reported like a container.
        self.emit(&id, cri::ContainerEventType::ContainerStartedEvent);
        Ok(cri::RunPodSandboxResponse { pod_sandbox_id: id })
    }

    async fn stop_pod_sandbox(&self, req: cri::StopPodSandboxRequest) -> RtResult<cri::StopPodSandboxResponse> {
        const OP: &str = "StopPodSandbox";
        self.available(OP)?;
        let id = Self::sandbox_id(&self.lock(), OP, &req.pod_sandbox_id)?;
        let containers = self.stop_sandbox_state(OP, &id)?;
        // containerd stops every container of the sandbox with timeout 0 (SIGKILL).
        futures::future::join_all(containers.iter().map(|c| self.stop(c, None))).await;
        self.emit(&id, cri::ContainerEventType::ContainerStoppedEvent);
        Ok(cri::StopPodSandboxResponse {})
    }

    async fn remove_pod_sandbox(&self, req: cri::RemovePodSandboxRequest) -> RtResult<cri::RemovePodSandboxResponse> {
        const OP: &str = "RemovePodSandbox";
        self.available(OP)?;
        let id = match state::resolve(&self.lock().sandboxes, &req.pod_sandbox_id) {
            Resolved::Found(id) => id,
            // containerd: removing a sandbox that does not exist succeeds.
            _ => return Ok(cri::RemovePodSandboxResponse {}),
        };
        // containerd 1.6 force-stops a sandbox that is still ready.
        let containers = self.stop_sandbox_state(OP, &id)?;
        futures::future::join_all(containers.iter().map(|c| self.stop(c, None))).await;
        let mut st = self.lock();
        for c in &containers {
            if st.containers.contains_key(c) {
                st.record(&Record::ContainerRemoved { id: c.clone() })
                    .map_err(|e| journal_failed(OP, e))?;
                st.remove_container(c);
            }
        }
        // Containers created concurrently after the list was taken go too.
        let late: Vec<String> = st
            .sandboxes
            .get(&id)
            .map(|s| s.containers.iter().cloned().collect())
            .unwrap_or_default();
        for c in late {
            st.record(&Record::ContainerRemoved { id: c.clone() })
                .map_err(|e| journal_failed(OP, e))?;
            st.remove_container(&c);
        }
        st.record(&Record::SandboxRemoved { id: id.clone() })
            .map_err(|e| journal_failed(OP, e))?;
        st.remove_sandbox(&id);
        drop(st);
        self.emit(&id, cri::ContainerEventType::ContainerDeletedEvent);
        Ok(cri::RemovePodSandboxResponse {})
    }

    async fn pod_sandbox_status(&self, req: cri::PodSandboxStatusRequest) -> RtResult<cri::PodSandboxStatusResponse> {
        const OP: &str = "PodSandboxStatus";
        self.available(OP)?;
        let st = self.lock();
        let id = Self::sandbox_id(&st, OP, &req.pod_sandbox_id)?;
        let status = st.sandboxes.get(&id).map(|s| s.rec.to_status());
        Ok(cri::PodSandboxStatusResponse {
            status,
            timestamp: now_ns(&self.clock),
            ..Default::default()
        })
    }

    async fn list_pod_sandbox(&self, req: cri::ListPodSandboxRequest) -> RtResult<cri::ListPodSandboxResponse> {
        self.available("ListPodSandbox")?;
        let items = self.lock().list_sandboxes(req.filter.as_ref());
        Ok(cri::ListPodSandboxResponse { items })
    }

    async fn create_container(&self, req: cri::CreateContainerRequest) -> RtResult<cri::CreateContainerResponse> {
        const OP: &str = "CreateContainer";
        self.available(OP)?;
        let config = req
            .config
            .ok_or_else(|| RuntimeError::new(OP, Code::InvalidArgument, "container config is required"))?;
        if config.metadata.is_none() {
            return Err(RuntimeError::new(
                OP,
                Code::InvalidArgument,
                "container config must include metadata",
            ));
        }
        let image_name = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        if image_name.is_empty() {
            return Err(RuntimeError::new(
                OP,
                Code::InvalidArgument,
                "container config must include an image",
            ));
        }
        let mut st = self.lock();
        let sandbox_id = match state::resolve(&st.sandboxes, &req.pod_sandbox_id) {
            Resolved::Found(id) => id,
            _ => {
                return Err(RuntimeError::not_found(
                    OP,
                    format!("failed to find sandbox id {:?}: not found", req.pod_sandbox_id),
                ))
            }
        };
        let Some(sandbox) = st.sandboxes.get(&sandbox_id).map(|s| s.rec.clone()) else {
            return Err(RuntimeError::not_found(
                OP,
                format!("failed to find sandbox id {sandbox_id:?}: not found"),
            ));
        };
        if sandbox.state != SANDBOX_READY {
            return Err(RuntimeError::not_found(
                OP,
                format!("failed to get sandbox container task: no running task found: task {sandbox_id} not found: not found"),
            ));
        }
        let Some(image) = st.images.lookup(&image_name).cloned() else {
            return Err(RuntimeError::not_found(
                OP,
                format!("failed to resolve image {image_name:?}: not found"),
            ));
        };
        let name = State::container_name(&sandbox, &config);
        if let Some(owner) = st.container_name_owner(&name) {
            return Err(RuntimeError::new(
                OP,
                Code::AlreadyExists,
                format!("failed to reserve container name {name:?}: name {name:?} is reserved for {owner:?}"),
            ));
        }
        let log_dir = req
            .sandbox_config
            .as_ref()
            .map(|c| c.log_directory.clone())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| sandbox.config.log_directory.clone());
        let log_path = if log_dir.is_empty() || config.log_path.is_empty() {
            String::new()
        } else {
            Path::new(&log_dir)
                .join(&config.log_path)
                .to_string_lossy()
                .into_owned()
        };
        let mut id = new_id();
        while st.containers.contains_key(&id) {
            id = new_id();
        }
        let rec = ContainerRecord {
            id: id.clone(),
            sandbox_id,
            status_image: image.repo_tags.first().cloned().unwrap_or_else(|| image_name.clone()),
            status_image_ref: image.repo_digests.first().cloned().unwrap_or_else(|| image.id.clone()),
            image_id: image.id,
            config,
            log_path,
            hostname: sandbox.config.hostname.clone(),
            state: CREATED,
            created_at: now_ns(&self.clock),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
        };
        st.record(&Record::Container(Box::new(rec.clone())))
            .map_err(|e| journal_failed(OP, e))?;
        st.insert_container(rec);
        drop(st);
        self.emit(&id, cri::ContainerEventType::ContainerCreatedEvent);
        Ok(cri::CreateContainerResponse { container_id: id })
    }

    async fn start_container(&self, req: cri::StartContainerRequest) -> RtResult<cri::StartContainerResponse> {
        const OP: &str = "StartContainer";
        let cfg = self.available(OP)?;
        let (id, rec, runner) = {
            let mut st = self.lock();
            let id = Self::container_id(&st, OP, &req.container_id)?;
            let Some(c) = st.containers.get(&id) else {
                return Err(RuntimeError::not_found(OP, format!("container {id:?} not found")));
            };
            if c.rec.state != CREATED {
                return Err(RuntimeError::new(
                    OP,
                    Code::Unknown,
                    format!(
                        "failed to set starting state for container {id:?}: container is in {} state",
                        state::state_name(c.rec.state)
                    ),
                ));
            }
            let mut rec = c.rec.clone();
            let sandbox_ready = st
                .sandboxes
                .get(&rec.sandbox_id)
                .is_some_and(|s| s.rec.state == SANDBOX_READY);
            let argv0 = rec.argv().first().cloned().unwrap_or_default();
            let failure = if !sandbox_ready {
                Some(format!("sandbox container {:?} is not running", rec.sandbox_id))
            } else if !argv0.is_empty() && cfg.start_failures.iter().any(|p| config::glob_match(p, &argv0)) {
                Some(format!(
                    "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc \
                     create failed: unable to start container process: exec: {argv0:?}: stat {argv0}: no such file \
                     or directory: unknown"
                ))
            } else {
                None
            };
            let now = now_ns(&self.clock);
            match &failure {
                // As containerd: never started (startedAt 0), exited with 128/StartError.
                Some(msg) => {
                    rec.state = EXITED;
                    rec.finished_at = now;
                    rec.exit_code = START_ERROR_CODE;
                    rec.reason = START_ERROR_REASON.to_string();
                    rec.message = msg.clone();
                }
                None => {
                    rec.state = RUNNING;
                    rec.started_at = now;
                }
            }
            st.record(&Record::Container(Box::new(rec.clone())))
                .map_err(|e| journal_failed(OP, e))?;
            if let Some(c) = st.containers.get_mut(&id) {
                c.rec = rec.clone();
            }
            if let Some(msg) = failure {
                drop(st);
                self.emit(&id, cri::ContainerEventType::ContainerStoppedEvent);
                return Err(RuntimeError::new(OP, Code::Unknown, msg));
            }
            // The handle is published under the same lock that marks the container RUNNING.
            let (handle, runner) = runner::prepare(self.launch(&rec, Duration::ZERO, None));
            if let Some(c) = st.containers.get_mut(&id) {
                c.run = Some(handle);
            }
            (id, rec, runner)
        };
        if !rec.log_path.is_empty() {
            // containerd opens the log file at start, so it exists even before any output.
            if let Err(e) = logs::ensure(Path::new(&rec.log_path)) {
                tracing::warn!(path = %rec.log_path, error = %e, "sim: creating container log failed");
            }
        }
        // Started before the runner can report an exit: subscribers see events in order.
        self.emit(&id, cri::ContainerEventType::ContainerStartedEvent);
        self.run(&id, runner);
        Ok(cri::StartContainerResponse {})
    }

    async fn stop_container(&self, req: cri::StopContainerRequest) -> RtResult<cri::StopContainerResponse> {
        const OP: &str = "StopContainer";
        self.available(OP)?;
        let id = Self::container_id(&self.lock(), OP, &req.container_id)?;
        let grace = Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0));
        self.stop(&id, Some(grace)).await;
        Ok(cri::StopContainerResponse {})
    }

    async fn remove_container(&self, req: cri::RemoveContainerRequest) -> RtResult<cri::RemoveContainerResponse> {
        const OP: &str = "RemoveContainer";
        self.available(OP)?;
        let id = match state::resolve(&self.lock().containers, &req.container_id) {
            Resolved::Found(id) => id,
            // containerd: removing a container that does not exist succeeds.
            _ => return Ok(cri::RemoveContainerResponse {}),
        };
        // containerd 1.6 force-stops (SIGKILL) a running container before removing it.
        self.stop(&id, None).await;
        let mut st = self.lock();
        if st.containers.contains_key(&id) {
            st.record(&Record::ContainerRemoved { id: id.clone() })
                .map_err(|e| journal_failed(OP, e))?;
            st.remove_container(&id);
            drop(st);
            self.emit(&id, cri::ContainerEventType::ContainerDeletedEvent);
        }
        Ok(cri::RemoveContainerResponse {})
    }

    async fn list_containers(&self, req: cri::ListContainersRequest) -> RtResult<cri::ListContainersResponse> {
        let cfg = self.available("ListContainers")?;
        let containers = self
            .lock()
            .list_containers(req.filter.as_ref(), |rec| Self::shown_state(&cfg, rec));
        Ok(cri::ListContainersResponse { containers })
    }

    async fn container_status(&self, req: cri::ContainerStatusRequest) -> RtResult<cri::ContainerStatusResponse> {
        const OP: &str = "ContainerStatus";
        let cfg = self.available(OP)?;
        let st = self.lock();
        let id = Self::container_id(&st, OP, &req.container_id)?;
        let status = st
            .containers
            .get(&id)
            .map(|c| c.rec.to_status(Self::shown_state(&cfg, &c.rec)));
        Ok(cri::ContainerStatusResponse {
            status,
            ..Default::default()
        })
    }

    async fn exec_sync(&self, req: cri::ExecSyncRequest) -> RtResult<cri::ExecSyncResponse> {
        const OP: &str = "ExecSync";
        self.available(OP)?;
        if req.cmd.is_empty() {
            return Err(RuntimeError::new(OP, Code::InvalidArgument, "cmd is required"));
        }
        let handle: RunHandle = {
            let st = self.lock();
            let id = Self::container_id(&st, OP, &req.container_id)?;
            let c = st
                .containers
                .get(&id)
                .ok_or_else(|| RuntimeError::not_found(OP, format!("container {id:?} not found")))?;
            match (&c.run, c.rec.state) {
                (Some(h), RUNNING) => h.clone(),
                (_, s) => {
                    return Err(RuntimeError::new(
                        OP,
                        Code::Unknown,
                        format!("container is in {} state", state::state_name(s)),
                    ))
                }
            }
        };
        let node = runner::program(&req.cmd);
        let host = runner::ExecHost::new(self.clock, handle.vfs.clone());
        let mut exited = handle.exited.clone();
        let work = async {
            match runner::exec(&node, &handle.env, host).await {
                (Some(code), out, err) => Ok((code, out, err)),
                // Runs until the container goes away, like a real exec of `sleep infinity`.
                (None, _, _) => {
                    let _ = exited.wait_for(|d| *d).await;
                    Err(RuntimeError::new(
                        OP,
                        Code::Unknown,
                        "container exited while the exec was running",
                    ))
                }
            }
        };
        let result = if req.timeout > 0 {
            let limit = self
                .clock
                .to_real(Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0)));
            match tokio::time::timeout(limit, work).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(RuntimeError::new(
                        OP,
                        Code::DeadlineExceeded,
                        format!(
                            "failed to exec in container: timeout {}s exceeded: context deadline exceeded",
                            req.timeout
                        ),
                    ))
                }
            }
        } else {
            work.await
        };
        let (exit_code, stdout, stderr) = result?;
        Ok(cri::ExecSyncResponse {
            stdout,
            stderr,
            exit_code,
        })
    }

    async fn reopen_container_log(
        &self,
        req: cri::ReopenContainerLogRequest,
    ) -> RtResult<cri::ReopenContainerLogResponse> {
        const OP: &str = "ReopenContainerLog";
        self.available(OP)?;
        let path = {
            let st = self.lock();
            let id = Self::container_id(&st, OP, &req.container_id)?;
            match st.containers.get(&id) {
                Some(c) if c.rec.state == RUNNING => c.rec.log_path.clone(),
                _ => return Err(RuntimeError::new(OP, Code::Unknown, "container is not running")),
            }
        };
        // Writes open the path each time (no descriptor per container at this scale), so
        // reopening amounts to creating the file again at its path.
        if !path.is_empty() {
            logs::ensure(Path::new(&path)).map_err(|e| {
                RuntimeError::new(OP, Code::Unknown, format!("failed to create and open log file: {e}"))
            })?;
        }
        Ok(cri::ReopenContainerLogResponse {})
    }

    // The simulated runtime has no streaming server: the kubelet server serves its streams in
    // process (`local_streams`, see `streams.rs`).
    async fn exec(&self, _: cri::ExecRequest) -> RtResult<cri::ExecResponse> {
        Err(no_streaming_url("Exec"))
    }

    async fn attach(&self, _: cri::AttachRequest) -> RtResult<cri::AttachResponse> {
        Err(no_streaming_url("Attach"))
    }

    async fn port_forward(&self, _: cri::PortForwardRequest) -> RtResult<cri::PortForwardResponse> {
        Err(no_streaming_url("PortForward"))
    }

    fn local_streams(&self) -> Option<Arc<dyn LocalStreams>> {
        self.me.upgrade().map(|rt| rt as Arc<dyn LocalStreams>)
    }

    async fn list_container_stats(
        &self,
        req: cri::ListContainerStatsRequest,
    ) -> RtResult<cri::ListContainerStatsResponse> {
        self.available("ListContainerStats")?;
        let now = now_ns(&self.clock);
        let mount = self
            .state_dir
            .join(stats::LAYER_MOUNT_DIR)
            .to_string_lossy()
            .into_owned();
        let st = self.lock();
        Ok(cri::ListContainerStatsResponse {
            stats: stats::list_container_stats(&st, req.filter.as_ref(), &self.clock, now, &mount),
        })
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: cri::ListPodSandboxStatsRequest,
    ) -> RtResult<cri::ListPodSandboxStatsResponse> {
        self.available("ListPodSandboxStats")?;
        let now = now_ns(&self.clock);
        let mount = self
            .state_dir
            .join(stats::LAYER_MOUNT_DIR)
            .to_string_lossy()
            .into_owned();
        let st = self.lock();
        Ok(cri::ListPodSandboxStatsResponse {
            stats: stats::list_pod_sandbox_stats(&st, req.filter.as_ref(), &self.clock, now, &mount),
        })
    }
}

#[async_trait]
impl ImageService for SimRuntime {
    async fn list_images(&self, req: cri::ListImagesRequest) -> RtResult<cri::ListImagesResponse> {
        self.available("ListImages")?;
        let st = self.lock();
        let wanted = req
            .filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .filter(|i| !i.is_empty());
        let images = match wanted {
            Some(name) => st.images.lookup(&name).map(|r| r.to_cri()).into_iter().collect(),
            None => st.images.iter().map(ImageRecord::to_cri).collect(),
        };
        Ok(cri::ListImagesResponse { images })
    }

    async fn image_status(&self, req: cri::ImageStatusRequest) -> RtResult<cri::ImageStatusResponse> {
        self.available("ImageStatus")?;
        let name = req.image.map(|i| i.image).unwrap_or_default();
        let image = self.lock().images.lookup(&name).map(ImageRecord::to_cri);
        Ok(cri::ImageStatusResponse {
            image,
            ..Default::default()
        })
    }

    async fn pull_image(&self, req: cri::PullImageRequest) -> RtResult<cri::PullImageResponse> {
        self.pull_image_with_progress(req, Arc::default()).await
    }

    async fn pull_image_with_progress(
        &self,
        req: cri::PullImageRequest,
        progress: Arc<PullProgress>,
    ) -> RtResult<cri::PullImageResponse> {
        const OP: &str = "PullImage";
        let cfg = self.available(OP)?;
        let requested = req.image.map(|i| i.image).unwrap_or_default();
        let reference = images::normalize(&requested).map_err(|e| {
            RuntimeError::new(
                OP,
                Code::InvalidArgument,
                format!("failed to pull and unpack image {requested:?}: {e}"),
            )
        })?;
        if let Some((not_found, message)) = images::pull_failure(&cfg, &requested, &reference) {
            let code = if not_found { Code::NotFound } else { Code::Unknown };
            return Err(RuntimeError::new(OP, code, message));
        }
        // containerd contacts the registry even for a present image, so latency always applies;
        // only an absent one has bytes to fetch.
        let rec = ImageRecord::of(&reference);
        let present = self.lock().images.lookup(&rec.id).is_some();
        let bytes = if present { 0 } else { rec.size };
        images::simulate_download(&self.clock, cfg.pull_latency(), bytes, &progress).await;
        let mut st = self.lock();
        st.record(&Record::Image(rec.clone()))
            .map_err(|e| journal_failed(OP, e))?;
        let image_ref = rec.id.clone();
        st.images.insert(rec);
        Ok(cri::PullImageResponse { image_ref })
    }

    async fn remove_image(&self, req: cri::RemoveImageRequest) -> RtResult<cri::RemoveImageResponse> {
        const OP: &str = "RemoveImage";
        self.available(OP)?;
        let name = req.image.map(|i| i.image).unwrap_or_default();
        let mut st = self.lock();
        // containerd: removing an absent image succeeds.
        let Some(id) = st.images.lookup(&name).map(|r| r.id.clone()) else {
            return Ok(cri::RemoveImageResponse {});
        };
        st.record(&Record::ImageRemoved { id: id.clone() })
            .map_err(|e| journal_failed(OP, e))?;
        st.images.remove_id(&id);
        Ok(cri::RemoveImageResponse {})
    }

    async fn image_fs_info(&self, _req: cri::ImageFsInfoRequest) -> RtResult<cri::ImageFsInfoResponse> {
        self.available("ImageFsInfo")?;
        let st = self.lock();
        Ok(cri::ImageFsInfoResponse {
            image_filesystems: vec![cri::FilesystemUsage {
                timestamp: now_ns(&self.clock),
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: self.state_dir.join(IMAGES_MOUNT_DIR).to_string_lossy().into_owned(),
                }),
                used_bytes: Some(cri::UInt64Value {
                    value: st.images.total_size(),
                }),
                inodes_used: Some(cri::UInt64Value {
                    value: st.images.len() as u64,
                }),
            }],
            container_filesystems: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests;
