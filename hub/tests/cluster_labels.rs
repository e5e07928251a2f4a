//! `Access.LabelCluster`: an admin changes a cluster's labels, placement follows, and the
//! spoke's own registration never changes them back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::access_client::AccessClient;
use gitfleet_proto::v1::admin_client::AdminClient;
use gitfleet_proto::v1::rollouts_client::RolloutsClient;
use support::*;
use tonic::Code;
use tonic::transport::Channel;

async fn admin_channel(hub: &gitfleet_hub::runtime::HubHandle) -> Channel {
    let cfg = admin_config(hub);
    let ctx = cfg.context(None).unwrap();
    channel(
        &ctx.server,
        &ctx.certificate_authority_data,
        Some((&ctx.client_certificate_data, &ctx.client_key_data)),
    )
    .await
}

fn label(
    name: &str,
    set: &[(&str, &str)],
    remove: &[&str],
    overwrite: bool,
) -> pb::LabelClusterRequest {
    pb::LabelClusterRequest {
        name: name.into(),
        set: owned(set).into_iter().collect(),
        remove: remove.iter().map(|k| (*k).to_owned()).collect(),
        overwrite,
    }
}

async fn labels_of(admin: &mut AdminClient<Channel>, cluster: &str) -> Vec<(String, String)> {
    let clusters = admin
        .list_clusters(pb::ListClustersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clusters;
    let c = clusters.into_iter().find(|c| c.name == cluster).unwrap();
    let mut labels: Vec<_> = c.labels.into_iter().collect();
    labels.sort();
    labels
}

#[tokio::test]
async fn a_relabeled_cluster_gains_and_loses_the_apps_that_select_it() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let git = GitRepo::new();
    git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let id = register(&hub, "edge-1", &[("env", "canary")]).await;
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    spoke.until("first snapshot", |v| v.snapshots == 1).await;

    let ch = admin_channel(&hub).await;
    let mut admin = AdminClient::new(ch.clone());
    let mut access = AccessClient::new(ch.clone());
    admin
        .apply(pb::ApplyRequest {
            documents: vec![
                repo_doc("platform", &git.url()),
                app_doc("web", "platform", "apps/web", "prod"),
            ],
            dry_run: false,
        })
        .await
        .unwrap();

    // kubectl's rule: another value for an existing key needs overwrite; nothing changes.
    let err = access
        .label_cluster(label("edge-1", &[("env", "prod")], &[], false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert_eq!(
        err.message(),
        r#"label "env" already has the value "canary"; pass --overwrite to change it"#
    );
    assert_eq!(
        labels_of(&mut admin, "edge-1").await,
        [("env".into(), "canary".into())]
    );

    let labeled = access
        .label_cluster(label(
            "edge-1",
            &[("env", "prod"), ("zone", "eu")],
            &[],
            true,
        ))
        .await
        .unwrap()
        .into_inner()
        .cluster
        .unwrap();
    assert_eq!(labeled.name, "edge-1");
    assert_eq!(
        labeled
            .labels
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
        owned(&[("env", "prod"), ("zone", "eu")])
    );
    spoke
        .until("web placed on edge-1", |v| v.targets.contains_key("web"))
        .await;

    // The event says who did it.
    let events = RolloutsClient::new(ch.clone())
        .list_events(pb::ListEventsRequest {
            cluster: "edge-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let e = events.iter().find(|e| e.kind == "ClusterLabeled").unwrap();
    assert_eq!(e.by, "admin");
    assert_eq!(e.message, "labels env=prod,zone=eu (were env=canary)");

    // The spoke registering again (its retry, with the labels it started with) keeps the hub's.
    let key = rcgen::KeyPair::from_pem(&id.key_pem).unwrap();
    let token = hub
        .create_token(
            std::time::Duration::from_secs(600),
            owned(&[("env", "canary")]),
            1,
        )
        .await
        .unwrap();
    try_register_with_key(&hub, "edge-1", &token, &[("env", "canary")], &key)
        .await
        .unwrap();
    assert_eq!(
        labels_of(&mut admin, "edge-1").await,
        [("env".into(), "prod".into()), ("zone".into(), "eu".into())]
    );

    access
        .label_cluster(label("edge-1", &[], &["env"], false))
        .await
        .unwrap();
    spoke
        .until("web gone from edge-1", |v| !v.targets.contains_key("web"))
        .await;
    assert_eq!(
        labels_of(&mut admin, "edge-1").await,
        [("zone".into(), "eu".into())]
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_bad_label_is_refused_by_name_and_changes_nothing() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    register(&hub, "edge-1", &[("env", "canary")]).await;
    let ch = admin_channel(&hub).await;
    let mut admin = AdminClient::new(ch.clone());
    let mut access = AccessClient::new(ch);

    for (req, message) in [
        (
            label("edge-1", &[("ok", "yes"), ("bad key", "x")], &[], false),
            r#"label key "bad key" must consist of letters, digits, '-', '_' and '.'"#,
        ),
        (
            label("edge-1", &[("ring", "a/b")], &["env"], false),
            r#"label "ring": value "a/b" must consist of letters, digits, '-', '_' and '.'"#,
        ),
        (
            label("edge-1", &[], &["-env"], false),
            r#"label key "-env" must start and end with a letter or digit"#,
        ),
    ] {
        let err = access.label_cluster(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert_eq!(err.message(), message);
    }
    assert_eq!(
        labels_of(&mut admin, "edge-1").await,
        [("env".into(), "canary".into())]
    );

    let err = access
        .label_cluster(label("nope", &[("env", "prod")], &[], false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert_eq!(err.message(), r#"cluster "nope" is not registered"#);

    // A cluster's certificate cannot relabel itself.
    let id = register(&hub, "edge-2", &[]).await;
    let spoke_ch = channel(
        &hub.grpc_url(),
        hub.ca_pem(),
        Some((&id.cert_pem, &id.key_pem)),
    )
    .await;
    let err = AccessClient::new(spoke_ch)
        .label_cluster(label("edge-2", &[("env", "prod")], &[], false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert_eq!(labels_of(&mut admin, "edge-2").await, []);

    // A revoked cluster is not relabeled: placement no longer reads its labels.
    access
        .revoke_cluster(pb::RevokeClusterRequest {
            name: "edge-2".into(),
        })
        .await
        .unwrap();
    let err = access
        .label_cluster(label("edge-2", &[("env", "prod")], &[], false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert_eq!(
        err.message(),
        r#"cluster "edge-2" has been revoked; its labels no longer matter"#
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn labels_survive_a_restart() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    register(&hub, "edge-1", &[("env", "canary")]).await;
    let mut access = AccessClient::new(admin_channel(&hub).await);
    access
        .label_cluster(label("edge-1", &[("env", "prod")], &[], true))
        .await
        .unwrap();
    hub.shutdown().await;

    let hub = start_hub(&data).await;
    let mut admin = AdminClient::new(admin_channel(&hub).await);
    assert_eq!(
        labels_of(&mut admin, "edge-1").await,
        [("env".into(), "prod".into())]
    );
    hub.shutdown().await;
}
