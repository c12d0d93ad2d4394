//! keel's own image service: pull, import, unpack and store OCI images with no container daemon.
//!
//! Layout under `<root-dir>/native/images`: `content/` (blobs by digest), `snapshots/<chain id>/fs`
//! (unpacked layers, overlay lower dirs), `images.json` (names and records).

pub mod cli;
pub mod content;
pub mod digest;
pub mod direct;
pub mod hosts;
pub mod import;
pub mod manifest;
pub mod metadata;
pub mod preload;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod service;
pub mod snapshots;
pub mod store;
pub mod unpack;

pub use service::NativeImages;
pub use store::ImageStore;
