//! Pod logs read with a WebSocket upgrade (client-go's way for streaming readers, and the
//! dashboard's): the API server fetches the log from the node and writes it into the WebSocket.

use std::time::Duration;

use anyhow::{Context, Result};

use super::real_tiers::{tier_test, timeout, Tier, TierNode, CRI, SIM};
use crate::support::envtest::ControlPlane;
use crate::support::rawhttp;
use crate::support::util::*;

tier_test! {
    real_sim_pod_logs_over_websocket => logs_over_websocket(Tier::Real, SIM);
    real_cri_pod_logs_over_websocket => logs_over_websocket(Tier::Real, CRI);
    real_testapi_pod_logs_over_websocket => logs_over_websocket(Tier::Test, SIM);
}

/// Everything the server writes into a WebSocket for `path` until `needle` shows (or 30 s).
async fn ws_read(api: &dyn ControlPlane, path: &str, needle: &str) -> Result<String> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let addr: std::net::SocketAddr = api
        .url()
        .trim_start_matches("https://")
        .parse()
        .context("the server's address")?;
    let ca = std::fs::read_to_string(api.ca_file())?;
    let (cert, key) = api.client_identity("keel-ws-reader", &["system:masters"]);
    let tls = rawhttp::connect(addr, rawhttp::client_config(Some(&ca), Some((&cert, &key)))?).await?;
    let mut req = format!("wss://{addr}{path}").into_client_request()?;
    // The raw bytes in binary frames (kube-apiserver's wsstream reader protocols).
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "binary.k8s.io".parse()?);
    let (mut ws, _) = tokio_tungstenite::client_async(req, tls)
        .await
        .context("WebSocket handshake")?;
    let mut seen = String::new();
    let read = async {
        while let Some(m) = ws.next().await {
            match m? {
                Message::Binary(b) => seen.push_str(&String::from_utf8_lossy(&b)),
                Message::Text(t) => seen.push_str(t.as_str()),
                Message::Close(_) => break,
                _ => continue,
            }
            if seen.contains(needle) {
                break;
            }
        }
        anyhow::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), read).await;
    Ok(seen)
}

async fn logs_over_websocket(tier: Tier, backend: Backend) {
    let Some(n) = TierNode::start(tier, backend, &[], NO_EVICTION).await.unwrap() else {
        return;
    };
    let name = unique("wslogs");
    let script = "echo first line; trap 'exit 0' TERM; while true; do sleep 1; done";
    apply(&n.api, &pod_yaml(&name, &n.name, "Always", script))
        .await
        .unwrap();
    n.wait_running(&name).await;
    wait_for("the line in kubectl logs", timeout(backend), || async {
        let out = n.api.kubectl(&["logs", &name]).await;
        String::from_utf8_lossy(&out.stdout)
            .contains("first line")
            .then_some(())
    })
    .await
    .unwrap();
    for query in ["container=main", "container=main&follow=true"] {
        let path = format!("/api/v1/namespaces/default/pods/{name}/log?{query}");
        let got = ws_read(&*n.api, &path, "first line\n").await.unwrap();
        assert!(
            got.contains("first line\n"),
            "{query}: the WebSocket carried {got:?}\nkeel log:\n{}",
            n.keel.log_tail(30)
        );
    }
    n.finish().await;
}
