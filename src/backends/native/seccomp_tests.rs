//! The RuntimeDefault profile, rule by rule, after containerd's `contrib/seccomp` default, and
//! how a CRI security context picks a profile.

use super::*;

use LinuxSeccompAction::{ScmpActAllow as Allow, ScmpActErrno as Errno};

fn caps(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|c| c.to_string()).collect()
}

/// containerd's default capabilities (what a pod without `capabilities` gets).
fn default_caps() -> BTreeSet<String> {
    caps(&crate::backends::native::spec::DEFAULT_CAPS)
}

/// What the filter does with `name(args...)`: the first rule naming the syscall whose argument
/// conditions all hold, else the default action (the single-condition rules keel writes make
/// libseccomp's rule order irrelevant).
fn verdict(p: &LinuxSeccomp, name: &str, args: &[u64]) -> (LinuxSeccompAction, Option<u32>) {
    for r in p.syscalls().as_ref().expect("syscalls") {
        if !r.names().iter().any(|n| n == name) {
            continue;
        }
        let holds = r.args().iter().flatten().all(|a| {
            let v = args.get(a.index()).copied().unwrap_or(0);
            match a.op() {
                LinuxSeccompOperator::ScmpCmpEq => v == a.value(),
                LinuxSeccompOperator::ScmpCmpNe => v != a.value(),
                LinuxSeccompOperator::ScmpCmpLt => v < a.value(),
                LinuxSeccompOperator::ScmpCmpLe => v <= a.value(),
                LinuxSeccompOperator::ScmpCmpGt => v > a.value(),
                LinuxSeccompOperator::ScmpCmpGe => v >= a.value(),
                LinuxSeccompOperator::ScmpCmpMaskedEq => v & a.value() == a.value_two().unwrap_or(0),
            }
        });
        if holds {
            return (r.action(), r.errno_ret());
        }
    }
    (p.default_action(), p.default_errno_ret())
}

fn allowed(p: &LinuxSeccomp, name: &str, args: &[u64]) -> bool {
    verdict(p, name, args).0 == Allow
}

#[test]
fn default_action_is_errno_and_common_syscalls_are_allowed() {
    let p = default_profile(&default_caps(), Family::X86_64, (6, 1));
    assert_eq!(p.default_action(), Errno);
    // runc returns EPERM when no errno is given, as for containerd's profile.
    assert_eq!(p.default_errno_ret(), None);
    for name in [
        "read",
        "write",
        "openat",
        "execve",
        "futex",
        "epoll_pwait",
        "socketpair",
        "wait4",
    ] {
        assert!(allowed(&p, name, &[]), "{name} refused");
    }
    for name in [
        "keyctl",
        "add_key",
        "request_key",
        "kexec_load",
        "swapon",
        "userfaultfd",
        "io_uring_setup",
    ] {
        assert_eq!(verdict(&p, name, &[]), (Errno, None), "{name} allowed");
    }
}

#[test]
fn architectures_per_family() {
    let x86 = default_profile(&default_caps(), Family::X86_64, (6, 1));
    assert_eq!(
        x86.architectures().clone().unwrap(),
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    );
    assert!(allowed(&x86, "arch_prctl", &[]));
    assert!(allowed(&x86, "modify_ldt", &[]));
    assert!(!allowed(&x86, "set_tls", &[]));

    let arm = default_profile(&default_caps(), Family::Aarch64, (6, 1));
    assert_eq!(
        arm.architectures().clone().unwrap(),
        vec![Arch::ScmpArchArm, Arch::ScmpArchAarch64]
    );
    for name in [
        "arm_fadvise64_64",
        "arm_sync_file_range",
        "sync_file_range2",
        "breakpoint",
        "cacheflush",
        "set_tls",
    ] {
        assert!(allowed(&arm, name, &[]), "{name} refused on aarch64");
    }
    assert!(!allowed(&arm, "arch_prctl", &[]));
    assert!(!allowed(&arm, "modify_ldt", &[]));

    let s390 = default_profile(&default_caps(), Family::S390x, (6, 1));
    assert_eq!(
        s390.architectures().clone().unwrap(),
        vec![Arch::ScmpArchS390, Arch::ScmpArchS390x]
    );
    assert!(allowed(&s390, "s390_runtime_instr", &[]));
    // The host keel runs on maps to one of the families with its own list.
    if cfg!(target_arch = "x86_64") {
        assert_eq!(Family::host(), Family::X86_64);
    } else if cfg!(target_arch = "aarch64") {
        assert_eq!(Family::host(), Family::Aarch64);
    }
}

#[test]
fn capability_dependent_syscalls() {
    let table: &[(&str, &[&str])] = &[
        ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
        (
            "CAP_SYS_ADMIN",
            &[
                "mount",
                "umount2",
                "unshare",
                "setns",
                "sethostname",
                "bpf",
                "fsopen",
                "clone3",
            ],
        ),
        ("CAP_SYS_BOOT", &["reboot"]),
        ("CAP_SYS_CHROOT", &["chroot"]),
        ("CAP_SYS_MODULE", &["init_module", "finit_module", "delete_module"]),
        ("CAP_SYS_PACCT", &["acct"]),
        ("CAP_SYS_PTRACE", &["kcmp", "pidfd_getfd", "process_madvise"]),
        ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
        ("CAP_SYS_TIME", &["settimeofday", "clock_settime"]),
        ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
        ("CAP_SYS_NICE", &["mbind", "set_mempolicy", "get_mempolicy"]),
        ("CAP_SYSLOG", &["syslog"]),
        ("CAP_BPF", &["bpf"]),
        ("CAP_PERFMON", &["perf_event_open"]),
    ];
    let none = default_profile(&caps(&[]), Family::X86_64, (6, 1));
    for (cap, names) in table {
        let with = default_profile(&caps(&[cap]), Family::X86_64, (6, 1));
        for name in *names {
            assert!(allowed(&with, name, &[]), "{name} refused with {cap}");
            assert!(!allowed(&none, name, &[]), "{name} allowed without {cap}");
        }
    }
    // containerd's defaults include CAP_SYS_CHROOT but not CAP_SYS_ADMIN.
    let d = default_profile(&default_caps(), Family::X86_64, (6, 1));
    assert!(allowed(&d, "chroot", &[]));
    assert!(!allowed(&d, "mount", &[]));
    assert!(!allowed(&d, "unshare", &[]));
}

#[test]
fn clone_namespace_flags_need_cap_sys_admin() {
    const SIGCHLD: u64 = 17;
    const CLONE_VM_THREAD: u64 = 0x100 | 0x10000 | 0x800 | 0x400; // CLONE_VM|THREAD|SIGHAND|FILES
    let p = default_profile(&default_caps(), Family::X86_64, (6, 1));
    assert!(allowed(&p, "clone", &[SIGCHLD]), "fork-like clone refused");
    assert!(allowed(&p, "clone", &[CLONE_VM_THREAD]), "thread clone refused");
    for flag in [
        nix::libc::CLONE_NEWUSER,
        nix::libc::CLONE_NEWNS,
        nix::libc::CLONE_NEWNET,
        nix::libc::CLONE_NEWPID,
        nix::libc::CLONE_NEWUTS,
        nix::libc::CLONE_NEWIPC,
        nix::libc::CLONE_NEWCGROUP,
    ] {
        assert!(
            !allowed(&p, "clone", &[SIGCHLD | flag as u64]),
            "clone flag {flag:#x} allowed"
        );
    }
    // clone3 (flags unreadable by seccomp) fails with ENOSYS so libcs fall back to clone.
    assert_eq!(verdict(&p, "clone3", &[]), (Errno, Some(nix::libc::ENOSYS as u32)));
    // s390x passes the flags second.
    let s390 = default_profile(&default_caps(), Family::S390x, (6, 1));
    assert!(allowed(&s390, "clone", &[0, SIGCHLD]));
    assert!(!allowed(&s390, "clone", &[0, nix::libc::CLONE_NEWUSER as u64]));
    // With CAP_SYS_ADMIN every clone is allowed and clone3 too.
    let admin = default_profile(&caps(&["CAP_SYS_ADMIN"]), Family::X86_64, (6, 1));
    assert!(allowed(&admin, "clone", &[nix::libc::CLONE_NEWUSER as u64]));
    assert!(allowed(&admin, "clone3", &[]));
}

#[test]
fn personality_only_known_personas() {
    let p = default_profile(&default_caps(), Family::X86_64, (6, 1));
    for persona in [0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff] {
        assert!(allowed(&p, "personality", &[persona]), "persona {persona:#x} refused");
    }
    // READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE: refused.
    for persona in [0x040_0000, 0x004_0000, 0x0001] {
        assert!(!allowed(&p, "personality", &[persona]), "persona {persona:#x} allowed");
    }
}

#[test]
fn socket_refuses_af_alg_and_af_vsock() {
    let p = default_profile(&default_caps(), Family::X86_64, (6, 1));
    for family in [
        nix::libc::AF_UNIX,
        nix::libc::AF_INET,
        nix::libc::AF_INET6,
        nix::libc::AF_NETLINK,
        nix::libc::AF_PACKET,
        nix::libc::AF_XDP,
    ] {
        assert!(
            allowed(&p, "socket", &[family as u64]),
            "socket family {family} refused"
        );
    }
    assert!(!allowed(&p, "socket", &[nix::libc::AF_ALG as u64]));
    assert!(!allowed(&p, "socket", &[nix::libc::AF_VSOCK as u64]));
}

#[test]
fn ptrace_from_kernel_4_8() {
    let new = default_profile(&default_caps(), Family::X86_64, (4, 8));
    let old = default_profile(&default_caps(), Family::X86_64, (4, 4));
    for name in ["ptrace", "process_vm_readv", "process_vm_writev"] {
        assert!(allowed(&new, name, &[]), "{name} refused on 4.8");
        assert!(!allowed(&old, name, &[]), "{name} allowed on 4.4");
    }
    assert_eq!(parse_kernel_version("6.1.0-18-amd64"), (6, 1));
    assert_eq!(parse_kernel_version("6.18.44-fc-v1300"), (6, 18));
    assert_eq!(parse_kernel_version("4.8"), (4, 8));
    assert_eq!(parse_kernel_version(""), (0, 0));
    assert!(kernel_version() >= (3, 0), "this kernel's version unread");
}

#[test]
fn json_as_runc_reads_it() {
    let p = default_profile(&default_caps(), Family::X86_64, (6, 1));
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(
        v["architectures"],
        serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
    );
    let rules = v["syscalls"].as_array().unwrap();
    let clone = rules
        .iter()
        .find(|r| r["names"] == serde_json::json!(["clone"]))
        .expect("clone rule");
    assert_eq!(clone["action"], "SCMP_ACT_ALLOW");
    assert_eq!(
        clone["args"],
        serde_json::json!([{"index": 0, "value": 2114060288u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}])
    );
    let clone3 = rules
        .iter()
        .find(|r| r["names"] == serde_json::json!(["clone3"]))
        .expect("clone3 rule");
    assert_eq!(clone3["action"], "SCMP_ACT_ERRNO");
    assert_eq!(clone3["errnoRet"], 38);
    // Round trip: what runc reads back is what keel built.
    let back: LinuxSeccomp = serde_json::from_value(v).unwrap();
    assert_eq!(back, p);
}

fn sc(profile: Option<(i32, &str)>, legacy: &str) -> cri::LinuxContainerSecurityContext {
    #[allow(deprecated)]
    cri::LinuxContainerSecurityContext {
        seccomp: profile.map(|(t, r)| cri::SecurityProfile {
            profile_type: t,
            localhost_ref: r.to_string(),
        }),
        seccomp_profile_path: legacy.to_string(),
        ..Default::default()
    }
}

#[test]
fn resolve_profile_field_and_legacy_path() {
    use cri::security_profile::ProfileType as T;
    let rd = T::RuntimeDefault as i32;
    let un = T::Unconfined as i32;
    assert_eq!(resolve(&sc(None, "")).unwrap(), Profile::Unconfined);
    assert_eq!(resolve(&sc(Some((rd, "")), "")).unwrap(), Profile::RuntimeDefault);
    assert_eq!(resolve(&sc(Some((un, "")), "")).unwrap(), Profile::Unconfined);
    // The deprecated path is read only when the field is absent.
    assert_eq!(resolve(&sc(None, "runtime/default")).unwrap(), Profile::RuntimeDefault);
    assert_eq!(resolve(&sc(None, "docker/default")).unwrap(), Profile::RuntimeDefault);
    assert_eq!(resolve(&sc(None, "unconfined")).unwrap(), Profile::Unconfined);
    assert_eq!(
        resolve(&sc(Some((un, "")), "runtime/default")).unwrap(),
        Profile::Unconfined
    );
    assert!(matches!(resolve(&sc(None, "bogus")), Err(SeccompError::BadPath(_))));
    assert!(matches!(
        resolve(&sc(Some((rd, "localhost/x.json")), "")),
        Err(SeccompError::RefWithoutLocalhost)
    ));
    assert!(matches!(
        resolve(&sc(Some((99, "")), "")),
        Err(SeccompError::UnknownType(99))
    ));
}

#[test]
fn resolve_localhost_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.json");
    std::fs::write(
        &path,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["keyctl"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let lh = cri::security_profile::ProfileType::Localhost as i32;
    let p = path.to_str().unwrap();
    let Profile::Localhost(s) = resolve(&sc(Some((lh, p)), "")).unwrap() else {
        panic!("not a Localhost profile")
    };
    assert_eq!(s.default_action(), Allow);
    let Profile::Localhost(legacy) = resolve(&sc(None, &format!("localhost/{p}"))).unwrap() else {
        panic!("legacy localhost/ path not loaded")
    };
    assert_eq!(legacy, s);
    let missing = dir.path().join("missing.json");
    let e = resolve(&sc(Some((lh, missing.to_str().unwrap())), "")).unwrap_err();
    assert!(matches!(e, SeccompError::Load { .. }), "{e}");
}
