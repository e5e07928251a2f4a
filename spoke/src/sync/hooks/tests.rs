use serde_json::json;

use super::*;
use crate::model::ObjectRef;

fn object(kind: &str, name: &str, annotations: &[(&str, &str)]) -> Manifest {
    let mut body = json!({"apiVersion": "batch/v1", "kind": kind, "metadata": {"name": name}});
    if kind != "Job" {
        body["apiVersion"] = "v1".into();
    }
    let map: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect();
    if !map.is_empty() {
        body["metadata"]["annotations"] = Value::Object(map);
    }
    Manifest {
        object: ObjectRef {
            api_version: body["apiVersion"].as_str().unwrap_or_default().into(),
            kind: kind.into(),
            namespace: "ns".into(),
            name: name.into(),
        },
        body,
        source_file: String::new(),
    }
}

fn hook_role(annotations: &[(&str, &str)], first_sync: bool) -> Result<Role, String> {
    role(&object("Job", "j", annotations).body, first_sync)
}

fn phases(annotations: &[(&str, &str)], first_sync: bool) -> Vec<Phase> {
    match hook_role(annotations, first_sync) {
        Ok(Role::Hook { phases, .. }) => phases,
        other => panic!("not a hook: {other:?}"),
    }
}

fn policies(annotations: &[(&str, &str)]) -> Vec<DeletePolicy> {
    match hook_role(annotations, false) {
        Ok(Role::Hook { policies, .. }) => policies,
        other => panic!("not a hook: {other:?}"),
    }
}

#[test]
fn an_object_without_hook_annotations_is_ordinary() {
    assert_eq!(hook_role(&[], true), Ok(Role::Ordinary));
    // A delete policy alone does not make a hook.
    assert_eq!(
        hook_role(&[(ANNOTATION_DELETE_POLICY, "HookSucceeded")], true),
        Ok(Role::Ordinary)
    );
}

#[test]
fn gitfleet_hooks_take_a_comma_list_of_phases() {
    assert_eq!(
        phases(&[(ANNOTATION_HOOK, "PreSync")], true),
        [Phase::PreSync]
    );
    assert_eq!(
        phases(&[(ANNOTATION_HOOK, "PreSync, PostSync")], true),
        [Phase::PreSync, Phase::PostSync]
    );
    assert_eq!(phases(&[(ANNOTATION_HOOK, "Sync")], true), [Phase::Sync]);
    assert_eq!(
        phases(&[(ANNOTATION_HOOK, "SyncFail")], true),
        [Phase::SyncFail]
    );
}

#[test]
fn an_unknown_hook_name_is_an_error_naming_the_annotation_and_value() {
    let error = hook_role(&[(ANNOTATION_HOOK, "PreSync,Later")], true).unwrap_err();
    assert!(error.contains(ANNOTATION_HOOK), "{error}");
    assert!(error.contains("\"Later\""), "{error}");
    let error = hook_role(&[(ARGO_HOOK, "presync")], true).unwrap_err();
    assert!(
        error.contains(ARGO_HOOK) && error.contains("\"presync\""),
        "{error}"
    );
    let error = hook_role(&[(HELM_HOOK, "pre-instal")], true).unwrap_err();
    assert!(
        error.contains(HELM_HOOK) && error.contains("\"pre-instal\""),
        "{error}"
    );
    let error = hook_role(&[(ANNOTATION_HOOK, " , ")], true).unwrap_err();
    assert!(error.contains("names no hook"), "{error}");
}

#[test]
fn argo_cd_hooks_are_aliases_and_gitfleets_win() {
    assert_eq!(phases(&[(ARGO_HOOK, "PostSync")], true), [Phase::PostSync]);
    assert_eq!(
        phases(
            &[(ARGO_HOOK, "PostSync"), (ANNOTATION_HOOK, "PreSync")],
            true
        ),
        [Phase::PreSync]
    );
    // Argo CD's own annotation beats Helm's, as in Argo CD.
    assert_eq!(
        phases(&[(ARGO_HOOK, "Sync"), (HELM_HOOK, "pre-install")], true),
        [Phase::Sync]
    );
}

#[test]
fn argo_cd_skip_and_deletion_hooks_are_skipped_with_a_reason() {
    let Ok(Role::Skipped(reason)) = hook_role(&[(ARGO_HOOK, "Skip")], true) else {
        panic!("Skip is not skipped");
    };
    assert!(reason.contains("Skip"), "{reason}");
    let Ok(Role::Skipped(reason)) = hook_role(&[(ARGO_HOOK, "PostDelete")], true) else {
        panic!("PostDelete is not skipped");
    };
    assert!(reason.contains("deletion hooks"), "{reason}");
}

#[test]
fn helm_install_hooks_run_on_the_first_sync_and_upgrade_hooks_later() {
    assert_eq!(
        phases(&[(HELM_HOOK, "pre-install")], true),
        [Phase::PreSync]
    );
    assert_eq!(
        phases(&[(HELM_HOOK, "post-install")], true),
        [Phase::PostSync]
    );
    assert_eq!(
        phases(&[(HELM_HOOK, "pre-upgrade")], false),
        [Phase::PreSync]
    );
    assert_eq!(
        phases(&[(HELM_HOOK, "post-upgrade")], false),
        [Phase::PostSync]
    );
    assert_eq!(
        phases(&[(HELM_HOOK, "pre-install,pre-upgrade")], true),
        [Phase::PreSync]
    );
    assert_eq!(
        phases(&[(HELM_HOOK, "pre-install,pre-upgrade")], false),
        [Phase::PreSync]
    );
    let Ok(Role::Skipped(reason)) = hook_role(&[(HELM_HOOK, "pre-upgrade")], true) else {
        panic!("pre-upgrade ran on the first sync");
    };
    assert!(
        reason.contains("pre-upgrade") && reason.contains("first sync"),
        "{reason}"
    );
    let Ok(Role::Skipped(reason)) = hook_role(&[(HELM_HOOK, "post-install")], false) else {
        panic!("post-install ran on an upgrade");
    };
    assert!(reason.contains("installed before"), "{reason}");
}

#[test]
fn helm_test_delete_and_rollback_hooks_are_skipped_with_a_reason() {
    for value in [
        "test",
        "test-success",
        "pre-delete",
        "post-delete",
        "pre-rollback",
        "post-rollback",
    ] {
        let Ok(Role::Skipped(reason)) = hook_role(&[(HELM_HOOK, value)], true) else {
            panic!("{value} is not skipped");
        };
        assert!(
            reason.contains(value) && reason.contains("not run by gitfleet"),
            "{reason}"
        );
    }
    // Mixed with one that runs: it runs.
    assert_eq!(
        phases(&[(HELM_HOOK, "pre-install,pre-delete")], true),
        [Phase::PreSync]
    );
}

#[test]
fn delete_policies_default_to_before_hook_creation_and_have_aliases() {
    assert_eq!(
        policies(&[(ANNOTATION_HOOK, "PreSync")]),
        [DeletePolicy::BeforeHookCreation]
    );
    assert_eq!(
        policies(&[
            (ANNOTATION_HOOK, "PreSync"),
            (ANNOTATION_DELETE_POLICY, "HookSucceeded, HookFailed")
        ]),
        [DeletePolicy::HookSucceeded, DeletePolicy::HookFailed]
    );
    assert_eq!(
        policies(&[
            (ARGO_HOOK, "PreSync"),
            (ARGO_DELETE_POLICY, "HookSucceeded")
        ]),
        [DeletePolicy::HookSucceeded]
    );
    assert_eq!(
        policies(&[
            (HELM_HOOK, "pre-upgrade"),
            (HELM_DELETE_POLICY, "before-hook-creation,hook-succeeded")
        ]),
        [
            DeletePolicy::BeforeHookCreation,
            DeletePolicy::HookSucceeded
        ]
    );
    // gitfleet's own wins over the others.
    assert_eq!(
        policies(&[
            (ANNOTATION_HOOK, "PreSync"),
            (ANNOTATION_DELETE_POLICY, "HookFailed"),
            (HELM_DELETE_POLICY, "hook-succeeded")
        ]),
        [DeletePolicy::HookFailed]
    );
}

#[test]
fn an_unknown_delete_policy_is_an_error_naming_the_annotation_and_value() {
    let error = hook_role(
        &[
            (ANNOTATION_HOOK, "PreSync"),
            (ANNOTATION_DELETE_POLICY, "Never"),
        ],
        true,
    )
    .unwrap_err();
    assert!(
        error.contains(ANNOTATION_DELETE_POLICY) && error.contains("\"Never\""),
        "{error}"
    );
    // Helm's spelling under gitfleet's annotation is not accepted, and the other way round.
    let error = hook_role(
        &[
            (ANNOTATION_HOOK, "PreSync"),
            (ANNOTATION_DELETE_POLICY, "hook-succeeded"),
        ],
        true,
    )
    .unwrap_err();
    assert!(error.contains("HookSucceeded"), "{error}");
    let error = hook_role(
        &[
            (HELM_HOOK, "pre-install"),
            (HELM_DELETE_POLICY, "HookSucceeded"),
        ],
        true,
    )
    .unwrap_err();
    assert!(error.contains("hook-succeeded"), "{error}");
}

#[test]
fn weights_come_from_helm_or_the_wave_and_must_be_integers() {
    let weight = |annotations: &[(&str, &str)]| match hook_role(annotations, true) {
        Ok(Role::Hook { weight, .. }) => weight,
        other => panic!("not a hook: {other:?}"),
    };
    assert_eq!(weight(&[(ANNOTATION_HOOK, "PreSync")]), 0);
    assert_eq!(
        weight(&[(HELM_HOOK, "pre-install"), (HELM_WEIGHT, "-5")]),
        -5
    );
    assert_eq!(
        weight(&[
            (ARGO_HOOK, "PreSync"),
            ("argocd.argoproj.io/sync-wave", "3")
        ]),
        3
    );
    let error = hook_role(&[(HELM_HOOK, "pre-install"), (HELM_WEIGHT, "first")], true).unwrap_err();
    assert!(
        error.contains(HELM_WEIGHT) && error.contains("\"first\""),
        "{error}"
    );
}

#[test]
fn classify_sorts_objects_and_orders_a_phase_by_weight_kind_and_name() {
    let plan = classify(
        vec![
            object("Deployment", "web", &[]),
            object("Job", "b-migrate", &[(ANNOTATION_HOOK, "PreSync")]),
            object("Job", "a-migrate", &[(ANNOTATION_HOOK, "PreSync")]),
            object("ConfigMap", "settings", &[(ANNOTATION_HOOK, "PreSync")]),
            object(
                "Job",
                "early",
                &[(HELM_HOOK, "pre-install"), (HELM_WEIGHT, "-1")],
            ),
            object("Job", "smoke", &[(ARGO_HOOK, "PostSync")]),
            object("Job", "upgrade", &[(HELM_HOOK, "pre-upgrade")]),
            object("Job", "bad", &[(ANNOTATION_HOOK, "Before")]),
        ],
        true,
    );
    let names = |hooks: Vec<&Hook>| -> Vec<String> {
        hooks
            .iter()
            .map(|h| h.manifest.object.name.clone())
            .collect()
    };
    assert_eq!(
        plan.ordinary
            .iter()
            .map(|m| m.object.name.as_str())
            .collect::<Vec<_>>(),
        ["web"]
    );
    assert_eq!(
        names(plan.phase(Phase::PreSync)),
        ["early", "settings", "a-migrate", "b-migrate"]
    );
    assert_eq!(names(plan.phase(Phase::PostSync)), ["smoke"]);
    assert!(plan.phase(Phase::Sync).is_empty());
    assert_eq!(plan.skipped.len(), 1);
    assert_eq!(plan.skipped[0].0.object.name, "upgrade");
    assert_eq!(plan.invalid.len(), 1);
    assert_eq!(plan.invalid[0].0.object.name, "bad");
}

#[test]
fn a_hook_named_by_the_server_keeps_its_prefix() {
    let mut manifest = object("Job", "migrate-", &[(ANNOTATION_HOOK, "PreSync")]);
    let metadata = manifest.body["metadata"].as_object_mut().unwrap();
    metadata.remove("name");
    metadata.insert("generateName".into(), "migrate-".into());
    assert!(is_hook_body(metadata));
    let plan = classify(
        vec![
            manifest,
            object("Job", "fixed", &[(ANNOTATION_HOOK, "Sync")]),
        ],
        true,
    );
    assert_eq!(plan.hooks[0].generate_name.as_deref(), Some("migrate-"));
    assert_eq!(plan.hooks[1].generate_name, None);
}

#[test]
fn a_hook_run_follows_its_objects_health() {
    assert_eq!(run_state(Health::Healthy), Run::Succeeded);
    assert_eq!(run_state(Health::Degraded), Run::Failed);
    for health in [
        Health::Progressing,
        Health::Missing,
        Health::Unknown,
        Health::Suspended,
    ] {
        assert_eq!(run_state(health), Run::Running, "{health:?}");
    }
}

#[test]
fn a_wave_opens_the_gate_only_when_all_of_it_is_healthy() {
    assert_eq!(gate(Vec::new()), Gate::Open);
    assert_eq!(
        gate(vec![("job/a".to_owned(), Health::Healthy, "job completed")]),
        Gate::Open
    );
    assert_eq!(
        gate(vec![
            ("cronjob/nightly".to_owned(), Health::Suspended, "suspended"),
            ("job/a".to_owned(), Health::Healthy, ""),
        ]),
        Gate::Open,
        "a suspended object does not hold the next wave back"
    );
    for health in [Health::Missing, Health::Unknown] {
        assert!(
            matches!(gate(vec![("job/a".to_owned(), health, "")]), Gate::Wait(_)),
            "{health:?}"
        );
    }
    let waiting = gate(vec![
        ("job/a".to_owned(), Health::Healthy, ""),
        (
            "deployment/web".to_owned(),
            Health::Progressing,
            "0/1 ready",
        ),
    ]);
    assert_eq!(
        waiting,
        Gate::Wait(vec!["deployment/web (Progressing: 0/1 ready)".to_owned()])
    );
    let broken = gate(vec![
        ("deployment/web".to_owned(), Health::Progressing, ""),
        ("job/a".to_owned(), Health::Degraded, "job failed"),
    ]);
    assert_eq!(
        broken,
        Gate::Broken(vec!["job/a (Degraded: job failed)".to_owned()])
    );
    let message = wave_not_healthy(0, &waiting, std::time::Duration::from_secs(5));
    assert!(
        message.contains("wave 0")
            && message.contains("within 5s")
            && message.contains("deployment/web"),
        "{message}"
    );
    let message = wave_not_healthy(-1, &broken, std::time::Duration::from_secs(5));
    assert_eq!(message, "wave -1 is degraded: job/a (Degraded: job failed)");
    assert_eq!(
        unhealthy_because(&Gate::Open, std::time::Duration::from_secs(5)),
        ""
    );
}

#[test]
fn phases_have_their_wire_spelling() {
    for phase in [
        Phase::PreSync,
        Phase::Sync,
        Phase::PostSync,
        Phase::SyncFail,
    ] {
        assert_eq!(Phase::parse(phase.as_str()), Some(phase));
    }
}
