//! The hub's TCP listeners as anyone on the network meets them: a bounded number of
//! connections, and none kept once it has been silent for a while.
//!
//! TLS bounds the handshake and HTTP/2 bounds what a connection may ask for, but neither closes
//! a peer that finishes its handshake and then says nothing (hyper's HTTP/2 keepalive pings only
//! once the client's preface has arrived), and nothing bounded how many such peers the hub kept.
//! Here a connection with no byte read or written for the idle timeout is closed, and past the
//! connection limit a new one is closed as soon as it is accepted. The hub's own HTTP/2 keepalive
//! pings every live link well within the idle timeout (see [`Limits::check`]), so a quiet but
//! healthy spoke is never cut off.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tracing::{debug, warn};

/// Connections the hub keeps at once on one listener unless told otherwise: a large fleet (one
/// link per spoke) with room for admins and webhooks.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// How long a connection may go without a byte either way.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Between two warnings about refused connections (a flood must not flood the log too).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);
/// Pause after a failed accept (out of file descriptors, say) before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// What one listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl Limits {
    /// Refuses limits that would cut off healthy peers: no connection at all, or an idle timeout
    /// the hub's keepalive (a ping every `keepalive`, answered within `keepalive_timeout`) cannot
    /// beat.
    pub fn check(&self, keepalive: Duration, keepalive_timeout: Duration) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("the connection limit must be at least 1".into());
        }
        let floor = keepalive + keepalive_timeout;
        if self.idle_timeout <= floor {
            return Err(format!(
                "the idle connection timeout ({}) must be longer than the HTTP/2 keepalive \
                 interval and timeout together ({}), or quiet spokes would be cut off",
                humantime::format_duration(self.idle_timeout),
                humantime::format_duration(floor)
            ));
        }
        Ok(())
    }
}

/// A listener that hands out [`Guarded`] connections within its [`Limits`].
pub struct GuardedListener {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    limits: Limits,
    name: &'static str,
    last_refusal_log: Mutex<Option<Instant>>,
}

impl GuardedListener {
    /// `name` says which listener in the log ("gRPC", "HTTP").
    pub fn new(listener: TcpListener, limits: Limits, name: &'static str) -> Self {
        Self {
            listener,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            name,
            last_refusal_log: Mutex::new(None),
        }
    }

    /// The next connection within the limit; connections beyond it are closed at once.
    pub async fn next(&self) -> (Guarded, SocketAddr) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    debug!(listener = self.name, %error, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            };
            match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(permit) => {
                    let _ = stream.set_nodelay(true);
                    return (Guarded::new(stream, permit, self.limits.idle_timeout), peer);
                }
                Err(_) => {
                    drop(stream);
                    self.log_refusal(peer);
                }
            }
        }
    }

    fn log_refusal(&self, peer: SocketAddr) {
        let mut last = self
            .last_refusal_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY) {
            *last = Some(Instant::now());
            warn!(
                listener = self.name,
                %peer,
                limit = self.limits.max_connections,
                "connection limit reached; closing new connections (raise --max-connections if the fleet needs more)"
            );
        }
    }

    /// The connections, as a stream for tonic's `serve_with_incoming`.
    pub fn into_stream(self) -> impl Stream<Item = io::Result<Guarded>> + Send + 'static {
        futures::stream::unfold(self, |listener| async move {
            let (conn, _) = listener.next().await;
            Some((Ok(conn), listener))
        })
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = Guarded;
    type Addr = SocketAddr;

    fn accept(&mut self) -> impl Future<Output = (Self::Io, Self::Addr)> + Send {
        self.next()
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// An accepted connection: holds its slot under the limit until dropped, and fails its reads
/// and writes once nothing has moved for the idle timeout (the server then closes it).
pub struct Guarded {
    inner: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
}

impl Guarded {
    fn new(inner: TcpStream, slot: OwnedSemaphorePermit, idle_timeout: Duration) -> Self {
        Self {
            inner,
            _slot: slot,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
        }
    }

    fn moved(&mut self) {
        let next = tokio::time::Instant::now() + self.idle_timeout;
        self.idle.as_mut().reset(next);
    }

    /// Called when the inner stream is not ready: an error once the idle time is up (and the
    /// task is woken when it will be).
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.idle.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no data either way for {}",
                    humantime::format_duration(self.idle_timeout)
                ),
            )
        })
    }
}

impl Guarded {
    /// A write's outcome: bytes written count as activity; a write still pending fails once
    /// the idle time is up.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.moved();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.idle_expired(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.idle_expired(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        self.after_write(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_that_would_cut_off_quiet_spokes_are_refused() {
        let keepalive = (Duration::from_secs(30), Duration::from_secs(10));
        let ok = Limits::default();
        assert!(ok.check(keepalive.0, keepalive.1).is_ok());
        let short = Limits {
            idle_timeout: Duration::from_secs(40),
            ..ok
        };
        assert_eq!(
            short.check(keepalive.0, keepalive.1).unwrap_err(),
            "the idle connection timeout (40s) must be longer than the HTTP/2 keepalive interval and timeout together (40s), or quiet spokes would be cut off"
        );
        let none = Limits {
            max_connections: 0,
            ..ok
        };
        assert_eq!(
            none.check(keepalive.0, keepalive.1).unwrap_err(),
            "the connection limit must be at least 1"
        );
    }
}
