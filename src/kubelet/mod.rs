//! The node agent: node registration, status and lease; pod sources; pod workers; admission;
//! the status manager; events; and the loop that ties them to the runtime manager.

pub mod admission;
pub mod apiclient;
pub mod certificate;
pub mod cgroups;
pub mod checkpoint;
pub mod config;
pub mod events;
pub mod eviction;
pub mod hooks;
pub mod lease;
pub mod mirror;
pub mod node;
pub mod nodeinfo;
pub mod podmanager;
pub mod prober;
pub mod runopts;
pub mod services;
pub mod sources;
pub mod stats;
pub mod status;
pub mod syncloop;
pub mod sysctl;
pub mod volumes;
pub mod workers;

use std::time::Instant;

/// What the runtime side reports about its own health; node status turns it into the Ready
/// condition. Published on a `tokio::sync::watch` channel by the kubelet loop.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeHealth {
    /// `<name>://<version>` from CRI Version, "" until known.
    pub runtime_version: String,
    /// Last successful CRI Status call said RuntimeReady=true.
    pub runtime_ready: bool,
    /// Last successful CRI Status call said NetworkReady=true.
    pub network_ready: bool,
    /// Why the runtime is not ready / could not be reached, if so.
    pub runtime_error: Option<String>,
    pub network_error: Option<String>,
    /// When the runtime last answered a Status call.
    pub last_runtime_ok: Option<Instant>,
    /// When PLEG last relisted successfully.
    pub last_relist: Option<Instant>,
}
