//! The real API server tier (support::envtest): a node's registration, status and lease through
//! the Node authorizer and NodeRestriction.

use std::time::Duration;

use crate::support::envtest;
use crate::support::util::*;

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_node_registers_ready() {
    let Some(n) = envtest::start_node(Backend::Sim { time_scale: 10.0 }, &[], "")
        .await
        .unwrap()
    else {
        return;
    };
    let node = get_json(&n.api, &["node", &n.name]).await.unwrap();
    assert_eq!(condition(&node, "Ready").unwrap()["status"], "True");
    let _ = T;
}
