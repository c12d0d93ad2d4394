//! Native backend sandboxes on real namespaces, mounts and CNI plugins (root only; each test
//! prints why it skips otherwise).
//!
//! Networking: a recording test plugin that configures nothing (its result names a pod IP only
//! inside the test's own netns) beside the real `loopback` plugin, and, when the containerd test
//! environment is up (`scripts/containerd-env.sh up`, `$KEEL_CONTAINERD_DIR` set), the real
//! bridge + host-local + portmap conflist it writes for its private bridge.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use keel::backends::native::sandbox::{
    files::HostFiles, namespaces, SandboxConfig, SandboxRecord, SandboxState, Sandboxes,
};
use keel::genericruntime::seam::cri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SYSTEM_CNI: &str = "/usr/lib/cni";

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (namespaces, mounts, CNI)".into());
    }
    if !Path::new(SYSTEM_CNI).join("loopback").is_file() {
        return Some(format!(
            "no CNI plugins in {SYSTEM_CNI} (apt-get install containernetworking-plugins)"
        ));
    }
    None
}

macro_rules! root_or_skip {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("skipping: {why}");
            return;
        }
    };
}

/// The recording plugin: logs each call (command, ifname, args, netns) and its stdin, fails ADD
/// when `<dir>/fail` exists, and answers ADD with eth0 = 10.123.0.7 inside the sandbox.
const FAKE_PLUGIN: &str = r#"#!/bin/sh
dir=$(dirname "$0")
input=$(cat)
printf '%s|%s|%s|%s\n' "$CNI_COMMAND" "$CNI_IFNAME" "$CNI_ARGS" "$CNI_NETNS" >> "$dir/calls.log"
printf '%s\n' "$input" | tr -d '\n' >> "$dir/stdin.log"
printf '\n' >> "$dir/stdin.log"
case "$CNI_COMMAND" in
ADD)
  if [ -e "$dir/fail" ]; then
    printf '{"cniVersion":"1.0.0","code":11,"msg":"test plugin refuses","details":"on purpose"}'
    exit 1
  fi
  printf '{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:07","sandbox":"%s"}],"ips":[{"address":"10.123.0.7/24","interface":0}]}' "$CNI_NETNS"
  ;;
esac
exit 0
"#;

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    run: PathBuf,
    plugin_dir: PathBuf,
    cfg: SandboxConfig,
}

impl Env {
    /// `conf`: the conflist text, or None for the test plugin's.
    fn new(conf: Option<(PathBuf, Vec<PathBuf>)>) -> Env {
        let tmp = tempfile::Builder::new().prefix("kns").tempdir_in("/tmp").unwrap();
        let root = tmp.path().join("root");
        let run = tmp.path().join("run");
        let plugin_dir = tmp.path().join("bin");
        let conf_dir = tmp.path().join("net.d");
        for d in [&root, &run, &plugin_dir, &conf_dir] {
            fs::create_dir_all(d).unwrap();
        }
        let plugin = plugin_dir.join("keeltest");
        fs::write(&plugin, FAKE_PLUGIN).unwrap();
        fs::set_permissions(&plugin, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(
            conf_dir.join("10-test.conflist"),
            r#"{"cniVersion":"1.0.0","name":"keeltest","plugins":[{"type":"keeltest"},
               {"type":"keeltest","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        fs::write(tmp.path().join("hosts"), "127.0.0.1\tlocalhost\n").unwrap();
        fs::write(tmp.path().join("resolv.conf"), "nameserver 127.0.0.53\n").unwrap();
        let (cni_conf_dir, cni_bin_dirs) =
            conf.unwrap_or_else(|| (conf_dir, vec![plugin_dir.clone(), PathBuf::from(SYSTEM_CNI)]));
        let cfg = SandboxConfig {
            root_dir: root.clone(),
            run_dir: run.clone(),
            cni_conf_dir,
            cni_bin_dirs,
            keel_exe: PathBuf::from(env!("CARGO_BIN_EXE_keel")),
            host_files: HostFiles {
                hosts: tmp.path().join("hosts"),
                resolv_conf: tmp.path().join("resolv.conf"),
            },
        };
        Env {
            _tmp: tmp,
            root,
            run,
            plugin_dir,
            cfg,
        }
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.plugin_dir.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn stdins(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.plugin_dir.join("stdin.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn mounts_under_run(&self) -> Vec<String> {
        mounts_under(&self.run)
    }
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

impl Drop for Env {
    /// Whatever a failed test left: mounts under the run dir, pause processes are killed by
    /// the tests themselves (by pid).
    fn drop(&mut self) {
        let mut mounts = self.mounts_under_run();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(Path::new(&m), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn pod(name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "testns".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: String::new(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["testns.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        port_mappings: vec![cri::PortMapping {
            protocol: cri::Protocol::Tcp as i32,
            container_port: 80,
            host_port: 18080,
            host_ip: "127.0.0.1".into(),
        }],
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/besteffort/pod-test".into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Pod as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sysctls: [
                ("net.ipv4.ip_unprivileged_port_start".to_string(), "0".to_string()),
                ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
            ]
            .into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn req(config: cri::PodSandboxConfig) -> cri::RunPodSandboxRequest {
    cri::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    }
}

/// Runs `f` on a thread that joined the namespaces given.
fn inside<T: Send + 'static>(nss: &[(&Path, nix::sched::CloneFlags)], f: impl FnOnce() -> T + Send + 'static) -> T {
    let nss: Vec<(PathBuf, nix::sched::CloneFlags)> = nss.iter().map(|(p, f)| (p.to_path_buf(), *f)).collect();
    std::thread::spawn(move || {
        for (p, flag) in nss {
            let file = fs::File::open(&p).unwrap();
            nix::sched::setns(file.as_fd(), flag).unwrap();
        }
        f()
    })
    .join()
    .unwrap()
}

fn assert_released(env: &Env, rec: &SandboxRecord) {
    for p in [&rec.netns, &rec.ipcns, &rec.utsns].into_iter().flatten() {
        assert!(!p.exists(), "{} still exists", p.display());
    }
    assert!(
        env.mounts_under_run().is_empty(),
        "mounts left: {:?}",
        env.mounts_under_run()
    );
}

#[tokio::test]
async fn pod_network_sandbox_lifecycle_with_the_cni_protocol() {
    root_or_skip!();
    let env = Env::new(None);
    let sbs = Sandboxes::open(&env.cfg).unwrap();
    let rec = sbs.run(req(pod("web-0"))).await.unwrap();
    let id = rec.id.clone();
    assert_eq!(rec.state, SandboxState::Ready);
    assert_eq!(rec.ip.as_deref(), Some("10.123.0.7"));
    let netns = rec.netns.clone().unwrap();
    let (ipcns, utsns) = (rec.ipcns.clone().unwrap(), rec.utsns.clone().unwrap());
    assert_eq!(netns, env.run.join("ns/net").join(&id));
    for p in [&netns, &ipcns, &utsns] {
        assert!(namespaces::is_pinned(p), "{} not pinned", p.display());
    }
    assert_eq!(rec.pidns, None, "no pause process without shareProcessNamespace");
    assert!(
        mounts_under(&env.run).contains(&rec.shm.display().to_string()),
        "shm mounted"
    );

    // Files as containerd writes them.
    assert_eq!(fs::read_to_string(&rec.hostname_file).unwrap(), "web-0\n");
    assert_eq!(fs::read_to_string(&rec.hosts_file).unwrap(), "127.0.0.1\tlocalhost\n");
    assert_eq!(
        fs::read_to_string(&rec.resolv_file).unwrap(),
        "search testns.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );

    // Hostname and sysctls live in the pinned namespaces, not the host's.
    let host_name = nix::unistd::gethostname().unwrap();
    let (name, port_start) = inside(
        &[
            (&utsns, nix::sched::CloneFlags::CLONE_NEWUTS),
            (&netns, nix::sched::CloneFlags::CLONE_NEWNET),
        ],
        || {
            (
                nix::unistd::gethostname().unwrap(),
                fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap(),
            )
        },
    );
    assert_eq!(name, "web-0");
    assert_eq!(port_start.trim(), "0");
    assert_eq!(nix::unistd::gethostname().unwrap(), host_name);
    let shm_rmid = inside(&[(&ipcns, nix::sched::CloneFlags::CLONE_NEWIPC)], || {
        fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").unwrap()
    });
    assert_eq!(shm_rmid.trim(), "1");

    // CNI: the pod network's plugins ran in order with the K8S_POD_* args; runtimeConfig only
    // for the plugin that declares portMappings; the second got the first's result.
    let calls = env.calls();
    let want_args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=testns;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID={id};K8S_POD_UID=uid-web-0"
    );
    let want = format!("ADD|eth0|{want_args}|{}", netns.display());
    assert_eq!(calls, vec![want.clone(), want], "{calls:?}");
    let stdins = env.stdins();
    assert_eq!(stdins[0]["name"], "keeltest");
    assert!(stdins[0].get("runtimeConfig").is_none() && stdins[0].get("prevResult").is_none());
    assert_eq!(
        stdins[1]["runtimeConfig"]["portMappings"],
        serde_json::json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}])
    );
    assert_eq!(stdins[1]["prevResult"]["ips"][0]["address"], "10.123.0.7/24");

    // The status the kubelet reads.
    let st = sbs.status(&id[..12], false).unwrap();
    assert_eq!(st.id, id);
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(st.network.unwrap().ip, "10.123.0.7");
    assert_eq!(st.metadata.unwrap().name, "web-0");

    // Port-forward reaches a listener on 127.0.0.1 inside the pod only (lo is up: the real
    // loopback plugin ran).
    let listener = namespaces::in_netns(&netns, || std::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"pong").unwrap();
        buf
    });
    let mut io = sbs.port_forward(&id, port).await.unwrap();
    io.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    assert_eq!(&server.join().unwrap(), b"ping");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the port is the pod's, not the host's"
    );
    drop(io);

    let net = sbs.pod_network_stats(&id).unwrap();
    assert!(net.timestamp > 0);
    assert!(
        net.interfaces.iter().all(|i| i.name != "lo"),
        "loopback is not reported"
    );

    // Stop: DEL in reverse with the cached result, then nothing held; twice is fine.
    sbs.stop(&id).await.unwrap();
    let calls = env.calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(
        calls[2].starts_with("DEL|eth0|") && calls[3].starts_with("DEL|eth0|"),
        "{calls:?}"
    );
    let stdins = env.stdins();
    assert_eq!(stdins[2]["prevResult"]["ips"][0]["address"], "10.123.0.7/24");
    assert_eq!(stdins[2]["runtimeConfig"]["portMappings"][0]["hostPort"], 18080);
    assert_released(&env, &rec);
    assert_eq!(sbs.get(&id).unwrap().state, SandboxState::NotReady);
    sbs.stop(&id).await.unwrap();
    assert_eq!(env.calls().len(), 4, "a second stop runs no DEL");

    sbs.remove(&id).await.unwrap();
    assert!(sbs.get(&id).is_none());
    assert!(!env.root.join("native/sandboxes").join(&id).exists());
    sbs.remove(&id).await.unwrap();
    assert!(sbs.stop(&id).await.is_err(), "stop of an unknown sandbox is NotFound");
}

#[tokio::test]
async fn failed_cni_add_is_rolled_back() {
    root_or_skip!();
    let env = Env::new(None);
    fs::write(env.plugin_dir.join("fail"), "").unwrap();
    let sbs = Sandboxes::open(&env.cfg).unwrap();
    let err = sbs.run(req(pod("broken"))).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("failed to setup network for sandbox"), "{text}");
    assert!(text.contains("test plugin refuses; on purpose"), "{text}");
    // The spec: DEL even after a failed ADD.
    let calls = env.calls();
    assert!(calls.iter().any(|c| c.starts_with("DEL|eth0|")), "{calls:?}");
    assert!(sbs.list().is_empty());
    assert!(env.mounts_under_run().is_empty(), "{:?}", env.mounts_under_run());
    assert_eq!(fs::read_dir(env.root.join("native/sandboxes")).unwrap().count(), 0);
    for kind in ["net", "ipc", "uts"] {
        let d = env.run.join("ns").join(kind);
        assert_eq!(fs::read_dir(&d).map(|r| r.count()).unwrap_or(0), 0, "{}", d.display());
    }
    // A missing conflist: NetworkReady is false and pods fail with containerd's words.
    let empty = Env::new(Some((
        PathBuf::from("/nonexistent-keel-cni"),
        vec![PathBuf::from(SYSTEM_CNI)],
    )));
    let sbs = Sandboxes::open(&empty.cfg).unwrap();
    assert!(sbs.network_ready().is_err());
    let err = sbs.run(req(pod("nonet"))).await.unwrap_err();
    assert!(err.to_string().contains("cni plugin not initialized"), "{err}");
    assert!(empty.mounts_under_run().is_empty());
}

#[tokio::test]
async fn restart_adopts_and_reboot_cleans_up() {
    root_or_skip!();
    let env = Env::new(None);
    let sbs = Sandboxes::open(&env.cfg).unwrap();
    let a = sbs.run(req(pod("a"))).await.unwrap();
    let b = sbs.run(req(pod("b"))).await.unwrap();
    drop(sbs);

    // keel restarted: everything is still pinned, so both are adopted as they were.
    let sbs = Sandboxes::open(&env.cfg).unwrap();
    for r in [&a, &b] {
        let got = sbs.get(&r.id).unwrap();
        assert_eq!(got.state, SandboxState::Ready);
        assert_eq!(got.ip, r.ip);
        assert_eq!(got.netns, r.netns);
    }
    assert_eq!(env.calls().iter().filter(|c| c.starts_with("DEL")).count(), 0);
    drop(sbs);

    // A reboot: the run dir (a tmpfs) comes back empty.
    let mut mounts = env.mounts_under_run();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in &mounts {
        nix::mount::umount2(Path::new(m), nix::mount::MntFlags::MNT_DETACH).unwrap();
    }
    fs::remove_dir_all(&env.run).unwrap();
    fs::create_dir_all(&env.run).unwrap();
    let sbs = Sandboxes::open(&env.cfg).unwrap();
    for r in [&a, &b] {
        let got = sbs.get(&r.id).unwrap();
        assert_eq!(got.state, SandboxState::NotReady, "after a reboot");
        assert!(!env.root.join("native/sandboxes").join(&r.id).join("cni.json").exists());
    }
    // DEL ran for both pod networks with their cached results (2 plugins each).
    let dels: Vec<_> = env.calls().into_iter().filter(|c| c.starts_with("DEL|eth0|")).collect();
    assert_eq!(dels.len(), 4, "{dels:?}");
    assert!(dels
        .iter()
        .any(|c| c.contains(&format!("K8S_POD_INFRA_CONTAINER_ID={}", a.id))));
    assert!(dels
        .iter()
        .any(|c| c.contains(&format!("K8S_POD_INFRA_CONTAINER_ID={}", b.id))));
    for r in [&a, &b] {
        sbs.stop(&r.id).await.unwrap();
        sbs.remove(&r.id).await.unwrap();
    }
    assert!(sbs.list().is_empty());
    assert!(env.mounts_under_run().is_empty());
}

#[tokio::test]
async fn host_network_pod_with_a_shared_pid_namespace() {
    root_or_skip!();
    let env = Env::new(None);
    let sbs = Sandboxes::open(&env.cfg).unwrap();
    let mut config = pod("shared");
    config.hostname = String::new();
    if let Some(l) = config.linux.as_mut() {
        l.sysctls.clear();
        l.security_context = Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Node as i32,
                pid: cri::NamespaceMode::Pod as i32,
                ipc: cri::NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let rec = sbs.run(req(config)).await.unwrap();
    assert_eq!(
        (rec.netns.as_ref(), rec.utsns.as_ref(), rec.ip.as_ref()),
        (None, None, None)
    );
    assert!(env.calls().is_empty(), "no CNI for host network");
    let ipcns = rec.ipcns.clone().unwrap();
    let pid = rec.pause_pid.unwrap();
    let ns_ino = |p: &Path| fs::metadata(p).unwrap().ino();
    // The pause process is in the pod's IPC namespace and is PID 1 of a new PID namespace.
    assert_eq!(ns_ino(&PathBuf::from(format!("/proc/{pid}/ns/ipc"))), ns_ino(&ipcns));
    assert_ne!(
        ns_ino(rec.pidns.as_ref().unwrap()),
        ns_ino(Path::new("/proc/self/ns/pid"))
    );
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.trim_end().ends_with("\t1"), "{nspid}");
    assert_eq!(
        fs::read_to_string(&rec.hostname_file).unwrap(),
        format!("{}\n", nix::unistd::gethostname().unwrap().to_string_lossy())
    );
    assert_eq!(sbs.status(&rec.id, false).unwrap().network, None);

    // Adopted across a restart while the pause lives.
    drop(sbs);
    let sbs = Sandboxes::open(&env.cfg).unwrap();
    assert_eq!(sbs.get(&rec.id).unwrap().state, SandboxState::Ready);

    sbs.stop(&rec.id).await.unwrap();
    let gone = (0..50).any(|_| {
        if keel::backends::native::sandbox::pause::start_ticks(pid) != rec.pause_start_ticks {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        false
    });
    assert!(gone, "pause process {pid} still runs");
    assert_released(&env, &rec);
    sbs.remove(&rec.id).await.unwrap();
}

/// The real bridge + host-local + portmap conflist of the containerd test environment.
#[tokio::test]
async fn real_bridge_network_is_set_up_and_torn_down() {
    root_or_skip!();
    let Ok(ctrd) = std::env::var("KEEL_CONTAINERD_DIR") else {
        eprintln!("skipping: KEEL_CONTAINERD_DIR unset (run scripts/containerd-env.sh up and source its env)");
        return;
    };
    let conf_dir = Path::new(&ctrd).join("cni/net.d");
    let env = Env::new(Some((conf_dir, vec![PathBuf::from(SYSTEM_CNI)])));
    let sbs = Sandboxes::open(&env.cfg).unwrap();
    sbs.network_ready().unwrap();
    let mut config = pod("bridged");
    config.port_mappings.clear();
    let rec = sbs.run(req(config)).await.unwrap();
    // A second pod with a hostPort: portmap (declared in the conflist) gets it as runtimeConfig
    // and adds its DNAT chain, named in a comment with the sandbox ID. (Not CHECKed: portmap
    // 1.1.1's CHECK of a mapping fails looking for an ip6tables chain it never made.)
    let mut config = pod("hostport");
    config.port_mappings[0].host_port = 40000 + (std::process::id() % 10000) as i32;
    let mapped = sbs.run(req(config)).await.unwrap();
    let nat_rules = || {
        std::process::Command::new("iptables-save")
            .args(["-t", "nat"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    assert!(nat_rules().contains(&mapped.id), "portmap rules for the hostPort");
    assert_ne!(mapped.ip, rec.ip);
    let ip = rec.ip.clone().unwrap();
    if let Ok(subnet) = std::env::var("KEEL_CNI_SUBNET") {
        let prefix: String = subnet.split('.').take(2).collect::<Vec<_>>().join(".");
        assert!(ip.starts_with(&format!("{prefix}.")), "{ip} not in {subnet}");
    }
    let netns = rec.netns.clone().unwrap();
    // eth0 inside the pod has the IP (ip(8) run in the pinned netns).
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("inet {ip}/")), "{text}");
    // The host side: a veth on the bridge, and the IPAM reservation.
    let cache: serde_json::Value =
        serde_json::from_slice(&fs::read(env.root.join("native/sandboxes").join(&rec.id).join("cni.json")).unwrap())
            .unwrap();
    let result = &cache["attachments"][1]["result"];
    let host_veth = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i.get("sandbox").is_none() && i["name"].as_str().is_some_and(|n| n.starts_with("veth")))
        .and_then(|i| i["name"].as_str())
        .unwrap()
        .to_string();
    assert!(Path::new("/sys/class/net").join(&host_veth).exists());
    let network = cache["attachments"][1]["config"]["name"].as_str().unwrap().to_string();
    let ipam_file = Path::new(&ctrd).join("cni/ipam").join(&network).join(&ip);
    assert!(ipam_file.exists(), "{}", ipam_file.display());
    sbs.check_network(&rec.id).await.unwrap();
    let stats = sbs.pod_network_stats(&rec.id).unwrap();
    assert_eq!(stats.default_interface.unwrap().name, "eth0");

    sbs.stop(&rec.id).await.unwrap();
    assert!(
        !Path::new("/sys/class/net").join(&host_veth).exists(),
        "veth {host_veth} left"
    );
    assert!(!ipam_file.exists(), "IP reservation left");
    sbs.remove(&rec.id).await.unwrap();
    sbs.stop(&mapped.id).await.unwrap();
    assert_released(&env, &rec);
    assert!(!nat_rules().contains(&mapped.id), "portmap rules left");
    sbs.remove(&mapped.id).await.unwrap();
    assert_released(&env, &mapped);
}

/// Container stats on this machine's real cgroup layout (hybrid here: v1 controllers), from a
/// cgroup made for the test with a busy shell in it.
#[test]
fn container_stats_from_a_real_cgroup() {
    root_or_skip!();
    use keel::backends::native::sandbox::stats::CgroupLayout;
    let layout = CgroupLayout::current();
    let parent = format!("/keel-n3-stats-{}", std::process::id());
    let cg = format!("{parent}/c1");
    let mut dirs = Vec::new();
    for ctrl in ["cpuacct", "cpu", "memory", "pids"] {
        if let Some((d, _)) = layout.dir(ctrl, &cg) {
            if !dirs.contains(&d) {
                fs::create_dir_all(&d).unwrap();
                dirs.push(d);
            }
        }
    }
    // Blocks on stdin until it is in the cgroups, then burns some CPU and sleeps.
    let mut child = std::process::Command::new("sh")
        .args([
            "-c",
            "read x; i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exec sleep 30",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for d in &dirs {
        fs::write(d.join("cgroup.procs"), child.id().to_string()).unwrap();
    }
    let upper = tempfile::tempdir().unwrap();
    fs::write(upper.path().join("f"), vec![7u8; 64 * 1024]).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut usage = None;
    for _ in 0..100 {
        let u = keel::backends::native::sandbox::container_stats(&cg, upper.path()).unwrap();
        if u.cpu.usage_core_nano_seconds.unwrap().value > 10_000_000 {
            usage = Some(u);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The parent, as a pod cgroup: its figures include its child's.
    let pod = layout.usage(&parent);
    let _ = child.kill();
    let _ = child.wait();
    let u = usage.expect("the busy shell's CPU time shows in its cgroup");
    let (pod_cpu, _, pod_procs) = pod.expect("the parent cgroup's figures");
    assert!(pod_cpu.usage_core_nano_seconds.unwrap().value >= u.cpu.usage_core_nano_seconds.unwrap().value);
    // Processes, not threads: the shell (later `sleep` in its place) and nothing else.
    assert_eq!(pod_procs.process_count.map(|v| v.value), Some(1));
    let mem = u.memory;
    assert!(mem.usage_bytes.is_some() && mem.working_set_bytes.is_some());
    assert!(mem.working_set_bytes.unwrap().value <= mem.usage_bytes.unwrap().value);
    assert_eq!(u.process.process_count.map(|v| v.value), Some(1));
    assert!(u.writable_layer.used_bytes.unwrap().value >= 64 * 1024);
    assert_eq!(u.writable_layer.inodes_used.unwrap().value, 2);
    for d in &dirs {
        for _ in 0..50 {
            if fs::remove_dir(d).is_ok() || !d.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if let Some(p) = d.parent() {
            let _ = fs::remove_dir(p);
        }
        assert!(!d.exists(), "{} left", d.display());
    }
    assert_eq!(
        keel::backends::native::sandbox::container_stats(&cg, upper.path()),
        None
    );
}
