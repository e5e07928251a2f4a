use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::resources::{LabelSelector, Resource, parse_document};

fn parse(yaml_json: serde_json::Value) -> Result<NotifierSpec, String> {
    let doc = serde_json::json!({
        "apiVersion": "gitfleet.dev/v1",
        "kind": "Notifier",
        "metadata": {"name": "ops"},
        "spec": yaml_json,
    });
    match parse_document("", &doc.to_string()) {
        Ok(Resource::Notifier(n)) => Ok(n.spec),
        Ok(other) => Err(format!("not a Notifier: {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

fn webhook(events: &[EventType]) -> NotifierSpec {
    NotifierSpec {
        webhook: Some(WebhookSink {
            url: "https://hooks.example.com/gitfleet".into(),
            secret_ref: Some("ops-hook".into()),
        }),
        events: events.to_vec(),
        ..Default::default()
    }
}

fn event(kind: &str, app: &str, cluster: &str, rollout: u64) -> EventRecord {
    EventRecord {
        id: 42,
        at_unix: 1_700_000_000,
        app: app.into(),
        cluster: cluster.into(),
        rollout,
        kind: kind.into(),
        message: "because".into(),
        by: String::new(),
        commit: String::new(),
    }
}

fn notification(kind: &str, rollout: u64) -> Notification {
    let event = event(kind, "shop", "", rollout);
    Notification {
        event_type: event_type(&event),
        event,
        project: "default".into(),
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        repo_url: "https://github.com/acme/shop.git".into(),
    }
}

#[test]
fn the_issue_example_parses() {
    let spec = parse(serde_json::json!({
        "webhook": {"url": "https://hooks.example.com/gitfleet", "secretRef": "ops-hook"},
        "events": ["RolloutStarted", "RolloutPaused", "RolloutRolledBack", "RolloutCompleted", "TargetDegraded"],
        "apps": ["shop"],
    }))
    .unwrap();
    assert_eq!(spec.apps, ["shop"]);
    assert_eq!(spec.events.len(), 5);
    assert_eq!(
        spec.secret_ref(),
        Some(("ops-hook", "spec.webhook.secretRef"))
    );
    assert_eq!(
        spec.static_url(),
        Some(("https://hooks.example.com/gitfleet", "spec.webhook.url"))
    );
    assert_eq!(
        spec.sink_text(),
        "webhook https://hooks.example.com/gitfleet"
    );
}

#[test]
fn every_bad_spec_is_refused_naming_the_field() {
    let hook = serde_json::json!({"url": "https://h.example/x"});
    for (spec, expected) in [
        (
            serde_json::json!({"events": ["RolloutStarted"]}),
            "notifier \"ops\": spec: name a sink",
        ),
        (
            serde_json::json!({"webhook": hook, "slack": {"url": "https://s.example/x"}, "events": ["RolloutStarted"]}),
            "notifier \"ops\": spec: name one sink only",
        ),
        (
            serde_json::json!({"webhook": hook, "events": []}),
            "spec.events: must name at least one event type",
        ),
        (
            serde_json::json!({"webhook": hook, "events": ["RolloutStarted", "RolloutStarted"]}),
            "spec.events[1]: RolloutStarted is listed twice",
        ),
        (
            serde_json::json!({"webhook": hook, "events": ["RolloutExploded"]}),
            "spec.events[0]: unknown value `RolloutExploded`",
        ),
        (
            serde_json::json!({"webhook": {"url": "http://hooks.example.com/x"}, "events": ["RolloutStarted"]}),
            "spec.webhook.url: \"http://hooks.example.com/x\" must be an https:// URL (http:// only to a loopback host)",
        ),
        (
            serde_json::json!({"webhook": {"url": "https://169.254.169.254/latest"}, "events": ["RolloutStarted"]}),
            "spec.webhook.url: \"https://169.254.169.254/latest\" is a link-local address",
        ),
        (
            serde_json::json!({"webhook": {"url": "https://metadata.google.internal/x"}, "events": ["RolloutStarted"]}),
            "is a cloud metadata service",
        ),
        (
            serde_json::json!({"webhook": {"url": "https://u:pw@h.example/x"}, "events": ["RolloutStarted"]}),
            "spec.webhook.url: \"https://h.example/x\" must not hold user information",
        ),
        (
            serde_json::json!({"webhook": {"url": "https://h.example/x", "secretRef": "s3cr3t value!"}, "events": ["RolloutStarted"]}),
            "spec.webhook.secretRef: must be the name of an entry in the hub's credentials file",
        ),
        (
            serde_json::json!({"webhook": {"url": "https://h.example/x", "token": "x"}, "events": ["RolloutStarted"]}),
            "spec.webhook.token: unknown field `token`",
        ),
        (
            serde_json::json!({"slack": {}, "events": ["RolloutStarted"]}),
            "spec.slack: give one of url and urlSecretRef",
        ),
        (
            serde_json::json!({"slack": {"url": "https://s.example/x", "urlSecretRef": "s"}, "events": ["RolloutStarted"]}),
            "spec.slack: give one of url and urlSecretRef",
        ),
        (
            serde_json::json!({"github": {"apiUrl": "https://api.github.com"}, "events": ["RolloutStarted"]}),
            "spec.github: missing field `secretRef`",
        ),
        (
            serde_json::json!({"github": {"secretRef": "gh"}, "events": ["TargetDegraded"]}),
            "spec.events[0]: TargetDegraded is not a rollout event: a commit status reports rollouts of a commit only",
        ),
        (
            serde_json::json!({"gitea": {"secretRef": "g", "apiUrl": "ftp://g.example"}, "events": ["RolloutStarted"]}),
            "spec.gitea.apiUrl: \"ftp://g.example\" must be an https:// URL",
        ),
        (
            serde_json::json!({"github": {"secretRef": "g", "repository": "acme/shop/extra"}, "events": ["RolloutStarted"]}),
            "spec.github.repository: \"acme/shop/extra\" is not owner/repo",
        ),
        (
            serde_json::json!({"gitlab": {"secretRef": "g", "repository": "acme/../x"}, "events": ["RolloutStarted"]}),
            "spec.gitlab.repository: \"acme/../x\" is not a repository path",
        ),
        (
            serde_json::json!({"gitlab": {"secretRef": "g", "context": ""}, "events": ["RolloutStarted"]}),
            "spec.gitlab.context: must be 1 to 255 characters",
        ),
        (
            serde_json::json!({"github": {"secretRef": "g", "targetUrl": "javascript:alert(1)"}, "events": ["RolloutStarted"]}),
            "spec.github.targetUrl: must be an https:// or http:// URL",
        ),
        (
            serde_json::json!({"webhook": hook, "events": ["RolloutStarted"], "apps": ["Shop"]}),
            "spec.apps[0]: \"Shop\" must consist of lowercase letters",
        ),
        (
            serde_json::json!({"webhook": hook, "events": ["RolloutStarted"], "projects": ["a", "b_c"]}),
            "spec.projects[1]: \"b_c\"",
        ),
        (
            serde_json::json!({"webhook": hook, "events": ["RolloutStarted"], "project": "-x"}),
            "spec.project: \"-x\"",
        ),
        (
            serde_json::json!({"webhook": hook, "events": ["FreezeStarted"], "project": "team-a"}),
            "spec.events[0]: a Project's Notifier sees its Apps' events only",
        ),
        (
            serde_json::json!({"github": {"secretRef": "g", "repository": "acme/other"}, "events": ["RolloutStarted"], "project": "team-a"}),
            "spec.github.repository: a Project's Notifier sets statuses on its Apps' Repos only",
        ),
        (
            serde_json::json!({"gitea": {"secretRef": "g", "context": "ci/build"}, "events": ["RolloutStarted"], "project": "team-a"}),
            "spec.gitea.context: \"ci/build\": a Project's Notifier's context starts with gitfleet/",
        ),
        (
            serde_json::json!({"webhook": hook, "events": ["TargetDegraded"], "clusterSelector": {"matchExpressions": [{"key": "env", "operator": "In"}]}}),
            "spec.clusterSelector.matchExpressions[0].values: operator In needs at least one value",
        ),
    ] {
        let err = parse(spec.clone()).unwrap_err();
        assert!(
            err.contains(expected),
            "{spec}:\n{err}\nexpected: {expected}"
        );
        assert!(!err.ends_with('.'), "{err}");
        assert!(!err.contains("pw"), "{err}");
    }
}

#[test]
fn a_projects_commit_status_may_name_a_gitfleet_context_of_its_own() {
    let spec = parse(serde_json::json!({
        "gitlab": {"secretRef": "g", "context": "gitfleet/production"},
        "events": ["RolloutCompleted"],
        "project": "team-a",
    }))
    .unwrap();
    assert_eq!(spec.project.as_deref(), Some("team-a"));
}

#[test]
fn sink_urls_are_https_or_loopback_http() {
    for ok in [
        "https://hooks.example.com/x",
        "https://10.0.0.7:8443/hook",
        "http://127.0.0.1:9000/hook",
        "http://localhost/hook",
        "http://[::1]:80/hook",
    ] {
        assert_eq!(url_problem(ok), None, "{ok}");
    }
    for bad in [
        "hooks.example.com/x",
        "http://10.0.0.7/x",
        "https://",
        "https://h.example/x#frag",
        "https://h.example/a b",
        "https://[fe80::1]/x",
        "file:///etc/passwd",
    ] {
        assert!(url_problem(bad).is_some(), "{bad}");
    }
}

#[test]
fn recorded_events_map_to_event_types() {
    let cases = [
        (
            event("Started", "shop", "", 3),
            Some(EventType::RolloutStarted),
        ),
        (
            event("WaveCompleted", "shop", "", 3),
            Some(EventType::WaveCompleted),
        ),
        (
            event("Paused", "shop", "", 3),
            Some(EventType::RolloutPaused),
        ),
        (
            event("RollbackStarted", "shop", "", 3),
            Some(EventType::RolloutRolledBack),
        ),
        (
            event("Completed", "shop", "", 3),
            Some(EventType::RolloutCompleted),
        ),
        (
            event("Failed", "shop", "", 3),
            Some(EventType::RolloutFailed),
        ),
        (event("WaveStarted", "shop", "", 3), None),
        (event("TargetsUpdated", "shop", "", 3), None),
        (
            event("Degraded", "shop", "eu-1", 0),
            Some(EventType::TargetDegraded),
        ),
        (event("Healthy", "shop", "eu-1", 0), None),
        // An App's own events, even named like a rollout's, are not rollout events.
        (event("Started", "shop", "", 0), None),
        (event("Degraded", "shop", "", 0), None),
        (
            event(FREEZE_STARTED_KIND, "", "", 0),
            Some(EventType::FreezeStarted),
        ),
        (
            event(FREEZE_ENDED_KIND, "", "", 0),
            Some(EventType::FreezeEnded),
        ),
        (event(FREEZE_STARTED_KIND, "shop", "", 0), None),
    ];
    for (e, expected) in cases {
        assert_eq!(event_type(&e), expected, "{e:?}");
    }
}

fn facts<'a>(
    t: EventType,
    app: &'a str,
    project: &'a str,
    labels: Option<&'a BTreeMap<String, String>>,
) -> EventFacts<'a> {
    EventFacts {
        event_type: t,
        app,
        project,
        cluster_labels: labels,
    }
}

#[test]
fn notifiers_get_only_the_events_they_ask_for() {
    let mut spec = webhook(&[EventType::RolloutStarted, EventType::TargetDegraded]);
    assert!(matches(
        &spec,
        &facts(EventType::RolloutStarted, "shop", "default", None)
    ));
    assert!(!matches(
        &spec,
        &facts(EventType::RolloutCompleted, "shop", "default", None)
    ));

    spec.apps = vec!["shop".into()];
    assert!(matches(
        &spec,
        &facts(EventType::RolloutStarted, "shop", "default", None)
    ));
    assert!(!matches(
        &spec,
        &facts(EventType::RolloutStarted, "cart", "default", None)
    ));

    spec.projects = vec!["team-a".into()];
    assert!(!matches(
        &spec,
        &facts(EventType::RolloutStarted, "shop", "default", None)
    ));
    assert!(matches(
        &spec,
        &facts(EventType::RolloutStarted, "shop", "team-a", None)
    ));

    let prod: BTreeMap<String, String> = [("env".to_owned(), "prod".to_owned())].into();
    let dev: BTreeMap<String, String> = [("env".to_owned(), "dev".to_owned())].into();
    spec.cluster_selector = Some(LabelSelector {
        match_labels: [("env".to_owned(), "prod".to_owned())].into(),
        ..Default::default()
    });
    assert!(matches(
        &spec,
        &facts(EventType::TargetDegraded, "shop", "team-a", Some(&prod))
    ));
    assert!(!matches(
        &spec,
        &facts(EventType::TargetDegraded, "shop", "team-a", Some(&dev))
    ));
    // A rollout concerns the App as a whole: the selector does not filter it.
    assert!(matches(
        &spec,
        &facts(EventType::RolloutStarted, "shop", "team-a", None)
    ));
}

#[test]
fn a_project_notifier_sees_only_its_projects_apps_and_no_freezes() {
    let mut spec = webhook(&[EventType::RolloutStarted, EventType::FreezeStarted]);
    spec.project = Some("team-a".into());
    assert!(matches(
        &spec,
        &facts(EventType::RolloutStarted, "shop", "team-a", None)
    ));
    assert!(!matches(
        &spec,
        &facts(EventType::RolloutStarted, "other", "team-b", None)
    ));
    assert!(!matches(
        &spec,
        &facts(EventType::FreezeStarted, "", "", None)
    ));

    let mut fleet = webhook(&[EventType::FreezeStarted]);
    assert!(matches(
        &fleet,
        &facts(EventType::FreezeStarted, "", "", None)
    ));
    fleet.apps = vec!["shop".into()];
    assert!(!matches(
        &fleet,
        &facts(EventType::FreezeStarted, "", "", None)
    ));
}

#[test]
fn the_generic_webhook_is_json_signed_over_the_exact_body() {
    let spec = webhook(&[EventType::RolloutStarted]);
    let n = notification("Started", 3);
    let req = request("ops", &spec, &n, "ops/42", Some("topsecret")).unwrap();
    assert_eq!(req.url, "https://hooks.example.com/gitfleet");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header(DELIVERY_HEADER), Some("ops/42"));
    assert_eq!(req.header(EVENT_HEADER), Some("RolloutStarted"));
    let sig = req.header(SIGNATURE_HEADER).unwrap();
    assert!(verify_signature(b"topsecret", &req.body, sig), "{sig}");
    assert!(!verify_signature(b"other", &req.body, sig));
    let mut tampered = req.body.clone();
    tampered.push(b' ');
    assert!(!verify_signature(b"topsecret", &tampered, sig));
    assert!(!verify_signature(b"topsecret", &req.body, "sha1=00"));
    assert!(!verify_signature(b"topsecret", &req.body, "sha256=zz"));

    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["id"], "ops/42");
    assert_eq!(body["type"], "RolloutStarted");
    assert_eq!(body["notifier"], "ops");
    assert_eq!(body["event"]["app"], "shop");
    assert_eq!(body["event"]["rollout"], 3);
    assert_eq!(body["event"]["commit"], n.commit);
    assert_eq!(body["event"]["at"], "2023-11-14T22:13:20Z");
    assert_eq!(
        body["summary"],
        "shop: rollout #3 started (0123456): because"
    );

    // A known vector: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
    assert_eq!(
        signature(b"key", b"The quick brown fox jumps over the lazy dog"),
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    );

    // No secretRef: no signature; a secretRef without its secret: no request.
    let mut unsigned = spec.clone();
    if let Some(w) = &mut unsigned.webhook {
        w.secret_ref = None;
    }
    let req = request("ops", &unsigned, &n, "ops/42", None).unwrap();
    assert_eq!(req.header(SIGNATURE_HEADER), None);
    assert_eq!(
        request("ops", &spec, &n, "ops/42", None).unwrap_err(),
        RequestError::NoSecret("spec.webhook.secretRef")
    );
}

#[test]
fn slack_gets_text_and_a_section_block() {
    let spec = NotifierSpec {
        slack: Some(SlackSink {
            url: None,
            url_secret_ref: Some("ops-slack".into()),
        }),
        events: vec![EventType::TargetDegraded],
        ..Default::default()
    };
    let mut n = notification("Degraded", 0);
    n.event.cluster = "eu-1".into();
    n.event.message = "degraded at 0123456: <pods> & more".into();
    n.event_type = event_type(&n.event);
    n.commit.clear();
    let req = request(
        "ops",
        &spec,
        &n,
        "ops/7",
        Some("https://hooks.slack.com/services/T0/B0/XYZ"),
    )
    .unwrap();
    assert_eq!(req.url, "https://hooks.slack.com/services/T0/B0/XYZ");
    assert_eq!(req.header(SIGNATURE_HEADER), None);
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        body["text"],
        ":warning: shop: degraded on eu-1: degraded at 0123456: <pods> & more"
    );
    assert_eq!(body["blocks"][0]["type"], "section");
    assert_eq!(body["blocks"][0]["text"]["type"], "mrkdwn");
    assert_eq!(
        body["blocks"][0]["text"]["text"],
        ":warning: shop: degraded on eu-1: degraded at 0123456: &lt;pods&gt; &amp; more"
    );
    // A URL from the credentials file is held to the same rules as one in the spec.
    assert_eq!(
        request("ops", &spec, &n, "ops/7", Some("http://hooks.slack.com/x")).unwrap_err(),
        RequestError::SlackUrl("must be an https:// URL (http:// only to a loopback host)")
    );
    assert_eq!(spec.sink_text(), "slack");
}

fn status_spec(provider: Provider, sink: CommitStatusSink) -> NotifierSpec {
    let mut spec = NotifierSpec {
        events: vec![EventType::RolloutStarted, EventType::RolloutCompleted],
        ..Default::default()
    };
    match provider {
        Provider::GitHub => spec.github = Some(sink),
        Provider::GitLab => spec.gitlab = Some(sink),
        Provider::Gitea => spec.gitea = Some(sink),
    }
    spec
}

fn sink(api: Option<&str>) -> CommitStatusSink {
    CommitStatusSink {
        secret_ref: "forge".into(),
        api_url: api.map(Into::into),
        ..Default::default()
    }
}

#[test]
fn github_gets_a_commit_status_with_a_bearer_token() {
    let spec = status_spec(Provider::GitHub, sink(None));
    let n = notification("Started", 3);
    let req = request("gh", &spec, &n, "gh/42", Some("ghp_token")).unwrap();
    assert_eq!(
        req.url,
        format!(
            "https://api.github.com/repos/acme/shop/statuses/{}",
            n.commit
        )
    );
    assert_eq!(req.header("authorization"), Some("Bearer ghp_token"));
    assert_eq!(req.header("accept"), Some("application/vnd.github+json"));
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "state": "pending",
            "context": "gitfleet/shop",
            "description": "shop: rollout #3 started (0123456): because",
        })
    );
    // The token never shows in debug output.
    assert!(!format!("{req:?}").contains("ghp_token"));

    for (kind, state) in [
        ("Completed", "success"),
        ("RollbackStarted", "failure"),
        ("Failed", "failure"),
        ("Paused", "pending"),
        ("WaveCompleted", "pending"),
        ("Superseded", "error"),
    ] {
        let req = request("gh", &spec, &notification(kind, 3), "k", Some("t")).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["state"], state, "{kind}");
    }

    // GitHub Enterprise: api/v3 on the Repo's host, or the API URL given.
    let mut ghe = notification("Completed", 3);
    ghe.repo_url = "git@git.corp.example:platform/shop.git".into();
    let req = request("gh", &spec, &ghe, "k", Some("t")).unwrap();
    assert_eq!(
        req.url,
        format!(
            "https://git.corp.example/api/v3/repos/platform/shop/statuses/{}",
            n.commit
        )
    );
    let mut with_link = sink(Some("https://ghe.example/api/v3/"));
    with_link.context = Some("prod".into());
    with_link.target_url = Some("https://dash.example/shop".into());
    let req = request(
        "gh",
        &status_spec(Provider::GitHub, with_link),
        &ghe,
        "k",
        Some("t"),
    )
    .unwrap();
    assert!(
        req.url
            .starts_with("https://ghe.example/api/v3/repos/platform/shop/statuses/")
    );
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["context"], "prod");
    assert_eq!(body["target_url"], "https://dash.example/shop");
}

#[test]
fn gitlab_gets_a_commit_status_on_the_encoded_project_with_a_private_token() {
    let spec = status_spec(Provider::GitLab, sink(None));
    let mut n = notification("Started", 3);
    n.repo_url = "https://gitlab.example.com/group/sub/shop.git".into();
    let req = request("gl", &spec, &n, "gl/42", Some("glpat")).unwrap();
    assert_eq!(
        req.url,
        format!(
            "https://gitlab.example.com/api/v4/projects/group%2Fsub%2Fshop/statuses/{}",
            n.commit
        )
    );
    assert_eq!(req.header("private-token"), Some("glpat"));
    assert_eq!(req.header("authorization"), None);
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "state": "running",
            "name": "gitfleet/shop",
            "description": "shop: rollout #3 started (0123456): because",
        })
    );
    for (kind, state) in [
        ("Completed", "success"),
        ("RollbackStarted", "failed"),
        ("Failed", "failed"),
        ("Paused", "pending"),
        ("Superseded", "canceled"),
    ] {
        let req = request("gl", &spec, &notification(kind, 3), "k", Some("t")).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["state"], state, "{kind}");
    }
    // A numeric project id, given.
    let mut by_id = sink(Some("https://gitlab.example.com/api/v4"));
    by_id.repository = Some("1234".into());
    let req = request(
        "gl",
        &status_spec(Provider::GitLab, by_id),
        &n,
        "k",
        Some("t"),
    )
    .unwrap();
    assert!(req.url.contains("/projects/1234/statuses/"), "{}", req.url);
}

#[test]
fn gitea_gets_a_commit_status_with_a_token_header() {
    let spec = status_spec(Provider::Gitea, sink(None));
    let mut n = notification("Completed", 3);
    n.repo_url = "ssh://git@gitea.example.com:2222/acme/shop.git".into();
    let req = request("gt", &spec, &n, "gt/42", Some("gtoken")).unwrap();
    assert_eq!(
        req.url,
        format!(
            "https://gitea.example.com/api/v1/repos/acme/shop/statuses/{}",
            n.commit
        )
    );
    assert_eq!(req.header("authorization"), Some("token gtoken"));
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "state": "success",
            "context": "gitfleet/shop",
            "description": "shop: rollout #3 completed (0123456): because",
        })
    );
}

#[test]
fn a_commit_status_needs_a_commit_a_forge_and_a_token() {
    let spec = status_spec(Provider::GitHub, sink(None));
    let mut n = notification("Started", 3);
    n.commit.clear();
    assert_eq!(
        request("gh", &spec, &n, "k", Some("t")).unwrap_err(),
        RequestError::NoCommit
    );
    let mut n = notification("Started", 3);
    n.repo_url = "file:///srv/git/shop.git".into();
    assert!(matches!(
        request("gh", &spec, &n, "k", Some("t")).unwrap_err(),
        RequestError::Repository(m) if m.contains("give `repository` and `apiUrl`")
    ));
    let n = notification("Started", 3);
    assert_eq!(
        request("gh", &spec, &n, "k", None).unwrap_err(),
        RequestError::NoSecret("spec.github.secretRef")
    );
    // With both given, the Repo's URL does not matter.
    let mut given = sink(Some("http://127.0.0.1:9/api"));
    given.repository = Some("acme/shop".into());
    let mut n = notification("Started", 3);
    n.repo_url = "file:///srv/git/shop.git".into();
    let req = request(
        "gh",
        &status_spec(Provider::GitHub, given),
        &n,
        "k",
        Some("t"),
    )
    .unwrap();
    assert_eq!(
        req.url,
        format!(
            "http://127.0.0.1:9/api/repos/acme/shop/statuses/{}",
            n.commit
        )
    );
}

#[test]
fn repo_locations_come_from_every_url_form() {
    for (url, host, path) in [
        (
            "https://github.com/acme/shop.git",
            "github.com",
            "acme/shop",
        ),
        ("https://GitHub.com/acme/shop", "github.com", "acme/shop"),
        (
            "https://gitea.example:3000/acme/shop.git",
            "gitea.example:3000",
            "acme/shop",
        ),
        ("git@github.com:acme/shop.git", "github.com", "acme/shop"),
        (
            "ssh://git@gitlab.example/g/s/p.git",
            "gitlab.example",
            "g/s/p",
        ),
        ("ssh://git@gitlab.example:2222/g/p", "gitlab.example", "g/p"),
    ] {
        assert_eq!(
            repo_location(url).unwrap(),
            (host.to_owned(), path.to_owned()),
            "{url}"
        );
    }
    for bad in [
        "file:///x/y.git",
        "git://h/x.git",
        "/srv/git/x",
        "https://h/",
    ] {
        assert!(repo_location(bad).is_err(), "{bad}");
    }
}

#[test]
fn descriptions_are_cut_to_the_providers_limit() {
    let mut n = notification("Failed", 3);
    n.event.message = "é".repeat(200);
    let req = request(
        "gh",
        &status_spec(Provider::GitHub, sink(None)),
        &n,
        "k",
        Some("t"),
    )
    .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    let d = body["description"].as_str().unwrap();
    assert!(d.len() <= MAX_STATUS_DESCRIPTION, "{}", d.len());
    assert!(d.ends_with('…'));
}

#[test]
fn secrets_are_used_only_under_their_urls() {
    let urls = vec!["https://hooks.example.com/gitfleet".to_owned()];
    assert!(secret_allowed(
        &urls,
        "https://hooks.example.com/gitfleet",
        false
    ));
    assert!(secret_allowed(
        &urls,
        "https://hooks.example.com/gitfleet/ops",
        false
    ));
    assert!(!secret_allowed(
        &urls,
        "https://hooks.example.com/gitfleet-evil",
        false
    ));
    assert!(!secret_allowed(
        &urls,
        "https://evil.example/gitfleet",
        false
    ));
    assert!(!secret_allowed(
        &urls,
        "http://hooks.example.com/gitfleet",
        true
    ));
    assert!(!secret_allowed(
        &urls,
        "https://hooks.example.com/gitfleet/../x",
        false
    ));

    let loopback = vec!["http://127.0.0.1:9000/hook".to_owned()];
    assert!(secret_allowed(
        &loopback,
        "http://127.0.0.1:9000/hook",
        true
    ));
    assert!(!secret_allowed(
        &loopback,
        "http://127.0.0.1:9000/hook",
        false
    ));
    assert!(!secret_allowed(
        &loopback,
        "http://127.0.0.1:9001/hook",
        true
    ));
    assert!(!secret_allowed(
        &loopback,
        "http://127.0.0.1:9000/other",
        true
    ));
    // An https prefix never covers http.
    let https = vec!["https://127.0.0.1:9000/".to_owned()];
    assert!(!secret_allowed(&https, "http://127.0.0.1:9000/hook", true));

    // GitLab's encoded project paths bind by group, and cannot climb out.
    let group = vec!["https://gitlab.example/api/v4/projects/acme/".to_owned()];
    assert!(secret_allowed(
        &group,
        "https://gitlab.example/api/v4/projects/acme%2Fshop/statuses/abc",
        false
    ));
    assert!(!secret_allowed(
        &group,
        "https://gitlab.example/api/v4/projects/acmevil%2Fshop/statuses/abc",
        false
    ));
    assert!(!secret_allowed(
        &group,
        "https://gitlab.example/api/v4/projects/acme%2F..%2Fother/statuses/abc",
        false
    ));

    assert_eq!(secret_prefix_problem("https://hooks.example.com/"), None);
    assert_eq!(secret_prefix_problem("http://127.0.0.1:9000/"), None);
    assert!(secret_prefix_problem("http://hooks.example.com/").is_some());
    assert!(secret_prefix_problem("ssh://git@h/x").is_some());
    assert!(secret_prefix_problem("hooks.example.com").is_some());
}

#[test]
fn answers_are_delivered_retried_or_refused() {
    for s in [200, 201, 202, 204] {
        assert_eq!(classify(s), Answer::Delivered, "{s}");
    }
    for s in [408, 425, 429, 500, 502, 503, 504] {
        assert_eq!(classify(s), Answer::Retry, "{s}");
    }
    for s in [301, 302, 400, 401, 403, 404, 410, 422] {
        assert_eq!(classify(s), Answer::Refused, "{s}");
    }
}

#[test]
fn retries_back_off_exponentially_with_jitter_up_to_a_cap_then_give_up() {
    let policy = RetryPolicy {
        base: Duration::from_secs(2),
        cap: Duration::from_secs(60),
        max_attempts: 8,
    };
    let full: Vec<Duration> = (1..8)
        .map(|a| match after_failure(a, true, &policy, 1.0) {
            Next::RetryIn(d) => d,
            Next::GiveUp => panic!("gave up after {a}"),
        })
        .collect();
    assert_eq!(
        full,
        [2, 4, 8, 16, 32, 60, 60].map(Duration::from_secs),
        "doubling from the base, capped"
    );
    assert_eq!(
        after_failure(1, true, &policy, 0.0),
        Next::RetryIn(Duration::from_secs(1)),
        "no less than half"
    );
    assert_eq!(
        after_failure(3, true, &policy, 0.5),
        Next::RetryIn(Duration::from_secs(6))
    );
    assert_eq!(after_failure(8, true, &policy, 0.5), Next::GiveUp);
    assert_eq!(after_failure(1, false, &policy, 0.5), Next::GiveUp);
    // Out-of-range jitter and huge attempt counts stay in bounds.
    assert_eq!(
        after_failure(1, true, &policy, f64::NAN),
        Next::RetryIn(Duration::from_secs(1))
    );
    let long = RetryPolicy {
        max_attempts: u32::MAX,
        ..policy
    };
    assert_eq!(
        after_failure(1000, true, &long, 7.0),
        Next::RetryIn(Duration::from_secs(60))
    );
    let default = RetryPolicy::default();
    let total: Duration = (1..default.max_attempts)
        .map(|a| match after_failure(a, true, &default, 1.0) {
            Next::RetryIn(d) => d,
            Next::GiveUp => Duration::ZERO,
        })
        .sum();
    assert!(
        total > Duration::from_secs(3600) && total < Duration::from_secs(4 * 3600),
        "{total:?}"
    );
}

#[test]
fn delivery_keys_are_notifier_and_event() {
    let d = Delivery {
        notifier: "ops".into(),
        notification: notification("Started", 1),
        ..Default::default()
    };
    assert_eq!(d.key(), "ops/42");
    let json = serde_json::to_string(&d).unwrap();
    let back: Delivery = serde_json::from_str(&json).unwrap();
    assert_eq!(back, d);
}
