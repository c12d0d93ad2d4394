//! Query decoding and validation (§5.1), `validateContainerLogStatus` (the kubelet's
//! `TestValidateContainerLogStatus` table), and streamed bodies from the simulated runtime.

use std::time::Duration;

use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
};

use super::*;
use crate::genericruntime::logs::tests::{sim_env, start_pod};

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

#[test]
fn query_decoding() {
    let ok = |q: &str| parse_query(q).unwrap();
    assert_eq!(ok(""), PodLogOptions::default());
    // Booleans: false only for 0 and false (any case); anything else, empty included, is true.
    for (v, want) in [
        ("true", true),
        ("1", true),
        ("", true),
        ("yes", true),
        ("0", false),
        ("FaLsE", false),
    ] {
        let o = ok(&format!("follow={v}&previous={v}&timestamps={v}"));
        assert_eq!((o.follow, o.previous, o.timestamps), (want, want, want), "{v:?}");
    }
    assert!(ok("follow").follow, "a bare key is an empty value");
    // First value wins; unknown parameters are ignored.
    assert!(ok("follow=1&follow=0&container=x&insecureSkipTLSVerifyBackend=true").follow);
    let o = ok("tailLines=10&limitBytes=500&sinceSeconds=30");
    assert_eq!(
        (o.tail_lines, o.limit_bytes, o.since_seconds),
        (Some(10), Some(500), Some(30))
    );
    // Legacy `tail` overrides tailLines; `tail=all` means unset.
    assert_eq!(ok("tail=3&tailLines=10").tail_lines, Some(3));
    assert_eq!(ok("tail=all&tailLines=10").tail_lines, None);
    assert_eq!(
        ok("sinceTime=2024-01-02T03%3A04%3A05Z").since_time,
        Some(ts("2024-01-02T03:04:05Z"))
    );
    assert_eq!(
        ok("sinceTime=2024-01-02T05:04:05%2B02:00").since_time,
        Some(ts("2024-01-02T03:04:05Z"))
    );
    assert!(ok("sinceTime=")
        .since_time
        .is_some_and(|t| t < ts("1970-01-01T00:00:00Z")));
    assert_eq!(ok("stream=Stderr").stream, Some(StreamSelect::Stderr));
    // Undecodable values: 400 with the kubelet's literal text.
    for q in [
        "tailLines=x",
        "limitBytes=1.5",
        "sinceSeconds=",
        "sinceTime=yesterday",
        "tail=-x",
    ] {
        let e = parse_query(q).unwrap_err();
        assert_eq!(e.status_code(), StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(e.to_string(), r#"{"message": "Unable to decode query."}"#);
    }
    // Broken escapes drop the pair instead of failing.
    assert!(!ok("follow=%zz").follow);
}

#[test]
fn option_validation() {
    let invalid = |q: &str| {
        let e = parse_query(q).and_then(|o| validate(&o)).unwrap_err();
        assert_eq!(e.status_code(), StatusCode::UNPROCESSABLE_ENTITY, "{q}");
        assert_eq!(e.to_string(), r#"{"message": "Invalid request."}"#);
    };
    invalid("tailLines=-1");
    invalid("limitBytes=0");
    invalid("sinceSeconds=0");
    invalid("sinceSeconds=10&sinceTime=2024-01-02T03:04:05Z");
    invalid("stream=Both");
    invalid("stream=Stdout&tailLines=3");
    for q in [
        "tailLines=0",
        "limitBytes=1",
        "sinceSeconds=1",
        "stream=All&tailLines=3",
        "stream=Stdout",
    ] {
        validate(&parse_query(q).unwrap()).unwrap_or_else(|e| panic!("{q}: {e:?}"));
    }
}

fn cs(state: ContainerState, last: Option<ContainerState>, id: Option<&str>) -> ContainerStatus {
    ContainerStatus {
        name: "x".into(),
        state: Some(state),
        last_state: last,
        container_id: id.map(Into::into),
        ..Default::default()
    }
}

fn running() -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..Default::default()
    }
}

fn terminated(id: Option<&str>) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            container_id: id.map(Into::into),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn waiting(reason: Option<&str>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: reason.map(Into::into),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// TestValidateContainerLogStatus: (status, current succeeds, previous succeeds).
#[test]
fn container_log_status_table() {
    let cases = [
        (
            cs(running(), Some(terminated(Some("docker://fakeid"))), None),
            true,
            true,
        ),
        (cs(running(), None, None), true, false),
        (cs(terminated(None), None, None), false, false),
        (cs(terminated(Some("docker://fakeid")), None, None), true, false),
        (cs(terminated(None), Some(terminated(None)), None), false, false),
        (
            cs(terminated(None), Some(terminated(Some("docker://fakeid"))), None),
            true,
            true,
        ),
        (cs(waiting(None), None, None), false, false),
        (cs(waiting(Some("ErrImagePull")), None, None), false, false),
        (cs(waiting(Some("ErrImagePullBackOff")), None, None), false, false),
    ];
    for (i, (c, ok, prev_ok)) in cases.into_iter().enumerate() {
        let status = PodStatus {
            container_statuses: Some(vec![c]),
            ..Default::default()
        };
        assert_eq!(
            validate_container_log_status("podName", &status, "x", false).is_ok(),
            ok,
            "case {i}"
        );
        assert_eq!(
            validate_container_log_status("podName", &status, "x", true).is_ok(),
            prev_ok,
            "case {i} previous"
        );
        assert!(validate_container_log_status("podName", &status, "blah", false).is_err());
    }
}

#[test]
fn container_log_status_messages_and_ids() {
    let st = |c: ContainerStatus| PodStatus {
        init_container_statuses: Some(vec![c]),
        ..Default::default()
    };
    let msg = |s: &PodStatus, prev| {
        validate_container_log_status("p", s, "x", prev)
            .unwrap_err()
            .to_string()
    };
    let e = validate_container_log_status("p", &PodStatus::default(), "x", false).unwrap_err();
    assert_eq!(e.status_code(), StatusCode::BAD_REQUEST);
    assert_eq!(e.to_string(), r#"container "x" in pod "p" is not available"#);
    assert_eq!(
        msg(&st(cs(running(), None, Some("sim://abc"))), true),
        r#"previous terminated container "x" in pod "p" not found"#
    );
    assert_eq!(
        msg(&st(cs(waiting(Some("ContainerCreating")), None, None)), false),
        r#"container "x" in pod "p" is waiting to start: ContainerCreating"#
    );
    assert_eq!(
        msg(&st(cs(waiting(Some("ErrImagePull")), None, None)), false),
        r#"container "x" in pod "p" is waiting to start: image can't be pulled"#
    );
    assert_eq!(
        msg(&st(cs(waiting(Some("ErrImagePullBackOff")), None, None)), false),
        r#"container "x" in pod "p" is waiting to start: trying and failing to pull image"#
    );
    assert_eq!(
        msg(&st(cs(terminated(None), None, None)), false),
        r#"container "x" in pod "p" is terminated"#
    );
    assert_eq!(
        msg(&st(cs(ContainerState::default(), None, None)), false),
        r#"container "x" in pod "p" is waiting to start - no logs yet"#
    );
    // Init containers count; the ID loses its runtime prefix; the previous instance is the last
    // terminated one even while a new one runs.
    let s = st(cs(running(), Some(terminated(Some("sim://old"))), Some("sim://new")));
    assert_eq!(validate_container_log_status("p", &s, "x", false).unwrap(), "new");
    assert_eq!(validate_container_log_status("p", &s, "x", true).unwrap(), "old");
    // Waiting after a crash: the last terminated instance.
    let s = st(cs(
        waiting(Some("CrashLoopBackOff")),
        Some(terminated(Some("sim://old"))),
        None,
    ));
    assert_eq!(validate_container_log_status("p", &s, "x", false).unwrap(), "old");
    // An unparsable ID is not an error here; the runtime will not know it.
    let s = st(cs(running(), None, Some("nonsense")));
    assert_eq!(validate_container_log_status("p", &s, "x", false).unwrap(), "");
}

async fn body_text(r: Response) -> String {
    let bytes = tokio::time::timeout(Duration::from_secs(10), r.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn streamed_body_of_a_sim_container() {
    let env = sim_env(50.0);
    let id = start_pod(&env, "talker", "echo one; echo two >&2; sleep 2; echo three").await;
    let opts = LogOptions {
        follow: true,
        ..LogOptions::default()
    };
    let r = stream_container_logs(env.mgr.clone(), id.clone(), opts);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    assert_eq!(
        body_text(r).await,
        "one\ntwo\nthree\n",
        "follow ends when the container exits"
    );
    let opts = LogOptions {
        bytes: 6,
        ..LogOptions::default()
    };
    assert_eq!(
        body_text(stream_container_logs(env.mgr.clone(), id, opts)).await,
        "one\ntw"
    );
    // A container the runtime does not know: 200 already, the error text ends the body.
    let r = stream_container_logs(env.mgr.clone(), "gone".into(), LogOptions::default());
    assert_eq!(r.status(), StatusCode::OK);
    let text = body_text(r).await;
    assert!(text.starts_with("failed to get container status \"gone\""), "{text}");
}

/// The body hands the server a Pending after the last chunk, so hyper flushes that chunk before
/// it writes the terminating one (kube-apiserver's WebSocket log path loses data that arrives
/// together with the end of the body).
#[test]
fn the_last_chunk_is_flushed_before_the_end_of_the_body() {
    use futures::Stream;
    use std::task::{Context, Poll};
    let chunks = futures::stream::iter([Bytes::from_static(b"a\n"), Bytes::from_static(b"b\n")]);
    let mut body = Box::pin(flushed(chunks));
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut polls = Vec::new();
    loop {
        match body.as_mut().poll_next(&mut cx) {
            Poll::Ready(Some(Ok(b))) => polls.push(String::from_utf8_lossy(b.as_ref()).into_owned()),
            Poll::Ready(Some(Err(never))) => match never {},
            Poll::Ready(None) => break,
            Poll::Pending => polls.push("pending".into()),
        }
    }
    assert_eq!(polls, ["a\n", "b\n", "pending"]);
}
