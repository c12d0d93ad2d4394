//! Registry hosts: containerd's `certs.d/<host>/hosts.toml` (`[ctrd] docs/hosts.md`,
//! `remotes/docker/config/hosts.go`): mirrors tried in order, then `server`; per-host
//! capabilities, `skip_verify`, `ca`, and plain HTTP by URL scheme.

use std::path::{Path, PathBuf};

/// Errors reading a hosts.toml.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to decode hosts.toml {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// What a host may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    pub pull: bool,
    pub resolve: bool,
}

impl Capabilities {
    const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
    };
}

/// One place to fetch from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]`.
    pub host: String,
    pub plain_http: bool,
    pub skip_verify: bool,
    pub capabilities: Capabilities,
    /// PEM files of extra CAs.
    pub ca: Vec<PathBuf>,
}

/// The default when nothing is configured: `docker.io` is `registry-1.docker.io`, loopback
/// hosts speak plain HTTP (unless on 443), everything else HTTPS.
pub fn default_endpoint(domain: &str) -> Endpoint {
    let host = if domain == "docker.io" {
        "registry-1.docker.io".to_string()
    } else {
        domain.to_string()
    };
    Endpoint {
        plain_http: is_local(&host),
        host,
        skip_verify: false,
        capabilities: Capabilities::ALL,
        ca: vec![],
    }
}

fn is_local(host: &str) -> bool {
    let (name, port) = split_port(host);
    matches!(name, "localhost" | "127.0.0.1" | "::1" | "[::1]") && port != Some("443")
}

fn split_port(host: &str) -> (&str, Option<&str>) {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once(']') {
            return (h, p.strip_prefix(':'));
        }
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (host, None),
    }
}

fn parse_url(url: &str) -> (String, bool) {
    let (plain, rest) = if let Some(r) = url.strip_prefix("http://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (false, r)
    } else {
        (false, url)
    };
    // Only `/v2` (or nothing) is supported as the path; the host is what matters.
    let host = rest.split('/').next().unwrap_or(rest).to_string();
    (host, plain)
}

fn strings(v: Option<&toml::Value>) -> Option<Vec<String>> {
    match v? {
        toml::Value::String(s) => Some(vec![s.clone()]),
        toml::Value::Array(a) => Some(a.iter().filter_map(|x| x.as_str().map(String::from)).collect()),
        _ => None,
    }
}

fn endpoint_from(url: &str, t: &toml::Table, base: &Path) -> Endpoint {
    let (host, plain) = parse_url(url);
    let capabilities = match strings(t.get("capabilities")) {
        Some(c) => Capabilities {
            pull: c.iter().any(|x| x == "pull"),
            resolve: c.iter().any(|x| x == "resolve"),
        },
        None => Capabilities::ALL,
    };
    let ca = strings(t.get("ca"))
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let p = PathBuf::from(p);
            if p.is_absolute() {
                p
            } else {
                base.join(p)
            }
        })
        .collect();
    Endpoint {
        plain_http: plain || (!url.contains("://") && is_local(&host)),
        host,
        skip_verify: t.get("skip_verify").and_then(|v| v.as_bool()).unwrap_or(false),
        capabilities,
        ca,
    }
}

/// Parses one hosts.toml for `domain`: the `[host."…"]` entries in file order, then `server`
/// (or the default upstream when `server` is absent).
pub fn parse_hosts(domain: &str, text: &str, path: &Path) -> Result<Vec<Endpoint>, HostsError> {
    let t: toml::Table = text.parse().map_err(|e: toml::de::Error| HostsError::Parse {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new("/"));
    let mut out = Vec::new();
    if let Some(hosts) = t.get("host").and_then(|h| h.as_table()) {
        for (url, v) in hosts {
            let Some(ht) = v.as_table() else {
                return Err(HostsError::Parse {
                    path: path.to_path_buf(),
                    message: format!("host {url:?} is not a table"),
                });
            };
            out.push(endpoint_from(url, ht, base));
        }
    }
    match t.get("server").and_then(|s| s.as_str()) {
        Some(server) => out.push(endpoint_from(server, &t, base)),
        None => {
            let mut d = default_endpoint(domain);
            d.skip_verify = t.get("skip_verify").and_then(|v| v.as_bool()).unwrap_or(false);
            out.push(d);
        }
    }
    Ok(out)
}

/// The hosts configuration directory (`--registry-config-dir`).
#[derive(Debug, Clone, Default)]
pub struct HostsConfig {
    pub dir: Option<PathBuf>,
}

impl HostsConfig {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    /// Endpoints to try for `domain`, in order.
    pub fn endpoints(&self, domain: &str) -> Result<Vec<Endpoint>, HostsError> {
        let Some(dir) = &self.dir else {
            return Ok(vec![default_endpoint(domain)]);
        };
        // containerd also looks up `host_port` for `host:port` directories (Windows-friendly).
        let candidates = [
            dir.join(domain).join("hosts.toml"),
            dir.join(domain.replace(':', "_")).join("hosts.toml"),
            dir.join("_default").join("hosts.toml"),
        ];
        for p in candidates {
            match std::fs::read_to_string(&p) {
                Ok(text) => return parse_hosts(domain, &text, &p),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(HostsError::Read { path: p, source }),
            }
        }
        Ok(vec![default_endpoint(domain)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_in_order_then_server() {
        let text = r#"
server = "https://registry.example:5000"

[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]

[host."https://mirror.internal"]
  capabilities = ["pull"]
  skip_verify = true
  ca = "ca.pem"
"#;
        let eps = parse_hosts(
            "registry.example:5000",
            text,
            Path::new("/etc/keel/certs.d/r/hosts.toml"),
        )
        .unwrap();
        assert_eq!(eps.len(), 3);
        assert_eq!(eps[0].host, "127.0.0.1:5000");
        assert!(eps[0].plain_http);
        assert_eq!(eps[0].capabilities, Capabilities::ALL);
        assert_eq!(eps[1].host, "mirror.internal");
        assert!(!eps[1].plain_http && eps[1].skip_verify);
        assert_eq!(
            eps[1].capabilities,
            Capabilities {
                pull: true,
                resolve: false
            }
        );
        assert_eq!(eps[1].ca, vec![PathBuf::from("/etc/keel/certs.d/r/ca.pem")]);
        assert_eq!(eps[2].host, "registry.example:5000");
        assert!(!eps[2].skip_verify);
    }

    #[test]
    fn defaults_without_server() {
        let eps = parse_hosts("docker.io", "[host.\"http://127.0.0.1:5000\"]\n", Path::new("x")).unwrap();
        assert_eq!(eps[1].host, "registry-1.docker.io");
        assert!(!eps[1].plain_http);
        assert!(default_endpoint("localhost:5000").plain_http);
        assert!(default_endpoint("127.0.0.1:5000").plain_http);
        assert!(!default_endpoint("127.0.0.1:443").plain_http);
        assert!(!default_endpoint("quay.io").plain_http);
        assert!(parse_hosts("x", "server = [", Path::new("x")).is_err());
    }

    #[test]
    fn lookup_in_dir_with_default_fallback() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("docker.io")).unwrap();
        std::fs::write(
            dir.path().join("docker.io/hosts.toml"),
            "server = \"https://registry-1.docker.io\"\n[host.\"http://127.0.0.1:5001\"]\ncapabilities = [\"pull\", \"resolve\"]\n",
        )
        .unwrap();
        let cfg = HostsConfig::new(Some(dir.path().to_path_buf()));
        let eps = cfg.endpoints("docker.io").unwrap();
        assert_eq!(eps[0].host, "127.0.0.1:5001");
        assert_eq!(cfg.endpoints("quay.io").unwrap(), vec![default_endpoint("quay.io")]);
        std::fs::create_dir_all(dir.path().join("_default")).unwrap();
        std::fs::write(dir.path().join("_default/hosts.toml"), "skip_verify = true\n").unwrap();
        assert!(cfg.endpoints("quay.io").unwrap()[0].skip_verify);
        assert!(HostsConfig::default().endpoints("docker.io").unwrap()[0].host == "registry-1.docker.io");
    }
}
