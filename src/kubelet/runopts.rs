//! What the kubelet resolves for a container before the runtime creates it
//! (`GenerateRunContainerOptions`): the environment (kubelet-behavior.md §4.9), the volume
//! mounts (§4.11, from the volume manager) and the hostname.
//! `$(VAR)` references inside values are expanded by the runtime manager with the same rules
//! as command and args.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVarSource, Pod, Secret};
use kube::api::Api;

use crate::genericruntime::expand::expand;
use crate::genericruntime::{ConfigError, RunContainerOptions, RunOptionsProvider};
use crate::kubelet::volumes::VolumeManager;

/// Resolves env from the pod, the node and (when there is an API server) ConfigMaps and Secrets.
pub struct KubeletRunOptions {
    client: Option<kube::Client>,
    node_name: String,
    node_ips: Vec<String>,
    /// Where the pod's volumes are; None = containers get no volume mounts.
    volumes: Option<Arc<VolumeManager>>,
}

impl KubeletRunOptions {
    pub fn new(client: Option<kube::Client>, node_name: String, node_ips: Vec<String>) -> Self {
        Self {
            client,
            node_name,
            node_ips,
            volumes: None,
        }
    }

    /// Mount the pod's volumes (set up by `volumes`) into its containers.
    #[must_use]
    pub fn with_volumes(mut self, volumes: Arc<VolumeManager>) -> Self {
        self.volumes = Some(volumes);
        self
    }

    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, ConfigError> {
        let Some(client) = &self.client else { return Ok(None) };
        Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| ConfigError(format!("failed to get configmap {ns}/{name}: {e}")))
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, ConfigError> {
        let Some(client) = &self.client else { return Ok(None) };
        Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| ConfigError(format!("failed to get secret {ns}/{name}: {e}")))
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
        if src.resource_field_ref.is_some() {
            return Err(ConfigError(
                "resourceFieldRef environment variables are not supported yet".into(),
            ));
        }
        Ok(None)
    }
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
                (_, Some(src)) => match self.value_from(pod, src, pod_ips).await? {
                    Some(v) => v,
                    None => continue,
                },
                (Some(v), None) => {
                    // $(VAR) refers to variables defined earlier in the list.
                    let lookup: BTreeMap<String, String> = env.iter().cloned().collect();
                    expand(v, &|name: &str| lookup.get(name).cloned())
                }
                (None, None) => String::new(),
            };
            set(&mut env, e.name.clone(), value);
        }
        // subPathExpr expands against the final environment; a bad mount is a config error.
        let mounts = match &self.volumes {
            Some(v) => v
                .container_mounts(pod, container, &env)
                .map_err(|e| ConfigError(e.to_string()))?,
            None => Vec::new(),
        };
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

    #[test]
    fn hostname_is_truncated_and_trimmed() {
        let mut p = pod();
        p.metadata.name = Some(format!("{}-x", "a".repeat(62)));
        assert_eq!(pod_hostname(&p), "a".repeat(62));
    }
}
