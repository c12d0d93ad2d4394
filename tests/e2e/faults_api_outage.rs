//! The API server gone for a long time: an hour on the simulator's compressed clock (time scale
//! 60: a real minute) against the test API server, which answers 503 to everything and ends
//! every watch meanwhile. The containers are left alone (same IDs, no restart); a container that
//! exits during the outage has its status reach the API after the server returns; the lease is
//! renewed within 10 s of the return; and the watches resume from where they were, with no
//! storm of LIST requests (counted from the server's own request log).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::faults_common::long_mode;
use crate::support::apiserver::TestApiServer;
use crate::support::envtest::loud;
use crate::support::util::*;

const T: Duration = Duration::from_secs(60);

fn cs(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

async fn lease_renew_time<A: crate::support::envtest::ControlPlane>(api: &A, node: &str) -> Option<String> {
    let l = get_json(api, &["lease", node, "-n", "kube-node-lease"]).await?;
    l["spec"]["renewTime"].as_str().map(String::from)
}

/// LIST requests of `user` from the `from`th request on, by path.
fn lists_by(api: &TestApiServer, user: &str, from: usize) -> BTreeMap<String, usize> {
    let mut by_path = BTreeMap::new();
    for r in api.requests().into_iter().skip(from) {
        if r.user == user && r.is_list() {
            *by_path.entry(r.path).or_default() += 1;
        }
    }
    by_path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_api_server_gone_for_an_hour_on_the_compressed_clock() {
    const SCALE: f64 = 60.0;
    let outage_virtual = Duration::from_secs(if long_mode() { 6 * 3600 } else { 3600 });
    let mut n = Node::start_with_config(SCALE, &[], NO_EVICTION).await.unwrap();
    let user = format!("system:node:{}", n.name);
    let steady = unique("outage-steady");
    let exits = unique("outage-exits");
    apply(&n.api, &pod_yaml(&steady, &n.name, "Always", "sleep 360000"))
        .await
        .unwrap();
    // Exits (3) half-way through the outage.
    let half = outage_virtual.as_secs() / 2;
    apply(
        &n.api,
        &pod_yaml(&exits, &n.name, "Never", &format!("sleep {half}; exit 3")),
    )
    .await
    .unwrap();
    let before = n
        .wait_pod(&steady, "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    n.wait_pod(&exits, "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    // Let the start-up LISTs pass; count from the outage on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = n.api.requests().len();
    // Read before the outage: nobody can renew it while the server is away.
    let renewed_before = lease_renew_time(&n.api, &n.name).await;
    n.api.set_available(false);
    tokio::time::sleep(outage_virtual.div_f64(SCALE)).await;
    assert!(
        n.keel.is_running(),
        "keel exited during the outage:\n{}",
        n.keel.log_tail(40)
    );
    n.api.set_available(true);
    let back = Instant::now();

    let r = wait_for(
        "the lease renewed after the outage",
        Duration::from_secs(10),
        || async {
            let now = lease_renew_time(&n.api, &n.name).await;
            (now.is_some() && now != renewed_before).then_some(())
        },
    )
    .await;
    if let Err(e) = r {
        panic!("{e}\n{}", n.keel.log_tail(40));
    }
    let lease_after = back.elapsed();
    // The exit that happened while the server was away reaches it.
    let p = n
        .wait_pod(&exits, "Failed with exit code 3", Duration::from_secs(30), |p| {
            phase(p) == "Failed"
        })
        .await
        .unwrap();
    assert_eq!(cs(&p)["state"]["terminated"]["exitCode"], 3, "{}", p["status"]);
    let status_after = back.elapsed();
    let p = n.pod(&steady).await.unwrap();
    assert_eq!(cs(&p)["containerID"], cs(&before)["containerID"], "{}", p["status"]);
    assert_eq!(cs(&p)["restartCount"], 0, "{}", p["status"]);
    assert!(cs(&p)["state"]["running"].is_object(), "{}", p["status"]);
    // Watches resumed: a pod created now starts.
    let fresh = unique("outage-after");
    apply(&n.api, &pod_yaml(&fresh, &n.name, "Always", "sleep 3600"))
        .await
        .unwrap();
    n.wait_pod(&fresh, "Running", Duration::from_secs(120), |p| phase(p) == "Running")
        .await
        .unwrap();
    // A relist per watched collection at most (client-go relists after a broken watch too);
    // a storm would be one per retry.
    let lists = lists_by(&n.api, &user, from);
    loud(&format!(
        "API outage of {outage_virtual:?} (virtual): lease renewed {lease_after:?} after the return, \
         the exit reported {status_after:?} after; keel's LISTs since the outage began: {lists:?}"
    ));
    for (path, count) in &lists {
        assert!(*count <= 2, "{count} LISTs of {path} after the outage: {lists:?}");
    }
    assert!(!n.keel.logs().contains("panicked"));
}

/// keel's LIST requests in a real kube-apiserver's audit log (`Metadata` level, one JSON
/// object a line) received at or after `since`, by resource.
fn audited_lists(log: &std::path::Path, user: &str, since: jiff::Timestamp) -> BTreeMap<String, usize> {
    let mut by_resource = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let received = e["requestReceivedTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        if e["stage"] == "ResponseComplete"
            && e["verb"] == "list"
            && e["user"]["username"] == user
            && received.is_some_and(|t| t >= since)
        {
            let resource = e["objectRef"]["resource"].as_str().unwrap_or_default().to_string();
            *by_resource.entry(resource).or_default() += 1;
        }
    }
    by_resource
}

/// The real v1.24 kube-apiserver (a private control plane: the shared one must not go away
/// under other tests) killed by its PID and started again on the same port and etcd after 20 s
/// (`KEEL_LONG=1`: 5 minutes). keel on the simulator at real time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_api_server_killed_and_started_again() {
    let Some(env) = crate::support::envtest::private().await.unwrap() else {
        return;
    };
    let outage = Duration::from_secs(if long_mode() { 300 } else { 20 });
    let mut n = Node::start_on(env, Backend::Sim { time_scale: 1.0 }, &[], NO_EVICTION)
        .await
        .unwrap();
    let user = format!("system:node:{}", n.name);
    let steady = unique("outage-steady");
    let exits = unique("outage-exits");
    apply(&n.api, &pod_yaml(&steady, &n.name, "Always", "sleep 360000"))
        .await
        .unwrap();
    let before = n
        .wait_pod(&steady, "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    // Exits (3) half-way through the outage.
    let half = outage.as_secs() / 2;
    apply(
        &n.api,
        &pod_yaml(&exits, &n.name, "Never", &format!("sleep {half}; exit 3")),
    )
    .await
    .unwrap();
    n.wait_pod(&exits, "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    let renewed_before = lease_renew_time(&n.api, &n.name).await;

    let stopped_at = jiff::Timestamp::now();
    n.api.stop_apiserver();
    tokio::time::sleep(outage).await;
    assert!(
        n.keel.is_running(),
        "keel exited during the outage:\n{}",
        n.keel.log_tail(40)
    );
    n.api.start_apiserver().await.unwrap();
    let back = Instant::now();

    let r = wait_for(
        "the lease renewed after the outage",
        Duration::from_secs(10),
        || async {
            let now = lease_renew_time(&n.api, &n.name).await;
            (now.is_some() && now != renewed_before).then_some(())
        },
    )
    .await;
    if let Err(e) = r {
        panic!("{e}\n{}", n.keel.log_tail(40));
    }
    let lease_after = back.elapsed();
    let p = n
        .wait_pod(&exits, "Failed with exit code 3", Duration::from_secs(30), |p| {
            phase(p) == "Failed"
        })
        .await
        .unwrap();
    assert_eq!(cs(&p)["state"]["terminated"]["exitCode"], 3, "{}", p["status"]);
    let status_after = back.elapsed();
    let p = n.pod(&steady).await.unwrap();
    assert_eq!(cs(&p)["containerID"], cs(&before)["containerID"], "{}", p["status"]);
    assert_eq!(cs(&p)["restartCount"], 0, "{}", p["status"]);
    assert!(cs(&p)["state"]["running"].is_object(), "{}", p["status"]);
    // Watches resumed: a pod created now starts. After a long outage the watch's retry
    // back-off is at its 30 s cap plus up to 100 % jitter, as client-go's reflector's
    // (800 ms doubling to 30 s, jitter 1.0), so the next attempt may be a minute away.
    let fresh = unique("outage-after");
    apply(&n.api, &pod_yaml(&fresh, &n.name, "Always", "sleep 3600"))
        .await
        .unwrap();
    n.wait_pod(&fresh, "Running", Duration::from_secs(120), |p| phase(p) == "Running")
        .await
        .unwrap();
    let fresh_after = back.elapsed();
    // The audit log is written asynchronously (batched): give it a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lists = audited_lists(&n.api.dir().join("audit.log"), &user, stopped_at);
    loud(&format!(
        "real kube-apiserver gone {outage:?}: lease renewed {lease_after:?} after its return, the \
         exit reported {status_after:?} after, a new pod running {fresh_after:?} after; keel's \
         LISTs since: {lists:?}"
    ));
    for (resource, count) in &lists {
        assert!(*count <= 2, "{count} LISTs of {resource} after the outage: {lists:?}");
    }
    assert!(!n.keel.logs().contains("panicked"));
}
