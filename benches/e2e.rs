//! End-to-end benchmark: the test API server plus a keel process (`$KEEL_BIN`: scripts/bench.sh
//! passes the shipped release build; else cargo's build of this run), measuring what a user of
//! the node sees. For the simulated backend, and for containerd when `KEEL_CRI_SOCKET`
//! is set (scripts/bench.sh brings one up):
//! - pod create → Ready observed through a kube watch: 1 pod (repeated), and 20 pods at once;
//! - keel's resident memory (VmRSS) idle, with 20 pods, and with 1,000 pods (sim only);
//! - keel's CPU time (utime + stime) over 60 s with 20 idle pods, per minute;
//! - streaming through keel's kubelet server (the test API server's kubelet proxy in front, as
//!   kube-apiserver): exec round trip (`true`) and stdout throughput (`head -c N /dev/zero`)
//!   over SPDY (kubectl 1.27, a process per exec) and WebSocket (kube-rs in this process:
//!   v5.channel.k8s.io on the sim, v4 on containerd, whose streaming server has no v5; and the
//!   current kubectl, which falls back to SPDY on containerd).
//!
//! - keel's native backend (`--runtime native`, when `KEEL_CONTAINERD_DIR` is set: its CNI
//!   conflist and images) beside containerd: the same figures, and the node's footprint with the
//!   20 pods: keel + its monitors against keel + containerd + its shims (RSS and PSS, which
//!   counts the pages the monitors share with each other once);
//! - containerd's own floor in the same run: RunPodSandbox + CreateContainer + StartContainer
//!   driven straight over CRI (no keel, no API server), 1 pod (repeated) and 20 at once, so
//!   keel's create→Ready on containerd is read against what the runtime alone takes.
//!
//! Environment: `KEEL_BENCH_SINGLE_RUNS` (default 10), `KEEL_BENCH_CPU_SECS` (default 60),
//! `KEEL_BENCH_MANY_PODS` (default 1000; 0 skips), `KEEL_BENCH_BACKENDS` (`sim,cri,native`),
//! `KEEL_BENCH_PARTS` (`pods,streaming`), `KEEL_BENCH_EXEC_RUNS` (default 20),
//! `KEEL_BENCH_STREAM_MIB` (default 64).
// The shared test support is compiled whole (and with its unit tests); most is unused here.
#![allow(dead_code, unused)]

#[path = "../tests/support/mod.rs"]
mod support;

mod common;
use common::latency_summary;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, DeleteParams, ListParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use support::apiserver::TestApiServer;
use support::util::{unique, Backend, Node};

/// Label on every benchmark pod (the watch selects on it).
const BENCH_LABEL: &str = "keel-bench";
/// Pods created together in the burst.
const BURST: usize = 20;
/// Concurrent create requests while filling the node with many pods.
const CREATE_CONCURRENCY: usize = 32;
/// How long a single pod may take to become Ready before the run fails.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Settling time before a memory reading.
const SETTLE: Duration = Duration::from_secs(5);

/// kubectl that speaks SPDY only.
const KUBECTL_SPDY: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
/// The current kubectl (WebSocket v5 first, SPDY when the server refuses it).
const KUBECTL_WS: &str = "kubectl";
/// Read buffer of the throughput readers.
const READ_BUF: usize = 256 * 1024;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One row of the result table.
struct Row {
    backend: String,
    metric: String,
    value: String,
}

fn pod_manifest(name: &str, node: &str, run: &str) -> Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {BENCH_LABEL: run}},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "main",
                "image": "busybox:1.36",
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
            }],
        },
    }))?)
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Watches the run's pods and records when each was first seen Ready.
fn spawn_ready_watch(
    api: Api<Pod>,
    run: &str,
) -> (watch::Receiver<HashMap<String, Instant>>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(HashMap::new());
    let cfg = watcher::Config::default().labels(&format!("{BENCH_LABEL}={run}"));
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(api, cfg).default_backoff().applied_objects());
        loop {
            match stream.try_next().await {
                Ok(Some(p)) => {
                    if is_ready(&p) {
                        let now = Instant::now();
                        let name = p.metadata.name.clone().unwrap_or_default();
                        tx.send_if_modified(|m| match m.entry(name) {
                            std::collections::hash_map::Entry::Occupied(_) => false,
                            std::collections::hash_map::Entry::Vacant(v) => {
                                v.insert(now);
                                true
                            }
                        });
                    }
                }
                Ok(None) => break,
                Err(e) => eprintln!("bench: pod watch error (retrying): {e}"),
            }
        }
    });
    (rx, task)
}

async fn wait_ready(
    rx: &mut watch::Receiver<HashMap<String, Instant>>,
    names: &[String],
    timeout: Duration,
) -> Result<HashMap<String, Instant>> {
    let r = tokio::time::timeout(timeout, async {
        rx.wait_for(|m| names.iter().all(|n| m.contains_key(n))).await.map(|m| {
            names
                .iter()
                .filter_map(|n| m.get(n).map(|t| (n.clone(), *t)))
                .collect::<HashMap<_, _>>()
        })
    })
    .await;
    match r {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(_)) => bail!("pod watch ended"),
        Err(_) => {
            let seen = rx.borrow().len();
            bail!(
                "timed out after {timeout:?} waiting for {} pods to be Ready ({seen} Ready in total)",
                names.len()
            )
        }
    }
}

/// Aborts a task when dropped (on every exit path of a backend's run).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// VmRSS of a process in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/<pid>/status")?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS line")
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/<pid>/stat")?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = s.rsplit_once(')').map(|(_, r)| r).context("malformed stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11).and_then(|v| v.parse().ok()).context("utime")?;
    let stime: f64 = f.get(12).and_then(|v| v.parse().ok()).context("stime")?;
    let tck = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Ok((utime + stime) / tck)
}

/// A field of a process's `/proc/<pid>/smaps_rollup`, in KiB.
fn smaps_kib(pid: u32, field: &str) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).context("reading smaps_rollup")?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} line"))
}

/// Pss (proportional set size) of a process in KiB: shared pages divided among their users.
fn pss_kib(pid: u32) -> Result<u64> {
    smaps_kib(pid, "Pss")
}

/// What a process alone holds, in KiB: its private pages (heap, stack, pages it wrote to,
/// relocated data of its binary); what it would free by exiting.
fn private_kib(pid: u32) -> Result<u64> {
    Ok(smaps_kib(pid, "Private_Clean")? + smaps_kib(pid, "Private_Dirty")?)
}

/// `p50 X, max Y` of KiB figures, in MiB.
fn spread_mib(mut v: Vec<u64>) -> String {
    v.sort_unstable();
    match (v.get(v.len().saturating_sub(1) / 2), v.last()) {
        (Some(mid), Some(max)) => format!("p50 {}, max {}", mib(*mid), mib(*max)),
        _ => "none".into(),
    }
}

/// PIDs whose command line contains `needle` (containerd's shims name its socket).
fn pids_with_arg(needle: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|a| a == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// The runtime's processes beside keel on this node: (label, pids). Native: the monitors;
/// containerd: the daemon and its shims.
fn runtime_processes(backend: Backend, node: &Node) -> Option<(&'static str, Vec<u32>)> {
    match backend {
        Backend::Native => {
            let run_dir = node.keel.opts.native_run_dir.as_ref()?;
            let pids = support::native::monitor_pids(run_dir)
                .into_iter()
                .map(|p| p as u32)
                .collect();
            Some(("monitors", pids))
        }
        Backend::Cri => {
            let dir = std::env::var("KEEL_CONTAINERD_DIR").ok()?;
            let daemon: u32 = std::fs::read_to_string(format!("{dir}/containerd.pid"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let mut pids = vec![daemon];
            pids.extend(pids_with_arg(&format!("{dir}/containerd.sock")));
            Some(("containerd + shims", pids))
        }
        Backend::Sim { .. } => None,
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

async fn delete_all(api: &Api<Pod>, run: &str) -> Result<()> {
    let lp = ListParams::default().labels(&format!("{BENCH_LABEL}={run}"));
    api.delete_collection(&DeleteParams::default(), &lp).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if api.list(&lp).await?.items.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("benchmark pods not deleted within 120 s")
}

fn kubectl(node: &Node, bin: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--kubeconfig")
        .arg(node.api.admin_kubeconfig())
        .env("HOME", node.dir.path())
        .env_remove("KUBECONFIG")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs a command, reading its stdout to the end: (bytes read, wall time from spawn).
async fn timed_read(mut cmd: tokio::process::Command) -> Result<(usize, Duration)> {
    let t0 = Instant::now();
    let mut child = cmd.spawn().context("spawning kubectl")?;
    let mut out = child.stdout.take().context("kubectl stdout")?;
    let mut buf = vec![0u8; READ_BUF];
    let mut total = 0;
    loop {
        let n = out.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n;
    }
    let done = child.wait_with_output().await?;
    if !done.status.success() {
        bail!("kubectl failed: {}", String::from_utf8_lossy(&done.stderr));
    }
    Ok((total, t0.elapsed()))
}

/// One exec through kube-rs (WebSocket), its stdout read to the end: (bytes, wall time).
async fn ws_exec(api: &Api<Pod>, pod: &str, cmd: &[&str]) -> Result<(usize, Duration)> {
    let t0 = Instant::now();
    let ap = AttachParams::default()
        .container("main")
        .stdin(false)
        .stdout(true)
        .stderr(false)
        .max_stdout_buf_size(READ_BUF);
    let mut p = api.exec(pod, cmd.to_vec(), &ap).await?;
    let status = p.take_status().context("no status channel")?;
    let mut out = p.stdout().context("no stdout")?;
    let mut buf = vec![0u8; READ_BUF];
    let mut total = 0;
    loop {
        let n = out.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n;
    }
    let st = status.await;
    p.join().await?;
    if let Some(st) = st.filter(|s| s.status.as_deref() != Some("Success")) {
        bail!("exec failed: {st:?}");
    }
    Ok((total, t0.elapsed()))
}

fn throughput(bytes: usize, took: Duration) -> String {
    format!(
        "{:.0} MiB/s ({} MiB in {:.2} s)",
        bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64(),
        bytes >> 20,
        took.as_secs_f64()
    )
}

/// Exec round trips and stdout throughput through keel's server, on a running pod.
async fn bench_streaming(
    backend: &str,
    node: &Node,
    api: &Api<Pod>,
    ready: &mut watch::Receiver<HashMap<String, Instant>>,
    run: &str,
    push: &mut dyn FnMut(&str, String),
) -> Result<()> {
    let name = format!("stream-{run}");
    api.create(&PostParams::default(), &pod_manifest(&name, &node.name, run)?)
        .await?;
    wait_ready(ready, std::slice::from_ref(&name), READY_TIMEOUT).await?;
    let runs = env_usize("KEEL_BENCH_EXEC_RUNS", 20);
    let mib = env_usize("KEEL_BENCH_STREAM_MIB", 64);
    let size = (mib << 20).to_string();
    // In-process streams (sim, native) speak v5; containerd's streaming server does not.
    let in_process = backend == "sim" || backend == "native";
    let ws_label = if in_process { "WebSocket v5" } else { "WebSocket v4" };
    let kubectl_ws_label = if in_process {
        "current kubectl, WebSocket v5"
    } else {
        "current kubectl, WS refused → SPDY"
    };

    // Warm-up (kubectl discovery cache, connections).
    timed_read(kubectl(
        node,
        KUBECTL_SPDY,
        &["exec", &name, "-c", "main", "--", "true"],
    ))
    .await?;
    ws_exec(api, &name, &["true"]).await?;

    let mut spdy = Vec::new();
    let mut ws = Vec::new();
    let mut kws = Vec::new();
    for _ in 0..runs {
        spdy.push(
            timed_read(kubectl(
                node,
                KUBECTL_SPDY,
                &["exec", &name, "-c", "main", "--", "true"],
            ))
            .await?
            .1,
        );
        ws.push(ws_exec(api, &name, &["true"]).await?.1);
        kws.push(
            timed_read(kubectl(node, KUBECTL_WS, &["exec", &name, "-c", "main", "--", "true"]))
                .await?
                .1,
        );
    }
    push("exec round trip, SPDY (kubectl 1.27 process)", latency_summary(spdy));
    push(&format!("exec round trip, {ws_label} (kube-rs)"), latency_summary(ws));
    push(&format!("exec round trip, {kubectl_ws_label}"), latency_summary(kws));

    let cmd = ["head", "-c", size.as_str(), "/dev/zero"];
    let mut args = vec!["exec", name.as_str(), "-c", "main", "--"];
    args.extend_from_slice(&cmd);
    let (bytes, took) = timed_read(kubectl(node, KUBECTL_SPDY, &args)).await?;
    push("exec stdout throughput, SPDY (kubectl 1.27)", throughput(bytes, took));
    let (bytes, took) = ws_exec(api, &name, &cmd).await?;
    push(
        &format!("exec stdout throughput, {ws_label} (kube-rs)"),
        throughput(bytes, took),
    );
    let (bytes, took) = timed_read(kubectl(node, KUBECTL_WS, &args)).await?;
    push(
        &format!("exec stdout throughput, {kubectl_ws_label}"),
        throughput(bytes, took),
    );

    api.delete(&name, &DeleteParams::default()).await?;
    Ok(())
}

async fn bench_backend(backend: &str, kind: Backend, extra: &[&str], many: usize, rows: &mut Vec<Row>) -> Result<()> {
    let mut push = |metric: &str, value: String| {
        println!("  {backend:<11} {metric:<44} {value}");
        rows.push(Row {
            backend: backend.to_string(),
            metric: metric.to_string(),
            value,
        });
    };
    let node = match kind {
        Backend::Native => Node::start_on(TestApiServer::start().await?, Backend::Native, extra, "").await?,
        _ => Node::start(1.0, extra).await?,
    };
    let pid = node.keel.pid().context("keel is not running")?;
    let client = node.api.client().await;
    let api: Api<Pod> = Api::namespaced(client, "default");
    let run = unique("run");
    let (mut ready, watch_task) = spawn_ready_watch(api.clone(), &run);
    // The watch must not outlive this backend's API server.
    let _stop_watch = AbortOnDrop(watch_task);

    tokio::time::sleep(SETTLE).await;
    push("RSS idle (node registered, 0 pods)", mib(rss_kib(pid)?));

    let parts = std::env::var("KEEL_BENCH_PARTS").unwrap_or_else(|_| "pods,streaming".into());
    let part = |p: &str| parts.split(',').any(|x| x == p);
    if part("streaming") {
        bench_streaming(backend, &node, &api, &mut ready, &run, &mut push).await?;
    }
    if !part("pods") {
        delete_all(&api, &run).await?;
        return Ok(());
    }

    // 1 pod at a time.
    let runs = env_usize("KEEL_BENCH_SINGLE_RUNS", 10);
    let mut single = Vec::new();
    for i in 0..runs {
        let name = format!("single-{i}-{run}");
        let pod = pod_manifest(&name, &node.name, &run)?;
        let t0 = Instant::now();
        api.create(&PostParams::default(), &pod).await?;
        let seen = wait_ready(&mut ready, std::slice::from_ref(&name), READY_TIMEOUT).await?;
        single.push(seen[&name].duration_since(t0));
        api.delete(&name, &DeleteParams::default()).await?;
    }
    push("create→Ready, 1 pod", latency_summary(single));
    delete_all(&api, &run).await?;

    // 20 pods created at once.
    let names: Vec<String> = (0..BURST).map(|i| format!("burst-{i}-{run}")).collect();
    let pods = names
        .iter()
        .map(|n| pod_manifest(n, &node.name, &run))
        .collect::<Result<Vec<_>>>()?;
    let t0 = Instant::now();
    let pp = PostParams::default();
    let creates = futures::future::join_all(pods.iter().map(|p| api.create(&pp, p))).await;
    for c in creates {
        c?;
    }
    let seen = wait_ready(&mut ready, &names, READY_TIMEOUT).await?;
    let all_ready = seen.values().max().map(|t| t.duration_since(t0)).unwrap_or_default();
    push(
        "create→Ready, 20 pods at once",
        latency_summary(seen.values().map(|t| t.duration_since(t0)).collect()),
    );
    push(
        "  last of the 20 Ready",
        format!("{:.0} ms", all_ready.as_secs_f64() * 1000.0),
    );

    tokio::time::sleep(SETTLE).await;
    push("RSS with 20 running pods", mib(rss_kib(pid)?));
    if let Some((label, pids)) = runtime_processes(kind, &node) {
        let rss: u64 = pids.iter().filter_map(|p| rss_kib(*p).ok()).sum();
        let pss: u64 = pids.iter().filter_map(|p| pss_kib(*p).ok()).sum();
        push(
            &format!("  {label} ({}), 20 pods", pids.len()),
            format!("RSS {}, PSS {}", mib(rss), mib(pss)),
        );
        if kind == Backend::Native {
            // Each monitor on its own: the goal is "well under 2 MB" apiece.
            let each = |f: fn(u32) -> Result<u64>| pids.iter().filter_map(|p| f(*p).ok()).collect::<Vec<_>>();
            push(
                "  each monitor: RSS / PSS / private",
                format!(
                    "{} / {} / {}",
                    spread_mib(each(rss_kib)),
                    spread_mib(each(pss_kib)),
                    spread_mib(each(private_kib))
                ),
            );
        }
        push(
            &format!("  keel + {label}, 20 pods"),
            format!(
                "RSS {}, PSS {}",
                mib(rss + rss_kib(pid)?),
                mib(pss + pss_kib(pid).unwrap_or(0))
            ),
        );
    }

    let cpu_window = Duration::from_secs(env_usize("KEEL_BENCH_CPU_SECS", 60) as u64);
    let c0 = cpu_secs(pid)?;
    let w0 = Instant::now();
    tokio::time::sleep(cpu_window).await;
    let c1 = cpu_secs(pid)?;
    let per_min = (c1 - c0) * 60.0 / w0.elapsed().as_secs_f64();
    push(
        "CPU (utime+stime), 20 idle pods",
        format!(
            "{:.2} s per minute ({:.2}% of one core; {:.0} s window)",
            per_min,
            per_min / 60.0 * 100.0,
            w0.elapsed().as_secs_f64()
        ),
    );

    if many > 0 {
        // Fill to `many` pods (the 20 stay).
        let names: Vec<String> = (BURST..many).map(|i| format!("many-{i}-{run}")).collect();
        let t0 = Instant::now();
        let node_name = node.name.clone();
        let api2 = api.clone();
        let run2 = run.clone();
        let results: Vec<Result<()>> = futures::stream::iter(names.clone())
            .map(|n| {
                let api = api2.clone();
                let node_name = node_name.clone();
                let run = run2.clone();
                async move {
                    let pod = pod_manifest(&n, &node_name, &run)?;
                    api.create(&PostParams::default(), &pod).await?;
                    Ok(())
                }
            })
            .buffer_unordered(CREATE_CONCURRENCY)
            .collect()
            .await;
        for r in results {
            r?;
        }
        let timeout = Duration::from_secs(60 + many as u64);
        let seen = wait_ready(&mut ready, &names, timeout).await?;
        let last = seen.values().max().map(|t| t.duration_since(t0)).unwrap_or_default();
        push(
            &format!("create→Ready, {} more pods (to {many})", names.len()),
            latency_summary(seen.values().map(|t| t.duration_since(t0)).collect()),
        );
        push(
            &format!("  last of the {many} Ready"),
            format!("{:.1} s", last.as_secs_f64()),
        );
        tokio::time::sleep(SETTLE).await;
        push(&format!("RSS with {many} running pods"), mib(rss_kib(pid)?));
    }

    delete_all(&api, &run).await?;
    Ok(())
}

/// One pod started straight over CRI, as keel would: sandbox, container, start. Returns how long
/// it took and the sandbox ID (for clean-up).
async fn cri_start_pod(
    rt: &keel::backends::cri::CriRuntime,
    name: &str,
    cgroup_parent: &str,
    log_dir: &std::path::Path,
) -> Result<(Duration, String)> {
    use keel::genericruntime::{cri, RuntimeService};
    let sandbox_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            uid: unique("uid"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_dir.join(name).to_string_lossy().into_owned(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let t0 = Instant::now();
    let sandbox = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await?
        .pod_sandbox_id;
    let container = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "main".into(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: "docker.io/library/busybox:1.36".into(),
                    ..Default::default()
                }),
                command: vec!["sh".into(), "-c".into(), "sleep 3600".into()],
                log_path: "main.log".into(),
                ..Default::default()
            }),
            sandbox_config: Some(sandbox_config),
        })
        .await?
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: container,
    })
    .await?;
    Ok((t0.elapsed(), sandbox))
}

async fn cri_remove_pod(rt: &keel::backends::cri::CriRuntime, sandbox: String) -> Result<()> {
    use keel::genericruntime::{cri, RuntimeService};
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: sandbox.clone(),
    })
    .await?;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: sandbox,
    })
    .await?;
    Ok(())
}

/// containerd's floor: the CRI calls of a pod start with nothing around them (the image is
/// already there: keel's run before pulled it).
async fn bench_containerd_floor(sock: &str, cgroup_parent: &str, rows: &mut Vec<Row>) -> Result<()> {
    let mut push = |metric: &str, value: String| {
        println!("  {:<11} {metric:<44} {value}", "containerd");
        rows.push(Row {
            backend: "containerd".to_string(),
            metric: metric.to_string(),
            value,
        });
    };
    let rt = keel::backends::cri::CriRuntime::connect(std::path::Path::new(sock), None, keel::clock::Clock::real())?;
    rt.handshake().await?;
    let logs = tempfile::tempdir()?;
    let runs = env_usize("KEEL_BENCH_SINGLE_RUNS", 10);
    let mut single = Vec::new();
    for i in 0..runs {
        let (took, sandbox) = cri_start_pod(&rt, &unique(&format!("floor-{i}")), cgroup_parent, logs.path()).await?;
        single.push(took);
        cri_remove_pod(&rt, sandbox).await?;
    }
    push("runtime floor (CRI only), 1 pod", latency_summary(single));
    let names: Vec<String> = (0..BURST).map(|i| unique(&format!("floor-burst-{i}"))).collect();
    let starts =
        futures::future::join_all(names.iter().map(|n| cri_start_pod(&rt, n, cgroup_parent, logs.path()))).await;
    let mut burst = Vec::new();
    let mut first_error = None;
    for s in starts {
        match s {
            Ok((took, sandbox)) => {
                burst.push(took);
                cri_remove_pod(&rt, sandbox).await?;
            }
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    push("runtime floor (CRI only), 20 pods at once", latency_summary(burst));
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    // `cargo bench` passes `--bench` (and filters); this bench takes no arguments.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if std::env::var_os("KEEL_TEST_LOG").is_none() {
        // keel's default log level, not the debug level the e2e tests use.
        std::env::set_var("KEEL_TEST_LOG", "info");
    }
    let backends = std::env::var("KEEL_BENCH_BACKENDS").unwrap_or_else(|_| "sim,cri,native".into());
    let many = env_usize("KEEL_BENCH_MANY_PODS", 1000);
    let mut rows = Vec::new();
    println!(
        "keel end-to-end benchmark (keel {}, test API server, time scale 1)",
        support::keel::keel_bin().display()
    );
    if backends.split(',').any(|b| b == "sim") {
        bench_backend(
            "sim",
            Backend::Sim { time_scale: 1.0 },
            &["--max-pods", &(many.max(BURST) + 10).to_string()],
            many,
            &mut rows,
        )
        .await?;
    }
    if backends.split(',').any(|b| b == "cri") {
        match std::env::var("KEEL_CRI_SOCKET") {
            Ok(sock) if !sock.is_empty() => {
                let root = std::env::var("KEEL_TEST_CGROUP_ROOT").unwrap_or_else(|_| "/keel-test".into());
                let cgroup_root = format!("{}/{}", root.trim_end_matches('/'), unique("bench"));
                let runtime = format!("unix://{sock}");
                bench_backend(
                    "containerd",
                    Backend::Cri,
                    &["--runtime", &runtime, "--cgroup-root", &cgroup_root],
                    0,
                    &mut rows,
                )
                .await?;
                // Same machine, same run: containerd alone, for the ratio (its default cgroup
                // parent: nothing of the bench's own to clean up).
                bench_containerd_floor(&sock, "", &mut rows).await?;
            }
            _ => println!("KEEL_CRI_SOCKET not set: containerd skipped"),
        }
    }
    if backends.split(',').any(|b| b == "native") {
        match support::native::native_env() {
            // Same pods, same machine, same run as containerd: keel's own runtime. A failure
            // here is reported and leaves the other figures standing.
            Ok(_) => {
                if let Err(e) = bench_backend("native", Backend::Native, &[], 0, &mut rows).await {
                    println!("  native      failed: {e:#}");
                }
            }
            Err(e) => println!("native skipped: {e:#}"),
        }
    }
    println!();
    println!("| backend | metric | value |");
    println!("|---|---|---|");
    for r in &rows {
        println!("| {} | {} | {} |", r.backend, r.metric.trim(), r.value);
    }
    Ok(())
}
