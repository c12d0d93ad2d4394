//! SPDY/3.1 for exec, attach and port-forward (kubelet-api-protocols.md §3.3–§3.6): the codec
//! (`frame`, `headers`), a server session (`session`), and the two protocols on top (`exec`,
//! `portforward`). This file holds the HTTP upgrade handshake both protocols share.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode};

use super::remotecommand::{ACCEPTED_PROTOCOLS_HEADER, STREAM_PROTOCOL_HEADER};

pub mod exec;
pub mod frame;
pub mod headers;
pub mod portforward;
pub mod session;
#[cfg(test)]
mod testclient;

pub use exec::serve_remotecommand;
pub use portforward::{port_forward_session, serve_port_forward};

/// The `Upgrade` token (the framing inside is SPDY/3).
pub const UPGRADE_TOKEN: &str = "SPDY/3.1";

/// Runs the upgrade checks in Go's order (§3.3): protocol negotiation first (400 without any
/// `X-Stream-Protocol-Version`, 403 when none is supported), then the upgrade headers (400),
/// then that hyper can hand over the connection. `Ok` carries the chosen protocol.
fn handshake<B>(req: &http::Request<B>, server_protocols: &[&'static str]) -> Result<&'static str, Box<Response>> {
    let headers = req.headers();
    let client: Vec<&str> = headers
        .get_all(STREAM_PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if client.is_empty() {
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!("unable to upgrade: {STREAM_PROTOCOL_HEADER} is required"),
        ));
    }
    let chosen = client
        .iter()
        .find_map(|c| server_protocols.iter().find(|s| *s == c).copied());
    let Some(chosen) = chosen else {
        let mut resp = text(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports [{}], server accepts [{}]",
                client.join(" "),
                server_protocols.join(" ")
            ),
        );
        for p in server_protocols {
            resp.headers_mut()
                .append(ACCEPTED_PROTOCOLS_HEADER, HeaderValue::from_static(p));
        }
        return Err(resp);
    };
    if !has_upgrade_headers(headers) {
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!(
                "unable to upgrade: missing upgrade headers in request: {}",
                go_header_dump(headers)
            ),
        ));
    }
    if req.extensions().get::<hyper::upgrade::OnUpgrade>().is_none() {
        // The connection was not served with upgrades (or is HTTP/2): nothing to take over.
        return Err(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Upgrade request required".into(),
        ));
    }
    Ok(chosen)
}

/// Go reads the first value of each header and looks for substrings, case-insensitively.
fn has_upgrade_headers(headers: &HeaderMap) -> bool {
    let first = |name: http::header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    first(http::header::CONNECTION).contains("upgrade") && first(http::header::UPGRADE).contains("spdy/3.1")
}

/// Roughly Go's `%#v` of an `http.Header`, which the 400 body quotes.
fn go_header_dump(headers: &HeaderMap) -> String {
    let mut names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    let fields: Vec<String> = names
        .iter()
        .map(|n| {
            let values: Vec<String> = headers
                .get_all(*n)
                .iter()
                .map(|v| format!("{:?}", String::from_utf8_lossy(v.as_bytes())))
                .collect();
            format!("{:?}:[]string{{{}}}", canonical(n), values.join(", "))
        })
        .collect();
    format!("http.Header{{{}}}", fields.join(", "))
}

/// `x-stream-protocol-version` → `X-Stream-Protocol-Version` (Go's canonical header key).
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// A plain-text error as Go's `http.Error` writes it.
fn text(status: StatusCode, msg: String) -> Box<Response> {
    let mut resp = Response::new(Body::from(msg + "\n"));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    Box::new(resp)
}

/// The 101 exactly as captured: `Connection`, `Upgrade`, `X-Stream-Protocol-Version`.
fn switching_protocols(protocol: &'static str) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(http::header::UPGRADE, HeaderValue::from_static(UPGRADE_TOKEN));
    h.insert(STREAM_PROTOCOL_HEADER, HeaderValue::from_static(protocol));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)], upgradable: bool) -> http::Request<()> {
        let mut b = http::Request::post("/exec/ns/pod/c?command=sh&output=1");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        let mut r = b.body(()).unwrap();
        if upgradable {
            // A real OnUpgrade only comes from hyper; `on` on a bare request yields a pending
            // one we can carry in the extensions.
            let on = hyper::upgrade::on(http::Request::new(()));
            r.extensions_mut().insert(on);
        }
        r
    }

    async fn body(resp: Response) -> String {
        let b = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }

    const SPDY: [(&str, &str); 2] = [("connection", "Upgrade"), ("upgrade", "SPDY/3.1")];

    #[tokio::test]
    async fn no_protocol_header_is_400() {
        let r = handshake(&req(&SPDY, true), &["v4.channel.k8s.io"]).unwrap_err();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            body(*r).await,
            "unable to upgrade: X-Stream-Protocol-Version is required\n"
        );
    }

    #[tokio::test]
    async fn unsupported_protocols_are_403_with_the_accepted_list() {
        let mut h = SPDY.to_vec();
        h.push(("x-stream-protocol-version", "v9.channel.k8s.io, v8"));
        let r = handshake(&req(&h, true), &super::super::remotecommand::SPDY_PROTOCOLS).unwrap_err();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let accepted: Vec<_> = r.headers().get_all(ACCEPTED_PROTOCOLS_HEADER).iter().collect();
        assert_eq!(
            accepted,
            [
                "v4.channel.k8s.io",
                "v3.channel.k8s.io",
                "v2.channel.k8s.io",
                "channel.k8s.io"
            ]
        );
        assert!(body(*r).await.contains("client supports [v9.channel.k8s.io v8]"));
    }

    #[test]
    fn the_first_client_protocol_the_server_knows_wins() {
        let mut h = SPDY.to_vec();
        h.push(("x-stream-protocol-version", "v2.channel.k8s.io"));
        h.push(("x-stream-protocol-version", "v4.channel.k8s.io,channel.k8s.io"));
        let p = handshake(&req(&h, true), &super::super::remotecommand::SPDY_PROTOCOLS).unwrap();
        assert_eq!(p, "v2.channel.k8s.io");
    }

    #[tokio::test]
    async fn negotiation_runs_before_the_upgrade_header_check() {
        // Missing upgrade headers but no protocol: the protocol error wins (Go's order).
        let r = handshake(&req(&[], true), &["portforward.k8s.io"]).unwrap_err();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(body(*r).await.contains("X-Stream-Protocol-Version is required"));
        let r = handshake(
            &req(
                &[
                    ("x-stream-protocol-version", "portforward.k8s.io"),
                    ("connection", "close"),
                ],
                true,
            ),
            &["portforward.k8s.io"],
        )
        .unwrap_err();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let b = body(*r).await;
        assert!(b.starts_with("unable to upgrade: missing upgrade headers in request: http.Header{"));
        assert!(b.contains(r#""Connection":[]string{"close"}"#), "{b}");
    }

    #[tokio::test]
    async fn a_connection_without_upgrade_support_is_500() {
        let mut h = SPDY.to_vec();
        h.push(("x-stream-protocol-version", "portforward.k8s.io"));
        let r = handshake(&req(&h, false), &["portforward.k8s.io"]).unwrap_err();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    /// The whole path: an HTTP/1.1 upgrade served by hyper, the 101, then SPDY on the same
    /// connection, for exec and for port-forward.
    mod over_hyper {
        use std::convert::Infallible;
        use std::sync::{Arc, Mutex};

        use futures::FutureExt;
        use hyper_util::rt::TokioIo;
        use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

        use super::super::testclient::{TestClient, Transcript};
        use crate::genericruntime::streams::{BoxedIo, ProcessIo};
        use crate::streaming::remotecommand::{DialFn, Kind, Outcome, RunFn, StreamOptions};

        fn serve<F>(handler: F) -> DuplexStream
        where
            F: Fn(http::Request<hyper::body::Incoming>) -> axum::response::Response + Send + Sync + 'static,
        {
            let (client_io, server_io) = tokio::io::duplex(1 << 16);
            let handler = Arc::new(handler);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let h = handler.clone();
                    async move { Ok::<_, Infallible>(h(req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(server_io), svc)
                    .with_upgrades()
                    .await;
            });
            client_io
        }

        /// Writes the request head and reads the response head byte by byte, so nothing of
        /// the SPDY stream after it is consumed.
        async fn upgrade(io: &mut DuplexStream, path: &str, protocols: &[&str]) -> String {
            let mut head = format!(
                "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            );
            for p in protocols {
                head.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
            }
            head.push_str("\r\n");
            io.write_all(head.as_bytes()).await.unwrap();
            let mut resp = Vec::new();
            while !resp.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                assert_eq!(io.read(&mut b).await.unwrap(), 1, "EOF in response head: {resp:?}");
                resp.push(b[0]);
            }
            String::from_utf8(resp).unwrap().to_ascii_lowercase()
        }

        #[tokio::test]
        async fn exec_v4_through_an_upgrade() {
            let run: Arc<Mutex<Option<RunFn>>> = Arc::new(Mutex::new(Some(Box::new(|io: ProcessIo| {
                async move {
                    io.stdout.unwrap().send("hi\n".into()).await.unwrap();
                    Outcome::Exited(3)
                }
                .boxed()
            }))));
            let mut io = serve(move |req| {
                let opts = StreamOptions {
                    stdout: true,
                    ..Default::default()
                };
                let run = run.lock().unwrap().take().unwrap();
                super::super::serve_remotecommand(req, opts, Kind::Exec, run)
            });
            let head = upgrade(
                &mut io,
                "/exec/ns/pod/c?command=sh&output=1",
                &["v4.channel.k8s.io", "v3.channel.k8s.io"],
            )
            .await;
            assert!(head.starts_with("http/1.1 101 switching protocols\r\n"), "{head}");
            assert!(head.contains("\r\nconnection: upgrade\r\n"));
            assert!(head.contains("\r\nupgrade: spdy/3.1\r\n"));
            assert!(head.contains("\r\nx-stream-protocol-version: v4.channel.k8s.io\r\n"));
            let mut c = TestClient::new(io);
            let mut t = Transcript::default();
            let error = c.open_and_wait(&[("streamtype", "error")], &mut t).await;
            let stdout = c.open_and_wait(&[("streamtype", "stdout")], &mut t).await;
            c.drain(&mut t).await;
            assert_eq!(t.text(stdout), "hi\n");
            assert!(t
                .text(error)
                .contains(r#""causes":[{"reason":"ExitCode","message":"3"}]"#));
        }

        #[tokio::test]
        async fn port_forward_through_an_upgrade() {
            let dial: DialFn = Arc::new(|_port| {
                async {
                    let (ours, mut theirs) = tokio::io::duplex(64);
                    tokio::spawn(async move {
                        let _ = theirs.write_all(b"banner").await;
                    });
                    Ok(Box::new(ours) as BoxedIo)
                }
                .boxed()
            });
            let mut io = serve(move |req| super::super::serve_port_forward(req, dial.clone()));
            let head = upgrade(&mut io, "/portForward/ns/pod", &["portforward.k8s.io"]).await;
            assert!(head.starts_with("http/1.1 101"), "{head}");
            assert!(head.contains("\r\nx-stream-protocol-version: portforward.k8s.io\r\n"));
            let mut c = TestClient::new(io);
            let mut t = Transcript::default();
            let e = c
                .open_and_wait(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")], &mut t)
                .await;
            let d = c
                .open_and_wait(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")], &mut t)
                .await;
            while !t.fin.contains(&d) {
                t.record(c.next().await.unwrap());
            }
            assert_eq!(t.text(d), "banner");
            assert!(t.fin.contains(&e));
        }

        #[tokio::test]
        async fn a_refused_negotiation_gets_no_upgrade() {
            let mut io = serve(|req| {
                super::super::serve_remotecommand(
                    req,
                    StreamOptions::default(),
                    Kind::Attach,
                    Box::new(|_| async { Outcome::Exited(0) }.boxed()),
                )
            });
            let head = upgrade(&mut io, "/attach/ns/pod/c?output=1", &["v5.channel.k8s.io"]).await;
            assert!(head.starts_with("http/1.1 403"), "{head}");
            assert_eq!(head.matches("x-accepted-stream-protocol-versions:").count(), 4);
        }
    }

    #[test]
    fn the_101_carries_exactly_the_captured_headers() {
        let r = switching_protocols("v4.channel.k8s.io");
        assert_eq!(r.status(), StatusCode::SWITCHING_PROTOCOLS);
        let h: Vec<_> = r
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            h,
            [
                ("connection", "Upgrade"),
                ("upgrade", "SPDY/3.1"),
                ("x-stream-protocol-version", "v4.channel.k8s.io")
            ]
        );
    }
}
