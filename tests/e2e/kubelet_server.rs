//! The kubelet server seen from a raw HTTPS client: TLS with the generated serving certificate,
//! x509 and bearer-token authentication (401 without credentials), `/pods`, `/runningpods/`,
//! `/healthz` on both ports, exec request validation, and the serving certificate kept across a
//! restart.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::apiserver::TestApiServer;
use crate::support::keel::{Keel, KeelOpts};
use crate::support::util::{unique, wait_for};

const T: Duration = Duration::from_secs(60);

/// A client certificate (chain + key) signed by a test CA.
struct ClientCert {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// A test CA: its PEM (for `--client-ca-file`) and a signer for client certificates.
struct TestCa {
    pem: String,
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa { pem, params, key }
    }

    fn client(&self, cn: &str, org: &str) -> ClientCert {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.distinguished_name.push(rcgen::DnType::OrganizationName, org);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = p.signed_by(&key, &issuer).unwrap();
        ClientCert {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        }
    }
}

/// A TLS connection to keel's server on 127.0.0.1, trusting the kubelet's own certificate.
async fn tls_connect(
    port: u16,
    server_cert: &Path,
    client: Option<&ClientCert>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(server_cert)? {
        roots.add(c?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        Some(c) => builder.with_client_auth_cert(c.chain.clone(), c.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    connector
        .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
        .await
        .context("TLS handshake")
}

/// One request over a fresh TLS connection: status and body.
async fn https(
    port: u16,
    server_cert: &Path,
    client: Option<&ClientCert>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String)> {
    let mut tls = tls_connect(port, server_cert, client).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tls.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    // A server may close without close_notify; what was read is the answer.
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    parse_response(&out)
}

async fn http_plain(port: u16, path: &str) -> Result<(u16, String)> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await??;
    parse_response(&out)
}

fn parse_response(raw: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no response head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((status, body.to_string()))
}

/// Waits until the kubelet server answers TLS (its certificate is written before it binds).
async fn wait_serving(keel: &Keel, cert: &Path, client: Option<&ClientCert>) -> Result<()> {
    wait_for("kubelet server up", T, || async {
        if !cert.exists() {
            return None;
        }
        https(keel.port(), cert, client, "GET", "/healthz", &[])
            .await
            .ok()
            .map(|_| ())
    })
    .await
    .with_context(|| keel.log_tail(30))
}

const STATIC_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    image: busybox:1.36\n    command: [sh, -c, 'sleep 3600']\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_clients_reach_the_routes_and_others_get_401() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test-client-ca");
    let ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("web.yaml"), STATIC_POD).unwrap();
    let node = unique("srv");
    let mut keel = Keel::start(
        KeelOpts::new(&node, None, dir.path())
            .arg("--client-ca-file")
            .arg(ca_file.to_str().unwrap())
            .arg("--pod-manifest-path")
            .arg(manifests.to_str().unwrap()),
    )
    .await
    .unwrap();
    let cert = dir.path().join("root/pki/kubelet.crt");
    let me = ca.client("kube-apiserver-kubelet-client", "system:masters");
    wait_serving(&keel, &cert, Some(&me)).await.unwrap();
    let port = keel.port();

    // No credentials, anonymous off: 401 with a Status body on every route.
    for path in [
        "/pods",
        "/healthz",
        "/runningpods/",
        "/exec/default/web/app?command=ls&output=1",
    ] {
        let (code, body) = https(port, &cert, None, "GET", path, &[]).await.unwrap();
        assert_eq!(code, 401, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["reason"], "Unauthorized");
        assert_eq!(v["code"], 401);
    }
    // A certificate from another CA fails the handshake (rustls checks it there).
    let stranger = TestCa::new("other-ca").client("mallory", "x");
    assert!(https(port, &cert, Some(&stranger), "GET", "/pods", &[]).await.is_err());
    // Unknown paths are 404 before authentication, as go-restful answers.
    assert_eq!(
        https(port, &cert, None, "GET", "/nothing-here", &[]).await.unwrap().0,
        404
    );

    let (code, body) = https(port, &cert, Some(&me), "GET", "/healthz?verbose", &[])
        .await
        .unwrap();
    assert_eq!(
        (code, body.as_str()),
        (200, "[+]ping ok\n[+]log ok\n[+]syncloop ok\nhealthz check passed\n")
    );
    assert_eq!(
        https(port, &cert, Some(&me), "GET", "/healthz/syncloop", &[])
            .await
            .unwrap(),
        (200, "ok".into())
    );

    // The static pod shows in /pods and, once running, in /runningpods/.
    let pod_name = format!("web-{node}");
    let running = wait_for("static pod in /runningpods/", T, || async {
        let (code, body) = https(port, &cert, Some(&me), "GET", "/runningpods/", &[]).await.ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (code == 200 && v["items"][0]["metadata"]["name"] == pod_name.as_str()).then_some(v)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", keel.log_tail(30)));
    assert_eq!(running["kind"], "PodList");
    assert_eq!(running["items"][0]["spec"]["containers"][0]["name"], "app");
    let image = running["items"][0]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default();
    assert!(image.contains("busybox"), "image from the runtime: {running}");
    let (code, body) = https(port, &cert, Some(&me), "GET", "/pods", &[]).await.unwrap();
    assert_eq!(code, 200);
    let pods: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(pods["apiVersion"], "v1");
    assert_eq!(pods["items"][0]["metadata"]["name"], pod_name.as_str());
    assert_eq!(pods["items"][0]["metadata"]["namespace"], "default");

    // Exec validation, before any upgrade.
    let ns_pod = format!("/exec/default/{pod_name}");
    let cases = [
        (
            format!("{ns_pod}/app?command=ls"),
            400,
            "you must specify at least 1 of stdin, stdout, stderr",
        ),
        (
            "/exec/default/nope/app?command=ls&output=1".to_string(),
            404,
            "pod does not exist",
        ),
        (
            format!("{ns_pod}/other?command=ls&output=1"),
            500,
            "container not found (\"other\")",
        ),
        (
            format!("{ns_pod}/app?command=ls&output=1"),
            500,
            "Upgrade request required",
        ),
        ("/portForward/default/nope".to_string(), 404, "pod does not exist"),
        (
            format!("/portForward/default/{pod_name}/wrong-uid"),
            404,
            "pod not found",
        ),
    ];
    for (path, want_code, want_body) in cases {
        let (code, body) = https(port, &cert, Some(&me), "POST", &path, &[]).await.unwrap();
        assert_eq!((code, body.as_str()), (want_code, want_body), "{path}");
    }

    // exec on the simulated runtime: keel serves the WebSocket protocol itself.
    let out = ws_exec(
        port,
        &cert,
        Some(&me),
        &format!("{ns_pod}/app?command=sh&command=-c&command=echo+out%3B+echo+err+%3E%262%3B+exit+7&output=1&error=1"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", keel.log_tail(30)));
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str()),
        ("out\n", "err\n"),
        "{out:?}"
    );
    let status: Value = serde_json::from_str(&out.status).unwrap();
    assert_eq!(status["details"]["causes"][0]["message"], "7", "{out:?}");

    // The plain healthz port answers without TLS or credentials (ping only, as the kubelet's).
    assert_eq!(
        http_plain(keel.healthz_port(), "/healthz").await.unwrap(),
        (200, "ok".into())
    );

    // A restart keeps the generated serving certificate.
    let before = std::fs::read(&cert).unwrap();
    keel.restart_after_kill9().await.unwrap();
    wait_serving(&keel, &cert, Some(&me)).await.unwrap();
    assert_eq!(std::fs::read(&cert).unwrap(), before, "self-signed certificate reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_reviewed_by_the_api_server() {
    let api = TestApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = unique("srv");
    let kubeconfig = api.kubeconfig_for(&format!("system:node:{node}"), &["system:nodes"]);
    let keel = Keel::start(
        KeelOpts::new(&node, Some(kubeconfig), dir.path())
            .arg("--authentication-token-webhook")
            .arg("--authorization-mode")
            .arg("AlwaysAllow"),
    )
    .await
    .unwrap();
    let cert = dir.path().join("root/pki/kubelet.crt");
    wait_for("serving certificate", T, || async { cert.exists().then_some(()) })
        .await
        .unwrap();
    let token_kc = std::fs::read_to_string(api.token_kubeconfig("metrics-reader")).unwrap();
    let token = token_kc
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap()
        .to_string();
    let auth = format!("Bearer {token}");
    let (code, body) = wait_for("authenticated /pods", T, || async {
        let r = https(keel.port(), &cert, None, "GET", "/pods", &[("Authorization", &auth)])
            .await
            .ok()?;
        (r.0 != 0).then_some(r)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", keel.log_tail(30)));
    assert_eq!(code, 200, "{body}\n{}", keel.log_tail(20));
    let (code, _) = https(
        keel.port(),
        &cert,
        None,
        "GET",
        "/pods",
        &[("Authorization", "Bearer not-a-token")],
    )
    .await
    .unwrap();
    assert_eq!(code, 401);
}

/// What a WebSocket remote command (`v4.channel.k8s.io`) produced: stdout, stderr and the
/// status JSON of the error channel.
#[derive(Debug, Default)]
struct WsOutput {
    stdout: String,
    stderr: String,
    status: String,
}

/// Runs `path` (an exec URL with its query) as a WebSocket client would, through keel's server.
async fn ws_exec(port: u16, server_cert: &Path, client: Option<&ClientCert>, path: &str) -> Result<WsOutput> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let tls = tls_connect(port, server_cert, client).await?;
    let mut req = format!("wss://127.0.0.1:{port}{path}").into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "v4.channel.k8s.io".parse()?);
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tls)
        .await
        .context("WebSocket handshake")?;
    anyhow::ensure!(
        resp.headers().get("sec-websocket-protocol").map(|v| v.as_bytes()) == Some(b"v4.channel.k8s.io"),
        "negotiated {:?}",
        resp.headers().get("sec-websocket-protocol")
    );
    let mut out = WsOutput::default();
    let read = async {
        while let Some(m) = ws.next().await {
            let data = match m? {
                Message::Binary(b) => b.to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((ch, rest)) = data.split_first() else { continue };
            let text = String::from_utf8_lossy(rest);
            match ch {
                1 => out.stdout.push_str(&text),
                2 => out.stderr.push_str(&text),
                3 => out.status.push_str(&text),
                _ => {}
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .context("exec did not finish")??;
    Ok(out)
}

/// keel on the containerd of scripts/containerd-env.sh as `Node::start_cri` starts it, with
/// anonymous access and AlwaysAllow (this test is about the streaming proxy), and eviction
/// thresholds low enough that a nearly full build disk does not evict the test pod.
async fn start_cri_node() -> Result<crate::support::util::Node> {
    let socket = std::env::var("KEEL_CRI_SOCKET")
        .ok()
        .filter(|s| !s.is_empty())
        .context("KEEL_CRI_SOCKET is not set: run the CRI e2e tests through scripts/test.sh")?;
    let root = std::env::var("KEEL_TEST_CGROUP_ROOT")
        .ok()
        .filter(|r| r.starts_with('/'))
        .unwrap_or_else(|| "/keel-test".to_string());
    let api = TestApiServer::start().await?;
    let dir = tempfile::tempdir()?;
    let name = unique("node");
    let config = dir.path().join("kubelet-config.yaml");
    std::fs::write(
        &config,
        format!(
            "kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1beta1\ncgroupRoot: {}/{name}\n\
             evictionHard:\n  memory.available: 1Mi\n  nodefs.available: 1%\n  imagefs.available: 1%\n\
             authentication:\n  anonymous:\n    enabled: true\nauthorization:\n  mode: AlwaysAllow\n",
            root.trim_end_matches('/')
        ),
    )?;
    let kubeconfig = api.kubeconfig_for(&format!("system:node:{name}"), &["system:nodes"]);
    let opts = KeelOpts::new(&name, Some(kubeconfig), dir.path())
        .arg("--runtime")
        .arg(format!("unix://{socket}"))
        .arg("--config")
        .arg(config.to_string_lossy().into_owned());
    let keel = Keel::start(opts).await?;
    let node = crate::support::util::Node { api, keel, name, dir };
    node.wait_ready().await?;
    Ok(node)
}

/// exec on containerd: keel asks the runtime for a streaming URL and splices the client's
/// WebSocket upgrade to containerd's streaming server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_exec_is_proxied_to_the_runtime_streaming_server() {
    let _g = crate::cri_lifecycle::cri_lock().await;
    let node = start_cri_node().await.unwrap();
    let name = unique("exec");
    crate::support::util::apply(
        &node.api,
        &crate::support::util::pod_yaml(&name, &node.name, "Never", "sleep 3600"),
    )
    .await
    .unwrap();
    node.wait_pod(&name, "Running", T, |p| crate::support::util::phase(p) == "Running")
        .await
        .unwrap();
    let cert = node.dir.path().join("root/pki/kubelet.crt");
    let out = ws_exec(
        node.keel.port(),
        &cert,
        None,
        &format!(
            "/exec/default/{name}/main?command=sh&command=-c&command=echo+out%3B+echo+err+%3E%262&output=1&error=1"
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", node.keel.log_tail(30)));
    assert_eq!(out.stdout, "out\n", "{out:?}");
    assert_eq!(out.stderr, "err\n", "{out:?}");
    assert!(out.status.contains("Success"), "{out:?}");

    let out = ws_exec(
        node.keel.port(),
        &cert,
        None,
        &format!("/exec/default/{name}/main?command=sh&command=-c&command=exit+3&output=1"),
    )
    .await
    .unwrap();
    assert!(out.status.contains("NonZeroExitCode"), "{out:?}");

    crate::cri_lifecycle::delete_all(&node).await;
}
