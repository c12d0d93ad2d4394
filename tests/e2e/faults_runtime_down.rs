//! The container runtime stopped under keel: containerd (scripts/containerd-env.sh's, by the PID
//! in its `containerd.pid`) gets SIGTERM (its shims, and so the containers, keep running, as in a
//! real runtime restart). The node stays Ready while the runtime has been away less than the
//! kubelet's 30 s (`maxWaitForContainerRuntime`), then turns NotReady with the kubelet's reason
//! ("container runtime is down") by the next status update; when containerd is started again
//! the node is Ready within 10 s, and the pods' containers are the same ones, never restarted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cri_lifecycle::{cri_lock, delete_all};
use crate::support::util::*;

const T: Duration = Duration::from_secs(90);
const POLITE: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

fn ctrd_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("KEEL_CONTAINERD_DIR").unwrap_or_else(|_| {
            panic!("KEEL_CONTAINERD_DIR is not set: run the CRI e2e tests through scripts/test.sh")
        }),
    )
}

fn containerd_pid() -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(ctrd_dir().join("containerd.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // Only a PID that still runs containerd (guards against reuse).
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmd).contains("containerd").then_some(pid)
}

/// `containerd-env.sh restart DIR`: starts containerd (stopping it first if it runs).
fn start_containerd() -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/containerd-env.sh");
    std::process::Command::new("bash")
        .arg(script)
        .arg("restart")
        .arg(ctrd_dir())
        .output()
        .unwrap_or_else(|e| panic!("running containerd-env.sh restart: {e}"))
}

/// Starts containerd again if the test ends (or fails) while it is stopped: the other CRI
/// tests share it.
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        if containerd_pid().is_none() {
            let _ = start_containerd();
        }
    }
}

fn ready(n: &Value) -> Option<(String, String)> {
    let c = condition(n, "Ready")?;
    Some((
        c["status"].as_str().unwrap_or_default().to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    ))
}

fn cs(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_containerd_stopped_node_not_ready_then_ready_pods_untouched() {
    let _g = cri_lock().await;
    let n = Node::start_cri_with_config(&[], NO_EVICTION).await.unwrap();
    let names: Vec<String> = (0..2).map(|_| unique("fr-down")).collect();
    for nm in &names {
        apply(&n.api, &pod_yaml(nm, &n.name, "Always", POLITE)).await.unwrap();
    }
    let mut ids = Vec::new();
    for nm in &names {
        let p = n
            .wait_pod(nm, "Running", T, |p| {
                condition(p, "Ready").is_some_and(|c| c["status"] == "True")
            })
            .await
            .unwrap();
        ids.push(cs(&p)["containerID"].clone());
    }

    let pid = containerd_pid().expect("containerd of scripts/containerd-env.sh is not running");
    let _restart = RestartOnDrop;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_for("containerd to exit", Duration::from_secs(20), || async {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await
    .unwrap();
    let stopped = Instant::now();

    // Ready while the runtime has been away < 30 s (minus a margin for the poll that saw it
    // last), then NotReady with the kubelet's reason by the next status update (10 s + jitter).
    let mut not_ready: Option<(Duration, String)> = None;
    while stopped.elapsed() < Duration::from_secs(60) {
        let node = get_json(&n.api, &["node", &n.name]).await;
        if let Some((status, message)) = node.as_ref().and_then(ready) {
            if status != "True" {
                not_ready = Some((stopped.elapsed(), message));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (after, message) = not_ready.unwrap_or_else(|| {
        panic!(
            "node still Ready 60 s after containerd stopped\n{}",
            n.keel.log_tail(40)
        )
    });
    assert!(
        after >= Duration::from_secs(24),
        "NotReady after {after:?}: the kubelet waits 30 s for the runtime ({message})"
    );
    assert!(
        message.contains("container runtime is down"),
        "Ready condition message {message:?}"
    );
    eprintln!("containerd stopped: NotReady after {after:?}: {message}");

    let out = start_containerd();
    assert!(
        out.status.success(),
        "starting containerd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    let r = wait_for("node Ready again", Duration::from_secs(10), || async {
        let node = get_json(&n.api, &["node", &n.name]).await?;
        (ready(&node)?.0 == "True").then_some(())
    })
    .await;
    if let Err(e) = r {
        let node = get_json(&n.api, &["node", &n.name]).await.unwrap_or_default();
        panic!(
            "{e} after containerd returned: {:?}\n{}",
            ready(&node),
            n.keel.log_tail(40)
        );
    }
    eprintln!("containerd started: Ready after {:?}", started.elapsed());

    tokio::time::sleep(Duration::from_secs(3)).await;
    for (nm, id) in names.iter().zip(&ids) {
        let p = n.pod(nm).await.unwrap();
        assert_eq!(&cs(&p)["containerID"], id, "{nm}: container replaced");
        assert_eq!(cs(&p)["restartCount"], 0, "{nm}: {}", p["status"]);
        assert!(cs(&p)["state"]["running"].is_object(), "{nm}: {}", p["status"]);
    }
    assert!(!n.keel.logs().contains("panicked"));
    delete_all(&n).await;
}
