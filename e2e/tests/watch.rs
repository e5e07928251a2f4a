//! Live reads end to end: `gitfleet events --watch -o json`, run as a child process, prints an
//! event that a later change causes, one JSON object per line; when the hub restarts under it,
//! it dials again and carries on from the last event it printed, missing none and printing
//! none twice.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use gitfleet_e2e::harness::{ClusterSpec, Fleet, FleetOptions, until, until_async};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

const DEADLINE: Duration = Duration::from_secs(60);

const CONFIGMAP: &str = include_str!("../demo/hello/configmap.yaml");

fn app_yaml() -> &'static str {
    "apiVersion: gitfleet.dev/v1\nkind: App\nmetadata: { name: hello }\nspec:\n  repo: platform\n  path: apps/hello\n  namespace: hello\n  targets:\n    - clusterSelector: { matchLabels: { env: dev } }\n"
}

/// Collects the lines `from` prints, as they come.
fn collect(from: impl AsyncRead + Unpin + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    tokio::spawn(async move {
        let mut reader = BufReader::new(from).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().expect("not poisoned").push(line);
        }
    });
    lines
}

/// The events printed so far, each line parsed as one JSON object.
fn printed(lines: &Mutex<Vec<String>>) -> anyhow::Result<Vec<serde_json::Value>> {
    lines
        .lock()
        .expect("not poisoned")
        .iter()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not one JSON object: {l:?}")))
        .collect()
}

fn has_kind(events: &[serde_json::Value], kind: &str) -> bool {
    events.iter().any(|e| e["kind"] == kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_watch_prints_later_events_and_resumes_across_a_hub_restart() -> anyhow::Result<()> {
    let mut fleet = Fleet::start(FleetOptions::new(vec![
        ClusterSpec::new("dev-a").label("env", "dev"),
    ]))
    .await?;
    fleet.git.write("apps/hello/configmap.yaml", CONFIGMAP)?;
    let v1 = fleet.git.commit("hello v1")?;
    let yaml = format!("{}---\n{}", fleet.repo_yaml("platform"), app_yaml());
    fleet.apply_yaml(&yaml).await?;
    fleet.wait_converged("hello", &v1, 1, DEADLINE).await?;

    let config = fleet.hub().admin_config_path().to_owned();
    let mut child = tokio::process::Command::new(Path::new(env!("CARGO_BIN_EXE_gitfleet-cli-e2e")))
        .arg("--config")
        .arg(&config)
        .args(["events", "hello", "--watch", "-o", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running gitfleet events --watch")?;
    let stdout = collect(child.stdout.take().context("stdout")?);
    let stderr = collect(child.stderr.take().context("stderr")?);
    let what = |w: &str| format!("{w}; stderr: {:?}", stderr.lock().expect("not poisoned"));

    // What happened so far: the App synced.
    until(&what("the events so far"), DEADLINE, || {
        Ok(has_kind(&printed(&stdout)?, "Synced").then_some(()))
    })
    .await?;

    // A change made now is printed as it happens.
    fleet.cli(&["app", "suspend", "hello"]).await?;
    let suspended = until(&what("the suspension printed"), DEADLINE, || {
        let events = printed(&stdout)?;
        Ok(events.into_iter().find(|e| e["kind"] == "Suspended"))
    })
    .await?;
    ensure!(suspended["by"] == "admin", "{suspended}");
    ensure!(suspended["app"] == "hello", "{suspended}");

    // The hub restarts: the stream drops, the CLI dials again with the last id it printed.
    let addr = fleet.stop_hub().await;
    fleet.start_hub_at(addr).await?;
    fleet.cli(&["app", "resume", "hello"]).await?;
    until(
        &what("the resumption printed after the restart"),
        DEADLINE,
        || Ok(has_kind(&printed(&stdout)?, "Resumed").then_some(())),
    )
    .await?;

    // Exactly the hub's events of hello, in order: none lost, none twice.
    let listed: serde_json::Value = serde_json::from_str(
        &fleet
            .cli(&["events", "hello", "--limit", "10000", "-o", "json"])
            .await?,
    )?;
    let want: Vec<u64> = listed["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter_map(|e| e["id"].as_u64())
        .collect();
    let got = until_async(&what("every event printed"), DEADLINE, async || {
        let got: Vec<u64> = printed(&stdout)?
            .iter()
            .filter_map(|e| e["id"].as_u64())
            .collect();
        Ok((got.len() >= want.len()).then_some(got))
    })
    .await?;
    ensure!(got == want, "printed {got:?}, the hub has {want:?}");
    ensure!(
        stderr
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|l| l.contains("watching again")),
        "the CLI said it reconnected"
    );
    child.kill().await?;
    fleet.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_wait_follows_a_new_commit_until_every_target_runs_it() -> anyhow::Result<()> {
    let mut fleet = Fleet::start(FleetOptions::new(vec![
        ClusterSpec::new("dev-a").label("env", "dev"),
        ClusterSpec::new("dev-b").label("env", "dev"),
    ]))
    .await?;
    fleet.git.write("apps/hello/configmap.yaml", CONFIGMAP)?;
    let v1 = fleet.git.commit("hello v1")?;
    let yaml = format!("{}---\n{}", fleet.repo_yaml("platform"), app_yaml());
    fleet.apply_yaml(&yaml).await?;
    fleet.wait_converged("hello", &v1, 2, DEADLINE).await?;

    fleet.git.write(
        "apps/hello/configmap.yaml",
        CONFIGMAP.replace("gitfleet, v1", "gitfleet, v2").as_bytes(),
    )?;
    let v2 = fleet.git.commit("hello v2")?;
    let out = tokio::time::timeout(
        DEADLINE,
        fleet.cli(&[
            "status",
            "--app",
            "hello",
            "--watch",
            "--wait",
            "--revision",
            &v2,
            "-o",
            "json",
        ]),
    )
    .await
    .context("status --watch --wait in time")??;
    // One Target per line: first both as they were, then each change, the last of each at v2.
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("JSON Lines: {out}"))?;
    ensure!(lines.len() >= 2, "{out}");
    ensure!(lines.iter().all(|l| l["app"] == "hello"), "{out}");
    for cluster in ["dev-a", "dev-b"] {
        let last = lines
            .iter()
            .rev()
            .find(|l| l["cluster"] == cluster)
            .with_context(|| format!("{cluster} printed: {out}"))?;
        ensure!(last["appliedRevision"] == v2.as_str(), "{cluster}: {last}");
        ensure!(
            last["sync"] == "Synced" && last["health"] == "Healthy",
            "{last}"
        );
    }
    fleet.shutdown().await;
    Ok(())
}
