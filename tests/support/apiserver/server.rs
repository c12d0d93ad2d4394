//! HTTPS serving: TLS (rustls with the ring provider, ALPN http/1.1, optional client
//! certificates verified against the server's CA) and HTTP/1.1 keep-alive connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::auth::{user_from_cert, Tokens, UserInfo};
use super::authz::Grants;
use super::handlers;
use super::pki::Pki;
use super::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("parsing PEM {what}")]
    Pem {
        what: &'static str,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("building the TLS configuration")]
    Tls(#[source] rustls::Error),
    #[error("building the client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
}

/// State shared by all connections and requests.
pub struct Shared {
    pub store: Store,
    pub pki: Pki,
    pub tokens: Tokens,
    /// What tests granted beyond the default policy.
    pub grants: Grants,
    /// TLS client towards kubelets (the apiserver's kubelet client certificate).
    pub kubelet_tls: tokio_rustls::TlsConnector,
    /// Upgrades the kubelet proxy completed, for tests that check which protocol was used.
    pub upgrades: std::sync::Mutex<Vec<super::kubeletproxy::UpgradeRecord>>,
    pub available: AtomicBool,
    /// Every authenticated request, oldest first (for tests that count a client's LISTs).
    pub requests: std::sync::Mutex<Vec<RequestRecord>>,
    /// Counts outages: open watches end when it changes.
    pub outages: tokio::sync::watch::Sender<u64>,
    pub shutdown: CancellationToken,
    pub addr: SocketAddr,
}

/// One authenticated request as the server saw it.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub user: String,
    pub method: http::Method,
    pub path: String,
    pub query: String,
}

impl RequestRecord {
    /// A LIST of a collection: a GET of a path whose last segment is a plural resource name
    /// (no object name after it) and no `watch` in the query.
    #[allow(dead_code)] // only the fault tests count lists
    pub fn is_list(&self) -> bool {
        const COLLECTIONS: &[&str] = &[
            "pods",
            "nodes",
            "services",
            "configmaps",
            "secrets",
            "leases",
            "events",
            "csidrivers",
            "runtimeclasses",
            "endpoints",
            "persistentvolumeclaims",
            "persistentvolumes",
        ];
        let last = self.path.rsplit('/').next().unwrap_or_default();
        self.method == http::Method::GET
            && COLLECTIONS.contains(&last)
            && !self.query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1")
    }
}

pub fn tls_acceptor(pki: &Pki) -> Result<TlsAcceptor, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca = CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).map_err(|source| ServerError::Pem {
        what: "CA certificate",
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(ServerError::Tls)?;
    // Token-authenticated clients present no certificate: verification is optional.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(ServerError::Verifier)?;
    let cert = CertificateDer::from_pem_slice(pki.server.cert_pem.as_bytes()).map_err(|source| ServerError::Pem {
        what: "server certificate",
        source,
    })?;
    let key = PrivateKeyDer::from_pem_slice(pki.server.key_pem.as_bytes()).map_err(|source| ServerError::Pem {
        what: "server key",
        source,
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ServerError::Tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert, ca], key)
        .map_err(ServerError::Tls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until shutdown; each connection is served on its own task.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener, acceptor: TlsAcceptor) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (tcp, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "test apiserver: accept failed");
                continue;
            }
        };
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let token = shared.shutdown.clone();
            tokio::select! {
                _ = token.cancelled() => {}
                _ = serve_connection(shared, acceptor, tcp) => {}
            }
        });
    }
}

async fn serve_connection(shared: Arc<Shared>, acceptor: TlsAcceptor, tcp: tokio::net::TcpStream) {
    let tls = match acceptor.accept(tcp).await {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(error = %e, "test apiserver: TLS handshake failed");
            return;
        }
    };
    let cert_user: Option<UserInfo> = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|c| user_from_cert(c));
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let cert_user = cert_user.clone();
        async move { Ok::<_, Infallible>(handlers::handle(shared, cert_user, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
        // exec, attach, port-forward and nodes/proxy upgrades are spliced to the kubelet.
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "test apiserver: connection ended with an error");
    }
}
