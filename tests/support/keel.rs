//! Runs the keel binary as a user would, as a child process owned by the test: private root,
//! log and state directories, output captured to files, killed by PID when dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};

/// The keel binary to run: `$KEEL_BIN` when set (scripts/bench.sh runs the shipped release build
/// from a harness built in the dev profile), else the one cargo built with these tests.
pub fn keel_bin() -> PathBuf {
    match std::env::var_os("KEEL_BIN") {
        Some(b) if !b.is_empty() => PathBuf::from(b),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_keel")),
    }
}

/// How to start keel.
#[derive(Clone, Debug)]
pub struct KeelOpts {
    /// Node name (unique per test).
    pub node: String,
    /// kubeconfig keel uses; None = `--standalone`.
    pub kubeconfig: Option<PathBuf>,
    /// Private directory for the root dir, pod logs and captured output.
    pub dir: PathBuf,
    /// Compressed clock (`--time-scale`).
    pub time_scale: f64,
    /// Kubelet server port (`--port`, on 127.0.0.1) and plain healthz port (`--healthz-port`):
    /// free ports picked per keel so parallel tests never collide on 10250/10248.
    pub port: u16,
    pub healthz_port: u16,
    /// Address the kubelet server listens on (`--address`; 127.0.0.1 unless the node is named
    /// by another loopback address, see support::envtest).
    pub address: String,
    pub extra_args: Vec<String>,
    /// On the native backend: keel's `--native-run-dir`, torn down with what keel's monitors
    /// hold there when the Keel is dropped (support::native::cleanup).
    pub native_run_dir: Option<PathBuf>,
}

/// A port nobody listens on right now (bind 127.0.0.1:0, read it, release it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

impl KeelOpts {
    pub fn new(node: &str, kubeconfig: Option<PathBuf>, dir: &Path) -> Self {
        Self {
            node: node.to_string(),
            kubeconfig,
            dir: dir.to_path_buf(),
            time_scale: 1.0,
            port: free_port(),
            healthz_port: free_port(),
            address: "127.0.0.1".to_string(),
            extra_args: Vec::new(),
            native_run_dir: None,
        }
    }

    pub fn time_scale(mut self, s: f64) -> Self {
        self.time_scale = s;
        self
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.extra_args.push(a.into());
        self
    }
}

/// A running keel.
pub struct Keel {
    pub opts: KeelOpts,
    child: Option<tokio::process::Child>,
    starts: usize,
    /// Held for keel's lifetime and dropped after its clean-up (e.g. a shared-bridge guard).
    held: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl Keel {
    /// The kubelet server's port (HTTPS on 127.0.0.1).
    #[allow(dead_code)] // not every test binary talks to the server
    pub fn port(&self) -> u16 {
        self.opts.port
    }

    /// The plain-HTTP healthz port on 127.0.0.1.
    #[allow(dead_code)]
    pub fn healthz_port(&self) -> u16 {
        self.opts.healthz_port
    }

    pub fn pod_logs_dir(&self) -> PathBuf {
        self.opts.dir.join("pods")
    }

    pub async fn start(opts: KeelOpts) -> Result<Keel> {
        let mut k = Keel {
            opts,
            child: None,
            starts: 0,
            held: Vec::new(),
        };
        k.spawn()?;
        Ok(k)
    }

    /// Keeps `thing` until this keel is dropped (after its clean-up).
    #[allow(dead_code)]
    pub fn hold(&mut self, thing: impl std::any::Any + Send + Sync) {
        self.held.push(Box::new(thing));
    }

    fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let o = &self.opts;
        std::fs::create_dir_all(&o.dir)?;
        let stdout = std::fs::File::create(o.dir.join(format!("stdout-{}.log", self.starts)))?;
        let stderr = std::fs::File::create(o.dir.join(format!("keel-{}.log", self.starts)))?;
        let mut cmd = tokio::process::Command::new(keel_bin());
        cmd.arg("run")
            .arg("--node-name")
            .arg(&o.node)
            .arg("--root-dir")
            .arg(o.dir.join("root"))
            .arg("--pod-logs-dir")
            .arg(o.dir.join("pods"))
            .arg("--time-scale")
            .arg(o.time_scale.to_string())
            .arg("--address")
            .arg(&o.address)
            .arg("--port")
            .arg(o.port.to_string())
            .arg("--healthz-port")
            .arg(o.healthz_port.to_string());
        match &o.kubeconfig {
            Some(k) => {
                cmd.arg("--kubeconfig").arg(k);
            }
            None => {
                cmd.arg("--standalone");
            }
        }
        cmd.args(&o.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("KEEL_TEST_LOG").unwrap_or_else(|_| "info,keel=debug".into()),
            )
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);
        self.child = Some(cmd.spawn().context("spawning keel")?);
        Ok(())
    }

    /// SIGKILL, as a crash would.
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// Kill with SIGKILL and start again with the same directories (adoption tests).
    pub async fn restart_after_kill9(&mut self) -> Result<()> {
        self.kill9().await;
        self.spawn()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Everything keel logged so far (all starts).
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|i| std::fs::read_to_string(self.opts.dir.join(format!("keel-{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The PID of the running keel process (for /proc readings in benchmarks).
    #[allow(dead_code)] // used by benches/e2e.rs, which shares this module
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// What keel printed on stdout in its latest start.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.opts.dir.join(format!("stdout-{}.log", self.starts))).unwrap_or_default()
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let l = self.logs();
        let lines: Vec<&str> = l.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Keel {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        // keel mounts tmpfs volumes under its root dir; a killed keel never tears them down.
        // On the native backend its monitors and containers outlive it by design: stop them.
        match &self.opts.native_run_dir {
            Some(run_dir) => {
                if let Some(mut c) = self.child.take() {
                    // The monitors are found by what they hold; keel must be gone first.
                    let _ = c.start_kill();
                    if let Some(pid) = c.id() {
                        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
                    }
                }
                super::native::cleanup(run_dir, &self.opts.dir)
            }
            None => unmount_under(&self.opts.dir),
        }
    }
}

/// Lazily unmounts every mount point under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let _ = std::process::Command::new("umount").arg("-l").arg(&p).status();
    }
}
