//! The CRI socket: a stale file from a crashed server is removed, a live server is not
//! replaced, and the file goes away again at shutdown.

use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

/// Errors preparing the socket.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("another server is already listening on {0}")]
    InUse(PathBuf),
    #[error("{path} exists and is not a socket")]
    NotASocket { path: PathBuf },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Binds `path`: creates its directory, removes a socket nobody answers on, refuses one that
/// answers.
pub async fn bind(path: &Path) -> Result<UnixListener, Error> {
    use std::os::unix::fs::FileTypeExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating the directory of", path))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(Error::InUse(path.to_path_buf()));
            }
            debug!(socket = %path.display(), "removing a stale socket");
            std::fs::remove_file(path).map_err(io("removing the stale socket", path))?;
        }
        Ok(_) => {
            return Err(Error::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("inspecting", path)(e)),
    }
    UnixListener::bind(path).map_err(io("listening on", path))
}

/// Removes the socket file at shutdown (an error is only logged: the next start removes it).
pub fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(socket = %path.display(), error = %e, "removing the CRI socket");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_sockets_go_live_ones_stay_other_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cri.sock");
        let live = bind(&path).await.unwrap();
        assert!(matches!(bind(&path).await, Err(Error::InUse(_))));
        drop(live);
        // The file is left behind by the dropped listener: stale now.
        assert!(path.exists());
        let again = bind(&path).await.unwrap();
        drop(again);
        remove(&path);
        assert!(!path.exists());
        std::fs::write(&path, "x").unwrap();
        assert!(matches!(bind(&path).await, Err(Error::NotASocket { .. })));
    }
}
