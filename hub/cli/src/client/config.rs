//! Reading and writing the admin credentials file; its format is
//! [`gitfleet_core::gitfleetconfig`], which the hub also writes.

use std::io::Write as _;
use std::path::{Path, PathBuf};

pub use gitfleet_core::gitfleetconfig::{ClientConfig, Context, ContextError};

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
        source: Box<serde_saphyr::Error>,
    },
    #[error(transparent)]
    Context(#[from] ContextError),
}

/// The file's IO, on the format's type: `ClientConfig::load(path)`, `config.save(path)`.
pub trait ConfigFile: Sized {
    fn load(path: &Path) -> Result<Self, ConfigError>;
    /// Writes the file with owner-only permissions: it holds a private key.
    fn save(&self, path: &Path) -> Result<(), ConfigError>;
}

impl ConfigFile for ClientConfig {
    fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        ClientConfig::from_yaml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let write_err = |source| ConfigError::Write {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_err)?;
        }
        write_private(path, self.to_yaml().as_bytes()).map_err(write_err)
    }
}

/// Writes a file readable by its owner only, atomically and durably: a crash leaves the old
/// content or the new, and a file that existed with a wider mode is replaced, not reused.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // A temporary file is created owner-only, in the same directory so that the rename is atomic.
    let mut staged = tempfile::NamedTempFile::new_in(dir)?;
    staged.write_all(bytes)?;
    staged.as_file().sync_all()?;
    staged.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
