//! Unit tests of the status manager without an API server.

use k8s_openapi::api::core::v1::{Container, ContainerStateRunning, ContainerStateWaiting, PodCondition, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use std::sync::Mutex;

use super::*;
use crate::kubelet::sources::CONFIG_SOURCE_ANNOTATION;

struct Reclaimed(bool);
impl PodDeletionSafety for Reclaimed {
    fn pod_resources_are_reclaimed(&self, _: &Pod, _: &PodStatus) -> bool {
        self.0
    }
}

fn pod(uid: &str, policy: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            uid: Some(uid.into()),
            name: Some(format!("pod-{uid}")),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some(policy.into()),
            containers: vec![Container {
                name: "web".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

fn running() -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..Default::default()
    }
}
fn terminated(code: i32) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn status(phase: &str, state: ContainerState) -> PodStatus {
    PodStatus {
        phase: Some(phase.into()),
        container_statuses: Some(vec![ContainerStatus {
            name: "web".into(),
            state: Some(state),
            ..Default::default()
        }]),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "False".into(),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn manager() -> Arc<StatusManager> {
    StatusManager::new(None, Clock::real(), Arc::new(Reclaimed(true)))
}

fn phase_of(m: &StatusManager, uid: &str) -> Option<String> {
    m.get_pod_status(uid).and_then(|s| s.phase)
}

#[test]
fn validity_check_drops_terminated_to_running_under_never_and_on_failure_success() {
    for (policy, code, allowed) in [
        ("Never", 0, false),
        ("Never", 1, false),
        ("OnFailure", 0, false),
        ("OnFailure", 1, true),
        ("Always", 0, true),
    ] {
        let m = manager();
        let p = pod("u1", policy);
        m.set_pod_status(&p, status("Succeeded", terminated(code)));
        m.set_pod_status(&p, status("Running", running()));
        let want = if allowed { "Running" } else { "Succeeded" };
        assert_eq!(phase_of(&m, "u1").as_deref(), Some(want), "{policy} exit {code}");
    }
    let err = check_container_state_transition(
        &status("Failed", terminated(1)).container_statuses.unwrap(),
        &status("Running", running()).container_statuses.unwrap(),
        "Never",
    );
    assert_eq!(
        err.unwrap_err().to_string(),
        "terminated container web attempted illegal transition to non-terminated state"
    );
}

#[test]
fn unchanged_status_is_not_requeued_and_updates_coalesce() {
    let m = manager();
    let p = pod("u1", "Always");
    m.set_pod_status(&p, status("Running", running()));
    let v1 = m.lock().statuses["u1"].version;
    m.set_pod_status(&p, status("Running", running()));
    assert_eq!(m.lock().statuses["u1"].version, v1, "same status: no new version");

    // A foreign condition alone does not count as a change.
    let mut s = status("Running", running());
    s.conditions.as_mut().unwrap().push(PodCondition {
        type_: "example.com/x".into(),
        status: "True".into(),
        ..Default::default()
    });
    m.set_pod_status(&p, s);
    assert_eq!(m.lock().statuses["u1"].version, v1);

    for i in 0..50 {
        let mut s = status("Running", running());
        s.message = Some(format!("m{i}"));
        m.set_pod_status(&p, s);
    }
    assert_eq!(m.lock().statuses["u1"].version, v1 + 50);
    // One queue entry for the pod however many updates.
    assert_eq!(m.tx.capacity(), STATUS_QUEUE_CAPACITY - 1);
    assert_eq!(m.lock().queued.len(), 1);
}

#[test]
fn set_pod_status_keeps_start_time_and_transition_times_and_normalizes() {
    let m = manager();
    let p = pod("u1", "Always");
    let mut s = status("Pending", ContainerState::default());
    let t0 = jiff::Timestamp::new(1_600_000_000, 123_456_789).unwrap();
    s.start_time = Some(Time(t0));
    m.set_pod_status(&p, s);
    let first = m.get_pod_status("u1").unwrap();
    assert_eq!(
        first.start_time,
        Some(Time(jiff::Timestamp::from_second(1_600_000_000).unwrap()))
    );
    let ltt = first.conditions.as_ref().unwrap()[0].last_transition_time.clone();
    assert!(ltt.is_some());

    let mut s2 = status("Running", running());
    s2.start_time = None;
    m.set_pod_status(&p, s2);
    let second = m.get_pod_status("u1").unwrap();
    assert_eq!(second.start_time, first.start_time);
    assert_eq!(second.conditions.as_ref().unwrap()[0].last_transition_time, ltt);
}

#[test]
fn terminate_pod_marks_unknown_containers() {
    let m = manager();
    let mut p = pod("u1", "Always");
    m.set_pod_status(&p, status("Running", running()));
    p.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    m.terminate_pod(&p);
    let s = m.get_pod_status("u1").unwrap();
    let t = s.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(t.exit_code, 137);
    assert_eq!(t.reason.as_deref(), Some(CONTAINER_STATUS_UNKNOWN));
    assert_eq!(t.message.as_deref(), Some(MSG_UNKNOWN_TERMINATED));
    let v = m.lock().statuses["u1"].version;
    // Forced: a terminated pod's identical status is still queued.
    m.terminate_pod(&p);
    assert_eq!(m.lock().statuses["u1"].version, v + 1);
}

fn waiting(reason: &str) -> ContainerState {
    ContainerState {
        waiting: Some(k8s_openapi::api::core::v1::ContainerStateWaiting {
            reason: Some(reason.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn named(name: &str, state: ContainerState) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        state: Some(state),
        ..Default::default()
    }
}

#[test]
fn terminate_pod_keeps_app_containers_waiting_when_init_failed() {
    // Kubernetes 1.27+ `TerminatePod`: a pod that never initialized keeps its app containers
    // Waiting; of the init containers only those that tried to run are marked.
    let m = manager();
    let mut p = pod("u2", "Never");
    if let Some(spec) = p.spec.as_mut() {
        spec.init_containers = Some(vec![
            Container {
                name: "init1".into(),
                ..Default::default()
            },
            Container {
                name: "init2".into(),
                ..Default::default()
            },
            Container {
                name: "init3".into(),
                ..Default::default()
            },
        ]);
    }
    let mut st = status("Failed", waiting("PodInitializing"));
    st.init_container_statuses = Some(vec![
        named("init1", terminated(0)),
        named("init2", running()),
        named("init3", waiting("PodInitializing")),
    ]);
    m.set_pod_status(&p, st);
    m.terminate_pod(&p);
    let s = m.get_pod_status("u2").unwrap();
    let app = s.container_statuses.unwrap()[0].state.clone().unwrap();
    assert_eq!(app.waiting.and_then(|w| w.reason).as_deref(), Some("PodInitializing"));
    let inits = s.init_container_statuses.unwrap();
    assert_eq!(inits[0].state.clone().unwrap().terminated.unwrap().exit_code, 0);
    let t = inits[1].state.clone().unwrap().terminated.unwrap();
    assert_eq!(t.reason.as_deref(), Some(CONTAINER_STATUS_UNKNOWN));
    assert!(
        inits[2].state.clone().unwrap().waiting.is_some(),
        "never tried to run: stays waiting"
    );
}

#[test]
fn remove_orphaned_statuses_keeps_only_wanted() {
    let m = manager();
    m.set_pod_status(&pod("a", "Always"), status("Running", running()));
    m.set_pod_status(&pod("b", "Always"), status("Running", running()));
    m.remove_orphaned_statuses(&|uid| uid == "a");
    assert!(m.get_pod_status("a").is_some());
    assert!(m.get_pod_status("b").is_none());
}

#[test]
fn status_line_format() {
    let mut s = status("Running", running());
    s.container_statuses.as_mut().unwrap()[0].ready = true;
    s.container_statuses.as_mut().unwrap()[0].restart_count = 2;
    s.container_statuses.as_mut().unwrap().push(ContainerStatus {
        name: "side".into(),
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("CrashLoopBackOff".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        restart_count: 5,
        ..Default::default()
    });
    s.init_container_statuses = Some(vec![ContainerStatus {
        name: "setup".into(),
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 0,
                reason: Some("Completed".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    assert_eq!(
        status_line("kube-system", "web-node1", &s),
        "kube-system/web-node1 phase=Running ready=1/2 restarts=7 init:setup=terminated:Completed(0) web=running \
         side=waiting:CrashLoopBackOff"
    );
    let failed = PodStatus {
        phase: Some("Failed".into()),
        reason: Some("OutOfcpu".into()),
        ..Default::default()
    };
    assert_eq!(
        status_line("default", "p", &failed),
        "default/p phase=Failed ready=0/0 restarts=0 reason=OutOfcpu"
    );
    assert_eq!(state_word(Some(&terminated(1))), "terminated(1)");
}

#[tokio::test(start_paused = true)]
async fn standalone_prints_changes_and_drops_deleted_pods() {
    let m = manager();
    m.set_output(Box::new(Buf::default()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(m.clone().run(shutdown.clone()));
    let mut p = pod("u1", "Never");
    m.set_pod_status(&p, status("Running", running()));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let line = m.lock().printed.get("u1").cloned();
    assert_eq!(
        line.as_deref(),
        Some("default/pod-u1 phase=Running ready=0/1 restarts=0 web=running")
    );
    assert_eq!(m.lock().synced.get("u1"), Some(&1));

    // Deleted and reclaimed: the entry goes away after the sync.
    p.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    m.set_pod_status(&p, status("Failed", terminated(143)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(m.get_pod_status("u1").is_none());
    shutdown.cancel();
    task.await.unwrap();
}

#[test]
fn static_and_mirror_detection() {
    let mut p = pod("u1", "Always");
    assert!(!is_static_pod(&p));
    p.metadata.annotations = Some(
        [
            (CONFIG_SOURCE_ANNOTATION.to_string(), "file".to_string()),
            (CONFIG_HASH_ANNOTATION.to_string(), "h1".to_string()),
        ]
        .into(),
    );
    assert!(is_static_pod(&p));
    let mut mirror = pod("m1", "Always");
    mirror.metadata.annotations = Some([(CONFIG_MIRROR_ANNOTATION.to_string(), "h1".to_string())].into());
    assert!(is_mirror_pod(&mirror));
    assert!(is_mirror_of(&mirror, &p));
    mirror.metadata.annotations = Some([(CONFIG_MIRROR_ANNOTATION.to_string(), "other".to_string())].into());
    assert!(!is_mirror_of(&mirror, &p));
}

#[test]
fn drifted_api_copy_is_reconciled() {
    let m = manager();
    let p = pod("u1", "Always");
    m.set_pod_status(&p, status("Running", running()));
    m.lock().synced.insert("u1".into(), 1);
    assert!(m.needs_sync("u1").is_none(), "synced and nothing observed");

    let mut api = p.clone();
    api.status = m.get_pod_status("u1");
    m.observe_api_pod(&api);
    assert!(m.needs_sync("u1").is_none(), "API copy equals the cache");

    api.status.as_mut().unwrap().phase = Some("Pending".into());
    m.observe_api_pod(&api);
    assert!(m.needs_sync("u1").is_some(), "API copy drifted");

    // A mirror pod is recorded under its static pod's UID.
    let mut mirror = pod("mirror-uid", "Always");
    mirror.metadata.annotations = Some([(CONFIG_MIRROR_ANNOTATION.to_string(), "u1".to_string())].into());
    mirror.status = m.get_pod_status("u1");
    m.observe_api_pod(&mirror);
    assert!(m.needs_sync("u1").is_none());
}

#[test]
fn readiness_and_startup_results_update_conditions() {
    let m = manager();
    let p = pod("u1", "Always");
    let mut s = status("Running", running());
    s.container_statuses.as_mut().unwrap()[0].container_id = Some("sim://c1".into());
    m.set_pod_status(&p, s);
    let v = m.lock().statuses["u1"].version;
    m.set_container_readiness("u1", "sim://c1", true);
    let got = m.get_pod_status("u1").unwrap();
    assert!(got.container_statuses.as_ref().unwrap()[0].ready);
    let ready = got.conditions.iter().flatten().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True");
    let cr = got
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "ContainersReady")
        .unwrap();
    assert_eq!(cr.status, "True");
    assert_eq!(m.lock().statuses["u1"].version, v + 1);

    // Same result again: no new version.
    m.set_container_readiness("u1", "sim://c1", true);
    assert_eq!(m.lock().statuses["u1"].version, v + 1);
    m.set_container_startup("u1", "sim://c1", true);
    assert_eq!(
        m.get_pod_status("u1").unwrap().container_statuses.unwrap()[0].started,
        Some(true)
    );
    // Unknown container or pod: ignored.
    m.set_container_readiness("u1", "sim://nope", false);
    m.set_container_readiness("nope", "sim://c1", false);
    assert_eq!(m.lock().statuses["u1"].version, v + 2);
}

/// A shared buffer standing in for stdout.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl Buf {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn standalone_prints_only_visible_changes() {
    let m = manager();
    let buf = Buf::default();
    m.set_output(Box::new(buf.clone()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(m.clone().run(shutdown.clone()));
    let p = pod("u1", "Always");
    m.set_pod_status(&p, status("Pending", ContainerState::default()));
    tokio::time::sleep(Duration::from_millis(10)).await;
    m.set_pod_status(&p, status("Running", running()));
    tokio::time::sleep(Duration::from_millis(10)).await;
    // A change the line does not show (a message) prints nothing.
    let mut s = status("Running", running());
    s.message = Some("invisible".into());
    m.set_pod_status(&p, s);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        buf.lines(),
        [
            "default/pod-u1 phase=Pending ready=0/1 restarts=0 web=unknown",
            "default/pod-u1 phase=Running ready=0/1 restarts=0 web=running",
        ]
    );
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn many_pods_beyond_the_queue_are_synced_by_the_batch() {
    let m = manager();
    let buf = Buf::default();
    m.set_output(Box::new(buf.clone()));
    let n = STATUS_QUEUE_CAPACITY + 500;
    let pods: Vec<Pod> = (0..n).map(|i| pod(&format!("u{i}"), "Always")).collect();
    // Before the loop runs: the queue fills up and stays bounded; the rest waits for the batch.
    for p in &pods {
        m.set_pod_status(p, status("Running", running()));
    }
    assert_eq!(m.lock().queued.len(), STATUS_QUEUE_CAPACITY);
    // Many more updates of the same pods do not grow the queue.
    for p in &pods {
        let mut s = status("Running", running());
        s.message = Some("again".into());
        m.set_pod_status(p, s);
    }
    assert_eq!(m.lock().queued.len(), STATUS_QUEUE_CAPACITY);

    let shutdown = CancellationToken::new();
    let task = tokio::spawn(m.clone().run(shutdown.clone()));
    tokio::time::sleep(BATCH_SYNC_PERIOD + Duration::from_secs(1)).await;
    {
        let st = m.lock();
        assert_eq!(st.synced.len(), n, "every pod synced");
        assert!(st.synced.values().all(|v| *v == 2), "each with its latest version");
        assert!(st.queued.is_empty());
    }
    assert_eq!(buf.lines().len(), n, "one line per pod");
    shutdown.cancel();
    task.await.unwrap();
}
