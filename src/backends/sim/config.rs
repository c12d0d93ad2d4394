//! `SimConfig`: the simulated runtime's settings file (YAML, every field optional).
//!
//! ```yaml
//! images: [busybox, "registry.k8s.io/pause:3.9"]   # present from the start
//! pullLatency: 2.5                                 # virtual seconds per pull
//! pullFailures:                                    # glob (`*`) → error message
//!   - pattern: "*/private/*"
//!     message: "unexpected status code 401 Unauthorized"
//! startFailures: ["/does-not-exist*"]              # argv[0] globs that fail to start
//! unknownContainers: ["flaky-*"]                   # container names reported UNKNOWN
//! runtimeReady: true
//! networkReady: false
//! networkReadyReason: NetworkPluginNotReady
//! networkReadyMessage: "Network plugin returns error: cni plugin not initialized"
//! unavailable: false                                # every call fails with Unavailable
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Errors loading the config file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading sim config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing sim config {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error("sim config {path}: {field} must be a finite, non-negative number of seconds (got {value})")]
    BadDuration {
        path: PathBuf,
        field: &'static str,
        value: f64,
    },
}

/// One pull-failure rule: images matching `pattern` fail to pull with `message`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct PullFailure {
    /// Glob over the image name as requested and its normalized form (`*` matches any run).
    pub pattern: String,
    /// The error text; empty means containerd's "pull access denied" wording.
    pub message: String,
}

/// Settings of the simulated runtime. `Default` is a healthy runtime with no images.
/// The file uses camelCase keys, like the KubeletConfiguration beside it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct SimConfig {
    /// Images present from the start (normalized like containerd: `busybox` →
    /// `docker.io/library/busybox:latest`).
    pub images: Vec<String>,
    /// How long a successful pull takes, in virtual seconds.
    pub pull_latency: f64,
    /// Images that fail to pull, first match wins.
    pub pull_failures: Vec<PullFailure>,
    /// Globs over a container's argv[0]: matching containers fail in StartContainer with
    /// `StartError`/128, as containerd does for an executable that does not exist.
    pub start_failures: Vec<String>,
    /// Globs over container names whose running instances are reported in state UNKNOWN
    /// (the runtime lost track of them), for tests of the kubelet's Unknown handling.
    pub unknown_containers: Vec<String>,
    pub runtime_ready: bool,
    pub runtime_ready_reason: String,
    pub runtime_ready_message: String,
    pub network_ready: bool,
    pub network_ready_reason: String,
    pub network_ready_message: String,
    /// Every call fails with `Unavailable` (the socket is gone).
    pub unavailable: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            images: Vec::new(),
            pull_latency: 0.0,
            pull_failures: Vec::new(),
            start_failures: Vec::new(),
            unknown_containers: Vec::new(),
            runtime_ready: true,
            runtime_ready_reason: String::new(),
            runtime_ready_message: String::new(),
            network_ready: true,
            // containerd's wording when CNI has no config.
            network_ready_reason: String::new(),
            network_ready_message: String::new(),
            unavailable: false,
        }
    }
}

impl SimConfig {
    /// Reads a YAML file; an empty file is the default config.
    pub fn load(path: &Path) -> Result<SimConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<SimConfig, Error> {
        // An empty or comment-only document is "all defaults", not an error.
        let meaningful = text.lines().any(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#') && l != "---"
        });
        if !meaningful {
            return Ok(SimConfig::default());
        }
        let cfg: SimConfig = serde_saphyr::from_str(text).map_err(|source| Error::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        if !cfg.pull_latency.is_finite() || cfg.pull_latency < 0.0 {
            return Err(Error::BadDuration {
                path: path.to_path_buf(),
                field: "pullLatency",
                value: cfg.pull_latency,
            });
        }
        Ok(cfg)
    }

    /// `pull_latency` as a virtual duration.
    pub fn pull_latency(&self) -> Duration {
        Duration::try_from_secs_f64(self.pull_latency).unwrap_or(Duration::ZERO)
    }
}

/// Glob match where `*` matches any (possibly empty) run of characters; everything else is literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative wildcard matching with single backtrack point (linear for `*`-only globs).
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_default() {
        let p = Path::new("x.yaml");
        assert_eq!(SimConfig::parse("", p).unwrap(), SimConfig::default());
        assert_eq!(SimConfig::parse("# nothing\n---\n", p).unwrap(), SimConfig::default());
        assert!(SimConfig::default().runtime_ready);
        assert!(SimConfig::default().network_ready);
    }

    #[test]
    fn fields_parse_and_others_default() {
        let p = Path::new("x.yaml");
        let cfg = SimConfig::parse(
            "images: [busybox]\npullLatency: 1.5\nnetworkReady: false\npullFailures:\n  - pattern: \"*bad*\"\n    message: boom\n",
            p,
        )
        .unwrap();
        assert_eq!(cfg.images, vec!["busybox".to_string()]);
        assert_eq!(cfg.pull_latency(), Duration::from_millis(1500));
        assert!(!cfg.network_ready);
        assert!(cfg.runtime_ready);
        assert_eq!(cfg.pull_failures[0].pattern, "*bad*");
        assert_eq!(cfg.pull_failures[0].message, "boom");
    }

    #[test]
    fn bad_input_is_an_error() {
        let p = Path::new("x.yaml");
        assert!(matches!(
            SimConfig::parse("pullLatency: -1\n", p),
            Err(Error::BadDuration { .. })
        ));
        assert!(matches!(
            SimConfig::parse("noSuchField: 1\n", p),
            Err(Error::Parse { .. })
        ));
        assert!(matches!(SimConfig::parse("images: 3\n", p), Err(Error::Parse { .. })));
        assert!(matches!(
            SimConfig::load(Path::new("/nonexistent/sim.yaml")),
            Err(Error::Read { .. })
        ));
    }

    #[test]
    fn globs() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("busybox", "busybox", true),
            ("busybox", "busybox2", false),
            ("*.invalid/*", "reg.invalid/x:1", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("*bad*", "docker.io/library/bad:latest", true),
            ("/does-not-exist*", "/does-not-exist", true),
        ];
        for (p, t, want) in cases {
            assert_eq!(glob_match(p, t), want, "{p} vs {t}");
        }
    }
}
