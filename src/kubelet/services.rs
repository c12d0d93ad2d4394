//! The Service cache behind service environment variables (kubelet-behavior.md §4.9 step 1):
//! a list+watch of every Service, and the `{SVC}_SERVICE_HOST` / docker-link variables the kubelet
//! derives from them (`getServiceEnvVarMap`, `envvars.FromServices`).

use std::collections::BTreeMap;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

/// Services of the master namespace that every pod sees, even without service links.
const MASTER_SERVICES: &[&str] = &["kubernetes"];
const MASTER_NAMESPACE: &str = "default";

/// A read-only view of all Services, kept current by a watch.
#[derive(Clone)]
pub struct ServiceCache {
    store: Store<Service>,
}

impl ServiceCache {
    /// Starts the list+watch (it retries with back-off by itself) until `shutdown`.
    pub fn start(client: Client, shutdown: CancellationToken) -> Self {
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(Api::<Service>::all(client), watcher::Config::default()))
            .default_backoff()
            .touched_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            let mut failing = false;
            loop {
                let item = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    item = stream.next() => item,
                };
                match item {
                    Some(Ok(_)) => failing = false,
                    Some(Err(e)) => {
                        if !failing {
                            tracing::warn!(error = %e, "service watch failed; retrying with back-off");
                            failing = true;
                        }
                    }
                    None => return,
                }
            }
        });
        Self { store }
    }

    /// Whether the first list has arrived (`serviceHasSynced`).
    pub fn has_synced(&self) -> bool {
        self.store.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok())
    }

    /// Every Service known now.
    pub fn services(&self) -> Vec<Service> {
        self.store.state().iter().map(|s| Service::clone(s)).collect()
    }
}

fn service_ip_set(s: &Service) -> bool {
    s.spec
        .as_ref()
        .and_then(|sp| sp.cluster_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty() && ip != "None")
}

/// `getServiceEnvVarMap`: the master services always, the pod namespace's services only with
/// service links; then their variables (`FromServices`), in service-name order (the kubelet's
/// map order is undefined).
pub fn service_env(services: &[Service], ns: &str, enable_service_links: bool) -> Vec<(String, String)> {
    let mut chosen: BTreeMap<String, &Service> = BTreeMap::new();
    for s in services.iter().filter(|s| service_ip_set(s)) {
        let name = s.metadata.name.clone().unwrap_or_default();
        let svc_ns = s.metadata.namespace.as_deref().unwrap_or_default();
        if svc_ns == MASTER_NAMESPACE && MASTER_SERVICES.contains(&name.as_str()) {
            chosen.entry(name).or_insert(s);
        } else if svc_ns == ns && enable_service_links {
            chosen.insert(name, s);
        }
    }
    chosen.values().flat_map(|s| from_service(s)).collect()
}

fn env_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

/// `FromServices` for one Service with a cluster IP.
fn from_service(s: &Service) -> Vec<(String, String)> {
    let Some(spec) = s.spec.as_ref() else { return vec![] };
    let ports = spec.ports.as_deref().unwrap_or_default();
    let (Some(ip), Some(first)) = (spec.cluster_ip.clone(), ports.first()) else {
        return vec![];
    };
    let prefix = env_name(s.metadata.name.as_deref().unwrap_or_default());
    let mut out = vec![
        (format!("{prefix}_SERVICE_HOST"), ip.clone()),
        (format!("{prefix}_SERVICE_PORT"), first.port.to_string()),
    ];
    for p in ports {
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((format!("{prefix}_SERVICE_PORT_{}", env_name(n)), p.port.to_string()));
        }
    }
    // Docker-compatible link variables.
    let host = |port: i32| {
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    };
    for (i, p) in ports.iter().enumerate() {
        let proto = p.protocol.as_deref().filter(|p| !p.is_empty()).unwrap_or("TCP");
        let url = format!("{}://{}", proto.to_lowercase(), host(p.port));
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
        out.push((pp.clone(), url));
        out.push((format!("{pp}_PROTO"), proto.to_lowercase()));
        out.push((format!("{pp}_PORT"), p.port.to_string()));
        out.push((format!("{pp}_ADDR"), ip.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": ports}
        }))
        .unwrap()
    }

    /// Port of `TestMakeEnvironmentVariables` ("api server = Y, kubelet = Y" and "service links
    /// disabled") and `envvars` `TestFromServices`.
    #[test]
    fn service_variables_like_the_kubelet() {
        let services = vec![
            svc(
                "default",
                "kubernetes",
                "1.2.3.1",
                serde_json::json!([{"protocol": "TCP", "port": 8081}]),
            ),
            svc(
                "test1",
                "test",
                "1.2.3.3",
                serde_json::json!([{"protocol": "TCP", "port": 8083}]),
            ),
            svc(
                "test1",
                "foo-bar",
                "1.2.3.4",
                serde_json::json!([
                {"name": "http", "protocol": "TCP", "port": 8084},
                {"name": "dns-udp", "protocol": "UDP", "port": 53}]),
            ),
            svc("test1", "headless", "None", serde_json::json!([{"port": 80}])),
            svc("test2", "other", "1.2.3.9", serde_json::json!([{"port": 80}])),
        ];
        let env: BTreeMap<String, String> = service_env(&services, "test1", true).into_iter().collect();
        let want = [
            ("KUBERNETES_SERVICE_HOST", "1.2.3.1"),
            ("KUBERNETES_SERVICE_PORT", "8081"),
            ("KUBERNETES_PORT", "tcp://1.2.3.1:8081"),
            ("KUBERNETES_PORT_8081_TCP", "tcp://1.2.3.1:8081"),
            ("KUBERNETES_PORT_8081_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_8081_TCP_PORT", "8081"),
            ("KUBERNETES_PORT_8081_TCP_ADDR", "1.2.3.1"),
            ("TEST_SERVICE_HOST", "1.2.3.3"),
            ("TEST_SERVICE_PORT", "8083"),
            ("TEST_PORT", "tcp://1.2.3.3:8083"),
            ("TEST_PORT_8083_TCP", "tcp://1.2.3.3:8083"),
            ("TEST_PORT_8083_TCP_PROTO", "tcp"),
            ("TEST_PORT_8083_TCP_PORT", "8083"),
            ("TEST_PORT_8083_TCP_ADDR", "1.2.3.3"),
            ("FOO_BAR_SERVICE_HOST", "1.2.3.4"),
            ("FOO_BAR_SERVICE_PORT", "8084"),
            ("FOO_BAR_SERVICE_PORT_HTTP", "8084"),
            ("FOO_BAR_SERVICE_PORT_DNS_UDP", "53"),
            ("FOO_BAR_PORT", "tcp://1.2.3.4:8084"),
            ("FOO_BAR_PORT_8084_TCP", "tcp://1.2.3.4:8084"),
            ("FOO_BAR_PORT_8084_TCP_PROTO", "tcp"),
            ("FOO_BAR_PORT_8084_TCP_PORT", "8084"),
            ("FOO_BAR_PORT_8084_TCP_ADDR", "1.2.3.4"),
            ("FOO_BAR_PORT_53_UDP", "udp://1.2.3.4:53"),
            ("FOO_BAR_PORT_53_UDP_PROTO", "udp"),
            ("FOO_BAR_PORT_53_UDP_PORT", "53"),
            ("FOO_BAR_PORT_53_UDP_ADDR", "1.2.3.4"),
        ];
        let want: BTreeMap<String, String> = want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(env, want);

        // Without service links only the master service remains.
        let env = service_env(&services, "test1", false);
        assert!(env.iter().all(|(k, _)| k.starts_with("KUBERNETES_")), "{env:?}");
        assert_eq!(env.len(), 7);
    }
}
