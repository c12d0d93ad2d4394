//! keel SIGKILLed at seeded random moments (`KEEL_FAULT_SEED` replays a schedule; the seed is
//! printed) while pods' volumes are set up and while an image they need is pulled, restarted at
//! once each time with the same directories. One body, run on containerd, on the native backend
//! and on the simulator (virtual pulls, real volume set-up). The pods have a Secret, a ConfigMap,
//! a projected volume and two emptyDirs (one in memory); half of them use an image only the
//! registry has, served through a proxy throttled to about 4 MB/s (its layer is fresh random
//! bytes, so no store has it). Afterwards: every pod Running and Ready with one sandbox and one
//! container, a container that was running at a kill is the same one with no restart counted,
//! every volume whole (the atomic writer's `..data` points at a complete payload, each key a
//! symlink through it, contents right, checked on the host and by the container itself), each
//! memory-backed volume mounted once, the image complete in the store with no half-downloaded
//! blob or half-made layer left, and once the pods are deleted no mount, pod directory or cgroup
//! of theirs. Default: 8 pods, 1 kill in the volume set-up and 2 in the pull (24 MiB layer);
//! `KEEL_LONG=1`: 16 pods, 4 and 6 kills (96 MiB).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use md5::{Digest as _, Md5};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::cri_lifecycle::{cri_lock, remove_node_cgroups};
use crate::faults_common::*;
use crate::faults_keel_kill::{cs, pods_of, running_ready};
use crate::runtimes::{backend_test, CRI, NATIVE};
use crate::support::apiserver::TestApiServer;
use crate::support::envtest::loud;
use crate::support::util::*;

const CONVERGE: Duration = Duration::from_secs(240);
/// The simulator's pull, in (virtual = real, at time scale 1) seconds.
const SIM_PULL_SECS: u64 = 8;
const SIM: Backend = Backend::Sim { time_scale: 1.0 };
/// The shared machine's disk may be past the kubelet's 85 %: keel's image GC must not take the
/// pulled image (or the sandbox image) away while the test looks at it.
const NO_IMAGE_GC: &str = "imageGCHighThresholdPercent: 100\nimageGCLowThresholdPercent: 99\n";
/// Between two pod creations.
const CREATE_GAP: Duration = Duration::from_millis(250);

struct Plan {
    pods: usize,
    volume_kills: usize,
    pull_kills: usize,
    layer_mib: usize,
}

fn plan() -> Plan {
    if long_mode() {
        Plan {
            pods: 16,
            volume_kills: 4,
            pull_kills: 6,
            layer_mib: 96,
        }
    } else {
        Plan {
            pods: 8,
            volume_kills: 1,
            pull_kills: 2,
            layer_mib: 24,
        }
    }
}

backend_test! {
    cri_keel_sigkilled_during_pulls_and_volume_setup => pulls_and_volume_setup(CRI);
    native_keel_sigkilled_during_pulls_and_volume_setup => pulls_and_volume_setup(NATIVE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_keel_sigkilled_during_pulls_and_volume_setup() {
    pulls_and_volume_setup(SIM).await;
}

use crate::support::util::run_ok as run;

/// The image the slow pods use, and how to see its pull progress.
struct SlowImage {
    name: String,
    /// Bytes the throttling proxy passed (real backends), all attempts together.
    sent: Option<Arc<AtomicU64>>,
    layer_bytes: u64,
    stop: Arc<AtomicBool>,
}

impl Drop for SlowImage {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// On a real backend: the test busybox plus a layer of `mib` MiB of random bytes, pushed to the
/// environment's registry and named through a throttling proxy. On the simulator: a name no
/// store has (its pull takes `SIM_PULL_SECS`).
fn slow_image(backend: Backend, tmp: &Path, repo: &str, mib: usize) -> SlowImage {
    let stop = Arc::new(AtomicBool::new(false));
    if !backend.is_real() {
        return SlowImage {
            name: format!("registry.example.com/keel/{repo}:1"),
            sent: None,
            layer_bytes: 0,
            stop,
        };
    }
    let env_dir = std::env::var("KEEL_CONTAINERD_DIR").expect("KEEL_CONTAINERD_DIR: run through scripts/test.sh");
    let registry = std::env::var("KEEL_TEST_REGISTRY").expect("KEEL_TEST_REGISTRY: run through scripts/test.sh");
    let layout = tmp.join("layout");
    let bundle = tmp.join("bundle");
    run(
        "cp",
        &["-a", &format!("{env_dir}/images/layout"), layout.to_str().unwrap()],
    );
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:1.36", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    {
        use std::io::{Read, Write};
        let mut f = std::fs::File::create(bundle.join("rootfs/big")).unwrap();
        let mut rng = std::fs::File::open("/dev/urandom").unwrap();
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..mib {
            rng.read_exact(&mut buf).unwrap();
            f.write_all(&buf).unwrap();
        }
    }
    run(
        "umoci",
        &[
            "repack",
            "--image",
            &format!("{}:slow", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    run(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "-q",
            "--dest-tls-verify=false",
            &format!("oci:{}:slow", layout.display()),
            &format!("docker://{registry}/keel/{repo}:1"),
        ],
    );
    let upstream: u16 = registry
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("KEEL_TEST_REGISTRY is 127.0.0.1:PORT");
    let sent = Arc::new(AtomicU64::new(0));
    let proxy = crate::native_images::slow_proxy(upstream, stop.clone(), sent.clone());
    SlowImage {
        name: format!("127.0.0.1:{proxy}/keel/{repo}:1"),
        sent: Some(sent),
        layer_bytes: (mib as u64) << 20,
        stop,
    }
}

/// An atomic-writer volume as a pod must show it: (plugin dir, volume, path → content).
type ExpectedVolume = (&'static str, &'static str, BTreeMap<String, Vec<u8>>);

/// What the pods' volumes hold.
struct Contents {
    k1: String,
    k2: String,
    big: Vec<u8>,
    c1: String,
    c2: String,
}

impl Contents {
    fn new() -> Self {
        let hex = || format!("{:032x}", rand::random::<u128>());
        let mut big = vec![0u8; 256 << 10];
        rand::rng().fill(&mut big[..]);
        Contents {
            k1: hex(),
            k2: hex(),
            big,
            c1: hex(),
            c2: hex(),
        }
    }

    fn manifest(&self, base: &str) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        format!(
            r#"apiVersion: v1
kind: Secret
metadata: {{name: {base}-s, namespace: default}}
data: {{k1: {}, k2: {}, big: {}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: {base}-c, namespace: default}}
data: {{c1: "{}", c2: "{}"}}
"#,
            b64(self.k1.as_bytes()),
            b64(self.k2.as_bytes()),
            b64(&self.big),
            self.c1,
            self.c2
        )
    }

    /// The payload each atomic-writer volume of pod `pod` must show: (plugin dir, volume, files).
    fn expected(&self, pod: &str) -> Vec<ExpectedVolume> {
        let m = |items: &[(&str, &[u8])]| -> BTreeMap<String, Vec<u8>> {
            items.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect()
        };
        vec![
            (
                "kubernetes.io~secret",
                "sec",
                m(&[
                    ("k1", self.k1.as_bytes()),
                    ("k2", self.k2.as_bytes()),
                    ("big", &self.big),
                ]),
            ),
            (
                "kubernetes.io~configmap",
                "cm",
                m(&[("c1", self.c1.as_bytes()), ("c2", self.c2.as_bytes())]),
            ),
            (
                "kubernetes.io~projected",
                "proj",
                m(&[
                    ("s/k1", self.k1.as_bytes()),
                    ("c/c1", self.c1.as_bytes()),
                    ("name", pod.as_bytes()),
                ]),
            ),
        ]
    }

    /// The container checks its volumes before it settles: a torn payload makes it exit 3.
    fn script(&self, pod: &str) -> String {
        let big = hex::encode(Md5::digest(&self.big));
        format!(
            "bad() {{ echo \"bad volume: $1\"; exit 3; }}; \
             [ \"$(cat /v/sec/k1)\" = {k1} ] || bad sec/k1; [ \"$(cat /v/sec/k2)\" = {k2} ] || bad sec/k2; \
             set -- $(md5sum /v/sec/big); [ \"$1\" = {big} ] || bad sec/big; \
             [ \"$(cat /v/cm/c1)\" = {c1} ] || bad cm/c1; [ \"$(cat /v/cm/c2)\" = {c2} ] || bad cm/c2; \
             [ \"$(cat /v/proj/s/k1)\" = {k1} ] || bad proj/s/k1; [ \"$(cat /v/proj/c/c1)\" = {c1} ] || bad proj/c/c1; \
             [ \"$(cat /v/proj/name)\" = {pod} ] || bad proj/name; \
             echo x > /v/scratch/f && echo y > /v/mem/f || bad emptyDir; \
             echo volumes ok; trap 'exit 0' TERM; while true; do sleep 1; done",
            k1 = self.k1,
            k2 = self.k2,
            c1 = self.c1,
            c2 = self.c2,
        )
    }
}

fn pod_object(name: &str, base: &str, node: &str, image: &str, script: &str) -> Pod {
    let mounts: Vec<Value> = ["sec", "cm", "proj", "scratch", "mem"]
        .iter()
        .map(|v| json!({"name": v, "mountPath": format!("/v/{v}")}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"fk-setup": base}},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", script],
                "volumeMounts": mounts,
            }],
            "volumes": [
                {"name": "sec", "secret": {"secretName": format!("{base}-s")}},
                {"name": "cm", "configMap": {"name": format!("{base}-c")}},
                {"name": "proj", "projected": {"sources": [
                    {"secret": {"name": format!("{base}-s"), "items": [{"key": "k1", "path": "s/k1"}]}},
                    {"configMap": {"name": format!("{base}-c"), "items": [{"key": "c1", "path": "c/c1"}]}},
                    {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                ]}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
            ],
        }
    }))
    .expect("a valid pod")
}

/// Records, from the API's view just before a kill (status lags, never leads), the containers
/// running then: (pod, (container ID, restart count)).
async fn note_running(n: &Node, base: &str, running: &mut BTreeMap<String, (String, i64)>) {
    for (nm, p) in pods_of(n, base).await {
        if cs(&p)["state"]["running"].is_object() {
            if let (Some(id), Some(restarts)) = (cs(&p)["containerID"].as_str(), cs(&p)["restartCount"].as_i64()) {
                running.entry(nm).or_insert_with(|| (id.to_string(), restarts));
            }
        }
    }
}

/// Of the pods keel has begun (a directory under its root dir), those whose Secret, ConfigMap
/// and projected volumes have a payload (`..data`): how far the volume set-up got at a kill.
/// Read from the disk only, so it is what the kill interrupted.
fn volumes_in_place(n: &Node) -> (usize, usize) {
    let pods_dir = n.keel.opts.dir.join("root/pods");
    let dirs: Vec<PathBuf> = std::fs::read_dir(&pods_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    let ready = dirs
        .iter()
        .filter(|d| {
            [
                "kubernetes.io~secret/sec",
                "kubernetes.io~configmap/cm",
                "kubernetes.io~projected/proj",
            ]
            .iter()
            .all(|v| d.join("volumes").join(v).join("..data").exists())
        })
        .count();
    (ready, dirs.len())
}

/// How far the slow image's pulls got: bytes through the proxy (real backends), or the number
/// of pulls keel started (the simulator, from its `Pulling image "<name>"` events).
async fn pull_marker(n: &Node, img: &SlowImage, base: &str) -> u64 {
    if let Some(sent) = &img.sent {
        return sent.load(Ordering::Relaxed);
    }
    let started = format!("Pulling image {:?}", img.name);
    let list = get_json(&n.api, &["events", "-n", "default"]).await;
    list.and_then(|l| l["items"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|e| {
            e["reason"] == "Pulling"
                && e["message"] == started.as_str()
                && e["involvedObject"]["name"]
                    .as_str()
                    .is_some_and(|o| o.starts_with(base))
        })
        .map(|e| e["count"].as_u64().unwrap_or(1))
        .sum()
}

/// The pods whose container runs, per /runningpods/ (what the runtime runs, as keel lists it):
/// pod name → containers.
async fn runtime_containers(n: &Node, base: &str) -> BTreeMap<String, usize> {
    let out = n
        .api
        .kubectl(&["get", "--raw", &format!("/api/v1/nodes/{}/proxy/runningpods/", n.name)])
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let running: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut per_pod = BTreeMap::new();
    for p in running["items"].as_array().cloned().unwrap_or_default() {
        let nm = p["metadata"]["name"].as_str().unwrap_or_default().to_string();
        if nm.starts_with(base) {
            *per_pod.entry(nm).or_default() += p["spec"]["containers"].as_array().map_or(0, |c| c.len());
        }
    }
    per_pod
}

/// What is wrong with an atomic-writer volume directory, if anything: `..data` must name a
/// complete payload directory, every top-level path be a symlink through `..data`, the contents
/// be `files`, and no swap or payload directory be left half-made next to it.
fn volume_problems(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let mut bad = Vec::new();
    let data = dir.join("..data");
    let target = match std::fs::read_link(&data) {
        Ok(t) => t,
        Err(e) => return vec![format!("{}: ..data: {e}", dir.display())],
    };
    let target_name = target.to_string_lossy().into_owned();
    if !target_name.starts_with("..") || target.components().count() != 1 || !dir.join(&target).is_dir() {
        bad.push(format!("{}: ..data -> {target_name}", dir.display()));
    }
    let mut tops: Vec<String> = files
        .keys()
        .map(|k| k.split('/').next().unwrap_or_default().to_string())
        .collect();
    tops.dedup();
    for top in &tops {
        match std::fs::read_link(dir.join(top)) {
            Ok(l) if l == Path::new("..data").join(top) => {}
            other => bad.push(format!("{}: {top} -> {other:?}", dir.display())),
        }
    }
    for (path, want) in files {
        match std::fs::read(dir.join(path)) {
            Ok(got) if got == *want => {}
            Ok(got) => bad.push(format!(
                "{}: {path}: {} bytes, not the {} expected",
                dir.display(),
                got.len(),
                want.len()
            )),
            Err(e) => bad.push(format!("{}: {path}: {e}", dir.display())),
        }
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") && name != "..data" && name != target_name {
            bad.push(format!("{}: left over: {name}", dir.display()));
        }
    }
    bad
}

/// Mount points exactly at `dir`.
fn mounts_at(dir: &Path) -> usize {
    let d = dir.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(d.as_str()))
        .count()
}

/// The container's log files (every instance) of a pod.
fn container_logs(n: &Node, pod: &str, uid: &str) -> Vec<(PathBuf, String)> {
    let dir = n.keel.pod_logs_dir().join(format!("default_{pod}_{uid}")).join("main");
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (e.path(), std::fs::read_to_string(e.path()).unwrap_or_default()))
        .collect()
}

/// On containerd: the image complete (`ctr images check`) and no download left active.
fn cri_image_whole(image: &str) -> Result<(), String> {
    let socket = std::env::var("KEEL_CRI_SOCKET").unwrap_or_default();
    let ctr = |args: &[&str]| {
        let mut a = vec!["-a", socket.as_str(), "-n", "k8s.io"];
        a.extend_from_slice(args);
        run("ctr", &a)
    };
    let check = ctr(&["images", "check", &format!("name=={image}")]);
    if !check.lines().skip(1).any(|l| l.contains("complete")) {
        return Err(format!("ctr images check: {check}"));
    }
    let active = ctr(&["content", "active"]);
    if active.lines().skip(1).any(|l| !l.trim().is_empty()) {
        return Err(format!("downloads still active: {active}"));
    }
    Ok(())
}

async fn pulls_and_volume_setup(backend: Backend) {
    let test = match backend {
        Backend::Cri => "cri_keel_sigkilled_during_pulls_and_volume_setup",
        Backend::Native => "native_keel_sigkilled_during_pulls_and_volume_setup",
        Backend::Sim { .. } => "sim_keel_sigkilled_during_pulls_and_volume_setup",
    };
    let seed = fault_seed(test);
    let mut rng = StdRng::seed_from_u64(seed);
    let plan = plan();
    let t0 = Instant::now();
    // One keel at a time on the shared containerd; the lock outlives the node (declared first).
    let _lock = match backend {
        Backend::Cri => Some(cri_lock().await),
        Backend::Native | Backend::Sim { .. } => None,
    };
    let tmp = tempfile::tempdir().unwrap();
    let base = unique("fkv");
    let img = slow_image(backend, tmp.path(), &base, plan.layer_mib);
    let sim_cfg = tmp.path().join("sim.yaml");
    std::fs::write(
        &sim_cfg,
        format!("images: [\"busybox:1.36\"]\npullLatency: {SIM_PULL_SECS}\n"),
    )
    .unwrap();
    let extra: Vec<&str> = match backend {
        Backend::Sim { .. } => vec!["--sim-config", sim_cfg.to_str().unwrap()],
        Backend::Cri | Backend::Native => vec![],
    };
    let config = format!("{NO_EVICTION}{NO_IMAGE_GC}");
    let mut n = Node::start_on(TestApiServer::start().await.unwrap(), backend, &extra, &config)
        .await
        .unwrap();
    let contents = Contents::new();
    apply(&n.api, &contents.manifest(&base)).await.unwrap();
    let names: Vec<String> = (0..plan.pods).map(|i| format!("{base}-{i:02}")).collect();
    // Odd pods pull the slow image; even ones use the busybox every store has.
    let slow: Vec<&String> = names.iter().skip(1).step_by(2).collect();
    let objects: Vec<Pod> = names
        .iter()
        .enumerate()
        .map(|(i, nm)| {
            let image = if i % 2 == 1 { img.name.as_str() } else { "busybox:1.36" };
            // The simulator runs scripts of its own language, without files: there the host's
            // view of the volumes is checked only.
            let script = if backend.is_real() {
                contents.script(nm)
            } else {
                "sleep 36000".to_string()
            };
            pod_object(nm, &base, &n.name, image, &script)
        })
        .collect();
    // The pods arrive one by one, so volume set-ups are under way over the whole first seconds
    // the kills fall in.
    let api: Api<Pod> = Api::namespaced(n.api.client().await, "default");
    let creating = tokio::spawn(async move {
        for p in objects {
            api.create(&PostParams::default(), &p).await?;
            tokio::time::sleep(CREATE_GAP).await;
        }
        Ok::<(), kube::Error>(())
    });

    let mut running_at_kill: BTreeMap<String, (String, i64)> = BTreeMap::new();
    // Volume set-up (and sandboxes) of the whole burst.
    for k in 0..plan.volume_kills {
        let after = rng.random_range(300..2500);
        tokio::time::sleep(Duration::from_millis(after)).await;
        let (ready, seen) = volumes_in_place(&n);
        note_running(&n, &base, &mut running_at_kill).await;
        loud(&format!(
            "  SIGKILL keel {after} ms into the volume set-up ({ready} of {seen} pods begun with their volumes in place, kill {k})"
        ));
        n.keel.restart_after_kill9().await.unwrap();
    }

    creating.await.expect("the creating task").expect("creating the pods");

    // The pull: each kill waits until the pull runs again after keel's last start.
    let slow_running = |pods: &BTreeMap<String, Value>| slow.iter().all(|s| pods.get(*s).is_some_and(running_ready));
    let threshold = if img.sent.is_some() { 512 << 10 } else { 0 };
    let mut last = if img.sent.is_some() {
        pull_marker(&n, &img, &base).await
    } else {
        0
    };
    let mut pull_kills = 0;
    let mut first_kill_at = None;
    for k in 0..plan.pull_kills {
        let r = wait_for("the pull in progress", CONVERGE, || async {
            if slow_running(&pods_of(&n, &base).await) {
                return Some(false);
            }
            (pull_marker(&n, &img, &base).await > last + threshold).then_some(true)
        })
        .await;
        match r {
            Ok(true) => {}
            Ok(false) => {
                loud(&format!("  the pull finished after {k} kills"));
                break;
            }
            Err(e) => panic!("seed {seed}: {e}\n{}", n.keel.log_tail(60)),
        }
        let after = rng.random_range(0..1500);
        tokio::time::sleep(Duration::from_millis(after)).await;
        note_running(&n, &base, &mut running_at_kill).await;
        let at = pull_marker(&n, &img, &base).await;
        first_kill_at.get_or_insert(at);
        let what = if img.sent.is_some() {
            format!("{at} of {} bytes through", img.layer_bytes)
        } else {
            format!("{at} pulls started")
        };
        loud(&format!("  SIGKILL keel {after} ms into the pull ({what}, kill {k})"));
        n.keel.restart_after_kill9().await.unwrap();
        pull_kills += 1;
        last = if img.sent.is_some() {
            pull_marker(&n, &img, &base).await
        } else {
            at
        };
    }
    assert!(pull_kills >= 1, "seed {seed}: no kill landed in the pull");
    if img.sent.is_some() {
        let at = first_kill_at.unwrap_or_default();
        assert!(
            at < img.layer_bytes,
            "seed {seed}: the first pull kill came after the layer was through ({at} bytes): slow the proxy down"
        );
    }

    // Everything converges.
    let r = wait_for("every pod Running and Ready", CONVERGE, || async {
        let pods = pods_of(&n, &base).await;
        (pods.len() == plan.pods && pods.values().all(running_ready)).then_some(())
    })
    .await;
    if let Err(e) = r {
        let bad: Vec<String> = pods_of(&n, &base)
            .await
            .iter()
            .filter(|(_, p)| !running_ready(p))
            .map(|(nm, p)| format!("{nm}: {}", p["status"]))
            .collect();
        panic!("seed {seed}: {e}: {bad:#?}\n{}", n.keel.log_tail(60));
    }
    // Let the last keel relist and report once more before comparing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pods = pods_of(&n, &base).await;
    let per_pod = runtime_containers(&n, &base).await;
    let cri_objs = match backend {
        Backend::Cri => Some(cri_objects(&cri_runtime().unwrap(), &base).await.unwrap()),
        Backend::Native | Backend::Sim { .. } => None,
    };
    let pods_dir = n.keel.opts.dir.join("root/pods");
    let mut problems = Vec::new();
    for nm in &names {
        let p = &pods[nm];
        if per_pod.get(nm) != Some(&1) {
            problems.push(format!("{nm}: containers in the runtime: {:?}", per_pod.get(nm)));
        }
        if let Some(o) = cri_objs.as_ref().map(|objs| objs.get(nm).cloned().unwrap_or_default()) {
            if o.ready_sandboxes != 1 || o.running.len() != 1 {
                problems.push(format!("{nm}: in containerd: {o:?}"));
            }
        }
        if let Some((was, restarts)) = running_at_kill.get(nm) {
            if cs(p)["containerID"].as_str() != Some(was.as_str()) || cs(p)["restartCount"].as_i64() != Some(*restarts)
            {
                problems.push(format!(
                    "{nm}: was {was} with {restarts} restarts at a kill, now {} with {}",
                    cs(p)["containerID"],
                    cs(p)["restartCount"]
                ));
            }
        }
        let uid = p["metadata"]["uid"].as_str().unwrap_or_default();
        if backend.is_real() {
            let logs = container_logs(&n, nm, uid);
            if let Some((f, text)) = logs.iter().find(|(_, t)| t.contains("bad volume")) {
                problems.push(format!(
                    "{nm}: the container saw a torn volume: {}: {text}",
                    f.display()
                ));
            }
            if !logs.iter().any(|(_, t)| t.contains("volumes ok")) {
                problems.push(format!("{nm}: no container checked its volumes: {logs:?}"));
            }
        }
        let vols = pods_dir.join(uid).join("volumes");
        for (plugin, vol, files) in contents.expected(nm) {
            problems.extend(
                volume_problems(&vols.join(plugin).join(vol), &files)
                    .into_iter()
                    .map(|b| format!("{nm}: {b}")),
            );
        }
        if backend.is_real() {
            for (plugin, vol) in [
                ("kubernetes.io~secret", "sec"),
                ("kubernetes.io~projected", "proj"),
                ("kubernetes.io~empty-dir", "mem"),
            ] {
                let m = mounts_at(&vols.join(plugin).join(vol));
                if m != 1 {
                    problems.push(format!("{nm}: {plugin}/{vol} mounted {m} times"));
                }
            }
        }
    }
    if !problems.is_empty() {
        let about: Vec<String> = problems
            .iter()
            .filter_map(|p| p.split(':').next())
            .take(1)
            .map(|nm| {
                let logs = n.keel.logs();
                let lines: Vec<&str> = logs.lines().filter(|l| l.contains(nm)).collect();
                lines[lines.len().saturating_sub(40)..].join("\n")
            })
            .collect();
        panic!(
            "seed {seed}: {problems:#?}\nkeel about the first:\n{}",
            about.join("\n")
        );
    }
    loud(&format!(
        "  {} containers were running at a kill and survived; {pull_kills} kills in the pull",
        running_at_kill.len()
    ));

    // The image is whole: reported once in the node's status, nothing half-downloaded.
    let r = wait_for("the image in the node's status", Duration::from_secs(60), || async {
        let node = get_json(&n.api, &["node", &n.name]).await?;
        let names: Vec<String> = node["status"]["images"]
            .as_array()?
            .iter()
            .flat_map(|i| i["names"].as_array().cloned().unwrap_or_default())
            .filter_map(|s| s.as_str().map(String::from))
            .collect();
        let found = names.iter().filter(|s| **s == img.name).count();
        (found == 1).then_some(())
    })
    .await;
    if let Err(e) = r {
        let node = get_json(&n.api, &["node", &n.name]).await.unwrap_or_default();
        panic!("seed {seed}: {e}: {}", node["status"]["images"]);
    }
    match backend {
        Backend::Cri => {
            if let Err(e) = cri_image_whole(&img.name) {
                panic!("seed {seed}: {e}");
            }
        }
        Backend::Native => crate::native_images::store_has_no_leftovers(&n.keel.opts.dir.join("root")),
        Backend::Sim { .. } => {}
    }

    // Deleted, the pods leave no mount, directory or cgroup.
    let uids: Vec<String> = names
        .iter()
        .map(|nm| pods[nm]["metadata"]["uid"].as_str().unwrap_or_default().to_string())
        .collect();
    let out = n
        .api
        .kubectl(&[
            "delete",
            "pods",
            "-n",
            "default",
            "-l",
            &format!("fk-setup={base}"),
            "--wait=false",
        ])
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = wait_for("the pods gone from the API", CONVERGE, || async {
        pods_of(&n, &base).await.is_empty().then_some(())
    })
    .await;
    if let Err(e) = r {
        panic!("seed {seed}: {e}\n{}", n.keel.log_tail(60));
    }
    let leftovers = || {
        let mut left: Vec<String> = uids.iter().flat_map(|u| mounts_containing(u)).collect();
        left.extend(
            uids.iter()
                .filter(|u| pods_dir.join(u).exists())
                .map(|u| format!("pod directory {u}")),
        );
        if backend.is_real() {
            left.extend(
                pod_cgroups(&n.name)
                    .into_iter()
                    .filter(|c| uids.iter().any(|u| c.to_string_lossy().contains(u.as_str())))
                    .map(|c| c.display().to_string()),
            );
        }
        left
    };
    let r = wait_for(
        "the pods' mounts, directories and cgroups removed",
        Duration::from_secs(60),
        || async { leftovers().is_empty().then_some(()) },
    )
    .await;
    if r.is_err() {
        panic!("seed {seed}: left behind: {:#?}\n{}", leftovers(), n.keel.log_tail(40));
    }
    assert!(!n.keel.logs().contains("panicked"), "seed {seed}: keel panicked");
    loud(&format!(
        "{test}: {} pods, {} kills, {:.1}s",
        plan.pods,
        plan.volume_kills + pull_kills,
        t0.elapsed().as_secs_f64()
    ));
    if backend == Backend::Cri {
        remove_node_cgroups(&n.name).await;
    }
}
