//! Raw HTTPS/1.1 for tests that must see the wire: upgrade handshakes, the 101 head and the
//! bytes after it, error answers to requests a regular client would never send.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Largest response head read.
const MAX_HEAD: usize = 64 * 1024;
/// How long a response head or body may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts any server certificate while still checking the handshake signatures (what
/// kube-apiserver does towards kubelets without `--kubelet-certificate-authority`).
#[derive(Debug)]
pub struct AnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyServerCert {
    pub fn new() -> Arc<AnyServerCert> {
        Arc::new(AnyServerCert {
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        })
    }
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS client: verifying the server against `ca_pem` (None: accepting any server), presenting
/// `identity` (certificate PEM, key PEM) when given. ALPN http/1.1.
pub fn client_config(ca_pem: Option<&str>, identity: Option<(&str, &str)>) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?;
    let builder = match ca_pem {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.context("parsing the CA PEM")?)?;
            }
            builder.with_root_certificates(roots)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(AnyServerCert::new()),
    };
    let mut config = match identity {
        Some((cert, key)) => {
            let certs = CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>()?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())?;
            builder.with_client_auth_cert(certs, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Connects to `addr` (TLS server name 127.0.0.1 / ::1 as the address says).
pub async fn connect(addr: SocketAddr, config: rustls::ClientConfig) -> Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tls = connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .with_context(|| format!("TLS handshake with {addr}"))?;
    Ok(tls)
}

/// A response head.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Writes `request` (a full head ending in a blank line, plus any body) and reads the response
/// head. Returns it with the bytes read past it.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, request: &[u8]) -> Result<(Head, Vec<u8>)> {
    s.write_all(request).await?;
    s.flush().await?;
    read_head(s).await
}

/// Reads one response head.
pub async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Result<(Head, Vec<u8>)> {
    let mut buf = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed before a response head ({} bytes read)", buf.len());
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = resp.parse(&buf)? {
                let head = Head {
                    status: resp.code.unwrap_or(0),
                    headers: resp
                        .headers
                        .iter()
                        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                        .collect(),
                };
                return Ok((head, buf[len..].to_vec()));
            }
            if buf.len() > MAX_HEAD {
                bail!("response head larger than {MAX_HEAD} bytes");
            }
        }
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .context("timed out reading a response head")?
}

/// Reads the body that follows `head` (Content-Length, chunked, or to EOF).
pub async fn read_body<S: AsyncRead + Unpin>(s: &mut S, head: &Head, mut have: Vec<u8>) -> Result<Vec<u8>> {
    let read = async {
        let mut chunk = [0u8; 16384];
        if let Some(len) = head
            .header("content-length")
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            while have.len() < len {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    bail!("body ended after {} of {len} bytes", have.len());
                }
                have.extend_from_slice(&chunk[..n]);
            }
            have.truncate(len);
            return Ok(have);
        }
        let chunked = head
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        loop {
            if chunked {
                if let Some(body) = dechunk(&have)? {
                    return Ok(body);
                }
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                if chunked {
                    bail!("chunked body ended early");
                }
                return Ok(have);
            }
            have.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .context("timed out reading a response body")?
}

/// The body of a complete chunked encoding, or None while incomplete.
fn dechunk(data: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&rest[..eol])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        let start = eol + 2;
        if size == 0 {
            return Ok(Some(out));
        }
        if rest.len() < start + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&rest[start..start + size]);
        rest = &rest[start + size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap().unwrap(), b"abcde");
        assert!(dechunk(b"3\r\nab").unwrap().is_none());
        assert!(dechunk(b"zz\r\n").is_err());
    }
}
