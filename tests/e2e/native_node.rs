//! What only keel's native backend (`--runtime native`) has to show, on real runc, CNI plugins
//! and monitors (support::native): a container that exits while keel is down is reported with
//! its real exit code; after a node reboot (monitors, containers, pinned namespaces and mounts
//! gone, the run dir emptied) keel cleans up and recreates the pods; and N pod create/delete
//! cycles leave no mount, netns file, veth, IPAM entry, cgroup, monitor, runc container or keel
//! fd behind (N = 200 with `KEEL_LONG=1`). Adoption after SIGKILL is the shared body
//! `keel_killed_and_restarted_adopts_running_pods` (tests/e2e/cri_lifecycle.rs).
//!
//! Each node has its own root and run dir: no lock, parallel-safe.
//!
//! The bodies are `async fn(Backend)` like the shared ones; [`backend_test!`] lists the ones
//! the native backend passes (a body it cannot pass yet has no line: none is faked or ignored).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::cri_lifecycle::remove_node_cgroups;
use crate::runtimes::{backend_test, RtNode, NATIVE};
use crate::support::native::{self, Footprint, FootprintScope};
use crate::support::util::*;

const T: Duration = Duration::from_secs(90);
const POLITE: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

fn cs(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

fn running_ready(p: &Value) -> bool {
    phase(p) == "Running" && condition(p, "Ready").is_some_and(|c| c["status"] == "True")
}

fn container_id(p: &Value) -> String {
    let id = cs(p)["containerID"].as_str().unwrap_or_default();
    id.split_once("://").map(|(_, i)| i).unwrap_or(id).to_string()
}

/// One pod running `script` in `main`, with extra spec lines (2-space YAML).
fn pod(name: &str, node: &str, policy: &str, script: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  nodeName: {node}\n  \
         restartPolicy: {policy}\n  terminationGracePeriodSeconds: 2\n{spec_extra}  containers:\n  - name: main\n    \
         image: busybox:1.36\n    command: [\"sh\", \"-c\", {script:?}]\n"
    )
}

/// Deletes every pod and waits until they are gone, then removes the node's cgroup root.
async fn delete_all(n: &RtNode) {
    let out = n
        .api
        .kubectl(&["delete", "pods", "--all", "-n", "default", "--wait=false"])
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("all pods gone", Duration::from_secs(180), || async {
        let l = get_json(&n.api, &["pods", "-n", "default"]).await?;
        l["items"].as_array()?.is_empty().then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    remove_node_cgroups(&n.name).await;
}

fn run_dir(n: &RtNode) -> std::path::PathBuf {
    n.keel.opts.native_run_dir.clone().expect("a native node")
}

/// `runc state <id>`'s status ("running", "stopped", ...), None when runc has no such container.
fn runc_status(run_dir: &Path, id: &str) -> Option<String> {
    let out = std::process::Command::new(native::runc())
        .arg("--root")
        .arg(run_dir.join("runc"))
        .args(["state", id])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["status"].as_str().map(String::from)
}

backend_test! {
    native_container_exiting_while_keel_is_down_reports_its_exit_code => container_exiting_while_keel_is_down_reports_its_exit_code(NATIVE);
    native_reboot_cleans_up_and_recreates_the_pods => reboot_cleans_up_and_recreates_the_pods(NATIVE);
    native_pod_cycles_leave_nothing_behind => pod_cycles_leave_nothing_behind(NATIVE);
}

async fn container_exiting_while_keel_is_down_reports_its_exit_code(backend: Backend) {
    let mut n = RtNode::start(backend, &[], "").await.unwrap();
    let host = n.dir.path().join("gate");
    std::fs::create_dir_all(&host).unwrap();
    let name = unique("nat-exit");
    // The container ends with 7 once the test drops a file into its hostPath volume.
    let script = "while [ ! -e /gate/go ]; do sleep 0.2; done; echo leaving; exit 7";
    let volumes = format!(
        "  volumes:\n  - name: gate\n    hostPath: {{path: {}}}\n",
        host.display()
    );
    let manifest = pod(&name, &n.name, "Never", script, &volumes).replace(
        "    command:",
        "    volumeMounts:\n    - {name: gate, mountPath: /gate}\n    command:",
    );
    apply(&n.api, &manifest).await.unwrap();
    let p = n.wait_pod(&name, "Running", T, running_ready).await.unwrap();
    let id = container_id(&p);
    let rd = run_dir(&n);

    n.keel.kill9().await;
    std::fs::write(host.join("go"), "").unwrap();
    wait_for("the container stopped while keel is down", T, || async {
        (runc_status(&rd, &id).as_deref() != Some("running")).then_some(())
    })
    .await
    .unwrap();
    // Its monitor recorded the exit and is gone too (nothing else would wait for the process).
    wait_for("the monitor gone", T, || async {
        native::monitor_pids(&rd).is_empty().then_some(())
    })
    .await
    .unwrap();

    n.keel.restart_after_kill9().await.unwrap();
    n.wait_ready().await.unwrap();
    let p = n
        .wait_pod(&name, "Failed with the real exit code", T, |p| phase(p) == "Failed")
        .await
        .unwrap();
    let t = &cs(&p)["state"]["terminated"];
    assert_eq!(t["exitCode"], 7, "{}", p["status"]);
    assert_eq!(t["reason"], "Error", "{t}");
    assert_eq!(container_id(&p), id, "the same container");
    assert_eq!(cs(&p)["restartCount"], 0);
    // The monitor wrote the last words to the CRI log while keel was away; kubectl reads them.
    let out = n.api.kubectl(&["logs", &name, "-n", "default"]).await;
    assert!(
        out.status.success(),
        "kubectl logs: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        n.keel.log_tail(40)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "leaving\n");
    assert!(!n.keel.logs().contains("panicked"));
    delete_all(&n).await;
}

/// What a reboot does to a native node: every process gone (monitors, containers), every mount
/// gone (pinned namespaces, overlay root filesystems, volumes), the run dir (a tmpfs) empty.
/// keel's root dir (on disk) stays.
fn reboot(run_dir: &Path, dir: &Path) {
    native::cleanup(run_dir, dir);
    std::fs::create_dir_all(run_dir).unwrap();
}

async fn reboot_cleans_up_and_recreates_the_pods(backend: Backend) {
    let mut n = RtNode::start(backend, &[], "").await.unwrap();
    let name = unique("nat-reboot");
    apply(&n.api, &pod(&name, &n.name, "Always", POLITE, "")).await.unwrap();
    let p = n.wait_pod(&name, "Running", T, running_ready).await.unwrap();
    let old_id = container_id(&p);
    let old_ip = p["status"]["podIP"].as_str().unwrap_or_default().to_string();
    let rd = run_dir(&n);

    n.keel.kill9().await;
    reboot(&rd, n.dir.path());
    n.keel.restart_after_kill9().await.unwrap();
    n.wait_ready().await.unwrap();
    let p = n
        .wait_pod(&name, "Running again in a new container", T, |p| {
            running_ready(p) && !container_id(p).is_empty() && container_id(p) != old_id
        })
        .await
        .unwrap();
    assert!(
        p["status"]["podIP"].as_str().is_some_and(|ip| !ip.is_empty()),
        "{}",
        p["status"]
    );
    // Nothing of the old pod incarnation is left: one container in runc, one monitor, one
    // pinned network namespace (the new sandbox's).
    let fp = wait_for("the old sandbox cleaned up", T, || async {
        let fp = FootprintScope {
            run_dir: &rd,
            dir: n.dir.path(),
            bridge: "",
            ipam_dir: Path::new(""),
            cgroup_root: "",
            keel_pid: None,
        }
        .read();
        (fp.runc_containers == 1 && fp.monitors == 1 && fp.netns_files == 1).then_some(fp)
    })
    .await;
    assert!(fp.is_ok(), "old IP {old_ip}; {fp:?}\n{}", n.keel.log_tail(40));
    assert!(!n.keel.logs().contains("panicked"));
    delete_all(&n).await;
}

/// A CNI network of the test's own (bridge, subnet, IPAM dir), so veths and address
/// reservations are counted exactly; the bridge is removed on drop.
struct OwnNetwork {
    bridge: String,
    conf_dir: std::path::PathBuf,
    ipam_dir: std::path::PathBuf,
}

impl OwnNetwork {
    fn create(dir: &Path) -> OwnNetwork {
        let bridge = format!("knl{:06x}", rand::random::<u32>() & 0xff_ffff);
        let conf_dir = dir.join("net.d");
        let ipam_dir = dir.join("ipam");
        std::fs::create_dir_all(&conf_dir).unwrap();
        std::fs::create_dir_all(&ipam_dir).unwrap();
        let octet = 200 + (rand::random::<u8>() % 50);
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("keel-{bridge}"),
            "plugins": [
                {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("10.{octet}.0.0/16")}]],
                          "dataDir": ipam_dir}},
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "loopback"},
            ],
        });
        std::fs::write(conf_dir.join("10-leak.conflist"), conf.to_string()).unwrap();
        OwnNetwork {
            bridge,
            conf_dir,
            ipam_dir,
        }
    }
}

impl Drop for OwnNetwork {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

async fn pod_cycles_leave_nothing_behind(backend: Backend) {
    let long = std::env::var("KEEL_LONG").is_ok_and(|v| v == "1");
    let cycles: usize = if long { 200 } else { 6 };
    let batch = cycles.min(10);
    let net_dir = tempfile::tempdir().unwrap();
    let net = OwnNetwork::create(net_dir.path());
    let conf = net.conf_dir.display().to_string();
    let n = RtNode::start(backend, &["--cni-conf-dir", &conf], NO_EVICTION)
        .await
        .unwrap();
    let rd = run_dir(&n);
    let cgroup_root = node_cgroup_root(&n.name);
    let scope = || FootprintScope {
        run_dir: &rd,
        dir: n.dir.path(),
        bridge: &net.bridge,
        ipam_dir: &net.ipam_dir,
        cgroup_root: cgroup_root.trim_start_matches('/'),
        keel_pid: n.keel.pid(),
    };
    let round = |r: usize| {
        let n = &n;
        async move {
            let names: Vec<String> = (0..batch).map(|i| unique(&format!("nat-cyc{r}-{i}"))).collect();
            let manifest = names
                .iter()
                .map(|nm| pod(nm, &n.name, "Always", POLITE, ""))
                .collect::<Vec<_>>()
                .join("---\n");
            apply(&n.api, &manifest).await.unwrap();
            for nm in &names {
                n.wait_pod(nm, "Running", T, running_ready).await.unwrap();
            }
            let out = n
                .api
                .kubectl(&["delete", "pods", "--all", "-n", "default", "--wait=false"])
                .await;
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            wait_for("the round's pods gone", Duration::from_secs(180), || async {
                let l = get_json(&n.api, &["pods", "-n", "default"]).await?;
                l["items"].as_array()?.is_empty().then_some(())
            })
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
        }
    };
    // One warm-up round: keel opens what it keeps open (watches, connections, the image store).
    round(0).await;
    let settled = |want: Option<Footprint>| {
        let scope = &scope;
        async move {
            // Sandboxes go at the next GC, pod cgroups at housekeeping: let them go.
            wait_for("runtime state settled", Duration::from_secs(120), || async {
                let fp = scope().read();
                let idle = fp.runc_containers == 0 && fp.monitors == 0 && fp.netns_files == 0 && fp.veths == 0;
                // Nothing above where it started (housekeeping may also have removed volumes
                // of pods deleted before the first count).
                let same = want.as_ref().is_none_or(|w| {
                    fp.mounts <= w.mounts
                        && fp.netns_files <= w.netns_files
                        && fp.veths <= w.veths
                        && fp.ipam_entries <= w.ipam_entries
                        && fp.cgroups <= w.cgroups
                        && fp.monitors <= w.monitors
                        && fp.runc_containers <= w.runc_containers
                });
                (idle && same).then_some(fp)
            })
            .await
        }
    };
    let before = settled(None)
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", scope().read(), n.keel.log_tail(40)));
    for r in 1..=cycles / batch {
        round(r).await;
    }
    let after = settled(Some(before.clone())).await;
    let after = after.unwrap_or_else(|e| panic!("{e}: before {before:?}, after {:?}", scope().read()));
    // A few fds may come and go (connections to the API server); none may pile up per pod.
    assert!(
        after.keel_fds <= before.keel_fds + 5,
        "keel fds: {} before, {} after {cycles} pods",
        before.keel_fds,
        after.keel_fds
    );
    eprintln!("{cycles} pods created and deleted: before {before:?}, after {after:?}");
    assert!(!n.keel.logs().contains("panicked"));
    delete_all(&n).await;
}
