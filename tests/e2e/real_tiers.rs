//! Running one test body on either API server tier: the real control plane of support::envtest
//! (`Tier::Real`) or keel's in-memory test API server (`Tier::Test`), on the simulated runtime or
//! on containerd. [`tier_test!`] writes the `#[tokio::test]` functions; a body is an
//! `async fn(Tier, Backend)` that starts its node with [`TierNode::start`].
//!
//! On the real tier the control plane is shared by the whole binary, so a body only touches its
//! own node's objects (unique names; [`TierNode::finish`] deletes the node's pods, never `--all`).

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use crate::support::apiserver::TestApiServer;
use crate::support::envtest::{self, ControlPlane};
use crate::support::util::*;

/// Which API server a body runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// kube-apiserver + kube-controller-manager v1.24 (support::envtest).
    Real,
    /// keel's in-memory test API server (support::apiserver).
    Test,
}

/// The simulated runtime on a compressed clock, for bodies that wait on keel's timers.
pub const SIM: Backend = Backend::Sim { time_scale: 1.0 };
pub const CRI: Backend = Backend::Cri;

/// Generates `#[tokio::test]` functions `name` that run `body(tier, backend)`.
macro_rules! tier_test {
    ($($name:ident => $body:ident($tier:expr, $backend:expr);)+) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $body($tier, $backend).await;
        }
    )+};
}
pub(crate) use tier_test;

/// A node on either tier; holds the shared containerd's lock (tests/e2e/cri_lifecycle.rs) for
/// the whole test on the CRI backend.
pub struct TierNode {
    pub node: Node<Box<dyn ControlPlane>>,
    pub backend: Backend,
    _cri: Option<tokio::sync::MutexGuard<'static, ()>>,
}

impl std::ops::Deref for TierNode {
    type Target = Node<Box<dyn ControlPlane>>;
    fn deref(&self) -> &Self::Target {
        &self.node
    }
}

impl TierNode {
    /// Starts keel on `backend` against `tier` (see [`Node::start_on`]); None when the tier or
    /// the backend is not available here (after saying so on stderr).
    pub async fn start(tier: Tier, backend: Backend, extra: &[&str], config: &str) -> Result<Option<TierNode>> {
        if backend == Backend::Cri && cri_socket().is_err() {
            envtest::loud("containerd test skipped: KEEL_CRI_SOCKET is not set (run through scripts/test.sh)");
            return Ok(None);
        }
        let api: Box<dyn ControlPlane> = match tier {
            Tier::Real => match envtest::shared().await? {
                Some(env) => Box::new(env),
                None => return Ok(None),
            },
            Tier::Test => Box::new(TestApiServer::start().await?),
        };
        let cri = match backend {
            Backend::Cri => Some(crate::cri_lifecycle::cri_lock().await),
            Backend::Sim { .. } | Backend::Native => None,
        };
        let node = Node::start_on(api, backend, extra, config).await?;
        Ok(Some(TierNode {
            node,
            backend,
            _cri: cri,
        }))
    }

    /// The runtime's scheme in container IDs.
    pub fn runtime_scheme(&self) -> &'static str {
        self.backend.scheme()
    }

    /// kubectl that must succeed; its stdout.
    pub async fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.api.kubectl(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}\nkeel log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.keel.log_tail(30)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the pod is Running and Ready.
    pub async fn wait_running(&self, name: &str) -> Value {
        self.wait_pod(name, "Running and Ready", timeout(self.backend), |p| {
            phase(p) == "Running" && condition(p, "Ready").is_some_and(|c| c["status"] == "True")
        })
        .await
        .unwrap()
    }

    /// Deletes this node's pods and waits until they are gone (containerd keeps nothing of the
    /// test), then removes the node's cgroup root on containerd.
    pub async fn finish(self) {
        // keel touches only what the Node authorizer lets a node touch.
        let logs = self.keel.logs();
        let refused: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("Forbidden") || l.contains("forbidden"))
            .collect();
        assert!(
            refused.is_empty(),
            "the API server refused keel:\n{}",
            refused.join("\n")
        );
        assert!(!logs.contains("panicked"), "keel panicked:\n{logs}");
        let selector = format!("spec.nodeName={}", self.name);
        self.kubectl_ok(&["delete", "pods", "-A", "--field-selector", &selector, "--wait=false"])
            .await;
        let r = wait_for("the node's pods gone", Duration::from_secs(120), || async {
            let l = get_json(&self.api, &["pods", "-A", "--field-selector", &selector]).await?;
            l["items"].as_array()?.is_empty().then_some(())
        })
        .await;
        if let Err(e) = r {
            panic!("{e}\n{}", self.keel.log_tail(40));
        }
        if self.backend.is_real() {
            crate::cri_lifecycle::remove_node_cgroups(&self.name).await;
        }
    }
}

/// How long a pod may take to get somewhere on `backend`.
pub fn timeout(backend: Backend) -> Duration {
    match backend {
        Backend::Sim { .. } => Duration::from_secs(60),
        Backend::Cri | Backend::Native => Duration::from_secs(120),
    }
}
