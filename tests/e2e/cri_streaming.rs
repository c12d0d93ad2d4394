//! The kubelet server on a REAL containerd (scripts/containerd-env.sh, through scripts/test.sh):
//! `kubectl exec`, `logs` and `port-forward` through the test API server's kubelet proxy, keel's
//! server, and containerd's own streaming server (keel asks CRI for the URL and splices the
//! upgraded connection), with kubectl 1.27 (SPDY) and the current kubectl (WebSocket v5 first:
//! containerd 1.6 refuses v5 and the SPDY-over-WebSocket port-forward tunnel, and kubectl falls
//! back to SPDY, as against a real 1.29 kubelet on containerd).
//!
//! Holds [`cri_lock`] like every test that runs keel on the shared containerd.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdout, Command};

use super::cri_lifecycle::delete_all;
use crate::runtimes::{backend_test, RtNode, CRI, NATIVE};
use crate::support::util::*;

/// kubectl that speaks SPDY only.
const KUBECTL_SPDY: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
/// The current kubectl (WebSocket first, SPDY fallback).
const KUBECTL_WS: &str = "kubectl";
/// The pod's echo port (busybox `nc -ll -p 8080 -e cat`).
const ECHO_PORT: u16 = 8080;
/// Bytes pushed through stdin and through port-forward.
const BIG: usize = 10 << 20;
/// One kubectl invocation on a loaded 2-core machine.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(120);
const T: Duration = Duration::from_secs(90);
/// The terminal size the TTY session sets.
const TTY_ROWS: u16 = 33;
const TTY_COLS: u16 = 111;

fn kubectl(n: &Node, bin: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--kubeconfig")
        .arg(n.api.admin_kubeconfig())
        // kubectl keeps a discovery cache under $HOME: the test's private directory.
        .env("HOME", n.dir.path())
        .env_remove("KUBECONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs kubectl to its end with `stdin` (None: closed).
async fn run(n: &Node, bin: &str, args: &[&str], stdin: Option<Vec<u8>>) -> std::process::Output {
    let mut cmd = kubectl(n, bin);
    cmd.args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {bin}: {e}"));
    let feeder = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => Some(tokio::spawn(async move {
            let _ = pipe.write_all(&data).await;
        })),
        _ => None,
    };
    let out = tokio::time::timeout(KUBECTL_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{bin} {args:?} timed out"))
        .unwrap();
    if let Some(f) = feeder {
        let _ = f.await;
    }
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// Deterministic test data that does not compress.
fn big_data(seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..BIG)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 11) as u8
        })
        .collect()
}

/// Reads `out` into `seen` until `needle` appears after byte `from`.
async fn wait_after(out: &mut ChildStdout, seen: &mut String, from: usize, needle: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    while !seen.get(from..).is_some_and(|s| s.contains(needle)) {
        let n = tokio::time::timeout_at(deadline, out.read(&mut buf))
            .await
            .with_context(|| format!("waiting for {needle:?}; got {seen:?}"))??;
        if n == 0 {
            bail!("output ended waiting for {needle:?}; got {seen:?}");
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    Ok(())
}

/// `kubectl exec -it POD -- sh` under `script` (kubectl wants a terminal): busybox's prompt, an
/// echoed command and its output, the terminal size, `exit 3`.
async fn tty_session(n: &Node, bin: &str, pod: &str) -> Result<()> {
    let line = format!(
        // `script` gives the pty the size of its own stdin, a pipe here: set one.
        "stty rows {TTY_ROWS} cols {TTY_COLS} && {bin} --kubeconfig {} exec -it {pod} -c main -- sh",
        n.api.admin_kubeconfig().display()
    );
    let mut child: Child = Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .env("HOME", n.dir.path())
        .env_remove("KUBECONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("spawning script")?;
    let mut stdin = child.stdin.take().context("script stdin")?;
    let mut stdout = child.stdout.take().context("script stdout")?;
    let mut seen = String::new();
    wait_after(&mut stdout, &mut seen, 0, "# ").await?;
    let mark = seen.len();
    stdin.write_all(b"echo hello-$((40+2))\r").await?;
    wait_after(&mut stdout, &mut seen, mark, "hello-42").await?;
    // The prompt after the echo's output, before the next line is typed (on a loaded machine it
    // may come later than the output, and would be taken for the next command's prompt).
    let after_output = seen.rfind("hello-42").map_or(mark, |i| i + "hello-42".len());
    wait_after(&mut stdout, &mut seen, after_output, "# ").await?;
    let mark = seen.len();
    stdin.write_all(b"stty size\r").await?;
    // kubectl sent the terminal size; busybox's `stty size` reads it back.
    let want = format!("{TTY_ROWS} {TTY_COLS}");
    wait_after(&mut stdout, &mut seen, mark, &want).await?;
    wait_after(&mut stdout, &mut seen, mark, "# ").await?;
    if !seen[mark..].split(['\r', '\n']).any(|l| l.trim() == want) {
        bail!("no terminal size {want:?} in {:?}", &seen[mark..]);
    }
    stdin.write_all(b"exit 3\r").await?;
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .context("waiting for kubectl to end")??;
    if status.code() != Some(3) {
        bail!("exit status {status:?}; output {seen:?}");
    }
    if seen.matches("hello-").count() < 2 {
        bail!("the terminal did not echo the typed line: {seen:?}");
    }
    Ok(())
}

/// `kubectl port-forward` to the echo port, 10 MiB sent and read back on one connection.
async fn port_forward_roundtrip(n: &Node, bin: &str, pod: &str) -> Result<()> {
    let mut child = kubectl(n, bin)
        .args(["port-forward", &format!("pod/{pod}"), &format!(":{ECHO_PORT}")])
        .stdin(Stdio::null())
        .spawn()
        .context("spawning kubectl port-forward")?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut seen = String::new();
    wait_after(&mut out, &mut seen, 0, "\n").await?;
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    let local: u16 = seen
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no local port in {seen:?}"))?;
    let data = big_data(11);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", local)).await?;
    let (mut r, mut w) = tcp.into_split();
    let send = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&send).await?;
        // Half-close: cat in the pod sees EOF and ends the connection after echoing all.
        w.shutdown().await?;
        anyhow::Ok(())
    });
    let mut back = Vec::with_capacity(BIG);
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + KUBECTL_TIMEOUT;
    while back.len() < BIG {
        let got = tokio::time::timeout_at(deadline, r.read(&mut buf))
            .await
            .with_context(|| format!("echo stalled at {} bytes", back.len()))??;
        if got == 0 {
            bail!("connection closed at {} bytes", back.len());
        }
        back.extend_from_slice(&buf[..got]);
    }
    writer.await??;
    if back != data {
        bail!("echoed bytes differ");
    }
    let _ = child.kill().await;
    Ok(())
}

// One body per scenario, run on each runtime listed (tests/e2e/runtimes.rs).
backend_test! {
    cri_kubectl_exec_logs_and_port_forward => kubectl_exec_logs_and_port_forward(CRI);
    native_kubectl_exec_logs_and_port_forward => kubectl_exec_logs_and_port_forward(NATIVE);
}

async fn kubectl_exec_logs_and_port_forward(backend: Backend) {
    let n = RtNode::start(backend, &[], NO_EVICTION).await.unwrap();
    let pod = unique("stream");
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
    command: ["sh", "-c", "trap 'exit 0' TERM; echo started; sleep 1; echo warming >&2; while true; do sleep 1; done"]
  - name: echo
    image: busybox:1.36
    command: ["nc", "-ll", "-p", "{ECHO_PORT}", "-e", "cat"]
    ports:
    - containerPort: {ECHO_PORT}
"#,
        node = n.name
    );
    apply(&n.api, &manifest).await.unwrap();
    n.wait_pod(&pod, "pod Running and Ready", T, |p| {
        phase(p) == "Running" && condition(p, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await
    .unwrap();

    let data = big_data(7);
    let want = format!("{}  -", sha256_hex(&data));
    for bin in [KUBECTL_SPDY, KUBECTL_WS] {
        // stdout and stderr stay apart; the exit code comes back.
        let script = "echo out; echo err >&2; exit 7";
        let out = run(&n, bin, &["exec", &pod, "-c", "main", "--", "sh", "-c", script], None).await;
        assert_eq!(out.status.code(), Some(7), "{bin}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "out\n", "{bin}");
        assert!(text(&out.stderr).contains("err\n"), "{bin}: {}", text(&out.stderr));

        // 10 MiB through stdin, checked in the container.
        let out = run(
            &n,
            bin,
            &["exec", "-i", &pod, "-c", "main", "--", "sha256sum"],
            Some(data.clone()),
        )
        .await;
        assert!(out.status.success(), "{bin}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), want, "{bin}");

        // A terminal.
        tty_session(&n, bin, &pod)
            .await
            .unwrap_or_else(|e| panic!("{bin} exec -it: {e:#}\nkeel log:\n{}", n.keel.log_tail(30)));

        // Port-forward, 10 MiB both ways.
        port_forward_roundtrip(&n, bin, &pod)
            .await
            .unwrap_or_else(|e| panic!("{bin} port-forward: {e:#}\nkeel log:\n{}", n.keel.log_tail(30)));
    }

    // Logs: the container's output, both streams, and `--tail`.
    let out = run(&n, KUBECTL_WS, &["logs", &pod, "-c", "main"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "started\nwarming\n");
    let out = run(&n, KUBECTL_WS, &["logs", &pod, "-c", "main", "--tail=1"], None).await;
    assert_eq!(text(&out.stdout), "warming\n");
    // An unknown container is the API server's 400 with the kubelet's words relayed.
    let out = run(&n, KUBECTL_WS, &["exec", &pod, "-c", "nope", "--", "true"], None).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));

    delete_all(&n).await;
}
