//! Talking to one registry endpoint through `oci-client`: manifests by tag or digest, blobs as
//! byte streams, the token flow and Basic auth (oci-client's). One client per pull and endpoint:
//! oci-client keeps the first credentials it sees per registry, and pull secrets differ per pod.

use std::time::Duration;

use base64::Engine;
use futures::stream::BoxStream;
use oci_client::client::{BlobResponse, Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::genericruntime::seam::cri;

use super::digest::Digest;
use super::direct::Direct;
use super::hosts::Endpoint;
use super::manifest::{DOCKER_LIST, DOCKER_MANIFEST, DOCKER_SCHEMA1, MAX_MANIFEST_SIZE, OCI_INDEX, OCI_MANIFEST};

/// What containerd sends as `Accept` when resolving (docker first, then OCI).
const ACCEPT: &[&str] = &[DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX, "*/*"];

/// Errors from a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("not found")]
    NotFound,
    #[error("pull access denied, repository does not exist or may require authorization: {0}")]
    Unauthorized(String),
    #[error("unexpected status from {method} request to {url}: {status}")]
    Status {
        method: &'static str,
        url: String,
        status: String,
    },
    #[error("{0}")]
    Transport(String),
    #[error("manifest {0} is larger than the {MAX_MANIFEST_SIZE} bytes allowed")]
    TooLarge(String),
    #[error("schema 1 manifests are not supported (pushed by an old docker; push it again)")]
    Schema1,
    #[error("invalid credentials: {0}")]
    Credentials(String),
}

impl RegistryError {
    fn from_oci(e: OciDistributionError, method: &'static str) -> Self {
        match e {
            OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound,
            OciDistributionError::RegistryError { envelope, url } => {
                use oci_client::errors::OciErrorCode as C;
                let codes = || envelope.errors.iter().map(|e| &e.code);
                if codes().any(|c| matches!(c, C::ManifestUnknown | C::BlobUnknown | C::NameUnknown | C::NotFound)) {
                    RegistryError::NotFound
                } else if codes().any(|c| matches!(c, C::Unauthorized | C::Denied)) {
                    RegistryError::Unauthorized(url)
                } else {
                    RegistryError::Status {
                        method,
                        url,
                        status: envelope.to_string(),
                    }
                }
            }
            OciDistributionError::UnauthorizedError { url } => RegistryError::Unauthorized(url),
            OciDistributionError::AuthenticationFailure(m) => RegistryError::Unauthorized(m),
            OciDistributionError::ServerError { code, url, message } => {
                if code == 404 {
                    RegistryError::NotFound
                } else {
                    let reason = http::StatusCode::from_u16(code)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("");
                    let msg = message.trim();
                    RegistryError::Status {
                        method,
                        url,
                        status: if msg.is_empty() {
                            format!("{code} {reason}")
                        } else {
                            format!("{code} {reason}: {msg}")
                        },
                    }
                }
            }
            OciDistributionError::RequestError(e) => RegistryError::Transport(error_chain(&e)),
            other => RegistryError::Transport(other.to_string()),
        }
    }
}

/// reqwest's Display hides the cause (`connection refused` is three levels down).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// CRI `AuthConfig` → credentials, as containerd's `ParseAuth` reads it: a `server_address`
/// for another host means anonymous; then username/password, the identity token, the `auth`
/// blob; a registry token is sent as a bearer token.
pub fn credentials(auth: Option<&cri::AuthConfig>, domain: &str) -> Result<RegistryAuth, RegistryError> {
    let Some(a) = auth else {
        return Ok(RegistryAuth::Anonymous);
    };
    if !a.server_address.is_empty() {
        let s = a
            .server_address
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let host = s.split('/').next().unwrap_or(s);
        let same =
            host == domain || (domain == "docker.io" && matches!(host, "index.docker.io" | "registry-1.docker.io"));
        if !same {
            return Ok(RegistryAuth::Anonymous);
        }
    }
    if !a.username.is_empty() {
        return Ok(RegistryAuth::Basic(a.username.clone(), a.password.clone()));
    }
    if !a.identity_token.is_empty() {
        // Docker's convention for a refresh token at the token endpoint.
        return Ok(RegistryAuth::Basic("<token>".into(), a.identity_token.clone()));
    }
    if !a.auth.is_empty() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .map_err(|e| RegistryError::Credentials(format!("auth is not base64: {e}")))?;
        let s = String::from_utf8(raw).map_err(|_| RegistryError::Credentials("auth is not UTF-8".into()))?;
        let (u, p) = s
            .split_once(':')
            .ok_or_else(|| RegistryError::Credentials("auth is not user:password".into()))?;
        return Ok(RegistryAuth::Basic(u.to_string(), p.to_string()));
    }
    if !a.registry_token.is_empty() {
        return Ok(RegistryAuth::Bearer(a.registry_token.clone()));
    }
    Ok(RegistryAuth::Anonymous)
}

/// One endpoint of one pull.
pub struct Remote {
    client: Transport,
    auth: RegistryAuth,
    pub endpoint: Endpoint,
    path: String,
}

/// oci-client, or the direct client for what hosts.toml asks and oci-client cannot do.
enum Transport {
    Oci(Box<Client>),
    Direct(Box<Direct>),
    /// The hosts.toml settings could not be applied (a bad client certificate): every
    /// request fails with why.
    Broken(String),
}

/// A blob on its way.
pub struct BlobStream {
    pub length: Option<u64>,
    pub stream: BoxStream<'static, Result<bytes::Bytes, std::io::Error>>,
}

impl Remote {
    pub fn new(endpoint: Endpoint, path: &str, auth: RegistryAuth) -> Self {
        // reqwest panics building a client when no rustls provider is installed; keel uses
        // ring everywhere (a no-op when `main` installed it already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        if endpoint.needs_direct_client() {
            let client = match Direct::new(&endpoint, path, auth.clone()) {
                Ok(d) => Transport::Direct(Box::new(d)),
                Err(e) => Transport::Broken(e.to_string()),
            };
            return Self {
                client,
                auth,
                path: path.to_string(),
                endpoint,
            };
        }
        let mut extra = Vec::new();
        for ca in &endpoint.ca {
            match std::fs::read(ca) {
                Ok(data) => extra.push(Certificate {
                    encoding: CertificateEncoding::Pem,
                    data,
                }),
                Err(e) => tracing::warn!(ca = %ca.display(), error = %e, "registry CA file unreadable, ignored"),
            }
        }
        let config = ClientConfig {
            protocol: if endpoint.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: endpoint.skip_verify,
            extra_root_certificates: extra,
            connect_timeout: Some(Duration::from_secs(30)),
            // Between bytes, not for the whole blob: a stalled registry fails the pull.
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("keel/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        Self {
            client: Transport::Oci(Box::new(Client::new(config))),
            auth,
            path: path.to_string(),
            endpoint,
        }
    }

    fn reference(&self, object: &str) -> Reference {
        if object.starts_with("sha256:") {
            Reference::with_digest(self.endpoint.host.clone(), self.path.clone(), object.to_string())
        } else {
            Reference::with_tag(self.endpoint.host.clone(), self.path.clone(), object.to_string())
        }
    }

    /// `GET /v2/<name>/manifests/<tag|digest>`: the bytes and their digest (checked against a
    /// digest reference and the registry's `Docker-Content-Digest`).
    pub async fn manifest(&self, object: &str) -> Result<(Vec<u8>, Digest), RegistryError> {
        let bytes = match &self.client {
            Transport::Oci(client) => {
                let r = self.reference(object);
                let (bytes, _header_digest) = client
                    .pull_manifest_raw(&r, &self.auth, ACCEPT)
                    .await
                    .map_err(|e| RegistryError::from_oci(e, "GET"))?;
                bytes.to_vec()
            }
            Transport::Direct(d) => d.manifest(object, ACCEPT).await?,
            Transport::Broken(e) => return Err(RegistryError::Transport(e.clone())),
        };
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(RegistryError::TooLarge(object.to_string()));
        }
        if serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(|m| m == DOCKER_SCHEMA1))
            .unwrap_or(false)
        {
            return Err(RegistryError::Schema1);
        }
        let digest = Digest::of(&bytes);
        Ok((bytes, digest))
    }

    /// `GET /v2/<name>/blobs/<digest>` as a stream.
    pub async fn blob(&self, digest: &Digest) -> Result<BlobStream, RegistryError> {
        let client = match &self.client {
            Transport::Oci(c) => c,
            Transport::Direct(d) => return d.blob(&digest.to_string(), 0).await.map(|(s, _)| s),
            Transport::Broken(e) => return Err(RegistryError::Transport(e.clone())),
        };
        let r = self.reference(&digest.to_string());
        let d = digest.to_string();
        // The token flow runs on the first request of a client; blobs may come first (a
        // digest reference whose manifest is cached), so authenticate explicitly.
        client.store_auth_if_needed(r.resolve_registry(), &self.auth).await;
        let s = client
            .pull_blob_stream(&r, d.as_str())
            .await
            .map_err(|e| RegistryError::from_oci(e, "GET"))?;
        Ok(BlobStream {
            length: s.content_length,
            stream: s.stream,
        })
    }

    /// The blob from byte `offset` on (`Range: bytes=<offset>-`): `(stream, true)` when the
    /// registry answered 206 with the rest, `(stream, false)` when it sent the whole blob.
    pub async fn blob_from(&self, digest: &Digest, offset: u64) -> Result<(BlobStream, bool), RegistryError> {
        let client = match &self.client {
            Transport::Oci(c) => c,
            Transport::Direct(d) => return d.blob(&digest.to_string(), offset).await,
            Transport::Broken(e) => return Err(RegistryError::Transport(e.clone())),
        };
        let r = self.reference(&digest.to_string());
        let d = digest.to_string();
        client.store_auth_if_needed(r.resolve_registry(), &self.auth).await;
        let res = client
            .pull_blob_stream_partial(&r, d.as_str(), offset, None)
            .await
            .map_err(|e| RegistryError::from_oci(e, "GET"))?;
        Ok(match res {
            BlobResponse::Partial(s) => (
                BlobStream {
                    length: s.content_length,
                    stream: s.stream,
                },
                true,
            ),
            BlobResponse::Full(s) => (
                BlobStream {
                    length: s.content_length,
                    stream: s.stream,
                },
                false,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(a: &RegistryAuth) -> Option<(&str, &str)> {
        match a {
            RegistryAuth::Basic(u, p) => Some((u.as_str(), p.as_str())),
            _ => None,
        }
    }

    #[test]
    fn credentials_like_containerd() {
        assert!(matches!(
            credentials(None, "docker.io").unwrap(),
            RegistryAuth::Anonymous
        ));
        let up = cri::AuthConfig {
            username: "u".into(),
            password: "p".into(),
            server_address: "127.0.0.1:5000".into(),
            ..Default::default()
        };
        assert_eq!(
            basic(&credentials(Some(&up), "127.0.0.1:5000").unwrap()),
            Some(("u", "p"))
        );
        // credentials for another registry are not sent
        assert!(matches!(
            credentials(Some(&up), "quay.io").unwrap(),
            RegistryAuth::Anonymous
        ));
        let auth = cri::AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("me:secret"),
            ..Default::default()
        };
        assert_eq!(basic(&credentials(Some(&auth), "x").unwrap()), Some(("me", "secret")));
        let bad = cri::AuthConfig {
            auth: "!!!".into(),
            ..Default::default()
        };
        assert!(credentials(Some(&bad), "x").is_err());
        let tok = cri::AuthConfig {
            registry_token: "t".into(),
            ..Default::default()
        };
        assert!(matches!(credentials(Some(&tok), "x").unwrap(), RegistryAuth::Bearer(t) if t == "t"));
        let id = cri::AuthConfig {
            identity_token: "refresh".into(),
            ..Default::default()
        };
        assert_eq!(
            basic(&credentials(Some(&id), "x").unwrap()),
            Some(("<token>", "refresh"))
        );
        let hub = cri::AuthConfig {
            username: "u".into(),
            server_address: "https://index.docker.io/v1/".into(),
            ..Default::default()
        };
        assert!(basic(&credentials(Some(&hub), "docker.io").unwrap()).is_some());
    }
}
