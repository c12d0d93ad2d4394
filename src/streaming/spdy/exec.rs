//! Exec and attach over SPDY (kubelet-api-protocols.md §3.3, §3.4): the upgrade, then the
//! server algorithm of the kubelet's `createHTTPStreamStreams` for `channel.k8s.io` (v1) to
//! `v4.channel.k8s.io`. The client opens every stream; the server replies to each at once,
//! waits up to 30 s for all it expects, runs the process on plain channels (`ProcessIo`), and
//! writes the completion on the `error` stream.
//!
//! Teardown is the cleaner variant the reference allows: stdout and stderr get DATA+FIN when the
//! process's output ends, the status goes out with FIN on `error`, then the other streams get FIN
//! and the session sends GOAWAY and closes. The server→client direction of `stdin` is only
//! closed then: client-go treats its EOF as a reason to end its own stdin.

use axum::response::Response;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::frame::rst;
use super::session::{Session, SessionError, Stream, StreamWriter};
use super::{handshake, switching_protocols};
use crate::genericruntime::streams::{ProcessIo, TermSize, STREAM_CHANNEL_CAPACITY};
use crate::streaming::remotecommand::{
    status_legacy, status_v4, Kind, Outcome, RunFn, StreamOptions, SPDY_PROTOCOLS, STREAM_CREATION_TIMEOUT, V1, V2, V3,
};

/// Unparsed resize input kept at most (a resize event is ~25 bytes).
const MAX_RESIZE_BUFFER: usize = 4096;

/// Why an exec or attach session ended before the process ran.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("timed out waiting for client to create streams")]
    StreamsTimedOut,
    #[error("the client went away while creating streams")]
    ClientGone,
    #[error("replying to stream {stream_id}: {source}")]
    Reply {
        stream_id: u32,
        #[source]
        source: SessionError,
    },
}

/// The remote-command protocol versions, oldest first so they compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Version {
    V1,
    V2,
    V3,
    V4,
}

impl Version {
    fn of(protocol: &str) -> Self {
        match protocol {
            V1 => Self::V1,
            V2 => Self::V2,
            V3 => Self::V3,
            _ => Self::V4,
        }
    }
}

/// Answers an exec or attach upgrade request: 400/403 on a failed negotiation, otherwise 101
/// with the chosen `X-Stream-Protocol-Version`, and the session runs on the upgraded connection.
pub fn serve_remotecommand<B>(mut req: http::Request<B>, opts: StreamOptions, kind: Kind, run: RunFn) -> Response {
    let protocol = match handshake(&req, &SPDY_PROTOCOLS) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => remotecommand_session(TokioIo::new(upgraded), protocol, opts, kind, run).await,
            Err(e) => tracing::warn!(error = %e, ?kind, "SPDY upgrade for a remote command failed"),
        }
    });
    switching_protocols(protocol)
}

/// The streams a client opened, by type.
#[derive(Default)]
struct Streams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
    /// Replied to but not used (unknown types, duplicates): closed at the end.
    others: Vec<StreamWriter>,
}

/// Runs one remote command on an upgraded connection speaking `protocol`.
pub async fn remotecommand_session<IO>(io: IO, protocol: &str, opts: StreamOptions, kind: Kind, run: RunFn)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let version = Version::of(protocol);
    let mut session = Session::new(io);
    let streams = match collect_streams(&mut session, version, opts).await {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(error = %e, ?kind, protocol, "remote command not started");
            session.close().await;
            return;
        }
    };
    session.stop_accepting();
    run_process(streams, version, opts, kind, run).await;
    session.close().await;
}

/// Replies to every stream as it arrives and waits until all expected ones are there.
async fn collect_streams(session: &mut Session, version: Version, opts: StreamOptions) -> Result<Streams, ExecError> {
    let resize = opts.tty && version >= Version::V3;
    let expected = [true, opts.stdin, opts.stdout, opts.stderr, resize]
        .iter()
        .filter(|x| **x)
        .count();
    // A wire timeout (the client's own is 30 real seconds), so not scaled by the virtual clock.
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    let mut streams = Streams::default();
    let mut received = 0;
    while received < expected {
        let stream = match tokio::time::timeout_at(deadline, session.accept()).await {
            Err(_) => return Err(ExecError::StreamsTimedOut),
            Ok(None) => return Err(ExecError::ClientGone),
            Ok(Some(s)) => s,
        };
        stream.writer.reply().await.map_err(|source| ExecError::Reply {
            stream_id: stream.id,
            source,
        })?;
        let slot = match stream.headers.get("streamtype") {
            Some("error") => &mut streams.error,
            Some("stdin") => &mut streams.stdin,
            Some("stdout") => &mut streams.stdout,
            Some("stderr") => &mut streams.stderr,
            // v1 and v2 have no resize stream: like any unknown type it is replied to only.
            Some("resize") if version >= Version::V3 => &mut streams.resize,
            other => {
                tracing::debug!(streamtype = ?other, "ignoring an unknown remote command stream");
                streams.others.push(stream.writer);
                continue;
            }
        };
        if slot.is_some() {
            streams.others.push(stream.writer);
            continue;
        }
        *slot = Some(stream);
        received += 1;
    }
    Ok(streams)
}

/// Wires the streams to the process, runs it, and reports how it ended.
async fn run_process(streams: Streams, version: Version, opts: StreamOptions, kind: Kind, run: RunFn) {
    let Streams {
        error,
        stdin,
        stdout,
        stderr,
        resize,
        mut others,
    } = streams;
    let mut error = error.map(|s| s.writer);
    if version == Version::V1 {
        // v1 (1.0-era kubelets): the error stream is reset as soon as the streams are set up,
        // so v1 never reports an error; the server also ends its write side of stdin at once.
        if let Some(e) = error.take() {
            let _ = e.reset(rst::CANCEL).await;
        }
        if let Some(s) = &stdin {
            let _ = s.writer.finish().await;
        }
    }
    let mut to_finish = Vec::new();
    let stdin = stdin.map(|s| {
        if version != Version::V1 {
            to_finish.push(s.writer);
        }
        s.data
    });
    let mut pumps: Vec<JoinHandle<()>> = Vec::new();
    let mut output = |s: Option<Stream>| {
        s.map(|s| {
            let (tx, rx) = mpsc::channel(STREAM_CHANNEL_CAPACITY);
            pumps.push(tokio::spawn(pump_output(rx, s.writer)));
            tx
        })
    };
    let stdout = output(stdout);
    // With a TTY the terminal's output is all on stdout; a stray stderr stream is just closed.
    let stderr = if opts.tty {
        others.extend(stderr.map(|s| s.writer));
        None
    } else {
        output(stderr)
    };
    let resize = match resize {
        Some(s) if opts.tty => {
            let (tx, rx) = mpsc::channel(STREAM_CHANNEL_CAPACITY);
            to_finish.push(s.writer);
            tokio::spawn(pump_resize(s.data, tx));
            Some(rx)
        }
        other => {
            others.extend(other.map(|s| s.writer));
            None
        }
    };
    let io = ProcessIo {
        stdin,
        stdout,
        stderr,
        resize,
    };
    // The process is not cancelled when the client goes away (neither is the kubelet's): its
    // output channels close, which is how an attach notices.
    let outcome = run(io).await;
    match &outcome {
        Outcome::Exited(code) => tracing::debug!(?kind, code, "remote command exited"),
        Outcome::Failed(e) => tracing::info!(?kind, error = %e, "remote command failed"),
    }
    // stdout and stderr end (FIN) when the process's side of them closes: the client reads the
    // status only after both ended.
    for p in pumps {
        let _ = p.await;
    }
    if let Some(e) = error {
        let status = match version {
            Version::V4 => status_v4(&outcome, kind),
            _ => status_legacy(&outcome, kind),
        };
        let _ = e.write(Bytes::from(status)).await;
        let _ = e.finish().await;
    }
    for w in to_finish.iter().chain(others.iter()) {
        let _ = w.finish().await;
    }
}

/// Copies the process's output to a stream; FIN when the process closes its side. Stops (and
/// so closes the process's channel) if the client resets the stream or goes away.
async fn pump_output(mut rx: mpsc::Receiver<Bytes>, w: StreamWriter) {
    loop {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Some(b) => {
                    if w.write(b).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = w.finish().await;
                    return;
                }
            },
            _ = w.cancelled() => return,
        }
    }
}

/// Parses the resize stream as a stream of JSON values (`{"Width":80,"Height":24}`, newline or
/// not) and forwards the sizes. A process that does not read resizes never stalls the
/// connection: while the channel is full only the latest size is kept.
async fn pump_resize(mut data: mpsc::Receiver<Bytes>, tx: mpsc::Sender<TermSize>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut pending: Option<TermSize> = None;
    let mut input_open = true;
    while input_open || pending.is_some() {
        tokio::select! {
            permit = tx.reserve(), if pending.is_some() => match (permit, pending.take()) {
                (Ok(p), Some(size)) => p.send(size),
                _ => return,
            },
            chunk = data.recv(), if input_open => {
                let Some(chunk) = chunk else {
                    input_open = false;
                    continue;
                };
                buf.extend_from_slice(&chunk);
                let (sizes, consumed, ok) = parse_sizes(&buf);
                buf.drain(..consumed);
                for size in sizes {
                    if pending.is_some() {
                        pending = Some(size);
                        continue;
                    }
                    match tx.try_send(size) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(size)) => pending = Some(size),
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
                if !ok || buf.len() > MAX_RESIZE_BUFFER {
                    // Go stops handling resizes at the first decode error.
                    tracing::debug!("bad resize stream input; ignoring further resizes");
                    input_open = false;
                }
            }
        }
    }
}

/// Complete JSON values at the front of `buf`: the sizes, the bytes they used, and `false` if
/// the input is not valid JSON (a truncated value at the end is fine: more may come).
fn parse_sizes(buf: &[u8]) -> (Vec<TermSize>, usize, bool) {
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<TermSize>();
    let mut sizes = Vec::new();
    let mut consumed = 0;
    loop {
        match it.next() {
            Some(Ok(size)) => {
                sizes.push(size);
                consumed = it.byte_offset();
            }
            Some(Err(e)) if e.is_eof() => return (sizes, consumed, true),
            Some(Err(_)) => return (sizes, consumed, false),
            // Only whitespace left.
            None => return (sizes, buf.len(), true),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures::FutureExt;

    use super::super::frame::Frame;
    use super::super::testclient::{TestClient, Transcript};
    use super::*;
    use crate::genericruntime::seam::{Code, RuntimeError};
    use crate::streaming::remotecommand::V4;

    fn opts(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> StreamOptions {
        StreamOptions {
            stdin,
            stdout,
            stderr,
            tty,
        }
    }

    /// A process that echoes stdin lines to stdout as `out:<line>`, writes `err-line` to
    /// stderr, records resizes, and exits with `code` once stdin ends.
    fn echo_process(code: i32, resizes: Arc<Mutex<Vec<TermSize>>>) -> RunFn {
        Box::new(move |mut io: ProcessIo| {
            async move {
                if let Some(err) = &io.stderr {
                    err.send(Bytes::from_static(b"err-line\n")).await.unwrap();
                }
                let mut resize = io.resize.take();
                let mut stdin = io.stdin.take();
                loop {
                    tokio::select! {
                        size = async { resize.as_mut().unwrap().recv().await }, if resize.is_some() => match size {
                            Some(s) => resizes.lock().unwrap().push(s),
                            None => resize = None,
                        },
                        chunk = async { stdin.as_mut().unwrap().recv().await }, if stdin.is_some() => match chunk {
                            Some(b) => {
                                let mut line = b"out:".to_vec();
                                line.extend_from_slice(&b);
                                io.stdout.as_ref().unwrap().send(line.into()).await.unwrap();
                            }
                            None => break,
                        },
                        else => break,
                    }
                }
                Outcome::Exited(code)
            }
            .boxed()
        })
    }

    async fn start(protocol: &'static str, o: StreamOptions, run: RunFn) -> (TestClient, JoinHandle<()>) {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(remotecommand_session(server_io, protocol, o, Kind::Exec, run));
        (TestClient::new(client_io), server)
    }

    #[tokio::test]
    async fn v4_exec_reports_exit_code_7_and_keeps_streams_apart() {
        let resizes = Arc::new(Mutex::new(Vec::new()));
        let (mut c, server) = start(V4, opts(true, true, true, false), echo_process(7, resizes)).await;
        let mut t = Transcript::default();
        let error = c.open_and_wait(&[("streamtype", "error")], &mut t).await;
        let stdin = c.open_and_wait(&[("streamtype", "stdin")], &mut t).await;
        let stdout = c.open_and_wait(&[("streamtype", "stdout")], &mut t).await;
        let stderr = c.open_and_wait(&[("streamtype", "stderr")], &mut t).await;
        let ping = c.ping().await;
        c.data(stdin, b"ping\n", false).await;
        c.data(stdin, b"", true).await;
        c.drain(&mut t).await;
        drop(c);
        server.await.unwrap();

        assert_eq!(t.replies, [error, stdin, stdout, stderr]);
        assert_eq!(t.pings, [ping], "the client's ping is echoed unchanged");
        assert_eq!(t.text(stdout), "out:ping\n");
        assert_eq!(t.text(stderr), "err-line\n");
        let status: serde_json::Value = serde_json::from_slice(&t.data[&error]).unwrap();
        assert_eq!(
            status,
            serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": "command terminated with non-zero exit code: exit status 7",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": "7"}]},
            })
        );
        // stdout and stderr end before the status; the server's stdin side only at the very end.
        let status_at = t
            .frames
            .iter()
            .position(|f| matches!(f, Frame::Data { stream_id, data, .. } if *stream_id == error && !data.is_empty()))
            .unwrap();
        assert!(t.fin_at(stdout).unwrap() < status_at);
        assert!(t.fin_at(stderr).unwrap() < status_at);
        assert!(t.fin_at(stdin).unwrap() > status_at);
        assert!(t.fin.contains(&error));
        assert!(t.reset.is_empty());
        assert_eq!(t.goaway, Some(stderr));
        assert!(matches!(t.frames.last(), Some(Frame::GoAway { .. })));
    }

    #[tokio::test]
    async fn v4_success_is_the_success_status() {
        let (mut c, server) = start(V4, opts(false, true, false, false), echo_process(0, Default::default())).await;
        let mut t = Transcript::default();
        let error = c.open_and_wait(&[("streamtype", "error")], &mut t).await;
        let stdout = c.open_and_wait(&[("streamtype", "stdout")], &mut t).await;
        c.drain(&mut t).await;
        drop(c);
        server.await.unwrap();
        assert_eq!(t.text(error), r#"{"metadata":{},"status":"Success"}"#);
        assert!(t.fin.contains(&stdout));
    }

    #[tokio::test]
    async fn stdin_eof_reaches_the_process_only_on_fin() {
        let got = Arc::new(Mutex::new(Vec::<u8>::new()));
        let seen = got.clone();
        let run: RunFn = Box::new(move |io: ProcessIo| {
            async move {
                // Like a real process, stderr stays open until it exits.
                let ProcessIo { stdin, stderr, .. } = io;
                let mut stdin = stdin.unwrap();
                while let Some(b) = stdin.recv().await {
                    seen.lock().unwrap().extend_from_slice(&b);
                }
                drop(stderr);
                Outcome::Exited(0)
            }
            .boxed()
        });
        let (mut c, server) = start(V4, opts(true, false, true, false), run).await;
        let mut t = Transcript::default();
        c.open_and_wait(&[("streamtype", "error")], &mut t).await;
        let stdin = c.open_and_wait(&[("streamtype", "stdin")], &mut t).await;
        c.open_and_wait(&[("streamtype", "stderr")], &mut t).await;
        c.data(stdin, b"a", false).await;
        c.data(stdin, b"b", false).await;
        // The process is still waiting for more stdin: echo a ping to prove the session lives.
        let id = c.ping().await;
        assert_eq!(c.next().await, Some(Frame::Ping { id }));
        assert!(!server.is_finished());
        c.data(stdin, b"", true).await;
        c.drain(&mut t).await;
        drop(c);
        server.await.unwrap();
        assert_eq!(&got.lock().unwrap()[..], b"ab");
    }

    #[tokio::test]
    async fn tty_v4_delivers_resizes_from_a_json_stream() {
        let resizes = Arc::new(Mutex::new(Vec::new()));
        let (mut c, server) = start(V4, opts(true, true, false, true), echo_process(0, resizes.clone())).await;
        let mut t = Transcript::default();
        c.open_and_wait(&[("streamtype", "error")], &mut t).await;
        let stdin = c.open_and_wait(&[("streamtype", "stdin")], &mut t).await;
        let stdout = c.open_and_wait(&[("streamtype", "stdout")], &mut t).await;
        let resize = c.open_and_wait(&[("streamtype", "resize")], &mut t).await;
        // Newline-separated, then two values split across frames with no separator.
        c.data(resize, b"{\"Width\":80,\"Height\":24}\n", false).await;
        c.data(resize, b"{\"Width\":100,\"He", false).await;
        c.data(resize, b"ight\":30}{\"Width\":1,\"Height\":2}", false).await;
        // Wait until the process has seen all three before ending stdin.
        for _ in 0..100 {
            if resizes.lock().unwrap().len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        c.data(stdin, b"x", true).await;
        c.drain(&mut t).await;
        drop(c);
        server.await.unwrap();
        assert_eq!(
            *resizes.lock().unwrap(),
            [
                TermSize { width: 80, height: 24 },
                TermSize { width: 100, height: 30 },
                TermSize { width: 1, height: 2 }
            ]
        );
        assert_eq!(t.text(stdout), "out:x");
    }

    #[tokio::test]
    async fn v3_and_v2_report_failures_as_text_and_success_as_nothing() {
        for (protocol, code, want) in [
            (V3, 0, ""),
            (V3, 3, "command terminated with non-zero exit code: exit status 3"),
            (V2, 2, "command terminated with non-zero exit code: exit status 2"),
        ] {
            let (mut c, server) = start(
                protocol,
                opts(false, true, false, false),
                echo_process(code, Default::default()),
            )
            .await;
            let mut t = Transcript::default();
            let error = c.open_and_wait(&[("streamtype", "error")], &mut t).await;
            c.open_and_wait(&[("streamtype", "stdout")], &mut t).await;
            c.drain(&mut t).await;
            drop(c);
            server.await.unwrap();
            assert_eq!(t.text(error), want, "{protocol} exit {code}");
            assert!(t.fin.contains(&error));
        }
    }

    #[tokio::test]
    async fn v2_tty_expects_no_resize_stream() {
        let (mut c, server) = start(V2, opts(false, true, false, true), echo_process(0, Default::default())).await;
        let mut t = Transcript::default();
        c.open_and_wait(&[("streamtype", "error")], &mut t).await;
        let stdout = c.open_and_wait(&[("streamtype", "stdout")], &mut t).await;
        c.drain(&mut t).await;
        drop(c);
        server.await.unwrap();
        assert!(t.fin.contains(&stdout));
    }

    #[tokio::test]
    async fn v1_resets_the_error_stream_and_closes_stdin_at_once() {
        let (mut c, server) = start(V1, opts(true, true, false, false), echo_process(5, Default::default())).await;
        let mut t = Transcript::default();
        let error = c.open_and_wait(&[("streamtype", "error")], &mut t).await;
        let stdin = c.open_and_wait(&[("streamtype", "stdin")], &mut t).await;
        let stdout = c.open_and_wait(&[("streamtype", "stdout")], &mut t).await;
        // The reset and the stdin FIN come before any process output.
        let mut early = Transcript::default();
        while early.reset.is_empty() || early.fin.is_empty() {
            let f = c.next().await.unwrap();
            early.record(f.clone());
            t.record(f);
        }
        assert_eq!(early.reset, [(error, rst::CANCEL)]);
        assert_eq!(early.fin, [stdin]);
        c.data(stdin, b"hi", true).await;
        c.drain(&mut t).await;
        drop(c);
        server.await.unwrap();
        assert_eq!(t.text(stdout), "out:hi");
        assert!(!t.data.contains_key(&error), "v1 never reports on the error stream");
    }

    #[tokio::test]
    async fn failures_become_an_internal_error_status() {
        let run: RunFn = Box::new(|_io| {
            async { Outcome::Failed(RuntimeError::new("Exec", Code::NotFound, "container not found (\"c\")")) }.boxed()
        });
        let (mut c, server) = start(V4, opts(false, true, false, false), run).await;
        let mut t = Transcript::default();
        let error = c.open_and_wait(&[("streamtype", "error")], &mut t).await;
        let stdout = c.open_and_wait(&[("streamtype", "stdout")], &mut t).await;
        c.drain(&mut t).await;
        drop(c);
        server.await.unwrap();
        let status: serde_json::Value = serde_json::from_slice(&t.data[&error]).unwrap();
        assert_eq!(status["reason"], "InternalError");
        assert_eq!(
            status["message"],
            "Internal error occurred: error executing command in container: container not found (\"c\")"
        );
        // The process's stdout sender was dropped with its ProcessIo: the stream still ends.
        assert!(t.fin.contains(&stdout));
    }

    #[tokio::test]
    async fn unknown_streams_are_replied_to_but_not_counted() {
        let (mut c, server) = start(V4, opts(false, true, false, false), echo_process(0, Default::default())).await;
        let mut t = Transcript::default();
        let odd = c.open_and_wait(&[("streamtype", "bogus")], &mut t).await;
        c.open_and_wait(&[("streamtype", "error")], &mut t).await;
        c.open_and_wait(&[("streamtype", "stdout")], &mut t).await;
        c.drain(&mut t).await;
        drop(c);
        server.await.unwrap();
        assert!(t.fin.contains(&odd));
        assert!(t.data.values().any(|d| d == br#"{"metadata":{},"status":"Success"}"#));
    }

    #[tokio::test(start_paused = true)]
    async fn missing_streams_time_out_after_30s_and_the_process_never_runs() {
        let ran = Arc::new(Mutex::new(false));
        let flag = ran.clone();
        let run: RunFn = Box::new(move |_io| {
            async move {
                *flag.lock().unwrap() = true;
                Outcome::Exited(0)
            }
            .boxed()
        });
        let (mut c, server) = start(V4, opts(true, true, false, false), run).await;
        let mut t = Transcript::default();
        c.open_and_wait(&[("streamtype", "error")], &mut t).await;
        let began = tokio::time::Instant::now();
        c.drain(&mut t).await;
        assert!(began.elapsed() >= STREAM_CREATION_TIMEOUT);
        assert!(began.elapsed() < STREAM_CREATION_TIMEOUT + Duration::from_secs(1));
        assert!(t.goaway.is_some());
        drop(c);
        server.await.unwrap();
        assert!(!*ran.lock().unwrap());
    }

    #[tokio::test]
    async fn a_client_that_goes_away_closes_the_process_output() {
        // An attach-like process: runs until its output has nobody to go to.
        let run: RunFn = Box::new(|io: ProcessIo| {
            async move {
                io.stdout.unwrap().closed().await;
                Outcome::Exited(0)
            }
            .boxed()
        });
        let (mut c, server) = start(V4, opts(false, true, false, false), run).await;
        let mut t = Transcript::default();
        c.open_and_wait(&[("streamtype", "error")], &mut t).await;
        c.open_and_wait(&[("streamtype", "stdout")], &mut t).await;
        drop(c);
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn resize_parsing_keeps_partial_values() {
        let (s, used, ok) = parse_sizes(b" {\"Width\":1,\"Height\":2}\n{\"Width\":3");
        assert_eq!(s, [TermSize { width: 1, height: 2 }]);
        assert_eq!(used, 23);
        assert!(ok);
        let (s, used, ok) = parse_sizes(b"{\"Width\":1,\"Height\":2}  \n");
        assert_eq!((s.len(), used, ok), (1, 25, true));
        let (_, _, ok) = parse_sizes(b"{\"Width\":70000,\"Height\":2}");
        assert!(!ok, "values are uint16");
        let (_, _, ok) = parse_sizes(b"garbage");
        assert!(!ok);
    }
}
