//! A TCP proxy a test controls (feature `testing`), to partition spokes from their hub or a hub
//! replica from etcd.
//!
//! It forwards every connection to an upstream address, byte for byte (TLS passes through
//! untouched, so mutual TLS still works end to end). [`Proxy::cut`] closes every live
//! connection and closes new ones as soon as they arrive, as a network partition seen by both
//! ends would; [`Proxy::heal`] lets connections through again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running proxy; dropping it stops accepting and closes every connection.
pub struct Proxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    live: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (cut, _) = watch::channel(false);
        let live = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream,
            cut.clone(),
            Arc::clone(&live),
        ));
        Ok(Proxy {
            addr,
            cut,
            live,
            accept,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`: what a spoke behind the proxy dials.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Closes every connection and every new one until [`Proxy::heal`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn heal(&self) {
        self.cut.send_replace(false);
    }

    pub fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }

    /// Connections being forwarded right now.
    pub fn live_connections(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Connection tasks end with the cut; the accept loop with the abort.
        self.cut.send_replace(true);
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    cut: watch::Sender<bool>,
    live: Arc<AtomicUsize>,
) {
    loop {
        let (client, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "proxy accept failed");
                continue;
            }
        };
        if *cut.borrow() {
            // Partitioned: the connection ends before a byte goes through.
            drop(client);
            continue;
        }
        let mut cut_rx = cut.subscribe();
        let live = Arc::clone(&live);
        tokio::spawn(async move {
            live.fetch_add(1, Ordering::SeqCst);
            tokio::select! {
                _ = forward(client, upstream) => {}
                _ = cut_rx.wait_for(|cut| *cut) => {}
            }
            live.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr) {
    let mut server = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, %upstream, "proxy cannot reach upstream");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An upstream that echoes whatever it reads.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(msg).await?;
        let mut buf = vec![0; msg.len()];
        stream.read_exact(&mut buf).await?;
        Ok(buf)
    }

    #[tokio::test]
    async fn forwards_cuts_and_heals() {
        let proxy = Proxy::start(echo_server().await).await.expect("proxy");
        let mut a = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(round_trip(&mut a, b"hello").await.expect("echo"), b"hello");
        assert_eq!(proxy.live_connections(), 1);

        proxy.cut();
        assert!(proxy.is_cut());
        // The live connection is closed: a read sees its end (or an error), never data.
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), a.read(&mut buf))
            .await
            .expect("the cut closes the connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        // A new connection is accepted by the kernel, then closed before anything passes.
        let mut b = TcpStream::connect(proxy.addr()).await.expect("connect");
        let echoed = tokio::time::timeout(Duration::from_secs(10), round_trip(&mut b, b"x"))
            .await
            .expect("closed promptly");
        assert!(echoed.is_err(), "nothing passes while cut: {echoed:?}");

        proxy.heal();
        let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(round_trip(&mut c, b"again").await.expect("echo"), b"again");
    }
}
