//! Small helpers shared by the e2e tests: unique names, waiting for a condition, and reading
//! objects back through kubectl as JSON.

use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::Value;

use super::apiserver::TestApiServer;
use super::envtest::ControlPlane;

/// A name no other test uses: `<prefix>-<8 hex>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Polls `f` every 100 ms until it returns Some, or fails after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `kubectl get <args> -o json`, parsed; None if kubectl failed (e.g. NotFound).
pub async fn get_json<A: ControlPlane + ?Sized>(api: &A, args: &[&str]) -> Option<Value> {
    let mut a: Vec<&str> = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    let out = api.kubectl(&a).await;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// `kubectl apply -f -` with the given manifest; fails with kubectl's stderr.
pub async fn apply<A: ControlPlane + ?Sized>(api: &A, manifest: &str) -> Result<()> {
    let out = api.kubectl_stdin(&["apply", "-f", "-"], manifest).await;
    if !out.status.success() {
        bail!("kubectl apply failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The events about an object in `default` (through kubectl, as the core/v1 view shows them).
pub async fn events_about<A: ControlPlane + ?Sized>(api: &A, name: &str) -> Vec<Value> {
    let selector = format!("involvedObject.name={name}");
    let list = get_json(api, &["events", "-n", "default", "--field-selector", &selector]).await;
    list.and_then(|l| l["items"].as_array().cloned()).unwrap_or_default()
}

/// The reasons of those events.
pub async fn event_reasons<A: ControlPlane + ?Sized>(api: &A, name: &str) -> Vec<String> {
    events_about(api, name)
        .await
        .iter()
        .filter_map(|e| e["reason"].as_str().map(String::from))
        .collect()
}

/// Start times (seconds since the epoch, to the nanosecond) of a container's instances `0..=last`,
/// read from the first line of each `<logs>/<ns>_<pod>_<uid>/<container>/<N>.log`, which must be
/// `<ts> stdout F <first_line>`. Dead instances and their logs are garbage-collected (one kept),
/// so the logs are read while they exist, polling from right away; instance 0 lives only until
/// instance 1 dies and may be missed under load. Returns what it saw once `1..=last` are all in,
/// or at the deadline.
pub async fn instance_start_times(
    logs: &std::path::Path,
    pod_dir_prefix: &str,
    container: &str,
    first_line: &str,
    last: usize,
    timeout: Duration,
) -> std::collections::BTreeMap<usize, f64> {
    let find_dir = || {
        std::fs::read_dir(logs).ok()?.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with(pod_dir_prefix))
        })
    };
    let suffix = format!(" stdout F {first_line}");
    let mut starts = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !(1..=last).all(|i| starts.contains_key(&i)) && tokio::time::Instant::now() < deadline {
        if let Some(dir) = find_dir().map(|d| d.join(container)) {
            for i in 0..=last {
                if starts.contains_key(&i) {
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(dir.join(format!("{i}.log"))) else {
                    continue;
                };
                let Some(line) = text.lines().next() else { continue };
                assert!(line.ends_with(&suffix), "CRI log line: {line:?}");
                let ts: jiff::Timestamp = line.split(' ').next().unwrap_or_default().parse().unwrap();
                starts.insert(i, ts.as_nanosecond() as f64 / 1e9);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    starts
}

/// The condition of a type from `status.conditions`.
pub fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// A pod manifest bound to `node` with one container running `script` (via `sh -c`).
pub fn pod_yaml(name: &str, node: &str, restart_policy: &str, script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
spec:
  nodeName: {node}
  restartPolicy: {restart_policy}
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", {script:?}]
"#
    )
}

/// An API server (the test API server unless said otherwise) plus one keel node registered with
/// it, in a private directory.
pub struct Node<A: ControlPlane = TestApiServer> {
    pub api: A,
    pub keel: super::keel::Keel,
    pub name: String,
    pub dir: tempfile::TempDir,
}

/// The KubeletConfiguration lines that secure keel's server as kubeadm does: client
/// certificates from the API server's CA (`x509.clientCAFile`), bearer tokens checked by
/// TokenReview (`webhook.enabled`), no anonymous access, and every request authorized by
/// SubjectAccessReview (`mode: Webhook`).
pub fn kubelet_auth_config<A: ControlPlane + ?Sized>(api: &A) -> String {
    format!(
        "authentication:\n  anonymous:\n    enabled: false\n  webhook:\n    enabled: true\n  x509:\n    clientCAFile: {}\nauthorization:\n  mode: Webhook\n",
        api.ca_file().display()
    )
}

/// `evictionHard` thresholds low enough that a test node never reports disk or memory pressure
/// on a shared build machine whose disk happens to be nearly full (KubeletConfiguration lines).
pub const NO_EVICTION: &str = "evictionHard:\n  memory.available: \"1Ki\"\n  nodefs.available: \"0%\"\n  imagefs.available: \"0%\"\n  nodefs.inodesFree: \"0%\"\n";

/// The CNI bridge of scripts/containerd-env.sh carries containerd's pods and those of native
/// nodes on its conflist: each such node holds it shared for its lifetime, and a test that counts
/// the bridge's ports (the churn's leak check) holds it exclusively.
pub fn shared_bridge() -> &'static std::sync::Arc<tokio::sync::RwLock<()>> {
    static LOCK: std::sync::LazyLock<std::sync::Arc<tokio::sync::RwLock<()>>> =
        std::sync::LazyLock::new(Default::default);
    &LOCK
}

/// The runtime a test node's keel drives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    /// The in-process simulated runtime, on a compressed clock (`--time-scale`).
    Sim { time_scale: f64 },
    /// The real containerd of scripts/containerd-env.sh (`KEEL_CRI_SOCKET`), at time scale 1.
    Cri,
    /// keel's own runtime (`--runtime native`: runc, CNI, monitors) with a private run dir, the
    /// CNI conflist and images of scripts/containerd-env.sh (support::native), at time scale 1.
    Native,
}

impl Backend {
    /// The runtime's scheme in container IDs (`<runtime name>://<id>`).
    pub fn scheme(self) -> &'static str {
        match self {
            Backend::Sim { .. } => "sim://",
            Backend::Cri => "containerd://",
            Backend::Native => "keel-native://",
        }
    }

    /// A real runtime: real seconds, real cgroups under `$KEEL_TEST_CGROUP_ROOT/<node>`.
    pub fn is_real(self) -> bool {
        !matches!(self, Backend::Sim { .. })
    }
}

impl Node {
    /// Starts a server and keel (`time_scale` compresses keel's clock) and waits until the Node
    /// is Ready. keel's server authenticates and authorizes through the API server
    /// ([`kubelet_auth_config`]).
    pub async fn start(time_scale: f64, extra: &[&str]) -> Result<Node> {
        Node::start_with_config(time_scale, extra, "").await
    }

    /// Same, with more KubeletConfiguration lines (top-level YAML) in keel's `--config` file.
    pub async fn start_with_config(time_scale: f64, extra: &[&str], config: &str) -> Result<Node> {
        Node::start_on(
            TestApiServer::start().await?,
            Backend::Sim { time_scale },
            extra,
            config,
        )
        .await
    }

    /// Starts a server and keel against the real containerd of scripts/containerd-env.sh
    /// (`KEEL_CRI_SOCKET`), at time scale 1 (containerd counts real seconds), with pod cgroups
    /// under `$KEEL_TEST_CGROUP_ROOT/<node name>` so parallel tests never share one.
    pub async fn start_cri(extra: &[&str]) -> Result<Node> {
        Node::start_cri_with_config(extra, "").await
    }

    /// Same, with more KubeletConfiguration lines (top-level YAML) in keel's `--config` file.
    pub async fn start_cri_with_config(extra: &[&str], more_config: &str) -> Result<Node> {
        cri_socket()?;
        Node::start_on(TestApiServer::start().await?, Backend::Cri, extra, more_config).await
    }
}

/// The cgroup root of a test node on a real runtime: `$KEEL_TEST_CGROUP_ROOT/<node>`, so
/// parallel tests never share one.
pub fn node_cgroup_root(node: &str) -> String {
    let root = std::env::var("KEEL_TEST_CGROUP_ROOT")
        .ok()
        .filter(|r| r.starts_with('/'))
        .unwrap_or_else(|| "/keel-test".to_string());
    format!("{}/{node}", root.trim_end_matches('/'))
}

/// The containerd socket of scripts/containerd-env.sh, or why the CRI tests cannot run.
pub fn cri_socket() -> Result<String> {
    match std::env::var("KEEL_CRI_SOCKET") {
        Ok(s) if !s.is_empty() => Ok(s),
        _ => bail!(
            "KEEL_CRI_SOCKET is not set: the CRI e2e tests need a real containerd; run them through \
             scripts/test.sh (or `scripts/containerd-env.sh up DIR` and source DIR/env)"
        ),
    }
}

impl<A: ControlPlane> Node<A> {
    /// Starts keel on `backend` against `api` (either tier) as node `api.new_node_name()`, with
    /// its server secured through the API server ([`kubelet_auth_config`]) plus the
    /// KubeletConfiguration lines `config` and the flags `extra`, and waits until the Node is
    /// Ready. On containerd, pod cgroups go under `$KEEL_TEST_CGROUP_ROOT/<node name>`.
    pub async fn start_on(api: A, backend: Backend, extra: &[&str], config: &str) -> Result<Node<A>> {
        Node::start_on_in(api, backend, extra, config, tempfile::tempdir()?).await
    }

    /// Same, with keel's directories (`root`, `pods`, ...) under `dir`, for a test that mounts
    /// something there first.
    pub async fn start_on_in(
        api: A,
        backend: Backend,
        extra: &[&str],
        config: &str,
        dir: tempfile::TempDir,
    ) -> Result<Node<A>> {
        let name = api.new_node_name();
        let mut config_text = format!(
            "kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1beta1\n{}",
            kubelet_auth_config(&api)
        );
        let kubeconfig = api.node_kubeconfig(&name);
        let mut opts = super::keel::KeelOpts::new(&name, Some(kubeconfig), dir.path());
        let mut bridge_guard = None;
        // A node named by a loopback address is reached there (see support::envtest).
        if let Ok(ip) = name.parse::<std::net::Ipv4Addr>() {
            opts.address = ip.to_string();
        }
        match backend {
            Backend::Sim { time_scale } => opts = opts.time_scale(time_scale),
            Backend::Cri => {
                let socket = cri_socket()?;
                config_text = format!("{config_text}cgroupRoot: {}\n", node_cgroup_root(&name));
                opts = opts.arg("--runtime").arg(format!("unix://{socket}"));
            }
            Backend::Native => {
                let env = super::native::native_env()?;
                super::native::import_images(&env, &dir.path().join("root"))?;
                let run_dir = super::native::new_run_dir()?;
                config_text = format!("{config_text}cgroupRoot: {}\n", node_cgroup_root(&name));
                let mut args = super::native::native_args(&env, &run_dir, &dir.path().join("root"));
                // A test with a network of its own names its conflist directory in `extra`.
                if extra.contains(&"--cni-conf-dir") {
                    if let Some(i) = args.iter().position(|a| a == "--cni-conf-dir") {
                        args.drain(i..i + 2);
                    }
                } else {
                    bridge_guard = Some(shared_bridge().clone().read_owned().await);
                }
                for a in args {
                    opts = opts.arg(a);
                }
                opts.native_run_dir = Some(run_dir);
            }
        }
        // Tests that do not set thresholds themselves never see the build machine's disk or
        // memory (the eviction manager would evict their pods on a nearly full disk).
        if !config.contains("evictionHard:") {
            config_text.push_str(NO_EVICTION);
        }
        let config_file = dir.path().join("kubelet-config.yaml");
        std::fs::write(&config_file, format!("{config_text}{config}"))?;
        opts = opts.arg("--config").arg(config_file.to_string_lossy().into_owned());
        for a in extra {
            opts = opts.arg(*a);
        }
        let mut keel = super::keel::Keel::start(opts).await?;
        if let Some(g) = bridge_guard {
            keel.hold(g);
        }
        let node = Node { api, keel, name, dir };
        node.wait_ready().await?;
        Ok(node)
    }

    pub async fn wait_ready(&self) -> Result<()> {
        let r = wait_for("node Ready", Duration::from_secs(60), || async {
            let n = get_json(&self.api, &["node", &self.name]).await?;
            (condition(&n, "Ready")?["status"] == "True").then_some(())
        })
        .await;
        if r.is_err() {
            bail!(
                "node {} never became Ready; keel log:\n{}",
                self.name,
                self.keel.log_tail(60)
            );
        }
        Ok(())
    }

    pub async fn pod(&self, name: &str) -> Option<Value> {
        get_json(&self.api, &["pod", name, "-n", "default"]).await
    }

    /// Waits until `pred` holds for the pod, returning it; the failure message has keel's log.
    pub async fn wait_pod(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let r = wait_for(what, timeout, || async {
            let p = self.pod(name).await?;
            pred(&p).then_some(p)
        })
        .await;
        match r {
            Ok(p) => Ok(p),
            Err(e) => {
                let last = self
                    .pod(name)
                    .await
                    .map(|p| serde_json::to_string_pretty(&p["status"]).unwrap_or_default());
                bail!(
                    "{e}: pod {name}; last status: {}\nkeel log tail:\n{}",
                    last.unwrap_or_default(),
                    self.keel.log_tail(40)
                )
            }
        }
    }
}

pub fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

/// Runs a host tool the test set-up installs and returns its stdout; fails the test, with both
/// outputs, when it cannot run or exits non-zero.
#[allow(dead_code)] // not every test binary runs host tools
pub fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} not runnable ({e}): scripts/test.sh installs it"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `cgroup` (a cgroup path such as `/keel-test/node-1`) in every v1 hierarchy and at the v2
/// mount; they need not exist.
pub fn cgroup_dirs(cgroup: &str) -> Vec<std::path::PathBuf> {
    let relative = cgroup.trim_start_matches('/');
    let mut dirs: Vec<std::path::PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    dirs.push(std::path::PathBuf::from("/sys/fs/cgroup"));
    dirs.into_iter().map(|d| d.join(relative)).collect()
}

/// Every directory of `cgroup` and under it, in every hierarchy, deepest first (the order they
/// can be removed in).
fn cgroup_tree_deepest_first(cgroup: &str) -> Vec<std::path::PathBuf> {
    let mut dirs = Vec::new();
    for top in cgroup_dirs(cgroup).into_iter().filter(|d| d.is_dir()) {
        let mut stack = vec![top];
        while let Some(d) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&d) {
                stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
            dirs.push(d);
        }
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs
}

/// Removes `cgroup` and everything under it in every hierarchy, once (their processes must be
/// gone). For `Drop`, where nothing can wait.
pub fn remove_cgroup_tree_now(cgroup: &str) {
    for d in cgroup_tree_deepest_first(cgroup) {
        let _ = std::fs::remove_dir(&d);
    }
}

/// Removes `cgroup` and everything under it in every hierarchy, retrying each directory for up
/// to `patience` (a task that just exited may hold its cgroup for a moment). Returns what is left.
pub async fn remove_cgroup_tree(cgroup: &str, patience: Duration) -> Vec<std::path::PathBuf> {
    let mut left = Vec::new();
    for d in cgroup_tree_deepest_first(cgroup) {
        let deadline = std::time::Instant::now() + patience;
        while std::fs::remove_dir(&d).is_err() && d.exists() {
            if std::time::Instant::now() >= deadline {
                left.push(d);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    left
}
