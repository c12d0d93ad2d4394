//! Static pods and their mirror pods on a real API server: NodeRestriction lets a node create a
//! mirror pod only for itself, annotated and owned by its Node.

use std::time::Duration;

use super::real_tiers::{tier_test, timeout, Tier, TierNode, CRI, SIM};
use crate::support::util::*;

tier_test! {
    real_sim_static_pod_and_mirror => static_pod_and_mirror(Tier::Real, SIM);
    real_cri_static_pod_and_mirror => static_pod_and_mirror(Tier::Real, CRI);
    real_testapi_static_pod_and_mirror => static_pod_and_mirror(Tier::Test, SIM);
}

async fn static_pod_and_mirror(tier: Tier, backend: Backend) {
    let manifests = tempfile::tempdir().unwrap();
    std::fs::write(
        manifests.path().join("static-web.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: static-web\n  namespace: default\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: web\n    image: busybox:1.36\n    command: [sh, -c, \"trap 'exit 0' TERM; echo static up; while true; do sleep 1; done\"]\n",
    )
    .unwrap();
    let path = manifests.path().to_string_lossy().into_owned();
    let Some(n) = TierNode::start(tier, backend, &["--pod-manifest-path", &path], NO_EVICTION)
        .await
        .unwrap()
    else {
        return;
    };
    let t = timeout(backend);
    let mirror = format!("static-web-{}", n.name);
    let m = n
        .wait_pod(&mirror, "mirror pod Running", t, |p| phase(p) == "Running")
        .await
        .unwrap();
    let ann = &m["metadata"]["annotations"];
    assert!(ann["kubernetes.io/config.mirror"].is_string(), "{ann}");
    assert_eq!(ann["kubernetes.io/config.source"], "file", "{ann}");
    let node = get_json(&n.api, &["node", &n.name]).await.unwrap();
    let owner = &m["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Node", "{m}");
    assert_eq!(owner["uid"], node["metadata"]["uid"]);
    assert_eq!(m["spec"]["nodeName"], n.name.as_str());
    let logs = n.kubectl_ok(&["logs", &mirror]).await;
    assert!(logs.contains("static up"), "{logs:?}");

    // Deleting the mirror pod does not stop the static pod; keel creates a new mirror.
    let old_uid = m["metadata"]["uid"].as_str().unwrap().to_string();
    n.kubectl_ok(&["delete", "pod", &mirror, "--grace-period=0", "--force"])
        .await;
    let m = n
        .wait_pod(&mirror, "mirror recreated", t, |p| {
            p["metadata"]["uid"].as_str() != Some(old_uid.as_str()) && phase(p) == "Running"
        })
        .await
        .unwrap();
    assert_eq!(
        m["status"]["containerStatuses"][0]["restartCount"], 0,
        "deleting the mirror does not restart the static pod"
    );
    // Removing the file stops the pod and deletes its mirror.
    std::fs::remove_file(manifests.path().join("static-web.yaml")).unwrap();
    wait_for("mirror gone", Duration::from_secs(60), || async {
        n.pod(&mirror).await.is_none().then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    n.finish().await;
}
