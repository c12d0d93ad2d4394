//! Kubernetes CRI v1 bindings (types, gRPC client and server) generated at build time from
//! `proto/api.proto` by protox and tonic-prost-build: no `protoc` needed.
//!
//! keel depends on this crate under the name `k8s_cri`, so paths read `k8s_cri::v1::...` as with
//! the k8s-cri crate this replaces.

/// API version v1 (`runtime.v1`).
#[allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");

    /// The encoded `FileDescriptorSet` of `runtime.v1` (api.proto with its comments), for gRPC
    /// server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/runtime_v1_descriptor.bin"));
}
