//! Host facts for node status: machine info (/proc, /sys, /etc, statvfs) and the node IP. No
//! subprocesses. The parsers are pure functions over file contents so they can be tested without touching the host.

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::path::{Path, PathBuf};

/// Reading host facts failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeInfoError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("statvfs of {path}: {source}")]
    Statvfs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("invalid --node-ip {ip}: {reason}")]
    InvalidNodeIp { ip: IpAddr, reason: String },
}

/// Static facts about the machine (gathered at start and re-read every status update, since
/// e.g. the boot id is how the kubelet notices a reboot).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostFacts {
    pub hostname: String,
    /// Online CPUs.
    pub cpus: u32,
    pub memory_bytes: u64,
    /// Capacity of the filesystem holding the root dir.
    pub ephemeral_storage_bytes: u64,
    pub kernel_version: String,
    pub os_image: String,
    /// Go's GOOS.
    pub operating_system: String,
    /// Go's GOARCH.
    pub architecture: String,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    /// Huge page size in bytes → pages preallocated (`/sys/kernel/mm/hugepages`).
    pub hugepages: BTreeMap<u64, u64>,
}

fn read(path: &str) -> Result<String, NodeInfoError> {
    fs::read_to_string(path).map_err(|source| NodeInfoError::Read {
        path: PathBuf::from(path),
        source,
    })
}

fn parse_err(path: &str, message: impl Into<String>) -> NodeInfoError {
    NodeInfoError::Parse {
        path: PathBuf::from(path),
        message: message.into(),
    }
}

/// Counts CPUs in a kernel cpu list (`/sys/devices/system/cpu/online`): `0-3,6,8-9` → 7.
pub fn parse_cpu_list(s: &str) -> Option<u32> {
    let mut n: u32 = 0;
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: u32 = a.trim().parse().ok()?;
                let b: u32 = b.trim().parse().ok()?;
                if b < a {
                    return None;
                }
                n = n.checked_add(b - a + 1)?;
            }
            None => {
                part.trim().parse::<u32>().ok()?;
                n = n.checked_add(1)?;
            }
        }
    }
    (n > 0).then_some(n)
}

/// A `/proc/meminfo` field in bytes (the file says kB, meaning KiB).
pub fn parse_meminfo(s: &str, field: &str) -> Option<u64> {
    s.lines().find_map(|line| {
        let (k, rest) = line.split_once(':')?;
        if k.trim() != field {
            return None;
        }
        let mut it = rest.split_whitespace();
        let v: u64 = it.next()?.parse().ok()?;
        match it.next() {
            Some("kB") => v.checked_mul(1024),
            None => Some(v),
            Some(_) => None,
        }
    })
}

/// PRETTY_NAME of an os-release file, unquoted; "Linux" like the kubelet when absent.
pub fn parse_os_release(s: &str) -> String {
    s.lines()
        .find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))
        .map(|v| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            v.replace("\\\"", "\"")
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "Linux".to_string())
}

/// Rust's target arch → Go's GOARCH (what `kubernetes.io/arch` and nodeInfo carry).
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        "mips64" => "mips64le",
        other => other,
    }
}

/// Total tasks from `/proc/loadavg` (`0.00 0.01 0.05 1/234 5678` → 234).
pub fn parse_loadavg_tasks(s: &str) -> Option<u64> {
    s.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok()
}

/// Page size in bytes from a `/sys/kernel/mm/hugepages` entry name (`hugepages-2048kB`).
pub fn parse_hugepage_dir(name: &str) -> Option<u64> {
    let kb: u64 = name.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()?;
    kb.checked_mul(1024).filter(|b| *b > 0)
}

/// Huge page sizes and counts; empty when the kernel has none.
fn read_hugepages() -> BTreeMap<u64, u64> {
    const DIR: &str = "/sys/kernel/mm/hugepages";
    let Ok(entries) = fs::read_dir(DIR) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let size = parse_hugepage_dir(e.file_name().to_str()?)?;
            let count = read_trimmed_opt(e.path().join("nr_hugepages").to_str()?)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Some((size, count))
        })
        .collect()
}

/// Local IPv4 addresses from `/proc/net/fib_trie` (the `/32 host LOCAL` leaves), in order,
/// without duplicates.
pub fn parse_fib_trie_local(s: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in s.lines() {
        let t = line.trim();
        if let Some(ip) = t.strip_prefix("|-- ") {
            last = ip.trim().parse().ok();
        } else if t.contains("host LOCAL") {
            if let Some(ip) = last {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

/// Local IPv6 addresses from `/proc/net/if_inet6`.
pub fn parse_if_inet6(s: &str) -> Vec<Ipv6Addr> {
    s.lines()
        .filter_map(|l| {
            let hex = l.split_whitespace().next()?;
            if hex.len() != 32 {
                return None;
            }
            let v = u128::from_str_radix(hex, 16).ok()?;
            Some(Ipv6Addr::from(v))
        })
        .collect()
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => v.is_link_local(),
        IpAddr::V6(v) => (v.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Whether an address can be a node address at all (§3.2 `validateNodeIP`).
pub fn check_node_ip_kind(ip: &IpAddr) -> Result<(), String> {
    if ip.is_loopback() {
        return Err("nodeIP can't be loopback address".into());
    }
    if ip.is_multicast() {
        return Err("nodeIP can't be a multicast address".into());
    }
    if is_link_local(ip) {
        return Err("nodeIP can't be a link-local address".into());
    }
    if ip.is_unspecified() {
        return Err("nodeIP can't be an all zeros address".into());
    }
    Ok(())
}

/// Validates `--node-ip` against the local addresses (§3.2).
pub fn validate_node_ip(ip: IpAddr, local: &[IpAddr]) -> Result<IpAddr, NodeInfoError> {
    check_node_ip_kind(&ip).map_err(|reason| NodeInfoError::InvalidNodeIp { ip, reason })?;
    if !local.contains(&ip) {
        return Err(NodeInfoError::InvalidNodeIp {
            ip,
            reason: "node IP not found in the host's network interfaces".into(),
        });
    }
    Ok(ip)
}

/// The node IP without `--node-ip`: the source address the kernel would use for the default
/// route if it is a valid node address, else the first valid local IPv4, else 127.0.0.1.
pub fn pick_node_ip(default_route_src: Option<IpAddr>, local: &[IpAddr]) -> IpAddr {
    if let Some(ip) = default_route_src.filter(|ip| check_node_ip_kind(ip).is_ok() && local.contains(ip)) {
        return ip;
    }
    local
        .iter()
        .find(|ip| ip.is_ipv4() && check_node_ip_kind(ip).is_ok())
        .copied()
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The host's local addresses (IPv4 then IPv6), from /proc; empty when unreadable.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = fs::read_to_string("/proc/net/fib_trie")
        .map(|s| parse_fib_trie_local(&s).into_iter().map(IpAddr::V4).collect())
        .unwrap_or_default();
    if let Ok(s) = fs::read_to_string("/proc/net/if_inet6") {
        out.extend(parse_if_inet6(&s).into_iter().map(IpAddr::V6));
    }
    out
}

/// The source address of the default IPv4 route. `connect` on a UDP socket only asks the
/// kernel for a route: no packet is sent.
fn default_route_source() -> Option<IpAddr> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    sock.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

/// The node IP: `--node-ip` validated, else discovered.
pub fn resolve_node_ip(configured: Option<IpAddr>) -> Result<IpAddr, NodeInfoError> {
    let mut local = local_addresses();
    match configured {
        Some(ip) => {
            // Where /proc/net does not list it (some sandboxes), binding proves the address is
            // local without sending anything.
            if !local.contains(&ip) && UdpSocket::bind((ip, 0)).is_ok() {
                local.push(ip);
            }
            validate_node_ip(ip, &local)
        }
        None => Ok(pick_node_ip(default_route_source(), &local)),
    }
}

/// statvfs of `path`, or of its nearest existing ancestor (the root dir may not exist yet).
fn statvfs_nearest(path: &Path) -> Result<nix::sys::statvfs::Statvfs, NodeInfoError> {
    let mut p = path;
    loop {
        if p.exists() {
            return nix::sys::statvfs::statvfs(p).map_err(|source| NodeInfoError::Statvfs {
                path: p.to_path_buf(),
                source,
            });
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => {
                return nix::sys::statvfs::statvfs("/").map_err(|source| NodeInfoError::Statvfs {
                    path: PathBuf::from("/"),
                    source,
                })
            }
        }
    }
}

fn read_trimmed_opt(path: &str) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Reads the machine facts. `hostname` is the node's hostname (the node name, as with the
/// kubelet's `--hostname-override`); `root_dir` picks the filesystem for ephemeral storage.
// statvfs field types differ between platforms (u32 on some 32-bit targets).
#[allow(clippy::unnecessary_cast)]
pub fn gather(hostname: &str, root_dir: &Path) -> Result<HostFacts, NodeInfoError> {
    const ONLINE: &str = "/sys/devices/system/cpu/online";
    const MEMINFO: &str = "/proc/meminfo";
    let cpus = match fs::read_to_string(ONLINE).ok().and_then(|s| parse_cpu_list(&s)) {
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
    };
    let meminfo = read(MEMINFO)?;
    let memory_bytes = parse_meminfo(&meminfo, "MemTotal").ok_or_else(|| parse_err(MEMINFO, "no MemTotal line"))?;
    let fs = statvfs_nearest(root_dir)?;
    let ephemeral_storage_bytes = (fs.blocks() as u64).saturating_mul(fs.fragment_size() as u64);
    let kernel_version = read_trimmed_opt("/proc/sys/kernel/osrelease").unwrap_or_default();
    let os_image = fs::read_to_string("/etc/os-release")
        .or_else(|_| fs::read_to_string("/usr/lib/os-release"))
        .map(|s| parse_os_release(&s))
        .unwrap_or_else(|_| "Linux".to_string());
    let machine_id = read_trimmed_opt("/etc/machine-id")
        .or_else(|| read_trimmed_opt("/var/lib/dbus/machine-id"))
        .unwrap_or_default();
    let system_uuid = read_trimmed_opt("/sys/class/dmi/id/product_uuid").unwrap_or_else(|| machine_id.clone());
    let boot_id = read_trimmed_opt("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    Ok(HostFacts {
        hostname: hostname.to_string(),
        cpus,
        memory_bytes,
        ephemeral_storage_bytes,
        kernel_version,
        os_image,
        operating_system: std::env::consts::OS.to_string(),
        architecture: go_arch(std::env::consts::ARCH).to_string(),
        machine_id,
        system_uuid,
        boot_id,
        hugepages: read_hugepages(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3\n"), Some(4));
        assert_eq!(parse_cpu_list("0-3,6,8-9"), Some(7));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    const MEMINFO: &str = "MemTotal:       16314368 kB\nMemFree:         1234567 kB\nMemAvailable:    8157184 kB\nHugePages_Total:       0\n";

    #[test]
    fn meminfo() {
        assert_eq!(parse_meminfo(MEMINFO, "MemTotal"), Some(16314368 * 1024));
        assert_eq!(parse_meminfo(MEMINFO, "MemAvailable"), Some(8157184 * 1024));
        assert_eq!(parse_meminfo(MEMINFO, "HugePages_Total"), Some(0));
        assert_eq!(parse_meminfo(MEMINFO, "Mem"), None);
        assert_eq!(parse_meminfo("MemTotal: lots kB", "MemTotal"), None);
    }

    #[test]
    fn os_release() {
        let s = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(parse_os_release(s), "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(parse_os_release("PRETTY_NAME=Alpine\n"), "Alpine");
        assert_eq!(parse_os_release("PRETTY_NAME='Fedora 40'"), "Fedora 40");
        assert_eq!(parse_os_release("ID=x\n"), "Linux");
    }

    #[test]
    fn arches() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("s390x"), "s390x");
    }

    #[test]
    fn hugepage_dirs() {
        assert_eq!(parse_hugepage_dir("hugepages-2048kB"), Some(2 << 20));
        assert_eq!(parse_hugepage_dir("hugepages-1048576kB"), Some(1 << 30));
        assert_eq!(parse_hugepage_dir("hugepages-0kB"), None);
        assert_eq!(parse_hugepage_dir("other"), None);
    }

    #[test]
    fn loadavg() {
        assert_eq!(parse_loadavg_tasks("0.00 0.01 0.05 1/234 5678\n"), Some(234));
        assert_eq!(parse_loadavg_tasks("garbage"), None);
    }

    const FIB_TRIE: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.0.0.0/24 2 0 2
        |-- 10.0.0.0
           /24 link UNICAST
        |-- 10.0.0.5
           /32 host LOCAL
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
        |-- 10.0.0.5
           /32 host LOCAL
        |-- 10.0.0.255
           /32 link BROADCAST
        |-- 127.0.0.1
           /32 host LOCAL
";

    #[test]
    fn fib_trie_and_inet6() {
        assert_eq!(
            parse_fib_trie_local(FIB_TRIE),
            vec![Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(127, 0, 0, 1)]
        );
        let inet6 = "00000000000000000000000000000001 01 80 10 80       lo\nfe800000000000000000000000000001 02 40 20 80     eth0\nbad\n";
        assert_eq!(
            parse_if_inet6(inet6),
            vec![Ipv6Addr::LOCALHOST, "fe80::1".parse::<Ipv6Addr>().unwrap()]
        );
    }

    #[test]
    fn node_ip_validation() {
        let local: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "10.0.0.5".parse().unwrap()];
        assert!(validate_node_ip("10.0.0.5".parse().unwrap(), &local).is_ok());
        for (ip, want) in [
            ("127.0.0.1", "loopback"),
            ("224.0.0.1", "multicast"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("0.0.0.0", "all zeros"),
            ("10.0.0.6", "not found"),
        ] {
            let e = validate_node_ip(ip.parse().unwrap(), &local).unwrap_err();
            assert!(e.to_string().contains(want), "{ip}: {e}");
        }
    }

    #[test]
    fn node_ip_discovery() {
        let local: Vec<IpAddr> = vec![
            "127.0.0.1".parse().unwrap(),
            "10.0.0.5".parse().unwrap(),
            "192.168.1.2".parse().unwrap(),
        ];
        assert_eq!(
            pick_node_ip(Some("192.168.1.2".parse().unwrap()), &local),
            "192.168.1.2".parse::<IpAddr>().unwrap()
        );
        // A route source that is not local (or not valid) is ignored.
        assert_eq!(
            pick_node_ip(Some("127.0.0.1".parse().unwrap()), &local),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
        assert_eq!(pick_node_ip(None, &local[..1]), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
}
