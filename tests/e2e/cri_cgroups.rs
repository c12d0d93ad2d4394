//! Pod cgroups on a REAL containerd (`KEEL_CRI_SOCKET`, `KEEL_TEST_CGROUP_ROOT`; see
//! tests/README.md): keel creates `<cgroupRoot>/pod<uid>` before the sandbox (with the pod's
//! memory limit), the containers' cgroups live inside it, and keel removes it in every hierarchy
//! after the pod is deleted (containerd never does).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Result};

use crate::support::util::{apply, phase, unique, wait_for, Node};

const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

fn env_or_fail(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: the pod cgroup tests need a real containerd; run them through \
             scripts/test.sh (it starts one with scripts/containerd-env.sh and exports {name})"
        ),
    }
}

/// Every hierarchy's directory for `relative` (v1 controllers, the hybrid unified mount, or a
/// pure v2 mount) that exists now.
fn existing_dirs(relative: &str) -> Vec<PathBuf> {
    let rel = relative.trim_start_matches('/');
    let mut out = Vec::new();
    if Path::new(CGROUP_MOUNT).join("cgroup.controllers").is_file() {
        let d = Path::new(CGROUP_MOUNT).join(rel);
        if d.is_dir() {
            out.push(d);
        }
        return out;
    }
    if let Ok(entries) = std::fs::read_dir(CGROUP_MOUNT) {
        for e in entries.flatten() {
            let d = e.path().join(rel);
            if e.path().is_dir() && !e.path().is_symlink() && d.is_dir() {
                out.push(d);
            }
        }
    }
    out
}

/// Removes the test's (empty) cgroup root in every hierarchy; `containerd-env.sh down` sweeps
/// whatever is left.
fn remove_root(cgroup_root: &str) {
    for d in existing_dirs(cgroup_root) {
        let _ = std::fs::remove_dir(d);
    }
}

fn subdirs(d: &Path) -> Vec<String> {
    std::fs::read_dir(d)
        .map(|es| {
            es.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_cgroup_exists_while_running_and_is_removed_after_delete() -> Result<()> {
    let socket = env_or_fail("KEEL_CRI_SOCKET");
    let test_root = env_or_fail("KEEL_TEST_CGROUP_ROOT");
    // Two keels on one containerd kill each other's pods (tests/README.md).
    let _lock = crate::cri_lifecycle::cri_lock().await;
    let cgroup_root = format!("{}/{}", test_root.trim_end_matches('/'), unique("cg"));
    let runtime = format!("unix://{socket}");
    let node = Node::start(1.0, &["--runtime", &runtime, "--cgroup-root", &cgroup_root]).await?;
    let name = unique("cgpod");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
spec:
  nodeName: {node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
    resources:
      limits:
        memory: 64Mi
"#,
        node = node.name
    );
    apply(&node.api, &manifest).await?;
    let pod = node
        .wait_pod(&name, "pod Running", Duration::from_secs(60), |p| phase(p) == "Running")
        .await?;
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    ensure!(!uid.is_empty(), "pod has no uid");
    let pod_cgroup = format!("{cgroup_root}/pod{uid}");

    let dirs = existing_dirs(&pod_cgroup);
    let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    ensure!(
        dirs.iter()
            .any(|d| d.starts_with(Path::new(CGROUP_MOUNT).join("memory")))
            || Path::new(CGROUP_MOUNT).join("cgroup.controllers").is_file(),
        "no memory pod cgroup; found {names:?}"
    );
    // The sandbox and the container run inside the pod cgroup.
    for d in &dirs {
        if d.starts_with(Path::new(CGROUP_MOUNT).join("memory")) || d.starts_with(Path::new(CGROUP_MOUNT).join("pids"))
        {
            let children = subdirs(d);
            ensure!(
                children.len() >= 2,
                "expected sandbox and container cgroups in {}, found {children:?}",
                d.display()
            );
        }
    }
    // The pod's memory limit (every container has one) is applied to the pod cgroup.
    let v1_limit = Path::new(CGROUP_MOUNT)
        .join("memory")
        .join(pod_cgroup.trim_start_matches('/'))
        .join("memory.limit_in_bytes");
    if v1_limit.is_file() {
        let v = std::fs::read_to_string(&v1_limit)?;
        ensure!(v.trim() == (64 * 1024 * 1024).to_string(), "pod memory limit {v:?}");
    }

    let out = node
        .api
        .kubectl(&["delete", "pod", &name, "-n", "default", "--wait=false"])
        .await;
    ensure!(
        out.status.success(),
        "kubectl delete: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = wait_for(
        "pod deleted and its cgroup removed",
        Duration::from_secs(60),
        || async {
            let in_api = node.pod(&name).await.is_some();
            (!in_api && existing_dirs(&pod_cgroup).is_empty()).then_some(())
        },
    )
    .await;
    if let Err(e) = gone {
        let left: Vec<String> = existing_dirs(&pod_cgroup)
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        bail!("{e}: left {left:?}; keel log:\n{}", node.keel.log_tail(40));
    }
    drop(node);
    remove_root(&cgroup_root);
    Ok(())
}

/// A pod cgroup under keel's root that no pod owns (left by an earlier keel) is removed by
/// housekeeping, in every hierarchy; other directories under the root are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_pod_cgroups_are_removed_by_housekeeping() -> Result<()> {
    let socket = env_or_fail("KEEL_CRI_SOCKET");
    let test_root = env_or_fail("KEEL_TEST_CGROUP_ROOT");
    // Two keels on one containerd kill each other's pods (tests/README.md).
    let _lock = crate::cri_lifecycle::cri_lock().await;
    let cgroup_root = format!("{}/{}", test_root.trim_end_matches('/'), unique("cg"));
    let orphan = format!("{cgroup_root}/pod{}", unique("orphan-uid"));
    let other = format!("{cgroup_root}/not-a-pod");
    let mut made = Vec::new();
    for h in ["memory", "pids"] {
        let base = Path::new(CGROUP_MOUNT).join(h);
        if base.is_dir() {
            for rel in [&orphan, &other] {
                let d = base.join(rel.trim_start_matches('/'));
                std::fs::create_dir_all(&d)?;
                made.push(d);
            }
        }
    }
    if made.is_empty() {
        // Pure v2 machine.
        for rel in [&orphan, &other] {
            let d = Path::new(CGROUP_MOUNT).join(rel.trim_start_matches('/'));
            std::fs::create_dir_all(&d)?;
            made.push(d);
        }
    }
    ensure!(!existing_dirs(&orphan).is_empty(), "could not create the orphan cgroup");
    let runtime = format!("unix://{socket}");
    let node = Node::start(1.0, &["--runtime", &runtime, "--cgroup-root", &cgroup_root]).await?;
    let r = wait_for("orphaned pod cgroup removed", Duration::from_secs(30), || async {
        existing_dirs(&orphan).is_empty().then_some(())
    })
    .await;
    let other_left = !existing_dirs(&other).is_empty();
    // Clean up what the test made (deepest first), whatever the outcome.
    for d in made.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
    if let Err(e) = r {
        bail!("{e}; keel log:\n{}", node.keel.log_tail(40));
    }
    ensure!(other_left, "a non-pod directory under the cgroup root was removed");
    drop(node);
    remove_root(&cgroup_root);
    Ok(())
}
