//! keel: a Kubernetes node agent (a kubelet replacement).
#![deny(unsafe_code)]

pub mod backends;
pub mod clock;
pub mod criserver;
pub mod genericruntime;
pub mod kubelet;
pub mod metrics;
pub mod podspec;
pub mod repeats;
pub mod streaming;
