//! Node-pressure eviction on the simulated backend, seen through kubectl. Sim containers hold
//! the memory their `SIM_MEMORY` says (their working set in `/stats/summary`); the node's own
//! memory is the host's, so pressure is made as the kubelet's node e2e tests make it: keel is
//! restarted with `evictionHard: memory.available` above what the host can ever have free.

use std::time::Duration;

use serde_json::Value;

use crate::support::util::*;

const T: Duration = Duration::from_secs(90);

fn memory_pod(name: &str, node: &str, sim_memory: &str, resources: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: busybox:1.36
    command: ["sleep", "infinity"]
    env:
    - {{name: SIM_MEMORY, value: {sim_memory}}}
    resources: {resources}
"#
    )
}

/// MemTotal in bytes: a `memory.available` threshold no host can stay above.
fn host_memory_total() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

fn status_of<'a>(pods: &'a Value, name: &str) -> &'a Value {
    pods["items"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["metadata"]["name"] == name))
        .map(|p| &p["status"])
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_pressure_evicts_pods_by_rank_and_refuses_best_effort_ones() {
    let mut n = Node::start_with_config(1.0, &[], NO_EVICTION).await.unwrap();
    // Ranked by usage above request (all four exceed it but the Guaranteed one): the first pod
    // (200Mi used, 199Mi above) before the bigger Burstable one (250Mi used, 150Mi above), which goes
    // before the smaller one (20Mi above); the Guaranteed pod (under its request) last.
    let be = unique("ev-besteffort");
    let big = unique("ev-burstable-big");
    let small = unique("ev-burstable-small");
    let guaranteed = unique("ev-guaranteed");
    let order = [be.clone(), big.clone(), small.clone(), guaranteed.clone()];
    let request = "{requests: {memory: 100Mi}}";
    for (name, mem, res) in [
        // Not BestEffort, though it ranks first: keel restarts under pressure below, and as the
        // kubelet it re-admits the pods it finds; a BestEffort pod may then be refused at
        // admission (MemoryPressure) before the eviction manager's first round evicts it.
        (&be, "200Mi", "{requests: {memory: 1Mi}}"),
        (&big, "250Mi", request),
        (&small, "120Mi", request),
        (
            &guaranteed,
            "100Mi",
            "{requests: {cpu: 100m, memory: 200Mi}, limits: {cpu: 100m, memory: 200Mi}}",
        ),
    ] {
        apply(&n.api, &memory_pod(name, &n.name, mem, res)).await.unwrap();
    }
    for name in &order {
        n.wait_pod(name, "Running", T, |p| phase(p) == "Running").await.unwrap();
    }
    let node = get_json(&n.api, &["node", &n.name]).await.unwrap();
    assert_eq!(condition(&node, "MemoryPressure").unwrap()["status"], "False");

    // Memory pressure from now on.
    let config_file = n.dir.path().join("kubelet-config.yaml");
    let config = std::fs::read_to_string(&config_file).unwrap();
    // A threshold of MemTotal - 512Mi: met on any machine running this suite (more than 512Mi in
    // use), while allocatable (capacity minus the hard threshold) keeps 512Mi, room for the
    // pods' requests when keel re-admits them after the restart (at MemTotal, allocatable is 0
    // and they are refused as OutOfmemory before any eviction, as the kubelet would).
    let total = host_memory_total() - 512 * 1024 * 1024;
    let pressure = format!(
        "evictionHard:\n  memory.available: \"{total}\"\n  nodefs.available: \"0%\"\n  imagefs.available: \"0%\"\n  nodefs.inodesFree: \"0%\"\nevictionPressureTransitionPeriod: 30s\n"
    );
    assert!(config.contains(NO_EVICTION));
    std::fs::write(&config_file, config.replace(NO_EVICTION, &pressure)).unwrap();
    n.keel.restart_after_kill9().await.unwrap();

    // Every snapshot shows the evicted pods as a prefix of the expected order; wait until the
    // three pods over their requests are gone.
    let pods = wait_for("three evictions", T * 2, || async {
        let pods = get_json(&n.api, &["pods", "-n", "default"]).await?;
        let failed: Vec<bool> = order
            .iter()
            .map(|name| status_of(&pods, name)["phase"] == "Failed")
            .collect();
        let count = failed.iter().take_while(|f| **f).count();
        assert!(
            failed[count..].iter().all(|f| !f),
            "evicted out of order: {:?} for {order:?}; statuses {:?}; keel log:\n{}",
            failed,
            order.iter().map(|name| status_of(&pods, name)).collect::<Vec<_>>(),
            n.keel.log_tail(80)
        );
        (count >= 3).then_some(pods)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; keel log:\n{}", n.keel.log_tail(60)));

    // keel's own account of the order (one eviction per round).
    let log = n.keel.logs();
    let positions: Vec<usize> = order[..3]
        .iter()
        .map(|name| {
            log.lines()
                .position(|l| l.contains("evicting pod") && l.contains(name.as_str()))
                .unwrap_or_else(|| {
                    panic!(
                        "no eviction of {name} in the log; its status {}; keel log:\n{}",
                        status_of(&pods, name),
                        n.keel.log_tail(60)
                    )
                })
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");

    // The evicted pods' status and event, as the kubelet writes them.
    let st = status_of(&pods, &be);
    assert_eq!(st["reason"], "Evicted", "{st}");
    let msg = st["message"].as_str().unwrap();
    assert!(
        msg.starts_with("The node was low on resource: memory. Threshold quantity: "),
        "{msg}"
    );
    assert!(
        msg.ends_with("Container main was using 200Mi, request is 1Mi, has larger consumption of memory. "),
        "{msg}"
    );
    let disruption = st["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "DisruptionTarget"))
        .unwrap_or_else(|| panic!("no DisruptionTarget condition: {st}"));
    assert_eq!(disruption["reason"], "TerminationByKubelet");
    let st = status_of(&pods, &big);
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .ends_with("Container main was using 250Mi, request is 100Mi, has larger consumption of memory. "),
        "{st}"
    );
    let events = wait_for("Evicted event", T, || async {
        let evs = events_about(&n.api, &be).await;
        evs.into_iter().find(|e| e["reason"] == "Evicted")
    })
    .await
    .unwrap();
    assert_eq!(events["type"], "Warning");
    assert_eq!(events["message"].as_str(), Some(msg));
    let node_events = events_about(&n.api, &n.name).await;
    assert!(
        node_events
            .iter()
            .any(|e| e["reason"] == "EvictionThresholdMet" && e["message"] == "Attempting to reclaim memory"),
        "{node_events:?}"
    );

    // The node reports MemoryPressure, and a new BestEffort pod is refused while it lasts.
    wait_for("MemoryPressure", T, || async {
        let node = get_json(&n.api, &["node", &n.name]).await?;
        let c = condition(&node, "MemoryPressure")?;
        (c["status"] == "True" && c["reason"] == "KubeletHasInsufficientMemory").then_some(())
    })
    .await
    .unwrap();
    let late = unique("ev-late-besteffort");
    apply(&n.api, &memory_pod(&late, &n.name, "10Mi", "{}")).await.unwrap();
    let p = n.wait_pod(&late, "refused", T, |p| phase(p) == "Failed").await.unwrap();
    assert_eq!(p["status"]["reason"], "Evicted");
    assert_eq!(p["status"]["message"], "Pod The node had condition: [MemoryPressure]. ");
    assert!(event_reasons(&n.api, &late).await.contains(&"Evicted".to_string()));
}
