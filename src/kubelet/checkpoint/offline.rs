//! The objects an offline restart needs besides the pods (`checkpointSecrets`): the last copy of
//! every ConfigMap, Secret and service-account token a pod's volumes or env were built from, and
//! the Services of its environment variables. Volumes and run options record what they fetched
//! and fall back to these copies only when the API server cannot be reached (an answer of "not
//! found" is the API's view and wins).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};

use super::{Checkpoint, References, TokenEntry};

type Key = (String, String);

/// Whether an API error means the server could not be reached or could not answer (connection,
/// TLS, timeouts, 5xx), as opposed to an answer about the object (4xx): only then is a
/// checkpointed copy used.
pub fn api_unreachable(e: &kube::Error) -> bool {
    !matches!(e, kube::Error::Api(s) if (400..500).contains(&s.code))
}

#[derive(Default)]
struct Objects {
    config_maps: BTreeMap<Key, ConfigMap>,
    secrets: BTreeMap<Key, Secret>,
    /// (pod UID, service account, audience) → token.
    tokens: BTreeMap<(String, String, String), String>,
    services: Option<Vec<Service>>,
}

/// Shared between the volume manager, the run options and the checkpoint writer.
pub struct OfflineStore {
    /// `checkpointSecrets`: without it nothing is recorded, so nothing secret is written.
    enabled: bool,
    inner: Mutex<Objects>,
}

impl OfflineStore {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            inner: Mutex::default(),
        }
    }

    /// Whether objects are recorded (`checkpointSecrets`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn lock(&self) -> MutexGuard<'_, Objects> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seeds the store from a checkpoint read at start.
    pub fn load(&self, cp: &Checkpoint) {
        if !self.enabled {
            return;
        }
        let mut o = self.lock();
        for c in &cp.config_maps {
            o.config_maps.insert(key(&c.metadata), c.clone());
        }
        for s in &cp.secrets {
            o.secrets.insert(key(&s.metadata), s.clone());
        }
        for t in &cp.tokens {
            o.tokens.insert(
                (t.pod_uid.clone(), t.service_account.clone(), t.audience.clone()),
                t.token.clone(),
            );
        }
        if o.services.is_none() {
            o.services = cp.services.clone();
        }
    }

    pub fn record_config_map(&self, cm: &ConfigMap) {
        if self.enabled {
            self.lock().config_maps.insert(key(&cm.metadata), cm.clone());
        }
    }

    pub fn record_secret(&self, s: &Secret) {
        if self.enabled {
            self.lock().secrets.insert(key(&s.metadata), s.clone());
        }
    }

    pub fn record_token(&self, pod_uid: &str, service_account: &str, audience: &str, token: &str) {
        if self.enabled {
            self.lock()
                .tokens
                .insert((pod_uid.into(), service_account.into(), audience.into()), token.into());
        }
    }

    pub fn record_services(&self, services: Vec<Service>) {
        if self.enabled {
            self.lock().services = Some(services);
        }
    }

    pub fn config_map(&self, ns: &str, name: &str) -> Option<ConfigMap> {
        self.lock().config_maps.get(&(ns.into(), name.into())).cloned()
    }

    pub fn secret(&self, ns: &str, name: &str) -> Option<Secret> {
        self.lock().secrets.get(&(ns.into(), name.into())).cloned()
    }

    pub fn token(&self, pod_uid: &str, service_account: &str, audience: &str) -> Option<String> {
        self.lock()
            .tokens
            .get(&(pod_uid.into(), service_account.into(), audience.into()))
            .cloned()
    }

    pub fn services(&self) -> Option<Vec<Service>> {
        self.lock().services.clone()
    }

    /// Fills the checkpoint's object lists with what the given pods reference, and forgets the
    /// rest (objects of deleted pods or no longer referenced).
    pub fn fill(&self, cp: &mut Checkpoint) {
        if !self.enabled {
            return;
        }
        let mut refs = References::default();
        cp.pods.iter().for_each(|p| refs.add_pod(p));
        let uids: std::collections::BTreeSet<&str> = cp.pods.iter().filter_map(|p| p.metadata.uid.as_deref()).collect();
        let mut o = self.lock();
        o.config_maps.retain(|k, _| refs.config_maps.contains(k));
        o.secrets.retain(|k, _| refs.secrets.contains(k));
        o.tokens.retain(|(uid, _, _), _| uids.contains(uid.as_str()));
        cp.config_maps = o.config_maps.values().cloned().collect();
        cp.secrets = o.secrets.values().cloned().collect();
        cp.tokens = o
            .tokens
            .iter()
            .map(|((pod_uid, sa, aud), token)| TokenEntry {
                pod_uid: pod_uid.clone(),
                service_account: sa.clone(),
                audience: aud.clone(),
                token: token.clone(),
            })
            .collect();
        cp.services = o.services.clone();
    }
}

fn key(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        m.namespace.clone().unwrap_or_else(|| "default".into()),
        m.name.clone().unwrap_or_default(),
    )
}
