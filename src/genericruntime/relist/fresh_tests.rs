//! Status freshness: the cache keeps the newest observation, a targeted refresh publishes a
//! pod's state with no relist, and runtime events wake a relist when the periodic one is slow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::backends::sim::{SimConfig, SimRuntime};
use crate::genericruntime::types::RuntimeObject;
use crate::genericruntime::{ManagerConfig, NoEvents, ProbeFailures, Runtime};

fn named(name: &str) -> Arc<PodStatus> {
    Arc::new(PodStatus {
        uid: "p".into(),
        name: name.into(),
        ..Default::default()
    })
}

/// A relist result taken at T never overwrites an entry from a look taken at T' > T; equal or
/// newer looks replace it; a pod seen gone only leaves the cache if no newer look saw it.
#[tokio::test(start_paused = true)]
async fn cache_keeps_the_newest_observation() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    // (stored at, new look at, replaced?)
    let table = [(10, 5, false), (10, 10, true), (10, 11, true), (0, 1000, true)];
    for (stored, look, replaced) in table {
        let cache = PodCache::new();
        assert!(cache.set("p", named("stored"), None, at(stored)));
        assert_eq!(
            cache.set("p", named("look"), None, at(look)),
            replaced,
            "{stored} vs {look}"
        );
        let want = if replaced { "look" } else { "stored" };
        assert_eq!(cache.get("p").status.name, want, "{stored} vs {look}");
        assert_eq!(cache.modified("p"), Some(at(if replaced { look } else { stored })));
    }
    // An older error does not hide a newer good status either.
    let cache = PodCache::new();
    cache.set("p", named("good"), None, at(10));
    cache.set("p", named("stale"), Some("inspect failed".into()), at(5));
    assert!(cache.get("p").error.is_none());
    // Deletion from a listing: only when the listing is not older than the entry.
    cache.delete_observed("p", at(9));
    assert_eq!(cache.get("p").status.name, "good");
    cache.delete_observed("p", at(10));
    assert!(cache.modified("p").is_none());
}

/// A runtime whose listing and inspection answer from one table, with an event stream fed by
/// the test.
#[derive(Default)]
struct Scripted {
    pods: Mutex<Vec<RunningPod>>,
    events: Mutex<Option<mpsc::Receiver<Result<cri::ContainerEventResponse, RuntimeError>>>>,
}

#[async_trait::async_trait]
impl RelistRuntime for Scripted {
    async fn get_pods(&self) -> Result<Vec<RunningPod>> {
        Ok(self.pods.lock().unwrap().clone())
    }

    async fn get_pod_status(&self, uid: &str, name: &str, namespace: &str) -> Result<PodStatus> {
        Ok(PodStatus {
            uid: uid.into(),
            name: name.into(),
            namespace: namespace.into(),
            ..Default::default()
        })
    }

    async fn container_events(&self) -> Result<ContainerEventStream, RuntimeError> {
        use futures::StreamExt;
        match self.events.lock().unwrap().take() {
            Some(rx) => Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed()),
            None => Err(RuntimeError::new("GetContainerEvents", Code::Unimplemented, "none")),
        }
    }
}

fn running(uid: &str, id: &str, state: ContainerState) -> RunningPod {
    RunningPod {
        uid: uid.into(),
        name: "n".into(),
        namespace: "default".into(),
        containers: vec![RuntimeObject {
            id: id.into(),
            name: "c".into(),
            state,
            created_at: 0,
        }],
        sandboxes: vec![],
    }
}

fn event(id: &str) -> Result<cri::ContainerEventResponse, RuntimeError> {
    Ok(cri::ContainerEventResponse {
        container_id: id.into(),
        container_event_type: cri::ContainerEventType::ContainerStoppedEvent as i32,
        ..Default::default()
    })
}

/// With relisting slowed to an hour, a runtime event still brings the change at once; without
/// one nothing would be seen for an hour. When the stream ends, relisting is back at its period.
#[tokio::test(start_paused = true)]
async fn runtime_event_wakes_a_relist() {
    let rt = Arc::new(Scripted::default());
    let (events_tx, events_rx) = mpsc::channel(8);
    *rt.events.lock().unwrap() = Some(events_rx);
    rt.pods
        .lock()
        .unwrap()
        .push(running("p", "c1", ContainerState::Running));
    let pleg = Arc::new(
        Pleg::with_runtime(rt.clone(), Arc::new(PodCache::new()), Clock::real()).with_period(Duration::from_secs(3600)),
    );
    let (tx, mut rx) = mpsc::channel(PLEG_CHANNEL_CAPACITY);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(pleg.clone().run(tx, shutdown.clone()));
    let first = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await.unwrap();
    assert_eq!(first.map(|e| e.kind), Some(PlegEventKind::ContainerStarted));

    // The container exits; nothing tells PLEG for a while: no relist, no event.
    *rt.pods.lock().unwrap() = vec![running("p", "c1", ContainerState::Exited)];
    assert!(tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.is_err());
    // The runtime's event: the exit is seen at once.
    events_tx.send(event("c1")).await.unwrap();
    let died = tokio::time::timeout(Duration::from_millis(10), rx.recv())
        .await
        .unwrap();
    assert_eq!(
        died.map(|e| (e.kind, e.data)),
        Some((PlegEventKind::ContainerDied, "c1".into()))
    );

    // A repeated event changes nothing (the relist diffs listings): no duplicate transition.
    events_tx.send(event("c1")).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.is_err());
    shutdown.cancel();
    task.await.unwrap();
}

struct NoOptions;

#[async_trait::async_trait]
impl crate::genericruntime::RunOptionsProvider for NoOptions {
    async fn run_container_options(
        &self,
        _: &k8s_openapi::api::core::v1::Pod,
        _: &k8s_openapi::api::core::v1::Container,
        _: &[String],
    ) -> Result<crate::genericruntime::RunContainerOptions, crate::genericruntime::ConfigError> {
        Ok(Default::default())
    }
}

fn sim_manager(dir: &std::path::Path, clock: Clock) -> Arc<RuntimeManager> {
    let sim = SimRuntime::new(SimConfig::default(), clock, dir.join("sim")).unwrap();
    let runtime: Arc<dyn Runtime> = sim;
    Arc::new(RuntimeManager::new(
        runtime,
        ManagerConfig {
            runtime_type: "sim".into(),
            pod_logs_dir: dir.join("logs"),
            root_dir: dir.join("root"),
            cgroup_root: "/kubepods".into(),
            serialize_image_pulls: true,
            node_name: "node-1".into(),
            clock,
        },
        Arc::new(NoEvents),
        Arc::new(NoOptions),
    ))
}

/// On the simulator, with relisting slowed to an hour: a targeted refresh after SyncPod puts
/// the running container in the cache with no relist, and the container's exit (after 30 virtual
/// seconds) reaches the cache through the sim's event push.
#[tokio::test]
async fn sim_start_and_exit_reach_the_cache_without_periodic_relist() {
    let dir = tempfile::tempdir().unwrap();
    // 1 virtual second = 10 ms real.
    let clock = Clock::scaled(100.0);
    let manager = sim_manager(dir.path(), clock);
    let cache = Arc::new(PodCache::new());
    let pleg = Arc::new(Pleg::new(manager.clone(), cache.clone(), clock).with_period(Duration::from_secs(3600 * 100)));
    let (tx, mut rx) = mpsc::channel(PLEG_CHANNEL_CAPACITY);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(pleg.clone().run(tx, shutdown.clone()));

    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "fresh", "namespace": "default", "uid": "uid-fresh"},
        "spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": "busybox:1.36", "command": ["sh", "-c", "sleep 30; exit 3"]}
        ]}
    }))
    .unwrap();
    let before = manager.get_pod_status("uid-fresh", "fresh", "default").await.unwrap();
    let result = manager.sync_pod(&pod, &before, &[], &ProbeFailures::default()).await;
    assert!(result.first_error().is_none(), "{result:?}");
    let synced = Instant::now();
    let fresh = refresh_pod(&manager, &cache, &clock, "uid-fresh", "fresh", "default")
        .await
        .unwrap();
    let c = fresh.status.find_container_status("c").unwrap().clone();
    assert!(
        matches!(c.state, ContainerState::Running | ContainerState::Exited),
        "{c:?}"
    );
    // A worker waiting for a status newer than its sync gets it from the refresh.
    let newer = tokio::time::timeout(
        Duration::from_secs(5),
        cache.get_newer_than("uid-fresh", synced - Duration::from_nanos(1)),
    )
    .await
    .unwrap();
    assert!(newer.status.find_container_status("c").is_some());

    // The exit arrives through the event stream (the periodic relist is 100 hours away).
    let mut kinds = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !kinds.contains_key(&(PlegEventKind::ContainerDied, c.id.clone())) {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("exit seen")
            .unwrap();
        kinds.insert((ev.kind, ev.data), ());
    }
    let exited = cache
        .get("uid-fresh")
        .status
        .find_container_status("c")
        .unwrap()
        .clone();
    assert_eq!((exited.state, exited.exit_code), (ContainerState::Exited, 3));
    shutdown.cancel();
    task.await.unwrap();
}

/// A worker waiting for a status newer than its last sync gets a relist at once, not at the
/// (slow) period: with events up the period is a minute, and a pod update must not wait that.
#[tokio::test(start_paused = true)]
async fn a_waiting_worker_gets_a_relist_at_once() {
    let rt = Arc::new(Scripted::default());
    rt.pods
        .lock()
        .unwrap()
        .push(running("p", "c1", ContainerState::Running));
    let cache = Arc::new(PodCache::new());
    let pleg =
        Arc::new(Pleg::with_runtime(rt.clone(), cache.clone(), Clock::real()).with_period(Duration::from_secs(3600)));
    let (tx, _rx) = mpsc::channel(PLEG_CHANNEL_CAPACITY);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(pleg.clone().run(tx, shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let synced = Instant::now();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let got = tokio::time::timeout(Duration::from_secs(1), cache.get_newer_than("p", synced)).await;
    assert!(got.is_ok(), "no relist for the waiting worker");
    shutdown.cancel();
    task.await.unwrap();
}

/// The simulator pushes its lifecycle events as containerd 1.7+ reports them: the sandbox as a
/// container (started, stopped, deleted), and each container's created, started, stopped.
#[tokio::test]
async fn sim_pushes_sandbox_and_container_events() {
    use crate::genericruntime::{ImageService, RuntimeService};
    use futures::StreamExt;
    use k8s_cri::v1::ContainerEventType as T;

    let dir = tempfile::tempdir().unwrap();
    let sim = SimRuntime::new(SimConfig::default(), Clock::scaled(100.0), dir.path().join("sim")).unwrap();
    sim.pull_image(cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: "docker.io/library/busybox:1.36".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut events = sim.get_container_events(cri::GetEventsRequest {}).await.unwrap();
    let sandbox_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "ev".into(),
            uid: "uid-ev".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    let sandbox = sim
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .pod_sandbox_id;
    let container = sim
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "c".into(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: "docker.io/library/busybox:1.36".into(),
                    ..Default::default()
                }),
                command: vec!["sh".into(), "-c".into(), "exit 0".into()],
                ..Default::default()
            }),
            sandbox_config: Some(sandbox_config),
        })
        .await
        .unwrap()
        .container_id;
    sim.start_container(cri::StartContainerRequest {
        container_id: container.clone(),
    })
    .await
    .unwrap();
    sim.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: sandbox.clone(),
    })
    .await
    .unwrap();
    sim.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: sandbox.clone(),
    })
    .await
    .unwrap();
    let mut got = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), events.next()).await {
        let ev = ev.unwrap();
        got.push((ev.container_id, T::try_from(ev.container_event_type).unwrap()));
    }
    let of = |id: &str| -> Vec<T> { got.iter().filter(|(i, _)| i == id).map(|(_, t)| *t).collect() };
    assert_eq!(
        of(&sandbox),
        [
            T::ContainerStartedEvent,
            T::ContainerStoppedEvent,
            T::ContainerDeletedEvent
        ]
    );
    assert_eq!(
        of(&container),
        [
            T::ContainerCreatedEvent,
            T::ContainerStartedEvent,
            T::ContainerStoppedEvent
        ]
    );
}
