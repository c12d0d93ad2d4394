//! A SPDY/3 server session on any byte stream (kubelet-api-protocols.md §3.6.3): a read task
//! that decodes frames and hands each client stream to the protocol layer with its headers and
//! an inbound data channel, and a write task that owns the connection's write half and its
//! header compressor, so every frame goes out through one queue in order.
//!
//! As spdystream does, the session ignores flow control: it never waits on a send window and
//! ignores WINDOW_UPDATE and SETTINGS (Go peers never send WINDOW_UPDATE, so honouring windows
//! would stall every stream after 64 KiB). Back-pressure is TCP's and the bounded channels'.
//! Inbound DATA is delivered to its stream's channel before the next frame is read, which is
//! Go's per-stream head-of-line behaviour too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::frame::{self, rst, Frame, FrameError, FLAG_FIN};
use super::headers::{HeaderCompressor, HeaderDecompressor, HeaderError, Headers};
use crate::genericruntime::streams::STREAM_CHANNEL_CAPACITY;

/// Frames queued for the write task.
pub const OUT_QUEUE_CAPACITY: usize = 64;
/// New client streams waiting for the protocol layer.
pub const ACCEPT_QUEUE_CAPACITY: usize = 16;
/// Read buffer growth step.
const READ_CHUNK: usize = 32 * 1024;
/// The write task batches queued frames up to this many bytes per write.
const WRITE_BATCH: usize = 64 * 1024;
/// How long `close` waits for the peer to take our last frames and close its side. Closing a
/// TCP socket with unread input makes the kernel send RST, which can destroy data the peer has
/// not read yet; Go's server likewise waits for its streams to go away before closing.
/// A wire timeout, not a kubelet period, so it is not scaled by the virtual clock.
pub const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// A connection with no frame in either direction for this long is closed: the kubelet's
/// default `streamingConnectionIdleTimeout` (4 h). Clients ping every 5 s, so only a vanished
/// peer gets here. A wire timeout, not scaled by the virtual clock.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4 * 60 * 60);

/// Why a session or a stream operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("reading from the connection: {0}")]
    Read(#[source] std::io::Error),
    #[error("writing to the connection: {0}")]
    Write(#[source] std::io::Error),
    #[error("decoding a frame: {0}")]
    Decode(#[source] FrameError),
    #[error("encoding a frame: {0}")]
    Encode(#[source] FrameError),
    #[error("header block of stream {stream_id}: {source}")]
    Headers {
        stream_id: u32,
        #[source]
        source: HeaderError,
    },
    #[error("setting up header compression: {0}")]
    Compressor(#[source] HeaderError),
    #[error("the connection is closed")]
    Closed,
    #[error("the peer reset stream {stream_id}")]
    StreamReset { stream_id: u32 },
}

/// What the write task sends.
#[derive(Debug)]
enum Out {
    Reply { stream_id: u32 },
    Data { stream_id: u32, data: Bytes, fin: bool },
    Reset { stream_id: u32, status: u32 },
    Ping { id: u32 },
    GoAway,
    Shutdown,
}

struct Shared {
    /// Highest client stream id seen (GOAWAY's last-good-stream-id).
    last_stream_id: AtomicU32,
    /// Cancelled when the connection is gone (read end, read or write error, idle timeout).
    closed: CancellationToken,
    start: Instant,
    /// Milliseconds after `start` of the last frame read or written.
    last_activity_ms: AtomicU64,
}

impl Shared {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_deadline(&self) -> Instant {
        self.start + Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed)) + IDLE_TIMEOUT
    }
}

/// A stream the client opened.
#[derive(Debug)]
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// DATA from the client. Closes on the client's FIN or RST, or when the connection ends.
    /// Drop it if the stream's input is not wanted: the read task then discards that DATA.
    pub data: mpsc::Receiver<Bytes>,
    pub writer: StreamWriter,
}

/// The server's side of a stream. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Out>,
    /// Cancelled when the client resets the stream or the connection ends.
    reset: CancellationToken,
    /// Keeps the read task's entry for this stream (it needs it to deliver a later RST).
    _alive: Arc<()>,
}

impl StreamWriter {
    pub fn id(&self) -> u32 {
        self.id
    }

    async fn send(&self, out: Out) -> Result<(), SessionError> {
        if self.reset.is_cancelled() {
            return Err(SessionError::StreamReset { stream_id: self.id });
        }
        self.out.send(out).await.map_err(|_| SessionError::Closed)
    }

    /// Accepts the stream: SYN_REPLY with an empty header block, no FIN (what Go sends).
    pub async fn reply(&self) -> Result<(), SessionError> {
        self.send(Out::Reply { stream_id: self.id }).await
    }

    /// Sends bytes as DATA (split into frames of at most `frame::MAX_FRAME_LEN`).
    pub async fn write(&self, data: Bytes) -> Result<(), SessionError> {
        if data.is_empty() {
            return Ok(());
        }
        self.send(Out::Data {
            stream_id: self.id,
            data,
            fin: false,
        })
        .await
    }

    /// Half-closes the server's direction: an empty DATA frame with FIN.
    pub async fn finish(&self) -> Result<(), SessionError> {
        self.send(Out::Data {
            stream_id: self.id,
            data: Bytes::new(),
            fin: true,
        })
        .await
    }

    /// Resets the stream (both directions).
    pub async fn reset(&self, status: u32) -> Result<(), SessionError> {
        self.send(Out::Reset {
            stream_id: self.id,
            status,
        })
        .await
    }

    /// Resolves when the client resets the stream or the connection ends.
    pub async fn cancelled(&self) {
        self.reset.cancelled().await
    }

    pub fn is_cancelled(&self) -> bool {
        self.reset.is_cancelled()
    }
}

/// A running server session. Dropping it stops its tasks; `close` ends it politely.
pub struct Session {
    out: mpsc::Sender<Out>,
    accept: mpsc::Receiver<Stream>,
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    watchdog: JoinHandle<()>,
}

impl Session {
    /// Starts the read and write tasks on `io` (the upgraded connection, after the 101).
    pub fn new<IO>(io: IO) -> Self
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE_CAPACITY);
        let (accept_tx, accept_rx) = mpsc::channel(ACCEPT_QUEUE_CAPACITY);
        let shared = Arc::new(Shared {
            last_stream_id: AtomicU32::new(0),
            closed: CancellationToken::new(),
            start: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
        });
        let writer = tokio::spawn(write_loop(wr, out_rx, shared.clone()));
        let reader = tokio::spawn(read_loop(rd, out_tx.clone(), accept_tx, shared.clone()));
        let watchdog = tokio::spawn(idle_watchdog(
            shared.clone(),
            reader.abort_handle(),
            writer.abort_handle(),
        ));
        Self {
            out: out_tx,
            accept: accept_rx,
            shared,
            reader,
            writer,
            watchdog,
        }
    }

    /// The next stream the client opened; `None` once the client sent GOAWAY or went away.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.accept.recv().await
    }

    /// Refuses streams from now on (RST_STREAM REFUSED_STREAM), so unexpected extra streams
    /// never wait in the queue.
    pub fn stop_accepting(&mut self) {
        self.accept.close();
    }

    /// Resolves when the connection is gone.
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await
    }

    /// Ends the session: GOAWAY (last-good-stream-id = the highest client stream), write side
    /// shut down, then up to `CLOSE_LINGER` for the client to close its side.
    pub async fn close(mut self) {
        let _ = self.out.send(Out::GoAway).await;
        let _ = self.out.send(Out::Shutdown).await;
        let linger = tokio::time::sleep(CLOSE_LINGER);
        tokio::pin!(linger);
        tokio::select! {
            _ = &mut self.writer => {}
            _ = &mut linger => {}
        }
        tokio::select! {
            _ = &mut self.reader => {}
            _ = &mut linger => {}
        }
        // Drop aborts whatever is still running and so closes the connection.
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
        self.watchdog.abort();
    }
}

/// Closes the connection once nothing has been read or written for `IDLE_TIMEOUT`: every
/// stream is cancelled and dropping both halves closes the socket.
async fn idle_watchdog(shared: Arc<Shared>, reader: AbortHandle, writer: AbortHandle) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(shared.idle_deadline()) => {}
            _ = shared.closed.cancelled() => return,
        }
        if Instant::now() >= shared.idle_deadline() {
            tracing::info!(idle = ?IDLE_TIMEOUT, "closing an idle streaming connection");
            shared.closed.cancel();
            reader.abort();
            writer.abort();
            return;
        }
    }
}

async fn write_loop<W>(mut wr: W, mut rx: mpsc::Receiver<Out>, shared: Arc<Shared>)
where
    W: AsyncWrite + Unpin,
{
    let result = write_frames(&mut wr, &mut rx, &shared).await;
    if let Err(e) = result {
        // The connection is broken: stop everything that waits on it.
        tracing::debug!(error = %e, "SPDY session write side ended");
        shared.closed.cancel();
    }
}

async fn write_frames<W>(wr: &mut W, rx: &mut mpsc::Receiver<Out>, shared: &Shared) -> Result<(), SessionError>
where
    W: AsyncWrite + Unpin,
{
    let mut compressor = HeaderCompressor::new().map_err(SessionError::Compressor)?;
    let mut buf = BytesMut::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut shutdown = false;
        while let Some(out) = next.take() {
            match out {
                Out::Shutdown => {
                    shutdown = true;
                    break;
                }
                out => encode(out, &mut compressor, &mut buf, shared)?,
            }
            if buf.len() < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        wr.write_all(&buf).await.map_err(SessionError::Write)?;
        buf.clear();
        wr.flush().await.map_err(SessionError::Write)?;
        shared.touch();
        if shutdown {
            break;
        }
    }
    wr.shutdown().await.map_err(SessionError::Write)
}

fn encode(
    out: Out,
    compressor: &mut HeaderCompressor,
    buf: &mut BytesMut,
    shared: &Shared,
) -> Result<(), SessionError> {
    let frame = match out {
        Out::Reply { stream_id } => {
            let block = compressor
                .compress(&Headers::new())
                .map_err(|source| SessionError::Headers { stream_id, source })?;
            Frame::SynReply {
                stream_id,
                flags: 0,
                block: block.into(),
            }
        }
        Out::Data {
            stream_id,
            mut data,
            fin,
        } => {
            while data.len() > frame::MAX_FRAME_LEN {
                let chunk = data.split_to(frame::MAX_FRAME_LEN);
                Frame::Data {
                    stream_id,
                    flags: 0,
                    data: chunk,
                }
                .encode(buf)
                .map_err(SessionError::Encode)?;
            }
            Frame::Data {
                stream_id,
                flags: if fin { FLAG_FIN } else { 0 },
                data,
            }
        }
        Out::Reset { stream_id, status } => Frame::RstStream { stream_id, status },
        Out::Ping { id } => Frame::Ping { id },
        Out::GoAway => Frame::GoAway {
            last_good_stream_id: shared.last_stream_id.load(Ordering::Relaxed),
            status: 0,
        },
        // Handled by the caller.
        Out::Shutdown => return Ok(()),
    };
    frame.encode(buf).map_err(SessionError::Encode)
}

/// The read task's record of a client stream.
struct Inbound {
    /// `None` once the client half-closed.
    tx: Option<mpsc::Sender<Bytes>>,
    reset: CancellationToken,
    alive: Weak<()>,
}

async fn read_loop<R>(mut rd: R, out: mpsc::Sender<Out>, accept: mpsc::Sender<Stream>, shared: Arc<Shared>)
where
    R: AsyncRead + Unpin,
{
    let mut reader = Reader {
        out,
        accept: Some(accept),
        shared: shared.clone(),
        decompressor: HeaderDecompressor::new(),
        streams: HashMap::new(),
        last_id: 0,
    };
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let result = loop {
        let frame = match frame::decode(&mut buf) {
            Ok(Some(f)) => f,
            Ok(None) => {
                buf.reserve(READ_CHUNK);
                match rd.read_buf(&mut buf).await {
                    Ok(0) => break Ok(()),
                    Ok(_) => continue,
                    Err(e) => break Err(SessionError::Read(e)),
                }
            }
            Err(e) => break Err(SessionError::Decode(e)),
        };
        shared.touch();
        if let Err(e) = reader.handle(frame).await {
            break Err(e);
        }
    };
    match result {
        Ok(()) => tracing::debug!("SPDY client closed the connection"),
        Err(e) => tracing::debug!(error = %e, "SPDY session read side ended"),
    }
    // Every stream sees EOF and cancellation; the protocol layer sees `accept` end.
    for (_, s) in reader.streams.drain() {
        s.reset.cancel();
    }
    shared.closed.cancel();
    // A connection that cannot be read is over, as in spdystream: flush what is queued and
    // shut the write side down.
    let _ = reader.out.send(Out::Shutdown).await;
}

struct Reader {
    out: mpsc::Sender<Out>,
    accept: Option<mpsc::Sender<Stream>>,
    shared: Arc<Shared>,
    decompressor: HeaderDecompressor,
    streams: HashMap<u32, Inbound>,
    last_id: u32,
}

impl Reader {
    async fn handle(&mut self, frame: Frame) -> Result<(), SessionError> {
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                block,
                ..
            } => {
                // Always inflate: the zlib stream must see every block, even of refused streams.
                let headers = self
                    .decompressor
                    .decompress(&block)
                    .map_err(|source| SessionError::Headers { stream_id, source })?;
                self.new_stream(stream_id, flags, headers).await;
            }
            Frame::SynReply { stream_id, block, .. } | Frame::Headers { stream_id, block, .. } => {
                // The server opens no streams and has no use for extra headers; inflate only to
                // keep the zlib stream in step.
                self.decompressor
                    .decompress(&block)
                    .map_err(|source| SessionError::Headers { stream_id, source })?;
            }
            Frame::Data { stream_id, flags, data } => {
                // DATA on an unknown (or forgotten) stream is dropped, as spdystream does.
                if let Some(s) = self.streams.get_mut(&stream_id) {
                    if let (Some(tx), false) = (&s.tx, data.is_empty()) {
                        if tx.send(data).await.is_err() {
                            // Nobody reads this stream's input any more.
                            s.tx = None;
                        }
                    }
                    if flags & FLAG_FIN != 0 {
                        s.tx = None;
                    }
                }
            }
            Frame::RstStream { stream_id, .. } => {
                if let Some(s) = self.streams.remove(&stream_id) {
                    s.reset.cancel();
                }
            }
            Frame::Ping { id } => {
                // Odd ids are the client's pings: echo unchanged. Even ones would answer ours.
                if id % 2 == 1 && self.out.send(Out::Ping { id }).await.is_err() {
                    return Err(SessionError::Closed);
                }
            }
            Frame::GoAway { .. } => {
                // No new streams; existing ones drain.
                self.accept = None;
            }
            Frame::Settings { .. } | Frame::WindowUpdate { .. } => {}
        }
        Ok(())
    }

    async fn new_stream(&mut self, stream_id: u32, flags: u8, headers: Headers) {
        if stream_id <= self.last_id {
            // Ids must increase (Go: RST PROTOCOL_ERROR, frame ignored).
            let _ = self
                .out
                .send(Out::Reset {
                    stream_id,
                    status: rst::PROTOCOL_ERROR,
                })
                .await;
            return;
        }
        self.last_id = stream_id;
        self.shared.last_stream_id.store(stream_id, Ordering::Relaxed);
        let Some(accept) = self.accept.clone().filter(|a| !a.is_closed()) else {
            self.accept = None;
            let _ = self
                .out
                .send(Out::Reset {
                    stream_id,
                    status: rst::REFUSED_STREAM,
                })
                .await;
            return;
        };
        // Forget streams nobody holds any more (long port-forward sessions open many).
        self.streams.retain(|_, s| s.alive.strong_count() > 0);
        let (tx, rx) = mpsc::channel(STREAM_CHANNEL_CAPACITY);
        let reset = self.shared.closed.child_token();
        let alive = Arc::new(());
        self.streams.insert(
            stream_id,
            Inbound {
                // A SYN_STREAM with FIN is already half-closed by the client.
                tx: (flags & FLAG_FIN == 0).then_some(tx),
                reset: reset.clone(),
                alive: Arc::downgrade(&alive),
            },
        );
        let stream = Stream {
            id: stream_id,
            headers,
            data: rx,
            writer: StreamWriter {
                id: stream_id,
                out: self.out.clone(),
                reset,
                _alive: alive,
            },
        };
        if accept.send(stream).await.is_err() {
            self.accept = None;
            self.streams.remove(&stream_id);
            let _ = self
                .out
                .send(Out::Reset {
                    stream_id,
                    status: rst::REFUSED_STREAM,
                })
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testclient::TestClient;
    use super::*;

    #[tokio::test]
    async fn pings_are_echoed_and_streams_delivered() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let mut session = Session::new(server_io);
        let mut c = TestClient::new(client_io);
        c.send(Frame::Ping { id: 1 }).await;
        assert_eq!(c.next().await, Some(Frame::Ping { id: 1 }));
        // A server-parity ping is a reply to us: not echoed (the next frame is the SYN_REPLY).
        c.send(Frame::Ping { id: 2 }).await;
        c.send(Frame::WindowUpdate { stream_id: 0, delta: 5 }).await;
        c.send(Frame::Settings {
            flags: 0,
            entries: vec![(0, 7, 1)],
        })
        .await;
        let id = c.open(&[("streamtype", "stdin")], false).await;
        let mut s = session.accept().await.unwrap();
        assert_eq!((s.id, s.headers.get("StreamType")), (id, Some("stdin")));
        s.writer.reply().await.unwrap();
        assert!(matches!(c.next().await, Some(Frame::SynReply { stream_id, .. }) if stream_id == id));
        c.data(id, b"abc", false).await;
        c.data(id, b"", true).await;
        assert_eq!(s.data.recv().await.unwrap(), "abc");
        assert_eq!(s.data.recv().await, None);
        // The server's direction stays open after the client's FIN.
        s.writer.write(Bytes::from_static(b"xyz")).await.unwrap();
        s.writer.finish().await.unwrap();
        assert_eq!(
            c.next().await,
            Some(Frame::Data {
                stream_id: id,
                flags: 0,
                data: "xyz".into()
            })
        );
        assert_eq!(
            c.next().await,
            Some(Frame::Data {
                stream_id: id,
                flags: FLAG_FIN,
                data: Bytes::new()
            })
        );
    }

    #[tokio::test]
    async fn reset_cancels_the_stream_and_decreasing_ids_are_refused() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let mut session = Session::new(server_io);
        let mut c = TestClient::new(client_io);
        let id = c.open(&[("streamtype", "data")], false).await;
        let mut s = session.accept().await.unwrap();
        c.send(Frame::RstStream {
            stream_id: id,
            status: rst::CANCEL,
        })
        .await;
        s.writer.cancelled().await;
        assert_eq!(s.data.recv().await, None);
        assert!(matches!(
            s.writer.write("late".into()).await,
            Err(SessionError::StreamReset { .. })
        ));
        // Reusing id 1 is a protocol error for that stream, not for the connection.
        c.send_syn_stream(1, &[("streamtype", "data")], 0).await;
        assert_eq!(
            c.next().await,
            Some(Frame::RstStream {
                stream_id: 1,
                status: rst::PROTOCOL_ERROR
            })
        );
        c.send(Frame::Ping { id: 3 }).await;
        assert_eq!(c.next().await, Some(Frame::Ping { id: 3 }));
    }

    #[tokio::test]
    async fn goaway_ends_accept_and_close_sends_goaway_with_the_last_stream() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let mut session = Session::new(server_io);
        let mut c = TestClient::new(client_io);
        let _ = c.open(&[("streamtype", "error")], true).await;
        let id = c.open(&[("streamtype", "data")], false).await;
        let first = session.accept().await.unwrap();
        let mut first_data = first.data;
        assert_eq!(first_data.recv().await, None, "SYN_STREAM with FIN is half-closed");
        let _second = session.accept().await.unwrap();
        c.send(Frame::GoAway {
            last_good_stream_id: 0,
            status: 0,
        })
        .await;
        assert!(session.accept().await.is_none());
        let closing = tokio::spawn(session.close());
        assert_eq!(
            c.next().await,
            Some(Frame::GoAway {
                last_good_stream_id: id,
                status: 0
            })
        );
        assert_eq!(c.next().await, None, "write side shut down after GOAWAY");
        drop(c);
        closing.await.unwrap();
    }

    #[tokio::test]
    async fn refused_after_stop_accepting_and_errors_end_the_session() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let mut session = Session::new(server_io);
        session.stop_accepting();
        let mut c = TestClient::new(client_io);
        let id = c.open(&[("streamtype", "x")], false).await;
        assert_eq!(
            c.next().await,
            Some(Frame::RstStream {
                stream_id: id,
                status: rst::REFUSED_STREAM
            })
        );
        // An unknown control frame type kills the connection, as in Go.
        c.send_raw(&[0x80, 3, 0, 10, 0, 0, 0, 0]).await;
        session.closed().await;
        assert_eq!(c.next().await, None);
    }

    #[tokio::test]
    async fn garbage_input_ends_the_session_without_panicking() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5bd1);
        for case in 0..300 {
            let (client_io, server_io) = tokio::io::duplex(1 << 16);
            let mut session = Session::new(server_io);
            let mut c = TestClient::new(client_io);
            // Half the cases start like a real client, so later garbage hits deeper states.
            if case % 2 == 0 {
                c.open(&[("streamtype", "stdin")], false).await;
            }
            let len = rng.random_range(1..512);
            let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if case % 3 == 0 {
                // A valid control header in front of random payloads.
                junk.splice(
                    0..0,
                    [0x80, 3, 0, rng.random_range(1..10), 0, 0, 0, rng.random_range(0..64)],
                );
            }
            c.send_raw(&junk).await;
            drop(c);
            // Whatever the bytes, the session ends (error or EOF) and accept stops.
            tokio::time::timeout(Duration::from_secs(10), async {
                while let Some(s) = session.accept().await {
                    drop(s);
                }
                session.closed().await;
            })
            .await
            .unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_after_the_idle_timeout() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let mut session = Session::new(server_io);
        let mut c = TestClient::new(client_io);
        c.open(&[("streamtype", "stdout")], false).await;
        let s = session.accept().await.unwrap();
        let began = Instant::now();
        // Activity (a ping each hour) keeps it open past the timeout...
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            let p = c.ping().await;
            assert_eq!(c.next().await, Some(Frame::Ping { id: p }));
        }
        assert!(!s.writer.is_cancelled());
        // ...and silence closes it, cancelling the streams.
        s.writer.cancelled().await;
        assert!(began.elapsed() >= Duration::from_secs(5 * 3600) + IDLE_TIMEOUT);
        assert_eq!(c.next().await, None);
        assert!(session.accept().await.is_none());
    }

    #[tokio::test]
    async fn large_data_is_never_held_back_by_windows() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let mut session = Session::new(server_io);
        let mut c = TestClient::new(client_io);
        let id = c.open(&[("streamtype", "stdout")], false).await;
        let s = session.accept().await.unwrap();
        // Far beyond SPDY's 64 KiB initial window, with no WINDOW_UPDATE ever sent.
        let big = Bytes::from(vec![7u8; 1 << 20]);
        let w = s.writer.clone();
        let sender = tokio::spawn(async move {
            for _ in 0..4 {
                w.write(big.clone()).await.unwrap();
            }
            w.finish().await.unwrap();
        });
        let mut total = 0;
        loop {
            match c.next().await {
                Some(Frame::Data { stream_id, flags, data }) if stream_id == id => {
                    total += data.len();
                    if flags & FLAG_FIN != 0 {
                        break;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(total, 4 << 20);
        sender.await.unwrap();
    }
}
