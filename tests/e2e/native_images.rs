//! The native backend's image service on real parts: Debian's docker-registry on 127.0.0.1
//! (plain HTTP, htpasswd auth), images built with umoci from busybox-static (two layers, a
//! whiteout), skopeo for archives, and `keel images` driven as a user would.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::backends::native::images::NativeImages;
use keel::genericruntime::seam::{cri, ImageService};

use crate::support::keel::free_port;

use crate::support::util::run_ok as run;

/// `keel images …` with a private root.
fn keel_images(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("images")
        .arg("--root-dir")
        .arg(root)
        .args(args)
        .output()
        .expect("running keel")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "keel images failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A docker-registry of the test's own, stopped by PID.
struct Registry {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    htpasswd: Option<PathBuf>,
}

impl Registry {
    fn start(dir: &Path, auth: Option<(&str, &str)>) -> Self {
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let htpasswd = auth.map(|(u, p)| {
            let f = dir.join("htpasswd");
            let line = run("htpasswd", &["-Bbn", u, p]);
            std::fs::write(&f, line).unwrap();
            f
        });
        let mut r = Registry {
            child: None,
            dir: dir.to_path_buf(),
            port: free_port(),
            htpasswd,
        };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let auth = match &self.htpasswd {
            Some(f) => format!("auth:\n  htpasswd:\n    realm: keel-test\n    path: {}\n", f.display()),
            None => String::new(),
        };
        let cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{}\n{auth}",
            self.dir.join("data").display(),
            self.port
        );
        std::fs::write(self.dir.join("config.yml"), cfg).unwrap();
        let log = std::fs::File::create(self.dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry not installed: scripts/test.sh installs it");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "registry did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `skopeo copy oci:<layout>:<tag> docker://<this>/<name>`.
    fn push(&self, layout: &Path, tag: &str, name: &str, creds: Option<&str>) {
        let src = format!("oci:{}:{tag}", layout.display());
        let dst = format!("docker://{}/{name}", self.host());
        let mut args = vec!["--insecure-policy", "copy", "-q", "--dest-tls-verify=false"];
        if let Some(c) = creds {
            args.extend(["--dest-creds", c]);
        }
        args.extend([src.as_str(), dst.as_str()]);
        run("skopeo", &args);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Two layers from busybox-static: the first has busybox, a hard link, a symlink, /etc/gone;
/// the second deletes /etc/gone (a whiteout) and adds /etc/two. Config: user 1000, cmd, env.
fn build_image(dir: &Path, extra: Option<(&str, usize)>) -> PathBuf {
    let layout = dir.join("layout");
    let image = format!("{}:v1", layout.display());
    let bundle = dir.join("bundle");
    run("umoci", &["init", "--layout", layout.to_str().unwrap()]);
    run("umoci", &["new", "--image", &image]);
    run("umoci", &["unpack", "--image", &image, bundle.to_str().unwrap()]);
    let rootfs = bundle.join("rootfs");
    for d in ["bin", "etc", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static");
    std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    std::fs::write(rootfs.join("etc/hello"), "one\n").unwrap();
    std::fs::hard_link(rootfs.join("etc/hello"), rootfs.join("etc/hello.link")).unwrap();
    std::fs::write(rootfs.join("etc/gone"), "deleted in layer two\n").unwrap();
    if let Some((name, mb)) = extra {
        // Incompressible bytes so the layer stays big on the wire.
        let mut f = std::fs::File::create(rootfs.join(name)).unwrap();
        let mut rng = std::fs::File::open("/dev/urandom").unwrap();
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..mb {
            rng.read_exact(&mut buf).unwrap();
            f.write_all(&buf).unwrap();
        }
    }
    run("umoci", &["repack", "--image", &image, bundle.to_str().unwrap()]);
    // A fresh bundle of the one-layer image: repacking the first bundle again would diff
    // against the empty base and write one layer with everything.
    let bundle2 = dir.join("bundle2");
    run("umoci", &["unpack", "--image", &image, bundle2.to_str().unwrap()]);
    let rootfs = bundle2.join("rootfs");
    std::fs::remove_file(rootfs.join("etc/gone")).unwrap();
    std::fs::write(rootfs.join("etc/two"), "two\n").unwrap();
    run("umoci", &["repack", "--image", &image, bundle2.to_str().unwrap()]);
    run(
        "umoci",
        &[
            "config",
            "--image",
            &image,
            "--config.user",
            "1000:1000",
            "--config.cmd",
            "sh",
            "--config.workingdir",
            "/etc",
            "--config.env",
            "HELLO=world",
        ],
    );
    layout
}

/// Asserts no layer is half unpacked (`snapshots/tmp-*`).
fn no_half_made_layers(root: &Path) {
    let snaps: Vec<String> = std::fs::read_dir(root.join("native/images/snapshots"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        snaps.iter().all(|s| !s.starts_with("tmp-")),
        "half-made layers: {snaps:?}"
    );
}

pub(crate) fn store_has_no_leftovers(root: &Path) {
    no_half_made_layers(root);
    let ingest = partial_downloads(root);
    assert!(ingest.is_empty(), "half-written blobs: {ingest:?}");
}

/// What is in the content store's ingest directory (name, bytes).
fn partial_downloads(root: &Path) -> Vec<(String, u64)> {
    std::fs::read_dir(root.join("native/images/content/ingest"))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                    (e.file_name().to_string_lossy().into_owned(), len)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The biggest blob in a registry's storage: (digest hex, path of its data, size).
fn biggest_blob(reg_dir: &Path) -> (String, PathBuf, u64) {
    let blobs = reg_dir.join("data/docker/registry/v2/blobs/sha256");
    let mut biggest: Option<(String, PathBuf, u64)> = None;
    for prefix in std::fs::read_dir(&blobs).unwrap().flatten() {
        for b in std::fs::read_dir(prefix.path()).unwrap().flatten() {
            let data = b.path().join("data");
            let len = std::fs::metadata(&data).unwrap().len();
            if biggest.as_ref().is_none_or(|(_, _, l)| len > *l) {
                let hex = b.file_name().to_string_lossy().into_owned();
                biggest = Some((hex, data, len));
            }
        }
    }
    biggest.expect("blobs in the registry")
}

/// Finds a file in any of the image's unpacked layers (top first).
fn find_in_layers(store: &NativeImages, id: &str, rel: &str) -> Option<PathBuf> {
    let rec = store.store().find(id)?;
    store
        .store()
        .lower_dirs(&rec)
        .into_iter()
        .map(|d| d.join(rel))
        .find(|p| std::fs::symlink_metadata(p).is_ok())
}

#[tokio::test]
async fn native_pull_plain_http_two_layers_with_whiteout() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), None);
    let layout = build_image(&tmp.path().join("img"), None);
    reg.push(&layout, "v1", "keel/two:1", None);
    let root = tmp.path().join("root");
    let name = format!("{}/keel/two:1", reg.host());
    let out = ok(&keel_images(&root, &["pull", "-q", &name]));
    assert!(out.contains("sha256:"), "{out}");
    let ls = ok(&keel_images(&root, &["ls"]));
    assert!(
        ls.contains(&format!("{}/keel/two", reg.host())) && ls.contains("   1   "),
        "{ls}"
    );
    store_has_no_leftovers(&root);

    let images = NativeImages::open(&root, None).unwrap();
    let st = images
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: name.clone(),
                ..Default::default()
            }),
            verbose: true,
        })
        .await
        .unwrap();
    let img = st.image.expect("image known after the pull");
    assert_eq!(img.repo_tags, vec![name.clone()]);
    assert_eq!(img.uid, Some(cri::Int64Value { value: 1000 }));
    assert!(img.repo_digests[0].starts_with(&format!("{}/keel/two@sha256:", reg.host())));
    assert!(img.size > 500_000, "{}", img.size);
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    assert_eq!(info["imageSpec"]["config"]["Cmd"][0], "sh");
    assert_eq!(info["imageSpec"]["config"]["WorkingDir"], "/etc");
    // The top layer turned the whiteout into an overlay whiteout over the lower /etc/gone.
    let rec = images.store().find(&img.id).unwrap();
    let lowers = images.store().lower_dirs(&rec);
    assert_eq!(lowers.len(), 2);
    let wh = std::fs::symlink_metadata(lowers[0].join("etc/gone")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(
        std::fs::read_to_string(lowers[1].join("etc/gone")).unwrap(),
        "deleted in layer two\n"
    );
    assert!(find_in_layers(&images, &img.id, "etc/two").is_some());
    let hello = lowers[1].join("etc/hello");
    let link = lowers[1].join("etc/hello.link");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&hello).unwrap().ino(),
        std::fs::metadata(&link).unwrap().ino()
    );
    assert_eq!(
        std::fs::read_link(lowers[1].join("bin/sh")).unwrap(),
        PathBuf::from("busybox")
    );

    // Pulling again is a no-op on the layers; removing drops everything.
    ok(&keel_images(&root, &["pull", "-q", &name]));
    drop(images);
    ok(&keel_images(&root, &["rm", &name]));
    let ls = ok(&keel_images(&root, &["ls", "-q"]));
    assert!(ls.trim().is_empty(), "{ls}");
    let left: Vec<_> = std::fs::read_dir(root.join("native/images/snapshots"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "layers left after rm: {left:?}");
    let bad = keel_images(&root, &["rm", &name]);
    assert!(!bad.status.success());
}

#[tokio::test]
async fn native_pull_unknown_image_says_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), None);
    let root = tmp.path().join("root");
    let name = format!("{}/keel/nope:1", reg.host());
    let o = keel_images(&root, &["pull", "-q", &name]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "failed to pull and unpack image \"{name}\": failed to resolve reference \"{name}\": {name}: not found"
        )),
        "{err}"
    );
    // Unreachable registry: the connection error is in the message.
    let port = free_port();
    let o = keel_images(&root, &["pull", "-q", &format!("127.0.0.1:{port}/x:1")]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("failed to resolve reference") && err.contains("onnection refused"),
        "{err}"
    );
}

#[tokio::test]
async fn native_pull_with_htpasswd_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), Some(("keel", "s3cret")));
    let layout = build_image(&tmp.path().join("img"), None);
    reg.push(&layout, "v1", "keel/private:1", Some("keel:s3cret"));
    let root = tmp.path().join("root");
    let name = format!("{}/keel/private:1", reg.host());
    let o = keel_images(&root, &["pull", "-q", &name]);
    assert!(!o.status.success(), "anonymous pull of a private image succeeded");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("failed to resolve reference"), "{err}");
    let o = keel_images(&root, &["pull", "-q", "--creds", "keel:wrong", &name]);
    assert!(!o.status.success(), "wrong password accepted");
    ok(&keel_images(&root, &["pull", "-q", "--creds", "keel:s3cret", &name]));

    // The kubelet's path: a pull secret turned into CRI AuthConfig.
    let root2 = tmp.path().join("root2");
    let images = NativeImages::open(&root2, None).unwrap();
    let pulled = images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: name.clone(),
                ..Default::default()
            }),
            auth: Some(cri::AuthConfig {
                username: "keel".into(),
                password: "s3cret".into(),
                server_address: reg.host(),
                ..Default::default()
            }),
            sandbox_config: None,
        })
        .await
        .unwrap();
    assert!(pulled.image_ref.starts_with("sha256:"));
}

#[tokio::test]
async fn native_pull_docker_io_name_through_a_hosts_toml_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), None);
    let layout = build_image(&tmp.path().join("img"), None);
    reg.push(&layout, "v1", "keel/x:1", None);
    let certs = tmp.path().join("certs.d");
    std::fs::create_dir_all(certs.join("docker.io")).unwrap();
    std::fs::write(
        certs.join("docker.io/hosts.toml"),
        format!(
            "server = \"https://registry-1.docker.io\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            reg.host()
        ),
    )
    .unwrap();
    let root = tmp.path().join("root");
    let o = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["images", "pull", "-q", "keel/x:1", "--root-dir"])
        .arg(&root)
        .arg("--registry-config-dir")
        .arg(&certs)
        .output()
        .unwrap();
    ok(&o);
    let ls = ok(&keel_images(&root, &["ls"]));
    assert!(ls.contains("docker.io/keel/x"), "{ls}");
}

#[tokio::test]
async fn native_import_oci_and_docker_archives() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = build_image(&tmp.path().join("img"), None);
    let oci = tmp.path().join("oci.tar");
    run(
        "tar",
        &["-C", layout.to_str().unwrap(), "-cf", oci.to_str().unwrap(), "."],
    );
    let docker = tmp.path().join("docker.tar");
    run(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "-q",
            &format!("oci:{}:v1", layout.display()),
            &format!("docker-archive:{}:keel/saved:2", docker.display()),
        ],
    );
    let root = tmp.path().join("root");
    let out = ok(&keel_images(
        &root,
        &["import", oci.to_str().unwrap(), "--base-name", "example.com/keel/oci"],
    ));
    assert!(out.contains("example.com/keel/oci:v1"), "{out}");
    let out = ok(&keel_images(&root, &["import", docker.to_str().unwrap()]));
    assert!(out.contains("docker.io/keel/saved:2"), "{out}");
    let ls = ok(&keel_images(&root, &["ls"]));
    assert!(
        ls.contains("example.com/keel/oci") && ls.contains("docker.io/keel/saved"),
        "{ls}"
    );
    // Same image both ways: one config, one ID, the layers unpacked once.
    let ids = ok(&keel_images(&root, &["ls", "-q"]));
    assert_eq!(ids.lines().count(), 1, "{ids}");
    let snaps = std::fs::read_dir(root.join("native/images/snapshots")).unwrap().count();
    assert_eq!(snaps, 2);
    store_has_no_leftovers(&root);
    // The start-up preload directory: both archives, into a fresh store.
    let preload = tmp.path().join("preload");
    std::fs::create_dir_all(&preload).unwrap();
    std::fs::copy(&docker, preload.join("a.tar")).unwrap();
    std::fs::write(preload.join("b.tar"), b"not an archive").unwrap();
    let fresh = NativeImages::open(&tmp.path().join("root3"), None).unwrap();
    let r = fresh.preload(&preload).await;
    assert_eq!((r.images, r.imported.len(), r.skipped), (1, 1, 0), "{r:?}");
    assert_eq!(r.failed, vec![preload.join("b.tar")]);
    assert!(fresh.store().find("keel/saved:2").is_some());
    // The next start skips the known archive without reading it (a copy of the OCI archive
    // added meanwhile is imported); an image removed since is imported again.
    std::fs::copy(&oci, preload.join("c.tar")).unwrap();
    drop(fresh);
    let again = NativeImages::open(&tmp.path().join("root3"), None).unwrap();
    let r = again.preload(&preload).await;
    assert_eq!(
        (r.imported.clone(), r.skipped),
        (vec![preload.join("c.tar")], 1),
        "{r:?}"
    );
    let r = again.preload(&preload).await;
    assert_eq!((r.imported.len(), r.skipped, r.failed.len()), (0, 2, 1), "{r:?}");
    again.store().remove("keel/saved:2").unwrap();
    let r = again.preload(&preload).await;
    assert!(r.imported.contains(&preload.join("a.tar")), "{r:?}");
    assert!(again.store().find("keel/saved:2").is_some());
    // No directory: nothing to do.
    assert_eq!(again.preload(&tmp.path().join("none")).await, Default::default());
    // Not an archive at all.
    let junk = tmp.path().join("junk.tar");
    run(
        "tar",
        &[
            "-C",
            tmp.path().join("img").to_str().unwrap(),
            "-cf",
            junk.to_str().unwrap(),
            "bundle/config.json",
        ],
    );
    let o = keel_images(&root, &["import", junk.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("neither an OCI image layout"));
}

/// Forwards to `upstream` at about 4 MB/s so a pull is still running when the registry dies,
/// counting the bytes it passes to the client in `sent`.
pub(crate) fn slow_proxy(upstream: u16, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((client, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            client.set_nonblocking(false).unwrap();
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut c1, mut s1) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c1, &mut s1);
            });
            let (mut c2, mut s2) = (client, server);
            let sent = sent.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match s2.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if c2.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            sent.fetch_add(n as u64, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(4));
                        }
                    }
                }
                let _ = c2.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

#[tokio::test]
async fn native_pull_resumes_after_a_registry_killed_mid_pull() {
    let tmp = tempfile::tempdir().unwrap();
    let mut reg = Registry::start(&tmp.path().join("reg"), None);
    let layout = build_image(&tmp.path().join("img"), Some(("big", 24)));
    reg.push(&layout, "v1", "keel/big:1", None);
    let (big_hex, _, big_size) = biggest_blob(&tmp.path().join("reg"));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let proxy = slow_proxy(reg.port, stop.clone(), sent.clone());
    let root = tmp.path().join("root");
    let name = format!("127.0.0.1:{proxy}/keel/big:1");
    let child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["images", "pull", "-q", &name, "--root-dir"])
        .arg(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let the big layer start flowing, then kill the registry.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    reg.kill();
    let o = child.wait_with_output().unwrap();
    assert!(
        !o.status.success(),
        "pull finished before the registry died: make the layer bigger"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("failed to pull and unpack image"), "{err}");
    let ls = ok(&keel_images(&root, &["ls", "-q"]));
    assert!(ls.trim().is_empty(), "an image was recorded from a failed pull: {ls}");
    // No half-made layer; what arrived of the big layer is kept under its digest.
    let partials = partial_downloads(&root);
    let kept = match partials.as_slice() {
        [(n, len)] if *n == format!("{big_hex}.partial") => *len,
        other => panic!("expected the big layer's partial download only: {other:?}"),
    };
    assert!(kept > 1_000_000 && kept < big_size, "kept {kept} of {big_size}");

    // The registry comes back: the retry (a new process, as after a node restart) asks for
    // the rest only, and the digest is checked over the whole layer.
    reg.restart();
    sent.store(0, Ordering::Relaxed);
    ok(&keel_images(&root, &["pull", "-q", &name]));
    let second = sent.load(Ordering::Relaxed);
    assert!(
        second < big_size - kept / 2,
        "the retry fetched {second} bytes: the big layer ({big_size} bytes, {kept} kept) was downloaded again"
    );
    store_has_no_leftovers(&root);
    let images = NativeImages::open(&root, None).unwrap();
    let rec = images.store().find(&name).expect("image recorded");
    let big = find_in_layers(&images, &rec.id.to_string(), "big").expect("the big file unpacked");
    assert_eq!(std::fs::metadata(big).unwrap().len(), 24 << 20);
    stop.store(true, Ordering::Relaxed);
}

#[tokio::test]
async fn native_pull_drops_an_unusable_partial_download() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), None);
    let layout = build_image(&tmp.path().join("img"), Some(("big", 4)));
    reg.push(&layout, "v1", "keel/junk:1", None);
    let (big_hex, _, big_size) = biggest_blob(&tmp.path().join("reg"));
    let root = tmp.path().join("root");
    // A partial download of the big layer whose bytes are not the layer's (a disk error, a
    // registry that changed the blob): the resumed digest does not match, the pull starts over.
    let ingest = root.join("native/images/content/ingest");
    std::fs::create_dir_all(&ingest).unwrap();
    std::fs::write(ingest.join(format!("{big_hex}.partial")), vec![0x5a; 1 << 20]).unwrap();
    ok(&keel_images(
        &root,
        &["pull", "-q", &format!("{}/keel/junk:1", reg.host())],
    ));
    store_has_no_leftovers(&root);
    // One longer than the blob is dropped before any request.
    ok(&keel_images(&root, &["rm", &format!("{}/keel/junk:1", reg.host())]));
    std::fs::write(
        ingest.join(format!("{big_hex}.partial")),
        vec![0x5a; big_size as usize + 10],
    )
    .unwrap();
    ok(&keel_images(
        &root,
        &["pull", "-q", &format!("{}/keel/junk:1", reg.host())],
    ));
    store_has_no_leftovers(&root);
}

#[tokio::test]
async fn native_pull_refuses_a_corrupt_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), None);
    let layout = build_image(&tmp.path().join("img"), None);
    reg.push(&layout, "v1", "keel/corrupt:1", None);
    // Flip bytes of the biggest blob in the registry's storage (the busybox layer).
    let (_, data, _) = biggest_blob(&tmp.path().join("reg"));
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&data, bytes).unwrap();
    let root = tmp.path().join("root");
    let o = keel_images(&root, &["pull", "-q", &format!("{}/keel/corrupt:1", reg.host())]);
    assert!(!o.status.success(), "a corrupt layer was accepted");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("failed to pull and unpack image"), "{err}");
    store_has_no_leftovers(&root);
    assert!(ok(&keel_images(&root, &["ls", "-q"])).trim().is_empty());
}

#[tokio::test]
async fn native_concurrent_pulls_of_one_image_share_the_work() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), None);
    let layout = build_image(&tmp.path().join("img"), None);
    reg.push(&layout, "v1", "keel/shared:1", None);
    let images = Arc::new(NativeImages::open(&tmp.path().join("root"), None).unwrap());
    let name = format!("{}/keel/shared:1", reg.host());
    let pulls = (0..4).map(|_| {
        let images = images.clone();
        let name = name.clone();
        tokio::spawn(async move {
            images
                .pull_image(cri::PullImageRequest {
                    image: Some(cri::ImageSpec {
                        image: name,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
        })
    });
    let ids: Vec<String> = futures::future::join_all(pulls)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap().image_ref)
        .collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    let snaps = std::fs::read_dir(tmp.path().join("root/native/images/snapshots"))
        .unwrap()
        .count();
    assert_eq!(snaps, 2);
    let listed = images.list_images(Default::default()).await.unwrap();
    assert_eq!(listed.images.len(), 1);
    let fs = images.image_fs_info(Default::default()).await.unwrap();
    assert!(fs.image_filesystems[0].used_bytes.as_ref().unwrap().value > 500_000);
}

/// A mirror in front of `upstream` as some registries are deployed: its API is under
/// `/mirror/` (not `/v2/`) and it answers only requests carrying `x-keel-mirror: yes`
/// (403 otherwise). Counts the requests it served and refused.
fn prefixed_mirror(upstream: u16, stop: Arc<AtomicBool>, served: Arc<AtomicU64>, refused: Arc<AtomicU64>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((mut client, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            client.set_nonblocking(false).unwrap();
            let (served, refused) = (served.clone(), refused.clone());
            std::thread::spawn(move || {
                // One request per connection: read its head (GETs have no body).
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match client.read(&mut b) {
                        Ok(1) => head.push(b[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let mut lines = text.split("\r\n");
                let first = lines.next().unwrap_or_default().to_string();
                let headers: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
                let marked = headers.iter().any(|h| h.eq_ignore_ascii_case("x-keel-mirror: yes"));
                let mut parts = first.split(' ');
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let Some(rest) = path.strip_prefix("/mirror/").filter(|_| marked) else {
                    refused.fetch_add(1, Ordering::Relaxed);
                    let _ =
                        client.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    return;
                };
                served.fetch_add(1, Ordering::Relaxed);
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                let mut req = format!("{method} /v2/{rest} HTTP/1.1\r\n");
                for h in headers
                    .iter()
                    .filter(|h| !h.to_ascii_lowercase().starts_with("connection:"))
                {
                    req.push_str(h);
                    req.push_str("\r\n");
                }
                req.push_str("Connection: close\r\n\r\n");
                if server.write_all(req.as_bytes()).is_err() {
                    return;
                }
                // The answer, told to close (this proxy serves one request per connection).
                let mut status = Vec::new();
                while !status.ends_with(b"\r\n") {
                    match server.read(&mut b) {
                        Ok(1) => status.push(b[0]),
                        _ => return,
                    }
                }
                let _ = client.write_all(&status);
                let _ = client.write_all(b"Connection: close\r\n");
                let _ = std::io::copy(&mut server, &mut client);
            });
        }
    });
    port
}

#[tokio::test]
async fn native_pull_through_a_mirror_with_override_path_and_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), None);
    let layout = build_image(&tmp.path().join("img"), None);
    reg.push(&layout, "v1", "keel/mirrored:1", None);
    let stop = Arc::new(AtomicBool::new(false));
    let (served, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mirror = prefixed_mirror(reg.port, stop.clone(), served.clone(), refused.clone());
    let certs = tmp.path().join("certs.d");
    std::fs::create_dir_all(certs.join("keel.example")).unwrap();
    // The upstream itself is a closed port: only the mirror can serve.
    let closed = free_port();
    let write_hosts = |header: bool| {
        let header = if header {
            format!("  [host.\"http://127.0.0.1:{mirror}/mirror\".header]\n    x-keel-mirror = \"yes\"\n")
        } else {
            String::new()
        };
        std::fs::write(
            certs.join("keel.example/hosts.toml"),
            format!(
                "server = \"http://127.0.0.1:{closed}\"\n\n[host.\"http://127.0.0.1:{mirror}/mirror\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n{header}"
            ),
        )
        .unwrap();
    };
    let pull = |root: &Path| {
        Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["images", "pull", "-q", "keel.example/keel/mirrored:1", "--root-dir"])
            .arg(root)
            .arg("--registry-config-dir")
            .arg(&certs)
            .output()
            .unwrap()
    };
    // Without the header the mirror refuses.
    write_hosts(false);
    let o = pull(&tmp.path().join("root0"));
    assert!(!o.status.success(), "pulled without the mirror's header");
    assert!(refused.load(Ordering::Relaxed) > 0);
    assert_eq!(served.load(Ordering::Relaxed), 0);
    // With it: every request goes to /mirror/… with the header.
    write_hosts(true);
    refused.store(0, Ordering::Relaxed);
    let root = tmp.path().join("root");
    ok(&pull(&root));
    assert_eq!(refused.load(Ordering::Relaxed), 0);
    // manifest, config, two layers
    assert!(
        served.load(Ordering::Relaxed) >= 4,
        "{}",
        served.load(Ordering::Relaxed)
    );
    let ls = ok(&keel_images(&root, &["ls"]));
    assert!(ls.contains("keel.example/keel/mirrored"), "{ls}");
    store_has_no_leftovers(&root);
    stop.store(true, Ordering::Relaxed);
}

/// Unmounts a test's private mount when the test ends, passed or not.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Disk full during a pull: a non-zero exit naming it, nothing listed, no half-made layer; once
/// space returns the same store pulls the image whole.
#[tokio::test]
async fn native_pull_on_a_full_disk_says_so_and_leaves_the_store_whole() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), None);
    let layout = build_image(&tmp.path().join("img"), None);
    reg.push(&layout, "v1", "keel/full:1", None);
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let root_s = root.to_str().unwrap();
    // The image is over 500 kB compressed: 256 kB cannot hold it.
    run("mount", &["-t", "tmpfs", "-o", "size=256k", "keel-test-full", root_s]);
    let _unmount = Unmount(root.clone());
    let name = format!("{}/keel/full:1", reg.host());
    let o = keel_images(&root, &["pull", "-q", &name]);
    assert!(!o.status.success(), "a pull into 256 kB succeeded");
    let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(
        err.contains(&format!("failed to pull and unpack image \"{name}\"")) && err.contains("no space left on device"),
        "{err}"
    );
    let ls = ok(&keel_images(&root, &["ls"]));
    assert!(!ls.contains("keel/full"), "{ls}");
    no_half_made_layers(&root);

    run("mount", &["-o", "remount,size=64m", root_s]);
    ok(&keel_images(&root, &["pull", "-q", &name]));
    let ls = ok(&keel_images(&root, &["ls"]));
    assert!(ls.contains(&format!("{}/keel/full", reg.host())), "{ls}");
    store_has_no_leftovers(&root);
}
