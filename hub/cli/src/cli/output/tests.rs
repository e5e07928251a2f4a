use super::*;
use serde_json::json;

const REV_A: &str = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b";
const REV_B: &str = "ffeeddccbbaa99887766554433221100ffeeddcc";
const NOW: i64 = 1_800_000_000;

fn plain() -> Style {
    Style {
        color: false,
        now_unix: NOW,
    }
}

fn target(app: &str, cluster: &str) -> pb::TargetStatus {
    pb::TargetStatus {
        app: app.into(),
        cluster: cluster.into(),
        desired_revision: REV_A.into(),
        applied_revision: REV_A.into(),
        sync: pb::SyncState::Synced as i32,
        health: pb::HealthState::Healthy as i32,
        message: String::new(),
        resources: vec![],
        updated_at_unix: NOW - 5,
        cluster_connected: true,
        held: String::new(),
    }
}

fn resource(kind: &str, name: &str, action: &str, message: &str) -> pb::ResourceResult {
    pb::ResourceResult {
        api_version: "v1".into(),
        kind: kind.into(),
        namespace: "guestbook".into(),
        name: name.into(),
        action: action.into(),
        health: pb::HealthState::Healthy as i32,
        message: message.into(),
        source_file: format!("apps/guestbook/{name}.yaml"),
        hook: String::new(),
    }
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

fn columns(line: &str) -> Vec<&str> {
    line.split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

#[test]
fn apply_prints_one_kubectl_like_line_per_document() {
    let outcomes = vec![
        pb::ApplyOutcome {
            kind: "Repo".into(),
            name: "platform".into(),
            action: "unchanged".into(),
        },
        pb::ApplyOutcome {
            kind: "App".into(),
            name: "guestbook".into(),
            action: "created".into(),
        },
        pb::ApplyOutcome {
            kind: "ClusterGroup".into(),
            name: "eu".into(),
            action: "configured".into(),
        },
    ];
    let report = apply_report(&outcomes, false);
    assert_eq!(
        apply_text(&report, plain()),
        "repo/platform unchanged\napp/guestbook created\nclustergroup/eu configured\n"
    );
    let dry = apply_report(&outcomes[1..2], true);
    assert_eq!(
        apply_text(&dry, plain()),
        "app/guestbook created (dry run)\n"
    );

    let json: serde_json::Value = serde_json::from_str(&to_json(&dry)).unwrap();
    assert_eq!(
        json,
        json!({"dryRun": true, "outcomes": [{"kind": "App", "name": "guestbook", "action": "created"}]})
    );
}

#[test]
fn colour_only_when_asked() {
    let report = apply_report(
        &[pb::ApplyOutcome {
            kind: "App".into(),
            name: "a".into(),
            action: "created".into(),
        }],
        false,
    );
    let coloured = apply_text(
        &report,
        Style {
            color: true,
            now_unix: NOW,
        },
    );
    assert!(
        coloured.contains("\u{1b}[32mcreated\u{1b}[0m"),
        "{coloured:?}"
    );
    assert!(!apply_text(&report, plain()).contains('\u{1b}'));

    let status = status_report(&[target("a", "c")]);
    assert!(
        status_table(
            &status,
            false,
            Style {
                color: true,
                now_unix: NOW
            }
        )
        .contains('\u{1b}')
    );
    assert!(!status_table(&status, false, plain()).contains('\u{1b}'));
}

#[test]
fn status_table_shortens_revisions_and_sorts_targets() {
    let mut behind = target("guestbook", "prod-1");
    behind.applied_revision = REV_B.into();
    behind.sync = pb::SyncState::Syncing as i32;
    behind.health = pb::HealthState::Progressing as i32;
    behind.message = "applying".into();
    let mut fresh = target("api", "dev-1");
    fresh.applied_revision = String::new();
    fresh.sync = pb::SyncState::Pending as i32;
    fresh.health = pb::HealthState::Unspecified as i32;
    let report = status_report(&[behind, target("guestbook", "dev-1"), fresh]);

    let text = status_table(&report, false, plain());
    let rows = lines(&text);
    assert_eq!(
        columns(rows[0]),
        [
            "APP", "CLUSTER", "DESIRED", "APPLIED", "SYNC", "HEALTH", "MESSAGE"
        ]
    );
    assert_eq!(
        columns(rows[1]),
        ["api", "dev-1", "1a2b3c4d", "-", "Pending", "Unknown", "-"]
    );
    assert_eq!(
        columns(rows[2]),
        [
            "guestbook",
            "dev-1",
            "1a2b3c4d",
            "1a2b3c4d",
            "Synced",
            "Healthy",
            "-"
        ]
    );
    assert_eq!(
        columns(rows[3]),
        [
            "guestbook",
            "prod-1",
            "1a2b3c4d",
            "ffeeddcc",
            "Syncing",
            "Progressing",
            "applying"
        ]
    );
    assert_eq!(rows.len(), 4);
    assert!(
        rows.iter().all(|r| r == &r.trim_end()),
        "no trailing blanks"
    );
}

#[test]
fn status_json_keeps_full_revisions_and_every_field() {
    let mut t = target("guestbook", "dev-1");
    t.resources = vec![resource("Service", "web", "applied", "")];
    let report = status_report(&[t]);
    let json: serde_json::Value =
        serde_json::from_str(&render(OutputFormat::Json, &report, String::new)).unwrap();
    assert_eq!(
        json,
        json!({"targets": [{
            "app": "guestbook",
            "cluster": "dev-1",
            "desiredRevision": REV_A,
            "appliedRevision": REV_A,
            "sync": "Synced",
            "health": "Healthy",
            "message": "",
            "clusterConnected": true,
            "updatedAt": "2027-01-15T07:59:55Z",
            "resources": [{
                "apiVersion": "v1",
                "kind": "Service",
                "namespace": "guestbook",
                "name": "web",
                "action": "applied",
                "health": "Healthy",
                "message": "",
                "sourceFile": "apps/guestbook/web.yaml"
            }]
        }]})
    );
    // YAML carries the same document, and both read back into the report type.
    let yaml = render(OutputFormat::Yaml, &report, String::new);
    let back: StatusReport = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(back, report);
    let back: StatusReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn hooks_show_their_phase_in_the_hook_column() {
    let mut t = target("guestbook", "dev-1");
    let mut migrate = resource("Job", "migrate-x7k2p", "applied", "job completed");
    migrate.hook = "PreSync".into();
    t.resources = vec![resource("Deployment", "web", "applied", ""), migrate];
    let report = status_report(&[t]);
    let text = status_table(&report, true, plain());
    let rows = lines(&text);
    let header = rows
        .iter()
        .position(|r| r.starts_with("APP") && r.contains("RESOURCE"))
        .unwrap();
    assert_eq!(
        columns(rows[header])[..5],
        ["APP", "CLUSTER", "RESOURCE", "HOOK", "ACTION"]
    );
    assert_eq!(
        columns(rows[header + 1])[2..4],
        ["Deployment/guestbook/web", "-"]
    );
    assert_eq!(
        columns(rows[header + 2])[2..4],
        ["Job/guestbook/migrate-x7k2p", "PreSync"]
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["targets"][0]["resources"][1]["hook"], "PreSync");
    assert!(json["targets"][0]["resources"][0].get("hook").is_none());
}

#[test]
fn failed_resources_are_always_listed_and_others_only_with_the_flag() {
    let mut t = target("guestbook", "dev-1");
    t.sync = pb::SyncState::OutOfSync as i32;
    t.resources = vec![
        resource("Deployment", "web", "applied", ""),
        resource("Widget", "odd", "failed", "unknown kind Widget"),
    ];
    let report = status_report(&[t]);

    let text = status_table(&report, false, plain());
    let rows = lines(&text);
    let header = rows
        .iter()
        .position(|r| r.starts_with("APP") && r.contains("RESOURCE"))
        .unwrap();
    assert_eq!(rows[header - 1], "", "a blank line between the tables");
    assert_eq!(
        columns(rows[header + 1]),
        [
            "guestbook",
            "dev-1",
            "Widget/guestbook/odd",
            "-",
            "failed",
            "Healthy",
            "apps/guestbook/odd.yaml",
            "unknown kind Widget"
        ]
    );
    assert_eq!(rows.len(), header + 2, "only the failed object");

    let text = status_table(&report, true, plain());
    assert!(text.contains("Deployment/guestbook/web"), "{text}");
    assert!(text.contains("Widget/guestbook/odd"), "{text}");
}

#[test]
fn disconnected_clusters_say_so() {
    let mut t = target("a", "edge-1");
    t.cluster_connected = false;
    t.message = "last apply ok".into();
    let text = status_table(&status_report(&[t]), false, plain());
    assert!(
        text.contains("cluster disconnected; last apply ok"),
        "{text}"
    );
}

#[test]
fn held_targets_and_suspended_self_heal_say_so_in_the_message() {
    let mut held = target("a", "eu-1");
    held.held = "freeze campaign until 2026-12-07 06:00 UTC (alice: sale); self-heal suspended \
                 by freeze campaign"
        .into();
    held.message = "drifted".into();
    let mut steady = target("a", "eu-2");
    steady.held = "self-heal suspended by freeze maint".into();
    steady.message = "1 object drifted".into();
    let text = status_table(&status_report(&[held, steady]), false, plain());
    assert!(
        text.contains("held: freeze campaign until 2026-12-07 06:00 UTC (alice: sale); self-heal suspended by freeze campaign; drifted"),
        "{text}"
    );
    assert!(
        text.contains("self-heal suspended by freeze maint; 1 object drifted")
            && !text.contains("held: self-heal"),
        "{text}"
    );
}

#[test]
fn empty_status_explains_what_to_do() {
    let text = status_table(&status_report(&[]), false, plain());
    assert!(text.starts_with("No Targets"), "{text}");
    assert!(text.contains("gitfleet cluster list"), "{text}");
}

#[test]
fn unknown_enum_values_read_as_unknown() {
    assert_eq!(Sync::from_proto(99), Sync::Unknown);
    assert_eq!(Health::from_proto(-1), Health::Unknown);
    assert_eq!(Sync::from_proto(pb::SyncState::Failed as i32), Sync::Failed);
    assert_eq!(
        Health::from_proto(pb::HealthState::Missing as i32),
        Health::Missing
    );
}

#[test]
fn short_revisions() {
    assert_eq!(short_revision(REV_A), "1a2b3c4d");
    assert_eq!(short_revision("abc"), "abc");
    assert_eq!(short_revision(""), "-");
}

#[test]
fn durations_read_like_kubectl_ages() {
    assert_eq!(humanize(0), "0s");
    assert_eq!(humanize(12), "12s");
    assert_eq!(humanize(60), "1m");
    assert_eq!(humanize(192), "3m12s");
    assert_eq!(humanize(45 * 60 + 30), "45m");
    assert_eq!(humanize(3600), "1h");
    assert_eq!(humanize(5 * 3600 + 3 * 60 + 59), "5h3m");
    assert_eq!(humanize(3 * 86400 + 4 * 3600), "3d4h");
    assert_eq!(humanize(41 * 86400 + 3600), "41d");
    assert_eq!(relative(NOW - 12, NOW), "12s ago");
    assert_eq!(relative(NOW + 3600, NOW), "in 1h");
    assert_eq!(relative(NOW, NOW), "just now");
}

#[test]
fn rfc3339_times() {
    assert_eq!(rfc3339(0), None);
    assert_eq!(rfc3339(NOW).as_deref(), Some("2027-01-15T08:00:00Z"));
    assert_eq!(parse_rfc3339("2027-01-15T08:00:00Z"), Some(NOW));
}

fn cluster(name: &str, connected: bool, last_contact: i64) -> pb::ClusterInfo {
    pb::ClusterInfo {
        name: name.into(),
        labels: [
            ("env".to_owned(), "prod".to_owned()),
            ("region".to_owned(), "eu".to_owned()),
        ]
        .into_iter()
        .collect(),
        agent_version: "0.1.0".into(),
        connected,
        last_contact_unix: last_contact,
        registered_at_unix: NOW - 86_400,
        certificate_expires_unix: NOW + 30 * 86_400,
        revoked: false,
    }
}

#[test]
fn cluster_table_humanises_last_contact() {
    let report = cluster_list_report(&[
        cluster("prod-2", false, 0),
        cluster("prod-1", true, NOW - 12),
    ]);
    let text = cluster_table(&report, plain());
    let rows = lines(&text);
    assert_eq!(
        columns(rows[0]),
        ["NAME", "LABELS", "CONNECTED", "LAST CONTACT", "AGENT"]
    );
    assert_eq!(
        columns(rows[1]),
        ["prod-1", "env=prod,region=eu", "yes", "12s ago", "0.1.0"]
    );
    assert_eq!(
        columns(rows[2]),
        ["prod-2", "env=prod,region=eu", "no", "never", "0.1.0"]
    );

    let json: serde_json::Value = serde_json::from_str(&to_json(&report)).unwrap();
    assert_eq!(json["clusters"][0]["lastContact"], "2027-01-15T07:59:48Z");
    assert_eq!(json["clusters"][0]["labels"]["region"], "eu");
    assert_eq!(json["clusters"][1]["lastContact"], serde_json::Value::Null);
    assert_eq!(
        json["clusters"][1]["certificateExpires"],
        "2027-02-14T08:00:00Z"
    );
}

#[test]
fn revoked_clusters_say_so_instead_of_disconnected() {
    let mut revoked = cluster("gone-1", false, NOW - 600);
    revoked.revoked = true;
    let report = cluster_list_report(&[revoked]);
    let text = cluster_table(&report, plain());
    assert_eq!(
        columns(lines(&text)[1]),
        [
            "gone-1",
            "env=prod,region=eu",
            "revoked",
            "10m ago",
            "0.1.0"
        ]
    );
    let json: serde_json::Value = serde_json::from_str(&to_json(&report)).unwrap();
    assert_eq!(json["clusters"][0]["revoked"], true);
    assert_eq!(json["clusters"][0]["connected"], false);
}

#[test]
fn no_clusters_says_how_to_register_one() {
    let text = cluster_table(&cluster_list_report(&[]), plain());
    assert!(text.contains("gitfleet token create"), "{text}");
}

#[test]
fn token_is_printed_first_with_its_expiry() {
    let report = token_report(&pb::CreateTokenResponse {
        token: "gft_secret".into(),
        token_id: "tok-1".into(),
        expires_at_unix: NOW + 3600,
    });
    let text = token_text(&report, "https://hub:7443", plain());
    assert_eq!(text.lines().next(), Some("gft_secret"));
    assert!(
        text.contains("expires:  2027-01-15T09:00:00Z (in 1h)"),
        "{text}"
    );
    assert!(text.contains("shown only once"), "{text}");
    assert!(
        text.contains("gitfleet-spoke run --hub https://hub:7443 --hub-ca hub-ca.pem --bootstrap-token gft_secret \\\n"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&to_json(&report)).unwrap();
    assert_eq!(
        json,
        json!({"token": "gft_secret", "tokenId": "tok-1", "expiresAt": "2027-01-15T09:00:00Z", "expiresAtUnix": NOW + 3600})
    );
}

fn doc(value: serde_json::Value) -> pb::ResourceDocument {
    pb::ResourceDocument {
        origin: String::new(),
        json: value.to_string(),
    }
}

fn sample_resources() -> Vec<pb::ResourceDocument> {
    vec![
        doc(
            json!({"apiVersion": "gitfleet.dev/v1", "kind": "App", "metadata": {"name": "guestbook"},
            "spec": {"repo": "platform", "path": "apps/guestbook", "namespace": "guestbook",
                     "targets": [{"clusterSelector": {"matchLabels": {"env": "prod"},
                                   "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}},
                                 {"clusterGroup": "eu"}, {"clusters": ["edge-1", "edge-2"]}],
                     "syncPolicy": {"prune": true, "selfHeal": true, "suspended": true, "force": false}}}),
        ),
        doc(
            json!({"apiVersion": "gitfleet.dev/v1", "kind": "Repo", "metadata": {"name": "platform"},
            "spec": {"url": "https://git.example/platform.git", "ref": {"branch": "main"}, "pollInterval": "30s"},
            "status": {"commit": REV_A, "error": "", "lastFetchUnix": NOW - 2, "lastSuccessUnix": NOW - 12}}),
        ),
        doc(
            json!({"apiVersion": "gitfleet.dev/v1", "kind": "ClusterGroup", "metadata": {"name": "eu"},
            "spec": {"selector": {"matchExpressions": [{"key": "legacy", "operator": "DoesNotExist"}],
                                  "matchLabels": {"region": "eu"}}}}),
        ),
    ]
}

#[test]
fn get_tables_name_the_kubernetes_object_a_resource_belongs_to() {
    let mut values = resource_values(&sample_resources()[..1]);
    let mut owned = values[0].clone();
    owned["metadata"]["name"] = json!("web");
    owned["metadata"]["annotations"] =
        json!({ gitfleet_core::kube_api::OWNER_ANNOTATION: "gitfleet/web" });
    values.push(owned);
    let text = resources_table(&values, plain());
    let rows = lines(&text);
    assert_eq!(columns(rows[0]).last(), Some(&"MANAGED BY"), "{text}");
    assert_eq!(columns(rows[1]).last(), Some(&"-"), "{text}");
    assert_eq!(
        columns(rows[2]).last(),
        Some(&"kubernetes:gitfleet/web"),
        "{text}"
    );
}

#[test]
fn get_tables_show_the_essentials_per_kind() {
    let values = resource_values(&sample_resources()[..1]);
    let text = resources_table(&values, plain());
    let rows = lines(&text);
    assert_eq!(
        columns(rows[0]),
        [
            "NAME",
            "REPO",
            "PATH",
            "NAMESPACE",
            "TARGETS",
            "SUSPENDED",
            "PROJECT"
        ]
    );
    assert_eq!(
        columns(rows[1]),
        [
            "guestbook",
            "platform",
            "apps/guestbook",
            "guestbook",
            "env=prod,tier in (a,b); group eu; clusters edge-1,edge-2",
            "yes",
            "default"
        ]
    );

    let text = resources_table(&resource_values(&sample_resources()), plain());
    // Several kinds: one table each, names prefixed with the kind.
    assert!(text.contains("app/guestbook"), "{text}");
    assert!(
        text.contains(
            "repo/platform   https://git.example/platform.git   branch main   1a2b3c4d   12s ago   -"
        ),
        "{text}"
    );
    let repo = text.find("repo/platform").unwrap();
    assert!(
        repo < text.find("app/guestbook").unwrap(),
        "Repos first: {text}"
    );
    assert!(
        text.contains("clustergroup/eu   region=eu,!legacy"),
        "{text}"
    );
}

#[test]
fn get_documents_are_the_resource_or_a_list() {
    let values = resource_values(&sample_resources()[1..2]);
    assert_eq!(values.len(), 1);
    let single = resource_document(values.clone(), true);
    assert_eq!(single["kind"], "Repo");
    let list = resource_document(values, false);
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["metadata"]["name"], "platform");
    assert_eq!(resources_table(&[], plain()), "No resources found\n");
}

#[test]
fn get_output_applies_back() {
    // `gitfleet get all -o yaml > fleet.yaml && gitfleet apply -f fleet.yaml` round-trips,
    // less the status the hub reports.
    let values = resource_values(&sample_resources());
    let yaml = to_yaml(&resource_document(values.clone(), false));
    let docs = super::super::documents::parse_text(
        "fleet.yaml",
        &yaml,
        super::super::documents::Format::Yaml,
        &gitfleet_core::yaml::Budget::new(gitfleet_core::yaml::Limits::DEFAULT),
    )
    .unwrap();
    let back: Vec<Value> = docs.into_iter().map(|d| d.value).collect();
    let mut expected = values;
    for v in &mut expected {
        v.as_object_mut().unwrap().remove("status");
    }
    assert_eq!(back, expected);
}

#[test]
fn invalid_stored_json_is_shown_not_hidden() {
    let values = resource_values(&[pb::ResourceDocument {
        origin: String::new(),
        json: "{not json".into(),
    }]);
    assert_eq!(values, [Value::String("{not json".into())]);
}

#[test]
fn delete_text_names_the_resource() {
    let report = DeleteReport {
        kind: "ClusterGroup".into(),
        name: "eu".into(),
        deleted: true,
    };
    assert_eq!(delete_text(&report), "clustergroup/eu deleted\n");
}

#[test]
fn repo_table_shows_fetch_errors() {
    let values = vec![
        json!({"kind": "Repo", "metadata": {"name": "p"}, "spec": {"url": "file:///x"},
        "status": {"commit": "", "error": "fetching file:///x: not found", "lastSuccessUnix": 0}}),
    ];
    let text = resources_table(&values, plain());
    let rows = lines(&text);
    assert_eq!(
        columns(rows[0]),
        ["NAME", "URL", "REF", "COMMIT", "FETCHED", "MESSAGE"]
    );
    assert_eq!(
        columns(rows[1]),
        [
            "p",
            "file:///x",
            "branch main",
            "-",
            "never",
            "fetching file:///x: not found"
        ]
    );
}

#[test]
fn resources_are_listed_repos_first_then_by_name() {
    let values = resource_values(&[
        doc(json!({"kind": "ClusterGroup", "metadata": {"name": "a"}})),
        doc(json!({"kind": "App", "metadata": {"name": "web"}})),
        doc(json!({"kind": "App", "metadata": {"name": "api"}})),
        doc(json!({"kind": "Repo", "metadata": {"name": "z"}})),
    ]);
    let order: Vec<String> = values
        .iter()
        .map(|v| {
            format!(
                "{}/{}",
                v["kind"].as_str().unwrap(),
                v["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(order, ["Repo/z", "App/api", "App/web", "ClusterGroup/a"]);
}

#[test]
fn converged_means_synced_and_healthy_at_the_desired_revision() {
    let good = target("web", "dev-1");
    assert!(converged(&status_report(std::slice::from_ref(&good)), None));
    assert!(
        !converged(&status_report(&[]), None),
        "nothing to wait for is not done"
    );

    let mut behind = target("web", "prod-1");
    behind.applied_revision = REV_B.into();
    let mut degraded = target("web", "prod-2");
    degraded.health = pb::HealthState::Degraded as i32;
    degraded.message = "1/3 replicas available".into();
    let mut unknown = target("web", "prod-3");
    unknown.desired_revision = String::new();
    unknown.applied_revision = String::new();
    for t in [&behind, &degraded, &unknown] {
        assert!(
            !converged(&status_report(&[good.clone(), t.clone()]), None),
            "{t:?}"
        );
    }

    // --revision: converged at its desired revision is not enough when that is not the one asked
    // for; a prefix, in either case, names it.
    let at_good = status_report(std::slice::from_ref(&good));
    assert!(converged(&at_good, Some(&REV_A[..7])));
    assert!(converged(&at_good, Some(&REV_A.to_ascii_uppercase()[..10])));
    assert!(!converged(&at_good, Some(&REV_B[..7])));
    assert_eq!(
        pending(&at_good, Some(&REV_B[..8])),
        format!(
            "1 of 1 not yet: web on dev-1 is Synced/Healthy at 1a2b3c4d (wants {})",
            &REV_B[..8]
        )
    );

    let report = status_report(&[good, behind, degraded]);
    assert_eq!(
        pending(&report, None),
        "2 of 3 not yet: web on prod-1 is Synced/Healthy at ffeeddcc (wants 1a2b3c4d); \
         web on prod-2 is Synced/Degraded at 1a2b3c4d (wants 1a2b3c4d): 1/3 replicas available"
    );
    assert!(pending(&status_report(&[]), None).starts_with("no Targets match"));
}

fn pending_cluster(name: &str, requested_at: i64) -> pb::PendingCluster {
    pb::PendingCluster {
        name: name.into(),
        labels: [("env".to_owned(), "prod".to_owned())]
            .into_iter()
            .collect(),
        agent_version: "0.1.0".into(),
        requested_at_unix: requested_at,
    }
}

#[test]
fn pending_clusters_are_sorted_with_when_they_asked() {
    let report = pending_list_report(&[
        pending_cluster("prod-2", 0),
        pending_cluster("prod-1", NOW - 200),
    ]);
    let text = pending_table(&report, plain());
    let rows = lines(&text);
    assert_eq!(columns(rows[0]), ["NAME", "LABELS", "AGENT", "REQUESTED"]);
    assert_eq!(
        columns(rows[1]),
        ["prod-1", "env=prod", "0.1.0", "3m20s ago"]
    );
    assert_eq!(columns(rows[2]), ["prod-2", "env=prod", "0.1.0", "never"]);
    assert_eq!(rows.len(), 3);

    let json: serde_json::Value = serde_json::from_str(&to_json(&report)).unwrap();
    assert_eq!(
        json["clusters"][0],
        json!({"name": "prod-1", "labels": {"env": "prod"}, "agentVersion": "0.1.0", "requestedAt": "2027-01-15T07:56:40Z"})
    );
    assert_eq!(json["clusters"][1]["requestedAt"], serde_json::Value::Null);
    let back: PendingListReport = serde_saphyr::from_str(&to_yaml(&report)).unwrap();
    assert_eq!(back, report);
}

#[test]
fn no_pending_clusters_says_when_there_would_be_some() {
    let text = pending_table(&pending_list_report(&[]), plain());
    assert!(text.starts_with("No registrations waiting"), "{text}");
    assert!(text.contains("--require-approval"), "{text}");
}

#[test]
fn approve_and_revoke_say_what_happens_next() {
    let approved = ApproveReport {
        name: "prod-1".into(),
        approved: true,
    };
    let text = approve_text(&approved);
    assert!(text.starts_with("cluster/prod-1 approved; "), "{text}");
    assert!(text.contains("next registration retry"), "{text}");
    assert_eq!(
        serde_json::to_value(&approved).unwrap(),
        json!({"name": "prod-1", "approved": true})
    );

    let revoked = RevokeClusterReport {
        name: "prod-1".into(),
        revoked: true,
    };
    let text = revoke_cluster_text(&revoked);
    assert!(text.starts_with("cluster/prod-1 revoked; "), "{text}");
    assert!(text.contains("refused from now on"), "{text}");
    assert_eq!(
        serde_json::to_value(&revoked).unwrap(),
        json!({"name": "prod-1", "revoked": true})
    );

    let token = RevokeTokenReport {
        token_id: "8e1adea849d1".into(),
        revoked: true,
    };
    let text = revoke_token_text(&token);
    assert!(text.starts_with("token/8e1adea849d1 revoked; "), "{text}");
    assert!(text.contains("keep their certificates"), "{text}");
    assert_eq!(
        serde_json::to_value(&token).unwrap(),
        json!({"tokenId": "8e1adea849d1", "revoked": true})
    );
    for text in [
        approve_text(&approved),
        revoke_cluster_text(&revoked),
        revoke_token_text(&token),
    ] {
        assert_eq!(text.lines().count(), 1, "one line: {text}");
        assert!(text.ends_with('\n'));
    }
}

fn token_info(id: &str, uses: u32, max_uses: u32, expires_at: i64, revoked: bool) -> pb::TokenInfo {
    pb::TokenInfo {
        token_id: id.into(),
        expires_at_unix: expires_at,
        max_uses,
        uses,
        labels: [
            ("region".to_owned(), "eu".to_owned()),
            ("env".to_owned(), "prod".to_owned()),
        ]
        .into_iter()
        .collect(),
        description: String::new(),
        revoked,
        allowed_label_keys: Vec::new(),
        cluster_name: String::new(),
    }
}

#[test]
fn token_table_shows_uses_expiry_and_revocation_never_a_secret() {
    let mut described = token_info("aaa", 0, 0, NOW + 3600, false);
    described.description = "eu wave".into();
    described.labels.clear();
    let mut pinned = token_info("ccc", 1, 1, NOW + 7200, false);
    pinned.cluster_name = "eu-prod-3".into();
    pinned.allowed_label_keys = vec!["zone".into(), "rack".into()];
    let report = token_list_report(&[pinned, described, token_info("bbb", 2, 5, NOW - 120, true)]);
    let text = token_table(&report, plain());
    let rows = lines(&text);
    assert_eq!(
        columns(rows[0]),
        [
            "ID",
            "DESCRIPTION",
            "CLUSTER",
            "LABELS",
            "USES",
            "EXPIRES",
            "REVOKED"
        ]
    );
    // Soonest expiry first.
    assert_eq!(
        columns(rows[1]),
        [
            "bbb",
            "-",
            "any",
            "env=prod,region=eu",
            "2/5",
            "expired 2m ago",
            "yes"
        ]
    );
    assert_eq!(
        columns(rows[2]),
        ["aaa", "eu wave", "any", "-", "0/unlimited", "in 1h", "no"]
    );
    // The keys a spoke may add show as KEY=*.
    assert_eq!(
        columns(rows[3]),
        [
            "ccc",
            "-",
            "eu-prod-3",
            "env=prod,region=eu,rack=*,zone=*",
            "1/1",
            "in 2h",
            "no"
        ]
    );
    assert!(!text.contains("gft_"), "{text}");

    let json: serde_json::Value = serde_json::from_str(&to_json(&report)).unwrap();
    assert_eq!(
        json["tokens"][1],
        json!({
            "tokenId": "aaa",
            "description": "eu wave",
            "labels": {},
            "uses": 0,
            "maxUses": null,
            "expiresAt": "2027-01-15T09:00:00Z",
            "expiresAtUnix": NOW + 3600,
            "revoked": false
        })
    );
    assert_eq!(json["tokens"][0]["maxUses"], 5);
    assert_eq!(json["tokens"][2]["cluster"], "eu-prod-3");
    assert_eq!(
        json["tokens"][2]["allowedLabelKeys"],
        json!(["rack", "zone"])
    );
    let back: TokenListReport = serde_saphyr::from_str(&to_yaml(&report)).unwrap();
    assert_eq!(back, report);
}

#[test]
fn token_table_colours_what_makes_a_token_unusable() {
    let style = Style {
        color: true,
        now_unix: NOW,
    };
    let report = token_list_report(&[token_info("used", 1, 1, NOW + 60, false)]);
    let text = token_table(&report, style);
    let row = lines(&text)[1].to_owned();
    assert!(row.contains("\u{1b}["), "used up is coloured: {row:?}");
    let report = token_list_report(&[token_info("fine", 0, 3, NOW + 60, false)]);
    let text = token_table(&report, style);
    assert!(!lines(&text)[1].contains("\u{1b}["), "{text:?}");
}

#[test]
fn no_tokens_says_how_to_create_one() {
    let text = token_table(&token_list_report(&[]), plain());
    assert!(text.contains("gitfleet token create"), "{text}");
}

#[test]
fn empty_cluster_list_points_at_pending_registrations() {
    let text = cluster_table(&cluster_list_report(&[]), plain());
    assert!(text.contains("gitfleet cluster pending"), "{text}");
}

/// `-o yaml` is read by YAML 1.1 parsers too (kubectl's, PyYAML): strings they would take for
/// numbers, booleans or nulls are quoted, and every value reads back as it was.
#[test]
fn yaml_output_quotes_strings_other_parsers_would_mistype() {
    let ambiguous = [
        "0755",
        "yes",
        "no",
        "on",
        "off",
        "y",
        "n",
        "true",
        "null",
        "~",
        "",
        "1_000",
        "1e3",
        "0x1F",
        "12:30",
        ".inf",
        "-",
        "- a",
        "a: b",
        "#x",
        "@x",
        "*x",
        "&x",
        "!x",
        "%x",
        "'",
        "\"",
        "multi\nline",
        " padded ",
    ];
    let value: serde_json::Value = ambiguous
        .iter()
        .map(|s| ((*s).to_owned(), serde_json::Value::String((*s).to_owned())))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let yaml = to_yaml(&value);
    for line in yaml.lines() {
        for word in ["0755", "yes", "no", "on", "off", "y", "n", "1_000", "12:30"] {
            assert!(
                !line.ends_with(&format!(": {word}")),
                "{word} unquoted: {line}\n{yaml}"
            );
        }
    }
    let back = gitfleet_core::yaml::Budget::new(gitfleet_core::yaml::Limits::DEFAULT)
        .document(&yaml)
        .unwrap();
    assert_eq!(back, value, "{yaml}");
    let back: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(back, value, "{yaml}");
}
