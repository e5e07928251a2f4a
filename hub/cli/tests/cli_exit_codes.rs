//! The exit codes scripts rely on, from the real `gitfleet` binary: 0 ok, 1 failed, 2 usage.
//! Errors go to stderr only, so stdout stays parseable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn gitfleet(args: &[&str], config: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gitfleet"))
        .args(args)
        .env("GITFLEET_CONFIG", config)
        .env_remove("GITFLEET_CONTEXT")
        .env_remove("GITFLEET_OUTPUT")
        .env_remove("GITFLEET_COLOR")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn exit_codes_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("config");

    let ok = gitfleet(&["completion", "bash"], &missing);
    assert_eq!(ok.status.code(), Some(0));
    assert!(text(&ok.stdout).contains("_gitfleet"));
    assert!(ok.stderr.is_empty());

    let help = gitfleet(&["status", "--help"], &missing);
    assert_eq!(help.status.code(), Some(0));
    assert!(text(&help.stdout).contains("Examples:"));

    for usage in [
        &[][..],
        &["frobnicate"],
        &["get", "widgets"],
        &["token", "create", "--ttl", "soon"],
        &["apply"],
        &["delete", "all", "x"],
    ] {
        let out = gitfleet(usage, &missing);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{usage:?}: {}",
            text(&out.stderr)
        );
        assert!(
            out.stdout.is_empty(),
            "{usage:?}: usage errors go to stderr"
        );
    }

    let failed = gitfleet(&["status", "-o", "json"], &missing);
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        failed.stdout.is_empty(),
        "nothing on stdout for jq to choke on"
    );
    let stderr = text(&failed.stderr);
    assert!(
        stderr.starts_with("error: no gitfleet config at"),
        "{stderr}"
    );
    assert!(stderr.contains("gitfleet config import"), "{stderr}");

    let bad_yaml = dir.path().join("bad.yaml");
    std::fs::write(&bad_yaml, "kind: [\n").unwrap();
    let failed = gitfleet(&["apply", "-f", bad_yaml.to_str().unwrap()], &missing);
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        text(&failed.stderr).contains("bad.yaml:"),
        "{}",
        text(&failed.stderr)
    );
}
