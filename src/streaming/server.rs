//! The kubelet server's listener (kubelet-api-protocols.md §1.1): HTTPS on `address:port`, one
//! hyper HTTP/1.1 connection per TLS connection (with upgrades, for exec, attach and
//! port-forward), every route behind the auth filter, unknown paths 404.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::{middleware, Extension, Router};
use http::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::auth::{self, Auth, AuthError, PeerCertificates};
use super::tls::{self, TlsError};
use super::{exec, healthz, logs, metrics, pods, stats, AppState};

/// Go's `MaxHeaderBytes` (1 MiB): hyper's read buffer bounds the request head.
const MAX_HEADER_BYTES: usize = 1 << 20;
/// Go's `IdleTimeout` (90 s). hyper has no idle timeout; its header read timeout (which also
/// runs while a kept-alive connection waits for the next request head) stands in for it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// A TLS handshake that takes longer is dropped (a stuck client must not hold a task).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Starting the kubelet server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("preparing TLS for the kubelet server: {source}")]
    Tls {
        #[source]
        source: TlsError,
    },
    #[error("setting up authentication/authorization: {source}")]
    Auth {
        #[source]
        source: AuthError,
    },
    #[error("binding the kubelet server to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the server knows about a request's connection (a request extension).
#[derive(Clone, Debug)]
pub struct Connection {
    pub remote: SocketAddr,
    pub peer_certificates: Option<PeerCertificates>,
}

/// The routes of every area behind the auth filter; unknown paths 404 without authentication
/// (go-restful answers 404 before its filters).
pub fn router(state: AppState, auth: Arc<Auth>) -> Router {
    Router::new()
        .merge(healthz::routes())
        .merge(pods::routes())
        .merge(exec::routes())
        .merge(logs::routes())
        .merge(stats::routes())
        .merge(metrics::routes())
        .route_layer(middleware::from_fn_with_state(auth, auth::filter))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}

/// A bound kubelet server, ready to serve.
pub struct KubeletServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
}

impl KubeletServer {
    /// Prepares TLS and auth and binds `address:port` (errors are fatal at start).
    pub async fn bind(state: AppState) -> Result<Self, ServerError> {
        Self::bind_with(state, None).await
    }

    /// As `bind`, serving the certificate `serving` resolves at each handshake (serverTLSBootstrap).
    pub async fn bind_with(
        state: AppState,
        serving: Option<Arc<dyn rustls::server::ResolvesServerCert>>,
    ) -> Result<Self, ServerError> {
        let core = state.core.clone();
        let cfg = &core.cfg;
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let tls_config = tls::server_config_with(cfg, &hostname, &core.node_ips, serving)
            .map_err(|source| ServerError::Tls { source })?;
        let auth = Auth::from_config(cfg, core.client.clone()).map_err(|source| ServerError::Auth { source })?;
        let addr = SocketAddr::new(cfg.address, cfg.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Self {
            listener,
            acceptor: TlsAcceptor::from(tls_config),
            app: router(state, Arc::new(auth)),
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown`, then gives open connections a short grace to finish.
    pub async fn serve(self, shutdown: CancellationToken) {
        if let Some(a) = self.local_addr() {
            info!(address = %a, "kubelet server listening (HTTPS)");
        }
        let tracker = TaskTracker::new();
        loop {
            let (tcp, remote) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        warn!(error = %e, "accepting a kubelet server connection");
                        tokio::time::sleep(ACCEPT_RETRY).await;
                        continue;
                    }
                },
            };
            // Streams carry small interactive frames (an exec's keystrokes, a `true`'s exit
            // status): no Nagle delay waiting for the peer's delayed ACK.
            if let Err(e) = tcp.set_nodelay(true) {
                debug!(error = %e, "setting TCP_NODELAY on a kubelet server connection");
            }
            let acceptor = self.acceptor.clone();
            let app = self.app.clone();
            let stop = shutdown.clone();
            tracker.spawn(serve_connection(tcp, remote, acceptor, app, stop));
        }
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
            debug!("kubelet server connections still open at shutdown; dropped");
        }
        info!("kubelet server stopped");
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    shutdown: CancellationToken,
) {
    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(%remote, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!(%remote, "TLS handshake timed out");
            return;
        }
    };
    let peer_certificates = stream
        .get_ref()
        .1
        .peer_certificates()
        .filter(|c| !c.is_empty())
        .map(|c| PeerCertificates(Arc::new(c.iter().map(|c| c.clone().into_owned()).collect())));
    let conn_info = Connection {
        remote,
        peer_certificates,
    };
    let svc = TowerToHyperService::new(app.layer(Extension(conn_info)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(IDLE_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    let conn = builder.serve_connection(TokioIo::new(stream), svc).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        debug!(%remote, error = %e, "kubelet server connection ended with an error");
    }
}

/// The connected TCP sockets of this process: local address, peer address, TCP_NODELAY.
#[cfg(test)]
#[allow(unsafe_code)] // borrowing descriptors by number, in a test only
pub(crate) fn tcp_sockets() -> Vec<(SocketAddr, SocketAddr, bool)> {
    use std::os::fd::BorrowedFd;
    let fds = std::fs::read_dir("/proc/self/fd").into_iter().flatten().flatten();
    fds.filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|fd| {
            // SAFETY: only duplicated; a descriptor closed meanwhile makes the dup fail (or
            // duplicates whatever took its number, which the checks below skip if not a socket).
            let owned = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned().ok()?;
            let s = std::net::TcpStream::from(owned);
            Some((s.local_addr().ok()?, s.peer_addr().ok()?, s.nodelay().ok()?))
        })
        .collect()
}

/// TCP_NODELAY of this process's socket from `local` to `peer`, once it shows up (the server
/// accepts it on its own task): None if it does not within 5 s.
#[cfg(test)]
pub(crate) async fn nodelay_of(local: SocketAddr, peer: SocketAddr) -> Option<bool> {
    for _ in 0..500 {
        let found = tcp_sockets()
            .into_iter()
            .find(|(l, p, _)| *l == local && *p == peer)
            .map(|(_, _, nodelay)| nodelay);
        if found.is_some() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kubelet server connection has TCP_NODELAY from its accept on (exec and attach relay
    /// small frames: no Nagle delay waiting for the peer's delayed ACK).
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::kubelet::config::Config::defaults("n1".into());
        cfg.root_dir = dir.path().to_path_buf();
        let tls_config = tls::server_config(&cfg, "h", &[]).unwrap();
        let server = KubeletServer {
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            acceptor: TlsAcceptor::from(tls_config),
            app: Router::new(),
        };
        let addr = server.local_addr().unwrap();
        let stop = CancellationToken::new();
        let serving = tokio::spawn(server.serve(stop.clone()));
        // The client stays silent: the server holds the connection, waiting for its handshake.
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let client_addr = client.local_addr().unwrap();
        let nodelay = nodelay_of(addr, client_addr).await;
        stop.cancel();
        drop(client);
        let _ = serving.await;
        assert_eq!(nodelay, Some(true), "the accepted socket's TCP_NODELAY");
    }
}
