//! Offline autonomy (`checkpointPods` + `checkpointSecrets`) on the simulated backend: pods with a
//! ConfigMap volume, Secret env and the service-account token volume run; the API server goes
//! away; the node "reboots" (keel SIGKILLed, the runtime's state and the memory-backed volumes
//! gone); keel starts the pods again from its checkpoint, `keel pods` shows them; a pod deleted
//! meanwhile is stopped once the API server is back, the others' status is patched, and no
//! container runs twice.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::util::*;

const T: Duration = Duration::from_secs(60);

fn offline_pod(name: &str, node: &str, cm: &str, secret: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
spec:
  nodeName: {node}
  restartPolicy: Always
  terminationGracePeriodSeconds: 1
  volumes:
  - name: cfg
    configMap: {{name: {cm}}}
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "echo \"cfg=$(cat /etc/cfg/key1) pw=$PW token=$(test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo yes)\"; sleep 36000"]
    env:
    - name: PW
      valueFrom: {{secretKeyRef: {{name: {secret}, key: password}}}}
    volumeMounts:
    - {{name: cfg, mountPath: /etc/cfg}}
"#
    )
}

/// `keel pods --root-dir`: its stdout lines, or its stderr as the error.
async fn keel_pods(root: &Path) -> Result<Vec<String>, String> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("pods")
        .arg("--root-dir")
        .arg(root)
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect())
}

fn running_line(lines: &[String], name: &str) -> bool {
    lines
        .iter()
        .any(|l| l.starts_with(&format!("default/{name} phase=Running ready=1/1 ")))
}

/// The main container's log text, whatever attempt it is.
fn logs_of(logs_dir: &Path, name: &str) -> String {
    let Ok(dirs) = std::fs::read_dir(logs_dir) else {
        return String::new();
    };
    let mut text = String::new();
    for d in dirs.flatten() {
        if d.file_name().to_string_lossy().starts_with(&format!("default_{name}_")) {
            for f in std::fs::read_dir(d.path().join("main")).into_iter().flatten().flatten() {
                text.push_str(&std::fs::read_to_string(f.path()).unwrap_or_default());
            }
        }
    }
    text
}

fn container_id(p: &Value) -> String {
    p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_come_back_from_the_checkpoint_after_an_offline_reboot() {
    let config = format!("checkpointPods: true\ncheckpointSecrets: true\n{NO_EVICTION}");
    let Node {
        api,
        mut keel,
        name: node,
        dir,
    } = Node::start_with_config(10.0, &[], &config).await.unwrap();
    let root = dir.path().join("root");
    let cm = unique("cfg");
    let secret = unique("sec");
    apply(
        &api,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {cm}, namespace: default}}\ndata: {{key1: value-1}}\n"
        ),
    )
    .await
    .unwrap();
    apply(
        &api,
        // "hunter2"
        &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {secret}, namespace: default}}\ndata: {{password: aHVudGVyMg==}}\n"),
    )
    .await
    .unwrap();
    let names: Vec<String> = ["a", "b", "c"].iter().map(|n| unique(&format!("off-{n}"))).collect();
    for n in &names {
        apply(&api, &offline_pod(n, &node, &cm, &secret)).await.unwrap();
    }
    let mut before = Vec::new();
    for n in &names {
        let p = wait_for(&format!("{n} Running and ready"), T, || async {
            let p = get_json(&api, &["pod", n, "-n", "default"]).await?;
            (phase(&p) == "Running" && !container_id(&p).is_empty()).then_some(p)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", keel.log_tail(40)));
        before.push(container_id(&p));
    }
    let logs_dir = keel.pod_logs_dir();
    for n in &names {
        let want = "cfg=value-1 pw=hunter2 token=yes";
        wait_for("the pod's output", T, || async {
            logs_of(&logs_dir, n).contains(want).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", logs_of(&logs_dir, n)));
    }
    // The checkpoint has caught up: `keel pods` shows all three running.
    wait_for("keel pods lists the running pods", T, || async {
        let lines = keel_pods(&root).await.ok()?;
        names.iter().all(|n| running_line(&lines, n)).then_some(())
    })
    .await
    .unwrap();
    let file = root.join("checkpoint/pods.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions()) & 0o777;
    assert_eq!(mode, 0o600);

    // The API server goes away, then the node reboots: keel dies, every container with it (the
    // simulator's journal is its runtime state), memory-backed volumes vanish. The old logs go
    // too, so what is read afterwards was written by the new containers.
    api.set_available(false);
    keel.kill9().await;
    std::fs::remove_dir_all(root.join("sim")).unwrap();
    for d in std::fs::read_dir(root.join("pods")).unwrap().flatten() {
        let _ = std::fs::remove_dir_all(d.path().join("volumes"));
    }
    std::fs::remove_dir_all(&logs_dir).unwrap();
    // Meanwhile b is force-deleted on the other side of the partition.
    assert!(api.remove_object("pods", "default", &names[1]));
    keel.restart_after_kill9().await.unwrap();

    // Offline: all three run again from the checkpoint, with the ConfigMap, Secret and token
    // keel kept, and `keel pods` shows them.
    for n in &names {
        wait_for(&format!("{n} running again offline"), T, || async {
            logs_of(&logs_dir, n)
                .contains("cfg=value-1 pw=hunter2 token=yes")
                .then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", logs_of(&logs_dir, n), keel.log_tail(60)));
    }
    wait_for("keel pods shows the restarted pods", T, || async {
        let lines = keel_pods(&root).await.ok()?;
        names.iter().all(|n| running_line(&lines, n)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", keel.log_tail(60)));
    assert!(
        keel.logs().contains("starting them from the checkpoint"),
        "{}",
        keel.log_tail(60)
    );

    // The API server is back: its view wins. b is stopped and leaves the checkpoint; a and c
    // get their new status; each pod runs exactly one container.
    api.set_available(true);
    let raw = |path: String| {
        let api = &api;
        async move {
            let out = api.kubectl(&["get", "--raw", &path]).await;
            out.status
                .success()
                .then(|| serde_json::from_slice::<Value>(&out.stdout).ok())
                .flatten()
        }
    };
    let running = wait_for("only a and c running", T, || async {
        let v = raw(format!("/api/v1/nodes/{node}/proxy/runningpods/")).await?;
        let mut got: Vec<String> = v["items"]
            .as_array()?
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
            .collect();
        got.sort();
        (got == [names[0].clone(), names[2].clone()]).then_some(v)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", keel.log_tail(60)));
    for p in running["items"].as_array().unwrap() {
        assert_eq!(p["spec"]["containers"].as_array().map(Vec::len), Some(1), "{p}");
    }
    for (i, n) in names.iter().enumerate().filter(|(i, _)| *i != 1) {
        let old = &before[i];
        wait_for(&format!("{n}'s new status patched"), T, || async {
            let p = get_json(&api, &["pod", n, "-n", "default"]).await?;
            let id = container_id(&p);
            (phase(&p) == "Running" && !id.is_empty() && id != *old).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", keel.log_tail(60)));
    }
    wait_for("keel pods follows the API", T, || async {
        let lines = keel_pods(&root).await.ok()?;
        (lines.len() == 2 && running_line(&lines, &names[0]) && running_line(&lines, &names[2])).then_some(())
    })
    .await
    .unwrap();
    assert!(keel.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_pods_says_when_there_is_no_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let err = keel_pods(dir.path()).await.unwrap_err();
    assert!(
        err.contains("no pod checkpoint") && err.contains("checkpointPods"),
        "{err}"
    );
}
