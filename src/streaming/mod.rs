//! The kubelet server: HTTPS on `address:port` (10250) with the kubelet's authentication and
//! authorization, `/healthz` on a localhost port, exec/attach/port-forward over SPDY and
//! WebSocket, container logs, stats and metrics.
//!
//! Each area contributes its routes as an `axum::Router<AppState>`; `server` puts them behind
//! the auth filter.

use std::sync::Arc;

use crate::kubelet::syncloop::Core;

pub mod auth;
pub mod criserver;
pub mod exec;
pub mod healthz;
pub mod logs;
pub mod metrics;
pub mod pods;
pub mod proxy;
pub mod remotecommand;
pub mod server;
pub mod spdy;
pub mod stats;
pub mod tls;
pub mod websocket;

/// What the route handlers read: the kubelet's core (config, pods, runtime manager, cache,
/// status manager).
#[derive(Clone)]
pub struct AppState {
    pub core: Arc<Core>,
}
