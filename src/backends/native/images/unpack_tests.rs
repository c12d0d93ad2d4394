//! Tables ported from containerd's `pkg/archive/tar_test.go` (TestBreakouts, whiteouts) plus
//! keel's own cases for compression, devices, owners and xattrs.

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use super::*;

/// One tar entry, names written raw (the tar crate's builder refuses `..` and absolute names,
/// which is exactly what these tests need to feed in).
enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
    Link(&'a str, &'a str),
    Char(&'a str, u32, u32),
    Fifo(&'a str),
    Owned(&'a str, u64, u64, u32),
    Xattr(&'a str, &'a str, &'a [u8]),
}

fn raw_header(name: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    {
        let g = h.as_gnu_mut().unwrap();
        g.name[..name.len()].copy_from_slice(name.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            E::Dir(n, m) => {
                let mut h = raw_header(n, tar::EntryType::Directory, *m, 0);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            E::File(n, data, m) => {
                let mut h = raw_header(n, tar::EntryType::Regular, *m, data.len() as u64);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            E::Symlink(target, n) | E::Link(target, n) => {
                let kind = if matches!(e, E::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                let mut h = raw_header(n, kind, 0o777, 0);
                h.as_gnu_mut().unwrap().linkname[..target.len()].copy_from_slice(target.as_bytes());
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            E::Char(n, major, minor) => {
                let mut h = raw_header(n, tar::EntryType::Char, 0o666, 0);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            E::Fifo(n) => {
                let mut h = raw_header(n, tar::EntryType::Fifo, 0o600, 0);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            E::Owned(n, uid, gid, mode) => {
                let mut h = raw_header(n, tar::EntryType::Regular, *mode, 1);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_cksum();
                b.append(&h, &b"x"[..]).unwrap();
            }
            E::Xattr(n, key, value) => {
                let k = format!("SCHILY.xattr.{key}");
                b.append_pax_extensions([(k.as_str(), *value)]).unwrap();
                let mut h = raw_header(n, tar::EntryType::Regular, 0o644, 0);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// A fresh layer root inside a private directory, so a breakout would land next to it.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("root")).unwrap();
        Self { dir }
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.root().join(rel.trim_start_matches('/'))
    }
    fn apply(&self, entries: &[E]) -> Result<Unpacked, UnpackError> {
        unpack_layer(&tar_of(entries)[..], &self.root(), None)
    }
    /// Nothing was written beside the root, and no absolute path escaped to the host.
    fn assert_contained(&self) {
        let names: Vec<_> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["root".to_string()]);
    }
    /// Paths resolved inside the root (continuity's `fs.RootPath`, as containerd's test does):
    /// a symlink to `/etc` means the layer's /etc, not the host's.
    fn in_root(&self, rel: &str) -> PathBuf {
        join(
            &self.root(),
            &resolve_in_root(&self.root(), &clean(rel.as_bytes())).unwrap(),
        )
    }
    fn same_file(&self, a: &str, b: &str) -> bool {
        let (ma, mb) = (
            fs::metadata(self.in_root(a)).unwrap_or_else(|e| panic!("{a}: {e}")),
            fs::metadata(self.in_root(b)).unwrap_or_else(|e| panic!("{b}: {e}")),
        );
        ma.ino() == mb.ino() && ma.dev() == mb.dev()
    }
}

const UNBROKEN: &[u8] = b"unbroken";

#[test]
fn breakouts_through_symlinks_stay_inside_the_root() {
    let unbroken = |s: &Scratch| assert_eq!(fs::read(s.p("etc/unbroken")).unwrap(), UNBROKEN);
    let cases: Vec<(&str, Vec<E>)> = vec![
        (
            "SymlinkAbsolute",
            vec![
                E::Dir("etc", 0o755),
                E::Symlink("/etc", "localetc"),
                E::File("/localetc/unbroken", UNBROKEN, 0o644),
            ],
        ),
        (
            "SymlinkUpAndOut",
            vec![
                E::Dir("etc", 0o755),
                E::Dir("dummy", 0o755),
                E::Symlink("/dummy/../etc", "localetc"),
                E::File("/localetc/unbroken", UNBROKEN, 0o644),
            ],
        ),
        (
            "SymlinkMultipleAbsolute",
            vec![
                E::Dir("etc", 0o755),
                E::Dir("dummy", 0o755),
                E::Symlink("/etc", "/dummy/etc"),
                E::Symlink("/dummy/etc", "localetc"),
                E::File("/dummy/etc/unbroken", UNBROKEN, 0o644),
            ],
        ),
        (
            "SymlinkMultipleRelative",
            vec![
                E::Dir("etc", 0o755),
                E::Dir("dummy", 0o755),
                E::Symlink("/etc", "/dummy/etc"),
                E::Symlink("./dummy/etc", "localetc"),
                E::File("/dummy/etc/unbroken", UNBROKEN, 0o644),
            ],
        ),
        (
            "DotDotName",
            vec![E::Dir("etc", 0o755), E::File("../../../etc/unbroken", UNBROKEN, 0o644)],
        ),
        ("AbsoluteName", vec![E::File("/etc/unbroken", UNBROKEN, 0o644)]),
    ];
    for (name, entries) in cases {
        let s = Scratch::new();
        s.apply(&entries).unwrap_or_else(|e| panic!("{name}: {e}"));
        unbroken(&s);
        s.assert_contained();
    }
}

#[test]
fn symlink_empty_file_truncates_inside() {
    let s = Scratch::new();
    s.apply(&[
        E::Dir("etc", 0o755),
        E::File("etc/emptied", b"notempty", 0o644),
        E::Symlink("/etc", "localetc"),
        E::File("/localetc/emptied", b"", 0o644),
    ])
    .unwrap();
    assert!(fs::read(s.p("etc/emptied")).unwrap().is_empty());
    s.assert_contained();
}

#[test]
fn hardlinks_resolve_inside_the_root() {
    let passwd = |extra: Vec<E<'static>>| {
        let mut v = vec![E::Dir("etc", 0o770), E::File("/etc/passwd", b"inside", 0o644)];
        v.extend(extra);
        v
    };
    let cases: Vec<(&str, Vec<E>, &str)> = vec![
        (
            "HardlinkRelative",
            passwd(vec![
                E::Dir("breakouts", 0o755),
                E::Symlink("../../etc", "breakouts/d1"),
                E::Link("/breakouts/d1/passwd", "breakouts/mypasswd"),
            ]),
            "/breakouts/mypasswd",
        ),
        (
            "HardlinkDownAndOut",
            passwd(vec![
                E::Dir("breakouts", 0o755),
                E::Dir("downandout", 0o755),
                E::Symlink("../downandout/../../etc", "breakouts/d1"),
                E::Link("/breakouts/d1/passwd", "breakouts/mypasswd"),
            ]),
            "/breakouts/mypasswd",
        ),
        (
            "HardlinkAbsolute",
            passwd(vec![
                E::Symlink("/etc", "localetc"),
                E::Link("/localetc/passwd", "localpasswd"),
            ]),
            "localpasswd",
        ),
        (
            "HardlinkRelativeLong",
            passwd(vec![
                E::Symlink("../../../../../../../etc", "localetc"),
                E::Link("/localetc/passwd", "localpasswd"),
            ]),
            "localpasswd",
        ),
        (
            "HardlinkRelativeUpAndOut",
            passwd(vec![
                E::Symlink("upandout/../../../etc", "localetc"),
                E::Link("/localetc/passwd", "localpasswd"),
            ]),
            "localpasswd",
        ),
        (
            "HardlinkDirectRelative",
            passwd(vec![E::Link("../../../../../etc/passwd", "localpasswd")]),
            "localpasswd",
        ),
        (
            "HardlinkDirectAbsolute",
            passwd(vec![E::Link("/etc/passwd", "localpasswd")]),
            "localpasswd",
        ),
        (
            "SymlinkParentDirectory",
            passwd(vec![E::Symlink("/etc/", ".."), E::Link("/etc/passwd", "localpasswd")]),
            "/localpasswd",
        ),
        (
            "SymlinkEmptyFilename",
            passwd(vec![E::Symlink("/etc/", ""), E::Link("/etc/passwd", "localpasswd")]),
            "/localpasswd",
        ),
        (
            "SymlinkParentRelative",
            passwd(vec![
                E::Symlink("/etc/", "localetc/sub/.."),
                E::Link("/etc/passwd", "/localetc/localpasswd"),
            ]),
            "/localetc/localpasswd",
        ),
        (
            "SymlinkSlashEnded",
            passwd(vec![
                E::Dir("localetc/", 0o770),
                E::Link("/etc/passwd", "/localetc/localpasswd"),
            ]),
            "/localetc/localpasswd",
        ),
    ];
    for (name, entries, link) in cases {
        let s = Scratch::new();
        s.apply(&entries).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(s.same_file(link, "/etc/passwd"), "{name}: {link} is not /etc/passwd");
        s.assert_contained();
    }
}

#[test]
fn hardlink_to_nothing_is_refused() {
    let s = Scratch::new();
    let err = s.apply(&[E::Link("/etc/shadow", "x")]).unwrap_err();
    assert!(matches!(err, UnpackError::LinkTarget { .. }), "{err}");
    s.assert_contained();
}

#[test]
fn symlink_loops_are_refused() {
    let s = Scratch::new();
    let err = s
        .apply(&[E::Symlink("b", "a"), E::Symlink("a", "b"), E::File("a/x", b"", 0o644)])
        .unwrap_err();
    assert!(matches!(err, UnpackError::SymlinkLoop(_)), "{err}");
}

#[test]
fn file_below_a_file_is_refused() {
    let s = Scratch::new();
    let err = s
        .apply(&[E::File("f", b"", 0o644), E::File("f/x", b"", 0o644)])
        .unwrap_err();
    assert!(matches!(err, UnpackError::NotDirectory(_)), "{err}");
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let s = Scratch::new();
    s.apply(&[
        E::Dir("etc", 0o755),
        E::File("etc/.wh.hosts", b"", 0o644),
        E::Dir("var", 0o755),
        E::File("var/.wh..wh..opq", b"", 0o644),
        E::File("var/kept", b"same layer", 0o644),
        // A meta whiteout other than the opaque marker is skipped.
        E::File(".wh..wh.plnk", b"", 0o644),
        // Parent created on the fly for a whiteout in a directory the layer does not list.
        E::File("usr/lib/.wh.libgone.so", b"", 0o644),
    ])
    .unwrap();
    let hosts = fs::symlink_metadata(s.p("etc/hosts")).unwrap();
    assert!(hosts.file_type().is_char_device());
    assert_eq!(hosts.rdev(), 0);
    assert!(!s.p("etc/.wh.hosts").exists());
    assert_eq!(
        xattr::get(s.p("var"), "trusted.overlay.opaque").unwrap().as_deref(),
        Some(&b"y"[..])
    );
    assert!(!s.p("var/.wh..wh..opq").exists());
    assert_eq!(fs::read(s.p("var/kept")).unwrap(), b"same layer");
    assert!(!s.p(".wh..wh.plnk").exists());
    assert!(fs::symlink_metadata(s.p("usr/lib/libgone.so"))
        .unwrap()
        .file_type()
        .is_char_device());
    s.assert_contained();
}

#[test]
fn a_whiteout_never_hides_its_own_layer() {
    let s = Scratch::new();
    s.apply(&[E::File("a", b"mine", 0o644), E::File(".wh.a", b"", 0o644)])
        .unwrap();
    assert_eq!(fs::read(s.p("a")).unwrap(), b"mine");
}

#[test]
fn links_devices_modes_owners_xattrs_kept() {
    let s = Scratch::new();
    s.apply(&[
        E::Dir("bin", 0o755),
        E::File("bin/busybox", b"\x7fELF", 0o4755),
        E::Link("bin/busybox", "bin/sh"),
        E::Symlink("busybox", "bin/ls"),
        E::Dir("dev", 0o755),
        E::Char("dev/null", 1, 3),
        E::Fifo("dev/pipe"),
        E::Dir("home/derek", 0o700),
        E::Owned("home/derek/file", 1000, 1001, 0o640),
        E::Xattr("withattr", "user.key", b"value"),
    ])
    .unwrap();
    let bb = fs::metadata(s.p("bin/busybox")).unwrap();
    assert_eq!(bb.mode() & 0o7777, 0o4755);
    assert!(s.same_file("bin/sh", "bin/busybox"));
    assert_eq!(fs::read_link(s.p("bin/ls")).unwrap(), PathBuf::from("busybox"));
    let null = fs::metadata(s.p("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), makedev(1, 3));
    assert!(fs::metadata(s.p("dev/pipe")).unwrap().file_type().is_fifo());
    assert_eq!(fs::metadata(s.p("home/derek")).unwrap().mode() & 0o7777, 0o700);
    let f = fs::metadata(s.p("home/derek/file")).unwrap();
    if am_root() {
        assert_eq!((f.uid(), f.gid()), (1000, 1001));
    }
    assert_eq!(f.mode() & 0o7777, 0o640);
    assert_eq!(f.mtime(), 1_600_000_000);
    assert_eq!(fs::metadata(s.p("bin")).unwrap().mtime(), 1_600_000_000);
    assert_eq!(
        xattr::get(s.p("withattr"), "user.key").unwrap().as_deref(),
        Some(&b"value"[..])
    );
}

#[test]
fn later_entries_replace_earlier_ones() {
    let s = Scratch::new();
    s.apply(&[
        E::File("bin/myapp", b"x", 0o755),
        E::Dir("bin/myapp", 0o755),
        E::File("bin/myapp/inside", b"y", 0o644),
        E::Dir("d", 0o755),
        E::File("d/f", b"", 0o644),
        E::Symlink("elsewhere", "d"),
    ])
    .unwrap();
    assert!(s.p("bin/myapp").is_dir());
    assert!(fs::symlink_metadata(s.p("d")).unwrap().file_type().is_symlink());
}

#[test]
fn compression_is_detected_and_diff_id_is_of_the_plain_tar() {
    let plain = tar_of(&[
        E::Dir("etc", 0o755),
        E::File("etc/hosts", b"127.0.0.1 localhost", 0o644),
    ]);
    let want = Digest::of(&plain);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    io::Write::write_all(&mut gz, &plain).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::stream::encode_all(&plain[..], 3).unwrap();
    assert_eq!(Compression::detect(&gz), Compression::Gzip);
    assert_eq!(Compression::detect(&zst), Compression::Zstd);
    assert_eq!(Compression::detect(&plain), Compression::None);
    for blob in [&plain, &gz, &zst] {
        let s = Scratch::new();
        let u = unpack_layer(&blob[..], &s.root(), Some(&want)).unwrap();
        assert_eq!(u.diff_id, want);
        assert_eq!(u.tar_size, plain.len() as u64);
        assert_eq!(fs::read(s.p("etc/hosts")).unwrap(), b"127.0.0.1 localhost");
    }
    let s = Scratch::new();
    let other = Digest::of(b"other");
    let err = unpack_layer(&gz[..], &s.root(), Some(&other)).unwrap_err();
    assert!(
        err.to_string().starts_with("wrong diff id calculated on extraction"),
        "{err}"
    );
}

#[test]
fn truncated_layer_is_an_error() {
    let plain = tar_of(&[E::File("big", &[7u8; 10_000], 0o644)]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    io::Write::write_all(&mut gz, &plain).unwrap();
    let gz = gz.finish().unwrap();
    let s = Scratch::new();
    assert!(unpack_layer(&gz[..gz.len() / 2], &s.root(), None).is_err());
}

/// The fuzz target `layer_unpack`'s property on mutations of its seeds: whatever the bytes, no
/// panic and nothing written outside the layer (which sits three levels down in a scratch
/// tree whose other levels must stay as they were).
#[test]
fn mutated_layers_never_escape_the_layer_dir() {
    use rand::{Rng, SeedableRng};
    let seeds_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/layer_unpack");
    let seeds: Vec<Vec<u8>> = ["layer.tar", "escapes.tar", "layer.tar.gz"]
        .iter()
        .map(|f| std::fs::read(seeds_dir.join(f)).unwrap())
        .collect();
    let names = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    for i in 0..300 {
        let mut data = seeds[i % seeds.len()].clone();
        for _ in 0..rng.random_range(0..8) {
            let at = rng.random_range(0..data.len());
            data[at] = rng.random();
        }
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("a/b/root");
        std::fs::create_dir_all(&root).unwrap();
        let _ = unpack_layer(&data[..], &root, None);
        assert_eq!(names(base.path()), ["a"], "input {i} wrote outside the layer");
        assert_eq!(
            names(&base.path().join("a")),
            ["b"],
            "input {i} wrote outside the layer"
        );
        assert_eq!(
            names(&base.path().join("a/b")),
            ["root"],
            "input {i} wrote outside the layer"
        );
        assert!(
            std::fs::symlink_metadata(&root).unwrap().is_dir(),
            "input {i} replaced the root"
        );
    }
}
