//! The stock kubelet v1.24 with `keel cri --runtime sim` as its container runtime.
//!
//! Standalone (static pods, no API server): a static pod runs, a crashing container restarts
//! with the kubelet's back-off and counts, and the kubelet's own server reads the container's
//! log and runs a command in it through keel.
//!
//! Registered with the real control plane of support::envtest: the Node goes Ready with keel as
//! its runtime, pods bound to it reach the right phases and restart counts, and `kubectl logs`,
//! `exec`, `attach` and `port-forward` go API server → kubelet → keel's streaming server.
//!
//! Needs root (the kubelet makes cgroups, under a root of the test's own, and mounts volumes;
//! both are removed again at the end, with the pods' log directories under /var/log/pods).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cri_server::CriServer;
use crate::support::envtest::{self, ControlPlane};
use crate::support::keel::free_port;
use crate::support::kubelet::{kubelet_binary, StockKubelet, BASE_CONFIG};
use crate::support::util::*;

/// The kubelet binary when this test can run; otherwise None after saying why (past libtest's
/// capture, as the real tier does).
fn prerequisites(test: &str) -> Option<PathBuf> {
    let Some(kubelet) = kubelet_binary() else {
        envtest::loud(&format!(
            "SKIPPED {test}: no kubelet in $KUBEBUILDER_ASSETS or ../shared/envtest"
        ));
        return None;
    };
    if !nix::unistd::Uid::effective().is_root() {
        envtest::loud(&format!("SKIPPED {test}: the kubelet needs root"));
        return None;
    }
    Some(kubelet)
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

#[tokio::test]
async fn stock_kubelet_runs_static_pods_on_keel_cri() {
    let Some(kubelet) = prerequisites("stock_kubelet_runs_static_pods_on_keel_cri") else {
        return;
    };
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
    let config = format!(
        "{BASE_CONFIG}address: 127.0.0.1\nport: {port}\nhealthzPort: {healthz}\nstaticPodPath: {}\n\
         authentication: {{anonymous: {{enabled: true}}, webhook: {{enabled: false}}}}\n\
         authorization: {{mode: AlwaysAllow}}\n",
        manifests.display()
    );
    let mut kubelet = StockKubelet::spawn(&kubelet, &cri.socket(), cri.dir.path(), &node, &config, None).unwrap();

    let pod_name = format!("web-{node}");
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
        kubelet.ran(pod);
        last = pod["status"].clone();
        let main = container_status(pod, "main");
        let crash = container_status(pod, "crash");
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
    assert!(
        ok,
        "pod status never settled: {last}\nkubelet log tail: {}\nkeel: {}",
        kubelet.log_tail(30),
        cri.log()
    );

    // The kubelet's server: the container log keel wrote, and a command run through ExecSync.
    let logs = kubelet_get(port, &format!("/containerLogs/default/{pod_name}/main"), "GET").await;
    let run = kubelet_get(port, &format!("/run/default/{pod_name}/main?cmd=echo+run-ok"), "POST").await;
    // And keel's view of the same pod, through crictl.
    let pods = cri.ok(&["pods", "--name", &pod_name]).await;

    drop(kubelet);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !mounts.contains(&cri.dir.path().display().to_string()),
        "mounts left behind"
    );

    assert_eq!(logs.as_deref().map(str::trim), Some("hi-from-kubelet"));
    assert_eq!(run.as_deref().map(str::trim), Some("run-ok"));
    assert!(pods.contains("Ready"), "{pods}");
}

/// The status of container `name` in a pod.
fn container_status(pod: &Value, name: &str) -> Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

/// kubectl that speaks SPDY only (a v1.24 API server speaks SPDY to nodes in any case).
const KUBECTL_SPDY: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
/// The simulator's echo server answers on every declared TCP container port.
const ECHO_PORT: u16 = 8080;

/// Reads `out` until `needle` shows or `limit` passes; what it read.
async fn read_until(out: &mut tokio::process::ChildStdout, needle: &str, limit: Duration) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        match tokio::time::timeout_at(deadline, out.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => break,
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_kubelet_registered_with_the_real_control_plane_on_keel_cri() {
    let test = "stock_kubelet_registered_with_the_real_control_plane_on_keel_cri";
    let Some(kubelet) = prerequisites(test) else {
        return;
    };
    let Some(env) = envtest::shared().await.unwrap() else {
        return;
    };
    let cri = CriServer::start().await.unwrap();
    // A loopback address: the node's name, the Hostname address the API server dials and the
    // address the kubelet serves on.
    let node = env.new_node_name();
    let config = format!(
        "{BASE_CONFIG}address: {node}\nport: {}\nhealthzPort: {}\n{}",
        free_port(),
        free_port(),
        kubelet_auth_config(&env)
    );
    let kubeconfig = env.node_kubeconfig(&node);
    let mut kubelet = StockKubelet::spawn(
        &kubelet,
        &cri.socket(),
        cri.dir.path(),
        &node,
        &config,
        Some(&kubeconfig),
    )
    .unwrap();

    // Registered and Ready, with keel as the runtime it reports.
    let ready = wait_for("the Node Ready", Duration::from_secs(120), || async {
        let n = get_json(&env, &["node", &node]).await?;
        (condition(&n, "Ready")?["status"] == "True").then_some(n)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nkubelet: {}\nkeel: {}", kubelet.log_tail(30), cri.log()));
    assert_eq!(
        ready["status"]["nodeInfo"]["containerRuntimeVersion"],
        format!("keel://{}", env!("CARGO_PKG_VERSION")),
        "{ready}"
    );

    let web = unique("web");
    let done = unique("done");
    let failed = unique("failed");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {web}, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "echo hi-from-keel-cri; while true; do sleep 1; done"]
    ports:
    - containerPort: {ECHO_PORT}
  - name: ticker
    image: busybox:1.36
    command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done"]
  - name: crash
    image: busybox:1.36
    command: ["sh", "-c", "sleep 1; exit 2"]
---
{}---
{}"#,
        pod_yaml(&done, &node, "Never", "echo done; exit 0"),
        pod_yaml(&failed, &node, "Never", "exit 3"),
    );
    apply(&env, &manifest).await.unwrap();

    // Phases and restart counts as the API server has them.
    let pod = |name: String| async move { get_json(env, &["pod", &name, "-n", "default"]).await };
    let settled = wait_for(
        "the pods' phases and restart counts",
        Duration::from_secs(180),
        || async {
            let w = pod(web.clone()).await?;
            let d = pod(done.clone()).await?;
            let f = pod(failed.clone()).await?;
            let main = container_status(&w, "main");
            let crash = container_status(&w, "crash");
            let ok = phase(&w) == "Running"
                && main["state"]["running"].is_object()
                && main["restartCount"] == 0
                && crash["restartCount"].as_u64().unwrap_or(0) >= 2
                && crash["lastState"]["terminated"]["exitCode"] == 2
                && phase(&d) == "Succeeded"
                && container_status(&d, "main")["state"]["terminated"]["exitCode"] == 0
                && phase(&f) == "Failed"
                && container_status(&f, "main")["state"]["terminated"]["exitCode"] == 3;
            ok.then_some([w, d, f])
        },
    )
    .await;
    for name in [&web, &done, &failed] {
        if let Some(p) = pod(name.clone()).await {
            kubelet.ran(&p);
        }
    }
    let [w, _, _] = settled.unwrap_or_else(|e| panic!("{e}\nkubelet: {}\nkeel: {}", kubelet.log_tail(40), cri.log()));
    assert!(
        container_status(&w, "main")["containerID"]
            .as_str()
            .is_some_and(|id| id.starts_with("keel://")),
        "{w}"
    );

    // kubectl logs: API server → kubelet → the CRI log keel wrote.
    let out = env.kubectl(&["logs", &web, "-c", "main"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hi-from-keel-cri",
        "{out:?}"
    );
    let out = env.kubectl(&["logs", &done]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "done", "{out:?}");

    // kubectl exec: the kubelet proxies to the URL keel's Exec returned; output and exit code.
    let out = run_kubectl(
        &env,
        &[
            "exec",
            &web,
            "-c",
            "main",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(7), "{out:?}\nkubelet: {}", kubelet.log_tail(20));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err\n"), "{out:?}");

    // kubectl attach: the live output of a running container.
    let mut child = env
        .kubectl_command(KUBECTL_SPDY)
        .args(["attach", &web, "-c", "ticker"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let got = read_until(&mut stdout, "tick", Duration::from_secs(30)).await;
    let _ = child.kill().await;
    assert!(got.contains("tick "), "attach: {got:?}");

    // kubectl port-forward: bytes through the pod's echo port and back.
    let mut child = env
        .kubectl_command(KUBECTL_SPDY)
        .args(["port-forward", &format!("pod/{web}"), &format!(":{ECHO_PORT}")])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let got = read_until(&mut stdout, "\n", Duration::from_secs(30)).await;
    let local: u16 = got
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no local port in {got:?}"));
    let sent = unique("through-the-kubelet").into_bytes();
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    tcp.write_all(&sent).await.unwrap();
    let mut back = vec![0u8; sent.len()];
    let echoed = tokio::time::timeout(Duration::from_secs(30), tcp.read_exact(&mut back)).await;
    let _ = child.kill().await;
    assert!(matches!(echoed, Ok(Ok(_))), "port-forward: {echoed:?}");
    assert_eq!(back, sent);

    // Deleted pods go: the kubelet stops and removes them through keel.
    let out = env
        .kubectl(&["delete", "pod", &web, &done, &failed, "-n", "default", "--wait=false"])
        .await;
    assert!(out.status.success(), "{out:?}");
    wait_for("the pods gone", Duration::from_secs(120), || async {
        let l = get_json(
            &env,
            &[
                "pods",
                "-n",
                "default",
                "--field-selector",
                &format!("spec.nodeName={node}"),
            ],
        )
        .await?;
        l["items"].as_array()?.is_empty().then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nkubelet: {}", kubelet.log_tail(30)));
    // The kubelet stops their sandboxes at once (it removes them later, in its GC).
    let left = wait_for("keel's sandboxes stopped", Duration::from_secs(60), || async {
        let ids = cri.ok(&["pods", "--state", "ready", "-q"]).await;
        ids.is_empty().then_some(())
    })
    .await;

    drop(kubelet);
    let _ = env.kubectl(&["delete", "node", &node, "--wait=false"]).await;
    left.unwrap_or_else(|e| panic!("{e}: {}", cri.log()));
}

/// kubectl (SPDY) with the admin kubeconfig, to completion, under two minutes.
async fn run_kubectl<A: ControlPlane + ?Sized>(env: &A, args: &[&str]) -> std::process::Output {
    let mut cmd = env.kubectl_command(KUBECTL_SPDY);
    cmd.args(args).stdin(Stdio::null());
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
        .unwrap()
}
