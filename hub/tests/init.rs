//! `gitfleet-hub init`: a new hub's PKI and first admin credential made without starting it,
//! never over an existing CA, and used unchanged by every hub started on that data directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;

use gitfleet_hub::runtime::{self, HubConfig, HubError};
use support::*;

const PKI_FILES: [&str; 6] = [
    "ca.crt",
    "ca.key",
    "server.crt",
    "server.key",
    "admin.crt",
    "admin.key",
];

/// Every file under `dir`, by path, with its contents.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut queue = vec![dir.to_owned()];
    while let Some(at) = queue.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                queue.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                files.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

fn server_names() -> Vec<String> {
    vec!["hub.gitfleet.svc".into(), "hub.example.com".into()]
}

#[test]
fn init_writes_the_pki_and_the_admin_credential() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("hub");
    let made = runtime::init(&data, &server_names(), "https://hub.example.com:7443").unwrap();
    assert_eq!(made.pki_dir, data.join("pki"));
    assert_eq!(made.admin_config_path, data.join("admin.gitfleetconfig"));
    for name in PKI_FILES {
        assert!(data.join("pki").join(name).is_file(), "pki/{name}");
    }
    let admin = std::fs::read_to_string(&made.admin_config_path).unwrap();
    assert!(admin.contains("https://hub.example.com:7443"), "{admin}");
    #[cfg(unix)]
    for path in [made.admin_config_path, data.join("pki/ca.key")] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    // Nothing but the PKI and the credential: no store, no server.
    assert_eq!(
        std::fs::read_dir(&data).unwrap().count(),
        2,
        "{:?}",
        snapshot(&data).keys()
    );
}

#[test]
fn init_refuses_a_data_directory_with_a_ca_and_changes_nothing() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("hub");
    runtime::init(&data, &server_names(), "https://hub.example.com:7443").unwrap();
    let before = snapshot(&data);

    let err = runtime::init(&data, &["other.example".into()], "https://other:7443").unwrap_err();
    assert!(matches!(err, HubError::AlreadyInitialised { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&data.join("pki/ca.crt").display().to_string()),
        "{text}"
    );
    assert!(!text.ends_with('.'), "{text}");
    assert_eq!(
        snapshot(&data),
        before,
        "a refused init changed the data directory"
    );

    // Half a CA is a CA too: init never makes a second one next to it.
    let half = dir.path().join("half");
    std::fs::create_dir_all(half.join("pki")).unwrap();
    std::fs::copy(data.join("pki/ca.key"), half.join("pki/ca.key")).unwrap();
    let before = snapshot(&half);
    let err = runtime::init(&half, &[], "https://hub:7443").unwrap_err();
    assert!(
        err.to_string()
            .contains(&half.join("pki/ca.key").display().to_string()),
        "{err}"
    );
    assert_eq!(snapshot(&half), before);
}

#[tokio::test]
async fn every_hub_on_an_initialised_data_directory_uses_its_pki_unchanged() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("hub");
    runtime::init(&data, &server_names(), "https://hub.example.com:7443").unwrap();
    let pki_before = snapshot(&data.join("pki"));

    // Two replicas in turn on copies of the same PKI (as each mounts it from one Secret).
    let replica_a = dir.path().join("replica-a");
    let replica_b = dir.path().join("replica-b");
    let mut cas = Vec::new();
    for replica in [&replica_a, &replica_b] {
        std::fs::create_dir_all(replica.join("pki")).unwrap();
        for name in PKI_FILES {
            std::fs::copy(data.join("pki").join(name), replica.join("pki").join(name)).unwrap();
        }
        let mut config = HubConfig::for_tests(replica);
        config.server_names = server_names();
        let hub = runtime::start(config).await.unwrap();
        cas.push(hub.ca_pem().to_owned());
        // Its admin credential and a registration work against it.
        admin(&hub)
            .await
            .apply(gitfleet_proto::v1::ApplyRequest {
                documents: vec![repo_doc("platform", "https://git.example/platform.git")],
                dry_run: false,
            })
            .await
            .unwrap();
        register(&hub, "edge-1", &[]).await;
        hub.shutdown().await;
        assert_eq!(
            snapshot(&replica.join("pki")),
            pki_before,
            "the hub changed the PKI init made"
        );
    }
    assert_eq!(cas[0], cas[1]);
    assert_eq!(
        cas[0].as_bytes(),
        pki_before["ca.crt"].as_slice(),
        "the hub serves the CA init made"
    );
}

#[test]
fn the_init_command_creates_once_and_then_refuses() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("hub");
    let init = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_gitfleet-hub"))
            .args(["init", "--data-dir"])
            .arg(&data)
            .args(["--server-name", "hub.example.com"])
            .args(["--advertise-url", "https://hub.example.com:7443"])
            .env_remove("GITFLEET_SERVER_NAMES")
            .env_remove("GITFLEET_ADVERTISE_URL")
            .output()
            .unwrap()
    };
    let first = init();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(data.join("pki/ca.crt").is_file());
    let admin = std::fs::read_to_string(data.join("admin.gitfleetconfig")).unwrap();
    assert!(admin.contains("https://hub.example.com:7443"), "{admin}");
    let before = snapshot(&data);

    let second = init();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("already holds a CA"), "{stderr}");
    assert_eq!(snapshot(&data), before);
}
