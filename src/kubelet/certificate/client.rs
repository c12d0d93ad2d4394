//! The API client of a node whose client certificate rotates: kube's TLS settings for the
//! cluster (server, CA), but the client certificate is whatever the manager holds at each
//! handshake, and every connection can be closed when it changes (client-go's
//! `transport.NewCertRotatingClient` with a `connrotation` dialer, as the kubelet builds it).

use std::sync::Arc;

use kube::client::ConfigExt;
use tower::{BoxError, ServiceBuilder};

use super::connrotation::{Tracker, TrackingConnector};
use super::manager::{ClientResolver, Manager};
use super::CertError;
use crate::kubelet::apiclient;
use crate::kubelet::stats::restclient::RestMetricsLayer;

/// A client for `config`'s cluster that authenticates with `manager`'s current certificate and
/// whose connections `tracker` closes on rotation. Requests are counted like the plain client's.
pub fn rotating_client(
    config: &kube::Config,
    manager: Arc<Manager>,
    tracker: Arc<Tracker>,
) -> Result<kube::Client, CertError> {
    let err = |e: &dyn std::fmt::Display| CertError::Client { message: e.to_string() };
    let mut tls = config.rustls_client_config().map_err(|e| err(&e))?;
    tls.client_auth_cert_resolver = Arc::new(ClientResolver(manager));
    // A resumed TLS session carries the identity of the handshake it resumes, so a connection
    // dialled after a rotation could still present the old (soon expired) certificate. Go's
    // client, the kubelet's, does not resume either.
    tls.resumption = rustls::client::Resumption::disabled();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(TrackingConnector::new(apiclient::http_connector(config), tracker));
    // Pooled as the plain client is (client-go's idle cap and timeout).
    let http_client = apiclient::http_builder().build::<_, kube::client::Body>(https);
    let host = config
        .cluster_url
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let service = ServiceBuilder::new()
        .layer(RestMetricsLayer::new(host))
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer().map_err(|e| err(&e))?)
        .map_err(BoxError::from)
        .service(http_client);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}
