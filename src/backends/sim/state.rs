//! The runtime's objects (sandboxes, containers, images) with the indexes that keep lookups
//! O(log n) at thousands of pods, and the CRI views and list filters containerd implements.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::images::ImageStore;
use super::journal::{self, Journal, Record};
use super::runner::RunHandle;
use crate::genericruntime::seam::cri;

/// Label every kubelet object carries; indexed because GetPodStatus filters on it.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";

pub const SANDBOX_READY: i32 = cri::PodSandboxState::SandboxReady as i32;
pub const SANDBOX_NOTREADY: i32 = cri::PodSandboxState::SandboxNotready as i32;
pub const CREATED: i32 = cri::ContainerState::ContainerCreated as i32;
pub const RUNNING: i32 = cri::ContainerState::ContainerRunning as i32;
pub const EXITED: i32 = cri::ContainerState::ContainerExited as i32;
pub const UNKNOWN: i32 = cri::ContainerState::ContainerUnknown as i32;

/// containerd's names for container states in error messages.
pub fn state_name(state: i32) -> &'static str {
    cri::ContainerState::try_from(state)
        .map(|s| s.as_str_name())
        .unwrap_or("CONTAINER_UNKNOWN")
}

/// A pod sandbox as journaled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub config: cri::PodSandboxConfig,
    pub runtime_handler: String,
    pub state: i32,
    pub created_at: i64,
    /// Empty for host-network sandboxes and once stopped (the netns is gone).
    pub ip: String,
}

impl SandboxRecord {
    pub fn metadata(&self) -> cri::PodSandboxMetadata {
        self.config.metadata.clone().unwrap_or_default()
    }

    /// containerd's reserved name: `name_namespace_uid_attempt`.
    pub fn name(&self) -> String {
        let m = self.metadata();
        format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
    }

    pub fn host_network(&self) -> bool {
        host_network(&self.config)
    }

    fn ns_options(&self) -> Option<cri::NamespaceOption> {
        self.config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
    }

    pub fn to_cri(&self) -> cri::PodSandbox {
        cri::PodSandbox {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            state: self.state,
            created_at: self.created_at,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            runtime_handler: self.runtime_handler.clone(),
        }
    }

    pub fn to_status(&self) -> cri::PodSandboxStatus {
        cri::PodSandboxStatus {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            state: self.state,
            created_at: self.created_at,
            network: Some(cri::PodSandboxNetworkStatus {
                ip: self.ip.clone(),
                additional_ips: Vec::new(),
            }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: self.ns_options(),
                }),
            }),
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            runtime_handler: self.runtime_handler.clone(),
        }
    }
}

/// Whether a sandbox config asks for the node's network namespace (hostNetwork).
pub fn host_network(config: &cri::PodSandboxConfig) -> bool {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .is_some_and(|n| n.network == cri::NamespaceMode::Node as i32)
}

/// A container as journaled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub config: cri::ContainerConfig,
    /// The image ID (`sha256:…`) the container was created from.
    pub image_id: String,
    /// What ContainerStatus shows as `image.image` (the image's first repo tag, as containerd).
    pub status_image: String,
    /// What ContainerStatus shows as `image_ref` (the repo digest, as containerd).
    pub status_image_ref: String,
    /// `<sandbox log_directory>/<log_path>`, empty when either is empty.
    pub log_path: String,
    /// The sandbox hostname (containerd puts it in `HOSTNAME`).
    pub hostname: String,
    pub state: i32,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
}

impl ContainerRecord {
    pub fn name(&self) -> &str {
        self.config.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("")
    }

    pub fn argv(&self) -> Vec<String> {
        self.config.command.iter().chain(&self.config.args).cloned().collect()
    }

    pub fn to_cri(&self, state: i32) -> cri::Container {
        cri::Container {
            id: self.id.clone(),
            pod_sandbox_id: self.sandbox_id.clone(),
            metadata: self.config.metadata.clone(),
            image: self.config.image.clone(),
            image_ref: self.image_id.clone(),
            state,
            created_at: self.created_at,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            image_id: self.image_id.clone(),
        }
    }

    pub fn to_status(&self, state: i32) -> cri::ContainerStatus {
        let mut image = self.config.image.clone().unwrap_or_default();
        image.image = self.status_image.clone();
        cri::ContainerStatus {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            state,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            image: Some(image),
            image_ref: self.status_image_ref.clone(),
            reason: self.reason.clone(),
            message: self.message.clone(),
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            mounts: self.config.mounts.clone(),
            log_path: self.log_path.clone(),
            resources: self
                .config
                .linux
                .as_ref()
                .and_then(|l| l.resources.clone())
                .map(|r| cri::ContainerResources {
                    linux: Some(r),
                    windows: None,
                }),
            image_id: self.image_id.clone(),
            user: None,
        }
    }
}

/// A live sandbox: its record and the IDs of its containers.
#[derive(Debug)]
pub struct Sandbox {
    pub rec: SandboxRecord,
    pub containers: BTreeSet<String>,
}

/// A live container: its record and, while its process runs, the runner's handle.
#[derive(Debug)]
pub struct Container {
    pub rec: ContainerRecord,
    pub run: Option<RunHandle>,
}

/// Pod IPs from 10.88.0.0/16 like containerd's default bridge with host-local IPAM: gateway
/// .0.1, addresses handed out round-robin from .0.2.
#[derive(Debug, Default)]
pub struct IpPool {
    used: BTreeSet<u32>,
    last: u32,
}

const POOL_BASE: u32 = u32::from_be_bytes([10, 88, 0, 0]);
const POOL_FIRST: u32 = 2;
const POOL_LAST: u32 = 65534;

impl IpPool {
    pub fn allocate(&mut self) -> Option<String> {
        let span = POOL_LAST - POOL_FIRST + 1;
        let start = if self.last < POOL_FIRST {
            POOL_FIRST
        } else {
            self.last + 1
        };
        for i in 0..span {
            let off = POOL_FIRST + (start - POOL_FIRST + i) % span;
            if self.used.insert(off) {
                self.last = off;
                return Some(Ipv4Addr::from(POOL_BASE + off).to_string());
            }
        }
        None
    }

    /// Marks an address from the journal as used.
    pub fn reserve(&mut self, ip: &str) {
        if let Some(off) = Self::offset(ip) {
            self.used.insert(off);
            self.last = self.last.max(off);
        }
    }

    pub fn release(&mut self, ip: &str) {
        if let Some(off) = Self::offset(ip) {
            self.used.remove(&off);
        }
    }

    fn offset(ip: &str) -> Option<u32> {
        let a: Ipv4Addr = ip.parse().ok()?;
        u32::from(a).checked_sub(POOL_BASE).filter(|o| *o <= POOL_LAST)
    }
}

pub use crate::backends::common::{resolve, Resolved};

fn labels_match(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Everything behind the runtime's one lock.
#[derive(Debug)]
pub struct State {
    pub sandboxes: BTreeMap<String, Sandbox>,
    pub containers: BTreeMap<String, Container>,
    sandboxes_by_pod: HashMap<String, BTreeSet<String>>,
    containers_by_pod: HashMap<String, BTreeSet<String>>,
    /// Reserved names (`s/<sandbox name>`, `c/<container name>`) → ID.
    names: HashMap<String, String>,
    pub ips: IpPool,
    pub images: ImageStore,
    /// Images removed by RemoveImage (journaled so configured images stay removed).
    pub removed_images: BTreeSet<String>,
    journal: Journal,
}

impl State {
    pub fn new(journal: Journal) -> Self {
        Self {
            sandboxes: BTreeMap::new(),
            containers: BTreeMap::new(),
            sandboxes_by_pod: HashMap::new(),
            containers_by_pod: HashMap::new(),
            names: HashMap::new(),
            ips: IpPool::default(),
            images: ImageStore::default(),
            removed_images: BTreeSet::new(),
            journal,
        }
    }

    /// Journals a mutation (call before applying it), compacting the journal now and then.
    pub fn record(&mut self, r: &Record) -> Result<(), journal::Error> {
        self.journal.append(r)?;
        match r {
            Record::Image(i) => {
                self.removed_images.remove(&i.id);
            }
            Record::ImageRemoved { id } => {
                self.removed_images.insert(id.clone());
            }
            _ => {}
        }
        if self.journal.wants_compaction() {
            // The mutation being journaled is not applied yet: keep its line after the snapshot.
            let mut all = self.snapshot();
            all.push(r.clone());
            self.journal.compact(all)?;
        }
        Ok(())
    }

    fn snapshot(&self) -> Vec<Record> {
        let sandboxes = self
            .sandboxes
            .values()
            .map(|s| Record::Sandbox(Box::new(s.rec.clone())));
        let containers = self
            .containers
            .values()
            .map(|c| Record::Container(Box::new(c.rec.clone())));
        let images = self.images.iter().map(|i| Record::Image(i.clone()));
        let removed = self
            .removed_images
            .iter()
            .map(|id| Record::ImageRemoved { id: id.clone() });
        sandboxes.chain(containers).chain(images).chain(removed).collect()
    }

    pub fn sandbox_name_owner(&self, name: &str) -> Option<&String> {
        self.names.get(&format!("s/{name}"))
    }

    pub fn container_name_owner(&self, name: &str) -> Option<&String> {
        self.names.get(&format!("c/{name}"))
    }

    pub fn insert_sandbox(&mut self, rec: SandboxRecord) {
        if !rec.ip.is_empty() {
            self.ips.reserve(&rec.ip);
        }
        self.names.insert(format!("s/{}", rec.name()), rec.id.clone());
        if let Some(uid) = rec.config.labels.get(POD_UID_LABEL) {
            self.sandboxes_by_pod
                .entry(uid.clone())
                .or_default()
                .insert(rec.id.clone());
        }
        let containers = self.sandboxes.remove(&rec.id).map(|s| s.containers).unwrap_or_default();
        self.sandboxes.insert(rec.id.clone(), Sandbox { rec, containers });
    }

    pub fn remove_sandbox(&mut self, id: &str) -> Option<Sandbox> {
        let sb = self.sandboxes.remove(id)?;
        self.names.remove(&format!("s/{}", sb.rec.name()));
        if !sb.rec.ip.is_empty() {
            self.ips.release(&sb.rec.ip);
        }
        if let Some(uid) = sb.rec.config.labels.get(POD_UID_LABEL) {
            remove_from_index(&mut self.sandboxes_by_pod, uid, id);
        }
        Some(sb)
    }

    /// containerd's container name: `name_sandboxname_namespace_uid_attempt`.
    pub fn container_name(sandbox: &SandboxRecord, config: &cri::ContainerConfig) -> String {
        let s = sandbox.metadata();
        let (name, attempt) = config
            .metadata
            .as_ref()
            .map(|m| (m.name.as_str(), m.attempt))
            .unwrap_or(("", 0));
        format!("{name}_{}_{}_{}_{attempt}", s.name, s.namespace, s.uid)
    }

    pub fn insert_container(&mut self, rec: ContainerRecord) {
        if let Some(sb) = self.sandboxes.get_mut(&rec.sandbox_id) {
            sb.containers.insert(rec.id.clone());
            let name = Self::container_name(&sb.rec, &rec.config);
            self.names.insert(format!("c/{name}"), rec.id.clone());
        }
        if let Some(uid) = rec.config.labels.get(POD_UID_LABEL) {
            self.containers_by_pod
                .entry(uid.clone())
                .or_default()
                .insert(rec.id.clone());
        }
        self.containers.insert(rec.id.clone(), Container { rec, run: None });
    }

    pub fn remove_container(&mut self, id: &str) -> Option<Container> {
        let c = self.containers.remove(id)?;
        if let Some(sb) = self.sandboxes.get_mut(&c.rec.sandbox_id) {
            sb.containers.remove(id);
            let name = Self::container_name(&sb.rec, &c.rec.config);
            if self.names.get(&format!("c/{name}")).map(String::as_str) == Some(id) {
                self.names.remove(&format!("c/{name}"));
            }
        }
        if let Some(uid) = c.rec.config.labels.get(POD_UID_LABEL) {
            remove_from_index(&mut self.containers_by_pod, uid, id);
        }
        Some(c)
    }

    /// ListPodSandbox: filter by ID (or unique prefix), state and labels, like containerd.
    pub fn list_sandboxes(&self, filter: Option<&cri::PodSandboxFilter>) -> Vec<cri::PodSandbox> {
        let Some(f) = filter else {
            return self.sandboxes.values().map(|s| s.rec.to_cri()).collect();
        };
        let keep = |s: &&Sandbox| {
            f.state.as_ref().is_none_or(|st| st.state == s.rec.state)
                && labels_match(&s.rec.config.labels, &f.label_selector)
        };
        let candidates: Box<dyn Iterator<Item = &Sandbox>> = if !f.id.is_empty() {
            let id = match resolve(&self.sandboxes, &f.id) {
                Resolved::Found(id) => id,
                _ => f.id.clone(),
            };
            Box::new(self.sandboxes.get(&id).into_iter())
        } else if let Some(uid) = f.label_selector.get(POD_UID_LABEL) {
            Box::new(
                self.sandboxes_by_pod
                    .get(uid)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| self.sandboxes.get(id)),
            )
        } else {
            Box::new(self.sandboxes.values())
        };
        candidates.filter(keep).map(|s| s.rec.to_cri()).collect()
    }

    /// ListContainers: filter by ID (or prefix), sandbox ID (or prefix), state and labels.
    /// `shown` maps a record to the state reported for it (configured UNKNOWN containers).
    pub fn list_containers(
        &self,
        filter: Option<&cri::ContainerFilter>,
        shown: impl Fn(&ContainerRecord) -> i32,
    ) -> Vec<cri::Container> {
        let Some(f) = filter else {
            return self.containers.values().map(|c| c.rec.to_cri(shown(&c.rec))).collect();
        };
        let sandbox_id = if f.pod_sandbox_id.is_empty() {
            None
        } else {
            Some(match resolve(&self.sandboxes, &f.pod_sandbox_id) {
                Resolved::Found(id) => id,
                _ => f.pod_sandbox_id.clone(),
            })
        };
        let candidates: Box<dyn Iterator<Item = &Container>> = if !f.id.is_empty() {
            let id = match resolve(&self.containers, &f.id) {
                Resolved::Found(id) => id,
                _ => f.id.clone(),
            };
            Box::new(self.containers.get(&id).into_iter())
        } else if let Some(sid) = &sandbox_id {
            Box::new(
                self.sandboxes
                    .get(sid)
                    .into_iter()
                    .flat_map(|s| s.containers.iter())
                    .filter_map(|id| self.containers.get(id)),
            )
        } else if let Some(uid) = f.label_selector.get(POD_UID_LABEL) {
            Box::new(
                self.containers_by_pod
                    .get(uid)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| self.containers.get(id)),
            )
        } else {
            Box::new(self.containers.values())
        };
        candidates
            .filter_map(|c| {
                let state = shown(&c.rec);
                let ok = sandbox_id.as_ref().is_none_or(|s| *s == c.rec.sandbox_id)
                    && f.state.as_ref().is_none_or(|st| st.state == state)
                    && labels_match(&c.rec.config.labels, &f.label_selector);
                ok.then(|| c.rec.to_cri(state))
            })
            .collect()
    }
}

fn remove_from_index(index: &mut HashMap<String, BTreeSet<String>>, key: &str, id: &str) {
    if let Some(set) = index.get_mut(key) {
        set.remove(id);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_pool_round_robin_and_reuse() {
        let mut p = IpPool::default();
        assert_eq!(p.allocate().as_deref(), Some("10.88.0.2"));
        assert_eq!(p.allocate().as_deref(), Some("10.88.0.3"));
        p.release("10.88.0.2");
        // Round-robin: the released address is not handed out again at once.
        assert_eq!(p.allocate().as_deref(), Some("10.88.0.4"));
        p.reserve("10.88.1.0");
        assert_eq!(p.allocate().as_deref(), Some("10.88.1.1"));
        p.release("not an ip");
    }

    #[test]
    fn ip_pool_exhausts() {
        let mut p = IpPool::default();
        let mut n = 0;
        while p.allocate().is_some() {
            n += 1;
        }
        assert_eq!(n, 65533);
        p.release("10.88.0.77");
        assert_eq!(p.allocate().as_deref(), Some("10.88.0.77"));
    }
}
