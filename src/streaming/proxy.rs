//! The upgrade-aware proxy from the kubelet server to a CRI runtime's streaming server
//! (kubelet-api-protocols.md §3.1, Go's `UpgradeAwareHandler` as `proxyStream` uses it).
//!
//! The client's upgrade request is written to the runtime's one-shot URL (path of the URL, the
//! query dropped: the runtime takes its options from the token), with the client's headers minus
//! credentials and `X-Forwarded-For` appended. On 101 both upgraded connections are spliced; a
//! ≥400 answer goes back as it came; anything else is a 500.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http::{header, HeaderName, HeaderValue, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

/// Largest response head accepted from the runtime (Go's `MaxHeaderBytes`).
const MAX_HEAD_BYTES: usize = 1 << 20;
/// Largest error body passed back from the runtime.
const MAX_ERROR_BODY_BYTES: usize = 1 << 20;
/// Most response headers parsed.
const MAX_HEADERS: usize = 128;
/// Dialing the runtime and reading its answer must finish within this.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Go's server Read/WriteTimeout (4 h) stay on hijacked connections, capping every exec,
/// attach and port-forward session; keel keeps that cap (a network deadline: real time).
const MAX_SESSION: Duration = Duration::from_secs(4 * 3600);

/// Proxying to the runtime's streaming server failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid streaming URL {url:?}: {message}")]
    BadUrl { url: String, message: String },
    #[error("dialing the streaming server {addr}: {source}")]
    Dial {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the streaming server: {source}")]
    Io {
        #[source]
        source: std::io::Error,
    },
    #[error("the streaming server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the streaming server's response head is larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("the streaming server closed the connection before answering")]
    Closed,
    #[error("parsing the streaming server's response: {0}")]
    Parse(httparse::Error),
}

/// Where to connect and which path to request.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    authority: String,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, ProxyError> {
    let bad = |message: &str| ProxyError::BadUrl {
        url: url.to_string(),
        message: message.to_string(),
    };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    // containerd and CRI-O serve plain HTTP on loopback by default; TLS to the runtime is not
    // supported.
    if uri.scheme_str() != Some("http") {
        return Err(bad("only http:// streaming URLs are supported"));
    }
    let auth = uri.authority().ok_or_else(|| bad("no host"))?;
    let authority = match auth.port_u16() {
        Some(_) => auth.as_str().to_string(),
        None => format!("{}:80", auth.host()),
    };
    Ok(Target {
        authority,
        path: uri.path().to_string(),
    })
}

/// The request head sent to the runtime: method, the URL's path, the client's headers without
/// credentials or body framing (upgrade requests carry no body), `X-Forwarded-For` appended.
fn request_head(req: &Request, target: &Target, remote: Option<SocketAddr>) -> Vec<u8> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\n",
        req.method(),
        target.path,
        target.authority
    )
    .into_bytes();
    let skip = [
        header::HOST,
        header::AUTHORIZATION,
        header::PROXY_AUTHORIZATION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        HeaderName::from_static("x-forwarded-for"),
    ];
    for (name, value) in req.headers() {
        if skip.contains(name) {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let mut forwarded: Vec<String> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok().map(String::from))
        .collect();
    if let Some(r) = remote {
        forwarded.push(r.ip().to_string());
    }
    if !forwarded.is_empty() {
        head.extend_from_slice(format!("X-Forwarded-For: {}\r\n", forwarded.join(", ")).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// A parsed response head and the bytes read past it.
struct Head {
    status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    rest: BytesMut,
}

async fn read_head(conn: &mut TcpStream) -> Result<Head, ProxyError> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let n = conn
            .read_buf(&mut buf)
            .await
            .map_err(|source| ProxyError::Io { source })?;
        if n == 0 {
            return Err(ProxyError::Closed);
        }
        let mut hdrs = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut hdrs);
        match resp.parse(&buf).map_err(ProxyError::Parse)? {
            httparse::Status::Partial if buf.len() >= MAX_HEAD_BYTES => return Err(ProxyError::HeadTooLarge),
            httparse::Status::Partial => continue,
            httparse::Status::Complete(len) => {
                let status = resp.code.unwrap_or(0);
                let headers = resp
                    .headers
                    .iter()
                    .filter_map(|h| {
                        Some((
                            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                            HeaderValue::from_bytes(h.value).ok()?,
                        ))
                    })
                    .collect();
                let rest = buf.split_off(len);
                return Ok(Head { status, headers, rest });
            }
        }
    }
}

/// The body of an error answer: Content-Length bytes, or up to EOF (bounded either way). Go's
/// `http.Error` (the CRI streaming servers' refusals) always sets Content-Length; a chunked
/// body would be passed on undecoded.
async fn read_error_body(conn: &mut TcpStream, head: &mut Head) -> Result<Vec<u8>, ProxyError> {
    let length = head
        .headers
        .iter()
        .find(|(n, _)| n == header::CONTENT_LENGTH)
        .and_then(|(_, v)| v.to_str().ok()?.trim().parse::<usize>().ok());
    let limit = length.unwrap_or(MAX_ERROR_BODY_BYTES).min(MAX_ERROR_BODY_BYTES);
    let mut body = head.rest.split().to_vec();
    while body.len() < limit {
        let mut chunk = vec![0u8; 8192];
        let n = conn
            .read(&mut chunk)
            .await
            .map_err(|source| ProxyError::Io { source })?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(limit);
    Ok(body)
}

fn text(code: StatusCode, body: String) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// Connects to `target`, sends the head and reads the answer's head.
async fn exchange(head: &[u8], target: &Target) -> Result<(TcpStream, Head), ProxyError> {
    let mut conn = TcpStream::connect(&target.authority)
        .await
        .map_err(|source| ProxyError::Dial {
            addr: target.authority.clone(),
            source,
        })?;
    // The spliced stream relays small frames both ways: no Nagle delay on this leg either.
    conn.set_nodelay(true).map_err(|source| ProxyError::Io { source })?;
    conn.write_all(head).await.map_err(|source| ProxyError::Io { source })?;
    let h = read_head(&mut conn).await?;
    Ok((conn, h))
}

/// Proxies the upgrade request `req` to the runtime's streaming `url`.
pub async fn proxy_upgrade(mut req: Request, url: &str, remote: Option<SocketAddr>) -> Response {
    let target = match parse_url(url) {
        Ok(t) => t,
        Err(e) => {
            warn!(error = %e, "streaming URL from the runtime");
            return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
    };
    let head = request_head(&req, &target, remote);
    let (mut backend, mut resp) = match tokio::time::timeout(BACKEND_TIMEOUT, exchange(&head, &target)).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            warn!(error = %e, "proxying to the runtime's streaming server");
            return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
        Err(_) => {
            let e = ProxyError::Timeout(BACKEND_TIMEOUT);
            warn!(error = %e, "proxying to the runtime's streaming server");
            return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
    };
    if resp.status == 101 {
        let mut out = Response::new(Body::empty());
        *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        for (n, v) in resp.headers.drain(..) {
            out.headers_mut().append(n, v);
        }
        let early = resp.rest.split().freeze();
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    debug!(error = %e, "client upgrade failed");
                    return;
                }
            };
            let mut client = TokioIo::new(upgraded);
            // Bytes the runtime sent right behind its 101 belong to the client.
            if !early.is_empty() {
                if let Err(e) = client.write_all(&early).await {
                    debug!(error = %e, "writing to the upgraded client");
                    return;
                }
            }
            match tokio::time::timeout(MAX_SESSION, tokio::io::copy_bidirectional(&mut client, &mut backend)).await {
                Ok(Ok((up, down))) => debug!(up, down, "stream proxy finished"),
                Ok(Err(e)) => debug!(error = %e, "stream proxy ended"),
                Err(_) => debug!("stream proxy closed after the 4 h session limit"),
            }
        });
        return out;
    }
    if resp.status >= 400 {
        let body = match tokio::time::timeout(BACKEND_TIMEOUT, read_error_body(&mut backend, &mut resp)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                debug!(error = %e, "reading the streaming server's error body");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        let code = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut out = Response::new(Body::from(body));
        *out.status_mut() = code;
        for (n, v) in resp.headers.drain(..) {
            // Framing is hyper's to write for the new body.
            if n == header::CONTENT_LENGTH || n == header::TRANSFER_ENCODING || n == header::CONNECTION {
                continue;
            }
            out.headers_mut().append(n, v);
        }
        return out;
    }
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("invalid upgrade response: status code {}", resp.status),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::any;
    use axum::Router;
    use tokio::net::TcpListener;

    #[test]
    fn url_parsing() {
        assert_eq!(
            parse_url("http://127.0.0.1:35000/exec/AbCd?x=1").unwrap(),
            Target {
                authority: "127.0.0.1:35000".into(),
                path: "/exec/AbCd".into()
            }
        );
        assert_eq!(parse_url("http://[::1]/attach/t").unwrap().authority, "[::1]:80");
        assert!(parse_url("https://127.0.0.1:1/exec/t").is_err());
        assert!(parse_url("/exec/t").is_err());
        assert!(parse_url("not a url at all").is_err());
    }

    #[test]
    fn head_drops_credentials_and_appends_forwarded_for() {
        let req = Request::builder()
            .method("POST")
            .uri("/exec/ns/p/c?command=ls&output=1")
            .header("Authorization", "Bearer secret")
            .header("Connection", "Upgrade")
            .header("Upgrade", "SPDY/3.1")
            .header("X-Stream-Protocol-Version", "v4.channel.k8s.io")
            .header("X-Stream-Protocol-Version", "v3.channel.k8s.io")
            .header("X-Forwarded-For", "10.0.0.1")
            .header("Content-Length", "0")
            .body(Body::empty())
            .unwrap();
        let t = parse_url("http://127.0.0.1:9/exec/tok").unwrap();
        let head = String::from_utf8(request_head(&req, &t, Some("192.168.1.2:5555".parse().unwrap()))).unwrap();
        assert!(
            head.starts_with("POST /exec/tok HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"),
            "{head}"
        );
        assert!(!head.to_lowercase().contains("authorization"));
        assert!(!head.contains("command=ls"));
        assert!(head.contains("x-stream-protocol-version: v4.channel.k8s.io\r\n"));
        assert!(head.contains("x-stream-protocol-version: v3.channel.k8s.io\r\n"));
        assert!(head.contains("X-Forwarded-For: 10.0.0.1, 192.168.1.2\r\n"));
        assert!(head.ends_with("\r\n\r\n"));
    }

    /// A fake streaming server: answers `answer` to one request (returning the head it got),
    /// then echoes bytes.
    async fn fake_backend(answer: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/exec/token123", l.local_addr().unwrap());
        let h = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = Vec::new();
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut b = [0u8; 1024];
                let n = s.read(&mut b).await.unwrap();
                assert!(n > 0);
                buf.extend_from_slice(&b[..n]);
            }
            s.write_all(answer.as_bytes()).await.unwrap();
            let mut b = [0u8; 1024];
            loop {
                match s.read(&mut b).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            String::from_utf8(buf).unwrap()
        });
        (url, h)
    }

    /// The proxy in front of `url`, on a plain HTTP/1.1 server with upgrades.
    async fn front(url: String) -> SocketAddr {
        let app = Router::new().route(
            "/{*rest}",
            any(move |req: Request| {
                let url = url.clone();
                async move { proxy_upgrade(req, &url, Some("127.0.0.1:1234".parse().unwrap())).await }
            }),
        );
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .with_upgrades()
                .await;
        });
        addr
    }

    async fn read_until(s: &mut TcpStream, needle: &[u8]) -> String {
        let mut buf = Vec::new();
        while !buf.windows(needle.len()).any(|w| w == needle) {
            let mut b = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
                .await
                .unwrap()
                .unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&b[..n]);
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    const UPGRADE_REQ: &str = "POST /exec/ns/p/c?command=sh HTTP/1.1\r\nHost: kubelet\r\nConnection: Upgrade\r\n\
        Upgrade: SPDY/3.1\r\nAuthorization: Bearer tok\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n";

    #[tokio::test]
    async fn upgrade_is_spliced() {
        let (url, backend) = fake_backend(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
             X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\nEARLY",
        )
        .await;
        let addr = front(url).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(UPGRADE_REQ.as_bytes()).await.unwrap();
        let got = read_until(&mut c, b"EARLY").await;
        assert!(got.starts_with("HTTP/1.1 101"), "{got}");
        assert!(got
            .to_lowercase()
            .contains("x-stream-protocol-version: v4.channel.k8s.io"));
        c.write_all(b"ping").await.unwrap();
        assert_eq!(read_until(&mut c, b"ping").await, "ping");
        drop(c);
        let head = backend.await.unwrap();
        assert!(head.starts_with("POST /exec/token123 HTTP/1.1\r\n"), "{head}");
        assert!(!head.to_lowercase().contains("authorization"), "{head}");
        assert!(head.contains("X-Forwarded-For: 127.0.0.1\r\n"), "{head}");
    }

    /// The dialed leg to the runtime's streaming server has TCP_NODELAY, as the accepted one
    /// (crate::streaming::server): a `true`'s exit status is not held back by Nagle.
    #[tokio::test]
    async fn dialed_connection_has_nodelay() {
        let (url, _backend) =
            fake_backend("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n").await;
        let backend_addr: SocketAddr = parse_url(&url).unwrap().authority.parse().unwrap();
        let addr = front(url).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(UPGRADE_REQ.as_bytes()).await.unwrap();
        let got = read_until(&mut c, b"\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 101"), "{got}");
        // The proxy's socket to the backend: the one whose peer is the backend's listener.
        let dialed: Vec<bool> = crate::streaming::server::tcp_sockets()
            .into_iter()
            .filter(|(_, peer, _)| *peer == backend_addr)
            .map(|(_, _, nodelay)| nodelay)
            .collect();
        assert_eq!(dialed, vec![true], "the dialed socket's TCP_NODELAY");
    }

    #[tokio::test]
    async fn error_answers_pass_through() {
        let (url, _b) = fake_backend(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 22\r\n\r\nprotocol not supported",
        )
        .await;
        let addr = front(url).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(UPGRADE_REQ.as_bytes()).await.unwrap();
        let got = read_until(&mut c, b"protocol not supported").await;
        assert!(got.starts_with("HTTP/1.1 403"), "{got}");
    }

    #[tokio::test]
    async fn other_answers_are_500() {
        let (url, _b) = fake_backend("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").await;
        let addr = front(url).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(UPGRADE_REQ.as_bytes()).await.unwrap();
        let got = read_until(&mut c, b"status code 200").await;
        assert!(got.starts_with("HTTP/1.1 500"), "{got}");
        assert!(got.contains("invalid upgrade response: status code 200"));
    }

    #[tokio::test]
    async fn unreachable_backend_is_500() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/exec/t", l.local_addr().unwrap());
        drop(l);
        let addr = front(url).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(UPGRADE_REQ.as_bytes()).await.unwrap();
        let got = read_until(&mut c, b"dialing").await;
        assert!(got.starts_with("HTTP/1.1 500"), "{got}");
    }
}
