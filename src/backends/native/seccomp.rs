//! A container's seccomp filter: which profile the CRI asks for (RuntimeDefault, Localhost,
//! Unconfined, or the deprecated `seccomp_profile_path`) and keel's RuntimeDefault profile, which
//! behaves as containerd's `contrib/seccomp` default does (the one a containerd node gives
//! `seccompProfile: {type: RuntimeDefault}`): errno for everything not allowed, an allowlist per
//! architecture, more syscalls per capability in the bounding set, `personality` and `clone`
//! restricted by argument, `socket` refused for AF_ALG and AF_VSOCK.

use std::collections::BTreeSet;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSeccompOperator, LinuxSyscall,
};

use crate::genericruntime::seam::cri;

/// Errors resolving a container's profile (each is a bad request or an unreadable file).
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("failed to load seccomp profile {path:?}: {message}")]
    Load { path: String, message: String },
    #[error("seccomp config invalid LocalhostRef must only be set if ProfileType is Localhost")]
    RefWithoutLocalhost,
    #[error("seccomp unknown ProfileType {0}")]
    UnknownType(i32),
    #[error("invalid seccomp profile {0:?}")]
    BadPath(String),
}

/// The filter a container asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Profile {
    /// No filter (Unconfined, or nothing asked).
    #[default]
    Unconfined,
    /// keel's built-in profile ([`default_profile`]), which depends on the capabilities.
    RuntimeDefault,
    /// A Localhost profile, loaded.
    Localhost(LinuxSeccomp),
}

/// The deprecated CRI `seccomp_profile_path` values (containerd's `generateSecurityProfile`).
const RUNTIME_DEFAULT: &str = "runtime/default";
const DOCKER_DEFAULT: &str = "docker/default";
const UNCONFINED: &str = "unconfined";
const LOCALHOST_PREFIX: &str = "localhost/";

/// The profile of a CRI security context, as containerd 1.7 reads it: the `seccomp` field, or
/// when that is absent the deprecated `seccomp_profile_path` (`runtime/default`,
/// `docker/default`, `unconfined`, `localhost/<path>`). A Localhost profile is read here.
pub fn resolve(sc: &cri::LinuxContainerSecurityContext) -> Result<Profile, SeccompError> {
    use cri::security_profile::ProfileType;
    #[allow(deprecated)]
    let legacy = sc.seccomp_profile_path.as_str();
    let (kind, localhost_ref) = match &sc.seccomp {
        Some(p) => {
            let kind = ProfileType::try_from(p.profile_type).map_err(|_| SeccompError::UnknownType(p.profile_type))?;
            if kind != ProfileType::Localhost && !p.localhost_ref.is_empty() {
                return Err(SeccompError::RefWithoutLocalhost);
            }
            (kind, p.localhost_ref.as_str())
        }
        None => match legacy {
            "" => return Ok(Profile::Unconfined),
            RUNTIME_DEFAULT | DOCKER_DEFAULT => (ProfileType::RuntimeDefault, ""),
            UNCONFINED => (ProfileType::Unconfined, ""),
            p => match p.strip_prefix(LOCALHOST_PREFIX) {
                Some(rest) if !rest.is_empty() => (ProfileType::Localhost, rest),
                _ => return Err(SeccompError::BadPath(p.to_string())),
            },
        },
    };
    match kind {
        ProfileType::Unconfined => Ok(Profile::Unconfined),
        ProfileType::RuntimeDefault => Ok(Profile::RuntimeDefault),
        ProfileType::Localhost => {
            let path = localhost_ref.strip_prefix(LOCALHOST_PREFIX).unwrap_or(localhost_ref);
            let err = |message: String| SeccompError::Load {
                path: path.to_string(),
                message,
            };
            let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
            serde_json::from_str(&text)
                .map(Profile::Localhost)
                .map_err(|e| err(e.to_string()))
        }
    }
}

/// The CPU families the built-in profile knows (Go's GOARCH names in containerd's switch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    X86_64,
    X86,
    Aarch64,
    Arm,
    S390x,
    Ppc64le,
    Riscv64,
    Loongarch64,
    Other,
}

impl Family {
    /// The family keel was built for.
    pub fn host() -> Self {
        if cfg!(target_arch = "x86_64") {
            Family::X86_64
        } else if cfg!(target_arch = "x86") {
            Family::X86
        } else if cfg!(target_arch = "aarch64") {
            Family::Aarch64
        } else if cfg!(target_arch = "arm") {
            Family::Arm
        } else if cfg!(target_arch = "s390x") {
            Family::S390x
        } else if cfg!(all(target_arch = "powerpc64", target_endian = "little")) {
            Family::Ppc64le
        } else if cfg!(target_arch = "riscv64") {
            Family::Riscv64
        } else if cfg!(target_arch = "loongarch64") {
            Family::Loongarch64
        } else {
            Family::Other
        }
    }

    /// The seccomp architectures a filter covers: the native one and the compat ABIs a process
    /// may switch to (32-bit x86 and x32 on x86_64, 32-bit ARM on arm64).
    fn arches(self) -> Vec<Arch> {
        match self {
            Family::X86_64 => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
            Family::Aarch64 => vec![Arch::ScmpArchArm, Arch::ScmpArchAarch64],
            Family::S390x => vec![Arch::ScmpArchS390, Arch::ScmpArchS390x],
            Family::Riscv64 => vec![Arch::ScmpArchRiscv64],
            Family::Loongarch64 => vec![Arch::ScmpArchLoongarch64],
            // containerd lists none for these: the filter then applies to the native ABI only.
            Family::X86 | Family::Arm | Family::Ppc64le | Family::Other => vec![],
        }
    }

    /// Architecture-specific syscalls every container may use.
    fn extra(self) -> &'static [&'static str] {
        match self {
            Family::X86_64 => &["arch_prctl", "modify_ldt"],
            Family::X86 => &["modify_ldt"],
            Family::Aarch64 | Family::Arm => &[
                "arm_fadvise64_64",
                "arm_sync_file_range",
                "sync_file_range2",
                "breakpoint",
                "cacheflush",
                "set_tls",
            ],
            Family::S390x => &["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"],
            Family::Ppc64le => &["sync_file_range2", "swapcontext"],
            Family::Riscv64 => &["riscv_flush_icache", "riscv_hwprobe"],
            Family::Loongarch64 | Family::Other => &[],
        }
    }
}

/// Syscalls every container may make. Names the kernel or runc's libseccomp do not know are
/// skipped by runc, so newer syscalls can be listed before every host has them.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lsm_get_self_attr",
    "lsm_list_modules",
    "lsm_set_self_attr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "map_shadow_stack",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Syscalls allowed only with a capability in the bounding set.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_MODULE", &["delete_module", "init_module", "finit_module"]),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// `personality(2)` personas a container may switch to: PER_LINUX, UNAME26, PER_LINUX32,
/// UNAME26|PER_LINUX32, and 0xffffffff (which only queries the current one).
const PERSONAS: [u64; 5] = [0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

/// The namespace flags `clone(2)` may not carry without CAP_SYS_ADMIN.
pub const CLONE_NS_FLAGS: u64 = (nix::libc::CLONE_NEWNS
    | nix::libc::CLONE_NEWUTS
    | nix::libc::CLONE_NEWIPC
    | nix::libc::CLONE_NEWUSER
    | nix::libc::CLONE_NEWPID
    | nix::libc::CLONE_NEWNET
    | nix::libc::CLONE_NEWCGROUP) as u64;

fn arg(index: usize, value: u64, op: LinuxSeccompOperator) -> LinuxSeccompArg {
    arg2(index, value, None, op)
}

fn arg2(index: usize, value: u64, value_two: Option<u64>, op: LinuxSeccompOperator) -> LinuxSeccompArg {
    let mut b = LinuxSeccompArgBuilder::default().index(index).value(value).op(op);
    if let Some(v) = value_two {
        b = b.value_two(v);
    }
    // Every field has a default: building cannot fail.
    b.build().expect("seccomp arg")
}

fn rule(names: &[&str], action: LinuxSeccompAction, args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(|n| n.to_string()).collect());
    s.set_action(action);
    s.set_args(Some(args));
    s
}

fn allow(names: &[&str]) -> LinuxSyscall {
    rule(names, LinuxSeccompAction::ScmpActAllow, vec![])
}

/// keel's RuntimeDefault profile for a container whose bounding set is `bounding` (capability
/// names such as `CAP_SYS_ADMIN`), on CPU family `family` and a kernel of version `kernel`
/// (major, minor). Everything not allowed fails with EPERM (runc's errno when none is given).
pub fn default_profile(bounding: &BTreeSet<String>, family: Family, kernel: (u32, u32)) -> LinuxSeccomp {
    use LinuxSeccompOperator::{ScmpCmpEq, ScmpCmpGt, ScmpCmpLt, ScmpCmpMaskedEq};
    let mut rules = vec![allow(ALLOWED)];
    // socket(2) for every family but AF_ALG and AF_VSOCK (adjacent numbers), as three
    // single-condition rules: runc turns conditions on one argument of one rule into an OR.
    rules.push(rule(
        &["socket"],
        LinuxSeccompAction::ScmpActAllow,
        vec![arg(0, nix::libc::AF_ALG as u64, ScmpCmpLt)],
    ));
    rules.push(rule(
        &["socket"],
        LinuxSeccompAction::ScmpActAllow,
        vec![arg(0, nix::libc::AF_ALG as u64 + 1, ScmpCmpEq)],
    ));
    rules.push(rule(
        &["socket"],
        LinuxSeccompAction::ScmpActAllow,
        vec![arg(0, nix::libc::AF_VSOCK as u64, ScmpCmpGt)],
    ));
    for p in PERSONAS {
        rules.push(rule(
            &["personality"],
            LinuxSeccompAction::ScmpActAllow,
            vec![arg(0, p, ScmpCmpEq)],
        ));
    }
    // ptrace within the container is safe from 4.8 on (seccomp is checked after ptrace then).
    if kernel >= (4, 8) {
        rules.push(allow(&["process_vm_readv", "process_vm_writev", "ptrace"]));
    }
    let extra = family.extra();
    if !extra.is_empty() {
        rules.push(allow(extra));
    }
    for (cap, names) in BY_CAPABILITY {
        if bounding.contains(*cap) {
            rules.push(allow(names));
        }
    }
    if !bounding.contains("CAP_SYS_ADMIN") {
        // clone without namespace flags (s390x has the flags as the second argument).
        let index = if family == Family::S390x { 1 } else { 0 };
        let flags = arg2(index, CLONE_NS_FLAGS, Some(0), ScmpCmpMaskedEq);
        rules.push(rule(&["clone"], LinuxSeccompAction::ScmpActAllow, vec![flags]));
        // clone3's flags sit in memory seccomp cannot read: ENOSYS makes libcs fall back to clone.
        let mut clone3 = rule(&["clone3"], LinuxSeccompAction::ScmpActErrno, vec![]);
        clone3.set_args(None);
        clone3.set_errno_ret(Some(nix::libc::ENOSYS as u32));
        rules.push(clone3);
    }
    let mut s = LinuxSeccomp::default();
    s.set_default_action(LinuxSeccompAction::ScmpActErrno);
    s.set_architectures(Some(family.arches()));
    s.set_syscalls(Some(rules));
    s
}

/// The running kernel's (major, minor) from `uname -r`; (0, 0) when unreadable.
pub fn kernel_version() -> (u32, u32) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_kernel_version(&release)
}

/// `6.1.0-18-amd64` → (6, 1).
pub fn parse_kernel_version(release: &str) -> (u32, u32) {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor)
}

#[cfg(test)]
#[path = "seccomp_tests.rs"]
mod tests;
