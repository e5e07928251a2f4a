//! Names that reach another program's command line, checked as that program does, so that
//! nothing from Git can become a flag. Both the hub (at apply) and the spoke (before running the
//! renderer) check them.

/// Helm's limit on a release name (it becomes part of object names and labels).
pub const MAX_HELM_RELEASE_NAME: usize = 53;

/// Why `name` is not a release name Helm accepts: lowercase alphanumerics, '-' and '.', each
/// '.'-separated part starting and ending with an alphanumeric, at most 53 characters.
/// Anything else (`--set-file=...`, `--post-renderer`) could reach `helm template` as a flag.
pub fn helm_release_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("must not be empty");
    }
    if name.len() > MAX_HELM_RELEASE_NAME {
        return Some("must be at most 53 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Some("must consist of lowercase letters, digits, '-' and '.'");
    }
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if name
        .split('.')
        .any(|part| !alnum(part.bytes().next()) || !alnum(part.bytes().last()))
    {
        return Some(
            "must start and end with a letter or digit, and so must each part between dots",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_names_follow_helm_s_rule() {
        for ok in ["web", "web-1", "a.b", "x".repeat(53).as_str()] {
            assert_eq!(helm_release_name_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "--set-file=k=/data/identity/key.pem",
            "--post-renderer",
            "-x",
            "Web",
            "a..b",
            "a.",
            ".a",
            "a b",
            "a/b",
            &"x".repeat(54),
        ] {
            assert!(helm_release_name_problem(bad).is_some(), "{bad:?}");
        }
    }
}
