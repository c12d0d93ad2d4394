//! The few system calls of the monitor that have no safe wrapper: `fork`, taking ownership of a
//! descriptor received with `SCM_RIGHTS`, and `TIOCSWINSZ`.
#![allow(unsafe_code)]

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::libc;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// Forks; `true` in the child. Called by the monitor while it is still single-threaded (before
/// any thread or descriptor but the standard ones exists), so the child may run anything.
pub fn fork_child() -> std::io::Result<bool> {
    // SAFETY: the monitor process is single-threaded at this point (it was just exec'd and has
    // started no thread), so the child can safely continue running arbitrary Rust code.
    match unsafe { nix::unistd::fork() }.map_err(std::io::Error::from)? {
        nix::unistd::ForkResult::Child => Ok(true),
        nix::unistd::ForkResult::Parent { .. } => Ok(false),
    }
}

/// Receives one descriptor sent with `SCM_RIGHTS` (runc's console socket: the payload is the
/// terminal's name, the descriptor its master).
pub fn recv_fd(sock: &UnixStream) -> std::io::Result<OwnedFd> {
    let mut name = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(std::io::Error::from)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            fds.extend(received);
        }
    }
    let mut owned: Vec<OwnedFd> = fds
        .into_iter()
        // SAFETY: the kernel just installed these descriptors in this process for this message;
        // nothing else owns them.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if owned.is_empty() {
        return Err(std::io::Error::other("no descriptor in the console socket message"));
    }
    // One is expected; any extra ones are closed when `owned` drops.
    Ok(owned.swap_remove(0))
}

nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);

/// Sets a terminal's window size (`TIOCSWINSZ` on the pty master).
pub fn set_winsize(fd: &OwnedFd, width: u16, height: u16) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `fd` is an open descriptor and `ws` a valid winsize that outlives the call.
    unsafe { tiocswinsz(fd.as_raw_fd(), &ws) }.map_err(std::io::Error::from)?;
    Ok(())
}
