//! A thousand pods on one simulated node, created through the API the way a controller would.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};

use crate::support::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_pods_on_one_simulated_node_all_run() {
    const N: usize = 1000;
    let n = Node::start(1.0, &["--max-pods", "2000"]).await.unwrap();
    let client = n.api.client().await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let template: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "x", "namespace": "default", "labels": {"app": "scale"}},
        "spec": {"nodeName": n.name, "containers": [{"name": "c", "image": "busybox:1.36", "command": ["sh", "-c", "sleep 3600"]}]}
    }))
    .unwrap();
    for i in 0..N {
        let mut p = template.clone();
        p.metadata.name = Some(format!("scale-{i:04}"));
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    let lp = ListParams::default().labels("app=scale");
    let r = wait_for("all pods Running", Duration::from_secs(240), || async {
        let list = pods.list(&lp).await.ok()?;
        let running = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        (running == N).then_some(())
    })
    .await;
    if let Err(e) = r {
        let list = pods.list(&lp).await.unwrap();
        let running = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        panic!("{e}: {running}/{N} running\n{}", n.keel.log_tail(30));
    }
    // Every pod got its own sandbox IP and a ready container.
    let list = pods.list(&lp).await.unwrap();
    let mut ips: Vec<String> = list
        .items
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), N, "distinct pod IPs");
}
