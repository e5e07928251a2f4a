//! Helm charts from Helm repositories (`https://…/index.yaml`) and OCI registries
//! (`oci://registry/path`): the pure parts. Which repository URLs an App may name, chart names
//! and versions (an exact version or a semver range), reading a repository's `index.yaml`
//! (through a [`Budget`]), choosing the highest version a range allows, reading an OCI
//! manifest for the chart layer, the addresses the hub and the spoke refuse to contact, and
//! checking a download against its sha256 digest. The network is each side's own
//! (`hub/src/charts.rs`, `spoke/src/charts.rs`).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::yaml::{Budget, Limits};

/// The media type of a Helm chart's content layer in an OCI manifest.
pub const HELM_LAYER_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// The media types of a manifest the hub asks a registry for.
pub const OCI_MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
/// Longest chart name (Helm's own limit on a chart's name is the release name's plus room; this
/// bounds what reaches a URL).
pub const MAX_CHART_NAME: usize = 250;
/// Most bytes of an `index.yaml` the hub reads.
pub const MAX_INDEX_BYTES: usize = 32 * 1024 * 1024;
/// Most bytes of an OCI manifest or tag list the hub reads.
pub const MAX_OCI_JSON_BYTES: usize = 4 * 1024 * 1024;

/// What an `index.yaml` may cost the reader: large public repositories hold tens of thousands
/// of entries, but no anchors worth speaking of.
pub const INDEX_LIMITS: Limits = Limits {
    max_events: 20_000_000,
    max_aliases: 1_000,
    max_depth: 32,
    max_documents: 1,
    max_document_bytes: 256 * 1024 * 1024,
    max_total_bytes: 256 * 1024 * 1024,
};

/// Why a chart could not be resolved or checked. Every message names the URL or the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChartError {
    #[error("{url}: not a Helm repository index: {message}")]
    Index { url: String, message: String },
    #[error("{url}: chart {name:?} is not in the repository index")]
    NotInIndex { url: String, name: String },
    #[error("{url}: no version of chart {name:?} matches {wanted:?} (versions: {available})")]
    NoMatch {
        url: String,
        name: String,
        wanted: String,
        available: String,
    },
    #[error("{url}: chart {name:?} {version}: {message}")]
    Entry {
        url: String,
        name: String,
        version: String,
        message: String,
    },
    #[error("{url}: not an OCI manifest: {message}")]
    Manifest { url: String, message: String },
    #[error("{url}: not an OCI tag list: {message}")]
    Tags { url: String, message: String },
    #[error("{url}: sha256 digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{0}")]
    Invalid(String),
}

// ---------------------------------------------------------------------------------------------
// What an App names

/// Where a chart comes from, as `spec.render.helm.chart.repository` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChartSource {
    /// A Helm repository: `index.yaml` under `base` (no trailing `/`).
    Repository { base: String },
    /// An OCI registry: `scheme` (https, or http for a loopback host), `host` (with any port)
    /// and the repository path of the chart (`charts/podinfo`).
    Oci {
        scheme: &'static str,
        host: String,
        path: String,
    },
}

impl ChartSource {
    /// The chart `name` of `repository` (already checked with [`repository_problem`]).
    pub fn of(repository: &str, name: &str) -> Result<ChartSource, String> {
        if let Some(problem) = repository_problem(repository) {
            return Err(format!("repository {repository:?} {problem}"));
        }
        let repository = repository.trim_end_matches('/');
        if let Some(rest) = repository.strip_prefix("oci://") {
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            let scheme = if is_loopback_host(host_only(host)) {
                "http"
            } else {
                "https"
            };
            let path = if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}/{name}")
            };
            return Ok(ChartSource::Oci {
                scheme,
                host: host.to_owned(),
                path,
            });
        }
        Ok(ChartSource::Repository {
            base: repository.to_owned(),
        })
    }

    /// `index.yaml` of a Helm repository.
    pub fn index_url(&self) -> Option<String> {
        match self {
            ChartSource::Repository { base } => Some(format!("{base}/index.yaml")),
            ChartSource::Oci { .. } => None,
        }
    }

    fn oci_base(&self) -> Option<String> {
        match self {
            ChartSource::Oci { scheme, host, path } => Some(format!("{scheme}://{host}/v2/{path}")),
            ChartSource::Repository { .. } => None,
        }
    }

    /// An OCI registry's tag list of the chart.
    pub fn tags_url(&self) -> Option<String> {
        self.oci_base().map(|b| format!("{b}/tags/list"))
    }

    /// An OCI registry's manifest of the chart at `reference` (a tag or a digest).
    pub fn manifest_url(&self, reference: &str) -> Option<String> {
        self.oci_base()
            .map(|b| format!("{b}/manifests/{reference}"))
    }

    /// An OCI registry's blob of the chart with `digest`.
    pub fn blob_url(&self, digest: &str) -> Option<String> {
        self.oci_base().map(|b| format!("{b}/blobs/{digest}"))
    }
}

/// `host` without its port (an IPv6 literal keeps its brackets off).
fn host_only(authority: &str) -> &str {
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    host.split_once(':').map_or(host, |(h, _)| h)
}

/// Whether `host` (no port) is a loopback name or address.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Why `repository` may not be a chart repository: `https://` or `oci://` with a host, or
/// `http://` for a loopback host only; no user information, query or fragment.
pub fn repository_problem(repository: &str) -> Option<&'static str> {
    let Some((scheme, rest)) = repository.split_once("://") else {
        return Some("must be an https:// or oci:// URL");
    };
    if !matches!(scheme, "https" | "oci" | "http") {
        return Some("must be an https:// or oci:// URL");
    }
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Some("must name a host");
    }
    if authority.contains('@') {
        return Some("must not hold user information: credentials come from the credentials file");
    }
    if rest.contains(['?', '#']) || rest.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Some("must not hold a query, a fragment, spaces or control characters");
    }
    if rest.split('/').skip(1).any(|s| s == ".." || s == ".") {
        return Some("must not hold '.' or '..' path segments");
    }
    let host = host_only(authority);
    if host.is_empty() {
        return Some("must name a host");
    }
    if scheme == "http" && !is_loopback_host(host) {
        return Some("must be an https:// or oci:// URL (http:// only for a loopback host)");
    }
    if let Ok(ip) = host.parse::<IpAddr>()
        && let Some(problem) = address_problem(ip, true)
    {
        return Some(problem);
    }
    None
}

/// Why `name` is not a chart name: lowercase letters, digits, `-`, `_` and `.`, starting with
/// a letter or digit (Helm's own rule, narrower than what a URL could carry).
pub fn chart_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("must not be empty");
    }
    if name.len() > MAX_CHART_NAME {
        return Some("must be at most 250 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Some("must consist of lowercase letters, digits, '-', '_' and '.'");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Some("must start with a letter or digit");
    }
    if name.contains("..") {
        return Some("must not contain '..'");
    }
    None
}

/// The version an App asks for: one exact version, or the highest a range allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    Exact(semver::Version),
    Range(semver::VersionReq),
}

impl Wanted {
    /// An exact version (`6.5.4`, `v6.5.4`) or a semver range (`^6.0.0`, `>=1, <2`, `*`).
    pub fn parse(version: &str) -> Result<Wanted, String> {
        let v = version.trim();
        if v.is_empty() {
            return Err(
                "must not be empty: give a version (6.5.4) or a semver range (^6.0.0)".into(),
            );
        }
        if let Ok(exact) = semver::Version::parse(v.strip_prefix('v').unwrap_or(v)) {
            return Ok(Wanted::Exact(exact));
        }
        semver::VersionReq::parse(v)
            .map(Wanted::Range)
            .map_err(|e| format!("{version:?} is neither a version nor a semver range: {e}"))
    }

    pub fn matches(&self, version: &semver::Version) -> bool {
        match self {
            Wanted::Exact(v) => v == version,
            Wanted::Range(r) => r.matches(version),
        }
    }
}

/// The highest of `versions` (tags or index versions, a leading `v` allowed; those that are
/// not versions are ignored) that `wanted` allows.
pub fn highest<'a>(
    versions: impl IntoIterator<Item = &'a str>,
    wanted: &Wanted,
) -> Option<&'a str> {
    versions
        .into_iter()
        .filter_map(|s| {
            let v = semver::Version::parse(s.strip_prefix('v').unwrap_or(s)).ok()?;
            wanted.matches(&v).then_some((v, s))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, s)| s)
}

// ---------------------------------------------------------------------------------------------
// What the hub resolved

/// One exact chart: what every cluster of a rollout gets. Part of the App's revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedChart {
    /// As the App names it.
    pub repository: String,
    pub name: String,
    /// The exact version chosen.
    pub version: String,
    /// `sha256:<hex>` of the chart's `.tgz` (the OCI chart layer).
    pub digest: String,
    /// Where the `.tgz` is fetched: the index entry's URL resolved against the repository, or
    /// the registry's blob URL of the chart layer.
    pub url: String,
    /// OCI only: the digest of the manifest the tag pointed at.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub manifest_digest: String,
}

impl ResolvedChart {
    /// `podinfo 6.5.4 (sha256:0123456789ab)`, for events and messages.
    pub fn describe(&self) -> String {
        let short = self
            .digest
            .strip_prefix("sha256:")
            .and_then(|d| d.get(..12))
            .unwrap_or(&self.digest);
        format!("{} {} (sha256:{short})", self.name, self.version)
    }

    /// Whether this resolution is of the chart the App names now (a changed repository or
    /// name makes it stale; a changed version is the resolver's to judge).
    pub fn is_of(&self, repository: &str, name: &str) -> bool {
        self.repository == repository && self.name == name
    }
}

/// Reads a Helm repository's `index.yaml` and picks `name`'s highest version `wanted` allows.
/// `url` is where the index was read (relative chart URLs resolve against it).
pub fn pick_from_index(
    text: &str,
    url: &str,
    repository: &str,
    name: &str,
    wanted: &Wanted,
    budget: &Budget,
) -> Result<ResolvedChart, ChartError> {
    let index_error = |message: String| ChartError::Index {
        url: url.to_owned(),
        message,
    };
    let doc = budget
        .document(text)
        .map_err(|e| index_error(e.to_string()))?;
    let entries = doc
        .get("entries")
        .and_then(|e| e.as_object())
        .ok_or_else(|| index_error("no `entries` mapping".into()))?;
    let versions = entries
        .get(name)
        .and_then(|v| v.as_array())
        .ok_or_else(|| ChartError::NotInIndex {
            url: url.to_owned(),
            name: name.to_owned(),
        })?;
    let listed: Vec<&str> = versions
        .iter()
        .filter_map(|v| v.get("version").and_then(|v| v.as_str()))
        .collect();
    let chosen = highest(listed.iter().copied(), wanted).ok_or_else(|| ChartError::NoMatch {
        url: url.to_owned(),
        name: name.to_owned(),
        wanted: wanted_text(wanted),
        available: summary(&listed),
    })?;
    let entry = versions
        .iter()
        .find(|v| v.get("version").and_then(|v| v.as_str()) == Some(chosen))
        .ok_or_else(|| index_error("entry vanished".into()))?;
    let entry_error = |message: &str| ChartError::Entry {
        url: url.to_owned(),
        name: name.to_owned(),
        version: chosen.to_owned(),
        message: message.to_owned(),
    };
    let digest = entry
        .get("digest")
        .and_then(|d| d.as_str())
        .ok_or_else(|| {
            entry_error(
                "the index entry has no `digest`: gitfleet installs only charts it can verify",
            )
        })?;
    let digest = normalize_digest(digest).map_err(|m| entry_error(&m))?;
    let first = entry
        .get("urls")
        .and_then(|u| u.as_array())
        .and_then(|u| u.first())
        .and_then(|u| u.as_str())
        .ok_or_else(|| entry_error("the index entry has no `urls`"))?;
    let chart_url = resolve_url(url, first).map_err(|m| entry_error(&m))?;
    Ok(ResolvedChart {
        repository: repository.to_owned(),
        name: name.to_owned(),
        version: chosen.to_owned(),
        digest,
        url: chart_url,
        manifest_digest: String::new(),
    })
}

fn wanted_text(wanted: &Wanted) -> String {
    match wanted {
        Wanted::Exact(v) => v.to_string(),
        Wanted::Range(r) => r.to_string(),
    }
}

/// At most ten versions, for a message.
fn summary(versions: &[&str]) -> String {
    if versions.is_empty() {
        return "none".into();
    }
    let mut out = versions
        .iter()
        .take(10)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if versions.len() > 10 {
        out.push_str(&format!(", … {} more", versions.len() - 10));
    }
    out
}

/// `sha256:<64 lowercase hex>` from an index's bare hex or an OCI `sha256:` digest.
pub fn normalize_digest(digest: &str) -> Result<String, String> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("digest {digest:?} is not a sha256 digest"));
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// `reference` resolved against `base` (the index's URL): absolute http(s) URLs as they are,
/// `/path` against the host, anything else against the index's directory.
pub fn resolve_url(base: &str, reference: &str) -> Result<String, String> {
    if reference.starts_with("https://") || reference.starts_with("http://") {
        return Ok(reference.to_owned());
    }
    if reference.contains("://") {
        return Err(format!(
            "chart URL {reference:?} is neither http(s) nor relative"
        ));
    }
    let (scheme, rest) = base
        .split_once("://")
        .ok_or_else(|| format!("{base:?} is not a URL"))?;
    let host_end = rest.find('/').unwrap_or(rest.len());
    let origin = format!("{scheme}://{}", &rest[..host_end]);
    if let Some(abs) = reference.strip_prefix('/') {
        return Ok(format!("{origin}/{abs}"));
    }
    let path = &rest[host_end..];
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    let reference = reference.strip_prefix("./").unwrap_or(reference);
    Ok(format!("{origin}{dir}/{reference}"))
}

/// The tags of an OCI tag list (`{"name": …, "tags": […]}`).
pub fn parse_tags(text: &str, url: &str, budget: &Budget) -> Result<Vec<String>, ChartError> {
    let doc = budget.json(text).map_err(|e| ChartError::Tags {
        url: url.to_owned(),
        message: e.to_string(),
    })?;
    Ok(doc
        .get("tags")
        .and_then(|t| t.as_array())
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect())
}

/// OCI tags may not hold `+`: Helm pushes `1.0.0+build` as `1.0.0_build`.
pub fn tag_to_version(tag: &str) -> String {
    tag.replace('_', "+")
}

/// The digest of an OCI manifest's Helm chart layer.
pub fn chart_layer(text: &str, url: &str, budget: &Budget) -> Result<String, ChartError> {
    let error = |message: String| ChartError::Manifest {
        url: url.to_owned(),
        message,
    };
    let doc = budget.json(text).map_err(|e| error(e.to_string()))?;
    let layers = doc
        .get("layers")
        .and_then(|l| l.as_array())
        .ok_or_else(|| error("no `layers`".into()))?;
    let layer = layers
        .iter()
        .find(|l| l.get("mediaType").and_then(|m| m.as_str()) == Some(HELM_LAYER_MEDIA_TYPE))
        .ok_or_else(|| {
            error(format!(
                "no layer of media type {HELM_LAYER_MEDIA_TYPE}: not a Helm chart"
            ))
        })?;
    let digest = layer
        .get("digest")
        .and_then(|d| d.as_str())
        .ok_or_else(|| error("the chart layer has no digest".into()))?;
    if !digest.starts_with("sha256:") {
        return Err(error(format!(
            "chart layer digest {digest:?} is not sha256"
        )));
    }
    normalize_digest(digest).map_err(error)
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Checks `bytes`, downloaded from `url`, against `expected` (`sha256:<hex>`).
pub fn check_digest(bytes: &[u8], expected: &str, url: &str) -> Result<(), ChartError> {
    let actual = sha256_digest(bytes);
    let expected_norm = normalize_digest(expected).map_err(ChartError::Invalid)?;
    if actual != expected_norm {
        return Err(ChartError::DigestMismatch {
            url: url.to_owned(),
            expected: expected_norm,
            actual,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Where the hub and the spoke connect

/// Why the hub or a spoke refuses to connect to `ip` for a chart: link-local addresses (the
/// cloud metadata services at 169.254.169.254 and fd00:ec2::254 among them), unspecified,
/// multicast and broadcast addresses always; loopback unless `allow_loopback`.
pub fn address_problem(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_link_local() {
                return Some("is a link-local address (cloud metadata services live there)");
            }
            if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() {
                return Some("is not a unicast address");
            }
            if v4.is_loopback() && !allow_loopback {
                return Some("is a loopback address");
            }
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            if (seg[0] & 0xffc0) == 0xfe80 {
                return Some("is a link-local address (cloud metadata services live there)");
            }
            // AWS's IPv6 metadata service.
            if seg == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254] {
                return Some("is a cloud metadata service address");
            }
            if v6.is_unspecified() || v6.is_multicast() {
                return Some("is not a unicast address");
            }
            if v6.is_loopback() && !allow_loopback {
                return Some("is a loopback address");
            }
        }
    }
    None
}

/// Host names that are metadata services by name.
pub fn host_problem(host: &str) -> Option<&'static str> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "metadata.google.internal" || host == "metadata" {
        return Some("is a cloud metadata service");
    }
    None
}

#[cfg(test)]
mod tests;
