use std::collections::BTreeMap;

use super::*;
use crate::resources::{
    AppSpec, ClusterSelection, KustomizeOptions, LabelSelector, Metadata, RepoSpec,
};

fn repo(name: &str) -> Repo {
    Repo {
        api_version: crate::resources::API_VERSION.into(),
        metadata: Metadata {
            name: name.into(),
            ..Default::default()
        },
        spec: RepoSpec {
            url: format!("https://git.example/{name}.git"),
            reference: Default::default(),
            poll_interval: None,
            credentials_ref: None,
            webhook_secret_ref: None,
            verify: None,
        },
    }
}

fn app(name: &str, env: &str) -> App {
    App {
        api_version: crate::resources::API_VERSION.into(),
        metadata: Metadata {
            name: name.into(),
            ..Default::default()
        },
        spec: AppSpec {
            project: None,
            repo: "platform".into(),
            path: format!("apps/{name}"),
            namespace: name.into(),
            extra_paths: vec![],
            targets: vec![ClusterSelection {
                cluster_selector: Some(LabelSelector {
                    match_labels: [("env".to_owned(), env.to_owned())].into(),
                    match_expressions: vec![],
                }),
                ..Default::default()
            }],
            render: Default::default(),
            customize: vec![Customization {
                selection: ClusterSelection {
                    clusters: vec!["c2".into()],
                    ..Default::default()
                },
                kustomize: Some(KustomizeOptions {
                    dir: Some("overlays/c2".into()),
                }),
                helm: None,
                namespace: Some("special".into()),
            }],
            sync_policy: Default::default(),
            rollout: None,
            depends_on: Vec::new(),
            sync_windows: Vec::new(),
        },
    }
}

fn rev(c: &str) -> AppRevision {
    AppRevision {
        commit: c.repeat(40),
        git_ref: "refs/heads/main".into(),
        ..Default::default()
    }
}

struct World {
    apps: Vec<App>,
    repos: BTreeMap<String, Repo>,
    revisions: BTreeMap<String, AppRevision>,
    clusters: Vec<(String, BTreeMap<String, String>)>,
}

impl World {
    fn fleet(&self) -> BTreeMap<String, BTreeMap<String, DesiredTarget>> {
        let cl: Vec<ClusterLabels<'_>> = self
            .clusters
            .iter()
            .map(|(n, l)| ClusterLabels { name: n, labels: l })
            .collect();
        compute_fleet(
            &self.apps,
            &self.repos,
            &self.revisions,
            &cl,
            &BTreeMap::new(),
        )
    }
}

fn world() -> World {
    World {
        apps: vec![app("web", "prod"), app("api", "prod"), app("tools", "dev")],
        repos: [("platform".to_owned(), repo("platform"))].into(),
        revisions: [
            ("web".to_owned(), rev("a")),
            ("api".to_owned(), rev("a")),
            ("tools".to_owned(), rev("a")),
        ]
        .into(),
        clusters: vec![
            ("c1".into(), [("env".to_owned(), "prod".to_owned())].into()),
            ("c2".into(), [("env".to_owned(), "prod".to_owned())].into()),
            ("c3".into(), [("env".to_owned(), "dev".to_owned())].into()),
        ],
    }
}

#[test]
fn computes_targets_per_cluster_with_customization() {
    let fleet = world().fleet();
    assert_eq!(fleet["c1"].keys().collect::<Vec<_>>(), ["api", "web"]);
    assert_eq!(fleet["c3"].keys().collect::<Vec<_>>(), ["tools"]);
    let c1 = &fleet["c1"]["web"];
    assert_eq!(c1.namespace, "web");
    assert_eq!(c1.repo_url, "https://git.example/platform.git");
    assert_eq!(c1.commit, "a".repeat(40));
    let c2 = &fleet["c2"]["web"];
    assert_eq!(c2.namespace, "special");
    assert_eq!(
        c2.render.kustomize.as_ref().and_then(|k| k.dir.as_deref()),
        Some("overlays/c2")
    );
}

#[test]
fn apps_without_repo_or_revision_place_nothing_but_clusters_are_listed() {
    let mut w = world();
    w.revisions.remove("web");
    w.apps[1].spec.repo = "missing".into();
    let fleet = w.fleet();
    assert!(fleet["c1"].is_empty());
    assert_eq!(
        fleet.len(),
        3,
        "every cluster has an entry, even an empty one"
    );
}

#[test]
fn diff_reports_only_changes() {
    let w = world();
    let old = w.fleet();
    let mut w2 = world();
    w2.revisions.insert("web".into(), rev("b"));
    w2.apps.retain(|a| a.metadata.name != "api");
    let new = w2.fleet();
    let d = diff(&old["c1"], &new["c1"]);
    assert_eq!(d.upserts.len(), 1);
    assert_eq!(d.upserts[0].app, "web");
    assert_eq!(d.upserts[0].commit, "b".repeat(40));
    assert_eq!(d.removals, vec!["api".to_owned()]);
    assert!(diff(&old["c3"], &new["c3"]).is_empty());
    let fresh = diff(&BTreeMap::new(), &new["c1"]);
    assert_eq!(fresh.upserts.len(), 1);
    assert!(fresh.removals.is_empty());
}

#[test]
fn held_targets_stop_self_healing_only_where_held_and_get_the_apps_policy_back_after() {
    use crate::fleet::hold::{Hold, HoldKind, Holds};
    let mut w = world();
    // `api` does not self-heal of its own accord.
    w.apps[1].spec.sync_policy.self_heal = false;
    let before = w.fleet();
    let suspending = |what: &str| Hold {
        kind: HoldKind::Freeze,
        reason: format!("{what} until ..."),
        until: Some(100),
        suspends_self_heal: Some(what.to_owned()),
    };
    let mut web = Holds::none();
    web.hold("c1", suspending("freeze campaign"));
    web.hold(
        "c2",
        Hold {
            suspends_self_heal: None,
            ..suspending("freeze plain")
        },
    );
    let mut api = Holds::none();
    api.hold_everywhere(suspending("freeze all"));
    let holds: BTreeMap<String, SelfHealHolds> = [
        ("web".to_owned(), web.self_heal()),
        ("api".to_owned(), api.self_heal()),
    ]
    .into();

    let mut fleet = w.fleet();
    suspend_self_heal(&mut fleet, &holds);
    let web_c1 = &fleet["c1"]["web"];
    assert!(!web_c1.sync_policy.self_heal);
    assert_eq!(
        web_c1.self_heal_suspended.as_deref(),
        Some("freeze campaign")
    );
    assert_eq!(
        fleet["c2"]["web"], before["c2"]["web"],
        "a hold that does not suspend self-heal changes nothing"
    );
    assert_eq!(
        fleet["c1"]["api"], before["c1"]["api"],
        "an App that does not self-heal has nothing suspended"
    );
    assert_eq!(fleet["c3"], before["c3"], "tools is not held");
    let d = diff(&before["c1"], &fleet["c1"]);
    assert_eq!(d.upserts.len(), 1, "the spoke is sent the new policy");
    assert_eq!(d.upserts[0].app, "web");

    // The hold ends: the App's own policy is what is computed again.
    let mut after = w.fleet();
    suspend_self_heal(&mut after, &BTreeMap::new());
    assert_eq!(after, before);
    assert!(after["c1"]["web"].sync_policy.self_heal);
}

#[test]
fn targets_alike_are_built_once_and_a_change_to_one_cluster_copies_only_its_own() {
    let mut w = world();
    w.clusters
        .push(("c4".into(), [("env".to_owned(), "prod".to_owned())].into()));
    let cl: Vec<ClusterLabels<'_>> = w
        .clusters
        .iter()
        .map(|(n, l)| ClusterLabels { name: n, labels: l })
        .collect();
    // web's rollout has given c4 a newer revision than c1.
    let rollouts: BTreeMap<String, BTreeMap<String, Arc<AppRevision>>> = [(
        "web".to_owned(),
        [
            ("c1".to_owned(), Arc::new(rev("a"))),
            ("c2".to_owned(), Arc::new(rev("a"))),
            ("c4".to_owned(), Arc::new(rev("b"))),
        ]
        .into(),
    )]
    .into();
    let no_projects = BTreeMap::new();
    let mut shared = compute_shared_fleet(
        &w.apps,
        &w.repos,
        &w.revisions,
        &rollouts,
        &cl,
        &BTreeMap::new(),
        &no_projects,
    );
    let owned = compute_fleet_with_rollouts(
        &w.apps,
        &w.repos,
        &w.revisions,
        &rollouts,
        &cl,
        &BTreeMap::new(),
        &no_projects,
    );
    let deref = |f: &SharedFleet| -> BTreeMap<String, BTreeMap<String, DesiredTarget>> {
        f.iter()
            .map(|(c, t)| {
                let t = t.iter().map(|(a, t)| (a.clone(), (**t).clone())).collect();
                (c.clone(), t)
            })
            .collect()
    };
    assert_eq!(deref(&shared), owned, "sharing changes no Target");
    // The same revision, no customization: one Target; customized (c2) or at another revision
    // (c4): its own.
    assert!(Arc::ptr_eq(&shared["c1"]["api"], &shared["c4"]["api"]));
    assert!(!Arc::ptr_eq(&shared["c1"]["api"], &shared["c2"]["api"]));
    assert!(!Arc::ptr_eq(&shared["c1"]["web"], &shared["c4"]["web"]));
    assert_eq!(shared["c4"]["web"].commit, rev("b").commit);

    // A hold on c1 alone changes c1's copy and leaves c4's shared Target as it was.
    let mut holds = crate::fleet::hold::Holds::none();
    holds.hold(
        "c1",
        crate::fleet::hold::Hold {
            kind: crate::fleet::hold::HoldKind::Freeze,
            reason: "freeze on c1 until ...".into(),
            until: Some(100),
            suspends_self_heal: Some("freeze on c1".into()),
        },
    );
    // Health rules are the App's: the Target shared by c1 and c4 gets them once, still shared.
    let mut ruled = shared.clone();
    let rule = crate::resources::HealthRule {
        api_version: crate::resources::API_VERSION.into(),
        metadata: Metadata {
            name: "databases".into(),
            ..Default::default()
        },
        spec: crate::health_rules::HealthRuleSpec {
            kind: "Database".into(),
            ..Default::default()
        },
    };
    attach_health_rules(
        &mut ruled,
        &w.apps,
        &no_projects,
        &[("databases".to_owned(), rule)].into(),
    );
    assert_eq!(ruled["c1"]["api"].health_rules.len(), 1);
    assert!(Arc::ptr_eq(&ruled["c1"]["api"], &ruled["c4"]["api"]));
    assert!(!Arc::ptr_eq(&ruled["c1"]["api"], &shared["c1"]["api"]));
    assert!(shared["c1"]["api"].health_rules.is_empty());

    let before = Arc::clone(&shared["c4"]["api"]);
    suspend_self_heal(&mut shared, &[("api".to_owned(), holds.self_heal())].into());
    assert_eq!(
        shared["c1"]["api"].self_heal_suspended.as_deref(),
        Some("freeze on c1")
    );
    assert!(Arc::ptr_eq(&shared["c4"]["api"], &before));
    assert_eq!(shared["c4"]["api"].self_heal_suspended, None);
}
