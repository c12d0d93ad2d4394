//! Certificate signing requests as the kubelet makes them (client-go `util/certificate/csr`,
//! `pkg/kubelet/certificate`): an ECDSA P-256 key, a PKCS#10 request for
//! `CN=system:node:<name>, O=system:nodes`, a `certificates.k8s.io/v1` CertificateSigningRequest
//! for the kubelet's signers, and the wait for approval and the issued certificate.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;

use super::CertError;

/// The signer of kubelet client certificates (auto-approved by kube-controller-manager).
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of kubelet serving certificates (approved by an administrator).
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// The organisation of every node identity.
pub const NODES_GROUP: &str = "system:nodes";

/// What a certificate is for: the request's subject, SANs, usages and signer.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    /// certificates.k8s.io usages, e.g. "digital signature", "client auth".
    pub usages: Vec<String>,
    pub signer_name: String,
    /// `spec.expirationSeconds` (a requested lifetime; the signer may shorten it).
    pub expiration_seconds: Option<i32>,
}

impl Template {
    /// The kubelet's client certificate: `system:node:<name>` in `system:nodes`, for client
    /// auth. The usages are the kubelet's three (digital signature, key encipherment, client
    /// auth): kube-controller-manager up to 1.26 auto-approves only exactly these; newer ones
    /// also take the ECDSA form without key encipherment.
    pub fn client(node_name: &str) -> Template {
        Template {
            common_name: format!("system:node:{node_name}"),
            organizations: vec![NODES_GROUP.to_string()],
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            usages: vec![
                "digital signature".into(),
                "key encipherment".into(),
                "client auth".into(),
            ],
            signer_name: CLIENT_SIGNER.to_string(),
            expiration_seconds: None,
        }
    }

    /// The kubelet's serving certificate, for the node's host names and addresses (usages as
    /// the client's, for server auth).
    pub fn serving(node_name: &str, dns_names: Vec<String>, ip_addresses: Vec<IpAddr>) -> Template {
        Template {
            common_name: format!("system:node:{node_name}"),
            organizations: vec![NODES_GROUP.to_string()],
            dns_names,
            ip_addresses,
            usages: vec![
                "digital signature".into(),
                "key encipherment".into(),
                "server auth".into(),
            ],
            signer_name: SERVING_SIGNER.to_string(),
            expiration_seconds: None,
        }
    }
}

/// A new ECDSA P-256 private key, as the kubelet generates (`keyutil`/`ecdsa.GenerateKey`).
pub fn generate_key() -> Result<rcgen::KeyPair, CertError> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| CertError::Generate { source })
}

/// Reads a PEM (PKCS#8) private key back.
pub fn key_from_pem(pem: &str) -> Result<rcgen::KeyPair, CertError> {
    rcgen::KeyPair::from_pem(pem).map_err(|source| CertError::Generate { source })
}

/// The PKCS#10 request (PEM) for `template`, signed with `key`.
pub fn request_pem(template: &Template, key: &rcgen::KeyPair) -> Result<String, CertError> {
    let gen = |source| CertError::Generate { source };
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
    let mut dn = rcgen::DistinguishedName::new();
    for o in &template.organizations {
        dn.push(rcgen::DnType::OrganizationName, o.as_str());
    }
    dn.push(rcgen::DnType::CommonName, template.common_name.as_str());
    params.distinguished_name = dn;
    let mut sans = Vec::new();
    for d in &template.dns_names {
        sans.push(rcgen::SanType::DnsName(d.clone().try_into().map_err(gen)?));
    }
    for ip in &template.ip_addresses {
        sans.push(rcgen::SanType::IpAddress(*ip));
    }
    params.subject_alt_names = sans;
    let csr = params.serialize_request(key).map_err(gen)?;
    csr.pem().map_err(gen)
}

/// `node-csr-<digest>`: the kubelet's name for a bootstrap CSR, a SHA-512/256 digest of the
/// public key, subject and usages (`digestedName`), so a restart re-finds its own request.
pub fn digested_name(public_key_der: &[u8], template: &Template) -> String {
    let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA512_256);
    // '|' is outside the base64url alphabet: no two inputs write the same stream.
    let mut write = |data: &[u8]| {
        ctx.update(enc(data).as_bytes());
        ctx.update(b"|");
    };
    write(public_key_der);
    write(template.common_name.as_bytes());
    for o in &template.organizations {
        write(o.as_bytes());
    }
    for u in &template.usages {
        write(u.as_bytes());
    }
    format!("node-csr-{}", enc(ctx.finish().as_ref()))
}

/// The CertificateSigningRequest object for a PEM request. `name` None lets the server
/// generate one from `csr-` (as the kubelet's rotation does).
pub fn csr_object(template: &Template, request_pem: &str, name: Option<String>) -> CertificateSigningRequest {
    let generate_name = name.is_none().then(|| "csr-".to_string());
    CertificateSigningRequest {
        metadata: ObjectMeta {
            name,
            generate_name,
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request_pem.as_bytes().to_vec()),
            signer_name: template.signer_name.clone(),
            usages: Some(template.usages.clone()),
            expiration_seconds: template.expiration_seconds,
            ..Default::default()
        },
        status: None,
    }
}

/// Creates the CSR, or adopts an existing one of the same name made from the same request
/// (a restart during the wait). Returns the object's name.
pub async fn create(
    api: &Api<CertificateSigningRequest>,
    csr: &CertificateSigningRequest,
) -> Result<String, CertError> {
    match api.create(&PostParams::default(), csr).await {
        Ok(made) => made.metadata.name.ok_or(CertError::Unnamed),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let name = csr.metadata.name.clone().unwrap_or_default();
            let existing = api.get(&name).await.map_err(|source| CertError::Api { source })?;
            if existing.spec.request != csr.spec.request || existing.spec.signer_name != csr.spec.signer_name {
                return Err(CertError::Conflict { name });
            }
            Ok(name)
        }
        Err(source) => Err(CertError::Api { source }),
    }
}

/// What a CSR's status says so far.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Pending,
    Issued(Vec<u8>),
    Refused(String),
}

/// Reads a CSR's status: Denied/Failed end the wait; an approved request with a certificate
/// is issued.
pub fn outcome(csr: &CertificateSigningRequest) -> Outcome {
    let Some(status) = &csr.status else {
        return Outcome::Pending;
    };
    for c in status.conditions.iter().flatten() {
        if (c.type_ == "Denied" || c.type_ == "Failed") && c.status != "False" {
            let why = [c.reason.as_deref(), c.message.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ");
            return Outcome::Refused(format!("{} {why}", c.type_));
        }
    }
    let approved = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Approved" && c.status != "False");
    match &status.certificate {
        Some(cert) if approved && !cert.0.is_empty() => Outcome::Issued(cert.0.clone()),
        _ => Outcome::Pending,
    }
}

/// Watches CSR `name` until it is issued (the PEM certificate), refused, or `timeout` passes.
pub async fn wait_for_certificate(
    api: &Api<CertificateSigningRequest>,
    name: &str,
    timeout: Duration,
) -> Result<Vec<u8>, CertError> {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = std::pin::pin!(watcher::watcher(api.clone(), cfg));
    let wait = async {
        while let Some(ev) = stream.next().await {
            let objs = match ev {
                Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => vec![o],
                Ok(watcher::Event::Delete(_)) => return Err(CertError::Deleted { name: name.to_string() }),
                Ok(_) => continue,
                Err(e) => {
                    // The watcher retries by itself on the next poll; say why once per error.
                    tracing::debug!(csr = name, error = %e, "watching the certificate signing request");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            for o in objs {
                match outcome(&o) {
                    Outcome::Pending => {}
                    Outcome::Issued(pem) => return Ok(pem),
                    Outcome::Refused(why) => {
                        return Err(CertError::Refused {
                            name: name.to_string(),
                            why,
                        })
                    }
                }
            }
        }
        Err(CertError::Deleted { name: name.to_string() })
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| CertError::Timeout {
            name: name.to_string(),
            waited: timeout,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::{CertificateSigningRequestCondition, CertificateSigningRequestStatus};

    fn parse_request(pem: &str) -> Vec<u8> {
        let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).unwrap();
        der.as_ref().to_vec()
    }
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::FromDer;

    #[test]
    fn client_request_subject_and_usages() {
        let t = Template::client("node-1");
        assert_eq!(t.signer_name, "kubernetes.io/kube-apiserver-client-kubelet");
        assert_eq!(t.usages, ["digital signature", "key encipherment", "client auth"]);
        let key = generate_key().unwrap();
        let pem = request_pem(&t, &key).unwrap();
        let der = parse_request(&pem);
        let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
        let info = &req.certification_request_info;
        let cn: Vec<_> = info.subject.iter_common_name().map(|a| a.as_str().unwrap()).collect();
        let o: Vec<_> = info.subject.iter_organization().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(cn, ["system:node:node-1"]);
        assert_eq!(o, ["system:nodes"]);
        assert_eq!(
            info.subject_pki.algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );
        let obj = csr_object(&t, &pem, Some("node-csr-x".into()));
        assert_eq!(obj.spec.signer_name, CLIENT_SIGNER);
        assert_eq!(
            obj.spec.usages.as_deref().unwrap(),
            ["digital signature", "key encipherment", "client auth"]
        );
        assert_eq!(obj.metadata.name.as_deref(), Some("node-csr-x"));
        assert!(obj.metadata.generate_name.is_none());
        assert_eq!(obj.spec.request.0, pem.as_bytes());
        assert_eq!(
            csr_object(&t, &pem, None).metadata.generate_name.as_deref(),
            Some("csr-")
        );
    }

    #[test]
    fn serving_request_carries_sans() {
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let t = Template::serving("n2", vec!["n2".into()], vec![ip]);
        assert_eq!(t.signer_name, "kubernetes.io/kubelet-serving");
        assert_eq!(t.usages, ["digital signature", "key encipherment", "server auth"]);
        let pem = request_pem(&t, &generate_key().unwrap()).unwrap();
        let der = parse_request(&pem);
        let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
        let exts = req.requested_extensions().unwrap();
        let text = format!("{:?}", exts.collect::<Vec<_>>());
        assert!(text.contains("n2"), "{text}");
        assert!(text.contains("127.0.0.9") || text.contains("[127, 0, 0, 9]"), "{text}");
    }

    #[test]
    fn digested_name_is_stable_and_input_sensitive() {
        let t = Template::client("n1");
        let a = digested_name(b"key-a", &t);
        assert!(a.starts_with("node-csr-"));
        assert_eq!(a, digested_name(b"key-a", &t));
        assert_ne!(a, digested_name(b"key-b", &t));
        assert_ne!(a, digested_name(b"key-a", &Template::client("n2")));
        // The 32-byte digest in unpadded base64url, a valid object name length.
        assert_eq!(a.len(), "node-csr-".len() + 43);
    }

    fn with_conditions(conds: &[(&str, &str)], cert: Option<&[u8]>) -> CertificateSigningRequest {
        CertificateSigningRequest {
            status: Some(CertificateSigningRequestStatus {
                certificate: cert.map(|c| ByteString(c.to_vec())),
                conditions: Some(
                    conds
                        .iter()
                        .map(|(t, s)| CertificateSigningRequestCondition {
                            type_: t.to_string(),
                            status: s.to_string(),
                            reason: Some("Because".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn outcome_of_status() {
        assert_eq!(outcome(&CertificateSigningRequest::default()), Outcome::Pending);
        assert_eq!(
            outcome(&with_conditions(&[("Approved", "True")], None)),
            Outcome::Pending
        );
        assert_eq!(
            outcome(&with_conditions(&[("Approved", "True")], Some(b"PEM"))),
            Outcome::Issued(b"PEM".to_vec())
        );
        assert!(matches!(
            outcome(&with_conditions(&[("Denied", "True")], None)),
            Outcome::Refused(m) if m.contains("Denied") && m.contains("Because")
        ));
        assert!(matches!(
            outcome(&with_conditions(&[("Approved", "True"), ("Failed", "True")], None)),
            Outcome::Refused(_)
        ));
    }
}
