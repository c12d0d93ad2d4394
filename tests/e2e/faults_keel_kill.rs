//! keel SIGKILLed at seeded random moments (`KEEL_FAULT_SEED` replays a schedule; the seed is
//! printed) while a burst of 20 pods starts and again while half of them are deleted gracefully,
//! restarted at once each time with the same directories: every pod converges, no pod has two
//! ready sandboxes or two running containers, a container that was running when keel died is the
//! same container afterwards with no restart counted, every deletion completes, and the deleted
//! pods leave no sandbox, container, mount or cgroup behind. On the real containerd and on the
//! simulator (whose state is keel's own journal, so a kill mid-write is part of the test).
//! Default: 2 kills in the burst and 1 in the deletions; `KEEL_LONG=1`: 8 and 4.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::cri_lifecycle::{cri_lock, delete_all};
use crate::faults_common::*;
use crate::support::util::*;

const PODS: usize = 20;
const CONVERGE: Duration = Duration::from_secs(240);

/// Exits 0 two seconds after SIGTERM, so a graceful deletion takes a while.
const SLOW_TO_STOP: &str = "trap 'sleep 2; exit 0' TERM; while true; do sleep 1; done";

fn kills() -> (usize, usize) {
    if long_mode() {
        (8, 4)
    } else {
        (2, 1)
    }
}

fn pod(name: &str, node: &str, script: &str) -> String {
    pod_yaml(name, node, "Always", script)
}

pub(crate) fn cs(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

pub(crate) fn running_ready(p: &Value) -> bool {
    phase(p) == "Running" && condition(p, "Ready").is_some_and(|c| c["status"] == "True")
}

/// The pods of the test (name prefix `base`) as the API has them.
pub(crate) async fn pods_of(n: &Node, base: &str) -> BTreeMap<String, Value> {
    let list = get_json(&n.api, &["pods", "-n", "default"]).await;
    list.and_then(|l| l["items"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            let name = p["metadata"]["name"].as_str()?.to_string();
            name.starts_with(base).then_some((name, p))
        })
        .collect()
}

async fn wait_all_running(n: &Node, base: &str, want: usize, seed: u64) {
    let r = wait_for("every pod Running and Ready", CONVERGE, || async {
        let pods = pods_of(n, base).await;
        (pods.len() == want && pods.values().all(running_ready)).then_some(())
    })
    .await;
    if let Err(e) = r {
        let pods = pods_of(n, base).await;
        let bad: Vec<String> = pods
            .iter()
            .filter(|(_, p)| !running_ready(p))
            .map(|(nm, p)| format!("{nm}: {}", p["status"]))
            .collect();
        panic!(
            "seed {seed}: {e}: {} of {want} pods, not converged: {bad:#?}\n{}",
            pods.len(),
            n.keel.log_tail(60)
        );
    }
}

/// keel's log lines (all starts) that name `pod`, for failure messages.
fn keel_lines_about(n: &Node, pod: &str) -> String {
    let logs = n.keel.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains(pod)).collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Sleeps a random 0.3–`max_ms` ms, then SIGKILLs keel and starts it again.
async fn kill_at_random(n: &mut Node, rng: &mut StdRng, max_ms: u64, what: &str) {
    let after = rng.random_range(300..max_ms);
    tokio::time::sleep(Duration::from_millis(after)).await;
    crate::support::envtest::loud(&format!("  SIGKILL keel {after} ms into {what}"));
    n.keel
        .restart_after_kill9()
        .await
        .unwrap_or_else(|e| panic!("restarting keel: {e:#}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_keel_sigkilled_during_a_burst_and_graceful_deletions() {
    let _g = cri_lock().await;
    let seed = fault_seed("cri_keel_sigkilled_during_a_burst_and_graceful_deletions");
    let mut rng = StdRng::seed_from_u64(seed);
    let (burst_kills, delete_kills) = kills();
    let mut n = Node::start_cri_with_config(&[], NO_EVICTION).await.unwrap();
    let rt = cri_runtime().unwrap();
    let base = unique("fk");
    let names: Vec<String> = (0..PODS).map(|i| format!("{base}-{i:02}")).collect();
    let manifest = names
        .iter()
        .map(|nm| pod(nm, &n.name, SLOW_TO_STOP))
        .collect::<Vec<_>>()
        .join("---\n");
    apply(&n.api, &manifest).await.unwrap();

    // Containers running when keel died: (pod, (container ID, restart count)) must survive every
    // later restart, with no restart counted since.
    let mut running_at_kill: BTreeMap<String, (String, i64)> = BTreeMap::new();
    for k in 0..burst_kills {
        let after = rng.random_range(300..6000);
        tokio::time::sleep(Duration::from_millis(after)).await;
        let objs = cri_objects(&rt, &base).await.unwrap();
        for (pod, o) in &objs {
            if let [id] = o.running.as_slice() {
                running_at_kill.entry(pod.clone()).or_insert_with(|| id.clone());
            }
        }
        crate::support::envtest::loud(&format!(
            "  SIGKILL keel {after} ms into burst kill {k} ({} containers running)",
            objs.values().map(|o| o.running.len()).sum::<usize>()
        ));
        n.keel.restart_after_kill9().await.unwrap();
    }
    wait_all_running(&n, &base, PODS, seed).await;
    // Let the last keel relist and report once more before comparing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let objs = cri_objects(&rt, &base).await.unwrap();
    let pods = pods_of(&n, &base).await;
    for nm in &names {
        let o = objs.get(nm).cloned().unwrap_or_default();
        assert_eq!(o.ready_sandboxes, 1, "seed {seed}: {nm}: ready sandboxes: {o:?}");
        assert_eq!(o.running.len(), 1, "seed {seed}: {nm}: running containers: {o:?}");
        let p = &pods[nm];
        let id = cs(p)["containerID"].as_str().unwrap_or_default();
        assert_eq!(id, format!("containerd://{}", o.running[0].0), "seed {seed}: {nm}");
        if let Some((was, restarts)) = running_at_kill.get(nm) {
            let log = || keel_lines_about(&n, nm);
            assert_eq!(
                &o.running[0].0,
                was,
                "seed {seed}: {nm}: a running container was replaced\n{}",
                log()
            );
            assert_eq!(
                cs(p)["restartCount"].as_i64(),
                Some(*restarts),
                "seed {seed}: {nm}: a restart counted for a running container: {}\n{}",
                p["status"],
                log()
            );
        }
    }
    crate::support::envtest::loud(&format!(
        "  {} containers were running at a kill and survived",
        running_at_kill.len()
    ));

    // Graceful deletions of half the pods, keel killed while they stop.
    let doomed: Vec<&String> = names.iter().step_by(2).collect();
    let uids: Vec<String> = doomed
        .iter()
        .map(|nm| pods[*nm]["metadata"]["uid"].as_str().unwrap_or_default().to_string())
        .collect();
    let mut args = vec!["delete", "pod", "-n", "default", "--wait=false"];
    args.extend(doomed.iter().map(|s| s.as_str()));
    let out = n.api.kubectl(&args).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for k in 0..delete_kills {
        kill_at_random(&mut n, &mut rng, 3000, &format!("the deletions (kill {k})")).await;
    }
    let r = wait_for("the deleted pods gone from the API", CONVERGE, || async {
        let pods = pods_of(&n, &base).await;
        doomed.iter().all(|d| !pods.contains_key(*d)).then_some(())
    })
    .await;
    if let Err(e) = r {
        panic!("seed {seed}: {e}\n{}", n.keel.log_tail(60));
    }
    // Their containers go with them, the sandboxes at the latest at the next GC (every minute).
    let r = wait_for(
        "the deleted pods' runtime objects removed",
        Duration::from_secs(150),
        || async {
            let objs = cri_objects(&rt, &base).await.ok()?;
            doomed.iter().all(|d| !objs.contains_key(*d)).then_some(())
        },
    )
    .await;
    if let Err(e) = r {
        let objs = cri_objects(&rt, &base).await.unwrap_or_default();
        panic!("seed {seed}: {e}: {objs:#?}\n{}", n.keel.log_tail(60));
    }
    let cgroups_left = wait_for("the deleted pods' cgroups removed", Duration::from_secs(30), || async {
        let left: Vec<_> = pod_cgroups(&n.name)
            .into_iter()
            .filter(|c| uids.iter().any(|u| c.to_string_lossy().contains(u.as_str())))
            .collect();
        left.is_empty().then_some(())
    })
    .await;
    assert!(
        cgroups_left.is_ok(),
        "seed {seed}: cgroups of deleted pods: {:?}",
        pod_cgroups(&n.name)
    );
    let mounts: Vec<String> = uids.iter().flat_map(|u| mounts_containing(u)).collect();
    assert!(mounts.is_empty(), "seed {seed}: mounts of deleted pods: {mounts:#?}");
    let pods_dir = n.keel.opts.dir.join("root/pods");
    let dirs_left = wait_for(
        "the deleted pods' directories removed",
        Duration::from_secs(30),
        || async { uids.iter().all(|u| !pods_dir.join(u).exists()).then_some(()) },
    )
    .await;
    assert!(
        dirs_left.is_ok(),
        "seed {seed}: pod directories of deleted pods left under {}",
        pods_dir.display()
    );
    // The survivors were left alone.
    let after = pods_of(&n, &base).await;
    for nm in names.iter().skip(1).step_by(2) {
        let p = &after[nm];
        assert!(running_ready(p), "seed {seed}: {nm}: {}", p["status"]);
        assert_eq!(
            cs(p)["containerID"],
            cs(&pods[nm])["containerID"],
            "seed {seed}: {nm} replaced"
        );
    }
    assert!(!n.keel.logs().contains("panicked"), "seed {seed}: keel panicked");
    delete_all(&n).await;
}

/// The simulator keeps its state in keel's root dir (a journal): a kill mid-write must not lose
/// or duplicate a container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_keel_sigkilled_during_a_burst_and_graceful_deletions() {
    let seed = fault_seed("sim_keel_sigkilled_during_a_burst_and_graceful_deletions");
    let mut rng = StdRng::seed_from_u64(seed);
    let (burst_kills, delete_kills) = kills();
    let mut n = Node::start_with_config(1.0, &[], NO_EVICTION).await.unwrap();
    let base = unique("fs");
    let names: Vec<String> = (0..PODS).map(|i| format!("{base}-{i:02}")).collect();
    let manifest = names
        .iter()
        .map(|nm| pod(nm, &n.name, "sleep 36000"))
        .collect::<Vec<_>>()
        .join("---\n");
    apply(&n.api, &manifest).await.unwrap();
    let mut running_at_kill: BTreeMap<String, (String, i64)> = BTreeMap::new();
    for k in 0..burst_kills {
        let after = rng.random_range(300..4000);
        tokio::time::sleep(Duration::from_millis(after)).await;
        // The API's view just before the kill: what ran then (status lags a little, never leads).
        for (nm, p) in pods_of(&n, &base).await {
            if cs(&p)["state"]["running"].is_object() {
                if let (Some(id), Some(restarts)) = (cs(&p)["containerID"].as_str(), cs(&p)["restartCount"].as_i64()) {
                    running_at_kill.entry(nm).or_insert_with(|| (id.to_string(), restarts));
                }
            }
        }
        crate::support::envtest::loud(&format!("  SIGKILL keel {after} ms into burst kill {k}"));
        n.keel.restart_after_kill9().await.unwrap();
    }
    wait_all_running(&n, &base, PODS, seed).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pods = pods_of(&n, &base).await;
    for (nm, (was, restarts)) in &running_at_kill {
        let p = &pods[nm];
        assert_eq!(
            cs(p)["containerID"].as_str(),
            Some(was.as_str()),
            "seed {seed}: {nm}: a running container was replaced: {}\n{}",
            p["status"],
            keel_lines_about(&n, nm)
        );
        assert_eq!(
            cs(p)["restartCount"].as_i64(),
            Some(*restarts),
            "seed {seed}: {nm}: a restart counted for a running container\n{}",
            keel_lines_about(&n, nm)
        );
    }
    // One running container per pod in the runtime (keel's /runningpods/ lists what the
    // runtime runs), and every one is the container the API reports.
    let out = n
        .api
        .kubectl(&["get", "--raw", &format!("/api/v1/nodes/{}/proxy/runningpods/", n.name)])
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let running: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut per_pod: BTreeMap<String, usize> = BTreeMap::new();
    for p in running["items"].as_array().cloned().unwrap_or_default() {
        let nm = p["metadata"]["name"].as_str().unwrap_or_default().to_string();
        if nm.starts_with(&base) {
            *per_pod.entry(nm).or_default() += p["spec"]["containers"].as_array().map_or(0, |c| c.len());
        }
    }
    for nm in &names {
        assert_eq!(
            per_pod.get(nm),
            Some(&1),
            "seed {seed}: {nm} in the runtime: {per_pod:?}"
        );
    }

    let doomed: Vec<&String> = names.iter().step_by(2).collect();
    let mut args = vec!["delete", "pod", "-n", "default", "--wait=false"];
    args.extend(doomed.iter().map(|s| s.as_str()));
    let out = n.api.kubectl(&args).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for k in 0..delete_kills {
        kill_at_random(&mut n, &mut rng, 3000, &format!("the deletions (kill {k})")).await;
    }
    let r = wait_for("the deleted pods gone from the API", CONVERGE, || async {
        let pods = pods_of(&n, &base).await;
        doomed.iter().all(|d| !pods.contains_key(*d)).then_some(())
    })
    .await;
    if let Err(e) = r {
        panic!("seed {seed}: {e}\n{}", n.keel.log_tail(60));
    }
    let after = pods_of(&n, &base).await;
    for nm in names.iter().skip(1).step_by(2) {
        let p = &after[nm];
        assert!(running_ready(p), "seed {seed}: {nm}: {}", p["status"]);
        assert_eq!(cs(p)["containerID"], cs(&pods[nm])["containerID"], "seed {seed}: {nm}");
    }
    assert!(!n.keel.logs().contains("panicked"), "seed {seed}: keel panicked");
}
