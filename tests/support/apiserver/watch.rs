//! Watches: a chunked stream of `{"type": …, "object": …}` lines. From a resourceVersion the
//! history since then is replayed (410 Expired as an ERROR event when it was compacted away),
//! otherwise the current objects come as ADDED; then live changes, filtered by selectors the way
//! the watch cache does (an object leaving the selection is DELETED, entering it is ADDED),
//! periodic BOOKMARKs when asked, ending at `timeoutSeconds`, an outage or shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::errors::ApiError;
use super::objects::meta_mut;
use super::server::Shared;
use super::store::{Change, ChangeType};

/// Encoded events buffered towards a slow client.
const WATCH_BUFFER: usize = 256;
/// Period of BOOKMARK events when `allowWatchBookmarks=true`.
const BOOKMARK_PERIOD: Duration = Duration::from_secs(1);
/// The server's default watch length (`--min-request-timeout`) when no timeoutSeconds is given.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

pub struct WatchSpec {
    pub bucket: &'static str,
    pub namespace: Option<String>,
    pub resource_version: Option<u64>,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    /// Decides whether an object is in the watched selection (namespace excluded).
    pub matches: Box<dyn Fn(&Value) -> bool + Send + Sync>,
    /// Turns a stored object into what this client sees (API version conversion, Table).
    pub present: Box<dyn Fn(&Value) -> Value + Send + Sync>,
    /// `{"kind", "apiVersion"}` of bookmark objects.
    pub bookmark_type: (String, String),
}

fn line(ty: &str, object: Value) -> Bytes {
    let mut s = json!({"type": ty, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

impl WatchSpec {
    fn in_scope(&self, c: &Change) -> bool {
        c.bucket == self.bucket && self.namespace.as_ref().is_none_or(|ns| *ns == c.namespace)
    }

    /// The event (if any) this watcher gets for a change.
    fn event_for(&self, c: &Change) -> Option<Bytes> {
        if !self.in_scope(c) {
            return None;
        }
        let now = (self.matches)(&c.obj);
        let before = c.old.as_ref().is_some_and(|o| (self.matches)(o));
        match c.ty {
            ChangeType::Added => now.then(|| line("ADDED", (self.present)(&c.obj))),
            ChangeType::Deleted => before.then(|| line("DELETED", (self.present)(&c.obj))),
            ChangeType::Modified => match (before, now) {
                (true, true) => Some(line("MODIFIED", (self.present)(&c.obj))),
                (false, true) => Some(line("ADDED", (self.present)(&c.obj))),
                (true, false) => {
                    // The old state leaves the selection, stamped with this change's version.
                    let mut old = c.old.clone().unwrap_or(Value::Null);
                    meta_mut(&mut old).insert("resourceVersion".into(), json!(c.rv.to_string()));
                    Some(line("DELETED", (self.present)(&old)))
                }
                (false, false) => None,
            },
        }
    }

    fn bookmark(&self, rv: u64) -> Bytes {
        line(
            "BOOKMARK",
            json!({"kind": self.bookmark_type.0, "apiVersion": self.bookmark_type.1,
                   "metadata": {"resourceVersion": rv.to_string(), "creationTimestamp": null}}),
        )
    }
}

/// Starts a watch; the response streams until the watch ends.
pub fn start(shared: &Arc<Shared>, spec: WatchSpec) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(WATCH_BUFFER);
    let mut initial: Vec<Bytes> = Vec::new();
    let mut expired = false;
    let live = {
        let store = shared.store.lock();
        match spec.resource_version {
            None | Some(0) => {
                let ns = spec.namespace.as_deref();
                for obj in store.list(spec.bucket, ns) {
                    if (spec.matches)(obj) {
                        initial.push(line("ADDED", (spec.present)(obj)));
                    }
                }
            }
            Some(rv) => match store.history_since(rv) {
                Some(changes) => initial.extend(changes.iter().filter_map(|c| spec.event_for(c))),
                None => {
                    let err = ApiError::gone(format!("too old resource version: {rv} ({})", store.compacted()));
                    initial.push(line("ERROR", err.to_status()));
                    expired = true;
                }
            },
        }
        store.subscribe()
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        for b in initial {
            if tx.send(Ok(b)).await.is_err() {
                return;
            }
        }
        if !expired {
            run(shared, spec, live, tx).await;
        }
    });
    Body::from_stream(ReceiverStream::new(rx))
}

async fn run(
    shared: Arc<Shared>,
    spec: WatchSpec,
    mut live: broadcast::Receiver<Arc<Change>>,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let mut outages = shared.outages.subscribe();
    let deadline = tokio::time::sleep(spec.timeout.unwrap_or(DEFAULT_TIMEOUT));
    tokio::pin!(deadline);
    let mut bookmarks = tokio::time::interval(BOOKMARK_PERIOD);
    bookmarks.tick().await;
    loop {
        let out = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = &mut deadline => return,
            _ = tx.closed() => return,
            // Any outage since the watch started ends it.
            _ = outages.changed() => return,
            _ = bookmarks.tick(), if spec.bookmarks => {
                // Only when nothing is queued: a bookmark must not jump over undelivered events.
                let store = shared.store.lock();
                if !live.is_empty() {
                    continue;
                }
                spec.bookmark(store.rv())
            }
            c = live.recv() => match c {
                Ok(c) => match spec.event_for(&c) {
                    Some(b) => b,
                    None => continue,
                },
                // A lagging watcher is dropped; the client resumes from its last version.
                Err(_) => return,
            },
        };
        if tx.send(Ok(out)).await.is_err() {
            return;
        }
    }
}
