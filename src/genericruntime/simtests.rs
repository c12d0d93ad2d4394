//! SyncPod, kill, status and GC against the simulated backend (`backends::sim`): the runtime
//! manager's behaviour end to end, in process, on a fast virtual clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::hash::hash_container;
use super::manager::{ManagerConfig, RuntimeManager};
use super::seam::{cri, Runtime};
use super::types::*;
use crate::backends::sim::{SimConfig, SimRuntime};
use crate::clock::Clock;

/// Virtual seconds pass 200× faster: a 300 s back-off lasts 1.5 s.
const SCALE: f64 = 200.0;
/// For tests that must act *inside* a 10 s back-off window: 1 s of real time, so a loaded
/// machine does not let the window pass before the next sync.
const SLOW_SCALE: f64 = 10.0;

/// (field path, type, reason, message).
type Recorded = (Option<String>, EventType, String, String);

#[derive(Default)]
struct Recorder(Mutex<Vec<Recorded>>);

impl EventSink for Recorder {
    fn pod_event(&self, _: &Pod, field_path: Option<String>, kind: EventType, reason: &str, message: String) {
        self.0
            .lock()
            .unwrap()
            .push((field_path, kind, reason.to_string(), message));
    }
}

impl Recorder {
    fn reasons(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().map(|e| e.2.clone()).collect()
    }
    fn find(&self, reason: &str) -> Vec<Recorded> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.2 == reason)
            .cloned()
            .collect()
    }
}

/// Env from the static `env` values; a container named `bad-config` fails like a missing
/// configmap would.
struct StaticOptions;

#[async_trait::async_trait]
impl RunOptionsProvider for StaticOptions {
    async fn run_container_options(
        &self,
        pod: &Pod,
        container: &Container,
        _: &[String],
    ) -> Result<RunContainerOptions, ConfigError> {
        if container.name == "bad-config" {
            return Err(ConfigError("configmap \"missing\" not found".into()));
        }
        Ok(RunContainerOptions {
            envs: container
                .env
                .iter()
                .flatten()
                .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
                .collect(),
            mounts: vec![],
            hostname: pod.metadata.name.clone().unwrap_or_default(),
        })
    }
}

struct Env {
    dir: tempfile::TempDir,
    sim: Arc<SimRuntime>,
    mgr: RuntimeManager,
    events: Arc<Recorder>,
}

fn setup_with(cfg: SimConfig, scale: f64) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::scaled(scale);
    let sim = SimRuntime::new(cfg, clock, dir.path().join("sim")).unwrap();
    let events = Arc::new(Recorder::default());
    let runtime: Arc<dyn Runtime> = sim.clone();
    let mgr = RuntimeManager::new(
        runtime,
        ManagerConfig {
            runtime_type: "sim".into(),
            pod_logs_dir: dir.path().join("logs"),
            root_dir: dir.path().join("root"),
            cgroup_root: "/kubepods".into(),
            serialize_image_pulls: true,
            node_name: "node-1".into(),
            clock,
        },
        events.clone(),
        Arc::new(StaticOptions),
    );
    Env { dir, sim, mgr, events }
}

fn setup() -> Env {
    setup_with(SimConfig::default(), SCALE)
}

fn setup_slow() -> Env {
    setup_with(SimConfig::default(), SLOW_SCALE)
}

fn pod(name: &str, policy: &str, containers: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"restartPolicy": policy, "terminationGracePeriodSeconds": 30, "containers": containers}
    }))
    .unwrap()
}

fn sh(name: &str, script: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "image": "busybox:1.36", "command": ["sh", "-c", script]})
}

async fn status(env: &Env, p: &Pod) -> PodStatus {
    let m = &p.metadata;
    env.mgr
        .get_pod_status(
            m.uid.as_deref().unwrap(),
            m.name.as_deref().unwrap(),
            m.namespace.as_deref().unwrap(),
        )
        .await
        .unwrap()
}

/// Polls until `f` holds for the pod's status (real-time bound: 5 s).
async fn wait_for(env: &Env, p: &Pod, what: &str, f: impl Fn(&PodStatus) -> bool) -> PodStatus {
    for _ in 0..500 {
        let s = status(env, p).await;
        if f(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}: {:?}", status(env, p).await);
}

fn errors(r: &PodSyncResult) -> Vec<(SyncAction, String, SyncErrorKind)> {
    r.results
        .iter()
        .filter_map(|x| x.error.as_ref().map(|e| (x.action, x.target.clone(), e.0)))
        .collect()
}

fn exited(name: &'static str) -> impl Fn(&PodStatus) -> bool {
    move |s| {
        s.find_container_status(name)
            .is_some_and(|c| c.state == ContainerState::Exited)
    }
}

#[tokio::test]
async fn version_handshake_and_status() {
    let env = setup();
    let v = env.mgr.version().await.unwrap();
    assert_eq!(v.runtime_api_version, "v1");
    let st = env.mgr.runtime_status().await.unwrap();
    assert!(st.conditions.iter().any(|c| c.r#type == "RuntimeReady" && c.status));
}

#[tokio::test]
async fn new_pod_gets_sandbox_and_running_containers() {
    let env = setup();
    let p = pod(
        "web",
        "Always",
        serde_json::json!([sh("a", "sleep 3600"), sh("b", "sleep 3600")]),
    );
    let r = env
        .mgr
        .sync_pod(&p, &status(&env, &p).await, &[], &ProbeFailures::default())
        .await;
    assert!(errors(&r).is_empty(), "{r:?}");
    let s = wait_for(&env, &p, "running", |s| {
        s.container_statuses
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .count()
            == 2
    })
    .await;
    assert_eq!(s.sandbox_statuses.len(), 1);
    assert_eq!(s.ips.len(), 1, "pod IP from the ready sandbox");
    let a = s.find_container_status("a").unwrap();
    assert_eq!(a.hash, hash_container(&p.spec.as_ref().unwrap().containers[0]));
    assert_eq!(a.restart_count, 0);
    assert!(a.container_id().starts_with("sim://"));
    // Sandbox config: metadata, log dir, cgroup parent.
    let sb = &s.sandbox_statuses[0];
    assert_eq!(sb.metadata.as_ref().unwrap().attempt, 0);
    assert!(env.dir.path().join("logs/default_web_uid-web").is_dir());
    assert!(env.dir.path().join("logs/default_web_uid-web/a").is_dir());
    // Events in the kubelet's words, on the container's field path.
    let started = env.events.find("Started");
    assert_eq!(started.len(), 2);
    assert_eq!(started[0].0.as_deref(), Some("spec.containers{a}"));
    assert_eq!(started[0].3, "Started container a");
    assert!(env.events.reasons().contains(&"Created".to_string()));
    assert!(env
        .events
        .find("Pulled")
        .iter()
        .any(|e| e.3.starts_with("Successfully pulled image \"busybox:1.36\" in ")
            || e.3 == "Container image \"busybox:1.36\" already present on machine"));
    // A second sync has nothing to do but record the sandbox config.
    let r = env.mgr.sync_pod(&p, &s, &[], &ProbeFailures::default()).await;
    assert_eq!(r.results.len(), 1, "{r:?}");
    assert_eq!(r.results[0].action, SyncAction::ConfigPodSandbox);
    // GetPods groups by UID.
    let pods = env.mgr.get_pods(false).await.unwrap();
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].containers.len(), 2);
    assert_eq!(pods[0].sandboxes.len(), 1);
}

#[tokio::test]
async fn crash_loop_backoff_after_first_immediate_restart() {
    let env = setup_slow();
    let p = pod("crash", "Always", serde_json::json!([sh("c", "exit 1")]));
    let probes = ProbeFailures::default();
    env.mgr.sync_pod(&p, &status(&env, &p).await, &[], &probes).await;
    let s = wait_for(&env, &p, "first exit", exited("c")).await;
    assert_eq!(s.find_container_status("c").unwrap().exit_code, 1);
    // The first restart is immediate.
    let r = env.mgr.sync_pod(&p, &s, &[], &probes).await;
    assert!(errors(&r).is_empty(), "{r:?}");
    let s = wait_for(&env, &p, "second exit", |s| {
        s.find_container_status("c")
            .is_some_and(|c| c.restart_count == 1 && c.state == ContainerState::Exited)
    })
    .await;
    // The second is in back-off: 10 s (virtual) from that exit.
    let r = env.mgr.sync_pod(&p, &s, &[], &probes).await;
    let errs = errors(&r);
    assert_eq!(
        errs,
        vec![(
            SyncAction::StartContainer,
            "c".to_string(),
            SyncErrorKind::CrashLoopBackOff
        )]
    );
    let msg = &r.first_error().unwrap().error.as_ref().unwrap().1;
    assert_eq!(
        msg,
        "back-off 10s restarting failed container=c pod=crash_default(uid-crash)"
    );
    assert_eq!(env.events.find("BackOff")[0].3, "Back-off restarting failed container");
    let left = env.mgr.crash_loop_remaining(&p, &s).expect("in back-off");
    assert!(left <= Duration::from_secs(10) && !left.is_zero(), "{left:?}");
    // After the back-off window the restart goes through, with restart count 2 and log 2.log.
    env.mgr.config().clock.sleep(Duration::from_secs(11)).await;
    let r = env.mgr.sync_pod(&p, &status(&env, &p).await, &[], &probes).await;
    assert!(errors(&r).is_empty(), "{r:?}");
    wait_for(&env, &p, "third instance", |s| {
        s.find_container_status("c").is_some_and(|c| c.restart_count == 2)
    })
    .await;
    assert!(env.dir.path().join("logs/default_crash_uid-crash/c/2.log").exists());
}

#[tokio::test]
async fn termination_messages_from_file_and_logs() {
    let env = setup();
    let mut spec = sh("file", "echo -n DONE > /dev/termination-log; exit 0");
    spec["terminationMessagePath"] = "/dev/termination-log".into();
    let mut logs = sh("logs", "echo -n DONE; exit 1");
    logs["terminationMessagePolicy"] = "FallbackToLogsOnError".into();
    let mut ok = sh("ok", "echo DONE; exit 0");
    ok["terminationMessagePolicy"] = "FallbackToLogsOnError".into();
    let p = pod("msg", "Never", serde_json::json!([spec, logs, ok]));
    env.mgr
        .sync_pod(&p, &status(&env, &p).await, &[], &ProbeFailures::default())
        .await;
    let s = wait_for(&env, &p, "all exited", |s| {
        s.container_statuses.len() == 3 && s.container_statuses.iter().all(|c| c.state == ContainerState::Exited)
    })
    .await;
    assert_eq!(s.find_container_status("file").unwrap().message, "DONE");
    assert_eq!(s.find_container_status("logs").unwrap().message.trim_end(), "DONE");
    assert_eq!(s.find_container_status("ok").unwrap().message, "");
    // The termination-log file lives under <root>/pods/<uid>/containers/<name>/.
    let dir = env.dir.path().join("root/pods/uid-msg/containers/file");
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1);
}

#[tokio::test]
async fn never_pod_finishes_and_its_sandbox_is_stopped() {
    let env = setup();
    let p = pod("once", "Never", serde_json::json!([sh("c", "exit 0")]));
    let probes = ProbeFailures::default();
    env.mgr.sync_pod(&p, &status(&env, &p).await, &[], &probes).await;
    let s = wait_for(&env, &p, "exit", exited("c")).await;
    let r = env.mgr.sync_pod(&p, &s, &[], &probes).await;
    assert!(
        r.results
            .iter()
            .any(|x| x.action == SyncAction::KillPodSandbox && x.error.is_none()),
        "{r:?}"
    );
    let s = status(&env, &p).await;
    assert_eq!(
        s.sandbox_statuses[0].state,
        cri::PodSandboxState::SandboxNotready as i32
    );
    // Nothing is recreated afterwards.
    let r = env.mgr.sync_pod(&p, &s, &[], &probes).await;
    assert!(
        !r.results.iter().any(|x| x.action == SyncAction::CreatePodSandbox),
        "{r:?}"
    );
}

#[tokio::test]
async fn kill_pod_stops_containers_and_sandboxes() {
    let env = setup();
    let p = pod(
        "victim",
        "Always",
        serde_json::json!([sh("a", "sleep 3600"), sh("b", "trap 'exit 0' TERM; sleep 3600")]),
    );
    env.mgr
        .sync_pod(&p, &status(&env, &p).await, &[], &ProbeFailures::default())
        .await;
    let s = wait_for(&env, &p, "running", |s| {
        s.container_statuses.iter().all(|c| c.state == ContainerState::Running) && s.container_statuses.len() == 2
    })
    .await;
    let r = env.mgr.kill_pod(Some(&p), &s, Some(1)).await;
    assert!(errors(&r).is_empty(), "{r:?}");
    assert_eq!(
        r.results
            .iter()
            .filter(|x| x.action == SyncAction::KillContainer)
            .count(),
        2
    );
    let s = status(&env, &p).await;
    assert!(!s.has_running());
    let codes: Vec<i32> = ["a", "b"]
        .iter()
        .map(|n| s.find_container_status(n).unwrap().exit_code)
        .collect();
    assert_eq!(codes, vec![143, 0]);
    let killing = env.events.find("Killing");
    assert_eq!(killing.len(), 2);
    assert!(killing.iter().any(|e| e.3 == "Stopping container a"));
    // A runtime-only pod (spec unknown) is killed from its labels.
    let p2 = pod("orphan", "Always", serde_json::json!([sh("x", "sleep 3600")]));
    env.mgr
        .sync_pod(&p2, &status(&env, &p2).await, &[], &ProbeFailures::default())
        .await;
    let s2 = wait_for(&env, &p2, "running", |s| {
        s.container_statuses.iter().any(|c| c.state == ContainerState::Running)
    })
    .await;
    let r = env.mgr.kill_pod(None, &s2, None).await;
    assert!(errors(&r).is_empty(), "{r:?}");
    assert!(!status(&env, &p2).await.has_running());
}

#[tokio::test]
async fn init_containers_run_first_in_order() {
    let env = setup();
    let mut p = pod("init", "Always", serde_json::json!([sh("main", "sleep 3600")]));
    p.spec.as_mut().unwrap().init_containers = Some(vec![
        serde_json::from_value(sh("i1", "exit 0")).unwrap(),
        serde_json::from_value(sh("i2", "exit 0")).unwrap(),
    ]);
    let probes = ProbeFailures::default();
    let r = env.mgr.sync_pod(&p, &status(&env, &p).await, &[], &probes).await;
    let started: Vec<_> = r.start_results().map(|x| x.target.clone()).collect();
    assert_eq!(started, vec!["i1"]);
    assert_eq!(
        env.events.find("Started")[0].0.as_deref(),
        Some("spec.initContainers{i1}")
    );
    let s = wait_for(&env, &p, "i1 done", exited("i1")).await;
    let r = env.mgr.sync_pod(&p, &s, &[], &probes).await;
    assert_eq!(
        r.start_results().map(|x| x.target.clone()).collect::<Vec<_>>(),
        vec!["i2"]
    );
    let s = wait_for(&env, &p, "i2 done", exited("i2")).await;
    let r = env.mgr.sync_pod(&p, &s, &[], &probes).await;
    assert_eq!(
        r.start_results().map(|x| x.target.clone()).collect::<Vec<_>>(),
        vec!["main"]
    );
}

#[tokio::test]
async fn failed_init_container_under_never_fails_the_pod() {
    let env = setup();
    let mut p = pod("initfail", "Never", serde_json::json!([sh("main", "sleep 3600")]));
    p.spec.as_mut().unwrap().init_containers = Some(vec![serde_json::from_value(sh("i1", "exit 3")).unwrap()]);
    let probes = ProbeFailures::default();
    env.mgr.sync_pod(&p, &status(&env, &p).await, &[], &probes).await;
    let s = wait_for(&env, &p, "i1 failed", exited("i1")).await;
    let r = env.mgr.sync_pod(&p, &s, &[], &probes).await;
    assert_eq!(r.start_results().count(), 0, "{r:?}");
    assert!(r.results.iter().any(|x| x.action == SyncAction::KillPodSandbox));
}

#[tokio::test]
async fn image_errors_become_waiting_reasons() {
    let env = setup_slow();
    let p = pod(
        "img",
        "Always",
        serde_json::json!([
            {"name": "never", "image": "absent:1", "imagePullPolicy": "Never"},
            {"name": "invalid", "image": "Bad Image"},
            {"name": "unpullable", "image": "registry.invalid/app:1"}
        ]),
    );
    let probes = ProbeFailures::default();
    let r = env.mgr.sync_pod(&p, &status(&env, &p).await, &[], &probes).await;
    let mut errs = errors(&r);
    errs.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        errs,
        vec![
            (
                SyncAction::StartContainer,
                "invalid".into(),
                SyncErrorKind::InvalidImageName
            ),
            (
                SyncAction::StartContainer,
                "never".into(),
                SyncErrorKind::ErrImageNeverPull
            ),
            (
                SyncAction::StartContainer,
                "unpullable".into(),
                SyncErrorKind::ErrImagePull
            ),
        ]
    );
    assert!(env.events.find("Failed").iter().any(|e| e.3 == "Error: ErrImagePull"));
    assert!(env
        .events
        .find("ErrImageNeverPull")
        .iter()
        .any(|e| e.3 == "Container image \"absent:1\" is not present with pull policy of Never"));
    // The next attempt is in image-pull back-off.
    let r = env.mgr.sync_pod(&p, &status(&env, &p).await, &[], &probes).await;
    assert!(errors(&r).contains(&(
        SyncAction::StartContainer,
        "unpullable".into(),
        SyncErrorKind::ImagePullBackOff
    )));
    assert!(env
        .events
        .find("BackOff")
        .iter()
        .any(|e| e.3 == "Back-off pulling image \"registry.invalid/app:1\""));
}

#[tokio::test]
async fn config_errors_and_spec_changes() {
    let env = setup();
    let p = pod(
        "cfg",
        "Always",
        serde_json::json!([sh("bad-config", "sleep 3600"), sh("good", "sleep 3600")]),
    );
    let probes = ProbeFailures::default();
    let r = env.mgr.sync_pod(&p, &status(&env, &p).await, &[], &probes).await;
    let e = r
        .results
        .iter()
        .find(|x| x.target == "bad-config")
        .unwrap()
        .error
        .clone()
        .unwrap();
    assert_eq!(
        e,
        (
            SyncErrorKind::CreateContainerConfigError,
            "configmap \"missing\" not found".into()
        )
    );
    assert!(env
        .events
        .find("Failed")
        .iter()
        .any(|e| e.3 == "Error: configmap \"missing\" not found"));
    let s = wait_for(&env, &p, "good runs", |s| {
        s.find_container_status("good")
            .is_some_and(|c| c.state == ContainerState::Running)
    })
    .await;
    // Changing the spec kills and recreates the running container.
    let mut p2 = p.clone();
    p2.spec.as_mut().unwrap().containers[1].command = Some(vec!["sh".into(), "-c".into(), "sleep 7200".into()]);
    let r = env.mgr.sync_pod(&p2, &s, &[], &probes).await;
    assert!(r
        .results
        .iter()
        .any(|x| x.action == SyncAction::KillContainer && x.target == "good" && x.error.is_none()));
    assert!(env
        .events
        .find("Killing")
        .iter()
        .any(|e| e.3 == "Container good definition changed, will be restarted"));
    wait_for(&env, &p2, "new instance", |s| {
        s.find_container_status("good")
            .is_some_and(|c| c.state == ContainerState::Running && c.restart_count == 1)
    })
    .await;
}

#[tokio::test]
async fn env_expansion_reaches_the_container() {
    let env = setup();
    let p = pod(
        "expand",
        "Never",
        serde_json::json!([{"name": "c", "image": "busybox:1.36", "env": [{"name": "WHO", "value": "world"}],
                            "command": ["sh", "-c"], "args": ["echo hello $(WHO)"]}]),
    );
    env.mgr
        .sync_pod(&p, &status(&env, &p).await, &[], &ProbeFailures::default())
        .await;
    wait_for(&env, &p, "exit", exited("c")).await;
    let log = std::fs::read_to_string(env.dir.path().join("logs/default_expand_uid-expand/c/0.log")).unwrap();
    assert!(log.contains("hello world"), "{log}");
}

#[tokio::test]
async fn garbage_collection_keeps_one_dead_container_and_clears_removed_pods() {
    let env = setup();
    let p = pod("gc", "Always", serde_json::json!([sh("c", "exit 0")]));
    let probes = ProbeFailures::default();
    env.mgr.sync_pod(&p, &status(&env, &p).await, &[], &probes).await;
    for n in 0..3 {
        let s = wait_for(&env, &p, "exit", move |s| {
            s.find_container_status("c")
                .is_some_and(|c| c.state == ContainerState::Exited && c.restart_count == n)
        })
        .await;
        env.mgr.config().clock.sleep(Duration::from_secs(310)).await;
        env.mgr.sync_pod(&p, &s, &[], &probes).await;
    }
    let s = wait_for(&env, &p, "4 instances", |s| s.container_statuses.len() == 4).await;
    // Eager deletion keeps the newest exited instance.
    env.mgr.remove_exited_duplicates(&s, 1).await;
    let s = status(&env, &p).await;
    assert!(
        s.container_statuses
            .iter()
            .filter(|c| c.state == ContainerState::Exited)
            .count()
            <= 1
    );
    env.mgr.garbage_collect(&|_| false, true).await.unwrap();
    assert!(
        !status(&env, &p).await.sandbox_statuses.is_empty(),
        "live pod keeps its sandbox"
    );
    // The pod is gone: everything of it goes.
    let s = status(&env, &p).await;
    env.mgr.kill_pod(Some(&p), &s, Some(0)).await;
    env.mgr.garbage_collect(&|uid| uid == "uid-gc", true).await.unwrap();
    let s = status(&env, &p).await;
    assert!(s.container_statuses.is_empty(), "{s:?}");
    assert!(s.sandbox_statuses.is_empty(), "{s:?}");
    assert!(!env.dir.path().join("logs/default_gc_uid-gc").exists());
    env.mgr.backoff_gc();
    drop(env.sim);
}

/// Records hook runs; postStart of a container named `hook-fails` fails.
#[derive(Default)]
struct Hooks(Mutex<Vec<String>>);

#[async_trait::async_trait]
impl super::hooks::HookRunner for Hooks {
    async fn run(
        &self,
        _: &Pod,
        container: &Container,
        _: &str,
        handler: &k8s_openapi::api::core::v1::LifecycleHandler,
    ) -> Result<(), String> {
        let cmd = handler
            .exec
            .as_ref()
            .and_then(|e| e.command.clone())
            .unwrap_or_default()
            .join(" ");
        self.0.lock().unwrap().push(format!("{}: {cmd}", container.name));
        if container.name == "hook-fails" {
            return Err("Exec lifecycle hook ([false]) for Container \"hook-fails\" failed".into());
        }
        Ok(())
    }
}

#[tokio::test]
async fn lifecycle_hooks_go_through_the_seam() {
    let mut env = setup();
    let hooks = Arc::new(Hooks::default());
    let cfg = env.mgr.config().clone();
    let placeholder = RuntimeManager::new(env.sim.clone(), cfg, Arc::new(NoEvents), Arc::new(StaticOptions));
    let mgr = std::mem::replace(&mut env.mgr, placeholder);
    env.mgr = mgr.with_hook_runner(hooks.clone());
    let lifecycle = serde_json::json!({"postStart": {"exec": {"command": ["true"]}},
                                       "preStop": {"exec": {"command": ["sleep", "1"]}}});
    let mut ok = sh("hooked", "sleep 3600");
    ok["lifecycle"] = lifecycle.clone();
    let mut bad = sh("hook-fails", "sleep 3600");
    bad["lifecycle"] = serde_json::json!({"postStart": {"exec": {"command": ["false"]}}});
    let p = pod("hooks", "Always", serde_json::json!([ok, bad]));
    let r = env
        .mgr
        .sync_pod(&p, &status(&env, &p).await, &[], &ProbeFailures::default())
        .await;
    assert_eq!(
        errors(&r),
        vec![(
            SyncAction::StartContainer,
            "hook-fails".into(),
            SyncErrorKind::PostStartHookError
        )]
    );
    assert!(env
        .events
        .find("FailedPostStartHook")
        .iter()
        .any(|e| e.3.contains("hook-fails")));
    // The failed container was killed with the hook's reason.
    assert!(env.events.find("Killing").iter().any(|e| e.3 == "FailedPostStartHook"));
    let s = wait_for(&env, &p, "hooked runs", |s| {
        s.find_container_status("hooked")
            .is_some_and(|c| c.state == ContainerState::Running)
    })
    .await;
    // preStop runs before the stop.
    env.mgr.kill_pod(Some(&p), &s, None).await;
    let runs = hooks.0.lock().unwrap().clone();
    assert!(runs.contains(&"hooked: true".to_string()), "{runs:?}");
    assert!(runs.contains(&"hooked: sleep 1".to_string()), "{runs:?}");
}

#[tokio::test]
async fn liveness_failure_restarts_and_legacy_symlinks_follow_containers() {
    let env = setup();
    let p = pod("live", "Always", serde_json::json!([sh("c", "sleep 3600")]));
    env.mgr
        .sync_pod(&p, &status(&env, &p).await, &[], &ProbeFailures::default())
        .await;
    let s = wait_for(&env, &p, "running", |s| {
        s.find_container_status("c")
            .is_some_and(|c| c.state == ContainerState::Running)
    })
    .await;
    let first = s.find_container_status("c").unwrap().id.clone();
    let link = super::container::legacy_log_symlink(&env.mgr.legacy_log_dir(), "live", "default", "c", &first);
    assert!(std::fs::symlink_metadata(&link).is_ok(), "legacy symlink {link:?}");
    let mut probes = ProbeFailures::default();
    probes.liveness.insert(first.clone(), ());
    let r = env.mgr.sync_pod(&p, &s, &[], &probes).await;
    assert!(errors(&r).is_empty(), "{r:?}");
    assert!(env
        .events
        .find("Killing")
        .iter()
        .any(|e| e.3 == "Container c failed liveness probe, will be restarted"));
    let s = wait_for(&env, &p, "restarted", |s| {
        s.find_container_status("c")
            .is_some_and(|c| c.state == ContainerState::Running && c.restart_count == 1)
    })
    .await;
    // Removing the dead instance removes its log and its symlink.
    env.mgr.remove_exited_duplicates(&s, 0).await;
    assert!(std::fs::symlink_metadata(&link).is_err());
    assert!(!env.dir.path().join("logs/default_live_uid-live/c/0.log").exists());
}

#[tokio::test]
async fn failing_init_container_is_retried_and_pruned() {
    let env = setup();
    let mut p = pod("prune", "Always", serde_json::json!([sh("main", "sleep 3600")]));
    p.spec.as_mut().unwrap().init_containers = Some(vec![serde_json::from_value(sh("i", "exit 1")).unwrap()]);
    let probes = ProbeFailures::default();
    env.mgr.sync_pod(&p, &status(&env, &p).await, &[], &probes).await;
    for n in 0..3 {
        let s = wait_for(&env, &p, "init exit", move |s| {
            s.find_container_status("i")
                .is_some_and(|c| c.state == ContainerState::Exited && c.restart_count == n)
        })
        .await;
        env.mgr.config().clock.sleep(Duration::from_secs(310)).await;
        let r = env.mgr.sync_pod(&p, &s, &[], &probes).await;
        assert_eq!(
            r.start_results().map(|x| x.target.clone()).collect::<Vec<_>>(),
            vec!["i"]
        );
    }
    // Every sync keeps only the newest exited instance before starting the next.
    let s = wait_for(&env, &p, "fourth instance", |s| {
        s.find_container_status("i").is_some_and(|c| c.restart_count == 3)
    })
    .await;
    assert!(s.container_statuses_named("i").count() <= 2, "{s:?}");
}

#[tokio::test]
async fn sandbox_creation_failure_is_reported() {
    let env = setup();
    let p = pod("nosb", "Always", serde_json::json!([sh("c", "sleep 3600")]));
    let before = status(&env, &p).await;
    env.sim.set_config(SimConfig {
        unavailable: true,
        ..SimConfig::default()
    });
    let r = env.mgr.sync_pod(&p, &before, &[], &ProbeFailures::default()).await;
    assert_eq!(
        errors(&r),
        vec![(
            SyncAction::CreatePodSandbox,
            "nosb_default(uid-nosb)".into(),
            SyncErrorKind::CreatePodSandboxError
        )]
    );
    assert!(env.events.find("FailedCreatePodSandBox")[0]
        .3
        .starts_with("Failed to create pod sandbox: "));
    assert!(env.mgr.version().await.is_err());
}

#[tokio::test]
async fn unknown_state_containers_are_killed_before_restart_and_gc() {
    let env = setup();
    let p = pod("unk", "Always", serde_json::json!([sh("flaky-c", "sleep 3600")]));
    env.mgr
        .sync_pod(&p, &status(&env, &p).await, &[], &ProbeFailures::default())
        .await;
    wait_for(&env, &p, "running", |s| {
        s.find_container_status("flaky-c")
            .is_some_and(|c| c.state == ContainerState::Running)
    })
    .await;
    env.sim.set_config(SimConfig {
        unknown_containers: vec!["flaky-*".into()],
        ..SimConfig::default()
    });
    let s = status(&env, &p).await;
    assert_eq!(
        s.find_container_status("flaky-c").unwrap().state,
        ContainerState::Unknown
    );
    let r = env.mgr.sync_pod(&p, &s, &[], &ProbeFailures::default()).await;
    assert!(errors(&r).is_empty(), "{r:?}");
    let kinds: Vec<SyncAction> = r.results.iter().map(|x| x.action).collect();
    assert_eq!(
        kinds,
        vec![
            SyncAction::KillContainer,
            SyncAction::ConfigPodSandbox,
            SyncAction::StartContainer
        ]
    );
    assert!(env
        .events
        .find("Killing")
        .iter()
        .any(|e| e.3 == "Container is in \"unknown\" state, try killing it before restart"));
    // GC of a removed pod stops unknown-state containers before removing them.
    let s = status(&env, &p).await;
    env.mgr.kill_pod(Some(&p), &s, Some(0)).await;
    env.mgr.garbage_collect(&|_| true, true).await.unwrap();
    assert!(status(&env, &p).await.container_statuses.is_empty());
}

#[tokio::test]
async fn sandbox_config_dns_ports_and_linux() {
    let mut env = setup();
    let resolv = env.dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 192.0.2.53\nsearch corp.example\noptions ndots:1\n").unwrap();
    let dns = super::sandbox::DnsSettings {
        cluster_dns: vec![],
        cluster_domain: "cluster.local".into(),
        resolv_conf: resolv.clone(),
    };
    let cfg = env.mgr.config().clone();
    let placeholder = RuntimeManager::new(env.sim.clone(), cfg, Arc::new(NoEvents), Arc::new(StaticOptions));
    let mgr = std::mem::replace(&mut env.mgr, placeholder);
    env.mgr = mgr.with_dns(dns.clone());
    let mut p = pod(
        "dns",
        "Always",
        serde_json::json!([{"name": "c", "image": "busybox:1.36",
        "ports": [{"containerPort": 80, "hostPort": 8080}]}]),
    );
    p.spec.as_mut().unwrap().dns_config = Some(
        serde_json::from_value(serde_json::json!({
        "nameservers": ["192.0.2.54"], "options": [{"name": "ndots", "value": "3"}]}))
        .unwrap(),
    );
    // ClusterFirst without clusterDNS: the host's resolv.conf plus a MissingClusterDNS warning.
    let c = env.mgr.generate_sandbox_config(&p, 2).unwrap();
    let d = c.dns_config.clone().unwrap();
    assert_eq!(d.servers, vec!["192.0.2.53", "192.0.2.54"]);
    assert_eq!(d.searches, vec!["corp.example"]);
    assert_eq!(d.options, vec!["ndots:3"]);
    assert_eq!(env.events.find("MissingClusterDNS").len(), 1);
    assert_eq!(c.metadata.as_ref().unwrap().attempt, 2);
    assert_eq!(c.hostname, "dns");
    assert_eq!(c.port_mappings.len(), 1);
    assert!(c.log_directory.ends_with("logs/default_dns_uid-dns"));
    let linux = c.linux.unwrap();
    assert_eq!(linux.cgroup_parent, "/kubepods/poduid-dns");
    let ns = linux.security_context.unwrap().namespace_options.unwrap();
    assert_eq!(ns.network, cri::NamespaceMode::Pod as i32);
    // With clusterDNS: the cluster's servers and search path.
    let cfg = env.mgr.config().clone();
    let placeholder = RuntimeManager::new(env.sim.clone(), cfg, Arc::new(NoEvents), Arc::new(StaticOptions));
    let mgr = std::mem::replace(&mut env.mgr, placeholder);
    env.mgr = mgr.with_dns(super::sandbox::DnsSettings {
        cluster_dns: vec!["10.96.0.10".into()],
        ..dns
    });
    p.spec.as_mut().unwrap().dns_config = None;
    let d = env.mgr.generate_sandbox_config(&p, 0).unwrap().dns_config.unwrap();
    assert_eq!(d.servers, vec!["10.96.0.10"]);
    assert_eq!(
        d.searches,
        vec![
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
            "corp.example"
        ]
    );
    assert_eq!(d.options, vec!["ndots:5"]);
    // Host network: no hostname, NODE network namespace.
    p.spec.as_mut().unwrap().host_network = Some(true);
    let c = env.mgr.generate_sandbox_config(&p, 0).unwrap();
    assert_eq!(c.hostname, "");
    let ns = c.linux.unwrap().security_context.unwrap().namespace_options.unwrap();
    assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
}

#[tokio::test]
async fn run_as_non_root_with_a_root_image_is_a_config_error() {
    let env = setup();
    let mut c = sh("c", "sleep 3600");
    c["securityContext"] = serde_json::json!({"runAsNonRoot": true});
    let p = pod("nonroot", "Always", serde_json::json!([c]));
    let r = env
        .mgr
        .sync_pod(&p, &status(&env, &p).await, &[], &ProbeFailures::default())
        .await;
    let e = r.first_error().unwrap().error.clone().unwrap();
    assert_eq!(
        e,
        (
            SyncErrorKind::CreateContainerConfigError,
            "container has runAsNonRoot and image will run as root (pod: \"nonroot_default(uid-nonroot)\", container: c)"
                .into()
        )
    );
}

/// The simulated runtime claiming an older CRI API (everything else passes through).
struct OldApi(Arc<SimRuntime>);

type R<T> = super::seam::Result<T>;

#[async_trait::async_trait]
impl super::seam::RuntimeService for OldApi {
    async fn version(&self, req: cri::VersionRequest) -> R<cri::VersionResponse> {
        let mut v = self.0.version(req).await?;
        v.runtime_api_version = "v1alpha2".into();
        Ok(v)
    }
    async fn status(&self, req: cri::StatusRequest) -> R<cri::StatusResponse> {
        self.0.status(req).await
    }
    async fn run_pod_sandbox(&self, req: cri::RunPodSandboxRequest) -> R<cri::RunPodSandboxResponse> {
        self.0.run_pod_sandbox(req).await
    }
    async fn stop_pod_sandbox(&self, req: cri::StopPodSandboxRequest) -> R<cri::StopPodSandboxResponse> {
        self.0.stop_pod_sandbox(req).await
    }
    async fn remove_pod_sandbox(&self, req: cri::RemovePodSandboxRequest) -> R<cri::RemovePodSandboxResponse> {
        self.0.remove_pod_sandbox(req).await
    }
    async fn pod_sandbox_status(&self, req: cri::PodSandboxStatusRequest) -> R<cri::PodSandboxStatusResponse> {
        self.0.pod_sandbox_status(req).await
    }
    async fn list_pod_sandbox(&self, req: cri::ListPodSandboxRequest) -> R<cri::ListPodSandboxResponse> {
        self.0.list_pod_sandbox(req).await
    }
    async fn create_container(&self, req: cri::CreateContainerRequest) -> R<cri::CreateContainerResponse> {
        self.0.create_container(req).await
    }
    async fn start_container(&self, req: cri::StartContainerRequest) -> R<cri::StartContainerResponse> {
        self.0.start_container(req).await
    }
    async fn stop_container(&self, req: cri::StopContainerRequest) -> R<cri::StopContainerResponse> {
        self.0.stop_container(req).await
    }
    async fn remove_container(&self, req: cri::RemoveContainerRequest) -> R<cri::RemoveContainerResponse> {
        self.0.remove_container(req).await
    }
    async fn list_containers(&self, req: cri::ListContainersRequest) -> R<cri::ListContainersResponse> {
        self.0.list_containers(req).await
    }
    async fn container_status(&self, req: cri::ContainerStatusRequest) -> R<cri::ContainerStatusResponse> {
        self.0.container_status(req).await
    }
    async fn exec_sync(&self, req: cri::ExecSyncRequest) -> R<cri::ExecSyncResponse> {
        self.0.exec_sync(req).await
    }
    async fn reopen_container_log(&self, req: cri::ReopenContainerLogRequest) -> R<cri::ReopenContainerLogResponse> {
        self.0.reopen_container_log(req).await
    }
    async fn exec(&self, req: cri::ExecRequest) -> R<cri::ExecResponse> {
        self.0.exec(req).await
    }
    async fn attach(&self, req: cri::AttachRequest) -> R<cri::AttachResponse> {
        self.0.attach(req).await
    }
    async fn port_forward(&self, req: cri::PortForwardRequest) -> R<cri::PortForwardResponse> {
        self.0.port_forward(req).await
    }
    async fn list_container_stats(&self, req: cri::ListContainerStatsRequest) -> R<cri::ListContainerStatsResponse> {
        self.0.list_container_stats(req).await
    }
    async fn list_pod_sandbox_stats(
        &self,
        req: cri::ListPodSandboxStatsRequest,
    ) -> R<cri::ListPodSandboxStatsResponse> {
        self.0.list_pod_sandbox_stats(req).await
    }
}

#[async_trait::async_trait]
impl super::seam::ImageService for OldApi {
    async fn list_images(&self, req: cri::ListImagesRequest) -> R<cri::ListImagesResponse> {
        self.0.list_images(req).await
    }
    async fn image_status(&self, req: cri::ImageStatusRequest) -> R<cri::ImageStatusResponse> {
        self.0.image_status(req).await
    }
    async fn pull_image(&self, req: cri::PullImageRequest) -> R<cri::PullImageResponse> {
        self.0.pull_image(req).await
    }
    async fn remove_image(&self, req: cri::RemoveImageRequest) -> R<cri::RemoveImageResponse> {
        self.0.remove_image(req).await
    }
    async fn image_fs_info(&self, req: cri::ImageFsInfoRequest) -> R<cri::ImageFsInfoResponse> {
        self.0.image_fs_info(req).await
    }
}

#[tokio::test]
async fn version_handshake_refuses_other_api_versions() {
    let env = setup();
    let old = RuntimeManager::new(
        Arc::new(OldApi(env.sim.clone())),
        env.mgr.config().clone(),
        Arc::new(NoEvents),
        Arc::new(StaticOptions),
    );
    match old.version().await {
        Err(super::Error::UnsupportedApiVersion { got }) => assert_eq!(got, "v1alpha2"),
        other => panic!("expected UnsupportedApiVersion, got {other:?}"),
    }
}
