//! The WebSocket server driven by a tungstenite client over an in-memory pipe, through hyper's
//! upgrade like the real server: every protocol's framing, v5 half-close, statuses,
//! port-forward channels, the tunnel adapter, refusals and malformed input.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::header::SEC_WEBSOCKET_PROTOCOL;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use super::*;
use crate::genericruntime::seam::{Code, RuntimeError};
use crate::genericruntime::streams::{BoxedIo, ProcessIo, TermSize};
use crate::streaming::remotecommand::{Outcome, BASE64_V1, BASE64_V4, V1, V4, V5};

type Client = WebSocketStream<DuplexStream>;

const WAIT: Duration = Duration::from_secs(10);

/// Serves one HTTP/1.1 connection on `io` with upgrades, answering with `handler`.
fn spawn_server<F>(io: DuplexStream, handler: F)
where
    F: Fn(Request<hyper::body::Incoming>) -> Response + Send + Sync + 'static,
{
    let svc = service_fn(move |req| {
        let r = handler(req);
        async move { Ok::<_, std::convert::Infallible>(r) }
    });
    tokio::spawn(async move {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades()
            .await;
    });
}

async fn connect<F>(path: &str, protocols: Option<&str>, handler: F) -> Result<Client, tungstenite::Error>
where
    F: Fn(Request<hyper::body::Incoming>) -> Response + Send + Sync + 'static,
{
    let (client_io, server_io) = duplex(1 << 16);
    spawn_server(server_io, handler);
    let mut req = format!("ws://localhost{path}").into_client_request().unwrap();
    if let Some(p) = protocols {
        req.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, p.parse().unwrap());
    }
    let (ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(req, client_io))
        .await
        .expect("handshake timed out")?;
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    Ok(ws)
}

fn run_fn<F, Fut>(f: F) -> RunFn
where
    F: FnOnce(ProcessIo) -> Fut + Send + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    Box::new(move |io| Box::pin(f(io)))
}

/// An exec handler that serves one connection with `run`.
fn exec_handler(opts: StreamOptions, run: RunFn) -> impl Fn(Request<hyper::body::Incoming>) -> Response + Send + Sync {
    let run = Mutex::new(Some(run));
    move |req| {
        let run = run.lock().unwrap().take().expect("one request per connection");
        serve_remotecommand(req, opts, Kind::Exec, run)
    }
}

fn opts(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> StreamOptions {
    StreamOptions {
        stdin,
        stdout,
        stderr,
        tty,
    }
}

/// What the client saw until the connection ended: the data messages, and the Close frame's
/// code if one came (None: the connection was dropped without one).
async fn collect(ws: &mut Client) -> (Vec<Message>, Option<CloseCode>) {
    let mut msgs = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("server stalled") {
            Some(Ok(Message::Close(frame))) => return (msgs, frame.map(|f| f.code)),
            Some(Ok(m @ (Message::Binary(_) | Message::Text(_)))) => msgs.push(m),
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return (msgs, None),
        }
    }
}

async fn next_data(ws: &mut Client) -> Message {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("server stalled") {
            Some(Ok(m @ (Message::Binary(_) | Message::Text(_)))) => return m,
            Some(Ok(_)) => {}
            other => panic!("connection ended: {other:?}"),
        }
    }
}

fn bin(m: &Message) -> &[u8] {
    match m {
        Message::Binary(b) => b,
        other => panic!("expected a binary message, got {other:?}"),
    }
}

fn text(m: &Message) -> &str {
    match m {
        Message::Text(t) => t.as_str(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap()
}

/// Reads one stdin chunk, answers `out:<chunk>` on stdout, exits with `code`.
fn echo_once(code: i32) -> RunFn {
    run_fn(move |mut io: ProcessIo| async move {
        let chunk = io.stdin.as_mut().unwrap().recv().await.unwrap_or_default();
        let mut out = b"out:".to_vec();
        out.extend_from_slice(&chunk);
        io.stdout.as_ref().unwrap().send(out.into()).await.unwrap();
        Outcome::Exited(code)
    })
}

/// Echoes stdin to stdout until EOF, then exits with `code`; reports the bytes seen.
fn echo_until_eof(code: i32, seen: Arc<Mutex<Vec<u8>>>) -> RunFn {
    run_fn(move |mut io: ProcessIo| async move {
        let mut stdin = io.stdin.take().unwrap();
        while let Some(chunk) = stdin.recv().await {
            seen.lock().unwrap().extend_from_slice(&chunk);
            if let Some(out) = &io.stdout {
                let _ = out.send(chunk).await;
            }
        }
        Outcome::Exited(code)
    })
}

#[test]
fn accept_key_matches_the_capture() {
    let req = Request::get("/exec/ns/pod/c?command=cat&input=1&output=1")
        .header("host", "127.0.0.1:33831")
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-key", "/JNYW6QTBvWFHUHUQAc0vw==")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "v4.channel.k8s.io")
        .body(())
        .unwrap();
    let a = handshake(&req, &REMOTE_COMMAND_PROTOCOLS).unwrap();
    assert_eq!(a.protocol, V4);
    let h = a.response.headers();
    assert_eq!(a.response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(h["sec-websocket-accept"], "ujcuPJtDEueiX4V25j37FIgfLBk=");
    assert_eq!(h["sec-websocket-protocol"], "v4.channel.k8s.io");
    assert_eq!(h["upgrade"], "websocket");
    assert_eq!(h["connection"], "Upgrade");
}

#[test]
fn protocol_is_the_first_client_listed_one_supported() {
    let offered = |s: &str| s.split(',').map(|p| p.trim().to_string()).collect::<Vec<_>>();
    assert_eq!(
        choose_protocol(
            &offered("x, base64.channel.k8s.io, v4.channel.k8s.io"),
            &REMOTE_COMMAND_PROTOCOLS
        ),
        Some(BASE64_V1)
    );
    assert_eq!(
        choose_protocol(
            &offered("v5.channel.k8s.io,v4.channel.k8s.io"),
            &REMOTE_COMMAND_PROTOCOLS
        ),
        Some(V5)
    );
    assert_eq!(choose_protocol(&[], &REMOTE_COMMAND_PROTOCOLS), Some(""));
    assert_eq!(choose_protocol(&[], &[PORT_FORWARD_TUNNEL]), None);
    assert_eq!(
        choose_protocol(&offered("v2.channel.k8s.io"), &REMOTE_COMMAND_PROTOCOLS),
        None
    );
    // v5 is remote command only.
    assert_eq!(
        choose_protocol(&offered("v5.channel.k8s.io"), &PORT_FORWARD_PROTOCOLS),
        None
    );
}

#[test]
fn upgrade_detection_and_refusals() {
    let base = || {
        Request::get("/exec/ns/pod/c")
            .header("upgrade", "WebSocket")
            .header("connection", "keep-alive, Upgrade")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")
    };
    assert!(is_websocket_upgrade(base().body(()).unwrap().headers()));
    let spdy = Request::post("/")
        .header("upgrade", "SPDY/3.1")
        .header("connection", "Upgrade");
    assert!(!is_websocket_upgrade(spdy.body(()).unwrap().headers()));

    let status = |r: Request<()>| match handshake(&r, &REMOTE_COMMAND_PROTOCOLS) {
        Ok(a) => a.response.status(),
        Err(resp) => resp.status(),
    };
    assert_eq!(status(base().body(()).unwrap()), StatusCode::SWITCHING_PROTOCOLS);
    let mut post = base().body(()).unwrap();
    *post.method_mut() = Method::POST;
    assert_eq!(status(post), StatusCode::METHOD_NOT_ALLOWED);
    let mut no_key = base().body(()).unwrap();
    no_key.headers_mut().remove("sec-websocket-key");
    assert_eq!(status(no_key), StatusCode::BAD_REQUEST);
    let mut v8 = base().body(()).unwrap();
    v8.headers_mut()
        .insert("sec-websocket-version", HeaderValue::from_static("8"));
    let Err(r) = handshake(&v8, &REMOTE_COMMAND_PROTOCOLS) else {
        panic!("version 8 accepted")
    };
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.headers()["sec-websocket-version"], "13");
    let unknown = base()
        .header("sec-websocket-protocol", "v2.channel.k8s.io")
        .body(())
        .unwrap();
    assert_eq!(status(unknown), StatusCode::FORBIDDEN);
    // No protocol offered: "" is chosen and no protocol header is sent back.
    let a = handshake(&base().body(()).unwrap(), &REMOTE_COMMAND_PROTOCOLS).unwrap();
    assert_eq!(a.protocol, "");
    assert!(a.response.headers().get(SEC_WEBSOCKET_PROTOCOL).is_none());

    let tunnel = base().header(
        "sec-websocket-protocol",
        "v4.channel.k8s.io, SPDY/3.1+portforward.k8s.io",
    );
    assert!(is_port_forward_tunnel(tunnel.body(()).unwrap().headers()));
    assert!(!is_port_forward_tunnel(base().body(()).unwrap().headers()));
}

#[tokio::test]
async fn unknown_protocol_is_forbidden_through_the_server() {
    let err = connect(
        "/exec/ns/pod/c?command=true&output=1",
        Some("v2.channel.k8s.io"),
        exec_handler(
            opts(false, true, false, false),
            run_fn(|_| async { Outcome::Exited(0) }),
        ),
    )
    .await
    .unwrap_err();
    match err {
        tungstenite::Error::Http(resp) => assert_eq!(resp.status(), StatusCode::FORBIDDEN),
        other => panic!("expected a 403, got {other:?}"),
    }
}

#[tokio::test]
async fn v4_binary_exec_matches_the_capture() {
    let mut ws = connect(
        "/exec/ns/pod/c",
        Some(V4),
        exec_handler(opts(true, true, false, false), echo_once(2)),
    )
    .await
    .unwrap();
    ws.send(Message::Binary(Bytes::from_static(b"\x00ping!")))
        .await
        .unwrap();
    let (msgs, close) = collect(&mut ws).await;
    assert_eq!(close, Some(CloseCode::Normal));
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert_eq!(bin(&msgs[0]), [1]);
    assert_eq!(bin(&msgs[1]), b"\x01out:ping!");
    assert_eq!(bin(&msgs[2])[0], 3);
    // The captured status (websocket-capture.txt), byte for byte.
    let captured = r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 2","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"2"}]}}"#;
    assert_eq!(&bin(&msgs[2])[1..], captured.as_bytes());
}

#[tokio::test]
async fn v4_base64_exec_matches_the_capture() {
    let mut ws = connect(
        "/exec/ns/pod/c",
        Some(BASE64_V4),
        exec_handler(opts(true, true, false, false), echo_once(2)),
    )
    .await
    .unwrap();
    ws.send(Message::Text("0cGluZyE=".into())).await.unwrap();
    let (msgs, close) = collect(&mut ws).await;
    assert_eq!(close, Some(CloseCode::Normal));
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert_eq!(text(&msgs[0]), "1");
    assert_eq!(text(&msgs[1]), "1b3V0OnBpbmch");
    let status = text(&msgs[2]);
    assert!(status.starts_with('3'));
    let decoded = base64::engine::general_purpose::STANDARD.decode(&status[1..]).unwrap();
    assert_eq!(json(&decoded)["details"]["causes"][0]["message"], "2");
}

#[tokio::test]
async fn v5_close_signal_is_stdin_eof_and_the_exit_code_is_reported() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut ws = connect(
        "/exec/ns/pod/c",
        Some("v5.channel.k8s.io, v4.channel.k8s.io"),
        exec_handler(opts(true, true, true, false), echo_until_eof(7, seen.clone())),
    )
    .await
    .unwrap();
    assert_eq!(bin(&next_data(&mut ws).await), [1], "connected on stdout");
    ws.send(Message::Binary(Bytes::from_static(b"\x00hello ")))
        .await
        .unwrap();
    ws.send(Message::Binary(Bytes::from_static(b"\x00world")))
        .await
        .unwrap();
    ws.send(Message::Binary(Bytes::from_static(&[255, 0]))).await.unwrap();
    // After the half-close, more stdin is ignored.
    ws.send(Message::Binary(Bytes::from_static(b"\x00late"))).await.unwrap();
    let (msgs, close) = collect(&mut ws).await;
    assert_eq!(close, Some(CloseCode::Normal));
    let stdout: Vec<u8> = msgs
        .iter()
        .filter(|m| bin(m)[0] == 1)
        .flat_map(|m| bin(m)[1..].to_vec())
        .collect();
    assert_eq!(stdout, b"hello world");
    let status = msgs.last().map(bin).unwrap();
    assert_eq!(status[0], 3);
    let v = json(&status[1..]);
    assert_eq!(v["reason"], "NonZeroExitCode");
    assert_eq!(
        v["details"]["causes"][0],
        serde_json::json!({"reason": "ExitCode", "message": "7"})
    );
    assert_eq!(seen.lock().unwrap().as_slice(), b"hello world");
}

#[tokio::test]
async fn legacy_protocols_report_only_failures_as_text() {
    // channel.k8s.io, exit 0: no status at all.
    let mut ws = connect(
        "/exec/ns/pod/c",
        Some(V1),
        exec_handler(
            opts(false, true, false, false),
            run_fn(|_| async { Outcome::Exited(0) }),
        ),
    )
    .await
    .unwrap();
    let (msgs, close) = collect(&mut ws).await;
    assert_eq!(close, Some(CloseCode::Normal));
    assert_eq!(msgs.iter().map(|m| bin(m).to_vec()).collect::<Vec<_>>(), [vec![1]]);

    // No protocol offered: binary, v1 errors; a runtime failure is plain text on channel 3.
    let fail =
        run_fn(|_| async { Outcome::Failed(RuntimeError::new("Exec", Code::NotFound, "container not found (\"c\")")) });
    let mut ws = connect(
        "/exec/ns/pod/c",
        None,
        exec_handler(opts(false, false, true, false), fail),
    )
    .await
    .unwrap();
    let (msgs, close) = collect(&mut ws).await;
    assert_eq!(close, Some(CloseCode::Normal));
    assert_eq!(bin(&msgs[0]), [2], "connected on stderr when stdout is not wanted");
    assert_eq!(
        bin(&msgs[1]),
        b"\x03error executing command in container: container not found (\"c\")"
    );

    // base64.channel.k8s.io, exit 3.
    let mut ws = connect(
        "/exec/ns/pod/c",
        Some(BASE64_V1),
        exec_handler(
            opts(true, false, false, false),
            run_fn(|_| async { Outcome::Exited(3) }),
        ),
    )
    .await
    .unwrap();
    let (msgs, _) = collect(&mut ws).await;
    assert_eq!(
        text(&msgs[0]),
        "3",
        "connected on the error channel when no output is wanted"
    );
    let b = base64::engine::general_purpose::STANDARD
        .decode(&text(&msgs[1])[1..])
        .unwrap();
    assert_eq!(b, b"command terminated with non-zero exit code: exit status 3");
}

#[tokio::test]
async fn base64_round_trips_every_byte() {
    let all: Vec<u8> = (0..=255).collect();
    let mut ws = connect(
        "/exec/ns/pod/c",
        Some(BASE64_V1),
        exec_handler(opts(true, true, false, false), echo_once(0)),
    )
    .await
    .unwrap();
    let msg = format!("0{}", base64::engine::general_purpose::STANDARD.encode(&all));
    ws.send(Message::Text(msg.into())).await.unwrap();
    let (msgs, close) = collect(&mut ws).await;
    assert_eq!(close, Some(CloseCode::Normal));
    let out = text(&msgs[1]);
    assert!(out.starts_with('1'));
    let decoded = base64::engine::general_purpose::STANDARD.decode(&out[1..]).unwrap();
    assert_eq!(&decoded[..4], b"out:");
    assert_eq!(&decoded[4..], all.as_slice());
}

#[tokio::test]
async fn malformed_messages_are_skipped_and_pings_answered() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut ws = connect(
        "/exec/ns/pod/c",
        Some(BASE64_V4),
        exec_handler(opts(true, true, false, false), echo_until_eof(0, seen.clone())),
    )
    .await
    .unwrap();
    assert_eq!(text(&next_data(&mut ws).await), "1");
    for junk in ["0!!!not base64", "", "9AAAA", "/AAAA", "1b3V0", "0"] {
        ws.send(Message::Text(junk.into())).await.unwrap();
    }
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Pong(p))) => {
                assert_eq!(&p[..], b"are you there");
                break;
            }
            Some(Ok(Message::Ping(_))) => {}
            other => panic!("expected the pong, got {other:?}"),
        }
    }
    ws.send(Message::Text("0b2s=".into())).await.unwrap();
    assert_eq!(text(&next_data(&mut ws).await), "1b2s=");
    // No half-close before v5: closing the socket is the only end of stdin.
    // The client closing first gets the Close reply (a clean end, not a reset).
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    let (_, close) = collect(&mut ws).await;
    assert_eq!(close, Some(CloseCode::Normal));
    // The process ran to its end with stdin at EOF.
    tokio::time::timeout(WAIT, async {
        while seen.lock().unwrap().as_slice() != b"ok" {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn v5_bad_close_signals_drop_the_connection() {
    for bad in [&[255u8][..], &[255, 0, 0][..], &[255, 9][..]] {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(tokio::sync::Notify::new());
        let (s, d) = (seen.clone(), done.clone());
        let run = run_fn(move |mut io: ProcessIo| async move {
            let mut stdin = io.stdin.take().unwrap();
            while let Some(c) = stdin.recv().await {
                s.lock().unwrap().extend_from_slice(&c);
            }
            d.notify_one();
            Outcome::Exited(0)
        });
        let mut ws = connect(
            "/exec/ns/pod/c",
            Some(V5),
            exec_handler(opts(true, true, false, false), run),
        )
        .await
        .unwrap();
        ws.send(Message::Binary(Bytes::from_static(b"\x00x"))).await.unwrap();
        ws.send(Message::Binary(Bytes::copy_from_slice(bad))).await.unwrap();
        let (msgs, close) = collect(&mut ws).await;
        assert_eq!(close, None, "{bad:?}: dropped without a Close frame");
        assert!(msgs.iter().all(|m| bin(m)[0] != 3), "no status after a protocol error");
        // The process still sees its stdin end.
        tokio::time::timeout(WAIT, done.notified()).await.unwrap();
        assert_eq!(seen.lock().unwrap().as_slice(), b"x");
    }
}

#[tokio::test]
async fn oversize_frames_drop_the_connection() {
    let (mut client, server) = duplex(1 << 16);
    let done = Arc::new(tokio::sync::Notify::new());
    let d = done.clone();
    let run = run_fn(move |mut io: ProcessIo| async move {
        let mut stdin = io.stdin.take().unwrap();
        while stdin.recv().await.is_some() {}
        d.notify_one();
        Outcome::Exited(0)
    });
    spawn_server(server, exec_handler(opts(true, true, false, false), run));
    client
        .write_all(
            b"GET /exec/ns/pod/c HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n",
        )
        .await
        .unwrap();
    // The 101, then the "connected" message.
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(&[0x82, 0x01, 0x01]) {
        let n = tokio::time::timeout(WAIT, client.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101"));
    // A masked binary frame announcing 33 MiB (64-bit length), payload never sent.
    let mut frame = vec![0x82, 0xff];
    frame.extend_from_slice(&((MAX_MESSAGE_SIZE as u64) + 1024 * 1024).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    client.write_all(&frame).await.unwrap();
    // The connection is dropped: EOF, no Close frame.
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest, b"");
    tokio::time::timeout(WAIT, done.notified()).await.unwrap();
}

#[tokio::test]
async fn a_process_that_ignores_resizes_does_not_stall_stdin() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut ws = connect(
        "/exec/ns/pod/c",
        Some(V5),
        exec_handler(opts(true, true, false, true), echo_until_eof(0, seen.clone())),
    )
    .await
    .unwrap();
    for i in 0..100 {
        let msg = format!("\x04{{\"Width\":{i},\"Height\":24}}");
        ws.send(Message::Binary(Bytes::from(msg.into_bytes()))).await.unwrap();
    }
    ws.send(Message::Binary(Bytes::from_static(b"\x00still here")))
        .await
        .unwrap();
    ws.send(Message::Binary(Bytes::from_static(&[255, 0]))).await.unwrap();
    let (msgs, close) = collect(&mut ws).await;
    assert_eq!(close, Some(CloseCode::Normal));
    assert!(msgs.iter().any(|m| bin(m) == b"\x01still here"), "{msgs:?}");
}

#[tokio::test]
async fn tty_resizes_reach_the_process() {
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let run = run_fn(move |mut io: ProcessIo| async move {
        assert!(io.stderr.is_none(), "a TTY has no stderr");
        let mut resize = io.resize.take().unwrap();
        while let Some(size) = resize.recv().await {
            let _ = tx.send(size).await;
        }
        Outcome::Exited(0)
    });
    let mut ws = connect(
        "/exec/ns/pod/c",
        Some(V5),
        exec_handler(opts(true, true, true, true), run),
    )
    .await
    .unwrap();
    ws.send(Message::Binary(Bytes::from_static(b"\x04{\"Width\":80,")))
        .await
        .unwrap();
    ws.send(Message::Binary(Bytes::from_static(
        b"\x04\"Height\":24}{\"Width\":100,\"Height\":50}",
    )))
    .await
    .unwrap();
    let first = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
    // Sizes the process has not taken yet are coalesced: the latest always arrives.
    let mut last = first;
    while last != (TermSize { width: 100, height: 50 }) {
        last = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
    }
    assert!(
        first == TermSize { width: 80, height: 24 } || first == last,
        "{first:?}"
    );
    // Closing the resize channel ends the process's resize stream.
    ws.send(Message::Binary(Bytes::from_static(&[255, 4]))).await.unwrap();
    let (_, close) = collect(&mut ws).await;
    assert_eq!(close, Some(CloseCode::Normal));
}

/// A dialer whose ports answer "pong!" to "ping!" and close; port 81 is refused.
fn echo_dialer() -> DialFn {
    Arc::new(|port: u16| {
        Box::pin(async move {
            if port == 81 {
                return Err(RuntimeError::new(
                    "PortForward",
                    Code::Unavailable,
                    "connection refused",
                ));
            }
            let (ours, mut pod) = duplex(1024);
            tokio::spawn(async move {
                let mut buf = [0u8; 5];
                if pod.read_exact(&mut buf).await.is_ok() && &buf == b"ping!" {
                    let _ = pod.write_all(format!("pong{port}").as_bytes()).await;
                }
            });
            Ok(Box::new(ours) as BoxedIo)
        })
    })
}

fn port_forward_handler(ports: Vec<u16>) -> impl Fn(Request<hyper::body::Incoming>) -> Response + Send + Sync {
    move |req| serve_port_forward(req, ports.clone(), echo_dialer())
}

#[tokio::test]
async fn port_forward_prefixes_and_echo_match_the_capture() {
    let mut ws = connect(
        "/portForward/ns/pod?port=8080",
        Some(V4),
        port_forward_handler(vec![8080]),
    )
    .await
    .unwrap();
    ws.send(Message::Binary(Bytes::from_static(b"\x00ping!")))
        .await
        .unwrap();
    let (msgs, close) = collect(&mut ws).await;
    assert_eq!(close, Some(CloseCode::Normal));
    let got: Vec<&[u8]> = msgs.iter().map(bin).collect();
    assert_eq!(got, [&[0, 0x90, 0x1f][..], &[1, 0x90, 0x1f][..], &b"\x00pong8080"[..]]);
}

#[tokio::test]
async fn port_forward_channels_per_port_and_dial_errors() {
    let mut ws = connect(
        "/portForward/ns/pod?port=80,81,443",
        Some(BASE64_V4),
        port_forward_handler(vec![80, 81, 443]),
    )
    .await
    .unwrap();
    let b64 = |ch: char, data: &[u8]| format!("{ch}{}", base64::engine::general_purpose::STANDARD.encode(data));
    // Port 443 is the third pair: channels 4 (data) and 5 (error).
    ws.send(Message::Text(b64('4', b"ping!").into())).await.unwrap();
    // Error channels and unknown channels take no input.
    ws.send(Message::Text(b64('5', b"junk").into())).await.unwrap();
    ws.send(Message::Text(b64('8', b"junk").into())).await.unwrap();
    ws.send(Message::Text(b64('0', b"ping!").into())).await.unwrap();
    let (msgs, close) = collect(&mut ws).await;
    assert_eq!(close, Some(CloseCode::Normal));
    let got: Vec<String> = msgs.iter().map(|m| text(m).to_string()).collect();
    let prefixes: Vec<String> = [(0, 80u16), (1, 80), (2, 81), (3, 81), (4, 443), (5, 443)]
        .iter()
        .map(|(ch, p)| b64(char::from(b'0' + ch), &p.to_le_bytes()))
        .collect();
    assert_eq!(got[..6], prefixes[..]);
    let rest = &got[6..];
    assert!(rest.contains(&b64('4', b"pong443")), "{rest:?}");
    assert!(rest.contains(&b64('0', b"pong80")), "{rest:?}");
    assert!(
        rest.contains(&b64('3', b"error forwarding port 81 to pod: connection refused")),
        "{rest:?}"
    );
    assert_eq!(rest.len(), 3);
}

#[tokio::test]
async fn port_forward_without_ports_is_a_bad_request() {
    let err = connect("/portForward/ns/pod", Some(V4), port_forward_handler(vec![]))
        .await
        .unwrap_err();
    match err {
        tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
            assert_eq!(
                resp.body().as_deref(),
                Some(&b"at least one port must be specified"[..])
            );
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    let err = connect("/portForward/ns/pod?port=80", Some(V5), port_forward_handler(vec![80]))
        .await
        .unwrap_err();
    assert!(matches!(err, tungstenite::Error::Http(r) if r.status() == StatusCode::FORBIDDEN));
}

/// Serves the tunnel adapter with an echo "session" on the byte stream ("bye" ends it).
async fn tunnel_client() -> Client {
    let (client_io, server_io) = duplex(1 << 16);
    tokio::spawn(tunnel_session(server_io, |mut io: DuplexStream| async move {
        let mut buf = [0u8; 1024];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if &buf[..n] == b"bye" {
                        return;
                    }
                    if io.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    }));
    // The handshake is serve_port_forward's: the adapter starts on the upgraded bytes.
    WebSocketStream::from_raw_socket(client_io, tungstenite::protocol::Role::Client, None).await
}

#[tokio::test]
async fn tunnel_carries_bytes_both_ways_and_closes_normally() {
    let mut ws = tunnel_client().await;
    ws.send(Message::Binary(Bytes::from_static(b"\x80\x03\x00\x01spdy")))
        .await
        .unwrap();
    assert_eq!(bin(&next_data(&mut ws).await), b"\x80\x03\x00\x01spdy");
    ws.send(Message::Binary(Bytes::from_static(b"bye"))).await.unwrap();
    let (msgs, close) = collect(&mut ws).await;
    assert!(msgs.is_empty());
    assert_eq!(close, Some(CloseCode::Normal));
}

#[tokio::test]
async fn tunnel_refuses_text_messages() {
    let mut ws = tunnel_client().await;
    ws.send(Message::Text("not spdy".into())).await.unwrap();
    let (_, close) = collect(&mut ws).await;
    assert_eq!(close, None);
}

/// `[len, kind, payload…]*` into masked client frames (binary, text, ping, close), so random
/// input reaches the channel decoder rather than failing tungstenite's mask check.
fn frame_messages(mut input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let [len, kind, rest @ ..] = input {
        let n = usize::from(*len).min(rest.len());
        let (payload, tail) = rest.split_at(n);
        out.push(0x80 | [0x2, 0x1, 0x9, 0x8][usize::from(kind & 3)]);
        if n < 126 {
            out.push(0x80 | n as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        let mask = [0x12, 0x34, 0x56, 0x78];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        input = tail;
    }
    out
}

/// Feeds `bytes` as the client's stream (then EOF) and reads everything back; panics if the
/// session neither finishes nor fails (time is paused: only a real hang reaches the limit).
async fn feed_session<F>(bytes: Vec<u8>, session: impl FnOnce(DuplexStream) -> F)
where
    F: Future<Output = ()>,
{
    let (client, server) = duplex(1 << 16);
    let client = async move {
        let (mut rd, mut wr) = tokio::io::split(client);
        let write = async move {
            let _ = wr.write_all(&bytes).await;
            let _ = wr.shutdown().await;
        };
        let read = async move {
            let mut out = Vec::new();
            let _ = rd.read_to_end(&mut out).await;
        };
        tokio::join!(write, read);
    };
    tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(session(server), client) })
        .await
        .expect("session hung");
}

#[tokio::test(start_paused = true)]
async fn random_client_bytes_neither_panic_nor_hang() {
    // xorshift: deterministic pseudo-random inputs (the fuzz target explores further).
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..300u32 {
        let len = (next() % 600) as usize;
        let mut input: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Steer some messages to real channels and to v5's close signal.
        for (i, b) in input.iter_mut().enumerate() {
            if i % 7 == 2 {
                *b = [0, 1, 4, 255, b'0', b'4', 3][(next() % 7) as usize];
            }
        }
        let bytes = if round % 4 == 0 { input } else { frame_messages(&input) };
        let protocol = REMOTE_COMMAND_PROTOCOLS[round as usize % REMOTE_COMMAND_PROTOCOLS.len()];
        let o = opts(true, true, round % 3 == 0, round % 2 == 0);
        match round % 3 {
            0 | 1 => {
                let run = echo_until_eof(7, Arc::new(Mutex::new(Vec::new())));
                feed_session(bytes, |io| remotecommand_session(io, protocol, o, Kind::Exec, run)).await
            }
            _ => {
                let protocol = PORT_FORWARD_PROTOCOLS[round as usize % PORT_FORWARD_PROTOCOLS.len()];
                feed_session(bytes, |io| {
                    port_forward_session(io, protocol, vec![80, 81], echo_dialer())
                })
                .await
            }
        }
    }
}

/// A SPDY client inside WebSocket binary messages: frames out, frames back.
struct TunnelClient {
    ws: Client,
    buf: bytes::BytesMut,
    compressor: crate::streaming::spdy::headers::HeaderCompressor,
}

impl TunnelClient {
    async fn send(&mut self, f: crate::streaming::spdy::frame::Frame) {
        self.ws.send(Message::Binary(f.to_bytes().unwrap())).await.unwrap();
    }

    async fn open(&mut self, id: u32, headers: &[(&str, &str)]) {
        let mut h = crate::streaming::spdy::headers::Headers::new();
        for (n, v) in headers {
            h.push(n, v);
        }
        let block = self.compressor.compress(&h).unwrap();
        self.send(crate::streaming::spdy::frame::Frame::SynStream {
            stream_id: id,
            assoc_id: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            block: block.into(),
        })
        .await;
    }

    /// The next SPDY frame, reassembled from however the server chunked its messages.
    async fn next(&mut self) -> crate::streaming::spdy::frame::Frame {
        loop {
            if let Some(f) = crate::streaming::spdy::frame::decode(&mut self.buf).unwrap() {
                return f;
            }
            let m = next_data(&mut self.ws).await;
            self.buf.extend_from_slice(bin(&m));
        }
    }
}

#[tokio::test]
async fn tunnel_runs_a_spdy_port_forward_through_the_server() {
    use crate::streaming::spdy::frame::{Frame, FLAG_FIN};
    // kubectl 1.31+ offers only the tunnel, and sends no `?port=`.
    let ws = connect(
        "/portForward/ns/pod",
        Some(PORT_FORWARD_TUNNEL),
        port_forward_handler(vec![]),
    )
    .await
    .unwrap();
    let mut c = TunnelClient {
        ws,
        buf: bytes::BytesMut::new(),
        compressor: crate::streaming::spdy::headers::HeaderCompressor::new().unwrap(),
    };
    c.open(1, &[("streamtype", "error"), ("port", "8080"), ("requestid", "0")])
        .await;
    assert!(matches!(c.next().await, Frame::SynReply { stream_id: 1, .. }));
    c.open(3, &[("streamtype", "data"), ("port", "8080"), ("requestid", "0")])
        .await;
    assert!(matches!(c.next().await, Frame::SynReply { stream_id: 3, .. }));
    c.send(Frame::Data {
        stream_id: 3,
        flags: 0,
        data: Bytes::from_static(b"ping!"),
    })
    .await;
    let mut echoed = Vec::new();
    loop {
        if let Frame::Data {
            stream_id: 3,
            flags,
            data,
        } = c.next().await
        {
            echoed.extend_from_slice(&data);
            if flags & FLAG_FIN != 0 {
                break;
            }
        }
    }
    assert_eq!(echoed, b"pong8080");
    c.send(Frame::GoAway {
        last_good_stream_id: 0,
        status: 0,
    })
    .await;
    let (_, close) = collect(&mut c.ws).await;
    assert_eq!(close, Some(CloseCode::Normal));
}

/// A kube-rs client whose every request gets a fresh in-memory connection to a server running
/// `handler`: kube's own WebSocket client (v5/v4 offer, close signal, status parsing) is an
/// independent implementation to check the server against.
fn kube_client<F>(handler: F) -> kube::Client
where
    F: Fn(Request<hyper::body::Incoming>) -> Response + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    let svc = tower::service_fn(move |req: Request<kube::client::Body>| {
        let handler = handler.clone();
        async move {
            let (client_io, server_io) = duplex(1 << 16);
            spawn_server(server_io, move |r| handler(r));
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client_io)).await?;
            tokio::spawn(conn.with_upgrades());
            send.send_request(req).await
        }
    });
    kube::Client::new(svc, "ns")
}

#[tokio::test]
async fn kube_rs_exec_speaks_v5_with_the_server() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, AttachParams};

    // kube speaks the apiserver's query (`stdin=true&stdout=true`); the apiserver translates it
    // to the kubelet's (`input=1&output=1`), so the handler takes the options as given.
    let handler = move |req: Request<hyper::body::Incoming>| {
        let query = req.uri().query().unwrap_or("").to_string();
        assert!(query.contains("command=cat") && query.contains("stdin=true"), "{query}");
        let run = echo_until_eof(7, Arc::new(Mutex::new(Vec::new())));
        serve_remotecommand(req, opts(true, true, false, false), Kind::Exec, run)
    };
    let pods: Api<Pod> = Api::namespaced(kube_client(handler), "ns");
    let ap = AttachParams::default().stdin(true).stdout(true).stderr(false);
    let mut p = tokio::time::timeout(WAIT, pods.exec("pod", ["cat"], &ap))
        .await
        .unwrap()
        .unwrap();
    let mut stdin = p.stdin().unwrap();
    let mut stdout = p.stdout().unwrap();
    let status = p.take_status().unwrap();
    stdin.write_all(b"hello from kube-rs").await.unwrap();
    // Shutting stdin makes kube send the v5 close signal: cat sees EOF and exits 7.
    stdin.shutdown().await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, stdout.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, "hello from kube-rs");
    let status = tokio::time::timeout(WAIT, status).await.unwrap().unwrap();
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let causes = status.details.unwrap().causes.unwrap();
    assert_eq!(causes[0].reason.as_deref(), Some("ExitCode"));
    assert_eq!(causes[0].message.as_deref(), Some("7"));
    tokio::time::timeout(WAIT, p.join()).await.unwrap().unwrap();
}

#[tokio::test]
async fn kube_rs_port_forward_with_the_server() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::Api;

    let handler = move |req: Request<hyper::body::Incoming>| {
        // The apiserver turns kube's `ports=8080,9090` into the kubelet's `port=8080,9090`.
        let query = req.uri().query().unwrap_or("").to_string();
        assert!(query.contains("ports=8080"), "{query}");
        // Pods that echo until EOF: kube closes the WebSocket itself once every local stream is
        // closed. (When the server closes first, as the Go kubelet also does once the pod side
        // ends, kube-rs answers with a second Close and reports SendAfterClosing: its quirk.)
        let dial: DialFn = Arc::new(|_port: u16| {
            Box::pin(async move {
                let (ours, pod) = duplex(1024);
                tokio::spawn(async move {
                    let (mut rd, mut wr) = tokio::io::split(pod);
                    let _ = tokio::io::copy(&mut rd, &mut wr).await;
                    let _ = wr.shutdown().await;
                });
                Ok(Box::new(ours) as BoxedIo)
            })
        });
        serve_port_forward(req, vec![8080, 9090], dial)
    };
    let pods: Api<Pod> = Api::namespaced(kube_client(handler), "ns");
    let mut pf = tokio::time::timeout(WAIT, pods.portforward("pod", &[8080, 9090]))
        .await
        .unwrap()
        .unwrap();
    for port in [9090u16, 8080] {
        let mut s = pf.take_stream(port).unwrap();
        s.write_all(b"ping!").await.unwrap();
        let mut got = vec![0u8; 5];
        tokio::time::timeout(WAIT, s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"ping!", "echoed on port {port}");
    }
    tokio::time::timeout(WAIT, pf.join()).await.unwrap().unwrap();
}
