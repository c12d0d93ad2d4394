//! `/stats/summary` and `/metrics/resource` on a REAL containerd (`KEEL_CRI_SOCKET`, see
//! tests/README.md) through the test API server's `nodes/proxy`: container CPU/memory and
//! writable layer from ListContainerStats, pod figures from ListPodSandboxStats or the pod
//! cgroup, the pod's network namespace, log sizes, the `pods` system container (cgroup root).

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::runtimes::{backend_test, RtNode, CRI, NATIVE};
use crate::support::apiserver::TestApiServer;
use crate::support::util::{apply, phase, unique, wait_for, Backend};

async fn raw(api: &TestApiServer, path: &str) -> Result<String> {
    let out = api.kubectl(&["get", "--raw", path]).await;
    if !out.status.success() {
        bail!("kubectl get --raw {path}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// One body per scenario, run on each runtime listed (tests/e2e/runtimes.rs).
backend_test! {
    cri_stats_summary_and_resource_metrics => stats_summary_and_resource_metrics(CRI);
    native_stats_summary_and_resource_metrics => stats_summary_and_resource_metrics(NATIVE);
}

async fn stats_summary_and_resource_metrics(backend: Backend) -> Result<()> {
    let node = RtNode::start(backend, &[], "").await?;
    let pod = unique("crist");
    // Some CPU first (a busy shell loop), then idle until stopped. The sleep is forked before
    // the log line, so once the line is there the pod has its two processes.
    let script =
        "trap 'exit 0' TERM; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 3600 & echo counted $i; wait";
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {pod}
  namespace: default
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", {script:?}]
    resources:
      limits: {{memory: 64Mi}}
"#,
        node = node.name
    );
    apply(&node.api, &manifest).await?;
    node.wait_pod(&pod, "pod Running", Duration::from_secs(90), |p| phase(p) == "Running")
        .await?;
    let path = format!("/api/v1/nodes/{}/proxy/stats/summary", node.name);
    // Wait for the log line: the busy loop is over and logs have a size.
    let s: Value = wait_for("pod with logs in the summary", Duration::from_secs(60), || async {
        let s: Value = serde_json::from_str(&raw(&node.api, &path).await.ok()?).ok()?;
        let p = s["pods"]
            .as_array()?
            .iter()
            .find(|p| p["podRef"]["name"] == pod.as_str())?;
        let c = p["containers"].as_array()?.iter().find(|c| c["name"] == "main")?;
        (c["logs"]["usedBytes"].as_u64()? > 0).then(|| s.clone())
    })
    .await
    .with_context(|| format!("keel log:\n{}", node.keel.log_tail(40)))?;

    let p = s["pods"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["podRef"]["name"] == pod.as_str()))
        .context("pod")?;
    let c = &p["containers"][0];
    ensure!(c["name"] == "main", "{c}");
    ensure!(c["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0), "container cpu {c}");
    ensure!(
        c["memory"]["workingSetBytes"].as_u64() > Some(0),
        "container memory {c}"
    );
    ensure!(c["rootfs"]["usedBytes"].is_u64(), "writable layer {c}");
    ensure!(c["rootfs"]["capacityBytes"].as_u64() > Some(0), "rootfs capacity {c}");
    ensure!(
        c["logs"]["usedBytes"].as_u64() >= Some("counted 20000\n".len() as u64),
        "logs {c}"
    );
    ensure!(
        p["cpu"]["usageCoreNanoSeconds"].as_u64() >= c["cpu"]["usageCoreNanoSeconds"].as_u64(),
        "pod cpu {p}"
    );
    ensure!(p["memory"]["workingSetBytes"].as_u64() > Some(0), "pod memory {p}");
    // Read from the pod cgroup, which has the pod's 64Mi limit.
    ensure!(
        p["memory"]["availableBytes"]
            .as_u64()
            .is_some_and(|a| a > 0 && a < 64 << 20),
        "pod memory against the pod cgroup's limit {p}"
    );
    // sh and sleep (and containerd's pause: native pods have no pause process).
    ensure!(
        p["process_stats"]["process_count"].as_u64() >= Some(2),
        "pod processes {p}"
    );
    let net = &p["network"];
    ensure!(net["name"] == "eth0", "pod network {net}");
    ensure!(net["rxBytes"].is_u64() && net["txBytes"].is_u64(), "pod network {net}");
    // The cgroup root (keel's kubepods) as the `pods` system container.
    let sys = s["node"]["systemContainers"].as_array().context("systemContainers")?;
    ensure!(
        sys.iter()
            .any(|c| c["name"] == "pods" && c["memory"]["workingSetBytes"].as_u64() > Some(0)),
        "{sys:?}"
    );

    // A second full summary has the CPU rate of the container.
    let s2: Value = serde_json::from_str(&raw(&node.api, &path).await?)?;
    let c2 = s2["pods"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["podRef"]["name"] == pod.as_str()))
        .map(|p| p["containers"][0].clone())
        .context("pod in the second summary")?;
    ensure!(c2["cpu"]["usageNanoCores"].is_u64(), "rate after two samples: {c2}");

    let text = raw(
        &node.api,
        &format!("/api/v1/nodes/{}/proxy/metrics/resource", node.name),
    )
    .await?;
    let series = format!(r#"container_cpu_usage_seconds_total{{container="main",namespace="default",pod="{pod}"}} "#);
    let line = text
        .lines()
        .find(|l| l.starts_with(&series))
        .with_context(|| text.clone())?;
    let cpu: f64 = line[series.len()..].split(' ').next().unwrap_or("").parse()?;
    ensure!(cpu > 0.0, "{line}");
    ensure!(text.contains("\nresource_scrape_error 0\n"), "{text}");

    let out = node
        .api
        .kubectl(&["delete", "pod", &pod, "-n", "default", "--wait=false"])
        .await;
    ensure!(
        out.status.success(),
        "kubectl delete: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("pod deleted", Duration::from_secs(60), || async {
        node.pod(&pod).await.is_none().then_some(())
    })
    .await?;
    Ok(())
}
