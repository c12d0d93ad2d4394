//! What the end-to-end benches (benches/e2e.rs, benches/exec_kubelet.rs) print alike.

use std::time::Duration;

/// Nearest-rank percentile of sorted durations, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// `p50 … ms, p95 … ms (n=…, min …, max …)`, whole milliseconds.
pub fn latency_summary(mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "p50 {:.0} ms, p95 {:.0} ms (n={}, min {:.0}, max {:.0})",
        percentile_ms(&v, 50.0),
        percentile_ms(&v, 95.0),
        v.len(),
        percentile_ms(&v, 0.0),
        percentile_ms(&v, 100.0)
    )
}
