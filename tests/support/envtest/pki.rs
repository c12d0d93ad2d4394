//! The real control plane's PKI, made by the test: one CA (client CA, serving CA and the
//! controller-manager's cluster signer, as kubeadm's single cluster CA), the API server's serving
//! certificate, the ServiceAccount key pair and client certificates (CN = user, O = groups).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

/// OID of the X.509 `organizationName` attribute: rcgen keeps one value per attribute type, so a
/// second group goes under the same OID as a custom attribute (Go's x509 reads both as O).
const ORGANIZATION_OID: [u64; 4] = [2, 5, 4, 10];

pub struct Pki {
    ca_params: CertificateParams,
    ca_key: KeyPair,
    dir: PathBuf,
}

/// Paths of a certificate and its key.
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// Creates the CA, serving certificate and ServiceAccount keys, written into `dir`:
    /// `ca.crt`, `ca.key`, `serving.crt`, `serving.key`, `sa.key`, `sa.pub`.
    pub fn create(dir: &Path) -> Result<Pki> {
        let ca_key = KeyPair::generate().context("generating the CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name.push(DnType::CommonName, "keel-envtest-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).context("self-signing the CA")?;
        write(&dir.join("ca.crt"), &ca_cert.pem())?;
        write(&dir.join("ca.key"), &ca_key.serialize_pem())?;
        let pki = Pki {
            ca_params,
            ca_key,
            dir: dir.to_path_buf(),
        };

        // The names and addresses clients use for the API server, in and out of the cluster.
        let dns = [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ];
        let mut params = CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::new(10, 96, 0, 1).into()));
        params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        pki.sign_into(params, "serving")?;

        let sa = KeyPair::generate().context("generating the ServiceAccount key")?;
        write(&dir.join("sa.key"), &sa.serialize_pem())?;
        write(&dir.join("sa.pub"), &sa.public_key_pem())?;
        Ok(pki)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A client certificate for `user` in `groups` (at most 2), written as `<base>.crt/.key`.
    pub fn client_cert(&self, base: &str, user: &str, groups: &[&str]) -> Result<CertFiles> {
        let (cert, key) = self.client_pem(user, groups)?;
        let files = CertFiles {
            cert: self.dir.join(format!("{base}.crt")),
            key: self.dir.join(format!("{base}.key")),
        };
        write(&files.cert, &cert)?;
        write(&files.key, &key)?;
        Ok(files)
    }

    /// Same, as PEM strings (certificate, PKCS#8 key).
    pub fn client_pem(&self, user: &str, groups: &[&str]) -> Result<(String, String)> {
        if groups.len() > 2 {
            bail!("a client certificate carries at most 2 groups, got {}", groups.len());
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        if let Some(g) = groups.first() {
            params.distinguished_name.push(DnType::OrganizationName, *g);
        }
        if let Some(g) = groups.get(1) {
            params
                .distinguished_name
                .push(DnType::CustomDnType(ORGANIZATION_OID.to_vec()), *g);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params
            .signed_by(&key, &issuer)
            .with_context(|| format!("signing a client certificate for {user}"))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    fn sign_into(&self, params: CertificateParams, base: &str) -> Result<CertFiles> {
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params
            .signed_by(&key, &issuer)
            .with_context(|| format!("signing {base}"))?;
        let files = CertFiles {
            cert: self.dir.join(format!("{base}.crt")),
            key: self.dir.join(format!("{base}.key")),
        };
        write(&files.cert, &cert.pem())?;
        write(&files.key, &key.serialize_pem())?;
        Ok(files)
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
