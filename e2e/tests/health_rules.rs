//! Custom health rules end to end: hub, spoke and kubesim. A CRD's objects are judged by a CEL
//! rule of the App's Project (the spoke knows nothing of the kind): no status yet is
//! Progressing, the status the rule calls healthy is Healthy, the one it calls degraded turns the
//! Target Degraded with the rule's message. A hub-wide `HealthRule` judges the kind for Apps of
//! every Project that has no rule of its own for it, and a rule that does not compile is refused
//! at apply, naming the field.

use std::time::Duration;

use gitfleet_e2e::harness::{ClusterSpec, Fleet, FleetOptions};
use gitfleet_proto::v1 as pb;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};

const DEADLINE: Duration = Duration::from_secs(60);

const CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: databases.db.example.com
spec:
  group: db.example.com
  scope: Namespaced
  names: {plural: databases, singular: database, kind: Database, listKind: DatabaseList}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
";

const DATABASE: &str = "apiVersion: db.example.com/v1
kind: Database
metadata:
  name: orders
spec:
  size: small
";

/// The Project's rule: what the team's operator writes in `status.phase`.
const PROJECT: &str = "apiVersion: gitfleet.dev/v1
kind: Project
metadata: {name: data}
spec:
  sourceRepos: ['*']
  destinations:
  - name: '*'
    namespaces: [data, other]
  clusterResources:
  - {group: apiextensions.k8s.io, kind: CustomResourceDefinition}
  healthRules:
  - group: db.example.com
    kind: Database
    degradedWhen: status.phase == 'Failed'
    healthyWhen: status.phase == 'Ready' && status.observedGeneration == metadata.generation
    message: \"has(status.reason) ? 'phase ' + status.phase + ': ' + status.reason : ''\"
";

fn app(name: &str, project: &str, namespace: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1
kind: App
metadata: {{name: {name}}}
spec:
  project: {project}
  repo: platform
  path: apps/{name}
  namespace: {namespace}
  targets:
  - clusterSelector: {{}}
"
    )
}

fn target(status: &[pb::TargetStatus]) -> Option<&pb::TargetStatus> {
    status.first()
}

fn database_result(t: &pb::TargetStatus) -> Option<&pb::ResourceResult> {
    t.resources.iter().find(|r| r.kind == "Database")
}

fn health_of(status: &[pb::TargetStatus]) -> Option<(pb::HealthState, String)> {
    let t = target(status)?;
    let r = database_result(t)?;
    Some((r.health(), r.message.clone()))
}

/// Writes `status` of Database `orders` in `namespace`, as its operator would.
async fn set_status(
    fleet: &Fleet,
    namespace: &str,
    status: serde_json::Value,
) -> anyhow::Result<()> {
    let client = kube::Client::try_from(fleet.kubesim.kube_config("c1"))?;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("db.example.com", "v1", "Database"),
        "databases",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &resource);
    api.patch_status(
        "orders",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_judged_by_a_project_cel_rule_turns_degraded_with_the_rules_message() {
    let mut fleet = Fleet::start(FleetOptions::new(vec![ClusterSpec::new("c1")]))
        .await
        .unwrap();
    fleet.git.write("apps/orders/crd.yaml", CRD).unwrap();
    fleet
        .git
        .write("apps/orders/orders.yaml", DATABASE)
        .unwrap();
    let commit = fleet.git.commit("orders database").unwrap();
    let yaml = format!(
        "{}---\n{PROJECT}---\n{}",
        fleet.repo_yaml("platform"),
        app("orders", "data", "data")
    );
    fleet.apply_yaml(&yaml).await.unwrap();

    // Applied, and no status yet: the rule holds neither way.
    let status = fleet
        .wait_for(
            "orders",
            "the Database applied and waiting",
            DEADLINE,
            |s| {
                target(s).is_some_and(|t| t.applied_revision == commit)
                    && health_of(s).is_some_and(|(h, _)| h == pb::HealthState::Progressing)
            },
        )
        .await
        .unwrap();
    assert_eq!(
        target(&status).unwrap().health(),
        pb::HealthState::Progressing
    );

    set_status(
        &fleet,
        "data",
        serde_json::json!({"phase": "Ready", "observedGeneration": 1, "reason": "serving"}),
    )
    .await
    .unwrap();
    let status = fleet
        .wait_for(
            "orders",
            "the Database healthy by the rule",
            DEADLINE,
            |s| target(s).is_some_and(|t| t.health() == pb::HealthState::Healthy),
        )
        .await
        .unwrap();
    assert_eq!(
        health_of(&status).unwrap(),
        (pb::HealthState::Healthy, "phase Ready: serving".to_owned())
    );

    set_status(
        &fleet,
        "data",
        serde_json::json!({"phase": "Failed", "reason": "disk full"}),
    )
    .await
    .unwrap();
    let status = fleet
        .wait_for("orders", "the Target Degraded by the rule", DEADLINE, |s| {
            target(s).is_some_and(|t| t.health() == pb::HealthState::Degraded)
        })
        .await
        .unwrap();
    assert_eq!(
        health_of(&status).unwrap(),
        (
            pb::HealthState::Degraded,
            "phase Failed: disk full".to_owned()
        )
    );
    let t = target(&status).unwrap();
    assert!(
        t.message.contains("disk full"),
        "the Target's message carries the rule's: {}",
        t.message
    );

    // A rule that does not compile never reaches a spoke: apply names the field.
    let bad = "apiVersion: gitfleet.dev/v1
kind: HealthRule
metadata: {name: broken}
spec:
  group: db.example.com
  kind: Database
  healthyWhen: status.phase ==
";
    let error = fleet.apply_yaml(bad).await.unwrap_err();
    let text = format!("{error:#}");
    assert!(
        text.contains("healthrule \"broken\": spec.healthyWhen: not a CEL expression"),
        "{text}"
    );

    // A hub-wide rule judges the kind for an App whose Project has no rule for it; the
    // Project's own rule still wins for its Apps.
    let hub_rule = "apiVersion: gitfleet.dev/v1
kind: HealthRule
metadata: {name: databases}
spec:
  group: db.example.com
  kind: Database
  healthyWhen: has(status.phase) && status.phase in ['Ready', 'Failed']
  message: \"'judged hub-wide'\"
";
    fleet.apply_yaml(hub_rule).await.unwrap();
    let listed = fleet.cli(&["get", "healthrules"]).await.unwrap();
    assert!(
        listed.contains("databases") && listed.contains("db.example.com/Database"),
        "{listed}"
    );
    fleet.git.write("apps/other/orders.yaml", DATABASE).unwrap();
    fleet.git.commit("another team's database").unwrap();
    let other = app("other", "default", "other");
    fleet.apply_yaml(&other).await.unwrap();
    fleet
        .wait_for("other", "the other Database applied", DEADLINE, |s| {
            health_of(s).is_some()
        })
        .await
        .unwrap();
    set_status(&fleet, "other", serde_json::json!({"phase": "Failed"}))
        .await
        .unwrap();
    let status = fleet
        .wait_for(
            "other",
            "the other Database healthy by the hub-wide rule",
            DEADLINE,
            |s| target(s).is_some_and(|t| t.health() == pb::HealthState::Healthy),
        )
        .await
        .unwrap();
    assert_eq!(
        health_of(&status).unwrap(),
        (pb::HealthState::Healthy, "judged hub-wide".to_owned())
    );
    let status = fleet.status("orders").await.unwrap();
    assert_eq!(
        health_of(&status).unwrap().0,
        pb::HealthState::Degraded,
        "the Project's rule still judges its App"
    );
    fleet.shutdown().await;
}
