//! The test API server's kubelet proxy and webhook reviews, against a fake kubelet (a TLS server
//! in the test that records what reaches it): kubelet paths and queries as kube-apiserver builds
//! them, the upgrade head and bytes passed through, the apiserver's client certificate, error
//! answers, authorization of the caller, TokenReview and SubjectAccessReview.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, LogParams, Patch, PatchParams, PostParams};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::support::apiserver::TestApiServer;
use crate::support::rawhttp;
use crate::support::util::unique;

/// One request the fake kubelet received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    client_cn: Option<String>,
}

impl Seen {
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A kubelet stand-in: HTTPS with a self-signed certificate, client certificates required from
/// the API server's CA. Upgrades on `/exec|/attach|/portForward` answer 101 and echo bytes
/// (pod `refuse`: 403 with the accepted protocols); `/containerLogs` streams two lines (container
/// `gone`: 404); anything else answers JSON naming the request.
struct FakeKubelet {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeKubelet {
    async fn start(ca_pem: &str) -> FakeKubelet {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ck = rcgen::generate_simple_self_signed(vec!["fake-kubelet".to_string()]).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![ck.cert.der().clone()],
                PrivateKeyDer::from_pem_slice(ck.signing_key.serialize_pem().as_bytes()).unwrap(),
            )
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let client_cn = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| {
                            let (_, cert) = x509_parser::parse_x509_certificate(c).ok()?;
                            let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
                            Some(cn)
                        });
                    let svc = hyper::service::service_fn(move |req| {
                        let seen = seen.clone();
                        let client_cn = client_cn.clone();
                        async move { Ok::<_, Infallible>(fake_kubelet_handle(req, seen, client_cn).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        FakeKubelet { addr, seen, task }
    }

    fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the fake kubelet saw no request")
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn fake_kubelet_handle(
    mut req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    client_cn: Option<String>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        client_cn,
    });
    let streaming = ["/exec/", "/attach/", "/portForward/"]
        .iter()
        .any(|p| path.starts_with(p));
    if streaming {
        if path.contains("/refuse") {
            return Response::builder()
                .status(403)
                .header("X-Accepted-Stream-Protocol-Versions", "v4.channel.k8s.io")
                .body(Body::from("unable to upgrade: unable to negotiate protocol"))
                .unwrap();
        }
        let ws = req
            .headers()
            .get("upgrade")
            .is_some_and(|v| v.to_str().unwrap_or("").eq_ignore_ascii_case("websocket"));
        let mut resp = Response::builder().status(101).header("Connection", "Upgrade");
        if ws {
            let proto = req
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .unwrap_or("")
                .trim()
                .to_string();
            resp = resp
                .header("Upgrade", "websocket")
                .header("Sec-WebSocket-Protocol", proto)
                .header("Sec-WebSocket-Accept", "fake");
        } else {
            let proto = req
                .headers()
                .get("x-stream-protocol-version")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            resp = resp
                .header("Upgrade", "SPDY/3.1")
                .header("X-Stream-Protocol-Version", proto);
        }
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = vec![0u8; 65536];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        });
        return resp.body(Body::empty()).unwrap();
    }
    if path.starts_with("/containerLogs/") {
        if path.ends_with("/gone") {
            return Response::builder()
                .status(404)
                .body(Body::from("container \"gone\" not found in pod \"p\""))
                .unwrap();
        }
        return Response::new(Body::from("hello\nworld\n"));
    }
    let body = json!({"method": req.method().to_string(), "uri": req.uri().to_string()});
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("access-control-allow-origin", "*")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// A server, a Node whose kubelet endpoint is the fake kubelet, and pod `p` (container `c`) on it.
async fn setup() -> (TestApiServer, FakeKubelet, String) {
    let s = TestApiServer::start().await.unwrap();
    let fk = FakeKubelet::start(s.ca_pem()).await;
    let node = unique("node");
    add_node(&s, &node, fk.addr.port()).await;
    add_pod(&s, "p", Some(&node), &["c"]).await;
    (s, fk, node)
}

async fn add_node(s: &TestApiServer, name: &str, port: u16) {
    let nodes: Api<Node> = Api::all(s.client().await);
    let n: Node =
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})).unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
    let status = json!({"status": {
        "addresses": [{"type": "Hostname", "address": "not-resolvable.invalid"}, {"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

async fn add_pod(s: &TestApiServer, name: &str, node: Option<&str>, containers: &[&str]) {
    let pods: Api<Pod> = Api::namespaced(s.client().await, "default");
    let cs: Vec<Value> = containers
        .iter()
        .map(|c| json!({"name": c, "image": "busybox:1.36"}))
        .collect();
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": cs}});
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    pods.create(&PostParams::default(), &serde_json::from_value(p).unwrap())
        .await
        .unwrap();
}

/// A raw TLS connection to the server as the admin.
async fn admin_conn(s: &TestApiServer) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let (cert, key) = s.client_identity("admin", &["system:masters"]);
    let cfg = rawhttp::client_config(Some(s.ca_pem()), Some((&cert, &key))).unwrap();
    rawhttp::connect(s.addr(), cfg).await.unwrap()
}

/// A raw TLS connection without a client certificate (token or anonymous callers).
async fn anon_conn(s: &TestApiServer) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let cfg = rawhttp::client_config(Some(s.ca_pem()), None).unwrap();
    rawhttp::connect(s.addr(), cfg).await.unwrap()
}

fn spdy_exec_request(path_and_query: &str, extra: &str) -> String {
    format!(
        "POST {path_and_query} HTTP/1.1\r\nHost: apiserver\r\nContent-Length: 0\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: v4.channel.k8s.io\r\nX-Stream-Protocol-Version: v3.channel.k8s.io\r\n{extra}\r\n"
    )
}

/// Status JSON of an error answer.
async fn status_of<S: tokio::io::AsyncRead + Unpin>(conn: &mut S, head: &rawhttp::Head, rest: Vec<u8>) -> Value {
    let body = rawhttp::read_body(conn, head, rest).await.unwrap();
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("not a Status ({e}): {}", String::from_utf8_lossy(&body)))
}

/// Sends `data` through an upgraded connection and reads the echo back, concurrently.
async fn echo_through<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static>(
    conn: S,
    leftover: Vec<u8>,
    data: Vec<u8>,
) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(conn);
    let len = data.len();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.flush().await.unwrap();
        w
    });
    let mut got = leftover;
    let mut buf = vec![0u8; 65536];
    while got.len() < len {
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), r.read(&mut buf))
            .await
            .expect("echo timed out")
            .unwrap();
        assert!(n > 0, "connection closed after {} of {len} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    drop(writer.await.unwrap());
    got
}

#[tokio::test]
async fn spdy_exec_goes_to_the_kubelet_path_and_splices_bytes() {
    let (s, fk, _node) = setup().await;
    let mut conn = admin_conn(&s).await;
    let req = spdy_exec_request(
        "/api/v1/namespaces/default/pods/p/exec?command=sh&command=-c&command=echo%20hi&stdin=true&stdout=true&stderr=true&tty=false",
        "Authorization: Bearer should-not-pass\r\n",
    );
    let (head, rest) = rawhttp::exchange(&mut conn, req.as_bytes()).await.unwrap();
    assert_eq!(head.status, 101, "{head:?}");
    assert_eq!(head.header("x-stream-protocol-version"), Some("v4.channel.k8s.io"));
    assert_eq!(head.header("upgrade"), Some("SPDY/3.1"));
    let up = s.upgrades();
    assert_eq!(up.len(), 1);
    assert_eq!(
        (up[0].path.as_str(), up[0].upgrade.as_str(), up[0].protocol.as_str()),
        ("/exec/default/p/c", "SPDY/3.1", "v4.channel.k8s.io")
    );
    let seen = fk.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(
        seen.uri,
        "/exec/default/p/c?command=sh&command=-c&command=echo+hi&error=1&input=1&output=1"
    );
    assert_eq!(seen.client_cn.as_deref(), Some("kube-apiserver-kubelet-client"));
    assert_eq!(
        seen.all("x-stream-protocol-version"),
        vec!["v4.channel.k8s.io", "v3.channel.k8s.io"]
    );
    assert!(
        seen.all("authorization").is_empty(),
        "credentials must not reach the kubelet"
    );
    let data: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let got = echo_through(conn, rest, data.clone()).await;
    assert_eq!(got.len(), data.len());
    assert!(got == data, "bytes differ after the splice");
}

#[tokio::test]
async fn websocket_attach_and_portforward_pass_through_with_their_headers() {
    let (s, fk, _node) = setup().await;
    // A token user allowed `get pods/attach` only (a WebSocket upgrade is a GET).
    let token = s.token_for("ws-user");
    s.grant("ws-user", "get", "pods", "attach");
    let ws_head = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: apiserver\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
        )
    };
    let mut conn = anon_conn(&s).await;
    let (head, rest) = rawhttp::exchange(
        &mut conn,
        ws_head("/api/v1/namespaces/default/pods/p/attach?container=c&stdin=1&stdout=1&tty=true").as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(head.status, 101, "{head:?}");
    assert_eq!(head.header("sec-websocket-protocol"), Some("v5.channel.k8s.io"));
    assert_eq!(s.upgrades()[0].protocol, "v5.channel.k8s.io");
    let seen = fk.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri, "/attach/default/p/c?input=1&output=1&tty=1");
    assert_eq!(seen.all("sec-websocket-protocol"), vec!["v5.channel.k8s.io"]);
    assert_eq!(seen.all("sec-websocket-key"), vec!["dGhlIHNhbXBsZSBub25jZQ=="]);
    assert!(seen.all("authorization").is_empty());
    let got = echo_through(conn, rest, b"ping".to_vec()).await;
    assert_eq!(got, b"ping");

    // Not granted: port-forward is refused before the kubelet is asked.
    let before = fk.count();
    let mut conn = anon_conn(&s).await;
    let (head, rest) = rawhttp::exchange(
        &mut conn,
        ws_head("/api/v1/namespaces/default/pods/p/portforward?ports=8080").as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(head.status, 403);
    let st = status_of(&mut conn, &head, rest).await;
    assert_eq!(
        st["message"],
        "pods \"p\" is forbidden: User \"ws-user\" cannot get resource \"pods/portforward\" in API group \"\" in the namespace \"default\""
    );
    assert_eq!(fk.count(), before);
    s.grant("ws-user", "*", "pods", "portforward");
    let mut conn = anon_conn(&s).await;
    let (head, _) = rawhttp::exchange(
        &mut conn,
        ws_head("/api/v1/namespaces/default/pods/p/portforward?ports=8080&ports=9090").as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(head.status, 101);
    assert_eq!(fk.last().uri, "/portForward/default/p?port=8080%2C9090");
}

#[tokio::test]
async fn streaming_errors_read_like_kube_apiserver() {
    let (s, fk, node) = setup().await;
    add_pod(&s, "refuse", Some(&node), &["c"]).await;
    add_pod(&s, "unbound", None, &["c"]).await;
    add_pod(&s, "two", Some(&node), &["a", "b"]).await;
    add_pod(&s, "ghost", Some("no-such-node"), &["c"]).await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let down = unique("down");
    add_node(&s, &down, closed_port).await;
    add_pod(&s, "down", Some(&down), &["c"]).await;

    async fn exec(s: &TestApiServer, pod: &str, upgrade: bool) -> (u16, Value, rawhttp::Head) {
        let mut conn = admin_conn(s).await;
        let path = format!("/api/v1/namespaces/default/pods/{pod}/exec?command=true&stdout=1");
        let req = if upgrade {
            spdy_exec_request(&path, "")
        } else {
            format!("POST {path} HTTP/1.1\r\nHost: apiserver\r\nContent-Length: 0\r\n\r\n")
        };
        let (head, rest) = rawhttp::exchange(&mut conn, req.as_bytes()).await.unwrap();
        let body = rawhttp::read_body(&mut conn, &head, rest).await.unwrap();
        let v = serde_json::from_slice(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body)));
        (head.status, v, head)
    }

    // The kubelet's refusal comes back as it is, with its headers.
    let (code, body, head) = exec(&s, "refuse", true).await;
    assert_eq!(code, 403);
    assert_eq!(body, json!("unable to upgrade: unable to negotiate protocol"));
    assert_eq!(
        head.header("x-accepted-stream-protocol-versions"),
        Some("v4.channel.k8s.io")
    );

    let (code, body, _) = exec(&s, "p", false).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (400, Some("Upgrade request required"))
    );
    let (code, body, _) = exec(&s, "nope", true).await;
    assert_eq!((code, body["reason"].as_str()), (404, Some("NotFound")));
    assert_eq!(body["message"], "pods \"nope\" not found");
    let (code, body, _) = exec(&s, "unbound", true).await;
    assert_eq!(code, 400);
    assert_eq!(body["message"], "pod unbound does not have a host assigned");
    let (code, body, _) = exec(&s, "two", true).await;
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        "a container name must be specified for pod two, choose one of: [a b]"
    );
    let (code, body, _) = exec(&s, "ghost", true).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (404, Some("nodes \"no-such-node\" not found"))
    );
    let (code, body, _) = exec(&s, "down", true).await;
    assert_eq!(code, 500);
    let msg = body["message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with(&format!("error dialing backend: dial tcp 127.0.0.1:{closed_port}")),
        "{body}"
    );
    assert!(body.get("reason").is_none(), "a plain error has no reason: {body}");

    // No credentials at all.
    let mut conn = anon_conn(&s).await;
    let (head, _) = rawhttp::exchange(
        &mut conn,
        spdy_exec_request("/api/v1/namespaces/default/pods/p/exec?command=true&stdout=1", "").as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(head.status, 401);
    // Only the requests that passed every check reached the kubelet ("refuse").
    assert_eq!(fk.count(), 1);
}

#[tokio::test]
async fn pod_logs_map_options_and_stream_through_kube_and_kubectl() {
    let (s, fk, _node) = setup().await;
    add_pod(&s, "gone", Some(&fk_node(&s).await), &["gone"]).await;
    let pods: Api<Pod> = Api::namespaced(s.client().await, "default");
    let params = LogParams {
        follow: true,
        tail_lines: Some(5),
        timestamps: true,
        limit_bytes: Some(100),
        since_seconds: Some(60),
        ..Default::default()
    };
    let text = pods.logs("p", &params).await.unwrap();
    assert_eq!(text, "hello\nworld\n");
    assert_eq!(
        fk.last().uri,
        "/containerLogs/default/p/c?follow=true&limitBytes=100&sinceSeconds=60&tailLines=5&timestamps=true"
    );
    let out = s.kubectl(&["logs", "p", "--previous"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nworld\n");
    assert_eq!(fk.last().uri, "/containerLogs/default/p/c?previous=true");

    // A kubelet 404 becomes the generic NotFound kubectl prints.
    let out = s.kubectl(&["logs", "gone"]).await;
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error from server (NotFound): the server could not find the requested resource ( pods/log gone)"
    );
    // Validation happens at the API server.
    let out = s
        .kubectl(&["get", "--raw", "/api/v1/namespaces/default/pods/p/log?tailLines=-1"])
        .await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must be greater than or equal to 0"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A pod on no node has no logs yet: 204.
    add_pod(&s, "unbound", None, &["c"]).await;
    let out = s.kubectl(&["logs", "unbound"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());
}

/// The name of the node `setup` created (the one pod `p` is on).
async fn fk_node(s: &TestApiServer) -> String {
    let pods: Api<Pod> = Api::namespaced(s.client().await, "default");
    pods.get("p").await.unwrap().spec.unwrap().node_name.unwrap()
}

#[tokio::test]
async fn node_proxy_passes_any_path_and_needs_a_grant() {
    let (s, fk, node) = setup().await;
    let path = format!("/api/v1/nodes/{node}/proxy/stats/summary?only_cpu_and_memory=true");
    let out = s.kubectl(&["get", "--raw", &path]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["uri"], "/stats/summary?only_cpu_and_memory=true");
    assert_eq!(v["method"], "GET");
    assert_eq!(fk.last().client_cn.as_deref(), Some("kube-apiserver-kubelet-client"));

    // POST with a body, CORS headers stripped, the root redirected to a trailing slash.
    let mut conn = admin_conn(&s).await;
    let req = format!("POST /api/v1/nodes/{node}/proxy/run/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
    let (head, rest) = rawhttp::exchange(&mut conn, req.as_bytes()).await.unwrap();
    assert_eq!(head.status, 200);
    assert!(head.header("access-control-allow-origin").is_none());
    let body: Value = serde_json::from_slice(&rawhttp::read_body(&mut conn, &head, rest).await.unwrap()).unwrap();
    assert_eq!(body["method"], "POST");
    let req = format!("GET /api/v1/nodes/{node}/proxy?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
    let (head, _) = rawhttp::exchange(&mut conn, req.as_bytes()).await.unwrap();
    assert_eq!(head.status, 301);
    assert_eq!(
        head.header("location"),
        Some(format!("/api/v1/nodes/{node}/proxy/?x=1").as_str())
    );

    // A token user needs `get nodes/proxy`.
    let token = s.token_for("alice");
    let get = format!("GET {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\r\n");
    let mut conn = anon_conn(&s).await;
    let (head, rest) = rawhttp::exchange(&mut conn, get.as_bytes()).await.unwrap();
    assert_eq!(head.status, 403);
    let st = status_of(&mut conn, &head, rest).await;
    assert_eq!(
        st["message"],
        format!("nodes \"{node}\" is forbidden: User \"alice\" cannot get resource \"nodes/proxy\" in API group \"\" at the cluster scope")
    );
    s.grant("alice", "get", "nodes", "proxy");
    let mut conn = anon_conn(&s).await;
    let (head, _) = rawhttp::exchange(&mut conn, get.as_bytes()).await.unwrap();
    assert_eq!(head.status, 200);
}

/// POSTs a review with `kubeconfig`'s credentials; returns (HTTP code, body).
async fn post_review(kubeconfig: std::path::PathBuf, path: &str, body: Value) -> (u16, Value) {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    let req = http::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    match client.request::<Value>(req).await {
        Ok(v) => (201, v),
        Err(kube::Error::Api(s)) => (s.code, json!({"message": s.message, "reason": s.reason})),
        Err(e) => panic!("{path}: {e}"),
    }
}

#[tokio::test]
async fn token_and_subject_access_reviews_answer_the_kubelet_webhooks() {
    let s = TestApiServer::start().await.unwrap();
    let node_kc = s.kubeconfig_for("system:node:n1", &["system:nodes"]);
    let token = s.token_for("bob");
    const TR: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
    const SAR: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
    let tr = |t: &str| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": t}});

    let (code, v) = post_review(node_kc.clone(), TR, tr(&token)).await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["status"]["authenticated"], true);
    assert_eq!(v["status"]["user"]["username"], "bob");
    assert!(v["status"]["user"]["groups"]
        .as_array()
        .unwrap()
        .contains(&json!("system:authenticated")));
    let (_, v) = post_review(node_kc.clone(), TR, tr("not-a-token")).await;
    assert_ne!(v["status"]["authenticated"], true);
    let (code, _) = post_review(node_kc.clone(), TR, tr("")).await;
    assert_eq!(code, 400);
    // Only nodes (and admins) may review tokens.
    let (code, v) = post_review(s.token_kubeconfig("carol"), TR, tr(&token)).await;
    assert_eq!((code, v["reason"].as_str()), (403, Some("Forbidden")));

    let sar = |user: &str, groups: &[&str], verb: &str, sub: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
            "user": user, "groups": groups,
            "resourceAttributes": {"verb": verb, "resource": "nodes", "subresource": sub, "name": "n1", "version": "v1"}}})
    };
    let allowed = |v: &Value| v["status"]["allowed"] == true;
    let (code, v) = post_review(
        node_kc.clone(),
        SAR,
        sar("alice", &["system:authenticated"], "get", "stats"),
    )
    .await;
    assert_eq!(code, 201);
    assert!(!allowed(&v), "{v}");
    s.grant("alice", "get", "nodes", "stats");
    let (_, v) = post_review(
        node_kc.clone(),
        SAR,
        sar("alice", &["system:authenticated"], "get", "stats"),
    )
    .await;
    assert!(allowed(&v), "{v}");
    let (_, v) = post_review(
        node_kc.clone(),
        SAR,
        sar("alice", &["system:authenticated"], "create", "stats"),
    )
    .await;
    assert!(!allowed(&v), "{v}");
    let (_, v) = post_review(
        node_kc.clone(),
        SAR,
        sar(
            s.kubelet_client_user(),
            &["system:masters", "system:authenticated"],
            "create",
            "proxy",
        ),
    )
    .await;
    assert!(allowed(&v), "{v}");
    let (_, v) = post_review(
        node_kc.clone(),
        SAR,
        sar(s.kubelet_client_user(), &["system:authenticated"], "get", "metrics"),
    )
    .await;
    assert!(
        allowed(&v),
        "kubeadm binds the kubelet client to system:kubelet-api-admin: {v}"
    );
    let (_, v) = post_review(
        node_kc.clone(),
        SAR,
        sar("system:node:n2", &["system:nodes"], "get", "proxy"),
    )
    .await;
    assert!(!allowed(&v), "{v}");
    let (code, _) = post_review(
        node_kc.clone(),
        SAR,
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {"user": "x"}}),
    )
    .await;
    assert_eq!(code, 422);
    let (code, _) = post_review(s.token_kubeconfig("carol"), SAR, sar("alice", &[], "get", "stats")).await;
    assert_eq!(code, 403);

    // kubectl auth can-i (SelfSubjectAccessReview) sees the same policy.
    let out = s
        .kubectl(&["auth", "can-i", "create", "pods", "--subresource=exec"])
        .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "yes",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alice = s.token_kubeconfig("alice");
    let out = s
        .kubectl(&[
            "--kubeconfig",
            alice.to_str().unwrap(),
            "auth",
            "can-i",
            "get",
            "nodes",
            "--subresource=stats",
        ])
        .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "yes",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s
        .kubectl(&[
            "--kubeconfig",
            alice.to_str().unwrap(),
            "auth",
            "can-i",
            "get",
            "nodes",
            "--subresource=proxy",
        ])
        .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
}
