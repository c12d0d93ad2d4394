//! The pod manager: the merged view of every source's pods (`pkg/kubelet/pod` + the config
//! mux). It turns source updates into the kubelet's operations (ADD, UPDATE, DELETE, REMOVE,
//! RECONCILE) and keeps mirror pods apart, keyed by the full name of their static pod.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::Pod;

use super::mirror::{is_mirror_pod, is_static_pod, pod_full_name};
use super::sources::{Source, SourceUpdate};

/// What changed, as the sync loop handles it (`kubetypes.PodOperation`).
#[derive(Clone, Debug, PartialEq)]
pub enum PodOp {
    /// A pod seen for the first time.
    Add(Pod),
    /// Spec, labels, annotations or deletion grace changed.
    Update(Pod),
    /// `deletionTimestamp` newly set (graceful deletion).
    Delete(Pod),
    /// The pod object is gone from its source.
    Remove(Pod),
    /// Only the status changed (someone else's conditions, our own patches coming back).
    Reconcile(Pod),
    /// A mirror pod appeared, changed or vanished: the static pod with this full name re-syncs.
    MirrorChanged(String),
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// Semantic equality (`checkAndUpdatePod`): what makes an UPDATE rather than a RECONCILE.
fn semantically_equal(a: &Pod, b: &Pod) -> bool {
    a.spec == b.spec
        && a.metadata.labels == b.metadata.labels
        && a.metadata.annotations == b.metadata.annotations
        && a.metadata.deletion_timestamp == b.metadata.deletion_timestamp
        && a.metadata.deletion_grace_period_seconds == b.metadata.deletion_grace_period_seconds
}

/// The merged pods of all sources.
#[derive(Default)]
pub struct PodManager {
    /// Regular and static pods by UID.
    pods: HashMap<String, Pod>,
    /// Which source each UID came from.
    source_of: HashMap<String, Source>,
    /// Mirror pods by full name.
    mirrors: HashMap<String, Pod>,
    /// Static pods by full name (several UIDs may share one while an old one terminates).
    static_by_name: HashMap<String, Vec<String>>,
    /// Pods that admission rejected (never run, not counted as active).
    rejected: HashSet<String>,
    /// Sources that delivered their first snapshot.
    seen: HashSet<Source>,
}

impl PodManager {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one source update and returns the resulting operations, in order.
    pub fn apply(&mut self, update: SourceUpdate) -> Vec<PodOp> {
        let mut ops = Vec::new();
        match update {
            SourceUpdate::Snapshot { source, pods } => {
                self.seen.insert(source);
                let mut present: HashSet<String> = HashSet::new();
                let mut mirrors_present: HashSet<String> = HashSet::new();
                for pod in pods {
                    if is_mirror_pod(&pod) {
                        mirrors_present.insert(pod_full_name(&pod));
                    } else {
                        present.insert(uid_of(&pod));
                    }
                    self.upsert(source, pod, &mut ops);
                }
                let gone: Vec<String> = self
                    .source_of
                    .iter()
                    .filter(|(uid, s)| **s == source && !present.contains(*uid))
                    .map(|(uid, _)| uid.clone())
                    .collect();
                for uid in gone {
                    if let Some(pod) = self.remove_uid(&uid) {
                        ops.push(PodOp::Remove(pod));
                    }
                }
                if source == Source::Api {
                    let gone: Vec<String> = self
                        .mirrors
                        .keys()
                        .filter(|n| !mirrors_present.contains(*n))
                        .cloned()
                        .collect();
                    for name in gone {
                        self.mirrors.remove(&name);
                        ops.push(PodOp::MirrorChanged(name));
                    }
                }
            }
            SourceUpdate::Upsert { source, pod } => self.upsert(source, *pod, &mut ops),
            SourceUpdate::Remove { pod, .. } => {
                if is_mirror_pod(&pod) {
                    let name = pod_full_name(&pod);
                    if self
                        .mirrors
                        .get(&name)
                        .is_some_and(|m| m.metadata.uid == pod.metadata.uid)
                    {
                        self.mirrors.remove(&name);
                        ops.push(PodOp::MirrorChanged(name));
                    }
                } else if let Some(pod) = self.remove_uid(&uid_of(&pod)) {
                    ops.push(PodOp::Remove(pod));
                }
            }
        }
        ops
    }

    fn upsert(&mut self, source: Source, pod: Pod, ops: &mut Vec<PodOp>) {
        if is_mirror_pod(&pod) {
            let name = pod_full_name(&pod);
            let changed = self.mirrors.get(&name) != Some(&pod);
            self.mirrors.insert(name.clone(), pod);
            if changed {
                ops.push(PodOp::MirrorChanged(name));
            }
            return;
        }
        let uid = uid_of(&pod);
        if uid.is_empty() {
            return;
        }
        match self.pods.get(&uid) {
            None => {
                if is_static_pod(&pod) {
                    self.static_by_name
                        .entry(pod_full_name(&pod))
                        .or_default()
                        .push(uid.clone());
                }
                self.source_of.insert(uid.clone(), source);
                self.pods.insert(uid, pod.clone());
                ops.push(PodOp::Add(pod));
            }
            Some(old) => {
                let op = if old.metadata.deletion_timestamp.is_none() && pod.metadata.deletion_timestamp.is_some() {
                    Some(PodOp::Delete(pod.clone()))
                } else if !semantically_equal(old, &pod) {
                    Some(PodOp::Update(pod.clone()))
                } else if old.status != pod.status {
                    Some(PodOp::Reconcile(pod.clone()))
                } else {
                    None
                };
                self.pods.insert(uid, pod);
                ops.extend(op);
            }
        }
    }

    fn remove_uid(&mut self, uid: &str) -> Option<Pod> {
        self.source_of.remove(uid);
        self.rejected.remove(uid);
        let pod = self.pods.remove(uid)?;
        if is_static_pod(&pod) {
            let name = pod_full_name(&pod);
            if let Some(v) = self.static_by_name.get_mut(&name) {
                v.retain(|u| u != uid);
                if v.is_empty() {
                    self.static_by_name.remove(&name);
                }
            }
        }
        Some(pod)
    }

    /// True once every given source delivered its first snapshot.
    pub fn sources_ready(&self, sources: &[Source]) -> bool {
        sources.iter().all(|s| self.seen.contains(s))
    }

    pub fn get(&self, uid: &str) -> Option<&Pod> {
        self.pods.get(uid)
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    pub fn uids(&self) -> HashSet<String> {
        self.pods.keys().cloned().collect()
    }

    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.values()
    }

    /// The mirror pod of a static pod, by the static pod's full name.
    pub fn mirror_of(&self, full_name: &str) -> Option<&Pod> {
        self.mirrors.get(full_name)
    }

    /// Mirror pods whose static pod does not exist.
    pub fn orphaned_mirrors(&self) -> Vec<Pod> {
        self.mirrors
            .iter()
            .filter(|(name, _)| !self.static_by_name.contains_key(*name))
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// UIDs of the static pods with this full name, oldest first.
    pub fn static_uids(&self, full_name: &str) -> Vec<String> {
        self.static_by_name.get(full_name).cloned().unwrap_or_default()
    }

    pub fn reject(&mut self, uid: &str) {
        self.rejected.insert(uid.to_string());
    }

    pub fn is_rejected(&self, uid: &str) -> bool {
        self.rejected.contains(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::sources::{CONFIG_MIRROR_ANNOTATION, CONFIG_SOURCE_ANNOTATION};
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use std::collections::BTreeMap;

    fn pod(uid: &str, name: &str, source: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                name: Some(name.into()),
                namespace: Some("default".into()),
                annotations: Some(BTreeMap::from([(
                    CONFIG_SOURCE_ANNOTATION.to_string(),
                    source.to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            ..Default::default()
        }
    }

    fn mirror_of(p: &Pod, uid: &str) -> Pod {
        let mut m = p.clone();
        m.metadata.uid = Some(uid.into());
        let a = m.metadata.annotations.get_or_insert_with(Default::default);
        a.insert(CONFIG_SOURCE_ANNOTATION.into(), "api".into());
        a.insert(CONFIG_MIRROR_ANNOTATION.into(), "hash".into());
        m
    }

    fn upsert(p: &Pod) -> SourceUpdate {
        SourceUpdate::Upsert {
            source: Source::Api,
            pod: Box::new(p.clone()),
        }
    }

    #[test]
    fn operations_from_changes() {
        let mut pm = PodManager::new();
        let a = pod("u1", "a", "api");
        assert_eq!(
            pm.apply(SourceUpdate::Snapshot {
                source: Source::Api,
                pods: vec![a.clone()]
            }),
            vec![PodOp::Add(a.clone())]
        );
        assert!(pm.sources_ready(&[Source::Api]));
        assert!(!pm.sources_ready(&[Source::Api, Source::File]));
        // Same object again: nothing.
        assert!(pm.apply(upsert(&a)).is_empty());
        // Status only: reconcile.
        let mut s = a.clone();
        s.status = Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        assert_eq!(pm.apply(upsert(&s)), vec![PodOp::Reconcile(s.clone())]);
        // Label change: update.
        let mut l = s.clone();
        l.metadata.labels = Some(BTreeMap::from([("x".to_string(), "y".to_string())]));
        assert_eq!(pm.apply(upsert(&l)), vec![PodOp::Update(l.clone())]);
        // Deletion timestamp: delete.
        let mut d = l.clone();
        d.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        assert_eq!(pm.apply(upsert(&d)), vec![PodOp::Delete(d.clone())]);
        // Gone from the snapshot: remove.
        assert_eq!(
            pm.apply(SourceUpdate::Snapshot {
                source: Source::Api,
                pods: vec![]
            }),
            vec![PodOp::Remove(d)]
        );
        assert!(!pm.contains("u1"));
    }

    #[test]
    fn mirror_pods_are_kept_apart() {
        let mut pm = PodManager::new();
        let st = pod("s1", "web-node", "file");
        pm.apply(SourceUpdate::Snapshot {
            source: Source::File,
            pods: vec![st.clone()],
        });
        let m = mirror_of(&st, "m1");
        assert_eq!(
            pm.apply(upsert(&m)),
            vec![PodOp::MirrorChanged("web-node_default".into())]
        );
        assert_eq!(pm.mirror_of("web-node_default"), Some(&m));
        assert!(!pm.contains("m1"), "mirror pods are never run");
        assert!(pm.orphaned_mirrors().is_empty());
        assert_eq!(
            pm.apply(SourceUpdate::Remove {
                source: Source::Api,
                pod: Box::new(m.clone())
            }),
            vec![PodOp::MirrorChanged("web-node_default".into())]
        );
        assert!(pm.mirror_of("web-node_default").is_none());
        // A mirror without its static pod is an orphan.
        let other = mirror_of(&pod("x", "gone-node", "file"), "m2");
        pm.apply(upsert(&other));
        assert_eq!(pm.orphaned_mirrors(), vec![other]);
        // Removing the static pod file removes the static pod.
        let ops = pm.apply(SourceUpdate::Snapshot {
            source: Source::File,
            pods: vec![],
        });
        assert_eq!(ops, vec![PodOp::Remove(st)]);
        assert!(pm.static_uids("web-node_default").is_empty());
    }
}
