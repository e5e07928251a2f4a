//! One change is one trace whichever replica dispatches it: a spoke linked to a follower gets
//! its commit in the trace of the leader's fetch, as a spoke linked to the leader does. (One
//! test per file: the tracing subscriber is set once per process.)
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "etcd")]

use crate::support;

use std::time::Duration;

use gitfleet_hub::leadership::Leadership;
use gitfleet_hub::runtime::{self, HubConfig, StoreConfig};
use gitfleet_hub::store::etcd::EtcdOptions;
use support::etcd::EtcdServer;
use support::*;

/// The trace id of the trace context a spoke was given with `app`'s Target.
fn trace_id(view: &SpokeView, app: &str) -> Option<String> {
    let parent = view
        .targets
        .get(app)?
        .trace
        .as_ref()?
        .fields
        .get("traceparent")?;
    parent.split('-').nth(1).map(str::to_owned)
}

#[tokio::test]
async fn a_spoke_on_a_follower_gets_the_commit_in_the_trace_of_the_leaders_fetch() {
    // Spans get trace ids once a subscriber with OpenTelemetry is set; nothing listens at the
    // endpoint, and nothing needs to: only the context on the wire is looked at.
    let _telemetry = gitfleet_hub::telemetry::init_with_endpoint("http://127.0.0.1:9").unwrap();
    let etcd = EtcdServer::start();
    let on_etcd = |data: &std::path::Path| {
        let mut options = EtcdOptions::new(vec![etcd.endpoint()]);
        options.prefix = "/trace/".into();
        options.hold_ttl = Duration::from_secs(3);
        HubConfig {
            store: StoreConfig::Etcd(options),
            ..HubConfig::for_tests(data)
        }
    };
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let (_ta, a_data) = data_dir();
    let a = runtime::start(on_etcd(&a_data)).await.unwrap();
    let mut part = a.leadership();
    tokio::time::timeout(DEADLINE, part.wait_for(Leadership::leads))
        .await
        .unwrap()
        .unwrap();
    let (_tb, b_data) = data_dir();
    std::fs::create_dir_all(b_data.join("pki")).unwrap();
    for entry in std::fs::read_dir(a_data.join("pki")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), b_data.join("pki").join(entry.file_name())).unwrap();
    }
    let b = runtime::start(on_etcd(&b_data)).await.unwrap();

    // dev-1 on the leader, dev-2 on the follower, both running web.
    let (_, mut on_leader) = web_on_dev_1(&a, &git, &c1).await;
    let id2 = register(&a, "dev-2", &[("env", "dev")]).await;
    let mut on_follower = FakeSpoke::connect(&b.grpc_url(), &id2, SpokeView::default())
        .await
        .unwrap();
    on_follower
        .until("web at the first commit", |v| {
            v.commit_of("web").as_deref() == Some(c1.as_str())
        })
        .await;
    assert!(!b.engine().leads());

    let c2 = git.commit(&[("apps/web/cm.yaml", "v: 2\n")], "two");
    assert!(a.engine().trigger_fetch("platform"));
    for spoke in [&mut on_leader, &mut on_follower] {
        spoke
            .until("web at the second commit", |v| {
                v.commit_of("web").as_deref() == Some(c2.as_str())
            })
            .await;
    }
    let leaders = trace_id(&on_leader.view, "web").expect("the leader's dispatch carries a trace");
    let followers =
        trace_id(&on_follower.view, "web").expect("the follower's dispatch carries a trace");
    assert_eq!(leaders, followers, "one change, one trace");
    a.shutdown().await;
    b.shutdown().await;
}
