//! Eviction signals and thresholds (`pkg/kubelet/eviction/api/types.go`, `helpers.go`):
//! parsing `evictionHard`/`evictionSoft`/`evictionSoftGracePeriod`/`evictionMinimumReclaim`,
//! the observations a summary gives, and the set arithmetic of one synchronize round
//! (thresholds met, with or without minimum reclaim, first observed, grace periods met, node
//! conditions and their transition period).
//!
//! Times are virtual durations since the manager started (keel's clock may be compressed).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::clock::go_duration;
use crate::podspec::resources::parse_milli;

use super::EvictionError;
use crate::kubelet::stats::types::{FsStats, Summary};

/// An eviction signal (`evictionapi.Signal`). keel observes every one but
/// `allocatableMemory.available` (node-allocatable enforcement is not keel's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    MemoryAvailable,
    NodeFsAvailable,
    NodeFsInodesFree,
    ImageFsAvailable,
    ImageFsInodesFree,
    PidAvailable,
}

impl Signal {
    pub const ALL: [Signal; 6] = [
        Signal::MemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
        Signal::PidAvailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    pub fn parse(s: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// The node condition a threshold on this signal sets (`signalToNodeCondition`).
    pub fn node_condition(self) -> NodeCondition {
        match self {
            Signal::MemoryAvailable => NodeCondition::MemoryPressure,
            Signal::PidAvailable => NodeCondition::PidPressure,
            _ => NodeCondition::DiskPressure,
        }
    }

    /// The resource reclaimed when this signal is starved (`signalToResource`).
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => "ephemeral-storage",
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => "inodes",
            Signal::PidAvailable => "pids",
        }
    }
}

/// The pressure conditions the eviction manager reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeCondition {
    MemoryPressure,
    DiskPressure,
    PidPressure,
}

impl NodeCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeCondition::MemoryPressure => "MemoryPressure",
            NodeCondition::DiskPressure => "DiskPressure",
            NodeCondition::PidPressure => "PIDPressure",
        }
    }
}

/// A threshold's value: an absolute quantity (in bytes, inodes or pids) or a fraction of the
/// capacity (`float32` like the kubelet's, so the same bytes come out).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// The amount and whether it was written with a binary suffix (for messages).
    Quantity {
        amount: i128,
        binary: bool,
    },
    Percentage(f32),
}

impl Value {
    /// `GetThresholdQuantity`: the amount this value stands for against `capacity`.
    pub fn amount(&self, capacity: i128) -> i128 {
        match *self {
            Value::Quantity { amount, .. } => amount,
            Value::Percentage(p) => (capacity as f64 * f64::from(p)) as i128,
        }
    }

    /// The amount as `resource.Quantity.String()` prints it.
    pub fn display(&self, capacity: i128) -> String {
        match *self {
            Value::Quantity { amount, binary: false } => format_decimal_si(amount),
            _ => format_binary_si(self.amount(capacity)),
        }
    }
}

/// One threshold (`evictionapi.Threshold`); every signal's operator is LessThan.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub value: Value,
    /// Zero for hard thresholds.
    pub grace_period: Duration,
    pub min_reclaim: Option<Value>,
}

impl Threshold {
    pub fn is_hard(&self) -> bool {
        self.grace_period.is_zero()
    }
}

/// The eviction settings of a KubeletConfiguration, as maps (signal → text).
#[derive(Clone, Debug, Default)]
pub struct ThresholdConfig<'a> {
    pub hard: Option<&'a BTreeMap<String, String>>,
    pub soft: Option<&'a BTreeMap<String, String>>,
    pub soft_grace_period: Option<&'a BTreeMap<String, String>>,
    pub minimum_reclaim: Option<&'a BTreeMap<String, String>>,
}

fn signal(field: &str, s: &str) -> Result<Signal, EvictionError> {
    Signal::parse(s).ok_or_else(|| EvictionError::Config {
        field: format!("{field}.{s}"),
        message: format!("unsupported eviction signal {s}"),
    })
}

fn config_err(field: &str, signal: &str, message: String) -> EvictionError {
    EvictionError::Config {
        field: format!("{field}.{signal}"),
        message,
    }
}

/// `parsePercentage`: "10%" → 0.1 (float32).
fn parse_percentage(field: &str, sig: &str, v: &str) -> Result<f32, EvictionError> {
    v.trim_end_matches('%')
        .parse::<f64>()
        .map(|p| p as f32 / 100.0)
        .map_err(|_| config_err(field, sig, format!("invalid percentage {v:?}")))
}

fn parse_quantity(field: &str, sig: &str, v: &str) -> Result<Value, EvictionError> {
    let milli = parse_milli(v).map_err(|e| config_err(field, sig, e.to_string()))?;
    let binary = v.trim_end().ends_with('i');
    Ok(Value::Quantity {
        amount: if milli >= 0 { (milli + 999) / 1000 } else { milli / 1000 },
        binary,
    })
}

/// `parseThresholdStatement`: None for "0%" and "100%" (ignored, as the kubelet does).
fn parse_statement(field: &str, sig: &str, v: &str) -> Result<Option<Threshold>, EvictionError> {
    let signal = signal(field, sig)?;
    let value = if v.ends_with('%') {
        if v == "0%" || v == "100%" {
            return Ok(None);
        }
        let p = parse_percentage(field, sig, v)?;
        if p < 0.0 {
            return Err(config_err(
                field,
                sig,
                format!("eviction percentage threshold {sig} must be >= 0%: {v}"),
            ));
        }
        if p > 1.0 {
            return Err(config_err(
                field,
                sig,
                format!("eviction percentage threshold {sig} must be <= 100%: {v}"),
            ));
        }
        Value::Percentage(p)
    } else {
        let q = parse_quantity(field, sig, v)?;
        if matches!(q, Value::Quantity { amount, .. } if amount <= 0) {
            return Err(config_err(
                field,
                sig,
                format!("eviction threshold {sig} must be positive: {v}"),
            ));
        }
        q
    };
    Ok(Some(Threshold {
        signal,
        value,
        grace_period: Duration::ZERO,
        min_reclaim: None,
    }))
}

fn parse_statements(field: &str, m: Option<&BTreeMap<String, String>>) -> Result<Vec<Threshold>, EvictionError> {
    let mut out = Vec::new();
    for (k, v) in m.into_iter().flatten() {
        if let Some(t) = parse_statement(field, k, v)? {
            out.push(t);
        }
    }
    Ok(out)
}

/// `ParseThresholdConfig`: hard thresholds, then soft ones (each needs its grace period), then
/// the minimum reclaims applied to both.
pub fn parse_thresholds(cfg: &ThresholdConfig<'_>) -> Result<Vec<Threshold>, EvictionError> {
    let mut out = parse_statements("evictionHard", cfg.hard)?;
    let mut soft = parse_statements("evictionSoft", cfg.soft)?;
    let mut grace: BTreeMap<Signal, Duration> = BTreeMap::new();
    for (k, v) in cfg.soft_grace_period.into_iter().flatten() {
        let s = signal("evictionSoftGracePeriod", k)?;
        let d =
            crate::kubelet::config::parse_go_duration(v).map_err(|m| config_err("evictionSoftGracePeriod", k, m))?;
        grace.insert(s, d);
    }
    for t in &mut soft {
        match grace.get(&t.signal) {
            // A zero grace period makes it a hard threshold, as in the kubelet.
            Some(d) => t.grace_period = *d,
            None => {
                return Err(config_err(
                    "evictionSoftGracePeriod",
                    t.signal.as_str(),
                    format!(
                        "grace period must be specified for the soft eviction threshold {}",
                        t.signal.as_str()
                    ),
                ))
            }
        }
    }
    out.append(&mut soft);
    let mut reclaim: BTreeMap<Signal, Value> = BTreeMap::new();
    for (k, v) in cfg.minimum_reclaim.into_iter().flatten() {
        const F: &str = "evictionMinimumReclaim";
        let s = signal(F, k)?;
        let value = if v.ends_with('%') {
            let p = parse_percentage(F, k, v)?;
            if p < 0.0 {
                return Err(config_err(
                    F,
                    k,
                    format!("eviction percentage minimum reclaim {k} must be positive: {v}"),
                ));
            }
            if p > 1.0 {
                return Err(config_err(
                    F,
                    k,
                    format!("eviction percentage minimum reclaim {k} must be <= 100%: {v}"),
                ));
            }
            Value::Percentage(p)
        } else {
            let q = parse_quantity(F, k, v)?;
            if matches!(q, Value::Quantity { amount, .. } if amount < 0) {
                return Err(config_err(
                    F,
                    k,
                    format!("negative eviction minimum reclaim specified for {k}"),
                ));
            }
            q
        };
        reclaim.insert(s, value);
    }
    for t in &mut out {
        t.min_reclaim = reclaim.get(&t.signal).copied();
    }
    Ok(out)
}

/// What one signal measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    pub available: i128,
    pub capacity: i128,
    /// When the figure was taken (for "updated since the last round").
    pub time: Option<jiff::Timestamp>,
}

pub type Observations = BTreeMap<Signal, Observation>;

/// `makeSignalObservations`: the node figures of a summary.
pub fn observations(summary: &Summary) -> Observations {
    let mut out = Observations::new();
    let node = &summary.node;
    if let Some(m) = &node.memory {
        if let (Some(avail), Some(ws)) = (m.available_bytes, m.working_set_bytes) {
            out.insert(
                Signal::MemoryAvailable,
                Observation {
                    available: i128::from(avail),
                    capacity: i128::from(avail) + i128::from(ws),
                    time: m.time,
                },
            );
        }
    }
    let mut fs = |fs: &FsStats, bytes: Signal, inodes: Signal| {
        if let (Some(a), Some(c)) = (fs.available_bytes, fs.capacity_bytes) {
            out.insert(
                bytes,
                Observation {
                    available: i128::from(a),
                    capacity: i128::from(c),
                    time: fs.time,
                },
            );
        }
        if let (Some(a), Some(c)) = (fs.inodes_free, fs.inodes) {
            out.insert(
                inodes,
                Observation {
                    available: i128::from(a),
                    capacity: i128::from(c),
                    time: fs.time,
                },
            );
        }
    };
    if let Some(f) = &node.fs {
        fs(f, Signal::NodeFsAvailable, Signal::NodeFsInodesFree);
    }
    if let Some(f) = node.runtime.as_ref().and_then(|r| r.image_fs.as_ref()) {
        fs(f, Signal::ImageFsAvailable, Signal::ImageFsInodesFree);
    }
    if let Some(r) = &node.rlimit {
        if let (Some(max), Some(cur)) = (r.maxpid, r.curproc) {
            out.insert(
                Signal::PidAvailable,
                Observation {
                    available: i128::from(max) - i128::from(cur),
                    capacity: i128::from(max),
                    time: r.time,
                },
            );
        }
    }
    out
}

/// `thresholdsMet`: the thresholds whose signal is below their value (plus the minimum reclaim
/// when `enforce_min_reclaim`, i.e. for thresholds met before that must recover past it).
pub fn thresholds_met(thresholds: &[Threshold], obs: &Observations, enforce_min_reclaim: bool) -> Vec<Threshold> {
    thresholds
        .iter()
        .filter(|t| {
            let Some(o) = obs.get(&t.signal) else { return false };
            let mut quantity = t.value.amount(o.capacity);
            if enforce_min_reclaim {
                if let Some(r) = &t.min_reclaim {
                    quantity += r.amount(o.capacity);
                }
            }
            quantity > o.available
        })
        .cloned()
        .collect()
}

/// `mergeThresholds`: the union, in order.
pub fn merge(a: Vec<Threshold>, b: Vec<Threshold>) -> Vec<Threshold> {
    let mut out = a;
    for t in b {
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// When each met threshold was first seen: kept from the previous round, `now` for new ones;
/// thresholds no longer met are forgotten.
pub fn first_observed_at(
    met: &[Threshold],
    previous: &[(Threshold, Duration)],
    now: Duration,
) -> Vec<(Threshold, Duration)> {
    met.iter()
        .map(|t| {
            let at = previous.iter().find(|(p, _)| p == t).map(|(_, at)| *at).unwrap_or(now);
            (t.clone(), at)
        })
        .collect()
}

/// `thresholdsMetGracePeriod`: those met for at least their grace period.
pub fn met_grace_period(observed: &[(Threshold, Duration)], now: Duration) -> Vec<Threshold> {
    observed
        .iter()
        .filter(|(t, at)| now.saturating_sub(*at) >= t.grace_period)
        .map(|(t, _)| t.clone())
        .collect()
}

/// `nodeConditions`: the conditions the thresholds signal.
pub fn node_conditions(thresholds: &[Threshold]) -> BTreeSet<NodeCondition> {
    thresholds.iter().map(|t| t.signal.node_condition()).collect()
}

/// `nodeConditionsLastObservedAt`: `now` for the current ones, previous times for the rest.
pub fn conditions_last_observed_at(
    current: &BTreeSet<NodeCondition>,
    previous: &BTreeMap<NodeCondition, Duration>,
    now: Duration,
) -> BTreeMap<NodeCondition, Duration> {
    let mut out = previous.clone();
    for c in current {
        out.insert(*c, now);
    }
    out
}

/// `nodeConditionsObservedSince`: conditions seen within the transition period.
pub fn conditions_observed_since(
    observed: &BTreeMap<NodeCondition, Duration>,
    period: Duration,
    now: Duration,
) -> BTreeSet<NodeCondition> {
    observed
        .iter()
        .filter(|(_, at)| now.saturating_sub(**at) < period)
        .map(|(c, _)| *c)
        .collect()
}

/// `thresholdsUpdatedStats`: thresholds whose observation is newer than the last round's (a
/// signal first seen now counts as updated).
pub fn updated_stats(thresholds: Vec<Threshold>, obs: &Observations, last: &Observations) -> Vec<Threshold> {
    thresholds
        .into_iter()
        .filter(|t| {
            let Some(o) = obs.get(&t.signal) else { return false };
            match last.get(&t.signal) {
                None => true,
                Some(l) => match (o.time, l.time) {
                    (Some(a), Some(b)) => a > b,
                    _ => true,
                },
            }
        })
        .collect()
}

/// `byEvictionPriority`: memory first, then the other signals with a resource to reclaim (all
/// of keel's have one), in their configured order.
pub fn sort_by_eviction_priority(thresholds: &mut [Threshold]) {
    thresholds.sort_by_key(|t| u8::from(t.signal != Signal::MemoryAvailable));
}

/// `resource.Quantity.String()` of an integer quantity in BinarySI format.
pub fn format_binary_si(v: i128) -> String {
    if v > -1024 && v < 1024 {
        return format_decimal_si(v);
    }
    const SUF: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let mut n = v;
    let mut i = 0;
    while n % 1024 == 0 && i < SUF.len() - 1 {
        n /= 1024;
        i += 1;
    }
    format!("{n}{}", SUF[i])
}

/// `resource.Quantity.String()` of an integer quantity in DecimalSI format.
pub fn format_decimal_si(v: i128) -> String {
    const SUF: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    let mut n = v;
    let mut i = 0;
    while n != 0 && n % 1000 == 0 && i < SUF.len() - 1 {
        n /= 1000;
        i += 1;
    }
    format!("{n}{}", SUF[i])
}

/// One line for logs: `memory.available<100Mi (grace 0s)`.
pub fn describe(t: &Threshold) -> String {
    let v = match t.value {
        Value::Percentage(p) => format!("{}%", p * 100.0),
        Value::Quantity { .. } => t.value.display(0),
    };
    format!("{}<{v} (grace {})", t.signal.as_str(), go_duration(t.grace_period))
}
