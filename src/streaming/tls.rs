//! The serving certificate and the TLS configuration of the kubelet server (kubelet-api-protocols.md
//! §1.1): the cert and key from `tlsCertFile`/`tlsPrivateKeyFile`, else a self-signed pair in
//! the cert dir (`--cert-dir`, default `<root_dir>/pki`; kept across restarts while valid), or
//! with serverTLSBootstrap the certificate manager's current one; with a client CA, client certificates are
//! requested but not required.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};

use crate::kubelet::config::Config;

/// Self-signed certificates last a year, as the kubelet's (`GenerateSelfSignedCertKey`).
const SELF_SIGNED_VALIDITY_DAYS: i64 = 365;
/// A self-signed certificate this close to expiry is replaced at start.
const RENEW_BEFORE_SECS: i64 = 24 * 3600;

/// Building the server's TLS configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tlsCertFile and tlsPrivateKeyFile must be set together")]
    HalfConfigured,
    #[error("reading certificates from {path}: {source}")]
    ReadCerts {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCerts { path: PathBuf },
    #[error("reading the private key from {path}: {source}")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("adding a client CA certificate from {path}: {source}")]
    BadClientCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("building the client certificate verifier: {source}")]
    ClientVerifier {
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("setting up TLS with the serving certificate: {source}")]
    ServerConfig {
        #[source]
        source: rustls::Error,
    },
    #[error("generating a self-signed certificate: {source}")]
    Generate {
        #[source]
        source: rcgen::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The TLS server configuration for `cfg` (ALPN `http/1.1` only: upgrades need HTTP/1.1).
/// `hostname` and `node_ips` go into a generated certificate's SANs.
pub fn server_config(cfg: &Config, hostname: &str, node_ips: &[String]) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with(cfg, hostname, node_ips, None)
}

/// As `server_config`; with `serving` (serverTLSBootstrap) every handshake takes the
/// certificate the resolver holds then, so a rotated certificate serves new connections.
pub fn server_config_with(
    cfg: &Config,
    hostname: &str,
    node_ips: &[String],
    serving: Option<Arc<dyn ResolvesServerCert>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let pair = match (&serving, &cfg.tls_cert_file, &cfg.tls_private_key_file) {
        (Some(_), None, None) => None,
        (_, Some(c), Some(k)) => Some((read_certs(c)?, read_key(k)?)),
        (None, None, None) => {
            let names = self_signed_names(&cfg.node_name, hostname, node_ips);
            let (cert, key) = ensure_self_signed(&cfg.cert_dir(), &cfg.node_name, &names)?;
            Some((read_certs(&cert)?, read_key(&key)?))
        }
        _ => return Err(TlsError::HalfConfigured),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::ServerConfig { source })?;
    let builder = match &cfg.authentication.x509_client_ca_file {
        Some(ca) => {
            let roots = client_ca_roots(ca)?;
            // RequestClientCert: ask, but let clients without a certificate through (bearer
            // tokens, anonymous). rustls still rejects an invalid certificate at the handshake,
            // where Go answers 401 later.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|source| TlsError::ClientVerifier { source })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = match (pair, serving) {
        (Some((chain, key)), _) => builder
            .with_single_cert(chain, key)
            .map_err(|source| TlsError::ServerConfig { source })?,
        (None, Some(resolver)) => builder.with_cert_resolver(resolver),
        (None, None) => return Err(TlsError::HalfConfigured),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// SANs of a generated certificate: node name, hostname, node IPs and the loopback names.
pub fn self_signed_names(node_name: &str, hostname: &str, node_ips: &[String]) -> Vec<String> {
    let mut names: Vec<String> = vec![node_name.to_string(), hostname.to_string()];
    names.extend(node_ips.iter().cloned());
    names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| !n.is_empty() && seen.insert(n.clone()));
    names
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::ReadCerts {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCerts {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::ReadKey {
        path: path.to_path_buf(),
        source,
    })
}

/// The CA bundle that verifies client certificates.
pub fn client_ca_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|source| TlsError::BadClientCa {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

/// `<dir>/kubelet.crt` and `kubelet.key`: reused when both parse and the certificate is valid
/// for at least another day, else generated (self-signed, one year, key mode 0600).
pub fn ensure_self_signed(dir: &Path, node_name: &str, names: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = dir.join("kubelet.crt");
    let key_path = dir.join("kubelet.key");
    if still_valid(&cert_path, &key_path) {
        return Ok((cert_path, key_path));
    }
    let now = jiff::Timestamp::now();
    let (cert_pem, key_pem) = generate_self_signed(node_name, names, now)?;
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    write_file(&key_path, key_pem.as_bytes(), 0o600)?;
    write_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed serving certificate");
    Ok((cert_path, key_path))
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    // Write beside and rename, so a crash never leaves half a key that the next start reuses.
    let tmp = path.with_extension("tmp");
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// PEM certificate and PKCS#8 key, valid from a day ago (clock skew) for a year.
fn generate_self_signed(node_name: &str, names: &[String], now: jiff::Timestamp) -> Result<(String, String), TlsError> {
    let gen = |source| TlsError::Generate { source };
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(gen)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{node_name}@{}", now.as_second()));
    let (y, m, d) = ymd(now - jiff::SignedDuration::from_hours(24));
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = ymd(now + jiff::SignedDuration::from_hours(24 * SELF_SIGNED_VALIDITY_DAYS));
    params.not_after = rcgen::date_time_ymd(y, m, d);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().map_err(gen)?;
    let cert = params.self_signed(&key).map_err(gen)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The UTC calendar date for rcgen (day precision is plenty for a one-year certificate; jiff
/// dates are always valid, so `date_time_ymd`'s checks hold).
fn ymd(t: jiff::Timestamp) -> (i32, u8, u8) {
    let d = t.to_zoned(jiff::tz::TimeZone::UTC).date();
    (i32::from(d.year()), d.month() as u8, d.day() as u8)
}

fn still_valid(cert_path: &Path, key_path: &Path) -> bool {
    let (Ok(certs), Ok(_)) = (read_certs(cert_path), read_key(key_path)) else {
        return false;
    };
    let Some(leaf) = certs.first() else { return false };
    match x509_parser::parse_x509_certificate(leaf.as_ref()) {
        Ok((_, cert)) => {
            let now = jiff::Timestamp::now().as_second();
            let v = cert.validity();
            v.not_before.timestamp() <= now && v.not_after.timestamp() > now + RENEW_BEFORE_SECS
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_deduplicated_with_loopback() {
        let n = self_signed_names("node-a", "node-a", &["10.0.0.5".into(), "127.0.0.1".into()]);
        assert_eq!(n, ["node-a", "10.0.0.5", "127.0.0.1", "localhost", "::1"]);
    }

    #[test]
    fn self_signed_is_generated_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let names = self_signed_names("n1", "host1", &["10.1.2.3".into()]);
        let (c, k) = ensure_self_signed(&pki, "n1", &names).unwrap();
        let first = std::fs::read(&c).unwrap();
        let mode = std::fs::metadata(&k).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        let der = read_certs(&c).unwrap().remove(0);
        let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let san = x.subject_alternative_name().unwrap().unwrap();
        let text = format!("{:?}", san.value.general_names);
        for want in ["n1", "host1", "localhost"] {
            assert!(text.contains(want), "{want} missing from {text}");
        }
        assert!(x.validity().not_after.timestamp() > jiff::Timestamp::now().as_second() + 300 * 86400);
        // Second start: the same files.
        ensure_self_signed(&pki, "n1", &names).unwrap();
        assert_eq!(std::fs::read(&c).unwrap(), first);
    }

    #[test]
    fn expired_or_broken_self_signed_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let names = self_signed_names("n1", "h", &[]);
        let long_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 400);
        let (cert, key) = generate_self_signed("n1", &names, long_ago).unwrap();
        std::fs::write(dir.path().join("kubelet.crt"), &cert).unwrap();
        std::fs::write(dir.path().join("kubelet.key"), &key).unwrap();
        let (c, _) = ensure_self_signed(dir.path(), "n1", &names).unwrap();
        assert_ne!(
            std::fs::read_to_string(&c).unwrap(),
            cert,
            "expired certificate replaced"
        );
        std::fs::write(dir.path().join("kubelet.key"), "garbage").unwrap();
        let before = std::fs::read_to_string(&c).unwrap();
        ensure_self_signed(dir.path(), "n1", &names).unwrap();
        assert_ne!(
            std::fs::read_to_string(&c).unwrap(),
            before,
            "unreadable key: regenerated"
        );
    }

    #[test]
    fn configured_files_and_client_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = generate_self_signed("n1", &["localhost".into()], jiff::Timestamp::now()).unwrap();
        let cp = dir.path().join("tls.crt");
        let kp = dir.path().join("tls.key");
        std::fs::write(&cp, &cert).unwrap();
        std::fs::write(&kp, &key).unwrap();
        let mut cfg = Config::defaults("n1".into());
        cfg.root_dir = dir.path().join("root");
        cfg.tls_cert_file = Some(cp.clone());
        cfg.tls_private_key_file = Some(kp.clone());
        cfg.authentication.x509_client_ca_file = Some(cp.clone());
        let sc = server_config(&cfg, "h", &[]).unwrap();
        assert_eq!(sc.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(
            !cfg.root_dir.join("pki").exists(),
            "no self-signed cert when files are given"
        );

        cfg.tls_private_key_file = None;
        assert!(matches!(server_config(&cfg, "h", &[]), Err(TlsError::HalfConfigured)));
        cfg.tls_private_key_file = Some(dir.path().join("missing.key"));
        let e = server_config(&cfg, "h", &[]).unwrap_err();
        assert!(e.to_string().contains("missing.key"), "{e}");
        cfg.tls_private_key_file = Some(kp);
        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        cfg.authentication.x509_client_ca_file = Some(dir.path().join("empty.pem"));
        assert!(matches!(server_config(&cfg, "h", &[]), Err(TlsError::NoCerts { .. })));
    }
}
