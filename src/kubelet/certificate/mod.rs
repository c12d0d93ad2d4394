//! The node's certificates, as the kubelet manages them: TLS bootstrapping of the client
//! certificate from a bootstrap kubeconfig (`bootstrap`), certificate signing requests (`csr`),
//! the cert dir's files (`store`), rotation before expiry (`manager`), the API client that
//! presents the current client certificate and drops its connections on rotation (`client`,
//! `connrotation`).

pub mod bootstrap;
pub mod client;
pub mod connrotation;
pub mod csr;
pub mod manager;
pub mod store;

use std::path::PathBuf;
use std::time::Duration;

/// A certificate could not be obtained, stored or used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a certificate and key: {message}")]
    BadPair { path: PathBuf, message: String },
    #[error("generating a key or request: {source}")]
    Generate {
        #[source]
        source: rcgen::Error,
    },
    #[error("API request: {source}")]
    Api {
        #[source]
        source: kube::Error,
    },
    #[error("reading kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("the API server named no certificate signing request")]
    Unnamed,
    #[error("certificate signing request {name} exists with a different request")]
    Conflict { name: String },
    #[error("certificate signing request {name} was refused: {why}")]
    Refused { name: String, why: String },
    #[error("certificate signing request {name} was deleted before it was issued")]
    Deleted { name: String },
    #[error("certificate signing request {name} not issued within {waited:?}")]
    Timeout { name: String, waited: Duration },
    #[error("the issued certificate does not match the private key: {message}")]
    KeyMismatch { message: String },
    #[error("building the API client: {message}")]
    Client { message: String },
}
