use std::os::unix::fs::PermissionsExt as _;

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
fn round_trips_through_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/config");
    let mut cfg = ClientConfig::single(ctx("a"));
    cfg.upsert(ctx("b"));
    cfg.save(&path).unwrap();
    assert_eq!(ClientConfig::load(&path).unwrap(), cfg);
    let mode = std::fs::metadata(&path).unwrap().permissions();
    assert_eq!(mode.mode() & 0o777, 0o600);
}

#[test]
fn a_wider_file_is_replaced_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(&path, "old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    ClientConfig::single(ctx("a")).save(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions();
    assert_eq!(mode.mode() & 0o777, 0o600);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("config")],
        "no temporary file left"
    );
}

#[test]
fn malformed_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(&path, "contexts: [ {").unwrap();
    let err = ClientConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("config"), "{err}");
    assert!(err.contains("not valid"), "{err}");
}
