//! The hub chart's CRDs (charts/gitfleet-hub/crds/) agree with the hub's Kubernetes-native API
//! (docs/kube-api.md): the kinds and plurals the controller watches, the group and version, the
//! status subresource it writes through, and printer columns that name fields the hub writes.
//! The CRDs' specs are open (`x-kubernetes-preserve-unknown-fields`): the hub's validation,
//! the same as `gitfleet apply`'s, is the schema, and a refusal shows in the object's status.

use std::collections::BTreeMap;

use gitfleet_core::kube_api::{
    CLUSTER_KIND, CLUSTER_PLURAL, ClusterFacts, GROUP, RESOURCE_KINDS, Readiness, TargetState,
    VERSION, app_status, cluster_status, document, ready_condition, repo_status,
};
use gitfleet_core::model::{HealthState, SyncState};
use gitfleet_core::resources::parse_document;
use serde_json::{Value, json};

const CRDS: &str = include_str!("../../charts/gitfleet-hub/crds/gitfleet.dev.yaml");

fn crds() -> BTreeMap<String, Value> {
    CRDS.split("\n---\n")
        .map(|doc| serde_saphyr::from_str::<Value>(doc).expect("a CRD parses"))
        .map(|crd| {
            let kind = crd["spec"]["names"]["kind"]
                .as_str()
                .expect("a kind")
                .to_owned();
            (kind, crd)
        })
        .collect()
}

fn version(crd: &Value) -> &Value {
    let versions = crd["spec"]["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 1, "one version");
    &versions[0]
}

/// A simple JSONPath (`.a.b`, `.a[?(@.type=="Ready")].status`), as printer columns use.
fn at<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = obj;
    let mut rest = path;
    while let Some(r) = rest.strip_prefix('.') {
        let end = r.find(['.', '[']).unwrap_or(r.len());
        v = v.get(&r[..end])?;
        rest = &r[end..];
        if let Some(f) = rest.strip_prefix("[?(@.") {
            let close = f.find(")]")?;
            let (field, want) = f[..close].split_once("==")?;
            let want = want.trim_matches('"');
            v = v.as_array()?.iter().find(|e| e[field] == want)?;
            rest = &f[close + 2..];
        }
    }
    Some(v)
}

fn columns(crd: &Value) -> Vec<(String, String)> {
    version(crd)["additionalPrinterColumns"]
        .as_array()
        .map(|cols| {
            cols.iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or_default().to_owned(),
                        c["jsonPath"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn with_conditions(mut status: Value) -> Value {
    status["conditions"] = json!([ready_condition(
        &Readiness::ready("Applied", "in force"),
        1,
        &json!({}),
        "2026-01-01T00:00:00Z"
    )]);
    status
}

#[test]
fn the_crds_declare_the_kinds_the_hub_watches() {
    let crds = crds();
    let mut expected: Vec<(String, String)> = RESOURCE_KINDS
        .iter()
        .map(|(k, p)| (k.as_str().to_owned(), (*p).to_owned()))
        .collect();
    expected.push((CLUSTER_KIND.to_owned(), CLUSTER_PLURAL.to_owned()));
    expected.sort();
    let mut found: Vec<(String, String)> = crds
        .iter()
        .map(|(k, crd)| {
            (
                k.clone(),
                crd["spec"]["names"]["plural"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(found, expected);
    for (kind, crd) in &crds {
        let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or_default();
        assert_eq!(
            crd["metadata"]["name"],
            format!("{plural}.{GROUP}"),
            "{kind}"
        );
        assert_eq!(crd["spec"]["group"], GROUP, "{kind}");
        assert_eq!(crd["spec"]["scope"], "Namespaced", "{kind}");
        let v = version(crd);
        assert_eq!(v["name"], VERSION, "{kind}");
        assert_eq!((&v["served"], &v["storage"]), (&json!(true), &json!(true)));
        assert_eq!(
            v["subresources"]["status"],
            json!({}),
            "{kind}: status subresource"
        );
        let schema = &v["schema"]["openAPIV3Schema"]["properties"];
        assert_eq!(
            schema["status"]["x-kubernetes-preserve-unknown-fields"], true,
            "{kind}: the hub writes its status"
        );
        if kind != CLUSTER_KIND {
            assert_eq!(
                schema["spec"]["x-kubernetes-preserve-unknown-fields"], true,
                "{kind}: the hub's validation is the spec's schema"
            );
        }
    }
    let cluster = &version(&crds[CLUSTER_KIND])["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(
        cluster["properties"]["labels"]["additionalProperties"]["type"],
        "string"
    );
}

#[test]
fn printer_columns_name_what_the_hub_writes() {
    let crds = crds();
    let meta = json!({"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z"});
    let target = TargetState {
        desired: "c".repeat(40),
        reported: "c".repeat(40),
        sync: SyncState::Synced,
        health: HealthState::Healthy,
    };
    let app = json!({
        "metadata": meta,
        "spec": {"repo": "platform", "path": "apps/web", "namespace": "web", "targets": [{"clusters": ["a"]}]},
        "status": with_conditions(app_status(&"c".repeat(40), "Complete", "", &[target])),
    });
    let repo = json!({
        "metadata": meta,
        "spec": {"url": "https://example.invalid/platform.git"},
        "status": with_conditions(repo_status(&"c".repeat(40), "").0),
    });
    let cluster = json!({
        "metadata": meta,
        "spec": {"labels": {"env": "prod"}},
        "status": cluster_status(&ClusterFacts {
            labels: [("env".to_owned(), "prod".to_owned())].into(),
            connected: true,
            agent_version: "0.1.0".into(),
            last_contact: Some("2026-01-01T00:00:00Z".into()),
            registered: "2026-01-01T00:00:00Z".into(),
        }),
    });
    let group = json!({"metadata": meta, "spec": {}, "status": with_conditions(json!({}))});
    let samples = [
        (
            "App",
            &app,
            &["Repo", "Revision", "Sync", "Health", "Age"][..],
        ),
        ("Repo", &repo, &["URL", "Revision", "Age"][..]),
        (
            "Cluster",
            &cluster,
            &["Labels", "Connected", "Last Contact", "Age"][..],
        ),
        ("ClusterGroup", &group, &["Ready", "Age"][..]),
        ("Project", &group, &["Ready", "Age"][..]),
    ];
    for (kind, sample, wanted) in samples {
        let cols = columns(&crds[kind]);
        for w in wanted {
            assert!(cols.iter().any(|(n, _)| n == w), "{kind}: no {w} column");
        }
        for (name, path) in cols {
            assert!(
                at(sample, &path).is_some_and(|v| !v.is_null()),
                "{kind}: column {name} ({path}) names nothing the hub writes: {sample}"
            );
        }
    }
    // The sample App's spec is one the hub takes.
    let doc = document(gitfleet_core::resources::Kind::App, "gitfleet", &app);
    parse_document("", &doc.to_string()).expect("the sample App is valid");
}
