//! The native runtime through the RuntimeService seam on real runc: a busybox image built with
//! umoci and imported with `keel images import`, keel's own binary as the monitor, a
//! host-network sandbox (no CNI needed), containers created, started, exec'd into, stopped and
//! removed, with containerd's exit codes and reasons, and nothing left behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use keel::backends::native::{NativeConfig, NativeRuntime};
use keel::genericruntime::seam::{cri, Code, RuntimeService};

use crate::support::util::run_ok as run;

/// A one-layer busybox image with users, imported into the store under `root` as
/// `example.com/keel/busybox:v1`.
fn import_busybox(dir: &Path, root: &Path) {
    let layout = dir.join("layout");
    let image = format!("{}:v1", layout.display());
    let bundle = dir.join("bundle");
    run("umoci", &["init", "--layout", layout.to_str().unwrap()]);
    run("umoci", &["new", "--image", &image]);
    run("umoci", &["unpack", "--image", &image, bundle.to_str().unwrap()]);
    let rootfs = bundle.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static");
    std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "sleep", "echo", "cat", "id", "ls", "true", "hostname", "env", "stty",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/tmp:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\napp:x:1000:\nextra:x:5000:app\n").unwrap();
    run("umoci", &["repack", "--image", &image, bundle.to_str().unwrap()]);
    run(
        "umoci",
        &[
            "config",
            "--image",
            &image,
            "--config.cmd",
            "sh",
            "--config.env",
            "FROM_IMAGE=yes",
        ],
    );
    let tar = dir.join("oci.tar");
    run(
        "tar",
        &["-C", layout.to_str().unwrap(), "-cf", tar.to_str().unwrap(), "."],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("images")
        .arg("--root-dir")
        .arg(root)
        .args([
            "import",
            tar.to_str().unwrap(),
            "--base-name",
            "example.com/keel/busybox",
        ])
        .output()
        .expect("running keel images");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

const IMAGE: &str = "example.com/keel/busybox:v1";

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    run_dir: PathBuf,
    cgroup_parent: String,
    rt: Arc<NativeRuntime>,
}

impl Env {
    async fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        import_busybox(&tmp.path().join("img"), &root);
        // Short: monitor sockets live here (sun_path < 108 bytes).
        let run_dir = PathBuf::from(format!("/tmp/kn-{}", &hex::encode(rand::random::<[u8; 4]>())));
        let cgroup_parent = format!("/keel-n2-{}", hex::encode(rand::random::<[u8; 4]>()));
        let rt = NativeRuntime::new(Self::config(&root, &run_dir, tmp.path()))
            .await
            .expect("native runtime");
        Env {
            root,
            run_dir,
            cgroup_parent,
            rt,
            _tmp: tmp,
        }
    }

    fn config(root: &Path, run_dir: &Path, tmp: &Path) -> NativeConfig {
        let mut cfg = NativeConfig::with_defaults(root.to_path_buf());
        cfg.run_dir = run_dir.to_path_buf();
        cfg.cni_conf_dir = tmp.join("no-cni");
        cfg.keel_exe = PathBuf::from(env!("CARGO_BIN_EXE_keel"));
        cfg
    }

    /// A new runtime object over the same state (keel restarted).
    async fn restart(&mut self) {
        let tmp = self._tmp.path().to_path_buf();
        self.rt = NativeRuntime::new(Self::config(&self.root, &self.run_dir, &tmp))
            .await
            .expect("native runtime again");
    }

    async fn sandbox(&self, name: &str) -> (String, cri::PodSandboxConfig) {
        let log_dir = self.root.join("logs").join(name);
        std::fs::create_dir_all(&log_dir).unwrap();
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: log_dir.to_string_lossy().into_owned(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Node as i32,
                        pid: cri::NamespaceMode::Container as i32,
                        ipc: cri::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .expect("RunPodSandbox")
            .pod_sandbox_id;
        (id, config)
    }

    async fn create(
        &self,
        sb: &(String, cri::PodSandboxConfig),
        name: &str,
        command: &[&str],
    ) -> Result<String, keel::genericruntime::seam::RuntimeError> {
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            envs: vec![cri::KeyValue {
                key: "FROM_CRI".into(),
                value: "1".into(),
            }],
            log_path: format!("{name}/0.log"),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: sb
                        .1
                        .linux
                        .as_ref()
                        .and_then(|l| l.security_context.as_ref())
                        .and_then(|s| s.namespace_options.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sb.0.clone(),
                config: Some(config),
                sandbox_config: Some(sb.1.clone()),
            })
            .await
            .map(|r| r.container_id)
    }

    async fn status(&self, id: &str) -> cri::ContainerStatus {
        self.rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .status
            .expect("status")
    }

    async fn start(&self, id: &str) -> Result<(), keel::genericruntime::seam::RuntimeError> {
        self.rt
            .start_container(cri::StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .map(drop)
    }

    async fn remove(&self, id: &str) {
        self.rt
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
            .expect("RemoveContainer");
    }

    fn mounts_under_root(&self) -> Vec<String> {
        self.mounts_under(&self.root)
    }

    fn mounts_under(&self, dir: &Path) -> Vec<String> {
        let root = dir.to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(String::from))
            .filter(|m| m.starts_with(&root))
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Whatever a failed test left: containers (runc), mounts, the cgroup parents, the run dir.
        let runc_root = self.run_dir.join("runc");
        if let Ok(list) = std::fs::read_dir(&runc_root) {
            for e in list.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&runc_root)
                    .args(["delete", "-f", &id])
                    .output();
            }
        }
        let mut mounts = self.mounts_under_root();
        mounts.extend(self.mounts_under(&self.run_dir));
        for m in mounts.into_iter().rev() {
            let _ = nix::mount::umount2(Path::new(&m), nix::mount::MntFlags::MNT_DETACH);
        }
        for h in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let p = h.path().join(self.cgroup_parent.trim_start_matches('/'));
            let _ = std::fs::remove_dir(&p);
        }
        let _ =
            std::fs::remove_dir(Path::new("/sys/fs/cgroup/unified").join(self.cgroup_parent.trim_start_matches('/')));
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// The next event of `id` of `kind` (10 s at most).
async fn next_event(
    events: &mut keel::genericruntime::seam::ContainerEventStream,
    id: &str,
    kind: cri::ContainerEventType,
) {
    let wait = async {
        while let Some(e) = events.next().await {
            let e = e.expect("event");
            if e.container_id == id && e.container_event_type == kind as i32 {
                return;
            }
        }
        panic!("event stream ended");
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("no {kind:?} event for {id}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_container_lifecycle_on_runc() {
    let mut env = Env::new().await;
    let mut events = env
        .rt
        .get_container_events(cri::GetEventsRequest {})
        .await
        .expect("events");
    let sb = env.sandbox("lifecycle").await;

    // A container that writes and exits 3: Error, its output in the CRI log, the exit pushed.
    let id = env
        .create(
            &sb,
            "exits",
            &[
                "sh",
                "-c",
                "echo out-$FROM_IMAGE-$FROM_CRI-$HOSTNAME; echo err >&2; exit 3",
            ],
        )
        .await
        .expect("CreateContainer");
    next_event(&mut events, &id, cri::ContainerEventType::ContainerCreatedEvent).await;
    assert_eq!(
        env.status(&id).await.state,
        cri::ContainerState::ContainerCreated as i32
    );
    env.start(&id).await.expect("StartContainer");
    next_event(&mut events, &id, cri::ContainerEventType::ContainerStartedEvent).await;
    next_event(&mut events, &id, cri::ContainerEventType::ContainerStoppedEvent).await;
    let st = env.status(&id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!((st.exit_code, st.reason.as_str()), (3, "Error"));
    assert!(st.started_at > 0 && st.finished_at >= st.started_at);
    let log = std::fs::read_to_string(&st.log_path).expect("log");
    assert!(log.contains("stdout F out-yes-1-lifecycle"), "{log}");
    assert!(log.contains("stderr F err"), "{log}");

    // A long runner: exec, ExecSync with its timeout, stop escalating to SIGKILL (a `sleep`
    // as PID 1 ignores SIGTERM).
    let sleeper = env
        .create(&sb, "sleeper", &["sleep", "1000"])
        .await
        .expect("create sleeper");
    env.start(&sleeper).await.expect("start sleeper");
    assert_eq!(
        env.status(&sleeper).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    let r = env
        .rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: sleeper.clone(),
            cmd: vec!["sh".into(), "-c".into(), "id -u; echo oops >&2; exit 7".into()],
            timeout: 10,
        })
        .await
        .expect("ExecSync");
    assert_eq!(
        (r.exit_code, r.stdout.as_slice(), r.stderr.as_slice()),
        (7, &b"0\n"[..], &b"oops\n"[..])
    );
    let e = env
        .rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: sleeper.clone(),
            cmd: vec!["sleep".into(), "30".into()],
            timeout: 1,
        })
        .await
        .expect_err("timeout");
    assert_eq!(e.code, Code::DeadlineExceeded, "{e}");
    let e = env
        .rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: sleeper.clone(),
            cmd: vec!["no-such-binary".into()],
            timeout: 10,
        })
        .await
        .expect_err("missing binary");
    assert!(e.message.contains("no-such-binary"), "{e}");
    // Streaming exec through the in-process streams: stdin to `cat`, and a TTY whose size is
    // the client's.
    let streams = env.rt.local_streams().expect("local streams");
    let (in_tx, in_rx) = tokio::sync::mpsc::channel(4);
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(16);
    let io = keel::genericruntime::streams::ProcessIo {
        stdin: Some(in_rx),
        stdout: Some(out_tx),
        stderr: None,
        resize: None,
    };
    in_tx.send(bytes::Bytes::from_static(b"piped\n")).await.unwrap();
    drop(in_tx);
    let code = streams
        .exec(&sleeper, vec!["cat".into()], false, io)
        .await
        .expect("exec cat");
    let mut got = Vec::new();
    while let Some(b) = out_rx.recv().await {
        got.extend_from_slice(&b);
    }
    assert_eq!((code, got.as_slice()), (0, &b"piped\n"[..]));
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(16);
    let (rs_tx, rs_rx) = tokio::sync::mpsc::channel(4);
    rs_tx
        .send(keel::genericruntime::streams::TermSize { width: 77, height: 11 })
        .await
        .unwrap();
    let io = keel::genericruntime::streams::ProcessIo {
        stdin: None,
        stdout: Some(out_tx),
        stderr: None,
        resize: Some(rs_rx),
    };
    let code = streams
        .exec(
            &sleeper,
            vec!["sh".into(), "-c".into(), "stty size; exit 4".into()],
            true,
            io,
        )
        .await
        .expect("exec tty");
    let mut got = Vec::new();
    while let Some(b) = out_rx.recv().await {
        got.extend_from_slice(&b);
    }
    drop(rs_tx);
    assert_eq!(code, 4);
    assert_eq!(String::from_utf8_lossy(&got), "11 77\r\n");

    let t0 = std::time::Instant::now();
    env.rt
        .stop_container(cri::StopContainerRequest {
            container_id: sleeper.clone(),
            timeout: 1,
        })
        .await
        .expect("StopContainer");
    assert!(t0.elapsed() >= Duration::from_secs(1));
    let st = env.status(&sleeper).await;
    assert_eq!(
        (st.state, st.exit_code, st.reason.as_str()),
        (cri::ContainerState::ContainerExited as i32, 137, "Error")
    );

    // A bad command fails the start the way containerd's does.
    let bad = env.create(&sb, "bad", &["/no/such/cmd"]).await.expect("create bad");
    let e = env.start(&bad).await.expect_err("start bad");
    assert!(e.message.contains("/no/such/cmd"), "{e}");
    let st = env.status(&bad).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (128, "StartError"));

    // Same name again: containerd's reservation error.
    let e = env.create(&sb, "exits", &["true"]).await.expect_err("name reserved");
    assert_eq!(e.code, Code::AlreadyExists);

    // keel restarted: the running container is adopted with its ID; one that exited while
    // keel was away is reported with its real exit code.
    let survivor = env
        .create(&sb, "survivor", &["sleep", "1000"])
        .await
        .expect("create survivor");
    env.start(&survivor).await.expect("start survivor");
    let quick = env
        .create(&sb, "quick", &["sh", "-c", "sleep 1; exit 5"])
        .await
        .expect("create quick");
    env.start(&quick).await.expect("start quick");
    drop(events);
    env.restart().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = env.status(&survivor).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    let r = env
        .rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: survivor.clone(),
            cmd: vec!["true".into()],
            timeout: 10,
        })
        .await
        .expect("exec after restart");
    assert_eq!(r.exit_code, 0);
    // `sleep 1; exit 5` may still be running on a loaded machine: its exit is reported when it
    // happens (the monitor outlived keel), so wait for it.
    let mut st = env.status(&quick).await;
    for _ in 0..100 {
        if st.state == cri::ContainerState::ContainerExited as i32 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        st = env.status(&quick).await;
    }
    assert_eq!(
        (st.state, st.exit_code),
        (cri::ContainerState::ContainerExited as i32, 5)
    );

    // List filters.
    let all = env
        .rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: sb.0[..12].to_string(),
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerRunning as i32,
                }),
                label_selector: HashMap::new(),
                id: String::new(),
            }),
        })
        .await
        .expect("list")
        .containers;
    assert_eq!(
        all.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        vec![survivor.clone()]
    );

    // Removing leaves nothing: no mounts, no runc state, no directories.
    for c in [&id, &sleeper, &bad, &survivor, &quick] {
        env.remove(c).await;
    }
    assert!(env.mounts_under_root().is_empty(), "{:?}", env.mounts_under_root());
    let runc_state: Vec<_> = std::fs::read_dir(env.run_dir.join("runc"))
        .map(|d| d.flatten().count())
        .into_iter()
        .collect();
    assert_eq!(runc_state, vec![0]);
    let left: Vec<_> = std::fs::read_dir(env.root.join("native/containers"))
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let e = env
        .rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .expect_err("gone");
    assert!(e.is_not_found());
    env.rt
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: sb.0.clone(),
        })
        .await
        .expect("StopPodSandbox");
    env.rt
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: sb.0.clone(),
        })
        .await
        .expect("RemovePodSandbox");
}
