//! YAML request bodies and manifests read as JSON values, the way the API server's YAML-to-JSON
//! conversion leaves plain scalars that YAML 1.2 would retype: `0755` and `1_000` stay strings,
//! `yes` is no boolean, and a repeated key keeps its last value.

use serde_json::Value;

fn options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    o.leading_zero_numbers_as_strings = true;
    o.underscored_numbers_as_strings = true;
    o.strict_booleans = true;
    // Errors go into a Status message: one line with its position, no snippet.
    o.with_snippet = false;
    o
}

/// One YAML document.
pub fn value(body: &[u8]) -> Result<Value, serde_saphyr::Error> {
    serde_saphyr::from_slice_with_options(body, options())
}

/// The documents of a YAML stream; empty ones are skipped.
pub fn documents(text: &str) -> Result<Vec<Value>, serde_saphyr::Error> {
    serde_saphyr::from_multiple_with_options(text, options())
}
