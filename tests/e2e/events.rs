//! Pod events through the test API server as a kubelet user reads them: core/v1 Events from
//! source `kubelet`/<node> in `kubectl get events` and `kubectl describe pod`
//! (Pulling → Pulled → Created → Started), and a repeated BackOff folded into one Event whose
//! count grows (client-go's correlator) instead of one object per occurrence.

use std::time::Duration;

use serde_json::Value;

use crate::support::util::*;

const T: Duration = Duration::from_secs(60);

fn count(e: &Value) -> i64 {
    e["count"].as_i64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_story_and_repeated_backoff_in_kubectl_get_events_and_describe() {
    // Scale 20: the crash loop's back-off (10 s, 20 s, 40 s …) passes quickly.
    let n = Node::start(20.0, &[]).await.unwrap();
    let name = unique("story");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: Always
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: ok, image: busybox:1.36, command: [sh, -c, "while true; do sleep 1; done"]}}
  - {{name: crash, image: busybox:1.36, command: [sh, -c, "exit 3"]}}
"#,
        node = n.name
    );
    apply(&n.api, &manifest).await.unwrap();
    let backoff = wait_for("a BackOff event with count > 1", T, || async {
        let evs = events_about(&n.api, &name).await;
        evs.into_iter().find(|e| e["reason"] == "BackOff" && count(e) > 1)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    assert_eq!(backoff["apiVersion"], "v1");
    assert_eq!(backoff["type"], "Warning");
    assert_eq!(backoff["source"]["component"], "kubelet");
    assert_eq!(backoff["source"]["host"], n.name.as_str());
    assert_eq!(backoff["reportingComponent"], "kubelet");
    assert_eq!(backoff["reportingInstance"], n.name.as_str());
    assert_eq!(backoff["involvedObject"]["kind"], "Pod");
    assert_eq!(backoff["involvedObject"]["apiVersion"], "v1");
    assert_eq!(backoff["involvedObject"]["fieldPath"], "spec.containers{crash}");
    assert!(backoff["involvedObject"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(backoff["involvedObject"]["resourceVersion"].is_string(), "{backoff}");
    assert!(
        backoff["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Back-off restarting failed container")),
        "{backoff}"
    );
    // Whole seconds on the wire: the repeat may fall in the same one.
    assert!(
        backoff["firstTimestamp"].as_str() <= backoff["lastTimestamp"].as_str(),
        "{backoff}"
    );
    let evs = events_about(&n.api, &name).await;
    // Repeats are one object, not one per occurrence.
    assert_eq!(evs.iter().filter(|e| e["reason"] == "BackOff").count(), 1, "{evs:?}");
    for reason in ["Pulled", "Created", "Started"] {
        assert!(
            evs.iter()
                .any(|e| e["reason"] == reason && e["involvedObject"]["fieldPath"] == "spec.containers{ok}"),
            "no {reason} event for container ok: {evs:?}"
        );
    }
    // What a user sees.
    let out = n.api.kubectl(&["get", "events", "-n", "default"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains(&format!("pod/{name}")) && text.contains("BackOff"),
        "{text}"
    );
    let out = n.api.kubectl(&["describe", "pod", &name, "-n", "default"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events = text.split("Events:").nth(1).unwrap_or_default();
    for reason in ["Pulled", "Created", "Started", "BackOff"] {
        assert!(events.contains(reason), "describe lacks {reason}:\n{text}");
    }
    assert!(events.contains("kubelet"), "{text}");
    // kubectl shows a counted event's age as "… (xN over …)".
    assert!(events.contains(" (x"), "{text}");
}

/// A kube client with a node's identity (`system:node:<node>`, group `system:nodes`).
async fn node_client(api: &crate::support::apiserver::TestApiServer, node: &str) -> kube::Client {
    let path = api.kubeconfig_for(&format!("system:node:{node}"), &["system:nodes"]);
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn code<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("{e}"),
    }
}

/// The test API server refuses what a v1.24 server with the Node authorizer and NodeRestriction
/// refuses a node: events.k8s.io events, Secrets/ConfigMaps no pod of the node uses, another
/// node's Node and Lease, status of pods bound elsewhere, non-mirror pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_server_applies_the_node_authorizer_and_node_restriction() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{ConfigMap, Event, Node as KNode, Pod, Secret};
    use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
    use serde_json::json;

    let api = crate::support::apiserver::TestApiServer::start().await.unwrap();
    let admin = api.client().await;
    let node = unique("authz-node");
    let c = node_client(&api, &node).await;
    let ev = |group: &str| {
        json!({"apiVersion": group, "kind": "Event", "metadata": {"name": unique("ev"), "namespace": "default"},
               "reason": "Started", "type": "Normal"})
    };
    // events.k8s.io: 403; core/v1: created.
    let v1: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(c.clone(), "default");
    let mut e = ev("events.k8s.io/v1");
    e["eventTime"] = json!("2026-01-01T00:00:00.000000Z");
    e["action"] = json!("Started");
    e["reportingController"] = json!("kubelet");
    e["reportingInstance"] = json!(node);
    let e = serde_json::from_value(e).unwrap();
    assert_eq!(code(v1.create(&PostParams::default(), &e).await), 403);
    let mut core = ev("v1");
    core["involvedObject"] = json!({"kind": "Node", "name": node, "uid": node});
    let core: Event = serde_json::from_value(core).unwrap();
    let events: Api<Event> = Api::namespaced(c.clone(), "default");
    assert_eq!(code(events.create(&PostParams::default(), &core).await), 200);

    // Secrets and ConfigMaps: only those of pods bound to the node, one at a time.
    let secret = unique("s");
    let cm = unique("cm");
    let admin_secrets: Api<Secret> = Api::namespaced(admin.clone(), "default");
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": secret}, "stringData": {"k": "v"}})).unwrap();
    admin_secrets.create(&PostParams::default(), &s).await.unwrap();
    let admin_cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    let m: ConfigMap = serde_json::from_value(json!({"metadata": {"name": cm}, "data": {"k": "v"}})).unwrap();
    admin_cms.create(&PostParams::default(), &m).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    assert_eq!(code(secrets.get(&secret).await), 403);
    assert_eq!(code(cms.get(&cm).await), 403);
    assert_eq!(code(secrets.list(&ListParams::default()).await), 403);
    let pod_name = unique("p");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": pod_name}, "spec": {
        "nodeName": node,
        "containers": [{"name": "c", "image": "busybox:1.36",
            "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}]}],
        "volumes": [{"name": "v", "configMap": {"name": cm}}]}}))
    .unwrap();
    let admin_pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    admin_pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(code(secrets.get(&secret).await), 200);
    assert_eq!(code(cms.get(&cm).await), 200);
    let by_name = ListParams::default().fields(&format!("metadata.name={secret}"));
    assert_eq!(code(secrets.list(&by_name).await), 200);
    assert_eq!(code(secrets.list(&ListParams::default()).await), 403);

    // Pods: status of its own pods only; only mirror pods may be created.
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let status = json!({"status": {"phase": "Pending"}});
    assert_eq!(
        code(
            pods.patch_status(&pod_name, &PatchParams::default(), &Patch::Merge(&status))
                .await
        ),
        200
    );
    let other = unique("p-other");
    let mut p2 = pod.clone();
    p2.metadata.name = Some(other.clone());
    p2.spec.as_mut().unwrap().node_name = Some("someone-else".into());
    admin_pods.create(&PostParams::default(), &p2).await.unwrap();
    assert_eq!(
        code(
            pods.patch_status(&other, &PatchParams::default(), &Patch::Merge(&status))
                .await
        ),
        403
    );
    let plain: Pod = serde_json::from_value(json!({"metadata": {"name": unique("plain")}, "spec": {
        "nodeName": node, "containers": [{"name": "c", "image": "busybox:1.36"}]}}))
    .unwrap();
    assert_eq!(code(pods.create(&PostParams::default(), &plain).await), 403);

    // Its own Node and Lease only.
    let nodes: Api<KNode> = Api::all(c.clone());
    let mine: KNode = serde_json::from_value(json!({"metadata": {"name": node}})).unwrap();
    assert_eq!(code(nodes.create(&PostParams::default(), &mine).await), 200);
    let theirs: KNode = serde_json::from_value(json!({"metadata": {"name": unique("other-node")}})).unwrap();
    assert_eq!(code(nodes.create(&PostParams::default(), &theirs).await), 403);
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-node-lease");
    let lease = |name: &str| -> Lease { serde_json::from_value(json!({"metadata": {"name": name}})).unwrap() };
    assert_eq!(code(leases.create(&PostParams::default(), &lease(&node)).await), 200);
    assert_eq!(
        code(leases.create(&PostParams::default(), &lease("not-mine")).await),
        403
    );
    assert_eq!(code(leases.get("not-mine").await), 403);
}

/// `Pulling image "x": 1.2 MB of 5.6 MB (21%), 250.0 kB/s` → (done, total, speed) in bytes.
fn progress_of(msg: &str) -> Option<(f64, f64, f64)> {
    fn bytes(s: &str) -> Option<f64> {
        let (n, unit) = s.split_once(' ')?;
        let scale = match unit {
            "B" => 1.0,
            "kB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            _ => return None,
        };
        Some(n.parse::<f64>().ok()? * scale)
    }
    let rest = msg.rsplit_once("\": ")?.1;
    let (done, rest) = rest.split_once(" of ")?;
    let (total, rest) = rest.split_once(" (")?;
    let speed = rest.split_once("), ")?.1.strip_suffix("/s")?;
    Some((bytes(done)?, bytes(total)?, bytes(speed)?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_pull_shows_progress_events_then_pulled_with_size_and_duration() {
    // A 30 s simulated pull at scale 10 (3 real seconds): a progress event every 5 virtual s.
    let dir = tempfile::tempdir().unwrap();
    let sim_cfg = dir.path().join("sim.yaml");
    std::fs::write(&sim_cfg, "pullLatency: 30\n").unwrap();
    let n = Node::start(10.0, &["--sim-config", sim_cfg.to_str().unwrap()])
        .await
        .unwrap();
    let name = unique("slowpull");
    let image = format!("registry.example.com/keel/{name}:1");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: "{image}", command: [sh, -c, "sleep 3600"]}}
"#,
        node = n.name
    );
    apply(&n.api, &manifest).await.unwrap();
    let pulled = wait_for("the Pulled event", T, || async {
        let evs = events_about(&n.api, &name).await;
        evs.into_iter().find(|e| e["reason"] == "Pulled")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    let evs = events_about(&n.api, &name).await;
    let progress: Vec<(f64, f64, f64)> = evs
        .iter()
        .filter(|e| e["reason"] == "Pulling")
        .filter_map(|e| progress_of(e["message"].as_str()?))
        .collect();
    assert!(progress.len() >= 3, "too few progress events: {evs:?}");
    let total = progress[0].1;
    assert!(total >= 1e6, "{progress:?}");
    for w in progress.windows(2) {
        assert!(
            w[0].0 < w[1].0 && w[1].1 == total,
            "bytes must grow toward one total: {progress:?}"
        );
    }
    // A tick may land after the last byte and before the pull returns (done == total); a pull
    // under way shows a rate in the unit it reaches (kB/s for a slow one), never 0.
    assert!(progress.iter().all(|p| p.0 <= total), "{progress:?}");
    assert!(progress.iter().filter(|p| p.0 < total).all(|p| p.2 > 0.0), "{evs:?}");
    // Pulled: the pull's duration (virtual, 30 s and a little) and the image's size in bytes.
    let msg = pulled["message"].as_str().unwrap();
    let took: f64 = msg
        .strip_prefix(&format!("Successfully pulled image {image:?} in "))
        .and_then(|s| s.split_once("s (")?.0.parse().ok())
        .unwrap_or_else(|| panic!("no duration in {msg:?}"));
    assert!((30.0..60.0).contains(&took), "{msg}");
    let size: f64 = msg
        .split_once("Image size: ")
        .and_then(|(_, s)| s.strip_suffix(" bytes."))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no size in {msg:?}"));
    // total is printed to 0.1 of its unit.
    assert!(
        (size - total).abs() <= total * 0.05,
        "size {size} vs total {total} bytes"
    );
    // What a user sees.
    let out = n.api.kubectl(&["get", "events", "-n", "default"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!("pod/{name}")) && l.contains("Pulling") && l.contains("B/s"))
        .collect();
    assert!(lines.len() >= 3, "{text}");
}
