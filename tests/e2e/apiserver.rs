//! Tests of the test API server itself, with real kubectl and with kube::Client.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent, WatchParams,
};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::{json, Value};

use crate::support::apiserver::TestApiServer;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "kubectl failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        stdout(o)
    );
    stdout(o)
}

fn pod(name: &str, node: Option<&str>, labels: Value) -> Pod {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
    });
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    serde_json::from_value(p).unwrap()
}

/// An admin client that does not retry 503s (kube retries them for minutes by default): for
/// tests that want to see the 503 itself.
async fn no_retry_client(s: &TestApiServer) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(s.admin_kubeconfig()).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    cfg.default_retry = false;
    kube::Client::try_from(cfg).unwrap()
}

fn api_code(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn kubectl_apply_then_get_json_and_jsonpath() {
    let s = TestApiServer::start().await.unwrap();
    let manifest = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: team-a
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: team-a
data:
  mode: fast
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: team-a
  labels: {app: web}
spec:
  containers:
  - name: nginx
    image: nginx
    ports: [{containerPort: 80}]
    resources: {limits: {cpu: 100m, memory: 64Mi}}
"#;
    let out = ok(&s.kubectl_stdin(&["apply", "-f", "-"], manifest).await);
    assert!(out.contains("namespace/team-a created"), "{out}");
    assert!(out.contains("configmap/settings created"), "{out}");
    assert!(out.contains("pod/web created"), "{out}");

    let json: Value = serde_json::from_str(&ok(&s
        .kubectl(&["get", "pod", "web", "-n", "team-a", "-o", "json"])
        .await))
    .unwrap();
    assert_eq!(json["spec"]["restartPolicy"], "Always");
    assert_eq!(json["spec"]["terminationGracePeriodSeconds"], 30);
    assert_eq!(json["spec"]["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(json["spec"]["containers"][0]["resources"]["requests"]["cpu"], "100m");
    assert_eq!(json["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
    assert_eq!(json["status"]["phase"], "Pending");
    assert_eq!(json["status"]["qosClass"], "Guaranteed");
    // Default admission plugins: ServiceAccount token volume, DefaultTolerationSeconds, Priority.
    assert_eq!(json["spec"]["serviceAccountName"], "default");
    assert!(json["spec"]["volumes"][0]["name"]
        .as_str()
        .unwrap()
        .starts_with("kube-api-access-"));
    assert_eq!(
        json["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    assert_eq!(json["spec"]["tolerations"][0]["tolerationSeconds"], 300);
    assert_eq!(json["spec"]["priority"], 0);
    assert!(json["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].is_string());

    let mode = ok(&s
        .kubectl(&["get", "cm", "settings", "-n", "team-a", "-o", "jsonpath={.data.mode}"])
        .await);
    assert_eq!(mode, "fast");
    let phase = ok(&s
        .kubectl(&["get", "ns", "team-a", "-o", "jsonpath={.status.phase}"])
        .await);
    assert_eq!(phase, "Active");
    // The namespace controllers' objects exist.
    let sa = ok(&s.kubectl(&["get", "sa", "default", "-n", "team-a", "-o", "name"]).await);
    assert_eq!(sa.trim(), "serviceaccount/default");

    // Re-apply with a change: kubectl sends a strategic merge patch.
    let changed = manifest
        .replace("mode: fast", "mode: slow")
        .replace("image: nginx", "image: nginx:1.27");
    let out = ok(&s.kubectl_stdin(&["apply", "-f", "-"], &changed).await);
    assert!(out.contains("configmap/settings configured"), "{out}");
    let image = ok(&s
        .kubectl(&[
            "get",
            "pod",
            "web",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.spec.containers[0].image}",
        ])
        .await);
    assert_eq!(image, "nginx:1.27");
    let mode = ok(&s
        .kubectl(&["get", "cm", "settings", "-n", "team-a", "-o", "jsonpath={.data.mode}"])
        .await);
    assert_eq!(mode, "slow");

    // kubectl asks for strict field validation: a typo is rejected by the server.
    let typo = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\ndatta:\n  a: b\n";
    let out = s.kubectl_stdin(&["apply", "-f", "-"], typo).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field \"datta\""), "{err}");
}

#[tokio::test]
async fn kubectl_get_tables_show_status() {
    let s = TestApiServer::start().await.unwrap();
    let client = s.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("crashy", Some("n1"), json!({})))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("pending", None, json!({})))
        .await
        .unwrap();
    let status = json!({"status": {"phase": "Running", "containerStatuses": [{
        "name": "c", "image": "busybox:1.36", "imageID": "", "ready": false, "restartCount": 3,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
    pods.patch_status("crashy", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();

    let out = ok(&s.kubectl(&["get", "pods"]).await);
    let header = out.lines().next().unwrap();
    for col in ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] {
        assert!(header.contains(col), "{out}");
    }
    let crashy = out.lines().find(|l| l.starts_with("crashy")).unwrap();
    assert!(
        crashy.contains("0/1") && crashy.contains("CrashLoopBackOff") && crashy.contains(" 3 "),
        "{crashy}"
    );
    let pending = out.lines().find(|l| l.starts_with("pending")).unwrap();
    assert!(pending.contains("Pending"), "{pending}");

    let nodes: Api<Node> = Api::all(client);
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/worker": ""}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {
            "kubeletVersion": "v1.33.0-keel", "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
            "osImage": "", "containerRuntimeVersion": "", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"}}}))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let out = ok(&s.kubectl(&["get", "nodes"]).await);
    let n1 = out.lines().find(|l| l.starts_with("n1")).unwrap();
    assert!(
        n1.contains("Ready") && n1.contains("worker") && n1.contains("v1.33.0-keel"),
        "{out}"
    );
}

#[tokio::test]
async fn kubectl_delete_unbound_pod_is_immediate() {
    let s = TestApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(s.client().await, "default");
    pods.create(&PostParams::default(), &pod("lonely", None, json!({})))
        .await
        .unwrap();
    let out = ok(&s.kubectl(&["delete", "pod", "lonely"]).await);
    assert!(out.contains("pod \"lonely\" deleted"), "{out}");
    let (code, reason) = api_code(pods.get("lonely").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn graceful_deletion_of_a_bound_pod() {
    let s = TestApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(s.client().await, "default");
    let created = pods
        .create(&PostParams::default(), &pod("bound", Some("n1"), json!({})))
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();

    ok(&s.kubectl(&["delete", "pod", "bound", "--wait=false"]).await);
    let p = pods.get("bound").await.unwrap();
    assert!(p.metadata.deletion_timestamp.is_some());
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
    // A second delete may only shorten the grace period.
    pods.delete(
        "bound",
        &DeleteParams {
            grace_period_seconds: Some(60),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        pods.get("bound").await.unwrap().metadata.deletion_grace_period_seconds,
        Some(30)
    );
    pods.delete(
        "bound",
        &DeleteParams {
            grace_period_seconds: Some(10),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        pods.get("bound").await.unwrap().metadata.deletion_grace_period_seconds,
        Some(10)
    );

    // The kubelet's handshake: final status, then DELETE with grace 0 and the UID precondition.
    let status = json!({"status": {"phase": "Succeeded"}});
    pods.patch_status("bound", &PatchParams::default(), &Patch::Strategic(&status))
        .await
        .unwrap();
    let wrong = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some("00000000-0000-0000-0000-000000000000".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let (code, reason) = api_code(pods.delete("bound", &wrong).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    let right = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    // The kubelet's status patches carry the UID: another pod's UID is rejected.
    let stale = json!({"metadata": {"uid": "00000000-0000-0000-0000-000000000000"}, "status": {"phase": "Failed"}});
    let (code, _) = api_code(
        pods.patch_status("bound", &PatchParams::default(), &Patch::Strategic(&stale))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    pods.delete("bound", &right).await.unwrap();
    assert_eq!(api_code(pods.get("bound").await.unwrap_err()).0, 404);
}

#[tokio::test]
async fn strategic_merge_of_conditions_with_set_element_order() {
    let s = TestApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(s.client().await, "default");
    pods.create(&PostParams::default(), &pod("smp", Some("n1"), json!({})))
        .await
        .unwrap();
    let first = json!({"status": {"conditions": [
        {"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "False"}]}});
    pods.patch_status("smp", &PatchParams::default(), &Patch::Strategic(&first))
        .await
        .unwrap();
    let second = json!({"status": {
        "$setElementOrder/conditions": [{"type": "PodScheduled"}, {"type": "Initialized"}, {"type": "Ready"}],
        "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]}});
    let p = pods
        .patch_status("smp", &PatchParams::default(), &Patch::Strategic(&second))
        .await
        .unwrap();
    let conds = p.status.unwrap().conditions.unwrap();
    let got: Vec<(String, String)> = conds.into_iter().map(|c| (c.type_, c.status)).collect();
    assert_eq!(
        got,
        [("PodScheduled", "True"), ("Initialized", "True"), ("Ready", "True")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // A status patch leaves labels alone; a main-resource patch leaves status alone.
    let sneaky = json!({"metadata": {"labels": {"x": "y"}}, "status": {"phase": "Running"}});
    let p = pods
        .patch_status("smp", &PatchParams::default(), &Patch::Merge(&sneaky))
        .await
        .unwrap();
    assert!(p.metadata.labels.unwrap_or_default().is_empty());
    let p = pods
        .patch(
            "smp",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"phase": "Failed"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Running"));
}

#[tokio::test]
async fn json_patch_and_update_conflict() {
    let s = TestApiServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1"}})).unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    let p: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/data/b", "value": "2"}, {"op": "test", "path": "/data/a", "value": "1"}]))
    .unwrap();
    let patched = cms
        .patch("c", &PatchParams::default(), &Patch::Json::<()>(p))
        .await
        .unwrap();
    assert_eq!(patched.data.as_ref().unwrap().get("b").map(String::as_str), Some("2"));
    let rv_old: u64 = created.metadata.resource_version.clone().unwrap().parse().unwrap();
    let rv_new: u64 = patched.metadata.resource_version.clone().unwrap().parse().unwrap();
    assert!(rv_new > rv_old);
    // PUT with the stale resourceVersion conflicts.
    let (code, reason) = api_code(cms.replace("c", &PostParams::default(), &created).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    let (code, _) = api_code(cms.create(&PostParams::default(), &cm).await.unwrap_err());
    assert_eq!(code, 409);
    // A failing JSON patch test op is rejected.
    let bad: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/data/a", "value": "9"}])).unwrap();
    assert_eq!(
        api_code(
            cms.patch("c", &PatchParams::default(), &Patch::Json::<()>(bad))
                .await
                .unwrap_err()
        )
        .0,
        422
    );
}

#[tokio::test]
async fn validation_and_missing_namespace() {
    let s = TestApiServer::start().await.unwrap();
    let client = s.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let bad: Pod = serde_json::from_value(
        json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
    )
    .unwrap();
    let (code, reason) = api_code(pods.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    let empty: Pod =
        serde_json::from_value(json!({"metadata": {"name": "empty"}, "spec": {"containers": []}})).unwrap();
    assert_eq!(
        api_code(pods.create(&PostParams::default(), &empty).await.unwrap_err()).0,
        422
    );
    let nowhere: Api<Pod> = Api::namespaced(client.clone(), "nowhere");
    let (code, _) = api_code(
        nowhere
            .create(&PostParams::default(), &pod("p", None, json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 404);
    // The pod spec is immutable apart from images and a few fields.
    pods.create(&PostParams::default(), &pod("imm", None, json!({})))
        .await
        .unwrap();
    let change = json!({"spec": {"containers": [{"name": "c", "command": ["sh"]}]}});
    assert_eq!(
        api_code(
            pods.patch("imm", &PatchParams::default(), &Patch::Strategic(&change))
                .await
                .unwrap_err()
        )
        .0,
        422
    );
    let image = json!({"spec": {"containers": [{"name": "c", "image": "busybox:1.37"}]}});
    let p = pods
        .patch("imm", &PatchParams::default(), &Patch::Strategic(&image))
        .await
        .unwrap();
    assert_eq!(p.spec.unwrap().containers[0].image.as_deref(), Some("busybox:1.37"));
    assert_eq!(p.metadata.generation, Some(2));
    // generateName.
    let gen: Pod = serde_json::from_value(
        json!({"metadata": {"generateName": "job-"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
    )
    .unwrap();
    let made = pods.create(&PostParams::default(), &gen).await.unwrap();
    assert!(made.metadata.name.unwrap().starts_with("job-"));
}

#[tokio::test]
async fn watch_sees_added_modified_deleted_and_bookmarks() {
    let s = TestApiServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    let start = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let wp = WatchParams::default().timeout(20).labels("app=w");
    let mut stream = cms.watch(&wp, &start).await.unwrap().boxed();
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "w", "labels": {"app": "w"}}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let other: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap();
    cms.create(&PostParams::default(), &other).await.unwrap();
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(&json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap();
    cms.delete("w", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    let mut bookmarks = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while bookmarks == 0 || seen.len() < 3 {
        let ev = tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .expect("watch events in time")
            .unwrap()
            .unwrap();
        match ev {
            WatchEvent::Added(o) => seen.push(("ADDED", o.metadata.name.unwrap())),
            WatchEvent::Modified(o) => seen.push(("MODIFIED", o.metadata.name.unwrap())),
            WatchEvent::Deleted(o) => seen.push(("DELETED", o.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => bookmarks += 1,
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            ("ADDED", "w".to_string()),
            ("MODIFIED", "w".into()),
            ("DELETED", "w".into())
        ]
    );
    // Replay from the start gives the same history.
    let mut replay = cms
        .watch(&WatchParams::default().labels("app=w").timeout(5), &start)
        .await
        .unwrap()
        .boxed();
    let first = replay.try_next().await.unwrap().unwrap();
    assert!(matches!(first, WatchEvent::Added(_)));
}

#[tokio::test]
async fn compaction_gives_410_and_watcher_relists() {
    let s = TestApiServer::start().await.unwrap();
    let client = s.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let old = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    s.compact();
    let mut stream = cms.watch(&WatchParams::default(), &old).await.unwrap().boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
    let lp = ListParams {
        resource_version: Some(old.clone()),
        version_match: Some(kube::api::VersionMatch::NotOlderThan),
        ..Default::default()
    };
    assert_eq!(api_code(cms.list(&lp).await.unwrap_err()).0, 410);

    // kube-rs's watcher: desynced by changes it does not watch, then compaction and a dropped
    // watch; it must get 410 and relist.
    let watched: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-public");
    let mut events = watcher(watched, watcher::Config::default()).default_backoff().boxed();
    let mut relisted = false;
    for _ in 0..5 {
        // Drain until the watcher is idle (initial list done).
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), events.try_next())
            .await
            .unwrap_or(Ok(None))
        {}
        let name = format!("x-{}", rand::random::<u32>());
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
        s.compact();
        s.set_available(false);
        s.set_available(true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut got_410 = false;
        while let Ok(ev) = tokio::time::timeout_at(deadline, events.next()).await {
            match ev {
                Some(Err(watcher::Error::WatchError(e))) if e.code == 410 => got_410 = true,
                Some(Ok(watcher::Event::InitDone)) if got_410 => {
                    relisted = true;
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
        if relisted {
            break;
        }
    }
    assert!(relisted, "watcher never saw 410 and relisted");
}

#[tokio::test]
async fn field_and_label_selectors() {
    let s = TestApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(s.client().await, "default");
    pods.create(
        &PostParams::default(),
        &pod("a", Some("n1"), json!({"app": "web", "tier": "fe"})),
    )
    .await
    .unwrap();
    pods.create(&PostParams::default(), &pod("b", Some("n2"), json!({"app": "web"})))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("c", None, json!({"app": "db"})))
        .await
        .unwrap();
    let names = |l: kube::core::ObjectList<Pod>| {
        l.items
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            pods.list(&ListParams::default().fields("spec.nodeName=n1"))
                .await
                .unwrap()
        ),
        ["a"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().fields("spec.nodeName="))
                .await
                .unwrap()
        ),
        ["c"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().fields("spec.nodeName!=n1"))
                .await
                .unwrap()
        ),
        ["b", "c"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().labels("app in (web),!tier"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    assert_eq!(
        names(pods.list(&ListParams::default().labels("app!=web")).await.unwrap()),
        ["c"]
    );
    assert_eq!(
        names(pods.list(&ListParams::default().labels("tier")).await.unwrap()),
        ["a"]
    );
    assert_eq!(
        api_code(
            pods.list(&ListParams::default().fields("spec.bogus=1"))
                .await
                .unwrap_err()
        )
        .0,
        400
    );
    let out = ok(&s
        .kubectl(&["get", "pods", "--field-selector", "spec.nodeName=n2", "-o", "name"])
        .await);
    assert_eq!(out.trim(), "pod/b");
    let out = ok(&s.kubectl(&["get", "pods", "-l", "app=web", "-o", "name"]).await);
    assert_eq!(out.trim(), "pod/a\npod/b");
}

#[tokio::test]
async fn authentication_certs_tokens_and_401() {
    use rustls_pki_types::pem::PemObject;
    let s = TestApiServer::start().await.unwrap();
    // No credentials: 401 with a Status body.
    let mut config = kube::Config::new(s.url().parse().unwrap());
    config.root_cert = Some(vec![rustls_pki_types::CertificateDer::from_pem_slice(
        s.ca_pem().as_bytes(),
    )
    .unwrap()
    .to_vec()]);
    let anon = kube::Client::try_from(config).unwrap();
    let (code, reason) = api_code(
        Api::<Namespace>::all(anon)
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (401, "Unauthorized"));

    let whoami = |path: std::path::PathBuf| async move {
        let kc = kube::config::Kubeconfig::read_from(path).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(cfg).unwrap();
        let req = http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
            .header("content-type", "application/json")
            .body(
                serde_json::to_vec(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}))
                    .unwrap(),
            )
            .unwrap();
        let v: Value = client.request(req).await.unwrap();
        v["status"]["userInfo"].clone()
    };
    let node = whoami(s.kubeconfig_for("system:node:n1", &["system:nodes"])).await;
    assert_eq!(node["username"], "system:node:n1");
    assert!(node["groups"].as_array().unwrap().contains(&json!("system:nodes")));
    let tok = whoami(s.token_kubeconfig("alice")).await;
    assert_eq!(tok["username"], "alice");
    let out = ok(&s
        .kubectl(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])
        .await);
    assert_eq!(out, "admin");

    // A ServiceAccount token from TokenRequest authenticates as the ServiceAccount.
    let client = s.client().await;
    let req = http::Request::post("/api/v1/namespaces/default/serviceaccounts/default/token")
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(
                &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": ["keel"], "expirationSeconds": 900}}),
            )
            .unwrap(),
        )
        .unwrap();
    let tr: Value = client.request(req).await.unwrap();
    let token = tr["status"]["token"].as_str().unwrap().to_string();
    assert_eq!(token.split('.').count(), 3);
    let exp: jiff::Timestamp = tr["status"]["expirationTimestamp"].as_str().unwrap().parse().unwrap();
    let left = exp.as_second() - jiff::Timestamp::now().as_second();
    assert!((890..=900).contains(&left), "{left}");
    let mut config = kube::Config::new(s.url().parse().unwrap());
    config.root_cert = Some(vec![rustls_pki_types::CertificateDer::from_pem_slice(
        s.ca_pem().as_bytes(),
    )
    .unwrap()
    .to_vec()]);
    config.auth_info.token = Some(token.into());
    let sa = kube::Client::try_from(config).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(sa, "default");
    assert!(cms.get("kube-root-ca.crt").await.unwrap().data.unwrap()["ca.crt"].contains("BEGIN CERTIFICATE"));
}

#[tokio::test]
async fn lease_create_and_update() {
    let s = TestApiServer::start().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(s.client().await, "kube-node-lease");
    let mut lease: Lease = serde_json::from_value(json!({"metadata": {"name": "n1"},
        "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40}}))
    .unwrap();
    let t1 = jiff::Timestamp::now();
    lease.spec.as_mut().unwrap().renew_time = Some(MicroTime(t1));
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    assert_eq!(
        created
            .spec
            .as_ref()
            .unwrap()
            .renew_time
            .as_ref()
            .unwrap()
            .0
            .as_microsecond(),
        t1.as_microsecond()
    );
    let mut upd = created.clone();
    let t2 = t1 + jiff::SignedDuration::from_millis(10_500);
    upd.spec.as_mut().unwrap().renew_time = Some(MicroTime(t2));
    let updated = leases.replace("n1", &PostParams::default(), &upd).await.unwrap();
    assert_eq!(
        updated.spec.unwrap().renew_time.unwrap().0.as_microsecond(),
        t2.as_microsecond()
    );
    assert_eq!(
        api_code(
            leases
                .replace("n1", &PostParams::default(), &created)
                .await
                .unwrap_err()
        )
        .0,
        409
    );
    let out = ok(&s.kubectl(&["get", "leases", "-n", "kube-node-lease"]).await);
    assert!(out.lines().any(|l| l.starts_with("n1") && l.contains("n1")), "{out}");
}

#[tokio::test]
async fn events_api_event_shows_in_kubectl_get_events() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    let s = TestApiServer::start().await.unwrap();
    let client = s.client().await;
    let evs: Api<Event> = Api::namespaced(client.clone(), "default");
    let mut ev: Event = serde_json::from_value(json!({
        "metadata": {"name": "web.17a0b1c2d3e4f5a6"},
        "regarding": {"kind": "Pod", "namespace": "default", "name": "web", "apiVersion": "v1", "fieldPath": "spec.containers{c}"},
        "reason": "Pulled", "note": "Successfully pulled image \"busybox\"", "type": "Normal", "action": "Pulled",
        "reportingController": "kubelet", "reportingInstance": "n1"})).unwrap();
    ev.event_time = Some(MicroTime(jiff::Timestamp::now()));
    evs.create(&PostParams::default(), &ev).await.unwrap();
    let core: Api<CoreEvent> = Api::namespaced(client, "default");
    let list = core
        .list(&ListParams::default().fields("involvedObject.name=web"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(
        list.items[0].message.as_deref(),
        Some("Successfully pulled image \"busybox\"")
    );
    assert_eq!(list.items[0].reporting_component.as_deref(), Some("kubelet"));
    let out = ok(&s.kubectl(&["get", "events"]).await);
    let line = out
        .lines()
        .find(|l| l.contains("Pulled"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("Normal") && line.contains("pod/web") && line.contains("Successfully pulled image"),
        "{line}"
    );
    let v1 = ok(&s.kubectl(&["get", "events.events.k8s.io"]).await);
    assert!(
        v1.contains("pod/web") && v1.contains("Successfully pulled image"),
        "{v1}"
    );
    let wide = ok(&s.kubectl(&["get", "events", "-o", "wide"]).await);
    assert!(wide.contains("kubelet, n1"), "{wide}");
}

#[tokio::test]
async fn outage_gives_503_and_recovers() {
    let s = TestApiServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(no_retry_client(&s).await, "default");
    let mut stream = cms
        .watch(&WatchParams::default().timeout(30), "0")
        .await
        .unwrap()
        .boxed();
    // Initial state: kube-root-ca.crt.
    assert!(matches!(stream.try_next().await.unwrap(), Some(WatchEvent::Added(_))));
    s.set_available(false);
    let (code, reason) = api_code(cms.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (503, "ServiceUnavailable"));
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.try_next().await {}
    })
    .await;
    assert!(ended.is_ok(), "open watch must end during the outage");
    s.set_available(true);
    assert!(!cms.list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn pod_log_on_a_missing_node_is_not_found_not_fatal() {
    let s = TestApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(no_retry_client(&s).await, "default");
    pods.create(&PostParams::default(), &pod("l", Some("n1"), json!({})))
        .await
        .unwrap();
    // The pod's node has no Node object: the kubelet's address cannot be found.
    let (code, reason) = api_code(pods.logs("l", &Default::default()).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    let out = s.kubectl(&["version", "-o", "json"]).await;
    let v: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.33.0");
}

#[tokio::test]
async fn drop_stops_the_server_and_removes_its_dir() {
    let s = TestApiServer::start().await.unwrap();
    let dir = s.dir().to_path_buf();
    assert!(s.admin_kubeconfig().starts_with(&dir));
    let addr = s.url().trim_start_matches("https://").to_string();
    drop(s);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!dir.exists());
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
}

/// kubectl 1.27–1.28 need `/openapi/v2` (protobuf) before `apply`; later ones use `/openapi/v3`.
#[tokio::test]
async fn kubectl_versions_apply_get_delete() {
    let s = TestApiServer::start().await.unwrap();
    let mut tried = 0;
    for v in ["1.27", "1.28", "1.29", "1.30", "1.31", "1.32", "1.33"] {
        let bin = format!("/usr/lib/google-cloud-sdk/bin/kubectl.{v}");
        if !std::path::Path::new(&bin).exists() {
            continue;
        }
        tried += 1;
        let name = format!("p{}", v.replace('.', ""));
        let manifest = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: n1\n  containers:\n  - name: c\n    image: busybox:{v}\n"
        );
        let run = |args: Vec<String>, input: Option<String>| {
            let bin = bin.clone();
            let kubeconfig = s.admin_kubeconfig();
            let home = s.dir().to_path_buf();
            async move {
                use tokio::io::AsyncWriteExt;
                let mut child = tokio::process::Command::new(&bin)
                    .arg("--kubeconfig")
                    .arg(kubeconfig)
                    .args(&args)
                    .env("HOME", home)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut stdin = child.stdin.take().unwrap();
                if let Some(i) = input {
                    stdin.write_all(i.as_bytes()).await.unwrap();
                }
                drop(stdin);
                child.wait_with_output().await.unwrap()
            }
        };
        let out = ok(&run(vec!["apply".into(), "-f".into(), "-".into()], Some(manifest)).await);
        assert!(out.contains(&format!("pod/{name} created")), "{v}: {out}");
        let out = ok(&run(vec!["get".into(), "pods".into()], None).await);
        assert!(
            out.lines().any(|l| l.starts_with(&name) && l.contains("Pending")),
            "{v}: {out}"
        );
        let out = ok(&run(
            vec!["delete".into(), "pod".into(), name.clone(), "--wait=false".into()],
            None,
        )
        .await);
        assert!(out.contains("deleted"), "{v}: {out}");
        let out = ok(&run(vec!["get".into(), "pod".into(), name.clone()], None).await);
        assert!(out.contains("Terminating"), "{v}: {out}");
    }
    assert!(
        tried > 0 || versioned_kubectl_dir_missing(),
        "no kubectl binaries found"
    );
}

fn versioned_kubectl_dir_missing() -> bool {
    // Machines without the versioned binaries still run the other kubectl tests.
    !std::path::Path::new("/usr/lib/google-cloud-sdk/bin").exists()
}

#[tokio::test]
async fn kubectl_wait_and_force_delete() {
    let s = TestApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(s.client().await, "default");
    pods.create(&PostParams::default(), &pod("w1", Some("n1"), json!({})))
        .await
        .unwrap();
    let client = s.client().await;
    let readier = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let st = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        pods.patch_status("w1", &PatchParams::default(), &Patch::Strategic(&st))
            .await
            .unwrap();
    });
    let out = ok(&s
        .kubectl(&["wait", "--for=condition=Ready", "pod/w1", "--timeout=20s"])
        .await);
    assert!(out.contains("pod/w1 condition met"), "{out}");
    readier.await.unwrap();
    let out = ok(&s.kubectl(&["delete", "pod", "w1", "--grace-period=0", "--force"]).await);
    assert!(out.contains("force deleted"), "{out}");
    assert_eq!(api_code(pods.get("w1").await.unwrap_err()).0, 404);
}

#[tokio::test]
async fn kubectl_get_watch_shows_changes() {
    let s = TestApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(s.client().await, "default");
    pods.create(&PostParams::default(), &pod("gw", Some("n1"), json!({})))
        .await
        .unwrap();
    let client = s.client().await;
    let changer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let st = json!({"status": {"phase": "Running", "containerStatuses": [{"name": "c", "image": "busybox:1.36", "imageID": "",
            "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}}]}});
        pods.patch_status("gw", &PatchParams::default(), &Patch::Strategic(&st))
            .await
            .unwrap();
    });
    let out = s.kubectl(&["get", "pods", "-w", "--request-timeout=4s"]).await;
    changer.await.unwrap();
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("gw")).collect();
    assert!(lines.len() >= 2, "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        lines[0].contains("Pending")
            && lines.last().unwrap().contains("1/1")
            && lines.last().unwrap().contains("Running"),
        "{text}"
    );
}

#[tokio::test]
async fn namespace_deletion_and_immortal_namespaces() {
    let s = TestApiServer::start().await.unwrap();
    let client = s.client().await;
    let out = s.kubectl(&["delete", "ns", "default", "--wait=false"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("this namespace may not be deleted"));
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "doomed");
    let bound = pods
        .create(&PostParams::default(), &pod("b", Some("n1"), json!({})))
        .await
        .unwrap();
    ok(&s.kubectl(&["delete", "ns", "doomed", "--wait=false"]).await);
    // Terminating until its bound pod is gone; no new content meanwhile.
    let phase = ok(&s
        .kubectl(&["get", "ns", "doomed", "-o", "jsonpath={.status.phase}"])
        .await);
    assert_eq!(phase, "Terminating");
    assert_eq!(
        api_code(
            pods.create(&PostParams::default(), &pod("late", None, json!({})))
                .await
                .unwrap_err()
        )
        .0,
        403
    );
    assert!(pods.get("b").await.unwrap().metadata.deletion_timestamp.is_some());
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: bound.metadata.uid,
            resource_version: None,
        }),
        ..Default::default()
    };
    pods.delete("b", &dp).await.unwrap();
    assert_eq!(
        api_code(Api::<Namespace>::all(client).get("doomed").await.unwrap_err()).0,
        404
    );
}

#[tokio::test]
async fn binding_token_rules_and_deletecollection() {
    let s = TestApiServer::start().await.unwrap();
    let client = s.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("tobind", None, json!({"app": "x"})))
        .await
        .unwrap();
    let post = |path: String, body: Value| {
        let client = client.clone();
        async move {
            let req = http::Request::post(path)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap())
                .unwrap();
            client.request::<Value>(req).await
        }
    };
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "tobind"}, "target": {"kind": "Node", "name": "n1"}});
    post("/api/v1/namespaces/default/pods/tobind/binding".into(), binding.clone())
        .await
        .unwrap();
    let p = pods.get("tobind").await.unwrap();
    assert_eq!(p.spec.unwrap().node_name.as_deref(), Some("n1"));
    let conds = p.status.unwrap().conditions.unwrap();
    assert!(conds.iter().any(|c| c.type_ == "PodScheduled" && c.status == "True"));
    let (code, _) = api_code(
        post("/api/v1/namespaces/default/pods/tobind/binding".into(), binding)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409);

    // TokenRequest: a lifetime under 10 minutes is invalid; a bound token names the pod.
    let short =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 60}});
    let (code, _) = api_code(
        post("/api/v1/namespaces/default/serviceaccounts/default/token".into(), short)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    let bound = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "tobind", "uid": created.metadata.uid.clone().unwrap()}}});
    let tr = post("/api/v1/namespaces/default/serviceaccounts/default/token".into(), bound)
        .await
        .unwrap();
    assert_eq!(
        tr["spec"]["audiences"],
        json!(["https://kubernetes.default.svc.cluster.local"])
    );
    assert_eq!(tr["spec"]["expirationSeconds"], 3600);
    let missing = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}});
    let (code, _) = api_code(
        post(
            "/api/v1/namespaces/default/serviceaccounts/nobody/token".into(),
            missing,
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, 404);

    // deletecollection with a selector: unbound pods go at once, bound ones start terminating.
    pods.create(&PostParams::default(), &pod("loose", None, json!({"app": "x"})))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("keep", None, json!({"app": "y"})))
        .await
        .unwrap();
    pods.delete_collection(&DeleteParams::default(), &ListParams::default().labels("app=x"))
        .await
        .unwrap();
    let left: Vec<(String, bool)> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| (p.metadata.name.unwrap(), p.metadata.deletion_timestamp.is_some()))
        .collect();
    assert_eq!(left, [("keep".to_string(), false), ("tobind".to_string(), true)]);
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_events_end() {
    let s = TestApiServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    let cfg = watcher::Config::default().streaming_lists();
    let mut events = watcher(cms, cfg).boxed();
    let mut names = Vec::new();
    let done = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(ev) = events.try_next().await.unwrap() {
            match ev {
                watcher::Event::InitApply(cm) => names.push(cm.metadata.name.unwrap()),
                watcher::Event::InitDone => return,
                _ => {}
            }
        }
    })
    .await;
    assert!(done.is_ok(), "no initial-events-end bookmark");
    assert_eq!(names, ["kube-root-ca.crt"]);
}

#[tokio::test]
async fn secret_string_data_and_node_allocatable_defaults() {
    use k8s_openapi::api::core::v1::Secret;
    let s = TestApiServer::start().await.unwrap();
    let client = s.client().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let sec: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"user": "admin"}})).unwrap();
    let got = secrets.create(&PostParams::default(), &sec).await.unwrap();
    assert!(got.string_data.is_none());
    assert_eq!(got.type_.as_deref(), Some("Opaque"));
    assert_eq!(got.data.unwrap()["user"].0, b"admin".to_vec());
    let nodes: Api<Node> = Api::all(client);
    let node: Node = serde_json::from_value(
        json!({"metadata": {"name": "n1"}, "status": {"capacity": {"cpu": "4", "pods": "110"}}}),
    )
    .unwrap();
    let got = nodes.create(&PostParams::default(), &node).await.unwrap();
    assert_eq!(got.status.unwrap().allocatable.unwrap()["pods"].0, "110");
}

/// kubectl's typed clients (`create ns|configmap|secret|token`, `auth whoami`) post protobuf.
#[tokio::test]
async fn kubectl_create_commands_post_protobuf() {
    let s = TestApiServer::start().await.unwrap();
    assert!(ok(&s.kubectl(&["create", "ns", "x1"]).await).contains("namespace/x1 created"));
    assert!(ok(&s
        .kubectl(&["create", "configmap", "c2", "-n", "x1", "--from-literal=a=b"])
        .await)
    .contains("created"));
    assert_eq!(
        ok(&s
            .kubectl(&["get", "cm", "c2", "-n", "x1", "-o", "jsonpath={.data.a}"])
            .await),
        "b"
    );
    ok(&s
        .kubectl(&["create", "secret", "generic", "s1", "--from-literal=k=v"])
        .await);
    assert_eq!(
        ok(&s.kubectl(&["get", "secret", "s1", "-o", "jsonpath={.data.k}"]).await),
        "dg=="
    );
    ok(&s.kubectl(&["create", "serviceaccount", "robot"]).await);
    let token = ok(&s.kubectl(&["create", "token", "robot", "--duration=20m"]).await);
    assert_eq!(token.trim().split('.').count(), 3);
    let out = ok(&s.kubectl(&["label", "ns", "x1", "team=a"]).await);
    assert!(out.contains("labeled"), "{out}");
    let out = ok(&s.kubectl(&["get", "pods", "-A"]).await);
    assert!(out.is_empty() || out.contains("No resources"), "{out}");
}

#[tokio::test]
async fn legacy_watch_path_and_timeout_seconds() {
    let s = TestApiServer::start().await.unwrap();
    let client = s.client().await;
    let started = std::time::Instant::now();
    let req = http::Request::get("/api/v1/watch/namespaces/default/configmaps?timeoutSeconds=1")
        .body(Vec::new())
        .unwrap();
    let text = client.request_text(req).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the watch must last timeoutSeconds"
    );
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["object"]["kind"], "ConfigMap");
    assert_eq!(first["object"]["metadata"]["name"], "kube-root-ca.crt");
}

#[tokio::test]
async fn metadata_only_lists_and_watches() {
    let s = TestApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(s.client().await, "default");
    pods.create(&PostParams::default(), &pod("m1", None, json!({"app": "m"})))
        .await
        .unwrap();
    let list = pods.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("m1"));
    assert_eq!(list.items[0].types.as_ref().unwrap().kind, "PartialObjectMetadata");
    let one = pods.get_metadata("m1").await.unwrap();
    assert_eq!(one.metadata.labels.unwrap()["app"], "m");
    let mut stream = pods
        .watch_metadata(&WatchParams::default().timeout(5), "0")
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(m)) => assert_eq!(m.metadata.name.as_deref(), Some("m1")),
        other => panic!("expected ADDED, got {other:?}"),
    }
}
