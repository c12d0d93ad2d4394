//! The eviction manager (`pkg/kubelet/eviction`): every 10 s it reads the summary
//! (`/stats/summary`'s figures), compares the signals with `evictionHard`/`evictionSoft`, reports
//! MemoryPressure/DiskPressure/PIDPressure (held for `evictionPressureTransitionPeriod`), and
//! when a threshold is met past its grace period it first reclaims node-level resources for
//! disk signals (dead containers, unused images) and otherwise evicts one pod: ranked by the
//! kubelet's rules, killed with grace 1 s (hard) or min(spec, `evictionMaxPodGracePeriod`)
//! (soft), status Failed/`Evicted` with the kubelet's message, a Warning `Evicted` event.
//! Critical pods (static, mirror, system-critical priority) are never evicted. Admission under
//! pressure is [`crate::kubelet::admission`]'s eviction handler, reading the conditions this
//! manager puts on the Node.

pub mod host;
pub mod manager;
pub mod rank;
pub mod thresholds;

pub use manager::{EvictionConfig, EvictionHost, Manager, Pressure};
pub use thresholds::{parse_thresholds, Signal, Threshold, ThresholdConfig};

/// Eviction errors.
#[derive(Debug, thiserror::Error)]
pub enum EvictionError {
    /// A threshold setting that the kubelet would refuse at start-up.
    #[error("{field}: {message}")]
    Config { field: String, message: String },
    /// The summary could not be built this round.
    #[error("reading stats: {0}")]
    Stats(String),
}

#[cfg(test)]
mod tests;
