//! gitfleet-core's YAML budget, the one reader of untrusted YAML on the hub and the spoke: any
//! bytes, split into files read against one small budget. Must never panic, and never hand
//! back more than the budget allows: the values it returns, measured independently, stay within
//! the total it was given.
#![no_main]

use gitfleet_core::yaml::{Budget, Limits};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_events: 20_000,
    max_aliases: 200,
    max_depth: 40,
    max_documents: 100,
    max_document_bytes: 256 * 1024,
    max_total_bytes: 1024 * 1024,
};

/// An over-estimate-free measure of what a value holds: string bytes alone. The budget charges
/// those and more, so the sum of these must stay under its total.
fn string_bytes(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::String(s) => s.len(),
        serde_json::Value::Array(items) => items.iter().map(string_bytes).sum(),
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| k.len() + string_bytes(v))
            .sum(),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let budget = Budget::new(LIMITS);
    let mut held = 0usize;
    for (i, part) in data.split(|b| *b == 0).take(8).enumerate() {
        let Ok(text) = std::str::from_utf8(part) else {
            continue;
        };
        let values = if i % 3 == 2 {
            budget.json(text).map(|v| vec![v])
        } else {
            budget.documents(text)
        };
        if let Ok(values) = values {
            held += values.iter().map(string_bytes).sum::<usize>();
        }
        assert!(
            held <= LIMITS.max_total_bytes,
            "the budget handed back {held} bytes of strings, over its total"
        );
    }
});
