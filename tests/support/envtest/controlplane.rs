//! What a test needs from an API server, whichever tier runs it: keel's in-memory test API
//! server ([`TestApiServer`]) or the real kube-apiserver of [`super::EnvTest`]. A test body
//! generic over [`ControlPlane`] runs unchanged on both.

use std::path::PathBuf;
use std::process::{Output, Stdio};

use tokio::io::AsyncWriteExt;

use crate::support::apiserver::TestApiServer;

#[allow(dead_code)] // each test binary uses part of it
#[async_trait::async_trait]
pub trait ControlPlane: Send + Sync {
    /// True for a real kube-apiserver.
    fn is_real(&self) -> bool;
    /// The server's URL (`https://127.0.0.1:PORT`).
    fn url(&self) -> String;
    /// The CA that signs the server's certificate and the client certificates it accepts (a
    /// kubelet's `authentication.x509.clientCAFile`).
    fn ca_file(&self) -> PathBuf;
    /// kubeconfig of an admin (`O=system:masters`).
    fn admin_kubeconfig(&self) -> PathBuf;
    /// kubeconfig with a client certificate for `user` in `groups` (at most 2).
    fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> PathBuf;
    /// A client certificate and key (PEM) for `user` in `groups` (at most 2).
    fn client_identity(&self, user: &str, groups: &[&str]) -> (String, String);
    /// A kubectl command (`bin`: a path or a name on PATH) with the admin kubeconfig and a
    /// private HOME, stdio piped, killed when dropped.
    fn kubectl_command(&self, bin: &str) -> tokio::process::Command;
    /// A fresh node name the server can reach the node by (see [`super::EnvTest`]).
    fn new_node_name(&self) -> String;
    /// kubectl (env KUBECTL or "kubectl") with the admin kubeconfig.
    async fn kubectl(&self, args: &[&str]) -> Output;
    /// Same, feeding `stdin` (for `kubectl apply -f -`).
    async fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output;
    /// An admin kube client.
    async fn client(&self) -> kube::Client;

    /// kubeconfig of node `name` as the Node authorizer knows it: `CN=system:node:<name>`,
    /// `O=system:nodes`.
    fn node_kubeconfig(&self, name: &str) -> PathBuf {
        self.kubeconfig_for(&format!("system:node:{name}"), &["system:nodes"])
    }
}

#[async_trait::async_trait]
impl ControlPlane for TestApiServer {
    fn is_real(&self) -> bool {
        false
    }
    fn url(&self) -> String {
        TestApiServer::url(self)
    }
    fn ca_file(&self) -> PathBuf {
        self.dir().join("ca.crt")
    }
    fn admin_kubeconfig(&self) -> PathBuf {
        TestApiServer::admin_kubeconfig(self)
    }
    fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> PathBuf {
        TestApiServer::kubeconfig_for(self, user, groups)
    }
    fn client_identity(&self, user: &str, groups: &[&str]) -> (String, String) {
        TestApiServer::client_identity(self, user, groups)
    }
    fn kubectl_command(&self, bin: &str) -> tokio::process::Command {
        TestApiServer::kubectl_command(self, bin)
    }
    fn new_node_name(&self) -> String {
        crate::support::util::unique("node")
    }
    async fn kubectl(&self, args: &[&str]) -> Output {
        TestApiServer::kubectl(self, args).await
    }
    async fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        TestApiServer::kubectl_stdin(self, args, stdin).await
    }
    async fn client(&self) -> kube::Client {
        TestApiServer::client(self).await
    }
}

/// A shared control plane is used through a reference.
#[async_trait::async_trait]
impl<T: ControlPlane + ?Sized> ControlPlane for &T {
    fn is_real(&self) -> bool {
        (**self).is_real()
    }
    fn url(&self) -> String {
        (**self).url()
    }
    fn ca_file(&self) -> PathBuf {
        (**self).ca_file()
    }
    fn admin_kubeconfig(&self) -> PathBuf {
        (**self).admin_kubeconfig()
    }
    fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> PathBuf {
        (**self).kubeconfig_for(user, groups)
    }
    fn client_identity(&self, user: &str, groups: &[&str]) -> (String, String) {
        (**self).client_identity(user, groups)
    }
    fn kubectl_command(&self, bin: &str) -> tokio::process::Command {
        (**self).kubectl_command(bin)
    }
    fn new_node_name(&self) -> String {
        (**self).new_node_name()
    }
    async fn kubectl(&self, args: &[&str]) -> Output {
        (**self).kubectl(args).await
    }
    async fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        (**self).kubectl_stdin(args, stdin).await
    }
    async fn client(&self) -> kube::Client {
        (**self).client().await
    }
}

/// A boxed control plane (a node on either tier) is one too.
#[async_trait::async_trait]
impl<T: ControlPlane + ?Sized> ControlPlane for Box<T> {
    fn is_real(&self) -> bool {
        (**self).is_real()
    }
    fn url(&self) -> String {
        (**self).url()
    }
    fn ca_file(&self) -> PathBuf {
        (**self).ca_file()
    }
    fn admin_kubeconfig(&self) -> PathBuf {
        (**self).admin_kubeconfig()
    }
    fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> PathBuf {
        (**self).kubeconfig_for(user, groups)
    }
    fn client_identity(&self, user: &str, groups: &[&str]) -> (String, String) {
        (**self).client_identity(user, groups)
    }
    fn kubectl_command(&self, bin: &str) -> tokio::process::Command {
        (**self).kubectl_command(bin)
    }
    fn new_node_name(&self) -> String {
        (**self).new_node_name()
    }
    async fn kubectl(&self, args: &[&str]) -> Output {
        (**self).kubectl(args).await
    }
    async fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        (**self).kubectl_stdin(args, stdin).await
    }
    async fn client(&self) -> kube::Client {
        (**self).client().await
    }
}

/// Runs a prepared kubectl command, feeding `stdin`; a failure to run it becomes exit code 127
/// with the reason on stderr, as a shell reports it.
pub async fn run_kubectl(mut cmd: tokio::process::Command, stdin: Option<&str>) -> Output {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
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
                stderr: format!("running kubectl: {e}").into_bytes(),
            }
        }
    }
}
