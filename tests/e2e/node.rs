//! Node registration, status, lease and events against the test API server: the node status
//! reporter and the lease controller run as main runs them, on a compressed clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use keel::clock::Clock;
use keel::genericruntime::{cri, Code, ImageService, RuntimeError, RuntimeService};
use keel::kubelet::config::Config;
use keel::kubelet::events::Recorder;
use keel::kubelet::lease::{run_lease, LEASE_NAMESPACE};
use keel::kubelet::node::{NodeStatusReporter, ANNOTATION_CMAD, KUBELET_VERSION};
use keel::kubelet::RuntimeHealth;

use crate::support::apiserver::TestApiServer;

/// Virtual seconds per real second: status every 0.5 s, lease renewals every 0.5 s.
const SCALE: f64 = 20.0;

/// A runtime that only answers ListImages (all the node reporter calls).
struct ImagesOnly;

fn unimplemented(op: &'static str) -> RuntimeError {
    RuntimeError::new(op, Code::Unimplemented, "not part of this test runtime")
}

#[async_trait]
impl RuntimeService for ImagesOnly {
    async fn version(&self, _: cri::VersionRequest) -> Result<cri::VersionResponse, RuntimeError> {
        Err(unimplemented("Version"))
    }
    async fn status(&self, _: cri::StatusRequest) -> Result<cri::StatusResponse, RuntimeError> {
        Err(unimplemented("Status"))
    }
    async fn run_pod_sandbox(&self, _: cri::RunPodSandboxRequest) -> Result<cri::RunPodSandboxResponse, RuntimeError> {
        Err(unimplemented("RunPodSandbox"))
    }
    async fn stop_pod_sandbox(
        &self,
        _: cri::StopPodSandboxRequest,
    ) -> Result<cri::StopPodSandboxResponse, RuntimeError> {
        Err(unimplemented("StopPodSandbox"))
    }
    async fn remove_pod_sandbox(
        &self,
        _: cri::RemovePodSandboxRequest,
    ) -> Result<cri::RemovePodSandboxResponse, RuntimeError> {
        Err(unimplemented("RemovePodSandbox"))
    }
    async fn pod_sandbox_status(
        &self,
        _: cri::PodSandboxStatusRequest,
    ) -> Result<cri::PodSandboxStatusResponse, RuntimeError> {
        Err(unimplemented("PodSandboxStatus"))
    }
    async fn list_pod_sandbox(
        &self,
        _: cri::ListPodSandboxRequest,
    ) -> Result<cri::ListPodSandboxResponse, RuntimeError> {
        Err(unimplemented("ListPodSandbox"))
    }
    async fn create_container(
        &self,
        _: cri::CreateContainerRequest,
    ) -> Result<cri::CreateContainerResponse, RuntimeError> {
        Err(unimplemented("CreateContainer"))
    }
    async fn start_container(
        &self,
        _: cri::StartContainerRequest,
    ) -> Result<cri::StartContainerResponse, RuntimeError> {
        Err(unimplemented("StartContainer"))
    }
    async fn stop_container(&self, _: cri::StopContainerRequest) -> Result<cri::StopContainerResponse, RuntimeError> {
        Err(unimplemented("StopContainer"))
    }
    async fn remove_container(
        &self,
        _: cri::RemoveContainerRequest,
    ) -> Result<cri::RemoveContainerResponse, RuntimeError> {
        Err(unimplemented("RemoveContainer"))
    }
    async fn list_containers(
        &self,
        _: cri::ListContainersRequest,
    ) -> Result<cri::ListContainersResponse, RuntimeError> {
        Err(unimplemented("ListContainers"))
    }
    async fn container_status(
        &self,
        _: cri::ContainerStatusRequest,
    ) -> Result<cri::ContainerStatusResponse, RuntimeError> {
        Err(unimplemented("ContainerStatus"))
    }
    async fn exec_sync(&self, _: cri::ExecSyncRequest) -> Result<cri::ExecSyncResponse, RuntimeError> {
        Err(unimplemented("ExecSync"))
    }
    async fn reopen_container_log(
        &self,
        _: cri::ReopenContainerLogRequest,
    ) -> Result<cri::ReopenContainerLogResponse, RuntimeError> {
        Err(unimplemented("ReopenContainerLog"))
    }

    async fn exec(&self, _: cri::ExecRequest) -> Result<cri::ExecResponse, RuntimeError> {
        Err(unimplemented("Exec"))
    }

    async fn attach(&self, _: cri::AttachRequest) -> Result<cri::AttachResponse, RuntimeError> {
        Err(unimplemented("Attach"))
    }

    async fn port_forward(&self, _: cri::PortForwardRequest) -> Result<cri::PortForwardResponse, RuntimeError> {
        Err(unimplemented("PortForward"))
    }

    async fn list_container_stats(
        &self,
        _: cri::ListContainerStatsRequest,
    ) -> Result<cri::ListContainerStatsResponse, RuntimeError> {
        Err(unimplemented("ListContainerStats"))
    }

    async fn list_pod_sandbox_stats(
        &self,
        _: cri::ListPodSandboxStatsRequest,
    ) -> Result<cri::ListPodSandboxStatsResponse, RuntimeError> {
        Err(unimplemented("ListPodSandboxStats"))
    }
}

#[async_trait]
impl ImageService for ImagesOnly {
    async fn list_images(&self, _: cri::ListImagesRequest) -> Result<cri::ListImagesResponse, RuntimeError> {
        Ok(cri::ListImagesResponse {
            images: vec![
                cri::Image {
                    id: "sha256:small".into(),
                    repo_tags: vec!["docker.io/library/pause:3.9".into()],
                    size: 700_000,
                    ..Default::default()
                },
                cri::Image {
                    id: "sha256:big".into(),
                    repo_tags: vec!["docker.io/library/nginx:1.25".into()],
                    repo_digests: vec!["docker.io/library/nginx@sha256:abc".into()],
                    size: 70_000_000,
                    ..Default::default()
                },
            ],
        })
    }
    async fn image_status(&self, _: cri::ImageStatusRequest) -> Result<cri::ImageStatusResponse, RuntimeError> {
        Err(unimplemented("ImageStatus"))
    }
    async fn pull_image(&self, _: cri::PullImageRequest) -> Result<cri::PullImageResponse, RuntimeError> {
        Err(unimplemented("PullImage"))
    }
    async fn remove_image(&self, _: cri::RemoveImageRequest) -> Result<cri::RemoveImageResponse, RuntimeError> {
        Err(unimplemented("RemoveImage"))
    }
    async fn image_fs_info(&self, _: cri::ImageFsInfoRequest) -> Result<cri::ImageFsInfoResponse, RuntimeError> {
        Err(unimplemented("ImageFsInfo"))
    }
}

fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n:x}", std::process::id())
}

/// A running reporter + lease controller, with a task that keeps the runtime healthy.
struct Agent {
    node_name: String,
    shutdown: CancellationToken,
    _root: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start_agent(server: &TestApiServer, node_name: &str, report_every: Duration) -> Agent {
    let client = server.client().await;
    let root = tempfile::tempdir().unwrap();
    let mut cfg = Config::defaults(node_name.to_string());
    cfg.root_dir = root.path().to_path_buf();
    cfg.node_labels = [("keel.test/role".to_string(), "e2e".to_string())].into();
    cfg.register_with_taints = keel::kubelet::config::parse_taints("dedicated=e2e:NoSchedule").unwrap();
    cfg.time_scale = SCALE;
    cfg.node_status_report_frequency = report_every;
    let cfg = Arc::new(cfg);
    let clock = Clock::scaled(SCALE);
    let shutdown = CancellationToken::new();

    let (health_tx, health_rx) = watch::channel(RuntimeHealth::default());
    let beat = shutdown.clone();
    tokio::spawn(async move {
        loop {
            health_tx.send_replace(RuntimeHealth {
                runtime_version: "sim://0.1.0".into(),
                runtime_ready: true,
                network_ready: true,
                runtime_error: None,
                network_error: None,
                last_runtime_ok: Some(Instant::now()),
                last_relist: Some(Instant::now()),
            });
            tokio::select! {
                _ = beat.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    });

    let recorder = Recorder::new(Some(client.clone()), node_name, clock);
    let (node_tx, node_rx) = watch::channel(None);
    let reporter = NodeStatusReporter::new(
        client.clone(),
        cfg.clone(),
        clock,
        health_rx,
        Arc::new(ImagesOnly),
        recorder,
        node_tx,
    )
    .unwrap();
    tokio::spawn(reporter.run(shutdown.clone()));
    tokio::spawn(run_lease(
        client,
        node_name.to_string(),
        cfg.node_lease_duration_seconds,
        clock,
        node_rx,
        shutdown.clone(),
    ));
    Agent {
        node_name: node_name.to_string(),
        shutdown,
        _root: root,
    }
}

/// Polls `f` every 100 ms until it returns Some, for at most `secs` seconds.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ready_status(n: &Node) -> Option<String> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

async fn lease_renew_time(leases: &Api<Lease>, name: &str) -> Option<jiff::Timestamp> {
    leases
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.renew_time.map(|t| t.0))
}

#[tokio::test]
async fn node_registers_with_status_and_lease() {
    let server = TestApiServer::start().await.unwrap();
    let client = server.client().await;
    let name = unique("keel-node");
    let agent = start_agent(&server, &name, Duration::from_secs(300)).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);

    let node = eventually(20, "node Ready", || async {
        let n = nodes.get_opt(&agent.node_name).await.ok().flatten()?;
        (ready_status(&n).as_deref() == Some("True")).then_some(n)
    })
    .await;
    let labels = node.metadata.labels.clone().unwrap();
    assert_eq!(labels["kubernetes.io/hostname"], name);
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert!(labels.contains_key("kubernetes.io/arch"));
    assert!(labels.contains_key("beta.kubernetes.io/arch"));
    assert_eq!(labels["keel.test/role"], "e2e");
    assert_eq!(node.metadata.annotations.as_ref().unwrap()[ANNOTATION_CMAD], "true");
    let taints = node.spec.as_ref().unwrap().taints.clone().unwrap();
    assert_eq!(taints[0].key, "dedicated");
    let st = node.status.as_ref().unwrap();
    let cap = st.capacity.as_ref().unwrap();
    for r in ["cpu", "memory", "pods", "ephemeral-storage"] {
        assert!(cap.contains_key(r), "capacity {r}");
    }
    assert_eq!(cap["pods"].0, "110");
    assert!(st.allocatable.as_ref().unwrap().contains_key("memory"));
    let types: Vec<String> = st
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.type_.clone())
        .collect();
    assert_eq!(types, ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]);
    let info = st.node_info.as_ref().unwrap();
    assert_eq!(info.kubelet_version, KUBELET_VERSION);
    assert_eq!(info.container_runtime_version, "sim://0.1.0");
    assert_eq!(
        st.daemon_endpoints
            .as_ref()
            .unwrap()
            .kubelet_endpoint
            .as_ref()
            .unwrap()
            .port,
        10250
    );
    let images = st.images.as_ref().unwrap();
    assert_eq!(images[0].size_bytes, Some(70_000_000), "largest first");
    assert_eq!(
        images[0].names.as_ref().unwrap()[0],
        "docker.io/library/nginx@sha256:abc"
    );
    let addrs = st.addresses.as_ref().unwrap();
    assert!(addrs.iter().any(|a| a.type_ == "InternalIP"));
    assert!(addrs.iter().any(|a| a.type_ == "Hostname" && a.address == name));

    // Lease with holder and owner reference to the Node; renewTime advances.
    let uid = node.metadata.uid.clone().unwrap();
    let lease = eventually(20, "lease with owner reference", || async {
        let l = leases.get_opt(&name).await.ok().flatten()?;
        l.metadata.owner_references.as_ref().filter(|o| !o.is_empty())?;
        Some(l)
    })
    .await;
    let spec = lease.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(name.as_str()));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    let owner = &lease.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Node", name.as_str(), uid.as_str())
    );
    let first = spec.renew_time.unwrap().0;
    eventually(10, "lease renewal", || async {
        lease_renew_time(&leases, &name).await.filter(|t| *t > first)
    })
    .await;

    // Node events: Starting and the condition transitions.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    eventually(10, "Starting event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let mine: Vec<&Event> = list
            .items
            .iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name.as_str()))
            .collect();
        let reasons: Vec<&str> = mine.iter().filter_map(|e| e.reason.as_deref()).collect();
        (reasons.contains(&"Starting") && reasons.contains(&"NodeHasSufficientMemory")).then_some(())
    })
    .await;

    // Nothing changes: no status PATCH before the report period (5 virtual minutes = 15 s),
    // although the status is computed every 0.5 s.
    let hb = |n: &Node| {
        n.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|c| {
            c.iter()
                .find(|c| c.type_ == "Ready")
                .and_then(|c| c.last_heartbeat_time.clone())
        })
    };
    let before = hb(&nodes.get(&name).await.unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        hb(&nodes.get(&name).await.unwrap()),
        before,
        "heartbeat-only changes are not written"
    );
    drop(agent);
}

#[tokio::test]
async fn survives_api_outage() {
    let server = TestApiServer::start().await.unwrap();
    let client = server.client().await;
    let name = unique("keel-outage");
    // Report every 20 virtual seconds (1 s real) so heartbeats show the status loop is alive.
    let agent = start_agent(&server, &name, Duration::from_secs(20)).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(20, "lease", || async { lease_renew_time(&leases, &name).await }).await;

    server.set_available(false);
    // Several renew and status periods (virtual 60 s) pass while the server is down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.set_available(true);
    let resumed_after = jiff::Timestamp::now();
    eventually(20, "lease renewed after the outage", || async {
        lease_renew_time(&leases, &name).await.filter(|t| *t >= resumed_after)
    })
    .await;
    // Status PATCHes resume too: the Ready heartbeat moves past the outage.
    let resumed_second = resumed_after.as_second();
    let n = eventually(20, "node heartbeat after the outage", || async {
        let n = nodes.get_opt(&name).await.ok().flatten()?;
        let c = n
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Ready")?
            .clone();
        (c.last_heartbeat_time?.0.as_second() > resumed_second).then_some(n)
    })
    .await;
    assert_eq!(ready_status(&n).as_deref(), Some("True"));
    drop(agent);
}

#[tokio::test]
async fn adopts_existing_node() {
    let server = TestApiServer::start().await.unwrap();
    let client = server.client().await;
    let name = unique("keel-adopt");
    let nodes: Api<Node> = Api::all(client.clone());
    let existing: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/os": "windows", "keep": "me"}},
    }))
    .unwrap();
    let created = nodes.create(&PostParams::default(), &existing).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();

    let agent = start_agent(&server, &name, Duration::from_secs(300)).await;
    let node = eventually(20, "adopted node Ready", || async {
        let n = nodes.get_opt(&name).await.ok().flatten()?;
        (ready_status(&n).as_deref() == Some("True")).then_some(n)
    })
    .await;
    assert_eq!(
        node.metadata.uid.as_deref(),
        Some(uid.as_str()),
        "same object, not re-created"
    );
    let labels = node.metadata.labels.clone().unwrap();
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["kubernetes.io/hostname"], name);
    assert_eq!(labels["keep"], "me");
    assert!(
        !labels.contains_key("keel.test/role"),
        "--node-labels apply at registration only"
    );
    assert_eq!(node.metadata.annotations.as_ref().unwrap()[ANNOTATION_CMAD], "true");
    drop(agent);
}

#[tokio::test]
async fn repeated_events_fold_into_one_counted_event() {
    use keel::genericruntime::{EventSink, EventType};
    let server = TestApiServer::start().await.unwrap();
    let client = server.client().await;
    let pod_name = unique("keel-ev-pod");
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": pod_name, "namespace": "default", "uid": "6f7d3c1e-uid"},
    }))
    .unwrap();
    let recorder = Recorder::new(Some(client.clone()), "node-ev", Clock::real());
    for _ in 0..3 {
        recorder.pod_event(
            &pod,
            Some("spec.containers{app}".into()),
            EventType::Warning,
            "BackOff",
            "Back-off restarting failed container app".into(),
        );
    }
    recorder.pod_event(&pod, None, EventType::Normal, "Scheduled", "other".into());
    let events: Api<Event> = Api::namespaced(client, "default");
    let (backoff, other) = eventually(10, "events posted", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let mine: Vec<Event> = list
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(pod_name.as_str()))
            .collect();
        let backoff: Vec<Event> = mine
            .iter()
            .filter(|e| e.reason.as_deref() == Some("BackOff"))
            .cloned()
            .collect();
        let other = mine.iter().filter(|e| e.reason.as_deref() == Some("Scheduled")).count();
        let folded = backoff.len() == 1 && backoff[0].count == Some(3);
        (folded && other == 1).then(|| (backoff[0].clone(), other))
    })
    .await;
    assert_eq!(other, 1);
    assert!(backoff.first_timestamp <= backoff.last_timestamp);
    let src = backoff.source.clone().unwrap();
    assert_eq!(src.component.as_deref(), Some("kubelet"));
    assert_eq!(src.host.as_deref(), Some("node-ev"));
    let r = backoff.involved_object;
    assert_eq!(r.kind.as_deref(), Some("Pod"));
    assert_eq!(r.uid.as_deref(), Some("6f7d3c1e-uid"));
    assert_eq!(r.field_path.as_deref(), Some("spec.containers{app}"));
    assert_eq!(backoff.type_.as_deref(), Some("Warning"));
    assert_eq!(backoff.reporting_component.as_deref(), Some("kubelet"));
    assert_eq!(backoff.reporting_instance.as_deref(), Some("node-ev"));
    assert!(backoff.metadata.name.unwrap().starts_with(&format!("{pod_name}.")));
}

/// Reads this host: the locally computed Node (standalone / before registration) is complete
/// enough for admission.
#[test]
fn local_node_from_host_facts() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::defaults("node-local".into());
    c.root_dir = dir.path().to_path_buf();
    let health = RuntimeHealth {
        runtime_ready: true,
        network_ready: true,
        last_runtime_ok: Some(Instant::now()),
        last_relist: Some(Instant::now()),
        ..Default::default()
    };
    let n = keel::kubelet::node::local_node(&c, &Clock::real(), &health).unwrap();
    assert_eq!(n.metadata.name.as_deref(), Some("node-local"));
    assert!(n.metadata.uid.is_none());
    let st = n.status.as_ref().unwrap();
    let alloc = st.allocatable.as_ref().unwrap();
    assert_eq!(alloc["pods"].0, "110");
    assert!(alloc.contains_key("cpu") && alloc.contains_key("memory") && alloc.contains_key("ephemeral-storage"));
    let info = st.node_info.as_ref().unwrap();
    assert_eq!(info.operating_system, "linux");
    assert!(!info.kernel_version.is_empty());
    assert_eq!(ready_status(&n).as_deref(), Some("True"));
}
