use super::*;

fn user(role: Role, projects: &[&str]) -> Subject {
    Subject {
        name: "alice".into(),
        role,
        projects: projects.iter().map(|p| (*p).to_owned()).collect(),
    }
}

const ALL_ACTIONS: [Action; 35] = [
    Action::Get,
    Action::Status,
    Action::ListClusters,
    Action::ListPendingClusters,
    Action::ListEvents,
    Action::RolloutStatus,
    Action::RolloutHistory,
    Action::Whoami,
    Action::RefreshRepo,
    Action::DiffLive,
    Action::DashboardSignin,
    Action::Apply,
    Action::Delete,
    Action::PauseRollout,
    Action::ResumeRollout,
    Action::PromoteRollout,
    Action::RollbackRollout,
    Action::SuspendApp,
    Action::ResumeApp,
    Action::SyncApp,
    Action::CreateToken,
    Action::ListTokens,
    Action::RevokeToken,
    Action::ApproveCluster,
    Action::RevokeCluster,
    Action::LabelCluster,
    Action::CreateUser,
    Action::ListUsers,
    Action::RevokeUser,
    Action::ListAudit,
    Action::ListFreezes,
    Action::ListNotifiers,
    Action::CreateFreeze,
    Action::DeleteFreeze,
    Action::OverrideFreeze,
];

const APP: Scope<'static> = Scope::Project {
    what: "App \"web\"",
    project: "default",
};

#[test]
fn a_viewer_reads_and_nothing_else() {
    let viewer = user(Role::Viewer, &[]);
    for action in ALL_ACTIONS {
        let allowed = authorize(&viewer, action, APP).is_ok();
        assert_eq!(allowed, matches!(action.needs(), Needs::Read), "{action:?}");
    }
}

#[test]
fn a_viewers_apply_says_which_role_would_do() {
    let e = authorize(&user(Role::Viewer, &[]), Action::Apply, Scope::Any).unwrap_err();
    assert_eq!(
        e.to_string(),
        "permission denied: viewer alice cannot apply (operator or admin required)"
    );
}

#[test]
fn an_admin_does_everything() {
    let admin = user(Role::Admin, &[]);
    for action in ALL_ACTIONS {
        for scope in [
            Scope::Any,
            Scope::Fleet { what: "Repo \"x\"" },
            Scope::Project {
                what: "App \"a\"",
                project: "team-b",
            },
        ] {
            assert!(authorize(&admin, action, scope).is_ok(), "{action:?}");
        }
    }
}

#[test]
fn an_operator_changes_apps_of_its_projects_only() {
    let op = user(Role::Operator, &["team-a"]);
    let team_a = Scope::Project {
        what: "App \"web\"",
        project: "team-a",
    };
    let team_b = Scope::Project {
        what: "App \"shop\"",
        project: "team-b",
    };
    for action in ALL_ACTIONS {
        let expected = !matches!(action.needs(), Needs::Admin);
        assert_eq!(
            authorize(&op, action, team_a).is_ok(),
            expected,
            "{action:?}"
        );
        let expected = matches!(action.needs(), Needs::Read);
        assert_eq!(
            authorize(&op, action, team_b).is_ok(),
            expected,
            "{action:?}"
        );
    }
    let e = authorize(&op, Action::Apply, team_b).unwrap_err();
    assert_eq!(
        e.to_string(),
        "permission denied: operator alice cannot apply App \"shop\" of Project \"team-b\" \
         (alice operates Projects team-a; an operator of Project \"team-b\" or an admin is required)"
    );
}

#[test]
fn an_operator_without_projects_operates_default() {
    let op = user(Role::Operator, &[]);
    assert!(authorize(&op, Action::SyncApp, APP).is_ok());
    let other = Scope::Project {
        what: "App \"x\"",
        project: "team-a",
    };
    assert!(authorize(&op, Action::SyncApp, other).is_err());
}

#[test]
fn what_is_in_no_project_is_the_admins() {
    let op = user(Role::Operator, &["default"]);
    let e = authorize(
        &op,
        Action::Apply,
        Scope::Fleet {
            what: "Repo \"shop\" (fleet.yaml#1)",
        },
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "permission denied: operator alice cannot apply Repo \"shop\" (fleet.yaml#1) (admin required)"
    );
    let e = authorize(&op, Action::CreateUser, Scope::Any).unwrap_err();
    assert_eq!(
        e.to_string(),
        "permission denied: operator alice cannot create users (admin required)"
    );
}

#[test]
fn reads_and_listings_are_not_audited_changes_are() {
    assert!(Action::Apply.mutates());
    assert!(Action::RevokeUser.mutates());
    assert!(Action::LabelCluster.mutates());
    assert!(!Action::Get.mutates());
    assert!(!Action::ListUsers.mutates());
    assert!(!Action::ListAudit.mutates());
}

#[test]
fn roles_parse_from_their_names() {
    for r in Role::ALL {
        assert_eq!(Role::parse(r.as_str()), Some(r));
    }
    assert_eq!(Role::parse("root"), None);
}

#[test]
fn freezes_are_read_by_anyone_and_made_and_overridden_by_admins_only() {
    let operator = user(Role::Operator, &["default"]);
    assert!(authorize(&operator, Action::ListFreezes, Scope::Any).is_ok());
    for action in [
        Action::CreateFreeze,
        Action::DeleteFreeze,
        Action::OverrideFreeze,
    ] {
        let e = authorize(&operator, action, APP).unwrap_err();
        assert!(e.to_string().ends_with("(admin required)"), "{e}");
        assert!(action.mutates(), "{action:?} is audited");
    }
    assert!(!Action::ListFreezes.mutates());
}
