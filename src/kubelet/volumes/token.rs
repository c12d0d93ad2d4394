//! Service-account tokens for projected volumes (`pkg/kubelet/token/token_manager.go`,
//! kubelet-behavior.md §4.6): TokenRequests bound to the pod, cached by what was asked for and
//! refreshed once older than 80 % of their lifetime or 24 h (minus a jitter of up to 10 s).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use rand::Rng;

/// Refresh any token older than this, whatever its lifetime (`maxTTL`).
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Largest random advance of a refresh (`maxJitter`).
const MAX_JITTER: Duration = Duration::from_secs(10);
/// Default lifetime when the volume does not say (API defaulting).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// Errors of token requests.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot request a token for service account {namespace}/{name}: no API server client")]
    NoClient { namespace: String, name: String },
    #[error("token request for service account {namespace}/{name} returned no status")]
    NoStatus { namespace: String, name: String },
    #[error("failed to fetch token: {source}")]
    Request {
        #[source]
        source: Box<kube::Error>,
    },
}

/// What a token is cached by.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    namespace: String,
    service_account: String,
    audiences: Vec<String>,
    expiration_seconds: i64,
    pod_name: String,
    pod_uid: String,
}

#[derive(Clone, Debug)]
struct Cached {
    token: String,
    expires: jiff::Timestamp,
    lifetime: Duration,
}

impl Cached {
    /// `requiresRefresh`: past 80 % of the lifetime or 24 h, less a jitter.
    fn requires_refresh(&self, now: jiff::Timestamp, jitter: Duration) -> bool {
        let Ok(issued) = self.expires.checked_sub(self.lifetime) else {
            return true;
        };
        let max_age = issued.checked_add(MAX_TTL.saturating_sub(jitter));
        let fifth = self.lifetime / 5;
        let refresh_at = self.expires.checked_sub(fifth + jitter);
        match (max_age, refresh_at) {
            (Ok(a), Ok(r)) => now > a || now > r,
            _ => true,
        }
    }
}

/// The kubelet's token manager.
pub struct TokenManager {
    client: Option<kube::Client>,
    cache: Mutex<HashMap<Key, Cached>>,
}

impl TokenManager {
    pub fn new(client: Option<kube::Client>) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// A token for `service_account` bound to the pod; cached while fresh. When a refresh fails
    /// the cached token is used as long as it has not expired.
    pub async fn token(
        &self,
        namespace: &str,
        service_account: &str,
        audience: Option<&str>,
        expiration_seconds: Option<i64>,
        pod_name: &str,
        pod_uid: &str,
    ) -> Result<String, TokenError> {
        let key = Key {
            namespace: namespace.into(),
            service_account: service_account.into(),
            audiences: audience
                .filter(|a| !a.is_empty())
                .map(|a| vec![a.to_string()])
                .unwrap_or_default(),
            expiration_seconds: expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS),
            pod_name: pod_name.into(),
            pod_uid: pod_uid.into(),
        };
        let now = jiff::Timestamp::now();
        let jitter = Duration::from_secs_f64(rand::rng().random::<f64>() * MAX_JITTER.as_secs_f64());
        let cached = self.lock().get(&key).cloned();
        if let Some(c) = &cached {
            if !c.requires_refresh(now, jitter) {
                return Ok(c.token.clone());
            }
        }
        match self.request(&key).await {
            Ok(fresh) => {
                let token = fresh.token.clone();
                self.lock().insert(key, fresh);
                Ok(token)
            }
            Err(e) => match cached {
                Some(c) if c.expires > now => {
                    tracing::warn!(error = %e, sa = %service_account, "token refresh failed; using the cached token");
                    Ok(c.token)
                }
                _ => Err(e),
            },
        }
    }

    async fn request(&self, key: &Key) -> Result<Cached, TokenError> {
        let Some(client) = &self.client else {
            return Err(TokenError::NoClient {
                namespace: key.namespace.clone(),
                name: key.service_account.clone(),
            });
        };
        let tr = TokenRequest {
            spec: TokenRequestSpec {
                audiences: key.audiences.clone(),
                expiration_seconds: Some(key.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(key.pod_name.clone()),
                    uid: Some(key.pod_uid.clone()),
                }),
            },
            ..Default::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &key.namespace);
        let out = api
            .create_token_request(&key.service_account, &PostParams::default(), &tr)
            .await
            .map_err(|source| TokenError::Request {
                source: Box::new(source),
            })?;
        let Some(status) = out.status else {
            return Err(TokenError::NoStatus {
                namespace: key.namespace.clone(),
                name: key.service_account.clone(),
            });
        };
        // The server may shorten the lifetime; what it granted is what 80 % applies to.
        let granted = out.spec.expiration_seconds.unwrap_or(key.expiration_seconds).max(1) as u64;
        let expires = status.expiration_timestamp.0;
        Ok(Cached {
            token: status.token,
            expires,
            lifetime: Duration::from_secs(granted),
        })
    }

    /// Drops a pod's tokens (its volumes were torn down).
    pub fn forget_pod(&self, pod_uid: &str) {
        self.lock().retain(|k, _| k.pod_uid != pod_uid);
    }

    /// Drops expired tokens (`cleanup`, run from housekeeping).
    pub fn cleanup(&self) {
        let now = jiff::Timestamp::now();
        self.lock().retain(|_, c| c.expires > now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Cached>> {
        // A poisoned cache only means a panic mid-insert elsewhere; its entries are still valid.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(expires_in: i64, lifetime: u64) -> (Cached, jiff::Timestamp) {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let c = Cached {
            token: "t".into(),
            expires: now + jiff::SignedDuration::from_secs(expires_in),
            lifetime: Duration::from_secs(lifetime),
        };
        (c, now)
    }

    #[test]
    fn refresh_at_eighty_percent() {
        // From token_manager_test.go TestRequiresRefresh: 1 h token.
        let (c, now) = cached(3600, 3600);
        assert!(!c.requires_refresh(now, Duration::ZERO));
        // 79 % in: still fresh; 81 % in: refresh.
        let (c, now) = cached(3600 - 2844, 3600);
        assert!(!c.requires_refresh(now, Duration::ZERO));
        let (c, now) = cached(3600 - 2916, 3600);
        assert!(c.requires_refresh(now, Duration::ZERO));
        // The jitter advances it.
        let (c, now) = cached(3600 - 2875, 3600);
        assert!(!c.requires_refresh(now, Duration::ZERO));
        assert!(c.requires_refresh(now, Duration::from_secs(10)));
        // A 48 h token is refreshed after 24 h.
        let (c, now) = cached(48 * 3600 - 24 * 3600 - 1, 48 * 3600);
        assert!(c.requires_refresh(now, Duration::ZERO));
        let (c, now) = cached(48 * 3600 - 23 * 3600, 48 * 3600);
        assert!(!c.requires_refresh(now, Duration::ZERO));
    }

    #[tokio::test]
    async fn no_client_is_an_error() {
        let m = TokenManager::new(None);
        let e = m.token("ns", "default", None, None, "p", "u").await.unwrap_err();
        assert!(e.to_string().contains("no API server client"), "{e}");
    }
}
