//! Projects end to end: hub, spokes and kubesim. An App of Project `team-a` gets only what its
//! Project allows, object by object (the rest of it applies); an App whose targets leave its
//! Project is refused at apply; a Project that narrows takes its Apps off the clusters it no
//! longer names; the built-in `default` Project keeps what gitfleet did before.

use std::time::Duration;

use gitfleet_e2e::harness::{ClusterSpec, Fleet, FleetOptions, is_converged};
use gitfleet_proto::v1 as pb;

const DEADLINE: Duration = Duration::from_secs(60);

fn configmap(namespace: Option<&str>, name: &str) -> String {
    let namespace = namespace.map_or(String::new(), |ns| format!("\n  namespace: {ns}"));
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}{namespace}\ndata:\n  a: b\n"
    )
}

const CLUSTER_ROLE_BINDING: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: NAME
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects:
- {kind: ServiceAccount, name: default, namespace: NAMESPACE}
";

fn cluster_role_binding(name: &str, namespace: &str) -> String {
    CLUSTER_ROLE_BINDING
        .replace("NAME", name)
        .replace("NAMESPACE", namespace)
}

const QUOTA: &str = "apiVersion: v1
kind: ResourceQuota
metadata:
  name: quota
spec:
  hard: {pods: \"10\"}
";

fn project_yaml(envs: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1
kind: Project
metadata: {{name: team-a}}
spec:
  sourceRepos: [platform]
  destinations:
  - clusterSelector: {{matchExpressions: [{{key: env, operator: In, values: [{envs}]}}]}}
    namespaces: [team-a, \"team-a-*\"]
  clusterResources: []
  namespaceResources: {{deny: [{{group: \"\", kind: ResourceQuota}}]}}
"
    )
}

fn app_yaml(name: &str, project: Option<&str>, namespace: &str, selector: &str) -> String {
    let project = project.map_or(String::new(), |p| format!("  project: {p}\n"));
    format!(
        "apiVersion: gitfleet.dev/v1
kind: App
metadata: {{name: {name}}}
spec:
{project}  repo: platform
  path: apps/{name}
  namespace: {namespace}
  targets:
  - clusterSelector: {selector}
"
    )
}

fn two_clusters() -> FleetOptions {
    FleetOptions::new(vec![
        ClusterSpec::new("prod-a").label("env", "prod"),
        ClusterSpec::new("dev-a").label("env", "dev"),
    ])
}

fn result<'s>(t: &'s pb::TargetStatus, kind: &str, name: &str) -> &'s pb::ResourceResult {
    t.resources
        .iter()
        .find(|r| r.kind == kind && r.name == name)
        .unwrap_or_else(|| panic!("{kind}/{name} in {:#?}", t.resources))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_app_applies_what_its_project_allows_and_only_that() {
    let mut fleet = Fleet::start(two_clusters()).await.unwrap();
    // The platform team's own App, in `default`: a cluster-scoped object and another
    // namespace, as before Projects. It also makes namespace team-b exist, so that nothing but
    // the Project stops team-a's object there.
    fleet
        .git
        .write(
            "apps/platform/crb.yaml",
            cluster_role_binding("platform-admin", "team-b"),
        )
        .unwrap();
    fleet
        .git
        .write("apps/platform/cm.yaml", configmap(None, "platform"))
        .unwrap();
    // Team a's App: its own ConfigMaps, plus what its Project refuses.
    fleet
        .git
        .write("apps/shop/cm.yaml", configmap(None, "shop"))
        .unwrap();
    fleet
        .git
        .write(
            "apps/shop/cm-web.yaml",
            configmap(Some("team-a-web"), "web"),
        )
        .unwrap();
    fleet
        .git
        .write(
            "apps/shop/ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a-web\n",
        )
        .unwrap();
    fleet
        .git
        .write(
            "apps/shop/crb.yaml",
            cluster_role_binding("shop-admin", "team-a"),
        )
        .unwrap();
    fleet
        .git
        .write(
            "apps/shop/other-team.yaml",
            configmap(Some("team-b"), "sneaky"),
        )
        .unwrap();
    fleet.git.write("apps/shop/quota.yaml", QUOTA).unwrap();
    let v1 = fleet.git.commit("v1").unwrap();

    let yaml = format!(
        "{}---\n{}",
        fleet.repo_yaml("platform"),
        app_yaml("platform", None, "team-b", "{matchLabels: {env: prod}}")
    );
    fleet.apply_yaml(&yaml).await.unwrap();
    fleet
        .wait_converged("platform", &v1, 1, DEADLINE)
        .await
        .unwrap();
    assert!(
        fleet
            .kubesim
            .get_object(
                "prod-a",
                "rbac.authorization.k8s.io/v1",
                "ClusterRoleBinding",
                None,
                "platform-admin"
            )
            .is_some(),
        "the default Project allows cluster-scoped objects, as before"
    );

    let yaml = format!(
        "{}---\n{}",
        project_yaml("prod"),
        app_yaml(
            "shop",
            Some("team-a"),
            "team-a",
            "{matchLabels: {env: prod}}"
        )
    );
    fleet.apply_yaml(&yaml).await.unwrap();
    let status = fleet
        .wait_for("shop", "shop applied on prod-a", DEADLINE, |s| {
            s.len() == 1
                && s[0].applied_revision == v1
                && s[0].resources.iter().any(|r| r.name == "sneaky")
        })
        .await
        .unwrap();
    let t = &status[0];
    let refused = [
        (
            "ClusterRoleBinding",
            "shop-admin",
            "Project team-a does not allow cluster-scoped rbac.authorization.k8s.io/ClusterRoleBinding",
        ),
        (
            "ConfigMap",
            "sneaky",
            "Project team-a does not allow namespace team-b",
        ),
        (
            "ResourceQuota",
            "quota",
            "Project team-a does not allow ResourceQuota (namespaceResources.deny)",
        ),
    ];
    for (kind, name, message) in refused {
        let r = result(t, kind, name);
        assert_eq!((r.action.as_str(), r.message.as_str()), ("failed", message));
    }
    for (kind, name) in [
        ("ConfigMap", "shop"),
        ("ConfigMap", "web"),
        ("Namespace", "team-a-web"),
    ] {
        let r = result(t, kind, name);
        assert!(
            r.action == "applied" || r.action == "unchanged",
            "{kind}/{name}: {r:?}"
        );
    }
    let k = &fleet.kubesim;
    assert!(
        k.get_object("prod-a", "v1", "ConfigMap", Some("team-a"), "shop")
            .is_some()
    );
    assert!(
        k.get_object("prod-a", "v1", "ConfigMap", Some("team-a-web"), "web")
            .is_some()
    );
    assert!(
        k.get_object(
            "prod-a",
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            None,
            "shop-admin"
        )
        .is_none()
    );
    assert!(
        k.get_object("prod-a", "v1", "ConfigMap", Some("team-b"), "sneaky")
            .is_none()
    );
    assert!(
        k.get_object("prod-a", "v1", "ResourceQuota", Some("team-a"), "quota")
            .is_none()
    );
    // Never the App's: not in its inventory, so never pruned by it.
    let inventory = k
        .get_object(
            "prod-a",
            "v1",
            "ConfigMap",
            Some("team-a"),
            "gitfleet-inventory-shop",
        )
        .expect("inventory");
    let objects = inventory["data"]["objects"].as_str().unwrap_or_default();
    assert!(
        objects.contains("\"shop\"") && !objects.contains("sneaky"),
        "{objects}"
    );
    // The platform App's objects are untouched.
    assert!(
        k.get_object("prod-a", "v1", "ConfigMap", Some("team-b"), "platform")
            .is_some()
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_decides_where_its_apps_run() {
    let mut fleet = Fleet::start(two_clusters()).await.unwrap();
    fleet
        .git
        .write("apps/shop/cm.yaml", configmap(None, "shop"))
        .unwrap();
    let v1 = fleet.git.commit("v1").unwrap();
    let yaml = format!(
        "{}---\n{}",
        fleet.repo_yaml("platform"),
        project_yaml("prod")
    );
    fleet.apply_yaml(&yaml).await.unwrap();

    // Its targets reach dev-a, which the Project does not name: refused, nothing stored.
    let everywhere = app_yaml(
        "shop",
        Some("team-a"),
        "team-a",
        "{matchExpressions: [{key: env, operator: Exists}]}",
    );
    let err = fleet.apply_yaml(&everywhere).await.unwrap_err().to_string();
    assert!(
        err.contains(r#"app "shop": spec.targets[0]: cluster "dev-a" is not in Project team-a's destinations"#),
        "{err}"
    );
    assert!(fleet.status("shop").await.is_err() || fleet.status("shop").await.unwrap().is_empty());

    // Once the Project names both, the App runs on both (the happy path).
    fleet.apply_yaml(&project_yaml("prod, dev")).await.unwrap();
    fleet.apply_yaml(&everywhere).await.unwrap();
    fleet
        .wait_converged("shop", &v1, 2, DEADLINE)
        .await
        .unwrap();
    let k = &fleet.kubesim;
    assert!(
        k.get_object("dev-a", "v1", "ConfigMap", Some("team-a"), "shop")
            .is_some()
    );

    // Narrowed to prod again: the App leaves dev-a (its objects pruned there) and stays on
    // prod-a.
    fleet.apply_yaml(&project_yaml("prod")).await.unwrap();
    let status = fleet
        .wait_for("shop", "shop on prod-a only", DEADLINE, |s| {
            s.len() == 1 && s[0].cluster == "prod-a" && is_converged(&s[0], &v1)
        })
        .await
        .unwrap();
    assert_eq!(status[0].cluster, "prod-a");
    // Pruned on dev-a: watched until it is gone (kube-runtime's await_condition), bounded.
    let dev_a = fleet.kubesim.in_memory_client("dev-a").unwrap();
    let configmaps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(dev_a, "team-a");
    tokio::time::timeout(
        DEADLINE,
        kube::runtime::wait::await_condition(configmaps, "shop", |cm: Option<&_>| cm.is_none()),
    )
    .await
    .expect("shop pruned from dev-a in time")
    .unwrap();
    assert!(
        fleet
            .kubesim
            .get_object("prod-a", "v1", "ConfigMap", Some("team-a"), "shop")
            .is_some()
    );
    fleet.shutdown().await;
}
