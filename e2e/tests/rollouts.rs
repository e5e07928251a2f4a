//! Rollouts end to end on kubesim: twelve clusters in three waves (canary → eu → rest), real
//! spokes, the hub deciding each step from what they report.
//!
//! Every wait polls the hub and checks on every poll that no cluster outside the waves the
//! rollout has reached was ever given the revision being rolled out.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use gitfleet_e2e::harness::{ClusterSpec, Fleet, FleetOptions, describe, is_converged};
use gitfleet_proto::v1 as pb;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(90);
const CONFIGMAP: &str = include_str!("../demo/hello/configmap.yaml");
const DEPLOYMENT: &str = include_str!("../demo/hello/deployment.yaml");
const FAIL: &str = "  annotations:\n    kubesim.gitfleet.dev/fail: \"true\"\n";

fn clusters() -> Vec<ClusterSpec> {
    let mut out = vec![
        ClusterSpec::new("canary-1").label("ring", "canary"),
        ClusterSpec::new("canary-2").label("ring", "canary"),
    ];
    for i in 1..=5 {
        out.push(ClusterSpec::new(&format!("eu-{i}")).label("region", "eu"));
    }
    for i in 1..=5 {
        out.push(ClusterSpec::new(&format!("us-{i}")).label("region", "us"));
    }
    out
}

fn is_canary(cluster: &str) -> bool {
    cluster.starts_with("canary-")
}

fn app_yaml(on_failure: &str, min_healthy_for: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1
kind: App
metadata: {{ name: hello }}
spec:
  repo: platform
  path: apps/hello
  namespace: hello
  targets:
    - clusterSelector: {{}}
  rollout:
    minHealthyFor: {min_healthy_for}
    onFailure: {on_failure}
    waves:
      - name: canary
        clusterSelector: {{ matchLabels: {{ ring: canary }} }}
      - name: eu
        clusterSelector: {{ matchLabels: {{ region: eu }} }}
        maxUnavailable: 2
"
    )
}

/// The hello App at `greeting`; a failing Deployment when `fail`.
fn write_hello(fleet: &Fleet, greeting: &str, fail: bool) -> anyhow::Result<()> {
    fleet.git.write(
        "apps/hello/configmap.yaml",
        CONFIGMAP.replace("gitfleet, v1", &format!("gitfleet, {greeting}")),
    )?;
    let deployment = if fail {
        DEPLOYMENT.replacen("  name: hello\n", &format!("  name: hello\n{FAIL}"), 1)
    } else {
        DEPLOYMENT.to_owned()
    };
    fleet.git.write("apps/hello/deployment.yaml", deployment)?;
    Ok(())
}

async fn rollout(fleet: &mut Fleet) -> anyhow::Result<pb::RolloutStatus> {
    Ok(fleet.admin().rollout("hello").await?)
}

/// A revision that must not spread, and the clusters allowed to have it.
type Guard<'a> = (&'a str, fn(&str) -> bool);

/// Polls until `done` holds for the rollout, checking on every poll that no cluster outside
/// `allowed` has desired state at `guarded` (the revision that must not spread).
async fn wait_rollout(
    fleet: &mut Fleet,
    what: &str,
    guarded: Option<Guard<'_>>,
    mut done: impl FnMut(&pb::RolloutStatus, &[pb::TargetStatus]) -> bool,
) -> anyhow::Result<pb::RolloutStatus> {
    let start = Instant::now();
    loop {
        let targets = fleet.status("hello").await?;
        if let Some((revision, allowed)) = guarded {
            for t in &targets {
                ensure!(
                    allowed(&t.cluster) || t.desired_revision != revision,
                    "{} was given {revision}, outside the waves allowed:\n{}",
                    t.cluster,
                    describe(&targets)
                );
            }
        }
        let r = match fleet.admin().rollout("hello").await {
            Ok(r) => r,
            // Until the Repo's first fetch there is no rollout.
            Err(e) if e.to_string().contains("no rollout yet") && start.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if done(&r, &targets) {
            return Ok(r);
        }
        if start.elapsed() > DEADLINE {
            bail!(
                "timed out waiting for {what}; rollout #{} {}: {}\n{}",
                r.number,
                r.summary,
                r.reason,
                describe(&targets)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn all_converged(targets: &[pb::TargetStatus], commit: &str) -> bool {
    targets.len() == 12 && targets.iter().all(|t| is_converged(t, commit))
}

async fn events(fleet: &mut Fleet) -> anyhow::Result<Vec<pb::Event>> {
    Ok(fleet.admin().events("hello", "", 0, 10_000).await?)
}

/// Runs the CLI in-process against the fleet's hub; its output, and whether it succeeded.
async fn cli(fleet: &Fleet, args: &[&str]) -> (String, bool) {
    let config = fleet.hub().admin_config_path().display().to_string();
    let mut argv = vec!["gitfleet", "--config", config.as_str()];
    argv.extend_from_slice(args);
    let mut out = Vec::new();
    let result = gitfleet_cli::cli::run_args(argv, &mut out).await;
    let mut text = String::from_utf8_lossy(&out).into_owned();
    if let Err(e) = &result {
        text.push_str(&format!("error: {e}\n"));
    }
    (text, result.is_ok())
}

/// The clusters each `TargetsUpdated` event of rollout `number` gave the revision, in order.
fn updated_batches(events: &[pb::Event], number: u64) -> Vec<Vec<String>> {
    events
        .iter()
        .filter(|e| e.rollout == number && e.kind == "TargetsUpdated")
        .map(|e| {
            // "wave 2/3 eu: eu-1, eu-2 given abcdef1"
            let (_, rest) = e.message.split_once(": ").unwrap_or_default();
            let list = rest.rsplit_once(" given ").map(|(l, _)| l).unwrap_or(rest);
            list.split(", ").map(str::to_owned).collect()
        })
        .collect()
}

fn wave_of(cluster: &str) -> usize {
    if cluster.starts_with("canary-") {
        0
    } else if cluster.starts_with("eu-") {
        1
    } else {
        2
    }
}

/// Twelve clusters, the hello App at v1 in Git, and the Repo and App (with the given failure
/// policy and soak) applied: the first rollout starts.
async fn fleet_with_app(
    on_failure: &str,
    min_healthy_for: &str,
) -> anyhow::Result<(Fleet, String)> {
    let mut fleet = Fleet::start(FleetOptions::new(clusters())).await?;
    write_hello(&fleet, "v1", false)?;
    let v1 = fleet.git.commit("v1")?;
    let resources = format!(
        "{}---\n{}",
        fleet.repo_yaml("platform"),
        app_yaml(on_failure, min_healthy_for)
    );
    fleet.apply_yaml(&resources).await?;
    Ok((fleet, v1))
}

/// Starts the twelve clusters, rolls out v1 (the first rollout also goes wave by wave) and v2,
/// checking v2 moved wave by wave within the eu wave's batch size.
async fn fleet_at_v2(on_failure: &str) -> anyhow::Result<(Fleet, String)> {
    let (mut fleet, v1) = fleet_with_app(on_failure, "1s").await?;
    wait_rollout(&mut fleet, "rollout #1 complete", None, |r, t| {
        r.summary == "complete" && all_converged(t, &v1)
    })
    .await?;

    write_hello(&fleet, "v2", false)?;
    let v2 = fleet.git.commit("v2")?;
    let r = wait_rollout(&mut fleet, "rollout #2 to v2 complete", None, |r, t| {
        r.revision == v2 && r.summary == "complete" && all_converged(t, &v2)
    })
    .await?;
    ensure!(r.number == 2, "v2 is the second rollout: {r:?}");

    // Wave by wave: batches only ever name clusters of one wave, waves in order, eu at most 2
    // at a time.
    let batches = updated_batches(&events(&mut fleet).await?, 2);
    let waves: Vec<usize> = batches
        .iter()
        .map(|b| {
            let w = wave_of(&b[0]);
            assert!(
                b.iter().all(|c| wave_of(c) == w),
                "one wave per batch: {b:?}"
            );
            w
        })
        .collect();
    ensure!(
        waves.windows(2).all(|p| p[0] <= p[1]),
        "waves in order: {batches:?}"
    );
    ensure!(
        waves.first() == Some(&0) && waves.last() == Some(&2),
        "every wave updated: {batches:?}"
    );
    ensure!(
        batches
            .iter()
            .filter(|b| wave_of(&b[0]) == 1)
            .all(|b| b.len() <= 2),
        "eu's maxUnavailable 2: {batches:?}"
    );
    Ok((fleet, v2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_commit_stops_at_the_canaries_and_a_person_rolls_it_back() -> anyhow::Result<()> {
    let (mut fleet, v2) = fleet_at_v2("pause").await?;

    write_hello(&fleet, "v3", true)?;
    let v3 = fleet
        .git
        .commit("v3: a Deployment that never becomes available")?;
    let v3_guard = v3.clone();
    // The first failing canary pauses the rollout; the other fails on its own clock (under
    // load, a moment later): wait for the pause to name both.
    let paused = wait_rollout(
        &mut fleet,
        "rollout #3 paused at the canaries, both failed",
        Some((v3_guard.as_str(), is_canary)),
        |r, _| {
            r.revision == v3_guard
                && r.summary == "paused"
                && r.waves.first().is_some_and(|w| w.failed == 2)
        },
    )
    .await?;
    ensure!(paused.reason.contains("canary"), "{paused:?}");
    let canary = &paused.waves[0];
    ensure!(
        canary.failed == 2 && canary.targets.iter().all(|t| t.state == "failed"),
        "both canaries failed: {canary:?}"
    );
    ensure!(
        canary
            .targets
            .iter()
            .all(|t| t.detail.contains("Degraded") && t.detail.contains("hello")),
        "the reason names the workload: {canary:?}"
    );
    ensure!(paused.waves[1].updated == 0 && paused.waves[2].updated == 0);

    // What a person sees.
    let (text, ok) = cli(&fleet, &["rollout", "status", "hello"]).await;
    ensure!(ok, "{text}");
    ensure!(text.contains("PAUSED"), "{text}");
    ensure!(
        text.contains("canary-2") && text.contains("failed"),
        "{text}"
    );
    let (text, ok) = cli(&fleet, &["rollout", "status", "hello", "--watch"]).await;
    ensure!(
        !ok && text.contains("paused"),
        "--watch exits 1 on a pause: {text}"
    );

    // Commands that make no sense are refused with the reason.
    let (text, ok) = cli(&fleet, &["rollout", "promote", "nope"]).await;
    ensure!(!ok && text.contains("not found"), "{text}");

    // A person rolls back: both canaries return to v2, nothing else ever saw v3.
    let (text, ok) = cli(&fleet, &["rollout", "rollback", "hello"]).await;
    ensure!(ok, "{text}");
    let v2_guard = v2.clone();
    let back = wait_rollout(
        &mut fleet,
        "rolled back to v2",
        Some((v3.as_str(), is_canary)),
        |r, t| r.summary == "rolledBack" && all_converged(t, &v2_guard),
    )
    .await?;
    ensure!(back.number == 4 && back.kind == "rollback", "{back:?}");
    ensure!(back.rolled_back_from == v3, "{back:?}");

    // Git still points at v3: the hub does not try it again.
    let again = rollout(&mut fleet).await?;
    ensure!(again.number == 4 && again.git_revision == v3, "{again:?}");

    let (text, ok) = cli(&fleet, &["rollout", "history", "hello"]).await;
    ensure!(ok, "{text}");
    ensure!(text.contains("replaced by a rollback"), "{text}");
    ensure!(text.contains("rolled back"), "{text}");
    let (text, ok) = cli(&fleet, &["events", "hello", "--limit", "500"]).await;
    ensure!(ok, "{text}");
    for kind in [
        "NewRevision",
        "WaveStarted",
        "Failed",
        "Paused",
        "Degraded",
        "RollbackStarted",
    ] {
        ensure!(text.contains(kind), "events show {kind}: {text}");
    }
    ensure!(
        text.contains("admin"),
        "who rolled back is recorded: {text}"
    );
    fleet.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_on_failure_rollback_the_canaries_return_by_themselves() -> anyhow::Result<()> {
    let (mut fleet, v2) = fleet_at_v2("rollback").await?;

    write_hello(&fleet, "v3", true)?;
    let v3 = fleet
        .git
        .commit("v3: a Deployment that never becomes available")?;
    let v2_guard = v2.clone();
    let back = wait_rollout(
        &mut fleet,
        "rolled back to v2 by onFailure",
        Some((v3.as_str(), is_canary)),
        |r, t| r.summary == "rolledBack" && all_converged(t, &v2_guard),
    )
    .await?;
    ensure!(
        back.kind == "rollback" && back.rolled_back_from == v3,
        "{back:?}"
    );
    ensure!(back.rollback_by.contains("onFailure"), "{back:?}");

    // The canaries really ran v3 and really came back: their ConfigMaps say v2 again.
    for c in ["canary-1", "canary-2"] {
        let cm = fleet
            .kubesim
            .get_object(c, "v1", "ConfigMap", Some("hello"), "hello-config")
            .with_context(|| format!("{c}: configmap missing"))?;
        ensure!(
            cm.pointer("/data/greeting").and_then(|v| v.as_str())
                == Some("Hello from gitfleet, v2"),
            "{c}: {cm}"
        );
    }
    let history = fleet.admin().rollout_history("hello").await?;
    let outcomes: Vec<&str> = history.iter().map(|h| h.outcome.as_str()).collect();
    ensure!(
        outcomes
            == [
                "complete",
                "complete",
                "replaced by a rollback",
                "rolled back"
            ],
        "{outcomes:?}"
    );

    // The next commit rolls out as usual.
    write_hello(&fleet, "v4", false)?;
    let v4 = fleet.git.commit("v4: fixed")?;
    wait_rollout(&mut fleet, "v4 complete", None, |r, t| {
        r.revision == v4 && r.summary == "complete" && all_converged(t, &v4)
    })
    .await?;
    fleet.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_promote_steer_a_rollout() -> anyhow::Result<()> {
    // A long soak: only promote moves a wave on within the test's time.
    let (mut fleet, v1) = fleet_with_app("pause", "1h").await?;
    wait_rollout(&mut fleet, "canaries healthy, soaking", None, |r, t| {
        r.current_wave == 0
            && t.iter()
                .filter(|t| is_canary(&t.cluster))
                .all(|t| is_converged(t, &v1))
            && r.reason.contains("minHealthyFor")
    })
    .await?;

    let (text, ok) = cli(&fleet, &["rollout", "pause", "hello"]).await;
    ensure!(ok && text.contains("paused"), "{text}");
    let (text, ok) = cli(&fleet, &["rollout", "promote", "hello"]).await;
    ensure!(ok, "promote records the skip even while paused: {text}");
    let r = rollout(&mut fleet).await?;
    ensure!(r.summary == "paused" && r.current_wave == 0, "{r:?}");
    // The counts-only view for polling carries the same counts without the Targets.
    let counts = fleet.admin().rollout_counts("hello").await?;
    let strip = |r: &pb::RolloutStatus| {
        let mut r = r.clone();
        r.waves.iter_mut().for_each(|w| w.targets.clear());
        r
    };
    ensure!(
        counts == strip(&r) && r.waves.iter().any(|w| !w.targets.is_empty()),
        "{counts:?}\n{r:?}"
    );
    let t = fleet.status("hello").await?;
    ensure!(
        t.iter().all(|t| is_canary(&t.cluster)),
        "nobody outside the canaries while paused:\n{}",
        describe(&t)
    );

    let (text, ok) = cli(&fleet, &["rollout", "resume", "hello"]).await;
    ensure!(ok, "{text}");
    wait_rollout(&mut fleet, "the eu wave starts", None, |r, _| {
        r.current_wave == 1
    })
    .await?;
    // Each wave soaks for an hour; promote walks it through.
    for wave in 1..3 {
        wait_rollout(&mut fleet, "the wave soaking", None, |r, _| {
            r.current_wave == wave && r.reason.contains("minHealthyFor")
        })
        .await?;
        let (text, ok) = cli(&fleet, &["rollout", "promote", "hello"]).await;
        ensure!(ok, "{text}");
    }
    wait_rollout(&mut fleet, "rollout #1 complete", None, |r, t| {
        r.summary == "complete" && all_converged(t, &v1)
    })
    .await?;
    let (text, ok) = cli(&fleet, &["rollout", "pause", "hello"]).await;
    ensure!(!ok && text.contains("nothing to pause"), "{text}");

    // App controls: suspend stops syncing and holds new commits; sync forces a new pass.
    let (text, ok) = cli(&fleet, &["app", "suspend", "hello"]).await;
    ensure!(ok && text.contains("suspended"), "{text}");
    write_hello(&fleet, "v2", false)?;
    let v2 = fleet.git.commit("v2 while suspended")?;
    fleet
        .wait_for("hello", "every Target reported suspended", DEADLINE, |s| {
            s.len() == 12 && s.iter().all(|t| t.message.contains("suspended"))
        })
        .await?;
    let v2_seen = v2.clone();
    let r = wait_rollout(&mut fleet, "the hub sees v2", None, |r, _| {
        r.git_revision == v2_seen
    })
    .await?;
    ensure!(
        r.suspended && r.number == 1,
        "a suspended App holds new commits: {r:?}"
    );
    let (text, ok) = cli(&fleet, &["app", "sync", "hello"]).await;
    ensure!(!ok && text.contains("suspended"), "{text}");
    let (text, ok) = cli(&fleet, &["app", "resume", "hello"]).await;
    ensure!(ok, "{text}");
    wait_rollout(&mut fleet, "v2 rolls out after resume", None, |r, _| {
        r.revision == v2 && r.number == 2
    })
    .await?;
    let (text, ok) = cli(&fleet, &["app", "sync", "hello", "--cluster", "canary-1"]).await;
    ensure!(ok && text.contains("canary-1"), "{text}");
    // The spoke really synced again: a new Synced event of canary-1 after the request.
    let requested = events(&mut fleet)
        .await?
        .into_iter()
        .rfind(|e| e.kind == "SyncRequested")
        .context("the request is an event")?;
    let start = Instant::now();
    loop {
        let synced = events(&mut fleet)
            .await?
            .into_iter()
            .any(|e| e.id > requested.id && e.cluster == "canary-1" && e.kind == "Synced");
        if synced {
            break;
        }
        ensure!(start.elapsed() < DEADLINE, "canary-1 did not sync again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fleet.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_carries_on_where_it_was_after_the_hub_restarts() -> anyhow::Result<()> {
    let (mut fleet, v1) = fleet_with_app("pause", "2s").await?;
    wait_rollout(&mut fleet, "rollout #1 complete", None, |r, t| {
        r.summary == "complete" && all_converged(t, &v1)
    })
    .await?;

    write_hello(&fleet, "v2", false)?;
    let v2 = fleet.git.commit("v2")?;
    let before = wait_rollout(&mut fleet, "rollout #2 in the eu wave", None, |r, _| {
        r.revision == v2 && r.current_wave == 1
    })
    .await?;
    let events_before = events(&mut fleet).await?;
    fleet.crash_and_restart_hub().await?;

    let after = rollout(&mut fleet).await?;
    ensure!(
        after.number == before.number && after.current_wave >= before.current_wave,
        "the restarted hub carries on: before {before:?}, after {after:?}"
    );
    wait_rollout(&mut fleet, "rollout #2 complete", None, |r, t| {
        r.number == 2 && r.summary == "complete" && all_converged(t, &v2)
    })
    .await?;
    let all = events(&mut fleet).await?;
    ensure!(
        all.len() > events_before.len()
            && all[..events_before.len()]
                .iter()
                .zip(&events_before)
                .all(|(a, b)| a.id == b.id),
        "events before the restart are kept in order"
    );
    let restarted = all
        .iter()
        .filter(|e| e.rollout == 2 && e.kind == "Started")
        .count();
    ensure!(
        restarted == 1,
        "rollout #2 started once, not again: {all:?}"
    );
    // Clusters of the canary wave were never given anything again after the restart.
    let batches = updated_batches(&all, 2);
    let canary_batches = batches.iter().filter(|b| wave_of(&b[0]) == 0).count();
    ensure!(canary_batches == 1, "{batches:?}");
    fleet.shutdown().await;
    Ok(())
}
