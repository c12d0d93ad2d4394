//! Which pod goes first (`helpers.go`'s rankers) and what its eviction says (`evictionMessage`).
//!
//! - memory: pods whose working set exceeds their memory request first, then lower priority,
//!   then the larger usage above the request (so BestEffort pods, whose request is zero, lead);
//! - disk (nodefs/imagefs bytes or inodes): the same with ephemeral-storage usage measured on
//!   the filesystems the signal covers;
//! - pids: lower priority, then more processes.
//!
//! A pod without stats ranks first, as in the kubelet. Ties keep the input order.

use std::cmp::Ordering;
use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;

use super::thresholds::{format_binary_si, Observations, Signal, Threshold};
use crate::kubelet::stats::types::{FsStats, PodStats};
use crate::podspec::resources::{parse_value, pod_request_milli};

/// The filesystem figures a disk signal counts (`fsStatsType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsPart {
    Root,
    Logs,
    LocalVolumes,
}

/// Pod stats by pod UID.
pub type StatsByUid<'a> = HashMap<&'a str, &'a PodStats>;

pub fn stats_by_uid(pods: &[PodStats]) -> StatsByUid<'_> {
    pods.iter().map(|p| (p.pod_ref.uid.as_str(), p)).collect()
}

fn uid(p: &Pod) -> &str {
    p.metadata.uid.as_deref().unwrap_or_default()
}

/// `cmpBool`: true ranks first.
fn cmp_bool(a: bool, b: bool) -> Ordering {
    b.cmp(&a)
}

fn priority(p: &Pod) -> i32 {
    p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// `podRequest` in whole units (memory and ephemeral-storage; zero for inodes).
fn request(p: &Pod, resource: &str) -> i128 {
    match (resource, p.spec.as_ref()) {
        ("memory" | "ephemeral-storage", Some(s)) => pod_request_milli(s, resource).div_euclid(1000),
        _ => 0,
    }
}

fn working_set(s: &PodStats) -> i128 {
    s.memory
        .as_ref()
        .and_then(|m| m.working_set_bytes)
        .map(i128::from)
        .unwrap_or(0)
}

fn fs_used(fs: Option<&FsStats>, inodes: bool) -> i128 {
    fs.and_then(|f| if inodes { f.inodes_used } else { f.used_bytes })
        .map(i128::from)
        .unwrap_or(0)
}

/// Volumes the kubelet counts as local ephemeral storage (`IsLocalEphemeralVolume`).
fn local_volume_names(p: &Pod) -> Vec<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter(|v| {
            v.git_repo.is_some()
                || v.config_map.is_some()
                || v.empty_dir
                    .as_ref()
                    .is_some_and(|e| e.medium.as_deref().unwrap_or("").is_empty())
        })
        .map(|v| v.name.as_str())
        .collect()
}

/// `podDiskUsage`: bytes (or inodes) over the parts measured.
pub fn disk_usage(pod: &Pod, s: &PodStats, parts: &[FsPart], inodes: bool) -> i128 {
    let mut total = 0;
    for c in s.containers.iter().flatten() {
        if parts.contains(&FsPart::Root) {
            total += fs_used(c.rootfs.as_ref(), inodes);
        }
        if parts.contains(&FsPart::Logs) {
            total += fs_used(c.logs.as_ref(), inodes);
        }
    }
    if parts.contains(&FsPart::LocalVolumes) {
        let names = local_volume_names(pod);
        for v in s.volume.iter().flatten() {
            if v.name.as_deref().is_some_and(|n| names.contains(&n)) {
                total += fs_used(Some(&v.fs), inodes);
            }
        }
    }
    total
}

type Cmp<'a> = Box<dyn Fn(&Pod, &Pod) -> Ordering + 'a>;

/// Both pods' stats, or the order that puts the one without stats first.
fn both<'a>(stats: &StatsByUid<'a>, a: &Pod, b: &Pod) -> Result<(&'a PodStats, &'a PodStats), Ordering> {
    match (stats.get(uid(a)), stats.get(uid(b))) {
        (Some(x), Some(y)) => Ok((x, y)),
        (x, y) => Err(cmp_bool(x.is_none(), y.is_none())),
    }
}

fn by_priority<'a>() -> Cmp<'a> {
    Box::new(|a, b| priority(a).cmp(&priority(b)))
}

fn exceeds_memory_requests<'a>(stats: &'a StatsByUid<'a>) -> Cmp<'a> {
    Box::new(move |a, b| match both(stats, a, b) {
        Err(o) => o,
        Ok((x, y)) => cmp_bool(
            working_set(x) > request(a, "memory"),
            working_set(y) > request(b, "memory"),
        ),
    })
}

fn memory_above_request<'a>(stats: &'a StatsByUid<'a>) -> Cmp<'a> {
    Box::new(move |a, b| match both(stats, a, b) {
        Err(o) => o,
        Ok((x, y)) => {
            let ua = working_set(x) - request(a, "memory");
            let ub = working_set(y) - request(b, "memory");
            ub.cmp(&ua)
        }
    })
}

fn exceeds_disk_requests<'a>(stats: &'a StatsByUid<'a>, parts: &'a [FsPart], resource: &'a str) -> Cmp<'a> {
    let inodes = resource == "inodes";
    Box::new(move |a, b| match both(stats, a, b) {
        Err(o) => o,
        Ok((x, y)) => cmp_bool(
            disk_usage(a, x, parts, inodes) > request(a, resource),
            disk_usage(b, y, parts, inodes) > request(b, resource),
        ),
    })
}

fn disk_above_request<'a>(stats: &'a StatsByUid<'a>, parts: &'a [FsPart], resource: &'a str) -> Cmp<'a> {
    let inodes = resource == "inodes";
    Box::new(move |a, b| match both(stats, a, b) {
        Err(o) => o,
        Ok((x, y)) => {
            // The kubelet subtracts the ephemeral-storage request for inodes too.
            let ua = disk_usage(a, x, parts, inodes) - request(a, "ephemeral-storage");
            let ub = disk_usage(b, y, parts, inodes) - request(b, "ephemeral-storage");
            ub.cmp(&ua)
        }
    })
}

fn processes<'a>(stats: &'a StatsByUid<'a>) -> Cmp<'a> {
    let count = |s: &PodStats| s.process_stats.as_ref().and_then(|p| p.process_count).unwrap_or(0);
    Box::new(move |a, b| match both(stats, a, b) {
        Err(o) => o,
        Ok((x, y)) => count(y).cmp(&count(x)),
    })
}

fn ordered(pods: &mut [Pod], cmps: &[Cmp<'_>]) {
    pods.sort_by(|a, b| {
        cmps.iter()
            .map(|c| c(a, b))
            .find(|o| *o != Ordering::Equal)
            .unwrap_or(Ordering::Equal)
    });
}

/// The filesystems a disk signal measures (`buildSignalToRankFunc`): with a dedicated image
/// filesystem, nodefs counts logs and local volumes and imagefs the writable layers; otherwise
/// both count all three.
pub fn fs_parts(signal: Signal, dedicated_image_fs: bool) -> &'static [FsPart] {
    match (signal, dedicated_image_fs) {
        (Signal::NodeFsAvailable | Signal::NodeFsInodesFree, true) => &[FsPart::LocalVolumes, FsPart::Logs],
        (Signal::ImageFsAvailable | Signal::ImageFsInodesFree, true) => &[FsPart::Root],
        _ => &[FsPart::Root, FsPart::Logs, FsPart::LocalVolumes],
    }
}

/// Sorts `pods` for eviction under `signal`, first to go first.
pub fn rank(signal: Signal, pods: &mut [Pod], stats: &StatsByUid<'_>, dedicated_image_fs: bool) {
    match signal {
        Signal::MemoryAvailable => ordered(
            pods,
            &[
                exceeds_memory_requests(stats),
                by_priority(),
                memory_above_request(stats),
            ],
        ),
        Signal::PidAvailable => ordered(pods, &[by_priority(), processes(stats)]),
        _ => {
            let parts = fs_parts(signal, dedicated_image_fs);
            let resource = signal.resource();
            ordered(
                pods,
                &[
                    exceeds_disk_requests(stats, parts, resource),
                    by_priority(),
                    disk_above_request(stats, parts, resource),
                ],
            )
        }
    }
}

/// `evictionMessage`: the pod's status message and event text, plus the offending containers
/// (names and usages) for the event's annotations.
pub fn message(
    resource: &str,
    pod: &Pod,
    stats: &StatsByUid<'_>,
    thresholds: &[Threshold],
    obs: &Observations,
) -> (String, Vec<(String, String)>) {
    let mut msg = format!("The node was low on resource: {resource}. ");
    if let Some((t, o)) = thresholds
        .iter()
        .filter(|t| t.signal.resource() == resource)
        .find_map(|t| obs.get(&t.signal).map(|o| (t, o)))
    {
        let available = if resource == "inodes" {
            super::thresholds::format_decimal_si(o.available)
        } else {
            format_binary_si(o.available)
        };
        msg += &format!(
            "Threshold quantity: {}, available: {available}. ",
            t.value.display(o.capacity)
        );
    }
    let mut offending = Vec::new();
    let Some(s) = stats.get(uid(pod)) else {
        return (msg, offending);
    };
    let spec_containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    for cs in s.containers.iter().flatten() {
        let Some(c) = spec_containers.iter().find(|c| c.name == cs.name) else {
            continue;
        };
        let usage = match resource {
            "memory" => cs.memory.as_ref().and_then(|m| m.working_set_bytes).map(i128::from),
            "ephemeral-storage" => match (
                cs.rootfs.as_ref().and_then(|f| f.used_bytes),
                cs.logs.as_ref().and_then(|f| f.used_bytes),
            ) {
                (Some(r), Some(l)) => Some(i128::from(r) + i128::from(l)),
                _ => None,
            },
            _ => None,
        };
        let req_text = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(resource))
            .map(|q| q.0.clone());
        let req = req_text.as_deref().and_then(|t| parse_value(t).ok()).unwrap_or(0);
        if let Some(u) = usage.filter(|u| *u > req) {
            let used = format_binary_si(u);
            msg += &format!(
                "Container {} was using {used}, request is {}, has larger consumption of {resource}. ",
                c.name,
                req_text.as_deref().unwrap_or("0")
            );
            offending.push((c.name.clone(), used));
        }
    }
    (msg, offending)
}
