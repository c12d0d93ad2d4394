//! Pod events through the test API server as a kubelet user reads them: core/v1 Events from
//! source `kubelet`/<node> in `kubectl get events` and `kubectl describe pod`
//! (Pulling → Pulled → Created → Started), and a repeated BackOff folded into one Event whose
//! count grows (client-go's correlator) instead of one object per occurrence.

use std::time::Duration;

use serde_json::Value;

use crate::support::util::*;

const T: Duration = Duration::from_secs(60);

fn count(e: &Value) -> i64 {
    e["count"].as_i64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_story_and_repeated_backoff_in_kubectl_get_events_and_describe() {
    // Scale 20: the crash loop's back-off (10 s, 20 s, 40 s …) passes quickly.
    let n = Node::start(20.0, &[]).await.unwrap();
    let name = unique("story");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: Always
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: ok, image: busybox:1.36, command: [sh, -c, "while true; do sleep 1; done"]}}
  - {{name: crash, image: busybox:1.36, command: [sh, -c, "exit 3"]}}
"#,
        node = n.name
    );
    apply(&n.api, &manifest).await.unwrap();
    let backoff = wait_for("a BackOff event with count > 1", T, || async {
        let evs = events_about(&n.api, &name).await;
        evs.into_iter().find(|e| e["reason"] == "BackOff" && count(e) > 1)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n.keel.log_tail(40)));
    assert_eq!(backoff["apiVersion"], "v1");
    assert_eq!(backoff["type"], "Warning");
    assert_eq!(backoff["source"]["component"], "kubelet");
    assert_eq!(backoff["source"]["host"], n.name.as_str());
    assert_eq!(backoff["reportingComponent"], "kubelet");
    assert_eq!(backoff["reportingInstance"], n.name.as_str());
    assert_eq!(backoff["involvedObject"]["kind"], "Pod");
    assert_eq!(backoff["involvedObject"]["apiVersion"], "v1");
    assert_eq!(backoff["involvedObject"]["fieldPath"], "spec.containers{crash}");
    assert!(backoff["involvedObject"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(backoff["involvedObject"]["resourceVersion"].is_string(), "{backoff}");
    assert!(
        backoff["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Back-off restarting failed container")),
        "{backoff}"
    );
    // Whole seconds on the wire: the repeat may fall in the same one.
    assert!(
        backoff["firstTimestamp"].as_str() <= backoff["lastTimestamp"].as_str(),
        "{backoff}"
    );
    let evs = events_about(&n.api, &name).await;
    // Repeats are one object, not one per occurrence.
    assert_eq!(evs.iter().filter(|e| e["reason"] == "BackOff").count(), 1, "{evs:?}");
    for reason in ["Pulled", "Created", "Started"] {
        assert!(
            evs.iter()
                .any(|e| e["reason"] == reason && e["involvedObject"]["fieldPath"] == "spec.containers{ok}"),
            "no {reason} event for container ok: {evs:?}"
        );
    }
    // What a user sees.
    let out = n.api.kubectl(&["get", "events", "-n", "default"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains(&format!("pod/{name}")) && text.contains("BackOff"),
        "{text}"
    );
    let out = n.api.kubectl(&["describe", "pod", &name, "-n", "default"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events = text.split("Events:").nth(1).unwrap_or_default();
    for reason in ["Pulled", "Created", "Started", "BackOff"] {
        assert!(events.contains(reason), "describe lacks {reason}:\n{text}");
    }
    assert!(events.contains("kubelet"), "{text}");
    // kubectl shows a counted event's age as "… (xN over …)".
    assert!(events.contains(" (x"), "{text}");
}
