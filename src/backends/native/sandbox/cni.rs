//! CNI per the spec (1.0.0), the way libcni and containerd's go-cni drive it.

use std::path::{Path, PathBuf};

use super::SandboxError;

/// The network configuration list in use: the first config file of the conf dir by name.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    pub path: PathBuf,
    pub name: String,
    pub bytes: Vec<u8>,
    pub bin_dirs: Vec<PathBuf>,
}

impl NetworkConfig {
    pub fn load(conf_dir: &Path, bin_dirs: &[PathBuf]) -> Result<Self, SandboxError> {
        let _ = (conf_dir, bin_dirs);
        Err(SandboxError::NetworkNotReady("no network config found".into()))
    }
}
