//! What exec, attach and port-forward share across SPDY and WebSocket: the query parameters,
//! the protocol names and the completion status written on the error stream
//! (kubelet-api-protocols.md §3.2, §3.4, §3.9).

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::genericruntime::seam::RuntimeError;
use crate::genericruntime::streams::{BoxedIo, ProcessIo};

/// Runs the process once the protocol has set up its streams (exec or attach on the backend).
pub type RunFn = Box<dyn FnOnce(ProcessIo) -> BoxFuture<'static, Outcome> + Send>;

/// Opens one forwarded connection to a port of the pod.
pub type DialFn = Arc<dyn Fn(u16) -> BoxFuture<'static, Result<BoxedIo, RuntimeError>> + Send + Sync>;

/// SPDY remote-command protocols, newest first (the server's preference list).
pub const SPDY_PROTOCOLS: [&str; 4] = [V4, V3, V2, V1];
pub const V1: &str = "channel.k8s.io";
pub const V2: &str = "v2.channel.k8s.io";
pub const V3: &str = "v3.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";
/// WebSocket only (KEP-4006): v4 framing plus the close signal.
pub const V5: &str = "v5.channel.k8s.io";
pub const BASE64_V1: &str = "base64.channel.k8s.io";
pub const BASE64_V4: &str = "v4.base64.channel.k8s.io";
pub const PORT_FORWARD: &str = "portforward.k8s.io";
/// Port-forward tunneled as SPDY bytes inside WebSocket binary messages.
pub const PORT_FORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
pub const STREAM_PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
pub const ACCEPTED_PROTOCOLS_HEADER: &str = "X-Accepted-Stream-Protocol-Versions";

/// How long the client has to open all the streams it announced (`DefaultStreamCreationTimeout`).
pub const STREAM_CREATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Which of exec or attach (their failure messages differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
}

/// The streams a client asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Bad query parameters: answered 400 before any upgrade.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("you must specify at least 1 of stdin, stdout, stderr")]
    NoStreams,
    #[error("missing command")]
    NoCommand,
    #[error("invalid port {0:?}")]
    BadPort(String),
    #[error("at least one port must be specified")]
    NoPorts,
}

/// Exec and attach parameters from the query string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecQuery {
    pub options: StreamOptions,
    /// argv (`command`, repeated); empty for attach.
    pub command: Vec<String>,
}

fn pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (decode(k), decode(v))
    })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; invalid escapes
/// stay as they are (Go's `ParseQuery` would reject the pair; keeping it is harmless here).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses exec/attach parameters. A flag is on only when its value is exactly `1`; a TTY turns
/// stderr off (the kubelet only logs that). `kind == Exec` requires a command.
pub fn parse_exec_query(query: &str, kind: Kind) -> Result<ExecQuery, QueryError> {
    let mut q = ExecQuery::default();
    for (k, v) in pairs(query) {
        let on = v == "1";
        match k.as_str() {
            "command" => q.command.push(v),
            "input" => q.options.stdin = on,
            "output" => q.options.stdout = on,
            "error" => q.options.stderr = on,
            "tty" => q.options.tty = on,
            _ => {}
        }
    }
    if q.options.tty {
        q.options.stderr = false;
    }
    let o = q.options;
    if !(o.stdin || o.stdout || o.stderr) {
        return Err(QueryError::NoStreams);
    }
    if kind == Kind::Exec && q.command.is_empty() {
        return Err(QueryError::NoCommand);
    }
    Ok(q)
}

/// Port-forward `port` parameters (repeated and/or comma-separated, each 1–65535); used only by
/// WebSocket port-forward, where they name the channels.
pub fn parse_ports(query: &str) -> Result<Vec<u16>, QueryError> {
    let mut ports = Vec::new();
    for (k, v) in pairs(query) {
        if k != "port" {
            continue;
        }
        for p in v.split(',') {
            let p = p.trim();
            match p.parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => return Err(QueryError::BadPort(p.to_string())),
            }
        }
    }
    if ports.is_empty() {
        return Err(QueryError::NoPorts);
    }
    Ok(ports)
}

/// How a remote command ended.
#[derive(Debug)]
pub enum Outcome {
    /// Exit code (0 is success).
    Exited(i32),
    /// The runtime failed to run or attach.
    Failed(RuntimeError),
}

/// The v4/v5 completion: one `metav1.Status` JSON object on the error stream.
pub fn status_v4(outcome: &Outcome, kind: Kind) -> Vec<u8> {
    let v = match outcome {
        Outcome::Exited(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => {
            // client-go parses the cause with ParseUint(…, 10, 8): keep it in 0–255, as a
            // shell reports a signal death (128+N) and wraps larger codes.
            let code = code.rem_euclid(256);
            serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            })
        }
        Outcome::Failed(e) => {
            let what = match kind {
                Kind::Exec => "error executing command in container",
                Kind::Attach => "error attaching to container",
            };
            let msg = format!("{what}: {}", e.message);
            serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("Internal error occurred: {msg}"),
                "reason": "InternalError",
                "details": {"causes": [{"message": msg}]},
                "code": 500,
            })
        }
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The v1–v3 completion: nothing on success, the error text on failure (no exit codes in those
/// protocols, so a non-zero exit is reported as text too).
pub fn status_legacy(outcome: &Outcome, kind: Kind) -> Vec<u8> {
    match outcome {
        Outcome::Exited(0) => Vec::new(),
        Outcome::Exited(code) => format!("command terminated with non-zero exit code: exit status {code}").into_bytes(),
        Outcome::Failed(e) => {
            let what = match kind {
                Kind::Exec => "error executing command in container",
                Kind::Attach => "error attaching to container",
            };
            format!("{what}: {}", e.message).into_bytes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genericruntime::seam::Code;

    #[test]
    fn query_flags_need_exactly_one() {
        let q = parse_exec_query(
            "command=sh&command=-c&command=echo+hi%21&input=1&output=true&error=1",
            Kind::Exec,
        )
        .unwrap();
        assert_eq!(q.command, ["sh", "-c", "echo hi!"]);
        assert_eq!(
            q.options,
            StreamOptions {
                stdin: true,
                stdout: false,
                stderr: true,
                tty: false
            }
        );
    }

    #[test]
    fn tty_turns_stderr_off() {
        let q = parse_exec_query("command=sh&output=1&error=1&tty=1", Kind::Exec).unwrap();
        assert!(q.options.tty && q.options.stdout && !q.options.stderr);
    }

    #[test]
    fn no_streams_or_no_command_is_refused() {
        assert_eq!(parse_exec_query("command=ls", Kind::Exec), Err(QueryError::NoStreams));
        assert_eq!(parse_exec_query("output=1", Kind::Exec), Err(QueryError::NoCommand));
        assert!(parse_exec_query("output=1", Kind::Attach).is_ok());
        assert_eq!(
            QueryError::NoStreams.to_string(),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
    }

    #[test]
    fn bad_escapes_do_not_panic() {
        for q in [
            "command=%",
            "command=%4",
            "command=%zz&output=1",
            "%%%=&&=",
            "command=%e2%82",
        ] {
            let _ = parse_exec_query(q, Kind::Exec);
        }
        assert_eq!(decode("a%2"), "a%2");
        assert_eq!(decode("%41%42"), "AB");
    }

    #[test]
    fn ports_repeated_and_comma_separated() {
        assert_eq!(parse_ports("port=80,443&port=8080").unwrap(), [80, 443, 8080]);
        assert_eq!(parse_ports("port=0"), Err(QueryError::BadPort("0".into())));
        assert_eq!(parse_ports("port=70000"), Err(QueryError::BadPort("70000".into())));
        assert_eq!(parse_ports(""), Err(QueryError::NoPorts));
    }

    #[test]
    fn v4_status_carries_the_exit_code() {
        let ok: serde_json::Value = serde_json::from_slice(&status_v4(&Outcome::Exited(0), Kind::Exec)).unwrap();
        assert_eq!(ok, serde_json::json!({"metadata": {}, "status": "Success"}));
        let f: serde_json::Value = serde_json::from_slice(&status_v4(&Outcome::Exited(7), Kind::Exec)).unwrap();
        assert_eq!(f["reason"], "NonZeroExitCode");
        assert_eq!(
            f["details"]["causes"][0],
            serde_json::json!({"reason": "ExitCode", "message": "7"})
        );
        let e = Outcome::Failed(RuntimeError::new("Exec", Code::NotFound, "container not found (\"c\")"));
        let f: serde_json::Value = serde_json::from_slice(&status_v4(&e, Kind::Attach)).unwrap();
        assert_eq!(f["reason"], "InternalError");
        assert_eq!(f["code"], 500);
        assert!(f["message"].as_str().unwrap().contains("error attaching to container"));
        assert!(status_legacy(&Outcome::Exited(0), Kind::Exec).is_empty());
    }
}
