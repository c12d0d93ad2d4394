//! Probe handlers (§2.8, `pkg/probe/{exec,http,tcp,grpc}` and `prober.go`): exec through CRI
//! ExecSync, HTTP GET, TCP connect and the gRPC health check, each bounded by `timeoutSeconds`.
//! The plain HTTP GET here is shared with the lifecycle hooks (§2.9).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Pod, PodStatus as ApiPodStatus, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;

use crate::clock::Clock;
use crate::genericruntime::expand::{env_mapping, expand};
use crate::genericruntime::seam::{cri, Code, RuntimeError, RuntimeService};

use super::results::ProbeType;

/// Exec output and HTTP bodies are read up to this many bytes (`maxRespBodyLength`, exec's limit).
pub const MAX_PROBE_OUTPUT: usize = 10 * 1024;
/// Redirects followed before giving up (Go's client and the kubelet's checker).
pub const MAX_REDIRECTS: usize = 10;
/// The kubelet's probe User-Agent: `kube-probe/<major>.<minor>` of the Kubernetes version keel
/// follows (the API types are v1.33).
pub const PROBE_USER_AGENT: &str = "kube-probe/1.33";
/// What the kubelet's lifecycle-hook HTTP client (Go's default client) sends.
pub const HOOK_USER_AGENT: &str = "Go-http-client/1.1";

/// Errors of running a probe or an HTTP GET. Probe *errors* are discarded by the worker (no state
/// change); transport failures of HTTP/TCP probes become Failure results with these messages.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("exec in container: {source}")]
    Exec {
        #[source]
        source: RuntimeError,
    },
    #[error("{0}")]
    Port(String),
    #[error("missing probe handler for {container}")]
    NoHandler { container: String },
    #[error("invalid URL {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("invalid header {name:?}")]
    Header { name: String },
    #[error("dial tcp {addr}: {}", go_net_error(.source))]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("dial tcp {addr}: i/o timeout")]
    ConnectTimeout { addr: String },
    #[error("tls: {source}")]
    Tls {
        #[source]
        source: std::io::Error,
    },
    #[error("tls: building the client configuration: {source}")]
    TlsConfig {
        #[source]
        source: rustls::Error,
    },
    #[error("tls: no client configuration (see the log at startup)")]
    NoTls,
    #[error("{source}")]
    Http {
        #[source]
        source: hyper::Error,
    },
    #[error("stopped after {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("context deadline exceeded (Client.Timeout exceeded while awaiting headers)")]
    Timeout,
}

/// Go's wording for the common socket errors (`connect: connection refused`).
fn go_net_error(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connect: connection refused".into(),
        K::TimedOut => "i/o timeout".into(),
        K::HostUnreachable => "connect: no route to host".into(),
        K::NetworkUnreachable => "connect: network is unreachable".into(),
        K::ConnectionReset => "read: connection reset by peer".into(),
        _ => e.to_string(),
    }
}

/// What a probe run found (`probe.Result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// Succeeded with a warning (an HTTP redirect not followed).
    Warning,
    Failure,
}

/// Runs one probe (one try; the worker retries errors).
#[async_trait]
pub trait ProbeRunner: Send + Sync {
    async fn run(
        &self,
        probe_type: ProbeType,
        probe: &Probe,
        pod: &Pod,
        status: &ApiPodStatus,
        container: &Container,
        container_id: &str,
    ) -> Result<(Verdict, String), ProbeError>;
}

/// Accepts any server certificate: probes and hooks do not verify TLS, as the kubelet does not.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client configuration that skips certificate verification.
pub fn insecure_tls() -> Result<Arc<rustls::ClientConfig>, ProbeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| ProbeError::TlsConfig { source })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// An HTTP response as probes and hooks need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// At most [`MAX_PROBE_OUTPUT`] bytes (lossy UTF-8).
    pub body: String,
    pub location: Option<String>,
}

/// Which redirects to follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redirects {
    /// Probes: only to the original hostname; otherwise the 3xx response is the answer.
    SameHost,
    /// Hooks (Go's default client): any.
    Any,
}

/// Stops the connection task when the request is done or abandoned (timeout).
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn host_port(uri: &Uri) -> Result<(String, u16, bool), ProbeError> {
    let bad = |message: &str| ProbeError::Url {
        url: uri.to_string(),
        message: message.to_string(),
    };
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(bad("unsupported scheme")),
    };
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok((host, port, tls))
}

/// `host:port` with IPv6 brackets (`net.JoinHostPort`).
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn connect(host: &str, port: u16) -> Result<TcpStream, ProbeError> {
    let addr = join_host_port(host, port);
    TcpStream::connect(&addr)
        .await
        .map_err(|source| ProbeError::Connect { addr, source })
}

/// One GET on a fresh connection (no keep-alive, no proxy, no compression).
async fn get_once(
    uri: &Uri,
    headers: &[(String, String)],
    host_header: Option<&str>,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<HttpResponse, ProbeError> {
    let (host, port, is_tls) = host_port(uri)?;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let authority = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_default();
    let mut req = Request::get(path)
        .body(Empty::<Bytes>::new())
        .map_err(|e| ProbeError::Url {
            url: uri.to_string(),
            message: e.to_string(),
        })?;
    let h = req.headers_mut();
    for (name, value) in headers {
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| ProbeError::Header { name: name.clone() })?;
        let v = HeaderValue::from_str(value).map_err(|_| ProbeError::Header { name: name.clone() })?;
        h.append(n, v);
    }
    let host_value = host_header.unwrap_or(&authority);
    let host_value = HeaderValue::from_str(host_value).map_err(|_| ProbeError::Header { name: "Host".into() })?;
    h.insert(http::header::HOST, host_value);
    h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));

    let tcp = connect(&host, port).await?;
    if is_tls {
        let tls = tls.ok_or(ProbeError::NoTls)?;
        let name = ServerName::try_from(host.clone()).map_err(|e| ProbeError::Url {
            url: uri.to_string(),
            message: e.to_string(),
        })?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|source| ProbeError::Tls { source })?;
        send(TokioIo::new(stream), req).await
    } else {
        send(TokioIo::new(tcp), req).await
    }
}

async fn send<IO>(io: IO, req: Request<Empty<Bytes>>) -> Result<HttpResponse, ProbeError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|source| ProbeError::Http { source })?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        // Ends when the server closes or the request is done; errors surface on the request.
        let _ = conn.await;
    }));
    let resp = sender
        .send_request(req)
        .await
        .map_err(|source| ProbeError::Http { source })?;
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        // A body cut short after the headers is not a failure: the status decides.
        let Ok(frame) = frame else { break };
        if let Some(d) = frame.data_ref() {
            buf.extend_from_slice(d);
            if buf.len() >= MAX_PROBE_OUTPUT {
                // Non-fatal truncation, as the kubelet's ReadAtMost.
                buf.truncate(MAX_PROBE_OUTPUT);
                break;
            }
        }
    }
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&buf).into_owned(),
        location,
    })
}

/// Resolves a `Location` against the URL it came from.
fn resolve_location(base: &Uri, location: &str) -> Result<Uri, ProbeError> {
    let bad = |message: &str| ProbeError::Url {
        url: location.to_string(),
        message: message.to_string(),
    };
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().map_err(|_| bad("failed to parse Location header"));
    }
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
    let target = if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let dir = base.path().rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        format!("{scheme}://{authority}{dir}/{location}")
    };
    target.parse().map_err(|_| bad("failed to parse Location header"))
}

/// GET `uri`, following redirects per `policy` (at most [`MAX_REDIRECTS`]). `host_header`
/// replaces the Host of the first request only, as Go's `req.Host` does.
pub async fn http_get(
    uri: &Uri,
    headers: &[(String, String)],
    host_header: Option<&str>,
    policy: Redirects,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<HttpResponse, ProbeError> {
    let first_host = uri.host().unwrap_or_default().to_string();
    let mut current = uri.clone();
    let mut host_header = host_header;
    let mut requests = 0;
    loop {
        let resp = get_once(&current, headers, host_header, tls).await?;
        requests += 1;
        host_header = None;
        let Some(location) = resp
            .location
            .clone()
            .filter(|_| matches!(resp.status, 301 | 302 | 303 | 307 | 308))
        else {
            return Ok(resp);
        };
        let next = resolve_location(&current, &location)?;
        if policy == Redirects::SameHost && next.host().unwrap_or_default() != first_host {
            return Ok(resp);
        }
        if requests >= MAX_REDIRECTS {
            return Err(ProbeError::TooManyRedirects);
        }
        current = next;
    }
}

/// A port by number, by the container's port name, or as a numeric string (`extractPort`).
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, ProbeError> {
    let n: i64 = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => {
            let by_name = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| i64::from(p.container_port));
            match by_name {
                Some(p) => p,
                None => name
                    .parse::<i64>()
                    .map_err(|_| ProbeError::Port(format!("strconv.Atoi: parsing {name:?}: invalid syntax")))?,
            }
        }
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ProbeError::Port(format!("invalid port number: {n}")))
}

/// `<scheme>://<host:port><path>` (`formatURL`); a path without a leading `/` gets one.
pub fn format_url(scheme: &str, host: &str, port: u16, path: &str) -> Result<Uri, ProbeError> {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let url = format!("{scheme}://{}{path}", join_host_port(host, port));
    url.parse().map_err(|e: http::uri::InvalidUri| ProbeError::Url {
        url: url.clone(),
        message: e.to_string(),
    })
}

/// The request headers of an HTTP probe: the spec's, then the default User-Agent and Accept
/// (an explicitly empty Accept is dropped); the Host header separately.
pub fn probe_headers(action: &HTTPGetAction) -> (Vec<(String, String)>, Option<String>) {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut host = None;
    for h in action.http_headers.iter().flatten() {
        if h.name.eq_ignore_ascii_case("host") {
            host = Some(h.value.clone());
        } else {
            headers.push((h.name.clone(), h.value.clone()));
        }
    }
    let has = |headers: &[(String, String)], n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if !has(&headers, "user-agent") {
        headers.push(("User-Agent".into(), PROBE_USER_AGENT.into()));
    }
    if !has(&headers, "accept") {
        headers.push(("Accept".into(), "*/*".into()));
    } else {
        headers.retain(|(k, v)| !(k.eq_ignore_ascii_case("accept") && v.is_empty()));
    }
    (headers, host)
}

/// Classifies an HTTP probe response (`DoHTTPProbe`).
pub fn http_verdict(resp: &HttpResponse) -> (Verdict, String) {
    match resp.status {
        200..=299 => (Verdict::Success, resp.body.clone()),
        300..=399 => (
            Verdict::Warning,
            format!("Probe terminated redirects, Response body: {}", resp.body),
        ),
        code => (Verdict::Failure, format!("HTTP probe failed with statuscode: {code}")),
    }
}

/// The exec probe's command with `$(VAR)` expanded from the container's static env only.
pub fn exec_command(command: &[String], container: &Container) -> Vec<String> {
    let envs: Vec<(String, String)> = container
        .env
        .iter()
        .flatten()
        .filter(|e| e.value_from.is_none())
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    let mapping = env_mapping(&envs);
    command.iter().map(|c| expand(c, &mapping)).collect()
}

/// The bare runtime ID of `<type>://<id>`.
pub fn bare_id(container_id: &str) -> &str {
    container_id.split_once("://").map(|(_, id)| id).unwrap_or(container_id)
}

/// Combined output, capped.
fn combined_output(stdout: &[u8], stderr: &[u8]) -> String {
    let mut out = stdout.to_vec();
    out.extend_from_slice(stderr);
    out.truncate(MAX_PROBE_OUTPUT);
    String::from_utf8_lossy(&out).into_owned()
}

/// The exec probe (`probe/exec`): exit 0 ⇒ Success, non-zero ⇒ Failure with the output, a
/// timeout ⇒ Failure `command "…" timed out`, any other runtime error ⇒ error.
pub async fn exec_probe(
    runtime: &dyn RuntimeService,
    clock: Clock,
    container_id: &str,
    cmd: Vec<String>,
    timeout_secs: i64,
) -> Result<(Verdict, String), ProbeError> {
    let timed_out = format!("command {:?} timed out", cmd.join(" "));
    let req = cri::ExecSyncRequest {
        container_id: bare_id(container_id).to_string(),
        cmd,
        timeout: timeout_secs,
    };
    // The runtime enforces the timeout; this guard only covers a runtime that does not.
    let guard = clock.to_real(Duration::from_secs(
        u64::try_from(timeout_secs).unwrap_or(1).max(1) + 10,
    ));
    match tokio::time::timeout(guard, runtime.exec_sync(req)).await {
        Err(_) => Ok((Verdict::Failure, timed_out)),
        Ok(Err(e)) if e.code == Code::DeadlineExceeded => Ok((Verdict::Failure, timed_out)),
        Ok(Err(source)) => Err(ProbeError::Exec { source }),
        Ok(Ok(resp)) => {
            let out = combined_output(&resp.stdout, &resp.stderr);
            Ok((
                if resp.exit_code == 0 {
                    Verdict::Success
                } else {
                    Verdict::Failure
                },
                out,
            ))
        }
    }
}

/// The TCP probe: a connect within the timeout.
pub async fn tcp_probe(host: &str, port: u16, timeout: Duration) -> (Verdict, String) {
    let addr = join_host_port(host, port);
    match tokio::time::timeout(timeout, connect(host, port)).await {
        Ok(Ok(_)) => (Verdict::Success, String::new()),
        Ok(Err(e)) => (Verdict::Failure, e.to_string()),
        Err(_) => (Verdict::Failure, ProbeError::ConnectTimeout { addr }.to_string()),
    }
}

/// The HTTP probe: the GET within the timeout, classified.
pub async fn http_probe(
    uri: &Uri,
    headers: &[(String, String)],
    host_header: Option<&str>,
    timeout: Duration,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> (Verdict, String) {
    let res = tokio::time::timeout(timeout, http_get(uri, headers, host_header, Redirects::SameHost, tls)).await;
    match res {
        Ok(Ok(resp)) => http_verdict(&resp),
        Ok(Err(e)) => (Verdict::Failure, format!("Get {:?}: {e}", uri.to_string())),
        Err(_) => (
            Verdict::Failure,
            format!("Get {:?}: {}", uri.to_string(), ProbeError::Timeout),
        ),
    }
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    /// UNKNOWN = 0, SERVING = 1, NOT_SERVING = 2, SERVICE_UNKNOWN = 3.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

const SERVING_STATUS_NAMES: [&str; 4] = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];

/// The gRPC probe (`probe/grpc`): `grpc.health.v1.Health/Check` with `service`; SERVING ⇒
/// Success. Every failure is a Failure with the kubelet's message, never an error.
pub async fn grpc_probe(host: &str, port: u16, service: &str, timeout: Duration) -> (Verdict, String) {
    let addr = format!("http://{}", join_host_port(host, port));
    let fail = |m: String| (Verdict::Failure, m);
    let endpoint = match tonic::transport::Endpoint::from_shared(addr.clone()) {
        Ok(e) => e.connect_timeout(timeout).timeout(timeout),
        Err(e) => return fail(format!("error: invalid target {addr}: {e}")),
    };
    let secs = crate::clock::go_duration(timeout);
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return fail(format!(
                "timeout: failed to connect service {:?} within {secs}: {e}",
                join_host_port(host, port)
            ))
        }
        Err(_) => {
            return fail(format!(
                "timeout: failed to connect service {:?} within {secs}: context deadline exceeded",
                join_host_port(host, port)
            ))
        }
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    let call = async {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
        let codec: tonic_prost::ProstCodec<HealthCheckRequest, HealthCheckResponse> =
            tonic_prost::ProstCodec::default();
        grpc.unary(
            tonic::Request::new(HealthCheckRequest {
                service: service.to_string(),
            }),
            path,
            codec,
        )
        .await
    };
    let resp = match tokio::time::timeout(timeout, call).await {
        Err(_) => return fail(format!("timeout: health rpc did not complete within {secs}")),
        Ok(Err(st)) => {
            return fail(match st.code() {
                tonic::Code::Unimplemented => format!(
                    "this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                    st.message()
                ),
                tonic::Code::DeadlineExceeded => format!("timeout: health rpc did not complete within {secs}"),
                _ => format!("error: health rpc probe failed: {}", st.message()),
            })
        }
        Ok(Ok(r)) => r.into_inner(),
    };
    if resp.status == 1 {
        (Verdict::Success, String::new())
    } else {
        let name = usize::try_from(resp.status)
            .ok()
            .and_then(|i| SERVING_STATUS_NAMES.get(i))
            .map(|s| s.to_string())
            .unwrap_or_else(|| resp.status.to_string());
        fail(format!("service unhealthy (responded with {name:?})"))
    }
}

/// The real probe runner: the runtime for exec, the network for the rest.
pub struct Prober {
    runtime: Arc<dyn RuntimeService>,
    clock: Clock,
    /// None only if rustls could not be configured (logged once): HTTPS probes then fail.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// The TLS configuration, or None with the reason logged (HTTPS requests then fail).
pub fn insecure_tls_or_log() -> Option<Arc<rustls::ClientConfig>> {
    match insecure_tls() {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "no TLS client for HTTPS probes and hooks");
            None
        }
    }
}

impl Prober {
    pub fn new(runtime: Arc<dyn RuntimeService>, clock: Clock) -> Self {
        Self {
            runtime,
            clock,
            tls: insecure_tls_or_log(),
        }
    }
}

fn timeout_of(probe: &Probe) -> i64 {
    // API defaulting gives 1 s; a zero from a source that skipped defaulting means the same.
    probe.timeout_seconds.filter(|t| *t > 0).map(i64::from).unwrap_or(1)
}

#[async_trait]
impl ProbeRunner for Prober {
    async fn run(
        &self,
        _probe_type: ProbeType,
        probe: &Probe,
        _pod: &Pod,
        status: &ApiPodStatus,
        container: &Container,
        container_id: &str,
    ) -> Result<(Verdict, String), ProbeError> {
        let timeout_secs = timeout_of(probe);
        let timeout = self
            .clock
            .to_real(Duration::from_secs(u64::try_from(timeout_secs).unwrap_or(1)));
        let pod_ip = status.pod_ip.clone().unwrap_or_default();
        if let Some(exec) = &probe.exec {
            let cmd = exec_command(exec.command.as_deref().unwrap_or_default(), container);
            return exec_probe(self.runtime.as_ref(), self.clock, container_id, cmd, timeout_secs).await;
        }
        if let Some(h) = &probe.http_get {
            let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
            let host = h.host.clone().filter(|s| !s.is_empty()).unwrap_or(pod_ip);
            let port = resolve_port(&h.port, container)?;
            let uri = format_url(&scheme, &host, port, h.path.as_deref().unwrap_or(""))?;
            let (headers, host_header) = probe_headers(h);
            return Ok(http_probe(&uri, &headers, host_header.as_deref(), timeout, self.tls.as_ref()).await);
        }
        if let Some(t) = &probe.tcp_socket {
            let host = t.host.clone().filter(|s| !s.is_empty()).unwrap_or(pod_ip);
            let port = resolve_port(&t.port, container)?;
            return Ok(tcp_probe(&host, port, timeout).await);
        }
        if let Some(g) = &probe.grpc {
            let port = u16::try_from(g.port)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| ProbeError::Port(format!("invalid port number: {}", g.port)))?;
            return Ok(grpc_probe(&pod_ip, port, g.service.as_deref().unwrap_or(""), timeout).await);
        }
        Err(ProbeError::NoHandler {
            container: container.name.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
