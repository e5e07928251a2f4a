//! The Kubernetes-native API (docs/kube-api.md) end to end: a kubesim instance of its own is the
//! hub's management cluster (distinct from the spokes' clusters), the real `kubectl` applies
//! the chart's CRDs and a Project, a Repo and an App there; the App rolls out to the spokes and
//! `kubectl get apps.gitfleet.dev` shows it Healthy at its revision. A refused spec shows
//! Ready=False naming the field; a Cluster object's labels move the App; `gitfleet cluster
//! label` shows in the object; `gitfleet apply` and `delete` of the App are refused; deleting
//! the App object deletes the App from the hub.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use gitfleet_e2e::harness::{ClusterSpec, Fleet, FleetOptions, short, until_async};
use gitfleet_hub::kube_api::KubeApiConfig;
use gitfleet_hub::resources::Kind;
use gitfleet_kubesim::{Kubesim, KubesimConfig};
use tokio::io::AsyncWriteExt;

const DEADLINE: Duration = Duration::from_secs(60);
const NS: &str = "gitfleet";
const CRDS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/gitfleet-hub/crds/gitfleet.dev.yaml"
);

const CONFIGMAP: &str = include_str!("../demo/hello/configmap.yaml");
const DEPLOYMENT: &str = include_str!("../demo/hello/deployment.yaml");
const SERVICE: &str = include_str!("../demo/hello/service.yaml");

/// The real kubectl against the management cluster.
struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("kubectl is on PATH")?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).await?;
            drop(pipe);
        }
        let out = child.wait_with_output().await?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}{}",
                args.join(" "),
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    async fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        self.run(&["apply", "-n", NS, "-f", "-"], Some(yaml)).await
    }

    /// `kubectl get RESOURCE` as rows of (column → cell), from its table.
    async fn table(&self, resource: &str) -> anyhow::Result<Vec<Vec<(String, String)>>> {
        let text = self.run(&["get", resource, "-n", NS], None).await?;
        Ok(parse_table(&text))
    }

    async fn jsonpath(&self, resource: &str, name: &str, path: &str) -> anyhow::Result<String> {
        self.run(
            &[
                "get",
                resource,
                name,
                "-n",
                NS,
                "-o",
                &format!("jsonpath={path}"),
            ],
            None,
        )
        .await
    }
}

/// kubectl's table: the header's column starts cut every row.
fn parse_table(text: &str) -> Vec<Vec<(String, String)>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    // A column starts after two spaces or more ("LAST CONTACT" is one column).
    let mut starts: Vec<usize> = header
        .char_indices()
        .filter(|&(i, c)| c != ' ' && (i == 0 || header[..i].ends_with("  ")))
        .map(|(i, _)| i)
        .collect();
    if starts.first() != Some(&0) {
        starts.insert(0, 0);
    }
    let cut = |line: &str, k: usize| -> String {
        let from = starts[k].min(line.len());
        let to = starts
            .get(k + 1)
            .copied()
            .unwrap_or(line.len())
            .min(line.len());
        line.get(from..to).unwrap_or("").trim().to_owned()
    };
    let names: Vec<String> = (0..starts.len()).map(|k| cut(header, k)).collect();
    lines
        .map(|line| {
            names
                .iter()
                .enumerate()
                .map(|(k, n)| (n.clone(), cut(line, k)))
                .collect()
        })
        .collect()
}

fn cell<'a>(row: &'a [(String, String)], column: &str) -> &'a str {
    row.iter()
        .find(|(c, _)| c == column)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

fn row<'a>(rows: &'a [Vec<(String, String)>], name: &str) -> Option<&'a [(String, String)]> {
    rows.iter()
        .find(|r| cell(r, "NAME") == name)
        .map(Vec::as_slice)
}

fn app_object(name: &str, path: &str, env: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1\nkind: App\nmetadata:\n  name: {name}\nspec:\n  project: team-a\n  repo: platform\n  path: {path}\n  namespace: {name}\n  targets:\n    - clusterSelector: {{ matchLabels: {{ env: {env} }} }}\n"
    )
}

async fn hub_has(fleet: &Fleet, kind: Kind, name: &str) -> anyhow::Result<bool> {
    Ok(fleet.hub().engine().exists(kind, name)?)
}

fn write_kubeconfig(dir: &Path, yaml: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("management.kubeconfig");
    std::fs::write(&path, yaml)?;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_in_the_management_cluster_drive_the_fleet() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // The management cluster: a kubesim of its own, apart from the spokes' clusters.
    let management = Kubesim::start(KubesimConfig::new(["management"])).await?;
    let kubeconfig = write_kubeconfig(dir.path(), &management.kubeconfig_yaml("management"))?;
    let kubectl = Kubectl {
        kubeconfig: kubeconfig.clone(),
        cache: dir.path().join("kubectl-cache"),
    };
    kubectl.run(&["create", "namespace", NS], None).await?;
    kubectl
        .run(&["apply", "--server-side", "-f", CRDS], None)
        .await?;
    kubectl
        .run(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                "crd/apps.gitfleet.dev",
                "crd/repos.gitfleet.dev",
                "crd/projects.gitfleet.dev",
                "crd/clusters.gitfleet.dev",
            ],
            None,
        )
        .await?;

    let mut options = FleetOptions::new(vec![
        ClusterSpec::new("prod-a").label("env", "prod"),
        ClusterSpec::new("prod-b").label("env", "prod"),
        ClusterSpec::new("dev-a").label("env", "dev"),
    ]);
    options.kube_api = Some(KubeApiConfig {
        kubeconfig: Some(kubeconfig),
        namespace: Some(NS.to_owned()),
        // Longer than the test: statuses and Cluster objects follow the hub's changes and the
        // objects' edits as they happen, not the resync.
        resync: Duration::from_secs(30),
    });
    let mut fleet = Fleet::start(options).await?;
    fleet.git.write("apps/hello/configmap.yaml", CONFIGMAP)?;
    fleet.git.write("apps/hello/deployment.yaml", DEPLOYMENT)?;
    fleet.git.write("apps/hello/service.yaml", SERVICE)?;
    let v1 = fleet.git.commit("hello v1")?;

    // A Project, a Repo and an App, declared in the management cluster.
    let project = "apiVersion: gitfleet.dev/v1\nkind: Project\nmetadata:\n  name: team-a\nspec:\n  sourceRepos: [platform]\n  destinations:\n    - clusterSelector: { matchExpressions: [ { key: env, operator: In, values: [prod, dev] } ] }\n      namespaces: [hello, broken]\n";
    let repo = fleet.repo_yaml("platform");
    let out = kubectl
        .apply(&format!(
            "{project}---\n{repo}---\n{}",
            app_object("hello", "apps/hello", "prod")
        ))
        .await?;
    assert!(out.contains("app.gitfleet.dev/hello created"), "{out}");

    fleet
        .wait_converged("hello", &v1, 2, DEADLINE)
        .await
        .context("the App of the custom resource rolls out to the env=prod clusters")?;
    let rows = until_async(
        "kubectl get apps.gitfleet.dev to show hello Healthy",
        DEADLINE,
        async || {
            let rows = kubectl.table("apps.gitfleet.dev").await?;
            let done = row(&rows, "hello").is_some_and(|r| {
                cell(r, "HEALTH") == "Healthy"
                    && cell(r, "SYNC") == "Synced"
                    && cell(r, "REVISION") == short(&v1)
            });
            Ok(done.then_some(rows))
        },
    )
    .await?;
    let hello = row(&rows, "hello").context("hello listed")?;
    assert_eq!(cell(hello, "REPO"), "platform", "{rows:?}");
    assert!(!cell(hello, "AGE").is_empty(), "{rows:?}");
    assert_eq!(
        kubectl
            .jsonpath("apps.gitfleet.dev", "hello", "{.status.targets.healthy}/{.status.targets.total} {.status.phase} {.status.conditions[0].type}={.status.conditions[0].status}")
            .await?,
        "2/2 Complete Ready=True"
    );
    let repos = kubectl.table("repos.gitfleet.dev").await?;
    let platform = row(&repos, "platform").context("platform listed")?;
    assert_eq!(cell(platform, "URL"), fleet.git.url(), "{repos:?}");
    assert_eq!(cell(platform, "REVISION"), short(&v1), "{repos:?}");
    assert_eq!(cell(platform, "READY"), "True", "{repos:?}");

    // A refused spec: Ready=False, the field named; nothing reaches the hub.
    kubectl
        .apply(&app_object("broken", "../outside", "prod"))
        .await?;
    let message = until_async("broken's Ready=False", DEADLINE, async || {
        let s = kubectl
            .jsonpath("apps.gitfleet.dev", "broken", "{.status.conditions[0].status} {.status.conditions[0].reason}: {.status.conditions[0].message}")
            .await?;
        Ok(s.starts_with("False").then_some(s))
    })
    .await?;
    assert!(
        message.contains("Invalid") && message.contains("spec.path"),
        "{message}"
    );
    assert!(!hub_has(&fleet, Kind::App, "broken").await?);

    // A refused change leaves the App running as it was, and says so.
    kubectl
        .apply(&app_object("hello", "../oops", "prod"))
        .await?;
    let refused = until_async("hello's Ready=False", DEADLINE, async || {
        let s = kubectl
            .jsonpath(
                "apps.gitfleet.dev",
                "hello",
                "{.status.conditions[0].status} {.status.health}: {.status.conditions[0].message}",
            )
            .await?;
        Ok(s.starts_with("False").then_some(s))
    })
    .await?;
    assert!(
        refused.starts_with("False Healthy: ") && refused.contains("spec.path"),
        "{refused}"
    );
    let stored = fleet.hub().engine().get(Some(Kind::App), Some("hello"))?;
    assert_eq!(stored[0]["spec"]["path"], "apps/hello");
    kubectl
        .apply(&app_object("hello", "apps/hello", "prod"))
        .await?;
    until_async("hello's Ready=True again", DEADLINE, async || {
        let s = kubectl
            .jsonpath(
                "apps.gitfleet.dev",
                "hello",
                "{.status.conditions[0].status}",
            )
            .await?;
        Ok((s == "True").then_some(()))
    })
    .await?;

    // The hub's resource of an App object is the object's: gitfleet refuses to apply or
    // delete it, naming the object.
    let refused = fleet
        .apply_yaml(&app_object("hello", "apps/hello", "dev"))
        .await
        .expect_err("gitfleet apply of a CR-owned App is refused");
    assert!(
        format!("{refused:#}").contains("apps.gitfleet.dev/hello"),
        "{refused:#}"
    );
    let refused = fleet
        .cli(&["delete", "app", "hello"])
        .await
        .expect_err("gitfleet delete of a CR-owned App is refused");
    assert!(
        format!("{refused:#}").contains("apps.gitfleet.dev/hello"),
        "{refused:#}"
    );

    let apps = fleet.cli(&["get", "apps"]).await?;
    assert!(apps.contains("kubernetes:gitfleet/hello"), "{apps}");

    // One Cluster object per registered cluster, made by the hub.
    until_async("three connected Cluster objects", DEADLINE, async || {
        let rows = kubectl.table("clusters.gitfleet.dev").await?;
        Ok((rows.len() == 3 && rows.iter().all(|r| cell(r, "CONNECTED") == "true")).then_some(()))
    })
    .await?;
    assert_eq!(
        kubectl
            .jsonpath("clusters.gitfleet.dev", "dev-a", "{.spec.labels.env}")
            .await?,
        "dev"
    );
    // Editing a Cluster object's labels moves the App onto it.
    kubectl
        .run(
            &[
                "patch",
                "clusters.gitfleet.dev",
                "dev-a",
                "-n",
                NS,
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"labels":{"env":"prod"}}}"#,
            ],
            None,
        )
        .await?;
    fleet
        .wait_converged("hello", &v1, 3, DEADLINE)
        .await
        .context("dev-a relabeled env=prod through its object gets the App")?;
    let clusters = fleet.cli(&["cluster", "list"]).await?;
    assert!(clusters.contains("env=prod"), "{clusters}");
    // `gitfleet cluster label` shows in the object, and the App leaves the cluster again.
    fleet
        .cli(&["cluster", "label", "dev-a", "env=dev", "--overwrite"])
        .await?;
    until_async("dev-a's object to say env=dev", DEADLINE, async || {
        let env = kubectl
            .jsonpath("clusters.gitfleet.dev", "dev-a", "{.spec.labels.env}")
            .await?;
        Ok((env == "dev").then_some(()))
    })
    .await?;
    fleet
        .wait_converged("hello", &v1, 2, DEADLINE)
        .await
        .context("dev-a relabeled env=dev with gitfleet leaves the App")?;

    // Labels the hub refuses change nothing, and the object says why.
    kubectl
        .run(
            &[
                "patch",
                "clusters.gitfleet.dev",
                "dev-a",
                "-n",
                NS,
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"labels":{"bad key":"x"}}}"#,
            ],
            None,
        )
        .await?;
    let refused = until_async("dev-a's Ready=False", DEADLINE, async || {
        let s = kubectl
            .jsonpath(
                "clusters.gitfleet.dev",
                "dev-a",
                "{.status.conditions[0].reason}: {.status.conditions[0].message}",
            )
            .await?;
        Ok(s.starts_with("InvalidLabels").then_some(s))
    })
    .await?;
    assert!(refused.contains("bad key"), "{refused}");
    let clusters = fleet.cli(&["cluster", "list"]).await?;
    assert!(!clusters.contains("bad key"), "{clusters}");

    // A Project still used by an App is not deleted: its object waits, saying why.
    kubectl
        .run(
            &[
                "delete",
                "projects.gitfleet.dev",
                "team-a",
                "-n",
                NS,
                "--wait=false",
            ],
            None,
        )
        .await?;
    let refused = until_async("team-a's DeleteRefused", DEADLINE, async || {
        let s = kubectl
            .jsonpath(
                "projects.gitfleet.dev",
                "team-a",
                "{.status.conditions[0].reason}: {.status.conditions[0].message}",
            )
            .await?;
        Ok(s.starts_with("DeleteRefused").then_some(s))
    })
    .await?;
    assert!(refused.contains("hello"), "{refused}");
    assert!(hub_has(&fleet, Kind::Project, "team-a").await?);

    // Deleting the object deletes the App from the hub (the finalizer holds it until then), and
    // then the Project can go.
    kubectl
        .run(
            &[
                "delete",
                "apps.gitfleet.dev",
                "hello",
                "-n",
                NS,
                "--timeout=60s",
            ],
            None,
        )
        .await?;
    assert!(
        !hub_has(&fleet, Kind::App, "hello").await?,
        "the hub's App is gone once its object is"
    );
    kubectl
        .run(
            &[
                "wait",
                "--for=delete",
                "projects.gitfleet.dev/team-a",
                "-n",
                NS,
                "--timeout=60s",
            ],
            None,
        )
        .await?;
    assert!(!hub_has(&fleet, Kind::Project, "team-a").await?);

    fleet.shutdown().await;
    management.shutdown().await;
    Ok(())
}

/// The controller runs on the replica that leads only: a follower leaves the management
/// cluster's objects alone (no finalizer, no status, nothing in the hub) however many resyncs
/// pass, and takes them up once it is elected; then a resource whose object went meanwhile
/// without the hub seeing it (its finalizer removed by hand) is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leading_replica_runs_the_controller() -> anyhow::Result<()> {
    use gitfleet_hub::leadership::Leadership;

    let dir = tempfile::tempdir()?;
    let management = Kubesim::start(KubesimConfig::new(["management"])).await?;
    let kubeconfig = write_kubeconfig(dir.path(), &management.kubeconfig_yaml("management"))?;
    let kubectl = Kubectl {
        kubeconfig: kubeconfig.clone(),
        cache: dir.path().join("kubectl-cache"),
    };
    kubectl.run(&["create", "namespace", NS], None).await?;
    kubectl
        .run(&["apply", "--server-side", "-f", CRDS], None)
        .await?;

    let resync = Duration::from_millis(100);
    let (elect, leadership) =
        tokio::sync::watch::channel(Leadership::Follower { leader_url: None });
    let mut config = gitfleet_hub::runtime::HubConfig::for_tests(dir.path().join("hub"));
    config.leadership = Some(leadership);
    config.kube_api = Some(KubeApiConfig {
        kubeconfig: Some(kubeconfig),
        namespace: Some(NS.to_owned()),
        resync,
    });
    let hub = gitfleet_hub::runtime::start(config).await?;
    kubectl
        .apply("apiVersion: gitfleet.dev/v1\nkind: ClusterGroup\nmetadata:\n  name: eu\nspec:\n  selector: { matchLabels: { region: eu } }\n")
        .await?;

    let finalized = async || -> anyhow::Result<Option<()>> {
        let f = kubectl
            .jsonpath(
                "clustergroups.gitfleet.dev",
                "eu",
                "{.metadata.finalizers[0]}",
            )
            .await?;
        Ok((!f.is_empty()).then_some(()))
    };
    // Twenty resyncs as a follower: nothing.
    let untouched = tokio::time::timeout(
        resync * 20,
        until_async("a follower to touch the object", DEADLINE, finalized),
    )
    .await;
    assert!(untouched.is_err(), "a follower took up the object");
    assert!(!hub.engine().exists(Kind::ClusterGroup, "eu")?);

    // A resource whose object went while no replica led (its finalizer removed by hand).
    let gone = gitfleet_core::kube_api::document(
        Kind::ClusterGroup,
        NS,
        &serde_json::json!({"metadata": {"name": "gone"}, "spec": {"selector": {"matchLabels": {"region": "us"}}}}),
    );
    hub.engine()
        .apply_owned("", gone.to_string(), &format!("{NS}/gone"))
        .await?;

    elect.send(Leadership::Leader)?;
    until_async("the leader to take the object", DEADLINE, async || {
        let s = kubectl
            .jsonpath(
                "clustergroups.gitfleet.dev",
                "eu",
                "{.metadata.finalizers[0]} {.status.conditions[0].status}",
            )
            .await?;
        Ok((s == "gitfleet.dev/hub-resource True").then_some(()))
    })
    .await?;
    assert!(hub.engine().exists(Kind::ClusterGroup, "eu")?);
    until_async(
        "the resource whose object is gone to go",
        DEADLINE,
        async || Ok((!hub.engine().exists(Kind::ClusterGroup, "gone")?).then_some(())),
    )
    .await?;
    hub.shutdown().await;
    management.shutdown().await;
    Ok(())
}
