//! The kubelet-facing subresources, served as kube-apiserver serves them: `pods/exec`,
//! `pods/attach`, `pods/portforward` (upgrade required), `pods/log` (a streamed GET) and
//! `nodes/proxy` (any method, any path after `/proxy/`) go to
//! `https://<node address>:<status.daemonEndpoints.kubeletEndpoint.Port>` with the kubelet paths of
//! `pkg/registry/core/pod/strategy.go` and the upgrade-aware proxy of
//! `apimachinery/pkg/util/proxy/upgradeaware.go`: the client's upgrade request goes through
//! unchanged, the kubelet's 101 head comes back, then bytes are spliced both ways until either
//! side ends.
//!
//! WebSocket `v5.channel.k8s.io` (kubectl ≥ 1.30) and the `SPDY/3.1+portforward.k8s.io` tunnel
//! (kubectl ≥ 1.31) are passed through unchanged, as 1.36's `ExtendWebSocketsToKubelet` does for
//! a kubelet that declares support; a 1.30–1.35 apiserver would instead translate them to SPDY
//! towards the kubelet. keel serves v5 itself on the sim backend; on containerd the runtime
//! refuses v5 with 403 and kubectl falls back to SPDY, which is what a 1.29 cluster does.
//!
//! Errors are kube-apiserver's: a missing pod or node is a 404 Status, a pod on no node a 400
//! (`pod X does not have a host assigned`; its log is an empty 204), a non-upgrade exec a 400
//! (`Upgrade request required`). A kubelet that cannot be reached, or a node without a usable
//! address, is a 500 Status with no reason (`error dialing backend: dial tcp …`): the
//! upgrade-aware proxy hands plain errors to the REST responder, which makes them 500s, so the
//! real server answers neither 502 nor 503 here. A kubelet's own error answer to an upgrade
//! (403 with `X-Accepted-Stream-Protocol-Versions`, 400, 404 …) is passed back as it is.
//!
//! The apiserver authenticates to the kubelet with a client certificate from its CA (CN
//! `kube-apiserver-kubelet-client`, O `system:masters`, as kubeadm issues it) and does not verify
//! the kubelet's serving certificate (kube-apiserver without `--kubelet-certificate-authority`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::auth::UserInfo;
use super::authz::{self, Attributes, KUBELET_CLIENT_USER};
use super::errors::{ApiError, FieldError};
use super::pki::Pki;
use super::server::Shared;

/// The kubelet port when the Node reports none (`--kubelet-port` default).
const DEFAULT_KUBELET_PORT: u16 = 10250;
/// kube-apiserver's default `--kubelet-preferred-address-types` as kubeadm sets it.
const PREFERRED_ADDRESS_TYPES: &[&str] = &["InternalIP", "ExternalIP", "Hostname"];
/// Dial and TLS handshake limit (Go's default dialer timeout).
const DIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a failed log response becomes the error message (`maxReadLength`).
const MAX_ERROR_BODY: usize = 50 * 1024;
/// How long a failed response's body may take to arrive.
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Hop-by-hop headers a reverse proxy never forwards (RFC 9110 §7.6.1, Go's httputil).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

#[derive(Debug, thiserror::Error)]
pub enum KubeletClientError {
    #[error("issuing the kubelet client certificate")]
    Cert(#[source] super::pki::PkiError),
    #[error("parsing PEM {what}")]
    Pem {
        what: &'static str,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("building the kubelet client TLS configuration")]
    Tls(#[source] rustls::Error),
}

/// The TLS client the apiserver uses towards kubelets.
pub fn kubelet_connector(pki: &Pki) -> Result<TlsConnector, KubeletClientError> {
    let ck = pki
        .client_cert(KUBELET_CLIENT_USER, &["system:masters"])
        .map_err(KubeletClientError::Cert)?;
    let cert = CertificateDer::from_pem_slice(ck.cert_pem.as_bytes()).map_err(|source| KubeletClientError::Pem {
        what: "kubelet client certificate",
        source,
    })?;
    let key = PrivateKeyDer::from_pem_slice(ck.key_pem.as_bytes()).map_err(|source| KubeletClientError::Pem {
        what: "kubelet client key",
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // No --kubelet-certificate-authority: any kubelet serving certificate is accepted.
    let verifier = super::super::rawhttp::AnyServerCert::new();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(KubeletClientError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![cert], key)
        .map_err(KubeletClientError::Tls)?;
    // Upgrades (SPDY, WebSocket) are HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// One upgrade the proxy completed: the kubelet path, the requested `Upgrade` and the protocol
/// the kubelet chose (`X-Stream-Protocol-Version` for SPDY, `Sec-WebSocket-Protocol` for
/// WebSocket).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeRecord {
    pub path: String,
    pub upgrade: String,
    pub protocol: String,
}

/// A pod subresource served by the kubelet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodSub {
    Exec,
    Attach,
    PortForward,
    Log,
}

impl PodSub {
    fn name(self) -> &'static str {
        match self {
            PodSub::Exec => "exec",
            PodSub::Attach => "attach",
            PodSub::PortForward => "portforward",
            PodSub::Log => "log",
        }
    }
}

/// A request the kubelet proxy serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Pod {
        ns: String,
        name: String,
        sub: PodSub,
    },
    /// `rest` is what follows `/proxy` in the request path ("" or "/...").
    Node {
        name: String,
        rest: String,
    },
}

/// Recognises the proxied paths.
pub fn target(path: &str) -> Option<Target> {
    let tail = path.strip_prefix("/api/v1/")?;
    if let Some(t) = tail.strip_prefix("nodes/") {
        let (name, rest) = t.split_once('/')?;
        let rest = rest.strip_prefix("proxy")?;
        if name.is_empty() || !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        return Some(Target::Node {
            name: name.to_string(),
            rest: rest.to_string(),
        });
    }
    let segs: Vec<&str> = tail.split('/').collect();
    match segs.as_slice() {
        ["namespaces", ns, "pods", name, sub] if !ns.is_empty() && !name.is_empty() => {
            let sub = match *sub {
                "exec" => PodSub::Exec,
                "attach" => PodSub::Attach,
                "portforward" => PodSub::PortForward,
                "log" => PodSub::Log,
                _ => return None,
            };
            Some(Target::Pod {
                ns: ns.to_string(),
                name: name.to_string(),
                sub,
            })
        }
        _ => None,
    }
}

/// Where a request goes on the kubelet.
struct Location {
    host: String,
    port: u16,
    /// Path and query on the kubelet.
    path_and_query: String,
}

impl Location {
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn url(&self) -> String {
        format!("https://{}{}", self.authority(), self.path_and_query)
    }
}

/// Serves one proxied request for an authenticated `user`.
pub async fn serve(shared: Arc<Shared>, user: UserInfo, req: Request<Incoming>, target: Target) -> Response<Body> {
    match serve_inner(shared, &user, req, &target).await {
        Ok(r) => r,
        Err(e) => super::handlers::status_response(&e),
    }
}

async fn serve_inner(
    shared: Arc<Shared>,
    user: &UserInfo,
    mut req: Request<Incoming>,
    target: &Target,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let allowed_methods: &[Method] = match target {
        Target::Pod { sub: PodSub::Log, .. } => &[Method::GET],
        Target::Pod { .. } => &[Method::GET, Method::POST],
        Target::Node { .. } => &[
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::HEAD,
            Method::OPTIONS,
        ],
    };
    if !allowed_methods.contains(&method) {
        return Err(ApiError::method_not_allowed());
    }
    let attrs = match target {
        Target::Pod { ns, name, sub } => Attributes::resource(verb(&method), "", "pods", sub.name(), ns, name),
        Target::Node { name, .. } => Attributes::resource(verb(&method), "", "nodes", "proxy", "", name),
    };
    let decision = authz::authorize(&user.name, &user.groups, &attrs, &shared.grants);
    if !decision.allowed {
        return Err(authz::forbidden(&user.name, &attrs, &decision.reason));
    }
    let query = parse_query_multi(req.uri().query());
    let location = match target {
        Target::Pod { ns, name, sub } => match pod_location(&shared, ns, name, *sub, &query)? {
            Some(l) => l,
            // A pod not yet on a node has no logs: the apiserver answers 204.
            None => {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::NO_CONTENT;
                return Ok(r);
            }
        },
        Target::Node { name, rest } => {
            if rest.is_empty() && (method == Method::GET || method == Method::HEAD) {
                // `proxyRedirectsforRootPath`: the proxy root is served under a trailing slash.
                let q = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
                if let Ok(v) = HeaderValue::from_str(&format!("{}/{q}", req.uri().path())) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                return Ok(r);
            }
            let (host, port) = node_address(&shared, name)?;
            let mut path_and_query = if rest.is_empty() { "/".to_string() } else { rest.clone() };
            if let Some(q) = req.uri().query() {
                path_and_query.push('?');
                path_and_query.push_str(q);
            }
            Location {
                host,
                port,
                path_and_query,
            }
        }
    };

    let upgrade_required = matches!(
        target,
        Target::Pod {
            sub: PodSub::Exec | PodSub::Attach | PodSub::PortForward,
            ..
        }
    );
    if let Target::Pod {
        name, sub: PodSub::Log, ..
    } = target
    {
        // The log is a `rest.Streamer`, never upgrade-proxied: a WebSocket request gets the
        // kubelet's log written into a WebSocket by the apiserver itself, anything else the body.
        return proxy_log(&shared, req, &location, name).await;
    }
    if is_upgrade_request(req.headers()) {
        let on_upgrade = hyper::upgrade::on(&mut req);
        return proxy_upgrade(shared, req, on_upgrade, &location).await;
    }
    if upgrade_required {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    match target {
        Target::Pod { name, .. } => proxy_log(&shared, req, &location, name).await,
        Target::Node { .. } => proxy_plain(&shared, req, &location).await,
    }
}

/// The verb kube-apiserver's RequestInfo derives from the method.
fn verb(m: &Method) -> &'static str {
    match *m {
        // Note: a WebSocket exec is a GET, so `get pods/exec` suffices for it, as on 1.30–1.34.
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    }
}

/// `httpstream.IsUpgradeRequest`: a `Connection` header naming `upgrade`.
fn is_upgrade_request(h: &HeaderMap) -> bool {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Query parameters in order, repeated keys kept.
fn parse_query_multi(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (super::handlers::percent_decode(k), super::handlers::percent_decode(v))
        })
        .collect()
}

fn first<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// `Convert_Slice_string_To_bool`: absent, "0" and "false" are false; anything else is true.
fn query_bool(q: &[(String, String)], key: &str) -> bool {
    match first(q, key) {
        None => false,
        Some(v) => !(v == "0" || v.eq_ignore_ascii_case("false")),
    }
}

fn query_int(q: &[(String, String)], key: &str) -> Result<Option<i64>, ApiError> {
    match first(q, key) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("strconv.ParseInt: parsing {v:?}: invalid syntax"))),
    }
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's `url.Values.Encode`: keys sorted, values of one key in order.
fn encode_query(params: &[(&str, String)]) -> String {
    let mut sorted: Vec<&(&str, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The kubelet URL for a pod subresource (`streamLocation`, `PortForwardLocation`,
/// `LogLocation`); None for logs of a pod that is on no node yet.
fn pod_location(
    shared: &Shared,
    ns: &str,
    name: &str,
    sub: PodSub,
    query: &[(String, String)],
) -> Result<Option<Location>, ApiError> {
    let pod = {
        let store = shared.store.lock();
        store
            .get("pods", ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found("pods", "", name))?
    };
    let mut params: Vec<(&str, String)> = Vec::new();
    let container = match sub {
        PodSub::PortForward => String::new(),
        _ => validate_container(first(query, "container").unwrap_or(""), &pod, name)?,
    };
    match sub {
        PodSub::Exec | PodSub::Attach => {
            for (opt, param) in [
                ("stdin", "input"),
                ("stdout", "output"),
                ("stderr", "error"),
                ("tty", "tty"),
            ] {
                if query_bool(query, opt) {
                    params.push((param, "1".into()));
                }
            }
            if sub == PodSub::Exec {
                for (k, v) in query {
                    if k == "command" {
                        params.push(("command", v.clone()));
                    }
                }
            }
        }
        PodSub::PortForward => {
            let mut ports = Vec::new();
            for (k, v) in query {
                if k == "ports" {
                    for p in v.split(',').filter(|p| !p.is_empty()) {
                        let n: i32 = p.trim().parse().map_err(|_| {
                            ApiError::bad_request(format!("strconv.ParseInt: parsing {p:?}: invalid syntax"))
                        })?;
                        ports.push(n.to_string());
                    }
                }
            }
            if !ports.is_empty() {
                params.push(("port", ports.join(",")));
            }
        }
        PodSub::Log => params = log_params(query, name)?,
    }
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
    if node.is_empty() {
        if sub == PodSub::Log {
            return Ok(None);
        }
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let (host, port) = node_address(shared, node)?;
    let path = match sub {
        PodSub::Exec => format!("/exec/{ns}/{name}/{container}"),
        PodSub::Attach => format!("/attach/{ns}/{name}/{container}"),
        PodSub::PortForward => format!("/portForward/{ns}/{name}"),
        PodSub::Log => format!("/containerLogs/{ns}/{name}/{container}"),
    };
    let q = encode_query(&params);
    let path_and_query = if q.is_empty() { path } else { format!("{path}?{q}") };
    Ok(Some(Location {
        host,
        port,
        path_and_query,
    }))
}

/// `PodLogOptions` from the query, validated (`ValidatePodLogOptions`) and mapped to the
/// kubelet's parameters as `LogLocation` does.
fn log_params(query: &[(String, String)], pod: &str) -> Result<Vec<(&'static str, String)>, ApiError> {
    let mut params = Vec::new();
    for key in ["follow", "previous", "timestamps"] {
        if query_bool(query, key) {
            params.push((key, "true".to_string()));
        }
    }
    let since_seconds = query_int(query, "sinceSeconds")?;
    let since_time =
        match first(query, "sinceTime") {
            None | Some("") => None,
            Some(t) => Some(t.parse::<jiff::Timestamp>().map_err(|e| {
                ApiError::bad_request(format!("parsing time {t:?} as \"2006-01-02T15:04:05Z07:00\": {e}"))
            })?),
        };
    let tail_lines = query_int(query, "tailLines")?;
    let limit_bytes = query_int(query, "limitBytes")?;
    let mut errs = Vec::new();
    if let Some(t) = tail_lines.filter(|t| *t < 0) {
        errs.push(FieldError::invalid(
            "tailLines",
            serde_json::json!(t),
            "must be greater than or equal to 0",
        ));
    }
    if let Some(l) = limit_bytes.filter(|l| *l < 1) {
        errs.push(FieldError::invalid(
            "limitBytes",
            serde_json::json!(l),
            "must be greater than 0",
        ));
    }
    match (since_seconds, since_time) {
        (Some(_), Some(_)) => errs.push(FieldError::forbidden(
            "",
            "at most one of `sinceTime` or `sinceSeconds` may be specified",
        )),
        (Some(s), None) if s < 1 => errs.push(FieldError::invalid(
            "sinceSeconds",
            serde_json::json!(s),
            "must be greater than 0",
        )),
        _ => {}
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid("PodLogOptions", "", pod, errs));
    }
    if let Some(s) = since_seconds {
        params.push(("sinceSeconds", s.to_string()));
    }
    if let Some(t) = since_time {
        // RFC 3339 to the second, as Go's time.RFC3339 formats it.
        params.push(("sinceTime", t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
    }
    if let Some(t) = tail_lines {
        params.push(("tailLines", t.to_string()));
    }
    if let Some(l) = limit_bytes {
        params.push(("limitBytes", l.to_string()));
    }
    Ok(params)
}

/// `validateContainer`: the named container must exist; unnamed means the only one.
fn validate_container(container: &str, pod: &Value, name: &str) -> Result<String, ApiError> {
    let names = |key: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let regular = names("containers");
    let mut all = names("initContainers");
    all.extend(regular.iter().cloned());
    all.extend(names("ephemeralContainers"));
    if container.is_empty() {
        return match regular.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}"
            ))),
            _ => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                all.join(" ")
            ))),
        };
    }
    if !all.iter().any(|c| c == container) {
        return Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    Ok(container.to_string())
}

/// `NodeConnectionInfoGetter`: the preferred address and the kubelet port of a Node.
fn node_address(shared: &Shared, node: &str) -> Result<(String, u16), ApiError> {
    let obj = {
        let store = shared.store.lock();
        store
            .get("nodes", "", node)
            .cloned()
            .ok_or_else(|| ApiError::not_found("nodes", "", node))?
    };
    let addrs: Vec<(String, String)> = obj
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| {
                    let s = |k: &str| x.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    (s("type"), s("address"))
                })
                .collect()
        })
        .unwrap_or_default();
    let host = PREFERRED_ADDRESS_TYPES
        .iter()
        .find_map(|t| addrs.iter().find(|(ty, a)| ty == t && !a.is_empty()))
        .map(|(_, a)| a.clone());
    let Some(host) = host else {
        let known: Vec<String> = addrs.iter().map(|(t, a)| format!("{{{t} {a}}}")).collect();
        // A plain error in kube-apiserver: 500 with no reason.
        return Err(ApiError::new(
            500,
            "",
            format!("no preferred addresses found; known addresses: [{}]", known.join(" ")),
        ));
    };
    let port = obj
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .filter(|p| *p > 0 && *p <= i64::from(u16::MAX))
        .map_or(DEFAULT_KUBELET_PORT, |p| p as u16);
    Ok((host, port))
}

/// Whether `host` is an address of this machine. Every node of a test cluster runs here, and
/// test kubelets listen on loopback only (tests never listen on other interfaces), while a node
/// reports a non-loopback InternalIP (the kubelet refuses loopback node IPs): the "cluster
/// network" of the tests routes this machine's own addresses to 127.0.0.1, as a node-local
/// tunnel (a Konnectivity agent) would reach its kubelet. Everything else is dialled as given.
fn is_this_machine(host: &str) -> bool {
    host.parse::<IpAddr>()
        .ok()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        // Binding proves the address is local without sending anything.
        .is_some_and(|ip| std::net::UdpSocket::bind((ip, 0)).is_ok())
}

/// Opens a TLS connection to the kubelet and an HTTP/1.1 client on it (upgrades enabled).
async fn connect<B>(shared: &Shared, loc: &Location) -> Result<hyper::client::conn::http1::SendRequest<B>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let dial = async {
        let dial_host = if is_this_machine(&loc.host) {
            "127.0.0.1"
        } else {
            loc.host.as_str()
        };
        let tcp = TcpStream::connect((dial_host, loc.port))
            .await
            .map_err(|e| format!("dial tcp {}: connect: {e}", loc.authority()))?;
        let _ = tcp.set_nodelay(true);
        let server_name = match loc.host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => {
                ServerName::try_from(loc.host.clone()).map_err(|e| format!("invalid host {:?}: {e}", loc.host))?
            }
        };
        let tls = shared
            .kubelet_tls
            .connect(server_name, tcp)
            .await
            .map_err(|e| format!("tls handshake with {}: {e}", loc.authority()))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("http handshake with {}: {e}", loc.authority()))?;
        let shutdown = shared.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = conn.with_upgrades() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "test apiserver: kubelet connection ended with an error");
                    }
                }
            }
        });
        Ok(sender)
    };
    match tokio::time::timeout(DIAL_TIMEOUT, dial).await {
        Ok(r) => r,
        Err(_) => Err(format!("dial tcp {}: i/o timeout", loc.authority())),
    }
}

/// The request towards the kubelet: the client's method, headers and body, minus what the
/// apiserver consumed (its credentials) and, unless `keep_upgrade`, the hop-by-hop headers.
fn backend_request(req: Request<Incoming>, loc: &Location, keep_upgrade: bool) -> Result<Request<Incoming>, ApiError> {
    let (parts, body) = req.into_parts();
    let mut b = Request::builder()
        .method(parts.method.clone())
        .uri(loc.path_and_query.as_str());
    let connection_listed: Vec<String> = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    for (k, v) in &parts.headers {
        let n = k.as_str();
        // The authentication filter deletes the credentials it used; the body is re-framed.
        let consumed = n == "authorization"
            || n.starts_with("impersonate-")
            || n == "host"
            || n == "content-length"
            || n == "transfer-encoding";
        let hop = HOP_BY_HOP.contains(&n) || connection_listed.iter().any(|c| c == n);
        if consumed || (hop && !keep_upgrade) {
            continue;
        }
        b = b.header(k, v);
    }
    // X-Forwarded-For is left out: the test server does not track client addresses and the
    // kubelet does not read it.
    b = b.header(header::HOST, loc.authority());
    b.body(body)
        .map_err(|e| ApiError::new(500, "InternalError", format!("building the kubelet request: {e}")))
}

/// The upgrade path of `UpgradeAwareHandler.tryUpgrade`.
async fn proxy_upgrade(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    on_upgrade: hyper::upgrade::OnUpgrade,
    loc: &Location,
) -> Result<Response<Body>, ApiError> {
    let mut sender = connect(&shared, loc)
        .await
        .map_err(|e| ApiError::new(500, "", format!("error dialing backend: {e}")))?;
    let upgrade_header = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let breq = backend_request(req, loc, true)?;
    let mut bresp = sender
        .send_request(breq)
        .await
        .map_err(|e| ApiError::new(500, "", format!("error sending request: {e}")))?;
    let status = bresp.status();
    if status != StatusCode::SWITCHING_PROTOCOLS && status.as_u16() < 400 {
        return Err(ApiError::new(
            500,
            "",
            format!("invalid upgrade response: status code {}", status.as_u16()),
        ));
    }
    if status != StatusCode::SWITCHING_PROTOCOLS {
        // The kubelet's error answer goes back as it is.
        let (parts, body) = bresp.into_parts();
        let mut r = Response::new(Body::new(body));
        *r.status_mut() = parts.status;
        *r.headers_mut() = parts.headers;
        return Ok(r);
    }
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *r.headers_mut() = bresp.headers().clone();
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let protocol = match h("x-stream-protocol-version") {
        p if p.is_empty() => h("sec-websocket-protocol"),
        p => p,
    };
    let record = UpgradeRecord {
        path: loc.path_and_query.split('?').next().unwrap_or("").to_string(),
        upgrade: upgrade_header,
        protocol,
    };
    shared.upgrades.lock().unwrap_or_else(|p| p.into_inner()).push(record);
    let backend_upgrade = hyper::upgrade::on(&mut bresp);
    let shutdown = shared.shutdown.clone();
    tokio::spawn(async move {
        let (client, backend) = match tokio::join!(on_upgrade, backend_upgrade) {
            (Ok(c), Ok(b)) => (c, b),
            (c, b) => {
                tracing::debug!(
                    client = ?c.err(),
                    kubelet = ?b.err(),
                    "test apiserver: upgrade to the kubelet did not complete"
                );
                return;
            }
        };
        let (mut cr, mut cw) = tokio::io::split(TokioIo::new(client));
        let (mut br, mut bw) = tokio::io::split(TokioIo::new(backend));
        // Like the Go proxy: once either direction ends, both connections close.
        tokio::select! {
            _ = shutdown.cancelled() => {}
            r = tokio::io::copy(&mut cr, &mut bw) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "test apiserver: proxying client to kubelet");
                }
            }
            r = tokio::io::copy(&mut br, &mut cw) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "test apiserver: proxying kubelet to client");
                }
            }
        }
        let _ = cw.shutdown().await;
        let _ = bw.shutdown().await;
    });
    Ok(r)
}

/// `pods/log`: the `LocationStreamer` with the generic response checker. The kubelet is asked
/// with a plain GET of its own (no client headers); the body goes back as `text/plain`, or,
/// for a WebSocket request, into a WebSocket (`StreamObject` with `wsstream.NewReader`).
async fn proxy_log(
    shared: &Shared,
    mut req: Request<Incoming>,
    loc: &Location,
    pod: &str,
) -> Result<Response<Body>, ApiError> {
    let websocket = is_websocket_request(req.headers());
    let on_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let url = loc.url();
    let mut sender = connect(shared, loc)
        .await
        .map_err(|e| ApiError::new(500, "", format!("Get {url:?}: {e}")))?;
    let breq = Request::get(loc.path_and_query.as_str())
        .header(header::HOST, loc.authority())
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| ApiError::new(500, "InternalError", format!("building the kubelet request: {e}")))?;
    let bresp = sender
        .send_request(breq)
        .await
        .map_err(|e| ApiError::new(500, "", format!("Get {url:?}: {e}")))?;
    let code = bresp.status().as_u16();
    if !(200..=206).contains(&code) {
        let text = read_error_body(bresp.into_body()).await;
        return Err(generic_response_error(code, &text, pod));
    }
    if let Some(on_upgrade) = on_upgrade {
        return Ok(websocket_log(shared, req.headers(), on_upgrade, bresp.into_body()));
    }
    let mut r = Response::new(Body::new(bresp.into_body()));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(r)
}

/// `wsstream.IsWebSocketRequest`: `Upgrade: websocket` on an upgrade request.
fn is_websocket_request(h: &HeaderMap) -> bool {
    h.get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
        && is_upgrade_request(h)
}

/// The reader protocols of `wsstream.NewDefaultReaderProtocols`: none asked means "" (binary).
/// The first protocol the client lists that the server knows wins; true means base64 text.
fn reader_protocol(h: &HeaderMap) -> Option<(String, bool)> {
    let asked: Vec<String> = h
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if asked.is_empty() {
        return Some((String::new(), false));
    }
    asked.into_iter().find_map(|p| match p.as_str() {
        "binary.k8s.io" => Some((p, false)),
        "base64.binary.k8s.io" => Some((p, true)),
        _ => None,
    })
}

/// A plain answer to a WebSocket handshake that failed (x/net/websocket's server).
fn handshake_failure(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    if status == StatusCode::BAD_REQUEST {
        r.headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    }
    r
}

/// `wsstream.Reader.Copy`: the WebSocket handshake (x/net/websocket: version 13 and a key, or
/// 400; a protocol it does not know, 403), then one empty message (the reader's "ping"), the log
/// in messages of at most 2048 bytes (base64 text for `base64.binary.k8s.io`), and a close
/// frame when the log ends. Whatever the client sends is ignored until it closes.
fn websocket_log(
    shared: &Shared,
    h: &HeaderMap,
    on_upgrade: hyper::upgrade::OnUpgrade,
    log: Incoming,
) -> Response<Body> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;

    let key = h.get(header::SEC_WEBSOCKET_KEY).map(|k| k.as_bytes().to_vec());
    let version_ok = h
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = key.filter(|_| version_ok) else {
        return handshake_failure(StatusCode::BAD_REQUEST);
    };
    let Some((protocol, base64)) = reader_protocol(h) else {
        return handshake_failure(StatusCode::FORBIDDEN);
    };
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hs = r.headers_mut();
    hs.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    hs.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(&key)) {
        hs.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Ok(v) = HeaderValue::from_str(&protocol) {
        if !protocol.is_empty() {
            hs.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
        }
    }
    let shutdown = shared.shutdown.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "test apiserver: log WebSocket upgrade did not complete");
                return;
            }
        };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let (mut tx, mut rx) = ws.split();
        let message = move |chunk: &[u8]| {
            if base64 {
                use base64::Engine;
                Message::text(base64::engine::general_purpose::STANDARD.encode(chunk))
            } else {
                Message::binary(Bytes::copy_from_slice(chunk))
            }
        };
        let copy = async {
            let send_err = |e: tokio_tungstenite::tungstenite::Error| e.to_string();
            tx.send(message(&[])).await.map_err(send_err)?;
            let mut log = log;
            while let Some(frame) = log.frame().await {
                let frame = frame.map_err(|e| format!("reading the log: {e}"))?;
                let Ok(data) = frame.into_data() else { continue };
                for chunk in data.chunks(2048) {
                    tx.send(message(chunk)).await.map_err(send_err)?;
                }
            }
            // Closing the sink sends the close frame (status 1000, like `ws.Close()`).
            tx.close().await.map_err(send_err)
        };
        let client_gone = async { while let Some(Ok(_)) = rx.next().await {} };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = client_gone => {}
            r = copy => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "test apiserver: writing the log WebSocket");
                }
            }
        }
    });
    r
}

/// `nodes/proxy` without an upgrade: a reverse proxy of the whole exchange.
async fn proxy_plain(shared: &Shared, req: Request<Incoming>, loc: &Location) -> Result<Response<Body>, ApiError> {
    let mut sender = connect(shared, loc).await.map_err(|e| ApiError::new(500, "", e))?;
    let breq = backend_request(req, loc, false)?;
    let bresp = sender
        .send_request(breq)
        .await
        .map_err(|e| ApiError::new(500, "", e.to_string()))?;
    let (parts, body) = bresp.into_parts();
    let mut r = Response::new(Body::new(body));
    *r.status_mut() = parts.status;
    for (k, v) in &parts.headers {
        let n = k.as_str();
        // Hop-by-hop headers stay on their hop; CORS headers are removed (corsRemovingTransport).
        if HOP_BY_HOP.contains(&n) || n.starts_with("access-control-") {
            continue;
        }
        r.headers_mut().append(HeaderName::from(k), v.clone());
    }
    Ok(r)
}

async fn read_error_body(body: Incoming) -> String {
    let limited = http_body_util::Limited::new(body, MAX_ERROR_BODY);
    match tokio::time::timeout(ERROR_BODY_TIMEOUT, limited.collect()).await {
        Ok(Ok(c)) => {
            let b: Bytes = c.to_bytes();
            String::from_utf8_lossy(&b).into_owned()
        }
        _ => String::new(),
    }
}

/// `GenericHttpResponseChecker.Check` for `pods/log`: 500 and 400 keep the kubelet's text, the
/// rest become `NewGenericServerResponse` errors naming `( pods/log <pod>)`.
fn generic_response_error(code: u16, text: &str, pod: &str) -> ApiError {
    match code {
        500 => return ApiError::new(500, "InternalError", format!("Internal error occurred: {text}")),
        400 => return ApiError::bad_request(text),
        _ => {}
    }
    let (reason, message): (&'static str, String) = match code {
        401 => (
            "Unauthorized",
            "the server has asked for the client to provide credentials".into(),
        ),
        403 => ("Forbidden", text.to_string()),
        404 => ("NotFound", "the server could not find the requested resource".into()),
        409 => ("Conflict", "the server reported a conflict".into()),
        422 => (
            "Invalid",
            "the server rejected our request due to an error in our request".into(),
        ),
        429 => (
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later".into(),
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request".into(),
        ),
        504 => (
            "Timeout",
            "the server was unable to return a response in the time allotted, but may still be processing the request"
                .into(),
        ),
        c if c >= 500 => (
            "InternalError",
            format!("an error on the server ({text:?}) has prevented the request from succeeding"),
        ),
        c => (
            "",
            format!("the server responded with the status code {c} but did not return more information"),
        ),
    };
    let mut e = ApiError::new(code, reason, format!("{message} ( pods/log {pod})"));
    e.details = Some(serde_json::json!({"name": pod, "kind": "pods/log"}));
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(s: &str) -> Vec<(String, String)> {
        parse_query_multi(Some(s))
    }

    #[test]
    fn paths_are_recognised() {
        assert_eq!(
            target("/api/v1/namespaces/default/pods/p/exec"),
            Some(Target::Pod {
                ns: "default".into(),
                name: "p".into(),
                sub: PodSub::Exec
            })
        );
        assert_eq!(
            target("/api/v1/nodes/n1/proxy/stats/summary"),
            Some(Target::Node {
                name: "n1".into(),
                rest: "/stats/summary".into()
            })
        );
        assert_eq!(
            target("/api/v1/nodes/n1/proxy"),
            Some(Target::Node {
                name: "n1".into(),
                rest: String::new()
            })
        );
        assert_eq!(target("/api/v1/nodes/n1/proxyx"), None);
        assert_eq!(target("/api/v1/nodes/n1/status"), None);
        assert_eq!(target("/api/v1/namespaces/default/pods/p/status"), None);
        assert_eq!(target("/api/v1/namespaces/default/pods/p/proxy"), None);
    }

    #[test]
    fn kubelet_query_is_encoded_like_go() {
        let p = vec![
            ("tty", "1".to_string()),
            ("command", "sh".to_string()),
            ("command", "-c".to_string()),
            ("command", "echo a&b=c é".to_string()),
            ("input", "1".to_string()),
        ];
        assert_eq!(
            encode_query(&p),
            "command=sh&command=-c&command=echo+a%26b%3Dc+%C3%A9&input=1&tty=1"
        );
    }

    #[test]
    fn bools_follow_the_parameter_codec() {
        let v = q("a=&b=0&c=false&d=FALSE&e=true&f=1&g=yes");
        assert!(query_bool(&v, "a"));
        assert!(!query_bool(&v, "b"));
        assert!(!query_bool(&v, "c"));
        assert!(!query_bool(&v, "d"));
        assert!(query_bool(&v, "e"));
        assert!(query_bool(&v, "f"));
        assert!(query_bool(&v, "g"));
        assert!(!query_bool(&v, "missing"));
    }

    #[test]
    fn log_options_map_and_validate() {
        let p = log_params(
            &q("follow=true&timestamps=1&tailLines=10&limitBytes=5&sinceTime=2024-01-02T03:04:05.678Z&container=c"),
            "p",
        )
        .unwrap();
        assert_eq!(
            encode_query(&p),
            "follow=true&limitBytes=5&sinceTime=2024-01-02T03%3A04%3A05Z&tailLines=10&timestamps=true"
        );
        let p = log_params(&q("previous=false&sinceSeconds=30"), "p").unwrap();
        assert_eq!(encode_query(&p), "sinceSeconds=30");
        let e = log_params(&q("tailLines=-1"), "p").unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "PodLogOptions \"p\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"
        );
        let e = log_params(&q("sinceSeconds=5&sinceTime=2024-01-02T03:04:05Z"), "p").unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message.contains("at most one of `sinceTime` or `sinceSeconds`"),
            "{}",
            e.message
        );
        assert_eq!(log_params(&q("limitBytes=0"), "p").unwrap_err().code, 422);
        assert_eq!(log_params(&q("tailLines=x"), "p").unwrap_err().code, 400);
        assert_eq!(log_params(&q("sinceTime=yesterday"), "p").unwrap_err().code, 400);
    }

    #[test]
    fn containers_are_validated_like_the_apiserver() {
        let one = json!({"spec": {"containers": [{"name": "main"}]}});
        assert_eq!(validate_container("", &one, "p").unwrap(), "main");
        assert_eq!(validate_container("main", &one, "p").unwrap(), "main");
        let e = validate_container("other", &one, "p").unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "container other is not valid for pod p")
        );
        let two = json!({"spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "a"}, {"name": "b"}]}});
        let e = validate_container("", &two, "p").unwrap_err();
        assert_eq!(
            e.message,
            "a container name must be specified for pod p, choose one of: [init a b]"
        );
        assert_eq!(validate_container("init", &two, "p").unwrap(), "init");
    }

    #[test]
    fn log_errors_from_the_kubelet_read_like_kubectl_shows_them() {
        let e = generic_response_error(404, "pod does not exist", "p");
        assert_eq!(
            (e.code, e.reason, e.message.as_str()),
            (
                404,
                "NotFound",
                "the server could not find the requested resource ( pods/log p)"
            )
        );
        let e = generic_response_error(
            400,
            "container \"c\" in pod \"p\" is waiting to start: ContainerCreating",
            "p",
        );
        assert_eq!((e.code, e.reason), (400, "BadRequest"));
        assert!(e.message.starts_with("container \"c\""));
        let e = generic_response_error(
            403,
            "Forbidden (user=x, verb=get, resource=nodes, subresource=proxy)",
            "p",
        );
        assert_eq!(e.reason, "Forbidden");
        assert!(e.message.starts_with("Forbidden (user=x"));
    }

    #[test]
    fn upgrade_requests_are_detected_by_the_connection_header() {
        let mut h = HeaderMap::new();
        assert!(!is_upgrade_request(&h));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(is_upgrade_request(&h));
    }
}
