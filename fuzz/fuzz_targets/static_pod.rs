//! Feeds arbitrary bytes to the static pod manifest parser as a file of the staticPodPath
//! (src/kubelet/sources/file.rs): decoding (JSON or YAML), then defaulting, naming, hashing and
//! validation. Nothing may panic; a manifest that is accepted gives the same pod every time.
#![no_main]

use std::path::Path;

use keel::kubelet::sources::file::{decode_manifest, make_static_pod};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/etc/kubernetes/manifests/fuzz.yaml");
    let Ok(pod) = decode_manifest(path, data) else { return };
    let first = make_static_pod(pod.clone(), path, "Node-A");
    let second = make_static_pod(pod, path, "Node-A");
    match (first, second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "static pods are deterministic");
            assert!(a.metadata.uid.as_deref().is_some_and(|u| !u.is_empty()));
            if let Some(name) = a.metadata.name.as_deref() {
                assert!(name.ends_with("-node-a"), "{name}");
            }
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!("same manifest, different verdicts: {a:?} / {b:?}"),
    }
});
