//! Pod sources and mirror pods against the test API server: the API source's snapshot and
//! incremental updates, its recovery from an outage with compacted history, and the mirror pod
//! client's create/delete semantics.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use keel::kubelet::mirror::{self, MirrorClient, MirrorError};
use keel::kubelet::sources::api::spawn_api_source;
use keel::kubelet::sources::file::{decode_manifest, make_static_pod};
use keel::kubelet::sources::{Source, SourceUpdate, CONFIG_MIRROR_ANNOTATION, CONFIG_SOURCE_ANNOTATION};

use crate::support::apiserver::TestApiServer;

const WAIT: Duration = Duration::from_secs(30);

fn pod_on(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox:1.36"}]},
    }))
    .unwrap()
}

/// The API source's view, rebuilt from its updates (name → pod).
#[derive(Default)]
struct View {
    pods: BTreeMap<String, Pod>,
    snapshots: usize,
}

impl View {
    fn apply(&mut self, u: SourceUpdate) {
        assert_eq!(u.source(), Source::Api);
        let name = |p: &Pod| p.metadata.name.clone().unwrap();
        match u {
            SourceUpdate::Snapshot { pods, .. } => {
                self.snapshots += 1;
                self.pods = pods.into_iter().map(|p| (name(&p), p)).collect();
            }
            SourceUpdate::Upsert { pod, .. } => {
                self.pods.insert(name(&pod), *pod);
            }
            SourceUpdate::Remove { pod, .. } => {
                self.pods.remove(&name(&pod));
            }
        }
        for p in self.pods.values() {
            let ann = p.metadata.annotations.as_ref().unwrap();
            assert_eq!(ann[CONFIG_SOURCE_ANNOTATION], "api");
        }
    }

    fn names(&self) -> Vec<&str> {
        self.pods.keys().map(String::as_str).collect()
    }

    /// Applies updates until the view holds exactly `want`.
    async fn wait_for(&mut self, rx: &mut mpsc::Receiver<SourceUpdate>, want: &[&str]) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.names() != want {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(u)) => self.apply(u),
                Ok(None) => panic!("API source stopped; view {:?}, want {want:?}", self.names()),
                Err(_) => panic!("timed out; view {:?}, want {want:?}", self.names()),
            }
        }
    }
}

#[tokio::test]
async fn api_source_follows_node_pods_through_outage_and_compaction() {
    let s = TestApiServer::start().await.unwrap();
    let client = s.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    pods.create(&pp, &pod_on("a", "src-n1")).await.unwrap();
    pods.create(&pp, &pod_on("other", "src-n2")).await.unwrap();

    let (tx, mut rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let task = spawn_api_source(client.clone(), "src-n1".into(), tx, shutdown.clone());

    // The first update is the snapshot: only this node's pods.
    let first = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
    let mut view = View::default();
    assert!(matches!(first, SourceUpdate::Snapshot { .. }), "{first:?}");
    view.apply(first);
    assert_eq!(view.names(), ["a"]);

    pods.create(&pp, &pod_on("b", "src-n1")).await.unwrap();
    view.wait_for(&mut rx, &["a", "b"]).await;
    pods.delete("a", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    view.wait_for(&mut rx, &["b"]).await;

    // Outage with compacted history: the watch ends, retries, and either resumes or re-lists.
    pods.create(&pp, &pod_on("other2", "src-n2")).await.unwrap();
    s.compact();
    s.set_available(false);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.set_available(true);
    pods.create(&pp, &pod_on("c", "src-n1")).await.unwrap();
    view.wait_for(&mut rx, &["b", "c"]).await;

    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}

fn static_pod(image: &str) -> Pod {
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels:\n    app: web\nspec:\n  containers:\n  - name: c\n    image: {image}\n"
    );
    let path = Path::new("/etc/keel/manifests/web.yaml");
    make_static_pod(decode_manifest(path, yaml.as_bytes()).unwrap(), path, "mirror-n1").unwrap()
}

#[tokio::test]
async fn mirror_pods_are_created_and_deleted_like_the_kubelet_does() {
    let s = TestApiServer::start().await.unwrap();
    let client = s.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node =
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "mirror-n1"}})).unwrap();
    let node = nodes.create(&PostParams::default(), &node).await.unwrap();
    let node_uid = node.metadata.uid.clone().unwrap();

    let st = static_pod("busybox:1.36");
    let mc = MirrorClient::new(client.clone());
    mc.create_mirror_pod(&st, "mirror-n1", &node_uid).await.unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let m = pods.get("web-mirror-n1").await.unwrap();
    assert!(mirror::is_mirror_pod(&m));
    assert_eq!(mirror::mirror_pod_hash(&m), mirror::static_pod_hash(&st));
    assert!(mirror::mirror_matches(&st, &m));
    assert_ne!(
        m.metadata.uid, st.metadata.uid,
        "the API server assigns the mirror pod's UID"
    );
    let owner = &m.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Node", "mirror-n1", node_uid.as_str())
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!(m.metadata.labels.as_ref().unwrap()["app"], "web");
    assert_eq!(m.spec.as_ref().unwrap().node_name.as_deref(), Some("mirror-n1"));

    // Creating it again with the same hash is fine; a changed static pod conflicts until the old
    // mirror is deleted.
    mc.create_mirror_pod(&st, "mirror-n1", &node_uid).await.unwrap();
    let updated = static_pod("busybox:1.37");
    assert_ne!(mirror::static_pod_hash(&updated), mirror::static_pod_hash(&st));
    let err = mc
        .create_mirror_pod(&updated, "mirror-n1", &node_uid)
        .await
        .unwrap_err();
    assert!(matches!(err, MirrorError::ExistsWithOtherHash { .. }), "{err}");

    // UID precondition: a stale UID deletes nothing.
    assert!(!mc
        .delete_mirror_pod("default", "web-mirror-n1", Some("not-the-uid"))
        .await
        .unwrap());
    assert!(pods.get_opt("web-mirror-n1").await.unwrap().is_some());
    let uid = m.metadata.uid.clone().unwrap();
    assert!(mc
        .delete_mirror_pod("default", "web-mirror-n1", Some(&uid))
        .await
        .unwrap());
    assert!(
        pods.get_opt("web-mirror-n1").await.unwrap().is_none(),
        "grace 0 removes it at once"
    );
    assert!(
        !mc.delete_mirror_pod("default", "web-mirror-n1", None).await.unwrap(),
        "NotFound is not an error"
    );

    // Recreated for the new hash, with a new UID.
    mc.create_mirror_pod(&updated, "mirror-n1", &node_uid).await.unwrap();
    let m2 = pods.get("web-mirror-n1").await.unwrap();
    assert_ne!(m2.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(
        m2.metadata.annotations.as_ref().unwrap()[CONFIG_MIRROR_ANNOTATION],
        mirror::static_pod_hash(&updated).unwrap()
    );
}
