//! The node lease (§3.3): `kube-node-lease/<node>`, renewed every quarter of its duration.
//!
//! Like the kubelet's lease controller: a cached lease is PUT with a new renewTime (no GET);
//! on failure, or with nothing cached, the lease is "ensured" (GET, create on 404, retried with
//! 200 ms doubling to 7 s), then updated, up to five times, a Conflict refetching first. The
//! owner reference to the Node is added as soon as the Node's UID is known (from the node status
//! reporter's watch channel rather than a GET of our own). Outages are logged once; the loop
//! only stops on shutdown.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::PostParams;
use kube::Api;
use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;

/// Namespace of node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Renew interval as a fraction of the lease duration.
pub const RENEW_INTERVAL_FRACTION: f64 = 0.25;
/// Jitter of the renew period.
pub const RENEW_JITTER: f64 = 0.04;
/// Update attempts per renewal.
pub const MAX_UPDATE_RETRIES: usize = 5;
/// Back-off of the ensure step.
pub const ENSURE_BACKOFF_INITIAL: Duration = Duration::from_millis(200);
pub const ENSURE_BACKOFF_MAX: Duration = Duration::from_secs(7);

/// A lease call failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("getting lease {LEASE_NAMESPACE}/{name}: {source}")]
    Get {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating lease {LEASE_NAMESPACE}/{name}: {source}")]
    Create {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating lease {LEASE_NAMESPACE}/{name}: {source}")]
    Update {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("lease {LEASE_NAMESPACE}/{name}: {MAX_UPDATE_RETRIES} update attempts failed")]
    RetriesExhausted { name: String },
    #[error("shutting down")]
    Shutdown,
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// The owner reference a node lease carries, if the Node's UID is known.
pub fn node_owner_reference(node: &Node) -> Option<OwnerReference> {
    let uid = node.metadata.uid.clone().filter(|u| !u.is_empty())?;
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.metadata.name.clone().unwrap_or_default(),
        uid,
        ..Default::default()
    })
}

/// `newLease`: `base` (or a fresh lease) with holder, duration and renewTime set, and the owner
/// reference added when missing and known.
pub fn renewed_lease(
    base: Option<&Lease>,
    node_name: &str,
    duration_secs: i32,
    now: jiff::Timestamp,
    node: Option<&Node>,
) -> Lease {
    let mut lease = base.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(node_name.to_string()),
            namespace: Some(LEASE_NAMESPACE.to_string()),
            ..Default::default()
        },
        spec: None,
    });
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(node_name.to_string());
    spec.lease_duration_seconds = Some(duration_secs);
    spec.renew_time = Some(MicroTime(now));
    let has_owner = lease.metadata.owner_references.as_ref().is_some_and(|o| !o.is_empty());
    if !has_owner {
        // Only our own Node is a valid owner.
        if let Some(r) = node
            .filter(|n| n.metadata.name.as_deref() == Some(node_name))
            .and_then(node_owner_reference)
        {
            lease.metadata.owner_references = Some(vec![r]);
        }
    }
    lease
}

struct LeaseController {
    api: Api<Lease>,
    node_name: String,
    duration_secs: i32,
    clock: Clock,
    node_rx: watch::Receiver<Option<Node>>,
    shutdown: CancellationToken,
    latest: Option<Lease>,
    failing: bool,
}

impl LeaseController {
    fn new_lease(&self, base: Option<&Lease>) -> Lease {
        let node = self.node_rx.borrow().clone();
        renewed_lease(
            base,
            &self.node_name,
            self.duration_secs,
            self.clock.now(),
            node.as_ref(),
        )
    }

    async fn try_ensure(&self) -> Result<(Lease, bool), LeaseError> {
        let name = &self.node_name;
        match self.api.get(name).await {
            Ok(l) => Ok((l, false)),
            Err(e) if is_status(&e, 404) => {
                let lease = self.new_lease(None);
                let created = self
                    .api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map_err(|source| LeaseError::Create {
                        name: name.clone(),
                        source,
                    })?;
                Ok((created, true))
            }
            Err(source) => Err(LeaseError::Get {
                name: name.clone(),
                source,
            }),
        }
    }

    /// `backoffEnsureLease`: until it works (or shutdown).
    async fn ensure(&mut self) -> Result<(Lease, bool), LeaseError> {
        let mut backoff = ENSURE_BACKOFF_INITIAL;
        loop {
            match self.try_ensure().await {
                Ok(r) => return Ok(r),
                Err(e) => self.note_failure(&e),
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return Err(LeaseError::Shutdown),
                _ = self.clock.sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(ENSURE_BACKOFF_MAX);
        }
    }

    /// `retryUpdateLease`.
    async fn update(&mut self, base: Lease) -> Result<(), LeaseError> {
        let mut base = base;
        let mut last = None;
        for _ in 0..MAX_UPDATE_RETRIES {
            let lease = self.new_lease(Some(&base));
            match self.api.replace(&self.node_name, &PostParams::default(), &lease).await {
                Ok(l) => {
                    self.latest = Some(l);
                    return Ok(());
                }
                Err(e) if is_status(&e, 409) => {
                    // Someone else wrote it: refetch and retry on the fresh copy.
                    base = self.ensure().await?.0;
                    last = Some(LeaseError::Update {
                        name: self.node_name.clone(),
                        source: e,
                    });
                }
                Err(source) => {
                    last = Some(LeaseError::Update {
                        name: self.node_name.clone(),
                        source,
                    })
                }
            }
        }
        Err(last.unwrap_or(LeaseError::RetriesExhausted {
            name: self.node_name.clone(),
        }))
    }

    fn note_failure(&mut self, e: &LeaseError) {
        if !self.failing {
            tracing::warn!(error = %e, "cannot renew node lease; retrying until the API server answers");
            self.failing = true;
        } else {
            tracing::debug!(error = %e, "node lease still failing");
        }
    }

    fn note_ok(&mut self) {
        if self.failing {
            tracing::info!(node = %self.node_name, "node lease renewed again");
            self.failing = false;
        }
    }

    /// One renewal (`sync`).
    async fn sync(&mut self) -> Result<(), LeaseError> {
        if let Some(latest) = self.latest.clone() {
            match self.update(latest).await {
                Ok(()) => return Ok(()),
                Err(LeaseError::Shutdown) => return Err(LeaseError::Shutdown),
                Err(e) => {
                    self.note_failure(&e);
                    // Drop the cache: the next step refetches.
                    self.latest = None;
                }
            }
        }
        let (lease, created) = self.ensure().await?;
        if created {
            self.latest = Some(lease);
            Ok(())
        } else {
            self.update(lease).await
        }
    }
}

/// Keeps `kube-node-lease/<node_name>` renewed until `shutdown`.
pub async fn run_lease(
    client: kube::Client,
    node_name: String,
    duration_secs: i32,
    clock: Clock,
    node_rx: watch::Receiver<Option<Node>>,
    shutdown: CancellationToken,
) {
    let duration_secs = duration_secs.max(1);
    let mut ctl = LeaseController {
        api: Api::namespaced(client, LEASE_NAMESPACE),
        node_name,
        duration_secs,
        clock,
        node_rx,
        shutdown: shutdown.clone(),
        latest: None,
        failing: false,
    };
    let interval = Duration::from_secs(duration_secs as u64).mul_f64(RENEW_INTERVAL_FRACTION);
    loop {
        match ctl.sync().await {
            Ok(()) => ctl.note_ok(),
            Err(LeaseError::Shutdown) => return,
            Err(e) => ctl.note_failure(&e),
        }
        let wait = interval.mul_f64(1.0 + rand::rng().random::<f64>() * RENEW_JITTER);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = clock.sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(uid: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("node-1".into()),
                uid: uid.map(str::to_string),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn fresh_lease_shape() {
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let l = renewed_lease(None, "node-1", 40, now, Some(&node(Some("u-1"))));
        assert_eq!(l.metadata.name.as_deref(), Some("node-1"));
        assert_eq!(l.metadata.namespace.as_deref(), Some(LEASE_NAMESPACE));
        let spec = l.spec.as_ref().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("node-1"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.renew_time.as_ref().unwrap().0, now);
        let owner = &l.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.api_version, "v1");
        assert_eq!(owner.kind, "Node");
        assert_eq!(owner.name, "node-1");
        assert_eq!(owner.uid, "u-1");
    }

    #[test]
    fn owner_added_once_uid_known_and_renew_keeps_rest() {
        let t1 = jiff::Timestamp::from_second(1).unwrap();
        let t2 = jiff::Timestamp::from_second(11).unwrap();
        let l = renewed_lease(None, "node-1", 40, t1, Some(&node(None)));
        assert!(l.metadata.owner_references.is_none());
        let mut served = l.clone();
        served.metadata.resource_version = Some("7".into());
        let l2 = renewed_lease(Some(&served), "node-1", 40, t2, Some(&node(Some("u-9"))));
        assert_eq!(l2.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(l2.metadata.owner_references.as_ref().unwrap()[0].uid, "u-9");
        assert_eq!(l2.spec.as_ref().unwrap().renew_time.as_ref().unwrap().0, t2);
        // An existing owner is not replaced; another node's object is never used.
        let l3 = renewed_lease(Some(&l2), "node-1", 40, t2, Some(&node(Some("other"))));
        assert_eq!(l3.metadata.owner_references.as_ref().unwrap()[0].uid, "u-9");
        let mut foreign = node(Some("x"));
        foreign.metadata.name = Some("node-2".into());
        assert!(renewed_lease(None, "node-1", 40, t1, Some(&foreign))
            .metadata
            .owner_references
            .is_none());
    }
}
