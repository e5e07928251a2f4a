//! The libgit2 callbacks the hub's and the spoke's fetches share, so that both give a
//! credential to the same servers, as often, and trust the same SSH host keys:
//!
//! - A credential goes only to a server under one of its entry's `urls:` prefixes, and only over
//!   https or ssh ([`gitfleet_core::credential_scope`]). It is checked when a server asks, where
//!   the server asking is known (after any redirect), whatever was checked when the Repo was
//!   applied.
//! - It is tried once: libgit2 asks again after a server rejected it, and a fixed credential
//!   would only be rejected again. A username alone is not a try (libgit2 asks for one before
//!   the key when an SSH URL names no user).
//! - An SSH server is trusted only when the credential's known_hosts lists its host key: no
//!   trust on first use.
//!
//! Refusals carry libgit2's codes (`Auth`, `Certificate`), which libgit2 hands back as the
//! fetch's own, so that a caller can tell a refused credential and an untrusted server from a
//! failure on the way.

pub mod signed;

use std::sync::Arc;

use base64::Engine as _;
use git2::{CredentialType, ErrorClass, ErrorCode};
use gitfleet_core::credential_scope;
use gitfleet_core::model::{CredentialKind, RepoCredential};

/// A credential as a fetch uses it: what it holds, and the URL prefixes it may be sent to.
#[derive(Clone, Copy)]
pub struct Credential<'a> {
    pub kind: &'a CredentialKind,
    /// Where it may be sent (see [`credential_scope::allows`]); empty sends it nowhere.
    pub urls: &'a [String],
}

impl<'a> From<&'a RepoCredential> for Credential<'a> {
    fn from(credential: &'a RepoCredential) -> Self {
        Self {
            kind: &credential.kind,
            urls: &credential.urls,
        }
    }
}

/// What tells a blocking fetch to stop: its deadline, its caller giving up, a byte budget.
/// libgit2 can be stopped only from its callbacks, so every callback asks.
pub trait Stop {
    /// Whether the fetch may go on.
    fn go_on(&self) -> bool;

    /// Whether the fetch may go on, now that its current attempt has received `bytes`.
    fn received(&self, bytes: usize) -> bool {
        let _ = bytes;
        self.go_on()
    }
}

/// Callbacks that stop the transfer once `stop` says so and, with a credential, give it only
/// where and as often as the module's rules say, and for SSH trust only the host keys its
/// known_hosts lists.
pub fn callbacks<'a, S: Stop + 'a>(
    credential: Option<Credential<'a>>,
    stop: Arc<S>,
) -> git2::RemoteCallbacks<'a> {
    let mut callbacks = git2::RemoteCallbacks::new();
    // Returning false aborts the transfer: how a blocking fetch keeps to its deadline and its
    // byte budget, and stops once its caller has given up on it.
    let transfer = Arc::clone(&stop);
    callbacks.transfer_progress(move |progress| transfer.received(progress.received_bytes()));
    let sideband = Arc::clone(&stop);
    callbacks.sideband_progress(move |_| sideband.go_on());
    let Some(credential) = credential else {
        return callbacks;
    };
    let mut answered = Answered::default();
    callbacks.credentials(move |url, url_user, allowed| {
        if !stop.go_on() {
            return Err(callback_error(
                ErrorCode::GenericError,
                "the fetch was stopped",
            ));
        }
        answer(credential, url, url_user, allowed, &mut answered)?.into_cred()
    });
    if let CredentialKind::Ssh { known_hosts, .. } = credential.kind {
        callbacks.certificate_check(move |cert, host| check_host_key(cert, host, known_hosts));
    }
    callbacks
}

/// [`callbacks`] as the options of a fetch that downloads only what its refspecs name (no tags
/// besides).
pub fn fetch_options<'a, S: Stop + 'a>(
    credential: Option<Credential<'a>>,
    stop: Arc<S>,
) -> git2::FetchOptions<'a> {
    let mut options = git2::FetchOptions::new();
    options.remote_callbacks(callbacks(credential, stop));
    options.download_tags(git2::AutotagOption::None);
    options
}

/// What a fetch answers a server that asks for a credential.
#[derive(Debug, PartialEq, Eq)]
enum Answer<'a> {
    UserPass {
        username: &'a str,
        password: &'a str,
    },
    SshKey {
        username: &'a str,
        private_key_pem: &'a str,
    },
    Username(&'a str),
}

impl Answer<'_> {
    fn into_cred(self) -> Result<git2::Cred, git2::Error> {
        match self {
            Answer::UserPass { username, password } => {
                git2::Cred::userpass_plaintext(username, password)
            }
            Answer::SshKey {
                username,
                private_key_pem,
            } => git2::Cred::ssh_key_from_memory(username, None, private_key_pem, None),
            Answer::Username(username) => git2::Cred::username(username),
        }
    }
}

/// What one fetch has given so far.
#[derive(Debug, Default)]
struct Answered {
    secret: bool,
    username: bool,
}

/// The answer to a server at `url` asking for one of `allowed`, or why it gets none.
fn answer<'c>(
    credential: Credential<'c>,
    url: &str,
    url_user: Option<&'c str>,
    allowed: CredentialType,
    answered: &mut Answered,
) -> Result<Answer<'c>, git2::Error> {
    if !credential_scope::allows(credential.urls, url) {
        return Err(callback_error(
            ErrorCode::Auth,
            &format!(
                "refusing to send the credential to {}: it may be sent only over https or ssh, to {}",
                credential_scope::redacted(url),
                credential.urls.join(", ")
            ),
        ));
    }
    match credential.kind {
        CredentialKind::Https { username, password }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) =>
        {
            once(&mut answered.secret)?;
            Ok(Answer::UserPass { username, password })
        }
        CredentialKind::Ssh {
            username,
            private_key_pem,
            ..
        } if allowed.contains(CredentialType::SSH_KEY) => {
            once(&mut answered.secret)?;
            Ok(Answer::SshKey {
                username: url_user.unwrap_or(username),
                private_key_pem,
            })
        }
        CredentialKind::Ssh { username, .. } if allowed.contains(CredentialType::USERNAME) => {
            once(&mut answered.username)?;
            Ok(Answer::Username(url_user.unwrap_or(username)))
        }
        kind => Err(callback_error(
            ErrorCode::Auth,
            &format!(
                "the credential does not fit what the repository asks for: it asks for {}, the credential holds {}",
                asked_for(allowed),
                match kind {
                    CredentialKind::Https { .. } => "a username and password",
                    CredentialKind::Ssh { .. } => "an SSH key",
                }
            ),
        )),
    }
}

/// Marks what `given` stands for as given, or refuses to give it again: a server that asks
/// again has rejected it.
fn once(given: &mut bool) -> Result<(), git2::Error> {
    if std::mem::replace(given, true) {
        Err(callback_error(
            ErrorCode::Auth,
            "the repository rejected the credential",
        ))
    } else {
        Ok(())
    }
}

/// What a server asking for `allowed` would take, for a message.
fn asked_for(allowed: CredentialType) -> String {
    let names: Vec<&str> = [
        (
            CredentialType::USER_PASS_PLAINTEXT,
            "a username and password",
        ),
        (CredentialType::SSH_KEY, "an SSH key"),
        (CredentialType::SSH_CUSTOM, "a custom SSH signature"),
        (
            CredentialType::SSH_INTERACTIVE,
            "SSH keyboard-interactive answers",
        ),
        (CredentialType::DEFAULT, "the system's default credentials"),
        (CredentialType::USERNAME, "a username"),
    ]
    .into_iter()
    .filter(|(kind, _)| allowed.contains(*kind))
    .map(|(_, name)| name)
    .collect();
    if names.is_empty() {
        format!("credential types {:#x}", allowed.bits())
    } else {
        names.join(" or ")
    }
}

/// Accepts an SSH host key only when `known_hosts` lists it for `host`; an HTTPS certificate is
/// left to libgit2's own verification.
fn check_host_key(
    cert: &git2::cert::Cert<'_>,
    host: &str,
    known_hosts: &str,
) -> Result<git2::CertificateCheckStatus, git2::Error> {
    let Some(key) = cert.as_hostkey().and_then(|k| k.hostkey()) else {
        return Ok(git2::CertificateCheckStatus::CertificatePassthrough);
    };
    if known_hosts_accepts(known_hosts, host, key) {
        Ok(git2::CertificateCheckStatus::CertificateOk)
    } else {
        Err(callback_error(
            ErrorCode::Certificate,
            &format!(
                "the SSH host key of {host} is not in the known_hosts of the Repo's credentials entry (knownHosts)"
            ),
        ))
    }
}

/// Whether `known_hosts` (OpenSSH format) lists `key` (the raw host key) for `host`. Hashed
/// entries and markers (`@cert-authority`, `@revoked`) never match.
pub fn known_hosts_accepts(known_hosts: &str, host: &str, key: &[u8]) -> bool {
    known_hosts.lines().any(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
            return false;
        }
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(_kind), Some(b64)) = (fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        let host_listed = hosts.split(',').any(|h| {
            h == host
                || h.strip_prefix('[')
                    .and_then(|r| r.split_once("]:"))
                    .is_some_and(|(name, _port)| name == host)
        });
        host_listed
            && base64::engine::general_purpose::STANDARD
                .decode(b64)
                .is_ok_and(|k| k == key)
    })
}

/// A callback's refusal, with the code libgit2 passes on as the fetch's own.
fn callback_error(code: ErrorCode, message: &str) -> git2::Error {
    git2::Error::new(code, ErrorClass::Callback, message)
}

#[cfg(test)]
mod tests;
