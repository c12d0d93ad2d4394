//! Exec, attach and port-forward over WebSocket (kubelet-api-protocols.md §3.7–§3.9): the
//! RFC 6455 handshake with the Kubernetes subprotocol negotiation, the channel framing of
//! `channel.k8s.io` … `v5.channel.k8s.io`, port-forward channels, and the
//! `SPDY/3.1+portforward.k8s.io` tunnel that carries a SPDY port-forward session inside binary
//! messages.
//!
//! The handshake is answered here (not by axum's `WebSocketUpgrade`) so the negotiation is
//! exactly Go's `wsstream`/`x/net/websocket`: the first client-listed protocol the server
//! supports, "" when the client offers none, 403 when nothing matches (kubectl's cue to fall
//! back to SPDY). After the 101, tokio-tungstenite runs on hyper's upgraded connection.

mod codec;
mod exec;
mod portforward;

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use futures::future::OptionFuture;
use futures::stream::SplitSink;
use futures::SinkExt;
use http::header::{HeaderName, HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, protocol::frame::coding::CloseCode, protocol::CloseFrame, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, warn};

use super::remotecommand::{
    self, DialFn, Kind, QueryError, RunFn, StreamOptions, BASE64_V1, BASE64_V4, PORT_FORWARD_TUNNEL, V1, V4, V5,
};

pub use codec::{decode, encode, Codec, CodecError, Inbound, ResizeDecoder, STREAM_CLOSE};
pub use exec::remotecommand_session;
pub use portforward::{port_forward_session, tunnel_session};

/// Remote-command subprotocols ("" is binary with v1-style errors).
pub const REMOTE_COMMAND_PROTOCOLS: [&str; 6] = ["", V1, BASE64_V1, V4, BASE64_V4, V5];
/// Port-forward subprotocols with one channel pair per `?port=`.
pub const PORT_FORWARD_PROTOCOLS: [&str; 3] = ["", V4, BASE64_V4];

/// Largest client message or frame accepted: x/net/websocket's `DefaultMaxPayloadBytes`. A
/// larger one ends the connection, as it does in Go.
pub const MAX_MESSAGE_SIZE: usize = 32 << 20;
/// Encoded messages waiting for the socket (per connection).
const OUTBOUND_CAPACITY: usize = 16;
/// After our Close frame, how long the client has to answer it before the connection is
/// dropped. Waiting for the reply lets the socket close with a FIN rather than a reset (which
/// could discard the status still unread on the client's side). A network linger, like a TCP
/// timeout: real time, not scaled by `--time-scale`.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// What went wrong in a WebSocket exchange. The handshake variants carry Go's texts: they are
/// the bodies of the refusals.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("bad method")]
    BadMethod,
    #[error("not websocket protocol")]
    NotWebSocket,
    #[error("mismatch challenge/response")]
    MissingKey,
    #[error("missing or bad WebSocket Version")]
    BadVersion,
    #[error("requested protocol(s) are not supported: {requested:?}; supports {supported:?}")]
    UnsupportedProtocol {
        requested: Vec<String>,
        supported: Vec<&'static str>,
    },
    #[error("{source}")]
    Ports {
        #[source]
        source: QueryError,
    },
    #[error("{count} ports requested, at most {MAX_PORTS} fit the channel numbers")]
    TooManyPorts { count: usize },
    #[error("upgrading the connection")]
    Upgrade {
        #[source]
        source: hyper::Error,
    },
    #[error("reading from the websocket")]
    Receive {
        #[source]
        source: tungstenite::Error,
    },
    #[error("writing to the websocket")]
    Send {
        #[source]
        source: tungstenite::Error,
    },
    #[error("close signal for channel {channel}, which does not exist")]
    CloseUnknownChannel { channel: u8 },
    #[error(transparent)]
    Decode(#[from] CodecError),
    #[error("text message in the SPDY tunnel (only binary messages carry SPDY bytes)")]
    TunnelText,
    #[error("writing into the SPDY tunnel")]
    Tunnel {
        #[source]
        source: std::io::Error,
    },
}

/// Port-forward channels are bytes: port i uses 2i and 2i+1.
pub const MAX_PORTS: usize = 128;

/// `Upgrade: websocket` (case-insensitive) and a `Connection` header containing `upgrade`
/// (Go's `wsstream.IsWebSocketRequest`).
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    upgrade
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("upgrade"))
}

/// A WebSocket upgrade that offers the port-forward tunnel protocol (Go's
/// `IsWebSocketRequestWithTunnelingProtocol`): such a request needs no `?port=`.
pub fn is_port_forward_tunnel(headers: &HeaderMap) -> bool {
    is_websocket_upgrade(headers) && offered_protocols(headers).iter().any(|p| p == PORT_FORWARD_TUNNEL)
}

/// Exec or attach over WebSocket: the handshake (refusals as Go answers them), then the session
/// on the upgraded connection, spawned.
pub fn serve_remotecommand<B>(mut req: Request<B>, opts: StreamOptions, kind: Kind, run: RunFn) -> Response {
    let accepted = match handshake(&req, &REMOTE_COMMAND_PROTOCOLS) {
        Ok(a) => a,
        Err(refusal) => return *refusal,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let protocol = accepted.protocol;
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => remotecommand_session(TokioIo::new(upgraded), protocol, opts, kind, run).await,
            Err(source) => warn!(error = %WsError::Upgrade { source }, "websocket remote command not started"),
        }
    });
    accepted.response
}

/// Port-forward over WebSocket. A request offering `SPDY/3.1+portforward.k8s.io` gets the SPDY
/// tunnel (which takes its ports from the SPDY streams and ignores `ports`); any other gets one
/// channel pair per port of `ports` (the parsed `?port=`; empty is answered 400 as Go's
/// "query parameter is required", so a caller may pass what `parse_ports` gave or nothing).
pub fn serve_port_forward<B>(mut req: Request<B>, ports: Vec<u16>, dial: DialFn) -> Response {
    if is_port_forward_tunnel(req.headers()) {
        let accepted = match handshake(&req, &[PORT_FORWARD_TUNNEL]) {
            Ok(a) => a,
            Err(refusal) => return *refusal,
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    tunnel_session(TokioIo::new(upgraded), move |io| {
                        super::spdy::port_forward_session(io, dial)
                    })
                    .await
                }
                Err(source) => warn!(error = %WsError::Upgrade { source }, "websocket port-forward tunnel not started"),
            }
        });
        return accepted.response;
    }
    // Go checks the ports before the handshake (`NewV4Options`).
    if ports.is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            &[],
            &WsError::Ports {
                source: QueryError::NoPorts,
            },
        );
    }
    if ports.len() > MAX_PORTS {
        return refuse(
            StatusCode::BAD_REQUEST,
            &[],
            &WsError::TooManyPorts { count: ports.len() },
        );
    }
    let accepted = match handshake(&req, &PORT_FORWARD_PROTOCOLS) {
        Ok(a) => a,
        Err(refusal) => return *refusal,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let protocol = accepted.protocol;
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => port_forward_session(TokioIo::new(upgraded), protocol, ports, dial).await,
            Err(source) => warn!(error = %WsError::Upgrade { source }, "websocket port-forward not started"),
        }
    });
    accepted.response
}

/// A handshake that passed: the chosen protocol and the 101 to send.
struct Accepted {
    protocol: &'static str,
    response: Response,
}

/// The client's `Sec-WebSocket-Protocol` list, in order (all header lines, comma-separated).
fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The first client-listed protocol in `supported`; a client that lists none asks for "".
fn choose_protocol(offered: &[String], supported: &[&'static str]) -> Option<&'static str> {
    if offered.is_empty() {
        return supported.iter().copied().find(|s| s.is_empty());
    }
    offered
        .iter()
        .find_map(|o| supported.iter().copied().find(|s| *s == o.as_str()))
}

/// x/net/websocket's server handshake (`hybiServerHandshaker.ReadHandshake`) and wsstream's
/// protocol choice, in Go's order: method (405), upgrade headers, key, version (400), protocol
/// (403, empty body).
fn handshake<B>(req: &Request<B>, supported: &[&'static str]) -> Result<Accepted, Box<Response>> {
    let headers = req.headers();
    if req.method() != Method::GET {
        return Err(Box::new(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            &[],
            &WsError::BadMethod,
        )));
    }
    if !is_websocket_upgrade(headers) {
        return Err(Box::new(refuse(StatusCode::BAD_REQUEST, &[], &WsError::NotWebSocket)));
    }
    let key = match headers.get("sec-websocket-key") {
        Some(k) if !k.is_empty() => k.as_bytes(),
        _ => return Err(Box::new(refuse(StatusCode::BAD_REQUEST, &[], &WsError::MissingKey))),
    };
    if headers.get("sec-websocket-version").map(|v| v.as_bytes()) != Some(b"13") {
        let version = (
            HeaderName::from_static("sec-websocket-version"),
            HeaderValue::from_static("13"),
        );
        return Err(Box::new(refuse(
            StatusCode::BAD_REQUEST,
            &[version],
            &WsError::BadVersion,
        )));
    }
    let offered = offered_protocols(headers);
    let Some(protocol) = choose_protocol(&offered, supported) else {
        let e = WsError::UnsupportedProtocol {
            requested: offered,
            supported: supported.to_vec(),
        };
        debug!(error = %e, "websocket upgrade refused");
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::FORBIDDEN;
        return Err(Box::new(r));
    };
    let accept = tungstenite::handshake::derive_accept_key(key);
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        // base64 is always a valid header value; kept as an answer rather than a panic.
        return Err(Box::new(refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            &[],
            &WsError::MissingKey,
        )));
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(SEC_WEBSOCKET_ACCEPT, accept);
    // Go writes an empty `Sec-WebSocket-Protocol:` when the client offered none; RFC 6455
    // clients (tungstenite, browsers) fail the connection on a protocol they did not ask for,
    // so keel leaves the header out then.
    if !protocol.is_empty() {
        h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    }
    Ok(Accepted { protocol, response })
}

/// A refusal before the upgrade: the status, extra headers and the error text as the body.
fn refuse(status: StatusCode, headers: &[(HeaderName, HeaderValue)], e: &WsError) -> Response {
    debug!(%status, error = %e, "websocket upgrade refused");
    let mut r = Response::new(Body::from(e.to_string()));
    *r.status_mut() = status;
    for (k, v) in headers {
        r.headers_mut().insert(k.clone(), v.clone());
    }
    r
}

/// The codec a negotiated protocol uses.
fn codec_for(protocol: &str) -> Codec {
    if protocol == BASE64_V1 || protocol == BASE64_V4 {
        Codec::Base64
    } else {
        Codec::Binary
    }
}

/// tungstenite's limits: Go's 32 MiB per frame, and per message.
fn ws_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_SIZE))
        .max_frame_size(Some(MAX_MESSAGE_SIZE))
}

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;

/// Sends what the session produces, then the Close frame (code 1000) once every sender is gone.
async fn write_loop<S>(mut sink: Sink<S>, mut out: mpsc::Receiver<Message>) -> Result<(), WsError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(m) = out.recv().await {
        sink.send(m).await.map_err(|source| WsError::Send { source })?;
    }
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    sink.send(Message::Close(Some(close)))
        .await
        .map_err(|source| WsError::Send { source })
}

/// Runs a session's three parts: `reader` (the client's messages), `main` (the process or the
/// forwards, producing messages through the senders of `out`) and the writer. As in Go's
/// wsstream, the client's side ending (Close, EOF, a protocol error) ends the connection: the
/// writer is dropped, so the process sees its output refused and its stdin at EOF, and `main` is
/// still run to its end. `main` finishing (every sender dropped) lets the writer send Close 1000;
/// then the client has `CLOSE_LINGER` to answer before the socket is dropped.
async fn drive<S, R, M>(sink: Sink<S>, out: mpsc::Receiver<Message>, reader: R, main: M)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    R: Future<Output = Result<(), WsError>>,
    M: Future<Output = ()>,
{
    let mut reader = Some(Box::pin(reader));
    let mut writer = Some(Box::pin(write_loop(sink, out)));
    let mut main = pin!(main);
    let mut main_done = false;
    while !(main_done && writer.is_none()) {
        tokio::select! {
            end = OptionFuture::from(reader.as_mut()), if reader.is_some() => {
                reader = None;
                writer = None;
                match end {
                    Some(Err(e)) => warn!(error = %e, "websocket connection dropped"),
                    _ => debug!("websocket client finished"),
                }
            }
            end = OptionFuture::from(writer.as_mut()), if writer.is_some() => {
                writer = None;
                if let Some(Err(e)) = end {
                    debug!(error = %e, "websocket client gone");
                }
            }
            () = &mut main, if !main_done => main_done = true,
        }
    }
    if let Some(reader) = reader {
        if let Ok(Err(e)) = tokio::time::timeout(CLOSE_LINGER, reader).await {
            debug!(error = %e, "websocket close handshake");
        }
    }
}

/// The next data message's payload; `None` once the client closed or went away. Pings are
/// answered by tungstenite while reading; text and binary are alike here (the codec decides).
async fn next_payload<S>(
    stream: &mut futures::stream::SplitStream<WebSocketStream<S>>,
) -> Result<Option<bytes::Bytes>, WsError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::StreamExt;
    loop {
        match stream.next().await {
            None => return Ok(None),
            // Reading on sends tungstenite's Close reply, then ends with ConnectionClosed.
            Some(Ok(Message::Close(_))) => continue,
            Some(Ok(Message::Binary(b))) => return Ok(Some(b)),
            Some(Ok(Message::Text(t))) => return Ok(Some(t.into())),
            Some(Ok(_)) => continue,
            Some(Err(e)) if client_gone(&e) => return Ok(None),
            Some(Err(source)) => return Err(WsError::Receive { source }),
        }
    }
}

/// The client closed, or dropped the connection without a Close frame: the end of its
/// messages, not a failure (Go's read loop does not log io.EOF either).
fn client_gone(e: &tungstenite::Error) -> bool {
    matches!(
        e,
        tungstenite::Error::ConnectionClosed
            | tungstenite::Error::AlreadyClosed
            | tungstenite::Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake)
    )
}

/// Whether a protocol reports completion as a v4 JSON status.
fn v4_status(protocol: &str) -> bool {
    protocol == V4 || protocol == BASE64_V4 || protocol == V5
}

/// The completion status a protocol writes on the error channel (empty: nothing to write).
fn status_for(protocol: &str, outcome: &remotecommand::Outcome, kind: Kind) -> Vec<u8> {
    if v4_status(protocol) {
        remotecommand::status_v4(outcome, kind)
    } else {
        remotecommand::status_legacy(outcome, kind)
    }
}

#[cfg(test)]
mod tests;
