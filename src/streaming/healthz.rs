//! `/healthz` (kubelet-api-protocols.md §2): on the kubelet server with the checks `ping`, `log`
//! and `syncloop` (behind the auth filter), and on a plain-HTTP localhost port
//! (`healthzBindAddress:healthzPort`, default 127.0.0.1:10248) with `ping` only, as the kubelet
//! installs it there.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use http::{header, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::AppState;
use crate::kubelet::config::Config;

/// The sync loop is unhealthy when it has not gone round for max(2×syncFrequency, this).
const SYNC_LOOP_MIN_DURATION: Duration = Duration::from_secs(5 * 60);

/// Starting the plain-HTTP healthz listener failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthzError {
    #[error("binding the healthz endpoint {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Which checks a `/healthz` endpoint runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CheckSet {
    /// The kubelet server: ping, log, syncloop.
    Full,
    /// The localhost port: ping.
    Ping,
}

fn check_names(set: CheckSet) -> &'static [&'static str] {
    match set {
        CheckSet::Full => &["ping", "log", "syncloop"],
        CheckSet::Ping => &["ping"],
    }
}

/// Runs one check: Ok, or the reason it failed (logged, never sent).
fn run_check(state: &AppState, name: &str) -> Result<(), String> {
    match name {
        "syncloop" => sync_loop_check(state),
        // `ping` always passes; `log` checks that logging is not blocked, and tracing's writer
        // never blocks the caller here.
        _ => Ok(()),
    }
}

fn sync_loop_check(state: &AppState) -> Result<(), String> {
    let core = &state.core;
    let limit = (core.cfg.sync_frequency * 2).max(SYNC_LOOP_MIN_DURATION);
    let limit = core.clock.to_real(limit);
    match core.last_sync_loop() {
        Some(t) if t.elapsed() > limit => Err("sync Loop took longer than expected".into()),
        _ => Ok(()),
    }
}

/// The routes of the kubelet server.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", any(full_root))
        .route("/healthz/{check}", any(full_single))
}

/// The routes of the localhost port.
pub fn plain_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", any(ping_root))
        .route("/healthz/{check}", any(ping_single))
}

async fn full_root(State(state): State<AppState>, RawQuery(q): RawQuery) -> Response {
    root(&state, CheckSet::Full, q.as_deref().unwrap_or(""))
}

async fn ping_root(State(state): State<AppState>, RawQuery(q): RawQuery) -> Response {
    root(&state, CheckSet::Ping, q.as_deref().unwrap_or(""))
}

async fn full_single(State(state): State<AppState>, Path(check): Path<String>) -> Response {
    single(&state, CheckSet::Full, &check)
}

async fn ping_single(State(state): State<AppState>, Path(check): Path<String>) -> Response {
    single(&state, CheckSet::Ping, &check)
}

fn text(code: StatusCode, body: String) -> Response {
    (
        code,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

fn root(state: &AppState, set: CheckSet, query: &str) -> Response {
    let q = Query::parse(query);
    let results: Vec<(&str, Result<(), String>)> = check_names(set)
        .iter()
        .map(|n| (*n, if q.excluded(n) { Ok(()) } else { run_check(state, n) }))
        .collect();
    for (n, r) in &results {
        if let Err(reason) = r {
            warn!(check = n, reason = %reason, "healthz check failed");
        }
    }
    let (code, body) = render(&results, &q);
    text(code, body)
}

fn single(state: &AppState, set: CheckSet, check: &str) -> Response {
    if !check_names(set).contains(&check) {
        return text(StatusCode::NOT_FOUND, "404 page not found\n".into());
    }
    match run_check(state, check) {
        Ok(()) => text(StatusCode::OK, "ok".into()),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal server error: {e}\n"),
        ),
    }
}

/// `?verbose` (any value) and `?exclude=name` (repeated).
#[derive(Debug, Default)]
struct Query {
    verbose: bool,
    exclude: Vec<String>,
}

impl Query {
    fn parse(query: &str) -> Self {
        let mut q = Query::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "verbose" => q.verbose = true,
                "exclude" => q.exclude.push(v.to_string()),
                _ => {}
            }
        }
        q
    }

    fn excluded(&self, name: &str) -> bool {
        self.exclude.iter().any(|e| e == name)
    }
}

/// The healthz answer as the Go handler writes it: `ok`, or the per-check lines when verbose or
/// failed (the failure reason withheld).
fn render(results: &[(&str, Result<(), String>)], q: &Query) -> (StatusCode, String) {
    let mut lines = String::new();
    let mut failed = false;
    for (name, r) in results {
        if q.excluded(name) {
            lines.push_str(&format!("[+]{name} excluded: ok\n"));
        } else if r.is_ok() {
            lines.push_str(&format!("[+]{name} ok\n"));
        } else {
            failed = true;
            lines.push_str(&format!("[-]{name} failed: reason withheld\n"));
        }
    }
    if failed {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{lines}healthz check failed\n"),
        );
    }
    if !q.verbose {
        return (StatusCode::OK, "ok".into());
    }
    (StatusCode::OK, format!("{lines}healthz check passed\n"))
}

/// Binds the localhost healthz port; None when `healthzPort` is 0.
pub async fn bind_plain(cfg: &Config) -> Result<Option<TcpListener>, HealthzError> {
    if cfg.healthz_port == 0 {
        return Ok(None);
    }
    let addr = SocketAddr::new(cfg.healthz_bind_address, cfg.healthz_port);
    let l = TcpListener::bind(addr)
        .await
        .map_err(|source| HealthzError::Bind { addr, source })?;
    Ok(Some(l))
}

/// Serves `/healthz` over plain HTTP until `shutdown`.
pub async fn serve_plain(listener: TcpListener, state: AppState, shutdown: CancellationToken) {
    if let Ok(a) = listener.local_addr() {
        info!(address = %a, "healthz endpoint listening");
    }
    let app = plain_routes()
        .fallback(|| async { text(StatusCode::NOT_FOUND, "404 page not found\n".into()) })
        .with_state(state);
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = r {
        warn!(error = %e, "healthz endpoint stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(n: &str) -> (&str, Result<(), String>) {
        (n, Ok(()))
    }

    #[test]
    fn plain_and_verbose() {
        let all = [ok("ping"), ok("log"), ok("syncloop")];
        assert_eq!(render(&all, &Query::parse("")), (StatusCode::OK, "ok".into()));
        let (c, b) = render(&all, &Query::parse("verbose"));
        assert_eq!(c, StatusCode::OK);
        assert_eq!(b, "[+]ping ok\n[+]log ok\n[+]syncloop ok\nhealthz check passed\n");
        let (_, b) = render(&all, &Query::parse("verbose=1&exclude=log"));
        assert_eq!(
            b,
            "[+]ping ok\n[+]log excluded: ok\n[+]syncloop ok\nhealthz check passed\n"
        );
    }

    #[test]
    fn failure_lists_checks_and_withholds_the_reason() {
        let r = [ok("ping"), ok("log"), ("syncloop", Err("secret".to_string()))];
        let (c, b) = render(&r, &Query::parse(""));
        assert_eq!(c, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            b,
            "[+]ping ok\n[+]log ok\n[-]syncloop failed: reason withheld\nhealthz check failed\n"
        );
        assert!(!b.contains("secret"));
    }
}
