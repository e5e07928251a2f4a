use super::*;

fn yaml_to_json(yaml: &str) -> String {
    let v = crate::yaml::Budget::new(crate::yaml::Limits::DEFAULT)
        .document(yaml)
        .expect("test yaml");
    v.to_string()
}

fn parse_yaml(yaml: &str) -> Result<Resource, ResourceError> {
    parse_document("test.yaml#0", &yaml_to_json(yaml))
}

const DESIGN_APP: &str = r#"
apiVersion: gitfleet.dev/v1
kind: App
metadata: { name: guestbook }
spec:
  repo: platform
  path: apps/guestbook
  namespace: guestbook
  targets:
    - clusterSelector: { matchLabels: { env: prod } }
    - clusterGroup: eu
    - clusters: [edge-1]
  render: { type: auto }
  customize:
    - clusterSelector: { matchLabels: { env: dev } }
      kustomize: { dir: overlays/dev }
  syncPolicy: { prune: true, selfHeal: true, suspended: false }
  rollout: { maxUnavailable: 25%, waves: [ { clusterSelector: { matchLabels: { ring: canary } } } ], onFailure: pause }
"#;

#[test]
fn design_example_app_parses() {
    let Resource::App(app) = parse_yaml(DESIGN_APP).unwrap() else {
        panic!("not an app")
    };
    assert_eq!(app.metadata.name, "guestbook");
    assert_eq!(app.spec.targets.len(), 3);
    assert_eq!(app.spec.targets[1].cluster_group.as_deref(), Some("eu"));
    assert_eq!(app.spec.targets[2].clusters, vec!["edge-1".to_owned()]);
    assert_eq!(
        app.spec.customize[0]
            .kustomize
            .as_ref()
            .and_then(|k| k.dir.as_deref()),
        Some("overlays/dev")
    );
    assert!(app.spec.sync_policy.prune);
    let rollout = app.spec.rollout.expect("design example has a rollout");
    assert_eq!(rollout.max_unavailable, Some(IntOrPercent::Percent(25)));
    assert_eq!(rollout.on_failure, Some(OnFailure::Pause));
    assert_eq!(rollout.waves.len(), 1);
}

#[test]
fn round_trips_through_json() {
    let r = parse_yaml(DESIGN_APP).unwrap();
    let again = parse_document("", &r.to_json().to_string()).unwrap();
    assert_eq!(r, again);
    assert_eq!(r.kind(), Kind::App);
    assert_eq!(r.name(), "guestbook");
}

#[test]
fn repo_defaults_and_refs() {
    let r = parse_yaml(
        "apiVersion: gitfleet.dev/v1\nkind: Repo\nmetadata: {name: platform}\nspec: {url: 'https://git.example.com/p.git'}",
    )
    .unwrap();
    let Resource::Repo(repo) = r else { panic!() };
    assert_eq!(repo.spec.reference, GitRef::Branch("main".into()));
    assert_eq!(repo.spec.poll_interval, None);

    let r = parse_yaml(
        "apiVersion: gitfleet.dev/v1\nkind: Repo\nmetadata: {name: p}\nspec: {url: 'git@github.com:o/p.git', ref: {tag: v1.2.0}, pollInterval: 15s}",
    )
    .unwrap();
    let Resource::Repo(repo) = r else { panic!() };
    assert_eq!(repo.spec.reference, GitRef::Tag("v1.2.0".into()));
    assert_eq!(
        repo.spec.poll_interval,
        Some(std::time::Duration::from_secs(15))
    );
}

fn app_with_targets(targets: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1\nkind: App\nmetadata: {{name: web}}\nspec:\n  repo: r\n  path: apps/web\n  namespace: web\n  targets:\n{targets}"
    )
}

#[test]
fn unknown_operator_names_the_path() {
    let e = parse_yaml(&app_with_targets(
        "    - clusters: [a]\n    - clusterSelector: {matchExpressions: [{key: env, operator: Inn, values: [x]}]}\n",
    ))
    .unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.subject, "app \"web\"");
    assert_eq!(
        e.path,
        "spec.targets[1].clusterSelector.matchExpressions[0].operator"
    );
    assert!(msg.contains("unknown value `Inn`"), "{msg}");
    assert!(
        msg.starts_with("test.yaml#0: app \"web\": spec.targets[1]"),
        "{msg}"
    );
}

#[test]
fn selector_operator_value_rules() {
    let e = parse_yaml(&app_with_targets(
        "    - clusterSelector: {matchExpressions: [{key: env, operator: In}]}\n",
    ))
    .unwrap_err();
    assert_eq!(
        e.path,
        "spec.targets[0].clusterSelector.matchExpressions[0].values"
    );
    assert!(e.message.contains("needs at least one value"));

    let e = parse_yaml(&app_with_targets(
        "    - clusterSelector: {matchExpressions: [{key: env, operator: Exists, values: [a]}]}\n",
    ))
    .unwrap_err();
    assert!(e.message.contains("takes no values"), "{e}");

    let e = parse_yaml(&app_with_targets(
        "    - clusterSelector: {matchLabels: {'bad key!': x}}\n",
    ))
    .unwrap_err();
    assert_eq!(e.path, "spec.targets[0].clusterSelector.matchLabels");
}

#[test]
fn a_selection_sets_exactly_one_field() {
    let e = parse_yaml(&app_with_targets(
        "    - clusters: [a]\n      clusterGroup: eu\n",
    ))
    .unwrap_err();
    assert_eq!(e.path, "spec.targets[0]");
    assert!(e.message.contains("exactly one"));
    let e = parse_yaml(&app_with_targets("    - {}\n")).unwrap_err();
    assert_eq!(e.path, "spec.targets[0]");
    let e = parse_yaml(&app_with_targets("    []\n")).unwrap_err();
    assert_eq!(e.path, "spec.targets");
}

#[test]
fn unsafe_paths_are_refused() {
    for (path, why) in [
        ("../etc", "'..'"),
        ("apps/../../x", "'..'"),
        ("/abs", "relative"),
        ("apps/.git/config", ".git"),
    ] {
        let doc = format!(
            "apiVersion: gitfleet.dev/v1\nkind: App\nmetadata: {{name: web}}\nspec: {{repo: r, path: '{path}', namespace: web, targets: [{{clusters: [a]}}]}}"
        );
        let e = parse_yaml(&doc).unwrap_err();
        assert_eq!(e.path, "spec.path", "{path}");
        assert!(e.message.contains(why), "{path}: {e}");
    }
}

#[test]
fn names_must_be_dns_labels() {
    let e = parse_yaml(
        "apiVersion: gitfleet.dev/v1\nkind: ClusterGroup\nmetadata: {name: Bad_Name}\nspec: {selector: {}}",
    )
    .unwrap_err();
    assert_eq!(e.path, "metadata.name");
    assert!(e.message.contains("lowercase"), "{e}");
    let e = parse_yaml(&app_with_targets("    - clusters: [Edge_1]\n")).unwrap_err();
    assert_eq!(e.path, "spec.targets[0].clusters[0]");
}

#[test]
fn unknown_fields_kinds_and_versions() {
    let e = parse_yaml(&format!(
        "{}  rollout2: {{}}\n",
        app_with_targets("    - clusters: [a]\n")
    ))
    .unwrap_err();
    assert!(e.message.contains("unknown field `rollout2`"), "{e}");
    assert_eq!(e.path, "spec.rollout2");

    let e = parse_yaml("apiVersion: gitfleet.dev/v1\nkind: Deployment\nmetadata: {name: x}")
        .unwrap_err();
    assert_eq!(e.path, "kind");
    assert!(e.message.contains("unknown kind \"Deployment\""));

    let e =
        parse_yaml("apiVersion: v2\nkind: Repo\nmetadata: {name: x}\nspec: {url: 'https://a/b'}")
            .unwrap_err();
    assert_eq!(e.path, "apiVersion");
    assert_eq!(e.subject, "repo \"x\"");

    let e = parse_document("f#1", "[1,2]").unwrap_err();
    assert_eq!(e.subject, "document");
    let e = parse_document("f#1", "{not json").unwrap_err();
    assert_eq!(e.subject, "document");
}

#[test]
fn repo_url_and_ref_checks() {
    let repo = |spec: &str| {
        parse_yaml(&format!(
            "apiVersion: gitfleet.dev/v1\nkind: Repo\nmetadata: {{name: r}}\nspec: {spec}"
        ))
    };
    assert_eq!(repo("{url: 'not a url'}").unwrap_err().path, "spec.url");
    assert_eq!(
        repo("{url: 'https://a/b', ref: {commit: abc}}")
            .unwrap_err()
            .path,
        "spec.ref.commit"
    );
    assert_eq!(
        repo("{url: 'https://a/b', ref: {branch: 'a..b'}}")
            .unwrap_err()
            .path,
        "spec.ref"
    );
    assert_eq!(
        repo("{url: 'https://a/b', pollInterval: 1ms}")
            .unwrap_err()
            .path,
        "spec.pollInterval"
    );
    let e = repo("{url: 'https://a/b', ref: {branch: main, tag: v1}}").unwrap_err();
    assert!(e.path.starts_with("spec.ref"), "{e}");
    assert!(
        repo("{url: 'file:///tmp/x', ref: {commit: 0123456789abcdef0123456789abcdef01234567}}")
            .is_ok()
    );
}

#[test]
fn repo_secret_refs_name_entries_and_never_hold_secrets() {
    let repo = |spec: &str| {
        parse_yaml(&format!(
            "apiVersion: gitfleet.dev/v1\nkind: Repo\nmetadata: {{name: r}}\nspec: {spec}"
        ))
    };
    let r = repo(
        "{url: 'https://a/b', credentialsRef: github-bot, webhookSecretRef: hooks.platform_1}",
    )
    .unwrap();
    let Resource::Repo(r) = r else { panic!() };
    assert_eq!(r.spec.credentials_ref.as_deref(), Some("github-bot"));
    assert_eq!(
        r.spec.webhook_secret_ref.as_deref(),
        Some("hooks.platform_1")
    );
    // Stored and printed under the names users write.
    let json = Resource::Repo(r).to_json();
    assert_eq!(json["spec"]["credentialsRef"], "github-bot");
    assert_eq!(json["spec"]["webhookSecretRef"], "hooks.platform_1");

    let e = repo("{url: 'https://a/b', credentialsRef: ''}").unwrap_err();
    assert_eq!(
        (e.path.as_str(), e.message.as_str()),
        ("spec.credentialsRef", "must not be empty")
    );
    // A pasted secret (here a basic-auth pair) is refused without being repeated.
    let e = repo("{url: 'https://a/b', webhookSecretRef: 'user:hunter2 x'}").unwrap_err();
    assert_eq!(e.path, "spec.webhookSecretRef");
    assert!(e.message.contains("never the secret itself"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = repo("{url: 'https://a/b', credentials: x}").unwrap_err();
    assert!(e.message.contains("unknown field"), "{e}");
}

#[test]
fn repo_verify_trusted_keys_are_checked_with_their_field_path() {
    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHWmmPDS6oKgrENPNtLX64jCS/x3eUEECdKwQMJ7/nqM release-bot";
    let repo = |verify: &str| {
        parse_yaml(&format!(
            "apiVersion: gitfleet.dev/v1\nkind: Repo\nmetadata: {{name: r}}\nspec: {{url: 'https://a/b', verify: {verify}}}"
        ))
    };
    let Resource::Repo(r) = repo(&format!("{{trustedKeys: ['{KEY}']}}")).unwrap() else {
        panic!()
    };
    let verify = r.spec.verify.clone().expect("verify");
    assert_eq!(verify.trusted_keys, vec![KEY.to_owned()]);
    assert_eq!(
        r.spec
            .trusted_keys()
            .expect("asked")
            .expect("parses")
            .keys()
            .len(),
        1
    );
    let json = Resource::Repo(r).to_json();
    assert_eq!(json["spec"]["verify"]["trustedKeys"][0], KEY);

    let e = repo(&format!("{{trustedKeys: ['{KEY}', 'hello']}}")).unwrap_err();
    assert_eq!(
        (e.path.as_str(), e.message.as_str()),
        (
            "spec.verify.trustedKeys[1]",
            "not an SSH public key or an armored OpenPGP public key"
        )
    );
    let e = repo("{trustedKeys: []}").unwrap_err();
    assert_eq!(e.path, "spec.verify.trustedKeys");
    assert!(e.message.starts_with("must list at least one key"), "{e}");
    let e = repo("{trustedKeys: ['ssh-ed25519 AAAA broken']}").unwrap_err();
    assert_eq!(e.path, "spec.verify.trustedKeys[0]");
    assert!(e.message.starts_with("not a valid SSH public key"), "{e}");
    let e = repo("{keys: []}").unwrap_err();
    assert!(e.message.contains("unknown field"), "{e}");
    // No verify: no signatures asked for.
    let Resource::Repo(r) = parse_yaml(
        "apiVersion: gitfleet.dev/v1\nkind: Repo\nmetadata: {name: r}\nspec: {url: 'https://a/b'}",
    )
    .unwrap() else {
        panic!()
    };
    assert!(r.spec.trusted_keys().is_none());
}

#[test]
fn kind_parses_cli_spellings() {
    assert_eq!(Kind::parse("apps"), Some(Kind::App));
    assert_eq!(Kind::parse("Repo"), Some(Kind::Repo));
    assert_eq!(Kind::parse("clustergroups"), Some(Kind::ClusterGroup));
    assert_eq!(Kind::parse("pods"), None);
}

fn app_with_rollout(rollout: &str) -> Result<Resource, ResourceError> {
    parse_yaml(&format!(
        "{}  rollout:\n{rollout}",
        app_with_targets("    - clusterSelector: {}\n")
    ))
}

fn rollout_of(r: Resource) -> RolloutSpec {
    let Resource::App(a) = r else {
        panic!("not an app")
    };
    *a.spec.rollout.expect("rollout set")
}

#[test]
fn rollout_strategy_parses_with_waves_and_defaults() {
    let r = rollout_of(
        app_with_rollout(
            "    maxUnavailable: 25%\n    minHealthyFor: 5m\n    onFailure: rollback\n    waves:\n      - name: canary\n        clusters: [canary-1]\n        maxUnavailable: 1\n      - clusterGroup: eu\n        failureBudget: \"10%\"\n        minHealthyFor: 30s\n",
        )
        .unwrap(),
    );
    assert_eq!(r.max_unavailable, Some(IntOrPercent::Percent(25)));
    assert_eq!(r.min_healthy_for, Some(Duration::from_secs(300)));
    assert_eq!(r.on_failure, Some(OnFailure::Rollback));
    assert_eq!(r.progress_deadline, None);
    assert_eq!(r.failure_budget, None);
    assert_eq!(r.waves.len(), 2);
    assert_eq!(r.waves[0].name.as_deref(), Some("canary"));
    assert_eq!(r.waves[0].selection().clusters, vec!["canary-1".to_owned()]);
    assert_eq!(r.waves[0].max_unavailable, Some(IntOrPercent::Count(1)));
    assert_eq!(r.waves[1].cluster_group.as_deref(), Some("eu"));
    assert_eq!(r.waves[1].failure_budget, Some(IntOrPercent::Percent(10)));
    assert_eq!(r.waves[1].min_healthy_for, Some(Duration::from_secs(30)));

    // An App without a rollout has none (all at once); an empty one is all defaults.
    let Resource::App(a) = parse_yaml(&app_with_targets("    - clusters: [a]\n")).unwrap() else {
        panic!()
    };
    assert_eq!(a.spec.rollout, None);
    assert_eq!(
        rollout_of(app_with_rollout("    {}\n").unwrap()),
        RolloutSpec::default()
    );
}

#[test]
fn rollout_round_trips_through_json() {
    let r = app_with_rollout(
        "    maxUnavailable: \"50%\"\n    failureBudget: 2\n    progressDeadline: 15m\n    waves: [{clusterSelector: {matchLabels: {ring: canary}}, maxUnavailable: 3}]\n",
    )
    .unwrap();
    let json = r.to_json();
    assert_eq!(json["spec"]["rollout"]["maxUnavailable"], "50%");
    assert_eq!(json["spec"]["rollout"]["failureBudget"], 2);
    assert_eq!(json["spec"]["rollout"]["waves"][0]["maxUnavailable"], 3);
    assert_eq!(parse_document("", &json.to_string()).unwrap(), r);
}

#[test]
fn rollout_errors_name_the_field() {
    let cases = [
        (
            "    waves: [{clusters: [a]}, {clusters: [b], maxUnavailable: \"120%\"}]\n",
            "spec.rollout.waves[1].maxUnavailable",
            "\"120%\" is more than 100%",
        ),
        (
            "    maxUnavailable: 0\n",
            "spec.rollout.maxUnavailable",
            "would never update anything",
        ),
        (
            "    maxUnavailable: \"0%\"\n",
            "spec.rollout.maxUnavailable",
            "would never update anything",
        ),
        (
            "    failureBudget: \"101%\"\n",
            "spec.rollout.failureBudget",
            "more than 100%",
        ),
        (
            "    maxUnavailable: -1\n",
            "spec.rollout.maxUnavailable",
            "must not be negative",
        ),
        (
            "    maxUnavailable: 1.5\n",
            "spec.rollout.maxUnavailable",
            "not a whole number",
        ),
        (
            "    maxUnavailable: quarter\n",
            "spec.rollout.maxUnavailable",
            "not a count or a percentage",
        ),
        (
            "    onFailure: explode\n",
            "spec.rollout.onFailure",
            "unknown value `explode`",
        ),
        (
            "    progressDeadline: 0s\n",
            "spec.rollout.progressDeadline",
            "at least 1s",
        ),
        (
            "    minHealthyFor: soon\n",
            "spec.rollout.minHealthyFor",
            "",
        ),
        (
            "    waves: [{clusters: [a], clusterGroup: eu}]\n",
            "spec.rollout.waves[0]",
            "exactly one",
        ),
        (
            "    waves: [{name: x}]\n",
            "spec.rollout.waves[0]",
            "exactly one",
        ),
        (
            "    waves: [{clusters: [Bad]}]\n",
            "spec.rollout.waves[0].clusters[0]",
            "lowercase",
        ),
        (
            "    waves: [{name: eu, clusters: [a]}, {name: eu, clusters: [b]}]\n",
            "spec.rollout.waves[1].name",
            "earlier wave",
        ),
        (
            "    waves: [{clusters: [a], batch: 2}]\n",
            "spec.rollout.waves[0].batch",
            "unknown field `batch`",
        ),
    ];
    for (yaml, path, message) in cases {
        let e = app_with_rollout(yaml).unwrap_err();
        assert_eq!(e.path, path, "{yaml}: {e}");
        assert!(e.message.contains(message), "{yaml}: {e}");
    }
    let e = app_with_rollout(
        "    waves: [{clusters: [a]}, {clusters: [b], maxUnavailable: \"120%\"}]\n",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "test.yaml#0: app \"web\": spec.rollout.waves[1].maxUnavailable: \"120%\" is more than 100%"
    );
}

#[test]
fn int_or_percent_parses_and_prints() {
    for (text, value) in [
        ("3", IntOrPercent::Count(3)),
        ("25%", IntOrPercent::Percent(25)),
        (" 7 % ", IntOrPercent::Percent(7)),
        ("0", IntOrPercent::Count(0)),
    ] {
        assert_eq!(text.parse::<IntOrPercent>(), Ok(value), "{text}");
    }
    for bad in ["", "%", "-1", "1.5", "x%", "25%%", "99999999999"] {
        assert!(bad.parse::<IntOrPercent>().is_err(), "{bad}");
    }
    assert_eq!(IntOrPercent::Percent(25).to_string(), "25%");
    assert_eq!(IntOrPercent::Count(2).to_string(), "2");
    for v in [IntOrPercent::Count(4), IntOrPercent::Percent(30)] {
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<IntOrPercent>(&json).unwrap(), v);
        let yaml = serde_saphyr::to_string(&v).unwrap();
        assert_eq!(serde_saphyr::from_str::<IntOrPercent>(&yaml).unwrap(), v);
    }
    assert_eq!(serde_json::to_string(&IntOrPercent::Count(4)).unwrap(), "4");
    assert_eq!(
        serde_json::to_string(&IntOrPercent::Percent(30)).unwrap(),
        "\"30%\""
    );
    assert_eq!(
        serde_json::from_str::<IntOrPercent>("\"4\"").unwrap(),
        IntOrPercent::Count(4)
    );
}

/// Percentages round down but a non-zero percentage of a non-empty set is at least 1; counts are
/// capped at the set; nothing of nothing is nothing.
#[test]
fn int_or_percent_resolves_against_a_total() {
    use IntOrPercent::{Count, Percent};
    let cases = [
        (Percent(25), 8, 2),
        (Percent(25), 7, 1), // 1.75 rounds down
        (Percent(10), 4, 1), // 0.4 rounds down to 0, raised to 1
        (Percent(1), 1000, 10),
        (Percent(100), 5, 5),
        (Percent(99), 5, 4),
        (Percent(0), 5, 0),
        (Percent(50), 0, 0),
        (Count(2), 8, 2),
        (Count(20), 8, 8),
        (Count(0), 8, 0),
        (Count(3), 0, 0),
    ];
    for (v, total, want) in cases {
        assert_eq!(v.resolve(total), want, "{v} of {total}");
    }
}

#[test]
fn helm_release_names_and_values_files_cannot_smuggle_flags() {
    let app = |helm: &str| {
        format!(
            "apiVersion: gitfleet.dev/v1\nkind: App\nmetadata: {{name: web}}\nspec: {{repo: r, path: charts/web, namespace: web, targets: [{{clusters: [a]}}], render: {{type: helm, helm: {helm}}}, customize: [{{clusters: [b], helm: {{releaseName: web-b}}}}]}}"
        )
    };
    let e = parse_yaml(&app("{releaseName: '--set-file=k=/data/identity/key.pem'}")).unwrap_err();
    assert_eq!(e.path, "spec.render.helm.releaseName");
    assert_eq!(
        e.message,
        "\"--set-file=k=/data/identity/key.pem\" must consist of lowercase letters, digits, '-' and '.'"
    );
    assert_eq!(
        e.to_string(),
        "test.yaml#0: app \"web\": spec.render.helm.releaseName: \"--set-file=k=/data/identity/key.pem\" must consist of lowercase letters, digits, '-' and '.'"
    );
    for (name, problem) in [
        (
            "--post-renderer=/bin/sh",
            "must consist of lowercase letters",
        ),
        ("Web", "must consist of lowercase letters"),
        ("-web", "must start and end with a letter or digit"),
        ("web..v1", "must start and end with a letter or digit"),
        ("''", "must not be empty"),
        (&"a".repeat(54) as &str, "must be at most 53 characters"),
    ] {
        let e = parse_yaml(&app(&format!("{{releaseName: {name}}}"))).unwrap_err();
        assert_eq!(e.path, "spec.render.helm.releaseName", "{name}");
        assert!(e.message.contains(problem), "{name}: {e}");
    }
    let e = parse_yaml(&app("{valuesFiles: [values.yaml, '--set-file=k=/x']}")).unwrap_err();
    assert_eq!(e.path, "spec.render.helm.valuesFiles[1]");
    assert_eq!(e.message, "\"--set-file=k=/x\" must not start with '-'");
    for ok in ["web", "web-1", "web.v1", &"a".repeat(53) as &str] {
        parse_yaml(&app(&format!(
            "{{releaseName: {ok}, valuesFiles: [values-prod.yaml]}}"
        )))
        .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let customized = app("{}").replace("releaseName: web-b", "releaseName: '--dry-run=server'");
    let e = parse_yaml(&customized).unwrap_err();
    assert_eq!(e.path, "spec.customize[0].helm.releaseName");
}

#[test]
fn sync_policy_adopt_is_off_unless_asked_for() {
    let Resource::App(app) = parse_yaml(DESIGN_APP).unwrap() else {
        panic!("not an app")
    };
    assert!(!app.spec.sync_policy.adopt);
    let adopting = DESIGN_APP.replace("suspended: false }", "suspended: false, adopt: true }");
    let Resource::App(app) = parse_yaml(&adopting).unwrap() else {
        panic!("not an app")
    };
    assert!(app.spec.sync_policy.adopt);
    let wrong = DESIGN_APP.replace("suspended: false }", "suspended: false, adopt: sure }");
    let error = parse_yaml(&wrong).unwrap_err().to_string();
    assert!(error.contains("syncPolicy.adopt"), "{error}");
}

const ISSUE_PROJECT: &str = r#"
apiVersion: gitfleet.dev/v1
kind: Project
metadata: {name: team-a}
spec:
  sourceRepos: [shop, "https://git.example.com/team-a/*"]
  destinations:
  - clusterSelector: {matchLabels: {env: prod}}
    namespaces: [team-a, "team-a-*"]
  clusterResources: []
  namespaceResources: {deny: [{group: "", kind: ResourceQuota}]}
"#;

#[test]
fn the_issues_project_parses() {
    let Resource::Project(p) = parse_yaml(ISSUE_PROJECT).unwrap() else {
        panic!("not a project")
    };
    assert_eq!(p.metadata.name, "team-a");
    assert_eq!(p.spec.source_repos.len(), 2);
    assert_eq!(p.spec.destinations[0].namespaces, ["team-a", "team-a-*"]);
    assert!(p.spec.cluster_resources.is_empty());
    assert_eq!(
        p.spec.namespace_resources.deny,
        [GroupKind {
            group: String::new(),
            kind: "ResourceQuota".into()
        }]
    );
    assert_eq!(Kind::parse("projects"), Some(Kind::Project));
}

#[test]
fn project_errors_name_the_field() {
    let cases = [
        (
            "metadata: {name: default}\nspec: {}",
            "metadata.name: \"default\" is the built-in Project",
        ),
        (
            "metadata: {name: p}\nspec: {destinations: [{name: a, group: g, namespaces: [x]}]}",
            "spec.destinations[0]: set exactly one of name, clusterSelector or group",
        ),
        (
            "metadata: {name: p}\nspec: {destinations: [{name: a, namespaces: []}]}",
            "spec.destinations[0].namespaces: must list at least one",
        ),
        (
            "metadata: {name: p}\nspec: {destinations: [{name: a, namespaces: [Team_A]}]}",
            "spec.destinations[0].namespaces[0]: \"Team_A\" must consist of",
        ),
        (
            "metadata: {name: p}\nspec: {clusterResources: [{group: \"rbac..io\", kind: Role}]}",
            "spec.clusterResources[0].group",
        ),
        (
            "metadata: {name: p}\nspec: {namespaceResources: {deny: [{kind: \"Config Map\"}]}}",
            "spec.namespaceResources.deny[0].kind",
        ),
        (
            "metadata: {name: p}\nspec: {sourceRepos: [\"\"]}",
            "spec.sourceRepos[0]: must not be empty",
        ),
    ];
    for (body, want) in cases {
        let doc = format!("apiVersion: gitfleet.dev/v1\nkind: Project\n{body}");
        let e = parse_yaml(&doc).unwrap_err().to_string();
        assert!(e.contains(want), "{body}: {e}");
    }
}

#[test]
fn an_app_names_its_project() {
    let doc = DESIGN_APP.replace("  repo: platform", "  project: team-a\n  repo: platform");
    let Resource::App(app) = parse_yaml(&doc).unwrap() else {
        panic!("not an app")
    };
    assert_eq!(app.spec.project_name(), "team-a");
    let Resource::App(app) = parse_yaml(DESIGN_APP).unwrap() else {
        panic!("not an app")
    };
    assert_eq!(app.spec.project_name(), "default");
    // Stored Apps of earlier releases read and write the same.
    assert!(
        !Resource::App(app).to_json()["spec"]
            .as_object()
            .unwrap()
            .contains_key("project")
    );
    let bad = DESIGN_APP.replace("  repo: platform", "  project: Team-A\n  repo: platform");
    let e = parse_yaml(&bad).unwrap_err().to_string();
    assert!(e.contains("spec.project: \"Team-A\""), "{e}");
}

#[test]
fn depends_on_names_other_apps_each_once() {
    let with = |deps: &str| {
        DESIGN_APP.replace(
            "suspended: false }",
            &format!("suspended: false }}\n  dependsOn: {deps}"),
        )
    };
    let Resource::App(app) = parse_yaml(&with("[ingress, cert-manager]")).unwrap() else {
        panic!("not an app")
    };
    assert_eq!(app.spec.depends_on, vec!["ingress", "cert-manager"]);
    let Resource::App(name) = parse_yaml(DESIGN_APP).unwrap() else {
        panic!("not an app")
    };
    let itself = with(&format!("[{}]", name.metadata.name));
    for (deps, path, message) in [
        ("[ingress, Ingress_1]", "spec.dependsOn[1]", "\"Ingress_1\""),
        ("[ingress, ingress]", "spec.dependsOn[1]", "named twice"),
    ] {
        let e = parse_yaml(&with(deps)).unwrap_err();
        assert_eq!(e.path, path, "{deps}");
        assert!(e.message.contains(message), "{deps}: {e}");
    }
    let e = parse_yaml(&itself).unwrap_err();
    assert_eq!(e.path, "spec.dependsOn[0]");
    assert!(e.message.contains("cannot depend on itself"), "{e}");
}

#[test]
fn sync_windows_parse_on_projects_and_apps_and_errors_name_the_field() {
    let project = "apiVersion: gitfleet.dev/v1\nkind: Project\nmetadata: {name: shop}\nspec:\n  \
                   syncWindows:\n    - kind: deny\n      schedule: \"0 14 * * 5\"\n      \
                   duration: 10h\n      timeZone: Europe/Berlin\n      \
                   clusterSelector: {matchLabels: {env: prod}}\n";
    let Resource::Project(p) = parse_yaml(project).unwrap() else {
        panic!("not a project")
    };
    let w = &p.spec.sync_windows[0];
    assert_eq!(w.kind, SyncWindowKind::Deny);
    assert_eq!(w.duration, Duration::from_secs(36_000));
    assert_eq!(w.time_zone.as_deref(), Some("Europe/Berlin"));
    assert!(w.self_heal, "a window self-heals unless it says not to");
    let again = parse_document("", &Resource::Project(p.clone()).to_json().to_string()).unwrap();
    assert_eq!(again, Resource::Project(p));

    let app = DESIGN_APP.replace(
        "  syncPolicy:",
        "  syncWindows: [{kind: allow, schedule: \"0 22 * * *\", duration: 2h}]\n  syncPolicy:",
    );
    let Resource::App(a) = parse_yaml(&app).unwrap() else {
        panic!("not an app")
    };
    assert_eq!(a.spec.sync_windows[0].kind, SyncWindowKind::Allow);

    let no_heal = DESIGN_APP.replace(
        "  syncPolicy:",
        "  syncWindows: [{kind: deny, schedule: \"0 22 * * *\", duration: 2h, selfHeal: false}]\n  syncPolicy:",
    );
    let Resource::App(a) = parse_yaml(&no_heal).unwrap() else {
        panic!("not an app")
    };
    assert!(!a.spec.sync_windows[0].self_heal);
    let json = Resource::App(a.clone()).to_json().to_string();
    assert!(json.contains(r#""selfHeal":false"#), "{json}");
    let again = parse_document("", &json).unwrap();
    assert_eq!(again, Resource::App(a));

    let cases = [
        (
            "{kind: maybe, schedule: \"0 1 * * *\", duration: 1h}",
            "spec.syncWindows[0].kind",
        ),
        (
            "{kind: deny, schedule: \"0 1 * *\", duration: 1h}",
            "spec.syncWindows[0].schedule: \"0 1 * *\" has 4 fields",
        ),
        (
            "{kind: deny, schedule: \"0 1 * * *\", duration: 10s}",
            "spec.syncWindows[0].duration",
        ),
        (
            "{kind: deny, schedule: \"0 1 * * *\", duration: 1h, timeZone: Mars/Base}",
            "spec.syncWindows[0].timeZone: \"Mars/Base\" is not an IANA time zone",
        ),
        (
            "{kind: deny, schedule: \"0 1 * * *\", duration: 1h, clusterSelector: {matchLabels: {\"bad key\": x}}}",
            "spec.syncWindows[0].clusterSelector.matchLabels",
        ),
        (
            "{kind: deny, schedule: \"0 1 * * *\"}",
            "spec.syncWindows[0]",
        ),
        (
            "{kind: deny, schedule: \"0 1 * * *\", duration: 1h, selfHeal: sometimes}",
            "spec.syncWindows[0].selfHeal",
        ),
    ];
    for (window, want) in cases {
        let doc = format!(
            "apiVersion: gitfleet.dev/v1\nkind: Project\nmetadata: {{name: p}}\nspec:\n  syncWindows: [{window}]\n"
        );
        let e = parse_yaml(&doc).unwrap_err().to_string();
        assert!(e.contains(want), "{window}: {e}");
    }
}

#[test]
fn helm_charts_from_repositories_are_checked_field_by_field() {
    let app = |chart: &str, extra: &str| {
        format!(
            "apiVersion: gitfleet.dev/v1\nkind: App\nmetadata: {{name: web}}\nspec: {{repo: r, path: values/web, namespace: web, targets: [{{clusters: [a]}}], render: {{helm: {{chart: {chart}}}}}{extra}}}"
        )
    };
    let ok = "{repository: 'https://charts.example.com', name: podinfo, version: ^6.0.0}";
    let Resource::App(parsed) = parse_yaml(&app(ok, "")).unwrap() else {
        panic!("not an app")
    };
    let chart = parsed.spec.render.helm.unwrap().chart.unwrap();
    assert_eq!(chart.version, "^6.0.0");
    parse_yaml(&app(
        "{repository: 'oci://registry.example.com/charts', name: podinfo, version: 6.5.4}",
        "",
    ))
    .unwrap();
    for (chart, path, says) in [
        (
            "{repository: 'http://charts.example.com', name: podinfo, version: '1.0.0'}",
            "spec.render.helm.chart.repository",
            "loopback",
        ),
        (
            "{repository: 'https://169.254.169.254', name: podinfo, version: '1.0.0'}",
            "spec.render.helm.chart.repository",
            "link-local",
        ),
        (
            "{repository: 'https://c.example.com', name: '../x', version: '1.0.0'}",
            "spec.render.helm.chart.name",
            "lowercase",
        ),
        (
            "{repository: 'https://c.example.com', name: podinfo, version: '>>1'}",
            "spec.render.helm.chart.version",
            "semver range",
        ),
    ] {
        let e = parse_yaml(&app(chart, "")).unwrap_err();
        assert_eq!(e.path, path, "{chart}");
        assert!(e.message.contains(says), "{chart}: {e}");
    }
    let e = parse_yaml(&app(ok, ", customize: [{clusters: [b], helm: {chart: {repository: 'https://x.example.com', name: x, version: '1.0.0'}}}]")).unwrap_err();
    assert_eq!(e.path, "spec.customize[0].helm.chart");
    let kustomize = app(ok, "").replace("render: {helm", "render: {type: kustomize, helm");
    assert_eq!(parse_yaml(&kustomize).unwrap_err().path, "spec.render.type");
}
