//! One e2e body, several real runtimes: the scenarios of tests/e2e/cri_*.rs run on containerd
//! (`KEEL_CRI_SOCKET`) and on keel's own native backend (`--runtime native`). A body is an
//! `async fn(Backend)` that starts its node with [`RtNode::start`]; [`backend_test!`] writes one
//! `#[tokio::test]` per (name, backend), so a backend a scenario cannot run on yet simply has no
//! line.
//!
//! keel kills runtime pods no source of its own knows, so keels sharing the one containerd run
//! one at a time ([`crate::cri_lifecycle::cri_lock`]); native keels each have their own root and
//! run dir and take no lock.

use anyhow::{bail, Result};

use crate::support::apiserver::TestApiServer;
use crate::support::util::*;

pub const CRI: Backend = Backend::Cri;
pub const NATIVE: Backend = Backend::Native;

/// Generates `#[tokio::test]` functions `name` that run `body(backend)`.
macro_rules! backend_test {
    ($($name:ident => $body:ident($backend:expr);)+) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $crate::runtimes::Outcome::check($body($backend).await);
        }
    )+};
}
pub(crate) use backend_test;

/// What a body returns: nothing (it asserts) or a Result that must be Ok.
pub trait Outcome {
    fn check(self);
}

impl Outcome for () {
    fn check(self) {}
}

impl Outcome for Result<()> {
    fn check(self) {
        if let Err(e) = self {
            panic!("{e:#}");
        }
    }
}

/// A test API server and a keel node on a real runtime. On containerd it holds the shared
/// containerd's lock for the whole test (declared after the node: the node goes first).
pub struct RtNode {
    pub node: Node,
    pub backend: Backend,
    _cri: Option<tokio::sync::MutexGuard<'static, ()>>,
}

impl std::ops::Deref for RtNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl std::ops::DerefMut for RtNode {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.node
    }
}

impl RtNode {
    /// Starts the test API server and keel on `backend` with the flags `extra` and the
    /// KubeletConfiguration lines `config` (see [`Node::start_on`]), and waits until it is Ready.
    pub async fn start(backend: Backend, extra: &[&str], config: &str) -> Result<RtNode> {
        let lock = match backend {
            Backend::Cri => {
                cri_socket()?;
                Some(crate::cri_lifecycle::cri_lock().await)
            }
            Backend::Native => None,
            Backend::Sim { .. } => bail!("RtNode runs real runtimes; the simulator has its own tests"),
        };
        let node = Node::start_on(TestApiServer::start().await?, backend, extra, config).await?;
        Ok(RtNode {
            node,
            backend,
            _cri: lock,
        })
    }

    /// The runtime's scheme in container IDs.
    pub fn scheme(&self) -> &'static str {
        self.backend.scheme()
    }
}
