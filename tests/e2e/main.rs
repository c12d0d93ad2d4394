//! keel's end-to-end test binary: one module per area.

#[path = "../support/mod.rs"]
mod support;

mod apiserver;
mod cri_backend;
mod node;
mod sources;
mod status;
