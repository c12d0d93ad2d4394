//! The event recorder: pod and node events posted as core/v1 Events, as the kubelet's client-go
//! recorder (`tools/record`) posts them: `source {component: kubelet, host: <node>}`,
//! `reportingComponent`/`reportingInstance`, the involved object with uid, apiVersion,
//! resourceVersion and fieldPath, and `count`/`firstTimestamp`/`lastTimestamp`. A node's
//! identity may write only core/v1 events (the Node authorizer forbids events.k8s.io).
//!
//! Callers never wait on the API: `Recorder` queues onto a bounded channel and a background task
//! posts. A full queue drops the event with a counted warning. The posting task runs client-go's
//! `EventCorrelator` ([`correlator`]): repeats become PATCHes of `count`, similar events are
//! combined, and a flood about one object is rate-limited.
//!
//! Without an API client (standalone) events are logged at info.

pub mod correlator;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::genericruntime::{EventSink, EventType};
use correlator::{Correlated, EventCorrelator};

/// Capacity of the queue between callers and the posting task.
pub const EVENT_QUEUE_CAPACITY: usize = 1000;
/// `source.component` and `reportingComponent` of every event keel posts.
pub const COMPONENT: &str = "kubelet";
/// Namespace of node events (the kubelet's node reference has none; the API puts them here).
pub const NODE_EVENT_NAMESPACE: &str = "default";
/// Attempts per event while the API server cannot be reached (client-go's `maxTriesPerEvent`).
pub const MAX_TRIES_PER_EVENT: u32 = 12;
/// Pause between attempts (client-go's `defaultSleepDuration`; the first one is randomised).
pub const RETRY_SLEEP: Duration = Duration::from_secs(10);

/// Posting an event failed.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("creating event {namespace}/{name}: {source}")]
    Create {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("patching event {namespace}/{name}: {source}")]
    Patch {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl EventError {
    fn source_error(&self) -> &kube::Error {
        match self {
            EventError::Create { source, .. } | EventError::Patch { source, .. } => source,
        }
    }

    fn status_code(&self) -> Option<u16> {
        match self.source_error() {
            kube::Error::Api(s) => Some(s.code),
            _ => None,
        }
    }
}

/// One event as a caller reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRecord {
    pub regarding: ObjectReference,
    pub type_: EventType,
    pub reason: String,
    pub message: String,
    pub time: Timestamp,
}

impl EventRecord {
    fn namespace(&self) -> String {
        self.regarding
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| NODE_EVENT_NAMESPACE.to_string())
    }
}

/// The object reference the kubelet uses for a pod (`ref.GetReference`, optionally a container
/// in it via fieldPath).
pub fn pod_reference(pod: &Pod, field_path: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: Some(pod.metadata.namespace.clone().unwrap_or_else(|| "default".into())),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path,
    }
}

/// The kubelet's node reference: kind Node, name, and the node *name* as UID (`nodeRef` in
/// kubelet.go), so node events exist before the Node object does.
pub fn node_reference(node_name: &str) -> ObjectReference {
    ObjectReference {
        kind: Some("Node".into()),
        name: Some(node_name.to_string()),
        uid: Some(node_name.to_string()),
        ..Default::default()
    }
}

/// The core/v1 Event for one occurrence (client-go's `makeEvent` plus the recorder's source).
pub fn build_event(rec: &EventRecord, node_name: &str) -> Event {
    let object_name = rec.regarding.name.clone().unwrap_or_default();
    Event {
        metadata: ObjectMeta {
            name: Some(correlator::event_name(&object_name, rec.time)),
            namespace: Some(rec.namespace()),
            ..Default::default()
        },
        involved_object: rec.regarding.clone(),
        reason: Some(rec.reason.clone()),
        message: Some(rec.message.clone()),
        first_timestamp: Some(Time(rec.time)),
        last_timestamp: Some(Time(rec.time)),
        count: Some(1),
        type_: Some(rec.type_.as_str().to_string()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: Some(node_name.to_string()),
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(node_name.to_string()),
        ..Default::default()
    }
}

/// What the posting task is sent, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Queued {
    Event(Box<EventRecord>),
    /// These objects (UIDs) are gone from the node: the correlator forgets what it remembers
    /// about them. Queued behind their last events, so none of those re-adds an entry.
    Forget(Vec<String>),
}

/// Queues events for the API (or the log, standalone). Cheap to call from anywhere.
pub struct Recorder {
    node_name: String,
    clock: Clock,
    tx: Option<mpsc::Sender<Queued>>,
    dropped: AtomicU64,
}

impl Recorder {
    /// Creates the recorder and, with a client, spawns its posting task (must be called inside
    /// a tokio runtime). The task ends when the recorder is dropped.
    pub fn new(client: Option<kube::Client>, node_name: impl Into<String>, clock: Clock) -> Arc<Recorder> {
        let node_name = node_name.into();
        let tx = client.map(|client| {
            let (tx, rx) = mpsc::channel(EVENT_QUEUE_CAPACITY);
            tokio::spawn(post_events(client, node_name.clone(), rx));
            tx
        });
        Arc::new(Recorder {
            node_name,
            clock,
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    /// A recorder whose events go to `tx` (tests and alternative sinks).
    pub fn with_channel(node_name: impl Into<String>, clock: Clock, tx: mpsc::Sender<Queued>) -> Arc<Recorder> {
        Arc::new(Recorder {
            node_name: node_name.into(),
            clock,
            tx: Some(tx),
            dropped: AtomicU64::new(0),
        })
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// How many events were dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// An event about this node.
    pub fn node_event(&self, kind: EventType, reason: &str, message: impl Into<String>) {
        self.record(node_reference(&self.node_name), kind, reason, message.into());
    }

    /// An event about any object reference.
    pub fn record(&self, regarding: ObjectReference, kind: EventType, reason: &str, message: String) {
        let rec = EventRecord {
            regarding,
            type_: kind,
            reason: reason.to_string(),
            message,
            time: self.clock.now(),
        };
        let Some(tx) = &self.tx else {
            // Standalone: the log is where events go. A warning repeated on every sync (say
            // MissingClusterDNS) is logged once, then counted (powers of two logged again).
            let mut count = 1;
            if matches!(rec.type_, EventType::Warning) {
                let object = format!(
                    "{}/{}/{}: {}",
                    rec.regarding.namespace.as_deref().unwrap_or_default(),
                    rec.regarding.name.as_deref().unwrap_or_default(),
                    rec.regarding.field_path.as_deref().unwrap_or_default(),
                    rec.message
                );
                match crate::repeats::global().note(&rec.reason, &object) {
                    crate::repeats::Verdict::Log { count: n } => count = n,
                    crate::repeats::Verdict::Repeat { count: n } => {
                        tracing::debug!(reason = %rec.reason, count = n, "event repeated: {}", rec.message);
                        return;
                    }
                }
            }
            tracing::info!(
                count,
                object = ?rec.regarding.name,
                kind = ?rec.regarding.kind,
                field_path = ?rec.regarding.field_path,
                r#type = rec.type_.as_str(),
                reason = %rec.reason,
                "event: {}",
                rec.message
            );
            return;
        };
        match tx.try_send(Queued::Event(Box::new(rec))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Queued::Event(rec))) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Count every drop, warn on 1, 2, 4, 8… so a flood does not flood the log too.
                if n.is_power_of_two() {
                    tracing::warn!(dropped_total = n, reason = %rec.reason, "event queue full, dropping event");
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("event recorder task has stopped; event not posted");
            }
        }
    }

    /// Pods (by UID) that are gone from the node for good: no event will be about them again,
    /// so the correlator's entries about them can go (housekeeping calls this once their
    /// workers are forgotten). A full queue keeps them until the LRUs push them out, as
    /// client-go would.
    pub fn forget_objects(&self, uids: Vec<String>) {
        let Some(tx) = &self.tx else { return };
        if uids.is_empty() {
            return;
        }
        if let Err(e) = tx.try_send(Queued::Forget(uids)) {
            tracing::debug!(error = %e, "event queue full; the correlator keeps gone pods' entries for now");
        }
    }
}

impl EventSink for Recorder {
    fn pod_event(&self, pod: &Pod, field_path: Option<String>, kind: EventType, reason: &str, message: String) {
        self.record(pod_reference(pod, field_path), kind, reason, message);
    }
}

async fn create(client: &kube::Client, ev: &Event) -> Result<Event, EventError> {
    let ns = ev.metadata.namespace.clone().unwrap_or_default();
    let mut ev = ev.clone();
    // A create never carries a resourceVersion (the patched event may have gone).
    ev.metadata.resource_version = None;
    Api::<Event>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &ev)
        .await
        .map_err(|source| EventError::Create {
            namespace: ns,
            name: ev.metadata.name.clone().unwrap_or_default(),
            source,
        })
}

/// `recordEvent`: PATCH a repeat (create it again if it has gone), create the rest.
async fn write(client: &kube::Client, c: &Correlated) -> Result<Option<Event>, EventError> {
    match c {
        Correlated::Skip => Ok(None),
        Correlated::Create(ev) => create(client, ev).await.map(Some),
        Correlated::Patch { event, patch } => {
            let ns = event.metadata.namespace.clone().unwrap_or_default();
            let name = event.metadata.name.clone().unwrap_or_default();
            let res = Api::<Event>::namespaced(client.clone(), &ns)
                .patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
                .map_err(|source| EventError::Patch {
                    namespace: ns,
                    name,
                    source,
                });
            match res {
                Err(e) if e.status_code() == Some(404) => create(client, event).await.map(Some),
                other => other.map(Some),
            }
        }
    }
}

/// The posting task: one event at a time, in order, as client-go's broadcaster does. An answer
/// from the server (other than success) is final for that event; an unreachable server is
/// retried [`MAX_TRIES_PER_EVENT`] times. Failures are logged once per outage.
async fn post_events(client: kube::Client, node_name: String, mut rx: mpsc::Receiver<Queued>) {
    let mut correlator = EventCorrelator::default();
    let mut failing = false;
    let mut last_nanos = 0i128;
    while let Some(item) = rx.recv().await {
        let rec = match item {
            Queued::Event(rec) => *rec,
            Queued::Forget(uids) => {
                correlator.forget_objects(&uids.into_iter().collect());
                continue;
            }
        };
        let mut ev = build_event(&rec, &node_name);
        // Two events about one object in the same nanosecond would share a name.
        let nanos = rec.time.as_nanosecond().max(last_nanos + 1);
        last_nanos = nanos;
        if let Ok(t) = Timestamp::from_nanosecond(nanos) {
            ev.metadata.name = Some(correlator::event_name(
                rec.regarding.name.as_deref().unwrap_or_default(),
                t,
            ));
        }
        let decision = correlator.correlate(ev, rec.time);
        let mut tries = 0;
        loop {
            match write(&client, &decision).await {
                Ok(stored) => {
                    if let Some(stored) = stored {
                        correlator.update_state(&stored);
                    }
                    if failing {
                        tracing::info!("posting events works again");
                        failing = false;
                    }
                    break;
                }
                Err(e) => {
                    let answered = e.status_code();
                    if !failing {
                        tracing::warn!(error = %e, "cannot post event; later failures are not logged until one succeeds");
                        failing = true;
                    }
                    if answered.is_some() {
                        // The server refused it: retrying will not help (client-go gives up too).
                        break;
                    }
                    tries += 1;
                    if tries >= MAX_TRIES_PER_EVENT {
                        break;
                    }
                    let pause = if tries == 1 {
                        RETRY_SLEEP.mul_f64(rand::random::<f64>())
                    } else {
                        RETRY_SLEEP
                    };
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns1".into()),
                uid: Some("uid-1".into()),
                resource_version: Some("7".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn pod_event_shape() {
        let rec = EventRecord {
            regarding: pod_reference(&pod(), Some("spec.containers{c}".into())),
            type_: EventType::Warning,
            reason: "BackOff".into(),
            message: "Back-off restarting failed container".into(),
            time: Timestamp::from_second(1_700_000_000).unwrap(),
        };
        let ev = build_event(&rec, "node-1");
        assert_eq!(ev.metadata.namespace.as_deref(), Some("ns1"));
        assert_eq!(
            ev.metadata.name.as_deref(),
            Some(format!("web.{:x}", 1_700_000_000_000_000_000i64).as_str())
        );
        let r = &ev.involved_object;
        assert_eq!(r.api_version.as_deref(), Some("v1"));
        assert_eq!(r.kind.as_deref(), Some("Pod"));
        assert_eq!(r.uid.as_deref(), Some("uid-1"));
        assert_eq!(r.resource_version.as_deref(), Some("7"));
        assert_eq!(r.field_path.as_deref(), Some("spec.containers{c}"));
        assert_eq!(ev.reason.as_deref(), Some("BackOff"));
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        let src = ev.source.as_ref().unwrap();
        assert_eq!(src.component.as_deref(), Some("kubelet"));
        assert_eq!(src.host.as_deref(), Some("node-1"));
        assert_eq!(ev.reporting_component.as_deref(), Some("kubelet"));
        assert_eq!(ev.reporting_instance.as_deref(), Some("node-1"));
        assert_eq!(ev.count, Some(1));
        assert_eq!(ev.first_timestamp, ev.last_timestamp);
        // Legacy (core/v1) events: no eventTime, so the server applies the legacy validation.
        assert!(ev.event_time.is_none());
    }

    #[test]
    fn node_event_shape() {
        let r = EventRecord {
            regarding: node_reference("node-1"),
            type_: EventType::Normal,
            reason: "NodeReady".into(),
            message: "Node node-1 status is now: NodeReady".into(),
            time: Timestamp::from_second(5).unwrap(),
        };
        let ev = build_event(&r, "node-1");
        assert_eq!(ev.metadata.namespace.as_deref(), Some("default"));
        let reg = ev.involved_object;
        assert_eq!(reg.kind.as_deref(), Some("Node"));
        assert_eq!(reg.uid.as_deref(), Some("node-1"));
        assert_eq!(reg.namespace, None);
    }

    #[tokio::test]
    async fn recorder_never_blocks_and_counts_drops() {
        let (tx, mut rx) = mpsc::channel(2);
        let r = Recorder::with_channel("node-1", Clock::real(), tx);
        for i in 0..5 {
            r.pod_event(&pod(), None, EventType::Normal, "Pulled", format!("m{i}"));
        }
        assert_eq!(r.dropped(), 3);
        let got = event(rx.recv().await);
        assert_eq!(got.reason, "Pulled");
        assert_eq!(got.message, "m0");
        assert_eq!(got.regarding.field_path, None);
        r.node_event(EventType::Normal, "Starting", "Starting keel.");
        // The queue had one free slot after the recv.
        let got = event(rx.recv().await);
        assert_eq!(got.message, "m1");
        let got = event(rx.recv().await);
        assert_eq!(got.regarding.kind.as_deref(), Some("Node"));
    }

    fn event(q: Option<Queued>) -> EventRecord {
        match q {
            Some(Queued::Event(rec)) => *rec,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn forgetting_pods_is_queued_behind_their_events() {
        let (tx, mut rx) = mpsc::channel(4);
        let r = Recorder::with_channel("node-1", Clock::real(), tx);
        r.pod_event(
            &pod(),
            None,
            EventType::Normal,
            "Killing",
            "Stopping container c".into(),
        );
        r.forget_objects(vec!["uid-1".into()]);
        // Nothing to forget: nothing queued.
        r.forget_objects(Vec::new());
        assert_eq!(event(rx.recv().await).reason, "Killing");
        assert_eq!(rx.recv().await, Some(Queued::Forget(vec!["uid-1".into()])));
        assert!(rx.try_recv().is_err());
    }
}
