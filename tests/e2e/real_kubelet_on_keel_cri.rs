//! The stock kubelet v1.24 with `keel cri --runtime sim` as its container runtime: a static pod
//! runs, a crashing container restarts with the kubelet's back-off and counts, and the
//! kubelet's own server reads the container's log and runs a command in it through keel.
//!
//! The kubelet runs standalone (static pods, no API server); the run on the real control plane
//! (node Ready, kubectl logs/exec through the API server) is not written yet. Needs root (the
//! kubelet creates pod cgroups under /kubepods, removed again at the end).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::cri_server::CriServer;
use crate::support::keel::{free_port, unmount_under};
use crate::support::util::unique;

/// The stock kubelet: `$KUBEBUILDER_ASSETS/kubelet`, else the shared envtest directory.
fn kubelet_binary() -> Option<PathBuf> {
    let dir = std::env::var_os("KUBEBUILDER_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/envtest"));
    Some(dir.join("kubelet")).filter(|p| p.is_file())
}

/// The kubelet's server (anonymous, AlwaysAllow: a private test node on 127.0.0.1).
async fn kubelet_get(port: u16, path: &str, method: &str) -> Option<String> {
    let out = tokio::process::Command::new("curl")
        .args(["-sfk", "--max-time", "10", "-X", method])
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes the pod cgroups the kubelet made for `uid` (every v1 hierarchy and v2).
fn remove_pod_cgroups(uid: &str) {
    let name = format!("pod{uid}");
    let roots = std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default();
    for root in roots.into_iter().chain([PathBuf::from("/sys/fs/cgroup")]) {
        for qos in ["", "besteffort", "burstable"] {
            let dir = root.join("kubepods").join(qos).join(&name);
            if dir.is_dir() {
                // Children first (container cgroups are the runtime's; the sim makes none).
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
}

#[tokio::test]
async fn stock_kubelet_runs_static_pods_on_keel_cri() {
    let Some(kubelet) = kubelet_binary() else {
        eprintln!("SKIPPED stock_kubelet_runs_static_pods_on_keel_cri: no kubelet in $KUBEBUILDER_ASSETS");
        return;
    };
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED stock_kubelet_runs_static_pods_on_keel_cri: the kubelet needs root");
        return;
    }
    let cri = CriServer::start().await.unwrap();
    let node = unique("kcri");
    let port = free_port();
    let healthz = free_port();
    let manifests = cri.path("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("web.yaml"),
        r#"apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
spec:
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo hi-from-kubelet; while true; do sleep 1; done"]
  - name: crash
    image: busybox
    command: ["sh", "-c", "sleep 1; exit 2"]
"#,
    )
    .unwrap();
    let config = cri.path("kubelet.yaml");
    std::fs::write(
        &config,
        format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: {port}
healthzPort: {healthz}
readOnlyPort: 0
cgroupDriver: cgroupfs
cgroupRoot: /
failSwapOn: false
staticPodPath: {}
authentication: {{anonymous: {{enabled: true}}, webhook: {{enabled: false}}}}
authorization: {{mode: AlwaysAllow}}
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
"#,
            manifests.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(cri.path("kubelet.log")).unwrap();
    let mut child = tokio::process::Command::new(kubelet)
        .args(["--hostname-override", &node, "--container-runtime", "remote"])
        .arg(format!(
            "--container-runtime-endpoint=unix://{}",
            cri.socket().display()
        ))
        .arg(format!("--config={}", config.display()))
        .arg(format!("--root-dir={}", cri.path("kubelet").display()))
        .arg(format!("--cert-dir={}", cri.path("kubelet/pki").display()))
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let pod_name = format!("web-{node}");
    let mut uid = String::new();
    let mut last = Value::Null;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut ok = false;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(body) = kubelet_get(port, "/pods", "GET").await else {
            continue;
        };
        let Ok(pods) = serde_json::from_str::<Value>(&body) else {
            continue;
        };
        let Some(pod) = pods["items"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["metadata"]["name"] == pod_name.as_str()))
        else {
            continue;
        };
        uid = pod["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        last = pod["status"].clone();
        let status = |name: &str| {
            last["containerStatuses"]
                .as_array()
                .and_then(|a| a.iter().find(|c| c["name"] == name).cloned())
                .unwrap_or(Value::Null)
        };
        let main = status("main");
        let crash = status("crash");
        if last["phase"] == "Running"
            && main["state"]["running"].is_object()
            && main["restartCount"] == 0
            && crash["restartCount"].as_u64().unwrap_or(0) >= 2
            && crash["lastState"]["terminated"]["exitCode"] == 2
        {
            ok = true;
            break;
        }
    }
    let kubelet_log = || std::fs::read_to_string(cri.path("kubelet.log")).unwrap_or_default();
    if !ok {
        let _ = child.start_kill();
        let _ = child.wait().await;
        remove_pod_cgroups(&uid);
        // The kubelet bind-mounts its root directory onto itself (rshared).
        unmount_under(cri.dir.path());
        panic!(
            "pod status never settled: {last}\nkubelet log tail: {}\nkeel: {}",
            kubelet_log().lines().rev().take(30).collect::<Vec<_>>().join("\n"),
            cri.log()
        );
    }

    // The kubelet's server: the container log keel wrote, and a command run through ExecSync.
    let logs = kubelet_get(port, &format!("/containerLogs/default/{pod_name}/main"), "GET").await;
    let run = kubelet_get(port, &format!("/run/default/{pod_name}/main?cmd=echo+run-ok"), "POST").await;
    // And keel's view of the same pod, through crictl.
    let pods = cri.ok(&["pods", "--name", &pod_name]).await;

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0)),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    remove_pod_cgroups(&uid);
    // The kubelet bind-mounts its root directory onto itself (rshared).
    unmount_under(cri.dir.path());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !mounts.contains(&cri.dir.path().display().to_string()),
        "mounts left behind"
    );

    assert_eq!(logs.as_deref().map(str::trim), Some("hi-from-kubelet"));
    assert_eq!(run.as_deref().map(str::trim), Some("run-ok"));
    assert!(pods.contains("Ready"), "{pods}");
}
