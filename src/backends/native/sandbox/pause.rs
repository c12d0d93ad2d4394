//! The pause process of a `shareProcessNamespace` pod: PID 1 of the pod's PID namespace, which
//! must live as long as the pod (nobody can join a PID namespace whose init died) and reap the
//! orphans re-parented to it, as `pause.c` does. Other pods need no process at all.
//!
//! keel's own binary serves: `keel pause --net N --ipc I --uts U` joins the pinned namespaces,
//! `unshare`s a PID namespace, starts `keel pause --init` (which becomes its PID 1), prints that
//! child's host pid and exits; the child detaches (setsid) and outlives keel.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Flags of the hidden `keel pause` command.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PauseArgs {
    /// Network namespace to join (a pinned file).
    #[arg(long)]
    pub net: Option<PathBuf>,
    /// IPC namespace to join.
    #[arg(long)]
    pub ipc: Option<PathBuf>,
    /// UTS namespace to join.
    #[arg(long)]
    pub uts: Option<PathBuf>,
    /// Be the PID 1 (internal: the second stage).
    #[arg(long)]
    pub init: bool,
}

/// `keel pause`: runs before any async runtime exists (single-threaded, as setns and unshare of
/// a PID namespace want).
pub fn main(args: PauseArgs) -> anyhow::Result<()> {
    if args.init {
        run_init()
    }
    for (path, flag) in [
        (&args.net, CloneFlags::CLONE_NEWNET),
        (&args.ipc, CloneFlags::CLONE_NEWIPC),
        (&args.uts, CloneFlags::CLONE_NEWUTS),
    ] {
        if let Some(p) = path {
            let f = fs::File::open(p).map_err(|e| anyhow::anyhow!("open {}: {e}", p.display()))?;
            setns(f.as_fd(), flag).map_err(|e| anyhow::anyhow!("setns {}: {e}", p.display()))?;
        }
    }
    // Children from now on start in a new PID namespace; the first one is its init.
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| anyhow::anyhow!("unshare pid namespace: {e}"))?;
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .args(["pause", "--init"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("start pause init: {e}"))?;
    println!("{}", child.id());
    Ok(())
}

/// PID 1 of the pod: SIGTERM/SIGINT end it, SIGCHLD reaps every exited child, nothing else.
fn run_init() -> ! {
    let _ = nix::unistd::setsid();
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        set.add(s);
    }
    // Blocked signals are queued for sigwait even for a namespace init (the kernel only drops
    // signals an init leaves at their default disposition and does not block).
    if set.thread_block().is_err() {
        std::process::exit(1);
    }
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => loop {
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => continue,
                }
            },
            Ok(_) => std::process::exit(0),
            Err(_) => continue,
        }
    }
}

/// A running pause process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pause {
    pub pid: i32,
    pub start_ticks: u64,
}

impl Pause {
    /// `/proc/<pid>/ns/pid`: what containers of the pod join.
    pub fn pidns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/pid", self.pid))
    }

    /// Whether the process is still this pause (same pid and start time).
    pub fn alive(&self) -> bool {
        start_ticks(self.pid) == Some(self.start_ticks)
    }

    /// SIGKILL (as containerd stops the pause task). Idempotent; never signals a later process
    /// that got the same pid.
    pub fn kill(&self) {
        if self.alive() {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            // Our child when keel started it in this run: reap it (else init does).
            let _ = waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG));
        }
    }
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot); None when the
/// process is gone or a zombie (dead, waiting to be reaped by whoever inherited it).
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if matches!(fields.next(), Some("Z") | Some("X") | Some("x")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Starts the pause process of a pod that joins `net`/`ipc`/`uts` (None: the host's).
pub fn spawn(keel_exe: &Path, net: Option<&Path>, ipc: Option<&Path>, uts: Option<&Path>) -> io::Result<Pause> {
    let mut cmd = Command::new(keel_exe);
    cmd.arg("pause");
    for (flag, p) in [("--net", net), ("--ipc", ipc), ("--uts", uts)] {
        if let Some(p) = p {
            cmd.arg(flag).arg(p);
        }
    }
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{} pause: {} ({})",
            keel_exe.display(),
            String::from_utf8_lossy(&out.stderr).trim(),
            out.status
        )));
    }
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| {
        io::Error::other(format!(
            "pause printed no pid: {:?}",
            String::from_utf8_lossy(&out.stdout)
        ))
    })?;
    let start_ticks =
        start_ticks(pid).ok_or_else(|| io::Error::other(format!("pause process {pid} exited at once")))?;
    Ok(Pause { pid, start_ticks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_of_self_and_of_nobody() {
        let me = std::process::id() as i32;
        let t = start_ticks(me).unwrap();
        assert_eq!(start_ticks(me), Some(t));
        let p = Pause {
            pid: me,
            start_ticks: t,
        };
        assert!(p.alive());
        let stale = Pause {
            pid: me,
            start_ticks: t + 1,
        };
        assert!(!stale.alive(), "another process with the same pid is not our pause");
        assert_eq!(p.pidns(), PathBuf::from(format!("/proc/{me}/ns/pid")));
    }
}
