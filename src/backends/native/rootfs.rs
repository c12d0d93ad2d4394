//! A container's root filesystem: overlayfs over the image's unpacked layers with a private
//! upper and work dir (containerd's overlay snapshotter: `lowerdir=<top>:…:<base>`, `index=off`
//! where the kernel has it). readOnlyRootFilesystem is runc's job (`root.readonly`), so the
//! overlay is always writable as containerd's is.

use std::path::{Path, PathBuf};

/// Errors mounting or unmounting a rootfs.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to mount overlay on {target}: {errno} (options {options:?})")]
    Mount {
        target: PathBuf,
        options: String,
        errno: nix::errno::Errno,
    },
    #[error("mount options is too long ({0} bytes)")]
    OptionsTooLong(usize),
    #[error("failed to unmount {target}: {errno}")]
    Unmount { target: PathBuf, errno: nix::errno::Errno },
}

/// Where a container's layer lives under its state dir.
#[derive(Debug, Clone)]
pub struct Layout {
    pub rootfs: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// An empty lower dir for images without layers (overlay needs one).
    pub empty: PathBuf,
}

impl Layout {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            rootfs: state_dir.join("bundle").join("rootfs"),
            upper: state_dir.join("upper"),
            work: state_dir.join("work"),
            empty: state_dir.join("empty"),
        }
    }
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(4096)
}

fn index_supported() -> bool {
    Path::new("/sys/module/overlay/parameters/index").exists()
}

/// The overlay options; `lowers` top first.
pub fn options(lowers: &[PathBuf], upper: &Path, work: &Path, index_off: bool) -> String {
    let lower: Vec<String> = lowers.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let mut o = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    if index_off {
        o.push_str(",index=off");
    }
    o
}

/// The longest common directory prefix of `paths` (`/` separated, ending in `/`), as
/// containerd's `longestCommonPrefix` for compacting lowerdirs.
pub fn common_dir_prefix(paths: &[String]) -> String {
    let Some(first) = paths.first() else {
        return String::new();
    };
    let mut len = first.len();
    for p in &paths[1..] {
        len = len.min(first.bytes().zip(p.bytes()).take_while(|(a, b)| a == b).count());
    }
    match first[..len].rfind('/') {
        Some(i) => first[..=i].to_string(),
        None => String::new(),
    }
}

fn mkdirs(dirs: &[&Path]) -> Result<(), RootfsError> {
    for d in dirs {
        std::fs::create_dir_all(d).map_err(|source| RootfsError::Io {
            op: "mkdir",
            path: d.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

fn mount_overlay(target: &Path, options: &str) -> Result<(), nix::errno::Errno> {
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(options),
    )
}

/// Mounts the overlay on `layout.rootfs` (blocking: call from a blocking thread).
pub fn mount(layout: &Layout, lowers: &[PathBuf]) -> Result<(), RootfsError> {
    mkdirs(&[&layout.rootfs, &layout.upper, &layout.work])?;
    let lowers: Vec<PathBuf> = if lowers.is_empty() {
        mkdirs(&[&layout.empty])?;
        vec![layout.empty.clone()]
    } else {
        lowers.to_vec()
    };
    let index_off = index_supported();
    let opts = options(&lowers, &layout.upper, &layout.work, index_off);
    let limit = page_size() - 512;
    if opts.len() < limit {
        return mount_overlay(&layout.rootfs, &opts).map_err(|errno| RootfsError::Mount {
            target: layout.rootfs.clone(),
            options: opts,
            errno,
        });
    }
    // Too long for one page: mount with lowerdirs relative to their common prefix, from a
    // thread with its own cwd (unshare(CLONE_FS)) so the rest of keel is not moved.
    let strs: Vec<String> = lowers.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let prefix = common_dir_prefix(&strs);
    let rel: Vec<PathBuf> = strs.iter().map(|s| PathBuf::from(&s[prefix.len()..])).collect();
    let short = options(&rel, &layout.upper, &layout.work, index_off);
    if short.len() >= page_size() || prefix.is_empty() {
        return Err(RootfsError::OptionsTooLong(short.len()));
    }
    let target = layout.rootfs.clone();
    let res = std::thread::spawn(move || -> Result<(), nix::errno::Errno> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
        nix::unistd::chdir(Path::new(&prefix))?;
        mount_overlay(&target, &short)
    })
    .join()
    .unwrap_or(Err(nix::errno::Errno::EIO));
    res.map_err(|errno| RootfsError::Mount {
        target: layout.rootfs.clone(),
        options: opts,
        errno,
    })
}

/// Whether something is mounted on `path` (per /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let p = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&p))
}

/// Unmounts the rootfs (lazily, so a process still inside cannot block it); not mounted is fine.
pub fn unmount(layout: &Layout) -> Result<(), RootfsError> {
    loop {
        match nix::mount::umount2(&layout.rootfs, nix::mount::MntFlags::MNT_DETACH) {
            // Stacked mounts (a crash between mount and record) come off one by one.
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(errno) => {
                return Err(RootfsError::Unmount {
                    target: layout.rootfs.clone(),
                    errno,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_prefix() {
        let lowers = vec![PathBuf::from("/s/snapshots/b/fs"), PathBuf::from("/s/snapshots/a/fs")];
        assert_eq!(
            options(&lowers, Path::new("/c/upper"), Path::new("/c/work"), true),
            "lowerdir=/s/snapshots/b/fs:/s/snapshots/a/fs,upperdir=/c/upper,workdir=/c/work,index=off"
        );
        let strs: Vec<String> = vec!["/s/snapshots/abc/fs".into(), "/s/snapshots/abd/fs".into()];
        assert_eq!(common_dir_prefix(&strs), "/s/snapshots/");
        assert_eq!(common_dir_prefix(&["/x/y/fs".to_string()]), "/x/y/");
        assert_eq!(common_dir_prefix(&[]), "");
    }

    /// A real overlay: two lowers (top wins), writes land in upper, and unmount is clean and
    /// repeatable. Then 40 long lowerdirs that only fit through the relative-path mount.
    #[test]
    fn overlay_mounts_and_unmounts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lower = |n: &str, files: &[(&str, &str)]| {
            let p = dir.path().join("snapshots").join(n).join("fs");
            std::fs::create_dir_all(&p).expect("mkdir");
            for (f, c) in files {
                std::fs::write(p.join(f), c).expect("write");
            }
            p
        };
        let base = lower("base", &[("a", "base"), ("b", "base")]);
        let top = lower("top", &[("a", "top")]);
        let layout = Layout::new(&dir.path().join("c1"));
        mount(&layout, &[top, base.clone()]).expect("mount");
        assert!(is_mounted(&layout.rootfs));
        assert_eq!(std::fs::read_to_string(layout.rootfs.join("a")).expect("a"), "top");
        assert_eq!(std::fs::read_to_string(layout.rootfs.join("b")).expect("b"), "base");
        std::fs::write(layout.rootfs.join("new"), "x").expect("write new");
        assert!(layout.upper.join("new").exists());
        unmount(&layout).expect("unmount");
        assert!(!is_mounted(&layout.rootfs));
        unmount(&layout).expect("unmount again");
        assert!(!base.join("new").exists());

        let long: Vec<PathBuf> = (0..45)
            .map(|i| lower(&format!("{i:02}{}", "f".repeat(62)), &[(&format!("f{i}"), "x")]))
            .collect();
        let layout = Layout::new(&dir.path().join("c2"));
        assert!(options(&long, &layout.upper, &layout.work, true).len() > page_size());
        mount(&layout, &long).expect("mount long");
        assert!(layout.rootfs.join("f0").exists() && layout.rootfs.join("f44").exists());
        unmount(&layout).expect("unmount long");
        // No layers at all: an empty lower.
        let layout = Layout::new(&dir.path().join("c3"));
        mount(&layout, &[]).expect("mount empty");
        assert!(is_mounted(&layout.rootfs));
        unmount(&layout).expect("unmount empty");
    }
}
