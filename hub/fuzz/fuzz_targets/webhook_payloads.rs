//! Push webhooks: any body with any signature header, for every provider. Must never panic;
//! a forged signature is never accepted.
#![no_main]

use gitfleet_hub::webhook::{self, Provider};
use libfuzzer_sys::fuzz_target;

const PROVIDERS: [&str; 5] = ["github", "gitlab", "gitea", "forgejo", "bitbucket"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some(provider) = Provider::parse(PROVIDERS[usize::from(selector) % PROVIDERS.len()]) else {
        return;
    };
    // The first line is the signature header's value, the rest the body.
    let split = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
    let (signature, body) = rest.split_at(split);
    let signature = String::from_utf8_lossy(signature).into_owned();
    let header = |_: &str| Some(signature.clone());
    let verified = webhook::verify(provider, header, body, b"the-secret");
    // A signature made without the secret cannot match (the fuzzer does not know it).
    assert!(
        verified.is_err() || signature.len() >= 10,
        "accepted a trivially short signature {signature:?}"
    );
    let _ = webhook::repository_urls(provider, body);
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = webhook::normalize_url(text);
    }
});
