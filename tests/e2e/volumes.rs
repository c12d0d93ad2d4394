//! Pod volumes on the simulated backend (its `cat` reads the real volume files keel wrote):
//! configMap, secret, downwardAPI, projected (with the service-account token of the
//! `kube-api-access-*` volume), emptyDir and subPath; updates reaching a running pod; a missing
//! ConfigMap blocking a pod until it appears; teardown after deletion.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::support::util::*;

const T: Duration = Duration::from_secs(60);

/// The container's CRI log text (first instance).
fn log_text(n: &Node, name: &str, uid: &str) -> String {
    let path = n
        .keel
        .pod_logs_dir()
        .join(format!("default_{name}_{uid}"))
        .join("main")
        .join("0.log");
    std::fs::read_to_string(path).unwrap_or_default()
}

fn volume_dir(n: &Node, uid: &str, plugin: &str, volume: &str) -> PathBuf {
    n.dir
        .path()
        .join("root/pods")
        .join(uid)
        .join("volumes")
        .join(plugin)
        .join(volume)
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn volume_pod(name: &str, node: &str, cm: &str, secret: &str, script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
  labels: {{app: vol, tier: "x y"}}
spec:
  nodeName: {node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  volumes:
  - name: cfg
    configMap:
      name: {cm}
      items: [{{key: key1, path: path/to/k, mode: 0400}}]
  - name: sec
    secret: {{secretName: {secret}, defaultMode: 0440}}
  - name: info
    downwardAPI:
      items:
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
      - {{path: podname, fieldRef: {{fieldPath: metadata.name}}}}
  - name: proj
    projected:
      sources:
      - secret: {{name: {secret}, items: [{{key: password, path: s/pw}}]}}
      - configMap: {{name: {cm}}}
      - downwardAPI: {{items: [{{path: ns, fieldRef: {{fieldPath: metadata.namespace}}}}]}}
  - name: scratch
    emptyDir: {{}}
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", {script:?}]
    volumeMounts:
    - {{name: cfg, mountPath: /etc/cfg}}
    - {{name: sec, mountPath: /etc/sec}}
    - {{name: info, mountPath: /etc/info}}
    - {{name: proj, mountPath: /etc/proj}}
    - {{name: scratch, mountPath: /scratch}}
    - {{name: scratch, mountPath: /sub, subPath: deep/dir}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_files_modes_updates_and_teardown() {
    // Compressed clock: the 60 s resync that refreshes volumes is 6 s of real time.
    let n = Node::start(10.0, &[]).await.unwrap();
    let cm = unique("cfg");
    let secret = unique("sec");
    apply(
        &n.api,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {cm}, namespace: default}}\ndata: {{key1: value-1, other: o}}\n"
        ),
    )
    .await
    .unwrap();
    apply(
        &n.api,
        // "hunter2"
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {secret}, namespace: default}}\ndata: {{password: aHVudGVyMg==}}\n"
        ),
    )
    .await
    .unwrap();
    let name = unique("vol");
    let script = "cat /etc/sec/password; echo; cat /etc/info/labels; echo; cat /etc/info/podname; echo; \
                  cat /etc/proj/s/pw; echo; cat /etc/proj/other; echo; cat /etc/proj/ns; echo; \
                  cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; \
                  test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo token-present; \
                  echo shared > /sub/f; cat /scratch/deep/dir/f; \
                  while true; do cat /etc/cfg/path/to/k; echo; sleep 2; done";
    apply(&n.api, &volume_pod(&name, &n.name, &cm, &secret, script))
        .await
        .unwrap();
    let p = n
        .wait_pod(&name, "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let log = wait_for("all files printed", T, || async {
        let l = log_text(&n, &name, &uid);
        l.contains("value-1").then_some(l)
    })
    .await
    .unwrap();
    for want in [
        "hunter2",
        "app=\"vol\"",
        "tier=\"x y\"",
        &name,
        "stdout P o\n",
        "stdout P default\n",
        "token-present",
        "stdout F shared",
    ] {
        assert!(log.contains(want), "{want:?} missing from the log:\n{log}");
    }
    // On the node: the atomic-writer layout and the modes.
    let cfg = volume_dir(&n, &uid, "kubernetes.io~configmap", "cfg");
    let data = std::fs::read_link(cfg.join("..data")).unwrap();
    assert!(data.to_string_lossy().starts_with("..20"), "{data:?}");
    assert_eq!(
        std::fs::read_link(cfg.join("path")).unwrap(),
        PathBuf::from("..data/path")
    );
    assert_eq!(mode(&cfg.join("path/to/k")), 0o400);
    let sec = volume_dir(&n, &uid, "kubernetes.io~secret", "sec");
    assert_eq!(mode(&sec.join("password")), 0o440);
    assert_eq!(
        mode(&volume_dir(&n, &uid, "kubernetes.io~projected", "proj").join("ns")),
        0o644
    );
    assert_eq!(mode(&volume_dir(&n, &uid, "kubernetes.io~empty-dir", "scratch")), 0o777);

    // A ConfigMap update reaches the running pod at the next resync.
    apply(
        &n.api,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {cm}, namespace: default}}\ndata: {{key1: value-2}}\n"
        ),
    )
    .await
    .unwrap();
    wait_for("the new value in the pod", T, || async {
        log_text(&n, &name, &uid).contains("value-2").then_some(())
    })
    .await
    .unwrap();
    assert!(!data.exists() && !cfg.join(&data).exists(), "old payload removed");
    // `other` left the ConfigMap: it left the projected volume too.
    let proj = volume_dir(&n, &uid, "kubernetes.io~projected", "proj");
    wait_for("removed key gone", T, || async {
        std::fs::symlink_metadata(proj.join("other")).is_err().then_some(())
    })
    .await
    .unwrap();

    // Deleting the pod removes its volumes from the node.
    let out = n.api.kubectl(&["delete", "pod", &name, "--wait=false"]).await;
    assert!(out.status.success());
    let vols = n.dir.path().join("root/pods").join(&uid).join("volumes");
    wait_for("volumes removed", T, || async { (!vols.exists()).then_some(()) })
        .await
        .unwrap();
    wait_for("pod gone", T, || async { n.pod(&name).await.is_none().then_some(()) })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_configmap_blocks_the_pod_until_it_exists() {
    let n = Node::start(10.0, &[]).await.unwrap();
    let cm = unique("late");
    let name = unique("wait");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: Never
  volumes:
  - name: cfg
    configMap: {{name: {cm}}}
  - name: opt
    configMap: {{name: {cm}-never, optional: true}}
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "cat /etc/cfg/k; echo; sleep 3600"]
    volumeMounts:
    - {{name: cfg, mountPath: /etc/cfg}}
    - {{name: opt, mountPath: /etc/opt}}
"#,
        node = n.name
    );
    apply(&n.api, &manifest).await.unwrap();
    let msg = format!("MountVolume.SetUp failed for volume \"cfg\" : configmap \"{cm}\" not found");
    wait_for("FailedMount event", T, || async {
        let evs = events_about(&n.api, &name).await;
        evs.iter()
            .any(|e| e["reason"] == "FailedMount" && e["message"] == msg.as_str() && e["type"] == "Warning")
            .then_some(())
    })
    .await
    .unwrap();
    let p = n.pod(&name).await.unwrap();
    assert_eq!(phase(&p), "Pending");
    let waiting: &Value = &p["status"]["containerStatuses"][0]["state"]["waiting"];
    assert_eq!(waiting["reason"], "ContainerCreating", "{p}");
    // Only the failed volume is reported; the optional one is fine without its object.
    let evs = events_about(&n.api, &name).await;
    assert!(
        !evs.iter()
            .any(|e| e["message"].as_str().is_some_and(|m| m.contains("\"opt\""))),
        "{evs:?}"
    );
    apply(
        &n.api,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {cm}, namespace: default}}\ndata: {{k: arrived}}\n"
        ),
    )
    .await
    .unwrap();
    let p = n
        .wait_pod(&name, "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    wait_for("the ConfigMap's value in the log", T, || async {
        log_text(&n, &name, &uid).contains("arrived").then_some(())
    })
    .await
    .unwrap();
}
