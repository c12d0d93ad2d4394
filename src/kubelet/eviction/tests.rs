//! Tables ported from the kubelet's `helpers_test.go` and `eviction_manager_test.go` (the
//! cases, not the code), plus a fake host for whole synchronize rounds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::manager::{EvictionConfig, EvictionHost, Manager, Pressure};
use super::rank::{self, stats_by_uid};
use super::thresholds::*;
use super::EvictionError;
use crate::kubelet::stats::types::{
    ContainerStats, FsStats, MemoryStats, NodeStats, PodReference, PodStats, ProcessStats, RlimitStats, RuntimeStats,
    Summary,
};

const MI: i128 = 1 << 20;
const GI: i128 = 1 << 30;

fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn q(amount: i128) -> Value {
    Value::Quantity { amount, binary: true }
}

fn t(signal: Signal, value: Value, grace: u64, min_reclaim: Option<Value>) -> Threshold {
    Threshold {
        signal,
        value,
        grace_period: Duration::from_secs(grace),
        min_reclaim,
    }
}

fn parse(
    hard: &[(&str, &str)],
    soft: &[(&str, &str)],
    grace: &[(&str, &str)],
    reclaim: &[(&str, &str)],
) -> Result<Vec<Threshold>, EvictionError> {
    let (h, s, g, r) = (map(hard), map(soft), map(grace), map(reclaim));
    parse_thresholds(&ThresholdConfig {
        hard: Some(&h),
        soft: Some(&s),
        soft_grace_period: Some(&g),
        minimum_reclaim: Some(&r),
    })
}

fn same_set(a: &[Threshold], b: &[Threshold]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

#[test]
fn parse_threshold_config_table() {
    use Signal::*;
    let pct = Value::Percentage;
    type Case = (&'static str, Vec<Threshold>, Result<Vec<Threshold>, EvictionError>);
    let ok: Vec<Case> = vec![
        ("no values", vec![], parse(&[], &[], &[], &[])),
        (
            "all memory eviction values",
            vec![
                t(
                    MemoryAvailable,
                    q(150 * MI),
                    0,
                    Some(Value::Quantity {
                        amount: 0,
                        binary: false,
                    }),
                ),
                t(
                    MemoryAvailable,
                    q(300 * MI),
                    30,
                    Some(Value::Quantity {
                        amount: 0,
                        binary: false,
                    }),
                ),
            ],
            parse(
                &[("memory.available", "150Mi")],
                &[("memory.available", "300Mi")],
                &[("memory.available", "30s")],
                &[("memory.available", "0")],
            ),
        ),
        (
            "all memory eviction values in percentages",
            vec![
                t(MemoryAvailable, pct(0.1), 0, Some(pct(0.05))),
                t(MemoryAvailable, pct(0.3), 30, Some(pct(0.05))),
            ],
            parse(
                &[("memory.available", "10%")],
                &[("memory.available", "30%")],
                &[("memory.available", "30s")],
                &[("memory.available", "5%")],
            ),
        ),
        (
            "disk eviction values",
            vec![
                t(ImageFsAvailable, q(150 * MI), 0, Some(q(2 * GI))),
                t(NodeFsAvailable, q(100 * MI), 0, Some(q(GI))),
                t(ImageFsAvailable, q(300 * MI), 30, Some(q(2 * GI))),
                t(NodeFsAvailable, q(200 * MI), 30, Some(q(GI))),
            ],
            parse(
                &[("imagefs.available", "150Mi"), ("nodefs.available", "100Mi")],
                &[("imagefs.available", "300Mi"), ("nodefs.available", "200Mi")],
                &[("imagefs.available", "30s"), ("nodefs.available", "30s")],
                &[("imagefs.available", "2Gi"), ("nodefs.available", "1Gi")],
            ),
        ),
        (
            "disk eviction values in percentages",
            vec![
                t(ImageFsAvailable, pct(0.15), 0, Some(pct(0.1))),
                t(NodeFsAvailable, pct(0.105), 0, Some(pct(0.05))),
                t(ImageFsAvailable, pct(0.3), 30, Some(pct(0.1))),
                t(NodeFsAvailable, pct(0.205), 30, Some(pct(0.05))),
            ],
            parse(
                &[("imagefs.available", "15%"), ("nodefs.available", "10.5%")],
                &[("imagefs.available", "30%"), ("nodefs.available", "20.5%")],
                &[("imagefs.available", "30s"), ("nodefs.available", "30s")],
                &[("imagefs.available", "10%"), ("nodefs.available", "5%")],
            ),
        ),
        (
            "inode eviction values",
            vec![
                t(ImageFsInodesFree, q(150 * MI), 0, Some(q(2 * GI))),
                t(NodeFsInodesFree, q(100 * MI), 0, Some(q(GI))),
                t(ImageFsInodesFree, q(300 * MI), 30, Some(q(2 * GI))),
                t(NodeFsInodesFree, q(200 * MI), 30, Some(q(GI))),
            ],
            parse(
                &[("imagefs.inodesFree", "150Mi"), ("nodefs.inodesFree", "100Mi")],
                &[("imagefs.inodesFree", "300Mi"), ("nodefs.inodesFree", "200Mi")],
                &[("imagefs.inodesFree", "30s"), ("nodefs.inodesFree", "30s")],
                &[("imagefs.inodesFree", "2Gi"), ("nodefs.inodesFree", "1Gi")],
            ),
        ),
        (
            "disable via 0%",
            vec![],
            parse(&[("memory.available", "0%")], &[("memory.available", "0%")], &[], &[]),
        ),
        (
            "disable via 100%",
            vec![],
            parse(
                &[("memory.available", "100%")],
                &[("memory.available", "100%")],
                &[],
                &[],
            ),
        ),
    ];
    for (name, want, got) in ok {
        let got = got.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(same_set(&want, &got), "{name}: want {want:?}, got {got:?}");
    }
    let bad = [
        ("invalid-signal", parse(&[("mem.available", "150Mi")], &[], &[], &[])),
        (
            "hard-signal-negative",
            parse(&[("memory.available", "-150Mi")], &[], &[], &[]),
        ),
        (
            "hard-signal-negative-percentage",
            parse(&[("memory.available", "-15%")], &[], &[], &[]),
        ),
        (
            "hard-signal-percentage-greater-than-100%",
            parse(&[("memory.available", "150%")], &[], &[], &[]),
        ),
        (
            "soft-signal-negative",
            parse(&[], &[("memory.available", "-150Mi")], &[], &[]),
        ),
        (
            "valid-and-invalid-signal",
            parse(
                &[("memory.available", "150Mi"), ("invalid.foo", "150Mi")],
                &[],
                &[],
                &[],
            ),
        ),
        (
            "soft-no-grace-period",
            parse(&[], &[("memory.available", "150Mi")], &[], &[]),
        ),
        (
            "soft-negative-grace-period",
            parse(
                &[],
                &[("memory.available", "150Mi")],
                &[("memory.available", "-30s")],
                &[],
            ),
        ),
        (
            "negative-reclaim",
            parse(&[], &[], &[], &[("memory.available", "-300Mi")]),
        ),
    ];
    for (name, r) in bad {
        assert!(r.is_err(), "{name}: {r:?}");
    }
    let e = parse(&[], &[("memory.available", "150Mi")], &[], &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "evictionSoftGracePeriod.memory.available: grace period must be specified for the soft eviction threshold memory.available"
    );
    let e = parse(&[("mem.available", "1Gi")], &[], &[], &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "evictionHard.mem.available: unsupported eviction signal mem.available"
    );
}

#[test]
fn kubelet_defaults_parse() {
    let d = crate::kubelet::config::default_eviction_hard();
    let ts = parse_thresholds(&ThresholdConfig {
        hard: Some(&d),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(ts.len(), 4);
    assert!(ts.contains(&t(Signal::MemoryAvailable, q(100 * MI), 0, None)));
    assert!(ts.contains(&t(Signal::NodeFsAvailable, Value::Percentage(0.1), 0, None)));
    assert!(ts.contains(&t(Signal::NodeFsInodesFree, Value::Percentage(0.05), 0, None)));
    assert!(ts.contains(&t(Signal::ImageFsAvailable, Value::Percentage(0.15), 0, None)));
}

fn obs(signal: Signal, available: i128, capacity: i128) -> Observations {
    [(
        signal,
        Observation {
            available,
            capacity,
            time: None,
        },
    )]
    .into()
}

#[test]
fn thresholds_met_table() {
    // TestThresholdsMet: 1Gi threshold with a 500Mi minimum reclaim.
    let hard = t(Signal::MemoryAvailable, q(GI), 0, Some(q(500 * MI)));
    let cases = [
        ("empty", vec![], obs(Signal::MemoryAvailable, 0, 0), false, 0),
        (
            "threshold-met-memory",
            vec![hard.clone()],
            obs(Signal::MemoryAvailable, 500 * MI, 0),
            false,
            1,
        ),
        (
            "threshold-not-met",
            vec![hard.clone()],
            obs(Signal::MemoryAvailable, 2 * GI, 0),
            false,
            0,
        ),
        (
            "threshold-met-with-min-reclaim",
            vec![hard.clone()],
            obs(Signal::MemoryAvailable, 1050 * MI, 0),
            true,
            1,
        ),
        (
            "threshold-not-met-with-min-reclaim",
            vec![hard.clone()],
            obs(Signal::MemoryAvailable, 2 * GI, 0),
            true,
            0,
        ),
        ("no observation", vec![hard.clone()], Observations::new(), false, 0),
    ];
    for (name, ts, o, enforce, want) in cases {
        assert_eq!(thresholds_met(&ts, &o, enforce).len(), want, "{name}");
    }
    // TestPercentageThresholdsMet: 10% of a 1000Mi capacity (min reclaim 5%).
    let pct = t(
        Signal::MemoryAvailable,
        Value::Percentage(0.1),
        0,
        Some(Value::Percentage(0.05)),
    );
    assert_eq!(
        thresholds_met(
            std::slice::from_ref(&pct),
            &obs(Signal::MemoryAvailable, 500 * MI, 1000 * MI),
            false
        )
        .len(),
        0
    );
    assert_eq!(
        thresholds_met(
            std::slice::from_ref(&pct),
            &obs(Signal::MemoryAvailable, 50 * MI, 1000 * MI),
            false
        )
        .len(),
        1
    );
    assert_eq!(
        thresholds_met(
            std::slice::from_ref(&pct),
            &obs(Signal::MemoryAvailable, 120 * MI, 1000 * MI),
            true
        )
        .len(),
        1
    );
    assert_eq!(
        thresholds_met(&[pct], &obs(Signal::MemoryAvailable, 200 * MI, 1000 * MI), true).len(),
        0
    );
}

#[test]
fn grace_periods_and_transition_period() {
    let soft = t(Signal::MemoryAvailable, q(GI), 30, None);
    let hard = t(Signal::NodeFsAvailable, q(GI), 0, None);
    let now = Duration::from_secs(100);
    // TestThresholdsFirstObservedAt: new ones now, known ones keep their time.
    let first = first_observed_at(std::slice::from_ref(&soft), &[], now);
    assert_eq!(first, vec![(soft.clone(), now)]);
    let later = now + Duration::from_secs(20);
    let first = first_observed_at(&[soft.clone(), hard.clone()], &first, later);
    assert_eq!(first, vec![(soft.clone(), now), (hard.clone(), later)]);
    // TestThresholdsMetGracePeriod: the soft one after 30 s, the hard one at once.
    assert_eq!(met_grace_period(&first, later), vec![hard.clone()]);
    assert_eq!(
        met_grace_period(&first, now + Duration::from_secs(30)),
        vec![soft.clone(), hard.clone()]
    );
    // TestNodeConditions / TestNodeConditionsObservedSince.
    let conds = node_conditions(&[soft, hard]);
    assert_eq!(
        conds,
        BTreeSet::from([NodeCondition::MemoryPressure, NodeCondition::DiskPressure])
    );
    let seen = conditions_last_observed_at(&conds, &BTreeMap::new(), now);
    let period = Duration::from_secs(60);
    assert_eq!(
        conditions_observed_since(&seen, period, now + Duration::from_secs(59)),
        conds
    );
    assert!(conditions_observed_since(&seen, period, now + Duration::from_secs(60)).is_empty());
    let pid_only = BTreeSet::from([NodeCondition::PidPressure]);
    let seen2 = conditions_last_observed_at(&pid_only, &seen, now + Duration::from_secs(50));
    assert_eq!(
        conditions_observed_since(&seen2, period, now + Duration::from_secs(70)),
        pid_only
    );
}

#[test]
fn sort_by_eviction_priority_memory_first() {
    let mut ts = vec![
        t(Signal::NodeFsAvailable, q(1), 0, None),
        t(Signal::PidAvailable, q(1), 0, None),
        t(Signal::MemoryAvailable, q(1), 0, None),
    ];
    sort_by_eviction_priority(&mut ts);
    let order: Vec<Signal> = ts.iter().map(|t| t.signal).collect();
    assert_eq!(
        order,
        [Signal::MemoryAvailable, Signal::NodeFsAvailable, Signal::PidAvailable]
    );
}

#[test]
fn signal_observations_from_a_summary() {
    let s = Summary {
        node: NodeStats {
            memory: Some(MemoryStats {
                available_bytes: Some(1 << 30),
                working_set_bytes: Some(1 << 30),
                ..Default::default()
            }),
            fs: Some(FsStats {
                available_bytes: Some(1024),
                capacity_bytes: Some(2048),
                inodes_free: Some(1024),
                inodes: Some(1 << 20),
                ..Default::default()
            }),
            runtime: Some(RuntimeStats {
                image_fs: Some(FsStats {
                    available_bytes: Some(1 << 20),
                    capacity_bytes: Some(2 << 20),
                    inodes_free: Some(1024),
                    inodes: Some(1 << 20),
                    ..Default::default()
                }),
                container_fs: None,
            }),
            rlimit: Some(RlimitStats {
                time: None,
                maxpid: Some(255_816),
                curproc: Some(1000),
            }),
            ..Default::default()
        },
        pods: None,
    };
    let o = observations(&s);
    let get = |sig| o.get(&sig).map(|x| (x.available, x.capacity));
    assert_eq!(get(Signal::MemoryAvailable), Some((GI, 2 * GI)));
    assert_eq!(get(Signal::NodeFsAvailable), Some((1024, 2048)));
    assert_eq!(get(Signal::NodeFsInodesFree), Some((1024, 1 << 20)));
    assert_eq!(get(Signal::ImageFsAvailable), Some((1 << 20, 2 << 20)));
    assert_eq!(get(Signal::ImageFsInodesFree), Some((1024, 1 << 20)));
    assert_eq!(get(Signal::PidAvailable), Some((255_816 - 1000, 255_816)));
}

#[test]
fn quantities_print_like_resource_quantity() {
    assert_eq!(format_binary_si(100 * MI), "100Mi");
    assert_eq!(format_binary_si(52_428_800), "50Mi");
    assert_eq!(format_binary_si(1536), "1536");
    assert_eq!(format_binary_si(1000), "1k");
    assert_eq!(format_binary_si(0), "0");
    assert_eq!(format_binary_si(1_000_000), "1000000");
    assert_eq!(format_decimal_si(2_000_000), "2M");
    // float32 percentages, as the kubelet computes them.
    assert_eq!(Value::Percentage(0.1).display(1000 * MI), "104857601");
}

// ---- ranking ----

fn res(kv: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
    (!kv.is_empty()).then(|| {
        kv.iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    })
}

fn pod(name: &str, priority: i32, requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            priority: Some(priority),
            containers: vec![Container {
                name: name.into(),
                resources: Some(ResourceRequirements {
                    requests: res(requests),
                    limits: res(limits),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

fn pod_stats(p: &Pod, container: ContainerStats) -> PodStats {
    PodStats {
        pod_ref: PodReference {
            name: p.metadata.name.clone().unwrap(),
            namespace: "default".into(),
            uid: p.metadata.uid.clone().unwrap(),
        },
        memory: container.memory.clone(),
        containers: Some(vec![container]),
        ..Default::default()
    }
}

fn mem_stats(p: &Pod, ws: i128) -> PodStats {
    pod_stats(
        p,
        ContainerStats {
            name: p.metadata.name.clone().unwrap(),
            memory: Some(MemoryStats {
                working_set_bytes: Some(ws as u64),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

fn disk_stats(p: &Pod, root: i128, logs: i128) -> PodStats {
    let fs = |used: i128| FsStats {
        used_bytes: Some(used as u64),
        inodes_used: Some((used / 1000) as u64),
        ..Default::default()
    };
    pod_stats(
        p,
        ContainerStats {
            name: p.metadata.name.clone().unwrap(),
            rootfs: Some(fs(root)),
            logs: Some(fs(logs)),
            ..Default::default()
        },
    )
}

fn names(pods: &[Pod]) -> Vec<&str> {
    pods.iter().map(|p| p.metadata.name.as_deref().unwrap()).collect()
}

const LOW: i32 = -1;
const DEFAULT: i32 = 0;
const HIGH: i32 = 1;

#[test]
fn ranks_by_memory_above_request() {
    // TestOrderedByMemory, through the whole memory ranker (every pod but the Guaranteed ones
    // exceeds its request, so the first two keys keep this order).
    let pods = vec![
        pod("best-effort-high", DEFAULT, &[], &[]),
        pod("best-effort-low", DEFAULT, &[], &[]),
        pod("burstable-high", DEFAULT, &[("memory", "100Mi")], &[("memory", "1Gi")]),
        pod("burstable-low", DEFAULT, &[("memory", "100Mi")], &[("memory", "1Gi")]),
        pod("guaranteed-high", DEFAULT, &[("memory", "1Gi")], &[("memory", "1Gi")]),
        pod("guaranteed-low", DEFAULT, &[("memory", "1Gi")], &[("memory", "1Gi")]),
    ];
    let usage = [500, 300, 800, 300, 800, 200];
    let stats: Vec<PodStats> = pods.iter().zip(usage).map(|(p, u)| mem_stats(p, u * MI)).collect();
    let by_uid = stats_by_uid(&stats);
    let mut ranked = pods.clone();
    rank::rank(Signal::MemoryAvailable, &mut ranked, &by_uid, false);
    assert_eq!(
        names(&ranked),
        [
            "burstable-high",
            "best-effort-high",
            "best-effort-low",
            "burstable-low",
            "guaranteed-high",
            "guaranteed-low"
        ]
    );
}

#[test]
fn ranks_by_exceeding_requests_then_priority_then_usage() {
    // TestOrderedByPriorityMemory.
    let pods = vec![
        pod(
            "below-requests-high-priority-low-usage",
            HIGH,
            &[("memory", "1Gi")],
            &[],
        ),
        pod(
            "below-requests-high-priority-high-usage",
            HIGH,
            &[("memory", "1Gi")],
            &[],
        ),
        pod("below-requests-low-priority-low-usage", LOW, &[("memory", "1Gi")], &[]),
        pod("below-requests-low-priority-high-usage", LOW, &[("memory", "1Gi")], &[]),
        pod(
            "above-requests-high-priority-low-usage",
            HIGH,
            &[("memory", "100Mi")],
            &[],
        ),
        pod(
            "above-requests-high-priority-high-usage",
            HIGH,
            &[("memory", "100Mi")],
            &[],
        ),
        pod("above-requests-low-priority-low-usage", LOW, &[], &[]),
        pod("above-requests-low-priority-high-usage", LOW, &[], &[]),
    ];
    let usage = [200, 800, 200, 800, 150, 600, 50, 500];
    let stats: Vec<PodStats> = pods.iter().zip(usage).map(|(p, u)| mem_stats(p, u * MI)).collect();
    let by_uid = stats_by_uid(&stats);
    let mut ranked = pods.clone();
    rank::rank(Signal::MemoryAvailable, &mut ranked, &by_uid, false);
    assert_eq!(
        names(&ranked),
        [
            "above-requests-low-priority-high-usage",
            "above-requests-low-priority-low-usage",
            "above-requests-high-priority-high-usage",
            "above-requests-high-priority-low-usage",
            "below-requests-low-priority-high-usage",
            "below-requests-low-priority-low-usage",
            "below-requests-high-priority-high-usage",
            "below-requests-high-priority-low-usage",
        ]
    );
}

#[test]
fn pods_without_stats_rank_first() {
    let a = pod("with-stats", DEFAULT, &[], &[]);
    let b = pod("without-stats", DEFAULT, &[], &[]);
    let stats = vec![mem_stats(&a, 900 * MI)];
    let by_uid = stats_by_uid(&stats);
    let mut ranked = vec![a, b];
    rank::rank(Signal::MemoryAvailable, &mut ranked, &by_uid, false);
    assert_eq!(names(&ranked), ["without-stats", "with-stats"]);
}

#[test]
fn ranks_by_disk_usage_above_request() {
    // TestOrderedbyDisk's shape: ephemeral-storage usage (root + logs) relative to the request.
    let pods = vec![
        pod("small-no-request", DEFAULT, &[], &[]),
        pod("big-with-request", DEFAULT, &[("ephemeral-storage", "400Mi")], &[]),
        pod("big-no-request", DEFAULT, &[], &[]),
        pod("low-priority", LOW, &[("ephemeral-storage", "1Gi")], &[]),
    ];
    let usage = [(100, 50), (400, 100), (300, 50), (50, 10)];
    let stats: Vec<PodStats> = pods
        .iter()
        .zip(usage)
        .map(|(p, (r, l))| disk_stats(p, r * MI, l * MI))
        .collect();
    let by_uid = stats_by_uid(&stats);
    let mut ranked = pods.clone();
    rank::rank(Signal::NodeFsAvailable, &mut ranked, &by_uid, false);
    assert_eq!(
        names(&ranked),
        ["big-no-request", "small-no-request", "big-with-request", "low-priority"]
    );
    // With a dedicated image filesystem, imagefs counts only the writable layers (400Mi is
    // not above the 400Mi request: then lower priority first) ...
    let mut ranked = pods.clone();
    rank::rank(Signal::ImageFsAvailable, &mut ranked, &by_uid, true);
    assert_eq!(
        names(&ranked),
        ["big-no-request", "small-no-request", "low-priority", "big-with-request"]
    );
    // ... and nodefs only logs and local volumes (50Mi each for the first two: a tie keeps
    // their order).
    let mut ranked = pods.clone();
    rank::rank(Signal::NodeFsAvailable, &mut ranked, &by_uid, true);
    assert_eq!(
        names(&ranked),
        ["small-no-request", "big-no-request", "low-priority", "big-with-request"]
    );
}

#[test]
fn ranks_by_priority_then_processes() {
    // TestOrderedByPriorityProcess.
    let pods = vec![
        pod("high-priority-low-usage", HIGH, &[], &[]),
        pod("high-priority-high-usage", HIGH, &[], &[]),
        pod("low-priority-low-usage", LOW, &[], &[]),
        pod("low-priority-high-usage", LOW, &[], &[]),
    ];
    let counts = [5, 20, 6, 20];
    let stats: Vec<PodStats> = pods
        .iter()
        .zip(counts)
        .map(|(p, n)| PodStats {
            process_stats: Some(ProcessStats { process_count: Some(n) }),
            ..mem_stats(p, 0)
        })
        .collect();
    let by_uid = stats_by_uid(&stats);
    let mut ranked = pods.clone();
    rank::rank(Signal::PidAvailable, &mut ranked, &by_uid, false);
    assert_eq!(
        names(&ranked),
        [
            "low-priority-high-usage",
            "low-priority-low-usage",
            "high-priority-high-usage",
            "high-priority-low-usage"
        ]
    );
}

#[test]
fn eviction_message_names_the_threshold_and_the_greedy_containers() {
    let p = pod("hog", DEFAULT, &[("memory", "100Mi")], &[]);
    let stats = vec![mem_stats(&p, 300 * MI)];
    let by_uid = stats_by_uid(&stats);
    let ts = [t(Signal::MemoryAvailable, q(100 * MI), 0, None)];
    let o = obs(Signal::MemoryAvailable, 50 * MI, 4 * GI);
    let (msg, offending) = rank::message("memory", &p, &by_uid, &ts, &o);
    assert_eq!(
        msg,
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
         Container hog was using 300Mi, request is 100Mi, has larger consumption of memory. "
    );
    assert_eq!(offending, [("hog".to_string(), "300Mi".to_string())]);
    // Under its request: no container part. A percentage threshold prints its bytes.
    let small = vec![mem_stats(&p, 60 * MI)];
    let ts = [t(Signal::MemoryAvailable, Value::Percentage(0.1), 0, None)];
    let o = obs(Signal::MemoryAvailable, 51_200 * 1024 + 1, 1000 * MI);
    let (msg, _) = rank::message("memory", &p, &stats_by_uid(&small), &ts, &o);
    assert_eq!(
        msg,
        "The node was low on resource: memory. Threshold quantity: 104857601, available: 52428801. "
    );
}

// ---- whole rounds ----

#[derive(Default)]
struct FakeHost {
    summary: Mutex<Summary>,
    /// The summary after node-level reclaim (None: unchanged).
    after_reclaim: Mutex<Option<Summary>>,
    pods: Mutex<Vec<Pod>>,
    killed: Mutex<Vec<(String, i64, String)>>,
    events: Mutex<Vec<(String, String)>>,
    reclaimed: Mutex<u32>,
}

#[async_trait]
impl EvictionHost for FakeHost {
    async fn summary(&self) -> Result<Summary, EvictionError> {
        Ok(self.summary.lock().unwrap().clone())
    }
    fn active_pods(&self) -> Vec<Pod> {
        self.pods.lock().unwrap().clone()
    }
    async fn dedicated_image_fs(&self) -> Option<bool> {
        Some(false)
    }
    async fn delete_unused_containers(&self) -> Result<(), String> {
        *self.reclaimed.lock().unwrap() += 1;
        Ok(())
    }
    async fn delete_unused_images(&self) -> Result<(), String> {
        if let Some(s) = self.after_reclaim.lock().unwrap().take() {
            *self.summary.lock().unwrap() = s;
        }
        Ok(())
    }
    fn kill_pod(&self, pod: &Pod, grace: i64, reason: &str, _message: &str) {
        self.killed
            .lock()
            .unwrap()
            .push((pod.metadata.name.clone().unwrap(), grace, reason.to_string()));
        self.pods.lock().unwrap().retain(|p| p.metadata.uid != pod.metadata.uid);
    }
    fn pod_event(&self, pod: &Pod, reason: &str, message: &str) {
        self.events.lock().unwrap().push((
            format!("{}/{reason}", pod.metadata.name.as_deref().unwrap()),
            message.to_string(),
        ));
    }
    fn node_event(&self, reason: &str, message: &str) {
        self.events
            .lock()
            .unwrap()
            .push((format!("node/{reason}"), message.to_string()));
    }
    fn pod_cleaned_up(&self, _uid: &str) -> bool {
        true
    }
}

fn node_summary(mem_available: i128, fs_available: i128, pods: Vec<PodStats>) -> Summary {
    Summary {
        node: NodeStats {
            memory: Some(MemoryStats {
                available_bytes: Some(mem_available as u64),
                working_set_bytes: Some((4 * GI - mem_available) as u64),
                ..Default::default()
            }),
            fs: Some(FsStats {
                available_bytes: Some(fs_available as u64),
                capacity_bytes: Some((100 * GI) as u64),
                inodes_free: Some(1_000_000),
                inodes: Some(1_000_000),
                ..Default::default()
            }),
            ..Default::default()
        },
        pods: Some(pods),
    }
}

fn manager(hard: &[(&str, &str)], soft: &[(&str, &str)], grace: &[(&str, &str)], max_grace: i64) -> Manager {
    Manager::new(EvictionConfig {
        thresholds: parse(hard, soft, grace, &[]).unwrap(),
        max_pod_grace_period: max_grace,
        pressure_transition_period: Duration::from_secs(300),
    })
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test]
async fn memory_pressure_evicts_one_pod_per_round_and_spares_critical_pods() {
    let m = manager(&[("memory.available", "1Gi")], &[], &[], 0);
    // A static pod: critical whatever its priority.
    let mut critical = pod("critical", DEFAULT, &[], &[]);
    critical.metadata.annotations = Some(map(&[("kubernetes.io/config.source", "file")]));
    let be = pod("best-effort", DEFAULT, &[], &[]);
    let burstable = pod("burstable", DEFAULT, &[("memory", "100Mi")], &[]);
    let guaranteed = pod("guaranteed", DEFAULT, &[("memory", "1Gi")], &[("memory", "1Gi")]);
    let stats = vec![
        mem_stats(&critical, 3 * GI),
        mem_stats(&be, 200 * MI),
        mem_stats(&burstable, 400 * MI),
        mem_stats(&guaranteed, 500 * MI),
    ];
    let host = FakeHost::default();
    *host.summary.lock().unwrap() = node_summary(500 * MI, 50 * GI, stats);
    *host.pods.lock().unwrap() = vec![guaranteed, critical, burstable, be];
    let rx = m.pressure();

    // Round 1: the critical pod ranks first (most above its request) but is spared; burstable
    // (300Mi above its request) goes before best-effort (200Mi above).
    let evicted = m.synchronize(&host, secs(0)).await.unwrap();
    assert_eq!(evicted.metadata.name.as_deref(), Some("burstable"));
    assert_eq!(
        *rx.borrow(),
        Pressure {
            memory: true,
            disk: false,
            pid: false
        }
    );
    assert_eq!(
        host.killed.lock().unwrap()[0],
        ("burstable".into(), 1, "Evicted".into())
    );
    let events = host.events.lock().unwrap().clone();
    assert_eq!(
        events[0],
        (
            "node/EvictionThresholdMet".into(),
            "Attempting to reclaim memory".into()
        )
    );
    assert_eq!(events[1].0, "burstable/Evicted");
    assert_eq!(
        events[1].1,
        "The node was low on resource: memory. Threshold quantity: 1Gi, available: 500Mi. \
         Container burstable was using 400Mi, request is 100Mi, has larger consumption of memory. "
    );
    // No memory reclaim at node level.
    assert_eq!(*host.reclaimed.lock().unwrap(), 0);

    // Round 2 (stats updated): best-effort next; the guaranteed pod stays.
    host.summary.lock().unwrap().node.memory.as_mut().unwrap().time = Some(jiff::Timestamp::now());
    let evicted = m.synchronize(&host, secs(10)).await.unwrap();
    assert_eq!(evicted.metadata.name.as_deref(), Some("best-effort"));

    // Pressure gone: nothing evicted, but the condition holds for the transition period.
    *host.summary.lock().unwrap() = node_summary(3 * GI, 50 * GI, vec![]);
    assert!(m.synchronize(&host, secs(20)).await.is_none());
    assert!(rx.borrow().memory);
    assert!(m.synchronize(&host, secs(10 + 300)).await.is_none());
    assert!(!rx.borrow().memory, "released after evictionPressureTransitionPeriod");
    assert_eq!(host.killed.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn soft_threshold_waits_for_its_grace_period_and_caps_the_pod_grace() {
    let m = manager(
        &[],
        &[("memory.available", "1Gi")],
        &[("memory.available", "1m30s")],
        10,
    );
    let mut p = pod("pod", DEFAULT, &[], &[]);
    p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(30);
    let host = FakeHost::default();
    *host.summary.lock().unwrap() = node_summary(500 * MI, 50 * GI, vec![mem_stats(&p, 100 * MI)]);
    *host.pods.lock().unwrap() = vec![p];
    let rx = m.pressure();
    assert!(m.synchronize(&host, secs(0)).await.is_none());
    assert!(rx.borrow().memory, "the condition is set before the grace period ends");
    assert!(m.synchronize(&host, secs(60)).await.is_none());
    let touch = |h: &FakeHost| {
        h.summary.lock().unwrap().node.memory.as_mut().unwrap().time = Some(jiff::Timestamp::now());
    };
    touch(&host);
    assert!(m.synchronize(&host, secs(90)).await.is_some());
    // min(spec 30 s, evictionMaxPodGracePeriod 10 s).
    assert_eq!(host.killed.lock().unwrap()[0].1, 10);
}

#[tokio::test]
async fn disk_pressure_reclaims_node_resources_before_evicting() {
    let m = manager(&[("nodefs.available", "10%")], &[], &[], 0);
    let p = pod("writer", DEFAULT, &[], &[]);
    let host = FakeHost::default();
    *host.summary.lock().unwrap() = node_summary(3 * GI, 5 * GI, vec![disk_stats(&p, GI, MI)]);
    *host.after_reclaim.lock().unwrap() = Some(node_summary(3 * GI, 20 * GI, vec![disk_stats(&p, GI, MI)]));
    *host.pods.lock().unwrap() = vec![p.clone()];
    let rx = m.pressure();
    // Image GC freed enough: no pod evicted, DiskPressure reported for this round.
    assert!(m.synchronize(&host, secs(0)).await.is_none());
    assert_eq!(*host.reclaimed.lock().unwrap(), 1);
    assert!(rx.borrow().disk && !rx.borrow().memory);
    assert!(host.killed.lock().unwrap().is_empty());
    // Not enough: the pod goes, with the disk message.
    *host.summary.lock().unwrap() = node_summary(3 * GI, 5 * GI, vec![disk_stats(&p, GI, MI)]);
    host.summary.lock().unwrap().node.fs.as_mut().unwrap().time = Some(jiff::Timestamp::now());
    let evicted = m.synchronize(&host, secs(10)).await.unwrap();
    assert_eq!(evicted.metadata.name.as_deref(), Some("writer"));
    let events = host.events.lock().unwrap().clone();
    let (_, msg) = events.iter().find(|(k, _)| k == "writer/Evicted").unwrap();
    assert_eq!(
        msg,
        "The node was low on resource: ephemeral-storage. Threshold quantity: 10737418400, available: 5Gi. \
         Container writer was using 1025Mi, request is 0, has larger consumption of ephemeral-storage. "
    );
}
