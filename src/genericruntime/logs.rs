//! The kubelet's container log reader (`pkg/kubelet/kuberuntime/logs`, `ReadLogs`):
//! parses the CRI log lines the runtime writes (`<RFC3339Nano> <stdout|stderr> <P|F> <content>`,
//! or Docker JSON lines), and applies `PodLogOptions` with the kubelet's semantics
//! (kubelet-behavior.md §1.14, kubelet-api-protocols.md §5.1–§5.2):
//!
//! * `tailLines` starts at the N-th last line of the file (P fragments count as lines); without
//!   `follow` it stops after N entries.
//! * `limitBytes` counts output bytes, timestamp prefixes included; the last entry is cut.
//! * `sinceSeconds`/`sinceTime`: the later of the two wins; older entries are skipped.
//! * `timestamps` prefixes every entry (each P fragment too) with the fixed-width RFC 3339 time.
//! * P entries lose their trailing newline, so consecutive P…F entries join into one line.
//! * Malformed lines are skipped; a first line in no known format is an error.
//! * Only the current log file is read, like the kubelet: rotated files (`<log>.<timestamp>`,
//!   older ones gzipped) are not part of `kubectl logs` output.
//! * `follow` keeps reading until the container is no longer RUNNING; when the file is rotated
//!   (the path now names another file) the new file is opened.
//!
//! Where keel differs on purpose: the kubelet waits for changes with fsnotify plus a forced
//! re-check every second; keel polls the file's size and identity every 100 ms (no inotify
//! dependency) and keeps the 1 s forced re-check of the container state. On rotation the kubelet
//! switches to the new file at once and loses what was appended to the old one since its last
//! read; keel first reads the old file to its end.

use std::borrow::Cow;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use jiff::tz::Offset;
use jiff::Timestamp;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use super::manager::RuntimeManager;
use super::seam::{cri, RuntimeError, RuntimeService};
use crate::clock::Clock;

/// The kubelet's `logForceCheckPeriod`: while following, the container state is checked at
/// least this often (virtual time).
pub const LOG_FORCE_CHECK_PERIOD: Duration = Duration::from_secs(1);
/// How often a follower looks at the file for new data or a rotation (real time: this is
/// keel's stand-in for fsnotify's latency, not a kubelet period).
pub const LOG_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Chunks in flight between the reader and the HTTP response.
pub const LOG_CHUNK_CHANNEL_CAPACITY: usize = 64;
/// `pkg/util/tail` reads backwards in blocks of this size.
const TAIL_BLOCK_SIZE: u64 = 1024;

/// Errors of reading a container log.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("failed to get container status {container_id:?}: {source}")]
    ContainerStatus {
        container_id: String,
        #[source]
        source: RuntimeError,
    },
    #[error("container status of {container_id:?} is nil")]
    ContainerStatusNil { container_id: String },
    #[error("failed to try resolving symlinks in path {path:?}: {source}")]
    ResolveSymlinks {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to open log file {path:?}: {source}")]
    OpenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to tail {tail} lines of log file {path:?}: {source}")]
    Tail {
        tail: i64,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read log file {path:?}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to get parse function: {source}")]
    UnsupportedFormat {
        #[source]
        source: ParseError,
    },
    #[error("unexpected stream type {0:?}")]
    UnexpectedStream(String),
}

/// Why one log line could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("timestamp is not found")]
    TimestampNotFound,
    #[error("unexpected timestamp format {0:?}")]
    Timestamp(String),
    #[error("stream type is not found")]
    StreamNotFound,
    #[error("unexpected stream type {0:?}")]
    Stream(String),
    #[error("log tag is not found")]
    TagNotFound,
    #[error("failed to unmarshal docker JSON log: {0}")]
    Json(String),
    #[error("unsupported log format: {0:?}")]
    Unsupported(String),
}

/// An output stream of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        match b {
            b"stdout" => Some(LogStream::Stdout),
            b"stderr" => Some(LogStream::Stderr),
            _ => None,
        }
    }
}

/// Which streams a request wants (`PodLogOptions.stream`, `PodLogsQuerySplitStreams`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StreamSelect {
    #[default]
    All,
    Stdout,
    Stderr,
}

impl StreamSelect {
    /// The API values `All`, `Stdout`, `Stderr`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "All" => Some(StreamSelect::All),
            "Stdout" => Some(StreamSelect::Stdout),
            "Stderr" => Some(StreamSelect::Stderr),
            _ => None,
        }
    }

    fn wants(self, s: LogStream) -> bool {
        match self {
            StreamSelect::All => true,
            StreamSelect::Stdout => s == LogStream::Stdout,
            StreamSelect::Stderr => s == LogStream::Stderr,
        }
    }
}

/// The `v1.PodLogOptions` fields the kubelet reads (k8s-openapi has no type for this query
/// object).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodLogOptions {
    pub follow: bool,
    pub previous: bool,
    pub since_seconds: Option<i64>,
    pub since_time: Option<Timestamp>,
    pub timestamps: bool,
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
    pub stream: Option<StreamSelect>,
}

/// The reader's options (`LogOptions`): −1 means "no limit" for `tail` and `bytes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogOptions {
    pub tail: i64,
    pub bytes: i64,
    pub since: Option<Timestamp>,
    pub follow: bool,
    pub timestamp: bool,
    pub stream: StreamSelect,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            tail: -1,
            bytes: -1,
            since: None,
            follow: false,
            timestamp: false,
            stream: StreamSelect::All,
        }
    }
}

impl LogOptions {
    /// `NewLogOptions`: `sinceSeconds` is relative to `now`; the later of it and `sinceTime` wins.
    pub fn new(api: &PodLogOptions, now: Timestamp) -> Self {
        let mut since = api
            .since_seconds
            .and_then(|s| jiff::SignedDuration::from_secs(s).checked_neg())
            .and_then(|d| now.checked_add(d).ok());
        if let Some(t) = api.since_time {
            if since.is_none_or(|s| t > s) {
                since = Some(t);
            }
        }
        Self {
            tail: api.tail_lines.unwrap_or(-1),
            bytes: api.limit_bytes.unwrap_or(-1),
            since,
            follow: api.follow,
            timestamp: api.timestamps,
            stream: api.stream.unwrap_or_default(),
        }
    }
}

/// One parsed log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogMessage<'a> {
    pub timestamp: Timestamp,
    /// The UTC offset the timestamp was written with (the output prefix keeps it, as Go does).
    pub offset: Offset,
    /// `Err(raw)`: a Docker JSON entry naming another stream (an error only when written).
    pub stream: Result<LogStream, String>,
    pub log: Cow<'a, [u8]>,
}

/// A log file format, chosen from the first line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Cri,
    DockerJson,
}

impl LogFormat {
    /// `getParseFunc`: CRI first, then Docker JSON.
    pub fn detect(line: &[u8]) -> Result<Self, ParseError> {
        if parse_cri_log(line).is_ok() {
            Ok(LogFormat::Cri)
        } else if parse_docker_json_log(line).is_ok() {
            Ok(LogFormat::DockerJson)
        } else {
            Err(ParseError::Unsupported(String::from_utf8_lossy(line).into_owned()))
        }
    }

    pub fn parse(self, line: &[u8]) -> Result<LogMessage<'_>, ParseError> {
        match self {
            LogFormat::Cri => parse_cri_log(line),
            LogFormat::DockerJson => parse_docker_json_log(line),
        }
    }
}

/// A piece of output for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogChunk {
    pub stream: LogStream,
    pub data: Bytes,
}

/// Go's zero `time.Time` (0001-01-01T00:00:00Z): the time of a Docker JSON entry without one.
fn zero_time() -> Timestamp {
    Timestamp::from_second(-62_135_596_800).unwrap_or(Timestamp::MIN)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `parseCRILog`: `<timestamp> <stream> <tags> <content>`; a P entry loses its trailing newline.
pub fn parse_cri_log(line: &[u8]) -> Result<LogMessage<'_>, ParseError> {
    let space = |b: &[u8]| b.iter().position(|&c| c == b' ');
    let idx = space(line).ok_or(ParseError::TimestampNotFound)?;
    let (timestamp, offset) = parse_rfc3339(&line[..idx]).ok_or_else(|| ParseError::Timestamp(lossy(&line[..idx])))?;
    let rest = &line[idx + 1..];
    let idx = space(rest).ok_or(ParseError::StreamNotFound)?;
    let stream = LogStream::from_bytes(&rest[..idx]).ok_or_else(|| ParseError::Stream(lossy(&rest[..idx])))?;
    let mut rest = &rest[idx + 1..];
    let idx = space(rest).ok_or(ParseError::TagNotFound)?;
    // Tags are `:`-separated; only the first one (P or F) matters, the rest is forward compatibility.
    let partial = rest[..idx].split(|&c| c == b':').next() == Some(b"P".as_slice());
    if partial && rest.last() == Some(&b'\n') {
        rest = &rest[..rest.len() - 1];
    }
    Ok(LogMessage {
        timestamp,
        offset,
        stream: Ok(stream),
        log: Cow::Borrowed(&rest[idx + 1..]),
    })
}

#[derive(serde::Deserialize)]
struct JsonLog {
    #[serde(default)]
    log: Option<String>,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    time: Option<String>,
}

/// `parseDockerJSONLog`: `{"log":"…","stream":"stdout","time":"…"}`.
pub fn parse_docker_json_log(line: &[u8]) -> Result<LogMessage<'static>, ParseError> {
    // Go's decoder replaces invalid UTF-8 instead of failing.
    let text = String::from_utf8_lossy(line);
    let l: JsonLog = serde_json::from_str(&text).map_err(|e| ParseError::Json(e.to_string()))?;
    let (timestamp, offset) = match l.time.as_deref() {
        None => (zero_time(), Offset::UTC),
        Some(t) => parse_rfc3339(t.as_bytes()).ok_or_else(|| ParseError::Timestamp(t.to_string()))?,
    };
    let stream = l.stream.unwrap_or_default();
    Ok(LogMessage {
        timestamp,
        offset,
        stream: LogStream::from_bytes(stream.as_bytes()).ok_or(stream),
        log: Cow::Owned(l.log.unwrap_or_default().into_bytes()),
    })
}

/// Go's `time.Parse(RFC3339NanoLenient)`: `YYYY-MM-DDTHH:MM:SS[.frac]` then `Z` or `±HH:MM`;
/// the fraction may have any number of digits (beyond 9 they are dropped) and `,` as separator.
pub fn parse_rfc3339(b: &[u8]) -> Option<(Timestamp, Offset)> {
    fn num(b: &[u8]) -> Option<i32> {
        if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(b.iter().fold(0i32, |n, &d| n * 10 + i32::from(d - b'0')))
    }
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = num(&b[0..4])?;
    let month = num(&b[5..7])?;
    let day = num(&b[8..10])?;
    let hour = num(&b[11..13])?;
    let minute = num(&b[14..16])?;
    let second = num(&b[17..19])?;
    let mut i = 19;
    let mut nanos = 0i32;
    if (b[i] == b'.' || b[i] == b',') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
        let mut digits = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            if digits < 9 {
                nanos = nanos * 10 + i32::from(b[i] - b'0');
                digits += 1;
            }
            i += 1;
        }
        for _ in digits..9 {
            nanos *= 10;
        }
    }
    let zone = &b[i..];
    let offset_seconds = match zone {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = num(&[*h1, *h2])?;
            let m = num(&[*m1, *m2])?;
            if h >= 24 || m >= 60 {
                return None;
            }
            let s = h * 3600 + m * 60;
            if *sign == b'-' {
                -s
            } else {
                s
            }
        }
        _ => return None,
    };
    let dt = jiff::civil::DateTime::new(
        i16::try_from(year).ok()?,
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
        i8::try_from(hour).ok()?,
        i8::try_from(minute).ok()?,
        i8::try_from(second).ok()?,
        nanos,
    )
    .ok()?;
    let offset = Offset::from_seconds(offset_seconds).ok()?;
    let ts = offset.to_timestamp(dt).ok()?;
    Some((ts, offset))
}

/// `RFC3339NanoFixed` (`2006-01-02T15:04:05.000000000Z07:00`) in the entry's own offset.
pub fn format_timestamp(ts: Timestamp, offset: Offset) -> String {
    let dt = offset.to_datetime(ts);
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond()
    );
    let secs = offset.seconds();
    if secs == 0 {
        s.push('Z');
    } else {
        let sign = if secs < 0 { '-' } else { '+' };
        let abs = secs.unsigned_abs();
        s.push_str(&format!("{sign}{:02}:{:02}", abs / 3600, (abs % 3600) / 60));
    }
    s
}

/// What writing one entry led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// Nothing to write (older than `since`, or a stream not asked for).
    Skipped,
    /// Bytes to send; `last` when the byte limit is reached with them (`errMaximumWrite`).
    Chunk { chunk: LogChunk, last: bool },
}

/// `logWriter`: applies `since`, `timestamps`, the stream selection and `limitBytes`.
#[derive(Debug)]
pub struct LogWriter {
    since: Option<Timestamp>,
    timestamp: bool,
    stream: StreamSelect,
    remain: i64,
}

impl LogWriter {
    pub fn new(opts: &LogOptions) -> Self {
        Self {
            since: opts.since,
            timestamp: opts.timestamp,
            stream: opts.stream,
            remain: if opts.bytes >= 0 { opts.bytes } else { i64::MAX },
        }
    }

    pub fn write(&mut self, msg: &LogMessage<'_>) -> Result<Written, LogsError> {
        if self.since.is_some_and(|since| msg.timestamp < since) {
            return Ok(Written::Skipped);
        }
        let stream = match &msg.stream {
            Ok(s) => *s,
            Err(raw) => return Err(LogsError::UnexpectedStream(raw.clone())),
        };
        // keel: the alpha stream selection drops the other stream before it counts toward
        // limitBytes (the kubelet discards it into io.Discard).
        if !self.stream.wants(stream) {
            return Ok(Written::Skipped);
        }
        let mut line = Vec::with_capacity(msg.log.len() + 32);
        if self.timestamp {
            line.extend_from_slice(format_timestamp(msg.timestamp, msg.offset).as_bytes());
            line.push(b' ');
        }
        line.extend_from_slice(&msg.log);
        let remain = usize::try_from(self.remain).unwrap_or(usize::MAX);
        line.truncate(remain);
        self.remain -= line.len() as i64;
        Ok(Written::Chunk {
            chunk: LogChunk {
                stream,
                data: Bytes::from(line),
            },
            last: self.remain <= 0,
        })
    }
}

/// `tail.FindTailLineStartIndex`: the offset of the start of the N-th last line (`n < 0`: 0).
/// An incomplete last line (no newline) is not counted.
pub fn find_tail_line_start_index<F: Read + Seek>(f: &mut F, n: i64) -> std::io::Result<u64> {
    if n < 0 {
        return Ok(0);
    }
    let n = n as u64;
    let size = f.seek(SeekFrom::End(0))?;
    let mut left = size;
    let mut cnt: u64 = 0;
    let mut buf = Vec::new();
    let mut right = size;
    while right > 0 && cnt <= n {
        left = right.saturating_sub(TAIL_BLOCK_SIZE);
        buf.resize((right - left) as usize, 0);
        f.seek(SeekFrom::Start(left))?;
        f.read_exact(&mut buf)?;
        cnt += buf.iter().filter(|&&c| c == b'\n').count() as u64;
        right = left;
    }
    let mut pos = 0usize;
    while cnt > n {
        match buf[pos..].iter().position(|&c| c == b'\n') {
            Some(i) => pos += i + 1,
            None => break,
        }
        cnt -= 1;
    }
    Ok(left + pos as u64)
}

/// What a follower saw while waiting.
enum Wait {
    /// New data, or the forced re-check came due.
    Data,
    /// The path now names another file.
    Recreated,
    /// The container is no longer running.
    Exited,
    /// Nobody reads the output any more.
    ClientGone,
}

/// Device and inode of a file: how a rotation (rename + new file at the path) is noticed.
fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

async fn is_container_running<R: RuntimeService + ?Sized>(runtime: &R, id: &str) -> Result<bool, LogsError> {
    let resp = runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        })
        .await
        .map_err(|source| LogsError::ContainerStatus {
            container_id: id.to_string(),
            source,
        })?;
    let state = resp.status.map(|s| s.state);
    // Not running is the normal end of a follow, not an error.
    Ok(state == Some(cri::ContainerState::ContainerRunning as i32))
}

/// What a follower waits on: the container (through the runtime), the file at `path`, and the
/// reader of the output.
struct Follower<'a, R: ?Sized> {
    runtime: &'a R,
    id: &'a str,
    clock: &'a Clock,
    path: &'a Path,
    out: &'a mpsc::Sender<LogChunk>,
}

/// `waitLogs`: returns at once if the container is not running; otherwise when the file grew
/// past `offset`, the path names another file than `current`, or the forced re-check period is
/// over.
async fn wait_logs<R: RuntimeService + ?Sized>(
    f: &Follower<'_, R>,
    file: &tokio::fs::File,
    current: (u64, u64),
    offset: u64,
) -> Result<Wait, LogsError> {
    let Follower {
        runtime,
        id,
        clock,
        path,
        out,
    } = *f;
    if !is_container_running(runtime, id).await? {
        return Ok(Wait::Exited);
    }
    let deadline = clock.deadline(LOG_FORCE_CHECK_PERIOD);
    loop {
        if file.metadata().await.is_ok_and(|m| m.len() > offset) {
            return Ok(Wait::Data);
        }
        // A missing path (between rename and reopen) is not a new file yet.
        if tokio::fs::metadata(path).await.is_ok_and(|m| identity(&m) != current) {
            return Ok(Wait::Recreated);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Wait::Data);
        }
        let next = (tokio::time::Instant::now() + LOG_POLL_INTERVAL).min(deadline);
        tokio::select! {
            _ = out.closed() => return Ok(Wait::ClientGone),
            _ = tokio::time::sleep_until(next) => {}
        }
    }
}

/// Opens `path` positioned at the start of its `tail`-th last line.
fn open_at_tail(path: &Path, tail: i64) -> Result<(std::fs::File, u64), LogsError> {
    let mut file = std::fs::File::open(path).map_err(|source| LogsError::OpenFile {
        path: path.to_path_buf(),
        source,
    })?;
    let tail_err = |source| LogsError::Tail {
        tail,
        path: path.to_path_buf(),
        source,
    };
    let start = find_tail_line_start_index(&mut file, tail).map_err(tail_err)?;
    file.seek(SeekFrom::Start(start)).map_err(tail_err)?;
    Ok((file, start))
}

/// `ReadLogs`: reads the log at `path` (symlinks resolved) with `opts` and sends the output to
/// `out` in file order. `container_id` is asked about (CRI ContainerStatus) while following.
/// Returns when done, when the byte or line limit is reached, or when `out` is closed.
pub async fn read_logs<R: RuntimeService + ?Sized>(
    path: &Path,
    container_id: &str,
    opts: &LogOptions,
    runtime: &R,
    clock: &Clock,
    out: &mpsc::Sender<LogChunk>,
) -> Result<(), LogsError> {
    let path = tokio::fs::canonicalize(path)
        .await
        .map_err(|source| LogsError::ResolveSymlinks {
            path: path.to_path_buf(),
            source,
        })?;
    // Opening and the backwards tail search are blocking file I/O.
    let (p, tail) = (path.clone(), opts.tail);
    let (file, start) = tokio::task::spawn_blocking(move || open_at_tail(&p, tail))
        .await
        .map_err(|e| LogsError::OpenFile {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })??;
    let read_err = |source| LogsError::Read {
        path: path.clone(),
        source,
    };
    let mut current = identity(&file.metadata().map_err(read_err)?);
    let mut reader = BufReader::new(tokio::fs::File::from_std(file));
    let mut offset = start;
    let limited = opts.tail >= 0 && !opts.follow;
    let mut limited_num = opts.tail;
    let mut format: Option<LogFormat> = None;
    let mut found = true;
    let mut stop = false;
    let mut next_file: Option<tokio::fs::File> = None;
    let mut writer = LogWriter::new(opts);
    let mut line = Vec::new();
    let canonical = path.clone();
    let follower = Follower {
        runtime,
        id: container_id,
        clock,
        path: &canonical,
        out,
    };
    loop {
        if stop || (limited && limited_num == 0) {
            return Ok(());
        }
        let n = reader.read_until(b'\n', &mut line).await.map_err(read_err)?;
        offset += n as u64;
        if line.last() != Some(&b'\n') {
            // End of the file, possibly after an incomplete line.
            if opts.follow {
                if let Some(new) = next_file.take() {
                    // The old file is drained: continue with the one now at the path.
                    current = identity(&new.metadata().await.map_err(read_err)?);
                    reader = BufReader::new(new);
                    offset = 0;
                    line.clear();
                    continue;
                }
                if !found {
                    return Ok(());
                }
                // An incomplete line stays in `line`: the next read appends the rest of it.
                match wait_logs(&follower, reader.get_ref(), current, offset).await? {
                    Wait::Data => {}
                    Wait::Exited => found = false,
                    Wait::ClientGone => return Ok(()),
                    Wait::Recreated => match tokio::fs::File::open(&path).await {
                        Ok(f) => next_file = Some(f),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(source) => return Err(LogsError::OpenFile { path, source }),
                    },
                }
                continue;
            }
            // Without follow: emit the remaining content once, then stop.
            stop = true;
            if line.is_empty() {
                continue;
            }
            tracing::debug!(path = %path.display(), "incomplete line in log file");
        }
        let fmt = match format {
            Some(f) => f,
            None => {
                let f = LogFormat::detect(&line).map_err(|source| LogsError::UnsupportedFormat { source })?;
                format = Some(f);
                f
            }
        };
        let written = match fmt.parse(&line) {
            Ok(msg) => writer.write(&msg)?,
            Err(e) => {
                // The kubelet skips lines it cannot parse.
                tracing::debug!(path = %path.display(), error = %e, "skipping unparseable log line");
                line.clear();
                continue;
            }
        };
        line.clear();
        if let Written::Chunk { chunk, last } = written {
            if out.send(chunk).await.is_err() || last {
                return Ok(());
            }
        }
        if limited {
            limited_num -= 1;
        }
    }
}

impl RuntimeManager {
    /// `GetContainerLogs`: the container's log path from the runtime, then [`read_logs`].
    pub async fn get_container_logs(
        &self,
        container_id: &str,
        opts: &LogOptions,
        out: &mpsc::Sender<LogChunk>,
    ) -> Result<(), LogsError> {
        let resp = self
            .runtime()
            .container_status(cri::ContainerStatusRequest {
                container_id: container_id.to_string(),
                verbose: false,
            })
            .await
            .map_err(|source| LogsError::ContainerStatus {
                container_id: container_id.to_string(),
                source,
            })?;
        let status = resp.status.ok_or_else(|| LogsError::ContainerStatusNil {
            container_id: container_id.to_string(),
        })?;
        // containerd reports the full path; a relative one is under the pod's log directory.
        let l = super::labels::container_info_from_labels(&status.labels);
        let path = self.resolve_log_path(&status.log_path, &l.pod_namespace, &l.pod_name, &l.pod_uid);
        read_logs(&path, container_id, opts, &**self.runtime(), &self.config().clock, out).await
    }
}

#[cfg(test)]
pub(crate) mod tests;
