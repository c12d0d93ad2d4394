//! Tests of the log reader: the kubelet's own tables (`logs_test.go`, `tail_test.go`) and reads
//! of containers of the simulated runtime (follow until exit, follow across a rotation).

use std::io::{Cursor, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::*;
use crate::backends::sim::{SimConfig, SimRuntime};
use crate::genericruntime::manager::ManagerConfig;
use crate::genericruntime::seam::Runtime;
use crate::genericruntime::types::{
    ConfigError, ContainerState, NoEvents, ProbeFailures, RunContainerOptions, RunOptionsProvider,
};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn msg(t: Timestamp, stream: LogStream, log: &str) -> LogMessage<'static> {
    LogMessage {
        timestamp: t,
        offset: Offset::UTC,
        stream: Ok(stream),
        log: Cow::Owned(log.as_bytes().to_vec()),
    }
}

/// TestLogOptions.
#[test]
fn log_options_from_api_options() {
    let now = ts("2024-05-06T07:08:09.5Z");
    let cases = [
        (PodLogOptions::default(), LogOptions::default()),
        (
            PodLogOptions {
                tail_lines: Some(8),
                ..Default::default()
            },
            LogOptions {
                tail: 8,
                ..Default::default()
            },
        ),
        (
            PodLogOptions {
                limit_bytes: Some(64),
                ..Default::default()
            },
            LogOptions {
                bytes: 64,
                ..Default::default()
            },
        ),
        (
            PodLogOptions {
                since_time: Some(now),
                ..Default::default()
            },
            LogOptions {
                since: Some(now),
                ..Default::default()
            },
        ),
        (
            PodLogOptions {
                since_seconds: Some(10),
                ..Default::default()
            },
            LogOptions {
                since: Some(ts("2024-05-06T07:07:59.5Z")),
                ..Default::default()
            },
        ),
        // Both: the later one wins.
        (
            PodLogOptions {
                since_seconds: Some(10),
                since_time: Some(ts("2024-05-06T07:00:00Z")),
                ..Default::default()
            },
            LogOptions {
                since: Some(ts("2024-05-06T07:07:59.5Z")),
                ..Default::default()
            },
        ),
    ];
    for (i, (api, want)) in cases.iter().enumerate() {
        assert_eq!(&LogOptions::new(api, now), want, "case {i}");
    }
}

/// TestParseLog.
#[test]
fn parse_log_lines() {
    let t = ts("2016-10-20T18:39:20.57606443Z");
    let cases: Vec<(&str, Option<LogMessage>)> = vec![
        (
            "{\"log\":\"docker stdout test log\",\"stream\":\"stdout\",\"time\":\"2016-10-20T18:39:20.57606443Z\"}\n",
            Some(msg(t, LogStream::Stdout, "docker stdout test log")),
        ),
        (
            "{\"log\":\"docker stderr test log\",\"stream\":\"stderr\",\"time\":\"2016-10-20T18:39:20.57606443Z\"}\n",
            Some(msg(t, LogStream::Stderr, "docker stderr test log")),
        ),
        (
            "2016-10-20T18:39:20.57606443Z stdout F cri stdout test log\n",
            Some(msg(t, LogStream::Stdout, "cri stdout test log\n")),
        ),
        (
            "2016-10-20T18:39:20.57606443Z stderr F cri stderr test log\n",
            Some(msg(t, LogStream::Stderr, "cri stderr test log\n")),
        ),
        ("unsupported log format test log\n", None),
        (
            "2016-10-20T18:39:20.57606443Z stdout P cri stdout partial test log\n",
            Some(msg(t, LogStream::Stdout, "cri stdout partial test log")),
        ),
        (
            "2016-10-20T18:39:20.57606443Z stdout P:TAG1:TAG2 cri stdout partial test log\n",
            Some(msg(t, LogStream::Stdout, "cri stdout partial test log")),
        ),
    ];
    for (line, want) in cases {
        let format = LogFormat::detect(line.as_bytes());
        match want {
            None => assert!(format.is_err(), "{line:?}"),
            Some(want) => {
                let got = format.unwrap().parse(line.as_bytes()).unwrap();
                assert_eq!(got, want, "{line:?}");
            }
        }
    }
}

#[test]
fn malformed_cri_lines_are_errors_not_panics() {
    let cases = [
        ("", ParseError::TimestampNotFound),
        ("2016-10-20T18:39:20Z", ParseError::TimestampNotFound),
        ("nottime stdout F x", ParseError::Timestamp("nottime".into())),
        ("2016-10-20T18:39:20Z stdout", ParseError::StreamNotFound),
        ("2016-10-20T18:39:20Z stdin F x", ParseError::Stream("stdin".into())),
        ("2016-10-20T18:39:20Z stdout F", ParseError::TagNotFound),
        ("2016-10-20T18:39:20Z stdout P\n", ParseError::TagNotFound),
    ];
    for (line, want) in cases {
        assert_eq!(parse_cri_log(line.as_bytes()), Err(want), "{line:?}");
    }
    // Empty content is fine, for F and for P.
    let m = parse_cri_log(b"2016-10-20T18:39:20Z stdout P \n").unwrap();
    assert_eq!(&*m.log, b"");
    let m = parse_cri_log(b"2016-10-20T18:39:20Z stdout F \n").unwrap();
    assert_eq!(&*m.log, b"\n");
}

#[test]
fn timestamps_parse_leniently_and_format_fixed() {
    let cases = [
        ("2016-10-06T00:17:09.669794202Z", "2016-10-06T00:17:09.669794202Z"),
        ("2016-10-06T00:17:09Z", "2016-10-06T00:17:09.000000000Z"),
        ("2016-10-06T00:17:09.5Z", "2016-10-06T00:17:09.500000000Z"),
        ("2016-10-06T00:17:09,25Z", "2016-10-06T00:17:09.250000000Z"),
        ("2016-10-06T00:17:09.1234567891234Z", "2016-10-06T00:17:09.123456789Z"),
        ("2016-10-06T02:17:09.1+02:00", "2016-10-06T02:17:09.100000000+02:00"),
        ("2016-10-05T23:47:09-00:30", "2016-10-05T23:47:09.000000000-00:30"),
    ];
    for (input, out) in cases {
        let (t, o) = parse_rfc3339(input.as_bytes()).unwrap_or_else(|| panic!("{input}"));
        assert_eq!(format_timestamp(t, o), out, "{input}");
    }
    let a = parse_rfc3339(b"2016-10-06T02:17:09+02:00").unwrap().0;
    assert_eq!(a, ts("2016-10-06T00:17:09Z"));
    for bad in [
        "2016-10-06 00:17:09Z",
        "2016-10-06T00:17:09",
        "2016-13-06T00:17:09Z",
        "2016-02-30T00:17:09Z",
        "2016-10-06T24:17:09Z",
        "2016-10-06T00:17:60Z",
        "2016-10-06T00:17:09.Z",
        "2016-10-06T00:17:09+24:00",
        "2016-10-06T00:17:09+0200",
        "2016-10-06T00:17:09z",
        "+016-10-06T00:17:09Z",
    ] {
        assert_eq!(parse_rfc3339(bad.as_bytes()), None, "{bad}");
    }
}

/// TestWriteLogs.
#[test]
fn writer_applies_since_and_timestamps() {
    let t = Timestamp::new(1234, 43210).unwrap();
    let log = "abcdefg\n";
    let cases: [(LogStream, Option<Timestamp>, bool, &str, &str); 4] = [
        (LogStream::Stderr, None, false, "", log),
        (LogStream::Stdout, None, false, log, ""),
        (
            LogStream::Stdout,
            Some(Timestamp::new(1235, 43210).unwrap()),
            false,
            "",
            "",
        ),
        (
            LogStream::Stderr,
            None,
            true,
            "",
            "1970-01-01T00:20:34.000043210Z abcdefg\n",
        ),
    ];
    for (i, (stream, since, timestamp, want_out, want_err)) in cases.into_iter().enumerate() {
        let mut w = LogWriter::new(&LogOptions {
            since,
            timestamp,
            ..Default::default()
        });
        let (mut out, mut err) = (String::new(), String::new());
        if let Written::Chunk { chunk, last } = w.write(&msg(t, stream, log)).unwrap() {
            assert!(!last);
            let s = String::from_utf8(chunk.data.to_vec()).unwrap();
            match chunk.stream {
                LogStream::Stdout => out += &s,
                LogStream::Stderr => err += &s,
            }
        }
        assert_eq!((out.as_str(), err.as_str()), (want_out, want_err), "case {i}");
    }
}

/// TestWriteLogsWithBytesLimit.
#[test]
fn writer_limits_bytes() {
    let t = Timestamp::new(1234, 4321).unwrap();
    let t_str = format_timestamp(t, Offset::UTC);
    let log = "abcdefg\n";
    let n = log.len();
    let cases: Vec<(usize, usize, usize, bool, String, String)> = vec![
        (3, 0, 3, false, "abc".into(), "".into()),
        (3, 0, n + 3, false, "abcdefg\nabc".into(), "".into()),
        (3, 0, 3 * n, false, "abcdefg\nabcdefg\nabcdefg\n".into(), "".into()),
        (0, 3, n + 3, false, "".into(), "abcdefg\nabc".into()),
        (1, 2, n + 3, false, "abcdefg\n".into(), "abc".into()),
        (
            3,
            0,
            t_str.len() + 1 + n + 2,
            true,
            format!("{t_str} {log}{}", &t_str[..2]),
            "".into(),
        ),
    ];
    for (i, (stdout_lines, stderr_lines, bytes, timestamp, want_out, want_err)) in cases.into_iter().enumerate() {
        let mut w = LogWriter::new(&LogOptions {
            timestamp,
            bytes: bytes as i64,
            ..Default::default()
        });
        let (mut out, mut err) = (String::new(), String::new());
        let mut done = false;
        let streams = std::iter::repeat_n(LogStream::Stdout, stdout_lines)
            .chain(std::iter::repeat_n(LogStream::Stderr, stderr_lines));
        for s in streams {
            if done {
                break;
            }
            if let Written::Chunk { chunk, last } = w.write(&msg(t, s, log)).unwrap() {
                let text = String::from_utf8(chunk.data.to_vec()).unwrap();
                match chunk.stream {
                    LogStream::Stdout => out += &text,
                    LogStream::Stderr => err += &text,
                }
                done = last;
            }
        }
        assert_eq!((out, err), (want_out, want_err), "case {i}");
    }
}

#[test]
fn writer_stream_selection_and_unknown_docker_stream() {
    let t = Timestamp::new(1234, 0).unwrap();
    let mut w = LogWriter::new(&LogOptions {
        stream: StreamSelect::Stderr,
        bytes: 4,
        ..Default::default()
    });
    assert_eq!(w.write(&msg(t, LogStream::Stdout, "out\n")).unwrap(), Written::Skipped);
    match w.write(&msg(t, LogStream::Stderr, "err\n")).unwrap() {
        Written::Chunk { chunk, last } => {
            assert_eq!(&chunk.data[..], b"err\n");
            assert!(last, "the other stream did not count toward limitBytes");
        }
        other => panic!("{other:?}"),
    }
    let m = parse_docker_json_log(br#"{"log":"x","stream":"stdin","time":"2020-01-01T00:00:00Z"}"#).unwrap();
    assert!(
        matches!(LogWriter::new(&LogOptions::default()).write(&m), Err(LogsError::UnexpectedStream(s)) if s == "stdin")
    );
}

/// tail_test.go TestTail.
#[test]
fn tail_line_start_index() {
    let line = "a".repeat(1024);
    let data = format!("{line}\n{line}\n{line}\n{line}\n{}", &line[512..]);
    let l = (line.len() + 1) as u64;
    for (n, start) in [(-1, 0), (0, l * 4), (1, l * 3), (9999, 0)] {
        let mut c = Cursor::new(data.as_bytes());
        assert_eq!(find_tail_line_start_index(&mut c, n).unwrap(), start, "n={n}");
    }
    let mut c = Cursor::new(b"a\nb\nc\n".as_slice());
    assert_eq!(find_tail_line_start_index(&mut c, 2).unwrap(), 2);
    let mut c = Cursor::new(b"".as_slice());
    assert_eq!(find_tail_line_start_index(&mut c, 2).unwrap(), 0);
}

// ---- read_logs over files ----

/// A runtime whose ContainerStatus reports a state the test sets (the kubelet's tests use a
/// fake runtime the same way); every other call goes to an empty simulated runtime.
struct Fixed {
    inner: Arc<SimRuntime>,
    running: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl RuntimeService for Fixed {
    async fn version(&self, r: cri::VersionRequest) -> super::super::seam::Result<cri::VersionResponse> {
        self.inner.version(r).await
    }
    async fn status(&self, r: cri::StatusRequest) -> super::super::seam::Result<cri::StatusResponse> {
        self.inner.status(r).await
    }
    async fn run_pod_sandbox(
        &self,
        r: cri::RunPodSandboxRequest,
    ) -> super::super::seam::Result<cri::RunPodSandboxResponse> {
        self.inner.run_pod_sandbox(r).await
    }
    async fn stop_pod_sandbox(
        &self,
        r: cri::StopPodSandboxRequest,
    ) -> super::super::seam::Result<cri::StopPodSandboxResponse> {
        self.inner.stop_pod_sandbox(r).await
    }
    async fn remove_pod_sandbox(
        &self,
        r: cri::RemovePodSandboxRequest,
    ) -> super::super::seam::Result<cri::RemovePodSandboxResponse> {
        self.inner.remove_pod_sandbox(r).await
    }
    async fn pod_sandbox_status(
        &self,
        r: cri::PodSandboxStatusRequest,
    ) -> super::super::seam::Result<cri::PodSandboxStatusResponse> {
        self.inner.pod_sandbox_status(r).await
    }
    async fn list_pod_sandbox(
        &self,
        r: cri::ListPodSandboxRequest,
    ) -> super::super::seam::Result<cri::ListPodSandboxResponse> {
        self.inner.list_pod_sandbox(r).await
    }
    async fn create_container(
        &self,
        r: cri::CreateContainerRequest,
    ) -> super::super::seam::Result<cri::CreateContainerResponse> {
        self.inner.create_container(r).await
    }
    async fn start_container(
        &self,
        r: cri::StartContainerRequest,
    ) -> super::super::seam::Result<cri::StartContainerResponse> {
        self.inner.start_container(r).await
    }
    async fn stop_container(
        &self,
        r: cri::StopContainerRequest,
    ) -> super::super::seam::Result<cri::StopContainerResponse> {
        self.inner.stop_container(r).await
    }
    async fn remove_container(
        &self,
        r: cri::RemoveContainerRequest,
    ) -> super::super::seam::Result<cri::RemoveContainerResponse> {
        self.inner.remove_container(r).await
    }
    async fn list_containers(
        &self,
        r: cri::ListContainersRequest,
    ) -> super::super::seam::Result<cri::ListContainersResponse> {
        self.inner.list_containers(r).await
    }
    async fn container_status(
        &self,
        _: cri::ContainerStatusRequest,
    ) -> super::super::seam::Result<cri::ContainerStatusResponse> {
        Ok(cri::ContainerStatusResponse {
            status: Some(cri::ContainerStatus {
                state: if self.running.load(Ordering::SeqCst) {
                    cri::ContainerState::ContainerRunning as i32
                } else {
                    cri::ContainerState::ContainerExited as i32
                },
                ..Default::default()
            }),
            ..Default::default()
        })
    }
    async fn exec_sync(&self, r: cri::ExecSyncRequest) -> super::super::seam::Result<cri::ExecSyncResponse> {
        self.inner.exec_sync(r).await
    }
    async fn reopen_container_log(
        &self,
        r: cri::ReopenContainerLogRequest,
    ) -> super::super::seam::Result<cri::ReopenContainerLogResponse> {
        self.inner.reopen_container_log(r).await
    }
    async fn exec(&self, r: cri::ExecRequest) -> super::super::seam::Result<cri::ExecResponse> {
        self.inner.exec(r).await
    }
    async fn attach(&self, r: cri::AttachRequest) -> super::super::seam::Result<cri::AttachResponse> {
        self.inner.attach(r).await
    }
    async fn port_forward(&self, r: cri::PortForwardRequest) -> super::super::seam::Result<cri::PortForwardResponse> {
        self.inner.port_forward(r).await
    }
    async fn list_container_stats(
        &self,
        r: cri::ListContainerStatsRequest,
    ) -> super::super::seam::Result<cri::ListContainerStatsResponse> {
        self.inner.list_container_stats(r).await
    }
    async fn list_pod_sandbox_stats(
        &self,
        r: cri::ListPodSandboxStatsRequest,
    ) -> super::super::seam::Result<cri::ListPodSandboxStatsResponse> {
        self.inner.list_pod_sandbox_stats(r).await
    }
}

fn fixed(dir: &Path, state: cri::ContainerState) -> Fixed {
    let inner = SimRuntime::new(SimConfig::default(), Clock::real(), dir.join("sim")).unwrap();
    let running = Arc::new(AtomicBool::new(state == cri::ContainerState::ContainerRunning));
    Fixed { inner, running }
}

/// Runs read_logs to completion and returns (stdout, stderr).
async fn read_all<R: RuntimeService + ?Sized>(
    path: &Path,
    opts: &LogOptions,
    rt: &R,
) -> Result<(String, String, String), LogsError> {
    let (tx, mut rx) = mpsc::channel::<LogChunk>(LOG_CHUNK_CHANNEL_CAPACITY);
    let collect = tokio::spawn(async move {
        let (mut out, mut err, mut both) = (String::new(), String::new(), String::new());
        while let Some(c) = rx.recv().await {
            let s = String::from_utf8_lossy(&c.data).into_owned();
            both += &s;
            match c.stream {
                LogStream::Stdout => out += &s,
                LogStream::Stderr => err += &s,
            }
        }
        (out, err, both)
    });
    let r = read_logs(path, "fake-container-id", opts, rt, &Clock::real(), &tx).await;
    drop(tx);
    let got = collect.await.unwrap();
    r.map(|_| got)
}

/// TestReadLogs (Docker JSON file; follow cases with an exited container).
#[tokio::test]
async fn read_logs_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    std::fs::write(
        &path,
        concat!(
            "{\"log\":\"line1\\n\",\"stream\":\"stdout\",\"time\":\"2020-09-27T11:18:01.00000000Z\"}\n",
            "{\"log\":\"line2\\n\",\"stream\":\"stdout\",\"time\":\"2020-09-27T11:18:02.00000000Z\"}\n",
            "{\"log\":\"line3\\n\",\"stream\":\"stdout\",\"time\":\"2020-09-27T11:18:03.00000000Z\"}\n",
        ),
    )
    .unwrap();
    let since = ts("2020-09-27T11:18:02Z");
    let now = Timestamp::now();
    let all = "line1\nline2\nline3\n";
    let cases: Vec<(&str, PodLogOptions, &str)> = vec![
        ("default", PodLogOptions::default(), all),
        (
            "tail 2",
            PodLogOptions {
                tail_lines: Some(2),
                ..Default::default()
            },
            "line2\nline3\n",
        ),
        (
            "tail 4",
            PodLogOptions {
                tail_lines: Some(4),
                ..Default::default()
            },
            all,
        ),
        (
            "tail 0",
            PodLogOptions {
                tail_lines: Some(0),
                ..Default::default()
            },
            "",
        ),
        (
            "limit 9",
            PodLogOptions {
                limit_bytes: Some(9),
                ..Default::default()
            },
            "line1\nlin",
        ),
        (
            "limit 100",
            PodLogOptions {
                limit_bytes: Some(100),
                ..Default::default()
            },
            all,
        ),
        (
            "limit 0",
            PodLogOptions {
                limit_bytes: Some(0),
                ..Default::default()
            },
            "",
        ),
        (
            "since time",
            PodLogOptions {
                since_time: Some(since),
                ..Default::default()
            },
            "line2\nline3\n",
        ),
        (
            "since now",
            PodLogOptions {
                since_time: Some(now),
                ..Default::default()
            },
            "",
        ),
        (
            "follow",
            PodLogOptions {
                follow: true,
                ..Default::default()
            },
            all,
        ),
        (
            "follow tail 2",
            PodLogOptions {
                follow: true,
                tail_lines: Some(2),
                ..Default::default()
            },
            "line2\nline3\n",
        ),
        (
            "follow since",
            PodLogOptions {
                follow: true,
                since_time: Some(since),
                ..Default::default()
            },
            "line2\nline3\n",
        ),
    ];
    // Following an exited container reads to the end and stops.
    let rt = fixed(dir.path(), cri::ContainerState::ContainerExited);
    for (name, api, want) in cases {
        let (out, err, _) = read_all(&path, &LogOptions::new(&api, now), &rt).await.unwrap();
        assert_eq!(err, "", "{name}");
        assert_eq!(out, want, "{name}");
    }
}

#[tokio::test]
async fn read_cri_log_with_partials_timestamps_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    std::fs::write(
        &path,
        concat!(
            "2016-10-06T00:17:09.669794202Z stdout P log content 1\n",
            "2016-10-06T00:17:09.669794203Z stdout F  continued\n",
            "garbage line that is skipped\n",
            "2016-10-06T00:17:10Z stderr F oops\n",
            "2016-10-06T00:17:11Z stdout F last without newline",
        ),
    )
    .unwrap();
    let rt = fixed(dir.path(), cri::ContainerState::ContainerExited);
    let (out, err, both) = read_all(&path, &LogOptions::default(), &rt).await.unwrap();
    assert_eq!(out, "log content 1 continued\nlast without newline");
    assert_eq!(err, "oops\n");
    assert_eq!(both, "log content 1 continued\noops\nlast without newline");
    let opts = LogOptions {
        timestamp: true,
        ..Default::default()
    };
    let (_, _, both) = read_all(&path, &opts, &rt).await.unwrap();
    assert_eq!(
        both,
        concat!(
            "2016-10-06T00:17:09.669794202Z log content 1",
            "2016-10-06T00:17:09.669794203Z  continued\n",
            "2016-10-06T00:17:10.000000000Z oops\n",
            "2016-10-06T00:17:11.000000000Z last without newline"
        )
    );
    // tailLines counts complete file lines, P fragments and unparseable lines included; the
    // incomplete last line is extra.
    let opts = LogOptions {
        tail: 3,
        ..Default::default()
    };
    let (_, _, both) = read_all(&path, &opts, &rt).await.unwrap();
    assert_eq!(both, " continued\noops\nlast without newline");
    let opts = LogOptions {
        tail: 1,
        ..Default::default()
    };
    let (_, _, both) = read_all(&path, &opts, &rt).await.unwrap();
    assert_eq!(both, "oops\n", "without follow, at most tailLines entries");
    let opts = LogOptions {
        stream: StreamSelect::Stdout,
        ..Default::default()
    };
    let (out, err, _) = read_all(&path, &opts, &rt).await.unwrap();
    assert_eq!(
        (out.as_str(), err.as_str()),
        ("log content 1 continued\nlast without newline", "")
    );
}

#[tokio::test]
async fn read_errors_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let rt = fixed(dir.path(), cri::ContainerState::ContainerExited);
    let missing = dir.path().join("missing.log");
    assert!(matches!(
        read_all(&missing, &LogOptions::default(), &rt).await,
        Err(LogsError::ResolveSymlinks { .. })
    ));
    let bad = dir.path().join("bad.log");
    std::fs::write(&bad, "no format here\n2016-10-06T00:17:11Z stdout F ok\n").unwrap();
    let err = read_all(&bad, &LogOptions::default(), &rt).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("failed to get parse function: unsupported log format: \"no format here\\n\""),
        "{err}"
    );
    // An empty file is no error.
    let empty = dir.path().join("empty.log");
    std::fs::write(&empty, "").unwrap();
    assert_eq!(read_all(&empty, &LogOptions::default(), &rt).await.unwrap().2, "");
    // A symlink is resolved.
    let link = dir.path().join("link.log");
    std::os::unix::fs::symlink(&bad, &link).unwrap();
    assert!(read_all(&link, &LogOptions::default(), &rt).await.is_err());
}

fn cri_line(stream: &str, tag: &str, text: &str) -> String {
    format!("{} {stream} {tag} {text}\n", Timestamp::now())
}

/// Follow of a running container: new lines arrive, an incomplete line waits for its end, a
/// rotation (rename + new file) is followed, and the read ends when the container stops.
#[tokio::test]
async fn follow_survives_rotation_and_ends_when_the_container_stops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    std::fs::write(&path, cri_line("stdout", "F", "one")).unwrap();
    let rt = fixed(dir.path(), cri::ContainerState::ContainerRunning);
    let running = rt.running.clone();
    let (tx, mut rx) = mpsc::channel(LOG_CHUNK_CHANNEL_CAPACITY);
    let p = path.clone();
    let reader = tokio::spawn(async move {
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        read_logs(&p, "id", &opts, &rt, &Clock::real(), &tx).await
    });
    let mut next = async || {
        let c = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        String::from_utf8(c.data.to_vec()).unwrap()
    };
    assert_eq!(next().await, "one\n");
    let append = |s: &str| {
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(s.as_bytes()).unwrap();
    };
    // An incomplete line is not emitted until its newline arrives.
    let line = cri_line("stdout", "F", "two");
    append(&line[..10]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    append(&line[10..]);
    assert_eq!(next().await, "two\n");
    // Rotation: the old file gets one more line after the rename, then the new file appears.
    let rotated = dir.path().join("0.log.20240101-000000");
    std::fs::rename(&path, &rotated).unwrap();
    let mut old = std::fs::OpenOptions::new().append(true).open(&rotated).unwrap();
    old.write_all(cri_line("stdout", "F", "three").as_bytes()).unwrap();
    std::fs::write(&path, cri_line("stderr", "F", "four")).unwrap();
    assert_eq!(next().await, "three\n");
    assert_eq!(next().await, "four\n");
    append(&cri_line("stdout", "F", "five"));
    assert_eq!(next().await, "five\n");
    running.store(false, Ordering::SeqCst);
    append(&cri_line("stdout", "F", "six"));
    let r = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(next().await, "six\n");
    assert!(rx.recv().await.is_none(), "the read ended");
}

#[tokio::test]
async fn follow_stops_when_the_client_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    std::fs::write(&path, cri_line("stdout", "F", "one")).unwrap();
    let rt = fixed(dir.path(), cri::ContainerState::ContainerRunning);
    let (tx, mut rx) = mpsc::channel(LOG_CHUNK_CHANNEL_CAPACITY);
    let reader = tokio::spawn(async move {
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        read_logs(&path, "id", &opts, &rt, &Clock::real(), &tx).await
    });
    assert_eq!(&rx.recv().await.unwrap().data[..], b"one\n");
    drop(rx);
    let r = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
}

// ---- on the simulated runtime ----

struct NoOptions;

#[async_trait::async_trait]
impl RunOptionsProvider for NoOptions {
    async fn run_container_options(
        &self,
        pod: &Pod,
        _: &Container,
        _: &[String],
    ) -> Result<RunContainerOptions, ConfigError> {
        Ok(RunContainerOptions {
            envs: vec![],
            mounts: vec![],
            hostname: pod.metadata.name.clone().unwrap_or_default(),
        })
    }
}

pub(crate) struct SimEnv {
    pub dir: tempfile::TempDir,
    pub sim: Arc<SimRuntime>,
    pub mgr: Arc<RuntimeManager>,
}

/// A runtime manager on the simulated runtime with a clock `scale` times faster than real time.
pub(crate) fn sim_env(scale: f64) -> SimEnv {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::scaled(scale);
    let sim = SimRuntime::new(SimConfig::default(), clock, dir.path().join("sim")).unwrap();
    let runtime: Arc<dyn Runtime> = sim.clone();
    let mgr = Arc::new(RuntimeManager::new(
        runtime,
        ManagerConfig {
            runtime_type: "sim".into(),
            pod_logs_dir: dir.path().join("logs"),
            root_dir: dir.path().join("root"),
            cgroup_root: "/kubepods".into(),
            serialize_image_pulls: true,
            node_name: "node-1".into(),
            clock,
        },
        Arc::new(NoEvents),
        Arc::new(NoOptions),
    ));
    SimEnv { dir, sim, mgr }
}

/// Starts a one-container pod running `script` and returns the container's ID.
pub(crate) async fn start_pod(env: &SimEnv, name: &str, script: &str) -> String {
    let p: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": "busybox:1.36", "command": ["sh", "-c", script]}
        ]}
    }))
    .unwrap();
    let uid = format!("uid-{name}");
    let st = env.mgr.get_pod_status(&uid, name, "default").await.unwrap();
    env.mgr.sync_pod(&p, &st, &[], &ProbeFailures::default()).await;
    for _ in 0..500 {
        let st = env.mgr.get_pod_status(&uid, name, "default").await.unwrap();
        if let Some(c) = st.find_container_status("c") {
            if c.state != ContainerState::Created {
                return c.id.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("container of {name} did not start");
}

#[tokio::test]
async fn sim_container_logs_follow_until_exit() {
    // 1 virtual second = 20 ms.
    let env = sim_env(50.0);
    let id = start_pod(
        &env,
        "counter",
        "for i in 1 2 3 4 5; do echo line $i; sleep 1; done; echo bye >&2",
    )
    .await;
    let (tx, mut rx) = mpsc::channel(LOG_CHUNK_CHANNEL_CAPACITY);
    let opts = LogOptions {
        follow: true,
        ..Default::default()
    };
    let mgr = env.mgr.clone();
    let reader = tokio::spawn(async move { mgr.get_container_logs(&id, &opts, &tx).await });
    let mut all = String::new();
    while let Some(c) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap() {
        all += &String::from_utf8_lossy(&c.data);
    }
    reader.await.unwrap().unwrap();
    assert_eq!(all, "line 1\nline 2\nline 3\nline 4\nline 5\nbye\n");
}

#[tokio::test]
async fn sim_container_logs_of_a_missing_container() {
    let env = sim_env(50.0);
    let (tx, _rx) = mpsc::channel(1);
    let err = env
        .mgr
        .get_container_logs("nope", &LogOptions::default(), &tx)
        .await
        .unwrap_err();
    assert!(matches!(err, LogsError::ContainerStatus { .. }), "{err}");
    assert!(env.sim.version(Default::default()).await.is_ok());
}
