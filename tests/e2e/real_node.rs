//! A node's registration, status and lease under the Node authorizer and NodeRestriction, on the
//! real API server (and the same body on the test API server, which must refuse what it refuses).

use std::time::Duration;

use serde_json::Value;

use super::real_tiers::{tier_test, Tier, TierNode, CRI, SIM};
use crate::support::envtest::ControlPlane;
use crate::support::util::*;

tier_test! {
    real_sim_node_registers_with_status_and_lease => node_registers(Tier::Real, Backend::Sim { time_scale: 10.0 });
    real_cri_node_registers_with_status_and_lease => node_registers(Tier::Real, CRI);
    real_testapi_node_registers_with_status_and_lease => node_registers(Tier::Test, SIM);
}

fn lease_renew_time(l: &Value) -> String {
    l["spec"]["renewTime"].as_str().unwrap_or_default().to_string()
}

async fn node_registers(tier: Tier, backend: Backend) {
    let Some(n) = TierNode::start(tier, backend, &["--node-labels", "tier=edge"], NO_EVICTION)
        .await
        .unwrap()
    else {
        return;
    };
    let node = get_json(&n.api, &["node", &n.name]).await.unwrap();
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], n.name.as_str());
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["tier"], "edge");
    let st = &node["status"];
    for r in ["cpu", "memory", "pods", "ephemeral-storage"] {
        assert!(st["capacity"][r].is_string(), "capacity.{r}: {st}");
        assert!(st["allocatable"][r].is_string(), "allocatable.{r}: {st}");
    }
    let ready = condition(&node, "Ready").unwrap();
    assert_eq!(ready["status"], "True");
    assert_eq!(ready["reason"], "KubeletReady");
    for c in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert_eq!(
            condition(&node, c).unwrap_or_else(|| panic!("{c}: {st}"))["status"],
            "False"
        );
    }
    assert_eq!(st["daemonEndpoints"]["kubeletEndpoint"]["Port"], n.keel.port());
    let hostname = st["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "Hostname")
        .unwrap_or_else(|| panic!("no Hostname address: {st}"));
    assert_eq!(hostname["address"], n.name.as_str());
    let version = st["nodeInfo"]["kubeletVersion"].as_str().unwrap_or_default();
    assert!(!version.is_empty(), "{st}");

    // The lease: held by the node, owned by its Node, renewed (every 10 s of keel's clock).
    let lease_args = ["lease", n.name.as_str(), "-n", "kube-node-lease"];
    let lease = wait_for("the node's lease", Duration::from_secs(30), || async {
        let l = get_json(&n.api, &lease_args).await?;
        l["metadata"]["ownerReferences"][0]["kind"].is_string().then_some(l)
    })
    .await
    .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], n.name.as_str());
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
    let owner = &lease["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Node");
    assert_eq!(owner["name"], n.name.as_str());
    assert_eq!(owner["uid"], node["metadata"]["uid"]);
    let first = lease_renew_time(&lease);
    wait_for("a lease renewal", Duration::from_secs(40), || async {
        let l = get_json(&n.api, &lease_args).await?;
        (lease_renew_time(&l) != first).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(30)));

    // NodeRestriction and the Node authorizer: with the node's own credentials, its own Node
    // may be patched, another node's may not, nor may it read Secrets of pods not bound to it.
    let own = n.api.node_kubeconfig(&n.name);
    let own = own.to_string_lossy();
    let out = n
        .api
        .kubectl(&["--kubeconfig", &own, "get", "node", &n.name, "-o", "name"])
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let other = n.api.new_node_name();
    let out = n
        .api
        .kubectl(&[
            "--kubeconfig",
            &own,
            "label",
            "node",
            &n.name,
            &format!("keel-test/other-{}=x", other.replace('.', "-")),
        ])
        .await;
    assert!(
        out.status.success(),
        "own node: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = unique("secret");
    n.kubectl_ok(&["create", "secret", "generic", &secret, "--from-literal=k=v"])
        .await;
    let mut allowed = Vec::new();
    for args in [
        vec!["create", "namespace", &secret],
        vec!["get", "secret", &secret, "-n", "default"],
        vec!["delete", "lease", &other, "-n", "kube-node-lease"],
    ] {
        let mut a = vec!["--kubeconfig", &*own];
        a.extend(args.iter().copied());
        let out = n.api.kubectl(&a).await;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !err.contains("forbidden") {
            allowed.push(format!("{args:?}: {err}"));
        }
    }
    let _ = n.api.kubectl(&["delete", "namespace", &secret, "--wait=false"]).await;
    assert!(
        allowed.is_empty(),
        "the node's credentials must be Forbidden for: {allowed:#?}"
    );
    n.kubectl_ok(&["delete", "secret", &secret]).await;
    let logs = n.keel.logs();
    assert!(!logs.contains("panicked"), "keel panicked:\n{logs}");
    n.finish().await;
}
