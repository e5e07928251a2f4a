//! Reading untrusted YAML (and JSON, which is YAML) into JSON values within one budget.
//!
//! Everything gitfleet reads from a Git repository or a user's file goes through here, on both
//! sides: the hub's fleet path and `gitfleet apply`, the spoke's manifests, `kustomization.yaml`,
//! `Chart.yaml` and `requirements.yaml`. Two layers, because neither bounds everything alone:
//!
//! - Before anything is built, serde-saphyr's streaming scanner (granit-parser) counts the
//!   text's parser events, aliases, nesting depth and documents against what is left of the
//!   budget, and notes where each document begins. It builds no values, so a hostile file
//!   costs only the scan. Each document is then built on its own by serde-saphyr, and its
//!   errors are placed in the whole text.
//! - While values are built, every value and string byte produced is charged, so aliases that
//!   expand a big anchored node many times stop as soon as the expansion passes what we will
//!   hold, per document and in total.
//!
//! A [`Budget`] is made once per unit of work whose memory it bounds — a Target's render on the
//! spoke, one commit of a fleet path or one `gitfleet apply` on the hub — and every file of that
//! work is charged to it, so splitting an attack over many files gains nothing.

use std::cell::Cell;
use std::fmt;

use serde_saphyr::granit_parser::{self, Event, ScanError};

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor,
};
use serde_json::{Map, Number, Value};

#[cfg(test)]
mod tests;

/// Approximate cost of one value besides its string bytes (what a `serde_json::Value` and its
/// slot in a map or vector take).
const VALUE_COST: usize = 32;

/// What one [`Budget`] allows, in total over every file charged to it (the expanded size also
/// per document).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Parser events (every scalar, alias, start and end of a mapping, sequence or document).
    pub max_events: usize,
    /// Alias references (`*name`).
    pub max_aliases: usize,
    /// Nesting of mappings and sequences.
    pub max_depth: usize,
    /// YAML documents.
    pub max_documents: usize,
    /// Approximate bytes of values one document may expand to, aliases included.
    pub max_document_bytes: usize,
    /// Approximate bytes of values all documents together may expand to.
    pub max_total_bytes: usize,
}

impl Limits {
    /// Room for any real set of manifests (the largest real Apps hold a few thousand objects;
    /// a Kubernetes object cannot exceed 1.5 MiB in etcd), and a ceiling on what a hostile
    /// repository can make the reader hold.
    pub const DEFAULT: Limits = Limits {
        max_events: 8_000_000,
        max_aliases: 10_000,
        max_depth: 100,
        max_documents: 20_000,
        max_document_bytes: 16 * 1024 * 1024,
        max_total_bytes: 256 * 1024 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a text was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlError {
    /// Not valid YAML (or JSON); `line` and `column` count from 1.
    #[error("{message}")]
    Syntax {
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// Valid, but over a limit that protects the reader.
    #[error("{0}")]
    Limit(#[from] LimitExceeded),
}

impl YamlError {
    /// The line the error is at, counting from 1, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            YamlError::Syntax { line, .. } => *line,
            YamlError::Limit(_) => None,
        }
    }
}

/// Which limit a text went over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("more than {limit} YAML parser events in all files together")]
    Events { limit: usize },
    #[error(
        "more than {limit} YAML aliases (*name) in all files together (aliases can make a small file expand to a huge one)"
    )]
    Aliases { limit: usize },
    #[error("mappings and sequences nested more than {limit} deep")]
    Depth { limit: usize },
    #[error("more than {limit} YAML documents in all files together")]
    Documents { limit: usize },
    #[error("a document expands to more than {limit} bytes of values (a YAML alias bomb?)")]
    DocumentBytes { limit: usize },
    #[error("the files together expand to more than {limit} bytes of values (a YAML alias bomb?)")]
    TotalBytes { limit: usize },
    #[error("over the YAML budget: {0}")]
    Other(String),
}

/// What is left to read for one unit of work. Charged by every text parsed with it.
#[derive(Debug)]
pub struct Budget {
    limits: Limits,
    events: Cell<usize>,
    aliases: Cell<usize>,
    documents: Cell<usize>,
    total_bytes: Cell<usize>,
    /// What the document being built may still expand to.
    document_bytes: Cell<usize>,
    /// Set when a charge failed, so that the error names the limit rather than serde's wrapper.
    exceeded: Cell<Option<Exceeded>>,
}

#[derive(Debug, Clone, Copy)]
enum Exceeded {
    Document,
    Total,
}

impl Budget {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            events: Cell::new(limits.max_events),
            aliases: Cell::new(limits.max_aliases),
            documents: Cell::new(limits.max_documents),
            total_bytes: Cell::new(limits.max_total_bytes),
            document_bytes: Cell::new(limits.max_document_bytes),
            exceeded: Cell::new(None),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Every document of a YAML stream, as JSON values (an empty document is `null`). Mapping
    /// keys become strings and merge keys (`<<`) are applied, as Kubernetes' YAML reader does.
    pub fn documents(&self, text: &str) -> Result<Vec<Value>, YamlError> {
        let documents = self.scan(text)?;
        if documents.is_empty() {
            // An empty stream (nothing, or only comments) reads as one null document.
            return Ok(vec![self.build_yaml(text, Position::START)?]);
        }
        documents
            .into_iter()
            .map(|(slice, at)| self.build_yaml(slice, at))
            .collect()
    }

    /// A single-document YAML text as a JSON value (an empty text is `null`).
    pub fn document(&self, text: &str) -> Result<Value, YamlError> {
        self.scan(text)?;
        self.build_yaml(text, Position::START)
    }

    /// Builds the one document `text` holds, which begins at `at` in the text it was cut from
    /// (so that errors point into that text).
    fn build_yaml(&self, text: &str, at: Position) -> Result<Value, YamlError> {
        self.begin_document();
        serde_saphyr::with_deserializer_from_str_with_options(
            text,
            reader_options(&self.limits),
            |de| (BoundedValue { budget: self }).deserialize(de),
        )
        .map_err(|e| self.over_limit().unwrap_or_else(|| saphyr_error(&e, at)))
    }

    /// A single-document YAML text deserialised into `T` (through a JSON value, so the text is
    /// charged like any other).
    pub fn parse<T: DeserializeOwned>(&self, text: &str) -> Result<T, YamlError> {
        let value = self.document(text)?;
        serde_json::from_value(value).map_err(|e| YamlError::Syntax {
            line: None,
            column: None,
            message: e.to_string(),
        })
    }

    /// A JSON text as a value, charged like YAML (JSON has no aliases; its size and depth still
    /// count).
    pub fn json(&self, text: &str) -> Result<Value, YamlError> {
        self.take_documents(1)?;
        let mut de = serde_json::Deserializer::from_str(text);
        let value = self.build(&mut de, |e: serde_json::Error| YamlError::Syntax {
            line: Some(e.line()),
            column: Some(e.column()),
            message: strip_position(&e.to_string()),
        })?;
        de.end().map_err(|e| YamlError::Syntax {
            line: Some(e.line()),
            column: Some(e.column()),
            message: strip_position(&e.to_string()),
        })?;
        Ok(value)
    }

    fn take_documents(&self, n: usize) -> Result<(), YamlError> {
        let left = self.documents.get();
        if n > left {
            self.documents.set(0);
            return Err(LimitExceeded::Documents {
                limit: self.limits.max_documents,
            }
            .into());
        }
        self.documents.set(left - n);
        Ok(())
    }

    /// Counts the text's events, aliases, depth and documents without building anything, and
    /// cuts it into its documents: each one's text and where that text begins.
    fn scan<'t>(&self, text: &'t str) -> Result<Vec<(&'t str, Position)>, YamlError> {
        let limits = &self.limits;
        let mut options = granit_parser::Options::default();
        // The scanner refuses collections nested deeper, ahead of the events the depth is
        // counted on; one more block level lets the count below name the limit.
        options.flow_nesting_limit = limits.max_depth;
        options.block_nesting_limit = limits.max_depth.saturating_add(1);
        options.set_emit_comments(false);
        let parser = granit_parser::Parser::new_from_str_with_options(text, options);
        let (mut events, mut aliases, mut depth) = (0usize, 0usize, 0usize);
        let mut documents: Vec<(&'t str, Position)> = Vec::new();
        // Where the document being read (or the next one) begins.
        let mut begin = Position::START;
        for item in parser {
            let (event, span) = item.map_err(|e| scan_error(&e, limits))?;
            events += 1;
            if events > self.events.get() {
                return Err(LimitExceeded::Events {
                    limit: limits.max_events,
                }
                .into());
            }
            match event {
                Event::Alias(_) => {
                    aliases += 1;
                    if aliases > self.aliases.get() {
                        return Err(LimitExceeded::Aliases {
                            limit: limits.max_aliases,
                        }
                        .into());
                    }
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    depth += 1;
                    if depth > limits.max_depth {
                        return Err(LimitExceeded::Depth {
                            limit: limits.max_depth,
                        }
                        .into());
                    }
                }
                Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
                Event::DocumentStart(..) => {
                    if documents.len() >= self.documents.get() {
                        return Err(LimitExceeded::Documents {
                            limit: limits.max_documents,
                        }
                        .into());
                    }
                    documents.push(("", begin));
                }
                Event::DocumentEnd => {
                    let end = Position::of(text, &span.end);
                    if let Some(last) = documents.last_mut() {
                        last.0 = cut(text, last.1.offset, end.offset)?;
                    }
                    begin = end;
                }
                _ => {}
            }
        }
        // What follows the last document (blank lines, comments) belongs to it.
        if let Some(last) = documents.last_mut() {
            last.0 = cut(text, last.1.offset, text.len())?;
        }
        self.events.set(self.events.get() - events);
        self.aliases.set(self.aliases.get() - aliases);
        self.documents.set(self.documents.get() - documents.len());
        Ok(documents)
    }

    /// Builds one document's value, charging the document's and the total budget.
    fn build<'de, D, E>(
        &self,
        deserializer: D,
        syntax: impl Fn(E) -> YamlError,
    ) -> Result<Value, YamlError>
    where
        D: Deserializer<'de, Error = E>,
    {
        self.begin_document();
        (BoundedValue { budget: self })
            .deserialize(deserializer)
            .map_err(|e| self.over_limit().unwrap_or_else(|| syntax(e)))
    }

    fn begin_document(&self) {
        self.document_bytes.set(self.limits.max_document_bytes);
        self.exceeded.set(None);
    }

    /// The limit the document being built went over, if that is why building it failed.
    fn over_limit(&self) -> Option<YamlError> {
        let limit = match self.exceeded.get()? {
            Exceeded::Document => LimitExceeded::DocumentBytes {
                limit: self.limits.max_document_bytes,
            },
            Exceeded::Total => LimitExceeded::TotalBytes {
                limit: self.limits.max_total_bytes,
            },
        };
        Some(limit.into())
    }

    fn charge<E: de::Error>(&self, cost: usize) -> Result<(), E> {
        let document = self.document_bytes.get();
        let total = self.total_bytes.get();
        if cost > document {
            self.document_bytes.set(0);
            self.exceeded.set(Some(Exceeded::Document));
            return Err(E::custom("document too large"));
        }
        if cost > total {
            self.total_bytes.set(0);
            self.exceeded.set(Some(Exceeded::Total));
            return Err(E::custom("files too large"));
        }
        self.document_bytes.set(document - cost);
        self.total_bytes.set(total - cost);
        Ok(())
    }
}

/// Where a document begins in the text it was cut from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    /// Byte offset.
    offset: usize,
    /// Line, counting from 1.
    line: usize,
    /// Column, counting from 1.
    column: usize,
}

impl Position {
    const START: Position = Position {
        offset: 0,
        line: 1,
        column: 1,
    };

    fn of(text: &str, mark: &granit_parser::Marker) -> Position {
        let offset = mark.byte_offset().unwrap_or_else(|| {
            text.char_indices()
                .nth(mark.index())
                .map_or(text.len(), |(at, _)| at)
        });
        Position {
            offset,
            line: mark.line(),
            column: mark.col() + 1,
        }
    }

    /// `line` and `column` of a text cut at `self`, in the whole text.
    fn shift(self, line: usize, column: usize) -> (usize, usize) {
        if line <= 1 {
            (self.line, self.column + column.saturating_sub(1))
        } else {
            (self.line + line - 1, column)
        }
    }
}

/// The text between two of the scanner's marks.
fn cut(text: &str, from: usize, to: usize) -> Result<&str, YamlError> {
    text.get(from..to).ok_or_else(|| YamlError::Syntax {
        line: None,
        column: None,
        message: format!("cannot cut the YAML stream into documents at bytes {from}..{to}"),
    })
}

/// How untrusted YAML is read once [`Budget::scan`] has counted it: the scan is the budget,
/// the building is charged by [`BoundedValue`]; plain scalars read as Kubernetes' reader
/// (and serde_yaml did before it) read them (`0755`, `1_000`, `yes` stay strings); a repeated key
/// keeps its last value; errors are one line, their position apart.
fn reader_options(limits: &Limits) -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.budget = None;
    options.alias_limits.max_total_replayed_events = usize::MAX;
    options.alias_limits.max_replay_stack_depth = limits.max_depth;
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    options.leading_zero_numbers_as_strings = true;
    options.underscored_numbers_as_strings = true;
    options.strict_booleans = true;
    // `.inf` and `.nan` reach the visitor, which refuses them as JSON does.
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::PassThrough;
    options.with_snippet = false;
    options
}

/// A reader's error at its place in the whole text (the document began at `at`).
fn saphyr_error(e: &serde_saphyr::Error, at: Position) -> YamlError {
    let location = e.location();
    let place = location.map(|l| at.shift(l.line() as usize, l.column() as usize));
    YamlError::Syntax {
        line: place.map(|p| p.0),
        column: place.map(|p| p.1),
        message: strip_position(&e.render_with_options(serde_saphyr::render_options! {
            snippets: serde_saphyr::SnippetMode::Off,
            line_offset: at.line.saturating_sub(1) as u64,
        })),
    }
}

/// The scanner's error: over the depth, or not YAML at all.
fn scan_error(e: &ScanError, limits: &Limits) -> YamlError {
    if matches!(e.kind(), granit_parser::ErrorKind::RecursionLimitExceeded) {
        return LimitExceeded::Depth {
            limit: limits.max_depth,
        }
        .into();
    }
    let mark = e.marker();
    YamlError::Syntax {
        line: Some(mark.line()),
        column: Some(mark.col() + 1),
        message: e.info(),
    }
}

/// serde_json and serde-saphyr put " at line L column C" (or "L, column C") into their
/// messages; callers say where in the `file:line:column` form editors understand.
pub fn strip_position(message: &str) -> String {
    let Some(start) = message.find(" at line ") else {
        return message.to_owned();
    };
    let rest = &message[start + " at line ".len()..];
    let after_line = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(after_column) = after_line
        .strip_prefix(" column ")
        .or_else(|| after_line.strip_prefix(", column "))
    else {
        return message.to_owned();
    };
    let tail = after_column.trim_start_matches(|c: char| c.is_ascii_digit());
    format!("{}{tail}", &message[..start])
}

/// Deserialises one value, charging the budget for everything it builds.
struct BoundedValue<'b> {
    budget: &'b Budget,
}

impl<'de> DeserializeSeed<'de> for BoundedValue<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor {
            budget: self.budget,
        })
    }
}

struct ValueVisitor<'b> {
    budget: &'b Budget,
}

impl<'de> Visitor<'de> for ValueVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.budget.charge(VALUE_COST)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.budget.charge(VALUE_COST)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.budget.charge(VALUE_COST)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.budget.charge(VALUE_COST)?;
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{v} is not a number JSON can carry")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.budget.charge(VALUE_COST + v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.budget.charge(VALUE_COST + v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.budget.charge(VALUE_COST)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.budget.charge(VALUE_COST)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(BoundedValue {
            budget: self.budget,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.budget.charge(VALUE_COST)?;
        let mut out = Map::new();
        let mut merged: Vec<Value> = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed {
            budget: self.budget,
        })? {
            let value = map.next_value_seed(BoundedValue {
                budget: self.budget,
            })?;
            if key == "<<" {
                merged.push(value);
                continue;
            }
            out.insert(key, value);
        }
        for source in merged {
            merge_into(&mut out, source).map_err(de::Error::custom)?;
        }
        Ok(Value::Object(out))
    }
}

/// Applies a YAML merge key: keys already present win; in a list of mappings, earlier wins.
fn merge_into(out: &mut Map<String, Value>, source: Value) -> Result<(), &'static str> {
    match source {
        Value::Object(fields) => {
            for (key, value) in fields {
                out.entry(key).or_insert(value);
            }
            Ok(())
        }
        Value::Array(sources) => {
            for source in sources {
                match source {
                    Value::Object(_) => merge_into(out, source)?,
                    _ => return Err("a merge key (<<) list must contain only mappings"),
                }
            }
            Ok(())
        }
        _ => Err("a merge key (<<) must refer to a mapping or a list of mappings"),
    }
}

/// Mapping keys become strings, as Kubernetes' YAML-to-JSON conversion does.
struct KeySeed<'b> {
    budget: &'b Budget,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number or boolean mapping key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        self.budget.charge(VALUE_COST + v.len())?;
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        self.budget.charge(VALUE_COST + v.len())?;
        Ok(v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        self.visit_string(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        self.visit_string(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        self.visit_string(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        self.visit_string(v.to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        self.visit_string("null".to_owned())
    }
}
