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

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cri_server::CriServer;
use crate::support::envtest::{self, ControlPlane};
use crate::support::keel::{free_port, unmount_under};
use crate::support::util::*;

/// The stock kubelet: `$KUBEBUILDER_ASSETS/kubelet`, else the shared envtest directory.
fn kubelet_binary() -> Option<PathBuf> {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/envtest/kubelet");
    std::env::var_os("KUBEBUILDER_ASSETS")
        .map(|d| PathBuf::from(d).join("kubelet"))
        .filter(|p| p.is_file())
        .or_else(|| Some(shared).filter(|p| p.is_file()))
}

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

/// A pod the kubelet ran, for the clean-up of what it leaves on the host.
struct PodRef {
    namespace: String,
    name: String,
    uid: String,
}

/// The stock kubelet on `keel cri`, stopped by PID when dropped; then its pods' cgroups, log
/// directories and mounts are removed.
struct StockKubelet {
    child: std::process::Child,
    /// The test's private directory (the kubelet's root dir is under it).
    dir: PathBuf,
    log: PathBuf,
    /// Its cgroup root ([`cgroup_root`]).
    cgroup: String,
    pods: Vec<PodRef>,
}

impl StockKubelet {
    /// Starts `binary` as node `node` on `cri`'s socket with KubeletConfiguration `config`,
    /// registered with the API server of `kubeconfig` if one is given.
    fn spawn(binary: &Path, cri: &CriServer, node: &str, config: &str, kubeconfig: Option<&Path>) -> Result<Self> {
        let cgroup = cgroup_root(node);
        create_cgroup(&cgroup)?;
        let config_file = cri.path("kubelet.yaml");
        std::fs::write(&config_file, format!("{config}cgroupRoot: {cgroup}\n")).context("writing kubelet.yaml")?;
        let log = cri.path("kubelet.log");
        let mut cmd = std::process::Command::new(binary);
        cmd.args(["--hostname-override", node, "--container-runtime", "remote"])
            .arg(format!(
                "--container-runtime-endpoint=unix://{}",
                cri.socket().display()
            ))
            .arg(format!("--config={}", config_file.display()))
            .arg(format!("--root-dir={}", cri.path("kubelet").display()))
            .arg(format!("--cert-dir={}", cri.path("kubelet/pki").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).context("creating kubelet.log")?);
        if let Some(k) = kubeconfig {
            cmd.arg(format!("--kubeconfig={}", k.display()));
        }
        let child = cmd.spawn().context("spawning the kubelet")?;
        Ok(StockKubelet {
            child,
            dir: cri.dir.path().to_path_buf(),
            log,
            cgroup,
            pods: Vec::new(),
        })
    }

    fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Records a pod for the clean-up.
    fn ran(&mut self, pod: &Value) {
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        if uid.is_empty() || self.pods.iter().any(|p| p.uid == uid) {
            return;
        }
        self.pods.push(PodRef {
            namespace: pod["metadata"]["namespace"].as_str().unwrap_or("default").to_string(),
            name: pod["metadata"]["name"].as_str().unwrap_or_default().to_string(),
            uid: uid.to_string(),
        });
    }

    /// SIGTERM, then SIGKILL after 20 s; reaped.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        for _ in 0..200 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for StockKubelet {
    fn drop(&mut self) {
        self.stop();
        remove_cgroup(&self.cgroup);
        for p in &self.pods {
            // The kubelet's log directory and /var/log/containers links (its root is fixed).
            let _ = std::fs::remove_dir_all(format!("/var/log/pods/{}_{}_{}", p.namespace, p.name, p.uid));
            let prefix = format!("{}_{}_", p.name, p.namespace);
            for e in std::fs::read_dir("/var/log/containers").into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        // The kubelet bind-mounts its root directory onto itself (rshared) and mounts volumes.
        unmount_under(&self.dir);
    }
}

/// The kubelet's cgroup root for node `node`: `$KEEL_TEST_CGROUP_ROOT/<node>` (tests/README.md),
/// its own so that two kubelets on the host never take each other's pod cgroups for orphans
/// (a kubelet kills a pod whose cgroup went missing). The kubelet wants it to exist already.
fn cgroup_root(node: &str) -> String {
    let top = std::env::var("KEEL_TEST_CGROUP_ROOT")
        .ok()
        .filter(|r| r.starts_with('/'))
        .unwrap_or_else(|| "/keel-test".to_string());
    format!("{}/{node}", top.trim_end_matches('/'))
}

/// `cgroup` in every v1 hierarchy and the v2 mount.
fn cgroup_dirs(cgroup: &str) -> Vec<PathBuf> {
    let relative = cgroup.trim_start_matches('/');
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    dirs.push(PathBuf::from("/sys/fs/cgroup"));
    dirs.into_iter().map(|d| d.join(relative)).collect()
}

fn create_cgroup(cgroup: &str) -> Result<()> {
    for d in cgroup_dirs(cgroup) {
        // Only in mounted hierarchies (not the tmpfs that holds the v1 mounts).
        let mount = d
            .ancestors()
            .nth(Path::new(cgroup.trim_start_matches('/')).components().count());
        if mount.is_some_and(|m| m.join("cgroup.procs").exists()) {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
    }
    cgroup_dirs(cgroup)
        .iter()
        .any(|d| d.is_dir())
        .then_some(())
        .with_context(|| format!("could not create cgroup {cgroup}"))
}

/// Removes `cgroup` and everything under it, deepest first (the sim runs no processes).
fn remove_cgroup(cgroup: &str) {
    for top in cgroup_dirs(cgroup).into_iter().filter(|d| d.is_dir()) {
        let mut dirs = Vec::new();
        let mut stack = vec![top];
        while let Some(d) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&d) {
                stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
            dirs.push(d);
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

/// The KubeletConfiguration lines every run shares: cgroupfs (no systemd here), no
/// swap check, and eviction thresholds low enough for the shared disks.
const BASE_CONFIG: &str = r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
readOnlyPort: 0
cgroupDriver: cgroupfs
failSwapOn: false
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
"#;

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
    let mut kubelet = StockKubelet::spawn(&kubelet, &cri, &node, &config, None).unwrap();

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
    let mut kubelet = StockKubelet::spawn(&kubelet, &cri, &node, &config, Some(&kubeconfig)).unwrap();

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
