//! Garbage collection (§1.13): dead containers (keep the newest per (pod, container) name, all of
//! removable pods), sandboxes (keep the newest inactive one unless the pod is removable), pod log
//! directories, and the eager per-pod deletion after ContainerDied.
//!
//! The decisions are pure planning functions over what the runtime lists (tested with the
//! kubelet's GC tables); the manager then carries them out.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::actions::KillReason;
use super::labels::container_info_from_labels;
use super::manager::RuntimeManager;
use super::seam::cri;
use super::types::{ContainerState, PodStatus};
use super::Result;

/// Container GC policy (`kubecontainer.GCPolicy`); the kubelet's defaults are min age 0, one dead
/// container per (pod, container), no global limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcPolicy {
    pub min_age: Duration,
    /// Negative = no limit.
    pub max_per_pod_container: i64,
    /// Negative = no limit.
    pub max_containers: i64,
}

impl Default for GcPolicy {
    fn default() -> Self {
        Self {
            min_age: Duration::ZERO,
            max_per_pod_container: 1,
            max_containers: -1,
        }
    }
}

/// A container GC will remove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcVictim {
    pub id: String,
    pub name: String,
    /// Unknown-state containers might still run: they are killed first.
    pub unknown: bool,
}

#[derive(Clone, Debug)]
struct GcInfo {
    id: String,
    name: String,
    created_at: i64,
    unknown: bool,
}

impl GcInfo {
    fn victim(&self) -> GcVictim {
        GcVictim {
            id: self.id.clone(),
            name: self.name.clone(),
            unknown: self.unknown,
        }
    }
}

/// Removes the oldest `n` of a unit (sorted newest first), returning what stays.
fn remove_oldest_n(mut unit: Vec<GcInfo>, n: usize, out: &mut Vec<GcVictim>) -> Vec<GcInfo> {
    unit.sort_by_key(|x| std::cmp::Reverse(x.created_at));
    let keep = unit.len().saturating_sub(n);
    for c in unit[keep..].iter().rev() {
        out.push(c.victim());
    }
    unit.truncate(keep);
    unit
}

/// Plans container GC (`evictContainers`). `now_ns`/`created_at` are wall-clock nanoseconds.
pub fn plan_container_gc(
    containers: &[cri::Container],
    policy: GcPolicy,
    removable: &dyn Fn(&str) -> bool,
    all_sources_ready: bool,
    now_ns: i64,
) -> Vec<GcVictim> {
    let newest_gc_time = now_ns.saturating_sub(i64::try_from(policy.min_age.as_nanos()).unwrap_or(i64::MAX));
    let mut units: BTreeMap<(String, String), Vec<GcInfo>> = BTreeMap::new();
    for c in containers {
        if c.state == cri::ContainerState::ContainerRunning as i32 || c.created_at > newest_gc_time {
            continue;
        }
        let l = container_info_from_labels(&c.labels);
        if l.pod_uid.is_empty() {
            // Not a kubelet container.
            continue;
        }
        let name = c.metadata.as_ref().map(|m| m.name.clone()).unwrap_or(l.container_name);
        units.entry((l.pod_uid, name.clone())).or_default().push(GcInfo {
            id: c.id.clone(),
            name,
            created_at: c.created_at,
            unknown: c.state == cri::ContainerState::ContainerUnknown as i32,
        });
    }
    let mut out = Vec::new();
    if all_sources_ready {
        let gone: Vec<_> = units.keys().filter(|(uid, _)| removable(uid)).cloned().collect();
        for k in gone {
            if let Some(unit) = units.remove(&k) {
                let n = unit.len();
                remove_oldest_n(unit, n, &mut out);
            }
        }
    }
    let enforce_per_unit =
        |units: &mut BTreeMap<(String, String), Vec<GcInfo>>, max: usize, out: &mut Vec<GcVictim>| {
            for unit in units.values_mut() {
                let n = unit.len().saturating_sub(max);
                if n > 0 {
                    *unit = remove_oldest_n(std::mem::take(unit), n, out);
                }
            }
        };
    if policy.max_per_pod_container >= 0 {
        enforce_per_unit(&mut units, policy.max_per_pod_container as usize, &mut out);
    }
    let total = |units: &BTreeMap<(String, String), Vec<GcInfo>>| units.values().map(Vec::len).sum::<usize>();
    if policy.max_containers >= 0 && total(&units) > policy.max_containers as usize {
        let max = policy.max_containers as usize;
        let per_unit = (max / units.len().max(1)).max(1);
        enforce_per_unit(&mut units, per_unit, &mut out);
        let n = total(&units);
        if n > max {
            let flat: Vec<GcInfo> = units.into_values().flatten().collect();
            remove_oldest_n(flat, n - max, &mut out);
        }
    }
    out
}

/// Plans sandbox GC (`evictSandboxes`): sandbox IDs to stop and remove, oldest first per pod.
pub fn plan_sandbox_gc(
    sandboxes: &[cri::PodSandbox],
    containers: &[cri::Container],
    removable: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let with_containers: HashSet<&str> = containers.iter().map(|c| c.pod_sandbox_id.as_str()).collect();
    let mut by_pod: BTreeMap<String, Vec<(&cri::PodSandbox, bool)>> = BTreeMap::new();
    for sb in sandboxes {
        let Some(md) = sb.metadata.as_ref() else { continue };
        let active = sb.state == cri::PodSandboxState::SandboxReady as i32 || with_containers.contains(sb.id.as_str());
        by_pod.entry(md.uid.clone()).or_default().push((sb, active));
    }
    let mut out = Vec::new();
    for (uid, mut list) in by_pod {
        list.sort_by_key(|x| std::cmp::Reverse(x.0.created_at));
        // A removable pod loses every inactive sandbox; others keep their newest one.
        let keep = if removable(&uid) { 0 } else { 1 };
        for (sb, active) in list.iter().skip(keep).rev() {
            if !active {
                out.push(sb.id.clone());
            }
        }
    }
    out
}

/// The pod UID of a pod log directory name (`<ns>_<name>_<uid>`: the text after the last `_`).
pub fn pod_uid_from_log_dir(name: &str) -> &str {
    name.rsplit('_').next().unwrap_or(name)
}

/// Eager deletion plan: per container name, the exited instances beyond the newest `keep`.
pub fn exited_duplicates(status: &PodStatus, keep: usize) -> Vec<String> {
    let mut by_name: BTreeMap<&str, Vec<&super::types::ContainerStatus>> = BTreeMap::new();
    for c in status
        .container_statuses
        .iter()
        .filter(|c| c.state == ContainerState::Exited)
    {
        by_name.entry(c.name.as_str()).or_default().push(c);
    }
    let mut out = Vec::new();
    for (_, mut list) in by_name {
        list.sort_by_key(|x| std::cmp::Reverse(x.created_at));
        out.extend(list.iter().skip(keep).map(|c| c.id.clone()));
    }
    out
}

impl RuntimeManager {
    async fn list_all(&self) -> Result<(Vec<cri::PodSandbox>, Vec<cri::Container>)> {
        let sandboxes = self
            .runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await?
            .items;
        let containers = self
            .runtime
            .list_containers(cri::ListContainersRequest { filter: None })
            .await?
            .containers;
        Ok((sandboxes, containers))
    }

    pub(super) async fn garbage_collect_impl(
        &self,
        removable: &(dyn Fn(&str) -> bool + Send + Sync),
        all_sources_ready: bool,
    ) -> Result<()> {
        let (_, containers) = self.list_all().await?;
        let now_ns = i64::try_from(self.cfg.clock.now().as_nanosecond()).unwrap_or(i64::MAX);
        for v in plan_container_gc(&containers, self.gc_policy, removable, all_sources_ready, now_ns) {
            if v.unknown {
                let msg = "Unknown container state, kill it before removing";
                if let Err((_, e)) = self
                    .kill_container(None, &v.id, &v.name, msg, KillReason::Unknown, None)
                    .await
                {
                    tracing::warn!(id = %v.id, error = %e, "failed to stop unknown-state container before removal");
                    continue;
                }
            }
            if let Err(e) = self.remove_container(&v.id).await {
                tracing::warn!(id = %v.id, name = %v.name, error = %e, "container GC: removal failed");
            }
        }
        // Listed again: the container GC above changes which sandboxes still have containers.
        let (sandboxes, containers) = self.list_all().await?;
        for id in plan_sandbox_gc(&sandboxes, &containers, removable) {
            self.remove_sandbox(&id).await;
        }
        if all_sources_ready {
            self.gc_pod_log_dirs(removable);
        }
        self.gc_dangling_log_symlinks().await;
        Ok(())
    }

    /// Removes legacy `/var/log/containers/*.log` symlinks whose target is gone, unless their
    /// container still runs.
    async fn gc_dangling_log_symlinks(&self) {
        let Ok(entries) = std::fs::read_dir(self.legacy_log_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".log") else {
                continue;
            };
            // `metadata` follows the link: NotFound means the target is gone.
            if !matches!(std::fs::metadata(&path), Err(err) if err.kind() == std::io::ErrorKind::NotFound) {
                continue;
            }
            if let Some((_, id)) = stem.rsplit_once('-') {
                let running = self
                    .runtime
                    .container_status(cri::ContainerStatusRequest {
                        container_id: id.to_string(),
                        verbose: false,
                    })
                    .await
                    .ok()
                    .and_then(|r| r.status)
                    .is_some_and(|s| s.state == cri::ContainerState::ContainerRunning as i32);
                if running {
                    continue;
                }
            }
            if let Err(err) = std::fs::remove_file(&path) {
                tracing::warn!(link = %path.display(), error = %err, "failed to remove dangling log symlink");
            }
        }
    }

    async fn remove_sandbox(&self, id: &str) {
        let stop = self
            .runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await;
        if let Some(e) = stop.as_ref().err().filter(|e| !e.is_not_found()) {
            tracing::warn!(sandbox = %id, error = %e, "sandbox GC: stop failed");
            return;
        }
        if let Err(e) = self
            .runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
        {
            if !e.is_not_found() {
                tracing::warn!(sandbox = %id, error = %e, "sandbox GC: removal failed");
            }
        }
    }

    fn gc_pod_log_dirs(&self, removable: &(dyn Fn(&str) -> bool + Send + Sync)) {
        let entries = match std::fs::read_dir(&self.cfg.pod_logs_dir) {
            Ok(e) => e,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %self.cfg.pod_logs_dir.display(), error = %e, "pod log GC: cannot list");
                }
                return;
            }
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if !removable(pod_uid_from_log_dir(name)) {
                continue;
            }
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::warn!(dir = %e.path().display(), error = %err, "pod log GC: removal failed");
            }
        }
    }

    pub(super) async fn remove_exited_duplicates_impl(&self, status: &PodStatus, keep: usize) {
        for id in exited_duplicates(status, keep) {
            if let Err(e) = self.remove_container(&id).await {
                tracing::warn!(pod = %status.name, id = %id, error = %e, "failed to remove dead container");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genericruntime::labels::{CONTAINER_NAME_LABEL, POD_UID_LABEL};

    const RUNNING: i32 = cri::ContainerState::ContainerRunning as i32;
    const EXITED: i32 = cri::ContainerState::ContainerExited as i32;
    const UNKNOWN: i32 = cri::ContainerState::ContainerUnknown as i32;

    fn ctr(id: &str, uid: &str, name: &str, state: i32, created: i64, sandbox: &str) -> cri::Container {
        cri::Container {
            id: id.into(),
            pod_sandbox_id: sandbox.into(),
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            state,
            created_at: created,
            labels: [
                (POD_UID_LABEL.to_string(), uid.to_string()),
                (CONTAINER_NAME_LABEL.to_string(), name.to_string()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        }
    }

    fn ids(v: &[GcVictim]) -> Vec<&str> {
        let mut x: Vec<&str> = v.iter().map(|v| v.id.as_str()).collect();
        x.sort();
        x
    }

    // Modeled on kuberuntime_gc_test.go TestContainerGC.
    #[test]
    fn container_gc_table() {
        let keep_all = |_: &str| false;
        let policy = |per: i64, max: i64| GcPolicy {
            min_age: Duration::ZERO,
            max_per_pod_container: per,
            max_containers: max,
        };
        let now = 1_000_000;
        // all containers should be removed when max container limit is 0
        let cs = vec![ctr("a", "p", "foo", EXITED, 0, "s")];
        assert_eq!(
            ids(&plan_container_gc(&cs, policy(1, 0), &keep_all, true, now)),
            vec!["a"]
        );
        // max containers should be complied when no max per pod container limit is set
        let cs: Vec<_> = (0..5)
            .map(|i| ctr(&format!("c{i}"), "p", "foo", EXITED, i, "s"))
            .collect();
        assert_eq!(
            ids(&plan_container_gc(&cs, policy(-1, 4), &keep_all, true, now)),
            vec!["c0"]
        );
        // no containers should be removed if both limits are unset
        assert!(plan_container_gc(&cs, policy(-1, -1), &keep_all, true, now).is_empty());
        // recently started containers should not be removed
        let young = GcPolicy {
            min_age: Duration::from_nanos(500),
            ..policy(1, -1)
        };
        let cs2 = vec![
            ctr("old1", "p", "foo", EXITED, 1, "s"),
            ctr("old2", "p", "foo", EXITED, 2, "s"),
            ctr("new", "p", "foo", EXITED, now - 10, "s"),
        ];
        assert_eq!(ids(&plan_container_gc(&cs2, young, &keep_all, true, now)), vec!["old1"]);
        // oldest containers should be removed when per pod container limit exceeded
        assert_eq!(
            ids(&plan_container_gc(&cs, policy(2, -1), &keep_all, true, now)),
            vec!["c0", "c1", "c2"]
        );
        // running containers should not be removed
        let cs3 = vec![
            ctr("r", "p", "foo", RUNNING, 0, "s"),
            ctr("e1", "p", "foo", EXITED, 1, "s"),
            ctr("e2", "p", "foo", EXITED, 2, "s"),
        ];
        assert_eq!(
            ids(&plan_container_gc(&cs3, policy(1, -1), &keep_all, true, now)),
            vec!["e1"]
        );
        // max count applies per (UID, container) pair
        let cs4 = vec![
            ctr("a1", "p1", "foo", EXITED, 1, "s"),
            ctr("a2", "p1", "foo", EXITED, 2, "s"),
            ctr("b1", "p1", "bar", EXITED, 1, "s"),
            ctr("c1", "p2", "foo", EXITED, 1, "s"),
            ctr("c2", "p2", "foo", EXITED, 3, "s"),
        ];
        assert_eq!(
            ids(&plan_container_gc(&cs4, policy(1, -1), &keep_all, true, now)),
            vec!["a1", "c1"]
        );
        // max limit should apply and try to keep from every pod
        let cs5: Vec<_> = (0..10)
            .map(|i| ctr(&format!("x{i}"), &format!("p{}", i / 2), "foo", EXITED, i, "s"))
            .collect();
        let got = plan_container_gc(&cs5, policy(-1, 5), &keep_all, true, now);
        assert_eq!(ids(&got), vec!["x0", "x2", "x4", "x6", "x8"]);
        // containers for removable pods are all removed, only when sources are ready
        let gone = |uid: &str| uid == "p1";
        assert_eq!(
            ids(&plan_container_gc(&cs4, policy(1, -1), &gone, true, now)),
            vec!["a1", "a2", "b1", "c1"]
        );
        assert_eq!(
            ids(&plan_container_gc(&cs4, policy(1, -1), &gone, false, now)),
            vec!["a1", "c1"]
        );
        // unknown-state containers are flagged for a kill first; non-kubelet containers ignored
        let mut foreign = ctr("f", "", "x", EXITED, 0, "s");
        foreign.labels.clear();
        let cs6 = vec![
            ctr("u", "p", "foo", UNKNOWN, 0, "s"),
            ctr("e", "p", "foo", EXITED, 1, "s"),
            foreign,
        ];
        let got = plan_container_gc(&cs6, policy(1, -1), &keep_all, true, now);
        assert_eq!(
            got,
            vec![GcVictim {
                id: "u".into(),
                name: "foo".into(),
                unknown: true
            }]
        );
    }

    fn sb(id: &str, uid: &str, ready: bool, created: i64) -> cri::PodSandbox {
        cri::PodSandbox {
            id: id.into(),
            metadata: Some(cri::PodSandboxMetadata {
                name: "p".into(),
                uid: uid.into(),
                namespace: "ns".into(),
                attempt: 0,
            }),
            state: if ready {
                cri::PodSandboxState::SandboxReady as i32
            } else {
                cri::PodSandboxState::SandboxNotready as i32
            },
            created_at: created,
            ..Default::default()
        }
    }

    // Modeled on kuberuntime_gc_test.go TestSandboxGC.
    #[test]
    fn sandbox_gc_table() {
        let keep = |_: &str| false;
        let gone = |_: &str| true;
        // notready sandboxes without containers for deleted pods should be garbage collected
        assert_eq!(plan_sandbox_gc(&[sb("s1", "p", false, 0)], &[], &gone), vec!["s1"]);
        // ready sandboxes without containers for deleted pods should not be garbage collected
        assert!(plan_sandbox_gc(&[sb("s1", "p", true, 0)], &[], &gone).is_empty());
        // sandboxes for existing pods should not be garbage collected
        assert!(plan_sandbox_gc(&[sb("s1", "p1", true, 0), sb("s2", "p2", false, 0)], &[], &keep).is_empty());
        // older exited sandboxes without containers for existing pods should be garbage collected
        let s = [sb("s1", "p", true, 2), sb("s2", "p", false, 1), sb("s3", "p", false, 0)];
        assert_eq!(plan_sandbox_gc(&s, &[], &keep), vec!["s3", "s2"]);
        // older exited sandboxes with containers for existing pods should not be garbage collected
        let c = [ctr("c", "p", "foo", EXITED, 0, "s2")];
        assert_eq!(plan_sandbox_gc(&s, &c, &keep), vec!["s3"]);
        // non-running sandboxes with containers of deleted pods are kept (containers go first)
        assert!(plan_sandbox_gc(
            &[sb("s1", "p", false, 0)],
            &[ctr("c", "p", "foo", EXITED, 0, "s1")],
            &gone
        )
        .is_empty());
        // the newest inactive sandbox of a live pod is kept
        assert!(plan_sandbox_gc(&[sb("s1", "p", false, 0)], &[], &keep).is_empty());
    }

    #[test]
    fn log_dir_uid_and_duplicates() {
        assert_eq!(pod_uid_from_log_dir("ns_my_pod_1234-abcd"), "1234-abcd");
        let mut st = PodStatus::default();
        let mk = |id: &str, name: &str, state, secs| {
            let mut c = crate::genericruntime::actions::tests::cs(id, name, state, 0);
            c.created_at = jiff::Timestamp::from_second(secs).unwrap();
            c
        };
        st.container_statuses = vec![
            mk("a3", "a", ContainerState::Exited, 3),
            mk("a2", "a", ContainerState::Exited, 2),
            mk("a1", "a", ContainerState::Exited, 1),
            mk("ar", "a", ContainerState::Running, 4),
            mk("b1", "b", ContainerState::Exited, 1),
        ];
        assert_eq!(exited_duplicates(&st, 1), vec!["a2", "a1"]);
        assert_eq!(exited_duplicates(&st, 0), vec!["a3", "a2", "a1", "b1"]);
    }
}
