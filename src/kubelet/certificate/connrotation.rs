//! Connections that can all be closed at once (client-go `util/connrotation`): after the client
//! certificate rotates, every pooled and long-running API connection (watches included) is
//! closed, so each request after the rotation is authenticated by the new certificate and none
//! keeps presenting one that is about to expire.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tower::Service;

/// Shared by the connector and whoever rotates certificates.
#[derive(Debug, Default)]
pub struct Tracker {
    conns: Mutex<Vec<Weak<ConnState>>>,
}

#[derive(Debug, Default)]
struct ConnState {
    closed: AtomicBool,
    /// The last reader waiting on this connection, woken to see the close.
    waker: Mutex<Option<Waker>>,
}

impl Tracker {
    pub fn new() -> Arc<Tracker> {
        Arc::new(Tracker::default())
    }

    /// Closes every open connection; the next read or write on each fails and the HTTP client
    /// dials afresh. Returns how many were open.
    pub fn close_all(&self) -> usize {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for c in conns.drain(..).filter_map(|w| w.upgrade()) {
            c.closed.store(true, Ordering::SeqCst);
            if let Some(w) = c.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
                w.wake();
            }
            n += 1;
        }
        n
    }

    fn track(&self) -> Arc<ConnState> {
        let state = Arc::new(ConnState::default());
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|w| w.strong_count() > 0);
        conns.push(Arc::downgrade(&state));
        state
    }
}

/// A connector whose connections the tracker can close.
#[derive(Clone, Debug)]
pub struct TrackingConnector<C> {
    inner: C,
    tracker: Arc<Tracker>,
}

impl<C> TrackingConnector<C> {
    pub fn new(inner: C, tracker: Arc<Tracker>) -> Self {
        Self { inner, tracker }
    }
}

impl<C> Service<http::Uri> for TrackingConnector<C>
where
    C: Service<http::Uri> + Send,
    C::Future: Send + 'static,
    C::Response: Send,
{
    type Response = Tracked<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let fut = self.inner.call(uri);
        let tracker = self.tracker.clone();
        Box::pin(async move {
            let io = fut.await?;
            Ok(Tracked {
                inner: io,
                state: tracker.track(),
            })
        })
    }
}

/// One tracked connection.
#[derive(Debug)]
pub struct Tracked<T> {
    inner: T,
    state: Arc<ConnState>,
}

impl<T> Tracked<T> {
    fn check(&self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.state.closed.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed after the client certificate rotated",
            ));
        }
        *self.state.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        Ok(())
    }
}

impl<T: Read + Unpin> Read for Tracked<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for Tracked<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.state.closed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::ConnectionAborted)));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.state.closed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::ConnectionAborted)));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

impl<T: Connection> Connection for Tracked<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn close_all_fails_a_waiting_read() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"hi").await.unwrap();
            // Keep the connection open and silent.
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        });
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        let tracker = Tracker::new();
        let mut conn = TrackingConnector::new(http, tracker.clone());
        let io = conn.call(format!("http://{addr}").parse().unwrap()).await.unwrap();
        let mut io = TokioIo::new(io);
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 2];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        let reader = tokio::spawn(async move {
            let mut b = [0u8; 1];
            io.read(&mut b).await
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(tracker.close_all(), 1);
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("the waiting read ends")
            .unwrap();
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(tracker.close_all(), 0, "closed connections are forgotten");
        server.abort();
    }
}
