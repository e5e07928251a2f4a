use serde_json::json;

use super::*;

fn rule(group: &str, kind: &str) -> HealthRuleSpec {
    HealthRuleSpec {
        group: group.into(),
        kind: kind.into(),
        ..Default::default()
    }
}

fn database(phase: Option<&str>) -> serde_json::Value {
    let mut o = json!({
        "apiVersion": "db.example.com/v1",
        "kind": "Database",
        "metadata": {"name": "orders", "generation": 2},
        "spec": {"size": "small"},
    });
    if let Some(phase) = phase {
        o["status"] = json!({"phase": phase, "reason": format!("it is {phase}")});
    }
    o
}

fn database_rule() -> TargetHealthRule {
    TargetHealthRule {
        origin: "Project team-a".into(),
        rule: HealthRuleSpec {
            degraded_when: "status.phase == 'Failed'".into(),
            healthy_when: "self.status.phase == 'Ready'".into(),
            message: "status.reason".into(),
            ..rule("db.example.com", "Database")
        },
    }
}

#[test]
fn a_rule_judges_by_its_expressions_degraded_first() {
    let set = RuleSet::new(&[database_rule()]);
    let judge = |phase| set.judge("db.example.com", "Database", &database(phase));
    assert_eq!(
        judge(Some("Ready")),
        Some(Judgement {
            health: RuleHealth::Healthy,
            message: "it is Ready".into()
        })
    );
    assert_eq!(
        judge(Some("Failed")).map(|j| j.health),
        Some(RuleHealth::Degraded)
    );
    assert_eq!(
        judge(Some("Creating")).map(|j| j.health),
        Some(RuleHealth::Progressing)
    );
}

#[test]
fn a_field_the_object_does_not_have_yet_is_not_an_error() {
    // No status at all: neither condition holds, and the message is empty.
    let set = RuleSet::new(&[database_rule()]);
    assert_eq!(
        set.judge("db.example.com", "Database", &database(None)),
        Some(Judgement {
            health: RuleHealth::Progressing,
            message: String::new()
        })
    );
}

#[test]
fn a_rule_of_the_wrong_type_is_unknown_and_says_which_rule_and_field() {
    let mut r = database_rule();
    r.rule.healthy_when = "status.phase".into();
    let set = RuleSet::new(&[r]);
    let j = set
        .judge("db.example.com", "Database", &database(Some("Ready")))
        .unwrap();
    assert_eq!(j.health, RuleHealth::Unknown);
    assert_eq!(
        j.message,
        "health rule for db.example.com/Database (Project team-a): healthyWhen gave a string, not a bool"
    );
}

#[test]
fn the_first_rule_for_a_kind_wins_and_exact_kinds_win_over_star() {
    let star = TargetHealthRule {
        origin: "HealthRule all-dbs".into(),
        rule: HealthRuleSpec {
            healthy_when: "false".into(),
            degraded_when: "true".into(),
            ..rule("db.example.com", "*")
        },
    };
    let set = RuleSet::new(&[star.clone(), database_rule(), star]);
    assert_eq!(
        set.judge("db.example.com", "Database", &database(Some("Ready")))
            .map(|j| j.health),
        Some(RuleHealth::Healthy)
    );
    assert_eq!(
        set.judge("db.example.com", "Backup", &database(Some("Ready")))
            .map(|j| j.health),
        Some(RuleHealth::Degraded)
    );
    assert_eq!(set.judge("apps", "Deployment", &json!({})), None);
}

#[test]
fn validation_names_each_bad_field() {
    let bad = HealthRuleSpec {
        healthy_when: "status.phase == ".into(),
        message: "x".repeat(MAX_EXPRESSION_BYTES + 1),
        ..rule("db.example.com", "")
    };
    let errors = validate(&bad);
    let fields: Vec<_> = errors.iter().map(|e| e.field).collect();
    assert_eq!(fields, ["kind", "healthyWhen", "message"], "{errors:?}");
    assert!(
        errors[1].problem.starts_with("not a CEL expression: "),
        "{}",
        errors[1]
    );
    assert!(!errors[1].problem.contains('\n'), "{}", errors[1]);
    assert_eq!(
        validate(&rule("db.example.com", "Database"))[0].to_string(),
        "healthyWhen: a rule needs healthyWhen or degradedWhen (or suspendedWhen)"
    );
    assert_eq!(
        validate(&HealthRuleSpec {
            healthy_when: "true".into(),
            ..rule("", "*")
        })[0]
            .field,
        "kind"
    );
    assert!(validate(&database_rule().rule).is_empty());
}

#[test]
fn a_rule_that_does_not_compile_on_the_spoke_makes_its_kind_unknown() {
    let mut r = database_rule();
    r.rule.degraded_when = "((".into();
    let set = RuleSet::new(&[r]);
    let j = set
        .judge("db.example.com", "Database", &database(Some("Ready")))
        .unwrap();
    assert_eq!(j.health, RuleHealth::Unknown);
    assert!(
        j.message
            .starts_with("health rule for db.example.com/Database (Project team-a) does not compile: degradedWhen: not a CEL expression"),
        "{}",
        j.message
    );
}

#[test]
fn every_builtin_rule_compiles() {
    for r in builtin() {
        assert!(
            validate(&r.rule).is_empty(),
            "{r:?}: {:?}",
            validate(&r.rule)
        );
    }
    assert_eq!(BUILTIN.len(), builtin().len());
}

fn with_conditions(
    api_version: &str,
    kind: &str,
    conditions: serde_json::Value,
) -> serde_json::Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": "x", "generation": 3},
        "spec": {},
        "status": {"observedGeneration": 3, "conditions": conditions},
    })
}

fn builtin_judge(object: &serde_json::Value) -> Option<Judgement> {
    let api_version = object["apiVersion"].as_str().unwrap();
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    RuleSet::new(&[]).judge(group, object["kind"].as_str().unwrap(), object)
}

#[test]
fn cert_manager_certificates_are_judged_by_ready_and_issuing() {
    let cert = |conditions| with_conditions("cert-manager.io/v1", "Certificate", conditions);
    let healthy = builtin_judge(&cert(json!([
        {"type": "Ready", "status": "True", "reason": "Ready", "message": "Certificate is up to date and has not expired"}
    ])))
    .unwrap();
    assert_eq!(healthy.health, RuleHealth::Healthy);
    assert_eq!(
        healthy.message,
        "Certificate is up to date and has not expired"
    );
    let issuing = builtin_judge(&cert(json!([
        {"type": "Ready", "status": "False", "reason": "DoesNotExist", "message": "Issuing certificate as Secret does not exist"},
        {"type": "Issuing", "status": "True", "reason": "DoesNotExist", "message": "Issuing"}
    ])))
    .unwrap();
    assert_eq!(issuing.health, RuleHealth::Progressing);
    let failed = builtin_judge(&cert(json!([
        {"type": "Ready", "status": "False", "reason": "Failed", "message": "The certificate request has failed to complete and will be retried"}
    ])))
    .unwrap();
    assert_eq!(failed.health, RuleHealth::Degraded);
    assert_eq!(
        failed.message,
        "The certificate request has failed to complete and will be retried"
    );
}

#[test]
fn argo_rollouts_are_judged_by_their_phase() {
    let rollout = |phase: &str| {
        json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "generation": 2},
            "status": {"phase": phase, "message": format!("phase {phase}")},
        })
    };
    let judged = |phase| builtin_judge(&rollout(phase)).unwrap().health;
    assert_eq!(judged("Healthy"), RuleHealth::Healthy);
    assert_eq!(judged("Paused"), RuleHealth::Suspended);
    assert_eq!(judged("Degraded"), RuleHealth::Degraded);
    assert_eq!(judged("Progressing"), RuleHealth::Progressing);
    assert_eq!(
        builtin_judge(&rollout("Degraded")).unwrap().message,
        "phase Degraded"
    );
}

#[test]
fn flux_objects_follow_kstatus_with_failure_reasons_degraded() {
    let release =
        |conditions| with_conditions("helm.toolkit.fluxcd.io/v2", "HelmRelease", conditions);
    assert_eq!(
        builtin_judge(&release(json!([{"type": "Ready", "status": "True", "reason": "UpgradeSucceeded", "message": "ok"}])))
            .unwrap()
            .health,
        RuleHealth::Healthy
    );
    assert_eq!(
        builtin_judge(&release(json!([{"type": "Ready", "status": "False", "reason": "UpgradeFailed", "message": "timed out"}])))
            .unwrap(),
        Judgement {
            health: RuleHealth::Degraded,
            message: "timed out".into()
        }
    );
    // Failed, but trying again: progress.
    assert_eq!(
        builtin_judge(&release(json!([
            {"type": "Ready", "status": "False", "reason": "InstallFailed", "message": "x"},
            {"type": "Reconciling", "status": "True", "reason": "Progressing", "message": "y"}
        ])))
        .unwrap()
        .health,
        RuleHealth::Progressing
    );
    let mut stale =
        release(json!([{"type": "Ready", "status": "True", "reason": "x", "message": ""}]));
    stale["metadata"]["generation"] = json!(4);
    assert_eq!(
        builtin_judge(&stale).unwrap().health,
        RuleHealth::Progressing
    );
    let mut suspended = stale.clone();
    suspended["spec"]["suspend"] = json!(true);
    assert_eq!(
        builtin_judge(&suspended).unwrap().health,
        RuleHealth::Suspended
    );
    assert_eq!(
        builtin_judge(&with_conditions("kustomize.toolkit.fluxcd.io/v1", "Kustomization", json!([{"type": "Stalled", "status": "True", "reason": "BuildFailed", "message": "kustomize build failed"}])))
            .unwrap()
            .health,
        RuleHealth::Degraded
    );
}

#[test]
fn a_project_rule_overrides_a_builtin_one() {
    let mine = TargetHealthRule {
        origin: "Project team-a".into(),
        rule: HealthRuleSpec {
            healthy_when: "true".into(),
            ..rule("cert-manager.io", "Certificate")
        },
    };
    let failed = with_conditions(
        "cert-manager.io/v1",
        "Certificate",
        json!([{"type": "Ready", "status": "False", "reason": "Failed", "message": "m"}]),
    );
    assert_eq!(
        RuleSet::new(&[mine])
            .judge("cert-manager.io", "Certificate", &failed)
            .map(|j| j.health),
        Some(RuleHealth::Healthy)
    );
}
