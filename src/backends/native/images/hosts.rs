//! Registry hosts: containerd's `certs.d/<host>/hosts.toml` (`[ctrd] docs/hosts.md`,
//! `remotes/docker/config/hosts.go`): mirrors tried in order, then `server`; per-host
//! capabilities, `skip_verify`, `ca`, `client` certificates, `[header]`, `override_path`, and
//! plain HTTP by URL scheme.

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
    /// The API's URL path: `/v2`, or below the host URL's own path (`/mirror/v2`); with
    /// `override_path` the host URL's path as written.
    pub path: String,
    /// `[header]`: sent with every request to this host (a name may repeat).
    pub headers: Vec<(String, String)>,
    /// `client`: certificate files, each with its key file (`None`: the key is in the same file).
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
}

/// The API path every registry has unless configured otherwise.
pub const API_PATH: &str = "/v2";

impl Endpoint {
    /// Needs more than oci-client offers (it always speaks `/v2` with its own headers and no
    /// client certificate).
    pub fn needs_direct_client(&self) -> bool {
        self.path != API_PATH || !self.headers.is_empty() || !self.client.is_empty()
    }
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
        path: API_PATH.to_string(),
        headers: vec![],
        client: vec![],
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

/// `(host, plain http, URL path)` of a host URL.
fn parse_url(url: &str) -> (String, bool, String) {
    let (plain, rest) = if let Some(r) = url.strip_prefix("http://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (false, r)
    } else {
        (false, url)
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    (host.to_string(), plain, path.to_string())
}

/// containerd's rule: no path is `/v2`; a path not ending in `/v2` gets it appended unless
/// `override_path` says the path is the API's as written.
fn api_path(path: &str, override_path: bool) -> String {
    let clean: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    if clean.is_empty() {
        return if override_path {
            String::new()
        } else {
            API_PATH.to_string()
        };
    }
    let p = format!("/{}", clean.join("/"));
    if override_path || p.ends_with(API_PATH) {
        p
    } else {
        format!("{p}{API_PATH}")
    }
}

fn relative_to(base: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

/// `[header]`: a string or a list of strings per name.
fn headers(t: &toml::Table) -> Result<Vec<(String, String)>, String> {
    let Some(h) = t.get("header") else { return Ok(vec![]) };
    let h = h.as_table().ok_or("header must be a table")?;
    let mut out = vec![];
    for (name, v) in h {
        let values = strings(Some(v)).ok_or_else(|| format!("header {name:?}: not a string or a list of strings"))?;
        out.extend(values.into_iter().map(|v| (name.clone(), v)));
    }
    Ok(out)
}

/// `client`: `"cert.pem"`, `["cert.pem", "other.pem"]` or `[["cert.pem", "key.pem"], …]`.
fn clients(t: &toml::Table, base: &Path) -> Result<Vec<(PathBuf, Option<PathBuf>)>, String> {
    let pair = |v: &toml::Value| -> Result<(PathBuf, Option<PathBuf>), String> {
        match v {
            toml::Value::String(c) => Ok((relative_to(base, c), None)),
            toml::Value::Array(p) => {
                if p.is_empty() || p.len() > 2 {
                    return Err(format!(
                        "invalid client format, {} items (want a cert and a key)",
                        p.len()
                    ));
                }
                let s: Vec<&str> = p.iter().filter_map(|x| x.as_str()).collect();
                if s.len() != p.len() {
                    return Err("client pairs must be strings".into());
                }
                Ok((relative_to(base, s[0]), s.get(1).map(|k| relative_to(base, k))))
            }
            _ => Err("client must be a string or a list".into()),
        }
    };
    match t.get("client") {
        None => Ok(vec![]),
        Some(toml::Value::Array(a)) => a.iter().map(pair).collect(),
        Some(v) => Ok(vec![pair(v)?]),
    }
}

fn strings(v: Option<&toml::Value>) -> Option<Vec<String>> {
    match v? {
        toml::Value::String(s) => Some(vec![s.clone()]),
        toml::Value::Array(a) => Some(a.iter().filter_map(|x| x.as_str().map(String::from)).collect()),
        _ => None,
    }
}

fn endpoint_from(url: &str, t: &toml::Table, base: &Path) -> Result<Endpoint, String> {
    let (host, plain, path) = parse_url(url);
    let capabilities = match strings(t.get("capabilities")) {
        Some(c) => Capabilities {
            pull: c.iter().any(|x| x == "pull"),
            resolve: c.iter().any(|x| x == "resolve"),
        },
        None => Capabilities::ALL,
    };
    let ca = strings(t.get("ca"))
        .unwrap_or_default()
        .iter()
        .map(|p| relative_to(base, p))
        .collect();
    let override_path = t.get("override_path").and_then(|v| v.as_bool()).unwrap_or(false);
    Ok(Endpoint {
        plain_http: plain || (!url.contains("://") && is_local(&host)),
        host,
        skip_verify: t.get("skip_verify").and_then(|v| v.as_bool()).unwrap_or(false),
        capabilities,
        ca,
        path: api_path(&path, override_path),
        headers: headers(t)?,
        client: clients(t, base)?,
    })
}

/// Parses one hosts.toml for `domain`: the `[host."…"]` entries in file order, then `server`
/// (or the default upstream when `server` is absent).
pub fn parse_hosts(domain: &str, text: &str, path: &Path) -> Result<Vec<Endpoint>, HostsError> {
    let t: toml::Table = text.parse().map_err(|e: toml::de::Error| HostsError::Parse {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new("/"));
    let bad = |message: String| HostsError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let mut out = Vec::new();
    if let Some(hosts) = t.get("host").and_then(|h| h.as_table()) {
        for (url, v) in hosts {
            let Some(ht) = v.as_table() else {
                return Err(bad(format!("host {url:?} is not a table")));
            };
            out.push(endpoint_from(url, ht, base).map_err(|m| bad(format!("host {url:?}: {m}")))?);
        }
    }
    // The top level configures `server` (or the default upstream) like a `[host]` table.
    let server = match t.get("server").and_then(|s| s.as_str()) {
        Some(server) => server.to_string(),
        None => {
            let d = default_endpoint(domain);
            format!("{}://{}", if d.plain_http { "http" } else { "https" }, d.host)
        }
    };
    out.push(endpoint_from(&server, &t, base).map_err(bad)?);
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
    fn override_path_headers_and_client_certificates() {
        let text = r#"
server = "https://registry.example"
client = [["/etc/pki/client.cert", "client.key"], "both.pem"]
[header]
  x-custom = "top"

[host."https://mirror.internal/mirror"]
  override_path = true
  [host."https://mirror.internal/mirror".header]
    authorization = "Basic a2VlbDpzM2NyZXQ="
    x-tags = ["a", "b"]

[host."https://cache.internal/proxy"]
  client = "cache.pem"

[host."http://127.0.0.1:5000/base/v2"]
"#;
        let eps = parse_hosts("registry.example", text, Path::new("/etc/keel/certs.d/r/hosts.toml")).unwrap();
        assert_eq!(eps.len(), 4);
        // override_path: the URL's path is the API's, as written.
        assert_eq!(eps[0].host, "mirror.internal");
        assert_eq!(eps[0].path, "/mirror");
        assert_eq!(
            eps[0].headers,
            vec![
                ("authorization".to_string(), "Basic a2VlbDpzM2NyZXQ=".to_string()),
                ("x-tags".to_string(), "a".to_string()),
                ("x-tags".to_string(), "b".to_string()),
            ]
        );
        assert!(eps[0].client.is_empty());
        assert!(eps[0].needs_direct_client());
        // Without it, `/v2` goes below the path (and is not doubled).
        assert_eq!(eps[1].path, "/proxy/v2");
        assert_eq!(
            eps[1].client,
            vec![(PathBuf::from("/etc/keel/certs.d/r/cache.pem"), None)]
        );
        assert_eq!(eps[2].path, "/base/v2");
        assert!(eps[2].plain_http && eps[2].needs_direct_client());
        // The top level configures the server.
        assert_eq!(eps[3].host, "registry.example");
        assert_eq!(eps[3].path, "/v2");
        assert_eq!(eps[3].headers, vec![("x-custom".to_string(), "top".to_string())]);
        assert_eq!(
            eps[3].client,
            vec![
                (
                    PathBuf::from("/etc/pki/client.cert"),
                    Some(PathBuf::from("/etc/keel/certs.d/r/client.key"))
                ),
                (PathBuf::from("/etc/keel/certs.d/r/both.pem"), None),
            ]
        );
        // A plain host needs nothing oci-client lacks.
        let plain = parse_hosts("x", "server = \"https://x/v2\"\n", Path::new("h")).unwrap();
        assert_eq!(plain[0].path, "/v2");
        assert!(!plain[0].needs_direct_client());
        // Malformed values are errors naming the host.
        let err = parse_hosts(
            "x",
            "[host.\"https://m\"]\nclient = [[\"a\", \"b\", \"c\"]]\n",
            Path::new("h"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("host \"https://m\"") && err.contains("3 items"), "{err}");
        assert!(parse_hosts("x", "[header]\nx = 1\n", Path::new("h")).is_err());
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
