//! The streaming server of `keel cri`: what a CRI runtime's `Exec`, `Attach` and `PortForward`
//! URLs point at (the kubelet's `pkg/kubelet/cri/streaming`, which containerd embeds too).
//!
//! A streaming RPC stores its request under a random token and answers
//! `http://ADDR/{exec,attach,portforward}/TOKEN`. The first request to that URL consumes the
//! token (single use; unknown, used or expired tokens 404) and is served over SPDY/3.1 or
//! WebSocket by the same protocol code as the kubelet server's `/exec` (`exec::local`), on the
//! backend's in-process streams. Tokens live one minute and at most 1,000 wait at once, as in
//! the kubelet's request cache; beyond that the RPC fails with RESOURCE_EXHAUSTED.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use base64::Engine;
use http::StatusCode;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::exec::local;
use super::remotecommand::{parse_ports, Kind, StreamOptions};
use super::websocket;
use crate::genericruntime::seam::{cri, Code, RuntimeError};
use crate::genericruntime::streams::LocalStreams;

/// How long a token stays valid (`CacheTTL`).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Tokens waiting at once (`MaxInFlight`).
pub const MAX_IN_FLIGHT: usize = 1000;
/// Random bytes per token (`tokenLen`), base64url without padding.
const TOKEN_BYTES: usize = 8;

/// Errors starting the streaming server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding the streaming server to {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A streaming request waiting for its client.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamRequest {
    Exec(cri::ExecRequest),
    Attach(cri::AttachRequest),
    PortForward(cri::PortForwardRequest),
}

impl StreamRequest {
    fn path(&self) -> &'static str {
        match self {
            StreamRequest::Exec(_) => "exec",
            StreamRequest::Attach(_) => "attach",
            StreamRequest::PortForward(_) => "portforward",
        }
    }
}

/// Pending requests by token.
#[derive(Debug, Default)]
pub struct RequestCache {
    entries: Mutex<HashMap<String, (StreamRequest, Instant)>>,
}

impl RequestCache {
    /// Stores `req` under a fresh token; RESOURCE_EXHAUSTED when too many wait.
    pub fn insert(&self, op: &'static str, req: StreamRequest) -> Result<String, RuntimeError> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (_, expires)| *expires > now);
        if entries.len() >= MAX_IN_FLIGHT {
            return Err(RuntimeError::new(
                op,
                Code::ResourceExhausted,
                "maximum number of in-flight requests exceeded",
            ));
        }
        let token = loop {
            let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; TOKEN_BYTES]>());
            if !entries.contains_key(&t) {
                break t;
            }
        };
        entries.insert(token.clone(), (req, now + TOKEN_TTL));
        Ok(token)
    }

    /// Takes the request out (single use); `None` if unknown or expired.
    pub fn consume(&self, token: &str) -> Option<StreamRequest> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (req, expires) = entries.remove(token)?;
        (expires > Instant::now()).then_some(req)
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the gRPC service holds: issues URLs on the bound server.
#[derive(Clone, Debug)]
pub struct UrlIssuer {
    base: String,
    cache: Arc<RequestCache>,
}

impl UrlIssuer {
    /// The one-shot URL for `req`.
    pub fn issue(&self, op: &'static str, req: StreamRequest) -> Result<String, RuntimeError> {
        let path = req.path();
        let token = self.cache.insert(op, req)?;
        Ok(format!("{}/{path}/{token}", self.base))
    }
}

/// A bound streaming server.
pub struct StreamingServer {
    listener: TcpListener,
    addr: SocketAddr,
    cache: Arc<RequestCache>,
}

impl StreamingServer {
    pub async fn bind(addr: SocketAddr) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind { addr, source })?;
        Ok(Self {
            listener,
            addr,
            cache: Arc::default(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn issuer(&self) -> UrlIssuer {
        UrlIssuer {
            base: format!("http://{}", self.addr),
            cache: self.cache.clone(),
        }
    }

    /// Serves until `shutdown`; streams already upgraded run on until they end.
    pub async fn serve(self, streams: Arc<dyn LocalStreams>, shutdown: CancellationToken) {
        info!(address = %self.addr, "CRI streaming server listening");
        let app = router(Served {
            cache: self.cache,
            streams,
        });
        // Exec and attach relay small frames to the kubelet: no Nagle delay waiting for its
        // delayed ACK (Go's servers, containerd's among them, set TCP_NODELAY on every socket).
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                debug!(error = %e, "setting TCP_NODELAY on a CRI streaming connection");
            }
        });
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            warn!(error = %e, "CRI streaming server stopped with an error");
        }
    }
}

#[derive(Clone)]
struct Served {
    cache: Arc<RequestCache>,
    streams: Arc<dyn LocalStreams>,
}

fn router(state: Served) -> Router {
    Router::new()
        .route("/exec/{token}", get(serve_exec).post(serve_exec))
        .route("/attach/{token}", get(serve_attach).post(serve_attach))
        .route("/portforward/{token}", get(serve_port_forward).post(serve_port_forward))
        .with_state(state)
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}

async fn serve_exec(State(s): State<Served>, Path(token): Path<String>, req: Request) -> Response {
    let Some(StreamRequest::Exec(r)) = s.cache.consume(&token) else {
        return not_found();
    };
    let options = StreamOptions {
        stdin: r.stdin,
        stdout: r.stdout,
        stderr: r.stderr,
        tty: r.tty,
    };
    local::remote_command(req, s.streams, Kind::Exec, r.container_id, r.cmd, options)
}

async fn serve_attach(State(s): State<Served>, Path(token): Path<String>, req: Request) -> Response {
    let Some(StreamRequest::Attach(r)) = s.cache.consume(&token) else {
        return not_found();
    };
    let options = StreamOptions {
        stdin: r.stdin,
        stdout: r.stdout,
        stderr: r.stderr,
        tty: r.tty,
    };
    local::remote_command(req, s.streams, Kind::Attach, r.container_id, Vec::new(), options)
}

async fn serve_port_forward(State(s): State<Served>, Path(token): Path<String>, req: Request) -> Response {
    let Some(StreamRequest::PortForward(r)) = s.cache.consume(&token) else {
        return not_found();
    };
    // WebSocket clients name their ports in the query (one channel pair each); the request's
    // ports stand in when the query has none. SPDY streams name their port in their headers.
    let ports = if websocket::is_websocket_upgrade(req.headers()) && !websocket::is_port_forward_tunnel(req.headers()) {
        match parse_ports(req.uri().query().unwrap_or("")) {
            Ok(p) => p,
            Err(_) => r.port.iter().filter_map(|p| u16::try_from(*p).ok()).collect(),
        }
    } else {
        Vec::new()
    };
    local::port_forward(req, s.streams, r.pod_sandbox_id, ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(id: &str) -> StreamRequest {
        StreamRequest::Exec(cri::ExecRequest {
            container_id: id.into(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_single_use_and_expire_after_a_minute() {
        let cache = RequestCache::default();
        let t1 = cache.insert("Exec", exec("a")).unwrap();
        let t2 = cache.insert("Exec", exec("b")).unwrap();
        assert_ne!(t1, t2);
        assert_eq!(t1.len(), 11, "8 bytes, base64url without padding");
        assert_eq!(cache.consume(&t1), Some(exec("a")));
        assert_eq!(cache.consume(&t1), None, "second use");
        tokio::time::advance(TOKEN_TTL + Duration::from_millis(1)).await;
        assert_eq!(cache.consume(&t2), None, "expired");
        assert_eq!(cache.consume("nonsense"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_a_thousand_wait_and_expired_ones_make_room() {
        let cache = RequestCache::default();
        for _ in 0..MAX_IN_FLIGHT {
            cache.insert("Exec", exec("a")).unwrap();
        }
        let e = cache.insert("Exec", exec("a")).unwrap_err();
        assert_eq!(e.code, Code::ResourceExhausted);
        tokio::time::advance(TOKEN_TTL).await;
        cache.insert("Exec", exec("a")).unwrap();
        assert_eq!(cache.len(), 1);
    }

    /// Exec writes `ID:ARGV` and exits 7.
    struct Echo;

    #[async_trait::async_trait]
    impl LocalStreams for Echo {
        async fn exec(
            &self,
            container_id: &str,
            cmd: Vec<String>,
            _tty: bool,
            mut io: crate::genericruntime::streams::ProcessIo,
        ) -> Result<i32, RuntimeError> {
            if let Some(out) = io.stdout.take() {
                let _ = out.send(format!("{container_id}:{}", cmd.join(" ")).into()).await;
            }
            Ok(7)
        }

        async fn attach(
            &self,
            _: &str,
            _: bool,
            _: crate::genericruntime::streams::ProcessIo,
        ) -> Result<(), RuntimeError> {
            Ok(())
        }

        async fn port_forward(&self, _: &str, _: u16) -> Result<crate::genericruntime::streams::BoxedIo, RuntimeError> {
            Err(RuntimeError::not_found("PortForward", "no ports"))
        }
    }

    #[tokio::test]
    async fn websocket_exec_through_a_token_then_the_token_is_spent() {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::Message;

        let server = StreamingServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let issuer = server.issuer();
        let shutdown = CancellationToken::new();
        let _stop = shutdown.clone().drop_guard();
        tokio::spawn(server.serve(Arc::new(Echo), shutdown.clone()));
        let url = issuer
            .issue(
                "Exec",
                StreamRequest::Exec(cri::ExecRequest {
                    container_id: "c1".into(),
                    cmd: vec!["echo".into(), "hi".into()],
                    stdout: true,
                    ..Default::default()
                }),
            )
            .unwrap();
        let mut req = url.replace("http://", "ws://").into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let (mut stdout, mut status) = (Vec::new(), Vec::new());
        while let Some(Ok(m)) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap() {
            if let Message::Binary(b) = m {
                match b.first() {
                    Some(1) => stdout.extend_from_slice(&b[1..]),
                    Some(3) => status.extend_from_slice(&b[1..]),
                    _ => {}
                }
            }
        }
        assert_eq!(String::from_utf8_lossy(&stdout), "c1:echo hi");
        let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
        assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
        assert_eq!(status["details"]["causes"][0]["message"], "7", "{status}");

        // Used once: the same URL is gone.
        let mut req = url.replace("http://", "ws://").into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), StatusCode::NOT_FOUND),
            other => panic!("second use: {other:?}"),
        }
    }

    /// Accepted streaming connections have TCP_NODELAY (small SPDY frames to the kubelet).
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let server = StreamingServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let _stop = shutdown.clone().drop_guard();
        tokio::spawn(server.serve(Arc::new(Echo), shutdown.clone()));
        // A silent client: the server holds the connection, waiting for a request.
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let client_addr = client.local_addr().unwrap();
        let nodelay = crate::streaming::server::nodelay_of(addr, client_addr).await;
        assert_eq!(nodelay, Some(true), "the accepted socket's TCP_NODELAY");
    }

    #[tokio::test]
    async fn urls_name_the_kind_and_the_bound_port() {
        let server = StreamingServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let port = server.local_addr().port();
        assert_ne!(port, 0);
        let url = server
            .issuer()
            .issue(
                "PortForward",
                StreamRequest::PortForward(cri::PortForwardRequest {
                    pod_sandbox_id: "s".into(),
                    port: vec![80],
                }),
            )
            .unwrap();
        assert!(
            url.starts_with(&format!("http://127.0.0.1:{port}/portforward/")),
            "{url}"
        );
    }
}
