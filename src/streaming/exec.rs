//! `/exec`, `/attach` and `/portForward` (kubelet-api-protocols.md §3.1, §3.2): validate the
//! request, find the pod and its running container (or sandbox), then either serve the streams
//! in process (a backend with [`LocalStreams`](crate::genericruntime::streams::LocalStreams))
//! or ask the CRI runtime for a streaming URL and proxy the upgrade to it.

use std::net::SocketAddr;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use tracing::warn;

use super::proxy;
use super::remotecommand::{parse_exec_query, parse_ports, ExecQuery, Kind};
use super::server::Connection;
use super::{websocket, AppState};
use crate::genericruntime::{cri, Code, ContainerState, RunningPod, RuntimeError};
use crate::kubelet::mirror::pod_full_name;

/// How long a client waits before retrying when the runtime has too many streams in flight
/// (the CRI streaming server's token TTL).
const RETRY_AFTER_SECS: &str = "60";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/exec/{ns}/{pod}/{container}", get(exec3).post(exec3))
        .route("/exec/{ns}/{pod}/{uid}/{container}", get(exec4).post(exec4))
        .route("/attach/{ns}/{pod}/{container}", get(attach3).post(attach3))
        .route("/attach/{ns}/{pod}/{uid}/{container}", get(attach4).post(attach4))
        .route("/portForward/{ns}/{pod}", get(port_forward2).post(port_forward2))
        .route("/portForward/{ns}/{pod}/{uid}", get(port_forward3).post(port_forward3))
}

/// The path of a remote-command request.
struct Target {
    ns: String,
    pod: String,
    uid: Option<String>,
    container: String,
}

impl From<(String, String, String)> for Target {
    fn from((ns, pod, container): (String, String, String)) -> Self {
        Target {
            ns,
            pod,
            uid: None,
            container,
        }
    }
}

impl From<(String, String, String, String)> for Target {
    fn from((ns, pod, uid, container): (String, String, String, String)) -> Self {
        Target {
            ns,
            pod,
            uid: Some(uid),
            container,
        }
    }
}

async fn exec3(State(s): State<AppState>, Path(p): Path<(String, String, String)>, req: Request) -> Response {
    remote_command(s, Kind::Exec, p.into(), req).await
}

async fn exec4(State(s): State<AppState>, Path(p): Path<(String, String, String, String)>, req: Request) -> Response {
    remote_command(s, Kind::Exec, p.into(), req).await
}

async fn attach3(State(s): State<AppState>, Path(p): Path<(String, String, String)>, req: Request) -> Response {
    remote_command(s, Kind::Attach, p.into(), req).await
}

async fn attach4(State(s): State<AppState>, Path(p): Path<(String, String, String, String)>, req: Request) -> Response {
    remote_command(s, Kind::Attach, p.into(), req).await
}

async fn port_forward2(State(s): State<AppState>, Path((ns, pod)): Path<(String, String)>, req: Request) -> Response {
    port_forward(s, ns, pod, None, req).await
}

async fn port_forward3(
    State(s): State<AppState>,
    Path((ns, pod, uid)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    port_forward(s, ns, pod, Some(uid), req).await
}

/// Plain-text answers, as the kubelet writes its errors.
fn text(code: StatusCode, body: impl Into<String>) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body.into()).into_response()
}

/// A CRI error mapped per `streaming.WriteError`: NotFound 404, ResourceExhausted 429 with
/// `Retry-After`, anything else 500; the error text as the body.
pub fn runtime_error_response(e: &RuntimeError) -> Response {
    let mut r = match e.code {
        Code::NotFound => text(StatusCode::NOT_FOUND, e.to_string()),
        Code::ResourceExhausted => text(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
        _ => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if e.code == Code::ResourceExhausted {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    }
    r
}

/// True if `Connection` carries the `upgrade` token (Go's `httpstream.IsUpgradeRequest`).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
    })
}

fn find_pod(state: &AppState, ns: &str, name: &str) -> Option<Pod> {
    state
        .core
        .pods()
        .into_iter()
        .find(|p| p.metadata.namespace.as_deref() == Some(ns) && p.metadata.name.as_deref() == Some(name))
}

fn uid_of(p: &Pod) -> &str {
    p.metadata.uid.as_deref().unwrap_or_default()
}

/// The pod as the runtime runs it (running containers, ready sandboxes), matched by UID, else
/// by name and namespace (the kubelet's `FindPod` by full name).
async fn running_pod(state: &AppState, pod: &Pod) -> Result<Option<RunningPod>, Response> {
    let mut pods = match state.core.manager.get_pods(false).await {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "listing running pods for a streaming request");
            return Err(text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()));
        }
    };
    let uid = uid_of(pod);
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let by_uid = pods.iter().position(|p| !uid.is_empty() && p.uid == uid);
    let i = by_uid.or_else(|| pods.iter().position(|p| p.name == name && p.namespace == ns));
    Ok(i.map(|i| pods.swap_remove(i)))
}

/// The ID of the named running container.
async fn running_container_id(state: &AppState, pod: &Pod, container: &str) -> Result<String, Response> {
    let not_found = || {
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("container not found ({container:?})"),
        )
    };
    let Some(rp) = running_pod(state, pod).await? else {
        return Err(not_found());
    };
    rp.containers
        .iter()
        .find(|c| c.name == container && c.state == ContainerState::Running)
        .map(|c| c.id.clone())
        .ok_or_else(not_found)
}

/// The container's spec `tty` (attach follows the container, not the query).
fn spec_tty(pod: &Pod, container: &str) -> Option<bool> {
    let spec = pod.spec.as_ref()?;
    if let Some(c) = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == container)
    {
        return Some(c.tty.unwrap_or(false));
    }
    spec.ephemeral_containers
        .iter()
        .flatten()
        .find(|c| c.name == container)
        .map(|c| c.tty.unwrap_or(false))
}

fn remote_addr(req: &Request) -> Option<SocketAddr> {
    req.extensions().get::<Connection>().map(|c| c.remote)
}

async fn remote_command(state: AppState, kind: Kind, t: Target, req: Request) -> Response {
    let query = req.uri().query().unwrap_or("");
    let ExecQuery { mut options, command } = match parse_exec_query(query, kind) {
        Ok(q) => q,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let Some(pod) = find_pod(&state, &t.ns, &t.pod) else {
        return text(StatusCode::NOT_FOUND, "pod does not exist");
    };
    if kind == Kind::Attach {
        // The kubelet's GetAttach: a UID in the path must match; the TTY is the container's.
        if t.uid.as_deref().is_some_and(|u| u != uid_of(&pod)) {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("pod {} not found", pod_full_name(&pod)),
            );
        }
        let Some(tty) = spec_tty(&pod, &t.container) else {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("container {} not found in pod {}", t.container, pod_full_name(&pod)),
            );
        };
        options.tty = tty;
        options.stderr &= !tty;
    }
    let container_id = match running_container_id(&state, &pod, &t.container).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    if !is_upgrade_request(req.headers()) {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "Upgrade request required");
    }
    let runtime = state.core.manager.runtime().clone();
    if let Some(local) = runtime.local_streams() {
        return local::remote_command(req, local, kind, container_id, command, options);
    }
    let url = match kind {
        Kind::Exec => runtime
            .exec(cri::ExecRequest {
                container_id,
                cmd: command,
                tty: options.tty,
                stdin: options.stdin,
                stdout: options.stdout,
                stderr: options.stderr,
            })
            .await
            .map(|r| r.url),
        Kind::Attach => runtime
            .attach(cri::AttachRequest {
                container_id,
                stdin: options.stdin,
                tty: options.tty,
                stdout: options.stdout,
                stderr: options.stderr,
            })
            .await
            .map(|r| r.url),
    };
    match url {
        Ok(url) => {
            let remote = remote_addr(&req);
            proxy::proxy_upgrade(req, &url, remote).await
        }
        Err(e) => {
            warn!(pod = %pod_full_name(&pod), container = %t.container, error = %e, "asking the runtime for a streaming URL");
            runtime_error_response(&e)
        }
    }
}

async fn port_forward(state: AppState, ns: String, name: String, uid: Option<String>, req: Request) -> Response {
    // Ports in the query matter only to WebSocket clients (one channel pair per port); SPDY
    // names the port in each stream's headers.
    // The SPDY tunnel inside WebSocket takes its ports from the SPDY streams too.
    let ports = if websocket::is_websocket_upgrade(req.headers()) && !websocket::is_port_forward_tunnel(req.headers()) {
        match parse_ports(req.uri().query().unwrap_or("")) {
            Ok(p) => p,
            Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
        }
    } else {
        Vec::new()
    };
    let Some(pod) = find_pod(&state, &ns, &name) else {
        return text(StatusCode::NOT_FOUND, "pod does not exist");
    };
    if uid.as_deref().is_some_and(|u| u != uid_of(&pod)) {
        return text(StatusCode::NOT_FOUND, "pod not found");
    }
    let sandbox_id = match running_pod(&state, &pod).await {
        Err(r) => return r,
        Ok(rp) => match rp.and_then(|rp| {
            rp.sandboxes
                .iter()
                .find(|s| s.state == ContainerState::Running)
                .map(|s| s.id.clone())
        }) {
            Some(id) => id,
            None => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("pod not found ({:?})", pod_full_name(&pod)),
                )
            }
        },
    };
    if !is_upgrade_request(req.headers()) {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "Upgrade request required");
    }
    let runtime = state.core.manager.runtime().clone();
    if let Some(local) = runtime.local_streams() {
        return local::port_forward(req, local, sandbox_id, ports);
    }
    let r = runtime
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: sandbox_id,
            port: ports.iter().map(|p| i32::from(*p)).collect(),
        })
        .await;
    match r {
        Ok(r) => {
            let remote = remote_addr(&req);
            proxy::proxy_upgrade(req, &r.url, remote).await
        }
        Err(e) => {
            warn!(pod = %pod_full_name(&pod), error = %e, "asking the runtime for a port-forward URL");
            runtime_error_response(&e)
        }
    }
}

/// In-process streams: keel terminates SPDY or WebSocket itself and the backend runs the
/// process (or dials the port) on plain channels. Shared with `keel cri`'s streaming server
/// ([`super::criserver`]), which reaches the same protocols through one-shot tokens.
pub mod local {
    use std::sync::Arc;

    use axum::extract::Request;
    use axum::response::Response;
    use futures::FutureExt;

    use crate::genericruntime::streams::LocalStreams;
    use crate::streaming::remotecommand::{DialFn, Kind, Outcome, RunFn, StreamOptions};
    use crate::streaming::{spdy, websocket};

    pub fn remote_command(
        req: Request,
        local: Arc<dyn LocalStreams>,
        kind: Kind,
        container_id: String,
        command: Vec<String>,
        options: StreamOptions,
    ) -> Response {
        let tty = options.tty;
        let run: RunFn = Box::new(move |io| {
            async move {
                let r = match kind {
                    Kind::Exec => local.exec(&container_id, command, tty, io).await,
                    // Attach ends when the process exits or the client leaves: success either way.
                    Kind::Attach => local.attach(&container_id, tty, io).await.map(|()| 0),
                };
                match r {
                    Ok(code) => Outcome::Exited(code),
                    Err(e) => Outcome::Failed(e),
                }
            }
            .boxed()
        });
        if websocket::is_websocket_upgrade(req.headers()) {
            websocket::serve_remotecommand(req, options, kind, run)
        } else {
            spdy::serve_remotecommand(req, options, kind, run)
        }
    }

    pub fn port_forward(req: Request, local: Arc<dyn LocalStreams>, sandbox_id: String, ports: Vec<u16>) -> Response {
        let dial: DialFn = Arc::new(move |port| {
            let local = local.clone();
            let sandbox_id = sandbox_id.clone();
            async move { local.port_forward(&sandbox_id, port).await }.boxed()
        });
        if websocket::is_websocket_upgrade(req.headers()) {
            websocket::serve_port_forward(req, ports, dial)
        } else {
            spdy::serve_port_forward(req, dial)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn upgrade_detection() {
        assert!(is_upgrade_request(&headers(&[("connection", "Upgrade")])));
        assert!(is_upgrade_request(&headers(&[("connection", "keep-alive, upgrade")])));
        assert!(!is_upgrade_request(&headers(&[("connection", "keep-alive")])));
        assert!(!is_upgrade_request(&HeaderMap::new()));
    }

    #[test]
    fn runtime_errors_map_to_statuses() {
        let r = runtime_error_response(&RuntimeError::new("Exec", Code::NotFound, "no such container"));
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = runtime_error_response(&RuntimeError::new("Exec", Code::ResourceExhausted, "too many"));
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "60");
        let r = runtime_error_response(&RuntimeError::new("Exec", Code::Unknown, "boom"));
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn attach_tty_from_spec() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "containers": [{"name": "a", "tty": true}, {"name": "b"}],
                "initContainers": [{"name": "i", "tty": true}],
                "ephemeralContainers": [{"name": "e", "tty": true}]
            }
        }))
        .unwrap();
        assert_eq!(spec_tty(&pod, "a"), Some(true));
        assert_eq!(spec_tty(&pod, "b"), Some(false));
        assert_eq!(spec_tty(&pod, "i"), Some(true));
        assert_eq!(spec_tty(&pod, "e"), Some(true));
        assert_eq!(spec_tty(&pod, "zz"), None);
    }

    /// A backend that serves streams itself: exec echoes its argv (and stdin, if any), then
    /// exits 3; attach writes one line.
    struct FakeLocal;

    #[async_trait::async_trait]
    impl crate::genericruntime::streams::LocalStreams for FakeLocal {
        async fn exec(
            &self,
            container_id: &str,
            cmd: Vec<String>,
            _tty: bool,
            mut io: crate::genericruntime::streams::ProcessIo,
        ) -> Result<i32, RuntimeError> {
            let out = io.stdout.take().unwrap();
            out.send(format!("{container_id}:{}\n", cmd.join(" ")).into())
                .await
                .unwrap();
            if let Some(mut stdin) = io.stdin.take() {
                while let Some(b) = stdin.recv().await {
                    out.send(b).await.unwrap();
                }
            }
            Ok(3)
        }

        async fn attach(
            &self,
            container_id: &str,
            _tty: bool,
            mut io: crate::genericruntime::streams::ProcessIo,
        ) -> Result<(), RuntimeError> {
            let out = io.stdout.take().unwrap();
            out.send(format!("attached to {container_id}\n").into()).await.unwrap();
            Ok(())
        }

        async fn port_forward(
            &self,
            _sandbox_id: &str,
            port: u16,
        ) -> Result<crate::genericruntime::streams::BoxedIo, RuntimeError> {
            Err(RuntimeError::new("PortForward", Code::NotFound, format!("port {port}")))
        }
    }

    /// The in-process dispatch on a plain HTTP/1.1 server with upgrades.
    async fn local_server(kind: Kind) -> std::net::SocketAddr {
        use std::sync::Arc;
        let app = Router::new().route(
            "/run",
            get(move |req: Request| async move {
                let q = parse_exec_query(req.uri().query().unwrap_or(""), kind).unwrap();
                local::remote_command(req, Arc::new(FakeLocal), kind, "cid".into(), q.command, q.options)
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .with_upgrades()
                .await;
        });
        addr
    }

    /// A v4 WebSocket client without stdin: (stdout, status JSON).
    async fn ws_run(addr: std::net::SocketAddr, query: &str) -> (String, String) {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::Message;
        let mut req = format!("ws://{addr}/run?{query}").into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("v4.channel.k8s.io"));
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let (mut stdout, mut status) = (String::new(), String::new());
        let read = async {
            while let Some(Ok(m)) = ws.next().await {
                let Message::Binary(b) = m else { continue };
                match b.split_first() {
                    Some((1, rest)) => stdout.push_str(&String::from_utf8_lossy(rest)),
                    Some((3, rest)) => {
                        status.push_str(&String::from_utf8_lossy(rest));
                        break;
                    }
                    _ => {}
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), read)
            .await
            .unwrap();
        (stdout, status)
    }

    #[tokio::test]
    async fn in_process_exec_and_attach_over_websocket() {
        let addr = local_server(Kind::Exec).await;
        let (out, status) = ws_run(addr, "command=echo&command=hi&output=1").await;
        assert_eq!(out, "cid:echo hi\n");
        let v: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");

        let addr = local_server(Kind::Attach).await;
        let (out, status) = ws_run(addr, "output=1").await;
        assert_eq!(out, "attached to cid\n");
        let v: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert_eq!(v["status"], "Success");
    }
}
