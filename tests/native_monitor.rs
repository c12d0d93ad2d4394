//! The native backend's per-container monitor (`keel monitor`) against real runc: a busybox
//! bundle per test, the monitor spawned through keel's client API, `runc start` as keel does it.
//! Needs root, runc and busybox-static (scripts/containerd-env.sh installs them); without them
//! each test prints why it is skipped. Every test removes its container, cgroups, monitor and
//! files.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel::backends::native::monitor::{self, ExitRecord, MonitorError, MonitorSpec};
use keel::genericruntime::streams::{ProcessIo, TermSize};
use tokio::sync::mpsc;

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn runc() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join("runc"))
        .find(|p| p.exists())
}

/// Why the real-runc tests cannot run here, if they cannot.
fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (runc creates namespaces and cgroups)");
    }
    if runc().is_none() {
        return Some("runc is not installed");
    }
    if busybox().is_none() {
        return Some("busybox-static is not installed");
    }
    None
}

macro_rules! require_runc {
    () => {
        if let Some(reason) = skip_reason() {
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

#[derive(Default)]
struct Opts {
    args: Vec<String>,
    tty: bool,
    stdin: bool,
    stdin_once: bool,
    memory_limit: Option<u64>,
}

fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

/// One container: its bundle, state and run dirs in a temp dir, its cgroup under a parent of
/// its own. Dropping it deletes the container, kills its monitor and removes the cgroups.
struct Ctr {
    _dir: tempfile::TempDir,
    spec: MonitorSpec,
    cgroup_parent: String,
    monitor_pid: Option<i32>,
}

impl Ctr {
    fn new(opts: Opts) -> Ctr {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        // Short: the sockets must stay under 108 bytes.
        let dir = tempfile::Builder::new().prefix("kmon").tempdir_in("/tmp").unwrap();
        let id = format!("keelmon-{}-{n}", std::process::id());
        let cgroup_parent = format!("keelmon-test-{}-{n}", std::process::id());
        let bundle = dir.path().join("bundle");
        build_rootfs(&bundle.join("rootfs"));
        let mut resources = serde_json::json!({});
        if let Some(limit) = opts.memory_limit {
            resources["memory"] = serde_json::json!({ "limit": limit });
        }
        let caps = [
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_NET_RAW",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE",
        ];
        let config = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": opts.tty,
                "user": { "uid": 0, "gid": 0 },
                "args": opts.args,
                "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
                "cwd": "/",
                "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
                "noNewPrivileges": true
            },
            "root": { "path": "rootfs" },
            "hostname": "keelmon",
            "mounts": [
                { "destination": "/proc", "type": "proc", "source": "proc" },
                { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                  "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
                { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                  "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
                { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                  "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
                { "destination": "/sys", "type": "sysfs", "source": "sysfs",
                  "options": ["nosuid", "noexec", "nodev", "ro"] }
            ],
            "linux": {
                "namespaces": [
                    { "type": "pid" }, { "type": "ipc" }, { "type": "uts" },
                    { "type": "mount" }, { "type": "network" }
                ],
                "cgroupsPath": format!("/{cgroup_parent}/{id}"),
                "resources": resources,
                "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
            }
        });
        std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(&state_dir).unwrap();
        let memory = Path::new("/sys/fs/cgroup/memory").join(&cgroup_parent).join(&id);
        let spec = MonitorSpec {
            id,
            bundle,
            runc: runc().unwrap(),
            runc_root: dir.path().join("runc"),
            state_dir,
            socket: dir.path().join("mon").join("c.sock"),
            log_path: Some(dir.path().join("logs/ns_pod_uid/c/0.log")),
            tty: opts.tty,
            stdin: opts.stdin,
            stdin_once: opts.stdin_once,
            cgroup_memory_dir: Some(memory),
        };
        Ctr {
            _dir: dir,
            spec,
            cgroup_parent,
            monitor_pid: None,
        }
    }

    async fn spawn(&mut self) -> Result<monitor::Created, MonitorError> {
        let created = monitor::spawn(Path::new(KEEL), &self.spec).await?;
        self.monitor_pid = Some(created.monitor_pid);
        Ok(created)
    }

    fn runc(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.spec.runc)
            .arg("--root")
            .arg(&self.spec.runc_root)
            .args(args)
            .output()
            .unwrap()
    }

    fn start(&self) {
        let out = self.runc(&["start", &self.spec.id]);
        assert!(
            out.status.success(),
            "runc start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn wait(&self) -> ExitRecord {
        tokio::time::timeout(
            Duration::from_secs(30),
            monitor::wait_exit(&self.spec.state_dir, &self.spec.socket),
        )
        .await
        .expect("the container exits in time")
        .expect("wait_exit")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.spec.log_path.as_ref().unwrap()).unwrap_or_default()
    }

    /// The log's entries as (stream, tag, text); each timestamp must parse.
    fn entries(&self) -> Vec<(String, String, String)> {
        entries(&self.log())
    }

    /// Waits until the monitor has gone (it exits right after telling its waiters).
    async fn monitor_gone(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while monitor::alive(&self.spec.socket) || self.monitor_pid.is_some_and(pid_alive) {
            assert!(Instant::now() < deadline, "the monitor did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = self.runc(&["delete", "-f", &self.spec.id]);
        if let Some(pid) = self.monitor_pid.filter(|p| *p > 0) {
            if pid_alive(pid) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        // runc removes the leaf in every hierarchy but leaves the parent (native-runtime.md §6.5).
        if let Ok(dirs) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in dirs.flatten() {
                let parent = h.path().join(&self.cgroup_parent);
                let _ = std::fs::remove_dir(parent.join(&self.spec.id));
                let _ = std::fs::remove_dir(&parent);
            }
        }
        let parent = Path::new("/sys/fs/cgroup/unified").join(&self.cgroup_parent);
        let _ = std::fs::remove_dir(parent.join(&self.spec.id));
        let _ = std::fs::remove_dir(&parent);
    }
}

fn pid_alive(pid: i32) -> bool {
    // A zombie is gone for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

fn entries(log: &str) -> Vec<(String, String, String)> {
    log.lines()
        .map(|l| {
            let mut p = l.splitn(4, ' ');
            let ts = p.next().unwrap();
            ts.parse::<jiff::Timestamp>()
                .unwrap_or_else(|e| panic!("timestamp {ts:?}: {e}"));
            let stream = p.next().unwrap().to_string();
            let tag = p.next().unwrap().to_string();
            (stream, tag, p.next().unwrap_or("").to_string())
        })
        .collect()
}

fn e(stream: &str, tag: &str, text: &str) -> (String, String, String) {
    (stream.into(), tag.into(), text.into())
}

/// A busybox root: the static binary and a link per applet (`busybox --list-full`).
fn build_rootfs(root: &Path) {
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let bb = busybox().unwrap();
    std::fs::copy(&bb, root.join("bin/busybox")).unwrap();
    let list = Command::new(&bb).arg("--list-full").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = root.join(applet.trim_start_matches('/'));
        if applet.is_empty() || link.exists() {
            continue;
        }
        if let Some(dir) = link.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::os::unix::fs::symlink("/bin/busybox", &link).unwrap();
    }
}

/// An attach client's channels, with what arrives on stdout/stderr collected.
struct Attached {
    stdin: Option<mpsc::Sender<Bytes>>,
    resize: Option<mpsc::Sender<TermSize>>,
    stdout: mpsc::Receiver<Bytes>,
    stderr: mpsc::Receiver<Bytes>,
    done: tokio::task::JoinHandle<Result<(), MonitorError>>,
}

fn attach(ctr: &Ctr, stdin: bool) -> Attached {
    let (in_tx, in_rx) = mpsc::channel(16);
    let (out_tx, out_rx) = mpsc::channel(64);
    let (err_tx, err_rx) = mpsc::channel(64);
    let (rs_tx, rs_rx) = mpsc::channel(4);
    let tty = ctr.spec.tty;
    let io = ProcessIo {
        stdin: stdin.then_some(in_rx),
        stdout: Some(out_tx),
        stderr: (!tty).then_some(err_tx),
        resize: tty.then_some(rs_rx),
    };
    let socket = ctr.spec.socket.clone();
    let done = tokio::spawn(async move { monitor::attach(&socket, tty, io).await });
    Attached {
        stdin: stdin.then_some(in_tx),
        resize: tty.then_some(rs_tx),
        stdout: out_rx,
        stderr: err_rx,
        done,
    }
}

async fn collect(rx: &mut mpsc::Receiver<Bytes>) -> String {
    let mut out = Vec::new();
    while let Some(b) = rx.recv().await {
        out.extend_from_slice(&b);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads until `needle` has arrived (or the stream ends); everything read.
async fn read_until(rx: &mut mpsc::Receiver<Bytes>, needle: &str) -> String {
    let mut out = String::new();
    let fut = async {
        while !out.contains(needle) {
            match rx.recv().await {
                Some(b) => out.push_str(&String::from_utf8_lossy(&b)),
                None => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), fut).await;
    out
}

fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_partial_lines_and_exit_code() {
    require_runc!();
    let mut c = Ctr::new(Opts {
        args: sh("echo hello; echo oops >&2; printf 'a\\r\\n'; printf partial; exit 3"),
        ..Opts::default()
    });
    let before = now_ns();
    let created = c.spawn().await.expect("spawn");
    assert!(created.pid > 0 && pid_alive(created.pid), "init {created:?} is running");
    assert!(monitor::alive(&c.spec.socket));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&c.spec.socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only root may attach");
    }
    assert_eq!(monitor::read_exit(&c.spec.state_dir), None);
    let state = c.runc(&["state", &c.spec.id]);
    assert!(String::from_utf8_lossy(&state.stdout).contains("\"created\""));
    let (state_dir, socket) = (c.spec.state_dir.clone(), c.spec.socket.clone());
    let waiter = tokio::spawn(async move { monitor::wait_exit(&state_dir, &socket).await });
    c.start();
    let rec = c.wait().await;
    assert_eq!(rec.exit_code, 3);
    assert!(!rec.oom_killed);
    assert!(
        rec.finished_at_ns >= before && rec.finished_at_ns <= now_ns(),
        "{rec:?}"
    );
    assert_eq!(waiter.await.unwrap().unwrap(), rec, "an earlier waiter is told too");
    let entries = c.entries();
    assert!(entries.contains(&e("stdout", "F", "hello")), "{entries:?}");
    assert!(entries.contains(&e("stderr", "F", "oops")), "{entries:?}");
    assert!(
        entries.contains(&e("stdout", "F", "a")),
        "\\r\\n loses the \\r: {entries:?}"
    );
    assert_eq!(entries.last(), Some(&e("stdout", "P", "partial")), "{entries:?}");
    assert_eq!(entries.len(), 4, "{entries:?}");
    c.monitor_gone().await;
    assert_eq!(monitor::read_exit(&c.spec.state_dir), Some(rec));
    // With the monitor gone, the record it left answers.
    assert_eq!(c.wait().await, rec);
    assert!(!c.spec.socket.exists(), "the monitor removes its socket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_container_exits_128_plus_signal() {
    require_runc!();
    let mut c = Ctr::new(Opts {
        args: sh("echo up; exec sleep 100"),
        ..Opts::default()
    });
    c.spawn().await.expect("spawn");
    c.start();
    let out = c.runc(&["kill", &c.spec.id, "KILL"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rec = c.wait().await;
    assert_eq!(rec.exit_code, 137);
    assert!(!rec.oom_killed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_echoes_stdin_and_stdin_once_closes_it() {
    require_runc!();
    let mut c = Ctr::new(Opts {
        args: vec!["cat".into()],
        stdin: true,
        stdin_once: true,
        ..Opts::default()
    });
    c.spawn().await.expect("spawn");
    let mut a = attach(&c, true);
    c.start();
    let tx = a.stdin.take().unwrap();
    tx.send(Bytes::from_static(b"hello monitor\n")).await.unwrap();
    assert_eq!(read_until(&mut a.stdout, "\n").await, "hello monitor\n");
    // The client's stdin ends: stdin_once closes the container's, so cat exits.
    drop(tx);
    let rec = c.wait().await;
    assert_eq!(rec.exit_code, 0);
    tokio::time::timeout(Duration::from_secs(10), a.done)
        .await
        .expect("attach ends with the container")
        .unwrap()
        .expect("attach");
    assert_eq!(collect(&mut a.stderr).await, "");
    assert_eq!(c.entries(), vec![e("stdout", "F", "hello monitor")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_output_input_and_resize() {
    require_runc!();
    let mut c = Ctr::new(Opts {
        args: sh("read line; stty size; echo \"got $line\"; echo bye >&2"),
        tty: true,
        stdin: true,
        ..Opts::default()
    });
    c.spawn().await.expect("spawn");
    let mut a = attach(&c, true);
    c.start();
    a.resize
        .as_ref()
        .unwrap()
        .send(TermSize { width: 123, height: 45 })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.stdin
        .as_ref()
        .unwrap()
        .send(Bytes::from_static(b"abc\r"))
        .await
        .unwrap();
    let out = read_until(&mut a.stdout, "bye").await;
    // The terminal echoes the input and translates newlines; stderr is the terminal too.
    assert!(out.contains("45 123\r\n"), "{out:?}");
    assert!(out.contains("got abc\r\n"), "{out:?}");
    assert!(out.contains("bye"), "{out:?}");
    let rec = c.wait().await;
    assert_eq!(rec.exit_code, 0);
    let entries = c.entries();
    assert!(entries.contains(&e("stdout", "F", "45 123")), "{entries:?}");
    assert!(entries.contains(&e("stdout", "F", "got abc")), "{entries:?}");
    assert!(entries.contains(&e("stdout", "F", "bye")), "{entries:?}");
    assert!(entries.iter().all(|(s, _, _)| s == "stdout"), "{entries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_kill_is_reported_even_when_the_exit_code_is_zero() {
    require_runc!();
    if !Path::new("/sys/fs/cgroup/memory/memory.oom_control").exists()
        && !Path::new("/sys/fs/cgroup/memory.events").exists()
    {
        eprintln!("skipped: no memory cgroup here");
        return;
    }
    let mut c = Ctr::new(Opts {
        // dd's 64 MiB buffer does not fit in 16 MiB: the OOM killer takes dd, sh goes on.
        args: sh("dd if=/dev/zero of=/dev/null bs=64M count=1; echo after"),
        memory_limit: Some(16 << 20),
        ..Opts::default()
    });
    if !Path::new("/sys/fs/cgroup/memory/memory.oom_control").exists() {
        // cgroup v2 only: the container's cgroup is under the unified root.
        c.spec.cgroup_memory_dir = Some(Path::new("/sys/fs/cgroup").join(&c.cgroup_parent).join(&c.spec.id));
    }
    c.spawn().await.expect("spawn");
    c.start();
    let rec = c.wait().await;
    assert!(rec.oom_killed, "{rec:?}; log: {}", c.log());
    assert_eq!(rec.exit_code, 0, "sh itself was not killed");
    assert!(c.entries().contains(&e("stdout", "F", "after")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_create_failure_carries_runcs_message() {
    require_runc!();
    let mut c = Ctr::new(Opts {
        args: vec!["/no/such/binary".into()],
        ..Opts::default()
    });
    match c.spawn().await {
        Err(MonitorError::Runc(msg)) => assert!(msg.contains("/no/such/binary"), "{msg}"),
        other => panic!("expected runc's error, got {other:?}"),
    }
    assert!(!monitor::alive(&c.spec.socket));
    assert!(!c.spec.socket.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_log_after_rotation() {
    require_runc!();
    let mut c = Ctr::new(Opts {
        args: sh("echo one; read x; echo two"),
        stdin: true,
        stdin_once: true,
        ..Opts::default()
    });
    c.spawn().await.expect("spawn");
    let mut a = attach(&c, true);
    c.start();
    read_until(&mut a.stdout, "one\n").await;
    let log = c.spec.log_path.clone().unwrap();
    // Attach output and the log are written from the same read; give the file a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c.log().contains("one") {
        assert!(Instant::now() < deadline, "first line never logged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    monitor::reopen_log(&c.spec.socket).await.expect("reopen");
    assert!(log.exists(), "reopen creates the file");
    drop(a.stdin.take());
    assert_eq!(c.wait().await.exit_code, 0);
    assert_eq!(
        entries(&std::fs::read_to_string(&rotated).unwrap()),
        vec![e("stdout", "F", "one")]
    );
    assert_eq!(c.entries(), vec![e("stdout", "F", "two")]);
    c.monitor_gone().await;
    assert!(matches!(
        monitor::reopen_log(&c.spec.socket).await,
        Err(MonitorError::NotRunning { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_survives_its_spawner_being_killed() {
    require_runc!();
    let mut c = Ctr::new(Opts {
        args: sh("read x; echo still here"),
        stdin: true,
        stdin_once: true,
        ..Opts::default()
    });
    // The spawner stands in for keel: it starts the monitor, then is SIGKILLed with its whole
    // process group before the container starts.
    let spec_file = c.spec.state_dir.join("monitor.json");
    std::fs::write(&spec_file, serde_json::to_vec(&c.spec).unwrap()).unwrap();
    let report = c.spec.state_dir.join("report");
    let mut spawner = {
        use std::os::unix::process::CommandExt;
        Command::new("/bin/sh")
            .arg("-c")
            .arg("\"$0\" monitor --spec \"$1\" > \"$2\"; exec sleep 60")
            .arg(KEEL)
            .arg(&spec_file)
            .arg(&report)
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (monitor_pid, init_pid) = loop {
        let text = std::fs::read_to_string(&report).unwrap_or_default();
        let mut m = None;
        let mut p = None;
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            m = m.or(v["monitor"].as_i64());
            p = p.or(v["pid"].as_i64());
            assert!(v.get("error").is_none(), "{line}");
        }
        if let (Some(m), Some(p)) = (m, p) {
            break (m as i32, p as i32);
        }
        assert!(Instant::now() < deadline, "no report: {text:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    c.monitor_pid = Some(monitor_pid);
    let pgid = nix::unistd::Pid::from_raw(spawner.id() as i32);
    nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL).unwrap();
    spawner.wait().unwrap();
    assert!(pid_alive(monitor_pid), "the monitor outlives its spawner");
    let stat = std::fs::read_to_string(format!("/proc/{monitor_pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    assert_eq!(
        fields[3],
        monitor_pid.to_string(),
        "the monitor leads its own session: {stat}"
    );
    assert!(pid_alive(init_pid));
    let mut a = attach(&c, true);
    c.start();
    a.stdin.take().unwrap().send(Bytes::from_static(b"go\n")).await.unwrap();
    assert_eq!(read_until(&mut a.stdout, "\n").await, "still here\n");
    assert_eq!(c.wait().await.exit_code, 0);
    assert_eq!(c.entries(), vec![e("stdout", "F", "still here")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_clients_share_the_output_with_stderr_apart() {
    require_runc!();
    let mut c = Ctr::new(Opts {
        // No stdin: an attach client's stdin is ignored and its end does not end the attach.
        args: sh("while true; do echo out; echo err >&2; sleep 0.1; done"),
        ..Opts::default()
    });
    c.spawn().await.expect("spawn");
    let mut a = attach(&c, true);
    let mut b = attach(&c, false);
    c.start();
    drop(a.stdin.take());
    for client in [&mut a, &mut b] {
        assert!(read_until(&mut client.stdout, "out\nout\n")
            .await
            .contains("out\nout\n"));
        let err = read_until(&mut client.stderr, "err\n").await;
        assert!(err.starts_with("err\n") && !err.contains("out"), "{err:?}");
    }
    assert!(!a.done.is_finished(), "the attach goes on after its stdin ended");
    let out = c.runc(&["kill", &c.spec.id, "KILL"]);
    assert!(out.status.success());
    assert_eq!(c.wait().await.exit_code, 137);
    for done in [a.done, b.done] {
        tokio::time::timeout(Duration::from_secs(10), done)
            .await
            .expect("attach ends with the container")
            .unwrap()
            .expect("attach");
    }
    let entries = c.entries();
    assert!(entries.contains(&e("stdout", "F", "out")) && entries.contains(&e("stderr", "F", "err")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_set_up_failure_is_not_reported_as_runcs() {
    require_runc!();
    let mut c = Ctr::new(Opts {
        args: sh("exit 0"),
        ..Opts::default()
    });
    // The log's directory cannot be created: nothing is run.
    c.spec.log_path = Some(PathBuf::from("/dev/null/ns_pod/c/0.log"));
    match c.spawn().await {
        Err(MonitorError::Spawn(msg)) => assert!(msg.contains("log file"), "{msg}"),
        other => panic!("expected the monitor's own error, got {other:?}"),
    }
    assert!(
        !c.runc(&["state", &c.spec.id]).status.success(),
        "runc create never ran"
    );
    assert!(!c.spec.socket.exists());
}
