//! `keel cri`: keel's in-process backends served as a CRI v1 runtime on a unix socket, for any
//! CRI client (crictl, a stock kubelet, conformance tools).
//!
//! One source of truth: the gRPC services ([`service`]) call the same backend objects `keel run`
//! drives through the seam. Exec, attach and port-forward answer one-shot URLs on keel's
//! streaming server ([`crate::streaming::criserver`]), which serves the backend's in-process
//! streams over SPDY/3.1 and WebSocket. `grpc.health.v1` and `grpc.reflection` (v1 and v1alpha)
//! answer on the same socket. SIGTERM or SIGINT stops accepting calls, lets in-flight ones
//! finish, and removes the socket (the simulated runtime journals every change as it happens,
//! as under `keel run`).

pub mod authority;
pub mod service;
pub mod socket;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backends::native::{NativeConfig, NativeRuntime};
use crate::backends::sim::{self, SimRuntime};
use crate::clock::Clock;
use crate::genericruntime::seam::{cri, Runtime};
use crate::genericruntime::streams::LocalStreams;
use crate::streaming::criserver::{self as streaming, StreamingServer};
use service::{CriService, ServerInfo};

/// Largest message accepted or sent (the kubelet's `maxMsgSize`, 16 MiB).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// How long in-flight calls get to finish after SIGTERM before the server stops anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The backend `keel cri` serves.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The simulated runtime.
    Sim,
    /// Real containers without a daemon: runc, CNI plugins and keel's own image store.
    Native,
}

/// Flags of `keel cri`.
#[derive(clap::Args, Debug, Clone)]
pub struct CriArgs {
    /// Which in-process runtime to serve.
    #[arg(long)]
    pub runtime: Backend,
    /// The socket to serve on, `unix:///PATH`.
    #[arg(long)]
    pub listen: String,
    /// Where the runtime keeps its state (the simulator's journal under `sim/`).
    #[arg(long, default_value = "/var/lib/keel-cri")]
    pub root_dir: PathBuf,
    /// Address of the streaming server for exec, attach and port-forward URLs.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub streaming_address: SocketAddr,
    /// The simulated runtime's config file (images, failures, readiness), re-read on change.
    #[arg(long)]
    pub sim_config: Option<PathBuf>,
    /// The native runtime's run-time state: pinned namespaces, monitor sockets, runc's root
    /// (default /run/keel; short, as for `keel run`).
    #[arg(long)]
    pub native_run_dir: Option<PathBuf>,
    /// The runc binary of the native runtime (default: `runc` on PATH).
    #[arg(long)]
    pub runc: Option<PathBuf>,
    /// CNI network configurations of the native runtime (default /etc/cni/net.d).
    #[arg(long)]
    pub cni_conf_dir: Option<PathBuf>,
    /// Comma-separated CNI plugin directories (default /opt/cni/bin,/usr/lib/cni).
    #[arg(long, value_delimiter = ',')]
    pub cni_bin_dir: Option<Vec<PathBuf>>,
    /// Log filter (RUST_LOG syntax; the RUST_LOG variable wins).
    #[arg(long)]
    pub log_level: Option<String>,
}

/// Errors starting or running `keel cri`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--listen {0:?}: keel cri serves on a unix socket (unix:///PATH)")]
    BadListen(String),
    #[error("starting the native runtime")]
    Native(#[from] crate::backends::native::NativeError),
    #[error("starting the simulated runtime")]
    Sim(#[from] sim::Error),
    #[error(transparent)]
    Socket(#[from] socket::Error),
    #[error("starting the streaming server")]
    Streaming(#[from] streaming::Error),
    #[error("the backend has no in-process streams to serve")]
    NoLocalStreams,
    #[error("building the gRPC reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("serving CRI on {path}")]
    Serve {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
}

/// The socket path of `unix:///PATH` (also `unix:PATH` and a bare absolute path, as crictl takes).
pub fn socket_path(listen: &str) -> Result<PathBuf, Error> {
    let path = listen
        .strip_prefix("unix://")
        .or_else(|| listen.strip_prefix("unix:"))
        .unwrap_or(listen);
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(Error::BadListen(listen.to_string()))
    }
}

/// Runs `keel cri` until SIGTERM/SIGINT.
pub async fn run(args: CriArgs) -> Result<(), Error> {
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        match wait_for_termination().await {
            Ok(()) => {
                info!("shutting down: finishing in-flight calls");
                stop.cancel();
            }
            Err(e) => warn!(error = %e, "cannot install signal handlers; stop keel cri with SIGKILL"),
        }
    });
    serve(args, shutdown).await
}

/// The backend, its in-process streams and the bound streaming server.
async fn start_backend(args: &CriArgs) -> Result<(Arc<dyn Runtime>, Arc<dyn LocalStreams>, StreamingServer), Error> {
    let backend: Arc<dyn Runtime> = match args.runtime {
        Backend::Native => {
            let mut cfg = NativeConfig::with_defaults(args.root_dir.clone());
            if let Some(d) = &args.native_run_dir {
                cfg.run_dir = d.clone();
            }
            if let Some(r) = &args.runc {
                cfg.runc = r.clone();
            }
            if let Some(d) = &args.cni_conf_dir {
                cfg.cni_conf_dir = d.clone();
            }
            if let Some(d) = &args.cni_bin_dir {
                cfg.cni_bin_dirs = d.clone();
            }
            NativeRuntime::new(cfg).await?
        }
        Backend::Sim => {
            let clock = Clock::real();
            let state_dir = args.root_dir.join("sim");
            match &args.sim_config {
                Some(c) => SimRuntime::with_config_file(c, clock, state_dir)?,
                None => SimRuntime::new(Default::default(), clock, state_dir)?,
            }
        }
    };
    let local = backend.local_streams().ok_or(Error::NoLocalStreams)?;
    let streaming = StreamingServer::bind(args.streaming_address).await?;
    Ok((backend, local, streaming))
}

async fn wait_for_termination() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(args: CriArgs, shutdown: CancellationToken) -> Result<(), Error> {
    let path = socket_path(&args.listen)?;
    // grpc.reflection, both versions (grpcurl and most tools ask v1alpha, newer ones v1): CRI,
    // health and both reflection services, from the descriptor sets their builds emit, so each
    // version lists everything on the socket.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cri::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
            .include_reflection_service(false)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    // The socket first: a second server on a live socket must not open the same state.
    let listener = socket::bind(&path).await?;
    let started = start_backend(&args).await;
    let (backend, local, streaming) = match started {
        Ok(b) => b,
        Err(e) => {
            socket::remove(&path);
            return Err(e);
        }
    };
    let info = ServerInfo {
        runtime: format!("{:?}", args.runtime).to_lowercase(),
        root_dir: args.root_dir.display().to_string(),
        listen: format!("unix://{}", path.display()),
        streaming_address: streaming.local_addr().to_string(),
    };
    let svc = CriService::new(backend, streaming.issuer(), info);
    tokio::spawn(streaming.serve(local, shutdown.clone()));

    let (health, health_svc) = tonic_health::server::health_reporter();
    for name in ["", "runtime.v1.RuntimeService", "runtime.v1.ImageService"] {
        health
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let runtime_svc = cri::runtime_service_server::RuntimeServiceServer::from_arc(svc.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let image_svc = cri::image_service_server::ImageServiceServer::from_arc(svc)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    info!(socket = %path.display(), runtime = ?args.runtime, "keel cri {} serving CRI v1", env!("CARGO_PKG_VERSION"));

    // After the signal: stop accepting, let in-flight calls finish, but not forever.
    let drained = shutdown.clone();
    let server = tonic::transport::Server::builder()
        .add_service(health_svc)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(runtime_svc)
        .add_service(image_svc)
        .serve_with_incoming_shutdown(
            // Every connection through the `:authority` fix for pre-1.26 clients.
            futures::StreamExt::map(tokio_stream::wrappers::UnixListenerStream::new(listener), |c| {
                c.map(authority::relay)
            }),
            drained.cancelled_owned(),
        );
    let mut server = std::pin::pin!(server);
    let result = tokio::select! {
        r = server.as_mut() => r,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            warn!("calls still in flight {}s after the signal; stopping anyway", SHUTDOWN_GRACE.as_secs());
            Ok(())
        }
    };
    socket::remove(&path);
    result.map_err(|source| Error::Serve { path, source })?;
    info!("keel cri stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_unix_sockets_only() {
        assert_eq!(socket_path("unix:///run/k.sock").unwrap(), PathBuf::from("/run/k.sock"));
        assert_eq!(socket_path("unix:/run/k.sock").unwrap(), PathBuf::from("/run/k.sock"));
        assert_eq!(socket_path("/run/k.sock").unwrap(), PathBuf::from("/run/k.sock"));
        assert!(matches!(socket_path("tcp://127.0.0.1:1"), Err(Error::BadListen(_))));
        assert!(matches!(socket_path("unix://rel.sock"), Err(Error::BadListen(_))));
    }
}
