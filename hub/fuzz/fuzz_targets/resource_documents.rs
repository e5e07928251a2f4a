//! `gitfleet apply -f` input and the files of a fleet path: YAML (any number of documents) →
//! gitfleet-core's budgeted reader → the hub's resource parser and validator. Must never panic,
//! whatever the bytes; every refusal is an error value.
#![no_main]

use gitfleet_core::documents::{Format, parse_text};
use gitfleet_core::yaml::{Budget, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let budget = Budget::new(Limits::DEFAULT);
    let Ok(documents) = parse_text("fuzz.yaml", text, Format::Yaml, &budget) else {
        return;
    };
    for doc in documents.iter().take(64) {
        let json = doc.value.to_string();
        if let Ok(resource) = gitfleet_hub::resources::parse_document(&doc.origin, &json) {
            // What was accepted round-trips through its stored form.
            let again =
                gitfleet_hub::resources::parse_document("again", &resource.to_json().to_string());
            assert!(
                again.is_ok(),
                "an accepted resource must parse again: {again:?}"
            );
        }
    }
});
