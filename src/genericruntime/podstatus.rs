//! `GetPodStatus` and `GetPods` (§1.1): what the runtime knows about a pod, decoded from CRI
//! labels and annotations, plus termination messages of exited containers (§1.15).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::labels::{container_info_from_annotations, container_info_from_labels, POD_UID_LABEL};
use super::manager::RuntimeManager;
use super::seam::cri;
use super::types::{ContainerState, ContainerStatus, PodStatus, RunningPod, RuntimeObject};
use super::Result;

/// Termination message file: at most the last 4096 bytes.
pub const MAX_TERMINATION_MESSAGE_BYTES: u64 = 4096;
/// Logs fallback: the last 80 lines...
pub const FALLBACK_LOG_LINES: usize = 80;
/// ...of which only the last 2048 bytes.
pub const FALLBACK_LOG_BYTES: usize = 2048;

/// CRI container state → internal state (anything unrecognized is Unknown).
pub fn to_container_state(state: i32) -> ContainerState {
    match cri::ContainerState::try_from(state) {
        Ok(cri::ContainerState::ContainerCreated) => ContainerState::Created,
        Ok(cri::ContainerState::ContainerRunning) => ContainerState::Running,
        Ok(cri::ContainerState::ContainerExited) => ContainerState::Exited,
        _ => ContainerState::Unknown,
    }
}

fn ts_from_nanos(ns: i64) -> Timestamp {
    Timestamp::from_nanosecond(i128::from(ns)).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// `toKubeContainerStatus`: decodes one CRI status (without the termination message).
pub fn to_kube_container_status(runtime_type: &str, s: &cri::ContainerStatus) -> ContainerStatus {
    let labels = container_info_from_labels(&s.labels);
    let ann = container_info_from_annotations(&s.annotations);
    let state = to_container_state(s.state);
    let name = if labels.container_name.is_empty() {
        s.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default()
    } else {
        labels.container_name
    };
    let exited = state == ContainerState::Exited;
    ContainerStatus {
        id: s.id.clone(),
        runtime_type: runtime_type.to_string(),
        name,
        state,
        created_at: ts_from_nanos(s.created_at),
        started_at: (state != ContainerState::Created).then(|| ts_from_nanos(s.started_at)),
        finished_at: exited.then(|| ts_from_nanos(s.finished_at)),
        exit_code: if exited { s.exit_code } else { 0 },
        image: s.image.as_ref().map(|i| i.image.clone()).unwrap_or_default(),
        image_ref: s.image_ref.clone(),
        hash: ann.hash,
        restart_count: ann.restart_count,
        reason: if exited { s.reason.clone() } else { String::new() },
        message: if exited { s.message.clone() } else { String::new() },
        sandbox_id: String::new(),
    }
}

/// Reads at most the last `max` bytes of a file.
fn read_at_most(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len > max {
        f.seek(SeekFrom::Start(len - max))?;
    }
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf)?;
    Ok(buf)
}

/// `getTerminationMessage`: (message, whether to fall back to the logs).
pub fn termination_message_from_file(
    status: &cri::ContainerStatus,
    termination_message_path: &str,
    fallback_to_logs: bool,
) -> (String, bool) {
    if termination_message_path.is_empty() {
        return (String::new(), fallback_to_logs);
    }
    let Some(mount) = status
        .mounts
        .iter()
        .find(|m| m.container_path == termination_message_path)
    else {
        return (String::new(), fallback_to_logs);
    };
    match read_at_most(Path::new(&mount.host_path), MAX_TERMINATION_MESSAGE_BYTES) {
        Ok(data) => {
            let empty = data.is_empty();
            (String::from_utf8_lossy(&data).into_owned(), fallback_to_logs && empty)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), fallback_to_logs),
        Err(e) => (
            format!("Error on reading termination log {}: {e}", mount.host_path),
            false,
        ),
    }
}

/// One Docker JSON log line (`{"log":"…","stream":"stdout","time":"…"}`).
#[derive(serde::Deserialize)]
struct DockerJsonLine {
    log: String,
}

/// Decodes CRI log lines (`<ts> <stream> <P|F>[:tags] <content>`) into the text they carry.
/// Partial (`P`) fragments are joined with the following fragment. Docker JSON lines are
/// accepted too (the format is detected per line, like the kubelet's reader per file).
pub fn decode_cri_log(raw: &str) -> String {
    let mut out = String::new();
    for line in raw.lines() {
        if line.starts_with('{') {
            if let Ok(j) = serde_json::from_str::<DockerJsonLine>(line) {
                out.push_str(&j.log);
                continue;
            }
        }
        let mut parts = line.splitn(4, ' ');
        let (_ts, _stream, tags) = (parts.next(), parts.next(), parts.next().unwrap_or("F"));
        let content = parts.next().unwrap_or("");
        out.push_str(content);
        if tags.split(':').next().is_none_or(|t| t != "P") {
            out.push('\n');
        }
    }
    out
}

/// `readLastStringFromContainerLogs`: the last 80 lines, then only their last 2048 bytes.
pub fn last_string_from_log(path: &Path) -> String {
    // 80 lines of arbitrary length: read a generous tail, decode, then cut.
    let raw = match read_at_most(path, 1024 * 1024) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "no container log for the termination message");
            return String::new();
        }
    };
    let text = decode_cri_log(&String::from_utf8_lossy(&raw));
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let tail = lines[lines.len().saturating_sub(FALLBACK_LOG_LINES)..].concat();
    if tail.len() <= FALLBACK_LOG_BYTES {
        return tail;
    }
    let mut cut = tail.len() - FALLBACK_LOG_BYTES;
    while !tail.is_char_boundary(cut) {
        cut += 1;
    }
    tail[cut..].to_string()
}

impl RuntimeManager {
    /// The pod log directory `<pod_logs_dir>/<ns>_<name>_<uid>`.
    pub fn pod_log_dir(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.cfg.pod_logs_dir.join(format!("{namespace}_{name}_{uid}"))
    }

    fn uid_selector(uid: &str) -> std::collections::HashMap<String, String> {
        [(POD_UID_LABEL.to_string(), uid.to_string())].into_iter().collect()
    }

    /// Sandbox statuses of a pod, newest first.
    pub(super) async fn sandbox_statuses(&self, uid: &str) -> Result<Vec<cri::PodSandboxStatus>> {
        let mut items = self
            .runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    label_selector: Self::uid_selector(uid),
                    ..Default::default()
                }),
            })
            .await?
            .items;
        items.sort_by_key(|x| std::cmp::Reverse(x.created_at));
        let mut out = Vec::with_capacity(items.len());
        for sb in items {
            match self
                .runtime
                .pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: sb.id.clone(),
                    verbose: false,
                })
                .await
            {
                Ok(resp) => {
                    if let Some(s) = resp.status {
                        out.push(s);
                    }
                }
                // Removed between the list and the status call: it is simply gone.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    pub(super) fn sandbox_ips(sandbox: &cri::PodSandboxStatus) -> Vec<String> {
        let Some(net) = &sandbox.network else { return vec![] };
        let mut ips = Vec::new();
        if !net.ip.is_empty() {
            ips.push(net.ip.clone());
        }
        ips.extend(net.additional_ips.iter().map(|i| i.ip.clone()));
        // One unparseable IP means the runtime's answer cannot be trusted: no IPs at all.
        if ips.iter().any(|ip| ip.parse::<std::net::IpAddr>().is_err()) {
            tracing::warn!(sandbox = %sandbox.id, ?ips, "sandbox reports an unparseable IP, ignoring its IPs");
            return vec![];
        }
        ips
    }

    /// Container statuses of a pod, newest first, with termination messages.
    async fn container_statuses(&self, uid: &str, namespace: &str, name: &str) -> Result<Vec<ContainerStatus>> {
        let list = self
            .runtime
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    label_selector: Self::uid_selector(uid),
                    ..Default::default()
                }),
            })
            .await?
            .containers;
        let mut out = Vec::with_capacity(list.len());
        for c in list {
            let status = match self
                .runtime
                .container_status(cri::ContainerStatusRequest {
                    container_id: c.id.clone(),
                    verbose: false,
                })
                .await
            {
                Ok(r) => match r.status {
                    Some(s) => s,
                    None => continue,
                },
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let mut cs = to_kube_container_status(&self.cfg.runtime_type, &status);
            cs.sandbox_id = c.pod_sandbox_id.clone();
            if cs.state == ContainerState::Exited {
                let ann = container_info_from_annotations(&status.annotations);
                let fallback = ann.termination_message_policy == "FallbackToLogsOnError"
                    && cs.exit_code != 0
                    && cs.reason != "ContainerCannotRun";
                let (mut msg, check_logs) =
                    termination_message_from_file(&status, &ann.termination_message_path, fallback);
                if check_logs {
                    let log = self.resolve_log_path(&status.log_path, namespace, name, uid);
                    msg = last_string_from_log(&log);
                }
                if !msg.is_empty() {
                    if !cs.message.is_empty() {
                        cs.message.push_str(": ");
                    }
                    cs.message.push_str(&msg);
                }
            }
            out.push(cs);
        }
        out.sort_by_key(|x| std::cmp::Reverse(x.created_at));
        Ok(out)
    }

    /// CRI `log_path` is absolute for containerd; a relative one is under the pod log dir.
    pub(super) fn resolve_log_path(&self, log_path: &str, namespace: &str, name: &str, uid: &str) -> PathBuf {
        let p = Path::new(log_path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.pod_log_dir(namespace, name, uid).join(p)
        }
    }

    pub(super) async fn get_pod_status_impl(&self, uid: &str, name: &str, namespace: &str) -> Result<PodStatus> {
        let sandbox_statuses = self.sandbox_statuses(uid).await?;
        let ips = match sandbox_statuses.first() {
            Some(s) if s.state == cri::PodSandboxState::SandboxReady as i32 => Self::sandbox_ips(s),
            _ => vec![],
        };
        let container_statuses = self.container_statuses(uid, namespace, name).await?;
        Ok(PodStatus {
            uid: uid.to_string(),
            name: name.to_string(),
            namespace: namespace.to_string(),
            ips,
            container_statuses,
            sandbox_statuses,
        })
    }

    pub(super) async fn get_pods_impl(&self, all: bool) -> Result<Vec<RunningPod>> {
        let sandbox_filter = (!all).then(|| cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue {
                state: cri::PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        });
        let sandboxes = self
            .runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: sandbox_filter })
            .await?
            .items;
        let container_filter = (!all).then(|| cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        });
        let containers = self
            .runtime
            .list_containers(cri::ListContainersRequest {
                filter: container_filter,
            })
            .await?
            .containers;
        let mut pods: BTreeMap<String, RunningPod> = BTreeMap::new();
        for sb in sandboxes {
            let Some(md) = sb.metadata.as_ref() else {
                tracing::warn!(sandbox = %sb.id, "sandbox without metadata, skipped");
                continue;
            };
            let pod = pods.entry(md.uid.clone()).or_insert_with(|| RunningPod {
                uid: md.uid.clone(),
                name: md.name.clone(),
                namespace: md.namespace.clone(),
                ..Default::default()
            });
            let state = if sb.state == cri::PodSandboxState::SandboxReady as i32 {
                ContainerState::Running
            } else {
                ContainerState::Exited
            };
            pod.sandboxes.push(RuntimeObject {
                id: sb.id.clone(),
                name: md.name.clone(),
                state,
                created_at: sb.created_at,
            });
        }
        for c in containers {
            let l = container_info_from_labels(&c.labels);
            if l.pod_uid.is_empty() {
                // Not created by a kubelet: not ours to manage.
                continue;
            }
            let pod = pods.entry(l.pod_uid.clone()).or_insert_with(|| RunningPod {
                uid: l.pod_uid.clone(),
                name: l.pod_name.clone(),
                namespace: l.pod_namespace.clone(),
                ..Default::default()
            });
            pod.containers.push(RuntimeObject {
                id: c.id.clone(),
                name: l.container_name.clone(),
                state: to_container_state(c.state),
                created_at: c.created_at,
            });
        }
        Ok(pods.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genericruntime::labels::*;

    #[test]
    fn decodes_cri_status() {
        let mut s = cri::ContainerStatus {
            id: "abc".into(),
            state: cri::ContainerState::ContainerExited as i32,
            created_at: 1_000_000_000,
            started_at: 2_000_000_000,
            finished_at: 3_000_000_000,
            exit_code: 3,
            reason: "Error".into(),
            message: "boom".into(),
            ..Default::default()
        };
        s.labels.insert(CONTAINER_NAME_LABEL.into(), "c1".into());
        s.annotations.insert(CONTAINER_HASH_ANNOTATION.into(), "ff".into());
        s.annotations
            .insert(CONTAINER_RESTART_COUNT_ANNOTATION.into(), "2".into());
        let c = to_kube_container_status("sim", &s);
        assert_eq!(c.name, "c1");
        assert_eq!(c.state, ContainerState::Exited);
        assert_eq!(c.hash, 0xff);
        assert_eq!(c.restart_count, 2);
        assert_eq!(c.exit_code, 3);
        assert_eq!(c.finished_at, Some(Timestamp::from_second(3).unwrap()));
        assert_eq!(c.container_id(), "sim://abc");
        s.state = cri::ContainerState::ContainerCreated as i32;
        let c = to_kube_container_status("sim", &s);
        assert_eq!(c.started_at, None);
        assert_eq!(c.finished_at, None);
        assert_eq!(c.exit_code, 0);
        assert_eq!(c.reason, "");
        s.state = 42;
        assert_eq!(to_kube_container_status("sim", &s).state, ContainerState::Unknown);
    }

    #[test]
    fn termination_message_file_and_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tlog");
        let mut s = cri::ContainerStatus::default();
        s.mounts.push(cri::Mount {
            container_path: "/dev/termination-log".into(),
            host_path: file.display().to_string(),
            ..Default::default()
        });
        // Missing file: fall back if allowed.
        assert_eq!(
            termination_message_from_file(&s, "/dev/termination-log", true),
            (String::new(), true)
        );
        std::fs::write(&file, "").unwrap();
        assert_eq!(
            termination_message_from_file(&s, "/dev/termination-log", true),
            (String::new(), true)
        );
        assert_eq!(
            termination_message_from_file(&s, "/dev/termination-log", false),
            (String::new(), false)
        );
        let big = "x".repeat(5000) + "END";
        std::fs::write(&file, &big).unwrap();
        let (m, fb) = termination_message_from_file(&s, "/dev/termination-log", true);
        assert_eq!(m.len(), 4096);
        assert!(m.ends_with("END"));
        assert!(!fb);
        // No matching mount.
        assert_eq!(
            termination_message_from_file(&s, "/other", false),
            (String::new(), false)
        );
    }

    #[test]
    fn log_fallback_keeps_last_lines_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        let mut raw = String::new();
        for i in 0..100 {
            raw.push_str(&format!("2016-10-06T00:17:09.669794202Z stdout F line{i}\n"));
        }
        raw.push_str("2016-10-06T00:17:09.669794202Z stdout P DO\n");
        raw.push_str("2016-10-06T00:17:09.669794202Z stdout F NE\n");
        std::fs::write(&log, raw).unwrap();
        let s = last_string_from_log(&log);
        assert!(s.ends_with("line99\nDONE\n"), "{s}");
        assert!(s.starts_with("line21\n"), "{s}");
        assert_eq!(s.lines().count(), 80);
        assert_eq!(decode_cri_log("t stdout P a\nt stderr F b\n"), "ab\n");
        assert_eq!(
            decode_cri_log("{\"log\":\"x\\n\",\"stream\":\"stdout\",\"time\":\"t\"}\n"),
            "x\n"
        );
        assert_eq!(last_string_from_log(&dir.path().join("missing")), "");
    }
}
