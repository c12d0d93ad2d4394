//! The status manager against the test API server: status patches of a bound pod (foreign
//! conditions kept), deletion after deletionTimestamp once resources are reclaimed, a recreated
//! pod left alone, and a static pod's status written to its mirror pod.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use keel::clock::Clock;
use keel::genericruntime::{cri, ContainerState, ContainerStatus, PodStatus as RuntimePodStatus};
use keel::kubelet::status::generate::{generate_api_pod_status, GenerateInput, NoProbeResults};
use keel::kubelet::status::manager::{PodDeletionSafety, StatusManager};
use keel::kubelet::status::reasoncache::ReasonCache;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::apiserver::TestApiServer;

struct Reclaimed(AtomicBool);
impl PodDeletionSafety for Reclaimed {
    fn pod_resources_are_reclaimed(&self, _: &Pod, _: &PodStatus) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), rand::random::<u32>())
}

fn bound_pod(name: &str, annotations: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"nodeName": "node1", "containers": [{"name": "web", "image": "busybox:1.36"}]},
    }))
    .unwrap()
}

fn runtime(uid: &str, state: ContainerState, exit_code: i32) -> RuntimePodStatus {
    let now = jiff::Timestamp::now();
    RuntimePodStatus {
        uid: uid.into(),
        ips: vec!["10.88.0.7".into()],
        container_statuses: vec![ContainerStatus {
            id: "c1".into(),
            runtime_type: "sim".into(),
            name: "web".into(),
            state,
            created_at: now,
            started_at: Some(now),
            finished_at: (state == ContainerState::Exited).then_some(now),
            exit_code,
            image: "busybox:1.36".into(),
            image_ref: "sha256:0123".into(),
            hash: 1,
            restart_count: 0,
            reason: if state == ContainerState::Exited {
                "Error".into()
            } else {
                String::new()
            },
            message: String::new(),
            sandbox_id: "sb1".into(),
        }],
        sandbox_statuses: vec![cri::PodSandboxStatus {
            id: "sb1".into(),
            state: cri::PodSandboxState::SandboxReady as i32,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn generate(pod: &Pod, rt: &RuntimePodStatus, previous: Option<&PodStatus>) -> PodStatus {
    generate_api_pod_status(&GenerateInput {
        pod,
        runtime: rt,
        previous,
        reasons: &ReasonCache::new(),
        probes: &NoProbeResults,
        node_ips: &["192.168.50.2".to_string()],
        now: jiff::Timestamp::now(),
    })
}

/// Polls `f` until it returns Some, for up to 10 s.
async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn condition<'a>(p: &'a Pod, t: &str) -> Option<&'a str> {
    let c = p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == t)?;
    Some(c.status.as_str())
}

#[tokio::test]
async fn status_patch_then_delete_after_deletion_timestamp() {
    let server = TestApiServer::start().await.unwrap();
    let client = server.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let name = unique("status");
    let created = pods
        .create(&PostParams::default(), &bound_pod(&name, json!({})))
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    // A condition owned by someone else (a readiness gate controller) must survive.
    pods.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": [{"type": "example.com/gate", "status": "True"}]}})),
    )
    .await
    .unwrap();
    let pod = pods.get(&name).await.unwrap();

    let safety = Arc::new(Reclaimed(AtomicBool::new(false)));
    // A fast clock: the 10 s batch runs every 100 ms.
    let manager = StatusManager::new(Some(client.clone()), Clock::scaled(100.0), safety.clone());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(manager.clone().run(shutdown.clone()));

    let rt = runtime(&uid, ContainerState::Running, 0);
    manager.set_pod_status(&pod, generate(&pod, &rt, None));
    let patched = wait_for("Running status", || async {
        let p = pods.get(&name).await.ok()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
    })
    .await;
    let st = patched.status.clone().unwrap();
    assert_eq!(st.pod_ip.as_deref(), Some("10.88.0.7"));
    assert_eq!(st.host_ip.as_deref(), Some("192.168.50.2"));
    assert_eq!(st.qos_class.as_deref(), Some("BestEffort"));
    let cs = &st.container_statuses.as_ref().unwrap()[0];
    assert_eq!(cs.container_id.as_deref(), Some("sim://c1"));
    assert!(cs.ready);
    assert_eq!(condition(&patched, "Ready"), Some("True"));
    assert_eq!(condition(&patched, "PodScheduled"), Some("True"));
    assert_eq!(
        condition(&patched, "example.com/gate"),
        Some("True"),
        "foreign condition kept"
    );
    let types: Vec<&str> = st.conditions.iter().flatten().map(|c| c.type_.as_str()).collect();
    assert_eq!(types[0], "example.com/gate");

    // Graceful delete: the API server only sets deletionTimestamp on a bound pod.
    pods.delete(&name, &DeleteParams::default()).await.unwrap();
    let deleting = pods.get(&name).await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    let previous = manager.get_pod_status(&uid);
    let rt = runtime(&uid, ContainerState::Exited, 143);
    manager.set_pod_status(&deleting, generate(&deleting, &rt, previous.as_ref()));
    let terminated = wait_for("terminated status", || async {
        let p = pods.get(&name).await.ok()?;
        let t = p.status.as_ref()?.container_statuses.as_ref()?[0]
            .state
            .as_ref()?
            .terminated
            .clone()?;
        Some((p, t))
    })
    .await;
    assert_eq!(terminated.1.exit_code, 143);
    // Resources not reclaimed yet: the pod stays.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        pods.get_opt(&name).await.unwrap().is_some(),
        "deleted before resources were reclaimed"
    );

    safety.0.store(true, Ordering::SeqCst);
    wait_for("pod removed from the API", || async {
        pods.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await;
    wait_for("cache entry dropped", || async {
        manager.get_pod_status(&uid).is_none().then_some(())
    })
    .await;

    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn recreated_pod_is_neither_patched_nor_deleted() {
    let server = TestApiServer::start().await.unwrap();
    let client = server.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let name = unique("recreated");
    let live = pods
        .create(&PostParams::default(), &bound_pod(&name, json!({})))
        .await
        .unwrap();

    // The kubelet still has the old incarnation (another UID), deleted and reclaimed.
    let mut old = live.clone();
    old.metadata.uid = Some("0ld-0000-uid".into());
    old.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    let manager = StatusManager::new(
        Some(client.clone()),
        Clock::scaled(100.0),
        Arc::new(Reclaimed(AtomicBool::new(true))),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(manager.clone().run(shutdown.clone()));
    let rt = runtime("0ld-0000-uid", ContainerState::Exited, 0);
    manager.set_pod_status(&old, generate(&old, &rt, None));
    wait_for("stale entry dropped", || async {
        manager.get_pod_status("0ld-0000-uid").is_none().then_some(())
    })
    .await;
    let now = pods.get(&name).await.unwrap();
    assert_eq!(now.metadata.uid, live.metadata.uid);
    assert!(now.metadata.deletion_timestamp.is_none());
    assert!(
        now.status.and_then(|s| s.phase).is_none_or(|p| p == "Pending"),
        "status not patched"
    );
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn static_pod_status_goes_to_its_mirror_pod() {
    let server = TestApiServer::start().await.unwrap();
    let client = server.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let name = unique("static");
    let hash = format!("hash{}", rand::random::<u32>());
    let mirror = pods
        .create(
            &PostParams::default(),
            &bound_pod(&name, json!({"kubernetes.io/config.mirror": hash})),
        )
        .await
        .unwrap();
    let mut static_pod = bound_pod(
        &name,
        json!({"kubernetes.io/config.source": "file", "kubernetes.io/config.hash": hash}),
    );
    static_pod.metadata.uid = Some(hash.clone());
    // Deleted and reclaimed: still, a mirror pod is never deleted by the status manager.
    static_pod.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));

    let manager = StatusManager::new(
        Some(client.clone()),
        Clock::scaled(100.0),
        Arc::new(Reclaimed(AtomicBool::new(true))),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(manager.clone().run(shutdown.clone()));
    let rt = runtime(&hash, ContainerState::Running, 0);
    manager.set_pod_status(&static_pod, generate(&static_pod, &rt, None));
    let got = wait_for("mirror status", || async {
        let p = pods.get(&name).await.ok()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
    })
    .await;
    assert_eq!(got.metadata.uid, mirror.metadata.uid);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let still = pods.get(&name).await.unwrap();
    assert!(
        still.metadata.deletion_timestamp.is_none(),
        "mirror pod deleted by the status manager"
    );
    assert!(manager.get_pod_status(&hash).is_some());
    shutdown.cancel();
    task.await.unwrap();
}

// kube-apiserver replaces `containerStatuses` (an atomic list: no patch strategy) when a
// strategic-merge patch carries it; merging by name would leave the old `running` state next to
// the new `terminated` one.
#[tokio::test]
async fn container_statuses_are_replaced_atomically() {
    let server = TestApiServer::start().await.unwrap();
    let client = server.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let name = unique("atomic");
    let pod = pods
        .create(&PostParams::default(), &bound_pod(&name, json!({})))
        .await
        .unwrap();
    let uid = pod.metadata.uid.clone().unwrap();
    let manager = StatusManager::new(
        Some(client.clone()),
        Clock::scaled(100.0),
        Arc::new(Reclaimed(AtomicBool::new(false))),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(manager.clone().run(shutdown.clone()));
    let running = generate(&pod, &runtime(&uid, ContainerState::Running, 0), None);
    manager.set_pod_status(&pod, running);
    wait_for("Running status", || async {
        let p = pods.get(&name).await.ok()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    let previous = manager.get_pod_status(&uid);
    let exited = generate(&pod, &runtime(&uid, ContainerState::Exited, 1), previous.as_ref());
    manager.set_pod_status(&pod, exited);
    let state = wait_for("terminated state", || async {
        let p = pods.get(&name).await.ok()?;
        let st = p.status?.container_statuses?.first()?.state.clone()?;
        st.terminated.is_some().then_some(st)
    })
    .await;
    assert!(state.running.is_none(), "running state left behind: {state:?}");
    shutdown.cancel();
    task.await.unwrap();
}
