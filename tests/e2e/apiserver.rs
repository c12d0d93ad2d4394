//! Tests of the test API server itself, with kube::Client and real kubectl.

use crate::support::apiserver::TestApiServer;

#[tokio::test]
async fn probe_apply() {
    let s = TestApiServer::start().await.unwrap();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p1\n  labels: {app: web}\nspec:\n  containers:\n  - name: c\n    image: busybox\n";
    let out = s.kubectl_stdin(&["apply", "-f", "-", "-v=6"], pod).await;
    println!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let pod2 = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p1\n  labels: {app: web2}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n";
    let out = s.kubectl_stdin(&["apply", "-f", "-", "-v=6"], pod2).await;
    println!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let out = s.kubectl(&["get", "pods", "-o", "wide"]).await;
    println!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let out = s.kubectl(&["delete", "pod", "p1", "-v=6"]).await;
    println!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
