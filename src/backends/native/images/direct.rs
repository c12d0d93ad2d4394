//! The registry API spoken directly (reqwest) for hosts whose hosts.toml asks for what
//! oci-client cannot do: `override_path` or a path prefix, `[header]`, `client` certificates.
//! The same requests oci-client makes: `GET <path>/<name>/manifests|blobs/<ref>`, answering a
//! 401 challenge with Basic credentials or the token flow (`realm?service=…&scope=…`).

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use futures::TryStreamExt;
use oci_client::secrets::RegistryAuth;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, RANGE, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};

use super::hosts::Endpoint;
use super::registry::{BlobStream, RegistryError};

/// Reads a hosts.toml `client` pair into one PEM bundle (cert, then key) for rustls.
fn identity(cert: &std::path::Path, key: Option<&std::path::Path>) -> Result<reqwest::Identity, String> {
    let mut pem = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    if let Some(k) = key {
        pem.push(b'\n');
        pem.extend(std::fs::read(k).map_err(|e| format!("{}: {e}", k.display()))?);
    }
    reqwest::Identity::from_pem(&pem).map_err(|e| format!("{}: {e}", cert.display()))
}

/// One endpoint's HTTP client with its base URL, repository and credentials.
pub struct Direct {
    http: reqwest::Client,
    /// `scheme://host<api path>/<name>`.
    base: String,
    path: String,
    auth: RegistryAuth,
    /// The `Authorization` value earned by the last challenge.
    authorization: Mutex<Option<String>>,
}

impl Direct {
    pub fn new(endpoint: &Endpoint, path: &str, auth: RegistryAuth) -> Result<Self, RegistryError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &endpoint.headers {
            let (Ok(n), Ok(v)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) else {
                return Err(RegistryError::Transport(format!(
                    "hosts.toml header {name:?} of {}: not a valid HTTP header",
                    endpoint.host
                )));
            };
            headers.append(n, v);
        }
        let mut b = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("keel/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(60))
            .danger_accept_invalid_certs(endpoint.skip_verify);
        for ca in &endpoint.ca {
            match std::fs::read(ca).map(|pem| reqwest::Certificate::from_pem(&pem)) {
                Ok(Ok(c)) => b = b.add_root_certificate(c),
                Ok(Err(e)) => tracing::warn!(ca = %ca.display(), error = %e, "registry CA file invalid, ignored"),
                Err(e) => tracing::warn!(ca = %ca.display(), error = %e, "registry CA file unreadable, ignored"),
            }
        }
        // rustls takes one client identity; containerd offers each pair, the first is the usual.
        if let Some((cert, key)) = endpoint.client.first() {
            let id = identity(cert, key.as_deref())
                .map_err(|e| RegistryError::Transport(format!("registry client certificate: {e}")))?;
            b = b.identity(id);
        }
        let http = b.build().map_err(|e| RegistryError::Transport(e.to_string()))?;
        let scheme = if endpoint.plain_http { "http" } else { "https" };
        Ok(Self {
            http,
            base: format!("{scheme}://{}{}/{path}", endpoint.host, endpoint.path),
            path: path.to_string(),
            auth,
            authorization: Mutex::new(None),
        })
    }

    fn current_authorization(&self) -> Option<String> {
        self.authorization.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `GET <base>/<kind>/<object>`, answering one auth challenge.
    async fn get(&self, kind: &str, object: &str, accept: &str, range: Option<u64>) -> Result<Response, RegistryError> {
        let url = format!("{}/{kind}/{object}", self.base);
        let send = |authz: Option<String>| {
            let mut rb = self.http.get(&url).header(ACCEPT, accept);
            if let Some(off) = range {
                rb = rb.header(RANGE, format!("bytes={off}-"));
            }
            if let Some(a) = authz {
                rb = rb.header(AUTHORIZATION, a);
            }
            rb.send()
        };
        let transport = |e: reqwest::Error| RegistryError::Transport(super::registry::error_chain(&e));
        let mut resp = send(self.current_authorization()).await.map_err(transport)?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let authz = self.answer(&challenge).await?;
            *self.authorization.lock().unwrap_or_else(|p| p.into_inner()) = authz.clone();
            resp = send(authz).await.map_err(transport)?;
        }
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        Err(match status {
            StatusCode::NOT_FOUND => RegistryError::NotFound,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Unauthorized(url),
            s => RegistryError::Status {
                method: "GET",
                url,
                status: s.to_string(),
            },
        })
    }

    fn basic(&self) -> Option<String> {
        match &self.auth {
            RegistryAuth::Basic(u, p) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )),
            _ => None,
        }
    }

    /// The `Authorization` for a `WWW-Authenticate` challenge: Basic credentials, or a token
    /// from the realm (anonymous when there are no credentials, as public registries allow).
    async fn answer(&self, challenge: &str) -> Result<Option<String>, RegistryError> {
        let unauthorized = |m: String| RegistryError::Unauthorized(m);
        let challenges = http_auth::parse_challenges(challenge)
            .map_err(|e| unauthorized(format!("unparsable challenge {challenge:?}: {e}")))?;
        let Some(c) = challenges.first() else {
            return Err(unauthorized(format!("{}: 401 without a challenge", self.base)));
        };
        let param = |name: &str| {
            c.params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_unescaped())
        };
        if c.scheme.eq_ignore_ascii_case("basic") {
            return Ok(self.basic());
        }
        if !c.scheme.eq_ignore_ascii_case("bearer") {
            return Err(unauthorized(format!("unsupported auth scheme {:?}", c.scheme)));
        }
        if let RegistryAuth::Bearer(t) = &self.auth {
            return Ok(Some(format!("Bearer {t}")));
        }
        let realm = param("realm").ok_or_else(|| unauthorized("bearer challenge without a realm".into()))?;
        let mut query = vec![];
        if let Some(s) = param("service") {
            query.push(("service", s));
        }
        query.push((
            "scope",
            param("scope").unwrap_or_else(|| format!("repository:{}:pull", self.path)),
        ));
        let mut rb = self.http.get(&realm).query(&query);
        if let Some(b) = self.basic() {
            rb = rb.header(AUTHORIZATION, b);
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| RegistryError::Transport(super::registry::error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(unauthorized(format!("{realm}: {}", resp.status())));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
        }
        let t: Token = resp
            .json()
            .await
            .map_err(|e| unauthorized(format!("{realm}: token response: {e}")))?;
        let tok = if t.token.is_empty() { t.access_token } else { t.token };
        Ok(Some(format!("Bearer {tok}")))
    }

    /// A manifest's bytes.
    pub async fn manifest(&self, object: &str, accept: &[&str]) -> Result<Vec<u8>, RegistryError> {
        let resp = self.get("manifests", object, &accept.join(", "), None).await?;
        let max = super::manifest::MAX_MANIFEST_SIZE;
        if resp.content_length().is_some_and(|l| l > max) {
            return Err(RegistryError::TooLarge(object.to_string()));
        }
        let b = resp
            .bytes()
            .await
            .map_err(|e| RegistryError::Transport(super::registry::error_chain(&e)))?;
        Ok(b.to_vec())
    }

    /// A blob from `offset` on: `(stream, true)` when the answer is the rest (206).
    pub async fn blob(&self, digest: &str, offset: u64) -> Result<(BlobStream, bool), RegistryError> {
        let resp = self.get("blobs", digest, "*/*", (offset > 0).then_some(offset)).await?;
        let partial = resp.status() == StatusCode::PARTIAL_CONTENT;
        Ok((
            BlobStream {
                length: resp.content_length(),
                stream: Box::pin(resp.bytes_stream().map_err(std::io::Error::other)),
            },
            partial,
        ))
    }
}
