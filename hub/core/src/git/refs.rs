//! Choosing a tag for a semver range: pure.

/// The highest tag (names without `refs/tags/`) whose version satisfies `range`. Tags may carry
/// a leading `v`; tags that are not versions are ignored; pre-releases match only ranges that
/// name a pre-release (semver's rule).
pub fn highest_matching_tag<'a>(
    tags: impl IntoIterator<Item = &'a str>,
    range: &str,
) -> Result<Option<&'a str>, String> {
    let req = semver::VersionReq::parse(range.trim())
        .map_err(|e| format!("semver range {range:?} is not valid: {e}"))?;
    Ok(tags
        .into_iter()
        .filter_map(|tag| {
            let v = semver::Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()?;
            req.matches(&v).then_some((v, tag))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, tag)| tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAGS: [&str; 7] = [
        "v1.0.0",
        "v1.2.0",
        "1.10.1",
        "v2.0.0",
        "v2.1.0-rc.1",
        "latest",
        "v1.2",
    ];

    #[test]
    fn picks_the_highest_version_in_range() {
        assert_eq!(highest_matching_tag(TAGS, ">=1, <2"), Ok(Some("1.10.1")));
        assert_eq!(highest_matching_tag(TAGS, "^1.0"), Ok(Some("1.10.1")));
        assert_eq!(highest_matching_tag(TAGS, "~1.2"), Ok(Some("v1.2.0")));
        assert_eq!(highest_matching_tag(TAGS, "*"), Ok(Some("v2.0.0")));
    }

    #[test]
    fn pre_releases_only_when_asked_for() {
        assert_eq!(
            highest_matching_tag(TAGS, ">=2.1.0-rc.0"),
            Ok(Some("v2.1.0-rc.1"))
        );
        assert_eq!(highest_matching_tag(TAGS, ">2.0.0"), Ok(None));
    }

    #[test]
    fn nothing_matching_or_a_bad_range() {
        assert_eq!(highest_matching_tag(TAGS, ">=3"), Ok(None));
        let err = highest_matching_tag(TAGS, ">>1").unwrap_err();
        assert!(err.contains(">>1"), "{err}");
    }
}
