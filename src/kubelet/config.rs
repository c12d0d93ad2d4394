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
    /// keel's own runtime: real containers run by runc, no container daemon (`--runtime native`).
    Native,
}

/// The effective configuration (defaults ← file ← flags).
#[derive(Clone, Debug)]
pub struct Config {
    pub kubeconfig: Option<PathBuf>,
    /// Bootstrap kubeconfig for TLS bootstrapping (`--bootstrap-kubeconfig`).
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Where certificates live (`--cert-dir`); None: `<root_dir>/pki` (see `cert_dir()`).
    pub cert_dir: Option<PathBuf>,
    /// Renew the client certificate before it expires (`rotateCertificates`).
    pub rotate_certificates: bool,
    /// Serving certificate from a `kubelet-serving` CSR (`serverTLSBootstrap`).
    pub server_tls_bootstrap: bool,
    /// Log filter from `--log-level`, `--v` or `logging.verbosity` (None: `info`).
    pub log_filter: Option<String>,
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
    /// Plain-HTTP `/healthz` port on `healthz_bind_address`; 0 disables it.
    pub healthz_port: u16,
    pub healthz_bind_address: IpAddr,
    pub node_ip: Option<IpAddr>,
    pub node_labels: BTreeMap<String, String>,
    pub register_node: bool,
    pub register_with_taints: Vec<Taint>,
    pub max_pods: i64,
    pub pods_per_core: i64,
    /// `allowedUnsafeSysctls`: names or `prefix*` globs admitted beyond the safe set.
    pub allowed_unsafe_sysctls: Vec<String>,
    pub sync_frequency: Duration,
    pub node_status_update_frequency: Duration,
    pub node_status_report_frequency: Duration,
    pub node_lease_duration_seconds: i32,
    /// Resource name → quantity string, e.g. {"cpu": "100m", "memory": "100Mi"}.
    pub system_reserved: BTreeMap<String, String>,
    pub kube_reserved: BTreeMap<String, String>,
    /// Signal → threshold, e.g. {"memory.available": "100Mi", "nodefs.available": "10%"}.
    pub eviction_hard: BTreeMap<String, String>,
    /// `evictionSoft`, `evictionSoftGracePeriod` (signal → Go duration), `evictionMinimumReclaim`.
    pub eviction_soft: BTreeMap<String, String>,
    pub eviction_soft_grace_period: BTreeMap<String, String>,
    pub eviction_minimum_reclaim: BTreeMap<String, String>,
    /// `evictionMaxPodGracePeriod` (seconds; soft evictions).
    pub eviction_max_pod_grace_period: i64,
    /// `evictionPressureTransitionPeriod`.
    pub eviction_pressure_transition_period: Duration,
    pub authentication: Authentication,
    pub authorization: Authorization,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    pub cgroup_root: String,
    pub container_log_max_size: u64,
    pub container_log_max_files: u32,
    pub image_pull_progress_deadline: Duration,
    pub serialize_image_pulls: bool,
    /// `seccompDefault`: containers with no seccomp profile get RuntimeDefault (kubelet default false).
    pub seccomp_default: bool,
    /// Image GC (`imageGCHighThresholdPercent`, `imageGCLowThresholdPercent`, `imageMinimumGCAge`).
    /// `maxParallelImagePulls` (None: unlimited; only with serializeImagePulls false).
    pub max_parallel_image_pulls: Option<i32>,
    /// `registryPullQPS` (0: unlimited, keel's default) and `registryBurst`.
    pub registry_pull_qps: i32,
    pub registry_burst: i32,
    pub image_gc_high_threshold_percent: i32,
    pub image_gc_low_threshold_percent: i32,
    pub image_minimum_gc_age: Duration,
    /// `--pod-infra-container-image`: image GC never removes it (the runtime's own sandbox
    /// image is kept as well).
    pub pod_infra_container_image: Option<String>,
    /// containerd-style `<host>/hosts.toml` for the native backend (`registryConfigDir`,
    /// `--registry-config-dir`).
    pub registry_config_dir: PathBuf,
    /// Image archives the native backend imports at start-up (`imagePreloadDir`).
    pub image_preload_dir: Option<PathBuf>,
    /// The native backend's run-time state (`--native-run-dir`): pinned namespaces, monitor
    /// sockets, runc's root. A tmpfs, so that a reboot empties it.
    pub native_run_dir: PathBuf,
    /// The OCI runtime the native backend runs (`--runc`); None: `runc` on PATH.
    pub runc: Option<PathBuf>,
    /// CNI network configuration (`--cni-conf-dir`, the kubelet's dockershim-era flag).
    pub cni_conf_dir: PathBuf,
    /// CNI plugin directories searched in order (`--cni-bin-dir`, comma-separated).
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Cluster DNS servers for ClusterFirst pods (`clusterDNS`); empty = host resolv.conf.
    pub cluster_dns: Vec<String>,
    /// Cluster domain (`clusterDomain`) for the ClusterFirst search path and pod FQDNs.
    pub cluster_domain: String,
    /// The host resolver config Default pods inherit (`resolvConf`).
    pub resolv_conf: PathBuf,
    /// Time scale of keel's clock (see `crate::clock`); 1 = real time.
    pub time_scale: f64,
    /// Simulated backend settings file (`--sim-config`), if any.
    pub sim_config: Option<PathBuf>,
    /// Keep a local checkpoint of the node's API pods and start them from it after a restart
    /// while the API server is unreachable (`checkpointPods`, keel's own; see kubelet::checkpoint).
    pub checkpoint_pods: bool,
    /// Also checkpoint the ConfigMaps, Secrets and tokens those pods use (`checkpointSecrets`).
    pub checkpoint_secrets: bool,
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

// ---------------------------------------------------------------------------------------------
// Parsing: the `keel run` command line and the KubeletConfiguration file.
// ---------------------------------------------------------------------------------------------

use std::path::Path;

use k8s_openapi::api::core::v1::Taint as ApiTaint;
use serde_json::{Map, Value};

/// Kind and apiVersion a config file must carry.
pub const CONFIG_KIND: &str = "KubeletConfiguration";
pub const CONFIG_API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";

/// A configuration that could not be read or is invalid. Each variant names the failed step;
/// `field` is the flag or file field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing config file {path} as YAML: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("config file {path}: top level must be a mapping")]
    NotAMapping { path: PathBuf },
    #[error("config file {path}: kind must be {CONFIG_KIND:?}, got {got:?}")]
    WrongKind { path: PathBuf, got: String },
    #[error("config file {path}: apiVersion must be {CONFIG_API_VERSION:?}, got {got:?}")]
    WrongApiVersion { path: PathBuf, got: String },
    #[error("invalid value for {field}: {message}")]
    InvalidValue { field: String, message: String },
    #[error("cannot determine the node name from the hostname: {source}")]
    Hostname {
        #[source]
        source: nix::Error,
    },
}

impl ConfigError {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        ConfigError::InvalidValue {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// `keel` command line.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "keel", version, about = "A Kubernetes node agent (kubelet replacement)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at startup: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Run the node agent.
    Run(RunArgs),
    /// Serve an in-process runtime as a CRI v1 runtime on a unix socket.
    Cri(crate::criserver::CriArgs),
    /// Print the pods of the local checkpoint (`checkpointPods`) with their last known status.
    Pods(PodsArgs),
    /// Pull, list, remove and import images of the native backend's store.
    Images(crate::backends::native::images::cli::ImagesArgs),
    /// The pause process of a native pod that shares its PID namespace (internal).
    #[command(hide = true)]
    Pause(crate::backends::native::sandbox::pause::PauseArgs),
}

/// Flags of `keel pods`.
#[derive(clap::Args, Debug, Clone)]
pub struct PodsArgs {
    /// keel's state directory (the `--root-dir` of `keel run`).
    #[arg(long, default_value = "/var/lib/keel")]
    pub root_dir: PathBuf,
}

/// Flags of `keel run`. Every flag that is set overrides the config file.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// kubeconfig for the API server; absent (and not --standalone) means in-cluster config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Run without an API server (static pods only).
    #[arg(long)]
    pub standalone: bool,
    /// Node name (default: the hostname, lowercased); `--hostname-override` is the kubelet's name.
    #[arg(long, visible_alias = "hostname-override")]
    pub node_name: Option<String>,
    /// Runtime endpoint: `sim` (in-process simulated runtime), `native` (real containers run by
    /// runc, no container daemon) or `unix:///path/to/cri.sock`; `--container-runtime-endpoint`
    /// is the kubelet's name (unix:// only).
    #[arg(long, default_value = "sim")]
    pub runtime: String,
    /// The kubelet's name for the CRI endpoint (`unix:///path`); overrides --runtime.
    #[arg(long)]
    pub container_runtime_endpoint: Option<String>,
    /// The kubelet 1.24's runtime kind: only `remote` (a CRI endpoint) exists in keel.
    #[arg(long)]
    pub container_runtime: Option<String>,
    /// kubeconfig with bootstrap credentials: used to request the client certificate when
    /// --kubeconfig does not exist or its certificate is invalid, then --kubeconfig is written.
    #[arg(long)]
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Directory of the TLS certificates (default `<root-dir>/pki`).
    #[arg(long)]
    pub cert_dir: Option<PathBuf>,
    /// Rotate the client certificate before it expires (`--rotate-certificates[=true|false]`).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub rotate_certificates: Option<bool>,
    /// Request the serving certificate from the cluster (`kubelet-serving` CSR) and rotate it.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub rotate_server_certificates: Option<bool>,
    /// Register the node with the API server (`--register-node[=true|false]`).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub register_node: Option<bool>,
    /// `cgroupfs` (keel has no systemd cgroup driver yet).
    #[arg(long)]
    pub cgroup_driver: Option<String>,
    /// Sandbox image; with a CRI runtime the runtime chooses it (containerd's `sandbox_image`).
    #[arg(long)]
    pub pod_infra_container_image: Option<String>,
    /// Timeout of CRI requests except long-running ones (`2m0s`).
    #[arg(long)]
    pub runtime_request_timeout: Option<String>,
    /// klog verbosity (the kubelet's `--v`): 0–2 info, 3–4 keel debug, 5+ keel trace.
    #[arg(long = "v")]
    pub verbosity: Option<u8>,
    /// Image service endpoint, if different from --runtime (same syntax).
    #[arg(long)]
    pub image_service_endpoint: Option<String>,
    /// Registry hosts configuration (containerd's `certs.d/<host>/hosts.toml`) for the native
    /// backend (overrides registryConfigDir; default /etc/keel/certs.d).
    #[arg(long)]
    pub registry_config_dir: Option<PathBuf>,
    /// The native backend's run-time state: pinned namespaces, monitor sockets, runc's root
    /// (default /run/keel; keep it short: socket paths are limited to 108 bytes).
    #[arg(long)]
    pub native_run_dir: Option<PathBuf>,
    /// The runc binary the native backend runs (default: `runc` on PATH).
    #[arg(long)]
    pub runc: Option<PathBuf>,
    /// Directory of CNI network configurations for the native backend (default /etc/cni/net.d).
    #[arg(long)]
    pub cni_conf_dir: Option<PathBuf>,
    /// Comma-separated CNI plugin directories, searched in order (default
    /// /opt/cni/bin,/usr/lib/cni).
    #[arg(long, value_delimiter = ',')]
    pub cni_bin_dir: Option<Vec<PathBuf>>,
    /// Image archives (OCI layout tarballs, `docker save` archives) the native backend imports
    /// at start-up when not yet in its store (overrides imagePreloadDir).
    #[arg(long)]
    pub image_preload_dir: Option<PathBuf>,
    /// State directory.
    #[arg(long, default_value = "/var/lib/keel")]
    pub root_dir: PathBuf,
    /// Container log directory.
    #[arg(long, default_value = "/var/log/pods")]
    pub pod_logs_dir: PathBuf,
    /// Directory of static pod manifests (overrides staticPodPath).
    #[arg(long)]
    pub pod_manifest_path: Option<PathBuf>,
    /// KubeletConfiguration file (kubelet.config.k8s.io/v1beta1).
    #[arg(long = "config")]
    pub config: Option<PathBuf>,
    /// IP address to report for the node (must be on a local interface).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// Maximum number of pods on this node.
    #[arg(long)]
    pub max_pods: Option<i64>,
    /// Labels to add at registration: `k=v,k2=v2`.
    #[arg(long)]
    pub node_labels: Option<String>,
    /// Taints to add at registration: `key=value:Effect,key2:Effect`.
    #[arg(long)]
    pub register_with_taints: Option<String>,
    /// Address the kubelet server listens on.
    #[arg(long)]
    pub address: Option<IpAddr>,
    /// Port of the kubelet server.
    #[arg(long)]
    pub port: Option<u16>,
    /// Port of the plain-HTTP healthz endpoint (0 disables it).
    #[arg(long)]
    pub healthz_port: Option<u16>,
    /// Address of the plain-HTTP healthz endpoint.
    #[arg(long)]
    pub healthz_bind_address: Option<IpAddr>,
    /// CA bundle that authenticates client certificates (`authentication.x509.clientCAFile`).
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// Allow anonymous requests to the kubelet server (`--anonymous-auth[=true|false]`).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub anonymous_auth: Option<bool>,
    /// Authenticate bearer tokens with TokenReview (`--authentication-token-webhook[=true|false]`).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub authentication_token_webhook: Option<bool>,
    /// `AlwaysAllow` or `Webhook` (SubjectAccessReview).
    #[arg(long)]
    pub authorization_mode: Option<String>,
    /// Serving certificate (PEM, with intermediates after the leaf).
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key of the serving certificate (PEM).
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// Compressed clock: a virtual second lasts 1/N real seconds (back-offs, periods, grace).
    /// For test harnesses; 1 is real time.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Settings file of the simulated runtime.
    #[arg(long)]
    pub sim_config: Option<PathBuf>,
    /// Parent cgroup of the pod cgroups (`cgroupRoot`), e.g. `/keel`.
    #[arg(long)]
    pub cgroup_root: Option<String>,
    /// Cluster DNS server IPs, comma-separated (`clusterDNS`).
    #[arg(long, value_delimiter = ',')]
    pub cluster_dns: Option<Vec<String>>,
    /// Cluster domain (`clusterDomain`).
    #[arg(long)]
    pub cluster_domain: Option<String>,
    /// Log filter (tracing EnvFilter syntax, e.g. `info` or `keel=debug`).
    #[arg(short = 'v', long)]
    pub log_level: Option<String>,
    /// Checkpoint the node's API pods locally and start them from it after a restart while the
    /// API server is unreachable (`checkpointPods`).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub checkpoint_pods: Option<bool>,
    /// Also checkpoint the ConfigMaps, Secrets and service-account tokens they use
    /// (`checkpointSecrets`; stored 0600 under the root dir).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub checkpoint_secrets: Option<bool>,
}

/// Default hard eviction thresholds (`DefaultEvictionHard`).
pub fn default_eviction_hard() -> BTreeMap<String, String> {
    [
        ("memory.available", "100Mi"),
        ("nodefs.available", "10%"),
        ("nodefs.inodesFree", "5%"),
        ("imagefs.available", "15%"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Config {
    /// The eviction thresholds of `evictionHard`, `evictionSoft` (with their grace periods) and
    /// `evictionMinimumReclaim`.
    pub fn eviction_thresholds(
        &self,
    ) -> Result<Vec<crate::kubelet::eviction::Threshold>, crate::kubelet::eviction::EvictionError> {
        crate::kubelet::eviction::parse_thresholds(&crate::kubelet::eviction::ThresholdConfig {
            hard: Some(&self.eviction_hard),
            soft: Some(&self.eviction_soft),
            soft_grace_period: Some(&self.eviction_soft_grace_period),
            minimum_reclaim: Some(&self.eviction_minimum_reclaim),
        })
    }

    /// The kubelet's defaults (no file, no flags). Authentication/authorization are the
    /// flag-era defaults keel documents: anonymous disabled, no webhook, AlwaysAllow; a config
    /// file switches to the v1beta1 defaults (see `apply_file`).
    pub fn defaults(node_name: String) -> Config {
        Config {
            kubeconfig: None,
            bootstrap_kubeconfig: None,
            cert_dir: None,
            rotate_certificates: false,
            server_tls_bootstrap: false,
            log_filter: None,
            standalone: false,
            node_name,
            runtime: RuntimeEndpoint::Sim,
            image_service_endpoint: None,
            root_dir: PathBuf::from("/var/lib/keel"),
            pod_logs_dir: PathBuf::from("/var/log/pods"),
            static_pod_path: None,
            address: IpAddr::from([0, 0, 0, 0]),
            port: 10250,
            healthz_port: 10248,
            healthz_bind_address: IpAddr::from([127, 0, 0, 1]),
            node_ip: None,
            node_labels: BTreeMap::new(),
            register_node: true,
            register_with_taints: Vec::new(),
            max_pods: 110,
            pods_per_core: 0,
            allowed_unsafe_sysctls: Vec::new(),
            sync_frequency: Duration::from_secs(60),
            node_status_update_frequency: Duration::from_secs(10),
            node_status_report_frequency: Duration::from_secs(300),
            node_lease_duration_seconds: 40,
            system_reserved: BTreeMap::new(),
            kube_reserved: BTreeMap::new(),
            eviction_hard: default_eviction_hard(),
            eviction_soft: BTreeMap::new(),
            eviction_soft_grace_period: BTreeMap::new(),
            eviction_minimum_reclaim: BTreeMap::new(),
            eviction_max_pod_grace_period: 0,
            eviction_pressure_transition_period: Duration::from_secs(300),
            authentication: Authentication {
                anonymous_enabled: false,
                webhook_enabled: false,
                webhook_cache_ttl: Duration::from_secs(120),
                x509_client_ca_file: None,
            },
            authorization: Authorization {
                mode: AuthorizationMode::AlwaysAllow,
                webhook_cache_authorized_ttl: Duration::from_secs(300),
                webhook_cache_unauthorized_ttl: Duration::from_secs(30),
            },
            tls_cert_file: None,
            tls_private_key_file: None,
            cgroup_root: "/".to_string(),
            container_log_max_size: 10 * 1024 * 1024,
            container_log_max_files: 5,
            image_pull_progress_deadline: Duration::from_secs(60),
            serialize_image_pulls: true,
            seccomp_default: false,
            max_parallel_image_pulls: None,
            // The kubelet defaults to 5 / 10; keel leaves the limit off unless configured
            // (the e2e suites start many pods per node at once and assert on pull events).
            registry_pull_qps: 0,
            registry_burst: 10,
            image_gc_high_threshold_percent: 85,
            image_gc_low_threshold_percent: 80,
            image_minimum_gc_age: Duration::from_secs(120),
            pod_infra_container_image: None,
            registry_config_dir: PathBuf::from("/etc/keel/certs.d"),
            image_preload_dir: None,
            native_run_dir: PathBuf::from("/run/keel"),
            runc: None,
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            cni_bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".to_string(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            time_scale: 1.0,
            sim_config: None,
            checkpoint_pods: false,
            checkpoint_secrets: false,
        }
    }
}

impl Config {
    /// The certificate directory: `--cert-dir`, else `<root_dir>/pki` (the kubelet's default
    /// is `/var/lib/kubelet/pki`, its root dir's `pki`).
    pub fn cert_dir(&self) -> PathBuf {
        self.cert_dir.clone().unwrap_or_else(|| self.root_dir.join("pki"))
    }
}

/// Builds the effective configuration: defaults ← `--config` file ← flags. Logs one warning
/// naming the file fields keel does not implement.
pub fn load(args: &RunArgs) -> Result<Config, ConfigError> {
    load_inner(args, true)
}

/// As `load` without logging (to read the log filter before logging is set up).
pub fn load_quiet(args: &RunArgs) -> Result<Config, ConfigError> {
    load_inner(args, false)
}

fn load_inner(args: &RunArgs, warn: bool) -> Result<Config, ConfigError> {
    let node_name = match &args.node_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()
            .map_err(|source| ConfigError::Hostname { source })?
            .to_string_lossy()
            .to_lowercase(),
    };
    let mut cfg = Config::defaults(node_name);
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.clone(),
            source,
        })?;
        let ignored = apply_file(&mut cfg, &text, path)?;
        for field in ignored.iter().filter(|_| warn) {
            tracing::warn!("KubeletConfiguration field {field:?} is not supported by keel; ignored");
        }
    }
    apply_flags(&mut cfg, args)?;
    for note in flag_notes(args).iter().filter(|_| warn) {
        tracing::warn!("{note}");
    }
    Ok(cfg)
}

/// klog verbosity (`--v`, `logging.verbosity`) as a tracing filter.
pub fn verbosity_filter(v: u64) -> String {
    match v {
        0..=2 => "info".to_string(),
        3..=4 => "info,keel=debug".to_string(),
        _ => "info,keel=trace".to_string(),
    }
}

/// One line for each kubelet flag keel accepts but does not act on.
pub fn flag_notes(args: &RunArgs) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(img) = &args.pod_infra_container_image {
        notes.push(format!(
            "--pod-infra-container-image={img}: kept from image garbage collection only; with a CRI runtime the runtime chooses the sandbox image (containerd: sandbox_image)"
        ));
    }
    if let Some(t) = &args.runtime_request_timeout {
        notes.push(format!(
            "--runtime-request-timeout={t} is not supported by keel; CRI calls use the kubelet's default 2m0s"
        ));
    }
    notes
}

/// Applies the flags that are set onto `cfg`.
pub fn apply_flags(cfg: &mut Config, args: &RunArgs) -> Result<(), ConfigError> {
    cfg.kubeconfig = args.kubeconfig.clone();
    cfg.standalone = args.standalone;
    cfg.pod_infra_container_image = args.pod_infra_container_image.clone();
    if let Some(b) = &args.bootstrap_kubeconfig {
        if args.kubeconfig.is_none() {
            return Err(ConfigError::invalid(
                "--bootstrap-kubeconfig",
                "needs --kubeconfig: the path the kubeconfig is written to after bootstrapping",
            ));
        }
        cfg.bootstrap_kubeconfig = Some(b.clone());
    }
    if let Some(d) = &args.cert_dir {
        cfg.cert_dir = Some(d.clone());
    }
    if let Some(b) = args.rotate_certificates {
        cfg.rotate_certificates = b;
    }
    if let Some(b) = args.rotate_server_certificates {
        cfg.server_tls_bootstrap = b;
    }
    if let Some(b) = args.register_node {
        cfg.register_node = b;
    }
    if let Some(d) = &args.cgroup_driver {
        check_cgroup_driver("--cgroup-driver", d)?;
    }
    if let Some(r) = &args.container_runtime {
        if r != "remote" {
            return Err(ConfigError::invalid(
                "--container-runtime",
                format!(
                    "{r:?}: keel talks to runtimes through CRI only; use \"remote\" with --container-runtime-endpoint"
                ),
            ));
        }
    }
    if let Some(t) = &args.runtime_request_timeout {
        parse_go_duration(t).map_err(|m| ConfigError::invalid("--runtime-request-timeout", m))?;
    }
    if let Some(l) = &args.log_level {
        cfg.log_filter = Some(l.clone());
    } else if let Some(v) = args.verbosity {
        cfg.log_filter = Some(verbosity_filter(u64::from(v)));
    }
    if let Some(n) = &args.node_name {
        if n.is_empty() {
            return Err(ConfigError::invalid("--node-name", "must not be empty"));
        }
        cfg.node_name = n.clone();
    }
    cfg.runtime = match &args.container_runtime_endpoint {
        Some(ep) => match parse_endpoint("--container-runtime-endpoint", ep)? {
            RuntimeEndpoint::Sim => {
                return Err(ConfigError::invalid(
                    "--container-runtime-endpoint",
                    "must be a unix:// socket (in-process runtimes are --runtime sim or --runtime native)",
                ))
            }
            RuntimeEndpoint::Native => {
                return Err(ConfigError::invalid(
                    "--container-runtime-endpoint",
                    "must be a unix:// socket (in-process runtimes are --runtime sim or --runtime native)",
                ))
            }
            unix => unix,
        },
        None => parse_endpoint("--runtime", &args.runtime)?,
    };
    if let Some(ep) = &args.image_service_endpoint {
        cfg.image_service_endpoint = Some(parse_endpoint("--image-service-endpoint", ep)?);
    }
    cfg.root_dir = args.root_dir.clone();
    if let Some(d) = &args.registry_config_dir {
        cfg.registry_config_dir = d.clone();
    }
    if let Some(d) = &args.native_run_dir {
        if !d.is_absolute() {
            return Err(ConfigError::invalid("--native-run-dir", "must be an absolute path"));
        }
        // <run dir>/mon/<64 hex>.sock must fit a unix socket address (108 bytes with the NUL).
        if d.as_os_str().len() > 32 {
            return Err(ConfigError::invalid(
                "--native-run-dir",
                format!(
                    "{:?} is too long: monitor sockets under it must stay within the 108-byte unix socket path limit (at most 32 bytes)",
                    d.display().to_string()
                ),
            ));
        }
        cfg.native_run_dir = d.clone();
    }
    if let Some(r) = &args.runc {
        cfg.runc = Some(r.clone());
    }
    if let Some(d) = &args.cni_conf_dir {
        cfg.cni_conf_dir = d.clone();
    }
    // clap refuses empty items, so the list has at least one directory.
    if let Some(dirs) = &args.cni_bin_dir {
        cfg.cni_bin_dirs = dirs.clone();
    }
    if let Some(d) = &args.image_preload_dir {
        cfg.image_preload_dir = Some(d.clone());
    }
    cfg.pod_logs_dir = args.pod_logs_dir.clone();
    if let Some(p) = &args.pod_manifest_path {
        cfg.static_pod_path = Some(p.clone());
    }
    if let Some(ip) = args.node_ip {
        cfg.node_ip = Some(ip);
    }
    if let Some(m) = args.max_pods {
        if m < 0 {
            return Err(ConfigError::invalid("--max-pods", "must not be negative"));
        }
        cfg.max_pods = m;
    }
    if let Some(l) = &args.node_labels {
        cfg.node_labels.extend(parse_labels(l)?);
    }
    if let Some(t) = &args.register_with_taints {
        cfg.register_with_taints = parse_taints(t)?;
    }
    if let Some(a) = args.address {
        cfg.address = a;
    }
    if let Some(p) = args.port {
        cfg.port = p;
    }
    if let Some(p) = args.healthz_port {
        cfg.healthz_port = p;
    }
    if let Some(a) = args.healthz_bind_address {
        cfg.healthz_bind_address = a;
    }
    if let Some(p) = &args.client_ca_file {
        cfg.authentication.x509_client_ca_file = Some(p.clone());
    }
    if let Some(b) = args.anonymous_auth {
        cfg.authentication.anonymous_enabled = b;
    }
    if let Some(b) = args.authentication_token_webhook {
        cfg.authentication.webhook_enabled = b;
    }
    if let Some(m) = &args.authorization_mode {
        cfg.authorization.mode = parse_authorization_mode("--authorization-mode", m)?;
    }
    if let Some(p) = &args.tls_cert_file {
        cfg.tls_cert_file = Some(p.clone());
    }
    if let Some(p) = &args.tls_private_key_file {
        cfg.tls_private_key_file = Some(p.clone());
    }
    if !(args.time_scale.is_finite() && args.time_scale >= 1.0) {
        return Err(ConfigError::invalid("--time-scale", "must be a number >= 1"));
    }
    cfg.time_scale = args.time_scale;
    if let Some(s) = &args.sim_config {
        cfg.sim_config = Some(s.clone());
    }
    if let Some(b) = args.checkpoint_pods {
        cfg.checkpoint_pods = b;
    }
    if let Some(b) = args.checkpoint_secrets {
        cfg.checkpoint_secrets = b;
    }
    if let Some(r) = &args.cgroup_root {
        if !r.is_empty() && !r.starts_with('/') {
            return Err(ConfigError::invalid("--cgroup-root", "must be an absolute cgroup path"));
        }
        cfg.cgroup_root = if r.is_empty() { "/".to_string() } else { r.clone() };
    }
    if let Some(d) = &args.cluster_dns {
        check_cluster_dns("--cluster-dns", d)?;
        cfg.cluster_dns = d.clone();
    }
    if let Some(d) = &args.cluster_domain {
        cfg.cluster_domain = d.trim_end_matches('.').to_string();
    }
    Ok(())
}

/// keel's pod cgroups are cgroupfs-managed only.
fn check_cgroup_driver(field: &str, driver: &str) -> Result<(), ConfigError> {
    match driver {
        "cgroupfs" => Ok(()),
        "systemd" => Err(ConfigError::invalid(
            field,
            "keel does not support the systemd cgroup driver yet; use cgroupfs (and configure the CRI runtime's cgroup driver to match, e.g. containerd's SystemdCgroup = false)",
        )),
        other => Err(ConfigError::invalid(field, format!("{other:?}: expected cgroupfs"))),
    }
}

/// `AlwaysAllow` or `Webhook`.
pub fn parse_authorization_mode(field: &str, mode: &str) -> Result<AuthorizationMode, ConfigError> {
    match mode {
        "AlwaysAllow" => Ok(AuthorizationMode::AlwaysAllow),
        "Webhook" => Ok(AuthorizationMode::Webhook),
        other => Err(ConfigError::invalid(
            field,
            format!("{other:?}: expected AlwaysAllow or Webhook"),
        )),
    }
}

/// `sim`, `native` or `unix:///path`.
pub fn parse_endpoint(field: &str, s: &str) -> Result<RuntimeEndpoint, ConfigError> {
    match s {
        "sim" => return Ok(RuntimeEndpoint::Sim),
        "native" => return Ok(RuntimeEndpoint::Native),
        _ => {}
    }
    match s.strip_prefix("unix://") {
        Some(p) if p.starts_with('/') => Ok(RuntimeEndpoint::Unix(PathBuf::from(p))),
        _ => Err(ConfigError::invalid(
            field,
            format!("{s:?}: expected \"sim\", \"native\" or \"unix:///absolute/path\""),
        )),
    }
}

/// `k=v,k2=v2` (as `--node-labels`).
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| ConfigError::invalid("--node-labels", format!("{item:?} is not key=value")))?;
        check_label_key(k).map_err(|m| ConfigError::invalid("--node-labels", format!("key {k:?}: {m}")))?;
        if !v.is_empty() && !is_label_name(v) {
            return Err(ConfigError::invalid(
                "--node-labels",
                format!(
                    "value {v:?}: must be at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
                ),
            ));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// A label name / value: ≤ 63 chars of `[A-Za-z0-9-_.]`, alphanumeric at both ends.
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A DNS-1123 subdomain (label key prefix).
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// A qualified label key: `[prefix/]name`.
fn check_label_key(k: &str) -> Result<(), &'static str> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if prefix.is_some_and(|p| !is_dns_subdomain(p)) {
        return Err("prefix must be a DNS subdomain");
    }
    if !is_label_name(name) {
        return Err("name must be at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric");
    }
    Ok(())
}

fn check_effect(field: &str, effect: &str) -> Result<(), ConfigError> {
    match effect {
        "NoSchedule" | "PreferNoSchedule" | "NoExecute" => Ok(()),
        _ => Err(ConfigError::invalid(
            field,
            format!("invalid taint effect {effect:?} (NoSchedule, PreferNoSchedule or NoExecute)"),
        )),
    }
}

/// `key=value:Effect,key2:Effect` (as `--register-with-taints`).
pub fn parse_taints(s: &str) -> Result<Vec<Taint>, ConfigError> {
    const FIELD: &str = "--register-with-taints";
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (kv, effect) = item
            .rsplit_once(':')
            .ok_or_else(|| ConfigError::invalid(FIELD, format!("{item:?} is not key=value:Effect")))?;
        check_effect(FIELD, effect)?;
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (kv, None),
        };
        if key.is_empty() {
            return Err(ConfigError::invalid(FIELD, format!("{item:?} has an empty key")));
        }
        out.push(ApiTaint {
            key: key.to_string(),
            value,
            effect: effect.to_string(),
            time_added: None,
        });
    }
    Ok(out)
}

/// Parses a Go duration (`time.ParseDuration`): `300ms`, `1m0s`, `1h2m3.5s`, `0`.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let orig = s;
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err(format!("{orig:?}: negative durations are not allowed"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(format!("{orig:?}: empty duration"));
    }
    let mut total_nanos: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_end);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(format!("{orig:?}: invalid duration"));
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("{orig:?}: missing unit in duration")),
            u => return Err(format!("{orig:?}: unknown unit {u:?} in duration")),
        };
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| format!("{orig:?}: invalid duration"))?
        };
        let mut v = int
            .checked_mul(unit_nanos)
            .ok_or_else(|| format!("{orig:?}: duration out of range"))?;
        // Fractional part, truncated to nanoseconds like Go.
        let mut scale = unit_nanos;
        for d in frac_part.bytes().take(30) {
            scale /= 10;
            v += u128::from(d - b'0') * scale;
        }
        total_nanos = total_nanos
            .checked_add(v)
            .ok_or_else(|| format!("{orig:?}: duration out of range"))?;
        rest = next;
    }
    // Go's time.Duration is an int64 of nanoseconds.
    if total_nanos > i64::MAX as u128 {
        return Err(format!("{orig:?}: duration out of range"));
    }
    Ok(Duration::from_nanos(total_nanos as u64))
}

/// The file fields keel honours (top level).
const KNOWN_FIELDS: &[&str] = &[
    "kind",
    "apiVersion",
    "address",
    "port",
    "healthzPort",
    "healthzBindAddress",
    "staticPodPath",
    "maxPods",
    "podsPerCore",
    "allowedUnsafeSysctls",
    "syncFrequency",
    "nodeStatusUpdateFrequency",
    "nodeStatusReportFrequency",
    "nodeLeaseDurationSeconds",
    "registerNode",
    "registerWithTaints",
    "systemReserved",
    "kubeReserved",
    "evictionHard",
    "evictionSoft",
    "evictionSoftGracePeriod",
    "evictionMinimumReclaim",
    "evictionMaxPodGracePeriod",
    "evictionPressureTransitionPeriod",
    "authentication",
    "authorization",
    "tlsCertFile",
    "tlsPrivateKeyFile",
    "cgroupRoot",
    "containerLogMaxSize",
    "containerLogMaxFiles",
    "imagePullProgressDeadline",
    "serializeImagePulls",
    "seccompDefault",
    "maxParallelImagePulls",
    "registryPullQPS",
    "registryBurst",
    "imageGCHighThresholdPercent",
    "imageGCLowThresholdPercent",
    "imageMinimumGCAge",
    "registryConfigDir",
    "imagePreloadDir",
    "clusterDNS",
    "clusterDomain",
    "resolvConf",
    "cgroupDriver",
    "rotateCertificates",
    "serverTLSBootstrap",
    "logging",
    "checkpointPods",
    "checkpointSecrets",
];

/// Every clusterDNS entry must be an IP address.
fn check_cluster_dns(field: &str, servers: &[String]) -> Result<(), ConfigError> {
    match servers.iter().find(|s| s.parse::<std::net::IpAddr>().is_err()) {
        Some(bad) => Err(ConfigError::invalid(field, format!("{bad:?} is not an IP address"))),
        None => Ok(()),
    }
}

/// Typed access to one mapping of the file, with errors naming the full field path.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Fields<'a> {
    fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(ConfigError::invalid(
                &self.path(key),
                format!("expected a string, got {v}"),
            )),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(ConfigError::invalid(
                &self.path(key),
                format!("expected true or false, got {v}"),
            )),
        }
    }

    fn int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_i64() {
                Some(i) if (min..=max).contains(&i) => Ok(Some(i)),
                _ => Err(ConfigError::invalid(
                    &self.path(key),
                    format!("expected an integer in [{min}, {max}], got {v}"),
                )),
            },
        }
    }

    fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => parse_go_duration(&s)
                .map(Some)
                .map_err(|m| ConfigError::invalid(&self.path(key), m)),
        }
    }

    /// A duration where zero means "the default", as v1beta1 defaulting treats it (kubeadm
    /// writes `0s` for every duration it leaves to the kubelet).
    fn nonzero_duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        Ok(self.duration(key)?.filter(|d| !d.is_zero()))
    }

    fn path_buf(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.string(key)?.filter(|s| !s.is_empty()).map(PathBuf::from))
    }

    fn string_map(&self, key: &str) -> Result<Option<BTreeMap<String, String>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    let s = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        _ => {
                            return Err(ConfigError::invalid(
                                &format!("{}.{k}", self.path(key)),
                                format!("expected a string, got {v}"),
                            ))
                        }
                    };
                    out.insert(k.clone(), s);
                }
                Ok(Some(out))
            }
            Some(v) => Err(ConfigError::invalid(
                &self.path(key),
                format!("expected a mapping, got {v}"),
            )),
        }
    }

    fn sub(&self, key: &str) -> Result<Option<Fields<'a>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Fields {
                map: m,
                prefix: self.path(key),
            })),
            Some(v) => Err(ConfigError::invalid(
                &self.path(key),
                format!("expected a mapping, got {v}"),
            )),
        }
    }
}

fn check_reserved(field: &str, map: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (k, v) in map {
        crate::podspec::resources::parse_milli(v)
            .map_err(|e| ConfigError::invalid(&format!("{field}.{k}"), e.to_string()))?;
    }
    Ok(())
}

fn check_eviction(field: &str, map: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (k, v) in map {
        let ok = match v.strip_suffix('%') {
            Some(p) => p.parse::<f64>().map(|p| (0.0..=100.0).contains(&p)).unwrap_or(false),
            None => crate::podspec::resources::parse_milli(v).is_ok(),
        };
        if !ok {
            return Err(ConfigError::invalid(
                &format!("{field}.{k}"),
                format!("{v:?} is neither a quantity nor a percentage"),
            ));
        }
    }
    Ok(())
}

/// Applies a KubeletConfiguration file onto `cfg`. Returns the top-level fields present in the
/// file that keel does not implement (sorted), for the caller's one warning.
pub fn apply_file(cfg: &mut Config, text: &str, path: &Path) -> Result<Vec<String>, ConfigError> {
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| ConfigError::ParseFile {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let Value::Object(map) = &doc else {
        return Err(ConfigError::NotAMapping {
            path: path.to_path_buf(),
        });
    };
    let f = Fields {
        map,
        prefix: String::new(),
    };
    let kind = f.string("kind")?.unwrap_or_default();
    if kind != CONFIG_KIND {
        return Err(ConfigError::WrongKind {
            path: path.to_path_buf(),
            got: kind,
        });
    }
    let api_version = f.string("apiVersion")?.unwrap_or_default();
    if api_version != CONFIG_API_VERSION {
        return Err(ConfigError::WrongApiVersion {
            path: path.to_path_buf(),
            got: api_version,
        });
    }

    // Nested fields keel does not act on, named in the warning like top-level ones.
    let mut ignored_nested: Vec<String> = Vec::new();

    // v1beta1 defaults for a file config: webhook authn on, anonymous off, Webhook authz.
    cfg.authentication.anonymous_enabled = false;
    cfg.authentication.webhook_enabled = true;
    cfg.authorization.mode = AuthorizationMode::Webhook;

    if let Some(a) = f.string("address")? {
        cfg.address = a
            .parse()
            .map_err(|_| ConfigError::invalid("address", format!("{a:?} is not an IP address")))?;
    }
    if let Some(p) = f.int("port", 1, 65535)? {
        cfg.port = p as u16;
    }
    if let Some(p) = f.int("healthzPort", 0, 65535)? {
        cfg.healthz_port = p as u16;
    }
    if let Some(a) = f.string("healthzBindAddress")? {
        cfg.healthz_bind_address = a
            .parse()
            .map_err(|_| ConfigError::invalid("healthzBindAddress", format!("{a:?} is not an IP address")))?;
    }
    if let Some(p) = f.path_buf("staticPodPath")? {
        cfg.static_pod_path = Some(p);
    }
    if let Some(v) = f.int("maxPods", 0, i64::from(i32::MAX))? {
        cfg.max_pods = v;
    }
    if let Some(v) = f.int("podsPerCore", 0, i64::from(i32::MAX))? {
        cfg.pods_per_core = v;
    }
    if let Some(v) = f.get("allowedUnsafeSysctls") {
        let field = || f.path("allowedUnsafeSysctls");
        let list: Vec<String> = v
            .as_array()
            .and_then(|l| l.iter().map(|s| s.as_str().map(String::from)).collect())
            .ok_or_else(|| ConfigError::invalid(&field(), format!("expected a list of strings, got {v}")))?;
        // The kubelet refuses to start with a pattern it cannot allow.
        crate::kubelet::sysctl::Allowlist::new(&list).map_err(|e| ConfigError::invalid(&field(), e.to_string()))?;
        cfg.allowed_unsafe_sysctls = list;
    }
    if let Some(d) = f.nonzero_duration("syncFrequency")? {
        cfg.sync_frequency = d;
    }
    if let Some(d) = f.nonzero_duration("nodeStatusUpdateFrequency")? {
        cfg.node_status_update_frequency = d;
    }
    match f.nonzero_duration("nodeStatusReportFrequency")? {
        Some(d) => cfg.node_status_report_frequency = d,
        // v1beta1: an unset report frequency follows an explicitly set update frequency.
        None => {
            if let Some(d) = f.nonzero_duration("nodeStatusUpdateFrequency")? {
                cfg.node_status_report_frequency = d;
            }
        }
    }
    if let Some(v) = f.int("nodeLeaseDurationSeconds", 1, i64::from(i32::MAX))? {
        cfg.node_lease_duration_seconds = v as i32;
    }
    if let Some(b) = f.bool("registerNode")? {
        cfg.register_node = b;
    }
    if let Some(v) = f.get("registerWithTaints") {
        let taints: Vec<ApiTaint> =
            serde_json::from_value(v.clone()).map_err(|e| ConfigError::invalid("registerWithTaints", e.to_string()))?;
        for t in &taints {
            check_effect("registerWithTaints", &t.effect)?;
        }
        cfg.register_with_taints = taints;
    }
    if let Some(m) = f.string_map("systemReserved")? {
        check_reserved("systemReserved", &m)?;
        cfg.system_reserved = m;
    }
    if let Some(m) = f.string_map("kubeReserved")? {
        check_reserved("kubeReserved", &m)?;
        cfg.kube_reserved = m;
    }
    if let Some(m) = f.string_map("evictionHard")? {
        // Like v1beta1 defaulting: a map given in the file replaces the default thresholds.
        check_eviction("evictionHard", &m)?;
        cfg.eviction_hard = m;
    }
    if let Some(m) = f.string_map("evictionSoft")? {
        cfg.eviction_soft = m;
    }
    if let Some(m) = f.string_map("evictionSoftGracePeriod")? {
        cfg.eviction_soft_grace_period = m;
    }
    if let Some(m) = f.string_map("evictionMinimumReclaim")? {
        cfg.eviction_minimum_reclaim = m;
    }
    if let Some(n) = f.int("evictionMaxPodGracePeriod", 0, i64::from(i32::MAX))? {
        cfg.eviction_max_pod_grace_period = n;
    }
    if let Some(d) = f.nonzero_duration("evictionPressureTransitionPeriod")? {
        cfg.eviction_pressure_transition_period = d;
    }
    // The whole set as the eviction manager will read it (`ParseThresholdConfig`).
    cfg.eviction_thresholds().map_err(|e| match e {
        crate::kubelet::eviction::EvictionError::Config { field, message } => ConfigError::invalid(&field, message),
        other => ConfigError::invalid("evictionHard", other.to_string()),
    })?;
    if let Some(authn) = f.sub("authentication")? {
        if let Some(anon) = authn.sub("anonymous")? {
            if let Some(b) = anon.bool("enabled")? {
                cfg.authentication.anonymous_enabled = b;
            }
        }
        if let Some(wh) = authn.sub("webhook")? {
            if let Some(b) = wh.bool("enabled")? {
                cfg.authentication.webhook_enabled = b;
            }
            if let Some(d) = wh.nonzero_duration("cacheTTL")? {
                cfg.authentication.webhook_cache_ttl = d;
            }
        }
        if let Some(x) = authn.sub("x509")? {
            if let Some(p) = x.path_buf("clientCAFile")? {
                cfg.authentication.x509_client_ca_file = Some(p);
            }
        }
    }
    if let Some(authz) = f.sub("authorization")? {
        if let Some(mode) = authz.string("mode")? {
            cfg.authorization.mode = parse_authorization_mode("authorization.mode", &mode)?;
        }
        if let Some(wh) = authz.sub("webhook")? {
            if let Some(d) = wh.nonzero_duration("cacheAuthorizedTTL")? {
                cfg.authorization.webhook_cache_authorized_ttl = d;
            }
            if let Some(d) = wh.nonzero_duration("cacheUnauthorizedTTL")? {
                cfg.authorization.webhook_cache_unauthorized_ttl = d;
            }
        }
    }
    if let Some(p) = f.path_buf("tlsCertFile")? {
        cfg.tls_cert_file = Some(p);
    }
    if let Some(p) = f.path_buf("tlsPrivateKeyFile")? {
        cfg.tls_private_key_file = Some(p);
    }
    if let Some(r) = f.string("cgroupRoot")? {
        cfg.cgroup_root = if r.is_empty() { "/".to_string() } else { r };
    }
    if let Some(s) = f.string("containerLogMaxSize")? {
        let v = crate::podspec::resources::parse_value(&s)
            .ok()
            .filter(|v| *v > 0 && *v <= i128::from(u64::MAX))
            .ok_or_else(|| ConfigError::invalid("containerLogMaxSize", format!("{s:?} is not a positive quantity")))?;
        cfg.container_log_max_size = v as u64;
    }
    if let Some(v) = f.int("containerLogMaxFiles", 2, i64::from(u32::MAX))? {
        cfg.container_log_max_files = v as u32;
    }
    if let Some(d) = f.duration("imagePullProgressDeadline")? {
        cfg.image_pull_progress_deadline = d;
    }
    if let Some(b) = f.bool("serializeImagePulls")? {
        cfg.serialize_image_pulls = b;
    }
    if let Some(b) = f.bool("seccompDefault")? {
        cfg.seccomp_default = b;
    }
    if let Some(v) = f.int("maxParallelImagePulls", 1, i64::from(i32::MAX))? {
        cfg.max_parallel_image_pulls = Some(v as i32);
    }
    if cfg.serialize_image_pulls && cfg.max_parallel_image_pulls.is_some_and(|n| n > 1) {
        return Err(ConfigError::invalid(
            "maxParallelImagePulls",
            "must be 1 or unset when serializeImagePulls is true",
        ));
    }
    if let Some(v) = f.int("registryPullQPS", 0, i64::from(i32::MAX))? {
        cfg.registry_pull_qps = v as i32;
    }
    if let Some(v) = f.int("registryBurst", 0, i64::from(i32::MAX))? {
        cfg.registry_burst = v as i32;
    }
    if let Some(v) = f.int("imageGCHighThresholdPercent", 0, 100)? {
        cfg.image_gc_high_threshold_percent = v as i32;
    }
    if let Some(v) = f.int("imageGCLowThresholdPercent", 0, 100)? {
        cfg.image_gc_low_threshold_percent = v as i32;
    }
    if cfg.image_gc_low_threshold_percent > cfg.image_gc_high_threshold_percent {
        return Err(ConfigError::invalid(
            "imageGCLowThresholdPercent",
            format!(
                "{} can not be higher than imageGCHighThresholdPercent {}",
                cfg.image_gc_low_threshold_percent, cfg.image_gc_high_threshold_percent
            ),
        ));
    }
    if let Some(d) = f.nonzero_duration("imageMinimumGCAge")? {
        cfg.image_minimum_gc_age = d;
    }
    if let Some(p) = f.path_buf("registryConfigDir")? {
        cfg.registry_config_dir = p;
    }
    if let Some(p) = f.path_buf("imagePreloadDir")? {
        cfg.image_preload_dir = Some(p);
    }
    if let Some(v) = f.get("clusterDNS") {
        let servers: Vec<String> =
            serde_json::from_value(v.clone()).map_err(|e| ConfigError::invalid("clusterDNS", e.to_string()))?;
        check_cluster_dns("clusterDNS", &servers)?;
        cfg.cluster_dns = servers;
    }
    if let Some(d) = f.string("clusterDomain")? {
        cfg.cluster_domain = d.trim_end_matches('.').to_string();
    }
    if let Some(p) = f.path_buf("resolvConf")? {
        cfg.resolv_conf = p;
    }
    if let Some(d) = f.string("cgroupDriver")? {
        check_cgroup_driver("cgroupDriver", &d)?;
    }
    if let Some(b) = f.bool("rotateCertificates")? {
        cfg.rotate_certificates = b;
    }
    if let Some(b) = f.bool("serverTLSBootstrap")? {
        cfg.server_tls_bootstrap = b;
    }
    if let Some(logging) = f.sub("logging")? {
        if let Some(v) = logging.int("verbosity", 0, i64::from(i32::MAX))? {
            cfg.log_filter = Some(verbosity_filter(v as u64));
        }
        if let Some(fmt) = logging.string("format")? {
            if fmt != "text" {
                ignored_nested.push(format!("logging.format ({fmt})"));
            }
        }
    }
    if let Some(b) = f.bool("checkpointPods")? {
        cfg.checkpoint_pods = b;
    }
    if let Some(b) = f.bool("checkpointSecrets")? {
        cfg.checkpoint_secrets = b;
    }

    let mut ignored: Vec<String> = map
        .keys()
        .filter(|k| !KNOWN_FIELDS.contains(&k.as_str()))
        .cloned()
        .collect();
    ignored.extend(ignored_nested);
    ignored.sort();
    Ok(ignored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn defaults() -> Config {
        Config::defaults("node-a".into())
    }

    fn apply(text: &str) -> Result<(Config, Vec<String>), ConfigError> {
        let mut c = defaults();
        let ignored = apply_file(&mut c, text, Path::new("test.yaml"))?;
        Ok((c, ignored))
    }

    const FULL: &str = r#"
kind: KubeletConfiguration
apiVersion: kubelet.config.k8s.io/v1beta1
address: 127.0.0.1
port: 11250
healthzPort: 11248
staticPodPath: /etc/kubernetes/manifests
maxPods: 50
podsPerCore: 10
allowedUnsafeSysctls: ["kernel.msg*", "net.core.somaxconn"]
syncFrequency: 30s
nodeStatusUpdateFrequency: 5s
nodeStatusReportFrequency: 1m0s
nodeLeaseDurationSeconds: 20
registerNode: false
registerWithTaints:
  - key: dedicated
    value: infra
    effect: NoSchedule
systemReserved:
  cpu: 100m
  memory: 100Mi
kubeReserved:
  memory: 200Mi
evictionHard:
  memory.available: 200Mi
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
    cacheTTL: 1m30s
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: AlwaysAllow
  webhook:
    cacheAuthorizedTTL: 1m
    cacheUnauthorizedTTL: 10s
tlsCertFile: /tls.crt
tlsPrivateKeyFile: /tls.key
cgroupRoot: /keel
containerLogMaxSize: 20Mi
containerLogMaxFiles: 3
imagePullProgressDeadline: 2m
serializeImagePulls: false
seccompDefault: true
cgroupDriver: cgroupfs
shutdownGracePeriod: 30s
clusterDNS: [10.96.0.10]
"#;

    #[test]
    fn full_file() {
        let (c, ignored) = apply(FULL).unwrap();
        assert_eq!(c.address, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(c.port, 11250);
        assert_eq!(c.healthz_port, 11248);
        assert_eq!(c.static_pod_path, Some(PathBuf::from("/etc/kubernetes/manifests")));
        assert_eq!(c.max_pods, 50);
        assert_eq!(c.pods_per_core, 10);
        assert_eq!(c.allowed_unsafe_sysctls, ["kernel.msg*", "net.core.somaxconn"]);
        let bad =
            "kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1beta1\nallowedUnsafeSysctls: [\"vm.*\"]\n";
        assert_eq!(
            apply(bad).unwrap_err().to_string(),
            "invalid value for allowedUnsafeSysctls: the sysctls \"vm.*\" are not known to be namespaced"
        );
        assert_eq!(c.sync_frequency, Duration::from_secs(30));
        assert_eq!(c.node_status_update_frequency, Duration::from_secs(5));
        assert_eq!(c.node_status_report_frequency, Duration::from_secs(60));
        assert_eq!(c.node_lease_duration_seconds, 20);
        assert!(!c.register_node);
        assert_eq!(c.register_with_taints.len(), 1);
        assert_eq!(c.register_with_taints[0].key, "dedicated");
        assert_eq!(c.register_with_taints[0].value.as_deref(), Some("infra"));
        assert_eq!(c.register_with_taints[0].effect, "NoSchedule");
        assert_eq!(c.system_reserved.get("cpu").map(String::as_str), Some("100m"));
        assert_eq!(c.kube_reserved.get("memory").map(String::as_str), Some("200Mi"));
        // The file's map replaces the defaults.
        assert_eq!(c.eviction_hard.len(), 1);
        assert!(c.authentication.anonymous_enabled);
        assert!(!c.authentication.webhook_enabled);
        assert_eq!(c.authentication.webhook_cache_ttl, Duration::from_secs(90));
        assert_eq!(
            c.authentication.x509_client_ca_file,
            Some(PathBuf::from("/etc/kubernetes/pki/ca.crt"))
        );
        assert_eq!(c.authorization.mode, AuthorizationMode::AlwaysAllow);
        assert_eq!(c.authorization.webhook_cache_authorized_ttl, Duration::from_secs(60));
        assert_eq!(c.authorization.webhook_cache_unauthorized_ttl, Duration::from_secs(10));
        assert_eq!(c.tls_cert_file, Some(PathBuf::from("/tls.crt")));
        assert_eq!(c.tls_private_key_file, Some(PathBuf::from("/tls.key")));
        assert_eq!(c.cgroup_root, "/keel");
        assert_eq!(c.container_log_max_size, 20 * 1024 * 1024);
        assert_eq!(c.container_log_max_files, 3);
        assert_eq!(c.image_pull_progress_deadline, Duration::from_secs(120));
        assert!(!c.serialize_image_pulls);
        assert!(c.seccomp_default);
        assert_eq!(ignored, vec!["shutdownGracePeriod".to_string()]);
        assert_eq!(c.cluster_dns, vec!["10.96.0.10".to_string()]);
    }

    #[test]
    fn minimal_file_uses_v1beta1_auth_defaults() {
        let (c, ignored) = apply("kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1beta1\n").unwrap();
        assert!(ignored.is_empty());
        assert!(!c.authentication.anonymous_enabled);
        assert!(c.authentication.webhook_enabled);
        assert_eq!(c.authorization.mode, AuthorizationMode::Webhook);
        assert_eq!(c.eviction_hard, default_eviction_hard());
        // No file: flag-era defaults.
        let d = defaults();
        assert_eq!(d.authorization.mode, AuthorizationMode::AlwaysAllow);
        assert!(!d.authentication.webhook_enabled);
        assert_eq!(d.max_pods, 110);
        assert_eq!(d.port, 10250);
        assert_eq!(d.node_lease_duration_seconds, 40);
        assert_eq!(d.container_log_max_size, 10 * 1024 * 1024);
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kubelet.yaml");
        std::fs::write(&file, FULL).unwrap();
        let cli = Cli::try_parse_from([
            "keel",
            "run",
            "--config",
            file.to_str().unwrap(),
            "--node-name",
            "n1",
            "--max-pods",
            "7",
            "--port",
            "12000",
            "--node-labels",
            "a=b, c=d",
            "--register-with-taints",
            "k=v:NoExecute,k2:PreferNoSchedule",
            "--runtime",
            "unix:///run/containerd/containerd.sock",
            "--pod-manifest-path",
            "/m",
            "--time-scale",
            "20",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not the run subcommand")
        };
        let c = load(&args).unwrap();
        assert_eq!(c.node_name, "n1");
        assert_eq!(c.max_pods, 7);
        assert_eq!(c.port, 12000);
        assert_eq!(c.healthz_port, 11248, "file value kept where no flag");
        assert_eq!(c.node_labels.get("c").map(String::as_str), Some("d"));
        assert_eq!(c.register_with_taints.len(), 2);
        assert_eq!(c.register_with_taints[1].key, "k2");
        assert_eq!(c.register_with_taints[1].value, None);
        assert_eq!(
            c.runtime,
            RuntimeEndpoint::Unix(PathBuf::from("/run/containerd/containerd.sock"))
        );
        assert_eq!(c.static_pod_path, Some(PathBuf::from("/m")));
        assert_eq!(c.time_scale, 20.0);
    }

    #[test]
    fn image_pull_and_gc_fields() {
        let hdr = "kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1beta1\n";
        let with = |t: &str| apply(&format!("{hdr}{t}"));
        let (c, ignored) = with(
            "serializeImagePulls: false\nmaxParallelImagePulls: 3\nregistryPullQPS: 5\nregistryBurst: 10\n\
             imageGCHighThresholdPercent: 90\nimageGCLowThresholdPercent: 70\nimageMinimumGCAge: 5m\n\
             registryConfigDir: /etc/mirrors\nimagePreloadDir: /var/lib/keel/preload\n",
        )
        .unwrap();
        assert!(ignored.is_empty(), "{ignored:?}");
        assert_eq!(c.max_parallel_image_pulls, Some(3));
        assert_eq!((c.registry_pull_qps, c.registry_burst), (5, 10));
        assert_eq!(
            (c.image_gc_high_threshold_percent, c.image_gc_low_threshold_percent),
            (90, 70)
        );
        assert_eq!(c.image_minimum_gc_age, Duration::from_secs(300));
        assert_eq!(c.registry_config_dir, PathBuf::from("/etc/mirrors"));
        assert_eq!(c.image_preload_dir, Some(PathBuf::from("/var/lib/keel/preload")));
        let d = defaults();
        assert_eq!(
            (d.image_gc_high_threshold_percent, d.image_gc_low_threshold_percent),
            (85, 80)
        );
        assert_eq!(d.registry_config_dir, PathBuf::from("/etc/keel/certs.d"));
        assert!(
            apply("maxParallelImagePulls: 2\n").is_err(),
            "parallel pulls while serialized"
        );
        assert!(with("imageGCHighThresholdPercent: 50\nimageGCLowThresholdPercent: 60\n").is_err());
        assert!(with("imageGCHighThresholdPercent: 101\n").is_err());
        // The flags win over the file.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(
            &file,
            format!("{hdr}imagePreloadDir: /from/file\nregistryConfigDir: /from/file\n"),
        )
        .unwrap();
        let c = parse_run(&[
            "--node-name",
            "n",
            "--config",
            file.to_str().unwrap(),
            "--image-preload-dir",
            "/from/flag",
        ])
        .unwrap();
        assert_eq!(c.image_preload_dir, Some(PathBuf::from("/from/flag")));
        assert_eq!(c.registry_config_dir, PathBuf::from("/from/file"));
    }

    #[test]
    fn durations() {
        let ok: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("10s", Duration::from_secs(10)),
            ("1m0s", Duration::from_secs(60)),
            ("300ms", Duration::from_millis(300)),
            ("1h2m3s", Duration::from_secs(3723)),
            ("1.5s", Duration::from_millis(1500)),
            (".5m", Duration::from_secs(30)),
            ("2h45m", Duration::from_secs(9900)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("7ns", Duration::from_nanos(7)),
            ("+5s", Duration::from_secs(5)),
        ];
        for (s, want) in ok {
            assert_eq!(parse_go_duration(s), Ok(*want), "{s}");
        }
        for bad in ["", "10", "1x", "s", "-1s", "1.2.3s", "1s2", "3000000h"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn eviction_settings() {
        let hdr = "kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1beta1\n";
        let (c, ignored) = apply(&format!(
            "{hdr}evictionSoft:\n  memory.available: 500Mi\nevictionSoftGracePeriod:\n  memory.available: 1m30s\n\
             evictionMinimumReclaim:\n  memory.available: 0Mi\nevictionMaxPodGracePeriod: 30\n\
             evictionPressureTransitionPeriod: 1m\n"
        ))
        .unwrap();
        assert!(ignored.is_empty(), "{ignored:?}");
        assert_eq!(c.eviction_max_pod_grace_period, 30);
        assert_eq!(c.eviction_pressure_transition_period, Duration::from_secs(60));
        let ts = c.eviction_thresholds().unwrap();
        // The four default hard thresholds and the soft one.
        assert_eq!(ts.len(), 5);
        let soft = ts.iter().find(|t| !t.is_hard()).unwrap();
        assert_eq!(soft.grace_period, Duration::from_secs(90));
        assert!(soft.min_reclaim.is_some());
        assert_eq!(defaults().eviction_pressure_transition_period, Duration::from_secs(300));
    }

    fn field_of(e: ConfigError) -> String {
        match e {
            ConfigError::InvalidValue { field, .. } => field,
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn bad_input() {
        let hdr = "kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1beta1\n";
        assert!(matches!(
            apply("kind: Pod\napiVersion: kubelet.config.k8s.io/v1beta1\n"),
            Err(ConfigError::WrongKind { .. })
        ));
        assert!(matches!(
            apply("kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1\n"),
            Err(ConfigError::WrongApiVersion { .. })
        ));
        assert!(matches!(apply("- a\n- b\n"), Err(ConfigError::NotAMapping { .. })));
        assert!(matches!(apply("kind: [unclosed\n"), Err(ConfigError::ParseFile { .. })));
        let cases = [
            ("syncFrequency: 10 seconds\n", "syncFrequency"),
            ("port: 70000\n", "port"),
            ("maxPods: lots\n", "maxPods"),
            ("registerNode: maybe\n", "registerNode"),
            ("address: not-an-ip\n", "address"),
            ("containerLogMaxSize: huge\n", "containerLogMaxSize"),
            ("systemReserved:\n  cpu: lots\n", "systemReserved.cpu"),
            (
                "evictionHard:\n  memory.available: 200%\n",
                "evictionHard.memory.available",
            ),
            (
                "evictionSoft:\n  memory.available: 500Mi\n",
                "evictionSoftGracePeriod.memory.available",
            ),
            ("evictionHard:\n  memory.free: 1Gi\n", "evictionHard.memory.free"),
            ("evictionMaxPodGracePeriod: -1\n", "evictionMaxPodGracePeriod"),
            ("authorization:\n  mode: RBAC\n", "authorization.mode"),
            (
                "authentication:\n  webhook:\n    cacheTTL: 5\n",
                "authentication.webhook.cacheTTL",
            ),
            (
                "registerWithTaints:\n  - key: a\n    effect: Sometimes\n",
                "registerWithTaints",
            ),
        ];
        for (body, field) in cases {
            let e = apply(&format!("{hdr}{body}")).unwrap_err();
            assert_eq!(field_of(e), field, "{body}");
        }
        assert_eq!(field_of(parse_taints("k=v").unwrap_err()), "--register-with-taints");
        assert_eq!(
            field_of(parse_taints("k=v:Never").unwrap_err()),
            "--register-with-taints"
        );
        assert_eq!(field_of(parse_labels("novalue").unwrap_err()), "--node-labels");
        assert_eq!(field_of(parse_labels("=v").unwrap_err()), "--node-labels");
        assert_eq!(field_of(parse_labels("Bad_Prefix/x=v").unwrap_err()), "--node-labels");
        assert_eq!(field_of(parse_labels("k=-bad").unwrap_err()), "--node-labels");
        let ok = parse_labels("node-role.kubernetes.io/worker=,zone=a_1.b").unwrap();
        assert_eq!(ok.get("node-role.kubernetes.io/worker").map(String::as_str), Some(""));
        assert_eq!(ok.get("zone").map(String::as_str), Some("a_1.b"));
        assert_eq!(
            field_of(parse_endpoint("--runtime", "tcp://x").unwrap_err()),
            "--runtime"
        );
    }

    #[test]
    fn server_flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kubelet.yaml");
        std::fs::write(&file, FULL).unwrap();
        let cli = Cli::try_parse_from([
            "keel",
            "run",
            "--config",
            file.to_str().unwrap(),
            "--node-name",
            "n1",
            "--healthz-port",
            "0",
            "--healthz-bind-address",
            "::1",
            "--client-ca-file",
            "/ca.crt",
            "--anonymous-auth=false",
            "--authentication-token-webhook",
            "--authorization-mode",
            "Webhook",
            "--tls-cert-file",
            "/a.crt",
            "--tls-private-key-file",
            "/a.key",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not the run subcommand")
        };
        let c = load(&args).unwrap();
        assert_eq!(c.healthz_port, 0);
        assert_eq!(c.healthz_bind_address, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(c.authentication.x509_client_ca_file, Some(PathBuf::from("/ca.crt")));
        assert!(!c.authentication.anonymous_enabled);
        assert!(c.authentication.webhook_enabled);
        assert_eq!(c.authorization.mode, AuthorizationMode::Webhook);
        assert_eq!(c.tls_cert_file, Some(PathBuf::from("/a.crt")));
        assert_eq!(c.tls_private_key_file, Some(PathBuf::from("/a.key")));

        let d = Config::defaults("n".into());
        assert_eq!(d.healthz_bind_address, "127.0.0.1".parse::<IpAddr>().unwrap());
        let cli = Cli::try_parse_from(["keel", "run", "--node-name", "n", "--authorization-mode", "Bogus"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not the run subcommand")
        };
        assert!(load(&args).is_err());
    }

    /// What `kubeadm join` (v1.24) writes to /var/lib/kubelet/config.yaml, with the cgroup
    /// driver set to cgroupfs.
    const KUBEADM: &str = r#"
apiVersion: kubelet.config.k8s.io/v1beta1
authentication:
  anonymous:
    enabled: false
  webhook:
    cacheTTL: 0s
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
  webhook:
    cacheAuthorizedTTL: 0s
    cacheUnauthorizedTTL: 0s
cgroupDriver: cgroupfs
clusterDNS:
- 10.96.0.10
clusterDomain: cluster.local
cpuManagerReconcilePeriod: 0s
evictionPressureTransitionPeriod: 0s
fileCheckFrequency: 0s
healthzBindAddress: 127.0.0.1
healthzPort: 10248
httpCheckFrequency: 0s
imageMinimumGCAge: 0s
kind: KubeletConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
  verbosity: 0
memorySwap: {}
nodeStatusReportFrequency: 0s
nodeStatusUpdateFrequency: 0s
rotateCertificates: true
runtimeRequestTimeout: 0s
shutdownGracePeriod: 0s
shutdownGracePeriodCriticalPods: 0s
staticPodPath: /etc/kubernetes/manifests
streamingConnectionIdleTimeout: 0s
syncFrequency: 0s
volumeStatsAggPeriod: 0s
"#;

    #[test]
    fn kubeadm_config_zero_durations_mean_defaults() {
        let (c, ignored) = apply(KUBEADM).unwrap();
        let d = defaults();
        assert_eq!(c.sync_frequency, d.sync_frequency);
        assert_eq!(c.image_minimum_gc_age, d.image_minimum_gc_age, "0s is the default");
        assert_eq!(c.node_status_update_frequency, Duration::from_secs(10));
        assert_eq!(c.node_status_report_frequency, Duration::from_secs(300));
        assert_eq!(c.authentication.webhook_cache_ttl, Duration::from_secs(120));
        assert_eq!(c.authorization.webhook_cache_authorized_ttl, Duration::from_secs(300));
        assert_eq!(c.authorization.webhook_cache_unauthorized_ttl, Duration::from_secs(30));
        assert!(c.authentication.webhook_enabled);
        assert_eq!(c.authorization.mode, AuthorizationMode::Webhook);
        assert_eq!(c.cluster_dns, ["10.96.0.10"]);
        assert_eq!(c.static_pod_path, Some(PathBuf::from("/etc/kubernetes/manifests")));
        assert!(c.rotate_certificates);
        assert!(!c.server_tls_bootstrap);
        assert_eq!(c.log_filter.as_deref(), Some("info"));
        // Each field keel does not act on is named, one per warning line.
        assert_eq!(
            ignored,
            [
                "cpuManagerReconcilePeriod",
                "fileCheckFrequency",
                "httpCheckFrequency",
                "memorySwap",
                "runtimeRequestTimeout",
                "shutdownGracePeriod",
                "shutdownGracePeriodCriticalPods",
                "streamingConnectionIdleTimeout",
                "volumeStatsAggPeriod",
            ]
        );
        // An explicit update frequency also sets an unset report frequency (v1beta1).
        let (c, _) = apply(&KUBEADM.replace("nodeStatusUpdateFrequency: 0s", "nodeStatusUpdateFrequency: 4s")).unwrap();
        assert_eq!(c.node_status_report_frequency, Duration::from_secs(4));
        // The systemd driver (kubeadm's default) is refused with a message saying what to do.
        let e = apply(&KUBEADM.replace("cgroupDriver: cgroupfs", "cgroupDriver: systemd")).unwrap_err();
        assert!(e.to_string().contains("cgroupfs"), "{e}");
        assert_eq!(field_of(e), "cgroupDriver");
        let (c, _) = apply(&KUBEADM.replace("serverTLSBootstrap", "x").replace(
            "rotateCertificates: true",
            "serverTLSBootstrap: true\nrotateCertificates: false",
        ))
        .unwrap();
        assert!(c.server_tls_bootstrap);
        assert!(!c.rotate_certificates);
        let (c, _) = apply(&KUBEADM.replace("  verbosity: 0", "  verbosity: 4")).unwrap();
        assert_eq!(c.log_filter.as_deref(), Some("info,keel=debug"));
    }

    fn parse_run(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["keel", "run"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not the run subcommand")
        };
        load_quiet(&args)
    }

    #[test]
    fn kubelet_flag_names() {
        let c = parse_run(&[
            "--hostname-override",
            "worker-1",
            "--container-runtime",
            "remote",
            "--container-runtime-endpoint",
            "unix:///run/containerd/containerd.sock",
            "--image-service-endpoint",
            "unix:///run/img.sock",
            "--node-ip",
            "127.0.0.5",
            "--cgroup-driver",
            "cgroupfs",
            "--cgroup-root",
            "/keel",
            "--pod-infra-container-image",
            "registry.k8s.io/pause:3.7",
            "--register-node=false",
            "--runtime-request-timeout",
            "4m",
            "--v",
            "5",
            "--kubeconfig",
            "/etc/kubernetes/kubelet.conf",
            "--bootstrap-kubeconfig",
            "/etc/kubernetes/bootstrap-kubelet.conf",
            "--cert-dir",
            "/var/lib/kubelet/pki",
            "--rotate-certificates",
            "--rotate-server-certificates=true",
        ])
        .unwrap();
        assert_eq!(c.node_name, "worker-1");
        assert_eq!(
            c.runtime,
            RuntimeEndpoint::Unix(PathBuf::from("/run/containerd/containerd.sock"))
        );
        assert_eq!(
            c.image_service_endpoint,
            Some(RuntimeEndpoint::Unix(PathBuf::from("/run/img.sock")))
        );
        assert_eq!(c.node_ip, Some("127.0.0.5".parse().unwrap()));
        assert_eq!(c.cgroup_root, "/keel");
        assert!(!c.register_node);
        assert_eq!(c.log_filter.as_deref(), Some("info,keel=trace"));
        assert_eq!(
            c.bootstrap_kubeconfig,
            Some(PathBuf::from("/etc/kubernetes/bootstrap-kubelet.conf"))
        );
        assert_eq!(c.cert_dir(), PathBuf::from("/var/lib/kubelet/pki"));
        assert!(c.rotate_certificates);
        assert!(c.server_tls_bootstrap);

        // Defaults: the cert dir follows the root dir.
        let c = parse_run(&["--node-name", "n", "--root-dir", "/tmp/r"]).unwrap();
        assert_eq!(c.cert_dir(), PathBuf::from("/tmp/r/pki"));
        assert!(!c.rotate_certificates);
        assert_eq!(c.log_filter, None);

        // The one-line notes for accepted-but-inactive flags.
        let cli = Cli::try_parse_from([
            "keel",
            "run",
            "--pod-infra-container-image",
            "p:1",
            "--runtime-request-timeout",
            "4m",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not the run subcommand")
        };
        let notes = flag_notes(&args);
        assert_eq!(notes.len(), 2);
        assert!(notes[0].starts_with("--pod-infra-container-image=p:1"));
        let c = parse_run(&[
            "--node-name",
            "n",
            "--pod-infra-container-image",
            "registry.k8s.io/pause:3.7",
        ])
        .unwrap();
        assert_eq!(
            c.pod_infra_container_image.as_deref(),
            Some("registry.k8s.io/pause:3.7")
        );
        assert!(notes[1].starts_with("--runtime-request-timeout=4m"));

        let refused: &[(&[&str], &str)] = &[
            (&["--cgroup-driver", "systemd"], "--cgroup-driver"),
            (&["--container-runtime", "docker"], "--container-runtime"),
            (&["--container-runtime-endpoint", "sim"], "--container-runtime-endpoint"),
            (
                &["--container-runtime-endpoint", "tcp://1.2.3.4:1"],
                "--container-runtime-endpoint",
            ),
            (&["--bootstrap-kubeconfig", "/b.conf"], "--bootstrap-kubeconfig"),
            (&["--runtime-request-timeout", "soon"], "--runtime-request-timeout"),
        ];
        for (args, field) in refused {
            let e = parse_run(args).unwrap_err();
            assert_eq!(field_of(e), *field, "{args:?}");
        }
    }
    #[test]
    fn native_runtime_flags() {
        let d = parse_run(&["--node-name", "n"]).unwrap();
        assert_eq!(d.runtime, RuntimeEndpoint::Sim);
        assert_eq!(d.native_run_dir, PathBuf::from("/run/keel"));
        assert_eq!(d.runc, None);
        assert_eq!(d.cni_conf_dir, PathBuf::from("/etc/cni/net.d"));
        assert_eq!(
            d.cni_bin_dirs,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        let c = parse_run(&[
            "--node-name",
            "n",
            "--runtime",
            "native",
            "--native-run-dir",
            "/run/k1",
            "--runc",
            "/usr/local/sbin/runc",
            "--cni-conf-dir",
            "/tmp/net.d",
            "--cni-bin-dir",
            "/a,/b/c",
        ])
        .unwrap();
        assert_eq!(c.runtime, RuntimeEndpoint::Native);
        assert_eq!(c.native_run_dir, PathBuf::from("/run/k1"));
        assert_eq!(c.runc, Some(PathBuf::from("/usr/local/sbin/runc")));
        assert_eq!(c.cni_conf_dir, PathBuf::from("/tmp/net.d"));
        assert_eq!(c.cni_bin_dirs, vec![PathBuf::from("/a"), PathBuf::from("/b/c")]);
        let refused: &[(&[&str], &str)] = &[
            (&["--native-run-dir", "run/keel"], "--native-run-dir"),
            (
                &["--native-run-dir", "/a/very/long/run/directory/for/keel/x"],
                "--native-run-dir",
            ),
            (
                &["--container-runtime-endpoint", "native"],
                "--container-runtime-endpoint",
            ),
            (&["--runtime", "natve"], "--runtime"),
        ];
        for (args, field) in refused {
            let e = parse_run(args).unwrap_err();
            assert_eq!(field_of(e), *field, "{args:?}");
        }
    }

    #[test]
    fn checkpoint_settings_from_file_and_flags() {
        let d = Config::defaults("n".into());
        assert!(!d.checkpoint_pods && !d.checkpoint_secrets, "off by default");
        let (c, ignored) = apply(
            "kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1beta1\ncheckpointPods: true\ncheckpointSecrets: true\n",
        )
        .unwrap();
        assert!(c.checkpoint_pods && c.checkpoint_secrets);
        assert!(ignored.is_empty(), "{ignored:?}");
        assert!(apply(
            "kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1beta1\ncheckpointPods: yes please\n"
        )
        .is_err());
        let cli = Cli::try_parse_from(["keel", "run", "--node-name", "n", "--checkpoint-pods"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected keel run")
        };
        let c = load(&args).unwrap();
        assert!(c.checkpoint_pods && !c.checkpoint_secrets);
        let cli = Cli::try_parse_from(["keel", "pods", "--root-dir", "/tmp/x"]).unwrap();
        let Command::Pods(p) = cli.command else {
            panic!("expected keel pods")
        };
        assert_eq!(p.root_dir, PathBuf::from("/tmp/x"));
    }
}
