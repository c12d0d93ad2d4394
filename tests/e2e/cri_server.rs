//! `keel cri --runtime sim` driven by crictl v1.25, a real CRI client: the whole lifecycle,
//! logs, exec (with and without a TTY, exit codes), attach, port-forward, stats, images, the
//! error codes for unknown IDs and malformed configs, health, reflection, the socket rules and
//! SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::keel::free_port;
use crate::support::native::{cleanup, import_images, native_env, new_run_dir, NativeEnv, CNI_BIN_DIR};

const CRICTL: &str = "/work/shared/tools/crictl";
/// The sim's echo server answers on every TCP containerPort of the pod.
const ECHO_PORT: u16 = 8080;

/// A `keel cri` process with a private directory, killed by PID when dropped.
pub(crate) struct CriServer {
    pub(crate) dir: tempfile::TempDir,
    child: Option<tokio::process::Child>,
    /// The native runtime's run dir, when serving native.
    native: Option<PathBuf>,
}

impl CriServer {
    pub(crate) async fn start() -> Result<CriServer> {
        let dir = tempfile::Builder::new().prefix("keel-cri-e2e").tempdir()?;
        let mut s = CriServer {
            dir,
            child: None,
            native: None,
        };
        s.child = Some(s.spawn()?);
        s.wait_serving().await?;
        Ok(s)
    }

    /// `keel cri --runtime native` on the CNI bridge and test images of scripts/containerd-env.sh,
    /// with a private run dir (cleaned up, monitors killed by PID, when dropped).
    async fn start_native(env: &NativeEnv) -> Result<CriServer> {
        let dir = tempfile::Builder::new().prefix("keel-cri-native").tempdir()?;
        import_images(env, &dir.path().join("root"))?;
        let run_dir = new_run_dir()?;
        let mut s = CriServer {
            dir,
            child: None,
            native: Some(run_dir.clone()),
        };
        let log = std::fs::File::create(s.path("keel.log"))?;
        s.child = Some(
            tokio::process::Command::new(env!("CARGO_BIN_EXE_keel"))
                .args(["cri", "--runtime", "native", "--listen"])
                .arg(format!("unix://{}", s.socket().display()))
                .arg("--root-dir")
                .arg(s.dir.path().join("root"))
                .arg("--native-run-dir")
                .arg(&run_dir)
                .arg("--cni-conf-dir")
                .arg(&env.cni_conf_dir)
                .arg("--cni-bin-dir")
                .arg(CNI_BIN_DIR)
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .context("spawning keel cri --runtime native")?,
        );
        s.wait_serving().await?;
        Ok(s)
    }

    fn spawn(&self) -> Result<tokio::process::Child> {
        self.spawn_logging_to("keel.log")
    }

    fn spawn_logging_to(&self, log: &str) -> Result<tokio::process::Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(log))?;
        tokio::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["cri", "--runtime", "sim", "--listen"])
            .arg(format!("unix://{}", self.socket().display()))
            .arg("--root-dir")
            .arg(self.dir.path().join("root"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("spawning keel cri")
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.path().join("run/cri.sock")
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.path("keel.log")).unwrap_or_default()
    }

    async fn wait_serving(&self) -> Result<()> {
        for _ in 0..200 {
            if self.crictl(&["version"]).await?.ok {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("keel cri did not answer; log:\n{}", self.log())
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let endpoint = format!("unix://{}", self.socket().display());
        let mut c = tokio::process::Command::new(CRICTL);
        c.args([
            "--runtime-endpoint",
            &endpoint,
            "--image-endpoint",
            &endpoint,
            "--timeout",
            "20s",
        ])
        .args(args)
        .env("HOME", self.dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
        c
    }

    async fn crictl(&self, args: &[&str]) -> Result<Out> {
        let o = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .with_context(|| format!("crictl {args:?} timed out"))??;
        Ok(Out {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        })
    }

    /// crictl that must succeed: its stdout, trimmed.
    pub(crate) async fn ok(&self, args: &[&str]) -> String {
        let o = self.crictl(args).await.expect("running crictl");
        assert!(o.ok, "crictl {args:?} failed: {}\nkeel:\n{}", o.stderr, self.log());
        o.stdout.trim().to_string()
    }

    /// crictl that must fail: its stderr.
    async fn fails(&self, args: &[&str]) -> String {
        let o = self.crictl(args).await.expect("running crictl");
        assert!(!o.ok, "crictl {args:?} succeeded: {}", o.stdout);
        o.stderr
    }

    async fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("crictl {args:?}: {e}: {out}"))
    }

    fn write(&self, name: &str, v: Value) -> String {
        let p = self.path(name);
        std::fs::write(&p, v.to_string()).expect("writing a config");
        p.display().to_string()
    }

    /// A pod config with a log directory and the echo port; returns its file.
    fn pod_config(&self, name: &str) -> String {
        let logs = self.path(&format!("logs/{name}"));
        self.write(
            &format!("{name}-pod.json"),
            serde_json::json!({
                "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "attempt": 0},
                "log_directory": logs,
                "port_mappings": [{"container_port": ECHO_PORT, "protocol": 0}],
                "linux": {}
            }),
        )
    }

    fn container_config(&self, name: &str, script: &str, extra: Value) -> String {
        let mut v = serde_json::json!({
            "metadata": {"name": name},
            "image": {"image": "busybox"},
            "command": ["sh", "-c", script],
            "log_path": format!("{name}.log"),
            "linux": {}
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        self.write(&format!("{name}-ctr.json"), v)
    }

    /// runp + create + start; (pod ID, container ID, pod config file).
    async fn run(&self, pod: &str, ctr: &str, script: &str) -> (String, String, String) {
        let pod_cfg = self.pod_config(pod);
        let pod_id = self.ok(&["runp", &pod_cfg]).await;
        let ctr_cfg = self.container_config(ctr, script, serde_json::json!({}));
        let ctr_id = self.ok(&["create", "--with-pull", &pod_id, &ctr_cfg, &pod_cfg]).await;
        self.ok(&["start", &ctr_id]).await;
        (pod_id, ctr_id, pod_cfg)
    }

    fn pid(&self) -> Option<i32> {
        self.child
            .as_ref()
            .and_then(|c| c.id())
            .and_then(|p| i32::try_from(p).ok())
    }
}

impl Drop for CriServer {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        if let Some(run_dir) = &self.native {
            cleanup(run_dir, self.dir.path());
        }
    }
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

#[tokio::test]
async fn crictl_version_info_images_and_the_pod_lifecycle() {
    let s = CriServer::start().await.unwrap();
    let v = s.ok(&["version"]).await;
    assert!(v.contains("RuntimeName:  keel"), "{v}");
    assert!(
        v.contains(&format!("RuntimeVersion:  {}", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    assert!(v.contains("RuntimeApiVersion:  v1"), "{v}");

    let info = s.json(&["info"]).await;
    let conds = info["status"]["conditions"].as_array().cloned().unwrap_or_default();
    for t in ["RuntimeReady", "NetworkReady"] {
        assert!(
            conds.iter().any(|c| c["type"] == t && c["status"] == true),
            "{t} in {info}"
        );
    }
    assert_eq!(info["config"]["runtime"], "sim", "{info}");

    // Images: pull, list, inspect, remove.
    assert!(s.ok(&["pull", "busybox:1.36"]).await.contains("sha256:"));
    let images = s.ok(&["images"]).await;
    assert!(
        images.contains("docker.io/library/busybox") && images.contains("1.36"),
        "{images}"
    );
    let st = s.json(&["inspecti", "busybox:1.36"]).await;
    assert_eq!(st["status"]["repoTags"][0], "docker.io/library/busybox:1.36", "{st}");
    s.ok(&["rmi", "busybox:1.36"]).await;
    assert!(!s.ok(&["images"]).await.contains("1.36"));

    // The image filesystem is a directory a client can stat (the kubelet's image GC does).
    let fs = s.json(&["imagefsinfo"]).await;
    let mountpoint = fs["status"]["fsId"]["mountpoint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(Path::new(&mountpoint).is_dir(), "{fs}");

    // A pod whose container logs, then runs.
    let (pod, ctr, _) = s
        .run("web", "main", "echo hello-from-sim; while true; do sleep 1; done")
        .await;
    let pods = s.ok(&["pods", "--name", "web"]).await;
    assert!(pods.contains("Ready") && pods.contains(&pod[..13]), "{pods}");
    let ps = s.ok(&["ps"]).await;
    assert!(ps.contains("Running") && ps.contains(&ctr[..13]), "{ps}");
    let inspect = s.json(&["inspect", &ctr]).await;
    assert_eq!(inspect["status"]["state"], "CONTAINER_RUNNING", "{inspect}");
    let log_path = inspect["status"]["logPath"].as_str().unwrap_or_default().to_string();
    assert!(log_path.ends_with("logs/web/main.log"), "{log_path}");
    let inspectp = s.json(&["inspectp", &pod]).await;
    assert_eq!(inspectp["status"]["state"], "SANDBOX_READY", "{inspectp}");
    assert_eq!(inspectp["status"]["metadata"]["name"], "web");

    // Logs in the CRI format at log_directory/log_path, read by crictl from the file.
    let logs = s.ok(&["logs", &ctr]).await;
    assert_eq!(logs, "hello-from-sim");
    let raw = std::fs::read_to_string(&log_path).unwrap();
    assert!(raw.contains(" stdout F hello-from-sim"), "{raw}");

    // Stats from the backend.
    let stats = s.json(&["stats", "-o", "json", "--id", &ctr]).await;
    let cs = &stats["stats"][0];
    assert_eq!(cs["attributes"]["id"], ctr.as_str(), "{stats}");
    assert!(cs["memory"]["workingSetBytes"]["value"].as_str().is_some(), "{stats}");
    let statsp = s.json(&["statsp", "-o", "json", "--id", &pod]).await;
    assert_eq!(statsp["stats"][0]["attributes"]["id"], pod.as_str(), "{statsp}");

    // Stop and remove.
    s.ok(&["stop", "--timeout", "0", &ctr]).await;
    let inspect = s.json(&["inspect", &ctr]).await;
    assert_eq!(inspect["status"]["state"], "CONTAINER_EXITED", "{inspect}");
    assert_eq!(inspect["status"]["exitCode"], 137, "{inspect}");
    s.ok(&["rm", &ctr]).await;
    assert!(!s.ok(&["ps", "-a", "-q"]).await.contains(&ctr));
    s.ok(&["stopp", &pod]).await;
    assert!(s.ok(&["pods", "--id", &pod]).await.contains("NotReady"));
    s.ok(&["rmp", &pod]).await;
    assert!(s.ok(&["pods", "-q"]).await.is_empty());
}

#[tokio::test]
async fn crictl_exec_attach_and_port_forward_through_the_streaming_server() {
    let s = CriServer::start().await.unwrap();
    let (pod, ctr, pod_cfg) = s.run("streams", "main", "while true; do sleep 1; done").await;

    // exec over SPDY, exit codes passed on; ExecSync too.
    let o = s
        .crictl(&["exec", &ctr, "sh", "-c", "echo out-$((20+1)); exit 3"])
        .await
        .unwrap();
    assert_eq!(o.stdout.trim(), "out-21");
    assert!(!o.ok);
    assert!(o.stderr.contains("command terminated with exit code 3"), "{}", o.stderr);
    assert_eq!(s.ok(&["exec", &ctr, "echo", "zero"]).await, "zero");
    let o = s
        .crictl(&["exec", "-s", &ctr, "sh", "-c", "echo sync; exit 4"])
        .await
        .unwrap();
    assert!(!o.ok);
    assert!(o.stderr.contains("exited with 4"), "{}", o.stderr);
    assert_eq!(s.ok(&["exec", "-s", &ctr, "echo", "sync-ok"]).await, "sync-ok");

    // stdin through exec -i.
    let mut child = s
        .command(&["exec", "-i", &ctr, "sha256sum"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"abc").await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  -"
    );

    // exec -it under `script` (a terminal): prompt, echo, exit status.
    tty_session(&s, &ctr).await.unwrap();

    // attach: output written after attaching, until the container exits.
    let ctr_cfg = s.container_config("late", "sleep 2; echo attached-output; exit 0", serde_json::json!({}));
    let late = s.ok(&["create", "--with-pull", &pod, &ctr_cfg, &pod_cfg]).await;
    s.ok(&["start", &late]).await;
    let out = s.ok(&["attach", &late]).await;
    assert_eq!(out, "attached-output");

    // port-forward: crictl listens locally and forwards to the sim's echo server.
    let local = free_port();
    let mut pf = s
        .command(&["port-forward", &pod, &format!("{local}:{ECHO_PORT}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pf_out = pf.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 1024];
    while !seen.contains("Forwarding from 127.0.0.1") {
        let n = tokio::time::timeout(Duration::from_secs(30), pf_out.read(&mut buf))
            .await
            .expect("port-forward ready")
            .unwrap();
        assert!(n > 0, "port-forward ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    conn.write_all(&payload).await.unwrap();
    conn.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut back))
        .await
        .expect("echo")
        .unwrap();
    assert_eq!(back, payload);
    let _ = pf.start_kill();
    let _ = pf.wait().await;

    // Streams of a stopped container: an error, no URL.
    s.ok(&["stop", "--timeout", "0", &ctr]).await;
    let e = s.fails(&["exec", &ctr, "true"]).await;
    assert!(e.contains("CONTAINER_EXITED"), "{e}");
}

/// `crictl exec -it CTR sh` under `script`.
async fn tty_session(s: &CriServer, ctr: &str) -> Result<()> {
    let endpoint = format!("unix://{}", s.socket().display());
    let line =
        format!("stty rows 33 cols 111 && {CRICTL} --runtime-endpoint {endpoint} --timeout 20s exec -it {ctr} sh");
    let mut child = tokio::process::Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .env("HOME", s.dir.path())
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
    stdin.write_all(b"echo tty-$((40+2))\r").await?;
    wait_after(&mut stdout, &mut seen, mark, "tty-42").await?;
    let at = mark + seen[mark..].find("tty-42").unwrap_or(0);
    wait_after(&mut stdout, &mut seen, at, "# ").await?;
    let mark = seen.len();
    stdin.write_all(b"stty size\r").await?;
    wait_after(&mut stdout, &mut seen, mark, "# ").await?;
    if !seen[mark..].split(['\r', '\n']).any(|l| l.trim() == "33 111") {
        bail!("no terminal size in {:?}", &seen[mark..]);
    }
    stdin.write_all(b"exit 0\r").await?;
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .context("waiting for crictl to end")??;
    if !status.success() {
        bail!("exit status {status:?}; output {seen:?}");
    }
    Ok(())
}

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
async fn crictl_errors_not_found_invalid_argument_and_concurrent_removal() {
    let s = CriServer::start().await.unwrap();
    let missing = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    for args in [
        vec!["inspect", missing],
        vec!["inspectp", missing],
        vec!["start", missing],
        vec!["exec", missing, "true"],
        vec!["port-forward", missing, "1234:80"],
    ] {
        let e = s.fails(&args).await;
        assert!(e.contains("NotFound"), "{args:?}: {e}");
    }

    // A pod config without metadata; a container config without an image.
    let bad_pod = s.write("bad-pod.json", serde_json::json!({"linux": {}}));
    let e = s.fails(&["runp", &bad_pod]).await;
    assert!(e.contains("InvalidArgument") && e.contains("config.metadata"), "{e}");
    let pod_cfg = s.pod_config("errs");
    let pod = s.ok(&["runp", &pod_cfg]).await;
    let no_image = s.write(
        "no-image.json",
        serde_json::json!({"metadata": {"name": "x"}, "image": {"image": ""}, "linux": {}}),
    );
    let e = s.fails(&["create", "--no-pull", &pod, &no_image, &pod_cfg]).await;
    assert!(e.contains("InvalidArgument") && e.contains("config.image.image"), "{e}");

    // Concurrent removals of the same containers and pod: all succeed, nothing left.
    let mut ids = Vec::new();
    for i in 0..5 {
        let cfg = s.container_config(&format!("c{i}"), "while true; do sleep 1; done", serde_json::json!({}));
        ids.push(s.ok(&["create", "--with-pull", &pod, &cfg, &pod_cfg]).await);
    }
    let mut racers = Vec::new();
    for _ in 0..3 {
        let mut args: Vec<String> = vec!["rm".into(), "-f".into()];
        args.extend(ids.iter().cloned());
        racers.push(s.command(&args.iter().map(String::as_str).collect::<Vec<_>>()).output());
        racers.push(s.command(&["rmp", "-f", &pod]).output());
    }
    for r in futures::future::join_all(racers).await {
        r.unwrap();
    }
    assert!(s.ok(&["ps", "-a", "-q"]).await.is_empty());
    assert!(s.ok(&["pods", "-q"]).await.is_empty());
    // The server survived all of it.
    s.ok(&["version"]).await;
}

#[tokio::test]
async fn keel_cri_health_socket_rules_and_sigterm() {
    let mut s = CriServer::start().await.unwrap();
    let (_, ctr, _) = s.run("keep", "main", "while true; do sleep 1; done").await;

    // grpc.health.v1 on the same socket.
    let health = grpc_health(&s.socket()).await.unwrap();
    assert_eq!(health, 1, "SERVING");

    // A second server refuses the live socket.
    let second = s.spawn_logging_to("second.log").unwrap().wait().await.unwrap();
    assert!(!second.success());
    let second_log = std::fs::read_to_string(s.path("second.log")).unwrap();
    assert!(
        second_log.contains("another server is already listening"),
        "{second_log}"
    );

    // SIGTERM: a clean exit, the socket removed; state survives into the next server.
    let pid = s.pid().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(40), s.child.as_mut().unwrap().wait())
        .await
        .expect("keel cri stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}: {}", s.log());
    assert!(!s.socket().exists());
    assert!(s.log().contains("keel cri stopped"), "{}", s.log());

    // A stale socket file (nobody listening) is replaced.
    std::os::unix::net::UnixListener::bind(s.socket()).map(drop).unwrap();
    assert!(s.socket().exists());
    s.child = Some(s.spawn().unwrap());
    s.wait_serving().await.unwrap();
    let inspect = s.json(&["inspect", &ctr]).await;
    assert_eq!(inspect["status"]["state"], "CONTAINER_RUNNING", "{inspect}");
}

/// A gRPC channel to the unix socket, with tonic's client.
async fn grpc_channel(socket: &Path) -> Result<tonic::transport::Channel> {
    let path = socket.to_path_buf();
    Ok(tonic::transport::Endpoint::try_from("http://localhost")?
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await?)
}

/// `grpc.health.v1.Health/Check` over the unix socket.
async fn grpc_health(socket: &Path) -> Result<i32> {
    let mut grpc = tonic::client::Grpc::new(grpc_channel(socket).await?);
    grpc.ready().await?;
    let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
    let resp: tonic::Response<keel::kubelet::prober::probe::HealthCheckResponse> = grpc
        .unary(
            tonic::Request::new(keel::kubelet::prober::probe::HealthCheckRequest {
                service: "runtime.v1.RuntimeService".into(),
            }),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await?;
    Ok(resp.into_inner().status)
}

#[tokio::test]
async fn keel_cri_refuses_tcp_listen_addresses_and_a_missing_runc() {
    let dir = tempfile::tempdir().unwrap();
    let sock = format!("unix://{}", dir.path().join("n.sock").display());
    let no_runc = dir.path().join("no-such-runc").display().to_string();
    for (args, want) in [
        (
            vec!["--runtime", "native", "--listen", &sock, "--runc", &no_runc],
            "no-such-runc",
        ),
        (
            vec!["--runtime", "sim", "--listen", "tcp://127.0.0.1:1"],
            "serves on a unix socket",
        ),
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("cri")
            .args(&args)
            .arg("--root-dir")
            .arg(dir.path().join("root"))
            .env("RUST_BACKTRACE", "0")
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{args:?}: {err}");
    }
    assert!(!dir.path().join("n.sock").exists());
}

/// One `grpc.reflection.v1.ServerReflection/ServerReflectionInfo` exchange: the answer to `req`.
async fn reflect(
    socket: &Path,
    req: tonic_reflection::pb::v1::server_reflection_request::MessageRequest,
) -> Result<tonic_reflection::pb::v1::server_reflection_response::MessageResponse> {
    use tonic_reflection::pb::v1::{server_reflection_client::ServerReflectionClient, ServerReflectionRequest};
    let mut client = ServerReflectionClient::new(grpc_channel(socket).await?);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(req),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let answer = answers.message().await?.context("no reflection answer")?;
    answer.message_response.context("an empty reflection answer")
}

#[tokio::test]
async fn keel_cri_answers_grpc_reflection() {
    use prost::Message;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let s = CriServer::start().await.unwrap();
    // Every service on the socket is listed.
    let MessageResponse::ListServicesResponse(list) = reflect(&s.socket(), MessageRequest::ListServices(String::new()))
        .await
        .unwrap()
    else {
        panic!("ListServices answered something else");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "runtime.v1.ImageService",
            "runtime.v1.RuntimeService",
        ]
    );

    // The older protocol version most tools still speak lists the same.
    {
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as Alpha;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaAnswer;
        let mut client = ServerReflectionClient::new(grpc_channel(&s.socket()).await.unwrap());
        let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(Alpha::ListServices(String::new())),
        };
        let mut answers = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let answer = answers.message().await.unwrap().and_then(|a| a.message_response);
        let Some(AlphaAnswer::ListServicesResponse(list)) = answer else {
            panic!("v1alpha ListServices: {answer:?}");
        };
        let mut alpha: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        alpha.sort();
        assert_eq!(alpha, names);
    }

    // The file that defines the RuntimeService: CRI's api.proto with every method and comments.
    let MessageResponse::FileDescriptorResponse(files) = reflect(
        &s.socket(),
        MessageRequest::FileContainingSymbol("runtime.v1.RuntimeService".into()),
    )
    .await
    .unwrap() else {
        panic!("FileContainingSymbol answered something else");
    };
    let file = files
        .file_descriptor_proto
        .iter()
        .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).unwrap())
        .find(|f| f.package() == "runtime.v1")
        .expect("runtime.v1's file");
    assert_eq!(file.name(), "api.proto");
    let runtime = file.service.iter().find(|s| s.name() == "RuntimeService").unwrap();
    let methods: Vec<&str> = runtime.method.iter().map(|m| m.name()).collect();
    for m in [
        "RunPodSandbox",
        "CreateContainer",
        "Exec",
        "PortForward",
        "ListContainerStats",
    ] {
        assert!(methods.contains(&m), "{methods:?}");
    }
    assert!(
        file.source_code_info.is_some(),
        "the descriptor carries the proto's comments"
    );

    // An unknown symbol is NOT_FOUND.
    let err = reflect(
        &s.socket(),
        MessageRequest::FileContainingSymbol("runtime.v1.Nope".into()),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.downcast_ref::<tonic::Status>().map(|s| s.code()),
        Some(tonic::Code::NotFound),
        "{err:#}"
    );
}

#[tokio::test]
async fn keel_cri_answers_what_it_cannot_do_with_unimplemented() {
    use keel::genericruntime::seam::cri;
    use keel::genericruntime::seam::cri::runtime_service_client::RuntimeServiceClient;

    let s = CriServer::start().await.unwrap();
    let mut rt = RuntimeServiceClient::new(grpc_channel(&s.socket()).await.unwrap());
    let err = rt
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: "c".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err}");
    assert!(err.message().contains("UpdateContainerResources"), "{err}");
    let err = rt
        .runtime_config(cri::RuntimeConfigRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err}");
    assert!(err.message().contains("RuntimeConfig"), "{err}");
    // A pass-through answers from the backend; its errors keep their codes.
    let listed = rt.list_containers(cri::ListContainersRequest::default()).await.unwrap();
    assert!(listed.into_inner().containers.is_empty());
    let err = rt
        .stop_container(cri::StopContainerRequest {
            container_id: "no-such-container".into(),
            timeout: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
}

/// crictl against `keel cri --runtime native`: real containers under runc on the CNI bridge,
/// from images in keel's own store.
#[tokio::test]
async fn crictl_on_the_native_runtime() {
    let env = match native_env() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("skipped: {e:#}");
            return;
        }
    };
    // Its pods use the shared CNI bridge (see support::util::shared_bridge).
    let _bridge = crate::support::util::shared_bridge().clone().read_owned().await;
    let s = CriServer::start_native(&env).await.unwrap();
    assert!(s.ok(&["version"]).await.contains("RuntimeName:  keel"));
    let info = s.json(&["info"]).await;
    let conds = info["status"]["conditions"].as_array().cloned().unwrap_or_default();
    for t in ["RuntimeReady", "NetworkReady"] {
        assert!(
            conds.iter().any(|c| c["type"] == t && c["status"] == true),
            "{t} in {info}"
        );
    }
    assert_eq!(info["config"]["runtime"], "native", "{info}");
    let images = s.ok(&["images"]).await;
    assert!(images.contains("busybox") && images.contains("1.36"), "{images}");

    let pod_cfg = s.pod_config("nat");
    let pod = s.ok(&["runp", &pod_cfg]).await;
    let inspectp = s.json(&["inspectp", &pod]).await;
    assert_eq!(inspectp["status"]["state"], "SANDBOX_READY", "{inspectp}");
    let ip = inspectp["status"]["network"]["ip"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "pod IP from CNI: {inspectp}");
    let ctr_cfg = s.container_config(
        "main",
        "echo hello-from-native; while true; do sleep 1; done",
        serde_json::json!({"image": {"image": "busybox:1.36"}}),
    );
    let ctr = s.ok(&["create", &pod, &ctr_cfg, &pod_cfg]).await;
    s.ok(&["start", &ctr]).await;
    let ps = s.ok(&["ps"]).await;
    assert!(ps.contains("Running") && ps.contains(&ctr[..13]), "{ps}");

    // The CRI log, written by the container's monitor.
    let mut logs = String::new();
    for _ in 0..50 {
        logs = s.ok(&["logs", &ctr]).await;
        if !logs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(logs, "hello-from-native");

    // exec through the streaming server (runc exec), exit codes passed on; ExecSync too.
    let o = s
        .crictl(&["exec", &ctr, "sh", "-c", "echo out-$((20+1)); exit 3"])
        .await
        .unwrap();
    assert_eq!(o.stdout.trim(), "out-21");
    assert!(
        !o.ok && o.stderr.contains("command terminated with exit code 3"),
        "{}",
        o.stderr
    );
    assert_eq!(s.ok(&["exec", "-s", &ctr, "echo", "sync-ok"]).await, "sync-ok");
    let stats = s.json(&["stats", "-o", "json", "--id", &ctr]).await;
    assert_eq!(stats["stats"][0]["attributes"]["id"], ctr.as_str(), "{stats}");
    assert!(
        stats["stats"][0]["cpu"]["usageCoreNanoSeconds"]["value"]
            .as_str()
            .is_some(),
        "{stats}"
    );
    // PodSandboxStats: the pod's figures (its containers' sums: this pod has no cgroup parent),
    // eth0 from its netns, and its container.
    let statsp = s.json(&["statsp", "-o", "json", "--id", &pod]).await;
    let linux = &statsp["stats"][0]["linux"];
    assert_eq!(statsp["stats"][0]["attributes"]["id"], pod.as_str(), "{statsp}");
    assert_eq!(linux["containers"][0]["attributes"]["id"], ctr.as_str(), "{statsp}");
    assert_eq!(linux["network"]["defaultInterface"]["name"], "eth0", "{statsp}");
    assert!(
        linux["memory"]["workingSetBytes"]["value"].as_str().is_some(),
        "{statsp}"
    );

    // A shell as PID 1 without a trap ignores SIGTERM: stop with timeout 0 kills it.
    s.ok(&["stop", "--timeout", "0", &ctr]).await;
    let inspect = s.json(&["inspect", &ctr]).await;
    assert_eq!(inspect["status"]["state"], "CONTAINER_EXITED", "{inspect}");
    assert_eq!(inspect["status"]["exitCode"], 137, "{inspect}");
    s.ok(&["rm", &ctr]).await;
    s.ok(&["stopp", &pod]).await;
    s.ok(&["rmp", &pod]).await;
    assert!(s.ok(&["pods", "-q"]).await.is_empty());
}
