//! The gRPC listener faces anyone who can reach it: a connection that never finishes its TLS
//! handshake is closed, and HTTP/2 bounds what one connection may ask for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

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

/// A TLS client of the hub (no client certificate) offering HTTP/2.
fn tls_client(addr: std::net::SocketAddr, ca_pem: &str) -> rustls::ClientConnection {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::try_from(addr.ip().to_string()).unwrap();
    rustls::ClientConnection::new(Arc::new(tls), name).unwrap()
}

/// The HTTP/2 settings the hub's first SETTINGS frame announces, by identifier.
fn server_settings(addr: std::net::SocketAddr, ca_pem: &str) -> Vec<(u16, u32)> {
    let conn = tls_client(addr, ca_pem);
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

/// A TLS session with the hub (no client certificate) that then sends nothing at all; returns
/// how the hub ended it (Ok(()) when it closed the connection within the test's deadline).
fn silent_after_handshake(addr: std::net::SocketAddr, ca_pem: &str) -> Result<(), String> {
    let mut conn = tls_client(addr, ca_pem);
    let mut sock = TcpStream::connect(addr).unwrap();
    // The deadline of this test, not a pause: the hub must close the socket well before.
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    // No preface, nothing: read (the hub's SETTINGS may come) until the hub hangs up.
    let mut stream = rustls::StreamOwned::new(conn, sock);
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(format!("still connected: {e}")),
        }
    }
}

#[tokio::test]
async fn a_client_that_says_nothing_after_its_handshake_is_closed() {
    let (_tmp, data) = data_dir();
    let mut config = runtime::HubConfig::for_tests(&data);
    config.connection_limits.idle_timeout = Duration::from_millis(500);
    let hub = runtime::start(config).await.unwrap();
    let (addr, ca) = (hub.grpc_addr(), hub.ca_pem().to_owned());
    let outcome = tokio::task::spawn_blocking(move || silent_after_handshake(addr, &ca))
        .await
        .unwrap();
    assert_eq!(outcome, Ok(()), "a silent client kept its connection");
    hub.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_and_a_freed_slot_serves_again() {
    let (_tmp, data) = data_dir();
    let mut config = runtime::HubConfig::for_tests(&data);
    config.connection_limits.max_connections = 2;
    // Long enough that only the limit can close the third connection within the deadline.
    config.tls_handshake_timeout = Duration::from_secs(120);
    let hub = runtime::start(config).await.unwrap();
    let addr = hub.grpc_addr();
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let third = tokio::task::spawn_blocking(move || {
        let mut third = TcpStream::connect(addr).unwrap();
        third
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut buf = [0u8; 16];
        third.read(&mut buf).map_err(|e| e.kind())
    })
    .await
    .unwrap();
    assert!(
        matches!(third, Ok(0) | Err(std::io::ErrorKind::ConnectionReset)),
        "the connection over the limit was kept: {third:?}"
    );

    // Once the two held connections go, their slots serve a real client again.
    drop(held);
    let cfg = admin_config(&hub);
    let ctx = cfg.context(None).unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let listed = async {
            let ch = try_channel(
                &ctx.server,
                &ctx.certificate_authority_data,
                Some((&ctx.client_certificate_data, &ctx.client_key_data)),
            )
            .await
            .map_err(|e| e.to_string())?;
            gitfleet_proto::v1::admin_client::AdminClient::new(ch)
                .list_clusters(gitfleet_proto::v1::ListClustersRequest::default())
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        match listed {
            Ok(_) => break,
            Err(_) if tokio::time::Instant::now() < deadline => tokio::task::yield_now().await,
            Err(e) => panic!("no slot was freed: {e}"),
        }
    }
    hub.shutdown().await;
}
