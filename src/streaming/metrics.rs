//! `/metrics/resource` (kubelet-api-protocols.md §4.4: what metrics-server scrapes) and
//! `/metrics` (keel's own series, `crate::metrics`).
//!
//! `/metrics/resource` is Prometheus text 0.0.4 built from the CPU/memory-only summary, as the
//! kubelet's `resource_metrics.go` collector of 1.29+ (keel reports v1.33): families sorted by
//! name, labels by name, samples by label values, each sample with its stat's time as a
//! millisecond timestamp, values printed like Go's `strconv.FormatFloat(v, 'g', -1, 64)`.
//! Difference on purpose: 1.30+ hides the deprecated `scrape_error`; keel still emits it next
//! to `resource_scrape_error` so scrapers written against 1.24–1.29 keep working.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;
use crate::genericruntime::ContainerState;
use crate::kubelet::stats::{StatsProvider, Summary};
use crate::kubelet::workers::PodWorkerState;
use crate::metrics::{self as keel_metrics, LifecycleLabels};

/// Content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of the OpenMetrics text format (what prometheus-client writes).
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(own_metrics))
        .route("/metrics/resource", get(resource))
}

/// A float as Go's `strconv.FormatFloat(v, 'g', -1, 64)` (what the Prometheus Go client
/// writes): the shortest round-trip digits, in exponent form (`1.048576e+07`) when the decimal
/// exponent is below -4 or at least 6 (Go's precision for the shortest `'g'`).
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    // Shortest round-trip digits and the decimal exponent, from Rust's `{:e}`.
    let e = format!("{v:e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    const EPREC: i32 = 6;
    if !(-4..EPREC).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{v}")
    }
}

fn ms(t: Option<jiff::Timestamp>) -> Option<i64> {
    t.map(|t| t.as_millisecond())
}

/// One family's samples: (label pairs, value, timestamp).
type Samples = Vec<(Vec<(&'static str, String)>, f64, Option<i64>)>;

struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Samples,
}

fn family(name: &'static str, kind: &'static str, help: &'static str) -> Family {
    Family {
        name,
        help,
        kind,
        samples: Vec::new(),
    }
}

/// Escapes a label value for the text format.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n").replace('"', "\\\"")
}

/// `/metrics/resource` from the CPU/memory-only summary (`Err`: building it failed: only the
/// scrape-error series, set to 1).
pub fn resource_text(summary: Result<&Summary, ()>) -> String {
    const STABLE: &str = "[STABLE] ";
    let mut node_cpu = family(
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
    );
    let mut node_mem = family(
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
    );
    let mut c_cpu = family(
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
    );
    let mut c_mem = family(
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
    );
    let mut c_start = family(
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds",
    );
    let mut p_cpu = family(
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
    );
    let mut p_mem = family(
        "pod_memory_working_set_bytes",
        "gauge",
        "Current working set of the pod in bytes",
    );
    let failed = summary.is_err();
    if let Ok(s) = summary {
        if let Some(cpu) = &s.node.cpu {
            if let Some(v) = cpu.usage_core_nano_seconds {
                node_cpu.samples.push((vec![], v as f64 / 1e9, ms(cpu.time)));
            }
        }
        if let Some(m) = &s.node.memory {
            if let Some(v) = m.working_set_bytes {
                node_mem.samples.push((vec![], v as f64, ms(m.time)));
            }
        }
        for p in s.pods.iter().flatten() {
            let pod_labels = vec![
                ("namespace", p.pod_ref.namespace.clone()),
                ("pod", p.pod_ref.name.clone()),
            ];
            for c in p.containers.iter().flatten() {
                let labels = vec![
                    ("container", c.name.clone()),
                    ("namespace", p.pod_ref.namespace.clone()),
                    ("pod", p.pod_ref.name.clone()),
                ];
                if let Some(cpu) = &c.cpu {
                    if let Some(v) = cpu.usage_core_nano_seconds {
                        c_cpu.samples.push((labels.clone(), v as f64 / 1e9, ms(cpu.time)));
                    }
                }
                if let Some(m) = &c.memory {
                    if let Some(v) = m.working_set_bytes {
                        c_mem.samples.push((labels.clone(), v as f64, ms(m.time)));
                    }
                }
                // Skipped for the zero start time.
                if let Some(t) = c.start_time {
                    let secs = t.as_nanosecond() as f64 / 1e9;
                    c_start.samples.push((labels, secs, None));
                }
            }
            if let Some(cpu) = &p.cpu {
                if let Some(v) = cpu.usage_core_nano_seconds {
                    p_cpu.samples.push((pod_labels.clone(), v as f64 / 1e9, ms(cpu.time)));
                }
            }
            if let Some(m) = &p.memory {
                if let Some(v) = m.working_set_bytes {
                    p_mem.samples.push((pod_labels, v as f64, ms(m.time)));
                }
            }
        }
    }
    let err = if failed { 1.0 } else { 0.0 };
    let mut scrape = family(
        "scrape_error",
        "gauge",
        "1 if there was an error while getting container metrics, 0 otherwise",
    );
    scrape.samples.push((vec![], err, None));
    let mut resource_scrape = family(
        "resource_scrape_error",
        "gauge",
        "1 if there was an error while getting container metrics, 0 otherwise",
    );
    resource_scrape.samples.push((vec![], err, None));

    let mut families = vec![
        node_cpu,
        node_mem,
        c_cpu,
        c_mem,
        c_start,
        p_cpu,
        p_mem,
        scrape,
        resource_scrape,
    ];
    families.sort_by_key(|f| f.name);
    let mut out = String::new();
    for mut f in families {
        if f.samples.is_empty() {
            continue;
        }
        f.samples.sort_by(|a, b| a.0.cmp(&b.0));
        let help = if f.name == "scrape_error" {
            // Deprecated ALPHA series: component-base puts the deprecation after the level.
            format!("[ALPHA] (Deprecated since 1.29.0) {}", f.help)
        } else {
            format!("{STABLE}{}", f.help)
        };
        let _ = writeln!(out, "# HELP {} {}", f.name, help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (labels, value, ts) in &f.samples {
            out.push_str(f.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            let _ = write!(out, " {}", go_float(*value));
            if let Some(ts) = ts {
                let _ = write!(out, " {ts}");
            }
            out.push('\n');
        }
    }
    out
}

async fn resource(State(state): State<AppState>) -> Response {
    let provider = StatsProvider::for_core(&state.core);
    resource_response(&provider).await
}

/// The `/metrics/resource` answer from a provider.
pub async fn resource_response(provider: &StatsProvider) -> Response {
    let summary = provider.summary(true).await;
    if let Err(e) = &summary {
        tracing::warn!(error = %e, "building the resource metrics failed");
    }
    let text = resource_text(summary.as_ref().map_err(|_| ()));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT))],
        text,
    )
        .into_response()
}

/// Sets the gauges that are read at scrape time from the kubelet's state.
fn refresh_gauges(state: &AppState) {
    let m = keel_metrics::global();
    let core = &state.core;
    let (mut pods, mut containers) = (0i64, 0i64);
    for pod in core.pods() {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let status = core.cache.get(&uid).status;
        let ready = crate::genericruntime::cri::PodSandboxState::SandboxReady as i32;
        if status.sandbox_statuses.iter().any(|s| s.state == ready) {
            pods += 1;
        }
        containers += status
            .container_statuses
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .count() as i64;
    }
    m.running_pods.set(pods);
    m.running_containers.set(containers);
    if let Some(workers) = core.workers() {
        let counts = workers.counts();
        for (state, name) in [
            (PodWorkerState::Syncing, "sync"),
            (PodWorkerState::Terminating, "terminating"),
            (PodWorkerState::Terminated, "terminated"),
        ] {
            m.working_pods
                .get_or_create(&LifecycleLabels {
                    lifecycle: name.to_string(),
                })
                .set(counts.get(&state).copied().unwrap_or(0) as i64);
        }
    }
}

async fn own_metrics(State(state): State<AppState>) -> Response {
    refresh_gauges(&state);
    match keel_metrics::global().encode() {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS_TEXT))],
            text,
        )
            .into_response(),
        Err(e) => super::stats::internal_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::stats::types::{ContainerStats, CpuStats, MemoryStats, NodeStats, PodReference, PodStats};

    /// The reference sample's summary (artifacts/summary-and-metrics-samples.txt).
    fn sample() -> Summary {
        let noon: jiff::Timestamp = "2024-05-01T12:00:00Z".parse().unwrap();
        let eleven: jiff::Timestamp = "2024-05-01T11:00:00Z".parse().unwrap();
        let cpu = |ns: u64| {
            Some(CpuStats {
                time: Some(noon),
                usage_core_nano_seconds: Some(ns),
                usage_nano_cores: None,
            })
        };
        let mem = |b: u64| {
            Some(MemoryStats {
                time: Some(noon),
                working_set_bytes: Some(b),
                ..Default::default()
            })
        };
        Summary {
            node: NodeStats {
                node_name: "node-a".into(),
                start_time: Some(eleven),
                cpu: cpu(123_456_789_000),
                memory: mem(2_147_483_648),
                ..Default::default()
            },
            pods: Some(vec![PodStats {
                pod_ref: PodReference {
                    name: "web".into(),
                    namespace: "default".into(),
                    uid: "1111-2222".into(),
                },
                start_time: Some(eleven),
                containers: Some(vec![ContainerStats {
                    name: "nginx".into(),
                    start_time: Some(eleven),
                    cpu: cpu(5_000_000_000),
                    memory: mem(10_485_760),
                    ..Default::default()
                }]),
                cpu: cpu(5_100_000_000),
                memory: mem(11_534_336),
                ..Default::default()
            }]),
        }
    }

    /// The reference text with the 1.29+ stability levels and the scrape-error pair.
    const WANT: &str = r#"# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="nginx",namespace="default",pod="web"} 5 1714564800000
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="nginx",namespace="default",pod="web"} 1.048576e+07 1714564800000
# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="nginx",namespace="default",pod="web"} 1.7145612e+09
# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 123.456789 1714564800000
# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 2.147483648e+09 1714564800000
# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{namespace="default",pod="web"} 5.1 1714564800000
# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes
# TYPE pod_memory_working_set_bytes gauge
pod_memory_working_set_bytes{namespace="default",pod="web"} 1.1534336e+07 1714564800000
# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE resource_scrape_error gauge
resource_scrape_error 0
# HELP scrape_error [ALPHA] (Deprecated since 1.29.0) 1 if there was an error while getting container metrics, 0 otherwise
# TYPE scrape_error gauge
scrape_error 0
"#;

    #[test]
    fn resource_text_matches_the_reference_sample() {
        assert_eq!(resource_text(Ok(&sample())), WANT);
    }

    #[test]
    fn go_float_formatting() {
        for (v, want) in [
            (5.0, "5"),
            (5.1, "5.1"),
            (123.456789, "123.456789"),
            (1.048576e7, "1.048576e+07"),
            (2147483648.0, "2.147483648e+09"),
            (1.7145612e9, "1.7145612e+09"),
            (123456.0, "123456"),
            (1e6, "1e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.0, "0"),
            (-2.5, "-2.5"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(go_float(v), want, "{v}");
        }
    }

    /// Parses the text format back: every sample line is `name{labels} value [ts]`, with a
    /// HELP and TYPE line before its family, families sorted.
    #[test]
    fn text_parses_back() {
        let text = resource_text(Ok(&sample()));
        let mut families = Vec::new();
        let mut samples = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                families.push(rest.split(' ').next().unwrap().to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, rest) = match line.find('}') {
                Some(i) => (&line[..=i], line[i + 1..].trim()),
                None => line.split_once(' ').unwrap(),
            };
            let mut parts = rest.split(' ');
            let value: f64 = parts.next().unwrap().parse().unwrap();
            let ts: Option<i64> = parts.next().map(|t| t.parse().unwrap());
            samples.insert(series.to_string(), (value, ts));
        }
        let mut sorted = families.clone();
        sorted.sort();
        assert_eq!(families, sorted);
        assert_eq!(
            samples["node_cpu_usage_seconds_total"],
            (123.456789, Some(1_714_564_800_000))
        );
        assert_eq!(
            samples[r#"container_memory_working_set_bytes{container="nginx",namespace="default",pod="web"}"#].0,
            10_485_760.0
        );
        assert_eq!(samples["resource_scrape_error"], (0.0, None));
    }

    #[test]
    fn failure_gives_only_the_error_series() {
        let text = resource_text(Err(()));
        assert!(text.contains("\nresource_scrape_error 1\n"), "{text}");
        assert!(text.contains("\nscrape_error 1\n"), "{text}");
        assert!(!text.contains("node_cpu"), "{text}");
    }

    #[test]
    fn labels_are_escaped_and_samples_sorted() {
        let mut s = sample();
        let mut p2 = s.pods.as_ref().unwrap()[0].clone();
        p2.pod_ref.name = "a\"b".into();
        s.pods.as_mut().unwrap().push(p2);
        let text = resource_text(Ok(&s));
        let a = text
            .find(r#"pod_cpu_usage_seconds_total{namespace="default",pod="a\"b"}"#)
            .unwrap();
        let w = text
            .find(r#"pod_cpu_usage_seconds_total{namespace="default",pod="web"}"#)
            .unwrap();
        assert!(a < w);
    }
}
