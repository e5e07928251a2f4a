//! Test support (feature `testing`): servers that misbehave on purpose, shared by the hub's and
//! the spoke's tests, and keys and signed commits made with ssh-keygen, gpg and git
//! ([`signing`]).

pub mod signing;

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The commit a [`git_server`] advertises as `HEAD` and `refs/heads/main`.
pub const ADVERTISED_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// How a test Git server behaves once a client has connected.
#[derive(Debug, Clone, Copy)]
pub enum Serve {
    /// Reads the request and never answers, keeping the connection open until told to let go.
    Stall,
    /// Speaks the git:// protocol, then sends a pack of endless 1000-byte blobs, `pace` apart.
    Endless { pace: Duration },
}

/// A git:// server of one repository, `name` (e.g. `x.git`), on a free loopback port: its URL,
/// and a sender whose message (or drop) lets stalled connections go.
pub async fn git_server(serve: Serve, name: &str) -> (String, tokio::sync::watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("the listener's address");
    let (release, released) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let mut released = released.clone();
            tokio::spawn(async move {
                match serve {
                    Serve::Stall => {
                        // Holding `stream` keeps the connection open and silent.
                        let _open = stream;
                        let _ = released.wait_for(|r| *r).await;
                    }
                    Serve::Endless { pace } => {
                        let _ = endless_pack(stream, pace).await;
                    }
                }
            });
        }
    });
    (format!("git://{addr}/{name}"), release)
}

fn pkt(line: &str) -> Vec<u8> {
    let mut out = format!("{:04x}", line.len() + 4).into_bytes();
    out.extend_from_slice(line.as_bytes());
    out
}

/// One pkt-line; an empty one for a flush; `None` at the end of the stream.
async fn read_pkt(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.ok()?;
    let len = usize::from_str_radix(std::str::from_utf8(&len).ok()?, 16).ok()?;
    let mut data = vec![0u8; len.saturating_sub(4)];
    stream.read_exact(&mut data).await.ok()?;
    Some(data)
}

/// Advertises `main`, takes any request, and answers with a pack that never ends.
async fn endless_pack(mut stream: TcpStream, pace: Duration) -> Option<()> {
    let sha = ADVERTISED_COMMIT;
    read_pkt(&mut stream).await?;
    let mut advert = pkt(&format!("{sha} HEAD\0shallow\n"));
    advert.extend(pkt(&format!("{sha} refs/heads/main\n")));
    advert.extend_from_slice(b"0000");
    stream.write_all(&advert).await.ok()?;
    let mut deepen = false;
    loop {
        let line = read_pkt(&mut stream).await?;
        if line.is_empty() {
            break;
        }
        deepen |= line.starts_with(b"deepen");
    }
    if deepen {
        let mut shallow = pkt(&format!("shallow {sha}"));
        shallow.extend_from_slice(b"0000");
        stream.write_all(&shallow).await.ok()?;
    }
    while read_pkt(&mut stream).await? != b"done\n" {}
    stream.write_all(&pkt("NAK\n")).await.ok()?;
    let mut header = b"PACK".to_vec();
    header.extend(2u32.to_be_bytes());
    header.extend(1_000_000u32.to_be_bytes());
    stream.write_all(&header).await.ok()?;
    for n in 0u64.. {
        stream.write_all(&numbered_blob(n)).await.ok()?;
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    None
}

/// A pack entry of a 1000-byte blob that starts with `n` (no two alike: libgit2 refuses a pack
/// holding one object twice): its type and size, then a zlib stream of one stored block and
/// the Adler-32 of the content.
fn numbered_blob(n: u64) -> Vec<u8> {
    let mut content = [0u8; 1000];
    content[..8].copy_from_slice(&n.to_le_bytes());
    let (mut a, mut b) = (1u32, 0u32);
    for byte in content {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    let mut entry = vec![0xb8, 0x3e, 0x78, 0x01, 0x01, 0xe8, 0x03, 0x17, 0xfc];
    entry.extend(content);
    entry.extend(((b << 16) | a).to_be_bytes());
    entry
}
