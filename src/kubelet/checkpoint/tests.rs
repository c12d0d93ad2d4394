use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerState, ContainerStateRunning, ContainerStatus, Pod, PodStatus, Secret, Service,
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::gate::{GateOptions, ServicesLookup, StatusLookup, WRITE_PERIOD};
use super::*;
use crate::clock::Clock;
use crate::kubelet::sources::{Source, SourceUpdate, CONFIG_MIRROR_ANNOTATION};

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {
            "nodeName": "n1",
            "containers": [{
                "name": "c", "image": "busybox",
                "env": [
                    {"name": "A", "valueFrom": {"secretKeyRef": {"name": format!("{name}-env-secret"), "key": "k"}}},
                    {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}
                ],
                "envFrom": [{"secretRef": {"name": "from-secret"}}, {"configMapRef": {"name": "from-cm"}}]
            }],
            "initContainers": [{"name": "i", "image": "busybox",
                "env": [{"name": "C", "valueFrom": {"configMapKeyRef": {"name": "init-cm", "key": "k"}}}]}],
            "volumes": [
                {"name": "cfg", "configMap": {"name": format!("{name}-cm")}},
                {"name": "sec", "secret": {"secretName": "vol-secret"}},
                {"name": "proj", "projected": {"sources": [
                    {"configMap": {"name": "kube-root-ca.crt"}},
                    {"secret": {"name": "proj-secret"}},
                    {"serviceAccountToken": {"path": "token"}}
                ]}}
            ]
        }
    }))
    .unwrap()
}

fn running(ready: bool) -> PodStatus {
    PodStatus {
        phase: Some("Running".into()),
        container_statuses: Some(vec![ContainerStatus {
            name: "c".into(),
            ready,
            restart_count: 2,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn cm(ns: &str, name: &str) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.namespace = Some(ns.into());
    c.metadata.name = Some(name.into());
    c.data = Some(BTreeMap::from([("k".to_string(), format!("value of {name}"))]));
    c
}

fn secret(ns: &str, name: &str) -> Secret {
    let mut s = Secret::default();
    s.metadata.namespace = Some(ns.into());
    s.metadata.name = Some(name.into());
    s.string_data = Some(BTreeMap::from([("k".to_string(), "hunter2".to_string())]));
    s
}

fn checkpoint_of(pods: Vec<Pod>) -> Checkpoint {
    Checkpoint {
        version: CHECKPOINT_VERSION,
        node_name: "n1".into(),
        pods,
        ..Default::default()
    }
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn round_trip_keeps_pods_status_and_objects() {
    let dir = tempfile::tempdir().unwrap();
    let path = checkpoint_path(dir.path());
    let mut p = pod("a");
    p.status = Some(running(true));
    let mut cp = checkpoint_of(vec![p]);
    cp.config_maps = vec![cm("default", "a-cm")];
    cp.secrets = vec![secret("default", "vol-secret")];
    cp.tokens = vec![TokenEntry {
        pod_uid: "uid-a".into(),
        service_account: "default".into(),
        audience: String::new(),
        token: "tok".into(),
    }];
    cp.services = Some(vec![Service::default()]);
    save(&path, &cp).unwrap();
    assert_eq!(load(&path).unwrap(), Some(cp));
}

#[test]
fn missing_corrupt_and_foreign_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let path = checkpoint_path(dir.path());
    assert_eq!(load(&path).unwrap(), None, "no checkpoint yet");
    write_atomic(&path, b"{\"version\":1,\"nodeName\":\"n1\",\"pods\":[").unwrap();
    assert!(matches!(load(&path), Err(CheckpointError::Corrupt { .. })));
    write_atomic(&path, b"{\"version\":7,\"nodeName\":\"n1\",\"pods\":[]}").unwrap();
    assert!(matches!(load(&path), Err(CheckpointError::Version { got: 7, .. })));
}

#[test]
fn atomic_write_replaces_whole_files_private_to_root() {
    let dir = tempfile::tempdir().unwrap();
    let path = checkpoint_path(&dir.path().join("root"));
    write_atomic(&path, b"first").unwrap();
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(
        mode_of(path.parent().unwrap()),
        0o700,
        "the directory is created private"
    );
    // A temp file left behind by a crash mid-write, with looser bits: it is overwritten, and
    // the result is still 0600 and complete.
    let tmp = path.with_file_name(format!("{CHECKPOINT_FILE}.tmp"));
    std::fs::write(&tmp, b"half a checkpo").unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_atomic(&path, b"second").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second");
    assert_eq!(mode_of(&path), 0o600);
    assert!(!tmp.exists(), "the temp file is renamed, not left behind");
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from(CHECKPOINT_FILE)]);
    // A failed write leaves the previous checkpoint intact.
    let ro = tempfile::tempdir().unwrap();
    let ro_path = ro.path().join(CHECKPOINT_FILE);
    write_atomic(&ro_path, b"kept").unwrap();
    std::fs::set_permissions(ro.path(), std::fs::Permissions::from_mode(0o500)).unwrap();
    let failed = write_atomic(&ro_path, b"lost");
    std::fs::set_permissions(ro.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    if nix::unistd::geteuid().is_root() {
        // root writes anyway; the point is only that the file is whole.
        assert!(matches!(std::fs::read(&ro_path).unwrap().as_slice(), b"kept" | b"lost"));
    } else {
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&ro_path).unwrap(), b"kept");
    }
}

#[test]
fn references_cover_volumes_projected_sources_and_env() {
    let mut r = References::default();
    r.add_pod(&pod("a"));
    let names = |s: &std::collections::BTreeSet<(String, String)>| -> Vec<String> {
        s.iter().map(|(ns, n)| format!("{ns}/{n}")).collect()
    };
    assert_eq!(
        names(&r.config_maps),
        [
            "default/a-cm",
            "default/env-cm",
            "default/from-cm",
            "default/init-cm",
            "default/kube-root-ca.crt"
        ]
    );
    assert_eq!(
        names(&r.secrets),
        [
            "default/a-env-secret",
            "default/from-secret",
            "default/proj-secret",
            "default/vol-secret"
        ]
    );
}

#[test]
fn objects_are_kept_only_with_checkpoint_secrets() {
    for enabled in [false, true] {
        let store = OfflineStore::new(enabled);
        store.record_config_map(&cm("default", "a-cm"));
        store.record_secret(&secret("default", "vol-secret"));
        store.record_token("uid-a", "default", "", "tok");
        store.record_services(vec![Service::default()]);
        let mut cp = checkpoint_of(vec![pod("a")]);
        store.fill(&mut cp);
        let text = serde_json::to_string(&cp).unwrap();
        if enabled {
            assert_eq!(cp.config_maps.len(), 1);
            assert_eq!(cp.secrets.len(), 1);
            assert_eq!(cp.tokens.len(), 1);
            assert!(cp.services.is_some());
            assert_eq!(
                store.secret("default", "vol-secret"),
                Some(secret("default", "vol-secret"))
            );
            assert_eq!(store.token("uid-a", "default", "").as_deref(), Some("tok"));
        } else {
            assert!(!text.contains("hunter2") && !text.contains("tok\""), "{text}");
            assert!(cp.config_maps.is_empty() && cp.secrets.is_empty() && cp.tokens.is_empty());
            assert!(cp.services.is_none());
            assert_eq!(store.secret("default", "vol-secret"), None, "nothing recorded");
            assert_eq!(store.config_map("default", "a-cm"), None);
        }
    }
}

#[test]
fn objects_of_deleted_pods_are_forgotten() {
    let store = OfflineStore::new(true);
    store.record_config_map(&cm("default", "a-cm"));
    store.record_config_map(&cm("default", "b-cm"));
    store.record_secret(&secret("default", "b-env-secret"));
    store.record_secret(&secret("other", "vol-secret"));
    store.record_token("uid-a", "default", "", "tok-a");
    store.record_token("uid-b", "default", "", "tok-b");
    let mut cp = checkpoint_of(vec![pod("a")]);
    store.fill(&mut cp);
    let cms: Vec<_> = cp
        .config_maps
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(cms, ["a-cm"]);
    assert!(cp.secrets.is_empty(), "b's secret and another namespace's are not a's");
    assert_eq!(cp.tokens.len(), 1);
    assert_eq!(cp.tokens[0].pod_uid, "uid-a");
    assert_eq!(store.config_map("default", "b-cm"), None);
}

#[test]
fn offline_store_loads_a_checkpoint_only_when_enabled() {
    let mut cp = checkpoint_of(vec![pod("a")]);
    cp.config_maps = vec![cm("default", "a-cm")];
    let off = OfflineStore::new(false);
    off.load(&cp);
    assert_eq!(off.config_map("default", "a-cm"), None);
    let on = OfflineStore::new(true);
    on.load(&cp);
    assert_eq!(on.config_map("default", "a-cm"), Some(cm("default", "a-cm")));
}

#[test]
fn unreachable_means_no_answer_about_the_object() {
    let api = |code: u16| {
        kube::Error::Api(Box::new(
            serde_json::from_value(json!({"status": "Failure", "code": code, "message": "x", "reason": "x"})).unwrap(),
        ))
    };
    assert!(offline::api_unreachable(&api(503)));
    assert!(offline::api_unreachable(&api(500)));
    assert!(!offline::api_unreachable(&api(403)), "forbidden is the API's answer");
    assert!(!offline::api_unreachable(&api(404)));
}

#[test]
fn status_lines_are_the_standalone_lines() {
    let mut a = pod("a");
    a.status = Some(running(true));
    let b = pod("b");
    let lines = status_lines(&checkpoint_of(vec![b, a]));
    assert_eq!(
        lines,
        [
            "default/a phase=Running ready=1/1 restarts=2 c=running",
            "default/b phase=Unknown ready=0/0 restarts=0"
        ]
    );
}

struct GateRig {
    api_tx: mpsc::Sender<SourceUpdate>,
    out_rx: mpsc::Receiver<SourceUpdate>,
    path: PathBuf,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn gate(restore: Option<Checkpoint>, status: StatusLookup, secrets: bool) -> GateRig {
    let dir = tempfile::tempdir().unwrap();
    let path = checkpoint_path(dir.path());
    let (api_tx, api_rx) = mpsc::channel(16);
    let (out_tx, out_rx) = mpsc::channel(16);
    let shutdown = CancellationToken::new();
    let services: ServicesLookup = Arc::new(|| None);
    let task = spawn_gate(
        GateOptions {
            path: path.clone(),
            node_name: "n1".into(),
            clock: Clock::scaled(1.0),
            restore,
            restore_after: RESTORE_AFTER,
            offline: Arc::new(OfflineStore::new(secrets)),
            status,
            services,
        },
        api_rx,
        out_tx,
        shutdown.clone(),
    );
    GateRig {
        api_tx,
        out_rx,
        path,
        shutdown,
        task,
        _dir: dir,
    }
}

fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter().map(|p| p.metadata.name.clone().unwrap()).collect()
}

async fn next(rx: &mut mpsc::Receiver<SourceUpdate>) -> SourceUpdate {
    tokio::time::timeout(Duration::from_secs(600), rx.recv())
        .await
        .expect("an update")
        .expect("channel open")
}

#[tokio::test(start_paused = true)]
async fn checkpoint_is_restored_when_the_api_does_not_list_then_the_api_wins() {
    let mut a = pod("a");
    a.status = Some(running(true));
    let mut rig = gate(Some(checkpoint_of(vec![a, pod("b")])), Arc::new(|_| None), false);
    let started = tokio::time::Instant::now();
    match next(&mut rig.out_rx).await {
        SourceUpdate::Snapshot {
            source: Source::Api,
            pods,
        } => {
            assert_eq!(names(&pods), ["a", "b"]);
            assert_eq!(pods[0].status, Some(running(true)), "the local status comes along");
        }
        other => panic!("expected the restored snapshot, got {other:?}"),
    }
    assert!(started.elapsed() >= RESTORE_AFTER, "the API gets its chance first");
    // The API returns: b was deleted meanwhile. Its list is forwarded as is (the pod manager
    // turns the missing b into a removal) and the checkpoint follows it.
    rig.api_tx
        .send(SourceUpdate::Snapshot {
            source: Source::Api,
            pods: vec![pod("a")],
        })
        .await
        .unwrap();
    match next(&mut rig.out_rx).await {
        SourceUpdate::Snapshot { pods, .. } => assert_eq!(names(&pods), ["a"]),
        other => panic!("expected the API's snapshot, got {other:?}"),
    }
    tokio::time::sleep(WRITE_PERIOD * 2).await;
    assert_eq!(names(&load(&rig.path).unwrap().unwrap().pods), ["a"]);
    rig.shutdown.cancel();
    rig.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_listing_api_means_the_checkpoint_is_never_used() {
    let mut rig = gate(Some(checkpoint_of(vec![pod("old")])), Arc::new(|_| None), false);
    rig.api_tx
        .send(SourceUpdate::Snapshot {
            source: Source::Api,
            pods: vec![pod("new")],
        })
        .await
        .unwrap();
    match next(&mut rig.out_rx).await {
        SourceUpdate::Snapshot { pods, .. } => assert_eq!(names(&pods), ["new"]),
        other => panic!("expected the API's snapshot, got {other:?}"),
    }
    tokio::time::sleep(RESTORE_AFTER * 2).await;
    assert!(rig.out_rx.try_recv().is_err(), "nothing restored after the API listed");
    assert_eq!(names(&load(&rig.path).unwrap().unwrap().pods), ["new"]);
    rig.shutdown.cancel();
    rig.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_file_follows_updates_with_local_status_and_without_mirror_pods() {
    let status: StatusLookup = Arc::new(|uid| (uid == "uid-a").then(|| running(false)));
    let mut rig = gate(None, status, false);
    let mut mirror = pod("static-n1");
    mirror
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CONFIG_MIRROR_ANNOTATION.into(), "hash".into());
    for u in [
        SourceUpdate::Snapshot {
            source: Source::Api,
            pods: vec![pod("a"), mirror],
        },
        SourceUpdate::Upsert {
            source: Source::Api,
            pod: Box::new(pod("b")),
        },
        SourceUpdate::Upsert {
            source: Source::Api,
            pod: Box::new(pod("c")),
        },
        SourceUpdate::Remove {
            source: Source::Api,
            pod: Box::new(pod("b")),
        },
    ] {
        rig.api_tx.send(u).await.unwrap();
        next(&mut rig.out_rx).await;
    }
    tokio::time::sleep(WRITE_PERIOD * 2).await;
    let cp = load(&rig.path).unwrap().unwrap();
    assert_eq!(names(&cp.pods), ["a", "c"]);
    assert_eq!(
        cp.pods[0].status,
        Some(running(false)),
        "keel's own status, not the API's"
    );
    assert_eq!(cp.node_name, "n1");
    assert_eq!(mode_of(&rig.path), 0o600);
    rig.shutdown.cancel();
    rig.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn nothing_is_written_before_pods_are_known() {
    // No checkpoint to restore and no API list yet: an existing file must not be emptied.
    let rig = gate(None, Arc::new(|_| None), false);
    save(&rig.path, &checkpoint_of(vec![pod("a")])).unwrap();
    tokio::time::sleep(RESTORE_AFTER * 2).await;
    assert_eq!(names(&load(&rig.path).unwrap().unwrap().pods), ["a"]);
    rig.shutdown.cancel();
    rig.task.await.unwrap();
}
