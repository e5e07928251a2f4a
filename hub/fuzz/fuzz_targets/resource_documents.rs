//! `gitfleet apply -f` input: YAML (any number of documents) → JSON → the hub's resource parser
//! and validator. Must never panic, whatever the bytes; every refusal is an error value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for (i, doc) in serde_yaml::Deserializer::from_str(text)
        .enumerate()
        .take(64)
    {
        let Ok(value) = <serde_json::Value as serde::Deserialize>::deserialize(doc) else {
            return;
        };
        let json = value.to_string();
        if let Ok(resource) = gitfleet_hub::resources::parse_document(&format!("fuzz#{i}"), &json) {
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
