//! `/pods` and `/runningpods/` (kubelet-api-protocols.md §5.3): `v1.PodList` envelopes of the
//! kubelet's pods and of what the runtime runs.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{header, StatusCode};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tracing::warn;

use super::AppState;
use crate::genericruntime::{cri, ContainerState, RunningPod};
use crate::kubelet::mirror::is_static_pod;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/pods", get(pods))
        .route("/runningpods/", get(running_pods))
}

/// The pod manager's pods; a static pod carries the status manager's status (without an API
/// server nobody else holds it).
async fn pods(State(state): State<AppState>) -> Response {
    let core = &state.core;
    let pods: Vec<Pod> = core
        .pods()
        .into_iter()
        .map(|mut p| {
            if is_static_pod(&p) {
                if let Some(s) = p.metadata.uid.as_deref().and_then(|u| core.status.get_pod_status(u)) {
                    p.status = Some(s);
                }
            }
            p
        })
        .collect();
    pod_list(&pods)
}

/// Pods as the runtime sees them (running containers of ready sandboxes): name, namespace, UID,
/// container names and images only.
async fn running_pods(State(state): State<AppState>) -> Response {
    let core = &state.core;
    let running = match core.manager.get_pods(false).await {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "listing running pods for /runningpods");
            return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
        }
    };
    // RunningPod has container IDs and names; the images come from the runtime's container
    // list, as the kubelet's GetPods fills them.
    let filter = cri::ContainerFilter {
        state: Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerRunning as i32,
        }),
        ..Default::default()
    };
    let listed = match core
        .manager
        .runtime()
        .list_containers(cri::ListContainersRequest { filter: Some(filter) })
        .await
    {
        Ok(r) => r.containers,
        Err(e) => {
            warn!(error = %e, "listing containers for /runningpods");
            return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
        }
    };
    let images: HashMap<&str, &str> = listed
        .iter()
        .filter_map(|c| {
            // The image as the pod named it when the runtime kept it; else what it runs (an ID).
            let spec = c.image.as_ref()?;
            let image = if spec.user_specified_image.is_empty() {
                &spec.image
            } else {
                &spec.user_specified_image
            };
            Some((c.id.as_str(), image.as_str()))
        })
        .collect();
    let pods: Vec<Pod> = running.iter().map(|rp| running_pod(rp, &images)).collect();
    pod_list(&pods)
}

fn running_pod(rp: &RunningPod, images: &HashMap<&str, &str>) -> Pod {
    let containers = rp
        .containers
        .iter()
        .filter(|c| c.state == ContainerState::Running)
        .map(|c| Container {
            name: c.name.clone(),
            image: images.get(c.id.as_str()).map(|i| i.to_string()),
            ..Default::default()
        })
        .collect();
    Pod {
        metadata: ObjectMeta {
            name: Some(rp.name.clone()),
            namespace: Some(rp.namespace.clone()),
            uid: Some(rp.uid.clone()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            ..Default::default()
        }),
        status: None,
    }
}

/// `{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[...]}`; `items` is `null` when
/// empty and the items carry no kind/apiVersion, as the kubelet's legacy codec writes them.
pub fn pod_list_json(pods: &[Pod]) -> serde_json::Value {
    let items: Vec<serde_json::Value> = pods
        .iter()
        .filter_map(|p| {
            let mut v = serde_json::to_value(p).ok()?;
            if let Some(o) = v.as_object_mut() {
                o.remove("kind");
                o.remove("apiVersion");
            }
            Some(v)
        })
        .collect();
    serde_json::json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": if items.is_empty() { serde_json::Value::Null } else { serde_json::Value::Array(items) },
    })
}

fn pod_list(pods: &[Pod]) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        pod_list_json(pods).to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genericruntime::RuntimeObject;

    #[test]
    fn empty_list_has_null_items() {
        assert_eq!(
            pod_list_json(&[]).to_string(),
            r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":null}"#
        );
    }

    #[test]
    fn items_without_kind() {
        let p = Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("1111-2222".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let v = pod_list_json(&[p]);
        assert_eq!(v["items"][0]["metadata"]["name"], "web");
        assert!(v["items"][0].get("kind").is_none());
        assert!(v["items"][0].get("apiVersion").is_none());
    }

    #[test]
    fn running_pod_from_runtime_view() {
        let obj = |id: &str, name: &str, state| RuntimeObject {
            id: id.into(),
            name: name.into(),
            state,
            created_at: 0,
        };
        let rp = RunningPod {
            uid: "u1".into(),
            name: "web".into(),
            namespace: "ns".into(),
            containers: vec![
                obj("c1", "nginx", ContainerState::Running),
                obj("c0", "old", ContainerState::Exited),
            ],
            sandboxes: vec![obj("s1", "", ContainerState::Running)],
        };
        let images = HashMap::from([("c1", "nginx:1.27")]);
        let p = running_pod(&rp, &images);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["metadata"]["uid"], "u1");
        assert_eq!(
            v["spec"]["containers"],
            serde_json::json!([{"name": "nginx", "image": "nginx:1.27"}])
        );
    }
}
