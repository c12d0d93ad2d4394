//! keel on its own runtime (`--runtime native`) in tests: the host parts it shares with
//! scripts/containerd-env.sh (the CNI conflist and bridge, the plugins in /usr/lib/cni, the
//! busybox/pause OCI archive and the local registry), a private run dir per keel, and the clean-up
//! a killed keel leaves to its test: monitors outlive keel by design, so a test that drops its
//! node must stop them (by PID), their containers (runc) and the pinned namespaces.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian's CNI plugins (containernetworking-plugins), as containerd-env.sh configures them.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// What the native backend takes from the containerd test environment.
#[derive(Clone, Debug)]
pub struct NativeEnv {
    /// `$KEEL_CONTAINERD_DIR/cni/net.d`: the bridge conflist containerd uses too.
    pub cni_conf_dir: PathBuf,
    /// `$KEEL_CONTAINERD_DIR/images/images.tar`: busybox:1.36 and pause:1 as an OCI archive.
    pub images_tar: PathBuf,
}

/// The environment of scripts/containerd-env.sh, or why the native tests cannot run.
pub fn native_env() -> Result<NativeEnv> {
    let dir = match std::env::var("KEEL_CONTAINERD_DIR") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => bail!(
            "KEEL_CONTAINERD_DIR is not set: the native e2e tests need runc, the CNI plugins and the \
             test images of scripts/containerd-env.sh; run them through scripts/test.sh (or \
             `scripts/containerd-env.sh up DIR` and source DIR/env)"
        ),
    };
    if !nix::unistd::geteuid().is_root() {
        bail!("the native e2e tests run real containers: they need root");
    }
    let env = NativeEnv {
        cni_conf_dir: dir.join("cni").join("net.d"),
        images_tar: dir.join("images").join("images.tar"),
    };
    if !env.images_tar.is_file() {
        bail!(
            "{} is missing: run scripts/containerd-env.sh up",
            env.images_tar.display()
        );
    }
    Ok(env)
}

/// A private run dir on /run (a tmpfs, as the default /run/keel): short, because monitor
/// sockets live at `<run dir>/mon/<64 hex>.sock` and unix socket paths have 108 bytes.
pub fn new_run_dir() -> Result<PathBuf> {
    let base = Path::new("/run/keel-test");
    std::fs::create_dir_all(base)?;
    let d = tempfile::Builder::new().prefix("").rand_bytes(6).tempdir_in(base)?;
    Ok(d.keep())
}

/// The keel flags of a native node whose state is `run_dir`, with CNI from `env`.
pub fn native_args(env: &NativeEnv, run_dir: &Path, root_dir: &Path) -> Vec<String> {
    vec![
        "--runtime".into(),
        "native".into(),
        "--native-run-dir".into(),
        run_dir.display().to_string(),
        "--cni-conf-dir".into(),
        env.cni_conf_dir.display().to_string(),
        "--cni-bin-dir".into(),
        CNI_BIN_DIR.into(),
        // No host registry configuration: the tests' registry is plain HTTP on 127.0.0.1.
        "--registry-config-dir".into(),
        root_dir.join("certs.d").display().to_string(),
    ]
}

/// `keel images import` of the test images into the store under `root_dir`, as an operator
/// would preload a node (pod specs say `busybox:1.36` with IfNotPresent).
pub fn import_images(env: &NativeEnv, root_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(root_dir)?;
    let out = Command::new(super::keel::keel_bin())
        .arg("images")
        .arg("--root-dir")
        .arg(root_dir)
        .arg("import")
        .arg(&env.images_tar)
        .output()
        .context("running keel images import")?;
    if !out.status.success() {
        bail!(
            "keel images import {}: {}",
            env.images_tar.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The socket inodes of unix sockets bound under `dir` (/proc/net/unix).
fn socket_inodes_under(dir: &Path) -> BTreeSet<u64> {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return BTreeSet::new();
    };
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f.get(7)?;
            Path::new(path).starts_with(dir).then(|| f.get(6)?.parse().ok())?
        })
        .collect()
}

/// Every process (other than this one) that holds a socket bound under `run_dir` (a monitor
/// listens on `<run dir>/mon/<id>.sock`) or names `run_dir` on its command line: keel's
/// monitors, found by PID, never by name.
pub fn monitor_pids(run_dir: &Path) -> Vec<i32> {
    pids_holding_or_naming(run_dir, run_dir)
}

/// Processes (not keel, not this one) holding a socket bound under `sockets_under` or naming
/// `named` on their command line.
fn pids_holding_or_naming(sockets_under: &Path, named: &Path) -> Vec<i32> {
    let inodes = socket_inodes_under(sockets_under);
    let needle = named.as_os_str().as_encoded_bytes().to_vec();
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let mut hit = cmdline.windows(needle.len().max(1)).any(|w| w == needle.as_slice());
        if !hit && !inodes.is_empty() {
            if let Ok(fds) = std::fs::read_dir(p.path().join("fd")) {
                hit = fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path())
                        .ok()
                        .and_then(|t| {
                            let t = t.to_string_lossy().into_owned();
                            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse::<u64>().ok()
                        })
                        .is_some_and(|i| inodes.contains(&i))
                });
            }
        }
        // keel itself names the run dir on its command line; it is the test's child, killed
        // through its handle. runc's own processes (runc init) are left to runc below.
        if hit && !is_keel_run(&cmdline) {
            pids.push(pid);
        }
    }
    pids
}

fn is_keel_run(cmdline: &[u8]) -> bool {
    let mut args = cmdline.split(|b| *b == 0);
    let _exe = args.next();
    args.next() == Some(b"run")
}

/// The runc binary the tests use (Debian's).
pub fn runc() -> PathBuf {
    ["/usr/sbin/runc", "/usr/bin/runc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("runc"))
}

/// The IDs of the containers runc knows under `<run dir>/runc`.
pub fn runc_containers(run_dir: &Path) -> Vec<String> {
    let root = run_dir.join("runc");
    if !root.is_dir() {
        return Vec::new();
    }
    let out = Command::new(runc())
        .arg("--root")
        .arg(&root)
        .args(["list", "-q"])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
}

/// Tears down what a native keel leaves when it is killed: its monitors (SIGKILL by PID), its
/// containers (`runc delete -f`), every mount under the run dir (pinned namespaces) and under
/// `dir` (overlay root filesystems, volumes), then the run dir. Pod cgroups are the test's
/// (they sit under the node's cgroup root). Safe to call twice.
pub fn cleanup(run_dir: &Path, dir: &Path) {
    // A monitor is also found by its spec file under keel's directory (`keel monitor --spec`).
    let mut pids = monitor_pids(run_dir);
    pids.extend(pids_holding_or_naming(run_dir, dir));
    for pid in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    let root = run_dir.join("runc");
    for id in runc_containers(run_dir) {
        let _ = Command::new(runc())
            .arg("--root")
            .arg(&root)
            .args(["delete", "-f", &id])
            .output();
    }
    super::keel::unmount_under(run_dir);
    super::keel::unmount_under(dir);
    let _ = std::fs::remove_dir_all(run_dir);
}

/// What a native node holds on the host, counted for leak checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Mount points under the run dir and keel's directory.
    pub mounts: usize,
    /// Pinned network namespace files (`<run dir>/ns/net/*`).
    pub netns_files: usize,
    /// veths attached to `bridge`.
    pub veths: usize,
    /// host-local IPAM reservations in `ipam_dir` (files named by address).
    pub ipam_entries: usize,
    /// Cgroup directories under the node's cgroup root (every hierarchy).
    pub cgroups: usize,
    /// Monitor processes.
    pub monitors: usize,
    /// Containers runc knows.
    pub runc_containers: usize,
    /// keel's open file descriptors.
    pub keel_fds: usize,
}

/// Where a footprint is read.
pub struct FootprintScope<'a> {
    pub run_dir: &'a Path,
    pub dir: &'a Path,
    pub bridge: &'a str,
    pub ipam_dir: &'a Path,
    /// The node's cgroup root, relative to the hierarchy roots (e.g. `keel-test/x/node-1`).
    pub cgroup_root: &'a str,
    pub keel_pid: Option<u32>,
}

fn count_dir(d: &Path) -> usize {
    std::fs::read_dir(d).map(|r| r.flatten().count()).unwrap_or(0)
}

fn count_subdirs(top: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![top.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    n += 1;
                    stack.push(e.path());
                }
            }
        }
    }
    n
}

impl FootprintScope<'_> {
    pub fn read(&self) -> Footprint {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mounts = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| Path::new(p).starts_with(self.run_dir) || Path::new(p).starts_with(self.dir))
            .count();
        let ipam_entries = std::fs::read_dir(self.ipam_dir)
            .map(|r| {
                r.flatten()
                    .flat_map(|net| std::fs::read_dir(net.path()).into_iter().flatten().flatten())
                    .filter(|e| e.file_name().to_string_lossy().parse::<std::net::IpAddr>().is_ok())
                    .count()
            })
            .unwrap_or(0);
        let mut cgroups = 0;
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in rd.flatten() {
                cgroups += count_subdirs(&h.path().join(self.cgroup_root));
            }
        }
        cgroups += count_subdirs(&Path::new("/sys/fs/cgroup").join(self.cgroup_root));
        Footprint {
            mounts,
            netns_files: count_dir(&self.run_dir.join("ns").join("net")),
            veths: count_dir(&Path::new("/sys/class/net").join(self.bridge).join("brif")),
            ipam_entries,
            cgroups,
            monitors: monitor_pids(self.run_dir).len(),
            runc_containers: runc_containers(self.run_dir).len(),
            keel_fds: self
                .keel_pid
                .map(|p| count_dir(Path::new(&format!("/proc/{p}/fd"))))
                .unwrap_or(0),
        }
    }
}
