//! Criterion benchmarks of keel's per-sync hot paths: `computePodActions`, API status
//! generation, the pod status strategic-merge patch, and the simulated runtime's script parser.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerStatus as ApiContainerStatus, Pod, PodStatus as ApiPodStatus};

use keel::backends::sim::script;
use keel::genericruntime::actions::compute_pod_actions;
use keel::genericruntime::hash::hash_container;
use keel::genericruntime::{cri, ContainerState, ContainerStatus, PodStatus, ProbeFailures};
use keel::kubelet::status::generate::{generate_api_pod_status, GenerateInput, NoProbeResults};
use keel::kubelet::status::patch::pod_status_patch;
use keel::kubelet::status::reasoncache::ReasonCache;

const CONTAINERS: usize = 3;

/// A pod of three containers with a probe-free spec, as the API server defaults it.
fn pod() -> Pod {
    let containers: Vec<serde_json::Value> = (0..CONTAINERS)
        .map(|i| {
            serde_json::json!({
                "name": format!("c{i}"), "image": "busybox:1.36",
                "command": ["sh", "-c", "sleep 3600"],
                "imagePullPolicy": "IfNotPresent",
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "ports": [{"containerPort": 8080 + i, "protocol": "TCP"}],
                "env": [{"name": "A", "value": "b"}],
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"uid": "0b9c8c1e-4b8e-4d56-9f0a-6a2f5c3e2d11", "name": "bench", "namespace": "default"},
        "spec": {"nodeName": "n1", "restartPolicy": "Always", "containers": containers}
    }))
    .unwrap()
}

/// The runtime's view: a ready sandbox with an IP and every container running.
fn runtime_status(pod: &Pod, state: ContainerState) -> PodStatus {
    let spec = pod.spec.as_ref().unwrap();
    let started = Timestamp::from_second(1_700_000_000).unwrap();
    let container_statuses = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| ContainerStatus {
            id: format!("{i:064x}"),
            runtime_type: "containerd".into(),
            name: c.name.clone(),
            state,
            created_at: started,
            started_at: Some(started),
            finished_at: (state == ContainerState::Exited).then_some(started),
            exit_code: if state == ContainerState::Exited { 1 } else { 0 },
            image: "docker.io/library/busybox:1.36".into(),
            image_ref: "sha256:2a1cdf36f26ca4b7c381dfc05eb2a7c7076232148e62778a0c42dbcc494de481".into(),
            hash: hash_container(c),
            restart_count: 0,
            reason: if state == ContainerState::Exited {
                "Error".into()
            } else {
                String::new()
            },
            message: String::new(),
            sandbox_id: "sandbox".into(),
        })
        .collect();
    PodStatus {
        uid: pod.metadata.uid.clone().unwrap(),
        name: "bench".into(),
        namespace: "default".into(),
        ips: vec!["10.89.0.7".into()],
        container_statuses,
        sandbox_statuses: vec![cri::PodSandboxStatus {
            id: "sandbox".into(),
            state: cri::PodSandboxState::SandboxReady as i32,
            metadata: Some(cri::PodSandboxMetadata {
                name: "bench".into(),
                namespace: "default".into(),
                uid: pod.metadata.uid.clone().unwrap(),
                attempt: 0,
            }),
            network: Some(cri::PodSandboxNetworkStatus {
                ip: "10.89.0.7".into(),
                additional_ips: vec![],
            }),
            created_at: 1_700_000_000_000_000_000,
            ..Default::default()
        }],
    }
}

fn generate(pod: &Pod, runtime: &PodStatus, previous: Option<&ApiPodStatus>, reasons: &ReasonCache) -> ApiPodStatus {
    generate_api_pod_status(&GenerateInput {
        pod,
        runtime,
        previous,
        reasons,
        probes: &NoProbeResults,
        node_ips: &["192.168.1.10".to_string()],
        now: Timestamp::from_second(1_700_000_100).unwrap(),
    })
}

fn compute_pod_actions_bench(c: &mut Criterion) {
    let pod = pod();
    let steady = runtime_status(&pod, ContainerState::Running);
    let crashed = runtime_status(&pod, ContainerState::Exited);
    let empty = PodStatus {
        uid: pod.metadata.uid.clone().unwrap(),
        ..Default::default()
    };
    let probes = ProbeFailures::default();
    let mut g = c.benchmark_group("compute_pod_actions");
    g.bench_function("steady_3_running", |b| {
        b.iter(|| compute_pod_actions(black_box(&pod), black_box(&steady), &probes))
    });
    g.bench_function("restart_3_exited", |b| {
        b.iter(|| compute_pod_actions(black_box(&pod), black_box(&crashed), &probes))
    });
    g.bench_function("new_pod", |b| {
        b.iter(|| compute_pod_actions(black_box(&pod), black_box(&empty), &probes))
    });
    g.finish();
}

fn status_generation_bench(c: &mut Criterion) {
    let pod = pod();
    let runtime = runtime_status(&pod, ContainerState::Running);
    let reasons = ReasonCache::new();
    let previous = generate(&pod, &runtime, None, &reasons);
    let mut g = c.benchmark_group("generate_api_pod_status");
    g.bench_function("first_3_running", |b| {
        b.iter(|| generate(black_box(&pod), black_box(&runtime), None, &reasons))
    });
    g.bench_function("steady_3_running", |b| {
        b.iter(|| generate(black_box(&pod), black_box(&runtime), Some(&previous), &reasons))
    });
    g.finish();
}

fn status_patch_bench(c: &mut Criterion) {
    let pod = pod();
    let reasons = ReasonCache::new();
    let running = generate(&pod, &runtime_status(&pod, ContainerState::Running), None, &reasons);
    let exited = generate(
        &pod,
        &runtime_status(&pod, ContainerState::Exited),
        Some(&running),
        &reasons,
    );
    // What the API holds for a pod keel has not reported yet: Pending with waiting containers.
    let pending = ApiPodStatus {
        phase: Some("Pending".into()),
        container_statuses: Some(
            (0..CONTAINERS)
                .map(|i| ApiContainerStatus {
                    name: format!("c{i}"),
                    image: "busybox:1.36".into(),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    };
    let uid = pod.metadata.uid.clone().unwrap();
    let mut g = c.benchmark_group("pod_status_patch");
    g.bench_function("pending_to_running", |b| {
        b.iter(|| pod_status_patch(&uid, black_box(&pending), black_box(&running)))
    });
    g.bench_function("running_to_exited", |b| {
        b.iter(|| pod_status_patch(&uid, black_box(&running), black_box(&exited)))
    });
    g.bench_function("unchanged", |b| {
        b.iter(|| pod_status_patch(&uid, black_box(&running), black_box(&running)))
    });
    g.finish();
}

fn script_parser_bench(c: &mut Criterion) {
    let short = "sleep 3600";
    let typical = r#"echo "starting $HOSTNAME"; i=0
while [ $i -lt 5 ]; do echo "tick $i" >> /tmp/log; i=$((i+1)); sleep 1; done
if [ -f /tmp/ready ]; then cat /tmp/ready; else echo missing >&2; fi
trap 'echo bye; exit 0' TERM; sleep 3600"#;
    // Benchmark the parser's success path, not an error.
    assert!(script::parse(short).is_ok() && script::parse(typical).is_ok());
    let mut g = c.benchmark_group("sim_script_parse");
    g.bench_function("sleep", |b| b.iter(|| script::parse(black_box(short))));
    g.bench_function("loop_if_trap", |b| b.iter(|| script::parse(black_box(typical))));
    g.finish();
}

criterion_group!(
    benches,
    compute_pod_actions_bench,
    status_generation_bench,
    status_patch_bench,
    script_parser_bench
);
criterion_main!(benches);
