//! The event recorder: pod and node events posted as `events.k8s.io/v1` Events.
//!
//! Callers never wait on the API: `Recorder` queues onto a bounded channel and a background task
//! posts. A full queue drops the event with a counted warning. Repeats of an identical event
//! (same object, reason, note and type) within [`SERIES_WINDOW`] are folded into the first
//! Event's `series` (count, lastObservedTime) by PATCH, like client-go's `tools/events`
//! recorder, instead of creating new objects. `action` is set to the reason (the kubelet's
//! legacy recorder has no action; events.k8s.io requires one).
//!
//! Without an API client (standalone) events are logged at info.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::genericruntime::{EventSink, EventType};

/// Capacity of the queue between callers and the posting task.
pub const EVENT_QUEUE_CAPACITY: usize = 1000;
/// Identical events within this window update the first Event's series.
pub const SERIES_WINDOW: Duration = Duration::from_secs(600);
/// Most distinct events remembered for series folding.
pub const SERIES_CACHE_CAPACITY: usize = 4096;
/// events.k8s.io rejects notes longer than this (bytes).
pub const MAX_NOTE_BYTES: usize = 1024;
/// `reportingController` of every event keel posts.
pub const REPORTING_CONTROLLER: &str = "kubelet";
/// Namespace of node events (the kubelet's node reference has none; the API puts them here).
pub const NODE_EVENT_NAMESPACE: &str = "default";

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
    #[error("updating series of event {namespace}/{name}: {source}")]
    PatchSeries {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// One event as a caller reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRecord {
    pub regarding: ObjectReference,
    pub type_: EventType,
    pub reason: String,
    pub note: String,
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

/// The object reference the kubelet uses for a pod (optionally a container in it).
pub fn pod_reference(pod: &Pod, field_path: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: Some(pod.metadata.namespace.clone().unwrap_or_else(|| "default".into())),
        uid: pod.metadata.uid.clone(),
        field_path,
        ..Default::default()
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

fn truncate_note(mut note: String) -> String {
    if note.len() > MAX_NOTE_BYTES {
        let mut cut = MAX_NOTE_BYTES;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    note
}

/// Builds the Event object for a first occurrence.
pub fn build_event(rec: &EventRecord, name: String, node_name: &str) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(rec.namespace()),
            ..Default::default()
        },
        event_time: Some(MicroTime(rec.time)),
        regarding: Some(rec.regarding.clone()),
        reason: Some(rec.reason.clone()),
        action: Some(rec.reason.clone()),
        note: Some(rec.note.clone()),
        type_: Some(rec.type_.as_str().to_string()),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        // No deprecatedSource: kube-apiserver refuses it on events.k8s.io/v1 create ("needs to be
        // unset"); the core/v1 view shows reportingController/Instance as the source.
        reporting_instance: Some(node_name.to_string()),
        ..Default::default()
    }
}

/// What to do with an event.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// First occurrence (or the previous one is too old): create this Event.
    Create(Box<Event>),
    /// A repeat: set `series` of the existing Event `namespace/name`.
    UpdateSeries {
        namespace: String,
        name: String,
        series: EventSeries,
    },
}

/// Identity of "the same event" for series folding.
type SeriesKey = (String, String, String, String, String, String, String);

fn series_key(rec: &EventRecord) -> SeriesKey {
    let r = &rec.regarding;
    let s = |o: &Option<String>| o.clone().unwrap_or_default();
    (
        format!("{}/{}", s(&r.kind), s(&r.namespace)),
        s(&r.name),
        s(&r.uid),
        s(&r.field_path),
        rec.reason.clone(),
        rec.note.clone(),
        rec.type_.as_str().to_string(),
    )
}

#[derive(Clone, Debug)]
struct SeriesEntry {
    namespace: String,
    name: String,
    count: i32,
    last_seen: tokio::time::Instant,
}

/// Decides create vs series update; remembers what was posted. Pure apart from the instants
/// it is given.
pub struct SeriesCache {
    entries: HashMap<SeriesKey, SeriesEntry>,
    window: Duration,
    capacity: usize,
    last_suffix: u64,
}

impl SeriesCache {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            window,
            capacity: capacity.max(1),
            last_suffix: 0,
        }
    }

    /// A unique name `<object name>.<hex>` (client-go uses the event time in nanoseconds;
    /// bumped when two events share a nanosecond).
    fn name_for(&mut self, rec: &EventRecord) -> String {
        let nanos = u64::try_from(rec.time.as_nanosecond()).unwrap_or(0);
        let suffix = nanos.max(self.last_suffix + 1);
        self.last_suffix = suffix;
        let base = rec.regarding.name.clone().unwrap_or_else(|| "unknown".into());
        format!("{base}.{suffix:x}")
    }

    /// Create or fold into a series; `now` is the monotonic instant of the occurrence (the
    /// window is measured in virtual time).
    pub fn decide(&mut self, rec: &EventRecord, node_name: &str, now: tokio::time::Instant, clock: &Clock) -> Action {
        let key = series_key(rec);
        if let Some(e) = self.entries.get_mut(&key) {
            if clock.to_virtual(now.saturating_duration_since(e.last_seen)) < self.window {
                e.count = e.count.saturating_add(1);
                e.last_seen = now;
                return Action::UpdateSeries {
                    namespace: e.namespace.clone(),
                    name: e.name.clone(),
                    series: EventSeries {
                        count: e.count,
                        last_observed_time: MicroTime(rec.time),
                    },
                };
            }
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.evict(now, clock);
        }
        let name = self.name_for(rec);
        let ev = build_event(rec, name.clone(), node_name);
        self.entries.insert(
            key,
            SeriesEntry {
                namespace: rec.namespace(),
                name,
                count: 1,
                last_seen: now,
            },
        );
        Action::Create(Box::new(ev))
    }

    /// Forgets an event whose object vanished (expired on the server), so the next repeat
    /// creates a fresh one.
    pub fn forget(&mut self, namespace: &str, name: &str) {
        self.entries
            .retain(|_, e| !(e.namespace == namespace && e.name == name));
    }

    /// Drops expired entries; if still full, the least recently seen one.
    fn evict(&mut self, now: tokio::time::Instant, clock: &Clock) {
        let window = self.window;
        self.entries
            .retain(|_, e| clock.to_virtual(now.saturating_duration_since(e.last_seen)) < window);
        if self.entries.len() >= self.capacity {
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Queues events for the API (or the log, standalone). Cheap to call from anywhere.
pub struct Recorder {
    node_name: String,
    clock: Clock,
    tx: Option<mpsc::Sender<EventRecord>>,
    dropped: AtomicU64,
}

impl Recorder {
    /// Creates the recorder and, with a client, spawns its posting task (must be called inside
    /// a tokio runtime). The task ends when the recorder is dropped.
    pub fn new(client: Option<kube::Client>, node_name: impl Into<String>, clock: Clock) -> Arc<Recorder> {
        let node_name = node_name.into();
        let tx = client.map(|client| {
            let (tx, rx) = mpsc::channel(EVENT_QUEUE_CAPACITY);
            tokio::spawn(post_events(client, node_name.clone(), clock, rx));
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
    pub fn with_channel(node_name: impl Into<String>, clock: Clock, tx: mpsc::Sender<EventRecord>) -> Arc<Recorder> {
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
            note: truncate_note(message),
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
                    rec.note
                );
                match super::repeats::global().note(&rec.reason, &object) {
                    super::repeats::Verdict::Log { count: n } => count = n,
                    super::repeats::Verdict::Repeat { count: n } => {
                        tracing::debug!(reason = %rec.reason, count = n, "event repeated: {}", rec.note);
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
                rec.note
            );
            return;
        };
        match tx.try_send(rec) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(rec)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Count every drop, warn on 1, 2, 4, 8… so a flood does not flood the log too.
                if n.is_power_of_two() {
                    tracing::warn!(dropped_total = n, reason = %rec.reason, "event queue full, dropping event");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("event recorder task has stopped; event not posted");
            }
        }
    }
}

impl EventSink for Recorder {
    fn pod_event(&self, pod: &Pod, field_path: Option<String>, kind: EventType, reason: &str, message: String) {
        self.record(pod_reference(pod, field_path), kind, reason, message);
    }
}

async fn apply(client: &kube::Client, action: &Action) -> Result<(), EventError> {
    match action {
        Action::Create(ev) => {
            let ns = ev.metadata.namespace.clone().unwrap_or_default();
            let name = ev.metadata.name.clone().unwrap_or_default();
            Api::<Event>::namespaced(client.clone(), &ns)
                .create(&PostParams::default(), ev)
                .await
                .map(|_| ())
                .map_err(|source| EventError::Create {
                    namespace: ns,
                    name,
                    source,
                })
        }
        Action::UpdateSeries {
            namespace,
            name,
            series,
        } => {
            let patch = serde_json::json!({ "series": series });
            Api::<Event>::namespaced(client.clone(), namespace)
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(|source| EventError::PatchSeries {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    source,
                })
        }
    }
}

fn is_not_found(e: &EventError) -> bool {
    let src = match e {
        EventError::Create { source, .. } | EventError::PatchSeries { source, .. } => source,
    };
    matches!(src, kube::Error::Api(s) if s.code == 404)
}

/// The posting task: one event at a time, in order. Failures are logged once per outage and
/// the event is dropped (the kubelet's recorder also gives up after a few tries; events are
/// best-effort).
async fn post_events(client: kube::Client, node_name: String, clock: Clock, mut rx: mpsc::Receiver<EventRecord>) {
    let mut cache = SeriesCache::new(SERIES_WINDOW, SERIES_CACHE_CAPACITY);
    let mut failing = false;
    while let Some(rec) = rx.recv().await {
        let action = cache.decide(&rec, &node_name, clock.instant(), &clock);
        let mut result = apply(&client, &action).await;
        if let (Err(e), Action::UpdateSeries { namespace, name, .. }) = (&result, &action) {
            if is_not_found(e) {
                // The first Event expired server-side: start a new one.
                cache.forget(namespace, name);
                let action = cache.decide(&rec, &node_name, clock.instant(), &clock);
                result = apply(&client, &action).await;
            }
        }
        match result {
            Ok(()) => {
                if failing {
                    tracing::info!("posting events works again");
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot post events; dropping them until the API server answers");
                    failing = true;
                }
                if let Action::Create(ev) = &action {
                    // Not on the server: a repeat must create it, not patch it.
                    cache.forget(
                        ev.metadata.namespace.as_deref().unwrap_or_default(),
                        ev.metadata.name.as_deref().unwrap_or_default(),
                    );
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
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn rec(note: &str, at: i64) -> EventRecord {
        EventRecord {
            regarding: pod_reference(&pod(), Some("spec.containers{c}".into())),
            type_: EventType::Warning,
            reason: "BackOff".into(),
            note: note.into(),
            time: Timestamp::from_second(at).unwrap(),
        }
    }

    #[test]
    fn pod_event_shape() {
        let mut cache = SeriesCache::new(SERIES_WINDOW, 10);
        let now = tokio::time::Instant::now();
        let Action::Create(ev) = cache.decide(&rec("Back-off", 1_700_000_000), "node-1", now, &Clock::real()) else {
            panic!("first occurrence must create");
        };
        assert_eq!(ev.metadata.namespace.as_deref(), Some("ns1"));
        let name = ev.metadata.name.clone().unwrap();
        let (base, suffix) = name.split_once('.').unwrap();
        assert_eq!(base, "web");
        assert!(u64::from_str_radix(suffix, 16).is_ok(), "{name}");
        let r = ev.regarding.as_ref().unwrap();
        assert_eq!(r.api_version.as_deref(), Some("v1"));
        assert_eq!(r.kind.as_deref(), Some("Pod"));
        assert_eq!(r.uid.as_deref(), Some("uid-1"));
        assert_eq!(r.field_path.as_deref(), Some("spec.containers{c}"));
        assert_eq!(ev.reason.as_deref(), Some("BackOff"));
        assert_eq!(ev.action.as_deref(), Some("BackOff"));
        assert_eq!(ev.note.as_deref(), Some("Back-off"));
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(ev.reporting_controller.as_deref(), Some("kubelet"));
        assert_eq!(ev.reporting_instance.as_deref(), Some("node-1"));
        assert!(
            ev.deprecated_source.is_none(),
            "events.k8s.io/v1 rejects deprecatedSource on create"
        );
        assert_eq!(ev.event_time.unwrap().0, Timestamp::from_second(1_700_000_000).unwrap());
        assert!(ev.series.is_none());
    }

    #[test]
    fn node_event_shape() {
        let r = EventRecord {
            regarding: node_reference("node-1"),
            type_: EventType::Normal,
            reason: "NodeReady".into(),
            note: "Node node-1 status is now: NodeReady".into(),
            time: Timestamp::from_second(5).unwrap(),
        };
        let ev = build_event(&r, "node-1.1".into(), "node-1");
        assert_eq!(ev.metadata.namespace.as_deref(), Some("default"));
        let reg = ev.regarding.unwrap();
        assert_eq!(reg.kind.as_deref(), Some("Node"));
        assert_eq!(reg.uid.as_deref(), Some("node-1"));
        assert_eq!(reg.namespace, None);
    }

    #[test]
    fn repeats_fold_into_series_within_window() {
        let clock = Clock::real();
        let mut cache = SeriesCache::new(SERIES_WINDOW, 10);
        let t0 = tokio::time::Instant::now();
        let Action::Create(first) = cache.decide(&rec("a", 100), "n", t0, &clock) else {
            panic!("create expected");
        };
        let first_name = first.metadata.name.unwrap();
        for (i, secs) in [(2, 60u64), (3, 120)] {
            match cache.decide(
                &rec("a", 100 + secs as i64),
                "n",
                t0 + Duration::from_secs(secs),
                &clock,
            ) {
                Action::UpdateSeries {
                    namespace,
                    name,
                    series,
                } => {
                    assert_eq!(namespace, "ns1");
                    assert_eq!(name, first_name);
                    assert_eq!(series.count, i);
                    assert_eq!(
                        series.last_observed_time.0,
                        Timestamp::from_second(100 + secs as i64).unwrap()
                    );
                }
                other => panic!("expected a series update, got {other:?}"),
            }
        }
        // A different note is a different event.
        assert!(matches!(
            cache.decide(&rec("b", 130), "n", t0 + Duration::from_secs(130), &clock),
            Action::Create(_)
        ));
        // More than 10 minutes after the last repeat: a new Event object with a new name.
        match cache.decide(&rec("a", 900), "n", t0 + Duration::from_secs(120 + 601), &clock) {
            Action::Create(ev) => assert_ne!(ev.metadata.name.unwrap(), first_name),
            other => panic!("expected create, got {other:?}"),
        }
    }

    #[test]
    fn window_uses_virtual_time_and_forget_restarts() {
        let clock = Clock::scaled(20.0);
        let mut cache = SeriesCache::new(SERIES_WINDOW, 10);
        let t0 = tokio::time::Instant::now();
        let Action::Create(first) = cache.decide(&rec("a", 1), "n", t0, &clock) else {
            panic!("create expected");
        };
        // 31 real seconds at scale 20 are > 10 virtual minutes.
        assert!(matches!(
            cache.decide(&rec("a", 2), "n", t0 + Duration::from_secs(31), &clock),
            Action::Create(_)
        ));
        cache.forget("ns1", first.metadata.name.as_deref().unwrap());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn cache_is_bounded() {
        let clock = Clock::real();
        let mut cache = SeriesCache::new(SERIES_WINDOW, 3);
        let t0 = tokio::time::Instant::now();
        for i in 0..10 {
            cache.decide(
                &rec(&format!("n{i}"), i),
                "n",
                t0 + Duration::from_secs(i as u64),
                &clock,
            );
            assert!(cache.len() <= 3);
        }
        // Names stay unique even when two events share a timestamp.
        let mut c2 = SeriesCache::new(SERIES_WINDOW, 10);
        let names: Vec<String> = ["x", "y"]
            .iter()
            .map(|n| match c2.decide(&rec(n, 7), "n", t0, &clock) {
                Action::Create(ev) => ev.metadata.name.unwrap(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_ne!(names[0], names[1]);
    }

    #[tokio::test]
    async fn recorder_never_blocks_and_counts_drops() {
        let (tx, mut rx) = mpsc::channel(2);
        let r = Recorder::with_channel("node-1", Clock::real(), tx);
        for i in 0..5 {
            r.pod_event(&pod(), None, EventType::Normal, "Pulled", format!("m{i}"));
        }
        assert_eq!(r.dropped(), 3);
        let got = rx.recv().await.unwrap();
        assert_eq!(got.reason, "Pulled");
        assert_eq!(got.note, "m0");
        assert_eq!(got.regarding.field_path, None);
        r.node_event(EventType::Normal, "Starting", "Starting keel.");
        // The queue had one free slot after the recv.
        let got = rx.recv().await.unwrap();
        assert_eq!(got.note, "m1");
        let got = rx.recv().await.unwrap();
        assert_eq!(got.regarding.kind.as_deref(), Some("Node"));
    }

    #[test]
    fn long_notes_are_truncated_on_a_char_boundary() {
        let s = "é".repeat(600); // 1200 bytes
        let t = truncate_note(s);
        assert!(t.len() <= MAX_NOTE_BYTES);
        assert!(t.chars().all(|c| c == 'é'));
    }
}
