//! Repository credentials from a file the operator keeps next to the hub, and the SSH host-key
//! check they come with.
//!
//! ```yaml
//! platform:                       # Repo name
//!   https: { username: git, passwordFile: /run/secrets/platform-token }
//! infra:
//!   ssh: { username: git, privateKeyFile: /run/secrets/id_ed25519, knownHostsFile: /run/secrets/known_hosts }
//! ```
//! `password`, `privateKey` and `knownHosts` may also be given inline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use crate::model::RepoCredential;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Entry {
    https: Option<HttpsEntry>,
    ssh: Option<SshEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HttpsEntry {
    username: String,
    password: Option<String>,
    password_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SshEntry {
    #[serde(default = "git_user")]
    username: String,
    private_key: Option<String>,
    private_key_file: Option<PathBuf>,
    known_hosts: Option<String>,
    known_hosts_file: Option<PathBuf>,
}

fn git_user() -> String {
    "git".to_owned()
}

/// Reads the credentials file and every file it names.
pub fn load(path: &Path) -> Result<BTreeMap<String, RepoCredential>, CredentialsError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| CredentialsError::Read {
            path: p.to_owned(),
            source,
        })
    };
    let invalid = |message: String| CredentialsError::Invalid {
        path: path.to_owned(),
        message,
    };
    let entries: BTreeMap<String, Entry> =
        serde_yaml::from_str(&read(path)?).map_err(|e| invalid(e.to_string()))?;
    let one_of = |repo: &str, field: &str, inline: Option<String>, file: Option<PathBuf>| match (
        inline, file,
    ) {
        (Some(v), None) => Ok(v),
        (None, Some(f)) => read(&f).map(|s| s.trim_end_matches('\n').to_owned()),
        _ => Err(invalid(format!(
            "{repo}: give exactly one of {field} and {field}File"
        ))),
    };
    let mut out = BTreeMap::new();
    for (repo, entry) in entries {
        let credential = match (entry.https, entry.ssh) {
            (Some(h), None) => RepoCredential::Https {
                password: one_of(&repo, "password", h.password, h.password_file)?,
                username: h.username,
            },
            (None, Some(s)) => RepoCredential::Ssh {
                private_key_pem: one_of(&repo, "privateKey", s.private_key, s.private_key_file)?,
                known_hosts: one_of(&repo, "knownHosts", s.known_hosts, s.known_hosts_file)?,
                username: s.username,
            },
            _ => {
                return Err(invalid(format!(
                    "{repo}: give exactly one of https and ssh"
                )));
            }
        };
        out.insert(repo, credential);
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] =
        b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20abcdefghijklmnopqrstuvwxyz012345";

    fn b64(k: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(k)
    }

    #[test]
    fn host_keys_must_be_listed() {
        let kh = format!(
            "# comment\ngithub.com,140.82.121.4 ssh-ed25519 {k}\n[git.example.com]:2222 ssh-ed25519 {k}\n|1|c2FsdA==|aGFzaA== ssh-ed25519 {k}\n@revoked evil.com ssh-ed25519 {k}\n",
            k = b64(KEY)
        );
        assert!(known_hosts_accepts(&kh, "github.com", KEY));
        assert!(known_hosts_accepts(&kh, "140.82.121.4", KEY));
        assert!(known_hosts_accepts(&kh, "git.example.com", KEY));
        assert!(!known_hosts_accepts(&kh, "gitlab.com", KEY), "unknown host");
        assert!(
            !known_hosts_accepts(&kh, "github.com", b"other key"),
            "wrong key"
        );
        assert!(
            !known_hosts_accepts(&kh, "evil.com", KEY),
            "markers never match"
        );
        assert!(!known_hosts_accepts("", "github.com", KEY));
    }

    #[test]
    fn loads_inline_and_file_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let file = dir.path().join("creds.yaml");
        std::fs::write(
            &file,
            format!(
                "platform:\n  https: {{ username: git, passwordFile: {} }}\ninfra:\n  ssh: {{ privateKey: KEY, knownHosts: 'h ssh-ed25519 AAAA' }}\n",
                token.display()
            ),
        )
        .unwrap();
        let creds = load(&file).unwrap();
        assert_eq!(
            creds["platform"],
            RepoCredential::Https {
                username: "git".into(),
                password: "s3cret".into()
            }
        );
        assert!(
            matches!(&creds["infra"], RepoCredential::Ssh { username, .. } if username == "git")
        );
        // Debug output never shows secrets.
        assert!(!format!("{:?}", creds["platform"]).contains("s3cret"));
    }

    #[test]
    fn ambiguous_or_missing_secrets_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("creds.yaml");
        std::fs::write(&file, "r:\n  https: { username: git }\n").unwrap();
        let err = load(&file).unwrap_err().to_string();
        assert!(
            err.contains("r: give exactly one of password and passwordFile"),
            "{err}"
        );
        std::fs::write(&file, "r: {}\n").unwrap();
        let err = load(&file).unwrap_err().to_string();
        assert!(err.contains("exactly one of https and ssh"), "{err}");
        std::fs::write(
            &file,
            "r:\n  https: { username: git, passwordFile: /nope }\n",
        )
        .unwrap();
        let err = load(&file).unwrap_err().to_string();
        assert!(err.contains("/nope"), "{err}");
    }
}
