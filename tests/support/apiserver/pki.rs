//! The test server's PKI: its own CA, the serving certificate, client certificates (CN = user,
//! O = groups, as the real server reads them) and the ServiceAccount token signing key.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType, SigningKey,
};

/// OID of the X.509 `organizationName` attribute; rcgen keeps one value per attribute type, so
/// the second group is written under the same OID as a custom attribute (the decoder reads both).
const ORGANIZATION_OID: [u64; 4] = [2, 5, 4, 10];

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating a key pair")]
    GenerateKey(#[source] rcgen::Error),
    #[error("building certificate parameters")]
    Params(#[source] rcgen::Error),
    #[error("signing certificate for {subject}")]
    Sign {
        subject: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("a client certificate carries at most 2 groups, got {0}")]
    TooManyGroups(usize),
}

/// A PEM certificate and its PKCS#8 PEM key.
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct Pki {
    ca_params: CertificateParams,
    ca_key: KeyPair,
    pub ca_pem: String,
    pub server: CertAndKey,
    sa_key: KeyPair,
}

impl Pki {
    pub fn new() -> Result<Pki, PkiError> {
        let ca_key = KeyPair::generate().map_err(PkiError::GenerateKey)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(PkiError::Params)?;
        ca_params.distinguished_name.push(DnType::CommonName, "keel-test-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(|source| PkiError::Sign {
            subject: "ca".into(),
            source,
        })?;
        let ca_pem = ca_cert.pem();

        let server_key = KeyPair::generate().map_err(PkiError::GenerateKey)?;
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_string(), "kubernetes.default.svc".to_string()])
                .map_err(PkiError::Params)?;
        server_params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        server_params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .map_err(|source| PkiError::Sign {
                subject: "server".into(),
                source,
            })?;
        let server = CertAndKey {
            cert_pem: server_cert.pem(),
            key_pem: server_key.serialize_pem(),
        };
        let sa_key = KeyPair::generate().map_err(PkiError::GenerateKey)?;
        Ok(Pki {
            ca_params,
            ca_key,
            ca_pem,
            server,
            sa_key,
        })
    }

    /// A client certificate the server maps to `user` with `groups`.
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> Result<CertAndKey, PkiError> {
        if groups.len() > 2 {
            return Err(PkiError::TooManyGroups(groups.len()));
        }
        let key = KeyPair::generate().map_err(PkiError::GenerateKey)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(PkiError::Params)?;
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
        let cert = params.signed_by(&key, &issuer).map_err(|source| PkiError::Sign {
            subject: user.to_string(),
            source,
        })?;
        Ok(CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a JWT (ES256) with the ServiceAccount key, as the real token issuer does.
    pub fn sign_jwt(&self, claims: &serde_json::Value) -> Result<String, PkiError> {
        let header = serde_json::json!({"alg": "ES256", "kid": "keel-test"});
        let signing_input = format!(
            "{}.{}",
            base64url(header.to_string().as_bytes()),
            base64url(claims.to_string().as_bytes())
        );
        let der = self
            .sa_key
            .sign(signing_input.as_bytes())
            .map_err(|source| PkiError::Sign {
                subject: "serviceaccount token".into(),
                source,
            })?;
        // JWS wants the raw r||s form; ring yields an ASN.1 DER signature.
        let raw = der_ecdsa_to_raw(&der).unwrap_or(der);
        Ok(format!("{signing_input}.{}", base64url(&raw)))
    }
}

/// Unpadded base64url (RFC 4648 §5).
pub fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// SEQUENCE { INTEGER r, INTEGER s } → 32-byte r || 32-byte s.
fn der_ecdsa_to_raw(der: &[u8]) -> Option<Vec<u8>> {
    let body = der.strip_prefix(&[0x30])?;
    let (_, mut rest) = (body.first()?, body.get(1..)?);
    let mut out = Vec::with_capacity(64);
    for _ in 0..2 {
        if *rest.first()? != 0x02 {
            return None;
        }
        let len = usize::from(*rest.get(1)?);
        let int = rest.get(2..2 + len)?;
        let int = if int.len() > 32 { &int[int.len() - 32..] } else { int };
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        rest = rest.get(2 + len..)?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
