//! Criterion benchmark of the Summary API: `/stats/summary` (full and CPU/memory-only) and
//! `/metrics/resource` built from the simulated runtime with 100 running pods (one container
//! each, writing one log line), serialization included.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};

use keel::backends::sim::{SimConfig, SimRuntime};
use keel::clock::Clock;
use keel::genericruntime::{cri, Runtime, RuntimeService};
use keel::kubelet::stats::node::HostPaths;
use keel::kubelet::stats::{ProviderConfig, StatsProvider};
use keel::streaming::metrics::resource_response;
use keel::streaming::stats::summary_response;

const PODS: usize = 100;
const IMAGE: &str = "busybox:1.36";

async fn populate(sim: &SimRuntime, dir: &std::path::Path) {
    for i in 0..PODS {
        let (name, uid) = (format!("pod-{i}"), format!("uid-{i}"));
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.clone(),
                uid: uid.clone(),
                namespace: "default".into(),
                attempt: 0,
            }),
            log_directory: dir
                .join(format!("pods/default_{name}_{uid}"))
                .to_string_lossy()
                .into_owned(),
            ..Default::default()
        };
        let sb = sim
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .pod_sandbox_id;
        let id = sim
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sb,
                config: Some(cri::ContainerConfig {
                    metadata: Some(cri::ContainerMetadata {
                        name: "app".into(),
                        attempt: 0,
                    }),
                    image: Some(cri::ImageSpec {
                        image: IMAGE.into(),
                        ..Default::default()
                    }),
                    command: vec!["sh".into(), "-c".into(), "echo started; sleep infinity".into()],
                    log_path: "app/0.log".into(),
                    ..Default::default()
                }),
                sandbox_config: Some(config),
            })
            .await
            .unwrap()
            .container_id;
        sim.start_container(cri::StartContainerRequest { container_id: id })
            .await
            .unwrap();
    }
}

fn bench_summary(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let provider = rt.block_on(async {
        let sim = SimRuntime::new(
            SimConfig {
                images: vec![IMAGE.into()],
                ..Default::default()
            },
            Clock::real(),
            dir.path().join("sim"),
        )
        .unwrap();
        populate(&sim, dir.path()).await;
        let runtime: Arc<dyn Runtime> = sim;
        Arc::new(StatsProvider::new(
            runtime,
            ProviderConfig {
                node_name: "bench".into(),
                root_dir: dir.path().join("root"),
                pod_logs_dir: dir.path().join("pods"),
                cgroups: None,
                host: HostPaths::default(),
            },
        ))
    });
    let pods = rt
        .block_on(provider.summary(false))
        .unwrap()
        .pods
        .map_or(0, |p| p.len());
    assert_eq!(pods, PODS, "every pod is in the summary");

    let mut g = c.benchmark_group("stats");
    g.bench_function("summary_100_pods", |b| {
        b.to_async(&rt).iter(|| summary_response(&provider, false))
    });
    g.bench_function("summary_cpu_memory_100_pods", |b| {
        b.to_async(&rt).iter(|| summary_response(&provider, true))
    });
    g.bench_function("metrics_resource_100_pods", |b| {
        b.to_async(&rt).iter(|| resource_response(&provider))
    });
    g.finish();
}

criterion_group!(benches, bench_summary);
criterion_main!(benches);
