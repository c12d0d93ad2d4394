//! An in-memory Kubernetes API server for keel's tests: real REST semantics over HTTPS (its own
//! CA, client-certificate and bearer-token authentication), good enough for kube-rs and kubectl.
//! It runs inside the test process; dropping it stops it and removes its private directory.

mod admission;
mod auth;
mod authz;
mod defaulting;
mod discovery;
mod errors;
mod events;
mod fieldvalidation;
mod handlers;
mod kubeletproxy;
mod nodeauthz;
mod objects;
mod patch;
mod pki;
mod protobuf;
mod resources;
mod selectors;
mod server;
mod store;
mod table;
mod watch;

pub use self::server::RequestRecord;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::auth::{Tokens, UserInfo};
pub use self::kubeletproxy::UpgradeRecord;
use self::objects::{new_uid, now_time};
use self::pki::Pki;
use self::server::Shared;
use self::store::Store;

/// Namespaces every cluster starts with.
const INITIAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

pub struct TestApiServer {
    shared: Arc<Shared>,
    dir: tempfile::TempDir,
    admin_kubeconfig: PathBuf,
    accept_task: JoinHandle<()>,
}

impl TestApiServer {
    /// Binds 127.0.0.1:0, HTTPS with its own CA, in a private tempdir; namespaces default,
    /// kube-system, kube-public, kube-node-lease exist.
    pub async fn start() -> anyhow::Result<TestApiServer> {
        // Another test may have installed it already; either way ring is the process default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::Builder::new()
            .prefix("keel-apiserver-")
            .tempdir()
            .context("creating the tempdir")?;
        let pki = Pki::new().context("creating the PKI")?;
        let acceptor = server::tls_acceptor(&pki).context("building TLS")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding 127.0.0.1:0")?;
        let addr: SocketAddr = listener.local_addr().context("reading the bound address")?;
        std::fs::write(dir.path().join("ca.crt"), &pki.ca_pem).context("writing ca.crt")?;
        let kubelet_tls = kubeletproxy::kubelet_connector(&pki).context("building the kubelet client")?;
        let (outages, _) = tokio::sync::watch::channel(0u64);
        let shared = Arc::new(Shared {
            store: Store::new(),
            pki,
            tokens: Tokens::default(),
            grants: authz::Grants::default(),
            upgrades: std::sync::Mutex::new(Vec::new()),
            kubelet_tls,
            available: AtomicBool::new(true),
            requests: std::sync::Mutex::new(Vec::new()),
            outages,
            shutdown: CancellationToken::new(),
            addr,
        });
        bootstrap(&shared);
        let accept_task = tokio::spawn(server::serve(shared.clone(), listener, acceptor));
        let mut s = TestApiServer {
            shared,
            dir,
            admin_kubeconfig: PathBuf::new(),
            accept_task,
        };
        s.admin_kubeconfig = s
            .write_cert_kubeconfig("admin", &["system:masters"])
            .context("writing the admin kubeconfig")?;
        Ok(s)
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.shared.addr)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn ca_pem(&self) -> &str {
        &self.shared.pki.ca_pem
    }

    /// kubeconfig for an admin (client cert CN=admin, O=system:masters).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.admin_kubeconfig.clone()
    }

    /// kubeconfig with a client certificate for `user` in `groups` (at most 2 groups).
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> PathBuf {
        match self.write_cert_kubeconfig(user, groups) {
            Ok(p) => p,
            Err(e) => panic!("test apiserver: writing a kubeconfig for {user}: {e:#}"),
        }
    }

    /// A client certificate and key (PEM) from the server's CA for `user` in `groups` (at most
    /// 2), for clients that talk HTTPS themselves (to the server, or to a kubelet trusting this CA).
    pub fn client_identity(&self, user: &str, groups: &[&str]) -> (String, String) {
        match self.shared.pki.client_cert(user, groups) {
            Ok(ck) => (ck.cert_pem, ck.key_pem),
            Err(e) => panic!("test apiserver: issuing a client certificate for {user}: {e}"),
        }
    }

    /// A bearer token the server maps to `user` (no groups but `system:authenticated`).
    pub fn token_for(&self, user: &str) -> String {
        let token = format!("{}{}", objects::random_suffix(16), objects::random_suffix(16));
        self.shared
            .tokens
            .insert(token.clone(), UserInfo::new(user, "", Vec::new()), None);
        token
    }

    /// The server's `host:port`.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// kubeconfig with a bearer token the server maps to `user`.
    pub fn token_kubeconfig(&self, user: &str) -> PathBuf {
        let token = self.token_for(user);
        let path = self.dir.path().join(format!("token-{}.kubeconfig", file_safe(user)));
        let user_yaml = format!("    token: {token}\n");
        if let Err(e) = std::fs::write(&path, self.kubeconfig_text(user, &user_yaml)) {
            panic!("test apiserver: writing {}: {e}", path.display());
        }
        path
    }

    /// Lets `user` do `verb` (or `*`) on `resource/subresource` (subresource "" for the object
    /// itself, `*` for all), in every namespace: a test's RBAC binding, e.g.
    /// `grant("alice", "get", "nodes", "stats")`.
    pub fn grant(&self, user: &str, verb: &str, resource: &str, subresource: &str) {
        self.shared.grants.add(user, verb, resource, subresource);
    }

    /// CN of the client certificate the server presents to kubelets (in `system:masters`).
    pub fn kubelet_client_user(&self) -> &'static str {
        authz::KUBELET_CLIENT_USER
    }

    /// An admin kube client.
    pub async fn client(&self) -> kube::Client {
        let build = async {
            let kc = kube::config::Kubeconfig::read_from(&self.admin_kubeconfig)?;
            let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
            anyhow::Ok(kube::Client::try_from(config)?)
        };
        match build.await {
            Ok(c) => c,
            Err(e) => panic!("test apiserver: building the admin client from its own kubeconfig: {e:#}"),
        }
    }

    /// Outage: while false every request gets 503 and open watches end.
    pub fn set_available(&self, up: bool) {
        self.shared.available.store(up, Ordering::SeqCst);
        if !up {
            self.shared.outages.send_modify(|n| *n += 1);
        }
    }

    /// Removes an object from the store directly, as someone on the other side of a network
    /// partition would (e.g. a force-deleted pod), also while the server is unavailable to
    /// clients. `resource` is the storage bucket (`pods`, `configmaps`, ...).
    #[allow(dead_code)] // not every test binary partitions its server
    pub fn remove_object(&self, resource: &str, ns: &str, name: &str) -> bool {
        self.shared.store.lock().delete(resource, ns, name).is_some()
    }

    /// Forgets watch history: watches from any older resourceVersion get 410 Gone.
    pub fn compact(&self) {
        self.shared.store.lock().compact();
    }

    /// Every authenticated request so far, oldest first.
    #[allow(dead_code)] // only the fault tests count requests
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The upgrades the kubelet proxy completed (101 from the kubelet), oldest first.
    pub fn upgrades(&self) -> Vec<UpgradeRecord> {
        self.shared.upgrades.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A kubectl command (`bin`: a path or a name on PATH) with the admin kubeconfig and a
    /// private HOME, stdio piped, killed when dropped: for tests that stream through it.
    pub fn kubectl_command(&self, bin: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs kubectl (env KUBECTL or "kubectl") with the admin kubeconfig.
    pub async fn kubectl(&self, args: &[&str]) -> Output {
        self.run_kubectl(args, None).await
    }

    /// Same, feeding `stdin` (for `kubectl apply -f -`).
    pub async fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.run_kubectl(args, Some(stdin)).await
    }

    async fn run_kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .args(args)
            // A private HOME keeps kubectl's discovery cache per server.
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let run = async {
            let mut child = cmd.spawn()?;
            if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
                pipe.write_all(input.as_bytes()).await?;
                drop(pipe);
            }
            child.wait_with_output().await
        };
        match run.await {
            Ok(o) => o,
            Err(e) => {
                use std::os::unix::process::ExitStatusExt;
                Output {
                    status: std::process::ExitStatus::from_raw(127 << 8),
                    stdout: Vec::new(),
                    stderr: format!("running {bin}: {e}").into_bytes(),
                }
            }
        }
    }

    fn kubeconfig_text(&self, user: &str, user_yaml: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: keel-test\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\ncontexts:\n- name: keel-test\n  context:\n    cluster: keel-test\n    user: {user_q}\n    namespace: default\ncurrent-context: keel-test\nusers:\n- name: {user_q}\n  user:\n{user_yaml}",
            url = self.url(),
            ca = self.dir.path().join("ca.crt").display(),
            user_q = json!(user),
        )
    }

    fn write_cert_kubeconfig(&self, user: &str, groups: &[&str]) -> anyhow::Result<PathBuf> {
        let ck = self.shared.pki.client_cert(user, groups)?;
        let base = format!("user-{}", file_safe(user));
        let cert = self.dir.path().join(format!("{base}.crt"));
        let key = self.dir.path().join(format!("{base}.key"));
        std::fs::write(&cert, &ck.cert_pem)?;
        std::fs::write(&key, &ck.key_pem)?;
        let user_yaml = format!(
            "    client-certificate: {}\n    client-key: {}\n",
            cert.display(),
            key.display()
        );
        let path = self.dir.path().join(format!("{base}.kubeconfig"));
        std::fs::write(&path, self.kubeconfig_text(user, &user_yaml))?;
        Ok(path)
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        self.accept_task.abort();
    }
}

fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect()
}

/// The objects a fresh cluster has: the initial namespaces (with their default ServiceAccount
/// and root CA ConfigMap) and the `kubernetes` Service.
fn bootstrap(shared: &Shared) {
    let mut store = shared.store.lock();
    let Some(ns_res) = resources::find("", "v1", "namespaces") else {
        return;
    };
    for ns in INITIAL_NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        if let Err(e) = handlers::create_object(&mut store, ns_res, "", obj, false, &shared.pki.ca_pem) {
            tracing::warn!(error = %e, namespace = ns, "test apiserver: bootstrap");
        }
    }
    let port = shared.addr.port();
    store.create(
        "services",
        "default",
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "kubernetes", "namespace": "default", "uid": new_uid(), "creationTimestamp": now_time(),
                            "labels": {"component": "apiserver", "provider": "kubernetes"}},
               "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"], "sessionAffinity": "None",
                        "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster",
                        "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
               "status": {"loadBalancer": {}}}),
    );
}
