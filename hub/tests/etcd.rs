//! The hub on etcd: the real hub (`runtime::start`) against a real etcd, acknowledging only what
//! etcd has committed, and finding everything again when it starts anew on the same prefix.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "etcd")]

use crate::support;

use std::time::{Duration, Instant};

use gitfleet_hub::runtime::{self, HubConfig, StoreConfig};
use gitfleet_hub::store::etcd::{EtcdBackend, EtcdOptions};
use gitfleet_hub::store::{Backend, KeyRange, Order, Tree};
use support::etcd::EtcdServer;
use support::*;

fn on_etcd(data: &std::path::Path, etcd: &EtcdServer, prefix: &str) -> HubConfig {
    let mut options = EtcdOptions::new(vec![etcd.endpoint()]);
    options.prefix = prefix.into();
    HubConfig {
        store: StoreConfig::Etcd(options),
        ..HubConfig::for_tests(data)
    }
}

/// What etcd holds under `prefix` for dev-1, read by a client of its own: its acked seq and its
/// Targets' reports (as stored, JSON).
async fn dev_1_in_etcd(etcd: &EtcdServer, prefix: &str) -> (Option<Vec<u8>>, Vec<String>) {
    let mut options = EtcdOptions::new(vec![etcd.endpoint()]);
    options.prefix = prefix.into();
    let reader = EtcdBackend::connect(&options).await.unwrap();
    let acked = reader.get(Tree::Acked, b"dev-1").await.unwrap();
    let targets = reader
        .scan(Tree::Targets, KeyRange::all(), Order::Ascending, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
        .collect();
    (acked, targets)
}

#[tokio::test]
async fn a_hub_on_etcd_acks_what_etcd_holds_and_finds_it_after_a_restart() {
    let etcd = EtcdServer::start();
    let (_tmp, data) = data_dir();
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let hub = runtime::start(on_etcd(&data, &etcd, "/hub-a/"))
        .await
        .unwrap();
    // The data directory keeps the PKI; the store is in etcd.
    assert!(data.join("pki").join("ca.crt").exists());
    assert!(!data.join("store").exists());

    let (id, mut spoke) = web_on_dev_1(&hub, &git, &c1).await;
    spoke.report(1, "web", &c1, "synced on etcd").await;
    spoke.until("ack 1", |v| v.acked_seq == 1).await;

    // Acknowledged means committed in etcd: another client reads it there at once.
    let (acked, targets) = dev_1_in_etcd(&etcd, "/hub-a/").await;
    assert_eq!(acked, Some(b"1".to_vec()));
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert!(targets[0].contains("synced on etcd"));
    let epoch = hub.store().epoch().to_owned();
    hub.shutdown().await;
    spoke.until_end().await;
    let held = spoke.close();

    // A new hub on the same etcd prefix (and data directory, for its PKI): same epoch, same
    // state.
    let hub = runtime::start(on_etcd(&data, &etcd, "/hub-a/"))
        .await
        .unwrap();
    assert_eq!(hub.store().epoch(), epoch);
    assert_eq!(hub.store().acked_seq("dev-1").unwrap(), 1);
    let reports = hub.store().reports().await.unwrap();
    assert_eq!(reports.len(), 1);
    assert!(format!("{:?}", reports[0]).contains("synced on etcd"));
    assert!(hub.store().cluster("dev-1").unwrap().is_some());
    assert_eq!(hub.store().resources().unwrap().len(), 2);
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, held.clone())
        .await
        .unwrap();
    // The spoke resumes where it was: the epoch it knows, its reports acknowledged.
    spoke
        .until("the restarted hub's hello", |v| v.acked_seq == 1)
        .await;
    assert_eq!(spoke.view.epoch, held.epoch);
    assert_eq!(spoke.view.commit_of("web").as_deref(), Some(c1.as_str()));
    spoke.report(2, "web", &c1, "still synced").await;
    spoke.until("ack 2", |v| v.acked_seq == 2).await;
    hub.shutdown().await;

    // Another prefix on the same etcd is another, empty hub.
    let (_tmp2, other) = data_dir();
    let hub = runtime::start(on_etcd(&other, &etcd, "/hub-b/"))
        .await
        .unwrap();
    assert_ne!(hub.store().epoch(), epoch);
    assert!(hub.store().clusters().unwrap().is_empty());
    hub.shutdown().await;
}

/// A spoke's session reads on while the ack of its earlier reports waits for etcd: whatever
/// arrives meanwhile is recorded at once and goes into the next flush. (Each session used to
/// wait for two flushes per batch of reports before reading the next, so at 10,000 clusters on
/// three replicas a spoke's window of 32 reports took 32 round trips of flushes.)
#[tokio::test]
async fn a_session_reads_reports_on_while_an_earlier_ack_waits_for_etcd() {
    let etcd = EtcdServer::start();
    let (_tmp, data) = data_dir();
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let hub = runtime::start(on_etcd(&data, &etcd, "/hub-pipelined/"))
        .await
        .unwrap();
    let (_id, mut spoke) = web_on_dev_1(&hub, &git, &c1).await;
    spoke.report(1, "web", &c1, "first").await;
    spoke.until("ack 1", |v| v.acked_seq == 1).await;

    // etcd stalls: the flush that would make report 2 durable cannot finish.
    etcd.pause();
    spoke.report(2, "web", &c1, "second").await;
    eventually("report 2 recorded", || async {
        hub.store()
            .report_summary("dev-1", "web")
            .filter(|s| s.seq == 2)
    })
    .await;
    // Sent once report 2's ack is under way (not in one batch with it).
    spoke.report(3, "web", &c1, "third").await;
    let read_on = tokio::time::timeout(
        Duration::from_secs(10),
        eventually("report 3 recorded while report 2's ack waits", || async {
            hub.store()
                .report_summary("dev-1", "web")
                .filter(|s| s.seq == 3)
        }),
    )
    .await;
    etcd.resume();
    read_on.expect("the session read report 3 while the ack of report 2 waited for etcd");

    // Once etcd commits, both are acked, and acked means in etcd.
    spoke.until("ack 3", |v| v.acked_seq == 3).await;
    let (acked, targets) = dev_1_in_etcd(&etcd, "/hub-pipelined/").await;
    assert_eq!(acked, Some(b"3".to_vec()));
    assert!(targets.iter().any(|t| t.contains("third")), "{targets:?}");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_hub_pointed_at_an_unreachable_etcd_says_which_at_once() {
    let (_tmp, data) = data_dir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut options = EtcdOptions::new(vec![endpoint.clone()]);
    options.connect_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = runtime::start(HubConfig {
        store: StoreConfig::Etcd(options),
        ..HubConfig::for_tests(&data)
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&format!("cannot reach etcd at {endpoint}")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn export_from_sled_and_import_into_etcd_moves_a_hub() {
    let etcd = EtcdServer::start();
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    register(&hub, "dev-1", &[("env", "dev")]).await;
    let epoch = hub.store().epoch().to_owned();
    hub.shutdown().await;

    let backup = runtime::export(&data, &StoreConfig::Sled).await.unwrap();
    let (_tmp2, moved) = data_dir();
    let config = on_etcd(&moved, &etcd, "/moved/");
    runtime::import(&moved, &config.store, &backup)
        .await
        .unwrap();
    let err = runtime::import(&moved, &config.store, &backup)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already holds data"), "{err}");
    let hub = runtime::start(config.clone()).await.unwrap();
    assert!(hub.store().cluster("dev-1").unwrap().is_some());
    assert_ne!(hub.store().epoch(), epoch, "a restored hub is a new epoch");
    hub.shutdown().await;
    // And back out of etcd.
    let again = runtime::export(&moved, &config.store).await.unwrap();
    let clusters = &backup["store"]["trees"]["clusters"];
    assert!(
        clusters.as_object().is_some_and(|c| c.len() == 1),
        "{clusters}"
    );
    assert_eq!(&again["store"]["trees"]["clusters"], clusters);
}

#[tokio::test]
async fn a_hub_reaches_etcd_over_tls_with_its_client_certificate_only() {
    // A CA, a server certificate for 127.0.0.1 and a client certificate: the hub's own PKI code
    // makes all three.
    let certs = tempfile::tempdir().unwrap();
    let pki = certs.path().join("pki");
    gitfleet_hub::pki::Pki::load_or_create(&pki, &[]).unwrap();
    let etcd = EtcdServer::start_tls(
        &pki.join("ca.crt"),
        &pki.join("server.crt"),
        &pki.join("server.key"),
    );
    assert!(etcd.endpoint().starts_with("https://"));
    let read = |name: &str| std::fs::read(pki.join(name)).unwrap();
    let tls = |identity: bool| gitfleet_hub::store::etcd::EtcdTls {
        ca_pem: Some(read("ca.crt")),
        identity: identity.then(|| (read("admin.crt"), read("admin.key"))),
    };
    let mut options = EtcdOptions::new(vec![etcd.endpoint()]);
    options.connect_timeout = Duration::from_secs(3);

    // With the CA and the client certificate: a hub runs and keeps its state there.
    options.tls = Some(tls(true));
    let (_tmp, data) = data_dir();
    let config = HubConfig {
        store: StoreConfig::Etcd(options.clone()),
        ..HubConfig::for_tests(&data)
    };
    let hub = runtime::start(config.clone()).await.unwrap();
    register(&hub, "dev-1", &[("env", "dev")]).await;
    hub.shutdown().await;
    let hub = runtime::start(config).await.unwrap();
    assert!(hub.store().cluster("dev-1").unwrap().is_some());
    hub.shutdown().await;

    // Without a client certificate etcd refuses the hub, which says where it could not get in.
    options.tls = Some(tls(false));
    let err = EtcdBackend::connect(&options)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("cannot reach etcd at {}", etcd.endpoint())),
        "{err}"
    );
    // Without the CA, etcd's certificate is not trusted.
    options.tls = Some(gitfleet_hub::store::etcd::EtcdTls {
        ca_pem: None,
        identity: Some((read("admin.crt"), read("admin.key"))),
    });
    let err = EtcdBackend::connect(&options)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot reach etcd"), "{err}");
}
