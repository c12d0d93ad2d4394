//! What the in-process backends (simulated and native) share: container/sandbox IDs with
//! containerd's unique-prefix lookup, and the `GetContainerEvents` broadcast.

use std::collections::BTreeMap;

use crate::genericruntime::seam::{cri, Code, ContainerEventStream, RuntimeError};

/// A new object ID: 64 lowercase hex characters, as containerd makes them.
pub fn new_id() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Outcome of resolving an ID or unique ID prefix (containerd's truncindex).
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    Found(String),
    NotFound,
    Ambiguous,
}

pub fn resolve<V>(map: &BTreeMap<String, V>, id: &str) -> Resolved {
    if id.is_empty() {
        return Resolved::NotFound;
    }
    if map.contains_key(id) {
        return Resolved::Found(id.to_string());
    }
    let mut hits = map
        .range::<str, _>((std::ops::Bound::Included(id), std::ops::Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(id))
        .map(|(k, _)| k);
    match (hits.next(), hits.next()) {
        (Some(k), None) => Resolved::Found(k.clone()),
        (Some(_), Some(_)) => Resolved::Ambiguous,
        _ => Resolved::NotFound,
    }
}

/// Events a slow subscriber may fall behind by before it is told it lost some.
pub const EVENT_BUFFER: usize = 1024;

/// Container lifecycle events for `GetContainerEvents` subscribers, sent as they happen.
#[derive(Debug)]
pub struct EventHub {
    tx: tokio::sync::broadcast::Sender<cri::ContainerEventResponse>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self {
            tx: tokio::sync::broadcast::channel(EVENT_BUFFER).0,
        }
    }
}

impl EventHub {
    /// Tells subscribers (none: nothing to do) what happened to a container at `at_ns`.
    pub fn emit(&self, id: &str, kind: cri::ContainerEventType, at_ns: i64) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let _ = self.tx.send(cri::ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: kind as i32,
            created_at: at_ns,
            pod_sandbox_status: None,
            containers_statuses: Vec::new(),
        });
    }

    /// A new subscriber's stream; one that falls more than [`EVENT_BUFFER`] behind gets an
    /// error (it lost events) and should relist.
    pub fn subscribe(&self) -> ContainerEventStream {
        use futures::StreamExt;
        tokio_stream::wrappers::BroadcastStream::new(self.tx.subscribe())
            .map(|r| r.map_err(|e| RuntimeError::new("GetContainerEvents", Code::ResourceExhausted, e.to_string())))
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_prefixes() {
        let mut m = BTreeMap::new();
        m.insert("abc1".to_string(), ());
        m.insert("abc2".to_string(), ());
        m.insert("def".to_string(), ());
        assert_eq!(resolve(&m, "def"), Resolved::Found("def".into()));
        assert_eq!(resolve(&m, "de"), Resolved::Found("def".into()));
        assert_eq!(resolve(&m, "abc"), Resolved::Ambiguous);
        assert_eq!(resolve(&m, "x"), Resolved::NotFound);
        assert_eq!(resolve(&m, ""), Resolved::NotFound);
    }

    #[test]
    fn ids_are_64_hex() {
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_ne!(id, new_id());
    }

    #[tokio::test]
    async fn events_reach_subscribers_in_order() {
        use futures::StreamExt;
        let hub = EventHub::default();
        // Nobody listens: dropped silently.
        hub.emit("gone", cri::ContainerEventType::ContainerCreatedEvent, 1);
        let mut s = hub.subscribe();
        hub.emit("a", cri::ContainerEventType::ContainerStartedEvent, 2);
        hub.emit("a", cri::ContainerEventType::ContainerStoppedEvent, 3);
        let first = s
            .next()
            .await
            .and_then(|r| r.ok())
            .map(|e| (e.container_id, e.container_event_type));
        let second = s.next().await.and_then(|r| r.ok()).map(|e| e.container_event_type);
        assert_eq!(
            first,
            Some(("a".to_string(), cri::ContainerEventType::ContainerStartedEvent as i32))
        );
        assert_eq!(second, Some(cri::ContainerEventType::ContainerStoppedEvent as i32));
    }
}
