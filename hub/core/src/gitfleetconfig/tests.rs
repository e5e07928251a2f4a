use super::*;

fn ctx(name: &str) -> Context {
    Context {
        name: name.into(),
        server: "https://127.0.0.1:7443".into(),
        certificate_authority_data: "CA".into(),
        client_certificate_data: "CERT".into(),
        client_key_data: "KEY".into(),
        tls_server_name: None,
    }
}

#[test]
fn round_trips_and_selects_contexts() {
    let mut cfg = ClientConfig::single(ctx("a"));
    cfg.upsert(ctx("b"));
    let back = ClientConfig::from_yaml(&cfg.to_yaml()).unwrap();
    assert_eq!(back, cfg);
    assert_eq!(back.context(None).unwrap().name, "a");
    assert_eq!(back.context(Some("b")).unwrap().name, "b");
    assert_eq!(
        back.context(Some("zz")),
        Err(ContextError::NoSuchContext("zz".into()))
    );
}

#[test]
fn upsert_replaces_a_context_by_name() {
    let mut cfg = ClientConfig::single(ctx("a"));
    let mut moved = ctx("a");
    moved.server = "https://hub.example:7443".into();
    cfg.upsert(moved.clone());
    assert_eq!(cfg.contexts, vec![moved]);
}

#[test]
fn without_a_current_context_one_must_be_named() {
    let mut cfg = ClientConfig::single(ctx("a"));
    cfg.current_context = None;
    assert_eq!(cfg.context(None), Err(ContextError::NoCurrentContext));
    assert_eq!(cfg.context(Some("a")).unwrap().name, "a");
}

#[test]
fn the_file_uses_kebab_case_keys() {
    let text = ClientConfig::single(ctx("a")).to_yaml();
    for key in [
        "api-version: gitfleet.dev/v1",
        "kind: Config",
        "current-context: a",
        "certificate-authority-data: CA",
        "client-certificate-data: CERT",
        "client-key-data: KEY",
    ] {
        assert!(text.contains(key), "{key} missing from {text}");
    }
    assert!(!text.contains("tls-server-name"), "{text}");
}
