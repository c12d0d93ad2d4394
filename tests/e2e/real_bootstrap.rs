//! Joining a real cluster the way a kubelet does (kubeadm's TLS bootstrapping): a bootstrap
//! token Secret and kubeadm's RBAC bindings, keel started with only a bootstrap kubeconfig; it
//! gets its client certificate through an auto-approved CSR, registers and runs a pod; its
//! serving certificate comes from a `kubelet-serving` CSR the test approves; and a client
//! certificate near its end is rotated by the running keel, which keeps working past the old
//! certificate's expiry while the pod keeps running.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::support::envtest::{self, ControlPlane, EnvTest};
use crate::support::keel::{Keel, KeelOpts};
use crate::support::util::*;

/// kubeadm's bootstrap RBAC (`kubeadm init` phase bootstrap-token).
const BOOTSTRAP_RBAC: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "kubeadm:kubelet-bootstrap"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:node-bootstrapper"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:bootstrappers:kubeadm:default-node-token"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "kubeadm:node-autoapprove-bootstrap"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:certificates.k8s.io:certificatesigningrequests:nodeclient"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:bootstrappers:kubeadm:default-node-token"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "kubeadm:node-autoapprove-certificate-rotation"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:nodes"}
"#;

fn random_lower(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|_| ALPHABET[rand::random::<u32>() as usize % ALPHABET.len()] as char)
        .collect()
}

async fn kubectl_ok(env: &EnvTest, args: &[&str], stdin: Option<&str>) -> String {
    let out = match stdin {
        Some(s) => env.kubectl_stdin(args, s).await,
        None => env.kubectl(args).await,
    };
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bootstrap token Secret as kubeadm makes it; returns `<id>.<secret>`.
async fn create_bootstrap_token(env: &EnvTest) -> (String, String) {
    let (id, secret) = (random_lower(6), random_lower(16));
    let expiration = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1)).to_string();
    let manifest = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: bootstrap-token-{id}, namespace: kube-system}}
type: bootstrap.kubernetes.io/token
stringData:
  token-id: "{id}"
  token-secret: "{secret}"
  expiration: "{expiration}"
  usage-bootstrap-authentication: "true"
  usage-bootstrap-signing: "true"
  auth-extra-groups: "system:bootstrappers:kubeadm:default-node-token"
"#
    );
    kubectl_ok(env, &["apply", "-f", "-"], Some(&manifest)).await;
    kubectl_ok(env, &["apply", "-f", "-"], Some(BOOTSTRAP_RBAC)).await;
    (id.clone(), format!("{id}.{secret}"))
}

fn write_bootstrap_kubeconfig(env: &EnvTest, dir: &Path, token: &str) -> PathBuf {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kubernetes\n  cluster:\n    server: {}\n    certificate-authority: {}\ncontexts:\n- name: tls-bootstrap-token-user@kubernetes\n  context:\n    cluster: kubernetes\n    user: tls-bootstrap-token-user\ncurrent-context: tls-bootstrap-token-user@kubernetes\nusers:\n- name: tls-bootstrap-token-user\n  user:\n    token: {token}\n",
        env.url(),
        env.ca_file().display()
    );
    let path = dir.join("bootstrap-kubelet.conf");
    std::fs::write(&path, text).unwrap();
    path
}

/// The CSRs for `signer` requested by `username`.
async fn csrs(env: &EnvTest, signer: &str, username: &str) -> Vec<Value> {
    let list = get_json(env, &["csr"]).await.unwrap_or_default();
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["spec"]["signerName"] == signer && c["spec"]["username"] == username)
        .collect()
}

fn issued(c: &Value) -> bool {
    c["status"]["certificate"].as_str().is_some_and(|s| !s.is_empty())
}

/// Validity of the certificate in a PEM file (Unix seconds).
fn validity_of(path: &Path) -> (i64, i64) {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(path).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let v = cert.validity();
    (v.not_before.timestamp(), v.not_after.timestamp())
}

/// A client certificate for `system:node:<name>` signed by the cluster CA, valid from
/// `from` to `to` (Unix seconds), as one PEM (cert, then key).
fn short_node_cert(env: &EnvTest, name: &str, from: i64, to: i64) -> String {
    // The issuer as support::envtest's PKI made the CA: its subject and its key.
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(env.dir().join("ca.key")).unwrap()).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "keel-envtest-ca");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    p.distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{name}"));
    p.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(to).unwrap();
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &issuer).unwrap();
    format!("{}{}", cert.pem(), key.serialize_pem())
}

/// The certificate keel's server presents, verified against the cluster CA (a self-signed one
/// fails the handshake), as its DER.
async fn served_cert(ca: &Path, ip: &str, port: u16) -> anyhow::Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca)? {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect((ip, port)).await?;
    let name = rustls::pki_types::ServerName::try_from(ip.to_string())?;
    let tls = connector.connect(name, tcp).await?;
    let (_, conn) = tls.get_ref();
    let certs = conn
        .peer_certificates()
        .ok_or_else(|| anyhow::anyhow!("no certificate"))?;
    Ok(certs[0].as_ref().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_bootstrap_join_serve_and_rotate() {
    let Some(env) = envtest::shared().await.unwrap() else {
        return;
    };
    let name = env.new_node_name();
    let dir = tempfile::tempdir().unwrap();
    let (token_id, token) = create_bootstrap_token(env).await;
    let bootstrap = write_bootstrap_kubeconfig(env, dir.path(), &token);
    let kubeconfig = dir.path().join("kubelet.conf");
    let pki = dir.path().join("pki");
    let config = dir.path().join("kubelet-config.yaml");
    std::fs::write(
        &config,
        format!(
            "kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1beta1\n{}{}rotateCertificates: true\nserverTLSBootstrap: true\n",
            kubelet_auth_config(env),
            NO_EVICTION
        ),
    )
    .unwrap();
    let mut opts = KeelOpts::new(&name, Some(kubeconfig.clone()), &dir.path().join("keel")).time_scale(10.0);
    opts.address = name.clone();
    let opts = opts
        .arg("--bootstrap-kubeconfig")
        .arg(bootstrap.to_string_lossy())
        .arg("--cert-dir")
        .arg(pki.to_string_lossy())
        .arg("--config")
        .arg(config.to_string_lossy());
    let mut keel = Keel::start(opts).await.unwrap();

    // The client certificate: a node-csr-* CSR by the bootstrap token's user, auto-approved.
    let bootstrap_user = format!("system:bootstrap:{token_id}");
    let node_ready = || async {
        let n = get_json(env, &["node", &name]).await?;
        (condition(&n, "Ready")?["status"] == "True").then_some(n)
    };
    let node = match wait_for("node Ready after TLS bootstrap", Duration::from_secs(90), node_ready).await {
        Ok(n) => n,
        Err(e) => panic!(
            "{e}\nkeel log:\n{}\nCSRs:\n{}\nkube-controller-manager:\n{}",
            keel.log_tail(60),
            String::from_utf8_lossy(&env.kubectl(&["get", "csr", "-o", "yaml"]).await.stdout),
            env.log_tail("kube-controller-manager", 40)
        ),
    };
    assert_eq!(node["metadata"]["name"], name.as_str());
    let boot_csrs = csrs(env, "kubernetes.io/kube-apiserver-client-kubelet", &bootstrap_user).await;
    assert_eq!(boot_csrs.len(), 1, "{boot_csrs:?}");
    let csr = &boot_csrs[0];
    assert!(
        csr["metadata"]["name"].as_str().unwrap().starts_with("node-csr-"),
        "{csr}"
    );
    assert!(issued(csr), "{csr}");
    let usages: Vec<&str> = csr["spec"]["usages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(usages, ["digital signature", "key encipherment", "client auth"]);
    assert!(condition(csr, "Approved").is_some(), "{csr}");

    // Files as the kubelet lays them out, and the kubeconfig pointing at them.
    let current = pki.join("kubelet-client-current.pem");
    let first_target = std::fs::read_link(&current).unwrap();
    assert!(
        first_target.to_string_lossy().starts_with("kubelet-client-"),
        "{first_target:?}"
    );
    let kc = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(kc.contains(&*current.to_string_lossy()), "{kc}");
    assert!(!kc.contains(&token), "the bootstrap token is not copied: {kc}");

    // A pod runs.
    let pod = unique("boot");
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: default}}\nspec:\n  nodeName: \"{name}\"\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'echo started; sleep 3600']\n"
    );
    kubectl_ok(env, &["apply", "-f", "-"], Some(&manifest)).await;
    let running = wait_for("the pod Running", Duration::from_secs(60), || async {
        let p = get_json(env, &["pod", &pod, "-n", "default"]).await?;
        (phase(&p) == "Running").then_some(p)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nkeel log:\n{}", keel.log_tail(60)));
    let container_id = running["status"]["containerStatuses"][0]["containerID"].clone();
    assert!(container_id.is_string(), "{running}");

    // The serving certificate: a kubelet-serving CSR by the node, approved by an administrator.
    let node_user = format!("system:node:{name}");
    let serving = wait_for("the kubelet-serving CSR", Duration::from_secs(30), || async {
        csrs(env, "kubernetes.io/kubelet-serving", &node_user)
            .await
            .into_iter()
            .next()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nkeel log:\n{}", keel.log_tail(60)));
    assert!(!issued(&serving), "nobody approves serving CSRs but an admin");
    let serving_name = serving["metadata"]["name"].as_str().unwrap().to_string();
    kubectl_ok(env, &["certificate", "approve", &serving_name], None).await;
    let port = keel.port();
    let der = wait_for("the CA-signed serving certificate", Duration::from_secs(30), || async {
        served_cert(&env.ca_file(), &name, port).await.ok()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nkeel log:\n{}", keel.log_tail(60)));
    let (_, served) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(
        served.subject().iter_common_name().next().unwrap().as_str().unwrap(),
        node_user
    );
    assert!(pki.join("kubelet-server-current.pem").exists());
    // `kubectl logs` through the API server reaches keel's server with that certificate.
    let logs = kubectl_ok(env, &["logs", &pod, "-n", "default"], None).await;
    assert!(logs.contains("started"), "{logs:?}");

    // Rotation: keel restarts onto a client certificate with a minute of life left in all
    // (signed by the cluster CA, as a short --cluster-signing-duration would make it); the
    // running keel renews it 70–84 % into that minute, with no restart.
    keel.kill9().await;
    let now = jiff::Timestamp::now().as_second();
    let (short_from, short_to) = (now - 20, now + 45);
    let short = pki.join("kubelet-client-short.pem");
    std::fs::write(&short, short_node_cert(env, &name, short_from, short_to)).unwrap();
    std::fs::remove_file(&current).unwrap();
    std::os::unix::fs::symlink("kubelet-client-short.pem", &current).unwrap();
    keel.restart_after_kill9().await.unwrap();
    wait_for(
        "node Ready on the short certificate",
        Duration::from_secs(30),
        node_ready,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nkeel log:\n{}", keel.log_tail(60)));
    let rotated = wait_for("the client certificate rotated", Duration::from_secs(60), || async {
        let target = std::fs::read_link(&current).ok()?;
        (target != Path::new("kubelet-client-short.pem") && target != first_target).then_some(target)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nkeel log:\n{}", keel.log_tail(60)));
    let rotated_at = jiff::Timestamp::now().as_second();
    assert!(
        rotated_at >= short_from + 60 * 7 / 10 - 2,
        "rotated {}s after notBefore, before 70 % of the lifetime",
        rotated_at - short_from
    );
    let (nb, na) = validity_of(&pki.join(&rotated));
    assert!(na > short_to + 3600, "the new certificate is a real one: {nb}..{na}");
    let node_csrs = csrs(env, "kubernetes.io/kube-apiserver-client-kubelet", &node_user).await;
    assert_eq!(node_csrs.len(), 1, "one rotation CSR by the node itself: {node_csrs:?}");
    assert!(issued(&node_csrs[0]));
    assert!(keel.is_running(), "rotated without a restart");
    let client_rotations = keel
        .logs()
        .lines()
        .filter(|l| l.contains("certificate rotated") && l.contains("kube-apiserver-client-kubelet"))
        .count();
    assert_eq!(client_rotations, 1, "{}", keel.log_tail(40));

    // Past the old certificate's end the same keel process still talks to the server: the lease
    // renews, the node stays Ready, the pod keeps running in its container.
    let wait_past = (short_to + 5 - jiff::Timestamp::now().as_second()).max(0) as u64;
    tokio::time::sleep(Duration::from_secs(wait_past)).await;
    let lease_args = ["lease", name.as_str(), "-n", "kube-node-lease"];
    wait_for(
        "a lease renewal after the old certificate expired",
        Duration::from_secs(30),
        || async {
            let l = get_json(env, &lease_args).await?;
            let renewed: jiff::Timestamp = l["spec"]["renewTime"].as_str()?.parse().ok()?;
            (renewed.as_second() > short_to).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nkeel log:\n{}", keel.log_tail(60)));
    wait_for("node Ready", Duration::from_secs(10), node_ready)
        .await
        .unwrap();
    let p = get_json(env, &["pod", &pod, "-n", "default"]).await.unwrap();
    assert_eq!(phase(&p), "Running", "{p}");
    assert_eq!(p["status"]["containerStatuses"][0]["containerID"], container_id);
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    assert!(keel.is_running());

    kubectl_ok(env, &["delete", "pod", &pod, "-n", "default", "--wait=false"], None).await;
    let _ = wait_for("the pod gone", Duration::from_secs(60), || async {
        get_json(env, &["pod", &pod, "-n", "default"])
            .await
            .is_none()
            .then_some(())
    })
    .await;
    drop(keel);
    let _ = env.kubectl(&["delete", "node", &name, "--wait=false"]).await;
    let _ = env
        .kubectl(&[
            "delete",
            "secret",
            &format!("bootstrap-token-{token_id}"),
            "-n",
            "kube-system",
        ])
        .await;
}
