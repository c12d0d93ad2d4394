//! The lifecycle-hook seam (§2.9): postStart runs after StartContainer, preStop before
//! StopContainer. The handlers themselves (exec through the runtime, HTTP GET, sleep) arrive with a
//! later task as a [`HookRunner`] given to the manager with `RuntimeManager::with_hook_runner`;
//! without one, hooks are skipped (and logged), which is what a pod without hooks sees anyway.

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};

/// Runs one lifecycle handler against a running container.
#[async_trait::async_trait]
pub trait HookRunner: Send + Sync {
    /// Runs `handler` for `container` (runtime ID `container_id`); `Err` carries the message of
    /// the `FailedPostStartHook` / `FailedPreStopHook` event.
    async fn run(
        &self,
        pod: &Pod,
        container: &Container,
        container_id: &str,
        handler: &LifecycleHandler,
    ) -> Result<(), String>;
}
