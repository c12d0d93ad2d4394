//! Network, IPC and UTS namespaces created on a dedicated thread and pinned by bind mounts, the
//! way containerd pins a netns (`pkg/netns`) and CRI-O's `pinns` pins all three: the thread
//! `unshare`s, sets the hostname and the sysctls inside, and bind-mounts its
//! `/proc/self/task/<tid>/ns/<kind>` onto an empty file. The thread then ends; the mount keeps the
//! namespace alive with no process in it.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

/// A namespace kind keel pins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Net,
    Ipc,
    Uts,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Net => "net",
            Kind::Ipc => "ipc",
            Kind::Uts => "uts",
        }
    }

    fn flag(self) -> CloneFlags {
        match self {
            Kind::Net => CloneFlags::CLONE_NEWNET,
            Kind::Ipc => CloneFlags::CLONE_NEWIPC,
            Kind::Uts => CloneFlags::CLONE_NEWUTS,
        }
    }
}

/// `<run_dir>/ns/<kind>/<id>`.
pub fn pin_path(run_dir: &Path, kind: Kind, id: &str) -> PathBuf {
    run_dir.join("ns").join(kind.name()).join(id)
}

/// Which namespace a sysctl belongs to (runc's `validateSysctl`): IPC for the SysV IPC knobs and
/// `fs.mqueue.*`, UTS for `kernel.hostname|domainname`, net for `net.*`; anything else is not
/// namespaced and is refused.
pub fn sysctl_kind(name: &str) -> Option<Kind> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&name) || name.starts_with("fs.mqueue.") {
        Some(Kind::Ipc)
    } else if name == "kernel.hostname" || name == "kernel.domainname" {
        Some(Kind::Uts)
    } else if name.starts_with("net.") {
        Some(Kind::Net)
    } else {
        None
    }
}

/// `/proc/sys/<name with dots as slashes>` (names are dotted; the kubelet converts slashes).
pub fn sysctl_path(name: &str) -> PathBuf {
    Path::new("/proc/sys").join(name.replace('.', "/"))
}

/// What to create: the kinds, the hostname (with a UTS ns) and sysctls to apply inside.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub kinds: Vec<Kind>,
    pub hostname: Option<String>,
    pub sysctls: Vec<(String, String)>,
}

/// Creates and pins the namespaces of `req` for sandbox `id`; returns the pin paths in the order
/// of `req.kinds`. On failure nothing is left pinned.
pub fn create(run_dir: &Path, id: &str, req: Request) -> io::Result<Vec<(Kind, PathBuf)>> {
    for (name, _) in &req.sysctls {
        match sysctl_kind(name) {
            Some(k) if req.kinds.contains(&k) => {}
            Some(k) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("sysctl {name:?} not allowed in host {} namespace", k.name()),
                ))
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("sysctl {name:?} is not in a separate kernel namespace"),
                ))
            }
        }
    }
    let mut paths = Vec::new();
    for kind in &req.kinds {
        let p = pin_path(run_dir, *kind, id);
        if let Some(dir) = p.parent() {
            fs::create_dir_all(dir)?;
        }
        paths.push((*kind, p));
    }
    let thread_paths = paths.clone();
    let result = std::thread::Builder::new()
        .name("keel-netns".into())
        .spawn(move || create_on_this_thread(&thread_paths, &req))?
        .join()
        .map_err(|_| io::Error::other("namespace thread panicked"))?;
    match result {
        Ok(()) => Ok(paths),
        Err(e) => {
            for (_, p) in &paths {
                let _ = unpin(p);
            }
            Err(e)
        }
    }
}

/// Runs on a thread of its own, which ends afterwards (its namespaces differ from keel's).
fn create_on_this_thread(paths: &[(Kind, PathBuf)], req: &Request) -> io::Result<()> {
    let flags = req.kinds.iter().fold(CloneFlags::empty(), |f, k| f | k.flag());
    unshare(flags).map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("unshare: {e}")))?;
    if let Some(name) = &req.hostname {
        if req.kinds.contains(&Kind::Uts) {
            nix::unistd::sethostname(name).map_err(|e| io::Error::other(format!("sethostname {name:?}: {e}")))?;
        }
    }
    // /proc/sys resolves net, IPC and UTS knobs in the namespaces of the writing thread.
    for (name, value) in &req.sysctls {
        fs::write(sysctl_path(name), value)
            .map_err(|e| io::Error::new(e.kind(), format!("write sysctl {name}={value}: {e}")))?;
    }
    let tid = nix::unistd::gettid();
    for (kind, path) in paths {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", path.display())))?;
        let src = format!("/proc/self/task/{tid}/ns/{}", kind.name());
        mount(Some(src.as_str()), path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| io::Error::other(format!("bind mount {src} on {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Whether `path` is a pinned namespace (an nsfs bind mount).
pub fn is_pinned(path: &Path) -> bool {
    statfs(path).map(|s| s.filesystem_type() == NSFS_MAGIC).unwrap_or(false)
}

/// Unmounts the pin and deletes its file. Idempotent.
pub fn unpin(path: &Path) -> io::Result<()> {
    loop {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
            Err(e) => return Err(io::Error::other(format!("unmount {}: {e}", path.display()))),
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("remove {}: {e}", path.display()))),
    }
}

/// Runs `f` on a fresh thread that joined the network namespace at `netns`; the thread ends
/// after, so keel's own threads never change namespace.
pub fn in_netns<T: Send + 'static>(netns: &Path, f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    let netns = netns.to_path_buf();
    std::thread::Builder::new()
        .name("keel-setns".into())
        .spawn(move || {
            let file =
                fs::File::open(&netns).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", netns.display())))?;
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| io::Error::other(format!("setns {}: {e}", netns.display())))?;
            f()
        })?
        .join()
        .map_err(|_| io::Error::other("setns thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctls_map_to_their_namespaces() {
        for (name, kind) in [
            ("kernel.shm_rmid_forced", Some(Kind::Ipc)),
            ("kernel.msgmax", Some(Kind::Ipc)),
            ("fs.mqueue.msg_max", Some(Kind::Ipc)),
            ("kernel.hostname", Some(Kind::Uts)),
            ("net.ipv4.ip_unprivileged_port_start", Some(Kind::Net)),
            ("net.core.somaxconn", Some(Kind::Net)),
            ("kernel.panic", None),
            ("vm.swappiness", None),
        ] {
            assert_eq!(sysctl_kind(name), kind, "{name}");
        }
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward"),
            Path::new("/proc/sys/net/ipv4/ip_forward")
        );
    }

    #[test]
    fn sysctls_outside_the_pinned_namespaces_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let req = Request {
            kinds: vec![Kind::Ipc],
            hostname: None,
            sysctls: vec![("net.core.somaxconn".into(), "1024".into())],
        };
        let err = create(dir.path(), "x", req).unwrap_err();
        assert!(err.to_string().contains("not allowed in host net namespace"), "{err}");
        let req = Request {
            kinds: vec![Kind::Net],
            hostname: None,
            sysctls: vec![("vm.swappiness".into(), "1".into())],
        };
        let err = create(dir.path(), "x", req).unwrap_err();
        assert!(err.to_string().contains("not in a separate kernel namespace"), "{err}");
    }
}
