use std::collections::BTreeMap;

use super::*;
use crate::resources::{
    AppSpec, ClusterGroupSpec, ClusterSelection, Customization, LabelSelector, NamespaceResources,
    RepoSpec,
};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn selector(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: labels(pairs),
        match_expressions: Vec::new(),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// team-a: Repo `shop` or team-a's URLs; prod clusters in team-a namespaces, the `eu` group in
/// `shared`, cluster `lab-*` anywhere.
fn team_a() -> Project {
    Project {
        api_version: API_VERSION.into(),
        metadata: Metadata {
            name: "team-a".into(),
            ..Metadata::default()
        },
        spec: ProjectSpec {
            source_repos: strings(&["shop", "https://git.example.com/team-a/*"]),
            destinations: vec![
                ProjectDestination {
                    cluster_selector: Some(selector(&[("env", "prod")])),
                    namespaces: strings(&["team-a", "team-a-*"]),
                    ..ProjectDestination::default()
                },
                ProjectDestination {
                    group: Some("eu".into()),
                    namespaces: strings(&["shared"]),
                    ..ProjectDestination::default()
                },
                ProjectDestination {
                    name: Some("lab-*".into()),
                    namespaces: strings(&["*"]),
                    ..ProjectDestination::default()
                },
            ],
            cluster_resources: Vec::new(),
            namespace_resources: NamespaceResources::default(),
            sync_windows: Vec::new(),
            health_rules: Vec::new(),
        },
    }
}

fn groups() -> BTreeMap<String, ClusterGroup> {
    [(
        "eu".to_owned(),
        ClusterGroup {
            api_version: API_VERSION.into(),
            metadata: Metadata {
                name: "eu".into(),
                ..Metadata::default()
            },
            spec: ClusterGroupSpec {
                selector: selector(&[("region", "eu")]),
            },
        },
    )]
    .into()
}

fn app(project: Option<&str>, namespace: &str, targets: Vec<ClusterSelection>) -> App {
    App {
        api_version: API_VERSION.into(),
        metadata: Metadata {
            name: "web".into(),
            ..Metadata::default()
        },
        spec: AppSpec {
            project: project.map(str::to_owned),
            repo: "shop".into(),
            path: "web".into(),
            namespace: namespace.into(),
            extra_paths: Vec::new(),
            targets,
            render: Default::default(),
            customize: Vec::new(),
            sync_policy: Default::default(),
            rollout: None,
            depends_on: Vec::new(),
            sync_windows: Vec::new(),
        },
    }
}

fn all() -> Vec<ClusterSelection> {
    vec![ClusterSelection {
        cluster_selector: Some(LabelSelector::default()),
        ..ClusterSelection::default()
    }]
}

fn repo(name: &str, url: &str) -> Repo {
    Repo {
        api_version: API_VERSION.into(),
        metadata: Metadata {
            name: name.into(),
            ..Metadata::default()
        },
        spec: RepoSpec::new(url),
    }
}

struct Fleet(Vec<(String, BTreeMap<String, String>)>);

impl Fleet {
    fn new() -> Self {
        Fleet(vec![
            ("prod-1".into(), labels(&[("env", "prod")])),
            ("eu-dev".into(), labels(&[("env", "dev"), ("region", "eu")])),
            ("lab-7".into(), labels(&[])),
            ("dev-1".into(), labels(&[("env", "dev")])),
        ])
    }

    fn labels(&self) -> Vec<ClusterLabels<'_>> {
        self.0
            .iter()
            .map(|(name, labels)| ClusterLabels { name, labels })
            .collect()
    }
}

fn names(p: &[Placement]) -> Vec<&str> {
    p.iter().map(|p| p.cluster.as_str()).collect()
}

#[test]
fn globs() {
    let cases = [
        ("team-a", "team-a", None, true),
        ("team-a", "team-ab", None, false),
        ("team-a-*", "team-a-x", None, true),
        ("team-a-*", "team-a-", None, true),
        ("team-a-*", "team-b-x", None, false),
        ("*", "", None, true),
        ("*-dev", "a-b-dev", None, true),
        ("a*b*c", "aXbYc", None, true),
        ("a*b*c", "aXbY", None, false),
        (
            "https://h/team-a/*",
            "https://h/team-a/shop.git",
            Some('/'),
            true,
        ),
        (
            "https://h/team-a/*",
            "https://h/team-a/x/shop.git",
            Some('/'),
            false,
        ),
        (
            "https://h/team-a/**",
            "https://h/team-a/x/shop.git",
            Some('/'),
            true,
        ),
        (
            "https://h/team-a/*",
            "https://h/team-ab/shop",
            Some('/'),
            false,
        ),
    ];
    for (pattern, text, sep, want) in cases {
        assert_eq!(glob_matches(pattern, text, sep), want, "{pattern} ~ {text}");
    }
}

#[test]
fn source_repos_by_name_or_url_glob() {
    let p = team_a();
    assert!(allows_repo(&p, "shop", Some("https://elsewhere/shop")));
    assert!(allows_repo(
        &p,
        "x",
        Some("https://git.example.com/team-a/x.git")
    ));
    assert!(!allows_repo(
        &p,
        "x",
        Some("https://git.example.com/team-b/x.git")
    ));
    // A dot segment would leave the prefix the glob means.
    assert!(!allows_repo(
        &p,
        "x",
        Some("https://git.example.com/team-a/../team-b")
    ));
    assert!(!allows_repo(&p, "x", None));
    assert!(allows_repo(default_project(), "x", Some("git@h:any/where")));
}

#[test]
fn destinations_by_name_selector_and_group() {
    let p = team_a();
    let fleet = Fleet::new();
    let cl = fleet.labels();
    let ns = |c: usize| namespaces_on(&p, cl[c], &groups());
    assert_eq!(ns(0), ["team-a", "team-a-*"]);
    assert_eq!(ns(1), ["shared"]);
    assert_eq!(ns(2), ["*"]);
    assert!(ns(3).is_empty());
    assert!(admits(&p, cl[0], "team-a-web", &groups()));
    assert!(!admits(&p, cl[0], "team-b", &groups()));
    assert!(!admits(&p, cl[1], "team-a", &groups()));
    assert!(admits(&p, cl[2], "anything", &groups()));
    assert!(!admits(&p, cl[3], "team-a", &groups()));
}

#[test]
fn placement_stays_inside_the_project() {
    let projects: BTreeMap<String, Project> = [("team-a".to_owned(), team_a())].into();
    let fleet = Fleet::new();
    let cl = fleet.labels();
    let a = app(Some("team-a"), "team-a", all());
    let placed = place_in_project(&a, project_of(&a, &projects), &cl, &groups());
    assert_eq!(names(&placed), ["lab-7", "prod-1"]);
    // A customization's namespace counts on its clusters.
    let mut a = app(Some("team-a"), "team-a", all());
    a.spec.customize.push(Customization {
        selection: ClusterSelection {
            clusters: strings(&["eu-dev", "prod-1"]),
            ..ClusterSelection::default()
        },
        namespace: Some("shared".into()),
        ..Customization::default()
    });
    let placed = place_in_project(&a, project_of(&a, &projects), &cl, &groups());
    assert_eq!(names(&placed), ["eu-dev", "lab-7"]);
    // A missing Project places nothing; default places everything.
    let missing = app(Some("nope"), "team-a", all());
    assert!(project_of(&missing, &projects).is_none());
    assert!(place_in_project(&missing, None, &cl, &groups()).is_empty());
    let d = app(None, "kube-system", all());
    let placed = place_in_project(&d, project_of(&d, &projects), &cl, &groups());
    assert_eq!(placed.len(), 4);
}

#[test]
fn chart_repositories_by_url_glob_only() {
    let mut p = team_a();
    p.spec
        .source_repos
        .push("oci://registry.example.com/team-a/**".into());
    assert!(allows_chart_repository(
        &p,
        "https://git.example.com/team-a/charts"
    ));
    assert!(allows_chart_repository(
        &p,
        "oci://registry.example.com/team-a/charts/web"
    ));
    assert!(!allows_chart_repository(
        &p,
        "https://git.example.com/team-b/charts"
    ));
    assert!(!allows_chart_repository(
        &p,
        "https://git.example.com/team-a/../team-b"
    ));
    assert!(allows_chart_repository(
        default_project(),
        "https://charts.example.com"
    ));

    let fleet = Fleet::new();
    let shop = repo("shop", "https://elsewhere/shop");
    let mut charted = app(
        Some("team-a"),
        "team-a",
        vec![ClusterSelection {
            cluster_selector: Some(selector(&[("env", "prod")])),
            ..ClusterSelection::default()
        }],
    );
    charted.spec.render.helm = Some(crate::resources::HelmOptions {
        chart: Some(crate::resources::ChartSpec {
            repository: "https://charts.example.com/private".into(),
            name: "web".into(),
            version: "1.0.0".into(),
        }),
        ..Default::default()
    });
    let problems: Vec<String> =
        check_app(&charted, Some(&p), Some(&shop), &fleet.labels(), &groups())
            .iter()
            .map(ToString::to_string)
            .collect();
    assert_eq!(
        problems,
        [
            "spec.render.helm.chart.repository: chart repository https://charts.example.com/private is not allowed by Project team-a's sourceRepos"
        ]
    );
}

#[test]
fn check_app_names_every_field_outside_the_project() {
    let p = team_a();
    let fleet = Fleet::new();
    let cl = fleet.labels();
    let shop = repo("shop", "https://elsewhere/shop");
    let inside = app(
        Some("team-a"),
        "team-a",
        vec![ClusterSelection {
            cluster_selector: Some(selector(&[("env", "prod")])),
            ..ClusterSelection::default()
        }],
    );
    assert_eq!(
        check_app(&inside, Some(&p), Some(&shop), &cl, &groups()),
        []
    );

    let mut outside = app(Some("team-a"), "team-b", all());
    outside.spec.repo = "other".into();
    let other = repo("other", "https://git.example.com/team-b/other");
    let problems: Vec<String> = check_app(&outside, Some(&p), Some(&other), &cl, &groups())
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        problems,
        [
            "spec.repo: Repo \"other\" (https://git.example.com/team-b/other) is not allowed by Project team-a's sourceRepos",
            "spec.targets[0]: cluster \"dev-1\" is not in Project team-a's destinations",
            "spec.targets[0]: namespace \"team-b\" on cluster \"eu-dev\" is not allowed by Project team-a's destinations",
            "spec.targets[0]: namespace \"team-b\" on cluster \"prod-1\" is not allowed by Project team-a's destinations",
        ]
    );
    // Without the lab clusters, team-b is nowhere allowed: the field itself is wrong.
    let mut narrow = team_a();
    narrow.spec.destinations.pop();
    let problems = check_app(&outside, Some(&narrow), Some(&other), &[], &groups());
    assert_eq!(
        problems[1].to_string(),
        "spec.namespace: namespace \"team-b\" is not allowed by Project team-a's destinations"
    );

    let missing = app(Some("nope"), "team-a", all());
    assert_eq!(
        check_app(&missing, None, Some(&shop), &cl, &groups())[0].to_string(),
        "spec.project: Project \"nope\" does not exist"
    );
    let d = app(None, "anything", all());
    assert!(check_app(&d, Some(default_project()), None, &cl, &groups()).is_empty());
}

#[test]
fn rules_for_a_target() {
    let p = team_a();
    let fleet = Fleet::new();
    let cl = fleet.labels();
    let rules = target_rules(&p, cl[0], &groups()).unwrap();
    assert_eq!(rules.name, "team-a");
    assert_eq!(rules.namespaces, ["team-a", "team-a-*"]);
    assert!(target_rules(default_project(), cl[0], &groups()).is_none());
    let any = GroupKind {
        group: "*".into(),
        kind: "*".into(),
    };
    assert!(group_kind_matches(
        &any,
        "rbac.authorization.k8s.io",
        "ClusterRole"
    ));
    let quota = GroupKind {
        group: String::new(),
        kind: "ResourceQuota".into(),
    };
    assert!(group_kind_matches(&quota, "", "ResourceQuota"));
    assert!(!group_kind_matches(&quota, "example.com", "ResourceQuota"));
    assert_eq!(describe_kind("", "Namespace"), "Namespace");
    assert_eq!(
        describe_kind("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        "rbac.authorization.k8s.io/ClusterRoleBinding"
    );
}
