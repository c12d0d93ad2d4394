//! `kubectl exec`, `attach`, `port-forward`, `logs` and `get --raw .../proxy/stats/summary`
//! through the API server's kubelet proxy. A v1.24 kube-apiserver speaks SPDY to nodes whatever
//! the client speaks to it; kubectl 1.27 speaks SPDY, the current kubectl tries WebSocket first.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::real_tiers::{tier_test, Tier, TierNode, CRI, SIM};
use crate::support::util::*;

tier_test! {
    real_sim_exec_attach_port_forward_stats => streaming(Tier::Real, SIM);
    real_cri_exec_attach_port_forward_stats => streaming(Tier::Real, CRI);
    real_testapi_exec_attach_port_forward_stats => streaming(Tier::Test, SIM);
}

/// kubectl that speaks SPDY only.
const KUBECTL_SPDY: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
/// The current kubectl.
const KUBECTL: &str = "kubectl";
const ECHO_PORT: u16 = 8080;
const DATA: usize = 1 << 20;
const LIMIT: Duration = Duration::from_secs(120);

fn data(seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..DATA)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 11) as u8
        })
        .collect()
}

/// Runs kubectl `bin` to completion with `stdin` (None: closed), under [`LIMIT`].
async fn run(n: &TierNode, bin: &str, args: &[&str], stdin: Option<Vec<u8>>) -> std::process::Output {
    let mut cmd = n.api.kubectl_command(bin);
    cmd.args(args);
    if stdin.is_none() {
        cmd.stdin(Stdio::null());
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {bin}: {e}"));
    let feeder = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => Some(tokio::spawn(async move {
            let _ = pipe.write_all(&data).await;
            drop(pipe);
        })),
        _ => None,
    };
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{bin} {args:?} timed out"))
        .unwrap();
    if let Some(f) = feeder {
        let _ = f.await;
    }
    out
}

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

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn streaming(tier: Tier, backend: Backend) {
    let Some(n) = TierNode::start(tier, backend, &[], NO_EVICTION).await.unwrap() else {
        return;
    };
    let pod = unique("stream");
    // The simulated runtime echoes on a declared port; on containerd busybox's nc does.
    let main_command = match backend {
        Backend::Sim { .. } => r#"["sleep", "infinity"]"#.to_string(),
        Backend::Cri | Backend::Native => format!(r#"["nc", "-ll", "-p", "{ECHO_PORT}", "-e", "cat"]"#),
    };
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {pod}, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.36
    command: {main_command}
    ports:
    - containerPort: {ECHO_PORT}
  - name: ticker
    image: busybox:1.36
    command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done"]
  - name: echoer
    image: busybox:1.36
    command: ["cat"]
    stdin: true
"#,
        node = n.name
    );
    apply(&n.api, &manifest).await.unwrap();
    n.wait_running(&pod).await;

    for bin in [KUBECTL_SPDY, KUBECTL] {
        // exec: stdout and stderr apart, the exit code back.
        let out = run(
            &n,
            bin,
            &[
                "exec",
                &pod,
                "-c",
                "main",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 7",
            ],
            None,
        )
        .await;
        assert_eq!(out.status.code(), Some(7), "{bin}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "out\n", "{bin}");
        assert!(text(&out.stderr).contains("err\n"), "{bin}: {}", text(&out.stderr));
        // exec -i: stdin reaches the container.
        let d = data(3);
        let want = hex::encode(ring::digest::digest(&ring::digest::SHA256, &d).as_ref());
        let out = run(&n, bin, &["exec", "-i", &pod, "-c", "main", "--", "sha256sum"], Some(d)).await;
        assert!(out.status.success(), "{bin}: {}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout).split_whitespace().next(),
            Some(want.as_str()),
            "{bin}"
        );

        // attach: live output, and stdin to a container that reads it.
        let mut child = n
            .api
            .kubectl_command(bin)
            .args(["attach", &pod, "-c", "ticker"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let got = read_until(&mut out, "tick", Duration::from_secs(30)).await;
        assert!(got.contains("tick "), "{bin} attach: {got:?}");
        let _ = child.kill().await;
        let mut child = n
            .api
            .kubectl_command(bin)
            .args(["attach", "-i", &pod, "-c", "echoer"])
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let marker = unique("attached");
        let writer = tokio::spawn({
            let marker = marker.clone();
            async move {
                // Lines sent before the session is up are lost, as with the kubelet.
                for _ in 0..60 {
                    if input.write_all(format!("{marker}\n").as_bytes()).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
        let got = read_until(&mut out, &marker, Duration::from_secs(30)).await;
        writer.abort();
        assert!(got.contains(&marker), "{bin} attach -i: {got:?}");
        let _ = child.kill().await;

        // port-forward: bytes through the echo port and back.
        let mut child = n
            .api
            .kubectl_command(bin)
            .args(["port-forward", &format!("pod/{pod}"), &format!(":{ECHO_PORT}")])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let got = read_until(&mut out, "\n", Duration::from_secs(30)).await;
        let local: u16 = got
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{bin}: no local port in {got:?}"));
        let d = data(11);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", local)).await.unwrap();
        let (mut r, mut w) = tcp.into_split();
        let send = d.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&send).await.unwrap();
            w
        });
        let mut back = Vec::with_capacity(DATA);
        let mut buf = vec![0u8; 65536];
        let deadline = tokio::time::Instant::now() + LIMIT;
        while back.len() < DATA {
            let got = tokio::time::timeout_at(deadline, r.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{bin}: echo stalled at {} bytes", back.len()))
                .unwrap();
            assert!(got > 0, "{bin}: connection closed at {} bytes", back.len());
            back.extend_from_slice(&buf[..got]);
        }
        drop(writer.await.unwrap());
        assert!(back == d, "{bin}: echoed bytes differ");
        let _ = child.kill().await;
    }

    // The node's stats through the server's node proxy.
    let raw = format!("/api/v1/nodes/{}/proxy/stats/summary", n.name);
    let summary = wait_for("the pod in the stats summary", Duration::from_secs(60), || async {
        let out = n.api.kubectl(&["get", "--raw", &raw]).await;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["pods"]
            .as_array()?
            .iter()
            .any(|p| p["podRef"]["name"] == pod.as_str())
            .then_some(v)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(30)));
    assert_eq!(summary["node"]["nodeName"], n.name.as_str());
    assert!(summary["node"]["cpu"].is_object(), "{summary}");
    n.finish().await;
}
