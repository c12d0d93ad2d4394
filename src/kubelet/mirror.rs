//! Mirror pods (§3.5): the API-server copies of static pods, so a static pod is visible (and its
//! status reported) through the API. Predicates over pods and the client that creates and
//! deletes mirror pods (`pkg/kubelet/pod/mirror_client.go`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client};

use super::sources::{Source, CONFIG_HASH_ANNOTATION, CONFIG_MIRROR_ANNOTATION, CONFIG_SOURCE_ANNOTATION};

/// Errors of the mirror pod client.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("static pod {full_name} has no {CONFIG_HASH_ANNOTATION} annotation")]
    MissingHash { full_name: String },
    #[error("creating mirror pod {full_name}: {source}")]
    Create {
        full_name: String,
        #[source]
        source: kube::Error,
    },
    #[error("mirror pod {full_name} already exists with hash {existing:?}, want {want:?}")]
    ExistsWithOtherHash {
        full_name: String,
        existing: Option<String>,
        want: String,
    },
    #[error("reading existing mirror pod {full_name}: {source}")]
    GetExisting {
        full_name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting mirror pod {full_name}: {source}")]
    Delete {
        full_name: String,
        #[source]
        source: kube::Error,
    },
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

/// A static pod: its source annotation is present and is not `api`.
pub fn is_static_pod(pod: &Pod) -> bool {
    annotation(pod, CONFIG_SOURCE_ANNOTATION).is_some_and(|s| s != Source::Api.as_str())
}

/// A mirror pod: it carries `kubernetes.io/config.mirror`.
pub fn is_mirror_pod(pod: &Pod) -> bool {
    annotation(pod, CONFIG_MIRROR_ANNOTATION).is_some()
}

/// The static pod's `kubernetes.io/config.hash` (its UID).
pub fn static_pod_hash(pod: &Pod) -> Option<&str> {
    annotation(pod, CONFIG_HASH_ANNOTATION)
}

/// The mirror pod's `kubernetes.io/config.mirror` (the hash of the static pod it mirrors).
pub fn mirror_pod_hash(pod: &Pod) -> Option<&str> {
    annotation(pod, CONFIG_MIRROR_ANNOTATION)
}

/// `<name>_<namespace>`, the kubelet's pod full name (static and mirror pods share it).
pub fn pod_full_name(pod: &Pod) -> String {
    format!(
        "{}_{}",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or("")
    )
}

/// True if `mirror` is a current mirror of `static_pod`: same hash and not being deleted (§3.5).
pub fn mirror_matches(static_pod: &Pod, mirror: &Pod) -> bool {
    mirror.metadata.deletion_timestamp.is_none()
        && static_pod_hash(static_pod).is_some()
        && mirror_pod_hash(mirror) == static_pod_hash(static_pod)
}

/// The mirror pod object for a static pod: name, namespace, labels and annotations copied, plus
/// `config.mirror = <hash>` and the Node as controlling owner; the spec as is; no UID,
/// resourceVersion or status (the API server assigns them; the status manager writes status).
pub fn build_mirror_pod(static_pod: &Pod, node_name: &str, node_uid: &str) -> Result<Pod, MirrorError> {
    let hash = static_pod_hash(static_pod).ok_or_else(|| MirrorError::MissingHash {
        full_name: pod_full_name(static_pod),
    })?;
    let mut annotations: BTreeMap<String, String> = static_pod.metadata.annotations.clone().unwrap_or_default();
    annotations.insert(CONFIG_MIRROR_ANNOTATION.to_string(), hash.to_string());
    Ok(Pod {
        metadata: ObjectMeta {
            name: static_pod.metadata.name.clone(),
            namespace: static_pod.metadata.namespace.clone(),
            labels: static_pod.metadata.labels.clone(),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".to_string(),
                kind: "Node".to_string(),
                name: node_name.to_string(),
                uid: node_uid.to_string(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        },
        spec: static_pod.spec.clone(),
        status: None,
    })
}

/// Creates and deletes mirror pods through the API.
#[derive(Clone)]
pub struct MirrorClient {
    client: Client,
}

impl MirrorClient {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    fn pods(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Creates the mirror pod of `static_pod`. An existing mirror pod with the same hash counts as
    /// success (another sync got there first); one with another hash is an error (the caller
    /// deletes stale mirrors first).
    pub async fn create_mirror_pod(
        &self,
        static_pod: &Pod,
        node_name: &str,
        node_uid: &str,
    ) -> Result<(), MirrorError> {
        let mirror = build_mirror_pod(static_pod, node_name, node_uid)?;
        let full_name = pod_full_name(&mirror);
        let namespace = mirror
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let api = self.pods(&namespace);
        let err = match api.create(&PostParams::default(), &mirror).await {
            Ok(_) => return Ok(()),
            Err(err) => err,
        };
        let already_exists = matches!(&err, kube::Error::Api(s) if s.is_already_exists());
        if !already_exists {
            return Err(MirrorError::Create { full_name, source: err });
        }
        let name = mirror.metadata.name.clone().unwrap_or_default();
        let existing = api.get(&name).await.map_err(|source| MirrorError::GetExisting {
            full_name: full_name.clone(),
            source,
        })?;
        let want = mirror_pod_hash(&mirror).unwrap_or_default().to_string();
        match mirror_pod_hash(&existing) {
            Some(h) if h == want => Ok(()),
            other => Err(MirrorError::ExistsWithOtherHash {
                full_name,
                existing: other.map(str::to_string),
                want,
            }),
        }
    }

    /// Deletes a mirror pod at once (grace 0), only if it still has `uid` when one is given.
    /// Returns whether it was deleted: a pod already gone (NotFound) or replaced (UID precondition
    /// Conflict) is not an error, as in the kubelet.
    pub async fn delete_mirror_pod(&self, namespace: &str, name: &str, uid: Option<&str>) -> Result<bool, MirrorError> {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: uid.map(|uid| Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.pods(namespace).delete(name, &params).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(false),
            Err(source) => Err(MirrorError::Delete {
                full_name: format!("{name}_{namespace}"),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod_with(annotations: &[(&str, &str)]) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("web-node1".into());
        p.metadata.namespace = Some("default".into());
        if !annotations.is_empty() {
            p.metadata.annotations = Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
        }
        p
    }

    #[test]
    fn predicates() {
        let api = pod_with(&[(CONFIG_SOURCE_ANNOTATION, "api")]);
        let file = pod_with(&[(CONFIG_SOURCE_ANNOTATION, "file"), (CONFIG_HASH_ANNOTATION, "h1")]);
        let http = pod_with(&[(CONFIG_SOURCE_ANNOTATION, "http")]);
        let plain = pod_with(&[]);
        let mirror = pod_with(&[(CONFIG_MIRROR_ANNOTATION, "h1"), (CONFIG_SOURCE_ANNOTATION, "api")]);
        assert!(!is_static_pod(&api));
        assert!(is_static_pod(&file));
        assert!(is_static_pod(&http));
        assert!(!is_static_pod(&plain), "no source annotation: not static");
        assert!(!is_static_pod(&mirror));
        assert!(is_mirror_pod(&mirror));
        assert!(!is_mirror_pod(&file));
        assert_eq!(static_pod_hash(&file), Some("h1"));
        assert_eq!(static_pod_hash(&plain), None);
        assert_eq!(mirror_pod_hash(&mirror), Some("h1"));
        assert_eq!(mirror_pod_hash(&file), None);
        assert_eq!(pod_full_name(&file), "web-node1_default");
        assert!(mirror_matches(&file, &mirror));
        let other = pod_with(&[(CONFIG_MIRROR_ANNOTATION, "h2")]);
        assert!(!mirror_matches(&file, &other));
        let mut deleting = mirror.clone();
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        assert!(!mirror_matches(&file, &deleting));
        assert!(!mirror_matches(&plain, &pod_with(&[])), "no hash on either side");
    }

    #[test]
    fn mirror_object_shape() {
        let mut s = pod_with(&[
            (CONFIG_SOURCE_ANNOTATION, "file"),
            (CONFIG_HASH_ANNOTATION, "abc123"),
            ("team", "x"),
        ]);
        s.metadata.uid = Some("abc123".into());
        s.metadata.resource_version = Some("7".into());
        s.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        s.spec = Some(PodSpec {
            node_name: Some("node1".into()),
            containers: vec![Container {
                name: "c".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        s.status = Some(PodStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        });
        let m = build_mirror_pod(&s, "node1", "node-uid-1").unwrap();
        assert_eq!(m.metadata.name.as_deref(), Some("web-node1"));
        assert_eq!(m.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(m.metadata.labels, s.metadata.labels);
        let ann = m.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[CONFIG_MIRROR_ANNOTATION], "abc123");
        assert_eq!(ann[CONFIG_HASH_ANNOTATION], "abc123");
        assert_eq!(ann["team"], "x");
        assert!(is_mirror_pod(&m));
        assert_eq!(
            m.metadata.owner_references,
            Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: "node1".into(),
                uid: "node-uid-1".into(),
                controller: Some(true),
                block_owner_deletion: None,
            }])
        );
        assert_eq!(m.spec, s.spec);
        assert!(m.metadata.uid.is_none());
        assert!(m.metadata.resource_version.is_none());
        assert!(m.status.is_none());
    }

    /// A scripted API server: (status code, body) per request; records method, URI and body.
    fn scripted_client(responses: Vec<(u16, String)>) -> (MirrorClient, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use std::collections::VecDeque;
        use std::sync::{Arc, Mutex};
        let script = Arc::new(Mutex::new(VecDeque::from(responses)));
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let (code, body) = script.lock().unwrap().pop_front().unwrap_or((500, String::new()));
            let log = log2.clone();
            async move {
                let line = format!("{} {}", req.method(), req.uri());
                let sent = req.into_body().collect_bytes().await.unwrap_or_default();
                log.lock()
                    .unwrap()
                    .push(format!("{line} {}", String::from_utf8_lossy(&sent)));
                let resp = http::Response::builder()
                    .status(code)
                    .body(kube::client::Body::from(body.into_bytes()))
                    .unwrap();
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        (MirrorClient::new(Client::new(svc, "default")), log)
    }

    fn status(code: u16, reason: &str) -> String {
        format!(
            r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"x","reason":"{reason}","code":{code}}}"#
        )
    }

    fn static_pod() -> Pod {
        let mut s = pod_with(&[(CONFIG_SOURCE_ANNOTATION, "file"), (CONFIG_HASH_ANNOTATION, "h1")]);
        s.spec = Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        s
    }

    fn existing(hash: &str) -> String {
        let mut m = static_pod();
        m.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(CONFIG_MIRROR_ANNOTATION.into(), hash.into());
        m.metadata.uid = Some("api-uid".into());
        serde_json::to_string(&m).unwrap()
    }

    #[tokio::test]
    async fn create_mirror_pod_requests() {
        let created = existing("h1");
        let (mc, log) = scripted_client(vec![(201, created.clone())]);
        mc.create_mirror_pod(&static_pod(), "node1", "nuid").await.unwrap();
        let log = log.lock().unwrap().clone();
        assert_eq!(log.len(), 1);
        assert!(
            log[0].starts_with("POST /api/v1/namespaces/default/pods?"),
            "{}",
            log[0]
        );
        assert!(log[0].contains(r#""kubernetes.io/config.mirror":"h1""#), "{}", log[0]);
        assert!(log[0].contains(r#""kind":"Node""#), "{}", log[0]);

        // AlreadyExists with the same hash is success; with another hash an error.
        let (mc, log) = scripted_client(vec![(409, status(409, "AlreadyExists")), (200, created)]);
        mc.create_mirror_pod(&static_pod(), "node1", "nuid").await.unwrap();
        assert!(log.lock().unwrap()[1].starts_with("GET /api/v1/namespaces/default/pods/web-node1"));
        let (mc, _) = scripted_client(vec![(409, status(409, "AlreadyExists")), (200, existing("old"))]);
        let err = mc.create_mirror_pod(&static_pod(), "node1", "nuid").await.unwrap_err();
        assert!(matches!(err, MirrorError::ExistsWithOtherHash { .. }), "{err}");
        let (mc, _) = scripted_client(vec![(403, status(403, "Forbidden"))]);
        let err = mc.create_mirror_pod(&static_pod(), "node1", "nuid").await.unwrap_err();
        assert!(matches!(err, MirrorError::Create { .. }), "{err}");
    }

    #[tokio::test]
    async fn delete_mirror_pod_requests() {
        let (mc, log) = scripted_client(vec![(200, existing("h1"))]);
        assert!(mc
            .delete_mirror_pod("default", "web-node1", Some("api-uid"))
            .await
            .unwrap());
        let line = log.lock().unwrap()[0].clone();
        assert!(
            line.starts_with("DELETE /api/v1/namespaces/default/pods/web-node1"),
            "{line}"
        );
        assert!(line.contains(r#""gracePeriodSeconds":0"#), "{line}");
        assert!(line.contains(r#""preconditions":{"uid":"api-uid"}"#), "{line}");

        let (mc, _) = scripted_client(vec![(404, status(404, "NotFound"))]);
        assert!(!mc.delete_mirror_pod("default", "web-node1", None).await.unwrap());
        let (mc, _) = scripted_client(vec![(409, status(409, "Conflict"))]);
        assert!(!mc
            .delete_mirror_pod("default", "web-node1", Some("other"))
            .await
            .unwrap());
        let (mc, _) = scripted_client(vec![(500, status(500, "InternalError"))]);
        let err = mc.delete_mirror_pod("default", "web-node1", None).await.unwrap_err();
        assert!(matches!(err, MirrorError::Delete { .. }), "{err}");
    }

    #[test]
    fn mirror_needs_a_hash() {
        let s = pod_with(&[(CONFIG_SOURCE_ANNOTATION, "file")]);
        assert!(matches!(
            build_mirror_pod(&s, "n", "u"),
            Err(MirrorError::MissingHash { .. })
        ));
    }
}
