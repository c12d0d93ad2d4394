//! The certificate manager (client-go `util/certificate/certificate_manager.go`): holds the
//! current pair of one store, hands it to TLS at every handshake (rustls client and server
//! resolvers), and rotates it: at a jittered point 70–84 % into the certificate's lifetime
//! (the kubelet's `0.7 × lifetime` plus up to 20 % of that) it asks for a new certificate with a
//! fresh key, stores it, swaps it in without a restart and closes the API connections that
//! presented the old one.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::Api;
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use super::connrotation::Tracker;
use super::csr::{self, Template};
use super::store::{Pair, Store};
use super::CertError;

/// How long one rotation waits for its CSR to be issued before it starts over (a serving
/// CSR waits for an administrator).
const ISSUE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Back-off after a failed rotation: doubling from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);

/// When to rotate a certificate valid from `not_before` to `not_after` (Unix seconds), given a
/// jitter draw `r` in [0, 1): `not_before + lifetime × 0.7 × (1 + 0.2 r)`, as the kubelet's
/// `nextRotationDeadline` (`wait.Jitter(0.7 × total, 0.2)`).
pub fn rotation_deadline(not_before: i64, not_after: i64, r: f64) -> i64 {
    let total = (not_after - not_before).max(0) as f64;
    let jittered = total * 0.7 * (1.0 + 0.2 * r.clamp(0.0, 1.0));
    not_before + jittered as i64
}

/// The current certificate of one kind and how it is renewed.
#[derive(Debug)]
pub struct Manager {
    store: Store,
    template: RwLock<Template>,
    current: RwLock<Option<Current>>,
    /// Connections to close after a rotation (the client certificate's API connections).
    tracker: Option<Arc<Tracker>>,
    /// Signalled after every successful rotation.
    rotated: tokio::sync::watch::Sender<u64>,
}

#[derive(Clone, Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    not_before: i64,
    not_after: i64,
}

impl Manager {
    /// A manager for `store`, starting from its current pair if any.
    pub fn new(store: Store, template: Template, tracker: Option<Arc<Tracker>>) -> Result<Arc<Manager>, CertError> {
        let m = Manager {
            store,
            template: RwLock::new(template),
            current: RwLock::new(None),
            tracker,
            rotated: tokio::sync::watch::channel(0).0,
        };
        if let Some(pair) = m.store.current()? {
            m.install(&pair)?;
        }
        Ok(Arc::new(m))
    }

    /// Counts rotations; a receiver sees each one.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.rotated.subscribe()
    }

    /// Validity (notBefore, notAfter) of the current certificate, Unix seconds.
    pub fn validity(&self) -> Option<(i64, i64)> {
        self.read().as_ref().map(|c| (c.not_before, c.not_after))
    }

    /// The current certificate and key for TLS.
    pub fn certified_key(&self) -> Option<Arc<CertifiedKey>> {
        self.read().as_ref().map(|c| c.key.clone())
    }

    /// Changes what later requests ask for (the serving certificate's addresses).
    pub fn set_template(&self, t: Template) {
        *self.template.write().unwrap_or_else(|p| p.into_inner()) = t;
    }

    fn template(&self) -> Template {
        self.template.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<Current>> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts from a pair that is not (yet) in the store, e.g. certificates given by hand.
    pub fn install_initial(&self, pair: &Pair) -> Result<(), CertError> {
        self.install(pair)
    }

    fn install(&self, pair: &Pair) -> Result<(), CertError> {
        let signer = rustls::crypto::ring::sign::any_supported_type(&pair.key)
            .map_err(|e| CertError::KeyMismatch { message: e.to_string() })?;
        let key = CertifiedKey::new(pair.chain.clone(), signer);
        // rustls checks that the key signs for the leaf's public key.
        key.keys_match()
            .map_err(|e| CertError::KeyMismatch { message: e.to_string() })?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Current {
            key: Arc::new(key),
            not_before: pair.not_before,
            not_after: pair.not_after,
        });
        Ok(())
    }

    /// Asks for a new certificate with a fresh key through `client`, waits for it, stores it
    /// and swaps it in; then closes the tracked connections.
    pub async fn rotate(&self, client: &kube::Client, timeout: Duration) -> Result<(), CertError> {
        let template = self.template();
        let key = csr::generate_key()?;
        let request = csr::request_pem(&template, &key)?;
        let api: Api<CertificateSigningRequest> = Api::all(client.clone());
        let name = csr::create(&api, &csr::csr_object(&template, &request, None)).await?;
        tracing::info!(csr = %name, signer = %template.signer_name, "requested a new certificate");
        let cert = csr::wait_for_certificate(&api, &name, timeout).await?;
        let pair = self
            .store
            .update(&cert, key.serialize_pem().as_bytes(), jiff::Timestamp::now())?;
        self.install(&pair)?;
        let closed = self.tracker.as_ref().map(|t| t.close_all()).unwrap_or(0);
        self.rotated.send_modify(|n| *n += 1);
        tracing::info!(
            csr = %name,
            signer = %template.signer_name,
            file = %self.store.current_path().display(),
            not_after = %jiff::Timestamp::from_second(pair.not_after).map(|t| t.to_string()).unwrap_or_default(),
            closed_connections = closed,
            "certificate rotated"
        );
        Ok(())
    }

    /// Rotates at each deadline (at once when there is no certificate yet) until `shutdown`;
    /// a failed rotation is retried with a doubling back-off.
    pub async fn run(self: Arc<Self>, client: kube::Client, shutdown: CancellationToken) {
        let mut backoff: Option<Duration> = None;
        loop {
            let wait = match (backoff, self.validity()) {
                (Some(b), _) => b,
                (None, None) => Duration::ZERO,
                (None, Some((nb, na))) => {
                    let deadline = rotation_deadline(nb, na, rand::random::<f64>());
                    let now = jiff::Timestamp::now().as_second();
                    tracing::info!(
                        signer = %self.template().signer_name,
                        rotate_at = %jiff::Timestamp::from_second(deadline).map(|t| t.to_string()).unwrap_or_default(),
                        "certificate rotation scheduled"
                    );
                    Duration::from_secs(deadline.saturating_sub(now).max(0) as u64)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.rotate(&client, ISSUE_TIMEOUT) => r,
            };
            backoff = match result {
                Ok(()) => None,
                Err(e) => {
                    let next = backoff.map(|b| (b * 2).min(BACKOFF_MAX)).unwrap_or(BACKOFF_FIRST);
                    tracing::warn!(error = %e, retry_in = ?next, "certificate rotation failed");
                    Some(next)
                }
            };
        }
    }
}

/// Presents the manager's current certificate as the API client's identity.
#[derive(Debug)]
pub struct ClientResolver(pub Arc<Manager>);

impl rustls::client::ResolvesClientCert for ClientResolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.certified_key()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Serves with the manager's current certificate; without one the handshake fails, as the
/// kubelet's does while its serving CSR waits for approval.
#[derive(Debug)]
pub struct ServerResolver(pub Arc<Manager>);

impl rustls::server::ResolvesServerCert for ServerResolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let key = self.0.certified_key();
        if key.is_none() {
            tracing::debug!("no serving certificate yet: its CSR awaits approval");
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::certificate::store::CLIENT_PREFIX;

    #[test]
    fn deadline_within_the_kubelets_jitter() {
        let (nb, na) = (1_000_000, 1_000_000 + 10_000);
        assert_eq!(rotation_deadline(nb, na, 0.0), nb + 7_000);
        assert_eq!(rotation_deadline(nb, na, 1.0), nb + 8_400);
        for _ in 0..1000 {
            let d = rotation_deadline(nb, na, rand::random::<f64>());
            assert!((nb + 7_000..=nb + 8_400).contains(&d), "{d}");
        }
        // A 60-second certificate rotates 42–50 s after notBefore.
        assert_eq!(rotation_deadline(0, 60, 0.5), 46);
        // Nonsense validity: rotate at once.
        assert_eq!(rotation_deadline(100, 50, 0.3), 100);
    }

    #[test]
    fn manager_loads_and_serves_the_current_pair() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), CLIENT_PREFIX);
        let m = Manager::new(store.clone(), Template::client("n"), None).unwrap();
        assert!(m.certified_key().is_none());
        assert!(m.validity().is_none());

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["n".to_string()]).unwrap();
        p.not_before = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(1_700_003_600).unwrap();
        let cert = p.self_signed(&key).unwrap();
        store
            .update(
                cert.pem().as_bytes(),
                key.serialize_pem().as_bytes(),
                jiff::Timestamp::now(),
            )
            .unwrap();
        let m = Manager::new(store.clone(), Template::client("n"), None).unwrap();
        assert_eq!(m.validity(), Some((1_700_000_000, 1_700_003_600)));
        let ck = m.certified_key().unwrap();
        assert_eq!(ck.cert[0].as_ref(), cert.der().as_ref());

        // A pair whose key does not belong to the certificate is refused.
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let bad = Pair::from_pem(
            format!("{}{}", cert.pem(), other.serialize_pem()).as_bytes(),
            std::path::Path::new("x"),
        )
        .unwrap();
        assert!(matches!(m.install(&bad), Err(CertError::KeyMismatch { .. })));
    }
}
