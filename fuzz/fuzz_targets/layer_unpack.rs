//! Feeds arbitrary bytes to the native image service's layer unpacker
//! (src/backends/native/images/unpack.rs) as a layer blob: compression detection, tar headers,
//! whiteouts, opaque dirs, links, devices, xattrs, owners. Nothing may panic, and nothing may be
//! written outside the layer's directory: it sits three levels down in a scratch tree whose
//! other levels must stay exactly as they were (a `..` or a symlink that escaped would land there).
#![no_main]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use keel::backends::native::images::unpack::unpack_layer;
use libfuzzer_sys::fuzz_target;

static RUN: AtomicU64 = AtomicU64::new(0);

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    let base: PathBuf = std::env::temp_dir().join(format!("keel-fuzz-unpack-{}-{n}", std::process::id()));
    let root = base.join("a/b/root");
    fs::create_dir_all(&root).expect("scratch dir");
    let _ = unpack_layer(data, &root, None);
    assert_eq!(names(&base), ["a"], "written outside the layer");
    assert_eq!(names(&base.join("a")), ["b"], "written outside the layer");
    assert_eq!(names(&base.join("a/b")), ["root"], "written outside the layer");
    assert!(
        fs::symlink_metadata(&root).is_ok_and(|m| m.is_dir()),
        "the layer root was replaced"
    );
    let _ = fs::remove_dir_all(&base);
});
