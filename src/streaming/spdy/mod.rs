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
