//! `EnsureImageExists` (§1.12): pull policy, image-pull back-off, events, pull secrets turned into
//! CRI `AuthConfig`s, serialized pulls.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Secret};

use super::backoff::image_pull_key;
use super::manager::RuntimeManager;
use super::seam::{cri, Code, PullProgress};
use super::types::{EventType, SyncErrorKind};
use super::util::{container_field_path, pod_uid};
use crate::clock::go_duration;

/// The kubelet's pull throttles: at most `maxParallelImagePulls` at once (when pulls are not
/// serialized), and `registryPullQPS` with `registryBurst` as a token bucket that refuses (not
/// waits) when empty, as the kubelet's `throttledImageService` does.
#[derive(Default)]
pub struct PullLimits {
    parallel: Option<Arc<tokio::sync::Semaphore>>,
    bucket: Option<std::sync::Mutex<TokenBucket>>,
}

impl PullLimits {
    /// `qps <= 0` means no rate limit; `max_parallel` None means unlimited.
    pub fn new(max_parallel: Option<usize>, qps: f64, burst: u32) -> Self {
        Self {
            parallel: max_parallel
                .filter(|n| *n > 0)
                .map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
            bucket: (qps > 0.0).then(|| std::sync::Mutex::new(TokenBucket::new(qps, burst.max(1)))),
        }
    }

    fn try_accept(&self, now: std::time::Instant) -> bool {
        match &self.bucket {
            Some(b) => b.lock().unwrap_or_else(|p| p.into_inner()).try_accept(now),
            None => true,
        }
    }
}

/// client-go's token bucket (`flowcontrol.NewTokenBucketRateLimiter`): `burst` tokens, refilled
/// at `qps` per second.
#[derive(Debug)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Option<std::time::Instant>,
}

impl TokenBucket {
    pub fn new(qps: f64, burst: u32) -> Self {
        Self {
            qps,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: None,
        }
    }

    pub fn try_accept(&mut self, now: std::time::Instant) -> bool {
        if let Some(last) = self.last {
            self.tokens = (self.tokens + now.saturating_duration_since(last).as_secs_f64() * self.qps).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// How often a running pull posts a progress event.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// `Pulling image "x": 12.3 MB of 45.6 MB (27%), 4.1 MB/s`; each figure in the largest decimal
/// unit it reaches (a slow pull reads `512 kB/s`, not `0.0 MB/s`).
fn progress_message(image: &str, done: u64, total: u64, speed: f64) -> String {
    let pct = (done.min(total) * 100).checked_div(total).unwrap_or(0);
    format!(
        "Pulling image {image:?}: {} of {} ({pct}%), {}/s",
        decimal_bytes(done as f64),
        decimal_bytes(total as f64),
        decimal_bytes(speed)
    )
}

/// Bytes in decimal units, as registries and `crictl images` print sizes: `812 B`, `4.2 kB`,
/// `12.3 MB`, `1.5 GB`.
fn decimal_bytes(b: f64) -> String {
    const UNITS: [(f64, &str); 3] = [(1e9, "GB"), (1e6, "MB"), (1e3, "kB")];
    let b = if b.is_finite() { b.max(0.0) } else { 0.0 };
    UNITS
        .iter()
        .find(|(scale, _)| b >= *scale)
        .map(|(scale, unit)| format!("{:.1} {unit}", b / scale))
        .unwrap_or_else(|| format!("{b:.0} B"))
}

/// A failed image step: the waiting reason and the message users see.
pub type ImageError = (SyncErrorKind, String);

/// Errors parsing an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format")]
    InvalidFormat,
    #[error("invalid reference format: repository name must be lowercase")]
    NotLowercase,
}

fn is_path_component(s: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    if s.is_empty() {
        return false;
    }
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_domain(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host (`docker.io` when the reference names none).
    pub domain: String,
    /// Repository path within the registry.
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// Parses `[domain/]path[:tag][@digest]` like the docker reference grammar.
pub fn parse_image_ref(image: &str) -> Result<ImageRef, ReferenceError> {
    if image.is_empty() || image.len() > 4096 {
        return Err(ReferenceError::InvalidFormat);
    }
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => {
            let (alg, hex) = d.split_once(':').ok_or(ReferenceError::InvalidFormat)?;
            if alg.is_empty() || hex.len() < 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(ReferenceError::InvalidFormat);
            }
            (r, Some(d.to_string()))
        }
        None => (image, None),
    };
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let t = &rest[last_slash + i + 1..];
            let valid = !t.is_empty()
                && t.len() <= 128
                && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
                && t.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-');
            if !valid {
                return Err(ReferenceError::InvalidFormat);
            }
            (&rest[..last_slash + i], Some(t.to_string()))
        }
        None => (rest, None),
    };
    let mut parts: Vec<&str> = name.split('/').collect();
    let domain = if parts.len() > 1
        && (parts[0].contains('.')
            || parts[0].contains(':')
            || parts[0] == "localhost"
            || parts[0].chars().any(|c| c.is_ascii_uppercase()))
    {
        let d = parts.remove(0);
        if !is_domain(d) {
            return Err(ReferenceError::InvalidFormat);
        }
        d.to_string()
    } else {
        "docker.io".to_string()
    };
    if parts.iter().any(|p| p.chars().any(|c| c.is_ascii_uppercase())) {
        return Err(ReferenceError::NotLowercase);
    }
    if !parts.iter().all(|p| is_path_component(p)) {
        return Err(ReferenceError::InvalidFormat);
    }
    Ok(ImageRef {
        domain,
        path: parts.join("/"),
        tag,
        digest,
    })
}

/// `applyDefaultImageTag`: append `:latest` when the image has neither tag nor digest.
pub fn apply_default_image_tag(image: &str) -> Result<String, ReferenceError> {
    let r = parse_image_ref(image)?;
    if r.tag.is_none() && r.digest.is_none() {
        Ok(format!("{image}:latest"))
    } else {
        Ok(image.to_string())
    }
}

/// The pull policy, defaulted by tag when the field is empty (API defaulting).
pub fn pull_policy(container: &Container) -> String {
    if let Some(p) = container.image_pull_policy.as_deref().filter(|p| !p.is_empty()) {
        return p.to_string();
    }
    let image = container.image.as_deref().unwrap_or("");
    match parse_image_ref(image) {
        Ok(r) if r.tag.as_deref() == Some("latest") || (r.tag.is_none() && r.digest.is_none()) => "Always".into(),
        Ok(_) => "IfNotPresent".into(),
        Err(_) => "IfNotPresent".into(),
    }
}

fn should_pull(policy: &str, present: bool) -> bool {
    match policy {
        "Never" => false,
        "Always" => true,
        _ => !present,
    }
}

/// Registry host aliases of Docker Hub, as the docker keyring treats them.
fn canonical_host(host: &str) -> &str {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" | "registry.hub.docker.com" => "docker.io",
        h => h,
    }
}

/// One registry credential entry (`auths.<registry>` of a docker config).
#[derive(Debug, Default, Clone, serde::Deserialize)]
struct DockerConfigEntry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
    #[serde(default, rename = "identitytoken")]
    identity_token: String,
    #[serde(default, rename = "registrytoken")]
    registry_token: String,
}

#[derive(Debug, Default, serde::Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, DockerConfigEntry>,
}

/// Splits a keyring key (`https://host[:port]/path/`, `host/path`) into host and path prefix.
fn split_registry_key(key: &str) -> (String, String) {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let (host, path) = k.split_once('/').unwrap_or((k, ""));
    // `https://index.docker.io/v1/` names Docker Hub as a whole.
    let path = if canonical_host(host) == "docker.io" && path == "v1" {
        ""
    } else {
        path
    };
    (canonical_host(host).to_string(), path.to_string())
}

/// CRI auth configs for an image from the pod's pull secrets (dockerconfigjson and dockercfg
/// secrets; entries matched by registry host and path prefix; missing or malformed secrets are
/// skipped with a log line). Empty = anonymous pull.
pub fn auth_configs_for(image: &str, secrets: &[Secret]) -> Vec<cri::AuthConfig> {
    let Ok(r) = parse_image_ref(image) else { return vec![] };
    let host = canonical_host(&r.domain).to_string();
    let mut out = Vec::new();
    for secret in secrets {
        let name = secret.metadata.name.as_deref().unwrap_or("");
        let data = secret.data.clone().unwrap_or_default();
        let entries: BTreeMap<String, DockerConfigEntry> = if let Some(b) = data.get(".dockerconfigjson") {
            match serde_json::from_slice::<DockerConfigJson>(&b.0) {
                Ok(c) => c.auths,
                Err(e) => {
                    tracing::warn!(secret = name, error = %e, "malformed .dockerconfigjson in pull secret, skipped");
                    continue;
                }
            }
        } else if let Some(b) = data.get(".dockercfg") {
            match serde_json::from_slice::<BTreeMap<String, DockerConfigEntry>>(&b.0) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(secret = name, error = %e, "malformed .dockercfg in pull secret, skipped");
                    continue;
                }
            }
        } else {
            continue;
        };
        for (key, e) in entries {
            let (h, p) = split_registry_key(&key);
            let path_ok = p.is_empty() || r.path == p || r.path.starts_with(&format!("{p}/"));
            if h == host && path_ok {
                out.push(cri::AuthConfig {
                    username: e.username,
                    password: e.password,
                    auth: e.auth,
                    server_address: r.domain.clone(),
                    identity_token: e.identity_token,
                    registry_token: e.registry_token,
                });
            }
        }
    }
    out
}

impl RuntimeManager {
    fn image_event(&self, pod: &Pod, container: &Container, kind: EventType, reason: &str, msg: String) {
        self.events
            .pod_event(pod, Some(container_field_path(pod, &container.name)), kind, reason, msg);
    }

    /// The image's size as the runtime reports it (for the `Pulled` event).
    async fn image_size(&self, image: &str) -> Option<u64> {
        let resp = self
            .runtime
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .ok()?;
        resp.image.map(|i| i.size).filter(|s| *s > 0)
    }

    /// The image ID if present (`GetImageRef`): present iff a non-empty ID comes back.
    async fn image_ref(&self, image: &str) -> Result<Option<String>, super::seam::RuntimeError> {
        let resp = self
            .runtime
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await?;
        Ok(resp.image.map(|i| i.id).filter(|id| !id.is_empty()))
    }

    async fn pull(
        &self,
        image: &str,
        auths: Vec<cri::AuthConfig>,
        sandbox_config: Option<&cri::PodSandboxConfig>,
        progress: Arc<PullProgress>,
        pull_started: &mut Option<tokio::time::Instant>,
    ) -> Result<String, super::seam::RuntimeError> {
        if !self.pull_limits.try_accept(std::time::Instant::now()) {
            return Err(super::seam::RuntimeError::new(
                "PullImage",
                Code::ResourceExhausted,
                "pull QPS exceeded",
            ));
        }
        // Serialized pulls: one at a time node-wide (a tokio mutex, held across the pull).
        let _guard = if self.cfg.serialize_image_pulls {
            Some(self.pull_lock.lock().await)
        } else {
            None
        };
        let _slot = match (&self.pull_limits.parallel, self.cfg.serialize_image_pulls) {
            (Some(sem), false) => sem.clone().acquire_owned().await.ok(),
            _ => None,
        };
        *pull_started = Some(self.cfg.clock.instant());
        let spec = cri::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        };
        let mut attempts: Vec<Option<cri::AuthConfig>> = auths.into_iter().map(Some).collect();
        if attempts.is_empty() {
            attempts.push(None);
        }
        let mut last_err = None;
        for auth in attempts {
            match self
                .runtime
                .pull_image_with_progress(
                    cri::PullImageRequest {
                        image: Some(spec.clone()),
                        auth,
                        sandbox_config: sandbox_config.cloned(),
                    },
                    progress.clone(),
                )
                .await
            {
                Ok(r) => return Ok(r.image_ref),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| super::seam::RuntimeError::new("PullImage", Code::Unknown, "no attempt made")))
    }

    /// `EnsureImageExists`: the image reference to create the container from, or the error the
    /// container waits with.
    pub(super) async fn ensure_image_exists(
        &self,
        pod: &Pod,
        container: &Container,
        pull_secrets: &[Secret],
        sandbox_config: Option<&cri::PodSandboxConfig>,
    ) -> Result<String, ImageError> {
        let user_image = container.image.clone().unwrap_or_default();
        let image = match apply_default_image_tag(&user_image) {
            Ok(i) => i,
            Err(e) => {
                let msg = format!("Failed to apply default image tag {user_image:?}: {e}");
                self.image_event(pod, container, EventType::Warning, "InspectFailed", msg.clone());
                return Err((SyncErrorKind::InvalidImageName, msg));
            }
        };
        let present = match self.image_ref(&image).await {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("Failed to inspect image {user_image:?}: {e}");
                self.image_event(pod, container, EventType::Warning, "InspectFailed", msg.clone());
                return Err((SyncErrorKind::ImageInspectError, msg));
            }
        };
        if !should_pull(&pull_policy(container), present.is_some()) {
            return match present {
                Some(r) => {
                    let msg = format!("Container image {user_image:?} already present on machine");
                    self.image_event(pod, container, EventType::Normal, "Pulled", msg);
                    Ok(r)
                }
                None => {
                    let msg = format!("Container image {user_image:?} is not present with pull policy of Never");
                    self.image_event(pod, container, EventType::Warning, "ErrImageNeverPull", msg.clone());
                    Err((SyncErrorKind::ErrImageNeverPull, msg))
                }
            };
        }
        let key = image_pull_key(pod_uid(pod), &user_image);
        if self
            .image_backoff
            .is_in_backoff_since_update(&key, self.cfg.clock.now())
        {
            let msg = format!("Back-off pulling image {user_image:?}");
            self.image_event(pod, container, EventType::Normal, "BackOff", msg.clone());
            return Err((SyncErrorKind::ImagePullBackOff, msg));
        }
        self.image_event(
            pod,
            container,
            EventType::Normal,
            "Pulling",
            format!("Pulling image {user_image:?}"),
        );
        let start = self.cfg.clock.instant();
        let auths = auth_configs_for(&image, pull_secrets);
        let progress = Arc::new(PullProgress::default());
        let mut pull_started = None;
        let pulled = {
            let pull = self.pull(&image, auths, sandbox_config, progress.clone(), &mut pull_started);
            tokio::pin!(pull);
            // A progress event every few (virtual) seconds while bytes arrive (backends that
            // report them); the speed is per virtual second like every other kubelet duration.
            let every = self.cfg.clock.to_real(PROGRESS_EVERY);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            let mut last_done = 0u64;
            loop {
                tokio::select! {
                    r = &mut pull => break r,
                    _ = tick.tick() => {
                        let done = progress.done.load(Ordering::Relaxed);
                        let total = progress.total.load(Ordering::Relaxed);
                        if total > 0 && done != last_done {
                            let speed = (done - last_done) as f64 / PROGRESS_EVERY.as_secs_f64();
                            last_done = done;
                            self.image_event(pod, container, EventType::Normal, "Pulling", progress_message(&user_image, done, total, speed));
                        }
                    }
                }
            }
        };
        match pulled {
            Ok(image_ref) => {
                let took = self.cfg.clock.to_virtual(start.elapsed());
                let pulling = self
                    .cfg
                    .clock
                    .to_virtual(pull_started.map(|s| s.elapsed()).unwrap_or(start.elapsed()));
                let size = self.image_size(&image).await;
                let msg = match size {
                    Some(size) => format!(
                        "Successfully pulled image {user_image:?} in {} ({} including waiting). Image size: {size} bytes.",
                        go_duration(pulling),
                        go_duration(took)
                    ),
                    None => format!("Successfully pulled image {user_image:?} in {}", go_duration(took)),
                };
                self.image_event(pod, container, EventType::Normal, "Pulled", msg);
                self.image_backoff.gc();
                // Some runtimes answer an empty ref; the ID from ImageStatus is then the ref.
                if image_ref.is_empty() {
                    Ok(self.image_ref(&image).await.ok().flatten().unwrap_or(image))
                } else {
                    Ok(image_ref)
                }
            }
            Err(e) => {
                self.image_event(
                    pod,
                    container,
                    EventType::Warning,
                    "Failed",
                    format!("Failed to pull image {user_image:?}: {}", e.message),
                );
                self.image_backoff.next(&key, self.cfg.clock.now());
                // Over CRI every pull failure is ErrImagePull (RegistryUnavailable was dockershim's).
                Err((SyncErrorKind::ErrImagePull, e.message))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn default_tag_and_invalid_names() {
        assert_eq!(apply_default_image_tag("busybox").unwrap(), "busybox:latest");
        assert_eq!(apply_default_image_tag("busybox:1.36").unwrap(), "busybox:1.36");
        assert_eq!(
            apply_default_image_tag("localhost:5000/a/b").unwrap(),
            "localhost:5000/a/b:latest"
        );
        let d = format!("busybox@sha256:{}", "a".repeat(64));
        assert_eq!(apply_default_image_tag(&d).unwrap(), d);
        assert!(apply_default_image_tag("").is_err());
        assert_eq!(apply_default_image_tag("BusyBox"), Err(ReferenceError::NotLowercase));
        assert!(apply_default_image_tag("busybox:").is_err());
        assert!(apply_default_image_tag("bad image").is_err());
        assert!(apply_default_image_tag("a//b").is_err());
        assert!(apply_default_image_tag("busybox@sha256:xyz").is_err());
    }

    #[test]
    fn token_bucket_like_client_go() {
        let t0 = std::time::Instant::now();
        let mut b = TokenBucket::new(5.0, 2);
        assert!(b.try_accept(t0));
        assert!(b.try_accept(t0));
        assert!(!b.try_accept(t0), "burst of 2 used up");
        // 5 per second: one token back after 200 ms, never more than the burst.
        assert!(b.try_accept(t0 + std::time::Duration::from_millis(200)));
        assert!(!b.try_accept(t0 + std::time::Duration::from_millis(210)));
        let later = t0 + std::time::Duration::from_secs(60);
        assert!(b.try_accept(later) && b.try_accept(later) && !b.try_accept(later));
        let none = PullLimits::new(None, 0.0, 0);
        assert!((0..100).all(|_| none.try_accept(t0)));
    }

    #[test]
    fn progress_message_reads_well() {
        assert_eq!(
            progress_message("busybox", 12_345_678, 45_600_000, 4_100_000.0),
            "Pulling image \"busybox\": 12.3 MB of 45.6 MB (27%), 4.1 MB/s"
        );
        assert_eq!(
            progress_message("x", 5, 0, 0.0),
            "Pulling image \"x\": 5 B of 0 B (0%), 0 B/s"
        );
        // A slow pull shows its rate in kB/s rather than 0.0 MB/s.
        assert_eq!(
            progress_message("y", 2_500_000_000, 3_000_000_000, 51_200.0),
            "Pulling image \"y\": 2.5 GB of 3.0 GB (83%), 51.2 kB/s"
        );
        assert_eq!(decimal_bytes(999.0), "999 B");
        assert_eq!(decimal_bytes(1_000.0), "1.0 kB");
        assert_eq!(decimal_bytes(f64::NAN), "0 B");
    }

    #[test]
    fn pull_policy_defaults_by_tag() {
        let c = |image: &str, policy: Option<&str>| Container {
            name: "c".into(),
            image: Some(image.into()),
            image_pull_policy: policy.map(String::from),
            ..Default::default()
        };
        assert_eq!(pull_policy(&c("busybox", None)), "Always");
        assert_eq!(pull_policy(&c("busybox:latest", None)), "Always");
        assert_eq!(pull_policy(&c("busybox:1.36", None)), "IfNotPresent");
        assert_eq!(
            pull_policy(&c(&format!("busybox@sha256:{}", "b".repeat(64)), None)),
            "IfNotPresent"
        );
        assert_eq!(pull_policy(&c("busybox", Some("Never"))), "Never");
        assert!(should_pull("Always", true));
        assert!(!should_pull("Never", false));
        assert!(should_pull("IfNotPresent", false));
        assert!(!should_pull("IfNotPresent", true));
    }

    fn secret(key: &str, json: serde_json::Value) -> Secret {
        let mut data = BTreeMap::new();
        data.insert(key.to_string(), ByteString(serde_json::to_vec(&json).unwrap()));
        Secret {
            data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn pull_secrets_match_by_registry() {
        let s1 = secret(
            ".dockerconfigjson",
            serde_json::json!({"auths": {
                "registry.example.com": {"username": "u", "password": "p"},
                "https://index.docker.io/v1/": {"auth": "dTpw"},
                "other.example.com/team": {"username": "t"}
            }}),
        );
        let s2 = secret(
            ".dockercfg",
            serde_json::json!({"registry.example.com:5000": {"username": "port"}}),
        );
        let bad = secret(".dockerconfigjson", serde_json::json!("nope"));
        let secrets = [s1, s2, bad];
        let a = auth_configs_for("registry.example.com/app:1", &secrets);
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].username.as_str(), a[0].password.as_str()), ("u", "p"));
        assert_eq!(a[0].server_address, "registry.example.com");
        let a = auth_configs_for("busybox", &secrets);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].auth, "dTpw");
        assert_eq!(
            auth_configs_for("registry.example.com:5000/x", &secrets)[0].username,
            "port"
        );
        assert_eq!(auth_configs_for("other.example.com/team/app", &secrets).len(), 1);
        assert!(auth_configs_for("other.example.com/else/app", &secrets).is_empty());
        assert!(auth_configs_for("quay.io/x", &secrets).is_empty());
    }
}
