//! What the hub, the spoke and the CLI share at run time, written once:
//!
//! - [`telemetry`] (feature `telemetry`): one tracing registry with optional OTLP export, and
//!   W3C trace context to and from the wire.
//! - [`install_crypto_provider`]: rustls' ring provider as the process default.
//! - [`error_chain`]: an error and its sources as one line.
//! - [`git`] (feature `git`): the libgit2 callbacks of a fetch, where a credential may go and
//!   which SSH host keys are trusted.
//! - [`fetch`] (feature `fetch`): the HTTP client of Helm chart repositories and OCI
//!   registries, with the addresses it refuses and where a credential may go.
//! - [`allocator`] (feature `allocator`): jemalloc, returning freed memory in the background,
//!   for the hub's and the spoke's binaries.
//! - [`testing`] and [`proxy`] (feature `testing`, for tests only): a misbehaving git://
//!   server, and a TCP proxy a test can cut.

use std::error::Error;
use std::sync::Once;

#[cfg(feature = "allocator")]
pub mod allocator;
#[cfg(feature = "fetch")]
pub mod fetch;
#[cfg(feature = "git")]
pub mod git;
#[cfg(feature = "testing")]
pub mod proxy;
#[cfg(feature = "telemetry")]
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

/// Installs rustls' ring crypto provider as the process default, once; later calls do nothing.
/// Other parts of the process (kube, a hub and spokes in one test) may have installed one
/// already: that one is kept.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means a provider is installed already; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An error and its sources as one line (`outer: cause: root cause`), without repeating a
/// message a wrapper already quoted: tonic's and hyper's transport errors hide the cause one
/// or two levels down.
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: inner broke")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner broke")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("connecting to hub:7443")]
    struct Connect(#[source] std::io::Error);

    #[test]
    fn error_chains_do_not_repeat_themselves() {
        assert_eq!(error_chain(&Outer(Inner)), "outer: inner broke");
    }

    #[test]
    fn error_chains_name_the_cause_beneath() {
        let e = Connect(std::io::Error::other("connection refused"));
        assert_eq!(
            error_chain(&e),
            "connecting to hub:7443: connection refused"
        );
    }

    #[test]
    fn installing_the_provider_twice_is_harmless() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
