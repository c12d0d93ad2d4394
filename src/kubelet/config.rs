//! keel's configuration: `keel run` flags over a `KubeletConfiguration` file
//! (`kubelet.config.k8s.io/v1beta1`) over the kubelet's defaults.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;

/// Where the runtime lives.
#[derive(Clone, Debug, PartialEq)]
pub enum RuntimeEndpoint {
    /// The in-process simulated runtime.
    Sim,
    /// A remote CRI runtime on a unix socket.
    Unix(PathBuf),
}

/// The effective configuration (defaults ← file ← flags).
#[derive(Clone, Debug)]
pub struct Config {
    pub kubeconfig: Option<PathBuf>,
    pub standalone: bool,
    pub node_name: String,
    pub runtime: RuntimeEndpoint,
    pub image_service_endpoint: Option<RuntimeEndpoint>,
    /// Default `/var/lib/keel`.
    pub root_dir: PathBuf,
    /// Default `/var/log/pods`.
    pub pod_logs_dir: PathBuf,
    pub static_pod_path: Option<PathBuf>,
    pub address: IpAddr,
    pub port: u16,
    pub healthz_port: u16,
    pub node_ip: Option<IpAddr>,
    pub node_labels: BTreeMap<String, String>,
    pub register_node: bool,
    pub register_with_taints: Vec<Taint>,
    pub max_pods: i64,
    pub pods_per_core: i64,
    pub sync_frequency: Duration,
    pub node_status_update_frequency: Duration,
    pub node_status_report_frequency: Duration,
    pub node_lease_duration_seconds: i32,
    /// Resource name → quantity string, e.g. {"cpu": "100m", "memory": "100Mi"}.
    pub system_reserved: BTreeMap<String, String>,
    pub kube_reserved: BTreeMap<String, String>,
    /// Signal → threshold, e.g. {"memory.available": "100Mi", "nodefs.available": "10%"}.
    pub eviction_hard: BTreeMap<String, String>,
    pub authentication: Authentication,
    pub authorization: Authorization,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    pub cgroup_root: String,
    pub container_log_max_size: u64,
    pub container_log_max_files: u32,
    pub image_pull_progress_deadline: Duration,
    pub serialize_image_pulls: bool,
    /// Time scale of keel's clock (see `crate::clock`); 1 = real time.
    pub time_scale: f64,
    /// Simulated backend settings file (`--sim-config`), if any.
    pub sim_config: Option<PathBuf>,
}

/// `authentication` of the KubeletConfiguration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Authentication {
    pub anonymous_enabled: bool,
    pub webhook_enabled: bool,
    pub webhook_cache_ttl: Duration,
    pub x509_client_ca_file: Option<PathBuf>,
}

/// `authorization` of the KubeletConfiguration.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum AuthorizationMode {
    #[default]
    AlwaysAllow,
    Webhook,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Authorization {
    pub mode: AuthorizationMode,
    pub webhook_cache_authorized_ttl: Duration,
    pub webhook_cache_unauthorized_ttl: Duration,
}
