//! Killing (§1.10): `killContainer` (grace period, Killing event, preStop seam, StopContainer),
//! `killContainersWithSyncResult` (running containers in parallel) and `killPodWithSyncResult`
//! (then StopPodSandbox for every sandbox), plus container removal used by pruning and GC.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::actions::{has_restartable_init_container, is_restartable_init_container, KillReason};
use super::labels::restore_specs_from_labels;
use super::manager::RuntimeManager;
use super::seam::cri;
use super::types::{ContainerState, EventType, PodStatus, PodSyncResult, SyncAction, SyncErrorKind, SyncResult};
use super::util::{container_field_path, containers, find_container, format_pod, init_containers};

/// The kubelet's floor on the stop timeout (non-override path).
pub const MINIMUM_GRACE_PERIOD_SECONDS: i64 = 2;

/// A kill step that failed: reason and message.
pub type KillError = (SyncErrorKind, String);

/// Grace period of a kill before preStop (§1.10 step 2).
pub fn kill_grace_period(pod: &Pod, container: &Container, reason: KillReason) -> i64 {
    if let Some(d) = pod.metadata.deletion_grace_period_seconds {
        return d;
    }
    let Some(t) = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds) else {
        return MINIMUM_GRACE_PERIOD_SECONDS;
    };
    let probe = match reason {
        KillReason::StartupProbe => container.startup_probe.as_ref(),
        KillReason::LivenessProbe => container.liveness_probe.as_ref(),
        _ => None,
    };
    probe.and_then(|p| p.termination_grace_period_seconds).unwrap_or(t)
}

/// The kubelet's `terminationOrdering`: main containers stop right away; each sidecar waits for
/// every main container and for the sidecar after it (so sidecars stop in reverse order).
pub struct TerminationOrdering {
    terminated: HashMap<String, watch::Sender<bool>>,
    prereqs: HashMap<String, Vec<String>>,
}

impl TerminationOrdering {
    /// Orders the kill of `running` (container names) for `pod`.
    pub fn new(pod: &Pod, running: &[&str]) -> Self {
        let mut terminated = HashMap::new();
        let mut prereqs: HashMap<String, Vec<String>> = HashMap::new();
        // Containers not running are already done: nothing waits for them.
        let mut channel = |name: &str| {
            let (tx, _) = watch::channel(!running.contains(&name));
            terminated.insert(name.to_string(), tx);
        };
        let mains: Vec<String> = containers(pod).iter().map(|c| c.name.clone()).collect();
        for m in &mains {
            channel(m);
        }
        let mut later_sidecar: Option<String> = None;
        for ic in init_containers(pod).iter().rev() {
            channel(&ic.name);
            if is_restartable_init_container(ic) {
                let mut p = mains.clone();
                p.extend(later_sidecar.take());
                prereqs.insert(ic.name.clone(), p);
                later_sidecar = Some(ic.name.clone());
            }
        }
        Self { terminated, prereqs }
    }

    /// Waits (at most `limit`) until every container `name` must outlive has terminated.
    pub async fn wait_for_turn(&self, name: &str, limit: Duration) {
        let Some(prereqs) = self.prereqs.get(name) else { return };
        let waits = prereqs.iter().filter_map(|p| self.terminated.get(p)).map(|tx| {
            let mut rx = tx.subscribe();
            async move {
                // The sender lives as long as `self`; an error only means it is gone.
                let _ = rx.wait_for(|done| *done).await;
            }
        });
        if tokio::time::timeout(limit, join_all(waits)).await.is_err() {
            tracing::debug!(container = name, "grace period ran out waiting for termination order");
        }
    }

    /// Records that `name` has terminated.
    pub fn container_terminated(&self, name: &str) {
        if let Some(tx) = self.terminated.get(name) {
            tx.send_replace(true);
        }
    }
}

impl RuntimeManager {
    /// `restoreSpecsFromContainerLabels`: the pod/container as the container's labels remember.
    async fn restore_specs(&self, container_id: &str) -> Result<(Pod, Container), KillError> {
        let status = self
            .runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: container_id.to_string(),
                verbose: false,
            })
            .await
            .map_err(|e| (SyncErrorKind::KillContainerError, e.to_string()))?
            .status
            .ok_or_else(|| {
                (
                    SyncErrorKind::KillContainerError,
                    format!("container {container_id} has no status"),
                )
            })?;
        Ok(restore_specs_from_labels(&status.labels, &status.annotations))
    }

    /// Runs the preStop hook through the hook seam, waiting at most `grace` (virtual) seconds;
    /// returns the whole seconds it took.
    async fn execute_pre_stop_hook(&self, pod: &Pod, container: &Container, container_id: &str, grace: i64) -> i64 {
        let (Some(runner), Some(handler)) = (
            self.hooks.as_ref(),
            container.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()),
        ) else {
            return 0;
        };
        let start = self.cfg.clock.instant();
        let limit = self
            .cfg
            .clock
            .to_real(Duration::from_secs(u64::try_from(grace).unwrap_or(0)));
        match tokio::time::timeout(limit, runner.run(pod, container, container_id, handler)).await {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => self.events.pod_event(
                pod,
                Some(container_field_path(pod, &container.name)),
                EventType::Warning,
                "FailedPreStopHook",
                msg,
            ),
            Err(_) => {
                tracing::info!(container = %container.name, grace, "preStop hook did not finish within the grace period")
            }
        }
        self.cfg.clock.to_virtual(start.elapsed()).as_secs() as i64
    }

    /// `killContainer`. `pod` None = a runtime-only pod: specs are restored from labels.
    pub async fn kill_container(
        &self,
        pod: Option<&Pod>,
        container_id: &str,
        name: &str,
        message: &str,
        reason: KillReason,
        grace_override: Option<i64>,
    ) -> Result<(), KillError> {
        self.kill_container_ordered(pod, container_id, name, message, reason, grace_override, None)
            .await
    }

    /// `killContainer` with an optional termination ordering (pods with sidecars).
    #[allow(clippy::too_many_arguments)]
    async fn kill_container_ordered(
        &self,
        pod: Option<&Pod>,
        container_id: &str,
        name: &str,
        message: &str,
        reason: KillReason,
        grace_override: Option<i64>,
        ordering: Option<&TerminationOrdering>,
    ) -> Result<(), KillError> {
        let start = self.cfg.clock.instant();
        let result = self
            .kill_container_inner(
                pod,
                container_id,
                name,
                message,
                reason,
                grace_override,
                ordering,
                start,
            )
            .await;
        // Marked even when the stop failed (the kubelet marks only on success) so a runtime
        // error on one container does not hold the sidecars for their whole grace period.
        if let Some(o) = ordering {
            o.container_terminated(name);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn kill_container_inner(
        &self,
        pod: Option<&Pod>,
        container_id: &str,
        name: &str,
        message: &str,
        reason: KillReason,
        grace_override: Option<i64>,
        ordering: Option<&TerminationOrdering>,
        start: tokio::time::Instant,
    ) -> Result<(), KillError> {
        let (pod, spec) = match pod {
            Some(p) => match find_container(p, name).cloned().or_else(|| ephemeral_as_container(p, name)) {
                Some(c) => (p.clone(), c),
                None => {
                    return Err((
                        SyncErrorKind::KillContainerError,
                        format!(
                            "failed to get containerSpec {name:?} (id={container_id:?}) in pod {:?} when killing container for reason {message:?}",
                            format_pod(p)
                        ),
                    ))
                }
            },
            None => self.restore_specs(container_id).await?,
        };
        let mut grace = kill_grace_period(&pod, &spec, reason);
        let msg = if message.is_empty() {
            format!("Stopping container {}", spec.name)
        } else if container_id.is_empty() {
            message.to_string()
        } else {
            message.replace(container_id, &spec.name)
        };
        self.events.pod_event(
            &pod,
            Some(container_field_path(&pod, &spec.name)),
            EventType::Normal,
            "Killing",
            msg,
        );
        if grace > 0 && spec.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()).is_some() {
            grace -= self.execute_pre_stop_hook(&pod, &spec, container_id, grace).await;
        }
        if let Some(o) = ordering.filter(|_| grace > 0) {
            // Wait for this container's turn (sidecars after the main containers and after the
            // sidecars that follow them) within what is left of the grace period.
            let elapsed = self.cfg.clock.to_virtual(start.elapsed()).as_secs() as i64;
            let remaining = u64::try_from(grace - elapsed).unwrap_or(0);
            o.wait_for_turn(name, self.cfg.clock.to_real(Duration::from_secs(remaining)))
                .await;
            grace -= self.cfg.clock.to_virtual(start.elapsed()).as_secs() as i64;
        }
        grace = grace.max(MINIMUM_GRACE_PERIOD_SECONDS);
        // An override replaces the computed value entirely (no floor, no preStop deduction).
        if let Some(o) = grace_override {
            grace = o;
        }
        match self
            .runtime
            .stop_container(cri::StopContainerRequest {
                container_id: container_id.to_string(),
                timeout: grace,
            })
            .await
        {
            Ok(_) => Ok(()),
            // Already gone: nothing left to stop.
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err((SyncErrorKind::KillContainerError, e.to_string())),
        }
    }

    /// `killContainersWithSyncResult`: every running container of the status, in parallel.
    pub(super) async fn kill_containers_with_sync_result(
        &self,
        pod: Option<&Pod>,
        status: &PodStatus,
        grace_override: Option<i64>,
    ) -> Vec<SyncResult> {
        let running: Vec<_> = status
            .container_statuses
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .collect();
        let ordering = pod.filter(|p| has_restartable_init_container(p)).map(|p| {
            let names: Vec<&str> = running.iter().map(|c| c.name.as_str()).collect();
            TerminationOrdering::new(p, &names)
        });
        let ordering = ordering.as_ref();
        let kills = running.iter().map(|c| async move {
            let r = self
                .kill_container_ordered(pod, &c.id, &c.name, "", KillReason::None, grace_override, ordering)
                .await;
            SyncResult {
                action: SyncAction::KillContainer,
                target: c.name.clone(),
                error: r.err(),
            }
        });
        join_all(kills).await
    }

    /// `killPodWithSyncResult`: kill running containers, then stop every sandbox (not removed:
    /// GC does that).
    pub(super) async fn kill_pod_with_sync_result(
        &self,
        pod: Option<&Pod>,
        status: &PodStatus,
        grace_override: Option<i64>,
    ) -> PodSyncResult {
        let mut result = PodSyncResult::default();
        result
            .results
            .extend(self.kill_containers_with_sync_result(pod, status, grace_override).await);
        for sb in &status.sandbox_statuses {
            let r = self
                .runtime
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: sb.id.clone(),
                })
                .await;
            let error = match r {
                Ok(_) => None,
                Err(e) if e.is_not_found() => None,
                Err(e) => Some((SyncErrorKind::KillPodSandboxError, e.to_string())),
            };
            result.push(SyncResult {
                action: SyncAction::KillPodSandbox,
                target: sb.id.clone(),
                error,
            });
        }
        result
    }

    /// `removeContainer`: the container's log file, then RemoveContainer. A removal of the same
    /// container already in flight makes this one a no-op.
    pub async fn remove_container(&self, container_id: &str) -> Result<(), super::seam::RuntimeError> {
        let Some(_guard) = RemovalGuard::claim(&self.removing, container_id) else {
            return Ok(());
        };
        match self
            .runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: container_id.to_string(),
                verbose: false,
            })
            .await
        {
            Ok(r) => {
                if let Some(s) = r.status {
                    let l = super::labels::container_info_from_labels(&s.labels);
                    if !s.log_path.is_empty() {
                        let path = self.resolve_log_path(&s.log_path, &l.pod_namespace, &l.pod_name, &l.pod_uid);
                        remove_log_files(&path);
                    }
                    let link = super::container::legacy_log_symlink(
                        &self.legacy_log_dir(),
                        &l.pod_name,
                        &l.pod_namespace,
                        &l.container_name,
                        container_id,
                    );
                    if let Err(e) = std::fs::remove_file(&link) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            tracing::warn!(link = %link.display(), error = %e, "failed to remove legacy log symlink");
                        }
                    }
                }
            }
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        }
        match self
            .runtime
            .remove_container(cri::RemoveContainerRequest {
                container_id: container_id.to_string(),
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Removes a container log and its rotated siblings (`<log>.<timestamp>[.gz]`).
fn remove_log_files(path: &std::path::Path) {
    let remove = |p: &std::path::Path| {
        if let Err(e) = std::fs::remove_file(p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %p.display(), error = %e, "failed to remove container log");
            }
        }
    };
    remove(path);
    let (Some(dir), Some(base)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let prefix = format!("{base}.");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) {
                remove(&e.path());
            }
        }
    }
}

/// An ephemeral container's spec as a `Container` (same fields but `targetContainerName`).
pub(super) fn ephemeral_as_container(pod: &Pod, name: &str) -> Option<Container> {
    let e = pod
        .spec
        .as_ref()?
        .ephemeral_containers
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?;
    let mut v = serde_json::to_value(e).ok()?;
    if let Some(o) = v.as_object_mut() {
        o.remove("targetContainerName");
    }
    serde_json::from_value(v).ok()
}

/// Marks a container as being removed for as long as it lives.
struct RemovalGuard<'a> {
    set: &'a std::sync::Mutex<std::collections::HashSet<String>>,
    id: String,
}

impl<'a> RemovalGuard<'a> {
    fn claim(set: &'a std::sync::Mutex<std::collections::HashSet<String>>, id: &str) -> Option<Self> {
        let fresh = set.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string());
        fresh.then(|| Self {
            set,
            id: id.to_string(),
        })
    }
}

impl Drop for RemovalGuard<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_period_rules() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c",
                "livenessProbe": {"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 5}}]}
        }))
        .unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        assert_eq!(kill_grace_period(&pod, &c, KillReason::None), 2);
        pod.spec.as_mut().unwrap().termination_grace_period_seconds = Some(30);
        assert_eq!(kill_grace_period(&pod, &c, KillReason::None), 30);
        assert_eq!(kill_grace_period(&pod, &c, KillReason::LivenessProbe), 5);
        assert_eq!(kill_grace_period(&pod, &c, KillReason::StartupProbe), 30);
        pod.metadata.deletion_grace_period_seconds = Some(0);
        assert_eq!(kill_grace_period(&pod, &c, KillReason::LivenessProbe), 0);
    }
}

#[cfg(test)]
mod removal_tests {
    use super::RemovalGuard;

    #[test]
    fn a_second_removal_of_the_same_container_is_skipped_until_the_first_ends() {
        let set = std::sync::Mutex::new(std::collections::HashSet::new());
        let first = RemovalGuard::claim(&set, "c1");
        assert!(first.is_some());
        assert!(RemovalGuard::claim(&set, "c1").is_none(), "in flight");
        assert!(
            RemovalGuard::claim(&set, "c2").is_some(),
            "other containers are independent"
        );
        drop(first);
        assert!(
            RemovalGuard::claim(&set, "c1").is_some(),
            "released when the first ends"
        );
    }
}
