use super::*;

fn record() -> UserRecord {
    UserRecord {
        name: "alice".into(),
        role: Role::Operator,
        projects: vec![],
        key_fingerprint: "aa".into(),
        expires_at_unix: 1_000,
        created_at_unix: 0,
        created_by: "admin".into(),
        revoked: false,
        revoked_by: String::new(),
        revoked_at_unix: 0,
        bootstrap: false,
    }
}

#[test]
fn only_the_bound_unexpired_unrevoked_certificate_speaks_for_a_user() {
    let r = record();
    assert_eq!(r.check("aa", 999), Ok(()));
    assert_eq!(
        r.check("bb", 999),
        Err(UserProblem::Replaced("alice".into()))
    );
    assert_eq!(
        r.check("aa", 1_000),
        Err(UserProblem::Expired("alice".into()))
    );
    let revoked = UserRecord {
        revoked: true,
        ..record()
    };
    assert_eq!(
        revoked.check("aa", 0),
        Err(UserProblem::Revoked("alice".into()))
    );
    assert_eq!(revoked.status(0), "revoked");
    assert_eq!(r.status(0), "active");
    assert_eq!(r.status(2_000), "expired");
}

#[test]
fn active_admins_count_towards_the_last_admin() {
    let admin = UserRecord {
        role: Role::Admin,
        ..record()
    };
    assert!(admin.is_active_admin(0));
    assert!(!admin.is_active_admin(1_000));
    assert!(!record().is_active_admin(0));
}

#[test]
fn retention_drops_the_oldest_beyond_the_count_and_the_age() {
    let keep = AuditRetention {
        max_entries: 3,
        max_age: Duration::from_secs(100),
    };
    let times = [10, 20, 500, 600, 700];
    let at = |i: usize| times[i];
    // 5 entries, 3 kept by count; all of the rest are young enough.
    assert_eq!(keep.expired(5, 590, at), 2);
    // At 650 the cutoff is 550: 10, 20 and 500 are too old.
    assert_eq!(keep.expired(5, 650, at), 3);
    assert_eq!(keep.expired(0, 650, at), 0);
    // Nothing too old, nothing too many.
    assert_eq!(keep.expired(2, 15, at), 0);
}

#[test]
fn targets_are_summarized_after_ten() {
    let names: Vec<String> = (0..12).map(|i| format!("App/a{i}")).collect();
    let text = summarize_targets(&names);
    assert!(text.starts_with("App/a0, App/a1"), "{text}");
    assert!(text.ends_with("App/a9 and 2 more"), "{text}");
    assert_eq!(summarize_targets(&["App/x"]), "App/x");
}

#[test]
fn records_written_before_optional_fields_read_back() {
    let json = r#"{"name":"admin","role":"admin","key_fingerprint":"ff","expires_at_unix":5,"created_at_unix":1,"created_by":"hub"}"#;
    let r: UserRecord = serde_json::from_str(json).unwrap();
    assert_eq!(r.role, Role::Admin);
    assert!(!r.revoked && !r.bootstrap && r.projects.is_empty());
}
