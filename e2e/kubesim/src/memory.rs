//! A kube-rs client that reaches kubesim over in-memory pipes instead of TCP: the same HTTP,
//! the same kube-rs client and middleware (base URI, bearer token), but no sockets. `fleetsim`
//! uses it so that thousands of simulated clusters in one process do not need two file
//! descriptors per Kubernetes connection (one per end) on top of each spoke's link.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::client::ConfigExt as _;
use tower::{BoxError, ServiceBuilder};

use super::server::{Sim, serve_in_memory};

/// Bytes buffered in each direction of one in-memory connection.
const PIPE_BYTES: usize = 64 * 1024;

/// Opens a fresh in-memory connection to kubesim for every connection the client wants.
#[derive(Clone)]
pub struct Connector {
    sim: Arc<Sim>,
}

/// The client's end of one in-memory connection.
pub struct Pipe(TokioIo<tokio::io::DuplexStream>);

impl Connection for Pipe {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Pipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Pipe {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tower::Service<http::Uri> for Connector {
    type Response = Pipe;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Pipe, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let (client, server) = tokio::io::duplex(PIPE_BYTES);
        tokio::spawn(serve_in_memory(self.sim.clone(), server));
        Box::pin(async move { Ok(Pipe(TokioIo::new(client))) })
    }
}

/// A kube-rs client for `config` (from `KubesimHandle::kube_config`) whose connections are
/// in-memory pipes to `sim`.
pub fn client(sim: Arc<Sim>, config: &kube::Config) -> Result<kube::Client, kube::Error> {
    let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build::<_, kube::client::Body>(Connector { sim });
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .map_err(BoxError::from)
        .service(http);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}
