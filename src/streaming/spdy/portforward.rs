//! Port-forward over SPDY (kubelet-api-protocols.md §3.5), as the kubelet's
//! `portforward/httpstream.go` serves it: for every forwarded connection the client opens an
//! `error` and a `data` stream carrying `port` and `requestid`; once both are there the server
//! dials the port and copies bytes both ways. Failures go as plain text on the error stream.
//!
//! `port_forward_session` runs on any byte stream: the WebSocket tunnel
//! (`SPDY/3.1+portforward.k8s.io`) feeds it the SPDY bytes it unwraps.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::response::Response;
use bytes::{Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::frame::rst;
use super::session::{Session, SessionError, Stream, StreamWriter};
use super::{handshake, switching_protocols};
use crate::genericruntime::seam::RuntimeError;
use crate::streaming::remotecommand::{DialFn, PORT_FORWARD, STREAM_CREATION_TIMEOUT};

/// How long the second stream of a pair may take (`DefaultStreamCreationTimeout`). A wire
/// timeout, so not scaled by the virtual clock.
pub const PAIR_TIMEOUT: std::time::Duration = STREAM_CREATION_TIMEOUT;
/// Read size for the pod → client direction (Go's io.Copy buffer).
const COPY_CHUNK: usize = 32 * 1024;

/// Numbers sessions for log lines and the timeout message (Go prints its connection pointer).
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Why one forwarded connection failed (written to its error stream).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("{}", .0.message)]
    Dial(#[source] RuntimeError),
    #[error("reading from the port: {0}")]
    ReadPort(#[source] std::io::Error),
    #[error("writing to the port: {0}")]
    WritePort(#[source] std::io::Error),
    #[error("writing to the client: {0}")]
    WriteClient(#[source] SessionError),
}

/// Answers a port-forward upgrade: 400/403 on a failed negotiation, otherwise 101 with
/// `X-Stream-Protocol-Version: portforward.k8s.io` (the apiserver's tunnel echoes it) and the
/// session runs on the upgraded connection.
pub fn serve_port_forward<B>(mut req: http::Request<B>, dial: DialFn) -> Response {
    let protocol = match handshake(&req, &[PORT_FORWARD]) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => port_forward_session(TokioIo::new(upgraded), dial).await,
            Err(e) => tracing::warn!(error = %e, "SPDY upgrade for port-forward failed"),
        }
    });
    switching_protocols(protocol)
}

/// An error/data pair being assembled.
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
    deadline: Instant,
}

/// Serves port-forward on a SPDY connection until the client sends GOAWAY or goes away and
/// every forwarded connection has ended.
pub async fn port_forward_session<IO>(io: IO, dial: DialFn)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let mut session = Session::new(io);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    loop {
        let next_deadline = pairs.values().map(|p| p.deadline).min();
        let stream = tokio::select! {
            s = session.accept() => match s {
                Some(s) => s,
                None => break,
            },
            _ = sleep_until(next_deadline), if next_deadline.is_some() => {
                expire(&mut pairs, conn).await;
                continue;
            }
            Some(_) = forwards.join_next(), if !forwards.is_empty() => continue,
        };
        let (_port, kind) = match validate(&stream) {
            Ok(v) => v,
            Err(reason) => {
                // Go rejects the stream before replying: RST, no SYN_REPLY.
                tracing::debug!(conn, stream = stream.id, reason, "rejecting port-forward stream");
                let _ = stream.writer.reset(rst::CANCEL).await;
                continue;
            }
        };
        if stream.writer.reply().await.is_err() {
            break;
        }
        let request_id = request_id(&stream, kind);
        let pair = pairs.entry(request_id.clone()).or_insert_with(|| Pair {
            error: None,
            data: None,
            deadline: Instant::now() + PAIR_TIMEOUT,
        });
        let slot = match kind {
            StreamKind::Error => &mut pair.error,
            StreamKind::Data => &mut pair.data,
        };
        if slot.is_some() {
            let msg = format!(
                "error processing stream for request {request_id}: {} stream already assigned",
                kind.name()
            );
            tracing::debug!(conn, %msg, "port-forward");
            if let Some(e) = &pair.error {
                let _ = e.writer.write(Bytes::from(msg)).await;
            }
            let _ = stream.writer.reset(rst::CANCEL).await;
            continue;
        }
        *slot = Some(stream);
        if pair.error.is_some() && pair.data.is_some() {
            if let Some(Pair {
                error: Some(error),
                data: Some(data),
                ..
            }) = pairs.remove(&request_id)
            {
                forwards.spawn(forward(error, data, dial.clone()));
            }
        }
    }
    // No new streams will come: drop incomplete pairs, let running forwards finish.
    for (_, p) in pairs.drain() {
        close_pair(p).await;
    }
    while forwards.join_next().await.is_some() {}
    session.close().await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamKind {
    Error,
    Data,
}

impl StreamKind {
    fn name(self) -> &'static str {
        match self {
            StreamKind::Error => "error",
            StreamKind::Data => "data",
        }
    }
}

/// Go's `httpStreamReceived` checks: a port 1–65535 and a stream type of `error` or `data`.
fn validate(stream: &Stream) -> Result<(u16, StreamKind), String> {
    let port = stream.headers.get("port").ok_or("\"port\" header is required")?;
    let parsed = port
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| port.parse::<u16>().ok())
        .flatten()
        .ok_or_else(|| format!("unable to parse {port:?} as a port"))?;
    if parsed == 0 {
        return Err(format!("port {port:?} must be > 0"));
    }
    let kind = match stream.headers.get("streamtype") {
        Some("error") => StreamKind::Error,
        Some("data") => StreamKind::Data,
        None => return Err("\"streamType\" header is required".into()),
        Some(other) => return Err(format!("invalid stream type {other:?}")),
    };
    Ok((parsed, kind))
}

/// The pair key: the `requestid` header, or for old clients without it the error stream's id
/// and the data stream's id minus 2 (their streams come in consecutive odd ids).
fn request_id(stream: &Stream, kind: StreamKind) -> String {
    match stream.headers.get("requestid") {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => match kind {
            StreamKind::Error => stream.id.to_string(),
            StreamKind::Data => (i64::from(stream.id) - 2).to_string(),
        },
    }
}

/// Drops the pairs whose second stream did not come in time, telling the client why.
async fn expire(pairs: &mut HashMap<String, Pair>, conn: u64) {
    let now = Instant::now();
    let expired: Vec<String> = pairs
        .iter()
        .filter(|(_, p)| p.deadline <= now)
        .map(|(id, _)| id.clone())
        .collect();
    for id in expired {
        if let Some(p) = pairs.remove(&id) {
            let msg = format!("(conn={conn}, request={id}) timed out waiting for streams");
            tracing::info!(%msg, "port-forward");
            if let Some(e) = &p.error {
                let _ = e.writer.write(Bytes::from(msg)).await;
            }
            close_pair(p).await;
        }
    }
}

async fn close_pair(p: Pair) {
    for s in [p.error, p.data].into_iter().flatten() {
        let _ = s.writer.finish().await;
    }
}

/// Forwards one connection: dial, copy both ways, report a failure on the error stream, then
/// close the error stream and the data stream (in Go's order).
async fn forward(error: Stream, data: Stream, dial: DialFn) {
    let port = data
        .headers
        .get("port")
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_default();
    let Stream {
        data: inbound,
        writer: data_w,
        ..
    } = data;
    // The client never writes on the error stream (it half-closes it at once).
    let error_w = error.writer;
    let result = match dial(port).await {
        Ok(io) => copy_both(io, inbound, &data_w).await,
        Err(e) => Err(ForwardError::Dial(e)),
    };
    match result {
        // A client that reset the stream or left does not need to hear about the rest.
        Err(_) if data_w.is_cancelled() => {}
        Err(e) => {
            tracing::debug!(port, error = %e, "port-forward connection failed");
            let msg = format!("error forwarding port {port} to pod: {e}");
            let _ = error_w.write(Bytes::from(msg)).await;
        }
        Ok(()) => {}
    }
    let _ = error_w.finish().await;
    let _ = data_w.finish().await;
}

/// Client → port until the client's FIN (then the port's write side is shut down, keeping the
/// other direction open); port → client until the port's EOF, which ends the connection, as
/// does the client resetting the stream.
async fn copy_both(
    io: crate::genericruntime::streams::BoxedIo,
    mut inbound: mpsc::Receiver<Bytes>,
    w: &StreamWriter,
) -> Result<(), ForwardError> {
    let (mut rd, mut wr) = tokio::io::split(io);
    let to_port = async {
        while let Some(chunk) = inbound.recv().await {
            wr.write_all(&chunk).await.map_err(ForwardError::WritePort)?;
        }
        wr.shutdown().await.map_err(ForwardError::WritePort)
    };
    let from_port = async {
        let mut buf = BytesMut::with_capacity(COPY_CHUNK);
        loop {
            buf.reserve(COPY_CHUNK);
            let n = rd.read_buf(&mut buf).await.map_err(ForwardError::ReadPort)?;
            if n == 0 {
                return Ok(());
            }
            w.write(buf.split().freeze()).await.map_err(ForwardError::WriteClient)?;
        }
    };
    tokio::pin!(to_port, from_port);
    let mut to_port_done = false;
    loop {
        tokio::select! {
            r = &mut to_port, if !to_port_done => {
                r?;
                to_port_done = true;
            }
            r = &mut from_port => return r,
            _ = w.cancelled() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use futures::FutureExt;
    use tokio::task::JoinHandle;

    use super::super::frame::Frame;
    use super::super::testclient::{TestClient, Transcript};
    use super::*;
    use crate::genericruntime::seam::Code;
    use crate::genericruntime::streams::BoxedIo;

    /// Dials an in-memory echo server that answers `echo(<port>):<input>` per chunk; port 9
    /// refuses.
    fn echo_dial() -> DialFn {
        Arc::new(|port: u16| {
            async move {
                if port == 9 {
                    return Err(RuntimeError::new("PortForward", Code::Unknown, "connection refused"));
                }
                let (ours, theirs) = tokio::io::duplex(1024);
                tokio::spawn(async move {
                    let (mut rd, mut wr) = tokio::io::split(theirs);
                    let mut buf = vec![0u8; 1024];
                    while let Ok(n) = rd.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let mut out = format!("echo({port}):").into_bytes();
                        out.extend_from_slice(&buf[..n]);
                        if wr.write_all(&out).await.is_err() {
                            break;
                        }
                    }
                    let _ = wr.shutdown().await;
                });
                Ok(Box::new(ours) as BoxedIo)
            }
            .boxed()
        })
    }

    fn start() -> (TestClient, JoinHandle<()>) {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(port_forward_session(server_io, echo_dial()));
        (TestClient::new(client_io), server)
    }

    /// Reads until stream `id` has FIN (and every other frame is recorded).
    async fn until_fin(c: &mut TestClient, t: &mut Transcript, id: u32) {
        while !t.fin.contains(&id) {
            let f = c.next().await.expect("connection closed early");
            t.record(f);
        }
    }

    #[tokio::test]
    async fn two_concurrent_connections_are_paired_by_request_id() {
        let (mut c, server) = start();
        let mut t = Transcript::default();
        // Interleaved: both error streams first, then the data streams in reverse order.
        let e0 = c
            .open_and_wait(&[("streamtype", "error"), ("port", "8080"), ("requestid", "0")], &mut t)
            .await;
        c.data(e0, b"", true).await;
        let e1 = c
            .open_and_wait(&[("streamtype", "error"), ("port", "9090"), ("requestid", "1")], &mut t)
            .await;
        c.data(e1, b"", true).await;
        let d1 = c
            .open_and_wait(&[("streamtype", "data"), ("port", "9090"), ("requestid", "1")], &mut t)
            .await;
        let d0 = c
            .open_and_wait(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")], &mut t)
            .await;
        c.data(d0, b"hello", false).await;
        c.data(d1, b"world", false).await;
        while t.text(d0) != "echo(8080):hello" || t.text(d1) != "echo(9090):world" {
            t.record(c.next().await.unwrap());
        }
        // Client half-close: the port sees EOF, closes, and both streams end (error first).
        c.data(d0, b"", true).await;
        until_fin(&mut c, &mut t, d0).await;
        assert!(t.fin_at(e0).unwrap() < t.fin_at(d0).unwrap());
        assert_eq!(t.text(e0), "", "no error text on success");
        // The client resets the other data stream (what client-go does when done).
        c.send(Frame::RstStream {
            stream_id: d1,
            status: rst::CANCEL,
        })
        .await;
        until_fin(&mut c, &mut t, e1).await;
        c.send(Frame::GoAway {
            last_good_stream_id: 0,
            status: 0,
        })
        .await;
        c.drain(&mut t).await;
        drop(c);
        server.await.unwrap();
        assert_eq!(t.goaway, Some(d0));
    }

    #[tokio::test]
    async fn bad_headers_are_reset_without_a_reply() {
        let (mut c, server) = start();
        for headers in [
            &[("streamtype", "data"), ("port", "http")][..],
            &[("streamtype", "data"), ("port", "0")],
            &[("streamtype", "data"), ("port", "70000")],
            &[("streamtype", "data"), ("port", "+80")],
            &[("streamtype", "data")],
            &[("streamtype", "stdin"), ("port", "80")],
            &[("port", "80")],
        ] {
            let id = c.open(headers, false).await;
            assert_eq!(
                c.next().await,
                Some(Frame::RstStream {
                    stream_id: id,
                    status: rst::CANCEL
                }),
                "{headers:?}"
            );
        }
        // The session is still fine.
        let id = c.ping().await;
        assert_eq!(c.next().await, Some(Frame::Ping { id }));
        drop(c);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn dial_failures_are_text_on_the_error_stream() {
        let (mut c, server) = start();
        let mut t = Transcript::default();
        let e = c
            .open_and_wait(&[("streamtype", "error"), ("port", "9"), ("requestid", "0")], &mut t)
            .await;
        c.data(e, b"", true).await;
        let d = c
            .open_and_wait(&[("streamtype", "data"), ("port", "9"), ("requestid", "0")], &mut t)
            .await;
        until_fin(&mut c, &mut t, d).await;
        assert_eq!(t.text(e), "error forwarding port 9 to pod: connection refused");
        assert!(t.fin.contains(&e));
        drop(c);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn legacy_clients_without_request_ids_pair_by_stream_id() {
        let (mut c, server) = start();
        let mut t = Transcript::default();
        let e = c
            .open_and_wait(&[("streamtype", "error"), ("port", "80")], &mut t)
            .await;
        let d = c.open_and_wait(&[("streamtype", "data"), ("port", "80")], &mut t).await;
        assert_eq!(d, e + 2);
        c.data(d, b"x", true).await;
        until_fin(&mut c, &mut t, d).await;
        assert_eq!(t.text(d), "echo(80):x");
        drop(c);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_second_stream_of_the_same_type_is_reported() {
        let (mut c, server) = start();
        let mut t = Transcript::default();
        let e = c
            .open_and_wait(&[("streamtype", "error"), ("port", "80"), ("requestid", "5")], &mut t)
            .await;
        let dup = c
            .open_and_wait(&[("streamtype", "error"), ("port", "80"), ("requestid", "5")], &mut t)
            .await;
        while !t.reset.iter().any(|(id, _)| *id == dup) {
            t.record(c.next().await.unwrap());
        }
        assert_eq!(
            t.text(e),
            "error processing stream for request 5: error stream already assigned"
        );
        drop(c);
        server.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_incomplete_pair_times_out_after_30s() {
        let (mut c, server) = start();
        let mut t = Transcript::default();
        let e = c
            .open_and_wait(&[("streamtype", "error"), ("port", "80"), ("requestid", "7")], &mut t)
            .await;
        let began = tokio::time::Instant::now();
        until_fin(&mut c, &mut t, e).await;
        assert!(began.elapsed() >= PAIR_TIMEOUT);
        assert!(began.elapsed() < PAIR_TIMEOUT + Duration::from_secs(1));
        let text = t.text(e);
        assert!(
            text.starts_with("(conn=") && text.ends_with(", request=7) timed out waiting for streams"),
            "{text}"
        );
        // A late data stream for that id starts a new pair instead of forwarding.
        let d = c
            .open_and_wait(&[("streamtype", "data"), ("port", "80"), ("requestid", "7")], &mut t)
            .await;
        c.data(d, b"late", false).await;
        let id = c.ping().await;
        loop {
            match c.next().await.unwrap() {
                Frame::Ping { id: got } if got == id => break,
                f => t.record(f),
            }
        }
        assert!(!t.data.contains_key(&d));
        drop(c);
        server.await.unwrap();
    }
}
