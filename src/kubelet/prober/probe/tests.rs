//! Probe handlers against local servers on 127.0.0.1: HTTP (status classes, redirects, headers,
//! body cap), TCP, gRPC health (a hand-rolled HTTP/2 server), plus the port/URL/header rules.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

type Requests = Arc<Mutex<Vec<String>>>;

/// A one-request-per-connection HTTP/1.1 server; `respond(path)` gives (status line, headers, body).
async fn http_server(respond: fn(&str, u16) -> (String, String)) -> (u16, Requests) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Requests = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(m) => n += m,
                }
            }
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let path = req.split(' ').nth(1).unwrap_or("").to_string();
            log.lock().unwrap().push(req);
            let (status_and_headers, body) = respond(&path, port);
            let resp = format!(
                "HTTP/1.1 {status_and_headers}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    (port, seen)
}

fn routes(path: &str, port: u16) -> (String, String) {
    match path {
        "/ok" => ("200 OK".into(), "fine".into()),
        "/bad" => ("500 Internal Server Error".into(), "nope".into()),
        "/local-redirect" => ("302 Found\r\nLocation: /ok".into(), String::new()),
        "/loop" => ("302 Found\r\nLocation: /loop".into(), String::new()),
        "/away" => (
            format!("302 Found\r\nLocation: http://0.0.0.0:{port}/ok"),
            "<a href=\"http://0.0.0.0/ok\">Found</a>".into(),
        ),
        "/big" => ("200 OK".into(), "x".repeat(20 * 1024)),
        _ => ("404 Not Found".into(), String::new()),
    }
}

fn url(port: u16, path: &str) -> Uri {
    format_url("http", "127.0.0.1", port, path).unwrap()
}

fn tls() -> Option<Arc<rustls::ClientConfig>> {
    Some(insecure_tls().unwrap())
}

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn http_status_classes() {
    let (port, _) = http_server(routes).await;
    let h = probe_headers(&HTTPGetAction::default()).0;
    let tls = tls();
    assert_eq!(
        http_probe(&url(port, "/ok"), &h, None, T, tls.as_ref()).await,
        (Verdict::Success, "fine".into())
    );
    assert_eq!(
        http_probe(&url(port, "/bad"), &h, None, T, tls.as_ref()).await,
        (Verdict::Failure, "HTTP probe failed with statuscode: 500".into())
    );
    // Same-host redirects are followed.
    assert_eq!(
        http_probe(&url(port, "/local-redirect"), &h, None, T, tls.as_ref()).await,
        (Verdict::Success, "fine".into())
    );
    // Another host: the 3xx is the answer, a warning that counts as success.
    let (v, out) = http_probe(&url(port, "/away"), &h, None, T, tls.as_ref()).await;
    assert_eq!(v, Verdict::Warning);
    assert!(out.starts_with("Probe terminated redirects, Response body: "), "{out}");
    assert!(out.contains("0.0.0.0"), "{out}");
    let (v, out) = http_probe(&url(port, "/loop"), &h, None, T, tls.as_ref()).await;
    assert_eq!(v, Verdict::Failure);
    assert_eq!(
        out,
        format!("Get \"http://127.0.0.1:{port}/loop\": stopped after 10 redirects")
    );
    // The body is read up to 10 KiB.
    let resp = http_get(&url(port, "/big"), &h, None, Redirects::SameHost, tls.as_ref())
        .await
        .unwrap();
    assert_eq!(resp.body.len(), MAX_PROBE_OUTPUT);
}

#[tokio::test]
async fn http_probe_headers_and_host() {
    let (port, seen) = http_server(routes).await;
    let action: HTTPGetAction = serde_json::from_value(serde_json::json!({
        "port": port,
        "httpHeaders": [{"name": "X-Custom", "value": "v"}, {"name": "Host", "value": "example.test"}]
    }))
    .unwrap();
    let (headers, host) = probe_headers(&action);
    assert_eq!(host.as_deref(), Some("example.test"));
    let r = http_probe(&url(port, "ok"), &headers, host.as_deref(), T, tls().as_ref()).await;
    assert_eq!(r.0, Verdict::Success);
    let req = seen.lock().unwrap()[0].to_ascii_lowercase();
    assert!(req.starts_with("get /ok http/1.1\r\n"), "{req}");
    for want in [
        "x-custom: v\r\n",
        "user-agent: kube-probe/1.33\r\n",
        "accept: */*\r\n",
        "host: example.test\r\n",
        "connection: close\r\n",
    ] {
        assert!(req.contains(want), "{want:?} missing in {req}");
    }
}

#[test]
fn probe_header_defaults() {
    let a: HTTPGetAction = serde_json::from_value(serde_json::json!({
        "port": 80, "httpHeaders": [{"name": "Accept", "value": ""}, {"name": "User-Agent", "value": "mine"}]
    }))
    .unwrap();
    let (h, host) = probe_headers(&a);
    assert_eq!(h, vec![("User-Agent".to_string(), "mine".to_string())]);
    assert_eq!(host, None);
    let b: HTTPGetAction = serde_json::from_value(serde_json::json!({
        "port": 80, "httpHeaders": [{"name": "Accept", "value": "text/plain"}]
    }))
    .unwrap();
    assert_eq!(
        probe_headers(&b).0,
        vec![
            ("Accept".to_string(), "text/plain".to_string()),
            ("User-Agent".to_string(), PROBE_USER_AGENT.to_string())
        ]
    );
}

#[tokio::test]
async fn http_connection_refused_and_timeout() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let h = probe_headers(&HTTPGetAction::default()).0;
    let (v, out) = http_probe(&url(port, "/"), &h, None, T, tls().as_ref()).await;
    assert_eq!(v, Verdict::Failure);
    assert_eq!(
        out,
        format!("Get \"http://127.0.0.1:{port}/\": dial tcp 127.0.0.1:{port}: connect: connection refused")
    );
    // A server that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sport = silent.local_addr().unwrap().port();
    let keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let (v, out) = http_probe(&url(sport, "/"), &h, None, Duration::from_millis(200), tls().as_ref()).await;
    assert_eq!(v, Verdict::Failure);
    assert!(
        out.ends_with("context deadline exceeded (Client.Timeout exceeded while awaiting headers)"),
        "{out}"
    );
    keep.abort();
}

#[tokio::test]
async fn tcp_probe_open_and_closed() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    assert_eq!(tcp_probe("127.0.0.1", port, T).await, (Verdict::Success, String::new()));
    drop(l);
    let (v, out) = tcp_probe("127.0.0.1", port, T).await;
    assert_eq!(v, Verdict::Failure);
    assert_eq!(out, format!("dial tcp 127.0.0.1:{port}: connect: connection refused"));
}

#[test]
fn ports_by_number_name_and_string() {
    let c: Container = serde_json::from_value(serde_json::json!({
        "name": "c", "ports": [{"name": "http", "containerPort": 8080}]
    }))
    .unwrap();
    let s = |v: &str| IntOrString::String(v.into());
    assert_eq!(resolve_port(&IntOrString::Int(80), &c).unwrap(), 80);
    assert_eq!(resolve_port(&s("http"), &c).unwrap(), 8080);
    assert_eq!(resolve_port(&s("9090"), &c).unwrap(), 9090);
    assert_eq!(
        resolve_port(&s("grpc"), &c).unwrap_err().to_string(),
        "strconv.Atoi: parsing \"grpc\": invalid syntax"
    );
    assert_eq!(
        resolve_port(&IntOrString::Int(0), &c).unwrap_err().to_string(),
        "invalid port number: 0"
    );
    assert_eq!(
        resolve_port(&IntOrString::Int(70000), &c).unwrap_err().to_string(),
        "invalid port number: 70000"
    );
}

#[test]
fn urls_are_formatted_like_the_kubelet() {
    assert_eq!(
        format_url("https", "10.0.0.1", 443, "healthz?x=1").unwrap().to_string(),
        "https://10.0.0.1:443/healthz?x=1"
    );
    assert_eq!(
        format_url("http", "fd00::1", 80, "/").unwrap().to_string(),
        "http://[fd00::1]:80/"
    );
    assert_eq!(format_url("http", "h", 1, "").unwrap().to_string(), "http://h:1/");
}

#[test]
fn exec_command_expands_static_env_only() {
    let c: Container = serde_json::from_value(serde_json::json!({
        "name": "c",
        "env": [{"name": "FILE", "value": "/tmp/health"},
                {"name": "FROM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    }))
    .unwrap();
    let cmd = vec!["cat".to_string(), "$(FILE)".into(), "$(FROM)".into(), "$$(FILE)".into()];
    assert_eq!(exec_command(&cmd, &c), vec!["cat", "/tmp/health", "$(FROM)", "$(FILE)"]);
    assert_eq!(bare_id("containerd://abc"), "abc");
    assert_eq!(bare_id("abc"), "abc");
}

#[tokio::test]
async fn exec_probe_on_a_missing_container_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let sim = crate::backends::sim::SimRuntime::new(Default::default(), Clock::real(), dir.path().join("sim")).unwrap();
    let r = exec_probe(sim.as_ref(), Clock::real(), "sim://missing", vec!["true".into()], 1).await;
    assert!(matches!(r, Err(ProbeError::Exec { .. })), "{r:?}");
}

/// A gRPC health server: SERVING for service "" and "ok", NOT_SERVING otherwise;
/// "unimplemented" answers UNIMPLEMENTED.
async fn grpc_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let path = req.uri().path().to_string();
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let msg = HealthCheckRequest::decode(body.get(5..).unwrap_or_default()).unwrap_or_default();
                    let mut trailers = http::HeaderMap::new();
                    let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = Vec::new();
                    if path != "/grpc.health.v1.Health/Check" || msg.service == "unimplemented" {
                        trailers.insert("grpc-status", "12".parse().unwrap());
                        trailers.insert("grpc-message", "unknown service".parse().unwrap());
                    } else {
                        let status = if msg.service.is_empty() || msg.service == "ok" {
                            1
                        } else {
                            2
                        };
                        let payload = HealthCheckResponse { status }.encode_to_vec();
                        let mut framed = vec![0u8];
                        framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                        framed.extend_from_slice(&payload);
                        frames.push(Ok(Frame::data(Bytes::from(framed))));
                        trailers.insert("grpc-status", "0".parse().unwrap());
                    }
                    frames.push(Ok(Frame::trailers(trailers)));
                    let body = StreamBody::new(futures::stream::iter(frames));
                    let resp = hyper::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(body)
                        .unwrap();
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    port
}

#[tokio::test]
async fn grpc_health_check() {
    let port = grpc_server().await;
    assert_eq!(
        grpc_probe("127.0.0.1", port, "", T).await,
        (Verdict::Success, String::new())
    );
    assert_eq!(grpc_probe("127.0.0.1", port, "ok", T).await.0, Verdict::Success);
    assert_eq!(
        grpc_probe("127.0.0.1", port, "db", T).await,
        (
            Verdict::Failure,
            "service unhealthy (responded with \"NOT_SERVING\")".into()
        )
    );
    let (v, out) = grpc_probe("127.0.0.1", port, "unimplemented", T).await;
    assert_eq!(v, Verdict::Failure);
    assert_eq!(
        out,
        "this server does not implement the grpc health protocol (grpc.health.v1.Health): unknown service"
    );
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (v, out) = grpc_probe("127.0.0.1", closed, "", Duration::from_secs(1)).await;
    assert_eq!(v, Verdict::Failure);
    assert!(
        out.starts_with(&format!(
            "timeout: failed to connect service \"127.0.0.1:{closed}\" within 1s"
        )),
        "{out}"
    );
}

#[tokio::test]
async fn https_probe_skips_certificate_verification() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let Ok(mut tls) = acceptor.accept(s).await else {
                continue;
            };
            let mut buf = vec![0u8; 4096];
            let _ = tls.read(&mut buf).await;
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecure")
                .await;
            let _ = tls.shutdown().await;
        }
    });
    let uri = format_url("https", "127.0.0.1", port, "/").unwrap();
    let h = probe_headers(&HTTPGetAction::default()).0;
    assert_eq!(
        http_probe(&uri, &h, None, T, tls().as_ref()).await,
        (Verdict::Success, "secure".into())
    );
    // Without a TLS configuration an HTTPS probe fails with a clear message.
    let (v, out) = http_probe(&uri, &h, None, T, None).await;
    assert_eq!(v, Verdict::Failure);
    assert!(
        out.ends_with("tls: no client configuration (see the log at startup)"),
        "{out}"
    );
}
