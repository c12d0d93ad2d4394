//! Tests of the test API server itself, with kube::Client and real kubectl.

use crate::support::apiserver::TestApiServer;

#[tokio::test]
async fn starts_and_lists_namespaces() {
    let s = TestApiServer::start().await.unwrap();
    let out = s.kubectl(&["get", "ns", "-v=6"]).await;
    println!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
}
