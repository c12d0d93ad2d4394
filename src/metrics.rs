//! keel's own Prometheus series (what the kubelet serves on `/metrics`), in one process-wide
//! registry as the kubelet's `legacyregistry`: runtime call latency and errors per operation
//! (recorded by `genericruntime::instrumented`), pod worker sync latency (the pod workers),
//! pods and workers gauges (set when scraped), and API requests by verb and code.
//!
//! Names and labels follow the kubelet's (`pkg/kubelet/metrics/metrics.go`,
//! `component-base/metrics/prometheus/restclient`); buckets too. The registry is encoded with
//! prometheus-client, i.e. in the OpenMetrics text format (counters as `<name>_total`).

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The kubelet subsystem prefix of its own series.
const KUBELET: &str = "kubelet";

/// `operation_type` of a runtime call (`kubelet_runtime_operations_*`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation_type: String,
}

/// `kubelet_working_pods{lifecycle}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LifecycleLabels {
    pub lifecycle: String,
}

/// `rest_client_requests_total{code,host,method}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestLabels {
    pub code: String,
    pub host: String,
    pub method: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn runtime_buckets() -> Histogram {
    // The kubelet's RuntimeOperationsDuration: ExponentialBuckets(.005, 2.5, 14).
    Histogram::new(exponential_buckets(0.005, 2.5, 14))
}

fn default_buckets() -> Histogram {
    // prometheus.DefBuckets (PodWorkerDuration uses them).
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

/// The series and their registry.
pub struct KeelMetrics {
    registry: Registry,
    pub runtime_operations_duration: HistogramFamily<OperationLabels>,
    pub runtime_operations_errors: Family<OperationLabels, Counter>,
    pub pod_worker_duration: HistogramFamily<OperationLabels>,
    pub running_pods: Gauge,
    pub running_containers: Gauge,
    pub working_pods: Family<LifecycleLabels, Gauge>,
    pub rest_client_requests: Family<RestLabels, Counter>,
}

impl KeelMetrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let runtime_operations_duration: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(runtime_buckets as fn() -> Histogram);
        let runtime_operations_errors = Family::<OperationLabels, Counter>::default();
        let pod_worker_duration: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(default_buckets as fn() -> Histogram);
        let running_pods = Gauge::default();
        let running_containers = Gauge::default();
        let working_pods = Family::<LifecycleLabels, Gauge>::default();
        let rest_client_requests = Family::<RestLabels, Counter>::default();
        registry.register(
            format!("{KUBELET}_runtime_operations_duration_seconds"),
            "[ALPHA] Duration in seconds of runtime operations. Broken down by operation type.",
            runtime_operations_duration.clone(),
        );
        registry.register(
            format!("{KUBELET}_runtime_operations_errors"),
            "[ALPHA] Cumulative number of runtime operation errors by operation type.",
            runtime_operations_errors.clone(),
        );
        registry.register(
            format!("{KUBELET}_pod_worker_duration_seconds"),
            "[ALPHA] Duration in seconds to sync a single pod. Broken down by operation type: create, update, or sync",
            pod_worker_duration.clone(),
        );
        registry.register(
            format!("{KUBELET}_running_pods"),
            "[ALPHA] Number of pods that have a running pod sandbox",
            running_pods.clone(),
        );
        registry.register(
            format!("{KUBELET}_running_containers"),
            "[ALPHA] Number of containers currently running",
            running_containers.clone(),
        );
        registry.register(
            format!("{KUBELET}_working_pods"),
            "[ALPHA] Number of pods the kubelet is actually running, broken down by lifecycle phase.",
            working_pods.clone(),
        );
        registry.register(
            "rest_client_requests",
            "[ALPHA] Number of HTTP requests, partitioned by status code, method, and host.",
            rest_client_requests.clone(),
        );
        Self {
            registry,
            runtime_operations_duration,
            runtime_operations_errors,
            pod_worker_duration,
            running_pods,
            running_containers,
            working_pods,
            rest_client_requests,
        }
    }

    /// Records one runtime call (`operation` in the kubelet's snake case, e.g. `run_podsandbox`).
    pub fn runtime_operation(&self, operation: &str, took: Duration, failed: bool) {
        let labels = OperationLabels {
            operation_type: operation.to_string(),
        };
        self.runtime_operations_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if failed {
            self.runtime_operations_errors.get_or_create(&labels).inc();
        }
    }

    /// Records one pod sync by the pod workers (`create`, `update`, `sync`, `kill`).
    pub fn pod_worker_sync(&self, operation: &str, took: Duration) {
        self.pod_worker_duration
            .get_or_create(&OperationLabels {
                operation_type: operation.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Records one API request.
    pub fn rest_request(&self, method: &str, code: &str, host: &str) {
        self.rest_client_requests
            .get_or_create(&RestLabels {
                code: code.to_string(),
                host: host.to_string(),
                method: method.to_string(),
            })
            .inc();
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The process-wide series.
pub fn global() -> &'static KeelMetrics {
    static METRICS: LazyLock<KeelMetrics> = LazyLock::new(KeelMetrics::new);
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_encoded_with_the_kubelet_names() {
        // A private instance: the global one is shared with other tests.
        let m = KeelMetrics::new();
        m.runtime_operation("run_podsandbox", Duration::from_millis(20), false);
        m.runtime_operation("run_podsandbox", Duration::from_millis(30), true);
        m.pod_worker_sync("create", Duration::from_millis(3));
        m.running_pods.set(2);
        m.working_pods
            .get_or_create(&LifecycleLabels {
                lifecycle: "sync".into(),
            })
            .set(2);
        m.rest_request("PATCH", "200", "127.0.0.1:6443");
        let text = m.encode().unwrap();
        for want in [
            "# TYPE kubelet_runtime_operations_duration_seconds histogram",
            "kubelet_runtime_operations_duration_seconds_count{operation_type=\"run_podsandbox\"} 2",
            "kubelet_runtime_operations_duration_seconds_bucket{le=\"0.005\",operation_type=\"run_podsandbox\"} 0",
            "kubelet_runtime_operations_errors_total{operation_type=\"run_podsandbox\"} 1",
            "kubelet_pod_worker_duration_seconds_count{operation_type=\"create\"} 1",
            "kubelet_running_pods 2",
            "kubelet_working_pods{lifecycle=\"sync\"} 2",
            "rest_client_requests_total{code=\"200\",host=\"127.0.0.1:6443\",method=\"PATCH\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
    }
}
