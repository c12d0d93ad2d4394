//! Per-call deadlines and error mapping for the remote CRI client.
//!
//! The numbers are the kubelet's (`pkg/kubelet/cri/remote`, behaviour spec §0): 2 min per call,
//! twice that for sandbox lifecycle calls, StopContainer and ExecSync get the runtime's own timeout
//! on top. A call that runs out of time becomes `Code::DeadlineExceeded`; a call that never reached
//! the runtime (socket missing, connection refused or reset) becomes `Code::Unavailable` naming
//! the socket, so the manager's "runtime down" logic sees one code for one condition.

use std::error::Error as _;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use crate::clock::Clock;
use crate::genericruntime::seam::{Code, RuntimeError};

/// The kubelet's `--runtime-request-timeout` default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2 * 60);
/// RunPodSandbox / StopPodSandbox / RemovePodSandbox: twice the default (network set-up and
/// tear-down can be slow).
pub const SANDBOX_TIMEOUT: Duration = Duration::from_secs(4 * 60);
/// PullImage has no deadline in the kubelet (the image manager watches pull progress instead);
/// this only bounds a pull that hangs forever. Real time: a registry does not run on keel's clock.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// A compressed clock must not make a real runtime's ordinary latency on a loaded machine look
/// like a hang, so a scaled deadline never drops below this (real time).
pub const MIN_REAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for runtime-supplied seconds (grace periods, exec timeouts): gRPC cannot encode
/// absurd deadlines, and nothing legitimate waits a year.
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Deadlines for each kind of call, derived from keel's clock.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    clock: Clock,
}

impl Timeouts {
    pub fn new(clock: Clock) -> Self {
        Self { clock }
    }

    /// A kubelet number (virtual time) as a real deadline, never below [`MIN_REAL_TIMEOUT`].
    fn scaled(&self, virtual_duration: Duration) -> Duration {
        self.clock.to_real(virtual_duration).max(MIN_REAL_TIMEOUT)
    }

    /// Every call without a rule of its own.
    pub fn default_call(&self) -> Duration {
        self.scaled(DEFAULT_TIMEOUT)
    }

    /// RunPodSandbox, StopPodSandbox, RemovePodSandbox.
    pub fn sandbox(&self) -> Duration {
        self.scaled(SANDBOX_TIMEOUT)
    }

    /// StopContainer: the default plus the grace period the runtime will wait before SIGKILL.
    /// The grace part is not scaled: the runtime counts it in real seconds.
    pub fn stop_container(&self, timeout_seconds: i64) -> Duration {
        self.default_call()
            .saturating_add(runtime_seconds(timeout_seconds))
            .min(MAX_CALL_TIMEOUT)
    }

    /// ExecSync: the command's own timeout plus the default as a margin for the runtime's
    /// clean-up (as the kubelet does); timeout 0 means no deadline at all (lifecycle hooks).
    pub fn exec_sync(&self, timeout_seconds: i64) -> Option<Duration> {
        if timeout_seconds <= 0 {
            return None;
        }
        Some(
            self.default_call()
                .saturating_add(runtime_seconds(timeout_seconds))
                .min(MAX_CALL_TIMEOUT),
        )
    }

    /// PullImage (see [`PULL_TIMEOUT`]).
    pub fn pull(&self) -> Duration {
        PULL_TIMEOUT
    }
}

/// Seconds from a CRI request as a duration (negative counts as zero).
fn runtime_seconds(seconds: i64) -> Duration {
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0)).min(MAX_CALL_TIMEOUT)
}

/// Runs one call under `deadline` (none: unbounded), turning an expired deadline into
/// `DeadlineExceeded` and a failed status into a [`RuntimeError`].
pub async fn with_deadline<T, F>(
    op: &'static str,
    socket: &Path,
    deadline: Option<Duration>,
    call: F,
) -> Result<T, RuntimeError>
where
    F: Future<Output = Result<T, tonic::Status>>,
{
    let outcome = match deadline {
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(outcome) => outcome,
            Err(_elapsed) => return Err(deadline_exceeded(op, socket, limit)),
        },
        None => call.await,
    };
    outcome.map_err(|status| map_status(op, socket, &status))
}

/// The error for a call that ran past its deadline (the call itself was dropped, which cancels
/// the gRPC stream).
pub fn deadline_exceeded(op: &'static str, socket: &Path, limit: Duration) -> RuntimeError {
    RuntimeError::new(
        op,
        Code::DeadlineExceeded,
        format!(
            "no answer from the CRI runtime at {} within {:.1}s",
            socket.display(),
            limit.as_secs_f64()
        ),
    )
}

/// Maps a failed call's status. A status the runtime sent has no source error; one tonic made up
/// on the client side (connect failure, connection reset, HTTP/2 error) carries the transport error
/// as its source: those mean the runtime was not reachable, whatever code tonic picked.
pub fn map_status(op: &'static str, socket: &Path, status: &tonic::Status) -> RuntimeError {
    match status.source() {
        None => RuntimeError::from_status(op, status),
        Some(source) => {
            let mut message = format!(
                "cannot reach the CRI runtime at {}: {}",
                socket.display(),
                status.message()
            );
            // The useful part (the io error) is usually a few levels down.
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
            while let Some(err) = cause {
                let text = err.to_string();
                if !text.is_empty() && !message.contains(&text) {
                    message.push_str(": ");
                    message.push_str(&text);
                }
                cause = err.source();
            }
            RuntimeError::new(op, Code::Unavailable, message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn sock() -> PathBuf {
        PathBuf::from("/run/test/containerd.sock")
    }

    #[test]
    fn real_clock_uses_kubelet_numbers() {
        let t = Timeouts::new(Clock::real());
        assert_eq!(t.default_call(), Duration::from_secs(120));
        assert_eq!(t.sandbox(), Duration::from_secs(240));
        assert_eq!(t.stop_container(30), Duration::from_secs(150));
        assert_eq!(t.stop_container(0), Duration::from_secs(120));
        assert_eq!(t.stop_container(-5), Duration::from_secs(120));
        assert_eq!(t.exec_sync(1), Some(Duration::from_secs(121)));
        assert_eq!(t.exec_sync(0), None);
        assert_eq!(t.exec_sync(-1), None);
        assert_eq!(t.pull(), Duration::from_secs(3600));
    }

    #[test]
    fn scaled_clock_compresses_kubelet_part_only() {
        let t = Timeouts::new(Clock::scaled(4.0));
        assert_eq!(t.default_call(), Duration::from_secs(30));
        assert_eq!(t.sandbox(), Duration::from_secs(60));
        // The grace period is the runtime's real seconds.
        assert_eq!(t.stop_container(30), Duration::from_secs(60));
        assert_eq!(t.exec_sync(5), Some(Duration::from_secs(35)));
        // Never below the floor, however fast the clock.
        let fast = Timeouts::new(Clock::scaled(1000.0));
        assert_eq!(fast.default_call(), MIN_REAL_TIMEOUT);
        assert_eq!(fast.sandbox(), MIN_REAL_TIMEOUT);
        // The pull guard is real time.
        assert_eq!(fast.pull(), PULL_TIMEOUT);
    }

    #[test]
    fn huge_runtime_timeouts_are_capped() {
        let t = Timeouts::new(Clock::real());
        assert_eq!(t.stop_container(i64::MAX), MAX_CALL_TIMEOUT);
        assert_eq!(t.exec_sync(i64::MAX), Some(MAX_CALL_TIMEOUT));
        // And the cap is encodable as a gRPC timeout header.
        let mut req = tonic::Request::new(());
        req.set_timeout(MAX_CALL_TIMEOUT);
    }

    #[test]
    fn runtime_status_keeps_code_and_message() {
        let cases = [
            (tonic::Code::NotFound, Code::NotFound),
            (tonic::Code::DeadlineExceeded, Code::DeadlineExceeded),
            (tonic::Code::Unimplemented, Code::Unimplemented),
            (tonic::Code::Unavailable, Code::Unavailable),
            (tonic::Code::PermissionDenied, Code::Unknown),
        ];
        for (tonic_code, code) in cases {
            let status = tonic::Status::new(tonic_code, "container \"abc\" not found");
            let err = map_status("ContainerStatus", &sock(), &status);
            assert_eq!(err.op, "ContainerStatus");
            assert_eq!(err.code, code);
            assert_eq!(err.message, "container \"abc\" not found");
        }
    }

    #[test]
    fn transport_failure_is_unavailable_naming_the_socket() {
        // What tonic builds when the connector fails: a status whose source is the io error.
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let status = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(io))));
        assert!(status.source().is_some());
        let err = map_status("ListPodSandbox", &sock(), &status);
        assert_eq!(err.code, Code::Unavailable);
        assert!(err.message.contains("/run/test/containerd.sock"), "{}", err.message);
        assert!(err.message.contains("No such file or directory"), "{}", err.message);
        assert_eq!(
            err.message.matches("No such file or directory").count(),
            1,
            "{}",
            err.message
        );

        // Even when tonic cannot classify the transport error it is still "unreachable".
        let other = tonic::Status::from_error(Box::new(std::io::Error::other("connection reset")));
        assert_eq!(other.code(), tonic::Code::Unknown);
        let err = map_status("Version", &sock(), &other);
        assert_eq!(err.code, Code::Unavailable);
        assert!(err.message.contains("connection reset"), "{}", err.message);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_expiry_is_deadline_exceeded() {
        let never = std::future::pending::<Result<(), tonic::Status>>();
        let err = with_deadline("RunPodSandbox", &sock(), Some(Duration::from_secs(240)), never)
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::DeadlineExceeded);
        assert_eq!(err.op, "RunPodSandbox");
        assert!(err.message.contains("240.0s"), "{}", err.message);
        assert!(err.message.contains("/run/test/containerd.sock"), "{}", err.message);
    }

    #[tokio::test(start_paused = true)]
    async fn answer_before_deadline_passes_through() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(119)).await;
            Ok::<_, tonic::Status>(7)
        };
        assert_eq!(
            with_deadline("Status", &sock(), Some(DEFAULT_TIMEOUT), slow).await,
            Ok(7)
        );

        let failing = async { Err::<(), _>(tonic::Status::not_found("sandbox gone")) };
        let err = with_deadline("PodSandboxStatus", &sock(), None, failing)
            .await
            .unwrap_err();
        assert!(err.is_not_found());
        assert_eq!(err.message, "sandbox gone");
    }

    #[tokio::test(start_paused = true)]
    async fn no_deadline_waits_as_long_as_it_takes() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(10 * 3600)).await;
            Ok::<_, tonic::Status>("done")
        };
        assert_eq!(with_deadline("ExecSync", &sock(), None, slow).await, Ok("done"));
    }
}
