//! The per-pod files containerd's CRI plugin writes for a sandbox (`sandbox_run_linux.go
//! setupSandboxFiles`): `hostname`, `hosts` (a copy of the node's), `resolv.conf` (from the DNS
//! config, else a copy of the node's), and the pod's `/dev/shm` tmpfs.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::genericruntime::seam::cri;

/// containerd's `defaultShmSize`: 64 MiB.
pub const SHM_SIZE: u64 = 64 * 1024 * 1024;

/// The node files copied into a sandbox (overridable in tests).
#[derive(Clone, Debug)]
pub struct HostFiles {
    pub hosts: std::path::PathBuf,
    pub resolv_conf: std::path::PathBuf,
}

impl Default for HostFiles {
    fn default() -> Self {
        Self {
            hosts: "/etc/hosts".into(),
            resolv_conf: "/etc/resolv.conf".into(),
        }
    }
}

/// `resolv.conf` content for a CRI DNS config, as containerd's `parseDNSOptions` renders it:
/// `search` (one line), one `nameserver` line per server, `options` (one line). Empty when the
/// config has nothing, which means "copy the node's".
pub fn render_resolv_conf(dns: &cri::DnsConfig) -> String {
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out
}

fn write_file_0644(path: &Path, bytes: &[u8]) -> io::Result<()> {
    fs::write(path, bytes)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
}

/// Writes `hostname`, `hosts` and `resolv.conf` into `dir`. `node_hostname` is used when the
/// config has none (host-network pods).
pub fn write_sandbox_files(
    dir: &Path,
    config: &cri::PodSandboxConfig,
    host: &HostFiles,
    node_hostname: &str,
) -> io::Result<()> {
    let hostname = if config.hostname.is_empty() {
        node_hostname
    } else {
        &config.hostname
    };
    write_file_0644(&dir.join("hostname"), format!("{hostname}\n").as_bytes())?;
    let hosts =
        fs::read(&host.hosts).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", host.hosts.display())))?;
    write_file_0644(&dir.join("hosts"), &hosts)?;
    let resolv = config.dns_config.as_ref().map(render_resolv_conf).unwrap_or_default();
    let resolv = if resolv.is_empty() {
        fs::read(&host.resolv_conf)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", host.resolv_conf.display())))?
    } else {
        resolv.into_bytes()
    };
    write_file_0644(&dir.join("resolv.conf"), &resolv)
}

/// Mounts the sandbox's /dev/shm: tmpfs `mode=1777,size=64M`, noexec/nosuid/nodev, on a 0700
/// directory (containerd's options).
pub fn mount_shm(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path)?;
    let data = format!("mode=1777,size={SHM_SIZE}");
    mount(
        Some("shm"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(io::Error::from)
}

/// Whether `path` is a mounted tmpfs (the sandbox shm survived).
pub fn is_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC && path_is_mount(path))
        .unwrap_or(false)
}

/// A mount point has another device than its parent, or is listed as one (a tmpfs inside the
/// tmpfs run dir has another device too).
fn path_is_mount(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Some(Ok(parent))) = (fs::metadata(path), path.parent().map(fs::metadata)) else {
        return false;
    };
    me.dev() != parent.dev()
}

/// Unmounts (every stacked mount of) the shm dir and removes it. Idempotent.
pub fn unmount_shm(path: &Path) -> io::Result<()> {
    loop {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
            Err(e) => return Err(e.into()),
        }
    }
    match fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// containerd's `TestParseDNSOption` (pkg/cri/server/sandbox_run_linux_test.go, 1.7).
    #[test]
    fn resolv_conf_renders_like_containerd() {
        type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a [&'a str], &'a str);
        let cases: &[Case] = &[
            ("empty dns options should return empty content", &[], &[], &[], ""),
            (
                "non-empty dns options should return correct content",
                &["8.8.8.8", "server.google.com"],
                &["114.114.114.114"],
                &["timeout:1"],
                "search 114.114.114.114\nnameserver 8.8.8.8\nnameserver server.google.com\noptions timeout:1\n",
            ),
            (
                "expanded dns config should return correct content on modern libc",
                &["8.8.8.8", "server.google.com"],
                &[
                    "server0.google.com",
                    "server1.google.com",
                    "server2.google.com",
                    "server3.google.com",
                    "server4.google.com",
                    "server5.google.com",
                    "server6.google.com",
                ],
                &["timeout:1"],
                "search server0.google.com server1.google.com server2.google.com server3.google.com \
                 server4.google.com server5.google.com server6.google.com\nnameserver 8.8.8.8\n\
                 nameserver server.google.com\noptions timeout:1\n",
            ),
            (
                "options only",
                &[],
                &[],
                &["ndots:5", "edns0"],
                "options ndots:5 edns0\n",
            ),
        ];
        for (desc, servers, searches, options, want) in cases {
            let dns = cri::DnsConfig {
                servers: s(servers),
                searches: s(searches),
                options: s(options),
            };
            assert_eq!(render_resolv_conf(&dns), *want, "{desc}");
        }
    }

    /// containerd's `TestSetupSandboxFiles` cases: resolv.conf copied from the host without DNS
    /// config, written with one; hosts always copied; hostname falls back to the node's.
    #[test]
    fn sandbox_files_follow_containerd() {
        let host_dir = tempfile::tempdir().unwrap();
        let host = HostFiles {
            hosts: host_dir.path().join("hosts"),
            resolv_conf: host_dir.path().join("resolv.conf"),
        };
        fs::write(&host.hosts, "127.0.0.1 localhost\n10.0.0.5 node-a\n").unwrap();
        fs::write(&host.resolv_conf, "nameserver 10.0.0.53\n").unwrap();

        // No DNS config, no hostname (host network): node's resolv.conf and hostname.
        let dir = tempfile::tempdir().unwrap();
        write_sandbox_files(dir.path(), &cri::PodSandboxConfig::default(), &host, "node-a").unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("hostname")).unwrap(), "node-a\n");
        assert_eq!(
            fs::read_to_string(dir.path().join("hosts")).unwrap(),
            "127.0.0.1 localhost\n10.0.0.5 node-a\n"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("resolv.conf")).unwrap(),
            "nameserver 10.0.0.53\n"
        );
        let mode = fs::metadata(dir.path().join("hosts")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);

        // With DNS config and a hostname.
        let dir = tempfile::tempdir().unwrap();
        let config = cri::PodSandboxConfig {
            hostname: "web-0".into(),
            dns_config: Some(cri::DnsConfig {
                servers: s(&["10.96.0.10"]),
                searches: s(&["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]),
                options: s(&["ndots:5"]),
            }),
            ..Default::default()
        };
        write_sandbox_files(dir.path(), &config, &host, "node-a").unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("hostname")).unwrap(), "web-0\n");
        assert_eq!(
            fs::read_to_string(dir.path().join("resolv.conf")).unwrap(),
            "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );

        // An empty DNS config (dnsPolicy None with nothing set) copies the node's.
        let dir = tempfile::tempdir().unwrap();
        let config = cri::PodSandboxConfig {
            hostname: "x".into(),
            dns_config: Some(cri::DnsConfig::default()),
            ..Default::default()
        };
        write_sandbox_files(dir.path(), &config, &host, "node-a").unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("resolv.conf")).unwrap(),
            "nameserver 10.0.0.53\n"
        );

        // A missing node file is an error that names it.
        let bad = HostFiles {
            hosts: host_dir.path().join("nope"),
            ..host.clone()
        };
        let err = write_sandbox_files(dir.path(), &config, &bad, "node-a").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
