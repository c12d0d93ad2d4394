//! Lifecycle hook handlers (`pkg/kubelet/lifecycle/handlers.go`, §2.9): postStart and preStop
//! run as exec (CRI ExecSync, no timeout), HTTP GET, or sleep; the runtime manager calls them
//! through its [`HookRunner`] seam and turns an `Err` into the FailedPostStartHook /
//! FailedPreStopHook event (and, for postStart, a kill).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::clock::Clock;
use crate::genericruntime::hooks::HookRunner;
use crate::genericruntime::labels::POD_UID_LABEL;
use crate::genericruntime::seam::{cri, RuntimeError, RuntimeService};
use crate::genericruntime::util::{format_pod, host_network, pod_uid};
use crate::kubelet::prober::probe::{
    bare_id, http_get, insecure_tls_or_log, join_host_port, resolve_port, ProbeError, Redirects, HOOK_USER_AGENT,
    MAX_PROBE_OUTPUT,
};

/// Errors of running a hook handler.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The command ran and exited non-zero (`CodeExitError`).
    #[error("command '{command}' exited with {code}: {stderr}")]
    ExitCode { command: String, code: i32, stderr: String },
    #[error("{source}")]
    Exec {
        #[source]
        source: RuntimeError,
    },
    #[error("Get {url:?}: {source}")]
    Http {
        url: String,
        #[source]
        source: ProbeError,
    },
    #[error("{source}")]
    Port {
        #[source]
        source: ProbeError,
    },
    #[error("failed to find networking container: {message}")]
    NoPodIp { message: String },
    #[error("invalid handler: {handler}")]
    InvalidHandler { handler: String },
}

/// The kubelet's hook runner.
pub struct KubeletHooks {
    runtime: Arc<dyn RuntimeService>,
    clock: Clock,
    /// The node's IPs (the address of a hostNetwork pod).
    node_ips: Vec<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl KubeletHooks {
    pub fn new(runtime: Arc<dyn RuntimeService>, clock: Clock, node_ips: Vec<String>) -> Self {
        Self {
            runtime,
            clock,
            node_ips,
            tls: insecure_tls_or_log(),
        }
    }

    /// ExecSync without a timeout: stdout+stderr, and an error for a non-zero exit.
    async fn run_exec(&self, container_id: &str, cmd: &[String]) -> (String, Result<(), HookError>) {
        let req = cri::ExecSyncRequest {
            container_id: bare_id(container_id).to_string(),
            cmd: cmd.to_vec(),
            timeout: 0,
        };
        match self.runtime.exec_sync(req).await {
            Err(source) => (String::new(), Err(HookError::Exec { source })),
            Ok(resp) => {
                let mut out = resp.stdout.clone();
                out.extend_from_slice(&resp.stderr);
                let out = String::from_utf8_lossy(&out).into_owned();
                if resp.exit_code == 0 {
                    (out, Ok(()))
                } else {
                    let err = HookError::ExitCode {
                        command: cmd.join(" "),
                        code: resp.exit_code,
                        stderr: String::from_utf8_lossy(&resp.stderr).into_owned(),
                    };
                    (out, Err(err))
                }
            }
        }
    }

    /// The pod's IP as the runtime reports it (the newest ready sandbox), else the API status,
    /// else the node's for a hostNetwork pod.
    async fn pod_ip(&self, pod: &Pod) -> Result<String, HookError> {
        let filter = cri::PodSandboxFilter {
            label_selector: [(POD_UID_LABEL.to_string(), pod_uid(pod).to_string())].into(),
            state: Some(cri::PodSandboxStateValue {
                state: cri::PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        };
        if let Ok(list) = self
            .runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(filter) })
            .await
        {
            let newest = list.items.iter().max_by_key(|s| s.created_at);
            if let Some(sb) = newest {
                let st = self
                    .runtime
                    .pod_sandbox_status(cri::PodSandboxStatusRequest {
                        pod_sandbox_id: sb.id.clone(),
                        verbose: false,
                    })
                    .await;
                let ip = st
                    .ok()
                    .and_then(|s| s.status)
                    .and_then(|s| s.network)
                    .map(|n| n.ip)
                    .filter(|ip| !ip.is_empty());
                if let Some(ip) = ip {
                    return Ok(ip);
                }
            }
        }
        if let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        {
            return Ok(ip);
        }
        if host_network(pod) {
            if let Some(ip) = self.node_ips.first() {
                return Ok(ip.clone());
            }
        }
        Err(HookError::NoPodIp {
            message: format!("pod {} has no IP", format_pod(pod)),
        })
    }

    /// `runHTTPHandler`: `http://<host:port>/` + path, Go's default client (follows redirects,
    /// no timeout); any response is success, only transport errors fail.
    async fn run_http(&self, pod: &Pod, container: &Container, handler: &LifecycleHandler) -> Result<(), HookError> {
        let Some(h) = &handler.http_get else {
            return Ok(());
        };
        let host = match h.host.clone().filter(|s| !s.is_empty()) {
            Some(host) => host,
            None => self.pod_ip(pod).await?,
        };
        let port = match &h.port {
            IntOrString::String(s) if s.is_empty() => 80,
            p => resolve_port(p, container).map_err(|source| HookError::Port { source })?,
        };
        // The kubelet joins "http://host:port/" and the path as written, so "/echo" is requested
        // as "//echo" (kubelet-behavior.md §2.9): kept, servers see what they see from the kubelet.
        let url = format!(
            "http://{}/{}",
            join_host_port(&host, port),
            h.path.as_deref().unwrap_or("")
        );
        let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| HookError::Http {
            url: url.clone(),
            source: ProbeError::Url {
                url: url.clone(),
                message: e.to_string(),
            },
        })?;
        let headers = vec![("User-Agent".to_string(), HOOK_USER_AGENT.to_string())];
        let resp = http_get(&uri, &headers, None, Redirects::Any, self.tls.as_ref())
            .await
            .map_err(|source| HookError::Http {
                url: url.clone(),
                source,
            })?;
        tracing::debug!(url = %url, status = resp.status, body_len = resp.body.len().min(MAX_PROBE_OUTPUT), "lifecycle HTTP hook answered");
        Ok(())
    }
}

#[async_trait::async_trait]
impl HookRunner for KubeletHooks {
    async fn run(
        &self,
        pod: &Pod,
        container: &Container,
        container_id: &str,
        handler: &LifecycleHandler,
    ) -> Result<(), String> {
        if let Some(exec) = &handler.exec {
            let cmd = exec.command.clone().unwrap_or_default();
            let (output, result) = self.run_exec(container_id, &cmd).await;
            return result.map_err(|e| {
                format!(
                    "Exec lifecycle hook ([{}]) for Container {:?} in Pod {:?} failed - error: {e}, message: {:?}",
                    cmd.join(" "),
                    container.name,
                    format_pod(pod),
                    output
                )
            });
        }
        if let Some(h) = &handler.http_get {
            return self.run_http(pod, container, handler).await.map_err(|e| {
                format!(
                    "HTTP lifecycle hook ({}) for Container {:?} in Pod {:?} failed - error: {e}",
                    h.path.as_deref().unwrap_or(""),
                    container.name,
                    format_pod(pod)
                )
            });
        }
        if let Some(s) = &handler.sleep {
            // Bounded by the caller (preStop: the grace period).
            self.clock
                .sleep(Duration::from_secs(u64::try_from(s.seconds).unwrap_or(0)))
                .await;
            return Ok(());
        }
        let e = HookError::InvalidHandler {
            handler: format!("{handler:?}"),
        };
        Err(format!("Cannot run handler: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::sim::SimRuntime;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pod_json(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn hooks_without_runtime() -> KubeletHooks {
        let dir = tempfile::tempdir().unwrap();
        let sim = SimRuntime::new(Default::default(), Clock::real(), dir.path().join("sim")).unwrap();
        KubeletHooks::new(sim, Clock::real(), vec!["127.0.0.1".into()])
    }

    #[tokio::test]
    async fn http_hook_requests_the_path_and_ignores_the_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let hooks = hooks_without_runtime();
        let pod = pod_json(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "i"}]}
        }));
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        let handler: LifecycleHandler =
            serde_json::from_value(serde_json::json!({"httpGet": {"path": "echo?msg=poststart", "port": port}}))
                .unwrap();
        hooks.run(&pod, &c, "sim://x", &handler).await.unwrap();
        let req = server.await.unwrap();
        assert!(req.starts_with("GET /echo?msg=poststart HTTP/1.1\r\n"), "{req}");
    }

    #[tokio::test]
    async fn http_hook_transport_error_is_a_failure_with_the_kubelet_message() {
        // A port nothing listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let hooks = hooks_without_runtime();
        let pod = pod_json(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        }));
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        let handler: LifecycleHandler =
            serde_json::from_value(serde_json::json!({"httpGet": {"host": "127.0.0.1", "path": "/x", "port": port}}))
                .unwrap();
        let err = hooks.run(&pod, &c, "sim://x", &handler).await.unwrap_err();
        assert_eq!(
            err,
            format!(
                "HTTP lifecycle hook (/x) for Container \"c\" in Pod \"p_ns(u1)\" failed - error: Get \"http://127.0.0.1:{port}//x\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            )
        );
    }

    #[tokio::test]
    async fn tcp_handler_is_invalid_and_exec_on_a_missing_container_fails() {
        let hooks = hooks_without_runtime();
        let pod = pod_json(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        }));
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        let tcp: LifecycleHandler = serde_json::from_value(serde_json::json!({"tcpSocket": {"port": 80}})).unwrap();
        let err = hooks.run(&pod, &c, "sim://x", &tcp).await.unwrap_err();
        assert!(err.starts_with("Cannot run handler: invalid handler: "), "{err}");
        let exec: LifecycleHandler =
            serde_json::from_value(serde_json::json!({"exec": {"command": ["echo", "hi"]}})).unwrap();
        let err = hooks.run(&pod, &c, "sim://nope", &exec).await.unwrap_err();
        assert!(
            err.starts_with("Exec lifecycle hook ([echo hi]) for Container \"c\" in Pod \"p_ns(u1)\" failed - error: "),
            "{err}"
        );
        assert!(err.ends_with(", message: \"\""), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_handler_sleeps_virtual_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let sim = SimRuntime::new(Default::default(), Clock::real(), dir.path().join("sim")).unwrap();
        let hooks = KubeletHooks::new(sim, Clock::scaled(10.0), vec![]);
        let pod = pod_json(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        }));
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        let h: LifecycleHandler = serde_json::from_value(serde_json::json!({"sleep": {"seconds": 5}})).unwrap();
        let start = tokio::time::Instant::now();
        hooks.run(&pod, &c, "sim://x", &h).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(500));
    }
}
