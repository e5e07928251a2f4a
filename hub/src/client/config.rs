//! The admin credentials file, shaped like a kubeconfig: named contexts, each a hub address with
//! the CA to verify it and the admin client certificate and key, all inline as PEM.
//!
//! The hub writes one on first start (`DATA/admin.gitfleetconfig`); the CLI reads
//! `--config`, `$GITFLEET_CONFIG`, or `~/.config/gitfleet/config`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read gitfleet config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write gitfleet config {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("gitfleet config {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("gitfleet config has no context named {0:?}")]
    NoSuchContext(String),
    #[error("gitfleet config has no current-context; pass --context")]
    NoCurrentContext,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ClientConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: Vec<Context>,
}

/// One hub and the admin identity to use with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Context {
    pub name: String,
    /// `https://host:port` of the hub's gRPC listener.
    pub server: String,
    pub certificate_authority_data: String,
    pub client_certificate_data: String,
    pub client_key_data: String,
    /// Name to verify in the hub's certificate when it differs from the host in `server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
}

impl ClientConfig {
    pub const API_VERSION: &'static str = "gitfleet.dev/v1";
    pub const KIND: &'static str = "Config";

    /// A config holding one context, which is also the current one.
    pub fn single(context: Context) -> Self {
        Self {
            api_version: Self::API_VERSION.to_owned(),
            kind: Self::KIND.to_owned(),
            current_context: Some(context.name.clone()),
            contexts: vec![context],
        }
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Writes the file with owner-only permissions: it holds a private key.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let write_err = |source| ConfigError::Write {
            path: path.to_owned(),
            source,
        };
        let text = serde_yaml::to_string(self).expect("config serialises: plain strings only");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_err)?;
        }
        write_private(path, text.as_bytes()).map_err(write_err)
    }

    /// The named context, or the current one when `name` is `None`.
    pub fn context(&self, name: Option<&str>) -> Result<&Context, ConfigError> {
        let wanted = match name {
            Some(n) => n,
            None => self
                .current_context
                .as_deref()
                .ok_or(ConfigError::NoCurrentContext)?,
        };
        self.contexts
            .iter()
            .find(|c| c.name == wanted)
            .ok_or_else(|| ConfigError::NoSuchContext(wanted.to_owned()))
    }

    /// Adds or replaces a context by name.
    pub fn upsert(&mut self, context: Context) {
        match self.contexts.iter_mut().find(|c| c.name == context.name) {
            Some(existing) => *existing = context,
            None => self.contexts.push(context),
        }
    }
}

/// Writes a file readable by its owner only, atomically: a crash leaves the old content or the
/// new, and a file that existed with a wider mode is replaced, not reused.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::pki::write_atomic(path, bytes, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(name: &str) -> Context {
        Context {
            name: name.into(),
            server: "https://127.0.0.1:7443".into(),
            certificate_authority_data: "CA".into(),
            client_certificate_data: "CERT".into(),
            client_key_data: "KEY".into(),
            tls_server_name: None,
        }
    }

    #[test]
    fn round_trips_and_selects_contexts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/config");
        let mut cfg = ClientConfig::single(ctx("a"));
        cfg.upsert(ctx("b"));
        cfg.save(&path).unwrap();
        let back = ClientConfig::load(&path).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(back.context(None).unwrap().name, "a");
        assert_eq!(back.context(Some("b")).unwrap().name, "b");
        assert!(matches!(
            back.context(Some("zz")),
            Err(ConfigError::NoSuchContext(n)) if n == "zz"
        ));
        let mode = std::fs::metadata(&path).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }

    #[test]
    fn malformed_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, "contexts: [ {").unwrap();
        let err = ClientConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("config"), "{err}");
        assert!(err.contains("not valid"), "{err}");
    }
}
