//! The kubelet's sysctl admission (`pkg/kubelet/sysctl`): a pod's `securityContext.sysctls`
//! must each be in the safe set or match `allowedUnsafeSysctls` (names or `prefix*` globs), and
//! only sysctls known to be namespaced may be allowed at all (`kernel.shm*`, `kernel.msg*`,
//! `kernel.sem`, `fs.mqueue.*` in the IPC namespace, `net.*` in the network namespace). A pod
//! sharing the host's network (IPC) namespace may set no net (IPC) sysctl. A refused pod fails
//! with reason `SysctlForbidden` and never reaches the runtime.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Pod;

/// Reason of a refused pod.
pub const FORBIDDEN_REASON: &str = "SysctlForbidden";
/// `validation.SysctlMaxLength`.
pub const SYSCTL_MAX_LENGTH: usize = 253;

/// The safe set of Kubernetes 1.33 (the version keel implements), with the oldest kernel each
/// needs. The set grew over releases: kernel.shm_rmid_forced, net.ipv4.ip_local_port_range and
/// net.ipv4.tcp_syncookies from the start; ping_group_range in 1.18; ip_unprivileged_port_start
/// in 1.22; ip_local_reserved_ports in 1.27; tcp_keepalive_time/intvl/probes and tcp_fin_timeout
/// in 1.29; tcp_rmem and tcp_wmem in 1.32.
pub const SAFE_SYSCTLS: &[(&str, Option<(u32, u32)>)] = &[
    ("kernel.shm_rmid_forced", None),
    ("net.ipv4.ip_local_port_range", None),
    ("net.ipv4.tcp_syncookies", None),
    ("net.ipv4.ping_group_range", None),
    ("net.ipv4.ip_unprivileged_port_start", None),
    ("net.ipv4.ip_local_reserved_ports", Some((3, 16))),
    ("net.ipv4.tcp_keepalive_time", Some((4, 5))),
    ("net.ipv4.tcp_fin_timeout", Some((4, 6))),
    ("net.ipv4.tcp_keepalive_intvl", Some((4, 5))),
    ("net.ipv4.tcp_keepalive_probes", Some((4, 5))),
    ("net.ipv4.tcp_rmem", Some((4, 15))),
    ("net.ipv4.tcp_wmem", Some((4, 15))),
];

/// The kernel namespace a sysctl lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Namespace {
    Ipc,
    Net,
}

impl Namespace {
    fn as_str(self) -> &'static str {
        match self {
            Namespace::Ipc => "ipc",
            Namespace::Net => "net",
        }
    }
}

/// An `allowedUnsafeSysctls` entry the kubelet would refuse at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SysctlError {
    #[error("sysctl {0:?} must have at most 253 characters and match regex ([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*([a-z0-9][-_a-z0-9]*)?[a-z0-9*]")]
    InvalidPattern(String),
    #[error("the sysctls {0:?} are not known to be namespaced")]
    NotNamespaced(String),
}

/// `NamespacedBy`.
pub fn namespaced_by(name: &str) -> Option<Namespace> {
    if name == "kernel.sem" {
        return Some(Namespace::Ipc);
    }
    if ["kernel.shm", "kernel.msg", "fs.mqueue."]
        .iter()
        .any(|p| name.starts_with(p))
    {
        return Some(Namespace::Ipc);
    }
    name.starts_with("net.").then_some(Namespace::Net)
}

/// `ConvertSysctlVariableToDotsSeparator`: a name whose first separator is `/` uses `/` between
/// segments and `.` inside them; swap both.
pub fn to_dots(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

fn is_segment(s: &str) -> bool {
    // [a-z0-9]([-_a-z0-9]*[a-z0-9])?
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && alnum(&b[0]) && alnum(&b[b.len() - 1]) && b.iter().all(|c| alnum(c) || *c == b'-' || *c == b'_')
}

fn is_pattern_segment(s: &str) -> bool {
    // ([a-z0-9][-_a-z0-9]*)?[a-z0-9*]
    let Some(last) = s.chars().last() else { return false };
    let head = &s[..s.len() - last.len_utf8()];
    let last_ok = last.is_ascii_lowercase() || last.is_ascii_digit() || last == '*';
    let head_ok = head.is_empty() || {
        let b = head.as_bytes();
        (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
    };
    last_ok && head_ok
}

/// `IsValidSysctlPattern`: dot- or slash-separated segments, a `*` only at the very end.
pub fn is_valid_pattern(p: &str) -> bool {
    if p.is_empty() || p.len() > SYSCTL_MAX_LENGTH {
        return false;
    }
    let segments: Vec<&str> = p.split(['.', '/']).collect();
    let (last, init) = segments.split_last().expect("split yields at least one item");
    init.iter().all(|s| is_segment(s)) && is_pattern_segment(last)
}

/// The running kernel's (major, minor), read once.
fn kernel_version() -> Option<(u32, u32)> {
    static VERSION: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
        parse_kernel_version(&release)
    })
}

fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// The safe sysctls this kernel has (`SafeSysctlAllowlist`; sysctls newer than the kernel are
/// left out, as the kubelet does).
pub fn safe_sysctls(kernel: Option<(u32, u32)>) -> Vec<String> {
    SAFE_SYSCTLS
        .iter()
        .filter(|(_, min)| min.is_none_or(|m| kernel.is_some_and(|k| k >= m)))
        .map(|(n, _)| n.to_string())
        .collect()
}

/// `patternAllowlist`: exact names and prefixes with their namespaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist {
    sysctls: BTreeMap<String, Namespace>,
    prefixes: BTreeMap<String, Namespace>,
}

impl Allowlist {
    /// `NewAllowlist(patterns)`; every pattern must be valid and namespaced.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Allowlist, SysctlError> {
        let mut w = Allowlist::default();
        for p in patterns {
            let p = p.as_ref();
            if !is_valid_pattern(p) {
                return Err(SysctlError::InvalidPattern(p.to_string()));
            }
            let p = to_dots(p);
            if let Some(prefix) = p.strip_suffix('*') {
                let ns = namespaced_by(prefix).ok_or_else(|| SysctlError::NotNamespaced(p.clone()))?;
                w.prefixes.insert(prefix.to_string(), ns);
            } else {
                let ns = namespaced_by(&p).ok_or_else(|| SysctlError::NotNamespaced(p.clone()))?;
                w.sysctls.insert(p, ns);
            }
        }
        Ok(w)
    }

    /// The safe set of this kernel plus `allowed_unsafe` (the kubelet's admit handler).
    pub fn for_node<S: AsRef<str>>(allowed_unsafe: &[S]) -> Result<Allowlist, SysctlError> {
        let mut all = safe_sysctls(kernel_version());
        all.extend(allowed_unsafe.iter().map(|s| s.as_ref().to_string()));
        Allowlist::new(&all)
    }

    /// `validateSysctl`: the error text the kubelet puts after "forbidden sysctl: ".
    pub fn validate(&self, sysctl: &str, host_net: bool, host_ipc: bool) -> Result<(), String> {
        let sysctl = to_dots(sysctl);
        let ns = self.sysctls.get(&sysctl).copied().or_else(|| {
            self.prefixes
                .iter()
                .find(|(p, _)| sysctl.starts_with(p.as_str()))
                .map(|(_, ns)| *ns)
        });
        match ns {
            None => Err(format!("{sysctl:?} not allowlisted")),
            Some(ns) if (ns == Namespace::Ipc && host_ipc) || (ns == Namespace::Net && host_net) => {
                Err(format!("{sysctl:?} not allowed with host {} enabled", ns.as_str()))
            }
            Some(_) => Ok(()),
        }
    }

    /// `Admit`: the first forbidden sysctl of the pod, as the kubelet's message.
    pub fn admit(&self, pod: &Pod) -> Result<(), String> {
        let Some(spec) = pod.spec.as_ref() else { return Ok(()) };
        let sysctls = spec.security_context.as_ref().and_then(|s| s.sysctls.as_ref());
        for s in sysctls.into_iter().flatten() {
            self.validate(
                &s.name,
                spec.host_network.unwrap_or(false),
                spec.host_ipc.unwrap_or(false),
            )
            .map_err(|e| format!("forbidden sysctl: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The kubelet's allowlist_test.go and namespace_test.go tables.
    use super::*;
    use k8s_openapi::api::core::v1::{PodSecurityContext, PodSpec, Sysctl};

    const KERNEL: Option<(u32, u32)> = Some((6, 1));

    fn safe_plus(extra: &[&str]) -> Result<Allowlist, SysctlError> {
        let mut all = safe_sysctls(KERNEL);
        all.extend(extra.iter().map(|s| s.to_string()));
        Allowlist::new(&all)
    }

    #[test]
    fn new_allowlist() {
        let cases: &[(&[&str], bool)] = &[
            (&["kernel.msg*", "kernel.sem"], true),
            (&["kernel/msg*", "kernel/sem"], true),
            (&[" kernel.msg*"], false),
            (&["kernel.msg* "], false),
            (&["net.-"], false),
            (&["net.*.foo"], false),
            (&["net.*/foo"], false),
            (&["foo"], false),
            (&["foo*"], false),
        ];
        for (sysctls, ok) in cases {
            assert_eq!(safe_plus(sysctls).is_ok(), *ok, "{sysctls:?}");
        }
        assert_eq!(
            Allowlist::new(&["vm.swappiness"]).unwrap_err().to_string(),
            "the sysctls \"vm.swappiness\" are not known to be namespaced"
        );
    }

    fn pod(sysctl: &str, host_net: bool, host_ipc: bool) -> Pod {
        Pod {
            spec: Some(PodSpec {
                host_network: Some(host_net),
                host_ipc: Some(host_ipc),
                security_context: Some(PodSecurityContext {
                    sysctls: Some(vec![Sysctl {
                        name: sysctl.into(),
                        value: sysctl.into(),
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn allowlist() {
        let w = safe_plus(&["kernel.msg*", "kernel.sem", "net.b.*"]).unwrap();
        let valid = [
            ("kernel.shm_rmid_forced", false, false),
            ("kernel/shm_rmid_forced", false, false),
            ("net.ipv4.ip_local_port_range", false, false),
            ("kernel.msgmax", false, false),
            ("kernel.sem", false, false),
            ("kernel/sem", false, false),
        ];
        let invalid = [
            ("kernel.shm_rmid_forced", false, true),
            ("net.ipv4.ip_local_port_range", true, false),
            ("foo", false, false),
            ("net.a.b.c", false, false),
            ("net.ipv4.ip_local_port_range.a.b.c", false, false),
            ("kernel.msgmax", false, true),
            ("kernel.sem", false, true),
            ("net.b.c", true, false),
        ];
        for (s, net, ipc) in valid {
            assert_eq!(w.validate(s, net, ipc), Ok(()), "{s}");
            assert_eq!(w.admit(&pod(s, net, ipc)), Ok(()), "{s}");
        }
        for (s, net, ipc) in invalid {
            assert!(w.validate(s, net, ipc).is_err(), "{s}");
            assert!(w.admit(&pod(s, net, ipc)).is_err(), "{s}");
        }
        // No sysctls, or no security context: admitted.
        assert_eq!(w.admit(&Pod::default()), Ok(()));
        assert_eq!(
            w.admit(&pod("net.ipv4.tcp_congestion_control", false, false)),
            Err("forbidden sysctl: \"net.ipv4.tcp_congestion_control\" not allowlisted".into())
        );
        assert_eq!(
            w.admit(&pod("net.ipv4.ip_local_port_range", true, false)),
            Err("forbidden sysctl: \"net.ipv4.ip_local_port_range\" not allowed with host net enabled".into())
        );
        assert_eq!(
            w.admit(&pod("kernel/shm_rmid_forced", false, true)),
            Err("forbidden sysctl: \"kernel.shm_rmid_forced\" not allowed with host ipc enabled".into())
        );
    }

    #[test]
    fn namespaces_and_separators() {
        assert_eq!(namespaced_by("kernel.shm_rmid_forced"), Some(Namespace::Ipc));
        assert_eq!(namespaced_by("kernel.msgmax"), Some(Namespace::Ipc));
        assert_eq!(namespaced_by("kernel.sem"), Some(Namespace::Ipc));
        assert_eq!(namespaced_by("kernel.semx"), None);
        assert_eq!(namespaced_by("fs.mqueue.msg_max"), Some(Namespace::Ipc));
        assert_eq!(namespaced_by("net.core.somaxconn"), Some(Namespace::Net));
        assert_eq!(namespaced_by("vm.swappiness"), None);
        assert_eq!(to_dots("kernel/shm_rmid_forced"), "kernel.shm_rmid_forced");
        assert_eq!(
            to_dots("net/ipv4/conf/eno2.100/rp_filter"),
            "net.ipv4.conf.eno2/100.rp_filter"
        );
        assert_eq!(
            to_dots("net.ipv4.conf.eno2/100.rp_filter"),
            "net.ipv4.conf.eno2/100.rp_filter"
        );
    }

    #[test]
    fn safe_set_depends_on_the_kernel() {
        let all = safe_sysctls(KERNEL);
        assert_eq!(all.len(), SAFE_SYSCTLS.len());
        let old = safe_sysctls(Some((4, 4)));
        assert!(old.contains(&"net.ipv4.ip_local_reserved_ports".to_string()));
        assert!(!old.contains(&"net.ipv4.tcp_keepalive_time".to_string()));
        assert_eq!(safe_sysctls(None).len(), 5);
        assert_eq!(parse_kernel_version("6.1.0-18-amd64\n"), Some((6, 1)));
        assert_eq!(parse_kernel_version("4.15"), Some((4, 15)));
    }
}
