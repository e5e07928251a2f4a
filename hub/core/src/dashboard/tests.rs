use super::*;

fn user(name: &str, role: Role, projects: &[&str]) -> UserRecord {
    UserRecord {
        name: name.to_owned(),
        role,
        projects: projects.iter().map(|p| (*p).to_owned()).collect(),
        key_fingerprint: "key1".to_owned(),
        expires_at_unix: 1_000_000,
        created_at_unix: 0,
        created_by: "admin".to_owned(),
        revoked: false,
        revoked_by: String::new(),
        revoked_at_unix: 0,
        bootstrap: false,
    }
}

#[test]
fn a_signin_link_expires_after_five_minutes() {
    let alice = user("alice", Role::Operator, &[]);
    let link = SigninRecord::new(&alice, 100);
    assert!(!link.is_expired(100 + SIGNIN_TTL_SECS - 1));
    assert!(link.is_expired(100 + SIGNIN_TTL_SECS));
    assert_eq!(
        link.start_session(Some(&alice), "c".into(), 3600, 100 + SIGNIN_TTL_SECS),
        Err(SessionProblem::Expired)
    );
}

#[test]
fn a_session_lives_its_ttl_but_never_past_the_certificate() {
    let alice = user("alice", Role::Operator, &[]);
    let link = SigninRecord::new(&alice, 100);
    let s = link
        .start_session(Some(&alice), "c".into(), 3600, 110)
        .unwrap();
    assert_eq!(s.expires_at_unix, 3710);
    assert_eq!(s.csrf_hash, "c");
    assert!(s.check(Some(&alice), 3709).is_ok());
    assert_eq!(s.check(Some(&alice), 3710), Err(SessionProblem::Expired));
    let s = link
        .start_session(Some(&alice), "c".into(), 10_000_000, 110)
        .unwrap();
    assert_eq!(s.expires_at_unix, alice.expires_at_unix);
}

#[test]
fn a_revoked_or_recreated_user_ends_the_session() {
    let alice = user("alice", Role::Operator, &[]);
    let s = SigninRecord::new(&alice, 100)
        .start_session(Some(&alice), "c".into(), 3600, 100)
        .unwrap();
    let revoked = UserRecord {
        revoked: true,
        ..alice.clone()
    };
    assert!(matches!(
        s.check(Some(&revoked), 200),
        Err(SessionProblem::User(UserProblem::Revoked(_)))
    ));
    let recreated = UserRecord {
        key_fingerprint: "key2".into(),
        ..alice.clone()
    };
    assert!(matches!(
        s.check(Some(&recreated), 200),
        Err(SessionProblem::User(UserProblem::Replaced(_)))
    ));
    assert!(matches!(
        s.check(None, 200),
        Err(SessionProblem::User(UserProblem::Unknown(_)))
    ));
    // The role is the record's now.
    let promoted = UserRecord {
        role: Role::Admin,
        ..alice.clone()
    };
    assert_eq!(s.check(Some(&promoted), 200).unwrap().role, Role::Admin);
}

#[test]
fn a_viewer_may_do_nothing_an_operator_its_projects_an_admin_all() {
    let viewer = user("v", Role::Viewer, &[]).subject();
    assert!(allowed_actions(&viewer, "web", "default").is_empty());
    assert!(!role_may_act(Role::Viewer));
    let op = user("o", Role::Operator, &["team-a"]).subject();
    assert_eq!(
        allowed_actions(&op, "web", "team-a"),
        UiAction::ALL.to_vec()
    );
    assert!(allowed_actions(&op, "web", "team-b").is_empty());
    let admin = user("a", Role::Admin, &[]).subject();
    assert_eq!(
        allowed_actions(&admin, "web", "team-b"),
        UiAction::ALL.to_vec()
    );
}

#[test]
fn ui_actions_are_the_cli_commands() {
    for a in UiAction::ALL {
        assert_eq!(UiAction::parse(a.as_str()), Some(a));
    }
    assert_eq!(UiAction::parse("delete"), None);
    assert_eq!(UiAction::Pause.action().name(), "rollout pause");
    assert_eq!(UiAction::Sync.action().name(), "app sync");
}

#[test]
fn cells_fold_sync_and_health() {
    use HealthState as H;
    use SyncState as S;
    assert_eq!(
        Cell::of(Some((S::Synced, H::Healthy, "a")), "a", true),
        Cell::Healthy
    );
    assert_eq!(
        Cell::of(Some((S::Synced, H::Healthy, "a")), "b", true),
        Cell::OutOfSync
    );
    assert_eq!(
        Cell::of(Some((S::Syncing, H::Healthy, "a")), "b", true),
        Cell::Progressing
    );
    assert_eq!(
        Cell::of(Some((S::Synced, H::Progressing, "a")), "a", true),
        Cell::Progressing
    );
    assert_eq!(
        Cell::of(Some((S::Failed, H::Healthy, "a")), "a", true),
        Cell::Failed
    );
    assert_eq!(
        Cell::of(Some((S::Synced, H::Degraded, "a")), "a", true),
        Cell::Failed
    );
    assert_eq!(
        Cell::of(Some((S::OutOfSync, H::Healthy, "a")), "a", true),
        Cell::OutOfSync
    );
    assert_eq!(
        Cell::of(Some((S::Synced, H::Suspended, "a")), "a", true),
        Cell::Suspended
    );
    assert_eq!(Cell::of(None, "a", true), Cell::Unknown);
    assert_eq!(
        Cell::of(Some((S::Synced, H::Healthy, "a")), "a", false),
        Cell::Disconnected
    );
}

#[test]
fn the_grid_is_sorted_and_compact() {
    let app = |n: &str| GridApp {
        name: n.into(),
        project: "default".into(),
        labels: BTreeMap::new(),
    };
    let cluster = |n: &str, connected| GridCluster {
        name: n.into(),
        labels: BTreeMap::new(),
        connected,
    };
    let target = |a: &str, c: &str, rev: Option<&str>| GridTarget {
        app: a.into(),
        cluster: c.into(),
        desired_revision: "abcdef0123456789".into(),
        report: rev.map(|r| (SyncState::Synced, HealthState::Healthy, r.to_owned())),
    };
    let grid = build_grid(
        vec![app("web"), app("api")],
        vec![
            cluster("eu-2", true),
            cluster("eu-1", true),
            cluster("us-1", false),
        ],
        &[
            target("web", "eu-1", Some("abcdef0123456789")),
            target("web", "eu-2", Some("0000000000000000")),
            target("api", "us-1", Some("abcdef0123456789")),
            target("api", "eu-1", None),
            target("gone", "eu-1", None),
        ],
    );
    assert_eq!(
        grid.apps
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["api", "web"]
    );
    assert_eq!(
        grid.clusters
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["eu-1", "eu-2", "us-1"]
    );
    assert_eq!(grid.cells, ["u.x", "ho."]);
    assert_eq!(grid.revisions, ["abcdef012345", "000000000000"]);
    assert_eq!(grid.revs, [vec![-1, -1, 0], vec![0, 1, -1]]);
    let json = serde_json::to_string(&grid).unwrap();
    assert!(json.contains(r#""cells":["u.x","ho."]"#), "{json}");
}
