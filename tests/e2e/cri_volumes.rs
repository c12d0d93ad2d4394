//! Pod volumes on real containerd, observed from inside the container through its log: tmpfs
//! for memory-backed volumes with their size, fsGroup ownership and modes, read-only file
//! volumes, hostPath, subPath and subPathExpr, a ConfigMap update reaching the running pod, and
//! nothing left mounted after the pod is deleted.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::runtimes::{backend_test, RtNode, CRI, NATIVE};
use crate::support::util::*;

const T: Duration = Duration::from_secs(90);

fn log_text(n: &Node, name: &str, uid: &str) -> String {
    let path = n
        .keel
        .pod_logs_dir()
        .join(format!("default_{name}_{uid}"))
        .join("main")
        .join("0.log");
    std::fs::read_to_string(path).unwrap_or_default()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .map(String::from)
        .collect()
}

// One body per scenario, run on each runtime listed (tests/e2e/runtimes.rs).
backend_test! {
    cri_volumes_seen_from_inside => volumes_seen_from_inside(CRI);
    native_volumes_seen_from_inside => volumes_seen_from_inside(NATIVE);
}

async fn volumes_seen_from_inside(backend: Backend) {
    // A short resync so the ConfigMap update arrives quickly (the kubelet's default is 1 min).
    let n = RtNode::start(backend, &[], "syncFrequency: 5s\n").await.unwrap();
    let cm = unique("cfg");
    let secret = unique("sec");
    apply(
        &n.api,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {cm}, namespace: default}}\ndata: {{key1: value-1}}\n"
        ),
    )
    .await
    .unwrap();
    apply(
        &n.api,
        &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {secret}, namespace: default}}\ndata: {{password: aHVudGVyMg==}}\n"),
    )
    .await
    .unwrap();
    let host = n.dir.path().join("hostdata");
    std::fs::create_dir_all(&host).unwrap();
    // The container runs as uid 1000 and writes here.
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(host.join("fromhost"), "host-says-hi").unwrap();
    let name = unique("cri-vol");
    let script = "echo cfg=$(stat -L -c '%a %g' /etc/cfg/key1); \
                  echo sec=$(stat -L -c '%a %g' /etc/sec/password); \
                  echo token=$(stat -L -c '%a %g' /var/run/secrets/kubernetes.io/serviceaccount/token); \
                  echo disk=$(stat -c '%a %g' /disk); \
                  echo mem=$(grep ' /mem ' /proc/mounts); \
                  echo secmount=$(grep ' /etc/sec ' /proc/mounts); \
                  echo pw=$(cat /etc/sec/password); \
                  touch /etc/cfg/x 2>/dev/null || echo cfg-read-only; \
                  echo host=$(cat /host/fromhost); echo from-pod > /host/fromcontainer; \
                  echo single=$(cat /single); \
                  echo per-pod > /per-pod/f; \
                  echo id=$(id -u):$(id -G); \
                  while true; do echo now=$(cat /etc/cfg/key1) single=$(cat /single); sleep 1; done";
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  securityContext: {{runAsUser: 1000, runAsGroup: 3000, fsGroup: 1234}}
  volumes:
  - name: cfg
    configMap: {{name: {cm}}}
  - name: sec
    secret: {{secretName: {secret}, defaultMode: 0400}}
  - name: mem
    emptyDir: {{medium: Memory, sizeLimit: 64Mi}}
  - name: disk
    emptyDir: {{}}
  - name: host
    hostPath: {{path: {host}, type: Directory}}
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", {script:?}]
    env:
    - name: POD_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    volumeMounts:
    - {{name: cfg, mountPath: /etc/cfg}}
    - {{name: sec, mountPath: /etc/sec}}
    - {{name: mem, mountPath: /mem}}
    - {{name: disk, mountPath: /disk}}
    - {{name: host, mountPath: /host}}
    - {{name: cfg, mountPath: /single, subPath: key1}}
    - {{name: disk, mountPath: /per-pod, subPathExpr: "$(POD_NAME)"}}
"#,
        node = n.name,
        host = host.display()
    );
    apply(&n.api, &manifest).await.unwrap();
    let p = n
        .wait_pod(&name, "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let log = wait_for("the container's report", T, || async {
        let l = log_text(&n, &name, &uid);
        l.contains("now=").then_some(l)
    })
    .await
    .unwrap();
    let line = |key: &str| -> String {
        log.lines()
            .filter_map(|l| l.split_once(" stdout F ").map(|(_, rest)| rest))
            .find_map(|l| l.strip_prefix(&format!("{key}=")).map(String::from))
            .unwrap_or_else(|| panic!("no {key}= line in:\n{log}"))
    };
    // fsGroup: group 1234 everywhere, group read bits added; the token is 0600 → 0640.
    assert_eq!(line("cfg"), "644 1234");
    assert_eq!(line("sec"), "440 1234");
    assert_eq!(line("token"), "640 1234");
    assert_eq!(line("disk"), "2777 1234");
    let mem = line("mem");
    assert!(mem.starts_with("tmpfs /mem tmpfs rw"), "{mem}");
    assert!(mem.contains("size=65536k"), "{mem}");
    let sec = line("secmount");
    assert!(sec.starts_with("tmpfs /etc/sec tmpfs ro"), "{sec}");
    // Readable by uid 1000 only through the fsGroup.
    assert_eq!(line("pw"), "hunter2");
    assert!(log.contains("stdout F cfg-read-only"), "{log}");
    assert_eq!(line("host"), "host-says-hi");
    assert_eq!(
        std::fs::read_to_string(host.join("fromcontainer")).unwrap(),
        "from-pod\n"
    );
    assert_eq!(line("single"), "value-1");
    let id = line("id");
    assert!(id.starts_with("1000:3000") && id.contains("1234"), "{id}");
    let per_pod = n
        .dir
        .path()
        .join("root/pods")
        .join(&uid)
        .join("volumes/kubernetes.io~empty-dir/disk")
        .join(&name)
        .join("f");
    assert_eq!(std::fs::read_to_string(per_pod).unwrap(), "per-pod\n");

    // The update reaches the volume; the subPath mount keeps the old content (as in Kubernetes).
    apply(
        &n.api,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {cm}, namespace: default}}\ndata: {{key1: value-2}}\n"
        ),
    )
    .await
    .unwrap();
    wait_for("value-2 inside the container", T, || async {
        log_text(&n, &name, &uid)
            .contains("now=value-2 single=value-1")
            .then_some(())
    })
    .await
    .unwrap();

    // Deleted: the tmpfs mounts are gone and the volumes removed; the host path stays.
    let out = n.api.kubectl(&["delete", "pod", &name, "--wait=false"]).await;
    assert!(out.status.success());
    let pod_dir = n.dir.path().join("root/pods").join(&uid);
    wait_for("volumes torn down", T, || async {
        (mounts_under(&pod_dir).is_empty() && !pod_dir.join("volumes").exists()).then_some(())
    })
    .await
    .unwrap();
    assert!(host.join("fromhost").exists());
    wait_for("pod gone", T, || async { n.pod(&name).await.is_none().then_some(()) })
        .await
        .unwrap();
}
