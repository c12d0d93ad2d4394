//! Pods through a real API server: lifecycle and the status keel patches, the server's defaulting
//! (the pod keel runs is the one the server stored), core/v1 events, graceful deletion. Each body
//! runs on the real tier (simulated runtime and containerd) and on the test API server.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::real_tiers::{tier_test, timeout, Tier, TierNode, CRI, SIM};
use crate::support::util::*;

tier_test! {
    real_sim_pod_lifecycle_and_status => pod_lifecycle(Tier::Real, SIM);
    real_cri_pod_lifecycle_and_status => pod_lifecycle(Tier::Real, CRI);
    real_testapi_pod_lifecycle_and_status => pod_lifecycle(Tier::Test, SIM);
    real_sim_server_defaulting => server_defaulting(Tier::Real, SIM);
    real_cri_server_defaulting => server_defaulting(Tier::Real, CRI);
    real_testapi_server_defaulting => server_defaulting(Tier::Test, SIM);
    real_sim_core_v1_events => core_v1_events(Tier::Real, SIM);
    real_cri_core_v1_events => core_v1_events(Tier::Real, CRI);
    real_testapi_core_v1_events => core_v1_events(Tier::Test, SIM);
    real_sim_graceful_deletion => graceful_deletion(Tier::Real, SIM);
    real_cri_graceful_deletion => graceful_deletion(Tier::Real, CRI);
    real_testapi_graceful_deletion => graceful_deletion(Tier::Test, SIM);
}

/// A container that exits 0 at once on SIGTERM (a shell as PID 1 ignores SIGTERM without a trap).
const POLITE: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

async fn pod_lifecycle(tier: Tier, backend: Backend) {
    let Some(n) = TierNode::start(tier, backend, &[], NO_EVICTION).await.unwrap() else {
        return;
    };
    let name = unique("life");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: life}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "echo hello from main; {POLITE}"]
    resources:
      requests: {{cpu: 10m, memory: 16Mi}}
      limits: {{cpu: 100m, memory: 64Mi}}
  - name: flaky
    image: busybox:1.36
    command: ["sh", "-c", "echo once; exit 3"]
"#,
        node = n.name
    );
    apply(&n.api, &manifest).await.unwrap();
    let t = timeout(backend);
    // keel patches the status as the containers change: main running, flaky restarting.
    let p = n
        .wait_pod(&name, "main running, flaky restarted after exit 3", t, |p| {
            let cs = p["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
            let main = cs.iter().find(|c| c["name"] == "main");
            let flaky = cs.iter().find(|c| c["name"] == "flaky");
            phase(p) == "Running"
                && main.is_some_and(|c| c["ready"] == true)
                && flaky.is_some_and(|c| {
                    // Between two runs (back-off): a restarted flaky is briefly running, and so ready.
                    c["restartCount"].as_i64().unwrap_or(0) >= 1
                        && c["lastState"]["terminated"]["exitCode"] == 3
                        && c["state"]["running"].is_null()
                })
        })
        .await
        .unwrap();
    let s = &p["status"];
    for c in ["PodScheduled", "Initialized"] {
        assert_eq!(condition(&p, c).unwrap_or_else(|| panic!("{c}: {s}"))["status"], "True");
    }
    // flaky keeps failing: the pod is not Ready.
    assert_eq!(condition(&p, "Ready").unwrap()["status"], "False", "{s}");
    assert_eq!(condition(&p, "ContainersReady").unwrap()["status"], "False");
    assert!(s["hostIP"].as_str().is_some_and(|ip| !ip.is_empty()), "{s}");
    let pod_ip = s["podIP"].as_str().unwrap_or_default();
    assert!(pod_ip.parse::<std::net::IpAddr>().is_ok(), "podIP {pod_ip:?}");
    assert!(s["startTime"].is_string());
    assert_eq!(s["qosClass"], "Burstable");
    let cs = s["containerStatuses"].as_array().unwrap();
    let main = cs.iter().find(|c| c["name"] == "main").unwrap();
    assert_eq!(main["started"], true);
    assert_eq!(main["restartCount"], 0);
    assert!(main["state"]["running"]["startedAt"].is_string(), "{main}");
    // containerd names an image by any of its tags (images sharing a config share an ID), and
    // the registry copy of busybox:1.36 may have been pulled by another test.
    assert!(
        main["image"].as_str().is_some_and(|i| i.ends_with("busybox:1.36")),
        "{main}"
    );
    assert!(main["imageID"].as_str().is_some_and(|i| !i.is_empty()), "{main}");
    assert!(
        main["containerID"]
            .as_str()
            .is_some_and(|i| i.starts_with(n.runtime_scheme())),
        "{main}"
    );
    // The logs come from keel through the server's kubelet proxy.
    let logs = n.kubectl_ok(&["logs", &name, "-c", "main"]).await;
    assert!(logs.contains("hello from main"), "{logs:?}");
    let logs = n.kubectl_ok(&["logs", &name, "-c", "flaky", "--previous"]).await;
    assert_eq!(logs, "once\n");
    n.finish().await;
}

/// The pod keel sees is what the server stores: defaults filled (a `resourceFieldRef` without a
/// divisor comes back with `divisor: "0"`, which the kubelet reads as 1), and keel runs it.
async fn server_defaulting(tier: Tier, backend: Backend) {
    let Some(n) = TierNode::start(tier, backend, &[], NO_EVICTION).await.unwrap() else {
        return;
    };
    let name = unique("defaults");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  volumes:
  - name: info
    downwardAPI:
      items:
      - path: mem
        resourceFieldRef: {{containerName: main, resource: limits.memory}}
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "echo env=$MEM_LIMIT; echo file=$(cat /etc/info/mem); {POLITE}"]
    resources:
      limits: {{memory: 64Mi}}
    env:
    - name: MEM_LIMIT
      valueFrom:
        resourceFieldRef: {{resource: limits.memory}}
    volumeMounts:
    - {{name: info, mountPath: /etc/info}}
"#,
        node = n.name
    );
    apply(&n.api, &manifest).await.unwrap();
    let stored = n.pod(&name).await.unwrap();
    let spec = &stored["spec"];
    let c = &spec["containers"][0];
    assert_eq!(c["env"][0]["valueFrom"]["resourceFieldRef"]["divisor"], "0", "{c}");
    assert_eq!(
        spec["volumes"][0]["downwardAPI"]["items"][0]["resourceFieldRef"]["divisor"], "0",
        "{spec}"
    );
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "File");
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(spec["schedulerName"], "default-scheduler");
    assert_eq!(spec["enableServiceLinks"], true);
    assert_eq!(spec["serviceAccountName"], "default");
    // Requests default to the limits.
    assert_eq!(c["resources"]["requests"]["memory"], "64Mi", "{c}");
    n.wait_running(&name).await;
    let want = (64u64 << 20).to_string();
    let logs = wait_for("the limit in the logs", Duration::from_secs(30), || async {
        let out = n.api.kubectl(&["logs", &name]).await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("file=").then_some(text)
    })
    .await
    .unwrap();
    assert!(logs.contains(&format!("env={want}\n")), "{logs:?}");
    assert!(logs.contains(&format!("file={want}\n")), "{logs:?}");
    n.finish().await;
}

/// The kubelet's story of a pod, as core/v1 Events (what a node may post on a real server).
async fn core_v1_events(tier: Tier, backend: Backend) {
    let Some(n) = TierNode::start(tier, backend, &[], NO_EVICTION).await.unwrap() else {
        return;
    };
    let name = unique("events");
    apply(&n.api, &pod_yaml(&name, &n.name, "Always", POLITE))
        .await
        .unwrap();
    let p = n.wait_running(&name).await;
    let events = wait_for("Pulled, Created and Started events", timeout(backend), || async {
        let items = events_about(&n.api, &name).await;
        let reasons: Vec<&str> = items.iter().filter_map(|e| e["reason"].as_str()).collect();
        ["Pulled", "Created", "Started"]
            .iter()
            .all(|r| reasons.contains(r))
            .then_some(items.clone())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nkeel log:\n{}", n.keel.log_tail(40)));
    for e in events.iter().filter(|e| e["reason"] == "Started") {
        assert_eq!(e["apiVersion"], "v1", "{e}");
        assert_eq!(e["type"], "Normal");
        assert_eq!(e["source"]["component"], "kubelet", "{e}");
        assert_eq!(e["source"]["host"], n.name.as_str(), "{e}");
        let obj = &e["involvedObject"];
        assert_eq!(obj["kind"], "Pod");
        assert_eq!(obj["uid"], p["metadata"]["uid"], "{e}");
        assert_eq!(obj["fieldPath"], "spec.containers{main}", "{e}");
        assert_eq!(e["message"], "Started container main");
    }
    let describe = n.kubectl_ok(&["describe", "pod", &name]).await;
    assert!(describe.contains("Started container main"), "{describe}");
    n.finish().await;
}

async fn delete_and_time(n: &TierNode, name: &str) -> Duration {
    let t0 = Instant::now();
    n.kubectl_ok(&["delete", "pod", name, "--wait=false"]).await;
    wait_for("pod object gone", Duration::from_secs(60), || async {
        n.pod(name).await.is_none().then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    t0.elapsed()
}

async fn graceful_deletion(tier: Tier, backend: Backend) {
    let Some(n) = TierNode::start(tier, backend, &[], NO_EVICTION).await.unwrap() else {
        return;
    };
    let mk = |name: &str, script: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 4
  containers:
  - {{name: main, image: busybox:1.36, command: [sh, -c, "{script}"]}}
"#,
            node = n.name
        )
    };
    let (stubborn, polite) = (unique("stubborn"), unique("polite"));
    apply(&n.api, &mk(&stubborn, "trap '' TERM; while true; do sleep 1; done"))
        .await
        .unwrap();
    apply(&n.api, &mk(&polite, POLITE)).await.unwrap();
    n.wait_running(&stubborn).await;
    n.wait_running(&polite).await;
    n.kubectl_ok(&["delete", "pod", &stubborn, "--wait=false"]).await;
    let p: Value = n.pod(&stubborn).await.expect("still there during the grace period");
    assert!(p["metadata"]["deletionTimestamp"].is_string(), "{p}");
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 4);
    let t0 = Instant::now();
    wait_for("stubborn gone", Duration::from_secs(60), || async {
        n.pod(&stubborn).await.is_none().then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "a SIGTERM-ignoring container is killed at the 4 s deadline, took {took:?}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let took = delete_and_time(&n, &polite).await;
    assert!(
        took < Duration::from_secs(4),
        "a container that exits on SIGTERM goes at once, took {took:?}"
    );
    n.finish().await;
}
