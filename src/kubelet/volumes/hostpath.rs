//! hostPath type checks (`pkg/volume/hostpath/host_path.go checkType`, kubelet-behavior.md
//! §4.3): the `*OrCreate` types create what is missing, the others only check, with the
//! kubelet's error texts.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of directories `DirectoryOrCreate` makes.
const CREATED_DIR_MODE: u32 = 0o755;
/// Mode of files `FileOrCreate` makes.
const CREATED_FILE_MODE: u32 = 0o644;

/// Errors of a hostPath setup.
#[derive(Debug, thiserror::Error)]
pub enum HostPathError {
    #[error("invalid HostPath `{path}`: must not contain '..'")]
    Backsteps { path: String },
    #[error("hostPath type check failed: {path} is not a {what}")]
    WrongType { path: String, what: &'static str },
    #[error("hostPath type {kind:?} is not supported")]
    UnknownType { kind: String },
    #[error("creating {path}: {source}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Checks (and for the `*OrCreate` types, makes) `path` as `kind` says.
pub fn check_type(path: &str, kind: Option<&str>) -> Result<(), HostPathError> {
    if path.split('/').any(|seg| seg == "..") {
        return Err(HostPathError::Backsteps { path: path.into() });
    }
    let wrong = |what| {
        Err(HostPathError::WrongType {
            path: path.to_string(),
            what,
        })
    };
    let create_err = |source| HostPathError::Create {
        path: path.to_string(),
        source,
    };
    let meta = std::fs::metadata(path).ok();
    let ft = meta.as_ref().map(|m| m.file_type());
    match kind.unwrap_or("") {
        "" => Ok(()),
        "DirectoryOrCreate" => match ft {
            Some(t) if t.is_dir() => Ok(()),
            Some(_) => wrong("directory"),
            None => {
                std::fs::create_dir_all(path).map_err(create_err)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(CREATED_DIR_MODE)).map_err(create_err)
            }
        },
        "Directory" => match ft {
            Some(t) if t.is_dir() => Ok(()),
            _ => wrong("directory"),
        },
        "FileOrCreate" => match ft {
            Some(t) if t.is_dir() => wrong("file"),
            Some(_) => Ok(()),
            None => {
                // The parent must exist, as for the kubelet: only the file itself is made.
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(CREATED_FILE_MODE)
                    .open(Path::new(path))
                {
                    // Exact mode whatever keel's umask is.
                    Ok(_) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(CREATED_FILE_MODE))
                        .map_err(create_err),
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
                    Err(e) => Err(create_err(e)),
                }
            }
        },
        "File" => match ft {
            Some(t) if !t.is_dir() => Ok(()),
            _ => wrong("file"),
        },
        "Socket" => match ft {
            Some(t) if t.is_socket() => Ok(()),
            _ => wrong("socket file"),
        },
        "CharDevice" => match ft {
            Some(t) if t.is_char_device() => Ok(()),
            _ => wrong("character device"),
        },
        "BlockDevice" => match ft {
            Some(t) if t.is_block_device() => Ok(()),
            _ => wrong("block device"),
        },
        other => Err(HostPathError::UnknownType { kind: other.into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_table() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_string_lossy().into_owned();
        let f = format!("{d}/file");
        std::fs::write(&f, "x").unwrap();
        let s = |p: &str, k: &str| check_type(p, Some(k)).map_err(|e| e.to_string());
        assert!(s(&d, "Directory").is_ok());
        assert_eq!(
            s(&f, "Directory").unwrap_err(),
            format!("hostPath type check failed: {f} is not a directory")
        );
        assert!(s(&format!("{d}/missing"), "Directory").is_err());
        assert!(s(&f, "File").is_ok());
        assert_eq!(
            s(&d, "File").unwrap_err(),
            format!("hostPath type check failed: {d} is not a file")
        );
        assert!(s("/dev/null", "CharDevice").is_ok());
        assert_eq!(
            s(&f, "CharDevice").unwrap_err(),
            format!("hostPath type check failed: {f} is not a character device")
        );
        assert!(s(&f, "BlockDevice").is_err());
        assert!(s(&f, "Socket").unwrap_err().contains("is not a socket file"));
        let sock = format!("{d}/s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(s(&sock, "Socket").is_ok());
        assert!(check_type(&format!("{d}/anything"), None).is_ok());
        assert!(s(&d, "Weird").is_err());
    }

    #[test]
    fn or_create() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_string_lossy().into_owned();
        let nested = format!("{d}/a/b");
        check_type(&nested, Some("DirectoryOrCreate")).unwrap();
        let mode = std::fs::metadata(&nested).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        let f = format!("{d}/a/new.txt");
        check_type(&f, Some("FileOrCreate")).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().len(), 0);
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o644);
        // The parent is not made.
        assert!(check_type(&format!("{d}/no/parent.txt"), Some("FileOrCreate")).is_err());
        assert!(check_type(&nested, Some("FileOrCreate")).is_err());
        assert!(check_type(&f, Some("DirectoryOrCreate")).is_err());
        assert_eq!(
            check_type("/tmp/../etc", Some("Directory")).unwrap_err().to_string(),
            "invalid HostPath `/tmp/../etc`: must not contain '..'"
        );
    }
}
