//! Turning the files given to `gitfleet apply -f` into resource documents.
//!
//! Parsing is pure ([`parse_text`]); [`load`] only reads files. Every document is parsed before
//! anything is sent, so a syntax error anywhere means nothing is applied.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

#[cfg(test)]
mod tests;

/// One resource document, as JSON, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// `path#index` (index of the document in its file, from 0), e.g. `apps/web.yaml#2`.
    pub origin: String,
    pub value: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read standard input: {0}")]
    Stdin(std::io::Error),
    /// A syntax error; `line` and `column` count from 1.
    #[error("{file}{at}: invalid {format}: {message}", at = position(*line, *column))]
    Syntax {
        file: String,
        format: &'static str,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    #[error("{origin}: {message}")]
    NotAResource { origin: String, message: String },
    #[error("no .yaml, .yml or .json files under {0}")]
    EmptyDirectory(PathBuf),
    #[error("no documents in {}", .0.join(", "))]
    NoDocuments(Vec<String>),
}

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

/// Which parser a file gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// `.json` files are JSON; everything else (`.yaml`, `.yml`, stdin) is YAML, which also
    /// reads JSON.
    pub fn for_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// Reads and parses every source (`-` is standard input, a directory is walked recursively in
/// path order), in the order given. Fails on the first bad file; returns nothing partial.
pub fn load(sources: &[String], stdin: &mut dyn Read) -> Result<Vec<Document>, DocumentError> {
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
            documents.extend(parse_text("stdin", &text, Format::Yaml)?);
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

/// Parses one file's text into documents. `file` names it in origins and errors.
///
/// Empty YAML documents (a lone `---`, comments only) are skipped but still counted, so an origin's
/// index is the document's position in the file. A top-level `status` is dropped: the hub
/// writes it, so a document saved from `gitfleet get -o yaml` applies back. A `kind: List` document (what `gitfleet get
/// -o yaml` prints for several resources) is expanded into its items, `file#i.items[j]`.
pub fn parse_text(file: &str, text: &str, format: Format) -> Result<Vec<Document>, DocumentError> {
    let values = match format {
        Format::Json => parse_json(file, text)?,
        Format::Yaml => parse_yaml(file, text)?,
    };
    let mut documents = Vec::new();
    for (index, value) in values {
        let origin = format!("{file}#{index}");
        expand(origin, value, &mut documents)?;
    }
    Ok(documents)
}

fn expand(origin: String, value: Value, out: &mut Vec<Document>) -> Result<(), DocumentError> {
    let Value::Object(map) = &value else {
        return Err(DocumentError::NotAResource {
            origin,
            message: format!(
                "expected a resource (a mapping with apiVersion, kind, metadata and spec), found {}",
                describe(&value)
            ),
        });
    };
    if map.get("kind").and_then(Value::as_str) == Some("List") {
        let items = match map.get("items") {
            Some(Value::Array(items)) => items.clone(),
            None | Some(Value::Null) => Vec::new(),
            Some(other) => {
                return Err(DocumentError::NotAResource {
                    origin,
                    message: format!(
                        "items of a List must be a sequence, found {}",
                        describe(other)
                    ),
                });
            }
        };
        for (j, item) in items.into_iter().enumerate() {
            expand(format!("{origin}.items[{j}]"), item, out)?;
        }
        return Ok(());
    }
    let mut value = value;
    if let Value::Object(map) = &mut value {
        // `status` is what the hub reports (`gitfleet get -o yaml` prints it), never input.
        map.remove("status");
    }
    out.push(Document { origin, value });
    Ok(())
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

fn parse_json(file: &str, text: &str) -> Result<Vec<(usize, Value)>, DocumentError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let value: Value = serde_json::from_str(text).map_err(|e| DocumentError::Syntax {
        file: file.to_owned(),
        format: "JSON",
        line: Some(e.line()),
        column: Some(e.column()),
        message: strip_position(&e.to_string()),
    })?;
    Ok(match value {
        // A top-level array is a list of documents.
        Value::Array(items) => items.into_iter().enumerate().collect(),
        other => vec![(0, other)],
    })
}

fn parse_yaml(file: &str, text: &str) -> Result<Vec<(usize, Value)>, DocumentError> {
    use serde::Deserialize;
    let mut values = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let yaml = serde_yaml::Value::deserialize(document).map_err(|e| yaml_error(file, &e))?;
        if yaml.is_null() {
            continue;
        }
        let json = serde_json::to_value(&yaml).map_err(|e| DocumentError::NotAResource {
            origin: format!("{file}#{index}"),
            message: format!("cannot be expressed as JSON: {e}"),
        })?;
        values.push((index, json));
    }
    Ok(values)
}

fn yaml_error(file: &str, e: &serde_yaml::Error) -> DocumentError {
    let location = e.location();
    DocumentError::Syntax {
        file: file.to_owned(),
        format: "YAML",
        line: location.as_ref().map(serde_yaml::Location::line),
        column: location.as_ref().map(serde_yaml::Location::column),
        message: strip_position(&e.to_string()),
    }
}

/// serde_yaml and serde_json put " at line L column C" into their messages; the error already
/// says where, in the `file:line:column` form editors understand.
fn strip_position(message: &str) -> String {
    let Some(start) = message.find(" at line ") else {
        return message.to_owned();
    };
    let rest = &message[start + " at line ".len()..];
    let after_line = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(after_column) = after_line.strip_prefix(" column ") else {
        return message.to_owned();
    };
    let tail = after_column.trim_start_matches(|c: char| c.is_ascii_digit());
    format!("{}{tail}", &message[..start])
}
