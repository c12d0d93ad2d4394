//! OOM kills in the container's memory cgroup, the way containerd's shim watches them
//! (native-runtime.md §3.3): cgroup v1 registers an eventfd on `memory.oom_control` through
//! `cgroup.event_control`; v2 watches `memory.events` with inotify. Either way the event is
//! confirmed with the cgroup's `oom_kill` counter (v1 `memory.oom_control`, v2 `memory.events`),
//! which also answers a last look when the process exits: the event fires when the cgroup is
//! removed too (v1), and a kill right before the exit may not have been read yet.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

enum Kind {
    /// The eventfd and the open `memory.oom_control` it is registered on.
    V1 {
        efd: EventFd,
        _control: File,
    },
    V2 {
        inotify: Inotify,
    },
}

/// A registered OOM watch on one memory cgroup.
pub struct OomWatch {
    kind: Kind,
    /// The file with the `oom_kill` counter.
    counter_file: PathBuf,
    /// The counter when the watch started (a fresh cgroup: 0).
    base: u64,
    /// An OOM kill was seen.
    pub killed: bool,
}

/// The `oom_kill <n>` value of a `memory.oom_control` / `memory.events` text.
pub fn oom_kill_count(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

fn read_count(path: &Path) -> Option<u64> {
    oom_kill_count(&std::fs::read_to_string(path).ok()?)
}

impl OomWatch {
    /// Starts watching the memory cgroup `dir` (v1 when it has `memory.oom_control`, else v2).
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        let v1 = dir.join("memory.oom_control");
        if v1.exists() {
            let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
            let control = File::open(&v1)?;
            let mut ec = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.event_control"))?;
            ec.write_all(format!("{} {}", efd.as_fd().as_raw_fd(), control.as_raw_fd()).as_bytes())?;
            let base = read_count(&v1).unwrap_or(0);
            return Ok(Self {
                kind: Kind::V1 { efd, _control: control },
                counter_file: v1,
                base,
                killed: false,
            });
        }
        let events = dir.join("memory.events");
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
        inotify.add_watch(&events, AddWatchFlags::IN_MODIFY)?;
        let base = read_count(&events).unwrap_or(0);
        Ok(Self {
            kind: Kind::V2 { inotify },
            counter_file: events,
            base,
            killed: false,
        })
    }

    /// The descriptor that becomes readable on an event.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match &self.kind {
            Kind::V1 { efd, .. } => efd.as_fd(),
            Kind::V2 { inotify } => inotify.as_fd(),
        }
    }

    /// Consumes the pending event(s) and checks the cgroup's counter.
    pub fn on_event(&mut self) {
        let fired = match &self.kind {
            Kind::V1 { efd, .. } => efd.read().is_ok(),
            Kind::V2 { inotify } => inotify.read_events().is_ok(),
        };
        // A kernel without the counter: a v1 event on a cgroup that still exists is an OOM
        // (containerd's rule).
        if !self.check() && fired && matches!(self.kind, Kind::V1 { .. }) && read_count(&self.counter_file).is_none() {
            self.killed = self.counter_file.exists();
        }
    }

    /// Looks at the counter (also when no event was read: the last look at exit).
    pub fn check(&mut self) -> bool {
        if read_count(&self.counter_file).is_some_and(|n| n > self.base) {
            self.killed = true;
        }
        self.killed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_from_v1_and_v2_files() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(oom_kill_count(v1), Some(2));
        let v2 = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kill_count(v2), Some(1));
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 0\n"), None);
    }
}
