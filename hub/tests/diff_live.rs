//! `Admin.DiffLive` through a real hub and a fake spoke speaking the real protocol: the hub
//! asks the spoke on its stream with the Target it would dispatch, hands the spoke's answer
//! back by request id, reports a cluster without a link as offline, answers a viewer (it is a
//! read), refuses bad input naming it, and ends the stream of a spoke that answers for another
//! cluster.

use crate::support;

use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::admin_client::AdminClient;
use gitfleet_proto::v1::spoke_message::Msg as In;
use gitfleet_proto::v1::users_client::UsersClient;
use support::*;
use tonic::Code;

fn request(app: &str, cluster: &str, revision: &str) -> pb::DiffLiveRequest {
    pb::DiffLiveRequest {
        app: app.into(),
        cluster: cluster.into(),
        revision: revision.into(),
    }
}

#[tokio::test]
async fn the_hub_asks_the_linked_spoke_and_reports_the_offline_one() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    // dev-2 gets the App too, but its spoke never connects.
    register(&hub, "dev-2", &[("env", "dev")]).await;
    let (_, mut spoke) = web_on_dev_1(&hub, &git, &c1).await;

    let mut client = admin(&hub).await;
    let asking = tokio::spawn(async move { client.diff_live(request("web", "", "")).await });
    spoke
        .until("a diff request", |v| !v.diff_requests.is_empty())
        .await;
    let asked = spoke.view.diff_requests[0].clone();
    let target = asked
        .target
        .clone()
        .expect("the request carries the Target");
    assert_eq!(target.app, "web");
    assert_eq!(
        target.source.as_ref().map(|s| s.commit.as_str()),
        Some(c1.as_str()),
        "by default the App's head"
    );
    // An answer with an id nobody waits for is dropped; the right one is handed back.
    for id in ["not-asked", asked.request_id.as_str()] {
        spoke
            .send(In::Diff(pb::DiffResult {
                request_id: id.into(),
                cluster: "dev-1".into(),
                target_id: "web".into(),
                revision: c1.clone(),
                objects: vec![pb::DiffObject {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    namespace: "web".into(),
                    name: "cfg".into(),
                    action: pb::DiffAction::Update as i32,
                    diff: "-v: 1\n+v: 2\n".into(),
                    message: String::new(),
                    source_file: "apps/web/cm.yaml".into(),
                }],
                updates: 1,
                ..Default::default()
            }))
            .await;
    }
    let answer = asking
        .await
        .expect("joined")
        .expect("answered")
        .into_inner();
    assert_eq!(answer.app, "web");
    assert_eq!(answer.revision, c1);
    let clusters: Vec<&str> = answer.clusters.iter().map(|c| c.cluster.as_str()).collect();
    assert_eq!(clusters, ["dev-1", "dev-2"]);
    let dev1 = &answer.clusters[0];
    assert_eq!((dev1.updates, dev1.objects.len()), (1, 1), "{dev1:?}");
    assert!(dev1.error.is_empty() && !dev1.offline, "{dev1:?}");
    let dev2 = &answer.clusters[1];
    assert!(dev2.offline, "{dev2:?}");
    assert!(
        dev2.error
            .starts_with("offline: the spoke is not connected ("),
        "{dev2:?}"
    );
    assert_eq!(spoke.view.diff_requests.len(), 1, "dev-1 asked once");

    // One cluster at a given revision, asked by a viewer (a read): the Target carries that
    // commit.
    let ctx = admin_config(&hub).context(None).unwrap().clone();
    let admin_channel = channel(
        &ctx.server,
        &ctx.certificate_authority_data,
        Some((&ctx.client_certificate_data, &ctx.client_key_data)),
    )
    .await;
    let vera = UsersClient::new(admin_channel)
        .create_user(pb::CreateUserRequest {
            name: "vera".into(),
            role: "viewer".into(),
            projects: vec![],
            ttl_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let viewer = channel(
        &hub.grpc_url(),
        &vera.ca_pem,
        Some((&vera.certificate_pem, &vera.private_key_pem)),
    )
    .await;
    let revision = "ab".repeat(20);
    let mut client = AdminClient::new(viewer);
    let rev = revision.clone();
    let asking = tokio::spawn(async move { client.diff_live(request("web", "dev-1", &rev)).await });
    spoke
        .until("a second diff request", |v| v.diff_requests.len() == 2)
        .await;
    let asked = spoke.view.diff_requests[1].clone();
    assert_eq!(
        asked
            .target
            .as_ref()
            .and_then(|t| t.source.as_ref())
            .map(|s| s.commit.clone()),
        Some(revision.clone())
    );
    spoke
        .send(In::Diff(pb::DiffResult {
            request_id: asked.request_id.clone(),
            cluster: "dev-1".into(),
            revision: revision.clone(),
            error: "App \"web\" does not render at abababab: bad.yaml:1:1: invalid YAML".into(),
            ..Default::default()
        }))
        .await;
    let answer = asking
        .await
        .expect("joined")
        .expect("answered")
        .into_inner();
    assert_eq!(answer.clusters.len(), 1);
    assert!(answer.clusters[0].error.contains("does not render"));

    // A prefix of a commit the App rolled out names that commit, as `rollback --to` takes.
    let mut client = admin(&hub).await;
    let prefix = c1[..8].to_owned();
    let asking =
        tokio::spawn(async move { client.diff_live(request("web", "dev-1", &prefix)).await });
    spoke
        .until("a third diff request", |v| v.diff_requests.len() == 3)
        .await;
    let asked = spoke.view.diff_requests[2].clone();
    assert_eq!(
        asked
            .target
            .as_ref()
            .and_then(|t| t.source.as_ref())
            .map(|s| s.commit.clone()),
        Some(c1.clone())
    );
    spoke
        .send(In::Diff(pb::DiffResult {
            request_id: asked.request_id.clone(),
            cluster: "dev-1".into(),
            revision: c1.clone(),
            ..Default::default()
        }))
        .await;
    let answer = asking
        .await
        .expect("joined")
        .expect("answered")
        .into_inner();
    assert_eq!(answer.revision, c1);

    // Bad input, each named.
    let mut client = admin(&hub).await;
    for (req, code, words) in [
        (
            request("", "", ""),
            Code::InvalidArgument,
            "the name of the App",
        ),
        (
            request("nope", "", ""),
            Code::NotFound,
            "app \"nope\" not found",
        ),
        (
            request("web", "mars", ""),
            Code::NotFound,
            "no Target on cluster \"mars\"",
        ),
        (
            request("web", "", "HEAD~1"),
            Code::InvalidArgument,
            "\"head~1\" is not a commit id",
        ),
        (
            request("web", "", "abcdef0"),
            Code::InvalidArgument,
            "never rolled out a commit starting with abcdef0",
        ),
    ] {
        let status = client.diff_live(req).await.expect_err("refused");
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(words), "{status:?}");
    }

    // A spoke answering for another cluster is cut off.
    spoke
        .send(In::Diff(pb::DiffResult {
            request_id: "x".into(),
            cluster: "dev-2".into(),
            ..Default::default()
        }))
        .await;
    let ended = spoke
        .until_end()
        .await
        .expect("the stream ends with an error");
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
    hub.shutdown().await;
}
