//! `gitfleet config …`: reading and changing the user's credentials file. The decisions
//! ([`merge`], [`redact`]) are pure; the commands load and save around them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CliError;
use crate::client::config::{ClientConfig, ConfigError, ConfigFile as _, Context, ContextError};

#[cfg(test)]
mod tests;

/// The config file to use: `--config`/`$GITFLEET_CONFIG`, else `~/.config/gitfleet/config`.
pub fn config_path(flag: Option<&Path>) -> Result<PathBuf, CliError> {
    if let Some(path) = flag {
        return Ok(path.to_owned());
    }
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Ok(PathBuf::from(home).join(".config/gitfleet/config")),
        _ => Err(CliError::NoHome),
    }
}

/// Loads the config, saying how to get one when there is none.
pub fn load(path: &Path) -> Result<ClientConfig, CliError> {
    match ClientConfig::load(path) {
        Ok(config) => Ok(config),
        Err(ConfigError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Err(CliError::NoConfig {
                path: path.to_owned(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// The context to use: `--context`, else the config's current one; errors list what exists.
pub fn select<'a>(
    config: &'a ClientConfig,
    wanted: Option<&str>,
    path: &Path,
) -> Result<&'a Context, CliError> {
    config.context(wanted).map_err(|e| match e {
        ContextError::NoSuchContext(name) => CliError::NoSuchContext {
            name,
            path: path.to_owned(),
            available: names(config),
        },
        ContextError::NoCurrentContext => CliError::NoCurrentContext {
            path: path.to_owned(),
            available: names(config),
        },
    })
}

fn names(config: &ClientConfig) -> String {
    if config.contexts.is_empty() {
        "none".to_owned()
    } else {
        config
            .contexts
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What `config import` did to each context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    pub path: String,
    pub added: Vec<String>,
    pub replaced: Vec<String>,
    pub current_context: String,
}

/// Merges `incoming`'s contexts into `existing` (same name → replaced), renaming the single
/// incoming context to `rename` when given, and makes the imported current context (or the first
/// imported one) current. Pure.
pub fn merge(
    existing: Option<ClientConfig>,
    incoming: ClientConfig,
    rename: Option<&str>,
) -> Result<(ClientConfig, Vec<String>, Vec<String>, String), ImportError> {
    let mut contexts = incoming.contexts;
    if contexts.is_empty() {
        return Err(ImportError::Empty);
    }
    let mut current = incoming
        .current_context
        .filter(|c| contexts.iter().any(|x| &x.name == c))
        .unwrap_or_else(|| contexts[0].name.clone());
    if let Some(name) = rename {
        if contexts.len() != 1 {
            return Err(ImportError::RenameNeedsOne(contexts.len()));
        }
        if name.trim().is_empty() {
            return Err(ImportError::EmptyName);
        }
        contexts[0].name = name.to_owned();
        current = name.to_owned();
    }
    let mut config = existing.unwrap_or_else(|| ClientConfig {
        api_version: ClientConfig::API_VERSION.to_owned(),
        kind: ClientConfig::KIND.to_owned(),
        current_context: None,
        contexts: Vec::new(),
    });
    let (mut added, mut replaced) = (Vec::new(), Vec::new());
    for context in contexts {
        if config.contexts.iter().any(|c| c.name == context.name) {
            replaced.push(context.name.clone());
        } else {
            added.push(context.name.clone());
        }
        config.upsert(context);
    }
    config.current_context = Some(current.clone());
    Ok((config, added, replaced, current))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("it holds no contexts")]
    Empty,
    #[error("--name renames one context, but the file holds {0}; import it without --name")]
    RenameNeedsOne(usize),
    #[error("--name must not be empty")]
    EmptyName,
}

/// The config with certificates and keys elided, as `kubectl config view` does.
pub fn redact(mut config: ClientConfig) -> ClientConfig {
    for c in &mut config.contexts {
        c.certificate_authority_data = elide(&c.certificate_authority_data, "DATA+OMITTED");
        c.client_certificate_data = elide(&c.client_certificate_data, "DATA+OMITTED");
        c.client_key_data = elide(&c.client_key_data, "REDACTED");
    }
    config
}

fn elide(data: &str, placeholder: &str) -> String {
    if data.is_empty() {
        String::new()
    } else {
        placeholder.to_owned()
    }
}

pub fn import(
    config_path: &Path,
    file: &Path,
    rename: Option<&str>,
) -> Result<ImportReport, CliError> {
    let incoming = match ClientConfig::load(file) {
        Err(ConfigError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::ImportMissing {
                file: file.to_owned(),
            });
        }
        other => other?,
    };
    let existing = match ClientConfig::load(config_path) {
        Ok(config) => Some(config),
        Err(ConfigError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            None
        }
        Err(e) => return Err(e.into()),
    };
    let (config, added, replaced, current) =
        merge(existing, incoming, rename).map_err(|source| CliError::Import {
            file: file.to_owned(),
            source,
        })?;
    config.save(config_path)?;
    Ok(ImportReport {
        path: config_path.display().to_string(),
        added,
        replaced,
        current_context: current,
    })
}

pub fn import_text(report: &ImportReport) -> String {
    let mut text = String::new();
    for name in &report.added {
        text.push_str(&format!("context {name:?} added to {}\n", report.path));
    }
    for name in &report.replaced {
        text.push_str(&format!("context {name:?} replaced in {}\n", report.path));
    }
    text.push_str(&format!(
        "switched to context {:?}\n",
        report.current_context
    ));
    text
}

pub fn use_context(config_path: &Path, name: &str) -> Result<(), CliError> {
    let mut config = load(config_path)?;
    select(&config, Some(name), config_path)?;
    config.current_context = Some(name.to_owned());
    config.save(config_path)?;
    Ok(())
}

/// One row of `config get-contexts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextSummary {
    pub name: String,
    pub server: String,
    pub current: bool,
}

pub fn summaries(config: &ClientConfig) -> Vec<ContextSummary> {
    config
        .contexts
        .iter()
        .map(|c| ContextSummary {
            name: c.name.clone(),
            server: c.server.clone(),
            current: config.current_context.as_deref() == Some(c.name.as_str()),
        })
        .collect()
}

pub fn contexts_table(rows: &[ContextSummary]) -> String {
    let width = rows
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0)
        .max("NAME".len());
    let mut text = format!("CURRENT   {:width$}   SERVER\n", "NAME");
    for r in rows {
        let mark = if r.current { "*" } else { " " };
        text.push_str(&format!("{mark:7}   {:width$}   {}\n", r.name, r.server));
    }
    text.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
