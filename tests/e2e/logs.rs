//! Container logs end to end on the simulated runtime: `kubectl logs` through the test API
//! server's kubelet proxy to keel's `/containerLogs` (`-f`, `--previous`, `--tail`, `--since`,
//! `--since-time`, `--timestamps`, `--limit-bytes`), and size-based log rotation with a small
//! `containerLogMaxSize`: the file count stays within `containerLogMaxFiles`, older rotations
//! are gzipped, a follower reads on across rotations, and a plain read shows the current file
//! only, as the kubelet's does.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::support::util::{apply, phase, unique, Node, NO_EVICTION};

const T: Duration = Duration::from_secs(60);

fn pod_manifest(name: &str, node: &str, policy: &str, script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
spec:
  nodeName: {node}
  restartPolicy: {policy}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", {script:?}]
"#
    )
}

/// `kubectl logs ARGS`: (success, stdout, stderr).
async fn logs(n: &Node, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["logs", "-n", "default"];
    all.extend_from_slice(args);
    let out = tokio::time::timeout(T, n.api.kubectl(&all))
        .await
        .unwrap_or_else(|_| panic!("kubectl {all:?} timed out"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn logs_ok(n: &Node, args: &[&str]) -> String {
    let (ok, out, err) = logs(n, args).await;
    assert!(
        ok,
        "kubectl logs {args:?} failed: {err}\nkeel log:\n{}",
        n.keel.log_tail(30)
    );
    out
}

/// Strips a `--timestamps` prefix, checking its fixed-width RFC 3339 form.
fn strip_timestamp(line: &str) -> &str {
    let (ts, rest) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("no timestamp in {line:?}"));
    assert_eq!(ts.len(), "2006-01-02T15:04:05.000000000Z".len(), "{ts:?}");
    assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{ts:?}");
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_options() {
    let n = Node::start_with_config(1.0, &[], NO_EVICTION).await.unwrap();
    let pod = unique("logs");
    apply(
        &n.api,
        &pod_manifest(
            &pod,
            &n.name,
            "Always",
            "echo one; echo two >&2; echo three; sleep 3600",
        ),
    )
    .await
    .unwrap();
    n.wait_pod(&pod, "Running", T, |p| phase(p) == "Running").await.unwrap();
    // Both streams, in file order.
    let mut all = String::new();
    for _ in 0..50 {
        all = logs_ok(&n, &[&pod]).await;
        if all.lines().count() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(all, "one\ntwo\nthree\n");
    assert_eq!(logs_ok(&n, &[&pod, "-c", "main"]).await, all);
    assert_eq!(logs_ok(&n, &[&pod, "--tail=1"]).await, "three\n");
    assert_eq!(logs_ok(&n, &[&pod, "--tail=2"]).await, "two\nthree\n");
    assert_eq!(logs_ok(&n, &[&pod, "--tail=0"]).await, "");
    assert_eq!(logs_ok(&n, &[&pod, "--limit-bytes=6"]).await, "one\ntw");
    assert_eq!(logs_ok(&n, &[&pod, "--since=1h"]).await, all);
    let future = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600)).to_string();
    assert_eq!(logs_ok(&n, &[&pod, &format!("--since-time={future}")]).await, "");
    let stamped = logs_ok(&n, &[&pod, "--timestamps"]).await;
    let lines: Vec<&str> = stamped.lines().map(strip_timestamp).collect();
    assert_eq!(lines, vec!["one", "two", "three"]);
    // No earlier instance yet: the kubelet's error.
    let (ok, _, err) = logs(&n, &[&pod, "--previous"]).await;
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "previous terminated container \"main\" in pod \"{pod}\" not found"
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_follow_and_previous() {
    let n = Node::start_with_config(1.0, &[], NO_EVICTION).await.unwrap();
    // Follow: lines arrive while the container runs; the stream ends when it exits.
    let pod = unique("follow");
    apply(
        &n.api,
        &pod_manifest(
            &pod,
            &n.name,
            "Never",
            "for i in 1 2 3 4; do echo line $i; sleep 1; done",
        ),
    )
    .await
    .unwrap();
    n.wait_pod(&pod, "Running", T, |p| phase(p) == "Running").await.unwrap();
    let started = std::time::Instant::now();
    let out = logs_ok(&n, &[&pod, "-f"]).await;
    assert_eq!(out, "line 1\nline 2\nline 3\nline 4\n");
    assert!(started.elapsed() >= Duration::from_secs(1), "followed while it ran");
    n.wait_pod(&pod, "Succeeded", T, |p| phase(p) == "Succeeded")
        .await
        .unwrap();
    // A finished container's log is still there.
    assert_eq!(logs_ok(&n, &[&pod]).await, out);

    // Previous: the last terminated instance.
    let crash = unique("crash");
    apply(
        &n.api,
        &pod_manifest(&crash, &n.name, "Always", "echo instance output; sleep 1; exit 3"),
    )
    .await
    .unwrap();
    n.wait_pod(&crash, "a restart", T, |p| {
        p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(1)
    })
    .await
    .unwrap();
    assert_eq!(logs_ok(&n, &[&crash, "--previous"]).await, "instance output\n");
    assert_eq!(
        logs_ok(&n, &[&crash, "-p", "--timestamps"])
            .await
            .lines()
            .map(strip_timestamp)
            .collect::<Vec<_>>(),
        vec!["instance output"]
    );
}

/// Reads a child's stdout into a shared string until it closes.
fn collect(
    mut stdout: tokio::process::ChildStdout,
) -> (tokio::task::JoinHandle<()>, std::sync::Arc<std::sync::Mutex<String>>) {
    let buf = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let b = buf.clone();
    let task = tokio::spawn(async move {
        let mut chunk = vec![0u8; 8192];
        while let Ok(n) = stdout.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            b.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    (task, buf)
}

fn numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("line-"))
        .filter_map(|n| n.split('-').next()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_logs_stay_within_max_files_and_follow_reads_across_them() {
    // Rotation checks every 10 s of keel's clock: 1 s at time scale 10.
    let config = format!("{NO_EVICTION}containerLogMaxSize: 2Ki\ncontainerLogMaxFiles: 3\n");
    let n = Node::start_with_config(10.0, &[], &config).await.unwrap();
    let pod = unique("rotate");
    apply(
        &n.api,
        &pod_manifest(
            &pod,
            &n.name,
            "Always",
            "i=0; while true; do i=$((i+1)); echo line-$i-0123456789abcdef0123456789; sleep 1; done",
        ),
    )
    .await
    .unwrap();
    let p = n.wait_pod(&pod, "Running", T, |p| phase(p) == "Running").await.unwrap();
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let dir = n.keel.pod_logs_dir().join(format!("default_{pod}_{uid}/main"));

    let mut cmd = n.api.kubectl_command("kubectl");
    cmd.args(["logs", "-n", "default", "-f", &pod]).stdin(Stdio::null());
    let mut follower = cmd.spawn().unwrap();
    let (reader, followed) = collect(follower.stdout.take().unwrap());

    // Wait for two rotations, the older one compressed; never more than 3 files.
    let deadline = std::time::Instant::now() + T;
    let files = loop {
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        files.sort();
        assert!(files.len() <= 3, "more than containerLogMaxFiles: {files:?}");
        if files.iter().any(|f| f.ends_with(".gz")) && files.len() == 3 {
            break files;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no two rotations: {files:?}\nkeel log:\n{}",
            n.keel.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(files[0], "0.log");
    assert!(
        files[1].starts_with("0.log.2") && files[1].ends_with(".gz"),
        "{files:?}"
    );
    assert!(
        files[2].starts_with("0.log.2") && !files[2].ends_with(".gz"),
        "{files:?}"
    );

    // A plain read shows the current file only (the kubelet never reads rotated files).
    let current = logs_ok(&n, &[&pod]).await;
    let nums = numbers(&current);
    assert!(
        !nums.is_empty() && nums[0] > 1,
        "starts after the rotated lines: {current:.200}"
    );
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "consecutive: {nums:?}");

    // The follower read on across every rotation: no line lost, none repeated.
    tokio::time::sleep(Duration::from_secs(1)).await;
    follower.start_kill().unwrap();
    let _ = follower.wait().await;
    let _ = reader.await;
    let text = followed.lock().unwrap().clone();
    let nums = numbers(&text);
    assert!(
        nums.len() > 60,
        "followed past two rotations of 2 KiB: {} lines",
        nums.len()
    );
    assert_eq!(nums[0], 1, "{text:.200}");
    assert!(
        nums.windows(2).all(|w| w[1] == w[0] + 1),
        "a gap or repeat across rotations: {nums:?}"
    );
}

/// The same reads on a REAL containerd (scripts/containerd-env.sh, through scripts/test.sh):
/// containerd writes the CRI log file and keel reads the path its ContainerStatus reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_kubectl_logs() {
    let _lock = super::cri_lifecycle::cri_lock().await;
    let n = Node::start_cri(&[]).await.unwrap();
    let pod = unique("crilogs");
    apply(
        &n.api,
        // containerd copies stdout and stderr separately: a pause keeps their file order fixed.
        &pod_manifest(
            &pod,
            &n.name,
            "Never",
            "echo one; sleep 1; echo two >&2; sleep 1; echo three",
        ),
    )
    .await
    .unwrap();
    n.wait_pod(&pod, "Running", T, |p| phase(p) == "Running" || phase(p) == "Succeeded")
        .await
        .unwrap();
    // Follow until the container exits: every line, both streams, in order.
    assert_eq!(logs_ok(&n, &[&pod, "-f"]).await, "one\ntwo\nthree\n");
    n.wait_pod(&pod, "Succeeded", T, |p| phase(p) == "Succeeded")
        .await
        .unwrap();
    assert_eq!(logs_ok(&n, &[&pod, "--tail=2"]).await, "two\nthree\n");
    assert_eq!(logs_ok(&n, &[&pod, "--limit-bytes=5"]).await, "one\nt");
    let stamped = logs_ok(&n, &[&pod, "--timestamps"]).await;
    let lines: Vec<&str> = stamped.lines().map(strip_timestamp).collect();
    assert_eq!(lines, vec!["one", "two", "three"]);
    super::cri_lifecycle::delete_all(&n).await;
}
