//! `gitfleet diff --live` end to end on kubesim, through the real hub and spokes: an App is
//! applied and healthy on two clusters; a freeze holds the next commit (it changes the
//! Deployment's replicas and a Secret's value, adds a ConfigMap and removes another), so the
//! hub knows the commit but dispatches it nowhere. The diff shows the change, the creation and
//! the prune, masks the Secret's values, changes nothing in the cluster (every object's
//! resourceVersion as it was), and names the cluster whose spoke is offline.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use gitfleet_cli::cli::CliError;
use gitfleet_e2e::harness::{
    ClusterSpec, Fleet, FleetOptions, describe, is_converged, until_async,
};

const DEADLINE: Duration = Duration::from_secs(90);
const CONFIGMAP: &str = include_str!("../demo/hello/configmap.yaml");
const DEPLOYMENT: &str = include_str!("../demo/hello/deployment.yaml");

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

/// base64 of the Secret's values: neither may ever show in a diff.
const PASSWORD_V1: &str = "aHVudGVyMg=="; // hunter2
const PASSWORD_V2: &str = "Y29ycmVjdC1ob3JzZQ=="; // correct-horse

fn secret(password: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ntype: Opaque\ndata:\n  password: {password}\n  user: YWRh\n"
    )
}

fn configmap(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n")
}

/// Runs the CLI in-process as the admin: what it printed, and how it ended.
async fn diff(fleet: &Fleet, args: &[&str]) -> (String, Result<(), CliError>) {
    let config = fleet.hub().admin_config_path().display().to_string();
    let mut argv = vec!["gitfleet", "--config", config.as_str(), "diff", "--live"];
    argv.extend_from_slice(args);
    let mut out = Vec::new();
    let result = gitfleet_cli::cli::run_args(argv, &mut out).await;
    (String::from_utf8_lossy(&out).into_owned(), result)
}

/// Every object of `cluster` by (apiVersion, kind, namespace, name) → resourceVersion.
fn versions(fleet: &Fleet, cluster: &str) -> BTreeMap<String, String> {
    fleet
        .kubesim
        .list_objects(cluster)
        .iter()
        .map(|o| {
            let text = |p: &str| o.pointer(p).and_then(|v| v.as_str()).unwrap_or_default();
            (
                format!(
                    "{} {} {}/{}",
                    text("/apiVersion"),
                    text("/kind"),
                    text("/metadata/namespace"),
                    text("/metadata/name")
                ),
                text("/metadata/resourceVersion").to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_live_shows_a_held_commit_masks_secrets_and_changes_nothing() -> anyhow::Result<()> {
    let mut fleet = Fleet::start(FleetOptions::new(vec![
        ClusterSpec::new("eu-1"),
        ClusterSpec::new("eu-2"),
    ]))
    .await?;
    fleet.git.write("apps/hello/configmap.yaml", CONFIGMAP)?;
    fleet.git.write("apps/hello/deployment.yaml", DEPLOYMENT)?;
    fleet
        .git
        .write("apps/hello/secret.yaml", secret(PASSWORD_V1))?;
    fleet
        .git
        .write("apps/hello/old.yaml", configmap("old-config"))?;
    let v1 = fleet.git.commit("v1")?;
    fleet
        .apply_yaml(&format!("{}---\n{APP}", fleet.repo_yaml("platform")))
        .await?;
    fleet.wait_converged("hello", &v1, 2, DEADLINE).await?;

    // Nothing differs from what runs.
    let (out, result) = diff(&fleet, &["hello"]).await;
    ensure!(result.is_ok(), "{result:?}\n{out}");
    ensure!(
        out.contains("cluster eu-1: 0 to create, 0 to change, 0 to prune")
            && out.contains("cluster eu-2: 0 to create, 0 to change, 0 to prune"),
        "{out}"
    );

    // The next commit, held by a freeze: the hub knows it, no cluster is given it.
    fleet
        .cli(&[
            "freeze", "create", "hold", "--app", "hello", "--for", "1h", "--reason", "review",
        ])
        .await?;
    fleet.git.write(
        "apps/hello/deployment.yaml",
        DEPLOYMENT.replace("replicas: 2", "replicas: 5"),
    )?;
    fleet
        .git
        .write("apps/hello/secret.yaml", secret(PASSWORD_V2))?;
    fleet
        .git
        .write("apps/hello/new.yaml", configmap("new-config"))?;
    fleet.git.remove("apps/hello/old.yaml")?;
    let v2 = fleet.git.commit("v2")?;
    until_async("the hub to hold v2", DEADLINE, async || {
        let r = fleet.admin().rollout("hello").await?;
        Ok((r.revision == v2 && r.summary == "held").then_some(()))
    })
    .await?;

    // eu-2's spoke goes away; the hub sees it gone.
    let spoke = fleet.spokes.remove("eu-2").context("eu-2's spoke")?;
    spoke.shutdown().await;
    until_async("the hub to see eu-2 offline", DEADLINE, async || {
        let clusters = fleet.admin().list_clusters().await?;
        Ok(clusters
            .iter()
            .any(|c| c.name == "eu-2" && !c.connected)
            .then_some(()))
    })
    .await?;

    let before = versions(&fleet, "eu-1");
    let (out, result) = diff(&fleet, &["hello"]).await;
    // eu-2 could not be compared: exit 2, after printing eu-1's diff.
    let error = result.expect_err("an offline cluster is an error");
    ensure!(error.exit_code() == 2, "{error}\n{out}");
    ensure!(
        error
            .to_string()
            .contains("eu-2 (offline: the spoke is not connected"),
        "{error}"
    );
    ensure!(
        out.contains(&format!("=== cluster eu-1: app hello at {}", &v2[..8])),
        "{out}"
    );
    ensure!(
        out.contains("deployment/hello -n hello would be changed")
            && out.contains("\n-  replicas: 2\n")
            && out.contains("\n+  replicas: 5\n"),
        "{out}"
    );
    ensure!(
        out.contains("configmap/new-config -n hello would be created"),
        "{out}"
    );
    ensure!(
        out.contains("configmap/old-config -n hello would be pruned"),
        "{out}"
    );
    ensure!(out.contains("secret/db -n hello would be changed"), "{out}");
    ensure!(
        out.contains("password: \"*** (before)\"") && out.contains("password: \"*** (after)\""),
        "{out}"
    );
    for value in [PASSWORD_V1, PASSWORD_V2, "YWRh", "hunter2", "correct-horse"] {
        ensure!(!out.contains(value), "{value} shows in the diff:\n{out}");
    }
    ensure!(
        !out.contains("configmap/hello-config"),
        "an object the commit leaves alone is not listed: {out}"
    );
    ensure!(
        out.contains("cluster eu-1: 1 to create, 2 to change, 1 to prune"),
        "{out}"
    );
    ensure!(
        out.contains("=== cluster eu-2")
            && out.contains("error: offline: the spoke is not connected"),
        "{out}"
    );
    // Nothing in the cluster changed, and nothing was dispatched.
    ensure!(versions(&fleet, "eu-1") == before, "the diff changed eu-1");
    let targets = fleet.status("hello").await?;
    ensure!(
        targets.iter().all(|t| is_converged(t, &v1)),
        "{}",
        describe(&targets)
    );

    // One cluster, as JSON: exit 1 (differences).
    let (out, result) = diff(&fleet, &["hello", "--cluster", "eu-1", "-o", "json"]).await;
    let error = result.expect_err("differences");
    ensure!(error.exit_code() == 1 && error.is_reported(), "{error}");
    let json: serde_json::Value = serde_json::from_str(&out).with_context(|| out.clone())?;
    ensure!(json["revision"] == v2.as_str(), "{json}");
    ensure!(json["differences"] == 4, "{json}");
    let clusters = json["clusters"].as_array().context("clusters")?;
    ensure!(
        clusters.len() == 1 && clusters[0]["cluster"] == "eu-1",
        "{json}"
    );
    let action_of = |name: &str| {
        clusters[0]["objects"]
            .as_array()
            .and_then(|o| o.iter().find(|o| o["name"] == name))
            .map(|o| o["action"].clone())
    };
    ensure!(
        action_of("hello-config") == Some("unchanged".into()),
        "{json}"
    );
    ensure!(action_of("new-config") == Some("create".into()), "{json}");
    ensure!(action_of("old-config") == Some("prune".into()), "{json}");
    ensure!(
        !out.contains(PASSWORD_V2) && !out.contains(PASSWORD_V1),
        "{out}"
    );

    // At the running commit: nothing would change.
    let (out, result) = diff(&fleet, &["hello", "--cluster", "eu-1", "--revision", &v1]).await;
    ensure!(result.is_ok(), "{result:?}\n{out}");
    ensure!(
        out.contains("cluster eu-1: 0 to create, 0 to change, 0 to prune"),
        "{out}"
    );
    ensure!(versions(&fleet, "eu-1") == before, "the diff changed eu-1");

    // A file that does not parse is named, and the diff is an error (exit 2); so is a commit
    // the spoke cannot fetch, naming the App.
    fleet
        .git
        .write("apps/hello/broken.yaml", "kind: ConfigMap\nmetadata: [\n")?;
    let v3 = fleet.git.commit("v3: broken")?;
    let (out, result) = diff(&fleet, &["hello", "--cluster", "eu-1", "--revision", &v3]).await;
    let error = result.expect_err("a file that does not parse");
    ensure!(
        error.exit_code() == 2 && error.to_string().contains("eu-1 (1 object(s) failed)"),
        "{error}\n{out}"
    );
    ensure!(out.contains("apps/hello/broken.yaml failed: "), "{out}");
    ensure!(out.contains(", 1 failed"), "{out}");
    let missing = "0".repeat(40);
    let (out, result) = diff(
        &fleet,
        &["hello", "--cluster", "eu-1", "--revision", &missing],
    )
    .await;
    let error = result.expect_err("a commit that does not exist");
    ensure!(error.exit_code() == 2, "{error}\n{out}");
    ensure!(
        out.contains("error: App \"hello\" at 00000000: fetch failed"),
        "{out}"
    );
    ensure!(versions(&fleet, "eu-1") == before, "the diff changed eu-1");

    // Bad input: clear errors, exit 2.
    for (args, expected) in [
        (vec!["nope"], "app \"nope\" not found"),
        (
            vec!["hello", "--cluster", "mars"],
            "no Target on cluster \"mars\"",
        ),
        (
            vec!["hello", "--revision", "abc"],
            "\"abc\" is not a commit id",
        ),
    ] {
        let (out, result) = diff(&fleet, &args).await;
        let error = result.expect_err("refused");
        ensure!(
            error.exit_code() == 2 && error.to_string().contains(expected),
            "{args:?}: {error}\n{out}"
        );
    }
    fleet.shutdown().await;
    Ok(())
}
