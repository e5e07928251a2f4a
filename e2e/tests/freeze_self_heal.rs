//! Self-heal while held, end to end on kubesim (docs/change-control.md, "Self-heal while
//! held"): a freeze created with `--no-self-heal` leaves a drifted object drifted on the
//! clusters it holds (the Target reports OutOfSync, nothing corrects it, status and rollout
//! status say self-heal is suspended), and heals it once the freeze is deleted; a freeze
//! without the flag holds its cluster just the same and keeps healing it. A deny window with
//! `selfHeal: false`, open by its schedule, does the same on the clusters it applies to until
//! the App no longer has it.
//!
//! Two clusters: `eu-1` (env=prod) under the `--no-self-heal` freeze, `lab-1` (env=dev) under
//! a plain one. Both are edited at once: lab-1's heal, which is waited for, is the yardstick
//! for "eu-1 would have been healed by now". Every wait is bounded by a deadline.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use gitfleet_e2e::harness::{
    ClusterSpec, Fleet, FleetOptions, describe, is_converged, until_async,
};
use gitfleet_proto::v1 as pb;

const DEADLINE: Duration = Duration::from_secs(90);
const CONFIGMAP: &str = include_str!("../demo/hello/configmap.yaml");
const DEPLOYMENT: &str = include_str!("../demo/hello/deployment.yaml");
const GIT_GREETING: &str = "Hello from gitfleet, v1";
const EDITED: &str = "edited by hand";

fn clusters() -> Vec<ClusterSpec> {
    vec![
        ClusterSpec::new("eu-1").label("env", "prod"),
        ClusterSpec::new("lab-1").label("env", "dev"),
    ]
}

const APP: &str = "apiVersion: gitfleet.dev/v1
kind: App
metadata: { name: hello }
spec:
  repo: platform
  path: apps/hello
  namespace: hello
  targets:
    - clusterSelector: {}
";

/// hello with a deny window open all the time (every minute, for an hour) on prod clusters,
/// which suspends self-heal.
const APP_WITH_WINDOW: &str = "apiVersion: gitfleet.dev/v1
kind: App
metadata: { name: hello }
spec:
  repo: platform
  path: apps/hello
  namespace: hello
  targets:
    - clusterSelector: {}
  syncWindows:
    - kind: deny
      schedule: \"* * * * *\"
      duration: 1h
      clusterSelector: { matchLabels: { env: prod } }
      selfHeal: false
";

/// The live ConfigMap's greeting on `cluster`.
fn greeting(fleet: &Fleet, cluster: &str) -> Option<String> {
    let cm = fleet
        .kubesim
        .get_object(cluster, "v1", "ConfigMap", Some("hello"), "hello-config")?;
    cm["data"]["greeting"].as_str().map(str::to_owned)
}

/// Changes the greeting on `cluster` the way `kubectl edit` would (another field manager).
async fn edit(fleet: &Fleet, cluster: &str) -> anyhow::Result<()> {
    let client = kube::Client::try_from(fleet.kubesim.kube_config(cluster))?;
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client, "hello");
    let params = kube::api::PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    let patch = serde_json::json!({"data": {"greeting": EDITED}});
    api.patch("hello-config", &params, &kube::api::Patch::Merge(&patch))
        .await
        .with_context(|| format!("editing hello-config on {cluster}"))?;
    Ok(())
}

/// Whether `cluster`'s spoke holds hello's Target with self-heal on.
fn spoke_self_heals(fleet: &Fleet, cluster: &str) -> Option<bool> {
    let desired = fleet.spokes[cluster].desired();
    let d = desired.borrow();
    d.targets.get("hello").map(|t| t.sync_policy.self_heal)
}

fn target<'a>(targets: &'a [pb::TargetStatus], cluster: &str) -> Option<&'a pb::TargetStatus> {
    targets.iter().find(|t| t.cluster == cluster)
}

fn out_of_sync(t: Option<&pb::TargetStatus>) -> bool {
    t.is_some_and(|t| t.sync == pb::SyncState::OutOfSync as i32)
}

/// Polls the hub's status of hello (and the live objects through `done`) until `done` holds.
async fn wait(
    fleet: &mut Fleet,
    what: &str,
    mut done: impl FnMut(&Fleet, &[pb::TargetStatus]) -> bool,
) -> anyhow::Result<Vec<pb::TargetStatus>> {
    let mut last = Vec::new();
    let found = until_async(what, DEADLINE, async || {
        let targets = fleet.status("hello").await?;
        if done(&*fleet, &targets) {
            return Ok(Some(targets));
        }
        last = targets;
        Ok(None)
    })
    .await;
    found.with_context(|| {
        format!(
            "eu-1 has {:?}, lab-1 {:?}\n{}",
            greeting(fleet, "eu-1"),
            greeting(fleet, "lab-1"),
            describe(&last)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_self_heal_freeze_leaves_drift_until_deleted_and_a_plain_freeze_keeps_healing()
-> anyhow::Result<()> {
    let mut fleet = Fleet::start(FleetOptions::new(clusters())).await?;
    fleet.git.write("apps/hello/configmap.yaml", CONFIGMAP)?;
    fleet.git.write("apps/hello/deployment.yaml", DEPLOYMENT)?;
    let v1 = fleet.git.commit("v1")?;
    let resources = format!("{}---\n{APP}", fleet.repo_yaml("platform"));
    fleet.apply_yaml(&resources).await?;
    fleet.wait_converged("hello", &v1, 2, DEADLINE).await?;

    // The freezes: prod without self-heal, dev with.
    let out = fleet
        .cli(&[
            "freeze",
            "create",
            "maint",
            "--app",
            "hello",
            "--cluster-selector",
            "env=prod",
            "--for",
            "1h",
            "--no-self-heal",
            "--reason",
            "manual failover",
        ])
        .await?;
    ensure!(out.contains("and do not self-heal"), "{out}");
    fleet
        .cli(&[
            "freeze",
            "create",
            "plain",
            "--app",
            "hello",
            "--cluster-selector",
            "env=dev",
            "--for",
            "1h",
            "--reason",
            "campaign",
        ])
        .await?;
    let list: serde_json::Value =
        serde_json::from_str(&fleet.cli(&["freeze", "list", "-o", "json"]).await?)?;
    let self_heal = |name: &str| {
        list["freezes"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["name"] == name))
            .map(|f| f["selfHeal"].clone())
    };
    ensure!(
        self_heal("maint") == Some(serde_json::Value::Bool(false))
            && self_heal("plain") == Some(serde_json::Value::Bool(true)),
        "freeze list: {list}"
    );

    // The hub publishes eu-1's Target without self-heal (and says so), lab-1's as it was.
    let targets = wait(&mut fleet, "eu-1's self-heal suspended", |f, t| {
        spoke_self_heals(f, "eu-1") == Some(false)
            && target(t, "eu-1").is_some_and(|t| t.held == "self-heal suspended by freeze maint")
    })
    .await?;
    ensure!(
        spoke_self_heals(&fleet, "lab-1") == Some(true),
        "a plain freeze keeps self-heal"
    );
    ensure!(
        target(&targets, "lab-1").is_some_and(|t| t.held.is_empty()),
        "{}",
        describe(&targets)
    );
    let rollout = fleet.cli(&["rollout", "status", "hello"]).await?;
    ensure!(
        rollout
            .lines()
            .any(|l| l.starts_with("eu-1") && l.contains("self-heal suspended by freeze maint")),
        "{rollout}"
    );
    ensure!(
        !rollout.lines().any(|l| l.starts_with("lab-1")),
        "{rollout}"
    );

    // Both clusters drift. lab-1 heals; by the time it has healed and reported Synced again,
    // eu-1 has reported its drift and still has it. The spoke took the new policy from its link
    // just now: an edit that raced its worker's switch to it could still be healed, so the edit
    // is tried again (a suspension that does not work heals every time and fails below).
    let mut attempts = 0;
    loop {
        attempts += 1;
        edit(&fleet, "eu-1").await?;
        edit(&fleet, "lab-1").await?;
        let targets = wait(
            &mut fleet,
            "lab-1 healed and eu-1's drift reported",
            |f, t| {
                greeting(f, "lab-1").as_deref() == Some(GIT_GREETING)
                    && target(t, "lab-1").is_some_and(|t| is_converged(t, &v1))
                    && (out_of_sync(target(t, "eu-1"))
                        || greeting(f, "eu-1").as_deref() == Some(GIT_GREETING))
            },
        )
        .await?;
        if greeting(&fleet, "eu-1").as_deref() == Some(EDITED) {
            let eu = target(&targets, "eu-1").context("eu-1's Target")?;
            ensure!(
                eu.resources
                    .iter()
                    .any(|r| r.name == "hello-config" && r.message.contains("greeting")),
                "the drift is reported on the object: {:?}",
                eu.resources
            );
            break;
        }
        ensure!(
            attempts < 3,
            "eu-1's drift was corrected {attempts} times while the freeze suspends self-heal:\n{}",
            describe(&targets)
        );
    }
    // lab-1 is drifted and healed once more, and eu-1 still has the edit after that.
    edit(&fleet, "lab-1").await?;
    wait(&mut fleet, "lab-1 healed again", |f, t| {
        greeting(f, "lab-1").as_deref() == Some(GIT_GREETING)
            && target(t, "lab-1").is_some_and(|t| is_converged(t, &v1))
    })
    .await?;
    ensure!(
        greeting(&fleet, "eu-1").as_deref() == Some(EDITED),
        "eu-1 was healed while held by a --no-self-heal freeze"
    );
    let targets = fleet.status("hello").await?;
    ensure!(
        out_of_sync(target(&targets, "eu-1")),
        "eu-1 says OutOfSync:\n{}",
        describe(&targets)
    );

    // The freeze is deleted: eu-1 self-heals again, and says nothing about it any more.
    fleet.cli(&["freeze", "delete", "maint"]).await?;
    wait(&mut fleet, "eu-1 healed after the freeze", |f, t| {
        greeting(f, "eu-1").as_deref() == Some(GIT_GREETING)
            && spoke_self_heals(f, "eu-1") == Some(true)
            && target(t, "eu-1").is_some_and(|t| is_converged(t, &v1) && t.held.is_empty())
    })
    .await?;

    fleet.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_deny_window_without_self_heal_leaves_drift_until_it_is_gone() -> anyhow::Result<()>
{
    let mut fleet = Fleet::start(FleetOptions::new(clusters())).await?;
    fleet.git.write("apps/hello/configmap.yaml", CONFIGMAP)?;
    fleet.git.write("apps/hello/deployment.yaml", DEPLOYMENT)?;
    let v1 = fleet.git.commit("v1")?;
    let repo = fleet.repo_yaml("platform");
    fleet.apply_yaml(&format!("{repo}---\n{APP}")).await?;
    fleet.wait_converged("hello", &v1, 2, DEADLINE).await?;

    // The window comes with the App: open now, on eu-1 only.
    fleet
        .apply_yaml(&format!("{repo}---\n{APP_WITH_WINDOW}"))
        .await?;
    let why = "self-heal suspended by deny window '* * * * *' (1h, UTC) of App hello";
    wait(&mut fleet, "eu-1's self-heal suspended", |f, t| {
        spoke_self_heals(f, "eu-1") == Some(false)
            && target(t, "eu-1").is_some_and(|t| t.held == why)
    })
    .await?;
    ensure!(spoke_self_heals(&fleet, "lab-1") == Some(true));

    // As with the freeze: lab-1's heal is the yardstick; an edit that raced the spoke's switch
    // is tried again.
    let mut attempts = 0;
    loop {
        attempts += 1;
        edit(&fleet, "eu-1").await?;
        edit(&fleet, "lab-1").await?;
        let targets = wait(
            &mut fleet,
            "lab-1 healed and eu-1's drift reported",
            |f, t| {
                greeting(f, "lab-1").as_deref() == Some(GIT_GREETING)
                    && target(t, "lab-1").is_some_and(|t| is_converged(t, &v1))
                    && (out_of_sync(target(t, "eu-1"))
                        || greeting(f, "eu-1").as_deref() == Some(GIT_GREETING))
            },
        )
        .await?;
        if greeting(&fleet, "eu-1").as_deref() == Some(EDITED) {
            break;
        }
        ensure!(
            attempts < 3,
            "eu-1's drift was corrected {attempts} times while the window suspends self-heal:\n{}",
            describe(&targets)
        );
    }

    // The window is gone: eu-1 heals.
    fleet.apply_yaml(&format!("{repo}---\n{APP}")).await?;
    wait(&mut fleet, "eu-1 healed once the window is gone", |f, t| {
        greeting(f, "eu-1").as_deref() == Some(GIT_GREETING)
            && target(t, "eu-1").is_some_and(|t| is_converged(t, &v1) && t.held.is_empty())
    })
    .await?;

    fleet.shutdown().await;
    Ok(())
}
