use std::collections::BTreeMap;

use super::*;
use crate::resources::{
    AppSpec, ClusterGroupSpec, Customization, LabelSelectorRequirement, Metadata,
};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn expr(key: &str, op: SelectorOperator, values: &[&str]) -> LabelSelector {
    LabelSelector {
        match_labels: BTreeMap::new(),
        match_expressions: vec![LabelSelectorRequirement {
            key: key.into(),
            operator: op,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }],
    }
}

#[test]
fn every_operator() {
    let prod = labels(&[("env", "prod"), ("region", "eu")]);
    let dev = labels(&[("env", "dev")]);
    let none = labels(&[]);
    let cases = [
        (
            expr("env", SelectorOperator::In, &["prod", "staging"]),
            [true, false, false],
        ),
        (
            expr("env", SelectorOperator::NotIn, &["prod"]),
            [false, true, true],
        ),
        (
            expr("region", SelectorOperator::Exists, &[]),
            [true, false, false],
        ),
        (
            expr("region", SelectorOperator::DoesNotExist, &[]),
            [false, true, true],
        ),
    ];
    for (sel, want) in cases {
        let got = [&prod, &dev, &none].map(|l| selector_matches(&sel, l));
        assert_eq!(got, want, "{sel:?}");
    }
}

#[test]
fn match_labels_and_expressions_all_hold() {
    let mut sel = expr("region", SelectorOperator::In, &["eu"]);
    sel.match_labels.insert("env".into(), "prod".into());
    assert!(selector_matches(
        &sel,
        &labels(&[("env", "prod"), ("region", "eu")])
    ));
    assert!(!selector_matches(
        &sel,
        &labels(&[("env", "dev"), ("region", "eu")])
    ));
    assert!(!selector_matches(
        &sel,
        &labels(&[("env", "prod"), ("region", "us")])
    ));
    assert!(
        selector_matches(&LabelSelector::default(), &labels(&[])),
        "empty selector matches all"
    );
}

struct Fleet {
    clusters: Vec<(String, BTreeMap<String, String>)>,
    groups: BTreeMap<String, ClusterGroup>,
}

impl Fleet {
    fn new() -> Self {
        Fleet {
            clusters: Vec::new(),
            groups: BTreeMap::new(),
        }
    }
    fn cluster(mut self, name: &str, l: &[(&str, &str)]) -> Self {
        self.clusters.push((name.into(), labels(l)));
        self
    }
    fn group(mut self, name: &str, selector: LabelSelector) -> Self {
        self.groups.insert(
            name.into(),
            ClusterGroup {
                api_version: crate::resources::API_VERSION.into(),
                metadata: Metadata {
                    name: name.into(),
                    ..Default::default()
                },
                spec: ClusterGroupSpec { selector },
            },
        );
        self
    }
    fn place(&self, app: &App) -> Vec<(String, Option<usize>)> {
        let cl: Vec<ClusterLabels<'_>> = self
            .clusters
            .iter()
            .map(|(n, l)| ClusterLabels { name: n, labels: l })
            .collect();
        place(app, &cl, &self.groups)
            .into_iter()
            .map(|p| (p.cluster, p.customization))
            .collect()
    }
}

fn app(targets: Vec<ClusterSelection>, customize: Vec<Customization>) -> App {
    App {
        api_version: crate::resources::API_VERSION.into(),
        metadata: Metadata {
            name: "web".into(),
            ..Default::default()
        },
        spec: AppSpec {
            project: None,
            repo: "r".into(),
            path: "apps/web".into(),
            namespace: "web".into(),
            extra_paths: vec![],
            targets,
            render: Default::default(),
            customize,
            sync_policy: Default::default(),
            rollout: None,
            depends_on: Vec::new(),
            sync_windows: Vec::new(),
        },
    }
}

fn by_labels(pairs: &[(&str, &str)]) -> ClusterSelection {
    ClusterSelection {
        cluster_selector: Some(LabelSelector {
            match_labels: labels(pairs),
            match_expressions: vec![],
        }),
        ..Default::default()
    }
}

fn by_group(g: &str) -> ClusterSelection {
    ClusterSelection {
        cluster_group: Some(g.into()),
        ..Default::default()
    }
}

fn by_names(names: &[&str]) -> ClusterSelection {
    ClusterSelection {
        clusters: names.iter().map(|n| (*n).to_owned()).collect(),
        ..Default::default()
    }
}

fn names(p: &[(String, Option<usize>)]) -> Vec<&str> {
    p.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn union_of_names_selectors_and_groups_sorted_without_duplicates() {
    let fleet = Fleet::new()
        .cluster("us-1", &[("env", "prod"), ("region", "us")])
        .cluster("eu-1", &[("env", "prod"), ("region", "eu")])
        .cluster("eu-2", &[("env", "dev"), ("region", "eu")])
        .cluster("edge-1", &[])
        .cluster("lab", &[("env", "lab")])
        .group("eu", expr("region", SelectorOperator::In, &["eu"]));
    let a = app(
        vec![
            by_labels(&[("env", "prod")]),
            by_group("eu"),
            by_names(&["edge-1", "ghost"]),
        ],
        vec![],
    );
    assert_eq!(names(&fleet.place(&a)), ["edge-1", "eu-1", "eu-2", "us-1"]);
}

#[test]
fn unknown_group_matches_nothing() {
    let fleet = Fleet::new().cluster("a", &[("env", "prod")]);
    assert!(fleet.place(&app(vec![by_group("nope")], vec![])).is_empty());
}

#[test]
fn label_changes_move_targets_in_and_out() {
    let a = app(vec![by_labels(&[("env", "prod")])], vec![]);
    let before = Fleet::new()
        .cluster("c1", &[("env", "staging")])
        .cluster("c2", &[("env", "prod")]);
    assert_eq!(names(&before.place(&a)), ["c2"]);
    let after = Fleet::new()
        .cluster("c1", &[("env", "prod")])
        .cluster("c2", &[("env", "retired")]);
    assert_eq!(names(&after.place(&a)), ["c1"]);
    let gone = Fleet::new().cluster("c1", &[("env", "prod")]);
    assert_eq!(names(&gone.place(&a)), ["c1"]);
}

#[test]
fn group_changes_move_targets() {
    let a = app(vec![by_group("eu")], vec![]);
    let f = Fleet::new()
        .cluster("x", &[("region", "eu")])
        .cluster("y", &[("region", "us")])
        .group("eu", expr("region", SelectorOperator::In, &["eu"]));
    assert_eq!(names(&f.place(&a)), ["x"]);
    let f = f.group("eu", expr("region", SelectorOperator::In, &["eu", "us"]));
    assert_eq!(names(&f.place(&a)), ["x", "y"]);
}

#[test]
fn first_matching_customization_wins() {
    let fleet = Fleet::new()
        .cluster("dev-1", &[("env", "dev"), ("tier", "gold")])
        .cluster("prod-1", &[("env", "prod"), ("tier", "gold")])
        .cluster("prod-2", &[("env", "prod")]);
    let custom = |sel: ClusterSelection| Customization {
        selection: sel,
        ..Default::default()
    };
    let a = app(
        vec![by_labels(&[])],
        vec![
            custom(by_labels(&[("env", "dev")])),
            custom(by_labels(&[("tier", "gold")])),
            custom(by_names(&["dev-1", "prod-1"])),
        ],
    );
    assert_eq!(
        fleet.place(&a),
        vec![
            ("dev-1".to_owned(), Some(0)),
            ("prod-1".to_owned(), Some(1)),
            ("prod-2".to_owned(), None),
        ]
    );
}
