//! The API server pod source (§3.4): a list/watch of the pods bound to this node
//! (`spec.nodeName=<node>`, all namespaces), turned into `SourceUpdate`s.
//!
//! kube-rs's `watcher` does the list/watch protocol: plain paginated LIST then WATCH with
//! bookmarks (not streaming lists, which older API servers lack), re-listing on 410 Gone. Every
//! re-list arrives as `Init`, `InitApply`…, `InitDone`; those are buffered into one `Snapshot` so
//! the kubelet can swap its view atomically (and knows pods missing from it are gone). Watch
//! events become `Upsert`/`Remove`. Errors are retried with the watcher's default back-off and
//! logged once per failure streak.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Source, SourceUpdate, CONFIG_SOURCE_ANNOTATION};

/// Starts the API source. It runs until `shutdown` or until the receiver is gone. The first
/// `Snapshot` it sends is the signal that the API source is ready (see [`super::ready`]).
pub fn spawn_api_source(
    client: Client,
    node_name: String,
    tx: mpsc::Sender<SourceUpdate>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(run(client, node_name, tx, shutdown))
}

/// The watch configuration: only this node's pods, plain list+watch with bookmarks.
pub fn watch_config(node_name: &str) -> watcher::Config {
    watcher::Config::default().fields(&format!("spec.nodeName={node_name}"))
}

async fn run(client: Client, node_name: String, tx: mpsc::Sender<SourceUpdate>, shutdown: CancellationToken) {
    let api: Api<Pod> = Api::all(client);
    let stream = watcher::watcher(api, watch_config(&node_name)).default_backoff();
    futures::pin_mut!(stream);
    let mut translator = WatchTranslator::default();
    let mut failing = false;
    loop {
        let item = tokio::select! {
            _ = shutdown.cancelled() => return,
            item = stream.next() => item,
        };
        let event = match item {
            Some(Ok(event)) => event,
            Some(Err(e)) => {
                // The watcher recovers by itself (re-list on 410, back-off on errors): log the
                // start of a failure streak only.
                if !failing {
                    warn!(error = %e, node = %node_name, "pod watch failed; retrying with back-off");
                    failing = true;
                }
                continue;
            }
            None => {
                warn!(node = %node_name, "pod watch stream ended");
                return;
            }
        };
        if failing {
            info!(node = %node_name, "pod watch recovered");
            failing = false;
        }
        let Some(update) = translator.translate(event) else {
            continue;
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            sent = tx.send(update) => if sent.is_err() { return },
        }
    }
}

/// Turns watcher events into source updates, buffering a re-list into one snapshot.
#[derive(Debug, Default)]
pub struct WatchTranslator {
    /// Pods of the re-list in progress (between `Init` and `InitDone`).
    init_buffer: Option<Vec<Pod>>,
}

impl WatchTranslator {
    /// The update for one watcher event, if it completes one.
    pub fn translate(&mut self, event: Event<Pod>) -> Option<SourceUpdate> {
        match event {
            Event::Init => {
                self.init_buffer = Some(Vec::new());
                None
            }
            Event::InitApply(pod) => {
                self.init_buffer.get_or_insert_with(Vec::new).push(stamp(pod));
                None
            }
            Event::InitDone => Some(SourceUpdate::Snapshot {
                source: Source::Api,
                pods: self.init_buffer.take().unwrap_or_default(),
            }),
            Event::Apply(pod) => Some(SourceUpdate::Upsert {
                source: Source::Api,
                pod: Box::new(stamp(pod)),
            }),
            Event::Delete(pod) => Some(SourceUpdate::Remove {
                source: Source::Api,
                pod: Box::new(stamp(pod)),
            }),
        }
    }
}

/// Marks a pod as coming from the API. keel-local: the annotation is never written back.
fn stamp(mut pod: Pod) -> Pod {
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CONFIG_SOURCE_ANNOTATION.to_string(), Source::Api.as_str().to_string());
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("default".into());
        p
    }

    fn names(pods: &[Pod]) -> Vec<&str> {
        pods.iter().map(|p| p.metadata.name.as_deref().unwrap()).collect()
    }

    fn source_of(p: &Pod) -> Option<&str> {
        p.metadata
            .annotations
            .as_ref()?
            .get(CONFIG_SOURCE_ANNOTATION)
            .map(String::as_str)
    }

    #[test]
    fn relist_becomes_one_snapshot() {
        let mut t = WatchTranslator::default();
        assert!(t.translate(Event::Init).is_none());
        assert!(t.translate(Event::InitApply(pod("a"))).is_none());
        assert!(t.translate(Event::InitApply(pod("b"))).is_none());
        match t.translate(Event::InitDone) {
            Some(SourceUpdate::Snapshot {
                source: Source::Api,
                pods,
            }) => {
                assert_eq!(names(&pods), ["a", "b"]);
                assert!(pods.iter().all(|p| source_of(p) == Some("api")));
            }
            other => panic!("expected snapshot, got {other:?}"),
        }
        // A second re-list (after 410 Gone) starts from an empty buffer.
        t.translate(Event::Init);
        t.translate(Event::InitApply(pod("c")));
        match t.translate(Event::InitDone) {
            Some(SourceUpdate::Snapshot { pods, .. }) => assert_eq!(names(&pods), ["c"]),
            other => panic!("expected snapshot, got {other:?}"),
        }
    }

    /// A scripted API server behind the kube client (in process, no network): list, watch with
    /// add/bookmark/delete, then 410 Gone, after which the source re-lists into a new snapshot.
    #[tokio::test(start_paused = true)]
    async fn watch_survives_gone_and_relists() {
        use std::collections::VecDeque;
        use std::convert::Infallible;
        use std::sync::{Arc, Mutex};

        fn pod_json(name: &str, rv: u32) -> String {
            format!(
                r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"default","uid":"u-{name}","resourceVersion":"{rv}"}},"spec":{{"nodeName":"node1","containers":[{{"name":"c","image":"busybox"}}]}}}}"#
            )
        }
        fn list(rv: u32, pods: &[String]) -> String {
            format!(
                r#"{{"apiVersion":"v1","kind":"PodList","metadata":{{"resourceVersion":"{rv}"}},"items":[{}]}}"#,
                pods.join(",")
            )
        }
        fn event(kind: &str, object: &str) -> String {
            format!("{{\"type\":\"{kind}\",\"object\":{object}}}\n")
        }

        let gone = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 13 (20)","reason":"Expired","code":410}"#;
        let bookmark = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"12"}}"#;
        // One response per request, in order; None = a watch that stays open.
        let script: VecDeque<Option<String>> = VecDeque::from([
            Some(list(10, &[pod_json("a", 5)])),
            Some(
                event("ADDED", &pod_json("b", 11))
                    + &event("BOOKMARK", bookmark)
                    + &event("DELETED", &pod_json("a", 13)),
            ),
            Some(event("ERROR", gone)),
            Some(list(20, &[pod_json("b", 11), pod_json("c", 19)])),
            None,
        ]);
        let script = Arc::new(Mutex::new(script));
        let requests = Arc::new(Mutex::new(Vec::<String>::new()));
        let (script2, requests2) = (script.clone(), requests.clone());
        let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            requests2.lock().unwrap().push(req.uri().to_string());
            let next = script2.lock().unwrap().pop_front().flatten();
            async move {
                match next {
                    Some(body) => Ok::<_, Infallible>(http::Response::new(kube::client::Body::from(body.into_bytes()))),
                    None => futures::future::pending().await,
                }
            }
        });
        let client = Client::new(svc, "default");
        let (tx, mut rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let task = spawn_api_source(client, "node1".into(), tx, shutdown.clone());

        let mut updates = Vec::new();
        for _ in 0..4 {
            let u = tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv())
                .await
                .unwrap()
                .unwrap();
            updates.push(match u {
                SourceUpdate::Snapshot { pods, .. } => format!("snapshot {:?}", names(&pods)),
                SourceUpdate::Upsert { pod, .. } => format!("upsert {}", pod.metadata.name.as_deref().unwrap()),
                SourceUpdate::Remove { pod, .. } => format!("remove {}", pod.metadata.name.as_deref().unwrap()),
            });
        }
        assert_eq!(
            updates,
            [r#"snapshot ["a"]"#, "upsert b", "remove a", r#"snapshot ["b", "c"]"#]
        );
        let reqs = requests.lock().unwrap().clone();
        assert!(reqs.len() >= 4, "{reqs:?}");
        for r in &reqs {
            assert!(r.starts_with("/api/v1/pods?"), "{r}");
            assert!(r.contains("fieldSelector=spec.nodeName%3Dnode1"), "{r}");
            assert!(!r.contains("sendInitialEvents"), "no streaming lists: {r}");
        }
        assert!(
            reqs[1].contains("watch=true") && reqs[1].contains("allowWatchBookmarks=true"),
            "{}",
            reqs[1]
        );
        assert!(
            reqs[2].contains("resourceVersion=13"),
            "re-watch from the last event: {}",
            reqs[2]
        );
        assert!(!reqs[3].contains("watch=true"), "410 means re-list: {}", reqs[3]);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[test]
    fn empty_relist_is_an_empty_snapshot() {
        let mut t = WatchTranslator::default();
        t.translate(Event::Init);
        match t.translate(Event::InitDone) {
            Some(SourceUpdate::Snapshot { pods, .. }) => assert!(pods.is_empty()),
            other => panic!("expected snapshot, got {other:?}"),
        }
    }

    #[test]
    fn watch_events_are_incremental() {
        let mut t = WatchTranslator::default();
        let mut p = pod("a");
        p.metadata.annotations = Some([("keep".to_string(), "me".to_string())].into());
        match t.translate(Event::Apply(p)) {
            Some(SourceUpdate::Upsert {
                source: Source::Api,
                pod,
            }) => {
                assert_eq!(source_of(&pod), Some("api"));
                assert_eq!(pod.metadata.annotations.as_ref().unwrap()["keep"], "me");
            }
            other => panic!("expected upsert, got {other:?}"),
        }
        match t.translate(Event::Delete(pod("a"))) {
            Some(SourceUpdate::Remove {
                source: Source::Api,
                pod,
            }) => assert_eq!(pod.metadata.name.as_deref(), Some("a")),
            other => panic!("expected remove, got {other:?}"),
        }
    }
}
