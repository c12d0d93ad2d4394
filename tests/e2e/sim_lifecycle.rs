//! Pod lifecycle on the simulated backend, through kubectl against the test API server:
//! status, restart policies, crash-loop back-off, init containers, graceful deletion, images.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::util::*;

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_goes_running_and_ready_with_a_complete_status() {
    let n = Node::start(1.0, &[]).await.unwrap();
    apply(&n.api, &pod_yaml("web", &n.name, "Always", "echo hello; sleep 3600"))
        .await
        .unwrap();
    let p = n
        .wait_pod("web", "Running and Ready", T, |p| {
            phase(p) == "Running" && condition(p, "Ready").is_some_and(|c| c["status"] == "True")
        })
        .await
        .unwrap();
    for c in [
        "PodScheduled",
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
    ] {
        let cond = condition(&p, c).unwrap_or_else(|| panic!("condition {c} missing: {p}"));
        assert_eq!(cond["status"], "True", "{c}");
        assert!(cond["lastTransitionTime"].is_string(), "{c} has a transition time");
    }
    let s = &p["status"];
    assert!(s["hostIP"].as_str().is_some_and(|ip| !ip.is_empty()), "hostIP: {s}");
    assert_eq!(s["hostIPs"][0]["ip"], s["hostIP"]);
    let pod_ip = s["podIP"].as_str().unwrap_or_default();
    assert!(pod_ip.parse::<std::net::IpAddr>().is_ok(), "podIP {pod_ip:?}");
    assert_eq!(s["podIPs"][0]["ip"], s["podIP"]);
    assert!(s["startTime"].is_string());
    assert_eq!(s["qosClass"], "BestEffort");
    let cs = &s["containerStatuses"][0];
    assert_eq!(cs["name"], "main");
    assert_eq!(cs["ready"], true);
    assert_eq!(cs["started"], true);
    assert_eq!(cs["restartCount"], 0);
    assert!(cs["state"]["running"]["startedAt"].is_string(), "{cs}");
    // As with containerd, the runtime reports the normalized image name.
    assert_eq!(cs["image"], "docker.io/library/busybox:1.36");
    assert!(cs["imageID"].as_str().is_some_and(|i| !i.is_empty()), "{cs}");
    assert!(
        cs["containerID"].as_str().is_some_and(|i| i.starts_with("sim://")),
        "{cs}"
    );
    // The kubelet's events for the pod, from source kubelet.
    let ev = wait_for("Started event", T, || async {
        let items = events_about(&n.api, "web").await;
        let reasons: Vec<&str> = items.iter().filter_map(|e| e["reason"].as_str()).collect();
        ["Pulling", "Pulled", "Created", "Started"]
            .iter()
            .all(|r| reasons.contains(r))
            .then_some(items.clone())
    })
    .await
    .unwrap();
    assert!(
        ev.iter()
            .all(|e| e["source"]["component"] == "kubelet" || e["reportingComponent"] == "kubelet"),
        "{ev:?}"
    );
}

/// Expected end state of one restartPolicy × exit-code pod.
struct Case {
    policy: &'static str,
    code: i32,
    phase: &'static str,
    restarts: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policy_by_exit_code_matrix() {
    // Compressed clock: back-offs of 10 s, 20 s … last 1 s, 2 s … of real time.
    let n = Node::start(10.0, &[]).await.unwrap();
    let cases = [
        Case {
            policy: "Always",
            code: 0,
            phase: "Running",
            restarts: true,
        },
        Case {
            policy: "Always",
            code: 1,
            phase: "Running",
            restarts: true,
        },
        Case {
            policy: "OnFailure",
            code: 0,
            phase: "Succeeded",
            restarts: false,
        },
        Case {
            policy: "OnFailure",
            code: 1,
            phase: "Running",
            restarts: true,
        },
        Case {
            policy: "Never",
            code: 0,
            phase: "Succeeded",
            restarts: false,
        },
        Case {
            policy: "Never",
            code: 1,
            phase: "Failed",
            restarts: false,
        },
    ];
    for c in &cases {
        let name = format!("m-{}-{}", c.policy.to_lowercase(), c.code);
        apply(
            &n.api,
            &pod_yaml(&name, &n.name, c.policy, &format!("sleep 1; exit {}", c.code)),
        )
        .await
        .unwrap();
    }
    for c in &cases {
        let name = format!("m-{}-{}", c.policy.to_lowercase(), c.code);
        let p = if c.restarts {
            n.wait_pod(&name, "two restarts", T, |p| {
                p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(2)
            })
            .await
            .unwrap()
        } else {
            n.wait_pod(&name, "terminal phase", T, |p| phase(p) == c.phase)
                .await
                .unwrap()
        };
        assert_eq!(phase(&p), c.phase, "{name}: {}", p["status"]);
        let cs = &p["status"]["containerStatuses"][0];
        if c.restarts {
            // The previous run is kept as lastState with its exit code and reason.
            let last = &cs["lastState"]["terminated"];
            assert_eq!(last["exitCode"], c.code, "{name}: {cs}");
            assert_eq!(
                last["reason"],
                if c.code == 0 { "Completed" } else { "Error" },
                "{name}"
            );
        } else {
            assert_eq!(cs["restartCount"], 0, "{name}");
            let t = &cs["state"]["terminated"];
            assert_eq!(t["exitCode"], c.code, "{name}: {cs}");
            assert_eq!(t["reason"], if c.code == 0 { "Completed" } else { "Error" }, "{name}");
            assert_eq!(cs["ready"], false);
            // Ready is False once the pod completed.
            let ready = condition(&p, "Ready").unwrap();
            assert_eq!(ready["status"], "False", "{name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_back_off_doubles_from_ten_seconds() {
    let scale = 10.0;
    let n = Node::start(scale, &[]).await.unwrap();
    apply(&n.api, &pod_yaml("crash", &n.name, "Always", "echo started; exit 1"))
        .await
        .unwrap();
    // Each instance logs one line when it starts, in <ns>_<pod>_<uid>/<container>/<N>.log; the
    // CRI timestamp gives its start time to the nanosecond. Dead instances (and their logs) are
    // garbage-collected as the kubelet does (one kept), so read each log while it exists,
    // starting right away (no API round trip: the directory is found by its prefix).
    let starts = instance_start_times(
        &n.keel.pod_logs_dir(),
        "default_crash_",
        "main",
        "started",
        4,
        Duration::from_secs(40),
    )
    .await;
    // Instance 0 lives only until instance 1 dies; under heavy load it may be collected unseen.
    assert!(
        (1..5).all(|i| starts.contains_key(&i)),
        "instances seen: {starts:?}\n{}",
        n.keel.log_tail(30)
    );
    // Between restarts the container waits in CrashLoopBackOff with the kubelet's message.
    let p = n
        .wait_pod("crash", "CrashLoopBackOff", T, |p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        })
        .await
        .unwrap();
    let msg = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        msg.starts_with("back-off ") && msg.contains("restarting failed container=main pod=crash_default("),
        "{msg}"
    );
    // The first restart is immediate; then 10, 20, 40 virtual seconds, measured from the exit.
    if let (Some(s0), Some(s1)) = (starts.get(&0), starts.get(&1)) {
        assert!((s1 - s0) * scale < 3.0, "first restart is immediate: {starts:?}");
    }
    for (i, want) in [(1usize, 10.0), (2, 20.0), (3, 40.0)] {
        let gap = (starts[&(i + 1)] - starts[&i]) * scale;
        // Never before the back-off ends; at most a relist (1 s) and a little later.
        assert!(
            gap >= want && gap <= want + 3.0,
            "restart {i}→{}: {gap:.2} virtual s, want {want}",
            i + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_run_in_order_then_the_main_container() {
    let n = Node::start(1.0, &[]).await.unwrap();
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: init-order, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: Never
  initContainers:
  - {{name: first, image: busybox:1.36, command: [sh, -c, "echo one; sleep 1"]}}
  - {{name: second, image: busybox:1.36, command: [sh, -c, "echo two; sleep 1"]}}
  containers:
  - {{name: main, image: busybox:1.36, command: [sh, -c, "echo main"]}}
"#,
        node = n.name
    );
    apply(&n.api, &manifest).await.unwrap();
    // While the first runs, the main container waits with PodInitializing.
    let p = n
        .wait_pod("init-order", "first init running", T, |p| {
            p["status"]["initContainerStatuses"][0]["state"]["running"].is_object()
        })
        .await
        .unwrap();
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "PodInitializing"
    );
    assert_eq!(phase(&p), "Pending");
    assert_eq!(condition(&p, "Initialized").unwrap()["status"], "False");
    let p = n
        .wait_pod("init-order", "Succeeded", T, |p| phase(p) == "Succeeded")
        .await
        .unwrap();
    let inits = p["status"]["initContainerStatuses"].as_array().unwrap();
    assert_eq!(inits.len(), 2);
    assert_eq!(inits[0]["name"], "first");
    assert_eq!(inits[1]["name"], "second");
    let fin0 = inits[0]["state"]["terminated"]["finishedAt"].as_str().unwrap();
    let start1 = inits[1]["state"]["terminated"]["startedAt"].as_str().unwrap();
    assert!(
        fin0 <= start1,
        "second init started before the first finished: {fin0} > {start1}"
    );
    for i in inits {
        assert_eq!(i["state"]["terminated"]["exitCode"], 0);
        assert_eq!(i["ready"], true);
    }
    let main_start = p["status"]["containerStatuses"][0]["state"]["terminated"]["startedAt"]
        .as_str()
        .unwrap();
    let fin1 = inits[1]["state"]["terminated"]["finishedAt"].as_str().unwrap();
    assert!(fin1 <= main_start);
    assert_eq!(condition(&p, "Initialized").unwrap()["status"], "True");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_init_container_under_each_restart_policy() {
    let n = Node::start(10.0, &[]).await.unwrap();
    for policy in ["Never", "OnFailure", "Always"] {
        let manifest = format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: init-fail-{lower}, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: {policy}
  initContainers:
  - {{name: init1, image: busybox:1.36, command: [sh, -c, "exit 2"]}}
  - {{name: init2, image: busybox:1.36, command: [sh, -c, "true"]}}
  containers:
  - {{name: main, image: busybox:1.36, command: [sh, -c, "sleep 3600"]}}
"#,
            lower = policy.to_lowercase(),
            node = n.name
        );
        apply(&n.api, &manifest).await.unwrap();
    }
    // Never: the pod fails.
    let p = n
        .wait_pod("init-fail-never", "Failed", T, |p| phase(p) == "Failed")
        .await
        .unwrap();
    let init = condition(&p, "Initialized").unwrap();
    assert_eq!(init["status"], "False");
    assert_eq!(init["reason"], "ContainersNotInitialized");
    assert_eq!(init["message"], "containers with incomplete status: [init1 init2]");
    assert_eq!(
        p["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"],
        2
    );
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "PodInitializing"
    );
    // OnFailure and Always: the init container is retried; the app never starts.
    for name in ["init-fail-onfailure", "init-fail-always"] {
        let p = n
            .wait_pod(name, "init1 retried", T, |p| {
                p["status"]["initContainerStatuses"][0]["restartCount"].as_i64() >= Some(2)
            })
            .await
            .unwrap();
        assert_eq!(phase(&p), "Pending", "{name}");
        let main = &p["status"]["containerStatuses"][0];
        assert_eq!(main["state"]["waiting"]["reason"], "PodInitializing", "{name}");
        assert_eq!(main["restartCount"], 0, "{name}");
        assert_eq!(condition(&p, "Initialized").unwrap()["status"], "False");
    }
}

async fn delete_and_time(n: &Node, name: &str) -> Duration {
    let t0 = Instant::now();
    let out = n
        .api
        .kubectl(&["delete", "pod", name, "-n", "default", "--wait=false"])
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("pod object gone", Duration::from_secs(60), || async {
        n.pod(name).await.is_none().then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_honours_the_grace_period() {
    let n = Node::start(1.0, &[]).await.unwrap();
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
    apply(&n.api, &mk("stubborn", "trap '' TERM; sleep 3600"))
        .await
        .unwrap();
    apply(&n.api, &mk("polite", "sleep 3600")).await.unwrap();
    for p in ["stubborn", "polite"] {
        n.wait_pod(p, "Running", T, |p| phase(p) == "Running").await.unwrap();
    }
    let took = delete_and_time(&n, "stubborn").await;
    assert!(
        took >= Duration::from_secs(4),
        "a SIGTERM-ignoring container is killed at the 4 s deadline, took {took:?}"
    );
    assert!(took < Duration::from_secs(12), "took {took:?}");
    let took = delete_and_time(&n, "polite").await;
    assert!(
        took < Duration::from_secs(3),
        "a container that exits on SIGTERM goes at once, took {took:?}"
    );
    let logs = n.keel.logs();
    assert!(!logs.contains("panicked"), "keel panicked:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_pod_shows_deletion_timestamp_until_killed() {
    let n = Node::start(1.0, &[]).await.unwrap();
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: slow, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 3
  containers:
  - {{name: main, image: busybox:1.36, command: [sh, -c, "trap '' TERM; sleep 3600"]}}
"#,
        node = n.name
    );
    apply(&n.api, &manifest).await.unwrap();
    n.wait_pod("slow", "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    let out = n.api.kubectl(&["delete", "pod", "slow", "--wait=false"]).await;
    assert!(out.status.success());
    let p = n.pod("slow").await.expect("still there during the grace period");
    assert!(p["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 3);
    wait_for("gone", Duration::from_secs(30), || async {
        n.pod("slow").await.is_none().then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_errors_show_the_kubelet_reasons() {
    let n = Node::start(10.0, &[]).await.unwrap();
    let mk = |name: &str, image: &str, policy: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  containers:
  - {{name: main, image: "{image}", imagePullPolicy: {policy}, command: [sh, -c, "sleep 3600"]}}
"#,
            node = n.name
        )
    };
    apply(&n.api, &mk("missing", "registry.invalid/nothing:1", "IfNotPresent"))
        .await
        .unwrap();
    apply(&n.api, &mk("never", "busybox:9.99-not-here", "Never"))
        .await
        .unwrap();
    let reason = |p: &Value| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    // ErrImagePull first, then ImagePullBackOff while the pull back-off runs.
    n.wait_pod("missing", "ErrImagePull", T, |p| reason(p) == "ErrImagePull")
        .await
        .unwrap();
    let p = n
        .wait_pod("missing", "ImagePullBackOff", T, |p| reason(p) == "ImagePullBackOff")
        .await
        .unwrap();
    assert_eq!(phase(&p), "Pending");
    let p = n
        .wait_pod("never", "ErrImageNeverPull", T, |p| reason(p) == "ErrImageNeverPull")
        .await
        .unwrap();
    let msg = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        msg,
        "Container image \"busybox:9.99-not-here\" is not present with pull policy of Never"
    );
    let reasons = event_reasons(&n.api, "missing").await;
    assert!(
        reasons.iter().any(|r| r == "Failed") && reasons.iter().any(|r| r == "BackOff"),
        "{reasons:?}"
    );
}
