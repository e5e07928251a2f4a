//! Repository credentials and webhook secrets from a file the operator keeps next to the hub
//! (`--repo-credentials`). The fetches use them through `gitfleet_support::git`, which also
//! checks SSH host keys against an entry's known_hosts.
//!
//! ```yaml
//! github-bot:                     # an entry name, referenced by Repos
//!   https: { username: git, passwordFile: /run/secrets/platform-token }
//!   urls: ["https://github.com/acme/"]
//! infra:
//!   ssh: { username: git, privateKeyFile: /run/secrets/id_ed25519, knownHostsFile: /run/secrets/known_hosts }
//!   urls: ["git@git.example.com:infra/", "ssh://git@git.example.com/infra/"]
//! platform-hook:
//!   webhookSecretFile: /run/secrets/platform-hook
//! ```
//! `password`, `privateKey`, `knownHosts` and `webhookSecret` may also be given inline. An entry
//! holds at most one of `https` and `ssh`, and may hold a webhook secret besides. An entry may
//! instead hold a Notifier's secret (`notifierSecret` or `notifierSecretFile`, an HMAC key, a
//! Slack webhook URL or a forge's API token) with the `https://` `urls` it may be used for, and
//! nothing else (see `docs/notifications.md`).
//!
//! An entry with `https` or `ssh` must say where it may be sent (`urls`, see [`urls`]): a Repo
//! whose URL is not under one of them is refused when it is applied, and the hub's fetches (and
//! the spokes', which receive the prefixes with the credential) check every server that asks for
//! it again, so that neither a redirect nor a plain `http://` or `git://` URL ever gets it.
//!
//! A Repo names its entries (`spec.credentialsRef`, `spec.webhookSecretRef`); the secrets stay
//! in the file, out of the store and out of `gitfleet get`. A Repo without `credentialsRef` uses
//! the entry named like the Repo, if there is one (how the file was keyed before refs existed);
//! one without `webhookSecretRef` uses the hub-wide `--webhook-secret`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gitfleet_core::credential_scope as urls;
use serde::Deserialize;

use crate::model::{CredentialKind, RepoCredential};
use crate::resources::RepoSpec;

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

/// A Repo names an entry the credentials file does not have (or has without that kind of
/// secret). Worded as a field-path error, like [`crate::resources::ResourceError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error(
        "repo {repo:?}: spec.credentialsRef: the hub's credentials file (--repo-credentials) has no entry {name:?} with https or ssh credentials"
    )]
    NoCredentials { repo: String, name: String },
    #[error(
        "repo {repo:?}: spec.webhookSecretRef: the hub's credentials file (--repo-credentials) has no entry {name:?} with a webhookSecret"
    )]
    NoWebhookSecret { repo: String, name: String },
    /// The entry the Repo names may not be sent to the Repo's URL.
    #[error(
        "repo {repo:?}: spec.credentialsRef: the credentials entry {name:?} may not be sent to {url:?} (spec.url): its urls are {urls}"
    )]
    UrlNotAllowed {
        repo: String,
        name: String,
        url: String,
        urls: String,
    },
    /// The Repo names no entry, and the one named like the Repo may not be sent to its URL.
    #[error(
        "repo {repo:?}: spec.credentialsRef: not set, so the credentials entry named like the Repo applies, and it may not be sent to {url:?} (spec.url): its urls are {urls}"
    )]
    ImplicitUrlNotAllowed {
        repo: String,
        url: String,
        urls: String,
    },
}

/// Everything the credentials file holds, by entry name.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// HTTPS or SSH credentials for fetching.
    pub git: BTreeMap<String, RepoCredential>,
    /// Webhook secrets (HMAC keys, or GitLab tokens).
    pub webhook_secrets: BTreeMap<String, String>,
    /// Notifiers' secrets (an HMAC key, a Slack webhook URL, a forge's API token), each bound
    /// to its `urls:`.
    pub notifier_secrets: BTreeMap<String, NotifierSecret>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("git", &self.git)
            .field("webhook_secrets", &self.webhook_secrets.keys())
            .field("notifier_secrets", &self.notifier_secrets)
            .finish()
    }
}

/// A Notifier's secret and the URL prefixes it may be used for (see
/// `gitfleet_core::notify::secret_allowed`).
#[derive(Clone, PartialEq, Eq)]
pub struct NotifierSecret {
    pub secret: String,
    pub urls: Vec<String>,
}

impl std::fmt::Debug for NotifierSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifierSecret")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The credential the Repo `repo` (with `spec`) fetches with, if any; an error when the
    /// entry it names is missing or may not be sent to the Repo's URL.
    pub fn git_for(
        &self,
        repo: &str,
        spec: &RepoSpec,
    ) -> Result<Option<&RepoCredential>, RefError> {
        let (name, credential) = match &spec.credentials_ref {
            Some(name) => match self.git.get(name) {
                Some(c) => (name.as_str(), c),
                None => {
                    return Err(RefError::NoCredentials {
                        repo: repo.to_owned(),
                        name: name.clone(),
                    });
                }
            },
            None => match self.git.get(repo) {
                Some(c) => (repo, c),
                None => return Ok(None),
            },
        };
        if !credential.may_be_sent_to(&spec.url) {
            let (repo, url, urls) = (
                repo.to_owned(),
                urls::redacted(&spec.url),
                credential.urls.join(", "),
            );
            return Err(match spec.credentials_ref {
                Some(_) => RefError::UrlNotAllowed {
                    repo,
                    name: name.to_owned(),
                    url,
                    urls,
                },
                None => RefError::ImplicitUrlNotAllowed { repo, url, urls },
            });
        }
        Ok(Some(credential))
    }

    /// The secret that signs the Repo's webhooks: its own, else the hub-wide one, if any.
    pub fn webhook_secret_for<'a>(
        &'a self,
        repo: &str,
        spec: &RepoSpec,
        hub_wide: Option<&'a str>,
    ) -> Result<Option<&'a str>, RefError> {
        match &spec.webhook_secret_ref {
            Some(name) => self
                .webhook_secrets
                .get(name)
                .map(|s| Some(s.as_str()))
                .ok_or_else(|| RefError::NoWebhookSecret {
                    repo: repo.to_owned(),
                    name: name.clone(),
                }),
            None => Ok(hub_wide),
        }
    }

    /// Whether every entry the Repo names exists, with the right kind of secret.
    pub fn check(&self, repo: &str, spec: &RepoSpec) -> Result<(), RefError> {
        self.git_for(repo, spec)?;
        self.webhook_secret_for(repo, spec, None)?;
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Entry {
    https: Option<HttpsEntry>,
    ssh: Option<SshEntry>,
    urls: Option<Vec<String>>,
    webhook_secret: Option<String>,
    webhook_secret_file: Option<PathBuf>,
    notifier_secret: Option<String>,
    notifier_secret_file: Option<PathBuf>,
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
pub fn load(path: &Path) -> Result<Credentials, CredentialsError> {
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
    // One line with its position: a snippet would quote a file of secrets into the log.
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    let entries: BTreeMap<String, Entry> =
        serde_saphyr::from_str_with_options(&read(path)?, options)
            .map_err(|e| invalid(e.to_string()))?;
    let value = |entry: &str, field: &str, inline: Option<String>, file: Option<PathBuf>| match (
        inline, file,
    ) {
        (Some(v), None) => Ok(Some(v)),
        (None, Some(f)) => read(&f).map(|s| Some(s.trim_end_matches('\n').to_owned())),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(invalid(format!(
            "{entry}: give one of {field} and {field}File, not both"
        ))),
    };
    let one_of = |entry: &str, field: &str, inline: Option<String>, file: Option<PathBuf>| {
        value(entry, field, inline, file)?.ok_or_else(|| {
            invalid(format!(
                "{entry}: give exactly one of {field} and {field}File"
            ))
        })
    };
    let mut out = Credentials::default();
    for (name, entry) in entries {
        let notifier = value(
            &name,
            "notifierSecret",
            entry.notifier_secret,
            entry.notifier_secret_file,
        )?;
        if let Some(secret) = notifier {
            if entry.https.is_some()
                || entry.ssh.is_some()
                || entry.webhook_secret.is_some()
                || entry.webhook_secret_file.is_some()
            {
                return Err(invalid(format!(
                    "{name}: a notifierSecret is an entry of its own (no https, ssh or webhookSecret beside it)"
                )));
            }
            if secret.is_empty() {
                return Err(invalid(format!("{name}: notifierSecret must not be empty")));
            }
            let urls = entry.urls.unwrap_or_default();
            if urls.is_empty() {
                return Err(invalid(format!(
                    "{name}: give urls, the URL prefixes its notifierSecret may be used for (like https://hooks.example.com/gitfleet)"
                )));
            }
            for prefix in &urls {
                if let Some(why) = gitfleet_core::notify::secret_prefix_problem(prefix) {
                    return Err(invalid(format!("{name}: urls: {prefix:?} {why}")));
                }
            }
            out.notifier_secrets
                .insert(name, NotifierSecret { secret, urls });
            continue;
        }
        let kind = match (entry.https, entry.ssh) {
            (Some(h), None) => Some(CredentialKind::Https {
                password: one_of(&name, "password", h.password, h.password_file)?,
                username: h.username,
            }),
            (None, Some(s)) => Some(CredentialKind::Ssh {
                private_key_pem: one_of(&name, "privateKey", s.private_key, s.private_key_file)?,
                known_hosts: one_of(&name, "knownHosts", s.known_hosts, s.known_hosts_file)?,
                username: s.username,
            }),
            (Some(_), Some(_)) => {
                return Err(invalid(format!(
                    "{name}: give one of https and ssh, not both"
                )));
            }
            (None, None) => None,
        };
        let credential = match (kind, entry.urls) {
            (Some(kind), Some(urls)) => Some(RepoCredential {
                urls: checked_urls(&name, &kind, urls).map_err(invalid)?,
                kind,
            }),
            (Some(_), None) => {
                return Err(invalid(format!(
                    "{name}: give urls, the URL prefixes its credential may be sent to (like https://github.com/acme/)"
                )));
            }
            (None, Some(_)) => {
                return Err(invalid(format!(
                    "{name}: urls are for an https or ssh credential, and the entry has none"
                )));
            }
            (None, None) => None,
        };
        let secret = value(
            &name,
            "webhookSecret",
            entry.webhook_secret,
            entry.webhook_secret_file,
        )?;
        if credential.is_none() && secret.is_none() {
            return Err(invalid(format!(
                "{name}: give https, ssh, webhookSecret or notifierSecret (or their …File)"
            )));
        }
        if secret.as_deref().is_some_and(str::is_empty) {
            return Err(invalid(format!("{name}: webhookSecret must not be empty")));
        }
        if let Some(c) = credential {
            out.git.insert(name.clone(), c);
        }
        if let Some(s) = secret {
            out.webhook_secrets.insert(name, s);
        }
    }
    Ok(out)
}

/// The prefixes of entry `name`, each one a place a credential of `kind` can go to.
fn checked_urls(
    name: &str,
    kind: &CredentialKind,
    urls: Vec<String>,
) -> Result<Vec<String>, String> {
    if urls.is_empty() {
        return Err(format!(
            "{name}: urls must name at least one URL prefix its credential may be sent to"
        ));
    }
    for prefix in &urls {
        urls::check_prefix(prefix).map_err(|why| format!("{name}: urls: {prefix:?} {why}"))?;
        let https = urls::is_https(prefix);
        match kind {
            CredentialKind::Https { .. } if !https => {
                return Err(format!(
                    "{name}: urls: {prefix:?} is not an https:// URL, and the entry holds an https credential"
                ));
            }
            CredentialKind::Ssh { .. } if https => {
                return Err(format!(
                    "{name}: urls: {prefix:?} is an https:// URL, and the entry holds an ssh credential"
                ));
            }
            _ => {}
        }
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_inline_and_file_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let file = dir.path().join("creds.yaml");
        std::fs::write(
            &file,
            format!(
                "platform:\n  https: {{ username: git, passwordFile: {} }}\n  urls: [https://git.example.com/platform/]\ninfra:\n  ssh: {{ privateKey: KEY, knownHosts: 'h ssh-ed25519 AAAA' }}\n  urls: ['git@h:infra/']\n",
                token.display()
            ),
        )
        .unwrap();
        let creds = load(&file).unwrap().git;
        assert_eq!(
            creds["platform"],
            RepoCredential {
                urls: vec!["https://git.example.com/platform/".into()],
                kind: CredentialKind::Https {
                    username: "git".into(),
                    password: "s3cret".into()
                }
            }
        );
        assert!(
            matches!(&creds["infra"].kind, CredentialKind::Ssh { username, .. } if username == "git")
        );
        assert_eq!(creds["infra"].urls, ["git@h:infra/"]);
        // Debug output never shows secrets.
        assert!(!format!("{:?}", creds["platform"]).contains("s3cret"));
    }

    #[test]
    fn ambiguous_or_missing_secrets_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("creds.yaml");
        std::fs::write(
            &file,
            "r:\n  https: { username: git }\n  urls: ['https://h/']\n",
        )
        .unwrap();
        let err = load(&file).unwrap_err().to_string();
        assert!(
            err.contains("r: give exactly one of password and passwordFile"),
            "{err}"
        );
        std::fs::write(&file, "r: {}\n").unwrap();
        let err = load(&file).unwrap_err().to_string();
        assert!(
            err.contains("r: give https, ssh, webhookSecret or notifierSecret"),
            "{err}"
        );
        std::fs::write(
            &file,
            "r:\n  https: { username: git, passwordFile: /nope }\n  urls: ['https://h/']\n",
        )
        .unwrap();
        let err = load(&file).unwrap_err().to_string();
        assert!(err.contains("/nope"), "{err}");
    }

    #[test]
    fn a_broken_file_is_refused_with_its_line_and_no_secret_quoted() {
        let err = loaded("r:\n  https: { username: git, password: hunter2 }\n  urls: [oops\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4") || err.contains("line 3"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    fn spec(credentials_ref: Option<&str>, webhook_secret_ref: Option<&str>) -> RepoSpec {
        RepoSpec {
            credentials_ref: credentials_ref.map(Into::into),
            webhook_secret_ref: webhook_secret_ref.map(Into::into),
            ..RepoSpec::new("https://git.example.com/p.git")
        }
    }

    fn loaded(yaml: &str) -> Result<Credentials, CredentialsError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("creds.yaml");
        std::fs::write(&file, yaml).unwrap();
        load(&file)
    }

    #[test]
    fn entries_hold_git_credentials_webhook_secrets_or_both() {
        let dir = tempfile::tempdir().unwrap();
        let hook = dir.path().join("hook");
        std::fs::write(&hook, "from-file\n").unwrap();
        let creds = loaded(&format!(
            "bot:\n  https: {{ username: git, password: pw }}\n  urls: ['https://h/']\n  webhookSecret: both\nhook-a: {{ webhookSecret: inline }}\nhook-b: {{ webhookSecretFile: {} }}\n",
            hook.display()
        ))
        .unwrap();
        assert_eq!(creds.git.keys().collect::<Vec<_>>(), ["bot"]);
        assert_eq!(creds.webhook_secrets["bot"], "both");
        assert_eq!(creds.webhook_secrets["hook-a"], "inline");
        assert_eq!(creds.webhook_secrets["hook-b"], "from-file");
        let debug = format!("{creds:?}");
        assert!(debug.contains("hook-a"), "{debug}");
        for secret in ["pw", "both", "inline", "from-file"] {
            assert!(!debug.contains(&format!("\"{secret}\"")), "{debug}");
        }
    }

    #[test]
    fn conflicting_entries_are_errors() {
        for (yaml, expected) in [
            (
                "r:\n  https: { username: git, password: p }\n  ssh: { privateKey: K, knownHosts: H }\n  urls: ['https://h/']\n",
                "r: give one of https and ssh, not both",
            ),
            (
                "r: { webhookSecret: a, webhookSecretFile: /x }\n",
                "r: give one of webhookSecret and webhookSecretFile, not both",
            ),
            (
                "r: { webhookSecret: '' }\n",
                "r: webhookSecret must not be empty",
            ),
            ("r: { token: x }\n", "unknown field `token`"),
        ] {
            let err = loaded(yaml).unwrap_err().to_string();
            assert!(err.contains(expected), "{yaml}: {err}");
        }
    }

    #[test]
    fn repos_resolve_their_refs_and_fall_back_to_the_old_keys() {
        let creds = loaded(
            "platform:\n  https: { username: git, password: by-name }\n  urls: ['https://git.example.com/']\nbot:\n  https: { username: bot, password: by-ref }\n  urls: ['https://git.example.com/']\nhook-a: { webhookSecret: a }\n",
        )
        .unwrap();
        let user = |c: Option<&RepoCredential>| match c.map(|c| &c.kind) {
            Some(CredentialKind::Https { username, .. }) => Some(username.clone()),
            _ => None,
        };
        // A ref wins; without one, the entry named like the Repo (the file's old keys).
        assert_eq!(
            user(creds.git_for("platform", &spec(Some("bot"), None)).unwrap()).as_deref(),
            Some("bot")
        );
        assert_eq!(
            user(creds.git_for("platform", &spec(None, None)).unwrap()).as_deref(),
            Some("git")
        );
        assert_eq!(creds.git_for("other", &spec(None, None)).unwrap(), None);
        let err = creds
            .git_for("other", &spec(Some("hook-a"), None))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "repo \"other\": spec.credentialsRef: the hub's credentials file (--repo-credentials) has no entry \"hook-a\" with https or ssh credentials"
        );

        // Its own webhook secret, else the hub-wide one.
        assert_eq!(
            creds
                .webhook_secret_for("p", &spec(None, Some("hook-a")), Some("hub"))
                .unwrap(),
            Some("a")
        );
        assert_eq!(
            creds
                .webhook_secret_for("p", &spec(None, None), Some("hub"))
                .unwrap(),
            Some("hub")
        );
        assert_eq!(
            creds
                .webhook_secret_for("p", &spec(None, None), None)
                .unwrap(),
            None
        );
        let err = creds
            .webhook_secret_for("p", &spec(None, Some("bot")), Some("hub"))
            .unwrap_err();
        assert!(
            matches!(err, RefError::NoWebhookSecret { ref name, .. } if name == "bot"),
            "{err}"
        );

        assert!(creds.check("p", &spec(Some("bot"), Some("hook-a"))).is_ok());
        assert!(creds.check("p", &spec(Some("nope"), None)).is_err());
        assert!(creds.check("p", &spec(None, Some("nope"))).is_err());
        assert!(Credentials::default().check("p", &spec(None, None)).is_ok());
    }

    #[test]
    fn entries_must_say_where_their_credential_may_go() {
        for (yaml, expected) in [
            (
                "github-bot:\n  https: { username: git, password: p }\n",
                "github-bot: give urls, the URL prefixes its credential may be sent to",
            ),
            (
                "github-bot:\n  https: { username: git, password: p }\n  urls: []\n",
                "github-bot: urls must name at least one URL prefix",
            ),
            (
                "github-bot:\n  https: { username: git, password: p }\n  urls: ['http://github.com/acme/']\n",
                "github-bot: urls: \"http://github.com/acme/\" must be an https:// or ssh:// URL",
            ),
            (
                "github-bot:\n  https: { username: git, password: p }\n  urls: ['git@github.com:acme/']\n",
                "github-bot: urls: \"git@github.com:acme/\" is not an https:// URL, and the entry holds an https credential",
            ),
            (
                "infra:\n  ssh: { privateKey: K, knownHosts: H }\n  urls: ['https://github.com/acme/']\n",
                "infra: urls: \"https://github.com/acme/\" is an https:// URL, and the entry holds an ssh credential",
            ),
            (
                "hook: { webhookSecret: s, urls: ['https://github.com/'] }\n",
                "hook: urls are for an https or ssh credential, and the entry has none",
            ),
        ] {
            let err = loaded(yaml).unwrap_err().to_string();
            assert!(err.contains(expected), "{yaml}: {err}");
        }
    }

    #[test]
    fn a_repo_gets_a_credential_only_for_a_url_its_entry_names() {
        let creds = loaded(
            "github-bot:\n  https: { username: bot, password: p }\n  urls: ['https://github.com/acme']\n",
        )
        .unwrap();
        let at = |url: &str, credentials_ref: Option<&str>| RepoSpec {
            credentials_ref: credentials_ref.map(Into::into),
            ..RepoSpec::new(url)
        };
        assert!(
            creds
                .git_for(
                    "web",
                    &at("https://github.com/acme/web.git", Some("github-bot"))
                )
                .unwrap()
                .is_some()
        );
        for url in [
            "http://127.0.0.1:8080/x.git",
            "git://github.com/acme/web.git",
            "https://github.com/acmevil/web.git",
            "https://evil.example/acme/web.git",
        ] {
            let err = creds
                .git_for("evil", &at(url, Some("github-bot")))
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "repo \"evil\": spec.credentialsRef: the credentials entry \"github-bot\" may not be sent to {url:?} (spec.url): its urls are https://github.com/acme"
                )
            );
        }
        // The entry named like a Repo that names none is bound the same way.
        let err = creds
            .git_for("github-bot", &at("http://127.0.0.1:8080/x.git", None))
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "repo \"github-bot\": spec.credentialsRef: not set, so the credentials entry named like the Repo applies, and it may not be sent to \"http://127.0.0.1:8080/x.git\""
            ),
            "{err}"
        );
        // A password in the URL stays out of the message.
        let err = creds
            .git_for(
                "evil",
                &at("http://u:pw@127.0.0.1/x.git", Some("github-bot")),
            )
            .unwrap_err();
        assert!(!err.to_string().contains("pw"), "{err}");
    }

    #[test]
    fn notifier_secrets_are_entries_of_their_own_bound_to_urls() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "ghp_fromfile\n").unwrap();
        let creds = loaded(&format!(
            "ops-hook:\n  notifierSecret: hmac-key\n  urls: ['https://hooks.example.com/gitfleet']\ngh:\n  notifierSecretFile: {}\n  urls: ['https://api.github.com/repos/acme/']\ntest:\n  notifierSecret: t\n  urls: ['http://127.0.0.1:9000/']\n",
            token.display()
        ))
        .unwrap();
        assert_eq!(creds.notifier_secrets["ops-hook"].secret, "hmac-key");
        assert_eq!(creds.notifier_secrets["gh"].secret, "ghp_fromfile");
        assert_eq!(
            creds.notifier_secrets["gh"].urls,
            ["https://api.github.com/repos/acme/"]
        );
        assert!(creds.git.is_empty() && creds.webhook_secrets.is_empty());
        let debug = format!("{creds:?}");
        assert!(debug.contains("ops-hook"), "{debug}");
        for secret in ["hmac-key", "ghp_fromfile"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        for (yaml, expected) in [
            (
                "n: { notifierSecret: s }\n",
                "n: give urls, the URL prefixes its notifierSecret may be used for",
            ),
            (
                "n: { notifierSecret: s, urls: ['http://hooks.example.com/'] }\n",
                "n: urls: \"http://hooks.example.com/\" must be an https:// URL (http:// only to a loopback host)",
            ),
            (
                "n: { notifierSecret: s, urls: ['git@h:x/'] }\n",
                "n: urls: \"git@h:x/\" must be an https:// URL",
            ),
            (
                "n: { notifierSecret: '', urls: ['https://h/'] }\n",
                "n: notifierSecret must not be empty",
            ),
            (
                "n: { notifierSecret: s, webhookSecret: w, urls: ['https://h/'] }\n",
                "n: a notifierSecret is an entry of its own",
            ),
            (
                "n: { notifierSecret: s, notifierSecretFile: /x, urls: ['https://h/'] }\n",
                "n: give one of notifierSecret and notifierSecretFile, not both",
            ),
        ] {
            let err = loaded(yaml).unwrap_err().to_string();
            assert!(err.contains(expected), "{yaml}: {err}");
        }
    }
}
