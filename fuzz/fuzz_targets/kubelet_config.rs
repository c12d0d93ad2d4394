//! Feeds arbitrary bytes to the KubeletConfiguration file parser (src/kubelet/config.rs,
//! `apply_file`): YAML decoding, every field's type and range checks, durations and quantities.
//! Nothing may panic, and applying an accepted file twice gives the same configuration.
#![no_main]

use std::path::Path;

use keel::kubelet::config::{apply_file, Config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/var/lib/kubelet/config.yaml");
    let mut once = Config::defaults("node-a".into());
    let Ok(ignored) = apply_file(&mut once, &text, path) else { return };
    let mut twice = once.clone();
    let again = apply_file(&mut twice, &text, path).expect("an accepted file is accepted again");
    assert_eq!(ignored, again);
    assert_eq!(format!("{once:?}"), format!("{twice:?}"), "applying a file is idempotent");
});
