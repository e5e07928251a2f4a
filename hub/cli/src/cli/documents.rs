//! Reading the files given to `gitfleet apply -f` (and `gitfleet diff -f`) into resource
//! documents. Parsing is gitfleet-core's ([`parse_text`]); this module only reads files. Every
//! document is parsed before anything is sent, so a syntax error anywhere means nothing is
//! applied, and all of them are charged to one YAML budget.

use std::io::Read;
use std::path::{Path, PathBuf};

pub use gitfleet_core::documents::{Document, DocumentError, Format, parse_text};
use gitfleet_core::yaml::{Budget, Limits};

#[cfg(test)]
mod tests;

/// Reads and parses every source (`-` is standard input, a directory is walked recursively in
/// path order), in the order given. Fails on the first bad file; returns nothing partial.
pub fn load(sources: &[String], stdin: &mut dyn Read) -> Result<Vec<Document>, DocumentError> {
    let budget = Budget::new(Limits::DEFAULT);
    let mut documents = Vec::new();
    let mut stdin_used = false;
    for source in sources {
        if source == "-" {
            if stdin_used {
                continue;
            }
            stdin_used = true;
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .map_err(DocumentError::Stdin)?;
            documents.extend(parse_text("stdin", &text, Format::Yaml, &budget)?);
            continue;
        }
        let path = PathBuf::from(source);
        let meta = std::fs::metadata(&path).map_err(|source| DocumentError::Read {
            path: path.clone(),
            source,
        })?;
        let files = if meta.is_dir() {
            let files = walk(&path)?;
            if files.is_empty() {
                return Err(DocumentError::EmptyDirectory(path));
            }
            files
        } else {
            vec![path]
        };
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|source| DocumentError::Read {
                path: file.clone(),
                source,
            })?;
            documents.extend(parse_text(
                &file.display().to_string(),
                &text,
                Format::for_path(&file),
                &budget,
            )?);
        }
    }
    if documents.is_empty() {
        return Err(DocumentError::NoDocuments(sources.to_vec()));
    }
    Ok(documents)
}

/// Every `.yaml`, `.yml` and `.json` file under `dir`, sorted by path. Hidden files and
/// directories (`.git`) are skipped; symlinked directories are not followed, so a link cycle
/// cannot loop.
pub fn walk(dir: &Path) -> Result<Vec<PathBuf>, DocumentError> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let read_err = |source| DocumentError::Read {
            path: current.clone(),
            source,
        };
        for entry in std::fs::read_dir(&current).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let file_type = entry.file_type().map_err(read_err)?;
            if file_type.is_dir() {
                pending.push(path);
            } else if is_manifest(&path)
                && (file_type.is_file() || (file_type.is_symlink() && path.is_file()))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn is_manifest(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["yaml", "yml", "json"]
            .iter()
            .any(|m| e.eq_ignore_ascii_case(m))
    })
}
