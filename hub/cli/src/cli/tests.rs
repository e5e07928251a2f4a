use super::*;
use crate::client::config::ConfigFile as _;
use args::*;
use std::time::Duration;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("gitfleet").chain(args.iter().copied()))
}

#[test]
fn the_command_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn global_flags_go_anywhere() {
    let cli = parse(&[
        "status",
        "-o",
        "json",
        "--context",
        "prod",
        "--config",
        "/tmp/cfg",
    ])
    .unwrap();
    assert_eq!(cli.global.output, OutputFormat::Json);
    assert_eq!(cli.global.context.as_deref(), Some("prod"));
    assert_eq!(
        cli.global.config.as_deref(),
        Some(std::path::Path::new("/tmp/cfg"))
    );
    let cli = parse(&["-o", "yaml", "cluster", "list"]).unwrap();
    assert_eq!(cli.global.output, OutputFormat::Yaml);
    assert!(matches!(
        cli.command,
        Command::Cluster(ClusterCommand::List(_))
    ));
    assert!(matches!(
        parse(&["cluster", "ls"]).unwrap().command,
        Command::Cluster(ClusterCommand::List(_))
    ));
}

#[test]
fn apply_takes_several_files_and_needs_one() {
    let cli = parse(&[
        "apply",
        "-f",
        "a.yaml",
        "--filename",
        "dir/",
        "-f",
        "-",
        "--dry-run",
    ])
    .unwrap();
    let Command::Apply(a) = cli.command else {
        panic!()
    };
    assert_eq!(a.files, ["a.yaml", "dir/", "-"]);
    assert!(a.dry_run);
    let err = parse(&["apply"]).unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn kinds_accept_singulars_plurals_and_any_case() {
    for (word, kind) in [
        ("apps", KindArg::Apps),
        ("app", KindArg::Apps),
        ("App", KindArg::Apps),
        ("repo", KindArg::Repos),
        ("REPOS", KindArg::Repos),
        ("clustergroups", KindArg::ClusterGroups),
        ("ClusterGroup", KindArg::ClusterGroups),
        ("group", KindArg::ClusterGroups),
        ("all", KindArg::All),
    ] {
        let Command::Get(g) = parse(&["get", word]).unwrap().command else {
            panic!()
        };
        assert_eq!(g.kind, kind, "{word}");
        assert_eq!(g.name, None);
    }
    let Command::Delete(d) = parse(&["delete", "app", "guestbook"]).unwrap().command else {
        panic!()
    };
    assert_eq!((d.kind.api_kind(), d.name.as_str()), ("App", "guestbook"));
    let err = parse(&["get", "widgets"]).unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
    assert!(err.to_string().contains("clustergroups"), "{err}");
}

#[test]
fn token_create_parses_durations_labels_and_limits() {
    let cli = parse(&[
        "token",
        "create",
        "--ttl",
        "2h 30m",
        "--label",
        "env=prod",
        "-l",
        "region = eu",
        "--max-uses",
        "3",
        "--description",
        "eu wave",
        "--allow-label-key",
        "zone",
        "--allow-label-key",
        "rack",
        "--cluster",
        "eu-prod-3",
    ])
    .unwrap();
    let Command::Token(TokenCommand::Create(t)) = cli.command else {
        panic!()
    };
    assert_eq!(t.allowed_label_keys, ["zone", "rack"]);
    assert_eq!(t.cluster.as_deref(), Some("eu-prod-3"));
    assert_eq!(t.ttl, Duration::from_secs(9000));
    assert_eq!(
        t.labels,
        [
            ("env".into(), "prod".into()),
            ("region".into(), "eu".into())
        ]
    );
    assert_eq!(t.max_uses, Some(3));
    assert_eq!(t.description.as_deref(), Some("eu wave"));

    let Command::Token(TokenCommand::Create(t)) = parse(&["token", "create"]).unwrap().command
    else {
        panic!()
    };
    assert_eq!(t.ttl, Duration::from_secs(3600), "default ttl");
    assert_eq!(t.max_uses, None);
    assert!(t.allowed_label_keys.is_empty(), "a spoke may add no label");
    assert_eq!(t.cluster, None, "any cluster name");

    for bad in [
        &["token", "create", "--ttl", "soon"][..],
        &["token", "create", "--ttl", "0s"],
        &["token", "create", "--label", "noequals"],
        &["token", "create", "--label", "=v"],
        &["token", "create", "--max-uses", "0"],
        &["token", "create", "--allow-label-key", ""],
        &["token", "create", "--cluster", ""],
    ] {
        let err = parse(bad).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{bad:?}");
    }
}

#[test]
fn cluster_approve_revoke_and_pending_parse() {
    let Command::Cluster(ClusterCommand::Approve(c)) =
        parse(&["cluster", "approve", "prod-eu-1"]).unwrap().command
    else {
        panic!()
    };
    assert_eq!(c.name, "prod-eu-1");
    let Command::Cluster(ClusterCommand::Revoke(c)) =
        parse(&["cluster", "revoke", "prod-eu-1", "-o", "json"])
            .unwrap()
            .command
    else {
        panic!()
    };
    assert_eq!(c.name, "prod-eu-1");
    assert!(matches!(
        parse(&["cluster", "pending"]).unwrap().command,
        Command::Cluster(ClusterCommand::Pending)
    ));
    for bad in [
        &["cluster", "approve"][..],
        &["cluster", "revoke"],
        &["cluster", "approve", ""],
        &["cluster", "approve", "a", "b"],
        &["cluster", "pending", "x"],
    ] {
        let err = parse(bad).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{bad:?}");
    }
}

#[test]
fn cluster_label_parses_kubectls_grammar() {
    let Command::Cluster(ClusterCommand::Label(l)) = parse(&[
        "cluster",
        "label",
        "prod-1",
        "ring=prod",
        "gpu-",
        "--overwrite",
    ])
    .unwrap()
    .command
    else {
        panic!()
    };
    assert_eq!(l.name, "prod-1");
    assert_eq!(l.changes, ["ring=prod", "gpu-"]);
    assert!(l.overwrite);
    for bad in [
        &["cluster", "label", "prod-1"][..],
        &["cluster", "label"],
        &["cluster", "label", "prod-1", "ring"],
        &["cluster", "label", "", "ring=prod"],
    ] {
        let err = parse(bad).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{bad:?}");
    }
    let err = parse(&["cluster", "label", "prod-1", "ring"]).unwrap_err();
    assert!(
        err.to_string()
            .contains(r#""ring" is neither key=value (to set a label) nor key- (to remove one)"#),
        "{err}"
    );
}

#[test]
fn token_list_and_revoke_parse() {
    assert!(matches!(
        parse(&["token", "list"]).unwrap().command,
        Command::Token(TokenCommand::List)
    ));
    assert!(matches!(
        parse(&["token", "ls", "-o", "yaml"]).unwrap().command,
        Command::Token(TokenCommand::List)
    ));
    let Command::Token(TokenCommand::Revoke(t)) =
        parse(&["token", "revoke", "8e1adea849d1"]).unwrap().command
    else {
        panic!()
    };
    assert_eq!(t.id, "8e1adea849d1");
    for bad in [&["token", "revoke"][..], &["token", "revoke", ""]] {
        let err = parse(bad).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{bad:?}");
    }
}

#[test]
fn access_errors_exit_1_and_say_where_to_look() {
    let err = CliError::NotPending {
        name: "prod-1".into(),
    };
    assert_eq!(err.exit_code(), 1);
    assert!(
        err.to_string().contains("gitfleet cluster pending"),
        "{err}"
    );
    let err = CliError::NoSuchCluster {
        name: "prod-1".into(),
    };
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("gitfleet cluster list"), "{err}");
    let err = CliError::NoSuchToken { id: "abc".into() };
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("gitfleet token list"), "{err}");
}

#[tokio::test]
async fn access_commands_have_help_with_examples() {
    for (args, needle) in [
        (
            &["gitfleet", "cluster", "approve", "--help"][..],
            "gitfleet cluster approve prod-eu-1",
        ),
        (
            &["gitfleet", "cluster", "revoke", "--help"],
            "cannot be undone",
        ),
        (
            &["gitfleet", "cluster", "label", "--help"],
            "gitfleet cluster label prod-eu-1 ring=prod --overwrite",
        ),
        (
            &["gitfleet", "cluster", "pending", "--help"],
            "--require-approval",
        ),
        (
            &["gitfleet", "token", "list", "--help"],
            "gitfleet token list",
        ),
        (
            &["gitfleet", "token", "revoke", "--help"],
            "gitfleet token revoke 8e1adea849d1",
        ),
    ] {
        let mut out = Vec::new();
        run_args(args.iter().copied(), &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(needle), "{args:?}: {text}");
    }
}

#[test]
fn status_filters() {
    let Command::Status(s) = parse(&[
        "status",
        "--app",
        "guestbook",
        "--cluster",
        "dev-1",
        "--resources",
    ])
    .unwrap()
    .command
    else {
        panic!()
    };
    assert_eq!(s.app.as_deref(), Some("guestbook"));
    assert_eq!(s.cluster.as_deref(), Some("dev-1"));
    assert!(s.resources);
}

#[test]
fn usage_errors_exit_2_and_others_1() {
    assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
    assert_eq!(CliError::DeleteAll.exit_code(), 2);
    assert_eq!(CliError::NoHome.exit_code(), 1);
    assert_eq!(
        CliError::Client(ClientError::InvalidArgument {
            message: "bad".into()
        })
        .exit_code(),
        1
    );
}

#[tokio::test]
async fn run_args_reports_usage_errors_without_exiting() {
    let mut out = Vec::new();
    let err = run_args(["gitfleet", "frobnicate"], &mut out)
        .await
        .unwrap_err();
    assert!(matches!(err, CliError::Usage(_)), "{err:?}");
    assert_eq!(err.exit_code(), 2);
    let err = run_args(["gitfleet", "status", "--timeout", "1m"], &mut out)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("--wait"),
        "--timeout needs --wait: {err}"
    );
    let err = run_args(["gitfleet", "delete", "all", "x"], &mut out)
        .await
        .unwrap_err();
    assert!(matches!(err, CliError::DeleteAll), "{err:?}");
    assert!(out.is_empty());
}

#[tokio::test]
async fn completion_scripts_for_each_shell() {
    for (shell, needle) in [
        ("bash", "_gitfleet()"),
        ("zsh", "#compdef gitfleet"),
        ("fish", "complete -c gitfleet"),
    ] {
        let mut out = Vec::new();
        run_args(["gitfleet", "completion", shell], &mut out)
            .await
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(needle),
            "{shell}: {}",
            &text[..text.len().min(200)]
        );
        assert!(text.contains("token"), "{shell} completes subcommands");
    }
}

#[tokio::test]
async fn config_commands_need_no_hub() {
    let dir = tempfile::tempdir().unwrap();
    let user = dir.path().join("config");
    let hub_file = dir.path().join("admin.gitfleetconfig");
    let ctx = crate::client::config::Context {
        name: "gitfleet".into(),
        server: "https://127.0.0.1:7443".into(),
        certificate_authority_data: "CA PEM".into(),
        client_certificate_data: "CERT PEM".into(),
        client_key_data: "KEY PEM".into(),
        tls_server_name: Some("hub.gitfleet".into()),
    };
    crate::client::config::ClientConfig::single(ctx)
        .save(&hub_file)
        .unwrap();
    let user_arg = user.display().to_string();
    let run = |args: Vec<&str>| {
        let args: Vec<String> = ["gitfleet", "--config", &user_arg]
            .into_iter()
            .chain(args)
            .map(str::to_owned)
            .collect();
        async move {
            let mut out = Vec::new();
            run_args(args, &mut out)
                .await
                .map(|()| String::from_utf8(out).unwrap())
        }
    };

    let err = run(vec!["config", "view"]).await.unwrap_err();
    assert!(matches!(err, CliError::NoConfig { .. }), "{err:?}");

    let hub_arg = hub_file.display().to_string();
    let text = run(vec!["config", "import", &hub_arg]).await.unwrap();
    assert!(text.contains("switched to context \"gitfleet\""), "{text}");

    let text = run(vec!["config", "view"]).await.unwrap();
    assert!(text.contains("client-key-data: REDACTED"), "{text}");
    assert!(text.contains("tls-server-name: hub.gitfleet"), "{text}");
    assert!(!text.contains("KEY PEM"), "{text}");
    let text = run(vec!["config", "view", "--raw", "-o", "json"])
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["contexts"][0]["client-key-data"], "KEY PEM");

    run(vec!["config", "import", &hub_arg, "--name", "other"])
        .await
        .unwrap();
    let text = run(vec!["config", "use-context", "gitfleet"])
        .await
        .unwrap();
    assert_eq!(text, "switched to context \"gitfleet\"\n");
    let text = run(vec!["config", "get-contexts"]).await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with('*') && l.contains("gitfleet")),
        "{text}"
    );
    let text = run(vec!["config", "get-contexts", "-o", "json"])
        .await
        .unwrap();
    let rows: Vec<config_cmd::ContextSummary> = serde_json::from_str(&text).unwrap();
    assert_eq!(rows.iter().filter(|r| r.current).count(), 1);
}

#[tokio::test]
async fn commands_that_need_a_hub_fail_clearly_without_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let user = dir.path().join("config").display().to_string();
    let mut out = Vec::new();
    let err = run_args(["gitfleet", "--config", &user, "status"], &mut out)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(
        err.to_string().starts_with("no gitfleet config at"),
        "{err}"
    );
}

#[test]
fn colour_only_on_a_terminal_without_no_color() {
    use std::ffi::OsStr;
    assert!(wants_color(ColorChoice::Auto, true, None));
    assert!(!wants_color(ColorChoice::Auto, false, None));
    assert!(!wants_color(ColorChoice::Auto, true, Some(OsStr::new("1"))));
    assert!(wants_color(ColorChoice::Auto, true, Some(OsStr::new(""))));
    assert!(wants_color(
        ColorChoice::Always,
        false,
        Some(OsStr::new("1"))
    ));
    assert!(!wants_color(ColorChoice::Never, true, None));
}

#[tokio::test]
async fn help_and_version_print_to_the_writer() {
    let mut out = Vec::new();
    run_args(["gitfleet", "status", "--help"], &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("gitfleet status --app guestbook --wait"),
        "{text}"
    );
    let mut out = Vec::new();
    run_args(["gitfleet", "--version"], &mut out).await.unwrap();
    assert!(String::from_utf8(out).unwrap().starts_with("gitfleet "));
}

#[test]
fn diff_takes_files_or_an_app_with_live() {
    let cli = parse(&[
        "diff",
        "--live",
        "web",
        "--cluster",
        "eu-1",
        "--revision",
        "abc",
    ])
    .unwrap();
    let Command::Diff(d) = cli.command else {
        panic!("a diff")
    };
    assert!(d.live && d.files.is_empty());
    assert_eq!(d.app.as_deref(), Some("web"));
    assert_eq!(d.cluster.as_deref(), Some("eu-1"));
    assert_eq!(d.revision.as_deref(), Some("abc"));
    // The App may come first.
    let cli = parse(&["diff", "web", "--live"]).unwrap();
    assert!(matches!(cli.command, Command::Diff(d) if d.app.as_deref() == Some("web")));
    let cli = parse(&["diff", "-f", "fleet/"]).unwrap();
    assert!(matches!(cli.command, Command::Diff(d) if !d.live && d.files == ["fleet/"]));
    for bad in [
        &["diff"][..],
        &["diff", "--live"],
        &["diff", "web"],
        &["diff", "-f", "fleet/", "--live", "web"],
        &["diff", "-f", "fleet/", "--cluster", "eu-1"],
    ] {
        assert!(parse(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn verb_first_forms_parse_into_the_same_arguments_as_the_old_ones() {
    let Command::Create(CreateCommand::Token(t)) =
        parse(&["create", "token", "--ttl", "2h", "-l", "env=prod"])
            .unwrap()
            .command
    else {
        panic!()
    };
    assert_eq!(t.ttl, Duration::from_secs(7200));
    assert_eq!(t.labels, [("env".to_owned(), "prod".to_owned())]);
    let Command::Create(CreateCommand::User(u)) =
        parse(&["create", "user", "alice", "--role", "operator"])
            .unwrap()
            .command
    else {
        panic!()
    };
    assert_eq!((u.name.as_str(), u.role), ("alice", RoleArg::Operator));
    assert!(matches!(
        parse(&["create", "freeze", "f", "--for", "1h", "--reason", "r"])
            .unwrap()
            .command,
        Command::Create(CreateCommand::Freeze(_))
    ));
    let Command::Label(l) = parse(&["label", "cluster", "prod-1", "ring=prod", "gpu-"])
        .unwrap()
        .command
    else {
        panic!()
    };
    assert_eq!(l.label.name, "prod-1");
    assert_eq!(l.label.changes, ["ring=prod", "gpu-"]);
    for (word, kind) in [
        ("tokens", KindArg::Tokens),
        ("token", KindArg::Tokens),
        ("Users", KindArg::Users),
        ("freeze", KindArg::Freezes),
    ] {
        let Command::Get(g) = parse(&["get", word]).unwrap().command else {
            panic!()
        };
        assert_eq!(g.kind, kind, "{word}");
        let Command::Delete(d) = parse(&["delete", word, "x"]).unwrap().command else {
            panic!()
        };
        assert_eq!((d.kind, d.name.as_str()), (kind, "x"), "{word}");
    }
    // Only clusters are labelled this way; a Project's labels live in its YAML.
    assert_eq!(
        parse(&["label", "project", "p", "a=b"])
            .unwrap_err()
            .exit_code(),
        2
    );
}
