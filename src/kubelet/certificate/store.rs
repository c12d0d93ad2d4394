//! The certificate store of the cert dir, laid out as client-go's file store
//! (`util/certificate/certificate_store.go`): each issued pair is one PEM file
//! `<prefix>-<YYYY-MM-DD-HH-MM-SS>.pem` (certificate chain, then the private key, mode 0600) and
//! `<prefix>-current.pem` is a symlink to the newest, swapped atomically through
//! `<prefix>-updated.pem`. Prefixes: `kubelet-client` and `kubelet-server`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::CertError;

/// Prefix of the client certificate files (`kubelet-client-current.pem`).
pub const CLIENT_PREFIX: &str = "kubelet-client";
/// Prefix of the serving certificate files (`kubelet-server-current.pem`).
pub const SERVER_PREFIX: &str = "kubelet-server";

/// A certificate chain and its private key, as parsed from a store file.
#[derive(Debug)]
pub struct Pair {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Validity of the leaf, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl Clone for Pair {
    fn clone(&self) -> Self {
        Pair {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            not_before: self.not_before,
            not_after: self.not_after,
        }
    }
}

impl Pair {
    /// Parses PEM holding certificates and one private key (any order).
    pub fn from_pem(pem: &[u8], path: &Path) -> Result<Pair, CertError> {
        let bad = |message: String| CertError::BadPair {
            path: path.to_path_buf(),
            message,
        };
        let chain = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| bad(format!("private key: {e}")))?;
        let leaf = chain.first().ok_or_else(|| bad("no certificate".into()))?;
        let (not_before, not_after) = validity(leaf).map_err(bad)?;
        Ok(Pair {
            chain,
            key,
            not_before,
            not_after,
        })
    }

    /// Valid now (`now` in Unix seconds)?
    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

/// notBefore and notAfter of a DER certificate, Unix seconds.
pub fn validity(der: &CertificateDer<'_>) -> Result<(i64, i64), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| format!("certificate: {e}"))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// One kind of pair (`prefix`) in one directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
    prefix: String,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>, prefix: &str) -> Store {
        Store {
            dir: dir.into(),
            prefix: prefix.to_string(),
        }
    }

    /// `<dir>/<prefix>-current.pem`: what kubeconfigs and servers point at.
    pub fn current_path(&self) -> PathBuf {
        self.dir.join(format!("{}-current.pem", self.prefix))
    }

    /// Where a private key waits for its CSR to be signed (`kubelet-client.key.tmp` in the
    /// kubelet), so a restart during the wait asks again with the same key and CSR name.
    pub fn pending_key_path(&self) -> PathBuf {
        self.dir.join(format!("{}.key.tmp", self.prefix))
    }

    /// The current pair; `Ok(None)` when there is none yet.
    pub fn current(&self) -> Result<Option<Pair>, CertError> {
        let path = self.current_path();
        match std::fs::read(&path) {
            Ok(pem) => Pair::from_pem(&pem, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CertError::Io { path, source }),
        }
    }

    /// Writes a new pair (`cert_pem` as issued, `key_pem`) and points `-current.pem` at it.
    /// Returns the pair as it will be read back.
    pub fn update(&self, cert_pem: &[u8], key_pem: &[u8], now: jiff::Timestamp) -> Result<Pair, CertError> {
        let mut pem = cert_pem.to_vec();
        if !pem.ends_with(b"\n") {
            pem.push(b'\n');
        }
        pem.extend_from_slice(key_pem);
        let stamp = now.strftime("%Y-%m-%d-%H-%M-%S").to_string();
        let file_name = format!("{}-{stamp}.pem", self.prefix);
        let path = self.dir.join(&file_name);
        // Parse before anything is written: a bad answer never replaces a working pair.
        let pair = Pair::from_pem(&pem, &path)?;
        std::fs::create_dir_all(&self.dir).map_err(|source| CertError::Io {
            path: self.dir.clone(),
            source,
        })?;
        write_private(&path, &pem)?;
        // A relative link, so the directory can be moved as a whole.
        let updated = self.dir.join(format!("{}-updated.pem", self.prefix));
        let _ = std::fs::remove_file(&updated);
        std::os::unix::fs::symlink(&file_name, &updated).map_err(|source| CertError::Io {
            path: updated.clone(),
            source,
        })?;
        let current = self.current_path();
        std::fs::rename(&updated, &current).map_err(|source| CertError::Io { path: current, source })?;
        Ok(pair)
    }
}

/// Writes `data` with mode 0600 beside `path` and renames it into place.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), CertError> {
    let err = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("writing");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed pair valid from `from` for `secs` seconds.
    pub(crate) fn pair_pem(cn: &str, from: jiff::Timestamp, secs: i64) -> (String, String) {
        let mut p = rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.not_before = time_of(from);
        p.not_after = time_of(from + jiff::SignedDuration::from_secs(secs));
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = p.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn time_of(t: jiff::Timestamp) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(t.as_second()).unwrap()
    }

    #[test]
    fn layout_current_symlink_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("pki"), CLIENT_PREFIX);
        assert!(store.current().unwrap().is_none());
        let now = jiff::Timestamp::now();
        let (c1, k1) = pair_pem("a", now, 3600);
        let t1: jiff::Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        let p1 = store.update(c1.as_bytes(), k1.as_bytes(), t1).unwrap();
        let f1 = dir.path().join("pki/kubelet-client-2026-01-02-03-04-05.pem");
        assert_eq!(std::fs::read_to_string(&f1).unwrap(), format!("{c1}{k1}"));
        let mode = std::fs::metadata(&f1).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        let cur = store.current_path();
        assert_eq!(cur, dir.path().join("pki/kubelet-client-current.pem"));
        assert_eq!(
            std::fs::read_link(&cur).unwrap(),
            PathBuf::from("kubelet-client-2026-01-02-03-04-05.pem")
        );
        let back = store.current().unwrap().unwrap();
        assert_eq!(back.chain, p1.chain);
        assert!(back.valid_at(now.as_second() + 10));
        assert!(!back.valid_at(now.as_second() + 4000));

        // A second pair: the link moves, the old file stays.
        let (c2, k2) = pair_pem("b", now, 7200);
        let t2: jiff::Timestamp = "2026-01-02T04:00:00Z".parse().unwrap();
        store.update(c2.as_bytes(), k2.as_bytes(), t2).unwrap();
        assert_eq!(
            std::fs::read_link(&cur).unwrap(),
            PathBuf::from("kubelet-client-2026-01-02-04-00-00.pem")
        );
        assert!(f1.exists());
        assert!(!dir.path().join("pki/kubelet-client-updated.pem").exists());

        // Garbage is refused and the current pair kept.
        assert!(store.update(b"not a cert", k2.as_bytes(), now).is_err());
        assert_eq!(
            std::fs::read_link(&cur).unwrap(),
            PathBuf::from("kubelet-client-2026-01-02-04-00-00.pem")
        );
    }
}
