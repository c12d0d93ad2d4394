//! Image names as containerd's CRI stores them: `busybox` is `docker.io/library/busybox:latest`.

use std::fmt;

use crate::genericruntime::images::{parse_image_ref, ReferenceError};

use super::digest::Digest;

/// A fully qualified image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// Errors parsing a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("failed to parse image reference {name:?}: {source}")]
    Parse {
        name: String,
        #[source]
        source: ReferenceError,
    },
    #[error("failed to parse image reference {0:?}: unsupported digest")]
    Digest(String),
}

impl Named {
    /// Parses and normalises (`docker.io` default domain, `library/` for official images,
    /// `latest` when there is neither tag nor digest).
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let r = parse_image_ref(s).map_err(|source| NameError::Parse {
            name: s.to_string(),
            source,
        })?;
        let domain = match r.domain.as_str() {
            "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
            d => d.to_string(),
        };
        let path = if domain == "docker.io" && !r.path.contains('/') {
            format!("library/{}", r.path)
        } else {
            r.path
        };
        let digest = match r.digest {
            Some(d) => Some(d.parse().map_err(|_| NameError::Digest(s.to_string()))?),
            None => None,
        };
        let tag = match (&r.tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => r.tag,
        };
        Ok(Named {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `domain/path`.
    pub fn repo(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The repo tag this name gives an image (`None` for a digest reference).
    pub fn repo_tag(&self) -> Option<String> {
        match (&self.tag, &self.digest) {
            (Some(t), None) => Some(format!("{}:{t}", self.repo())),
            _ => None,
        }
    }

    pub fn repo_digest(&self, d: &Digest) -> String {
        format!("{}@{d}", self.repo())
    }

    /// What to ask the registry for: the digest when there is one, else the tag.
    pub fn object(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }
}

impl fmt::Display for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repo())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("keel/x", "docker.io/keel/x:latest"),
            ("index.docker.io/library/busybox:1", "docker.io/library/busybox:1"),
            ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
            ("127.0.0.1:5000/x:v1", "127.0.0.1:5000/x:v1"),
            ("quay.io/a/b:c", "quay.io/a/b:c"),
        ];
        for (input, want) in cases {
            let n = Named::parse(input).unwrap();
            assert_eq!(n.to_string(), want, "{input}");
            assert_eq!(n.repo_tag().as_deref(), Some(want));
        }
        let d = Digest::of(b"m");
        let n = Named::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(n.to_string(), format!("docker.io/library/busybox@{d}"));
        assert_eq!(n.repo_tag(), None);
        assert_eq!(n.object(), d.to_string());
        assert!(Named::parse("Bad/Name").is_err());
        assert!(Named::parse(&format!("busybox@sha512:{}", "a".repeat(128))).is_err());
    }
}
