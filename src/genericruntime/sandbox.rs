//! Sandbox config generation and creation (§1.4): metadata and attempt, hostname, log directory,
//! DNS, port mappings, Linux config (cgroup parent, namespaces, security context basics).

use std::collections::HashSet;
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;

use super::labels::{new_pod_annotations, new_pod_labels};
use super::manager::RuntimeManager;
use super::seam::cri;
use super::types::EventType;
use super::util::{containers, host_network, pod_name, pod_namespace, pod_uid};

/// Errors generating or creating a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("failed to create pod log directory {path}: {source}")]
    CreateLogDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pod FQDN hostname {fqdn:?} is too long (64 characters is the max, {len} characters requested)")]
    FqdnTooLong { fqdn: String, len: usize },
    #[error(transparent)]
    Runtime(#[from] super::seam::RuntimeError),
}

/// Search path limits of glibc's resolver the kubelet enforces.
const MAX_DNS_SEARCH_PATHS: usize = 32;

/// DNS settings of the node (`clusterDNS`, `clusterDomain`, `resolvConf`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub resolv_conf: std::path::PathBuf,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            cluster_dns: vec![],
            cluster_domain: "cluster.local".into(),
            resolv_conf: "/etc/resolv.conf".into(),
        }
    }
}

/// Parses resolv.conf into (servers, searches, options).
pub fn parse_resolv_conf(text: &str) -> cri::DnsConfig {
    let mut cfg = cri::DnsConfig::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("").trim();
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => cfg.servers.extend(f.next().map(String::from)),
            Some("search") => cfg.searches = f.map(String::from).collect(),
            Some("options") => cfg.options.extend(f.map(String::from)),
            _ => {}
        }
    }
    cfg
}

fn dedup(v: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    v.into_iter().filter(|s| seen.insert(s.clone())).collect()
}

/// The pod hostname: `spec.hostname` or the pod name, truncated to 63 characters with trailing
/// `-`/`.` trimmed; with `setHostnameAsFQDN` and a subdomain, the FQDN (max 64).
pub fn pod_hostname(pod: &Pod, cluster_domain: &str) -> Result<String, SandboxError> {
    let spec = pod.spec.as_ref();
    let host = spec
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod_name(pod).to_string());
    let host = truncate_hostname(&host);
    let subdomain = spec.and_then(|s| s.subdomain.clone()).filter(|s| !s.is_empty());
    if spec.and_then(|s| s.set_hostname_as_fqdn).unwrap_or(false) {
        if let Some(sub) = subdomain {
            let fqdn = format!("{host}.{sub}.{}.svc.{cluster_domain}", pod_namespace(pod));
            if fqdn.len() > 64 {
                return Err(SandboxError::FqdnTooLong { len: fqdn.len(), fqdn });
            }
            return Ok(fqdn);
        }
    }
    Ok(host)
}

fn truncate_hostname(h: &str) -> String {
    if h.len() <= 63 {
        return h.to_string();
    }
    let mut cut = 63;
    while !h.is_char_boundary(cut) {
        cut -= 1;
    }
    h[..cut].trim_end_matches(['-', '.']).to_string()
}

/// `MakePortMappings`: one mapping per declared port (duplicate names in a container skipped).
pub fn port_mappings(pod: &Pod) -> Vec<cri::PortMapping> {
    let mut out = Vec::new();
    for c in containers(pod) {
        let mut names = HashSet::new();
        for p in c.ports.iter().flatten() {
            if let Some(n) = p.name.as_ref().filter(|n| !n.is_empty()) {
                if !names.insert(n.clone()) {
                    tracing::warn!(container = %c.name, port = %n, "duplicate port name, skipped");
                    continue;
                }
            }
            let protocol = match p.protocol.as_deref() {
                Some("UDP") => cri::Protocol::Udp,
                Some("SCTP") => cri::Protocol::Sctp,
                _ => cri::Protocol::Tcp,
            };
            out.push(cri::PortMapping {
                protocol: protocol as i32,
                container_port: p.container_port,
                host_port: p.host_port.unwrap_or(0),
                host_ip: p.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    out
}

impl RuntimeManager {
    /// DNS config for a pod (the DNS configurer). ClusterFirst without clusterDNS falls back to
    /// the host's resolv.conf with a `MissingClusterDNS` warning.
    fn dns_config(&self, pod: &Pod) -> cri::DnsConfig {
        let spec = pod.spec.as_ref();
        let policy = spec
            .and_then(|s| s.dns_policy.clone())
            .unwrap_or_else(|| "ClusterFirst".into());
        let host_net = host_network(pod);
        let dns = self.dns();
        let host_conf = || match std::fs::read_to_string(&dns.resolv_conf) {
            Ok(t) => parse_resolv_conf(&t),
            Err(e) => {
                tracing::warn!(path = %dns.resolv_conf.display(), error = %e, "cannot read host resolv.conf");
                cri::DnsConfig::default()
            }
        };
        let cluster_first = (policy == "ClusterFirst" && !host_net) || policy == "ClusterFirstWithHostNet";
        let mut cfg = if policy == "None" {
            cri::DnsConfig::default()
        } else if cluster_first {
            if dns.cluster_dns.is_empty() {
                self.events.pod_event(
                    pod,
                    None,
                    EventType::Warning,
                    "MissingClusterDNS",
                    format!(
                        "pod: {:?}. kubelet does not have ClusterDNS IP configured and cannot create Pod using {policy:?} policy. Falling back to \"Default\" policy.",
                        super::util::format_pod(pod)
                    ),
                );
                host_conf()
            } else {
                let host = host_conf();
                let ns = pod_namespace(pod);
                let d = &dns.cluster_domain;
                let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
                searches.extend(host.searches);
                cri::DnsConfig {
                    servers: dns.cluster_dns.clone(),
                    searches,
                    options: vec!["ndots:5".into()],
                }
            }
        } else {
            host_conf()
        };
        if let Some(pc) = spec.and_then(|s| s.dns_config.as_ref()) {
            cfg.servers.extend(pc.nameservers.clone().unwrap_or_default());
            cfg.searches.extend(pc.searches.clone().unwrap_or_default());
            for o in pc.options.iter().flatten() {
                let Some(name) = o.name.clone() else { continue };
                let rendered = match &o.value {
                    Some(v) => format!("{name}:{v}"),
                    None => name.clone(),
                };
                cfg.options.retain(|x| x.split(':').next() != Some(name.as_str()));
                cfg.options.push(rendered);
            }
        }
        cfg.servers = dedup(cfg.servers);
        cfg.searches = dedup(cfg.searches);
        cfg.searches.truncate(MAX_DNS_SEARCH_PATHS);
        cfg
    }

    fn sandbox_linux_config(&self, pod: &Pod) -> cri::LinuxPodSandboxConfig {
        let spec = pod.spec.as_ref();
        let psc = spec.and_then(|s| s.security_context.as_ref());
        let mode = |on: bool| if on { cri::NamespaceMode::Node } else { cri::NamespaceMode::Pod } as i32;
        let pid = if spec.and_then(|s| s.host_pid).unwrap_or(false) {
            cri::NamespaceMode::Node
        } else if spec.and_then(|s| s.share_process_namespace).unwrap_or(false) {
            cri::NamespaceMode::Pod
        } else {
            cri::NamespaceMode::Container
        } as i32;
        let privileged = containers(pod)
            .iter()
            .chain(super::util::init_containers(pod))
            .any(|c| c.security_context.as_ref().and_then(|s| s.privileged).unwrap_or(false));
        let mut groups: Vec<i64> = Vec::new();
        if let Some(g) = psc.and_then(|p| p.fs_group) {
            groups.push(g);
        }
        groups.extend(psc.and_then(|p| p.supplemental_groups.clone()).unwrap_or_default());
        let sysctls = psc
            .and_then(|p| p.sysctls.as_ref())
            .map(|s| s.iter().map(|x| (x.name.replace('/', "."), x.value.clone())).collect())
            .unwrap_or_default();
        cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/pod{}", self.cfg.cgroup_root.trim_end_matches('/'), pod_uid(pod)),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: mode(host_network(pod)),
                    ipc: mode(spec.and_then(|s| s.host_ipc).unwrap_or(false)),
                    pid,
                    ..Default::default()
                }),
                run_as_user: psc.and_then(|p| p.run_as_user).map(|v| cri::Int64Value { value: v }),
                run_as_group: psc.and_then(|p| p.run_as_group).map(|v| cri::Int64Value { value: v }),
                supplemental_groups: groups,
                privileged,
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                selinux_options: psc
                    .and_then(|p| p.se_linux_options.as_ref())
                    .map(|o| cri::SeLinuxOption {
                        user: o.user.clone().unwrap_or_default(),
                        role: o.role.clone().unwrap_or_default(),
                        r#type: o.type_.clone().unwrap_or_default(),
                        level: o.level.clone().unwrap_or_default(),
                    }),
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }
    }

    /// `generatePodSandboxConfig`.
    pub fn generate_sandbox_config(&self, pod: &Pod, attempt: u32) -> Result<cri::PodSandboxConfig, SandboxError> {
        let hostname = if host_network(pod) {
            String::new()
        } else {
            pod_hostname(pod, &self.dns().cluster_domain)?
        };
        let log_dir = self.pod_log_dir(pod_namespace(pod), pod_name(pod), pod_uid(pod));
        Ok(cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: pod_name(pod).into(),
                uid: pod_uid(pod).into(),
                namespace: pod_namespace(pod).into(),
                attempt,
            }),
            hostname,
            log_directory: log_dir.display().to_string(),
            dns_config: Some(self.dns_config(pod)),
            port_mappings: port_mappings(pod),
            labels: new_pod_labels(pod),
            annotations: new_pod_annotations(pod),
            linux: Some(self.sandbox_linux_config(pod)),
            windows: None,
        })
    }

    /// `createPodSandbox`: config, log directory (0755), RunPodSandbox. Returns (id, config).
    pub(super) async fn create_pod_sandbox(
        &self,
        pod: &Pod,
        attempt: u32,
    ) -> Result<(String, cri::PodSandboxConfig), SandboxError> {
        let config = self.generate_sandbox_config(pod, attempt)?;
        create_dir_0755(Path::new(&config.log_directory)).map_err(|source| SandboxError::CreateLogDir {
            path: config.log_directory.clone(),
            source,
        })?;
        // keel does not look RuntimeClass objects up: the class name is taken as the runtime
        // handler's name (the common setup); an unknown one fails in RunPodSandbox.
        let handler = pod
            .spec
            .as_ref()
            .and_then(|s| s.runtime_class_name.clone())
            .unwrap_or_default();
        let resp = self
            .runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler,
            })
            .await?;
        Ok((resp.pod_sandbox_id, config))
    }
}

/// Creates a directory (and parents) with mode 0755.
pub fn create_dir_0755(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_parsing() {
        let c = parse_resolv_conf(
            "# comment\nnameserver 10.0.0.10\nnameserver 8.8.8.8 # x\nsearch a.local b.local\noptions ndots:2 edns0\n",
        );
        assert_eq!(c.servers, vec!["10.0.0.10", "8.8.8.8"]);
        assert_eq!(c.searches, vec!["a.local", "b.local"]);
        assert_eq!(c.options, vec!["ndots:2", "edns0"]);
    }

    #[test]
    fn hostname_rules() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": []}
        }))
        .unwrap();
        assert_eq!(pod_hostname(&pod, "cluster.local").unwrap(), "p");
        let long = format!("{}-.{}", "a".repeat(61), "b".repeat(10));
        pod.spec.as_mut().unwrap().hostname = Some(long);
        assert_eq!(pod_hostname(&pod, "cluster.local").unwrap(), "a".repeat(61));
        let s = pod.spec.as_mut().unwrap();
        s.hostname = Some("h".into());
        s.subdomain = Some("sub".into());
        s.set_hostname_as_fqdn = Some(true);
        assert_eq!(
            pod_hostname(&pod, "cluster.local").unwrap(),
            "h.sub.ns.svc.cluster.local"
        );
        pod.spec.as_mut().unwrap().hostname = Some("h".repeat(60));
        assert!(matches!(
            pod_hostname(&pod, "cluster.local"),
            Err(SandboxError::FqdnTooLong { .. })
        ));
    }

    #[test]
    fn port_mapping_rules() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "a", "ports": [
                    {"name": "http", "containerPort": 80, "hostPort": 8080},
                    {"name": "http", "containerPort": 81},
                    {"containerPort": 53, "protocol": "UDP"}]},
                {"name": "b", "ports": [{"containerPort": 9, "protocol": "SCTP"}]}]}
        }))
        .unwrap();
        let m = port_mappings(&pod);
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].container_port, m[0].host_port), (80, 8080));
        assert_eq!(m[1].protocol, cri::Protocol::Udp as i32);
        assert_eq!(m[2].protocol, cri::Protocol::Sctp as i32);
    }
}
