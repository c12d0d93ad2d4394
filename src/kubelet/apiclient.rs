//! The API client's HTTP connections, pooled as client-go pools the kubelet's: at most
//! [`MAX_IDLE_PER_HOST`] idle connections kept per server (`transport/cache.go`'s
//! `idleConnsPerHost`), each closed after [`IDLE_TIMEOUT`] unused (`IdleConnTimeout`). Over
//! HTTP/1.1 every request in flight holds a connection of its own, so a burst (a wave of pods
//! setting up their volumes at once) opens a hundred; kube's default pool would keep them all,
//! each with its TLS state and buffers, for as long as requests keep coming.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use tower::{BoxError, ServiceBuilder};

use crate::kubelet::stats::restclient::RestMetricsLayer;

/// Idle connections kept per API server.
pub const MAX_IDLE_PER_HOST: usize = 25;
/// How long an idle connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The API client could not be built from its kubeconfig.
#[derive(Debug, thiserror::Error)]
#[error("building the API client: {source}")]
pub struct ApiClientError {
    #[source]
    source: kube::Error,
}

/// hyper's client builder with the kubelet's pool settings.
pub fn http_builder() -> hyper_util::client::legacy::Builder {
    let mut b = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
    b.pool_max_idle_per_host(MAX_IDLE_PER_HOST)
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_timer(hyper_util::rt::TokioTimer::new());
    b
}

/// A connector to `config`'s server: TCP with its connect timeout, TLS as the kubeconfig says.
pub fn http_connector(config: &kube::Config) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    http
}

/// The node's API client for `config` (kube's stack with the pool above), every request
/// counted in `rest_client_requests_total`.
pub fn client(config: &kube::Config) -> Result<kube::Client, ApiClientError> {
    let err = |source| ApiClientError { source };
    let https = config
        .rustls_https_connector_with_connector(http_connector(config))
        .map_err(err)?;
    let http_client = http_builder().build::<_, kube::client::Body>(https);
    let host = config
        .cluster_url
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let service = ServiceBuilder::new()
        .layer(RestMetricsLayer::new(host))
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer().map_err(err)?)
        .layer(config.extra_headers_layer().map_err(err)?)
        .map_err(BoxError::from)
        .service(http_client);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::Namespace;
    use kube::Api;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers every request after `delay` (so they overlap) and counts the
    /// connections open at the moment.
    async fn server(delay: Duration) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let open = Arc::new(AtomicUsize::new(0));
        let counter = open.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let open = counter.clone();
                open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let body = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"default"}}"#;
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                        // One GET (no body) per round trip.
                        if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            seen.clear();
                            tokio::time::sleep(delay).await;
                            let reply = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if sock.write_all(reply.as_bytes()).await.is_err() {
                                break;
                            }
                        }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (url, open)
    }

    /// After a burst of 60 requests at once (60 connections), the client keeps 25 of them.
    #[tokio::test]
    async fn a_burst_leaves_at_most_the_idle_cap_open() {
        let (url, open) = server(Duration::from_millis(300)).await;
        let config = kube::Config::new(url.parse().unwrap());
        let client = client(&config).unwrap();
        let api: Api<Namespace> = Api::all(client.clone());
        let burst = (0..60).map(|_| {
            let api = api.clone();
            async move { api.get("default").await }
        });
        for r in futures::future::join_all(burst).await {
            assert_eq!(r.unwrap().metadata.name.as_deref(), Some("default"));
        }
        // The client closes the connections beyond the cap as they come back to the pool.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while open.load(Ordering::SeqCst) > MAX_IDLE_PER_HOST && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = open.load(Ordering::SeqCst);
        assert!(
            (1..=MAX_IDLE_PER_HOST).contains(&left),
            "{left} connections open after the burst"
        );
        // And the pooled ones are used again.
        api.get("default").await.unwrap();
        assert!(open.load(Ordering::SeqCst) <= MAX_IDLE_PER_HOST);
    }
}
