//! The resource examples of the user docs are valid resources: every fenced YAML block of these
//! pages with a `gitfleet.dev/v1` document parses and validates as what it claims to be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gitfleet_core::documents::{Format, parse_text};
use gitfleet_core::resources::parse_document;
use gitfleet_core::yaml::{Budget, Limits};

/// Fenced ```yaml blocks of a Markdown page, with the line each starts on.
fn yaml_blocks(page: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in page.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```yaml" => current = Some((i + 1, String::new())),
            None => {}
            Some(_) if line.trim_start() == "```" => blocks.extend(current.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    blocks
}

fn check(name: &str, page: &str) -> usize {
    let mut resources = 0;
    for (line, text) in yaml_blocks(page) {
        if !text.contains("gitfleet.dev/v1") {
            continue;
        }
        let origin = format!("{name}:{line}");
        let budget = Budget::new(Limits::default());
        let documents = parse_text(&origin, &text, Format::Yaml, &budget)
            .unwrap_or_else(|e| panic!("{origin}: {e}"));
        for document in documents {
            // The CLI's own config file shares the apiVersion; it is not a resource.
            if document.value["kind"] == "Config" {
                continue;
            }
            parse_document(&document.origin, &document.value.to_string())
                .unwrap_or_else(|e| panic!("{}: {e}", document.origin));
            resources += 1;
        }
    }
    resources
}

#[test]
fn the_tenancy_pages_examples_are_valid_resources() {
    let page = include_str!("../../../docs/tenancy.md");
    // The Projects of the issue's example and the worked example's, and their Apps.
    assert!(check("docs/tenancy.md", page) >= 5);
}

#[test]
fn the_notifications_pages_examples_are_valid_notifiers() {
    let page = include_str!("../../../docs/notifications.md");
    // The issue's example and the three after it.
    assert!(check("docs/notifications.md", page) >= 4);
}

#[test]
fn the_other_pages_examples_are_valid_resources() {
    for (name, page) in [
        ("docs/cli.md", include_str!("../../../docs/cli.md")),
        (
            "docs/configuration.md",
            include_str!("../../../docs/configuration.md"),
        ),
        (
            "docs/getting-started.md",
            include_str!("../../../docs/getting-started.md"),
        ),
        ("docs/repos.md", include_str!("../../../docs/repos.md")),
        (
            "docs/rollouts.md",
            include_str!("../../../docs/rollouts.md"),
        ),
    ] {
        check(name, page);
    }
}
