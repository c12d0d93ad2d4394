//! Cgroup, writable-layer, CPU-rate and /proc/net/dev readings as tables over the v1, v2 and
//! hybrid layouts, on fixture files.

use super::*;

/// This machine's hybrid layout (v1 controllers, cgroup2 with no controllers).
const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / MNT/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / MNT/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / MNT/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / MNT/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / MNT/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / MNT/unified rw,relatime - cgroup2 cgroup2 rw
";

fn write(p: &Path, text: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

#[test]
fn mountinfo_finds_v1_controllers_and_cgroup2() {
    let l = CgroupLayout::parse_mountinfo(&HYBRID.replace("MNT", "/sys/fs/cgroup"));
    assert_eq!(l.mounts.len(), 6);
    assert_eq!(l.mounts[0].controllers, ["cpu"]);
    assert!(l.mounts[4].controllers.is_empty(), "name=systemd is no controller");
    assert!(l.mounts[5].v2);
    assert_eq!(
        l.dir("memory", "/kubepods/pod1/c1"),
        Some((PathBuf::from("/sys/fs/cgroup/memory/kubepods/pod1/c1"), false))
    );
    // A combined cpu,cpuacct hierarchy, and a mount whose root is not /.
    let l = CgroupLayout::parse_mountinfo(
        "1 0 0:1 /docker/x /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n",
    );
    assert_eq!(l.mounts[0].controllers, ["cpu", "cpuacct"]);
    assert_eq!(
        l.dir("cpuacct", "/docker/x/kubepods/c"),
        Some((PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/kubepods/c"), false))
    );
}

/// A pure v1 host (systemd's legacy layout: combined `cpu,cpuacct` and `net_cls,net_prio`).
const V1: &str = "\
25 24 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid - cgroup cgroup rw,net_cls,net_prio
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
";

/// A pure v2 host (systemd's unified layout).
const V2: &str = "\
24 1 0:21 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

/// (mountinfo, controller, cgroup path, the directory and whether it is cgroup2)
type Case<'a> = (&'a str, &'a str, &'a str, Option<(&'a str, bool)>);

#[test]
fn mountinfo_layouts_table() {
    let hybrid = HYBRID.replace("MNT", "/sys/fs/cgroup");
    let cases: [Case; 9] = [
        (
            &hybrid,
            "cpuacct",
            "/kp/p1/c",
            Some(("/sys/fs/cgroup/cpuacct/kp/p1/c", false)),
        ),
        (&hybrid, "pids", "kp/p1", Some(("/sys/fs/cgroup/pids/kp/p1", false))),
        // The hybrid cgroup2 mount holds no controllers (its root lists none here).
        (&hybrid, "io", "/kp/p1", None),
        (
            V1,
            "cpu",
            "/kp/p1/c",
            Some(("/sys/fs/cgroup/cpu,cpuacct/kp/p1/c", false)),
        ),
        (
            V1,
            "cpuacct",
            "/kp/p1/c",
            Some(("/sys/fs/cgroup/cpu,cpuacct/kp/p1/c", false)),
        ),
        (V1, "memory", "/", Some(("/sys/fs/cgroup/memory", false))),
        (V1, "systemd", "/kp", None),
        (
            V1,
            "net_prio",
            "/kp",
            Some(("/sys/fs/cgroup/net_cls,net_prio/kp", false)),
        ),
        // No v1 hierarchy and no such cgroup2 dir to list it: not there.
        (V2, "memory", "/definitely/not/here", None),
    ];
    for (text, controller, path, want) in cases {
        let l = CgroupLayout::parse_mountinfo(text);
        let want = want.map(|(d, v2)| (PathBuf::from(d), v2));
        assert_eq!(l.dir(controller, path), want, "{controller} {path} in\n{text}");
    }
    let v1 = CgroupLayout::parse_mountinfo(V1);
    assert_eq!(v1.mounts.len(), 5, "tmpfs is no cgroup mount");
    assert_eq!(
        v1.mounts[0].controllers,
        Vec::<String>::new(),
        "name= and options are no controllers"
    );
    assert_eq!(v1.mounts[3].controllers, ["memory"]);
    let v2 = CgroupLayout::parse_mountinfo(V2);
    assert_eq!(
        v2.mounts,
        [CgroupMount {
            mountpoint: "/sys/fs/cgroup".into(),
            root: "/".into(),
            v2: true,
            controllers: vec![],
        }]
    );
    // Optional fields before the separator, escaped spaces, broken lines.
    let l = CgroupLayout::parse_mountinfo(
        "7 1 0:9 /a\\040b /mnt/my\\040cg rw shared:3 master:1 - cgroup cgroup rw,memory\n\
         garbage line\n8 1 0:9 / /x - cgroup2\n",
    );
    assert_eq!(l.mounts.len(), 1);
    assert_eq!(l.mounts[0].mountpoint, PathBuf::from("/mnt/my cg"));
    assert_eq!(l.mounts[0].root, "/a b");
    assert_eq!(
        l.dir("memory", "/a b/kp"),
        Some((PathBuf::from("/mnt/my cg/kp"), false)),
        "a mount showing /a b holds /a b's children at its top"
    );
}

#[test]
fn v2_controllers_come_from_the_cgroup_itself() {
    let t = tempfile::tempdir().unwrap();
    let l = CgroupLayout::parse_mountinfo(&V2.replace("/sys/fs/cgroup", &t.path().display().to_string()));
    write(
        &t.path().join("cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids rdma\n",
    );
    // kp enables only memory and pids for its children.
    write(&t.path().join("kp/cgroup.controllers"), "cpu memory pids\n");
    write(&t.path().join("kp/p1/cgroup.controllers"), "memory pids\n");
    let p1 = t.path().join("kp/p1");
    assert_eq!(l.dir("memory", "/kp/p1"), Some((p1.clone(), true)));
    assert_eq!(l.dir("cpu", "/kp/p1"), None, "cpu not enabled below kp");
    assert_eq!(l.dir("cpu", "/kp"), Some((t.path().join("kp"), true)));
    assert_eq!(l.dir("io", "/"), Some((t.path().to_path_buf(), true)));
    // A child not made yet is judged by its parent.
    assert_eq!(l.dir("pids", "/kp/p1/new"), Some((p1.join("new"), true)));
    // cpu.stat is there without the cpu controller (core accounting): CPU is still read.
    write(&p1.join("cpu.stat"), "usage_usec 7\nuser_usec 5\nsystem_usec 2\n");
    write(&p1.join("memory.current"), "4096\n");
    write(&p1.join("memory.stat"), "anon 0\ninactive_file 0\n");
    write(&p1.join("cgroup.procs"), "");
    let (cpu, mem, procs) = l.usage("/kp/p1").unwrap();
    assert_eq!(cpu.usage_core_nano_seconds, u64v(7000));
    assert_eq!(mem.working_set_bytes, u64v(4096));
    assert_eq!(procs.process_count, u64v(0));
}

#[test]
fn processes_counted_once_over_the_subtree() {
    let t = tempfile::tempdir().unwrap();
    let l = CgroupLayout::parse_mountinfo(&HYBRID.replace("MNT", &t.path().display().to_string()));
    let pod = t.path().join("pids/kp/pod1");
    write(&pod.join("cgroup.procs"), "");
    // Two containers: sh + sleep, and a process that is mid-migration in both lists.
    write(&pod.join("c1/cgroup.procs"), "100\n101\n");
    write(&pod.join("c2/cgroup.procs"), "200\n101\n");
    write(&pod.join("c2/sub/cgroup.procs"), "201\n");
    // Threads are not processes: pids.current says 9, the pod has 4 processes.
    write(&pod.join("pids.current"), "9\n");
    assert_eq!(l.process_count("/kp/pod1"), Some(4));
    assert_eq!(l.process_count("/kp/pod1/c1"), Some(2));
    assert_eq!(l.process_count("/kp/gone"), None);
    // Without a pids hierarchy, another v1 hierarchy's cgroup.procs serve.
    let no_pids = CgroupLayout::parse_mountinfo(
        &HYBRID
            .replace("MNT", &t.path().display().to_string())
            .lines()
            .filter(|l| !l.contains("pids"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    write(&t.path().join("cpuacct/kp/pod1/c1/cgroup.procs"), "100\n");
    write(&t.path().join("cpuacct/kp/pod1/cgroup.procs"), "");
    assert_eq!(no_pids.process_count("/kp/pod1"), Some(1));
}

#[test]
fn hybrid_pod_cgroup_usage() {
    // The pod cgroup keel's ListPodSandboxStats reads: the pod's figures include its
    // containers' (v1 `total_*` fields are hierarchical), and its limit gives availableBytes.
    let t = tempfile::tempdir().unwrap();
    let l = CgroupLayout::parse_mountinfo(&HYBRID.replace("MNT", &t.path().display().to_string()));
    let at = |h: &str, f: &str| t.path().join(h).join("kp/burstable/podU").join(f);
    write(&at("cpuacct", "cpuacct.usage"), "5000000000\n");
    write(&at("memory", "memory.usage_in_bytes"), "33554432\n");
    write(&at("memory", "memory.limit_in_bytes"), "67108864\n");
    write(
        &at("memory", "memory.stat"),
        "rss 0\ninactive_file 0\ntotal_rss 1048576\ntotal_inactive_file 16777216\n",
    );
    write(&at("pids", "cgroup.procs"), "");
    write(&at("pids", "c1/cgroup.procs"), "10\n11\n");
    let (cpu, mem, procs) = l.usage("/kp/burstable/podU").unwrap();
    assert_eq!(cpu.usage_core_nano_seconds, u64v(5_000_000_000));
    assert_eq!(mem.working_set_bytes, u64v(16777216));
    assert_eq!(mem.available_bytes, u64v(67108864 - 16777216));
    assert_eq!(mem.rss_bytes, u64v(1048576));
    assert_eq!(procs.process_count, u64v(2));
    // Memory unreadable (controller file missing): CPU and processes still reported.
    fs::remove_file(at("memory", "memory.usage_in_bytes")).unwrap();
    let (_, mem, procs) = l.usage("/kp/burstable/podU").unwrap();
    assert_eq!(mem.working_set_bytes, None);
    assert_eq!(procs.process_count, u64v(2));
}

#[test]
fn v1_usage_from_fixture_files() {
    let t = tempfile::tempdir().unwrap();
    let mnt = t.path().display().to_string();
    let l = CgroupLayout::parse_mountinfo(&HYBRID.replace("MNT", &mnt));
    let cg = "/kubepods/podA/c1";
    write(&t.path().join("cpuacct/kubepods/podA/c1/cpuacct.usage"), "123456789\n");
    write(
        &t.path().join("memory/kubepods/podA/c1/memory.usage_in_bytes"),
        "10485760\n",
    );
    write(
        &t.path().join("memory/kubepods/podA/c1/memory.limit_in_bytes"),
        "9223372036854771712\n",
    );
    write(
        &t.path().join("memory/kubepods/podA/c1/memory.stat"),
        "cache 4096\nrss 1000\ninactive_file 1\ntotal_rss 2097152\ntotal_inactive_file 3145728\n\
         total_pgfault 77\ntotal_pgmajfault 3\n",
    );
    write(&t.path().join("pids/kubepods/podA/c1/cgroup.procs"), "1\n2\n3\n4\n");
    let upper = t.path().join("upper");
    write(&upper.join("etc/motd"), &"x".repeat(10_000));
    write(&upper.join("tmp/a"), "a");
    let u = container_stats_in(&l, cg, &upper).unwrap();
    assert_eq!(u.cpu.usage_core_nano_seconds, u64v(123456789));
    assert_eq!(u.memory.usage_bytes, u64v(10485760));
    assert_eq!(u.memory.working_set_bytes, u64v(10485760 - 3145728));
    assert_eq!(u.memory.rss_bytes, u64v(2097152));
    assert_eq!(u.memory.page_faults, u64v(77));
    assert_eq!(u.memory.major_page_faults, u64v(3));
    assert_eq!(u.memory.available_bytes, None, "unlimited");
    assert_eq!(u.process.process_count, u64v(4));
    // upper, etc, etc/motd, tmp, tmp/a
    assert_eq!(u.writable_layer.inodes_used, u64v(5));
    assert!(u.writable_layer.used_bytes.unwrap().value >= 10_000);
    // With a limit, available = limit - working set.
    write(
        &t.path().join("memory/kubepods/podA/c1/memory.limit_in_bytes"),
        "20971520\n",
    );
    let u = container_stats_in(&l, cg, &upper).unwrap();
    assert_eq!(u.memory.available_bytes, u64v(20971520 - (10485760 - 3145728)));
    // A gone cgroup: no stats.
    assert_eq!(container_stats_in(&l, "/kubepods/podA/gone", &upper), None);
}

#[test]
fn v2_usage_from_fixture_files() {
    let t = tempfile::tempdir().unwrap();
    let l = CgroupLayout::parse_mountinfo(&format!(
        "30 23 0:26 / {} rw - cgroup2 cgroup2 rw,nsdelegate\n",
        t.path().display()
    ));
    write(&t.path().join("cgroup.controllers"), "cpuset cpu io memory pids\n");
    write(&t.path().join("kubepods/cgroup.controllers"), "cpu memory pids\n");
    let d = t.path().join("kubepods/c2");
    write(
        &d.join("cpu.stat"),
        "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
    );
    write(&d.join("memory.current"), "8388608\n");
    write(&d.join("memory.max"), "max\n");
    write(
        &d.join("memory.stat"),
        "anon 1048576\nfile 4194304\ninactive_file 2097152\npgfault 9\npgmajfault 1\n",
    );
    write(&d.join("cgroup.procs"), "7\n8\n");
    let u = container_stats_in(&l, "/kubepods/c2", t.path()).unwrap();
    assert_eq!(u.cpu.usage_core_nano_seconds, u64v(2_500_000));
    assert_eq!(u.memory.working_set_bytes, u64v(8388608 - 2097152));
    assert_eq!(u.memory.rss_bytes, u64v(1048576));
    assert_eq!(u.memory.available_bytes, None);
    assert_eq!(u.process.process_count, u64v(2));
    write(&d.join("memory.max"), "16777216\n");
    let u = container_stats_in(&l, "/kubepods/c2", t.path()).unwrap();
    assert_eq!(u.memory.available_bytes, u64v(16777216 - (8388608 - 2097152)));
    // Inactive file above usage (racy reads) never underflows.
    write(&d.join("memory.current"), "1\n");
    let u = container_stats_in(&l, "/kubepods/c2", t.path()).unwrap();
    assert_eq!(u.memory.working_set_bytes, u64v(0));
}

#[test]
fn cpu_rate_from_consecutive_samples() {
    let rates = CpuRates::default();
    let mut a = cri::CpuUsage {
        timestamp: 1_000_000_000,
        usage_core_nano_seconds: u64v(5_000_000_000),
        usage_nano_cores: None,
    };
    rates.fill("c", &mut a);
    assert_eq!(a.usage_nano_cores, u64v(0), "the first sample: 0, as containerd");
    let mut b = cri::CpuUsage {
        timestamp: 3_000_000_000,
        usage_core_nano_seconds: u64v(5_500_000_000),
        usage_nano_cores: None,
    };
    rates.fill("c", &mut b);
    assert_eq!(b.usage_nano_cores, u64v(250_000_000));
    rates.forget("c");
    let mut c = b;
    c.usage_nano_cores = None;
    rates.fill("c", &mut c);
    assert_eq!(c.usage_nano_cores, u64v(0));
}

#[test]
fn cpu_rate_keeps_a_window_of_a_second() {
    let rates = CpuRates::default();
    let sample = |ts: i64, total: u64| cri::CpuUsage {
        timestamp: ts,
        usage_core_nano_seconds: u64v(total),
        usage_nano_cores: None,
    };
    let mut a = sample(10_000_000_000, 1_000_000_000);
    rates.fill("c", &mut a);
    // 10 ms later (ListPodSandboxStats right after ListContainerStats): a rate over 10 ms,
    // and the 10 s sample stays the reference.
    let mut b = sample(10_010_000_000, 1_005_000_000);
    rates.fill("c", &mut b);
    assert_eq!(b.usage_nano_cores, u64v(500_000_000));
    let mut c = sample(12_000_000_000, 1_500_000_000);
    rates.fill("c", &mut c);
    assert_eq!(
        c.usage_nano_cores,
        u64v(250_000_000),
        "over the 2 s since the kept sample"
    );
    // That one was a second on: it is the reference now.
    let mut d = sample(12_500_000_000, 1_750_000_000);
    rates.fill("c", &mut d);
    assert_eq!(d.usage_nano_cores, u64v(500_000_000));
    // A counter that went back (a new cgroup under the same ID) starts over.
    let mut e = sample(13_000_000_000, 10);
    rates.fill("c", &mut e);
    assert_eq!(e.usage_nano_cores, u64v(0));
    let mut f = sample(14_000_000_000, 1_000_000_010);
    rates.fill("c", &mut f);
    assert_eq!(f.usage_nano_cores, u64v(1_000_000_000));
}

#[test]
fn net_dev_parses_eth0_as_default() {
    let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0
  eth0:    5432      40    1    0    0     0          0         0     2100      20    2    0    0     0       0          0
  net1:      10       1    0    0    0     0          0         0       20       2    0    0    0     0       0          0
";
    let u = network_usage_from(text, 7);
    let eth0 = u.default_interface.unwrap();
    assert_eq!(
        (
            eth0.name.as_str(),
            eth0.rx_bytes,
            eth0.rx_errors,
            eth0.tx_bytes,
            eth0.tx_errors
        ),
        ("eth0", u64v(5432), u64v(1), u64v(2100), u64v(2))
    );
    assert_eq!(u.interfaces.len(), 1);
    assert_eq!(u.interfaces[0].name, "net1");
    assert_eq!(u.timestamp, 7);
}
