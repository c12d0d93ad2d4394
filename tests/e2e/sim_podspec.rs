//! Pod settings on the simulated backend, through kubectl against the test API server: sidecars
//! (init containers with `restartPolicy: Always`) start in order before the next init container,
//! run alongside the main container and are restarted when they exit; a missing Secret blocks a
//! container with CreateContainerConfigError until the Secret appears; a `resourceFieldRef`
//! without a divisor (the server stores "0") reads as divisor 1 in env vars and downward API files.

use std::time::Duration;

use serde_json::Value;

use crate::support::util::*;

const T: Duration = Duration::from_secs(60);

fn init_status<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["status"]["initContainerStatuses"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

fn started_at(s: &Value) -> String {
    let st = &s["state"];
    st["running"]["startedAt"]
        .as_str()
        .or(st["terminated"]["startedAt"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_start_in_order_run_alongside_and_restart() {
    let n = Node::start(1.0, &[]).await.unwrap();
    let name = unique("sidecars");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  initContainers:
  - {{name: side-a, image: busybox:1.36, restartPolicy: Always, command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]}}
  - {{name: setup, image: busybox:1.36, command: [sh, -c, "echo setup; sleep 5"]}}
  - {{name: side-flaky, image: busybox:1.36, restartPolicy: Always, command: [sh, -c, "sleep 1; exit 3"]}}
  containers:
  - {{name: main, image: busybox:1.36, command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]}}
"#,
        node = n.name
    );
    apply(&n.api, &manifest).await.unwrap();
    // The regular init container runs while the first sidecar keeps running.
    let p = n
        .wait_pod(&name, "setup running beside side-a", T, |p| {
            init_status(p, "setup")["state"]["running"].is_object()
        })
        .await
        .unwrap();
    assert!(
        init_status(&p, "side-a")["state"]["running"].is_object(),
        "{}",
        p["status"]
    );
    assert!(
        init_status(&p, "side-flaky")["state"]["waiting"].is_object(),
        "{}",
        p["status"]
    );
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "PodInitializing"
    );
    // side-flaky exits with 3 and is restarted even under restartPolicy Never; the main
    // container keeps running and side-a is never restarted.
    let p = n
        .wait_pod(&name, "side-flaky restarted while main runs", T, |p| {
            p["status"]["containerStatuses"][0]["state"]["running"].is_object()
                && init_status(p, "side-flaky")["restartCount"].as_i64().unwrap_or(0) >= 1
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    assert_eq!(phase(&p), "Running");
    assert_eq!(init_status(&p, "side-a")["restartCount"], 0);
    assert!(
        init_status(&p, "side-a")["state"]["running"].is_object(),
        "{}",
        p["status"]
    );
    assert_eq!(init_status(&p, "setup")["state"]["terminated"]["exitCode"], 0);
    let side_a = started_at(init_status(&p, "side-a"));
    let setup = started_at(init_status(&p, "setup"));
    let setup_done = init_status(&p, "setup")["state"]["terminated"]["finishedAt"]
        .as_str()
        .unwrap()
        .to_string();
    let main = started_at(&p["status"]["containerStatuses"][0]);
    assert!(side_a <= setup, "{side_a} > {setup}");
    assert!(setup_done <= main, "{setup_done} > {main}");
    assert!(!n.keel.logs().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_blocks_the_container_until_it_appears() {
    let n = Node::start(1.0, &[]).await.unwrap();
    let name = unique("needs-secret");
    let secret = unique("later");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: Always
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: busybox:1.36
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
    env:
    - name: TOKEN
      valueFrom: {{secretKeyRef: {{name: {secret}, key: token}}}}
"#,
        node = n.name
    );
    apply(&n.api, &manifest).await.unwrap();
    let p = n
        .wait_pod(&name, "CreateContainerConfigError", T, |p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CreateContainerConfigError"
        })
        .await
        .unwrap();
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
        format!("secret \"{secret}\" not found")
    );
    assert_eq!(phase(&p), "Pending");
    let out = n
        .api
        .kubectl(&[
            "create",
            "secret",
            "generic",
            &secret,
            "-n",
            "default",
            "--from-literal=token=s3cr3t",
        ])
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Nothing else happens to the pod: the retry of the failed sync starts it.
    n.wait_pod(&name, "Running", T, |p| {
        p["status"]["containerStatuses"][0]["state"]["running"].is_object()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_field_refs_without_divisor_read_as_one() {
    let n = Node::start(1.0, &[]).await.unwrap();
    let name = unique("divisor");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  volumes:
  - name: info
    downwardAPI:
      items: [{{path: mem, resourceFieldRef: {{containerName: main, resource: limits.memory}}}}]
  containers:
  - name: main
    image: busybox:1.36
    resources: {{limits: {{cpu: "2", memory: 64Mi}}, requests: {{cpu: 250m}}}}
    command: [sh, -c, "echo cpu=$CPU req=$REQ mem=$(cat /etc/info/mem)"]
    volumeMounts: [{{name: info, mountPath: /etc/info}}]
    env:
    - {{name: CPU, valueFrom: {{resourceFieldRef: {{resource: limits.cpu}}}}}}
    - {{name: REQ, valueFrom: {{resourceFieldRef: {{resource: requests.cpu}}}}}}
"#,
        node = n.name
    );
    apply(&n.api, &manifest).await.unwrap();
    let p = n
        .wait_pod(&name, "Succeeded", T, |p| phase(p) == "Succeeded")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    // What the server stored: the defaulted divisor keel has to accept.
    assert_eq!(
        p["spec"]["containers"][0]["env"][0]["valueFrom"]["resourceFieldRef"]["divisor"],
        "0"
    );
    let out = n.api.kubectl(&["logs", &name, "-n", "default"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // ceil(250m / 1) = 1 core; 64Mi in bytes.
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "cpu=2 req=1 mem=67108864");
}
