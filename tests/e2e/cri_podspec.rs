//! Pod and container settings on a REAL containerd (scripts/containerd-env.sh, through
//! scripts/test.sh), each observed from inside the container through its log: env with
//! resourceFieldRef, the managed /etc/hosts with hostAliases, resolv.conf from clusterDNS, `id`
//! with runAsUser/runAsGroup/supplementalGroups, service variables, a read-only root filesystem, capabilities,
//! runAsNonRoot refused, a memory limit ending in OOMKilled, and a sidecar that starts before the
//! main container and outlives it on termination, a missing Secret holding a pod until it is
//! created, a RuntimeDefault seccomp filter (refusing `unshare`) beside an Unconfined one, and
//! `seccompDefault` confining containers that name no profile. Holds `cri_lifecycle::cri_lock()`.

use std::time::Duration;

use serde_json::{json, Value};

use super::cri_lifecycle::remove_node_cgroups;
use crate::runtimes::{backend_test, RtNode, CRI, NATIVE};
use crate::support::util::*;

const T: Duration = Duration::from_secs(90);
/// PID 1 is a shell: it needs a trap to end on SIGTERM.
const POLITE_LOOP: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

/// keel on a real runtime with clusterDNS/clusterDomain set and no disk-pressure evictions.
async fn start_node(backend: Backend) -> RtNode {
    RtNode::start(
        backend,
        &[],
        &format!("clusterDNS: [10.96.0.10]\nclusterDomain: cluster.test\n{NO_EVICTION}"),
    )
    .await
    .unwrap()
}

fn container(name: &str, script: &str, extra: Value) -> Value {
    let mut c = json!({"name": name, "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent",
                       "command": ["sh", "-c", script]});
    if let (Value::Object(a), Value::Object(b)) = (&mut c, extra) {
        a.extend(b);
    }
    c
}

fn pod(name: &str, node: &str, spec: Value) -> String {
    let mut s = json!({"nodeName": node, "restartPolicy": "Always", "terminationGracePeriodSeconds": 10});
    if let (Value::Object(a), Value::Object(b)) = (&mut s, spec) {
        a.extend(b);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": s})
        .to_string()
}

/// The CRI log file of a container's first instance.
fn log_path(n: &Node, p: &Value, container: &str) -> std::path::PathBuf {
    let name = p["metadata"]["name"].as_str().unwrap();
    let uid = p["metadata"]["uid"].as_str().unwrap();
    n.keel
        .pod_logs_dir()
        .join(format!("default_{name}_{uid}"))
        .join(container)
        .join("0.log")
}

/// The container's output (CRI log lines without timestamp/stream/tag) once it contains `marker`.
async fn output_with(n: &Node, p: &Value, container: &str, marker: &str) -> String {
    let path = log_path(n, p, container);
    wait_for(&format!("{marker:?} in {}", path.display()), T, || async {
        let text = std::fs::read_to_string(&path).ok()?;
        text.contains(marker).then(|| {
            text.lines()
                .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n")
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", std::fs::read_to_string(&path), n.keel.log_tail(40)))
}

/// The CRI timestamp of the first log line containing `marker`.
fn stamp_of(n: &Node, p: &Value, container: &str, marker: &str) -> jiff::Timestamp {
    let path = log_path(n, p, container);
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("{marker:?} not in {text}"));
    line.split(' ').next().unwrap().parse().unwrap()
}

async fn delete_all(n: &Node) {
    let out = n
        .api
        .kubectl(&["delete", "pods", "--all", "-n", "default", "--wait=false"])
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("all pods gone", T, || async {
        let l = get_json(&n.api, &["pods", "-n", "default"]).await?;
        l["items"].as_array()?.is_empty().then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    remove_node_cgroups(&n.name).await;
}

fn status_of<'a>(p: &'a Value, list: &str, name: &str) -> &'a Value {
    p["status"][list]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

// One body per scenario, run on each runtime listed (tests/e2e/runtimes.rs).
backend_test! {
    cri_pod_settings_seen_from_inside => pod_settings_seen_from_inside(CRI);
    cri_sidecar_starts_first_and_outlives_the_main_container => sidecar_starts_first_and_outlives_the_main_container(CRI);
    cri_missing_secret_blocks_then_releases_the_pod => missing_secret_blocks_then_releases_the_pod(CRI);
    native_pod_settings_seen_from_inside => pod_settings_seen_from_inside(NATIVE);
    native_sidecar_starts_first_and_outlives_the_main_container => sidecar_starts_first_and_outlives_the_main_container(NATIVE);
    native_missing_secret_blocks_then_releases_the_pod => missing_secret_blocks_then_releases_the_pod(NATIVE);
    cri_runtime_default_seccomp_filters_syscalls => runtime_default_seccomp_filters_syscalls(CRI);
    native_runtime_default_seccomp_filters_syscalls => runtime_default_seccomp_filters_syscalls(NATIVE);
    cri_seccomp_default_confines_pods_without_a_profile => seccomp_default_confines_pods_without_a_profile(CRI);
    native_seccomp_default_confines_pods_without_a_profile => seccomp_default_confines_pods_without_a_profile(NATIVE);
}

async fn pod_settings_seen_from_inside(backend: Backend) {
    let n = start_node(backend).await;
    let settings = unique("cri-settings");
    let nonroot = unique("cri-nonroot");
    let oom = unique("cri-oom");

    // A Service in the pod's namespace: its variables reach the container (service links).
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "websvc", "namespace": "default"},
                     "spec": {"clusterIP": "10.96.7.7", "ports": [{"name": "http", "port": 8080}]}});
    apply(&n.api, &svc.to_string()).await.unwrap();
    let report = format!(
        "id; echo ---; cat /etc/hosts; echo ---; cat /etc/resolv.conf; echo ---; env | sort; \
                          echo ---; touch /probe-write 2>/dev/null && echo rootfs-writable || echo rootfs-readonly; \
                          echo REPORT-END; {POLITE_LOOP}"
    );
    let caps = format!("grep CapEff /proc/self/status; echo CAPS-END; {POLITE_LOOP}");
    let env = json!([
        {"name": "MEM_LIMIT_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "CPU_REQUEST", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
        {"name": "CPU_REQUEST_M", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "GREETING", "value": "hi-$(POD_NAME)-$$(NOT)"},
    ]);
    apply(
        &n.api,
        &pod(
            &settings,
            &n.name,
            json!({
                "hostname": "web-0", "subdomain": "websvc",
                "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["alias-a", "alias-b"]}],
                "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "supplementalGroups": [4000]},
                "containers": [
                    container("report", &report, json!({
                        "env": env,
                        "resources": {"requests": {"cpu": "250m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}},
                        "securityContext": {"readOnlyRootFilesystem": true},
                    })),
                    container("caps", &caps, json!({
                        "securityContext": {"runAsUser": 0, "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}},
                    })),
                ],
            }),
        ),
    )
    .await
    .unwrap();
    apply(
        &n.api,
        &pod(
            &nonroot,
            &n.name,
            json!({"containers": [container("c", POLITE_LOOP, json!({"securityContext": {"runAsNonRoot": true}}))]}),
        ),
    )
    .await
    .unwrap();
    // dd's 64 MiB buffer does not fit a 16 MiB limit (dd is PID 1: its death ends the container).
    // A second first: containerd 1.6 watches the cgroup's OOM events only once the task started,
    // and an OOM kill before that is reported as a plain exit 137 ("Error").
    apply(
        &n.api,
        &pod(
            &oom,
            &n.name,
            json!({"restartPolicy": "Never", "containers": [container(
                "hog", "sleep 1; exec dd if=/dev/zero of=/dev/null bs=64M count=1",
                json!({"resources": {"limits": {"memory": "16Mi", "cpu": "200m"}}}))]}),
        ),
    )
    .await
    .unwrap();

    let p = n
        .wait_pod(&settings, "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap();
    let pod_ip = p["status"]["podIP"].as_str().unwrap().to_string();
    let out = output_with(&n, &p, "report", "REPORT-END").await;
    let mut parts = out.split("---\n");
    let (id, hosts, resolv, env, rootfs) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    assert!(id.starts_with("uid=1000 gid=3000 groups=3000,4000"), "{id}");
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"),
        "{hosts}"
    );
    assert!(
        hosts.contains(&format!("{pod_ip}\tweb-0.websvc.default.svc.cluster.test\tweb-0\n")),
        "{hosts}"
    );
    assert!(
        hosts.contains("\n# Entries added by HostAliases.\n10.1.2.3\talias-a\talias-b"),
        "{hosts}"
    );
    assert!(
        resolv.contains("search default.svc.cluster.test svc.cluster.test cluster.test"),
        "{resolv}"
    );
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    for want in [
        "MEM_LIMIT_MI=64",
        "CPU_REQUEST=1",
        "CPU_REQUEST_M=250",
        &format!("GREETING=hi-{settings}-$(NOT)"),
        "HOSTNAME=web-0",
        "WEBSVC_SERVICE_HOST=10.96.7.7",
        "WEBSVC_SERVICE_PORT=8080",
        "WEBSVC_SERVICE_PORT_HTTP=8080",
        "WEBSVC_PORT=tcp://10.96.7.7:8080",
        "WEBSVC_PORT_8080_TCP_ADDR=10.96.7.7",
    ] {
        assert!(env.lines().any(|l| l == want), "{want} missing from\n{env}");
    }
    // The master service of the default namespace is always there.
    assert!(env.lines().any(|l| l.starts_with("KUBERNETES_SERVICE_HOST=")), "{env}");
    assert!(rootfs.starts_with("rootfs-readonly"), "{rootfs}");
    let caps = output_with(&n, &p, "caps", "CAPS-END").await;
    // NET_ADMIN alone is bit 12.
    assert!(caps.contains("CapEff:\t0000000000001000"), "{caps}");

    let p = n
        .wait_pod(&nonroot, "CreateContainerConfigError", T, |p| {
            status_of(p, "containerStatuses", "c")["state"]["waiting"]["reason"] == "CreateContainerConfigError"
        })
        .await
        .unwrap();
    assert_eq!(
        status_of(&p, "containerStatuses", "c")["state"]["waiting"]["message"],
        format!(
            "container has runAsNonRoot and image will run as root (pod: \"{nonroot}_default({})\", container: c)",
            p["metadata"]["uid"].as_str().unwrap()
        )
    );

    let p = n.wait_pod(&oom, "Failed", T, |p| phase(p) == "Failed").await.unwrap();
    let term = &status_of(&p, "containerStatuses", "hog")["state"]["terminated"];
    assert_eq!(term["reason"], "OOMKilled", "{}", p["status"]);
    assert_eq!(term["exitCode"], 137, "{}", p["status"]);
    assert!(!n.keel.logs().contains("panicked"));
    delete_all(&n).await;
}

async fn sidecar_starts_first_and_outlives_the_main_container(backend: Backend) {
    let n = start_node(backend).await;
    let name = unique("cri-sidecar");
    let side = "echo side-start; trap 'echo side-term; exit 0' TERM; while true; do sleep 0.2; done";
    // The main container takes a second to exit after SIGTERM: the sidecar must see its SIGTERM
    // only after that.
    let main = "echo main-start; trap 'echo main-term; sleep 1; echo main-exit; exit 0' TERM; \
                while true; do sleep 0.2; done";
    let mut side_c = container("side", side, json!({}));
    side_c["restartPolicy"] = json!("Always");
    apply(
        &n.api,
        &pod(
            &name,
            &n.name,
            json!({"initContainers": [side_c], "containers": [container("main", main, json!({}))]}),
        ),
    )
    .await
    .unwrap();
    let p = n
        .wait_pod(&name, "Running with both", T, |p| {
            phase(p) == "Running"
                && status_of(p, "containerStatuses", "main")["state"]["running"].is_object()
                && status_of(p, "initContainerStatuses", "side")["state"]["running"].is_object()
        })
        .await
        .unwrap();
    output_with(&n, &p, "side", "side-start").await;
    output_with(&n, &p, "main", "main-start").await;
    assert!(stamp_of(&n, &p, "side", "side-start") <= stamp_of(&n, &p, "main", "main-start"));
    assert_eq!(status_of(&p, "initContainerStatuses", "side")["started"], true);

    let out = n
        .api
        .kubectl(&["delete", "pod", &name, "-n", "default", "--wait=false"])
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    output_with(&n, &p, "main", "main-exit").await;
    output_with(&n, &p, "side", "side-term").await;
    let main_exit = stamp_of(&n, &p, "main", "main-exit");
    let side_term = stamp_of(&n, &p, "side", "side-term");
    assert!(
        side_term > main_exit,
        "sidecar got SIGTERM at {side_term}, before the main container exited at {main_exit}"
    );
    delete_all(&n).await;
}

/// A container whose env needs a Secret that does not exist yet waits in
/// CreateContainerConfigError with the kubelet's message, and starts by itself on containerd
/// once the Secret is created: the value is what the container sees.
async fn missing_secret_blocks_then_releases_the_pod(backend: Backend) {
    let n = start_node(backend).await;
    let name = unique("cri-needs-secret");
    let secret = unique("later");
    let env = json!({"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}}]});
    let script = format!("echo token=$TOKEN; {POLITE_LOOP}");
    apply(
        &n.api,
        &pod(&name, &n.name, json!({"containers": [container("main", &script, env)]})),
    )
    .await
    .unwrap();
    let p = n
        .wait_pod(&name, "CreateContainerConfigError", T, |p| {
            status_of(p, "containerStatuses", "main")["state"]["waiting"]["reason"] == "CreateContainerConfigError"
        })
        .await
        .unwrap();
    assert_eq!(
        status_of(&p, "containerStatuses", "main")["state"]["waiting"]["message"],
        format!("secret \"{secret}\" not found")
    );
    let out = n
        .api
        .kubectl(&[
            "create",
            "secret",
            "generic",
            &secret,
            "-n",
            "default",
            "--from-literal=token=s3cr3t",
        ])
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p = n
        .wait_pod(&name, "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    let text = output_with(&n, &p, "main", "token=").await;
    assert!(text.lines().any(|l| l == "token=s3cr3t"), "{text}");
    delete_all(&n).await;
}

/// `seccompProfile: RuntimeDefault` on the pod filters its container's syscalls (`Seccomp: 2`,
/// and `unshare(2)`, allowed only with CAP_SYS_ADMIN, refused), while a container of the same pod
/// that asks for Unconfined runs with no filter and may make a user namespace.
async fn runtime_default_seccomp_filters_syscalls(backend: Backend) {
    let n = start_node(backend).await;
    let name = unique("cri-seccomp");
    // PID 1 is the shell itself: its status is the container's.
    let script = format!(
        "grep '^Seccomp:' /proc/1/status; \
         if out=$(unshare -U true 2>&1); then echo unshare-ok; else echo \"unshare-refused: $out\"; fi; \
         echo SECCOMP-END; {POLITE_LOOP}"
    );
    apply(
        &n.api,
        &pod(
            &name,
            &n.name,
            json!({
                "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [
                    container("confined", &script, json!({})),
                    container("open", &script, json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}})),
                ],
            }),
        ),
    )
    .await
    .unwrap();
    let p = n
        .wait_pod(&name, "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    let confined = output_with(&n, &p, "confined", "SECCOMP-END").await;
    assert!(confined.lines().any(|l| l == "Seccomp:\t2"), "{confined}");
    // EPERM, the profile's errno (the container's root may otherwise make a user namespace).
    let refused = confined.lines().find(|l| l.starts_with("unshare-refused"));
    assert!(
        refused.is_some_and(|l| l.contains("Operation not permitted")),
        "{confined}"
    );
    let open = output_with(&n, &p, "open", "SECCOMP-END").await;
    assert!(open.lines().any(|l| l == "Seccomp:\t0"), "{open}");
    assert!(open.lines().any(|l| l == "unshare-ok"), "{open}");
    assert!(!n.keel.logs().contains("panicked"));
    delete_all(&n).await;
}

/// With the kubelet's `seccompDefault: true`, a container that names no profile runs under
/// RuntimeDefault, and one that asks for Unconfined still gets none.
async fn seccomp_default_confines_pods_without_a_profile(backend: Backend) {
    let n = RtNode::start(backend, &[], &format!("seccompDefault: true\n{NO_EVICTION}"))
        .await
        .unwrap();
    let name = unique("cri-seccomp-default");
    let script = format!("grep '^Seccomp:' /proc/1/status; echo SECCOMP-END; {POLITE_LOOP}");
    apply(
        &n.api,
        &pod(
            &name,
            &n.name,
            json!({"containers": [
                container("plain", &script, json!({})),
                container("open", &script, json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}})),
            ]}),
        ),
    )
    .await
    .unwrap();
    let p = n
        .wait_pod(&name, "Running", T, |p| phase(p) == "Running")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    let plain = output_with(&n, &p, "plain", "SECCOMP-END").await;
    assert!(plain.lines().any(|l| l == "Seccomp:\t2"), "{plain}");
    let open = output_with(&n, &p, "open", "SECCOMP-END").await;
    assert!(open.lines().any(|l| l == "Seccomp:\t0"), "{open}");
    delete_all(&n).await;
}
