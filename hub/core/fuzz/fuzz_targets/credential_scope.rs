//! Where a Git credential may be sent: a Repo's URL (written by any Git writer of a fleet path)
//! against an entry's prefixes. Any bytes, split into prefixes and a URL. Must never panic, and
//! must never allow a URL that is not https, ssh or scp-like, nor one that a prefix does not
//! cover by its host.
#![no_main]

use gitfleet_core::credential_scope::{allows, check_prefix, redacted};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts: Vec<&str> = text.split('\n').take(5).collect();
    let Some(url) = parts.pop() else {
        return;
    };
    let prefixes: Vec<String> = parts.iter().map(|p| (*p).to_owned()).collect();
    for prefix in &prefixes {
        let _ = check_prefix(prefix);
    }
    let _ = redacted(url);
    if allows(&prefixes, url) {
        let lower = url.to_ascii_lowercase();
        assert!(
            !lower.starts_with("http://") && !lower.starts_with("git://") && !lower.starts_with("file:"),
            "a credential allowed for {url:?}"
        );
        assert!(
            prefixes.iter().any(|p| check_prefix(p).is_ok()),
            "{url:?} allowed by no valid prefix: {prefixes:?}"
        );
    }
});
