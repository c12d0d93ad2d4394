//! The OCI runtime spec of a CRI container, built the way containerd 1.7's CRI plugin builds it
//! (`pkg/cri/server/container_create_linux.go`, `pkg/cri/opts`, `oci/spec.go`): its default
//! mounts minus `/run`, the sandbox's files and namespaces, CRI mounts sorted by depth, the
//! kubelet's masked/readonly paths, capabilities, devices, user and groups from the image,
//! resources and an `oomScoreAdj` never below keel's own.
//!
//! Building is pure ([`build`]); what needs the host or the image's files is gathered first
//! ([`Host`], [`EtcFiles`], [`prepare_mounts`]).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDevice, LinuxDeviceBuilder,
    LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder,
    Spec, SpecBuilder, UserBuilder,
};

use crate::backends::native::images::manifest::RunConfig;
use crate::backends::native::seccomp::{self, Family, Profile, SeccompError};
use crate::genericruntime::seam::cri;

/// The OCI runtime spec version written into `config.json` (runc 1.1 speaks 1.0.x).
pub const OCI_VERSION: &str = "1.0.2";

/// containerd's default `PATH` (`oci/spec.go defaultUnixEnv`).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's 14 default capabilities (`oci/spec.go defaultUnixCaps`).
pub const DEFAULT_CAPS: [&str; 14] = [
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

/// Every capability by number (`linux/capability.h`); the kernel knows those up to
/// `/proc/sys/kernel/cap_last_cap`.
const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// containerd's CRI annotations (`pkg/cri/annotations`).
pub mod annotations {
    pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
    pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
    pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
    pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
    pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
    pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
    pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
}

/// Errors building a spec: each is a bad request (InvalidArgument) or a host problem.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command specified")]
    NoCommand,
    #[error("user group {0:?} is specified without user")]
    GroupWithoutUser(i64),
    #[error("no users found")]
    NoUsersFound,
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    #[error("invalid user {0:?}")]
    BadUser(String),
    #[error("no privileged container allowed in sandbox")]
    PrivilegedNotAllowed,
    #[error("failed to stat {path:?}: {source}")]
    Stat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to mkdir {path:?}: {source}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to resolve symlink {path:?}: {source}")]
    Symlink {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("path {0:?} is mounted on {1:?} but it is not a shared mount")]
    NotShared(PathBuf, String),
    #[error("path {0:?} is mounted on {1:?} but it is not a shared or slave mount")]
    NotSharedOrSlave(PathBuf, String),
    #[error("failed to get device for {path:?}: {message}")]
    Device { path: PathBuf, message: String },
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error("building the OCI spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
}

impl SpecError {
    /// Whether the request itself is at fault (CRI InvalidArgument) rather than the host.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            Self::NoCommand
                | Self::GroupWithoutUser(_)
                | Self::UnknownUser(_)
                | Self::UnknownGroup(_)
                | Self::BadUser(_)
                | Self::NoUsersFound
                | Self::PrivilegedNotAllowed
                | Self::Seccomp(
                    SeccompError::RefWithoutLocalhost | SeccompError::UnknownType(_) | SeccompError::BadPath(_)
                )
        )
    }
}

/// The sandbox as a container sees it.
#[derive(Clone, Debug, Default)]
pub struct SandboxView {
    pub id: String,
    pub config: cri::PodSandboxConfig,
    /// Pinned namespace files; `None`: the host's (or, for pid, a new one).
    pub netns: Option<PathBuf>,
    pub ipcns: Option<PathBuf>,
    pub utsns: Option<PathBuf>,
    pub pidns: Option<PathBuf>,
    pub hostname_file: Option<PathBuf>,
    pub hosts_file: Option<PathBuf>,
    pub resolv_file: Option<PathBuf>,
    pub shm: Option<PathBuf>,
    pub cgroup_parent: String,
}

impl SandboxView {
    fn privileged(&self) -> bool {
        self.config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged)
    }
}

/// The image's `/etc/passwd` and `/etc/group` (absent files are `None`).
#[derive(Clone, Debug, Default)]
pub struct EtcFiles {
    pub passwd: Option<String>,
    pub group: Option<String>,
}

/// Facts about the node the spec depends on.
#[derive(Clone, Debug)]
pub struct Host {
    /// keel's own `oom_score_adj`: containers never get less (runc could not set it).
    pub oom_score_adj: i32,
    pub hostname: String,
    /// `/proc/sys/kernel/cap_last_cap`.
    pub cap_last_cap: u32,
    /// A memory swap controller exists (v1 `memory.memsw.*`, v2 `memory.swap.max`).
    pub swap_controller: bool,
    /// `/sys/fs/cgroup` is cgroup2 (then containers get a cgroup namespace).
    pub cgroup2: bool,
    /// The kernel's (major, minor) version (the RuntimeDefault seccomp profile depends on it).
    pub kernel: (u32, u32),
}

impl Host {
    /// Reads the facts from this machine.
    pub fn probe() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cgroup2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
            .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            .unwrap_or(false);
        let swap_controller = if cgroup2 {
            Path::new("/sys/fs/cgroup/memory.swap.max").exists()
                || std::fs::read_dir("/sys/fs/cgroup")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|e| e.path().join("memory.swap.max").exists())
        } else {
            Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
        };
        Self {
            oom_score_adj: read("/proc/self/oom_score_adj").trim().parse().unwrap_or(0),
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
            cap_last_cap: read("/proc/sys/kernel/cap_last_cap").trim().parse().unwrap_or(40),
            swap_controller,
            cgroup2,
            kernel: seccomp::kernel_version(),
        }
    }
}

/// Everything [`build`] needs.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub id: &'a str,
    pub config: &'a cri::ContainerConfig,
    pub sandbox: &'a SandboxView,
    pub image: &'a RunConfig,
    /// The image as the request named it (annotation `image-name`).
    pub image_name: &'a str,
    pub etc: &'a EtcFiles,
    pub host: &'a Host,
    /// CRI mounts (and the sandbox's files) with host paths already checked, created and
    /// symlinks resolved: see [`prepare_mounts`].
    pub mounts: &'a [cri::Mount],
    /// Device nodes for CRI `devices` (and all host devices when privileged): see [`host_device`].
    pub devices: &'a [(LinuxDevice, String)],
    /// For pid namespace TARGET: the target container's `/proc/<pid>/ns/pid`.
    pub target_pidns: Option<PathBuf>,
    /// The seccomp profile asked for (see [`seccomp::resolve`]).
    pub seccomp: Profile,
}

fn security(config: &cri::ContainerConfig) -> cri::LinuxContainerSecurityContext {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default()
}

fn resources(config: &cri::ContainerConfig) -> cri::LinuxContainerResources {
    config
        .linux
        .as_ref()
        .and_then(|l| l.resources.clone())
        .unwrap_or_default()
}

/// containerd's `WithProcessArgs`: command + args; no command: entrypoint + (args or cmd).
pub fn process_args(config: &cri::ContainerConfig, image: &RunConfig) -> Result<Vec<String>, SpecError> {
    let mut command = config.command.clone();
    let mut args = config.args.clone();
    if command.is_empty() {
        // An image entrypoint of [""] means none (docker's way to reset it).
        if !(image.entrypoint.len() == 1 && image.entrypoint[0].is_empty()) {
            command = image.entrypoint.clone();
        }
        if args.is_empty() {
            args = image.cmd.clone();
        }
    }
    if command.is_empty() && args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    command.extend(args);
    Ok(command)
}

/// `KEY=value` lists merged in order; a later key replaces an earlier one in its place.
fn merge_env(env: &mut Vec<String>, add: impl IntoIterator<Item = String>) {
    for kv in add {
        let key = kv.split('=').next().unwrap_or("").to_string();
        match env.iter_mut().find(|e| e.split('=').next() == Some(key.as_str())) {
            Some(e) => *e = kv,
            None => env.push(kv),
        }
    }
}

/// The process environment: PATH, HOSTNAME, image Env, CRI envs (`TERM=xterm` with a TTY).
pub fn environment(
    config: &cri::ContainerConfig,
    sandbox: &SandboxView,
    image: &RunConfig,
    host: &Host,
) -> Vec<String> {
    let mut env = vec![DEFAULT_PATH.to_string()];
    let hostname = if sandbox.config.hostname.is_empty() {
        host.hostname.clone()
    } else {
        sandbox.config.hostname.clone()
    };
    merge_env(&mut env, [format!("HOSTNAME={hostname}")]);
    merge_env(&mut env, image.env.iter().cloned());
    if config.tty {
        merge_env(&mut env, ["TERM=xterm".to_string()]);
    }
    merge_env(
        &mut env,
        config.envs.iter().map(|kv| format!("{}={}", kv.key, kv.value)),
    );
    env
}

/// containerd's `generateUserString`: username wins over uid; a group needs a user.
pub fn user_string(sc: &cri::LinuxContainerSecurityContext) -> Result<String, SpecError> {
    let user = if !sc.run_as_username.is_empty() {
        sc.run_as_username.clone()
    } else if let Some(u) = &sc.run_as_user {
        u.value.to_string()
    } else {
        String::new()
    };
    match (&sc.run_as_group, user.is_empty()) {
        (Some(g), true) => Err(SpecError::GroupWithoutUser(g.value)),
        (Some(g), false) => Ok(format!("{user}:{}", g.value)),
        (None, _) => Ok(user),
    }
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

fn passwd_entries(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn group_entries(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The process user: `uid`, `gid` and `additionalGids` (containerd's `WithUser` +
/// `WithAdditionalGIDs` + `WithSupplementalGroups`): the primary gid, the groups of the user in
/// the image's `/etc/group`, and the CRI supplemental groups, sorted and deduplicated.
pub fn resolve_user(userstr: &str, etc: &EtcFiles, supplemental: &[i64]) -> Result<(u32, u32, Vec<u32>), SpecError> {
    let passwd = passwd_entries(etc.passwd.as_deref().unwrap_or(""));
    let groups = group_entries(etc.group.as_deref().unwrap_or(""));
    let mut parts = userstr.splitn(2, ':');
    let user = parts.next().unwrap_or("");
    let group = parts.next();
    let (uid, mut gid, name) = if user.is_empty() {
        (0, 0, passwd.iter().find(|p| p.uid == 0).map(|p| p.name.clone()))
    } else if let Ok(uid) = user.parse::<u32>() {
        // A uid the image does not know runs with gid 0.
        match passwd.iter().find(|p| p.uid == uid) {
            Some(p) => (uid, p.gid, Some(p.name.clone())),
            None => (uid, 0, None),
        }
    } else {
        if user.parse::<i64>().is_ok() {
            return Err(SpecError::BadUser(userstr.to_string()));
        }
        let p = passwd
            .iter()
            .find(|p| p.name == user)
            .ok_or_else(|| SpecError::UnknownUser(user.to_string()))?;
        (p.uid, p.gid, Some(p.name.clone()))
    };
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| SpecError::UnknownGroup(g.to_string()))?,
        };
    }
    let mut gids: BTreeSet<u32> = BTreeSet::new();
    gids.insert(gid);
    if let Some(name) = &name {
        for g in &groups {
            // Only supplementary groups: not the one named like the user.
            if &g.name != name && g.members.iter().any(|m| m == name) {
                gids.insert(g.gid);
            }
        }
    }
    gids.extend(supplemental.iter().filter_map(|g| u32::try_from(*g).ok()));
    Ok((uid, gid, gids.into_iter().collect()))
}

fn parse_cap(name: &str) -> Option<Capability> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Capability::from_str(bare).ok()
}

/// The capability set: containerd's defaults, `ALL` expands to every cap the kernel knows,
/// then adds, then drops. Unknown names are skipped (runc would warn and ignore them).
pub fn capabilities(caps: Option<&cri::Capability>, privileged: bool, cap_last_cap: u32) -> BTreeSet<String> {
    let known = || ALL_CAPS.iter().take(cap_last_cap as usize + 1).map(|c| c.to_string());
    if privileged {
        return known().collect();
    }
    let norm = |c: &String| {
        let u = c.to_ascii_uppercase();
        if u.starts_with("CAP_") {
            u
        } else {
            format!("CAP_{u}")
        }
    };
    let mut set: BTreeSet<String> = DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
    let Some(caps) = caps else { return set };
    let add: Vec<String> = caps.add_capabilities.iter().map(norm).collect();
    let drop: Vec<String> = caps.drop_capabilities.iter().map(norm).collect();
    if add.iter().any(|c| c == "CAP_ALL") {
        set = known().collect();
    }
    if drop.iter().any(|c| c == "CAP_ALL") {
        set.clear();
    }
    for c in add.into_iter().filter(|c| c != "CAP_ALL") {
        set.insert(c);
    }
    for c in drop.iter().filter(|c| *c != "CAP_ALL") {
        set.remove(c);
    }
    set
}

/// `oom_score_adj` as asked, but never below keel's own (containerd's `restrict_oom_score_adj`:
/// runc cannot lower it without CAP_SYS_RESOURCE) and within [-1000, 1000].
pub fn clamp_oom_score_adj(requested: i64, own: i32) -> i32 {
    let v = requested.clamp(-1000, 1000) as i32;
    v.max(own)
}

/// containerd's `getCgroupsPath`: `<parent>/<id>`, or `slice:cri-containerd:id` for systemd.
pub fn cgroups_path(parent: &str, id: &str) -> String {
    let base = Path::new(parent)
        .file_name()
        .map(|b| b.to_string_lossy().into_owned())
        .unwrap_or_default();
    if base.ends_with(".slice") {
        return format!("{base}:cri-containerd:{id}");
    }
    if parent.is_empty() {
        return id.to_string();
    }
    format!("{}/{id}", parent.trim_end_matches('/'))
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// containerd's default mounts for a CRI container (no `/run`), plus the read-only cgroup mount.
fn default_mounts(privileged: bool) -> Result<Vec<Mount>, SpecError> {
    let ro = if privileged { "rw" } else { "ro" };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", ro])?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", ro],
        )?,
    ])
}

fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

/// The sandbox's files as extra mounts (containerd's `containerMounts`), left out where the
/// CRI request mounts the same path itself.
pub fn sandbox_mounts(config: &cri::ContainerConfig, sandbox: &SandboxView) -> Vec<cri::Mount> {
    let readonly = security(config).readonly_rootfs;
    let has = |dest: &str| config.mounts.iter().any(|m| clean(&m.container_path) == dest);
    let mut out = Vec::new();
    let mut add = |dest: &str, src: &Option<PathBuf>, ro: bool| {
        if let Some(src) = src {
            if !has(dest) && src.exists() {
                out.push(cri::Mount {
                    container_path: dest.to_string(),
                    host_path: src.to_string_lossy().into_owned(),
                    readonly: ro,
                    ..Default::default()
                });
            }
        }
    };
    add("/etc/hostname", &sandbox.hostname_file, readonly);
    add("/etc/hosts", &sandbox.hosts_file, readonly);
    add("/etc/resolv.conf", &sandbox.resolv_file, readonly);
    add("/dev/shm", &sandbox.shm, false);
    out
}

/// CRI mounts then the extra ones not overridden, stable-sorted by depth (containerd's
/// `WithMounts` + `orderedMounts`) so a parent never shadows a child.
pub fn merge_mounts(cri_mounts: &[cri::Mount], extra: &[cri::Mount]) -> Vec<cri::Mount> {
    let mut mounts: Vec<cri::Mount> = cri_mounts.to_vec();
    for e in extra {
        if !cri_mounts
            .iter()
            .any(|c| clean(&c.container_path) == clean(&e.container_path))
        {
            mounts.push(e.clone());
        }
    }
    mounts.sort_by_key(|m| clean(&m.container_path).split('/').count());
    mounts
}

/// One line of `/proc/self/mountinfo`: mount point and optional fields.
fn mount_of(path: &Path, mountinfo: &str) -> Option<(String, String)> {
    let p = path.to_string_lossy();
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let point = f.get(4)?.to_string();
            let sep = f.iter().position(|x| *x == "-")?;
            let optional = f.get(6..sep)?.join(" ");
            Some((point, optional))
        })
        .filter(|(point, _)| point == "/" || p == point.as_str() || p.starts_with(&format!("{point}/")))
        .max_by_key(|(point, _)| point.len())
}

/// Checks, creates (0755) and resolves the host side of every mount as containerd does before
/// it builds the spec; a propagated mount's source must be shared (or slave).
pub fn prepare_mounts(mounts: &[cri::Mount]) -> Result<Vec<cri::Mount>, SpecError> {
    let mut out = Vec::with_capacity(mounts.len());
    let mut mountinfo: Option<String> = None;
    for m in mounts {
        let src = PathBuf::from(&m.host_path);
        match std::fs::metadata(&src) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&src)
                    .map_err(|source| SpecError::Mkdir {
                        path: src.clone(),
                        source,
                    })?;
            }
            Err(source) => return Err(SpecError::Stat { path: src, source }),
        }
        let resolved = std::fs::canonicalize(&src).map_err(|source| SpecError::Symlink {
            path: src.clone(),
            source,
        })?;
        let prop = m.propagation;
        if prop == cri::MountPropagation::PropagationBidirectional as i32
            || prop == cri::MountPropagation::PropagationHostToContainer as i32
        {
            let info =
                mountinfo.get_or_insert_with(|| std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
            let (point, optional) = mount_of(&resolved, info).unwrap_or_default();
            let shared = optional.contains("shared:");
            let slave = optional.contains("master:");
            if prop == cri::MountPropagation::PropagationBidirectional as i32 && !shared {
                return Err(SpecError::NotShared(resolved, point));
            }
            if !shared && !slave {
                return Err(SpecError::NotSharedOrSlave(resolved, point));
            }
        }
        out.push(cri::Mount {
            host_path: resolved.to_string_lossy().into_owned(),
            ..m.clone()
        });
    }
    Ok(out)
}

/// A device node for the spec from a host path (symlinks followed), with the rule's access.
pub fn host_device(
    host_path: &Path,
    container_path: &str,
    permissions: &str,
) -> Result<(LinuxDevice, String), SpecError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let err = |message: String| SpecError::Device {
        path: host_path.to_path_buf(),
        message,
    };
    let md = std::fs::metadata(host_path).map_err(|e| err(e.to_string()))?;
    let ft = md.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return Err(err("not a device node".to_string()));
    };
    let rdev = md.rdev();
    let dev = LinuxDeviceBuilder::default()
        .path(container_path)
        .typ(typ)
        .major(nix::sys::stat::major(rdev) as i64)
        .minor(nix::sys::stat::minor(rdev) as i64)
        .file_mode(md.mode() & 0o777)
        .uid(md.uid())
        .gid(md.gid())
        .build()?;
    let perms = if permissions.is_empty() { "rwm" } else { permissions };
    Ok((dev, perms.to_string()))
}

/// Every device node under the host's `/dev` (a privileged container's), skipping what runc
/// skips (`pts`, `shm`, `fd`, `mqueue`, the console).
pub fn all_host_devices() -> Vec<(LinuxDevice, String)> {
    fn walk(dir: &Path, out: &mut Vec<(LinuxDevice, String)>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if !matches!(
                    name.as_str(),
                    "pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".lxd-mounts" | ".udev"
                ) {
                    walk(&p, out);
                }
                continue;
            }
            if p == Path::new("/dev/console") || ft.is_symlink() {
                continue;
            }
            if let Ok(d) = host_device(&p, &p.to_string_lossy(), "rwm") {
                out.push(d);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/dev"), &mut out);
    out
}

fn namespace(typ: LinuxNamespaceType, path: Option<&Path>) -> Result<LinuxNamespace, SpecError> {
    let mut b = LinuxNamespaceBuilder::default().typ(typ);
    if let Some(p) = path {
        b = b.path(p);
    }
    Ok(b.build()?)
}

/// The container's namespaces: the sandbox's net/ipc/uts (none where the pod uses the node's),
/// pid by mode, a new mount namespace, a new cgroup namespace on cgroup2 hosts.
fn namespaces(input: &Input<'_>, privileged: bool) -> Result<Vec<LinuxNamespace>, SpecError> {
    let ns = security(input.config).namespace_options.unwrap_or_default();
    let node = cri::NamespaceMode::Node as i32;
    let mut out = vec![namespace(LinuxNamespaceType::Mount, None)?];
    match cri::NamespaceMode::try_from(ns.pid).unwrap_or(cri::NamespaceMode::Container) {
        cri::NamespaceMode::Node => {}
        cri::NamespaceMode::Pod => out.push(namespace(LinuxNamespaceType::Pid, input.sandbox.pidns.as_deref())?),
        cri::NamespaceMode::Target => out.push(namespace(LinuxNamespaceType::Pid, input.target_pidns.as_deref())?),
        cri::NamespaceMode::Container => out.push(namespace(LinuxNamespaceType::Pid, None)?),
    }
    if ns.network != node {
        out.push(namespace(LinuxNamespaceType::Network, input.sandbox.netns.as_deref())?);
    }
    if ns.ipc != node {
        out.push(namespace(LinuxNamespaceType::Ipc, input.sandbox.ipcns.as_deref())?);
    }
    // hostNetwork pods share the node's UTS namespace too.
    if ns.network != node {
        out.push(namespace(LinuxNamespaceType::Uts, input.sandbox.utsns.as_deref())?);
    }
    if input.host.cgroup2 && !privileged {
        out.push(namespace(LinuxNamespaceType::Cgroup, None)?);
    }
    Ok(out)
}

fn annotations(input: &Input<'_>) -> HashMap<String, String> {
    let md = input.sandbox.config.metadata.clone().unwrap_or_default();
    let name = input
        .config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let mut a: HashMap<String, String> = input.config.annotations.clone().into_iter().collect();
    a.insert(annotations::CONTAINER_TYPE.into(), "container".into());
    a.insert(annotations::SANDBOX_ID.into(), input.sandbox.id.clone());
    a.insert(annotations::SANDBOX_NAMESPACE.into(), md.namespace);
    a.insert(annotations::SANDBOX_UID.into(), md.uid);
    a.insert(annotations::SANDBOX_NAME.into(), md.name);
    a.insert(annotations::CONTAINER_NAME.into(), name);
    a.insert(annotations::IMAGE_NAME.into(), input.image_name.to_string());
    a
}

/// The full spec of a CRI container.
pub fn build(input: &Input<'_>) -> Result<Spec, SpecError> {
    let config = input.config;
    let sc = security(config);
    let res = resources(config);
    let privileged = sc.privileged;
    if privileged && !input.sandbox.privileged() {
        return Err(SpecError::PrivilegedNotAllowed);
    }

    // Process.
    let args = process_args(config, input.image)?;
    let env = environment(config, input.sandbox, input.image, input.host);
    let cwd = if !config.working_dir.is_empty() {
        config.working_dir.clone()
    } else if !input.image.working_dir.is_empty() {
        input.image.working_dir.clone()
    } else {
        "/".to_string()
    };
    let mut userstr = user_string(&sc)?;
    if userstr.is_empty() {
        userstr = input.image.user.clone();
    }
    let (uid, gid, gids) = resolve_user(&userstr, input.etc, &sc.supplemental_groups)?;
    let user = UserBuilder::default().uid(uid).gid(gid).additional_gids(gids).build()?;
    // The bounding set by name, for the RuntimeDefault seccomp profile.
    let mut bounding = BTreeSet::new();
    let caps: std::collections::HashSet<Capability> =
        capabilities(sc.capabilities.as_ref(), privileged, input.host.cap_last_cap)
            .into_iter()
            .filter_map(|c| {
                let cap = parse_cap(&c);
                if cap.is_none() {
                    tracing::warn!(container = input.id, capability = %c, "unknown capability ignored");
                } else {
                    bounding.insert(c);
                }
                cap
            })
            .collect();
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .permitted(caps.clone())
        .effective(caps)
        .ambient(std::collections::HashSet::new())
        .build()?;
    // The builders start from oci-spec's defaults; containerd's CRI spec has none of these.
    capabilities.set_inheritable(None);
    let mut process = ProcessBuilder::default()
        .terminal(config.tty)
        .user(user)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(capabilities)
        .no_new_privileges(sc.no_new_privs)
        .oom_score_adj(clamp_oom_score_adj(res.oom_score_adj, input.host.oom_score_adj))
        .build()?;
    // No rlimits: the container inherits the monitor's (containerd's WithoutDefaultSecuritySettings).
    process.set_rlimits(None);
    if let Some(p) = sc
        .apparmor
        .as_ref()
        .filter(|p| p.profile_type == cri::security_profile::ProfileType::Localhost as i32)
    {
        process.set_apparmor_profile(Some(
            p.localhost_ref
                .strip_prefix("localhost/")
                .unwrap_or(&p.localhost_ref)
                .to_string(),
        ));
    }

    // Mounts: defaults not overridden (nor under a mounted /dev), then the binds.
    let dests: BTreeSet<String> = input.mounts.iter().map(|m| clean(&m.container_path)).collect();
    let dev_mounted = dests.contains("/dev");
    let mut mounts: Vec<Mount> = default_mounts(privileged)?
        .into_iter()
        .filter(|m| {
            let d = clean(&m.destination().to_string_lossy());
            !(dests.contains(&d) || dev_mounted && d.starts_with("/dev/"))
        })
        .collect();
    let mut rootfs_propagation: Option<&str> = None;
    for m in input.mounts {
        let mut options = vec!["rbind".to_string()];
        match cri::MountPropagation::try_from(m.propagation).unwrap_or(cri::MountPropagation::PropagationPrivate) {
            cri::MountPropagation::PropagationBidirectional => {
                options.push("rshared".into());
                rootfs_propagation = Some("rshared");
            }
            cri::MountPropagation::PropagationHostToContainer => {
                options.push("rslave".into());
                if rootfs_propagation != Some("rshared") {
                    rootfs_propagation = Some("rslave");
                }
            }
            cri::MountPropagation::PropagationPrivate => options.push("rprivate".into()),
        }
        options.push(if m.readonly { "ro" } else { "rw" }.into());
        mounts.push(
            MountBuilder::default()
                .destination(&m.container_path)
                .typ("bind")
                .source(&m.host_path)
                .options(options)
                .build()?,
        );
    }

    // Resources.
    let mut cpu = LinuxCpuBuilder::default();
    if res.cpu_period != 0 {
        cpu = cpu.period(res.cpu_period as u64);
    }
    if res.cpu_quota != 0 {
        cpu = cpu.quota(res.cpu_quota);
    }
    if res.cpu_shares != 0 {
        cpu = cpu.shares(res.cpu_shares as u64);
    }
    if !res.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(res.cpuset_cpus.clone());
    }
    if !res.cpuset_mems.is_empty() {
        cpu = cpu.mems(res.cpuset_mems.clone());
    }
    let mut memory = LinuxMemoryBuilder::default();
    if res.memory_limit_in_bytes != 0 {
        memory = memory.limit(res.memory_limit_in_bytes);
        if res.memory_swap_limit_in_bytes != 0 {
            memory = memory.swap(res.memory_swap_limit_in_bytes);
        } else if input.host.swap_controller {
            memory = memory.swap(res.memory_limit_in_bytes);
        }
    }
    let mut device_rules: Vec<LinuxDeviceCgroup> =
        vec![LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build()?];
    if privileged {
        device_rules.push(LinuxDeviceCgroupBuilder::default().allow(true).access("rwm").build()?);
    }
    for (d, perms) in input.devices {
        device_rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(d.typ())
                .major(d.major())
                .minor(d.minor())
                .access(perms.clone())
                .build()?,
        );
    }
    let mut resources = LinuxResourcesBuilder::default()
        .devices(device_rules)
        .cpu(cpu.build()?)
        .memory(memory.build()?);
    if !res.unified.is_empty() {
        resources = resources.unified(res.unified.clone().into_iter().collect::<HashMap<_, _>>());
    }

    let mut linux = LinuxBuilder::default()
        .resources(resources.build()?)
        .cgroups_path(cgroups_path(&input.sandbox.cgroup_parent, input.id))
        .namespaces(namespaces(input, privileged)?)
        .devices(input.devices.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>());
    if !privileged {
        linux = linux
            .masked_paths(sc.masked_paths.clone())
            .readonly_paths(sc.readonly_paths.clone());
    }
    if let Some(p) = rootfs_propagation {
        linux = linux.rootfs_propagation(p);
    }
    // A privileged container gets no filter, whatever it asked for (containerd's WithPrivileged).
    if !privileged {
        match &input.seccomp {
            Profile::Unconfined => {}
            Profile::RuntimeDefault => {
                linux = linux.seccomp(seccomp::default_profile(&bounding, Family::host(), input.host.kernel))
            }
            Profile::Localhost(s) => linux = linux.seccomp(s.clone()),
        }
    }

    let mut linux = linux.build()?;
    if privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }
    let mut spec = SpecBuilder::default()
        .version(OCI_VERSION)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(sc.readonly_rootfs)
                .build()?,
        )
        .mounts(mounts)
        .process(process)
        .annotations(annotations(input))
        .linux(linux)
        .build()?;
    // A container joins the sandbox's UTS namespace and never sets the hostname itself.
    spec.set_hostname(None);
    Ok(spec)
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
