//! `keel run`: the node agent's entry point. Everything here is wiring; the behaviour lives in
//! the library.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use keel::backends::cri::CriRuntime;
use keel::backends::native::{self, NativeConfig, NativeRuntime};
use keel::backends::sim::SimRuntime;
use keel::clock::Clock;
use keel::genericruntime::imagegc::{ImageGcManager, ImageGcPolicy, RuntimeImages};
use keel::genericruntime::images::PullLimits;
use keel::genericruntime::instrumented::InstrumentedRuntime;
use keel::genericruntime::logrotate::{ContainerLogManager, LogRotatePolicy};
use keel::genericruntime::relist::{Pleg, PodCache, PLEG_CHANNEL_CAPACITY};
use keel::genericruntime::sandbox::DnsSettings;
use keel::genericruntime::{ManagerConfig, Runtime, RuntimeManager};
use keel::kubelet::certificate;
use keel::kubelet::cgroups::{CgroupFs, PodCgroups, DEFAULT_CGROUP_MOUNT};
use keel::kubelet::checkpoint::{self, OfflineStore};
use keel::kubelet::config::{self, Cli, Command, Config, RuntimeEndpoint};
use keel::kubelet::events::Recorder;
use keel::kubelet::eviction;
use keel::kubelet::hooks::KubeletHooks;
use keel::kubelet::runopts::KubeletRunOptions;
use keel::kubelet::services::ServiceCache;
use keel::kubelet::sources::{api::spawn_api_source, file::spawn_file_source, SOURCE_CHANNEL_CAPACITY};
use keel::kubelet::status::manager::StatusManager;
use keel::kubelet::syncloop::{Core, DeferredSafety, Kubelet, KubeletParts};
use keel::kubelet::volumes::VolumeManager;
use keel::kubelet::{lease, node, nodeinfo, RuntimeHealth};
use keel::streaming::server::KubeletServer;
use keel::streaming::{healthz, AppState};

// glibc's malloc keeps what a burst of pods freed in its arenas (RSS 73 -> 148 MiB over 1,125
// churned pods while ~11 MiB stayed live); jemalloc returns freed pages after its decay time.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> Result<()> {
    // `keel monitor --spec FILE`: the native runtime's per-container monitor, re-executed by
    // keel. It must stay single-threaded (it forks), so it runs before clap and any runtime.
    if std::env::args_os().nth(1).is_some_and(|a| a == "monitor") {
        std::process::exit(keel::backends::native::monitor::main(std::env::args_os().skip(2)));
    }
    let cli = Cli::parse();
    let args = match cli.command {
        Command::Run(args) => args,
        Command::Cri(args) => return run_cri(args),
        Command::Pods(args) => return print_checkpointed_pods(&args.root_dir),
        Command::Images(args) => return keel::backends::native::images::cli::main(args),
        Command::Pause(args) => return keel::backends::native::sandbox::pause::main(args),
    };
    // The filter may come from the config file (`logging.verbosity`); read it quietly first so
    // the warnings of the real load below are logged.
    let filter = config::load_quiet(&args).ok().and_then(|c| c.log_filter);
    init_tracing(filter.as_deref().or(args.log_level.as_deref()));
    let cfg = config::load(&args).context("loading configuration")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(Arc::new(cfg)))
}

/// `keel cri`: the in-process runtime as a CRI server (src/criserver).
fn run_cri(args: keel::criserver::CriArgs) -> Result<()> {
    init_tracing(args.log_level.as_deref());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(keel::criserver::run(args)).context("keel cri")
}

/// `keel pods`: the pods of the local checkpoint, one standalone-style status line each.
fn print_checkpointed_pods(root_dir: &std::path::Path) -> Result<()> {
    let path = checkpoint::checkpoint_path(root_dir);
    let Some(cp) = checkpoint::load(&path)? else {
        bail!("no pod checkpoint at {} (is checkpointPods enabled?)", path.display());
    };
    for line in checkpoint::status_lines(&cp) {
        println!("{line}");
    }
    Ok(())
}

fn init_tracing(level: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.unwrap_or("info")));
    // Logs go to stderr; standalone mode prints pod status lines on stdout.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn client_for(cfg: &Config) -> Result<kube::Client> {
    let kc = match &cfg.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .context("loading kubeconfig")?
        }
        None => kube::Config::incluster().context("no --kubeconfig and not running in a cluster")?,
    };
    // kube retries 429/503/504 internally with back-off growing toward minutes; keel's loops
    // (lease, node status, status manager, watches) retry on their own cadence instead, so a
    // renewal is not stuck in a long back-off when the API server comes back.
    let mut kc = kc;
    kc.default_retry = false;
    // Requests counted in `rest_client_requests_total`; idle connections pooled as client-go's.
    Ok(keel::kubelet::apiclient::client(&kc)?)
}

async fn runtime_for(cfg: &Config, clock: Clock) -> Result<Arc<dyn Runtime>> {
    match &cfg.runtime {
        RuntimeEndpoint::Sim => {
            let state_dir = cfg.root_dir.join("sim");
            let sim = match &cfg.sim_config {
                Some(path) => SimRuntime::with_config_file(path, clock, state_dir),
                None => SimRuntime::new(Default::default(), clock, state_dir),
            }
            .context("starting the simulated runtime")?;
            Ok(sim)
        }
        RuntimeEndpoint::Unix(path) => {
            let image = match &cfg.image_service_endpoint {
                None => None,
                Some(RuntimeEndpoint::Unix(p)) => Some(p.as_path()),
                Some(RuntimeEndpoint::Sim | RuntimeEndpoint::Native) => {
                    bail!("--image-service-endpoint must be a unix:// socket")
                }
            };
            let cri = CriRuntime::connect(path, image, clock).context("connecting to the CRI runtime")?;
            // Fail fast with a clear message when nothing (or not CRI v1) answers on the socket.
            cri.handshake().await.context("CRI version handshake")?;
            Ok(cri)
        }
        RuntimeEndpoint::Native => {
            let runc = match &cfg.runc {
                Some(p) => p.clone(),
                None => native::find_on_path("runc")
                    .context("--runtime native needs runc: none on PATH (install runc or pass --runc)")?,
            };
            let native_cfg = NativeConfig {
                root_dir: cfg.root_dir.clone(),
                run_dir: cfg.native_run_dir.clone(),
                runc,
                cni_conf_dir: cfg.cni_conf_dir.clone(),
                cni_bin_dirs: cfg.cni_bin_dirs.clone(),
                registry_config_dir: cfg
                    .registry_config_dir
                    .is_dir()
                    .then(|| cfg.registry_config_dir.clone()),
                // The monitor and the pause process are this binary re-executed.
                keel_exe: std::env::current_exe().context("locating keel's own binary")?,
                pause_image: None,
            };
            let rt = NativeRuntime::new(native_cfg)
                .await
                .context("starting the native runtime")?;
            if let Some(dir) = &cfg.image_preload_dir {
                let r = rt.images().preload(dir).await;
                info!(
                    imported = r.imported.len(),
                    skipped = r.skipped,
                    failed = r.failed.len(),
                    images = r.images,
                    "image preload done"
                );
            }
            Ok(rt)
        }
    }
}

async fn run(cfg: Arc<Config>) -> Result<()> {
    // rustls needs one crypto provider chosen explicitly (kube uses ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock = Clock::scaled(cfg.time_scale);
    let shutdown = CancellationToken::new();
    let client = if cfg.standalone {
        None
    } else {
        // TLS bootstrap and client certificate rotation, when configured.
        match certificate::bootstrap::node_client(&cfg, &shutdown)
            .await
            .context("obtaining the node's client certificate")?
        {
            Some(c) => Some(c),
            None => Some(client_for(&cfg).await?),
        }
    };
    info!(node = %cfg.node_name, standalone = cfg.standalone, runtime = ?cfg.runtime, "starting keel {}", env!("CARGO_PKG_VERSION"));

    // Every runtime call is timed and counted for `/metrics` (the kubelet's instrumented service).
    let runtime: Arc<dyn Runtime> = InstrumentedRuntime::new(runtime_for(&cfg, clock).await?);
    let node_ips = vec![nodeinfo::resolve_node_ip(cfg.node_ip)
        .context("choosing the node IP")?
        .to_string()];
    let recorder = Recorder::new(client.clone(), cfg.node_name.clone(), clock);
    let (node_tx, node_rx) = watch::channel(None);
    let (offline, restore) = open_checkpoint(&cfg, client.is_some());
    let mut volumes = VolumeManager::new(cfg.root_dir.clone(), client.clone(), Some(node_rx.clone()))
        .with_tmpfs(!matches!(cfg.runtime, RuntimeEndpoint::Sim));
    if let Some(o) = &offline {
        volumes = volumes.with_offline_store(o.clone());
    }
    let volumes = Arc::new(volumes);
    let mut run_options = KubeletRunOptions::new(client.clone(), cfg.node_name.clone(), node_ips.clone())
        .with_pod_files(cfg.root_dir.clone(), cfg.cluster_domain.clone())
        .with_node(node_rx.clone())
        .with_volumes(volumes.clone());
    let services = client
        .as_ref()
        .map(|c| ServiceCache::start(c.clone(), shutdown.clone()));
    if let Some(s) = &services {
        run_options = run_options.with_services(s.clone());
    }
    if let Some(o) = &offline {
        run_options = run_options.with_offline_store(o.clone());
    }
    let run_options = Arc::new(run_options);
    let version = runtime
        .version(Default::default())
        .await
        .context("asking the runtime for its version")?;
    let manager = Arc::new(
        RuntimeManager::new(
            runtime.clone(),
            ManagerConfig {
                runtime_type: version.runtime_name.clone(),
                pod_logs_dir: cfg.pod_logs_dir.clone(),
                root_dir: cfg.root_dir.clone(),
                cgroup_root: cfg.cgroup_root.clone(),
                serialize_image_pulls: cfg.serialize_image_pulls,
                node_name: cfg.node_name.clone(),
                clock,
            },
            recorder.clone(),
            run_options,
        )
        .with_hook_runner(Arc::new(KubeletHooks::new(runtime.clone(), clock, node_ips.clone())))
        // The simulator has no registry to protect: its scale runs pull far above 5 QPS.
        .with_image_pull_limits(match cfg.runtime {
            RuntimeEndpoint::Sim => PullLimits::default(),
            _ => PullLimits::new(
                cfg.max_parallel_image_pulls.map(|n| n as usize),
                f64::from(cfg.registry_pull_qps),
                cfg.registry_burst.max(0) as u32,
            ),
        })
        .with_seccomp_default(cfg.seccomp_default)
        .with_dns(DnsSettings {
            cluster_dns: cfg.cluster_dns.clone(),
            cluster_domain: cfg.cluster_domain.clone(),
            resolv_conf: cfg.resolv_conf.clone(),
        }),
    );
    manager.version().await.context("runtime version handshake")?;
    let log_manager = ContainerLogManager::new(
        manager.clone(),
        LogRotatePolicy {
            max_size: cfg.container_log_max_size,
            max_files: cfg.container_log_max_files,
        },
    );
    tokio::spawn(log_manager.run(shutdown.clone()));
    let image_gc = ImageGcManager::new(
        Arc::new(RuntimeImages::new(runtime.clone()).with_sandbox_image(cfg.pod_infra_container_image.clone())),
        ImageGcPolicy {
            high_threshold_percent: cfg.image_gc_high_threshold_percent,
            low_threshold_percent: cfg.image_gc_low_threshold_percent,
            min_age: cfg.image_minimum_gc_age,
        },
    )
    .context("image garbage collection policy")?
    .with_node_events({
        let recorder = recorder.clone();
        Arc::new(move |kind, reason: &str, msg| recorder.node_event(kind, reason, msg))
    });
    let image_gc = Arc::new(image_gc);
    tokio::spawn(image_gc.clone().run(shutdown.clone()));
    let eviction = Arc::new(eviction::Manager::new(eviction::EvictionConfig {
        thresholds: cfg.eviction_thresholds().context("eviction thresholds")?,
        max_pod_grace_period: cfg.eviction_max_pod_grace_period,
        pressure_transition_period: cfg.eviction_pressure_transition_period,
    }));

    let (health_tx, health_rx) = watch::channel(RuntimeHealth {
        runtime_version: format!("{}://{}", version.runtime_name, version.runtime_version),
        ..Default::default()
    });
    let safety = Arc::new(DeferredSafety::default());
    let status = StatusManager::new(client.clone(), clock, safety.clone());
    tokio::spawn(status.clone().run(shutdown.clone()));

    let started = tokio::time::Instant::now();
    let cache = Arc::new(PodCache::new());
    let pleg = Arc::new(Pleg::new(manager.clone(), cache.clone(), clock));
    let (pleg_tx, pleg_rx) = mpsc::channel(PLEG_CHANNEL_CAPACITY);
    tokio::spawn(pleg.clone().run(pleg_tx, shutdown.clone()));

    if let Some(client) = &client {
        let reporter = node::NodeStatusReporter::new(
            client.clone(),
            cfg.clone(),
            clock,
            health_rx.clone(),
            runtime.clone(),
            recorder.clone(),
            node_tx,
        )
        .context("preparing node registration")?
        .with_pressure(eviction.pressure());
        tokio::spawn(reporter.run(shutdown.clone()));
        tokio::spawn(lease::run_lease(
            client.clone(),
            cfg.node_name.clone(),
            cfg.node_lease_duration_seconds,
            clock,
            node_rx.clone(),
            shutdown.clone(),
        ));
    } else {
        // Standalone: admission still needs a node; build the one keel would register.
        let local = node::local_node(&cfg, &clock, &health_rx.borrow()).context("reading host facts")?;
        let _ = node_tx.send(Some(local));
    }

    // The simulated backend has no cgroups; real runtimes get pod cgroups (cgroupfs driver).
    let cgroups = match cfg.runtime {
        RuntimeEndpoint::Sim => PodCgroups::disabled(clock),
        RuntimeEndpoint::Unix(_) | RuntimeEndpoint::Native => {
            PodCgroups::new(CgroupFs::new(DEFAULT_CGROUP_MOUNT), &cfg.cgroup_root, true, clock)
                .context("preparing pod cgroups")?
        }
    };
    let core = Core::new(KubeletParts {
        cfg: cfg.clone(),
        clock,
        client: client.clone(),
        manager: manager.clone(),
        cache: cache.clone(),
        status: status.clone(),
        recorder: recorder.clone(),
        node_rx: node_rx.clone(),
        node_ips,
        health_rx,
        cgroups,
        volumes,
        started,
    });
    safety.set(core.clone());
    tokio::spawn(eviction.run(
        eviction::host::CoreHost::new(core.clone(), Some(image_gc)),
        clock,
        shutdown.clone(),
    ));

    // The kubelet server and the localhost healthz port; failing to bind either is fatal.
    let app_state = AppState { core: core.clone() };
    let serving = match &client {
        Some(c) => {
            let ips: Vec<std::net::IpAddr> = app_state
                .core
                .node_ips
                .iter()
                .filter_map(|ip| ip.parse().ok())
                .collect();
            certificate::bootstrap::serving_manager(&cfg, c, &hostname(), &ips, &shutdown)
                .context("starting the serving certificate manager")?
        }
        None => None,
    };
    let serving = serving.map(|m| Arc::new(certificate::manager::ServerResolver(m)) as Arc<_>);
    let server = KubeletServer::bind_with(app_state.clone(), serving)
        .await
        .context("starting the kubelet server")?;
    let healthz_listener = healthz::bind_plain(&cfg)
        .await
        .context("starting the healthz endpoint")?;
    tokio::spawn(server.serve(shutdown.clone()));
    if let Some(l) = healthz_listener {
        tokio::spawn(healthz::serve_plain(l, app_state, shutdown.clone()));
    }

    let kubelet = Kubelet::new(core, shutdown.clone());

    let (src_tx, src_rx) = mpsc::channel(SOURCE_CHANNEL_CAPACITY);
    if let Some(dir) = &cfg.static_pod_path {
        spawn_file_source(
            dir.clone(),
            cfg.node_name.clone(),
            clock,
            src_tx.clone(),
            shutdown.clone(),
        );
    }
    if let Some(client) = &client {
        // With checkpointPods the API source's updates pass through the checkpoint gate.
        let api_tx = match &offline {
            Some(o) => {
                let (api_tx, api_rx) = mpsc::channel(SOURCE_CHANNEL_CAPACITY);
                let status = status.clone();
                let services = services.clone();
                let opts = checkpoint::GateOptions {
                    path: checkpoint::checkpoint_path(&cfg.root_dir),
                    node_name: cfg.node_name.clone(),
                    clock,
                    restore,
                    restore_after: checkpoint::RESTORE_AFTER,
                    offline: o.clone(),
                    status: Arc::new(move |uid| status.get_pod_status(uid)),
                    services: Arc::new(move || services.as_ref().filter(|s| s.has_synced()).map(|s| s.services())),
                };
                checkpoint::spawn_gate(opts, api_rx, src_tx.clone(), shutdown.clone());
                api_tx
            }
            None => src_tx.clone(),
        };
        // The kubelet starts its pod watch once the Node is registered (admission reads it);
        // waiting in a task lets the loop run static and checkpointed pods meanwhile.
        let mut rx = node_rx.clone();
        let (client, node_name, stop) = (client.clone(), cfg.node_name.clone(), shutdown.clone());
        tokio::spawn(async move {
            let wait = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                rx.wait_for(|n| n.as_ref().is_some_and(|n| n.metadata.uid.is_some())),
            )
            .await;
            if wait.is_err() {
                warn!("node not registered after 30 s; watching pods anyway");
            }
            spawn_api_source(client, node_name, api_tx, stop);
        });
    }
    drop(src_tx);

    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down");
        stop.cancel();
    });
    let pleg_for_health = pleg.clone();
    kubelet
        .run(
            src_rx,
            pleg_rx,
            health_tx,
            move || pleg_for_health.last_relist().map(|t| t.into_std()),
            shutdown.clone(),
        )
        .await;
    Ok(())
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

/// With `checkpointPods` (and an API server): the store of checkpointed objects and the
/// checkpoint to restore from. Without it, a checkpoint left by an earlier configuration is
/// removed so no copy of the pods (or their secrets) outlives the setting.
fn open_checkpoint(cfg: &Config, with_api: bool) -> (Option<Arc<OfflineStore>>, Option<checkpoint::Checkpoint>) {
    let path = checkpoint::checkpoint_path(&cfg.root_dir);
    if !(cfg.checkpoint_pods && with_api) {
        match std::fs::remove_file(&path) {
            Ok(()) => info!(path = %path.display(), "checkpointPods is off; removed the pod checkpoint"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(path = %path.display(), error = %e, "cannot remove the old pod checkpoint"),
        }
        return (None, None);
    }
    let offline = Arc::new(OfflineStore::new(cfg.checkpoint_secrets));
    let restore = match checkpoint::load(&path) {
        Ok(Some(cp)) if cp.node_name == cfg.node_name => {
            offline.load(&cp);
            info!(pods = cp.pods.len(), path = %path.display(), "read the pod checkpoint");
            Some(cp)
        }
        Ok(Some(cp)) => {
            warn!(checkpoint_node = %cp.node_name, "the pod checkpoint belongs to another node name; ignoring it");
            None
        }
        Ok(None) => None,
        Err(e) => {
            warn!(error = %e, "cannot read the pod checkpoint; starting without it");
            None
        }
    };
    (Some(offline), restore)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            error!(error = %e, "cannot install signal handlers; stop keel with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}
