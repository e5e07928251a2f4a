//! Push webhooks from Git hosts: verifying that a delivery is genuine and finding which
//! repositories it names. Pure: headers, body and secret in; a decision out.
//!
//! | provider          | proof                                                  |
//! |-------------------|--------------------------------------------------------|
//! | GitHub            | `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(body)>`  |
//! | Gitea / Forgejo   | `X-Gitea-Signature` / `X-Forgejo-Signature: <hex>`     |
//! | Bitbucket (Cloud) | `X-Hub-Signature: sha256=<hex HMAC-SHA256(body)>`      |
//! | GitLab            | `X-Gitlab-Token: <secret>` (compared in constant time) |

use std::collections::{BTreeMap, HashMap};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::resources::RepoSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
    Gitea,
    Forgejo,
    Bitbucket,
}

impl Provider {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "github" => Some(Self::GitHub),
            "gitlab" => Some(Self::GitLab),
            "gitea" => Some(Self::Gitea),
            "forgejo" => Some(Self::Forgejo),
            "bitbucket" => Some(Self::Bitbucket),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("missing {0} header")]
    MissingSignature(&'static str),
    #[error("signature does not match")]
    BadSignature,
    #[error("payload is not valid JSON: {0}")]
    Malformed(String),
    #[error("payload names no repository")]
    NoRepository,
}

/// Checks that `body` was sent by someone who knows `secret`. `header` looks a header up by
/// (case-insensitive) name.
pub fn verify(
    provider: Provider,
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
    secret: &[u8],
) -> Result<(), WebhookError> {
    match provider {
        Provider::GitLab => {
            let token =
                header("x-gitlab-token").ok_or(WebhookError::MissingSignature("X-Gitlab-Token"))?;
            if constant_time_eq(token.as_bytes(), secret) {
                Ok(())
            } else {
                Err(WebhookError::BadSignature)
            }
        }
        Provider::GitHub => hmac_hex(
            header("x-hub-signature-256")
                .ok_or(WebhookError::MissingSignature("X-Hub-Signature-256"))?,
            Some("sha256="),
            body,
            secret,
        ),
        Provider::Bitbucket => hmac_hex(
            header("x-hub-signature").ok_or(WebhookError::MissingSignature("X-Hub-Signature"))?,
            Some("sha256="),
            body,
            secret,
        ),
        Provider::Gitea => hmac_hex(
            header("x-gitea-signature")
                .ok_or(WebhookError::MissingSignature("X-Gitea-Signature"))?,
            None,
            body,
            secret,
        ),
        Provider::Forgejo => hmac_hex(
            header("x-forgejo-signature")
                .or_else(|| header("x-gitea-signature"))
                .ok_or(WebhookError::MissingSignature("X-Forgejo-Signature"))?,
            None,
            body,
            secret,
        ),
    }
}

fn hmac_hex(
    given: String,
    prefix: Option<&str>,
    body: &[u8],
    secret: &[u8],
) -> Result<(), WebhookError> {
    let hex_sig = match prefix {
        Some(p) => given
            .trim()
            .strip_prefix(p)
            .ok_or(WebhookError::BadSignature)?,
        None => given.trim(),
    };
    let sig = hex::decode(hex_sig).map_err(|_| WebhookError::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    mac.verify_slice(&sig)
        .map_err(|_| WebhookError::BadSignature)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A Repo the pushed repository's URL matches, with the secret its webhooks are signed with
/// (none when it has none, or names one the hub does not have).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub repo: String,
    pub secret: Option<String>,
}

/// What to do with a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Fetch these Repos now: the delivery is signed with each one's secret.
    Fetch(Vec<String>),
    /// Signed with none of the candidates' secrets (or not signed).
    Refused(WebhookError),
    /// No Repo that can verify a delivery follows this repository. Said the same way whether
    /// there is no such Repo or it has no secret, so an unsigned request learns nothing.
    NotFollowed,
}

/// Decides on a delivery of `provider` for the Repos `candidates` (those whose URL the payload
/// names). A delivery only fetches the Repos whose own secret signed it: a Repo's secret can
/// never trigger another Repo. With no candidates, `hub_wide` (when set) still checks the
/// signature, so that only a genuine sender learns that no Repo follows its repository.
pub fn decide(
    provider: Provider,
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
    candidates: &[Candidate],
    hub_wide: Option<&str>,
) -> Decision {
    let mut verified = Vec::new();
    let mut refusal = None;
    for c in candidates {
        let Some(secret) = &c.secret else { continue };
        match verify(provider, &header, body, secret.as_bytes()) {
            Ok(()) => verified.push(c.repo.clone()),
            Err(e) => refusal = refusal.or(Some(e)),
        }
    }
    if !verified.is_empty() {
        return Decision::Fetch(verified);
    }
    if let Some(e) = refusal {
        return Decision::Refused(e);
    }
    match hub_wide.map(|s| verify(provider, &header, body, s.as_bytes())) {
        Some(Err(e)) => Decision::Refused(e),
        _ => Decision::NotFollowed,
    }
}

/// What to answer when the payload cannot be read (`error` is [`WebhookError::Malformed`] or
/// [`WebhookError::NoRepository`]): a sender that the hub-wide secret does not authenticate is
/// refused as unauthorised and learns nothing about the payload; otherwise `error` itself.
pub fn unreadable(
    provider: Provider,
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
    hub_wide: Option<&str>,
    error: WebhookError,
) -> WebhookError {
    match hub_wide.map(|s| verify(provider, header, body, s.as_bytes())) {
        Some(Err(refused)) => refused,
        _ => error,
    }
}

/// Every URL the payload gives for the pushed repository.
pub fn repository_urls(provider: Provider, body: &[u8]) -> Result<Vec<String>, WebhookError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    let pointers: &[&str] = match provider {
        Provider::GitHub | Provider::Gitea | Provider::Forgejo => &[
            "/repository/clone_url",
            "/repository/ssh_url",
            "/repository/html_url",
            "/repository/git_url",
            "/repository/url",
        ],
        Provider::GitLab => &[
            "/project/git_http_url",
            "/project/git_ssh_url",
            "/project/web_url",
            "/repository/git_http_url",
            "/repository/git_ssh_url",
            "/repository/homepage",
        ],
        Provider::Bitbucket => &["/repository/links/html/href"],
    };
    let urls: Vec<String> = pointers
        .iter()
        .filter_map(|p| v.pointer(p).and_then(|u| u.as_str()))
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        return Err(WebhookError::NoRepository);
    }
    Ok(urls)
}

/// The Repos by the repository they follow (URLs compared [normalised](normalize_url)), kept
/// up to date as Repos are applied and deleted: a delivery finds the Repos it names in memory,
/// without reading any stored resource (deliveries are unauthenticated until checked).
#[derive(Debug, Clone, Default)]
pub struct RepoIndex {
    by_url: HashMap<String, BTreeMap<String, RepoSpec>>,
    /// Repo name → the normalised URL it is filed under.
    url_of: HashMap<String, String>,
}

impl RepoIndex {
    /// Files (or refiles) the Repo `name`.
    pub fn put(&mut self, name: &str, spec: &RepoSpec) {
        self.remove(name);
        let url = normalize_url(&spec.url);
        self.by_url
            .entry(url.clone())
            .or_default()
            .insert(name.to_owned(), spec.clone());
        self.url_of.insert(name.to_owned(), url);
    }

    pub fn remove(&mut self, name: &str) {
        let Some(url) = self.url_of.remove(name) else {
            return;
        };
        if let Some(repos) = self.by_url.get_mut(&url) {
            repos.remove(name);
            if repos.is_empty() {
                self.by_url.remove(&url);
            }
        }
    }

    /// The Repos following any of `urls`, each once, ordered by name.
    pub fn find(&self, urls: &[String]) -> Vec<(&str, &RepoSpec)> {
        let mut found: BTreeMap<&str, &RepoSpec> = BTreeMap::new();
        for url in urls {
            if let Some(repos) = self.by_url.get(&normalize_url(url)) {
                found.extend(repos.iter().map(|(name, spec)| (name.as_str(), spec)));
            }
        }
        found.into_iter().collect()
    }
}

/// A comparable form of a repository URL: host and path, lowercase host, no scheme, user,
/// port, `.git` suffix or trailing slash. `git@host:org/repo.git` and
/// `https://host/org/repo` compare equal.
pub fn normalize_url(url: &str) -> String {
    let url = url.trim();
    let rest = match url.split_once("://") {
        Some((_, rest)) => rest.to_owned(),
        // scp-like: user@host:path
        None => url.replacen(':', "/", 1),
    };
    let rest = rest.rsplit_once('@').map_or(rest.as_str(), |(_, r)| r);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    format!("{host}/{path}")
}

#[cfg(test)]
mod tests;
