//! A real control plane for the e2e tests, following controller-runtime's envtest convention:
//! `kube-apiserver`, `etcd` and `kube-controller-manager` from the directory `$KUBEBUILDER_ASSETS`
//! names, or, when it is unset, from `<repo>/../shared/envtest` with Debian's `/usr/bin/etcd`.
//!
//! One control plane per test binary, started by the first test that asks ([`shared`]) and
//! stopped when the binary exits (see [`procs`]): private etcd data dir, unique ports, PKI made
//! here, `--authorization-mode Node,RBAC` and `NodeRestriction`, as a kubeadm cluster has them.
//!
//! The API server reaches a node by its `Hostname` address, which is its name: test nodes are
//! named by a loopback address (`127.x.y.z`, [`EnvTest::new_node_name`]) their keel listens on,
//! so nothing needs an `/etc/hosts` entry. (A kubelet refuses a loopback `--node-ip`, and keel
//! does as well.) A stock kubelet joins the same way: `--hostname-override 127.x.y.z` and
//! `address: 127.x.y.z` in its KubeletConfiguration.
//!
//! Bootstrap-token authentication is on and the controller-manager runs the CSR signer and
//! approver plus kubeadm's bootstrap controllers, for TLS-bootstrap tests
//! ([`EnvTest::token_kubeconfig`]); the cluster CA key is `dir()/ca.key`.
//!
//! Without assets, [`shared`] returns None after printing `real API server tier skipped: no
//! assets (set KUBEBUILDER_ASSETS)` to the real stderr (past libtest's capture).

mod controlplane;
mod pki;
mod procs;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

pub use self::controlplane::ControlPlane;
use self::pki::Pki;

/// The line printed when the tier cannot run (scripts/test.sh prints the same summary).
pub const SKIPPED: &str = "real API server tier skipped: no assets (set KUBEBUILDER_ASSETS)";

/// How long the control plane may take to come up on a loaded 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// The binaries of the tier.
#[derive(Clone, Debug)]
pub struct Assets {
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
    pub kube_controller_manager: PathBuf,
}

impl Assets {
    /// `$KUBEBUILDER_ASSETS` (an error if it lacks a binary), else `<repo>/../shared/envtest`
    /// plus etcd from /usr/bin, else None.
    pub fn find() -> Result<Option<Assets>> {
        if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            let a = Assets {
                kube_apiserver: dir.join("kube-apiserver"),
                etcd: dir.join("etcd"),
                kube_controller_manager: dir.join("kube-controller-manager"),
            };
            for p in [&a.kube_apiserver, &a.etcd, &a.kube_controller_manager] {
                if !p.is_file() {
                    bail!("KUBEBUILDER_ASSETS={} has no {}", dir.display(), p.display());
                }
            }
            return Ok(Some(a));
        }
        let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/envtest");
        let a = Assets {
            kube_apiserver: shared.join("kube-apiserver"),
            etcd: PathBuf::from("/usr/bin/etcd"),
            kube_controller_manager: shared.join("kube-controller-manager"),
        };
        Ok([&a.kube_apiserver, &a.etcd, &a.kube_controller_manager]
            .iter()
            .all(|p| p.is_file())
            .then_some(a))
    }
}

/// The running control plane.
pub struct EnvTest {
    pki: Pki,
    dir: PathBuf,
    url: String,
    admin_kubeconfig: PathBuf,
    /// kube-apiserver's command line and PID, to stop it and start it again (outage tests).
    apiserver: std::sync::Mutex<ApiServerProc>,
    /// etcd's and the controller-manager's PIDs, stopped with a private control plane.
    others: Vec<u32>,
    /// A control plane of one test ([`private`]), stopped when dropped.
    private: bool,
}

struct ApiServerProc {
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
    pid: Option<u32>,
    starts: usize,
}

static SHARED: OnceLock<Result<Option<EnvTest>, String>> = OnceLock::new();

/// The test binary's control plane, started on first use; None (after printing [`SKIPPED`])
/// when there are no assets. An error when the assets are there but it did not come up.
pub async fn shared() -> Result<Option<&'static EnvTest>> {
    let r = tokio::task::spawn_blocking(|| SHARED.get_or_init(init))
        .await
        .context("starting the envtest control plane")?;
    match r {
        Ok(Some(e)) => Ok(Some(e)),
        Ok(None) => {
            loud(SKIPPED);
            Ok(None)
        }
        Err(e) => bail!("envtest control plane: {e}"),
    }
}

/// Writes a line to the process's stderr past libtest's output capture, so it shows for a
/// passing test too.
pub fn loud(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn init() -> Result<Option<EnvTest>, String> {
    start_with(false)
}

fn start_with(audit: bool) -> Result<Option<EnvTest>, String> {
    let assets = match Assets::find() {
        Ok(Some(a)) => a,
        Ok(None) => return Ok(None),
        Err(e) => return Err(format!("{e:#}")),
    };
    // Everything is spawned from the keeper thread so the processes die with the binary.
    match procs::on_keeper_thread(move || EnvTest::start(&assets, audit).map_err(|e| format!("{e:#}"))) {
        Ok(r) => r.map(Some),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// A control plane for one test (one that stops its API server, which the shared one must
/// never see), with an audit log of every request's metadata (`dir()/audit.log`); stopped when
/// dropped. None (after printing [`SKIPPED`]) without assets.
#[allow(dead_code)] // only the outage test has one
pub async fn private() -> Result<Option<EnvTest>> {
    let r = tokio::task::spawn_blocking(|| start_with(true))
        .await
        .context("starting a private envtest control plane")?;
    match r {
        Ok(Some(e)) => Ok(Some(e)),
        Ok(None) => {
            loud(SKIPPED);
            Ok(None)
        }
        Err(e) => bail!("private envtest control plane: {e}"),
    }
}

impl EnvTest {
    fn start(assets: &Assets, audit: bool) -> Result<EnvTest> {
        let began = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("keel-envtest-")
            .tempdir()
            .context("creating the envtest dir")?
            .keep();
        procs::remove_at_exit(dir.clone());
        let pki = Pki::create(&dir)?;
        let port = crate::support::keel::free_port;
        let (etcd_port, peer_port, api_port, cm_port) = (port(), port(), port(), port());
        let url = format!("https://127.0.0.1:{api_port}");

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let mut etcd = Command::new(&assets.etcd);
        etcd.arg("--data-dir")
            .arg(dir.join("etcd"))
            .arg("--name")
            .arg("envtest")
            .arg("--listen-client-urls")
            .arg(&etcd_url)
            .arg("--advertise-client-urls")
            .arg(&etcd_url)
            .arg("--listen-peer-urls")
            .arg(format!("http://127.0.0.1:{peer_port}"))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://127.0.0.1:{peer_port}"))
            .arg("--initial-cluster")
            .arg(format!("envtest=http://127.0.0.1:{peer_port}"));
        let etcd_pid = spawn_logged(etcd, &dir, "etcd")?;

        let kubelet_client = pki.client_cert(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            &["system:masters"],
        )?;
        let mut api = Command::new(&assets.kube_apiserver);
        api.args(["--etcd-servers", &etcd_url])
            .args(["--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1"])
            .args(["--secure-port", &api_port.to_string()])
            .arg("--tls-cert-file")
            .arg(dir.join("serving.crt"))
            .arg("--tls-private-key-file")
            .arg(dir.join("serving.key"))
            .arg("--client-ca-file")
            .arg(pki.ca_file())
            .args(["--service-account-issuer", "https://kubernetes.default.svc"])
            .arg("--service-account-key-file")
            .arg(dir.join("sa.pub"))
            .arg("--service-account-signing-key-file")
            .arg(dir.join("sa.key"))
            .args(["--service-cluster-ip-range", "10.96.0.0/16"])
            .args(["--authorization-mode", "Node,RBAC"])
            .args(["--enable-admission-plugins", "NodeRestriction"])
            // Bootstrap tokens, as kubeadm runs the server (TLS bootstrapping tests).
            .arg("--enable-bootstrap-token-auth")
            .arg("--allow-privileged=true")
            // Bootstrap tokens (`kube-system/bootstrap-token-*` Secrets) authenticate kubelets
            // joining by TLS bootstrap, as on a kubeadm cluster.
            .arg("--enable-bootstrap-token-auth")
            .arg("--kubelet-client-certificate")
            .arg(&kubelet_client.cert)
            .arg("--kubelet-client-key")
            .arg(&kubelet_client.key)
            // A test node's name is its loopback address (module docs).
            .args(["--kubelet-preferred-address-types", "Hostname,InternalIP"]);
        if audit {
            let policy = dir.join("audit-policy.yaml");
            std::fs::write(
                &policy,
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n",
            )
            .context("writing the audit policy")?;
            api.arg("--audit-policy-file")
                .arg(&policy)
                .arg("--audit-log-path")
                .arg(dir.join("audit.log"));
        }
        let program = api.get_program().into();
        let args = api.get_args().map(|a| a.to_owned()).collect();
        let api_pid = spawn_logged(api, &dir, "kube-apiserver")?;

        let mut env = EnvTest {
            pki,
            dir: dir.clone(),
            url,
            admin_kubeconfig: PathBuf::new(),
            apiserver: std::sync::Mutex::new(ApiServerProc {
                program,
                args,
                pid: Some(api_pid),
                starts: 1,
            }),
            others: vec![etcd_pid],
            private: audit,
        };
        env.admin_kubeconfig = env.write_kubeconfig("admin", "keel-envtest-admin", &["system:masters"])?;
        env.wait_blocking("kube-apiserver /readyz", &["get", "--raw", "/readyz"], began)?;

        let cm_kubeconfig = env.write_kubeconfig("controller-manager", "system:kube-controller-manager", &[])?;
        let mut cm = Command::new(&assets.kube_controller_manager);
        cm.arg("--kubeconfig")
            .arg(&cm_kubeconfig)
            .arg("--authentication-kubeconfig")
            .arg(&cm_kubeconfig)
            .arg("--authorization-kubeconfig")
            .arg(&cm_kubeconfig)
            .arg("--service-account-private-key-file")
            .arg(dir.join("sa.key"))
            .arg("--root-ca-file")
            .arg(env.pki.ca_file())
            .arg("--cluster-signing-cert-file")
            .arg(env.pki.ca_file())
            .arg("--cluster-signing-key-file")
            .arg(dir.join("ca.key"))
            .args(["--use-service-account-credentials", "--leader-elect=false"])
            .args(["--bind-address", "127.0.0.1", "--secure-port", &cm_port.to_string()])
            // kubeadm's set: the default controllers plus the bootstrap token ones.
            .args(["--controllers", "*,bootstrapsigner,tokencleaner,-nodeipam"]);
        let cm_pid = spawn_logged(cm, &dir, "kube-controller-manager")?;
        env.others.push(cm_pid);
        // Pods need the `default` ServiceAccount (admission) and the root CA ConfigMap.
        env.wait_blocking(
            "the default ServiceAccount",
            &["get", "serviceaccount", "default", "-n", "default"],
            began,
        )?;
        env.wait_blocking(
            "the kube-root-ca.crt ConfigMap",
            &["get", "configmap", "kube-root-ca.crt", "-n", "default"],
            began,
        )?;
        loud(&format!(
            "envtest: real control plane up at {} in {:.1}s ({})",
            env.url,
            began.elapsed().as_secs_f64(),
            assets.kube_apiserver.display()
        ));
        Ok(env)
    }

    /// The private directory (PKI: `ca.crt`, `ca.key`, `sa.key`, `sa.pub`; kubeconfigs;
    /// component logs `<component>.log`).
    #[allow(dead_code)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A kubeconfig that authenticates with a bearer `token` (a bootstrap token
    /// `<id>.<secret>` for TLS bootstrapping, or a ServiceAccount token).
    #[allow(dead_code)]
    pub fn token_kubeconfig(&self, token: &str) -> Result<PathBuf> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\ncontexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: token\ncurrent-context: envtest\nusers:\n- name: token\n  user:\n    token: {token}\n",
            url = self.url,
            ca = self.pki.ca_file().display(),
        );
        let path = self.dir.join(format!("token-{:08x}.kubeconfig", rand::random::<u32>()));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Kills kube-apiserver (SIGKILL, by its PID) and reaps it: the API is gone, etcd and the
    /// controller-manager stay.
    #[allow(dead_code)]
    pub fn stop_apiserver(&self) {
        let pid = self.apiserver.lock().unwrap_or_else(|p| p.into_inner()).pid.take();
        if let Some(pid) = pid {
            procs::kill(pid);
        }
    }

    /// Starts kube-apiserver again with the same flags (port, etcd, certificates) and waits
    /// until it is ready; its log is `kube-apiserver-<N>.log`.
    #[allow(dead_code)]
    pub async fn start_apiserver(&self) -> Result<()> {
        let (program, args, name) = {
            let mut a = self.apiserver.lock().unwrap_or_else(|p| p.into_inner());
            a.starts += 1;
            (
                a.program.clone(),
                a.args.clone(),
                format!("kube-apiserver-{}", a.starts),
            )
        };
        let dir = self.dir.clone();
        let pid = procs::on_keeper_thread(move || {
            let mut cmd = Command::new(program);
            cmd.args(args);
            spawn_logged(cmd, &dir, &name)
        })??;
        self.apiserver.lock().unwrap_or_else(|p| p.into_inner()).pid = Some(pid);
        let began = Instant::now();
        loop {
            let out = self.kubectl(&["get", "--raw", "/readyz"]).await;
            if out.status.success() {
                return Ok(());
            }
            if began.elapsed() > START_TIMEOUT {
                bail!("kube-apiserver not ready again after {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The last lines of a component's log (`etcd`, `kube-apiserver`, `kube-controller-manager`).
    pub fn log_tail(&self, component: &str, n: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("{component}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Polls a kubectl command until it succeeds (blocking: runs on the keeper thread).
    fn wait_blocking(&self, what: &str, args: &[&str], began: Instant) -> Result<()> {
        loop {
            let out = self.kubectl_blocking(args);
            if out.status.success() {
                return Ok(());
            }
            if began.elapsed() > START_TIMEOUT {
                bail!(
                    "timed out after {START_TIMEOUT:?} waiting for {what}: {}\nkube-apiserver log:\n{}\nkube-controller-manager log:\n{}\netcd log:\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    self.log_tail("kube-apiserver", 20),
                    self.log_tail("kube-controller-manager", 10),
                    self.log_tail("etcd", 10)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn kubectl_blocking(&self, args: &[&str]) -> Output {
        let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let out = Command::new(&bin)
            .arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .args(["--request-timeout", "5s"])
            .args(args)
            .env("HOME", &self.dir)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .output();
        out.unwrap_or_else(|e| {
            use std::os::unix::process::ExitStatusExt;
            Output {
                status: std::process::ExitStatus::from_raw(127 << 8),
                stdout: Vec::new(),
                stderr: format!("running {bin}: {e}").into_bytes(),
            }
        })
    }

    /// Writes a kubeconfig with a fresh client certificate for `user` in `groups`.
    fn write_kubeconfig(&self, base: &str, user: &str, groups: &[&str]) -> Result<PathBuf> {
        let files = self.pki.client_cert(base, user, groups)?;
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\ncontexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: {user_q}\n    namespace: default\ncurrent-context: envtest\nusers:\n- name: {user_q}\n  user:\n    client-certificate: {cert}\n    client-key: {key}\n",
            url = self.url,
            ca = self.pki.ca_file().display(),
            user_q = json!(user),
            cert = files.cert.display(),
            key = files.key.display(),
        );
        let path = self.dir.join(format!("{base}.kubeconfig"));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for EnvTest {
    fn drop(&mut self) {
        if self.private {
            self.stop_apiserver();
            for pid in self.others.iter().rev() {
                procs::kill(*pid);
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[async_trait::async_trait]
impl ControlPlane for EnvTest {
    fn is_real(&self) -> bool {
        true
    }
    fn url(&self) -> String {
        self.url.clone()
    }
    fn ca_file(&self) -> PathBuf {
        self.pki.ca_file()
    }
    fn admin_kubeconfig(&self) -> PathBuf {
        self.admin_kubeconfig.clone()
    }
    fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> PathBuf {
        let safe: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .collect();
        let base = format!("user-{safe}-{:08x}", rand::random::<u32>());
        match self.write_kubeconfig(&base, user, groups) {
            Ok(p) => p,
            Err(e) => panic!("envtest: writing a kubeconfig for {user}: {e:#}"),
        }
    }
    fn client_identity(&self, user: &str, groups: &[&str]) -> (String, String) {
        match self.pki.client_pem(user, groups) {
            Ok(ck) => ck,
            Err(e) => panic!("envtest: issuing a client certificate for {user}: {e:#}"),
        }
    }
    fn kubectl_command(&self, bin: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .env("HOME", &self.dir)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }
    /// A random loopback address: the node's name, its Hostname address, and the address its
    /// keel listens on (see the module docs).
    fn new_node_name(&self) -> String {
        let r = rand::random::<u32>();
        format!(
            "127.{}.{}.{}",
            1 + (r >> 16) % 254,
            (r >> 8) & 0xff,
            1 + (r & 0xff) % 254
        )
    }
    async fn kubectl(&self, args: &[&str]) -> Output {
        let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let mut cmd = self.kubectl_command(&bin);
        cmd.args(args);
        controlplane::run_kubectl(cmd, None).await
    }
    async fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let mut cmd = self.kubectl_command(&bin);
        cmd.args(args);
        controlplane::run_kubectl(cmd, Some(stdin)).await
    }
    async fn client(&self) -> kube::Client {
        let build = async {
            let kc = kube::config::Kubeconfig::read_from(&self.admin_kubeconfig)?;
            let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
            anyhow::Ok(kube::Client::try_from(config)?)
        };
        match build.await {
            Ok(c) => c,
            Err(e) => panic!("envtest: building the admin client: {e:#}"),
        }
    }
}

/// Spawns a component with its output in `<dir>/<name>.log`.
fn spawn_logged(mut cmd: Command, dir: &Path, name: &str) -> Result<u32> {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).with_context(|| format!("creating {name}.log"))?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating a log file")?)
        .stderr(log);
    procs::spawn(cmd)
}
