//! The Generic Runtime Manager: SyncPod, restart and back-off, kill, image pulls, relist, GC and
//! container logs, on top of the CRI-shaped seam every backend implements.

pub mod actions;
pub mod backoff;
pub mod container;
pub mod expand;
pub mod gc;
pub mod hash;
pub mod hooks;
pub mod imagegc;
pub mod images;
pub mod instrumented;
pub mod kill;
pub mod labels;
pub mod logrotate;
pub mod logs;
pub mod manager;
pub mod podstatus;
pub mod relist;
pub mod sandbox;
pub mod seam;
pub mod streams;
pub mod sync;
pub mod types;
pub mod util;

pub use manager::{ManagerConfig, RuntimeManager};
pub use seam::{cri, Code, ImageService, Runtime, RuntimeError, RuntimeService};
pub use types::*;

/// Errors of the runtime manager.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("runtime API version {got:?} is not supported (keel speaks CRI v1)")]
    UnsupportedApiVersion { got: String },
    #[error("pod {uid}: {message}")]
    Pod { uid: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod simtests;
