//! Pod lifecycle on REAL runtimes, driven by kubectl against the test API server: status and
//! logs, restart policies and crash-loop back-off, init containers, graceful deletion, image
//! pulls from the local registry, many pods at once, keel and containerd restarts, host
//! networking and termination messages. Each body runs on containerd (scripts/containerd-env.sh,
//! through scripts/test.sh) and, where listed, on keel's native backend (tests/e2e/runtimes.rs).
//!
//! One containerd serves every test, and keel (like the kubelet) kills runtime pods no source
//! knows about: two keels on one containerd would kill each other's pods. So every containerd
//! test holds [`cri_lock`] for its whole run (the CRI backend tests take it too); parallel-safe
//! otherwise (unique pod names, private directories, all pods deleted at the end).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::backends::cri::CriRuntime;
use keel::clock::Clock;
use keel::genericruntime::seam::{cri, RuntimeService as _};
use serde_json::Value;

use crate::runtimes::{backend_test, RtNode, CRI, NATIVE};
use crate::support::native;
use crate::support::util::*;

const T: Duration = Duration::from_secs(90);
const LONG: Duration = Duration::from_secs(120);
/// A container that exits 0 at once on SIGTERM (a shell as PID 1 ignores SIGTERM without a trap).
const POLITE: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

/// Serialises the tests that run keel (or create pods) on the shared containerd.
pub async fn cri_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

fn env(name: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{name} is not set: run the CRI e2e tests through scripts/test.sh"))
}

fn cs(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

fn running_ready(p: &Value) -> bool {
    phase(p) == "Running" && condition(p, "Ready").is_some_and(|c| c["status"] == "True")
}

fn waiting_reason(p: &Value) -> String {
    cs(p)["state"]["waiting"]["reason"].as_str().unwrap_or("").to_string()
}

/// One pod with one container `main` running `script`, with extra spec lines (YAML at 2 spaces).
fn pod(name: &str, node: &str, policy: &str, image: &str, script: &str, spec_extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: {policy}
  terminationGracePeriodSeconds: 5
{spec_extra}  containers:
  - name: main
    image: "{image}"
    command: ["sh", "-c", {script:?}]
"#
    )
}

fn runtime() -> Arc<CriRuntime> {
    CriRuntime::connect(Path::new(&env("KEEL_CRI_SOCKET")), None, Clock::real()).unwrap()
}

fn pod_label_filter(name: &str) -> std::collections::HashMap<String, String> {
    [("io.kubernetes.pod.name".to_string(), name.to_string())].into()
}

/// Containers and sandboxes containerd still has for the pod named `name`.
async fn runtime_leftovers(rt: &CriRuntime, name: &str) -> (usize, usize) {
    let cs = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                label_selector: pod_label_filter(name),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let sbs = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: pod_label_filter(name),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    (cs.containers.len(), sbs.items.len())
}

/// Deletes every pod of the test's API server and waits until they are gone.
pub(crate) async fn delete_all(n: &Node) {
    let out = n
        .api
        .kubectl(&["delete", "pods", "--all", "-n", "default", "--wait=false"])
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("all pods gone", LONG, || async {
        let l = get_json(&n.api, &["pods", "-n", "default"]).await?;
        l["items"].as_array()?.is_empty().then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    remove_node_cgroups(&n.name).await;
}

/// Removes `$KEEL_TEST_CGROUP_ROOT/<node>` (the node's cgroup root) and anything left under it in
/// every hierarchy, deepest first, once the test's pods are gone. keel removes each pod's cgroup
/// when the pod terminates (tests/e2e/cri_cgroups.rs shows it); the node's own root is the
/// test's to remove, and `containerd-env.sh down` sweeps whatever a failed test left.
pub async fn remove_node_cgroups(node: &str) {
    let root = std::env::var("KEEL_TEST_CGROUP_ROOT")
        .ok()
        .filter(|r| r.starts_with('/'))
        .unwrap_or_else(|| "/keel-test".to_string());
    // A just-exited task may hold its cgroup for a moment.
    remove_cgroup_tree(
        &format!("{}/{node}", root.trim_end_matches('/')),
        Duration::from_secs(2),
    )
    .await;
}

async fn delete_and_time(n: &Node, name: &str) -> Duration {
    let t0 = Instant::now();
    let out = n
        .api
        .kubectl(&["delete", "pod", name, "-n", "default", "--wait=false"])
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("pod object gone", LONG, || async {
        n.pod(name).await.is_none().then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    t0.elapsed()
}

/// Events of one pod: (reason, message, count).
async fn events(n: &Node, name: &str) -> Vec<(String, String, i64)> {
    events_about(&n.api, name)
        .await
        .iter()
        .map(|e| {
            let count = e["series"]["count"]
                .as_i64()
                .or_else(|| e["count"].as_i64())
                .unwrap_or(1)
                .max(1);
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
                count,
            )
        })
        .collect()
}

fn count_events(evs: &[(String, String, i64)], reason: &str, msg_prefix: &str) -> i64 {
    evs.iter()
        .filter(|(r, m, _)| r == reason && m.starts_with(msg_prefix))
        .map(|(_, _, c)| *c)
        .sum()
}

/// True when `ip` is in the IPv4 CIDR `subnet`.
fn in_subnet(ip: &str, subnet: &str) -> bool {
    let (Some((net, bits)), Ok(ip)) = (subnet.split_once('/'), ip.parse::<std::net::Ipv4Addr>()) else {
        return false;
    };
    let (Ok(net), Ok(bits)) = (net.parse::<std::net::Ipv4Addr>(), bits.parse::<u32>()) else {
        return false;
    };
    let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
    u32::from(ip) & mask == u32::from(net) & mask
}

// One body per scenario, run on each runtime listed (tests/e2e/runtimes.rs).
backend_test! {
    cri_busybox_pod_runs_with_bridge_ip_and_cri_log => busybox_pod_runs_with_bridge_ip_and_cri_log(CRI);
    cri_exit_codes_and_restart_policy_matrix => exit_codes_and_restart_policy_matrix(CRI);
    cri_crash_loop_back_off_grows => crash_loop_back_off_grows(CRI);
    cri_init_containers_run_in_order => init_containers_run_in_order(CRI);
    cri_graceful_deletion_sigterm_and_grace_deadline => graceful_deletion_sigterm_and_grace_deadline(CRI);
    cri_image_pulls_from_the_registry => image_pulls_from_the_registry(CRI);
    cri_twenty_pods_run_and_leave_nothing_behind => twenty_pods_run_and_leave_nothing_behind(CRI);
    cri_keel_killed_and_restarted_adopts_running_pods => keel_killed_and_restarted_adopts_running_pods(CRI);
    cri_host_network_pod_gets_the_node_ip => host_network_pod_gets_the_node_ip(CRI);
    cri_termination_messages => termination_messages(CRI);
    native_busybox_pod_runs_with_bridge_ip_and_cri_log => busybox_pod_runs_with_bridge_ip_and_cri_log(NATIVE);
    native_exit_codes_and_restart_policy_matrix => exit_codes_and_restart_policy_matrix(NATIVE);
    native_crash_loop_back_off_grows => crash_loop_back_off_grows(NATIVE);
    native_init_containers_run_in_order => init_containers_run_in_order(NATIVE);
    native_graceful_deletion_sigterm_and_grace_deadline => graceful_deletion_sigterm_and_grace_deadline(NATIVE);
    native_image_pulls_from_the_registry => image_pulls_from_the_registry(NATIVE);
    native_twenty_pods_run_and_leave_nothing_behind => twenty_pods_run_and_leave_nothing_behind(NATIVE);
    native_keel_killed_and_restarted_adopts_running_pods => keel_killed_and_restarted_adopts_running_pods(NATIVE);
    native_host_network_pod_gets_the_node_ip => host_network_pod_gets_the_node_ip(NATIVE);
    native_termination_messages => termination_messages(NATIVE);
}

async fn busybox_pod_runs_with_bridge_ip_and_cri_log(backend: Backend) {
    let n = RtNode::start(backend, &[], "").await.unwrap();
    let name = unique("cri-web");
    apply(
        &n.api,
        &pod(
            &name,
            &n.name,
            "Always",
            "busybox:1.36",
            "echo hello-from-cri; sleep 3600",
            "",
        ),
    )
    .await
    .unwrap();
    let p = n.wait_pod(&name, "Running and Ready", T, running_ready).await.unwrap();
    let s = &p["status"];
    let ip = s["podIP"].as_str().unwrap_or_default();
    let subnet = env("KEEL_CNI_SUBNET");
    assert!(
        in_subnet(ip, &subnet),
        "pod IP {ip:?} not in the bridge subnet {subnet}"
    );
    assert_eq!(s["podIPs"][0]["ip"], s["podIP"]);
    let c = cs(&p);
    assert_eq!(c["ready"], true);
    assert_eq!(c["restartCount"], 0);
    // containerd 1.6 reports the image's first tag: the registry's copies of this busybox share its
    // config digest, hence its image ID, once another test pulled them (containerd-here.md quirk).
    let reg = env("KEEL_TEST_REGISTRY");
    let tags = [
        "docker.io/library/busybox:1.36".to_string(),
        format!("{reg}/keel/busybox:1.36"),
        format!("{reg}/keel/busybox:latest"),
    ];
    assert!(tags.iter().any(|t| c["image"] == t.as_str()), "image {}", c["image"]);
    assert!(c["imageID"].as_str().is_some_and(|i| i.contains("sha256:")), "{c}");
    assert!(
        c["containerID"].as_str().is_some_and(|i| i.starts_with(n.scheme())),
        "{c}"
    );
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let log = n
        .keel
        .pod_logs_dir()
        .join(format!("default_{name}_{uid}"))
        .join("main")
        .join("0.log");
    let line = wait_for("output in the CRI log", T, || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines().find(|l| l.contains("hello-from-cri")).map(String::from)
    })
    .await
    .unwrap();
    assert!(line.ends_with(" stdout F hello-from-cri"), "CRI log line {line:?}");
    let ts = line.split(' ').next().unwrap();
    assert!(ts.parse::<jiff::Timestamp>().is_ok(), "timestamp {ts:?}");
    delete_all(&n).await;
}

async fn exit_codes_and_restart_policy_matrix(backend: Backend) {
    let n = RtNode::start(backend, &[], "").await.unwrap();
    let exit3 = unique("cri-exit3");
    apply(&n.api, &pod(&exit3, &n.name, "Never", "busybox:1.36", "exit 3", ""))
        .await
        .unwrap();
    // (policy, code, final phase, restarts)
    let cases = [
        ("Always", 0, "Running", true),
        ("Always", 1, "Running", true),
        ("OnFailure", 0, "Succeeded", false),
        ("OnFailure", 1, "Running", true),
        ("Never", 0, "Succeeded", false),
        ("Never", 1, "Failed", false),
    ];
    let names: Vec<String> = cases
        .iter()
        .map(|(policy, code, _, _)| unique(&format!("cri-m-{}-{code}", policy.to_lowercase())))
        .collect();
    for ((policy, code, _, _), name) in cases.iter().zip(&names) {
        apply(
            &n.api,
            &pod(
                name,
                &n.name,
                policy,
                "busybox:1.36",
                &format!("sleep 1; exit {code}"),
                "",
            ),
        )
        .await
        .unwrap();
    }
    let p = n.wait_pod(&exit3, "Failed", T, |p| phase(p) == "Failed").await.unwrap();
    let t = &cs(&p)["state"]["terminated"];
    assert_eq!(t["exitCode"], 3, "{p}");
    assert_eq!(t["reason"], "Error");
    assert!(
        t["containerID"].as_str().is_some_and(|i| i.starts_with(n.scheme())),
        "{t}"
    );
    for ((policy, code, want_phase, restarts), name) in cases.iter().zip(&names) {
        let p = if *restarts {
            // The first restart is immediate (no back-off yet).
            n.wait_pod(name, "a restart", T, |p| {
                cs(p)["restartCount"].as_i64() >= Some(1) && cs(p)["lastState"]["terminated"].is_object()
            })
            .await
            .unwrap()
        } else {
            n.wait_pod(name, "terminal phase", T, |p| phase(p) == *want_phase)
                .await
                .unwrap()
        };
        assert_eq!(phase(&p), *want_phase, "{name} ({policy}, {code}): {}", p["status"]);
        let c = cs(&p);
        let reason = if *code == 0 { "Completed" } else { "Error" };
        if *restarts {
            let last = &c["lastState"]["terminated"];
            assert_eq!(last["exitCode"], *code, "{name}: {c}");
            assert_eq!(last["reason"], reason, "{name}");
        } else {
            assert_eq!(c["restartCount"], 0, "{name}");
            let t = &c["state"]["terminated"];
            assert_eq!(t["exitCode"], *code, "{name}: {c}");
            assert_eq!(t["reason"], reason, "{name}");
            assert_eq!(condition(&p, "Ready").unwrap()["status"], "False", "{name}");
        }
    }
    delete_all(&n).await;
}

async fn crash_loop_back_off_grows(backend: Backend) {
    let n = RtNode::start(backend, &[], "").await.unwrap();
    let name = unique("cri-crash");
    apply(
        &n.api,
        &pod(&name, &n.name, "Always", "busybox:1.36", "echo started; exit 1", ""),
    )
    .await
    .unwrap();
    // Each instance logs one line when it starts in <ns>_<pod>_<uid>/main/<N>.log, and containerd
    // stamps it to the nanosecond. Dead instances (and their logs) are collected (one kept), so
    // read each log while it exists.
    let starts = instance_start_times(
        &n.keel.pod_logs_dir(),
        &format!("default_{name}_"),
        "main",
        "started",
        3,
        Duration::from_secs(75),
    )
    .await;
    assert!(
        (1..4).all(|i| starts.contains_key(&i)),
        "instances seen: {starts:?}\n{}",
        n.keel.log_tail(30)
    );
    // Restart 1 is immediate (a relist or two); then 10 s, then 20 s from the exit.
    if let (Some(s0), Some(s1)) = (starts.get(&0), starts.get(&1)) {
        assert!(s1 - s0 < 8.0, "first restart is immediate: {starts:?}");
    }
    let gap12 = starts[&2] - starts[&1];
    let gap23 = starts[&3] - starts[&2];
    assert!(gap12 >= 10.0, "restart 2 after {gap12:.2} s, want ≥ 10: {starts:?}");
    assert!(gap23 >= 20.0, "restart 3 after {gap23:.2} s, want ≥ 20: {starts:?}");
    let p = n
        .wait_pod(&name, "CrashLoopBackOff", T, |p| {
            waiting_reason(p) == "CrashLoopBackOff"
        })
        .await
        .unwrap();
    assert!(cs(&p)["restartCount"].as_i64() >= Some(3), "{}", p["status"]);
    let msg = cs(&p)["state"]["waiting"]["message"].as_str().unwrap_or_default();
    assert!(msg.starts_with("back-off "), "{msg}");
    delete_all(&n).await;
}

async fn init_containers_run_in_order(backend: Backend) {
    let n = RtNode::start(backend, &[], "").await.unwrap();
    let name = unique("cri-init");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: Never
  initContainers:
  - {{name: first, image: busybox:1.36, command: [sh, -c, "echo one; sleep 2"]}}
  - {{name: second, image: busybox:1.36, command: [sh, -c, "echo two; sleep 2"]}}
  containers:
  - {{name: main, image: busybox:1.36, command: [sh, -c, "echo main"]}}
"#,
        node = n.name
    );
    apply(&n.api, &manifest).await.unwrap();
    let p = n
        .wait_pod(&name, "first init running", T, |p| {
            p["status"]["initContainerStatuses"][0]["state"]["running"].is_object()
        })
        .await
        .unwrap();
    assert_eq!(waiting_reason(&p), "PodInitializing");
    assert_eq!(phase(&p), "Pending");
    assert_eq!(condition(&p, "Initialized").unwrap()["status"], "False");
    let p = n
        .wait_pod(&name, "Succeeded", T, |p| phase(p) == "Succeeded")
        .await
        .unwrap();
    let inits = p["status"]["initContainerStatuses"].as_array().unwrap();
    assert_eq!(inits.len(), 2);
    assert_eq!(inits[0]["name"], "first");
    assert_eq!(inits[1]["name"], "second");
    let ts = |v: &Value| -> jiff::Timestamp { v.as_str().unwrap().parse().unwrap() };
    let fin0 = ts(&inits[0]["state"]["terminated"]["finishedAt"]);
    let start1 = ts(&inits[1]["state"]["terminated"]["startedAt"]);
    let fin1 = ts(&inits[1]["state"]["terminated"]["finishedAt"]);
    let main_start = ts(&cs(&p)["state"]["terminated"]["startedAt"]);
    assert!(
        fin0 <= start1,
        "second init started before the first finished: {fin0} > {start1}"
    );
    assert!(fin1 <= main_start, "main started before the second init finished");
    for i in inits {
        assert_eq!(i["state"]["terminated"]["exitCode"], 0);
        assert_eq!(i["state"]["terminated"]["reason"], "Completed");
        assert!(
            i["containerID"].as_str().is_some_and(|c| c.starts_with(n.scheme())),
            "{i}"
        );
    }
    assert_eq!(cs(&p)["state"]["terminated"]["exitCode"], 0);
    assert_eq!(condition(&p, "Initialized").unwrap()["status"], "True");
    delete_all(&n).await;
}

async fn graceful_deletion_sigterm_and_grace_deadline(backend: Backend) {
    let n = RtNode::start(backend, &[], "").await.unwrap();
    let polite = unique("cri-polite");
    let stubborn = unique("cri-stubborn");
    // A 4 s grace period instead of the helper's 5 s.
    let mk = |name: &str, script: &str| {
        pod(name, &n.name, "Always", "busybox:1.36", script, "").replace(
            "  terminationGracePeriodSeconds: 5\n",
            "  terminationGracePeriodSeconds: 4\n",
        )
    };
    apply(&n.api, &mk(&polite, POLITE)).await.unwrap();
    apply(&n.api, &mk(&stubborn, "trap '' TERM; while true; do sleep 1; done"))
        .await
        .unwrap();
    for p in [&polite, &stubborn] {
        n.wait_pod(p, "Running", T, running_ready).await.unwrap();
    }
    let took_stubborn = delete_and_time(&n, &stubborn).await;
    assert!(
        took_stubborn >= Duration::from_secs(4),
        "a SIGTERM-ignoring container is killed at the 4 s deadline, took {took_stubborn:?}"
    );
    let took_polite = delete_and_time(&n, &polite).await;
    assert!(
        took_polite < Duration::from_secs(4),
        "a container that exits on SIGTERM goes before the 4 s deadline, took {took_polite:?}"
    );
    eprintln!("graceful deletion: polite {took_polite:?}, stubborn {took_stubborn:?}");
    assert!(!n.keel.logs().contains("panicked"));
    delete_all(&n).await;
}

/// Removes one image reference from containerd (only that name: CRI RemoveImage would remove every
/// tag of the image, including the busybox:1.36 the other tests use).
fn ctr_rmi(reference: &str) {
    let _ = std::process::Command::new("ctr")
        .args(["-a", &env("KEEL_CRI_SOCKET"), "-n", "k8s.io", "images", "rm", reference])
        .output();
}

async fn image_pulls_from_the_registry(backend: Backend) {
    let reg = env("KEEL_TEST_REGISTRY");
    let tagged = format!("{reg}/keel/busybox:1.36");
    let latest = format!("{reg}/keel/busybox:latest");
    let n = RtNode::start(backend, &[], "").await.unwrap();
    // A native node's store is its own and starts without the registry's tags.
    if backend == Backend::Cri {
        ctr_rmi(&tagged);
        ctr_rmi(&latest);
    }

    // IfNotPresent: the first pod pulls, the second finds the image present.
    let a = unique("cri-pull-a");
    let b = unique("cri-pull-b");
    let ifnp = "imagePullPolicy: IfNotPresent\n    ";
    let mk = |name: &str, image: &str, policy_line: &str, extra: &str, script: &str| {
        pod(name, &n.name, "Always", image, script, extra)
            .replace("    command:", &format!("    {policy_line}command:"))
    };
    apply(&n.api, &mk(&a, &tagged, ifnp, "", POLITE)).await.unwrap();
    n.wait_pod(&a, "Running", T, running_ready).await.unwrap();
    apply(&n.api, &mk(&b, &tagged, ifnp, "", POLITE)).await.unwrap();
    n.wait_pod(&b, "Running", T, running_ready).await.unwrap();
    // Events are posted asynchronously: wait for both pods' Started before counting.
    let (ea, eb) = wait_for("Started events of both pods", T, || async {
        let (ea, eb) = (events(&n, &a).await, events(&n, &b).await);
        (count_events(&ea, "Started", "") >= 1 && count_events(&eb, "Started", "") >= 1).then_some((ea, eb))
    })
    .await
    .unwrap();
    let pulling = count_events(&ea, "Pulling", "") + count_events(&eb, "Pulling", "");
    assert_eq!(pulling, 1, "one pull across both pods: {ea:?} {eb:?}");
    assert_eq!(count_events(&ea, "Pulled", "Successfully pulled image"), 1, "{ea:?}");
    assert!(
        count_events(&eb, "Pulled", &format!("Container image \"{tagged}\" already present")) >= 1,
        "{eb:?}"
    );

    // Always, with an imagePullSecret (the registry needs no auth; the pull must still work):
    // a pull on every start.
    let secret = unique("cri-regcred");
    let auth =
        format!(r#"{{"auths":{{"{reg}":{{"username":"keel","password":"secret","auth":"a2VlbDpzZWNyZXQ="}}}}}}"#);
    let out = n
        .api
        .kubectl(&[
            "create",
            "secret",
            "generic",
            &secret,
            "-n",
            "default",
            "--type=kubernetes.io/dockerconfigjson",
            &format!("--from-literal=.dockerconfigjson={auth}"),
        ])
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let always = unique("cri-pull-always");
    let extra = format!("  imagePullSecrets:\n  - name: {secret}\n");
    apply(
        &n.api,
        &mk(
            &always,
            &latest,
            "imagePullPolicy: Always\n    ",
            &extra,
            "sleep 1; exit 0",
        ),
    )
    .await
    .unwrap();
    let p = n
        .wait_pod(&always, "two restarts", LONG, |p| {
            cs(p)["restartCount"].as_i64() >= Some(2)
        })
        .await
        .unwrap();
    let starts = cs(&p)["restartCount"].as_i64().unwrap() + 1;
    let pulled = wait_for("a pull per start", T, || async {
        let ev = events(&n, &always).await;
        let c = count_events(&ev, "Pulled", "Successfully pulled image");
        (c >= starts).then_some(c)
    })
    .await;
    let pulled = match pulled {
        Ok(c) => c,
        Err(e) => panic!("{e}: {:?}", events(&n, &always).await),
    };
    assert!(pulled >= 3, "pulled {pulled} times for {starts} starts");

    // A missing image: ErrImagePull, then ImagePullBackOff.
    let missing = unique("cri-pull-missing");
    apply(&n.api, &mk(&missing, &format!("{reg}/keel/nope:1"), ifnp, "", POLITE))
        .await
        .unwrap();
    n.wait_pod(&missing, "ErrImagePull", T, |p| waiting_reason(p) == "ErrImagePull")
        .await
        .unwrap();
    let p = n
        .wait_pod(&missing, "ImagePullBackOff", T, |p| {
            waiting_reason(p) == "ImagePullBackOff"
        })
        .await
        .unwrap();
    assert_eq!(phase(&p), "Pending");
    let ev = events(&n, &missing).await;
    assert!(
        count_events(&ev, "Failed", "") >= 1 && count_events(&ev, "BackOff", "") >= 1,
        "{ev:?}"
    );
    delete_all(&n).await;
}

async fn twenty_pods_run_and_leave_nothing_behind(backend: Backend) {
    let n = RtNode::start(backend, &[], "").await.unwrap();
    let base = unique("cri-many");
    let names: Vec<String> = (0..20).map(|i| format!("{base}-{i:02}")).collect();
    let manifest = names
        .iter()
        .map(|nm| pod(nm, &n.name, "Always", "busybox:1.36", POLITE, ""))
        .collect::<Vec<_>>()
        .join("---\n");
    apply(&n.api, &manifest).await.unwrap();
    wait_for("20 pods Running", Duration::from_secs(180), || async {
        let l = get_json(&n.api, &["pods", "-n", "default"]).await?;
        let items = l["items"].as_array()?;
        (items.len() == 20 && items.iter().all(running_ready)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    let held = runtime_holds(&n, &names).await;
    assert_eq!(held, (20, 20), "containers and sandboxes of the 20 pods while running");
    delete_all(&n).await;
    // Containers go with the pod; sandboxes at the latest at the next GC (every minute).
    let left = wait_for("containers and sandboxes removed", Duration::from_secs(150), || async {
        (runtime_holds(&n, &names).await == (0, 0)).then_some(())
    })
    .await;
    if let Err(e) = left {
        panic!("{e}: {:?}\n{}", runtime_holds(&n, &names).await, n.keel.log_tail(40));
    }
    if backend == Backend::Cri {
        // And through ctr, as an operator would look.
        let out = std::process::Command::new("ctr")
            .args(["-a", &env("KEEL_CRI_SOCKET"), "-n", "k8s.io", "containers", "ls"])
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout).to_string();
        for nm in &names {
            let filter = format!("labels.\"io.kubernetes.pod.name\"=={nm}");
            let out = std::process::Command::new("ctr")
                .args([
                    "-a",
                    &env("KEEL_CRI_SOCKET"),
                    "-n",
                    "k8s.io",
                    "containers",
                    "ls",
                    "-q",
                    &filter,
                ])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert!(
                String::from_utf8_lossy(&out.stdout).trim().is_empty(),
                "{nm} still in containerd:\n{listing}"
            );
        }
    } else {
        // And as an operator of a native node would look: runc and the monitors.
        let run_dir = n.keel.opts.native_run_dir.clone().unwrap();
        assert_eq!(native::runc_containers(&run_dir), Vec::<String>::new());
        assert_eq!(native::monitor_pids(&run_dir), Vec::<i32>::new());
    }
}

/// The containers and sandboxes the runtime holds for the pods `names`: containerd's, by pod
/// label; a native node's (private to the test), from its state directories.
async fn runtime_holds(n: &RtNode, names: &[String]) -> (usize, usize) {
    match n.backend {
        Backend::Cri => {
            let rt = runtime();
            let mut total = (0, 0);
            for nm in names {
                let (c, s) = runtime_leftovers(&rt, nm).await;
                total = (total.0 + c, total.1 + s);
            }
            total
        }
        _ => {
            let state = n.keel.opts.dir.join("root").join("native");
            let count = |d: &str| std::fs::read_dir(state.join(d)).map(|r| r.count()).unwrap_or(0);
            (count("containers"), count("sandboxes"))
        }
    }
}

fn container_ids(n: &[Value]) -> Vec<String> {
    n.iter()
        .map(|p| cs(p)["containerID"].as_str().unwrap_or("").to_string())
        .collect()
}

async fn pods_now(n: &Node, names: &[String]) -> Vec<Value> {
    let mut v = Vec::new();
    for nm in names {
        v.push(n.pod(nm).await.unwrap_or_else(|| panic!("pod {nm} vanished")));
    }
    v
}

/// keel SIGKILLed and restarted adopts what runs: same containers, no restart counted, the
/// containers' logs keep growing in the same files, exec works in them.
async fn keel_killed_and_restarted_adopts_running_pods(backend: Backend) {
    let mut n = RtNode::start(backend, &[], "").await.unwrap();
    let names: Vec<String> = (0..2).map(|_| unique("cri-adopt")).collect();
    let ticker = "trap 'exit 0' TERM; i=0; while true; do echo tick-$i; i=$((i+1)); sleep 1; done";
    for nm in &names {
        apply(&n.api, &pod(nm, &n.name, "Always", "busybox:1.36", ticker, ""))
            .await
            .unwrap();
    }
    let mut before = Vec::new();
    for nm in &names {
        before.push(n.wait_pod(nm, "Running", T, running_ready).await.unwrap());
    }
    let ids = container_ids(&before);
    let log_of = |p: &Value| {
        let uid = p["metadata"]["uid"].as_str().unwrap_or_default();
        let name = p["metadata"]["name"].as_str().unwrap_or_default();
        n.keel
            .pod_logs_dir()
            .join(format!("default_{name}_{uid}"))
            .join("main")
            .join("0.log")
    };
    let logs: Vec<_> = before.iter().map(log_of).collect();
    n.keel.kill9().await;
    let lines = |p: &std::path::Path| std::fs::read_to_string(p).map(|t| t.lines().count()).unwrap_or(0);
    let at_kill: Vec<usize> = logs.iter().map(|l| lines(l)).collect();
    n.keel.restart_after_kill9().await.unwrap();
    n.wait_ready().await.unwrap();
    // The restarted keel works: a new pod starts.
    let fresh = unique("cri-adopt-new");
    apply(&n.api, &pod(&fresh, &n.name, "Always", "busybox:1.36", POLITE, ""))
        .await
        .unwrap();
    n.wait_pod(&fresh, "Running", T, running_ready).await.unwrap();
    // Give the restarted keel a few relists and status syncs of the old pods.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = pods_now(&n, &names).await;
    assert_eq!(container_ids(&after), ids, "containers were replaced");
    for p in &after {
        assert!(running_ready(p), "{}", p["status"]);
        assert_eq!(cs(p)["restartCount"], 0, "{}", p["status"]);
        assert!(cs(p)["state"]["running"].is_object());
    }
    for (log, seen) in logs.iter().zip(&at_kill) {
        let grown = wait_for("the log growing after the restart", T, || async {
            (lines(log) > seen + 2).then_some(())
        })
        .await;
        assert!(
            grown.is_ok(),
            "{}: {seen} lines at the kill, now {}",
            log.display(),
            lines(log)
        );
    }
    for nm in &names {
        let out = n
            .api
            .kubectl(&["exec", nm, "-n", "default", "--", "echo", "adopted"])
            .await;
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout) == "adopted\n",
            "exec in {nm}: {} {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            n.keel.log_tail(30)
        );
        let out = n.api.kubectl(&["logs", nm, "-n", "default", "--tail=1"]).await;
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("tick-"), "{out:?}");
    }
    assert!(!n.keel.logs().contains("panicked"));
    delete_all(&n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_containerd_restart_under_keel() {
    let n = RtNode::start(CRI, &[], "").await.unwrap();
    let names: Vec<String> = (0..2).map(|_| unique("cri-ctrd")).collect();
    for nm in &names {
        apply(&n.api, &pod(nm, &n.name, "Always", "busybox:1.36", POLITE, ""))
            .await
            .unwrap();
    }
    let mut before = Vec::new();
    for nm in &names {
        before.push(n.wait_pod(nm, "Running", T, running_ready).await.unwrap());
    }
    let ids = container_ids(&before);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/containerd-env.sh");
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .arg("restart")
        .arg(env("KEEL_CONTAINERD_DIR"))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "containerd restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The node may flap NotReady while the runtime is away; it must be Ready again.
    n.wait_ready().await.unwrap();
    let fresh = unique("cri-ctrd-new");
    apply(&n.api, &pod(&fresh, &n.name, "Always", "busybox:1.36", POLITE, ""))
        .await
        .unwrap();
    n.wait_pod(&fresh, "Running after the restart", T, running_ready)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = pods_now(&n, &names).await;
    assert_eq!(container_ids(&after), ids, "containers were replaced");
    for p in &after {
        assert!(running_ready(p), "{}", p["status"]);
        assert_eq!(cs(p)["restartCount"], 0, "{}", p["status"]);
    }
    assert!(!n.keel.logs().contains("panicked"));
    delete_all(&n).await;
}

async fn host_network_pod_gets_the_node_ip(backend: Backend) {
    let n = RtNode::start(backend, &[], "").await.unwrap();
    let name = unique("cri-hostnet");
    apply(
        &n.api,
        &pod(
            &name,
            &n.name,
            "Always",
            "busybox:1.36",
            POLITE,
            "  hostNetwork: true\n",
        ),
    )
    .await
    .unwrap();
    let p = n.wait_pod(&name, "Running", T, running_ready).await.unwrap();
    let s = &p["status"];
    assert!(s["hostIP"].as_str().is_some_and(|i| !i.is_empty()), "{s}");
    assert_eq!(s["podIP"], s["hostIP"], "{s}");
    assert_eq!(s["podIPs"][0]["ip"], s["hostIP"], "{s}");
    delete_all(&n).await;
}

async fn termination_messages(backend: Backend) {
    let n = RtNode::start(backend, &[], "").await.unwrap();
    let file = unique("cri-msg-file");
    let logs = unique("cri-msg-logs");
    apply(
        &n.api,
        &pod(
            &file,
            &n.name,
            "Never",
            "busybox:1.36",
            "echo -n DONE > /dev/termination-log; exit 0",
            "",
        ),
    )
    .await
    .unwrap();
    apply(
        &n.api,
        &pod(&logs, &n.name, "Never", "busybox:1.36", "echo -n DONE; exit 1", "").replace(
            "    command:",
            "    terminationMessagePolicy: FallbackToLogsOnError\n    command:",
        ),
    )
    .await
    .unwrap();
    let p = n
        .wait_pod(&file, "Succeeded", T, |p| phase(p) == "Succeeded")
        .await
        .unwrap();
    let t = &cs(&p)["state"]["terminated"];
    assert_eq!(t["message"], "DONE", "{t}");
    assert_eq!(t["exitCode"], 0);
    let p = n.wait_pod(&logs, "Failed", T, |p| phase(p) == "Failed").await.unwrap();
    let t = &cs(&p)["state"]["terminated"];
    assert_eq!(t["message"], "DONE", "{t}");
    assert_eq!(t["exitCode"], 1);
    delete_all(&n).await;
}
