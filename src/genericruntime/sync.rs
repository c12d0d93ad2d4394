//! `SyncPod` (§1.7): compute the actions, then carry them out in the kubelet's order — kill pod or
//! containers, prune init containers, create the sandbox, generate its config, then ephemeral
//! containers, the next init container, and the regular containers, each behind the crash-loop
//! back-off check (§1.11).
//!
//! Cancellation: the pod worker may drop a sync at any await point. Every runtime call is a
//! single await, so a drop leaves the runtime in a state the next sync's `computePodActions`
//! understands (at worst a created-but-not-started container, which is restarted).

use k8s_openapi::api::core::v1::{Container, Pod, Secret};

use super::actions::{compute_pod_actions, is_restartable_init_container};
use super::backoff::{crash_loop_key, crash_loop_message};
use super::hash::hash_container;
use super::kill::ephemeral_as_container;
use super::manager::RuntimeManager;
use super::seam::cri;
use super::types::{
    ContainerState, EventType, PodStatus, PodSyncResult, ProbeFailures, SyncAction, SyncErrorKind, SyncResult,
};
use super::util::{container_field_path, containers, format_pod, host_network, init_containers};

impl RuntimeManager {
    /// `doBackOff`: is the container in crash-loop back-off? Uses the newest *exited* instance of
    /// the pre-sync snapshot; when not in back-off, records the restart (`Next`).
    fn do_backoff(&self, pod: &Pod, container: &Container, status: &PodStatus) -> Option<String> {
        let exited = status
            .container_statuses
            .iter()
            .find(|c| c.name == container.name && c.state == ContainerState::Exited)?;
        let ts = exited.finished_at?;
        let key = crash_loop_key(pod, &container.name, hash_container(container));
        if self.crash_backoff.is_in_backoff_since(&key, ts) {
            self.events.pod_event(
                pod,
                Some(container_field_path(pod, &container.name)),
                EventType::Warning,
                "BackOff",
                "Back-off restarting failed container".into(),
            );
            return Some(crash_loop_message(self.crash_backoff.get(&key), &container.name, pod));
        }
        self.crash_backoff.next(&key, ts);
        None
    }

    /// How long (virtual time) until the earliest container of `pod` now in crash-loop back-off may
    /// be restarted; None when none is waiting. Lets the pod worker requeue right at expiry
    /// instead of the kubelet's 10–15 s error cadence (§1.11).
    pub fn crash_loop_remaining(&self, pod: &Pod, status: &PodStatus) -> Option<std::time::Duration> {
        let now = self.cfg.clock.now();
        init_containers(pod)
            .iter()
            .chain(containers(pod))
            .filter_map(|c| {
                // Only containers whose newest instance is dead are waiting for a restart.
                let exited = status
                    .find_container_status(&c.name)
                    .filter(|s| s.state == ContainerState::Exited)?;
                let key = crash_loop_key(pod, &c.name, hash_container(c));
                self.crash_backoff.remaining_since_at(&key, exited.finished_at?, now)
            })
            .min()
    }

    /// `pruneInitContainersBeforeStart`: keep the newest exited/unknown instance per init name.
    async fn prune_init_containers_before_start(&self, pod: &Pod, status: &PodStatus) {
        for c in init_containers(pod) {
            let old = status
                .container_statuses_named(&c.name)
                .filter(|s| matches!(s.state, ContainerState::Exited | ContainerState::Unknown))
                .skip(1);
            for s in old {
                if let Err(e) = self.remove_container(&s.id).await {
                    tracing::warn!(pod = %format_pod(pod), container = %c.name, id = %s.id, error = %e, "failed to prune init container");
                }
            }
        }
    }

    /// `purgeInitContainers`: remove every instance of every init container (new sandbox).
    async fn purge_init_containers(&self, pod: &Pod, status: &PodStatus) {
        for c in init_containers(pod) {
            for s in status.container_statuses_named(&c.name) {
                if let Err(e) = self.remove_container(&s.id).await {
                    tracing::warn!(pod = %format_pod(pod), container = %c.name, id = %s.id, error = %e, "failed to purge init container");
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_one(
        &self,
        result: &mut PodSyncResult,
        container: &Container,
        sandbox_id: &str,
        sandbox_config: &cri::PodSandboxConfig,
        pod: &Pod,
        status: &PodStatus,
        pull_secrets: &[Secret],
        pod_ips: &[String],
    ) -> bool {
        let error = if let Some(msg) = self.do_backoff(pod, container, status) {
            Some((SyncErrorKind::CrashLoopBackOff, msg))
        } else {
            self.start_container(
                sandbox_id,
                sandbox_config,
                container,
                pod,
                status,
                pull_secrets,
                pod_ips,
            )
            .await
            .err()
        };
        if let Some((kind, msg)) = &error {
            if !kind.is_backoff() {
                tracing::info!(pod = %format_pod(pod), container = %container.name, reason = kind.as_str(), message = %msg, "container start failed");
            }
        }
        let ok = error.is_none();
        result.push(SyncResult {
            action: SyncAction::StartContainer,
            target: container.name.clone(),
            error,
        });
        ok
    }

    pub(super) async fn sync_pod_impl(
        &self,
        pod: &Pod,
        status: &PodStatus,
        pull_secrets: &[Secret],
        probes: &ProbeFailures,
    ) -> PodSyncResult {
        let mut result = PodSyncResult::default();
        let actions = compute_pod_actions(pod, status, probes);
        tracing::debug!(pod = %format_pod(pod), ?actions.kill_pod, ?actions.create_sandbox, start = ?actions.containers_to_start, init = ?actions.init_containers_to_start, "computed pod actions");

        // 1. A sandbox being replaced.
        if actions.create_sandbox && !actions.sandbox_id.is_empty() {
            self.events.pod_event(
                pod,
                None,
                EventType::Normal,
                "SandboxChanged",
                "Pod sandbox changed, it will be killed and re-created.".into(),
            );
        }

        // 2. Kill the pod, or the containers that must go.
        if actions.kill_pod {
            let kill = self.kill_pod_with_sync_result(Some(pod), status, None).await;
            let failed = kill.first_error().is_some();
            result.results.extend(kill.results);
            if failed {
                return result;
            }
            if actions.create_sandbox {
                self.purge_init_containers(pod, status).await;
            }
        } else {
            for (id, info) in &actions.containers_to_kill {
                let r = self
                    .kill_container(Some(pod), id, &info.name, &info.message, info.reason, None)
                    .await;
                let failed = r.is_err();
                result.push(SyncResult {
                    action: SyncAction::KillContainer,
                    target: info.name.clone(),
                    error: r.err(),
                });
                if failed {
                    return result;
                }
            }
        }

        // 3. Keep only the newest instance of each init container.
        self.prune_init_containers_before_start(pod, status).await;

        // 4. Create the sandbox.
        let mut pod_ips = status.ips.clone();
        let mut sandbox_id = actions.sandbox_id.clone();
        if actions.create_sandbox {
            match self.create_pod_sandbox(pod, actions.attempt).await {
                Ok((id, _)) => {
                    sandbox_id = id;
                    result.push(SyncResult {
                        action: SyncAction::CreatePodSandbox,
                        target: format_pod(pod),
                        error: None,
                    });
                }
                Err(e) => {
                    // A pod being deleted does not need a sandbox: not an error.
                    if pod.metadata.deletion_timestamp.is_some() {
                        return result;
                    }
                    let msg = format!("Failed to create pod sandbox: {e}");
                    self.events
                        .pod_event(pod, None, EventType::Warning, "FailedCreatePodSandBox", msg.clone());
                    result.push(SyncResult {
                        action: SyncAction::CreatePodSandbox,
                        target: format_pod(pod),
                        error: Some((SyncErrorKind::CreatePodSandboxError, msg)),
                    });
                    return result;
                }
            }
            match self
                .runtime
                .pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: sandbox_id.clone(),
                    verbose: false,
                })
                .await
            {
                Ok(resp) => {
                    if !host_network(pod) {
                        if let Some(s) = resp.status.as_ref() {
                            pod_ips = Self::sandbox_ips(s);
                        }
                    }
                }
                Err(e) => {
                    let msg = format!("Unable to get pod sandbox status: {e}");
                    self.events
                        .pod_event(pod, None, EventType::Warning, "FailedPodSandBoxStatus", msg.clone());
                    result.push(SyncResult {
                        action: SyncAction::CreatePodSandbox,
                        target: format_pod(pod),
                        error: Some((SyncErrorKind::CreatePodSandboxError, msg)),
                    });
                    return result;
                }
            }
        }

        // 5. The sandbox config CreateContainer needs (always recorded, see §1.11's quirk).
        let sandbox_config = match self.generate_sandbox_config(pod, actions.attempt) {
            Ok(c) => {
                result.push(SyncResult {
                    action: SyncAction::ConfigPodSandbox,
                    target: sandbox_id.clone(),
                    error: None,
                });
                c
            }
            Err(e) => {
                result.push(SyncResult {
                    action: SyncAction::ConfigPodSandbox,
                    target: sandbox_id.clone(),
                    error: Some((SyncErrorKind::ConfigPodSandboxError, e.to_string())),
                });
                return result;
            }
        };

        // 6/7. Ephemeral containers (errors ignored), the next init container, the containers.
        for &i in &actions.ephemeral_containers_to_start {
            let name = pod
                .spec
                .as_ref()
                .and_then(|s| s.ephemeral_containers.as_ref())
                .and_then(|e| e.get(i))
                .map(|e| e.name.clone())
                .unwrap_or_default();
            if let Some(c) = ephemeral_as_container(pod, &name) {
                self.start_one(
                    &mut result,
                    &c,
                    &sandbox_id,
                    &sandbox_config,
                    pod,
                    status,
                    pull_secrets,
                    &pod_ips,
                )
                .await;
            }
        }
        for &i in &actions.init_containers_to_start {
            if let Some(c) = init_containers(pod).get(i) {
                if !self
                    .start_one(
                        &mut result,
                        c,
                        &sandbox_id,
                        &sandbox_config,
                        pod,
                        status,
                        pull_secrets,
                        &pod_ips,
                    )
                    .await
                {
                    // A sidecar that failed to start does not block the ones after it.
                    if is_restartable_init_container(c) {
                        continue;
                    }
                    return result;
                }
            }
        }
        for &i in &actions.containers_to_start {
            if let Some(c) = containers(pod).get(i) {
                self.start_one(
                    &mut result,
                    c,
                    &sandbox_id,
                    &sandbox_config,
                    pod,
                    status,
                    pull_secrets,
                    &pod_ips,
                )
                .await;
            }
        }
        result
    }

    /// Kills every running container and stops every sandbox of the pod (`KillPod`).
    pub(super) async fn kill_pod_impl(
        &self,
        pod: Option<&Pod>,
        status: &PodStatus,
        grace_override: Option<i64>,
    ) -> PodSyncResult {
        self.kill_pod_with_sync_result(pod, status, grace_override).await
    }
}
