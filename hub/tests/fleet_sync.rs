//! The fleet managing itself, end to end against a local Git repository: the hub applies the
//! resources in its fleet path on every new commit, deletes the ones it brought that are gone,
//! leaves resources applied by hand alone, and records a bad commit on the Repo's status
//! without changing anything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use gitfleet_hub::fleetsync::{FLEET_SOURCE, FleetSource};
use gitfleet_hub::runtime::{self, HubConfig};
use gitfleet_proto::v1 as pb;
use serde_json::Value;
use support::*;

type Admin = pb::admin_client::AdminClient<tonic::transport::Channel>;

fn group(name: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1\nkind: ClusterGroup\nmetadata: {{ name: {name} }}\nspec: {{ selector: {{ matchLabels: {{ region: {name} }} }} }}\n"
    )
}

fn web(namespace: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1
kind: App
metadata: {{ name: web }}
spec:
  repo: fleet
  path: apps/web
  namespace: {namespace}
  targets:
    - clusterGroup: eu
"
    )
}

/// Every stored resource as (kind, name) → document (with status).
async fn resources(admin: &mut Admin) -> std::collections::BTreeMap<(String, String), Value> {
    admin
        .get(pb::GetRequest::default())
        .await
        .unwrap()
        .into_inner()
        .resources
        .iter()
        .map(|d| {
            let v: Value = serde_json::from_str(&d.json).unwrap();
            let key = (
                v["kind"].as_str().unwrap().to_owned(),
                v["metadata"]["name"].as_str().unwrap().to_owned(),
            );
            (key, v)
        })
        .collect()
}

fn key(kind: &str, name: &str) -> (String, String) {
    (kind.to_owned(), name.to_owned())
}

/// The fleet Repo's `status.fleet` once it reports `commit` (synced) or an error at it.
async fn fleet_status(admin: &Admin, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(what, || {
        let mut admin = admin.clone();
        let check = &check;
        async move {
            let all = resources(&mut admin).await;
            let status = all.get(&key("Repo", "fleet"))?["status"].clone();
            check(&status).then_some(status)
        }
    })
    .await
}

#[tokio::test]
async fn the_hub_applies_its_fleet_path_on_every_commit() {
    let (_tmp, data) = data_dir();
    let mut config = HubConfig::for_tests(&data);
    config.fleet = Some(FleetSource {
        repo: "fleet".into(),
        path: "fleet".into(),
    });
    let hub = runtime::start(config).await.unwrap();
    let mut admin = admin(&hub).await;
    let git = GitRepo::new();
    let c1 = git.commit(
        &[
            ("apps/web/cm.yaml", "v: 1\n"),
            (
                "fleet/groups.yaml",
                &format!("{}---\n{}", group("eu"), group("us")),
            ),
            ("fleet/apps/web.yaml", &web("web")),
            ("fleet/README.md", "not a resource: ignored\n"),
        ],
        "the fleet",
    );
    // Bootstrap: the fleet Repo by hand, and a ClusterGroup the path never names.
    admin
        .apply(pb::ApplyRequest {
            documents: vec![
                repo_doc("fleet", &git.url()),
                doc(serde_saphyr::from_str(&group("by-hand")).unwrap()),
            ],
            dry_run: false,
        })
        .await
        .unwrap();

    let status = fleet_status(&admin, "the first sync", |s| {
        s["fleet"]["commit"] == c1.as_str()
    })
    .await;
    assert_eq!(status["fleet"]["error"], "", "{status}");
    let all = resources(&mut admin).await;
    for k in [
        key("ClusterGroup", "eu"),
        key("ClusterGroup", "us"),
        key("App", "web"),
    ] {
        let annotations =
            &all.get(&k).unwrap_or_else(|| panic!("{k:?} in {all:?}"))["metadata"]["annotations"];
        assert_eq!(annotations[FLEET_SOURCE], "fleet:fleet", "{k:?}");
    }
    assert_eq!(all[&key("App", "web")]["status"]["revision"], c1.as_str());

    // A commit that drops `us`, changes web and adds `asia`: applied, and `us` deleted. The
    // group applied by hand stays.
    let c2 = git.commit(
        &[
            (
                "fleet/groups.yaml",
                &format!("{}---\n{}", group("eu"), group("asia")),
            ),
            ("fleet/apps/web.yaml", &web("web-v2")),
        ],
        "move on",
    );
    fleet_status(&admin, "the second sync", |s| {
        s["fleet"]["commit"] == c2.as_str()
    })
    .await;
    let all = resources(&mut admin).await;
    let names: Vec<&str> = all.keys().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["web", "asia", "by-hand", "eu", "fleet"], "{all:?}");
    assert_eq!(all[&key("App", "web")]["spec"]["namespace"], "web-v2");

    // Broken YAML: recorded on the Repo, nothing else changes.
    let c3 = git.commit(&[("fleet/broken.yaml", "kind: [unclosed\n")], "oops");
    let status = fleet_status(&admin, "the broken commit's error", |s| {
        s["commit"] == c3.as_str() && s["fleet"]["error"] != ""
    })
    .await;
    let error = status["fleet"]["error"].as_str().unwrap();
    assert!(error.contains("fleet/broken.yaml"), "{error}");
    assert_eq!(
        status["fleet"]["commit"],
        c2.as_str(),
        "still the last good commit"
    );
    assert_eq!(resources(&mut admin).await.len(), 5);

    // An alias bomb (a 1 MiB file that expanded to gigabytes and crash-looped the hub): refused
    // by the YAML budget with the file named, the hub carries on.
    let mut bomb = format!(
        "apiVersion: gitfleet.dev/v1\nkind: ClusterGroup\nmetadata: {{name: &n \"{}\"}}\nspec: [",
        "x".repeat(4096)
    );
    bomb.push_str(&vec!["*n"; 100_000].join(","));
    bomb.push_str("]\n");
    let c3b = git.commit(&[("fleet/broken.yaml", &bomb)], "bomb");
    let status = fleet_status(&admin, "the alias bomb's error", |s| {
        s["commit"] == c3b.as_str()
            && s["fleet"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("YAML aliases"))
    })
    .await;
    let error = status["fleet"]["error"].as_str().unwrap();
    assert!(
        error.contains("fleet/broken.yaml: more than 10000 YAML aliases"),
        "{error}"
    );
    assert_eq!(status["fleet"]["commit"], c2.as_str());
    assert_eq!(resources(&mut admin).await.len(), 5);

    // Valid YAML but an invalid resource: the hub's field-path error, nothing applied, even
    // the valid documents next to it.
    let c4 = git.commit(
        &[
            ("fleet/broken.yaml", &group("new")),
            (
                "fleet/bad.yaml",
                &web("web").replace("clusterGroup", "clusterGroupp"),
            ),
        ],
        "still wrong",
    );
    let status = fleet_status(&admin, "the invalid commit's error", |s| {
        s["commit"] == c4.as_str()
            && s["fleet"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("bad.yaml"))
    })
    .await;
    let error = status["fleet"]["error"].as_str().unwrap();
    assert!(error.contains("spec.targets[0]"), "{error}");
    let all = resources(&mut admin).await;
    assert!(
        !all.contains_key(&key("ClusterGroup", "new")),
        "all or nothing: {all:?}"
    );
    assert_eq!(all[&key("App", "web")]["spec"]["namespace"], "web-v2");

    // Fixed: applied, the error cleared.
    let c5 = git.commit(&[("fleet/bad.yaml", "# nothing here any more\n")], "fix");
    let status = fleet_status(&admin, "the fixed sync", |s| {
        s["fleet"]["commit"] == c5.as_str()
    })
    .await;
    assert_eq!(status["fleet"]["error"], "");
    assert!(
        resources(&mut admin)
            .await
            .contains_key(&key("ClusterGroup", "new"))
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_fleet_commit_is_applied_in_one_step_with_one_flush() {
    let (_tmp, data) = data_dir();
    let mut config = HubConfig::for_tests(&data);
    config.fleet = Some(FleetSource {
        repo: "fleet".into(),
        path: "fleet".into(),
    });
    let hub = runtime::start(config).await.unwrap();
    let mut admin = admin(&hub).await;
    let git = GitRepo::new();
    let groups = |names: &[&str]| -> String {
        names
            .iter()
            .map(|n| group(n))
            .collect::<Vec<_>>()
            .join("---\n")
    };
    let c1 = git.commit(
        &[("fleet/groups.yaml", &groups(&["a1", "a2", "a3", "a4"]))],
        "four groups",
    );
    admin
        .apply(pb::ApplyRequest {
            documents: vec![repo_doc("fleet", &git.url())],
            dry_run: false,
        })
        .await
        .unwrap();
    fleet_status(&admin, "the first sync", |s| {
        s["fleet"]["commit"] == c1.as_str()
    })
    .await;

    // Four groups replaced by four others: four applied, four deleted, the status moved.
    let before = hub.store().flush_count();
    let c2 = git.commit(
        &[("fleet/groups.yaml", &groups(&["b1", "b2", "b3", "b4"]))],
        "four others",
    );
    assert!(hub.engine().trigger_fetch("fleet"));
    let status = fleet_status(&admin, "the second sync", |s| {
        s["fleet"]["commit"] == c2.as_str()
    })
    .await;
    assert_eq!(status["fleet"]["error"], "", "{status}");
    let flushes = hub.store().flush_count() - before;
    let all = resources(&mut admin).await;
    let names: Vec<&str> = all.keys().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["b1", "b2", "b3", "b4", "fleet"], "{all:?}");
    // One for the sync (resources, their deletions and the Repo's status together); a fetch
    // may add one of its own.
    assert!(flushes <= 2, "{flushes} flushes for one fleet commit");
    hub.shutdown().await;
}
