//! Shared support for keel's integration tests.

pub mod apiserver;
pub mod envtest;
pub mod keel;
pub mod kubelet;
pub mod native;
pub mod rawhttp;
pub mod util;
