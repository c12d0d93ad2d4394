//! Runtime container events as relist triggers (what the kubelet's Evented PLEG aims at, kept
//! simple): each event from CRI `GetContainerEvents` (or an in-process backend's own push) wakes
//! a relist at once, so an exit reaches the pod status in milliseconds rather than at the next
//! periodic relist. The relist still computes the transitions from two listings, so an event
//! lost, repeated or out of order can neither drop nor duplicate one; the cache keeps only the
//! newest observation. While the stream is down the relist runs every second again; a runtime
//! without the call (containerd 1.6 answers Unimplemented) is only relisted, said once.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Pleg;
use crate::genericruntime::seam::Code;

/// Wait before reopening a stream that ended or failed to open (real time).
const REOPEN_DELAY: Duration = Duration::from_secs(1);

/// Follows the runtime's container events until `shutdown`, waking `pleg` on each.
pub(super) async fn watch(pleg: Arc<Pleg>, shutdown: CancellationToken) {
    // Warn on the first failure of a streak only; the rest go to debug.
    let mut failing = false;
    loop {
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = pleg.runtime.container_events() => r,
        };
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(e) if e.code == Code::Unimplemented => {
                info!(
                    "the runtime offers no container events (GetContainerEvents unimplemented); relisting every second"
                );
                return;
            }
            Err(e) => {
                if failing {
                    debug!(error = %e, "opening the runtime's container events failed again");
                } else {
                    warn!(error = %e, "opening the runtime's container events failed; relisting every second meanwhile");
                    failing = true;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(REOPEN_DELAY) => continue,
                }
            }
        };
        if failing {
            info!("receiving the runtime's container events again");
        } else {
            debug!("receiving the runtime's container events");
        }
        pleg.set_events_up(true);
        // Anything that happened before the stream opened is found by this relist.
        pleg.relist_soon();
        loop {
            let item = tokio::select! {
                _ = shutdown.cancelled() => return,
                item = stream.next() => item,
            };
            match item {
                Some(Ok(ev)) => {
                    debug!(container = %ev.container_id, kind = ev.container_event_type, "runtime container event");
                    pleg.relist_soon();
                }
                Some(Err(e)) => {
                    warn!(error = %e, "the runtime's container event stream failed; relisting every second until it is back");
                    failing = true;
                    break;
                }
                None => {
                    warn!("the runtime closed its container event stream; relisting every second until it is back");
                    failing = true;
                    break;
                }
            }
        }
        pleg.set_events_up(false);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(REOPEN_DELAY) => {}
        }
    }
}
