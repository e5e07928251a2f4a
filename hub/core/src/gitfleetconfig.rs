//! The admin credentials file's format, shaped like a kubeconfig: named contexts, each a hub
//! address with the CA to verify it and the admin client certificate and key, all inline as PEM.
//!
//! The hub writes one on first start (`DATA/admin.gitfleetconfig`); the CLI reads `--config`,
//! `$GITFLEET_CONFIG`, or `~/.config/gitfleet/config`. Both do their own file IO: the format is
//! here so that neither depends on the other.

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// A context could not be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
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

    /// Parses a config file's text. The file is the user's own (or the hub's), not untrusted
    /// input, so it is not read through a [`crate::yaml::Budget`].
    pub fn from_yaml(text: &str) -> Result<Self, serde_saphyr::Error> {
        // One line with its position, not a snippet of a file that holds a private key.
        let mut options = serde_saphyr::Options::default();
        options.with_snippet = false;
        serde_saphyr::from_str_with_options(text, options)
    }

    /// The file's text.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).expect("config serialises: plain strings only")
    }

    /// The named context, or the current one when `name` is `None`.
    pub fn context(&self, name: Option<&str>) -> Result<&Context, ContextError> {
        let wanted = match name {
            Some(n) => n,
            None => self
                .current_context
                .as_deref()
                .ok_or(ContextError::NoCurrentContext)?,
        };
        self.contexts
            .iter()
            .find(|c| c.name == wanted)
            .ok_or_else(|| ContextError::NoSuchContext(wanted.to_owned()))
    }

    /// Adds or replaces a context by name.
    pub fn upsert(&mut self, context: Context) {
        match self.contexts.iter_mut().find(|c| c.name == context.name) {
            Some(existing) => *existing = context,
            None => self.contexts.push(context),
        }
    }
}
