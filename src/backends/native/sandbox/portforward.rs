//! Port-forward: a TCP connection made inside the sandbox's network namespace, as containerd's
//! `portForward` does (`netns.Do` + dial `localhost:port`). The socket is created on a dedicated
//! thread that joined the netns (a socket keeps the namespace it was made in), then handed to
//! tokio.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::genericruntime::streams::BoxedIo;

use super::namespaces::in_netns;
use super::SandboxError;

/// How long a connect inside the pod may take (a port nobody listens on fails at once).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn dial(port: u16) -> io::Result<TcpStream> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(s) => Ok(s),
        Err(e4) => {
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT)
                .map_err(|e6| io::Error::new(e4.kind(), format!("dial {v4}: {e4}; dial {v6}: {e6}")))
        }
    }
}

/// Connects to 127.0.0.1:port, then [::1]:port, in `netns` (the host's with None: hostNetwork).
pub async fn connect(netns: Option<&Path>, port: u16) -> Result<BoxedIo, SandboxError> {
    let netns = netns.map(Path::to_path_buf);
    let std_stream = tokio::task::spawn_blocking(move || match &netns {
        Some(ns) => in_netns(ns, move || dial(port)),
        None => dial(port),
    })
    .await
    .map_err(|e| SandboxError::Failed(format!("port-forward task: {e}")))?
    .map_err(|e| SandboxError::Failed(format!("failed to connect to localhost:{port} inside namespace: {e}")))?;
    std_stream
        .set_nonblocking(true)
        .map_err(|e| SandboxError::Failed(format!("port-forward socket: {e}")))?;
    // Forwarded traffic is often interactive (a database prompt, a shell over a port): no Nagle
    // delay, as containerd's Go dial has none.
    std_stream
        .set_nodelay(true)
        .map_err(|e| SandboxError::Failed(format!("port-forward socket: {e}")))?;
    let stream = tokio::net::TcpStream::from_std(std_stream)
        .map_err(|e| SandboxError::Failed(format!("port-forward socket: {e}")))?;
    Ok(Box::new(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The connection into the pod has TCP_NODELAY (here on the host's loopback: hostNetwork).
    #[tokio::test]
    async fn dialed_connection_has_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let _io = connect(None, target.port()).await.unwrap();
        let dialed: Vec<bool> = crate::streaming::server::tcp_sockets()
            .into_iter()
            .filter(|(_, peer, _)| *peer == target)
            .map(|(_, _, nodelay)| nodelay)
            .collect();
        assert_eq!(dialed, vec![true], "the dialed socket's TCP_NODELAY");
    }
}
