//! The checkpoint gate between the API pod source and the kubelet loop: forwards every update,
//! keeps the checkpoint file current, and restores the checkpointed pods when the API source has
//! not listed within [`RESTORE_AFTER`] of start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus, Service};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{save, Checkpoint, OfflineStore, CHECKPOINT_VERSION};
use crate::clock::Clock;
use crate::kubelet::mirror::is_mirror_pod;
use crate::kubelet::sources::{Source, SourceUpdate};

/// How long (keel's clock) the API source has to deliver its first list before keel starts the
/// checkpointed pods. Long enough for a reachable API server to answer after a restart (keel then
/// never acts on the checkpoint), short enough that an edge node is back to work quickly.
pub const RESTORE_AFTER: Duration = Duration::from_secs(15);
/// How often (real time) the checkpoint is compared with the pods and rewritten when changed.
pub const WRITE_PERIOD: Duration = Duration::from_secs(1);

/// The status keel computed for a pod UID (the status manager's cache).
pub type StatusLookup = Arc<dyn Fn(&str) -> Option<PodStatus> + Send + Sync>;
/// The Services known now, if the service cache has listed.
pub type ServicesLookup = Arc<dyn Fn() -> Option<Vec<Service>> + Send + Sync>;

/// What the gate needs.
pub struct GateOptions {
    pub path: PathBuf,
    pub node_name: String,
    pub clock: Clock,
    /// The checkpoint read at start, if any: restored when the API does not answer in time.
    pub restore: Option<Checkpoint>,
    pub restore_after: Duration,
    pub offline: Arc<OfflineStore>,
    pub status: StatusLookup,
    pub services: ServicesLookup,
}

/// Starts the gate: `api` is the API source's channel, `out` the kubelet loop's.
pub fn spawn_gate(
    opts: GateOptions,
    api: mpsc::Receiver<SourceUpdate>,
    out: mpsc::Sender<SourceUpdate>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(run(opts, api, out, shutdown))
}

struct Gate {
    opts: GateOptions,
    /// The API pods bound to the node, by UID (mirror pods are not kept: their static pods
    /// come from files).
    pods: BTreeMap<String, Pod>,
    last_written: Option<Checkpoint>,
    write_failing: bool,
}

async fn run(
    opts: GateOptions,
    mut api: mpsc::Receiver<SourceUpdate>,
    out: mpsc::Sender<SourceUpdate>,
    shutdown: CancellationToken,
) {
    let restore_at = tokio::time::Instant::now() + opts.clock.to_real(opts.restore_after);
    let mut restore = opts.restore.clone().filter(|cp| !cp.pods.is_empty());
    let mut gate = Gate {
        opts,
        pods: BTreeMap::new(),
        last_written: None,
        write_failing: false,
    };
    // Until the API lists, the file keeps what it had (a restart must not empty it).
    let mut api_listed = false;
    let mut api_from_server = false;
    let mut restored = false;
    let mut tick = tokio::time::interval(WRITE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut api_open = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            u = api.recv(), if api_open => {
                let Some(u) = u else { api_open = false; continue };
                if matches!(u, SourceUpdate::Snapshot { .. }) && !api_from_server {
                    if restored {
                        info!("API server listed this node's pods; its view replaces the checkpoint");
                    }
                    restore = None;
                    api_listed = true;
                    api_from_server = true;
                }
                gate.apply(&u);
                if out.send(u).await.is_err() {
                    break;
                }
            }
            _ = tokio::time::sleep_until(restore_at), if restore.is_some() => {
                let Some(cp) = restore.take() else { continue };
                let pods: Vec<Pod> = cp.pods;
                warn!(
                    pods = pods.len(),
                    "API server has not listed this node's pods; starting them from the checkpoint"
                );
                gate.apply(&SourceUpdate::Snapshot { source: Source::Api, pods: pods.clone() });
                api_listed = true;
                restored = true;
                if out.send(SourceUpdate::Snapshot { source: Source::Api, pods }).await.is_err() {
                    break;
                }
            }
            _ = tick.tick() => if api_listed { gate.write() },
        }
    }
    if api_listed {
        gate.write();
    }
}

impl Gate {
    fn apply(&mut self, u: &SourceUpdate) {
        match u {
            SourceUpdate::Snapshot { pods, .. } => {
                self.pods = pods
                    .iter()
                    .filter(|p| !is_mirror_pod(p))
                    .filter_map(|p| Some((p.metadata.uid.clone()?, p.clone())))
                    .collect();
            }
            SourceUpdate::Upsert { pod, .. } => {
                if let (false, Some(uid)) = (is_mirror_pod(pod), pod.metadata.uid.clone()) {
                    self.pods.insert(uid, (**pod).clone());
                }
            }
            SourceUpdate::Remove { pod, .. } => {
                if let Some(uid) = &pod.metadata.uid {
                    self.pods.remove(uid);
                }
            }
        }
    }

    /// The checkpoint of the current pods, each with keel's own latest status.
    fn checkpoint(&self) -> Checkpoint {
        let pods = self
            .pods
            .iter()
            .map(|(uid, p)| {
                let mut p = p.clone();
                if let Some(s) = (self.opts.status)(uid) {
                    p.status = Some(s);
                }
                p
            })
            .collect();
        let mut cp = Checkpoint {
            version: CHECKPOINT_VERSION,
            node_name: self.opts.node_name.clone(),
            pods,
            ..Default::default()
        };
        if self.opts.offline.enabled() {
            if let Some(s) = (self.opts.services)() {
                self.opts.offline.record_services(s);
            }
        }
        self.opts.offline.fill(&mut cp);
        cp
    }

    fn write(&mut self) {
        let cp = self.checkpoint();
        if self.last_written.as_ref() == Some(&cp) {
            return;
        }
        match save(&self.opts.path, &cp) {
            Ok(()) => {
                if self.write_failing {
                    info!(path = %self.opts.path.display(), "pod checkpoint written again");
                    self.write_failing = false;
                }
                self.last_written = Some(cp);
            }
            Err(e) => {
                if !self.write_failing {
                    warn!(error = %e, "cannot write the pod checkpoint; retrying");
                    self.write_failing = true;
                }
            }
        }
    }
}
