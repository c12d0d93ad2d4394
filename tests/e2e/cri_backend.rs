//! The remote CRI backend against a REAL containerd (socket from `KEEL_CRI_SOCKET`, set by
//! scripts/test.sh via scripts/containerd-env.sh), plus the failure paths that need no runtime:
//! a missing socket and a gRPC server that does not speak CRI v1.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use futures::FutureExt as _;
use keel::backends::cri::{CriRuntime, Error as CriError};
use keel::clock::Clock;
use keel::genericruntime::seam::{cri, Code, ImageService as _, RuntimeService as _};

use crate::support::util::remove_cgroup_tree;

const BUSYBOX: &str = "docker.io/library/busybox:1.36";
/// Parent of every pod cgroup keel's tests create unless `KEEL_TEST_CGROUP_ROOT` names another
/// (scripts/containerd-env.sh `down` sweeps it).
const DEFAULT_CGROUP_ROOT: &str = "/keel-test";

fn cgroup_root() -> String {
    std::env::var("KEEL_TEST_CGROUP_ROOT")
        .ok()
        .filter(|v| v.starts_with('/'))
        .unwrap_or_else(|| DEFAULT_CGROUP_ROOT.to_owned())
}

fn env_or_fail(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: the CRI backend tests need a real containerd; run them through \
             scripts/test.sh (it starts one with scripts/containerd-env.sh and exports {name})"
        ),
    }
}

/// A name no other test (or earlier run) uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{:016x}", std::process::id(), rand::random::<u64>())
}

fn runtime(socket: &Path) -> Arc<CriRuntime> {
    CriRuntime::connect(socket, None, Clock::real()).unwrap()
}

/// Removes the pod's cgroup directories in every hierarchy (containerd never does: it is the
/// kubelet's job), deepest first. Returns what could not be removed.
async fn remove_pod_cgroups(pod_dir_name: &str) -> Vec<String> {
    let root = cgroup_root();
    // A just-exited task may hold its cgroup for a moment.
    let cgroup = format!("{}/{pod_dir_name}", root.trim_end_matches('/'));
    remove_cgroup_tree(&cgroup, Duration::from_secs(5))
        .await
        .into_iter()
        .map(|d| d.display().to_string())
        .collect()
}

/// The pod shares one PID namespace (`shareProcessNamespace: true`): the pause process is its
/// init, so the test's `sh` is an ordinary process that SIGTERM kills (exit 143). As a PID
/// namespace's init without a handler it would ignore SIGTERM and only die by SIGKILL (137).
fn shared_pid() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        pid: cri::NamespaceMode::Pod as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn image(name: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: name.to_owned(),
        ..Default::default()
    })
}

async fn wait_for<F, Fut, T>(what: &str, timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn handshake_and_status_against_containerd() {
    let socket = PathBuf::from(env_or_fail("KEEL_CRI_SOCKET"));
    let rt = runtime(&socket);
    let version = rt.handshake().await.unwrap();
    assert_eq!(version.version, "0.1.0");
    assert_eq!(version.runtime_name, "containerd");
    assert_eq!(version.runtime_api_version, "v1");
    assert!(!version.runtime_version.is_empty());

    let status = rt.status(cri::StatusRequest { verbose: false }).await.unwrap();
    let conditions = status.status.unwrap().conditions;
    let runtime_ready = conditions.iter().find(|c| c.r#type == "RuntimeReady").unwrap();
    assert!(runtime_ready.status, "{conditions:?}");
    assert!(conditions.iter().any(|c| c.r#type == "NetworkReady"), "{conditions:?}");
}

#[tokio::test]
async fn local_image_status_and_missing_image() {
    let socket = PathBuf::from(env_or_fail("KEEL_CRI_SOCKET"));
    let rt = runtime(&socket);
    let status = rt
        .image_status(cri::ImageStatusRequest {
            image: image(BUSYBOX),
            verbose: false,
        })
        .await
        .unwrap();
    let img = status.image.expect("busybox:1.36 is imported by the test environment");
    assert!(img.id.starts_with("sha256:"), "{img:?}");
    assert!(img.repo_tags.iter().any(|t| t == BUSYBOX), "{img:?}");
    assert!(img.size > 0);

    let missing = rt
        .image_status(cri::ImageStatusRequest {
            image: image(&format!("localhost/{}:none", unique("keel-missing"))),
            verbose: false,
        })
        .await
        .unwrap();
    assert!(missing.image.is_none(), "{missing:?}");

    let listed = rt.list_images(cri::ListImagesRequest { filter: None }).await.unwrap();
    assert!(listed.images.iter().any(|i| i.id == img.id));

    let fs = rt.image_fs_info(cri::ImageFsInfoRequest {}).await.unwrap();
    assert!(!fs.image_filesystems.is_empty());
}

/// Image GC's view of containerd: the sandbox image its config names (`sandbox_image`, reported
/// as `sandboxImage` in the verbose Status) counts as in use with no container on it, so GC
/// never removes it (it is not pinned there, and here it cannot be pulled again). Read-only: no
/// image is removed from the shared store.
#[tokio::test]
async fn image_gc_counts_containerd_sandbox_image_in_use() {
    use keel::genericruntime::imagegc::{sandbox_image_of, ImageGcManager, ImageGcPolicy, RuntimeImages};
    let socket = PathBuf::from(env_or_fail("KEEL_CRI_SOCKET"));
    let rt = runtime(&socket);
    let status = rt.status(cri::StatusRequest { verbose: true }).await.unwrap();
    assert_eq!(sandbox_image_of(&status.info).as_deref(), Some("localhost/pause:1"));
    let pause = rt
        .image_status(cri::ImageStatusRequest {
            image: image("localhost/pause:1"),
            verbose: false,
        })
        .await
        .unwrap()
        .image
        .expect("the test environment imports localhost/pause:1");
    let gc = ImageGcManager::new(Arc::new(RuntimeImages::new(rt.clone())), ImageGcPolicy::default()).unwrap();
    let in_use = gc.detect(std::time::Instant::now()).await.unwrap();
    assert!(in_use.contains(&pause.id), "{in_use:?} lacks {}", pause.id);
}

/// A real pull from the test registry (CRI PullImage always contacts the registry).
#[tokio::test]
async fn pull_image_from_test_registry() {
    // Not while a keel of cri_lifecycle runs: it would kill this pod as unknown to it.
    let _g = crate::cri_lifecycle::cri_lock().await;
    let socket = PathBuf::from(env_or_fail("KEEL_CRI_SOCKET"));
    let registry = env_or_fail("KEEL_TEST_REGISTRY");
    let rt = runtime(&socket);
    let name = format!("{registry}/keel/busybox:1.36");
    let pulled = rt
        .pull_image(cri::PullImageRequest {
            image: image(&name),
            auth: None,
            sandbox_config: None,
        })
        .await
        .unwrap();
    assert!(pulled.image_ref.starts_with("sha256:"), "{pulled:?}");
    let status = rt
        .image_status(cri::ImageStatusRequest {
            image: image(&name),
            verbose: false,
        })
        .await
        .unwrap();
    let img = status.image.unwrap();
    assert_eq!(img.id, pulled.image_ref);
    // Not removed afterwards: it shares its image ID with the imported busybox:1.36, and CRI
    // RemoveImage deletes every tag of an ID, which would pull the image from under other tests.

    // A registry that is not there: the runtime answers with an error of its own (it is not
    // a transport failure of ours, so not Unavailable-for-the-socket).
    let err = rt
        .pull_image(cri::PullImageRequest {
            image: image("127.0.0.1:1/keel/nothing:1"),
            auth: None,
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.op, "PullImage");
    assert!(err.message.contains("127.0.0.1:1"), "{err}");
    assert!(!err.message.contains(&socket.display().to_string()), "{err}");
}

#[tokio::test]
async fn pod_lifecycle_against_containerd() {
    // Not while a keel of cri_lifecycle runs: it would kill this pod as unknown to it.
    let _g = crate::cri_lifecycle::cri_lock().await;
    let socket = PathBuf::from(env_or_fail("KEEL_CRI_SOCKET"));
    let rt = runtime(&socket);
    let logs = tempfile::tempdir().unwrap();
    let uid = format!("{:032x}", rand::random::<u128>());
    let pod_cgroup = format!("pod{uid}");
    let name = unique("cri-pod");

    let config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.clone(),
            uid: uid.clone(),
            namespace: "keel-test".to_owned(),
            attempt: 0,
        }),
        hostname: "cri-pod".to_owned(),
        log_directory: logs.path().display().to_string(),
        labels: HashMap::from([("io.kubernetes.pod.uid".to_owned(), uid.clone())]),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/{pod_cgroup}", cgroup_root()),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(shared_pid()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };

    let mut sandbox_id = None;
    let outcome = AssertUnwindSafe(lifecycle(&rt, &config, logs.path(), &mut sandbox_id))
        .catch_unwind()
        .await;

    // Clean up whatever happened: stop + remove the sandbox (removes its containers too), then
    // the pod cgroup directories containerd leaves behind.
    let mut cleanup_errors = Vec::new();
    if let Some(id) = &sandbox_id {
        if let Err(e) = rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
        {
            cleanup_errors.push(e.to_string());
        }
        if let Err(e) = rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
        {
            cleanup_errors.push(e.to_string());
        }
    }
    let left = remove_pod_cgroups(&pod_cgroup).await;
    if !left.is_empty() {
        cleanup_errors.push(format!("cgroups left behind: {left:?}"));
    }

    match outcome {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(Err(e)) => panic!("{e:?}"),
        Ok(Ok(())) => {}
    }
    assert!(cleanup_errors.is_empty(), "clean-up failed: {cleanup_errors:?}");
}

async fn lifecycle(
    rt: &CriRuntime,
    config: &cri::PodSandboxConfig,
    log_dir: &Path,
    sandbox_id: &mut Option<String>,
) -> anyhow::Result<()> {
    let run = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .context("RunPodSandbox")?;
    let sid = run.pod_sandbox_id.clone();
    *sandbox_id = Some(sid.clone());

    let status = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: sid.clone(),
            verbose: false,
        })
        .await?
        .status
        .context("no sandbox status")?;
    ensure!(status.state == cri::PodSandboxState::SandboxReady as i32, "{status:?}");
    let ip = status.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
    ensure!(ip.parse::<std::net::IpAddr>().is_ok(), "sandbox has no IP: {status:?}");

    // The sandbox is listed under its own id, with our labels.
    let listed = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                id: sid.clone(),
                ..Default::default()
            }),
        })
        .await?;
    ensure!(listed.items.len() == 1, "{listed:?}");
    ensure!(listed.items[0].labels.get("io.kubernetes.pod.uid") == config.labels.get("io.kubernetes.pod.uid"));

    let container = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "c1".to_owned(),
            attempt: 0,
        }),
        image: image(BUSYBOX),
        command: vec!["sh".into(), "-c".into(), "echo hi; sleep 30".into()],
        log_path: "c1/0.log".to_owned(),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(shared_pid()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sid.clone(),
            config: Some(container),
            sandbox_config: Some(config.clone()),
        })
        .await
        .context("CreateContainer")?;
    let cid = created.container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: cid.clone(),
    })
    .await
    .context("StartContainer")?;

    let cstatus = container_status(rt, &cid).await?;
    ensure!(
        cstatus.state == cri::ContainerState::ContainerRunning as i32,
        "{cstatus:?}"
    );
    ensure!(cstatus.started_at > 0, "{cstatus:?}");

    // containerd writes the CRI log format at <log_directory>/<log_path>.
    let log_file = log_dir.join("c1/0.log");
    let line = wait_for("the CRI log line", Duration::from_secs(10), || {
        let log_file = log_file.clone();
        async move {
            let text = std::fs::read_to_string(&log_file).unwrap_or_default();
            Ok(text.lines().find(|l| l.ends_with(" stdout F hi")).map(str::to_owned))
        }
    })
    .await?;
    let stamp = line.split(' ').next().unwrap_or_default();
    ensure!(stamp.parse::<jiff::Timestamp>().is_ok(), "bad timestamp in {line:?}");

    let echo = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: cid.clone(),
            cmd: vec!["echo".into(), "x".into()],
            timeout: 10,
        })
        .await
        .context("ExecSync echo")?;
    ensure!(echo.stdout == b"x\n", "{echo:?}");
    ensure!(echo.exit_code == 0, "{echo:?}");

    let three = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: cid.clone(),
            cmd: vec!["sh".into(), "-c".into(), "echo oops >&2; exit 3".into()],
            timeout: 0,
        })
        .await
        .context("ExecSync exit 3")?;
    ensure!(three.exit_code == 3, "{three:?}");
    ensure!(three.stderr == b"oops\n", "{three:?}");

    // A command that outlives its timeout: the runtime gives up and says DeadlineExceeded,
    // well inside our own deadline (timeout + 2 min).
    let slow = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: cid.clone(),
            cmd: vec!["sleep".into(), "20".into()],
            timeout: 1,
        })
        .await;
    match slow {
        Err(e) => ensure!(e.code == Code::DeadlineExceeded, "exec timeout: {e}"),
        Ok(r) => bail!("exec past its timeout succeeded: {r:?}"),
    }

    rt.reopen_container_log(cri::ReopenContainerLogRequest {
        container_id: cid.clone(),
    })
    .await
    .context("ReopenContainerLog")?;

    // A missing container is NotFound, passed through from the runtime.
    let missing = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: format!("{:064x}", rand::random::<u128>()),
            verbose: false,
        })
        .await;
    match missing {
        Err(e) => ensure!(e.is_not_found(), "{e}"),
        Ok(r) => bail!("status of a missing container: {r:?}"),
    }

    rt.stop_container(cri::StopContainerRequest {
        container_id: cid.clone(),
        timeout: 2,
    })
    .await
    .context("StopContainer")?;
    let stopped = container_status(rt, &cid).await?;
    ensure!(
        stopped.state == cri::ContainerState::ContainerExited as i32,
        "{stopped:?}"
    );
    ensure!(stopped.exit_code == 143, "{stopped:?}");
    ensure!(stopped.reason == "Error", "{stopped:?}");
    ensure!(stopped.finished_at >= stopped.started_at, "{stopped:?}");

    let listed = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: sid.clone(),
                ..Default::default()
            }),
        })
        .await?;
    ensure!(
        listed.containers.len() == 1 && listed.containers[0].id == cid,
        "{listed:?}"
    );

    rt.remove_container(cri::RemoveContainerRequest {
        container_id: cid.clone(),
    })
    .await
    .context("RemoveContainer")?;
    let gone = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: cid.clone(),
            verbose: false,
        })
        .await;
    ensure!(gone.as_ref().is_err_and(|e| e.is_not_found()), "{gone:?}");

    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: sid.clone(),
    })
    .await
    .context("StopPodSandbox")?;
    let status = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: sid.clone(),
            verbose: false,
        })
        .await?
        .status
        .context("no sandbox status")?;
    ensure!(
        status.state == cri::PodSandboxState::SandboxNotready as i32,
        "{status:?}"
    );
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: sid.clone(),
    })
    .await
    .context("RemovePodSandbox")?;
    *sandbox_id = None;
    let gone = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: sid,
            verbose: false,
        })
        .await;
    ensure!(gone.as_ref().is_err_and(|e| e.is_not_found()), "{gone:?}");
    Ok(())
}

async fn container_status(rt: &CriRuntime, id: &str) -> anyhow::Result<cri::ContainerStatus> {
    rt.container_status(cri::ContainerStatusRequest {
        container_id: id.to_owned(),
        verbose: false,
    })
    .await
    .context("ContainerStatus")?
    .status
    .context("no container status")
}

#[tokio::test]
async fn missing_socket_is_unavailable_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let rt = runtime(&socket);
    let err = rt
        .version(cri::VersionRequest {
            version: "0.1.0".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Unavailable, "{err}");
    assert!(err.message.contains(&socket.display().to_string()), "{err}");

    let err = rt.handshake().await.unwrap_err();
    assert!(matches!(err, CriError::NotListening { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("no CRI runtime listening at {}: ", socket.display())),
        "{text}"
    );
    assert!(text.contains("No such file or directory"), "{text}");
}

/// A gRPC server without `runtime.v1.RuntimeService` (as a v1alpha2-only runtime would be):
/// the handshake says so instead of a bare Unimplemented. Also shows the lazy channel picking
/// up a server that appears after the client was created.
#[tokio::test]
async fn handshake_with_a_non_v1_server_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("old.sock");
    let rt = runtime(&socket);
    assert!(matches!(rt.handshake().await, Err(CriError::NotListening { .. })));

    let (stop_tx, server) = serve_unimplemented(&socket);

    let err = rt.handshake().await.unwrap_err();
    assert!(matches!(err, CriError::NotCriV1 { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "the runtime at {} does not speak CRI v1 (it may only support v1alpha2)",
            socket.display()
        )
    );
    let err = rt
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Unimplemented, "{err}");

    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}

/// Serves nothing but "unimplemented" on `socket` until the returned sender fires.
fn serve_unimplemented(
    socket: &Path,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(tonic::service::Routes::default())
            .serve_with_incoming_shutdown(tokio_stream::wrappers::UnixListenerStream::new(listener), async {
                let _ = stop_rx.await;
            }),
    );
    (stop_tx, server)
}

/// The runtime goes away and comes back on the same socket: calls fail Unavailable meanwhile
/// and reach the new instance afterwards without a new client.
#[tokio::test]
async fn restarted_runtime_is_reconnected() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("restart.sock");
    let rt = runtime(&socket);

    let (stop, server) = serve_unimplemented(&socket);
    let err = rt.status(cri::StatusRequest { verbose: false }).await.unwrap_err();
    assert_eq!(err.code, Code::Unimplemented, "{err}");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    std::fs::remove_file(&socket).unwrap();

    // Gone: the first call may still see the closing connection; within a few it must be the
    // plain "cannot reach" Unavailable naming the socket.
    let mut last = None;
    for _ in 0..20 {
        let err = rt.status(cri::StatusRequest { verbose: false }).await.unwrap_err();
        if err.code == Code::Unavailable && err.message.contains(&socket.display().to_string()) {
            last = Some(err);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(last.is_some(), "runtime gone but calls did not report it unavailable");

    let (stop, server) = serve_unimplemented(&socket);
    let mut reached = false;
    for _ in 0..20 {
        let err = rt.status(cri::StatusRequest { verbose: false }).await.unwrap_err();
        if err.code == Code::Unimplemented {
            reached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reached, "the restarted runtime was not reconnected");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
