//! client-go's `EventCorrelator` (tools/record/events_cache.go), which the kubelet's recorder
//! runs before every write:
//!
//! 1. the aggregator: 10 or more events within 10 minutes that differ only in their message
//!    (same source, object, type, reason) become one event whose message is prefixed
//!    `(combined from similar events): `, counted from then on;
//! 2. the logger: an event identical to one already posted (same source, object with field path,
//!    type, reason, message) becomes a PATCH of `count`, `lastTimestamp` and `message` of the
//!    posted one instead of a new object;
//! 3. the spam filter: a token bucket per source + object (burst 25, one token per 5 minutes);
//!    an event finding it empty is dropped.
//!
//! Times are the recorder's clock (virtual time under a scaled clock). The caches are bounded
//! like client-go's LRUs (4096 entries).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hash;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::{json, Value};

/// Entries of each cache (client-go's `maxLruCacheEntries`).
pub const MAX_CACHE_ENTRIES: usize = 4096;
/// Similar events (differing only in message) before they are combined.
pub const AGGREGATE_MAX_EVENTS: usize = 10;
/// Window of the aggregator.
pub const AGGREGATE_INTERVAL: SignedDuration = SignedDuration::from_secs(600);
/// Events a source may post about one object at once.
pub const SPAM_BURST: f64 = 25.0;
/// Tokens per second afterwards (one per 5 minutes).
pub const SPAM_QPS: f64 = 1.0 / 300.0;
/// Prefix of a combined event's message.
pub const COMBINED_PREFIX: &str = "(combined from similar events): ";

/// A small LRU: a map plus a use counter; the least recently used entry goes when full. Each
/// entry remembers the UID of the object its event was about, so the entries of an object that
/// is gone for good can be dropped at once instead of lingering until the LRU pushes them out.
struct Lru<K, V> {
    map: HashMap<K, Entry<V>>,
    tick: u64,
    capacity: usize,
}

struct Entry<V> {
    value: V,
    tick: u64,
    owner: String,
}

impl<K: Eq + Hash + Clone, V> Lru<K, V> {
    fn new(capacity: usize) -> Self {
        Lru {
            map: HashMap::new(),
            tick: 0,
            capacity: capacity.max(1),
        }
    }

    fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(k).map(|e| {
            e.tick = tick;
            &mut e.value
        })
    }

    fn insert(&mut self, k: K, owner: &str, value: V) {
        self.tick += 1;
        if self.map.len() >= self.capacity && !self.map.contains_key(&k) {
            if let Some(oldest) = self.map.iter().min_by_key(|(_, e)| e.tick).map(|(k, _)| k.clone()) {
                self.map.remove(&oldest);
            }
        }
        let tick = self.tick;
        match self.map.get_mut(&k) {
            // Keep the owner's allocation when an entry is refreshed.
            Some(e) => {
                e.value = value;
                e.tick = tick;
            }
            None => {
                self.map.insert(
                    k,
                    Entry {
                        value,
                        tick,
                        owner: owner.to_string(),
                    },
                );
            }
        }
    }

    /// Drops the entries about these objects; a table left mostly empty after a burst gives its
    /// room back.
    fn forget_owners(&mut self, owners: &HashSet<String>) {
        self.map.retain(|_, e| !owners.contains(&e.owner));
        if self.map.capacity() > 4 * self.map.len().max(16) {
            self.map.shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn owners(&self) -> impl Iterator<Item = &str> {
        self.map.values().map(|e| e.owner.as_str())
    }
}

fn s(o: &Option<String>) -> &str {
    o.as_deref().unwrap_or_default()
}

/// `getEventKey`: everything that makes two events "the same".
pub fn event_key(e: &Event) -> String {
    let src = e.source.clone().unwrap_or_default();
    let o = &e.involved_object;
    [
        s(&src.component),
        s(&src.host),
        s(&o.kind),
        s(&o.namespace),
        s(&o.name),
        s(&o.field_path),
        s(&o.uid),
        s(&o.api_version),
        s(&e.type_),
        s(&e.reason),
        s(&e.message),
    ]
    .join("")
}

/// `getSpamKey`: the source and the object.
pub fn spam_key(e: &Event) -> String {
    let src = e.source.clone().unwrap_or_default();
    let o = &e.involved_object;
    [
        s(&src.component),
        s(&src.host),
        s(&o.kind),
        s(&o.namespace),
        s(&o.name),
        s(&o.uid),
        s(&o.api_version),
    ]
    .join("")
}

/// `EventAggregatorByReasonFunc`: (aggregate key, local key). The aggregate key leaves out the
/// message and the field path.
pub fn aggregate_keys(e: &Event) -> (String, String) {
    let src = e.source.clone().unwrap_or_default();
    let o = &e.involved_object;
    let key = [
        s(&src.component),
        s(&src.host),
        s(&o.kind),
        s(&o.namespace),
        s(&o.name),
        s(&o.uid),
        s(&o.api_version),
        s(&e.type_),
        s(&e.reason),
        s(&e.reporting_component),
        s(&e.reporting_instance),
    ]
    .join("");
    (key, s(&e.message).to_string())
}

/// The message of a combined event.
pub fn combined_message(e: &Event) -> String {
    format!("{COMBINED_PREFIX}{}", s(&e.message))
}

/// The name client-go gives an event: `<object name>.<unix nanoseconds in hex>`.
pub fn event_name(object_name: &str, at: Timestamp) -> String {
    format!("{object_name}.{:x}", at.as_nanosecond().max(0))
}

struct AggregateRecord {
    local_keys: BTreeSet<String>,
    last: Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
struct EventLog {
    count: i32,
    first: Option<Time>,
    name: String,
    resource_version: Option<String>,
}

/// client-go's passive token bucket: full at first, `qps` tokens a second up to `burst`.
struct TokenBucket {
    tokens: f64,
    last: Timestamp,
}

impl TokenBucket {
    fn try_accept(&mut self, now: Timestamp, burst: f64, qps: f64) -> bool {
        let elapsed = now.duration_since(self.last).as_secs_f64().max(0.0);
        self.tokens = (self.tokens + elapsed * qps).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the correlator decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Correlated {
    /// Create this event.
    Create(Box<Event>),
    /// A repeat: PATCH the posted event (`event` names it) with `patch`; create `event` if it
    /// has gone from the server.
    Patch { event: Box<Event>, patch: Value },
    /// Spam: drop it.
    Skip,
}

/// The three stages above, with their caches.
pub struct EventCorrelator {
    aggregates: Lru<String, AggregateRecord>,
    logs: Lru<String, EventLog>,
    spam: Lru<String, TokenBucket>,
    burst: f64,
    qps: f64,
}

impl Default for EventCorrelator {
    fn default() -> Self {
        Self::new(SPAM_BURST, SPAM_QPS)
    }
}

impl EventCorrelator {
    pub fn new(burst: f64, qps: f64) -> Self {
        EventCorrelator {
            aggregates: Lru::new(MAX_CACHE_ENTRIES),
            logs: Lru::new(MAX_CACHE_ENTRIES),
            spam: Lru::new(MAX_CACHE_ENTRIES),
            burst,
            qps,
        }
    }

    /// `EventAggregate`: the event itself and its event key, or the combined event and the
    /// aggregate key.
    fn aggregate(&mut self, ev: Event, now: Timestamp) -> (Event, String) {
        let key = event_key(&ev);
        let (agg_key, local_key) = aggregate_keys(&ev);
        let mut record = self
            .aggregates
            .get_mut(&agg_key)
            .map(|r| AggregateRecord {
                local_keys: std::mem::take(&mut r.local_keys),
                last: r.last,
            })
            .unwrap_or(AggregateRecord {
                local_keys: BTreeSet::new(),
                last: Timestamp::UNIX_EPOCH,
            });
        if now.duration_since(record.last) > AGGREGATE_INTERVAL {
            record.local_keys.clear();
        }
        record.local_keys.insert(local_key);
        record.last = now;
        let similar = record.local_keys.len();
        if similar >= AGGREGATE_MAX_EVENTS {
            // Do not grow the set past the maximum.
            record.local_keys.pop_first();
        }
        self.aggregates
            .insert(agg_key.clone(), s(&ev.involved_object.uid), record);
        if similar < AGGREGATE_MAX_EVENTS {
            return (ev, key);
        }
        let object_name = s(&ev.involved_object.name).to_string();
        let combined = Event {
            metadata: ObjectMeta {
                name: Some(event_name(&object_name, now)),
                namespace: ev.metadata.namespace.clone(),
                ..Default::default()
            },
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            message: Some(combined_message(&ev)),
            involved_object: ev.involved_object.clone(),
            type_: ev.type_.clone(),
            reason: ev.reason.clone(),
            source: ev.source.clone(),
            reporting_component: ev.reporting_component.clone(),
            reporting_instance: ev.reporting_instance.clone(),
            ..Default::default()
        };
        (combined, agg_key)
    }

    /// `eventObserve`: a repeat of `key` takes the posted event's name, resourceVersion and
    /// firstTimestamp and the next count.
    fn observe(&mut self, mut ev: Event, key: String) -> (Event, Option<Value>) {
        let mut patch = None;
        if let Some(last) = self.logs.get_mut(&key).filter(|l| l.count > 0).cloned() {
            ev.metadata.name = Some(last.name);
            ev.metadata.resource_version = last.resource_version;
            ev.first_timestamp = last.first;
            ev.count = Some(last.count.saturating_add(1));
            // The two-way strategic merge patch client-go computes against a copy with count 0,
            // lastTimestamp at the epoch and no message.
            patch = Some(json!({
                "count": ev.count,
                "lastTimestamp": ev.last_timestamp,
                "message": ev.message,
            }));
        }
        self.logs.insert(
            key,
            s(&ev.involved_object.uid),
            EventLog {
                count: ev.count.unwrap_or(1),
                first: ev.first_timestamp.clone(),
                name: ev.metadata.name.clone().unwrap_or_default(),
                resource_version: ev.metadata.resource_version.clone(),
            },
        );
        (ev, patch)
    }

    /// `EventSourceObjectSpamFilter.Filter`: true when the event is spam.
    fn is_spam(&mut self, ev: &Event, now: Timestamp) -> bool {
        let key = spam_key(ev);
        let (burst, qps) = (self.burst, self.qps);
        if let Some(bucket) = self.spam.get_mut(&key) {
            return !bucket.try_accept(now, burst, qps);
        }
        let mut bucket = TokenBucket {
            tokens: burst,
            last: now,
        };
        let spam = !bucket.try_accept(now, burst, qps);
        self.spam.insert(key, s(&ev.involved_object.uid), bucket);
        spam
    }

    /// `EventCorrelate`.
    pub fn correlate(&mut self, ev: Event, now: Timestamp) -> Correlated {
        let (ev, key) = self.aggregate(ev, now);
        let (ev, patch) = self.observe(ev, key);
        if self.is_spam(&ev, now) {
            return Correlated::Skip;
        }
        match patch {
            Some(patch) => Correlated::Patch {
                event: Box::new(ev),
                patch,
            },
            None => Correlated::Create(Box::new(ev)),
        }
    }

    /// `UpdateState`: remember what the server stored (name, resourceVersion, count).
    pub fn update_state(&mut self, stored: &Event) {
        self.logs.insert(
            event_key(stored),
            s(&stored.involved_object.uid),
            EventLog {
                count: stored.count.unwrap_or(1),
                first: stored.first_timestamp.clone(),
                name: stored.metadata.name.clone().unwrap_or_default(),
                resource_version: stored.metadata.resource_version.clone(),
            },
        );
    }

    /// Forgets everything about these objects (by UID): pods gone from the node. client-go keeps
    /// them until its LRUs push them out, which holds ~4,096 entries of long keys (each with
    /// the message) per cache for good once a node has churned through a thousand pods; a
    /// deleted pod's UID is never the subject of another event, so nothing is lost.
    pub fn forget_objects(&mut self, uids: &HashSet<String>) {
        if uids.is_empty() {
            return;
        }
        self.aggregates.forget_owners(uids);
        self.logs.forget_owners(uids);
        self.spam.forget_owners(uids);
    }

    /// Whether any cache holds an entry about this object (by UID).
    pub fn knows_object(&self, uid: &str) -> bool {
        self.aggregates
            .owners()
            .chain(self.logs.owners())
            .chain(self.spam.owners())
            .any(|o| o == uid)
    }

    /// Entries in the largest cache (tests: the caches stay bounded).
    pub fn cache_len(&self) -> usize {
        self.aggregates.len().max(self.logs.len()).max(self.spam.len())
    }
}

#[cfg(test)]
mod tests {
    //! Ported from client-go's events_cache_test.go.
    use super::*;
    use k8s_openapi::api::core::v1::{EventSource, ObjectReference};

    fn object(kind: &str, name: &str, namespace: &str) -> ObjectReference {
        ObjectReference {
            kind: Some(kind.into()),
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            uid: Some("C934D34AFB20242".into()),
            api_version: Some("version".into()),
            field_path: Some("spec.containers{mycontainer}".into()),
            ..Default::default()
        }
    }

    fn make_event(reason: &str, message: &str, o: ObjectReference) -> Event {
        Event {
            metadata: ObjectMeta {
                name: Some(event_name(s(&o.name), Timestamp::UNIX_EPOCH)),
                namespace: o.namespace.clone(),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            involved_object: o,
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some("kublet.node1".into()),
            }),
            count: Some(1),
            type_: Some("Normal".into()),
            ..Default::default()
        }
    }

    fn unique_events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| {
                make_event(
                    &format!("reason-{i}"),
                    &format!("message-{i}"),
                    object("Pod", &format!("pod-{i}"), &format!("ns-{i}")),
                )
            })
            .collect()
    }

    fn similar_events(n: usize, template: &Event) -> Vec<Event> {
        (0..n)
            .map(|i| {
                let mut e = template.clone();
                let m = s(&e.message).to_string();
                e.message = Some(format!("{m}-{i}-{m}"));
                e
            })
            .collect()
    }

    fn stamp(mut e: Event, now: Timestamp) -> Event {
        e.first_timestamp = Some(Time(now));
        e.last_timestamp = Some(Time(now));
        e
    }

    /// Posts an event as the recorder does: correlate, then remember what the server stored.
    fn post(c: &mut EventCorrelator, reason: &str, o: &ObjectReference, now: Timestamp) -> Correlated {
        let ev = stamp(make_event(reason, &format!("{reason} container c"), o.clone()), now);
        let decision = c.correlate(ev, now);
        match &decision {
            Correlated::Create(e) => c.update_state(e),
            Correlated::Patch { event, .. } => c.update_state(event),
            Correlated::Skip => {}
        }
        decision
    }

    fn pod_ref(name: &str, uid: &str) -> ObjectReference {
        ObjectReference {
            uid: Some(uid.into()),
            ..object("Pod", name, "default")
        }
    }

    #[test]
    fn a_forgotten_object_leaves_no_entry_and_others_keep_theirs() {
        let mut c = EventCorrelator::default();
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let (a, b) = (pod_ref("a", "uid-a"), pod_ref("b", "uid-b"));
        for o in [&a, &b] {
            for reason in ["Pulled", "Created", "Started", "Killing"] {
                assert!(matches!(post(&mut c, reason, o, now), Correlated::Create(_)));
            }
        }
        assert!(c.knows_object("uid-a") && c.knows_object("uid-b"));
        c.forget_objects(&HashSet::from(["uid-a".to_string()]));
        assert!(!c.knows_object("uid-a"));
        // b's four events (logs, aggregates) and its spam bucket stay: a repeat is still a PATCH.
        assert_eq!(c.cache_len(), 4);
        assert!(matches!(post(&mut c, "Started", &b, now), Correlated::Patch { .. }));
    }

    #[test]
    fn churned_pods_leave_the_caches_empty() {
        let mut c = EventCorrelator::default();
        let node = pod_ref("node-1", "node-1");
        let mut now = Timestamp::from_second(1_700_000_000).unwrap();
        // Waves of 50 pods, well past the caches' 4,096 entries: each wave's pods are forgotten
        // once gone, as housekeeping does.
        for wave in 0..30 {
            let uids: HashSet<String> = (0..50).map(|i| format!("uid-{wave}-{i}")).collect();
            for uid in &uids {
                let o = pod_ref(&format!("p-{uid}"), uid);
                for reason in ["Scheduled", "Pulled", "Created", "Started", "Killing"] {
                    post(&mut c, reason, &o, now);
                }
            }
            post(&mut c, "NodeReady", &node, now);
            c.forget_objects(&uids);
            now += SignedDuration::from_secs(60);
        }
        // Only the node's entries are left (one per cache).
        assert_eq!(c.cache_len(), 1);
        assert!(c.knows_object("node-1"));
    }

    /// Plays `previous` then `new`, `interval` apart; the outcome for `new`.
    fn play(previous: Vec<Event>, new: &Event, interval: i64, c: &mut EventCorrelator) -> Correlated {
        let mut now = Timestamp::from_second(1_700_000_000).unwrap();
        for e in previous {
            match c.correlate(stamp(e, now), now) {
                Correlated::Create(ev) | Correlated::Patch { event: ev, .. } => c.update_state(&ev),
                Correlated::Skip => {}
            }
            now += SignedDuration::from_secs(interval);
        }
        c.correlate(stamp(new.clone(), now), now)
    }

    /// The outcome's event: reason, message, count, and whether first == last timestamp.
    fn shape(c: &Correlated) -> Option<(String, String, i32, bool)> {
        match c {
            Correlated::Create(e) | Correlated::Patch { event: e, .. } => Some((
                s(&e.reason).to_string(),
                s(&e.message).to_string(),
                e.count.unwrap_or(0),
                e.first_timestamp == e.last_timestamp,
            )),
            Correlated::Skip => None,
        }
    }

    #[test]
    fn aggregator_keys_ignore_only_the_message() {
        let o = object("Pod", "pod1", "other");
        let e1 = make_event("end-of-world", "it was fun", o.clone());
        let e2 = make_event("end-of-world", "it was awful", o.clone());
        let e3 = make_event("nevermind", "it was a bug", o);
        let (a1, l1) = aggregate_keys(&e1);
        let (a2, l2) = aggregate_keys(&e2);
        let (a3, _) = aggregate_keys(&e3);
        assert_eq!(a1, a2);
        assert_ne!(l1, l2);
        assert_ne!(a1, a3);
        assert!(combined_message(&e1).starts_with("(combined from similar events): "));
    }

    #[test]
    fn correlator_scenarios() {
        let o = object("Pod", "my-pod", "my-ns");
        let first = make_event("first", "i am first", o.clone());
        let duplicate = make_event("duplicate", "me again", o.clone());
        let unique = make_event("unique", "snowflake", o.clone());
        let mut similar = make_event("similar", "similar message", o);
        similar.involved_object.field_path = Some("spec.containers{container1}".into());
        let combined = combined_message(&similar);
        let mut other_container = similar.clone();
        other_container.involved_object.field_path = Some("spec.containers{container2}".into());
        let sh = |r: &str, m: &str, n: i32| Some((r.to_string(), m.to_string(), n, n == 1));
        let max = AGGREGATE_MAX_EVENTS;
        // (name, previous events, new event, seconds between events, expected shape)
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, Vec<Event>, &Event, i64, Option<(String, String, i32, bool)>)> = vec![
            ("create-a-single-event", vec![], &first, 5, sh("first", "i am first", 1)),
            (
                "the-same-event-should-just-count",
                vec![duplicate.clone()],
                &duplicate,
                5,
                sh("duplicate", "me again", 2),
            ),
            (
                "the-same-event-should-just-count-even-if-more-than-aggregate",
                vec![duplicate.clone(); max],
                &duplicate,
                30,
                sh("duplicate", "me again", max as i32 + 1),
            ),
            (
                "the-same-event-is-spam-if-happens-too-frequently",
                vec![duplicate.clone(); SPAM_BURST as usize + 1],
                &duplicate,
                1,
                None,
            ),
            (
                "create-many-unique-events",
                unique_events(30),
                &unique,
                5,
                sh("unique", "snowflake", 1),
            ),
            (
                "similar-events-should-aggregate-event",
                similar_events(max - 1, &similar),
                &similar,
                5,
                sh("similar", &combined, 1),
            ),
            (
                "similar-events-many-times-should-count-the-aggregate",
                similar_events(max, &similar),
                &similar,
                5,
                sh("similar", &combined, 2),
            ),
            (
                "events-from-different-containers-do-not-aggregate",
                vec![other_container.clone()],
                &similar,
                5,
                sh("similar", "similar message", 1),
            ),
            (
                // client-go's interval clock ticks on every read, so its 600 s are a little more
                // than the window; here the gap is exact, hence 601.
                "similar-events-whose-interval-is-greater-than-aggregate-interval-do-not-aggregate",
                similar_events(max - 1, &similar),
                &similar,
                601,
                sh("similar", "similar message", 1),
            ),
        ];
        for (name, previous, new, interval, want) in cases {
            let mut c = EventCorrelator::default();
            let got = play(previous, new, interval, &mut c);
            assert_eq!(shape(&got), want, "{name}");
        }
    }

    #[test]
    fn repeats_patch_the_posted_event() {
        let mut c = EventCorrelator::default();
        let o = object("Pod", "web", "ns1");
        let e = make_event("BackOff", "Back-off restarting failed container", o);
        let t0 = Timestamp::from_second(100).unwrap();
        let Correlated::Create(first) = c.correlate(stamp(e.clone(), t0), t0) else {
            panic!("first occurrence creates");
        };
        let mut stored = (*first).clone();
        stored.metadata.resource_version = Some("42".into());
        c.update_state(&stored);
        let t1 = Timestamp::from_second(160).unwrap();
        let Correlated::Patch { event, patch } = c.correlate(stamp(e, t1), t1) else {
            panic!("a repeat patches");
        };
        assert_eq!(event.metadata.name, first.metadata.name);
        assert_eq!(event.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(event.first_timestamp, Some(Time(t0)));
        assert_eq!(
            patch,
            json!({"count": 2, "lastTimestamp": "1970-01-01T00:02:40Z",
                   "message": "Back-off restarting failed container"})
        );
    }

    #[test]
    fn spam_filter_is_per_object_with_burst_and_refill() {
        let burst_one = || EventCorrelator::new(1.0, 1.0);
        let o = object("Pod", "my-pod", "my-ns");
        let original = make_event("original", "i am first", o.clone());
        let different_reason = make_event("duplicate", "me again", o);
        // The default key is source + object: another reason about the same object is spam.
        let mut c = burst_one();
        assert_eq!(
            play(vec![original.clone()], &different_reason, 0, &mut c),
            Correlated::Skip
        );
        // Another object has its own bucket.
        let other = make_event("original", "i am first", object("Pod", "other", "my-ns"));
        assert!(matches!(
            c.correlate(other, Timestamp::UNIX_EPOCH),
            Correlated::Create(_)
        ));
        // One token a second: a second later it passes.
        let mut c = burst_one();
        assert!(matches!(
            play(vec![original], &different_reason, 1, &mut c),
            Correlated::Create(_)
        ));
        // Default: 25 at once, then one per 5 minutes.
        let mut c = EventCorrelator::default();
        let t = Timestamp::from_second(1000).unwrap();
        let results: Vec<bool> = unique_events(1)
            .into_iter()
            .cycle()
            .take(26)
            .enumerate()
            .map(|(i, mut e)| {
                e.message = Some(format!("m{i}"));
                c.correlate(e, t) != Correlated::Skip
            })
            .collect();
        assert_eq!(results.iter().filter(|ok| **ok).count(), 25);
        let e = unique_events(1).remove(0);
        assert_eq!(
            c.correlate(e.clone(), t + SignedDuration::from_secs(299)),
            Correlated::Skip
        );
        assert_ne!(c.correlate(e, t + SignedDuration::from_secs(600)), Correlated::Skip);
    }

    #[test]
    fn caches_are_bounded() {
        let mut c = EventCorrelator::default();
        let t = Timestamp::UNIX_EPOCH;
        for e in unique_events(MAX_CACHE_ENTRIES + 50) {
            c.correlate(e, t);
        }
        assert!(c.cache_len() <= MAX_CACHE_ENTRIES);
    }
}
