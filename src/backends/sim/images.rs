//! The simulated image store: containerd-style reference normalization, deterministic IDs,
//! digests and sizes, and the configured pull failures.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::Duration;

use ring::digest::{digest, SHA256};
use serde::{Deserialize, Serialize};

use super::config::{glob_match, SimConfig};
use crate::clock::Clock;
use crate::genericruntime::seam::{cri, PullProgress};

/// Errors of image references.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("parsing image reference {image:?}: {reason}")]
    ParseReference { image: String, reason: &'static str },
}

/// A normalized image reference (`busybox` → `docker.io/library/busybox:latest`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (with port), e.g. `docker.io`, `localhost:5000`.
    pub domain: String,
    /// `domain/path` without tag or digest.
    pub repo: String,
    pub tag: Option<String>,
    /// `sha256:<hex>`
    pub digest: Option<String>,
}

impl Reference {
    /// The full normalized name: `repo@digest` when pinned by digest, else `repo:tag`.
    pub fn name(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{}@{}", self.repo, d),
            (None, Some(t)) => format!("{}:{}", self.repo, t),
            (None, None) => format!("{}:latest", self.repo),
        }
    }

    /// Whether the registry host is in the RFC 2606 `.invalid` TLD (never resolvable).
    pub fn is_invalid_host(&self) -> bool {
        let host = self.domain.split(':').next().unwrap_or(&self.domain);
        host == "invalid" || host.ends_with(".invalid")
    }
}

/// Parses and normalizes an image reference the way containerd's CRI plugin does
/// (docker/distribution `ParseNormalizedNamed` + default tag).
pub fn normalize(image: &str) -> Result<Reference, Error> {
    let bad = |reason| Error::ParseReference {
        image: image.to_string(),
        reason,
    };
    if image.is_empty() {
        return Err(bad("empty reference"));
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => {
            let hex = d
                .strip_prefix("sha256:")
                .ok_or_else(|| bad("unsupported digest algorithm"))?;
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) {
                return Err(bad("invalid digest"));
            }
            (n, Some(d.to_string()))
        }
        None => (image, None),
    };
    // The tag is after the last ':' that follows the last '/'.
    let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (path, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(name[last_slash + i + 1..].to_string())),
        None => (name, None),
    };
    if let Some(t) = &tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            && !t.starts_with(['.', '-']);
        if !ok {
            return Err(bad("invalid tag"));
        }
    }
    let (domain, rest) = match path.split_once('/') {
        Some((d, r)) if d.contains('.') || d.contains(':') || d == "localhost" => (d.to_string(), r.to_string()),
        _ => ("docker.io".to_string(), path.to_string()),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io".to_string()
    } else {
        domain
    };
    if rest.is_empty() {
        return Err(bad("empty repository name"));
    }
    if rest.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad("repository name must be lowercase"));
    }
    let valid_path = rest.split('/').all(|comp| {
        !comp.is_empty()
            && comp
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
            && comp.starts_with(|c: char| c.is_ascii_alphanumeric())
            && comp.ends_with(|c: char| c.is_ascii_alphanumeric())
    });
    if !valid_path {
        return Err(bad("invalid reference format"));
    }
    let rest = if domain == "docker.io" && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest
    };
    let tag = match (&digest, tag) {
        (None, None) => Some("latest".to_string()),
        (_, t) => t,
    };
    Ok(Reference {
        repo: format!("{domain}/{rest}"),
        domain,
        tag,
        digest,
    })
}

/// How often a simulated download advances (virtual time).
const DOWNLOAD_STEP: Duration = Duration::from_millis(500);

/// A simulated download of `bytes` over `latency` (virtual): the bytes arrive at an even rate
/// and `progress` follows them, as a real registry pull reports its layers' bytes.
pub async fn simulate_download(clock: &Clock, latency: Duration, bytes: u64, progress: &PullProgress) {
    if bytes == 0 || latency.is_zero() {
        clock.sleep(latency).await;
        progress.done.fetch_add(bytes, Ordering::Relaxed);
        return;
    }
    progress.total.fetch_add(bytes, Ordering::Relaxed);
    let mut elapsed = Duration::ZERO;
    let mut done = 0u64;
    while elapsed < latency {
        let step = DOWNLOAD_STEP.min(latency - elapsed);
        clock.sleep(step).await;
        elapsed += step;
        let now = ((bytes as f64) * elapsed.as_secs_f64() / latency.as_secs_f64()).round() as u64;
        let now = now.min(bytes);
        progress.done.fetch_add(now - done, Ordering::Relaxed);
        done = now;
    }
    progress.done.fetch_add(bytes - done, Ordering::Relaxed);
}

fn sha256_hex(text: &str) -> String {
    hex::encode(digest(&SHA256, text.as_bytes()).as_ref())
}

/// A stored image (journaled as is).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:<sha256 of the normalized name>`
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub size: u64,
}

impl ImageRecord {
    /// The deterministic record of a reference.
    pub fn of(r: &Reference) -> ImageRecord {
        let name = r.name();
        let hash = digest(&SHA256, name.as_bytes());
        let h = hash.as_ref();
        let (repo_tags, repo_digests) = match &r.digest {
            Some(d) => (Vec::new(), vec![format!("{}@{}", r.repo, d)]),
            None => (
                vec![name.clone()],
                vec![format!("{}@sha256:{}", r.repo, sha256_hex(&format!("manifest {name}")))],
            ),
        };
        // Between 1 and 10 MiB: real-looking, yet far from tripping image GC thresholds.
        let size = 1_048_576 + u64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]])) % (9 * 1_048_576);
        ImageRecord {
            id: format!("sha256:{}", hex::encode(h)),
            repo_tags,
            repo_digests,
            size,
        }
    }

    pub fn to_cri(&self) -> cri::Image {
        cri::Image {
            id: self.id.clone(),
            repo_tags: self.repo_tags.clone(),
            repo_digests: self.repo_digests.clone(),
            size: self.size,
            uid: None,
            username: String::new(),
            spec: Some(cri::ImageSpec {
                image: self.id.clone(),
                ..Default::default()
            }),
            pinned: false,
        }
    }
}

/// Images by ID plus an index of every name that resolves to them.
#[derive(Debug, Default)]
pub struct ImageStore {
    by_id: BTreeMap<String, ImageRecord>,
    by_ref: HashMap<String, String>,
}

impl ImageStore {
    pub fn insert(&mut self, rec: ImageRecord) {
        for r in rec.repo_tags.iter().chain(&rec.repo_digests) {
            self.by_ref.insert(r.clone(), rec.id.clone());
        }
        self.by_ref.insert(rec.id.clone(), rec.id.clone());
        self.by_id.insert(rec.id.clone(), rec);
    }

    /// Resolves an image name, ID (`sha256:…` or bare hex) or digest reference.
    pub fn lookup(&self, image: &str) -> Option<&ImageRecord> {
        if let Some(rec) = self.by_id.get(image) {
            return Some(rec);
        }
        if image.len() == 64 && image.chars().all(|c| c.is_ascii_hexdigit()) {
            if let Some(rec) = self.by_id.get(&format!("sha256:{image}")) {
                return Some(rec);
            }
        }
        let name = normalize(image).ok()?.name();
        self.by_ref.get(&name).and_then(|id| self.by_id.get(id))
    }

    /// Removes the image `image` resolves to; returns its ID.
    pub fn remove(&mut self, image: &str) -> Option<String> {
        let id = self.lookup(image)?.id.clone();
        if let Some(rec) = self.by_id.remove(&id) {
            for r in rec.repo_tags.iter().chain(&rec.repo_digests) {
                self.by_ref.remove(r);
            }
            self.by_ref.remove(&id);
        }
        Some(id)
    }

    pub fn remove_id(&mut self, id: &str) {
        self.remove(id);
    }

    pub fn iter(&self) -> impl Iterator<Item = &ImageRecord> {
        self.by_id.values()
    }

    pub fn total_size(&self) -> u64 {
        self.by_id.values().map(|r| r.size).sum()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Why a pull fails, if it does: `(not_found, message)`.
pub fn pull_failure(cfg: &SimConfig, requested: &str, r: &Reference) -> Option<(bool, String)> {
    let name = r.name();
    if r.is_invalid_host() {
        // containerd's wording for a reference the resolver cannot find.
        return Some((
            true,
            format!(
                "failed to pull and unpack image \"{name}\": failed to resolve reference \"{name}\": {name}: not found"
            ),
        ));
    }
    let rule = cfg
        .pull_failures
        .iter()
        .find(|f| glob_match(&f.pattern, requested) || glob_match(&f.pattern, &name))?;
    let detail = if rule.message.is_empty() {
        format!(
            "failed to resolve reference \"{name}\": pull access denied, repository does not exist or may require \
             authorization: server message: insufficient_scope: authorization failed"
        )
    } else {
        rule.message.clone()
    };
    Some((false, format!("failed to pull and unpack image \"{name}\": {detail}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::sim::config::PullFailure;

    #[tokio::test(start_paused = true)]
    async fn simulated_download_advances_with_the_virtual_clock() {
        let clock = Clock::scaled(10.0);
        let p = std::sync::Arc::new(PullProgress::default());
        let dl = {
            let p = p.clone();
            tokio::spawn(async move { simulate_download(&clock, Duration::from_secs(10), 1_000_000, &p).await })
        };
        // 4 virtual seconds of 10 = 0.4 real s: 40 % of the bytes.
        tokio::time::sleep(Duration::from_millis(410)).await;
        assert_eq!(p.total.load(Ordering::Relaxed), 1_000_000);
        assert_eq!(p.done.load(Ordering::Relaxed), 400_000);
        dl.await.unwrap();
        assert_eq!(p.done.load(Ordering::Relaxed), 1_000_000);
        // Nothing to fetch (the image is there): only the latency, no bytes.
        let p = PullProgress::default();
        simulate_download(&Clock::real(), Duration::from_secs(1), 0, &p).await;
        assert_eq!(
            (p.done.load(Ordering::Relaxed), p.total.load(Ordering::Relaxed)),
            (0, 0)
        );
    }

    #[test]
    fn normalization_table() {
        let d = format!("sha256:{}", "a".repeat(64));
        let cases: Vec<(String, &str)> = vec![
            ("busybox".into(), "docker.io/library/busybox:latest"),
            ("busybox:1.36".into(), "docker.io/library/busybox:1.36"),
            ("library/busybox".into(), "docker.io/library/busybox:latest"),
            ("docker.io/busybox".into(), "docker.io/library/busybox:latest"),
            ("index.docker.io/foo/bar:v1".into(), "docker.io/foo/bar:v1"),
            ("registry.k8s.io/pause:3.9".into(), "registry.k8s.io/pause:3.9"),
            ("localhost:5000/x".into(), "localhost:5000/x:latest"),
            ("localhost/pause:1".into(), "localhost/pause:1"),
            (
                format!("busybox@{d}"),
                "docker.io/library/busybox@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(&input).unwrap().name(), want, "{input}");
        }
        for bad in ["", "Busybox", "busybox:", "busybox@sha256:abc", "a//b", "busybox:-x"] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn random_references_never_panic() {
        use rand::{Rng, SeedableRng};
        const PIECES: &[&str] = &[
            "a",
            "B",
            "/",
            ":",
            "@",
            "sha256:",
            ".",
            "-",
            "_",
            "1",
            "é",
            "localhost",
            "docker.io",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..20_000 {
            let n = rng.random_range(0..10);
            let text: String = (0..n).map(|_| PIECES[rng.random_range(0..PIECES.len())]).collect();
            if let Ok(r) = normalize(&text) {
                // A normalized name normalizes to itself.
                assert_eq!(normalize(&r.name()).unwrap().name(), r.name(), "{text}");
            }
        }
    }

    #[test]
    fn records_are_deterministic_and_resolvable() {
        let r = normalize("busybox").unwrap();
        let a = ImageRecord::of(&r);
        assert_eq!(
            a,
            ImageRecord::of(&normalize("docker.io/library/busybox:latest").unwrap())
        );
        assert_eq!(a.id.len(), "sha256:".len() + 64);
        assert_eq!(a.repo_tags, vec!["docker.io/library/busybox:latest"]);
        assert!(a.repo_digests[0].starts_with("docker.io/library/busybox@sha256:"));
        assert!((1_048_576..10 * 1_048_576).contains(&a.size));
        assert_ne!(a.id, ImageRecord::of(&normalize("busybox:1.36").unwrap()).id);

        let mut store = ImageStore::default();
        store.insert(a.clone());
        assert_eq!(store.lookup("busybox").unwrap().id, a.id);
        assert_eq!(store.lookup(&a.id).unwrap().id, a.id);
        assert_eq!(store.lookup(&a.id["sha256:".len()..]).unwrap().id, a.id);
        assert_eq!(store.lookup(&a.repo_digests[0]).unwrap().id, a.id);
        assert!(store.lookup("busybox:1.36").is_none());
        assert_eq!(store.remove("docker.io/library/busybox"), Some(a.id.clone()));
        assert!(store.lookup("busybox").is_none());
        assert!(store.is_empty());
    }

    #[test]
    fn pull_failures() {
        let mut cfg = SimConfig::default();
        let r = normalize("registry.invalid/x:1").unwrap();
        let (nf, msg) = pull_failure(&cfg, "registry.invalid/x:1", &r).unwrap();
        assert!(nf);
        assert_eq!(
            msg,
            "failed to pull and unpack image \"registry.invalid/x:1\": failed to resolve reference \
             \"registry.invalid/x:1\": registry.invalid/x:1: not found"
        );
        assert!(pull_failure(&cfg, "busybox", &normalize("busybox").unwrap()).is_none());
        cfg.pull_failures.push(PullFailure {
            pattern: "*/private/*".into(),
            message: "unexpected status code 401 Unauthorized".into(),
        });
        let r = normalize("example.com/private/app:1").unwrap();
        let (nf, msg) = pull_failure(&cfg, "example.com/private/app:1", &r).unwrap();
        assert!(!nf);
        assert!(msg.ends_with(": unexpected status code 401 Unauthorized"), "{msg}");
    }
}
