//! One commit flowing from Git through hub and spokes into (simulated) clusters, for real in
//! every step: git2 fetches, mutual-TLS gRPC, server-side apply through kube-rs against kubesim.

use std::time::Duration;

use gitfleet_e2e::harness::{ClusterSpec, Fleet, FleetOptions};
use gitfleet_proto::v1 as pb;

const DEADLINE: Duration = Duration::from_secs(60);

const CONFIGMAP: &str = include_str!("../demo/hello/configmap.yaml");
const DEPLOYMENT: &str = include_str!("../demo/hello/deployment.yaml");
const SERVICE: &str = include_str!("../demo/hello/service.yaml");

fn app_yaml(name: &str, path: &str, env: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1\nkind: App\nmetadata: {{ name: {name} }}\nspec:\n  repo: platform\n  path: {path}\n  namespace: {name}\n  targets:\n    - clusterSelector: {{ matchLabels: {{ env: {env} }} }}\n"
    )
}

fn three_clusters() -> FleetOptions {
    FleetOptions::new(vec![
        ClusterSpec::new("prod-a").label("env", "prod"),
        ClusterSpec::new("prod-b").label("env", "prod"),
        ClusterSpec::new("dev-a").label("env", "dev"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_converge_on_every_mapped_cluster() {
    let mut fleet = Fleet::start(three_clusters()).await.unwrap();
    fleet
        .git
        .write("apps/hello/configmap.yaml", CONFIGMAP)
        .unwrap();
    fleet
        .git
        .write("apps/hello/deployment.yaml", DEPLOYMENT)
        .unwrap();
    fleet.git.write("apps/hello/service.yaml", SERVICE).unwrap();
    fleet
        .git
        .write("apps/other/notes.txt", "not a manifest")
        .unwrap();
    let v1 = fleet.git.commit("hello v1").unwrap();

    let yaml = format!(
        "{}---\n{}",
        fleet.repo_yaml("platform"),
        app_yaml("hello", "apps/hello", "prod")
    );
    let outcomes = fleet.apply_yaml(&yaml).await.unwrap();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");

    let status = fleet
        .wait_converged("hello", &v1, 2, DEADLINE)
        .await
        .unwrap();
    let mut clusters: Vec<&str> = status.iter().map(|t| t.cluster.as_str()).collect();
    clusters.sort();
    assert_eq!(
        clusters,
        ["prod-a", "prod-b"],
        "only env=prod clusters get the App"
    );

    for cluster in ["prod-a", "prod-b"] {
        let cm = fleet
            .kubesim
            .get_object(cluster, "v1", "ConfigMap", Some("hello"), "hello-config")
            .unwrap_or_else(|| panic!("{cluster}: configmap missing"));
        assert_eq!(cm["data"]["greeting"], "Hello from gitfleet, v1");
        assert_eq!(cm["metadata"]["labels"]["gitfleet.dev/app"], "hello");
        assert_eq!(
            cm["metadata"]["annotations"]["gitfleet.dev/revision"],
            v1.as_str()
        );
        let deploy = fleet
            .kubesim
            .get_object(cluster, "apps/v1", "Deployment", Some("hello"), "hello")
            .unwrap_or_else(|| panic!("{cluster}: deployment missing"));
        assert_eq!(deploy["spec"]["replicas"], 2);
        let managers: Vec<&str> = deploy["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["manager"].as_str())
            .collect();
        assert!(
            managers.contains(&"gitfleet/hello"),
            "applied with the App's field manager: {managers:?}"
        );
        assert!(
            fleet
                .kubesim
                .get_object(cluster, "v1", "Service", Some("hello"), "hello")
                .is_some()
        );
    }
    assert!(
        fleet
            .kubesim
            .get_object("dev-a", "apps/v1", "Deployment", Some("hello"), "hello")
            .is_none(),
        "dev-a is not a target"
    );

    // A second commit that changes objects converges too.
    fleet
        .git
        .write(
            "apps/hello/configmap.yaml",
            CONFIGMAP.replace("gitfleet, v1", "gitfleet, v2"),
        )
        .unwrap();
    fleet
        .git
        .write(
            "apps/hello/deployment.yaml",
            DEPLOYMENT.replace("replicas: 2", "replicas: 3"),
        )
        .unwrap();
    let v2 = fleet.git.commit("hello v2").unwrap();
    fleet
        .wait_converged("hello", &v2, 2, DEADLINE)
        .await
        .unwrap();
    for cluster in ["prod-a", "prod-b"] {
        let cm = fleet
            .kubesim
            .get_object(cluster, "v1", "ConfigMap", Some("hello"), "hello-config")
            .unwrap();
        assert_eq!(cm["data"]["greeting"], "Hello from gitfleet, v2");
        assert_eq!(
            cm["metadata"]["annotations"]["gitfleet.dev/revision"],
            v2.as_str()
        );
        let deploy = fleet
            .kubesim
            .get_object(cluster, "apps/v1", "Deployment", Some("hello"), "hello")
            .unwrap();
        assert_eq!(deploy["spec"]["replicas"], 3);
        assert_eq!(deploy["status"]["availableReplicas"], 3);
    }

    // `describe` puts the App on one page: its fields, rollout, Targets and latest events.
    let text = fleet.cli(&["describe", "app", "hello"]).await.unwrap();
    let short = &v2[..7];
    for expected in [
        "Name:                hello\n",
        "Kind:                App\n",
        "  Path:              apps/hello\n",
        "          env:       prod\n",
        "Rollout:\n",
        "Targets:\n",
        "prod-a",
        "prod-b",
        "Events:\n",
        "NewRevision",
        short,
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    assert!(!text.contains("dev-a"), "dev-a is not a target:\n{text}");
    let json: serde_json::Value = serde_json::from_str(
        &fleet
            .cli(&["describe", "app", "hello", "-o", "json"])
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(json["resource"]["metadata"]["name"], "hello");
    assert_eq!(json["targets"]["targets"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["rollout"]["revision"], v2.as_str());
    // A cluster: its labels, state and the Targets on it.
    let text = fleet.cli(&["describe", "cluster", "prod-a"]).await.unwrap();
    for expected in [
        "Name:                prod-a\n",
        "env=prod",
        "State:               connected\n",
        "hello",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    let missing = fleet.cli(&["describe", "app", "nope"]).await.unwrap_err();
    assert!(missing.to_string().contains("nope"), "{missing}");
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_are_reported_per_file_and_the_rest_applies() {
    let mut fleet = Fleet::start(FleetOptions::new(vec![
        ClusterSpec::new("edge-1").label("env", "edge"),
    ]))
    .await
    .unwrap();
    fleet
        .git
        .write("apps/web/configmap.yaml", CONFIGMAP)
        .unwrap();
    fleet
        .git
        .write(
            "apps/web/broken.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n",
        )
        .unwrap();
    fleet
        .git
        .write(
            "apps/web/widget.yaml",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\nspec: {}\n",
        )
        .unwrap();
    let commit = fleet
        .git
        .commit("one good, one broken, one unknown kind")
        .unwrap();
    let yaml = format!(
        "{}---\n{}",
        fleet.repo_yaml("platform"),
        app_yaml("web", "apps/web", "edge")
    );
    fleet.apply_yaml(&yaml).await.unwrap();

    let status = fleet
        .wait_for("web", "the broken revision to be reported", DEADLINE, |s| {
            s.len() == 1 && s[0].applied_revision == commit && !s[0].resources.is_empty()
        })
        .await
        .unwrap();
    let target = &status[0];
    assert_ne!(
        target.sync,
        pb::SyncState::Synced as i32,
        "a broken file is not synced"
    );
    let broken = target
        .resources
        .iter()
        .find(|r| r.source_file.ends_with("broken.yaml"))
        .unwrap_or_else(|| panic!("broken.yaml reported: {:?}", target.resources));
    assert!(
        broken.message.contains("line"),
        "names where in the file: {}",
        broken.message
    );
    let widget = target
        .resources
        .iter()
        .find(|r| r.kind == "Widget")
        .unwrap_or_else(|| panic!("widget reported: {:?}", target.resources));
    assert_eq!(widget.action, "failed");
    assert!(
        widget
            .message
            .contains("could not find the requested resource"),
        "{}",
        widget.message
    );
    assert!(
        fleet
            .kubesim
            .get_object("edge-1", "v1", "ConfigMap", Some("web"), "hello-config")
            .is_some(),
        "the good file still applies"
    );

    // `gitfleet status` shows the file and the error.
    let config = fleet.hub().admin_config_path().display().to_string();
    let mut out = Vec::new();
    gitfleet_cli::cli::run_args(
        [
            "gitfleet",
            "--config",
            &config,
            "status",
            "--app",
            "web",
            "--resources",
        ],
        &mut out,
    )
    .await
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("broken.yaml"), "{out}");
    assert!(out.contains("Widget"), "{out}");
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoke_link_on_a_runtime_of_its_own_converges_and_lives_there() {
    let links = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("test-links")
        .enable_all()
        .build()
        .unwrap();
    let mut options = FleetOptions::new(vec![ClusterSpec::new("solo").label("env", "prod")]);
    options.link_runtime = Some(links.handle().clone());
    let mut fleet = Fleet::start(options).await.unwrap();
    fleet
        .git
        .write("apps/hello/configmap.yaml", CONFIGMAP)
        .unwrap();
    let v1 = fleet.git.commit("hello v1").unwrap();
    let yaml = format!(
        "{}---\n{}",
        fleet.repo_yaml("platform"),
        app_yaml("hello", "apps/hello", "prod")
    );
    fleet.apply_yaml(&yaml).await.unwrap();
    fleet
        .wait_converged("hello", &v1, 1, DEADLINE)
        .await
        .unwrap();

    // The link lives on that runtime: shutting the runtime down cuts the spoke off the hub.
    links.shutdown_background();
    let start = std::time::Instant::now();
    loop {
        let clusters = fleet.admin().list_clusters().await.unwrap();
        if clusters.iter().any(|c| c.name == "solo" && !c.connected) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the hub still sees the spoke connected: {clusters:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.shutdown().await;
}

/// `gitfleet version` names the client's build and the build of the hub that answered;
/// `--client` names only the client's and needs no hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_names_the_client_and_the_hub() {
    let fleet = Fleet::start(FleetOptions::new(Vec::new())).await.unwrap();
    let out = fleet.cli(&["version", "-o", "json"]).await.unwrap();
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let hub_version = env!("CARGO_PKG_VERSION");
    assert_eq!(report["clientVersion"], hub_version, "{out}");
    assert_eq!(report["hubVersion"], hub_version, "{out}");
    assert!(
        report["hub"]
            .as_str()
            .is_some_and(|h| h.starts_with("https://")),
        "{out}"
    );
    let text = fleet.cli(&["version"]).await.unwrap();
    assert!(
        text.starts_with(&format!(
            "Client Version: {hub_version}\nHub Version:    {hub_version} (https://"
        )),
        "{text}"
    );

    let mut out = Vec::new();
    gitfleet_cli::cli::run_args(
        vec![
            "gitfleet",
            "--config",
            "/nonexistent/gitfleet-config",
            "version",
            "--client",
            "-o",
            "json",
        ],
        &mut out,
    )
    .await
    .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["clientVersion"], hub_version, "{report}");
    assert!(report.get("hubVersion").is_none(), "{report}");
}

/// `get clusters` lists clusters as `cluster list` does; `-l` filters clusters by their labels
/// and resources by `metadata.labels`, in kubectl's syntax; a selector that does not parse says
/// what is wrong with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_filters_clusters_and_resources_by_label_selector() {
    let mut fleet = Fleet::start(three_clusters()).await.unwrap();
    let names = |out: &str, list: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        let items = if list.is_empty() { &v } else { &v[list] };
        let mut names: Vec<String> = items
            .as_array()
            .unwrap_or_else(|| panic!("{out}"))
            .iter()
            .map(|c| {
                c["name"]
                    .as_str()
                    .or_else(|| c["metadata"]["name"].as_str())
                    .unwrap()
                    .to_owned()
            })
            .collect();
        names.sort();
        names
    };
    let out = fleet
        .cli(&["get", "clusters", "-l", "env=prod", "-o", "json"])
        .await
        .unwrap();
    assert_eq!(names(&out, "clusters"), ["prod-a", "prod-b"], "{out}");
    let out = fleet
        .cli(&["cluster", "list", "-l", "env notin (prod)", "-o", "json"])
        .await
        .unwrap();
    assert_eq!(names(&out, "clusters"), ["dev-a"], "{out}");
    let table = fleet.cli(&["get", "cluster", "dev-a"]).await.unwrap();
    assert!(
        table.contains("dev-a") && !table.contains("prod-a"),
        "{table}"
    );
    let missing = fleet.cli(&["get", "cluster", "nope"]).await.unwrap_err();
    assert!(
        format!("{missing:#}").contains("cluster \"nope\" not found"),
        "{missing:#}"
    );
    let bad = fleet
        .cli(&["get", "clusters", "-l", "env in prod"])
        .await
        .unwrap_err();
    assert!(
        format!("{bad:#}").contains("label selector \"env in prod\""),
        "{bad:#}"
    );

    let yaml = format!(
        "{}---\n{}---\n{}",
        fleet.repo_yaml("platform"),
        app_yaml("shop", "apps/shop", "prod").replace(
            "metadata: { name: shop }",
            "metadata: { name: shop, labels: { team: a } }"
        ),
        app_yaml("blog", "apps/blog", "dev"),
    );
    fleet.apply_yaml(&yaml).await.unwrap();
    let out = fleet
        .cli(&["get", "apps", "-l", "team=a", "-o", "json"])
        .await
        .unwrap();
    assert_eq!(names(&out, "items"), ["shop"], "{out}");
    let out = fleet
        .cli(&["get", "apps", "-l", "!team", "-o", "json"])
        .await
        .unwrap();
    assert_eq!(names(&out, "items"), ["blog"], "{out}");
}

/// `gitfleet repo refresh --wait` has a Repo that polls once an hour fetch now and names the
/// commit it found; an unknown Repo is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repo_refresh_fetches_now_and_waits_for_the_fetch() {
    let mut fleet = Fleet::start(FleetOptions::new(Vec::new())).await.unwrap();
    fleet.git.write("apps/a/cm.yaml", CONFIGMAP).unwrap();
    let v1 = fleet.git.commit("v1").unwrap();
    let repo = fleet
        .repo_yaml("platform")
        .replace("pollInterval: 200ms", "pollInterval: 1h");
    fleet.apply_yaml(&repo).await.unwrap();
    let at = |out: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        v["status"]["commit"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    // The first fetch follows the apply: once it is done, the Repo fetches again only when asked.
    gitfleet_e2e::harness::until_async("the Repo's first fetch", DEADLINE, async || {
        let out = fleet
            .cli(&["get", "repo", "platform", "-o", "json"])
            .await?;
        Ok((at(&out) == v1).then_some(()))
    })
    .await
    .unwrap();

    fleet.git.write("apps/a/other.yaml", SERVICE).unwrap();
    let v2 = fleet.git.commit("v2").unwrap();
    let out = fleet
        .cli(&["repo", "refresh", "platform", "--wait", "-o", "json"])
        .await
        .unwrap();
    assert_eq!(at(&out), v2, "{out}");
    let text = fleet.cli(&["repo", "refresh", "platform"]).await.unwrap();
    assert_eq!(text, "repo/platform: fetch requested\n");

    let missing = fleet.cli(&["repo", "refresh", "nope"]).await.unwrap_err();
    assert!(
        format!("{missing:#}").contains("Repo \"nope\" not found"),
        "{missing:#}"
    );
}

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus");

/// An ordinary shop from the corpus: podinfo's database (a StatefulSet applied without an
/// update strategy, a Deployment its HPA scales, Services, a PVC, CronJobs, a ServiceAccount)
/// with the ConfigMaps its kustomization would generate, and an Ingress.
fn write_shop(fleet: &Fleet, greeting: &str) -> anyhow::Result<()> {
    let database = std::path::Path::new(CORPUS).join("podinfo/deploy/bases/database");
    for file in [
        "serviceaccount.yaml",
        "pvc-primary.yaml",
        "statefulset-primary.yaml",
        "deployment-replica.yaml",
        "service-primary.yaml",
        "service-replica.yaml",
        "hpa-replica.yaml",
        "cronjob-rollup-daily.yaml",
        "cronjob-rollup-weekly.yaml",
        "cronjob-backup-daily.yaml",
    ] {
        fleet.git.write(
            &format!("apps/shop/{file}"),
            std::fs::read_to_string(database.join(file))?,
        )?;
    }
    for (name, script) in [
        ("rollup-script", "rollup.sh"),
        ("backup-script", "backup.sh"),
    ] {
        let body = std::fs::read_to_string(database.join("scripts").join(script))?;
        let indented: String = body.lines().map(|l| format!("    {l}\n")).collect();
        fleet.git.write(
            &format!("apps/shop/{name}.yaml"),
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  annotations:\n    shop/greeting: {greeting}\ndata:\n  {script}: |\n{indented}"
            ),
        )?;
    }
    fleet.git.write(
        "apps/shop/ingress.yaml",
        std::fs::read_to_string(
            std::path::Path::new(CORPUS)
                .join("kubernetes-examples/AI/model-serving-tensorflow/ingress.yaml"),
        )?,
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordinary_shop_turns_healthy_on_kubesim_through_a_waved_rollout() {
    let mut fleet = Fleet::start(FleetOptions::new(vec![
        ClusterSpec::new("shop-canary").label("ring", "canary"),
        ClusterSpec::new("shop-main").label("ring", "main"),
    ]))
    .await
    .unwrap();
    write_shop(&fleet, "v1").unwrap();
    let v1 = fleet.git.commit("shop v1").unwrap();
    let app = "apiVersion: gitfleet.dev/v1
kind: App
metadata: { name: shop }
spec:
  repo: platform
  path: apps/shop
  namespace: shop
  targets:
    - clusterSelector: {}
  rollout:
    waves:
      - name: canary
        clusterSelector: { matchLabels: { ring: canary } }
";
    let yaml = format!("{}---\n{app}", fleet.repo_yaml("platform"));
    fleet.apply_yaml(&yaml).await.unwrap();
    let status = fleet
        .wait_converged("shop", &v1, 2, DEADLINE)
        .await
        .unwrap();
    let mut kinds: Vec<String> = Vec::new();
    for target in &status {
        for r in &target.resources {
            assert_eq!(
                r.health,
                pb::HealthState::Healthy as i32,
                "{}: {} {}: {}",
                target.cluster,
                r.kind,
                r.name,
                r.message
            );
            kinds.push(r.kind.clone());
        }
    }
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "CronJob",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Ingress",
            "Namespace",
            "PersistentVolumeClaim",
            "Service",
            "ServiceAccount",
            "StatefulSet"
        ]
    );
    for cluster in ["shop-canary", "shop-main"] {
        let hpa = fleet
            .kubesim
            .get_object(
                cluster,
                "autoscaling/v2",
                "HorizontalPodAutoscaler",
                Some("shop"),
                "database-replica",
            )
            .unwrap();
        // The Deployment names no replicas; its HPA (minReplicas 2) scaled it up.
        assert_eq!(hpa["status"]["currentReplicas"], 2, "{hpa}");
        let ingress = fleet
            .kubesim
            .get_object(
                cluster,
                "networking.k8s.io/v1",
                "Ingress",
                Some("shop"),
                "tf-serving-ingress",
            )
            .unwrap();
        assert_eq!(
            ingress["status"]["loadBalancer"]["ingress"][0]["ip"],
            gitfleet_kubesim::controllers::INGRESS_ADDRESS
        );
        let sts = fleet
            .kubesim
            .get_object(
                cluster,
                "apps/v1",
                "StatefulSet",
                Some("shop"),
                "database-primary",
            )
            .unwrap();
        assert_eq!(sts["spec"]["updateStrategy"]["type"], "RollingUpdate");
    }

    // A new commit goes through the canary wave, then the rest.
    write_shop(&fleet, "v2").unwrap();
    let v2 = fleet.git.commit("shop v2").unwrap();
    fleet
        .wait_converged("shop", &v2, 2, DEADLINE)
        .await
        .unwrap();
    fleet.shutdown().await;
}
