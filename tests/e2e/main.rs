//! keel's end-to-end test binary: one module per area.

#[path = "../support/mod.rs"]
mod support;

mod apiserver;
mod apiserver_proxy;
mod checkpoint;
mod cri_backend;
mod cri_cgroups;
mod cri_lifecycle;
mod cri_podspec;
mod cri_probes;
mod cri_server;
mod cri_stats;
mod cri_streaming;
mod cri_volumes;
mod events;
mod kubelet_server;
mod logs;
mod native_images;
mod native_node;
mod native_runtime;
mod node;
mod probes;
mod real_bootstrap;
mod real_kubelet_on_keel_cri;
mod real_logs;
mod real_node;
mod real_pods;
mod real_static;
mod real_streaming;
mod real_tiers;
mod real_volumes;
mod runtimes;
mod sim_lifecycle;
mod sim_node;
mod sim_podspec;
mod sim_scale;
mod sources;
mod stats;
mod status;
mod streaming;
mod volumes;
