//! Node-level behaviour on the simulated backend: registration and status, the lease, runtime
//! health, API outages, restarts of keel itself, admission, static and mirror pods, standalone.

use std::time::Duration;

use serde_json::Value;

use crate::support::keel::{Keel, KeelOpts};
use crate::support::util::*;

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registers_ready_with_host_facts_and_its_lease_renews() {
    let n = Node::start(10.0, &["--node-labels", "tier=edge,zone=lab"])
        .await
        .unwrap();
    let node = get_json(&n.api, &["node", &n.name]).await.unwrap();
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], n.name.as_str());
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert!(labels["kubernetes.io/arch"].is_string());
    assert_eq!(labels["tier"], "edge");
    let st = &node["status"];
    for r in ["cpu", "memory", "pods", "ephemeral-storage"] {
        assert!(st["capacity"][r].is_string(), "capacity.{r}: {st}");
        assert!(st["allocatable"][r].is_string(), "allocatable.{r}");
    }
    assert_eq!(st["capacity"]["pods"], "110");
    let ready = condition(&node, "Ready").unwrap();
    assert_eq!(ready["reason"], "KubeletReady");
    for (c, reason) in [
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("DiskPressure", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "KubeletHasSufficientPID"),
    ] {
        let cond = condition(&node, c).unwrap_or_else(|| panic!("{c} missing"));
        assert_eq!(cond["status"], "False", "{c}");
        assert_eq!(cond["reason"], reason);
    }
    let info = &st["nodeInfo"];
    assert!(
        info["containerRuntimeVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("sim://")),
        "{info}"
    );
    for k in [
        "kernelVersion",
        "osImage",
        "architecture",
        "machineID",
        "bootID",
        "kubeletVersion",
    ] {
        assert!(info[k].as_str().is_some_and(|v| !v.is_empty()), "nodeInfo.{k}: {info}");
    }
    // The port keel serves on (tests pass a free one; the default is 10250).
    assert_eq!(st["daemonEndpoints"]["kubeletEndpoint"]["Port"], n.keel.port());
    let addrs: Vec<&str> = st["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["type"].as_str())
        .collect();
    assert!(
        addrs.contains(&"InternalIP") && addrs.contains(&"Hostname"),
        "{addrs:?}"
    );
    // The lease: holder, 40 s duration, owner reference to the Node, renewTime advancing
    // (every 10 virtual seconds = 1 s here).
    let lease = wait_for("lease", T, || async {
        get_json(&n.api, &["lease", &n.name, "-n", "kube-node-lease"]).await
    })
    .await
    .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], n.name.as_str());
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
    let owner = wait_for("lease owner reference", T, || async {
        let l = get_json(&n.api, &["lease", &n.name, "-n", "kube-node-lease"]).await?;
        let o = l["metadata"]["ownerReferences"][0].clone();
        o.is_object().then_some(o)
    })
    .await
    .unwrap();
    assert_eq!(owner["kind"], "Node");
    assert_eq!(owner["uid"], node["metadata"]["uid"]);
    let first = lease["spec"]["renewTime"].as_str().unwrap().to_string();
    wait_for("renewTime advances", T, || async {
        let l = get_json(&n.api, &["lease", &n.name, "-n", "kube-node-lease"]).await?;
        (l["spec"]["renewTime"].as_str()? != first).then_some(())
    })
    .await
    .unwrap();
    // Node events.
    let reasons = event_reasons(&n.api, &n.name).await;
    assert!(
        reasons.iter().any(|r| r == "Starting") && reasons.iter().any(|r| r == "NodeReady"),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_turns_not_ready_naming_the_cause_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let sim_cfg = dir.path().join("sim.yaml");
    std::fs::write(&sim_cfg, "networkReady: true\nruntimeReady: true\n").unwrap();
    let n = Node::start(10.0, &["--sim-config", sim_cfg.to_str().unwrap()])
        .await
        .unwrap();
    std::fs::write(&sim_cfg, "networkReady: false\nnetworkReadyReason: NetworkPluginNotReady\nnetworkReadyMessage: cni config uninitialized\nruntimeReady: true\n").unwrap();
    let node = wait_for("Ready=False", T, || async {
        let node = get_json(&n.api, &["node", &n.name]).await?;
        (condition(&node, "Ready")?["status"] == "False").then_some(node)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    let ready = condition(&node, "Ready").unwrap();
    assert_eq!(ready["reason"], "KubeletNotReady");
    let msg = ready["message"].as_str().unwrap();
    assert!(
        msg.contains("container runtime network not ready") && msg.contains("cni config uninitialized"),
        "{msg}"
    );
    std::fs::write(&sim_cfg, "networkReady: true\nruntimeReady: true\n").unwrap();
    n.wait_ready().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_goes_not_ready_while_the_runtime_is_unreachable_and_pods_survive() {
    // The kubelet calls the runtime down after 30 s without an answer (3 s at scale 10).
    let dir = tempfile::tempdir().unwrap();
    let sim_cfg = dir.path().join("sim.yaml");
    std::fs::write(&sim_cfg, "unavailable: false\n").unwrap();
    let n = Node::start(10.0, &["--sim-config", sim_cfg.to_str().unwrap()])
        .await
        .unwrap();
    apply(&n.api, &pod_yaml("survivor", &n.name, "Always", "sleep 3600"))
        .await
        .unwrap();
    let before = n
        .wait_pod("survivor", "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    std::fs::write(&sim_cfg, "unavailable: true\n").unwrap();
    let node = wait_for("Ready=False", T, || async {
        let node = get_json(&n.api, &["node", &n.name]).await?;
        (condition(&node, "Ready")?["status"] == "False").then_some(node)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    let msg = condition(&node, "Ready").unwrap()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.contains("container runtime is down"), "{msg}");
    std::fs::write(&sim_cfg, "unavailable: false\n").unwrap();
    n.wait_ready().await.unwrap();
    // Nothing was restarted meanwhile.
    let after = n
        .wait_pod("survivor", "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    let id = |p: &Value| p["status"]["containerStatuses"][0]["containerID"].clone();
    assert_eq!(id(&after), id(&before));
    assert_eq!(after["status"]["containerStatuses"][0]["restartCount"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_keeps_running_through_an_api_outage() {
    let n = Node::start(10.0, &[]).await.unwrap();
    apply(&n.api, &pod_yaml("steady", &n.name, "Always", "sleep 3600"))
        .await
        .unwrap();
    n.wait_pod("steady", "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    n.api.set_available(false);
    tokio::time::sleep(Duration::from_secs(5)).await;
    n.api.set_available(true);
    let mut keel = n.keel;
    assert!(
        keel.is_running(),
        "keel exited during the outage:\n{}",
        keel.log_tail(40)
    );
    let lease_time = |l: Value| l["spec"]["renewTime"].as_str().map(String::from);
    let before = lease_time(
        get_json(&n.api, &["lease", &n.name, "-n", "kube-node-lease"])
            .await
            .unwrap(),
    )
    .unwrap();
    wait_for("lease renewed after the outage", T, || async {
        let now = lease_time(get_json(&n.api, &["lease", &n.name, "-n", "kube-node-lease"]).await?)?;
        (now != before).then_some(())
    })
    .await
    .unwrap();
    // Pods created after the outage still run (the watch reconnected).
    apply(&n.api, &pod_yaml("after", &n.name, "Always", "sleep 3600"))
        .await
        .unwrap();
    let n2 = Node {
        api: n.api,
        keel,
        name: n.name,
        dir: n.dir,
    };
    n2.wait_pod("after", "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_killed_and_restarted_adopts_running_pods() {
    let mut n = Node::start(1.0, &[]).await.unwrap();
    apply(&n.api, &pod_yaml("keep-a", &n.name, "Always", "sleep 3600"))
        .await
        .unwrap();
    apply(&n.api, &pod_yaml("keep-b", &n.name, "Never", "sleep 3600"))
        .await
        .unwrap();
    apply(&n.api, &pod_yaml("done-c", &n.name, "Never", "exit 0"))
        .await
        .unwrap();
    let mut before = Vec::new();
    for name in ["keep-a", "keep-b"] {
        let p = n
            .wait_pod(name, "Ready", T, |p| {
                condition(p, "Ready").is_some_and(|c| c["status"] == "True")
            })
            .await
            .unwrap();
        before.push(p);
    }
    n.wait_pod("done-c", "Succeeded", T, |p| phase(p) == "Succeeded")
        .await
        .unwrap();
    n.keel.restart_after_kill9().await.unwrap();
    // Give the new keel time to relist, sync and report.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for (name, old) in ["keep-a", "keep-b"].iter().zip(before) {
        let p = n
            .wait_pod(name, "Ready after restart", T, |p| {
                condition(p, "Ready").is_some_and(|c| c["status"] == "True")
            })
            .await
            .unwrap();
        let old_cs = &old["status"]["containerStatuses"][0];
        let new_cs = &p["status"]["containerStatuses"][0];
        assert_eq!(
            new_cs["containerID"], old_cs["containerID"],
            "{name}: container replaced"
        );
        assert_eq!(new_cs["restartCount"], 0, "{name}");
        assert_eq!(
            new_cs["state"]["running"]["startedAt"], old_cs["state"]["running"]["startedAt"],
            "{name}"
        );
        assert_eq!(phase(&p), "Running");
    }
    let done = n.pod("done-c").await.unwrap();
    assert_eq!(phase(&done), "Succeeded", "a completed pod stays completed");
    assert_eq!(done["status"]["containerStatuses"][0]["restartCount"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_rejects_what_the_node_cannot_run() {
    let n = Node::start(1.0, &["--max-pods", "2"]).await.unwrap();
    apply(&n.api, &pod_yaml("fits-1", &n.name, "Always", "sleep 3600"))
        .await
        .unwrap();
    n.wait_pod("fits-1", "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    // Too much CPU for any node.
    let big = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: too-big, namespace: default}}
spec:
  nodeName: {node}
  containers:
  - name: main
    image: busybox:1.36
    resources: {{requests: {{cpu: "4000"}}}}
"#,
        node = n.name
    );
    apply(&n.api, &big).await.unwrap();
    let p = n
        .wait_pod("too-big", "Failed", T, |p| phase(p) == "Failed")
        .await
        .unwrap();
    assert_eq!(p["status"]["reason"], "OutOfcpu");
    let msg = p["status"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Pod Node didn't have enough resource: cpu, requested: 4000000, used: 0, capacity: "),
        "{msg}"
    );
    // A node selector that does not match.
    let sel = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: elsewhere, namespace: default}}
spec:
  nodeName: {node}
  nodeSelector: {{disktype: ssd}}
  containers:
  - {{name: main, image: busybox:1.36}}
"#,
        node = n.name
    );
    apply(&n.api, &sel).await.unwrap();
    let p = n
        .wait_pod("elsewhere", "Failed", T, |p| phase(p) == "Failed")
        .await
        .unwrap();
    assert_eq!(p["status"]["reason"], "NodeAffinity");
    assert_eq!(p["status"]["message"], "Pod Predicate NodeAffinity failed");
    // The second regular pod fits (max 2), the third does not.
    apply(&n.api, &pod_yaml("fits-2", &n.name, "Always", "sleep 3600"))
        .await
        .unwrap();
    n.wait_pod("fits-2", "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    apply(&n.api, &pod_yaml("one-too-many", &n.name, "Always", "sleep 3600"))
        .await
        .unwrap();
    let p = n
        .wait_pod("one-too-many", "Failed", T, |p| phase(p) == "Failed")
        .await
        .unwrap();
    assert_eq!(p["status"]["reason"], "OutOfpods");
    let ev = events_about(&n.api, "one-too-many").await;
    assert!(
        ev.iter().any(|e| e["reason"] == "OutOfpods" && e["type"] == "Warning"),
        "{ev:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_pods_run_with_mirror_pods_that_come_back_when_deleted() {
    let api = crate::support::apiserver::TestApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("static-web.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: static-web\nspec:\n  containers:\n  - name: web\n    image: nginx:1.27\n",
    )
    .unwrap();
    let name = unique("node");
    let kc = api.kubeconfig_for(&format!("system:node:{name}"), &["system:nodes"]);
    let keel = Keel::start(
        KeelOpts::new(&name, Some(kc), dir.path())
            .arg("--pod-manifest-path")
            .arg(manifests.to_str().unwrap()),
    )
    .await
    .unwrap();
    let n = Node {
        api,
        keel,
        name: name.clone(),
        dir,
    };
    let mirror = format!("static-web-{name}");
    let m = n
        .wait_pod(&mirror, "mirror pod Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    let ann = &m["metadata"]["annotations"];
    assert!(ann["kubernetes.io/config.mirror"].is_string(), "{ann}");
    assert_eq!(m["metadata"]["ownerReferences"][0]["kind"], "Node");
    let old_uid = m["metadata"]["uid"].as_str().unwrap().to_string();
    let out = n
        .api
        .kubectl(&["delete", "pod", &mirror, "--grace-period=0", "--force"])
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m = n
        .wait_pod(&mirror, "mirror recreated", T, |p| {
            p["metadata"]["uid"].as_str() != Some(old_uid.as_str()) && phase(p) == "Running"
        })
        .await
        .unwrap();
    assert_eq!(
        m["status"]["containerStatuses"][0]["restartCount"], 0,
        "deleting the mirror does not restart the static pod"
    );
    // Removing the file stops the pod and deletes its mirror.
    std::fs::remove_file(n.dir.path().join("manifests/static-web.yaml")).unwrap();
    wait_for("mirror gone", T, || async {
        n.pod(&mirror).await.is_none().then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_runs_static_pods_and_prints_status_changes() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("job.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: job\nspec:\n  restartPolicy: Never\n  containers:\n  - name: work\n    image: busybox:1.36\n    command: [sh, -c, 'echo hi; sleep 1']\n",
    )
    .unwrap();
    let keel = Keel::start(
        KeelOpts::new("standalone-node", None, dir.path())
            .arg("--pod-manifest-path")
            .arg(manifests.to_str().unwrap()),
    )
    .await
    .unwrap();
    let out = wait_for("Succeeded printed", T, || async {
        let s = keel.stdout();
        s.contains("phase=Succeeded").then_some(s)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nstdout:\n{}\nlog:\n{}", keel.stdout(), keel.log_tail(30)));
    let running = out
        .lines()
        .position(|l| l.contains("job-standalone-node") && l.contains("phase=Running"));
    let done = out
        .lines()
        .position(|l| l.contains("job-standalone-node") && l.contains("phase=Succeeded"));
    assert!(running.is_some() && done > running, "status changes in order:\n{out}");
}
