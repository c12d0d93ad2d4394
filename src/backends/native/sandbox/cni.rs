//! CNI per the spec (1.0.0), driven the way libcni and containerd's go-cni drive it: the first
//! config file of the conf dir by name (`.conf`, `.conflist`, `.json`; a single plugin is wrapped
//! into a list), plugins found in the bin dirs, ADD in order with `prevResult` chained, DEL in
//! reverse with the cached ADD result, CHECK in order; `runtimeConfig` only for the capabilities
//! a plugin declares. The ADD result is cached on disk (with the config and arguments used) so DEL
//! works after keel restarts or the node reboots.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::record::write_atomic;
use crate::genericruntime::seam::cri;

/// The loopback network containerd sets up before the pod's (`go-cni WithLoNetwork`).
pub const LOOPBACK_CONFLIST: &str = r#"{"cniVersion":"0.3.1","name":"cni-loopback","plugins":[{"type":"loopback"}]}"#;

/// A CNI failure, with the plugin's own message.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("no network config found in {0}")]
    NoConfig(String),
    #[error("{path}: {message}")]
    BadConfig { path: String, message: String },
    #[error("failed to find plugin {plugin:?} in path {path:?}")]
    PluginNotFound { plugin: String, path: Vec<PathBuf> },
    #[error("plugin type={plugin:?} name={network:?} failed ({command}): {message}")]
    Plugin {
        plugin: String,
        network: String,
        command: &'static str,
        message: String,
    },
    #[error("{0}")]
    Io(String),
}

/// A network configuration list.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfig {
    /// The file it came from ("" for built-ins).
    pub path: PathBuf,
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    pub plugins: Vec<Value>,
}

impl NetworkConfig {
    /// Parses a `.conflist` or a single-plugin `.conf`.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, CniError> {
        let bad = |message: String| CniError::BadConfig {
            path: path.display().to_string(),
            message,
        };
        let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("error parsing configuration: {e}")))?;
        let obj = v.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
        let name = obj.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let cni_version = obj
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let plugins = match obj.get("plugins") {
            Some(Value::Array(p)) => p.clone(),
            Some(_) => return Err(bad("error parsing configuration list: invalid plugins".into())),
            None => {
                if obj.get("type").and_then(Value::as_str).is_none() {
                    return Err(bad("error parsing configuration: missing 'type'".into()));
                }
                vec![v.clone()]
            }
        };
        if name.is_empty() {
            return Err(bad("error parsing configuration: missing 'name'".into()));
        }
        if plugins.is_empty() {
            return Err(bad("error parsing configuration list: no plugins in list".into()));
        }
        for p in &plugins {
            if p.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(bad("error parsing configuration list: a plugin has no 'type'".into()));
            }
        }
        let disable_check = matches!(obj.get("disableCheck"), Some(Value::Bool(true)))
            || obj.get("disableCheck").and_then(Value::as_str) == Some("true");
        Ok(Self {
            path: path.to_path_buf(),
            name,
            cni_version,
            disable_check,
            plugins,
        })
    }

    /// The first valid config file of `conf_dir` by name, its plugins all present in `bin_dirs`.
    pub fn load(conf_dir: &Path, bin_dirs: &[PathBuf]) -> Result<Self, CniError> {
        let mut files: Vec<PathBuf> = fs::read_dir(conf_dir)
            .map_err(|_| CniError::NoConfig(conf_dir.display().to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conf") | Some("conflist") | Some("json")
                )
            })
            .collect();
        files.sort();
        let mut last_err = None;
        for f in files {
            let Ok(bytes) = fs::read(&f) else { continue };
            match Self::parse(&f, &bytes) {
                Ok(cfg) => {
                    for p in &cfg.plugins {
                        find_plugin(bin_dirs, plugin_type(p))?;
                    }
                    return Ok(cfg);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| CniError::NoConfig(conf_dir.display().to_string())))
    }

    pub fn loopback() -> Self {
        Self::parse(Path::new(""), LOOPBACK_CONFLIST.as_bytes()).unwrap_or_else(|_| Self {
            path: PathBuf::new(),
            name: "cni-loopback".into(),
            cni_version: "0.3.1".into(),
            disable_check: false,
            plugins: vec![json!({"type": "loopback"})],
        })
    }

    /// The config as JSON again (for the cache).
    pub fn to_value(&self) -> Value {
        json!({
            "cniVersion": self.cni_version,
            "name": self.name,
            "disableCheck": self.disable_check,
            "plugins": self.plugins,
        })
    }

    fn from_value(v: &Value) -> Result<Self, CniError> {
        let bytes = serde_json::to_vec(v).map_err(|e| CniError::Io(e.to_string()))?;
        Self::parse(Path::new("cache"), &bytes)
    }
}

fn plugin_type(p: &Value) -> &str {
    p.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// The plugin executable named `ty` in the first bin dir that has it.
pub fn find_plugin(bin_dirs: &[PathBuf], ty: &str) -> Result<PathBuf, CniError> {
    if !ty.contains('/') {
        for d in bin_dirs {
            let p = d.join(ty);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(CniError::PluginNotFound {
        plugin: ty.to_string(),
        path: bin_dirs.to_vec(),
    })
}

/// Per-attachment arguments: the CNI_* environment and the capability arguments.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RuntimeConf {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: Vec<(String, String)>,
    /// Capability name → value (`portMappings`, `dns`, `cgroupPath`, …).
    pub capability_args: Map<String, Value>,
}

impl RuntimeConf {
    /// `CNI_ARGS`: `IgnoreUnknown=1;K=V;…` (the stock plugins refuse unknown keys without it).
    pub fn cni_args(&self) -> String {
        let mut parts = vec!["IgnoreUnknown=1".to_string()];
        parts.extend(self.args.iter().map(|(k, v)| format!("{k}={v}")));
        parts.join(";")
    }
}

/// The `K8S_POD_*` arguments containerd passes (`toCNILabels`).
pub fn pod_args(namespace: &str, name: &str, sandbox_id: &str, uid: &str) -> Vec<(String, String)> {
    vec![
        ("K8S_POD_NAMESPACE".into(), namespace.into()),
        ("K8S_POD_NAME".into(), name.into()),
        ("K8S_POD_INFRA_CONTAINER_ID".into(), sandbox_id.into()),
        ("K8S_POD_UID".into(), uid.into()),
    ]
}

/// The capability arguments of a sandbox: hostPort mappings, DNS, the pod cgroup.
pub fn capability_args(config: &cri::PodSandboxConfig) -> Map<String, Value> {
    let mut caps = Map::new();
    let ports: Vec<Value> = config
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| {
            let protocol = match cri::Protocol::try_from(p.protocol) {
                Ok(cri::Protocol::Udp) => "udp",
                Ok(cri::Protocol::Sctp) => "sctp",
                _ => "tcp",
            };
            json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": protocol,
                "hostIP": p.host_ip,
            })
        })
        .collect();
    if !ports.is_empty() {
        caps.insert("portMappings".into(), Value::Array(ports));
    }
    if let Some(dns) = &config.dns_config {
        caps.insert(
            "dns".into(),
            json!({"servers": dns.servers, "searches": dns.searches, "options": dns.options}),
        );
    }
    if let Some(parent) = config
        .linux
        .as_ref()
        .map(|l| &l.cgroup_parent)
        .filter(|p| !p.is_empty())
    {
        caps.insert("cgroupPath".into(), Value::String(parent.clone()));
    }
    caps
}

/// A plugin's stdin: its object with the list's `name` and `cniVersion`, `runtimeConfig` for
/// the capabilities it declares (and `capabilities` dropped), and `prevResult`.
pub fn plugin_stdin(net: &NetworkConfig, plugin: &Value, rt: &RuntimeConf, prev: Option<&Value>) -> Value {
    let mut obj = plugin.as_object().cloned().unwrap_or_default();
    obj.insert("name".into(), Value::String(net.name.clone()));
    obj.insert("cniVersion".into(), Value::String(net.cni_version.clone()));
    if let Some(Value::Object(caps)) = obj.remove("capabilities") {
        let mut rc = Map::new();
        for (cap, on) in caps {
            if on == Value::Bool(true) {
                if let Some(v) = rt.capability_args.get(&cap) {
                    rc.insert(cap, v.clone());
                }
            }
        }
        if !rc.is_empty() {
            obj.insert("runtimeConfig".into(), Value::Object(rc));
        }
    }
    if let Some(prev) = prev {
        obj.insert("prevResult".into(), prev.clone());
    }
    Value::Object(obj)
}

fn exec_plugin(
    net: &NetworkConfig,
    plugin: &Value,
    bin_dirs: &[PathBuf],
    command: &'static str,
    rt: &RuntimeConf,
    prev: Option<&Value>,
) -> Result<Option<Value>, CniError> {
    let ty = plugin_type(plugin).to_string();
    let exe = find_plugin(bin_dirs, &ty)?;
    let stdin = serde_json::to_vec(&plugin_stdin(net, plugin, rt, prev)).map_err(|e| CniError::Io(e.to_string()))?;
    let cni_path = std::env::join_paths(bin_dirs).map_err(|e| CniError::Io(e.to_string()))?;
    let fail = |message: String| CniError::Plugin {
        plugin: ty.clone(),
        network: net.name.clone(),
        command: match command {
            "ADD" => "add",
            "DEL" => "delete",
            _ => "check",
        },
        message,
    };
    let mut child = Command::new(&exe)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &rt.container_id)
        .env("CNI_NETNS", &rt.netns)
        .env("CNI_IFNAME", &rt.ifname)
        .env("CNI_ARGS", rt.cni_args())
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("exec {}: {e}", exe.display())))?;
    if let Some(mut w) = child.stdin.take() {
        // A plugin that exits without reading its stdin is reported by its exit status.
        let _ = w.write_all(&stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("wait {}: {e}", exe.display())))?;
    if !out.status.success() {
        let msg = match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(v) if v.get("msg").is_some() => {
                let mut m = v["msg"].as_str().unwrap_or_default().to_string();
                if let Some(d) = v.get("details").and_then(Value::as_str).filter(|d| !d.is_empty()) {
                    m = format!("{m}; {d}");
                }
                m
            }
            _ => {
                let text = String::from_utf8_lossy(if out.stdout.is_empty() {
                    &out.stderr
                } else {
                    &out.stdout
                });
                format!("{} ({})", text.trim(), out.status)
            }
        };
        return Err(fail(msg));
    }
    if command != "ADD" {
        return Ok(None);
    }
    serde_json::from_slice(&out.stdout)
        .map(Some)
        .map_err(|e| fail(format!("decoding result: {e}")))
}

/// ADD: the plugins in order, each given the previous one's result; the last result.
pub fn add(net: &NetworkConfig, bin_dirs: &[PathBuf], rt: &RuntimeConf) -> Result<Value, CniError> {
    let mut prev: Option<Value> = None;
    for p in &net.plugins {
        prev = exec_plugin(net, p, bin_dirs, "ADD", rt, prev.as_ref())?;
    }
    prev.ok_or_else(|| CniError::Io("no result".into()))
}

/// DEL: the plugins in reverse, given the cached ADD result. "Not found" answers count as done
/// (go-cni's `Remove`).
pub fn del(net: &NetworkConfig, bin_dirs: &[PathBuf], rt: &RuntimeConf, prev: Option<&Value>) -> Result<(), CniError> {
    for p in net.plugins.iter().rev() {
        if let Err(e) = exec_plugin(net, p, bin_dirs, "DEL", rt, prev) {
            let text = e.to_string();
            if text.contains("not found") || (rt.netns.is_empty() && text.contains("no such file or directory")) {
                continue;
            }
            return Err(e);
        }
    }
    Ok(())
}

/// CHECK: the plugins in order with the cached result (skipped below 0.4.0 or with disableCheck).
pub fn check(net: &NetworkConfig, bin_dirs: &[PathBuf], rt: &RuntimeConf, prev: &Value) -> Result<(), CniError> {
    if net.disable_check || !version_at_least(&net.cni_version, (0, 4, 0)) {
        return Ok(());
    }
    for p in &net.plugins {
        exec_plugin(net, p, bin_dirs, "CHECK", rt, Some(prev))?;
    }
    Ok(())
}

fn version_at_least(v: &str, min: (u32, u32, u32)) -> bool {
    let mut it = v.split('.').map(|x| x.parse::<u32>().unwrap_or(0));
    let parsed = (it.next().unwrap_or(0), it.next().unwrap_or(0), it.next().unwrap_or(0));
    parsed >= min
}

/// The pod IPs of a result (containerd's `selectPodIPs` with the default ipv4 preference): the
/// IPs on interface `ifname` inside the sandbox; the first IPv4 is the pod IP, the others (in
/// order) are additional. Handles 0.3+ results (`ips` + `interfaces`) and 0.1/0.2 (`ip4`/`ip6`).
pub fn pod_ips(result: &Value, ifname: &str) -> Option<(String, Vec<String>)> {
    let strip = |cidr: &str| cidr.split('/').next().unwrap_or(cidr).to_string();
    let mut ips: Vec<String> = Vec::new();
    if let Some(list) = result.get("ips").and_then(Value::as_array) {
        let ifaces = result.get("interfaces").and_then(Value::as_array);
        for ip in list {
            let Some(addr) = ip.get("address").and_then(Value::as_str) else {
                continue;
            };
            let Some(idx) = ip.get("interface").and_then(Value::as_u64) else {
                continue;
            };
            let Some(iface) = ifaces.and_then(|i| i.get(idx as usize)) else {
                continue;
            };
            let in_sandbox = iface
                .get("sandbox")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            if in_sandbox && iface.get("name").and_then(Value::as_str) == Some(ifname) {
                ips.push(strip(addr));
            }
        }
    } else {
        for key in ["ip4", "ip6"] {
            if let Some(addr) = result.get(key).and_then(|v| v.get("ip")).and_then(Value::as_str) {
                ips.push(strip(addr));
            }
        }
    }
    if ips.is_empty() {
        return None;
    }
    if ips.len() == 1 {
        return Some((ips.remove(0), Vec::new()));
    }
    let v4 = ips
        .iter()
        .position(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
        .unwrap_or(0);
    let primary = ips.remove(v4);
    Some((primary, ips))
}

/// What keel remembers of one attachment: enough to DEL it later with the same config.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CachedAttachment {
    pub kind: String,
    pub config: Value,
    pub runtime: RuntimeConf,
    /// The ADD result; None while ADD has not finished (DEL then runs without `prevResult`).
    pub result: Option<Value>,
}

/// The on-disk cache of a sandbox's attachments: `<sandbox dir>/cni.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Cache {
    pub attachments: Vec<CachedAttachment>,
}

impl Cache {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("cni.json")
    }

    pub fn load(dir: &Path) -> Result<Option<Self>, CniError> {
        match fs::read(Self::path(dir)) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| CniError::Io(format!("{}: {e}", Self::path(dir).display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CniError::Io(format!("{}: {e}", Self::path(dir).display()))),
        }
    }

    pub fn save(&self, dir: &Path) -> Result<(), CniError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| CniError::Io(e.to_string()))?;
        write_atomic(&Self::path(dir), &bytes).map_err(|e| CniError::Io(format!("{}: {e}", Self::path(dir).display())))
    }

    pub fn remove(dir: &Path) -> Result<(), CniError> {
        match fs::remove_file(Self::path(dir)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CniError::Io(format!("{}: {e}", Self::path(dir).display()))),
        }
    }
}

/// Attaches the sandbox to `nets` (loopback first), all at once as go-cni's `Setup` does. Every
/// attachment is in the cache before its ADD runs, so a crash mid-ADD still gets a DEL. Returns
/// the last network's result (the pod network's).
pub fn setup(dir: &Path, nets: &[(NetworkConfig, RuntimeConf)], bin_dirs: &[PathBuf]) -> Result<Value, CniError> {
    let mut cache = Cache {
        attachments: nets
            .iter()
            .map(|(net, rt)| CachedAttachment {
                kind: "cniCacheV1".into(),
                config: net.to_value(),
                runtime: rt.clone(),
                result: None,
            })
            .collect(),
    };
    cache.save(dir)?;
    let results: Vec<Result<Value, CniError>> = std::thread::scope(|s| {
        let handles: Vec<_> = nets
            .iter()
            .map(|(net, rt)| s.spawn(move || add(net, bin_dirs, rt)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(CniError::Io("CNI thread panicked".into())))
            })
            .collect()
    });
    let mut first_err = None;
    for (a, r) in cache.attachments.iter_mut().zip(results) {
        match r {
            Ok(v) => a.result = Some(v),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    cache.save(dir)?;
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(cache
        .attachments
        .last()
        .and_then(|a| a.result.clone())
        .unwrap_or(Value::Null))
}

/// Detaches everything in the cache (reverse order), then deletes the cache. Idempotent.
pub fn teardown(dir: &Path, bin_dirs: &[PathBuf]) -> Result<(), CniError> {
    let Some(mut cache) = Cache::load(dir)? else {
        return Ok(());
    };
    while let Some(a) = cache.attachments.last() {
        let net = NetworkConfig::from_value(&a.config)?;
        del(&net, bin_dirs, &a.runtime, a.result.as_ref())?;
        cache.attachments.pop();
        cache.save(dir)?;
    }
    Cache::remove(dir)
}

/// CHECK of every cached attachment that has a result.
pub fn check_all(dir: &Path, bin_dirs: &[PathBuf]) -> Result<(), CniError> {
    let Some(cache) = Cache::load(dir)? else { return Ok(()) };
    for a in &cache.attachments {
        if let Some(result) = &a.result {
            let net = NetworkConfig::from_value(&a.config)?;
            check(&net, bin_dirs, &a.runtime, result)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_args_carry_ignore_unknown_and_the_pod() {
        let rt = RuntimeConf {
            args: pod_args("default", "web-0", "abc123", "uid-1"),
            ..Default::default()
        };
        assert_eq!(
            rt.cni_args(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=uid-1"
        );
    }

    #[test]
    fn configs_parse_lists_and_single_plugins() {
        let list = br#"{"cniVersion":"1.0.0","name":"podnet","plugins":[{"type":"bridge","bridge":"cni0"},
            {"type":"portmap","capabilities":{"portMappings":true}}]}"#;
        let c = NetworkConfig::parse(Path::new("10.conflist"), list).unwrap();
        assert_eq!(
            (c.name.as_str(), c.cni_version.as_str(), c.plugins.len()),
            ("podnet", "1.0.0", 2)
        );
        let single = br#"{"cniVersion":"0.4.0","name":"one","type":"bridge","bridge":"b0"}"#;
        let c = NetworkConfig::parse(Path::new("1.conf"), single).unwrap();
        assert_eq!(c.plugins.len(), 1);
        assert_eq!(c.plugins[0]["bridge"], "b0");
        for bad in [
            &b"{"[..],
            br#"{"name":"x"}"#,
            br#"{"name":"x","plugins":[]}"#,
            br#"{"type":"bridge"}"#,
        ] {
            assert!(
                NetworkConfig::parse(Path::new("bad"), bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn conf_dir_uses_the_first_valid_file_by_name() {
        let conf = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        let bins = vec![bin.path().to_path_buf()];
        assert!(matches!(
            NetworkConfig::load(conf.path(), &bins),
            Err(CniError::NoConfig(_))
        ));
        fs::write(
            conf.path().join("20-b.conflist"),
            br#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"p"}]}"#,
        )
        .unwrap();
        fs::write(
            conf.path().join("10-a.conf"),
            br#"{"cniVersion":"1.0.0","name":"a","type":"p"}"#,
        )
        .unwrap();
        fs::write(conf.path().join("05-ignored.txt"), b"{}").unwrap();
        fs::write(conf.path().join("07-broken.json"), b"{").unwrap();
        // The plugin is missing: the config is not usable yet.
        let err = NetworkConfig::load(conf.path(), &bins).unwrap_err();
        assert!(err.to_string().contains("failed to find plugin \"p\""), "{err}");
        fs::write(bin.path().join("p"), b"#!/bin/sh\n").unwrap();
        assert_eq!(NetworkConfig::load(conf.path(), &bins).unwrap().name, "a");
    }

    #[test]
    fn runtime_config_only_for_declared_capabilities() {
        let net = NetworkConfig::parse(
            Path::new("x"),
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},
                {"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false}}]}"#,
        )
        .unwrap();
        let config = cri::PodSandboxConfig {
            port_mappings: vec![
                cri::PortMapping {
                    protocol: cri::Protocol::Udp as i32,
                    container_port: 53,
                    host_port: 5353,
                    host_ip: "127.0.0.1".into(),
                },
                // No host port: not a mapping.
                cri::PortMapping {
                    protocol: cri::Protocol::Tcp as i32,
                    container_port: 80,
                    host_port: 0,
                    host_ip: String::new(),
                },
            ],
            ..Default::default()
        };
        let rt = RuntimeConf {
            capability_args: capability_args(&config),
            ..Default::default()
        };
        let prev = json!({"cniVersion": "1.0.0"});
        let bridge = plugin_stdin(&net, &net.plugins[0], &rt, None);
        assert_eq!(bridge, json!({"type": "bridge", "name": "n", "cniVersion": "1.0.0"}));
        let portmap = plugin_stdin(&net, &net.plugins[1], &rt, Some(&prev));
        assert_eq!(
            portmap,
            json!({"type": "portmap", "name": "n", "cniVersion": "1.0.0",
                "runtimeConfig": {"portMappings": [
                    {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}]},
                "prevResult": {"cniVersion": "1.0.0"}})
        );
    }

    #[test]
    fn pod_ips_follow_containerd() {
        // The bridge plugin's result: the host veth and the bridge have no sandbox.
        let r = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0", "mac": "aa"}, {"name": "veth1", "mac": "bb"},
                           {"name": "eth0", "mac": "cc", "sandbox": "/run/keel/ns/net/x"}],
            "ips": [{"address": "fd00::5/64", "interface": 2},
                    {"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 2},
                    {"address": "10.99.0.9/16", "interface": 0}]});
        assert_eq!(
            pod_ips(&r, "eth0"),
            Some(("10.88.0.5".to_string(), vec!["fd00::5".to_string()]))
        );
        let v6only = json!({"interfaces": [{"name": "eth0", "sandbox": "/x"}],
            "ips": [{"address": "fd00::5/64", "interface": 0}, {"address": "fd00::6/64", "interface": 0}]});
        assert_eq!(
            pod_ips(&v6only, "eth0"),
            Some(("fd00::5".to_string(), vec!["fd00::6".to_string()]))
        );
        let old = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.2.3/24"}});
        assert_eq!(pod_ips(&old, "eth0"), Some(("10.1.2.3".to_string(), vec![])));
        assert_eq!(pod_ips(&json!({"cniVersion": "1.0.0"}), "eth0"), None);
    }

    #[test]
    fn cache_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Cache::load(dir.path()).unwrap(), None);
        let cache = Cache {
            attachments: vec![CachedAttachment {
                kind: "cniCacheV1".into(),
                config: NetworkConfig::loopback().to_value(),
                runtime: RuntimeConf {
                    container_id: "abc".into(),
                    netns: "/run/keel/ns/net/abc".into(),
                    ifname: "lo".into(),
                    args: pod_args("ns", "n", "abc", "u"),
                    capability_args: Map::new(),
                },
                result: Some(json!({"cniVersion": "0.3.1", "interfaces": [{"name": "lo"}]})),
            }],
        };
        cache.save(dir.path()).unwrap();
        assert_eq!(Cache::load(dir.path()).unwrap(), Some(cache.clone()));
        let net = NetworkConfig::from_value(&cache.attachments[0].config).unwrap();
        assert_eq!(
            net,
            NetworkConfig {
                path: PathBuf::from("cache"),
                ..NetworkConfig::loopback()
            }
        );
        // Teardown with no plugins to run is still an error that names the missing plugin.
        let err = teardown(dir.path(), &[dir.path().to_path_buf()]).unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        Cache::remove(dir.path()).unwrap();
        Cache::remove(dir.path()).unwrap();
        assert_eq!(Cache::load(dir.path()).unwrap(), None);
    }

    #[test]
    fn versions_compare() {
        assert!(version_at_least("1.0.0", (0, 4, 0)));
        assert!(version_at_least("0.4.0", (0, 4, 0)));
        assert!(!version_at_least("0.3.1", (0, 4, 0)));
        assert!(!version_at_least("", (0, 4, 0)));
    }
}
