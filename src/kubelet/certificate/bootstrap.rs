//! TLS bootstrapping and the node's credentials at start-up (`pkg/kubelet/certificate/bootstrap`
//! and the kubelet's `buildKubeletClientConfig`): with a bootstrap kubeconfig and no usable
//! `--kubeconfig`, keel asks for its client certificate with the bootstrap credentials, writes
//! it into the cert dir and writes the kubeconfig pointing at `kubelet-client-current.pem`; with
//! `rotateCertificates` the API client presents whatever the certificate manager holds and the
//! manager renews it; with `serverTLSBootstrap` the serving certificate comes from a
//! `kubernetes.io/kubelet-serving` CSR.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::Api;
use kube::config::{AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};
use tokio_util::sync::CancellationToken;

use super::connrotation::Tracker;
use super::csr::{self, Template};
use super::manager::Manager;
use super::store::{self, Pair, Store, CLIENT_PREFIX, SERVER_PREFIX};
use super::{client, CertError};
use crate::kubelet::config::Config;

/// How long the bootstrap waits for its client certificate (the kubelet's hour).
const BOOTSTRAP_WAIT: Duration = Duration::from_secs(3600);

fn kc_err(path: &Path, message: impl std::fmt::Display) -> CertError {
    CertError::Kubeconfig {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// The current context's cluster and user of a kubeconfig.
fn current_entries(kc: &Kubeconfig, path: &Path) -> Result<(Cluster, Option<AuthInfo>), CertError> {
    let ctx_name = kc
        .current_context
        .clone()
        .or_else(|| kc.contexts.first().map(|c| c.name.clone()))
        .ok_or_else(|| kc_err(path, "no current context"))?;
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.clone())
        .ok_or_else(|| kc_err(path, format!("context {ctx_name:?} not found")))?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| kc_err(path, format!("cluster {:?} not found", ctx.cluster)))?;
    let user = ctx
        .user
        .as_ref()
        .and_then(|u| kc.auth_infos.iter().find(|a| &a.name == u))
        .and_then(|a| a.auth_info.clone());
    Ok((cluster, user))
}

/// The client certificate and key a kubeconfig's current user presents, if any.
fn user_pair(kc: &Kubeconfig, path: &Path) -> Result<Option<Pair>, CertError> {
    use base64::Engine;
    let (_, user) = current_entries(kc, path)?;
    let Some(user) = user else { return Ok(None) };
    let read = |file: &Option<String>, data: &Option<String>| -> Result<Option<Vec<u8>>, CertError> {
        if let Some(d) = data {
            return base64::engine::general_purpose::STANDARD
                .decode(d.trim())
                .map(Some)
                .map_err(|e| kc_err(path, format!("client certificate data: {e}")));
        }
        match file {
            Some(f) => std::fs::read(f).map(Some).map_err(|source| CertError::Io {
                path: PathBuf::from(f),
                source,
            }),
            None => Ok(None),
        }
    };
    let cert = read(&user.client_certificate, &user.client_certificate_data)?;
    let key = read(
        &user.client_key,
        &user.client_key_data.as_ref().map(|s| {
            use secrecy::ExposeSecret;
            s.expose_secret().to_string()
        }),
    )?;
    match (cert, key) {
        (Some(mut c), Some(k)) => {
            if c != k {
                c.push(b'\n');
                c.extend_from_slice(&k);
            }
            Pair::from_pem(&c, path).map(Some)
        }
        _ => Ok(None),
    }
}

/// Is the kubeconfig at `path` there and its client certificate valid now? (The kubelet's
/// `isClientConfigStillValid`: a kubeconfig without a certificate counts as valid.)
pub fn kubeconfig_still_valid(path: &Path) -> bool {
    let Ok(kc) = Kubeconfig::read_from(path) else {
        return false;
    };
    match user_pair(&kc, path) {
        Ok(Some(pair)) => pair.valid_at(jiff::Timestamp::now().as_second()),
        Ok(None) => current_entries(&kc, path).is_ok(),
        Err(e) => {
            tracing::warn!(kubeconfig = %path.display(), error = %e, "kubeconfig's client certificate is unusable");
            false
        }
    }
}

/// The kubeconfig the kubelet writes after bootstrapping: the bootstrap kubeconfig's cluster,
/// and a user whose certificate and key are `cert_file` (`kubelet-client-current.pem`).
pub fn node_kubeconfig(bootstrap: &Kubeconfig, bootstrap_path: &Path, cert_file: &Path) -> Result<String, CertError> {
    let (cluster, _) = current_entries(bootstrap, bootstrap_path)?;
    let cert = cert_file.to_string_lossy().to_string();
    let kc = Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![NamedCluster {
            name: "default-cluster".into(),
            cluster: Some(Cluster {
                server: cluster.server,
                insecure_skip_tls_verify: cluster.insecure_skip_tls_verify,
                certificate_authority: cluster.certificate_authority,
                certificate_authority_data: cluster.certificate_authority_data,
                tls_server_name: cluster.tls_server_name,
                ..Default::default()
            }),
            other: Default::default(),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: "default-auth".into(),
            auth_info: Some(AuthInfo {
                client_certificate: Some(cert.clone()),
                client_key: Some(cert),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        contexts: vec![NamedContext {
            name: "default-context".into(),
            context: Some(Context {
                cluster: "default-cluster".into(),
                user: Some("default-auth".into()),
                namespace: Some("default".into()),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        current_context: Some("default-context".into()),
        ..Default::default()
    };
    serde_saphyr::to_string(&kc).map_err(|e| kc_err(bootstrap_path, e))
}

/// A kube client for a kubeconfig file.
async fn client_from(path: &Path) -> Result<(kube::Client, kube::Config), CertError> {
    let kc = Kubeconfig::read_from(path).map_err(|e| kc_err(path, e))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| kc_err(path, e))?;
    config.default_retry = false;
    let client = kube::Client::try_from(config.clone()).map_err(|e| CertError::Client { message: e.to_string() })?;
    Ok((client, config))
}

/// The kubelet's `LoadClientCert`: makes sure `kubeconfig` holds a valid client certificate,
/// asking for one with the bootstrap credentials when it does not.
pub async fn load_client_cert(
    kubeconfig: &Path,
    bootstrap_path: &Path,
    cert_dir: &Path,
    node_name: &str,
) -> Result<(), CertError> {
    if kubeconfig_still_valid(kubeconfig) {
        tracing::info!(kubeconfig = %kubeconfig.display(), "kubeconfig is valid; skipping TLS bootstrap");
        return Ok(());
    }
    let bootstrap = Kubeconfig::read_from(bootstrap_path).map_err(|e| kc_err(bootstrap_path, e))?;
    let store = Store::new(cert_dir, CLIENT_PREFIX);
    let now = jiff::Timestamp::now().as_second();
    let have = match store.current() {
        Ok(p) => p.filter(|p| p.valid_at(now)),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the stored client certificate");
            None
        }
    };
    if have.is_none() {
        let (client, _) = client_from(bootstrap_path).await?;
        request_client_cert(&client, &store, node_name).await?;
    } else {
        tracing::info!(file = %store.current_path().display(), "using the stored client certificate");
    }
    let text = node_kubeconfig(&bootstrap, bootstrap_path, &store.current_path())?;
    if let Some(dir) = kubeconfig.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    store::write_private(kubeconfig, text.as_bytes())?;
    tracing::info!(kubeconfig = %kubeconfig.display(), "wrote the node kubeconfig");
    Ok(())
}

/// Generates (or reuses the pending) key, requests the client certificate as `node-csr-<hash>`
/// and stores what is issued.
async fn request_client_cert(client: &kube::Client, store: &Store, node_name: &str) -> Result<(), CertError> {
    let pending = store.pending_key_path();
    let key = match std::fs::read_to_string(&pending) {
        Ok(pem) => csr::key_from_pem(&pem)?,
        Err(_) => {
            let k = csr::generate_key()?;
            if let Some(dir) = pending.parent() {
                std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            store::write_private(&pending, k.serialize_pem().as_bytes())?;
            k
        }
    };
    let template = Template::client(node_name);
    let request = csr::request_pem(&template, &key)?;
    let name = csr::digested_name(&rcgen::PublicKeyData::subject_public_key_info(&key), &template);
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let name = csr::create(&api, &csr::csr_object(&template, &request, Some(name))).await?;
    tracing::info!(csr = %name, "TLS bootstrap: waiting for the client certificate");
    let cert = csr::wait_for_certificate(&api, &name, BOOTSTRAP_WAIT).await?;
    store.update(&cert, key.serialize_pem().as_bytes(), jiff::Timestamp::now())?;
    let _ = std::fs::remove_file(&pending);
    tracing::info!(csr = %name, file = %store.current_path().display(), "TLS bootstrap: client certificate issued");
    Ok(())
}

/// The node's API client when keel manages its client certificate: bootstraps it if a
/// bootstrap kubeconfig is configured, then, with `rotateCertificates`, builds a client that
/// presents the certificate manager's current pair and starts the rotation. `Ok(None)`: plain
/// kubeconfig handling applies (no bootstrap, no rotation, or a kubeconfig without a client
/// certificate).
pub async fn node_client(cfg: &Config, shutdown: &CancellationToken) -> Result<Option<kube::Client>, CertError> {
    let Some(kubeconfig) = &cfg.kubeconfig else {
        return Ok(None);
    };
    if let Some(b) = &cfg.bootstrap_kubeconfig {
        load_client_cert(kubeconfig, b, &cfg.cert_dir(), &cfg.node_name).await?;
    }
    if !cfg.rotate_certificates {
        return Ok(None);
    }
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| kc_err(kubeconfig, e))?;
    let Some(initial) = user_pair(&kc, kubeconfig)? else {
        tracing::warn!("rotateCertificates: the kubeconfig's user has no client certificate; nothing to rotate");
        return Ok(None);
    };
    let store = Store::new(cfg.cert_dir(), CLIENT_PREFIX);
    let tracker = Tracker::new();
    let manager = Manager::new(store, Template::client(&cfg.node_name), Some(tracker.clone()))?;
    if manager.certified_key().is_none() {
        // Certificates given by hand (not yet in the store): rotation starts from them.
        manager.install_initial(&initial)?;
    }
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| kc_err(kubeconfig, e))?;
    config.default_retry = false;
    let client = client::rotating_client(&config, manager.clone(), tracker)?;
    tokio::spawn(manager.run(client.clone(), shutdown.clone()));
    Ok(Some(client))
}

/// With `serverTLSBootstrap` (and no tlsCertFile): the serving certificate manager, started.
/// The server has no certificate until the first `kubelet-serving` CSR is approved and issued.
pub fn serving_manager(
    cfg: &Config,
    client: &kube::Client,
    hostname: &str,
    node_ips: &[IpAddr],
    shutdown: &CancellationToken,
) -> Result<Option<Arc<Manager>>, CertError> {
    if !cfg.server_tls_bootstrap || cfg.tls_cert_file.is_some() {
        return Ok(None);
    }
    let template = Template::serving(&cfg.node_name, Vec::new(), Vec::new());
    let (names, ips) = serving_sans(&cfg.node_name, hostname, node_ips);
    let template = Template {
        dns_names: names,
        ip_addresses: ips,
        ..template
    };
    let manager = Manager::new(Store::new(cfg.cert_dir(), SERVER_PREFIX), template, None)?;
    if manager.certified_key().is_none() {
        tracing::info!("serverTLSBootstrap: no serving certificate yet; requesting one (an administrator approves it)");
    }
    tokio::spawn(manager.clone().run(client.clone(), shutdown.clone()));
    Ok(Some(manager))
}

/// The serving certificate's SANs, as the kubelet takes them from its node addresses: the
/// node name and hostname as DNS names (or as IPs where they are addresses) and the node IPs.
pub fn serving_sans(node_name: &str, hostname: &str, node_ips: &[IpAddr]) -> (Vec<String>, Vec<IpAddr>) {
    let mut names = Vec::new();
    let mut ips = Vec::new();
    for n in [node_name, hostname].into_iter().filter(|n| !n.is_empty()) {
        match n.parse::<IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) if !names.iter().any(|x| x == n) => names.push(n.to_string()),
            Err(_) => {}
        }
    }
    for ip in node_ips {
        if !ips.contains(ip) {
            ips.push(*ip);
        }
    }
    (names, ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOTSTRAP: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority: ca.crt
contexts:
- name: tls-bootstrap
  context: {cluster: c, user: kubelet-bootstrap}
current-context: tls-bootstrap
users:
- name: kubelet-bootstrap
  user:
    token: abcdef.0123456789abcdef
"#;

    #[test]
    fn serving_sans_from_names_and_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let (n, i) = serving_sans("127.0.3.4", "host-a", &[ip("10.0.0.2")]);
        assert_eq!(n, ["host-a"]);
        assert_eq!(i, [ip("127.0.3.4"), ip("10.0.0.2")]);
        let (n, i) = serving_sans("node-a", "node-a", &[ip("10.0.0.2"), ip("10.0.0.2")]);
        assert_eq!(n, ["node-a"]);
        assert_eq!(i, [ip("10.0.0.2")]);
    }

    #[test]
    fn written_kubeconfig_points_at_the_current_pair() {
        let dir = tempfile::tempdir().unwrap();
        let bpath = dir.path().join("bootstrap-kubelet.conf");
        std::fs::write(&bpath, BOOTSTRAP).unwrap();
        let bootstrap = Kubeconfig::read_from(&bpath).unwrap();
        let pki = dir.path().join("pki");
        let text = node_kubeconfig(&bootstrap, &bpath, &pki.join("kubelet-client-current.pem")).unwrap();
        let kc = Kubeconfig::from_yaml(&text).unwrap();
        let (cluster, user) = current_entries(&kc, Path::new("x")).unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        // The CA path was made absolute when the bootstrap file was read.
        assert_eq!(
            cluster.certificate_authority.as_deref(),
            Some(dir.path().join("ca.crt").to_str().unwrap())
        );
        let user = user.unwrap();
        let cur = pki.join("kubelet-client-current.pem").to_string_lossy().to_string();
        assert_eq!(user.client_certificate.as_deref(), Some(cur.as_str()));
        assert_eq!(user.client_key.as_deref(), Some(cur.as_str()));
        assert!(user.token.is_none(), "the bootstrap token is not copied");
        assert_eq!(kc.current_context.as_deref(), Some("default-context"));
    }

    #[test]
    fn kubeconfig_validity_follows_its_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let kpath = dir.path().join("kubelet.conf");
        assert!(!kubeconfig_still_valid(&kpath), "missing");
        std::fs::write(dir.path().join("b.conf"), BOOTSTRAP).unwrap();
        let bootstrap = Kubeconfig::read_from(dir.path().join("b.conf")).unwrap();
        let store = Store::new(dir.path().join("pki"), CLIENT_PREFIX);
        let text = node_kubeconfig(&bootstrap, &kpath, &store.current_path()).unwrap();
        std::fs::write(&kpath, text).unwrap();
        assert!(!kubeconfig_still_valid(&kpath), "certificate file missing");

        let write_pair = |from: i64, to: i64| {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut p = rcgen::CertificateParams::new(vec!["n".to_string()]).unwrap();
            p.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
            p.not_after = time::OffsetDateTime::from_unix_timestamp(to).unwrap();
            let cert = p.self_signed(&key).unwrap();
            store
                .update(
                    cert.pem().as_bytes(),
                    key.serialize_pem().as_bytes(),
                    jiff::Timestamp::now(),
                )
                .unwrap();
        };
        let now = jiff::Timestamp::now().as_second();
        write_pair(now - 7200, now - 3600);
        assert!(!kubeconfig_still_valid(&kpath), "expired");
        write_pair(now - 60, now + 3600);
        assert!(kubeconfig_still_valid(&kpath));
        let kc = Kubeconfig::read_from(&kpath).unwrap();
        assert!(user_pair(&kc, &kpath).unwrap().is_some());
    }
}
