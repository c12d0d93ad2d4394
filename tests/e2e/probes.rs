//! Probes and lifecycle hooks on the simulated backend, through kubectl (kubelet-behavior.md §2.8,
//! §2.9, catalogue §5.4 and §5.9): readiness gating Ready, liveness restarts, startup probes,
//! HTTP/TCP probes against local listeners from a hostNetwork pod, hook order, readiness gates.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::util::*;

const T: Duration = Duration::from_secs(60);

/// A node on a compressed clock. Disk-pressure thresholds are lowered: these tests are about
/// probes, not about how full the build machine's disk happens to be.
async fn start_node(scale: f64) -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::start_with_config(scale, &[], NO_EVICTION).await.unwrap();
    (n, dir)
}

/// A pod bound to `node` with one container `main` running `script`; `container` and `spec`
/// fields are merged in.
fn pod(name: &str, node: &str, script: &str, container: Value, spec: Value) -> String {
    let mut c = json!({"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", script]});
    merge(&mut c, container);
    let mut s = json!({
        "nodeName": node, "restartPolicy": "Always", "terminationGracePeriodSeconds": 5,
        "containers": [c]
    });
    merge(&mut s, spec);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": s})
        .to_string()
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        for (k, v) in b {
            a.insert(k, v);
        }
    }
}

fn exec_probe(cmd: &[&str], extra: Value) -> Value {
    let mut p = json!({"exec": {"command": cmd}, "periodSeconds": 1, "failureThreshold": 1});
    merge(&mut p, extra);
    p
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

fn messages(events: &[Value], reason: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["reason"] == reason)
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect()
}

/// Waits for an event with `reason` whose message satisfies `pred`.
async fn wait_event(n: &Node, pod: &str, reason: &str, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let r = wait_for(&format!("{reason} event"), T, || async {
        let msgs = messages(&events_about(&n.api, pod).await, reason);
        msgs.iter().any(|m| pred(m)).then_some(msgs)
    })
    .await;
    match r {
        Ok(m) => m,
        Err(e) => panic!(
            "{e}; events: {:?}\nkeel log:\n{}",
            events_about(&n.api, pod).await,
            n.keel.log_tail(40)
        ),
    }
}

/// §5.4 #20/#26: not Ready before the initial delay, Ready while the file exists, not Ready once
/// it is gone; never restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_readiness_exec_probe_gates_ready() {
    let scale = 5.0;
    let (n, _cfg) = start_node(scale).await;
    let probe = exec_probe(
        &["cat", "/tmp/ready"],
        json!({"initialDelaySeconds": 15, "periodSeconds": 2}),
    );
    let manifest = pod(
        "ready",
        &n.name,
        "touch /tmp/ready; sleep 40; rm /tmp/ready; sleep 3600",
        json!({"readinessProbe": probe}),
        json!({}),
    );
    apply(&n.api, &manifest).await.unwrap();
    let p = n
        .wait_pod("ready", "Running, not ready", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    assert!(!ready(&p), "ready before the initial delay: {}", p["status"]);
    assert_eq!(cs(&p)["started"], true);
    let cr = condition(&p, "ContainersReady").unwrap();
    assert_eq!(cr["status"], "False");
    assert_eq!(cr["reason"], "ContainersNotReady");
    let p = n.wait_pod("ready", "Ready", T, ready).await.unwrap();
    assert_eq!(cs(&p)["ready"], true);
    // Ready came no earlier than the initial delay after the start (second precision).
    let started: jiff::Timestamp = cs(&p)["state"]["running"]["startedAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let became: jiff::Timestamp = condition(&p, "Ready").unwrap()["lastTransitionTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let virtual_secs = (became.as_second() - started.as_second()) as f64 * scale;
    assert!(
        virtual_secs >= 15.0 - scale,
        "ready {virtual_secs} virtual s after start"
    );
    // The file goes away after 40 virtual seconds: not ready again, not restarted.
    let p = n.wait_pod("ready", "not Ready again", T, |p| !ready(p)).await.unwrap();
    assert_eq!(restarts(&p), 0);
    assert_eq!(condition(&p, "Ready").unwrap()["reason"], "ContainersNotReady");
    let msgs = wait_event(&n, "ready", "Unhealthy", |m| m.starts_with("Readiness probe failed: ")).await;
    assert!(
        msgs.iter()
            .any(|m| m == "Readiness probe failed: cat: can't open '/tmp/ready': No such file or directory\n"),
        "{msgs:?}"
    );
}

/// §5.4 #22/#23: an exec liveness probe restarts the container once the file is gone; a healthy
/// one never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_liveness_exec_probe_restarts_only_unhealthy_containers() {
    let (n, _cfg) = start_node(10.0).await;
    let live = exec_probe(&["cat", "/tmp/health"], json!({"initialDelaySeconds": 15}));
    apply(
        &n.api,
        &pod(
            "sick",
            &n.name,
            "touch /tmp/health; sleep 10; rm /tmp/health; sleep 3600",
            json!({"livenessProbe": live.clone()}),
            json!({}),
        ),
    )
    .await
    .unwrap();
    apply(
        &n.api,
        &pod(
            "healthy",
            &n.name,
            "touch /tmp/health; sleep 3600",
            json!({"livenessProbe": live}),
            json!({}),
        ),
    )
    .await
    .unwrap();
    let p = n.wait_pod("sick", "restarted", T, |p| restarts(p) >= 1).await.unwrap();
    // Killed by SIGTERM (no trap in the script): exit 143.
    assert_eq!(cs(&p)["lastState"]["terminated"]["exitCode"], 143, "{}", p["status"]);
    wait_event(&n, "sick", "Killing", |m| {
        m == "Container main failed liveness probe, will be restarted"
    })
    .await;
    wait_event(&n, "sick", "Unhealthy", |m| {
        m == "Liveness probe failed: cat: can't open '/tmp/health': No such file or directory\n"
    })
    .await;
    // The healthy pod has been probed for well over its initial delay and never restarted.
    let h = n.pod("healthy").await.unwrap();
    assert_eq!(restarts(&h), 0, "{}", h["status"]);
    assert!(ready(&h));
    assert!(messages(&events_about(&n.api, "healthy").await, "Unhealthy").is_empty());
}

/// §5.4 #28: a startup probe holds liveness and readiness back; once it succeeds the container
/// is started and ready at once (readiness period 30 s); liveness then restarts it; a startup
/// probe that keeps failing restarts the container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_startup_probe_gates_liveness_and_readiness() {
    let scale = 10.0;
    let (n, _cfg) = start_node(scale).await;
    let container = json!({
        // Every 4 s: a failure a second would spend the pod's event budget (client-go's spam
        // filter, 25 events per object) before the liveness Killing event below.
        "startupProbe": exec_probe(&["cat", "/tmp/started"], json!({"periodSeconds": 4, "failureThreshold": 15})),
        // Would kill the container at once if it ran before startup succeeded.
        "livenessProbe": exec_probe(&["cat", "/tmp/health"], json!({})),
        "readinessProbe": exec_probe(&["true"], json!({"periodSeconds": 30})),
    });
    apply(
        &n.api,
        &pod(
            "slow-start",
            &n.name,
            "sleep 20; touch /tmp/health; touch /tmp/started; sleep 20; rm /tmp/health; sleep 3600",
            container,
            json!({}),
        ),
    )
    .await
    .unwrap();
    apply(
        &n.api,
        &pod(
            "never-starts",
            &n.name,
            "sleep 3600",
            json!({"startupProbe": exec_probe(&["false"], json!({"failureThreshold": 3}))}),
            json!({}),
        ),
    )
    .await
    .unwrap();
    let p = n
        .wait_pod("slow-start", "running, not started", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    assert_eq!(cs(&p)["started"], false, "{}", p["status"]);
    assert_eq!(cs(&p)["ready"], false);
    let p = n
        .wait_pod("slow-start", "started", T, |p| cs(p)["started"] == true)
        .await
        .unwrap();
    assert_eq!(
        restarts(&p),
        0,
        "liveness ran before startup succeeded: {}",
        p["status"]
    );
    let t0 = std::time::Instant::now();
    n.wait_pod("slow-start", "ready", T, ready).await.unwrap();
    // Well within the 30 s readiness period: the readiness probe ran as soon as it was started.
    assert!(
        t0.elapsed().as_secs_f64() * scale < 25.0,
        "ready {:?} after started",
        t0.elapsed()
    );
    let p = n
        .wait_pod("slow-start", "restarted by liveness", T, |p| restarts(p) >= 1)
        .await
        .unwrap();
    assert_eq!(cs(&p)["lastState"]["terminated"]["exitCode"], 143);
    wait_event(&n, "slow-start", "Killing", |m| {
        m == "Container main failed liveness probe, will be restarted"
    })
    .await;

    n.wait_pod("never-starts", "restarted by startup", T, |p| restarts(p) >= 1)
        .await
        .unwrap();
    wait_event(&n, "never-starts", "Killing", |m| {
        m == "Container main failed startup probe, will be restarted"
    })
    .await;
    wait_event(&n, "never-starts", "Unhealthy", |m| m == "Startup probe failed: ").await;
}

/// §5.4 #27: a redirect to another host is not followed: the probe succeeds with a
/// ProbeWarning naming the target, and the container is never restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_non_local_redirect_is_a_warning_not_a_failure() {
    let (n, _cfg) = start_node(10.0).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = "<a href=\"http://0.0.0.0/\">Found</a>.";
                let resp = format!(
                    "HTTP/1.1 302 Found\r\nLocation: http://0.0.0.0/\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    let container = json!({
        "livenessProbe": {"httpGet": {"host": "127.0.0.1", "port": port, "path": "/redirect"},
                          "periodSeconds": 1, "failureThreshold": 1},
    });
    apply(&n.api, &pod("redirect", &n.name, "sleep 3600", container, json!({})))
        .await
        .unwrap();
    wait_event(&n, "redirect", "ProbeWarning", |m| {
        m.starts_with("Liveness probe warning: Probe terminated redirects, Response body: ") && m.contains("0.0.0.0")
    })
    .await;
    // Many probe periods later: never restarted, never unhealthy.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = n.pod("redirect").await.unwrap();
    assert_eq!(restarts(&p), 0, "{}", p["status"]);
    assert!(messages(&events_about(&n.api, "redirect").await, "Unhealthy").is_empty());
}

/// A liveness kill uses the probe's own terminationGracePeriodSeconds: a container ignoring
/// SIGTERM in a pod with a 300 s grace period is restarted after 2 s (the minimum), not 300 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_probe_level_grace_period_bounds_the_liveness_kill() {
    let scale = 10.0;
    let (n, _cfg) = start_node(scale).await;
    let container = json!({"livenessProbe": exec_probe(&["false"], json!({"terminationGracePeriodSeconds": 1}))});
    apply(
        &n.api,
        &pod(
            "stubborn",
            &n.name,
            "trap '' TERM; sleep 3600",
            container,
            json!({"terminationGracePeriodSeconds": 300}),
        ),
    )
    .await
    .unwrap();
    let t0 = std::time::Instant::now();
    let p = n
        .wait_pod("stubborn", "restarted", T, |p| restarts(p) >= 1)
        .await
        .unwrap();
    // 300 virtual seconds would be 30 s here.
    assert!(t0.elapsed() < Duration::from_secs(15), "took {:?}", t0.elapsed());
    // SIGKILL after the grace period.
    assert_eq!(cs(&p)["lastState"]["terminated"]["exitCode"], 137, "{}", p["status"]);
}

/// A local HTTP server on 127.0.0.1 answering 500 while `bad` is set, else 200.
async fn health_server(bad: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let bad = bad.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let status = if bad.load(Ordering::SeqCst) {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").as_bytes(),
                    )
                    .await;
            });
        }
    });
    port
}

/// §5.4 #24: an HTTP liveness probe against a local listener restarts the hostNetwork pod's
/// container exactly while the endpoint fails; a TCP readiness probe follows a listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_http_and_tcp_probes_against_local_listeners() {
    let (n, _cfg) = start_node(10.0).await;
    let bad = Arc::new(AtomicBool::new(true));
    let http_port = health_server(bad.clone()).await;
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_port = tcp.local_addr().unwrap().port();
    let container = json!({
        "ports": [{"name": "health", "containerPort": http_port}],
        "livenessProbe": {"httpGet": {"host": "127.0.0.1", "port": "health", "path": "/healthz"},
                          "periodSeconds": 1, "failureThreshold": 2},
        "readinessProbe": {"tcpSocket": {"host": "127.0.0.1", "port": tcp_port}, "periodSeconds": 1,
                           "failureThreshold": 1},
    });
    apply(
        &n.api,
        &pod("net", &n.name, "sleep 3600", container, json!({"hostNetwork": true})),
    )
    .await
    .unwrap();
    n.wait_pod("net", "restarted by the HTTP probe", T, |p| restarts(p) >= 1)
        .await
        .unwrap();
    wait_event(&n, "net", "Unhealthy", |m| {
        m == "Liveness probe failed: HTTP probe failed with statuscode: 500"
    })
    .await;
    bad.store(false, Ordering::SeqCst);
    // Ready while the TCP listener accepts.
    let p = n.wait_pod("net", "Ready", T, ready).await.unwrap();
    let count = restarts(&p);
    // The endpoint is healthy now: no more restarts over 30 virtual seconds of probing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = n.pod("net").await.unwrap();
    assert!(restarts(&p) <= count + 1, "kept restarting: {}", p["status"]);
    let settled = restarts(&p);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = n.pod("net").await.unwrap();
    assert_eq!(
        restarts(&p),
        settled,
        "restarted with a healthy endpoint: {}",
        p["status"]
    );
    // The listener goes away: not ready, and a TCP failure event names the address. The event
    // is looked for on a fresh pod probing the same port: "net" has spent its event budget
    // (client-go's spam filter: 25 events per object, then one per 5 minutes).
    drop(tcp);
    n.wait_pod("net", "not Ready", T, |p| !ready(p)).await.unwrap();
    let readiness = json!({
        "readinessProbe": {"tcpSocket": {"host": "127.0.0.1", "port": tcp_port}, "periodSeconds": 1,
                           "failureThreshold": 1},
    });
    apply(
        &n.api,
        &pod("net2", &n.name, "sleep 3600", readiness, json!({"hostNetwork": true})),
    )
    .await
    .unwrap();
    let msgs = wait_event(&n, "net2", "Unhealthy", |m| m.starts_with("Readiness probe failed: ")).await;
    let want = format!("Readiness probe failed: dial tcp 127.0.0.1:{tcp_port}: connect: connection refused");
    assert!(msgs.contains(&want), "{msgs:?}");
}

/// §5.9 #49: postStart runs before the container is considered started and preStop before the
/// container gets SIGTERM; the order is visible in the container's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_hooks_run_in_order() {
    let (n, _cfg) = start_node(10.0).await;
    let script = "until [ -f /tmp/poststart ]; do sleep 1; done; echo saw-poststart; \
                  trap 'echo got-term; sleep 30; exit 0' TERM; \
                  while true; do if [ -f /tmp/prestop ]; then echo saw-prestop; rm /tmp/prestop; fi; sleep 1; done";
    let lifecycle = json!({
        "postStart": {"exec": {"command": ["sh", "-c", "echo poststart > /tmp/poststart"]}},
        "preStop": {"exec": {"command": ["sh", "-c", "echo prestop > /tmp/prestop; sleep 3"]}},
    });
    apply(
        &n.api,
        // A long grace period and a slow exit keep the log file (removed with the container)
        // around long enough for the poll below to see got-term.
        &pod(
            "hooks",
            &n.name,
            script,
            json!({"lifecycle": lifecycle}),
            json!({"terminationGracePeriodSeconds": 60}),
        ),
    )
    .await
    .unwrap();
    let p = n
        .wait_pod("hooks", "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let log = n
        .keel
        .pod_logs_dir()
        .join(format!("default_hooks_{uid}"))
        .join("main")
        .join("0.log");
    wait_for("saw-poststart in the log", T, || async {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains("saw-poststart"))
    })
    .await
    .unwrap();
    let out = n
        .api
        .kubectl(&["delete", "pod", "hooks", "-n", "default", "--wait=false"])
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = wait_for("got-term in the log", T, || async {
        std::fs::read_to_string(&log).ok().filter(|l| l.contains("got-term"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", std::fs::read_to_string(&log), n.keel.log_tail(40)));
    let pos = |s: &str| text.find(s).unwrap_or_else(|| panic!("{s} missing in {text}"));
    assert!(pos("saw-poststart") < pos("saw-prestop"), "{text}");
    assert!(pos("saw-prestop") < pos("got-term"), "{text}");
}

/// §5.9 #49: HTTP postStart and preStop hooks reach a server (here on 127.0.0.1 from a
/// hostNetwork pod) in order. The server cleans paths like Go's ServeMux (a 301 for `//echo`),
/// which the kubelet's hook URL (`http://host:port/` + path) relies on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_http_hooks_reach_the_server_in_order() {
    let (n, _cfg) = start_node(10.0).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let len = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..len]).into_owned();
                let target = req.split(' ').nth(1).unwrap_or("").to_string();
                let resp = if let Some(clean) = target.strip_prefix('/').filter(|t| t.starts_with('/')) {
                    format!("HTTP/1.1 301 Moved Permanently\r\nLocation: {clean}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                } else {
                    log.lock().unwrap().push(target);
                    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                };
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    let lifecycle = json!({
        "postStart": {"httpGet": {"host": "127.0.0.1", "port": port, "path": "/echo?msg=poststart"}},
        "preStop": {"httpGet": {"host": "127.0.0.1", "port": port, "path": "/echo?msg=prestop"}},
    });
    apply(
        &n.api,
        &pod(
            "httphooks",
            &n.name,
            "sleep 3600",
            json!({"lifecycle": lifecycle}),
            json!({"hostNetwork": true}),
        ),
    )
    .await
    .unwrap();
    n.wait_pod("httphooks", "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    wait_for("the postStart request", T, || async {
        (!seen.lock().unwrap().is_empty()).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(seen.lock().unwrap().clone(), vec!["/echo?msg=poststart".to_string()]);
    let out = n
        .api
        .kubectl(&["delete", "pod", "httphooks", "-n", "default", "--wait=false"])
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("the preStop request", T, || async {
        (seen.lock().unwrap().len() >= 2).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec!["/echo?msg=poststart".to_string(), "/echo?msg=prestop".to_string()]
    );
}

/// A failing postStart hook: FailedPostStartHook with the kubelet's message, the container is
/// killed and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_failing_post_start_hook_kills_the_container() {
    let (n, _cfg) = start_node(10.0).await;
    let lifecycle = json!({"postStart": {"exec": {"command": ["sh", "-c", "echo oops; exit 3"]}}});
    apply(
        &n.api,
        &pod(
            "badhook",
            &n.name,
            "sleep 3600",
            json!({"lifecycle": lifecycle}),
            json!({}),
        ),
    )
    .await
    .unwrap();
    let p = n
        .wait_pod("badhook", "uid", T, |p| p["metadata"]["uid"].is_string())
        .await
        .unwrap();
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let msgs = wait_event(&n, "badhook", "FailedPostStartHook", |_| true).await;
    let want = format!(
        "Exec lifecycle hook ([sh -c echo oops; exit 3]) for Container \"main\" in Pod \"badhook_default({uid})\" \
         failed - error: command 'sh -c echo oops; exit 3' exited with 3: , message: \"oops\\n\""
    );
    assert!(msgs.contains(&want), "{msgs:?}\nwant {want}");
    wait_event(&n, "badhook", "Killing", |m| m == "FailedPostStartHook").await;
    n.wait_pod("badhook", "restarted", T, |p| restarts(p) >= 1)
        .await
        .unwrap();
}

/// Readiness gates: Ready waits for the gate's condition, which someone else writes into the
/// pod status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_readiness_gate_holds_ready_until_its_condition_is_true() {
    let (n, _cfg) = start_node(10.0).await;
    apply(
        &n.api,
        &pod(
            "gated",
            &n.name,
            "sleep 3600",
            json!({}),
            json!({"readinessGates": [{"conditionType": "example.com/gate"}]}),
        ),
    )
    .await
    .unwrap();
    let p = n
        .wait_pod("gated", "containers ready", T, |p| {
            condition(p, "ContainersReady").is_some_and(|c| c["status"] == "True")
        })
        .await
        .unwrap();
    let r = condition(&p, "Ready").unwrap();
    assert_eq!(r["status"], "False");
    assert_eq!(r["reason"], "ReadinessGatesNotReady");
    assert_eq!(
        r["message"],
        "corresponding condition of pod readiness gate \"example.com/gate\" does not exist."
    );
    let patch = json!([{"op": "add", "path": "/status/conditions/-",
                        "value": {"type": "example.com/gate", "status": "True"}}])
    .to_string();
    let out = n
        .api
        .kubectl(&[
            "patch",
            "pod",
            "gated",
            "-n",
            "default",
            "--subresource=status",
            "--type=json",
            "-p",
            &patch,
        ])
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p = n.wait_pod("gated", "Ready", T, ready).await.unwrap();
    // The gate's condition stays as written.
    assert_eq!(condition(&p, "example.com/gate").unwrap()["status"], "True");
}
