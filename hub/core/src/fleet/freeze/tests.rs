use super::*;

const NOW: i64 = 1_796_000_000;

fn request() -> FreezeRequest {
    FreezeRequest {
        name: "campaign".into(),
        apps: vec!["checkout".into()],
        projects: vec![],
        cluster_selector: String::new(),
        until: NOW + 3600,
        reason: "holiday campaign".into(),
        suspend_self_heal: false,
    }
}

fn field_of(r: FreezeRequest) -> String {
    r.validate("alice", NOW).expect_err("refused").field
}

#[test]
fn a_valid_request_is_a_freeze_by_its_creator() {
    let f = request().validate("alice", NOW).expect("valid");
    assert_eq!(f.created_by, "alice");
    assert_eq!(f.created_at, NOW);
    assert_eq!(f.scope_text(), "apps checkout");
    assert!(f.active(NOW) && f.active(NOW + 3599) && !f.active(NOW + 3600));
    assert!(
        f.hold_reason().starts_with("freeze campaign until ")
            && f.hold_reason().ends_with("(alice: holiday campaign)"),
        "{}",
        f.hold_reason()
    );
}

#[test]
fn bad_requests_name_the_field() {
    assert_eq!(
        field_of(FreezeRequest {
            name: "Campaign!".into(),
            ..request()
        }),
        "name"
    );
    assert_eq!(
        field_of(FreezeRequest {
            apps: vec!["ok".into(), "Bad_App".into()],
            ..request()
        }),
        "apps[1]"
    );
    assert_eq!(
        field_of(FreezeRequest {
            projects: vec!["".into()],
            ..request()
        }),
        "projects[0]"
    );
    assert_eq!(
        field_of(FreezeRequest {
            until: NOW,
            ..request()
        }),
        "until"
    );
    assert_eq!(
        field_of(FreezeRequest {
            until: NOW + MAX_FREEZE_SECS + 1,
            ..request()
        }),
        "until"
    );
    assert_eq!(
        field_of(FreezeRequest {
            reason: "  ".into(),
            ..request()
        }),
        "reason"
    );
    assert_eq!(
        field_of(FreezeRequest {
            cluster_selector: "env in (prod".into(),
            ..request()
        }),
        "clusterSelector"
    );
    let e = FreezeRequest {
        until: NOW - 10,
        ..request()
    }
    .validate("alice", NOW)
    .expect_err("past");
    assert!(
        e.to_string().starts_with("freeze \"campaign\": until: "),
        "{e}"
    );
}

#[test]
fn scope_apps_or_projects_and_clusters_by_selector() {
    let whole = FreezeRequest {
        apps: vec![],
        ..request()
    }
    .validate("alice", NOW)
    .expect("valid");
    assert_eq!(whole.scope_text(), "the whole fleet");
    assert!(whole.covers_app("anything", "default"));

    let f = FreezeRequest {
        apps: vec!["checkout".into()],
        projects: vec!["shop".into()],
        cluster_selector: "env=prod".into(),
        ..request()
    }
    .validate("alice", NOW)
    .expect("valid");
    assert!(f.covers_app("checkout", "default"));
    assert!(f.covers_app("cart", "shop"));
    assert!(!f.covers_app("branding", "marketing"));
    let prod: BTreeMap<String, String> = [("env".to_owned(), "prod".to_owned())].into();
    let dev: BTreeMap<String, String> = [("env".to_owned(), "dev".to_owned())].into();
    assert!(f.covers_cluster(&prod));
    assert!(!f.covers_cluster(&dev));
    assert_eq!(
        f.scope_text(),
        "apps checkout; projects shop; clusters env=prod"
    );
}

#[test]
fn selectors_in_kubectl_syntax_round_trip() {
    let s = parse_selector("env=prod,tier!=edge,region in (eu, us),zone notin (a,b),gpu,!spot")
        .expect("valid");
    assert_eq!(s.match_labels.get("env").map(String::as_str), Some("prod"));
    assert_eq!(s.match_expressions.len(), 5);
    let text = format_selector(&s);
    assert_eq!(
        text,
        "env=prod,tier!=edge,region in (eu,us),zone notin (a,b),gpu,!spot"
    );
    assert_eq!(parse_selector(&text).expect("again"), s);
    assert_eq!(
        parse_selector("env==prod").expect("=="),
        parse_selector("env=prod").expect("=")
    );
    for bad in [
        "env=prod,",
        "env in prod",
        "env in (prod))",
        "env=prod,env=dev",
        "bad key=1",
        "env=no spaces",
        "region in (eu,)",
    ] {
        assert!(parse_selector(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn a_freeze_self_heals_unless_asked_not_to_and_says_so_only_then() {
    let f = request().validate("alice", NOW).expect("valid");
    assert!(f.self_heal);
    assert_eq!(f.self_heal_text(), None);
    let json = serde_json::to_string(&f).expect("json");
    assert!(
        !json.contains("selfHeal"),
        "the default is not stored: {json}"
    );
    let back: Freeze = serde_json::from_str(&json).expect("read back");
    assert!(
        back.self_heal,
        "a record stored before the field self-heals"
    );

    let f = FreezeRequest {
        suspend_self_heal: true,
        ..request()
    }
    .validate("alice", NOW)
    .expect("valid");
    assert!(!f.self_heal);
    assert_eq!(f.self_heal_text().as_deref(), Some("freeze campaign"));
    let json = serde_json::to_string(&f).expect("json");
    assert!(json.contains(r#""selfHeal":false"#), "{json}");
    let back: Freeze = serde_json::from_str(&json).expect("read back");
    assert_eq!(back, f);
}

#[test]
fn a_freeze_s_end_by_time_is_told_once_and_not_long_after() {
    let mut f = request().validate("alice", NOW).expect("valid");
    assert_eq!(f.end_event_due(NOW), None, "it holds");
    assert_eq!(f.end_event_due(NOW + 3600), Some(true), "it just ended");
    assert_eq!(f.end_event_due(NOW + 3600 + END_EVENT_WINDOW), Some(true));
    assert_eq!(
        f.end_event_due(NOW + 3601 + END_EVENT_WINDOW),
        Some(false),
        "long ended: marked, not told"
    );
    f.end_recorded = true;
    assert_eq!(f.end_event_due(NOW + 3600), None, "told once");
    // Stored freezes from before the field read as not yet told.
    let mut json = serde_json::to_value(&f).expect("serialises");
    json.as_object_mut()
        .expect("an object")
        .remove("endRecorded");
    let old: Freeze = serde_json::from_value(json).expect("reads");
    assert!(!old.end_recorded);
}
