//! Tests of the simulated runtime through its CRI surface (timing under paused tokio time).

use std::collections::HashMap;
use std::time::Duration;

use tempfile::TempDir;

use super::*;
use crate::genericruntime::seam::{cri, Code, ImageService, RuntimeService};

const IMAGE: &str = "busybox:1.36";

fn cfg_with_image() -> SimConfig {
    SimConfig {
        images: vec![IMAGE.to_string()],
        ..SimConfig::default()
    }
}

fn rt(cfg: SimConfig, clock: Clock) -> (Arc<SimRuntime>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let rt = SimRuntime::new(cfg, clock, dir.path().join("sim")).unwrap();
    (rt, dir)
}

fn sandbox_config(dir: &TempDir, name: &str, host_network: bool) -> cri::PodSandboxConfig {
    let uid = format!("uid-{name}");
    let labels: HashMap<String, String> = [
        ("io.kubernetes.pod.name", name),
        ("io.kubernetes.pod.namespace", "default"),
        ("io.kubernetes.pod.uid", uid.as_str()),
        ("app", if name.ends_with('0') { "zero" } else { "other" }),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            uid: uid.clone(),
            namespace: "default".to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: dir
            .path()
            .join(format!("pods/default_{name}_{uid}"))
            .to_string_lossy()
            .into_owned(),
        labels,
        annotations: [("kubernetes.io/config.source".to_string(), "api".to_string())].into(),
        linux: host_network.then(|| cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(sandbox: &cri::PodSandboxConfig, name: &str, argv: &[&str]) -> cri::ContainerConfig {
    let uid = sandbox.metadata.as_ref().unwrap().uid.clone();
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: IMAGE.to_string(),
            ..Default::default()
        }),
        command: argv.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: [
            ("io.kubernetes.pod.uid".to_string(), uid),
            ("io.kubernetes.container.name".to_string(), name.to_string()),
        ]
        .into(),
        annotations: [("io.kubernetes.container.restartCount".to_string(), "0".to_string())].into(),
        envs: vec![cri::KeyValue {
            key: "GREETING".into(),
            value: "hello".into(),
        }],
        ..Default::default()
    }
}

struct Pod {
    id: String,
    config: cri::PodSandboxConfig,
}

async fn run_pod(rt: &SimRuntime, dir: &TempDir, name: &str) -> Pod {
    let config = sandbox_config(dir, name, false);
    let id = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .pod_sandbox_id;
    Pod { id, config }
}

async fn create(rt: &SimRuntime, pod: &Pod, name: &str, argv: &[&str]) -> String {
    rt.create_container(cri::CreateContainerRequest {
        pod_sandbox_id: pod.id.clone(),
        config: Some(container_config(&pod.config, name, argv)),
        sandbox_config: Some(pod.config.clone()),
    })
    .await
    .unwrap()
    .container_id
}

async fn start(rt: &SimRuntime, pod: &Pod, name: &str, script: &str) -> String {
    let id = create(rt, pod, name, &["sh", "-c", script]).await;
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    id
}

async fn status(rt: &SimRuntime, id: &str) -> cri::ContainerStatus {
    rt.container_status(cri::ContainerStatusRequest {
        container_id: id.to_string(),
        verbose: false,
    })
    .await
    .unwrap()
    .status
    .unwrap()
}

async fn stop(rt: &SimRuntime, id: &str, timeout: i64) {
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.to_string(),
        timeout,
    })
    .await
    .unwrap();
}

async fn sandbox_status(rt: &SimRuntime, id: &str) -> cri::PodSandboxStatus {
    rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
        pod_sandbox_id: id.to_string(),
        verbose: false,
    })
    .await
    .unwrap()
    .status
    .unwrap()
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

fn read_log(path: &str) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let _ts = it.next().unwrap();
            let stream = it.next().unwrap().to_string();
            let tag = it.next().unwrap().to_string();
            (stream, tag, it.next().unwrap_or("").to_string())
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn version_and_status() {
    let (rt, _d) = rt(SimConfig::default(), Clock::real());
    let v = rt
        .version(cri::VersionRequest {
            version: "0.1.0".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        (
            v.version.as_str(),
            v.runtime_name.as_str(),
            v.runtime_api_version.as_str()
        ),
        ("0.1.0", "sim", "v1")
    );
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
    let s = rt.status(cri::StatusRequest { verbose: false }).await.unwrap();
    let conds: Vec<(String, bool)> = s
        .status
        .unwrap()
        .conditions
        .into_iter()
        .map(|c| (c.r#type, c.status))
        .collect();
    assert_eq!(
        conds,
        vec![("RuntimeReady".into(), true), ("NetworkReady".into(), true)]
    );
}

#[tokio::test(start_paused = true)]
async fn lifecycle_exit_codes_and_reasons() {
    let (rt, dir) = rt(cfg_with_image(), Clock::real());
    let pod = run_pod(&rt, &dir, "p1").await;
    assert!(is_id(&pod.id));
    let sb = sandbox_status(&rt, &pod.id).await;
    assert_eq!(sb.state, SANDBOX_READY);
    assert_eq!(sb.network.as_ref().unwrap().ip, "10.88.0.2");
    assert_eq!(sb.labels["app"], "other");
    assert_eq!(sb.annotations["kubernetes.io/config.source"], "api");

    let created = create(&rt, &pod, "idle", &[]).await;
    assert!(is_id(&created));
    let s = status(&rt, &created).await;
    assert_eq!((s.state, s.started_at, s.finished_at), (CREATED, 0, 0));
    assert!(s.created_at > 0);

    let cases = [
        ("zero", "exit 0", 0, "Completed"),
        ("three", "echo hi; exit 3", 3, "Error"),
        ("last", "true; false", 1, "Error"),
        ("oom", "oom", 137, "OOMKilled"),
    ];
    for (name, script, code, reason) in cases {
        let id = start(&rt, &pod, name, script).await;
        let s = status(&rt, &id).await;
        assert_eq!(s.state, EXITED, "{script}");
        assert_eq!((s.exit_code, s.reason.as_str()), (code, reason), "{script}");
        assert!(s.started_at > 0 && s.finished_at >= s.started_at);
        // Echoed config.
        assert_eq!(s.metadata.as_ref().unwrap().name, name);
        assert_eq!(s.labels["io.kubernetes.container.name"], name);
        assert_eq!(s.annotations["io.kubernetes.container.restartCount"], "0");
        assert_eq!(s.image.as_ref().unwrap().image, "docker.io/library/busybox:1.36");
        assert!(
            s.image_ref.starts_with("docker.io/library/busybox@sha256:"),
            "{}",
            s.image_ref
        );
        assert!(
            s.log_path.ends_with(&format!("default_p1_uid-p1/{name}/0.log")),
            "{}",
            s.log_path
        );
    }

    // Starting twice is an error; a container whose command cannot start is a StartError.
    let id = start(&rt, &pod, "long", "sleep infinity").await;
    let err = rt
        .start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert!(err.message.contains("CONTAINER_RUNNING"), "{err}");
    let mut cfg = cfg_with_image();
    cfg.start_failures = vec!["/does-not-exist".into()];
    rt.set_config(cfg);
    let bad = create(&rt, &pod, "bad", &["/does-not-exist"]).await;
    let err = rt
        .start_container(cri::StartContainerRequest {
            container_id: bad.clone(),
        })
        .await
        .unwrap_err();
    assert!(err.message.contains("no such file or directory"), "{err}");
    let s = status(&rt, &bad).await;
    assert_eq!(
        (s.state, s.exit_code, s.reason.as_str(), s.started_at),
        (EXITED, 128, "StartError", 0)
    );
    assert_eq!(s.message, err.message);

    // Unknown IDs.
    let err = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: "ffff".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    let err = rt
        .stop_container(cri::StopContainerRequest {
            container_id: "ffff".into(),
            timeout: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    // Stopping an exited container is a no-op.
    let exited = start(&rt, &pod, "done", "exit 2").await;
    stop(&rt, &exited, 10).await;
    assert_eq!(status(&rt, &exited).await.exit_code, 2);
    // A unique prefix resolves.
    assert_eq!(status(&rt, &exited[..12]).await.id, exited);
}

#[tokio::test(start_paused = true)]
async fn sleep_runs_in_virtual_time() {
    // 10× clock: `sleep 100` lasts 10 real seconds.
    let (rt, dir) = rt(cfg_with_image(), Clock::scaled(10.0));
    let pod = run_pod(&rt, &dir, "p").await;
    let id = start(&rt, &pod, "c", "echo start; sleep 100; echo end; exit 2").await;
    tokio::time::sleep(Duration::from_millis(9_900)).await;
    assert_eq!(status(&rt, &id).await.state, RUNNING);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = status(&rt, &id).await;
    assert_eq!((s.state, s.exit_code), (EXITED, 2));
    // finishedAt is started + 10 real seconds, deterministically.
    assert_eq!(s.finished_at - s.started_at, 10_000_000_000);
    let lines = read_log(&s.log_path);
    assert_eq!(
        lines.iter().map(|l| l.2.as_str()).collect::<Vec<_>>(),
        vec!["start", "end"]
    );
}

#[tokio::test(start_paused = true)]
async fn sigterm_default_ignored_and_trapped() {
    let (rt, dir) = rt(cfg_with_image(), Clock::real());
    let pod = run_pod(&rt, &dir, "p").await;

    // Default: SIGTERM ends it at once with 143.
    let id = start(&rt, &pod, "plain", "sleep infinity").await;
    let t0 = tokio::time::Instant::now();
    stop(&rt, &id, 30).await;
    assert_eq!(t0.elapsed(), Duration::ZERO);
    let s = status(&rt, &id).await;
    assert_eq!((s.state, s.exit_code, s.reason.as_str()), (EXITED, 143, "Error"));

    // Ignored: killed at the timeout with 137.
    let id = start(&rt, &pod, "ignore", "trap '' TERM; sleep infinity").await;
    let t0 = tokio::time::Instant::now();
    stop(&rt, &id, 5).await;
    assert_eq!(t0.elapsed(), Duration::from_secs(5));
    let s = status(&rt, &id).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"));

    // Ignored, but the script ends by itself during the grace period.
    let id = start(&rt, &pod, "ends", "trap '' TERM; sleep 3; exit 4").await;
    let t0 = tokio::time::Instant::now();
    stop(&rt, &id, 10).await;
    assert_eq!(t0.elapsed(), Duration::from_secs(3));
    assert_eq!(status(&rt, &id).await.exit_code, 4);

    // Trapped: exits with the trap's code at once.
    let id = start(
        &rt,
        &pod,
        "trapped",
        "trap 'echo bye; exit 7' TERM; while true; do sleep 1; done",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop(&rt, &id, 30).await;
    let s = status(&rt, &id).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (7, "Error"));
    assert!(read_log(&s.log_path).iter().any(|l| l.2 == "bye"));
    // A slow handler still yields to SIGKILL at the timeout.
    let id = start(&rt, &pod, "slow", "trap 'sleep 100; exit 9' TERM; sleep infinity").await;
    let t0 = tokio::time::Instant::now();
    stop(&rt, &id, 4).await;
    assert_eq!(t0.elapsed(), Duration::from_secs(4));
    assert_eq!(status(&rt, &id).await.exit_code, 137);
    let id = start(&rt, &pod, "trapped0", "trap 'exit 0' TERM; sleep infinity").await;
    stop(&rt, &id, 30).await;
    assert_eq!(status(&rt, &id).await.reason, "Completed");

    // Timeout 0: SIGKILL even when SIGTERM is ignored.
    let id = start(&rt, &pod, "kill", "trap '' TERM; sleep infinity").await;
    let t0 = tokio::time::Instant::now();
    stop(&rt, &id, 0).await;
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(status(&rt, &id).await.exit_code, 137);
}

#[tokio::test(start_paused = true)]
async fn stop_and_remove_pod_sandbox() {
    let (rt, dir) = rt(cfg_with_image(), Clock::real());
    let pod = run_pod(&rt, &dir, "p").await;
    let a = start(&rt, &pod, "a", "sleep infinity").await;
    let b = start(&rt, &pod, "b", "trap '' TERM; sleep 1000").await;
    let c = create(&rt, &pod, "c", &["sleep", "1"]).await;
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await
    .unwrap();
    for id in [&a, &b] {
        let s = status(&rt, id).await;
        assert_eq!((s.state, s.exit_code), (EXITED, 137));
    }
    assert_eq!(status(&rt, &c).await.state, CREATED);
    let sb = sandbox_status(&rt, &pod.id).await;
    assert_eq!(sb.state, SANDBOX_NOTREADY);
    assert_eq!(sb.network.unwrap().ip, "");
    // Idempotent.
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await
    .unwrap();
    // Starting in a stopped sandbox is a StartError; creating is refused.
    let err = rt
        .start_container(cri::StartContainerRequest {
            container_id: c.clone(),
        })
        .await
        .unwrap_err();
    assert!(err.message.contains("is not running"), "{err}");
    assert_eq!(status(&rt, &c).await.reason, "StartError");
    let err = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(container_config(&pod.config, "late", &[])),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);

    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await
    .unwrap();
    let all = rt
        .list_containers(cri::ListContainersRequest { filter: None })
        .await
        .unwrap();
    assert!(all.containers.is_empty());
    let err = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    // Removing what is gone succeeds, like containerd.
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod.id })
        .await
        .unwrap();
    rt.remove_container(cri::RemoveContainerRequest { container_id: a })
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn remove_running_container_kills_it_first() {
    let (rt, dir) = rt(cfg_with_image(), Clock::real());
    let pod = run_pod(&rt, &dir, "p").await;
    let id = start(&rt, &pod, "a", "trap '' TERM; sleep infinity").await;
    let t0 = tokio::time::Instant::now();
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(t0.elapsed(), Duration::ZERO);
    let err = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id,
            verbose: false,
        })
        .await
        .unwrap_err();
    assert!(err.is_not_found());
    // The name is free again.
    start(&rt, &pod, "a", "exit 0").await;
}

#[tokio::test(start_paused = true)]
async fn list_filters_like_containerd() {
    let (rt, dir) = rt(cfg_with_image(), Clock::real());
    let p0 = run_pod(&rt, &dir, "p0").await;
    let p1 = run_pod(&rt, &dir, "p1").await;
    let r0 = start(&rt, &p0, "run", "sleep infinity").await;
    let e0 = start(&rt, &p0, "done", "exit 0").await;
    let r1 = start(&rt, &p1, "run", "sleep infinity").await;
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: p1.id.clone(),
    })
    .await
    .unwrap();

    let sandboxes = |f: cri::PodSandboxFilter| {
        let rt = rt.clone();
        async move {
            let mut ids: Vec<String> = rt
                .list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(f) })
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|s| s.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sandboxes(Default::default()).await,
        sorted(vec![p0.id.clone(), p1.id.clone()])
    );
    assert_eq!(
        sandboxes(cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue { state: SANDBOX_READY }),
            ..Default::default()
        })
        .await,
        vec![p0.id.clone()]
    );
    assert_eq!(
        sandboxes(cri::PodSandboxFilter {
            id: p1.id[..10].to_string(),
            ..Default::default()
        })
        .await,
        vec![p1.id.clone()]
    );
    assert_eq!(
        sandboxes(cri::PodSandboxFilter {
            label_selector: [("io.kubernetes.pod.uid".to_string(), "uid-p1".to_string())].into(),
            ..Default::default()
        })
        .await,
        vec![p1.id.clone()]
    );
    assert_eq!(
        sandboxes(cri::PodSandboxFilter {
            label_selector: [("app".to_string(), "zero".to_string())].into(),
            ..Default::default()
        })
        .await,
        vec![p0.id.clone()]
    );
    assert!(sandboxes(cri::PodSandboxFilter {
        label_selector: [
            ("app".to_string(), "zero".to_string()),
            ("io.kubernetes.pod.uid".to_string(), "uid-p1".to_string())
        ]
        .into(),
        ..Default::default()
    })
    .await
    .is_empty());

    let containers = |f: cri::ContainerFilter| {
        let rt = rt.clone();
        async move {
            let mut ids: Vec<String> = rt
                .list_containers(cri::ListContainersRequest { filter: Some(f) })
                .await
                .unwrap()
                .containers
                .into_iter()
                .map(|s| s.id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(containers(Default::default()).await.len(), 3);
    assert_eq!(
        containers(cri::ContainerFilter {
            state: Some(cri::ContainerStateValue { state: RUNNING }),
            ..Default::default()
        })
        .await,
        vec![r0.clone()]
    );
    assert_eq!(
        containers(cri::ContainerFilter {
            pod_sandbox_id: p0.id.clone(),
            ..Default::default()
        })
        .await,
        sorted(vec![r0.clone(), e0.clone()])
    );
    assert_eq!(
        containers(cri::ContainerFilter {
            pod_sandbox_id: p0.id.clone(),
            state: Some(cri::ContainerStateValue { state: EXITED }),
            ..Default::default()
        })
        .await,
        vec![e0.clone()]
    );
    assert_eq!(
        containers(cri::ContainerFilter {
            id: r1.clone(),
            ..Default::default()
        })
        .await,
        vec![r1.clone()]
    );
    assert!(containers(cri::ContainerFilter {
        id: r1.clone(),
        pod_sandbox_id: p0.id.clone(),
        ..Default::default()
    })
    .await
    .is_empty());
    assert_eq!(
        containers(cri::ContainerFilter {
            label_selector: [
                ("io.kubernetes.pod.uid".to_string(), "uid-p0".to_string()),
                ("io.kubernetes.container.name".to_string(), "run".to_string())
            ]
            .into(),
            ..Default::default()
        })
        .await,
        vec![r0.clone()]
    );
    // Listed containers show the image as requested and the image ID as image_ref.
    let listed = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                id: r0.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .containers;
    assert_eq!(listed[0].image.as_ref().unwrap().image, IMAGE);
    assert!(listed[0].image_ref.starts_with("sha256:"));
    assert_eq!(listed[0].pod_sandbox_id, p0.id);
}

#[tokio::test(start_paused = true)]
async fn logs_are_written_in_cri_format_and_reopened() {
    let (rt, dir) = rt(cfg_with_image(), Clock::real());
    let pod = run_pod(&rt, &dir, "p").await;
    let id = start(
        &rt,
        &pod,
        "c",
        "echo hi; echo oops >&2; echo -n part; sleep 10; echo $GREETING from $HOSTNAME; sleep infinity",
    )
    .await;
    let path = status(&rt, &id).await.log_path;
    let raw = std::fs::read_to_string(&path).unwrap();
    let first = raw.lines().next().unwrap();
    let ts = first.split(' ').next().unwrap();
    assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{first}");
    assert!(ts.ends_with('Z'));
    let want = |v: &[(&str, &str, &str)]| -> Vec<(String, String, String)> {
        v.iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect()
    };
    assert_eq!(
        read_log(&path),
        want(&[("stdout", "F", "hi"), ("stderr", "F", "oops"), ("stdout", "P", "part")])
    );
    // Rotation: the kubelet renames the file, then asks for a reopen.
    let rotated = format!("{path}.20240101-000000");
    std::fs::rename(&path, &rotated).unwrap();
    rt.reopen_container_log(cri::ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    assert!(std::path::Path::new(&path).exists());
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(read_log(&path), want(&[("stdout", "F", "hello from p")]));
    assert_eq!(read_log(&rotated).len(), 3);
    // Unrecognized commands say so on stderr.
    let id = start(&rt, &pod, "srv", "my-server --port 80").await;
    let lines = read_log(&status(&rt, &id).await.log_path);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].0, "stderr");
    assert!(lines[0].2.contains("treating it as long-running"));
    assert_eq!(status(&rt, &id).await.state, RUNNING);
    // Reopen on an exited container is an error.
    let done = start(&rt, &pod, "done", "exit 0").await;
    assert!(rt
        .reopen_container_log(cri::ReopenContainerLogRequest { container_id: done })
        .await
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn termination_message_file_goes_to_the_mount() {
    let (rt, dir) = rt(cfg_with_image(), Clock::real());
    let pod = run_pod(&rt, &dir, "p").await;
    let host = dir.path().join("termination-log");
    std::fs::write(&host, b"").unwrap();
    let mut config = container_config(
        &pod.config,
        "t",
        &["sh", "-c", "echo -n DONE > /dev/termination-log; exit 1"],
    );
    config.mounts.push(cri::Mount {
        container_path: "/dev/termination-log".into(),
        host_path: host.to_string_lossy().into_owned(),
        ..Default::default()
    });
    let id = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        })
        .await
        .unwrap()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    let s = status(&rt, &id).await;
    assert_eq!(s.exit_code, 1);
    assert_eq!(s.mounts[0].container_path, "/dev/termination-log");
    assert_eq!(std::fs::read(&host).unwrap(), b"DONE");
}

#[tokio::test(start_paused = true)]
async fn exec_sync_runs_the_vocabulary() {
    let (rt, dir) = rt(cfg_with_image(), Clock::real());
    let pod = run_pod(&rt, &dir, "p").await;
    let id = start(
        &rt,
        &pod,
        "c",
        "touch /tmp/healthy; sleep 10; rm -f /tmp/healthy; sleep 600",
    )
    .await;
    let exec = |cmd: &[&str], timeout: i64| {
        let rt = rt.clone();
        let req = cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        };
        async move { rt.exec_sync(req).await }
    };
    assert_eq!(exec(&["cat", "/tmp/healthy"], 1).await.unwrap().exit_code, 0);
    let r = exec(&["sh", "-c", "echo out; echo err >&2; exit 3"], 1).await.unwrap();
    assert_eq!(
        (r.exit_code, r.stdout.as_slice(), r.stderr.as_slice()),
        (3, &b"out\n"[..], &b"err\n"[..])
    );
    let r = exec(&["printenv", "GREETING"], 0).await.unwrap();
    assert_eq!(r.stdout, b"hello\n");
    // Unknown commands succeed in exec.
    assert_eq!(exec(&["/healthz-probe", "--x"], 1).await.unwrap().exit_code, 0);
    // Longer than the timeout: DeadlineExceeded after the timeout.
    let t0 = tokio::time::Instant::now();
    let err = exec(&["sleep", "5"], 2).await.unwrap_err();
    assert_eq!(err.code, Code::DeadlineExceeded);
    assert_eq!(t0.elapsed(), Duration::from_secs(2));
    tokio::time::sleep(Duration::from_secs(9)).await;
    let r = exec(&["cat", "/tmp/healthy"], 1).await.unwrap();
    assert_eq!(r.exit_code, 1);
    assert!(String::from_utf8_lossy(&r.stderr).contains("No such file"));
    // Only on running containers.
    stop(&rt, &id, 0).await;
    let err = exec(&["true"], 1).await.unwrap_err();
    assert!(err.message.contains("CONTAINER_EXITED"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn images_present_pulled_and_failing() {
    let mut cfg = cfg_with_image();
    cfg.pull_latency = 4.0;
    cfg.pull_failures = vec![config::PullFailure {
        pattern: "*/private/*".into(),
        message: String::new(),
    }];
    let (rt, dir) = rt(cfg, Clock::scaled(2.0));
    let image = |name: &str| {
        Some(cri::ImageSpec {
            image: name.to_string(),
            ..Default::default()
        })
    };
    let present = rt
        .image_status(cri::ImageStatusRequest {
            image: image(IMAGE),
            verbose: false,
        })
        .await
        .unwrap();
    let present = present.image.unwrap();
    assert_eq!(present.repo_tags, vec!["docker.io/library/busybox:1.36"]);
    assert!(present.id.starts_with("sha256:") && present.size > 0);
    let absent = rt
        .image_status(cri::ImageStatusRequest {
            image: image("nginx"),
            verbose: false,
        })
        .await
        .unwrap();
    assert!(absent.image.is_none());

    // A pull takes pull_latency virtual seconds (2 real at scale 2) and stores the image.
    let t0 = tokio::time::Instant::now();
    let pulled = rt
        .pull_image(cri::PullImageRequest {
            image: image("nginx"),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(2));
    let st = rt.image_status(cri::ImageStatusRequest {
        image: image("docker.io/library/nginx:latest"),
        verbose: false,
    });
    assert_eq!(st.await.unwrap().image.unwrap().id, pulled.image_ref);
    assert_eq!(
        rt.list_images(cri::ListImagesRequest { filter: None })
            .await
            .unwrap()
            .images
            .len(),
        2
    );

    let err = rt
        .pull_image(cri::PullImageRequest {
            image: image("registry.invalid/app:1"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    assert!(err
        .message
        .starts_with("failed to pull and unpack image \"registry.invalid/app:1\": failed to resolve reference"));
    let err = rt
        .pull_image(cri::PullImageRequest {
            image: image("example.com/private/app:1"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message.contains("pull access denied"), "{err}");
    let err = rt
        .pull_image(cri::PullImageRequest {
            image: image("Bad:Name"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);

    // Creating from an absent image fails like containerd.
    let pod = run_pod(&rt, &dir, "p").await;
    let mut config = container_config(&pod.config, "c", &[]);
    config.image = image("alpine");
    let err = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);

    rt.remove_image(cri::RemoveImageRequest { image: image("nginx") })
        .await
        .unwrap();
    rt.remove_image(cri::RemoveImageRequest { image: image("nginx") })
        .await
        .unwrap();
    let fs = rt.image_fs_info(cri::ImageFsInfoRequest {}).await.unwrap();
    let usage = &fs.image_filesystems[0];
    assert_eq!(usage.used_bytes.unwrap().value, present.size);
    assert_eq!(usage.inodes_used.unwrap().value, 1);
}

#[tokio::test(start_paused = true)]
async fn network_and_availability_faults() {
    let mut cfg = cfg_with_image();
    cfg.network_ready = false;
    let (rt, dir) = rt(cfg, Clock::real());
    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox_config(&dir, "p", false)),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert!(err.message.contains("cni plugin not initialized"), "{err}");
    let host = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox_config(&dir, "h", true)),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .pod_sandbox_id;
    assert_eq!(sandbox_status(&rt, &host).await.network.unwrap().ip, "");
    let s = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(s.conditions[1].reason, "NetworkPluginNotReady");
    assert!(!s.conditions[1].status);

    let mut cfg = cfg_with_image();
    cfg.unavailable = true;
    rt.set_config(cfg);
    let err = rt.version(cri::VersionRequest::default()).await.unwrap_err();
    assert_eq!(err.code, Code::Unavailable);
    let err = rt.list_images(cri::ListImagesRequest::default()).await.unwrap_err();
    assert_eq!(err.code, Code::Unavailable);
    rt.set_config(cfg_with_image());
    assert!(rt.version(cri::VersionRequest::default()).await.is_ok());

    // Configured UNKNOWN containers.
    let pod = run_pod(&rt, &dir, "u").await;
    let id = start(&rt, &pod, "flaky-1", "sleep infinity").await;
    let mut cfg = cfg_with_image();
    cfg.unknown_containers = vec!["flaky-*".into()];
    rt.set_config(cfg);
    assert_eq!(status(&rt, &id).await.state, UNKNOWN);
    stop(&rt, &id, 0).await;
    assert_eq!(status(&rt, &id).await.state, EXITED);
}

#[tokio::test(start_paused = true)]
async fn config_file_reload_flips_runtime_ready() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.yaml");
    std::fs::write(&path, "runtimeReady: false\nruntimeReadyReason: Broken\n").unwrap();
    let rt = SimRuntime::with_config_file(&path, Clock::real(), dir.path().join("sim")).unwrap();
    let ready = |rt: Arc<SimRuntime>| async move {
        let s = rt
            .status(cri::StatusRequest { verbose: false })
            .await
            .unwrap()
            .status
            .unwrap();
        (s.conditions[0].status, s.conditions[0].reason.clone())
    };
    assert_eq!(ready(rt.clone()).await, (false, "Broken".to_string()));
    std::fs::write(&path, "runtimeReady: true\n").unwrap();
    // Make the change visible even on a coarse-mtime file system.
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ready(rt.clone()).await, (true, String::new()));
    // A broken file keeps the previous config.
    std::fs::write(&path, "runtimeReady: [").unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(10))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ready(rt.clone()).await, (true, String::new()));
}

/// Rewrites a container's start time in the journal (as if it had started `ago` earlier).
fn backdate(state_dir: &std::path::Path, id: &str, ago: Duration) -> i64 {
    let path = state_dir.join("journal.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut started = 0;
    let mut out = String::new();
    for line in text.lines() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(c) = v.get_mut("container") {
            if c["id"] == id && c["started_at"].as_i64().unwrap() > 0 {
                started = c["started_at"].as_i64().unwrap() - ago.as_nanos() as i64;
                c["started_at"] = started.into();
            }
        }
        out.push_str(&v.to_string());
        out.push('\n');
    }
    std::fs::write(&path, out).unwrap();
    started
}

/// Shifts the timestamps of a log file by `ago` (what it would hold had the container started
/// that much earlier).
fn backdate_log(path: &str, ago: Duration) {
    let text = std::fs::read_to_string(path).unwrap();
    let out: String = text
        .lines()
        .map(|l| {
            let (ts, rest) = l.split_once(' ').unwrap();
            let ts: jiff::Timestamp = ts.parse().unwrap();
            format!("{} {rest}\n", ts.checked_sub(ago).unwrap())
        })
        .collect();
    std::fs::write(path, out).unwrap();
}

#[tokio::test(start_paused = true)]
async fn journal_reload_resumes_mid_sleep() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("sim");
    let rt1 = SimRuntime::new(cfg_with_image(), Clock::real(), state_dir.clone()).unwrap();
    let pod = run_pod(&rt1, &dir, "p").await;
    let id = start(&rt1, &pod, "c", "echo a; sleep 100; echo b; exit 5").await;
    let idle = create(&rt1, &pod, "idle", &[]).await;
    drop(rt1);
    tokio::task::yield_now().await;
    // keel was SIGKILLed 30 s after the start.
    let started = backdate(&state_dir, &id, Duration::from_secs(30));

    let rt2 = SimRuntime::new(cfg_with_image(), Clock::real(), state_dir.clone()).unwrap();
    let s = status(&rt2, &id).await;
    assert_eq!((s.state, s.started_at), (RUNNING, started));
    assert_eq!(status(&rt2, &idle).await.state, CREATED);
    assert_eq!(sandbox_status(&rt2, &pod.id).await.network.unwrap().ip, "10.88.0.2");
    // 70 s were left.
    tokio::time::sleep(Duration::from_secs(69)).await;
    assert_eq!(status(&rt2, &id).await.state, RUNNING);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = status(&rt2, &id).await;
    assert_eq!((s.state, s.exit_code, s.reason.as_str()), (EXITED, 5, "Error"));
    assert_eq!(s.finished_at, started + 100_000_000_000);
    // "a" was logged before the restart and is not repeated.
    let texts: Vec<String> = read_log(&s.log_path).into_iter().map(|l| l.2).collect();
    assert_eq!(texts, vec!["a", "b"]);
    // New sandboxes do not reuse the journaled address.
    let p2 = run_pod(&rt2, &dir, "p2").await;
    assert_eq!(sandbox_status(&rt2, &p2.id).await.network.unwrap().ip, "10.88.0.3");
}

#[tokio::test(start_paused = true)]
async fn journal_reload_after_the_script_ended() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("sim");
    let rt1 = SimRuntime::new(cfg_with_image(), Clock::scaled(10.0), state_dir.clone()).unwrap();
    let pod = run_pod(&rt1, &dir, "p").await;
    let id = start(&rt1, &pod, "c", "echo a; sleep 100; echo b; exit 5").await;
    let forever = start(&rt1, &pod, "f", "sleep infinity").await;
    let log = status(&rt1, &id).await.log_path;
    drop(rt1);
    tokio::task::yield_now().await;
    // Down for 200 real seconds = 2000 virtual: the script (100 virtual = 10 real) ended.
    let started = backdate(&state_dir, &id, Duration::from_secs(200));
    backdate_log(&log, Duration::from_secs(200));
    let rt2 = SimRuntime::new(cfg_with_image(), Clock::scaled(10.0), state_dir.clone()).unwrap();
    let s = status(&rt2, &id).await;
    assert_eq!((s.state, s.exit_code), (EXITED, 5));
    assert_eq!(s.finished_at, started + 10_000_000_000);
    let texts: Vec<String> = read_log(&s.log_path).into_iter().map(|l| l.2).collect();
    assert_eq!(texts, vec!["a", "b"]);
    assert_eq!(status(&rt2, &forever).await.state, RUNNING);
    // Deterministic: a third load from the same journal sees the same state.
    drop(rt2);
    tokio::task::yield_now().await;
    let rt3 = SimRuntime::new(cfg_with_image(), Clock::scaled(10.0), state_dir).unwrap();
    let s3 = status(&rt3, &id).await;
    assert_eq!(
        (s3.state, s3.exit_code, s3.finished_at),
        (s.state, s.exit_code, s.finished_at)
    );
    stop(&rt3, &forever, 0).await;
    assert_eq!(status(&rt3, &forever).await.exit_code, 137);
}

#[tokio::test(start_paused = true)]
async fn thousands_of_pods() {
    const PODS: usize = 2000;
    let (rt, dir) = rt(cfg_with_image(), Clock::real());
    let mut ids = Vec::with_capacity(PODS);
    for i in 0..PODS {
        let mut config = sandbox_config(&dir, &format!("pod-{i}"), false);
        // No log directory: this measures the runtime, not 2,000 log files on a slow disk.
        config.log_directory.clear();
        let id = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .pod_sandbox_id;
        let pod = Pod { id, config };
        let script = if i % 4 == 0 { "exit 0" } else { "sleep infinity" };
        let c = start(&rt, &pod, "main", script).await;
        ids.push((pod.id, c));
    }
    let all = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .unwrap();
    assert_eq!(all.items.len(), PODS);
    let running = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                state: Some(cri::ContainerStateValue { state: RUNNING }),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    assert_eq!(running.containers.len(), PODS * 3 / 4);
    let one = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                label_selector: [("io.kubernetes.pod.uid".to_string(), "uid-pod-1234".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    assert_eq!(one.containers.len(), 1);
    assert_eq!(one.containers[0].id, ids[1234].1);
    let ips: std::collections::BTreeSet<String> =
        futures::future::join_all(ids.iter().map(|(sb, _)| sandbox_status(&rt, sb)))
            .await
            .into_iter()
            .map(|s| s.network.unwrap().ip)
            .collect();
    assert_eq!(ips.len(), PODS);
}

#[tokio::test(start_paused = true)]
async fn reload_redoes_only_file_writes_made_while_keel_was_down() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("sim");
    let vol = dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    let rt1 = SimRuntime::new(cfg_with_image(), Clock::real(), state_dir.clone()).unwrap();
    let pod = run_pod(&rt1, &dir, "p").await;
    let mut config = container_config(
        &pod.config,
        "w",
        &[
            "sh",
            "-c",
            "echo a >> /vol/f; sleep 50; echo b >> /vol/f; sleep infinity",
        ],
    );
    config.mounts.push(cri::Mount {
        container_path: "/vol".into(),
        host_path: vol.to_string_lossy().into_owned(),
        ..Default::default()
    });
    let id = rt1
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        })
        .await
        .unwrap()
        .container_id;
    rt1.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(std::fs::read_to_string(vol.join("f")).unwrap(), "a\n");
    drop(rt1);
    tokio::task::yield_now().await;
    // Started 100 s ago; keel died 20 s after the start (its last heartbeat).
    let started = backdate(&state_dir, &id, Duration::from_secs(100));
    let died = jiff::Timestamp::from_nanosecond(i128::from(started) + 20_000_000_000).unwrap();
    std::fs::write(state_dir.join(HEARTBEAT_FILE), died.to_string()).unwrap();
    let rt2 = SimRuntime::new(cfg_with_image(), Clock::real(), state_dir).unwrap();
    assert_eq!(status(&rt2, &id).await.state, RUNNING);
    assert_eq!(std::fs::read_to_string(vol.join("f")).unwrap(), "a\nb\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_stops_and_removals_settle() {
    const PODS: usize = 100;
    let (rt, dir) = rt(cfg_with_image(), Clock::scaled(100.0));
    let mut tasks = Vec::new();
    for i in 0..PODS {
        let rt = rt.clone();
        let config = {
            let mut c = sandbox_config(&dir, &format!("c{i}"), false);
            c.log_directory.clear();
            c
        };
        tasks.push(tokio::spawn(async move {
            let id = rt
                .run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(config.clone()),
                    runtime_handler: String::new(),
                })
                .await
                .unwrap()
                .pod_sandbox_id;
            let pod = Pod { id, config };
            // Exits on its own after 1 virtual second (10 ms real), races the stop below.
            let a = start(&rt, &pod, "a", "sleep 1; exit 3").await;
            let b = start(&rt, &pod, "b", "trap '' TERM; sleep infinity").await;
            let (r1, r2) = tokio::join!(
                rt.stop_container(cri::StopContainerRequest {
                    container_id: a.clone(),
                    timeout: 2,
                }),
                rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: pod.id.clone(),
                })
            );
            r1.unwrap();
            r2.unwrap();
            let sa = status(&rt, &a).await;
            let sb = status(&rt, &b).await;
            assert_eq!(sa.state, EXITED);
            assert!([3, 137, 143].contains(&sa.exit_code), "{}", sa.exit_code);
            assert_eq!((sb.state, sb.exit_code), (EXITED, 137));
            rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod.id })
                .await
                .unwrap();
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(tasks))
        .await
        .expect("no hang")
        .into_iter()
        .for_each(|r| r.unwrap());
    assert!(rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .containers
        .is_empty());
    assert!(rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .items
        .is_empty());
}

mod log_faults;
mod streams;
