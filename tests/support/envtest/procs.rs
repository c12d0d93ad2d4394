//! Processes that live as long as the test binary and never longer: they are spawned from a
//! keeper thread that never exits, with `PR_SET_PDEATHSIG=SIGKILL` (which fires when the
//! spawning *thread* exits, so a test thread would kill them when its test ends; the keeper
//! only exits with the process, however it ends). On a normal exit an `atexit` handler kills
//! them by PID, reaps them and removes their directories.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Mutex, Once};

use anyhow::{Context, Result};

static CHILDREN: Mutex<Vec<Child>> = Mutex::new(Vec::new());
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static AT_EXIT: Once = Once::new();

/// Runs `f` on a new thread that then stays parked for the life of the process, and returns what
/// `f` returned: processes `f` starts through [`spawn`] die with the test process.
pub fn on_keeper_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("envtest-keeper".into())
        .spawn(move || {
            let _ = tx.send(f());
            loop {
                std::thread::park();
            }
        })
        .context("spawning the envtest keeper thread")?;
    rx.recv().context("the envtest keeper thread ended early")
}

/// Spawns `cmd` with SIGKILL as its parent-death signal and registers it for the exit-time
/// teardown; returns its PID.
pub fn spawn(mut cmd: Command) -> Result<u32> {
    install_at_exit();
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent's state.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
    let pid = child.id();
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner()).push(child);
    Ok(pid)
}

/// Kills (SIGKILL) and reaps one process [`spawn`] started, if it is still registered.
pub fn kill(pid: u32) {
    let child = {
        let mut children = CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
        children.iter().position(|c| c.id() == pid).map(|i| children.remove(i))
    };
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Removes `dir` at exit, after the processes are gone.
pub fn remove_at_exit(dir: PathBuf) {
    install_at_exit();
    DIRS.lock().unwrap_or_else(|p| p.into_inner()).push(dir);
}

/// Kills (SIGKILL: nothing of theirs outlives the run) and reaps the processes, newest first
/// (controller-manager, API server, then etcd), then removes the directories.
pub fn teardown() {
    let children: Vec<Child> = std::mem::take(&mut *CHILDREN.lock().unwrap_or_else(|p| p.into_inner()));
    for mut c in children.into_iter().rev() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let dirs: Vec<PathBuf> = std::mem::take(&mut *DIRS.lock().unwrap_or_else(|p| p.into_inner()));
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

extern "C" fn at_exit() {
    teardown();
}

fn install_at_exit() {
    AT_EXIT.call_once(|| {
        // SAFETY: registers a plain function; libtest ends with exit(), which runs it.
        unsafe {
            nix::libc::atexit(at_exit);
        }
    });
}
