//! CRI call latency, as a CRI client (a kubelet, crictl) sees it over the unix socket, for
//! `keel cri --runtime sim` (`$KEEL_BIN`, which scripts/bench.sh sets to its release build; else
//! the keel binary of the same build: release under `cargo bench`, debug under `cargo test`) and, in the same run on the same machine,
//! containerd when `KEEL_CRI_SOCKET` is set (scripts/bench.sh brings one up with
//! scripts/containerd-env.sh):
//! - RunPodSandbox, CreateContainer and StartContainer: `KEEL_BENCH_CRI_PODS` pods (default 30)
//!   one after the other, each call timed alone (the image is already there);
//! - ListContainers (no filter) with 1,000 containers: containers are created (not started) in
//!   the first 10 sandboxes until the runtime holds 1,000, then `KEEL_BENCH_CRI_LISTS` calls
//!   (default 30) are timed.
//!
//! One client connection (tonic, HTTP/2 over the unix socket), one call in flight at a time.
//! Everything the bench creates is stopped and removed at the end.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

const IMAGE: &str = "docker.io/library/busybox:1.36";
/// The containers ListContainers is timed with.
const LISTED: usize = 1000;
/// Sandboxes the 1,000 containers are spread over.
const LIST_SANDBOXES: usize = 10;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// A channel to a unix socket.
async fn connect(socket: &Path) -> Result<Channel> {
    let path = socket.to_path_buf();
    Ok(tonic::transport::Endpoint::try_from("http://localhost")?
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await?)
}

/// `p50 … ms, p95 … ms (n=…, min …, max …)` with sub-millisecond precision.
fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |p: f64| {
        let i = ((v.len().saturating_sub(1)) as f64 * p / 100.0).round() as usize;
        v.get(i).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(f64::NAN)
    };
    format!(
        "p50 {:.2} ms, p95 {:.2} ms (n={}, min {:.2}, max {:.2})",
        at(50.0),
        at(95.0),
        v.len(),
        at(0.0),
        at(100.0)
    )
}

/// The keel binary under test and what it is: `$KEEL_BIN` (scripts/bench.sh's release build, as
/// tests/support/keel.rs), else cargo's build of this run.
fn keel_exe() -> (PathBuf, String) {
    match std::env::var_os("KEEL_BIN").filter(|b| !b.is_empty()) {
        Some(b) => {
            let what = format!("keel {}", b.to_string_lossy());
            (b.into(), what)
        }
        None => {
            let build = if cfg!(debug_assertions) { "debug" } else { "release" };
            (env!("CARGO_BIN_EXE_keel").into(), format!("{build} build of keel"))
        }
    }
}

/// A `keel cri --runtime sim` process in a private directory, killed by PID when dropped.
struct KeelCri {
    child: tokio::process::Child,
    dir: tempfile::TempDir,
}

impl KeelCri {
    async fn start() -> Result<KeelCri> {
        let dir = tempfile::Builder::new().prefix("keel-cri-bench").tempdir()?;
        let log = std::fs::File::create(dir.path().join("keel.log"))?;
        let child = tokio::process::Command::new(keel_exe().0)
            .args(["cri", "--runtime", "sim", "--listen"])
            .arg(format!("unix://{}", dir.path().join("cri.sock").display()))
            .arg("--root-dir")
            .arg(dir.path().join("root"))
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("spawning keel cri")?;
        let k = KeelCri { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !k.socket().exists() {
            if Instant::now() > deadline {
                bail!(
                    "keel cri did not listen: {}",
                    std::fs::read_to_string(k.dir.path().join("keel.log")).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(k)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("cri.sock")
    }
}

impl Drop for KeelCri {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The timings of one runtime.
struct Timings {
    run_pod_sandbox: Vec<Duration>,
    create_container: Vec<Duration>,
    start_container: Vec<Duration>,
    list_containers: Vec<Duration>,
    listed: usize,
}

fn sandbox_config(name: &str, logs: &Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            uid: unique("uid"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: logs.join(name).to_string_lossy().into_owned(),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

fn container_request(sandbox: &str, config: &cri::PodSandboxConfig, name: &str) -> cri::CreateContainerRequest {
    cri::CreateContainerRequest {
        pod_sandbox_id: sandbox.to_string(),
        config: Some(cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            command: vec!["sh".into(), "-c".into(), "sleep 3600".into()],
            log_path: format!("{name}.log"),
            ..Default::default()
        }),
        sandbox_config: Some(config.clone()),
    }
}

/// Times the calls against the runtime at `socket`; removes what it made, also on failure.
async fn bench_runtime(socket: &Path) -> Result<Timings> {
    let channel = connect(socket).await?;
    let mut rt = RuntimeServiceClient::new(channel.clone());
    let mut images = ImageServiceClient::new(channel);
    rt.version(cri::VersionRequest::default()).await?;
    let present = images
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await?
        .into_inner()
        .image
        .is_some();
    if !present {
        images
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: IMAGE.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?;
    }
    let logs = tempfile::tempdir()?;
    let mut sandboxes = Vec::new();
    let result = measure(&mut rt, logs.path(), &mut sandboxes).await;
    for id in sandboxes {
        let stopped = rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await;
        let removed = rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
            .await;
        if let Err(e) = stopped.and(removed) {
            eprintln!("cleaning up a sandbox: {e}");
        }
    }
    result
}

async fn measure(rt: &mut RuntimeServiceClient<Channel>, logs: &Path, sandboxes: &mut Vec<String>) -> Result<Timings> {
    let pods = env_usize("KEEL_BENCH_CRI_PODS", 30).max(LIST_SANDBOXES);
    let mut t = Timings {
        run_pod_sandbox: Vec::new(),
        create_container: Vec::new(),
        start_container: Vec::new(),
        list_containers: Vec::new(),
        listed: 0,
    };
    let mut configs = Vec::new();
    for i in 0..pods {
        let config = sandbox_config(&unique(&format!("bench-{i}")), logs);
        let t0 = Instant::now();
        let id = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        t.run_pod_sandbox.push(t0.elapsed());
        sandboxes.push(id.clone());

        let t0 = Instant::now();
        let container = rt
            .create_container(container_request(&id, &config, "main"))
            .await?
            .into_inner()
            .container_id;
        t.create_container.push(t0.elapsed());

        let t0 = Instant::now();
        rt.start_container(cri::StartContainerRequest {
            container_id: container,
        })
        .await?;
        t.start_container.push(t0.elapsed());
        configs.push((id, config));
    }

    // Up to 1,000 containers (created, not started: no process per container on containerd).
    let mut n = pods;
    let mut k = 0;
    while n < LISTED {
        let (id, config) = &configs[k % LIST_SANDBOXES];
        rt.create_container(container_request(id, config, &format!("extra-{k}")))
            .await?;
        n += 1;
        k += 1;
    }
    let lists = env_usize("KEEL_BENCH_CRI_LISTS", 30);
    for _ in 0..lists {
        let t0 = Instant::now();
        let listed = rt
            .list_containers(cri::ListContainersRequest::default())
            .await?
            .into_inner()
            .containers
            .len();
        t.list_containers.push(t0.elapsed());
        t.listed = listed;
    }
    Ok(t)
}

fn print_rows(runtime: &str, t: &Timings) {
    let row = |call: &str, v: &[Duration]| println!("| {runtime} | {call} | {} |", summary(v.to_vec()));
    row("RunPodSandbox", &t.run_pod_sandbox);
    row("CreateContainer", &t.create_container);
    row("StartContainer", &t.start_container);
    row(&format!("ListContainers, {} containers", t.listed), &t.list_containers);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    // `cargo bench` passes `--bench` (and filters); this bench takes no arguments.
    let mut results = Vec::new();
    let keel = KeelCri::start().await?;
    let build = keel_exe().1;
    println!(
        "CRI call latency: keel cri --runtime sim ({build}) at {}",
        keel.socket().display()
    );
    let t = bench_runtime(&keel.socket()).await.context("keel cri")?;
    drop(keel);
    results.push(("keel cri (sim)", t));
    match std::env::var("KEEL_CRI_SOCKET") {
        Ok(sock) if !sock.is_empty() => {
            println!("CRI call latency: containerd at {sock}");
            let t = bench_runtime(Path::new(&sock)).await.context("containerd")?;
            results.push(("containerd", t));
        }
        _ => println!("KEEL_CRI_SOCKET not set: containerd skipped"),
    }
    println!();
    println!("| runtime | call | latency |");
    println!("|---|---|---|");
    for (runtime, t) in &results {
        print_rows(runtime, t);
    }
    Ok(())
}
