//! In-process streams: how a backend that runs processes itself (the simulated runtime, later
//! the native one) serves exec, attach and port-forward without a CRI streaming URL.
//!
//! The kubelet server terminates SPDY or WebSocket and hands the backend plain channels: one
//! `Bytes` channel per standard stream, plus terminal resizes. Closing a channel is EOF (the
//! server turns a closed stdout into a FIN); the bounded channels carry back-pressure from a slow
//! client to the process and from a slow process to the client.

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::seam::RuntimeError;

/// Capacity of each stream channel (chunks in flight per direction).
pub const STREAM_CHANNEL_CAPACITY: usize = 16;

/// A terminal size, as the resize stream carries it (`{"Width":80,"Height":24}`: the Go struct
/// has no json tags, so the keys are capitalised).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The process side of a remote command: each field is `Some` when the client asked for that
/// stream. With a TTY, stdout carries the terminal's output and stderr is `None`.
#[derive(Debug, Default)]
pub struct ProcessIo {
    /// Bytes from the client; the channel closing is stdin EOF.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<mpsc::Sender<Bytes>>,
    pub stderr: Option<mpsc::Sender<Bytes>>,
    /// Terminal resizes (TTY only; the first arrives right after the streams are set up).
    pub resize: Option<mpsc::Receiver<TermSize>>,
}

/// A bidirectional byte stream (a forwarded port's connection).
pub trait StreamIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> StreamIo for T {}

pub type BoxedIo = Box<dyn StreamIo>;

/// Exec, attach and port-forward served by the backend itself.
#[async_trait]
pub trait LocalStreams: Send + Sync {
    /// Runs `cmd` in the container with the given streams; the process's exit code.
    async fn exec(&self, container_id: &str, cmd: Vec<String>, tty: bool, io: ProcessIo) -> Result<i32, RuntimeError>;

    /// Attaches to the container's main process until it exits or the client goes away.
    async fn attach(&self, container_id: &str, tty: bool, io: ProcessIo) -> Result<(), RuntimeError>;

    /// Opens a connection to `port` inside the sandbox's network namespace.
    async fn port_forward(&self, sandbox_id: &str, port: u16) -> Result<BoxedIo, RuntimeError>;
}
