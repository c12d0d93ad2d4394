//! `kubectl exec POD -- true` through the real kube-apiserver v1.24 to keel and to the stock
//! kubelet v1.24, both on the same containerd, in one run (issue 12: "exec as fast as the
//! kubelet's").
//!
//! The control plane is support::envtest's (KUBEBUILDER_ASSETS convention); the containerd is
//! scripts/containerd-env.sh's (`KEEL_CRI_SOCKET`); keel is `$KEEL_BIN` (scripts/bench.sh: the
//! release build); the kubelet is `$KUBEBUILDER_ASSETS/kubelet` or ../shared/envtest/kubelet.
//! Both node agents serve with the same authentication and authorization (x509 client CA,
//! webhook TokenReview and SubjectAccessReview) and run the same busybox pod. One after the
//! other, never both at once: each kills running pods it does not know, and they share the
//! runtime. Each side gets one unmeasured exec per client first (its first exec also pays the
//! SubjectAccessReview both agents then cache), then `KEEL_BENCH_EXEC_RUNS` (default 10) timed
//! runs per client, the clients alternating: kubectl 1.27 (SPDY only) and, when on PATH, the
//! current kubectl (tries WebSocket first; a v1.24 API server refuses it, so it falls back to
//! SPDY). Timed: the kubectl process, spawn to exit, as a user sees it.
//!
//! Clean-up: pods deleted (and their sandboxes removed from containerd), nodes deleted, both
//! processes stopped by PID, their cgroup roots removed.
// The shared test support is compiled whole (and with its unit tests); most is unused here.
#![allow(dead_code, unused)]

#[path = "../tests/support/mod.rs"]
mod support;

mod common;
use common::latency_summary;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use support::envtest::{self, ControlPlane, EnvTest};
use support::keel::free_port;
use support::kubelet::{kubelet_binary, remove_cgroup, StockKubelet, BASE_CONFIG};
use support::util::*;

/// kubectl that speaks SPDY only.
const KUBECTL_SPDY: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
/// The current kubectl (WebSocket first, then SPDY).
const KUBECTL_CURRENT: &str = "kubectl";
/// How long a node or a pod may take to come up (or a pod to go) on a loaded machine.
const LIMIT: Duration = Duration::from_secs(180);
/// One exec may take this long before the run fails.
const EXEC_LIMIT: Duration = Duration::from_secs(60);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A kubectl to time: its label and binary.
#[derive(Clone)]
struct Client {
    label: String,
    bin: String,
}

fn clients() -> Vec<Client> {
    let mut c = vec![Client {
        label: "kubectl 1.27 (SPDY)".into(),
        bin: KUBECTL_SPDY.into(),
    }];
    let current = std::process::Command::new(KUBECTL_CURRENT)
        .args(["version", "--client", "-o", "json"])
        .output();
    if let Some(out) = current.ok().filter(|o| o.status.success()) {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let version = v["clientVersion"]["gitVersion"]
            .as_str()
            .unwrap_or("current")
            .to_string();
        c.push(Client {
            label: format!("kubectl {version} (WebSocket, then SPDY)"),
            bin: KUBECTL_CURRENT.into(),
        });
    }
    c
}

fn pod_manifest(name: &str, node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
"#
    )
}

/// One `kubectl exec POD -c main -- true`, spawn to exit.
async fn timed_exec(env: &EnvTest, bin: &str, pod: &str) -> Result<Duration> {
    let mut cmd = env.kubectl_command(bin);
    cmd.args(["exec", pod, "-c", "main", "--", "true"]).stdin(Stdio::null());
    let t0 = Instant::now();
    let out = tokio::time::timeout(EXEC_LIMIT, cmd.output())
        .await
        .with_context(|| format!("{bin} exec timed out"))?
        .with_context(|| format!("running {bin}"))?;
    let took = t0.elapsed();
    if !out.status.success() {
        bail!(
            "{bin} exec {pod} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

/// Creates the pod on `node`, waits until it is Ready, times the execs, deletes it and waits
/// until it is gone; the pod object (for its UID) and the timings per client.
async fn measure(
    env: &EnvTest,
    node: &str,
    clients: &[Client],
    runs: usize,
) -> Result<(serde_json::Value, Vec<Vec<Duration>>)> {
    let pod = unique("exec-bench");
    apply(env, &pod_manifest(&pod, node)).await?;
    let ready = wait_for("the bench pod Ready", LIMIT, || async {
        let p = get_json(env, &["pod", &pod]).await?;
        (condition(&p, "Ready")?["status"] == "True").then_some(p)
    })
    .await;
    let result = match ready {
        Ok(p) => {
            let timed = async {
                for c in clients {
                    timed_exec(env, &c.bin, &pod).await?;
                }
                let mut times = vec![Vec::with_capacity(runs); clients.len()];
                for _ in 0..runs {
                    for (i, c) in clients.iter().enumerate() {
                        times[i].push(timed_exec(env, &c.bin, &pod).await?);
                    }
                }
                anyhow::Ok(times)
            };
            timed.await.map(|t| (p, t))
        }
        Err(e) => Err(e),
    };
    let _ = env.kubectl(&["delete", "pod", &pod, "--wait=false"]).await;
    let gone = wait_for("the bench pod gone", LIMIT, || async {
        get_json(env, &["pod", &pod]).await.is_none().then_some(())
    })
    .await;
    let r = result?;
    gone?;
    Ok(r)
}

/// Stops and removes what is left in containerd of the pod with `uid` (its sandbox, stopped by
/// the node agent, is otherwise removed only by a later garbage collection).
async fn remove_sandboxes(uid: &str) -> Result<()> {
    use keel::genericruntime::{cri, RuntimeService};
    let sock = cri_socket()?;
    let rt = keel::backends::cri::CriRuntime::connect(Path::new(&sock), None, keel::clock::Clock::real())?;
    rt.handshake().await?;
    let sandboxes = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: [("io.kubernetes.pod.uid".to_string(), uid.to_string())].into(),
                ..Default::default()
            }),
        })
        .await?
        .items;
    for sb in sandboxes {
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: sb.id.clone(),
        })
        .await?;
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sb.id })
            .await?;
    }
    Ok(())
}

fn uid(pod: &serde_json::Value) -> String {
    pod["metadata"]["uid"].as_str().unwrap_or_default().to_string()
}

/// keel (`$KEEL_BIN`) on containerd as one node of the real control plane.
async fn keel_side(env: &'static EnvTest, clients: &[Client], runs: usize) -> Result<Vec<Vec<Duration>>> {
    let node = Node::start_on(env, Backend::Cri, &[], "").await?;
    let name = node.name.clone();
    let r = measure(env, &name, clients, runs).await;
    let log = node.keel.log_tail(40);
    drop(node);
    let _ = env.kubectl(&["delete", "node", &name, "--wait=false"]).await;
    let cleaned = match &r {
        Ok((pod, _)) => remove_sandboxes(&uid(pod)).await,
        Err(_) => Ok(()),
    };
    remove_cgroup(&node_cgroup_root(&name));
    let (_, times) = r.with_context(|| format!("keel's log tail:\n{log}"))?;
    cleaned?;
    Ok(times)
}

/// The stock kubelet on the same containerd as another node of the same control plane.
async fn kubelet_side(
    env: &'static EnvTest,
    binary: &Path,
    clients: &[Client],
    runs: usize,
) -> Result<Vec<Vec<Duration>>> {
    let dir = tempfile::Builder::new().prefix("keel-bench-kubelet-").tempdir()?;
    let node = env.new_node_name();
    let config = format!(
        "{BASE_CONFIG}address: {node}\nport: {}\nhealthzPort: {}\n{}",
        free_port(),
        free_port(),
        kubelet_auth_config(env)
    );
    let kubeconfig = env.node_kubeconfig(&node);
    let sock = cri_socket()?;
    let mut kubelet = StockKubelet::spawn(binary, Path::new(&sock), dir.path(), &node, &config, Some(&kubeconfig))?;
    let ready = wait_for("the kubelet's Node Ready", LIMIT, || async {
        let n = get_json(env, &["node", &node]).await?;
        (condition(&n, "Ready")?["status"] == "True").then_some(())
    })
    .await;
    let r = match ready {
        Ok(()) => measure(env, &node, clients, runs).await,
        Err(e) => Err(e),
    };
    if let Ok((pod, _)) = &r {
        kubelet.ran(pod);
    }
    let log = kubelet.log_tail(40);
    drop(kubelet);
    let _ = env.kubectl(&["delete", "node", &node, "--wait=false"]).await;
    let cleaned = match &r {
        Ok((pod, _)) => remove_sandboxes(&uid(pod)).await,
        Err(_) => Ok(()),
    };
    let (_, times) = r.with_context(|| format!("the kubelet's log tail:\n{log}"))?;
    cleaned?;
    Ok(times)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    // `cargo bench` passes `--bench` (and filters); this bench takes no arguments.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if std::env::var_os("KEEL_TEST_LOG").is_none() {
        // keel's default log level, not the debug level the e2e tests use.
        std::env::set_var("KEEL_TEST_LOG", "info");
    }
    if let Err(e) = cri_socket() {
        println!("exec bench skipped: {e}");
        return Ok(());
    }
    let Some(kubelet) = kubelet_binary() else {
        println!("exec bench skipped: no kubelet in $KUBEBUILDER_ASSETS or ../shared/envtest");
        return Ok(());
    };
    if !nix::unistd::Uid::effective().is_root() {
        println!("exec bench skipped: the kubelet needs root");
        return Ok(());
    }
    let Some(env) = envtest::shared().await? else {
        println!("exec bench skipped: {}", envtest::SKIPPED);
        return Ok(());
    };
    let runs = env_usize("KEEL_BENCH_EXEC_RUNS", 10);
    let clients = clients();
    println!(
        "kubectl exec POD -- true: real kube-apiserver v1.24 -> node agent -> containerd ({runs} runs per client)"
    );
    println!("  keel {}", support::keel::keel_bin().display());
    println!("  kubelet {}", kubelet.display());

    println!("  keel side, load average {}", load_average());
    let keel = keel_side(env, &clients, runs).await?;
    println!("  kubelet side, load average {}", load_average());
    let stock = kubelet_side(env, &kubelet, &clients, runs).await?;
    println!("  done, load average {}", load_average());

    println!();
    println!("| client | keel | kubelet v1.24 |");
    println!("|---|---|---|");
    for (i, c) in clients.iter().enumerate() {
        println!(
            "| {} | {} | {} |",
            c.label,
            latency_summary(keel[i].clone()),
            latency_summary(stock[i].clone())
        );
    }
    Ok(())
}
