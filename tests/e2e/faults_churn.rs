//! Churn: pods created and deleted in waves, one test body parametrised by backend. A warm-up wave
//! first, then keel's RSS, file descriptors and tasks are read; after the last wave every
//! runtime object and host resource the pods had is gone (containerd: sandboxes, containers,
//! mounts, pinned network namespaces, veths on the bridge, pod cgroups; simulator: what keel's
//! `/runningpods/` lists and the pod directories under the root dir), keel's fds and tasks are
//! back where they were (its API connections no more than the pool keeps idle), and its RSS
//! within 10 % of where it was after the warm-up.
//! Default: 51 pods on containerd, 500 on the simulator (warm-up included); `KEEL_LONG=1`: 1,050
//! and 10,500.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::cri_lifecycle::cri_lock;
use crate::faults_common::*;
use crate::support::envtest::loud;
use crate::support::util::*;

struct Plan {
    backend: Backend,
    /// Pods per wave; the warm-up wave is one more of them.
    wave: usize,
    waves: usize,
}

fn plan(backend: Backend) -> Plan {
    let p = plan_by_mode(backend);
    // KEEL_CHURN_WAVES overrides the number of waves (looking for a leak by hand).
    match std::env::var("KEEL_CHURN_WAVES").ok().and_then(|w| w.parse().ok()) {
        Some(waves) => Plan { waves, ..p },
        None => p,
    }
}

fn plan_by_mode(backend: Backend) -> Plan {
    match (backend, long_mode()) {
        // The native backend's create/delete cycles are native_node::native_pod_cycles_leave_nothing_behind.
        (Backend::Native, _) => unreachable!("churn runs on containerd and the simulator"),
        (Backend::Cri, false) => Plan {
            backend,
            wave: 17,
            waves: 2,
        },
        (Backend::Cri, true) => Plan {
            backend,
            wave: 50,
            waves: 20,
        },
        (Backend::Sim { .. }, false) => Plan {
            backend,
            wave: 125,
            waves: 3,
        },
        (Backend::Sim { .. }, true) => Plan {
            backend,
            wave: 500,
            waves: 20,
        },
    }
}

/// keel's footprint: (RSS KiB, fds, tasks, fds other than sockets).
fn footprint(pid: u32) -> (u64, usize, usize, usize) {
    (rss_kib(pid), fd_count(pid), task_count(pid), non_socket_fd_count(pid))
}

/// Idle API connections keel's client keeps (client-go's `idleConnsPerHost`,
/// `keel::kubelet::apiclient::MAX_IDLE_PER_HOST`).
const POOLED: usize = keel::kubelet::apiclient::MAX_IDLE_PER_HOST;
/// keel's other sockets: its listeners (kubelet server, healthz), its watches, the CRI
/// connection, the runtime's event stream, with room for a request in flight.
const OTHER_SOCKETS: usize = 16;

/// Host resources the pods of a CRI node hold: (netns, bridge ports, pod cgroups, mounts under
/// keel's pods dir).
fn host_resources(n: &Node) -> (usize, usize, usize, usize) {
    let pods_dir = n.keel.opts.dir.join("root/pods");
    (
        pinned_netns(),
        bridge_ports(),
        pod_cgroups(&n.name).len(),
        mounts_containing(&pods_dir.to_string_lossy()).len(),
    )
}

fn pod_dirs(n: &Node) -> usize {
    std::fs::read_dir(n.keel.opts.dir.join("root/pods"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Creates `count` pods labelled `wave=<label>`, waits until all run, deletes them and waits
/// until the API has none left.
async fn wave(n: &Node, pods: &Api<Pod>, label: &str, count: usize) {
    let t0 = Instant::now();
    for i in 0..count {
        let p: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{label}-{i:05}"), "namespace": "default", "labels": {"wave": label}},
            "spec": {
                "nodeName": n.name,
                "terminationGracePeriodSeconds": 2,
                "containers": [{"name": "c", "image": "busybox:1.36",
                    "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}]
            }
        }))
        .unwrap();
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    let lp = ListParams::default().labels(&format!("wave={label}"));
    let running = |list: &[Pod]| {
        list.iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count()
    };
    // Listing hundreds of pods ten times a second would load the machine more than keel does.
    let r = wait_for("the wave Running", Duration::from_secs(600), || async {
        tokio::time::sleep(Duration::from_millis(900)).await;
        let list = pods.list(&lp).await.ok()?;
        (running(&list.items) == count).then_some(())
    })
    .await;
    if let Err(e) = r {
        let list = pods.list(&lp).await.map(|l| l.items).unwrap_or_default();
        let stuck: Vec<String> = list
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running"))
            .take(5)
            .map(|p| {
                format!(
                    "{}: {}",
                    p.metadata.name.as_deref().unwrap_or_default(),
                    serde_json::to_string(&p.status).unwrap_or_default()
                )
            })
            .collect();
        let first = stuck
            .first()
            .and_then(|s| s.split(':').next())
            .unwrap_or_default()
            .to_string();
        let about: Vec<String> = n
            .keel
            .logs()
            .lines()
            .filter(|l| !first.is_empty() && l.contains(&first))
            .map(String::from)
            .collect();
        panic!(
            "{e}: {}/{count} running; not running: {stuck:#?}\nkeel about {first}:\n{}",
            running(&list),
            about[about.len().saturating_sub(30)..].join("\n")
        );
    }
    let up = t0.elapsed();
    pods.delete_collection(&DeleteParams::default(), &lp).await.unwrap();
    let r = wait_for("the wave deleted", Duration::from_secs(600), || async {
        tokio::time::sleep(Duration::from_millis(900)).await;
        pods.list(&lp).await.ok()?.items.is_empty().then_some(())
    })
    .await;
    if let Err(e) = r {
        let left = pods.list(&lp).await.map(|l| l.items.len()).unwrap_or(0);
        panic!("{e}: {left}/{count} left\n{}", n.keel.log_tail(40));
    }
    let pid = n.keel.pid().unwrap_or(0);
    loud(&format!(
        "  churn wave {label}: {count} pods running in {:.1}s, all gone {:.1}s later; keel RSS {} KiB, {} fds",
        up.as_secs_f64(),
        (t0.elapsed() - up).as_secs_f64(),
        rss_kib(pid),
        fd_count(pid)
    ));
}

async fn churn(plan: Plan) {
    // On containerd the leak check counts the shared bridge's ports: no native node may use
    // the bridge meanwhile.
    let _g = match plan.backend {
        Backend::Cri => Some((
            cri_lock().await,
            crate::support::util::shared_bridge().clone().write_owned().await,
        )),
        Backend::Sim { .. } | Backend::Native => None,
    };
    let max_pods = (plan.wave + 10).to_string();
    let n = Node::start_on(
        crate::support::apiserver::TestApiServer::start().await.unwrap(),
        plan.backend,
        &["--max-pods", &max_pods],
        NO_EVICTION,
    )
    .await
    .unwrap();
    let pid = n.keel.pid().unwrap();
    let pods: Api<Pod> = Api::namespaced(n.api.client().await, "default");
    let rt = match plan.backend {
        Backend::Cri => Some(cri_runtime().unwrap()),
        Backend::Sim { .. } | Backend::Native => None,
    };
    let host_before = match plan.backend {
        Backend::Cri => host_resources(&n),
        Backend::Sim { .. } | Backend::Native => (0, 0, 0, 0),
    };
    let base = unique("churn");
    let t0 = Instant::now();
    wave(&n, &pods, &format!("{base}-w"), plan.wave).await;
    // Deleted pods' leftovers (sandboxes at GC, cgroups and volumes at housekeeping) go within a
    // minute; measure once they have.
    settle(&n, rt.as_deref(), &base, host_before, plan.backend).await;
    let before = footprint(pid);
    for w in 0..plan.waves {
        wave(&n, &pods, &format!("{base}-{w}"), plan.wave).await;
    }
    settle(&n, rt.as_deref(), &base, host_before, plan.backend).await;
    // Freed memory goes back to the system after the allocator's decay time (jemalloc: 10 s of
    // activity); poll rather than read once on a loaded machine.
    let bound = |before: u64| before + before / 10;
    let _ = wait_for("keel's RSS back within 10 %", Duration::from_secs(90), || async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        (rss_kib(pid) <= bound(before.0)).then_some(())
    })
    .await;
    let after = footprint(pid);
    let total = plan.wave * (plan.waves + 1);
    loud(&format!(
        "churn on {:?}: {total} pods in {} waves in {:.1}s; keel RSS {} KiB -> {} KiB, fds {} -> {}, tasks {} -> {}",
        plan.backend,
        plan.waves + 1,
        t0.elapsed().as_secs_f64(),
        before.0,
        after.0,
        before.1,
        after.1,
        before.2,
        after.2
    ));
    // A blocking-pool thread may come and go; a leak grows with the pods.
    assert!(after.2 <= before.2 + 4, "keel's tasks: {} -> {}", before.2, after.2);
    assert!(
        after.0 <= bound(before.0),
        "keel's RSS grew from {} KiB to {} KiB over {total} pods",
        before.0,
        after.0
    );
    assert!(
        after.3 <= before.3 + 2,
        "keel's fds other than sockets: {} -> {}",
        before.3,
        after.3
    );
    // Sockets: a wave's burst of requests opens a connection per request in flight (HTTP/1.1);
    // the pool keeps no more than its cap of them once they are idle.
    let sockets = after.1 - after.3;
    assert!(
        sockets <= POOLED + OTHER_SOCKETS,
        "keel holds {sockets} sockets after the churn (fds {} -> {})",
        before.1,
        after.1
    );
    assert!(!n.keel.logs().contains("panicked"));
    if plan.backend == Backend::Cri {
        crate::cri_lifecycle::remove_node_cgroups(&n.name).await;
    }
}

/// Waits until the deleted pods left nothing behind, or fails naming what they left.
async fn settle(
    n: &Node,
    rt: Option<&keel::backends::cri::CriRuntime>,
    base: &str,
    host_before: (usize, usize, usize, usize),
    backend: Backend,
) {
    let leftovers = || async {
        let mut left = Vec::new();
        match rt {
            Some(rt) => {
                let objs = cri_objects(rt, base).await.unwrap_or_default();
                if !objs.is_empty() {
                    left.push(format!("{} pods' runtime objects: {objs:?}", objs.len()));
                }
                let host = host_resources(n);
                if host != host_before {
                    left.push(format!(
                        "(netns, veths, pod cgroups, mounts) {host_before:?} -> {host:?}"
                    ));
                }
            }
            None => {
                let out = n
                    .api
                    .kubectl(&["get", "--raw", &format!("/api/v1/nodes/{}/proxy/runningpods/", n.name)])
                    .await;
                // An empty list has `items: null`, as the kubelet's.
                let running: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
                match running.as_ref().map(|r| &r["items"]) {
                    Some(serde_json::Value::Array(items)) if !items.is_empty() => {
                        left.push(format!("{} pods in the runtime", items.len()));
                    }
                    Some(serde_json::Value::Array(_) | serde_json::Value::Null) => {}
                    _ => left.push(format!(
                        "/runningpods/ unreadable: {}",
                        String::from_utf8_lossy(&out.stderr)
                    )),
                }
            }
        }
        let dirs = pod_dirs(n);
        if dirs != 0 {
            left.push(format!("{dirs} pod directories under the root dir"));
        }
        left
    };
    let r = wait_for(
        "the deleted pods' leftovers removed",
        Duration::from_secs(150),
        || async { leftovers().await.is_empty().then_some(()) },
    )
    .await;
    if let Err(e) = r {
        panic!("{e}: {:#?}\n{}", leftovers().await, n.keel.log_tail(40));
    }
    // The simulator's stopped sandboxes and exited containers live in keel's memory until the
    // container GC (every minute, virtual) removes them, as containerd's do in containerd.
    if let Backend::Sim { time_scale } = backend {
        tokio::time::sleep(Duration::from_secs(65).div_f64(time_scale)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_churn_leaves_nothing_behind() {
    churn(plan(Backend::Cri)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_churn_leaves_nothing_behind() {
    churn(plan(Backend::Sim { time_scale: 5.0 })).await;
}
