//! The spoke's files in its data directory, written atomically (temp file, fsync, rename, fsync
//! of the directory) so that a crash leaves either the old or the new version, never half.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` atomically; `private` makes the file readable by its owner only.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(if private { 0o600 } else { 0o644 });
        }
        // The directory is made only when missing (once): every desired state and outbox
        // write went through two more path lookups for it.
        let mut file = match options.open(&tmp) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(io(dir))?;
                options.open(&tmp)
            }
            opened => opened,
        }
        .map_err(io(&tmp))?;
        file.write_all(bytes).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io(path))?;
    // The rename is durable only once the directory entry is.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

pub fn write_json<T: Serialize>(path: &Path, value: &T, private: bool) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
    write_atomic(path, &bytes, private)
}

/// Reads a JSON file; `None` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StoreError::Corrupt {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Reads a text file; `None` when it does not exist.
pub fn read_text(path: &Path) -> Result<Option<String>, StoreError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_replaces_atomically() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let path = dir.path().join("sub/state.json");
        assert_eq!(read_json::<Vec<u32>>(&path).expect("read"), None);
        write_json(&path, &vec![1, 2], false).expect("write");
        write_json(&path, &vec![3], false).expect("write");
        assert_eq!(read_json::<Vec<u32>>(&path).expect("read"), Some(vec![3]));
        let leftovers: Vec<_> = fs::read_dir(path.parent().expect("dir"))
            .expect("ls")
            .collect();
        assert_eq!(leftovers.len(), 1, "no temp files left behind");
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::TempDir::new().expect("tempdir");
        let path = dir.path().join("key.pem");
        write_atomic(&path, b"secret", true).expect("write");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn corrupt_files_are_an_error_naming_the_file() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let path = dir.path().join("bad.json");
        fs::write(&path, b"{nope").expect("write");
        let err = read_json::<Vec<u32>>(&path).expect_err("corrupt");
        assert!(err.to_string().contains("bad.json"), "{err}");
    }
}
