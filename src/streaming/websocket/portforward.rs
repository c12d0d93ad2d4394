//! Port-forward over WebSocket: one channel pair per `?port=` (data 2i, error 2i+1, each opened
//! by the port in 2 bytes little-endian; Go's `portforward/websocket.go`), and the
//! `SPDY/3.1+portforward.k8s.io` tunnel, which carries a SPDY session's bytes in binary messages
//! (KEP-4006; kubelet-api-protocols.md §3.7, §3.8).

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, warn};

use crate::genericruntime::streams::{BoxedIo, STREAM_CHANNEL_CAPACITY};
use crate::streaming::remotecommand::DialFn;

use super::codec::{decode, encode, Codec, Inbound};
use super::{client_gone, codec_for, drive, next_payload, ws_config, WsError, OUTBOUND_CAPACITY};

/// Bytes read from a forwarded connection per message.
const FORWARD_CHUNK: usize = 32 * 1024;
/// Once the client's side of a forward has ended, how long the pod's side may still answer:
/// containerd's port-forward waits one second for the other direction. A network linger: real
/// time, not scaled by `--time-scale`.
const FORWARD_LINGER: Duration = Duration::from_secs(1);
/// The in-memory pipe between the WebSocket messages and the tunneled SPDY session.
const TUNNEL_BUFFER: usize = 64 * 1024;

/// Runs a channel port-forward on `io`, an upgraded connection whose handshake chose `protocol`
/// (one of [`super::PORT_FORWARD_PROTOCOLS`]): the port prefixes, one connection per port
/// through `dial`, Close 1000 when every forward has ended. `ports` holds at most
/// [`super::MAX_PORTS`] ports (later ones get no channel).
pub async fn port_forward_session<S>(io: S, protocol: &'static str, ports: Vec<u16>, dial: DialFn)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let codec = codec_for(protocol);
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config())).await;
    let (sink, stream) = ws.split();
    let (out_tx, out_rx) = mpsc::channel(OUTBOUND_CAPACITY);

    let ports: Vec<u16> = ports.into_iter().take(super::MAX_PORTS).collect();
    let mut inputs = Vec::with_capacity(ports.len());
    let mut forwards = Vec::with_capacity(ports.len());
    for (index, port) in ports.iter().copied().enumerate() {
        let (tx, rx) = mpsc::channel(STREAM_CHANNEL_CAPACITY);
        inputs.push(Some(tx));
        // MAX_PORTS keeps 2 * index + 1 within a byte.
        let data = (2 * index) as u8;
        forwards.push(forward(port, data, rx, dial.clone(), out_tx.clone(), codec));
    }

    let reader = read_loop(stream, codec, inputs);
    let main = async move {
        // Go writes every port prefix, on both channels, before any forward starts.
        for (index, port) in ports.iter().enumerate() {
            let data = (2 * index) as u8;
            for channel in [data, data + 1] {
                if out_tx.send(encode(codec, channel, &port.to_le_bytes())).await.is_err() {
                    debug!("websocket port-forward client gone");
                }
            }
        }
        drop(out_tx);
        futures::future::join_all(forwards).await;
    };
    drive(sink, out_rx, reader, main).await;
}

/// One forwarded port: dial, copy both ways, and report a failure as text on the error channel
/// (`data + 1`).
async fn forward(
    port: u16,
    data: u8,
    mut from_client: mpsc::Receiver<Bytes>,
    dial: DialFn,
    out: mpsc::Sender<Message>,
    codec: Codec,
) {
    let result = match dial(port).await {
        Ok(conn) => copy(conn, &mut from_client, &out, codec, data)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.message),
    };
    if let Err(msg) = result {
        // Go: "error forwarding port %d to pod %s, uid %v: %v"; the pod is the dialer's to name.
        let msg = format!("error forwarding port {port} to pod: {msg}");
        warn!(port, error = %msg, "websocket port-forward failed");
        if out.send(encode(codec, data + 1, msg.as_bytes())).await.is_err() {
            debug!(port, "websocket port-forward client gone before the error");
        }
    }
}

/// Copies between the client's data channel and the pod's connection. The pod closing its side
/// ends the forward; the client's side ending (only when the WebSocket closes: there is no
/// half-close here) shuts the pod's write side and leaves it `FORWARD_LINGER` to finish.
async fn copy(
    conn: BoxedIo,
    from_client: &mut mpsc::Receiver<Bytes>,
    out: &mpsc::Sender<Message>,
    codec: Codec,
    data: u8,
) -> std::io::Result<()> {
    let (mut rd, mut wr) = tokio::io::split(conn);
    let upstream = async {
        while let Some(chunk) = from_client.recv().await {
            wr.write_all(&chunk).await?;
        }
        wr.shutdown().await
    };
    let downstream = async {
        let mut buf = vec![0u8; FORWARD_CHUNK];
        loop {
            let n = rd.read(&mut buf).await?;
            if n == 0 || out.send(encode(codec, data, &buf[..n])).await.is_err() {
                return Ok(());
            }
        }
    };
    let mut upstream = std::pin::pin!(upstream);
    let mut downstream = std::pin::pin!(downstream);
    tokio::select! {
        r = &mut downstream => r,
        r = &mut upstream => {
            r?;
            tokio::time::timeout(FORWARD_LINGER, downstream).await.unwrap_or(Ok(()))
        }
    }
}

/// Routes the client's data channels to their forwards; error channels and unknown channels take
/// no input.
async fn read_loop<S>(
    mut stream: futures::stream::SplitStream<WebSocketStream<S>>,
    codec: Codec,
    mut inputs: Vec<Option<mpsc::Sender<Bytes>>>,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(payload) = next_payload(&mut stream).await? {
        match decode(codec, false, payload)? {
            Inbound::Data { channel, data } if channel % 2 == 0 && !data.is_empty() => {
                let Some(slot) = inputs.get_mut(usize::from(channel / 2)) else {
                    continue;
                };
                if let Some(tx) = slot {
                    // That forward has ended: one connection per port, later data is dropped.
                    if tx.send(data).await.is_err() {
                        *slot = None;
                    }
                }
            }
            Inbound::Skip(why) => debug!(why, "websocket message skipped"),
            _ => {}
        }
    }
    Ok(())
}

/// Runs `session` (the SPDY port-forward session) on a byte stream made of the WebSocket's
/// binary messages, in both directions, chunked as they come. A text message is a protocol error
/// (Go's tunneling connection refuses it). Close 1000 when the session ends.
pub async fn tunnel_session<S, F, Fut>(io: S, session: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(DuplexStream) -> Fut,
    Fut: Future<Output = ()>,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config())).await;
    let (sink, mut stream) = ws.split();
    let (out_tx, out_rx) = mpsc::channel(OUTBOUND_CAPACITY);
    let (ours, theirs) = tokio::io::duplex(TUNNEL_BUFFER);
    let (mut our_rd, mut our_wr) = tokio::io::split(ours);

    let reader = async move {
        let result = async {
            use futures::StreamExt as _;
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(Message::Binary(b)) => our_wr
                        .write_all(&b)
                        .await
                        .map_err(|source| WsError::Tunnel { source })?,
                    Ok(Message::Text(_)) => return Err(WsError::TunnelText),
                    // Reading on sends tungstenite's Close reply, then ends with ConnectionClosed.
                    Ok(_) => {}
                    Err(e) if client_gone(&e) => break,
                    Err(source) => return Err(WsError::Receive { source }),
                }
            }
            Ok(())
        }
        .await;
        // The session reads EOF: the client is done.
        if let Err(e) = our_wr.shutdown().await {
            debug!(error = %e, "tunnel shutdown");
        }
        result
    };
    let main = async move {
        let pump = async move {
            let mut buf = vec![0u8; TUNNEL_BUFFER];
            loop {
                match our_rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if out_tx
                            .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        };
        tokio::join!(session(theirs), pump);
    };
    drive(sink, out_rx, reader, main).await;
}
