//! Spec building, as tables after containerd's `container_create_linux_test.go`,
//! `helpers_linux_test.go` and `pkg/cri/opts` tests.

use super::*;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn host() -> Host {
    Host {
        oom_score_adj: 0,
        hostname: "node-1".into(),
        cap_last_cap: 40,
        swap_controller: true,
        cgroup2: false,
        kernel: (6, 1),
    }
}

fn sandbox() -> SandboxView {
    SandboxView {
        id: "sb1".into(),
        config: cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "pod".into(),
                uid: "uid-1".into(),
                namespace: "ns".into(),
                attempt: 0,
            }),
            hostname: "pod-host".into(),
            ..Default::default()
        },
        netns: Some("/run/keel/ns/net/sb1".into()),
        ipcns: Some("/run/keel/ns/ipc/sb1".into()),
        utsns: Some("/run/keel/ns/uts/sb1".into()),
        pidns: None,
        cgroup_parent: "/kubepods/burstable/poduid-1".into(),
        ..Default::default()
    }
}

fn container() -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "c".into(),
            attempt: 0,
        }),
        command: s(&["sh", "-c"]),
        args: s(&["sleep 1"]),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

fn with_sc(
    mut c: cri::ContainerConfig,
    f: impl FnOnce(&mut cri::LinuxContainerSecurityContext),
) -> cri::ContainerConfig {
    let l = c.linux.get_or_insert_with(Default::default);
    f(l.security_context.get_or_insert_with(Default::default));
    c
}

fn with_res(mut c: cri::ContainerConfig, f: impl FnOnce(&mut cri::LinuxContainerResources)) -> cri::ContainerConfig {
    let l = c.linux.get_or_insert_with(Default::default);
    f(l.resources.get_or_insert_with(Default::default));
    c
}

fn build_with(
    config: &cri::ContainerConfig,
    image: &RunConfig,
    sb: &SandboxView,
    mounts: &[cri::Mount],
) -> Result<Spec, SpecError> {
    let etc = EtcFiles {
        passwd: Some("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n".into()),
        group: Some("root:x:0:\nnogroup:x:65534:\n".into()),
    };
    let h = host();
    build(&Input {
        id: "cid",
        config,
        sandbox: sb,
        image,
        image_name: "busybox:1",
        etc: &etc,
        host: &h,
        mounts,
        devices: &[],
        target_pidns: None,
        seccomp: seccomp::resolve(&security(config))?,
    })
}

#[test]
fn command_and_args_like_containerd() {
    let image = |ep: &[&str], cmd: &[&str]| RunConfig {
        entrypoint: s(ep),
        cmd: s(cmd),
        ..Default::default()
    };
    // (CRI command, CRI args, image entrypoint, image cmd, expected argv or None = error)
    type Case<'a> = (
        &'a [&'a str],
        &'a [&'a str],
        &'a [&'a str],
        &'a [&'a str],
        Option<&'a [&'a str]>,
    );
    let cases: Vec<Case<'_>> = vec![
        (&["a", "b"], &["c"], &["ep"], &["cmd"], Some(&["a", "b", "c"])),
        (&["a"], &[], &["ep"], &["cmd"], Some(&["a"])),
        (&[], &["x"], &["ep", "1"], &["cmd"], Some(&["ep", "1", "x"])),
        (&[], &[], &["ep"], &["cmd", "2"], Some(&["ep", "cmd", "2"])),
        (&[], &[], &[], &["cmd"], Some(&["cmd"])),
        (&[], &["x"], &[], &["cmd"], Some(&["x"])),
        (&[], &[], &[""], &["cmd"], Some(&["cmd"])),
        (&[], &[], &[], &[], None),
        (&[], &[], &[""], &[], None),
    ];
    for (cmd, args, ep, icmd, want) in cases {
        let c = cri::ContainerConfig {
            command: s(cmd),
            args: s(args),
            ..Default::default()
        };
        let got = process_args(&c, &image(ep, icmd));
        match want {
            Some(w) => assert_eq!(got.ok(), Some(s(w)), "{cmd:?} {args:?} {ep:?} {icmd:?}"),
            None => assert!(matches!(got, Err(SpecError::NoCommand)), "{cmd:?} {args:?}"),
        }
    }
}

#[test]
fn env_merges_path_hostname_image_and_cri() {
    let mut c = container();
    c.envs = vec![
        cri::KeyValue {
            key: "A".into(),
            value: "cri".into(),
        },
        cri::KeyValue {
            key: "NEW".into(),
            value: "x=y".into(),
        },
    ];
    let image = RunConfig {
        env: s(&["PATH=/image/bin", "A=image", "B=image"]),
        ..Default::default()
    };
    let sb = sandbox();
    assert_eq!(
        environment(&c, &sb, &image, &host()),
        s(&["PATH=/image/bin", "HOSTNAME=pod-host", "A=cri", "B=image", "NEW=x=y"])
    );
    // No sandbox hostname: the node's; TTY adds TERM; the CRI may override it.
    let mut sb2 = sandbox();
    sb2.config.hostname.clear();
    c.tty = true;
    let env = environment(&c, &sb2, &RunConfig::default(), &host());
    assert_eq!(env[..3], s(&[DEFAULT_PATH, "HOSTNAME=node-1", "TERM=xterm"])[..]);
    c.envs.push(cri::KeyValue {
        key: "TERM".into(),
        value: "dumb".into(),
    });
    assert!(environment(&c, &sb2, &RunConfig::default(), &host()).contains(&"TERM=dumb".to_string()));
}

#[test]
fn user_string_like_generate_user_string() {
    let sc = |name: &str, uid: Option<i64>, gid: Option<i64>| cri::LinuxContainerSecurityContext {
        run_as_username: name.into(),
        run_as_user: uid.map(|value| cri::Int64Value { value }),
        run_as_group: gid.map(|value| cri::Int64Value { value }),
        ..Default::default()
    };
    let cases = [
        (sc("", None, None), Some("")),
        (sc("testuser", None, None), Some("testuser")),
        (sc("testuser", Some(1), None), Some("testuser")),
        (sc("testuser", Some(1), Some(10)), Some("testuser:10")),
        (sc("testuser", None, Some(10)), Some("testuser:10")),
        (sc("", Some(1), None), Some("1")),
        (sc("", Some(1), Some(10)), Some("1:10")),
        (sc("", None, Some(10)), None),
    ];
    for (input, want) in cases {
        let got = user_string(&input);
        match want {
            Some(w) => assert_eq!(got.ok().as_deref(), Some(w)),
            None => assert!(matches!(got, Err(SpecError::GroupWithoutUser(10)))),
        }
    }
}

#[test]
fn user_and_groups_from_the_image() {
    let etc = EtcFiles {
        passwd: Some(
            "root:x:0:0:root:/root:/bin/sh\n\
             # comment\n\
             app:x:1000:1000::/home/app:/bin/sh\n\
             www:x:33:33::/var/www:/bin/false\n"
                .into(),
        ),
        group: Some(
            "root:x:0:\n\
             app:x:1000:app\n\
             extra:x:50000:app,www\n\
             staff:x:50:www\n\
             wheel:x:10:root\n"
                .into(),
        ),
    };
    type Case<'a> = (&'a str, &'a [i64], Result<(u32, u32, Vec<u32>), &'a str>);
    let cases: Vec<Case<'_>> = vec![
        // No user: root, its groups.
        ("", &[], Ok((0, 0, vec![0, 10]))),
        // Known uid: primary gid from passwd, member groups (not the user's own-name group).
        ("1000", &[], Ok((1000, 1000, vec![1000, 50000]))),
        // The blog example: runAsUser 1000, runAsGroup 3000, supplementalGroups 4000.
        ("1000:3000", &[4000], Ok((1000, 3000, vec![3000, 4000, 50000]))),
        // Unknown uid: gid 0, no image groups.
        ("4242", &[7, 7, 5], Ok((4242, 0, vec![0, 5, 7]))),
        ("www", &[], Ok((33, 33, vec![33, 50, 50000]))),
        ("www:staff", &[], Ok((33, 50, vec![50, 50000]))),
        ("app:wheel", &[], Ok((1000, 10, vec![10, 50000]))),
        ("ghost", &[], Err("user")),
        ("app:ghosts", &[], Err("group")),
    ];
    for (user, supp, want) in cases {
        let got = resolve_user(user, &etc, supp);
        match want {
            Ok(w) => assert_eq!(got.ok(), Some(w), "{user}"),
            Err("user") => assert!(matches!(got, Err(SpecError::UnknownUser(_))), "{user}"),
            Err(_) => assert!(matches!(got, Err(SpecError::UnknownGroup(_))), "{user}"),
        }
    }
    // No /etc/passwd at all (scratch images): numeric users still work.
    assert_eq!(resolve_user("5", &EtcFiles::default(), &[]).ok(), Some((5, 0, vec![0])));
}

/// containerd's `TestWithAdditionalGIDs` (`oci/spec_opts_linux_test.go`) through the CRI's
/// order: `WithUser` sets uid and gid first, `WithAdditionalGIDs` gets the user part only (the
/// CRI cuts `:group` off), the primary gid is always among the additional ones.
#[test]
fn additional_gids_like_containerd() {
    let etc = EtcFiles {
        passwd: Some(
            "root:x:0:0:root:/root:/bin/ash\n\
             bin:x:1:1:bin:/bin:/sbin/nologin\n\
             daemon:x:2:2:daemon:/sbin:/sbin/nologin\n"
                .into(),
        ),
        group: Some(
            "root:x:0:root\n\
             bin:x:1:root,bin,daemon\n\
             daemon:x:2:root,bin,daemon\n\
             sys:x:3:root,bin,adm\n"
                .into(),
        ),
    };
    type Want = (u32, u32, Vec<u32>);
    let cases: [(&str, Want); 6] = [
        ("root", (0, 0, vec![0, 1, 2, 3])),
        ("", (0, 0, vec![0, 1, 2, 3])),
        ("1000", (1000, 0, vec![0])),
        ("bin", (1, 1, vec![1, 2, 3])),
        ("bin:root", (1, 0, vec![0, 2, 3])),
        ("daemon", (2, 2, vec![1, 2])),
    ];
    for (user, want) in cases {
        assert_eq!(resolve_user(user, &etc, &[]).ok(), Some(want), "{user:?}");
    }
}

/// The kubelet puts fsGroup (then supplementalGroups) into the CRI `supplemental_groups`;
/// containerd's `WithSupplementalGroups` merges them into `additionalGids`, sorted and
/// deduplicated, beside the primary gid, whether or not the image knows the user.
#[test]
fn fs_group_and_supplemental_groups_reach_the_process() {
    let c = with_sc(container(), |sc| {
        sc.run_as_user = Some(cri::Int64Value { value: 1000 });
        sc.run_as_group = Some(cri::Int64Value { value: 3000 });
        sc.supplemental_groups = vec![1234, 5, 1234, 3000];
    });
    let spec = build_with(&c, &RunConfig::default(), &sandbox(), &[]).expect("spec");
    let u = spec.process().clone().expect("process").user().clone();
    assert_eq!((u.uid(), u.gid()), (1000, 3000));
    assert_eq!(u.additional_gids().clone(), Some(vec![5, 1234, 3000]));
    // runc reads them as `additionalGids`.
    let json = serde_json::to_value(&spec).expect("json");
    assert_eq!(
        json["process"]["user"],
        serde_json::json!({"uid": 1000, "gid": 3000, "additionalGids": [5, 1234, 3000]})
    );
    // A named user of the image: its image groups and the pod's together.
    let c = with_sc(container(), |sc| {
        sc.run_as_user = Some(cri::Int64Value { value: 65534 });
        sc.supplemental_groups = vec![1234];
    });
    let spec = build_with(&c, &RunConfig::default(), &sandbox(), &[]).expect("spec");
    let u = spec.process().clone().expect("process").user().clone();
    assert_eq!((u.uid(), u.gid()), (65534, 65534));
    assert_eq!(u.additional_gids().clone(), Some(vec![1234, 65534]));
}

#[test]
fn capabilities_add_drop_and_all() {
    let caps = |add: &[&str], drop: &[&str]| cri::Capability {
        add_capabilities: s(add),
        drop_capabilities: s(drop),
        ..Default::default()
    };
    let defaults: BTreeSet<String> = DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
    assert_eq!(capabilities(None, false, 40), defaults);
    let got = capabilities(Some(&caps(&["SYS_ADMIN"], &["CHOWN"])), false, 40);
    assert!(got.contains("CAP_SYS_ADMIN") && !got.contains("CAP_CHOWN"));
    assert_eq!(got.len(), 14);
    // ALL means every cap the kernel knows.
    assert_eq!(capabilities(Some(&caps(&["ALL"], &[])), false, 40).len(), 41);
    assert_eq!(capabilities(Some(&caps(&["ALL"], &[])), false, 37).len(), 38);
    assert!(capabilities(Some(&caps(&[], &["ALL"])), false, 40).is_empty());
    let all_but = capabilities(Some(&caps(&["ALL"], &["CHOWN"])), false, 40);
    assert_eq!(all_but.len(), 40);
    assert!(!all_but.contains("CAP_CHOWN"));
    assert_eq!(
        capabilities(Some(&caps(&["sys_admin", "CAP_NET_ADMIN"], &["ALL"])), false, 40),
        ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
            .iter()
            .map(|c| c.to_string())
            .collect()
    );
    // Privileged: everything, whatever the request says.
    assert_eq!(capabilities(Some(&caps(&[], &["ALL"])), true, 40).len(), 41);

    // In the spec: bounding = permitted = effective, inheritable unset, ambient empty.
    let c = with_sc(container(), |sc| {
        sc.capabilities = Some(caps(&["NET_ADMIN", "NOT_A_CAP"], &["KILL"]))
    });
    let spec = build_with(&c, &RunConfig::default(), &sandbox(), &[]).expect("spec");
    let pc = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().clone())
        .expect("caps");
    let eff = pc.effective().clone().unwrap_or_default();
    assert!(eff.contains(&Capability::NetAdmin) && !eff.contains(&Capability::Kill));
    assert_eq!(eff.len(), 14);
    assert_eq!(pc.bounding().clone().unwrap_or_default(), eff);
    assert_eq!(pc.permitted().clone().unwrap_or_default(), eff);
    assert!(pc.inheritable().is_none());
    assert_eq!(pc.ambient().clone().map(|a| a.len()), Some(0));
}

#[test]
fn mounts_sorted_by_depth_and_deduplicated() {
    let m = |dest: &str, src: &str| cri::Mount {
        container_path: dest.into(),
        host_path: src.into(),
        ..Default::default()
    };
    let cri_mounts = vec![
        m("/a/b/c", "/h1"),
        m("/a", "/h2"),
        m("/etc/hosts", "/kubelet/hosts"),
        m("/x/y", "/h3"),
    ];
    let extra = vec![
        m("/etc/hostname", "/sb/hostname"),
        m("/etc/hosts/", "/sb/hosts"),
        m("/dev/shm", "/sb/shm"),
    ];
    let got: Vec<(String, String)> = merge_mounts(&cri_mounts, &extra)
        .into_iter()
        .map(|m| (m.container_path, m.host_path))
        .collect();
    let want: Vec<(String, String)> = [
        ("/a", "/h2"),
        ("/etc/hosts", "/kubelet/hosts"),
        ("/x/y", "/h3"),
        ("/etc/hostname", "/sb/hostname"),
        ("/dev/shm", "/sb/shm"),
        ("/a/b/c", "/h1"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want);
}

fn dests(spec: &Spec) -> Vec<String> {
    spec.mounts()
        .as_ref()
        .map(|ms| {
            ms.iter()
                .map(|m| m.destination().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn mount_opts(spec: &Spec, dest: &str) -> Vec<String> {
    spec.mounts()
        .as_ref()
        .and_then(|ms| ms.iter().find(|m| m.destination() == Path::new(dest)))
        .and_then(|m| m.options().clone())
        .unwrap_or_default()
}

#[test]
fn default_mounts_without_run_and_overrides() {
    let spec = build_with(&container(), &RunConfig::default(), &sandbox(), &[]).expect("spec");
    assert_eq!(
        dests(&spec),
        s(&[
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup"
        ])
    );
    assert_eq!(mount_opts(&spec, "/sys").last().map(String::as_str), Some("ro"));
    // A CRI /dev/shm replaces the default one; a CRI /dev drops every /dev/* default.
    let bind = |dest: &str, ro: bool, prop: cri::MountPropagation| cri::Mount {
        container_path: dest.into(),
        host_path: format!("/host{dest}"),
        readonly: ro,
        propagation: prop as i32,
        ..Default::default()
    };
    let mounts = vec![bind("/dev/shm", false, cri::MountPropagation::PropagationPrivate)];
    let spec = build_with(&container(), &RunConfig::default(), &sandbox(), &mounts).expect("spec");
    assert_eq!(
        dests(&spec),
        s(&[
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/dev/shm"
        ])
    );
    assert_eq!(mount_opts(&spec, "/dev/shm"), s(&["rbind", "rprivate", "rw"]));
    let mounts = vec![
        bind("/dev", true, cri::MountPropagation::PropagationHostToContainer),
        bind("/data", false, cri::MountPropagation::PropagationBidirectional),
    ];
    let spec = build_with(&container(), &RunConfig::default(), &sandbox(), &mounts).expect("spec");
    assert_eq!(dests(&spec), s(&["/proc", "/sys", "/sys/fs/cgroup", "/dev", "/data"]));
    assert_eq!(mount_opts(&spec, "/dev"), s(&["rbind", "rslave", "ro"]));
    assert_eq!(mount_opts(&spec, "/data"), s(&["rbind", "rshared", "rw"]));
    assert_eq!(
        spec.linux()
            .as_ref()
            .and_then(|l| l.rootfs_propagation().clone())
            .as_deref(),
        Some("rshared")
    );
}

#[test]
fn sandbox_files_follow_readonly_rootfs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = |n: &str| {
        let p = dir.path().join(n);
        std::fs::write(&p, "x").expect("write");
        Some(p)
    };
    let mut sb = sandbox();
    sb.hostname_file = file("hostname");
    sb.hosts_file = file("hosts");
    sb.resolv_file = file("resolv.conf");
    sb.shm = Some(dir.path().to_path_buf());
    let mut c = with_sc(container(), |sc| sc.readonly_rootfs = true);
    // The kubelet's own /etc/hosts wins over the sandbox's.
    c.mounts.push(cri::Mount {
        container_path: "/etc/hosts".into(),
        host_path: "/kubelet/etc-hosts".into(),
        ..Default::default()
    });
    let got: Vec<(String, bool)> = sandbox_mounts(&c, &sb)
        .into_iter()
        .map(|m| (m.container_path, m.readonly))
        .collect();
    assert_eq!(
        got,
        vec![
            ("/etc/hostname".to_string(), true),
            ("/etc/resolv.conf".to_string(), true),
            ("/dev/shm".to_string(), false)
        ]
    );
    let spec = build_with(&c, &RunConfig::default(), &sb, &[]).expect("spec");
    assert_eq!(spec.root().as_ref().and_then(|r| r.readonly()), Some(true));
    let spec = build_with(&container(), &RunConfig::default(), &sb, &[]).expect("spec");
    assert_eq!(spec.root().as_ref().and_then(|r| r.readonly()), Some(false));
}

#[test]
fn masked_and_readonly_paths_are_the_requests() {
    let masked = s(&["/proc/acpi", "/proc/kcore"]);
    let readonly = s(&["/proc/sys"]);
    let c = with_sc(container(), |sc| {
        sc.masked_paths = masked.clone();
        sc.readonly_paths = readonly.clone();
    });
    let spec = build_with(&c, &RunConfig::default(), &sandbox(), &[]).expect("spec");
    let linux = spec.linux().clone().expect("linux");
    assert_eq!(linux.masked_paths().clone(), Some(masked));
    assert_eq!(linux.readonly_paths().clone(), Some(readonly));
    // None asked: none (containerd resets its defaults for CRI containers).
    let spec = build_with(&container(), &RunConfig::default(), &sandbox(), &[]).expect("spec");
    assert_eq!(
        spec.linux().as_ref().and_then(|l| l.masked_paths().clone()),
        Some(vec![])
    );
}

#[test]
fn oom_score_adj_clamped() {
    for (req, own, want) in [
        (-998, 0, 0),
        (1000, 0, 1000),
        (500, 0, 500),
        (-997, -500, -500),
        (3, -999, 3),
        (5000, 0, 1000),
        (-5000, -1000, -1000),
        (0, 200, 200),
    ] {
        assert_eq!(clamp_oom_score_adj(req, own), want, "{req} {own}");
    }
    let c = with_res(container(), |r| r.oom_score_adj = -997);
    let spec = build_with(&c, &RunConfig::default(), &sandbox(), &[]).expect("spec");
    assert_eq!(spec.process().as_ref().and_then(|p| p.oom_score_adj()), Some(0));
}

#[test]
fn cgroups_path_like_get_cgroups_path() {
    for (parent, want) in [
        ("/kubepods/burstable/pod123", "/kubepods/burstable/pod123/cid"),
        ("/kubepods/", "/kubepods/cid"),
        ("", "cid"),
        (
            "kubepods.slice/kubepods-besteffort.slice",
            "kubepods-besteffort.slice:cri-containerd:cid",
        ),
    ] {
        assert_eq!(cgroups_path(parent, "cid"), want);
    }
    let spec = build_with(&container(), &RunConfig::default(), &sandbox(), &[]).expect("spec");
    assert_eq!(
        spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()),
        Some(PathBuf::from("/kubepods/burstable/poduid-1/cid"))
    );
}

#[test]
fn resources_only_when_set() {
    let c = with_res(container(), |r| {
        r.cpu_period = 100_000;
        r.cpu_quota = 50_000;
        r.cpu_shares = 512;
        r.memory_limit_in_bytes = 64 << 20;
        r.cpuset_cpus = "0".into();
    });
    let spec = build_with(&c, &RunConfig::default(), &sandbox(), &[]).expect("spec");
    let res = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .expect("resources");
    let cpu = res.cpu().clone().expect("cpu");
    assert_eq!(
        (cpu.period(), cpu.quota(), cpu.shares()),
        (Some(100_000), Some(50_000), Some(512))
    );
    assert_eq!(cpu.cpus().as_deref(), Some("0"));
    let mem = (*res.memory()).expect("memory");
    assert_eq!((mem.limit(), mem.swap()), (Some(64 << 20), Some(64 << 20)));
    // Deny-all first.
    let devs = res.devices().clone().unwrap_or_default();
    assert!(!devs[0].allow() && devs[0].access().as_deref() == Some("rwm"));

    let spec = build_with(&container(), &RunConfig::default(), &sandbox(), &[]).expect("spec");
    let res = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .expect("resources");
    let cpu = res.cpu().clone().expect("cpu");
    assert_eq!((cpu.period(), cpu.quota(), cpu.shares()), (None, None, None));
    assert_eq!((*res.memory()).and_then(|m| m.limit()), None);
}

#[test]
fn namespaces_follow_the_sandbox() {
    let ns_of = |spec: &Spec| -> Vec<(String, Option<String>)> {
        spec.linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default()
            .iter()
            .map(|n| {
                (
                    n.typ().to_string(),
                    n.path().as_ref().map(|p| p.to_string_lossy().into_owned()),
                )
            })
            .collect()
    };
    let opts = |network: cri::NamespaceMode, pid: cri::NamespaceMode, ipc: cri::NamespaceMode| {
        with_sc(container(), |sc| {
            sc.namespace_options = Some(cri::NamespaceOption {
                network: network as i32,
                pid: pid as i32,
                ipc: ipc as i32,
                ..Default::default()
            })
        })
    };
    use cri::NamespaceMode::{Container, Node, Pod};
    let spec = build_with(&opts(Pod, Container, Pod), &RunConfig::default(), &sandbox(), &[]).expect("spec");
    let p = |x: &str| Some(x.to_string());
    assert_eq!(
        ns_of(&spec),
        vec![
            ("mnt".to_string(), None),
            ("pid".to_string(), None),
            ("net".to_string(), p("/run/keel/ns/net/sb1")),
            ("ipc".to_string(), p("/run/keel/ns/ipc/sb1")),
            ("uts".to_string(), p("/run/keel/ns/uts/sb1")),
        ]
    );
    // hostNetwork + hostPID + hostIPC: only a mount namespace.
    let spec = build_with(&opts(Node, Node, Node), &RunConfig::default(), &sandbox(), &[]).expect("spec");
    assert_eq!(ns_of(&spec), vec![("mnt".to_string(), None)]);
    // shareProcessNamespace: the sandbox's pid namespace.
    let mut sb = sandbox();
    sb.pidns = Some("/proc/77/ns/pid".into());
    let spec = build_with(&opts(Pod, Pod, Pod), &RunConfig::default(), &sb, &[]).expect("spec");
    assert!(ns_of(&spec).contains(&("pid".to_string(), p("/proc/77/ns/pid"))));
}

#[test]
fn privileged_needs_a_privileged_sandbox() {
    let c = with_sc(container(), |sc| {
        sc.privileged = true;
        sc.masked_paths = s(&["/proc/kcore"]);
    });
    assert!(matches!(
        build_with(&c, &RunConfig::default(), &sandbox(), &[]),
        Err(SpecError::PrivilegedNotAllowed)
    ));
    let mut sb = sandbox();
    sb.config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let spec = build_with(&c, &RunConfig::default(), &sb, &[]).expect("spec");
    assert_eq!(mount_opts(&spec, "/sys").last().map(String::as_str), Some("rw"));
    assert_eq!(spec.linux().as_ref().and_then(|l| l.masked_paths().clone()), None);
    let eff = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().clone())
        .and_then(|c| c.effective().clone())
        .unwrap_or_default();
    assert_eq!(eff.len(), 41);
}

#[test]
fn process_basics_and_annotations() {
    let mut c = with_sc(container(), |sc| {
        sc.no_new_privs = true;
        sc.run_as_user = Some(cri::Int64Value { value: 65534 });
    });
    c.working_dir = String::new();
    c.tty = true;
    let image = RunConfig {
        working_dir: "/work".into(),
        user: "0".into(),
        ..Default::default()
    };
    let spec = build_with(&c, &image, &sandbox(), &[]).expect("spec");
    let p = spec.process().clone().expect("process");
    assert_eq!(p.cwd(), Path::new("/work"));
    assert_eq!(p.terminal(), Some(true));
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!((p.user().uid(), p.user().gid()), (65534, 65534));
    assert_eq!(p.user().additional_gids().clone(), Some(vec![65534]));
    assert!(p.rlimits().is_none());
    let a = spec.annotations().clone().unwrap_or_default();
    assert_eq!(
        a.get(annotations::CONTAINER_TYPE).map(String::as_str),
        Some("container")
    );
    assert_eq!(a.get(annotations::SANDBOX_ID).map(String::as_str), Some("sb1"));
    assert_eq!(a.get(annotations::CONTAINER_NAME).map(String::as_str), Some("c"));
    assert_eq!(a.get(annotations::IMAGE_NAME).map(String::as_str), Some("busybox:1"));
    assert_eq!(spec.version(), OCI_VERSION);
    // Round trip through JSON as runc reads it.
    let json = serde_json::to_string(&spec).expect("json");
    assert!(json.contains("\"oomScoreAdj\":0") && json.contains("\"path\":\"rootfs\""));
    assert!(!json.contains("hostname") && !json.contains("rlimits") && !json.contains("inheritable"));
    assert!(json.contains("\"type\":\"network\""));
}

#[test]
fn mountinfo_lookup_finds_the_deepest_mount() {
    let info = "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                30 22 0:25 / /mnt/shared rw shared:7 - tmpfs tmpfs rw\n\
                31 22 0:26 / /mnt/slave rw master:8 - tmpfs tmpfs rw\n\
                32 22 0:27 / /mnt/private rw - tmpfs tmpfs rw\n";
    let get = |p: &str| mount_of(Path::new(p), info);
    assert_eq!(get("/mnt/shared/x"), Some(("/mnt/shared".into(), "shared:7".into())));
    assert_eq!(get("/mnt/slave"), Some(("/mnt/slave".into(), "master:8".into())));
    assert_eq!(get("/mnt/private/a/b"), Some(("/mnt/private".into(), String::new())));
    assert_eq!(get("/mnt/sharedx"), Some(("/".into(), "shared:1".into())));
}

#[test]
fn prepare_mounts_creates_and_resolves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = dir.path().join("real");
    std::fs::create_dir(&real).expect("mkdir");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let missing = dir.path().join("a/b");
    let m = |p: &Path| cri::Mount {
        container_path: "/x".into(),
        host_path: p.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let got = prepare_mounts(&[m(&link), m(&missing)]).expect("prepare");
    assert_eq!(Path::new(&got[0].host_path), real.canonicalize().expect("canon"));
    assert!(missing.is_dir());
}

#[test]
fn runtime_default_seccomp_follows_the_capabilities() {
    use cri::security_profile::ProfileType;
    let profile = |t: ProfileType| cri::SecurityProfile {
        profile_type: t as i32,
        localhost_ref: String::new(),
    };
    let filter = |c: &cri::ContainerConfig, sb: &SandboxView| {
        build_with(c, &RunConfig::default(), sb, &[])
            .expect("spec")
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().clone())
    };
    let names = |s: &oci_spec::runtime::LinuxSeccomp| -> Vec<String> {
        s.syscalls()
            .iter()
            .flatten()
            .filter(|r| {
                r.action() == oci_spec::runtime::LinuxSeccompAction::ScmpActAllow
                    && r.args().iter().flatten().next().is_none()
            })
            .flat_map(|r| r.names().clone())
            .collect()
    };
    // No profile, or Unconfined: no filter.
    assert_eq!(filter(&container(), &sandbox()), None);
    let unconfined = with_sc(container(), |sc| sc.seccomp = Some(profile(ProfileType::Unconfined)));
    assert_eq!(filter(&unconfined, &sandbox()), None);
    // RuntimeDefault: the built-in profile for containerd's default capabilities.
    let rd = with_sc(container(), |sc| {
        sc.seccomp = Some(profile(ProfileType::RuntimeDefault))
    });
    let rdf = filter(&rd, &sandbox()).expect("RuntimeDefault gives a filter");
    assert_eq!(
        rdf.default_action(),
        oci_spec::runtime::LinuxSeccompAction::ScmpActErrno
    );
    assert!(names(&rdf).contains(&"chroot".to_string()));
    assert!(!names(&rdf).contains(&"mount".to_string()));
    // Dropping CAP_SYS_CHROOT takes chroot away; adding SYS_ADMIN gives mount.
    let tuned = with_sc(rd.clone(), |sc| {
        sc.capabilities = Some(cri::Capability {
            add_capabilities: s(&["SYS_ADMIN"]),
            drop_capabilities: s(&["SYS_CHROOT"]),
            add_ambient_capabilities: vec![],
        })
    });
    let t = filter(&tuned, &sandbox()).expect("filter");
    assert!(!names(&t).contains(&"chroot".to_string()));
    assert!(names(&t).contains(&"mount".to_string()));
    assert!(names(&t).contains(&"clone".to_string()));
    // The deprecated path asks the same.
    let legacy = with_sc(container(), |sc| {
        #[allow(deprecated)]
        {
            sc.seccomp_profile_path = "runtime/default".into();
        }
    });
    assert_eq!(filter(&legacy, &sandbox()), Some(rdf));
    // A privileged container gets none, whatever it asked for.
    let privileged = with_sc(rd, |sc| sc.privileged = true);
    let mut sb = sandbox();
    sb.config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(filter(&privileged, &sb), None);
}
