//! Shared support for keel's integration tests.

pub mod apiserver;
