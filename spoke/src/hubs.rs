//! Which hub address a spoke dials next. Pure: the addresses a name resolves to, the failures so
//! far and the random jitter all come in as values.
//!
//! A spoke may be given several hub URLs (`--hub` repeated), and a URL's host may resolve to
//! several addresses (a headless Service in front of hub replicas). Every address of every URL
//! is a [`Candidate`]; the spoke dials them in order, moving to the next one after a failed
//! connect or a broken session, and waits between attempts with exponential backoff and full
//! jitter, growing per full round over the candidates: a dead first address costs one short,
//! jittered wait, and a fleet whose replica died spreads its reconnects over time and over the
//! replicas left.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tonic::codegen::http::Uri;

/// One hub URL as configured, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubUrl {
    /// As given, for messages.
    pub url: String,
    scheme: String,
    host: String,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubUrlError {
    #[error("no hub address given (--hub)")]
    Empty,
    #[error("hub URL {url:?}: {message}")]
    Invalid { url: String, message: String },
}

impl HubUrl {
    /// `https://host:port` (port 443 when absent); no path beyond `/`.
    pub fn parse(url: &str) -> Result<Self, HubUrlError> {
        let invalid = |message: &str| HubUrlError::Invalid {
            url: url.to_owned(),
            message: message.to_owned(),
        };
        let uri: Uri = url.trim().parse().map_err(|_| invalid("not a URL"))?;
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| invalid("no scheme: write https://host:port"))?;
        if scheme != "https" && scheme != "http" {
            return Err(invalid("the scheme must be https"));
        }
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(invalid("a hub URL has no path"));
        }
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        Ok(Self {
            url: url.trim().to_owned(),
            scheme: scheme.to_owned(),
            // `[::1]` as a URI host; the name to resolve or verify is `::1`.
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
        })
    }

    /// Every URL of `urls`, in order, without repeats; at least one.
    pub fn parse_all(urls: &[String]) -> Result<Vec<Self>, HubUrlError> {
        let mut out: Vec<Self> = Vec::new();
        for url in urls {
            let parsed = Self::parse(url)?;
            if !out.contains(&parsed) {
                out.push(parsed);
            }
        }
        if out.is_empty() {
            return Err(HubUrlError::Empty);
        }
        Ok(out)
    }

    /// The host and port to resolve (`None` when the host is an IP address already).
    pub fn to_resolve(&self) -> Option<(&str, u16)> {
        match self.host.parse::<IpAddr>() {
            Ok(_) => None,
            Err(_) => Some((&self.host, self.port)),
        }
    }
}

/// One address to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The URL the channel connects to (an IP address when the name was resolved).
    pub dial: String,
    /// The name the hub's certificate is checked against: the configured host.
    pub server_name: String,
    /// The configured URL this came from, for messages.
    pub configured: String,
}

/// The candidates of `urls` in order: each resolved address of a name (as `resolved` returns
/// them for it), or the URL itself when it names an IP address or resolution gave nothing (the
/// dial then fails with the resolver's error, and the spoke moves on).
pub fn candidates(
    urls: &[HubUrl],
    mut resolved: impl FnMut(&HubUrl) -> Vec<SocketAddr>,
) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    for url in urls {
        let itself = Candidate {
            dial: url.url.clone(),
            server_name: url.host.clone(),
            configured: url.url.clone(),
        };
        let addrs = if url.to_resolve().is_some() {
            resolved(url)
        } else {
            Vec::new()
        };
        if addrs.is_empty() {
            if !out.contains(&itself) {
                out.push(itself);
            }
            continue;
        }
        for addr in addrs {
            let candidate = Candidate {
                dial: format!("{}://{addr}", url.scheme),
                ..itself.clone()
            };
            if !out.contains(&candidate) {
                out.push(candidate);
            }
        }
    }
    out
}

/// Where the spoke is in its list of candidates, and how many attempts in a row failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    cursor: usize,
    failures: u32,
}

impl Rotation {
    /// The index of the candidate to dial next among `count`.
    pub fn current(&self, count: usize) -> usize {
        if count == 0 { 0 } else { self.cursor % count }
    }

    /// The candidate at [`Self::current`] failed (no connection, or the session broke): move
    /// to the next one and return how long to wait first. The ceiling of the wait doubles per
    /// full round over the `count` candidates, from `base` up to `cap`; `unit` (random, in
    /// [0, 1)) picks the wait below it.
    pub fn failed(&mut self, count: usize, base: Duration, cap: Duration, unit: f64) -> Duration {
        let count = count.max(1);
        let round = self.failures / u32::try_from(count).unwrap_or(u32::MAX);
        self.failures = self.failures.saturating_add(1);
        self.cursor = (self.current(count) + 1) % count;
        backoff(round.saturating_add(1), base, cap, unit)
    }

    /// Move to the next candidate without counting a failure (the hub asked the spoke to go
    /// away for a while: another replica may take it now).
    pub fn skip(&mut self, count: usize) {
        let count = count.max(1);
        self.cursor = (self.current(count) + 1) % count;
    }

    /// A session held long enough: the next failure starts the backoff from its base again.
    pub fn healthy(&mut self) {
        self.failures = 0;
    }

    /// Attempts in a row that failed.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Exponential backoff with full jitter: a uniform delay in [0, min(cap, base·2^(attempt-1))].
/// `unit` is a random number in [0, 1).
pub fn backoff(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let ceiling = base.saturating_mul(1u32 << exponent).min(cap);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests;
