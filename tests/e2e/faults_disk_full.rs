//! The disk under keel's root dir and pod log dir fills up, then turns read-only, then gets its
//! space back. Both dirs are small tmpfs mounts the test makes in its private directory before
//! keel starts (keel on the simulator, whose state journal lives under the root dir too), filled
//! with one file. While full: the node reports DiskPressure with the kubelet's event, a pod
//! created then is rejected as the kubelet rejects it (Failed, `Evicted`, "Pod The node had
//! condition: [DiskPressure]. "), keel neither panics nor exits and still answers /healthz and
//! renews its lease. When the space is back the pressure clears; keel restarted then loads its
//! state: the pods that ran are adopted with the same containers and no restart (unless an
//! eviction manager evicted them under the pressure), and new pods run.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::apiserver::TestApiServer;
use crate::support::util::*;

const T: Duration = Duration::from_secs(60);
/// DiskPressure below 10 % free on the root dir's filesystem, as the kubelet's default; memory
/// and image thresholds off (a shared test machine must not decide this test).
const EVICTION: &str = "evictionHard:\n  memory.available: \"1Ki\"\n  nodefs.available: \"10%\"\n  nodefs.inodesFree: \"5%\"\n  imagefs.available: \"0%\"\nevictionPressureTransitionPeriod: 5s\n";

fn mount_tmpfs(at: &Path, size: &str) {
    std::fs::create_dir_all(at).unwrap();
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount tmpfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run(args: &[&str], at: &Path) {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .arg(at)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Puts a read-only bind mount of `at` over it: every path lookup from now on meets a
/// read-only filesystem (a remount of the tmpfs itself is refused while keel has files open
/// for writing; those already open keep writing to the tmpfs underneath).
fn read_only(at: &Path) {
    let path = at.to_string_lossy().into_owned();
    run(&["mount", "--bind", &path], at);
    run(&["mount", "-o", "remount,bind,ro"], at);
}

/// Removes the read-only bind mount (lazily: keel may have something open through it).
fn writable(at: &Path) {
    run(&["umount", "-l"], at);
}

/// Writes `<at>/fill` until the filesystem is full.
fn fill(at: &Path) {
    let mut f = std::fs::File::create(at.join("fill")).unwrap();
    let chunk = vec![0u8; 256 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // The last partial blocks.
    while f.write_all(&chunk[..4096]).is_ok() {}
}

/// Status code of `GET /healthz` on keel's plain healthz port.
async fn healthz(port: u16) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    String::from_utf8_lossy(&buf).split(' ').nth(1)?.parse().ok()
}

fn disk_pressure(node: &Value) -> Option<String> {
    condition(node, "DiskPressure").and_then(|c| c["status"].as_str().map(String::from))
}

async fn lease_renew_time(n: &Node) -> Option<String> {
    let l = get_json(&n.api, &["lease", &n.name, "-n", "kube-node-lease"]).await?;
    l["spec"]["renewTime"].as_str().map(String::from)
}

fn cs(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_and_read_only_under_root_and_log_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let (root, logs) = (dir.path().join("root"), dir.path().join("pods"));
    // Unmounted by Keel's drop (support::keel::unmount_under) however the test ends.
    mount_tmpfs(&root, "64m");
    mount_tmpfs(&logs, "16m");
    let mut n = Node::start_on_in(
        TestApiServer::start().await.unwrap(),
        Backend::Sim { time_scale: 1.0 },
        &[],
        EVICTION,
        dir,
    )
    .await
    .unwrap();
    let names: Vec<String> = (0..2).map(|_| unique("df")).collect();
    for nm in &names {
        apply(
            &n.api,
            &pod_yaml(nm, &n.name, "Always", "while true; do echo tick; sleep 0.2; done"),
        )
        .await
        .unwrap();
    }
    let mut before = Vec::new();
    for nm in &names {
        before.push(n.wait_pod(nm, "Running", T, |p| phase(p) == "Running").await.unwrap());
    }

    fill(&root);
    fill(&logs);
    let node = n.name.clone();
    wait_for("DiskPressure=True", T, || async {
        let nd = get_json(&n.api, &["node", &node]).await?;
        (disk_pressure(&nd)? == "True").then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    wait_for("the NodeHasDiskPressure event", T, || async {
        event_reasons(&n.api, &node)
            .await
            .iter()
            .any(|r| r == "NodeHasDiskPressure")
            .then_some(())
    })
    .await
    .unwrap();
    // A pod arriving now is refused as the kubelet refuses it.
    let late = unique("df-late");
    apply(&n.api, &pod_yaml(&late, &n.name, "Always", "sleep 3600"))
        .await
        .unwrap();
    let p = n
        .wait_pod(&late, "rejected", T, |p| phase(p) == "Failed")
        .await
        .unwrap();
    assert_eq!(p["status"]["reason"], "Evicted", "{}", p["status"]);
    // "Pod " + the predicate's message, as the kubelet's rejectPod words it.
    assert!(
        p["status"]["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("The node had condition: [DiskPressure]. ")),
        "{}",
        p["status"]
    );

    // Read-only as well: keel keeps serving and reporting.
    read_only(&root);
    read_only(&logs);
    let renewed = lease_renew_time(&n).await;
    wait_for("a lease renewal while the disk is read-only", T, || async {
        (lease_renew_time(&n).await != renewed).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    assert_eq!(healthz(n.keel.healthz_port()).await, Some(200));
    assert!(n.keel.is_running(), "keel exited:\n{}", n.keel.log_tail(40));

    // Space back.
    writable(&root);
    writable(&logs);
    std::fs::remove_file(root.join("fill")).unwrap();
    std::fs::remove_file(logs.join("fill")).unwrap();
    wait_for("DiskPressure=False", T, || async {
        let nd = get_json(&n.api, &["node", &node]).await?;
        (disk_pressure(&nd)? == "False").then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    assert!(n.keel.is_running(), "keel exited:\n{}", n.keel.log_tail(40));
    assert!(!n.keel.logs().contains("panicked"), "{}", n.keel.log_tail(60));

    // keel restarted loads what it wrote around the failures: same containers, no restart.
    n.keel.restart_after_kill9().await.unwrap();
    n.wait_ready().await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // (A pod the eviction manager evicted under the pressure is Failed/Evicted instead.)
    let evicted = |p: &Value| phase(p) == "Failed" && p["status"]["reason"] == "Evicted";
    for (nm, old) in names.iter().zip(&before) {
        let p = n
            .wait_pod(nm, "Running (or evicted)", T, |p| phase(p) == "Running" || evicted(p))
            .await
            .unwrap();
        if evicted(&p) {
            continue;
        }
        assert_eq!(cs(&p)["containerID"], cs(old)["containerID"], "{nm}: {}", p["status"]);
        assert_eq!(cs(&p)["restartCount"], 0, "{nm}: {}", p["status"]);
    }
    // New pods run again.
    let fresh = unique("df-after");
    apply(&n.api, &pod_yaml(&fresh, &n.name, "Always", "sleep 3600"))
        .await
        .unwrap();
    n.wait_pod(&fresh, "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    assert!(!n.keel.logs().contains("panicked"), "{}", n.keel.log_tail(60));
}
