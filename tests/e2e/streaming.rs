//! The kubelet server end to end on the simulated runtime: `kubectl exec`, `attach` and
//! `port-forward` through the test API server's kubelet proxy with kubectl 1.27 (SPDY) and the
//! current kubectl (WebSocket v5, the port-forward tunnel); authentication and authorization of
//! every kubelet route; malformed stream requests straight to keel's port.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::apiserver::TestApiServer;
use crate::support::rawhttp;
use crate::support::util::{apply, get_json, phase, unique, Node, NO_EVICTION};

/// kubectl that speaks SPDY only (exec, attach, port-forward).
const KUBECTL_SPDY: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
/// The current kubectl: WebSocket v5 for exec/attach, the SPDY-over-WebSocket tunnel for
/// port-forward.
const KUBECTL_WS: &str = "kubectl";
/// The echo port of the test pod.
const ECHO_PORT: u16 = 8080;
/// Bytes pushed through stdin and port-forward.
const BIG: usize = 10 << 20;
/// The terminal size of the TTY session.
const TTY_ROWS: u16 = 33;
const TTY_COLS: u16 = 111;
/// Generous limit for one kubectl invocation on a loaded 2-core machine.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(120);

/// A node with one running pod: `main` (sleeps; exec target, echo port 8080), `ticker` (prints
/// `tick N` every second; attach target) and `echoer` (`cat` with stdin open; attach -i target).
async fn node_with_pod() -> (Node, String) {
    let n = Node::start_with_config(1.0, &[], NO_EVICTION).await.unwrap();
    let pod = unique("stream");
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
  - name: main
    image: busybox:1.36
    command: ["sleep", "infinity"]
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
    n.wait_pod(&pod, "pod Running", Duration::from_secs(60), |p| phase(p) == "Running")
        .await
        .unwrap();
    (n, pod)
}

/// Runs kubectl to completion with `stdin` (None: closed), under the timeout.
async fn run(api: &TestApiServer, bin: &str, args: &[&str], stdin: Option<Vec<u8>>) -> std::process::Output {
    let mut cmd = api.kubectl_command(bin);
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

/// Deterministic, incompressible-enough test data.
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

#[tokio::test]
async fn kubectl_exec_spdy_and_websocket() {
    let (n, pod) = node_with_pod().await;
    let data = big_data(7);
    let want = format!("{}  -", sha256_hex(&data));
    for (bin, upgrade) in [(KUBECTL_SPDY, "SPDY/3.1"), (KUBECTL_WS, "websocket")] {
        let before = n.api.upgrades().len();
        // stdout and stderr stay apart; the exit code comes back.
        let out = run(
            &n.api,
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
        assert!(!text(&out.stdout).contains("err"), "{bin}");
        let ups = n.api.upgrades();
        assert!(
            ups[before..]
                .iter()
                .any(|u| u.upgrade.eq_ignore_ascii_case(upgrade) && u.path.starts_with("/exec/")),
            "{bin} should have used {upgrade}: {ups:?}"
        );

        // 10 MiB through stdin, checked in the container.
        let out = run(
            &n.api,
            bin,
            &["exec", "-i", &pod, "-c", "main", "--", "sha256sum"],
            Some(data.clone()),
        )
        .await;
        assert!(out.status.success(), "{bin}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), want, "{bin}");

        // A TTY: kubectl needs a terminal, `script` gives it one.
        tty_session(&n, bin, &pod)
            .await
            .unwrap_or_else(|e| panic!("{bin} -it: {e:#}"));
    }
}

/// `kubectl exec -it POD -- sh` under `script`: the prompt, an echoed command and its output,
/// the terminal size, `exit 3`.
async fn tty_session(n: &Node, bin: &str, pod: &str) -> Result<()> {
    // `script` gives kubectl a terminal of size 0x0 when its own stdin is no terminal: set one,
    // so the size kubectl sends (and the container sees) is known.
    let line = format!(
        "stty rows {TTY_ROWS} cols {TTY_COLS} && {bin} --kubeconfig {} exec -it {pod} -c main -- sh",
        n.api.admin_kubeconfig().display()
    );
    let mut child = tokio::process::Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .env("HOME", n.api.dir())
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
    // The next prompt may come in a later read: wait for it, so that the prompt awaited below
    // is the one after `stty size`.
    let at = mark + seen[mark..].find("hello-42").unwrap_or(0);
    wait_after(&mut stdout, &mut seen, at, "# ").await?;
    let mark = seen.len();
    stdin.write_all(b"stty size\r").await?;
    wait_after(&mut stdout, &mut seen, mark, "# ").await?;
    // `stty size` prints "ROWS COLS" from the terminal size kubectl sent.
    let size = format!("{TTY_ROWS} {TTY_COLS}");
    if !seen[mark..].split(['\r', '\n']).any(|l| l.trim() == size) {
        bail!("no terminal size {size:?} in {:?}", &seen[mark..]);
    }
    stdin.write_all(b"exit 3\r").await?;
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .context("waiting for kubectl to end")??;
    if status.code() != Some(3) {
        bail!("exit status {status:?}; output {seen:?}");
    }
    // The command line was echoed by the terminal, the result printed once more.
    if seen.matches("hello-").count() < 2 {
        bail!("no echo of the typed line: {seen:?}");
    }
    Ok(())
}

/// Reads `out` into `seen` until `needle` appears after byte `from`.
async fn wait_after(out: &mut tokio::process::ChildStdout, seen: &mut String, from: usize, needle: &str) -> Result<()> {
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

#[tokio::test]
async fn kubectl_attach_spdy_and_websocket() {
    let (n, pod) = node_with_pod().await;
    for bin in [KUBECTL_SPDY, KUBECTL_WS] {
        // Live output of a running container.
        let mut child = n
            .api
            .kubectl_command(bin)
            .args(["attach", &pod, "-c", "ticker"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let got = read_until(&mut out, "tick", Duration::from_secs(30)).await;
        assert!(got.contains("tick "), "{bin}: {got:?}");
        let _ = child.kill().await;

        // stdin reaches a container that reads it.
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
                // Repeat: lines sent before the session is up are lost, as with a real attach.
                for _ in 0..30 {
                    if input.write_all(format!("{marker}\n").as_bytes()).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
        let got = read_until(&mut out, &marker, Duration::from_secs(30)).await;
        writer.abort();
        assert!(got.contains(&marker), "{bin}: {got:?}");
        let _ = child.kill().await;
    }
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

#[tokio::test]
async fn kubectl_port_forward_spdy_and_tunnel() {
    let (n, pod) = node_with_pod().await;
    for (bin, upgrade) in [(KUBECTL_SPDY, "SPDY/3.1"), (KUBECTL_WS, "websocket")] {
        let before = n.api.upgrades().len();
        let mut child = n
            .api
            .kubectl_command(bin)
            .args(["port-forward", &format!("pod/{pod}"), &format!(":{ECHO_PORT}")])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let got = read_until(&mut out, "\n", Duration::from_secs(30)).await;
        // "Forwarding from 127.0.0.1:PORT -> 8080"
        let local: u16 = got
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{bin}: no local port in {got:?}"));
        let data = big_data(11);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", local)).await.unwrap();
        let (mut r, mut w) = tcp.into_split();
        let send = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&send).await.unwrap();
            w
        });
        let mut back = Vec::with_capacity(BIG);
        let mut buf = vec![0u8; 65536];
        let deadline = tokio::time::Instant::now() + KUBECTL_TIMEOUT;
        while back.len() < BIG {
            let n = tokio::time::timeout_at(deadline, r.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{bin}: echo stalled at {} bytes", back.len()))
                .unwrap();
            assert!(n > 0, "{bin}: connection closed at {} bytes", back.len());
            back.extend_from_slice(&buf[..n]);
        }
        drop(writer.await.unwrap());
        assert_eq!(back.len(), BIG, "{bin}");
        assert!(back == data, "{bin}: echoed bytes differ");
        let ups = n.api.upgrades();
        assert!(
            ups[before..]
                .iter()
                .any(|u| u.upgrade.eq_ignore_ascii_case(upgrade) && u.path.starts_with("/portForward/")),
            "{bin} should have used {upgrade}: {ups:?}"
        );
        let _ = child.kill().await;
    }
}

/// keel's kubelet port and the pod's paths on it.
async fn kubelet_addr(n: &Node) -> std::net::SocketAddr {
    let node = get_json(&n.api, &["node", &n.name]).await.unwrap();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap_or_else(|| panic!("no kubelet port in {}", node["status"]));
    std::net::SocketAddr::from(([127, 0, 0, 1], port as u16))
}

/// The answer to one request straight to keel: Ok(status) or Err(the TLS/connection failure).
async fn direct(
    addr: std::net::SocketAddr,
    identity: Option<(&str, &str)>,
    token: Option<&str>,
    method: &str,
    path: &str,
) -> Result<u16> {
    let cfg = rawhttp::client_config(None, identity)?;
    let mut conn = rawhttp::connect(addr, cfg).await?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: kubelet\r\n{auth}Content-Length: 0\r\n\r\n");
    let (head, _) = rawhttp::exchange(&mut conn, req.as_bytes()).await?;
    Ok(head.status)
}

#[tokio::test]
async fn every_kubelet_route_refuses_unauthenticated_and_unauthorized_callers() {
    let (n, pod) = node_with_pod().await;
    let addr = kubelet_addr(&n).await;
    let routes: Vec<(&str, String)> = vec![
        ("GET", "/pods".into()),
        ("GET", "/runningpods/".into()),
        ("GET", "/healthz".into()),
        ("GET", "/stats/summary".into()),
        ("GET", "/metrics".into()),
        ("GET", "/metrics/resource".into()),
        ("GET", format!("/containerLogs/default/{pod}/ticker")),
        ("POST", format!("/exec/default/{pod}/main?command=true&output=1")),
        ("POST", format!("/attach/default/{pod}/ticker?output=1")),
        ("POST", format!("/portForward/default/{pod}")),
    ];
    let other_ca = TestApiServer::start().await.unwrap();
    let (foreign_cert, foreign_key) = other_ca.client_identity("admin", &["system:masters"]);
    let (bob_cert, bob_key) = n.api.client_identity("bob", &[]);
    let (admin_cert, admin_key) = n.api.client_identity("admin", &["system:masters"]);
    let nobody = n.api.token_for("nobody");
    let viewer = n.api.token_for("viewer");
    for sub in ["proxy", "stats", "metrics", "log", "pods", "healthz", "configz"] {
        n.api.grant("viewer", "*", "nodes", sub);
    }
    for (method, path) in &routes {
        let ctx = format!("{method} {path}");
        // No credentials.
        assert_eq!(
            direct(addr, None, None, method, path).await.ok(),
            Some(401),
            "{ctx}: anonymous"
        );
        // A certificate from another CA: refused in the handshake (rustls) or with 401 (Go).
        if let Ok(code) = direct(addr, Some((&foreign_cert, &foreign_key)), None, method, path).await {
            assert_eq!(code, 401, "{ctx}: foreign certificate");
        }
        // An unknown token.
        assert_eq!(
            direct(addr, None, Some("not-a-token"), method, path).await.ok(),
            Some(401),
            "{ctx}: bad token"
        );
        // Authenticated without grants.
        assert_eq!(
            direct(addr, None, Some(&nobody), method, path).await.ok(),
            Some(403),
            "{ctx}: token without grants"
        );
        assert_eq!(
            direct(addr, Some((&bob_cert, &bob_key)), None, method, path).await.ok(),
            Some(403),
            "{ctx}: certificate without grants"
        );
        // With grants / as an admin the request gets past authorization.
        for (who, code) in [
            ("viewer token", direct(addr, None, Some(&viewer), method, path).await),
            (
                "admin cert",
                direct(addr, Some((&admin_cert, &admin_key)), None, method, path).await,
            ),
        ] {
            let code = code.unwrap_or_else(|e| panic!("{ctx}: {who}: {e:#}"));
            assert!(code != 401 && code != 403, "{ctx}: {who} got {code}");
        }
    }
    // keel still serves.
    assert_eq!(
        direct(addr, Some((&admin_cert, &admin_key)), None, "GET", "/healthz")
            .await
            .ok(),
        Some(200)
    );
}

#[tokio::test]
async fn malformed_stream_requests_get_clear_errors_and_keel_keeps_serving() {
    let (n, pod) = node_with_pod().await;
    let addr = kubelet_addr(&n).await;
    let (cert, key) = n.api.client_identity("admin", &["system:masters"]);
    let conn = || async {
        let cfg = rawhttp::client_config(None, Some((&cert, &key))).unwrap();
        rawhttp::connect(addr, cfg).await.unwrap()
    };
    let exec = format!("/exec/default/{pod}/main?command=cat&input=1&output=1");
    let upgrade = |path: &str, protocols: &[&str]| {
        let mut h = format!(
            "POST {path} HTTP/1.1\r\nHost: kubelet\r\nContent-Length: 0\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        );
        for p in protocols {
            h.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
        }
        h.push_str("\r\n");
        h
    };

    // Unknown protocols: 403 naming the accepted ones.
    let mut c = conn().await;
    let (head, _) = rawhttp::exchange(&mut c, upgrade(&exec, &["v9.channel.k8s.io"]).as_bytes())
        .await
        .unwrap();
    assert_eq!(head.status, 403, "{head:?}");
    let accepted = head.all("x-accepted-stream-protocol-versions").join(",");
    for p in [
        "v4.channel.k8s.io",
        "v3.channel.k8s.io",
        "v2.channel.k8s.io",
        "channel.k8s.io",
    ] {
        assert!(accepted.contains(p), "{p} missing from {accepted:?}");
    }
    let pf = format!("/portForward/default/{pod}");
    let mut c = conn().await;
    let (head, _) = rawhttp::exchange(&mut c, upgrade(&pf, &["v4.channel.k8s.io"]).as_bytes())
        .await
        .unwrap();
    assert_eq!(head.status, 403);
    assert!(head
        .all("x-accepted-stream-protocol-versions")
        .join(",")
        .contains("portforward.k8s.io"));

    // No X-Stream-Protocol-Version: 400.
    let mut c = conn().await;
    let (head, rest) = rawhttp::exchange(&mut c, upgrade(&exec, &[]).as_bytes()).await.unwrap();
    assert_eq!(head.status, 400);
    let body = text(&rawhttp::read_body(&mut c, &head, rest).await.unwrap());
    assert!(body.contains("X-Stream-Protocol-Version"), "{body}");

    // A bad query: no stream asked for; a pod that does not exist.
    let mut c = conn().await;
    let bad = format!("/exec/default/{pod}/main?command=true");
    let (head, rest) = rawhttp::exchange(&mut c, upgrade(&bad, &["v4.channel.k8s.io"]).as_bytes())
        .await
        .unwrap();
    assert_eq!(head.status, 400);
    let body = text(&rawhttp::read_body(&mut c, &head, rest).await.unwrap());
    assert!(
        body.contains("you must specify at least 1 of stdin, stdout, stderr"),
        "{body}"
    );
    let mut c = conn().await;
    let (head, _) = rawhttp::exchange(
        &mut c,
        upgrade(
            "/exec/default/no-such-pod/main?command=true&output=1",
            &["v4.channel.k8s.io"],
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(head.status, 404);

    // Garbage after the upgrade: keel drops that connection and keeps serving. SPDY: a control
    // frame of a type that does not exist; WebSocket: a frame with a reserved opcode.
    let mut spdy_garbage = vec![0x80, 0x03, 0xff, 0xff, 0x00, 0x00, 0x00, 0x08];
    spdy_garbage.extend((0..4096u32).map(|i| (i * 97 + 13) as u8));
    let ws_exec = format!(
        "GET {exec} HTTP/1.1\r\nHost: kubelet\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n"
    );
    let ws_garbage = vec![0x83, 0x80, 1, 2, 3, 4, 0x83, 0x80, 1, 2, 3, 4];
    for (what, request, garbage) in [
        ("SPDY", upgrade(&exec, &["v4.channel.k8s.io"]), spdy_garbage),
        ("WebSocket", ws_exec, ws_garbage),
    ] {
        let mut c = conn().await;
        let (head, _) = rawhttp::exchange(&mut c, request.as_bytes()).await.unwrap();
        assert_eq!(head.status, 101, "{what}: {head:?}");
        let _ = c.write_all(&garbage).await;
        let _ = c.flush().await;
        let mut buf = [0u8; 4096];
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "{what}: keel kept a connection that sent garbage open");
    }
    let mut c = conn().await;
    let (head, _) = rawhttp::exchange(&mut c, b"GET /healthz HTTP/1.1\r\nHost: kubelet\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(head.status, 200);
    let out = run(
        &n.api,
        KUBECTL_WS,
        &["exec", &pod, "-c", "main", "--", "echo", "still"],
        None,
    )
    .await;
    assert_eq!(text(&out.stdout), "still\n", "{}", text(&out.stderr));
}
