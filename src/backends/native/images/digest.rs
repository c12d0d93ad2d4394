//! Content digests (`sha256:<hex>`): parsing and verification while bytes stream past.

use std::fmt;
use std::str::FromStr;

/// Errors about digests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("invalid digest {0:?}")]
    Invalid(String),
    #[error("unsupported digest algorithm {0:?}")]
    Unsupported(String),
    #[error("unexpected commit digest {actual}, expected {expected}: failed precondition")]
    Mismatch { expected: Digest, actual: Digest },
    #[error("unexpected commit size {actual}, expected {expected}: failed precondition")]
    SizeMismatch { expected: u64, actual: u64 },
}

/// A sha256 digest (the only algorithm registries and containerd use in practice).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The hex part (the file name in the content store).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        let mut h = Hasher::new();
        h.update(bytes);
        h.finish()
    }

    /// `ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))`, `ChainID(L0) = DiffID(L0)`.
    pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
        let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
        for d in diff_ids {
            let next = match out.last() {
                None => d.clone(),
                Some(parent) => Digest::of(format!("{parent} {d}").as_bytes()),
            };
            out.push(next);
        }
        out
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, DigestError> {
        let (alg, hex) = s.split_once(':').ok_or_else(|| DigestError::Invalid(s.to_string()))?;
        if alg != "sha256" {
            return Err(DigestError::Unsupported(alg.to_string()));
        }
        if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
            return Err(DigestError::Invalid(s.to_string()));
        }
        Ok(Digest { hex: hex.to_string() })
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental SHA-256 with a byte count.
pub struct Hasher {
    ctx: ring::digest::Context,
    len: u64,
}

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Hasher {
    pub fn new() -> Self {
        Self {
            ctx: ring::digest::Context::new(&ring::digest::SHA256),
            len: 0,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.ctx.update(bytes);
        self.len += bytes.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        Digest {
            hex: hex::encode(self.ctx.finish().as_ref()),
        }
    }
}

/// A reader that hashes what passes through it (the diff ID of a decompressed layer).
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: std::io::Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Hasher::new(),
        }
    }

    /// Reads the rest (tar archives may carry padding after the end marker), then the digest.
    pub fn finish(mut self) -> std::io::Result<(Digest, u64)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        let len = self.hasher.len();
        Ok((self.hasher.finish(), len))
    }
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        assert_eq!(d, Digest::of(b""));
        assert_eq!(d.to_string().len(), 71);
        assert!("sha256:abc".parse::<Digest>().is_err());
        assert!("sha512:e3b0".parse::<Digest>().is_err());
        assert!("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse::<Digest>()
            .is_err());
        // upper-case hex is not canonical
        assert!(
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
                .parse::<Digest>()
                .is_err()
        );
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = Digest::of(b"c");
        let chain = Digest::chain_ids(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(chain[0], a);
        let ab = Digest::of(format!("{a} {b}").as_bytes());
        assert_eq!(chain[1], ab);
        assert_eq!(chain[2], Digest::of(format!("{ab} {c}").as_bytes()));
    }

    #[test]
    fn hashing_reader_counts_everything() {
        let r = HashingReader::new(&b"hello world"[..]);
        let (d, n) = r.finish().unwrap();
        assert_eq!(n, 11);
        assert_eq!(d, Digest::of(b"hello world"));
    }
}
