//! The native backend's image service on real parts: Debian's docker-registry on 127.0.0.1
//! (plain HTTP, htpasswd auth), images built with umoci from busybox-static (two layers, a
//! whiteout), skopeo for archives, and `keel images` driven as a user would.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::backends::native::images::NativeImages;
use keel::genericruntime::seam::{cri, ImageService};

use crate::support::keel::free_port;

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} not runnable ({e}): scripts/test.sh installs it"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

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

fn store_has_no_leftovers(root: &Path) {
    let store = root.join("native/images");
    let snaps: Vec<String> = std::fs::read_dir(store.join("snapshots"))
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
    let ingest = std::fs::read_dir(store.join("content/ingest"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(ingest, 0, "half-written blobs");
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
    assert_eq!(fresh.store().preload(&preload), 1);
    assert!(fresh.store().find("keel/saved:2").is_some());
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

/// Forwards to `upstream` at about 4 MB/s so a pull is still running when the registry dies.
fn slow_proxy(upstream: u16, stop: Arc<AtomicBool>) -> u16 {
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
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match s2.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if c2.write_all(&buf[..n]).is_err() {
                                break;
                            }
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
async fn native_pull_survives_a_registry_killed_mid_pull() {
    let tmp = tempfile::tempdir().unwrap();
    let mut reg = Registry::start(&tmp.path().join("reg"), None);
    let layout = build_image(&tmp.path().join("img"), Some(("big", 24)));
    reg.push(&layout, "v1", "keel/big:1", None);
    let stop = Arc::new(AtomicBool::new(false));
    let proxy = slow_proxy(reg.port, stop.clone());
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
    store_has_no_leftovers(&root);
    let ls = ok(&keel_images(&root, &["ls", "-q"]));
    assert!(ls.trim().is_empty(), "an image was recorded from a failed pull: {ls}");
    // The registry comes back: the retry completes.
    reg.restart();
    ok(&keel_images(&root, &["pull", "-q", &name]));
    store_has_no_leftovers(&root);
    stop.store(true, Ordering::Relaxed);
}

#[tokio::test]
async fn native_pull_refuses_a_corrupt_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), None);
    let layout = build_image(&tmp.path().join("img"), None);
    reg.push(&layout, "v1", "keel/corrupt:1", None);
    // Flip bytes of the biggest blob in the registry's storage (the busybox layer).
    let blobs = tmp.path().join("reg/data/docker/registry/v2/blobs/sha256");
    let mut biggest: Option<(u64, PathBuf)> = None;
    for prefix in std::fs::read_dir(&blobs).unwrap().flatten() {
        for b in std::fs::read_dir(prefix.path()).unwrap().flatten() {
            let data = b.path().join("data");
            let len = std::fs::metadata(&data).unwrap().len();
            if biggest.as_ref().is_none_or(|(l, _)| len > *l) {
                biggest = Some((len, data));
            }
        }
    }
    let (_, data) = biggest.unwrap();
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
