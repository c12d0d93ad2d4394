//! `/stats/summary`, `/metrics/resource` and `/metrics` end to end on the simulated runtime,
//! through the test API server's `nodes/proxy` as `kubectl get --raw` (and metrics-server)
//! reach them. The sim's figures are known from the manifest (`SIM_CPU_MILLICORES`,
//! `SIM_MEMORY`, src/backends/sim/mod.rs), so the values are checked exactly where they are
//! rates and levels, and within the elapsed time where they are cumulative.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::Value;

use crate::support::apiserver::TestApiServer;
use crate::support::util::{apply, phase, unique, wait_for, Node, NO_EVICTION};

const MI: u64 = 1024 * 1024;

/// `kubectl get --raw PATH`: the body, or the failure with kubectl's stderr.
async fn raw(api: &TestApiServer, path: &str) -> Result<String> {
    let out = api.kubectl(&["get", "--raw", path]).await;
    if !out.status.success() {
        bail!("kubectl get --raw {path}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A node with one running pod: `app` burns 250m and holds 64Mi, `side` 50m and 16Mi and logs
/// one line.
async fn node_with_pod() -> (Node, String) {
    let n = Node::start_with_config(1.0, &[], NO_EVICTION).await.unwrap();
    let pod = unique("stats");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {pod}
  namespace: default
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:1.36
    command: ["sleep", "infinity"]
    env:
    - {{name: SIM_CPU_MILLICORES, value: "250"}}
    - {{name: SIM_MEMORY, value: 64Mi}}
    resources:
      limits: {{memory: 100Mi}}
  - name: side
    image: busybox:1.36
    command: ["sh", "-c", "echo hello from side; echo 0123456789 > /scratch/data; sleep infinity"]
    env:
    - {{name: SIM_CPU_MILLICORES, value: "50"}}
    - {{name: SIM_MEMORY, value: 16Mi}}
    volumeMounts:
    - {{name: scratch, mountPath: /scratch}}
  volumes:
  - {{name: scratch, emptyDir: {{}}}}
"#,
        node = n.name
    );
    apply(&n.api, &manifest).await.unwrap();
    n.wait_pod(&pod, "pod Running", Duration::from_secs(60), |p| phase(p) == "Running")
        .await
        .unwrap();
    (n, pod)
}

fn secs(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second())
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

fn find<'a>(list: &'a Value, key: &str, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|a| a.iter().find(|x| x[key] == name || x[key]["name"] == name))
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

#[tokio::test]
async fn stats_summary_through_the_api_server_proxy() {
    let (n, pod) = node_with_pod().await;
    let uid = n.pod(&pod).await.unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/nodes/{}/proxy/stats/summary", n.name);
    // The pod shows up once a container of it runs in the runtime.
    let s: Value = wait_for("pod in the summary", Duration::from_secs(30), || async {
        let s: Value = serde_json::from_str(&raw(&n.api, &path).await.ok()?).ok()?;
        s["pods"]
            .as_array()?
            .iter()
            .any(|p| p["podRef"]["name"] == pod.as_str())
            .then_some(s)
    })
    .await
    .unwrap();

    let node = &s["node"];
    assert_eq!(node["nodeName"], n.name.as_str());
    assert!(node["startTime"].is_string());
    assert!(node["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap() > 0);
    assert!(node["memory"]["workingSetBytes"].as_u64().unwrap() > 0);
    assert!(node["fs"]["capacityBytes"].as_u64().unwrap() > 0);
    assert!(node["runtime"]["imageFs"]["usedBytes"].as_u64().is_some());
    assert!(node["rlimit"]["maxpid"].as_i64().unwrap() > 0);
    assert!(node["network"].is_object());

    let p = find(&s["pods"], "podRef", &pod);
    assert_eq!(p["podRef"]["namespace"], "default");
    assert_eq!(p["podRef"]["uid"], uid.as_str());
    assert_eq!(p["cpu"]["usageNanoCores"], 300_000_000u64, "250m + 50m");
    assert_eq!(p["memory"]["workingSetBytes"], 80 * MI, "64Mi + 16Mi");
    assert_eq!(p["process_stats"]["process_count"], 3, "pause + 2 containers");
    assert_eq!(p["network"]["name"], "eth0");

    let app = find(&p["containers"], "name", "app");
    assert_eq!(app["cpu"]["usageNanoCores"], 250_000_000u64);
    assert_eq!(app["memory"]["workingSetBytes"], 64 * MI);
    assert_eq!(app["memory"]["availableBytes"], 36 * MI, "100Mi limit - 64Mi");
    // Cumulative CPU: 250m over at most the time since the container was created.
    let ran = secs(&app["cpu"]["time"]) - secs(&app["startTime"]) + 1;
    let used = app["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap();
    assert!(used > 0 && used <= 250_000_000 * ran as u64, "{used} ns in {ran} s");
    let side = find(&p["containers"], "name", "side");
    assert_eq!(side["memory"]["workingSetBytes"], 16 * MI);
    assert!(
        side["logs"]["usedBytes"].as_u64().unwrap() >= "hello from side".len() as u64,
        "{side}"
    );
    assert_eq!(app["logs"]["usedBytes"], 0);
    assert!(p["ephemeral-storage"]["usedBytes"].as_u64().is_some());
    // Volumes: the emptyDir holds one file the container wrote (its dir and the file); the
    // service-account token volume the API server's admission added is listed too.
    let scratch = find(&p["volume"], "name", "scratch");
    assert_eq!(scratch["inodesUsed"], 2, "{scratch}");
    assert!(scratch["usedBytes"].as_u64().unwrap() > 0, "{scratch}");
    assert!(scratch["capacityBytes"].as_u64().unwrap() > 0, "{scratch}");
    let vols = p["volume"].as_array().unwrap();
    assert!(
        vols.iter()
            .any(|v| v["name"].as_str().unwrap().starts_with("kube-api-access-")),
        "{vols:?}"
    );

    // The reduced summary metrics-server 0.3-0.5 read.
    let only: Value =
        serde_json::from_str(&raw(&n.api, &format!("{path}?only_cpu_and_memory=true")).await.unwrap()).unwrap();
    let mut keys: Vec<&str> = only["node"].as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["cpu", "memory", "nodeName", "startTime"]);
    let p = find(&only["pods"], "podRef", &pod);
    assert!(p.get("network").is_none() && p.get("ephemeral-storage").is_none());
    assert_eq!(
        find(&p["containers"], "name", "app")["memory"]["workingSetBytes"],
        64 * MI
    );
}

/// Parses the Prometheus text format: series (name with labels) → (value, timestamp).
fn parse_prometheus(text: &str) -> HashMap<String, (f64, Option<i64>)> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, rest) = match line.rfind('}') {
            Some(i) => (&line[..=i], line[i + 1..].trim()),
            None => line.split_once(' ').unwrap(),
        };
        let mut it = rest.split(' ');
        let value: f64 = it
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let ts = it.next().map(|t| t.parse().unwrap());
        out.insert(series.to_string(), (value, ts));
    }
    out
}

#[tokio::test]
async fn metrics_resource_and_own_metrics_through_the_api_server_proxy() {
    let (n, pod) = node_with_pod().await;
    let path = format!("/api/v1/nodes/{}/proxy/metrics/resource", n.name);
    let app = format!(r#"{{container="app",namespace="default",pod="{pod}"}}"#);
    let m = wait_for("pod in /metrics/resource", Duration::from_secs(30), || async {
        let m = parse_prometheus(&raw(&n.api, &path).await.ok()?);
        m.contains_key(&format!("container_memory_working_set_bytes{app}"))
            .then_some(m)
    })
    .await
    .unwrap();
    assert_eq!(
        m[&format!("container_memory_working_set_bytes{app}")].0,
        (64 * MI) as f64
    );
    let (cpu, ts) = m[&format!("container_cpu_usage_seconds_total{app}")];
    assert!(cpu > 0.0, "{cpu}");
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let ts = ts.expect("samples carry a timestamp");
    assert!((now_ms - 60_000..=now_ms + 1000).contains(&ts), "{ts} vs {now_ms}");
    let (start, start_ts) = m[&format!("container_start_time_seconds{app}")];
    assert!(start > 1.7e9 && start_ts.is_none());
    let pod_labels = format!(r#"{{namespace="default",pod="{pod}"}}"#);
    assert_eq!(
        m[&format!("pod_memory_working_set_bytes{pod_labels}")].0,
        (80 * MI) as f64
    );
    assert!(m[&format!("pod_cpu_usage_seconds_total{pod_labels}")].0 >= cpu);
    assert!(m["node_cpu_usage_seconds_total"].0 > 0.0);
    assert!(m["node_memory_working_set_bytes"].0 > 0.0);
    assert_eq!(m["resource_scrape_error"], (0.0, None));

    // keel's own series: runtime calls, pod syncs, pods, API requests.
    let own = raw(&n.api, &format!("/api/v1/nodes/{}/proxy/metrics", n.name))
        .await
        .unwrap();
    for want in [
        "kubelet_runtime_operations_duration_seconds_count{operation_type=\"run_podsandbox\"} 1",
        "kubelet_pod_worker_duration_seconds_count{operation_type=\"create\"}",
        "kubelet_running_pods 1",
        "kubelet_running_containers 2",
        "kubelet_working_pods{lifecycle=\"sync\"} 1",
        "rest_client_requests_total{code=\"201\"",
    ] {
        assert!(own.contains(want), "{want:?} missing from /metrics:\n{own}");
    }
}
