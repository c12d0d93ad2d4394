//! Secrets, ConfigMaps and the projected service-account token under the Node authorizer: a node
//! reads only what the pods bound to it reference; on a real server the token comes from the
//! TokenRequest API and the CA from the controller-manager's `kube-root-ca.crt`.

use super::real_tiers::{tier_test, timeout, Tier, TierNode, CRI, SIM};
use crate::support::util::*;

tier_test! {
    real_sim_secret_configmap_and_token_volumes => secret_configmap_and_token(Tier::Real, SIM);
    real_cri_secret_configmap_and_token_volumes => secret_configmap_and_token(Tier::Real, CRI);
    real_testapi_secret_configmap_and_token_volumes => secret_configmap_and_token(Tier::Test, SIM);
}

/// The payload of a JWT (unpadded base64url), parsed.
fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token
        .split('.')
        .nth(1)
        .unwrap_or_else(|| panic!("not a JWT: {token:?}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .unwrap_or_else(|e| panic!("JWT payload {payload:?}: {e}"));
    serde_json::from_slice(&bytes).unwrap()
}

async fn secret_configmap_and_token(tier: Tier, backend: Backend) {
    let Some(n) = TierNode::start(tier, backend, &[], NO_EVICTION).await.unwrap() else {
        return;
    };
    let (secret, cm, name) = (unique("sec"), unique("cm"), unique("vols"));
    n.kubectl_ok(&["create", "secret", "generic", &secret, "--from-literal=password=s3cret"])
        .await;
    n.kubectl_ok(&["create", "configmap", &cm, "--from-literal=greeting=hello-cm"])
        .await;
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    let script = format!(
        "echo secret=$(cat /etc/sec/password); echo env=$GREETING; echo ns=$(cat {sa}/namespace); \
         echo token=$(cat {sa}/token); echo ca=$(grep -c BEGIN {sa}/ca.crt); \
         trap 'exit 0' TERM; while true; do sleep 1; done"
    );
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  volumes:
  - name: sec
    secret: {{secretName: {secret}}}
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", {script:?}]
    env:
    - name: GREETING
      valueFrom:
        configMapKeyRef: {{name: {cm}, key: greeting}}
    volumeMounts:
    - {{name: sec, mountPath: /etc/sec}}
"#,
        node = n.name
    );
    apply(&n.api, &manifest).await.unwrap();
    let p = n.wait_running(&name).await;
    // The server's ServiceAccount admission added the token volume.
    let vols = p["spec"]["volumes"].as_array().unwrap();
    assert!(
        vols.iter()
            .any(|v| v["name"].as_str().is_some_and(|n| n.starts_with("kube-api-access-"))),
        "{vols:?}"
    );
    let logs = wait_for("the container's report", timeout(backend), || async {
        let out = n.api.kubectl(&["logs", &name]).await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("ca=").then_some(text)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    assert!(logs.contains("secret=s3cret\n"), "{logs}");
    assert!(logs.contains("env=hello-cm\n"), "{logs}");
    assert!(logs.contains("ns=default\n"), "{logs}");
    assert!(logs.contains("ca=1\n"), "{logs}");
    let token = logs
        .lines()
        .find_map(|l| l.strip_prefix("token="))
        .unwrap_or_else(|| panic!("{logs}"));
    let claims = jwt_claims(token);
    assert_eq!(claims["sub"], "system:serviceaccount:default:default", "{claims}");
    assert_eq!(claims["kubernetes.io"]["pod"]["name"], name.as_str(), "{claims}");
    assert_eq!(claims["kubernetes.io"]["pod"]["uid"], p["metadata"]["uid"], "{claims}");
    n.finish().await;
}
