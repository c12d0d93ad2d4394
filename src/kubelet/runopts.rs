//! What the kubelet resolves for a container before the runtime creates it
//! (`GenerateRunContainerOptions`): the environment (kubelet-behavior.md §4.9), the hostname,
//! the volume mounts (from the volume manager) and the managed /etc/hosts file (§4.11).
//! `$(VAR)` references inside values are expanded by the runtime manager with the same rules
//! as command and args.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVarSource, HostAlias, Node, Pod, ResourceFieldSelector, Secret,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::Api;
use tokio::sync::watch;

use crate::genericruntime::cri;
use crate::kubelet::checkpoint::offline::{api_unreachable, OfflineStore};
use crate::kubelet::mirror::is_static_pod;
use crate::kubelet::services::{service_env, ServiceCache};

use crate::genericruntime::expand::expand;
use crate::genericruntime::{ConfigError, RunContainerOptions, RunOptionsProvider};
use crate::kubelet::volumes::VolumeManager;

/// Resolves env from the pod, the node and (when there is an API server) ConfigMaps and Secrets.
pub struct KubeletRunOptions {
    client: Option<kube::Client>,
    node_name: String,
    node_ips: Vec<String>,
    /// keel's root dir: pod files (`pods/<uid>/etc-hosts`) live under it; None = no managed
    /// /etc/hosts.
    root_dir: Option<PathBuf>,
    cluster_domain: String,
    /// The node as last registered: its allocatable is the default of unset limits.
    node: Option<watch::Receiver<Option<Node>>>,
    /// Services for service environment variables (None: standalone, no services).
    services: Option<ServiceCache>,
    /// Where the pod's volumes are; None = containers get no volume mounts.
    volumes: Option<Arc<VolumeManager>>,
    /// `checkpointSecrets`: copies of the ConfigMaps, Secrets and Services env was built from,
    /// used while the API server is unreachable.
    offline: Option<Arc<OfflineStore>>,
}

/// Where the host's own hosts file is (host-network pods start from it).
const NODE_HOSTS_FILE: &str = "/etc/hosts";

impl KubeletRunOptions {
    pub fn new(client: Option<kube::Client>, node_name: String, node_ips: Vec<String>) -> Self {
        Self {
            client,
            node_name,
            node_ips,
            root_dir: None,
            cluster_domain: "cluster.local".into(),
            node: None,
            volumes: None,
            services: None,
            offline: None,
        }
    }

    /// Mount the pod's volumes (set up by `volumes`) into its containers.
    #[must_use]
    pub fn with_volumes(mut self, volumes: Arc<VolumeManager>) -> Self {
        self.volumes = Some(volumes);
        self
    }

    /// Records what env reads in `offline` and falls back to it when the API is unreachable.
    pub fn with_offline_store(mut self, offline: Arc<OfflineStore>) -> Self {
        self.offline = Some(offline);
        self
    }

    /// The Service cache service environment variables come from.
    #[must_use]
    pub fn with_services(mut self, services: ServiceCache) -> Self {
        self.services = Some(services);
        self
    }

    /// The pod's service variables (§4.9 step 1).
    fn service_env(&self, pod: &Pod) -> Result<Vec<(String, String)>, ConfigError> {
        let Some(cache) = &self.services else { return Ok(vec![]) };
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
        if !cache.has_synced() {
            if is_static_pod(pod) {
                return Ok(vec![]);
            }
            // Offline restart: the Services as they were when the checkpoint was written.
            if let Some(services) = self.offline.as_ref().and_then(|o| o.services()) {
                return Ok(service_env(&services, ns, links));
            }
            return Err(ConfigError(
                "services have not yet been read at least once, cannot construct envvars".into(),
            ));
        }
        Ok(service_env(&cache.services(), ns, links))
    }

    /// Manage `<root>/pods/<uid>/etc-hosts` and mount it at /etc/hosts, naming pods in
    /// `cluster_domain`.
    #[must_use]
    pub fn with_pod_files(mut self, root_dir: PathBuf, cluster_domain: String) -> Self {
        self.root_dir = Some(root_dir);
        self.cluster_domain = cluster_domain;
        self
    }

    /// The node object (for its allocatable resources).
    #[must_use]
    pub fn with_node(mut self, node: watch::Receiver<Option<Node>>) -> Self {
        self.node = Some(node);
        self
    }

    fn node_allocatable(&self) -> BTreeMap<String, Quantity> {
        self.node
            .as_ref()
            .and_then(|rx| {
                rx.borrow()
                    .as_ref()
                    .and_then(|n| n.status.as_ref()?.allocatable.clone())
            })
            .unwrap_or_default()
    }

    /// `containerResourceRuntimeValue` on the pod with limits defaulted to node allocatable
    /// (`defaultPodLimitsForDownwardAPI`); an env var's selector means its own container when
    /// `containerName` is empty. The rules are the downward API volume's.
    fn resource_field(
        &self,
        pod: &Pod,
        container: &Container,
        fs: &ResourceFieldSelector,
    ) -> Result<String, ConfigError> {
        use crate::kubelet::volumes::payload;
        let allocatable = self.node_allocatable();
        match fs.container_name.as_deref().filter(|n| !n.is_empty()) {
            None => payload::container_resource_value(container, fs, &allocatable),
            Some(_) => payload::resource_value(pod, fs, &allocatable),
        }
        .map_err(|e| ConfigError(e.to_string()))
    }

    /// Writes the pod's hosts file (`ensureHostsFile`) and returns its mount, when the kubelet
    /// would mount one: the pod has IPs and no volume mount targets /etc/hosts.
    fn hosts_mount(
        &self,
        pod: &Pod,
        container: &Container,
        pod_ips: &[String],
    ) -> Result<Option<cri::Mount>, ConfigError> {
        let Some(root) = &self.root_dir else { return Ok(None) };
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
        let ips: &[String] = if host_network && pod_ips.is_empty() {
            &self.node_ips
        } else {
            pod_ips
        };
        if ips.is_empty()
            || container
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.mount_path == NODE_HOSTS_FILE)
        {
            return Ok(None);
        }
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        if uid.is_empty() {
            return Ok(None);
        }
        let spec = pod.spec.as_ref();
        let aliases = spec.and_then(|s| s.host_aliases.clone()).unwrap_or_default();
        let content = if host_network {
            let node = std::fs::read_to_string(NODE_HOSTS_FILE)
                .map_err(|e| ConfigError(format!("failed to read {NODE_HOSTS_FILE}: {e}")))?;
            node_hosts_file_content(&node, &aliases)
        } else {
            let host = pod_hostname(pod);
            let domain = spec
                .and_then(|s| s.subdomain.as_deref())
                .filter(|d| !d.is_empty())
                .map(|sub| {
                    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                    format!("{sub}.{ns}.svc.{}", self.cluster_domain)
                });
            managed_hosts_file_content(ips, &host, domain.as_deref(), &aliases)
        };
        let path = root.join("pods").join(uid).join("etc-hosts");
        write_hosts_file(&path, &content)
            .map_err(|e| ConfigError(format!("failed to write hosts file {}: {e}", path.display())))?;
        Ok(Some(cri::Mount {
            container_path: NODE_HOSTS_FILE.into(),
            host_path: path.to_string_lossy().into_owned(),
            readonly: false,
            selinux_relabel: true,
            ..Default::default()
        }))
    }

    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, ConfigError> {
        let Some(client) = &self.client else { return Ok(None) };
        match Api::<ConfigMap>::namespaced(client.clone(), ns).get_opt(name).await {
            Ok(cm) => {
                if let (Some(o), Some(cm)) = (&self.offline, &cm) {
                    o.record_config_map(cm);
                }
                Ok(cm)
            }
            Err(e) => match self
                .offline
                .as_ref()
                .filter(|_| api_unreachable(&e))
                .and_then(|o| o.config_map(ns, name))
            {
                Some(cm) => Ok(Some(cm)),
                None => Err(ConfigError(format!("failed to get configmap {ns}/{name}: {e}"))),
            },
        }
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, ConfigError> {
        let Some(client) = &self.client else { return Ok(None) };
        match Api::<Secret>::namespaced(client.clone(), ns).get_opt(name).await {
            Ok(s) => {
                if let (Some(o), Some(s)) = (&self.offline, &s) {
                    o.record_secret(s);
                }
                Ok(s)
            }
            Err(e) => match self
                .offline
                .as_ref()
                .filter(|_| api_unreachable(&e))
                .and_then(|o| o.secret(ns, name))
            {
                Some(s) => Ok(Some(s)),
                None => Err(ConfigError(format!("failed to get secret {ns}/{name}: {e}"))),
            },
        }
    }

    fn field_ref(&self, pod: &Pod, path: &str, pod_ips: &[String]) -> Result<String, ConfigError> {
        let m = &pod.metadata;
        let spec = pod.spec.as_ref();
        let label_or_annotation = |prefix: &str, map: &Option<BTreeMap<String, String>>| -> Option<String> {
            let key = path.strip_prefix(prefix)?.strip_prefix("['")?.strip_suffix("']")?;
            Some(map.as_ref().and_then(|l| l.get(key)).cloned().unwrap_or_default())
        };
        if let Some(v) = label_or_annotation("metadata.labels", &m.labels) {
            return Ok(v);
        }
        if let Some(v) = label_or_annotation("metadata.annotations", &m.annotations) {
            return Ok(v);
        }
        Ok(match path {
            "metadata.name" => m.name.clone().unwrap_or_default(),
            "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
            "metadata.uid" => m.uid.clone().unwrap_or_default(),
            "spec.nodeName" => spec
                .and_then(|s| s.node_name.clone())
                .unwrap_or_else(|| self.node_name.clone()),
            "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
            "status.hostIP" => self.node_ips.first().cloned().unwrap_or_default(),
            "status.hostIPs" => self.node_ips.join(","),
            "status.podIP" => pod_ips.first().cloned().unwrap_or_default(),
            "status.podIPs" => pod_ips.join(","),
            other => return Err(ConfigError(format!("unsupported fieldPath: {other}"))),
        })
    }

    async fn value_from(
        &self,
        pod: &Pod,
        container: &Container,
        src: &EnvVarSource,
        pod_ips: &[String],
    ) -> Result<Option<String>, ConfigError> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        if let Some(f) = &src.field_ref {
            return self.field_ref(pod, &f.field_path, pod_ips).map(Some);
        }
        if let Some(r) = &src.config_map_key_ref {
            let optional = r.optional.unwrap_or(false);
            let Some(cm) = self.config_map(ns, &r.name).await? else {
                return if optional {
                    Ok(None)
                } else {
                    Err(ConfigError(format!("configmap \"{}\" not found", r.name)))
                };
            };
            let v = cm.data.as_ref().and_then(|d| d.get(&r.key)).cloned().or_else(|| {
                cm.binary_data
                    .as_ref()
                    .and_then(|d| d.get(&r.key))
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            });
            return match v {
                Some(v) => Ok(Some(v)),
                None if optional => Ok(None),
                None => Err(ConfigError(format!(
                    "couldn't find key {} in ConfigMap {ns}/{}",
                    r.key, r.name
                ))),
            };
        }
        if let Some(r) = &src.secret_key_ref {
            let optional = r.optional.unwrap_or(false);
            let Some(s) = self.secret(ns, &r.name).await? else {
                return if optional {
                    Ok(None)
                } else {
                    Err(ConfigError(format!("secret \"{}\" not found", r.name)))
                };
            };
            let v = s
                .data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned());
            return match v {
                Some(v) => Ok(Some(v)),
                None if optional => Ok(None),
                None => Err(ConfigError(format!(
                    "couldn't find key {} in Secret {ns}/{}",
                    r.key, r.name
                ))),
            };
        }
        if let Some(fs) = &src.resource_field_ref {
            return self.resource_field(pod, container, fs).map(Some);
        }
        Ok(None)
    }
}

fn write_hosts_file(path: &Path, content: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, content)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}

fn host_aliases_entries(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        out.push_str(&format!(
            "{}\t{}\n",
            a.ip,
            a.hostnames.clone().unwrap_or_default().join("\t")
        ));
    }
    out
}

/// `managedHostsFileContent`: the hosts file of a pod with its own network.
pub fn managed_hosts_file_content(ips: &[String], host: &str, domain: Option<&str>, aliases: &[HostAlias]) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    for ip in ips {
        match domain {
            Some(d) => out.push_str(&format!("{ip}\t{host}.{d}\t{host}\n")),
            None => out.push_str(&format!("{ip}\t{host}\n")),
        }
    }
    out.push_str(&host_aliases_entries(aliases));
    out
}

/// `nodeHostsFileContent`: a host-network pod sees the node's hosts file.
pub fn node_hosts_file_content(node_hosts: &str, aliases: &[HostAlias]) -> String {
    let mut out = String::from("# Kubernetes-managed hosts file (host network).\n");
    out.push_str(node_hosts);
    out.push_str(&host_aliases_entries(aliases));
    out
}

/// The pod's hostname: `spec.hostname` or the pod name, at most 63 characters, without a
/// trailing `-` or `.` (§1.4).
pub fn pod_hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    let mut h: String = name.chars().take(63).collect();
    while h.ends_with('-') || h.ends_with('.') {
        h.pop();
    }
    h
}

#[async_trait]
impl RunOptionsProvider for KubeletRunOptions {
    async fn run_container_options(
        &self,
        pod: &Pod,
        container: &Container,
        pod_ips: &[String],
    ) -> Result<RunContainerOptions, ConfigError> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let services: BTreeMap<String, String> = self.service_env(pod)?.into_iter().collect();
        let mut env: Vec<(String, String)> = Vec::new();
        let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
            if let Some(e) = env.iter_mut().find(|(n, _)| *n == k) {
                e.1 = v;
            } else {
                env.push((k, v));
            }
        };
        for from in container.env_from.iter().flatten() {
            let prefix = from.prefix.clone().unwrap_or_default();
            if let Some(r) = &from.config_map_ref {
                match self.config_map(ns, &r.name).await? {
                    Some(cm) => {
                        for (k, v) in cm.data.unwrap_or_default() {
                            set(&mut env, format!("{prefix}{k}"), v);
                        }
                    }
                    None if r.optional.unwrap_or(false) => {}
                    None => return Err(ConfigError(format!("configmap \"{}\" not found", r.name))),
                }
            }
            if let Some(r) = &from.secret_ref {
                match self.secret(ns, &r.name).await? {
                    Some(s) => {
                        for (k, v) in s.data.unwrap_or_default() {
                            set(
                                &mut env,
                                format!("{prefix}{k}"),
                                String::from_utf8_lossy(&v.0).into_owned(),
                            );
                        }
                    }
                    None if r.optional.unwrap_or(false) => {}
                    None => return Err(ConfigError(format!("secret \"{}\" not found", r.name))),
                }
            }
        }
        for e in container.env.iter().flatten() {
            let value = match (&e.value, &e.value_from) {
                (_, Some(src)) => match self.value_from(pod, container, src, pod_ips).await? {
                    Some(v) => v,
                    None => continue,
                },
                (Some(v), None) => {
                    // $(VAR) refers to variables defined earlier in the list, then to the
                    // service variables.
                    let lookup: BTreeMap<String, String> = env.iter().cloned().collect();
                    expand(v, &|name: &str| {
                        lookup.get(name).or_else(|| services.get(name)).cloned()
                    })
                }
                (None, None) => String::new(),
            };
            set(&mut env, e.name.clone(), value);
        }
        // Service variables come last, where the container does not define the name itself.
        for (k, v) in services {
            if !env.iter().any(|(n, _)| *n == k) {
                env.push((k, v));
            }
        }
        // Volume mounts (subPathExpr expands against the final environment; a bad mount is a
        // config error), then /etc/hosts.
        let mut mounts = match &self.volumes {
            Some(v) => v
                .container_mounts(pod, container, &env)
                .map_err(|e| ConfigError(e.to_string()))?,
            None => Vec::new(),
        };
        mounts.extend(self.hosts_mount(pod, container, pod_ips)?);
        Ok(RunContainerOptions {
            envs: env,
            mounts,
            hostname: pod_hostname(pod),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVar, ObjectFieldSelector, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns1".into()),
                uid: Some("u-1".into()),
                labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn field(name: &str, path: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn values_field_refs_and_expansion() {
        let p = pod();
        let c = Container {
            name: "c".into(),
            env: Some(vec![
                EnvVar {
                    name: "FOO".into(),
                    value: Some("foo-value".into()),
                    ..Default::default()
                },
                EnvVar {
                    name: "BAR".into(),
                    value: Some("bar-value".into()),
                    ..Default::default()
                },
                EnvVar {
                    name: "FOOBAR".into(),
                    value: Some("$(FOO);;$(BAR)".into()),
                    ..Default::default()
                },
                field("POD_NAME", "metadata.name"),
                field("POD_NS", "metadata.namespace"),
                field("APP", "metadata.labels['app']"),
                field("POD_IP", "status.podIP"),
                field("HOST_IP", "status.hostIP"),
                field("NODE", "spec.nodeName"),
            ]),
            ..Default::default()
        };
        let r = KubeletRunOptions::new(None, "n1".into(), vec!["10.0.0.5".into()]);
        let o = r
            .run_container_options(&p, &c, &["10.88.0.7".to_string()])
            .await
            .unwrap();
        let get = |k: &str| o.envs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("FOOBAR").as_deref(), Some("foo-value;;bar-value"));
        assert_eq!(get("POD_NAME").as_deref(), Some("web"));
        assert_eq!(get("POD_NS").as_deref(), Some("ns1"));
        assert_eq!(get("APP").as_deref(), Some("web"));
        assert_eq!(get("POD_IP").as_deref(), Some("10.88.0.7"));
        assert_eq!(get("HOST_IP").as_deref(), Some("10.0.0.5"));
        assert_eq!(get("NODE").as_deref(), Some("n1"));
        assert_eq!(o.hostname, "web");
    }

    #[tokio::test]
    async fn unsupported_field_path_is_a_config_error() {
        let c = Container {
            name: "c".into(),
            env: Some(vec![field("X", "spec.nope")]),
            ..Default::default()
        };
        let r = KubeletRunOptions::new(None, "n1".into(), vec![]);
        let e = r.run_container_options(&pod(), &c, &[]).await.unwrap_err();
        assert_eq!(e.0, "unsupported fieldPath: spec.nope");
    }

    fn resource_env(name: &str, resource: &str, divisor: Option<&str>) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                resource_field_ref: Some(ResourceFieldSelector {
                    resource: resource.into(),
                    divisor: divisor.map(|d| Quantity(d.into())),
                    container_name: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Port of the kubelet's resourceFieldRef cases (`TestMakeEnvironmentVariables` downward API
    /// resources): ceil(quantity / divisor), cpu in millicores, unset limits = node allocatable.
    #[tokio::test]
    async fn resource_field_refs_with_divisors_and_allocatable_defaults() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "resources": {"requests": {"cpu": "250m", "memory": "32Mi"}, "limits": {"cpu": "1250m"}},
            "env": []
        }))
        .unwrap();
        let c = Container {
            env: Some(vec![
                resource_env("CPU_REQ", "requests.cpu", None),
                resource_env("CPU_REQ_M", "requests.cpu", Some("1m")),
                resource_env("CPU_LIM", "limits.cpu", None),
                resource_env("MEM_REQ", "requests.memory", None),
                resource_env("MEM_REQ_MI", "requests.memory", Some("1Mi")),
                resource_env("MEM_LIM", "limits.memory", Some("1Mi")),
                resource_env("EPH_LIM", "limits.ephemeral-storage", Some("1Gi")),
                resource_env("EPH_REQ", "requests.ephemeral-storage", None),
            ]),
            ..c
        };
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1"},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "10Gi"}}
        }))
        .unwrap();
        let (_tx, rx) = watch::channel(Some(node));
        let r = KubeletRunOptions::new(None, "n1".into(), vec![]).with_node(rx);
        let o = r.run_container_options(&pod(), &c, &[]).await.unwrap();
        let get = |k: &str| o.envs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(get("CPU_REQ"), "1");
        assert_eq!(get("CPU_REQ_M"), "250");
        assert_eq!(get("CPU_LIM"), "2");
        assert_eq!(get("MEM_REQ"), "33554432");
        assert_eq!(get("MEM_REQ_MI"), "32");
        assert_eq!(get("MEM_LIM"), "8192");
        assert_eq!(get("EPH_LIM"), "10");
        assert_eq!(get("EPH_REQ"), "0");

        let bad = Container {
            env: Some(vec![resource_env("X", "limits.gpu", None)]),
            ..Default::default()
        };
        let e = r.run_container_options(&pod(), &bad, &[]).await.unwrap_err();
        assert_eq!(e.0, "unsupported container resource : limits.gpu");
    }

    #[test]
    fn managed_hosts_file_matches_the_kubelet() {
        let aliases = vec![
            HostAlias {
                ip: "123.45.67.89".into(),
                hostnames: Some(vec!["foo".into(), "bar".into(), "baz".into()]),
            },
            HostAlias {
                ip: "456.78.90.123".into(),
                hostnames: Some(vec!["park".into(), "doo".into(), "boo".into()]),
            },
        ];
        // `TestManagedHostsFileContent` ("hosts test file with host aliases" and with domain).
        assert_eq!(
            managed_hosts_file_content(&["203.0.113.1".into()], "podFoo", None, &aliases),
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n203.0.113.1\tpodFoo\n\n# Entries added by HostAliases.\n123.45.67.89\tfoo\tbar\tbaz\n456.78.90.123\tpark\tdoo\tboo\n"
        );
        assert_eq!(
            managed_hosts_file_content(&["203.0.113.1".into(), "fd00::6".into()], "podFoo", Some("domainFoo"), &[]),
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n203.0.113.1\tpodFoo.domainFoo\tpodFoo\nfd00::6\tpodFoo.domainFoo\tpodFoo\n"
        );
        assert_eq!(
            node_hosts_file_content("127.0.0.1\tlocalhost\n", &aliases[..1]),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1\tlocalhost\n\n# Entries added by HostAliases.\n123.45.67.89\tfoo\tbar\tbaz\n"
        );
    }

    #[tokio::test]
    async fn hosts_file_is_written_and_mounted_unless_a_volume_takes_etc_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = pod();
        p.spec.as_mut().unwrap().subdomain = Some("sub".into());
        let r = KubeletRunOptions::new(None, "n1".into(), vec![]).with_pod_files(dir.path().into(), "cl.local".into());
        let c = Container {
            name: "c".into(),
            ..Default::default()
        };
        // No pod IP yet: no mount.
        assert!(r.run_container_options(&p, &c, &[]).await.unwrap().mounts.is_empty());
        let o = r
            .run_container_options(&p, &c, &["10.1.2.3".to_string()])
            .await
            .unwrap();
        let path = dir.path().join("pods/u-1/etc-hosts");
        assert_eq!(o.mounts.len(), 1);
        assert_eq!(o.mounts[0].container_path, "/etc/hosts");
        assert_eq!(o.mounts[0].host_path, path.to_string_lossy());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("10.1.2.3\tweb.sub.ns1.svc.cl.local\tweb\n"), "{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "volumeMounts": [{"name": "v", "mountPath": "/etc/hosts"}]
        }))
        .unwrap();
        assert!(r
            .run_container_options(&p, &c, &["10.1.2.3".to_string()])
            .await
            .unwrap()
            .mounts
            .is_empty());
    }

    #[test]
    fn hostname_is_truncated_and_trimmed() {
        let mut p = pod();
        p.metadata.name = Some(format!("{}-x", "a".repeat(62)));
        assert_eq!(pod_hostname(&p), "a".repeat(62));
    }
}
