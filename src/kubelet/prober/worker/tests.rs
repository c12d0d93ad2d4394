//! Worker and manager behaviour on paused tokio time with a scripted probe runner: thresholds,
//! initial delay, period, startup gating, on-hold after a liveness failure, errors, stopping
//! (after the kubelet's `worker_test.go` and `prober_manager_test.go`).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod, PodStatus as ApiPodStatus, Probe};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::super::probe::{ProbeError, ProbeRunner, Verdict};
use super::super::results::{ProbeResult, ProbeType, Update};
use super::super::ProberManager;
use super::PodStatusSource;
use crate::clock::Clock;
use crate::genericruntime::types::{ContainerState, ContainerStatus as RtStatus, PodStatus as RuntimePodStatus};
use crate::genericruntime::{EventSink, EventType};
use crate::kubelet::status::generate::ProbeResults;

const UID: &str = "uid-1";
const CID: &str = "sim://c1";

#[derive(Default)]
struct Statuses(Mutex<Option<ApiPodStatus>>);
impl PodStatusSource for Statuses {
    fn pod_status(&self, _: &str) -> Option<ApiPodStatus> {
        self.0.lock().unwrap().clone()
    }
}

/// What the runner answers: a script consumed first, then `default`.
struct Runner {
    script: Mutex<VecDeque<Option<Verdict>>>,
    default: Mutex<Option<Verdict>>,
    calls: Mutex<Vec<ProbeType>>,
}

impl Runner {
    fn new(default: Option<Verdict>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(default),
            calls: Mutex::new(Vec::new()),
        })
    }
    fn set(&self, v: Option<Verdict>) {
        *self.default.lock().unwrap() = v;
    }
    fn calls(&self, t: ProbeType) -> usize {
        self.calls.lock().unwrap().iter().filter(|c| **c == t).count()
    }
}

#[async_trait]
impl ProbeRunner for Runner {
    async fn run(
        &self,
        t: ProbeType,
        _: &Probe,
        _: &Pod,
        _: &ApiPodStatus,
        _: &Container,
        _: &str,
    ) -> Result<(Verdict, String), ProbeError> {
        self.calls.lock().unwrap().push(t);
        let next = self.script.lock().unwrap().pop_front();
        let v = next.unwrap_or_else(|| *self.default.lock().unwrap());
        match v {
            Some(v) => Ok((v, "boom".into())),
            None => Err(ProbeError::Port("invalid port number: 0".into())),
        }
    }
}

#[derive(Default)]
struct Events(Mutex<Vec<(Option<String>, String, String)>>);
impl EventSink for Events {
    fn pod_event(&self, _: &Pod, field_path: Option<String>, kind: EventType, reason: &str, message: String) {
        assert_eq!(kind, EventType::Warning);
        self.0.lock().unwrap().push((field_path, reason.into(), message));
    }
}

struct Env {
    mgr: ProberManager,
    runner: Arc<Runner>,
    statuses: Arc<Statuses>,
    events: Arc<Events>,
    updates: mpsc::Receiver<Update>,
}

async fn env(default: Option<Verdict>) -> Env {
    let runner = Runner::new(default);
    let statuses = Arc::new(Statuses::default());
    let events = Arc::new(Events::default());
    let started = Instant::now();
    // Past the first period after "start": no random spreading of the first probe.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let mgr = ProberManager::new(runner.clone(), statuses.clone(), events.clone(), Clock::real(), started);
    let updates = mgr.take_updates().unwrap();
    Env {
        mgr,
        runner,
        statuses,
        events,
        updates,
    }
}

fn pod(probes: serde_json::Value, restart_policy: &str) -> Pod {
    let mut c = serde_json::json!({"name": "c", "image": "busybox"});
    if let serde_json::Value::Object(m) = probes {
        for (k, v) in m {
            c[k] = v;
        }
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "default", "uid": UID},
        "spec": {"restartPolicy": restart_policy, "containers": [c]}
    }))
    .unwrap()
}

fn probe(extra: serde_json::Value) -> serde_json::Value {
    let mut p = serde_json::json!({"exec": {"command": ["true"]}, "periodSeconds": 10});
    if let serde_json::Value::Object(m) = extra {
        for (k, v) in m {
            p[k] = v;
        }
    }
    p
}

fn running(cid: &str, started_ago: i64, started: bool) -> ApiPodStatus {
    let at = Timestamp::now() - jiff::SignedDuration::from_secs(started_ago);
    serde_json::from_value(serde_json::json!({
        "phase": "Running",
        "containerStatuses": [{
            "name": "c", "image": "busybox", "imageID": "", "restartCount": 0, "ready": false,
            "started": started, "containerID": cid,
            "state": {"running": {"startedAt": at.to_string()}}
        }]
    }))
    .unwrap()
}

fn terminated(cid: &str) -> ApiPodStatus {
    serde_json::from_value(serde_json::json!({
        "phase": "Running",
        "containerStatuses": [{
            "name": "c", "image": "busybox", "imageID": "", "restartCount": 0, "ready": false,
            "started": false, "containerID": cid,
            "state": {"terminated": {"exitCode": 1}}
        }]
    }))
    .unwrap()
}

fn drain(rx: &mut mpsc::Receiver<Update>) -> Vec<(ProbeType, ProbeResult)> {
    let mut out = Vec::new();
    while let Ok(u) = rx.try_recv() {
        out.push((u.probe, u.result));
    }
    out
}

async fn secs(n: u64) {
    tokio::time::sleep(Duration::from_secs(n)).await;
}

#[tokio::test(start_paused = true)]
async fn readiness_starts_failed_and_needs_success_threshold() {
    let mut e = env(Some(Verdict::Success)).await;
    *e.statuses.0.lock().unwrap() = Some(running(CID, 100, true));
    e.mgr.add_pod(&pod(
        serde_json::json!({"readinessProbe": probe(serde_json::json!({"successThreshold": 3}))}),
        "Always",
    ));
    // Probes at 0, 10, 20: the third success publishes.
    secs(1).await;
    assert_eq!(
        drain(&mut e.updates),
        vec![(ProbeType::Readiness, ProbeResult::Failure)]
    );
    assert_eq!(e.mgr.readiness(CID), Some(false));
    secs(10).await;
    assert!(drain(&mut e.updates).is_empty());
    secs(10).await;
    assert_eq!(
        drain(&mut e.updates),
        vec![(ProbeType::Readiness, ProbeResult::Success)]
    );
    assert_eq!(e.mgr.readiness(CID), Some(true));
    assert_eq!(e.runner.calls(ProbeType::Readiness), 3);
    // Failures: the default threshold is 3.
    e.runner.set(Some(Verdict::Failure));
    secs(20).await;
    assert!(drain(&mut e.updates).is_empty());
    secs(10).await;
    assert_eq!(
        drain(&mut e.updates),
        vec![(ProbeType::Readiness, ProbeResult::Failure)]
    );
    let events = e.events.0.lock().unwrap().clone();
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[0],
        (
            Some("spec.containers{c}".into()),
            "Unhealthy".into(),
            "Readiness probe failed: boom".into()
        )
    );
}

#[tokio::test(start_paused = true)]
async fn liveness_failure_is_published_once_then_on_hold_until_a_new_container() {
    let mut e = env(Some(Verdict::Failure)).await;
    *e.statuses.0.lock().unwrap() = Some(running(CID, 100, true));
    e.mgr.add_pod(&pod(
        serde_json::json!({"livenessProbe": probe(serde_json::json!({"failureThreshold": 2}))}),
        "Always",
    ));
    secs(1).await;
    // The initial value is published when the worker first sees the instance.
    assert_eq!(drain(&mut e.updates), vec![(ProbeType::Liveness, ProbeResult::Success)]);
    secs(10).await;
    assert_eq!(drain(&mut e.updates), vec![(ProbeType::Liveness, ProbeResult::Failure)]);
    let rt = RuntimePodStatus {
        container_statuses: vec![RtStatus {
            id: "c1".into(),
            runtime_type: "sim".into(),
            name: "c".into(),
            state: ContainerState::Running,
            created_at: Timestamp::now(),
            started_at: None,
            finished_at: None,
            exit_code: 0,
            image: String::new(),
            image_ref: String::new(),
            hash: 0,
            restart_count: 0,
            reason: String::new(),
            message: String::new(),
            sandbox_id: String::new(),
        }],
        ..Default::default()
    };
    let f = e.mgr.probe_failures(&rt);
    assert!(f.liveness.contains_key(CID));
    assert!(f.startup.is_empty());
    // On hold: no more probes for this instance.
    secs(100).await;
    assert_eq!(e.runner.calls(ProbeType::Liveness), 2);
    // A new instance: initial Success again and probing resumes.
    e.runner.set(Some(Verdict::Success));
    *e.statuses.0.lock().unwrap() = Some(running("sim://c2", 100, true));
    secs(10).await;
    assert_eq!(drain(&mut e.updates), vec![(ProbeType::Liveness, ProbeResult::Success)]);
    assert_eq!(e.runner.calls(ProbeType::Liveness), 3);
    // The old instance's result is gone.
    assert_eq!(e.mgr.result(ProbeType::Liveness, CID), None);
}

#[tokio::test(start_paused = true)]
async fn initial_delay_counts_from_the_container_start() {
    let e = env(Some(Verdict::Success)).await;
    *e.statuses.0.lock().unwrap() = Some(running(CID, 0, true));
    e.mgr.add_pod(&pod(
        serde_json::json!({"readinessProbe": probe(serde_json::json!({"initialDelaySeconds": 15}))}),
        "Always",
    ));
    // The wall clock does not move with paused tokio time: the container stays 0 s old.
    secs(60).await;
    assert_eq!(e.runner.calls(ProbeType::Readiness), 0);
    *e.statuses.0.lock().unwrap() = Some(running(CID, 16, true));
    secs(10).await;
    assert_eq!(e.runner.calls(ProbeType::Readiness), 1);
}

#[tokio::test(start_paused = true)]
async fn period_sets_the_cadence_and_a_trigger_probes_at_once() {
    let e = env(Some(Verdict::Failure)).await;
    *e.statuses.0.lock().unwrap() = Some(running(CID, 100, true));
    e.mgr.add_pod(&pod(
        serde_json::json!({"readinessProbe": probe(serde_json::json!({"periodSeconds": 30}))}),
        "Always",
    ));
    secs(95).await;
    // 0, 30, 60, 90.
    assert_eq!(e.runner.calls(ProbeType::Readiness), 4);
    let mut st = running(CID, 100, true);
    st.container_statuses.as_mut().unwrap()[0].container_id = Some(CID.into());
    e.mgr.trigger_unready(UID, &st);
    secs(1).await;
    assert_eq!(e.runner.calls(ProbeType::Readiness), 5);
}

#[tokio::test(start_paused = true)]
async fn startup_gates_liveness_and_readiness() {
    let mut e = env(Some(Verdict::Success)).await;
    *e.statuses.0.lock().unwrap() = Some(running(CID, 100, false));
    e.mgr.add_pod(&pod(
        serde_json::json!({
            "startupProbe": probe(serde_json::json!({})),
            "livenessProbe": probe(serde_json::json!({})),
            "readinessProbe": probe(serde_json::json!({})),
        }),
        "Always",
    ));
    secs(25).await;
    assert_eq!(e.runner.calls(ProbeType::Startup), 3);
    assert_eq!(e.runner.calls(ProbeType::Liveness), 0);
    assert_eq!(e.runner.calls(ProbeType::Readiness), 0);
    let mut got = drain(&mut e.updates);
    got.sort_by_key(|u| u.0);
    assert_eq!(
        got,
        vec![
            (ProbeType::Liveness, ProbeResult::Success),
            (ProbeType::Readiness, ProbeResult::Failure),
            (ProbeType::Startup, ProbeResult::Unknown),
            (ProbeType::Startup, ProbeResult::Success),
        ]
    );
    assert_eq!(e.mgr.startup(CID), Some(true));
    // Once started (the status says so), startup stops and the others run.
    *e.statuses.0.lock().unwrap() = Some(running(CID, 100, true));
    secs(20).await;
    assert_eq!(e.runner.calls(ProbeType::Startup), 3);
    assert_eq!(e.runner.calls(ProbeType::Liveness), 2);
    assert_eq!(e.runner.calls(ProbeType::Readiness), 2);
}

#[tokio::test(start_paused = true)]
async fn errors_are_retried_and_discarded() {
    let mut e = env(None).await;
    *e.statuses.0.lock().unwrap() = Some(running(CID, 100, true));
    e.mgr.add_pod(&pod(
        serde_json::json!({"livenessProbe": probe(serde_json::json!({"failureThreshold": 1}))}),
        "Always",
    ));
    secs(15).await;
    // Two ticks, three tries each, no result beyond the initial one.
    assert_eq!(e.runner.calls(ProbeType::Liveness), 6);
    assert_eq!(drain(&mut e.updates), vec![(ProbeType::Liveness, ProbeResult::Success)]);
    let events = e.events.0.lock().unwrap().clone();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].2, "Liveness probe errored: invalid port number: 0");
}

#[tokio::test(start_paused = true)]
async fn terminated_container_fails_and_stops_the_worker_under_restart_never() {
    let mut e = env(Some(Verdict::Success)).await;
    let p = pod(
        serde_json::json!({"readinessProbe": probe(serde_json::json!({}))}),
        "Never",
    );
    *e.statuses.0.lock().unwrap() = Some(running(CID, 100, true));
    e.mgr.add_pod(&p);
    secs(1).await;
    assert_eq!(
        drain(&mut e.updates),
        vec![
            (ProbeType::Readiness, ProbeResult::Failure),
            (ProbeType::Readiness, ProbeResult::Success)
        ]
    );
    *e.statuses.0.lock().unwrap() = Some(terminated(CID));
    secs(10).await;
    assert!(e.mgr.worker_keys().is_empty());
    // Failure (not running), then the result is dropped with the worker.
    assert_eq!(
        drain(&mut e.updates),
        vec![(ProbeType::Readiness, ProbeResult::Failure)]
    );
    assert_eq!(e.mgr.result(ProbeType::Readiness, CID), None);
    // Later syncs do not start a worker for it again (which would re-publish and re-sync).
    e.mgr.add_pod(&p);
    secs(10).await;
    assert!(e.mgr.worker_keys().is_empty());
    assert!(drain(&mut e.updates).is_empty());
    assert_eq!(e.runner.calls(ProbeType::Readiness), 1);

    // Under Always the worker waits for the restart.
    e.mgr.add_pod(&pod(
        serde_json::json!({"readinessProbe": probe(serde_json::json!({}))}),
        "Always",
    ));
    secs(1).await;
    assert_eq!(e.mgr.worker_keys().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn deleting_pod_sets_liveness_success_and_stops() {
    let mut e = env(Some(Verdict::Failure)).await;
    *e.statuses.0.lock().unwrap() = Some(running(CID, 100, true));
    let mut p = pod(
        serde_json::json!({"livenessProbe": probe(serde_json::json!({}))}),
        "Always",
    );
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()));
    e.mgr.add_pod(&p);
    secs(1).await;
    assert!(e.mgr.worker_keys().is_empty());
    assert_eq!(e.runner.calls(ProbeType::Liveness), 0);
    assert_eq!(drain(&mut e.updates), vec![(ProbeType::Liveness, ProbeResult::Success)]);
}

#[tokio::test(start_paused = true)]
async fn terminal_pod_and_removal_stop_workers() {
    let e = env(Some(Verdict::Success)).await;
    *e.statuses.0.lock().unwrap() = Some(running(CID, 100, true));
    let p = pod(
        serde_json::json!({"livenessProbe": probe(serde_json::json!({})), "readinessProbe": probe(serde_json::json!({}))}),
        "Always",
    );
    e.mgr.add_pod(&p);
    e.mgr.add_pod(&p);
    secs(1).await;
    assert_eq!(e.mgr.worker_keys().len(), 2);
    e.mgr.stop_liveness_and_startup(UID);
    secs(1).await;
    let keys = e.mgr.worker_keys();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].probe_type, ProbeType::Readiness);
    e.mgr.cleanup_pods(&HashSet::from([UID.to_string()]));
    secs(1).await;
    assert_eq!(e.mgr.worker_keys().len(), 1);
    e.mgr.cleanup_pods(&HashSet::new());
    secs(1).await;
    assert!(e.mgr.worker_keys().is_empty());

    e.mgr.add_pod(&p);
    secs(1).await;
    assert_eq!(e.mgr.worker_keys().len(), 2);
    let mut done = running(CID, 100, true);
    done.phase = Some("Succeeded".into());
    *e.statuses.0.lock().unwrap() = Some(done);
    secs(11).await;
    assert!(e.mgr.worker_keys().is_empty());
}

#[tokio::test(start_paused = true)]
async fn probes_without_status_wait() {
    let e = env(Some(Verdict::Success)).await;
    e.mgr.add_pod(&pod(
        serde_json::json!({"readinessProbe": probe(serde_json::json!({}))}),
        "Always",
    ));
    secs(30).await;
    assert_eq!(e.runner.calls(ProbeType::Readiness), 0);
    assert_eq!(e.mgr.worker_keys().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn sidecars_are_probed_and_regular_init_containers_are_not() {
    let e = env(Some(Verdict::Success)).await;
    let p: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "default", "uid": UID},
        "spec": {
            "initContainers": [
                {"name": "sidecar", "image": "i", "restartPolicy": "Always", "readinessProbe": probe(serde_json::json!({}))},
                {"name": "setup", "image": "i", "readinessProbe": probe(serde_json::json!({}))}
            ],
            "containers": [{"name": "c", "image": "i", "startupProbe": probe(serde_json::json!({}))}]
        }
    }))
    .unwrap();
    let mut st = running(CID, 100, false);
    // The sidecar's status lives among the init container statuses.
    let mut side = st.container_statuses.as_ref().unwrap()[0].clone();
    side.name = "sidecar".into();
    side.container_id = Some("sim://side".into());
    side.started = Some(true);
    st.init_container_statuses = Some(vec![side]);
    *e.statuses.0.lock().unwrap() = Some(st);
    e.mgr.add_pod(&p);
    secs(1).await;
    let keys: Vec<(String, ProbeType)> = e
        .mgr
        .worker_keys()
        .into_iter()
        .map(|k| (k.container, k.probe_type))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("c".to_string(), ProbeType::Startup),
            ("sidecar".to_string(), ProbeType::Readiness)
        ]
    );
    assert_eq!(e.runner.calls(ProbeType::Readiness), 1);
    assert_eq!(e.mgr.readiness("sim://side"), Some(true));
}

/// The first probe runs when initialDelaySeconds ends, not at the next period tick after it.
#[tokio::test(start_paused = true)]
async fn first_probe_runs_when_the_initial_delay_ends() {
    let e = env(Some(Verdict::Success)).await;
    *e.statuses.0.lock().unwrap() = Some(running(CID, 12, true));
    e.mgr.add_pod(&pod(
        serde_json::json!({"readinessProbe": probe(serde_json::json!({"initialDelaySeconds": 15, "periodSeconds": 60}))}),
        "Always",
    ));
    secs(1).await;
    assert_eq!(e.runner.calls(ProbeType::Readiness), 0, "inside the initial delay");
    // The wall clock stands still under paused tokio time: age the container by hand.
    *e.statuses.0.lock().unwrap() = Some(running(CID, 16, true));
    // The delay ends 3 s after the first look, 57 s before the next period tick.
    secs(3).await;
    assert_eq!(e.runner.calls(ProbeType::Readiness), 1);
}
