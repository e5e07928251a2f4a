//! The gRPC listener faces anyone who can reach it: a connection that never finishes its TLS
//! handshake is closed, and HTTP/2 bounds what one connection may ask for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitfleet_hub::runtime::{self, HTTP2_MAX_CONCURRENT_STREAMS, HTTP2_MAX_HEADER_LIST_SIZE};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;

#[tokio::test]
async fn a_connection_that_never_finishes_its_tls_handshake_is_closed() {
    let (_tmp, data) = data_dir();
    let mut config = runtime::HubConfig::for_tests(&data);
    config.tls_handshake_timeout = Duration::from_millis(500);
    let hub = runtime::start(config).await.unwrap();
    let addr = hub.grpc_addr();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut silent = TcpStream::connect(addr).unwrap();
        // The deadline of this test, not a pause: the hub must close the socket well before.
        silent
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 64];
        let read = silent.read(&mut buf);
        (read.map_err(|e| e.kind()), started.elapsed())
    })
    .await
    .unwrap();
    match outcome {
        (Ok(0), _) | (Err(std::io::ErrorKind::ConnectionReset), _) => {}
        (other, after) => {
            panic!("a client that sent nothing was not disconnected: {other:?} after {after:?}")
        }
    }
    hub.shutdown().await;
}

/// The HTTP/2 settings the hub's first SETTINGS frame announces, by identifier.
fn server_settings(addr: std::net::SocketAddr, ca_pem: &str) -> Vec<(u16, u32)> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::try_from(addr.ip().to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(tls), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, sock);
    // The client preface, then an empty SETTINGS frame.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .unwrap();
    stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    stream.flush().unwrap();
    loop {
        let mut header = [0u8; 9];
        stream.read_exact(&mut header).unwrap();
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let (kind, flags) = (header[3], header[4]);
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).unwrap();
        // SETTINGS, not an ACK of ours.
        if kind == 4 && flags & 1 == 0 {
            return payload
                .chunks_exact(6)
                .map(|s| {
                    (
                        u16::from_be_bytes([s[0], s[1]]),
                        u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
                    )
                })
                .collect();
        }
    }
}

#[tokio::test]
async fn http2_limits_are_announced_to_every_client() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let (addr, ca) = (hub.grpc_addr(), hub.ca_pem().to_owned());
    // No client certificate: what an unauthenticated client is told.
    let settings = tokio::task::spawn_blocking(move || server_settings(addr, &ca))
        .await
        .unwrap();
    const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    assert!(
        settings.contains(&(MAX_CONCURRENT_STREAMS, HTTP2_MAX_CONCURRENT_STREAMS)),
        "{settings:?}"
    );
    assert!(
        settings.contains(&(MAX_HEADER_LIST_SIZE, HTTP2_MAX_HEADER_LIST_SIZE)),
        "{settings:?}"
    );
    hub.shutdown().await;
}
