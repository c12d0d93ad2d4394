//! Authentication and authorization of every request to the kubelet server
//! (kubelet-api-protocols.md §1.2, §1.3).
//!
//! Authenticators run as a union (x509 client certificate, bearer token, WebSocket subprotocol
//! token; the first success wins) with anonymous as the fall-back when nobody failed. The
//! authorizer asks a SubjectAccessReview for `nodes/<subresource>` (1.33 fine-grained: the
//! specific subresource first, then `proxy`), or allows everything (`AlwaysAllow`).
//!
//! Answers differ from the kubelet on purpose: 401 and 403 carry Kubernetes `Status` bodies (the
//! issue asks for them; the kubelet writes plain text), with the kubelet's messages.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use rustls::pki_types::CertificateDer;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::kubelet::config::{AuthorizationMode, Config};

/// The subprotocol prefix that carries a bearer token on WebSocket upgrades.
pub const WS_TOKEN_PROTOCOL_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";
pub const ANONYMOUS_USER: &str = "system:anonymous";
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// Cache entries beyond which expired ones are swept (bounds memory under many distinct tokens).
const CACHE_SWEEP_AT: usize = 4096;

/// An authentication or authorization step that failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{what} needs an API server, and keel runs standalone; configure {instead}")]
    NeedsApiServer { what: &'static str, instead: &'static str },
    #[error("parsing the client certificate: {message}")]
    ClientCertificate { message: String },
    #[error("invalid bearer token")]
    InvalidToken,
    #[error("{0}")]
    WebSocketToken(&'static str),
    #[error("TokenReview failed: {source}")]
    TokenReview {
        #[source]
        source: kube::Error,
    },
    #[error("TokenReview answered without a user")]
    TokenReviewNoUser,
    #[error("SubjectAccessReview failed: {source}")]
    AccessReview {
        #[source]
        source: kube::Error,
    },
}

/// The client certificate chain of a TLS connection (leaf first), put on each request by the
/// server. rustls has already verified it against the client CA.
#[derive(Clone, Debug)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// Who made a request (put on the request for the handlers).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Validates a bearer token (TokenReview). `Ok(None)`: the token is not valid.
#[async_trait]
pub trait TokenReviewer: Send + Sync {
    async fn review_token(&self, token: &str) -> Result<Option<UserInfo>, AuthError>;
}

/// Decides one access (SubjectAccessReview): allowed or not.
#[async_trait]
pub trait AccessReviewer: Send + Sync {
    async fn review_access(&self, attrs: &Attributes) -> Result<bool, AuthError>;
}

/// What is authorized: `verb` on `nodes/<subresource>` named `node`, by `user`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub user: UserInfo,
    pub verb: String,
    pub node: String,
    pub subresource: String,
}

/// TokenReview and SubjectAccessReview through the API client.
pub struct KubeReviewer(pub kube::Client);

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

#[async_trait]
impl TokenReviewer for KubeReviewer {
    async fn review_token(&self, token: &str) -> Result<Option<UserInfo>, AuthError> {
        let api: Api<TokenReview> = Api::all(self.0.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                // The kubelet configures no audiences.
                audiences: None,
            },
            ..Default::default()
        };
        let r = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| AuthError::TokenReview { source })?;
        let Some(status) = r.status.filter(|s| s.authenticated == Some(true)) else {
            return Ok(None);
        };
        let u = status.user.ok_or(AuthError::TokenReviewNoUser)?;
        Ok(Some(UserInfo {
            name: u.username.unwrap_or_default(),
            uid: u.uid.unwrap_or_default(),
            groups: u.groups.unwrap_or_default(),
            extra: u.extra.unwrap_or_default(),
        }))
    }
}

#[async_trait]
impl AccessReviewer for KubeReviewer {
    async fn review_access(&self, a: &Attributes) -> Result<bool, AuthError> {
        let api: Api<SubjectAccessReview> = Api::all(self.0.clone());
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: non_empty(&a.user.name),
                uid: non_empty(&a.user.uid),
                groups: Some(a.user.groups.clone()).filter(|g| !g.is_empty()),
                extra: Some(a.user.extra.clone()).filter(|e| !e.is_empty()),
                resource_attributes: Some(ResourceAttributes {
                    verb: non_empty(&a.verb),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: non_empty(&a.subresource),
                    name: non_empty(&a.node),
                    ..Default::default()
                }),
                non_resource_attributes: None,
            },
            ..Default::default()
        };
        let r = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| AuthError::AccessReview { source })?;
        Ok(r.status.is_some_and(|s| s.allowed))
    }
}

/// A value cache with one TTL per entry. TTLs run in real time even under `--time-scale`: they
/// bound how stale the API server's answers may get, they are not kubelet periods.
struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: std::hash::Hash + Eq, V: Clone> TtlCache<K, V> {
    fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, (Instant, V)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, k: &K) -> Option<V> {
        let now = Instant::now();
        self.lock().get(k).filter(|(exp, _)| *exp > now).map(|(_, v)| v.clone())
    }

    fn put(&self, k: K, v: V, ttl: Duration) {
        let now = Instant::now();
        let mut m = self.lock();
        if m.len() >= CACHE_SWEEP_AT {
            m.retain(|_, (exp, _)| *exp > now);
        }
        m.insert(k, (now + ttl, v));
    }
}

/// Token reviews cached per token digest for `cacheTTL`, valid and invalid alike (as the
/// kubelet's cached token authenticator); errors are not cached.
struct CachedTokens {
    reviewer: Arc<dyn TokenReviewer>,
    ttl: Duration,
    cache: TtlCache<[u8; 32], Option<UserInfo>>,
}

impl CachedTokens {
    async fn review(&self, token: &str) -> Result<Option<UserInfo>, AuthError> {
        let mut key = [0u8; 32];
        key.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit);
        }
        let r = self.reviewer.review_token(token).await?;
        self.cache.put(key, r.clone(), self.ttl);
        Ok(r)
    }

    /// Reviews `token`: the user, or the error that fails authentication.
    async fn authenticate(&self, token: &str) -> Result<UserInfo, AuthError> {
        self.review(token).await?.ok_or(AuthError::InvalidToken)
    }
}

/// Authorization: AlwaysAllow, or SubjectAccessReviews cached per attributes.
enum Authorizer {
    AlwaysAllow,
    Webhook {
        reviewer: Arc<dyn AccessReviewer>,
        allowed_ttl: Duration,
        denied_ttl: Duration,
        cache: TtlCache<Attributes, bool>,
    },
}

/// The result of authorizing a request.
#[derive(Debug)]
pub enum Decision {
    Allow,
    /// Denied; the subresource named in the answer.
    Deny {
        subresource: String,
    },
    /// The authorizer failed.
    Error {
        subresource: String,
        error: AuthError,
    },
}

/// The auth filter's state: authenticators and the authorizer.
pub struct Auth {
    node_name: String,
    x509: bool,
    tokens: Option<CachedTokens>,
    anonymous: bool,
    authorizer: Authorizer,
}

impl Auth {
    /// Builds the filter from the configuration. Webhook authentication or authorization needs
    /// an API client: standalone keel refuses such a configuration rather than locking every
    /// request out.
    pub fn from_config(cfg: &Config, client: Option<kube::Client>) -> Result<Self, AuthError> {
        let reviewer = client.map(|c| Arc::new(KubeReviewer(c)));
        let token: Option<Arc<dyn TokenReviewer>> = match (&reviewer, cfg.authentication.webhook_enabled) {
            (_, false) => None,
            (Some(r), true) => Some(r.clone()),
            (None, true) => {
                return Err(AuthError::NeedsApiServer {
                    what: "webhook token authentication",
                    instead: "authentication.webhook.enabled: false (or --authentication-token-webhook=false)",
                })
            }
        };
        let access: Option<Arc<dyn AccessReviewer>> = match (&reviewer, &cfg.authorization.mode) {
            (_, AuthorizationMode::AlwaysAllow) => None,
            (Some(r), AuthorizationMode::Webhook) => Some(r.clone()),
            (None, AuthorizationMode::Webhook) => {
                return Err(AuthError::NeedsApiServer {
                    what: "Webhook authorization",
                    instead: "authorization.mode: AlwaysAllow (or --authorization-mode=AlwaysAllow)",
                })
            }
        };
        Ok(Self::new(cfg, token, access))
    }

    /// Builds the filter with the given reviewers (None: that webhook is off).
    pub fn new(cfg: &Config, token: Option<Arc<dyn TokenReviewer>>, access: Option<Arc<dyn AccessReviewer>>) -> Self {
        Self {
            node_name: cfg.node_name.clone(),
            x509: cfg.authentication.x509_client_ca_file.is_some(),
            tokens: token.map(|reviewer| CachedTokens {
                reviewer,
                ttl: cfg.authentication.webhook_cache_ttl,
                cache: TtlCache::new(),
            }),
            anonymous: cfg.authentication.anonymous_enabled,
            authorizer: match access {
                None => Authorizer::AlwaysAllow,
                Some(reviewer) => Authorizer::Webhook {
                    reviewer,
                    allowed_ttl: cfg.authorization.webhook_cache_authorized_ttl,
                    denied_ttl: cfg.authorization.webhook_cache_unauthorized_ttl,
                    cache: TtlCache::new(),
                },
            },
        }
    }

    /// Authenticates a request: the user, or every authenticator's error (an empty list: no
    /// credentials and anonymous is off). Removes the credentials that succeeded from the
    /// headers so they are never forwarded (to the CRI streaming server).
    pub async fn authenticate(
        &self,
        headers: &mut HeaderMap,
        peer: Option<&PeerCertificates>,
    ) -> Result<UserInfo, Vec<AuthError>> {
        let mut errors = Vec::new();
        let mut user = None;
        if self.x509 {
            if let Some(p) = peer {
                match x509_user(p) {
                    Ok(u) => user = u,
                    Err(e) => errors.push(e),
                }
            }
        }
        if let (None, Some(tokens)) = (&user, &self.tokens) {
            if let Some(token) = bearer_token(headers) {
                match tokens.authenticate(&token).await {
                    Ok(u) => user = Some(u),
                    Err(e) => errors.push(e),
                }
            }
        }
        if let (None, Some(tokens)) = (&user, &self.tokens) {
            match websocket_token(headers) {
                Ok(None) => {}
                Ok(Some((token, rest))) => match tokens.authenticate(&token).await {
                    Ok(u) => {
                        user = Some(u);
                        set_protocols(headers, &rest);
                    }
                    Err(e) => errors.push(e),
                },
                Err(e) => errors.push(e),
            }
        }
        match user {
            Some(mut u) => {
                // The apiserver's filter drops the header after any success; so does keel.
                headers.remove(header::AUTHORIZATION);
                if !u.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
                    u.groups.push(AUTHENTICATED_GROUP.to_string());
                }
                Ok(u)
            }
            // Anonymous only when nobody failed (FailOnError union).
            None if errors.is_empty() && self.anonymous => Ok(UserInfo {
                name: ANONYMOUS_USER.to_string(),
                groups: vec![UNAUTHENTICATED_GROUP.to_string()],
                ..Default::default()
            }),
            None => Err(errors),
        }
    }

    /// Authorizes `verb` on the path's subresources, in order; the first allowed wins.
    pub async fn authorize(&self, user: &UserInfo, verb: &str, path: &str) -> Decision {
        let subresources = subresources_for(path);
        let last = subresources.last().copied().unwrap_or("proxy").to_string();
        let Authorizer::Webhook {
            reviewer,
            allowed_ttl,
            denied_ttl,
            cache,
        } = &self.authorizer
        else {
            return Decision::Allow;
        };
        for sub in subresources {
            let attrs = Attributes {
                user: user.clone(),
                verb: verb.to_string(),
                node: self.node_name.clone(),
                subresource: sub.to_string(),
            };
            let allowed = match cache.get(&attrs) {
                Some(a) => a,
                None => match reviewer.review_access(&attrs).await {
                    Ok(a) => {
                        cache.put(attrs, a, if a { *allowed_ttl } else { *denied_ttl });
                        a
                    }
                    Err(error) => {
                        return Decision::Error {
                            subresource: sub.to_string(),
                            error,
                        }
                    }
                },
            };
            if allowed {
                return Decision::Allow;
            }
        }
        Decision::Deny { subresource: last }
    }
}

/// x509: CN is the user (an empty CN is "not authenticated", not an error), O values the groups.
fn x509_user(peer: &PeerCertificates) -> Result<Option<UserInfo>, AuthError> {
    let Some(leaf) = peer.0.first() else { return Ok(None) };
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| AuthError::ClientCertificate { message: e.to_string() })?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_string();
    if cn.is_empty() {
        return Ok(None);
    }
    let groups = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(String::from))
        .collect();
    Ok(Some(UserInfo {
        name: cn,
        groups,
        ..Default::default()
    }))
}

/// `Authorization: Bearer <token>` (scheme case-insensitive; an empty token is no credential).
pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let mut parts = v.splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

fn is_websocket_request(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

/// The bearer token of a WebSocket upgrade's `Sec-WebSocket-Protocol`, and the other
/// subprotocols (at least one must remain: it is echoed back to the client).
pub fn websocket_token(headers: &HeaderMap) -> Result<Option<(String, Vec<String>)>, AuthError> {
    if !is_websocket_request(headers) {
        return Ok(None);
    }
    let mut token = None;
    let mut rest = Vec::new();
    for v in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let Ok(v) = v.to_str() else { continue };
        for p in v.split(',').map(str::trim) {
            let Some(encoded) = p.strip_prefix(WS_TOKEN_PROTOCOL_PREFIX) else {
                rest.push(p.to_string());
                continue;
            };
            if token.is_some() {
                return Err(AuthError::WebSocketToken(
                    "multiple base64.bearer.authorization tokens specified",
                ));
            }
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded)
                .map_err(|_| AuthError::WebSocketToken("invalid base64.bearer.authorization token encoding"))?;
            let t = String::from_utf8(raw)
                .map_err(|_| AuthError::WebSocketToken("invalid base64.bearer.authorization token"))?;
            token = Some(t);
        }
    }
    match token {
        Some(t) if !t.is_empty() && rest.is_empty() => Err(AuthError::WebSocketToken("missing additional subprotocol")),
        Some(t) if !t.is_empty() => Ok(Some((t, rest))),
        _ => Ok(None),
    }
}

fn set_protocols(headers: &mut HeaderMap, protocols: &[String]) {
    headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
    if let Ok(v) = HeaderValue::from_str(&protocols.join(",")) {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
    }
}

/// The SAR verb of a method. HEAD → `get` deliberately (the published docs; the 1.24 code maps
/// it to the empty verb, which RBAC denies); unknown methods → the empty verb.
pub fn verb_for(method: &Method) -> &'static str {
    match *method {
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    }
}

/// True if `path` is `prefix` or below it (whole segments: `/stats/x`, not `/statsx`).
fn is_subpath(path: &str, prefix: &str) -> bool {
    path == prefix || path.strip_prefix(prefix).is_some_and(|r| r.starts_with('/'))
}

/// The `nodes` subresources to check for `path`, in order (1.33 `KubeletFineGrainedAuthz`: the
/// specific one, then `proxy`).
pub fn subresources_for(path: &str) -> &'static [&'static str] {
    const TABLE: [(&str, &[&str]); 8] = [
        ("/stats", &["stats"]),
        ("/metrics", &["metrics"]),
        ("/logs", &["log"]),
        ("/checkpoint", &["checkpoint"]),
        ("/pods", &["pods", "proxy"]),
        ("/runningpods", &["pods", "proxy"]),
        ("/healthz", &["healthz", "proxy"]),
        ("/configz", &["configz", "proxy"]),
    ];
    TABLE
        .iter()
        .find(|(prefix, _)| is_subpath(path, prefix))
        .map(|(_, subs)| *subs)
        .unwrap_or(&["proxy"])
}

/// A Kubernetes `Status` failure answer.
pub fn status_response(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// The auth filter (axum middleware on every route).
pub async fn filter(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<super::server::Connection>()
        .and_then(|c| c.peer_certificates.clone());
    let user = match auth.authenticate(req.headers_mut(), peer.as_ref()).await {
        Ok(u) => u,
        Err(errors) => {
            let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            info!(path = %req.uri().path(), errors = ?msgs, "unable to authenticate the request");
            return status_response(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        }
    };
    let verb = verb_for(req.method());
    match auth.authorize(&user, verb, req.uri().path()).await {
        Decision::Allow => {
            debug!(user = %user.name, verb, path = %req.uri().path(), "request authorized");
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        Decision::Deny { subresource } => {
            let msg = format!(
                "Forbidden (user={}, verb={verb}, resource=nodes, subresource={subresource})",
                user.name
            );
            info!(path = %req.uri().path(), "{msg}");
            status_response(StatusCode::FORBIDDEN, "Forbidden", &msg)
        }
        Decision::Error { subresource, error } => {
            let msg = format!(
                "Authorization error (user={}, verb={verb}, resource=nodes, subresource={subresource})",
                user.name
            );
            warn!(path = %req.uri().path(), error = %error, "{msg}");
            status_response(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn subresource_table() {
        let table = [
            ("/stats/summary", vec!["stats"]),
            ("/stats", vec!["stats"]),
            ("/statsx", vec!["proxy"]),
            ("/metrics", vec!["metrics"]),
            ("/metrics/cadvisor", vec!["metrics"]),
            ("/metrics/resource", vec!["metrics"]),
            ("/metrics/probes", vec!["metrics"]),
            ("/logs/", vec!["log"]),
            ("/logs/syslog", vec!["log"]),
            ("/checkpoint/ns/p/c", vec!["checkpoint"]),
            ("/pods", vec!["pods", "proxy"]),
            ("/pods/", vec!["pods", "proxy"]),
            ("/runningpods/", vec!["pods", "proxy"]),
            ("/healthz", vec!["healthz", "proxy"]),
            ("/healthz/syncloop", vec!["healthz", "proxy"]),
            ("/configz", vec!["configz", "proxy"]),
            ("/exec/ns/p/c", vec!["proxy"]),
            ("/attach/ns/p/c", vec!["proxy"]),
            ("/portForward/ns/p", vec!["proxy"]),
            ("/containerLogs/ns/p/c", vec!["proxy"]),
            ("/run/ns/p/c", vec!["proxy"]),
            ("/debug/pprof/", vec!["proxy"]),
            ("/", vec!["proxy"]),
            ("/podsx", vec!["proxy"]),
        ];
        for (path, want) in table {
            assert_eq!(subresources_for(path).to_vec(), want, "{path}");
        }
    }

    #[test]
    fn verb_table() {
        let table = [
            (Method::GET, "get"),
            (Method::HEAD, "get"),
            (Method::POST, "create"),
            (Method::PUT, "update"),
            (Method::PATCH, "patch"),
            (Method::DELETE, "delete"),
            (Method::OPTIONS, ""),
        ];
        for (m, v) in table {
            assert_eq!(verb_for(&m), v, "{m}");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn bearer_parsing() {
        let table = [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER abc extra", Some("abc")),
            ("  Bearer abc  ", Some("abc")),
            ("Bearer ", None),
            ("Bearer  abc", None),
            ("Basic abc", None),
            ("Bearer", None),
            ("", None),
        ];
        for (v, want) in table {
            assert_eq!(
                bearer_token(&headers(&[("authorization", v)])).as_deref(),
                want,
                "{v:?}"
            );
        }
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    fn ws(protocols: &[&str]) -> HeaderMap {
        let mut pairs = vec![("connection", "Upgrade"), ("upgrade", "websocket")];
        pairs.extend(protocols.iter().map(|p| ("sec-websocket-protocol", *p)));
        headers(&pairs)
    }

    #[test]
    fn websocket_token_parsing() {
        let enc = |t: &str| {
            format!(
                "{WS_TOKEN_PROTOCOL_PREFIX}{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t)
            )
        };
        let tok = enc("my-token");
        let h = ws(&[&format!("v4.channel.k8s.io, {tok}"), "channel.k8s.io"]);
        let (t, rest) = websocket_token(&h).unwrap().unwrap();
        assert_eq!(t, "my-token");
        assert_eq!(rest, ["v4.channel.k8s.io", "channel.k8s.io"]);

        assert!(matches!(
            websocket_token(&ws(&[&tok])),
            Err(AuthError::WebSocketToken("missing additional subprotocol"))
        ));
        assert!(websocket_token(&ws(&[&format!("{tok},{tok},x")])).is_err());
        assert!(websocket_token(&ws(&[&format!("{WS_TOKEN_PROTOCOL_PREFIX}!!!"), "x"])).is_err());
        assert!(websocket_token(&ws(&["v4.channel.k8s.io"])).unwrap().is_none());
        // Not a WebSocket upgrade: the header is not looked at.
        let plain = headers(&[("sec-websocket-protocol", &format!("{tok},x"))]);
        assert!(websocket_token(&plain).unwrap().is_none());
    }

    struct FakeTokens {
        calls: AtomicUsize,
        fail: bool,
    }

    #[async_trait]
    impl TokenReviewer for FakeTokens {
        async fn review_token(&self, token: &str) -> Result<Option<UserInfo>, AuthError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail {
                return Err(AuthError::TokenReviewNoUser);
            }
            Ok((token == "good").then(|| UserInfo {
                name: "alice".into(),
                groups: vec!["devs".into()],
                ..Default::default()
            }))
        }
    }

    struct FakeAccess {
        calls: AtomicUsize,
        allow: Vec<(&'static str, &'static str, &'static str)>,
        fail: bool,
    }

    #[async_trait]
    impl AccessReviewer for FakeAccess {
        async fn review_access(&self, a: &Attributes) -> Result<bool, AuthError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail {
                return Err(AuthError::TokenReviewNoUser);
            }
            Ok(self
                .allow
                .iter()
                .any(|(u, v, s)| *u == a.user.name && *v == a.verb && *s == a.subresource))
        }
    }

    fn cfg(anonymous: bool) -> Config {
        let mut c = Config::defaults("node-1".into());
        c.authentication.anonymous_enabled = anonymous;
        c.authentication.webhook_cache_ttl = Duration::from_secs(120);
        c
    }

    #[tokio::test(start_paused = true)]
    async fn token_reviews_are_cached_for_the_ttl() {
        let tokens = Arc::new(FakeTokens {
            calls: AtomicUsize::new(0),
            fail: false,
        });
        let auth = Auth::new(&cfg(false), Some(tokens.clone()), None);
        for _ in 0..3 {
            let mut h = headers(&[("authorization", "Bearer good")]);
            let u = auth.authenticate(&mut h, None).await.unwrap();
            assert_eq!(u.name, "alice");
            assert_eq!(u.groups, ["devs", AUTHENTICATED_GROUP]);
            assert!(h.get(header::AUTHORIZATION).is_none(), "credential removed");
        }
        assert_eq!(tokens.calls.load(Ordering::SeqCst), 1);
        // Invalid tokens are cached too, and fail with an error (no anonymous fall-back).
        for _ in 0..2 {
            let mut h = headers(&[("authorization", "Bearer bad")]);
            let e = auth.authenticate(&mut h, None).await.unwrap_err();
            assert!(matches!(e[..], [AuthError::InvalidToken]));
            assert!(h.get(header::AUTHORIZATION).is_some(), "kept on failure");
        }
        assert_eq!(tokens.calls.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_secs(121)).await;
        let mut h = headers(&[("authorization", "Bearer good")]);
        auth.authenticate(&mut h, None).await.unwrap();
        assert_eq!(tokens.calls.load(Ordering::SeqCst), 3, "expired entry reviewed again");
    }

    #[tokio::test]
    async fn anonymous_only_without_failures() {
        let tokens = Arc::new(FakeTokens {
            calls: AtomicUsize::new(0),
            fail: true,
        });
        let auth = Auth::new(&cfg(true), Some(tokens.clone()), None);
        let u = auth.authenticate(&mut HeaderMap::new(), None).await.unwrap();
        assert_eq!(u.name, ANONYMOUS_USER);
        assert_eq!(u.groups, [UNAUTHENTICATED_GROUP]);
        // A reviewer error is not cached and blocks the anonymous fall-back.
        for _ in 0..2 {
            let mut h = headers(&[("authorization", "Bearer x")]);
            assert!(auth.authenticate(&mut h, None).await.is_err());
        }
        assert_eq!(tokens.calls.load(Ordering::SeqCst), 2);
        let no_anon = Auth::new(&cfg(false), None, None);
        let e = no_anon.authenticate(&mut HeaderMap::new(), None).await.unwrap_err();
        assert!(e.is_empty());
    }

    #[tokio::test]
    async fn websocket_token_authenticates_and_is_removed() {
        let tokens = Arc::new(FakeTokens {
            calls: AtomicUsize::new(0),
            fail: false,
        });
        let auth = Auth::new(&cfg(false), Some(tokens), None);
        let tok = format!(
            "{WS_TOKEN_PROTOCOL_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("good")
        );
        let mut h = ws(&[&format!("{tok}, v4.channel.k8s.io")]);
        assert_eq!(auth.authenticate(&mut h, None).await.unwrap().name, "alice");
        assert_eq!(h.get(header::SEC_WEBSOCKET_PROTOCOL).unwrap(), "v4.channel.k8s.io");
    }

    #[tokio::test(start_paused = true)]
    async fn authorization_fine_grained_then_proxy_with_caching() {
        let access = Arc::new(FakeAccess {
            calls: AtomicUsize::new(0),
            allow: vec![("bob", "get", "proxy"), ("carol", "get", "pods")],
            fail: false,
        });
        let mut c = cfg(false);
        c.authorization.webhook_cache_authorized_ttl = Duration::from_secs(300);
        c.authorization.webhook_cache_unauthorized_ttl = Duration::from_secs(30);
        let auth = Auth::new(&c, None, Some(access.clone()));
        let user = |n: &str| UserInfo {
            name: n.into(),
            ..Default::default()
        };
        // bob: pods denied, proxy allowed (two reviews), then cached.
        assert!(matches!(
            auth.authorize(&user("bob"), "get", "/pods").await,
            Decision::Allow
        ));
        assert_eq!(access.calls.load(Ordering::SeqCst), 2);
        assert!(matches!(
            auth.authorize(&user("bob"), "get", "/pods").await,
            Decision::Allow
        ));
        assert_eq!(access.calls.load(Ordering::SeqCst), 2);
        // carol: the specific subresource suffices.
        assert!(matches!(
            auth.authorize(&user("carol"), "get", "/runningpods/").await,
            Decision::Allow
        ));
        assert_eq!(access.calls.load(Ordering::SeqCst), 3);
        // carol may not exec; the denial is cached 30 s.
        let d = auth.authorize(&user("carol"), "create", "/exec/ns/p/c").await;
        assert!(matches!(d, Decision::Deny { ref subresource } if subresource == "proxy"));
        assert_eq!(access.calls.load(Ordering::SeqCst), 4);
        auth.authorize(&user("carol"), "create", "/exec/ns/p/c").await;
        assert_eq!(access.calls.load(Ordering::SeqCst), 4);
        tokio::time::advance(Duration::from_secs(31)).await;
        auth.authorize(&user("carol"), "create", "/exec/ns/p/c").await;
        assert_eq!(access.calls.load(Ordering::SeqCst), 5, "denial expired after 30 s");
        // bob's `pods` denial expired too (reviewed again); his `proxy` allowance is cached.
        auth.authorize(&user("bob"), "get", "/pods").await;
        assert_eq!(access.calls.load(Ordering::SeqCst), 6, "allowed still cached");
        tokio::time::advance(Duration::from_secs(300)).await;
        auth.authorize(&user("bob"), "get", "/pods").await;
        assert_eq!(access.calls.load(Ordering::SeqCst), 8, "allowed expired after 5 min");
    }

    #[tokio::test]
    async fn authorizer_errors_and_always_allow() {
        let access = Arc::new(FakeAccess {
            calls: AtomicUsize::new(0),
            allow: vec![],
            fail: true,
        });
        let auth = Auth::new(&cfg(false), None, Some(access));
        let d = auth.authorize(&UserInfo::default(), "get", "/stats/summary").await;
        assert!(matches!(d, Decision::Error { ref subresource, .. } if subresource == "stats"));
        let allow = Auth::new(&cfg(false), None, None);
        assert!(matches!(
            allow.authorize(&UserInfo::default(), "", "/exec/a/b/c").await,
            Decision::Allow
        ));
    }

    #[test]
    fn standalone_refuses_webhooks() {
        let mut c = cfg(false);
        c.authentication.webhook_enabled = true;
        assert!(matches!(
            Auth::from_config(&c, None),
            Err(AuthError::NeedsApiServer { .. })
        ));
        c.authentication.webhook_enabled = false;
        c.authorization.mode = AuthorizationMode::Webhook;
        assert!(Auth::from_config(&c, None).is_err());
        c.authorization.mode = AuthorizationMode::AlwaysAllow;
        assert!(Auth::from_config(&c, None).is_ok());
    }

    #[test]
    fn x509_cn_and_organizations() {
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let peer = PeerCertificates(Arc::new(vec![cert.der().clone()]));
        let u = x509_user(&peer).unwrap().unwrap();
        assert_eq!(u.name, "kube-apiserver-kubelet-client");
        assert_eq!(u.groups, ["system:masters"]);
        let mut empty = rcgen::CertificateParams::new(vec![]).unwrap();
        empty.distinguished_name = rcgen::DistinguishedName::new();
        let no_cn = empty.self_signed(&key).unwrap();
        assert!(x509_user(&PeerCertificates(Arc::new(vec![no_cn.der().clone()])))
            .unwrap()
            .is_none());
        let junk = PeerCertificates(Arc::new(vec![CertificateDer::from(vec![1u8, 2, 3])]));
        assert!(x509_user(&junk).is_err());
    }

    #[test]
    fn status_body_shape() {
        let r = status_response(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }
}
