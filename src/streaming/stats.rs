//! `GET|POST /stats/summary` (kubelet-api-protocols.md §4.1): the Summary API as JSON, the
//! CPU/memory-only variant when `only_cpu_and_memory=true` is in the query or the form body.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::AppState;
use crate::kubelet::stats::{StatsProvider, Summary};

/// The largest form body read from a POST (the parameter is a few bytes).
const MAX_FORM_BYTES: usize = 64 * 1024;
/// The form parameter selecting the reduced summary.
const ONLY_CPU_AND_MEMORY: &str = "only_cpu_and_memory";

pub fn routes() -> Router<AppState> {
    Router::new().route("/stats/summary", get(summary).post(summary))
}

/// `%XX` and `+` decoding of one form component (invalid escapes are kept as written).
fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of `key` in a urlencoded form, as Go's `url.Values.Get`.
pub fn form_value(form: &str, key: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(k) == key).then(|| form_decode(v))
    })
}

/// Go's `Request.FormValue`: the POST form body first, then the query.
pub fn only_cpu_and_memory(query: Option<&str>, body: Option<&str>) -> bool {
    let v = body
        .and_then(|b| form_value(b, ONLY_CPU_AND_MEMORY))
        .or_else(|| query.and_then(|q| form_value(q, ONLY_CPU_AND_MEMORY)));
    v.as_deref() == Some("true")
}

/// JSON as go-restful writes it (indented by one space; clients must not care).
pub fn json_response<T: Serialize>(value: &T) -> Response {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    match value.serialize(&mut ser) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            buf,
        )
            .into_response(),
        Err(e) => internal_error(&e),
    }
}

/// The kubelet's error answer: 500 with `Internal Error: <err>` as plain text.
pub fn internal_error(e: &dyn std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("Internal Error: {e}")).into_response()
}

/// Builds the answer from a provider (the route, and tests without a kubelet core).
pub async fn summary_response(provider: &StatsProvider, only_cpu_and_memory: bool) -> Response {
    match provider.summary(only_cpu_and_memory).await {
        Ok(s) => json_response::<Summary>(&s),
        Err(e) => {
            tracing::warn!(error = %e, "building the stats summary failed");
            internal_error(&e)
        }
    }
}

async fn summary(State(state): State<AppState>, req: Request<Body>) -> Response {
    let query = req.uri().query().map(str::to_owned);
    let is_form = req.method() == Method::POST
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body = if is_form {
        match to_bytes(req.into_body(), MAX_FORM_BYTES).await {
            Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            Err(e) => return (StatusCode::BAD_REQUEST, format!("reading the form: {e}")).into_response(),
        }
    } else {
        None
    };
    let only = only_cpu_and_memory(query.as_deref(), body.as_deref());
    let provider = StatsProvider::for_core(&state.core);
    summary_response(&provider, only).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parameter_must_be_exactly_true() {
        assert!(only_cpu_and_memory(Some("only_cpu_and_memory=true"), None));
        assert!(only_cpu_and_memory(Some("a=1&only_cpu_and_memory=true"), None));
        assert!(!only_cpu_and_memory(Some("only_cpu_and_memory=True"), None));
        assert!(!only_cpu_and_memory(Some("only_cpu_and_memory=1"), None));
        assert!(!only_cpu_and_memory(Some("only_cpu_and_memory"), None));
        assert!(!only_cpu_and_memory(None, None));
        // First value wins; the form body before the query.
        assert!(!only_cpu_and_memory(
            Some("only_cpu_and_memory=false&only_cpu_and_memory=true"),
            None
        ));
        assert!(only_cpu_and_memory(
            Some("only_cpu_and_memory=false"),
            Some("only_cpu_and_memory=true")
        ));
        assert!(only_cpu_and_memory(Some("only%5Fcpu%5Fand%5Fmemory=%74rue"), None));
    }

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a+b%20c"), "a b c");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%zz"), "%zz");
        assert_eq!(form_value("x=1&y", "y").as_deref(), Some(""));
    }

    #[tokio::test]
    async fn errors_are_500_with_the_kubelet_text() {
        let r = internal_error(&"ListPodSandbox: boom");
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = to_bytes(r.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"Internal Error: ListPodSandbox: boom");
    }

    #[tokio::test]
    async fn json_is_indented_and_typed() {
        let r = json_response(&serde_json::json!({"a": 1}));
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let body = to_bytes(r.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"{\n \"a\": 1\n}");
    }
}
