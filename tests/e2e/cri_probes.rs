//! Probes and lifecycle hooks on a REAL containerd (scripts/containerd-env.sh, through
//! scripts/test.sh): exec readiness gating Ready, exec liveness restarts (also by a probe that
//! times out in ExecSync), postStart/preStop order seen from inside the container. Every test
//! holds `cri_lifecycle::cri_lock()` (one keel on the shared containerd at a time).

use std::time::Duration;

use serde_json::{json, Value};

use super::cri_lifecycle::remove_node_cgroups;
use crate::runtimes::{backend_test, RtNode, CRI, NATIVE};
use crate::support::util::*;

const T: Duration = Duration::from_secs(90);
/// PID 1 is a shell: it needs a trap to end on SIGTERM.
const POLITE_LOOP: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

/// keel on a real runtime that never reports disk pressure.
async fn start_node(backend: Backend) -> RtNode {
    RtNode::start(backend, &[], NO_EVICTION).await.unwrap()
}

fn pod(name: &str, node: &str, script: &str, container: Value) -> String {
    let mut c = json!({"name": "main", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent",
                       "command": ["sh", "-c", script]});
    if let (Value::Object(a), Value::Object(b)) = (&mut c, container) {
        a.extend(b);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "spec": {"nodeName": node, "restartPolicy": "Always", "terminationGracePeriodSeconds": 5,
                    "containers": [c]}})
    .to_string()
}

fn cs(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

fn restarts(p: &Value) -> i64 {
    cs(p)["restartCount"].as_i64().unwrap_or(-1)
}

fn ready(p: &Value) -> bool {
    condition(p, "Ready").is_some_and(|c| c["status"] == "True")
}

async fn wait_event(n: &Node, pod: &str, reason: &str, pred: impl Fn(&str) -> bool) {
    let r = wait_for(&format!("{reason} event"), T, || async {
        events_about(&n.api, pod)
            .await
            .iter()
            .any(|e| e["reason"] == reason && e["message"].as_str().is_some_and(&pred))
            .then_some(())
    })
    .await;
    if let Err(e) = r {
        panic!(
            "{e}; events: {:?}\nkeel log:\n{}",
            events_about(&n.api, pod).await,
            n.keel.log_tail(40)
        );
    }
}

/// Deletes the test's pods, waits until they are gone (containerd is shared) and removes the
/// node's cgroup root.
async fn delete_all(n: &Node) {
    let out = n
        .api
        .kubectl(&["delete", "pods", "--all", "-n", "default", "--wait=false"])
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("all pods gone", T, || async {
        let l = get_json(&n.api, &["pods", "-n", "default"]).await?;
        l["items"].as_array()?.is_empty().then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    remove_node_cgroups(&n.name).await;
}

// One body per scenario, run on each runtime listed (tests/e2e/runtimes.rs).
backend_test! {
    cri_readiness_and_liveness_probes => readiness_and_liveness_probes(CRI);
    cri_post_start_and_pre_stop_hooks_run_in_order => post_start_and_pre_stop_hooks_run_in_order(CRI);
    native_readiness_and_liveness_probes => readiness_and_liveness_probes(NATIVE);
    native_post_start_and_pre_stop_hooks_run_in_order => post_start_and_pre_stop_hooks_run_in_order(NATIVE);
}

async fn readiness_and_liveness_probes(backend: Backend) {
    let n = start_node(backend).await;
    let gated = unique("cri-ready");
    let sick = unique("cri-sick");
    let slow = unique("cri-slowprobe");
    let readiness = json!({"exec": {"command": ["cat", "/tmp/ready"]}, "initialDelaySeconds": 2,
                           "periodSeconds": 1, "failureThreshold": 1});
    apply(
        &n.api,
        &pod(
            &gated,
            &n.name,
            &format!("touch /tmp/ready; sleep 8; rm /tmp/ready; {POLITE_LOOP}"),
            json!({"readinessProbe": readiness}),
        ),
    )
    .await
    .unwrap();
    let liveness = json!({"exec": {"command": ["cat", "/tmp/health"]}, "periodSeconds": 1, "failureThreshold": 1});
    apply(
        &n.api,
        &pod(
            &sick,
            &n.name,
            &format!("touch /tmp/health; sleep 3; rm /tmp/health; {POLITE_LOOP}"),
            json!({"livenessProbe": liveness}),
        ),
    )
    .await
    .unwrap();
    // §5.4 #25: an exec probe that outlives its timeout fails.
    let timing_out = json!({"exec": {"command": ["sh", "-c", "sleep 10"]}, "timeoutSeconds": 1,
                            "periodSeconds": 2, "failureThreshold": 1});
    apply(
        &n.api,
        &pod(&slow, &n.name, POLITE_LOOP, json!({"livenessProbe": timing_out})),
    )
    .await
    .unwrap();

    let p = n
        .wait_pod(&gated, "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    assert!(!ready(&p), "ready before the probe succeeded: {}", p["status"]);
    n.wait_pod(&gated, "Ready", T, ready).await.unwrap();
    let p = n.wait_pod(&gated, "not Ready again", T, |p| !ready(p)).await.unwrap();
    assert_eq!(restarts(&p), 0);
    assert_eq!(phase(&p), "Running");
    wait_event(&n, &gated, "Unhealthy", |m| {
        m == "Readiness probe failed: cat: can't open '/tmp/ready': No such file or directory\n"
    })
    .await;

    let p = n.wait_pod(&sick, "restarted", T, |p| restarts(p) >= 1).await.unwrap();
    // The trap ended it with 0 on SIGTERM.
    assert_eq!(cs(&p)["lastState"]["terminated"]["exitCode"], 0, "{}", p["status"]);
    wait_event(&n, &sick, "Killing", |m| {
        m == "Container main failed liveness probe, will be restarted"
    })
    .await;

    n.wait_pod(&slow, "restarted by a timed-out probe", T, |p| restarts(p) >= 1)
        .await
        .unwrap();
    wait_event(&n, &slow, "Unhealthy", |m| {
        m == "Liveness probe failed: command \"sh -c sleep 10\" timed out"
    })
    .await;
    assert!(!n.keel.logs().contains("panicked"));
    delete_all(&n).await;
}

async fn post_start_and_pre_stop_hooks_run_in_order(backend: Backend) {
    let n = start_node(backend).await;
    let name = unique("cri-hooks");
    // The container prints what the hooks wrote once it gets SIGTERM (after preStop).
    let script = "trap 'echo order: $(cat /tmp/order | tr \"\\n\" \" \"); exit 0' TERM; \
                  while [ ! -f /tmp/order ]; do sleep 0.2; done; echo saw-poststart; \
                  while true; do sleep 1; done";
    let lifecycle = json!({
        "postStart": {"exec": {"command": ["sh", "-c", "echo poststart >> /tmp/order"]}},
        "preStop": {"exec": {"command": ["sh", "-c", "echo prestop >> /tmp/order"]}},
    });
    apply(&n.api, &pod(&name, &n.name, script, json!({"lifecycle": lifecycle})))
        .await
        .unwrap();
    let p = n
        .wait_pod(&name, "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let log = n
        .keel
        .pod_logs_dir()
        .join(format!("default_{name}_{uid}"))
        .join("main")
        .join("0.log");
    wait_for("saw-poststart", T, || async {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains("saw-poststart"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    let out = n
        .api
        .kubectl(&["delete", "pod", &name, "-n", "default", "--wait=false"])
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = wait_for("the order line", T, || async {
        std::fs::read_to_string(&log).ok().filter(|l| l.contains("order:"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", std::fs::read_to_string(&log), n.keel.log_tail(40)));
    assert!(text.contains("order: poststart prestop"), "{text}");
    delete_all(&n).await;
}
