//! Tests of the simulated runtime's in-process streams (exec, attach, port-forward).

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::*;
use crate::genericruntime::streams::{ProcessIo, TermSize, STREAM_CHANNEL_CAPACITY};

/// The client side of a remote command.
struct Client {
    stdin: Option<mpsc::Sender<Bytes>>,
    stdout: Option<mpsc::Receiver<Bytes>>,
    stderr: Option<mpsc::Receiver<Bytes>>,
    resize: Option<mpsc::Sender<TermSize>>,
}

impl Client {
    async fn read_stdout(&mut self) -> Vec<u8> {
        read_all(self.stdout.as_mut().unwrap()).await
    }

    async fn read_stderr(&mut self) -> Vec<u8> {
        read_all(self.stderr.as_mut().unwrap()).await
    }

    async fn send(&self, data: &[u8]) {
        self.stdin
            .as_ref()
            .unwrap()
            .send(Bytes::copy_from_slice(data))
            .await
            .unwrap();
    }

    /// Reads stdout until `want` has appeared (failing after 10 s, auto-advanced when paused);
    /// `seen` collects everything read.
    async fn stdout_until(&mut self, seen: &mut Vec<u8>, want: &str) {
        let rx = self.stdout.as_mut().unwrap();
        while !String::from_utf8_lossy(seen).contains(want) {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(chunk)) => seen.extend_from_slice(&chunk),
                Ok(None) => panic!("stdout ended before {want:?}; got {:?}", String::from_utf8_lossy(seen)),
                Err(_) => panic!("no {want:?} on stdout; got {:?}", String::from_utf8_lossy(seen)),
            }
        }
    }
}

async fn read_all(rx: &mut mpsc::Receiver<Bytes>) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = rx.recv().await {
        out.extend_from_slice(&chunk);
    }
    out
}

/// Channels for the streams asked for, as the kubelet server sets them up.
fn streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> (ProcessIo, Client) {
    fn pair<T>(on: bool) -> (Option<mpsc::Sender<T>>, Option<mpsc::Receiver<T>>) {
        if on {
            let (tx, rx) = mpsc::channel(STREAM_CHANNEL_CAPACITY);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        }
    }
    let (in_tx, in_rx) = pair(stdin);
    let (out_tx, out_rx) = pair(stdout);
    let (err_tx, err_rx) = pair(stderr && !tty);
    let (rs_tx, rs_rx) = pair(tty);
    (
        ProcessIo {
            stdin: in_rx,
            stdout: out_tx,
            stderr: err_tx,
            resize: rs_rx,
        },
        Client {
            stdin: in_tx,
            stdout: out_rx,
            stderr: err_rx,
            resize: rs_tx,
        },
    )
}

fn spawn_exec(rt: &Arc<SimRuntime>, id: &str, cmd: &[&str], tty: bool, io: ProcessIo) -> JoinHandle<RtResult<i32>> {
    let streams = rt.local_streams().unwrap();
    let id = id.to_string();
    let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
    tokio::spawn(async move { streams.exec(&id, cmd, tty, io).await })
}

async fn running_container(name: &str) -> (Arc<SimRuntime>, TempDir, String) {
    let (rt, dir) = rt(cfg_with_image(), Clock::real());
    let pod = run_pod(&rt, &dir, name).await;
    let id = start(&rt, &pod, "c", "sleep infinity").await;
    (rt, dir, id)
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

#[tokio::test(start_paused = true)]
async fn exec_keeps_stdout_stderr_apart_and_returns_the_exit_code() {
    let (rt, _dir, id) = running_container("exec-basic").await;
    let (io, mut c) = streams(false, true, true, false);
    let job = spawn_exec(&rt, &id, &["sh", "-c", "echo out; echo err >&2; exit 7"], false, io);
    assert_eq!(c.read_stdout().await, b"out\n");
    assert_eq!(c.read_stderr().await, b"err\n");
    assert_eq!(job.await.unwrap().unwrap(), 7);

    // The container's environment and files.
    let (io, mut c) = streams(false, true, false, false);
    let job = spawn_exec(&rt, &id, &["printenv", "GREETING"], false, io);
    assert_eq!(c.read_stdout().await, b"hello\n");
    assert_eq!(job.await.unwrap().unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn exec_output_arrives_while_the_command_runs() {
    let (rt, _dir, id) = running_container("exec-live").await;
    let (io, mut c) = streams(false, true, false, false);
    let t0 = tokio::time::Instant::now();
    let job = spawn_exec(&rt, &id, &["sh", "-c", "echo one; sleep 5; echo two"], false, io);
    let rx = c.stdout.as_mut().unwrap();
    assert_eq!(rx.recv().await.unwrap(), "one\n");
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(rx.recv().await.unwrap(), "two\n");
    assert_eq!(t0.elapsed(), Duration::from_secs(5));
    assert_eq!(job.await.unwrap().unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn exec_cat_streams_stdin_as_it_arrives() {
    let (rt, _dir, id) = running_container("exec-cat").await;
    let (io, mut c) = streams(true, true, true, false);
    let job = spawn_exec(&rt, &id, &["cat"], false, io);
    // Each chunk comes back before the next one is sent: nothing waits for EOF.
    for word in ["alpha ", "beta ", "gamma"] {
        c.send(word.as_bytes()).await;
        assert_eq!(c.stdout.as_mut().unwrap().recv().await.unwrap(), word.as_bytes());
    }
    c.stdin = None;
    assert_eq!(c.read_stdout().await, b"");
    assert_eq!(job.await.unwrap().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_moves_10_mib_through_cat_and_sha256sum_fast() {
    let (rt, _dir, id) = running_container("exec-big").await;
    let data: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let data = Bytes::from(data);
    for cmd in [&["cat"][..], &["sha256sum"][..]] {
        let t0 = std::time::Instant::now();
        let (io, mut c) = streams(true, true, true, false);
        let job = spawn_exec(&rt, &id, cmd, false, io);
        let tx = c.stdin.take().unwrap();
        let input = data.clone();
        let writer = tokio::spawn(async move {
            for chunk in input.chunks(32 * 1024) {
                tx.send(input.slice_ref(chunk)).await.unwrap();
            }
        });
        let out = c.read_stdout().await;
        writer.await.unwrap();
        assert_eq!(job.await.unwrap().unwrap(), 0);
        if cmd[0] == "cat" {
            assert!(out == data, "cat changed the data");
        } else {
            assert_eq!(String::from_utf8(out).unwrap(), format!("{}  -\n", sha256_hex(&data)));
        }
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(5), "{cmd:?} took {took:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn exec_byte_tools_on_stdin() {
    let (rt, _dir, id) = running_container("exec-tools").await;
    let cases: [(&[&str], &[u8], &str); 6] = [
        (&["md5sum"], b"hello\n", "b1946ac92492d2347c6235b4d2611184  -\n"),
        (
            &["sha256sum"],
            b"",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  -\n",
        ),
        (&["wc", "-c"], b"12345", "5\n"),
        (&["head", "-c", "3"], b"abcdef", "abc"),
        (&["sh", "-c", "grep b"], b"a\nb\nab\n", "b\nab\n"),
        (&["sh", "-c", "cat | wc -l"], b"1\n2\n3\n", "3\n"),
    ];
    for (cmd, input, want) in cases {
        let (io, mut c) = streams(true, true, true, false);
        let job = spawn_exec(&rt, &id, cmd, false, io);
        c.send(input).await;
        c.stdin = None;
        assert_eq!(String::from_utf8(c.read_stdout().await).unwrap(), want, "{cmd:?}");
        assert_eq!(job.await.unwrap().unwrap(), 0, "{cmd:?}");
    }
    // A bare shell without a terminal reads its script from stdin.
    let (io, mut c) = streams(true, true, true, false);
    let job = spawn_exec(&rt, &id, &["sh"], false, io);
    c.send(b"echo from-stdin\nexit 4\n").await;
    c.stdin = None;
    assert_eq!(c.read_stdout().await, b"from-stdin\n");
    assert_eq!(job.await.unwrap().unwrap(), 4);
}

#[tokio::test(start_paused = true)]
async fn exec_checks_the_container_like_containerd() {
    let (rt, dir) = rt(cfg_with_image(), Clock::real());
    let pod = run_pod(&rt, &dir, "exec-state").await;
    let streams_of = rt.local_streams().unwrap();
    let (io, _c) = streams(false, true, false, false);
    let err = streams_of
        .exec("nope", vec!["true".into()], false, io)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    assert!(err.message.contains("not found"), "{err}");

    let created = create(&rt, &pod, "created", &["sleep", "100"]).await;
    let (io, _c) = streams(false, true, false, false);
    let err = streams_of
        .exec(&created, vec!["true".into()], false, io)
        .await
        .unwrap_err();
    assert_eq!(err.message, "container is in CONTAINER_CREATED state");

    let id = start(&rt, &pod, "done", "exit 0").await;
    let (io, _c) = streams(false, true, false, false);
    let err = streams_of.attach(&id, false, io).await.unwrap_err();
    assert_eq!(err.message, "container is in CONTAINER_EXITED state");

    // An exec running when the container stops ends with the kill.
    let id = start(&rt, &pod, "long", "sleep infinity").await;
    let (io, _c) = streams(false, true, false, false);
    let job = spawn_exec(&rt, &id, &["sleep", "1000"], false, io);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop(&rt, &id, 0).await;
    assert_eq!(job.await.unwrap().unwrap(), 137);
}

#[tokio::test(start_paused = true)]
async fn tty_exec_is_an_interactive_shell() {
    let (rt, _dir, id) = running_container("tty").await;
    let (io, mut c) = streams(true, true, true, true);
    c.resize
        .as_ref()
        .unwrap()
        .send(TermSize { width: 80, height: 24 })
        .await
        .unwrap();
    let job = spawn_exec(&rt, &id, &["sh"], true, io);
    let mut seen = Vec::new();
    c.stdout_until(&mut seen, "# ").await;
    c.send(b"echo hi\r").await;
    c.stdout_until(&mut seen, "echo hi\r\nhi\r\n# ").await;
    c.send(b"stty size\r").await;
    c.stdout_until(&mut seen, "24 80\r\n# ").await;
    c.resize
        .as_ref()
        .unwrap()
        .send(TermSize { width: 100, height: 40 })
        .await
        .unwrap();
    // Typed with a correction: backspace erases on screen and in the line.
    c.send(b"echo $COLUMNS $LINESX\x7f\r").await;
    c.stdout_until(&mut seen, "\x08 \x08\r\n100 40\r\n# ").await;
    c.send(b"echo oops >&2; exit 3\r").await;
    c.stdout_until(&mut seen, "oops\r\n").await;
    assert_eq!(job.await.unwrap().unwrap(), 3);
    assert!(c.read_stdout().await.is_empty());

    // Ctrl-D on an empty line ends the shell with 0; Ctrl-C abandons a line.
    let (io, mut c) = streams(true, true, false, true);
    let job = spawn_exec(&rt, &id, &["bash"], true, io);
    c.send(b"false\rexit 9\x03").await;
    let mut seen = Vec::new();
    c.stdout_until(&mut seen, "exit 9^C\r\n# ").await;
    c.send(&[0x04]).await;
    assert_eq!(job.await.unwrap().unwrap(), 0);

    // A command with a terminal: output through the terminal, no stderr stream.
    let (io, mut c) = streams(false, true, true, true);
    let job = spawn_exec(&rt, &id, &["sh", "-c", "echo a; echo b >&2"], true, io);
    assert_eq!(c.read_stdout().await, b"a\r\nb\r\n");
    assert_eq!(job.await.unwrap().unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn attach_streams_live_output_until_the_container_exits() {
    let (rt, dir) = rt(cfg_with_image(), Clock::real());
    let pod = run_pod(&rt, &dir, "attach").await;
    let id = start(
        &rt,
        &pod,
        "c",
        "echo before; sleep 5; echo out; echo err >&2; sleep 5; exit 2",
    )
    .await;
    let (io, mut c) = streams(false, true, true, false);
    let streams_of = rt.local_streams().unwrap();
    let cid = id.clone();
    let job = tokio::spawn(async move { streams_of.attach(&cid, false, io).await });
    // Output from now on only; attach ends when the container does.
    assert_eq!(c.read_stdout().await, b"out\n");
    assert_eq!(c.read_stderr().await, b"err\n");
    job.await.unwrap().unwrap();
    assert_eq!(status(&rt, &id).await.exit_code, 2);
}

#[tokio::test(start_paused = true)]
async fn attach_delivers_stdin_to_cat_and_stdin_once_closes_it() {
    let (rt, dir) = rt(cfg_with_image(), Clock::real());
    let pod = run_pod(&rt, &dir, "attach-in").await;
    let mut config = container_config(&pod.config, "cat", &["cat"]);
    config.stdin = true;
    config.stdin_once = true;
    let id = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        })
        .await
        .unwrap()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    // cat waits for input.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(status(&rt, &id).await.state, RUNNING);

    let (io, mut c) = streams(true, true, true, false);
    let streams_of = rt.local_streams().unwrap();
    let cid = id.clone();
    let job = tokio::spawn(async move { streams_of.attach(&cid, false, io).await });
    let mut seen = Vec::new();
    c.send(b"hello\n").await;
    c.stdout_until(&mut seen, "hello\n").await;
    c.stdin = None;
    job.await.unwrap().unwrap();
    let s = status(&rt, &id).await;
    assert_eq!((s.state, s.exit_code), (EXITED, 0));
    let log = read_log(&s.log_path);
    assert_eq!(log[0].2, "hello", "{log:?}");
}

#[tokio::test(start_paused = true)]
async fn port_forward_echoes_on_container_ports_and_refuses_others() {
    let (rt, dir) = rt(cfg_with_image(), Clock::real());
    let mut config = sandbox_config(&dir, "pf", false);
    config.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 8080,
        ..Default::default()
    }];
    let sandbox = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .pod_sandbox_id;
    let streams_of = rt.local_streams().unwrap();
    let mut conn = streams_of.port_forward(&sandbox, 8080).await.unwrap();
    conn.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    conn.shutdown().await.unwrap();
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());

    let err = match streams_of.port_forward(&sandbox, 9090).await {
        Err(e) => e,
        Ok(_) => panic!("port 9090 is not declared"),
    };
    assert!(
        err.message
            .contains("failed to connect to localhost:9090 inside namespace")
            && err.message.contains("connect: connection refused"),
        "{err}"
    );
    let err = match streams_of.port_forward("nope", 8080).await {
        Err(e) => e,
        Ok(_) => panic!("no such sandbox"),
    };
    assert_eq!(err.code, Code::NotFound);
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: sandbox.clone(),
    })
    .await
    .unwrap();
    let err = match streams_of.port_forward(&sandbox, 8080).await {
        Err(e) => e,
        Ok(_) => panic!("the sandbox is stopped"),
    };
    assert_eq!(err.message, "sandbox container is not running");
}
