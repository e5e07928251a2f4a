//! Change control end to end on kubesim (docs/change-control.md): a freeze holds a pushed
//! commit on every cluster (nothing is dispatched, the rollout says which freeze holds it and
//! until when), an admin's override lets one rollout through and is audited, the next commit is
//! held again, and a freeze's end releases it by itself; a Project's deny window that is open
//! by its schedule holds a commit until the window is gone; an App that depends on another
//! waits on each cluster until that App is healthy there, and a dependency that fails keeps it
//! waiting with the reason.
//!
//! Every wait polls the hub with a deadline and checks on every poll that no cluster was given
//! the held revision.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use gitfleet_e2e::harness::{
    ClusterSpec, Fleet, FleetOptions, describe, is_converged, until_async,
};
use gitfleet_proto::v1 as pb;

const DEADLINE: Duration = Duration::from_secs(90);
const CONFIGMAP: &str = include_str!("../demo/hello/configmap.yaml");
const DEPLOYMENT: &str = include_str!("../demo/hello/deployment.yaml");

fn clusters() -> Vec<ClusterSpec> {
    vec![
        ClusterSpec::new("eu-1").label("env", "prod"),
        ClusterSpec::new("eu-2").label("env", "prod"),
        ClusterSpec::new("lab-1").label("env", "dev"),
    ]
}

fn app_yaml(project: Option<&str>) -> String {
    let project = project.map_or(String::new(), |p| format!("  project: {p}\n"));
    format!(
        "apiVersion: gitfleet.dev/v1
kind: App
metadata: {{ name: hello }}
spec:
{project}  repo: platform
  path: apps/hello
  namespace: hello
  targets:
    - clusterSelector: {{}}
"
    )
}

fn project_yaml(windows: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1
kind: Project
metadata: {{ name: shop }}
spec:
  sourceRepos: [platform]
  destinations:
    - name: \"*\"
      namespaces: [hello]
{windows}"
    )
}

fn write_hello(fleet: &Fleet, greeting: &str) -> anyhow::Result<()> {
    fleet.git.write(
        "apps/hello/configmap.yaml",
        CONFIGMAP.replace("gitfleet, v1", &format!("gitfleet, {greeting}")),
    )?;
    fleet.git.write("apps/hello/deployment.yaml", DEPLOYMENT)?;
    Ok(())
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Polls until `done` holds, checking on every poll that no Target is given `held` (the
/// revision that must not be dispatched) while `held_until` (unix seconds; `i64::MAX`: for
/// the whole wait) has not passed.
async fn wait(
    fleet: &mut Fleet,
    what: &str,
    held: Option<(&str, i64)>,
    mut done: impl FnMut(&pb::RolloutStatus, &[pb::TargetStatus]) -> bool,
) -> anyhow::Result<pb::RolloutStatus> {
    let mut last = String::new();
    let found = until_async(what, DEADLINE, async || {
        let before = now_unix();
        let targets = fleet.status("hello").await?;
        if let Some((revision, until)) = held
            && before < until
        {
            for t in &targets {
                ensure!(
                    t.desired_revision != revision,
                    "{} was given {revision} while it is held:\n{}",
                    t.cluster,
                    describe(&targets)
                );
            }
        }
        match fleet.admin().rollout("hello").await {
            Ok(r) if done(&r, &targets) => Ok(Some(r)),
            Ok(r) => {
                last = format!(
                    "rollout #{} {}: {}\n{}",
                    r.number,
                    r.summary,
                    r.reason,
                    describe(&targets)
                );
                Ok(None)
            }
            Err(e) if e.to_string().contains("no rollout yet") => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
    .await;
    found.with_context(|| last.clone())
}

fn converged(targets: &[pb::TargetStatus], commit: &str) -> bool {
    targets.len() == 3 && targets.iter().all(|t| is_converged(t, commit))
}

/// Three clusters with hello at v1 everywhere (in Project `project` when given).
async fn fleet_at_v1(project: Option<&str>) -> anyhow::Result<(Fleet, String)> {
    let mut fleet = Fleet::start(FleetOptions::new(clusters())).await?;
    write_hello(&fleet, "v1")?;
    let v1 = fleet.git.commit("v1")?;
    let mut resources = format!("{}---\n{}", fleet.repo_yaml("platform"), app_yaml(project));
    if project.is_some() {
        resources = format!("{}---\n{resources}", project_yaml(""));
    }
    fleet.apply_yaml(&resources).await?;
    wait(&mut fleet, "v1 everywhere", None, |r, t| {
        r.summary == "complete" && converged(t, &v1)
    })
    .await?;
    Ok((fleet, v1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_holds_a_commit_everywhere_an_override_goes_through_and_its_end_releases()
-> anyhow::Result<()> {
    let (mut fleet, v1) = fleet_at_v1(None).await?;

    // 1. The freeze, then a commit: nothing is dispatched, the rollout says why.
    let out = fleet
        .cli(&[
            "freeze",
            "create",
            "campaign",
            "--app",
            "hello",
            "--for",
            "1h",
            "--reason",
            "holiday campaign",
        ])
        .await?;
    ensure!(out.starts_with("freeze campaign created"), "{out}");
    write_hello(&fleet, "v2")?;
    let v2 = fleet.git.commit("v2")?;
    let r = wait(
        &mut fleet,
        "v2 held by the freeze",
        Some((&v2, i64::MAX)),
        |r, _| r.revision == v2 && r.summary == "held",
    )
    .await?;
    ensure!(
        r.reason.contains("freeze campaign until ")
            && r.reason.contains("(admin: holiday campaign)"),
        "{}",
        r.reason
    );
    ensure!(
        r.next_check_at_unix > now_unix(),
        "wakes at the freeze's end: {r:?}"
    );
    let targets = fleet.status("hello").await?;
    ensure!(
        converged(&targets, &v1),
        "every cluster keeps v1:\n{}",
        describe(&targets)
    );
    ensure!(
        targets
            .iter()
            .all(|t| t.held.contains("freeze campaign until ")),
        "status says what holds each Target:\n{targets:?}"
    );
    let text = fleet.cli(&["status", "--app", "hello"]).await?;
    ensure!(text.contains("held: freeze campaign"), "{text}");
    let text = fleet.cli(&["rollout", "status", "hello"]).await?;
    ensure!(
        text.contains("HELD") && text.contains("freeze campaign"),
        "{text}"
    );
    let events = fleet.admin().events("hello", "", 0, 1000).await?;
    ensure!(
        events
            .iter()
            .any(|e| e.kind == "Held" && e.message.contains("freeze campaign")),
        "{events:?}"
    );

    // 2. The emergency: an admin's override lets v2 through the freeze, audited with the
    //    reason.
    let out = fleet
        .cli(&[
            "rollout",
            "start",
            "hello",
            "--override-freeze",
            "--reason",
            "INC-4411: payment API change",
        ])
        .await?;
    ensure!(
        out.contains("goes through freezes and sync windows"),
        "{out}"
    );
    wait(
        &mut fleet,
        "v2 everywhere through the freeze",
        None,
        |r, t| r.revision == v2 && r.summary == "complete" && converged(t, &v2),
    )
    .await?;
    let audit = fleet.admin().audit("", 0, 1000).await?;
    ensure!(
        audit
            .iter()
            .any(|e| e.action == "rollout start --override-freeze"
                && e.user == "admin"
                && e.outcome == "ok"
                && e.target == "App/hello"
                && e.message.contains("INC-4411")),
        "{audit:?}"
    );
    let events = fleet.admin().events("hello", "", 0, 1000).await?;
    ensure!(
        events
            .iter()
            .any(|e| e.kind == "Overridden" && e.by == "admin" && e.message.contains("INC-4411")),
        "{events:?}"
    );

    // 3. The override was for that rollout: the next commit is held again.
    write_hello(&fleet, "v3")?;
    let v3 = fleet.git.commit("v3")?;
    wait(
        &mut fleet,
        "v3 held again",
        Some((&v3, i64::MAX)),
        |r, _| r.revision == v3 && r.summary == "held",
    )
    .await?;

    // 4. A short freeze replaces the long one: v3 waits for its end, then rolls out by itself.
    let out = fleet
        .cli(&[
            "freeze",
            "create",
            "short",
            "--app",
            "hello",
            "--for",
            "8s",
            "--reason",
            "until soon",
            "-o",
            "json",
        ])
        .await?;
    let created: serde_json::Value = serde_json::from_str(&out)?;
    let until = humantime::parse_rfc3339(created["until"].as_str().unwrap_or(""))
        .context("the freeze's end")?
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let until = i64::try_from(until)?;
    fleet.cli(&["freeze", "delete", "campaign"]).await?;
    wait(
        &mut fleet,
        "v3 everywhere once the short freeze ends",
        Some((&v3, until)),
        |r, t| r.revision == v3 && r.summary == "complete" && converged(t, &v3),
    )
    .await?;
    ensure!(now_unix() >= until, "released at its end, not before");
    let events = fleet.admin().events("hello", "", 0, 1000).await?;
    ensure!(events.iter().any(|e| e.kind == "Released"), "{events:?}");
    fleet.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projects_deny_window_open_by_its_schedule_holds_a_commit() -> anyhow::Result<()> {
    let (mut fleet, v1) = fleet_at_v1(Some("shop")).await?;

    // Every minute, open for an hour: open now, whenever the test runs.
    let windows = "  syncWindows:
    - kind: deny
      schedule: \"* * * * *\"
      duration: 1h
      timeZone: Europe/Berlin
";
    fleet.apply_yaml(&project_yaml(windows)).await?;
    write_hello(&fleet, "v2")?;
    let v2 = fleet.git.commit("v2")?;
    let r = wait(
        &mut fleet,
        "v2 held by the deny window",
        Some((&v2, i64::MAX)),
        |r, _| r.revision == v2 && r.summary == "held",
    )
    .await?;
    ensure!(
        r.reason
            .contains("deny window '* * * * *' (1h, Europe/Berlin) of Project shop until "),
        "{}",
        r.reason
    );
    let targets = fleet.status("hello").await?;
    ensure!(converged(&targets, &v1), "{}", describe(&targets));

    // The window removed from the Project: v2 rolls out.
    fleet.apply_yaml(&project_yaml("")).await?;
    wait(
        &mut fleet,
        "v2 everywhere without the window",
        None,
        |r, t| r.revision == v2 && r.summary == "complete" && converged(t, &v2),
    )
    .await?;
    fleet.shutdown().await;
    Ok(())
}

const INGRESS_FAIL: &str = "commonAnnotations:\n  kubesim.gitfleet.dev/fail: \"true\"\n";

/// The platform's `ingress` App: a kustomize base and one overlay per cluster kind; on `lab`
/// clusters its Deployment fails when `lab_fails`.
fn write_ingress(fleet: &Fleet, lab_fails: bool) -> anyhow::Result<()> {
    let deployment = DEPLOYMENT
        .replace("hello", "ingress")
        .replace("name: ingress-config", "name: hello-config");
    fleet
        .git
        .write("apps/ingress/base/deployment.yaml", deployment)?;
    fleet.git.write(
        "apps/ingress/base/kustomization.yaml",
        "resources: [deployment.yaml]\n",
    )?;
    fleet.git.write(
        "apps/ingress/overlays/prod/kustomization.yaml",
        "resources: [../../base]\n",
    )?;
    let lab = if lab_fails { INGRESS_FAIL } else { "" };
    fleet.git.write(
        "apps/ingress/overlays/lab/kustomization.yaml",
        format!("resources: [../../base]\n{lab}"),
    )?;
    Ok(())
}

const INGRESS_APP: &str = "apiVersion: gitfleet.dev/v1
kind: App
metadata: { name: ingress }
spec:
  repo: platform
  path: apps/ingress
  namespace: ingress
  render: { type: kustomize, kustomize: { dir: overlays/prod } }
  customize:
    - clusterSelector: { matchLabels: { env: dev } }
      kustomize: { dir: overlays/lab }
  targets:
    - clusterSelector: {}
";

/// The state and detail of each cluster's Target in `app`'s rollout.
fn rollout_targets(r: &pb::RolloutStatus) -> Vec<(String, String, String)> {
    r.waves
        .iter()
        .flat_map(|w| &w.targets)
        .map(|t| (t.cluster.clone(), t.state.clone(), t.detail.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_waits_for_its_dependency_on_each_cluster_and_a_failing_one_keeps_it_waiting()
-> anyhow::Result<()> {
    let mut fleet = Fleet::start(FleetOptions::new(clusters())).await?;
    write_ingress(&fleet, true)?;
    write_hello(&fleet, "v1")?;
    let v1 = fleet.git.commit("v1: ingress, and hello on it")?;
    let hello = app_yaml(None).replace("  targets:\n", "  dependsOn: [ingress]\n  targets:\n");
    let resources = format!(
        "{}---\n{INGRESS_APP}---\n{hello}",
        fleet.repo_yaml("platform")
    );
    fleet.apply_yaml(&resources).await?;

    // ingress fails on lab-1 only: hello goes to eu-1 and eu-2, and waits on lab-1 with the
    // reason; lab-1 is never given hello.
    let waiting = format!("waits for ingress: Degraded at {}", &v1[..7]);
    let r = wait(&mut fleet, "hello on prod, lab-1 waiting", None, |r, t| {
        let lab_given = t
            .iter()
            .any(|t| t.cluster == "lab-1" && !t.desired_revision.is_empty());
        assert!(!lab_given, "lab-1 was given hello:\n{}", describe(t));
        let prod = t
            .iter()
            .filter(|t| t.cluster != "lab-1" && is_converged(t, &v1))
            .count();
        prod == 2
            && rollout_targets(r).iter().any(|(c, state, detail)| {
                c == "lab-1" && state == "held" && detail.contains(&waiting)
            })
    })
    .await?;
    ensure!(r.summary == "held", "{r:?}");
    let text = fleet.cli(&["rollout", "status", "hello"]).await?;
    ensure!(text.contains(&waiting), "{text}");
    let ingress = fleet.status("ingress").await?;
    ensure!(
        ingress
            .iter()
            .any(|t| t.cluster == "lab-1" && t.health == pb::HealthState::Degraded as i32),
        "{}",
        describe(&ingress)
    );

    // The fix of ingress, with a new hello: hello rolls out everywhere, lab-1 included, once
    // ingress is healthy at the new commit there.
    write_ingress(&fleet, false)?;
    write_hello(&fleet, "v2")?;
    let v2 = fleet.git.commit("v2: ingress fixed on lab")?;
    wait(&mut fleet, "hello at v2 everywhere", None, |r, t| {
        r.revision == v2 && r.summary == "complete" && converged(t, &v2)
    })
    .await?;
    let ingress = fleet.status("ingress").await?;
    ensure!(
        converged(&ingress, &v2),
        "ingress is healthy at v2 everywhere:\n{}",
        describe(&ingress)
    );
    fleet.shutdown().await;
    Ok(())
}
