//! `GET /containerLogs/{ns}/{pod}/{container}` (kubelet-api-protocols.md §5.1; the kubelet's
//! `server.go getContainerLogs` and `kubelet_pods.go GetKubeletContainerLogs`).
//!
//! The query is decoded like the v1 parameter codec does it (400 `Unable to decode query.`),
//! validated like `ValidatePodLogOptions` (422 `Invalid request.`); an unknown pod or container
//! is a 404, a container without logs to show a 400 with the kubelet's text. Then the status is
//! committed (200, chunked, `text/plain; charset=utf-8`) and the log streams: stdout and stderr
//! in file order, no framing. An error after that point (the runtime lost the container, the
//! file is gone) cannot change the status: its text ends the body, as go-restful's
//! `WriteError` does on a committed response.
//!
//! keel serves the `stream` parameter (`All`/`Stdout`/`Stderr`) as if the alpha feature gate
//! `PodLogsQuerySplitStreams` were on.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use http::{header, StatusCode};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::AppState;
use crate::genericruntime::logs::{
    parse_rfc3339, LogChunk, LogOptions, LogStream, PodLogOptions, StreamSelect, LOG_CHUNK_CHANNEL_CAPACITY,
};
use crate::genericruntime::RuntimeManager;

/// The kubelet's answer when the query cannot be decoded (literally this text).
pub const DECODE_ERROR: &str = r#"{"message": "Unable to decode query."}"#;
/// The kubelet's answer when the options do not validate (literally this text).
pub const INVALID_ERROR: &str = r#"{"message": "Invalid request."}"#;
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// Errors of a container log request before streaming starts.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogRequestError {
    #[error("{DECODE_ERROR}")]
    Decode { param: &'static str, value: String },
    #[error("{INVALID_ERROR}")]
    Invalid { reason: &'static str },
    #[error("pod {0:?} does not exist")]
    PodNotFound(String),
    #[error("container {container:?} not found in pod {pod:?}")]
    ContainerNotFound { container: String, pod: String },
    #[error("{0}")]
    Status(String),
}

impl LogRequestError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            LogRequestError::Decode { .. } | LogRequestError::Status(_) => StatusCode::BAD_REQUEST,
            LogRequestError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            LogRequestError::PodNotFound(_) | LogRequestError::ContainerNotFound { .. } => StatusCode::NOT_FOUND,
        }
    }
}

impl IntoResponse for LogRequestError {
    fn into_response(self) -> Response {
        (
            self.status_code(),
            [(header::CONTENT_TYPE, TEXT_PLAIN)],
            self.to_string(),
        )
            .into_response()
    }
}

/// The routes of this area.
pub fn routes() -> Router<AppState> {
    Router::new().route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
}

async fn container_logs(
    State(state): State<AppState>,
    Path((namespace, pod_name, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let core = &state.core;
    let opts = match parse_query(query.as_deref().unwrap_or("")).and_then(|o| validate(&o).map(|_| o)) {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let pods = core.pods();
    let Some(pod) = pods.iter().find(|p| {
        p.metadata.namespace.as_deref() == Some(namespace.as_str()) && p.metadata.name.as_deref() == Some(&pod_name)
    }) else {
        return LogRequestError::PodNotFound(pod_name).into_response();
    };
    if !has_container(pod, &container) {
        return LogRequestError::ContainerNotFound {
            container,
            pod: pod_name,
        }
        .into_response();
    }
    // The status manager's view; the API object's until the first sync wrote one.
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let status = core
        .status
        .get_pod_status(&uid)
        .or_else(|| pod.status.clone())
        .unwrap_or_default();
    let container_id = match validate_container_log_status(&pod_name, &status, &container, opts.previous) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let log_opts = LogOptions::new(&opts, core.clock.now());
    stream_container_logs(core.manager.clone(), container_id, log_opts)
}

/// Commits a 200 and streams the container's log as the body; a failure to read ends the
/// body with the error's text.
pub fn stream_container_logs(
    manager: std::sync::Arc<RuntimeManager>,
    container_id: String,
    opts: LogOptions,
) -> Response {
    let (tx, rx) = mpsc::channel::<LogChunk>(LOG_CHUNK_CHANNEL_CAPACITY);
    tokio::spawn(async move {
        if let Err(e) = manager.get_container_logs(&container_id, &opts, &tx).await {
            tracing::info!(container = %container_id, error = %e, "reading container logs failed");
            let _ = tx
                .send(LogChunk {
                    stream: LogStream::Stderr,
                    data: Bytes::from(e.to_string()),
                })
                .await;
        }
    });
    let body = Body::from_stream(flushed(ReceiverStream::new(rx).map(|c| c.data)));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, TEXT_PLAIN)
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The body as the kubelet writes it (a flush after every write): the server is made to send
/// what it has before the end of the body, so the terminating chunk never shares a TLS record with
/// the last data. kube-apiserver's WebSocket log streaming (`wsstream` `messageCopy`) drops the
/// bytes of a read that also returns EOF, which Go's chunked reader does when the terminator is
/// already buffered: a log fetched over a WebSocket through the API server would come back empty.
fn flushed(
    chunks: impl futures::Stream<Item = Bytes> + Send + Unpin + 'static,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send {
    futures::stream::unfold(Some(chunks), |state| async move {
        let mut chunks = state?;
        match chunks.next().await {
            Some(data) => Some((Ok(data), Some(chunks))),
            None => {
                // One Pending before the end: hyper flushes the last chunk on its own.
                tokio::task::yield_now().await;
                None
            }
        }
    })
}

fn has_container(pod: &Pod, name: &str) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    spec.containers.iter().any(|c| c.name == name)
        || spec.init_containers.iter().flatten().any(|c| c.name == name)
        || spec.ephemeral_containers.iter().flatten().any(|c| c.name == name)
}

/// Query pairs, percent-decoded (`+` is a space); pairs that do not decode are dropped, as Go's
/// `url.Values` parsing does.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((unescape(k)?, unescape(v)?))
        })
        .collect()
}

fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Decodes `PodLogOptions` like the v1 parameter codec: the first value of a parameter counts;
/// booleans are false only for `0` and `false` (any case); integers are base 10; `sinceTime`
/// is RFC 3339 (empty or `null`: the zero time); the legacy `tail` overrides `tailLines`
/// (`tail=all`: unset); unknown parameters are ignored.
pub fn parse_query(query: &str) -> Result<PodLogOptions, LogRequestError> {
    let pairs = query_pairs(query);
    let first = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let boolean = |key: &str| first(key).is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"));
    let int = |key: &'static str, v: Option<&str>| -> Result<Option<i64>, LogRequestError> {
        v.map(|v| {
            v.parse::<i64>().map_err(|_| LogRequestError::Decode {
                param: key,
                value: v.to_string(),
            })
        })
        .transpose()
    };
    let tail = match first("tail") {
        Some("all") => None,
        Some(t) if !t.is_empty() => Some(t),
        _ => first("tailLines"),
    };
    let since_time = match first("sinceTime") {
        None => None,
        // metav1.Time.UnmarshalQueryParameter: the zero time, which filters nothing.
        Some("") | Some("null") => Some(jiff::Timestamp::from_second(-62_135_596_800).unwrap_or(jiff::Timestamp::MIN)),
        Some(s) => Some(
            parse_rfc3339(s.as_bytes())
                .map(|(t, _)| t)
                .ok_or_else(|| LogRequestError::Decode {
                    param: "sinceTime",
                    value: s.to_string(),
                })?,
        ),
    };
    Ok(PodLogOptions {
        follow: boolean("follow"),
        previous: boolean("previous"),
        timestamps: boolean("timestamps"),
        since_seconds: int("sinceSeconds", first("sinceSeconds"))?,
        since_time,
        tail_lines: int("tailLines", tail)?,
        limit_bytes: int("limitBytes", first("limitBytes"))?,
        stream: match first("stream") {
            None => None,
            Some(s) => Some(StreamSelect::parse(s).ok_or(LogRequestError::Invalid {
                reason: "stream: Unsupported value",
            })?),
        },
    })
}

/// `ValidatePodLogOptions`.
pub fn validate(o: &PodLogOptions) -> Result<(), LogRequestError> {
    let invalid = |reason| Err(LogRequestError::Invalid { reason });
    if o.tail_lines.is_some_and(|t| t < 0) {
        return invalid("tailLines: must be greater than or equal to 0");
    }
    if o.limit_bytes.is_some_and(|b| b < 1) {
        return invalid("limitBytes: must be greater than 0");
    }
    match (o.since_seconds, o.since_time) {
        (Some(_), Some(_)) => return invalid("at most one of `sinceTime` or `sinceSeconds` may be specified"),
        (Some(s), None) if s < 1 => return invalid("sinceSeconds: must be greater than 0"),
        _ => {}
    }
    if o.stream.is_some_and(|s| s != StreamSelect::All) && o.tail_lines.is_some() {
        return invalid("`tailLines` and specific `stream` are mutually exclusive for now");
    }
    Ok(())
}

/// `validateContainerLogStatus`: which container instance's log to read, from the API status.
/// Returns the runtime ID (without `<type>://`; empty when the status has an unparsable one,
/// which the runtime then does not find, as in the kubelet).
pub fn validate_container_log_status(
    pod_name: &str,
    status: &PodStatus,
    container: &str,
    previous: bool,
) -> Result<String, LogRequestError> {
    let find = |list: &Option<Vec<ContainerStatus>>| list.iter().flatten().find(|c| c.name == container).cloned();
    let err = |what: String| {
        Err(LogRequestError::Status(format!(
            "container {container:?} in pod {pod_name:?} {what}"
        )))
    };
    let Some(cs) = find(&status.container_statuses)
        .or_else(|| find(&status.init_container_statuses))
        .or_else(|| find(&status.ephemeral_container_statuses))
    else {
        return err("is not available".into());
    };
    let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    let state = cs.state.clone().unwrap_or_default();
    let last_id = last.and_then(|t| t.container_id.clone()).filter(|id| !id.is_empty());
    let id = if previous {
        match last_id {
            Some(id) => id,
            None => {
                return Err(LogRequestError::Status(format!(
                    "previous terminated container {container:?} in pod {pod_name:?} not found"
                )))
            }
        }
    } else if state.running.is_some() {
        cs.container_id.clone().unwrap_or_default()
    } else if let Some(t) = &state.terminated {
        // The next instance may not have started: then the last terminated one.
        match t.container_id.clone().filter(|id| !id.is_empty()).or(last_id) {
            Some(id) => id,
            None => return err("is terminated".into()),
        }
    } else if last.is_some() {
        match last_id {
            Some(id) => id,
            None => return err("is terminated".into()),
        }
    } else if let Some(w) = &state.waiting {
        let reason = w.reason.clone().unwrap_or_default();
        return match reason.as_str() {
            "ErrImagePull" => err("is waiting to start: image can't be pulled".into()),
            "ErrImagePullBackOff" => err("is waiting to start: trying and failing to pull image".into()),
            _ => err(format!("is waiting to start: {reason}")),
        };
    } else {
        return err("is waiting to start - no logs yet".into());
    };
    Ok(parse_container_id(&id).unwrap_or_default().to_string())
}

/// `ContainerID.ParseString`: `<type>://<id>` (quotes trimmed).
fn parse_container_id(s: &str) -> Option<&str> {
    let s = s.trim_matches('"');
    let mut parts = s.split("://");
    let (_, id) = (parts.next()?, parts.next()?);
    parts.next().is_none().then_some(id)
}

#[cfg(test)]
mod tests;
