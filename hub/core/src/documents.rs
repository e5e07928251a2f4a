//! Resource documents (Repo, App, ClusterGroup) from text: the files given to `gitfleet apply -f`
//! and the files of a Repo's fleet path.
//!
//! Pure: callers read the files. All of one apply, or one commit of a fleet path, is parsed
//! against one [`Budget`], so a hostile file cannot make the reader hold more than that budget.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::yaml::{Budget, LimitExceeded, YamlError};

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
    /// Over a limit of the YAML budget (aliases, depth, size).
    #[error("{file}: {error}")]
    TooLarge { file: String, error: LimitExceeded },
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

/// Parses one file's text into documents. `file` names it in origins and errors.
///
/// Empty YAML documents (a lone `---`, comments only) are skipped but still counted, so an origin's
/// index is the document's position in the file. A top-level `status` is dropped: the hub
/// writes it, so a document saved from `gitfleet get -o yaml` applies back. A `kind: List` document (what `gitfleet get
/// -o yaml` prints for several resources) is expanded into its items, `file#i.items[j]`.
pub fn parse_text(
    file: &str,
    text: &str,
    format: Format,
    budget: &Budget,
) -> Result<Vec<Document>, DocumentError> {
    let values = match format {
        Format::Json => parse_json(file, text, budget)?,
        Format::Yaml => parse_yaml(file, text, budget)?,
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

fn parse_json(
    file: &str,
    text: &str,
    budget: &Budget,
) -> Result<Vec<(usize, Value)>, DocumentError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let value = budget
        .json(text)
        .map_err(|e| document_error(file, "JSON", e))?;
    Ok(match value {
        // A top-level array is a list of documents.
        Value::Array(items) => items.into_iter().enumerate().collect(),
        other => vec![(0, other)],
    })
}

fn parse_yaml(
    file: &str,
    text: &str,
    budget: &Budget,
) -> Result<Vec<(usize, Value)>, DocumentError> {
    let documents = budget
        .documents(text)
        .map_err(|e| document_error(file, "YAML", e))?;
    Ok(documents
        .into_iter()
        .enumerate()
        .filter(|(_, value)| !value.is_null())
        .collect())
}

fn document_error(file: &str, format: &'static str, error: YamlError) -> DocumentError {
    match error {
        YamlError::Syntax {
            line,
            column,
            message,
        } => DocumentError::Syntax {
            file: file.to_owned(),
            format,
            line,
            column,
            message,
        },
        YamlError::Limit(error) => DocumentError::TooLarge {
            file: file.to_owned(),
            error,
        },
    }
}
