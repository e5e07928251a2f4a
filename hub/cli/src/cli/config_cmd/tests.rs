use super::*;

fn ctx(name: &str, server: &str) -> Context {
    Context {
        name: name.into(),
        server: server.into(),
        certificate_authority_data: "-----BEGIN CERTIFICATE-----\nCA\n".into(),
        client_certificate_data: "-----BEGIN CERTIFICATE-----\nCERT\n".into(),
        client_key_data: "-----BEGIN PRIVATE KEY-----\nKEY\n".into(),
        tls_server_name: None,
    }
}

fn config(contexts: &[Context], current: Option<&str>) -> ClientConfig {
    ClientConfig {
        api_version: ClientConfig::API_VERSION.into(),
        kind: ClientConfig::KIND.into(),
        current_context: current.map(str::to_owned),
        contexts: contexts.to_vec(),
    }
}

#[test]
fn merge_into_nothing_creates_a_config_with_the_import_current() {
    let incoming = ClientConfig::single(ctx("hub", "https://10.0.0.1:7443"));
    let (merged, added, replaced, current) = merge(None, incoming, None).unwrap();
    assert_eq!(added, ["hub"]);
    assert!(replaced.is_empty());
    assert_eq!(current, "hub");
    assert_eq!(merged.current_context.as_deref(), Some("hub"));
    assert_eq!(merged.api_version, ClientConfig::API_VERSION);
    assert_eq!(merged.kind, ClientConfig::KIND);
}

#[test]
fn merge_replaces_same_names_keeps_others_and_switches() {
    let existing = config(
        &[
            ctx("dev", "https://dev:7443"),
            ctx("hub", "https://old:7443"),
        ],
        Some("dev"),
    );
    let incoming = ClientConfig::single(ctx("hub", "https://new:7443"));
    let (merged, added, replaced, current) = merge(Some(existing), incoming, None).unwrap();
    assert!(added.is_empty());
    assert_eq!(replaced, ["hub"]);
    assert_eq!(current, "hub");
    assert_eq!(merged.contexts.len(), 2);
    assert_eq!(
        merged.context(Some("hub")).unwrap().server,
        "https://new:7443"
    );
    assert_eq!(
        merged.context(Some("dev")).unwrap().server,
        "https://dev:7443"
    );
}

#[test]
fn merge_renames_a_single_context() {
    let existing = config(&[ctx("hub", "https://prod:7443")], Some("hub"));
    let incoming = ClientConfig::single(ctx("hub", "https://staging:7443"));
    let (merged, added, _, current) = merge(Some(existing), incoming, Some("staging")).unwrap();
    assert_eq!(added, ["staging"]);
    assert_eq!(current, "staging");
    assert_eq!(
        merged.context(Some("hub")).unwrap().server,
        "https://prod:7443"
    );
    assert_eq!(
        merged.context(Some("staging")).unwrap().server,
        "https://staging:7443"
    );
}

#[test]
fn merge_refuses_what_it_cannot_do() {
    let two = config(
        &[ctx("a", "https://a:1"), ctx("b", "https://b:1")],
        Some("b"),
    );
    assert_eq!(
        merge(None, two.clone(), Some("x")).unwrap_err(),
        ImportError::RenameNeedsOne(2)
    );
    assert_eq!(
        merge(None, config(&[], None), None).unwrap_err(),
        ImportError::Empty
    );
    let one = ClientConfig::single(ctx("a", "https://a:1"));
    assert_eq!(
        merge(None, one, Some(" ")).unwrap_err(),
        ImportError::EmptyName
    );
    // Without a rename, the file's own current context wins; a dangling one falls back.
    let (_, _, _, current) = merge(None, two, None).unwrap();
    assert_eq!(current, "b");
    let dangling = config(&[ctx("a", "https://a:1")], Some("zz"));
    let (_, _, _, current) = merge(None, dangling, None).unwrap();
    assert_eq!(current, "a");
}

#[test]
fn redact_hides_keys_and_certificates() {
    let redacted = redact(config(&[ctx("a", "https://a:1")], Some("a")));
    let c = &redacted.contexts[0];
    assert_eq!(c.client_key_data, "REDACTED");
    assert_eq!(c.client_certificate_data, "DATA+OMITTED");
    assert_eq!(c.certificate_authority_data, "DATA+OMITTED");
    assert_eq!(c.server, "https://a:1");
}

#[test]
fn import_writes_the_users_config_and_use_context_switches() {
    let dir = tempfile::tempdir().unwrap();
    let user = dir.path().join("home/.config/gitfleet/config");
    let hub_file = dir.path().join("admin.gitfleetconfig");
    ClientConfig::single(ctx("gitfleet", "https://127.0.0.1:7443"))
        .save(&hub_file)
        .unwrap();

    let report = import(&user, &hub_file, None).unwrap();
    assert_eq!(report.added, ["gitfleet"]);
    assert_eq!(
        import_text(&report),
        format!(
            "context \"gitfleet\" added to {}\nswitched to context \"gitfleet\"\n",
            user.display()
        )
    );
    let report = import(&user, &hub_file, Some("second")).unwrap();
    assert_eq!(report.current_context, "second");

    let saved = ClientConfig::load(&user).unwrap();
    assert_eq!(saved.contexts.len(), 2);
    assert_eq!(saved.current_context.as_deref(), Some("second"));

    use_context(&user, "gitfleet").unwrap();
    assert_eq!(
        ClientConfig::load(&user)
            .unwrap()
            .current_context
            .as_deref(),
        Some("gitfleet")
    );

    let err = use_context(&user, "nope").unwrap_err().to_string();
    assert!(err.contains("no context named \"nope\""), "{err}");
    assert!(err.contains("contexts: gitfleet, second"), "{err}");
    // A failed switch leaves the file as it was.
    assert_eq!(
        ClientConfig::load(&user)
            .unwrap()
            .current_context
            .as_deref(),
        Some("gitfleet")
    );
}

#[test]
fn missing_files_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let user = dir.path().join("config");
    let err = load(&user).unwrap_err();
    assert!(matches!(err, CliError::NoConfig { .. }), "{err:?}");
    assert!(err.to_string().contains("gitfleet config import"), "{err}");

    let err = import(&user, &dir.path().join("absent"), None).unwrap_err();
    assert!(err.to_string().contains("admin.gitfleetconfig"), "{err}");
    assert!(!user.exists(), "a failed import writes nothing");
}

#[test]
fn select_without_a_current_context_lists_the_choices() {
    let cfg = config(&[ctx("a", "https://a:1"), ctx("b", "https://b:1")], None);
    let err = select(&cfg, None, Path::new("/cfg"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no current-context"), "{err}");
    assert!(err.contains("contexts: a, b"), "{err}");
    assert!(err.contains("--context"), "{err}");
    assert_eq!(
        select(&cfg, Some("b"), Path::new("/cfg")).unwrap().name,
        "b"
    );
}

#[test]
fn contexts_table_marks_the_current_one() {
    let cfg = config(
        &[
            ctx("dev", "https://dev:7443"),
            ctx("production", "https://prod:7443"),
        ],
        Some("production"),
    );
    assert_eq!(
        contexts_table(&summaries(&cfg)),
        "CURRENT   NAME         SERVER\n          dev          https://dev:7443\n*         production   https://prod:7443\n"
    );
}

#[test]
fn default_path_is_under_home() {
    let explicit = config_path(Some(Path::new("/tmp/x"))).unwrap();
    assert_eq!(explicit, Path::new("/tmp/x"));
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        assert_eq!(
            config_path(None).unwrap(),
            PathBuf::from(home).join(".config/gitfleet/config")
        );
    }
}
