//! The remote-command session (exec and attach) on an upgraded WebSocket connection: channels 0
//! stdin, 1 stdout, 2 stderr, 3 error, 4 resize, as Go's `remotecommand/websocket.go` sets them
//! up (kubelet-api-protocols.md §3.7, §3.8).

use std::pin::pin;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, trace, warn};

use crate::genericruntime::streams::{ProcessIo, TermSize, STREAM_CHANNEL_CAPACITY};
use crate::streaming::remotecommand::{Kind, Outcome, RunFn, StreamOptions, V5};

use super::codec::{decode, encode, Codec, Inbound, ResizeDecoder};
use super::{codec_for, drive, next_payload, status_for, ws_config, WsError, OUTBOUND_CAPACITY};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// Go opens all five channels whatever was requested; higher numbers are ignored.
const CHANNELS: u8 = 5;

/// Runs exec or attach on `io`, an upgraded connection whose handshake chose `protocol` (one of
/// [`super::REMOTE_COMMAND_PROTOCOLS`]): the "connected" message, the process with its streams,
/// the completion status on channel 3, Close 1000. Returns when the process has ended and the
/// connection is closed.
pub async fn remotecommand_session<S>(io: S, protocol: &'static str, opts: StreamOptions, kind: Kind, run: RunFn)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let codec = codec_for(protocol);
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config())).await;
    let (sink, stream) = ws.split();
    let (out_tx, out_rx) = mpsc::channel(OUTBOUND_CAPACITY);

    // With a TTY the terminal's output is all on stdout (ProcessIo's contract; the query
    // parser already turns stderr off, attach takes its TTY from the container spec).
    let stderr_wanted = opts.stderr && !opts.tty;
    let (stdin_tx, stdin_rx) = channel_if::<Bytes>(opts.stdin);
    let (stdout_tx, stdout_rx) = channel_if::<Bytes>(opts.stdout);
    let (stderr_tx, stderr_rx) = channel_if::<Bytes>(stderr_wanted);
    let (resize_tx, resize_rx) = channel_if::<TermSize>(opts.tty);
    // The reader only records the latest size; `forward_resizes` delivers it when the process
    // takes it. A process that never reads resizes thus cannot stall stdin (sizes in between
    // are coalesced: only the last one matters to a terminal).
    let (latest_tx, latest_rx) = if opts.tty {
        let (tx, rx) = watch::channel(None);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let process_io = ProcessIo {
        stdin: stdin_rx,
        stdout: stdout_tx,
        stderr: stderr_tx,
        resize: resize_rx,
    };

    let reader = read_loop(stream, codec, protocol == V5, stdin_tx, latest_tx);
    let main = async move {
        // The empty message on the lowest writable channel tells the client it is connected.
        let connected = if opts.stdout {
            STDOUT
        } else if stderr_wanted {
            STDERR
        } else {
            ERROR
        };
        if out_tx.send(encode(codec, connected, &[])).await.is_err() {
            debug!("websocket client gone before the process started");
        }
        let process = async {
            tokio::join!(
                run(process_io),
                pump(stdout_rx, out_tx.clone(), codec, STDOUT),
                pump(stderr_rx, out_tx.clone(), codec, STDERR),
            )
        };
        let mut process = pin!(process);
        let mut resizes = pin!(forward_resizes(latest_rx, resize_tx));
        let mut resizes_done = false;
        // The process's end ends the resizes (dropping their sender), not the other way round.
        let (outcome, (), ()) = loop {
            tokio::select! {
                r = &mut process => break r,
                () = &mut resizes, if !resizes_done => resizes_done = true,
            }
        };
        if let Outcome::Failed(e) = &outcome {
            warn!(error = %e, ?kind, "websocket remote command failed");
        }
        let status = status_for(protocol, &outcome, kind);
        if !status.is_empty() && out_tx.send(encode(codec, ERROR, &status)).await.is_err() {
            debug!("websocket client gone before the status");
        }
    };
    drive(sink, out_rx, reader, main).await;
}

/// Delivers the latest terminal size to the process, until the client's resizes end (the
/// reader dropped its sender) or the process drops its receiver.
async fn forward_resizes(latest: Option<watch::Receiver<Option<TermSize>>>, tx: Option<mpsc::Sender<TermSize>>) {
    let (Some(mut latest), Some(tx)) = (latest, tx) else {
        return;
    };
    while latest.changed().await.is_ok() {
        let size = *latest.borrow_and_update();
        if let Some(size) = size {
            if tx.send(size).await.is_err() {
                return;
            }
        }
    }
}

fn channel_if<T>(wanted: bool) -> (Option<mpsc::Sender<T>>, Option<mpsc::Receiver<T>>) {
    if wanted {
        let (tx, rx) = mpsc::channel(STREAM_CHANNEL_CAPACITY);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    }
}

/// Forwards one output stream of the process to the client until the process closes it. If the
/// client is gone, the receiver is dropped so the process sees its writes refused.
async fn pump(rx: Option<mpsc::Receiver<Bytes>>, out: mpsc::Sender<Message>, codec: Codec, channel: u8) {
    let Some(mut rx) = rx else { return };
    while let Some(chunk) = rx.recv().await {
        if chunk.is_empty() {
            continue;
        }
        if out.send(encode(codec, channel, &chunk)).await.is_err() {
            return;
        }
    }
}

/// Reads the client's messages until it closes: stdin (awaiting room in the channel, which is
/// the back-pressure towards the client), resizes (recorded in `resize`, never blocking), and
/// v5's half-close. Keeps reading after
/// stdin's EOF so pings keep being answered while the process runs.
async fn read_loop<S>(
    mut stream: futures::stream::SplitStream<WebSocketStream<S>>,
    codec: Codec,
    v5: bool,
    mut stdin: Option<mpsc::Sender<Bytes>>,
    mut resize: Option<watch::Sender<Option<TermSize>>>,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut sizes = ResizeDecoder::default();
    while let Some(payload) = next_payload(&mut stream).await? {
        match decode(codec, v5, payload)? {
            Inbound::Skip(why) => debug!(why, "websocket message skipped"),
            Inbound::Close { channel: STDIN } => stdin = None,
            Inbound::Close { channel: RESIZE } => resize = None,
            // Closing a server-to-client channel has no effect in Go either.
            Inbound::Close { channel } if channel < CHANNELS => {}
            Inbound::Close { channel } => return Err(WsError::CloseUnknownChannel { channel }),
            Inbound::Data { channel: STDIN, data } => {
                if let Some(tx) = &stdin {
                    // The process has stopped reading stdin: later input is dropped.
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        stdin = None;
                    }
                }
            }
            Inbound::Data { channel: RESIZE, data } => {
                let Some(tx) = &resize else { continue };
                match sizes.push(&data) {
                    Ok(new) => {
                        if let Some(last) = new.last() {
                            tx.send_replace(Some(*last));
                        }
                    }
                    Err(e) => {
                        // Go's resize reader stops at the first undecodable value.
                        warn!(error = %e, "terminal resizes stopped");
                        resize = None;
                    }
                }
            }
            Inbound::Data { channel, .. } => trace!(channel, "websocket message for a channel without input ignored"),
        }
    }
    Ok(())
}
